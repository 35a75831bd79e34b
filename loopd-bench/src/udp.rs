//! The UDP transport: a [`Datagram`] socket per flow, bound and connected to the target.
//!
//! Differences from TCP, each handled by the flow's datagram discipline
//! ([`flow::datagram`](crate::flow::datagram)):
//!
//! * **No handshake.** A connected UDP socket is ready at once; connecting it only makes
//!   the kernel drop datagrams from anyone else and report ICMP errors (nothing listening)
//!   to us as `ECONNREFUSED`.
//! * **Whole messages, any order, or none.** One `recv` is one datagram. Replies may come
//!   out of order, twice, or never, so each is matched by the sequence number in its header,
//!   and a datagram not answered within [`LOSS_TIMEOUT`] is lost — counted, not an error,
//!   unless loss exceeds `--max-loss`.
//! * **Drain until `WouldBlock`.** A short read says nothing about what is left; only
//!   `WouldBlock` does. The receive budget still applies.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mio::net::UdpSocket;

use crate::net::any_address;
use crate::transport::{Datagram, Dial, Layer};

/// A datagram not answered within this long is lost. Loopback round trips take
/// microseconds, a loaded LAN milliseconds; a second is unambiguous for both.
pub const LOSS_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens UDP sockets: see [`Udp::open`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Udp;

impl Udp {
    /// A non-blocking UDP socket bound to `source` (or any local address) and connected to
    /// `target`.
    pub fn open(target: SocketAddr, source: Option<IpAddr>) -> io::Result<UdpSocket> {
        let local = source.unwrap_or_else(|| any_address(target));
        let socket = std::net::UdpSocket::bind(SocketAddr::new(local, 0))?;
        socket.connect(target)?;
        socket.set_nonblocking(true)?;
        Ok(UdpSocket::from_std(socket))
    }
}

impl Dial for Udp {
    type Transport = UdpSocket;

    fn dial(&mut self, target: SocketAddr, source: Option<IpAddr>) -> io::Result<UdpSocket> {
        Udp::open(target, source)
    }
}

/// A plain socket: the kernel's queues are all there is.
impl Layer for UdpSocket {}

impl Datagram for UdpSocket {
    const LOSS_TIMEOUT: Duration = LOSS_TIMEOUT;

    fn send(&mut self, datagram: &[u8]) -> io::Result<usize> {
        UdpSocket::send(self, datagram)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        UdpSocket::recv(self, buf)
    }
}
