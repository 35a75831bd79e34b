//! loopd side by side with the servers a user would pick instead.
//!
//! Run with `cargo bench -p loopd-bench --bench compare`. Three echo servers, each its own process pinned
//! to CPU 0: loopd (release build), a tokio echo server (accept + spawn + read/write_all,
//! runtime with one worker thread) and a thread-per-connection std server (see
//! `benches/peers`). loopd-bench's engine drives them from CPU 1. Every throughput and
//! latency figure alternates the servers round by round ([`ROUNDS`] rounds; medians), so
//! drift in the machine hits all of them alike. Printed: a markdown table of the figures
//! and of loopd's ratio to each peer, with the targets.

mod peers;
mod support;

use std::time::Duration;

use support::{
    count_syscalls, cpu_jiffies, drive, idle_footprint, median, pin_current_thread, start_loopd,
    started, Server,
};

/// Closed-loop throughput: the 64-byte messages over 50 connections.
const CONNECTIONS: usize = 50;
const MESSAGE: usize = 64;
/// Bulk transfer: 64 KiB messages over 4 connections.
const BULK_CONNECTIONS: usize = 4;
const BULK_MESSAGE: usize = 64 * 1024;
/// Seconds per measurement (after loopd-bench's 1 s warm-up).
const SECS: f64 = 3.0;
/// Alternations of the servers; the median damps one-off interference.
const ROUNDS: usize = 5;
/// Idle connections for the memory figure.
const IDLE: usize = 10_000;
/// Round trips counted under perf for the syscall figure.
const SYSCALL_MESSAGES: u64 = 300_000;

const NAMES: [&str; 3] = ["loopd", "tokio (1 worker)", "thread per connection"];

fn start(which: usize) -> Server {
    let exe = std::env::current_exe().unwrap();
    match which {
        0 => start_loopd(Some(0), &["--max-connections", "20000"]),
        1 => started(Server::start_program(
            Some(0),
            &exe,
            &[],
            &[("LOOPD_PEER", "tokio")],
        )),
        _ => started(Server::start_program(
            Some(0),
            &exe,
            &[],
            &[("LOOPD_PEER", "threads")],
        )),
    }
}

/// Measures `f` against each server in turn, `ROUNDS` times; returns the medians.
fn alternate(servers: &[Server], what: &str, f: impl Fn(&Server) -> f64) -> [f64; 3] {
    let mut samples = [vec![], vec![], vec![]];
    for round in 1..=ROUNDS {
        for (i, s) in servers.iter().enumerate() {
            samples[i].push(f(s));
        }
        eprintln!(
            "  {what}, round {round}: {:?}",
            samples
                .iter()
                .map(|v| v[round - 1].round())
                .collect::<Vec<_>>()
        );
    }
    samples.map(median)
}

/// System calls the server makes per round trip, or `None` without perf.
fn syscalls_per_message(server: &Server) -> Option<f64> {
    let mut cfg = loopd_bench::BenchConfig::new(server.addr());
    cfg.stop = loopd_bench::Stop::Count(SYSCALL_MESSAGES);
    cfg.warmup = Duration::ZERO;
    let (calls, report) = count_syscalls(server.pid() as u32, || {
        loopd_bench::run(&cfg, |_| {}).expect("bench run")
    })?;
    // Connection set-up and teardown are inside the window too: a few hundred calls.
    Some(calls as f64 / report.messages as f64)
}

fn main() {
    peers::serve_if_asked();
    loopd::rlimit::raise_nofile_limit().expect("raise the open-files limit");
    pin_current_thread(1).expect("pin the client to CPU 1");

    let servers: Vec<Server> = (0..3).map(start).collect();
    let (steal_before, all_before) = cpu_jiffies();
    let rate = alternate(&servers, "messages/s", |s| {
        drive(s.addr(), CONNECTIONS, MESSAGE, SECS, None)
            .rates
            .messages_per_sec
    });
    let open_rate = (rate[0] / 2.0).round();
    let p99 = alternate(&servers, "open-loop p99 µs", |s| {
        let r = drive(s.addr(), CONNECTIONS, MESSAGE, SECS, Some(open_rate));
        r.latency.expect("round trips").p99_us
    });
    let bulk = alternate(&servers, "bulk MiB/s", |s| {
        drive(s.addr(), BULK_CONNECTIONS, BULK_MESSAGE, SECS, None)
            .rates
            .mib_per_sec_received
    });
    let (steal_after, all_after) = cpu_jiffies();
    let steal = (steal_after - steal_before) as f64 / (all_after - all_before).max(1) as f64;
    let syscalls: Vec<Option<f64>> = servers.iter().map(syscalls_per_message).collect();
    drop(servers);

    // Fresh processes for memory: what a server holds for an idle connection, not what
    // earlier load left in its allocator.
    let idle: Vec<f64> = (0..3)
        .map(|i| {
            let s = start(i);
            let per = idle_footprint(&s, IDLE);
            eprintln!("  idle bytes per connection, {}: {per:.0}", NAMES[i]);
            per
        })
        .collect();

    println!();
    println!("| metric | loopd | tokio (1 worker) | thread per connection | loopd / tokio | target | loopd / threads |");
    println!("|---|---:|---:|---:|---:|---|---:|");
    let row = |name: &str, v: [f64; 3], digits: usize, target: &str| {
        println!(
            "| {name} | {:.digits$} | {:.digits$} | {:.digits$} | {:.2} | {target} | {:.2} |",
            v[0],
            v[1],
            v[2],
            v[0] / v[1],
            v[0] / v[2]
        );
    };
    row(
        "messages/s (64 B, 50 conns, closed loop)",
        rate,
        0,
        ">= 1.10",
    );
    row(
        &format!("p99 µs at {open_rate:.0} msg/s open loop (half loopd's peak)"),
        p99,
        0,
        "<= 1.00",
    );
    row("bulk MiB/s (64 KiB, 4 conns)", bulk, 1, "");
    row(
        &format!("RSS bytes per idle connection ({IDLE})"),
        [idle[0], idle[1], idle[2]],
        0,
        "<= 0.05",
    );
    match syscalls.as_slice() {
        [Some(a), Some(b), Some(c)] => row("syscalls per message (perf)", [*a, *b, *c], 3, ""),
        _ => println!("| syscalls per message | perf stat with raw_syscalls:sys_enter is not available here: not measured | | | | | |"),
    }
    println!();
    println!("Server on CPU 0, loopd-bench on CPU 1; medians of {ROUNDS} alternating rounds of {SECS} s each.");
    println!(
        "CPU time stolen by the hypervisor during the throughput and latency rounds: {:.1}% (0 on bare metal).",
        steal * 100.0
    );
}
