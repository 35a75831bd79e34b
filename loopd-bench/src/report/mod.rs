//! Reporting: the report a run produces from what its workers recorded
//! ([`record`](crate::record)), its JSON form, merging the reports of runs made on several
//! machines at once, the text summary, the picture and the standard histogram files.
//!
//! Everything derived from the raw counts and histograms (rates, percentiles) is written out
//! for readers of the JSON file, and recomputed from the raw data by `merge`.
//!
//! 1. [`latency`] — percentiles and the histograms' interchange form.
//! 2. [`backends`] — results per backend and their spread (`--per-backend`).
//! 3. [`iterations`] — the iterations of a series and the interval of their mean.
//! 4. This module — [`Report`] and its JSON shape; [`window`] — when the measurement ran on
//!    the wall clock; [`segments`] — telling the segments of one run from unrelated runs, and
//!    what makes their aggregate; [`merge`] — [`Report::merge`] and [`Report::sequence`].
//! 5. [`summary`] — the text a person reads, and the verdict that sets the exit status.
//! 6. [`comparison`] — the table of `compare`.
//! 7. [`plot`] — the SVG picture; [`files`] — `.hgrm` and `.hlog`.
//! 8. [`tls`] — the TLS part: handshakes by kind, their latency, what was negotiated.

pub mod backends;
pub mod comparison;
pub mod files;
pub mod iterations;
pub mod latency;
pub mod merge;
pub mod plot;
pub mod segments;
pub mod summary;
pub mod tls;
pub mod window;

use std::collections::BTreeMap;
use std::time::SystemTime;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{Mode, RecordedConfig};
use crate::cpu::CpuCosts;
use crate::errors::ErrorKind;
use crate::faults::Reconciliation;
use crate::payload::Protocol;
use crate::record::intervals::Interval;
use crate::record::tls::TlsTally;
pub use crate::record::Second;
use crate::record::{BackendTally, Tally, UdpCounts};
use backends::{BackendReport, Spread};
use iterations::Iterations;
pub use latency::Latency;
pub use segments::Merged;
pub use tls::TlsReport;
pub use window::Window;

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
    pub(crate) fn add(&mut self, o: &Connections) {
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
    /// TLS: handshakes (full and resumed) completed per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes_per_sec: Option<f64>,
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
            handshakes_per_sec: None,
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
    /// When the measurement ran, on the wall clock, with the start lag and whether the clock
    /// was synchronised; merged segments: their common window.
    #[serde(default)]
    pub window: Option<Window>,
    /// A merge: what it combined (segments of one run, or unrelated runs).
    #[serde(default)]
    pub merged: Option<Merged>,
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
    /// `--tls`: handshakes by kind, their latency, what was negotiated, alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsReport>,
    /// `--protocol http`: measured responses by status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<BTreeMap<u16, u64>>,
    /// `--server-metrics`: the errors reconciled with the faults the servers injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<Reconciliation>,
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
            requested: config.own_connections() as u64,
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
        let tls = config.tls.is_some().then(|| tally.tls.clone());
        let http_status =
            (config.protocol == Protocol::Http.name()).then(|| tally.http_status.clone());
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
            udp: (mode == Mode::Udp).then_some(tally.udp),
            errors,
            examples: tally.examples.clone(),
            timeline,
            backends: per_backend.then(|| tally.backends.clone()),
            cpu: None,
            tls,
            http_status,
        })
    }

    pub(crate) fn assemble(p: Parts<'_>) -> Report {
        let churn = p.runs.first().is_some_and(|c| c.mode.load().churns());
        let mut rates = Rates::over(p.duration_secs, p.messages, p.bytes_sent, p.bytes_received);
        if churn {
            let connects = Rates::over(p.duration_secs, p.connections.established, 0, 0);
            rates.connects_per_sec = Some(connects.messages_per_sec);
        }
        let resume_asked = p
            .runs
            .first()
            .and_then(|c| c.tls.as_ref())
            .map_or(0.0, |t| t.resume_pct);
        let tls = p
            .tls
            .as_ref()
            .map(|t| TlsReport::new(t, p.duration_secs, resume_asked));
        rates.handshakes_per_sec = tls.as_ref().map(TlsReport::per_sec);
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
            tls,
            http_status: p.http_status,
            iterations: None,
            faults: None,
            lead_in: Vec::new(),
            lead_in_secs: 0.0,
            window: None,
            merged: None,
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

    /// What the reconciliation with the servers' faults looks at: every error kind counted,
    /// and for UDP the datagrams lost and the replies late (or twice).
    pub fn reconciled_errors(&self) -> BTreeMap<String, u64> {
        let mut errors = self.errors.clone();
        if let Some(u) = &self.udp {
            errors.insert("loss".into(), u.lost);
            errors.insert("late".into(), u.late);
        }
        errors
    }

    /// The errors that fail the run: all of them, or with a reconciliation those nothing
    /// explains.
    pub fn failing_errors(&self) -> BTreeMap<String, u64> {
        match &self.faults {
            Some(r) => {
                let mut left = r.unexplained();
                // Loss and late replies are judged by --max-loss, not as errors.
                left.remove("loss");
                left.remove("late");
                left
            }
            None => self.errors.clone(),
        }
    }
}

/// The raw material of a report.
pub(crate) struct Parts<'a> {
    pub runs: Vec<RecordedConfig>,
    pub duration_secs: f64,
    pub connections: Connections,
    pub messages: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub latency: &'a Histogram<u64>,
    pub uncorrected: Option<&'a Histogram<u64>>,
    pub send_lag: Option<&'a Histogram<u64>>,
    pub connect: &'a Histogram<u64>,
    pub udp: Option<UdpCounts>,
    pub errors: BTreeMap<String, u64>,
    pub examples: Vec<String>,
    pub timeline: Vec<Second>,
    pub backends: Option<Vec<BackendTally>>,
    pub cpu: Option<CpuCosts>,
    pub tls: Option<TlsTally>,
    pub http_status: Option<BTreeMap<u16, u64>>,
}
