//! The `http` service driven with byte slices, no sockets.

use super::*;
use crate::service::{test_connection, Harness};

/// An `http` service for a client at 192.0.2.7:4242 (through a proxy, if `proxied`).
fn service(limits: HttpLimits, proxied: bool) -> Http {
    test_connection(proxied, |conn| Http::new(conn, limits))
}

fn http() -> Harness<Http> {
    Harness::new(service(HttpLimits::default(), false))
}

/// `response` with its one `Date` line taken out (checked to be there, after the
/// `loopd-server` header), so the rest can be compared byte for byte.
fn without_date(response: &str) -> String {
    let at = response.find("\r\nDate: ").expect("a Date header") + 2;
    let end = at + response[at..].find("\r\n").expect("the Date line ends") + 2;
    assert_eq!(end - at, 37, "Date: an IMF-fixdate: {response:?}");
    assert!(response[..at].contains("loopd-server: "), "{response:?}");
    format!("{}{}", &response[..at], &response[end..])
}

fn ask(h: &mut Harness<Http>, request: &[u8]) -> (usize, String) {
    let used = h.input(request);
    (used, String::from_utf8_lossy(&h.take_output()).into_owned())
}

/// The endpoints answer with agnhost's bodies and the `loopd-server` header.
#[test]
fn endpoints() {
    let mut h = http();
    let (_, r) = ask(&mut h, b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        without_date(&r),
        "HTTP/1.1 200 OK\r\nloopd-server: web-1 127.0.0.1:7100 3\r\nContent-Length: 5\r\n\r\nweb-1"
    );
    let (_, r) = ask(&mut h, b"GET /clientip HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.ends_with("\r\n\r\n192.0.2.7:4242"), "{r}");
    let (_, r) = ask(&mut h, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.ends_with("Content-Length: 2\r\n\r\nok"), "{r}");
    let (_, r) = ask(&mut h, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.contains("\r\n\r\nNOW: 20"), "{r}");
    let (_, r) = ask(&mut h, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        without_date(&r),
        "HTTP/1.1 404 Not Found\r\nloopd-server: web-1 127.0.0.1:7100 3\r\nContent-Length: 9\r\n\r\nnot found"
    );
    let (_, r) = ask(
        &mut h,
        b"GET /echo?msg=hi%20there&x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.ends_with("Content-Length: 8\r\n\r\nhi there"), "{r}");
    assert!(!h.finished, "keep-alive throughout");
}

/// Behind a proxy, /clientip names the client the PROXY header named.
#[test]
fn clientip_behind_a_proxy() {
    let mut h = Harness::new(service(HttpLimits::default(), true));
    let (_, r) = ask(&mut h, b"GET /clientip HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.ends_with("\r\n\r\n192.0.2.7:4242"), "{r}");
}

/// A Content-Length body is echoed as it arrives, under the same length; pieces are written
/// as they come, never held.
#[test]
fn echo_streams_a_length_body() {
    let mut h = http();
    let first = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello";
    let (used, r) = ask(&mut h, first);
    assert_eq!(used, first.len());
    assert!(r.ends_with("Content-Length: 10\r\n\r\nhello"), "{r}");
    let (used, r) = ask(&mut h, b"worldGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(used, 39);
    assert!(r.starts_with("worldHTTP/1.1 200 OK\r\n"), "{r}");
}

/// A chunked body is echoed chunked, piece by piece, however it is cut.
#[test]
fn echo_streams_a_chunked_body() {
    let request: &[u8] =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let mut h = http();
    let (used, whole) = ask(&mut h, request);
    assert_eq!(used, request.len());
    assert!(
        whole.ends_with("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{whole}"
    );
    // Byte by byte: the same data, in more chunks.
    let mut h = http();
    let mut held: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for &b in request {
        held.push(b);
        let used = h.input(&held);
        held.drain(..used);
        out.extend(h.take_output());
    }
    assert!(held.is_empty());
    let text = String::from_utf8(out).unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let (data, rest) = chunked::decode_all(body.as_bytes(), &[]).unwrap();
    assert_eq!((data.as_slice(), rest), (&b"hello world"[..], Some(0)));
}

/// Pipelined requests are answered in order; a partial one waits.
#[test]
fn pipelined_and_partial() {
    let mut h = http();
    let reqs = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /hostname HTTP/1.1\r\nHost: x\r\n\r\nGET /heal";
    let (used, r) = ask(&mut h, reqs);
    assert_eq!(used, reqs.len() - 9);
    assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
    assert!(
        r.ends_with("Content-Length: 5\r\n\r\n"),
        "HEAD has no body: {r}"
    );
}

/// HTTP/1.0 closes unless asked to keep alive; Connection: close closes after the answer.
#[test]
fn connection_persistence() {
    let mut h = http();
    let (_, r) = ask(
        &mut h,
        b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert!(r.contains("Connection: keep-alive\r\n"), "{r}");
    assert!(!h.finished);
    let (_, r) = ask(&mut h, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(
        r.contains("Connection: close\r\n") && r.ends_with("ok"),
        "{r}"
    );
    assert!(h.finished);
    let mut h = http();
    let (_, r) = ask(
        &mut h,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(h.finished);
}

/// Expect: 100-continue gets its interim answer before the body is read, and not when the
/// body is refused.
#[test]
fn expect_continue() {
    let mut h = http();
    let (_, r) = ask(
        &mut h,
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{r}"
    );
    let mut h = Harness::new(service(
        HttpLimits {
            max_body: 2,
            ..HttpLimits::default()
        },
        false,
    ));
    let (_, r) = ask(
        &mut h,
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
    let mut h = http();
    let (_, r) = ask(
        &mut h,
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 417 "), "{r}");
}

/// Bodies over the limit: 413 before anything for a length, at the limit for a chunked
/// body on a path that answers after the body; a chunked echo already under way is cut
/// short.
#[test]
fn body_limit() {
    let limits = HttpLimits {
        max_body: 8,
        ..HttpLimits::default()
    };
    let mut h = Harness::new(service(limits, false));
    let (_, r) = ask(
        &mut h,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 413 ") && r.contains("Connection: close"),
        "{r}"
    );
    assert!(h.finished);
    let mut h = Harness::new(service(limits, false));
    let (_, r) = ask(
        &mut h,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nhello\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
    assert!(h.finished);
    let mut h = Harness::new(service(limits, false));
    let (_, r) = ask(
        &mut h,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nhello\r\n",
    );
    assert!(r.ends_with("\r\n\r\n5\r\nhello\r\n"), "cut short: {r}");
    assert!(h.finished);
    let mut h = Harness::new(service(limits, false));
    let (_, r) = ask(
        &mut h,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n12345678",
    );
    assert!(r.starts_with("HTTP/1.1 200 "), "at the limit: {r}");
}

/// Refusals close after their answer: smuggling, a bad chunked body, no Host.
#[test]
fn refusals_close() {
    for (req, status) in [
        (&b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..], "400"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
        (b"GET / HTTP/1.1\r\n\r\n", "400"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
        (b"GET /?status=700 HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        (b"GET /?delay=later HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        (b"GET /?header=Bad%0D%0AX:1 HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    ] {
        let mut h = http();
        let (used, r) = ask(&mut h, req);
        assert_eq!(used, req.len());
        assert!(r.starts_with(&format!("HTTP/1.1 {status} ")), "{}: {r}", req.escape_ascii());
        assert!(r.contains("Connection: close\r\n"), "{r}");
        assert!(h.finished, "{}", req.escape_ascii());
    }
}

/// A malformed chunked body under an echo already answering cuts the echo short (no last
/// chunk) and closes: a 400 cannot follow a 200.
#[test]
fn bad_chunk_cuts_an_echo_short() {
    let mut h = http();
    let (_, r) = ask(
        &mut h,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nzz\r\n",
    );
    assert!(r.ends_with("chunked\r\n\r\n2\r\nab\r\n"), "{r}");
    assert!(h.finished);
}

/// The knobs: status, a generated body, headers, close.
#[test]
fn knobs() {
    let mut h = http();
    let (_, r) = ask(
        &mut h,
        b"GET /anything?status=503&size=100&header=X-A:b%20c&header=X-B:d HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    assert!(
        r.contains("Content-Length: 100\r\nX-A: b c\r\nX-B: d\r\n\r\n"),
        "{r}"
    );
    assert!(
        r.ends_with(std::str::from_utf8(&CYCLE[..100]).unwrap()),
        "{r}"
    );
    let (_, r) = ask(&mut h, b"GET /healthz?close HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.contains("Connection: close\r\n"), "{r}");
    assert!(h.finished);
}

/// The output contract: pipelined requests whose answers outgrow them are answered only
/// while output has room; a generated body stops at the room and goes on when drained.
#[test]
fn output_contract() {
    let mut h = http();
    h.high_watermark = 4096;
    let one = b"GET /?size=1000 HTTP/1.1\r\nHost: x\r\n\r\n";
    let flood = one.repeat(50);
    let used = h.input(&flood);
    assert!(h.out.len() <= 4096 + 200, "{} pending", h.out.len());
    assert!(used < flood.len());
    // The peer reads everything; the rest is answered as room comes back.
    let mut total = h.take_output().len();
    let mut offset = used;
    for _ in 0..1000 {
        h.drained();
        offset += h.input(&flood[offset..]);
        assert!(h.out.len() <= 4096 + 200, "{} pending", h.out.len());
        total += h.take_output().len();
        if offset == flood.len() && h.service.current.is_none() {
            break;
        }
    }
    assert_eq!(offset, flood.len());
    let answer = 1000
        + "HTTP/1.1 200 OK\r\nloopd-server: web-1 127.0.0.1:7100 3\r\nContent-Length: 1000\r\n\r\n"
            .len()
        + "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n".len();
    assert_eq!(total, 50 * answer);
}

/// A head that does not end by the limit: 431, whatever follows.
#[test]
fn oversize_head() {
    let mut h = http();
    let mut big = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
    big.extend(vec![b'a'; head::MAX_HEAD]);
    assert_eq!(h.input(&big[..head::MAX_HEAD]), 0, "a partial head waits");
    let (used, r) = ask(&mut h, &big);
    assert_eq!(used, big.len());
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    assert!(h.finished);
}

/// The request timeout is answered with 408 and a close.
#[test]
fn request_timeout() {
    let mut h = http();
    assert_eq!(h.input(b"GET / HTTP/1.1\r\nHo"), 0);
    let (s, mut out) = {
        let Harness {
            service,
            out,
            finished,
            high_watermark,
        } = &mut h;
        (service, Output::new(out, *high_watermark, finished))
    };
    s.on_request_timeout(&mut out);
    let r = String::from_utf8(h.take_output()).unwrap();
    assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
    assert!(h.finished);
}
