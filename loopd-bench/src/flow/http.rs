//! The HTTP/1.1 discipline (`--protocol http`): requests written as the byte-stream
//! discipline writes any request stream, responses read by [`ResponseParser`] and checked
//! one by one.
//!
//! * **Requests** are the codec's messages: the run's request head, then for `POST` a body
//!   of `-s` payload bytes ([`Codec::http`](crate::payload::Codec::http)), generated as they
//!   are written, `--pipeline` of them in flight. The write path is the stream discipline's
//!   own (`Requests`, in [`super::stream`]).
//! * **Responses** complete the oldest request in flight, in order (HTTP/1.1 answers in
//!   order). Each is checked: its status against what the run expects (a status not
//!   expected is counted, `http_status`, and the run goes on: the response itself is
//!   sound), its framing (errors of their own kind: `http_head`, `http_length`,
//!   `http_chunked`, which end the connection, since nothing after them can be read), and
//!   for `POST /echo` its body, byte for byte against the body sent, with the first
//!   differing byte located as for any echo.
//! * **Backends.** Every response of a loopd `http` backend names it in `loopd-server`; the
//!   response, its bytes and its latency are counted under that backend (`--per-backend`).
//!   Behind an L7 balancer, the requests of one connection may be answered by different
//!   backends, so the backend is read per response, not per connection.

use std::marker::PhantomData;
use std::time::Instant;

use super::backend::Backend;
use super::stream::{flush_layer, receive_replies, Received, Requests};
use super::wire::{Conn, Wire, WriteEnd};
use super::{Ctx, Failure, Pending};
use crate::errors::ErrorKind;
use crate::http::{Event, FramingError, ResponseParser};
use crate::payload::{Cursor, Dir};
use crate::transport::{Handshake, Stream};

/// The HTTP [`Wire`] over a stream socket `S`.
#[derive(Debug)]
pub struct Http<S>(PhantomData<S>);

/// Where a connection's requests and responses are.
#[derive(Debug)]
pub struct HttpState {
    /// How far the requests are written.
    written: Cursor,
    /// Where the echoed bodies are checked to (the reply stream is the bodies, in order).
    replied: Cursor,
    /// The response stream.
    parser: ResponseParser,
    /// The response being read: its status, and the backend it names.
    status: u16,
    backend: Option<usize>,
}

impl<S: Stream> Wire for Http<S> {
    type Socket = S;
    type State = HttpState;
    const HANDSHAKE: bool = true;
    const LOSSY: bool = false;
    const ASKS_BACKEND: bool = false;

    fn handshake(socket: &mut S) -> Handshake {
        socket.handshake()
    }

    fn start(seq: u64) -> HttpState {
        let at = Cursor { seq, offset: 0 };
        HttpState {
            written: at,
            replied: at,
            parser: ResponseParser::new(),
            status: 0,
            backend: None,
        }
    }

    /// Queues the request; its bytes are generated when written.
    fn send(conn: &mut Conn<Self>, _: &mut Ctx<S>, p: Pending) -> Result<bool, Failure> {
        conn.inflight.push_back(p);
        Ok(true)
    }

    fn write(
        conn: &mut Conn<Self>,
        cx: &mut Ctx<S>,
        now: Instant,
        budget: &mut usize,
    ) -> Result<WriteEnd, Failure> {
        if let Some(end) = flush_layer(&mut conn.socket, &mut conn.blocked)? {
            return Ok(end);
        }
        // Request bytes are counted under the connection's last backend: the backend of a
        // request is known only from its response.
        let backend = conn.backend.index();
        let (id, next_seq) = (conn.id, conn.next_seq);
        let out = Requests {
            socket: &mut conn.socket,
            blocked: &mut conn.blocked,
            written: &mut conn.wire.written,
        };
        out.write(id, next_seq, backend, cx, now, budget)
    }

    fn queued(conn: &Conn<Self>) -> u64 {
        conn.next_seq - conn.wire.written.seq
    }

    fn receive(conn: &mut Conn<Self>, cx: &mut Ctx<S>, now: Instant) -> Result<(), Failure> {
        let mut scratch = std::mem::take(&mut cx.buffers.scratch);
        let Conn {
            id,
            socket,
            wire,
            inflight,
            served,
            backend,
            peer_closing,
            ..
        } = conn;
        let mut responses = Responses {
            id: *id,
            wire,
            inflight,
            served,
            backend,
        };
        let received = receive_replies(socket, &mut scratch, *peer_closing, |data| {
            responses.take(cx, data, now)
        });
        cx.buffers.scratch = scratch;
        match received? {
            Received::Drained => Ok(()),
            Received::Budget => {
                conn.read_pending = true;
                Ok(())
            }
            Received::Eof => Err(peer_closed(conn)),
        }
    }

    fn expire(_: &mut Conn<Self>, _: &mut Ctx<S>, _: Instant, _: Instant) -> bool {
        false // a stream loses nothing: what is late is waited for, up to the drain grace
    }

    fn abandon(conn: &mut Conn<Self>, cx: &mut Ctx<S>, why: &str, replies: bool) {
        let id = conn.id;
        let backend = conn.backend.index();
        let unwritten = conn.next_seq - conn.wire.written.seq;
        if unwritten > 0 {
            cx.record.backend_errors(backend, 1);
            cx.record.error(ErrorKind::Stalled, 1, || {
                format!(
                    "connection {id}: {unwritten} requests could not be written ({why}): the \
                     server stopped reading"
                )
            });
        }
        let unanswered = conn.inflight.len() as u64;
        if unanswered > 0 && replies {
            cx.record.backend_errors(backend, unanswered);
            cx.record.error(ErrorKind::Unanswered, unanswered, || {
                format!("connection {id}: {unanswered} responses outstanding, {why}")
            });
        }
    }

    fn heard(_: &Conn<Self>) -> bool {
        false // no handshake mode over HTTP
    }
}

/// The server closed its side while the flow still used the connection.
fn peer_closed<S: Stream>(conn: &Conn<Http<S>>) -> Failure {
    let n = conn.inflight.len();
    if !conn.wire.parser.at_boundary() {
        Failure::new(
            ErrorKind::ShortEcho,
            format!("closed in the middle of a response, {n} outstanding"),
        )
    } else {
        Failure::new(
            ErrorKind::UnexpectedClose,
            format!("server closed the connection with {n} responses outstanding"),
        )
    }
}

/// The parts of a connection that what it reads changes (everything but the socket).
struct Responses<'c> {
    id: u32,
    wire: &'c mut HttpState,
    inflight: &'c mut std::collections::VecDeque<Pending>,
    served: &'c mut bool,
    backend: &'c mut Backend,
}

impl Responses<'_> {
    /// Takes bytes read from the stream: counts them, and checks each response in them.
    fn take<S>(&mut self, cx: &mut Ctx<S>, data: &[u8], now: Instant) -> Result<(), Failure> {
        // Bytes are counted as they arrive, heads included, under the backend of the
        // connection's last response.
        cx.record.received(data.len(), now, self.backend.index());
        cx.record.served(self.served, now);
        let mut failure: Option<Failure> = None;
        let Responses {
            id,
            wire,
            inflight,
            backend,
            ..
        } = self;
        let HttpState {
            parser,
            replied,
            status,
            backend: current,
            ..
        } = &mut **wire;
        let verify = cx.cfg.http.verifies_echo();
        let parsed = parser.feed(data, |event| {
            let outcome = match event {
                Event::Head {
                    status: s, server, ..
                } => {
                    *status = s;
                    *current = None;
                    match server {
                        Some(server_id) => {
                            let tally = &mut cx.record.tally;
                            let index = tally.backend(server_id);
                            if backend.index().is_none() {
                                // A connection is counted under the first backend that
                                // answers it.
                                tally.backends[index].connections += 1;
                                **backend = Backend::Known(index);
                            }
                            *current = Some(index);
                            Ok(())
                        }
                        None if cx.cfg.per_backend => Err(Failure::new(
                            ErrorKind::Mismatch,
                            "a response without a loopd-server header: is the target loopd's \
                             http service (or a balancer in front of it)?",
                        )),
                        None => Ok(()),
                    }
                }
                Event::Body(body) => {
                    if verify && cx.cfg.http.expects(*status) {
                        let end = replied.seq + 1;
                        cx.codec
                            .check(*id, replied, end, body)
                            .map(|_| ())
                            .map_err(|m| Failure::new(ErrorKind::Mismatch, m.to_string()))
                    } else {
                        Ok(())
                    }
                }
                Event::End => complete(cx, *id, inflight, replied, *status, *current, verify, now),
            };
            match outcome {
                Ok(()) => true,
                Err(f) => {
                    failure = Some(f);
                    false
                }
            }
        });
        if let Some(f) = failure {
            return Err(f);
        }
        parsed.map_err(|e| {
            let kind = match e {
                FramingError::Head(_) => ErrorKind::HttpHead,
                FramingError::Length(_) => ErrorKind::HttpLength,
                FramingError::Chunked(_) => ErrorKind::HttpChunked,
            };
            Failure::new(kind, e.to_string())
        })
    }
}

/// A response is complete: it answers the oldest request in flight.
#[allow(clippy::too_many_arguments)]
fn complete<S>(
    cx: &mut Ctx<S>,
    id: u32,
    inflight: &mut std::collections::VecDeque<Pending>,
    replied: &mut Cursor,
    status: u16,
    backend: Option<usize>,
    verify: bool,
    now: Instant,
) -> Result<(), Failure> {
    let Some(p) = inflight.pop_front() else {
        return Err(Failure::new(
            ErrorKind::Mismatch,
            format!("a response ({status}) to no request"),
        ));
    };
    let expected = cx.cfg.http.expects(status);
    if verify && expected {
        // The body is the payload sent, whole: the check must stand exactly at the next one.
        let len = cx.codec.len(Dir::Reply);
        if *replied
            != (Cursor {
                seq: p.seq + 1,
                offset: 0,
            })
        {
            let got = if replied.seq > p.seq {
                len
            } else {
                replied.offset
            };
            return Err(Failure::new(
                ErrorKind::HttpLength,
                format!(
                    "message {}: the echo is {got} bytes, {len} were sent",
                    p.seq
                ),
            ));
        }
    } else {
        // Not checked (another path, or a status that carries some other body): the
        // reply stream moves on to the next message.
        *replied = Cursor {
            seq: p.seq + 1,
            offset: 0,
        };
    }
    if cx.record.plan.measured(p.intended) {
        *cx.record.tally.http_status.entry(status).or_default() += 1;
    }
    if !expected {
        cx.record.backend_errors(backend, 1);
        cx.record.error(ErrorKind::HttpStatus, 1, || {
            format!("connection {id}: message {} answered {status}", p.seq)
        });
    }
    cx.record.completed(p.intended, p.sent, now, backend);
    Ok(())
}
