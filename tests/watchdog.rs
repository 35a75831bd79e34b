//! The systemd watchdog vouches for every loop, not just for the process: while one loop is
//! stuck inside a service, loopd stops sending `WATCHDOG=1`, so systemd restarts it; once the
//! loop turns again, the pings resume.
//!
//! A test binary of its own because the service manager's variables (`NOTIFY_SOCKET`,
//! `WATCHDOG_USEC`, `WATCHDOG_PID`) are read from this process's environment.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use loopd::config::Config;
use loopd::service::{ConnInfo, Echo, Handler, Output, Service};
use loopd::{EndpointSpec, Server};

/// Echo, but a request of `hold` blocks the loop until the test says go: a service that
/// never returns, as a bug or a blocking call would.
struct Stuck {
    release: Arc<Mutex<Receiver<()>>>,
}

impl Service for Stuck {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        if input.starts_with(b"hold") {
            let _ = self.release.lock().unwrap().recv();
        }
        Echo.on_input(input, out)
    }
}

/// Counts `WATCHDOG=1` notifications arriving before `until`.
fn watchdogs_until(socket: &UnixDatagram, until: Instant) -> usize {
    let mut seen = 0;
    let mut buf = [0; 512];
    loop {
        let now = Instant::now();
        if now >= until {
            return seen;
        }
        socket.set_read_timeout(Some(until - now)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => seen += usize::from(buf[..n].windows(10).any(|w| w == b"WATCHDOG=1")),
            Err(_) => return seen,
        }
    }
}

/// Waits for `count` `WATCHDOG=1` notifications, failing after `PATIENCE`.
fn wait_for_watchdogs(socket: &UnixDatagram, count: usize) {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = 0;
    while seen < count {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {count} WATCHDOG=1 notifications"
        );
        seen += watchdogs_until(socket, Instant::now() + Duration::from_millis(100));
    }
}

#[test]
fn a_stuck_loop_stops_the_watchdog_pings() {
    let path = std::env::temp_dir().join(format!("loopd-watchdog-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    // Half of 200 ms: the supervisor checks the loops and pings every 100 ms.
    std::env::set_var("NOTIFY_SOCKET", &path);
    std::env::set_var("WATCHDOG_USEC", "200000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());

    let (go, release) = mpsc::channel();
    let release = Arc::new(Mutex::new(release));
    let factory = Arc::new(move |_: &ConnInfo<'_>| {
        Box::new(Stuck {
            release: Arc::clone(&release),
        }) as Box<dyn Service>
    });
    let mut config = Config::default();
    config.deployment.threads = 2;
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let endpoint = EndpointSpec::bind(addr, Handler::Stream(factory));
    let server = Server::with_endpoints(&config.deployment, &config.loops, vec![endpoint]).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let running = thread::spawn(move || server.run());

    // Healthy: the pings come.
    wait_for_watchdogs(&socket, 3);

    // One loop stuck in its service. At most the ping for the probe it answered before it
    // got stuck can still arrive; after that, none while it stays stuck (ten intervals).
    let mut client = connect(addr);
    client.write_all(b"hold").unwrap();
    let deadline = Instant::now() + PATIENCE;
    while handle.stats().bytes_in == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached a loop"
        );
        thread::yield_now();
    }
    let while_stuck = watchdogs_until(&socket, Instant::now() + Duration::from_secs(1));
    assert!(
        while_stuck <= 1,
        "{while_stuck} WATCHDOG=1 while a loop was stuck"
    );

    // Released: the loop answers the next probe and the pings resume.
    go.send(()).unwrap();
    let mut echoed = [0; 4];
    std::io::Read::read_exact(&mut client, &mut echoed).unwrap();
    assert_eq!(&echoed, b"hold");
    wait_for_watchdogs(&socket, 2);

    drop(client);
    handle.shutdown();
    running.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&path);
}
