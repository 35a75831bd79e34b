//! The same loop in about 80 lines: an edge-triggered echo server on plain mio, each rule
//! loopd keeps marked (R1–R9) where this program keeps it. `docs/D-the-loop-in-80-lines.md`
//! sets it beside epoll(7)'s example and mio's `tcp_server.rs`; `tests/echo_loop.rs` runs it.
//!
//!     cargo run --example echo_loop -- 127.0.0.1:7007

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);
/// Bytes one connection may read per turn before the others get theirs: one full read (R1).
const BUDGET: usize = 64 * 1024;
/// Pending output at which a connection stops reading: its memory bound (R3).
const HIGH_WATER: usize = 256 * 1024;

struct Conn {
    sock: TcpStream,
    /// Bytes the kernel has not taken yet; unallocated while empty (R9).
    out: Vec<u8>,
    /// A readable edge was seen and no read has said WouldBlock since: remembered (R1).
    readable: bool,
    /// The peer finished sending; it may still be reading (R4).
    fin: bool,
    /// What is registered now.
    interest: Interest,
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7007".into());
    let mut listener = TcpListener::bind(addr.parse().expect("an address"))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    let (mut conns, mut next, mut queue) = (HashMap::<Token, Conn>::new(), 1, VecDeque::new());
    let (mut events, mut buf) = (Events::with_capacity(1024), vec![0; 65536]);
    let (mut accepting, mut paused_until) = (true, None::<Instant>);
    loop {
        // R1: queued connections run without an event, so never sleep while there are any.
        let timeout = match paused_until {
            _ if !queue.is_empty() => Some(Duration::ZERO),
            until => until.map(|t| t.saturating_duration_since(Instant::now())),
        };
        match poll.poll(&mut events, timeout) {
            // R6: EINTR is no failure; a failing poll is the only error that ends the loop.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            result => result?,
        }
        let mut due: Vec<Token> = queue.drain(..).collect(); // queued before this poll (R1)
        for event in events.iter() {
            if event.token() == LISTENER {
                accepting = true;
            } else if let Some(c) = conns.get_mut(&event.token()) {
                c.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
                due.push(event.token());
            } // R8: tokens are never reused, so a stale event finds no connection.
        }
        if paused_until.is_some_and(|t| Instant::now() >= t) {
            (accepting, paused_until) = (true, None); // R7: no edge came for the backlog
        }
        // R7: accept until WouldBlock, or the listener's next edge may never come.
        while accepting && paused_until.is_none() {
            match listener.accept() {
                Ok((mut sock, _)) => {
                    let (token, interest) = (Token(next), Interest::READABLE);
                    next += 1;
                    poll.registry().register(&mut sock, token, interest)?;
                    let (out, readable, fin) = (Vec::new(), false, false);
                    conns.insert(
                        token,
                        Conn {
                            sock,
                            out,
                            readable,
                            fin,
                            interest,
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => accepting = false,
                // R7: out of descriptors (EMFILE) fails again at once: pause, never spin. (A
                // connection that died in the backlog, ECONNABORTED, pauses it too: simpler.)
                Err(_) => paused_until = Some(Instant::now() + Duration::from_millis(100)),
            }
        }
        due.sort();
        due.dedup();
        for token in due {
            let Some(c) = conns.get_mut(&token) else {
                continue;
            };
            match turn(c, &mut buf) {
                Ok(true) => queue.push_back(token), // R1: out of budget, remembered
                Ok(false) if c.fin && c.out.is_empty() => {
                    // R4, R5: every byte echoed, then our FIN; the peer sent its own, so no
                    // unread input is left for the close to reset over.
                    let _ = c.sock.shutdown(Shutdown::Write);
                    conns.remove(&token);
                }
                Ok(false) => {
                    // R2, R3: interest is derived from state, WRITABLE only while output
                    // waits; a changed interest makes the poller check the socket again.
                    let reading = !c.fin && c.out.len() < HIGH_WATER;
                    let want = match (reading, c.out.is_empty()) {
                        (true, false) => Interest::READABLE | Interest::WRITABLE,
                        (false, false) => Interest::WRITABLE,
                        _ => Interest::READABLE,
                    };
                    if want != c.interest {
                        poll.registry().reregister(&mut c.sock, token, want)?;
                        c.interest = want;
                    }
                }
                // R6: an error closes this connection, and only this one.
                Err(_) => drop(conns.remove(&token)),
            }
        }
    }
}

/// Flushes, then reads and echoes until drained, the budget, the watermark or the peer's
/// FIN. Returns whether the budget stopped it with input possibly left.
fn turn(c: &mut Conn, buf: &mut [u8]) -> io::Result<bool> {
    flush(c)?; // R2: write first, freeing room before reading more
    let mut budget = BUDGET;
    while c.readable && !c.fin && c.out.len() < HIGH_WATER {
        if budget == 0 {
            return Ok(true);
        }
        match c.sock.read(&mut buf[..budget.min(65536)]) {
            Ok(0) => c.fin = true, // R4: finished sending, not gone
            Ok(n) => {
                budget -= n;
                c.out.extend_from_slice(&buf[..n]);
                flush(c)?; // R2: write eagerly
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => c.readable = false, // R1: drained
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => drop(c.out.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()), // the writable edge
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.out = Vec::new(); // R9: memory follows work
    Ok(())
}
