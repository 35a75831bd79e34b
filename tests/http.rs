//! The `http` service on the wire: real clients (curl, Python's http.client, wrk, h2load)
//! against it, and a raw-bytes client for every bound and every smuggling refusal.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use loopd::config::{Config, DEFAULT_HIGH_WATERMARK};
use loopd::service::Builtin;

use common::daemon::Daemon;
use common::*;

fn http_server(config: Config) -> TestServer {
    TestServer::start(config, &[Builtin::Http])
}

/// Sends raw `request` bytes, then reads the whole answer until the server's FIN.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = connect(addr);
    c.write_all(request).unwrap();
    String::from_utf8_lossy(&read_to_eof(&mut c)).into_owned()
}

/// Runs `program` with `args`, asserting success; returns stdout and stderr.
fn run(program: &str, package: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(require(program, package))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{program} {args:?}: {stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// curl: several requests on one kept-alive connection, a chunked upload echoed whole, HEAD,
/// and `Expect: 100-continue` answered before the body is sent.
#[test]
fn curl_keep_alive_chunked_upload_head_and_expect() {
    let server = http_server(Config::default());
    let base = format!("http://{}", server.addr());
    let (out, _) = run(
        "curl",
        "curl",
        &[
            "-sS",
            &format!("{base}/hostname"),
            &format!("{base}/healthz"),
            &format!("{base}/echo?msg=three"),
        ],
    );
    assert!(out.ends_with("okthree"), "{out}");
    assert_eq!(server.stats().accepted, 1, "three requests, one connection");

    let dir = Scratch::new("http-curl");
    let upload = dir.0.join("upload");
    let body = pattern(25, 700 * 1024);
    std::fs::write(&upload, &body).unwrap();
    let upload = upload.to_str().unwrap();
    let echoed = dir.0.join("echoed");
    let echoed_s = echoed.to_str().unwrap();
    run(
        "curl",
        "curl",
        &[
            "-sS",
            "-f",
            "-H",
            "Transfer-Encoding: chunked",
            "-T",
            upload,
            "-o",
            echoed_s,
            &format!("{base}/echo"),
        ],
    );
    assert!(
        std::fs::read(&echoed).unwrap() == body,
        "chunked upload echoed whole"
    );

    let (head, _) = run("curl", "curl", &["-sS", "-I", &format!("{base}/hostname")]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("loopd-server: "), "{head}");

    let (_, verbose) = run(
        "curl",
        "curl",
        &[
            "-sS",
            "-v",
            "-f",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &format!("@{upload}"),
            "-o",
            echoed_s,
            &format!("{base}/echo"),
        ],
    );
    assert!(verbose.contains("< HTTP/1.1 100 Continue"), "{verbose}");
    assert!(
        std::fs::read(&echoed).unwrap() == body,
        "the upload after 100 Continue, echoed"
    );
}

/// Python's http.client: keep-alive, a Content-Length and a chunked POST, HEAD, and each
/// endpoint's body.
#[test]
fn python_http_client() {
    let server = http_server_with_id("py-1");
    let script = format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=30)
def ask(method, path, body=None, headers={{}}, chunked=False):
    c.request(method, path, body=body, headers=headers, encode_chunked=chunked)
    r = c.getresponse()
    return r.status, r.getheader("loopd-server"), r.getheader("Transfer-Encoding"), r.read()
s, server, _, b = ask("GET", "/hostname")
assert (s, b) == (200, b"py-1"), (s, b)
assert server.startswith("py-1 127.0.0.1:"), server
body = bytes(range(256)) * 1000
assert ask("POST", "/echo", body)[3] == body
s, _, te, b = ask("POST", "/echo", iter([body[:1000], body[1000:]]), chunked=True)
assert (s, te, b) == (200, "chunked", body), (s, te)
s, _, _, b = ask("HEAD", "/healthz")
assert (s, b) == (200, b""), (s, b)
s, _, _, b = ask("GET", "/clientip")
assert b.startswith(b"127.0.0.1:"), b
s, _, _, b = ask("GET", "/nope")
assert s == 404, s
print("ok")
"#,
        port = server.addr().port()
    );
    let (out, _) = run("python3", "python3", &["-c", &script]);
    assert_eq!(out.trim(), "ok");
    assert_eq!(
        server.stats().accepted,
        1,
        "every request on one connection"
    );
}

fn http_server_with_id(id: &str) -> TestServer {
    let mut config = Config::default();
    config.loops.server_id = id.into();
    http_server(config)
}

/// wrk (keep-alive, many connections) and h2load --h1 (pipelined) get nothing but 2xx.
#[test]
fn wrk_and_h2load() {
    let server = http_server(Config::default());
    let url = format!("http://{}/echo?msg=hello", server.addr());
    let (out, _) = run("wrk", "wrk", &["-t1", "-c8", "-d1s", &url]);
    assert!(!out.contains("Non-2xx"), "{out}");
    assert!(!out.contains("Socket errors"), "{out}");
    let requests: u64 = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count: {out}"));
    assert!(requests > 100, "{out}");

    let (out, _) = run(
        "h2load",
        "nghttp2-client",
        &["--h1", "-n", "2000", "-c", "4", "-m", "8", &url],
    );
    assert!(out.contains("2000 succeeded, 0 failed, 0 errored"), "{out}");
    assert!(out.contains("status codes: 2000 2xx"), "{out}");
}

/// Every smuggling refusal of RFC 9112 on the wire: the status, then the close.
#[test]
fn smuggling_is_refused_and_closed() {
    let server = http_server(Config::default());
    let cases: [(&[u8], &str); 7] = [
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", "501"),
        (b"GET /hostname HTTP/1.1\r\n\r\n", "400"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    ];
    for (request, status) in cases {
        let answer = raw(server.addr(), request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} "))
                && answer.contains("Connection: close\r\n"),
            "{} -> {answer}",
            request.escape_ascii()
        );
        assert_eq!(
            answer.matches("loopd-server: ").count(),
            1,
            "nothing after the refusal: {answer}"
        );
    }
}

/// The bounds: a head over 8 KiB is 431, a body over --max-body 413 (by its length, or as a
/// chunked body grows), garbage 400; each closes after its answer.
#[test]
fn bounds_431_413_400() {
    let mut config = Config::default();
    config.services.http.max_body = 1000;
    let server = http_server(config);
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Fill: ".to_vec();
    big.extend(vec![b'a'; 9000]);
    big.extend(b"\r\n\r\n");
    assert!(raw(server.addr(), &big).starts_with("HTTP/1.1 431 "));
    let answer = raw(
        server.addr(),
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    let mut chunked =
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..11 {
        chunked.extend(b"64\r\n");
        chunked.extend([b'x'; 100]);
        chunked.extend(b"\r\n");
    }
    let answer = raw(server.addr(), &chunked);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(raw(server.addr(), b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
    // At the limit is fine.
    let mut ok =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n"
            .to_vec();
    ok.extend([b'y'; 1000]);
    let answer = raw(server.addr(), &ok);
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with(&"y".repeat(1000)),
        "{answer}"
    );
}

/// A head still incomplete at the request timeout is answered 408, then the connection
/// closes gracefully (FIN, not a reset), so the client reads the answer; the close is
/// counted as a request timeout, not as the FIN exchange that ended it.
#[test]
fn request_timeout_is_408() {
    let mut config = Config::default();
    config.loops.limits.request_timeout = Some(Duration::from_millis(300));
    let server = http_server(config);
    let mut c = connect(server.addr());
    c.write_all(b"GET /hostname HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_eof(&mut c)).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    drop(c);
    let s = server.wait_stats("the close counted", |s| s.active == 0);
    assert_eq!(
        (s.closed_request_timeout, s.closed_server, s.closed_peer),
        (1, 0, 0),
        "{s}"
    );
}

/// The output contract: 1,000 pipelined 39-byte requests for 16,000-byte answers (16 MB),
/// sent at once by a client that reads nothing until the server has paused, keep pending
/// output within the high watermark and one answer; every answer then arrives, in order.
#[test]
fn pipelined_flood_stays_within_the_watermark() {
    const REQUESTS: usize = 1_000;
    const SIZE: usize = 16_000;
    let server = http_server(Config::default());
    // A small receive buffer, so the kernel cannot soak up what the server must hold back.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let mut c: std::net::TcpStream = socket.into();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut requests = format!("GET /?size={SIZE} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(REQUESTS);
    requests.push_str("GET /echo?msg=end HTTP/1.1\r\nHost: x\r\n\r\n");
    c.write_all(requests.as_bytes()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let paused = server.wait_stats("server paused", |s| s.backpressure_pauses >= 1);
    let bound = (DEFAULT_HIGH_WATERMARK + SIZE + 200) as u64;
    assert!(
        paused.peak_pending_output <= bound,
        "pending output {} exceeded {bound}",
        paused.peak_pending_output
    );
    let all = read_to_eof(&mut c);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), REQUESTS + 1);
    assert!(text.ends_with("\r\n\r\nend"), "in order, the last one last");
    let s = server.wait_stats("closed", |s| s.active == 0);
    assert!(s.peak_pending_output <= bound, "{s}");
}

/// Behind a `,proxy` listener, /clientip names the client the PROXY header named.
#[test]
fn clientip_behind_proxy() {
    let daemon = Daemon::start(&["-l", "http=127.0.0.1:0,proxy"]);
    let mut c = connect(daemon.addr());
    c.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 4711 80\r\nGET /clientip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = parse_response(&read_to_eof(&mut c));
    assert_eq!(answer.body, "192.0.2.9:4711");
}

/// A response that closes the connection (`close`) after a generated body larger than the
/// watermark, with another request pipelined behind it: the answer arrives whole, then our
/// FIN, and the connection ends at the peer's FIN, not at the linger timeout. (The case
/// where the body ends in `on_drained` with the request still held, which once stopped the
/// connection from reading, is the `http` fuzz target's corpus input `knobs`.)
#[test]
fn close_after_a_generated_body_with_a_request_held() {
    let mut config = Config::default();
    config.loops.limits.linger_timeout = Duration::from_secs(120);
    let server = http_server(config);
    let mut c = connect(server.addr());
    c.write_all(b"GET /?size=1000000&close HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_to_eof(&mut c);
    let head = b"Content-Length: 1000000\r\nConnection: close\r\n\r\n";
    let at = answer
        .windows(head.len())
        .position(|w| w == head)
        .expect("the head");
    assert_eq!(
        answer.len() - at - head.len(),
        1_000_000,
        "the whole body, nothing after"
    );
    drop(c);
    let s = server.wait_stats("closed at the peer's FIN", |s| s.active == 0);
    assert_eq!(s.closed_linger_timeout, 0, "{s}");
}

/// HTTPS: the same service on a `,tls` listener, through curl: a request, and a chunked
/// upload echoed whole over TLS.
#[test]
fn curl_over_https() {
    let pki = common::pki::Pki::new("http");
    let daemon = Daemon::start(&[
        "-l",
        "http=127.0.0.1:0,tls",
        "--tls-cert",
        common::pki::Pki::path(&pki.chain),
        "--tls-key",
        common::pki::Pki::path(&pki.key),
        "--server-id",
        "tls-1",
    ]);
    let base = format!("https://localhost:{}", daemon.addr().port());
    let resolve = format!("localhost:{}:127.0.0.1", daemon.addr().port());
    let ca = common::pki::Pki::path(&pki.ca);
    let (out, _) = run(
        "curl",
        "curl",
        &[
            "-sS",
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &format!("{base}/hostname"),
        ],
    );
    assert_eq!(out, "tls-1");
    let dir = Scratch::new("http-tls");
    let upload = dir.write("upload", &"0123456789abcdef".repeat(20_000));
    let (out, _) = run(
        "curl",
        "curl",
        &[
            "-sS",
            "-f",
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-H",
            "Transfer-Encoding: chunked",
            "-T",
            upload.to_str().unwrap(),
            &format!("{base}/echo"),
        ],
    );
    assert!(
        out == "0123456789abcdef".repeat(20_000),
        "the upload echoed whole over TLS"
    );
}

/// With a watermark smaller than a generated body, the body is finished by the loop's
/// producing step (`on_drained`) while the next pipelined request waits for room: that
/// request is still answered, with no new event to announce its room. (It waited forever
/// until the loop ran such a connection again; found by the `http` fuzz target.)
#[test]
fn a_request_held_behind_a_generated_body_is_answered() {
    let mut config = Config::default();
    config.loops.limits.high_watermark = 64;
    config.loops.limits.low_watermark = 16;
    let server = http_server(config);
    let mut c = connect(server.addr());
    c.write_all(b"GET /?size=2000 HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?msg=second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_eof(&mut c)).into_owned();
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
    assert!(answer.ends_with("\r\n\r\nsecond"), "{answer}");
}

/// fortio's `delay` knob holds the response as the `delay` fault holds a reply: a pipelined
/// request behind it waits too (responses stay in order), a request without it is answered
/// at once, and a probability list is accepted.
#[test]
fn the_delay_knob_holds_the_response() {
    let server = http_server(Config::default());
    let mut c = connect(server.addr());
    let started = std::time::Instant::now();
    c.write_all(
        b"GET /healthz?delay=1s HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /hostname?delay=0s:50,0s:50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let answer = String::from_utf8_lossy(&read_to_eof(&mut c)).into_owned();
    let waited = started.elapsed();
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 2, "{answer}");
    // The hold counts from the loop's turn, in whole milliseconds.
    assert!(
        waited >= Duration::from_millis(995),
        "answered after {waited:?}: {answer}"
    );

    let started = std::time::Instant::now();
    let answer = raw(
        server.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no delay asked, none given: {:?}",
        started.elapsed()
    );
}
