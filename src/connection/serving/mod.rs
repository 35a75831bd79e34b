//! Serving: the state machine of a connection whose service exists.
//!
//! **Read this first.** A turn does three things, in this order, and then reports whether the
//! connection wants to wait for the next event, run again next turn, or is closed:
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
//! Every call into the service is followed by a flush, in one place (`Serving::call`, in
//! `output.rs` with the flush and the watermarks): the reply may lie in the loop's shared
//! buffers, which must be empty again before any other connection's turn.
//!
//! What came before the service — a PROXY header, a TLS handshake — is not this file's
//! business: the stages before serving ([`super::preface`]) hand over a service and any bytes
//! that followed the header, and serving starts as it would on a plain connection.
//!
//! The states are [`State`]'s, named after what they mean on the wire; every transition
//! goes through `set_state`, which logs it at `trace` level.

use std::fmt;
use std::ops::ControlFlow::{self, Break, Continue};
use std::time::Duration;

use log::{debug, info, trace, warn};

use super::{Context, Io, Read, Turn};
use crate::buffer::Buffer;
use crate::config::Limits;
use crate::fault::{Blackhole, ConnFaults, Due, Kind as FaultKind};
use crate::service::{Output, Service};
use crate::socket::{Socket, Want};
use crate::stats::{CloseReason, Stats};
use crate::timer::Time;

mod output;

/// Where a served connection is in its life, named after what it means on the wire:
///
/// ```text
///             peer FIN (read() == 0)
///   Open ───────────────────────────────▶ CloseWait ──(service finished, output flushed,
///    │                                        ▲         shutdown(Write))──▶ Closed
///    │ service finished / server draining     │ peer FIN
///    ▼                                        │
///   Closing ──(output flushed, shutdown(Write))──▶ Lingering ──(peer FIN, or linger
///   (input discarded)                               (input discarded)  timeout)──▶ Closed
/// ```
///
/// * **Open** — both directions carry data.
/// * **CloseWait** — the peer finished sending. The service may still produce; once it has
///   finished and every byte is flushed, we send our FIN and close. Closing here cannot reset:
///   the peer sends nothing after its FIN, so no unread data is left behind.
/// * **Closing** — we finished (the service called [`Output::finish`], or the server is
///   draining). Pending output is flushed before our FIN; input is read and discarded so a
///   peer blocked on writing can get on to reading.
/// * **Lingering** — our FIN is sent. Keep reading and discarding until the peer's FIN, so the
///   kernel never closes with unread data (which sends RST and can destroy the reply we just
///   sent before the peer reads it), or until the linger timeout.
/// * **Closed** — terminal; the loop drops the socket.
///
/// Every transition goes through `set_state`, which logs it at `trace` level.
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

/// A service whose connection closes before it began: a connection still in its stages
/// before serving when the server drains gets this, already finished, so it closes the way a
/// served one does (FIN, then the lingering close). Never called.
struct Finished;

impl Service for Finished {
    fn on_input(&mut self, _: &[u8], _: &mut Output<'_>) -> usize {
        0
    }
}

/// The serving state machine. The socket and what is remembered of its readiness are the
/// connection's ([`Io`]), lent to every call.
///
/// Memory follows work: what every connection carries is here, and fits in a few words;
/// what only a connection with bytes waiting needs is in [`Cold`], allocated when bytes
/// start waiting and given back when the last one has gone.
pub(crate) struct Serving {
    service: Box<dyn Service>,
    /// Bytes that wait, and the clocks that watch them; `None` while nothing waits.
    cold: Option<Box<Cold>>,
    state: State,
    /// Reading stopped because output reached the high watermark.
    paused: bool,
    /// The service left input unconsumed because its output had no room (the output
    /// contract): the held input is offered again as soon as output drains, without waiting
    /// for a read, because a peer that has sent everything raises no new edge.
    held_for_room: bool,
    /// The service has produced its last byte.
    finished: bool,
    /// Why the server began this close, when the reason is its own and the close still ends
    /// gracefully (a request timeout answered, HTTP's 408): the close is counted under it,
    /// not under the FIN exchange that ends it.
    ending: Option<CloseReason>,
}

/// What a connection holds only while something waits: a partial request, output the kernel
/// did not take, or a lingering close. An idle connection has none of it — an echo
/// connection whose every reply the kernel takes at once never allocates it.
#[derive(Debug, Default)]
struct Cold {
    /// Bytes read that the service has not consumed yet (a partial request).
    input: Buffer,
    /// Bytes written by the service that the kernel has not accepted yet.
    output: Buffer,
    /// The last write the kernel accepted bytes from, or when output started pending: the
    /// write-stall clock.
    last_progress: Time,
    /// When the partial request now held began arriving: the request-timeout clock.
    partial_since: Option<Time>,
    /// When our FIN was sent: the linger clock.
    lingering_since: Time,
    /// The connection's faults, if its listener has any: kept for its whole life, so a
    /// faulted connection always has its cold part (see [`crate::fault`]).
    faults: Option<Box<ConnFaults>>,
}

impl Cold {
    /// Nothing waits — nor in a layer under the connection, whose output keeps the
    /// write-stall clock here — so the connection can give this back.
    fn is_idle(&self, state: State, layer_pending: bool) -> bool {
        self.input.is_empty()
            && self.output.is_empty()
            && !layer_pending
            && state != State::Lingering
            && self.faults.is_none()
    }
}

impl Serving {
    /// Serving `service`, in the `Open` state; `input` holds bytes that arrived before the
    /// service existed (after a PROXY header), offered to it once it has greeted.
    pub(crate) fn new(service: Box<dyn Service>, input: Buffer) -> Serving {
        let cold = (!input.is_empty()).then(|| {
            Box::new(Cold {
                input,
                ..Cold::default()
            })
        });
        Serving {
            service,
            cold,
            state: State::Open,
            paused: false,
            held_for_room: false,
            finished: false,
            ending: None,
        }
    }

    /// Gives the connection its faults (its listener's, chosen at accept). A blackholed
    /// connection's service is replaced before it can say a word.
    pub(crate) fn set_faults(&mut self, faults: Box<ConnFaults>) {
        if faults.blackhole {
            self.service = Box::new(Blackhole);
        }
        self.cold().faults = Some(faults);
    }

    /// The connection's faults, if it has any.
    fn faults(&self) -> Option<&ConnFaults> {
        self.cold.as_ref()?.faults.as_deref()
    }

    fn faults_mut(&mut self) -> Option<&mut ConnFaults> {
        self.cold.as_mut()?.faults.as_deref_mut()
    }

    /// A connection whose service finished before it began (see [`Finished`]).
    pub(crate) fn finished() -> Serving {
        let mut serving = Serving::new(Box::new(Finished), Buffer::new());
        serving.finished = true;
        serving
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Bytes of output waiting for the kernel.
    pub(crate) fn pending_output(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.output.len())
    }

    /// Bytes of a partial request held.
    pub(crate) fn held_input(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.input.len())
    }

    /// Heap bytes held: the cold part and its buffers' memory, or nothing.
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| {
            std::mem::size_of::<Cold>() + c.input.capacity() + c.output.capacity()
        })
    }

    /// The cold part, allocated now if nothing waited until now.
    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    /// Greets the peer ([`Service::on_connect`]), offers any input that came before the
    /// service, and runs the rest of the turn with what is left of its `budget`.
    ///
    /// A greeting is flushed, and a streaming service keeps producing, in this same turn:
    /// if the kernel takes everything, no writable edge would ever come to ask again.
    pub(crate) fn open<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        mut budget: usize,
    ) -> Turn {
        let flow = self.greet(io, cx, &mut budget);
        self.end_turn(io, cx, flow, budget)
    }

    /// Runs one turn. See the [module documentation](self).
    pub(crate) fn turn<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        mut budget: usize,
    ) -> Turn {
        let flow = self.work(io, cx, &mut budget);
        self.end_turn(io, cx, flow, budget)
    }

    /// Starts a graceful close on server shutdown: the service is done, pending output is
    /// flushed, then FIN and lingering close.
    pub(crate) fn shut_down<S: Socket>(&mut self, io: &mut Io<S>, cx: &mut Context<'_>) -> Turn {
        self.finished = true;
        if self.state == State::Open {
            self.set_state(io, State::Closing, cx.now);
        }
        let mut budget = cx.limits.read_budget;
        let flow = self.work(io, cx, &mut budget);
        self.end_turn(io, cx, flow, budget)
    }

    /// The next time this connection needs attention without an event: the linger, write-stall
    /// or idle deadline, whichever is first.
    pub(crate) fn deadline<S: Socket>(&self, io: &Io<S>, limits: &Limits) -> Option<Time> {
        match self.state {
            State::Closed => None,
            State::Lingering => Some(self.lingering_since().after(limits.linger_timeout)),
            _ => {
                let idle = limits.idle_timeout.map(|d| io.last_active.after(d));
                let stall = limits
                    .write_stall_timeout
                    .zip(self.stalled_since(io))
                    .map(|(d, since)| since.after(d));
                let request = self
                    .request_started()
                    .zip(limits.request_timeout)
                    .map(|(since, d)| since.after(d));
                let (open, waiting) = (self.state == State::Open, self.pending_output() > 0);
                let fault = self
                    .faults()
                    .and_then(|f| f.deadline(io.last_active, open && !waiting));
                [idle, stall, request, fault].into_iter().flatten().min()
            }
        }
    }

    /// When the partial request the connection holds began, if the request timeout applies:
    /// only in `Open`, and not while the input waits for output room (the write-stall
    /// timeout covers a peer that does not read).
    fn request_started(&self) -> Option<Time> {
        self.cold
            .as_ref()
            .and_then(|c| c.partial_since)
            .filter(|_| self.state == State::Open && !self.held_for_room)
    }

    /// While output is pending (ours, or a layer's): when the kernel last took some (the
    /// write-stall clock). Output a fault holds back is not stalled: the wait is ours, not
    /// the peer's.
    fn stalled_since<S: Socket>(&self, io: &Io<S>) -> Option<Time> {
        let layer = io.socket.has_pending_output();
        self.cold
            .as_ref()
            .filter(|c| layer || !c.output.is_empty())
            .filter(|c| layer || !c.faults.as_ref().is_some_and(|f| f.holding()))
            .map(|c| c.last_progress)
    }

    /// Everything that waits to be sent: ours, and a layer's own.
    fn waiting<S: Socket>(&self, io: &Io<S>) -> usize {
        self.pending_output() + io.socket.pending_output()
    }

    /// When our FIN was sent (meaningful while `Lingering`).
    fn lingering_since(&self) -> Time {
        self.cold.as_ref().map_or(Time(0), |c| c.lingering_since)
    }

    /// The loop's timer came due: closes the connection if one of its deadlines has passed.
    /// Applies exactly the rules of [`Serving::deadline`] for the current state, so a stale
    /// entry (armed before a state change) can never close it for the wrong reason.
    ///
    /// Each reason ends the connection its own way (the table is in `docs/06-closing.md`):
    /// lingering ends with a plain close; a write stall and a request timeout reset (the peer
    /// stopped reading, or is too slow to send, and no reply is owed); the idle timeout closes
    /// with FIN (a quiet peer has nothing unread to be reset over).
    pub(crate) fn on_deadline<S: Socket>(&mut self, io: &mut Io<S>, cx: &mut Context<'_>) -> Turn {
        if let Some(turn) = self.on_fault_deadline(io, cx) {
            return turn;
        }
        let (now, l) = (cx.now, cx.limits);
        let expired = |since: Time, d: Option<Duration>| d.is_some_and(|d| now >= since.after(d));
        let reason = match self.state {
            State::Closed => None,
            State::Lingering => {
                expired(self.lingering_since(), Some(l.linger_timeout)).then(|| {
                    debug!(
                        "conn {}: peer did not finish within the linger timeout",
                        io.id
                    );
                    CloseReason::LingerTimeout
                })
            }
            _ if self
                .stalled_since(io)
                .is_some_and(|since| expired(since, l.write_stall_timeout)) =>
            {
                debug!(
                    "conn {}: {} bytes pending, none accepted for the write-stall timeout; aborting",
                    io.id,
                    self.waiting(io)
                );
                io.socket.set_abortive();
                Some(CloseReason::WriteStall)
            }
            _ if self
                .request_started()
                .is_some_and(|since| expired(since, l.request_timeout)) =>
            {
                // A service may answer the late request (HTTP's 408). Then the answer is
                // flushed and the connection closes gracefully, as after any last reply.
                let answered = self.call(io, cx, Offer::Nothing, |service, _, out| {
                    service.on_request_timeout(out)
                });
                if self.finished || answered.is_break() {
                    // Counted as a request timeout however the graceful close then ends.
                    self.ending = Some(CloseReason::RequestTimeout);
                    info!(
                        "conn {}: request incomplete after {:?}; answered, closing",
                        io.id,
                        l.request_timeout.unwrap_or_default(),
                    );
                    let mut budget = cx.limits.read_budget;
                    let flow = match answered {
                        Break(reason) => Break(reason),
                        Continue(_) => self.work(io, cx, &mut budget),
                    };
                    return self.end_turn(io, cx, flow, budget);
                }
                // Nothing here for a lingering close to protect: the request was never
                // answered, and the replies to earlier ones left at least the request timeout
                // ago. Lingering would keep the slot while the peer goes on trickling — the
                // very client this timeout is for — so the slot is freed now, with RST.
                info!(
                    "conn {}: request incomplete after {:?} ({} bytes held); resetting",
                    io.id,
                    l.request_timeout.unwrap_or_default(),
                    self.held_input()
                );
                io.socket.set_abortive();
                Some(CloseReason::RequestTimeout)
            }
            _ => expired(io.last_active, l.idle_timeout).then(|| {
                debug!("conn {}: idle timeout", io.id);
                CloseReason::Idle
            }),
        };
        match reason {
            Some(reason) => self.close(io, reason, now),
            None => Turn::Wait,
        }
    }

    /// A fault's deadline came due: RST (`reset-after:DUR`), a graceful close
    /// (`idle-close`), or a turn that releases held output or a held FIN. `None` if no
    /// fault's time has come.
    fn on_fault_deadline<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
    ) -> Option<Turn> {
        if matches!(self.state, State::Closed | State::Lingering) {
            return None;
        }
        let (open, waiting) = (self.state == State::Open, self.pending_output() > 0);
        let due = self.faults()?.due(cx.now, io.last_active, open, waiting)?;
        let faults = self.faults()?;
        match due {
            Due::Reset => {
                faults.note(FaultKind::ResetAfter);
                debug!("conn {}: fault reset-after: resetting", io.id);
                io.socket.set_abortive();
                return Some(self.close(io, CloseReason::Fault, cx.now));
            }
            Due::IdleClose => {
                faults.note(FaultKind::IdleClose);
                debug!("conn {}: fault idle-close: closing", io.id);
                self.finished = true;
                self.set_state(io, State::Closing, cx.now);
            }
            Due::Work => {
                if let Some(faults) = self.faults_mut() {
                    faults.settle(cx.now);
                }
            }
        }
        let mut budget = cx.limits.read_budget;
        let flow = self.work(io, cx, &mut budget);
        Some(self.end_turn(io, cx, flow, budget))
    }

    /// The readiness to register for, derived from the state: READABLE while the state reads
    /// (and output is below the high watermark), WRITABLE while output is pending — ours, or
    /// the socket layer's own.
    pub(crate) fn want<S: Socket>(&self, io: &Io<S>) -> Want {
        let read = match self.state {
            State::Open => !self.paused,
            State::Closing | State::Lingering => true,
            State::CloseWait | State::Closed => false,
        };
        // Output a fault holds waits for its deadline, not for the socket: WRITABLE only once
        // the kernel has refused some (a layer's own output is wanted as before).
        let held = self.faults().is_some() && !io.write_blocked;
        let pending = if held {
            io.socket.has_pending_output()
        } else {
            self.waiting(io) > 0
        };
        Want {
            read,
            write: pending && self.state != State::Closed,
        }
    }

    /// The single choke point for state changes.
    pub(crate) fn set_state<S>(&mut self, io: &Io<S>, next: State, now: Time) {
        trace!("conn {}: state={}=>{}", io.id, self.state, next);
        self.state = next;
        if next == State::Lingering {
            self.cold().lingering_since = now;
        }
    }

    /// Ends the connection. A graceful end of a close the server began for a reason of its
    /// own (`ending`) is counted under that reason; an abortive one keeps its own.
    fn close<S>(&mut self, io: &Io<S>, reason: CloseReason, now: Time) -> Turn {
        self.set_state(io, State::Closed, now);
        let reason = match (self.ending, reason) {
            (Some(why), CloseReason::Server | CloseReason::Peer | CloseReason::LingerTimeout) => {
                why
            }
            _ => reason,
        };
        Turn::Closed(reason)
    }

    fn end_turn<S: Socket>(
        &mut self,
        io: &Io<S>,
        cx: &Context<'_>,
        flow: ControlFlow<CloseReason>,
        budget: usize,
    ) -> Turn {
        let layer_pending = io.socket.has_pending_output();
        if self
            .cold
            .as_ref()
            .is_some_and(|c| c.is_idle(self.state, layer_pending))
        {
            // The last waiting byte has gone: an idle connection owns nothing but its words.
            self.cold = None;
        }
        match flow {
            Break(reason) => self.close(io, reason, cx.now),
            Continue(()) if budget == 0 && self.has_more_work(io, cx.limits) => Turn::Again,
            // Held input got its room back after this turn's read: a producer finished the
            // reply the held requests queued behind (HTTP's generated body, ended in
            // `on_drained`). No event will announce that, so the next turn offers it.
            Continue(()) if self.may_offer() => Turn::Again,
            Continue(()) => Turn::Wait,
        }
    }

    fn has_more_work<S: Socket>(&self, io: &Io<S>, limits: &Limits) -> bool {
        (io.read_ready && self.want(io).read) || self.may_produce(io, limits) || self.may_offer()
    }

    /// Held input waits only for output room, and there is room again.
    fn may_offer(&self) -> bool {
        self.held_for_room && !self.paused && self.state == State::Open
    }

    fn may_produce<S: Socket>(&self, io: &Io<S>, limits: &Limits) -> bool {
        matches!(self.state, State::Open | State::CloseWait)
            && !self.finished
            && !io.write_blocked
            && self.waiting(io) < limits.low_watermark
    }

    /// The greeting, then input that came before the service, then the usual turn.
    fn greet<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> ControlFlow<CloseReason> {
        // What followed a PROXY header is the client's first bytes: counted now, offered after
        // the greeting, as if they had just been read.
        Stats::add(&cx.stats.bytes_in, self.held_input() as u64);
        self.call(io, cx, Offer::Nothing, |service, _, out| {
            service.on_connect(out)
        })?;
        if self.held_input() > 0 {
            self.deliver(io, cx, 0)?;
        }
        self.work(io, cx, budget)
    }

    /// Flush, read, produce; then see whether a closing state can move on.
    fn work<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> ControlFlow<CloseReason> {
        self.flush(io, cx)?;
        self.read(io, cx, budget)?;
        self.produce(io, cx, budget)?;
        self.advance_close(io, cx, budget)
    }

    /// Lets a streaming service refill output while it is below the low watermark and the
    /// socket keeps taking it, up to the turn's budget.
    fn produce<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> ControlFlow<CloseReason> {
        while *budget > 0 && self.may_produce(io, cx.limits) {
            let ((), produced) = self.call(io, cx, Offer::Nothing, |service, _, out| {
                service.on_drained(out)
            })?;
            if produced == 0 {
                // A blackholed connection never finishes: a hung backend keeps its half open
                // until the idle timeout.
                let blackhole = self.faults().is_some_and(|f| f.blackhole);
                if self.state == State::CloseWait && !self.finished && !blackhole {
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
    fn read<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> ControlFlow<CloseReason> {
        loop {
            self.offer_held(io, cx, budget)?;
            if !(io.read_ready && self.want(io).read && *budget > 0) || self.held_for_room {
                return Continue(());
            }
            // Input for the service: never read more than output has room for, so the echo of
            // one read cannot push pending output past the high watermark. Input that is only
            // discarded (closing, lingering) needs no room.
            let room = match self.state {
                State::Open => cx.limits.high_watermark.saturating_sub(self.waiting(io)),
                _ => usize::MAX,
            };
            let want = cx.scratch.len().min(*budget).min(room);
            if want == 0 {
                // Output is at the high watermark (a reply may overshoot it by its own
                // length); flush has paused reading.
                return Continue(());
            }
            match io.read(&mut cx.scratch[..want], cx.now, &self.state) {
                Read::Data(n) => {
                    *budget -= n;
                    self.deliver(io, cx, n)?;
                }
                Read::Fin => return self.on_peer_fin(io, cx),
                Read::Drained => {}
                Read::Failed(reason) => return Break(reason),
            }
        }
    }

    /// Offers input the service held back for lack of output room again, while there is
    /// room and budget. Each byte the service consumes counts against the budget as if it
    /// had just been read.
    fn offer_held<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> ControlFlow<CloseReason> {
        while self.may_offer() && *budget > 0 {
            let consumed = self.deliver(io, cx, 0)?;
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
    fn deliver<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        n: usize,
    ) -> ControlFlow<CloseReason, usize> {
        if self.state != State::Open {
            // Closing or lingering: input is read only to be discarded.
            Stats::add(&cx.stats.bytes_discarded, n as u64);
            return Continue(0);
        }
        Stats::add(&cx.stats.bytes_in, n as u64);
        // Fast path: the service reads straight from the loop's scratch buffer (and the reply
        // may refer to it where it lies: echo), and only an unconsumed tail (a partial
        // request) is copied to the connection. Behind held input, the fresh bytes queue.
        let offer = if self.held_input() == 0 {
            Offer::Fresh(n)
        } else {
            self.cold().input.extend(&cx.scratch[..n]);
            Offer::Held
        };
        let ((used, out_of_room), _) = self.call(io, cx, offer, |service, input, out| {
            let used = service.on_input(input, out);
            (used, out.room() == 0)
        })?;
        match offer {
            Offer::Fresh(n) if used < n => self.cold().input.extend(&cx.scratch[used..n]),
            Offer::Fresh(_) => {}
            _ => self.cold().input.consume(used),
        }
        let held = self.held_input();
        // Input left over with no room for its replies waits for room, not for more bytes.
        self.held_for_room = out_of_room && held > 0 && !self.finished;
        if let Some(c) = &mut self.cold {
            if held == 0 {
                c.partial_since = None;
            } else if used > 0 || c.partial_since.is_none() {
                c.partial_since = Some(cx.now);
            }
        }
        let limit = self
            .service
            .input_limit()
            .unwrap_or(cx.limits.high_watermark);
        if held > limit && !self.held_for_room {
            warn!(
                "conn {}: service left {held} bytes of input unconsumed (limit {limit}); closing",
                io.id,
            );
            return Break(CloseReason::Protocol);
        }
        Continue(used)
    }

    /// The peer sent FIN.
    fn on_peer_fin<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
    ) -> ControlFlow<CloseReason> {
        match self.state {
            State::Open => {
                self.set_state(io, State::CloseWait, cx.now);
                self.call(io, cx, Offer::Nothing, |service, _, out| {
                    service.on_peer_finished(out)
                })?;
                Continue(())
            }
            // We were flushing our last bytes; the peer is done too, so no lingering needed.
            State::Closing => {
                self.set_state(io, State::CloseWait, cx.now);
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
    fn advance_close<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> ControlFlow<CloseReason> {
        if self.pending_output() > 0 || io.socket.has_pending_output() {
            return Continue(());
        }
        match self.state {
            State::CloseWait if self.finished => {
                if self.faults_mut().is_some_and(|f| f.hold_fin(cx.now)) {
                    // slow-close: our FIN waits for its deadline.
                    return Continue(());
                }
                io.send_fin();
                if io.socket.has_pending_output() {
                    // A layer's goodbye (and the FIN behind it) waits for room: closing now
                    // would drop it. The writable edge flushes both, and this runs again.
                    return Continue(());
                }
                Break(CloseReason::Peer)
            }
            State::Closing => {
                io.send_fin();
                self.set_state(io, State::Lingering, cx.now);
                // The peer's FIN may already be queued behind data we have not read.
                io.read_ready = true;
                self.read(io, cx, budget)
            }
            _ => Continue(()),
        }
    }
}

impl fmt::Debug for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serving")
            .field("state", &self.state)
            .field("input", &self.held_input())
            .field("output", &self.pending_output())
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

/// The input a service hook is offered.
#[derive(Clone, Copy)]
pub(super) enum Offer {
    /// None: a greeting, the peer's FIN, room to produce.
    Nothing,
    /// The first `n` bytes of the loop's scratch buffer, just read.
    Fresh(usize),
    /// The connection's held input (with anything just read appended).
    Held,
}
