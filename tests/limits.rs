//! The connection cap leaves extra clients in the kernel backlog until a slot frees.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// With max 10, the 11th client is served only after one of the ten leaves, and the ten are
/// unaffected throughout.
#[test]
fn eleventh_client_waits_for_a_free_slot() {
    let config = Config {
        max_connections: 10,
        ..Config::default()
    };
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
    let mut config = Config {
        max_connections: CAP,
        ..Config::default()
    };
    config.limits.request_timeout = Some(REQUEST_TIMEOUT);
    // The timed-out connections linger after our FIN; keep that short too.
    config.limits.linger_timeout = Duration::from_secs(1);
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
