//! The state machine without sockets: a scripted fake returns partial reads, partial writes,
//! `WouldBlock`, EOF and resets on cue. Grouped by state; the fixture builders put a
//! connection in a given state the way a peer would.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::time::Duration;

use super::*;
use crate::service::http::HttpLimits;
use crate::service::{Chargen, ConnInfo, Daytime, Echo, Http, Negotiated, Output, ServiceFactory};
use crate::socket::{Handshake, HandshakeEnd};
use crate::stats::HandshakeFailure;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One scripted answer to `read()`.
#[derive(Debug, Clone)]
enum Step {
    Data(Vec<u8>),
    Eof,
    Fail(ErrorKind),
    /// A layer's handshake ends here: the data before it was the handshake's own (consumed
    /// by the layer, never read as plaintext), the data after it is plaintext.
    Shake(HandshakeEnd),
}

/// A socket whose reads follow a script (then `WouldBlock`) and whose writes accept at most
/// `window` bytes before `WouldBlock`, like a send buffer that is never drained by itself.
///
/// As a layer (`layered`, like TLS over TCP), it holds its script above the kernel: whatever
/// is scripted is input it holds, so a short read leaves more to read without an edge;
/// `own_output` is output of its own that `flush` sends through the same window; and its
/// `shutdown_write` says goodbye first (TLS's `close_notify`), sending FIN only once the
/// goodbye and everything queued before it have left, `WouldBlock` until then.
#[derive(Debug, Default)]
struct Fake {
    script: VecDeque<Step>,
    window: usize,
    written: Vec<u8>,
    write_error: Option<ErrorKind>,
    fin: bool,
    abortive: bool,
    reads: usize,
    writes: usize,
    layered: bool,
    own_output: Vec<u8>,
    /// A layer's `shutdown_write` was called: FIN follows its own output.
    fin_wanted: bool,
    /// A layer with a handshake (see [`Shake`]).
    shake: Option<Shake>,
}

/// A scripted layer handshake: once begun, reads consume the script up to its
/// [`Step::Shake`], which ends the handshake.
#[derive(Debug, Default)]
struct Shake {
    begun: bool,
    /// What `begin` was given.
    early: Vec<u8>,
    end: Option<HandshakeEnd>,
    taken: bool,
}

impl Handshake for Shake {
    fn begin(&mut self, early: &[u8]) -> io::Result<()> {
        self.begun = true;
        self.early = early.to_vec();
        Ok(())
    }

    fn end(&mut self) -> Option<HandshakeEnd> {
        if self.taken {
            return None;
        }
        let end = self.end.clone()?;
        self.taken = true;
        Some(end)
    }

    fn timed_out(&mut self) -> HandshakeEnd {
        self.taken = true;
        HandshakeEnd::Failed {
            how: HandshakeFailure::Timeout,
            why: "handshake timed out".into(),
        }
    }
}

/// What a layer sends before its FIN.
const GOODBYE: &[u8] = b"goodbye";

impl Fake {
    /// Sends the layer's own output through the window, then a FIN if one is wanted.
    fn flush_own(&mut self) -> io::Result<()> {
        let n = self.own_output.len().min(self.window);
        self.window -= n;
        self.written.extend(self.own_output.drain(..n));
        if !self.own_output.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        if self.fin_wanted {
            self.fin = true;
        }
        Ok(())
    }
}

impl Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if let Some(shake) = self.shake.as_mut().filter(|s| s.begun && s.end.is_none()) {
            // The handshake's own bytes: the layer takes them, up to the handshake's end.
            while let Some(step) = self.script.pop_front() {
                match step {
                    Step::Data(_) => {}
                    Step::Shake(end) => {
                        shake.end = Some(end);
                        break;
                    }
                    other => {
                        self.script.push_front(other);
                        break;
                    }
                }
            }
        }
        match self.script.pop_front() {
            Some(Step::Shake(_)) => unreachable!("a handshake's end read before it began"),
            None => Err(ErrorKind::WouldBlock.into()),
            Some(Step::Eof) => {
                self.script.push_front(Step::Eof);
                Ok(0)
            }
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(Step::Data(mut data)) => {
                let n = buf.len().min(data.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    self.script.push_front(Step::Data(data.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

impl Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if let Some(kind) = self.write_error {
            return Err(kind.into());
        }
        if self.window == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.window);
        self.window -= n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_own()
    }
}

impl Socket for Fake {
    fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.layered {
            self.fin = true;
            return Ok(());
        }
        if !self.fin_wanted {
            self.fin_wanted = true;
            self.own_output.extend_from_slice(GOODBYE);
        }
        self.flush_own()
    }

    fn set_abortive(&mut self) {
        self.abortive = true;
    }

    fn holds_input(&self) -> bool {
        self.layered && matches!(self.script.front(), Some(Step::Data(_)))
    }

    fn pending_output(&self) -> usize {
        self.own_output.len()
    }

    fn handshake(&mut self) -> Option<&mut dyn Handshake> {
        self.shake.as_mut().map(|s| s as &mut dyn Handshake)
    }
}

/// A connection plus the loop-owned pieces a turn borrows.
struct Rig {
    conn: Connection<Fake>,
    limits: Limits,
    scratch: Vec<u8>,
    out: Buffer,
    stats: Stats,
    now: Time,
    /// The loop's handshake budget for the next turn.
    handshakes: usize,
}

const BIG_WINDOW: usize = usize::MAX / 2;

impl Rig {
    fn new(service: Box<dyn Service>) -> Rig {
        Rig::with_limits(service, small_limits())
    }

    fn with_limits(service: Box<dyn Service>, limits: Limits) -> Rig {
        Rig::with_connection(|fake| Connection::new(fake, service, 1, Time(0)), limits)
    }

    /// A connection to a PROXY protocol listener whose service `factory` creates.
    fn behind_proxy(factory: Arc<dyn ServiceFactory>) -> Rig {
        let stages = Stages {
            proxy_header: true,
            handshake: false,
        };
        Rig::with_stages(factory, stages)
    }

    /// A connection with `stages` before serving, whose service `factory` creates; its
    /// socket is a layer with a scripted handshake if a handshake is one of the stages.
    fn with_stages(factory: Arc<dyn ServiceFactory>, stages: Stages) -> Rig {
        let unborn = Unborn {
            factory,
            peer: "127.0.0.1:40000".parse().unwrap(),
            listener: "127.0.0.1:7007".parse().unwrap(),
            loop_index: 0,
            server_id: Arc::from("test"),
            stats: Arc::new(Stats::default()),
        };
        Rig::with_connection(
            |mut fake| {
                if stages.handshake {
                    fake.layered = true;
                    fake.shake = Some(Shake::default());
                }
                Connection::with_stages(fake, unborn, stages, 1, Time(0))
            },
            small_limits(),
        )
    }

    fn with_connection(connect: impl FnOnce(Fake) -> Connection<Fake>, limits: Limits) -> Rig {
        let fake = Fake {
            window: BIG_WINDOW,
            ..Fake::default()
        };
        Rig {
            conn: connect(fake),
            limits,
            scratch: vec![0; 64],
            out: Buffer::new(),
            stats: Stats::default(),
            now: Time(0),
            handshakes: usize::MAX,
        }
    }

    fn cx(&mut self) -> (&mut Connection<Fake>, Context<'_>) {
        let cx = Context {
            now: self.now,
            limits: &self.limits,
            scratch: &mut self.scratch,
            out_scratch: &mut self.out,
            out_borrowed: None,
            stats: &self.stats,
            handshakes: &mut self.handshakes,
        };
        (&mut self.conn, cx)
    }

    fn open(&mut self) -> Turn {
        let (conn, mut cx) = self.cx();
        conn.open(&mut cx)
    }

    fn turn(&mut self, ready: Ready) -> Turn {
        let (conn, mut cx) = self.cx();
        let turn = conn.turn(&mut cx, ready);
        assert!(cx.out_scratch.is_empty(), "scratch output left behind");
        turn
    }

    /// A readable event, with the closed flag set when a FIN is queued, as epoll reports it.
    fn readable(&mut self) -> Turn {
        let closed = self.sock().script.iter().any(|s| matches!(s, Step::Eof));
        self.turn(Ready { closed, ..READABLE })
    }

    fn writable(&mut self) -> Turn {
        self.turn(WRITABLE)
    }

    fn deadline(&mut self) -> Turn {
        let (conn, mut cx) = self.cx();
        conn.on_deadline(&mut cx)
    }

    fn shut_down(&mut self) -> Turn {
        let (conn, mut cx) = self.cx();
        conn.shut_down(&mut cx)
    }

    fn send(&mut self, data: &[u8]) {
        self.sock().script.push_back(Step::Data(data.to_vec()));
    }

    fn send_fin(&mut self) {
        self.sock().script.push_back(Step::Eof);
    }

    fn sock(&mut self) -> &mut Fake {
        self.conn.socket_mut()
    }

    fn take_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.sock().written)
    }
}

const READABLE: Ready = Ready {
    readable: true,
    ..Ready::NONE
};
const WRITABLE: Ready = Ready {
    writable: true,
    ..Ready::NONE
};

const READ_ONLY: Want = Want {
    read: true,
    write: false,
};
const WRITE_ONLY: Want = Want {
    read: false,
    write: true,
};
const READ_WRITE: Want = Want {
    read: true,
    write: true,
};

/// Watermarks and budget small enough to reach with a few bytes.
fn small_limits() -> Limits {
    Limits {
        high_watermark: 32,
        low_watermark: 8,
        read_budget: 1024,
        idle_timeout: Some(Duration::from_secs(300)),
        write_stall_timeout: Some(Duration::from_secs(30)),
        linger_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(30)),
        proxy_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(10),
    }
}

/// An open echo connection with nothing pending.
fn echo_open() -> Rig {
    let mut rig = Rig::new(Box::new(Echo));
    assert_eq!(rig.open(), Turn::Wait);
    rig
}

/// An echo connection whose peer has half-closed while `pending` bytes of echo are stuck.
fn echo_close_wait(pending: usize) -> Rig {
    let mut rig = echo_open();
    rig.sock().window = 0;
    rig.send(&vec![b'x'; pending]);
    rig.send_fin();
    assert_eq!(rig.readable(), Turn::Wait);
    assert_eq!(rig.conn.state(), State::CloseWait);
    rig
}

/// A daytime connection that has sent its line and FIN and is waiting for the peer's FIN.
fn daytime_lingering() -> Rig {
    let mut rig = Rig::new(Box::new(Daytime));
    assert_eq!(rig.open(), Turn::Wait);
    assert_eq!(rig.conn.state(), State::Lingering);
    rig
}

/// A service that consumes only whole lines, to exercise held input.
struct Lines;

impl Service for Lines {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        let mut used = 0;
        while let Some(nl) = input[used..].iter().position(|&b| b == b'\n') {
            out.write(&input[used..used + nl + 1]);
            used += nl + 1;
        }
        used
    }
}

/// A service that never consumes anything.
struct Hoarder;

impl Service for Hoarder {
    fn on_input(&mut self, _: &[u8], _: &mut Output<'_>) -> usize {
        0
    }
}

mod open {
    use super::*;

    /// Bytes read are echoed in the same turn and no buffer is kept afterwards.
    #[test]
    fn echo_round_trip_holds_no_buffers() {
        let mut rig = echo_open();
        rig.send(b"hello");
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"hello");
        assert_eq!(rig.conn.buffered_capacity(), 0);
        assert_eq!(rig.conn.want(), READ_ONLY);
    }

    /// A short read ends the drain: no extra read() just to see WouldBlock.
    #[test]
    fn short_read_needs_no_second_read() {
        let mut rig = echo_open();
        rig.send(b"abc");
        rig.readable();
        let reads = if SHORT_READ_DRAINS { 1 } else { 2 };
        assert_eq!(
            rig.sock().reads,
            reads,
            "a second read only to see WouldBlock"
        );
        assert_eq!(rig.sock().writes, 1);
    }

    /// With urgent data reported (`EPOLLPRI`), a short read may have stopped at the urgent
    /// mark with more behind it: the connection reads until `WouldBlock`, in the same turn,
    /// and after that a short read proves the queue empty again.
    #[test]
    fn short_read_at_the_urgent_mark_reads_on() {
        let mut rig = echo_open();
        rig.send(b"before the mark");
        rig.send(b"!after");
        let urgent = Ready {
            urgent: true,
            ..READABLE
        };
        assert_eq!(rig.turn(urgent), Turn::Wait);
        assert_eq!(rig.take_written(), b"before the mark!after");
        assert_eq!(rig.sock().reads, 3, "two short reads, then WouldBlock");
        rig.send(b"later");
        rig.readable();
        assert_eq!(rig.take_written(), b"later");
        let reads = if SHORT_READ_DRAINS { 4 } else { 5 };
        assert_eq!(
            rig.sock().reads,
            reads,
            "the mark is behind us: short reads drain"
        );
    }

    /// A full read keeps reading until the socket says WouldBlock.
    #[test]
    fn full_read_drains_until_would_block() {
        let mut limits = small_limits();
        limits.high_watermark = 1 << 20;
        let mut rig = Rig::with_limits(Box::new(Echo), limits);
        rig.open();
        rig.send(&[7; 64]);
        rig.send(&[8; 10]);
        rig.readable();
        assert_eq!(rig.sock().reads, 2);
        assert_eq!(rig.take_written().len(), 74);
    }

    /// A partial write keeps only the tail and asks for WRITABLE until it is flushed.
    #[test]
    fn partial_write_keeps_tail() {
        let mut rig = echo_open();
        rig.sock().window = 3;
        rig.send(b"hello");
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"hel");
        assert_eq!(rig.conn.pending_output(), 2);
        assert_eq!(rig.conn.want(), READ_WRITE);

        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"lo");
        assert_eq!(rig.conn.want(), READ_ONLY);
        assert_eq!(rig.conn.buffered_capacity(), 0);
    }

    /// While a write is blocked, new output queues behind the pending bytes, in order, and no
    /// write is attempted until the writable edge.
    #[test]
    fn output_queues_in_order_while_blocked() {
        let mut rig = echo_open();
        rig.sock().window = 2;
        rig.send(b"abcd");
        rig.readable();
        let writes = rig.sock().writes;
        rig.send(b"ef");
        rig.readable();
        assert_eq!(rig.sock().writes, writes, "wrote while blocked");
        assert_eq!(rig.conn.pending_output(), 4);
        rig.sock().window = BIG_WINDOW;
        rig.writable();
        assert_eq!(rig.take_written(), b"abcdef");
    }

    /// Output reaching the high watermark pauses reading; it never exceeds the watermark.
    #[test]
    fn backpressure_pauses_at_high_watermark() {
        let mut rig = echo_open();
        rig.sock().window = 0;
        rig.send(&[1; 100]);
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.conn.pending_output(), 32);
        assert_eq!(rig.conn.want(), WRITE_ONLY);
        assert_eq!(rig.stats.snapshot().backpressure_pauses, 1);
        assert_eq!(rig.stats.snapshot().peak_pending_output, 32);
    }

    /// Draining below the low watermark resumes by reading at once, in the same turn: no
    /// readable edge, and no trip through poll for the re-registration to report the bytes.
    #[test]
    fn resume_reads_immediately_below_low_watermark() {
        let mut rig = echo_open();
        rig.sock().window = 0;
        rig.send(&[1; 100]);
        rig.readable();
        rig.sock().window = BIG_WINDOW;
        // Only a writable event: the 68 bytes still queued must be read in this same turn.
        assert_eq!(rig.writable(), Turn::Wait);
        assert_eq!(rig.take_written(), vec![1; 100]);
        assert_eq!(rig.conn.want(), READ_ONLY);
    }

    /// Hysteresis: draining to between the watermarks does not resume reading.
    #[test]
    fn no_resume_between_watermarks() {
        let mut rig = echo_open();
        rig.sock().window = 0;
        rig.send(&[1; 100]);
        rig.readable();
        rig.sock().window = 20; // 32 -> 12 pending, still above the low watermark of 8
        rig.writable();
        assert_eq!(rig.conn.pending_output(), 12);
        assert_eq!(rig.conn.want(), WRITE_ONLY);
    }

    /// A spent read budget returns Again, and run-queue turns finish the job with no event.
    #[test]
    fn budget_requeues_without_new_edge() {
        let mut limits = small_limits();
        limits.read_budget = 10;
        limits.high_watermark = 1 << 20;
        let mut rig = Rig::with_limits(Box::new(Echo), limits);
        rig.open();
        rig.send(&[5; 25]);
        assert_eq!(rig.readable(), Turn::Again);
        assert_eq!(rig.take_written().len(), 10);
        assert_eq!(rig.turn(Ready::NONE), Turn::Again);
        assert_eq!(rig.turn(Ready::NONE), Turn::Wait);
        assert_eq!(rig.take_written().len(), 15);
    }

    /// A partial request is held by the connection until the rest arrives.
    #[test]
    fn unconsumed_input_is_held() {
        let mut rig = Rig::new(Box::new(Lines));
        rig.open();
        rig.send(b"one\ntw");
        rig.readable();
        assert_eq!(rig.take_written(), b"one\n");
        rig.send(b"o\n");
        rig.readable();
        assert_eq!(rig.take_written(), b"two\n");
        assert_eq!(rig.conn.buffered_capacity(), 0);
    }

    /// A service that never consumes is closed once held input exceeds the high watermark.
    #[test]
    fn hoarding_service_is_a_protocol_error() {
        let mut rig = Rig::new(Box::new(Hoarder));
        rig.open();
        rig.send(&[0; 40]);
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Protocol));
    }

    /// A service that answers and hoards at once is closed too, and its last reply does not
    /// stay in the loop's shared output buffer, where the next connection's turn would send
    /// it to the wrong peer.
    #[test]
    fn protocol_error_leaves_no_output_behind() {
        struct AnswerButHoard;
        impl Service for AnswerButHoard {
            fn on_input(&mut self, _: &[u8], out: &mut Output<'_>) -> usize {
                out.write(b"reply");
                0
            }
        }
        let mut rig = Rig::new(Box::new(AnswerButHoard));
        rig.open();
        rig.send(&[0; 40]);
        // `turn` checks that the shared output scratch is empty afterwards.
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Protocol));
    }

    /// A reset while reading closes quietly with reason Reset.
    #[test]
    fn reset_on_read() {
        let mut rig = echo_open();
        rig.sock()
            .script
            .push_back(Step::Fail(ErrorKind::ConnectionReset));
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Reset));
        assert_eq!(rig.conn.state(), State::Closed);
    }

    /// A broken pipe while writing is a reset too; other errors are errors.
    #[test]
    fn write_errors_are_classified() {
        let mut rig = echo_open();
        rig.sock().write_error = Some(ErrorKind::BrokenPipe);
        rig.send(b"x");
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Reset));

        let mut rig = echo_open();
        rig.sock().write_error = Some(ErrorKind::PermissionDenied);
        rig.send(b"x");
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Error));
    }

    /// `Interrupted` is retried, not treated as an error.
    #[test]
    fn interrupted_read_retries() {
        let mut rig = echo_open();
        rig.sock()
            .script
            .push_back(Step::Fail(ErrorKind::Interrupted));
        rig.send(b"ok");
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"ok");
    }

    /// With nothing to read, a readable turn costs one read and changes nothing.
    #[test]
    fn spurious_readable_is_harmless() {
        let mut rig = echo_open();
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.conn.state(), State::Open);
    }
}

mod close_wait {
    use super::*;

    /// Peer FIN after data: the data is echoed, then our FIN, then closed with reason Peer.
    #[test]
    fn half_close_echoes_then_fins() {
        let mut rig = echo_open();
        rig.send(b"last words");
        rig.send_fin();
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Peer));
        assert_eq!(rig.take_written(), b"last words");
        assert!(rig.sock().fin);
        assert!(!rig.sock().abortive);
    }

    /// With echo still pending at the peer's FIN, our FIN waits until every byte is flushed.
    #[test]
    fn fin_waits_for_pending_output() {
        let mut rig = echo_close_wait(20);
        assert!(!rig.sock().fin);
        assert_eq!(rig.conn.want(), WRITE_ONLY);
        rig.sock().window = 15;
        assert_eq!(rig.writable(), Turn::Wait);
        assert!(!rig.sock().fin);
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Closed(CloseReason::Peer));
        assert_eq!(rig.take_written(), vec![b'x'; 20]);
        assert!(rig.sock().fin);
    }

    /// Data and FIN under one edge: the FIN is found even though the data read was short.
    #[test]
    fn fin_behind_short_read_is_seen() {
        let mut rig = echo_open();
        rig.send(b"tiny");
        rig.send_fin();
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Peer));
        assert_eq!(rig.sock().reads, 2);
    }

    /// In CLOSE-WAIT nothing more is read (the peer sent FIN).
    #[test]
    fn no_reads_after_fin() {
        let mut rig = echo_close_wait(5);
        let reads = rig.sock().reads;
        rig.readable();
        assert_eq!(rig.sock().reads, reads);
    }
}

mod closing {
    use super::*;

    /// A service that finishes with output stuck sends FIN only after the flush, and input
    /// arriving meanwhile is read and discarded.
    #[test]
    fn flush_before_fin_discarding_input() {
        let mut rig = Rig::new(Box::new(Daytime));
        rig.sock().window = 4;
        assert_eq!(rig.open(), Turn::Wait);
        assert_eq!(rig.conn.state(), State::Closing);
        assert!(!rig.sock().fin);
        assert_eq!(rig.conn.want(), READ_WRITE);

        rig.send(b"ignored");
        rig.readable();
        assert_eq!(rig.stats.snapshot().bytes_discarded, 7);
        assert_eq!(rig.stats.snapshot().bytes_in, 0);

        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Wait);
        assert!(rig.sock().fin);
        assert_eq!(rig.conn.state(), State::Lingering);
        let line = rig.take_written();
        assert!(line.ends_with(b"Z\r\n"), "{line:?}");
    }

    /// Input discarded while output is stuck at the watermark is read in full-size reads,
    /// not one byte at a time.
    #[test]
    fn discarding_is_not_limited_by_output_room() {
        let mut rig = echo_open();
        rig.sock().window = 0;
        rig.send(&[1; 100]);
        rig.readable(); // 32 pending: at the high watermark, 68 bytes left unread
        let reads = rig.sock().reads;
        rig.shut_down(); // discards the 68: one full read (64) and one short (4)
        assert_eq!(rig.conn.state(), State::Closing);
        rig.send(&[2; 60]);
        rig.readable(); // one short read
        assert_eq!(rig.sock().reads - reads, 3, "discarding read byte by byte");
        assert_eq!(rig.stats.snapshot().bytes_discarded, 128);
    }

    /// The peer's FIN while we flush skips lingering: flush, FIN, closed.
    #[test]
    fn peer_fin_while_closing() {
        let mut rig = Rig::new(Box::new(Daytime));
        rig.sock().window = 4;
        rig.open();
        rig.send_fin();
        rig.readable();
        assert_eq!(rig.conn.state(), State::CloseWait);
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Closed(CloseReason::Peer));
        assert!(rig.sock().fin);
    }

    /// Server shutdown from OPEN: pending output is flushed, then FIN, then lingering.
    #[test]
    fn shutdown_flushes_then_lingers() {
        let mut rig = echo_open();
        rig.sock().window = 2;
        rig.send(b"abcd");
        rig.readable();
        assert_eq!(rig.shut_down(), Turn::Wait);
        assert_eq!(rig.conn.state(), State::Closing);
        rig.send(b"after shutdown");
        rig.sock().window = BIG_WINDOW;
        rig.turn(Ready {
            writable: true,
            ..READABLE
        });
        assert_eq!(
            rig.take_written(),
            b"abcd",
            "nothing read after shutdown is echoed"
        );
        assert!(rig.sock().fin);
        assert_eq!(rig.conn.state(), State::Lingering);
    }
    /// The read that follows our FIN spends what is left of the turn's budget, not a fresh
    /// one: when the budget runs out with data left, the turn asks to run again instead of
    /// waiting for an edge that a peer which has sent everything will never raise.
    #[test]
    fn lingering_read_shares_the_turn_budget() {
        let mut rig = Rig::new(Box::new(Daytime));
        rig.sock().window = 4;
        rig.open();
        rig.send(&vec![7; 3 * 1024]);
        rig.send_fin();
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Again, "data left after the budget");
        assert_eq!(rig.conn.state(), State::Lingering);
        for _ in 0..10 {
            match rig.turn(Ready::NONE) {
                Turn::Again => continue,
                Turn::Closed(reason) => {
                    assert_eq!(reason, CloseReason::Server);
                    return;
                }
                Turn::Wait => panic!("waiting for an edge with data and FIN unread"),
            }
        }
        panic!("the peer's FIN was never reached");
    }
}

mod lingering {
    use super::*;

    /// After our FIN, input is discarded until the peer's FIN, which closes cleanly.
    #[test]
    fn discards_until_peer_fin() {
        let mut rig = daytime_lingering();
        rig.send(&[9; 100]);
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.stats.snapshot().bytes_discarded, 100);
        rig.send_fin();
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Server));
        assert!(!rig.sock().abortive);
    }

    /// A peer that never finishes is closed at the linger deadline.
    #[test]
    fn linger_timeout() {
        let mut rig = daytime_lingering();
        let deadline = rig.conn.deadline(&rig.limits).unwrap();
        assert_eq!(deadline, Time(5_000));
        rig.now = Time(4_999);
        assert_eq!(rig.deadline(), Turn::Wait);
        rig.now = deadline;
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::LingerTimeout));
    }

    /// An idle deadline armed before lingering began cannot cut the linger short.
    #[test]
    fn stale_idle_deadline_does_not_end_lingering() {
        let mut limits = small_limits();
        limits.idle_timeout = Some(Duration::from_secs(1));
        let mut rig = Rig::with_limits(Box::new(Echo), limits);
        rig.open();
        rig.now = Time(900);
        rig.shut_down();
        assert_eq!(rig.conn.state(), State::Lingering);
        rig.now = Time(1_000); // idle would have expired here
        assert_eq!(rig.deadline(), Turn::Wait);
        rig.now = Time(5_900);
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::LingerTimeout));
    }

    /// A peer that keeps sending after our FIN (a trickler answered with a protocol error)
    /// does not extend lingering: the linger deadline counts from our FIN, not from the
    /// peer's last byte, so the slot comes back at the linger timeout whatever it sends.
    #[test]
    fn trickling_does_not_extend_lingering() {
        let mut rig = daytime_lingering();
        for second in 1..5 {
            rig.now = Time(second * 1_000);
            rig.send(b"x");
            assert_eq!(rig.readable(), Turn::Wait);
            assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(5_000)));
        }
        rig.now = Time(5_000);
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::LingerTimeout));
    }

    /// A lingering connection wants only READABLE.
    #[test]
    fn wants_read_only() {
        let rig = daytime_lingering();
        assert_eq!(rig.conn.want(), READ_ONLY);
    }
}

mod timeouts {
    use super::*;

    /// The idle deadline follows the last activity.
    #[test]
    fn idle_deadline_moves_with_activity() {
        let mut rig = echo_open();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(300_000)));
        rig.now = Time(1_000);
        rig.send(b"x");
        rig.readable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(301_000)));
        rig.now = Time(300_999);
        assert_eq!(rig.deadline(), Turn::Wait);
        rig.now = Time(301_000);
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::Idle));
        assert!(!rig.sock().abortive);
    }

    /// Output stuck with no progress is aborted with RST at the write-stall deadline.
    #[test]
    fn write_stall_aborts() {
        let mut rig = echo_open();
        rig.now = Time(10);
        rig.sock().window = 0;
        rig.send(b"stuck");
        rig.readable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(30_010)));
        rig.now = Time(30_010);
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::WriteStall));
        assert!(rig.sock().abortive);
    }

    /// Progress on a slow writer pushes the stall deadline out.
    #[test]
    fn progress_defers_stall() {
        let mut rig = echo_open();
        rig.sock().window = 1;
        rig.send(b"slow");
        rig.readable();
        rig.now = Time(20_000);
        rig.sock().window = 1;
        rig.writable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(50_000)));
    }

    /// Timeouts set to off leave no deadline.
    #[test]
    fn disabled_timeouts() {
        let mut limits = small_limits();
        limits.idle_timeout = None;
        limits.write_stall_timeout = None;
        let mut rig = Rig::with_limits(Box::new(Echo), limits);
        rig.open();
        assert_eq!(rig.conn.deadline(&rig.limits), None);
    }
}

mod output_contract {
    use super::*;

    /// Answers every input byte with ten, and only while output has room.
    struct Amplifier;

    impl Service for Amplifier {
        fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
            let mut used = 0;
            while used < input.len() && out.room() > 0 {
                out.write(&[b'r'; 10]);
                used += 1;
            }
            used
        }
    }

    /// Input the service holds back for room is offered again when output drains, without
    /// a new read: the peer sent everything and its FIN, so no new edge would come. Every
    /// reply arrives, and pending output never exceeds the high watermark plus one reply.
    #[test]
    fn held_input_is_offered_again_without_a_read() {
        let mut rig = Rig::new(Box::new(Amplifier));
        assert_eq!(rig.open(), Turn::Wait);
        rig.sock().window = 0;
        rig.send(&[1; 20]);
        rig.send_fin();
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(
            rig.conn.state(),
            State::Open,
            "the FIN waits behind held input"
        );
        let peak = |rig: &Rig| rig.stats.snapshot().peak_pending_output;
        assert!(peak(&rig) <= 32 + 10, "pending {}", peak(&rig));
        let reads = rig.sock().reads;

        // The peer reads: everything else is answered from the held input, then the FIN.
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Closed(CloseReason::Peer));
        assert_eq!(rig.take_written(), vec![b'r'; 200]);
        assert_eq!(
            rig.sock().reads - reads,
            1,
            "only the read that found the FIN"
        );
        assert!(peak(&rig) <= 32 + 10, "pending {}", peak(&rig));
    }

    /// With a budget smaller than the held input, offering stops at the budget and the turn
    /// asks to run again rather than waiting for an event.
    #[test]
    fn offering_held_input_respects_the_budget() {
        let mut limits = small_limits();
        limits.read_budget = 4;
        let mut rig = Rig::with_limits(Box::new(Amplifier), limits);
        rig.open();
        rig.sock().window = 0;
        rig.send(&[1; 4]);
        rig.readable(); // 4 read, 4 answered (40 bytes): paused
        rig.send(&[1; 12]);
        rig.sock().window = BIG_WINDOW;
        let mut turn = rig.writable();
        let mut turns = 1;
        while turn == Turn::Again {
            turn = rig.turn(Ready::NONE);
            turns += 1;
            assert!(turns < 20);
        }
        assert_eq!(turn, Turn::Wait);
        assert_eq!(rig.take_written().len(), 160);
        assert!(turns > 1, "the budget never ended a turn");
    }

    /// An `http` service, as a listener's factory makes it for a client at 192.0.2.7.
    fn http() -> Box<dyn Service> {
        crate::service::test_connection(false, |conn| {
            Box::new(Http::new(conn, HttpLimits::default()))
        })
    }

    /// A keep-alive request answered whole, with nothing held, ends its turn waiting for the
    /// next event: a turn that asked to run again would cost every request a run-queue turn
    /// and a zero-timeout poll. Only held input whose room came back runs again.
    #[test]
    fn an_answered_request_waits_and_a_held_one_runs_again() {
        let mut rig = Rig::with_limits(http(), Limits::default());
        assert_eq!(rig.open(), Turn::Wait);
        rig.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(rig.readable(), Turn::Wait, "one request, nothing held");
        let reply = String::from_utf8(rig.take_written()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
        assert!(reply.ends_with("\r\n\r\nok"), "{reply:?}");
        // Pipelined requests in one read, and one cut across reads: still nothing to rerun.
        rig.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHo");
        assert_eq!(
            rig.readable(),
            Turn::Wait,
            "a partial request waits for bytes"
        );
        rig.send(b"st: a\r\n\r\n");
        assert_eq!(
            rig.readable(),
            Turn::Wait,
            "the rest answered, nothing held"
        );
        let replies = String::from_utf8(rig.take_written()).unwrap();
        assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 2, "{replies:?}");
        assert_eq!(rig.conn.held_input(), 0);

        // The other side of the line: a request held behind a generated body whose end comes
        // in the producing step, under a watermark smaller than that body, runs again.
        let limits = Limits {
            high_watermark: 64,
            low_watermark: 16,
            ..Limits::default()
        };
        let mut rig = Rig::with_limits(http(), limits);
        rig.scratch = vec![0; 64 * 1024]; // both requests in one read, as the fuzzer sent them
        assert_eq!(rig.open(), Turn::Wait);
        rig.send(
            b"GET /?size=100 HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        let mut turn = rig.readable();
        let mut again = 0;
        while turn == Turn::Again {
            again += 1;
            assert!(again < 20, "never settles");
            turn = rig.turn(Ready::NONE);
        }
        assert_eq!(turn, Turn::Wait);
        assert!(
            again > 0,
            "the held request waited for an event no peer sends"
        );
        let replies = String::from_utf8(rig.take_written()).unwrap();
        assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 2, "{replies:?}");
        assert!(replies.ends_with("\r\n\r\nok"), "{replies:?}");
    }
}

mod request_timeout {
    use super::*;

    /// A partial request that is still incomplete at the request timeout is reset at once,
    /// counted as a request timeout: no FIN and no lingering, since no reply is owed to it and
    /// lingering would keep the slot while the peer trickles on. Bytes that trickle in do not
    /// move the deadline.
    #[test]
    fn partial_request_times_out() {
        let mut rig = Rig::new(Box::new(Lines));
        rig.open();
        rig.send(b"no newline yet");
        rig.readable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(30_000)));
        rig.now = Time(20_000);
        rig.send(b", still none");
        rig.readable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(30_000)));
        rig.now = Time(30_000);
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::RequestTimeout));
        assert!(rig.sock().abortive, "reset, not lingering");
        assert!(!rig.sock().fin);
    }

    /// Completing the request stops the clock; a new partial request starts it again.
    #[test]
    fn completed_request_resets_the_clock() {
        let mut rig = Rig::new(Box::new(Lines));
        rig.open();
        rig.send(b"first");
        rig.readable();
        rig.now = Time(25_000);
        rig.send(b" done\nsecond");
        rig.readable();
        assert_eq!(rig.take_written(), b"first done\n");
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(55_000)));
        rig.send(b" done\n");
        rig.readable();
        assert_eq!(
            rig.conn.deadline(&rig.limits),
            Some(Time(325_000)),
            "only the idle timeout is left"
        );
        rig.now = Time(55_000);
        assert_eq!(rig.deadline(), Turn::Wait);
        assert_eq!(rig.conn.state(), State::Open);
    }
}

mod streaming {
    use super::*;

    /// Chargen fills output only up to the high watermark and refills only as it drains, so
    /// a reader that stops costs bounded memory.
    #[test]
    fn chargen_is_bounded_by_watermarks() {
        let mut rig = Rig::new(Box::new(Chargen::new()));
        rig.sock().window = 10;
        assert_eq!(rig.open(), Turn::Wait);
        assert_eq!(
            rig.conn.pending_output(),
            22,
            "room filled to the high watermark"
        );
        for _ in 0..5 {
            rig.readable();
        }
        assert_eq!(rig.conn.pending_output(), 22, "no growth without drain");
        rig.sock().window = 20; // 22 -> 2 pending, below the low watermark: refill to 32
        rig.writable();
        assert_eq!(rig.take_written().len(), 30);
        assert!(rig.conn.pending_output() <= 32);
        assert!(rig.stats.snapshot().peak_pending_output <= 32);
    }

    /// Against a fast reader, chargen stops at the turn budget and asks to run again.
    #[test]
    fn chargen_yields_at_budget() {
        let mut rig = Rig::new(Box::new(Chargen::new()));
        assert_eq!(rig.open(), Turn::Again);
        let first = rig.take_written().len();
        // The budget (1024) plus the greeting, which is not counted against it.
        assert_eq!(first, 1024 + 32);
        assert_eq!(rig.turn(Ready::NONE), Turn::Again);
    }

    /// A paused streaming service still sees the peer's FIN once output drains: input is
    /// read before the producer refills.
    #[test]
    fn producer_does_not_hide_peer_fin() {
        let mut rig = Rig::new(Box::new(Chargen::new()));
        rig.sock().window = 0;
        rig.open();
        assert_eq!(rig.conn.want(), WRITE_ONLY, "paused at the watermark");
        rig.send_fin();
        rig.turn(Ready {
            closed: true,
            ..READABLE
        });
        for _ in 0..10 {
            rig.sock().window = 32;
            if let Turn::Closed(reason) = rig.writable() {
                assert_eq!(reason, CloseReason::Peer);
                assert!(rig.sock().fin);
                return;
            }
        }
        panic!("FIN never read: {:?}", rig.conn);
    }

    /// Chargen output is the RFC 864 pattern regardless of how the kernel splits writes.
    #[test]
    fn chargen_pattern_survives_partial_writes() {
        let mut rig = Rig::new(Box::new(Chargen::new()));
        rig.sock().window = 7;
        rig.open();
        for w in [1, 13, 74, 5, 40, 33] {
            rig.sock().window = w;
            rig.writable();
        }
        let got = rig.take_written();
        let mut reference = crate::service::Harness::new(Chargen::new());
        reference.high_watermark = got.len();
        reference.connect();
        assert_eq!(got, reference.take_output());
    }
}

mod framing {
    //! Reassembly through the real connection: however the kernel splits a pipelined stream
    //! into reads, the replies are those of the stream delivered whole.
    use super::*;
    use crate::service::{Frame, Line};
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits {
            high_watermark: 1 << 20,
            low_watermark: 1 << 10,
            ..small_limits()
        }
    }

    /// Feeds `stream` to a fresh connection in reads of the given sizes (then EOF) and returns
    /// everything written.
    fn replies(service: Box<dyn Service>, stream: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut rig = Rig::with_limits(service, limits());
        rig.open();
        let mut rest = stream;
        for &cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = cut.clamp(1, rest.len());
            rig.send(&rest[..n]);
            rest = &rest[n..];
            // One read per event, so every piece is a separate read.
            rig.readable();
        }
        rig.send_fin();
        for _ in 0..4 {
            if let Turn::Closed(_) = rig.readable() {
                break;
            }
        }
        rig.take_written()
    }

    fn line_service() -> Box<dyn Service> {
        crate::service::test_connection(false, |conn| Box::new(Line::new(conn, 200)))
    }

    /// Requests whose replies do not depend on time or counters.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        let text = "[ -~]{0,40}";
        (0..4usize, text, any::<bool>()).prop_map(|(kind, text, crlf)| {
            let mut line = match kind {
                0 => format!("PING {text}"),
                1 => format!("echo {text}"),
                2 => "HELP".to_string(),
                _ => format!("NOPE{text}"),
            }
            .into_bytes();
            line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            line
        })
    }

    fn frame() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|payload| {
            let mut f = (payload.len() as u32).to_be_bytes().to_vec();
            f.extend(payload);
            f
        })
    }

    proptest! {
        /// Lines: any split gives the replies of the whole stream.
        #[test]
        fn line_replies_do_not_depend_on_splits(
            requests in proptest::collection::vec(request(), 1..40),
            cuts in proptest::collection::vec(1usize..80, 1..20),
        ) {
            let stream = requests.concat();
            let whole = replies(line_service(), &stream, &[stream.len()]);
            let split = replies(line_service(), &stream, &cuts);
            prop_assert_eq!(whole.iter().filter(|&&b| b == b'\n').count(), requests.len());
            prop_assert_eq!(split, whole);
        }

        /// Frames: any split gives the replies of the whole stream, which is the stream.
        #[test]
        fn frame_replies_do_not_depend_on_splits(
            frames in proptest::collection::vec(frame(), 1..20),
            cuts in proptest::collection::vec(1usize..400, 1..20),
        ) {
            let stream = frames.concat();
            let split = replies(Box::new(Frame::new(1000)), &stream, &cuts);
            prop_assert_eq!(split, stream);
        }
    }
}

mod behind_proxy {
    use super::*;

    const HEADER: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 7007\r\n";

    /// A factory of `make`'s services that records the client each was created for.
    fn recording(
        make: fn() -> Box<dyn Service>,
    ) -> (Arc<dyn ServiceFactory>, Arc<Mutex<Vec<SocketAddr>>>) {
        let clients = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&clients);
        let factory = Arc::new(move |conn: &ConnInfo<'_>| {
            seen.lock().unwrap().push(conn.client());
            make()
        });
        (factory, clients)
    }

    fn echo() -> Box<dyn Service> {
        Box::new(Echo)
    }

    /// A header split over many reads, with the stream's first bytes in its last read: the
    /// service is created once, for the client the header names, and echoes only the
    /// stream, once.
    #[test]
    fn header_split_over_reads_then_data() {
        let (factory, clients) = recording(echo);
        let mut rig = Rig::behind_proxy(factory);
        assert_eq!(rig.open(), Turn::Wait);
        for piece in HEADER[..HEADER.len() - 1].chunks(7) {
            rig.send(piece);
            assert_eq!(rig.readable(), Turn::Wait);
            assert!(
                clients.lock().unwrap().is_empty(),
                "no service before the header"
            );
        }
        let mut last = HEADER[HEADER.len() - 1..].to_vec();
        last.extend(b"hello");
        rig.send(&last);
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"hello");
        assert_eq!(
            *clients.lock().unwrap(),
            ["192.0.2.7:56324".parse().unwrap()]
        );
        rig.send(b" world");
        rig.readable();
        assert_eq!(rig.take_written(), b" world");
        let s = rig.stats.snapshot();
        assert_eq!(
            (s.proxy_proxied, s.bytes_in),
            (1, 11),
            "header bytes are not input"
        );
    }

    /// A greeting service greets after the header, not at accept.
    #[test]
    fn greeting_waits_for_the_header() {
        let (factory, _) = recording(|| Box::new(Daytime));
        let mut rig = Rig::behind_proxy(factory);
        assert_eq!(rig.open(), Turn::Wait);
        assert!(rig.take_written().is_empty());
        let mut v2 = ppp::v2::Builder::with_addresses(
            0x21,
            ppp::v2::Protocol::Stream,
            (
                "192.0.2.7:1".parse::<SocketAddr>().unwrap(),
                "198.51.100.1:2".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        v2.extend(b"ignored by daytime");
        rig.send(&v2);
        rig.readable();
        assert!(rig.take_written().ends_with(b"\r\n"), "the daytime line");
    }

    /// Garbage, a FIN before the header, and a header that never completes: each closes the
    /// connection with its counter, and no service is ever created.
    #[test]
    fn refused_headers_never_reach_the_service() {
        let (factory, clients) = recording(echo);
        let mut rig = Rig::behind_proxy(Arc::clone(&factory));
        rig.open();
        rig.send(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Proxy));
        assert_eq!(rig.stats.snapshot().proxy_malformed, 1);

        let mut rig = Rig::behind_proxy(Arc::clone(&factory));
        rig.open();
        rig.send(&HEADER[..10]);
        rig.send_fin();
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Proxy));
        assert_eq!(rig.stats.snapshot().proxy_truncated, 1);

        let mut rig = Rig::behind_proxy(Arc::clone(&factory));
        rig.open();
        rig.send(&HEADER[..10]);
        rig.readable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(5_000)));
        rig.now = Time(4_999);
        assert_eq!(rig.deadline(), Turn::Wait);
        rig.now = Time(5_000);
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::Proxy));
        assert_eq!(rig.stats.snapshot().proxy_timeout, 1);

        assert!(clients.lock().unwrap().is_empty());
        assert!(rig.take_written().is_empty());
    }

    /// Once the header is in, its deadline is gone: the usual idle deadline remains.
    #[test]
    fn header_deadline_ends_with_the_header() {
        let (factory, _) = recording(echo);
        let mut rig = Rig::behind_proxy(factory);
        rig.open();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(5_000)));
        rig.send(HEADER);
        rig.readable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(300_000)));
    }
}

/// A layer's handshake as a stage before serving: the service is born after it, over what
/// it settled; the loop's handshake budget paces it; its deadline and its failures close
/// the connection, counted.
mod handshake_stage {
    use super::*;

    const HEADER: &[u8] = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 7007\r\n";

    fn negotiated() -> Negotiated {
        Negotiated {
            version: "TLSv1.3",
            cipher_suite: "TLS13_AES_128_GCM_SHA256",
            group: Some("X25519"),
            alpn: None,
            sni: Some("a.test".into()),
            resumed: false,
            client_subject: None,
        }
    }

    /// What the factory was told, per service created.
    type Seen = Arc<Mutex<Vec<(SocketAddr, Option<Negotiated>)>>>;

    fn recording(make: fn() -> Box<dyn Service>) -> (Arc<dyn ServiceFactory>, Seen) {
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        let factory = Arc::new(move |conn: &ConnInfo<'_>| {
            log.lock().unwrap().push((conn.client(), conn.tls.cloned()));
            make()
        });
        (factory, seen)
    }

    fn tls(factory: Arc<dyn ServiceFactory>) -> Rig {
        let stages = Stages {
            proxy_header: false,
            handshake: true,
        };
        Rig::with_stages(factory, stages)
    }

    /// The handshake's own bytes never reach the service; it is created once the handshake
    /// completes, over what it settled, and greets only then (no plaintext before the
    /// keys); the plaintext that came behind the handshake is its first input.
    #[test]
    fn the_service_is_born_after_the_handshake() {
        let (factory, seen) = recording(|| Box::new(Daytime));
        let mut rig = tls(factory);
        assert_eq!(rig.open(), Turn::Wait);
        rig.send(b"client hello");
        assert_eq!(rig.readable(), Turn::Wait);
        assert!(seen.lock().unwrap().is_empty());
        assert!(rig.take_written().is_empty(), "nothing before the keys");
        rig.send(b"client finished");
        rig.sock()
            .script
            .push_back(Step::Shake(HandshakeEnd::Completed(negotiated())));
        rig.readable();
        assert_eq!(seen.lock().unwrap()[0].1, Some(negotiated()));
        let written = rig.take_written();
        assert!(written.ends_with(GOODBYE), "daytime finishes");
        assert_eq!(
            written[..written.len() - GOODBYE.len()].last(),
            Some(&b'\n')
        );
        let t = rig.stats.snapshot().tls;
        assert_eq!((t.completed, t.of_kind(true, false)), (1, 1));

        let (factory, _) = recording(|| Box::new(Echo));
        let mut rig = tls(factory);
        rig.open();
        rig.send(b"hello");
        rig.sock()
            .script
            .push_back(Step::Shake(HandshakeEnd::Completed(negotiated())));
        rig.send(b"first bytes");
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"first bytes");
        assert_eq!(
            rig.stats.snapshot().bytes_in,
            11,
            "handshake bytes are not input"
        );
    }

    /// With the loop's handshake budget spent, a handshake waits for the next turn (the run
    /// queue) without reading a byte, and goes on when given one; each turn that reads takes
    /// one from the budget.
    #[test]
    fn the_loops_handshake_budget_paces_handshakes() {
        let (factory, seen) = recording(|| Box::new(Echo));
        let mut rig = tls(factory);
        rig.open();
        rig.send(b"client hello");
        rig.sock()
            .script
            .push_back(Step::Shake(HandshakeEnd::Completed(negotiated())));
        rig.handshakes = 0;
        assert_eq!(rig.readable(), Turn::Again);
        assert_eq!(rig.sock().reads, 0);
        rig.handshakes = 2;
        assert_eq!(rig.turn(Ready::NONE), Turn::Wait);
        assert_eq!(rig.handshakes, 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// A handshake that never completes is closed at its deadline (from accept), counted as
    /// a timeout; a failed one is closed at once, counted by how it failed. No service.
    #[test]
    fn late_and_failed_handshakes_close_counted() {
        let (factory, seen) = recording(|| Box::new(Echo));
        let mut rig = tls(Arc::clone(&factory));
        rig.open();
        rig.send(b"half a hello");
        rig.readable();
        assert_eq!(rig.conn.deadline(&rig.limits), Some(Time(10_000)));
        rig.now = Time(9_999);
        assert_eq!(rig.deadline(), Turn::Wait);
        rig.now = Time(10_000);
        assert_eq!(rig.deadline(), Turn::Closed(CloseReason::Handshake));
        let t = rig.stats.snapshot().tls;
        assert_eq!(t.failures(HandshakeFailure::Timeout), 1);

        let mut rig = tls(factory);
        rig.open();
        rig.send(b"GET / HTTP/1.1");
        rig.sock()
            .script
            .push_back(Step::Shake(HandshakeEnd::Failed {
                how: HandshakeFailure::NotTls,
                why: "a plaintext HTTP request".into(),
            }));
        assert_eq!(rig.readable(), Turn::Closed(CloseReason::Handshake));
        let t = rig.stats.snapshot().tls;
        assert_eq!((t.failures(HandshakeFailure::NotTls), t.completed), (1, 0));
        assert!(seen.lock().unwrap().is_empty());
    }

    /// A handshake flight the socket did not take is wanted WRITABLE and sent on the edge,
    /// before anything else.
    #[test]
    fn a_flight_that_did_not_fit_waits_for_writable() {
        let (factory, _) = recording(|| Box::new(Echo));
        let mut rig = tls(factory);
        rig.open();
        rig.sock().window = 0;
        rig.sock().own_output = b"server hello".to_vec();
        rig.send(b"client hello");
        rig.readable();
        assert_eq!(rig.conn.want(), READ_WRITE);
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"server hello");
        assert_eq!(rig.conn.want(), READ_ONLY);
    }

    /// Behind a PROXY header, the layer begins after it with the bytes that followed the
    /// header in the same read (its first records), and the service is born for the client
    /// the header named, over the session the handshake settled.
    #[test]
    fn proxy_header_then_handshake() {
        let (factory, seen) = recording(|| Box::new(Echo));
        let stages = Stages {
            proxy_header: true,
            handshake: true,
        };
        let mut rig = Rig::with_stages(factory, stages);
        rig.open();
        let mut first = HEADER.to_vec();
        first.extend(b"\x16\x03\x01 hello");
        rig.send(&first);
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(
            rig.sock().shake.as_ref().unwrap().early,
            b"\x16\x03\x01 hello"
        );
        rig.send(b"client finished");
        rig.sock()
            .script
            .push_back(Step::Shake(HandshakeEnd::Completed(negotiated())));
        rig.readable();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "192.0.2.7:56324".parse().unwrap());
        assert_eq!(seen[0].1, Some(negotiated()));
        assert_eq!(rig.stats.snapshot().proxy_proxied, 1);
    }
}

/// The seam a layer under the state machine (TLS) plugs into: input it holds raises no edge,
/// and output of its own is wanted, flushed, and sent before our FIN.
mod socket_layer {
    use super::*;

    /// Two records' worth of input held by the layer, read in two short reads: the second
    /// comes in the same turn, because a short read no longer proves the socket drained
    /// (a plain socket stops after the first; see `short_read_needs_no_second_read`).
    #[test]
    fn input_held_by_the_layer_is_read_without_an_edge() {
        let mut rig = echo_open();
        rig.sock().layered = true;
        rig.send(b"first ");
        rig.send(b"second");
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"first second");
        assert_eq!(
            rig.sock().reads,
            2,
            "nothing held after the second: no third read"
        );
    }

    /// Output of the layer's own makes the connection want WRITABLE with nothing of the
    /// service's pending, and the writable edge sends it.
    #[test]
    fn output_of_the_layer_is_wanted_and_flushed() {
        let mut rig = echo_open();
        assert_eq!(rig.conn.want(), READ_ONLY);
        rig.sock().window = 0;
        rig.sock().own_output = b"handshake".to_vec();
        assert_eq!(rig.conn.want(), READ_WRITE);
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"handshake");
        assert_eq!(rig.conn.want(), READ_ONLY);
    }

    /// A service that ends the conversation at once, saying nothing.
    struct Silent;

    impl Service for Silent {
        fn on_connect(&mut self, out: &mut Output<'_>) {
            out.finish();
        }

        fn on_input(&mut self, _: &[u8], _: &mut Output<'_>) -> usize {
            0
        }
    }

    /// Our FIN waits for the layer's own output: a closing connection with nothing of the
    /// service's pending does not shut down its sending half while the layer still has bytes
    /// to send (a TLS alert), and does once they left.
    #[test]
    fn fin_waits_for_the_layer_output() {
        let mut rig = Rig::new(Box::new(Silent));
        rig.sock().window = 0;
        rig.sock().own_output = b"alert".to_vec();
        assert_eq!(rig.open(), Turn::Wait);
        assert_eq!(rig.conn.state(), State::Closing);
        assert_eq!(
            rig.conn.pending_output(),
            b"alert".len(),
            "the layer's only"
        );
        assert!(!rig.sock().fin, "FIN before the layer's output");
        rig.sock().window = BIG_WINDOW;
        rig.writable();
        assert_eq!(rig.take_written(), b"alert");
        assert!(rig.sock().fin);
        assert_eq!(rig.conn.state(), State::Lingering);
    }

    /// In CLOSE-WAIT our FIN goes out through the layer, which says goodbye first (TLS's
    /// `close_notify`) and may not get it out at once: the connection waits for the writable
    /// edge and closes once the goodbye and the FIN have left, rather than closing with the
    /// goodbye still queued.
    #[test]
    fn close_wait_waits_for_the_layers_goodbye() {
        let mut rig = echo_open();
        rig.sock().layered = true;
        rig.send(b"last");
        rig.send_fin();
        rig.sock().window = 4; // room for the echo, none for the goodbye
        assert_eq!(rig.readable(), Turn::Wait);
        assert_eq!(rig.take_written(), b"last");
        assert!(!rig.sock().fin, "FIN before the goodbye");
        assert_eq!(rig.conn.want(), WRITE_ONLY);
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Closed(CloseReason::Peer));
        assert_eq!(rig.take_written(), GOODBYE);
        assert!(rig.sock().fin);
    }

    /// Lingering after a server-side close keeps the same rule: the goodbye waits for room,
    /// and our FIN for the goodbye.
    #[test]
    fn closing_sends_the_goodbye_before_the_fin() {
        let mut rig = Rig::new(Box::new(Silent));
        rig.sock().layered = true;
        rig.sock().window = 3;
        assert_eq!(rig.open(), Turn::Wait);
        assert_eq!(rig.conn.state(), State::Lingering);
        assert_eq!(rig.take_written(), &GOODBYE[..3]);
        assert!(!rig.sock().fin);
        assert_eq!(rig.conn.want(), READ_WRITE);
        rig.sock().window = BIG_WINDOW;
        assert_eq!(rig.writable(), Turn::Wait);
        assert_eq!(rig.take_written(), &GOODBYE[3..]);
        assert!(rig.sock().fin);
        assert_eq!(rig.conn.want(), READ_ONLY);
    }
}
