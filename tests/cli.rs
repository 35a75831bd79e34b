//! The command line: defaults, flag errors, and help.

mod common;

use std::process::Command;

use common::daemon::Daemon;
use common::*;

fn loopd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loopd"))
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
}
