//! UDP on the same loop: echo of every datagram size, discard, a TCP and a UDP service on one
//! port, and a flood that is never buffered without bound.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// The largest UDP payload over IPv4: 65,535 minus the IP and UDP headers.
const MAX_IPV4_PAYLOAD: usize = 65_507;

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c
}

/// Echo of 1-byte, 1,400-byte and 65,507-byte datagrams, each whole and to its sender.
#[test]
fn echo_datagram_sizes() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpEcho]);
    let c = client();
    let mut buf = vec![0; 70_000];
    for size in [1, 1400, MAX_IPV4_PAYLOAD] {
        let d = pattern(size as u64, size);
        c.send_to(&d, server.addr()).unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(from, server.addr());
        assert_eq!(n, size);
        assert!(buf[..n] == d[..], "{size}-byte datagram differs");
    }
    let s = server.stats();
    assert_eq!((s.datagrams_in, s.datagrams_out), (3, 3));
}

/// Discard counts datagrams and never replies.
#[test]
fn discard_counts_datagrams() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpDiscard]);
    let c = client();
    for i in 0..100u64 {
        c.send_to(&pattern(i, 100), server.addr()).unwrap();
    }
    let s = server.wait_stats("100 datagrams", |s| s.datagrams_in == 100);
    assert_eq!(s.bytes_in, 100 * 100);
    assert_eq!(s.datagrams_out, 0);
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let err = c.recv_from(&mut [0; 8]).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
}

/// echo over TCP and over UDP on the same port number, one loop.
#[test]
fn tcp_and_udp_share_a_port() {
    // Find a port free for both; another test may take it between probe and bind, so retry.
    let (server, addr) = wait_until("a port free for TCP and UDP", || {
        let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
        let addr: SocketAddr = probe.local_addr().ok()?;
        drop(probe);
        let config = Config {
            listen: vec![
                format!("echo={addr}").parse().unwrap(),
                format!("udp-echo={addr}").parse().unwrap(),
            ],
            ..Config::default()
        };
        let server = loopd::Server::new(&config).ok()?;
        Some((server, addr))
    });
    assert_eq!(server.local_addrs(), vec![addr, addr]);
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());

    let mut tcp = connect(addr);
    round_trip(&mut tcp, b"over tcp");
    let udp = client();
    udp.send_to(b"over udp", addr).unwrap();
    let mut buf = [0; 16];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over udp");
    drop(tcp);
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

/// A flood far beyond what the client reads: replies the client cannot take are lost (UDP
/// has no backpressure), every datagram the server received is either answered or dropped
/// and counted, and the server keeps serving.
#[test]
fn flood_is_never_buffered_without_bound() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpEcho]);
    let flooder = client();
    socket2::SockRef::from(&flooder)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    const SENT: u64 = 20_000;
    let d = pattern(1, 1400);
    for _ in 0..SENT {
        flooder.send_to(&d, server.addr()).unwrap();
    }
    // Every datagram received so far has been answered or dropped and counted: nothing piles
    // up in the server. (The reply queue's byte bound itself is proven with a scripted socket
    // in `udp.rs`: over loopback, sends never block, so the queue is never needed here.)
    let s = server.wait_stats("flood accounted", |s| {
        s.datagrams_in > 0 && s.datagrams_in == s.datagrams_out + s.datagrams_dropped
    });
    assert!(s.datagrams_in <= SENT);

    // The flooder reads what its small buffer kept: far fewer than it sent.
    flooder.set_nonblocking(true).unwrap();
    let mut received = 0u64;
    let mut buf = vec![0; 2048];
    while flooder.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    assert!(
        received < SENT,
        "no loss at all: the client read everything"
    );

    let c = client();
    c.send_to(b"still serving", server.addr()).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still serving");
}

/// RFC 862: a zero-length datagram is answered with a zero-length datagram.
#[test]
fn empty_datagram_is_echoed() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpEcho]);
    let c = client();
    c.send_to(b"", server.addr()).unwrap();
    let mut buf = [0xAA; 8];
    let (n, from) = c.recv_from(&mut buf).expect("an empty reply");
    assert_eq!((n, from), (0, server.addr()));
    c.send_to(b"next", server.addr()).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"next");
}

/// A UDP port loopd holds cannot be bound again, even by a socket that asks for address
/// reuse: no other process can receive loopd's datagrams, and a second loopd on the same
/// port fails to start the way TCP does.
#[test]
fn udp_port_cannot_be_taken_over() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpEcho]);
    let thief = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    thief.set_reuse_address(true).unwrap();
    let err = thief
        .bind(&server.addr().into())
        .expect_err("a second socket bound loopd's UDP port");
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");

    let config = Config {
        listen: vec![format!("udp-echo={}", server.addr()).parse().unwrap()],
        ..Config::default()
    };
    let err = match loopd::Server::new(&config) {
        Ok(_) => panic!("a second loop bound the same UDP port"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
}

/// The rest of the classic UDP set: chargen answers any datagram with 0 to 512 characters
/// of the RFC 864 pattern, daytime with the RFC 3339 line, time with the RFC 868 count.
#[test]
fn chargen_daytime_and_time_over_udp() {
    let server = TestServer::start(
        Config::default(),
        &[Builtin::UdpChargen, Builtin::UdpDaytime, Builtin::UdpTime],
    );
    let c = client();
    let mut buf = vec![0; 2048];
    // The RFC 864 pattern's first 512 characters, computed here: lines of 72 characters of
    // the printable ring, each line one further round, then CRLF.
    let ring: Vec<u8> = (b' '..=b'~').collect();
    let pattern: Vec<u8> = (0..8)
        .flat_map(|line| {
            let mut l: Vec<u8> = (0..72).map(|k| ring[(line + k) % ring.len()]).collect();
            l.extend_from_slice(b"\r\n");
            l
        })
        .collect();
    let mut lengths = std::collections::BTreeSet::new();
    for _ in 0..50 {
        c.send_to(b"x", server.addrs[0]).unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(from, server.addrs[0]);
        assert!(n <= 512, "{n} bytes");
        assert_eq!(buf[..n], pattern[..n]);
        lengths.insert(n);
    }
    assert!(lengths.len() > 5, "the lengths do not vary: {lengths:?}");

    c.send_to(b"", server.addrs[1]).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    let line = std::str::from_utf8(&buf[..n]).unwrap();
    let t = humantime::parse_rfc3339(line.trim_end()).expect("RFC 3339");
    let skew = std::time::SystemTime::now()
        .duration_since(t)
        .unwrap_or_default();
    assert!(skew < Duration::from_secs(5), "{line:?}");
    assert!(line.ends_with("\r\n"));

    c.send_to(b"?", server.addrs[2]).unwrap();
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(n, 4);
    let t = u32::from_be_bytes(buf[..4].try_into().unwrap());
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now_1900 = (unix + (70 * 365 + 17) * 86_400) as u32;
    assert!(now_1900.abs_diff(t) <= 2, "{t} vs {now_1900}");
}

/// On a wildcard bind (`0.0.0.0`, and dual-stack `[::]`), on every loop of a server with two,
/// a reply comes from the address the request was sent to: a client writing to 127.0.0.2
/// hears back from 127.0.0.2, not from whichever loopback address the routing table would
/// pick (127.0.0.1), which a connected client socket or a NAT would drop.
#[test]
fn replies_come_from_the_address_written_to() {
    let daemon = common::daemon::Daemon::start(&[
        "-l",
        "udp-echo=0.0.0.0:0",
        "-l",
        "udp-time=[::]:0",
        "--threads",
        "2",
        "--admin",
        "127.0.0.1:0",
    ]);
    let addrs = daemon.addrs();
    let port = |service: &str| addrs.iter().find(|(s, _)| s == service).unwrap().1.port();
    let admin = daemon.addr_of("admin");
    let echo = daemon.addr_of("udp-echo");
    let served_by = |l: usize| {
        let text = http_get(admin, "/metrics").body;
        let sample = format!(
            "loopd_datagrams_received_total{{service=\"udp-echo\",listener=\"{echo}\",loop=\"{l}\"}}"
        );
        metric(&text, &sample).unwrap_or_else(|| panic!("no {sample} in {text}"))
    };
    let mut buf = [0; 64];
    // Clients on new ports until the kernel's reuseport hash has reached both loops (each
    // client picks one with even odds; 64 all on one loop would be a 1-in-2^63 chance).
    for (k, c) in (0..64).map(|k| (k, client())) {
        if k >= 2 && served_by(0) > 0.0 && served_by(1) > 0.0 {
            break;
        }
        for service in ["udp-echo", "udp-time"] {
            for ip in [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]] {
                let to = SocketAddr::from((ip, port(service)));
                c.send_to(b"which address?", to).unwrap();
                let (_, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!(
                    from, to,
                    "{service}: a reply from another address than the request's"
                );
            }
        }
    }
    assert!(
        served_by(0) > 0.0 && served_by(1) > 0.0,
        "both loops answered"
    );
    // IPv6 on the dual-stack socket.
    let c6 = UdpSocket::bind("[::1]:0").unwrap();
    c6.set_read_timeout(Some(PATIENCE)).unwrap();
    let to: SocketAddr = format!("[::1]:{}", port("udp-time")).parse().unwrap();
    c6.send_to(b"", to).unwrap();
    let (n, from) = c6.recv_from(&mut buf).unwrap();
    assert_eq!((n, from), (4, to));
}
