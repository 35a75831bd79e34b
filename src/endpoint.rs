//! What a server serves: each endpoint's name, where its socket comes from, and what serves
//! it — the one shape every source of endpoints produces ([`Config::endpoints`] from
//! `--listen` and `--admin`, [`systemd`](crate::systemd) from socket activation, or a
//! program's own list) and [`Server::with_endpoints`] binds.
//!
//! [`Config::endpoints`]: crate::config::Config::endpoints
//! [`Server::with_endpoints`]: crate::server::Server::with_endpoints

use std::net::SocketAddr;

use std::sync::Arc;

use crate::fault::Switch;
use crate::service::Handler;

/// One endpoint to serve: its service's name (for logs and metrics), its socket, and what
/// serves it.
pub struct EndpointSpec {
    /// The service's name.
    pub name: String,
    /// Where the socket comes from.
    pub origin: Origin,
    /// What serves it.
    pub serve: Serve,
    /// Its connections start with a PROXY protocol header (TCP handlers only).
    pub proxy: bool,
    /// Its connections speak TLS, after the PROXY header if there is one (TCP handlers only;
    /// the `tls` feature, and certificates in [`LoopConfig::tls`]).
    ///
    /// [`LoopConfig::tls`]: crate::config::LoopConfig::tls
    pub tls: bool,
}

impl EndpointSpec {
    /// `handler` on `addr`, named after its transport (`tcp` or `udp`): how a program serves
    /// its own [`Service`](crate::service::Service) or
    /// [`DatagramService`](crate::service::DatagramService).
    pub fn bind(addr: SocketAddr, handler: Handler) -> EndpointSpec {
        let name = match handler {
            Handler::Stream(_) => "tcp",
            Handler::Datagram(_) => "udp",
        };
        EndpointSpec {
            name: name.to_string(),
            origin: Origin::Bind(addr),
            serve: Serve::Handler(handler),
            proxy: false,
            tls: false,
        }
    }
}

/// Where an endpoint's socket comes from.
#[derive(Debug)]
pub enum Origin {
    /// Bind this address (one socket per loop; see
    /// [`bind_group`](crate::socket::bind_group)).
    Bind(SocketAddr),
    /// A socket already bound and listening, handed over by the service manager (systemd
    /// socket activation). With several loops every loop gets a duplicate of the one socket,
    /// so they share its accept queue.
    Inherited(socket2::Socket),
}

/// What serves an endpoint.
#[derive(Clone)]
pub enum Serve {
    /// A service handler, on every loop.
    Handler(Handler),
    /// The admin endpoint (`/metrics`, `/healthz`, `/readyz`), on the first loop only, with
    /// an allowance of [`ADMIN_CONNECTIONS`](crate::config::ADMIN_CONNECTIONS) apart from the
    /// clients' cap.
    Admin,
}

/// An endpoint's socket for one loop, with what serves it there.
pub(crate) struct Bound {
    pub(crate) socket: socket2::Socket,
    pub(crate) handler: Handler,
    pub(crate) name: String,
    /// Connections start with a PROXY protocol header (TCP only).
    pub(crate) proxy: bool,
    /// Connections speak TLS (TCP only).
    pub(crate) tls: bool,
    /// Connections count against an allowance of this many of their own instead of the
    /// clients' cap (TCP only): the admin endpoint's.
    pub(crate) allowance: Option<usize>,
    /// Its faults, shared with the other loops and the admin endpoint.
    pub(crate) faults: Option<Arc<Switch>>,
}
