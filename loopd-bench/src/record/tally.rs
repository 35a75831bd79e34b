//! What one worker thread counts while it runs; the coordinator adds the workers' tallies.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::histogram::new_histogram;
use super::tls::TlsTally;
use crate::errors::ErrorKind;

/// Error descriptions kept as examples; the counts say how many there were in all.
pub const MAX_EXAMPLES: usize = 10;

/// UDP accounting. Loss is normal for UDP and is reported; above `--max-loss` it fails the
/// run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpCounts {
    /// Measured datagrams sent.
    pub sent: u64,
    /// Of those, answered in time and verified.
    pub received: u64,
    /// Of those, not answered within the loss timeout.
    pub lost: u64,
    /// Replies that arrived after their datagram was declared lost, or twice.
    pub late: u64,
}

impl UdpCounts {
    /// Adds another's counts.
    pub fn add(&mut self, o: &UdpCounts) {
        self.sent += o.sent;
        self.received += o.received;
        self.lost += o.lost;
        self.late += o.late;
    }

    /// The share lost, in percent (0 when nothing was sent).
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / self.sent as f64
        }
    }
}

/// What the connections to one backend measured (`--per-backend`): the server that answered
/// `SERVER` with this id.
#[derive(Clone, Debug)]
pub struct BackendTally {
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
    /// Round-trip latency.
    pub latency: Histogram<u64>,
    /// Errors on its connections.
    pub errors: u64,
}

impl BackendTally {
    fn new(server_id: &str) -> BackendTally {
        BackendTally {
            server_id: server_id.to_string(),
            connections: 0,
            messages: 0,
            bytes_sent: 0,
            bytes_received: 0,
            latency: new_histogram(),
            errors: 0,
        }
    }

    /// Adds another tally of the same backend.
    pub fn absorb(&mut self, o: &BackendTally) {
        self.connections += o.connections;
        self.messages += o.messages;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.errors += o.errors;
    }
}

/// What moved before the measurement began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeadIn {
    /// Messages completed.
    pub messages: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
}

/// What one worker thread measured.
#[derive(Debug)]
pub struct Tally {
    /// Round-trip latency, from the intended send time in open loop.
    pub latency: Histogram<u64>,
    /// Round-trip latency from the actual send time (differs from `latency` in open loop).
    pub uncorrected: Histogram<u64>,
    /// Time to establish connections.
    pub connect: Histogram<u64>,
    /// Open loop: how late each message went, against its intended send time.
    pub send_lag: Histogram<u64>,
    /// Measured completed messages (round trips sent inside the window, whenever answered;
    /// whole messages written in send mode).
    pub messages: u64,
    /// Measured bytes written.
    pub bytes_sent: u64,
    /// Measured bytes read.
    pub bytes_received: u64,
    /// Before the window (ramp and warm-up, not measured): messages completed and bytes
    /// moved, for the picture of the whole run.
    pub lead_in: LeadIn,
    /// Connections that established (in connect mode: inside the window).
    pub established: u64,
    /// Connect mode: connections established before the window (warm-up).
    pub established_before: u64,
    /// Connections that got something back inside the window.
    pub served: u64,
    /// Connections that ended with an error before the window began.
    pub ended_before: u64,
    /// Connection attempts that failed.
    pub failed: u64,
    /// Errors by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first few errors, described.
    pub examples: Vec<String>,
    /// UDP accounting.
    pub udp: UdpCounts,
    /// Per backend, in the order this worker met them (`--per-backend`).
    pub backends: Vec<BackendTally>,
    /// TLS handshakes and failures (`--tls`).
    pub tls: TlsTally,
    /// HTTP: measured responses by status code.
    pub http_status: BTreeMap<u16, u64>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            uncorrected: new_histogram(),
            connect: new_histogram(),
            send_lag: new_histogram(),
            messages: 0,
            bytes_sent: 0,
            bytes_received: 0,
            lead_in: LeadIn::default(),
            established: 0,
            established_before: 0,
            served: 0,
            ended_before: 0,
            failed: 0,
            errors: BTreeMap::new(),
            examples: Vec::new(),
            udp: UdpCounts::default(),
            backends: Vec::new(),
            tls: TlsTally::new(),
            http_status: BTreeMap::new(),
        }
    }

    /// The index of the backend called `server_id`, added if new. A run meets a handful of
    /// backends, once per connection: a linear search is the simplest fast enough thing.
    pub fn backend(&mut self, server_id: &str) -> usize {
        match self.backends.iter().position(|b| b.server_id == server_id) {
            Some(i) => i,
            None => {
                self.backends.push(BackendTally::new(server_id));
                self.backends.len() - 1
            }
        }
    }

    /// Counts `n` errors of `kind`, keeping `what` as an example.
    pub fn error(&mut self, kind: ErrorKind, n: u64, what: impl FnOnce() -> String) {
        let count = self.errors.entry(kind).or_default();
        let first = *count == 0;
        *count += n;
        // The first of each kind is the useful example; the counts tell how many followed.
        if first && self.examples.len() < MAX_EXAMPLES {
            let what = what();
            log::debug!("{}: {what}", kind.name());
            self.examples.push(format!("{}: {what}", kind.name()));
        }
    }

    /// All errors so far.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another worker's tally to this one.
    pub fn absorb(&mut self, o: Tally) {
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.uncorrected
            .add(&o.uncorrected)
            .expect("same histogram bounds");
        self.connect.add(&o.connect).expect("same histogram bounds");
        self.send_lag
            .add(&o.send_lag)
            .expect("same histogram bounds");
        self.messages += o.messages;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.established += o.established;
        self.established_before += o.established_before;
        self.served += o.served;
        self.ended_before += o.ended_before;
        self.failed += o.failed;
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
        let room = MAX_EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(o.examples.into_iter().take(room));
        self.udp.add(&o.udp);
        for b in &o.backends {
            let i = self.backend(&b.server_id);
            self.backends[i].absorb(b);
        }
        self.tls.absorb(&o.tls);
        for (status, n) in o.http_status {
            *self.http_status.entry(status).or_default() += n;
        }
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}
