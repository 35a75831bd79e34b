//! TLS over the loop's TCP socket: [`TlsSocket`] is what a connection on a `,tls` listener
//! reads and writes through. It implements the connection's [`Socket`] seam with the
//! [`TlsStream`] layer, so the serving state machine reads and writes plaintext exactly as
//! it does on a plain socket, and learns the three things only a layer has to say:
//!
//! | the seam | from the layer |
//! | --- | --- |
//! | [`holds_input`](Socket::holds_input) | [`has_plaintext`](TlsStream::has_plaintext): decrypted bytes no edge will announce |
//! | [`pending_output`](Socket::pending_output) | [`pending_output`](TlsStream::pending_output): records, alerts, `close_notify` queued, and a FIN behind them |
//! | [`shutdown_write`](Socket::shutdown_write) | [`shutdown_write`](TlsStream::shutdown_write): `close_notify`, then FIN once it has left |
//! | [`set_abortive`](Socket::set_abortive) | `SO_LINGER` 0 on the TCP socket: an abortive close says no goodbye |
//! | [`handshake`](Socket::handshake) | [`take_handshake_event`](TlsStream::take_handshake_event), [`negotiated`](TlsStream::negotiated) |
//!
//! A `,proxy,tls` listener reads a PROXY header before TLS begins: until the handshake stage
//! calls [`Handshake::begin`], bytes pass below the layer, to and from the TCP socket as
//! they are; the bytes that followed the header are handed to the layer then.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ServerConfig;

use super::layer::{HandshakeOutcome, PeerClose, TlsStream, Transport, DEFAULT_OUTPUT_LIMIT};
use crate::socket::{self as glue, Handshake, HandshakeEnd, Socket};
use crate::stats::HandshakeFailure;

impl Transport for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        TcpStream::shutdown(self, std::net::Shutdown::Write)
    }
}

/// A connection's socket on a `,tls` listener. See the [module documentation](self).
pub struct TlsSocket {
    /// Boxed: the rustls session is most of a TLS connection's memory, and the loop's slab
    /// of TLS connections stays a slab of small entries.
    stream: Box<TlsStream<TcpStream>>,
    /// The layer has begun; before, bytes pass below it.
    begun: bool,
}

impl TlsSocket {
    /// A server session over a freshly accepted TCP socket, under `config` (shared by every
    /// connection of every loop).
    pub fn new(config: Arc<ServerConfig>, tcp: TcpStream) -> Result<TlsSocket, rustls::Error> {
        let stream = TlsStream::new(config, tcp, DEFAULT_OUTPUT_LIMIT)?;
        Ok(TlsSocket {
            stream: Box::new(stream),
            begun: false,
        })
    }

    /// The layer, for what the seam does not carry: how the peer ended its side, the error
    /// that ended the session.
    pub fn stream(&self) -> &TlsStream<TcpStream> {
        &self.stream
    }
}

impl Read for TlsSocket {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.begun {
            self.stream.read(buf)
        } else {
            self.stream.get_mut().read(buf)
        }
    }
}

impl Write for TlsSocket {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.begun {
            self.stream.write(buf)
        } else {
            self.stream.get_mut().write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.begun {
            self.stream.flush()
        } else {
            Ok(())
        }
    }
}

impl Socket for TlsSocket {
    fn shutdown_write(&mut self) -> io::Result<()> {
        if self.begun {
            self.stream.shutdown_write()
        } else {
            Transport::shutdown_write(self.stream.get_mut())
        }
    }

    fn set_abortive(&mut self) {
        if let Err(e) = glue::set_abortive_close(self.stream.get_ref()) {
            log::debug!("SO_LINGER 0 failed: {e}");
        }
    }

    #[inline]
    fn holds_input(&self) -> bool {
        self.begun && self.stream.has_plaintext()
    }

    #[inline]
    fn pending_output(&self) -> usize {
        if self.begun {
            self.stream.pending_output()
        } else {
            0
        }
    }

    fn handshake(&mut self) -> Option<&mut dyn Handshake> {
        Some(self)
    }
}

impl Handshake for TlsSocket {
    fn begin(&mut self, early: &[u8]) -> io::Result<()> {
        self.begun = true;
        self.stream.receive(early)
    }

    fn end(&mut self) -> Option<HandshakeEnd> {
        let outcome = self.stream.take_handshake_event()?;
        Some(self.describe(outcome))
    }

    fn timed_out(&mut self) -> HandshakeEnd {
        self.stream.handshake_timed_out();
        let outcome = self
            .stream
            .take_handshake_event()
            .unwrap_or(HandshakeOutcome::Timeout);
        self.describe(outcome)
    }
}

impl TlsSocket {
    /// The layer's outcome, as the seam says it.
    fn describe(&self, outcome: HandshakeOutcome) -> HandshakeEnd {
        let how = match &outcome {
            HandshakeOutcome::Ok => {
                if let Some(negotiated) = self.stream.negotiated() {
                    return HandshakeEnd::Completed(negotiated);
                }
                // Completed without a cipher suite or version: rustls never does this.
                HandshakeFailure::AlertSent
            }
            HandshakeOutcome::AlertSent(_) => HandshakeFailure::AlertSent,
            HandshakeOutcome::AlertReceived(_) => HandshakeFailure::AlertReceived,
            HandshakeOutcome::NotTls(_) => HandshakeFailure::NotTls,
            HandshakeOutcome::Closed => HandshakeFailure::Closed,
            HandshakeOutcome::Timeout => HandshakeFailure::Timeout,
        };
        HandshakeEnd::Failed {
            how,
            why: outcome.to_string(),
        }
    }

    /// How the peer ended its side, once a read has returned `0`: with `close_notify`, or
    /// with a FIN alone (a truncation). `None` before, and before the layer began.
    pub fn peer_close(&self) -> Option<PeerClose> {
        self.begun.then(|| self.stream.peer_close()).flatten()
    }
}

/// Registered with the poller as the TCP socket it is.
impl Source for TlsSocket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.stream.get_mut().register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.stream.get_mut().reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.stream.get_mut().deregister(registry)
    }
}
