//! Bulk transfer against iperf3, the usual anchor for "how fast can this loopback go".
//!
//! Run with `cargo bench -p loopd-bench --bench bulk`. Every server is pinned to CPU 0 and
//! every client to CPU 1 (iperf3 with `taskset`, loopd-bench's engine in this process). Three
//! pairs, alternated round by round ([`ROUNDS`] rounds of [`SECS`] s; medians), so drift in
//! the machine hits both sides of a pair alike:
//!
//! | pair | iperf3 | loopd |
//! | --- | --- | --- |
//! | upload | `iperf3 -c -P 4` | loopd-bench `-m send -c 4 -s 128KiB` into loopd `discard` |
//! | download | `iperf3 -c -P 4 -R` | loopd-bench `-m recv --expect chargen -c 4` from loopd `chargen` |
//! | both ways | `iperf3 -c -P 4 --bidir` | loopd-bench echo, 64 KiB messages, 4 connections |
//! | upload, 4 MiB receive buffers | `iperf3 -c -P 4 -w 4M` | the upload into a loopd with `--tcp-rcvbuf 4MiB` |
//!
//! The last row shows what makes the default upload bimodal on loopback: with the kernel's
//! receive-buffer autotuning, a sender faster than the receiver's window waits for ACKs, and
//! the data it then sends is delivered from the receiver's CPU, in the softirq of the ACK.
//!
//! Printed: MiB/s of each (both directions added for the last pair) and the ratio to iperf3,
//! with the targets (upload and download at least 0.9x). iperf3 is found on the PATH or
//! installed from Debian's packages; if neither works the bench says so in one line and
//! exits 1. loopd-bench verifies every byte it receives (the echo and the chargen stream);
//! iperf3 checks nothing, so the loopd figures carry a `memcmp` iperf3 does not.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use loopd_bench::{BenchConfig, Expect, Mode, Stop};
use support::{median, pin_current_thread, start_loopd, Server};

/// Seconds per measurement, after loopd-bench's 1 s warm-up (iperf3 omits its first second
/// with `-O 1` for the same reason).
const SECS: u64 = 2;
/// Alternations of each pair; the median damps one-off interference.
const ROUNDS: usize = 9;
/// Streams (iperf3 `-P`) and connections (loopd-bench `-c`).
const STREAMS: usize = 4;
const MIB: f64 = 1024.0 * 1024.0;

/// The iperf3 binary: found, or installed from Debian's packages.
fn iperf3() -> Result<(), String> {
    let found = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found("iperf3") {
        return Ok(());
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "iperf3"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed && found("iperf3") {
        Ok(())
    } else {
        Err("iperf3 is not installed and `apt-get install -y iperf3` failed".into())
    }
}

/// A free TCP port on loopback (iperf3 needs a port number up front).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An iperf3 server pinned to CPU 0.
struct Iperf3Server {
    child: std::process::Child,
    port: u16,
}

impl Iperf3Server {
    fn start() -> Iperf3Server {
        let port = free_port();
        let child = Command::new("taskset")
            .args(["-c", "0", "iperf3", "-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s");
        let server = Iperf3Server { child, port };
        // Ready once it accepts a connection; iperf3 ignores a control connection that
        // closes before saying anything.
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "iperf3 -s did not start"
            );
            std::thread::sleep(Duration::from_millis(20)); // polling for the port to open
        }
        server
    }

    /// One client run pinned to CPU 1 with `extra` flags; MiB/s received, and sent when the
    /// run goes both ways.
    fn run(&self, extra: &[&str]) -> (f64, f64) {
        let out = Command::new("taskset")
            .args(["-c", "1", "iperf3", "-c", "127.0.0.1", "-J", "-O", "1"])
            .args(["-p", &self.port.to_string()])
            .args(["-t", &(SECS + 1).to_string(), "-P", &STREAMS.to_string()])
            .args(extra)
            .output()
            .expect("run iperf3 -c");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "iperf3 printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let end = &v["end"];
        let rate = |key: &str| end[key]["bits_per_second"].as_f64().unwrap_or(0.0) / 8.0 / MIB;
        (rate("sum_received"), rate("sum_received_bidir_reverse"))
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One loopd-bench run against `target`, verified; MiB/s sent and received.
fn bench(target: SocketAddr, mode: Mode, size: usize, expect: Option<Expect>) -> (f64, f64) {
    let mut cfg = BenchConfig::new(target);
    cfg.mode = mode;
    cfg.connections = STREAMS;
    cfg.size = size;
    cfg.expect = expect;
    cfg.stop = Stop::After(Duration::from_secs(SECS));
    let report = loopd_bench::run(&cfg, |_| {}).expect("bench run");
    if let Err(why) = report.verdict() {
        panic!("the run failed: {why}\n{report}");
    }
    (
        report.rates.mib_per_sec_sent,
        report.rates.mib_per_sec_received,
    )
}

fn addr_of(server: &Server, service: &str) -> SocketAddr {
    server
        .addrs()
        .into_iter()
        .find(|(s, _)| s == service)
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("loopd serves no {service}"))
}

fn main() {
    if let Err(why) = iperf3() {
        eprintln!("bulk bench: {why}");
        std::process::exit(1);
    }
    let loopd = start_loopd(
        Some(0),
        &[
            "-l",
            "discard=127.0.0.1:0",
            "-l",
            "chargen=127.0.0.1:0",
            "-q",
        ],
    );
    let (echo, discard, chargen) = (
        addr_of(&loopd, "echo"),
        addr_of(&loopd, "discard"),
        addr_of(&loopd, "chargen"),
    );
    let wide = start_loopd(
        Some(0),
        &["-l", "discard=127.0.0.1:0", "--tcp-rcvbuf", "4MiB", "-q"],
    );
    let wide_discard = addr_of(&wide, "discard");
    let iperf = Iperf3Server::start();
    pin_current_thread(1).expect("pin the client to CPU 1");

    let mut samples: [[Vec<f64>; 2]; 4] = Default::default();
    for round in 1..=ROUNDS {
        let up = (
            iperf.run(&[]).0,
            bench(discard, Mode::Send, 128 * 1024, None).0,
        );
        let down = (
            iperf.run(&["-R"]).0,
            bench(chargen, Mode::Recv, 64, Some(Expect::Chargen)).1,
        );
        let both_ways = {
            let (rx, tx) = iperf.run(&["--bidir"]);
            let (sent, received) = bench(echo, Mode::Echo, 64 * 1024, None);
            (rx + tx, sent + received)
        };
        let wide_up = (
            iperf.run(&["-w", "4M"]).0,
            bench(wide_discard, Mode::Send, 128 * 1024, None).0,
        );
        for (k, (a, b)) in [up, down, both_ways, wide_up].into_iter().enumerate() {
            samples[k][0].push(a);
            samples[k][1].push(b);
        }
        eprintln!(
            "  round {round}: upload {:.0} vs {:.0}, download {:.0} vs {:.0}, both ways {:.0} vs {:.0}, upload 4 MiB buffers {:.0} vs {:.0} MiB/s (iperf3 vs loopd)",
            up.0, up.1, down.0, down.1, both_ways.0, both_ways.1, wide_up.0, wide_up.1
        );
    }
    println!();
    println!("| path | iperf3 MiB/s | loopd MiB/s | loopd / iperf3 | target |");
    println!("|---|---:|---:|---:|---|");
    let names = [
        "upload: loopd-bench -m send -> loopd discard",
        "download: loopd-bench -m recv --expect chargen <- loopd chargen",
        "both ways: loopd-bench echo, 64 KiB, 4 connections (vs iperf3 --bidir)",
        "upload, 4 MiB receive buffers (loopd --tcp-rcvbuf 4MiB vs iperf3 -w 4M)",
    ];
    let targets = [">= 0.90", ">= 0.90", "", ""];
    for k in 0..4 {
        let (a, b) = (median(samples[k][0].clone()), median(samples[k][1].clone()));
        println!(
            "| {} | {a:.0} | {b:.0} | {:.2} | {} |",
            names[k],
            b / a,
            targets[k]
        );
    }
    println!();
    println!(
        "Servers on CPU 0, clients on CPU 1, {STREAMS} streams or connections; medians of {ROUNDS} alternating rounds of {SECS} s."
    );
}
