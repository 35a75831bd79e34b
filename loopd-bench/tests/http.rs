//! `loopd-bench --protocol http` against real servers: loopd's `http` service (echo verified,
//! keep-alive and a connection per request, statuses counted), a server whose echo is wrong
//! (the mismatch found and located), nginx (`return 200`, and `proxy_pass` to loopd with the
//! echo verified through it), and HAProxy `mode http` in front of two loopd backends, with
//! results per backend read from each response's `loopd-server` header.

mod client;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use loopd::config::Config;
use loopd::service::Builtin;
use serde_json::Value;

use client::{bench_json, error, errors};
use common::daemon::Daemon;
use common::{
    free_port, haproxy_listening, wait_until, Nginx, Scratch, TestServer, HAPROXY_DEFAULTS,
};

/// Runs loopd-bench with `--json -` and `--protocol http`: exit code, report, stderr.
fn http_json(target: SocketAddr, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--protocol", "http"];
    all.extend_from_slice(args);
    bench_json(target, &all)
}

fn status(report: &Value, code: u16) -> u64 {
    report["http_status"][code.to_string()]
        .as_u64()
        .unwrap_or(0)
}

fn assert_clean(code: i32, report: &Value, stderr: &str) {
    assert_eq!(errors(report), 0, "errors: {}; {stderr}", report["errors"]);
    assert_eq!(code, 0, "{stderr}");
}

fn http_backend(server_id: &str) -> TestServer {
    let mut config = Config::default();
    config.loops.server_id = server_id.into();
    TestServer::start(config, &[Builtin::Http])
}

/// POST /echo, pipelined on kept-alive connections: exactly the messages asked for, every
/// body checked, every status counted; one connection per request in connect mode; GET.
#[test]
fn against_loopd_http() {
    let server = http_backend("h1");
    let (code, report, stderr) = http_json(
        server.addr(),
        &["-n", "4000", "-c", "4", "--pipeline", "8", "-s", "1000"],
    );
    assert_clean(code, &report, &stderr);
    assert_eq!(report["messages"], 4000);
    assert_eq!(status(&report, 200), 4000);
    assert_eq!(server.stats().accepted, 4, "kept alive");

    let (code, report, stderr) =
        http_json(server.addr(), &["-n", "200", "-c", "2", "-m", "connect"]);
    assert_clean(code, &report, &stderr);
    assert_eq!(status(&report, 200), 200);
    assert!(
        server.stats().accepted >= 4 + 200,
        "a connection per request"
    );

    let (code, report, stderr) = http_json(
        server.addr(),
        &[
            "-n",
            "100",
            "-c",
            "1",
            "--http-method",
            "get",
            "--http-path",
            "/hostname",
        ],
    );
    assert_clean(code, &report, &stderr);
    assert_eq!(status(&report, 200), 100);

    // Open loop: latency from each request's intended send time, beside the uncorrected.
    let (code, report, stderr) =
        http_json(server.addr(), &["--rate", "2000", "-d", "1s", "-c", "4"]);
    assert_clean(code, &report, &stderr);
    assert!(status(&report, 200) > 1000, "{}", report["http_status"]);
    assert!(
        report["uncorrected_latency"].is_object(),
        "open loop: {report}"
    );
}

/// A status that is not 2xx is an error unless expected; it is counted either way.
#[test]
fn statuses_counted_and_expected() {
    let server = http_backend("h1");
    let args = [
        "-n",
        "50",
        "-c",
        "1",
        "--http-method",
        "get",
        "--http-path",
        "/nope",
    ];
    let (code, report, _) = http_json(server.addr(), &args);
    assert_ne!(code, 0);
    assert_eq!(status(&report, 404), 50);
    assert_eq!(error(&report, "http_status"), 50);
    let mut expected = args.to_vec();
    expected.extend(["--expect-status", "404"]);
    let (code, report, stderr) = http_json(server.addr(), &expected);
    assert_clean(code, &report, &stderr);
    assert_eq!(status(&report, 404), 50);
    // The report says what was asked, and which statuses were answers.
    assert_eq!(
        report["runs"][0]["http"],
        serde_json::json!({
            "method": "GET",
            "path": "/nope",
            "headers": [],
            "expect_status": [404],
        }),
        "{}",
        report["runs"][0]
    );
    let knobs = [
        "-n",
        "400",
        "-c",
        "1",
        "--http-path",
        "/echo?status=503:50",
        "--expect-status",
        "200,503",
    ];
    let (code, report, stderr) = http_json(server.addr(), &knobs);
    assert_clean(code, &report, &stderr);
    let (ok, unavailable) = (status(&report, 200), status(&report, 503));
    assert_eq!(ok + unavailable, 400);
    assert!(
        ok > 100 && unavailable > 100,
        "about half each: {ok} {unavailable}"
    );
}

/// A server that answers every request with a well-framed response whose body differs from
/// the body sent at one byte: the mismatch is found, and located.
#[test]
fn a_wrong_echo_is_found_and_located() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        // One request: its head, then a 100-byte body.
        while !(got.windows(4).any(|w| w == b"\r\n\r\n")
            && got.len() >= got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + 100)
        {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let start = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut body = got[start..start + 100].to_vec();
        body[57] ^= 1;
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        answer.extend(body);
        c.write_all(&answer).unwrap();
        let _ = c.read(&mut buf);
    });
    let (code, report, _) = http_json(addr, &["-n", "1", "-c", "1", "-s", "100"]);
    assert_ne!(code, 0);
    assert_eq!(error(&report, "mismatch"), 1, "{}", report["errors"]);
    let example = report["error_examples"][0].as_str().unwrap();
    assert!(
        example.contains("message 0") && example.contains("57"),
        "{example}"
    );
}

/// HTTPS through the TLS transport: POST /echo over `--tls` to loopd's http service on a
/// `,tls` listener, every body checked, kept alive.
#[test]
fn https_to_loopd() {
    let pki = common::pki::Pki::new("bench-http");
    let daemon = Daemon::start(&[
        "-l",
        "http=127.0.0.1:0,tls",
        "--tls-cert",
        common::pki::Pki::path(&pki.chain),
        "--tls-key",
        common::pki::Pki::path(&pki.key),
    ]);
    let (code, report, stderr) = http_json(
        daemon.addr(),
        &[
            "--tls",
            "--cacert",
            common::pki::Pki::path(&pki.ca),
            "--tls-sni",
            "localhost",
            "-n",
            "1000",
            "-c",
            "2",
            "--pipeline",
            "4",
            "-s",
            "2000",
        ],
    );
    assert_clean(code, &report, &stderr);
    assert_eq!(status(&report, 200), 1000);
    assert_eq!(report["connections"]["established"], 2);
}

/// nginx: `return 200` (GET, status and framing), and `proxy_pass` to loopd's http service
/// (POST /echo, every body checked through nginx, keep-alive on both sides).
#[test]
fn against_nginx() {
    let backend = http_backend("behind-nginx");
    let (p_return, p_proxy) = (free_port(), free_port());
    let scratch = Scratch::new("nginx-http");
    let config = format!(
        "daemon off;
worker_processes 1;
error_log stderr warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    upstream loopd {{ server {backend}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{p_return};
        location / {{ return 200 'ok'; }}
    }}
    server {{
        listen 127.0.0.1:{p_proxy};
        location / {{
            proxy_pass http://loopd;
            proxy_http_version 1.1;
            proxy_set_header Connection '';
        }}
    }}
}}
",
        dir = scratch.0.display(),
        backend = backend.addr(),
    );
    let _proxy = Nginx::start(&scratch, &config);
    for port in [p_return, p_proxy] {
        wait_until("nginx listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }
    let front: SocketAddr = ([127, 0, 0, 1], p_return).into();
    let (code, report, stderr) = http_json(
        front,
        &[
            "-n",
            "2000",
            "-c",
            "4",
            "--http-method",
            "get",
            "--http-path",
            "/",
        ],
    );
    assert_clean(code, &report, &stderr);
    assert_eq!(status(&report, 200), 2000);
    let front: SocketAddr = ([127, 0, 0, 1], p_proxy).into();
    let (code, report, stderr) = http_json(
        front,
        &["-n", "2000", "-c", "4", "-s", "4096", "--per-backend"],
    );
    assert_clean(code, &report, &stderr);
    assert_eq!(status(&report, 200), 2000);
    assert_eq!(report["backends"][0]["server_id"], "behind-nginx");
}

/// HAProxy `mode http` balancing each request over two loopd backends: results per
/// backend, read from every response's `loopd-server` header, about half each.
#[test]
fn per_backend_through_haproxy_mode_http() {
    let (alpha, beta) = (http_backend("alpha"), http_backend("beta"));
    let port = free_port();
    let config = format!(
        "{HAPROXY_DEFAULTS}
listen web
    mode http
    bind 127.0.0.1:{port}
    balance roundrobin
    server alpha {} check inter 1s
    server beta {} check inter 1s
",
        alpha.addr(),
        beta.addr()
    );
    let (_proxy, _config) = haproxy_listening(&config, &[port]);
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let (code, report, stderr) = http_json(
        front,
        &["-n", "4000", "-c", "8", "-s", "512", "--per-backend"],
    );
    assert_clean(code, &report, &stderr);
    let backends = report["backends"].as_array().unwrap();
    let mut seen: Vec<(String, u64)> = backends
        .iter()
        .map(|b| {
            (
                b["server_id"].as_str().unwrap().to_string(),
                b["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].0.as_str(), seen[1].0.as_str()), ("alpha", "beta"));
    assert_eq!(seen[0].1 + seen[1].1, 4000);
    for (id, messages) in &seen {
        assert!((1500..=2500).contains(messages), "{id}: {messages} of 4000");
    }
}
