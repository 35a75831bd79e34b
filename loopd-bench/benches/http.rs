//! HTTP/1.1 side by side in one run: loopd's `http` service against nginx, and loopd-bench
//! against wrk, each server pinned to CPU 0 and each client to CPU 1.
//!
//! ```sh
//! cargo bench -p loopd-bench --bench http
//! ```
//!
//! 1. **Server.** wrk (`-t1 -c50`, keep-alive) against loopd `http` (`GET /healthz`: 200,
//!    body `ok`) and against nginx (one worker, `return 200 'ok'`, access log off): requests
//!    per second and the server's CPU per request (over the run, nginx's worker's, to the
//!    nanosecond from the scheduler's `/proc/PID/task/*/schedstat`). Target:
//!    loopd's CPU per request at most 0.9× nginx's. Beside them, the floor:
//!    `benches/peers/echo_epoll.c` in `reply` mode answers every read with a fixed response,
//!    no parsing, no timers, so its CPU per request is what the kernel costs (receive, send,
//!    `epoll_wait`). What a server spends above it is its own work, and the two servers'
//!    own work is compared too.
//! 2. **Client.** wrk and loopd-bench (`--protocol http --http-method get -c50`, one thread,
//!    every response parsed and checked, latency in HdrHistograms) against the same nginx:
//!    requests per second per client core (the client's own CPU time, from
//!    `getrusage(RUSAGE_CHILDREN)` around each run). Target: loopd-bench at least 1.0× wrk.
//!
//! Rounds alternate between the contenders. The host this was written on has phases, tens of
//! seconds long, in which every server (the floor too) runs a quarter slower; so the server
//! rounds are short (1 s) and many, each phase falls on all three alike, and the ratios are
//! taken over the totals (CPU over all rounds ÷ requests over all rounds), beside the median
//! of the rounds' own ratios. Tunables: `HTTP_BENCH_SECS` (default 1) and
//! `HTTP_BENCH_ROUNDS` (15) for the servers, `HTTP_BENCH_CLIENT_SECS` (4) and
//! `HTTP_BENCH_CLIENT_ROUNDS` (3) for the clients.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::common::{free_port, require, wait_until, Nginx, Scratch};
use support::{
    compile_epoll_peer, loopd_release, median, release_binary, start_loopd, started, Server,
};

/// Connections each client keeps open: enough to keep one server core busy.
const CONNECTIONS: usize = 50;
/// The server's core and the client's.
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

fn tunable(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// nginx with one worker pinned to the server's core, answering `return 200 'ok'` on every
/// path, access log off, run from `dir`; returned once it listens, with its address.
fn start_nginx(dir: &Scratch) -> (Nginx, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = format!(
        "daemon off;
worker_processes 1;
worker_cpu_affinity {affinity:b};
error_log stderr warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    client_body_temp_path {dir};
    server {{
        listen {addr};
        location / {{ return 200 'ok'; }}
    }}
}}
",
        affinity = 1u64 << SERVER_CPU,
        dir = dir.0.display(),
    );
    let nginx = Nginx::start(dir, &config);
    wait_until("nginx listening", || {
        std::net::TcpStream::connect(addr).ok()
    });
    (nginx, addr)
}

/// CPU seconds process `pid` has used, summed over its threads from the scheduler's own
/// count (`/proc/PID/task/TID/schedstat`, nanoseconds: `/proc/PID/stat` counts in 10 ms
/// ticks, too coarse for one-second rounds).
fn cpu_of(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    let ns: u64 = tasks
        .map(|t| {
            let path = t.expect("a task").path().join("schedstat");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            text.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    ns as f64 / 1e9
}

/// CPU seconds used by this process's children that have been waited for.
fn children_cpu() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// A client run: requests per second, and the client's CPU seconds per second of run.
struct ClientRun {
    rate: f64,
    /// Requests answered, as wrk counts them (loopd-bench: the rate over the run).
    requests: f64,
    cores: f64,
}

/// wrk on the client's core: `-t1 -c50` for `secs`, against `url`.
fn wrk(url: &str, secs: u64) -> ClientRun {
    let wrk = require("wrk", "wrk");
    let before = children_cpu();
    let out = Command::new("taskset")
        .args(["-c", &CLIENT_CPU.to_string()])
        .arg(wrk)
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs}s"),
            url,
        ])
        .output()
        .expect("run wrk");
    let cpu = children_cpu() - before;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk: {text}"
    );
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate from wrk: {text}"));
    // "  1234567 requests in 4.00s, ..."
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count from wrk: {text}"));
    ClientRun {
        rate,
        requests,
        cores: cpu / secs as f64,
    }
}

/// loopd-bench on the client's core: `GET path`, one thread, 50 connections, `secs`
/// measured after a 1-second warm-up (so its CPU is spread over `secs + 1`).
fn loopd_bench(bench: &Path, addr: SocketAddr, path: &str, secs: u64) -> ClientRun {
    let before = children_cpu();
    let out = Command::new("taskset")
        .args(["-c", &CLIENT_CPU.to_string()])
        .arg(bench)
        .arg(addr.to_string())
        .args([
            "--protocol",
            "http",
            "--http-method",
            "get",
            "--http-path",
            path,
        ])
        .args([
            "-t",
            "1",
            "-c",
            &CONNECTIONS.to_string(),
            "-d",
            &format!("{secs}s"),
        ])
        .args(["--warmup", "1s", "--json", "-"])
        .output()
        .expect("run loopd-bench");
    let cpu = children_cpu() - before;
    assert!(
        out.status.success(),
        "loopd-bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let rate = report["rates"]["messages_per_sec"]
        .as_f64()
        .expect("a rate");
    ClientRun {
        rate,
        requests: rate * secs as f64,
        cores: cpu / (secs + 1) as f64,
    }
}

/// Runs `f` and returns its result with the CPU seconds `pid` used meanwhile.
fn with_cpu<T>(pid: u32, f: impl FnOnce() -> T) -> (T, f64) {
    let before = cpu_of(pid);
    let result = f();
    (result, cpu_of(pid) - before)
}

fn main() {
    let secs = tunable("HTTP_BENCH_SECS", 1);
    let rounds = tunable("HTTP_BENCH_ROUNDS", 15) as usize;
    let client_secs = tunable("HTTP_BENCH_CLIENT_SECS", 4);
    let client_rounds = tunable("HTTP_BENCH_CLIENT_ROUNDS", 3) as usize;
    let _ = loopd_release();
    let bench: PathBuf = release_binary("loopd-bench", "loopd-bench");
    let loopd: Server = start_loopd(Some(SERVER_CPU), &["--listen", "http=127.0.0.1:0", "-q"]);
    let loopd_addr = loopd.addr_of("http");
    let nginx_dir = Scratch::new("bench-nginx-http");
    let (nginx, nginx_addr) = start_nginx(&nginx_dir);
    let nginx_worker = nginx.worker();
    let floor = started(Server::start_program(
        Some(SERVER_CPU),
        &compile_epoll_peer(),
        &["reply"],
        &[],
    ));
    let loopd_url = format!("http://{loopd_addr}/healthz");
    let nginx_url = format!("http://{nginx_addr}/");
    let floor_url = format!("http://{}/", floor.addr());

    // 1. The servers under wrk, and the floor, in short alternating rounds.
    let servers = [
        (loopd.pid() as u32, loopd_url.as_str()),
        (floor.pid() as u32, floor_url.as_str()),
        (nginx_worker, nginx_url.as_str()),
    ];
    let (mut cpu, mut requests, mut rates) = ([0.0; 3], [0.0; 3], [vec![], vec![], vec![]]);
    let (mut ratio, mut own_ratio) = (vec![], vec![]);
    for round in 1..=rounds {
        let mut us = [0.0; 3];
        for (i, &(pid, url)) in servers.iter().enumerate() {
            let (run, used) = with_cpu(pid, || wrk(url, secs));
            cpu[i] += used;
            requests[i] += run.requests;
            rates[i].push(run.rate);
            us[i] = used * 1e6 / run.requests;
        }
        let [l, f, n] = us;
        ratio.push(l / n);
        own_ratio.push((l - f) / (n - f));
        println!(
            "  round {round}: loopd {:.0} req/s {l:.2} µs/req; floor {:.0} req/s {f:.2} µs/req; nginx {:.0} req/s {n:.2} µs/req; loopd ÷ nginx {:.2}",
            rates[0][round - 1],
            rates[1][round - 1],
            rates[2][round - 1],
            l / n
        );
    }
    let [l_rate, f_rate, n_rate] = rates.map(median);
    let [l_us, f_us, n_us] = [0, 1, 2].map(|i| cpu[i] * 1e6 / requests[i]);
    println!(
        "HTTP/1.1 servers under wrk -t1 -c{CONNECTIONS} (keep-alive, GET, 2-byte body), server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}, {rounds} rounds of {secs} s; CPU over all rounds ÷ requests over all rounds"
    );
    println!(
        "| server | requests/s (median) | server CPU µs/request | above the floor | ÷ nginx |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| loopd http (GET /healthz) | {l_rate:.0} | {l_us:.2} | {:.2} | {:.2} |",
        l_us - f_us,
        l_us / n_us
    );
    println!(
        "| nginx 1 worker (return 200) | {n_rate:.0} | {n_us:.2} | {:.2} | 1.00 |",
        n_us - f_us
    );
    println!(
        "| floor: C, edge-triggered, fixed reply, no parsing | {f_rate:.0} | {f_us:.2} | 0 | {:.2} |",
        f_us / n_us
    );
    println!(
        "server CPU per request, loopd ÷ nginx: {:.2} over the totals, {:.2} the median of rounds (target ≤ 0.90)",
        l_us / n_us,
        median(ratio)
    );
    println!(
        "own work above the floor, loopd ÷ nginx: {:.2} over the totals, {:.2} the median of rounds",
        (l_us - f_us) / (n_us - f_us),
        median(own_ratio)
    );

    // 2. The clients against nginx.
    let (mut w_rate, mut w_per_core, mut b_rate, mut b_per_core) = (vec![], vec![], vec![], vec![]);
    for round in 1..=client_rounds {
        let w = wrk(&nginx_url, client_secs);
        let b = loopd_bench(&bench, nginx_addr, "/", client_secs);
        println!(
            "  round {round}: wrk {:.0} req/s on {:.2} cores; loopd-bench {:.0} req/s on {:.2} cores",
            w.rate, w.cores, b.rate, b.cores
        );
        w_rate.push(w.rate);
        w_per_core.push(w.rate / w.cores);
        b_rate.push(b.rate);
        b_per_core.push(b.rate / b.cores);
    }
    let (w, b) = (median(w_per_core), median(b_per_core));
    println!(
        "HTTP/1.1 clients against nginx (1 worker on CPU {SERVER_CPU}), client on CPU {CLIENT_CPU}, -c{CONNECTIONS}, one thread, {client_secs} s x {client_rounds}"
    );
    println!("| client | requests/s | requests/s per client core | ÷ wrk |");
    println!("|---|---:|---:|---:|");
    println!("| wrk | {:.0} | {w:.0} | 1.00 |", median(w_rate));
    println!(
        "| loopd-bench (every response checked, HdrHistogram) | {:.0} | {b:.0} | {:.2} |",
        median(b_rate),
        b / w
    );
    println!(
        "requests per client core, loopd-bench ÷ wrk: {:.2} (target ≥ 1.00)",
        b / w
    );
    drop(nginx);
    drop(floor);
    drop(loopd);
}
