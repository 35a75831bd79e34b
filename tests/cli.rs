//! The command line: defaults, flag errors, and help.

mod common;

use std::process::Command;

use common::daemon::Daemon;
use common::*;

fn loopd(args: &[&str]) -> std::process::Output {
    Command::new(daemon::loopd_binary())
        .args(args)
        .output()
        .unwrap()
}

/// With no arguments, loopd serves echo on 127.0.0.1:7007.
#[test]
fn defaults_serve_echo_on_7007() {
    let mut daemon = Daemon::start(&[]);
    let addr = daemon.addr();
    assert_eq!(
        addr,
        "127.0.0.1:7007".parse().unwrap(),
        "{:?}",
        daemon.log()
    );
    let mut c = connect(addr);
    round_trip(&mut c, b"default echo");
    drop(c);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// An unknown flag or a bad value: one clear error line, exit status 2.
#[test]
fn bad_flags_exit_2() {
    for args in [
        &["--bogus"][..],
        &["--idle-timeout", "soon"],
        &["--high-watermark", "lots"],
        &["--listen", "gopher=127.0.0.1:70"],
        &["--listen", "echo=nowhere"],
    ] {
        let out = loopd(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("loopd: error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// Flags that parse but cannot work together: exactly one error line, exit status 2.
#[test]
fn invalid_combination_is_one_line() {
    let out = loopd(&["--low-watermark", "1MiB", "--high-watermark", "256KiB"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("low watermark"), "{stderr}");
}

/// A listen address that cannot be bound is a runtime error (status 1) naming the address.
#[test]
fn unbindable_address_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = format!("echo={}", taken.local_addr().unwrap());
    let out = loopd(&["--listen", &spec, "--max-connections", "8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}

/// --help shows every default with its reason.
#[test]
fn help_shows_defaults_and_reasons() {
    let out = loopd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for default in [
        "[default: echo=127.0.0.1:7007]",
        "[default: 10000]",
        "[default: 300s]",
        "[default: 30s]",
        "[default: 5s]",
        "[default: 10s]",
        "[default: 256KiB]",
        "[default: 64KiB]",
        "[default: 1024]",
        "[default: on]",
        "[default: 60s]",
        "[default: 8KiB]",
        "[default: 1MiB]",
    ] {
        assert!(help.contains(default), "missing {default} in:\n{help}");
    }
    assert!(help.contains("mio's own bind uses 128"));
    // Every flag names its environment variable.
    for env in [
        "[env: LOOPD_LISTEN=",
        "[env: LOOPD_ADMIN=",
        "[env: LOOPD_DRAIN_DELAY=",
        "[env: LOOPD_LOG_FORMAT=",
    ] {
        assert!(help.contains(env), "missing {env} in:\n{help}");
    }
}

/// Runs loopd and expects it to exit by itself within [`PATIENCE`]; a daemon that starts
/// instead is killed and the test fails.
fn loopd_refuses(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(daemon::loopd_binary())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until_or_none(|| child.try_wait().unwrap());
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        exited.is_some(),
        "loopd {args:?} started instead of refusing"
    );
    out
}

/// Polls `probe` for a few seconds.
fn wait_until_or_none<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// Two listeners on port 0 are two distinct ephemeral ports, both logged and both served.
#[test]
fn two_listeners_on_port_zero() {
    let mut daemon = Daemon::start(&["-l", "echo=127.0.0.1:0", "-l", "line=127.0.0.1:0"]);
    let line = daemon.wait_log("listening on ");
    let addrs: Vec<std::net::SocketAddr> = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .filter_map(|spec| spec.split_once('=').and_then(|(_, a)| a.parse().ok()))
        .collect();
    assert_eq!(addrs.len(), 2, "{line}");
    assert_ne!(addrs[0].port(), 0);
    assert_ne!(addrs[0], addrs[1], "{line}");
    let mut echo = connect(addrs[0]);
    round_trip(&mut echo, b"echo here");
    let mut l = connect(addrs[1]);
    std::io::Write::write_all(&mut l, b"PING\n").unwrap();
    assert_eq!(read_n(&mut l, 6), b"PONG\r\n");
    drop((echo, l));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// Sizes that cannot be honoured are refused with one line and status 2 instead of
/// wrapping around in arithmetic later.
#[test]
fn absurd_sizes_are_refused() {
    for args in [
        &["--max-line", "18446744073709551615"][..],
        &["--max-frame", "18446744073709551615"],
        &["--max-frame", "5GiB"],
        &["--high-watermark", "18446744073709551615"],
        &["--read-budget", "18446744073709551615"],
    ] {
        let mut all = vec!["-l", "line=127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = loopd_refuses(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("loopd: error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(&args[0][2..]), "names the flag: {stderr}");
    }
}
