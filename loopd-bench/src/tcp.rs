//! The TCP transport: a [`Stream`] that connects without blocking and tells when its
//! handshake is done.
//!
//! Everything else a TCP connection does — budgeted reads, vectored writes, checking every
//! byte — is the byte-stream discipline of the flow ([`flow::stream`](crate::flow::stream)),
//! shared by any [`Stream`], TLS included.
//!
//! One difference from the server is deliberate: a client socket is registered for both
//! readable and writable once, edge-triggered, and never re-registered. Its interest changes
//! with every message (it writes a request, then waits for the reply), and an `epoll_ctl`
//! per message would double the system calls of a small-message benchmark. On epoll an
//! unneeded writable edge costs only a flag: epoll reports writability again only after a
//! write found the send buffer full. kqueue's write filter fires whenever an ACK frees
//! space, so there the registered WRITABLE costs wake-ups (the server, which must run on
//! both, asks for WRITABLE only while output waits).

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::net::bind_source;
use crate::transport::{Dial, Handshake, Layer, Stream};

/// Opens TCP connections: see [`Tcp::open`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Tcp {
    /// Creates a non-blocking TCP socket, binds it to `source` if given, and starts
    /// connecting. The handshake completes later, reported by readiness.
    pub fn open(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        // Requests are small and latency-bound; Nagle would hold them back.
        socket.set_nodelay(true)?;
        if let Some(ip) = source {
            bind_source(&socket, ip)?;
        }
        match socket.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(socket.into()))
    }
}

impl Dial for Tcp {
    type Transport = TcpStream;

    fn dial(&mut self, target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
        Tcp::open(target, source)
    }
}

impl Stream for TcpStream {
    /// A pending error means the connect failed; a peer address means it is established;
    /// `NotConnected` means the readiness was spurious.
    fn handshake(&mut self) -> Handshake {
        match self.take_error() {
            Ok(Some(e)) | Err(e) => Handshake::Failed(e),
            Ok(None) => match self.peer_addr() {
                Ok(_) => Handshake::Done,
                Err(e) if e.kind() == ErrorKind::NotConnected => Handshake::Pending,
                Err(e) => Handshake::Failed(e),
            },
        }
    }
}

/// A plain socket: the kernel's queues are all there is, and nothing of TCP's own is sent
/// before the FIN that the drop sends.
impl Layer for TcpStream {}
