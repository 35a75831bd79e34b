//! Socket helpers, in one place: resolving `host:port`, the unspecified address of a
//! family, binding to a source address so the port is chosen at connect time, and naming
//! the two `io::Error` kinds every non-blocking loop treats as values rather than errors.
//!
//! Everything here is below the transports ([`tcp`](crate::tcp), [`udp`](crate::udp)) and
//! the settings ([`config`](crate::config), [`cpu`](crate::cpu)), and imports none of them.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::Socket;

/// Resolves `host:port` to its first address; the error names what was given.
pub fn resolve(host: &str) -> Result<SocketAddr, String> {
    host.to_socket_addrs()
        .map_err(|e| format!("'{host}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{host}' resolves to no address"))
}

/// The unspecified address of `target`'s family, for a socket that lets the kernel choose.
pub fn any_address(target: SocketAddr) -> IpAddr {
    match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Binds `socket` to `ip` with port 0. With `IP_BIND_ADDRESS_NO_PORT` the kernel picks the
/// port at connect time from the full 4-tuple, so each source address gets its own
/// ephemeral range towards the target rather than one port reserved across all
/// destinations.
pub fn bind_source(socket: &Socket, ip: IpAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid int option value of the right size, on a socket we own.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    socket.bind(&SocketAddr::new(ip, 0).into())
}

/// The socket has nothing for us now: wait for the next edge (an expected condition, not
/// an error).
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

/// A signal interrupted the call: make it again.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == ErrorKind::Interrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names resolve to their first address, and the error says what was asked.
    #[test]
    fn resolving() {
        assert_eq!(
            resolve("127.0.0.1:7").unwrap(),
            "127.0.0.1:7".parse().unwrap()
        );
        assert!(resolve("nowhere").unwrap_err().contains("'nowhere'"));
        assert_eq!(
            any_address("[::1]:7".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
    }
}
