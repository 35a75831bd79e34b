//! The request head: parsed with `httparse`, then judged by the rules of RFC 9112 that decide
//! where the body ends. Shared by the [`http`](super) service and the [admin
//! endpoint](crate::admin), so both read a head the same way and refuse the same heads.
//!
//! Where a body ends is the whole of request smuggling: a proxy in front and the server
//! behind must agree on it, or bytes one of them takes for a body are a second request to the
//! other. So every head that could be read two ways is refused rather than read one way
//! (RFC 9112 §6.1 and §6.3):
//!
//! | head | answer |
//! | --- | --- |
//! | `Transfer-Encoding` and `Content-Length` together | 400 |
//! | two `Content-Length`s that differ (or one that is not a number) | 400 |
//! | a transfer coding other than `chunked` | 501 |
//! | `chunked` twice, or `Transfer-Encoding` in an HTTP/1.0 request | 400 |
//! | two `Host` headers; an HTTP/1.1 request without one (checked by [`Head::require_host`]) | 400 |
//! | a head longer than the limit, or with more than [`MAX_HEADERS`] headers | 431 |
//!
//! Only the first `max_head` bytes are given to the parser: a head that has not ended by then
//! is too large whatever follows, so the answer never depends on how the bytes arrived.

use std::mem::MaybeUninit;

/// The most headers one request may carry: far above what browsers, curl and load balancers
/// send (a dozen or two), and a fixed array on the stack, so parsing allocates nothing.
pub const MAX_HEADERS: usize = 64;

/// The largest request head accepted by default: nginx's `large_client_header_buffers`
/// line size, far above any probe, scrape or benchmark request, small enough that a client
/// cannot make the server hold much.
pub const MAX_HEAD: usize = 8 * 1024;

/// A request refused: the status to answer with (then the connection closes) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 413, 417, 431 or 501.
    pub status: u16,
    /// One line for the response body.
    pub reason: &'static str,
}

impl Refusal {
    const fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }
}

/// How the request says its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length: n` (no body at all is `Length(0)`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete, well-formed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method, as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The request target, query included.
    pub target: &'a str,
    /// The target's path, without the query.
    path: &'a str,
    /// The target's query, without the `?`; empty when there is none.
    query: &'a str,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor: u8,
    /// Whether the connection may carry another request after this one: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Where the body ends.
    pub body: Body,
    /// The request said `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The request said `Expect:` something else (answered with 417).
    pub expect_other: bool,
    /// The request carried a `Host` header.
    pub has_host: bool,
    /// Bytes of the head, its blank line included: the body starts here.
    pub len: usize,
}

impl<'a> Head<'a> {
    /// RFC 9112 §3.2: an HTTP/1.1 request without `Host` is refused. Not part of
    /// [`parse`], because the admin endpoint answers probes that leave it out.
    pub fn require_host(&self) -> Result<(), Refusal> {
        if self.minor >= 1 && !self.has_host {
            return Err(Refusal::new(400, "an HTTP/1.1 request needs a Host header"));
        }
        Ok(())
    }

    /// Whether the request is `HEAD` (the response carries no body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The path, without the query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query, without the `?`; empty when there is none.
    pub fn query(&self) -> &'a str {
        self.query
    }
}

/// What the bytes at the start of the input are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole head yet, and not too long to become one: wait for more.
    Partial,
    /// A head to answer.
    Complete(Head<'a>),
    /// A head to refuse, then close the connection.
    Refused(Refusal),
}

/// Parses the request head at the start of `input`, of at most `max_head` bytes.
pub fn parse(input: &[u8], max_head: usize) -> Parsed<'_> {
    // Left uninitialised: the parser writes the headers it finds, and a request carries a
    // handful of the 64 slots (filling them all first would be 2 KiB of stores per request).
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head = &input[..input.len().min(max_head)];
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Partial) if input.len() <= max_head => Parsed::Partial,
        Ok(httparse::Status::Partial) => {
            Parsed::Refused(Refusal::new(431, "request head too large"))
        }
        Ok(httparse::Status::Complete(len)) => match judge(&req, len) {
            Ok(head) => Parsed::Complete(head),
            Err(refusal) => Parsed::Refused(refusal),
        },
        Err(httparse::Error::TooManyHeaders) => {
            Parsed::Refused(Refusal::new(431, "too many headers"))
        }
        Err(_) => Parsed::Refused(Refusal::new(400, "malformed request head")),
    }
}

/// Applies RFC 9112's framing rules to a parsed head.
fn judge<'a>(req: &httparse::Request<'_, 'a>, len: usize) -> Result<Head<'a>, Refusal> {
    let minor = req.version.unwrap_or(1);
    let mut length: Option<u64> = None;
    let mut chunked = 0usize;
    let mut transfer_encoding = false;
    let mut hosts = 0usize;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    let mut expect_other = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list ("42, 42") is one length said twice (§6.3 item 5); any disagreement,
            // within a header or across several, is refused.
            for v in h.value.split(|&b| b == b',') {
                let n =
                    decimal(trim(v)).ok_or(Refusal::new(400, "Content-Length is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Refusal::new(400, "Content-Length given twice, differently"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',').map(trim) {
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                } else if !coding.is_empty() {
                    return Err(Refusal::new(501, "transfer coding not implemented"));
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                expect_other = true;
            }
        }
    }
    if hosts > 1 {
        return Err(Refusal::new(400, "Host given twice"));
    }
    let body = if transfer_encoding {
        if length.is_some() {
            return Err(Refusal::new(
                400,
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if minor == 0 {
            return Err(Refusal::new(
                400,
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if chunked != 1 {
            return Err(Refusal::new(400, "chunked must be the one transfer coding"));
        }
        Body::Chunked
    } else {
        Body::Length(length.unwrap_or(0))
    };
    let target = req.path.unwrap_or_default();
    // A byte search: `?` is ASCII, and on a target a few bytes long it is several times
    // cheaper than `split_once`'s general character searcher.
    let (path, query) = match target.bytes().position(|b| b == b'?') {
        Some(at) => (&target[..at], &target[at + 1..]),
        None => (target, ""),
    };
    Ok(Head {
        method: req.method.unwrap_or_default(),
        target,
        path,
        query,
        minor,
        keep_alive: if minor >= 1 {
            !close
        } else {
            keep_alive && !close
        },
        body,
        expect_continue: expect_continue && minor >= 1,
        expect_other,
        has_host: hosts == 1,
        len,
    })
}

/// Optional whitespace removed from both ends.
fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// `1*DIGIT` as a number; `None` for anything else, or a number too large for a `u64`.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> Head<'_> {
        match parse(input, MAX_HEAD) {
            Parsed::Complete(h) => h,
            other => panic!("{other:?}"),
        }
    }

    fn refused(input: &[u8]) -> u16 {
        match parse(input, MAX_HEAD) {
            Parsed::Refused(r) => r.status,
            other => panic!("{other:?}"),
        }
    }

    /// A plain GET: no body, keep-alive, the head's length.
    #[test]
    fn plain_get() {
        let req = b"GET /echo?msg=hi HTTP/1.1\r\nHost: x\r\n\r\nnext";
        let h = complete(req);
        assert_eq!(h.method, "GET");
        assert_eq!((h.path(), h.query()), ("/echo", "msg=hi"));
        assert_eq!(h.body, Body::Length(0));
        assert!(h.keep_alive && h.has_host && h.require_host().is_ok());
        assert_eq!(h.len, req.len() - 4);
    }

    /// Keep-alive follows the version and the Connection header's tokens.
    #[test]
    fn keep_alive_rules() {
        let h = complete(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, Close\r\n\r\n");
        assert!(!h.keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\n\r\n").require_host().is_ok());
    }

    /// Lengths: one, the same twice, and a list of one value are a length.
    #[test]
    fn content_length_forms() {
        for req in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
        ] {
            assert_eq!(complete(req).body, Body::Length(5));
        }
        let h = complete(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.body, Body::Chunked);
    }

    /// Every head that could be framed two ways is refused (RFC 9112 §6).
    #[test]
    fn smuggling_refused() {
        let cases: [(&[u8], u16); 10] = [
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        ];
        for (req, status) in cases {
            assert_eq!(refused(req), status, "{}", req.escape_ascii());
        }
        let h = complete(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.require_host().map_err(|r| r.status), Err(400));
    }

    /// Too long or too many: 431, however the bytes arrive; garbage: 400.
    #[test]
    fn limits_and_garbage() {
        let mut big = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
        big.extend(vec![b'a'; 100]);
        assert_eq!(
            parse(&big, 100),
            Parsed::Refused(Refusal::new(431, "request head too large"))
        );
        assert_eq!(parse(&big[..100], 100), Parsed::Partial);
        big.extend(b"\x01\r\n\r\n");
        assert_eq!(
            parse(&big, 100),
            Parsed::Refused(Refusal::new(431, "request head too large"))
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(refused(&many), 431);
        assert_eq!(refused(b"\x00\x01garbage\r\n\r\n"), 400);
        assert_eq!(parse(b"GET / HT", MAX_HEAD), Parsed::Partial);
    }

    /// `Expect` is read in HTTP/1.1 only; another expectation is noted.
    #[test]
    fn expectations() {
        let h = complete(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(h.expect_continue && !h.expect_other);
        assert!(complete(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n").expect_other);
        assert!(!complete(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }
}
