//! The text a person reads at the end of a run, and the verdict that sets the exit status.

use std::fmt;

use super::latency::human_us;
use super::{Latency, Merged, Report, TlsReport, Window};
use crate::config::{Expect, Mode, RecordedConfig};

fn latency_line(f: &mut fmt::Formatter<'_>, label: &str, l: &Option<Latency>) -> fmt::Result {
    if let Some(l) = l {
        writeln!(
            f,
            "  {label:<12} p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            human_us(l.p50_us),
            human_us(l.p90_us),
            human_us(l.p99_us),
            human_us(l.p99_9_us),
            human_us(l.p99_99_us),
            human_us(l.max_us)
        )?;
    }
    Ok(())
}

/// The first line: what the run did, in the words of its mode (and over TLS, with what),
/// and which segment of it this process made.
fn headline(c: &RecordedConfig) -> String {
    let line = run_headline(c);
    let Some(s) = c.segment else {
        return line;
    };
    let (share, total) = (c.own_connections(), c.connections);
    let rate = match c.rate {
        Some(r) => format!(", {:.0} of the {r} msg/s", r * share as f64 / total as f64),
        None => String::new(),
    };
    format!(
        "{line}\n  {:<12} {s}: {share} of the {total} connections{rate}",
        "segment"
    )
}

/// What the whole run did, and over TLS with what.
fn run_headline(c: &RecordedConfig) -> String {
    let line = mode_line(c);
    match (&c.tls, c.mode) {
        (Some(t), Mode::Handshake) => format!(
            "{line}; TLS {}, {}% of new connections resume",
            t.versions, t.resume_pct
        ),
        (Some(t), _) => format!("{line}; over TLS {}, {}% resume", t.versions, t.resume_pct),
        (None, _) => line,
    }
}

fn mode_line(c: &RecordedConfig) -> String {
    let load = match c.rate {
        Some(r) => format!("open loop at {r} msg/s"),
        None => "closed loop".into(),
    };
    let (target, n, threads, size) = (&c.target, c.connections, c.threads, c.size);
    let pipeline = c.pipeline;
    match c.mode {
        Mode::Echo => format!(
            "loopd-bench echo {target} ({}): {n} connections, {threads} thread(s), {size}-byte \
             messages, {load}, pipeline {pipeline}",
            c.protocol
        ),
        Mode::Udp => format!(
            "loopd-bench udp {target}: {n} sockets, {threads} thread(s), {size}-byte \
             datagrams, {load}, pipeline {pipeline}"
        ),
        Mode::Connect => format!(
            "loopd-bench connect {target}: {n} connections at a time, {threads} thread(s), \
             each one {size}-byte round trip, then closed"
        ),
        Mode::Handshake => format!(
            "loopd-bench handshake {target}: {n} connections at a time, {threads} thread(s), \
             each: connect, TLS handshake, the server's first word, close_notify"
        ),
        Mode::Send => format!(
            "loopd-bench send {target}: {n} connections, {threads} thread(s), a stream of \
             {size}-byte messages to a server that only reads"
        ),
        Mode::Recv => {
            let checked = match c.expect {
                Some(Expect::Chargen) => "every byte checked against RFC 864 chargen",
                None => "counted, not checked (--expect chargen checks it)",
            };
            format!(
                "loopd-bench recv {target}: {n} connections, {threads} thread(s), reading what \
                 the server sends; {checked}"
            )
        }
    }
}

impl Report {
    /// What moved, in the words of the mode: round trips, messages written, or bytes read.
    fn moved(&self, f: &mut fmt::Formatter<'_>, mode: Option<Mode>) -> fmt::Result {
        let r = &self.rates;
        let both = |f: &mut fmt::Formatter<'_>| {
            writeln!(
                f,
                "  {:<12} {:.2} MiB/s sent, {:.2} MiB/s received",
                "throughput", r.mib_per_sec_sent, r.mib_per_sec_received
            )
        };
        match mode {
            Some(Mode::Send) => {
                writeln!(
                    f,
                    "  {:<12} {} written ({:.0}/s)",
                    "messages", self.messages, r.messages_per_sec
                )?;
                if self.bytes_received > 0 {
                    both(f)
                } else {
                    writeln!(
                        f,
                        "  {:<12} {:.2} MiB/s sent",
                        "throughput", r.mib_per_sec_sent
                    )
                }
            }
            // The message is the handshake; its lines follow.
            Some(Mode::Handshake) => Ok(()),
            Some(Mode::Recv) => {
                writeln!(f, "  {:<12} {} bytes", "received", self.bytes_received)?;
                if self.bytes_sent > 0 {
                    both(f)
                } else {
                    writeln!(
                        f,
                        "  {:<12} {:.2} MiB/s received",
                        "throughput", r.mib_per_sec_received
                    )
                }
            }
            _ => {
                writeln!(
                    f,
                    "  {:<12} {} ({:.0}/s)",
                    "messages", self.messages, r.messages_per_sec
                )?;
                both(f)
            }
        }
    }
}

/// The wall-clock window, the start lag and the clock's state, in a line.
fn window_line(f: &mut fmt::Formatter<'_>, w: &Window, merged: bool) -> fmt::Result {
    let lag = match (w.start_lag_secs, merged) {
        (Some(l), false) => format!("; started {} late", human_us(l * 1e6)),
        (Some(l), true) => format!("; the latest segment started {} late", human_us(l * 1e6)),
        (None, _) => String::new(),
    };
    let clock = match (w.clock_synchronised, merged) {
        (Some(true), false) => "clock synchronised",
        (Some(true), true) => "every clock synchronised",
        (Some(false), false) => {
            "clock NOT synchronised (adjtimex: STA_UNSYNC): the start lines up with other \
             machines' only as well as their clocks agree"
        }
        (Some(false), true) => {
            "a clock NOT synchronised (adjtimex: STA_UNSYNC): the segments lined up only as \
             well as their clocks agreed"
        }
        (None, _) => "clock synchronisation unknown",
    };
    writeln!(
        f,
        "  {:<12} {} to {}{lag}; {clock}",
        "window",
        humantime::format_rfc3339_micros(w.start),
        humantime::format_rfc3339_micros(w.end),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.merged, self.runs.as_slice()) {
            (Some(Merged::Segments { .. }), [c, ..]) => writeln!(f, "{}", run_headline(c))?,
            (_, [c]) => writeln!(f, "{}", headline(c))?,
            _ => {
                let targets: Vec<&str> = self.runs.iter().map(|c| c.target.as_str()).collect();
                writeln!(
                    f,
                    "loopd-bench: {} unrelated runs merged ({}): counts and histograms add; the \
                     rates are their totals over the longest duration",
                    self.runs.len(),
                    targets.join(", ")
                )?;
            }
        }
        if let Some(Merged::Segments {
            count,
            present,
            missing,
            shortest_secs,
        }) = &self.merged
        {
            let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            let missing = if missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; MISSING {}: these figures are not the whole run's",
                    list(missing)
                )
            };
            writeln!(
                f,
                "  {:<12} {} of {count} segments ({}){missing}; rates added over their common \
                 window, {:.3} s of the shortest {shortest_secs:.3} s",
                "merged",
                present.len(),
                list(present),
                self.duration_secs
            )?;
        }
        let shared = self
            .runs
            .iter()
            .any(|c| c.segment.is_some() || c.start_at.is_some());
        if let (Some(w), true) = (&self.window, shared) {
            let segments = matches!(self.merged, Some(Merged::Segments { .. }));
            window_line(f, w, segments)?;
        }
        writeln!(f, "  {:<12} {:.2} s", "duration", self.duration_secs)?;
        if let Some(i) = &self.iterations {
            write!(f, "{i}")?;
        }
        let c = &self.connections;
        let of = match self.rates.connects_per_sec {
            Some(_) => format!("{} at a time", c.requested),
            None => format!("of {} requested", c.requested),
        };
        let served = match c.served {
            Some(n) => format!(", {n} served"),
            None => String::new(),
        };
        writeln!(
            f,
            "  {:<12} {} established{served}, {} failed ({of})",
            "connections", c.established, c.failed
        )?;
        if let Some(rate) = self.rates.connects_per_sec {
            writeln!(f, "  {:<12} {} ({rate:.0}/s)", "connects", c.established)?;
        }
        self.moved(f, self.mode())?;
        // In handshake mode the message is the handshake, and so is its latency.
        let label = match self.mode() {
            Some(Mode::Handshake) => "handshake",
            _ => "latency",
        };
        latency_line(f, label, &self.latency)?;
        latency_line(f, "uncorrected", &self.uncorrected_latency)?;
        latency_line(f, "send lag", &self.send_lag)?;
        if let Some((lag, latency)) = self.lagging() {
            writeln!(
                f,
                "  warning: the sender ran behind its schedule by more than the server took to \
                 answer (median lag {}, median uncorrected latency {}): the client set the pace, \
                 not the server; give it more threads (-t) or a lower --rate",
                human_us(lag),
                human_us(latency)
            )?;
        }
        latency_line(f, "connect", &self.connect_latency)?;
        if let Some(t) = &self.tls {
            self.tls_lines(f, t)?;
        }
        if let Some(statuses) = &self.http_status {
            let shown: Vec<String> = statuses.iter().map(|(s, n)| format!("{s} x{n}")).collect();
            let shown = if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            };
            writeln!(f, "  {:<12} {shown}", "http status")?;
        }
        if let Some(u) = &self.udp {
            writeln!(
                f,
                "  {:<12} {} sent, {} received, {} lost ({:.2}%), {} late",
                "datagrams",
                u.sent,
                u.received,
                u.lost,
                u.loss_pct(),
                u.late
            )?;
        }
        if let Some(cpu) = &self.cpu {
            // The JSON names each method in full; here, in a word.
            let figure = |name: &str, how: &str, c: &Option<crate::cpu::Cost>| {
                let us = c.as_ref()?.us_per_message?;
                Some(format!("{name} {us:.2} µs ({how})"))
            };
            let handshakes = self.mode() == Some(Mode::Handshake);
            let figures: Vec<String> = [
                figure("client", "getrusage", &cpu.client),
                figure("server", "its process_cpu_seconds_total", &cpu.server),
                figure("system", "/proc/stat, all CPUs", &cpu.system),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !figures.is_empty() {
                let label = if handshakes {
                    "cpu/handshake"
                } else {
                    "cpu/message"
                };
                writeln!(f, "  {label:<12} {}", figures.join(", "))?;
                if cpu.system.is_some() || cpu.server.is_some() {
                    writeln!(
                        f,
                        "  {:<12} (on loopback the kernel charges delivery into the receiver's \
                         socket to the sender's CPU: per-process figures split the work \
                         unevenly; the system figure counts it once)",
                        ""
                    )?;
                }
            }
            for why in &cpu.unavailable {
                writeln!(f, "  {:<12} unavailable: {why}", "cpu")?;
            }
        }
        if let (Some(backends), Some(spread)) = (&self.backends, &self.spread) {
            let dof = spread.degrees_of_freedom;
            writeln!(
                f,
                "  {:<12} {} answered; {} to {} connections each; chi-square {:.2} with {dof} \
                 degree{} of freedom (0 is an even split, about {dof} a random one)",
                "backends",
                spread.backends,
                spread.min_connections,
                spread.max_connections,
                spread.chi_square,
                if dof == 1 { "" } else { "s" },
            )?;
            let width = backends
                .iter()
                .map(|b| b.server_id.len())
                .max()
                .unwrap_or(0);
            for b in backends {
                let latency = match &b.latency {
                    Some(l) => format!(
                        "p50 {}  p99 {}  p99.9 {}",
                        human_us(l.p50_us),
                        human_us(l.p99_us),
                        human_us(l.p99_9_us)
                    ),
                    None => "no latency".into(),
                };
                writeln!(
                    f,
                    "    {:<width$}  {} connections, {} messages ({:.0}/s), {:.2} MiB/s received, {latency}, {} errors",
                    b.server_id,
                    b.connections,
                    b.messages,
                    b.rates.messages_per_sec,
                    b.rates.mib_per_sec_received,
                    b.errors,
                )?;
            }
        }
        let errs: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if errs.is_empty() {
            writeln!(f, "  {:<12} none", "errors")?;
        } else {
            writeln!(f, "  {:<12} {}", "errors", errs.join(", "))?;
            for e in &self.error_examples {
                writeln!(f, "    {e}")?;
            }
        }
        if let Some(r) = &self.faults {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl Report {
    /// Open loop: the median send lag and the median uncorrected latency (the server's
    /// part: from actual send to reply), when the lag is the larger. The corrected latency
    /// cannot serve: it includes the lag, so it is never the smaller.
    pub fn lagging(&self) -> Option<(f64, f64)> {
        let (lag, latency) = (self.send_lag.as_ref()?, self.uncorrected_latency.as_ref()?);
        (lag.p50_us > latency.p50_us).then_some((lag.p50_us, latency.p50_us))
    }

    /// Whether the run measured what it was asked to; if not, one line saying what
    /// happened. Every counted error fails a run, and so does a run that measured nothing,
    /// whatever the reason, and UDP loss above `--max-loss`.
    pub fn verdict(&self) -> Result<(), String> {
        let first = self.runs.first().ok_or("an empty report")?;
        let (target, mode) = (&first.target, first.mode);
        if let Some(Merged::Segments { count, missing, .. }) = &self.merged {
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(u32::to_string).collect();
                return Err(format!(
                    "segment{} {} of {count} missing: the merged figures are not the whole run's",
                    if missing.len() == 1 { "" } else { "s" },
                    list.join(", ")
                ));
            }
        }
        let kinds: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let why = if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        };
        let c = &self.connections;
        if c.requested > 0 && c.established == 0 && c.established_before_window == 0 {
            return Err(format!("no connection to {target} was established{why}"));
        }
        if self.measured_nothing(mode) {
            if c.established_before_window > 0 || c.ended_before_window > 0 {
                return Err(format!(
                    "connections to {target} were established during the warm-up, but none \
                     lasted into the measurement{why}"
                ));
            }
            let what = match mode {
                Mode::Udp => {
                    let sent = self.udp.map_or(0, |u| u.sent);
                    format!("no reply came back from {target} ({sent} datagrams sent)")
                }
                Mode::Recv => format!("nothing was received from {target}"),
                Mode::Send => format!("nothing could be sent to {target}"),
                Mode::Echo | Mode::Connect => format!("no message to {target} completed"),
                Mode::Handshake => format!("no TLS handshake with {target} completed"),
            };
            return Err(format!("{what}{why}"));
        }
        let failing: Vec<String> = self
            .failing_errors()
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        if !failing.is_empty() {
            let total: u64 = self.failing_errors().values().sum();
            let what = if self.faults.is_some() {
                "errors the servers' faults do not explain"
            } else {
                "errors"
            };
            return Err(format!("{total} {what}: {}", failing.join(", ")));
        }
        if let Some(why) = self.cpu.as_ref().and_then(|c| c.unavailable.first()) {
            return Err(format!("a CPU figure that was asked for is missing: {why}"));
        }
        if let Some(u) = &self.udp {
            let max = self
                .runs
                .iter()
                .map(|r| r.max_loss_pct)
                .fold(f64::INFINITY, f64::min);
            if u.loss_pct() > max {
                return Err(format!(
                    "{:.2}% of datagrams were lost, which exceeds --max-loss {max}%",
                    u.loss_pct()
                ));
            }
        }
        Ok(())
    }

    fn measured_nothing(&self, mode: Mode) -> bool {
        match mode {
            Mode::Udp => self.udp.is_none_or(|u| u.received == 0),
            Mode::Recv => self.bytes_received == 0,
            Mode::Send => self.bytes_sent == 0,
            Mode::Echo | Mode::Connect | Mode::Handshake => self.messages == 0,
        }
    }

    /// The TLS lines: handshakes by kind with their rates and the resumed share against the
    /// share asked for, each kind's latency, what was negotiated, alerts, and what the
    /// handshake mode waited for in vain.
    fn tls_lines(&self, f: &mut fmt::Formatter<'_>, t: &TlsReport) -> fmt::Result {
        let (h, r) = (&t.handshakes, &t.handshakes_per_sec);
        let share = match t.resumed_pct {
            Some(pct) => format!(
                "{pct:.1}% resumed (asked {}%; {} connections offered a session)",
                t.resume_asked_pct, t.offered
            ),
            None => "none measured".into(),
        };
        writeln!(
            f,
            "  {:<12} {} ({:.0}/s): {} full ({:.0}/s), {} resumed ({:.0}/s); {share}",
            "handshakes",
            h.full + h.resumed,
            t.per_sec(),
            h.full,
            r.full,
            h.resumed,
            r.resumed,
        )?;
        latency_line(f, "tls full", &t.handshake_latency.full)?;
        latency_line(f, "tls resumed", &t.handshake_latency.resumed)?;
        for n in &t.negotiated {
            let v = &n.negotiated;
            writeln!(
                f,
                "  {:<12} {} {} group {} alpn {} ({} handshakes)",
                "negotiated",
                v.version,
                v.cipher_suite,
                v.group.as_deref().unwrap_or("-"),
                v.alpn.as_deref().unwrap_or("-"),
                n.handshakes
            )?;
        }
        if !t.alerts_received.is_empty() {
            let alerts: Vec<String> = t
                .alerts_received
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            writeln!(f, "  {:<12} {}", "tls alerts", alerts.join(", "))?;
        }
        if t.resume_asked_pct > 0.0 && t.offered == 0 && h.full + h.resumed > 0 {
            writeln!(
                f,
                "  warning: no connection had a session to offer: the server gave no session \
                 ticket or id{}",
                if self.mode() == Some(Mode::Handshake) {
                    ""
                } else {
                    " (TLS 1.3 tickets arrive after the handshake; -m handshake waits for them)"
                }
            )?;
        }
        if t.waited_out > 0 {
            writeln!(
                f,
                "  warning: {} connections waited the connect timeout after the handshake for a \
                 session ticket, bytes or a close that never came (a TLS 1.3 server without \
                 tickets that does not speak first); --connect-timeout bounds that wait",
                t.waited_out
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{BenchConfig, Expect, Mode, RecordedConfig};
    use crate::record::Tally;
    use crate::report::Report;

    /// An open-loop report whose messages lagged `lag_us` and took `service_us` to answer.
    fn open_loop(lag_us: u64, service_us: u64) -> Report {
        let mut cfg = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        cfg.rate = Some(1000.0);
        let mut tally = Tally::new();
        for _ in 0..100 {
            tally.send_lag.record(lag_us * 1_000).unwrap();
            tally.uncorrected.record(service_us * 1_000).unwrap();
            tally.latency.record((lag_us + service_us) * 1_000).unwrap();
        }
        tally.messages = 100;
        tally.established = 1;
        Report::new(RecordedConfig::from(&cfg), 1.0, &tally, Vec::new())
    }

    /// The warning compares the lag with the server's part of the latency: a sender late by
    /// 2 ms for a 100 µs answer set the pace; one late by 10 µs did not.
    #[test]
    fn a_lagging_sender_is_named() {
        let starved = open_loop(2_000, 100);
        assert!(starved.lagging().is_some());
        assert!(starved
            .to_string()
            .contains("warning: the sender ran behind its schedule"));
        let prompt = open_loop(10, 100);
        assert!(prompt.lagging().is_none());
        assert!(!prompt.to_string().contains("ran behind"));
    }

    /// A report of `mode` that moved `messages` of 64 bytes each way (none back in send
    /// mode, none out in recv mode).
    fn report_of(mode: Mode, messages: u64) -> Report {
        let mut cfg = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        cfg.mode = mode;
        if mode == Mode::Recv {
            cfg.expect = Some(Expect::Chargen);
        }
        let mut tally = Tally::new();
        tally.established = 1;
        tally.served = 1;
        let bytes = 64 * messages.max(1);
        match mode {
            Mode::Send => {
                tally.messages = messages;
                tally.bytes_sent = bytes;
            }
            Mode::Recv => tally.bytes_received = bytes,
            _ => {
                tally.messages = messages;
                tally.bytes_sent = bytes;
                tally.bytes_received = bytes;
                for _ in 0..messages {
                    tally.latency.record(100_000).unwrap();
                }
            }
        }
        Report::new(RecordedConfig::from(&cfg), 1.0, &tally, Vec::new())
    }

    /// Each mode's summary says what it measured: recv reads bytes (no messages, no
    /// pipeline, no closed loop), send writes messages, the round-trip modes time messages.
    #[test]
    fn the_summary_fits_its_mode() {
        let recv = report_of(Mode::Recv, 0).to_string();
        for absent in ["messages", "closed loop", "pipeline", "64-byte", "latency"] {
            assert!(!recv.contains(absent), "{absent} in:\n{recv}");
        }
        assert!(recv.contains("reading what the server sends"), "{recv}");
        assert!(recv.contains("checked against RFC 864"), "{recv}");
        assert!(recv.contains("received     64 bytes"), "{recv}");

        let send = report_of(Mode::Send, 10).to_string();
        assert!(send.contains("messages     10 written (10/s)"), "{send}");
        assert!(send.contains("a server that only reads"), "{send}");
        assert!(
            !send.contains("received") && !send.contains("pipeline"),
            "{send}"
        );

        let echo = report_of(Mode::Echo, 10).to_string();
        assert!(
            echo.contains("64-byte messages, closed loop, pipeline 1"),
            "{echo}"
        );
        assert!(echo.contains("messages     10 (10/s)"), "{echo}");
        assert!(echo.contains("latency      p50"), "{echo}");

        let udp = report_of(Mode::Udp, 10).to_string();
        assert!(
            udp.contains("50 sockets") && udp.contains("64-byte datagrams"),
            "{udp}"
        );

        let connect = report_of(Mode::Connect, 10).to_string();
        assert!(
            connect.contains("each one 64-byte round trip, then closed"),
            "{connect}"
        );
        assert!(connect.contains("connects     1 (1/s)"), "{connect}");
        assert!(!connect.contains("pipeline"), "{connect}");
    }
}
