//! Faults stay local: resets leave the server healthy, and heavy churn never misroutes a
//! byte to a connection that reused a slot.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// Sends RST instead of FIN when dropped.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// A client that resets mid-transfer leaves the server healthy with no connection left.
#[test]
fn reset_mid_transfer() {
    let server = TestServer::echo();
    for i in 0..20u64 {
        let mut c = connect(server.addr());
        c.write_all(&pattern(i, 512 * 1024)).unwrap_or(());
        reset(c);
    }
    let s = server.wait_stats("all closed", |s| s.active == 0 && s.closed() == 20);
    assert_eq!(s.closed_error, 0, "resets are not errors: {s}");
    let mut c = connect(server.addr());
    round_trip(&mut c, b"still healthy");
}

/// 10,000 connect-then-close cycles beside verified echo traffic: every byte returns to the
/// connection that sent it.
#[test]
fn churn_never_misroutes() {
    let server = TestServer::start(Config::default(), &[Builtin::Echo]);
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));

    let talkers: Vec<_> = (0..8u64)
        .map(|id| {
            let stop = Arc::clone(&stop);
            let rounds = Arc::clone(&rounds);
            thread::spawn(move || {
                let mut c = connect(addr);
                let mut seq = 0u64;
                // Bounded: at most 1,000,000 round trips even if churn never finishes.
                while !stop.load(Ordering::Relaxed) && seq < 1_000_000 {
                    let msg = pattern(id << 32 | seq, 1 + (seq as usize * 7) % 700);
                    round_trip(&mut c, &msg);
                    rounds.fetch_add(1, Ordering::Relaxed);
                    seq += 1;
                }
            })
        })
        .collect();

    let churners: Vec<_> = (0..4u64)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..2_500u64 {
                    let mut c = connect(addr);
                    if i % 10 == 0 {
                        // Some churners talk before closing, so their slots hold state.
                        round_trip(&mut c, &pattern(1 << 40 | t << 20 | i, 64));
                    }
                    if i % 3 == 0 {
                        reset(c);
                    } else {
                        c.shutdown(Shutdown::Both).ok();
                    }
                }
            })
        })
        .collect();
    for c in churners {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in talkers {
        t.join().unwrap();
    }
    assert!(rounds.load(Ordering::Relaxed) > 0);
    let s = server.wait_stats("all closed", |s| s.active == 0);
    assert_eq!(s.accepted, 10_000 + 8);
    assert_eq!(s.closed_error, 0, "{s}");
    let mut probe = [0u8; 1];
    // The server is still serving.
    let mut c = connect(addr);
    round_trip(&mut c, b"ok");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.read(&mut probe).unwrap(), 0);
}
