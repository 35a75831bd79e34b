//! The handshake stage: a socket layer (TLS) completes its handshake before the service
//! exists, and what it settled — version, cipher suite, SNI, ALPN, the client's certificate —
//! becomes the service's [`ConnInfo`](crate::service::ConnInfo).
//!
//! The stage drives the layer through the same [`Socket`] as serving does: a read moves the
//! handshake on (rustls processes the client's flight and writes its answer at once), and a
//! flush sends a flight that did not fit in the socket. It asks the layer's
//! [`Handshake`](crate::socket::Handshake) only when it is over and how. Plaintext that
//! arrived right behind the client's last handshake message is the service's first input,
//! offered once it has greeted (as the bytes after a PROXY header are).
//!
//! Three things bound what a handshake can cost the loop:
//!
//! * **The handshake budget.** The expensive step of a full handshake — the key exchange and
//!   the certificate signature, hundreds of microseconds — happens inside a read. A turn
//!   that reads takes one step of the loop's per-turn budget ([`Context::handshakes`]);
//!   with none left, the stage yields and the loop runs it next turn from the run queue,
//!   without waiting for an event. Established connections are served in between.
//! * **The handshake timeout**, counted from accept: a client that connects and never
//!   finishes is closed.
//! * **No plaintext before the keys.** The service does not exist yet, so nothing can be
//!   written before the handshake completes.

use std::time::Instant;

use log::{debug, info, warn};

use super::{Context, Io, Read};
use crate::buffer::Buffer;
use crate::proxy::Origin;
use crate::service::Negotiated;
use crate::socket::{HandshakeEnd, Socket};
use crate::stats::{CloseReason, HandshakeFailure};

/// What the log calls this stage when a read fails in it.
const STAGE: &str = "HANDSHAKE";

/// How a turn of the stage ended.
pub(crate) enum Progress {
    /// Completed: serve (boxed: the other ends are a word).
    Done(Box<Handover>),
    /// Nothing more now: wait for the next event or the deadline.
    Waiting,
    /// Out of budget (the turn's reads, or the loop's handshakes) with work left: run again
    /// next turn.
    Yield,
    /// The handshake failed (counted and logged) or the socket did.
    Failed(CloseReason),
}

/// What a completed handshake hands to the service it creates.
pub(crate) struct Handover {
    /// What a PROXY header said (or the peer's own connection).
    pub(crate) origin: Origin,
    /// What the handshake settled.
    pub(crate) negotiated: Negotiated,
    /// Plaintext that arrived with the handshake's end, offered to the service first.
    pub(crate) input: Buffer,
}

/// A handshake under way.
pub(crate) struct Handshake {
    /// What a PROXY header before it said, for the service.
    origin: Origin,
    /// Bytes a stage below the layer read that belong to it (after a PROXY header), handed
    /// to the layer when it begins.
    early: Buffer,
    begun: bool,
    /// Plaintext read after the handshake completed, for the service.
    input: Buffer,
    /// When the stage began: the handshake's duration, for the histogram.
    started: Instant,
}

impl Handshake {
    /// A handshake whose layer begins with `early` bytes, for a client `origin` names.
    pub(crate) fn new(origin: Origin, early: Buffer) -> Handshake {
        Handshake {
            origin,
            early,
            begun: false,
            input: Buffer::new(),
            started: Instant::now(),
        }
    }

    /// Heap bytes held.
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.early.capacity() + self.input.capacity()
    }

    /// Sends what the layer has queued, reads the client's flight (if the loop's handshake
    /// budget allows), and says whether the handshake is over.
    pub(crate) fn turn<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> Progress {
        if io.socket.has_pending_output() && !io.write_blocked {
            // A flight that did not fit in the socket: the writable edge brought us here.
            match io.socket.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => io.write_blocked = true,
                Err(e) => return Progress::Failed(io.error("flush", &e, &STAGE)),
            }
        }
        if self.begun && !io.read_ready {
            return Progress::Waiting;
        }
        if *cx.handshakes == 0 {
            // The loop's handshake work for this turn is done: wait our turn in the run
            // queue, which keeps arrival order.
            return Progress::Yield;
        }
        *cx.handshakes -= 1;
        if !self.begun {
            self.begun = true;
            let early = std::mem::take(&mut self.early);
            let Some(layer) = io.socket.handshake() else {
                warn!(
                    "conn {}: a handshake stage, and no layer to shake hands",
                    io.id
                );
                return Progress::Failed(CloseReason::Error);
            };
            let begun = layer.begin(early.as_slice());
            if let Some(done) = self.end(io, cx) {
                return done;
            }
            if begun.is_err() {
                return Progress::Failed(CloseReason::Tls);
            }
        }
        let mut fin = false;
        while io.read_ready && *budget > 0 {
            let want = cx.scratch.len().min(*budget).min(cx.limits.high_watermark);
            match io.read(&mut cx.scratch[..want], cx.now, &STAGE) {
                Read::Data(n) => {
                    *budget -= n;
                    self.input.extend(&cx.scratch[..n]);
                }
                Read::Fin => fin = true,
                Read::Drained => {}
                Read::Failed(reason) => {
                    return self.end(io, cx).unwrap_or(Progress::Failed(reason));
                }
            }
            if let Some(done) = self.end(io, cx) {
                if fin {
                    // The peer's FIN came with the end of the handshake: serving reads it
                    // again (the layer and the socket both say 0 again).
                    io.read_ready = true;
                }
                return done;
            }
        }
        if io.read_ready {
            Progress::Yield
        } else {
            Progress::Waiting
        }
    }

    /// The handshake deadline passed: counted and logged as a timeout.
    pub(crate) fn timed_out<S: Socket>(&self, io: &mut Io<S>, cx: &Context<'_>) -> CloseReason {
        let end = match io.socket.handshake() {
            Some(layer) => layer.timed_out(),
            None => HandshakeEnd::Failed {
                how: HandshakeFailure::Timeout,
                why: "handshake timed out".into(),
            },
        };
        self.failed(io, cx, end);
        CloseReason::Handshake
    }

    /// The layer's verdict, if it has one: serve, or close (counted and logged).
    fn end<S: Socket>(&mut self, io: &mut Io<S>, cx: &Context<'_>) -> Option<Progress> {
        match io.socket.handshake()?.end()? {
            HandshakeEnd::Completed(negotiated) => {
                let micros = self.started.elapsed().as_micros() as u64;
                let tls13 = negotiated.version == "TLSv1.3";
                cx.stats.tls.completed(tls13, negotiated.resumed, micros);
                debug!("conn {}: TLS handshake in {micros} µs: {negotiated}", io.id);
                Some(Progress::Done(Box::new(Handover {
                    origin: self.origin,
                    negotiated,
                    input: std::mem::take(&mut self.input),
                })))
            }
            failed => Some(self.failed(io, cx, failed)),
        }
    }

    /// Counts and logs a failed handshake: one line, at a level by how ordinary it is.
    fn failed<S>(&self, io: &Io<S>, cx: &Context<'_>, end: HandshakeEnd) -> Progress {
        let HandshakeEnd::Failed { how, why } = end else {
            return Progress::Failed(CloseReason::Handshake);
        };
        cx.stats.tls.failed(how);
        match how {
            // A TCP health check, a client that gave up: everyday events.
            HandshakeFailure::Closed => debug!("conn {}: {why}", io.id),
            _ => info!("conn {}: TLS handshake failed: {why}; closing", io.id),
        }
        Progress::Failed(CloseReason::Handshake)
    }
}
