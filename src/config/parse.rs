//! What a person types, parsed: `--listen` specifications, durations and sizes in human units,
//! CPU lists, and the server's name. Shared with loopd-bench, which parses the same units.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use super::MAX_SERVER_ID;
use crate::service::Builtin;

/// One `--listen SERVICE=ADDR[,proxy][,tls]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSpec {
    /// What to serve.
    pub service: Builtin,
    /// Where. `[::]` is dual-stack (IPv4 and IPv6); a specific IPv6 address is IPv6 only.
    pub addr: SocketAddr,
    /// Every connection starts with a PROXY protocol header (`,proxy`; TCP services only).
    pub proxy: bool,
    /// Every connection speaks TLS (`,tls`; TCP services only), after the PROXY header if
    /// there is one.
    pub tls: bool,
}

/// What a listener does below its service, from the options after its address: a PROXY
/// header first, TLS, both (the header comes first on the wire, whichever order they are
/// written in: a proxy sends it in front of the TLS it passes through), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenOptions {
    /// `,proxy`.
    pub proxy: bool,
    /// `,tls`.
    pub tls: bool,
}

/// Splits `SERVICE[,proxy][,tls]` (a `--listen` service, or a socket's
/// `FileDescriptorName=`) into the service and its options.
pub fn service_and_options(s: &str) -> Result<(Builtin, ListenOptions), String> {
    let mut parts = s.split(',');
    let service: Builtin = parts.next().unwrap_or_default().parse()?;
    let mut options = ListenOptions::default();
    for option in parts {
        let set = match option {
            "proxy" => &mut options.proxy,
            "tls" => &mut options.tls,
            other => {
                return Err(format!(
                    "unknown listener option '{other}' (known: proxy, tls)"
                ))
            }
        };
        if service.is_datagram() {
            let what = if option == "tls" {
                "TLS"
            } else {
                "the PROXY protocol"
            };
            return Err(format!(
                "{service} is a UDP service; {what} is for TCP listeners"
            ));
        }
        *set = true;
    }
    Ok((service, options))
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenSpec, String> {
        let (service, rest) = s.split_once('=').ok_or_else(|| {
            format!("'{s}' is not SERVICE=ADDR (for example echo=127.0.0.1:7007)")
        })?;
        // Options follow the address: echo=127.0.0.1:7007,proxy,tls.
        let (addr, options) = match rest.split_once(',') {
            Some((addr, options)) => (addr, Some(options)),
            None => (rest, None),
        };
        let named = match options {
            Some(options) => format!("{service},{options}"),
            None => service.to_string(),
        };
        let (service, options) = service_and_options(&named)?;
        let addr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IP:PORT address (IPv6 as [::1]:7007)"))?;
        Ok(ListenSpec {
            service,
            addr,
            proxy: options.proxy,
            tls: options.tls,
        })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = ListenOptions {
            proxy: self.proxy,
            tls: self.tls,
        };
        write_listen(f, self.service.name(), self.addr, options)
    }
}

/// An endpoint as `--listen` names it: `echo=127.0.0.1:7007`, `line=0.0.0.0:7100,proxy`,
/// `echo=0.0.0.0:7443,proxy,tls` (options in the order their bytes come on the wire).
pub(crate) fn write_listen(
    f: &mut fmt::Formatter<'_>,
    service: &str,
    addr: SocketAddr,
    options: ListenOptions,
) -> fmt::Result {
    write!(f, "{service}={addr}")?;
    if options.proxy {
        f.write_str(",proxy")?;
    }
    if options.tls {
        f.write_str(",tls")?;
    }
    Ok(())
}

/// The host name, the default `--server-id`: what tells one backend from another behind a
/// load balancer. `loopd` if the system has none.
pub fn host_name() -> String {
    match nix::unistd::gethostname().map(|name| name.into_string()) {
        Ok(Ok(name)) if valid_server_id(&name) => name,
        _ => "loopd".to_string(),
    }
}

/// A server id is one word of visible ASCII, so it reads back unambiguously from the `line`
/// service's space-separated `SERVER` reply and from logs.
pub fn valid_server_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SERVER_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses a CPU list as `taskset` writes one: `0-3`, `0,2`, `0-1,4`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let number = |n: &str| {
            n.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{s}' is not a CPU list like 0-3 or 0,2"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("'{part}' is an empty range"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(number(part)?),
        }
    }
    Ok(cpus)
}

/// Parses a duration in human units (`300s`, `5m`, `250ms`). A bare `0` means zero, which the
/// timeout flags read as "off".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 30s or 5m ({e})"))
}

/// Parses a byte size in human units (`256KiB`, `1MiB`, `4096`). `KiB`/`MiB` are powers of
/// two; `KB`/`MB` are powers of ten.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = s
        .parse()
        .map_err(|e| format!("'{s}' is not a size like 256KiB or 1MiB ({e})"))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("'{s}' is too large"))
}

/// Zero means "off" for the optional timeouts.
pub fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}
