//! Half-close is two halves: the peer's FIN ends its sending, not the conversation.

mod common;

use std::io::Write;
use std::net::Shutdown;

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// 1 MiB then shutdown(Write): exactly 1 MiB comes back, then EOF, never a reset.
#[test]
fn one_mib_then_fin_gets_everything_then_fin() {
    let server = TestServer::echo();
    let mut c = connect(server.addr());
    let data = pattern(7, 1 << 20);
    // Any read error, a reset above all, fails inside `exchange`.
    let got = exchange(&mut c, &data, data.len());
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    let s = server.wait_stats("closed after peer FIN", |s| s.closed_peer == 1);
    assert_eq!(s.closed_reset, 0);
}

/// The half-closed client can still read: the server's FIN only follows the last echo, even
/// when the client reads only after sending everything.
#[test]
fn fin_then_read_later() {
    let server = TestServer::echo();
    let mut c = connect(server.addr());
    c.write_all(b"late reader").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    server.wait_stats("echo written", |s| s.bytes_out == 11);
    assert_eq!(read_to_eof(&mut c), b"late reader");
}

/// Discard answers a FIN with a FIN and nothing else.
#[test]
fn discard_half_close() {
    let server = TestServer::start(Config::default(), &[Builtin::Discard]);
    let mut c = connect(server.addr());
    c.write_all(&[1; 10_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut c).is_empty());
}
