//! Every tunable, its default, and why that default.
//!
//! The binary turns flags into a [`Config`]; [`Config::validate`] is the single place that
//! decides whether a combination makes sense. Nothing here touches a socket.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::proxy::TrustList;
use crate::service::{Builtin, Handler, ServiceOptions};

/// Where `loopd` listens when no `--listen` is given. Loopback, so a bare `loopd` exposes
/// nothing to the network; 7007 because the RFC port 7 needs privileges.
pub const DEFAULT_LISTEN: &str = "echo=127.0.0.1:7007";

/// Connections served at once. An idle connection costs about a hundred bytes of user memory
/// plus the kernel's socket, so ten thousand is modest; the real ceiling is usually the
/// open-files limit, which start-up checks against this.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Connections the admin endpoint serves at once, apart from `--max-connections`. The probes
/// and the scrape must answer when the clients' cap is full — that is when an operator looks,
/// and a liveness probe that waits in the backlog gets a busy server restarted — so they do
/// not queue behind clients. And the allowance is bounded, so whoever reaches the admin
/// address cannot take more descriptors than this. Ten covers a kubelet's liveness and
/// readiness probes (a connection each per period), a pair of Prometheus servers keeping
/// theirs open, and an operator's `curl`, with room to spare; HAProxy's stats socket defaults
/// to the same ten (`stats maxconn`).
pub const ADMIN_CONNECTIONS: usize = 10;

/// Close connections with no traffic in either direction for this long. Five minutes outlives
/// interactive pauses and still reclaims descriptors from peers that vanished silently.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Abort a connection whose pending output has not moved for this long: the peer stopped
/// reading. Thirty seconds rides out a congested path but not a wedged client.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// After our FIN, keep reading and discarding the peer's data for at most this long before
/// closing (nginx's `lingering_timeout` idea). Five seconds covers a peer that finishes a
/// request in flight; a longer wait only pins a descriptor.
pub const DEFAULT_LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// On SIGTERM, give connections this long to flush and close before force-closing them.
/// Ten seconds is twice the linger timeout, so a lingering close always completes in time.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// On SIGTERM, how long to keep serving with `/readyz` at 503 before draining. Zero by
/// default: without a load balancer watching `/readyz` there is nobody to wait for. Behind
/// one (Kubernetes), set it to a little more than the balancer needs to take the endpoint out
/// of rotation (a few probe periods), so that no new connection arrives to be refused.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::ZERO;

/// Stop reading from a connection when this much output is pending for it. 256 KiB keeps a
/// loopback or LAN pipe full (it exceeds a typical bandwidth-delay product there) while
/// bounding what one slow reader can cost.
pub const DEFAULT_HIGH_WATERMARK: usize = 256 * 1024;

/// Resume reading when pending output falls below this. A quarter of the high watermark gives
/// hysteresis, so a connection does not flap between paused and reading on every write.
pub const DEFAULT_LOW_WATERMARK: usize = 64 * 1024;

/// Read at most this much from one connection per loop turn before serving others. 256 KiB is
/// a few large reads: enough to amortise the turn, small enough that one bulk sender delays
/// other connections by well under a millisecond.
pub const DEFAULT_READ_BUDGET: usize = 256 * 1024;

/// The kernel's queue of completed connections not yet accepted. mio's own `bind` uses 128,
/// which overflows during connect bursts (dropped SYNs cost a client a one-second retransmit);
/// 1024 rides out bursts. The kernel caps it at `net.core.somaxconn`.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Disable Nagle's algorithm. Request/response traffic with small messages otherwise waits
/// for delayed ACKs (up to 40 ms on Linux).
pub const DEFAULT_NODELAY: bool = true;

/// Close a connection whose partial request (a line without its newline, a frame without
/// all its bytes) has been arriving for this long. Without it, a client that sends one byte
/// a second keeps a slot for as long as the idle timeout lets it, and 8 KiB at that pace
/// takes over two hours: a few such clients hold every slot of a capped server (slowloris).
/// Thirty seconds is half of nginx's `client_header_timeout` and well above HAProxy's common
/// `timeout http-request` of 10 s; a whole 1 MiB frame still needs only 35 KB/s to arrive.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest value any size setting may take (watermarks, budget, line and frame limits).
/// Each bounds what one connection may hold in memory, so a larger bound protects nothing; it
/// also keeps every sum of a limit and a length far from overflowing.
pub const MAX_SIZE_SETTING: usize = 1 << 30;

/// The largest `--max-connections`. Beyond the open-files limit of any real system
/// (`fs.nr_open` defaults to 2^20); it bounds the slab reserved at start-up.
pub const MAX_CONNECTIONS_SETTING: usize = 1 << 24;

/// TCP keepalive idle time. Catches peers that vanished without a FIN when the idle timeout
/// is off or long; one minute is the common production choice (Redis uses 300 s).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);

/// Replies a second one source may draw from a UDP service whose answers outgrow its requests
/// (udp-chargen, and udp-daytime and udp-time, which answer an empty datagram), after a burst
/// of as many. A datagram's source is whatever its sender wrote, so without a limit one
/// forged source makes loopd send its victim whatever a loop can produce — hundreds of
/// thousands of datagrams a second, chargen's up to 512 bytes each for a 1-byte request —
/// and a loop with another server on high ports never ends. A person or a test asks these
/// services a few times; a hundred a second per source is far above that and bounds a victim's
/// share at about 50 KB/s of chargen per loop. DNS response-rate limiting on authoritative
/// servers uses a handful a second; loopd is a server people test against, so it is generous.
pub const DEFAULT_UDP_RATE_LIMIT: u32 = 100;

/// The largest per-source rate limit. A million replies a second to one source limits
/// nothing a loop can send, and it keeps the interval between two replies at least a
/// microsecond.
pub const MAX_UDP_RATE_LIMIT: u32 = 1_000_000;

/// The per-source response rate limits of the UDP services (see [`crate::udp::guard`]),
/// replies a second; `None` = off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpLimits {
    /// For services whose answers outgrow their requests ([`DEFAULT_UDP_RATE_LIMIT`]).
    pub rate_limit: Option<u32>,
    /// For services whose answers are never larger than their requests (udp-echo). Off by
    /// default: echo amplifies nothing, and a load tool sending from one address must not be
    /// throttled. Set it to bound an echo loop with another server.
    pub echo_rate_limit: Option<u32>,
}

impl Default for UdpLimits {
    fn default() -> UdpLimits {
        UdpLimits {
            rate_limit: Some(DEFAULT_UDP_RATE_LIMIT),
            echo_rate_limit: None,
        }
    }
}

/// Socket options applied to every accepted TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// See [`DEFAULT_NODELAY`].
    pub nodelay: bool,
    /// See [`DEFAULT_KEEPALIVE`]; `None` = off.
    pub keepalive: Option<Duration>,
    /// `SO_RCVBUF` in bytes; `None` leaves the kernel's receive-buffer autotuning on. A
    /// fixed, large buffer lets a bulk sender keep sending without waiting for this side's
    /// window to open (on loopback that wait moves the sender's work onto the receiver's
    /// CPU), at the price of kernel memory the peer may fill on every connection. Off by
    /// default: autotuning is right for everything but bulk benchmarks.
    pub rcvbuf: Option<usize>,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            nodelay: DEFAULT_NODELAY,
            keepalive: Some(DEFAULT_KEEPALIVE),
            rcvbuf: None,
        }
    }
}

/// The most loops a server runs; far more than the cores of any machine loopd meets.
pub const MAX_THREADS: usize = 1024;

/// How long a connection to a `,proxy` listener may take to send its PROXY protocol header.
/// A proxy sends it with its first packet, so a few seconds is generous; without a limit, a
/// connection that sends nothing would hold a slot until the idle timeout.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `--server-id`: a host name's limit.
pub const MAX_SERVER_ID: usize = 255;

/// One `--listen SERVICE=ADDR[,proxy]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSpec {
    /// What to serve.
    pub service: Builtin,
    /// Where. `[::]` is dual-stack (IPv4 and IPv6); a specific IPv6 address is IPv6 only.
    pub addr: SocketAddr,
    /// Every connection starts with a PROXY protocol header (`,proxy`; TCP services only).
    pub proxy: bool,
}

/// Splits `SERVICE[,proxy]` (a `--listen` service, or a socket's `FileDescriptorName=`)
/// into the service and whether it reads a PROXY protocol header.
pub fn service_and_options(s: &str) -> Result<(Builtin, bool), String> {
    let mut parts = s.split(',');
    let service: Builtin = parts.next().unwrap_or_default().parse()?;
    let mut proxy = false;
    for option in parts {
        match option {
            "proxy" if service.is_datagram() => {
                return Err(format!(
                    "{service} is a UDP service; the PROXY protocol is for TCP listeners"
                ))
            }
            "proxy" => proxy = true,
            other => return Err(format!("unknown listener option '{other}' (known: proxy)")),
        }
    }
    Ok((service, proxy))
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenSpec, String> {
        let (service, rest) = s.split_once('=').ok_or_else(|| {
            format!("'{s}' is not SERVICE=ADDR (for example echo=127.0.0.1:7007)")
        })?;
        // Options follow the address: echo=127.0.0.1:7007,proxy.
        let (addr, options) = match rest.split_once(',') {
            Some((addr, options)) => (addr, Some(options)),
            None => (rest, None),
        };
        let named = match options {
            Some(options) => format!("{service},{options}"),
            None => service.to_string(),
        };
        let (service, proxy) = service_and_options(&named)?;
        let addr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IP:PORT address (IPv6 as [::1]:7007)"))?;
        Ok(ListenSpec {
            service,
            addr,
            proxy,
        })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.service, self.addr)?;
        if self.proxy {
            f.write_str(",proxy")?;
        }
        Ok(())
    }
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

/// Per-connection limits, shared by every connection of a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// See [`DEFAULT_HIGH_WATERMARK`].
    pub high_watermark: usize,
    /// See [`DEFAULT_LOW_WATERMARK`].
    pub low_watermark: usize,
    /// See [`DEFAULT_READ_BUDGET`].
    pub read_budget: usize,
    /// See [`DEFAULT_IDLE_TIMEOUT`]; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// See [`DEFAULT_WRITE_STALL_TIMEOUT`]; `None` = never.
    pub write_stall_timeout: Option<Duration>,
    /// See [`DEFAULT_LINGER_TIMEOUT`].
    pub linger_timeout: Duration,
    /// See [`DEFAULT_REQUEST_TIMEOUT`]; `None` = never.
    pub request_timeout: Option<Duration>,
    /// See [`DEFAULT_PROXY_TIMEOUT`]; counted from accept.
    pub proxy_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            high_watermark: DEFAULT_HIGH_WATERMARK,
            low_watermark: DEFAULT_LOW_WATERMARK,
            read_budget: DEFAULT_READ_BUDGET,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            write_stall_timeout: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            linger_timeout: DEFAULT_LINGER_TIMEOUT,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            proxy_timeout: DEFAULT_PROXY_TIMEOUT,
        }
    }
}

/// Everything a server needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listeners, in order.
    pub listen: Vec<ListenSpec>,
    /// Event loops, each on its own thread with its own socket per listener (see
    /// [`Server`](crate::server::Server)). One by default: a loop saturates a core, and
    /// scaling by loops is a choice about cores, not a default.
    pub threads: usize,
    /// Loop `i` runs on the `i`-th CPU of this list; `None` leaves placement to the kernel.
    pub pin_cpus: Option<Vec<usize>>,
    /// The admin endpoint's address (`/metrics`, `/healthz`, `/readyz`); `None` = off.
    pub admin: Option<SocketAddr>,
    /// See [`DEFAULT_DRAIN_DELAY`].
    pub drain_delay: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// See [`DEFAULT_BACKLOG`].
    pub backlog: u32,
    /// Socket options of accepted connections.
    pub stream: StreamOptions,
    /// Per-connection limits.
    pub limits: Limits,
    /// Limits of the framed services.
    pub services: ServiceOptions,
    /// Per-source response rate limits of the UDP services.
    pub udp: UdpLimits,
    /// This server's name (`--server-id`): the `line` service's `SERVER` reply, `STATS`, and
    /// the exit line.
    pub server_id: String,
    /// The sources allowed to send a PROXY protocol header to a `,proxy` listener
    /// (`--proxy-from`); loopback by default.
    pub proxy_from: TrustList,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("default listen spec parses")],
            threads: 1,
            pin_cpus: None,
            admin: None,
            drain_delay: DEFAULT_DRAIN_DELAY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            backlog: DEFAULT_BACKLOG,
            stream: StreamOptions::default(),
            limits: Limits::default(),
            services: ServiceOptions::default(),
            udp: UdpLimits::default(),
            server_id: host_name(),
            proxy_from: TrustList::default(),
        }
    }
}

impl Config {
    /// The endpoints `listen` names, each with its built-in service's handler.
    pub fn endpoints(&self) -> impl Iterator<Item = (SocketAddr, Handler)> + '_ {
        self.listen
            .iter()
            .map(|spec| (spec.addr, spec.service.handler(self.services)))
    }
}

/// A configuration that cannot work, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The low watermark must be below the high one, or reading would never resume.
    Watermarks {
        /// The low watermark given.
        low: usize,
        /// The high watermark given.
        high: usize,
    },
    /// A size or count that must be positive was zero.
    Zero(&'static str),
    /// A size or count larger than can be honoured.
    TooLarge {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// Two listeners on the same address.
    DuplicateListen(SocketAddr),
    /// A server id that is not one word of visible ASCII.
    ServerId(String),
    /// Fewer CPUs listed for pinning than there are loops.
    PinCpus {
        /// CPUs listed.
        cpus: usize,
        /// Loops.
        threads: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Watermarks { low, high } => write!(
                f,
                "low watermark ({low} bytes) must be below high watermark ({high} bytes)"
            ),
            ConfigError::Zero(what) => write!(f, "{what} must be greater than zero"),
            ConfigError::TooLarge { flag, value, max } if *flag == "--max-connections" => {
                write!(f, "{flag} {value} is more than the most allowed, {max}")
            }
            ConfigError::TooLarge { flag, value, max } if flag.ends_with("rate-limit") => {
                write!(
                    f,
                    "{flag} {value} is more than {max} replies a second, the most allowed"
                )
            }
            ConfigError::TooLarge { flag, value, max } if *flag == "--threads" => write!(
                f,
                "{flag} {value} is more than the {max} allowed (at most one loop per connection \
                 slot, and {MAX_THREADS} in all)"
            ),
            ConfigError::TooLarge { flag, value, max } => {
                let size = |n: usize| bytesize::ByteSize(n as u64).to_string_as(true);
                write!(
                    f,
                    "{flag} {} is larger than {}, the most one connection may be allowed to hold",
                    size(*value),
                    size(*max)
                )
            }
            ConfigError::DuplicateListen(addr) => write!(f, "{addr} is given twice in --listen"),
            ConfigError::ServerId(id) => write!(
                f,
                "--server-id {id:?} must be 1 to {MAX_SERVER_ID} visible ASCII characters, \
                 without spaces"
            ),
            ConfigError::PinCpus { cpus, threads } => write!(
                f,
                "--pin-cpus lists {cpus} CPUs for {threads} loops: give one per loop"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.high_watermark == 0 {
            return Err(ConfigError::Zero("high watermark"));
        }
        if l.low_watermark >= l.high_watermark {
            return Err(ConfigError::Watermarks {
                low: l.low_watermark,
                high: l.high_watermark,
            });
        }
        if l.read_budget == 0 {
            return Err(ConfigError::Zero("read budget"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("max connections"));
        }
        if self.threads == 0 {
            return Err(ConfigError::Zero("threads"));
        }
        if self.threads > MAX_THREADS {
            return Err(ConfigError::TooLarge {
                flag: "--threads",
                value: self.threads,
                max: MAX_THREADS,
            });
        }
        if self.max_connections < self.threads {
            return Err(ConfigError::TooLarge {
                flag: "--threads",
                value: self.threads,
                max: self.max_connections,
            });
        }
        if let Some(cpus) = &self.pin_cpus {
            if cpus.len() < self.threads {
                return Err(ConfigError::PinCpus {
                    cpus: cpus.len(),
                    threads: self.threads,
                });
            }
        }
        if self.backlog == 0 {
            return Err(ConfigError::Zero("backlog"));
        }
        if self.services.max_line == 0 {
            return Err(ConfigError::Zero("max line"));
        }
        if self.services.max_frame == 0 {
            return Err(ConfigError::Zero("max frame"));
        }
        if self.udp.rate_limit == Some(0) || self.udp.echo_rate_limit == Some(0) {
            // Off is `None`; a limit of zero would answer nobody.
            return Err(ConfigError::Zero("a UDP rate limit"));
        }
        let frame_max = MAX_SIZE_SETTING.min(u32::MAX as usize);
        for (flag, value, max) in [
            ("--high-watermark", l.high_watermark, MAX_SIZE_SETTING),
            ("--low-watermark", l.low_watermark, MAX_SIZE_SETTING),
            ("--read-budget", l.read_budget, MAX_SIZE_SETTING),
            ("--max-line", self.services.max_line, MAX_SIZE_SETTING),
            (
                "--tcp-rcvbuf",
                self.stream.rcvbuf.unwrap_or(0),
                MAX_SIZE_SETTING,
            ),
            ("--max-frame", self.services.max_frame, frame_max),
            (
                "--max-connections",
                self.max_connections,
                MAX_CONNECTIONS_SETTING,
            ),
            (
                "--udp-rate-limit",
                self.udp.rate_limit.unwrap_or(0) as usize,
                MAX_UDP_RATE_LIMIT as usize,
            ),
            (
                "--udp-echo-rate-limit",
                self.udp.echo_rate_limit.unwrap_or(0) as usize,
                MAX_UDP_RATE_LIMIT as usize,
            ),
        ] {
            if value > max {
                return Err(ConfigError::TooLarge { flag, value, max });
            }
        }
        if self.listen.is_empty() {
            return Err(ConfigError::Zero("the number of listeners"));
        }
        if !valid_server_id(&self.server_id) {
            return Err(ConfigError::ServerId(self.server_id.clone()));
        }
        // TCP and UDP have separate port spaces: echo and udp-echo may share an address.
        // Port 0 means "any free port", so two of them never clash.
        for (i, spec) in self.listen.iter().enumerate() {
            let clash = |other: &ListenSpec| {
                other.addr == spec.addr
                    && spec.addr.port() != 0
                    && other.service.is_datagram() == spec.service.is_datagram()
            };
            if self.listen[..i].iter().any(clash) {
                return Err(ConfigError::DuplicateListen(spec.addr));
            }
        }
        Ok(())
    }
}

/// Loop `index`'s share of `max_connections` over `threads` loops. The shares add up to the
/// total exactly: the remainder of the division goes one each to the first loops, so no
/// connection slot is lost to rounding and no loop gets more than one over another.
pub fn connection_share(max_connections: usize, threads: usize, index: usize) -> usize {
    max_connections / threads + usize::from(index < max_connections % threads)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are a valid configuration serving echo on loopback port 7007.
    #[test]
    fn defaults_validate() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen[0].service, Builtin::Echo);
        assert_eq!(c.listen[0].addr, "127.0.0.1:7007".parse().unwrap());
    }

    /// SERVICE=ADDR accepts IPv4, IPv6 and the dual-stack wildcard.
    #[test]
    fn listen_specs() {
        let v4: ListenSpec = "discard=0.0.0.0:9".parse().unwrap();
        assert_eq!(v4.service, Builtin::Discard);
        let v6: ListenSpec = "chargen=[::1]:19".parse().unwrap();
        assert!(v6.addr.is_ipv6());
        let dual: ListenSpec = "echo=[::]:7".parse().unwrap();
        assert_eq!(dual.to_string(), "echo=[::]:7");
        assert!("echo"
            .parse::<ListenSpec>()
            .unwrap_err()
            .contains("SERVICE=ADDR"));
        assert!("echo=localhost:7".parse::<ListenSpec>().is_err());
        let proxied: ListenSpec = "line=0.0.0.0:7100,proxy".parse().unwrap();
        assert!(proxied.proxy && !v4.proxy);
        assert_eq!(proxied.to_string(), "line=0.0.0.0:7100,proxy");
        let udp = "udp-echo=0.0.0.0:7,proxy"
            .parse::<ListenSpec>()
            .unwrap_err();
        assert!(udp.contains("for TCP listeners"), "{udp}");
        let unknown = "echo=0.0.0.0:7,tls".parse::<ListenSpec>().unwrap_err();
        assert!(
            unknown.contains("unknown listener option 'tls'"),
            "{unknown}"
        );
    }

    /// A server id is one word of visible ASCII; the host name is the default.
    #[test]
    fn server_ids() {
        assert!(valid_server_id(&host_name()));
        for good in ["web-1", "10.0.0.7", "a"] {
            assert!(valid_server_id(good), "{good}");
        }
        for bad in ["", "two words", "tab\there", "é", &"x".repeat(256)] {
            assert!(!valid_server_id(bad), "{bad}");
        }
        let c = Config {
            server_id: "two words".into(),
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::ServerId(_))));
    }

    /// Watermarks must leave hysteresis; zero sizes are refused.
    #[test]
    fn invalid_combinations() {
        let mut c = Config::default();
        c.limits.low_watermark = c.limits.high_watermark;
        assert!(matches!(c.validate(), Err(ConfigError::Watermarks { .. })));
        let mut c = Config::default();
        c.limits.read_budget = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("read budget")));
        let mut c = Config::default();
        c.listen.push(c.listen[0]);
        assert!(matches!(c.validate(), Err(ConfigError::DuplicateListen(_))));
        let mut c = Config::default();
        c.listen.push("udp-echo=127.0.0.1:7007".parse().unwrap());
        c.validate().expect("TCP and UDP may share a port");
        let c = Config {
            listen: vec![
                "echo=127.0.0.1:0".parse().unwrap(),
                "line=127.0.0.1:0".parse().unwrap(),
            ],
            ..Config::default()
        };
        c.validate().expect("two ephemeral ports are distinct");
    }

    /// Sizes that cannot be honoured are refused by name before any arithmetic sees them.
    #[test]
    fn oversize_settings() {
        let mut c = Config::default();
        c.services.max_line = usize::MAX;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooLarge {
                flag: "--max-line",
                ..
            })
        ));
        let mut c = Config::default();
        c.services.max_frame = u32::MAX as usize + 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooLarge {
                flag: "--max-frame",
                ..
            })
        ));
        let mut c = Config::default();
        c.services.max_frame = MAX_SIZE_SETTING;
        c.validate().expect("the largest setting is allowed");
    }

    /// A UDP rate limit is off (`None`) or between 1 and a million a second.
    #[test]
    fn udp_rate_limits() {
        let mut c = Config::default();
        c.udp.echo_rate_limit = Some(MAX_UDP_RATE_LIMIT);
        c.validate().expect("the largest limit is allowed");
        c.udp.rate_limit = Some(MAX_UDP_RATE_LIMIT + 1);
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("--udp-rate-limit 1000001 is more than 1000000 replies a second"),
            "{err}"
        );
        c.udp.rate_limit = Some(0);
        assert_eq!(c.validate(), Err(ConfigError::Zero("a UDP rate limit")));
        c.udp.rate_limit = None;
        c.validate().expect("off");
    }

    /// Shares add up to the total, differ by at most one, and never leave a loop without
    /// a slot when there are enough for all.
    #[test]
    fn connection_shares() {
        for (total, threads) in [(40, 4), (10, 4), (10_000, 3), (5, 5), (7, 2)] {
            let shares: Vec<usize> = (0..threads)
                .map(|i| connection_share(total, threads, i))
                .collect();
            assert_eq!(shares.iter().sum::<usize>(), total, "{shares:?}");
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1 && *lo >= 1, "{shares:?}");
        }
    }

    /// CPU lists as taskset writes them.
    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0,2"), Ok(vec![0, 2]));
        assert_eq!(parse_cpu_list("1, 4-5"), Ok(vec![1, 4, 5]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }

    /// Human units for durations and sizes.
    #[test]
    fn human_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }
}
