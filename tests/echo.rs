//! Echo (RFC 862) is byte-exact, whatever the write sizes and however many clients.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

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

/// A peer that sends TCP urgent data (`MSG_OOB`) in the middle of its stream cannot stall its
/// connection, and loses no byte: a read stops short at the urgent mark with more data behind
/// it, so a short read there does not prove the receive queue empty. The bytes are all
/// queued before the server accepts (the cap of one keeps this client in the backlog until
/// the first leaves), so they arrive under one edge and no later edge would announce the rest.
#[test]
fn urgent_data_cannot_stall_a_connection() {
    let mut config = Config::default();
    config.deployment.max_connections = 1;
    let server = TestServer::start(config, &[Builtin::Echo]);
    let mut first = connect(server.addr());
    round_trip(&mut first, b"holding the only slot");

    let mut c = connect(server.addr());
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"before the mark|").unwrap();
    send_urgent(&c, b'!');
    c.write_all(b"|after the mark").unwrap();
    drop(first); // the slot frees; everything the second client sent is already queued

    let expected = b"before the mark|!|after the mark";
    let mut got = Vec::new();
    let mut buf = [0; 64];
    while got.len() < expected.len() {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "stalled after {:?} ({e}): the bytes behind the urgent mark were never read",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "the urgent byte is part of the stream"
    );

    // And on an established connection, a burst with urgent data in its middle.
    for round in 0..20u8 {
        c.write_all(&[b'a' + round % 26; 100]).unwrap();
        send_urgent(&c, b'0' + round % 10);
        c.write_all(&[b'z'; 100]).unwrap();
        let mut expected = vec![b'a' + round % 26; 100];
        expected.push(b'0' + round % 10);
        expected.extend([b'z'; 100]);
        assert_eq!(read_n(&mut c, expected.len()), expected, "round {round}");
    }
}

/// Sends one byte of TCP urgent data (`send(MSG_OOB)`).
fn send_urgent(c: &std::net::TcpStream, byte: u8) {
    let sent = socket2::SockRef::from(c).send_out_of_band(&[byte]);
    assert_eq!(sent.unwrap(), 1);
}
