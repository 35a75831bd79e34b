//! The control surface of running loops: what other threads see of them and do to them.
//!
//! A loop runs on its own thread and owns everything it touches; what crosses threads is
//! small, cold and lock-free, and it is all here:
//!
//! * [`Endpoint`] — what a loop serves (a TCP listener or a UDP socket) and its counters,
//!   written by the loop only and read by anyone (the admin endpoint, the exit line, tests).
//! * [`Handle`] — one loop's: a shutdown request, a liveness probe, its endpoints. The loop
//!   hears both requests through its `Waker`, like any other event.
//! * [`ServerHandle`] — every loop's handles, in loop order.
//! * [`Health`] — whether the server is ready for new work and whether every loop runs, set
//!   by the supervisor and read by `/readyz` and `/healthz`.
//! * [`Exit`] — how a loop, and so a server, ended.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use log::warn;
use mio::Waker;

use crate::config::{write_listen, ListenOptions};
use crate::fault::Switch;
use crate::stats::{Snapshot, Stats};

/// How a loop's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested and every connection closed in time.
    Drained,
    /// The drain timeout passed; this many connections were aborted.
    DrainTimeout {
        /// Connections still open at the deadline.
        forced: usize,
    },
    /// A second shutdown request arrived while draining; this many connections were dropped.
    Interrupted {
        /// Connections still open.
        open: usize,
    },
}

impl Exit {
    /// Two loops' endings as the server's: an interrupted loop makes the server interrupted, a
    /// forced drain makes it forced, and the counts add.
    pub fn combine(self, other: Exit) -> Exit {
        match (self, other) {
            (Exit::Interrupted { open: x }, Exit::Interrupted { open: y }) => {
                Exit::Interrupted { open: x + y }
            }
            (Exit::Interrupted { open }, _) | (_, Exit::Interrupted { open }) => {
                Exit::Interrupted { open }
            }
            (Exit::DrainTimeout { forced: x }, Exit::DrainTimeout { forced: y }) => {
                Exit::DrainTimeout { forced: x + y }
            }
            (Exit::DrainTimeout { forced }, _) | (_, Exit::DrainTimeout { forced }) => {
                Exit::DrainTimeout { forced }
            }
            (Exit::Drained, Exit::Drained) => Exit::Drained,
        }
    }
}

/// What an endpoint carries: which of its counters can move, and so which the metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP listener: connections.
    Tcp,
    /// A UDP socket: datagrams.
    Udp,
}

/// One endpoint of a loop (a TCP listener or a UDP socket): what it is and its counters.
/// Written only by the loop; anyone holding a [`Handle`] reads it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The service's name (`echo`, `udp-echo`, `admin`, ...).
    pub service: String,
    /// The address bound.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub transport: Transport,
    /// Its connections start with a PROXY protocol header.
    pub proxy: bool,
    /// Its connections speak TLS.
    pub tls: bool,
    /// Its counters: connections accepted and closed on it, bytes and datagrams through it.
    pub stats: Arc<Stats>,
    /// Its faults (`--fault`), if it has any or they may be set at run time; the same for
    /// every loop.
    pub faults: Option<Arc<Switch>>,
}

impl fmt::Display for Endpoint {
    /// As `--listen` names it: `echo=127.0.0.1:7007`, `line=0.0.0.0:7100,proxy,tls`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = ListenOptions {
            proxy: self.proxy,
            tls: self.tls,
        };
        write_listen(f, &self.service, self.addr, options)
    }
}

/// What a [`Handle`] shares with its loop.
pub(crate) struct Shared {
    waker: Waker,
    shutdown_requests: AtomicU32,
    /// Liveness probes asked for, and the last one the loop answered (see [`Handle::ping`]).
    pings: AtomicU64,
    pongs: AtomicU64,
    endpoints: Vec<Endpoint>,
}

impl Shared {
    /// What a loop whose `waker` rings on a request shares about its `endpoints`.
    pub(crate) fn new(waker: Waker, endpoints: Vec<Endpoint>) -> Shared {
        Shared {
            waker,
            shutdown_requests: AtomicU32::new(0),
            pings: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            endpoints,
        }
    }

    /// The loop answers the last liveness probe: it is turning.
    pub(crate) fn answer_probe(&self) {
        let probe = self.pings.load(Ordering::SeqCst);
        self.pongs.store(probe, Ordering::SeqCst);
    }

    /// Shutdown requests made so far.
    pub(crate) fn shutdown_requests(&self) -> u32 {
        self.shutdown_requests.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the event loop: {e}");
        }
    }
}

/// Controls a running loop from another thread.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Handle {
        Handle { shared }
    }

    /// Requests a graceful shutdown, like SIGTERM. A second request exits at once.
    pub fn shutdown(&self) {
        self.shared.shutdown_requests.fetch_add(1, Ordering::SeqCst);
        self.shared.wake();
    }

    /// The loop's counters now: every endpoint's added together.
    pub fn stats(&self) -> Snapshot {
        self.shared
            .endpoints
            .iter()
            .map(|e| e.stats.snapshot())
            .sum()
    }

    /// Each endpoint of the loop with its counters.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.shared.endpoints
    }

    /// Asks the loop to prove it is turning: it answers the next time it polls. A loop stuck
    /// in a service (an endless loop, a blocking call) never answers. Returns the probe's
    /// number.
    pub fn ping(&self) -> u64 {
        let n = self.shared.pings.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.wake();
        n
    }

    /// The last probe the loop answered.
    pub fn answered(&self) -> u64 {
        self.shared.pongs.load(Ordering::SeqCst)
    }
}

/// Controls a running [`Server`](crate::server::Server) from another thread: stops every
/// loop, reads the counters.
#[derive(Clone)]
pub struct ServerHandle {
    loops: Arc<[Handle]>,
}

impl ServerHandle {
    /// The handles of a server's loops, in loop order.
    pub(crate) fn new(loops: Vec<Handle>) -> ServerHandle {
        ServerHandle {
            loops: loops.into(),
        }
    }

    /// Requests a graceful shutdown of every loop, like SIGTERM; a second request exits at
    /// once.
    pub fn shutdown(&self) {
        for h in self.loops.iter() {
            h.shutdown();
        }
    }

    /// Every loop's counters added together.
    pub fn stats(&self) -> Snapshot {
        self.loops.iter().map(Handle::stats).sum()
    }

    /// Each loop's counters, in loop order.
    pub fn loop_stats(&self) -> Vec<Snapshot> {
        self.loops.iter().map(Handle::stats).collect()
    }

    /// Each loop's handle, in loop order.
    pub fn loops(&self) -> &[Handle] {
        &self.loops
    }
}

/// What `/readyz` and `/healthz` answer: set by the supervisor, read by the admin endpoint.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    healthy: AtomicBool,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            ready: AtomicBool::new(true),
            healthy: AtomicBool::new(true),
        }
    }
}

impl Health {
    /// `/readyz` answers 503 from now on: a shutdown has begun.
    pub fn not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// `/healthz` (and `/readyz`) answer 503 from now on: a loop has failed.
    pub fn unhealthy(&self) {
        self.healthy.store(false, Ordering::SeqCst);
    }

    /// Whether the server accepts new work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.is_healthy()
    }

    /// Whether every loop runs.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server ends as its worst loop did, with the counts added.
    #[test]
    fn endings_combine() {
        let d = Exit::Drained;
        let t = |forced| Exit::DrainTimeout { forced };
        let i = |open| Exit::Interrupted { open };
        assert_eq!(d.combine(d), d);
        assert_eq!(d.combine(t(2)), t(2));
        assert_eq!(t(1).combine(t(2)), t(3));
        assert_eq!(t(5).combine(i(1)), i(1));
        assert_eq!(i(1).combine(i(2)), i(3));
    }
}
