//! loopd-bench as a measuring instrument, end to end: CPU per message checked against
//! /proc, repetitions until a confidence interval is met (or not), standard histogram files
//! read back by the hdrhistogram crate, the send lag of an open loop, and `compare`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

use common::daemon::Daemon;
use common::{wait_until, Scratch, PATIENCE};

/// Runs loopd-bench with `args`, bounded by [`PATIENCE`].
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loopd-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loopd-bench");
    let deadline = Instant::now() + PATIENCE * 2;
    wait_until("loopd-bench to exit", || {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        child.try_wait().unwrap()
    });
    child.wait_with_output().unwrap()
}

fn printed(out: &Output) -> String {
    (String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)).into_owned()
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `--server-metrics` against loopd gives the server's CPU per message; the test measures
/// the same from /proc/PID/stat around the whole run (a little longer than the window, and
/// in 10 ms ticks), and the two agree within that slack.
#[test]
fn server_cpu_per_message_matches_proc() {
    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    let scratch = Scratch::new("cpu");
    let json = scratch.0.join("cpu.json");
    let metrics = format!("http://{admin}/metrics");
    let before = daemon.cpu_time();
    let out = bench(&[
        &echo.to_string(),
        "-c",
        "10",
        "-d",
        "2s",
        "--warmup",
        "0s",
        "--server-metrics",
        &metrics,
        "--system-cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let after = daemon.cpu_time();
    assert!(out.status.success(), "{}", printed(&out));
    let report = read_json(&json);
    let messages = report["messages"].as_f64().unwrap();
    let cpu = &report["cpu"];
    let server = cpu["server"]["us_per_message"].as_f64().unwrap();
    assert!(cpu["server"]["method"]
        .as_str()
        .unwrap()
        .contains("process_cpu_seconds_total scraped from http://"));
    let proc = (after - before).as_secs_f64() * 1e6 / messages;
    // Both counters tick in 10 ms: up to two ticks of error at each end of each figure.
    let slack = 0.04 * 1e6 / messages + 0.15 * proc;
    assert!(
        (server - proc).abs() <= slack,
        "server {server:.3} µs/msg by /metrics, {proc:.3} by /proc (slack {slack:.3})"
    );
    assert!(cpu["client"]["us_per_message"].as_f64().unwrap() > 0.0);
    assert!(cpu["system"]["us_per_message"].as_f64().unwrap() > 0.0);
    assert!(printed(&out).contains("cpu/message  client"));

    // A URL that does not answer is a bad setting, said at once.
    let out = bench(&[
        &echo.to_string(),
        "-d",
        "1s",
        "--server-metrics",
        "http://127.0.0.1:1/metrics",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", printed(&out));
    assert!(printed(&out).contains("--server-metrics"));
}
