//! How a service's output reaches the socket: the service is called, and what it wrote is
//! flushed at once; what the kernel does not take waits in the connection's output buffer.
//! The watermarks hold what waits — that buffer, and what a socket layer (TLS) holds of its
//! own — between a pause and a resume of reading.

use std::io;
use std::ops::ControlFlow::{self, Break, Continue};

use log::{debug, trace};

use super::{Cold, Offer, Serving, State};
use crate::connection::{Context, Io};
use crate::fault::{ConnFaults, How};
use crate::service::Asked;
use crate::service::{Output, Service};
use crate::socket::Socket;
use crate::stats::{CloseReason, Stats};
use crate::timer::Time;

impl Serving {
    /// Calls a service hook with the input it is `offer`ed and an output sink, applies
    /// `finish()`, then flushes: every service call is followed by a flush, here and only
    /// here, because the reply may lie in the loop's shared buffers (the scratch it was read
    /// into, the output scratch), which must be empty again before any other connection's
    /// turn. Returns what the hook returned and the bytes it wrote.
    pub(super) fn call<S, R, F>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        offer: Offer,
        hook: F,
    ) -> ControlFlow<CloseReason, (R, usize)>
    where
        S: Socket,
        R: Default,
        F: FnOnce(&mut dyn Service, &[u8], &mut Output<'_>) -> R,
    {
        if self.finished {
            return Continue((R::default(), 0));
        }
        debug_assert!(cx.out_scratch.is_empty() && cx.out_borrowed.is_none());
        // The service's room: what the watermark leaves beside what a layer already holds.
        let high_watermark = cx
            .limits
            .high_watermark
            .saturating_sub(io.socket.pending_output());
        let scratch: &[u8] = cx.scratch;
        // With faults, where each reply ends (a framed service marks them).
        let mut marks = Vec::new();
        let faulted = self.faults().is_some();
        // What waits already: held input, and pending output the reply must queue behind.
        let (held, pending) = match self.cold.as_deref_mut() {
            Some(c) => (
                c.input.as_slice(),
                Some(&mut c.output).filter(|o| !o.is_empty()),
            ),
            None => (&[][..], None),
        };
        let (input, fresh) = match offer {
            Offer::Nothing => (&[][..], 0),
            Offer::Fresh(n) => (&scratch[..n], n),
            Offer::Held => (held, 0),
        };
        // Output goes to the shared scratch (or stays where it lies) unless bytes are already
        // pending: then it must queue behind them to keep order.
        let (mut out, before) = match pending {
            None => {
                let window = &scratch[..fresh];
                let out = Output::by_reference(
                    cx.out_scratch,
                    window,
                    high_watermark,
                    &mut self.finished,
                );
                (out, 0)
            }
            Some(pending) => {
                let before = pending.len();
                (
                    Output::new(pending, high_watermark, &mut self.finished),
                    before,
                )
            }
        };
        if faulted {
            out = out.with_marks(&mut marks);
        }
        let answer = hook(self.service.as_mut(), input, &mut out);
        let mut produced = out.pending() - before;
        let asked = out.asked();
        cx.out_borrowed = out.take_borrowed();
        if (produced > 0 && faulted) || asked.any() {
            // Each reply's end, from the start of this call's output.
            let ends: Vec<usize> = marks.iter().map(|m| m - before).collect();
            produced = self.fault_reply(io, cx, produced, asked, &ends)?;
        }
        if self.finished && self.state == State::Open {
            self.set_state(io, State::Closing, cx.now);
            // Input held for room will never be offered now: it is discarded like any input
            // after the service is done, and reading goes on, to see the peer's FIN. (A
            // service that finishes while producing — HTTP's `close` after a generated body
            // — with a pipelined request held would otherwise wait for room it no longer
            // needs, and never read again.) Input that was offered is the caller's to
            // account for.
            if self.held_for_room && matches!(offer, Offer::Nothing) {
                self.held_for_room = false;
                if let Some(c) = self.cold.as_deref_mut() {
                    Stats::add(&cx.stats.bytes_discarded, c.input.len() as u64);
                    c.input.release();
                    c.partial_since = None;
                }
            }
        }
        self.flush(io, cx)?;
        Continue((answer, produced))
    }

    /// Hands a reply of `produced` bytes to the connection's faults: it moves into the output
    /// buffer (where the watermarks see it while it is held), and may be dropped, corrupted,
    /// cut, held, or end the connection. Returns the bytes kept.
    ///
    /// A service's own requests ([`Output::hold`](crate::service::Output::hold),
    /// [`Output::reset`](crate::service::Output::reset)) take the same path: a connection
    /// whose service asks gets the schedule then, with no faults of its listener.
    ///
    /// `ends` are where the replies of this call end (a framed service marks them): each is
    /// handed to the faults on its own, in order, so `close-after:3` closes after the third
    /// of ten pipelined requests' replies, and what follows it is never sent.
    fn fault_reply<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        produced: usize,
        asked: Asked,
        ends: &[usize],
    ) -> ControlFlow<CloseReason, usize> {
        let borrowed = cx.out_borrowed.take();
        let now = cx.now;
        let cold = self.cold();
        if cold.faults.is_none() {
            cold.faults = Some(Box::new(ConnFaults::for_service(now)));
        }
        // The reply lies in the output buffer (queued behind pending bytes), or in the loop's
        // scratch buffers: moved behind the rest.
        let in_scratch = borrowed.is_some() || !cx.out_scratch.is_empty();
        let start = cold.output.len() - if in_scratch { 0 } else { produced };
        if let Some(b) = borrowed {
            cold.output.extend(b.bytes(cx.scratch));
        }
        cold.output.extend(cx.out_scratch.as_slice());
        cx.out_scratch.clear();
        let Cold {
            output,
            faults: Some(faults),
            ..
        } = cold
        else {
            return Continue(produced);
        };
        // The replies: up to each mark, and what follows the last one.
        let mut bounds: Vec<usize> = ends
            .iter()
            .copied()
            .filter(|&e| e > 0 && e < produced)
            .collect();
        bounds.dedup();
        bounds.push(produced);
        // Taken apart and put back reply by reply: a reply dropped in the middle leaves no
        // gap, and one that ends the connection leaves nothing after it.
        let call: Vec<u8> = if bounds.len() > 1 {
            let bytes = output.as_slice()[start..].to_vec();
            output.truncate(start);
            bytes
        } else {
            Vec::new()
        };
        let (mut kept, mut from, mut finish) = (0, 0, false);
        for (i, &end) in bounds.iter().enumerate() {
            let at = if call.is_empty() {
                start
            } else {
                let at = output.len();
                output.extend(&call[from..end]);
                at
            };
            let last = i + 1 == bounds.len();
            let asked = Asked {
                hold: asked.hold,
                reset: asked.reset && last,
            };
            let reply = faults.on_reply(output, at, end - from, now, asked);
            from = end;
            kept += reply.kept;
            if reply.reset {
                debug!("conn {}: fault: reset instead of a reply", io.id);
                io.socket.set_abortive();
                return Break(CloseReason::Fault);
            }
            if reply.finish {
                finish = true;
                break;
            }
        }
        if finish {
            debug!("conn {}: fault: closing after this reply", io.id);
            self.finished = true;
        }
        Continue(kept)
    }

    /// Writes new output from the scratch buffer, or pending output after a writable edge,
    /// and the socket layer's own output if it has any. Keeps what the kernel did not
    /// accept (in the cold part, allocated for it), and applies the watermarks to all that
    /// waits: the connection's output and the layer's (TLS records the kernel has not taken).
    pub(super) fn flush<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
    ) -> ControlFlow<CloseReason> {
        let was_empty = self.pending_output() == 0;
        let layer_before = io.socket.pending_output();
        let mut written = 0;
        if let Some(borrowed) = cx.out_borrowed.take() {
            // Written from where it lies; only what the kernel does not take is copied.
            let bytes = borrowed.bytes(cx.scratch);
            if !io.write_blocked {
                written = write_some(io, cx.now, cx.stats, bytes, self.state)?;
            }
            if written < bytes.len() {
                self.cold().output.extend(&bytes[written..]);
            }
        } else if !cx.out_scratch.is_empty() {
            let bytes = cx.out_scratch.as_slice();
            if was_empty && !io.write_blocked {
                match write_some(io, cx.now, cx.stats, bytes, self.state) {
                    Continue(n) => written = n,
                    Break(reason) => {
                        cx.out_scratch.clear();
                        return Break(reason);
                    }
                }
            }
            if written < bytes.len() {
                self.cold().output.extend(&bytes[written..]);
            }
            cx.out_scratch.clear();
        } else if !was_empty && !io.write_blocked {
            let state = self.state;
            let cold = self.cold();
            if cold.faults.is_some() {
                written = write_held(io, cx.now, cx.stats, cold, state)?;
            } else {
                written = write_some(io, cx.now, cx.stats, cold.output.as_slice(), state)?;
                cold.output.consume(written);
            }
        }
        if let Some(faults) = self.faults_mut() {
            if faults.after_flush(cx.now) == Some(How::Rst) {
                debug!(
                    "conn {}: fault: resetting after the bytes it allowed",
                    io.id
                );
                io.socket.set_abortive();
                return Break(CloseReason::Fault);
            }
        }
        if io.socket.has_pending_output() && !io.write_blocked {
            // A layer under us (TLS) has records of its own to send: they go out with ours.
            match io.socket.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.write_blocked = true,
                Err(e) => return Break(io.error("flush", &e, &self.state)),
            }
        }

        // What waits: ours, and what the layer holds (zero, known at compile time, for a
        // plain socket).
        let layer = io.socket.pending_output();
        let pending = self.pending_output() + layer;
        if pending > 0 {
            // The write-stall clock starts when output starts waiting, and restarts whenever
            // the kernel takes some (a layer's queue shrinking is the kernel taking some).
            let progress = written > 0 || layer < layer_before;
            let started = was_empty && layer_before == 0;
            let c = self.cold();
            if started || progress {
                c.last_progress = cx.now;
            }
            // Not on the fast path: an atomic max per message would cost more than the echo.
            cx.stats.note_pending(pending);
        }
        if !self.paused && pending >= cx.limits.high_watermark {
            self.paused = true;
            Stats::incr(&cx.stats.backpressure_pauses);
            trace!("conn {}: paused reading at {pending} bytes pending", io.id);
        } else if self.paused && pending < cx.limits.low_watermark {
            // Resume by reading at once: the bytes refused while paused are waiting in the
            // kernel. Nothing would be lost by waiting instead: READABLE was dropped while
            // paused, and re-adding it at the end of this turn (EPOLL_CTL_MOD; kqueue's
            // EV_ADD) makes the poller check the socket again and report what is there. But
            // that report would cost a trip through poll; reading now does not.
            self.paused = false;
            io.read_ready = true;
            trace!("conn {}: resumed reading at {pending} bytes pending", io.id);
        }
        Continue(())
    }
}

/// Writes the output a fault holds, as far as its [`Hold`](crate::fault::Hold) allows now:
/// in as many writes as its pace asks (a slice per write). While everything waiting is held,
/// the write-stall clock does not run: the wait is ours, not the peer's.
fn write_held<S: Socket>(
    io: &mut Io<S>,
    now: Time,
    stats: &Stats,
    cold: &mut Cold,
    state: State,
) -> ControlFlow<CloseReason, usize> {
    let Some(faults) = cold.faults.as_deref_mut() else {
        return Continue(0);
    };
    let mut written = 0;
    loop {
        let allowed = (faults.hold.sendable(now) as usize).min(cold.output.len());
        if allowed == 0 {
            if !cold.output.is_empty() && written == 0 {
                cold.last_progress = now;
            }
            break;
        }
        let n = write_some(io, now, stats, &cold.output.as_slice()[..allowed], state)?;
        cold.output.consume(n);
        faults.hold.sent(n as u64, now);
        written += n;
        if n < allowed || io.write_blocked {
            break;
        }
    }
    Continue(written)
}

/// Writes `data` until it is gone or the kernel takes less than offered (then the socket is
/// write-blocked until the writable edge). Returns the number of bytes written.
fn write_some<S: Socket>(
    io: &mut Io<S>,
    now: Time,
    stats: &Stats,
    data: &[u8],
    state: State,
) -> ControlFlow<CloseReason, usize> {
    let mut written = 0;
    while written < data.len() {
        match io.socket.write(&data[written..]) {
            Ok(0) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                return Break(io.error("write", &e, &state));
            }
            Ok(n) => {
                written += n;
                io.last_active = now;
                Stats::add(&stats.bytes_out, n as u64);
                if written < data.len() {
                    // A short write means the send buffer is full; the writable edge will say
                    // when there is room again.
                    io.write_blocked = true;
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                io.write_blocked = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Break(io.error("write", &e, &state)),
        }
    }
    Continue(written)
}
