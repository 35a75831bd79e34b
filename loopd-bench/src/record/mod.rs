//! Recording: what the workers count while a run goes, kept apart from what is made of it
//! afterwards (the [`report`](crate::report)).
//!
//! 1. [`histogram`] — latency histograms of nanoseconds.
//! 2. [`tally`] — one worker's counters and histograms; the coordinator adds them up.
//! 3. [`second`] — the per-second series, and [`live`] — the running totals a worker
//!    publishes for it.
//! 4. [`intervals`] — one histogram per second for `--hlog`.
//! 5. [`tls`] — TLS handshakes by kind, their latency, what they settled, alerts.
//! 6. This module — the [`Recorder`], which decides for each byte and message whether it
//!    belongs to the measurement, the lead-in before it, or neither.

pub mod histogram;
pub mod intervals;
pub mod live;
pub mod second;
pub mod tally;
pub mod tls;

use std::time::{Duration, Instant};

use crate::errors::ErrorKind;
use crate::schedule::Plan;
use histogram::nanos;
use intervals::IntervalRecorder;
pub use second::Second;
pub use tally::{BackendTally, Tally, UdpCounts};
use tls::{HandshakeKind, Negotiated};

/// A worker's recording: its tally, filled by time against the [`Plan`].
///
/// Bytes count by when they move: inside the window they are measured, before it they are
/// the lead-in (drawn, not measured), after it nothing. A round trip counts by when its
/// message was meant to be sent: one sent inside the window is timed whenever its reply
/// arrives (the worker waits at most the drain grace after the window), so a late reply
/// cannot escape the histogram.
#[derive(Debug)]
pub struct Recorder {
    /// The run's time marks.
    pub plan: Plan,
    /// What this worker measured.
    pub tally: Tally,
    /// `--hlog`: this second's histograms.
    pub intervals: Option<IntervalRecorder>,
    /// The last time any byte moved or a connection was established (the stall guard).
    pub last_progress: Instant,
    /// The completion time of the last measured message, for counted runs.
    pub last_completion: Option<Instant>,
    /// How late the first connection opened against the time it was due: how late this
    /// worker began its schedule (the start lag of a `--start-at` run).
    pub start_lag: Option<Duration>,
    /// Send mode: a message is complete when it is written (nothing comes back).
    uploads: bool,
}

impl Recorder {
    /// An empty recording for `plan`, begun at `now`. `uploads`: messages are complete when
    /// written (send mode).
    pub fn new(
        plan: Plan,
        uploads: bool,
        intervals: Option<IntervalRecorder>,
        now: Instant,
    ) -> Recorder {
        Recorder {
            plan,
            tally: Tally::new(),
            intervals,
            last_progress: now,
            last_completion: None,
            start_lag: None,
            uploads,
        }
    }

    /// A connection due to open at `due` is being opened at `now`: the first one sets the
    /// worker's start lag.
    pub fn opening(&mut self, due: Instant, now: Instant) {
        if self.start_lag.is_none() {
            self.start_lag = Some(now.saturating_duration_since(due));
        }
    }

    /// `n` bytes written at `now`, on a connection to `backend` if known.
    #[inline]
    pub fn sent(&mut self, n: usize, now: Instant, backend: Option<usize>) {
        self.last_progress = now;
        if now < self.plan.from {
            self.tally.lead_in.bytes_sent += n as u64;
        } else if self.plan.in_window(now) {
            self.tally.bytes_sent += n as u64;
            if let Some(b) = backend {
                self.tally.backends[b].bytes_sent += n as u64;
            }
        }
    }

    /// `n` bytes of a stream of requests written at `now`, completing `whole` of them: in
    /// send mode those are the messages measured.
    #[inline]
    pub fn wrote(&mut self, n: usize, whole: u64, now: Instant, backend: Option<usize>) {
        self.sent(n, now, backend);
        if self.uploads && self.plan.in_window(now) {
            self.tally.messages += whole;
            self.last_completion = Some(now);
        }
    }

    /// `n` bytes read at `now`.
    #[inline]
    pub fn received(&mut self, n: usize, now: Instant, backend: Option<usize>) {
        self.last_progress = now;
        if now < self.plan.from {
            self.tally.lead_in.bytes_received += n as u64;
        } else if self.plan.in_window(now) {
            self.tally.bytes_received += n as u64;
            if let Some(b) = backend {
                self.tally.backends[b].bytes_received += n as u64;
            }
        }
    }

    /// Something came back on a connection at `now`: the first time inside the window, the
    /// connection counts as served.
    #[inline]
    pub fn served(&mut self, served: &mut bool, now: Instant) {
        if !*served && self.plan.in_window(now) {
            *served = true;
            self.tally.served += 1;
        }
    }

    /// The reply to a message meant for `intended` and sent at `sent` is complete at `now`:
    /// timed if the message belongs to the measurement, whenever the reply arrived.
    #[inline]
    pub fn completed(
        &mut self,
        intended: Instant,
        sent: Instant,
        now: Instant,
        backend: Option<usize>,
    ) {
        if now < self.plan.from {
            self.tally.lead_in.messages += 1;
        }
        if self.plan.measured(intended) {
            let latency = nanos(now.duration_since(intended));
            let uncorrected = nanos(now.duration_since(sent));
            self.tally.latency.saturating_record(latency);
            self.tally.uncorrected.saturating_record(uncorrected);
            if let Some(i) = &mut self.intervals {
                i.record(now, latency, uncorrected);
            }
            self.tally.messages += 1;
            self.last_completion = Some(now);
            if let Some(b) = backend {
                let b = &mut self.tally.backends[b];
                b.latency.saturating_record(latency);
                b.messages += 1;
            }
        }
    }

    /// A TLS handshake of `kind` that settled `negotiated` completed at `now`, `nanos` after
    /// TCP was established. Counted by when it completed; in handshake mode (`is_message`)
    /// each one inside the window is also the run's message, timed in the run's latency
    /// histogram, so rates, latency and CPU per message are per handshake.
    pub fn handshake(
        &mut self,
        kind: HandshakeKind,
        nanos: u64,
        negotiated: Negotiated,
        is_message: bool,
        now: Instant,
    ) {
        let measured = self.plan.in_window(now);
        self.tally.tls.handshake(kind, nanos, negotiated, measured);
        self.last_progress = now;
        if is_message {
            if measured {
                self.tally.messages += 1;
                self.tally.latency.saturating_record(nanos);
                self.tally.uncorrected.saturating_record(nanos);
                if let Some(i) = &mut self.intervals {
                    i.record(now, nanos, nanos);
                }
                self.last_completion = Some(now);
            } else if now < self.plan.from {
                self.tally.lead_in.messages += 1;
            }
        }
    }

    /// Counts `n` errors of `kind`, keeping `what` as an example.
    pub fn error(&mut self, kind: ErrorKind, n: u64, what: impl FnOnce() -> String) {
        self.tally.error(kind, n, what);
    }

    /// Counts `n` errors against `backend`, if it is known.
    pub fn backend_errors(&mut self, backend: Option<usize>, n: u64) {
        if let Some(b) = backend {
            self.tally.backends[b].errors += n;
        }
    }
}
