//! The seam between a flow and its socket: two small traits, one per kind of transport.
//!
//! * A [`Stream`] is a byte stream: bytes arrive in order and without boundaries. TCP
//!   ([`tcp`](crate::tcp)) and TLS over it ([`tls`](crate::tls)): a TLS stream is a
//!   [`Stream`] whose `read` and `write` carry plaintext and whose handshake includes the
//!   TLS one.
//! * A [`Datagram`] socket carries whole messages: one send is one message, one receive one
//!   datagram, replies in any order or not at all. UDP ([`udp`](crate::udp)).
//!
//! A [`Dial`] opens a transport towards the target. Each trait is implemented by a real
//! socket and by a scripted fake that the flow's tests drive without a network.
//!
//! The flow ([`flow`](crate::flow)) is generic over these traits: its state machine, load
//! policies and checks know nothing of TCP or UDP, so a new transport is one new file
//! implementing one of them — no new branches in the flow. This mirrors the server, whose
//! connection state machine reads and writes through its own `Socket` trait.
//!
//! # What a layered stream adds to the seam
//!
//! A plain socket keeps two promises that the flow's readiness discipline rests on, and a
//! layer such as TLS breaks both; the trait says so in four small methods, each of which TCP
//! answers trivially:
//!
//! * **A short read means drained** — for a socket. A layer can hold bytes it already took
//!   from the socket (decrypted records) after the socket said `WouldBlock`, and no edge will
//!   announce them. [`Layer::buffered`] says "more may be read without a new edge"; the
//!   flow's reading goes on while it is true.
//! * **Output exists only when the flow writes** — for a socket. A layer has output of its
//!   own: handshake flights, alerts, `close_notify`. [`Layer::owes_output`] says some is
//!   queued; the flow flushes it on the writable edge even with no message to send, and does
//!   not drop a connection that still owes it.
//! * **Closing is dropping** — for a socket (the drop sends FIN). A layer says goodbye
//!   first: [`Layer::close`] starts it (TLS: queues `close_notify` and writes it).
//! * **The handshake is the connect.** A layer's handshake follows the socket's: the socket's
//!   completion is reported on its own ([`Handshake::Connected`]) so the two are timed apart,
//!   and what the layer's handshake settled is its [`Session`].

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mio::event::Source;

use crate::record::tls::{HandshakeKind, Negotiated};

/// What a readiness event on a connecting transport means.
#[derive(Debug)]
pub enum Handshake {
    /// The socket under a layered stream is connected (TCP established); the layer's own
    /// handshake (TLS) is under way. Reported once, before `Done`, and only by a layer.
    Connected,
    /// Established: messages may flow.
    Done,
    /// Spurious readiness: still under way.
    Pending,
    /// It failed.
    Failed(io::Error),
}

/// What a layer's handshake settled (TLS: whether it resumed, and the parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Full or resumed.
    pub kind: HandshakeKind,
    /// Whether this connection offered a session to resume.
    pub offered: bool,
    /// Version, cipher suite, group, ALPN.
    pub negotiated: Negotiated,
    /// Session tickets (or a TLS 1.2 session) received on this connection so far.
    pub tickets: u32,
    /// TLS 1.3: no ticket has come yet, and servers send them after the handshake; a client
    /// that closes now never holds one. (TLS 1.2 gives its ticket inside the handshake.)
    pub ticket_pending: bool,
}

/// What a layer between the flow and the kernel (TLS) adds to a socket: input it holds,
/// output of its own, a goodbye, a session. The defaults are a plain socket's, which has
/// none of them — the kernel's queues are all there is — so TCP and UDP sockets take them as
/// they are, and a flow asks the same questions of every transport without knowing which.
pub trait Layer {
    /// Whether more may be read now without a new readiness edge, although the last read
    /// came back short: bytes the stream took from the socket and holds (a TLS layer's
    /// decrypted records), or a socket it has not yet seen drained. A plain socket: never,
    /// the kernel's receive queue is all there is and a short read proves it empty.
    fn buffered(&self) -> bool {
        false
    }
    /// Whether output of the stream's own (a handshake flight, an alert, `close_notify`)
    /// waits for the socket: flush it (`Write::flush`) on the writable edge, and keep the
    /// connection until it has left. A plain socket: never, every byte written went to the
    /// kernel.
    fn owes_output(&self) -> bool {
        false
    }
    /// Starts closing the way the protocol wants before the socket is dropped: a TLS stream
    /// queues `close_notify` and writes what it can ([`owes_output`](Layer::owes_output)
    /// says whether some is left). A plain socket has nothing to say: its FIN goes when it is
    /// dropped.
    fn close(&mut self) {}
    /// What the layer's handshake settled, once done; `None` for a plain socket.
    fn session(&self) -> Option<Session> {
        None
    }
}

/// A byte stream to the server. Registered with the poller like any mio source.
pub trait Stream: Read + Write + Source + Layer {
    /// Whether the connection the dial started is established; asked on each readiness
    /// event while it is connecting.
    fn handshake(&mut self) -> Handshake;
}

/// A connected datagram socket. Registered with the poller like any mio source.
pub trait Datagram: Source + Layer {
    /// How long a datagram may go unanswered before it counts as lost.
    const LOSS_TIMEOUT: Duration;
    /// Sends one datagram.
    fn send(&mut self, datagram: &[u8]) -> io::Result<usize>;
    /// Receives one datagram into `buf`.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// Opens a flow's transport towards the target: starts a non-blocking connect (TCP), binds
/// and connects a socket (UDP), or hands out the next scripted fake (tests).
pub trait Dial {
    /// What it opens.
    type Transport;
    /// Opens one, from `source` if given (`--source`).
    fn dial(&mut self, target: SocketAddr, source: Option<IpAddr>) -> io::Result<Self::Transport>;
}
