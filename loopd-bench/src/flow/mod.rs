//! One connection's life (in UDP mode, one connected socket's): a [`Flow`], the client's
//! mirror of the server's connection state machine.
//!
//! **Read this first.** A flow has a request stream and a reply stream, both made of
//! messages that are functions of `(connection, sequence number)` (see
//! [`payload`](crate::payload)): nothing but counters and the times of the messages in flight
//! is stored. The worker calls it when a wake-up it asked for comes due ([`Flow::on_wake`]),
//! when its socket reports readiness ([`Flow::on_event`]), and when a budget stopped it with
//! work left ([`Flow::resume`]). Each call ends with a *pump*, in this order:
//!
//! 1. **Queue** what the load policy allows now ([`load`]): up to `--pipeline` round trips,
//!    on the open-loop schedule if there is one; an upload's next large write; nothing in a
//!    download.
//! 2. **Write** it, eagerly, up to the send budget ([`Wire::write`]); a short write waits for
//!    the writable edge, a spent budget puts the flow on the worker's run queue.
//! 3. **Finish** when the policy's part is done and nothing is outstanding — or, in churn,
//!    close this connection and open the next.
//!
//! Reading comes before the pump when the socket is readable: every byte is checked as it
//! arrives, replies complete their messages, and their slots go to the next requests.
//!
//! # States
//!
//! Named after what they mean on the wire; the socket lives in the states that have one, so
//! a flow without a socket in a state that needs one cannot be written down:
//!
//! ```text
//!   WAITING ──open──▶ SYN-SENT ──handshake──▶ ESTABLISHED ──done──▶ CLOSED
//!      │                 │ socket               │ socket + conversation
//!      │                 │                      │
//!      │   (no handshake: a datagram socket ────┘ goes straight to ESTABLISHED)
//!      │                 │ refused, timed out   └── reset, mismatch, early close ──▶ FAILED
//!      └── ramp outlasted the run ──▶ CLOSED    └─────────────────────────────────▶ FAILED
//! ```
//!
//! Every change goes through `Flow::set_state` ([`state`]), which logs it at trace level,
//! keeps the worker's counts of established and ended flows without sweeping, and derives
//! the readiness interest from the state ([`Phase::interest`]): a socket is registered as it
//! enters its first state, and would be re-registered only if a state wanted other
//! readiness — none does, on purpose (see [`tcp`](crate::tcp)).
//!
//! # Transports
//!
//! The flow is generic over how its messages travel, a [`Wire`]: [`stream::Bytes`] over any
//! [`Stream`](crate::transport::Stream) (TCP, and TLS next) or [`datagram::Datagrams`] over
//! any [`Datagram`](crate::transport::Datagram) socket (UDP). The state machine and the load
//! policies never ask which; a new transport implements one of the two small traits in
//! [`transport`](crate::transport) and the flow gains no branch. The tests drive every state
//! and policy through scripted fakes of both (`fake.rs`).
//!
//! Files, one concern each: [`state`] (the states and their one choke point), [`load`] (the
//! load policies), [`wire`] (the established connection and the [`Wire`] seam), [`stream`]
//! and [`datagram`] (the two disciplines), [`http`] (HTTP/1.1 over any stream), [`backend`] (which server answers,
//! `--per-backend`).

pub mod backend;
pub mod datagram;
pub mod http;
pub mod load;
pub mod state;
pub mod stream;
pub mod wire;

#[cfg(test)]
mod tests;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::config::{BenchConfig, Load, Stop};
use crate::errors::{connect_failure, ErrorKind, TlsError};
use crate::payload::{Codec, Gather};
use crate::record::Recorder;
use crate::schedule::{quota, OpenLoop, Wake, Wakes};
use crate::transport::{Dial, Handshake};
pub use state::Phase;
use state::State;
pub use wire::{Conn, Wire, WriteEnd};

/// How long after the measurement ends a flow waits for its outstanding replies. Replies
/// still missing then are errors (`unanswered`) over TCP and losses over UDP.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Bytes one connection reads per worker turn before the others get theirs: a few full
/// reads, enough to amortise the turn, small enough that one bulk stream delays the rest by
/// well under a millisecond.
pub const RECV_BUDGET: usize = 256 * 1024;
/// Bytes one connection writes per worker turn before the others get theirs, for the same
/// reason.
pub const SEND_BUDGET: usize = 256 * 1024;

/// Readiness reported for one flow in one event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Readiness {
    /// Data (or end-of-file, or an error) may be waiting.
    pub readable: bool,
    /// The socket may take more bytes.
    pub writable: bool,
    /// The peer's FIN or an error is already queued.
    pub closed: bool,
}

/// One message queued and not yet answered.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// Its sequence number.
    pub seq: u64,
    /// When the schedule meant it to go (equal to `sent` in closed loop).
    pub intended: Instant,
    /// When it was queued for the socket.
    pub sent: Instant,
    /// Datagrams: the reply arrived (replies may come out of order).
    pub answered: bool,
}

/// Why a flow ends with an error: a value the I/O returns, applied by the flow.
#[derive(Debug)]
pub struct Failure {
    /// The kind counted.
    pub kind: ErrorKind,
    /// What happened, for the examples.
    pub what: String,
    /// The TLS alert the server sent, by name, if that is what happened.
    pub alert: Option<String>,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, what: impl Into<String>) -> Failure {
        Failure {
            kind,
            what: what.into(),
            alert: None,
        }
    }

    /// A failure of an established connection's I/O, `e`, during `doing` (`read`, `write`):
    /// its kind from the error (TLS failures keep theirs), and the alert, if any.
    pub fn io(doing: &str, e: &io::Error) -> Failure {
        Failure {
            kind: ErrorKind::of_established(e),
            what: format!("{doing}: {e}"),
            alert: TlsError::of(e).and_then(|t| t.alert.clone()),
        }
    }

    /// A failed connect or handshake, `e`, from `source` if bound.
    pub fn connect(e: &io::Error, source: Option<IpAddr>) -> Failure {
        Failure {
            kind: ErrorKind::of_connect(e),
            what: connect_failure(e, source),
            alert: TlsError::of(e).and_then(|t| t.alert.clone()),
        }
    }
}

/// The buffers a worker lends its flows: one of each, whatever the number of flows.
#[derive(Debug)]
pub struct Buffers {
    /// Iovec layout for stream writes.
    pub gather: Gather,
    /// A datagram being built.
    pub datagram: Vec<u8>,
    /// The read buffer.
    pub scratch: Box<[u8]>,
}

/// Everything a flow touches besides itself: one per worker. `S` is the socket type.
pub struct Ctx<S> {
    /// The run's settings.
    pub cfg: Arc<BenchConfig>,
    /// Message generation and checking.
    pub codec: Arc<Codec>,
    /// Where sockets are registered.
    pub registry: Registry,
    /// What opens sockets.
    pub dial: Box<dyn Dial<Transport = S>>,
    /// What this worker measured.
    pub record: Recorder,
    /// Wake-ups the flows asked for.
    pub wakes: Wakes,
    /// The open-loop schedule, if any.
    pub open_loop: Option<OpenLoop>,
    /// Shared buffers.
    pub buffers: Buffers,
    /// Flows established right now.
    pub open: u64,
    /// Flows that are done (finished or failed); the worker ends when all are.
    pub ended: usize,
}

impl<S> Ctx<S> {
    /// A worker's context: `scratch` bytes of read buffer.
    pub fn new(
        cfg: Arc<BenchConfig>,
        codec: Arc<Codec>,
        registry: Registry,
        dial: Box<dyn Dial<Transport = S>>,
        record: Recorder,
        scratch: usize,
    ) -> Ctx<S> {
        let open_loop = cfg
            .rate
            .map(|r| OpenLoop::new(record.plan.t0, r, cfg.connections));
        let datagram = Vec::with_capacity(codec.size() + 64);
        Ctx {
            cfg,
            codec,
            registry,
            dial,
            record,
            wakes: Wakes::default(),
            open_loop,
            buffers: Buffers {
                gather: Gather::default(),
                datagram,
                scratch: vec![0u8; scratch].into_boxed_slice(),
            },
            open: 0,
            ended: 0,
        }
    }
}

/// One connection. See the [module documentation](self).
pub struct Flow<W: Wire> {
    /// Global connection id, carried in every payload.
    pub id: u32,
    /// Its place in the worker: the poller's token and the key of its wake-ups.
    token: Token,
    state: State<W>,
    /// Connect attempts so far; stale timeouts name an older one.
    attempt: u32,
    /// Counted runs: measured messages this flow still sends.
    quota: Option<u64>,
    /// The run asked this flow for messages inside the window: always in a timed run, when
    /// its share is not zero in a counted one.
    asked: bool,
    /// The first sequence number of the next connection (churn continues the numbering).
    next_seq: u64,
    /// Open loop: the intended send time of the next message.
    next_due: Option<Instant>,
    /// The send wake-up currently asked for, if any.
    armed: Option<Instant>,
    /// On the worker's run queue.
    pub queued: bool,
}

impl<W: Wire> Flow<W> {
    /// A flow for connection `id`, the worker's `index`-th, not yet opened.
    pub fn new(id: u32, index: usize, cfg: &BenchConfig) -> Flow<W> {
        let quota = match cfg.stop {
            Stop::Count(n) => Some(quota(n, cfg.connections, id)),
            Stop::After(_) => None,
        };
        Flow {
            id,
            token: Token(index),
            state: State::Waiting,
            attempt: 0,
            quota,
            asked: quota != Some(0),
            next_seq: 0,
            next_due: None,
            armed: None,
            queued: false,
        }
    }

    /// Where it is in its life.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// The established connection, if there is one.
    pub fn conn(&self) -> Option<&Conn<W>> {
        match &self.state {
            State::Established(conn) => Some(conn),
            _ => None,
        }
    }

    fn conn_mut(&mut self) -> Option<&mut Conn<W>> {
        match &mut self.state {
            State::Established(conn) => Some(conn),
            _ => None,
        }
    }

    /// Whether a budget stopped this flow with work left: run it again next turn, without
    /// waiting for an event.
    pub fn wants_turn(&self) -> bool {
        self.conn()
            .is_some_and(|c| c.read_pending || c.write_pending)
    }

    /// Whether the flow waits on the server: replies outstanding, requests unwritten, or
    /// the backend's answer.
    pub fn outstanding(&self) -> bool {
        self.conn().is_some_and(|c| !c.idle())
    }

    /// A wake-up it asked for came due.
    pub fn on_wake(&mut self, cx: &mut Ctx<W::Socket>, at: Instant, wake: Wake, now: Instant) {
        match wake {
            Wake::Open if self.phase() == Phase::Waiting => {
                if cx.record.plan.may_send(now) {
                    self.open(cx, now);
                    self.pump(cx, now);
                } else {
                    // The ramp outlasted the measurement; this one is not needed.
                    self.set_state(cx, now, |_| State::Finished);
                }
            }
            Wake::ConnectTimeout(attempt) if attempt == self.attempt => match self.state {
                State::Connecting {
                    since,
                    connected: None,
                    ..
                } => {
                    let waited = now.duration_since(since);
                    let what = format!("not established after {waited:.1?}");
                    self.fail(cx, Failure::new(ErrorKind::ConnectTimeout, what), now);
                }
                State::Connecting {
                    since,
                    connected: Some(at),
                    ..
                } => {
                    let (waited, tcp) = (now.duration_since(since), at.duration_since(since));
                    let what = format!(
                        "TLS handshake not done {waited:.1?} after the dial (TCP took {tcp:.1?})"
                    );
                    self.fail(cx, Failure::new(ErrorKind::TlsHandshakeTimeout, what), now);
                }
                // Handshake mode: the server's first word after the handshake never came.
                State::Established(_) if cx.cfg.mode.load() == Load::Handshake => {
                    cx.record.tally.tls.waited_out += 1;
                    self.next_connection(cx, now);
                }
                _ => {}
            },
            Wake::Send if self.armed == Some(at) => {
                self.armed = None;
                self.pump(cx, now);
            }
            Wake::Expire => {
                let current = self
                    .conn_mut()
                    .is_some_and(|conn| W::expire(conn, cx, at, now));
                if current {
                    self.pump(cx, now);
                }
            }
            _ => {} // stale: the flow moved on since this was asked for
        }
    }

    /// Its socket reported readiness.
    pub fn on_event(&mut self, cx: &mut Ctx<W::Socket>, ready: Readiness, now: Instant) {
        if let State::Connecting {
            socket, connected, ..
        } = &mut self.state
        {
            match W::handshake(socket) {
                Handshake::Pending => return,
                // TCP is up under a TLS layer: the TCP connect is timed from here, the TLS
                // handshake from here on. Its ClientHello is out; the answer is a new edge.
                Handshake::Connected => {
                    *connected = Some(now);
                    return;
                }
                Handshake::Failed(e) => {
                    let failure = Failure::connect(&e, self.source(&cx.cfg));
                    return self.fail(cx, failure, now);
                }
                // Go on to read: the event that completes the handshake may also carry data
                // the server sent at once, and that edge will not come again.
                Handshake::Done => {
                    self.connected(cx, now);
                    self.pump(cx, now);
                }
            }
        }
        let Some(conn) = self.conn_mut() else {
            return;
        };
        if ready.writable {
            conn.blocked = false;
        }
        conn.peer_closing |= ready.closed;
        // A layer may hold bytes it read with the handshake (or on a writable-only event):
        // no readable edge will announce those.
        if ready.readable || ready.closed || W::buffered(conn) {
            self.receive(cx, now);
        }
        self.pump(cx, now);
    }

    /// A turn from the run queue: continue what a budget interrupted.
    pub fn resume(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let Some(conn) = self.conn() else {
            return;
        };
        if conn.read_pending {
            self.receive(cx, now);
        }
        self.pump(cx, now);
    }

    /// After the measurement: finish now if nothing is outstanding.
    pub fn finish_if_idle(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        match self.state {
            State::Waiting => self.set_state(cx, now, |_| State::Finished),
            State::Established(_) => self.pump(cx, now),
            _ => {}
        }
    }

    /// The grace after the run ran out (`stalled` false), or nothing moved for the stall
    /// timeout (`stalled` true): whatever is outstanding is lost, and said so.
    pub fn abandon(&mut self, cx: &mut Ctx<W::Socket>, stalled: bool, now: Instant) {
        if let State::Connecting {
            since, connected, ..
        } = self.state
        {
            let waited = now.duration_since(since);
            let (kind, what) = match connected {
                None => (ErrorKind::ConnectTimeout, "still connecting"),
                Some(_) => (
                    ErrorKind::TlsHandshakeTimeout,
                    "TLS handshake still under way",
                ),
            };
            let what = format!("{what} when the run ended ({waited:.1?} in)");
            return self.fail(cx, Failure::new(kind, what), now);
        }
        if self.phase() != Phase::Established {
            return;
        }
        let why = if stalled {
            format!("nothing moved for {:?}", cx.cfg.stall_timeout)
        } else {
            format!("not done within {DRAIN_GRACE:?} after the run")
        };
        let replies = self.expects_replies(&cx.cfg);
        if let State::Established(conn) = &mut self.state {
            W::abandon(conn, cx, &why, replies);
        }
        // Counted above; not also counted as unserved.
        self.close(cx, now, State::Finished);
    }

    /// Reads what arrived, checking every byte.
    fn receive(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let Some(conn) = self.conn_mut() else {
            return;
        };
        conn.read_pending = false;
        if let Err(failure) = W::receive(conn, cx, now) {
            self.fail(cx, failure, now);
        }
    }

    /// Queues what the load policy allows now, writes it out, and finishes the flow when its
    /// part is done.
    fn pump(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let mut budget = SEND_BUDGET;
        match self.conn_mut() {
            Some(conn) => conn.write_pending = false,
            None => return,
        }
        loop {
            if let Err(failure) = self.queue_due(cx, now) {
                return self.fail(cx, failure, now);
            }
            let Some(conn) = self.conn_mut() else {
                return;
            };
            let end = match W::write(conn, cx, now, &mut budget) {
                Ok(end) => end,
                Err(failure) => return self.fail(cx, failure, now),
            };
            let more = self.keeps_writing(cx, now);
            let Some(conn) = self.conn_mut() else {
                return;
            };
            match end {
                // An upload keeps writing while the socket takes it: everything queued went
                // out, so queue more. No writable edge would come to ask.
                WriteEnd::Done if more => {
                    if budget == 0 {
                        conn.write_pending = true;
                        break;
                    }
                }
                WriteEnd::Done | WriteEnd::Blocked => break,
                WriteEnd::Budget => {
                    conn.write_pending = true;
                    break;
                }
            }
        }
        self.when_sent(cx, now);
    }

    /// The local address this flow binds to (`--source`), if any: dealt round-robin over
    /// this process's own connections, so each machine of a segmented run uses all of its
    /// addresses.
    fn source(&self, cfg: &BenchConfig) -> Option<IpAddr> {
        cfg.sources.as_ref().map(|s| s.pick(cfg.ordinal(self.id)))
    }
}
