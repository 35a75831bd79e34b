//! Does a change to the client's engine cost CPU? The client CPU per message of this build
//! of loopd-bench against another build of it, both driving the same loopd, in turn.
//!
//! ```sh
//! git worktree add --detach ../base main
//! (cd ../base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release -p loopd-bench)
//! LOOPD_BENCH_BASE=/tmp/base-target/release/loopd-bench \
//!     cargo bench -p loopd-bench --bench client_cost
//! ```
//!
//! Without `LOOPD_BENCH_BASE` this build runs against itself, which shows the noise floor
//! of the method. loopd runs pinned to CPU 0 and the clients to CPU 1; [`CONNECTIONS`]
//! connections of [`MESSAGE`]-byte messages, in closed loop and in open loop at
//! [`OPEN_RATE`]. A first round, not counted, warms the server up; then each round runs
//! both builds under both loads, which build goes first alternating from round to round, so
//! drift and order hit both alike. The figure is each
//! client's own `cpu.client.us_per_message`: `getrusage` of the client process over its
//! measured window, divided by the messages measured in it (the same method for both
//! builds). Printed: per load, each build's median, the ratio of the medians, and the
//! per-round ratios' median and mean with its 95% interval; the target is a ratio of the
//! medians of at most [`TARGET`].

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use loopd_bench::report::iterations::interval;
use serde_json::Value;
use support::{median, pin_current_thread, release_binary, start_loopd};

const CONNECTIONS: usize = 50;
const MESSAGE: usize = 64;
/// Measured seconds per run, after a warm-up second: tens of thousands of messages each,
/// and a CPU figure (whose counter ticks in 10 ms) good to a fraction of a percent.
const SECS: &str = "3s";
const WARMUP: &str = "1s";
/// Open loop: well below either build's closed-loop rate here, so the schedule holds and
/// the cost per message includes the timer wake-ups an open loop pays.
const OPEN_RATE: f64 = 40_000.0;
/// Rounds by default (`CLIENT_COST_ROUNDS` sets another number).
const ROUNDS: usize = 10;
/// The acceptance: this build's CPU per message at most 2% above the base's.
const TARGET: f64 = 1.02;

/// What one run measured.
struct Run {
    us_per_message: f64,
    messages_per_sec: f64,
}

/// Runs `client` against `target` for one measurement, open loop at `rate` if given.
fn run(client: &Path, target: SocketAddr, rate: Option<f64>) -> Run {
    let connections = CONNECTIONS.to_string();
    let size = MESSAGE.to_string();
    let mut cmd = Command::new(client);
    cmd.arg(target.to_string())
        .args([
            "-c",
            &connections,
            "-s",
            &size,
            "-d",
            SECS,
            "--warmup",
            WARMUP,
        ])
        .args(["--json", "-", "--quiet"]);
    if let Some(rate) = rate {
        cmd.args(["--rate", &rate.to_string()]);
    }
    let out = cmd.output().expect("run a client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed: {stderr}",
        client.display()
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    Run {
        us_per_message: report["cpu"]["client"]["us_per_message"]
            .as_f64()
            .expect("the client's CPU per message"),
        messages_per_sec: report["rates"]["messages_per_sec"].as_f64().unwrap(),
    }
}

fn main() {
    let this = release_binary("loopd-bench", "loopd-bench");
    let base = std::env::var_os("LOOPD_BENCH_BASE").map(PathBuf::from);
    let (base, base_name) = match base {
        Some(path) => {
            assert!(
                path.exists(),
                "LOOPD_BENCH_BASE={} does not exist",
                path.display()
            );
            let name = format!("base ({})", path.display());
            (path, name)
        }
        None => (this.clone(), "this build again (noise floor)".to_string()),
    };
    let rounds = std::env::var("CLIENT_COST_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let server = start_loopd(Some(0), &[]);
    pin_current_thread(1).expect("pin the clients to CPU 1");
    let loads = [
        ("closed loop".to_string(), None),
        (format!("open loop, {OPEN_RATE:.0} msg/s"), Some(OPEN_RATE)),
    ];
    // [load][build] -> one figure per round.
    let mut cost = vec![[Vec::new(), Vec::new()]; loads.len()];
    let mut rate = vec![[Vec::new(), Vec::new()]; loads.len()];
    for (_, load_rate) in &loads {
        for client in [&base, &this] {
            run(client, server.addr(), *load_rate); // warming up; not counted
        }
    }
    for round in 0..rounds {
        for (l, (name, load_rate)) in loads.iter().enumerate() {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for b in order {
                let client = if b == 0 { &base } else { &this };
                let r = run(client, server.addr(), *load_rate);
                cost[l][b].push(r.us_per_message);
                rate[l][b].push(r.messages_per_sec);
            }
            println!(
                "  round {}: {name}: base {:.3} µs/msg, this {:.3} µs/msg",
                round + 1,
                cost[l][0][round],
                cost[l][1][round]
            );
        }
    }
    println!(
        "client CPU per message (getrusage over the measured window): {base_name} vs this \
         build, {rounds} rounds alternating, {CONNECTIONS} connections, {MESSAGE}-byte \
         messages, loopd on CPU 0, clients on CPU 1"
    );
    println!("| load | base µs/msg | this µs/msg | ratio of medians | per-round ratio: median | mean ± 95% | base msg/s | this msg/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for (l, (name, _)) in loads.iter().enumerate() {
        let (a, b) = (median(cost[l][0].clone()), median(cost[l][1].clone()));
        let ratios: Vec<f64> = cost[l][1]
            .iter()
            .zip(&cost[l][0])
            .map(|(this, base)| this / base)
            .collect();
        let spread = match interval(&ratios, 95.0) {
            Some(i) => format!("{:.3} ± {:.3}", i.mean, i.half_width),
            None => "—".into(),
        };
        worst = worst.max(b / a);
        println!(
            "| {name} | {a:.3} | {:.3} | {:.3} | {:.3} | {spread} | {:.0} | {:.0} |",
            b,
            b / a,
            median(ratios.clone()),
            median(rate[l][0].clone()),
            median(rate[l][1].clone())
        );
    }
    let verdict = if worst <= TARGET { "met" } else { "NOT met" };
    println!("target: this / base <= {TARGET} for every load: {verdict} (worst {worst:.3})");
}
