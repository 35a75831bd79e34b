//! Shared by the end-to-end benchmarks: servers as pinned child processes (the release
//! `loopd` binary, or a peer), CPU pinning, system-call counting, and the client's engine
//! driven in process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// The server-as-a-process helper of the tests, shared rather than copied.
#[path = "../../../tests/common/mod.rs"]
pub mod common;

pub use common::daemon::Daemon as Server;

/// The release `loopd` binary: built by this call if it is not there yet (the benchmarks
/// belong to the loopd-bench package, whose build does not include the daemon).
pub fn loopd_release() -> PathBuf {
    release_binary("loopd-daemon", "loopd")
}

/// The release binary `bin` of `package`, built by this call if it is not up to date.
pub fn release_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the bench executable's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the target directory")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", package, "--bin", bin])
        .status()
        .expect("run cargo to build a release binary");
    assert!(status.success(), "building {package}'s {bin} failed");
    dir.join(bin)
}

/// Compiles the C peer `benches/peers/echo_epoll.c` into the target directory with the
/// system's C compiler, and returns the program.
pub fn compile_epoll_peer() -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers/echo_epoll.c");
    let exe = std::env::current_exe().expect("the bench executable's path");
    let out = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the target directory")
        .join("echo_epoll");
    let status = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("run cc (the system's C compiler; Debian's gcc)");
    assert!(status.success(), "compiling {} failed", source.display());
    out
}

/// Waits for `server`'s start-up line, so its address is known, and returns it.
pub fn started(server: Server) -> Server {
    server.addr();
    server
}

/// Starts the release `loopd`, pinned to `cpu` if given, serving echo on an ephemeral
/// loopback port unless `extra` says otherwise.
pub fn start_loopd(cpu: Option<usize>, extra: &[&str]) -> Server {
    let mut args = vec!["--listen", "echo=127.0.0.1:0"];
    args.extend_from_slice(extra);
    started(Server::start_program(cpu, &loopd_release(), &args, &[]))
}

/// Pins the calling thread to `cpu` (loopd's own helper).
#[allow(unused_imports)] // not every bench pins
pub use loopd::server::pin_to_cpu as pin_current_thread;

/// Counts the system calls a process enters while `f` runs, with `perf stat`. `None` when
/// perf or its tracepoint is not available here.
pub fn count_syscalls<T>(pid: u32, f: impl FnOnce() -> T) -> Option<(u64, T)> {
    let (counts, result) = count_events(pid, &["raw_syscalls:sys_enter"], f)?;
    Some((counts[0], result))
}

/// Counts each of `events` (perf event names, such as the tracepoint
/// `syscalls:sys_enter_epoll_ctl`) in a process while `f` runs, with one `perf stat`. `None`
/// when perf or one of the events is not available here.
pub fn count_events<T>(pid: u32, events: &[&str], f: impl FnOnce() -> T) -> Option<(Vec<u64>, T)> {
    let mut perf = Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            &events.join(","),
            "-p",
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // perf attaches asynchronously; the server is idle now, so this pause counts nothing.
    std::thread::sleep(Duration::from_millis(500));
    let result = f();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on a child's pid.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    perf.stderr.take().unwrap().read_to_string(&mut err).ok()?;
    perf.wait().ok()?;
    // One CSV line per event: count, unit, event name, ...
    let counts = events
        .iter()
        .map(|event| {
            err.lines()
                .find(|l| l.split(',').nth(2) == Some(event))?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect::<Option<Vec<u64>>>()?;
    Some((counts, result))
}

/// Where a process spends its CPU time while `f` runs: `perf record` samples it (kernel and
/// user space), and each symbol's share of the samples, largest first, is returned. `None`
/// when perf cannot record here.
pub fn profile<T>(pid: u32, f: impl FnOnce() -> T) -> Option<(Vec<(String, f64)>, T)> {
    let data = std::env::temp_dir().join(format!("loopd-bench-profile-{pid}.data"));
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "4999",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let result = f();
    // SAFETY: kill(2) on a child's pid.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    perf.wait().ok()?;
    let report = Command::new("perf")
        .args(["report", "--stdio", "--sort", "sym", "-q", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&data);
    let shares = String::from_utf8_lossy(&report.stdout)
        .lines()
        .filter_map(|l| {
            // "    12.34%  [k] symbol"
            let (share, rest) = l.trim().split_once('%')?;
            let symbol = rest.trim().split_once(' ')?.1.trim();
            Some((symbol.to_string(), share.parse().ok()?))
        })
        .collect();
    Some((shares, result))
}

/// Which system calls a process makes, by name, while `f` runs (strace -c), for the
/// breakdown printed beside the perf total.
pub fn syscall_breakdown(pid: u32, f: impl FnOnce()) -> Option<HashMap<String, u64>> {
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    f();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on a child's pid.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    strace
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .ok()?;
    strace.wait().ok()?;
    let mut calls = HashMap::new();
    for line in err.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if cols.len() >= 5 && cols[0].parse::<f64>().is_ok() {
            let name = cols[cols.len() - 1].to_string();
            if let Ok(n) = cols[3].parse() {
                calls.insert(name, n);
            }
        }
    }
    Some(calls)
}

/// A closed-loop run of loopd-bench's engine against `addr` (in this process, on this
/// thread's CPU): `conns` connections, `size`-byte messages, for `secs` after a 1 s warm-up;
/// open loop at `rate` if given.
pub fn drive(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    rate: Option<f64>,
) -> loopd_bench::Report {
    let mut cfg = loopd_bench::BenchConfig::new(addr);
    cfg.connections = conns;
    cfg.size = size;
    cfg.stop = loopd_bench::Stop::After(Duration::from_secs_f64(secs));
    cfg.warmup = Duration::from_secs(1);
    cfg.rate = rate;
    let report = loopd_bench::run(&cfg, |_| {}).expect("bench run");
    if let Err(why) = report.verdict() {
        panic!("the run failed: {why}\n{report}");
    }
    report
}

/// The thread-per-connection blocking client: `conns` threads, each writing a `size`-byte
/// message and reading its echo until `secs` have passed. Returns messages per second.
/// Threads inherit the calling thread's CPU affinity.
pub fn blocking_client(addr: SocketAddr, conns: usize, size: usize, secs: f64) -> f64 {
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).unwrap();
                let msg: Vec<u8> = (0..size).map(|k| (k + i) as u8).collect();
                let mut back = vec![0; size];
                let mut done = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        return done;
                    }
                    s.write_all(&msg).unwrap();
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg, "echo mismatch");
                    if now >= start {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / secs
}

/// Waits until a process's RSS stops changing (allocator and page-table settling).
pub fn settled_rss(server: &Server) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = server.rss();
    loop {
        std::thread::sleep(Duration::from_millis(200)); // a sampling interval
        let now = server.rss();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Resident bytes per idle connection: RSS growth while `n` connections each make one
/// 64-byte round trip and then sit idle, after warming up the server's one-off allocations
/// with a few large exchanges.
pub fn idle_footprint(server: &Server, n: usize) -> f64 {
    idle_footprint_observed(server, n, || {}, || {})
}

/// [`idle_footprint`], calling `before` once the server's memory has settled before the `n`
/// connections are made, and `after` once it has settled with all of them open and idle:
/// whatever else is measured around them (the kernel's side) sees the same state but for
/// the `n` connections.
pub fn idle_footprint_observed(
    server: &Server,
    n: usize,
    before: impl FnOnce(),
    after: impl FnOnce(),
) -> f64 {
    let big = vec![0xA5u8; 256 * 1024];
    for _ in 0..16 {
        let mut c = std::net::TcpStream::connect(server.addr()).unwrap();
        let mut w = c.try_clone().unwrap();
        let data = big.clone();
        let t = std::thread::spawn(move || w.write_all(&data).unwrap());
        let mut back = vec![0; big.len()];
        c.read_exact(&mut back).unwrap();
        t.join().unwrap();
    }
    let rss_before = settled_rss(server);
    before();
    let mut idle = Vec::with_capacity(n);
    let msg = [0x5Au8; 64];
    let mut back = [0u8; 64];
    for _ in 0..n {
        let mut c = std::net::TcpStream::connect(server.addr()).expect("connect");
        c.write_all(&msg).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
        idle.push(c);
    }
    let rss_after = settled_rss(server);
    after();
    drop(idle);
    rss_after.saturating_sub(rss_before) as f64 / n as f64
}

/// The median of some measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Jiffies the hypervisor took from this machine's CPUs (the `steal` column of
/// `/proc/stat`) and all jiffies, so far. On a virtual machine under load, stolen time
/// is time neither the server nor the client ran, and shows up as latency stalls.
pub fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cols: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    (cols.get(7).copied().unwrap_or(0), cols.iter().sum())
}
