//! What a worker publishes while it runs, for the coordinator's per-second series: its
//! running totals, stored with plain atomic stores (one writer each) and read once a second.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::second::Second;

/// What moved: messages completed and bytes each way.
#[derive(Debug, Default)]
pub struct Moved {
    /// Messages completed.
    pub messages: AtomicU64,
    /// Bytes written.
    pub bytes_sent: AtomicU64,
    /// Bytes read.
    pub bytes_received: AtomicU64,
}

impl Moved {
    /// Publishes the worker's totals.
    pub fn store(&self, messages: u64, bytes_sent: u64, bytes_received: u64) {
        self.messages.store(messages, Relaxed);
        self.bytes_sent.store(bytes_sent, Relaxed);
        self.bytes_received.store(bytes_received, Relaxed);
    }
}

/// Counters a worker publishes for the progress line and the timeline. One writer each,
/// so plain stores of the worker's totals suffice.
#[derive(Debug, Default)]
pub struct Live {
    /// Inside the measurement window.
    pub measured: Moved,
    /// Before it (ramp and warm-up), for the picture of the whole run.
    pub lead_in: Moved,
    /// Errors so far.
    pub errors: AtomicU64,
    /// Connections established right now.
    pub open: AtomicU64,
}

impl Live {
    /// The worker's running totals of `moved` (its `measured` or `lead_in`; `t` unset).
    pub fn totals(&self, moved: impl Fn(&Live) -> &Moved) -> Second {
        let m = moved(self);
        Second {
            t: 0.0,
            messages: m.messages.load(Relaxed),
            bytes_sent: m.bytes_sent.load(Relaxed),
            bytes_received: m.bytes_received.load(Relaxed),
            errors: self.errors.load(Relaxed),
            open: self.open.load(Relaxed),
        }
    }
}
