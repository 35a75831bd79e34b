//! The `http` service answers from the loop without allocating per request: every buffer it
//! writes from is the connection's own (kept and reused) or the loop's. Counted by a global
//! allocator in this test binary (one test, so no other test allocates meanwhile), around
//! thousands of keep-alive requests from a client that allocates nothing itself.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use loopd::config::Config;
use loopd::service::Builtin;

use common::*;

/// The system allocator, counting allocations (and reallocations: a `Vec` that grows).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the count is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Requests of every kind the hot path serves: a static body, a body from the connection's
/// buffer, a knob, and an echoed body.
const REQUESTS: [&[u8]; 4] = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /hostname HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n",
    b"GET /echo?msg=hello%20there&status=201 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n\
      0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

/// Sends `request` and reads its whole response into `buf` (no allocation: the head is
/// searched in place for its end and its length). Returns the status.
fn ask(c: &mut TcpStream, request: &[u8], buf: &mut [u8]) -> u16 {
    c.write_all(request).unwrap();
    let mut have = 0;
    loop {
        let n = c.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "the server closed the connection");
        have += n;
        let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = &buf[..end];
        let name = b"Content-Length: ";
        let at = head
            .windows(name.len())
            .position(|w| w == name)
            .expect("a length")
            + name.len();
        let length = head[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0, |n, b| n * 10 + usize::from(b - b'0'));
        if have >= end + 4 + length {
            assert_eq!(have, end + 4 + length, "one response per request");
            let status = &head[9..12];
            return status.iter().fold(0, |n, b| n * 10 + u16::from(b - b'0'));
        }
    }
}

#[test]
fn keep_alive_requests_allocate_nothing() {
    const ROUNDS: usize = 2_500;
    let server = TestServer::start(Config::default(), &[Builtin::Http]);
    let mut c = connect(server.addr());
    let mut buf = vec![0u8; 4096];
    // Warm-up: the connection's buffers reach their size, the loop's timers and the Date
    // line exist.
    for request in REQUESTS.iter().cycle().take(400) {
        ask(&mut c, request, &mut buf);
    }
    let started = Instant::now();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for request in REQUESTS.iter().cycle().take(ROUNDS * REQUESTS.len()) {
        let status = ask(&mut c, request, &mut buf);
        assert!(status == 200 || status == 201, "{status}");
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let seconds = started.elapsed().as_secs() + 1;
    // The one allowance: the Date line is formatted again when the second changes (a
    // `String` from httpdate), so at most one per second the run spans.
    assert!(
        allocations <= seconds + 1,
        "{allocations} allocations over {} requests in {seconds} s",
        ROUNDS * REQUESTS.len()
    );
}
