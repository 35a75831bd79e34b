//! HTTP/1.1 for `--protocol http`, without sockets: the request a run sends, and an
//! incremental parser of the responses that come back, which hands out each response's
//! status, the backend its `loopd-server` header names, its body where it lies, and its end.
//!
//! Requests are `METHOD PATH HTTP/1.1`, `Host`, the `--http-header`s, and for `POST` a
//! `Content-Length` body of `-s` bytes: the payload of the message (a function of the
//! connection and the sequence number, as every payload is), so that `/echo`'s answer is
//! checked byte for byte like any echo.
//!
//! Responses are read as RFC 9112 says a client reads them: interim (1xx) responses are
//! skipped, `204` and `304` have no body, otherwise chunked or `Content-Length` framing; a
//! response without either (its body would end at the close) cannot be pipelined and is a
//! framing error here. The chunked decoder is loopd's own, the one its `http` service uses.

use std::fmt;

use loopd::service::http::chunked::{ChunkError, Decoder};

/// The largest response head accepted: far above what loopd, nginx and HAProxy send.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The most headers one response may carry.
const MAX_HEADERS: usize = 64;

/// The header that names the backend: `loopd-server: ID LISTENER LOOP`.
pub const SERVER_HEADER: &str = "loopd-server";

/// The method of a run's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// No body.
    Get,
    /// A body of `-s` bytes.
    Post,
}

impl Method {
    /// The method as sent.
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The request head every message of a run shares: everything before the body. Built once
/// per run, so a request costs a copy of it and its body, nothing else.
pub fn request_head(
    method: Method,
    path: &str,
    host: &str,
    headers: &[String],
    body: usize,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if method == Method::Post {
        head.push_str(&format!("Content-Length: {body}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Whether `header` is `Name: value` with a token for a name and no line breaks: what
/// `--http-header` accepts.
pub fn valid_header(header: &str) -> bool {
    let Some((name, value)) = header.split_once(':') else {
        return false;
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(token)
        && value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && !["content-length", "transfer-encoding", "host"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
}

/// Why a response stream cannot be read on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// The head is not HTTP/1.x, or is longer than [`MAX_RESPONSE_HEAD`].
    Head(String),
    /// Neither `Content-Length` nor chunked, or a length that is not a number, or both.
    Length(&'static str),
    /// The chunked body is malformed.
    Chunked(ChunkError),
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::Head(why) => write!(f, "response head: {why}"),
            FramingError::Length(why) => write!(f, "response length: {why}"),
            FramingError::Chunked(e) => write!(f, "chunked response: {}", e.reason()),
        }
    }
}

/// What the parser found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A final response's head: its status, and the server id its `loopd-server` header
    /// names, if it has one.
    Head {
        /// The status code.
        status: u16,
        /// The first word of `loopd-server`.
        server: Option<&'a str>,
        /// The response said `Connection: close`.
        close: bool,
    },
    /// Body bytes, where they lie in the input (chunk framing removed).
    Body(&'a [u8]),
    /// The response is complete.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Collecting a head.
    Head,
    /// A body of this many bytes left.
    Length(u64),
    /// A chunked body.
    Chunked(Decoder),
}

/// An incremental parser of a response stream. Heads are collected (copied) until complete;
/// bodies pass through where they lie.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    head: Vec<u8>,
    /// Where the server id of the last complete head lies in `head`.
    server: Option<(usize, usize)>,
}

impl Default for ResponseParser {
    fn default() -> ResponseParser {
        ResponseParser::new()
    }
}

impl ResponseParser {
    /// A parser at the start of a response.
    pub fn new() -> ResponseParser {
        ResponseParser {
            state: State::Head,
            head: Vec::new(),
            server: None,
        }
    }

    /// Whether the parser is between responses (nothing of the next one seen yet).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Head && self.head.is_empty()
    }

    /// Reads `data`, calling `on` with every event in order; `on` returning `false` stops
    /// the parse. Returns the events' verdict: an error ends the stream.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on: impl FnMut(Event<'_>) -> bool,
    ) -> Result<(), FramingError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Head => {
                    let Some((used, event)) = self.take_head(data)? else {
                        return Ok(()); // all of it went into the head
                    };
                    data = &data[used..];
                    if let Some((status, close)) = event {
                        let server = self
                            .server
                            .and_then(|(a, b)| std::str::from_utf8(&self.head[a..b]).ok());
                        if !on(Event::Head {
                            status,
                            server,
                            close,
                        }) {
                            return Ok(());
                        }
                        self.head.clear();
                        if self.state == State::Length(0) {
                            self.state = State::Head;
                            if !on(Event::End) {
                                return Ok(());
                            }
                        }
                    } else {
                        self.head.clear(); // an interim response: skipped
                    }
                }
                State::Length(left) => {
                    let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    let done = *left == 0;
                    let (body, rest) = data.split_at(n);
                    data = rest;
                    if done {
                        self.state = State::Head;
                    }
                    if !on(Event::Body(body)) || (done && !on(Event::End)) {
                        return Ok(());
                    }
                }
                State::Chunked(decoder) => {
                    let step = decoder.decode(data).map_err(FramingError::Chunked)?;
                    data = &data[step.consumed..];
                    if step.done {
                        self.state = State::Head;
                    }
                    if !step.data.is_empty() && !on(Event::Body(step.data)) {
                        return Ok(());
                    }
                    if step.done && !on(Event::End) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds head bytes from `data`. When the head is complete, returns the bytes of `data`
    /// used and, for a final response, its status and `Connection: close` (the body's state
    /// set); `None` inside for an interim response. `None` outside: the head goes on.
    #[allow(clippy::type_complexity)]
    fn take_head(
        &mut self,
        data: &[u8],
    ) -> Result<Option<(usize, Option<(u16, bool)>)>, FramingError> {
        // The end of the head may straddle what was collected and `data`: search from a few
        // bytes back.
        let before = self.head.len();
        let from = before.saturating_sub(3);
        let take = data
            .len()
            .min(MAX_RESPONSE_HEAD + 1 - before.min(MAX_RESPONSE_HEAD));
        self.head.extend_from_slice(&data[..take]);
        let Some(end) = find(&self.head[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
            if self.head.len() > MAX_RESPONSE_HEAD {
                return Err(FramingError::Head(format!(
                    "longer than {MAX_RESPONSE_HEAD} bytes"
                )));
            }
            return Ok(None);
        };
        self.head.truncate(end);
        let used = end - before;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(FramingError::Head("incomplete".into()));
            }
            Err(e) => return Err(FramingError::Head(e.to_string())),
        }
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) {
            return Ok(Some((used, None)));
        }
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut close = false;
        self.server = None;
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case(SERVER_HEADER) {
                // The first word of the value, as a range of the head the value lies in.
                let start = h.value.as_ptr() as usize - self.head.as_ptr() as usize;
                let word = h
                    .value
                    .iter()
                    .position(|&b| b == b' ')
                    .unwrap_or(h.value.len());
                self.server = (word > 0).then_some((start, start + word));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(FramingError::Length("Content-Length is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(FramingError::Length("two different Content-Lengths"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked |= h
                    .value
                    .split(|&b| b == b',')
                    .any(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                close |= h
                    .value
                    .split(|&b| b == b',')
                    .any(|c| c.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        self.state = if status == 204 || status == 304 {
            State::Length(0)
        } else {
            match (length, chunked) {
                (Some(_), true) => {
                    return Err(FramingError::Length("both Content-Length and chunked"))
                }
                (Some(n), false) => State::Length(n),
                (None, true) => State::Chunked(Decoder::new()),
                (None, false) => {
                    return Err(FramingError::Length(
                        "neither Content-Length nor chunked (a body to the close)",
                    ))
                }
            }
        };
        Ok(Some((used, Some((status, close)))))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One response as [`parse_all`] saw it: status, server id, body.
#[cfg(any(test, feature = "fuzzing"))]
pub type Parsed = (u16, Option<String>, Vec<u8>);

/// What a response stream says, parsed whole with the cuts given: for each response, its
/// status, server and body; then the error, if any. For the tests and the fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub fn parse_all(stream: &[u8], cuts: &[usize]) -> (Vec<Parsed>, Option<FramingError>) {
    let mut parser = ResponseParser::new();
    let mut responses: Vec<Parsed> = Vec::new();
    let mut open = false;
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    bounds.sort_unstable();
    bounds.push(stream.len());
    let mut at = 0;
    for end in bounds {
        if end <= at {
            continue;
        }
        let result = parser.feed(&stream[at..end], |event| {
            match event {
                Event::Head { status, server, .. } => {
                    assert!(!open, "a head inside a response");
                    open = true;
                    responses.push((status, server.map(str::to_string), Vec::new()));
                }
                Event::Body(b) => {
                    assert!(open, "a body outside a response");
                    responses
                        .last_mut()
                        .expect("a response")
                        .2
                        .extend_from_slice(b);
                }
                Event::End => {
                    assert!(open, "an end outside a response");
                    open = false;
                }
            }
            true
        });
        at = end;
        if let Err(e) = result {
            return (responses, Some(e));
        }
    }
    (responses, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nloopd-server: web-1 127.0.0.1:7 0\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";

    /// Length, chunked and bodiless responses, an interim one skipped; the backend named.
    #[test]
    fn responses() {
        let (responses, error) = parse_all(TWO, &[]);
        assert_eq!(error, None);
        assert_eq!(
            responses,
            vec![
                (200, Some("web-1".to_string()), b"hello".to_vec()),
                (503, None, b"abc".to_vec()),
                (204, None, vec![]),
            ]
        );
    }

    /// Every cut gives the same responses.
    #[test]
    fn any_cuts() {
        let whole = parse_all(TWO, &[]);
        for i in 0..TWO.len() {
            for j in (i..TWO.len()).step_by(7) {
                assert_eq!(parse_all(TWO, &[i, j]), whole, "cuts {i} {j}");
            }
        }
    }

    /// Framing a client cannot follow is an error of its kind.
    #[test]
    fn framing_errors() {
        let (_, e) = parse_all(b"HTTP/1.1 200 OK\r\n\r\nbody", &[]);
        assert!(matches!(e, Some(FramingError::Length(_))), "{e:?}");
        let (_, e) = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &[],
        );
        assert!(matches!(e, Some(FramingError::Length(_))), "{e:?}");
        let (_, e) = parse_all(b"SSH-2.0-OpenSSH\r\n\r\n", &[]);
        assert!(matches!(e, Some(FramingError::Head(_))), "{e:?}");
        let (_, e) = parse_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            &[],
        );
        assert!(matches!(e, Some(FramingError::Chunked(_))), "{e:?}");
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(vec![b'a'; MAX_RESPONSE_HEAD]);
        let (_, e) = parse_all(&long, &[100]);
        assert!(matches!(e, Some(FramingError::Head(_))), "{e:?}");
    }

    /// The request head a run sends, and the headers it accepts.
    #[test]
    fn requests() {
        let head = request_head(Method::Post, "/echo", "h:1", &["X-A: b".into()], 64);
        assert_eq!(
            head,
            b"POST /echo HTTP/1.1\r\nHost: h:1\r\nX-A: b\r\nContent-Length: 64\r\n\r\n"
        );
        let head = request_head(Method::Get, "/", "h", &[], 64);
        assert_eq!(head, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(valid_header("X-Trace: 1 2"));
        for bad in [
            "X-Trace",
            ": v",
            "X Y: v",
            "X: a\r\nY: b",
            "Content-Length: 3",
            "host: x",
        ] {
            assert!(!valid_header(bad), "{bad}");
        }
    }
}
