//! Echo (RFC 862) is byte-exact, whatever the write sizes and however many clients.

mod common;

use std::io::Read;
use std::net::Shutdown;
use std::thread;

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// One byte at a time, each echoed before the next is sent.
#[test]
fn one_byte_writes() {
    let server = TestServer::echo();
    let mut c = connect(server.addr());
    for b in pattern(1, 2000) {
        round_trip(&mut c, &[b]);
    }
}

/// An 8 MiB burst written at once (by a second thread, so neither side can deadlock on full
/// buffers) comes back identical.
#[test]
fn eight_mib_burst() {
    let server = TestServer::echo();
    let mut c = connect(server.addr());
    let data = pattern(2, 8 << 20);
    let got = exchange(&mut c, &data, data.len());
    assert!(
        got == data,
        "echo differs (got {} of {} bytes)",
        got.len(),
        data.len()
    );
}

/// Many clients at once each get exactly their own bytes back.
#[test]
fn many_clients_at_once() {
    let server = TestServer::echo();
    let addr = server.addr();
    let clients: Vec<_> = (0..64u64)
        .map(|id| {
            thread::spawn(move || {
                let mut c = connect(addr);
                let data = pattern(1000 + id, 64 * 1024 + id as usize * 17);
                let got = exchange(&mut c, &data, 1500);
                assert!(got == data, "client {id}: wrong echo");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let s = server.wait_stats("all 64 closed", |s| s.closed_peer == 64);
    assert_eq!(s.bytes_in, s.bytes_out);
    assert_eq!(s.active, 0);
}

/// IPv6 loopback works like IPv4.
#[test]
fn ipv6_loopback() {
    let config = Config {
        listen: vec!["echo=[::1]:0".parse().unwrap()],
        ..Config::default()
    };
    let server = loopd::Server::new(&config).expect("IPv6 loopback must be available");
    let addr = server.local_addrs()[0];
    assert!(addr.is_ipv6());
    let handle = server.handle();
    let t = thread::spawn(move || server.run());
    let mut c = connect(addr);
    round_trip(&mut c, b"over v6");
    drop(c);
    handle.shutdown();
    t.join().unwrap().unwrap();
}

/// A client that sends nothing and closes costs nothing and closes cleanly.
#[test]
fn connect_and_close_without_data() {
    let server = TestServer::start(Config::default(), &[Builtin::Echo]);
    let mut c = connect(server.addr());
    c.shutdown(Shutdown::Write).unwrap();
    let mut buf = [0; 1];
    assert_eq!(c.read(&mut buf).unwrap(), 0, "FIN answered with FIN");
    server.wait_stats("closed", |s| s.closed_peer == 1 && s.active == 0);
}
