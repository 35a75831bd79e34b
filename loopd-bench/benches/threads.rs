//! More loops: what they cost per message, and how evenly the kernel spreads connections
//! over them.
//!
//! Run with `cargo bench -p loopd-bench --bench threads`. On a 2-core machine a client and a
//! 2-loop server compete for the same cores, so throughput cannot show scaling here. Two
//! things can be measured honestly:
//!
//! 1. **Server CPU per message at the same open-loop rate**, 1 loop against 2 loops
//!    ([`RATE`] messages/s over [`CONNECTIONS`] connections, low enough for either to keep
//!    up). Loops share nothing, so the figure should stay flat; a shared lock or counter
//!    would show up as a rise. The server's user+system time comes from `/proc/PID/stat`.
//!    The two servers alternate round by round ([`ROUNDS`]; medians).
//! 2. **The spread of connections over loops** for 10, 100 and 1,000 clients, each on a
//!    fresh server (a fresh port, so a fresh hash): per-loop accepted counts, the ratio of
//!    the fullest loop to the mean, and Pearson's chi-square against an even spread (with
//!    `loops - 1` degrees of freedom its 95% critical value is 3.84 for 2 loops and 7.81 for
//!    4; above it, the spread is more uneven than chance).

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use loopd::config::Config;
use loopd_bench::{BenchConfig, Stop};
use support::{median, pin_current_thread, start_loopd};

const CONNECTIONS: usize = 50;
const RATE: f64 = 20_000.0;
const SECS: u64 = 3;
const ROUNDS: usize = 5;
/// Fresh servers per spread measurement.
const SPREAD_SAMPLES: usize = 5;

/// Server CPU nanoseconds per message at [`RATE`], open loop, verified.
fn cpu_per_message(server: &support::Server) -> f64 {
    let mut cfg = BenchConfig::new(server.addr());
    cfg.connections = CONNECTIONS;
    cfg.rate = Some(RATE);
    cfg.stop = Stop::After(Duration::from_secs(SECS));
    cfg.warmup = Duration::ZERO;
    let before = server.cpu_time();
    let report = loopd_bench::run(&cfg, |_| {}).expect("bench run");
    let used = server.cpu_time() - before;
    if let Err(why) = report.verdict() {
        panic!("the run failed: {why}");
    }
    used.as_nanos() as f64 / report.messages as f64
}

/// Per-loop accepted counts after `clients` connections to a fresh `loops`-loop server.
fn spread(loops: usize, clients: usize) -> Vec<u64> {
    let mut config = Config {
        listen: vec!["echo=127.0.0.1:0".parse().unwrap()],
        ..Config::default()
    };
    config.deployment.threads = loops;
    config.deployment.max_connections = 20_000;
    let server = loopd::Server::new(&config).expect("bind");
    let addr: SocketAddr = server.local_addrs()[0];
    let handle = server.handle();
    let running = std::thread::spawn(move || server.run());
    let held: Vec<TcpStream> = (0..clients)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while handle.stats().accepted < clients as u64 {
        assert!(std::time::Instant::now() < deadline, "not all accepted");
        std::thread::sleep(Duration::from_millis(5)); // waiting for the loops to accept
    }
    let counts = handle.loop_stats().iter().map(|s| s.accepted).collect();
    drop(held);
    handle.shutdown();
    handle.shutdown();
    let _ = running.join();
    counts
}

/// Pearson's chi-square of `counts` against an even spread.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

fn main() {
    loopd::rlimit::raise_nofile_limit().expect("raise the open-files limit");
    let one = start_loopd(Some(0), &["--threads", "1", "--pin-cpus", "0", "-q"]);
    let two = start_loopd(None, &["--threads", "2", "--pin-cpus", "0,1", "-q"]);
    pin_current_thread(1).expect("pin the client to CPU 1");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        a.push(cpu_per_message(&one));
        b.push(cpu_per_message(&two));
        eprintln!(
            "  round {round}: 1 loop {:.0} ns/msg, 2 loops {:.0} ns/msg",
            a[round - 1],
            b[round - 1]
        );
    }
    drop((one, two));
    let (a, b) = (median(a), median(b));
    println!("server CPU per message at {RATE} msg/s open loop, {CONNECTIONS} connections, 64 B:");
    println!("| loops | server CPU ns per message |");
    println!("|---:|---:|");
    println!("| 1 | {a:.0} |");
    println!("| 2 | {b:.0} ({:+.1}%) |", (b / a - 1.0) * 100.0);
    println!();

    println!("spread of connections over loops ({SPREAD_SAMPLES} fresh servers each):");
    println!("| loops | clients | per-loop accepted (one sample per server) | fullest / mean (median) | chi-square (median) |");
    println!("|---:|---:|---|---:|---:|");
    for loops in [2, 4] {
        for clients in [10, 100, 1000] {
            let samples: Vec<Vec<u64>> = (0..SPREAD_SAMPLES)
                .map(|_| spread(loops, clients))
                .collect();
            let mean = clients as f64 / loops as f64;
            let worst = median(
                samples
                    .iter()
                    .map(|s| *s.iter().max().unwrap() as f64 / mean)
                    .collect(),
            );
            let chi = median(samples.iter().map(|s| chi_square(s)).collect());
            let shown: Vec<String> = samples
                .iter()
                .map(|s| s.iter().map(u64::to_string).collect::<Vec<_>>().join("/"))
                .collect();
            println!(
                "| {loops} | {clients} | {} | {worst:.2} | {chi:.2} |",
                shown.join(", ")
            );
        }
    }
}
