//! Listening sockets: how they are set up, and what an `accept()` result means.
//!
//! The socket is bound by [`bind_group`] (socket2 rather than `mio::net::TcpListener::bind`,
//! because mio's bind fixes the backlog at 128 and offers no say over `IPV6_V6ONLY`); here it
//! starts listening with the configured backlog. The options of each accepted connection are
//! the socket glue's ([`configure_stream`](crate::socket::configure_stream)); the loop decides
//! *when* to accept.
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

use mio::net::{TcpListener, TcpStream};
use socket2::{Socket, Type};

use crate::fault::Local;
use crate::service::ServiceFactory;
use crate::socket::{bind_group, configure_listener};

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
    /// Every connection speaks TLS (after the PROXY header, if there is one).
    pub(crate) tls: bool,
    /// A readable edge was seen and the backlog may not be empty yet.
    pub(crate) ready: bool,
    /// Its faults (`--fault`), if any.
    pub(crate) faults: Option<Local>,
    /// Accepting is held by a fault (stop-accept, refuse): `ready` alone does not make the
    /// loop poll again at once.
    pub(crate) held: bool,
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

    /// Starts listening on a socket bound by [`bind_group`] (or handed over by systemd), with
    /// the options its connections inherit ([`configure_listener`]).
    pub(crate) fn from_socket(
        socket: Socket,
        backlog: u32,
        factory: Arc<dyn ServiceFactory>,
        endpoint: usize,
    ) -> io::Result<Listener> {
        configure_listener(&socket)?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        let socket = TcpListener::from_std(socket.into());
        let local = socket.local_addr()?;
        Ok(Listener {
            socket,
            local,
            factory,
            endpoint,
            proxy: false,
            tls: false,
            // A client may connect before the first poll; the registration reports it, but
            // checking once costs one accept() and makes no assumption about that.
            ready: true,
            pool: 0,
            faults: None,
            held: false,
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

    /// Stops listening (the `refuse` fault): the kernel refuses connects with RST and resets
    /// the connections waiting in the backlog. The descriptor stays, so systemd's socket and
    /// the poller's registration survive; [`Listener::listen_again`] undoes it.
    pub(crate) fn refuse(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Read)
    }

    /// Listens again after [`Listener::refuse`]. Linux releases a port the kernel chose
    /// (`:0`) when a listener shuts down, so it is bound again first; a port given
    /// explicitly stays bound and that bind fails harmlessly.
    pub(crate) fn listen_again(&self, backlog: u32) -> io::Result<()> {
        let socket = socket2::SockRef::from(&self.socket);
        let _ = socket.bind(&self.local.into());
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))
    }

    /// Connections waiting in the accept queue now: what Linux reports for a listening
    /// socket in `TCP_INFO` (`tcpi_unacked` holds the accept backlog's length there). `None`
    /// elsewhere, or if the call fails.
    pub(crate) fn backlog(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: `info` is a plain C struct the kernel fills, of the size passed.
            let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = unsafe {
                libc::getsockopt(
                    self.socket.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    (&mut info as *mut libc::tcp_info).cast(),
                    &mut len,
                )
            };
            (rc == 0).then_some(info.tcpi_unacked)
        }
        #[cfg(not(target_os = "linux"))]
        None
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
