//! The loop's socket glue: every socket option, bind and control message in one place, as
//! Redis keeps its socket calls in `anet.c` beside the event loop in `ae.c`.
//!
//! * [`Socket`], the seam between a connection and its socket, and its implementation for
//!   mio's `TcpStream`: reads, writes, our FIN, and an abortive close; and what a layer
//!   under the connection adds to it (input it holds, output of its own, a
//!   [`Handshake`]), which the TLS layer implements.
//! * [`Want`], the one interest type of every registered socket (TCP connections and UDP
//!   endpoints alike), with `register` and `follow`, which tell the poller about it and
//!   re-register only when it changes.
//! * [`bind_group`]: a socket per loop for one address (`SO_REUSEPORT`, dual-stack `[::]`,
//!   `SO_REUSEADDR` for TCP only), and [`canonical`] addresses.
//! * [`configure_listener`], [`configure_stream`] and [`set_abortive_close`]: the options of
//!   a listener and of an accepted connection.
//! * [`PktinfoSocket`]: UDP replies from the address each request was sent to, through the
//!   `IP_PKTINFO` and `IPV6_PKTINFO` control messages (nix's `recvmsg` and `sendmsg`).
//!
//! Nothing here decides anything: the listener decides when to accept, the connection what
//! to read and write, the loop when to register. This is how each of those is done.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use log::debug;
use mio::event::Source;
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use nix::sys::socket::{self as sock, ControlMessage, ControlMessageOwned, MsgFlags};
use socket2::{Domain, Protocol, SockRef, Socket as RawSocket, TcpKeepalive, Type};

use crate::config::StreamOptions;
use crate::service::Negotiated;
use crate::stats::HandshakeFailure;

/// What a connection needs from its socket: the seam between the state machine and the
/// bytes on the wire. Implemented for mio's `TcpStream` here, by a scripted fake in the
/// connection's tests, and by the TLS layer over a `TcpStream` of its own
/// (`tls::socket::TlsSocket`, the `tls` feature); for a layer, the provided methods matter.
pub trait Socket: Read + Write {
    /// Sends FIN: shuts down the sending half. A layer first sends what must precede it
    /// (TLS's `close_notify`), and says `WouldBlock` while that waits for room: the FIN then
    /// follows it out of [`Write::flush`] on the writable edge.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Makes the coming close abortive (RST, `SO_LINGER` 0): for stalled writers and forced
    /// shutdown only.
    fn set_abortive(&mut self);
    /// Whether input is already held above the kernel's queue (a TLS layer's decrypted
    /// records): a short read then does not prove the socket drained, and no edge will say
    /// that more is there, so the connection reads on. A plain socket holds none.
    fn holds_input(&self) -> bool {
        false
    }
    /// Bytes the socket has to send of its own, whatever the service wrote: a handshake
    /// message, an alert, a `close_notify`, records it encrypted that the kernel has not
    /// taken yet. WRITABLE is wanted while any wait, [`Write::flush`] sends them, our FIN
    /// waits for them, and they count against the connection's high watermark together
    /// with its own output. A plain socket has none.
    fn pending_output(&self) -> usize {
        0
    }
    /// Whether [`pending_output`](Socket::pending_output) is not zero.
    fn has_pending_output(&self) -> bool {
        self.pending_output() > 0
    }
    /// The layer's handshake, for the stage before serving that runs it (TLS): no byte is
    /// the service's before it completes. A plain socket has none.
    fn handshake(&mut self) -> Option<&mut dyn Handshake> {
        None
    }
}

/// A layer's handshake, as the stage before serving that waits for it sees it. Bytes still
/// move through the [`Socket`]: a read drives the handshake on (and returns the plaintext
/// that came after it), a flush sends its messages. This says when it is over, and how.
pub trait Handshake {
    /// Starts the layer. Until now reads and writes went to the socket below it, for a
    /// stage under it (a PROXY header); `early` holds bytes such a stage read that belong to
    /// the layer (the records that followed the header), and they are processed now — the
    /// expensive step of a handshake may happen here, so the stage calls this within its
    /// handshake budget. An error is the handshake's failure, which [`end`](Handshake::end)
    /// then describes.
    fn begin(&mut self, early: &[u8]) -> io::Result<()>;
    /// How the handshake ended: `Some` once, the first time it is asked after it did.
    fn end(&mut self) -> Option<HandshakeEnd>;
    /// The deadline passed with the handshake under way: its end, as a timeout.
    fn timed_out(&mut self) -> HandshakeEnd;
}

/// How a layer's handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeEnd {
    /// Completed: what it settled, for the service's [`ConnInfo`](crate::service::ConnInfo),
    /// the log and the metrics.
    Completed(Negotiated),
    /// It did not complete: how (for the counters), and why in words (for the log line).
    Failed {
        /// The kind of failure.
        how: HandshakeFailure,
        /// What happened, for the log.
        why: String,
    },
}

impl Socket for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        TcpStream::shutdown(self, std::net::Shutdown::Write)
    }

    fn set_abortive(&mut self) {
        if let Err(e) = set_abortive_close(self) {
            debug!("SO_LINGER 0 failed: {e}");
        }
    }
}

/// The readiness a socket's owner wants to be told about next. Derived from the owner's state
/// after every turn (a connection's [`want`](crate::connection::Connection::want), a UDP
/// endpoint's), never tracked by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// Wants READABLE.
    pub read: bool,
    /// Wants WRITABLE (only while output is pending).
    pub write: bool,
}

impl Want {
    /// READABLE only.
    pub const READ: Want = Want {
        read: true,
        write: false,
    };

    /// As mio's interest; `None` when nothing is wanted, which mio cannot express. Reading
    /// includes [`READ_INTEREST`]'s priority readiness where mio offers it.
    pub fn interest(self) -> Option<Interest> {
        match (self.read, self.write) {
            (true, true) => Some(READ_INTEREST | Interest::WRITABLE),
            (true, false) => Some(READ_INTEREST),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

/// What "readable" is registered as. On Linux it includes `EPOLLPRI`, which epoll reports
/// while TCP urgent data is queued: a read stops short at the urgent mark with more data
/// behind it, and the connection must know that a short read then proves nothing
/// ([`SHORT_READ_DRAINS`](crate::connection::SHORT_READ_DRAINS)). mio reports priority
/// readiness only on Linux and Android; elsewhere the connection reads until `WouldBlock`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const READ_INTEREST: Interest = Interest::READABLE.add(Interest::PRIORITY);
/// What "readable" is registered as (see the Linux definition).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const READ_INTEREST: Interest = Interest::READABLE;

/// Registers `source` for what it wants (READABLE if it wants nothing yet), and returns what
/// was registered.
pub(crate) fn register(
    registry: &Registry,
    source: &mut impl Source,
    token: Token,
    wanted: Want,
) -> io::Result<Want> {
    let registered = if wanted.interest().is_some() {
        wanted
    } else {
        Want::READ
    };
    registry.register(
        source,
        token,
        registered.interest().unwrap_or(READ_INTEREST),
    )?;
    Ok(registered)
}

/// Makes the registration follow what `source` wants now. The poller is told only when the
/// interest changes (`epoll_ctl` is a system call, and an echo connection in steady state
/// never needs one); wanting nothing keeps the registration as it is, for an owner that waits
/// on the run queue or a deadline.
#[inline]
pub(crate) fn follow(
    registry: &Registry,
    source: &mut impl Source,
    token: Token,
    registered: &mut Want,
    wanted: Want,
) -> io::Result<()> {
    let Some(interest) = wanted.interest().filter(|_| wanted != *registered) else {
        return Ok(());
    };
    registry.reregister(source, token, interest)?;
    *registered = wanted;
    Ok(())
}

/// `n` non-blocking sockets bound to `addr`, one for each loop that serves it (TCP
/// listeners and UDP endpoints alike). An unspecified IPv6 address (`[::]`) is dual-stack;
/// any other IPv6 address is IPv6-only, so `[::1]` and `127.0.0.1` can be bound side by side.
///
/// One socket is an exclusive bind. Several share the address through `SO_REUSEPORT`, and
/// the kernel spreads new connections (and datagram flows) over them by a hash of the peer's
/// address. The kernel lets only sockets of the same user join such a group, and a probe
/// makes sure nothing else holds the address first: it binds the address exclusively, which
/// fails if any socket is there (and resolves port 0 to one free port for the whole group),
/// then lets it go for the group. So a second loopd, or another user's process, still gets
/// "address already in use", as with one loop.
pub fn bind_group(addr: SocketAddr, kind: Type, n: usize) -> io::Result<Vec<RawSocket>> {
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let probe = bound_socket(addr, kind, protocol, false).map_err(context)?;
    if n <= 1 {
        return Ok(vec![probe]);
    }
    let addr = probe
        .local_addr()?
        .as_socket()
        .expect("an internet socket has an internet address");
    drop(probe);
    (0..n)
        .map(|_| bound_socket(addr, kind, protocol, true).map_err(context))
        .collect()
}

/// One non-blocking socket bound to `addr`, in a `SO_REUSEPORT` group if `shared`.
fn bound_socket(
    addr: SocketAddr,
    kind: Type,
    protocol: Protocol,
    shared: bool,
) -> io::Result<RawSocket> {
    let socket = RawSocket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    if kind == Type::STREAM {
        // Restarting must not wait for old connections in TIME-WAIT to expire. Only TCP
        // needs this; on a UDP socket it would let any other socket that asks for it bind
        // the same port and receive our clients' datagrams, so UDP binds are exclusive.
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// `addr` as people write it: an IPv4 client of a dual-stack `[::]` socket is reported by the
/// kernel as an IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]:port`); this turns it back
/// into `127.0.0.1:port`. Other addresses are returned unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Options of a listening socket that its accepted connections inherit, set once per
/// listener rather than once per connection (Linux and the BSDs copy a listener's socket
/// flags into every connection it accepts).
///
/// `SO_OOBINLINE`: TCP urgent data (`MSG_OOB`) stays in the byte stream. Without it the
/// kernel takes the urgent byte out of the stream to be read with `recv(MSG_OOB)`, which no
/// service here does: an echo would silently lose that byte, a TLS record would fail to
/// decrypt. RFC 6093 asks applications that meet urgent data to read it inline; loopd's
/// services see exactly the bytes the peer sent.
pub fn configure_listener(listener: &RawSocket) -> io::Result<()> {
    listener.set_out_of_band_inline(true)
}

/// Per-connection socket options, applied right after accept.
pub fn configure_stream(stream: &TcpStream, options: &StreamOptions) -> io::Result<()> {
    if options.nodelay {
        stream.set_nodelay(true)?;
    }
    if let Some(idle) = options.keepalive {
        SockRef::from(stream).set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    if let Some(bytes) = options.rcvbuf {
        SockRef::from(stream).set_recv_buffer_size(bytes)?;
    }
    Ok(())
}

/// Makes the socket's close send RST instead of FIN (`SO_LINGER` with a zero timeout).
pub fn set_abortive_close(stream: &TcpStream) -> io::Result<()> {
    SockRef::from(stream).set_linger(Some(Duration::ZERO))
}

/// The local address a datagram was sent to, as `IP_PKTINFO` or `IPV6_PKTINFO` reports it:
/// the source its reply must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// To an IPv4 address.
    V4(Ipv4Addr),
    /// To an IPv6 address (an IPv4 one, mapped, on a dual-stack socket), on the interface
    /// with this index: a link-local address is only meaningful with its interface.
    V6(Ipv6Addr, u32),
}

impl Local {
    /// The address itself.
    pub fn ip(self) -> IpAddr {
        match self {
            Local::V4(a) => a.into(),
            Local::V6(a, _) => a.to_canonical(),
        }
    }
}

/// What an endpoint needs from its socket: [`PktinfoSocket`], or a scripted fake in tests.
pub trait DatagramSocket {
    /// Receives one datagram: its length, sender, and the local address it was sent to when
    /// the socket reports it (wildcard binds).
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Local>)>;
    /// Sends one datagram, from the local address `from` if given.
    fn send_to(&mut self, buf: &[u8], to: SocketAddr, from: Option<Local>) -> io::Result<usize>;
}

/// A UDP socket that, when bound to a wildcard address, learns each datagram's destination
/// and sends replies from it. On a specific address it is a plain `recv_from`/`send_to`.
pub struct PktinfoSocket {
    io: UdpSocket,
    /// Room for one packet-info control message; `None` when not asked for (specific binds).
    control: Option<Vec<u8>>,
}

impl PktinfoSocket {
    /// Wraps `io`, asking for packet information if it is bound to a wildcard address.
    pub fn new(io: UdpSocket) -> io::Result<PktinfoSocket> {
        let local = io.local_addr()?;
        let control = if local.ip().is_unspecified() {
            // A dual-stack [::] socket reports IPv4 datagrams as IPV6_PKTINFO with a mapped
            // address, and accepts the same on sendmsg, so one option serves both.
            match local {
                SocketAddr::V4(_) => sock::setsockopt(&io, sock::sockopt::Ipv4PacketInfo, &true),
                SocketAddr::V6(_) => {
                    sock::setsockopt(&io, sock::sockopt::Ipv6RecvPacketInfo, &true)
                }
            }?;
            Some(nix::cmsg_space!(libc::in6_pktinfo))
        } else {
            None
        };
        Ok(PktinfoSocket { io, control })
    }

    /// The mio source, for registration.
    pub(crate) fn source(&mut self) -> &mut UdpSocket {
        &mut self.io
    }
}

impl DatagramSocket for PktinfoSocket {
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Local>)> {
        let Some(control) = &mut self.control else {
            let (n, peer) = self.io.recv_from(buf)?;
            return Ok((n, peer, None));
        };
        let mut iov = [IoSliceMut::new(buf)];
        let msg = sock::recvmsg::<sock::SockaddrStorage>(
            self.io.as_raw_fd(),
            &mut iov,
            Some(control),
            MsgFlags::empty(),
        )?;
        let peer = msg
            .address
            .and_then(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4))),
                (_, Some(v6)) => Some(SocketAddr::from(std::net::SocketAddrV6::from(*v6))),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
        let mut local = None;
        for c in msg.cmsgs()? {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    local = Some(Local::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_spec_dst.s_addr,
                    ))));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    local = Some(Local::V6(
                        Ipv6Addr::from(info.ipi6_addr.s6_addr),
                        info.ipi6_ifindex,
                    ));
                }
                _ => {}
            }
        }
        Ok((msg.bytes, peer, local))
    }

    fn send_to(&mut self, buf: &[u8], to: SocketAddr, from: Option<Local>) -> io::Result<usize> {
        let Some(from) = from else {
            return self.io.send_to(buf, to);
        };
        // nix builds the control buffer per call: a small allocation beside a system call,
        // and only on wildcard binds. A preallocated `sendmmsg` header was tried and measured:
        // no difference in CPU per datagram (the cost of this path is the kernel's, below).
        let iov = [IoSlice::new(buf)];
        let to = sock::SockaddrStorage::from(to);
        let fd = self.io.as_raw_fd();
        let sent = match from {
            Local::V4(addr) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(addr).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
                sock::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to))
            }
            Local::V6(addr, ifindex) => {
                // The interface matters only for a link-local source; naming it otherwise
                // would pin the reply to the request's interface against the routing table.
                let link_local = addr.segments()[0] & 0xffc0 == 0xfe80;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: addr.octets(),
                    },
                    ipi6_ifindex: if link_local { ifindex } else { 0 },
                };
                let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
                sock::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to))
            }
        };
        Ok(sent?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mapped IPv4 addresses are shown as IPv4; everything else is untouched.
    #[test]
    fn canonical_addresses() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:7".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:7".parse().unwrap());
        for plain in ["[::1]:7", "10.0.0.1:9", "[2001:db8::1]:80"] {
            let a: SocketAddr = plain.parse().unwrap();
            assert_eq!(canonical(a), a);
        }
    }

    /// Interest is empty only when nothing is wanted; reading includes urgent data where mio
    /// reports it.
    #[test]
    fn interest_from_want() {
        #[cfg(target_os = "linux")]
        assert!(READ_INTEREST.is_priority());
        assert_eq!(
            Want {
                read: true,
                write: false
            }
            .interest(),
            Some(READ_INTEREST)
        );
        assert_eq!(
            Want {
                read: true,
                write: true
            }
            .interest(),
            Some(READ_INTEREST | Interest::WRITABLE)
        );
        assert_eq!(
            Want {
                read: false,
                write: false
            }
            .interest(),
            None
        );
    }
}
