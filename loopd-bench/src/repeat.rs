//! Repetitions until the result is known well enough: `--iterations MIN[,MAX]` and
//! `--confidence LEVEL,WIDTH`, after netperf's `-i` and `-I`.
//!
//! Each iteration is a whole run; the [`Series`] of one target collects them and says when
//! it is done (the statistics are in [`report::iterations`](crate::report::iterations)). The
//! series is kept apart from the running of it, so `compare` can alternate targets and ask
//! each series whether it is done.

use crate::config::BenchConfig;
pub use crate::config::{Confidence, Repeat};
use crate::faults::Reconciliation;
use crate::record::Second;
use crate::report::iterations::{interval, Interval, Iteration, Iterations};
pub use crate::report::iterations::{DEFAULT_LEVEL, EXIT_NOT_CONFIDENT};
use crate::report::Report;
use crate::run::{run, BenchError};

/// The iterations of one target so far.
#[derive(Debug, Default)]
pub struct Series {
    reports: Vec<Report>,
}

impl Series {
    /// Adds an iteration's report.
    pub fn push(&mut self, report: Report) {
        self.reports.push(report);
    }

    /// Iterations so far.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// No iteration yet.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// The interval of the mean messages/s at `level`.
    pub fn interval(&self, level: f64) -> Option<Interval> {
        let rates: Vec<f64> = self
            .reports
            .iter()
            .map(|r| r.rates.messages_per_sec)
            .collect();
        interval(&rates, level)
    }

    /// Whether `repeat`'s target is met now (never without a target).
    pub fn met(&self, repeat: &Repeat) -> bool {
        repeat.target.is_some_and(|t| {
            self.interval(t.level)
                .is_some_and(|i| i.half_width_pct <= t.width / 2.0)
        })
    }

    /// Whether to stop: MAX reached, an iteration failed (its errors stand), or MIN reached
    /// with the target met or none set.
    pub fn done(&self, repeat: &Repeat) -> bool {
        let n = self.len();
        let failed = self.reports.last().is_some_and(|r| r.verdict().is_err());
        n >= repeat.max
            || failed
            || (n >= repeat.min && (repeat.target.is_none() || self.met(repeat)))
    }

    /// One report for the whole series: the iterations combined, and what they found.
    pub fn report(self, repeat: &Repeat) -> Result<Report, String> {
        let level = repeat.target.map_or(DEFAULT_LEVEL, |t| t.level);
        let iterations = Iterations {
            repeat: *repeat,
            each: self.reports.iter().map(Iteration::from).collect(),
            interval: self.interval(level),
            met: repeat.target.map(|_| self.met(repeat)),
        };
        let mut report = Report::sequence(&self.reports)?;
        if self.reports.iter().any(|r| r.faults.is_some()) {
            // What the servers injected over every iteration, against every error.
            let injected = self
                .reports
                .iter()
                .filter_map(|r| r.faults.as_ref())
                .flat_map(|f| f.injected.iter().cloned())
                .collect();
            report.faults = Some(Reconciliation::new(injected, &report.reconciled_errors()));
        }
        if repeat.is_series() {
            report.iterations = Some(iterations);
        }
        Ok(report)
    }
}

/// Runs `cfg` as `repeat` asks, calling `on_second` for each measured second of each
/// iteration and `on_iteration` after each.
pub fn repeat(
    cfg: &BenchConfig,
    repeat: &Repeat,
    mut on_second: impl FnMut(&Second),
    mut on_iteration: impl FnMut(usize, &Report),
) -> Result<Report, BenchError> {
    let mut series = Series::default();
    while !series.done(repeat) {
        let report = run(cfg, &mut on_second)?;
        on_iteration(series.len() + 1, &report);
        series.push(report);
    }
    series.report(repeat).map_err(BenchError::Report)
}
