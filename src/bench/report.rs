//! Results: what a worker tallies, the report a run produces, its JSON form, and merging
//! the reports of runs made on several machines at once.
//!
//! Latency is kept in HdrHistograms of nanoseconds with three significant digits, so any
//! percentile is within 0.1% and histograms from different runs add exactly. In JSON each
//! histogram travels in HdrHistogram's interchange format (V2, deflate-compressed, base64),
//! the form the Java, C, Go and Rust libraries all read. Everything derived from the raw
//! counts and histograms (rates, percentiles) is written out for readers of the file, and
//! recomputed from the raw data by `merge`.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::RecordedConfig;

/// The highest latency a histogram tracks: an hour, far beyond any stall guard here.
const HIGHEST_NANOS: u64 = 3_600 * 1_000_000_000;
/// Three significant digits: 0.1% resolution at any magnitude.
const SIGFIGS: u8 = 3;
/// Error descriptions kept as examples; the counts say how many there were in all.
const MAX_EXAMPLES: usize = 10;

/// A new, empty latency histogram in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NANOS, SIGFIGS).expect("valid histogram bounds")
}

/// What can go wrong, by kind. Every kind makes the exit status non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The connection was refused (nothing listening, or a full backlog with resets).
    ConnectRefused,
    /// The connection did not establish within `--connect-timeout`.
    ConnectTimeout,
    /// The connection was reset while establishing.
    ConnectReset,
    /// Any other failure to establish (no local port left, no route, ...).
    ConnectOther,
    /// An echoed byte differs from the byte sent, or bytes arrived that were never sent.
    Mismatch,
    /// The server closed in the middle of a reply.
    ShortEcho,
    /// The server closed an established connection the client still used.
    UnexpectedClose,
    /// The server reset an established connection.
    Reset,
    /// Replies that never came: outstanding at the end of the drain, or after a stall.
    Unanswered,
    /// Any other I/O error on an established connection.
    Io,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectReset,
        ErrorKind::ConnectOther,
        ErrorKind::Mismatch,
        ErrorKind::ShortEcho,
        ErrorKind::UnexpectedClose,
        ErrorKind::Reset,
        ErrorKind::Unanswered,
        ErrorKind::Io,
    ];

    /// The name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectReset => "connect_reset",
            ErrorKind::ConnectOther => "connect_other",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::ShortEcho => "short_echo",
            ErrorKind::UnexpectedClose => "unexpected_close",
            ErrorKind::Reset => "reset",
            ErrorKind::Unanswered => "unanswered",
            ErrorKind::Io => "io",
        }
    }

    /// Whether the error stopped a connection from ever establishing.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::ConnectReset
                | ErrorKind::ConnectOther
        )
    }
}

/// UDP accounting. Loss is normal for UDP and is reported, not treated as an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpCounts {
    /// Measured datagrams sent.
    pub sent: u64,
    /// Of those, answered in time and verified.
    pub received: u64,
    /// Of those, not answered within the loss timeout.
    pub lost: u64,
    /// Replies that arrived after their datagram was declared lost, or twice.
    pub late: u64,
}

impl UdpCounts {
    fn add(&mut self, o: &UdpCounts) {
        self.sent += o.sent;
        self.received += o.received;
        self.lost += o.lost;
        self.late += o.late;
    }
}

/// What one worker thread measured.
#[derive(Debug)]
pub struct Tally {
    /// Round-trip latency, from the intended send time in open loop.
    pub latency: Histogram<u64>,
    /// Round-trip latency from the actual send time (differs from `latency` in open loop).
    pub uncorrected: Histogram<u64>,
    /// Time to establish connections.
    pub connect: Histogram<u64>,
    /// Measured completed messages (round trips; chunks written in send mode).
    pub messages: u64,
    /// Measured bytes written.
    pub bytes_sent: u64,
    /// Measured bytes read.
    pub bytes_received: u64,
    /// Connections that established.
    pub established: u64,
    /// Connection attempts that failed.
    pub failed: u64,
    /// Errors by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first few errors, described.
    pub examples: Vec<String>,
    /// UDP accounting.
    pub udp: UdpCounts,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            uncorrected: new_histogram(),
            connect: new_histogram(),
            messages: 0,
            bytes_sent: 0,
            bytes_received: 0,
            established: 0,
            failed: 0,
            errors: BTreeMap::new(),
            examples: Vec::new(),
            udp: UdpCounts::default(),
        }
    }

    /// Counts `n` errors of `kind`, keeping `what` as an example.
    pub fn error(&mut self, kind: ErrorKind, n: u64, what: impl FnOnce() -> String) {
        let count = self.errors.entry(kind).or_default();
        let first = *count == 0;
        *count += n;
        // The first of each kind is the useful example; the counts tell how many followed.
        if first && self.examples.len() < MAX_EXAMPLES {
            let what = what();
            log::debug!("{}: {what}", kind.name());
            self.examples.push(format!("{}: {what}", kind.name()));
        }
    }

    /// Adds another worker's tally to this one.
    pub fn absorb(&mut self, o: Tally) {
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.uncorrected
            .add(&o.uncorrected)
            .expect("same histogram bounds");
        self.connect.add(&o.connect).expect("same histogram bounds");
        self.messages += o.messages;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.established += o.established;
        self.failed += o.failed;
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
        let room = MAX_EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(o.examples.into_iter().take(room));
        self.udp.add(&o.udp);
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

/// One second of the measurement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the measurement started, at the end of this interval.
    pub t: f64,
    /// Messages completed in the interval.
    pub messages: u64,
    /// Bytes written in the interval.
    pub bytes_sent: u64,
    /// Bytes read in the interval.
    pub bytes_received: u64,
    /// Errors counted in the interval.
    pub errors: u64,
    /// Connections established at the end of the interval.
    pub open: u64,
}

impl Second {
    /// Adds `o`'s counts to this one's (the later `t` wins): workers into a run, runs into
    /// a merge.
    pub fn add(&mut self, o: &Second) {
        self.t = self.t.max(o.t);
        self.messages += o.messages;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.errors += o.errors;
        self.open += o.open;
    }

    /// The counts between running totals `earlier` and `self`, as the interval ending at
    /// `t` (the open-connection count is a level, not a total, and is kept).
    pub fn since(&self, earlier: &Second, t: f64) -> Second {
        Second {
            t,
            messages: self.messages - earlier.messages,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
            errors: self.errors - earlier.errors,
            open: self.open,
        }
    }
}

/// A latency distribution: the serialised histogram and the figures read from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest, in microseconds.
    pub min_us: f64,
    /// Mean, in microseconds.
    pub mean_us: f64,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 90th percentile, in microseconds.
    pub p90_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, in microseconds.
    pub p99_9_us: f64,
    /// 99.99th percentile, in microseconds.
    pub p99_99_us: f64,
    /// Largest, in microseconds.
    pub max_us: f64,
    /// The histogram of nanoseconds, HdrHistogram V2 deflate, base64.
    pub histogram: String,
}

impl Latency {
    /// Reads the figures off `h`; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        let q = |p: f64| us(h.value_at_quantile(p));
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut bytes)
            .expect("serialising into memory");
        Some(Latency {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1_000.0,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: us(h.max()),
            histogram: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    /// Decodes the serialised histogram.
    pub fn histogram(&self) -> Result<Histogram<u64>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.histogram)
            .map_err(|e| format!("histogram is not base64: {e}"))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram does not decode: {e:?}"))
    }

    /// The percentile spectrum (percentile, microseconds), for plotting.
    pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
        h.iter_quantiles(1)
            .map(|v| {
                (
                    v.quantile_iterated_to() * 100.0,
                    v.value_iterated_to() as f64 / 1_000.0,
                )
            })
            .collect()
    }
}

/// Connection counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Connections asked for.
    pub requested: u64,
    /// Connections (in connect mode: connection attempts) that established.
    pub established: u64,
    /// Attempts that never established.
    pub failed: u64,
}

/// Rates over the measured duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Completed messages per second.
    pub messages_per_sec: f64,
    /// MiB per second written.
    pub mib_per_sec_sent: f64,
    /// MiB per second read.
    pub mib_per_sec_received: f64,
    /// Connect mode: connections established per second.
    pub connects_per_sec: Option<f64>,
}

/// The result of a run, or of several merged: what the summary shows and `--json` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The settings of each run this report covers (one, unless merged).
    pub runs: Vec<RecordedConfig>,
    /// Measured seconds (the longest, when merged: the runs are concurrent).
    pub duration_secs: f64,
    /// Connection counts.
    pub connections: Connections,
    /// Measured completed messages.
    pub messages: u64,
    /// Measured bytes written.
    pub bytes_sent: u64,
    /// Measured bytes read.
    pub bytes_received: u64,
    /// Derived rates.
    pub rates: Rates,
    /// Round-trip latency (from the intended send time in open loop).
    pub latency: Option<Latency>,
    /// Open loop only: latency from the actual send time, which hides queueing delay.
    pub uncorrected_latency: Option<Latency>,
    /// Time to establish a connection.
    pub connect_latency: Option<Latency>,
    /// UDP mode only: sent, received, lost, late.
    pub udp: Option<UdpCounts>,
    /// Errors by kind (every kind listed, zeros included).
    pub errors: BTreeMap<String, u64>,
    /// The first errors, described.
    pub error_examples: Vec<String>,
    /// One entry per measured second.
    pub timeline: Vec<Second>,
}

impl Report {
    /// Builds the report of one run.
    pub fn new(
        config: RecordedConfig,
        duration_secs: f64,
        tally: &Tally,
        open_loop: bool,
        timeline: Vec<Second>,
    ) -> Report {
        let udp = config.mode == "udp";
        let connections = Connections {
            requested: config.connections as u64,
            established: tally.established,
            failed: tally.failed,
        };
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| {
                (
                    k.name().to_string(),
                    tally.errors.get(k).copied().unwrap_or(0),
                )
            })
            .collect();
        Report::assemble(Parts {
            runs: vec![config],
            duration_secs,
            connections,
            messages: tally.messages,
            bytes_sent: tally.bytes_sent,
            bytes_received: tally.bytes_received,
            latency: &tally.latency,
            uncorrected: open_loop.then_some(&tally.uncorrected),
            connect: &tally.connect,
            udp: udp.then_some(tally.udp),
            errors,
            examples: tally.examples.clone(),
            timeline,
        })
    }

    fn assemble(p: Parts<'_>) -> Report {
        let per_sec = |n: u64| {
            if p.duration_secs > 0.0 {
                n as f64 / p.duration_secs
            } else {
                0.0
            }
        };
        const MIB: f64 = 1024.0 * 1024.0;
        Report {
            rates: Rates {
                messages_per_sec: per_sec(p.messages),
                mib_per_sec_sent: per_sec(p.bytes_sent) / MIB,
                mib_per_sec_received: per_sec(p.bytes_received) / MIB,
                connects_per_sec: (p.runs.first().map(|c| c.mode.as_str()) == Some("connect"))
                    .then(|| per_sec(p.connections.established)),
            },
            runs: p.runs,
            duration_secs: p.duration_secs,
            connections: p.connections,
            messages: p.messages,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            latency: Latency::from_histogram(p.latency),
            uncorrected_latency: p.uncorrected.and_then(Latency::from_histogram),
            connect_latency: Latency::from_histogram(p.connect),
            udp: p.udp,
            errors: p.errors,
            error_examples: p.examples,
            timeline: p.timeline,
        }
    }

    /// The timeline as rates: `(t, value / seconds)` for each interval, where `value` picks
    /// the count (the last interval may be shorter than a second).
    pub fn timeline_rates(&self, value: impl Fn(&Second) -> f64) -> Vec<(f64, f64)> {
        let mut start = 0.0;
        self.timeline
            .iter()
            .map(|s| {
                let span = (s.t - start).max(1e-3);
                start = s.t;
                (s.t, value(s) / span)
            })
            .collect()
    }

    /// All errors, of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Combines the reports of runs made at the same time (on several machines) into the
    /// report of one run with all their connections: counts and histograms add, the
    /// duration is the longest, and the timelines add second by second.
    pub fn merge(reports: &[Report]) -> Result<Report, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut latency = new_histogram();
        let mut uncorrected = new_histogram();
        let mut connect = new_histogram();
        let mut any_uncorrected = false;
        let mut connections = Connections::default();
        let (mut messages, mut bytes_sent, mut bytes_received) = (0, 0, 0);
        let mut udp: Option<UdpCounts> = None;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut examples = Vec::new();
        let mut timeline: Vec<Second> = Vec::new();
        let mut runs = Vec::new();
        let mut duration_secs: f64 = 0.0;
        for r in reports {
            if r.runs.first().map(|c| &c.mode) != first.runs.first().map(|c| &c.mode) {
                return Err("cannot merge runs of different modes".into());
            }
            let add = |h: &mut Histogram<u64>, l: &Option<Latency>| -> Result<(), String> {
                if let Some(l) = l {
                    h.add(l.histogram()?).map_err(|e| format!("{e:?}"))?;
                }
                Ok(())
            };
            add(&mut latency, &r.latency)?;
            add(&mut uncorrected, &r.uncorrected_latency)?;
            add(&mut connect, &r.connect_latency)?;
            any_uncorrected |= r.uncorrected_latency.is_some();
            connections.requested += r.connections.requested;
            connections.established += r.connections.established;
            connections.failed += r.connections.failed;
            messages += r.messages;
            bytes_sent += r.bytes_sent;
            bytes_received += r.bytes_received;
            if let Some(u) = &r.udp {
                udp.get_or_insert_with(UdpCounts::default).add(u);
            }
            for (k, n) in &r.errors {
                *errors.entry(k.clone()).or_default() += n;
            }
            let room = MAX_EXAMPLES.saturating_sub(examples.len());
            examples.extend(r.error_examples.iter().take(room).cloned());
            for (i, s) in r.timeline.iter().enumerate() {
                if timeline.len() <= i {
                    timeline.push(Second::default());
                }
                timeline[i].add(s);
            }
            runs.extend(r.runs.iter().cloned());
            duration_secs = duration_secs.max(r.duration_secs);
        }
        Ok(Report::assemble(Parts {
            runs,
            duration_secs,
            connections,
            messages,
            bytes_sent,
            bytes_received,
            latency: &latency,
            uncorrected: any_uncorrected.then_some(&uncorrected),
            connect: &connect,
            udp,
            errors,
            examples,
            timeline,
        }))
    }
}

/// The raw material of a report.
struct Parts<'a> {
    runs: Vec<RecordedConfig>,
    duration_secs: f64,
    connections: Connections,
    messages: u64,
    bytes_sent: u64,
    bytes_received: u64,
    latency: &'a Histogram<u64>,
    uncorrected: Option<&'a Histogram<u64>>,
    connect: &'a Histogram<u64>,
    udp: Option<UdpCounts>,
    errors: BTreeMap<String, u64>,
    examples: Vec<String>,
    timeline: Vec<Second>,
}

/// Formats microseconds with a unit that keeps three significant figures readable.
pub fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.0} µs")
    }
}

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

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [c] = self.runs.as_slice() {
            let load = match c.rate {
                Some(r) => format!("open loop at {r} msg/s"),
                None => "closed loop".into(),
            };
            writeln!(
                f,
                "loopd-bench {} {} ({}): {} connections, {} thread(s), {}-byte messages, {load}, pipeline {}",
                c.mode, c.target, c.protocol, c.connections, c.threads, c.size, c.pipeline
            )?;
        } else {
            let targets: Vec<&str> = self.runs.iter().map(|c| c.target.as_str()).collect();
            writeln!(
                f,
                "loopd-bench: {} runs merged ({})",
                self.runs.len(),
                targets.join(", ")
            )?;
        }
        writeln!(f, "  {:<12} {:.2} s", "duration", self.duration_secs)?;
        let c = &self.connections;
        let of = match self.rates.connects_per_sec {
            Some(_) => format!("{} at a time", c.requested),
            None => format!("of {} requested", c.requested),
        };
        writeln!(
            f,
            "  {:<12} {} established, {} failed ({of})",
            "connections", c.established, c.failed
        )?;
        if let Some(rate) = self.rates.connects_per_sec {
            writeln!(f, "  {:<12} {} ({rate:.0}/s)", "connects", c.established)?;
        }
        writeln!(
            f,
            "  {:<12} {} ({:.0}/s)",
            "messages", self.messages, self.rates.messages_per_sec
        )?;
        writeln!(
            f,
            "  {:<12} {:.2} MiB/s sent, {:.2} MiB/s received",
            "throughput", self.rates.mib_per_sec_sent, self.rates.mib_per_sec_received
        )?;
        latency_line(f, "latency", &self.latency)?;
        latency_line(f, "uncorrected", &self.uncorrected_latency)?;
        latency_line(f, "connect", &self.connect_latency)?;
        if let Some(u) = &self.udp {
            let pct = if u.sent > 0 {
                u.lost as f64 * 100.0 / u.sent as f64
            } else {
                0.0
            };
            writeln!(
                f,
                "  {:<12} {} sent, {} received, {} lost ({pct:.2}%), {} late",
                "datagrams", u.sent, u.received, u.lost, u.late
            )?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram survives the trip through its interchange format.
    #[test]
    fn histogram_round_trip() {
        let mut h = new_histogram();
        for v in [1_000, 2_000, 50_000, 3_000_000] {
            h.record(v).unwrap();
        }
        let l = Latency::from_histogram(&h).unwrap();
        assert_eq!(l.histogram().unwrap(), h);
        assert_eq!(l.count, 4);
        assert!((l.max_us - 3_000.0).abs() / 3_000.0 < 0.001);
    }

    /// Unit choice keeps numbers short.
    #[test]
    fn human_units() {
        assert_eq!(human_us(12.4), "12 µs");
        assert_eq!(human_us(1_500.0), "1.50 ms");
        assert_eq!(human_us(2_500_000.0), "2.50 s");
    }
}
