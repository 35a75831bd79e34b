//! The connection cap leaves extra clients in the kernel backlog until a slot frees; the
//! admin endpoint has an allowance of its own, so the probes answer at the cap.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use loopd::config::{Config, ADMIN_CONNECTIONS};
use loopd::service::Builtin;
use loopd::stats::Snapshot;

/// With max 10, the 11th client is served only after one of the ten leaves, and the ten are
/// unaffected throughout.
#[test]
fn eleventh_client_waits_for_a_free_slot() {
    let mut config = Config::default();
    config.deployment.max_connections = 10;
    let server = TestServer::start(config, &[Builtin::Echo]);
    let mut ten: Vec<_> = (0..10u64)
        .map(|i| {
            let mut c = connect(server.addr());
            round_trip(&mut c, &pattern(i, 100));
            c
        })
        .collect();
    server.wait_stats("ten accepted", |s| s.accepted == 10 && s.active == 10);

    // The kernel completes the handshake (backlog), so connect and write succeed.
    let mut eleventh = connect(server.addr());
    eleventh.write_all(b"waiting in line").unwrap();

    // Every one of the ten still gets served; each round trip is a full loop turn after the
    // eleventh arrived.
    for (i, c) in ten.iter_mut().enumerate() {
        round_trip(c, &pattern(100 + i as u64, 1000));
    }
    let s = server.stats();
    assert_eq!(
        s.accepted, 10,
        "an 11th connection was accepted above the cap"
    );
    assert!(s.accept_limit_stops >= 1);
    eleventh
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0; 64];
    match eleventh.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("11th client was served above the cap: {other:?}"),
    }

    // One of the ten leaves: the eleventh is accepted and served.
    drop(ten.pop());
    eleventh.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_n(&mut eleventh, 15), b"waiting in line");
    assert_eq!(server.stats().accepted, 11);
    for (i, c) in ten.iter_mut().enumerate() {
        round_trip(c, &pattern(200 + i as u64, 10));
    }
}

/// At a cap of 50, fifty clients trickling one byte a second into the line service cannot
/// hold every slot: each partial request is closed at the request timeout, and a new client
/// is served within that timeout plus a margin.
#[test]
fn tricklers_cannot_hold_the_cap() {
    const CAP: usize = 50;
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
    let mut config = Config::default();
    config.deployment.max_connections = CAP;
    config.loops.limits.request_timeout = Some(REQUEST_TIMEOUT);
    // The timed-out connections linger after our FIN; keep that short too.
    config.loops.limits.linger_timeout = Duration::from_secs(1);
    let server = TestServer::start(config, &[Builtin::Line]);
    let mut tricklers: Vec<_> = (0..CAP).map(|_| connect(server.addr())).collect();
    for t in &mut tricklers {
        t.write_all(b"P").unwrap();
    }
    server.wait_stats("the cap is full", |s| s.active == CAP as u64);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            // One byte a second each, bounded by PATIENCE.
            let until = std::time::Instant::now() + PATIENCE;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < until
            {
                for t in &mut tricklers {
                    let _ = t.write_all(b"I"); // fails once the server closed it
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let started = std::time::Instant::now();
    let mut c = connect(server.addr());
    c.write_all(b"PING\n").unwrap();
    assert_eq!(read_n(&mut c, 6), b"PONG\r\n");
    let waited = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickle.join().unwrap();
    assert!(
        waited < REQUEST_TIMEOUT + Duration::from_secs(10),
        "served only after {waited:?}"
    );
    let s = server.stats();
    assert!(s.closed_request_timeout >= 1, "{s}");
}

/// At a cap of 50 filled by fifty clients trickling one byte a second into the line service,
/// with `--request-timeout 2s` and the default 5 s linger timeout, a new client is served
/// within 3 s: a connection closed by the request timeout has no reply to protect, so it
/// gives its slot back at once instead of lingering while its peer keeps trickling.
#[test]
fn timed_out_tricklers_free_their_slots_at_once() {
    const CAP: usize = 50;
    let mut config = Config::default();
    config.deployment.max_connections = CAP;
    config.loops.limits.request_timeout = Some(Duration::from_secs(2));
    let server = TestServer::start(config, &[Builtin::Line]);
    let mut tricklers: Vec<_> = (0..CAP).map(|_| connect(server.addr())).collect();
    for t in &mut tricklers {
        t.write_all(b"P").unwrap();
    }
    server.wait_stats("the cap is full", |s| s.active == CAP as u64);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            // One byte a second each, bounded by PATIENCE; a write fails once the server has
            // closed that connection.
            let until = Instant::now() + PATIENCE;
            let mut next = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                if Instant::now() >= next {
                    for t in &mut tricklers {
                        let _ = t.write_all(b"I");
                    }
                    next += Duration::from_secs(1);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let mut c = connect(server.addr());
    c.write_all(b"PING\n").unwrap();
    assert_eq!(read_n(&mut c, 6), b"PONG\r\n");
    let waited = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickle.join().unwrap();
    assert!(
        waited < Duration::from_secs(3),
        "a new client was served only after {waited:?}"
    );
    let s = server.wait_stats("every trickler closed", |s| {
        s.closed_request_timeout == CAP as u64
    });
    assert_eq!(s.closed_linger_timeout, 0, "{s}");
}

/// A server serving echo and the admin endpoint on ephemeral loopback ports, with at most
/// `cap` client connections.
fn echo_and_admin(cap: usize) -> (TestServer, SocketAddr) {
    let mut config = Config {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    config.deployment.max_connections = cap;
    let server = TestServer::start(config, &[Builtin::Echo]);
    let admin = server.addrs[1];
    (server, admin)
}

/// The admin endpoint's own counters.
fn admin_stats(server: &TestServer) -> Snapshot {
    let endpoints = server.handle.loops()[0].endpoints();
    let admin = endpoints.iter().find(|e| e.service == "admin").unwrap();
    admin.stats.snapshot()
}

/// Sends `GET path` on `c` and reads the response to its end, failing after `limit`.
fn get_within(c: &mut TcpStream, path: &str, limit: Duration) -> HttpResponse {
    c.set_read_timeout(Some(limit)).unwrap();
    c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut reply = Vec::new();
    if let Err(e) = c.read_to_end(&mut reply) {
        panic!("{path} not answered within {limit:?} ({e}): got {reply:?}");
    }
    parse_response(&reply)
}

/// With the client cap filled by clients that never send, the probes still answer:
/// `/healthz` within 100 ms, `/readyz` with 200 (a full server is not a draining one: new
/// clients wait in the backlog), and `/metrics`.
#[test]
fn probes_answer_at_the_cap() {
    const CAP: usize = 2;
    let (server, admin) = echo_and_admin(CAP);
    let silent: Vec<_> = (0..CAP).map(|_| connect(server.addr())).collect();
    server.wait_stats("the cap is full", |s| s.active == CAP as u64);

    let started = Instant::now();
    let mut probe = connect(admin);
    let health = get_within(&mut probe, "/healthz", Duration::from_secs(2));
    let waited = started.elapsed();
    assert_eq!(health.status, 200);
    assert!(
        waited < Duration::from_millis(100),
        "/healthz answered only after {waited:?}"
    );
    assert_eq!(
        http_get(admin, "/readyz").status,
        200,
        "full is not draining"
    );
    let metrics = http_get(admin, "/metrics");
    assert_eq!(metrics.status, 200);
    let echo = format!("service=\"echo\",listener=\"{}\"", server.addr());
    assert_eq!(
        metric(
            &metrics.body,
            &format!("loopd_connections_active{{{echo}}}")
        ),
        Some(CAP as f64)
    );
    // The clients' cap still holds: a third client waits in the backlog.
    let mut third = connect(server.addr());
    third.write_all(b"waiting").unwrap();
    let mut c = connect(admin);
    assert_eq!(get_within(&mut c, "/healthz", PATIENCE).status, 200);
    assert_eq!(
        server.stats().accepted - admin_stats(&server).accepted,
        CAP as u64,
        "a client was accepted above the cap"
    );
    drop(silent);
    assert_eq!(read_n(&mut third, 7), b"waiting");
}

/// Admin connections have an allowance of their own, and it is bounded: beyond it they wait
/// in the backlog like clients beyond the cap, while clients are served; when one admin
/// connection leaves, the waiting one is answered.
#[test]
fn admin_allowance_is_bounded() {
    let (server, admin) = echo_and_admin(100);
    let mut held: Vec<_> = (0..ADMIN_CONNECTIONS).map(|_| connect(admin)).collect();
    wait_until("the admin allowance is full", || {
        (admin_stats(&server).active == ADMIN_CONNECTIONS as u64).then_some(())
    });
    let mut extra = connect(admin);
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Clients are served meanwhile; each round trip is a full loop turn after the extra
    // admin connection arrived.
    let mut client = connect(server.addr());
    for i in 0..3 {
        round_trip(&mut client, &pattern(i, 100));
    }
    assert_eq!(
        admin_stats(&server).accepted,
        ADMIN_CONNECTIONS as u64,
        "an admin connection was accepted beyond the allowance"
    );
    extra
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match extra.read(&mut [0; 64]) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("answered beyond the allowance: {other:?}"),
    }
    drop(held.pop());
    let mut reply = Vec::new();
    extra.set_read_timeout(Some(PATIENCE)).unwrap();
    extra.read_to_end(&mut reply).unwrap();
    assert_eq!(parse_response(&reply).status, 200);
}
