//! HTTP/1.1, as a test backend: a framed request/response service like `line`, with agnhost's
//! endpoints and fortio's knobs, on the loop like every other service.
//!
//! | path | answer |
//! | --- | --- |
//! | `/` | `NOW: <RFC 3339 time>` |
//! | `/hostname` | the server id (`--server-id`) |
//! | `/clientip` | the client's `ip:port`: the one a PROXY header named, or the peer's |
//! | `/echo` | the request body, streamed back as it arrives (chunked when the request was); or `?msg=` |
//! | `/healthz` | `ok` |
//! | anything else | 404 |
//!
//! On any path, the [`knobs`] `status`, `size`, `close` and `header` change the answer.
//! Every response carries `loopd-server: ID LISTENER LOOP`, the line service's `SERVER`
//! answer, so a load client behind a balancer can tell which backend, listener and loop
//! answered.
//!
//! # Framing and bounds
//!
//! The request head is read by [`head`], shared with the admin endpoint; a head that could
//! be framed two ways is refused (see there). Bodies come with `Content-Length` or chunked
//! ([`chunked`]); neither is ever held whole. `/echo` writes each piece back as it arrives;
//! every other path reads the body and drops it, then answers. Keep-alive and pipelining
//! need nothing more than answering the requests in order.
//!
//! | bound | answer |
//! | --- | --- |
//! | a head over [`MAX_HEAD`](head::MAX_HEAD) or with too many headers | 431, close |
//! | a body over `--max-body` | 413, close (a chunked `/echo` already answering is cut short: no last chunk) |
//! | a head still incomplete after `--request-timeout` | 408, close |
//! | a malformed head or chunked body | 400, close |
//!
//! **The output contract.** A request is answered only while output has room, and a
//! response that is larger than its request is written only up to the room there is: the
//! echo of a body is written as far as the room goes (the rest of the input is left to the
//! connection), a generated `size` body in slices, more on each
//! [`on_drained`](Service::on_drained). A pipelined flood whose responses outgrow the
//! requests therefore stops reading at the high watermark, as `line` does.
//!
//! Nothing is allocated per request: the head is parsed into an array on the stack, numbers
//! are formatted on the stack, and the few things a response may need to hold (a decoded
//! `msg`, the `header` knobs) live in two buffers the connection keeps and reuses. The one
//! allocation left is the `Date` line's, once a second per thread. `tests/http_allocations.rs`
//! counts them with a global allocator around 10,000 keep-alive requests of four kinds.

pub mod chunked;
pub mod head;
pub mod knobs;
pub mod response;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use self::chunked::Decoder;
use self::head::{Body, Head, Parsed, Refusal};
use self::knobs::{BadKnob, Knobs, Rng};
use super::chargen::CYCLE;
use super::{ConnInfo, Output, Service};

/// Default for `--max-body`: a mebibyte, nginx's `client_max_body_size`. The body is never
/// held, so the limit bounds work, not memory: how long one request may occupy a connection.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// The most of a generated body written in one call: one read buffer's worth, as chargen.
const GENERATE_CHUNK: usize = 64 * 1024;

/// The limits of the `http` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The largest request head.
    pub max_head: usize,
    /// The largest request body, and the largest generated (`size`) body.
    pub max_body: u64,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_head: head::MAX_HEAD,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// The `http` service for one connection. See the [module documentation](self).
pub struct Http {
    client: SocketAddr,
    server_id: Arc<str>,
    /// `HTTP/1.1 200 OK\r\n` and `loopd-server: ID LISTENER LOOP\r\n`, formatted once per
    /// connection: most responses begin with both, in one piece; any other status writes
    /// its own line and the header alone.
    ident: Box<[u8]>,
    limits: HttpLimits,
    /// The request being served, from its head to the end of its response.
    current: Option<Request>,
    rng: Rng,
    /// The body of a response that is neither static nor generated (`msg`, the time, the
    /// client's address), kept and reused.
    body: Vec<u8>,
    /// The `header` knobs' lines, kept and reused.
    extra: Vec<u8>,
}

/// One request in progress: what is left of its body to read, and of its response to write.
#[derive(Debug)]
struct Request {
    /// What is left to read of the request body.
    reading: Reading,
    /// The body is written back as it arrives (the response head is written already).
    echo: Echo,
    /// The response, written once the body has been read; `None` once written (or for
    /// `/echo`, which answers at once).
    reply: Option<Reply>,
    /// Bytes of a generated body still to write, after the head.
    generate: u64,
    /// Bytes of it written so far: where the pattern continues.
    generated: u64,
    /// Close the connection after the response.
    close: bool,
}

/// What is left of a request body.
#[derive(Debug)]
enum Reading {
    /// This many bytes (`Content-Length`).
    Length(u64),
    /// A chunked body, and the data bytes received so far.
    Chunked(Decoder, u64),
}

impl Reading {
    fn is_done(&self) -> bool {
        match self {
            Reading::Length(n) => *n == 0,
            Reading::Chunked(d, _) => d.is_done(),
        }
    }
}

/// How `/echo` writes the body back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Echo {
    /// It does not: the body is read and dropped.
    Off,
    /// As it arrives, under the request's `Content-Length`.
    Raw,
    /// As it arrives, one chunk per piece.
    Chunked,
}

/// A response to write once the request body has been read.
#[derive(Debug, Clone, Copy)]
struct Reply {
    status: u16,
    body: ReplyBody,
    /// A `HEAD` request: the head only.
    head_only: bool,
    /// HTTP/1.0 with `Connection: keep-alive`: say so in the response.
    keep_alive_1_0: bool,
    /// The `delay` knob: the response is held this long once written.
    delay: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy)]
enum ReplyBody {
    Static(&'static [u8]),
    /// The connection's `body` buffer.
    Buffered,
    /// `size` bytes of the chargen pattern.
    Generated(u64),
}

impl Http {
    /// An `http` service for the connection `conn` describes.
    pub fn new(conn: &ConnInfo<'_>, limits: HttpLimits) -> Http {
        let seed = super::seed() ^ u64::from(conn.client().port()).rotate_left(32);
        Http::with_seed(conn, limits, seed)
    }

    /// The same, with the knobs' choices drawn from `seed`: a run that must repeat them.
    pub fn with_seed(conn: &ConnInfo<'_>, limits: HttpLimits, seed: u64) -> Http {
        let mut ident = response::OK_LINE.to_vec();
        let _ = write!(
            ident,
            "loopd-server: {} {} {}\r\n",
            conn.server_id, conn.listener, conn.loop_index
        );
        let peer = conn.client();
        Http {
            client: peer,
            server_id: Arc::clone(conn.server_id),
            ident: ident.into_boxed_slice(),
            limits,
            current: None,
            rng: Rng::new(seed),
            body: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// A complete head: decides the response, writes what can be written now, and leaves
    /// the rest (the body to read, a deferred response) in `current`.
    fn begin(&mut self, head: &Head<'_>, out: &mut Output<'_>) {
        if let Err(refusal) = head.require_host() {
            return self.refuse(refusal, out);
        }
        if head.expect_other {
            return self.refuse(
                Refusal {
                    status: 417,
                    reason: "only 100-continue is expected",
                },
                out,
            );
        }
        if let Body::Length(n) = head.body {
            if n > self.limits.max_body {
                return self.refuse(too_large(), out);
            }
        }
        let reading = match head.body {
            Body::Length(n) => Reading::Length(n),
            Body::Chunked => Reading::Chunked(Decoder::new(), 0),
        };
        self.extra.clear();
        let knobs = {
            let (rng, extra) = (&mut self.rng, &mut self.extra);
            let mut scratch = std::mem::take(&mut self.body);
            let result = knobs::read(head.query(), rng, self.limits.max_body, |value| {
                header_knob(value, &mut scratch, extra)
            });
            self.body = scratch;
            result
        };
        let knobs = match knobs {
            Ok(k) => k,
            Err(BadKnob { status, reason }) => return self.refuse(Refusal { status, reason }, out),
        };
        if head.expect_continue && !reading.is_done() {
            // The client waits for this before sending the body (curl, for a second, with
            // large uploads): the request is acceptable, send it.
            out.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let path = head.path();
        let close = !head.keep_alive || knobs.close;
        let (status, body) = match self.endpoint(path, head, &knobs) {
            Ok(answer) => answer,
            Err(bad) => return self.refuse(bad, out),
        };
        let status = knobs.status.unwrap_or(status);
        let body = match knobs.size {
            Some(n) => ReplyBody::Generated(n),
            None => body,
        };
        let keep_alive_1_0 = head.minor == 0 && head.keep_alive && !close;
        let echo = match (&body, &reading) {
            (ReplyBody::Static(b""), _)
                if path == "/echo" && !head.is_head() && !response::is_bodiless(status) =>
            {
                match reading {
                    Reading::Length(_) => Echo::Raw,
                    Reading::Chunked(..) => Echo::Chunked,
                }
            }
            _ => Echo::Off,
        };
        let mut request = Request {
            reading,
            echo,
            reply: None,
            generate: 0,
            generated: 0,
            close,
        };
        let reply = Reply {
            status,
            body,
            head_only: head.is_head(),
            keep_alive_1_0,
            delay: knobs.delay,
        };
        if echo == Echo::Off {
            request.reply = Some(reply);
        } else {
            // The echo answers at once: its head, then the body as it arrives.
            let length = match request.reading {
                Reading::Length(n) => Some(n),
                Reading::Chunked(..) => None,
            };
            if let Some(d) = knobs.delay {
                out.hold(d);
            }
            self.write_head(out, status, length, close, keep_alive_1_0);
        }
        self.current = Some(request);
    }

    /// The endpoint's status and body.
    fn endpoint(
        &mut self,
        path: &str,
        head: &Head<'_>,
        knobs: &Knobs,
    ) -> Result<(u16, ReplyBody), Refusal> {
        Ok(match path {
            "/" => {
                self.body.clear();
                let now = humantime::format_rfc3339_micros(SystemTime::now());
                let _ = write!(self.body, "NOW: {now}");
                (200, ReplyBody::Buffered)
            }
            "/hostname" => {
                self.body.clear();
                self.body.extend_from_slice(self.server_id.as_bytes());
                (200, ReplyBody::Buffered)
            }
            "/clientip" => {
                self.body.clear();
                let _ = write!(self.body, "{}", self.client);
                (200, ReplyBody::Buffered)
            }
            "/healthz" => (200, ReplyBody::Static(b"ok")),
            "/echo" => {
                let msg = head
                    .query()
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("msg="));
                match msg {
                    Some(msg) if knobs.size.is_none() => {
                        knobs::percent_decode(msg, &mut self.body).map_err(|b| Refusal {
                            status: b.status,
                            reason: b.reason,
                        })?;
                        (200, ReplyBody::Buffered)
                    }
                    _ => (200, ReplyBody::Static(b"")),
                }
            }
            _ => (404, ReplyBody::Static(b"not found")),
        })
    }

    /// The response head. `length`: the body's length, or `None` for chunked.
    fn write_head(
        &self,
        out: &mut Output<'_>,
        status: u16,
        length: Option<u64>,
        close: bool,
        keep_alive_1_0: bool,
    ) {
        if status == 200 {
            out.write(&self.ident);
        } else {
            response::status_line(out, status);
            out.write(&self.ident[response::OK_LINE.len()..]);
        }
        response::date(out);
        // The usual head ends with its length, and the blank line goes in the same piece.
        let last = !close && !keep_alive_1_0 && self.extra.is_empty();
        let ended = match length {
            _ if response::is_bodiless(status) => false,
            Some(n) => {
                response::content_length(out, n, last);
                last
            }
            None => {
                out.write(b"Transfer-Encoding: chunked\r\n");
                false
            }
        };
        if ended {
            return;
        }
        if close {
            out.write(b"Connection: close\r\n");
        } else if keep_alive_1_0 {
            out.write(b"Connection: keep-alive\r\n");
        }
        out.write(&self.extra);
        out.write(b"\r\n");
    }

    /// Refuses the request: the status, one line of why, and a close.
    fn refuse(&mut self, refusal: Refusal, out: &mut Output<'_>) {
        self.extra.clear();
        let body = refusal.reason.as_bytes();
        self.write_head(
            out,
            refusal.status,
            Some(body.len() as u64 + 1),
            true,
            false,
        );
        out.write(body);
        out.write(b"\n");
        self.current = None;
        out.finish();
    }

    /// Serves the current request on from `input`: reads its body, writes its response.
    /// Returns the input consumed, and whether the request is over.
    fn advance(&mut self, input: &[u8], out: &mut Output<'_>) -> (usize, bool) {
        let Some(request) = self.current.as_mut() else {
            return (0, true);
        };
        let mut used = 0;
        // 1. The body.
        while !request.reading.is_done() {
            let echo = request.echo != Echo::Off;
            // An echo is written only as far as the room goes: the rest waits for the peer to
            // read. A body that is dropped needs no room.
            let room = if echo { out.room() } else { usize::MAX };
            let avail = (input.len() - used).min(room);
            if avail == 0 {
                return (used, false);
            }
            let window = &input[used..used + avail];
            match &mut request.reading {
                Reading::Length(left) => {
                    let n = avail.min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if echo {
                        out.write(&window[..n]);
                    }
                    *left -= n as u64;
                    used += n;
                }
                Reading::Chunked(decoder, received) => {
                    let step = match decoder.decode(window) {
                        Ok(step) => step,
                        Err(e) => {
                            let refusal = Refusal {
                                status: 400,
                                reason: e.reason(),
                            };
                            return (input.len(), self.fail(refusal, out));
                        }
                    };
                    used += step.consumed;
                    *received += step.data.len() as u64;
                    if *received > self.limits.max_body {
                        return (input.len(), self.fail(too_large(), out));
                    }
                    if echo && !step.data.is_empty() {
                        response::chunk_size(out, step.data.len());
                        out.write(step.data);
                        out.write(b"\r\n");
                    }
                    if step.done && echo {
                        out.write(b"0\r\n\r\n");
                    }
                    if step.consumed == 0 {
                        return (used, false);
                    }
                }
            }
        }
        // 2. The response, now that the whole request has been read.
        if let Some(reply) = request.reply.take() {
            if out.room() == 0 {
                request.reply = Some(reply);
                return (used, false);
            }
            let length = match reply.body {
                ReplyBody::Static(b) => b.len() as u64,
                ReplyBody::Buffered => self.body.len() as u64,
                ReplyBody::Generated(n) => n,
            };
            let close = request.close;
            let request_generate = match reply.body {
                ReplyBody::Generated(n)
                    if !reply.head_only && !response::is_bodiless(reply.status) =>
                {
                    n
                }
                _ => 0,
            };
            if let Some(d) = reply.delay {
                // Held as the `delay` fault holds a reply: pending output, under the
                // watermarks, and what later calls write waits behind it.
                out.hold(d);
            }
            self.write_head(out, reply.status, Some(length), close, reply.keep_alive_1_0);
            if !reply.head_only && !response::is_bodiless(reply.status) {
                match reply.body {
                    ReplyBody::Static(b) => out.write(b),
                    ReplyBody::Buffered => out.write(&self.body),
                    ReplyBody::Generated(_) => {}
                }
            }
            let request = self.current.as_mut().expect("current request");
            request.generate = request_generate;
        }
        // 3. A generated body, as far as the room goes.
        if !self.generate(out) {
            return (used, false);
        }
        (used, self.complete(out))
    }

    /// Writes the generated body on, up to the room there is. Returns whether it is done.
    fn generate(&mut self, out: &mut Output<'_>) -> bool {
        let Some(request) = self.current.as_mut() else {
            return true;
        };
        while request.generate > 0 {
            let room = out.room().min(GENERATE_CHUNK);
            if room == 0 {
                return false;
            }
            let offset = (request.generated % CYCLE.len() as u64) as usize;
            let n = room
                .min(CYCLE.len() - offset)
                .min(usize::try_from(request.generate).unwrap_or(usize::MAX));
            out.write_static(&CYCLE[offset..offset + n]);
            request.generate -= n as u64;
            request.generated += n as u64;
        }
        true
    }

    /// The request and its response are done: close if asked, or wait for the next.
    fn complete(&mut self, out: &mut Output<'_>) -> bool {
        // One response is one reply, for the faults that count them (pipelined requests).
        out.end_reply();
        if let Some(request) = self.current.take() {
            if request.close {
                out.finish();
            }
        }
        true
    }

    /// The request body is bad or too large. Refused with a response if none has begun;
    /// an echo that has begun is cut short (no last chunk, so the client sees the response
    /// end early) and the connection closes.
    fn fail(&mut self, refusal: Refusal, out: &mut Output<'_>) -> bool {
        let started = self.current.as_ref().is_some_and(|r| r.echo != Echo::Off);
        if started {
            log::debug!("http: {} after the echo began; closing", refusal.reason);
            self.current = None;
            out.finish();
        } else {
            self.refuse(refusal, out);
        }
        true
    }
}

fn too_large() -> Refusal {
    Refusal {
        status: 413,
        reason: "request body too large",
    }
}

/// A `header=Name:Value` knob: decoded, checked, and added to the response's extra lines.
fn header_knob(value: &str, scratch: &mut Vec<u8>, extra: &mut Vec<u8>) -> Result<(), BadKnob> {
    const BAD: BadKnob = BadKnob {
        status: 400,
        reason: "a header knob is Name:Value, a token and visible characters",
    };
    knobs::percent_decode(value, scratch)?;
    let colon = scratch.iter().position(|&b| b == b':').ok_or(BAD)?;
    let (name, value) = (&scratch[..colon], scratch[colon + 1..].trim_ascii());
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let visible = |b: &u8| (0x20..0x7f).contains(b) || *b == b'\t';
    if name.is_empty() || !name.iter().all(token) || !value.iter().all(visible) {
        return Err(BAD);
    }
    extra.extend_from_slice(name);
    extra.extend_from_slice(b": ");
    extra.extend_from_slice(value);
    extra.extend_from_slice(b"\r\n");
    Ok(())
}

impl Service for Http {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        let mut used = 0;
        loop {
            if out.is_finished() {
                return input.len();
            }
            if self.current.is_some() {
                let (n, done) = self.advance(&input[used..], out);
                used += n;
                if out.is_finished() {
                    return input.len();
                }
                if !done {
                    return used;
                }
                continue;
            }
            // The output contract: a new request only while output has room.
            if used == input.len() || out.room() == 0 {
                return used;
            }
            match head::parse(&input[used..], self.limits.max_head) {
                Parsed::Partial => return used,
                Parsed::Refused(refusal) => {
                    self.refuse(refusal, out);
                    return input.len();
                }
                Parsed::Complete(head) => {
                    used += head.len;
                    self.begin(&head, out);
                }
            }
        }
    }

    fn on_drained(&mut self, out: &mut Output<'_>) {
        // Only a generated body goes on by itself; everything else waits for input.
        let generating = self
            .current
            .as_ref()
            .is_some_and(|r| r.reply.is_none() && r.reading.is_done() && r.generate > 0);
        if generating && self.generate(out) {
            self.complete(out);
        }
    }

    fn on_peer_finished(&mut self, out: &mut Output<'_>) {
        // A request cut short gets no answer; a response being generated is finished first.
        let generating = self
            .current
            .as_ref()
            .is_some_and(|r| r.reply.is_none() && r.reading.is_done() && r.generate > 0);
        if !generating {
            out.finish();
        }
    }

    fn on_request_timeout(&mut self, out: &mut Output<'_>) {
        self.refuse(
            Refusal {
                status: 408,
                reason: "request incomplete within the request timeout",
            },
            out,
        );
    }

    fn input_limit(&self) -> Option<usize> {
        // A partial head; bodies are consumed as they arrive.
        Some(self.limits.max_head)
    }
}

#[cfg(test)]
mod tests;
