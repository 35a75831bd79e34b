//! Running the loopd-bench binary from its tests: bounded in time, output kept.

#![allow(dead_code)]

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
