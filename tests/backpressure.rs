//! Backpressure and fairness: output is bounded by the high watermark, a budget-limited
//! connection is served again without waiting for a new edge, and one flood does not starve
//! other clients.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use loopd::config::{Config, DEFAULT_HIGH_WATERMARK};
use loopd::service::Builtin;

const SIXTY_FOUR_MIB: usize = 64 << 20;

/// Writing 64 MiB without reading stalls the client while the server's pending output stays
/// within the high watermark; reading afterwards returns every byte, identical.
#[test]
fn non_reading_client_is_bounded_then_served() {
    let server = TestServer::echo();
    let mut c = connect(server.addr());
    let data = pattern(64, SIXTY_FOUR_MIB);

    // Phase 1: write without reading until the kernel refuses more, after the server has
    // paused reading from us.
    c.set_nonblocking(true).unwrap();
    let push = |c: &mut std::net::TcpStream, written: &mut usize| {
        while *written < data.len() {
            match c.write(&data[*written..(*written + 65536).min(data.len())]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("write: {e}"),
            }
        }
    };
    let mut written = 0;
    // Keep offering data until the server pauses: it may drain what we wrote so far before
    // its own output backs up.
    server.wait_stats("server paused reading", |s| {
        push(&mut c, &mut written);
        s.backpressure_pauses >= 1
    });
    // The server is paused; whatever buffer space was left fills now, then writes stall.
    let stalled_at = wait_until("client writes stall", || {
        let before = written;
        push(&mut c, &mut written);
        let s = server.stats();
        (written == before && s.peak_pending_output >= DEFAULT_HIGH_WATERMARK as u64)
            .then_some(written)
    });
    assert!(
        stalled_at < SIXTY_FOUR_MIB,
        "the client wrote all 64 MiB without reading: no backpressure"
    );
    let peak = server.stats().peak_pending_output;
    assert!(
        peak <= DEFAULT_HIGH_WATERMARK as u64,
        "pending output {peak} exceeded the high watermark"
    );

    // Phase 2: read everything back while writing the rest.
    c.set_nonblocking(false).unwrap();
    // Everything echoed so far is still waiting to be read, so this returns all 64 MiB.
    let got = exchange(&mut c, &data[stalled_at..], 1 << 20);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echo differs");
    let s = server.wait_stats("closed", |s| s.active == 0);
    assert!(
        s.peak_pending_output <= DEFAULT_HIGH_WATERMARK as u64,
        "{s}"
    );
}

/// With a 1 KiB read budget, a client that sends 4 MiB and waits for the echo completes:
/// budget-limited connections are run again from the run queue, not left waiting for an edge
/// that never comes.
#[test]
fn tiny_budget_completes_bulk_transfer() {
    let mut config = Config::default();
    config.loops.limits.read_budget = 1024;
    let server = TestServer::start(config, &[Builtin::Echo]);
    let mut c = connect(server.addr());
    let data = pattern(4, 4 << 20);
    let got = exchange(&mut c, &data, data.len());
    assert!(got == data);
}

/// While one client floods with a 1 KiB budget, a second client's round trips keep being
/// served.
#[test]
fn flood_does_not_starve_round_trips() {
    let mut config = Config::default();
    config.loops.limits.read_budget = 1024;
    let server = TestServer::start(config, &[Builtin::Echo]);
    let addr = server.addr();

    let done = Arc::new(AtomicBool::new(false));
    let flood_limit = 1usize << 30; // bound: stop after 1 GiB even if the other client hangs
    let mut flood = connect(addr);
    let mut flood_w = flood.try_clone().unwrap();
    let flood_done = Arc::clone(&done);
    let flooder = thread::spawn(move || {
        let chunk = pattern(9, 64 * 1024);
        let mut sent = 0usize;
        while !flood_done.load(Ordering::Relaxed) && sent < flood_limit {
            flood_w.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        flood_w.shutdown(Shutdown::Write).unwrap();
        sent
    });
    let drainer = thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0usize;
        loop {
            match flood.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n,
            }
        }
    });

    // Wait until the flood is really under way, then do round trips beside it.
    server.wait_stats("flood under way", |s| s.bytes_in > 8 << 20);
    let mut c = connect(addr);
    for i in 0..200u64 {
        round_trip(&mut c, &pattern(i, 32));
    }
    let flood_running = !done.swap(true, Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    let echoed = drainer.join().unwrap();
    assert!(
        flood_running && sent < flood_limit,
        "round trips finished only after the flood"
    );
    assert_eq!(echoed, sent, "flood echo incomplete");
}

/// 10,000 pipelined `STATS` requests (6 bytes in, hundreds out) from a client that does not
/// read: the server's pending output stays within the high watermark plus one reply, and
/// when the client reads it gets all 10,000 replies, in order.
#[test]
fn amplifying_requests_stay_within_the_watermark() {
    const REQUESTS: usize = 10_000;
    let server = TestServer::start(Config::default(), &[Builtin::Line]);
    // A small receive buffer, so the kernel cannot soak up what the server must hold back.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let mut c: std::net::TcpStream = socket.into();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut requests = "STATS\n".repeat(REQUESTS);
    requests.push_str("ECHO end\n");
    c.write_all(requests.as_bytes()).unwrap();
    let paused = server.wait_stats("server paused", |s| s.backpressure_pauses >= 1);
    // One STATS reply is one line of counters; allow one more than the longest.
    let reply_bound = paused.to_string().len() as u64 + 64;
    let bound = DEFAULT_HIGH_WATERMARK as u64 + reply_bound;
    assert!(
        paused.peak_pending_output <= bound,
        "pending output {} exceeded {bound}",
        paused.peak_pending_output
    );

    c.shutdown(Shutdown::Write).unwrap();
    let mut reader = std::io::BufReader::new(c);
    let mut last_bytes_out = 0;
    for i in 0..REQUESTS {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        let bytes_out: u64 = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("bytes_out="))
            .unwrap_or_else(|| panic!("reply {i} is not STATS: {line:?}"))
            .parse()
            .unwrap();
        assert!(bytes_out >= last_bytes_out, "reply {i} out of order");
        last_bytes_out = bytes_out;
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert_eq!(rest, "end\r\n");
    let s = server.wait_stats("closed", |s| s.active == 0);
    assert!(s.peak_pending_output <= bound, "{s}");
}
