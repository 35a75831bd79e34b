//! loopd-bench end to end: the binary against an in-test loopd in every mode, against a
//! server that corrupts, resets and truncates, against nothing at all, and `merge`.

// The server-side test helpers, shared rather than copied.
mod client;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopd::config::Config;
use loopd::service::{Builtin, ConnInfo, Handler, Service, ServiceOptions};
use loopd::{EndpointSpec, Server};
use loopd_bench::report::Latency;
use serde_json::Value;

use client::{bench, bench_json, bench_json_warmup, errors};
use common::{TestServer, PATIENCE};

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

/// Asserts a clean run: exit 0, no errors, every connection established.
fn assert_clean(code: i32, report: &Value, stderr: &str) {
    assert_eq!(errors(report), 0, "errors: {}; {stderr}", report["errors"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["connections"]["failed"], 0);
}

/// Echo mode, counted, two threads: exactly the requested messages, each verified and
/// timed, and a picture drawn.
#[test]
fn echo_counted_with_threads_and_picture() {
    let server = TestServer::echo();
    let svg = std::env::temp_dir().join(format!("loopd-bench-{}.svg", std::process::id()));
    let svg_arg = svg.to_str().unwrap();
    let (code, r, err) = bench_json(
        server.addr(),
        &[
            "-n",
            "3000",
            "-c",
            "6",
            "-t",
            "2",
            "--pipeline",
            "3",
            "--report",
            svg_arg,
        ],
    );
    assert_clean(code, &r, &err);
    assert_eq!(count(&r, "messages"), 3000);
    assert_eq!(r["latency"]["count"], 3000);
    assert_eq!(r["connections"]["established"], 6);
    // Requests and replies are the same bytes in raw echo.
    assert_eq!(count(&r, "bytes_sent"), 3000 * 64);
    assert_eq!(count(&r, "bytes_received"), 3000 * 64);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains("percentile"));
    std::fs::remove_file(svg).unwrap();
    // The server saw the same traffic.
    server.wait_stats("server counted the bytes", |s| s.bytes_in >= 3000 * 64);
}

/// The framed protocols against loopd's line and frame services: zero verification errors.
#[test]
fn line_and_frame_protocols() {
    let server = TestServer::start(Config::default(), &[Builtin::Line, Builtin::Frame]);
    for (addr, protocol) in [(server.addrs[0], "line"), (server.addrs[1], "frame")] {
        let (code, r, err) = bench_json(
            addr,
            &[
                "--protocol",
                protocol,
                "-n",
                "2000",
                "-c",
                "4",
                "-s",
                "100",
                "--pipeline",
                "4",
            ],
        );
        assert_clean(code, &r, &err);
        assert_eq!(count(&r, "messages"), 2000, "{protocol}");
        assert_eq!(r["latency"]["count"], 2000, "{protocol}");
    }
}

/// Send mode streams to discard and recv mode reads from chargen; both count bytes.
#[test]
fn send_and_recv_throughput() {
    let server = TestServer::start(Config::default(), &[Builtin::Discard, Builtin::Chargen]);
    let (code, r, err) = bench_json(
        server.addrs[0],
        &["-m", "send", "-d", "500ms", "-c", "2", "-s", "4KiB"],
    );
    assert_clean(code, &r, &err);
    assert!(count(&r, "bytes_sent") > 0 && count(&r, "messages") > 0);
    // Bytes count by when they were written; a message counts when its last byte is. At
    // each edge of the window a connection may have one message straddling it.
    let whole = count(&r, "bytes_sent") / 4096;
    assert!(
        whole.abs_diff(count(&r, "messages")) <= 2,
        "{whole} vs {}",
        r["messages"]
    );
    let (code, r, err) = bench_json(server.addrs[1], &["-m", "recv", "-d", "500ms", "-c", "2"]);
    assert_clean(code, &r, &err);
    assert!(count(&r, "bytes_received") > 0);
    assert!(r["latency"].is_null(), "recv has no round trips");
}

/// Connect mode churns connections: one verified round trip per connection.
#[test]
fn connect_churn() {
    let server = TestServer::echo();
    let (code, r, err) = bench_json(server.addr(), &["-m", "connect", "-n", "300", "-c", "4"]);
    assert_clean(code, &r, &err);
    assert_eq!(count(&r, "messages"), 300);
    assert!(r["connections"]["established"].as_u64().unwrap() >= 300);
    assert!(r["connect_latency"]["count"].as_u64().unwrap() >= 300);
    assert!(r["rates"]["connects_per_sec"].as_f64().unwrap() > 0.0);
    server.wait_stats("server saw the churn", |s| s.accepted >= 300);
}

/// UDP mode: every datagram is sent, answered or lost, and the counts add up.
#[test]
fn udp_round_trips_and_loss_accounting() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpEcho]);
    let (code, r, err) = bench_json(
        server.addr(),
        &["-m", "udp", "-n", "2000", "-c", "4", "-s", "1400"],
    );
    assert_clean(code, &r, &err);
    let udp = &r["udp"];
    let (sent, received, lost) = (
        udp["sent"].as_u64().unwrap(),
        udp["received"].as_u64().unwrap(),
        udp["lost"].as_u64().unwrap(),
    );
    assert_eq!(sent, 2000);
    assert_eq!(received + lost, sent);
    assert_eq!(r["latency"]["count"].as_u64().unwrap(), received);
}

/// A UDP target that never answers: every datagram is lost, and a run in which nothing
/// came back is an error, whatever `--max-loss` allows.
#[test]
fn udp_silence_is_an_error() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpDiscard]);
    let (code, r, err) = bench_json(
        server.addr(),
        &[
            "-m",
            "udp",
            "-d",
            "300ms",
            "-c",
            "2",
            "--pipeline",
            "4",
            "--max-loss",
            "100",
        ],
    );
    assert_eq!(code, 1, "{err}");
    let udp = &r["udp"];
    assert!(udp["sent"].as_u64().unwrap() > 0);
    assert_eq!(udp["lost"], udp["sent"]);
    assert_eq!(udp["received"], 0);
    assert!(err.contains("lost (100.00%)"), "{err}");
    assert!(err.contains("no reply came back"), "{err}");
}

/// A UDP echo server that answers every other datagram.
fn half_answering_udp_server() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        for i in 0u64.. {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                return;
            };
            if i % 2 == 0 {
                let _ = socket.send_to(&buf[..n], peer);
            }
        }
    });
    addr
}

/// UDP loss above `--max-loss` is an error (default 1%); below it, the run passes and the
/// loss is reported.
#[test]
fn udp_loss_above_the_limit_is_an_error() {
    let addr = half_answering_udp_server();
    let args = ["-m", "udp", "-d", "500ms", "-c", "2", "--pipeline", "8"];
    let (code, r, err) = bench_json(addr, &args);
    assert_eq!(code, 1, "{err}");
    let lost_pct = r["udp"]["lost"].as_f64().unwrap() * 100.0 / r["udp"]["sent"].as_f64().unwrap();
    assert!((30.0..=70.0).contains(&lost_pct), "{lost_pct}% lost: {err}");
    assert!(err.contains("exceeds --max-loss 1%"), "{err}");
    let (code, _, err) = bench_json(addr, &[&args[..], &["--max-loss", "80"]].concat());
    assert_eq!(code, 0, "{err}");
}

/// A TCP server that accepts and holds its connections, and never reads or writes a byte.
fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    addr
}

/// Send mode against a server that never reads ends, counted or timed, with a clear error
/// and status 1 instead of hanging or reporting the kernel's buffers as throughput.
#[test]
fn send_to_a_server_that_never_reads_fails() {
    let addr = silent_server();
    for stop in [&["-n", "1000000"][..], &["-d", "1s"]] {
        let mut args = vec![
            "-m",
            "send",
            "-s",
            "64KiB",
            "-c",
            "2",
            "--stall-timeout",
            "1s",
        ];
        args.extend_from_slice(stop);
        let started = Instant::now();
        let (code, r, err) = bench_json(addr, &args);
        assert_eq!(code, 1, "{stop:?}: {err}");
        assert!(
            r["errors"]["stalled"].as_u64().unwrap() >= 1,
            "{stop:?}: {}",
            r["errors"]
        );
        assert!(err.contains("stopped reading"), "{stop:?}: {err}");
        assert!(started.elapsed() < Duration::from_secs(15), "{stop:?}");
    }
}

/// Recv mode against a server that never sends: nothing measured is an error, not a
/// clean run of 0 bytes.
#[test]
fn recv_from_a_silent_server_fails() {
    let addr = silent_server();
    let (code, r, err) = bench_json(addr, &["-m", "recv", "-d", "500ms", "-c", "2"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(count(&r, "bytes_received"), 0);
    assert!(err.contains("nothing was received"), "{err}");
}

/// More connections than the server's cap: the ones left in the kernel backlog complete the
/// handshake but are not served inside the window. Their late replies are still timed, the
/// summary tells served from merely established connections, and the run fails.
#[test]
fn connections_beyond_the_server_cap_are_reported() {
    let mut config = Config::default();
    config.deployment.max_connections = 5;
    let server = TestServer::start(config, &[Builtin::Echo]);
    let (code, r, err) = bench_json(server.addr(), &["-c", "15", "-d", "1s"]);
    assert_eq!(code, 1, "{err}");
    let c = &r["connections"];
    assert_eq!(c["established"], 15, "{c}");
    assert_eq!(c["served"], 5, "{c}");
    assert_eq!(r["errors"]["unserved"], 10, "{}", r["errors"]);
    // Every message sent in the window was answered (within the grace) and timed.
    assert_eq!(r["latency"]["count"].as_u64(), Some(count(&r, "messages")));
    assert_eq!(r["errors"]["unanswered"], 0, "{}", r["errors"]);
    assert!(
        r["latency"]["max_us"].as_f64().unwrap() >= 500_000.0,
        "the late replies are in the histogram: {}",
        r["latency"]
    );
    assert!(err.contains("5 served"), "{err}");
}

/// Connections that never established: the connect errors of every kind.
fn connect_errors(report: &Value) -> u64 {
    [
        "connect_refused",
        "connect_timeout",
        "connect_reset",
        "connect_other",
    ]
    .iter()
    .map(|k| report["errors"][k].as_u64().unwrap())
    .sum()
}

/// A starved run fails whatever its warm-up: the connections the server left in its
/// backlog sent their first message during the warm-up and got the reply only after the
/// window, so nothing came back to them inside it. Each is `unserved`, with a warm-up as
/// without one.
#[test]
fn starved_connections_are_unserved_with_or_without_a_warmup() {
    let mut config = Config::default();
    config.deployment.max_connections = 5;
    let server = TestServer::start(config, &[Builtin::Echo]);
    for warmup in ["0s", "1s"] {
        let (code, r, err) = bench_json_warmup(server.addr(), warmup, &["-c", "15", "-d", "1s"]);
        let c = &r["connections"];
        assert_eq!(c["established"], 15, "warm-up {warmup}: {c}");
        assert_eq!(c["served"], 5, "warm-up {warmup}: {c}");
        assert_eq!(
            r["errors"]["unserved"], 10,
            "warm-up {warmup}: {}",
            r["errors"]
        );
        assert_eq!(code, 1, "warm-up {warmup}: {err}");
        assert!(err.contains("10 unserved"), "warm-up {warmup}: {err}");
    }
}

/// A connection whose handshake completed only after the window (its SYN was dropped by a
/// full accept queue and retransmitted a second later) was asked for and never served: it
/// is `unserved` too, not left out of every count. Every connection is served, unserved, or
/// a connect error, with a warm-up as without one.
#[test]
fn connections_established_after_the_window_are_unserved() {
    // One connection served, an accept queue of one or two behind it: the other SYNs are
    // dropped and retransmitted after a second, when the window is over.
    let mut config = Config::default();
    config.deployment.max_connections = 1;
    config.loops.backlog = 1;
    let server = TestServer::start(config, &[Builtin::Echo]);
    for warmup in ["0s", "500ms"] {
        let (code, r, err) = bench_json_warmup(server.addr(), warmup, &["-c", "6", "-d", "500ms"]);
        let c = &r["connections"];
        assert_eq!(c["served"], 1, "warm-up {warmup}: {c}");
        let unserved = r["errors"]["unserved"].as_u64().unwrap();
        assert_eq!(
            unserved + connect_errors(&r),
            5,
            "warm-up {warmup}: every connection but the served one is counted: {c} {}",
            r["errors"]
        );
        assert_eq!(code, 1, "warm-up {warmup}: {err}");
    }
}

/// A server that is only there during the warm-up: the verdict says what happened instead
/// of claiming no connection was ever established.
#[test]
fn connections_lost_during_warmup_are_explained() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        // Serve churn for 300 ms, then close the listener: later connects are refused.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64];
                        while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    let out = bench(&[
        &addr.to_string(),
        "-m",
        "connect",
        "-c",
        "2",
        "--warmup",
        "1s",
        "-d",
        "500ms",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("no connection to"), "{err}");
    assert!(err.contains("during the warm-up"), "{err}");
}

/// `--help` promises verification only where it happens: recv counts bytes unless told
/// what pattern to expect.
#[test]
fn help_says_what_is_verified() {
    let out = bench(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!help.contains("every byte verified"), "{help}");
    assert!(help.contains("--expect chargen"), "{help}");
}

/// Open loop: latency from the intended send time is never below the uncorrected one, and
/// the schedule bounds the message count.
#[test]
fn open_loop_reports_both_latencies() {
    let server = TestServer::echo();
    let (code, r, err) = bench_json(server.addr(), &["--rate", "2000", "-d", "1s", "-c", "4"]);
    assert_clean(code, &r, &err);
    let messages = count(&r, "messages");
    assert!(messages > 0 && messages <= 2000 + 4, "{messages}");
    let (c, u) = (&r["latency"], &r["uncorrected_latency"]);
    for p in ["p50_us", "p99_us", "max_us"] {
        assert!(
            c[p].as_f64().unwrap() >= u[p].as_f64().unwrap(),
            "{p}: {c} vs {u}"
        );
    }
    assert!(!r["timeline"].as_array().unwrap().is_empty());
}

/// What the corrupting server does to its n-th accepted connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Echo, but flip one bit of the 11th message.
    FlipByte,
    /// Reset the connection after 10 messages.
    Drop,
    /// Echo half of the 11th message, then close.
    CloseEarly,
    /// Behave.
    None,
}

/// A blocking echo server that misbehaves on purpose, one fault per connection.
fn corrupting_server(faults: Vec<Fault>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (stream, fault) in listener.incoming().zip(faults) {
            let mut s = stream.unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let mut echoed = 0;
                loop {
                    // 64-byte messages, one in flight: each read_exact is one message.
                    if s.read_exact(&mut buf).is_err() {
                        return;
                    }
                    echoed += 1;
                    match fault {
                        Fault::FlipByte if echoed == 11 => buf[40] ^= 0x01,
                        Fault::Drop if echoed == 11 => {
                            socket2::SockRef::from(&s)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                            return; // dropped with linger 0: a reset
                        }
                        Fault::CloseEarly if echoed == 11 => {
                            let _ = s.write_all(&buf[..32]);
                            return;
                        }
                        _ => {}
                    }
                    if s.write_all(&buf).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A flipped byte, a reset and an early close are each reported by kind, with a non-zero
/// exit status, while the well-behaved connection keeps working.
#[test]
fn corrupting_server_faults_are_reported_by_kind() {
    let addr = corrupting_server(vec![
        Fault::FlipByte,
        Fault::Drop,
        Fault::CloseEarly,
        Fault::None,
    ]);
    let (code, r, err) = bench_json(addr, &["-c", "4", "-d", "1s"]);
    assert_eq!(code, 1, "{err}");
    let e = &r["errors"];
    assert_eq!(e["mismatch"], 1, "{e}");
    assert_eq!(e["reset"], 1, "{e}");
    assert_eq!(e["short_echo"], 1, "{e}");
    assert_eq!(errors(&r), 3, "{e}");
    assert!(err.contains("3 errors"), "{err}");
    // The flip is located: message 10 (the 11th), byte 40.
    let examples = r["error_examples"].to_string();
    assert!(examples.contains("message 10: byte 40"), "{examples}");
    // The good connection went on.
    assert!(count(&r, "messages") > 30, "{r}");
}

/// `merge` of two reports equals one report holding both runs' histograms and counts, and
/// says that they were unrelated runs.
#[test]
fn merge_equals_combined_histograms() {
    let server = TestServer::echo();
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let paths: Vec<String> = (0..2)
        .map(|i| {
            dir.join(format!("loopd-bench-merge-{pid}-{i}.json"))
                .display()
                .to_string()
        })
        .collect();
    let target = server.addr().to_string();
    for (path, n) in paths.iter().zip(["700", "1300"]) {
        let out = bench(&[
            &target, "-n", n, "-c", "3", "--warmup", "0s", "--json", path, "-q",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = bench(&["merge", &paths[0], &paths[1], "--json", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();

    let runs: Vec<Value> = paths
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    let histogram = |v: &Value| {
        serde_json::from_value::<Latency>(v.clone())
            .unwrap()
            .histogram()
            .unwrap()
    };
    let mut both = histogram(&runs[0]["latency"]);
    both.add(histogram(&runs[1]["latency"])).unwrap();
    let expected = Latency::from_histogram(&both).unwrap();
    let got: Latency = serde_json::from_value(merged["latency"].clone()).unwrap();
    assert_eq!(got.count, 2000);
    assert_eq!(got.histogram().unwrap(), both);
    for (g, e) in [
        (got.p50_us, expected.p50_us),
        (got.p99_us, expected.p99_us),
        (got.p99_99_us, expected.p99_99_us),
        (got.max_us, expected.max_us),
    ] {
        assert_eq!(g, e);
    }
    assert_eq!(count(&merged, "messages"), 2000);
    assert_eq!(
        count(&merged, "bytes_sent"),
        count(&runs[0], "bytes_sent") + count(&runs[1], "bytes_sent")
    );
    assert_eq!(merged["connections"]["established"], 6);
    assert_eq!(merged["runs"].as_array().unwrap().len(), 2);
    assert_eq!(
        merged["merged"]["kind"], "unrelated",
        "not segments of one run"
    );
    for p in paths {
        std::fs::remove_file(p).unwrap();
    }
}

/// `--source` spreads connections over local addresses; the server sees each of them.
#[test]
fn source_addresses_are_used_round_robin() {
    let peers: Arc<Mutex<BTreeSet<IpAddr>>> = Arc::default();
    let seen = peers.clone();
    let echo = Builtin::Echo.factory(ServiceOptions::default()).unwrap();
    let factory = Arc::new(move |conn: &ConnInfo<'_>| -> Box<dyn Service> {
        seen.lock().unwrap().insert(conn.peer.ip());
        echo.new_service(conn)
    });
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config::default();
    let endpoint = EndpointSpec::bind(addr, Handler::Stream(factory));
    let server = Server::with_endpoints(&config.deployment, &config.loops, vec![endpoint]).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());

    let (code, r, err) = bench_json(
        addr,
        &["-n", "300", "-c", "6", "--source", "127.0.0.2-127.0.0.4"],
    );
    assert_clean(code, &r, &err);
    let expected: BTreeSet<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(*peers.lock().unwrap(), expected);
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

/// Nothing listening: every connection is refused, said so in one line, exit status 1.
#[test]
fn refused_target_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, r, err) = bench_json(port, &["-c", "5", "-d", "1s"]);
    assert_eq!(code, 1);
    assert_eq!(r["errors"]["connect_refused"], 5);
    assert_eq!(r["connections"]["established"], 0);
    assert!(
        err.contains(&format!(
            "error: no connection to {port} was established (5 connect_refused)"
        )),
        "{err}"
    );
}

/// A dead target that completes a few handshakes but never accepts or answers: connects
/// time out, established connections go unanswered, and the run still ends, exit 1.
#[test]
fn dead_target_times_out_instead_of_hanging() {
    // A socket that listens with the smallest backlog and never accepts.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let started = Instant::now();
    let (code, r, err) = bench_json(
        addr,
        &["-c", "6", "-d", "500ms", "--connect-timeout", "500ms"],
    );
    assert_eq!(code, 1, "{err}");
    let e = &r["errors"];
    assert!(e["connect_timeout"].as_u64().unwrap() >= 1, "{e}");
    let established = r["connections"]["established"].as_u64().unwrap();
    if established > 0 {
        assert!(e["unanswered"].as_u64().unwrap() >= 1, "{e}");
    }
    assert!(started.elapsed() < PATIENCE);
    drop(socket);
}

/// Bad flags are refused before any traffic, with exit status 2.
#[test]
fn bad_flags_exit_2() {
    for args in [
        &["127.0.0.1:1", "-m", "send", "--rate", "10"][..],
        &["127.0.0.1:1", "-m", "udp", "-s", "8"],
        &["127.0.0.1:1", "--source", "127.0.0.9-127.0.0.2"],
        &["127.0.0.1:1", "-c", "0"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

/// A dropped connection between messages (not mid-reply) is an unexpected close.
#[test]
fn server_closing_between_messages_is_unexpected_close() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
        // Read the sixth request, then close without answering: a FIN after whole replies.
        s.read_exact(&mut buf).unwrap();
        drop(s);
    });
    let (code, r, err) = bench_json(addr, &["-c", "1", "-d", "1s"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(r["errors"]["unexpected_close"], 1, "{}", r["errors"]);
    assert_eq!(count(&r, "messages"), 5);
}

/// Ramp and warm-up come before the measurement: the server sees warm-up traffic that the
/// report leaves out, the measured duration is exactly `-d`, and the whole run lasts at
/// least ramp + warm-up + duration. With standard error not a terminal, no progress line.
#[test]
fn ramp_and_warmup_precede_the_measurement() {
    let server = TestServer::echo();
    let target = server.addr().to_string();
    let started = Instant::now();
    let args = [
        "-c", "4", "--ramp", "20", "--warmup", "300ms", "-d", "500ms",
    ];
    let out = bench(&[&[target.as_str(), "--json", "-"][..], &args].concat());
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Four connections at 20 per second take 200 ms to open (the last at 150 ms).
    assert!(
        elapsed >= Duration::from_millis(150 + 300 + 500),
        "{elapsed:?}"
    );
    assert_eq!(r["duration_secs"].as_f64(), Some(0.5));
    assert_eq!(r["connections"]["established"], 4);
    let measured = count(&r, "bytes_sent");
    assert!(measured > 0);
    server.wait_stats("warm-up traffic beyond the measured bytes", |s| {
        s.bytes_in > measured
    });
    assert!(
        !stderr.contains('\r'),
        "progress line without a terminal: {stderr:?}"
    );
}

/// A server that speaks first: it writes a greeting as it accepts, then waits. The greeting
/// often arrives with the event that completes the handshake; every connection must read
/// it there, or it waits for an edge that never comes.
#[test]
fn greeting_that_arrives_with_the_handshake_is_read() {
    const CONNECTIONS: usize = 200;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let _ = s.write_all(b"220 hello from a server that speaks first\r\n");
            held.push(s);
        }
    });
    let c = CONNECTIONS.to_string();
    let (code, r, err) = bench_json(addr, &["-m", "recv", "-c", &c, "-d", "2s"]);
    assert_clean(code, &r, &err);
    assert_eq!(
        r["connections"]["served"], CONNECTIONS as u64,
        "{}",
        r["connections"]
    );
}

/// Many connections to a chargen server: the stream is verified against RFC 864 and every
/// connection is served; none is starved by the others.
#[test]
fn chargen_stream_is_verified_on_every_connection() {
    let server = TestServer::start(Config::default(), &[Builtin::Chargen]);
    let (code, r, err) = bench_json(
        server.addr(),
        &["-m", "recv", "--expect", "chargen", "-c", "50", "-d", "1s"],
    );
    assert_clean(code, &r, &err);
    assert_eq!(r["connections"]["served"], 50, "{}", r["connections"]);
    assert!(
        count(&r, "bytes_received") > 50 * 7030,
        "{}",
        r["bytes_received"]
    );
}

/// A chargen server that deviates from RFC 864 (xinetd's ring has 93 characters, not 95)
/// is reported as a mismatch at the offset where it first differs.
#[test]
fn deviating_chargen_is_caught_at_its_offset() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                // 93 printable characters (space through '|'), 72 per line, each line one
                // further round the ring: identical to RFC 864 for the first 72 bytes.
                let ring: Vec<u8> = (b' '..=b'|').collect();
                let mut line = 0usize;
                loop {
                    let mut l: Vec<u8> = (0..72).map(|c| ring[(line + c) % ring.len()]).collect();
                    l.extend_from_slice(b"\r\n");
                    if s.write_all(&l).is_err() {
                        return;
                    }
                    line += 1;
                }
            });
        }
    });
    let (code, r, err) = bench_json(
        addr,
        &[
            "-m", "recv", "--expect", "chargen", "-c", "1", "-d", "500ms",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(r["errors"]["mismatch"], 1, "{}", r["errors"]);
    // The two streams agree until the 93-character ring first wraps inside a line.
    let expected = first_xinetd_difference();
    let examples = r["error_examples"].to_string();
    assert!(
        examples.contains(&format!("chargen stream byte {expected} ")),
        "{examples}"
    );
}

/// Where a 93-character chargen ring first differs from RFC 864's 95-character one.
fn first_xinetd_difference() -> usize {
    let gen = |ring: &[u8]| -> Vec<u8> {
        (0..100)
            .flat_map(|line| {
                let mut l: Vec<u8> = (0..72).map(|c| ring[(line + c) % ring.len()]).collect();
                l.extend_from_slice(b"\r\n");
                l
            })
            .collect()
    };
    let rfc: Vec<u8> = (b' '..=b'~').collect();
    let xinetd: Vec<u8> = (b' '..=b'|').collect();
    let (a, b) = (gen(&rfc), gen(&xinetd));
    a.iter().zip(&b).position(|(x, y)| x != y).unwrap()
}
