//! Running the loopd-bench binary from its tests: bounded in time, output kept.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

use super::common::{wait_until, PATIENCE};

/// Runs loopd-bench with `args`; killed if it outlives twice [`PATIENCE`].
pub fn bench(args: &[&str]) -> Output {
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

/// Everything it printed: the summary or table, and any error.
pub fn printed(out: &Output) -> String {
    (String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)).into_owned()
}

/// A JSON file it wrote.
pub fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Runs loopd-bench against `target` with `--json -`, a warm-up of `warmup`, and `args`: its
/// exit code, its JSON report (all of standard output, with `--json -`) and its standard
/// error. A panic in it fails the test.
pub fn bench_json_warmup(target: SocketAddr, warmup: &str, args: &[&str]) -> (i32, Value, String) {
    let target = target.to_string();
    let mut all = vec![target.as_str(), "--json", "-", "--warmup", warmup];
    all.extend_from_slice(args);
    let out = bench(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "loopd-bench panicked: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {stderr}"));
    (out.status.code().expect("exit code"), report, stderr)
}

/// [`bench_json_warmup`] with no warm-up.
pub fn bench_json(target: SocketAddr, args: &[&str]) -> (i32, Value, String) {
    bench_json_warmup(target, "0s", args)
}

/// The report's errors of `kind`.
pub fn error(report: &Value, kind: &str) -> u64 {
    report["errors"][kind].as_u64().unwrap_or(0)
}

/// The report's errors of every kind.
pub fn errors(report: &Value) -> u64 {
    report["errors"]
        .as_object()
        .expect("an errors object")
        .values()
        .map(|v| v.as_u64().expect("a count"))
        .sum()
}
