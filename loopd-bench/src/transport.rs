//! The seam between a flow and its socket: two small traits, one per kind of transport.
//!
//! * A [`Stream`] is a byte stream: bytes arrive in order and without boundaries, and a read
//!   shorter than asked means the receive queue was empty. TCP today ([`tcp`](crate::tcp)),
//!   TLS next: a TLS stream is a [`Stream`] whose `read` and `write` carry plaintext and
//!   whose handshake includes the TLS one.
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

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mio::event::Source;

/// What a readiness event on a connecting transport means.
#[derive(Debug)]
pub enum Handshake {
    /// Established: messages may flow.
    Done,
    /// Spurious readiness: still under way.
    Pending,
    /// It failed.
    Failed(io::Error),
}

/// A byte stream to the server. Registered with the poller like any mio source.
pub trait Stream: Read + Write + Source {
    /// Whether the connection the dial started is established; asked on each readiness
    /// event while it is connecting.
    fn handshake(&mut self) -> Handshake;
}

/// A connected datagram socket. Registered with the poller like any mio source.
pub trait Datagram: Source {
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
