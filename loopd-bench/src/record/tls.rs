//! What the workers count of TLS: handshakes by kind (full or resumed), each kind's latency,
//! what was negotiated, the alerts the servers sent, and what the handshake mode waited for.
//!
//! A handshake's latency runs from the moment TCP is established to the moment the client
//! can send application data: it excludes the TCP connect (its own histogram) and the first
//! reply (the round-trip latency).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::histogram::new_histogram;

/// Whether a handshake resumed a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    /// A full handshake: certificate, signature, key exchange.
    Full,
    /// A resumed one: a session ticket or cached session id accepted by the server.
    Resumed,
}

/// What a handshake settled.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Negotiated {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The IANA name, such as `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// The key-exchange group, such as `X25519`; none for a resumed TLS 1.2 session.
    pub group: Option<String>,
    /// The protocol ALPN chose, if any.
    pub alpn: Option<String>,
}

/// One worker's TLS counts.
#[derive(Clone, Debug)]
pub struct TlsTally {
    /// Full handshakes completed inside the window.
    pub full: u64,
    /// Resumed handshakes completed inside the window.
    pub resumed: u64,
    /// Full handshakes completed before or after it (warm-up, drain): not measured, but
    /// the server saw them, so they count when its own figures are compared.
    pub full_outside: u64,
    /// Resumed handshakes completed outside the window.
    pub resumed_outside: u64,
    /// Latency of the full handshakes inside the window.
    pub full_latency: Histogram<u64>,
    /// Latency of the resumed handshakes inside the window.
    pub resumed_latency: Histogram<u64>,
    /// Connections that offered a session to resume (whether the server took it or not).
    pub offered: u64,
    /// Handshakes by what they settled, all of them.
    pub negotiated: BTreeMap<Negotiated, u64>,
    /// Alerts the servers sent, by name.
    pub alerts: BTreeMap<String, u64>,
    /// Handshake mode: connections closed after waiting the connect timeout for the server's
    /// first word (bytes, a ticket or its close) after the handshake.
    pub waited_out: u64,
}

impl TlsTally {
    /// Nothing counted.
    pub fn new() -> TlsTally {
        TlsTally {
            full: 0,
            resumed: 0,
            full_outside: 0,
            resumed_outside: 0,
            full_latency: new_histogram(),
            resumed_latency: new_histogram(),
            offered: 0,
            negotiated: BTreeMap::new(),
            alerts: BTreeMap::new(),
            waited_out: 0,
        }
    }

    /// Counts a handshake of `kind` that took `nanos` and settled `negotiated`; inside the
    /// window (`measured`) or not.
    pub fn handshake(
        &mut self,
        kind: HandshakeKind,
        nanos: u64,
        negotiated: Negotiated,
        measured: bool,
    ) {
        *self.negotiated.entry(negotiated).or_default() += 1;
        match (kind, measured) {
            (HandshakeKind::Full, true) => {
                self.full += 1;
                self.full_latency.saturating_record(nanos);
            }
            (HandshakeKind::Resumed, true) => {
                self.resumed += 1;
                self.resumed_latency.saturating_record(nanos);
            }
            (HandshakeKind::Full, false) => self.full_outside += 1,
            (HandshakeKind::Resumed, false) => self.resumed_outside += 1,
        }
    }

    /// Every handshake counted, inside the window or not.
    pub fn total(&self) -> u64 {
        self.full + self.resumed + self.full_outside + self.resumed_outside
    }

    /// Adds another worker's counts.
    pub fn absorb(&mut self, o: &TlsTally) {
        self.full += o.full;
        self.resumed += o.resumed;
        self.full_outside += o.full_outside;
        self.resumed_outside += o.resumed_outside;
        self.full_latency
            .add(&o.full_latency)
            .expect("same histogram bounds");
        self.resumed_latency
            .add(&o.resumed_latency)
            .expect("same histogram bounds");
        self.offered += o.offered;
        for (k, n) in &o.negotiated {
            *self.negotiated.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &o.alerts {
            *self.alerts.entry(k.clone()).or_default() += n;
        }
        self.waited_out += o.waited_out;
    }
}

impl Default for TlsTally {
    fn default() -> TlsTally {
        TlsTally::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls13() -> Negotiated {
        Negotiated {
            version: "TLSv1.3".into(),
            cipher_suite: "TLS13_AES_256_GCM_SHA384".into(),
            group: Some("X25519".into()),
            alpn: None,
        }
    }

    /// Handshakes inside the window are timed by kind; those outside are only counted; what
    /// was negotiated is counted for all; tallies add.
    #[test]
    fn handshakes_by_kind_and_window() {
        let mut a = TlsTally::new();
        a.handshake(HandshakeKind::Full, 300_000, tls13(), true);
        a.handshake(HandshakeKind::Resumed, 100_000, tls13(), true);
        a.handshake(HandshakeKind::Resumed, 100_000, tls13(), false);
        let mut b = TlsTally::new();
        b.handshake(HandshakeKind::Full, 500_000, tls13(), true);
        b.alerts.insert("handshake_failure".into(), 2);
        a.absorb(&b);
        assert_eq!((a.full, a.resumed, a.resumed_outside), (2, 1, 1));
        assert_eq!(a.full_latency.len(), 2);
        assert_eq!(a.resumed_latency.len(), 1);
        assert_eq!(a.negotiated[&tls13()], 4);
        assert_eq!(a.total(), 4);
        assert_eq!(a.alerts["handshake_failure"], 2);
    }
}
