//! Several loops (`--threads N`): connections spread over every loop, TCP and UDP on each,
//! the connection cap holds in total, shutdown reaches every loop, a loop that dies takes the
//! process down, and a `SO_REUSEPORT` group cannot be joined by another user.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::*;
use loopd::config::Config;
use loopd::service::{Builtin, ConnInfo, Echo, Handler, Output, Service};
use loopd::{EndpointSpec, Server};

fn threads(n: usize) -> Config {
    let mut config = Config::default();
    config.deployment.threads = n;
    config
}

/// With four loops, 400 connections land on all four (each loop's own accepted counter is
/// non-zero) and every byte echoes back exactly.
#[test]
fn four_loops_share_400_connections() {
    loopd::rlimit::raise_nofile_limit().unwrap();
    let server = TestServer::start(threads(4), &[Builtin::Echo]);
    let mut clients: Vec<TcpStream> = (0..400u64)
        .map(|i| {
            let mut c = connect(server.addr());
            round_trip(&mut c, &pattern(i, 100));
            c
        })
        .collect();
    let per_loop = server.loop_stats();
    assert_eq!(per_loop.len(), 4);
    assert!(
        per_loop.iter().all(|s| s.accepted > 0),
        "a loop got no connection: {:?}",
        per_loop.iter().map(|s| s.accepted).collect::<Vec<_>>()
    );
    assert_eq!(per_loop.iter().map(|s| s.accepted).sum::<u64>(), 400);
    for (i, c) in clients.iter_mut().enumerate() {
        round_trip(c, &pattern(1000 + i as u64, 3000));
    }
}

/// TCP and UDP listeners both work on four loops; each UDP client gets its replies from the
/// address it sent to.
#[test]
fn tcp_and_udp_on_four_loops() {
    let server = TestServer::start(threads(4), &[Builtin::Echo, Builtin::UdpEcho]);
    let mut tcp = connect(server.addrs[0]);
    round_trip(&mut tcp, b"over tcp");
    for i in 0..40u64 {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let d = pattern(i, 200);
        c.send_to(&d, server.addrs[1]).unwrap();
        let mut buf = [0; 512];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(from, server.addrs[1]);
        assert_eq!(&buf[..n], &d[..]);
    }
    let datagrams: Vec<u64> = server.loop_stats().iter().map(|s| s.datagrams_in).collect();
    assert_eq!(datagrams.iter().sum::<u64>(), 40);
    assert!(
        datagrams.iter().filter(|&&n| n > 0).count() >= 2,
        "40 flows all hashed to one loop: {datagrams:?}"
    );
}

/// The cap holds in total: with a cap of 40 over four loops (10 each), 60 clients never
/// have more than 40 served at once; the rest wait in the backlog and are served as others
/// leave.
#[test]
fn cap_holds_in_total_across_loops() {
    let mut config = threads(4);
    config.deployment.max_connections = 40;
    let server = TestServer::start(config, &[Builtin::Echo]);
    let mut waiting: Vec<(u64, TcpStream)> = (0..60u64)
        .map(|i| {
            let mut c = connect(server.addr());
            c.write_all(&pattern(i, 64)).unwrap();
            c.set_nonblocking(true).unwrap();
            (i, c)
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    let mut served = 0;
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} clients never served",
            waiting.len()
        );
        let per_loop = server.loop_stats();
        let active: u64 = per_loop.iter().map(|s| s.active).sum();
        assert!(active <= 40, "{active} active over a cap of 40");
        assert!(per_loop.iter().all(|s| s.active <= 10), "{per_loop:?}");
        // A client whose echo has come back leaves, freeing its slot.
        waiting.retain_mut(|(i, c)| {
            let mut buf = [0; 64];
            match c.read(&mut buf) {
                Ok(64) => {
                    assert_eq!(&buf[..], &pattern(*i, 64)[..]);
                    served += 1;
                    false
                }
                Ok(n) => panic!("partial echo of {n} bytes"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(e) => panic!("client {i}: {e}"),
            }
        });
        thread::sleep(Duration::from_millis(5)); // pacing the polling of 60 sockets
    }
    assert_eq!(served, 60);
    assert!(server.stats().accept_limit_stops >= 1);
}

/// SIGTERM with transfers in flight on every loop of a four-loop daemon: each client gets
/// back a prefix of what it sent, then a clean end; every loop served some; exit status 0.
#[test]
fn sigterm_drains_every_loop() {
    const CLIENTS: usize = 40;
    let mut daemon = Daemon::start(&["-l", "echo=127.0.0.1:0", "--threads", "4"]);
    let addr = daemon.addr();
    let started = Arc::new(std::sync::Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|id| {
            let started = Arc::clone(&started);
            thread::spawn(move || {
                let mut c = connect(addr);
                let data = pattern(id, 2 << 20);
                let mut w = c.try_clone().unwrap();
                let sent = data.clone();
                let writer = thread::spawn(move || {
                    for chunk in sent.chunks(16 * 1024) {
                        if w.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown(Shutdown::Write);
                });
                let mut got = read_n(&mut c, 1024);
                started.wait();
                let mut buf = vec![0; 64 * 1024];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("client {id}: {e} after {} bytes", got.len()),
                    }
                }
                writer.join().unwrap();
                assert!(got[..] == data[..got.len()], "client {id}: not a prefix");
            })
        })
        .collect();
    // Every client has had an echo back: the transfers are in flight.
    started.wait();
    daemon.signal(libc::SIGTERM);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log());
    let exit = daemon.wait_log("exit: Drained");
    let per_loop = exit
        .split("accepted_per_loop=")
        .nth(1)
        .expect("per-loop counts in the exit line");
    let counts: Vec<u64> = per_loop
        .split_whitespace()
        .next()
        .unwrap()
        .split('/')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 4, "{exit}");
    assert!(counts.iter().all(|&n| n > 0), "{exit}");
    assert_eq!(counts.iter().sum::<u64>(), CLIENTS as u64);
}

/// A second signal while four loops drain exits at once with status 1.
#[test]
fn second_signal_stops_every_loop_at_once() {
    let mut daemon = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0",
        "--threads",
        "4",
        "--linger-timeout",
        "60s",
        "--drain-timeout",
        "60s",
    ]);
    let addr = daemon.addr();
    let mut held: Vec<TcpStream> = (0..8u64)
        .map(|i| {
            let mut c = connect(addr);
            round_trip(&mut c, &pattern(i, 10));
            c
        })
        .collect();
    daemon.signal(libc::SIGTERM);
    daemon.wait_log("shutdown requested");
    // The clients never finish, so the drain would wait a minute.
    let mut buf = [0; 1];
    assert_eq!(
        held[0].read(&mut buf).unwrap(),
        0,
        "half-closed while draining"
    );
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit().code(), Some(1));
    held.clear();
}

/// Echo, but a request of `boom` panics: a bug in a user's service.
struct Fragile;

impl Service for Fragile {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        assert!(!input.starts_with(b"boom"), "the service's bug");
        Echo.on_input(input, out)
    }
}

/// A loop that dies takes the server down: the other loop drains (its clients get every
/// echo and a clean end) and `run` returns an error, so the process exits non-zero.
#[test]
fn a_dying_loop_takes_the_server_down() {
    let factory = Arc::new(|_: &ConnInfo<'_>| Box::new(Fragile) as Box<dyn Service>);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = threads(2);
    let endpoint = EndpointSpec::bind(addr, Handler::Stream(factory));
    let server = Server::with_endpoints(&config.deployment, &config.loops, vec![endpoint]).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let running = thread::spawn(move || server.run());
    // Clients on both loops, each with an echo done.
    let mut clients: Vec<TcpStream> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while handle.loop_stats().iter().any(|s| s.accepted == 0) {
        assert!(Instant::now() < deadline, "never reached both loops");
        let mut c = connect(addr);
        round_trip(&mut c, b"fine");
        clients.push(c);
    }
    clients[0].write_all(b"boom").unwrap();
    let result = running.join().expect("run returns instead of panicking");
    let err = result.expect_err("a dead loop is an error");
    assert!(err.to_string().contains("panicked"), "{err}");
    // Every client's connection is over: drained (EOF) or dropped with its loop (reset).
    for mut c in clients {
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
}

/// Runs `f` in a child process as the unprivileged user `nobody`: this test binary,
/// started again with only `test` selected and the `LOOPD_AS_NOBODY` variable set.
fn as_nobody(test: &str, port: u16) -> std::process::ExitStatus {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture"])
        .env("LOOPD_AS_NOBODY", port.to_string());
    // SAFETY: setgid/setuid are async-signal-safe and touch no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status().expect("run the test binary as nobody")
}

/// The part that runs as `nobody`: tries to join loopd's UDP port the way a port thief
/// would, with `SO_REUSEPORT` (and `SO_REUSEADDR`); exits 0 if the kernel refuses.
#[test]
fn reuseport_group_thief() {
    let Ok(port) = std::env::var("LOOPD_AS_NOBODY") else {
        return; // only meaningful as the child of the test below
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_reuse_address(true).unwrap();
    match s.bind(&addr.into()) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => std::process::exit(0),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(()) => panic!("nobody joined loopd's SO_REUSEPORT group"),
    }
}

/// With several loops, loopd's UDP port is shared only among loopd's own sockets: another
/// user cannot join the group, and a second loopd cannot bind the port either.
#[test]
fn reuseport_group_is_loopd_s_own() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root, to start a process as another user"
    );
    let server = TestServer::start(threads(2), &[Builtin::UdpEcho, Builtin::Echo]);
    let status = as_nobody("reuseport_group_thief", server.addrs[0].port());
    assert!(status.success(), "the thief was not refused: {status}");
    for spec in [
        format!("udp-echo={}", server.addrs[0]),
        format!("echo={}", server.addrs[1]),
    ] {
        let config = Config {
            listen: vec![spec.parse().unwrap()],
            ..threads(2)
        };
        let err = match Server::new(&config) {
            Ok(_) => panic!("a second server joined {spec}"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), ErrorKind::AddrInUse, "{spec}: {err}");
    }
    // The group still serves.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.send_to(b"still mine", server.addrs[0]).unwrap();
    let mut buf = [0; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still mine");
}
