//! The TCP transport: opening a connection without blocking, telling when the handshake is
//! done, and moving bytes with the same readiness discipline as the server.
//!
//! The rules, each with the reason it holds on the client side too:
//!
//! * **Drain or remember, with a budget.** [`read_some`] reads until the socket is drained
//!   (`WouldBlock`, or a short read: the receive queue was empty), end-of-file, or
//!   [`RECV_BUDGET`] bytes. Stopping at the budget with data left is remembered by the
//!   caller (the flow goes on the worker's run queue), because no new edge will announce
//!   data that is already queued. Without the budget one fast connection — a chargen server
//!   that never stops — would keep the worker from every other connection and its clock.
//! * **A write of zero bytes is an error.** `write` returning `Ok(0)` for a non-empty buffer
//!   makes no progress and never will; looping on it spins a core.
//! * **The handshake's completion is an event like any other.** The event that reports the
//!   connection established can also carry data the server sent at once (a greeting, or a
//!   chargen stream); the caller reads it in the same turn, since that edge will not come
//!   again.
//!
//! One difference from the server is deliberate: a client socket is registered for both
//! readable and writable once, edge-triggered, and never re-registered. Its interest changes
//! with every message (it writes a request, then waits for the reply), and an `epoll_ctl`
//! per message would double the system calls of a small-message benchmark; an unneeded
//! writable edge costs only a flag.

use std::io::{self, ErrorKind as IoKind, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::payload::{Codec, Cursor, Gather};

/// Bytes one connection reads per worker turn before the others get theirs: a few full
/// reads, enough to amortise the turn, small enough that one bulk stream delays the rest by
/// well under a millisecond.
pub const RECV_BUDGET: usize = 256 * 1024;
/// Bytes one connection writes per worker turn before the others get theirs, for the same
/// reason.
pub const SEND_BUDGET: usize = 256 * 1024;

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

/// Reads from `r` into `scratch`, handing each chunk to `on_data`, until the socket is
/// drained, `budget` bytes were read, end-of-file, or `on_data` returns `false`.
/// `peer_closing` (the poller reported the peer's FIN) means reading on to end-of-file: a
/// short read then no longer proves the queue empty, and no later edge will come.
pub fn read_some<R: Read>(
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
                if n < want && !peer_closing {
                    return ReadEnd::Drained;
                }
            }
            Err(e) if e.kind() == IoKind::WouldBlock => return ReadEnd::Drained,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return ReadEnd::Failed(e),
        }
    }
}

/// How a write pass ended.
#[derive(Debug)]
pub enum WriteEnd {
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
/// `budget` bytes, advancing `at`; `on_written` hears of every write's byte count. One
/// `writev` per pass of [`Gather`], which references bodies where they lie instead of copying
/// them.
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
) -> WriteEnd {
    let mut left = budget;
    while at.seq < end {
        if left == 0 {
            return WriteEnd::Budget;
        }
        let offered = gather.build(codec, conn, *at, end, left);
        let mut slots = [IoSlice::new(&[]); Gather::MAX_IOV];
        let k = gather.slices(codec, &mut slots);
        match w.write_vectored(&slots[..k]) {
            Ok(0) => {
                return WriteEnd::Failed(io::Error::new(
                    IoKind::WriteZero,
                    "the socket accepted none of the bytes offered",
                ))
            }
            Ok(n) => {
                left -= n;
                let whole = crate::payload::advance(codec, at, n);
                on_written(n, whole);
                if n < offered {
                    // A short write means the send buffer is full.
                    return WriteEnd::Blocked;
                }
            }
            Err(e) if e.kind() == IoKind::WouldBlock => return WriteEnd::Blocked,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return WriteEnd::Failed(e),
        }
    }
    WriteEnd::Done
}

/// Creates a non-blocking TCP socket, binds it to `source` if given, and starts connecting.
pub fn open(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
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

/// What a readiness event on a connecting socket means.
#[derive(Debug)]
pub enum Handshake {
    /// Established.
    Done,
    /// Spurious readiness: still under way.
    Pending,
    /// Failed.
    Failed(io::Error),
}

/// Whether the connect started by [`open`] has completed.
pub fn handshake(stream: &TcpStream) -> Handshake {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Handshake::Failed(e),
        Ok(None) => match stream.peer_addr() {
            Ok(_) => Handshake::Done,
            Err(e) if e.kind() == IoKind::NotConnected => Handshake::Pending,
            Err(e) => Handshake::Failed(e),
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Dir, Protocol};

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
        let end = write_some(
            &mut sock,
            &codec,
            &mut gather,
            0,
            &mut at,
            3,
            SEND_BUDGET,
            |_, _| {},
        );
        match end {
            WriteEnd::Failed(e) => assert_eq!(e.kind(), IoKind::WriteZero),
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
        for _ in 0..100 {
            match write_some(
                &mut sock,
                &codec,
                &mut gather,
                9,
                &mut at,
                5,
                SEND_BUDGET,
                |_, w| messages += w,
            ) {
                WriteEnd::Done => break,
                WriteEnd::Blocked => continue,
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
