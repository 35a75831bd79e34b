//! Deadlines: idle connections are closed, stalled writers are aborted, and a server-side
//! close lingers so the client reads everything before any reset.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// A connection with no traffic is closed at the idle timeout; an active one is not.
#[test]
fn idle_timeout_closes_quiet_connections() {
    let mut config = Config::default();
    config.loops.limits.idle_timeout = Some(Duration::from_millis(300));
    let server = TestServer::start(config, &[Builtin::Echo]);
    let mut quiet = connect(server.addr());
    round_trip(&mut quiet, b"hello");
    let mut buf = [0; 8];
    assert_eq!(quiet.read(&mut buf).unwrap(), 0, "idle connection gets FIN");
    let s = server.wait_stats("idle close counted", |s| s.closed_idle == 1);
    assert_eq!(s.active, 0);
}

/// A client that writes but never reads is aborted at the write-stall timeout.
#[test]
fn write_stall_aborts_non_reader() {
    let mut config = Config::default();
    config.loops.limits.write_stall_timeout = Some(Duration::from_millis(300));
    let server = TestServer::start(config, &[Builtin::Echo]);
    let mut c = connect(server.addr());
    c.set_nonblocking(true).unwrap();
    let chunk = vec![0xAB; 64 * 1024];
    // Fill every buffer on the way; the bound only matters if the server never pushes back.
    let mut total = 0usize;
    // The client may meet the reset in a write (which consumes the socket error) or later in
    // a read; either way it must be a reset.
    let mut write_error = None;
    server.wait_stats("write-stall abort", |s| {
        if write_error.is_none() {
            match c.write(&chunk) {
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => write_error = Some(e.kind()),
            }
            assert!(total < 1 << 30, "no backpressure");
        }
        s.closed_write_stall == 1 && s.active == 0
    });
    assert_eq!(server.stats().closed_peer, 0);
    let outcome = match write_error {
        Some(kind) => Err(kind),
        None => {
            c.set_nonblocking(false).unwrap();
            let mut buf = vec![0; 1 << 20];
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(_) => continue,
                    Err(e) => break Err(e.kind()),
                }
            }
        }
    };
    assert_eq!(
        outcome,
        Err(ErrorKind::ConnectionReset),
        "abort must be a reset, not a FIN"
    );
}

/// Daytime closes on its own while the client is still sending: thanks to lingering close
/// the client reads the whole line and a clean EOF, never a reset first.
#[test]
fn lingering_close_protects_the_reply() {
    let server = TestServer::start(Config::default(), &[Builtin::Daytime]);
    let mut c = connect(server.addr());
    // Data the server will never read before deciding to close: without lingering, closing
    // with it unread makes the kernel send RST, which can discard the line before we read it.
    c.write_all(&vec![b'z'; 256 * 1024]).unwrap();
    server.wait_stats("server FIN sent", |s| s.bytes_out > 0);
    c.write_all(b"still talking").unwrap();
    let got = read_to_eof(&mut c);
    let line = String::from_utf8(got).unwrap();
    assert!(
        line.ends_with("Z\r\n") && line.lines().count() == 1,
        "{line:?}"
    );
    c.shutdown(Shutdown::Write).unwrap();
    let s = server.wait_stats("lingering close finished", |s| s.active == 0);
    assert_eq!(s.closed_server, 1, "{s}");
    assert!(s.bytes_discarded > 0);
}

/// A peer that never sends its FIN is closed at the linger timeout.
#[test]
fn linger_timeout_ends_lingering() {
    let mut config = Config::default();
    config.loops.limits.linger_timeout = Duration::from_millis(200);
    let server = TestServer::start(config, &[Builtin::Daytime]);
    let mut c = connect(server.addr());
    let line = read_to_eof(&mut c);
    assert!(line.ends_with(b"\r\n"));
    let s = server.wait_stats("linger timeout", |s| s.closed_linger_timeout == 1);
    assert_eq!(s.active, 0);
}
