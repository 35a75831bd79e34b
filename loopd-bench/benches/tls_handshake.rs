//! TLS handshakes per second on one client core: loopd-bench `-m handshake` beside
//! `openssl s_time`, against the same nginx stream `ssl` server (one worker, pinned), full
//! handshakes (`--tls-resume 0` beside `s_time -new`) and resumed ones (`--tls-resume 100`
//! beside `s_time -reuse`), taking turns round by round.
//!
//! ```sh
//! cargo bench -p loopd-bench --bench tls_handshake
//! ```
//!
//! Both clients do the same per connection: TCP connect, TLS 1.3 handshake (ECDSA P-256
//! certificate, checked against its CA), read the server's reply (`hello\n`, which carries
//! the session ticket with it), close. (`s_time -www /` makes s_time read the reply: without
//! it, it never holds a TLS 1.3 ticket and `-reuse` resumes nothing.) Each figure is counted
//! the same way for both: handshakes are the sessions nginx logged, by `$ssl_session_reused`,
//! over the wall time of the client's run; client CPU is `getrusage(RUSAGE_CHILDREN)` around
//! it; server CPU is nginx's worker's `/proc/PID/stat`. loopd-bench's latency histograms
//! (one per kind) are written as `.hgrm` files beside its JSON.
//!
//! With `perf` on the machine, a profile of loopd-bench making full handshakes follows the
//! table: where a client handshake's time goes.
//!
//! Tunables: `TLS_BENCH_SECS` (default 5) per run, `TLS_BENCH_ROUNDS` (default 3),
//! `TLS_BENCH_CONNECTIONS` (loopd-bench's `-c`, default 16).

// loopd's test helpers (its certificates), as `tls_peers` expects them.
#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../tests/tls_peers/mod.rs"]
mod tls_peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use tls_peers::{require, Nginx, Pki};

/// The server's core, and the client's: one each, apart.
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds of this process's finished children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn process_cpu(pid: u32) -> f64 {
    loopd::metrics::process_cpu_seconds(&pid.to_string()).expect("/proc/PID/stat")
}

/// What one client run did, counted at the server.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    /// Handshakes of the kind asked for, per second of wall time.
    rate: f64,
    /// Sessions of the other kind (should be about none).
    other: u64,
    client_us: f64,
    server_us: f64,
    /// loopd-bench's own p50 and p99 (µs), from its histogram of the kind asked for.
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Runs `cmd` to completion against `nginx`, pinned to the client's core, and counts.
fn measure(nginx: &Nginx, worker: u32, resumed: bool, cmd: &mut Command) -> Run {
    let (full0, reused0) = nginx.sessions();
    let (client0, server0) = (children_cpu(), process_cpu(worker));
    let start = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    let (client1, server1) = (children_cpu(), process_cpu(worker));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // nginx logs a session when it ends; the client's last ones end as it exits.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let mut last = nginx.sessions();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100)); // let the log settle
        let now = nginx.sessions();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let (full, reused) = (last.0 - full0, last.1 - reused0);
    let (mine, other) = if resumed {
        (reused, full)
    } else {
        (full, reused)
    };
    let all = (full + reused).max(1) as f64;
    Run {
        rate: mine as f64 / wall,
        other,
        client_us: (client1 - client0) * 1e6 / all,
        server_us: (server1 - server0) * 1e6 / all,
        p50: None,
        p99: None,
    }
}

fn pinned(program: &Path) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(CLIENT_CPU.to_string()).arg(program);
    c
}

fn loopd_bench(
    nginx: &Nginx,
    worker: u32,
    pki: &Pki,
    resumed: bool,
    secs: u64,
    conns: u64,
    out: &Path,
) -> Run {
    let json = out.with_extension("json");
    let mut cmd = pinned(Path::new(env!("CARGO_BIN_EXE_loopd-bench")));
    cmd.arg(nginx.addr.to_string())
        .args([
            "-m",
            "handshake",
            "--warmup",
            "0s",
            "--tls-sni",
            "localhost",
        ])
        .args(["-c", &conns.to_string(), "-d", &format!("{secs}s")])
        .args(["--cacert", pki.ca.to_str().unwrap()])
        .args(["--tls-resume", if resumed { "100" } else { "0" }])
        .args([
            "--json",
            json.to_str().unwrap(),
            "--hgrm",
            out.to_str().unwrap(),
            "-q",
        ]);
    let mut run = measure(nginx, worker, resumed, &mut cmd);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let kind = if resumed { "resumed" } else { "full" };
    let l = &report["tls"]["handshake_latency"][kind];
    run.p50 = l["p50_us"].as_f64();
    run.p99 = l["p99_us"].as_f64();
    run
}

fn s_time(nginx: &Nginx, worker: u32, pki: &Pki, resumed: bool, secs: u64) -> Run {
    let openssl = require("openssl", "openssl");
    let mut cmd = pinned(&openssl);
    cmd.args(["s_time", "-connect", &nginx.addr.to_string(), "-www", "/"])
        .args(["-CAfile", pki.ca.to_str().unwrap(), "-verify", "1"])
        .args(["-time", &secs.to_string()])
        .arg(if resumed { "-reuse" } else { "-new" });
    measure(nginx, worker, resumed, &mut cmd)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn median_of(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median(v))
}

/// A `perf` profile of loopd-bench making full handshakes: the top symbols by self time,
/// and the share of each library.
fn profile(nginx: &Nginx, pki: &Pki, conns: u64, dir: &Path) {
    if Command::new("perf").arg("--version").output().is_err() {
        println!("\n(perf is not installed: no profile)");
        return;
    }
    let data = dir.join("perf.data");
    let status = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "4999",
            "-g",
            "-o",
            data.to_str().unwrap(),
            "--",
        ])
        .arg("taskset")
        .args(["-c", &CLIENT_CPU.to_string()])
        .arg(env!("CARGO_BIN_EXE_loopd-bench"))
        .arg(nginx.addr.to_string())
        .args([
            "-m",
            "handshake",
            "--warmup",
            "0s",
            "--tls-sni",
            "localhost",
            "-q",
        ])
        .args(["-c", &conns.to_string(), "-d", "3s"])
        .args(["--cacert", pki.ca.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("\n(perf record failed: no profile)");
        return;
    }
    for (title, sort, rows) in [
        ("by library (self time)", "dso", 8),
        ("by symbol (self time)", "dso,symbol", 22),
    ] {
        let out = Command::new("perf")
            .args([
                "report",
                "-i",
                data.to_str().unwrap(),
                "--stdio",
                "--no-children",
            ])
            .args(["--sort", sort, "-g", "none", "--percent-limit", "0.7"])
            .output();
        let Ok(out) = out else { return };
        println!("\nperf: where loopd-bench's time goes making full handshakes, {title}:");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(rows)
            .for_each(|l| println!("  {}", l.trim_end()));
    }
}

fn main() {
    // `cargo bench` passes --bench; this is a program, not a criterion suite.
    let secs = env_or("TLS_BENCH_SECS", 5);
    let rounds = env_or("TLS_BENCH_ROUNDS", 3) as usize;
    let conns = env_or("TLS_BENCH_CONNECTIONS", 16);
    require("taskset", "util-linux");
    let pki = Pki::new("tls-bench");
    let nginx = Nginx::start(
        &pki,
        "ssl_protocols TLSv1.3; ssl_session_cache shared:tls:10m; ssl_session_tickets on;",
        Some(SERVER_CPU),
    );
    let worker = nginx.worker_pid();
    let dir: PathBuf = pki.dir.clone();
    println!(
        "nginx stream ssl (1 worker, CPU {SERVER_CPU}, TLS 1.3, ECDSA P-256) at {}; clients on \
         CPU {CLIENT_CPU}; {rounds} rounds of {secs} s each, taking turns; medians",
        nginx.addr
    );
    let mut table = Vec::new();
    for resumed in [false, true] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let hgrm = dir.join(format!(
                "loopd-bench-{}-{round}.hgrm",
                if resumed { "resumed" } else { "full" }
            ));
            ours.push(loopd_bench(
                &nginx, worker, &pki, resumed, secs, conns, &hgrm,
            ));
            theirs.push(s_time(&nginx, worker, &pki, resumed, secs));
        }
        table.push((resumed, ours, theirs));
    }
    println!(
        "\n| handshakes | client | handshakes/s | ratio | per client CPU-second | ratio | p50 | p99 | other kind | client CPU µs/hs | server CPU µs/hs | client ÷ server |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (resumed, ours, theirs) in &table {
        let kind = if *resumed { "resumed" } else { "full" };
        let reference = median(theirs.iter().map(|r| r.rate).collect());
        let reference_cpu = median(theirs.iter().map(|r| r.client_us).collect());
        for (name, runs) in [
            (
                format!(
                    "loopd-bench -c {conns} --tls-resume {}",
                    if *resumed { 100 } else { 0 }
                ),
                ours,
            ),
            (
                format!(
                    "openssl s_time {}",
                    if *resumed { "-reuse" } else { "-new" }
                ),
                theirs,
            ),
        ] {
            let rate = median(runs.iter().map(|r| r.rate).collect());
            let client = median(runs.iter().map(|r| r.client_us).collect());
            let server = median(runs.iter().map(|r| r.server_us).collect());
            let us = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.0} µs"));
            let other: u64 = runs.iter().map(|r| r.other).sum();
            println!(
                "| {kind} | {name} | {rate:.0} | {:.2} | {:.0} | {:.2} | {} | {} | {other} | {client:.1} | {server:.1} | {:.2} |",
                rate / reference,
                1e6 / client,
                reference_cpu / client,
                us(median_of(runs, |r| r.p50)),
                us(median_of(runs, |r| r.p99)),
                client / server,
            );
        }
    }
    println!(
        "\n(handshakes/s: sessions of that kind nginx logged, over the client's wall time; \
         ratio: to s_time's; per client CPU-second: what one client core would make if the \
         server kept up (s_time, one connection at a time, waits on each round trip); other kind: sessions of the other kind over all rounds; CPU per \
         handshake: the client's getrusage and nginx's worker, over every session.) \
         loopd-bench's histograms: {}/loopd-bench-*.tls-{{full,resumed}}.hgrm",
        dir.display()
    );
    profile(&nginx, &pki, conns, &dir);
    // Keep the histogram files: the directory goes with the Pki otherwise.
    let keep = std::env::temp_dir().join("loopd-bench-tls-handshake");
    let _ = std::fs::remove_dir_all(&keep);
    let _ = std::fs::create_dir_all(&keep);
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".hgrm") {
            let _ = std::fs::copy(entry.path(), keep.join(name));
        }
    }
    println!("(histograms kept in {})", keep.display());
}
