//! One worker thread: a mio poller driving its share of the flows.
//!
//! **Read this first.** A worker is the client-side mirror of loopd's event loop, and one
//! turn has the same shape:
//!
//! 1. **Wake-ups** that came due run first: opening connections (`--ramp`), connect
//!    timeouts, open-loop sends, UDP loss checks ([`Wakes`]).
//! 2. **The end of the measurement**: flows stop sending and finish as their last replies
//!    arrive, up to [`DRAIN_GRACE`].
//! 3. **The run queue**: flows a budget stopped last turn continue, without waiting for an
//!    event (drain or remember: no new edge would announce data already queued).
//! 4. **Guards**: after the grace, or when nothing has moved for `--stall-timeout` while
//!    work is outstanding, every flow still open is abandoned and what it waited for is
//!    counted, so a run always ends.
//! 5. **Poll** with a zero timeout while the run queue has flows, otherwise until the next
//!    wake-up; a `timerfd` alarm makes that wake-up precise to microseconds.
//! 6. **Events**: each flow handles its readiness.
//!
//! Sockets are registered once for both readable and writable (see [`tcp`]), so
//! the steady state costs one `read` and one `write` per message and no `epoll_ctl`.

use std::collections::VecDeque;
use std::io::{self, ErrorKind as IoKind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::alarm::Alarm;
use crate::config::BenchConfig;
use crate::flow::{Ctx, Flow, Readiness, DRAIN_GRACE};
use crate::payload::{Codec, Gather};
use crate::report::files::{IntervalHistogram, IntervalRecorder};
use crate::report::{Second, Tally};
use crate::schedule::{open_at, poll_deadline, AlarmPlan, OpenLoop, Plan, Wake, Wakes};
use crate::tcp;

/// The longest the worker sleeps without looking at the clock, so the end of the
/// measurement and the stall guard are noticed even with nothing scheduled.
const TICK: Duration = Duration::from_millis(100);
/// Read buffer shared by the worker's connections: one read takes a connection's whole
/// per-turn budget. On loopback the reader's CPU also pays for the ACKs its reads release
/// (and for the sender's data those ACKs let out), so fewer, larger reads are cheaper per
/// byte: measured against loopd's chargen, 256 KiB reads received 3.2–4.3 GiB/s where 64 KiB
/// reads received 2.1–2.8 GiB/s.
const SCRATCH: usize = tcp::RECV_BUDGET;
/// Events taken per poll; more wait for the next call.
const EVENTS: usize = 1024;
/// The alarm's token, above any flow index.
const ALARM: Token = Token(usize::MAX);

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
    fn store(&self, messages: u64, bytes_sent: u64, bytes_received: u64) {
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

/// What the worker hands back when it is done.
pub struct Outcome {
    /// Its measurements.
    pub tally: Tally,
    /// The completion time of its last measured message, for counted runs.
    pub last_completion: Option<Instant>,
}

/// A worker thread's share of the run.
pub struct Worker {
    cfg: Arc<BenchConfig>,
    codec: Arc<Codec>,
    plan: Plan,
    /// Global ids of this worker's connections.
    ids: Vec<u32>,
    live: Arc<Live>,
    /// Where each second's histograms go (`--hlog`).
    intervals: Option<Sender<IntervalHistogram>>,
}

impl Worker {
    /// A worker for the connections with global ids `ids`.
    pub fn new(
        cfg: Arc<BenchConfig>,
        codec: Arc<Codec>,
        plan: Plan,
        ids: Vec<u32>,
        live: Arc<Live>,
        intervals: Option<Sender<IntervalHistogram>>,
    ) -> Worker {
        Worker {
            cfg,
            codec,
            plan,
            ids,
            live,
            intervals,
        }
    }

    /// Runs until every flow has finished or failed.
    pub fn run(self) -> io::Result<Outcome> {
        let cfg = &*self.cfg;
        let mut poll = Poll::new()?;
        let alarm = Alarm::new(poll.registry(), ALARM)?;
        let mut alarm_plan = AlarmPlan::default();
        let mut events = Events::with_capacity(EVENTS);
        let mut cx = Ctx {
            cfg,
            plan: self.plan,
            codec: &self.codec,
            registry: poll.registry().try_clone()?,
            tally: Tally::new(),
            wakes: Wakes::default(),
            open_loop: cfg
                .rate
                .map(|r| OpenLoop::new(self.plan.t0, r, cfg.connections)),
            gather: Gather::default(),
            datagram: Vec::with_capacity(self.codec.size() + 64),
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            open: 0,
            ended: 0,
            last_progress: Instant::now(),
            last_completion: None,
            intervals: self
                .intervals
                .clone()
                .map(|tx| IntervalRecorder::new(self.plan.from, cfg.rate.is_some(), tx)),
        };
        let mut flows: Vec<Flow> = self.ids.iter().map(|&id| Flow::new(id, cfg)).collect();
        for (i, f) in flows.iter().enumerate() {
            cx.wakes
                .push(open_at(self.plan.t0, cfg.ramp, f.id), i, Wake::Open);
        }
        let mut run_queue = RunQueue::default();
        let mut stopping = false;
        let mut due = Vec::new();
        loop {
            let now = Instant::now();
            cx.wakes.take_due(now, &mut due);
            for (at, i, wake) in due.drain(..) {
                flows[i].on_wake(&mut cx, i, at, wake, now);
                run_queue.note(&mut flows, i);
            }
            if !stopping && !cx.plan.may_send(now) {
                // The measurement is over: flows finish as their last replies arrive.
                stopping = true;
                for i in 0..flows.len() {
                    flows[i].finish_if_idle(&mut cx, i, now);
                    run_queue.note(&mut flows, i);
                }
            }
            // Only the flows queued before this pass run now; one that queues itself again
            // waits for the next turn, after a poll, so it cannot starve the others.
            for _ in 0..run_queue.len() {
                let Some(i) = run_queue.pop(&mut flows) else {
                    break;
                };
                flows[i].resume(&mut cx, i, now);
                run_queue.note(&mut flows, i);
            }
            let drained = cx.plan.until.is_some_and(|u| now >= u + DRAIN_GRACE);
            // Cheap test first: the sweep over the flows runs only once nothing has moved
            // for the whole stall timeout, never on the hot path.
            let stalled = now.duration_since(cx.last_progress) >= cfg.stall_timeout
                && flows.iter().any(Flow::outstanding);
            if drained || stalled {
                for f in &mut flows {
                    f.abandon(&mut cx, stalled, now);
                }
            }
            self.publish(&cx);
            if let Some(i) = &mut cx.intervals {
                i.rotate(now);
            }
            if cx.ended == flows.len() {
                break;
            }
            let until = cx.plan.until.filter(|_| !stopping);
            let deadline = poll_deadline(now, cx.wakes.next(), until, TICK);
            let mut timeout = deadline.saturating_duration_since(now);
            if !run_queue.is_empty() {
                timeout = Duration::ZERO;
            } else if Alarm::PRECISE && !timeout.is_zero() && timeout < TICK {
                // The alarm fires at the exact instant; the poll timeout, which epoll rounds
                // up to whole milliseconds, is only the backstop.
                if alarm_plan.arm(deadline, now) {
                    alarm.set(timeout)?;
                }
                timeout = TICK;
            }
            match poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == ALARM {
                    continue; // its only job was to end the poll
                }
                let i = event.token().0;
                let ready = Readiness {
                    readable: event.is_readable(),
                    writable: event.is_writable(),
                    closed: event.is_read_closed() || event.is_error(),
                };
                flows[i].on_event(&mut cx, i, ready, now);
                run_queue.note(&mut flows, i);
            }
        }
        self.publish(&cx);
        if let Some(i) = cx.intervals.take() {
            i.finish();
        }
        Ok(Outcome {
            tally: cx.tally,
            last_completion: cx.last_completion,
        })
    }

    fn publish(&self, cx: &Ctx<'_>) {
        let t = &cx.tally;
        self.live
            .measured
            .store(t.messages, t.bytes_sent, t.bytes_received);
        let lead = &t.lead_in;
        self.live
            .lead_in
            .store(lead.messages, lead.bytes_sent, lead.bytes_received);
        self.live.errors.store(t.error_total(), Relaxed);
        self.live.open.store(cx.open, Relaxed);
    }
}

/// Flows that a budget stopped with work left, in order, each at most once.
#[derive(Default)]
struct RunQueue {
    queue: VecDeque<usize>,
}

impl RunQueue {
    /// Queues flow `i` if it wants another turn and is not queued already.
    fn note(&mut self, flows: &mut [Flow], i: usize) {
        let f = &mut flows[i];
        if f.wants_turn() && !f.queued {
            f.queued = true;
            self.queue.push_back(i);
        }
    }

    fn pop(&mut self, flows: &mut [Flow]) -> Option<usize> {
        let i = self.queue.pop_front()?;
        flows[i].queued = false;
        Some(i)
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
