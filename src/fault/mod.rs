//! Faults on purpose: a listener that delays, paces, slices, truncates, corrupts or drops
//! its replies, closes or resets its connections, stops accepting or refuses them — so that
//! load balancers and clients can be tested against a backend that fails in a known way, and
//! a client can tell which of its errors the server caused (`loopd-bench --server-metrics`).
//!
//! **Read this first.** A fault is a property of a listener (`--fault 'echo@7007=delay:2ms'`),
//! never of a service: services stay pure byte handlers and never learn they are faulted.
//! Each fault acts at one of the few places where a connection decides something:
//!
//! | decision point | where | faults |
//! | --- | --- | --- |
//! | accept | `event_loop/accept.rs` | `stop-accept`, `refuse`, `fail-first` (streams), `blackhole`, per-connection choices |
//! | a reply produced | `Serving::call` → `ConnFaults::on_reply` | `delay`, `first-byte-delay`, `corrupt`, `close-before-reply`, `close-after`, `reset-after` (N or SIZE), `fail-first` (framed) |
//! | output flushed | `Serving::flush` → [`Hold`] | `bandwidth`, `slice`, held replies, RST at an offset |
//! | a deadline | `Serving::on_deadline` | `idle-close`, `reset-after:DUR`, releases |
//! | the peer's FIN | `Serving::advance_close` | `slow-close` |
//! | a datagram | `udp.rs` | `drop`, `duplicate`, `reorder`, `delay`, `corrupt`, `fail-first` |
//!
//! Why a policy the connection consults rather than a wrapper around the service or the
//! socket: the bounds. A held reply must stay in the connection's own output buffer, where
//! the watermarks see it (reading pauses, a streaming service stops producing); a wrapper
//! service cannot hold bytes the watermark counts, and a wrapper socket would hold them in a
//! second buffer the watermark does not see. The connection asks its `ConnFaults` at each
//! point and otherwise runs its usual code. A connection of a listener without faults never
//! allocates one and pays one `None` check at those points.
//!
//! **Bounds.** A held or paced reply is pending output under the high watermark ([`Hold`]);
//! a blackholed connection is an ordinary connection that never answers, so it counts
//! against the cap and the idle timeout still closes it; every time a fault waits for is a
//! deadline in the loop's timer set — nothing sleeps, no thread is added.
//!
//! **Reproducible.** Random choices (`p:`, jitter, which byte to corrupt) come from a seeded
//! generator per loop and per connection ([`Rng`]); `--fault-seed` repeats a run's choices
//! for the same `--threads`.
//!
//! **Counted.** Every injection is counted per listener and fault kind
//! (`loopd_faults_injected_total`), once for each thing a client could notice: a reply
//! held, a connection reset, a datagram dropped. That is what lets a client reconcile.

pub mod hold;
mod policy;
pub mod rng;
pub mod spec;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use hold::{not_before, Hold, Pace};
pub(crate) use policy::{Accept, ConnFaults, Due};
pub use rng::Rng;
pub use spec::{Fault, FaultSpec, How, Kind, Per, Selector, Value, KINDS};

use crate::service::{Output, Service};

/// The faults a server starts with, and how they may change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultConfig {
    /// `--fault`, in order; a later spec for the same listener replaces an earlier one.
    pub specs: Vec<FaultSpec>,
    /// `--fault-seed`; `None` picks one at start-up (and logs it, so the run can be repeated).
    pub seed: Option<u64>,
    /// `--fault-admin`: the admin endpoint may change faults at run time (`POST /faults?…`).
    pub runtime_changes: bool,
}

/// The most faults one listener takes: far more than a test combines, and a connection's
/// choices fit in one word.
pub const MAX_FAULTS: usize = 32;

/// One listener's faults as they are now, shared by every loop serving it and the admin
/// endpoint, with what they injected. Changing them (`POST /faults`) swaps the plan and bumps
/// a generation the loops compare at accept: one atomic load per accept, no lock on the path
/// of a message. Connections keep the plan they were accepted with.
#[derive(Debug)]
pub struct Switch {
    /// The listener, as a spec names it: `echo@127.0.0.1:7007`.
    name: String,
    datagram: bool,
    /// Its service answers requests (line, frame): `fail-first` counts requests, not
    /// connections.
    framed: bool,
    generation: AtomicU64,
    plan: Mutex<Arc<Plan>>,
    /// Injections by [`Kind::index`].
    injected: [AtomicU64; KINDS.len()],
    /// Whether a listener fault's window (stop-accept, refuse) is open now, by kind.
    active: [AtomicBool; KINDS.len()],
}

/// A listener's faults, as one generation of its [`Switch`] has them.
#[derive(Debug, Default)]
pub struct Plan {
    /// The faults, in spec order.
    pub faults: Vec<Fault>,
    /// Connections, requests or datagrams `fail-first` has seen under this plan (shared by the
    /// loops, so "first N" counts the listener's, not one loop's).
    seen: AtomicU64,
}

impl Plan {
    /// Faults with a fresh `fail-first` count.
    pub fn new(faults: Vec<Fault>) -> Plan {
        Plan {
            faults,
            seen: AtomicU64::new(0),
        }
    }

    /// Counts one more connection, request or datagram for `fail-first:n`: whether it is
    /// among the first `n`.
    pub fn fails_first(&self, n: u64) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed) < n
    }

    /// The window of a listener fault (`stop-accept`, `refuse`) of `kind`: from when, and
    /// until when (`None`: the end of the run), after start-up.
    pub fn listener_window(&self, kind: Kind) -> Option<(Duration, Option<Duration>)> {
        self.faults.iter().find(|f| f.kind == kind).map(|f| {
            let end = match f.value {
                Value::Duration(d) => Some(f.after.saturating_add(d)),
                _ => None,
            };
            (f.after, end)
        })
    }
}

impl Switch {
    /// The switch of listener `name` (UDP if `datagram`; a request/response service if
    /// `framed`), starting with `faults`, each checked against the transport.
    pub fn new(
        name: String,
        datagram: bool,
        framed: bool,
        faults: Vec<Fault>,
    ) -> Result<Switch, String> {
        check(&name, datagram, &faults)?;
        Ok(Switch {
            name,
            datagram,
            framed,
            generation: AtomicU64::new(0),
            plan: Mutex::new(Arc::new(Plan::new(faults))),
            injected: std::array::from_fn(|_| AtomicU64::new(0)),
            active: std::array::from_fn(|_| AtomicBool::new(false)),
        })
    }

    /// The listener's name in specs and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether its service answers requests (framed).
    pub fn framed(&self) -> bool {
        self.framed
    }

    /// The plan now.
    pub fn plan(&self) -> Arc<Plan> {
        Arc::clone(&self.plan.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes of plan so far; a loop reloads when this moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Replaces the faults (each checked against the transport); new connections get them.
    pub fn set(&self, faults: Vec<Fault>) -> Result<(), String> {
        check(&self.name, self.datagram, &faults)?;
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(Plan::new(faults));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Counts one injection of `kind`.
    pub fn note(&self, kind: Kind) {
        self.injected[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether the window of listener fault `kind` is open now.
    pub fn set_active(&self, kind: Kind, active: bool) {
        self.active[kind.index()].store(active, Ordering::Relaxed);
    }

    /// Whether the window of listener fault `kind` is open now: a refuse window refuses
    /// connects the kernel answers, one by one, without loopd seeing them, so a client
    /// reconciling its refused connects needs to know the window was open.
    pub fn is_active(&self, kind: Kind) -> bool {
        self.active[kind.index()].load(Ordering::Relaxed)
    }

    /// Injections of `kind` so far.
    pub fn injected(&self, kind: Kind) -> u64 {
        self.injected[kind.index()].load(Ordering::Relaxed)
    }

    /// The kinds to export: those in the plan, and any that injected under an earlier one.
    pub fn kinds(&self) -> Vec<Kind> {
        let plan = self.plan();
        KINDS
            .into_iter()
            .filter(|&k| plan.faults.iter().any(|f| f.kind == k) || self.injected(k) > 0)
            .collect()
    }
}

impl fmt::Display for Switch {
    /// As a spec: `echo@127.0.0.1:7007=delay:2ms;corrupt`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.name)?;
        let plan = self.plan();
        if plan.faults.is_empty() {
            return f.write_str("none");
        }
        for (i, fault) in plan.faults.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{fault}")?;
        }
        Ok(())
    }
}

fn check(name: &str, datagram: bool, faults: &[Fault]) -> Result<(), String> {
    if faults.len() > MAX_FAULTS {
        return Err(format!("{name}: at most {MAX_FAULTS} faults per listener"));
    }
    for f in faults {
        f.check_transport(datagram)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// The service of a blackholed connection: it takes every byte and never answers, and it
/// does not finish when the peer does — a hung backend keeps its half open until the idle
/// timeout. Its own service is never created, so not even a greeting leaves.
pub(crate) struct Blackhole;

impl Service for Blackhole {
    fn on_input(&mut self, input: &[u8], _: &mut Output<'_>) -> usize {
        input.len()
    }

    fn on_peer_finished(&mut self, _: &mut Output<'_>) {}
}

/// One loop's view of a listener's [`Switch`]: the plan it serves with, reloaded when the
/// switch's generation moves, and the state of the listener's own faults in this loop.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) switch: Arc<Switch>,
    plan: Arc<Plan>,
    generation: u64,
    /// `refuse`: the listening socket is shut now.
    pub(crate) refused: bool,
    /// `stop-accept`: accepting is stopped now.
    pub(crate) stopped: bool,
    /// `stop-accept`: the most connections seen waiting in the backlog during the window,
    /// each counted once.
    pub(crate) backlog_counted: u32,
}

impl Local {
    pub(crate) fn new(switch: Arc<Switch>) -> Local {
        let generation = switch.generation();
        Local {
            plan: switch.plan(),
            switch,
            generation,
            refused: false,
            stopped: false,
            backlog_counted: 0,
        }
    }

    /// The plan now (one atomic load; a lock only after a change).
    pub(crate) fn plan(&mut self) -> &Arc<Plan> {
        let generation = self.switch.generation();
        if generation != self.generation {
            self.plan = self.switch.plan();
            self.generation = generation;
        }
        &self.plan
    }

    /// Whether a listener fault of `kind` applies at `now`, and the next time that changes.
    pub(crate) fn window(
        &mut self,
        kind: Kind,
        now: crate::timer::Time,
    ) -> (bool, Option<crate::timer::Time>) {
        let t = since_start(now);
        let Some((from, to)) = self.plan().listener_window(kind) else {
            return (false, None);
        };
        let at = |d: Duration| crate::timer::Time(d.as_millis() as u64);
        if t < from {
            (false, Some(at(from)))
        } else if to.is_none_or(|to| t < to) {
            (true, to.map(at))
        } else {
            (false, None)
        }
    }
}

/// Time since start-up, from the loop's clock.
pub fn since_start(now: crate::timer::Time) -> Duration {
    Duration::from_millis(now.0)
}
