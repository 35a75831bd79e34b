//! What the iterations of a series found: each iteration's figures, and the confidence
//! interval of their mean messages/s.
//!
//! One run's messages/s varies between runs by more than servers often differ (on a shared
//! machine, 10–30%), so a single figure cannot say which of two servers is faster. Each
//! iteration is a whole run — connect, warm up, measure, close — and the figure of interest
//! is the mean messages/s over the iterations, with its confidence interval from Student's t
//! distribution: `mean ± t(level, n − 1) · s / √n`. With a target, iterations continue (up to
//! MAX) until the interval's half-width is within `WIDTH / 2` percent of the mean: `99,5`
//! asks for 99% confidence that the true mean is within ±2.5%.

use std::fmt;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::Report;
use crate::config::Repeat;
use crate::cpu::{Cost, CpuCosts};

/// The exit status of a run whose confidence target was not met within MAX iterations:
/// distinct from 1 (errors, or nothing measured) and 2 (bad settings), because the
/// measurements themselves are sound; they are only not precise enough.
pub const EXIT_NOT_CONFIDENT: u8 = 3;

/// The confidence level used to describe a series when no target was set.
pub const DEFAULT_LEVEL: f64 = 95.0;

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
        let cost = |pick: fn(&CpuCosts) -> &Option<Cost>| {
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
}
