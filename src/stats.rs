//! The loop's counters, kept in one place.
//!
//! Each loop keeps one [`Stats`] per endpoint. Only the loop thread writes; anyone holding the
//! `Arc` (the admin endpoint's `/metrics`, the exit line, SIGHUP's line, tests) reads a
//! [`Snapshot`]. Relaxed atomics are enough:
//! every counter is independent, and a reader only needs each value to be one the loop wrote.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Graceful, after the peer's FIN: the normal end.
    Peer,
    /// Graceful, after our FIN (service finished or server draining) and the peer's FIN.
    Server,
    /// The peer reset the connection (ECONNRESET, EPIPE).
    Reset,
    /// Any other socket error.
    Error,
    /// No traffic for the idle timeout; closed gracefully.
    Idle,
    /// Output pending without progress for the write-stall timeout; aborted with RST.
    WriteStall,
    /// The peer did not finish within the linger timeout after our FIN.
    LingerTimeout,
    /// The service broke its contract (kept too much input unconsumed).
    Protocol,
    /// A partial request was not completed within the request timeout; aborted with RST (no
    /// reply is owed, so no lingering holds the slot).
    RequestTimeout,
    /// Still open at the end of the drain timeout on shutdown; aborted.
    Forced,
    /// Ended by an injected fault (`--fault`): reset, or closed before or instead of a reply.
    Fault,
    /// Refused before its service existed: a PROXY protocol header that was missing,
    /// malformed, too long or too slow, or a source not allowed to send one.
    Proxy,
    /// A TLS handshake that did not complete: refused by either side, not TLS at all, cut
    /// short by the peer, or too slow ([`HandshakeFailure`] says which).
    Handshake,
    /// The TLS layer refused the peer's records after the handshake (a record that does not
    /// decrypt, an unexpected message, an alert): the session cannot go on.
    Tls,
    /// The peer ended a TLS session with a TCP FIN but no `close_notify`: what it sent may
    /// have been cut short, so this is not counted as a clean close.
    Truncated,
}

impl CloseReason {
    fn counter(self, stats: &Stats) -> &AtomicU64 {
        match self {
            CloseReason::Peer => &stats.closed_peer,
            CloseReason::Server => &stats.closed_server,
            CloseReason::Reset => &stats.closed_reset,
            CloseReason::Error => &stats.closed_error,
            CloseReason::Idle => &stats.closed_idle,
            CloseReason::WriteStall => &stats.closed_write_stall,
            CloseReason::LingerTimeout => &stats.closed_linger_timeout,
            CloseReason::Protocol => &stats.closed_protocol,
            CloseReason::RequestTimeout => &stats.closed_request_timeout,
            CloseReason::Forced => &stats.closed_forced,
            CloseReason::Proxy => &stats.closed_proxy,
            CloseReason::Handshake => &stats.closed_handshake,
            CloseReason::Tls => &stats.closed_tls,
            CloseReason::Truncated => &stats.closed_truncated,
            CloseReason::Fault => &stats.closed_fault,
        }
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters of one loop. See the [module documentation](self).
        #[derive(Debug, Default)]
        pub struct Stats {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
            /// The TLS handshakes and session ends of a `,tls` listener.
            pub(crate) tls: TlsStats,
        }

        /// A copy of every counter at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )*
            /// TLS handshakes and session ends (`,tls` listeners only; not in the one-line
            /// form).
            pub tls: TlsSnapshot,
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Relaxed), )* tls: self.tls.snapshot() }
            }
        }

        impl Snapshot {
            fn add_counts(&mut self, o: &Snapshot) {
                $( self.$name += o.$name; )*
                self.tls.add(&o.tls);
            }

            /// Every counter by name, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }

        impl fmt::Display for Snapshot {
            /// One line of `key=value` pairs, for logs and line protocols.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut sep = "";
                $( write!(f, "{sep}{}={}", stringify!($name), self.$name)?; sep = " "; )*
                Ok(())
            }
        }
    };
}

counters! {
    /// Connections accepted.
    accepted,
    /// Connections open now.
    active,
    /// Closed after the peer's FIN.
    closed_peer,
    /// Closed after our FIN.
    closed_server,
    /// Closed by a reset from the peer.
    closed_reset,
    /// Closed by another socket error.
    closed_error,
    /// Closed by the idle timeout.
    closed_idle,
    /// Aborted by the write-stall timeout.
    closed_write_stall,
    /// Closed when lingering ran out.
    closed_linger_timeout,
    /// Closed for a service protocol violation.
    closed_protocol,
    /// Closed because a partial request outlived the request timeout (reset, or answered
    /// and closed gracefully, as HTTP answers 408).
    closed_request_timeout,
    /// Aborted at the drain deadline.
    closed_forced,
    /// Refused for its PROXY protocol header (or for sending from an untrusted source).
    closed_proxy,
    /// Closed because its TLS handshake did not complete.
    closed_handshake,
    /// Closed because the TLS layer refused the peer's records after the handshake.
    closed_tls,
    /// Ended by the peer's FIN without a TLS `close_notify`.
    closed_truncated,
    /// Ended by an injected fault (`--fault`).
    closed_fault,
    /// Bytes read and handed to services (TCP and UDP).
    bytes_in,
    /// Bytes written, accepted by the kernel (TCP and UDP).
    bytes_out,
    /// Bytes read and dropped while closing or lingering.
    bytes_discarded,
    /// Times a connection stopped reading because its output reached the high watermark.
    backpressure_pauses,
    /// The largest pending output seen on any connection, in bytes.
    peak_pending_output,
    /// Times accepting was paused because descriptors or memory ran out.
    accept_pauses,
    /// Times accepting stopped at the connection limit.
    accept_limit_stops,
    /// UDP datagrams received.
    datagrams_in,
    /// UDP datagrams sent.
    datagrams_out,
    /// UDP replies dropped because the reply queue was full (or the send failed).
    datagrams_dropped,
    /// UDP datagrams refused for a source port below 1024 (a service's: a possible loop).
    datagrams_refused_low_port,
    /// UDP datagrams refused for a source port of one of this server's UDP services (a loop).
    datagrams_refused_own_port,
    /// UDP datagrams not answered because their source had its share (the rate limit).
    datagrams_rate_limited,
    /// PROXY protocol headers that named a client.
    proxy_proxied,
    /// PROXY protocol headers for the proxy's own connections (v2 `LOCAL`, health checks) or
    /// without a client address (`UNKNOWN`, `UNSPEC`).
    proxy_local,
    /// Connections to a PROXY listener from a source not in `--proxy-from`.
    proxy_untrusted,
    /// PROXY protocol headers that were not valid.
    proxy_malformed,
    /// PROXY protocol headers longer than the limit.
    proxy_too_long,
    /// PROXY protocol headers not complete within the header timeout.
    proxy_timeout,
    /// Connections closed by the peer before their PROXY protocol header was complete.
    proxy_truncated,
}

/// How a TLS handshake ended without completing, counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// We refused, with an alert: no common version, cipher suite, group or ALPN protocol; a
    /// bad or missing client certificate; a name no certificate covers under strict SNI.
    AlertSent,
    /// The peer refused, with an alert (it does not trust our certificate, for one).
    AlertReceived,
    /// The first bytes were not TLS: a plaintext HTTP request, or a PROXY header at a
    /// listener without `,proxy`.
    NotTls,
    /// The peer closed or reset first: a plain TCP health check, a client that gave up.
    Closed,
    /// Not completed within the handshake timeout.
    Timeout,
}

impl HandshakeFailure {
    /// Every kind, in the order the metrics list them.
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::AlertSent,
        HandshakeFailure::AlertReceived,
        HandshakeFailure::NotTls,
        HandshakeFailure::Closed,
        HandshakeFailure::Timeout,
    ];

    /// The metrics label: `alert_sent`, `alert_received`, `not_tls`, `closed`, `timeout`.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::AlertSent => "alert_sent",
            HandshakeFailure::AlertReceived => "alert_received",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Timeout => "timeout",
        }
    }
}

/// Upper bounds of the handshake-duration histogram's buckets, in microseconds: from a
/// quarter of a millisecond (a resumed handshake over loopback) to the default handshake
/// timeout, roughly 1-2.5-5 per decade as Prometheus's client libraries space them.
pub const HANDSHAKE_BUCKETS_US: [u64; 15] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Slots of the histogram: one per bucket, and one for longer.
const SLOTS: usize = HANDSHAKE_BUCKETS_US.len() + 1;

/// A `,tls` listener's counters: handshakes by outcome, completed ones by version and kind
/// with their durations, and how peers ended their sessions. Written by the loop only.
#[derive(Debug, Default)]
pub struct TlsStats {
    completed: AtomicU64,
    failed: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Completed handshakes by version (1.2, 1.3) and kind (full, resumed).
    kinds: [[AtomicU64; 2]; 2],
    /// Completed handshakes by duration (not cumulative: the exposition sums them).
    durations: [AtomicU64; SLOTS],
    duration_us: AtomicU64,
    close_notify: AtomicU64,
    truncated: AtomicU64,
}

/// A copy of a listener's TLS counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsSnapshot {
    /// Handshakes completed.
    pub completed: u64,
    /// Handshakes failed, by [`HandshakeFailure::ALL`]'s order.
    pub failed: [u64; HandshakeFailure::ALL.len()],
    /// Completed handshakes: `[TLS 1.2, TLS 1.3]` × `[full, resumed]`.
    pub kinds: [[u64; 2]; 2],
    /// Completed handshakes per bucket of [`HANDSHAKE_BUCKETS_US`] (the last: longer).
    pub durations: [u64; SLOTS],
    /// Their total duration, in microseconds.
    pub duration_us: u64,
    /// Sessions the peer ended with `close_notify`.
    pub close_notify: u64,
    /// Sessions the peer ended with a FIN alone.
    pub truncated: u64,
}

impl TlsStats {
    fn snapshot(&self) -> TlsSnapshot {
        let load = |a: &AtomicU64| a.load(Relaxed);
        TlsSnapshot {
            completed: load(&self.completed),
            failed: self.failed.each_ref().map(load),
            kinds: self.kinds.each_ref().map(|k| k.each_ref().map(load)),
            durations: self.durations.each_ref().map(load),
            duration_us: load(&self.duration_us),
            close_notify: load(&self.close_notify),
            truncated: load(&self.truncated),
        }
    }

    /// A handshake completed after `micros`: TLS 1.3 or 1.2, resumed or full.
    pub(crate) fn completed(&self, tls13: bool, resumed: bool, micros: u64) {
        Stats::incr(&self.completed);
        Stats::incr(&self.kinds[usize::from(tls13)][usize::from(resumed)]);
        let slot = HANDSHAKE_BUCKETS_US.partition_point(|&bound| bound < micros);
        Stats::incr(&self.durations[slot]);
        Stats::add(&self.duration_us, micros);
    }

    /// A handshake failed.
    pub(crate) fn failed(&self, how: HandshakeFailure) {
        Stats::incr(&self.failed[how as usize]);
    }

    /// A peer ended its side of a session: with `close_notify`, or with a FIN alone.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn peer_ended(&self, close_notify: bool) {
        Stats::incr(if close_notify {
            &self.close_notify
        } else {
            &self.truncated
        });
    }
}

impl TlsSnapshot {
    fn add(&mut self, o: &TlsSnapshot) {
        self.completed += o.completed;
        for (a, b) in self.failed.iter_mut().zip(o.failed) {
            *a += b;
        }
        for (a, b) in self
            .kinds
            .iter_mut()
            .flatten()
            .zip(o.kinds.iter().flatten())
        {
            *a += b;
        }
        for (a, b) in self.durations.iter_mut().zip(o.durations) {
            *a += b;
        }
        self.duration_us += o.duration_us;
        self.close_notify += o.close_notify;
        self.truncated += o.truncated;
    }

    /// Handshakes that failed this way.
    pub fn failures(&self, how: HandshakeFailure) -> u64 {
        self.failed[how as usize]
    }

    /// Completed handshakes of TLS 1.3 (or 1.2) that were resumed (or full).
    pub fn of_kind(&self, tls13: bool, resumed: bool) -> u64 {
        self.kinds[usize::from(tls13)][usize::from(resumed)]
    }
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn opened(&self) {
        Stats::incr(&self.accepted);
        Stats::incr(&self.active);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.active.fetch_sub(1, Relaxed);
        Stats::incr(reason.counter(self));
    }

    pub(crate) fn note_pending(&self, pending: usize) {
        self.peak_pending_output.fetch_max(pending as u64, Relaxed);
    }
}

impl std::ops::AddAssign for Snapshot {
    /// Adds another loop's counters. Totals add; `peak_pending_output`, a maximum, takes the
    /// larger.
    fn add_assign(&mut self, o: Snapshot) {
        let peak = self.peak_pending_output.max(o.peak_pending_output);
        self.add_counts(&o);
        self.peak_pending_output = peak;
    }
}

impl std::iter::Sum for Snapshot {
    fn sum<I: Iterator<Item = Snapshot>>(iter: I) -> Snapshot {
        iter.fold(Snapshot::default(), |mut total, s| {
            total += s;
            total
        })
    }
}

impl Snapshot {
    /// Connections closed for any reason.
    pub fn closed(&self) -> u64 {
        self.closed_peer
            + self.closed_server
            + self.closed_reset
            + self.closed_error
            + self.closed_idle
            + self.closed_write_stall
            + self.closed_linger_timeout
            + self.closed_protocol
            + self.closed_request_timeout
            + self.closed_forced
            + self.closed_proxy
            + self.closed_handshake
            + self.closed_tls
            + self.closed_truncated
            + self.closed_fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening and closing move `active` and the reason's counter together.
    #[test]
    fn open_close_accounting() {
        let s = Stats::default();
        s.opened();
        s.opened();
        s.closed(CloseReason::Reset);
        let snap = s.snapshot();
        assert_eq!((snap.accepted, snap.active, snap.closed_reset), (2, 1, 1));
        assert_eq!(snap.closed(), 1);
    }

    /// Handshake durations land in the first bucket whose bound they do not exceed; the
    /// TLS counters add across loops.
    #[test]
    fn tls_counters() {
        let (a, b) = (Stats::default(), Stats::default());
        a.tls.completed(true, false, 250);
        a.tls.completed(true, true, 251);
        b.tls.completed(false, false, 20_000_000);
        b.tls.failed(HandshakeFailure::Timeout);
        b.tls.peer_ended(false);
        let total: Snapshot = [a.snapshot(), b.snapshot()].into_iter().sum();
        let t = total.tls;
        assert_eq!(t.completed, 3);
        assert_eq!(
            (t.durations[0], t.durations[1], t.durations[SLOTS - 1]),
            (1, 1, 1)
        );
        assert_eq!((t.of_kind(true, false), t.of_kind(true, true)), (1, 1));
        assert_eq!(t.of_kind(false, false), 1);
        assert_eq!(t.failures(HandshakeFailure::Timeout), 1);
        assert_eq!(t.duration_us, 20_000_501);
        assert_eq!((t.close_notify, t.truncated), (0, 1));
    }

    /// Loops' counters add, except the peak, which is the largest.
    #[test]
    fn snapshots_sum() {
        let (a, b) = (Stats::default(), Stats::default());
        a.opened();
        b.opened();
        b.opened();
        a.note_pending(100);
        b.note_pending(30);
        let total: Snapshot = [a.snapshot(), b.snapshot()].into_iter().sum();
        assert_eq!(total.accepted, 3);
        assert_eq!(total.peak_pending_output, 100);
    }

    /// The one-line form lists every counter as key=value.
    #[test]
    fn display_is_key_value() {
        let s = Stats::default();
        Stats::add(&s.bytes_in, 42);
        let line = s.snapshot().to_string();
        assert!(line.starts_with("accepted=0 active=0 "), "{line}");
        assert!(line.contains(" bytes_in=42 "), "{line}");
        assert!(!line.contains('\n'));
    }
}
