//! The TLS part of a report (`tls` in the JSON): handshakes by kind, their rates and
//! latencies, the resumed share against the share asked for, what was negotiated, the
//! alerts servers sent, and what the handshake mode waited for in vain.
//!
//! JSON names tools can rely on: `tls.handshakes.full`, `tls.handshakes.resumed`,
//! `tls.handshake_latency.full` / `.resumed` (each a latency with its histogram),
//! `tls.negotiated` (a list of `version`, `cipher_suite`, `group`, `alpn` and how many
//! handshakes settled on them), and `rates.handshakes_per_sec` beside the other rates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::latency::Latency;
use crate::record::histogram::new_histogram;
use crate::record::tls::{Negotiated, TlsTally};

/// Handshakes by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ByKind<T> {
    /// Full handshakes.
    pub full: T,
    /// Resumed handshakes.
    pub resumed: T,
}

/// One set of negotiated parameters and how many handshakes settled on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NegotiatedCount {
    /// What was settled.
    #[serde(flatten)]
    pub negotiated: Negotiated,
    /// Handshakes that settled on it (all of the run's, inside the window or not).
    pub handshakes: u64,
}

/// The TLS part of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsReport {
    /// Handshakes completed inside the window.
    pub handshakes: ByKind<u64>,
    /// Handshakes completed outside it (warm-up, drain): not measured, but the server saw
    /// them — add them when comparing with its counters.
    pub handshakes_outside_window: ByKind<u64>,
    /// Each kind per second of the window.
    pub handshakes_per_sec: ByKind<f64>,
    /// Each kind's latency, from TCP established to the session established.
    pub handshake_latency: ByKind<Option<Latency>>,
    /// The resumed share of the measured handshakes, percent; `None` without any.
    pub resumed_pct: Option<f64>,
    /// `--tls-resume`: the share asked for, percent.
    pub resume_asked_pct: f64,
    /// Connections that offered a session to resume (whether the server took it or not).
    pub offered: u64,
    /// What the handshakes settled.
    pub negotiated: Vec<NegotiatedCount>,
    /// Alerts the servers sent, by name.
    pub alerts_received: BTreeMap<String, u64>,
    /// Handshake mode: connections closed after waiting the connect timeout for the server's
    /// first word after the handshake (bytes, a ticket or its close).
    pub waited_out: u64,
}

impl TlsReport {
    /// From the tally of a run of `duration_secs`, asked to resume `resume_asked_pct`.
    pub fn new(t: &TlsTally, duration_secs: f64, resume_asked_pct: f64) -> TlsReport {
        let per_sec = |n: u64| {
            if duration_secs > 0.0 {
                n as f64 / duration_secs
            } else {
                0.0
            }
        };
        let measured = t.full + t.resumed;
        TlsReport {
            handshakes: ByKind {
                full: t.full,
                resumed: t.resumed,
            },
            handshakes_outside_window: ByKind {
                full: t.full_outside,
                resumed: t.resumed_outside,
            },
            handshakes_per_sec: ByKind {
                full: per_sec(t.full),
                resumed: per_sec(t.resumed),
            },
            handshake_latency: ByKind {
                full: Latency::from_histogram(&t.full_latency),
                resumed: Latency::from_histogram(&t.resumed_latency),
            },
            resumed_pct: (measured > 0).then(|| t.resumed as f64 * 100.0 / measured as f64),
            resume_asked_pct,
            offered: t.offered,
            negotiated: t
                .negotiated
                .iter()
                .map(|(n, &k)| NegotiatedCount {
                    negotiated: n.clone(),
                    handshakes: k,
                })
                .collect(),
            alerts_received: t.alerts.clone(),
            waited_out: t.waited_out,
        }
    }

    /// All handshakes per second.
    pub fn per_sec(&self) -> f64 {
        self.handshakes_per_sec.full + self.handshakes_per_sec.resumed
    }
}

impl TryFrom<&TlsReport> for TlsTally {
    type Error = String;

    /// The tally back from a report, to merge it with others.
    fn try_from(r: &TlsReport) -> Result<TlsTally, String> {
        let histogram = |l: &Option<Latency>| match l {
            Some(l) => l.histogram(),
            None => Ok(new_histogram()),
        };
        Ok(TlsTally {
            full: r.handshakes.full,
            resumed: r.handshakes.resumed,
            full_outside: r.handshakes_outside_window.full,
            resumed_outside: r.handshakes_outside_window.resumed,
            full_latency: histogram(&r.handshake_latency.full)?,
            resumed_latency: histogram(&r.handshake_latency.resumed)?,
            offered: r.offered,
            negotiated: r
                .negotiated
                .iter()
                .map(|n| (n.negotiated.clone(), n.handshakes))
                .collect(),
            alerts: r.alerts_received.clone(),
            waited_out: r.waited_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tls::HandshakeKind;

    /// A report and the tally made back from it are the same counts and histograms, so
    /// `merge` adds TLS parts exactly.
    #[test]
    fn round_trip_through_the_report() {
        let mut t = TlsTally::new();
        let n = Negotiated {
            version: "TLSv1.3".into(),
            cipher_suite: "TLS13_AES_128_GCM_SHA256".into(),
            group: Some("X25519".into()),
            alpn: Some("h2".into()),
        };
        for i in 0..10 {
            let kind = if i % 2 == 0 {
                HandshakeKind::Full
            } else {
                HandshakeKind::Resumed
            };
            t.handshake(kind, 100_000 + i * 1000, n.clone(), i < 8);
        }
        t.alerts.insert("bad_certificate".into(), 1);
        let r = TlsReport::new(&t, 2.0, 50.0);
        assert_eq!((r.handshakes.full, r.handshakes.resumed), (4, 4));
        assert_eq!(r.handshakes_outside_window.full, 1);
        assert_eq!(r.resumed_pct, Some(50.0));
        assert_eq!(r.per_sec(), 4.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["negotiated"][0]["group"], "X25519");
        assert_eq!(json["handshakes"]["full"], 4);
        let back = TlsTally::try_from(&r).unwrap();
        assert_eq!(back.full_latency, t.full_latency);
        assert_eq!(back.negotiated, t.negotiated);
        assert_eq!(TlsReport::new(&back, 2.0, 50.0), r);
    }
}
