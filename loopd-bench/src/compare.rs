//! `loopd-bench compare A B …`: the same load against several servers, in alternating
//! iterations, with the figures side by side and as ratios to the first.
//!
//! "Is A faster than B" is the question most load tests are run to answer, and one run of
//! each cannot answer it: the machine drifts between the runs, and one run's figure varies
//! by more than servers differ. So the targets take turns — iteration 1 of A, of B, …, then
//! iteration 2 of each — until every target's series is done ([`Series::done`]: MIN reached
//! with the confidence target met, or MAX), and each figure comes with its interval. Drift
//! then hits every target alike, and a difference smaller than the intervals is noise. The
//! table is the report's ([`report::comparison`](crate::report::comparison)).

use std::net::SocketAddr;

use crate::config::{BenchConfig, Repeat};
use crate::cpu::ServerCpu;
use crate::net::resolve;
use crate::record::Second;
use crate::repeat::Series;
pub use crate::report::comparison::{Compared, Comparison};
use crate::report::Report;
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
        return Err(BenchError::TooFewTargets);
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
        .map_err(BenchError::Report)?;
    Ok(Comparison { targets })
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
