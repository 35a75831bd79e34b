//! The TLS layer: a rustls server session over a transport, read and written as plaintext.
//!
//! **Read this first.** [`TlsStream`] sits where the TCP socket sat: under the connection
//! state machine, which reads and writes plaintext through it exactly as it would through the
//! socket. The layer owns the rustls [`ServerConnection`] and the transport (the TCP socket),
//! and keeps the edge-triggered rules of `docs/02-event-loop.md` by construction. The three
//! places where TLS changes them:
//!
//! 1. **Buffered plaintext raises no edge.** One socket read can bring several records, and one
//!    record can decrypt to more plaintext than the caller asked for; the socket is then
//!    drained while rustls still holds bytes, and no edge will announce them. So
//!    [`read`](Read::read) fills the caller's buffer from what rustls holds *before* it reads
//!    the socket again, and keeps reading until the buffer is full or the socket has nothing
//!    more. The contract the connection relies on for a plain socket holds again: a read that
//!    comes back **short** means the socket returned a short read or `WouldBlock` *and* rustls
//!    holds no plaintext; a **full** read means there may be more (it is
//!    [`has_plaintext`](TlsStream::has_plaintext) or still in the socket). `WouldBlock` is
//!    returned only when the socket itself said so, so a later edge is guaranteed.
//! 2. **Output of its own.** Handshake flights, session tickets, alerts and `close_notify`
//!    exist without the service writing a byte. The layer writes them eagerly — right after
//!    the read that produced them — and whatever the socket does not take stays queued:
//!    [`pending_output`](TlsStream::pending_output) is non-zero, the connection derives
//!    WRITABLE interest from it as from its own buffer, and calls [`flush`](Write::flush) on
//!    the writable edge.
//! 3. **Bounds.** rustls's outgoing queue is capped ([`DEFAULT_OUTPUT_LIMIT`], set with
//!    `set_buffer_limit`): a write takes plaintext only while the queue has room, so a peer
//!    that never reads cannot grow it, and what the layer queues counts against the
//!    connection's watermark through `pending_output`. On the way in, rustls refuses to read
//!    more ciphertext while it holds more than 16 KiB of plaintext (`read_tls` fails); the
//!    layer calls `read_tls` only when rustls holds no plaintext at all, so that limit is
//!    never reached, and when the connection stops reading (backpressure) the layer stops
//!    reading the socket with it: TCP flow control pushes back on the peer, as without TLS.
//!
//! # Closing
//!
//! ```text
//!  our side:   Open ──shutdown_write()──▶ close_notify queued ──(flushed)──▶ FIN sent
//!  peer side:  Open ──close_notify──▶ read() == 0          (a clean end: PeerClose::CloseNotify)
//!                   ──FIN alone────▶ read() == 0          (a truncation: PeerClose::Truncated)
//! ```
//!
//! * [`shutdown_write`](TlsStream::shutdown_write) queues our `close_notify` and sends FIN only
//!   once every queued record, `close_notify` last, has left: it returns `WouldBlock` while
//!   they wait for the socket, and is called again on the writable edge. rustls never sends
//!   `close_notify` by itself.
//! * TLS 1.3 (RFC 8446 §6.1): each direction closes on its own. After the peer's
//!   `close_notify` we may go on writing, so echo delivers everything received before it;
//!   after ours, the peer may go on writing and we go on reading.
//! * TLS 1.2 (RFC 5246 §7.2.1): the peer's `close_notify` must be answered with ours at once,
//!   "discarding any pending writes". Records already queued go out before our
//!   `close_notify` (they are ahead of it in the stream); plaintext written after it is
//!   dropped and counted ([`discarded`](TlsStream::discarded)).
//! * A TCP FIN without `close_notify` also reads as `0` — the connection's half-close logic
//!   is the same — but [`peer_close`](TlsStream::peer_close) tells the two apart, so that
//!   truncations can be counted. A service that needs the difference (a length given by the
//!   end of the stream) can ask.
//!
//! # Handshake
//!
//! [`is_handshaking`](TlsStream::is_handshaking) says where the session is, and
//! [`take_handshake_event`](TlsStream::take_handshake_event) returns the handshake's outcome
//! exactly once — completed, or failed with an alert sent or received, a peer that closed,
//! or bytes that are not TLS at all (a plaintext HTTP request, or a PROXY header sent to a
//! listener that does not expect one) — for the handshake budget, timeout and metrics.
//! [`negotiated`](TlsStream::negotiated) describes the session for logs and the `line`
//! service. The service should be created only once the handshake has completed (the stage
//! before serving): plaintext written earlier is held by rustls, within the same limit.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{AlertDescription, HandshakeKind, ServerConfig, ServerConnection};

use super::x509;
pub use crate::service::Negotiated;

/// Cap on rustls's queue of outgoing records (and on plaintext written before the handshake
/// completes). 64 KiB is four full-size records: one `write` syscall carries as much as the
/// loop reads in one go (its 64 KiB scratch buffer), and a peer that stops reading pins at
/// most this much encrypted output on top of the connection's own watermark.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// What the layer needs of the socket under it, beyond bytes: sending FIN.
pub trait Transport: Read + Write {
    /// Shuts down the sending half (FIN).
    fn shutdown_write(&mut self) -> io::Result<()>;
}

/// How the peer ended its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClose {
    /// A `close_notify` alert: everything the peer sent has arrived.
    CloseNotify,
    /// TCP FIN without `close_notify`: the stream may have been cut short.
    Truncated,
}

/// What bytes that are not TLS look like, for a clearer log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTls {
    /// A plaintext HTTP request (`GET /…`).
    Http,
    /// A PROXY protocol header (v1 or v2) at a listener that expects none.
    ProxyHeader,
    /// Something else.
    Other,
}

/// How a handshake ended. Reported once by [`TlsStream::take_handshake_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum HandshakeOutcome {
    /// Completed: application data may flow.
    Ok,
    /// We refused: rustls found the peer's messages unacceptable and sent an alert (no common
    /// version, cipher suite or group; a bad client certificate; an unknown name under strict
    /// SNI).
    AlertSent(rustls::Error),
    /// The peer refused, with this alert (it does not trust our certificate, for one).
    AlertReceived(AlertDescription),
    /// The first bytes were not a TLS record.
    NotTls(NotTls),
    /// The peer closed or reset before the handshake completed (a TCP health check, a
    /// client that gave up).
    Closed,
    /// The handshake did not complete in time ([`TlsStream::handshake_timed_out`]).
    Timeout,
}

impl HandshakeOutcome {
    /// A short label for metrics: `ok`, `alert_sent`, `alert_received`, `not_tls`, `closed`
    /// or `timeout`.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeOutcome::Ok => "ok",
            HandshakeOutcome::AlertSent(_) => "alert_sent",
            HandshakeOutcome::AlertReceived(_) => "alert_received",
            HandshakeOutcome::NotTls(_) => "not_tls",
            HandshakeOutcome::Closed => "closed",
            HandshakeOutcome::Timeout => "timeout",
        }
    }
}

impl fmt::Display for HandshakeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeOutcome::Ok => f.write_str("handshake completed"),
            HandshakeOutcome::AlertSent(e) => write!(f, "handshake refused: {e}"),
            HandshakeOutcome::AlertReceived(a) => write!(f, "peer refused the handshake: {a:?}"),
            HandshakeOutcome::NotTls(NotTls::Http) => {
                f.write_str("a plaintext HTTP request at a TLS listener")
            }
            HandshakeOutcome::NotTls(NotTls::ProxyHeader) => {
                f.write_str("a PROXY header at a TLS listener without `proxy`")
            }
            HandshakeOutcome::NotTls(NotTls::Other) => f.write_str("not TLS"),
            HandshakeOutcome::Closed => f.write_str("peer closed during the handshake"),
            HandshakeOutcome::Timeout => f.write_str("handshake timed out"),
        }
    }
}

/// Our sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// `close_notify` is queued; FIN follows once the queue is flushed, if asked for.
    CloseNotifyQueued,
    /// TLS 1.2: we answered the peer's `close_notify`; writes are discarded (RFC 5246).
    Answered,
    /// FIN sent.
    FinSent,
}

/// Whether the socket answered with all it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    All,
    Blocked,
}

/// A rustls server session over a transport, read and written as plaintext. See the
/// [module documentation](self).
pub struct TlsStream<S> {
    tls: ServerConnection,
    io: S,
    write_side: WriteSide,
    /// `shutdown_write` was called: send FIN once the queue is flushed.
    fin_wanted: bool,
    peer_close: Option<PeerClose>,
    /// The fatal error, once there is one; every later call reports it again.
    failed: Option<rustls::Error>,
    /// Set when the handshake ends; taken once.
    outcome: Option<HandshakeOutcome>,
    event_taken: bool,
    /// The first bytes the peer sent, to recognise a peer that does not speak TLS.
    first: [u8; 8],
    first_len: u8,
    discarded: u64,
    /// Encrypted bytes queued for the socket, as of the last call.
    queued: usize,
    /// Decrypted bytes held for reading, as of the last call.
    plaintext: usize,
}

impl<S: Transport> TlsStream<S> {
    /// A server session for a freshly accepted transport. `output_limit` caps rustls's queue
    /// of outgoing records (see [`DEFAULT_OUTPUT_LIMIT`]).
    pub fn new(
        config: Arc<ServerConfig>,
        io: S,
        output_limit: usize,
    ) -> Result<Self, rustls::Error> {
        let mut tls = ServerConnection::new(config)?;
        tls.set_buffer_limit(Some(output_limit));
        Ok(TlsStream {
            tls,
            io,
            write_side: WriteSide::Open,
            fin_wanted: false,
            peer_close: None,
            failed: None,
            outcome: None,
            event_taken: false,
            first: [0; 8],
            first_len: 0,
            discarded: 0,
            queued: 0,
            plaintext: 0,
        })
    }

    /// The transport, for registration with the poller and socket options.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The transport, for registration with the poller and socket options (`SO_LINGER` for
    /// an abortive close: no `close_notify` then, by design).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The rustls session, for what this layer does not wrap.
    pub fn session(&self) -> &ServerConnection {
        &self.tls
    }

    /// The handshake has not completed (or has failed).
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// rustls holds decrypted plaintext not yet read: reading can go on without the socket.
    pub fn has_plaintext(&self) -> bool {
        self.plaintext > 0
    }

    /// Encrypted bytes (records, alerts, `close_notify`) queued for the socket, and a FIN not
    /// yet sent after a `shutdown_write` counts as one: the connection registers WRITABLE
    /// while this is non-zero, and counts it against its high watermark.
    pub fn pending_output(&self) -> usize {
        let fin = usize::from(self.fin_wanted && self.write_side != WriteSide::FinSent);
        self.queued + fin
    }

    /// The handshake's outcome, once: `Some` on the first call after the handshake completed
    /// or failed, `None` before and after.
    pub fn take_handshake_event(&mut self) -> Option<HandshakeOutcome> {
        if self.event_taken {
            return None;
        }
        let outcome = self.outcome.clone()?;
        self.event_taken = true;
        Some(outcome)
    }

    /// Records that the handshake ran out of time, if it is still under way: the outcome
    /// becomes [`HandshakeOutcome::Timeout`]. Returns whether it was still under way.
    pub fn handshake_timed_out(&mut self) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        self.outcome = Some(HandshakeOutcome::Timeout);
        true
    }

    /// The session's parameters, once the handshake has completed.
    pub fn negotiated(&self) -> Option<Negotiated> {
        if self.tls.is_handshaking() {
            return None;
        }
        let suite = self.tls.negotiated_cipher_suite()?;
        Some(Negotiated {
            version: match self.tls.protocol_version()? {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                _ => "other",
            },
            cipher_suite: suite.suite().as_str().unwrap_or("unknown"),
            group: self
                .tls
                .negotiated_key_exchange_group()
                .and_then(|g| g.name().as_str()),
            alpn: self
                .tls
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            sni: self.tls.server_name().map(str::to_owned),
            resumed: self.tls.handshake_kind() == Some(HandshakeKind::Resumed),
            client_subject: self
                .tls
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| x509::subject(cert)),
        })
    }

    /// The fatal TLS error that ended the session, if one did (for the log line).
    pub fn error(&self) -> Option<&rustls::Error> {
        self.failed.as_ref()
    }

    /// How the peer ended its side, once [`read`](Read::read) has returned `0`.
    pub fn peer_close(&self) -> Option<PeerClose> {
        self.peer_close
    }

    /// Plaintext bytes dropped because they were written after a TLS 1.2 peer's
    /// `close_notify` (see the [module documentation](self)).
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Ends our sending side: queues `close_notify` (once) and flushes; sends FIN once it and
    /// everything before it has left. Returns `WouldBlock` while records wait for the
    /// socket: call again when it is writable (or call [`flush`](Write::flush), which
    /// finishes the job). Never sends FIN with records still queued.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if self.write_side == WriteSide::Open {
            self.tls.send_close_notify();
            self.write_side = WriteSide::CloseNotifyQueued;
        }
        self.fin_wanted = true;
        let flushed = self.flush_tls();
        self.refresh();
        match flushed? {
            Flushed::All => Ok(()),
            Flushed::Blocked => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Updates the counts rustls reports only through `process_new_packets`' IoState. Every
    /// record read has been processed already (right after `read_tls`), so this processes
    /// nothing new: rustls's deframer holds at most part of a record here.
    fn refresh(&mut self) {
        match self.tls.process_new_packets() {
            Ok(state) => {
                self.queued = state.tls_bytes_to_write();
                self.plaintext = state.plaintext_bytes_to_read();
            }
            // Failed: rustls reports only whether an alert is still queued.
            Err(_) => {
                self.queued = usize::from(self.tls.wants_write());
                self.plaintext = 0;
            }
        }
    }

    /// Writes queued records until none is left or the socket would block; then the FIN, if
    /// one is wanted and `close_notify` has left.
    fn flush_tls(&mut self) -> io::Result<Flushed> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.io) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.fin_wanted && self.write_side != WriteSide::FinSent {
            self.io.shutdown_write()?;
            self.write_side = WriteSide::FinSent;
        }
        Ok(Flushed::All)
    }

    /// Copies plaintext rustls holds into `buf`.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> usize {
        // An error here is `WouldBlock` (none held) or the end-of-stream states, which the
        // caller learns from `peer_close`: nothing to copy now either way.
        self.tls.reader().read(buf).unwrap_or_default()
    }

    /// Processes records that arrived before the layer began, read by a stage below it (the
    /// bytes that followed a PROXY header), as if they had just come from the socket: the
    /// handshake moves on, and what it wants to send is written at once. An error is the
    /// handshake's failure, as from [`read`](Read::read).
    pub fn receive(&mut self, mut early: &[u8]) -> io::Result<()> {
        let result = loop {
            if early.is_empty() {
                break Ok(());
            }
            let mut probe = Probe {
                io: &mut early,
                short: false,
                first: &mut self.first,
                first_len: &mut self.first_len,
            };
            if let Err(e) = self.tls.read_tls(&mut probe) {
                // More than rustls buffers before processing: not a TLS client's first flight.
                self.outcome
                    .get_or_insert(HandshakeOutcome::NotTls(NotTls::Other));
                break Err(e);
            }
            if let Err(e) = self.process() {
                break Err(e);
            }
        };
        self.refresh();
        result
    }

    /// Reads ciphertext once and processes it. Returns how the socket answered.
    fn read_socket(&mut self) -> io::Result<SocketRead> {
        let mut probe = Probe {
            io: &mut self.io,
            short: false,
            first: &mut self.first,
            first_len: &mut self.first_len,
        };
        let n = loop {
            match self.tls.read_tls(&mut probe) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(SocketRead::Blocked),
                Err(e) => {
                    if self.outcome.is_none() {
                        self.outcome = Some(HandshakeOutcome::Closed);
                    }
                    return Err(e);
                }
            }
        };
        let short = probe.short;
        if n == 0 {
            if self.tls.is_handshaking() && self.outcome.is_none() {
                self.outcome = Some(HandshakeOutcome::Closed);
            }
            if self.peer_close.is_none() {
                self.peer_close = Some(PeerClose::Truncated);
            }
            return Ok(SocketRead::Eof);
        }
        self.process()?;
        Ok(if short {
            SocketRead::Short
        } else {
            SocketRead::Full
        })
    }

    /// Processes the records read, notes the handshake's end and the peer's `close_notify`,
    /// and writes what rustls wants to send at once (write eagerly).
    fn process(&mut self) -> io::Result<()> {
        match self.tls.process_new_packets() {
            Ok(state) => {
                if !self.tls.is_handshaking() && self.outcome.is_none() {
                    self.outcome = Some(HandshakeOutcome::Ok);
                }
                if state.peer_has_closed() && self.peer_close.is_none() {
                    self.peer_close = Some(PeerClose::CloseNotify);
                    if self.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2)
                        && self.write_side == WriteSide::Open
                    {
                        // RFC 5246 §7.2.1: answer at once; later writes are discarded.
                        self.tls.send_close_notify();
                        self.write_side = WriteSide::Answered;
                    }
                }
                // A WouldBlock here leaves the rest queued: pending_output says so.
                self.flush_tls()?;
                Ok(())
            }
            Err(error) => {
                if self.outcome.is_none() {
                    self.outcome = Some(self.classify(&error));
                }
                self.failed = Some(error.clone());
                // The alert rustls queued: one attempt, so the peer learns why. What the
                // socket does not take is dropped with the connection.
                let _ = self.flush_tls();
                Err(io::Error::new(io::ErrorKind::InvalidData, error))
            }
        }
    }

    fn classify(&self, error: &rustls::Error) -> HandshakeOutcome {
        let first = &self.first[..usize::from(self.first_len)];
        match first.first() {
            // A handshake record, or an SSLv2-style hello (top bit set): TLS that went wrong.
            Some(0x16) | Some(0x80..=0xff) | None => match error {
                rustls::Error::AlertReceived(alert) => HandshakeOutcome::AlertReceived(*alert),
                e => HandshakeOutcome::AlertSent(e.clone()),
            },
            Some(_) => HandshakeOutcome::NotTls(guess_plaintext(first)),
        }
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|e| io::Error::new(io::ErrorKind::InvalidData, e.clone()))
    }
}

/// How one socket read went.
enum SocketRead {
    /// The socket filled the buffer rustls offered: there may be more.
    Full,
    /// Fewer bytes than offered: the receive queue was empty.
    Short,
    /// `WouldBlock`.
    Blocked,
    /// The peer's FIN.
    Eof,
}

impl<S: Transport> Read for TlsStream<S> {
    /// Reads plaintext. Fills `buf` from what rustls holds, then from the socket, until `buf`
    /// is full or the socket has nothing more. `Ok(0)`: the peer ended its side (see
    /// [`TlsStream::peer_close`]). `WouldBlock` only when the socket said so. A fatal TLS
    /// error is `InvalidData`, with the alert rustls queued already written if the socket
    /// took it.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.read_plaintext(buf);
        self.refresh();
        result
    }
}

impl<S: Transport> TlsStream<S> {
    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        loop {
            filled += self.take_plaintext(&mut buf[filled..]);
            if filled == buf.len() {
                return Ok(filled);
            }
            if self.peer_close.is_some() {
                return Ok(filled);
            }
            if let Some(e) = self.failure() {
                return if filled > 0 { Ok(filled) } else { Err(e) };
            }
            match self.read_socket() {
                // Perhaps more in the socket, or nothing new to deliver yet (a handshake
                // message, part of a record): read on.
                Ok(SocketRead::Full) => {}
                Ok(SocketRead::Short) => {
                    filled += self.take_plaintext(&mut buf[filled..]);
                    if filled > 0 {
                        // Short, and rustls holds nothing more that fits: the same promise a
                        // short read from the socket makes.
                        return Ok(filled);
                    }
                    // Nothing to deliver: confirm with WouldBlock rather than infer it, so a
                    // FIN queued behind the records is seen now rather than never.
                }
                Ok(SocketRead::Blocked) => {
                    return if filled > 0 {
                        Ok(filled)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    };
                }
                Ok(SocketRead::Eof) => {}
                Err(e) => {
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
            }
        }
    }
}

impl<S: Transport> Write for TlsStream<S> {
    /// Encrypts as much of `buf` as rustls's queue has room for, and writes records out
    /// until the socket would block. Returns the plaintext bytes taken; `WouldBlock` when
    /// none could be (the queue is full and the socket blocked, so a writable edge will come).
    /// After `shutdown_write`, `BrokenPipe`, as a socket after `shutdown(Write)`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.write_plaintext(buf);
        self.refresh();
        result
    }

    /// Writes queued records (and a FIN asked for by `shutdown_write`); `WouldBlock` if some
    /// are still queued.
    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.flush_tls();
        self.refresh();
        match flushed? {
            Flushed::All => Ok(()),
            Flushed::Blocked => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: Transport> TlsStream<S> {
    fn write_plaintext(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.write_side {
            WriteSide::Open => {}
            WriteSide::Answered => {
                self.discarded += buf.len() as u64;
                return Ok(buf.len());
            }
            WriteSide::CloseNotifyQueued | WriteSide::FinSent => {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let mut taken = 0;
        while taken < buf.len() {
            let n = self.tls.writer().write(&buf[taken..])?;
            taken += n;
            if self.flush_tls()? == Flushed::Blocked {
                break;
            }
            if n == 0 && self.tls.is_handshaking() {
                // Plaintext waits for keys before the handshake completes (see the module
                // documentation): rustls took none, and will take none until then.
                break;
            }
            // n == 0 otherwise: the queue was full when we came, and the socket has just
            // taken all of it, so rustls takes plaintext again. Stopping here would report
            // WouldBlock for a socket that never said so, and no writable edge would come.
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.tls.is_handshaking())
            .field("write_side", &self.write_side)
            .field("peer_close", &self.peer_close)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// The transport as `read_tls` sees it: records whether the read came up short, and keeps
/// the first bytes the peer sent.
struct Probe<'a, S> {
    io: &'a mut S,
    short: bool,
    first: &'a mut [u8; 8],
    first_len: &'a mut u8,
}

impl<S: Read> Read for Probe<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.io.read(buf)?;
        self.short = n < buf.len();
        let have = usize::from(*self.first_len);
        let take = (self.first.len() - have).min(n);
        self.first[have..have + take].copy_from_slice(&buf[..take]);
        *self.first_len += take as u8;
        Ok(n)
    }
}

/// What plaintext looks like from its first bytes.
fn guess_plaintext(first: &[u8]) -> NotTls {
    const PROXY_V2: &[u8] = b"\r\n\r\n\0\r\nQ";
    if first.starts_with(b"PROXY ") || (!first.is_empty() && PROXY_V2.starts_with(first)) {
        return NotTls::ProxyHeader;
    }
    let token = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if token >= 3 && first.get(token) == Some(&b' ') {
        return NotTls::Http;
    }
    NotTls::Other
}
