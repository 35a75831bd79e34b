//! Listening sockets: how they are set up, and what an `accept()` result means.
//!
//! The socket is built with socket2 rather than `mio::net::TcpListener::bind`, because mio's
//! bind fixes the backlog at 128 and offers no say over `IPV6_V6ONLY`. Everything per
//! connection lives in the connection module; the loop decides *when* to accept.
//!
//! `accept()` errors fall into three groups (invariant 7 in `docs/02-event-loop.md`), returned as
//! [`Accepted`] values rather than errors because every one of them is expected:
//!
//! * `WouldBlock` — the backlog is empty: stop until the next readable edge.
//! * `ECONNABORTED` and the network errors Linux reports for a connection that died in the
//!   backlog (`EPROTO`, `ENETDOWN`, …) — that one connection is gone: continue.
//! * `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` — the process or system is out of descriptors or
//!   memory. Retrying at once would fail again forever (the classic 100%-CPU accept loop), so
//!   the loop pauses accepting on a timer and leaves the connections in the kernel backlog.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::config::StreamOptions;
use crate::service::ServiceFactory;

/// What one `accept()` produced.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection.
    Stream(TcpStream, SocketAddr),
    /// The backlog is empty.
    Drained,
    /// That connection died before we took it; try the next.
    Skip(io::Error),
    /// Out of descriptors or memory: pause accepting.
    Exhausted(io::Error),
}

/// A bound listening socket and the service its connections get.
pub struct Listener {
    socket: TcpListener,
    local: SocketAddr,
    factory: Arc<dyn ServiceFactory>,
    /// The loop's number for this endpoint (its counters).
    endpoint: usize,
    /// Every connection starts with a PROXY protocol header.
    pub(crate) proxy: bool,
    /// A readable edge was seen and the backlog may not be empty yet.
    pub(crate) ready: bool,
    /// Which of the loop's connection allowances its connections count against (0, the
    /// clients' cap, unless the loop gave it one of its own).
    pub(crate) pool: usize,
}

impl Listener {
    /// Binds `addr` with `backlog`, exclusively. An unspecified IPv6 address (`[::]`) is
    /// dual-stack; any other IPv6 address is IPv6-only, so `[::1]` and `127.0.0.1` can be
    /// bound side by side.
    pub fn bind(
        addr: SocketAddr,
        backlog: u32,
        factory: Arc<dyn ServiceFactory>,
    ) -> io::Result<Listener> {
        let socket = bind_group(addr, Type::STREAM, 1)?.remove(0);
        Listener::from_socket(socket, backlog, factory, 0)
    }

    /// Starts listening on a socket bound by [`bind_group`].
    pub(crate) fn from_socket(
        socket: Socket,
        backlog: u32,
        factory: Arc<dyn ServiceFactory>,
        endpoint: usize,
    ) -> io::Result<Listener> {
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        let socket = TcpListener::from_std(socket.into());
        let local = socket.local_addr()?;
        Ok(Listener {
            socket,
            local,
            factory,
            endpoint,
            proxy: false,
            // A client may connect before the first poll; the registration reports it, but
            // checking once costs one accept() and makes no assumption about that.
            ready: true,
            pool: 0,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The loop's number for this endpoint.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// The service factory for this listener's connections.
    pub fn factory(&self) -> &Arc<dyn ServiceFactory> {
        &self.factory
    }

    /// The mio source, for registration.
    pub(crate) fn source(&mut self) -> &mut TcpListener {
        &mut self.socket
    }

    /// Accepts one connection and classifies the outcome.
    pub fn accept(&self) -> Accepted {
        loop {
            match self.socket.accept() {
                Ok((stream, peer)) => return Accepted::Stream(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return classify_accept_error(e),
            }
        }
    }
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
pub fn bind_group(addr: SocketAddr, kind: Type, n: usize) -> io::Result<Vec<Socket>> {
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
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
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

fn classify_accept_error(e: io::Error) -> Accepted {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Accepted::Exhausted(e),
        // accept(2): "Linux passes already-pending network errors on the new socket as an
        // error code from accept() ... should be treated like EAGAIN by retrying."
        Some(
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::ENETDOWN
            | libc::ENONET
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::EPERM,
        ) => Accepted::Skip(e),
        // Anything else is unexpected; pausing is the safe answer (no busy loop).
        _ => Accepted::Exhausted(e),
    }
}

/// `addr` as people write it: an IPv4 client of a dual-stack `[::]` socket is reported by the
/// kernel as an IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]:port`); this turns it back
/// into `127.0.0.1:port`. Other addresses are returned unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Builtin;

    /// Port 0 is resolved to the bound port.
    #[test]
    fn binds_port_zero() {
        let l = Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            16,
            Builtin::Echo.factory(Default::default()).unwrap(),
        )
        .unwrap();
        assert_ne!(l.local_addr().port(), 0);
        assert!(matches!(l.accept(), Accepted::Drained));
    }

    /// Descriptor exhaustion pauses; an aborted connection is skipped.
    #[test]
    fn accept_errors_are_classified() {
        let e = |code| io::Error::from_raw_os_error(code);
        assert!(matches!(
            classify_accept_error(e(libc::EMFILE)),
            Accepted::Exhausted(_)
        ));
        assert!(matches!(
            classify_accept_error(e(libc::ENFILE)),
            Accepted::Exhausted(_)
        ));
        assert!(matches!(
            classify_accept_error(e(libc::ENOBUFS)),
            Accepted::Exhausted(_)
        ));
        assert!(matches!(
            classify_accept_error(e(libc::ENOMEM)),
            Accepted::Exhausted(_)
        ));
        assert!(matches!(
            classify_accept_error(e(libc::ECONNABORTED)),
            Accepted::Skip(_)
        ));
        assert!(matches!(
            classify_accept_error(e(libc::EPROTO)),
            Accepted::Skip(_)
        ));
    }

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

    /// `[::]` is dual-stack: an IPv4 client reaches it.
    #[test]
    fn unspecified_ipv6_is_dual_stack() {
        let Ok(l) = Listener::bind(
            "[::]:0".parse().unwrap(),
            16,
            Builtin::Echo.factory(Default::default()).unwrap(),
        ) else {
            // A kernel without IPv6 cannot run this check; say so rather than pass silently.
            panic!("IPv6 is not available on this machine");
        };
        let port = l.local_addr().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("IPv4 client reaches [::]");
    }
}
