//! Graceful shutdown of the `loopd` process: SIGTERM drains, a second signal exits at once.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::daemon::Daemon;
use common::*;

/// SIGTERM during transfers: each client gets back a prefix of what it sent — every byte the
/// server accepted, echoed before its FIN — then a clean EOF; the process exits 0.
#[test]
fn sigterm_drains_every_accepted_byte() {
    let mut daemon = Daemon::start(&["--listen", "echo=127.0.0.1:0"]);
    let addr = daemon.addr();
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 8 << 20;
    let received: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CLIENTS).map(|_| AtomicUsize::new(0)).collect());
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|id| {
            let received = Arc::clone(&received);
            let mut c = connect(addr);
            let data = pattern(500 + id, PER_CLIENT);
            let mut w = c.try_clone().unwrap();
            let sent = data.clone();
            let writer = thread::spawn(move || {
                for chunk in sent.chunks(16 * 1024) {
                    w.write_all(chunk).expect("write during drain");
                }
                w.shutdown(Shutdown::Write).unwrap();
            });
            thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = vec![0; 64 * 1024];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            received[id as usize].fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => panic!("client {id}: {e} after {} bytes", got.len()),
                    }
                }
                writer.join().unwrap();
                assert!(!got.is_empty(), "client {id} got nothing");
                assert!(
                    got[..] == data[..got.len()],
                    "client {id}: echo is not a prefix"
                );
                got.len()
            })
        })
        .collect();
    // Every client is mid-transfer when the signal arrives.
    wait_until("transfers under way", || {
        received
            .iter()
            .all(|r| r.load(Ordering::Relaxed) >= 256 * 1024)
            .then_some(())
    });
    daemon.signal(libc::SIGTERM);
    let echoed: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{:?}", daemon.log());

    // The exit line's counters: everything handed to echo was written back.
    let exit = daemon.wait_log("exit: Drained");
    let counter = |key: &str| -> usize {
        let field = exit
            .split_whitespace()
            .find(|f| f.starts_with(&format!("{key}=")))
            .unwrap();
        field[key.len() + 1..].parse().unwrap()
    };
    assert_eq!(counter("bytes_in"), counter("bytes_out"));
    assert_eq!(counter("bytes_out"), echoed);
    assert_eq!(counter("closed_forced"), 0);
}

/// A daemon whose drain waits a minute for lingering clients, so a test controls when it ends.
fn patient_daemon() -> Daemon {
    Daemon::start(&[
        "--listen",
        "echo=127.0.0.1:0",
        "--linger-timeout",
        "60s",
        "--drain-timeout",
        "60s",
    ])
}

/// A second signal while draining exits at once with status 1.
#[test]
fn second_signal_exits_immediately() {
    let mut daemon = patient_daemon();
    // A client that never finishes keeps the drain waiting (lingering) for a minute.
    let mut c = connect(daemon.addr());
    round_trip(&mut c, b"hold");
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("shutdown requested");
    let mut buf = [0; 1];
    assert_eq!(
        c.read(&mut buf).unwrap(),
        0,
        "server half-closed while draining"
    );
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit().code(), Some(1));
}

/// After SIGTERM the listener is closed: new clients are refused rather than queued.
#[test]
fn no_new_connections_while_draining() {
    let mut daemon = patient_daemon();
    let addr = daemon.addr();
    let mut held = connect(addr);
    round_trip(&mut held, b"x");
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("shutdown requested");
    let err = std::net::TcpStream::connect(addr).expect_err("connected while draining");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(held);
    assert_eq!(daemon.wait_exit().code(), Some(0));
}

/// SIGTERM while clients are still connecting, many times over: the loop never indexes a
/// listener it closed in the same poll batch; every round drains and exits 0.
#[test]
fn sigterm_during_connect_flood_drains() {
    const ROUNDS: usize = 12;
    const FLOODERS: usize = 4;
    /// Bound on each flooder's connections, should the daemon never stop.
    const MAX_CONNECTS: usize = 20_000;
    for round in 0..ROUNDS {
        let mut daemon = Daemon::start(&["--listen", "echo=127.0.0.1:0", "--drain-timeout", "5s"]);
        let addr = daemon.addr();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let flooders: Vec<_> = (0..FLOODERS)
            .map(|_| {
                let (stop, made) = (Arc::clone(&stop), Arc::clone(&made));
                thread::spawn(move || {
                    for _ in 0..MAX_CONNECTS {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // Refused once the listener closes: that is the point of the test. A
                        // SYN dropped by a full backlog would retry after a second; the
                        // timeout keeps the flood itself from dragging on.
                        let timeout = std::time::Duration::from_millis(100);
                        if std::net::TcpStream::connect_timeout(&addr, timeout).is_ok() {
                            made.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        wait_until("the flood under way", || {
            (made.load(Ordering::Relaxed) >= 200).then_some(())
        });
        daemon.signal(libc::SIGTERM);
        let status = daemon.wait_exit();
        stop.store(true, Ordering::Relaxed);
        flooders.into_iter().for_each(|f| f.join().unwrap());
        let log = daemon.log().join("\n");
        assert_eq!(status.code(), Some(0), "round {round}: {log}");
        assert!(!log.contains("panicked"), "round {round}: {log}");
        assert!(log.contains("exit: Drained"), "round {round}: {log}");
    }
}

/// SIGHUP does not stop the daemon: it logs the counters and keeps serving; SIGTERM still
/// drains and exits 0.
#[test]
fn sighup_logs_and_keeps_serving() {
    let mut daemon = Daemon::start(&["--listen", "echo=127.0.0.1:0"]);
    let addr = daemon.addr();
    let mut c = connect(addr);
    round_trip(&mut c, b"before");
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_log("SIGHUP");
    assert!(line.contains("accepted=1"), "{line}");
    round_trip(&mut c, b"after the hang-up");
    let mut d = connect(addr);
    round_trip(&mut d, b"a new client too");
    drop((c, d));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log());
}
