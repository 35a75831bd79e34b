//! One connection's life (in UDP mode, one connected socket's): a [`Flow`].
//!
//! **Read this first.** A flow has a request stream and a reply stream, both made of
//! messages that are functions of `(connection, sequence number)` (see [`payload`]). It
//! keeps three counters over them — the next message to queue, how far the requests are
//! written, how far the replies are received and checked — and the times of the messages
//! queued and not yet answered. Nothing else: no payload bytes are stored. The load policy
//! decides when messages are queued:
//!
//! | load | queued | done when |
//! | --- | --- | --- |
//! | round trip (echo, udp) | up to `--pipeline` in flight; in open loop at their slots | the measurement ended and every reply is in |
//! | upload (send) | enough whole messages to keep a large write going | the same, with every byte written |
//! | download (recv) | nothing | the measurement ended |
//! | churn (connect) | one per connection | one round trip, then close and open the next |
//!
//! ```text
//!   Waiting ──open──▶ Connecting ──handshake──▶ Open ──done──▶ Finished
//!      │                  │                      │
//!      └── ramp outlasted │ refused, timed out   └── reset, mismatch, early close ──▶ Failed
//!          the run        └────────────────────────────────────────────────────────▶ Failed
//! ```
//!
//! Every phase change goes through `Flow::set_phase`, which keeps the worker's counts of
//! open and ended flows without sweeping the flows.
//!
//! [`payload`]: crate::payload

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

use crate::config::{BenchConfig, Expect, Load, Stop, Transport};
use crate::errors::{connect_failure, ErrorKind};
use crate::payload::{self, check_chargen, Codec, Cursor, Dir, Gather};
use crate::report::files::IntervalRecorder;
use crate::report::latency::nanos;
use crate::report::Tally;
use crate::schedule::{quota, send_lag, OpenLoop, Plan, Slot, Wake, Wakes};
use crate::tcp::{self, Handshake, ReadEnd, WriteEnd, RECV_BUDGET, SEND_BUDGET};
use crate::udp;

/// How long after the measurement ends a flow waits for its outstanding replies. Replies
/// still missing then are errors (`unanswered`) over TCP and losses over UDP.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Upload: bytes of whole messages kept queued ahead of the writer, so small messages still
/// go out in large writes (a stream has no boundaries to keep).
const UPLOAD_AHEAD: u64 = 256 * 1024;

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

/// Where a flow is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
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

/// One message queued and not yet answered.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// Its sequence number.
    pub seq: u64,
    /// When the schedule meant it to go (equal to `sent` in closed loop).
    pub intended: Instant,
    /// When it was queued for the socket.
    pub sent: Instant,
    /// UDP: the reply arrived (replies may come out of order).
    pub answered: bool,
}

/// Everything a flow touches besides itself: one per worker.
pub struct Ctx<'a> {
    /// The run's settings.
    pub cfg: &'a BenchConfig,
    /// The time marks.
    pub plan: Plan,
    /// Message generation and checking.
    pub codec: &'a Codec,
    /// Where sockets are registered.
    pub registry: Registry,
    /// What this worker measured.
    pub tally: Tally,
    /// Wake-ups the flows asked for.
    pub wakes: Wakes,
    /// The open-loop schedule, if any.
    pub open_loop: Option<OpenLoop>,
    /// Iovec layout for writes.
    pub gather: Gather,
    /// A datagram being built.
    pub datagram: Vec<u8>,
    /// The worker's read buffer.
    pub scratch: Box<[u8]>,
    /// Flows established right now.
    pub open: u64,
    /// Flows that are done (finished or failed); the worker ends when all are.
    pub ended: usize,
    /// The last time any byte moved or a connection was established.
    pub last_progress: Instant,
    /// The completion time of the last measured message.
    pub last_completion: Option<Instant>,
    /// `--hlog`: this second's histograms.
    pub intervals: Option<IntervalRecorder>,
}

impl Ctx<'_> {
    fn count_sent(&mut self, n: usize, now: Instant, backend: Option<usize>) {
        self.last_progress = now;
        if now < self.plan.from {
            self.tally.lead_in.bytes_sent += n as u64;
        } else if self.plan.in_window(now) {
            self.tally.bytes_sent += n as u64;
            if let Some(b) = backend {
                self.tally.backends[b].bytes_sent += n as u64;
            }
        }
    }

    fn count_received(&mut self, n: usize, now: Instant, backend: Option<usize>) {
        self.last_progress = now;
        if now < self.plan.from {
            self.tally.lead_in.bytes_received += n as u64;
        } else if self.plan.in_window(now) {
            self.tally.bytes_received += n as u64;
            if let Some(b) = backend {
                self.tally.backends[b].bytes_received += n as u64;
            }
        }
    }

    /// A reply is complete: time it if its message was sent inside the window, whenever
    /// the reply arrived (the worker waits at most [`DRAIN_GRACE`] after the window).
    fn complete(&mut self, p: &Pending, now: Instant, backend: Option<usize>) {
        if now < self.plan.from {
            self.tally.lead_in.messages += 1;
        }
        if self.plan.measured(p.intended) {
            let latency = nanos(now.duration_since(p.intended));
            let uncorrected = nanos(now.duration_since(p.sent));
            self.tally.latency.saturating_record(latency);
            self.tally.uncorrected.saturating_record(uncorrected);
            if let Some(i) = &mut self.intervals {
                i.record(now, latency, uncorrected);
            }
            self.tally.messages += 1;
            self.last_completion = Some(now);
            if let Some(b) = backend {
                let b = &mut self.tally.backends[b];
                b.latency.saturating_record(latency);
                b.messages += 1;
            }
        }
    }
}

/// The two streams of the current connection.
#[derive(Debug, Default)]
struct Streams {
    /// The next message to queue.
    next_seq: u64,
    /// How far the requests are written.
    written: Cursor,
    /// How far the replies are received and checked.
    replied: Cursor,
    /// Messages queued and not yet answered, oldest first.
    inflight: VecDeque<Pending>,
    /// Download: bytes received on this connection (the offset in the expected stream).
    received: u64,
    /// Something came back inside the window.
    served: bool,
    /// Which server answers this connection (`--per-backend`).
    backend: Backend,
}

/// The request that asks a loopd `line` service which backend it is.
const ASK_SERVER: &[u8] = b"SERVER\n";

/// The longest answer to `SERVER` accepted: a server id (at most 255 bytes), an address and
/// a loop number.
const MAX_SERVER_REPLY: usize = 512;

/// Which server answers a connection (`--per-backend`). Asked once, before the first
/// message: the answer is the first line on the reply stream.
#[derive(Debug, Default)]
enum Backend {
    /// Not asked (`--per-backend` is off).
    #[default]
    Unasked,
    /// `SERVER` asked: how much of the request is written, and the answer so far.
    Asking { written: usize, answer: Vec<u8> },
    /// Answered: the backend's index in the worker's tally.
    Known(usize),
}

impl Backend {
    fn index(&self) -> Option<usize> {
        match self {
            Backend::Known(i) => Some(*i),
            _ => None,
        }
    }
}

impl Streams {
    /// A connection's streams, continuing the sequence numbers of the previous one.
    fn from(seq: u64) -> Streams {
        let at = Cursor { seq, offset: 0 };
        Streams {
            next_seq: seq,
            written: at,
            replied: at,
            ..Streams::default()
        }
    }

    /// Replies can arrive for messages written at least in part, not beyond.
    fn reply_end(&self) -> u64 {
        self.written.seq + u64::from(self.written.offset > 0)
    }
}

/// One connection. See the [module documentation](self).
pub struct Flow {
    /// Global connection id, carried in every payload.
    pub id: u32,
    phase: Phase,
    sock: Sock,
    /// Connect attempts so far; stale timeouts name an older one.
    attempt: u32,
    /// Counted runs: measured messages this flow still sends.
    quota: Option<u64>,
    /// The run asked this flow for messages inside the window: always in a timed run, when
    /// its share is not zero in a counted one.
    asked: bool,
    streams: Streams,
    /// Open loop: the intended send time of the next message.
    next_due: Option<Instant>,
    /// The send wake-up currently asked for, if any.
    armed: Option<Instant>,
    /// UDP: the loss-timeout wake-up currently asked for, if any.
    expiry: Option<Instant>,
    /// The last write came up short or would block: wait for a writable edge.
    blocked: bool,
    /// The poller reported the peer's FIN: read to the end regardless of short reads.
    peer_closing: bool,
    /// The receive budget ran out with data possibly left.
    read_pending: bool,
    /// The send budget ran out with the socket still taking bytes.
    write_pending: bool,
    /// On the worker's run queue.
    pub queued: bool,
    /// Messages sent on the current connection (churn: exactly one).
    sent_here: u64,
}

impl Flow {
    /// A flow for connection `id`, not yet opened.
    pub fn new(id: u32, cfg: &BenchConfig) -> Flow {
        let quota = match cfg.stop {
            Stop::Count(n) => Some(quota(n, cfg.connections, id)),
            Stop::After(_) => None,
        };
        Flow {
            id,
            phase: Phase::Waiting,
            sock: Sock::None,
            attempt: 0,
            quota,
            asked: quota != Some(0),
            streams: Streams::default(),
            next_due: None,
            armed: None,
            expiry: None,
            blocked: false,
            peer_closing: false,
            read_pending: false,
            write_pending: false,
            queued: false,
            sent_here: 0,
        }
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a budget stopped this flow with work left: run it again next turn, without
    /// waiting for an event.
    pub fn wants_turn(&self) -> bool {
        self.phase == Phase::Open && (self.read_pending || self.write_pending)
    }

    /// Whether the flow waits on the server: replies outstanding or requests unwritten.
    pub fn outstanding(&self) -> bool {
        self.phase == Phase::Open
            && (!self.streams.inflight.is_empty()
                || self.streams.written.seq < self.streams.next_seq
                || matches!(self.streams.backend, Backend::Asking { .. }))
    }

    /// A wake-up it asked for came due.
    pub fn on_wake(&mut self, cx: &mut Ctx<'_>, i: usize, at: Instant, wake: Wake, now: Instant) {
        match wake {
            Wake::Open if self.phase == Phase::Waiting => {
                if cx.plan.may_send(now) {
                    self.open(cx, i, now);
                } else {
                    // The ramp outlasted the measurement; this one is not needed.
                    self.set_phase(cx, Phase::Finished);
                }
            }
            Wake::ConnectTimeout(attempt) if attempt == self.attempt => {
                if let Phase::Connecting(since) = self.phase {
                    let waited = now.duration_since(since);
                    self.fail(cx, ErrorKind::ConnectTimeout, now, || {
                        format!("not established after {waited:.1?}")
                    });
                }
            }
            Wake::Send if self.armed == Some(at) => {
                self.armed = None;
                self.pump(cx, i, now);
            }
            Wake::Expire if self.expiry == Some(at) => {
                self.expiry = None;
                self.expire(cx, now);
                self.arm_expiry(cx, i);
                self.pump(cx, i, now);
            }
            _ => {} // stale: the flow moved on since this was asked for
        }
    }

    /// Its socket reported readiness.
    pub fn on_event(&mut self, cx: &mut Ctx<'_>, i: usize, ready: Readiness, now: Instant) {
        if let Phase::Connecting(since) = self.phase {
            let Sock::Tcp(stream) = &self.sock else {
                return;
            };
            match tcp::handshake(stream) {
                Handshake::Pending => return,
                Handshake::Failed(e) => {
                    let source = self.source(cx);
                    let kind = ErrorKind::of_connect(&e);
                    return self.fail(cx, kind, now, || connect_failure(&e, source));
                }
                // Go on to read: the event that completes the handshake may also carry data
                // the server sent at once, and that edge will not come again.
                Handshake::Done => self.established(cx, i, since, now),
            }
        }
        if self.phase != Phase::Open {
            return;
        }
        if ready.writable {
            self.blocked = false;
        }
        self.peer_closing |= ready.closed;
        if ready.readable || ready.closed {
            self.receive(cx, now);
        }
        self.pump(cx, i, now);
    }

    /// A turn from the run queue: continue what a budget interrupted.
    pub fn resume(&mut self, cx: &mut Ctx<'_>, i: usize, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        if self.read_pending {
            self.receive(cx, now);
        }
        self.pump(cx, i, now);
    }

    // ---- opening and closing -------------------------------------------------------------

    /// Every phase change goes through here, which keeps the worker's counts of open and
    /// ended flows true without sweeping the flows to recount them.
    fn set_phase(&mut self, cx: &mut Ctx<'_>, phase: Phase) {
        let ended = |p: Phase| matches!(p, Phase::Finished | Phase::Failed);
        match (self.phase == Phase::Open, phase == Phase::Open) {
            (false, true) => cx.open += 1,
            (true, false) => cx.open -= 1,
            _ => {}
        }
        match (ended(self.phase), ended(phase)) {
            (false, true) => cx.ended += 1,
            (true, false) => cx.ended -= 1,
            _ => {}
        }
        self.phase = phase;
    }

    fn source(&self, cx: &Ctx<'_>) -> Option<IpAddr> {
        cx.cfg.sources.as_ref().map(|s| s.pick(self.id as usize))
    }

    /// Starts connecting (TCP) or binds and connects a datagram socket (UDP).
    fn open(&mut self, cx: &mut Ctx<'_>, i: usize, now: Instant) {
        self.attempt += 1;
        self.sent_here = 0;
        self.streams = Streams::from(self.streams.next_seq);
        self.blocked = false;
        self.peer_closing = false;
        self.read_pending = false;
        self.write_pending = false;
        let source = self.source(cx);
        let opened = match cx.cfg.mode.transport {
            Transport::Udp => udp::open(cx.cfg.target, source).map(Sock::Udp),
            Transport::Tcp => tcp::open(cx.cfg.target, source).map(Sock::Tcp),
        };
        let mut sock = match opened {
            Ok(s) => s,
            Err(e) => {
                let kind = ErrorKind::of_connect(&e);
                return self.fail(cx, kind, now, || connect_failure(&e, source));
            }
        };
        let registered = register(&cx.registry, &mut sock, Token(i));
        self.sock = sock;
        if let Err(e) = registered {
            return self.fail(cx, ErrorKind::ConnectOther, now, || {
                format!("register: {e}")
            });
        }
        match cx.cfg.mode.transport {
            // A connected UDP socket is ready at once: there is no handshake.
            Transport::Udp => self.established(cx, i, now, now),
            Transport::Tcp => {
                self.set_phase(cx, Phase::Connecting(now));
                let timeout = now + cx.cfg.connect_timeout;
                cx.wakes
                    .push(timeout, i, Wake::ConnectTimeout(self.attempt));
            }
        }
    }

    fn established(&mut self, cx: &mut Ctx<'_>, i: usize, since: Instant, now: Instant) {
        self.set_phase(cx, Phase::Open);
        cx.last_progress = now;
        let churn = cx.cfg.mode.load == Load::Churn;
        if churn && now < cx.plan.from {
            cx.tally.established_before += 1;
        }
        // Churn measures connects: only those made in the window count.
        let counted = !churn || cx.plan.in_window(now);
        if counted {
            cx.tally.established += 1;
            if cx.cfg.mode.transport == Transport::Tcp {
                cx.tally
                    .connect
                    .saturating_record(nanos(now.duration_since(since)));
            }
        }
        if let Some(schedule) = cx.open_loop {
            self.next_due = Some(schedule.first_slot(self.id, now));
        }
        if cx.cfg.per_backend {
            self.streams.backend = Backend::Asking {
                written: 0,
                answer: Vec::new(),
            };
        }
        self.pump(cx, i, now);
    }

    /// Ends the flow normally, closing the socket (a FIN: every reply has been read).
    fn finish(&mut self, cx: &mut Ctx<'_>) {
        if self.was_unserved(cx) {
            self.backend_errors(cx, 1);
            let id = self.id;
            cx.tally.error(ErrorKind::Unserved, 1, || {
                format!(
                    "connection {id}: established (the kernel completed the handshake) but \
                     nothing came back inside the measurement; is the server at its \
                     connection limit?"
                )
            });
        }
        self.close(cx, Phase::Finished);
    }

    /// A connection the run asked for that expected something back and got nothing inside
    /// the window, whenever its handshake completed: before the window (its first messages
    /// went out in the warm-up and their replies came only after it), inside it, or after
    /// it (a SYN dropped by a full accept queue and retransmitted too late). Neither the
    /// warm-up nor the kernel's retransmission timer may turn a starved connection into a
    /// silent one.
    fn was_unserved(&self, cx: &Ctx<'_>) -> bool {
        let expects = match cx.cfg.mode.load {
            Load::RoundTrip => self.asked,
            Load::Download => true,
            Load::Upload | Load::Churn => false,
        };
        cx.cfg.mode.transport == Transport::Tcp && expects && !self.streams.served
    }

    fn close(&mut self, cx: &mut Ctx<'_>, phase: Phase) {
        // Dropping the socket closes it, which also removes it from the poller.
        self.sock = Sock::None;
        self.streams.inflight = VecDeque::new();
        self.set_phase(cx, phase);
    }

    /// Ends the flow with an error of `kind`.
    fn fail(
        &mut self,
        cx: &mut Ctx<'_>,
        kind: ErrorKind,
        now: Instant,
        what: impl FnOnce() -> String,
    ) {
        let id = self.id;
        if kind.is_connect() {
            cx.tally.failed += 1;
        }
        self.backend_errors(cx, 1);
        if now < cx.plan.from {
            cx.tally.ended_before += 1;
        }
        cx.tally
            .error(kind, 1, || format!("connection {id}: {}", what()));
        self.close(cx, Phase::Failed);
    }

    /// After the measurement: finish now if nothing is outstanding.
    pub fn finish_if_idle(&mut self, cx: &mut Ctx<'_>, i: usize, now: Instant) {
        match self.phase {
            Phase::Waiting => self.set_phase(cx, Phase::Finished),
            Phase::Open => self.pump(cx, i, now),
            _ => {}
        }
    }

    /// The grace after the run ran out (`stalled` false), or nothing moved for the stall
    /// timeout (`stalled` true): whatever is outstanding is lost, and said so.
    pub fn abandon(&mut self, cx: &mut Ctx<'_>, stalled: bool, now: Instant) {
        if let Phase::Connecting(since) = self.phase {
            let waited = now.duration_since(since);
            return self.fail(cx, ErrorKind::ConnectTimeout, now, || {
                format!("still connecting when the run ended ({waited:.1?} in)")
            });
        }
        if self.phase != Phase::Open {
            return;
        }
        let id = self.id;
        let why = if stalled {
            format!("nothing moved for {:?}", cx.cfg.stall_timeout)
        } else {
            format!("not done within {DRAIN_GRACE:?} after the run")
        };
        match cx.cfg.mode.transport {
            Transport::Udp => {
                let lost = self
                    .streams
                    .inflight
                    .iter()
                    .filter(|p| !p.answered && cx.plan.measured(p.intended))
                    .count() as u64;
                cx.tally.udp.lost += lost;
            }
            Transport::Tcp => {
                if let Backend::Asking { .. } = self.streams.backend {
                    cx.tally.error(ErrorKind::Unanswered, 1, || {
                        format!("connection {id}: SERVER was not answered ({why})")
                    });
                }
                let unwritten = self.unwritten(cx.codec);
                if unwritten > 0 {
                    self.backend_errors(cx, 1);
                    cx.tally.error(ErrorKind::Stalled, 1, || {
                        format!(
                            "connection {id}: {unwritten} request bytes could not be written \
                             ({why}): the server stopped reading"
                        )
                    });
                }
                let s = &self.streams;
                let unanswered = s.written.seq.saturating_sub(s.replied.seq);
                if unanswered > 0 && cx.cfg.mode.has_round_trips() {
                    self.backend_errors(cx, unanswered);
                    cx.tally.error(ErrorKind::Unanswered, unanswered, || {
                        format!("connection {id}: {unanswered} replies outstanding, {why}")
                    });
                }
            }
        }
        // Counted above; not also counted as unserved.
        self.close(cx, Phase::Finished);
    }

    /// Counts `n` errors against this connection's backend, if it is known.
    fn backend_errors(&self, cx: &mut Ctx<'_>, n: u64) {
        if let Some(b) = self.streams.backend.index() {
            cx.tally.backends[b].errors += n;
        }
    }

    /// Request bytes queued and not yet written.
    fn unwritten(&self, codec: &Codec) -> u64 {
        let s = &self.streams;
        let len = codec.len(Dir::Request) as u64;
        ((s.next_seq - s.written.seq) * len).saturating_sub(s.written.offset as u64)
    }

    // ---- sending ---------------------------------------------------------------------------

    /// Queues what the load policy allows now, writes it out, and finishes the flow when its
    /// part is done.
    fn pump(&mut self, cx: &mut Ctx<'_>, i: usize, now: Instant) {
        if let Backend::Asking { .. } = self.streams.backend {
            // Nothing is sent before the answer: it must be the first line that comes back.
            return self.ask_backend(cx, now);
        }
        let mut budget = SEND_BUDGET;
        self.write_pending = false;
        loop {
            if self.phase != Phase::Open {
                return;
            }
            match cx.cfg.mode.load {
                Load::RoundTrip | Load::Churn => self.send_due(cx, i, now),
                Load::Upload => self.queue_upload(cx, now),
                Load::Download => {}
            }
            match self.write(cx, now, &mut budget) {
                // An upload keeps writing while the socket takes it: everything queued went
                // out, so queue more. No writable edge would come to ask.
                WriteEnd::Done if cx.cfg.mode.load == Load::Upload && self.may_queue(cx, now) => {
                    if budget == 0 {
                        self.write_pending = true;
                        break;
                    }
                }
                WriteEnd::Done | WriteEnd::Blocked => break,
                WriteEnd::Budget => {
                    self.write_pending = true;
                    break;
                }
                WriteEnd::Failed(_) => return,
            }
        }
        let s = &self.streams;
        let idle = s.inflight.is_empty() && s.written.seq >= s.next_seq;
        let done_sending = !cx.plan.may_send(now) || self.quota == Some(0);
        if cx.cfg.mode.load == Load::Churn && idle && self.sent_here > 0 {
            // Churn: this connection did its round trip; close it and open the next.
            self.finish(cx);
            if !done_sending {
                self.open(cx, i, now);
            }
        } else if idle && done_sending {
            self.finish(cx);
        }
    }

    /// `--per-backend`: writes what is left of the `SERVER` request.
    fn ask_backend(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let (Sock::Tcp(stream), Backend::Asking { written, .. }) =
            (&self.sock, &mut self.streams.backend)
        else {
            return;
        };
        while *written < ASK_SERVER.len() && !self.blocked {
            match std::io::Write::write(&mut &*stream, &ASK_SERVER[*written..]) {
                Ok(0) => {
                    return self.fail(cx, ErrorKind::Io, now, || {
                        "write: the socket took no bytes".into()
                    })
                }
                Ok(n) => *written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.blocked = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = ErrorKind::of_established(&e);
                    return self.fail(cx, kind, now, || format!("write: {e}"));
                }
            }
        }
    }

    /// Round trips: queue every message the load model allows now.
    fn send_due(&mut self, cx: &mut Ctx<'_>, i: usize, now: Instant) {
        let pipeline = match cx.cfg.mode.load {
            Load::Churn => 1,
            _ => cx.cfg.pipeline,
        };
        while self.streams.inflight.len() < pipeline && !self.blocked {
            if cx.cfg.mode.load == Load::Churn && self.sent_here > 0 {
                break;
            }
            let intended = match (self.next_due, cx.open_loop) {
                (Some(due), Some(schedule)) => match schedule.slot(due, now) {
                    Slot::Later(at) => {
                        self.arm_send(cx, i, at);
                        break;
                    }
                    Slot::Now(intended) => intended,
                },
                _ => now,
            };
            if !cx.plan.may_send(intended) || !self.take_quota(cx, intended) {
                break;
            }
            let sent = match cx.cfg.mode.transport {
                Transport::Udp => self.send_datagram(cx, i, intended, now),
                Transport::Tcp => {
                    self.queue(intended, now);
                    true
                }
            };
            if !sent {
                // The message goes when the socket has room; its quota is not spent.
                self.return_quota(cx, intended);
                break;
            }
            if let (Some(due), Some(schedule)) = (self.next_due, cx.open_loop) {
                self.next_due = Some(schedule.next(due));
                if cx.plan.measured(intended) {
                    let lag = nanos(send_lag(intended, now));
                    cx.tally.send_lag.saturating_record(lag);
                }
            }
        }
    }

    /// Queues one request; its bytes are generated when written.
    fn queue(&mut self, intended: Instant, now: Instant) {
        let s = &mut self.streams;
        s.inflight.push_back(Pending {
            seq: s.next_seq,
            intended,
            sent: now,
            answered: false,
        });
        s.next_seq += 1;
        self.sent_here += 1;
    }

    /// Upload: keep enough whole messages queued for large writes.
    fn queue_upload(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let len = cx.codec.len(Dir::Request) as u64;
        while (self.streams.next_seq - self.streams.written.seq) * len < UPLOAD_AHEAD {
            if !cx.plan.may_send(now) || !self.take_quota(cx, now) {
                break;
            }
            self.streams.next_seq += 1;
            self.sent_here += 1;
        }
    }

    /// Counted runs: spends one measured message of this flow's share, if any is left.
    /// Messages sent before the measurement (warm-up) are free.
    fn take_quota(&mut self, cx: &Ctx<'_>, intended: Instant) -> bool {
        match &mut self.quota {
            Some(q) if cx.plan.measured(intended) => {
                if *q == 0 {
                    return false;
                }
                *q -= 1;
                true
            }
            _ => true,
        }
    }

    fn return_quota(&mut self, cx: &Ctx<'_>, intended: Instant) {
        if let Some(q) = &mut self.quota {
            if cx.plan.measured(intended) {
                *q += 1;
            }
        }
    }

    /// Asks for a [`Wake::Send`] at `at`, unless one for that instant is already asked for.
    fn arm_send(&mut self, cx: &mut Ctx<'_>, i: usize, at: Instant) {
        if self.armed != Some(at) {
            cx.wakes.push(at, i, Wake::Send);
            self.armed = Some(at);
        }
    }

    /// Whether an upload may queue another message now.
    fn may_queue(&self, cx: &Ctx<'_>, now: Instant) -> bool {
        cx.plan.may_send(now) && self.quota != Some(0)
    }

    /// Writes queued requests, spending `budget`. The flow has failed when this returns
    /// [`WriteEnd::Failed`].
    fn write(&mut self, cx: &mut Ctx<'_>, now: Instant, budget: &mut usize) -> WriteEnd {
        let Sock::Tcp(stream) = &mut self.sock else {
            return WriteEnd::Done;
        };
        let s = &mut self.streams;
        if self.blocked {
            return WriteEnd::Blocked;
        }
        if s.written.seq >= s.next_seq {
            return WriteEnd::Done;
        }
        let codec = cx.codec;
        let mut gather = std::mem::take(&mut cx.gather);
        let upload = cx.cfg.mode.load == Load::Upload;
        let backend = s.backend.index();
        let end = s.next_seq;
        let outcome = tcp::write_some(
            stream,
            codec,
            &mut gather,
            self.id,
            &mut s.written,
            end,
            *budget,
            |n, whole| {
                *budget -= n;
                cx.count_sent(n, now, backend);
                if upload && cx.plan.in_window(now) {
                    cx.tally.messages += whole;
                    cx.last_completion = Some(now);
                }
            },
        );
        cx.gather = gather;
        match outcome {
            WriteEnd::Blocked => self.blocked = true,
            WriteEnd::Failed(ref e) => {
                let kind = ErrorKind::of_established(e);
                self.fail(cx, kind, now, || format!("write: {e}"));
            }
            WriteEnd::Done | WriteEnd::Budget => {}
        }
        outcome
    }

    // ---- receiving -------------------------------------------------------------------------

    fn receive(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        self.read_pending = false;
        match cx.cfg.mode.transport {
            Transport::Udp => self.read_datagrams(cx, now),
            Transport::Tcp => self.read_stream(cx, now),
        }
    }

    /// Reads until drained or the budget is spent, checking every byte.
    fn read_stream(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let Sock::Tcp(stream) = &mut self.sock else {
            return;
        };
        let mut scratch = std::mem::take(&mut cx.scratch);
        let mut failure = None;
        let (id, streams) = (self.id, &mut self.streams);
        let end = tcp::read_some(
            stream,
            &mut scratch,
            RECV_BUDGET,
            self.peer_closing,
            |data| match on_stream_data(cx, id, streams, data, now) {
                Ok(()) => true,
                Err(f) => {
                    failure = Some(f);
                    false
                }
            },
        );
        cx.scratch = scratch;
        match end {
            ReadEnd::Drained => {}
            ReadEnd::Budget => self.read_pending = true,
            ReadEnd::Eof => self.peer_closed(cx, now),
            ReadEnd::Failed(e) => {
                let kind = ErrorKind::of_established(&e);
                self.fail(cx, kind, now, || format!("read: {e}"));
            }
            ReadEnd::Stopped => {
                let (kind, what) = failure.expect("a handler that stops says why");
                self.fail(cx, kind, now, || what);
            }
        }
    }

    /// The server closed its side while the flow still used the connection.
    fn peer_closed(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let s = &self.streams;
        let (kind, what) = if s.replied.offset > 0 {
            let len = cx.codec.len(Dir::Reply);
            (
                ErrorKind::ShortEcho,
                format!(
                    "closed after {} of {len} reply bytes of message {}",
                    s.replied.offset, s.replied.seq
                ),
            )
        } else {
            let n = s.inflight.len();
            (
                ErrorKind::UnexpectedClose,
                format!("server closed the connection with {n} replies outstanding"),
            )
        };
        self.fail(cx, kind, now, || what);
    }

    // ---- UDP -------------------------------------------------------------------------------

    /// Sends one datagram; false if the socket has no room (try again when writable).
    fn send_datagram(
        &mut self,
        cx: &mut Ctx<'_>,
        i: usize,
        intended: Instant,
        now: Instant,
    ) -> bool {
        let Sock::Udp(socket) = &self.sock else {
            return false;
        };
        let seq = self.streams.next_seq;
        cx.datagram.clear();
        cx.codec
            .encode(Dir::Request, self.id, seq, &mut cx.datagram);
        match socket.send(&cx.datagram) {
            Ok(n) => {
                cx.count_sent(n, now, None);
                let measured = cx.plan.measured(intended);
                if measured {
                    cx.tally.udp.sent += 1;
                }
                self.queue(intended, now);
                self.arm_expiry(cx, i);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.blocked = true;
                false
            }
            Err(e) => {
                self.fail(cx, ErrorKind::of_datagram(&e), now, || format!("send: {e}"));
                false
            }
        }
    }

    /// Reads every waiting datagram (up to the budget) and matches each to its message.
    fn read_datagrams(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let mut left = RECV_BUDGET;
        loop {
            let Sock::Udp(socket) = &self.sock else {
                return;
            };
            if left == 0 {
                self.read_pending = true;
                break;
            }
            let n = match socket.recv(&mut cx.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = ErrorKind::of_datagram(&e);
                    return self.fail(cx, kind, now, || format!("receive: {e}"));
                }
            };
            // An empty datagram still costs a turn of the budget.
            left = left.saturating_sub(n.max(1));
            cx.count_received(n, now, None);
            self.match_datagram(cx, n, now);
        }
        let inflight = &mut self.streams.inflight;
        while inflight.front().is_some_and(|p| p.answered) {
            inflight.pop_front();
        }
    }

    /// Matches the `n`-byte datagram in the scratch buffer to the message it answers.
    fn match_datagram(&mut self, cx: &mut Ctx<'_>, n: usize, now: Instant) {
        let id = self.id;
        let data = &cx.scratch[..n];
        let matched =
            udp::match_reply(cx.codec, id, &self.streams.inflight, data, &mut cx.datagram);
        match matched {
            udp::Matched::Reply(k) => {
                let p = &mut self.streams.inflight[k];
                p.answered = true;
                let p = *p;
                if cx.plan.measured(p.intended) {
                    cx.tally.udp.received += 1;
                }
                if !self.streams.served && cx.plan.in_window(now) {
                    self.streams.served = true;
                    cx.tally.served += 1;
                }
                cx.complete(&p, now, None);
            }
            udp::Matched::Late => {
                if cx.plan.in_window(now) {
                    cx.tally.udp.late += 1;
                }
            }
            udp::Matched::Wrong(what) => cx.tally.error(ErrorKind::Mismatch, 1, || {
                format!("connection {id}, {what}")
            }),
        }
    }

    /// Asks for the loss check of the oldest datagram in flight, unless one is pending.
    fn arm_expiry(&mut self, cx: &mut Ctx<'_>, i: usize) {
        if let (None, Some(front)) = (self.expiry, self.streams.inflight.front()) {
            let at = front.sent + udp::LOSS_TIMEOUT;
            cx.wakes.push(at, i, Wake::Expire);
            self.expiry = Some(at);
        }
    }

    /// Declares datagrams older than the loss timeout lost, oldest first.
    fn expire(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let inflight = &mut self.streams.inflight;
        while let Some(&p) = inflight.front() {
            if !p.answered && now.duration_since(p.sent) < udp::LOSS_TIMEOUT {
                break;
            }
            if !p.answered && cx.plan.measured(p.intended) {
                cx.tally.udp.lost += 1;
            }
            inflight.pop_front();
        }
    }
}

/// Handles bytes read on a stream: counts them, notes the connection as served, and checks
/// them against what the load policy expects.
fn on_stream_data(
    cx: &mut Ctx<'_>,
    id: u32,
    s: &mut Streams,
    data: &[u8],
    now: Instant,
) -> Result<(), (ErrorKind, String)> {
    let data = match &mut s.backend {
        Backend::Asking { answer, .. } => match identify(cx, id, answer, data)? {
            Some((backend, rest)) => {
                s.backend = Backend::Known(backend);
                rest
            }
            None => return Ok(()),
        },
        _ => data,
    };
    if data.is_empty() {
        return Ok(());
    }
    let backend = s.backend.index();
    cx.count_received(data.len(), now, backend);
    if !s.served && cx.plan.in_window(now) {
        s.served = true;
        cx.tally.served += 1;
    }
    match cx.cfg.mode.load {
        Load::RoundTrip | Load::Churn => {
            let end = s.reply_end();
            let done = cx
                .codec
                .check(id, &mut s.replied, end, data)
                .map_err(|m| (ErrorKind::Mismatch, m.to_string()))?;
            for _ in 0..done {
                let p = s
                    .inflight
                    .pop_front()
                    .expect("a reply completes a queued message");
                cx.complete(&p, now, backend);
            }
        }
        Load::Download => match cx.cfg.expect {
            Some(Expect::Chargen) => {
                check_chargen(&mut s.received, data).map_err(|(at, expected, got)| {
                    (
                        ErrorKind::Mismatch,
                        format!(
                            "chargen stream byte {at} is {} where {} was expected",
                            payload::show(got),
                            payload::show(expected)
                        ),
                    )
                })?;
            }
            None => s.received += data.len() as u64,
        },
        // A discard server sends nothing back; what arrives anyway is counted, not checked.
        Load::Upload => {}
    }
    Ok(())
}

/// A connection's backend (its index in the worker's tally) and the bytes after the answer.
type Identified<'d> = (usize, &'d [u8]);

/// `--per-backend`: collects the answer to `SERVER` from `data`. Once its line is complete,
/// returns the backend's index in the worker's tally (counting this connection) and the
/// bytes after the line; `None` while the line is incomplete.
fn identify<'d>(
    cx: &mut Ctx<'_>,
    id: u32,
    answer: &mut Vec<u8>,
    data: &'d [u8],
) -> Result<Option<Identified<'d>>, (ErrorKind, String)> {
    let end = data.iter().position(|&b| b == b'\n');
    let take = end.map_or(data.len(), |e| e + 1);
    if answer.len() + take > MAX_SERVER_REPLY {
        return Err((
            ErrorKind::Mismatch,
            format!("connection {id}: no answer to SERVER in {MAX_SERVER_REPLY} bytes"),
        ));
    }
    answer.extend_from_slice(&data[..take]);
    if end.is_none() {
        return Ok(None);
    }
    let server_id = parse_server_answer(answer).ok_or_else(|| {
        (
            ErrorKind::Mismatch,
            format!(
                "connection {id}: SERVER was answered {:?}, not '<server-id> <listener> <loop>': \
                 is the target loopd's line service (or a balancer in front of it)?",
                String::from_utf8_lossy(answer)
            ),
        )
    })?;
    let backend = cx.tally.backend(server_id);
    cx.tally.backends[backend].connections += 1;
    Ok(Some((backend, &data[take..])))
}

/// The server id in a `line` service's answer to `SERVER`: `<server-id> <listener> <loop>`
/// and CRLF.
fn parse_server_answer(line: &[u8]) -> Option<&str> {
    let line = std::str::from_utf8(line).ok()?.strip_suffix("\r\n")?;
    let mut words = line.split(' ');
    let (server_id, listener, index) = (words.next()?, words.next()?, words.next()?);
    let valid = words.next().is_none()
        && !server_id.is_empty()
        && listener.parse::<SocketAddr>().is_ok()
        && index.parse::<u32>().is_ok();
    valid.then_some(server_id)
}

fn register(registry: &Registry, sock: &mut Sock, token: Token) -> std::io::Result<()> {
    let both = Interest::READABLE | Interest::WRITABLE;
    match sock {
        Sock::Tcp(s) => registry.register(s, token, both),
        Sock::Udp(s) => registry.register(s, token, both),
        Sock::None => Ok(()),
    }
}

/// The unspecified address of `target`'s family, for a socket that lets the kernel choose.
pub fn any_address(target: SocketAddr) -> IpAddr {
    match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<server-id> <listener> <loop>` and CRLF, nothing else.
    #[test]
    fn server_answers() {
        assert_eq!(
            parse_server_answer(b"web-1 10.0.0.7:7100 3\r\n"),
            Some("web-1")
        );
        assert_eq!(parse_server_answer(b"a [::1]:7 0\r\n"), Some("a"));
        for bad in [
            &b"web-1 10.0.0.7:7100 3\n"[..],
            b"SERVER\n",
            b"ERR unknown command 'SERVER'\r\n",
            b"web-1 10.0.0.7:7100\r\n",
            b"web-1 nowhere 3\r\n",
            b"web-1 10.0.0.7:7100 3 extra\r\n",
            b" 10.0.0.7:7100 3\r\n",
        ] {
            assert_eq!(
                parse_server_answer(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
