//! Socket activation: listening sockets handed over by systemd (or any service manager that
//! speaks `sd_listen_fds(3)`), instead of binding.
//!
//! When `LISTEN_PID` names this process, `LISTEN_FDS` says how many descriptors it inherited
//! from 3 upwards, and `LISTEN_FDNAMES` names them (`FileDescriptorName=` in the `.socket`
//! unit). loopd serves each socket with the service its name says — `echo`, `udp-time`,
//! `admin`, any name `--listen` accepts, with its options (`echo,proxy`, `echo,proxy,tls`) —
//! and checks that a TCP service got a stream socket and a UDP service a datagram socket. Why
//! it matters: the service manager owns the listening socket, so while loopd restarts, new
//! connections wait in its backlog instead of being refused (`docs/B-operations.md` has the
//! sequence).
//!
//! The same protocol tells systemd when loopd is ready (`READY=1`), what it is doing
//! (`STATUS=`), that it is stopping (`STOPPING=1`) and that it is alive (`WATCHDOG=1`); the
//! [`Server`](crate::server::Server)'s supervisor sends those.

use std::os::fd::FromRawFd;

use socket2::{Socket, Type};

use crate::config::{service_and_options, ListenOptions};
use crate::endpoint::{EndpointSpec, Origin, Serve};
use crate::service::ServiceOptions;

/// The endpoints the service manager handed over, or `None` when loopd was not socket
/// activated. An error names the descriptor and what is wrong with it.
pub fn activated_endpoints(services: ServiceOptions) -> Result<Option<Vec<EndpointSpec>>, String> {
    let fds = sd_notify::listen_fds_with_names().map_err(|e| format!("socket activation: {e}"))?;
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut specs = Vec::new();
    for (fd, name) in fds {
        // SAFETY: sd_listen_fds(3) hands these descriptors to this process, which owns them
        // from now on; nothing else in loopd refers to them.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let kind = socket
            .r#type()
            .map_err(|e| format!("socket activation: descriptor {fd} ({name}): {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("socket activation: descriptor {fd} ({name}): {e}"))?;
        let (serve, options) = if name == "admin" {
            (Serve::Admin, ListenOptions::default())
        } else if name.starts_with("admin,") {
            return Err(format!(
                "socket activation: descriptor {fd} is named '{name}': the admin endpoint \
                 takes no options (it serves plain HTTP to probes and scrapers on a private \
                 address; put TLS in front of it if it must cross a network)"
            ));
        } else {
            // A service as --listen names it, options included: FileDescriptorName=echo,proxy,tls.
            let (service, options) = service_and_options(&name).map_err(|e| {
                format!(
                    "socket activation: descriptor {fd} is named '{name}': {e}; name each \
                     socket with FileDescriptorName= and a --listen service name or admin"
                )
            })?;
            (Serve::Handler(service.handler(services)), options)
        };
        let datagram = match &serve {
            Serve::Admin => false,
            Serve::Handler(h) => h.socket_type() == Type::DGRAM,
        };
        if (kind == Type::DGRAM) != datagram {
            let wanted = if datagram { "a datagram" } else { "a stream" };
            return Err(format!(
                "socket activation: '{name}' needs {wanted} socket (ListenDatagram= for UDP \
                 services, ListenStream= otherwise)"
            ));
        }
        specs.push(EndpointSpec {
            // The service, as metrics and logs name it; the options are the spec's own.
            name: name.split(',').next().unwrap_or_default().to_string(),
            origin: Origin::Inherited(socket),
            serve,
            proxy: options.proxy,
            tls: options.tls,
        });
    }
    Ok(Some(specs))
}
