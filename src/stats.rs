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
    /// Refused before its service existed: a PROXY protocol header that was missing,
    /// malformed, too long or too slow, or a source not allowed to send one.
    Proxy,
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
        }
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters of one loop. See the [module documentation](self).
        #[derive(Debug, Default)]
        pub struct Stats {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
        }

        /// A copy of every counter at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl Snapshot {
            fn add_counts(&mut self, o: &Snapshot) {
                $( self.$name += o.$name; )*
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
    /// Closed because a partial request outlived the request timeout.
    closed_request_timeout,
    /// Aborted at the drain deadline.
    closed_forced,
    /// Refused for its PROXY protocol header (or for sending from an untrusted source).
    closed_proxy,
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
