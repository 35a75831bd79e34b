//! Bytes of resident memory per idle connection.
//!
//! Run with `cargo bench --bench footprint`. The release `loopd` runs as its own process;
//! 10,000 echo connections each make one 64-byte round trip and then sit idle. The growth of
//! the server's resident set (VmRSS) divided by 10,000 is the cost of an idle connection in
//! user memory (kernel socket memory is not in RSS and is the same for any server). Target:
//! at most 256 bytes.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::Server;

const IDLE_CONNECTIONS: usize = 10_000;
const MESSAGE: &[u8] = &[0x5A; 64];
/// Connections used to warm up everything allocated once per loop (the shared read and
/// write buffers, the event array) before the baseline is taken.
const WARMUP: usize = 16;

fn round_trip(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).unwrap();
    let mut buf = vec![0; msg.len()];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

/// Waits until the server's RSS stops changing (allocator and page-table settling).
fn settled_rss(server: &Server) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = server.rss();
    loop {
        std::thread::sleep(Duration::from_millis(100)); // a sampling interval
        let now = server.rss();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn main() {
    loopd::rlimit::raise_nofile_limit().expect("raise the open-files limit");
    let server = Server::start(&["--max-connections", "20000"]);
    // Warm-up: large messages touch the whole shared scratch buffers once.
    let big = vec![0xA5; 256 * 1024];
    for _ in 0..WARMUP {
        let mut c = TcpStream::connect(server.addr).unwrap();
        let mut w = c.try_clone().unwrap();
        let data = big.clone();
        let t = std::thread::spawn(move || w.write_all(&data).unwrap());
        let mut back = vec![0; big.len()];
        c.read_exact(&mut back).unwrap();
        t.join().unwrap();
    }
    let before = settled_rss(&server);

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let mut c = TcpStream::connect(server.addr).expect("connect");
        round_trip(&mut c, MESSAGE);
        idle.push(c);
    }
    let after = settled_rss(&server);
    let per = (after.saturating_sub(before)) as f64 / IDLE_CONNECTIONS as f64;
    println!("resident memory per idle connection ({IDLE_CONNECTIONS} echo connections, one round trip each)");
    println!(
        "  loopd: RSS {} KiB -> {} KiB: {per:.0} bytes per connection (target <= 256)",
        before / 1024,
        after / 1024
    );
    println!(
        "  in-process: Connection is {} bytes; idle buffers own 0 bytes",
        std::mem::size_of::<loopd::connection::Connection<mio::net::TcpStream>>()
    );
    drop(idle);
}
