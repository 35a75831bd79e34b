//! Descriptor exhaustion: accept pauses on a timer instead of spinning, and clients waiting
//! in the backlog are served as others leave.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::daemon::{constrain_descriptors, Daemon};
use common::*;

/// Tries to read one echoed byte without blocking.
fn echoed(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let got = match c.read(&mut b) {
        Ok(1) => true,
        Ok(_) => panic!("unexpected EOF"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("read: {e}"),
    };
    c.set_nonblocking(false).unwrap();
    got
}

/// Out of descriptors, loopd uses under 10% of a core and serves the waiting clients once
/// others leave.
#[test]
fn exhausted_descriptors_pause_accept() {
    // 64 descriptors, 31 of them taken by something else: the connection limit derived from
    // 64 (32) is more than the descriptors really left, so accept() meets EMFILE.
    let daemon = Daemon::start_with(&["--listen", "echo=127.0.0.1:0"], |cmd| {
        constrain_descriptors(cmd, 64, 31)
    });
    let addr = daemon.addr();
    assert!(
        daemon.logged("lowering max connections"),
        "{:?}",
        daemon.log()
    );

    // Connect one client at a time until one is left in the backlog by EMFILE.
    let mut served = Vec::new();
    let mut waiting = loop {
        assert!(served.len() < 64, "never ran out of descriptors");
        let mut c = connect(addr);
        c.write_all(b"x").unwrap();
        let got_echo = wait_until("echo or accept pause", || {
            if echoed(&mut c) {
                Some(true)
            } else {
                daemon.logged("accept failed").then_some(false)
            }
        });
        if !got_echo {
            break vec![c];
        }
        served.push(c);
    };
    assert!(daemon
        .wait_log("accept failed")
        .contains("Too many open files"));
    for _ in 0..4 {
        let mut c = connect(addr);
        c.write_all(b"y").unwrap();
        waiting.push(c);
    }

    // Measure CPU while exhausted: a busy accept loop would burn the whole core.
    let window = Duration::from_secs(2);
    let cpu_before = daemon.cpu_time();
    let start = Instant::now();
    std::thread::sleep(window); // a measurement window, not synchronisation
    let used = daemon.cpu_time() - cpu_before;
    let share = used.as_secs_f64() / start.elapsed().as_secs_f64();
    eprintln!(
        "CPU while exhausted: {:.2}% of a core over {window:?}",
        share * 100.0
    );
    assert!(
        share < 0.10,
        "loopd used {:.1}% of a core while exhausted",
        share * 100.0
    );

    // Free descriptors: every waiting client is served.
    served.truncate(served.len() - waiting.len());
    for c in waiting.iter_mut() {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b)
            .expect("waiting client served after others left");
    }
    // And those that stayed were never disturbed.
    for c in served.iter_mut() {
        round_trip(c, b"still here");
    }
}
