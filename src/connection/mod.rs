//! The life of one connection: a state machine driven by readiness.
//!
//! **Read this first.** The loop calls [`Connection::turn`] when the socket became readable
//! or writable, or when the connection is on the run queue because it used up its budget; a
//! turn ends by telling the loop to wait for the next event, run it again next turn, or drop
//! it ([`Turn`]). A connection lives in one of two phases, each in a room of its own:
//!
//! * **Before serving** (`preface.rs`): the stages a listener asks for before any byte
//!   reaches a service — a PROXY protocol header (`header.rs`), then a socket layer's
//!   handshake (`handshake.rs`: TLS). Only a connection that has such a stage pays for it.
//! * **Serving** (`serving/`): the service exists; the state machine of `Open`,
//!   `CloseWait`, `Closing`, `Lingering` and `Closed` reads, writes, holds backpressure and
//!   closes without losing data. It starts the same way whatever came before it.
//!
//! What both phases share is the socket and what is remembered of its readiness (`Io`).
//! Edge-triggered readiness is reported once, so the connection *remembers* it: `read_ready`
//! stays set until a read returns `WouldBlock` (or a short count, where that proves the
//! receive queue empty: see [`SHORT_READ_DRAINS`]), and `write_blocked` stays set from a
//! short write until the next writable event. A turn that stops with work left returns
//! [`Turn::Again`] and the loop runs it next turn without waiting for an event.
//!
//! # The socket seam
//!
//! The connection reads and writes through [`Socket`], implemented for mio's `TcpStream`
//! and by a scripted fake in the tests. A layer under the state machine (TLS) implements it
//! too, owning the TCP socket and its own session, and tells the connection the things a
//! plain socket never needs to: that it holds input already ([`Socket::holds_input`]: a
//! short read then no longer proves the socket drained), that it has output of its own to
//! send ([`Socket::pending_output`]: WRITABLE is wanted, a flush sends it, before our FIN
//! too, and it counts against the high watermark), and that it has a handshake to complete
//! before anything is the service's ([`Socket::handshake`], a stage before serving). For
//! `TcpStream` these are `false`, `0` and `None`, known at compile time, and cost nothing.
//!
//! Errors stay local: `WouldBlock` waits, `Interrupted` retries, a reset closes quietly, and
//! anything else closes this connection with one log line.

mod handshake;
mod header;
mod preface;
mod serving;

use std::fmt;
use std::io;

use log::{debug, warn};

use crate::buffer::Buffer;
use crate::config::Limits;
use crate::fault::ConnFaults;
use crate::service::{Borrowed, Service};
use crate::stats::{CloseReason, Stats};
use crate::timer::Time;

pub use crate::socket::{Socket, Want};
pub use preface::{Stages, Unborn};
pub use serving::State;

use preface::{Preface, Step};
use serving::Serving;

/// Readiness reported by the loop for one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    /// The socket may have data (or EOF, or an error) to read.
    pub readable: bool,
    /// The socket may accept more output.
    pub writable: bool,
    /// The peer's FIN or an error is already queued (`EPOLLRDHUP`, `EPOLLHUP`, `EPOLLERR`).
    /// Data and FIN often arrive under one edge; after this, a short read no longer proves
    /// the queue empty, so the connection reads on until `0` or an error.
    pub closed: bool,
    /// TCP urgent data is queued (`EPOLLPRI`: the peer sent with `MSG_OOB`). A read stops
    /// short at the urgent mark even with more data behind it, so until a read says
    /// `WouldBlock` a short read proves nothing.
    pub urgent: bool,
}

impl Ready {
    /// No new readiness: a turn from the run queue.
    pub const NONE: Ready = Ready {
        readable: false,
        writable: false,
        closed: false,
        urgent: false,
    };
}

/// Whether a short read (fewer bytes than asked for) proves a stream socket's receive queue
/// empty, so that the drain may end without the extra `read()` that would say `WouldBlock`.
///
/// mio promises only "read until `WouldBlock`". The shortcut rests on what epoll does
/// beneath it, and holds under three conditions, each kept elsewhere: the read stopped
/// because the queue ran out, not at the peer's FIN queued behind the data ([`Ready::closed`]),
/// not at a TCP urgent mark ([`Ready::urgent`]: a read never crosses the mark in one go, even
/// with `SO_OOBINLINE`), and not with input a layer holds above the socket
/// ([`Socket::holds_input`]); and a later arrival raises a new edge. Only on Linux does mio
/// report urgent data (`Interest::PRIORITY`, `EPOLLPRI`); elsewhere (kqueue) the connection
/// reads until `WouldBlock`, as mio documents.
pub const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Nothing more to do until the next readiness event or deadline.
    Wait,
    /// The budget ran out with work left: run again next turn, without waiting for an event.
    Again,
    /// The connection is over; drop it.
    Closed(CloseReason),
}

/// What the loop lends a connection for one turn.
pub struct Context<'a> {
    /// The loop's time for this turn.
    pub now: Time,
    /// Watermarks, budget and timeouts.
    pub limits: &'a Limits,
    /// The loop's shared read buffer: every read lands here first, so an idle connection owns
    /// no read buffer.
    pub scratch: &'a mut [u8],
    /// The loop's shared output buffer: a service's reply is written here and flushed to the
    /// socket at once; only the part the kernel did not take is copied to the connection.
    pub out_scratch: &'a mut Buffer,
    /// A reply recorded by reference instead of copied (echo's input, chargen's pattern),
    /// between the service hook and the flush that writes it.
    pub(crate) out_borrowed: Option<Borrowed>,
    /// Counters.
    pub stats: &'a Stats,
    /// Handshake steps the loop still allows in this turn, shared by every connection: a
    /// connection in a handshake stage takes one for each turn that reads (one flight of the
    /// client's), and yields to the next turn when none is left — so a burst of new TLS
    /// clients cannot stall established connections. Zero while the loop dispatches
    /// events: handshakes then run from the run queue, in the order they became ready.
    pub handshakes: &'a mut usize,
}

/// The socket, and what is remembered of its readiness: the connection's in every phase.
pub(crate) struct Io<S> {
    pub(crate) socket: S,
    /// Serial number, for logs.
    pub(crate) id: u64,
    /// The last read or write that moved bytes: the idle timeout counts from here.
    pub(crate) last_active: Time,
    /// Readable edge seen and the socket not yet drained.
    pub(crate) read_ready: bool,
    /// A write came up short; wait for a writable edge before writing again.
    pub(crate) write_blocked: bool,
    /// The poller reported the peer's FIN or an error: read to the end regardless of short
    /// reads. Sticky, like the condition it reports.
    pub(crate) peer_closing: bool,
    /// The poller reported urgent data: read until `WouldBlock` regardless of short reads,
    /// which stop at the urgent mark. Cleared by `WouldBlock`: the queue is then empty, and
    /// the next urgent byte raises an edge of its own.
    pub(crate) urgent: bool,
}

/// What one read gave.
pub(crate) enum Read {
    /// This many bytes.
    Data(usize),
    /// The peer's FIN (`read() == 0`).
    Fin,
    /// Nothing now (`WouldBlock`).
    Drained,
    /// An error that ends the connection.
    Failed(CloseReason),
}

impl<S: Socket> Io<S> {
    fn new(socket: S, id: u64, now: Time) -> Io<S> {
        Io {
            socket,
            id,
            last_active: now,
            read_ready: false,
            write_blocked: false,
            peer_closing: false,
            urgent: false,
        }
    }

    /// Remembers what the poller reported.
    #[inline]
    fn note(&mut self, ready: Ready) {
        if ready.writable {
            self.write_blocked = false;
        }
        if ready.readable || ready.closed || ready.urgent {
            self.read_ready = true;
        }
        self.peer_closing |= ready.closed;
        self.urgent |= ready.urgent;
    }

    /// Reads once into `buf` (retrying `Interrupted`), and keeps `read_ready` true only while
    /// more may be waiting. `phase` names where the connection is, for the log line of an
    /// unexpected error.
    #[inline]
    pub(crate) fn read(&mut self, buf: &mut [u8], now: Time, phase: &dyn fmt::Display) -> Read {
        loop {
            match self.socket.read(buf) {
                Ok(0) => {
                    self.read_ready = false;
                    return Read::Fin;
                }
                Ok(n) => {
                    self.last_active = now;
                    let proves_empty = SHORT_READ_DRAINS
                        && !self.peer_closing
                        && !self.urgent
                        && !self.socket.holds_input();
                    if n < buf.len() && proves_empty {
                        // A short read took all the kernel had, and epoll raises a new edge
                        // for anything that arrives after it: no read() is spent just to see
                        // WouldBlock. Not mio's promise but epoll's, and only for the socket's
                        // own queue read to its end (see SHORT_READ_DRAINS): a FIN reported
                        // with the data, an urgent mark, or input a layer (TLS) holds keeps
                        // the read going.
                        self.read_ready = false;
                    }
                    return Read::Data(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_ready = false;
                    self.urgent = false;
                    return Read::Drained;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Read::Failed(self.error("read", &e, phase)),
            }
        }
    }

    /// Sends our FIN — through a layer, after what it sends first (TLS's `close_notify`). A
    /// layer whose goodbye does not fit in the socket now says `WouldBlock`: it keeps the FIN
    /// queued behind the goodbye (pending output), and a flush on the writable edge sends
    /// both. Calling this again is harmless.
    pub(crate) fn send_fin(&mut self) {
        match self.socket.shutdown_write() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
            // The peer may already have reset; the close that follows is all that is left.
            Err(e) => debug!("conn {}: shutdown(Write) failed: {e}", self.id),
        }
    }

    /// Classifies a socket error and logs it once.
    pub(crate) fn error(&self, op: &str, e: &io::Error, phase: &dyn fmt::Display) -> CloseReason {
        use io::ErrorKind::*;
        match e.kind() {
            // NotConnected: `shutdown` on a socket the peer has reset (a layer's FIN waits
            // behind its goodbye, so it may come after the reset arrived).
            ConnectionReset | BrokenPipe | ConnectionAborted | NotConnected => {
                debug!("conn {}: {op}: peer reset ({e})", self.id);
                CloseReason::Reset
            }
            InvalidData => {
                // Only a layer (TLS) says this: it refused the peer's bytes, and the alert
                // it owes the peer is on its way. Whoever knows the layer says why: the
                // handshake stage, or the loop as the connection closes.
                debug!("conn {}: {op} in state {phase}: {e}", self.id);
                CloseReason::Tls
            }
            _ => {
                warn!("conn {}: {op} failed in state {phase}: {e}", self.id);
                CloseReason::Error
            }
        }
    }
}

/// Which room the connection is in.
enum Phase {
    /// The stages before serving; boxed, so a plain connection does not carry them.
    Preface(Box<Preface>),
    /// The service exists.
    Serving(Serving),
}

/// One connection: the stages before serving, then serving. See the
/// [module documentation](self).
pub struct Connection<S> {
    io: Io<S>,
    phase: Phase,
}

impl<S: Socket> Connection<S> {
    /// A new connection in the `Open` state, serving `service` from the first byte. Call
    /// [`Connection::open`] next.
    pub fn new(socket: S, service: Box<dyn Service>, id: u64, now: Time) -> Connection<S> {
        Connection {
            io: Io::new(socket, id, now),
            phase: Phase::Serving(Serving::new(service, Buffer::new())),
        }
    }

    /// A new connection that reads a PROXY protocol header before its service exists. Call
    /// [`Connection::open`] next.
    pub fn behind_proxy(socket: S, unborn: Unborn, id: u64, now: Time) -> Connection<S> {
        let stages = Stages {
            proxy_header: true,
            handshake: false,
        };
        Connection::with_stages(socket, unborn, stages, id, now)
    }

    /// A new connection whose service exists only after `stages`: a PROXY header, then the
    /// socket layer's handshake (TLS), in that order on the wire. Call [`Connection::open`]
    /// next.
    pub fn with_stages(
        socket: S,
        unborn: Unborn,
        stages: Stages,
        id: u64,
        now: Time,
    ) -> Connection<S> {
        Connection {
            io: Io::new(socket, id, now),
            phase: Phase::Preface(Box::new(Preface::new(unborn, stages, now))),
        }
    }

    /// Gives the connection its faults (chosen at accept by its listener's): they act on what
    /// the service says, after any stage before serving (a PROXY header).
    pub(crate) fn set_faults(&mut self, faults: Box<ConnFaults>) {
        match &mut self.phase {
            Phase::Serving(s) => s.set_faults(faults),
            Phase::Preface(p) => p.faults = Some(faults),
        }
    }

    /// The serial number given at creation (unique per loop, never reused).
    pub fn id(&self) -> u64 {
        self.io.id
    }

    /// The serving state (`Open` while a stage before serving runs).
    pub fn state(&self) -> State {
        match &self.phase {
            Phase::Serving(s) => s.state(),
            Phase::Preface(_) => State::Open,
        }
    }

    /// Bytes waiting for the kernel to accept them: the service's, and a layer's own.
    pub fn pending_output(&self) -> usize {
        let own = match &self.phase {
            Phase::Serving(s) => s.pending_output(),
            Phase::Preface(_) => 0,
        };
        own + self.io.socket.pending_output()
    }

    /// Bytes read that the service has not consumed yet (a partial request, or input held
    /// for output room); zero before serving. For the fuzz targets' bound on held input.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn held_input(&self) -> usize {
        match &self.phase {
            Phase::Serving(s) => s.held_input(),
            Phase::Preface(_) => 0,
        }
    }

    /// Heap bytes held by this connection beyond its own size: what waits (bytes in either
    /// direction, the clocks that watch them) or a stage before serving. Zero when idle.
    pub fn buffered_capacity(&self) -> usize {
        match &self.phase {
            Phase::Serving(s) => s.buffered_capacity(),
            Phase::Preface(p) => p.buffered_capacity(),
        }
    }

    /// The socket, for the loop's registration.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.io.socket
    }

    /// The socket, for what the loop asks of a layer as the connection closes.
    pub fn socket(&self) -> &S {
        &self.io.socket
    }

    /// Starts the connection: a served one greets its peer ([`Service::on_connect`]) and
    /// writes what that produced; one with stages before serving waits for their bytes.
    pub fn open(&mut self, cx: &mut Context<'_>) -> Turn {
        match &mut self.phase {
            Phase::Serving(s) => s.open(&mut self.io, cx, cx.limits.read_budget),
            Phase::Preface(_) => Turn::Wait,
        }
    }

    /// Runs one turn with the readiness the poller reported ([`Ready::NONE`] from the run
    /// queue).
    pub fn turn(&mut self, cx: &mut Context<'_>, ready: Ready) -> Turn {
        self.io.note(ready);
        let mut budget = cx.limits.read_budget;
        let step = match &mut self.phase {
            Phase::Serving(s) => return s.turn(&mut self.io, cx, budget),
            Phase::Preface(p) => p.turn(&mut self.io, cx, &mut budget),
        };
        match step {
            Step::Wait => Turn::Wait,
            Step::Again => Turn::Again,
            Step::Closed(reason) => Turn::Closed(reason),
            Step::Serve { service, input } => {
                // The stages are done: the service takes over, in the same turn, with what is
                // left of its budget.
                let mut serving = Serving::new(service, input);
                if let Phase::Preface(p) = &mut self.phase {
                    if let Some(faults) = p.faults.take() {
                        serving.set_faults(faults);
                    }
                }
                let turn = serving.open(&mut self.io, cx, budget);
                self.phase = Phase::Serving(serving);
                turn
            }
        }
    }

    /// Starts a graceful close on server shutdown: the service is done, pending output is
    /// flushed, then FIN and lingering close. A connection still before serving closes the
    /// same way, with no service to ask.
    pub fn shut_down(&mut self, cx: &mut Context<'_>) -> Turn {
        match &mut self.phase {
            Phase::Serving(s) => s.shut_down(&mut self.io, cx),
            Phase::Preface(_) => {
                let mut serving = Serving::finished();
                let turn = serving.shut_down(&mut self.io, cx);
                self.phase = Phase::Serving(serving);
                turn
            }
        }
    }

    /// Closes at once with RST (drain deadline).
    pub fn abort(&mut self, now: Time) {
        self.io.socket.set_abortive();
        if let Phase::Serving(s) = &mut self.phase {
            s.set_state(&self.io, State::Closed, now);
        }
    }

    /// The next time this connection needs attention without an event: its deadline in the
    /// current phase.
    pub fn deadline(&self, limits: &Limits) -> Option<Time> {
        match &self.phase {
            Phase::Serving(s) => s.deadline(&self.io, limits),
            Phase::Preface(p) => p.deadline(&self.io, limits),
        }
    }

    /// The loop's timer came due: closes the connection if one of its deadlines has passed.
    /// A stale entry (armed before a change) never closes it for the wrong reason: each
    /// phase applies exactly the rules of its own deadline.
    pub fn on_deadline(&mut self, cx: &mut Context<'_>) -> Turn {
        match &mut self.phase {
            Phase::Serving(s) => s.on_deadline(&mut self.io, cx),
            Phase::Preface(p) => match p.on_deadline(&mut self.io, cx) {
                Some(reason) => Turn::Closed(reason),
                None => Turn::Wait,
            },
        }
    }

    /// The readiness to register for, derived from the phase and its state; never tracked by
    /// hand. Both halves are `false` when nothing is wanted (a connection that only waits for
    /// its peer to read, or for the run queue).
    pub fn want(&self) -> Want {
        match &self.phase {
            Phase::Serving(s) => s.want(&self.io),
            Phase::Preface(p) => p.want(&self.io),
        }
    }
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Connection");
        d.field("id", &self.io.id);
        match &self.phase {
            Phase::Serving(s) => d.field("serving", s),
            Phase::Preface(_) => d.field("serving", &"not yet"),
        };
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
