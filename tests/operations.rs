//! Operating loopd with the real tools: `/metrics` checked by promtool and scraped by a real
//! Prometheus, health and readiness through a drain, bad HTTP that disturbs nothing, systemd
//! socket activation (with `systemd-socket-activate`) and its notifications, a restart that
//! loses no connection, configuration from the environment, JSON log lines.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{loopd_binary, Daemon};
use common::*;

/// `/metrics` counts exactly what a client did — connections, bytes, a reset, an idle
/// timeout, datagrams — and passes `promtool check metrics`.
#[test]
fn metrics_count_what_happened_and_pass_promtool() {
    require("promtool", "prometheus");
    let daemon = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0",
        "-l",
        "udp-echo=127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--idle-timeout",
        "300ms",
    ]);
    let (echo, udp, admin) = (
        daemon.addr_of("echo"),
        daemon.addr_of("udp-echo"),
        daemon.addr_of("admin"),
    );
    const N: u64 = 5;
    const M: usize = 1000;
    for i in 0..N {
        let mut c = connect(echo);
        round_trip(&mut c, &pattern(i, M));
        c.shutdown(Shutdown::Write).unwrap();
        assert!(read_to_eof(&mut c).is_empty());
    }
    let mut r = connect(echo);
    round_trip(&mut r, b"!");
    reset(r);
    let mut idle = connect(echo);
    // The server ends the quiet connection by itself.
    assert_eq!(idle.read(&mut [0; 8]).unwrap(), 0, "idle timeout");
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(PATIENCE)).unwrap();
    for _ in 0..3 {
        u.send_to(b"dgram", udp).unwrap();
        u.recv_from(&mut [0; 16]).unwrap();
    }
    let labels = format!("service=\"echo\",listener=\"{echo}\"");
    let text = wait_until("the closes counted", || {
        let text = http_get(admin, "/metrics").body;
        let closed = |reason: &str| {
            metric(
                &text,
                &format!("loopd_connections_closed_total{{{labels},reason=\"{reason}\"}}"),
            )
        };
        (closed("peer") == Some(N as f64)
            && closed("idle") == Some(1.0)
            && closed("reset") == Some(1.0))
        .then_some(text)
    });
    let at = |sample: &str| metric(&text, sample).unwrap_or_else(|| panic!("{sample} in\n{text}"));
    assert_eq!(
        at(&format!("loopd_connections_accepted_total{{{labels}}}")),
        (N + 2) as f64
    );
    assert_eq!(at(&format!("loopd_connections_active{{{labels}}}")), 0.0);
    // The reset connection's one byte counts too.
    let bytes = (N as usize * M + 1) as f64;
    assert_eq!(
        at(&format!("loopd_received_bytes_total{{{labels}}}")),
        bytes
    );
    assert_eq!(at(&format!("loopd_sent_bytes_total{{{labels}}}")), bytes);
    let udp_labels = format!("service=\"udp-echo\",listener=\"{udp}\"");
    assert_eq!(
        at(&format!("loopd_datagrams_received_total{{{udp_labels}}}")),
        3.0
    );
    assert_eq!(
        at(&format!("loopd_datagrams_sent_total{{{udp_labels}}}")),
        3.0
    );
    assert_eq!(at("loopd_ready"), 1.0);
    assert!(at("process_open_fds") >= 4.0);
    assert!(at("process_resident_memory_bytes") > 0.0);
    assert!(at("process_cpu_seconds_total") >= 0.0);
    assert!(text.contains("loopd_build_info{version=\""), "{text}");

    promtool_accepts(&text);
}

/// Families only a TCP listener can move.
const TCP_ONLY: &[&str] = &[
    "loopd_connections_accepted_total",
    "loopd_connections_active",
    "loopd_connections_closed_total",
    "loopd_discarded_bytes_total",
    "loopd_backpressure_pauses_total",
    "loopd_pending_output_peak_bytes",
    "loopd_accept_pauses_total",
    "loopd_accept_limit_stops_total",
];

/// Families only a UDP endpoint can move.
const UDP_ONLY: &[&str] = &[
    "loopd_datagrams_received_total",
    "loopd_datagrams_sent_total",
    "loopd_datagrams_dropped_total",
    "loopd_datagrams_refused_total",
];

/// Each listener exports only the families that can move for its kind — a TCP listener no
/// datagram counters, a UDP endpoint no connection, close, accept or backpressure counters —
/// and all of those; the set of series is the same on a fresh start, after traffic, and after
/// a restart with the same flags; promtool has nothing to say.
#[test]
fn metrics_export_only_what_can_move_for_each_listener() {
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (echo, udp, admin): (SocketAddr, SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], free_port()).into(),
        ([127, 0, 0, 1], udp_port).into(),
        ([127, 0, 0, 1], free_port()).into(),
    );
    let args = [
        "-l".to_string(),
        format!("echo={echo}"),
        "-l".into(),
        format!("udp-echo={udp}"),
        "--admin".into(),
        admin.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&args);
    daemon.addrs();
    let fresh = series(&http_get(admin, "/metrics").body);
    assert!(
        !fresh
            .iter()
            .any(|(_, labels)| labels.contains("reason=\"proxy\"")),
        "a listener without ,proxy exports closes for PROXY headers"
    );
    for service in ["echo", "admin"] {
        let families = families_of(&fresh, service);
        for name in UDP_ONLY {
            assert!(
                !families.contains(&name.to_string()),
                "{service} exports {name}"
            );
        }
        for name in TCP_ONLY {
            assert!(
                families.contains(&name.to_string()),
                "{service} lacks {name}"
            );
        }
    }
    let families = families_of(&fresh, "udp-echo");
    for name in TCP_ONLY {
        assert!(
            !families.contains(&name.to_string()),
            "udp-echo exports {name}"
        );
    }
    for name in UDP_ONLY {
        assert!(
            families.contains(&name.to_string()),
            "udp-echo lacks {name}"
        );
    }

    let mut c = connect(echo);
    round_trip(&mut c, b"tcp");
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(PATIENCE)).unwrap();
    u.send_to(b"udp", udp).unwrap();
    u.recv_from(&mut [0; 8]).unwrap();
    let text = http_get(admin, "/metrics").body;
    promtool_accepts(&text);
    assert_eq!(series(&text), fresh, "traffic changed the set of series");

    drop(c);
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let daemon = Daemon::start(&args);
    daemon.addrs();
    let restarted = series(&http_get(admin, "/metrics").body);
    assert_eq!(restarted, fresh, "a restart changed the set of series");
}

/// A real Prometheus server scrapes loopd, and its query API returns loopd's accepted
/// connections with the value a client made.
#[test]
fn prometheus_scrapes_loopd() {
    let prometheus = require("prometheus", "prometheus");
    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    for i in 0..4 {
        let mut c = connect(echo);
        round_trip(&mut c, &pattern(i, 10));
    }
    let dir = std::env::temp_dir().join(format!("loopd-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: loopd\n    \
             static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = "/api/v1/query?query=loopd_connections_accepted_total%7Bservice%3D%22echo%22%7D";
    let value = wait_until("Prometheus to scrape loopd", || {
        let body = std::net::TcpStream::connect(web)
            .ok()
            .map(|_| http_get(web, query).body)?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?.first()?.clone();
        result["value"][1].as_str()?.parse::<f64>().ok()
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(value, 4.0);
}

/// With `--drain-delay`, SIGTERM turns `/readyz` to 503 at once while echo goes on serving,
/// old clients and new; the drain comes after the delay, and the process exits 0.
#[test]
fn readyz_turns_at_sigterm_and_traffic_flows_through_the_drain_delay() {
    let mut daemon = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--drain-delay",
        "4s",
    ]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    assert_eq!(http_get(admin, "/readyz").status, 200);
    let mut old = connect(echo);
    round_trip(&mut old, b"before");
    let signalled = Instant::now();
    daemon.signal(libc::SIGTERM);
    wait_until("/readyz at 503", || {
        (http_get(admin, "/readyz").status == 503).then_some(())
    });
    assert!(
        !daemon.logged("drain delay over"),
        "readiness turned only when draining began: {:?}",
        daemon.log()
    );
    assert_eq!(http_get(admin, "/healthz").status, 200, "still healthy");
    // Traffic flows during the delay: the old client, and a new one.
    round_trip(&mut old, b"during the delay");
    let mut new = connect(echo);
    round_trip(&mut new, b"a new client, still served");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "too slow to test the delay"
    );
    // Then the drain: our FIN after every byte.
    drop(new);
    old.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut old).is_empty());
    assert_eq!(daemon.wait_exit().code(), Some(0), "{:?}", daemon.log());
    daemon.wait_log("drain delay over");
}

/// Malformed and oversize requests to the admin endpoint get 400 and 431 and a close;
/// other refusals keep the connection; an echo transfer running alongside loses nothing.
#[test]
fn bad_http_is_refused_without_disturbing_echo() {
    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    let transfer = std::thread::spawn(move || {
        let mut c = connect(echo);
        let data = pattern(7, 4 << 20);
        assert!(exchange(&mut c, &data, 32 * 1024) == data, "echo damaged");
    });
    let ask = |bytes: &[u8]| {
        let mut c = connect(admin);
        c.write_all(bytes).unwrap();
        read_to_eof(&mut c)
    };
    let r = parse_response(&ask(b"\x16\x03\x01 not http at all\r\n\r\n"));
    assert_eq!(r.status, 400);
    assert!(r.head.contains("Connection: close"), "{}", r.head);
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    big.extend(vec![b'a'; 20_000]);
    big.extend(b"\r\n\r\n");
    let r = parse_response(&ask(&big));
    assert_eq!(r.status, 431);
    let r = parse_response(&ask(
        b"DELETE /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(r.status, 405);
    assert_eq!(http_get(admin, "/nowhere").status, 404);
    // Keep-alive: two requests on one connection, both answered.
    let mut c = connect(admin);
    c.write_all(b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let both = String::from_utf8(read_to_eof(&mut c)).unwrap();
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
    transfer.join().unwrap();
}

/// Socket activation with systemd's own `systemd-socket-activate`: named stream sockets for
/// echo and the admin endpoint, a datagram socket for udp-echo; a socket named after no
/// service is refused in one line.
#[test]
fn socket_activation_serves_named_sockets() {
    let activate = require("systemd-socket-activate", "systemd");
    let loopd = loopd_binary();
    let (p_echo, p_admin) = (free_port(), free_port());
    let listen = |p: u16| format!("--listen=127.0.0.1:{p}");
    let daemon = Daemon::start_program(
        None,
        &activate,
        &[
            &listen(p_echo),
            &listen(p_admin),
            "--fdname=echo:admin",
            loopd.to_str().unwrap(),
        ],
        &[],
    );
    // systemd-socket-activate starts loopd on the first connection, which loopd then serves.
    let echo: SocketAddr = ([127, 0, 0, 1], p_echo).into();
    let mut c = wait_until("the activated socket", || {
        std::net::TcpStream::connect(echo).ok()
    });
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    round_trip(&mut c, b"activated");
    let admin: SocketAddr = ([127, 0, 0, 1], p_admin).into();
    let text = http_get(admin, "/metrics").body;
    let sample =
        format!("loopd_connections_accepted_total{{service=\"echo\",listener=\"{echo}\"}}");
    assert_eq!(metric(&text, &sample), Some(1.0), "{text}");
    daemon.wait_log("socket activation: serving 2 socket(s)");
    drop(daemon);

    let p_udp = free_port();
    let daemon = Daemon::start_program(
        None,
        &activate,
        &[
            "--datagram",
            &listen(p_udp),
            "--fdname=udp-echo",
            loopd.to_str().unwrap(),
        ],
        &[],
    );
    // A datagram sent before the socket exists would be lost: wait for it.
    daemon.wait_log(&format!("Listening on 127.0.0.1:{p_udp} as 3"));
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(PATIENCE)).unwrap();
    u.send_to(b"over activated udp", ("127.0.0.1", p_udp))
        .unwrap();
    let mut buf = [0; 64];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over activated udp");
    drop(daemon);

    let p_bad = free_port();
    let mut daemon = Daemon::start_program(
        None,
        &activate,
        &[&listen(p_bad), "--fdname=gopher", loopd.to_str().unwrap()],
        &[],
    );
    let _ = wait_until("activation", || {
        std::net::TcpStream::connect(("127.0.0.1", p_bad)).ok()
    });
    assert_eq!(daemon.wait_exit().code(), Some(2));
    let line = daemon.wait_log("named 'gopher'");
    assert!(line.contains("FileDescriptorName="), "{line}");
}

/// The readiness protocol on a test's own `NOTIFY_SOCKET`: `READY=1` with a status once
/// serving, `WATCHDOG=1` at half the watchdog interval, `STOPPING=1` at SIGTERM.
#[test]
fn notifies_ready_watchdog_and_stopping() {
    let path = std::env::temp_dir().join(format!("loopd-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut daemon = Daemon::start_with(&["-l", "echo=127.0.0.1:0"], |cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000");
    });
    let next = || {
        let mut buf = [0; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(
        first.starts_with("READY=1\nSTATUS=serving echo="),
        "{first}"
    );
    let mut watchdogs = 0;
    while watchdogs < 3 {
        watchdogs += usize::from(next().contains("WATCHDOG=1"));
    }
    daemon.signal(libc::SIGTERM);
    let stopping = wait_until("STOPPING=1", || {
        let m = next();
        m.contains("STOPPING=1").then_some(m)
    });
    assert!(stopping.contains("STATUS=shutting down"), "{stopping}");
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let _ = std::fs::remove_file(&path);
}

/// A restart under socket activation loses no connection attempt: the socket belongs to
/// the service manager (here, this test), so a client that connects while loopd is down
/// waits in the backlog and is served by the next loopd.
#[test]
fn restart_under_socket_activation_loses_no_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let start = || {
        use std::os::fd::AsRawFd;
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("/bin/sh");
        // LISTEN_PID must be loopd's own pid: the shell's, which exec keeps.
        cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
            .arg(loopd_binary())
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "echo")
            .env("RUST_LOG", "info");
        // SAFETY: dup2 and fcntl are async-signal-safe. They put the listening socket at
        // descriptor 3, where sd_listen_fds(3) looks, open across exec (dup2 onto itself
        // would leave close-on-exec set, so that case clears it).
        unsafe {
            cmd.pre_exec(move || {
                let ok = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, 3) == 3
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Daemon::spawn(cmd)
    };
    let mut first = start();
    first.wait_log("socket activation: serving 1 socket(s)");
    let mut a = connect(addr);
    round_trip(&mut a, b"first generation");
    a.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut a).is_empty());
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0));

    // loopd is down; the socket is not: the handshake completes in its backlog.
    let mut b = connect(addr);
    b.write_all(b"connected during the restart").unwrap();

    let second = start();
    second.wait_log("socket activation: serving 1 socket(s)");
    assert_eq!(read_n(&mut b, 28), b"connected during the restart");
    drop(second);
}

/// Every flag can come from the environment: `LOOPD_LISTEN` with two services, JSON logs
/// from `LOOPD_LOG_FORMAT`; every log line is one JSON object with the fields loopd attaches.
#[test]
fn environment_configures_the_daemon_and_json_logs_parse() {
    let mut daemon = Daemon::start_with(&[], |cmd| {
        cmd.env("LOOPD_LISTEN", "echo=127.0.0.1:0 line=127.0.0.1:0")
            .env("LOOPD_LOG_FORMAT", "json")
            .env("LOOPD_MAX_CONNECTIONS", "77");
    });
    let (echo, line) = (daemon.addr_of("echo"), daemon.addr_of("line"));
    let mut c = connect(echo);
    round_trip(&mut c, b"configured by the environment");
    let mut l = connect(line);
    l.write_all(b"PING\n").unwrap();
    assert_eq!(read_n(&mut l, 6), b"PONG\r\n");
    drop((c, l));
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    // The log is read from the daemon's standard error by another thread: wait for the last line.
    daemon.wait_log("exit: Drained");
    let log = daemon.log();
    assert!(log.len() >= 3, "{log:?}");
    for line in &log {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
    }
    let parsed: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let listening = parsed
        .iter()
        .find(|v| v["message"].as_str().unwrap().starts_with("listening on"))
        .unwrap();
    assert_eq!(listening["max_connections"], 77);
    let exit = parsed
        .iter()
        .find(|v| v["message"].as_str().unwrap().starts_with("exit: Drained"))
        .unwrap();
    assert_eq!(exit["accepted"], 2);
    assert_eq!(exit["loops"], 1);
}

/// With several loops every family carries a `loop` label, one series per loop, and the
/// series add up to what the clients did; promtool accepts the page.
#[test]
fn several_loops_are_labelled() {
    let daemon = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--threads",
        "2",
    ]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    let clients = 20;
    for i in 0..clients {
        let mut c = connect(echo);
        round_trip(&mut c, format!("client {i}").as_bytes());
    }
    let text = http_get(admin, "/metrics").body;
    let series = |l: usize| {
        format!(
            "loopd_connections_accepted_total{{service=\"echo\",listener=\"{echo}\",loop=\"{l}\"}}"
        )
    };
    let per_loop: Vec<f64> = (0..2)
        .map(|l| metric(&text, &series(l)).unwrap_or_else(|| panic!("no loop {l}: {text}")))
        .collect();
    assert_eq!(per_loop.iter().sum::<f64>(), f64::from(clients), "{text}");
    assert!(metric(&text, &series(2)).is_none(), "only two loops");
    promtool_accepts(&text);
}
