//! `loopd-bench compare A B …`: the same load against several servers, in alternating
//! iterations, with the figures side by side and as ratios to the first.
//!
//! "Is A faster than B" is the question most load tests are run to answer, and one run of
//! each cannot answer it: the machine drifts between the runs, and one run's figure varies
//! by more than servers differ. So the targets take turns — iteration 1 of A, of B, …, then
//! iteration 2 of each — until every target's series is done ([`Series::done`]: MIN reached
//! with the confidence target met, or MAX), and each figure comes with its interval. Drift
//! then hits every target alike, and a difference smaller than the intervals is noise.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{resolve, BenchConfig};
use crate::cpu::ServerCpu;
use crate::repeat::{Repeat, Series, DEFAULT_LEVEL};
use crate::report::latency::human_us;
use crate::report::{Report, Second};
use crate::run::{run, BenchError};

/// One server to compare: `[NAME=]HOST:PORT[@CPU]`, where CPU is where its CPU time is read
/// (`http://…/metrics`, or `pid:N` for a process on this machine).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its name in the table.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Where its CPU time comes from, if anywhere.
    pub cpu: Option<ServerCpu>,
}

impl Target {
    /// Parses `[NAME=]HOST:PORT[@CPU]`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let (name, rest) = match s.split_once('=') {
            Some((name, rest)) if !name.contains(':') => (Some(name), rest),
            _ => (None, s),
        };
        let (addr, cpu) = match rest.split_once('@') {
            Some((addr, cpu)) => (addr, Some(ServerCpu::parse(cpu)?)),
            None => (rest, None),
        };
        let resolved = resolve(addr).map_err(|e| format!("target {e}"))?;
        Ok(Target {
            name: name.unwrap_or(addr).to_string(),
            addr: resolved,
            cpu,
        })
    }
}

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

/// Runs `base` against every target in alternating iterations, as `repeat` asks of each.
/// `on_iteration` hears of each iteration as it ends (target index, iteration, report).
pub fn compare(
    base: &BenchConfig,
    targets: &[Target],
    repeat: &Repeat,
    mut on_second: impl FnMut(&Second),
    mut on_iteration: impl FnMut(usize, usize, &Report),
) -> Result<Comparison, BenchError> {
    if targets.len() < 2 {
        return Err(BenchError::Invalid(
            "compare needs at least two targets".into(),
        ));
    }
    let configs: Vec<BenchConfig> = targets
        .iter()
        .map(|t| {
            let mut cfg = base.clone();
            cfg.target = t.addr;
            cfg.cpu.server = t.cpu.clone();
            cfg
        })
        .collect();
    let mut series: Vec<Series> = targets.iter().map(|_| Series::default()).collect();
    while series.iter().any(|s| !s.done(repeat)) {
        for (i, cfg) in configs.iter().enumerate() {
            if series[i].done(repeat) {
                continue;
            }
            let report = run(cfg, &mut on_second)?;
            on_iteration(i, series[i].len() + 1, &report);
            series[i].push(report);
        }
    }
    let targets = targets
        .iter()
        .zip(series)
        .map(|(t, s)| {
            Ok(Compared {
                name: t.name.clone(),
                report: s.report(repeat)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(BenchError::Invalid)?;
    Ok(Comparison { targets })
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
        let cost = |pick: fn(&crate::cpu::CpuCosts) -> &Option<crate::cpu::Cost>| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("loopd=127.0.0.1:7007@http://127.0.0.1:9107/metrics").unwrap();
        assert_eq!(t.name, "loopd");
        assert_eq!(t.addr, "127.0.0.1:7007".parse().unwrap());
        assert!(matches!(t.cpu, Some(ServerCpu::Metrics(_))));
        let t = Target::parse("127.0.0.1:7008@pid:42").unwrap();
        assert_eq!(t.name, "127.0.0.1:7008");
        assert_eq!(t.cpu, Some(ServerCpu::Pid(42)));
        let t = Target::parse("[::1]:7").unwrap();
        assert_eq!(t.name, "[::1]:7");
        assert!(Target::parse("nowhere").is_err());
    }
}
