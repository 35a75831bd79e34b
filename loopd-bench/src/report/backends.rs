//! Results per backend (`--per-backend`): what each server behind a load balancer served,
//! and how evenly the balancer spread the connections.
//!
//! Each connection asked its server `SERVER` before its first message and counted what it
//! measured under the answer's server id. The spread is judged by Pearson's chi-square
//! statistic against an even split: `Σ (observed − expected)² / expected` over the backends,
//! with `backends − 1` degrees of freedom. An exact round robin scores 0; a random choice per
//! connection scores about the degrees of freedom on average (that is the statistic's mean),
//! and a score many times the degrees of freedom means the balancer favours some backends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::latency::{add_serialized, Latency};
use super::Rates;
use crate::record::histogram::new_histogram;
use crate::record::BackendTally;

/// One backend's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// The backend's `--server-id`.
    pub server_id: String,
    /// Connections it answered.
    pub connections: u64,
    /// Measured completed messages.
    pub messages: u64,
    /// Measured bytes written.
    pub bytes_sent: u64,
    /// Measured bytes read.
    pub bytes_received: u64,
    /// Rates over the measured duration.
    pub rates: Rates,
    /// Round-trip latency.
    pub latency: Option<Latency>,
    /// Errors on its connections.
    pub errors: u64,
}

/// How evenly connections spread over the backends.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Backends that answered.
    pub backends: usize,
    /// The fewest connections one backend got.
    pub min_connections: u64,
    /// The most connections one backend got.
    pub max_connections: u64,
    /// Pearson's chi-square statistic against an even split.
    pub chi_square: f64,
    /// Its degrees of freedom: backends − 1.
    pub degrees_of_freedom: usize,
}

/// A backend's report from its tally, over `duration_secs`.
fn report(t: &BackendTally, duration_secs: f64) -> BackendReport {
    BackendReport {
        server_id: t.server_id.clone(),
        connections: t.connections,
        messages: t.messages,
        bytes_sent: t.bytes_sent,
        bytes_received: t.bytes_received,
        rates: Rates::over(duration_secs, t.messages, t.bytes_sent, t.bytes_received),
        latency: Latency::from_histogram(&t.latency),
        errors: t.errors,
    }
}

impl TryFrom<&BackendReport> for BackendTally {
    type Error = String;

    /// The tally a report was made from (a merge starts from reports).
    fn try_from(r: &BackendReport) -> Result<BackendTally, String> {
        let mut latency = new_histogram();
        add_serialized(&mut latency, &r.latency)?;
        Ok(BackendTally {
            server_id: r.server_id.clone(),
            connections: r.connections,
            messages: r.messages,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            latency,
            errors: r.errors,
        })
    }
}

/// The reports of `parts`, combined by server id (so the same backend seen by several
/// workers, or by several merged runs, is one entry), sorted by server id; and the spread.
pub fn summarise(
    parts: impl IntoIterator<Item = BackendTally>,
    duration_secs: f64,
) -> (Vec<BackendReport>, Option<Spread>) {
    let mut by_id: BTreeMap<String, BackendTally> = BTreeMap::new();
    for p in parts {
        match by_id.get_mut(&p.server_id) {
            Some(existing) => existing.absorb(&p),
            None => {
                by_id.insert(p.server_id.clone(), p);
            }
        }
    }
    let reports: Vec<BackendReport> = by_id.values().map(|t| report(t, duration_secs)).collect();
    let counts: Vec<u64> = reports.iter().map(|r| r.connections).collect();
    (reports, spread(&counts))
}

/// The spread of `connections` (one count per backend); `None` without backends.
pub fn spread(connections: &[u64]) -> Option<Spread> {
    let k = connections.len();
    if k == 0 {
        return None;
    }
    let total: u64 = connections.iter().sum();
    let expected = total as f64 / k as f64;
    let chi_square = if expected > 0.0 {
        connections
            .iter()
            .map(|&o| (o as f64 - expected).powi(2) / expected)
            .sum()
    } else {
        0.0
    };
    Some(Spread {
        backends: k,
        min_connections: connections.iter().copied().min().unwrap_or(0),
        max_connections: connections.iter().copied().max().unwrap_or(0),
        chi_square,
        degrees_of_freedom: k - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An even split scores 0; an uneven one scores Pearson's statistic.
    #[test]
    fn chi_square() {
        let even = spread(&[50, 50]).unwrap();
        assert_eq!((even.min_connections, even.max_connections), (50, 50));
        assert_eq!(even.chi_square, 0.0);
        assert_eq!(even.degrees_of_freedom, 1);
        // 70/30 of 100: (20² + 20²) / 50 = 16.
        let skewed = spread(&[70, 30]).unwrap();
        assert!((skewed.chi_square - 16.0).abs() < 1e-9);
        let one = spread(&[100]).unwrap();
        assert_eq!((one.chi_square, one.degrees_of_freedom), (0.0, 0));
        assert!(spread(&[]).is_none());
    }

    /// The same backend from two sources is one entry with the counts and histograms added.
    #[test]
    fn same_backend_combines() {
        let part = |id: &str, connections: u64, latency_ns: u64| {
            let mut latency = new_histogram();
            latency.record(latency_ns).unwrap();
            BackendTally {
                server_id: id.into(),
                connections,
                messages: 10,
                bytes_sent: 100,
                bytes_received: 100,
                latency,
                errors: 0,
            }
        };
        let (reports, spread) = summarise(
            [
                part("b", 20, 1_000),
                part("a", 30, 2_000),
                part("b", 30, 3_000),
            ],
            2.0,
        );
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].server_id, "a");
        assert_eq!((reports[1].connections, reports[1].messages), (50, 20));
        assert_eq!(reports[1].latency.as_ref().unwrap().count, 2);
        assert_eq!(reports[1].rates.messages_per_sec, 10.0);
        let spread = spread.unwrap();
        assert_eq!((spread.min_connections, spread.max_connections), (30, 50));
    }
}
