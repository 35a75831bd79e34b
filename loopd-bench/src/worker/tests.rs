//! A worker's turns without a poller: scripted streams, made-up instants, and readiness
//! handed in as the poll would. What is pinned here is what no single flow decides: the
//! end of the measurement, the run queue, and the two guards that end every run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Poll;

use super::*;
use crate::config::{Mode, Stop};
use crate::errors::ErrorKind;
use crate::fake::{FakeDial, FakeStream, Sockets, Step};
use crate::flow::Phase;
use crate::payload::Dir;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A measurement window long enough that the stall guard (10 s) acts inside it.
const LONG: Duration = Duration::from_secs(60);
/// One shorter than the stall timeout: the grace after it acts first.
const SHORT: Duration = Duration::from_secs(1);

/// A worker's flows for `connections` connections of `mode`, measured for `window` from
/// the start, over scripted streams.
struct Rig {
    turns: Turns<Bytes<FakeStream>>,
    cx: Ctx<FakeStream>,
    sockets: Sockets,
    t0: Instant,
    _poll: Poll,
}

impl Rig {
    fn new(mode: Mode, connections: usize, window: Duration) -> Rig {
        let mut cfg = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        cfg.mode = mode;
        cfg.connections = connections;
        cfg.warmup = Duration::ZERO;
        cfg.stop = Stop::After(window);
        let t0 = Instant::now();
        let plan = Plan {
            t0,
            from: t0,
            until: Some(t0 + window),
        };
        let (dial, sockets) = FakeDial::streams();
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let codec = Arc::new(Codec::new(cfg.protocol, cfg.size));
        let record = Recorder::new(plan, false, None, t0);
        let mut cx = Ctx::new(
            Arc::new(cfg),
            codec,
            registry,
            Box::new(dial),
            record,
            64 * 1024,
        );
        let ids: Vec<u32> = (0..connections as u32).collect();
        let turns = Turns::new(&ids, &mut cx);
        Rig {
            turns,
            cx,
            sockets,
            t0,
            _poll: poll,
        }
    }

    fn work(&mut self, at: Duration) {
        self.turns.work(&mut self.cx, self.t0 + at);
    }

    fn event(&mut self, i: usize, at: Duration, readable: bool) {
        let ready = Readiness {
            readable,
            writable: !readable,
            closed: false,
        };
        self.turns.on_event(&mut self.cx, i, ready, self.t0 + at);
    }

    /// Opens every flow and completes every handshake.
    fn established(mode: Mode, connections: usize, window: Duration) -> Rig {
        let mut rig = Rig::new(mode, connections, window);
        rig.work(Duration::ZERO);
        for i in 0..connections {
            rig.event(i, ms(1), false);
        }
        assert!(rig
            .turns
            .flows()
            .iter()
            .all(|f| f.phase() == Phase::Established));
        rig
    }

    /// The server echoes message `seq` of flow `i`.
    fn reply(&self, i: usize, seq: u64) {
        let mut m = Vec::new();
        self.cx.codec.encode(Dir::Reply, i as u32, seq, &mut m);
        self.sockets
            .get(i)
            .borrow_mut()
            .reads
            .push_back(Step::Data(m));
    }

    fn errors(&self, kind: ErrorKind) -> u64 {
        let t = &self.cx.record.tally;
        t.errors.get(&kind).copied().unwrap_or(0)
    }
}

/// The stall guard: with a reply outstanding and nothing moving either way for the stall
/// timeout, every flow is abandoned and what it waited for is counted, so a wedged server
/// ends the run instead of hanging it.
#[test]
fn the_stall_guard_ends_a_wedged_run() {
    let mut rig = Rig::established(Mode::Echo, 2, LONG);
    rig.reply(0, 0);
    rig.event(0, ms(2), true); // the last progress: flow 0's reply
    let stall = rig.cx.cfg.stall_timeout;
    rig.work(ms(2) + stall - ms(1));
    assert!(!rig.turns.done(&rig.cx), "not yet: one more millisecond");
    assert_eq!(rig.errors(ErrorKind::Unanswered), 0);
    rig.work(ms(2) + stall);
    assert!(rig.turns.done(&rig.cx));
    assert_eq!(rig.errors(ErrorKind::Unanswered), 2);
    let example = &rig.cx.record.tally.examples[0];
    assert!(example.contains("nothing moved for 10s"), "{example}");
}

/// The drain guard: the grace after the window ends the run, counting what is still
/// outstanding; a flow whose last reply came in time finished before it.
#[test]
fn the_grace_after_the_window_ends_the_run() {
    let mut rig = Rig::established(Mode::Echo, 2, SHORT);
    rig.reply(0, 0);
    rig.reply(1, 0);
    rig.event(0, ms(2), true);
    rig.event(1, ms(2), true);
    rig.work(SHORT); // the window ends: idle flows would finish
    assert!(rig.turns.stopping);
    assert_eq!(rig.cx.ended, 0, "both wait for a reply");
    rig.reply(1, 1);
    rig.event(1, SHORT + ms(500), true);
    assert_eq!(rig.turns.flows()[1].phase(), Phase::Finished);
    rig.work(SHORT + DRAIN_GRACE - ms(1));
    assert!(!rig.turns.done(&rig.cx));
    rig.work(SHORT + DRAIN_GRACE);
    assert!(rig.turns.done(&rig.cx));
    assert_eq!(rig.errors(ErrorKind::Unanswered), 1);
}

/// Drain or remember: a flow stopped by its receive budget is on the run queue, so the
/// next poll does not sleep, and the next turn reads on without any event.
#[test]
fn a_budget_stopped_flow_runs_next_turn_without_an_event() {
    let mut rig = Rig::established(Mode::Recv, 1, SHORT);
    let data = vec![b'x'; RECV_BUDGET + 100];
    rig.sockets
        .get(0)
        .borrow_mut()
        .reads
        .push_back(Step::Data(data));
    rig.event(0, ms(2), true);
    assert!(rig.turns.has_queued());
    assert_eq!(rig.cx.record.tally.bytes_received, RECV_BUDGET as u64);
    rig.work(ms(3));
    assert!(!rig.turns.has_queued());
    assert_eq!(rig.cx.record.tally.bytes_received, RECV_BUDGET as u64 + 100);
}
