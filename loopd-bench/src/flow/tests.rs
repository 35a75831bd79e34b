//! The flow without sockets: scripted streams and datagram sockets ([`crate::fake`]) answer
//! on cue, and the clock is made-up instants, so every state and every load policy is
//! driven exactly and nothing waits. Grouped by what they pin: the states, the load
//! policies, the end of a run, datagrams, per-backend identification, and a layered stream
//! (TLS) under the flow. The fixture
//! builders put a flow in a given state the way a server would.

mod backends;
mod datagrams;
mod ending;
mod layers;
mod loads;
mod states;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Poll;

use super::datagram::Datagrams;
use super::stream::Bytes;
use super::{Ctx, Flow, Phase, Readiness, Wire};
use crate::config::{BenchConfig, Mode, Stop};
use crate::errors::ErrorKind;
use crate::fake::{FakeDatagram, FakeDial, FakeStream, Shared, Sockets, Step};
use crate::payload::{Codec, Dir};
use crate::record::{Recorder, Tally};
use crate::schedule::Plan;

type StreamRig = Rig<Bytes<FakeStream>>;
type DatagramRig = Rig<Datagrams<FakeDatagram>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Settings for one connection of `mode`, measured for a second with no warm-up.
fn settings(mode: Mode) -> BenchConfig {
    let mut cfg = BenchConfig::new("127.0.0.1:7".parse().unwrap());
    cfg.mode = mode;
    cfg.connections = 1;
    cfg.warmup = Duration::ZERO;
    cfg.stop = Stop::After(Duration::from_secs(1));
    cfg
}

/// A flow, the worker's context around it, and the test's handle to every socket dialed.
struct Rig<W: Wire> {
    flow: Flow<W>,
    cx: Ctx<W::Socket>,
    sockets: Sockets,
    codec: Arc<Codec>,
    t0: Instant,
    now: Instant,
    _poll: Poll,
}

impl<W: Wire> Rig<W> {
    fn with(
        cfg: BenchConfig,
        dial: Box<dyn crate::transport::Dial<Transport = W::Socket>>,
        sockets: Sockets,
    ) -> Rig<W> {
        let t0 = Instant::now();
        let from = t0 + cfg.warmup;
        let until = match cfg.stop {
            Stop::After(d) => Some(from + d),
            Stop::Count(_) => None,
        };
        let plan = Plan { t0, from, until };
        let uploads = cfg.mode == Mode::Send;
        let record = Recorder::new(plan, uploads, None, t0);
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let codec = Arc::new(Codec::new(cfg.protocol, cfg.size));
        let cfg = Arc::new(cfg);
        let flow = Flow::new(cfg.connections as u32 - 1, 0, &cfg);
        let cx = Ctx::new(cfg, codec.clone(), registry, dial, record, 64 * 1024);
        Rig {
            flow,
            cx,
            sockets,
            codec,
            t0,
            now: t0,
            _poll: poll,
        }
    }

    /// The clock reads `t` after the start.
    fn at(&mut self, t: Duration) -> &mut Self {
        self.now = self.t0 + t;
        self
    }

    /// Runs the wake-ups due now, as the worker does first in a turn.
    fn wakes(&mut self) {
        let mut due = Vec::new();
        self.cx.wakes.take_due(self.now, &mut due);
        for (at, i, wake) in due {
            assert_eq!(i, 0, "a wake-up for another flow");
            self.flow.on_wake(&mut self.cx, at, wake, self.now);
        }
    }

    /// Opens the flow: its open wake-up comes due now.
    fn open(&mut self) {
        self.cx.wakes.push(self.now, 0, crate::schedule::Wake::Open);
        self.wakes();
    }

    fn event(&mut self, ready: Readiness) {
        self.flow.on_event(&mut self.cx, ready, self.now);
    }

    /// A readable event, with the closed flag when an end-of-file is queued, as epoll
    /// reports it.
    fn readable(&mut self) {
        let closed = !self.sockets.is_empty()
            && self
                .last()
                .borrow()
                .reads
                .iter()
                .any(|s| matches!(s, Step::Eof));
        self.event(Readiness {
            readable: true,
            closed,
            ..Readiness::default()
        });
    }

    fn writable(&mut self) {
        self.event(Readiness {
            writable: true,
            ..Readiness::default()
        });
    }

    /// The script of the last socket dialed.
    fn last(&self) -> Shared {
        self.sockets.get(self.sockets.len() - 1)
    }

    /// The server sends `bytes` on the last socket.
    fn send(&self, bytes: Vec<u8>) {
        self.last().borrow_mut().reads.push_back(Step::Data(bytes));
    }

    /// Message `seq` of this flow in direction `dir`.
    fn message(&self, dir: Dir, seq: u64) -> Vec<u8> {
        let mut m = Vec::new();
        self.codec.encode(dir, self.flow.id, seq, &mut m);
        m
    }

    /// The requests `seqs`, as written on a stream.
    fn requests(&self, seqs: std::ops::Range<u64>) -> Vec<u8> {
        seqs.flat_map(|s| self.message(Dir::Request, s)).collect()
    }

    /// The server echoes message `seq` on the last socket.
    fn reply(&self, seq: u64) {
        self.send(self.message(Dir::Reply, seq));
    }

    fn tally(&self) -> &Tally {
        &self.cx.record.tally
    }

    fn errors(&self, kind: ErrorKind) -> u64 {
        self.tally().errors.get(&kind).copied().unwrap_or(0)
    }

    /// The first error example.
    fn example(&self) -> String {
        self.tally().examples.first().cloned().unwrap_or_default()
    }

    fn phase(&self) -> Phase {
        self.flow.phase()
    }
}

impl StreamRig {
    /// A stream flow of `cfg`, waiting to be opened.
    fn stream(cfg: BenchConfig) -> StreamRig {
        let (dial, sockets) = FakeDial::streams();
        Rig::with(cfg, Box::new(dial), sockets)
    }

    /// A stream flow of `cfg` opened at the start and established 1 ms later: its first
    /// requests are written.
    fn established(cfg: BenchConfig) -> StreamRig {
        let mut rig = StreamRig::stream(cfg);
        rig.open();
        rig.at(ms(1)).writable();
        assert_eq!(rig.phase(), Phase::Established);
        rig
    }

    /// An echo flow in ESTABLISHED with message 0 written and unanswered.
    fn echo() -> StreamRig {
        StreamRig::established(settings(Mode::Echo))
    }

    /// Bytes written on the last socket so far, taken.
    fn written(&self) -> Vec<u8> {
        std::mem::take(&mut self.last().borrow_mut().written)
    }
}

impl DatagramRig {
    /// A datagram flow of `cfg`, opened at the start (established at once).
    fn datagram(cfg: BenchConfig) -> DatagramRig {
        let (dial, sockets) = FakeDial::datagrams();
        let mut rig = Rig::with(cfg, Box::new(dial), sockets);
        rig.open();
        rig
    }

    /// Datagrams sent on the last socket so far, taken.
    fn sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.last().borrow_mut().sent)
    }
}
