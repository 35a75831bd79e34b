//! Repetitions until the result is known well enough: `--iterations MIN[,MAX]` and
//! `--confidence LEVEL,WIDTH`, after netperf's `-i` and `-I`.
//!
//! One run's messages/s varies between runs by more than servers often differ (on a shared
//! machine, 10–30%), so a single figure cannot say which of two servers is faster. Each
//! iteration is a whole run — connect, warm up, measure, close — and the figure of interest
//! is the mean messages/s over the iterations, with its confidence interval from Student's t
//! distribution: `mean ± t(level, n − 1) · s / √n`. With a target, iterations continue (up to
//! MAX) until the interval's half-width is within `WIDTH / 2` percent of the mean: `99,5`
//! asks for 99% confidence that the true mean is within ±2.5%.
//!
//! The [`Series`] of one target is kept apart from the running of it, so `compare` can
//! alternate targets and ask each series whether it is done.

use std::fmt;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::config::BenchConfig;
use crate::report::{Report, Second};
use crate::run::{run, BenchError};

/// The exit status of a run whose confidence target was not met within MAX iterations:
/// distinct from 1 (errors, or nothing measured) and 2 (bad settings), because the
/// measurements themselves are sound; they are only not precise enough.
pub const EXIT_NOT_CONFIDENT: u8 = 3;

/// The confidence level used to describe a series when no target was set.
pub const DEFAULT_LEVEL: f64 = 95.0;

/// How many iterations, and what precision to stop at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    /// Iterations at least.
    pub min: usize,
    /// Iterations at most.
    pub max: usize,
    /// The precision that ends the series early, if any.
    pub target: Option<Confidence>,
}

impl Default for Repeat {
    fn default() -> Repeat {
        Repeat {
            min: 1,
            max: 1,
            target: None,
        }
    }
}

impl Repeat {
    /// From `--iterations MIN[,MAX]` (MAX defaults to MIN) and `--confidence`.
    pub fn new(iterations: &str, target: Option<Confidence>) -> Result<Repeat, String> {
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("--iterations '{iterations}' is not MIN or MIN,MAX"))
        };
        let (min, max) = match iterations.split_once(',') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(iterations)?;
                (n, n)
            }
        };
        if min == 0 || max < min {
            return Err(format!("--iterations {iterations}: need 1 <= MIN <= MAX"));
        }
        if target.is_some() && max < 2 {
            return Err(
                "--confidence needs at least two iterations to estimate anything: \
                 --iterations MIN,MAX with MAX >= 2"
                    .into(),
            );
        }
        Ok(Repeat { min, max, target })
    }

    /// More than one iteration, or a target: the report describes the series.
    pub fn is_series(&self) -> bool {
        self.max > 1 || self.target.is_some()
    }
}

/// `--confidence LEVEL,WIDTH`: LEVEL percent confidence that the true mean lies within an
/// interval WIDTH percent of the mean wide.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// Percent, such as 95 or 99.
    pub level: f64,
    /// The interval's whole width, in percent of the mean (±WIDTH/2).
    pub width: f64,
}

impl Confidence {
    /// Parses `LEVEL,WIDTH`.
    pub fn parse(s: &str) -> Result<Confidence, String> {
        let bad = || format!("'{s}' is not LEVEL,WIDTH in percent, like 99,5");
        let (l, w) = s.split_once(',').ok_or_else(bad)?;
        let level: f64 = l.trim().parse().map_err(|_| bad())?;
        let width: f64 = w.trim().parse().map_err(|_| bad())?;
        if !(level > 0.0 && level < 100.0 && width > 0.0 && width.is_finite()) {
            return Err(format!(
                "--confidence {s}: the level is between 0 and 100, the width above 0"
            ));
        }
        Ok(Confidence { level, width })
    }
}

/// A confidence interval of a mean.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The confidence level, percent.
    pub level: f64,
    /// The mean.
    pub mean: f64,
    /// Half the interval's width, in the mean's unit.
    pub half_width: f64,
    /// Half the interval's width, in percent of the mean.
    pub half_width_pct: f64,
}

/// The interval of the mean of `samples` at `level` percent; `None` for fewer than two
/// samples (one sample says nothing about the spread).
pub fn interval(samples: &[f64], level: f64) -> Option<Interval> {
    let n = samples.len();
    if n < 2 {
        return None;
    }
    let mean = samples.iter().sum::<f64>() / n as f64;
    let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .ok()?
        .inverse_cdf(0.5 + level / 200.0);
    let half_width = t * variance.sqrt() / (n as f64).sqrt();
    let half_width_pct = if mean > 0.0 {
        half_width * 100.0 / mean
    } else {
        f64::INFINITY
    };
    Some(Interval {
        level,
        mean,
        half_width,
        half_width_pct,
    })
}

/// One iteration's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Iteration {
    /// Completed messages per second.
    pub messages_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// The client's CPU per message, µs.
    pub client_us_per_message: Option<f64>,
    /// The server's CPU per message, µs (`--server-metrics`).
    pub server_us_per_message: Option<f64>,
}

impl From<&Report> for Iteration {
    fn from(r: &Report) -> Iteration {
        let cost = |pick: fn(&crate::cpu::CpuCosts) -> &Option<crate::cpu::Cost>| {
            r.cpu
                .as_ref()
                .and_then(|c| pick(c).as_ref()?.us_per_message)
        };
        Iteration {
            messages_per_sec: r.rates.messages_per_sec,
            p50_us: r.latency.as_ref().map(|l| l.p50_us),
            p99_us: r.latency.as_ref().map(|l| l.p99_us),
            client_us_per_message: cost(|c| &c.client),
            server_us_per_message: cost(|c| &c.server),
        }
    }
}

/// What the iterations of a series found, as the report carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Iterations {
    /// The repetition asked for.
    pub repeat: Repeat,
    /// Each iteration, in order.
    pub each: Vec<Iteration>,
    /// The interval of the mean messages/s (at the target's level, or 95%).
    pub interval: Option<Interval>,
    /// Whether the target was met; `None` without a target.
    pub met: Option<bool>,
}

impl fmt::Display for Iterations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rates: Vec<String> = self
            .each
            .iter()
            .map(|i| format!("{:.0}", i.messages_per_sec))
            .collect();
        writeln!(
            f,
            "  {:<12} {} (min {}, max {}): {} msg/s",
            "iterations",
            self.each.len(),
            self.repeat.min,
            self.repeat.max,
            rates.join(", ")
        )?;
        if let Some(i) = &self.interval {
            write!(
                f,
                "  {:<12} {:.0} msg/s ± {:.1}% ({:.0} to {:.0}, {}% confidence)",
                "mean",
                i.mean,
                i.half_width_pct,
                i.mean - i.half_width,
                i.mean + i.half_width,
                i.level
            )?;
            match (self.repeat.target, self.met) {
                (Some(t), Some(true)) => writeln!(f, "; target ±{}%: met", t.width / 2.0)?,
                (Some(t), _) => writeln!(
                    f,
                    "\n  warning: the target of ±{}% at {}% confidence was not met in {} \
                     iterations; the figures vary more than that (exit status {EXIT_NOT_CONFIDENT})",
                    t.width / 2.0,
                    t.level,
                    self.each.len()
                )?,
                (None, _) => writeln!(f)?,
            }
        }
        Ok(())
    }
}

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
    series.report(repeat).map_err(BenchError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Student's t at n − 1 degrees of freedom: for 5 samples, 99% → t = 4.604.
    #[test]
    fn interval_uses_students_t() {
        let samples = [98.0, 99.0, 100.0, 101.0, 102.0];
        let i = interval(&samples, 99.0).unwrap();
        assert_eq!(i.mean, 100.0);
        // s = √2.5; half-width = 4.604 · √2.5 / √5 = 3.2556.
        assert!((i.half_width - 3.2556).abs() < 1e-3, "{i:?}");
        assert!((i.half_width_pct - 3.2556).abs() < 1e-3);
        assert!(interval(&[5.0], 95.0).is_none());
        assert_eq!(interval(&[7.0, 7.0, 7.0], 95.0).unwrap().half_width, 0.0);
    }

    #[test]
    fn parsing() {
        assert_eq!(
            Repeat::new("3,10", None).unwrap(),
            Repeat {
                min: 3,
                max: 10,
                target: None
            }
        );
        assert_eq!(Repeat::new("4", None).unwrap().max, 4);
        assert!(Repeat::new("5,3", None).is_err());
        assert!(Repeat::new("0", None).is_err());
        let c = Confidence::parse("99,5").unwrap();
        assert_eq!((c.level, c.width), (99.0, 5.0));
        assert!(Confidence::parse("100,5").is_err());
        assert!(Confidence::parse("99").is_err());
        assert!(
            Repeat::new("1", Some(c)).is_err(),
            "one iteration cannot be confident"
        );
    }
}
