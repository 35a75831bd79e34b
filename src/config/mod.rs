//! Every tunable, its default, and why that default.
//!
//! The binary turns flags into a [`Config`]; [`Config::validate`] is the single place that
//! decides whether a combination makes sense. Nothing here touches a socket.

mod parse;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::endpoint::{EndpointSpec, Origin, Serve};
use crate::fault::FaultConfig;
use crate::proxy::TrustList;
use crate::service::ServiceOptions;

pub(crate) use parse::write_listen;
pub use parse::{
    host_name, nonzero, parse_cpu_list, parse_duration, parse_size, service_and_options,
    valid_server_id, ListenOptions, ListenSpec,
};
pub use tls::{
    CertSource, ClientAuth, TlsConfig, TlsSettings, DEFAULT_CERT_CHECK, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_SESSION_CACHE,
};

/// Where `loopd` listens when no `--listen` is given. Loopback, so a bare `loopd` exposes
/// nothing to the network; 7007 because the RFC port 7 needs privileges.
pub const DEFAULT_LISTEN: &str = "echo=127.0.0.1:7007";

/// Connections served at once. An idle connection costs about 110 bytes of user memory (its
/// slab entry and deadline entry; `cargo bench -p loopd-bench --bench footprint`) plus the
/// kernel's socket, so ten thousand is modest; the real ceiling is usually the open-files
/// limit, which start-up checks against this.
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

/// Handshake steps (turns of a connection in its handshake stage that read: one flight of
/// the client's) per turn of a loop. The costly step, a full handshake's key exchange and
/// signature, takes about 110 µs of a loop's CPU with ECDSA P-256 and 300 µs with RSA-2048
/// (`cargo bench -p loopd-bench --bench tls_server`): four of them keep what established
/// connections wait for a burst of new clients near half a millisecond with ECDSA and a
/// millisecond with RSA, and a poll every four handshakes costs the handshakes nothing
/// measurable.
pub const DEFAULT_HANDSHAKE_BUDGET: usize = 4;

/// The longest `--server-id`: a host name's limit.
pub const MAX_SERVER_ID: usize = 255;

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
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`]; counted from accept, for connections to `,tls`
    /// listeners.
    pub handshake_timeout: Duration,
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
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Everything a server needs to start, split by who reads it: what to serve (`listen`,
/// `admin`, `services`: [`Config::endpoints`] turns them into endpoints), how the server is
/// laid out ([`Deployment`], read by [`Server`](crate::server::Server)), and what every loop
/// reads ([`LoopConfig`]). Each constructor takes only the part it reads, all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listeners, in order.
    pub listen: Vec<ListenSpec>,
    /// The admin endpoint's address (`/metrics`, `/healthz`, `/readyz`); `None` = off.
    pub admin: Option<SocketAddr>,
    /// Limits of the framed services.
    pub services: ServiceOptions,
    /// Loops, their cap and placement, the drain delay.
    pub deployment: Deployment,
    /// What every loop reads: limits, socket options, timeouts.
    pub loops: LoopConfig,
}

/// How a server is laid out: how many loops, where they run, how many clients they serve
/// together, and how a shutdown begins. Read by [`Server`](crate::server::Server) and its
/// supervisor, never by a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Event loops, each on its own thread with its own socket per listener (see
    /// [`Server`](crate::server::Server)). One by default: a loop saturates a core, and
    /// scaling by loops is a choice about cores, not a default.
    pub threads: usize,
    /// Loop `i` runs on the `i`-th CPU of this list; `None` leaves placement to the kernel.
    pub pin_cpus: Option<Vec<usize>>,
    /// See [`DEFAULT_MAX_CONNECTIONS`]; split between the loops by [`connection_share`].
    pub max_connections: usize,
    /// See [`DEFAULT_DRAIN_DELAY`].
    pub drain_delay: Duration,
    /// Faults injected on purpose (`--fault`), matched to the endpoints when the server binds
    /// them; none by default.
    pub faults: FaultConfig,
}

/// What every event loop reads, all of it: the limits of its connections, their socket
/// options, its listeners' backlog, how long its drain may take, its UDP defences, who may
/// send a PROXY header, the server's name, and the TLS settings of its `,tls` listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopConfig {
    /// Per-connection limits.
    pub limits: Limits,
    /// Socket options of accepted connections.
    pub stream: StreamOptions,
    /// See [`DEFAULT_BACKLOG`].
    pub backlog: u32,
    /// See [`DEFAULT_DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// Per-source response rate limits of the UDP services.
    pub udp: UdpLimits,
    /// This server's name (`--server-id`): the `line` service's `SERVER` reply, `STATS`, and
    /// the exit line.
    pub server_id: String,
    /// The sources allowed to send a PROXY protocol header to a `,proxy` listener
    /// (`--proxy-from`); loopback by default.
    pub proxy_from: TrustList,
    /// Certificates and settings for `,tls` listeners (loaded once, when a server has one,
    /// and shared by every loop).
    pub tls: TlsConfig,
    /// See [`DEFAULT_HANDSHAKE_BUDGET`].
    pub handshake_budget: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("default listen spec parses")],
            admin: None,
            services: ServiceOptions::default(),
            deployment: Deployment::default(),
            loops: LoopConfig::default(),
        }
    }
}

impl Default for Deployment {
    fn default() -> Deployment {
        Deployment {
            threads: 1,
            pin_cpus: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_delay: DEFAULT_DRAIN_DELAY,
            faults: FaultConfig::default(),
        }
    }
}

impl Default for LoopConfig {
    fn default() -> LoopConfig {
        LoopConfig {
            limits: Limits::default(),
            stream: StreamOptions::default(),
            backlog: DEFAULT_BACKLOG,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            udp: UdpLimits::default(),
            server_id: host_name(),
            proxy_from: TrustList::default(),
            tls: TlsConfig::default(),
            handshake_budget: DEFAULT_HANDSHAKE_BUDGET,
        }
    }
}

impl Config {
    /// The endpoints `listen` and `admin` name, each with what serves it: the built-in
    /// service's handler (with `services`' limits), or the admin endpoint.
    pub fn endpoints(&self) -> Vec<EndpointSpec> {
        let listen = self.listen.iter().map(|spec| EndpointSpec {
            name: spec.service.name().to_string(),
            origin: Origin::Bind(spec.addr),
            serve: Serve::Handler(spec.service.handler(self.services)),
            proxy: spec.proxy,
            tls: spec.tls,
        });
        let admin = self.admin.map(|addr| EndpointSpec {
            name: "admin".into(),
            origin: Origin::Bind(addr),
            serve: Serve::Admin,
            proxy: false,
            tls: false,
        });
        listen.chain(admin).collect()
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
    /// A `,tls` listener, and no certificate to serve it with.
    NoCertificate(String),
    /// A certificate file given without its key, or a key without its certificate.
    UnpairedCertificate,
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
            ConfigError::NoCertificate(listener) => write!(f, "{}", no_certificate(listener)),
            ConfigError::UnpairedCertificate => f.write_str(
                "give --tls-cert and --tls-key in pairs: the n-th key belongs to the n-th \
                 certificate",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.loops.limits;
        let (d, lc) = (&self.deployment, &self.loops);
        if l.high_watermark == 0 {
            return Err(ConfigError::Zero("high watermark"));
        }
        if l.low_watermark == 0 {
            // Reading resumes when pending output falls below the low watermark: below zero
            // it never does, and a connection paused once would never read again.
            return Err(ConfigError::Zero("low watermark"));
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
        if d.max_connections == 0 {
            return Err(ConfigError::Zero("max connections"));
        }
        if d.threads == 0 {
            return Err(ConfigError::Zero("threads"));
        }
        if d.threads > MAX_THREADS {
            return Err(ConfigError::TooLarge {
                flag: "--threads",
                value: d.threads,
                max: MAX_THREADS,
            });
        }
        if d.max_connections < d.threads {
            return Err(ConfigError::TooLarge {
                flag: "--threads",
                value: d.threads,
                max: d.max_connections,
            });
        }
        if let Some(cpus) = &d.pin_cpus {
            if cpus.len() < d.threads {
                return Err(ConfigError::PinCpus {
                    cpus: cpus.len(),
                    threads: d.threads,
                });
            }
        }
        if let Some(spec) = self.listen.iter().find(|s| s.tls) {
            if lc.tls.certs.is_empty() {
                return Err(ConfigError::NoCertificate(spec.to_string()));
            }
        }
        if lc.backlog == 0 {
            return Err(ConfigError::Zero("backlog"));
        }
        if lc.handshake_budget == 0 {
            // No handshake would ever run.
            return Err(ConfigError::Zero("handshake budget"));
        }
        if self.services.max_line == 0 {
            return Err(ConfigError::Zero("max line"));
        }
        if self.services.max_frame == 0 {
            return Err(ConfigError::Zero("max frame"));
        }
        if self.services.http.max_body == 0 {
            return Err(ConfigError::Zero("max body"));
        }
        if lc.udp.rate_limit == Some(0) || lc.udp.echo_rate_limit == Some(0) {
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
                lc.stream.rcvbuf.unwrap_or(0),
                MAX_SIZE_SETTING,
            ),
            ("--max-frame", self.services.max_frame, frame_max),
            (
                "--max-body",
                usize::try_from(self.services.http.max_body).unwrap_or(usize::MAX),
                MAX_SIZE_SETTING,
            ),
            (
                "--max-connections",
                d.max_connections,
                MAX_CONNECTIONS_SETTING,
            ),
            (
                "--udp-rate-limit",
                lc.udp.rate_limit.unwrap_or(0) as usize,
                MAX_UDP_RATE_LIMIT as usize,
            ),
            (
                "--udp-echo-rate-limit",
                lc.udp.echo_rate_limit.unwrap_or(0) as usize,
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
        if !valid_server_id(&lc.server_id) {
            return Err(ConfigError::ServerId(lc.server_id.clone()));
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

/// Why a `,tls` `listener` cannot start: no certificate was given.
pub(crate) fn no_certificate(listener: &str) -> String {
    format!(
        "{listener} needs a certificate: give --tls-cert FILE --tls-key FILE, or \
         --tls-self-signed NAME for a quick start"
    )
}

/// Loop `index`'s share of `max_connections` over `threads` loops. The shares add up to the
/// total exactly: the remainder of the division goes one each to the first loops, so no
/// connection slot is lost to rounding and no loop gets more than one over another.
pub fn connection_share(max_connections: usize, threads: usize, index: usize) -> usize {
    max_connections / threads + usize::from(index < max_connections % threads)
}

#[cfg(test)]
mod tests;
