//! The byte-stream discipline: how a flow's messages travel over any
//! [`Stream`] — TCP, or TLS over it — with the same readiness rules
//! as the server.
//!
//! * **Drain or remember, with a budget.** [`read_some`] reads until the socket is drained
//!   (`WouldBlock`, or a short read: the receive queue was empty — unless the stream says it
//!   still holds bytes, [`Layer::buffered`], as a TLS layer can), end-of-file, or the
//!   receive budget. Stopping at the budget with data left is remembered (the flow goes on
//!   the worker's run queue), because no new edge will announce data that is already
//!   queued. Without the budget one fast connection — a chargen server that never stops —
//!   would keep the worker from every other connection and its clock. Where this differs from
//!   the server: loopd also reads on while the poller reports TCP urgent data (a read stops
//!   short at the urgent mark). The client does not register for it: a server under test has
//!   no business sending `MSG_OOB`, and if one does, the bytes behind the mark wait for its
//!   next arrival and a reply that never completes is reported (`unanswered`), not hidden.
//! * **A write of zero bytes is an error.** `write` returning `Ok(0)` for a non-empty buffer
//!   makes no progress and never will; looping on it spins a core.
//! * **Output of the stream's own goes first.** A layered stream can owe output nobody
//!   asked the flow for (a TLS handshake flight the socket did not take, `close_notify`):
//!   the write pass flushes it before anything else, so the writable edge moves it even when
//!   the flow has no message to send.
//! * **Requests are generated as they are written.** Queuing a message only counts it;
//!   [`write_some`] lays the stream out from a cursor, one `writev` per pass, and replies are
//!   checked against the same stream as they arrive, whatever the split.

use std::io::{self, ErrorKind as IoKind, IoSlice, Read, Write};
use std::marker::PhantomData;
use std::time::Instant;

use super::backend::{ask, identify, Backend};
use super::wire::{Conn, Wire, WriteEnd};
use super::{Ctx, Failure, Pending, RECV_BUDGET};
use crate::config::{Expect, Load};
use crate::errors::ErrorKind;
use crate::net::{interrupted, would_block};
use crate::payload::{self, check_chargen, Codec, Cursor, Dir, Gather};
use crate::transport::{Handshake, Layer, Stream};

/// The byte-stream [`Wire`] over a stream socket `S`.
#[derive(Debug)]
pub struct Bytes<S>(PhantomData<S>);

/// Where a connection's two streams are.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamState {
    /// How far the requests are written.
    pub written: Cursor,
    /// How far the replies are received and checked.
    pub replied: Cursor,
    /// Download: bytes received on this connection (the offset in the expected stream);
    /// handshake mode: bytes the server sent after the handshake.
    pub received: u64,
    /// Handshake mode: the server closed its side (after the handshake, that is an answer).
    pub finished: bool,
}

impl StreamState {
    /// Replies can arrive for messages written at least in part, not beyond.
    fn reply_end(&self) -> u64 {
        self.written.seq + u64::from(self.written.offset > 0)
    }
}

impl<S: Stream> Wire for Bytes<S> {
    type Socket = S;
    type State = StreamState;
    const HANDSHAKE: bool = true;
    const LOSSY: bool = false;
    const ASKS_BACKEND: bool = true;

    fn handshake(socket: &mut S) -> Handshake {
        socket.handshake()
    }

    fn start(seq: u64) -> StreamState {
        let at = Cursor { seq, offset: 0 };
        StreamState {
            written: at,
            replied: at,
            received: 0,
            finished: false,
        }
    }

    /// Queues the request; its bytes are generated when written.
    fn send(conn: &mut Conn<Self>, _: &mut Ctx<S>, p: Pending) -> Result<bool, Failure> {
        conn.inflight.push_back(p);
        Ok(true)
    }

    fn write(
        conn: &mut Conn<Self>,
        cx: &mut Ctx<S>,
        now: Instant,
        budget: &mut usize,
    ) -> Result<WriteEnd, Failure> {
        if let Some(end) = flush_layer(&mut conn.socket, &mut conn.blocked)? {
            return Ok(end);
        }
        if let Backend::Asking { written, .. } = &mut conn.backend {
            ask(&mut conn.socket, written, &mut conn.blocked)?;
            return Ok(WriteEnd::Done);
        }
        let backend = conn.backend.index();
        let (id, next_seq) = (conn.id, conn.next_seq);
        let out = Requests {
            socket: &mut conn.socket,
            blocked: &mut conn.blocked,
            written: &mut conn.wire.written,
        };
        out.write(id, next_seq, backend, cx, now, budget)
    }

    fn queued(conn: &Conn<Self>) -> u64 {
        conn.next_seq - conn.wire.written.seq
    }

    fn receive(conn: &mut Conn<Self>, cx: &mut Ctx<S>, now: Instant) -> Result<(), Failure> {
        let mut scratch = std::mem::take(&mut cx.buffers.scratch);
        let mut reply = Reply {
            id: conn.id,
            stream: &mut conn.wire,
            inflight: &mut conn.inflight,
            served: &mut conn.served,
            backend: &mut conn.backend,
        };
        let received = receive_replies(&mut conn.socket, &mut scratch, conn.peer_closing, |data| {
            reply.take(cx, data, now)
        });
        cx.buffers.scratch = scratch;
        match received? {
            Received::Drained => Ok(()),
            Received::Budget => {
                conn.read_pending = true;
                Ok(())
            }
            // After a handshake, the server's close is one of the answers waited for.
            Received::Eof if cx.cfg.mode.load() == Load::Handshake => {
                conn.wire.finished = true;
                Ok(())
            }
            Received::Eof => Err(peer_closed(conn, &cx.codec)),
        }
    }

    fn expire(_: &mut Conn<Self>, _: &mut Ctx<S>, _: Instant, _: Instant) -> bool {
        false // a stream loses nothing: what is late is waited for, up to the drain grace
    }

    fn abandon(conn: &mut Conn<Self>, cx: &mut Ctx<S>, why: &str, replies: bool) {
        let id = conn.id;
        let backend = conn.backend.index();
        if conn.backend.asking() {
            cx.record.error(ErrorKind::Unanswered, 1, || {
                format!("connection {id}: SERVER was not answered ({why})")
            });
        }
        let unwritten = unwritten(conn, &cx.codec);
        if unwritten > 0 {
            cx.record.backend_errors(backend, 1);
            cx.record.error(ErrorKind::Stalled, 1, || {
                format!(
                    "connection {id}: {unwritten} request bytes could not be written \
                     ({why}): the server stopped reading"
                )
            });
        }
        let s = &conn.wire;
        let unanswered = s.written.seq.saturating_sub(s.replied.seq);
        if unanswered > 0 && replies {
            cx.record.backend_errors(backend, unanswered);
            cx.record.error(ErrorKind::Unanswered, unanswered, || {
                format!("connection {id}: {unanswered} replies outstanding, {why}")
            });
        }
    }

    fn heard(conn: &Conn<Self>) -> bool {
        let s = &conn.wire;
        s.received > 0
            || s.finished
            || conn
                .socket
                .session()
                .is_some_and(|session| !session.ticket_pending)
    }
}

/// Before any request: a layer's own bytes (a handshake flight, `close_notify`), which are
/// ahead of them on the wire anyway. `Some` when that ends the write pass.
pub(super) fn flush_layer<S: Stream>(
    socket: &mut S,
    blocked: &mut bool,
) -> Result<Option<WriteEnd>, Failure> {
    if socket.owes_output() && !*blocked {
        match socket.flush() {
            Ok(()) => {}
            Err(e) if would_block(&e) => {
                *blocked = true;
                return Ok(Some(WriteEnd::Blocked));
            }
            Err(e) => return Err(Failure::io("write", &e)),
        }
    }
    Ok(None)
}

/// A connection's request stream, as far as writing it goes: the bytes of every message are
/// generated by the codec as they are written, whatever wire reads the answers.
pub(super) struct Requests<'c, S> {
    pub socket: &'c mut S,
    pub blocked: &'c mut bool,
    pub written: &'c mut Cursor,
}

impl<S: Stream> Requests<'_, S> {
    /// Writes the requests of connection `id` from the cursor up to message `next_seq`,
    /// spending `budget`, recording what was written under `backend`.
    pub fn write(
        self,
        id: u32,
        next_seq: u64,
        backend: Option<usize>,
        cx: &mut Ctx<S>,
        now: Instant,
        budget: &mut usize,
    ) -> Result<WriteEnd, Failure> {
        if *self.blocked {
            return Ok(WriteEnd::Blocked);
        }
        if self.written.seq >= next_seq {
            return Ok(WriteEnd::Done);
        }
        let mut gather = std::mem::take(&mut cx.buffers.gather);
        let record = &mut cx.record;
        let end = write_some(
            self.socket,
            &cx.codec,
            &mut gather,
            id,
            self.written,
            next_seq,
            *budget,
            |n, whole| {
                *budget -= n;
                record.wrote(n, whole, now, backend);
            },
        );
        cx.buffers.gather = gather;
        match end {
            Written::Done => Ok(WriteEnd::Done),
            Written::Budget => Ok(WriteEnd::Budget),
            Written::Blocked => {
                *self.blocked = true;
                Ok(WriteEnd::Blocked)
            }
            Written::Failed(e) => Err(Failure::io("write", &e)),
        }
    }
}

/// Request bytes queued and not yet written.
fn unwritten<S: Stream>(conn: &Conn<Bytes<S>>, codec: &Codec) -> u64 {
    let len = codec.len(Dir::Request) as u64;
    let s = &conn.wire;
    ((conn.next_seq - s.written.seq) * len).saturating_sub(s.written.offset as u64)
}

/// The server closed its side while the flow still used the connection.
fn peer_closed<S: Stream>(conn: &Conn<Bytes<S>>, codec: &Codec) -> Failure {
    let s = &conn.wire;
    if s.replied.offset > 0 {
        let len = codec.len(Dir::Reply);
        Failure::new(
            ErrorKind::ShortEcho,
            format!(
                "closed after {} of {len} reply bytes of message {}",
                s.replied.offset, s.replied.seq
            ),
        )
    } else {
        let n = conn.inflight.len();
        Failure::new(
            ErrorKind::UnexpectedClose,
            format!("server closed the connection with {n} replies outstanding"),
        )
    }
}

/// The parts of a connection that what it reads changes (everything but the socket).
struct Reply<'c> {
    id: u32,
    stream: &'c mut StreamState,
    inflight: &'c mut std::collections::VecDeque<Pending>,
    served: &'c mut bool,
    backend: &'c mut Backend,
}

impl Reply<'_> {
    /// Takes bytes read from the stream: the backend's answer first (`--per-backend`), then
    /// counts them, notes the connection as served, and checks them against what the load
    /// policy expects back.
    fn take<S>(&mut self, cx: &mut Ctx<S>, data: &[u8], now: Instant) -> Result<(), Failure> {
        let data = match self.backend {
            Backend::Asking { answer, .. } => match identify(cx, answer, data)? {
                Some((backend, rest)) => {
                    *self.backend = Backend::Known(backend);
                    rest
                }
                None => return Ok(()),
            },
            _ => data,
        };
        if data.is_empty() {
            return Ok(());
        }
        let backend = self.backend.index();
        cx.record.received(data.len(), now, backend);
        cx.record.served(self.served, now);
        let s = &mut *self.stream;
        match cx.cfg.mode.load() {
            Load::RoundTrip | Load::Churn => {
                let end = s.reply_end();
                let done = cx
                    .codec
                    .check(self.id, &mut s.replied, end, data)
                    .map_err(|m| Failure::new(ErrorKind::Mismatch, m.to_string()))?;
                for _ in 0..done {
                    let p = self
                        .inflight
                        .pop_front()
                        .expect("a reply completes a queued message");
                    cx.record.completed(p.intended, p.sent, now, backend);
                }
            }
            Load::Download => match cx.cfg.expect {
                Some(Expect::Chargen) => {
                    check_chargen(&mut s.received, data).map_err(|(at, expected, got)| {
                        Failure::new(
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
            // Whatever a server says after the handshake answers it; nothing is checked.
            Load::Handshake => s.received += data.len() as u64,
        }
        Ok(())
    }
}

/// How a read pass ended.
#[derive(Debug)]
pub enum ReadEnd {
    /// The socket is drained; the next arrival is a new edge.
    Drained,
    /// The budget ran out with data possibly left: run again without waiting for an edge.
    Budget,
    /// The peer finished sending.
    Eof,
    /// The connection failed.
    Failed(io::Error),
    /// The data handler stopped the pass (the flow failed on what it read).
    Stopped,
}

/// How a stream wire's receive pass ended, once a failure is out of the way.
pub enum Received {
    /// The socket is drained; the next arrival is a new edge.
    Drained,
    /// The budget ran out with data possibly left: the connection reads again next turn.
    Budget,
    /// The peer finished sending: the wire judges whether that was owed.
    Eof,
}

/// The receive pass both stream wires make: reads up to [`RECV_BUDGET`] into `scratch` and
/// hands each piece to `take`, whose first failure ends the pass and is the result; a read
/// error is a failure too.
pub fn receive_replies<R: Drain>(
    r: &mut R,
    scratch: &mut [u8],
    peer_closing: bool,
    mut take: impl FnMut(&[u8]) -> Result<(), Failure>,
) -> Result<Received, Failure> {
    let mut failure = None;
    let end = read_some(r, scratch, RECV_BUDGET, peer_closing, |data| {
        match take(data) {
            Ok(()) => true,
            Err(f) => {
                failure = Some(f);
                false
            }
        }
    });
    match end {
        ReadEnd::Drained => Ok(Received::Drained),
        ReadEnd::Budget => Ok(Received::Budget),
        ReadEnd::Eof => Ok(Received::Eof),
        ReadEnd::Failed(e) => Err(Failure::io("read", &e)),
        ReadEnd::Stopped => Err(failure.expect("a handler that stops says why")),
    }
}

/// What a reading pass needs of a stream: its bytes, and whether a short read proves it
/// drained ([`Layer::buffered`]).
pub trait Drain: Read {
    /// More may be read now although the last read came back short.
    fn buffered(&self) -> bool;
}

impl<S: Stream> Drain for S {
    fn buffered(&self) -> bool {
        Layer::buffered(self)
    }
}

/// Reads from `r` into `scratch`, handing each chunk to `on_data`, until the socket is
/// drained, `budget` bytes were read, end-of-file, or `on_data` returns `false`. A short
/// read means drained unless the stream still holds bytes (`buffered`).
/// `peer_closing` (the poller reported the peer's FIN) means reading on to end-of-file: a
/// short read then no longer proves the queue empty, and no later edge will come.
pub fn read_some<R: Drain>(
    r: &mut R,
    scratch: &mut [u8],
    budget: usize,
    peer_closing: bool,
    mut on_data: impl FnMut(&[u8]) -> bool,
) -> ReadEnd {
    let mut left = budget;
    loop {
        if left == 0 {
            return ReadEnd::Budget;
        }
        let want = scratch.len().min(left);
        match r.read(&mut scratch[..want]) {
            Ok(0) => return ReadEnd::Eof,
            Ok(n) => {
                left -= n;
                if !on_data(&scratch[..n]) {
                    return ReadEnd::Stopped;
                }
                if n < want && !peer_closing && !r.buffered() {
                    return ReadEnd::Drained;
                }
            }
            Err(e) if would_block(&e) => return ReadEnd::Drained,
            Err(e) if interrupted(&e) => {}
            Err(e) => return ReadEnd::Failed(e),
        }
    }
}

/// How a write pass ended.
#[derive(Debug)]
pub enum Written {
    /// Everything asked for was written.
    Done,
    /// The send buffer is full; the writable edge resumes.
    Blocked,
    /// The budget ran out with the socket still taking bytes: run again.
    Budget,
    /// The connection failed (a zero-byte write included).
    Failed(io::Error),
}

/// Writes the requests on `conn` from `at` up to message `end` (exclusive) to `w`, at most
/// `budget` bytes, advancing `at`; `on_written` hears of every write's byte count and the
/// messages it completed. One `writev` per pass of [`Gather`], which references bodies
/// where they lie instead of copying them.
#[allow(clippy::too_many_arguments)]
pub fn write_some<W: Write>(
    w: &mut W,
    codec: &Codec,
    gather: &mut Gather,
    conn: u32,
    at: &mut Cursor,
    end: u64,
    budget: usize,
    mut on_written: impl FnMut(usize, u64),
) -> Written {
    let mut left = budget;
    while at.seq < end {
        if left == 0 {
            return Written::Budget;
        }
        let offered = gather.build(codec, conn, *at, end, left);
        let mut slots = [IoSlice::new(&[]); Gather::MAX_IOV];
        let k = gather.slices(codec, &mut slots);
        match w.write_vectored(&slots[..k]) {
            Ok(0) => {
                return Written::Failed(io::Error::new(
                    IoKind::WriteZero,
                    "the socket accepted none of the bytes offered",
                ))
            }
            Ok(n) => {
                left -= n;
                let whole = payload::advance(codec, at, n);
                on_written(n, whole);
                if n < offered {
                    // A short write means the send buffer is full.
                    return Written::Blocked;
                }
            }
            Err(e) if would_block(&e) => return Written::Blocked,
            Err(e) if interrupted(&e) => {}
            Err(e) => return Written::Failed(e),
        }
    }
    Written::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Protocol;

    /// A socket that always has data to read: a server that never stops sending.
    struct Endless {
        reads: usize,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            assert!(self.reads < 10_000, "read without end: no budget");
            buf.fill(b'x');
            Ok(buf.len())
        }
    }

    impl Drain for Endless {
        fn buffered(&self) -> bool {
            false
        }
    }

    impl Drain for io::Cursor<Vec<u8>> {
        fn buffered(&self) -> bool {
            false
        }
    }

    /// A layered stream (TLS) that took several records from its socket at once: each read
    /// hands out one of them, shorter than asked, while it still holds the others.
    struct Holding {
        records: std::collections::VecDeque<Vec<u8>>,
    }

    impl Read for Holding {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.records.pop_front() {
                Some(r) => {
                    buf[..r.len()].copy_from_slice(&r);
                    Ok(r.len())
                }
                None => Err(IoKind::WouldBlock.into()),
            }
        }
    }

    impl Drain for Holding {
        fn buffered(&self) -> bool {
            !self.records.is_empty()
        }
    }

    /// A short read does not end the pass while the stream says it holds more: no edge would
    /// announce those bytes. (With the plain-socket rule alone, the pass stopped after the
    /// first record and the other two waited for an edge that never comes.)
    #[test]
    fn a_short_read_with_bytes_held_reads_on() {
        let mut r = Holding {
            records: (0..3).map(|i| vec![b'a' + i; 100]).collect(),
        };
        let mut scratch = [0; 1024];
        let mut got = Vec::new();
        let end = read_some(&mut r, &mut scratch, RECV_BUDGET, false, |d| {
            got.extend_from_slice(d);
            true
        });
        assert!(matches!(end, ReadEnd::Drained), "{end:?}");
        assert_eq!(got.len(), 300, "every record held was read");
        assert!(r.records.is_empty());
    }

    /// A connection that never runs dry stops at the budget and says so, instead of keeping
    /// the worker from its other connections.
    #[test]
    fn endless_stream_stops_at_the_budget() {
        let mut sock = Endless { reads: 0 };
        let mut scratch = vec![0; 64 * 1024];
        let mut got = 0;
        let end = read_some(&mut sock, &mut scratch, RECV_BUDGET, false, |d| {
            got += d.len();
            true
        });
        assert!(matches!(end, ReadEnd::Budget), "{end:?}");
        assert_eq!(got, RECV_BUDGET);
    }

    /// A short read ends the pass (the queue is empty), unless the peer's FIN is known to
    /// be queued: then reading goes on to end-of-file.
    #[test]
    fn short_read_drains_unless_closing() {
        let data = b"hello".to_vec();
        let mut scratch = [0; 16];
        let mut r = io::Cursor::new(data.clone());
        assert!(matches!(
            read_some(&mut r, &mut scratch, 100, false, |_| true),
            ReadEnd::Drained
        ));
        let mut r = io::Cursor::new(data);
        assert!(matches!(
            read_some(&mut r, &mut scratch, 100, true, |_| true),
            ReadEnd::Eof
        ));
    }

    /// A socket whose writes accept nothing.
    struct Stuck {
        writes: usize,
    }

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            assert!(self.writes < 100, "spinning on Ok(0)");
            Ok(0)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// `write` returning `Ok(0)` is an error, not a reason to try again.
    #[test]
    fn zero_byte_write_is_an_error() {
        let codec = Codec::new(Protocol::Raw, 64);
        let mut gather = Gather::default();
        let mut at = Cursor::default();
        let mut sock = Stuck { writes: 0 };
        let budget = super::super::SEND_BUDGET;
        let end = write_some(
            &mut sock,
            &codec,
            &mut gather,
            0,
            &mut at,
            3,
            budget,
            |_, _| {},
        );
        match end {
            Written::Failed(e) => assert_eq!(e.kind(), IoKind::WriteZero),
            other => panic!("{other:?}"),
        }
        assert_eq!(sock.writes, 1);
    }

    /// A socket that takes at most `window` bytes per write.
    struct Window {
        window: usize,
        written: Vec<u8>,
    }

    impl Write for Window {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.window);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Short writes stop the pass and resume where they left off; the stream written is
    /// exactly the requests, and whole messages are counted as they complete.
    #[test]
    fn partial_writes_resume_exactly() {
        let codec = Codec::new(Protocol::Line, 100);
        let mut gather = Gather::default();
        let mut at = Cursor::default();
        let mut sock = Window {
            window: 77,
            written: Vec::new(),
        };
        let mut messages = 0;
        let budget = super::super::SEND_BUDGET;
        for _ in 0..100 {
            let counted = |_, w| messages += w;
            match write_some(
                &mut sock,
                &codec,
                &mut gather,
                9,
                &mut at,
                5,
                budget,
                counted,
            ) {
                Written::Done => break,
                Written::Blocked => continue,
                other => panic!("{other:?}"),
            }
        }
        let mut expected = Vec::new();
        for seq in 0..5 {
            codec.encode(Dir::Request, 9, seq, &mut expected);
        }
        assert_eq!(sock.written, expected);
        assert_eq!(messages, 5);
    }
}
