//! loopd side by side with the servers a user would pick instead.
//!
//! Run with `cargo bench -p loopd-bench --bench compare`. Three echo servers, each its own
//! process pinned to CPU 0: loopd (release build), a tokio echo server (accept + spawn +
//! read/write_all, runtime with one worker thread) and a thread-per-connection std server
//! (see `benches/peers`). The measuring is `loopd-bench compare`'s
//! ([`loopd_bench::compare`]), driven from CPU 1: the servers take turns iteration by
//! iteration until each one's mean is known within ±2.5% at 95% confidence (at least
//! [`ROUNDS`], at most [`MAX_ROUNDS`] iterations), with every server's CPU time per message
//! read from `/proc/PID/stat`. Printed: compare's tables, then a summary table of loopd's
//! ratios to each peer with the targets.

mod peers;
mod support;

use std::time::Duration;

use loopd_bench::compare::{compare, Comparison, Target};
use loopd_bench::cpu::ServerCpu;
use loopd_bench::repeat::{Confidence, Repeat};
use support::{
    count_syscalls, cpu_jiffies, idle_footprint, pin_current_thread, start_loopd, started, Server,
};

/// Closed-loop throughput: the 64-byte messages over 50 connections.
const CONNECTIONS: usize = 50;
const MESSAGE: usize = 64;
/// Bulk transfer: 64 KiB messages over 4 connections.
const BULK_CONNECTIONS: usize = 4;
const BULK_MESSAGE: usize = 64 * 1024;
/// Seconds per measurement (after a 1 s warm-up).
const SECS: f64 = 3.0;
/// Iterations per server at least and at most.
const ROUNDS: usize = 5;
const MAX_ROUNDS: usize = 12;
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

/// The three servers as compare's targets, each with its CPU time from /proc.
fn targets(servers: &[Server]) -> Vec<Target> {
    servers
        .iter()
        .zip(NAMES)
        .map(|(s, name)| Target {
            name: name.into(),
            addr: s.addr(),
            cpu: Some(ServerCpu::Pid(s.pid() as u32)),
        })
        .collect()
}

/// Runs compare with `conns` connections of `size`-byte messages, open loop at `rate` if
/// given, and prints its table under `what`.
fn measure(
    servers: &[Server],
    what: &str,
    conns: usize,
    size: usize,
    rate: Option<f64>,
) -> Comparison {
    let mut cfg = loopd_bench::BenchConfig::new(servers[0].addr());
    cfg.connections = conns;
    cfg.size = size;
    cfg.stop = loopd_bench::Stop::After(Duration::from_secs_f64(SECS));
    cfg.warmup = Duration::from_secs(1);
    cfg.rate = rate;
    let repeat = Repeat {
        min: ROUNDS,
        max: MAX_ROUNDS,
        target: Some(Confidence {
            level: 95.0,
            width: 5.0,
        }),
    };
    let comparison = compare(
        &cfg,
        &targets(servers),
        &repeat,
        |_| {},
        |i, k, r| {
            eprintln!(
                "  {what}: {} iteration {k}: {:.0} msg/s",
                NAMES[i], r.rates.messages_per_sec
            );
        },
    )
    .expect("compare");
    if let Err(why) = comparison.verdict() {
        panic!("a run failed: {why}\n{comparison}");
    }
    println!("\n{what}\n\n{comparison}");
    comparison
}

/// One figure of each target.
fn each(c: &Comparison, f: impl Fn(&loopd_bench::Report) -> f64) -> [f64; 3] {
    [0, 1, 2].map(|i| f(&c.targets[i].report))
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
    let closed = measure(
        &servers,
        "closed loop, 64 B, 50 connections",
        CONNECTIONS,
        MESSAGE,
        None,
    );
    let rate = each(&closed, |r| {
        r.iterations
            .as_ref()
            .and_then(|i| i.interval)
            .map_or(r.rates.messages_per_sec, |i| i.mean)
    });
    let server_cpu = each(&closed, |r| {
        r.cpu
            .as_ref()
            .and_then(|c| c.server.as_ref()?.us_per_message)
            .unwrap_or(f64::NAN)
    });
    let open_rate = (rate[0] / 2.0).round();
    let open = measure(
        &servers,
        &format!("open loop at {open_rate:.0} msg/s (half loopd's peak), 64 B, 50 connections"),
        CONNECTIONS,
        MESSAGE,
        Some(open_rate),
    );
    let p99 = each(&open, |r| r.latency.as_ref().expect("round trips").p99_us);
    let bulk = measure(
        &servers,
        "bulk, 64 KiB, 4 connections",
        BULK_CONNECTIONS,
        BULK_MESSAGE,
        None,
    );
    let bulk = each(&bulk, |r| r.rates.mib_per_sec_received);
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
        "messages/s (64 B, 50 conns, closed loop; mean)",
        rate,
        0,
        ">= 1.10",
    );
    row("server CPU µs per message (closed loop)", server_cpu, 2, "");
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
    println!(
        "Servers on CPU 0, loopd-bench on CPU 1; {ROUNDS} to {MAX_ROUNDS} alternating iterations of {SECS} s each per server, until the mean is within ±2.5% at 95% confidence."
    );
    println!(
        "CPU time stolen by the hypervisor during the throughput and latency rounds: {:.1}% (0 on bare metal).",
        steal * 100.0
    );
}
