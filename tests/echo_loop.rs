//! The loop of `docs/D-the-loop-in-80-lines.md` (`examples/echo_loop.rs`) compiles, runs and
//! keeps its rules on the wire: echo is byte-exact whatever the sizes, a half-close gets every
//! byte and then the FIN, and many clients are served at once.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread;

use common::*;

/// The example, built in this test's profile (a no-op when it is up to date) and started on
/// an ephemeral loopback port; killed when dropped.
struct EchoLoop {
    child: Child,
    addr: SocketAddr,
}

impl EchoLoop {
    fn start() -> EchoLoop {
        // target/<profile>/deps/<test executable>
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--profile", profile])
            .args(["-p", "loopd", "--example", "echo_loop"])
            .status()
            .expect("run cargo to build the example");
        assert!(status.success(), "building examples/echo_loop.rs failed");
        let mut child = Command::new(dir.join("examples").join("echo_loop"))
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the example");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the example's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not an address line: {line:?}"));
        EchoLoop { child, addr }
    }
}

impl Drop for EchoLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Small messages come back one at a time; a 4 MiB burst written while the echo is read
/// comes back whole (partial writes, the high watermark and resuming by reading), and the
/// peer's FIN is answered with ours only after the last byte.
#[test]
fn the_loop_in_80_lines_echoes_and_half_closes() {
    let server = EchoLoop::start();
    let mut c = connect(server.addr);
    for size in [1, 7, 100, 1500] {
        round_trip(&mut c, &pattern(size as u64, size));
    }
    let data = pattern(99, 4 << 20);
    let got = exchange(&mut c, &data, 100_000);
    assert!(
        got == data,
        "echo differs ({} of {} bytes)",
        got.len(),
        data.len()
    );
}

/// Thirty-two clients at once, each with its own bytes: no connection's turn takes another's
/// bytes, and a budget keeps each one moving.
#[test]
fn the_loop_in_80_lines_serves_clients_at_once() {
    let server = EchoLoop::start();
    let addr = server.addr;
    let clients: Vec<_> = (0..32u64)
        .map(|id| {
            thread::spawn(move || {
                let mut c = connect(addr);
                let data = pattern(500 + id, 300_000 + id as usize * 11);
                assert!(exchange(&mut c, &data, 65_536) == data, "client {id}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}
