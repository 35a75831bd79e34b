//! The result of `loopd-bench compare`: one report per target, the table of their figures
//! with ratios to the first, and whether the differences exceed the noise.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::iterations::DEFAULT_LEVEL;
use super::latency::human_us;
use super::Report;
use crate::cpu::{Cost, CpuCosts};

/// One target's result: its name and the report of all its iterations together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    /// The target's name.
    pub name: String,
    /// All its iterations; `iterations` holds each one and the interval of the mean.
    pub report: Report,
}

/// The comparison: one entry per target, the first being the reference for the ratios.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// In the order given.
    pub targets: Vec<Compared>,
}

impl Comparison {
    /// The worst verdict of the targets: an error if any run failed; `Ok(false)` if a
    /// confidence target was not met; `Ok(true)` otherwise.
    pub fn verdict(&self) -> Result<bool, String> {
        for t in &self.targets {
            t.report.verdict().map_err(|e| format!("{}: {e}", t.name))?;
        }
        Ok(self
            .targets
            .iter()
            .all(|t| t.report.iterations.as_ref().and_then(|i| i.met) != Some(false)))
    }
}

/// The figures of one target, in table order.
struct Figures {
    rate: f64,
    interval_pct: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    client: Option<f64>,
    server: Option<f64>,
}

impl Figures {
    fn of(r: &Report) -> Figures {
        let interval = r.iterations.as_ref().and_then(|i| i.interval);
        let cost = |pick: fn(&CpuCosts) -> &Option<Cost>| {
            r.cpu
                .as_ref()
                .and_then(|c| pick(c).as_ref()?.us_per_message)
        };
        Figures {
            rate: interval.map_or(r.rates.messages_per_sec, |i| i.mean),
            interval_pct: interval.map(|i| i.half_width_pct),
            p50: r.latency.as_ref().map(|l| l.p50_us),
            p99: r.latency.as_ref().map(|l| l.p99_us),
            client: cost(|c| &c.client),
            server: cost(|c| &c.server),
        }
    }
}

impl fmt::Display for Comparison {
    /// A markdown table: each figure, and its ratio to the first target's.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = self
            .targets
            .first()
            .and_then(|t| t.report.iterations.as_ref())
            .and_then(|i| i.interval)
            .map_or(DEFAULT_LEVEL, |i| i.level);
        writeln!(
            f,
            "| target | iterations | msg/s (mean ± {level}% interval) | ratio | p50 | ratio | p99 | ratio | client CPU µs/msg | ratio | server CPU µs/msg | ratio |"
        )?;
        writeln!(
            f,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        let figures: Vec<Figures> = self
            .targets
            .iter()
            .map(|t| Figures::of(&t.report))
            .collect();
        let first = &figures[0];
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "—".into(),
        };
        let us = |v: Option<f64>| v.map_or("—".into(), human_us);
        let cpu = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2}"));
        for (t, x) in self.targets.iter().zip(&figures) {
            let n = t.report.iterations.as_ref().map_or(1, |i| i.each.len());
            let rate = match x.interval_pct {
                Some(pct) => format!("{:.0} ± {pct:.1}%", x.rate),
                None => format!("{:.0}", x.rate),
            };
            writeln!(
                f,
                "| {} | {n} | {rate} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                ratio(Some(x.rate), Some(first.rate)),
                us(x.p50),
                ratio(x.p50, first.p50),
                us(x.p99),
                ratio(x.p99, first.p99),
                cpu(x.client),
                ratio(x.client, first.client),
                cpu(x.server),
                ratio(x.server, first.server),
            )?;
        }
        // Where the intervals overlap, the difference in rate is within the noise.
        for (t, x) in self.targets.iter().zip(&figures).skip(1) {
            if let (Some(a), Some(b)) = (first.interval_pct, x.interval_pct) {
                let (lo_a, hi_a) = (
                    first.rate * (1.0 - a / 100.0),
                    first.rate * (1.0 + a / 100.0),
                );
                let (lo_b, hi_b) = (x.rate * (1.0 - b / 100.0), x.rate * (1.0 + b / 100.0));
                let overlap = lo_a <= hi_b && lo_b <= hi_a;
                writeln!(
                    f,
                    "{} vs {}: msg/s {} at {level}% confidence",
                    t.name,
                    self.targets[0].name,
                    if overlap {
                        "intervals overlap: the difference is within the noise"
                    } else {
                        "intervals do not overlap: the difference is real"
                    }
                )?;
            }
        }
        Ok(())
    }
}
