//! A UDP endpoint in the event loop: a socket, its datagram service, and a bounded queue of
//! replies the kernel could not take yet.
//!
//! Differences from a TCP connection, each visible below:
//!
//! * **Read until `WouldBlock`.** Every `recv_from` returns one whole datagram, whatever its
//!   size, so a short read says nothing about what is left; only `WouldBlock` does. A per-turn
//!   budget keeps a flood on one socket from starving the loop, as for TCP.
//! * **No backpressure from the peer.** A UDP sender is never slowed by the receiver. When the
//!   socket's send buffer is full, replies wait in a queue bounded in bytes; past that they are
//!   dropped and counted. The loop never blocks and never grows without bound.
//! * **WRITABLE only while replies wait**, exactly as for TCP output.
//! * **Replies come from the address the request was sent to.** A TCP connection has one
//!   local address; a UDP socket bound to a wildcard (`0.0.0.0`, `[::]`) on a host with
//!   several addresses receives on all of them, and a plain `send_to` lets the kernel choose
//!   the source by routing — often not the address the client wrote to, so clients (whose
//!   connected sockets filter by source) and NATs drop the reply. On wildcard binds loopd asks
//!   for each datagram's destination (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and sends the reply
//!   from it (the same control message on `sendmsg`), as DNS servers do.
//! * **The sender's address is a claim.** Nothing proves a datagram came from where it says,
//!   so a forged one can set two services answering each other forever, or turn a service
//!   into an amplifier aimed at a victim. Each endpoint has a [`guard`]: datagrams from
//!   privileged and from this server's own ports are refused before the service sees them,
//!   and answers to one source are rate-limited where the service's answers outgrow its
//!   requests.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use log::debug;
use mio::net::UdpSocket;
use mio::Interest;
use nix::sys::socket::{self as sock, ControlMessage, ControlMessageOwned, MsgFlags};
use socket2::Type;

pub mod guard;

use crate::config::UdpLimits;
use crate::listener;
use crate::service::datagram::Reply;
use crate::service::DatagramService;
use crate::stats::Stats;
use crate::timer::Time;

use guard::Guard;

/// Bytes of replies that may wait for the socket. Sixteen maximal datagrams, or thousands of
/// small ones: enough to ride out a full send buffer for a moment, and a hard bound on what a
/// flood can make the server hold.
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Datagrams received per endpoint per loop turn before serving others.
const DATAGRAM_BUDGET: usize = 256;

/// A reply waiting for the socket: to whom, from which local address, what.
type Queued = (SocketAddr, Option<Local>, Box<[u8]>);

/// What a queued reply of `len` bytes costs against [`QUEUE_BYTES`]: its bytes and its queue
/// entry, so that even empty replies cannot grow the queue without bound.
fn queue_cost(len: usize) -> usize {
    len + std::mem::size_of::<Queued>()
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

/// How a UDP turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpTurn {
    /// Drained: wait for the next event.
    Wait,
    /// The budget ran out with datagrams left: run again next turn.
    Again,
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

/// A bound UDP socket with its service and reply queue.
pub struct UdpEndpoint<S = PktinfoSocket> {
    socket: S,
    local: SocketAddr,
    service: Box<dyn DatagramService>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    reply: Reply,
    /// Port rules and rate limit, before the service and before each answer.
    guard: Guard,
    /// A readable edge was seen and the socket not yet drained.
    read_ready: bool,
    /// The loop's number for this endpoint (its counters).
    endpoint: usize,
    /// The interest registered with the poller.
    pub(crate) registered: Interest,
}

impl UdpEndpoint {
    /// Binds `addr` exclusively; an unspecified IPv6 address is dual-stack, as for TCP. Its
    /// defences are the default ones for what `service` says of its answers, with its own
    /// port as the server's only one.
    pub fn bind(addr: SocketAddr, service: Box<dyn DatagramService>) -> io::Result<UdpEndpoint> {
        let socket = listener::bind_group(addr, Type::DGRAM, 1)?.remove(0);
        let port = socket.local_addr()?.as_socket().map_or(0, |a| a.port());
        let guard = Guard::new(service.replies(), &UdpLimits::default(), vec![port]);
        UdpEndpoint::from_socket(socket, service, 0, guard)
    }

    /// An endpoint on a socket bound by [`listener::bind_group`].
    pub(crate) fn from_socket(
        socket: socket2::Socket,
        service: Box<dyn DatagramService>,
        endpoint: usize,
        guard: Guard,
    ) -> io::Result<UdpEndpoint> {
        let socket = UdpSocket::from_std(socket.into());
        let local = socket.local_addr()?;
        let socket = PktinfoSocket::new(socket)?;
        let mut u = UdpEndpoint::with_socket(socket, local, service, guard);
        u.endpoint = endpoint;
        Ok(u)
    }

    /// The mio source, for registration.
    pub(crate) fn source(&mut self) -> &mut UdpSocket {
        &mut self.socket.io
    }
}

impl<S: DatagramSocket> UdpEndpoint<S> {
    fn with_socket(
        socket: S,
        local: SocketAddr,
        service: Box<dyn DatagramService>,
        guard: Guard,
    ) -> Self {
        UdpEndpoint {
            socket,
            local,
            service,
            queue: VecDeque::new(),
            queued_bytes: 0,
            reply: Reply::default(),
            guard,
            read_ready: true,
            endpoint: 0,
            registered: Interest::READABLE,
        }
    }

    /// The loop's number for this endpoint.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Bytes of replies waiting for the socket.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether datagrams may be waiting unread.
    pub fn has_work(&self) -> bool {
        self.read_ready
    }

    /// The interest wanted now: READABLE always, WRITABLE while replies wait.
    pub fn want(&self) -> Interest {
        if self.queue.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }

    /// One turn at `now`: send queued replies if writable, then receive and answer up to the
    /// budget. `scratch` must hold a maximal datagram (64 KiB).
    pub fn turn(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        stats: &Stats,
        now: Time,
    ) -> UdpTurn {
        self.read_ready |= readable;
        if writable {
            self.flush(stats);
        }
        for _ in 0..DATAGRAM_BUDGET {
            if !self.read_ready {
                return UdpTurn::Wait;
            }
            match self.socket.recv_from(scratch) {
                Ok((n, peer, local)) => {
                    Stats::incr(&stats.datagrams_in);
                    // The service sees the address as people write it; the reply goes back
                    // to the address exactly as the socket reported it.
                    let shown = crate::listener::canonical(peer);
                    if !self.guard.admit(shown, self.local, now, stats) {
                        continue;
                    }
                    Stats::add(&stats.bytes_in, n as u64);
                    self.reply.clear();
                    self.service
                        .on_datagram(shown, &scratch[..n], &mut self.reply);
                    if self.reply.datagram().is_some()
                        && self.guard.may_answer(shown, self.local, now, stats)
                    {
                        self.send_or_queue(peer, local, stats);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error reported for an earlier send, or similar: it concerns one
                // datagram, not the endpoint.
                Err(e) => debug!("udp {}: recv_from: {e}", self.local),
            }
        }
        if self.read_ready {
            UdpTurn::Again
        } else {
            UdpTurn::Wait
        }
    }

    /// Sends the reply at once if nothing is queued ahead of it; otherwise queues it, or drops
    /// it when the queue is full.
    fn send_or_queue(&mut self, peer: SocketAddr, local: Option<Local>, stats: &Stats) {
        let reply = self.reply.datagram().unwrap_or_default();
        if self.queue.is_empty() {
            match self.socket.send_to(reply, peer, local) {
                Ok(_) => {
                    Stats::incr(&stats.datagrams_out);
                    Stats::add(&stats.bytes_out, reply.len() as u64);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    debug!("udp {}: send_to {peer}: {e}", self.local);
                    Stats::incr(&stats.datagrams_dropped);
                    return;
                }
            }
        }
        let cost = queue_cost(reply.len());
        if self.queued_bytes + cost > QUEUE_BYTES {
            Stats::incr(&stats.datagrams_dropped);
            return;
        }
        self.queued_bytes += cost;
        self.queue.push_back((peer, local, reply.into()));
    }

    /// Sends queued replies until the socket refuses.
    fn flush(&mut self, stats: &Stats) {
        while let Some((peer, local, data)) = self.queue.front() {
            match self.socket.send_to(data, *peer, *local) {
                Ok(_) => {
                    Stats::incr(&stats.datagrams_out);
                    Stats::add(&stats.bytes_out, data.len() as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("udp {}: send_to {peer}: {e}", self.local);
                    Stats::incr(&stats.datagrams_dropped);
                }
            }
            self.queued_bytes -= queue_cost(data.len());
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::UdpEcho;
    use std::cell::RefCell;

    /// Receives scripted datagrams, then `WouldBlock`; sends succeed while `send_ok` is set.
    #[derive(Default)]
    struct Fake {
        incoming: RefCell<VecDeque<Vec<u8>>>,
        sent: RefCell<Vec<Vec<u8>>>,
        send_ok: std::cell::Cell<bool>,
        /// The destination every datagram reports, and the sources replies were sent from.
        local: Option<Local>,
        sent_from: Vec<Option<Local>>,
    }

    impl DatagramSocket for Fake {
        fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Local>)> {
            let d = self
                .incoming
                .borrow_mut()
                .pop_front()
                .ok_or(io::ErrorKind::WouldBlock)?;
            buf[..d.len()].copy_from_slice(&d);
            Ok((d.len(), "127.0.0.1:9".parse().unwrap(), self.local))
        }

        fn send_to(&mut self, buf: &[u8], _: SocketAddr, from: Option<Local>) -> io::Result<usize> {
            if !self.send_ok.get() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.sent_from.push(from);
            self.sent.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
    }

    /// An echo endpoint without defences: these tests are about what lies behind them (the
    /// fake's peer sends from port 9, which the port rules would refuse).
    fn endpoint() -> UdpEndpoint<Fake> {
        UdpEndpoint::with_socket(
            Fake::default(),
            "127.0.0.1:7".parse().unwrap(),
            Box::new(UdpEcho),
            Guard::none(),
        )
    }

    /// Replies go out at once while the socket takes them.
    #[test]
    fn replies_immediately() {
        let mut u = endpoint();
        u.socket.send_ok.set(true);
        u.socket
            .incoming
            .borrow_mut()
            .extend([b"a".to_vec(), b"bc".to_vec()]);
        let stats = Stats::default();
        assert_eq!(
            u.turn(true, false, &mut [0; 16], &stats, Time(0)),
            UdpTurn::Wait
        );
        assert_eq!(*u.socket.sent.borrow(), [b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(u.want(), Interest::READABLE);
        assert_eq!(stats.snapshot().datagrams_out, 2);
    }

    /// When the socket refuses, replies queue up to the byte bound, the rest are dropped and
    /// counted, and WRITABLE is wanted until the queue drains in order.
    #[test]
    fn queue_is_bounded_and_drains_in_order() {
        let mut u = endpoint();
        let to = Local::V4(Ipv4Addr::new(127, 0, 0, 2));
        u.socket.local = Some(to);
        let big = vec![7u8; 60_000];
        let n = QUEUE_BYTES / queue_cost(big.len()) + 5;
        u.socket
            .incoming
            .borrow_mut()
            .extend((0..n).map(|_| big.clone()));
        let stats = Stats::default();
        let mut scratch = vec![0; 65536];
        u.turn(true, false, &mut scratch, &stats, Time(0));
        let fits = QUEUE_BYTES / queue_cost(big.len());
        assert_eq!(u.queued_bytes(), fits * queue_cost(big.len()));
        assert!(u.queued_bytes() <= QUEUE_BYTES);
        assert_eq!(stats.snapshot().datagrams_dropped, (n - fits) as u64);
        assert_eq!(u.want(), Interest::READABLE | Interest::WRITABLE);

        u.socket.send_ok.set(true);
        u.turn(false, true, &mut scratch, &stats, Time(0));
        assert_eq!(u.socket.sent.borrow().len(), fits);
        assert!(
            u.socket.sent_from.iter().all(|&f| f == Some(to)),
            "queued replies keep the address they must come from"
        );
        assert_eq!(u.queued_bytes(), 0);
        assert_eq!(u.want(), Interest::READABLE);
        let s = stats.snapshot();
        assert_eq!(s.datagrams_in, s.datagrams_out + s.datagrams_dropped);
    }

    /// A flood stops at the per-turn budget and asks to run again.
    #[test]
    fn budget_yields() {
        let mut u = endpoint();
        u.socket.send_ok.set(true);
        u.socket
            .incoming
            .borrow_mut()
            .extend((0..DATAGRAM_BUDGET + 1).map(|_| vec![1]));
        let stats = Stats::default();
        assert_eq!(
            u.turn(true, false, &mut [0; 4], &stats, Time(0)),
            UdpTurn::Again
        );
        assert!(u.has_work());
        assert_eq!(
            u.turn(false, false, &mut [0; 4], &stats, Time(0)),
            UdpTurn::Wait
        );
        assert_eq!(stats.snapshot().datagrams_out, DATAGRAM_BUDGET as u64 + 1);
    }
}
