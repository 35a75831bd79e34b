//! System calls per echoed message: 50 connections, 64-byte messages, closed loop.
//!
//! Run with `cargo bench --bench syscalls`. The release `loopd` runs as its own process and
//! `perf stat -e raw_syscalls:sys_enter -p PID` counts every system call it enters while an
//! event-driven client (one thread, mio) completes a fixed number of round trips. One read
//! and one write per message plus a share of `epoll_wait` is the floor: 2.0 and a fraction.
//! The target is at most 2.05. The server is pinned to CPU 0 and the client to CPU 1.

mod support;

use std::time::{Duration, Instant};

use support::{count_syscalls, pin_current_thread, syscall_breakdown, ClosedLoop, Server};

const CONNECTIONS: usize = 50;
const MESSAGE: usize = 64;
/// Round trips in the measured window: large enough that perf's attach/detach edges
/// (a handful of calls) are noise.
const MESSAGES: u64 = 1_000_000;
const WARMUP: u64 = 50_000;
/// Bound on every phase, in case the server stalls.
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    // The server on one core, the client on the other, as the measurement is specified.
    let server = Server::start_on(Some(0), &[]);
    pin_current_thread(1).expect("pin the client to CPU 1");
    let mut client = ClosedLoop::connect(server.addr, CONNECTIONS, MESSAGE).expect("connect");
    client.run(WARMUP, LIMIT).expect("warm-up");

    println!("syscalls per echoed message: {CONNECTIONS} connections, {MESSAGE}-byte messages, closed loop");
    let measured = || {
        let (cpu, start) = (server.cpu_time(), Instant::now());
        let done = client.run(MESSAGES, LIMIT).expect("measured run");
        let busy = (server.cpu_time() - cpu).as_secs_f64() / start.elapsed().as_secs_f64();
        (done, busy, done as f64 / start.elapsed().as_secs_f64())
    };
    match count_syscalls(server.pid(), measured) {
        Some((calls, (done, busy, rate))) => {
            assert_eq!(done, MESSAGES, "round trips did not complete in time");
            println!(
                "  perf: {calls} syscalls / {done} messages = {:.3} per message (target <= 2.05)",
                calls as f64 / done as f64
            );
            println!(
                "  server CPU {:.0}% of a core (perf tracing included) at {rate:.0} messages/s; \
                 epoll_wait is one call per batch of events, so its share falls as batches grow",
                busy * 100.0
            );
        }
        None => {
            println!("  perf stat with raw_syscalls:sys_enter is not available here: not measured")
        }
    }
    let sample = MESSAGES / 10;
    match syscall_breakdown(server.pid(), || {
        client.run(sample, LIMIT).expect("strace run");
    }) {
        Some(calls) => {
            let mut by_count: Vec<_> = calls.into_iter().collect();
            by_count.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
            let list: Vec<String> = by_count
                .iter()
                .map(|(name, n)| format!("{name} {:.3}", *n as f64 / sample as f64))
                .collect();
            println!(
                "  strace -c breakdown per message over {sample} messages: {}",
                list.join(", ")
            );
        }
        None => println!("  strace not available: no breakdown"),
    }
}
