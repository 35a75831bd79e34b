//! The life of one connection: a state machine driven by readiness.
//!
//! **Read this first.** The loop calls [`Connection::turn`] when the socket became readable
//! or writable, or when the connection is on the run queue because it used up its budget. A
//! turn does three things, in this order, and then reports whether the connection wants to
//! wait for the next event, run again next turn, or is closed:
//!
//! 1. **Flush** pending output. Writing first frees room, so step 2 is not paused needlessly,
//!    and keeps bytes in order.
//! 2. **Read** until the socket is drained, the per-turn budget is spent, or output reached
//!    the high watermark (backpressure). Every read is handed to the service at once and its
//!    reply written at once ("write eagerly").
//! 3. **Produce**: while output is below the low watermark, let a streaming service add more
//!    ([`Service::on_drained`]). This comes *after* reading: a producer that refilled first
//!    would push output back to the high watermark on every drain, reading would stay paused,
//!    and the peer's FIN would never be seen.
//!
//! Edge-triggered readiness is reported once, so the connection *remembers* it: `read_ready`
//! stays set until a read returns `WouldBlock` or a short count, and `write_blocked` stays set
//! from a short write until the next writable event. A turn that stops with work left
//! returns [`Turn::Again`] and the loop runs it next turn without waiting for an event.
//!
//! # States
//!
//! Named after what they mean on the wire:
//!
//! ```text
//!             peer FIN (read() == 0)
//!   Open ───────────────────────────────▶ CloseWait ──(service finished, output flushed,
//!    │                                        ▲         shutdown(Write))──▶ Closed
//!    │ service finished / server draining     │ peer FIN
//!    ▼                                        │
//!   Closing ──(output flushed, shutdown(Write))──▶ Lingering ──(peer FIN, or linger
//!   (input discarded)                               (input discarded)  timeout)──▶ Closed
//! ```
//!
//! * **Open** — both directions carry data.
//! * **CloseWait** — the peer finished sending. The service may still produce; once it has
//!   finished and every byte is flushed, we send our FIN and close. Closing here cannot reset:
//!   the peer sends nothing after its FIN, so no unread data is left behind.
//! * **Closing** — we finished (the service called [`Output::finish`], or the server is
//!   draining). Pending output is flushed before our FIN; input is read and discarded so a
//!   peer blocked on writing can get on to reading.
//! * **Lingering** — our FIN is sent. Keep reading and discarding until the peer's FIN, so the
//!   kernel never closes with unread data (which sends RST and can destroy the reply we just
//!   sent before the peer reads it), or until the linger timeout.
//! * **Closed** — terminal; the loop drops the socket.
//!
//! Every transition goes through `set_state`, which logs it at `trace` level.
//!
//! # Behind a proxy
//!
//! On a listener that reads the PROXY protocol ([`crate::proxy`]), a connection starts
//! without a service: `Stage::Header` holds what will create it. Reads collect the header
//! (bounded by the protocol's size limits, and by the header timeout from accept), the service
//! is created with the addresses the header names, greeted, and offered the bytes that came
//! after the header in the same read. A header that is refused, late, or cut short by the
//! peer's FIN closes the connection before any service sees a byte.
//!
//! Errors stay local: `WouldBlock` waits, `Interrupted` retries, a reset closes quietly, and
//! anything else closes this connection with one log line.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, trace, warn};

use crate::buffer::Buffer;
use crate::config::Limits;
use crate::proxy::{self, Origin, Parse, Refusal};
use crate::service::{Borrowed, ConnInfo, Output, Service, ServiceFactory};
pub use crate::socket::{Socket, Want};
use crate::stats::{CloseReason, Stats};
use crate::timer::{Time, TimerSlot};

/// Where the connection is in its life. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Both directions open.
    Open,
    /// The peer finished sending; flushing our side.
    CloseWait,
    /// We finished; flushing before our FIN, discarding input.
    Closing,
    /// Our FIN is sent; discarding input until the peer's FIN or the linger timeout.
    Lingering,
    /// Done.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Open => "OPEN",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::Lingering => "LINGERING",
            State::Closed => "CLOSED",
        })
    }
}

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
}

impl Ready {
    /// No new readiness: a turn from the run queue.
    pub const NONE: Ready = Ready {
        readable: false,
        writable: false,
        closed: false,
    };
}

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
}

/// Whether the connection has its service yet.
enum Stage {
    /// Waiting for the PROXY protocol header; the service is created once it is in.
    Header(Box<Unborn>),
    /// Served.
    Serving(Box<dyn Service>),
}

/// What creates a proxied connection's service once its header names the client: a
/// [`ConnInfo`] with owned parts.
pub struct Unborn {
    /// The listener's service factory.
    pub factory: Arc<dyn ServiceFactory>,
    /// The socket's peer: the proxy.
    pub peer: SocketAddr,
    /// The listener's address.
    pub listener: SocketAddr,
    /// The loop's number.
    pub loop_index: usize,
    /// `--server-id`.
    pub server_id: Arc<str>,
    /// The endpoint's counters.
    pub stats: Arc<Stats>,
}

impl Unborn {
    fn service(&self, origin: Origin) -> Box<dyn Service> {
        let proxied = match origin {
            Origin::Client(p) => Some(p),
            Origin::Proxy => None,
        };
        self.factory.new_service(&ConnInfo {
            peer: self.peer,
            proxied,
            listener: self.listener,
            loop_index: self.loop_index,
            server_id: &self.server_id,
            stats: &self.stats,
        })
    }
}

/// One connection's state machine. See the [module documentation](self).
pub struct Connection<S> {
    socket: S,
    stage: Stage,
    /// Serial number, for logs.
    id: u64,
    state: State,
    /// Bytes read that the service has not consumed yet (a partial request).
    input: Buffer,
    /// Bytes written by the service that the kernel has not accepted yet.
    output: Buffer,
    /// The last read or write that moved bytes.
    last_active: Time,
    /// The last write the kernel accepted bytes from, or when output started pending.
    last_progress: Time,
    /// When the current state was entered.
    since: Time,
    /// The loop's timer entry for this connection.
    pub(crate) timer: TimerSlot,
    /// Readable edge seen and the socket not yet drained.
    read_ready: bool,
    /// A write came up short; wait for a writable edge before writing again.
    write_blocked: bool,
    /// The poller reported the peer's FIN or an error: read to the end regardless of short
    /// reads. Sticky, like the condition it reports.
    peer_closing: bool,
    /// Reading stopped because output reached the high watermark.
    paused: bool,
    /// The service left input unconsumed because its output had no room (the output
    /// contract): the held input is offered again as soon as output drains, without waiting
    /// for a read, because a peer that has sent everything raises no new edge.
    held_for_room: bool,
    /// When the partial request now held began arriving, for the request timeout.
    partial_since: Option<Time>,
    /// The service has produced its last byte.
    finished: bool,
}

impl<S: Socket> Connection<S> {
    /// A new connection in the `Open` state. Call [`Connection::open`] next.
    pub fn new(socket: S, service: Box<dyn Service>, id: u64, now: Time) -> Connection<S> {
        Connection::with_stage(socket, Stage::Serving(service), id, now)
    }

    /// A new connection that reads a PROXY protocol header before its service exists. Call
    /// [`Connection::open`] next.
    pub fn behind_proxy(socket: S, unborn: Unborn, id: u64, now: Time) -> Connection<S> {
        Connection::with_stage(socket, Stage::Header(Box::new(unborn)), id, now)
    }

    fn with_stage(socket: S, stage: Stage, id: u64, now: Time) -> Connection<S> {
        Connection {
            socket,
            stage,
            id,
            state: State::Open,
            input: Buffer::new(),
            output: Buffer::new(),
            last_active: now,
            last_progress: now,
            since: now,
            timer: TimerSlot::default(),
            read_ready: false,
            write_blocked: false,
            peer_closing: false,
            paused: false,
            held_for_room: false,
            partial_since: None,
            finished: false,
        }
    }

    /// The serial number given at creation (unique per loop, never reused).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes waiting for the kernel to accept them.
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    /// Heap bytes held by this connection's buffers (zero when idle).
    pub fn buffered_capacity(&self) -> usize {
        self.input.capacity() + self.output.capacity()
    }

    /// The socket, for the loop's registration.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// Greets the peer: calls [`Service::on_connect`] and writes what it produced.
    ///
    /// A greeting is flushed, and a streaming service keeps producing, in this same turn:
    /// if the kernel takes everything, no writable edge would ever come to ask again.
    pub fn open(&mut self, cx: &mut Context<'_>) -> Turn {
        let mut budget = cx.limits.read_budget;
        let flow = self.greet(cx, &mut budget);
        self.end_turn(cx, flow, budget)
    }

    /// Runs one turn. See the [module documentation](self).
    pub fn turn(&mut self, cx: &mut Context<'_>, ready: Ready) -> Turn {
        if ready.writable {
            self.write_blocked = false;
        }
        if ready.readable || ready.closed {
            self.read_ready = true;
        }
        self.peer_closing |= ready.closed;
        let mut budget = cx.limits.read_budget;
        let flow = self.work(cx, &mut budget);
        self.end_turn(cx, flow, budget)
    }

    /// Starts a graceful close on server shutdown: the service is done, pending output is
    /// flushed, then FIN and lingering close.
    pub fn shut_down(&mut self, cx: &mut Context<'_>) -> Turn {
        self.finished = true;
        if self.state == State::Open {
            self.set_state(State::Closing, cx.now);
        }
        let mut budget = cx.limits.read_budget;
        let flow = self.work(cx, &mut budget);
        self.end_turn(cx, flow, budget)
    }

    /// Closes at once with RST (drain deadline).
    pub fn abort(&mut self, now: Time) {
        self.socket.set_abortive();
        self.set_state(State::Closed, now);
    }

    /// The next time this connection needs attention without an event: the linger, write-stall
    /// or idle deadline, whichever is first.
    pub fn deadline(&self, limits: &Limits) -> Option<Time> {
        match self.state {
            State::Closed => None,
            State::Lingering => Some(self.since.after(limits.linger_timeout)),
            _ => {
                let idle = limits.idle_timeout.map(|d| self.last_active.after(d));
                let stall = limits
                    .write_stall_timeout
                    .filter(|_| !self.output.is_empty())
                    .map(|d| self.last_progress.after(d));
                let request = self
                    .request_started()
                    .zip(limits.request_timeout)
                    .map(|(since, d)| since.after(d));
                let header = self.header_deadline(limits);
                [idle, stall, request, header].into_iter().flatten().min()
            }
        }
    }

    /// When the partial request the connection holds began, if the request timeout applies:
    /// only in `Open`, and not while the input waits for output room (the write-stall
    /// timeout covers a peer that does not read).
    fn request_started(&self) -> Option<Time> {
        self.partial_since
            .filter(|_| self.state == State::Open && !self.held_for_room)
    }

    /// The PROXY header's deadline, while one is awaited: the header timeout from accept
    /// (when `Open` was entered, as it is never left while the header is awaited).
    fn header_deadline(&self, limits: &Limits) -> Option<Time> {
        let awaited = matches!(self.stage, Stage::Header(_)) && self.state == State::Open;
        awaited.then(|| self.since.after(limits.proxy_timeout))
    }

    /// The loop's timer came due: closes the connection if one of its deadlines has passed.
    /// Applies exactly the rules of [`Connection::deadline`] for the current state, so a
    /// stale entry (armed before a state change) can never close it for the wrong reason.
    ///
    /// Each reason ends the connection its own way (the table is in `docs/05-closing.md`):
    /// lingering ends with a plain close; a write stall and a request timeout reset (the peer
    /// stopped reading, or is too slow to send, and no reply is owed); the idle timeout closes
    /// with FIN (a quiet peer has nothing unread to be reset over).
    pub fn on_deadline(&mut self, cx: &mut Context<'_>) -> Turn {
        let (now, l) = (cx.now, cx.limits);
        let expired = |since: Time, d: Option<Duration>| d.is_some_and(|d| now >= since.after(d));
        if self.header_deadline(l).is_some_and(|until| now >= until) {
            warn!(
                "conn {}: PROXY header incomplete after {:?} ({} bytes); closing",
                self.id,
                l.proxy_timeout,
                self.input.len()
            );
            Stats::incr(&cx.stats.proxy_timeout);
            return self.close(CloseReason::Proxy, now);
        }
        let reason = match self.state {
            State::Closed => None,
            State::Lingering => expired(self.since, Some(l.linger_timeout)).then(|| {
                debug!(
                    "conn {}: peer did not finish within the linger timeout",
                    self.id
                );
                CloseReason::LingerTimeout
            }),
            _ if !self.output.is_empty() && expired(self.last_progress, l.write_stall_timeout) => {
                debug!(
                    "conn {}: {} bytes pending, none accepted for the write-stall timeout; aborting",
                    self.id,
                    self.output.len()
                );
                self.socket.set_abortive();
                Some(CloseReason::WriteStall)
            }
            _ if self
                .request_started()
                .is_some_and(|since| expired(since, l.request_timeout)) =>
            {
                // Nothing here for a lingering close to protect: the request was never
                // answered, and the replies to earlier ones left at least the request timeout
                // ago. Lingering would keep the slot while the peer goes on trickling — the
                // very client this timeout is for — so the slot is freed now, with RST.
                info!(
                    "conn {}: request incomplete after {:?} ({} bytes held); resetting",
                    self.id,
                    l.request_timeout.unwrap_or_default(),
                    self.input.len()
                );
                self.socket.set_abortive();
                Some(CloseReason::RequestTimeout)
            }
            _ => expired(self.last_active, l.idle_timeout).then(|| {
                debug!("conn {}: idle timeout", self.id);
                CloseReason::Idle
            }),
        };
        match reason {
            Some(reason) => self.close(reason, now),
            None => Turn::Wait,
        }
    }

    /// The readiness to register for, derived from the state. `None` when nothing is wanted
    /// (closed, or waiting only on the run queue).
    pub fn want(&self) -> Want {
        let read = match self.state {
            State::Open => !self.paused,
            State::Closing | State::Lingering => true,
            State::CloseWait | State::Closed => false,
        };
        Want {
            read,
            write: !self.output.is_empty() && self.state != State::Closed,
        }
    }

    /// The single choke point for state changes.
    fn set_state(&mut self, next: State, now: Time) {
        trace!("conn {}: state={}=>{}", self.id, self.state, next);
        self.state = next;
        self.since = now;
    }

    fn close(&mut self, reason: CloseReason, now: Time) -> Turn {
        self.set_state(State::Closed, now);
        Turn::Closed(reason)
    }

    fn end_turn(
        &mut self,
        cx: &Context<'_>,
        flow: ControlFlow<CloseReason>,
        budget: usize,
    ) -> Turn {
        match flow {
            Break(reason) => self.close(reason, cx.now),
            Continue(()) if budget == 0 && self.has_more_work(cx.limits) => Turn::Again,
            Continue(()) => Turn::Wait,
        }
    }

    fn has_more_work(&self, limits: &Limits) -> bool {
        (self.read_ready && self.want().read) || self.may_produce(limits) || self.may_offer()
    }

    /// Held input waits only for output room, and there is room again.
    fn may_offer(&self) -> bool {
        self.held_for_room && !self.paused && self.state == State::Open
    }

    fn may_produce(&self, limits: &Limits) -> bool {
        matches!(self.state, State::Open | State::CloseWait)
            && !self.finished
            && !self.write_blocked
            && self.output.len() < limits.low_watermark
    }

    fn greet(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> ControlFlow<CloseReason> {
        self.call_service(cx, 0, |service, _, out| service.on_connect(out))?;
        self.work(cx, budget)
    }

    /// Flush, read, produce; then see whether a closing state can move on.
    fn work(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> ControlFlow<CloseReason> {
        self.flush(cx)?;
        self.read(cx, budget)?;
        self.produce(cx, budget)?;
        self.advance_close(cx, budget)
    }

    /// Lets a streaming service refill output while it is below the low watermark and the
    /// socket keeps taking it, up to the turn's budget.
    fn produce(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> ControlFlow<CloseReason> {
        while *budget > 0 && self.may_produce(cx.limits) {
            let produced = self.call_service(cx, 0, |service, _, out| service.on_drained(out))?;
            self.flush(cx)?;
            if produced == 0 {
                if self.state == State::CloseWait && !self.finished {
                    // The peer is gone and the service has nothing more to say: without this
                    // the connection would wait for an event that never comes.
                    self.finished = true;
                }
                break;
            }
            *budget = budget.saturating_sub(produced);
        }
        Continue(())
    }

    /// Reads until drained, out of budget, or paused by backpressure. Input held back for
    /// output room is offered again first, and nothing more is read while it waits: the
    /// held input stays bounded by one read.
    fn read(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> ControlFlow<CloseReason> {
        loop {
            self.offer_held(cx, budget)?;
            if !(self.read_ready && self.want().read && *budget > 0) || self.held_for_room {
                return Continue(());
            }
            // Input for the service: never read more than output has room for, so the echo of
            // one read cannot push pending output past the high watermark. Input that is only
            // discarded (closing, lingering) needs no room.
            let room = match self.state {
                State::Open => cx.limits.high_watermark.saturating_sub(self.output.len()),
                _ => usize::MAX,
            };
            let want = cx.scratch.len().min(*budget).min(room);
            if want == 0 {
                // Output is at the high watermark (a reply may overshoot it by its own
                // length); flush has paused reading.
                return Continue(());
            }
            match self.socket.read(&mut cx.scratch[..want]) {
                Ok(0) => {
                    self.read_ready = false;
                    return self.on_peer_fin(cx);
                }
                Ok(n) => {
                    *budget -= n;
                    self.last_active = cx.now;
                    self.deliver(cx, n)?;
                    if n < want && !self.peer_closing {
                        // A short read means the receive queue is empty; new data will raise
                        // a new edge, so do not spend a read() just to see WouldBlock.
                        self.read_ready = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Break(self.io_error("read", &e)),
            }
        }
    }

    /// Offers input the service held back for lack of output room again, while there is
    /// room and budget. Each byte the service consumes counts against the budget as if it
    /// had just been read.
    fn offer_held(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> ControlFlow<CloseReason> {
        while self.may_offer() && *budget > 0 {
            let consumed = self.deliver(cx, 0)?;
            *budget = budget.saturating_sub(consumed);
            if consumed == 0 {
                break;
            }
        }
        Continue(())
    }

    /// Hands `n` freshly read bytes in the scratch buffer to the service, after any input
    /// it holds, or drops them if the service is done. Returns how many bytes the service
    /// consumed. `n == 0` offers the held input again.
    fn deliver(&mut self, cx: &mut Context<'_>, n: usize) -> ControlFlow<CloseReason, usize> {
        if self.state != State::Open {
            Stats::add(&cx.stats.bytes_discarded, n as u64);
            return Continue(0);
        }
        if matches!(self.stage, Stage::Header(_)) {
            return self.read_header(cx, n);
        }
        Stats::add(&cx.stats.bytes_in, n as u64);
        let mut used = 0;
        let mut out_of_room = false;
        // On the fast path the reply may refer to the fresh input where it lies (echo).
        let fresh = if self.input.is_empty() { n } else { 0 };
        self.call_service(cx, fresh, |service, input, out| {
            let fresh = &input.scratch[..n];
            if input.held.is_empty() {
                // Fast path: the service reads straight from the loop's scratch buffer, and
                // only an unconsumed tail (a partial request) is copied to the connection.
                used = service.on_input(fresh, out);
                input.held.extend(&fresh[used..]);
            } else {
                input.held.extend(fresh);
                used = service.on_input(input.held.as_slice(), out);
                input.held.consume(used);
            }
            out_of_room = out.room() == 0;
        })?;
        // Input left over with no room for its replies waits for room, not for more bytes.
        self.held_for_room = out_of_room && !self.input.is_empty() && !self.finished;
        if self.input.is_empty() {
            self.partial_since = None;
        } else if used > 0 || self.partial_since.is_none() {
            self.partial_since = Some(cx.now);
        }
        // Flush before judging the input: the reply lies in the loop's shared buffers, which
        // must be empty again before any other connection's turn.
        self.flush(cx)?;
        let limit = match &self.stage {
            Stage::Serving(service) => service.input_limit(),
            Stage::Header(_) => None,
        }
        .unwrap_or(cx.limits.high_watermark);
        if self.input.len() > limit && !self.held_for_room {
            warn!(
                "conn {}: service left {} bytes of input unconsumed (limit {limit}); closing",
                self.id,
                self.input.len(),
            );
            return Break(CloseReason::Protocol);
        }
        Continue(used)
    }

    /// Collects the PROXY protocol header from `n` fresh bytes. Once it is complete, creates
    /// the service, greets the peer, and offers it what followed the header.
    fn read_header(&mut self, cx: &mut Context<'_>, n: usize) -> ControlFlow<CloseReason, usize> {
        // Headers are short (at most a few hundred bytes in practice, and bounded by the
        // protocol's limits): collecting them in the connection's buffer costs one small copy.
        self.input.extend(&cx.scratch[..n]);
        let (len, version, origin) = match proxy::parse(self.input.as_slice()) {
            Parse::Incomplete => return Continue(n),
            Parse::Refused(refusal) => {
                warn!("conn {}: {refusal}; closing", self.id);
                let counter = match refusal {
                    Refusal::Malformed(_) => &cx.stats.proxy_malformed,
                    Refusal::TooLong { .. } => &cx.stats.proxy_too_long,
                };
                Stats::incr(counter);
                return Break(CloseReason::Proxy);
            }
            Parse::Done {
                len,
                version,
                origin,
            } => (len, version, origin),
        };
        let Stage::Header(unborn) = &self.stage else {
            unreachable!("read_header runs only while the header is awaited")
        };
        match origin {
            Origin::Client(p) => {
                Stats::incr(&cx.stats.proxy_proxied);
                debug!(
                    "conn {}: PROXY v{version}: client {} to {}",
                    self.id, p.source, p.destination
                );
            }
            Origin::Proxy => {
                Stats::incr(&cx.stats.proxy_local);
                debug!(
                    "conn {}: PROXY v{version}: the proxy's own connection",
                    self.id
                );
            }
        }
        let service = unborn.service(origin);
        self.stage = Stage::Serving(service);
        self.input.consume(len);
        // What followed the header is the client's first bytes: counted now, offered after
        // the greeting, as if they had just been read.
        Stats::add(&cx.stats.bytes_in, self.input.len() as u64);
        self.call_service(cx, 0, |service, _, out| service.on_connect(out))?;
        self.flush(cx)?;
        if !self.input.is_empty() {
            self.deliver(cx, 0)?;
        }
        Continue(n)
    }

    /// The peer sent FIN.
    fn on_peer_fin(&mut self, cx: &mut Context<'_>) -> ControlFlow<CloseReason> {
        if matches!(self.stage, Stage::Header(_)) && self.state == State::Open {
            let held = self.input.len();
            if held == 0 {
                // A proxy's plain TCP health check connects and closes without a header.
                debug!("conn {}: closed before sending a PROXY header", self.id);
            } else {
                warn!(
                    "conn {}: closed after {held} bytes of an incomplete PROXY header",
                    self.id
                );
            }
            Stats::incr(&cx.stats.proxy_truncated);
            return Break(CloseReason::Proxy);
        }
        match self.state {
            State::Open => {
                self.set_state(State::CloseWait, cx.now);
                self.call_service(cx, 0, |service, _, out| service.on_peer_finished(out))?;
                self.flush(cx)
            }
            // We were flushing our last bytes; the peer is done too, so no lingering needed.
            State::Closing => {
                self.set_state(State::CloseWait, cx.now);
                Continue(())
            }
            // The peer acknowledged our FIN with its own: a clean server-side close.
            State::Lingering => Break(CloseReason::Server),
            State::CloseWait | State::Closed => Continue(()),
        }
    }

    /// Moves a closing connection on once its output is flushed. The read after our FIN
    /// spends what is left of the turn's budget, so a turn that stops there with data left
    /// is run again.
    fn advance_close(
        &mut self,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> ControlFlow<CloseReason> {
        if !self.output.is_empty() {
            return Continue(());
        }
        match self.state {
            State::CloseWait if self.finished => {
                self.send_fin();
                Break(CloseReason::Peer)
            }
            State::Closing => {
                self.send_fin();
                self.set_state(State::Lingering, cx.now);
                // The peer's FIN may already be queued behind data we have not read.
                self.read_ready = true;
                self.read(cx, budget)
            }
            _ => Continue(()),
        }
    }

    fn send_fin(&mut self) {
        if let Err(e) = self.socket.shutdown_write() {
            // The peer may already have reset; the close that follows is all that is left.
            debug!("conn {}: shutdown(Write) failed: {e}", self.id);
        }
    }

    /// Calls a service hook with an output sink, then applies `finish()`. `fresh` bytes at
    /// the start of the read buffer are the hook's input and may be sent by reference.
    /// Returns the bytes the hook wrote.
    fn call_service<F>(
        &mut self,
        cx: &mut Context<'_>,
        fresh: usize,
        hook: F,
    ) -> ControlFlow<CloseReason, usize>
    where
        F: FnOnce(&mut dyn Service, InputView<'_>, &mut Output<'_>),
    {
        if self.finished {
            return Continue(0);
        }
        let Stage::Serving(service) = &mut self.stage else {
            // No service before the PROXY header is in: nothing to call.
            return Continue(0);
        };
        debug_assert!(cx.out_scratch.is_empty() && cx.out_borrowed.is_none());
        let high_watermark = cx.limits.high_watermark;
        let scratch: &[u8] = cx.scratch;
        // Output goes to the shared scratch (or stays where it lies) unless bytes are already
        // pending: then it must queue behind them to keep order.
        let (mut out, before) = if self.output.is_empty() {
            let window = &scratch[..fresh];
            let out =
                Output::by_reference(cx.out_scratch, window, high_watermark, &mut self.finished);
            (out, 0)
        } else {
            let before = self.output.len();
            (
                Output::new(&mut self.output, high_watermark, &mut self.finished),
                before,
            )
        };
        let input = InputView {
            scratch,
            held: &mut self.input,
        };
        hook(service.as_mut(), input, &mut out);
        let produced = out.pending() - before;
        cx.out_borrowed = out.take_borrowed();
        if self.finished && self.state == State::Open {
            self.set_state(State::Closing, cx.now);
        }
        Continue(produced)
    }

    /// Writes new output from the scratch buffer, or pending output after a writable edge.
    /// Keeps what the kernel did not accept, and applies the watermarks.
    fn flush(&mut self, cx: &mut Context<'_>) -> ControlFlow<CloseReason> {
        let was_empty = self.output.is_empty();
        if let Some(borrowed) = cx.out_borrowed.take() {
            // Written from where it lies; only what the kernel does not take is copied.
            let written = if self.write_blocked {
                0
            } else {
                self.write_some(cx, Source::Borrowed(borrowed))?
            };
            self.output.extend(&borrowed.bytes(cx.scratch)[written..]);
        } else if !cx.out_scratch.is_empty() {
            let written = if was_empty && !self.write_blocked {
                match self.write_some(cx, Source::Scratch) {
                    Continue(n) => n,
                    Break(reason) => {
                        cx.out_scratch.clear();
                        return Break(reason);
                    }
                }
            } else {
                0
            };
            self.output.extend(&cx.out_scratch.as_slice()[written..]);
            cx.out_scratch.clear();
        } else if !was_empty && !self.write_blocked {
            let written = self.write_some(cx, Source::Pending)?;
            self.output.consume(written);
        }

        let pending = self.output.len();
        if was_empty && pending > 0 {
            // The write-stall clock starts when output starts waiting.
            self.last_progress = cx.now;
        }
        if pending > 0 {
            // Not on the fast path: an atomic max per message would cost more than the echo.
            cx.stats.note_pending(pending);
        }
        if !self.paused && pending >= cx.limits.high_watermark {
            self.paused = true;
            Stats::incr(&cx.stats.backpressure_pauses);
            trace!(
                "conn {}: paused reading at {pending} bytes pending",
                self.id
            );
        } else if self.paused && pending < cx.limits.low_watermark {
            // Resume by reading at once: data may already be waiting, and no new edge will
            // announce it.
            self.paused = false;
            self.read_ready = true;
            trace!(
                "conn {}: resumed reading at {pending} bytes pending",
                self.id
            );
        }
        Continue(())
    }

    /// Writes until the data is gone or the kernel takes less than offered. Returns the
    /// number of bytes written.
    fn write_some(
        &mut self,
        cx: &mut Context<'_>,
        source: Source,
    ) -> ControlFlow<CloseReason, usize> {
        let data = match source {
            Source::Scratch => cx.out_scratch.as_slice(),
            Source::Pending => self.output.as_slice(),
            Source::Borrowed(b) => b.bytes(cx.scratch),
        };
        let mut written = 0;
        while written < data.len() {
            match self.socket.write(&data[written..]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return Break(self.io_error("write", &e));
                }
                Ok(n) => {
                    written += n;
                    self.last_progress = cx.now;
                    self.last_active = cx.now;
                    Stats::add(&cx.stats.bytes_out, n as u64);
                    if written < data.len() {
                        // A short write means the send buffer is full; the writable edge will
                        // say when there is room again.
                        self.write_blocked = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Break(self.io_error("write", &e)),
            }
        }
        Continue(written)
    }

    /// Classifies a socket error and logs it once.
    fn io_error(&self, op: &str, e: &io::Error) -> CloseReason {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | BrokenPipe | ConnectionAborted => {
                debug!("conn {}: {op}: peer reset ({e})", self.id);
                CloseReason::Reset
            }
            _ => {
                warn!("conn {}: {op} failed in state {}: {e}", self.id, self.state);
                CloseReason::Error
            }
        }
    }
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("input", &self.input.len())
            .field("output", &self.output.len())
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

/// Which buffer `write_some` writes from.
#[derive(Clone, Copy)]
enum Source {
    Scratch,
    Pending,
    Borrowed(Borrowed),
}

/// The two places input lives during `on_input`: fresh bytes in the loop's scratch, and the
/// connection's held partial request.
struct InputView<'a> {
    scratch: &'a [u8],
    held: &'a mut Buffer,
}

#[cfg(test)]
mod tests;
