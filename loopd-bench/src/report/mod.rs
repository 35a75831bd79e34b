//! Results: what workers tally, the report a run produces, its JSON form, merging the
//! reports of runs made on several machines at once, the text summary and the picture.
//!
//! Everything derived from the raw counts and histograms (rates, percentiles) is written out
//! for readers of the JSON file, and recomputed from the raw data by `merge`.
//!
//! 1. [`tally`] — a worker's counters and histograms.
//! 2. [`latency`] — histograms, percentiles and their interchange form.
//! 3. This module — [`Report`], its JSON shape, and [`Report::merge`].
//! 4. [`summary`] — the text a person reads, and the verdict that sets the exit status.
//! 5. [`plot`] — the SVG picture.

pub mod backends;
pub mod files;
pub mod latency;
pub mod plot;
pub mod summary;
pub mod tally;

use std::collections::BTreeMap;
use std::time::SystemTime;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{Load, Mode, RecordedConfig};
use crate::cpu::{Cost, CpuCosts};
use crate::errors::ErrorKind;
use crate::repeat::Iterations;
use backends::{BackendReport, Spread};
use files::Interval;
pub use latency::Latency;
use latency::{add_serialized, new_histogram};
use tally::MAX_EXAMPLES;
pub use tally::{BackendTally, Tally, UdpCounts};

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

/// Connection counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Connections asked for.
    pub requested: u64,
    /// Connections that completed the handshake (in connect mode: connection attempts
    /// inside the window).
    pub established: u64,
    /// Connections the server served: something came back inside the window. `None` in
    /// send mode, where nothing comes back to tell.
    #[serde(default)]
    pub served: Option<u64>,
    /// Connect mode: connections established before the window (during the warm-up).
    #[serde(default)]
    pub established_before_window: u64,
    /// Connections that ended with an error before the window began.
    #[serde(default)]
    pub ended_before_window: u64,
    /// Attempts that never established.
    pub failed: u64,
}

impl Connections {
    fn add(&mut self, o: &Connections) {
        self.requested += o.requested;
        self.established += o.established;
        self.served = match (self.served, o.served) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.established_before_window += o.established_before_window;
        self.ended_before_window += o.ended_before_window;
        self.failed += o.failed;
    }
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

impl Rates {
    /// Messages and bytes over `duration_secs` (zero rates for an empty duration).
    pub fn over(duration_secs: f64, messages: u64, sent: u64, received: u64) -> Rates {
        const MIB: f64 = 1024.0 * 1024.0;
        let per_sec = |n: u64| {
            if duration_secs > 0.0 {
                n as f64 / duration_secs
            } else {
                0.0
            }
        };
        Rates {
            messages_per_sec: per_sec(messages),
            mib_per_sec_sent: per_sec(sent) / MIB,
            mib_per_sec_received: per_sec(received) / MIB,
            connects_per_sec: None,
        }
    }
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
    /// Open loop only: how late each message was sent against its schedule (actual minus
    /// intended send time). Large means the client, not the server, set the pace.
    #[serde(default)]
    pub send_lag: Option<Latency>,
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
    /// One entry per second of the ramp and warm-up, before the measurement (`t` ≤ 0): not
    /// measured, drawn for context.
    #[serde(default)]
    pub lead_in: Vec<Second>,
    /// When the run began, in seconds relative to the measurement (≤ 0).
    #[serde(default)]
    pub lead_in_secs: f64,
    /// `--per-backend`: each backend's results, by server id.
    #[serde(default)]
    pub backends: Option<Vec<BackendReport>>,
    /// `--per-backend`: how evenly the connections spread over the backends.
    #[serde(default)]
    pub spread: Option<Spread>,
    /// CPU time per message: the client's, and the server's and the machine's when asked.
    #[serde(default)]
    pub cpu: Option<CpuCosts>,
    /// `--iterations`: each iteration's figures and the confidence interval of their mean;
    /// the rest of the report is all iterations together.
    #[serde(default)]
    pub iterations: Option<Iterations>,
    /// When the measurement began (for `--hlog`).
    #[serde(skip)]
    pub started: Option<SystemTime>,
    /// `--hlog`: a latency histogram per second, compressed.
    #[serde(skip)]
    pub intervals: Vec<Interval>,
}

impl Report {
    /// Builds the report of one run.
    pub fn new(
        config: RecordedConfig,
        duration_secs: f64,
        tally: &Tally,
        timeline: Vec<Second>,
    ) -> Report {
        let mode = config.mode;
        let connections = Connections {
            requested: config.connections as u64,
            established: tally.established,
            served: mode.observes_service().then_some(tally.served),
            established_before_window: tally.established_before,
            ended_before_window: tally.ended_before,
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
        let open_loop = config.rate.is_some();
        let per_backend = config.per_backend;
        Report::assemble(Parts {
            runs: vec![config],
            duration_secs,
            connections,
            messages: tally.messages,
            bytes_sent: tally.bytes_sent,
            bytes_received: tally.bytes_received,
            latency: &tally.latency,
            uncorrected: open_loop.then_some(&tally.uncorrected),
            send_lag: open_loop.then_some(&tally.send_lag),
            connect: &tally.connect,
            udp: (mode == Mode::UDP).then_some(tally.udp),
            errors,
            examples: tally.examples.clone(),
            timeline,
            backends: per_backend.then(|| tally.backends.clone()),
            cpu: None,
        })
    }

    fn assemble(p: Parts<'_>) -> Report {
        let churn = p.runs.first().is_some_and(|c| c.mode.load == Load::Churn);
        let mut rates = Rates::over(p.duration_secs, p.messages, p.bytes_sent, p.bytes_received);
        if churn {
            let connects = Rates::over(p.duration_secs, p.connections.established, 0, 0);
            rates.connects_per_sec = Some(connects.messages_per_sec);
        }
        let (backends, spread) = match p.backends {
            Some(parts) => {
                let (reports, spread) = backends::summarise(parts, p.duration_secs);
                (Some(reports), spread)
            }
            None => (None, None),
        };
        Report {
            rates,
            backends,
            spread,
            cpu: p.cpu,
            iterations: None,
            lead_in: Vec::new(),
            lead_in_secs: 0.0,
            started: None,
            intervals: Vec::new(),
            runs: p.runs,
            duration_secs: p.duration_secs,
            connections: p.connections,
            messages: p.messages,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            latency: Latency::from_histogram(p.latency),
            uncorrected_latency: p.uncorrected.and_then(Latency::from_histogram),
            send_lag: p.send_lag.and_then(Latency::from_histogram),
            connect_latency: Latency::from_histogram(p.connect),
            udp: p.udp,
            errors: p.errors,
            error_examples: p.examples,
            timeline: p.timeline,
        }
    }

    /// The mode of the run (of the first run, when merged: merging requires one mode).
    pub fn mode(&self) -> Option<Mode> {
        self.runs.first().map(|c| c.mode)
    }

    /// The timeline as rates: `(t, value / seconds)` for each interval, where `value` picks
    /// the count (the last interval may be shorter than a second).
    pub fn timeline_rates(&self, value: impl Fn(&Second) -> f64) -> Vec<(f64, f64)> {
        Report::rates_of(&self.timeline, 0.0, &value)
    }

    /// The lead-in (ramp and warm-up) as rates, like [`Report::timeline_rates`].
    pub fn lead_in_rates(&self, value: impl Fn(&Second) -> f64) -> Vec<(f64, f64)> {
        Report::rates_of(&self.lead_in, self.lead_in_secs, &value)
    }

    /// `(t, value / seconds)` for intervals that end at each `t`, the first starting at
    /// `start`.
    fn rates_of(
        seconds: &[Second],
        mut start: f64,
        value: &dyn Fn(&Second) -> f64,
    ) -> Vec<(f64, f64)> {
        seconds
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
        Report::combine(reports, Combine::Concurrent)
    }

    /// Combines the reports of runs made one after another (the iterations of one run) into
    /// one: counts, histograms and CPU time add, durations add, and the timelines follow
    /// each other.
    pub fn sequence(reports: &[Report]) -> Result<Report, String> {
        Report::combine(reports, Combine::Sequential)
    }

    fn combine(reports: &[Report], how: Combine) -> Result<Report, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut latency = new_histogram();
        let mut uncorrected = new_histogram();
        let mut send_lag = new_histogram();
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
        let mut backends: Option<Vec<BackendTally>> = None;
        let mut cpu: Option<CpuCosts> = None;
        let mut intervals = Vec::new();
        let mut lead_in: Vec<Second> = Vec::new();
        let mut lead_in_secs: f64 = 0.0;
        for r in reports {
            if r.mode() != first.mode() {
                return Err("cannot merge runs of different modes".into());
            }
            add_serialized(&mut latency, &r.latency)?;
            add_serialized(&mut uncorrected, &r.uncorrected_latency)?;
            add_serialized(&mut send_lag, &r.send_lag)?;
            add_serialized(&mut connect, &r.connect_latency)?;
            any_uncorrected |= r.uncorrected_latency.is_some();
            connections.add(&r.connections);
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
            match how {
                Combine::Concurrent => {
                    for (i, s) in r.timeline.iter().enumerate() {
                        if timeline.len() <= i {
                            timeline.push(Second::default());
                        }
                        timeline[i].add(s);
                    }
                    // Lead-ins end together, where the measurements begin.
                    let n = r.lead_in.len();
                    if lead_in.len() < n {
                        // Placeholders take their time from the run that has them.
                        let empty = Second {
                            t: f64::NEG_INFINITY,
                            ..Second::default()
                        };
                        let mut longer = vec![empty; n - lead_in.len()];
                        longer.append(&mut lead_in);
                        lead_in = longer;
                    }
                    let skip = lead_in.len() - n;
                    for (sum, s) in lead_in[skip..].iter_mut().zip(&r.lead_in) {
                        sum.add(s);
                    }
                    lead_in_secs = lead_in_secs.min(r.lead_in_secs);
                    runs.extend(r.runs.iter().cloned());
                    duration_secs = duration_secs.max(r.duration_secs);
                }
                Combine::Sequential => {
                    // Each iteration's seconds, placed after the first one's start.
                    if let (Some(first), Some(this)) = (first.started, r.started) {
                        let offset = this.duration_since(first).unwrap_or_default();
                        intervals.extend(r.intervals.iter().map(|i| Interval {
                            start: i.start + offset,
                            ..i.clone()
                        }));
                    }
                    let offset = duration_secs;
                    timeline.extend(r.timeline.iter().map(|s| Second {
                        t: s.t + offset,
                        ..*s
                    }));
                    if runs.is_empty() {
                        runs.extend(r.runs.iter().cloned());
                        lead_in = r.lead_in.clone();
                        lead_in_secs = r.lead_in_secs;
                    }
                    duration_secs += r.duration_secs;
                }
            }
            if let Some(c) = &r.cpu {
                let total = cpu.get_or_insert_with(CpuCosts::default);
                let add = |sum: &mut Option<Cost>, part: &Option<Cost>| {
                    if let Some(p) = part {
                        let sum = sum.get_or_insert_with(|| Cost::new(p.method.clone(), 0.0, 0));
                        sum.cpu_seconds += p.cpu_seconds;
                    }
                };
                add(&mut total.client, &c.client);
                // A server's or the machine's CPU is read by every concurrent run: added,
                // it would be counted once per run. One after another, it adds up.
                if how == Combine::Sequential {
                    add(&mut total.server, &c.server);
                    add(&mut total.system, &c.system);
                }
                total.unavailable.extend(c.unavailable.iter().cloned());
            }
            if let Some(b) = &r.backends {
                let parts = backends.get_or_insert_with(Vec::new);
                for report in b {
                    parts.push(BackendTally::try_from(report)?);
                }
            }
        }
        let mut combined = Report::assemble(Parts {
            runs,
            duration_secs,
            connections,
            messages,
            bytes_sent,
            bytes_received,
            latency: &latency,
            uncorrected: any_uncorrected.then_some(&uncorrected),
            send_lag: any_uncorrected.then_some(&send_lag),
            connect: &connect,
            udp,
            errors,
            examples,
            timeline,
            backends,
            cpu: cpu.map(|c| {
                let per = |c: Option<Cost>| c.map(|c| Cost::new(c.method, c.cpu_seconds, messages));
                CpuCosts {
                    client: per(c.client),
                    server: per(c.server),
                    system: per(c.system),
                    unavailable: c.unavailable,
                }
            }),
        });
        if how == Combine::Sequential {
            combined.started = first.started;
            combined.intervals = intervals;
        }
        combined.lead_in = lead_in;
        combined.lead_in_secs = lead_in_secs;
        Ok(combined)
    }
}

/// How the runs being combined relate in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Combine {
    /// At the same time, from several machines.
    Concurrent,
    /// One after another: the iterations of a run.
    Sequential,
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
    send_lag: Option<&'a Histogram<u64>>,
    connect: &'a Histogram<u64>,
    udp: Option<UdpCounts>,
    errors: BTreeMap<String, u64>,
    examples: Vec<String>,
    timeline: Vec<Second>,
    backends: Option<Vec<BackendTally>>,
    cpu: Option<CpuCosts>,
}
