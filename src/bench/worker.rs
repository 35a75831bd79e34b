//! One worker thread: a mio poller driving its share of the connections.
//!
//! Read this first: a worker is the client-side mirror of loopd's event loop. Each
//! connection (a [`Flow`]) has an output buffer of requests not yet written, an expected
//! buffer of reply bytes not yet received, and a queue of the messages in flight with the
//! times they were meant to be sent and were sent. Every byte read is compared with the
//! front of the expected buffer; when a message's last byte arrives its latency is
//! recorded, and the flow sends the next one: at once in closed loop, at its scheduled
//! time in open loop. Sockets are registered once for both readable and writable, edge
//! triggered, so the steady state costs one `read` and one `write` per message and no
//! `epoll_ctl` at all.
//!
//! Time has three marks (see [`Plan`]): connections open from `t0` (spread by `--ramp`),
//! the measurement covers `from..until`, and after `until` flows stop sending and wait up to
//! [`DRAIN_GRACE`] for their last replies so that every byte sent is checked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, ErrorKind as IoKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token};
use socket2::{Domain, Socket, Type};

use super::alarm::Alarm;
use super::config::{BenchConfig, Mode, Stop};
use super::payload;
use super::report::{ErrorKind, Second, Tally};
use crate::buffer::Buffer;

/// How long after the measurement ends a flow waits for its outstanding replies. Replies
/// still missing then are errors (`unanswered`) over TCP and losses over UDP.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// A datagram not answered within this long is lost. Loopback round trips take
/// microseconds, a loaded LAN milliseconds; a second is unambiguous for both.
pub const LOSS_TIMEOUT: Duration = Duration::from_secs(1);
/// With replies outstanding and nothing at all received for this long, the server is
/// considered stuck and the worker gives up (counting the replies as unanswered), so a
/// counted run against a dead server still ends.
pub const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Open-loop send times are rounded up to this grid, so that every message due within one
/// quantum goes out after a single wake-up: each wake-up costs a `timerfd_settime` and an
/// `epoll_wait`, which at 50,000 messages/s would otherwise double the client's system calls
/// per message. 50 µs is the kernel's default timer slack, so a finer schedule would not be
/// kept anyway. Latency is measured from the rounded time, the time the schedule really meant.
pub const SCHEDULE_QUANTUM: Duration = Duration::from_micros(50);
/// The longest the worker sleeps without looking at the clock, so the end of the
/// measurement and the stall guard are noticed even with nothing scheduled.
const TICK: Duration = Duration::from_millis(100);
/// Read buffer shared by the worker's connections: large enough to take a whole socket
/// buffer's worth of pipelined replies in a few reads.
const SCRATCH: usize = 64 * 1024;
/// Send mode: bytes of whole messages queued per write, so small messages still go out in
/// large writes (a stream has no boundaries to keep).
const SEND_BATCH: usize = 64 * 1024;
/// Send mode: bytes one connection writes per turn before the others get theirs.
const SEND_BUDGET: u64 = 256 * 1024;
/// Events taken per poll; more wait for the next call.
const EVENTS: usize = 1024;
/// The alarm's token, above any flow index.
const ALARM: Token = Token(usize::MAX);

/// The run's time marks, shared by every worker.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// When connections start opening.
    pub t0: Instant,
    /// When the measurement starts (after the ramp and the warm-up).
    pub from: Instant,
    /// When the measurement ends, for a timed run.
    pub until: Option<Instant>,
}

impl Plan {
    fn measured(&self, intended: Instant) -> bool {
        intended >= self.from
    }

    fn in_window(&self, at: Instant) -> bool {
        at >= self.from && self.until.is_none_or(|u| at < u)
    }

    fn may_send(&self, intended: Instant) -> bool {
        self.until.is_none_or(|u| intended < u)
    }
}

/// Counters a worker publishes for the progress line and the timeline. One writer each,
/// so plain stores of the worker's totals suffice.
#[derive(Debug, Default)]
pub struct Live {
    /// Measured messages so far.
    pub messages: AtomicU64,
    /// Measured bytes written so far.
    pub bytes_sent: AtomicU64,
    /// Measured bytes read so far.
    pub bytes_received: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
    /// Connections established right now.
    pub open: AtomicU64,
}

impl Live {
    /// The worker's running totals (`t` unset).
    pub fn totals(&self) -> Second {
        Second {
            t: 0.0,
            messages: self.messages.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
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

/// Where a flow is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not opened yet (`--ramp`).
    Waiting,
    /// Connect in progress since the given instant.
    Connecting(Instant),
    /// Established: sending and receiving.
    Open,
    /// Done, normally.
    Finished,
    /// Ended by an error.
    Failed,
}

enum Sock {
    None,
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// One message sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    /// When the schedule meant it to go (equal to `sent` in closed loop).
    intended: Instant,
    sent: Instant,
    /// Bytes of its reply.
    len: usize,
    /// UDP: the reply arrived (replies may come out of order).
    answered: bool,
}

/// Something a flow asked to be woken for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    /// Open the connection (`--ramp`).
    Open,
    /// Give up on connect attempt number `.0`.
    ConnectTimeout(u32),
    /// Send the next open-loop message.
    Send,
    /// Declare the oldest unanswered datagram lost.
    Expire,
}

/// One connection (or, in UDP mode, one connected socket).
struct Flow {
    /// Global connection id, carried in every payload.
    id: u32,
    phase: Phase,
    sock: Sock,
    /// Connect attempts so far; stale timeouts name an older one.
    attempt: u32,
    /// Next sequence number.
    seq: u64,
    /// Counted runs: measured messages this flow still sends.
    quota: Option<u64>,
    /// Request bytes not yet written.
    out: Buffer,
    /// Reply bytes not yet received, exactly as they must arrive.
    expect: Buffer,
    inflight: VecDeque<Pending>,
    /// Bytes of the front message's reply received so far.
    front_got: usize,
    /// Open loop: the intended send time of the next message.
    next_due: Option<Instant>,
    /// The send wake-up currently in the heap, if any.
    armed: Option<Instant>,
    /// Send mode: bytes written in all, to count whole messages.
    written: u64,
    /// UDP: the last send would have blocked; wait for writable.
    blocked: bool,
    /// UDP: the loss-timeout wake-up currently in the heap, if any.
    expiry: Option<Instant>,
    /// Messages sent on the current connection (connect mode: exactly one).
    sent_here: u64,
}

/// Everything a flow touches besides itself.
struct Ctx<'a> {
    cfg: &'a BenchConfig,
    plan: Plan,
    registry: Registry,
    tally: Tally,
    wakes: BinaryHeap<Reverse<(Instant, usize, Wake)>>,
    /// Open loop: each flow's interval between messages.
    interval: Option<Duration>,
    /// Payload scratch and encoded request/reply scratch.
    msg: Vec<u8>,
    wire: Vec<u8>,
    /// Flows established right now.
    open: u64,
    /// Flows that are done (finished or failed); the worker ends when all are.
    ended: usize,
    last_progress: Instant,
    last_completion: Option<Instant>,
}

/// A worker thread's share of the run.
pub struct Worker {
    cfg: Arc<BenchConfig>,
    plan: Plan,
    /// Global ids of this worker's connections.
    ids: Vec<u32>,
    live: Arc<Live>,
}

impl Worker {
    /// A worker for the connections with global ids `ids`.
    pub fn new(cfg: Arc<BenchConfig>, plan: Plan, ids: Vec<u32>, live: Arc<Live>) -> Worker {
        Worker {
            cfg,
            plan,
            ids,
            live,
        }
    }

    /// Runs until every flow has finished or failed.
    pub fn run(self) -> io::Result<Outcome> {
        let cfg = &*self.cfg;
        let mut poll = Poll::new()?;
        let alarm = Alarm::new(poll.registry(), ALARM)?;
        let mut events = Events::with_capacity(EVENTS);
        let mut scratch = vec![0u8; SCRATCH];
        let mut ctx = Ctx {
            cfg,
            plan: self.plan,
            registry: poll.registry().try_clone()?,
            tally: Tally::new(),
            wakes: BinaryHeap::new(),
            interval: cfg
                .rate
                .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r)),
            msg: vec![0; cfg.size],
            wire: Vec::with_capacity(cfg.size + 8),
            open: 0,
            ended: 0,
            last_progress: Instant::now(),
            last_completion: None,
        };
        let mut flows: Vec<Flow> = self.ids.iter().map(|&id| Flow::new(id, cfg)).collect();
        for (i, f) in flows.iter().enumerate() {
            let at = match cfg.ramp {
                Some(per_sec) => self.plan.t0 + Duration::from_secs_f64(f64::from(f.id) / per_sec),
                None => self.plan.t0,
            };
            ctx.wakes.push(Reverse((at, i, Wake::Open)));
        }
        let mut stopping = false;
        let mut due_now = Vec::new();
        let mut alarm_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            // Take the due wake-ups first: handling one may schedule another for `now`,
            // which belongs to the next turn (after a poll), not to this one.
            while let Some(&Reverse(due)) = ctx.wakes.peek().filter(|w| w.0 .0 <= now) {
                ctx.wakes.pop();
                due_now.push(due);
            }
            for (at, i, wake) in due_now.drain(..) {
                flows[i].on_wake(&mut ctx, i, at, wake, now);
            }
            if !stopping && !ctx.plan.may_send(now) {
                // The measurement is over: flows finish as their last replies arrive.
                stopping = true;
                for (i, f) in flows.iter_mut().enumerate() {
                    f.finish_if_idle(&mut ctx, i, now);
                }
            }
            let drained = ctx.plan.until.is_some_and(|u| now >= u + DRAIN_GRACE);
            // Cheap test first: the sweep over the flows runs only once nothing has been
            // received for the whole stall limit, never on the hot path.
            let stalled = now.duration_since(ctx.last_progress) >= STALL_LIMIT
                && flows.iter().any(|f| !f.inflight.is_empty());
            if drained || stalled {
                for f in &mut flows {
                    f.abandon(&mut ctx, stalled, now);
                }
            }
            self.publish(&ctx);
            if ctx.ended == flows.len() {
                break;
            }
            let next_wake = ctx.wakes.peek().map(|&Reverse((at, _, _))| at);
            let next = match ctx.plan.until.filter(|_| !stopping) {
                Some(until) => next_wake.map_or(until, |w| w.min(until)),
                None => next_wake.unwrap_or(now + TICK),
            };
            let mut timeout = next.saturating_duration_since(now).min(TICK);
            if Alarm::PRECISE && !timeout.is_zero() && timeout < TICK {
                // The alarm fires at the exact instant; the poll timeout, which epoll rounds
                // up to whole milliseconds, is only the backstop. Re-arm only for an earlier
                // instant than the one already set.
                if alarm_at.is_none_or(|at| next < at || at <= now) {
                    alarm.set(timeout)?;
                    alarm_at = Some(next);
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
                flows[i].on_event(&mut ctx, i, event, &mut scratch, now);
            }
        }
        self.publish(&ctx);
        Ok(Outcome {
            tally: ctx.tally,
            last_completion: ctx.last_completion,
        })
    }

    fn publish(&self, ctx: &Ctx<'_>) {
        let t = &ctx.tally;
        self.live.messages.store(t.messages, Relaxed);
        self.live.bytes_sent.store(t.bytes_sent, Relaxed);
        self.live.bytes_received.store(t.bytes_received, Relaxed);
        self.live.errors.store(t.errors.values().sum(), Relaxed);
        self.live.open.store(ctx.open, Relaxed);
    }
}

impl Ctx<'_> {
    /// The open-loop send time for schedule point `due`: the next multiple of
    /// [`SCHEDULE_QUANTUM`] after `t0`.
    fn on_grid(&self, due: Instant) -> Instant {
        let q = SCHEDULE_QUANTUM.as_nanos();
        let offset = due
            .saturating_duration_since(self.plan.t0)
            .as_nanos()
            .div_ceil(q)
            * q;
        self.plan.t0 + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }

    fn count_sent(&mut self, n: usize, now: Instant) {
        if self.plan.in_window(now) {
            self.tally.bytes_sent += n as u64;
        }
    }

    fn count_received(&mut self, n: usize, now: Instant) {
        self.last_progress = now;
        if self.plan.in_window(now) {
            self.tally.bytes_received += n as u64;
        }
    }

    /// A reply is complete: record its latency if it belongs to the measurement.
    fn complete(&mut self, p: &Pending, now: Instant) {
        if self.plan.measured(p.intended) && self.plan.in_window(now) {
            let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.tally
                .latency
                .saturating_record(ns(now.duration_since(p.intended)));
            self.tally
                .uncorrected
                .saturating_record(ns(now.duration_since(p.sent)));
            self.tally.messages += 1;
            self.last_completion = Some(now);
        }
    }
}

impl Flow {
    fn new(id: u32, cfg: &BenchConfig) -> Flow {
        let quota = match cfg.stop {
            Stop::Count(n) => {
                let c = cfg.connections as u64;
                Some(n / c + u64::from(u64::from(id) < n % c))
            }
            Stop::After(_) => None,
        };
        Flow {
            id,
            phase: Phase::Waiting,
            sock: Sock::None,
            attempt: 0,
            seq: 0,
            quota,
            out: Buffer::new(),
            expect: Buffer::new(),
            inflight: VecDeque::new(),
            front_got: 0,
            next_due: None,
            armed: None,
            written: 0,
            blocked: false,
            expiry: None,
            sent_here: 0,
        }
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>, i: usize, at: Instant, wake: Wake, now: Instant) {
        match wake {
            Wake::Open if self.phase == Phase::Waiting => {
                if ctx.plan.may_send(now) {
                    self.open(ctx, i, now);
                } else {
                    // The ramp outlasted the measurement; this one is not needed.
                    self.set_phase(ctx, Phase::Finished);
                }
            }
            Wake::ConnectTimeout(attempt) if attempt == self.attempt => {
                if let Phase::Connecting(since) = self.phase {
                    let waited = now.duration_since(since);
                    self.fail(ctx, ErrorKind::ConnectTimeout, || {
                        format!("not established after {waited:.1?}")
                    });
                }
            }
            Wake::Send if self.armed == Some(at) => {
                self.armed = None;
                self.pump(ctx, i, now);
            }
            Wake::Expire if self.expiry == Some(at) => {
                self.expiry = None;
                self.expire(ctx, now);
                self.arm_expiry(ctx, i);
                self.pump(ctx, i, now);
            }
            _ => {} // stale: the flow moved on since this was scheduled
        }
    }

    fn on_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        event: &mio::event::Event,
        scratch: &mut [u8],
        now: Instant,
    ) {
        match self.phase {
            Phase::Connecting(_) => self.check_connected(ctx, i, now),
            Phase::Open => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    match ctx.cfg.mode {
                        Mode::Udp => self.read_datagrams(ctx, scratch, now),
                        _ => self.read_stream(ctx, scratch, event.is_read_closed(), now),
                    }
                }
                if event.is_writable() {
                    self.blocked = false;
                }
                self.pump(ctx, i, now);
            }
            _ => {}
        }
    }

    // ---- opening and closing -------------------------------------------------------------

    /// Every phase change goes through here, which keeps the worker's counts of open and
    /// ended flows true without sweeping the flows to recount them.
    fn set_phase(&mut self, ctx: &mut Ctx<'_>, phase: Phase) {
        let ended = |p: Phase| matches!(p, Phase::Finished | Phase::Failed);
        match (self.phase == Phase::Open, phase == Phase::Open) {
            (false, true) => ctx.open += 1,
            (true, false) => ctx.open -= 1,
            _ => {}
        }
        match (ended(self.phase), ended(phase)) {
            (false, true) => ctx.ended += 1,
            (true, false) => ctx.ended -= 1,
            _ => {}
        }
        self.phase = phase;
    }

    /// Starts connecting (TCP) or binds and connects a datagram socket (UDP).
    fn open(&mut self, ctx: &mut Ctx<'_>, i: usize, now: Instant) {
        self.attempt += 1;
        self.sent_here = 0;
        let source = ctx.cfg.sources.as_ref().map(|s| s.pick(self.id as usize));
        let opened = match ctx.cfg.mode {
            Mode::Udp => open_udp(ctx.cfg.target, source).map(Sock::Udp),
            _ => open_tcp(ctx.cfg.target, source).map(Sock::Tcp),
        };
        let mut sock = match opened {
            Ok(s) => s,
            Err(e) => {
                let kind = connect_error_kind(&e);
                return self.fail(ctx, kind, || connect_failure(&e, source));
            }
        };
        let token = Token(i);
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = match &mut sock {
            Sock::Tcp(s) => ctx.registry.register(s, token, both),
            Sock::Udp(s) => ctx.registry.register(s, token, both),
            Sock::None => unreachable!("just opened"),
        };
        self.sock = sock;
        if let Err(e) = registered {
            return self.fail(ctx, ErrorKind::ConnectOther, || format!("register: {e}"));
        }
        match ctx.cfg.mode {
            // A connected UDP socket is ready at once: there is no handshake.
            Mode::Udp => self.established(ctx, i, now, now),
            _ => {
                self.set_phase(ctx, Phase::Connecting(now));
                let timeout = now + ctx.cfg.connect_timeout;
                ctx.wakes
                    .push(Reverse((timeout, i, Wake::ConnectTimeout(self.attempt))));
            }
        }
    }

    /// A connecting socket reported readiness: established, failed, or not yet.
    fn check_connected(&mut self, ctx: &mut Ctx<'_>, i: usize, now: Instant) {
        let Phase::Connecting(since) = self.phase else {
            return;
        };
        let Sock::Tcp(stream) = &self.sock else {
            return;
        };
        let failure = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                // Spurious readiness: the handshake is still under way.
                Err(e) if e.kind() == IoKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        match failure {
            Some(e) => {
                let source = ctx.cfg.sources.as_ref().map(|s| s.pick(self.id as usize));
                self.fail(ctx, connect_error_kind(&e), || connect_failure(&e, source))
            }
            None => self.established(ctx, i, since, now),
        }
    }

    fn established(&mut self, ctx: &mut Ctx<'_>, i: usize, since: Instant, now: Instant) {
        self.set_phase(ctx, Phase::Open);
        ctx.last_progress = now;
        // Connect mode measures churn: only connections made in the window count.
        let counted = ctx.cfg.mode != Mode::Connect || ctx.plan.in_window(now);
        if counted {
            ctx.tally.established += 1;
        }
        if counted && ctx.cfg.mode != Mode::Udp {
            let ns = u64::try_from(now.duration_since(since).as_nanos()).unwrap_or(u64::MAX);
            ctx.tally.connect.saturating_record(ns);
        }
        if let Some(interval) = ctx.interval {
            // Join the schedule at this connection's first slot from now on: slots before it
            // could not have been sent by anyone.
            let offset = Duration::from_secs_f64(
                f64::from(self.id) / ctx.cfg.rate.expect("open loop has a rate"),
            );
            let mut due = ctx.plan.t0 + offset;
            if due < now {
                let missed = now.duration_since(due).as_nanos() / interval.as_nanos().max(1);
                due += interval * u32::try_from(missed).unwrap_or(u32::MAX);
            }
            self.next_due = Some(due);
        }
        self.pump(ctx, i, now);
    }

    /// Ends the flow normally, closing the socket (a FIN: every reply has been read).
    fn finish(&mut self, ctx: &mut Ctx<'_>) {
        // Dropping the socket closes it, which also removes it from the poller.
        self.sock = Sock::None;
        self.set_phase(ctx, Phase::Finished);
    }

    /// Ends the flow with an error of `kind`.
    fn fail(&mut self, ctx: &mut Ctx<'_>, kind: ErrorKind, what: impl FnOnce() -> String) {
        let id = self.id;
        if kind.is_connect() {
            ctx.tally.failed += 1;
        }
        ctx.tally
            .error(kind, 1, || format!("connection {id}: {}", what()));
        self.sock = Sock::None;
        self.inflight.clear();
        self.expect.release();
        self.out.release();
        self.set_phase(ctx, Phase::Failed);
    }

    /// After the measurement: finish now if nothing is outstanding.
    fn finish_if_idle(&mut self, ctx: &mut Ctx<'_>, i: usize, now: Instant) {
        match self.phase {
            Phase::Waiting => self.set_phase(ctx, Phase::Finished),
            Phase::Open => self.pump(ctx, i, now),
            _ => {}
        }
    }

    /// The drain ran out or the server stalled: whatever is still outstanding is lost.
    fn abandon(&mut self, ctx: &mut Ctx<'_>, stalled: bool, now: Instant) {
        if let Phase::Connecting(since) = self.phase {
            let waited = now.duration_since(since);
            return self.fail(ctx, ErrorKind::ConnectTimeout, || {
                format!("still connecting when the run ended ({waited:.1?} in)")
            });
        }
        if self.phase != Phase::Open {
            return;
        }
        let outstanding = self.inflight.len() as u64;
        if ctx.cfg.mode == Mode::Udp {
            let lost = self
                .inflight
                .iter()
                .filter(|p| !p.answered && ctx.plan.measured(p.intended))
                .count() as u64;
            ctx.tally.udp.lost += lost;
        } else if outstanding > 0 {
            let id = self.id;
            let why = if stalled {
                format!("nothing received for {STALL_LIMIT:?}")
            } else {
                format!("not answered within {DRAIN_GRACE:?} after the run")
            };
            ctx.tally.error(ErrorKind::Unanswered, outstanding, || {
                format!("connection {id}: {outstanding} replies outstanding, {why}")
            });
        }
        self.inflight.clear();
        self.finish(ctx);
    }

    // ---- sending ---------------------------------------------------------------------------

    /// Sends what the load model allows now, writes it out, and finishes the flow when its
    /// part is done.
    fn pump(&mut self, ctx: &mut Ctx<'_>, i: usize, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        match ctx.cfg.mode {
            Mode::Echo | Mode::Connect | Mode::Udp => self.send_due(ctx, i, now),
            Mode::Send => self.stream_out(ctx, i, now),
            Mode::Recv => {}
        }
        if self.phase != Phase::Open {
            return;
        }
        if !self.out.is_empty() && !self.flush(ctx, now) {
            return;
        }
        let idle = self.inflight.is_empty() && self.out.is_empty();
        let done_sending = !ctx.plan.may_send(now) || self.quota == Some(0);
        if ctx.cfg.mode == Mode::Connect && idle && self.sent_here > 0 {
            // Churn: this connection did its round trip; close it and open the next.
            self.finish(ctx);
            if !done_sending {
                self.open(ctx, i, now);
            }
        } else if idle && done_sending {
            self.finish(ctx);
        }
    }

    /// Request/response modes: queue every message the load model allows now.
    fn send_due(&mut self, ctx: &mut Ctx<'_>, i: usize, now: Instant) {
        let pipeline = match ctx.cfg.mode {
            Mode::Connect => 1,
            _ => ctx.cfg.pipeline,
        };
        while self.inflight.len() < pipeline && !self.blocked {
            if ctx.cfg.mode == Mode::Connect && self.sent_here > 0 {
                break;
            }
            let intended = match self.next_due.map(|due| ctx.on_grid(due)) {
                Some(due) if due > now => {
                    self.arm_send(ctx, i, due);
                    break;
                }
                Some(due) => due,
                None => now,
            };
            if !ctx.plan.may_send(intended) {
                break;
            }
            if !self.take_quota(ctx, intended) {
                break;
            }
            let sent = match ctx.cfg.mode {
                Mode::Udp => self.send_datagram(ctx, i, intended, now),
                _ => {
                    self.queue_request(ctx, intended, now);
                    true
                }
            };
            if !sent {
                // The message goes when the socket has room; its quota is not spent.
                self.return_quota(ctx, intended);
                break;
            }
            if let (Some(due), Some(interval)) = (self.next_due, ctx.interval) {
                self.next_due = Some(due + interval);
            }
        }
    }

    /// Queues one request and the exact reply it must get.
    fn queue_request(&mut self, ctx: &mut Ctx<'_>, intended: Instant, now: Instant) {
        let seq = self.next_seq();
        payload::fill(&mut ctx.msg, self.id, seq);
        let protocol = ctx.cfg.protocol;
        ctx.wire.clear();
        protocol.encode_request(&ctx.msg, &mut ctx.wire);
        self.out.extend(&ctx.wire);
        ctx.wire.clear();
        protocol.encode_reply(&ctx.msg, &mut ctx.wire);
        self.expect.extend(&ctx.wire);
        self.inflight.push_back(Pending {
            seq,
            intended,
            sent: now,
            len: protocol.reply_len(ctx.msg.len()),
            answered: false,
        });
    }

    /// Counted runs: spends one measured message of this flow's share, if any is left.
    /// Messages sent before the measurement (warm-up) are free.
    fn take_quota(&mut self, ctx: &Ctx<'_>, intended: Instant) -> bool {
        match &mut self.quota {
            Some(q) if ctx.plan.measured(intended) => {
                if *q == 0 {
                    return false;
                }
                *q -= 1;
                true
            }
            _ => true,
        }
    }

    fn return_quota(&mut self, ctx: &Ctx<'_>, intended: Instant) {
        if let Some(q) = &mut self.quota {
            if ctx.plan.measured(intended) {
                *q += 1;
            }
        }
    }

    /// Asks for a [`Wake::Send`] at `at`, unless one for that instant is already queued.
    fn arm_send(&mut self, ctx: &mut Ctx<'_>, i: usize, at: Instant) {
        if self.armed != Some(at) {
            ctx.wakes.push(Reverse((at, i, Wake::Send)));
            self.armed = Some(at);
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        self.sent_here += 1;
        seq
    }

    /// Send mode: keep the socket's send buffer full of whole messages, writing at most
    /// [`SEND_BUDGET`] per turn so one fast connection cannot keep the worker from its
    /// clock and its other connections; the rest is scheduled for the next turn.
    fn stream_out(&mut self, ctx: &mut Ctx<'_>, i: usize, now: Instant) {
        let start = self.written;
        while self.written - start < SEND_BUDGET {
            while self.out.len() < SEND_BATCH {
                if !ctx.plan.may_send(now) || !self.take_quota(ctx, now) {
                    break;
                }
                let seq = self.next_seq();
                payload::fill(&mut ctx.msg, self.id, seq);
                self.out.extend(&ctx.msg);
            }
            let before = self.written;
            if self.out.is_empty() || !self.flush(ctx, now) || self.written == before {
                return; // nothing more to send, failed, or the socket is full
            }
        }
        // Budget spent with the socket still taking bytes: continue next turn.
        self.arm_send(ctx, i, now);
    }

    /// Writes queued bytes until done or `WouldBlock` (the writable edge resumes us).
    /// Returns false if the flow failed.
    fn flush(&mut self, ctx: &mut Ctx<'_>, now: Instant) -> bool {
        let Sock::Tcp(stream) = &mut self.sock else {
            return true;
        };
        while !self.out.is_empty() {
            match stream.write(self.out.as_slice()) {
                Ok(n) => {
                    self.out.consume(n);
                    ctx.count_sent(n, now);
                    if ctx.cfg.mode == Mode::Send {
                        let size = ctx.cfg.size as u64;
                        let whole = (self.written + n as u64) / size - self.written / size;
                        self.written += n as u64;
                        if ctx.plan.in_window(now) {
                            ctx.tally.messages += whole;
                            ctx.last_completion = Some(now);
                        }
                    }
                }
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(e) if e.kind() == IoKind::Interrupted => {}
                Err(e) => {
                    self.fail(ctx, established_error_kind(&e), || format!("write: {e}"));
                    return false;
                }
            }
        }
        if self.out.is_empty() {
            self.out.release();
        }
        true
    }

    // ---- receiving -------------------------------------------------------------------------

    /// Reads until the socket is drained, checking every byte. `peer_finished` (the event
    /// carried the peer's FIN) means reading on to end-of-file: a FIN that arrives with the
    /// last data gives no later edge.
    fn read_stream(
        &mut self,
        ctx: &mut Ctx<'_>,
        scratch: &mut [u8],
        peer_finished: bool,
        now: Instant,
    ) {
        loop {
            let Sock::Tcp(stream) = &mut self.sock else {
                return;
            };
            match stream.read(scratch) {
                Ok(0) => return self.peer_closed(ctx),
                Ok(n) => {
                    ctx.count_received(n, now);
                    if matches!(ctx.cfg.mode, Mode::Echo | Mode::Connect) {
                        if let Err((kind, what)) = self.check_echo(ctx, &scratch[..n], now) {
                            return self.fail(ctx, kind, || what);
                        }
                    }
                    // A short read drained the socket; the next arrival is a new edge.
                    if n < scratch.len() && !peer_finished {
                        return;
                    }
                }
                Err(e) if e.kind() == IoKind::WouldBlock => return,
                Err(e) if e.kind() == IoKind::Interrupted => {}
                Err(e) => {
                    let kind = established_error_kind(&e);
                    return self.fail(ctx, kind, || format!("read: {e}"));
                }
            }
        }
    }

    /// The server closed its side. That is an error unless the flow was finished with it.
    fn peer_closed(&mut self, ctx: &mut Ctx<'_>) {
        let (kind, what) = if self.front_got > 0 {
            let (seq, len, got) = (self.inflight[0].seq, self.inflight[0].len, self.front_got);
            (
                ErrorKind::ShortEcho,
                format!("closed after {got} of {len} reply bytes of message {seq}"),
            )
        } else {
            let n = self.inflight.len();
            (
                ErrorKind::UnexpectedClose,
                format!("server closed the connection with {n} replies outstanding"),
            )
        };
        self.fail(ctx, kind, || what);
    }

    /// Compares received bytes with the expected replies and completes whole messages.
    fn check_echo(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        now: Instant,
    ) -> Result<(), (ErrorKind, String)> {
        let expected = self.expect.as_slice();
        let n = data.len().min(expected.len());
        if data[..n] != expected[..n] {
            let at = data[..n]
                .iter()
                .zip(&expected[..n])
                .position(|(a, b)| a != b)
                .expect("slices differ");
            let mut offset = self.front_got + at;
            let mut seq = 0;
            for p in &self.inflight {
                seq = p.seq;
                if offset < p.len {
                    break;
                }
                offset -= p.len;
            }
            let what = payload::describe_mismatch(offset, expected[at], data[at]);
            return Err((ErrorKind::Mismatch, format!("message {seq}: {what}")));
        }
        if data.len() > expected.len() {
            let extra = data.len() - expected.len();
            return Err((
                ErrorKind::Mismatch,
                format!("{extra} bytes arrived that were never sent"),
            ));
        }
        self.expect.consume(n);
        let mut got = self.front_got + n;
        while let Some(&p) = self.inflight.front() {
            if got < p.len {
                break;
            }
            got -= p.len;
            self.inflight.pop_front();
            ctx.complete(&p, now);
        }
        self.front_got = got;
        if self.expect.is_empty() {
            self.expect.release();
        }
        Ok(())
    }

    // ---- UDP -------------------------------------------------------------------------------

    /// Sends one datagram; false if the socket has no room (try again when writable).
    fn send_datagram(
        &mut self,
        ctx: &mut Ctx<'_>,
        i: usize,
        intended: Instant,
        now: Instant,
    ) -> bool {
        let Sock::Udp(socket) = &self.sock else {
            return false;
        };
        payload::fill(&mut ctx.msg, self.id, self.seq);
        match socket.send(&ctx.msg) {
            Ok(n) => {
                ctx.count_sent(n, now);
                let seq = self.next_seq();
                if ctx.plan.measured(intended) {
                    ctx.tally.udp.sent += 1;
                }
                self.inflight.push_back(Pending {
                    seq,
                    intended,
                    sent: now,
                    len: n,
                    answered: false,
                });
                self.arm_expiry(ctx, i);
                true
            }
            Err(e) if e.kind() == IoKind::WouldBlock => {
                self.blocked = true;
                false
            }
            Err(e) => {
                self.fail(ctx, datagram_error_kind(&e), || format!("send: {e}"));
                false
            }
        }
    }

    /// Reads every waiting datagram and matches each to the message it answers.
    fn read_datagrams(&mut self, ctx: &mut Ctx<'_>, scratch: &mut [u8], now: Instant) {
        loop {
            let Sock::Udp(socket) = &self.sock else {
                return;
            };
            let n = match socket.recv(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(e) => {
                    let kind = datagram_error_kind(&e);
                    return self.fail(ctx, kind, || format!("receive: {e}"));
                }
            };
            ctx.count_received(n, now);
            self.match_datagram(ctx, &scratch[..n], now);
        }
        while self.inflight.front().is_some_and(|p| p.answered) {
            self.inflight.pop_front();
        }
    }

    fn match_datagram(&mut self, ctx: &mut Ctx<'_>, data: &[u8], now: Instant) {
        let id = self.id;
        let Some((conn, seq)) = payload::parse_header(data).filter(|&(c, _)| c == id) else {
            return ctx.tally.error(ErrorKind::Mismatch, 1, || {
                format!(
                    "connection {id}: a {}-byte datagram that is not one of its own",
                    data.len()
                )
            });
        };
        let slot = self
            .inflight
            .front()
            .and_then(|front| usize::try_from(seq.checked_sub(front.seq)?).ok())
            .filter(|&k| k < self.inflight.len());
        let Some(k) = slot.filter(|&k| !self.inflight[k].answered) else {
            // Answered already, or declared lost before it came.
            if ctx.plan.in_window(now) {
                ctx.tally.udp.late += 1;
            }
            return;
        };
        payload::fill(&mut ctx.msg, conn, seq);
        if data != ctx.msg.as_slice() {
            let what = match data.iter().zip(&ctx.msg).position(|(a, b)| a != b) {
                Some(at) => payload::describe_mismatch(at, ctx.msg[at], data[at]),
                None => format!("{} bytes came back for {} sent", data.len(), ctx.msg.len()),
            };
            return ctx.tally.error(ErrorKind::Mismatch, 1, || {
                format!("connection {id}, datagram {seq}: {what}")
            });
        }
        let p = &mut self.inflight[k];
        p.answered = true;
        let p = *p;
        if ctx.plan.measured(p.intended) {
            ctx.tally.udp.received += 1;
        }
        ctx.complete(&p, now);
    }

    /// Schedules the loss check for the oldest datagram in flight, unless one is pending.
    fn arm_expiry(&mut self, ctx: &mut Ctx<'_>, i: usize) {
        if let (None, Some(front)) = (self.expiry, self.inflight.front()) {
            let at = front.sent + LOSS_TIMEOUT;
            ctx.wakes.push(Reverse((at, i, Wake::Expire)));
            self.expiry = Some(at);
        }
    }

    /// Declares datagrams older than the loss timeout lost, oldest first.
    fn expire(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        while let Some(&p) = self.inflight.front() {
            if !p.answered && now.duration_since(p.sent) < LOSS_TIMEOUT {
                break;
            }
            if !p.answered && ctx.plan.measured(p.intended) {
                ctx.tally.udp.lost += 1;
            }
            self.inflight.pop_front();
        }
    }
}

/// Creates a non-blocking TCP socket, binds it to `source` if given, and starts connecting.
fn open_tcp(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    // Requests are small and latency-bound; Nagle would hold them back.
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        bind_source(&socket, ip)?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Binds to `ip` with port 0. With `IP_BIND_ADDRESS_NO_PORT` the kernel picks the port at
/// connect time from the full 4-tuple, so each source address gets its own ephemeral range
/// towards the target rather than one port reserved across all destinations.
fn bind_source(socket: &Socket, ip: IpAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid int option value of the right size, on a socket we own.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    socket.bind(&SocketAddr::new(ip, 0).into())
}

/// A UDP socket bound to `source` (or any local address) and connected to `target`, so the
/// kernel filters out datagrams from anyone else and reports ICMP errors to us.
fn open_udp(target: SocketAddr, source: Option<IpAddr>) -> io::Result<UdpSocket> {
    let local = source.unwrap_or(match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let socket = std::net::UdpSocket::bind(SocketAddr::new(local, 0))?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket))
}

fn connect_error_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        IoKind::ConnectionRefused => ErrorKind::ConnectRefused,
        IoKind::TimedOut => ErrorKind::ConnectTimeout,
        IoKind::ConnectionReset => ErrorKind::ConnectReset,
        _ => ErrorKind::ConnectOther,
    }
}

fn connect_failure(e: &io::Error, source: Option<IpAddr>) -> String {
    if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
        let from = source.map_or("this address".to_string(), |ip| ip.to_string());
        return format!(
            "connect: {e} (no local port left from {from}: add addresses with --source)"
        );
    }
    format!("connect: {e}")
}

/// On a connected UDP socket, a refusal is the ICMP "port unreachable" answering an
/// earlier datagram: nothing listens at the target.
fn datagram_error_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        IoKind::ConnectionRefused => ErrorKind::ConnectRefused,
        _ => ErrorKind::Io,
    }
}

fn established_error_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        IoKind::ConnectionReset | IoKind::BrokenPipe | IoKind::ConnectionAborted => {
            ErrorKind::Reset
        }
        _ => ErrorKind::Io,
    }
}
