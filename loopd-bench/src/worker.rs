//! One worker thread: a mio poller driving its share of the flows.
//!
//! **Read this first.** A worker is the client-side mirror of loopd's event loop, and one
//! turn has the same shape:
//!
//! 1. **Wake-ups** that came due run first: opening connections (`--ramp`), connect
//!    timeouts, open-loop sends, UDP loss checks ([`Wakes`](crate::schedule::Wakes)).
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
//! Steps 1–4 and 6 are [`Turns`], which knows nothing of the poller, so the tests drive it
//! with scripted sockets and made-up instants; [`Worker`] adds the poll and the clock. The
//! worker picks the flow's transport once, from the mode and `--tls`: TCP streams, TLS over
//! them, or UDP sockets.
//!
//! Sockets are registered once for both readable and writable (see [`tcp`](crate::tcp)),
//! so the steady state costs one `read` and one `write` per message and no `epoll_ctl`.

use std::collections::VecDeque;
use std::io::{self, ErrorKind as IoKind};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Poll, Token};

use crate::alarm::Alarm;
use crate::config::{BenchConfig, Load, Transport};
use crate::flow::datagram::Datagrams;
use crate::flow::http::Http;
use crate::flow::stream::Bytes;
use crate::flow::{Ctx, Flow, Readiness, Wire, DRAIN_GRACE, RECV_BUDGET};
use crate::payload::{Codec, Protocol};
use crate::record::intervals::{IntervalHistogram, IntervalRecorder};
use crate::record::live::Live;
use crate::record::{Recorder, Tally};
use crate::schedule::{open_at, poll_deadline, AlarmPlan, Plan, Wake};
use crate::tcp::Tcp;
use crate::tls::{TlsClient, TlsStream};
use crate::transport::Dial;
use crate::udp::Udp;

/// The longest the worker sleeps without looking at the clock, so the end of the
/// measurement and the stall guard are noticed even with nothing scheduled.
const TICK: Duration = Duration::from_millis(100);
/// Read buffer shared by the worker's connections: one read takes a connection's whole
/// per-turn budget. On loopback the reader's CPU also pays for the ACKs its reads release
/// (and for the sender's data those ACKs let out), so fewer, larger reads are cheaper per
/// byte: measured against loopd's chargen, 256 KiB reads received 3.2–4.3 GiB/s where 64 KiB
/// reads received 2.1–2.8 GiB/s.
const SCRATCH: usize = RECV_BUDGET;
/// Events taken per poll; more wait for the next call.
const EVENTS: usize = 1024;
/// The alarm's token, above any flow index.
const ALARM: Token = Token(usize::MAX);

/// What the worker hands back when it is done.
pub struct Outcome {
    /// Its measurements.
    pub tally: Tally,
    /// The completion time of its last measured message, for counted runs.
    pub last_completion: Option<Instant>,
    /// How late it opened its first connection against the schedule.
    pub start_lag: Option<Duration>,
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
    /// `--tls`: the run's TLS client, from which this worker makes its dial.
    tls: Option<Arc<TlsClient>>,
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
        tls: Option<Arc<TlsClient>>,
    ) -> Worker {
        Worker {
            cfg,
            codec,
            plan,
            ids,
            live,
            intervals,
            tls,
        }
    }

    /// Runs until every flow has finished or failed.
    pub fn run(self) -> io::Result<Outcome> {
        let http = self.cfg.protocol == Protocol::Http;
        match (self.cfg.mode.transport(), self.tls.clone()) {
            (Transport::Tcp, None) if http => self.drive::<Http<TcpStream>>(Box::new(Tcp)),
            (Transport::Tcp, Some(tls)) if http => {
                self.drive::<Http<TlsStream<TcpStream>>>(Box::new(tls.dial(Tcp)))
            }
            (Transport::Tcp, None) => self.drive::<Bytes<TcpStream>>(Box::new(Tcp)),
            (Transport::Tcp, Some(tls)) => {
                self.drive::<Bytes<TlsStream<TcpStream>>>(Box::new(tls.dial(Tcp)))
            }
            (Transport::Udp, _) => self.drive::<Datagrams<UdpSocket>>(Box::new(Udp)),
        }
    }

    /// The poll loop over flows of wire `W`, whose sockets `dial` opens.
    fn drive<W: Wire>(self, dial: Box<dyn Dial<Transport = W::Socket>>) -> io::Result<Outcome> {
        let cfg = &*self.cfg;
        let mut poll = Poll::new()?;
        let alarm = Alarm::new(poll.registry(), ALARM)?;
        let mut alarm_plan = AlarmPlan::default();
        let mut events = Events::with_capacity(EVENTS);
        let intervals = self
            .intervals
            .clone()
            .map(|tx| IntervalRecorder::new(self.plan.from, cfg.rate.is_some(), tx));
        let uploads = cfg.mode.load() == Load::Upload;
        let record = Recorder::new(self.plan, uploads, intervals, Instant::now());
        let registry = poll.registry().try_clone()?;
        let mut cx = Ctx::new(
            self.cfg.clone(),
            self.codec.clone(),
            registry,
            dial,
            record,
            SCRATCH,
        );
        let mut turns = Turns::<W>::new(&self.ids, &mut cx);
        loop {
            let now = Instant::now();
            turns.work(&mut cx, now);
            self.publish(&cx);
            if let Some(i) = &mut cx.record.intervals {
                i.rotate(now);
            }
            if turns.done(&cx) {
                break;
            }
            let until = cx.record.plan.until.filter(|_| !turns.stopping);
            let deadline = poll_deadline(now, cx.wakes.next(), until, TICK);
            let mut timeout = deadline.saturating_duration_since(now);
            if turns.has_queued() {
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
                let ready = Readiness {
                    readable: event.is_readable(),
                    writable: event.is_writable(),
                    closed: event.is_read_closed() || event.is_error(),
                };
                turns.on_event(&mut cx, event.token().0, ready, now);
            }
        }
        self.publish(&cx);
        if let Some(i) = cx.record.intervals.take() {
            i.finish();
        }
        Ok(Outcome {
            tally: cx.record.tally,
            last_completion: cx.record.last_completion,
            start_lag: cx.record.start_lag,
        })
    }

    fn publish<S>(&self, cx: &Ctx<S>) {
        let t = &cx.record.tally;
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

/// A worker's flows and what a turn does to them, apart from the poll.
pub struct Turns<W: Wire> {
    flows: Vec<Flow<W>>,
    run_queue: RunQueue,
    /// The measurement is over: flows finish as their last replies arrive.
    pub stopping: bool,
    due: Vec<(Instant, usize, Wake)>,
}

impl<W: Wire> Turns<W> {
    /// Flows for the connections `ids`, each asking to be opened at its time.
    pub fn new(ids: &[u32], cx: &mut Ctx<W::Socket>) -> Turns<W> {
        let flows: Vec<Flow<W>> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Flow::new(id, i, &cx.cfg))
            .collect();
        let t0 = cx.record.plan.t0;
        for (i, f) in flows.iter().enumerate() {
            cx.wakes.push(open_at(t0, cx.cfg.ramp, f.id), i, Wake::Open);
        }
        Turns {
            flows,
            run_queue: RunQueue::default(),
            stopping: false,
            due: Vec::new(),
        }
    }

    /// The flows.
    pub fn flows(&self) -> &[Flow<W>] {
        &self.flows
    }

    /// Steps 1–4 of a turn: the wake-ups due, the end of the measurement, the run queue,
    /// the guards.
    pub fn work(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let flows = &mut self.flows;
        cx.wakes.take_due(now, &mut self.due);
        for (at, i, wake) in self.due.drain(..) {
            if wake == Wake::Open {
                cx.record.opening(at, now);
            }
            flows[i].on_wake(cx, at, wake, now);
            self.run_queue.note(flows, i);
        }
        if !self.stopping && !cx.record.plan.may_send(now) {
            // The measurement is over: flows finish as their last replies arrive.
            self.stopping = true;
            for i in 0..flows.len() {
                flows[i].finish_if_idle(cx, now);
                self.run_queue.note(flows, i);
            }
        }
        // Only the flows queued before this pass run now; one that queues itself again
        // waits for the next turn, after a poll, so it cannot starve the others.
        for _ in 0..self.run_queue.len() {
            let Some(i) = self.run_queue.pop(flows) else {
                break;
            };
            flows[i].resume(cx, now);
            self.run_queue.note(flows, i);
        }
        let plan = cx.record.plan;
        let drained = plan.until.is_some_and(|u| now >= u + DRAIN_GRACE);
        // Cheap test first: the sweep over the flows runs only once nothing has moved
        // for the whole stall timeout, never on the hot path.
        let stalled = now.duration_since(cx.record.last_progress) >= cx.cfg.stall_timeout
            && flows.iter().any(Flow::outstanding);
        if drained || stalled {
            for f in flows.iter_mut() {
                f.abandon(cx, stalled, now);
            }
        }
    }

    /// Step 6: flow `i`'s socket reported readiness.
    pub fn on_event(&mut self, cx: &mut Ctx<W::Socket>, i: usize, ready: Readiness, now: Instant) {
        self.flows[i].on_event(cx, ready, now);
        self.run_queue.note(&mut self.flows, i);
    }

    /// Whether every flow has ended.
    pub fn done(&self, cx: &Ctx<W::Socket>) -> bool {
        cx.ended == self.flows.len()
    }

    /// Whether flows wait on the run queue: the next poll must not sleep.
    pub fn has_queued(&self) -> bool {
        !self.run_queue.queue.is_empty()
    }
}

/// Flows that a budget stopped with work left, in order, each at most once.
#[derive(Default)]
struct RunQueue {
    queue: VecDeque<usize>,
}

impl RunQueue {
    /// Queues flow `i` if it wants another turn and is not queued already.
    fn note<W: Wire>(&mut self, flows: &mut [Flow<W>], i: usize) {
        let f = &mut flows[i];
        if f.wants_turn() && !f.queued {
            f.queued = true;
            self.queue.push_back(i);
        }
    }

    fn pop<W: Wire>(&mut self, flows: &mut [Flow<W>]) -> Option<usize> {
        let i = self.queue.pop_front()?;
        flows[i].queued = false;
        Some(i)
    }

    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests;
