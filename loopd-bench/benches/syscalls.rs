//! System calls per echoed message: 50 connections, 64-byte messages, closed loop.
//!
//! Run with `cargo bench -p loopd-bench --bench syscalls`. The release `loopd` runs as its
//! own process and `perf stat -e raw_syscalls:sys_enter -p PID` counts every system call it
//! enters while loopd-bench's engine (one thread, in this process) completes a fixed number
//! of round trips. One read and one write per message plus a share of `epoll_wait` is the
//! floor: 2.0 and a fraction. The target is at most 2.05. The server is pinned to CPU 0 and
//! the client to CPU 1. Connection set-up is inside the counted window: a few hundred calls
//! against millions.

mod support;

use std::time::{Duration, Instant};

use loopd_bench::{BenchConfig, Stop};
use support::{count_syscalls, pin_current_thread, start_loopd, syscall_breakdown};

const CONNECTIONS: usize = 50;
const MESSAGE: usize = 64;
/// Round trips in the measured window: large enough that perf's attach/detach edges
/// (a handful of calls) and connection set-up are noise.
const MESSAGES: u64 = 1_000_000;
const WARMUP: u64 = 50_000;

fn run(addr: std::net::SocketAddr, messages: u64) -> loopd_bench::Report {
    let mut cfg = BenchConfig::new(addr);
    cfg.connections = CONNECTIONS;
    cfg.size = MESSAGE;
    cfg.stop = Stop::Count(messages);
    cfg.warmup = Duration::ZERO;
    let report = loopd_bench::run(&cfg, |_| {}).expect("bench run");
    if let Err(why) = report.verdict() {
        panic!("the run failed: {why}");
    }
    report
}

fn main() {
    // The server on one core, the client on the other, as the measurement is specified.
    let server = start_loopd(Some(0), &[]);
    let addr = server.addr();
    pin_current_thread(1).expect("pin the client to CPU 1");
    run(addr, WARMUP);

    println!("syscalls per echoed message: {CONNECTIONS} connections, {MESSAGE}-byte messages, closed loop");
    let measured = || {
        let (cpu, start) = (server.cpu_time(), Instant::now());
        let report = run(addr, MESSAGES);
        let busy = (server.cpu_time() - cpu).as_secs_f64() / start.elapsed().as_secs_f64();
        (report.messages, busy, report.rates.messages_per_sec)
    };
    match count_syscalls(server.pid() as u32, measured) {
        Some((calls, (done, busy, rate))) => {
            assert_eq!(done, MESSAGES, "round trips did not complete");
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
    match syscall_breakdown(server.pid() as u32, || {
        run(addr, sample);
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
