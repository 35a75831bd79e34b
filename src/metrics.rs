//! loopd's counters in the Prometheus text exposition format, version 0.0.4.
//!
//! The format is a page of specification: a family is announced by `# HELP name text` and
//! `# TYPE name counter|gauge`, and each sample is `name{label="value",...} value` on its own
//! line. Help text escapes `\` and newline; label values escape `\`, `"` and newline. Counter
//! names end in `_total`, units are spelled in the name (`_bytes`, `_seconds`), as Prometheus's
//! own client libraries name them.
//!
//! Why a small encoder of our own rather than the `prometheus-client` crate: that crate writes
//! OpenMetrics, where a counter family `x` is sampled as `x_total`; `promtool check metrics`
//! (Prometheus 2.42, in Debian 12) parses the 0.0.4 format and rejects every such sample as a
//! family without help text. The tests hold this encoder to promtool and to a real Prometheus
//! server.
//!
//! Each endpoint is given only the families that can move for it: connection, close, accept
//! and backpressure families for TCP listeners, datagram families (refusals included) for UDP
//! endpoints, bytes for both, PROXY outcomes for `,proxy` listeners, handshakes and session
//! ends for `,tls` listeners. Which series exist follows from the endpoints
//! alone, never from what has happened, so they are the same from the first scrape and across
//! restarts.
//!
//! Reading the counters costs the loops nothing: each loop's counters are relaxed atomics it
//! already keeps; a scrape loads them, and no lock or extra atomic is added per message.

use std::fmt::{self, Display, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use nix::unistd::SysconfVar;

use crate::control::{Endpoint, Transport};
use crate::fault::Switch;
use crate::rlimit;
use crate::stats::{HandshakeFailure, Snapshot, TlsSnapshot, HANDSHAKE_BUCKETS_US};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever increases (reset by a restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets, with their sum and count.
    Histogram,
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Announces a family.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// Writes one sample of the family announced last.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", LabelValue(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value, escaped as the format requires.
struct LabelValue<'a>(&'a str);

impl Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// One endpoint of one loop, as a scrape sees it.
pub struct EndpointSample<'a> {
    /// Which loop, when there are several.
    pub loop_index: Option<usize>,
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Its counters now.
    pub snapshot: Snapshot,
}

/// A counter or gauge read off a [`Snapshot`].
type Field = fn(&Snapshot) -> u64;

/// Which endpoints a family is written for: only those of a transport where it can move. A
/// datagram counter on a TCP listener, or a connection counter on a UDP socket, would be zero
/// by construction, and a reader would have to know that to ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moves {
    /// TCP listeners only.
    Tcp,
    /// UDP endpoints only.
    Udp,
    /// Both.
    Both,
}

impl Moves {
    fn on(self, transport: Transport) -> bool {
        matches!(
            (self, transport),
            (Moves::Both, _) | (Moves::Tcp, Transport::Tcp) | (Moves::Udp, Transport::Udp)
        )
    }
}

/// One per-endpoint family: name, help, type, where it can move, and how to read it.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    moves: Moves,
    field: Field,
}

/// Every per-endpoint family with one sample per endpoint.
const FAMILIES: &[Family] = &[
    Family {
        name: "loopd_connections_accepted_total",
        help: "TCP connections accepted.",
        kind: Kind::Counter,
        moves: Moves::Tcp,
        field: |s| s.accepted,
    },
    Family {
        name: "loopd_connections_active",
        help: "TCP connections open now.",
        kind: Kind::Gauge,
        moves: Moves::Tcp,
        field: |s| s.active,
    },
    Family {
        name: "loopd_received_bytes_total",
        help: "Bytes read and handed to services (TCP and UDP).",
        kind: Kind::Counter,
        moves: Moves::Both,
        field: |s| s.bytes_in,
    },
    Family {
        name: "loopd_sent_bytes_total",
        help: "Bytes written and accepted by the kernel (TCP and UDP).",
        kind: Kind::Counter,
        moves: Moves::Both,
        field: |s| s.bytes_out,
    },
    Family {
        name: "loopd_discarded_bytes_total",
        help: "Bytes read and dropped while closing or lingering.",
        kind: Kind::Counter,
        moves: Moves::Tcp,
        field: |s| s.bytes_discarded,
    },
    Family {
        name: "loopd_backpressure_pauses_total",
        help: "Times a connection stopped reading because its pending output reached the high watermark.",
        kind: Kind::Counter,
        moves: Moves::Tcp,
        field: |s| s.backpressure_pauses,
    },
    Family {
        name: "loopd_pending_output_peak_bytes",
        help: "The largest pending output seen on one connection.",
        kind: Kind::Gauge,
        moves: Moves::Tcp,
        field: |s| s.peak_pending_output,
    },
    Family {
        name: "loopd_accept_pauses_total",
        help: "Times accepting paused because descriptors or memory ran out.",
        kind: Kind::Counter,
        moves: Moves::Tcp,
        field: |s| s.accept_pauses,
    },
    Family {
        name: "loopd_accept_limit_stops_total",
        help: "Times accepting stopped at the connection limit.",
        kind: Kind::Counter,
        moves: Moves::Tcp,
        field: |s| s.accept_limit_stops,
    },
    Family {
        name: "loopd_datagrams_received_total",
        help: "UDP datagrams received.",
        kind: Kind::Counter,
        moves: Moves::Udp,
        field: |s| s.datagrams_in,
    },
    Family {
        name: "loopd_datagrams_sent_total",
        help: "UDP datagrams sent.",
        kind: Kind::Counter,
        moves: Moves::Udp,
        field: |s| s.datagrams_out,
    },
    Family {
        name: "loopd_datagrams_dropped_total",
        help: "UDP replies dropped: the reply queue was full, or the send failed.",
        kind: Kind::Counter,
        moves: Moves::Udp,
        field: |s| s.datagrams_dropped,
    },
];

/// Why TCP connections closed, with the counter of each reason.
const CLOSE_REASONS: &[(&str, Field)] = &[
    ("peer", |s| s.closed_peer),
    ("server", |s| s.closed_server),
    ("reset", |s| s.closed_reset),
    ("error", |s| s.closed_error),
    ("idle", |s| s.closed_idle),
    ("write_stall", |s| s.closed_write_stall),
    ("linger_timeout", |s| s.closed_linger_timeout),
    ("protocol", |s| s.closed_protocol),
    ("request_timeout", |s| s.closed_request_timeout),
    ("forced", |s| s.closed_forced),
    ("proxy", |s| s.closed_proxy),
    ("handshake", |s| s.closed_handshake),
    ("tls", |s| s.closed_tls),
    ("truncated", |s| s.closed_truncated),
    ("fault", |s| s.closed_fault),
];

/// The close reasons only a TLS listener has.
const TLS_CLOSES: [&str; 3] = ["handshake", "tls", "truncated"];

/// Why UDP datagrams went unanswered by the endpoint's defences (`udp::guard`).
const REFUSALS: &[(&str, Field)] = &[
    ("low_port", |s| s.datagrams_refused_low_port),
    ("own_port", |s| s.datagrams_refused_own_port),
    ("rate_limit", |s| s.datagrams_rate_limited),
];

/// What became of connections to a PROXY protocol listener, with the counter of each.
const PROXY_OUTCOMES: &[(&str, Field)] = &[
    ("proxied", |s| s.proxy_proxied),
    ("local", |s| s.proxy_local),
    ("untrusted", |s| s.proxy_untrusted),
    ("malformed", |s| s.proxy_malformed),
    ("too_long", |s| s.proxy_too_long),
    ("timeout", |s| s.proxy_timeout),
    ("truncated", |s| s.proxy_truncated),
];

/// Writes every endpoint family, each for the endpoints where it can move. Which families and
/// label sets appear depends only on the endpoints (the flags), never on what happened, so a
/// restart with the same flags exports the same series and none appears late.
pub fn write_endpoints(e: &mut Exposition, samples: &[EndpointSample<'_>]) {
    let rendered: Vec<Vec<(&str, String)>> = samples
        .iter()
        .map(|s| {
            let mut l = vec![
                ("service", s.endpoint.service.clone()),
                ("listener", s.endpoint.addr.to_string()),
            ];
            if let Some(i) = s.loop_index {
                l.push(("loop", i.to_string()));
            }
            l
        })
        .collect();
    // One family: its header, then for each endpoint the samples `values` gives it (an
    // extra label and its counter, or none). A family no endpoint has samples of is left out
    // whole.
    let mut family = |name: &str, help: &str, kind: Kind, values: &dyn Fn(&Endpoint) -> Values| {
        let mut announced = false;
        for (s, base) in samples.iter().zip(&rendered) {
            for (label, field) in values(s.endpoint) {
                if !announced {
                    e.family(name, help, kind);
                    announced = true;
                }
                let mut l: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
                l.extend(label);
                e.sample(name, &l, field(&s.snapshot));
            }
        }
    };
    for f in FAMILIES {
        family(f.name, f.help, f.kind, &|endpoint| {
            let moves = f.moves.on(endpoint.transport);
            moves.then_some((None, f.field)).into_iter().collect()
        });
    }
    family(
        "loopd_datagrams_refused_total",
        "UDP datagrams left unanswered by the loop and reflection defences, by reason: a \
         source port below 1024 (low_port), a source port of one of this server's UDP \
         services (own_port), a source past its rate limit (rate_limit).",
        Kind::Counter,
        &|endpoint| {
            REFUSALS
                .iter()
                .filter(|_| endpoint.transport == Transport::Udp)
                .map(|&(reason, field)| (Some(("reason", reason)), field))
                .collect()
        },
    );
    family(
        "loopd_connections_closed_total",
        "TCP connections closed, by reason.",
        Kind::Counter,
        &|endpoint| {
            CLOSE_REASONS
                .iter()
                .filter(|_| endpoint.transport == Transport::Tcp)
                // Only a PROXY listener refuses a connection for its header, and only a TLS
                // listener closes one for TLS.
                .filter(|(reason, _)| *reason != "proxy" || endpoint.proxy)
                .filter(|(reason, _)| !TLS_CLOSES.contains(reason) || endpoint.tls)
                // Only a listener with faults closes a connection for one.
                .filter(|(reason, _)| *reason != "fault" || endpoint.faults.is_some())
                .map(|&(reason, field)| (Some(("reason", reason)), field))
                .collect()
        },
    );
    family(
        "loopd_proxy_connections_total",
        "Connections to PROXY protocol listeners, by what their header did: named a \
         client (proxied), the proxy's own (local), or refused.",
        Kind::Counter,
        &|endpoint| {
            PROXY_OUTCOMES
                .iter()
                .filter(|_| endpoint.proxy)
                .map(|&(outcome, field)| (Some(("outcome", outcome)), field))
                .collect()
        },
    );
    write_tls(e, samples, &rendered);
}

/// The TLS families, for `,tls` listeners only: handshakes by outcome, completed ones by
/// version and kind, their durations (a histogram), and how peers ended their sessions.
fn write_tls(e: &mut Exposition, samples: &[EndpointSample<'_>], labels: &[Vec<(&str, String)>]) {
    let tls: Vec<(&TlsSnapshot, Vec<(&str, &str)>)> = samples
        .iter()
        .zip(labels)
        .filter(|(s, _)| s.endpoint.tls)
        .map(|(s, l)| {
            (
                &s.snapshot.tls,
                l.iter().map(|(k, v)| (*k, v.as_str())).collect(),
            )
        })
        .collect();
    if tls.is_empty() {
        return;
    }
    let name = "loopd_tls_handshakes_total";
    e.family(
        name,
        "TLS handshakes, by outcome: completed (ok), refused by us (alert_sent) or the peer \
         (alert_received), not TLS at all (not_tls), closed by the peer first (closed), or \
         not completed within the handshake timeout (timeout).",
        Kind::Counter,
    );
    for (t, l) in &tls {
        e.sample(name, &with(&[("outcome", "ok")], l), t.completed);
        for how in HandshakeFailure::ALL {
            e.sample(name, &with(&[("outcome", how.label())], l), t.failures(how));
        }
    }
    let name = "loopd_tls_handshakes_completed_total";
    e.family(
        name,
        "Completed TLS handshakes, by protocol version and kind (full, or resumed from a \
         ticket or the session cache).",
        Kind::Counter,
    );
    for (t, l) in &tls {
        for (version, tls13) in [("TLSv1.3", true), ("TLSv1.2", false)] {
            for (kind, resumed) in [("full", false), ("resumed", true)] {
                let labels = with(&[("version", version), ("handshake", kind)], l);
                e.sample(name, &labels, t.of_kind(tls13, resumed));
            }
        }
    }
    let name = "loopd_tls_handshake_duration_seconds";
    e.family(
        name,
        "Time from the start of the handshake stage (accept, or the end of the PROXY header) \
         to the handshake's completion, for completed handshakes.",
        Kind::Histogram,
    );
    let bucket = format!("{name}_bucket");
    for (t, l) in &tls {
        let mut cumulative = 0;
        for (i, bound) in HANDSHAKE_BUCKETS_US.iter().enumerate() {
            cumulative += t.durations[i];
            let le = format!("{}", *bound as f64 / 1e6);
            let mut labels = l.clone();
            labels.push(("le", &le));
            e.sample(&bucket, &labels, cumulative);
        }
        let mut labels = l.clone();
        labels.push(("le", "+Inf"));
        e.sample(&bucket, &labels, t.completed);
        e.sample(
            &format!("{name}_sum"),
            l,
            format!("{:.6}", t.duration_us as f64 / 1e6),
        );
        e.sample(&format!("{name}_count"), l, t.completed);
    }
    let name = "loopd_tls_peer_ends_total";
    e.family(
        name,
        "How TLS peers ended their sessions: with a close_notify alert, or with a TCP FIN \
         alone (truncated: what they sent may have been cut short).",
        Kind::Counter,
    );
    for (t, l) in &tls {
        e.sample(name, &with(&[("how", "close_notify")], l), t.close_notify);
        e.sample(name, &with(&[("how", "truncated")], l), t.truncated);
    }
}

/// `labels` and then `more`.
fn with<'a>(more: &[(&'a str, &'a str)], labels: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = labels.to_vec();
    all.extend_from_slice(more);
    all
}

/// `loopd_faults_injected_total{service,listener,fault}`: for each listener with faults, each
/// kind it has (or injected under an earlier plan), summed over the loops.
pub fn write_faults(e: &mut Exposition, switches: &[(Endpoint, Arc<Switch>)]) {
    let mut announced = false;
    for (endpoint, switch) in switches {
        for kind in switch.kinds() {
            if !announced {
                e.family(
                    "loopd_faults_injected_total",
                    "Faults injected on purpose (--fault), by listener and kind: replies held, \
                     cut or corrupted, connections closed or reset, datagrams dropped, \
                     duplicated or reordered.",
                    Kind::Counter,
                );
                announced = true;
            }
            let listener = endpoint.addr.to_string();
            e.sample(
                "loopd_faults_injected_total",
                &[
                    ("service", endpoint.service.as_str()),
                    ("listener", listener.as_str()),
                    ("fault", kind.name()),
                ],
                switch.injected(kind),
            );
        }
    }
}

/// `loopd_faults_active{service,listener,fault}`: 1 while the window of a listener fault
/// (stop-accept, refuse) is open, for each listener that has one.
pub fn write_fault_windows(e: &mut Exposition, switches: &[(Endpoint, Arc<Switch>)]) {
    let mut announced = false;
    for (endpoint, switch) in switches {
        for kind in switch.kinds().into_iter().filter(|k| k.on_listener()) {
            if !announced {
                e.family(
                    "loopd_faults_active",
                    "1 while a listener fault's window (stop-accept, refuse) is open.",
                    Kind::Gauge,
                );
                announced = true;
            }
            let listener = endpoint.addr.to_string();
            e.sample(
                "loopd_faults_active",
                &[
                    ("service", endpoint.service.as_str()),
                    ("listener", listener.as_str()),
                    ("fault", kind.name()),
                ],
                u8::from(switch.is_active(kind)),
            );
        }
    }
}

/// The samples one endpoint has in a family: each with its extra label, if the family has
/// one, and its counter.
type Values = Vec<(Option<(&'static str, &'static str)>, Field)>;

/// The process's own figures, named as Prometheus's client libraries name them. Read from
/// `/proc/self` on Linux; absent elsewhere.
pub fn write_process(e: &mut Exposition, started: SystemTime) {
    let start = started
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    e.family(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
        Kind::Gauge,
    );
    e.sample("process_start_time_seconds", &[], format!("{start:.3}"));
    let Some(p) = ProcessFigures::read() else {
        return;
    };
    e.family(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        Kind::Counter,
    );
    e.sample(
        "process_cpu_seconds_total",
        &[],
        format!("{:.2}", p.cpu_seconds),
    );
    for (name, help, value) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds,
        ),
    ] {
        e.family(name, help, Kind::Gauge);
        e.sample(name, &[], value);
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub resident_bytes: u64,
    /// Virtual memory size.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The open-files limit (soft).
    pub max_fds: u64,
}

/// `/proc/<who>/stat` (`who`: `self` or a pid), as a function from the field numbers of
/// proc(5) (utime is 14) to their values.
fn proc_stat(who: &str) -> Option<impl Fn(usize) -> Option<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces; the name
    // is field 2 and the state, field 3, is the first after it.
    let rest = stat[stat.rfind(')')? + 1..].to_string();
    Some(move |n: usize| rest.split_whitespace().nth(n - 3)?.parse().ok())
}

/// Clock ticks per second, the unit of `/proc/*/stat`'s times.
fn clock_ticks() -> Option<u64> {
    sysconf(SysconfVar::CLK_TCK)
}

/// A positive `sysconf(3)` value; `None` if the system does not say.
fn sysconf(var: SysconfVar) -> Option<u64> {
    let value = nix::unistd::sysconf(var).ok()??;
    u64::try_from(value).ok()
}

/// User plus system CPU seconds of process `who` (`self` or a pid) so far, from
/// `/proc/<who>/stat`: what `process_cpu_seconds_total` reports, and how loopd-bench reads a
/// local server's CPU time. `None` where `/proc` is not there.
pub fn process_cpu_seconds(who: &str) -> Option<f64> {
    let field = proc_stat(who)?;
    Some((field(14)? + field(15)?) as f64 / clock_ticks()? as f64)
}

impl ProcessFigures {
    /// Reads the figures now; `None` where `/proc` is not there.
    pub fn read() -> Option<ProcessFigures> {
        let field = proc_stat("self")?;
        let page = sysconf(SysconfVar::PAGE_SIZE)?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = rlimit::nofile_limit().unwrap_or(0);
        Some(ProcessFigures {
            cpu_seconds: process_cpu_seconds("self")?,
            // vsize is field 23 of proc(5), rss (in pages) 24.
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds,
            max_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Help and label values are escaped as the format says; samples follow their family.
    #[test]
    fn format_and_escaping() {
        let mut e = Exposition::default();
        e.family("x_total", "a \\ b\nc", Kind::Counter);
        e.sample("x_total", &[("l", "q\"u\\o\nte")], 3);
        e.sample("x_total", &[], 4);
        assert_eq!(
            e.finish(),
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\n\
             x_total{l=\"q\\\"u\\\\o\\nte\"} 3\nx_total 4\n"
        );
    }

    /// Every counter family ends in `_total` and no gauge does.
    #[test]
    fn names_follow_the_conventions() {
        for f in FAMILIES {
            assert_eq!(
                f.name.ends_with("_total"),
                f.kind == Kind::Counter,
                "{}",
                f.name
            );
            assert!(f.name.starts_with("loopd_"), "{}", f.name);
        }
    }

    /// The process's own figures are there and plausible.
    #[test]
    fn process_figures() {
        let p = ProcessFigures::read().expect("/proc/self");
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds >= 3 && p.max_fds >= p.open_fds);
        assert!(p.cpu_seconds >= 0.0);
    }
}
