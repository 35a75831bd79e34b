//! What a run does: the validated settings the binary builds from its flags, with each
//! default and the reason for it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cpu::CpuSources;
use crate::payload::{Protocol, HEADER_LEN};

/// How a connection carries its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP connection: a byte stream with a handshake.
    Tcp,
    /// A connected UDP socket: datagrams, no handshake, loss is possible.
    Udp,
}

/// What load a connection applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Load {
    /// Requests whose echoed replies are verified and timed.
    RoundTrip,
    /// A stream of messages to a server that only reads (upload throughput).
    Upload,
    /// Reading what a server sends by itself (download throughput).
    Download,
    /// Connect, one verified round trip, close, again (connection churn).
    Churn,
}

/// A mode is a transport and a load policy. Five pairs make sense and have names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Mode {
    /// How messages travel.
    pub transport: Transport,
    /// What each connection does.
    pub load: Load,
}

impl Mode {
    /// Verified round trips over TCP.
    pub const ECHO: Mode = Mode::new(Transport::Tcp, Load::RoundTrip);
    /// Upload to a discard-style server.
    pub const SEND: Mode = Mode::new(Transport::Tcp, Load::Upload);
    /// Download from a chargen-style server.
    pub const RECV: Mode = Mode::new(Transport::Tcp, Load::Download);
    /// Connection churn.
    pub const CONNECT: Mode = Mode::new(Transport::Tcp, Load::Churn);
    /// Verified datagram round trips, with loss.
    pub const UDP: Mode = Mode::new(Transport::Udp, Load::RoundTrip);

    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Mode; 5] = [Mode::ECHO, Mode::SEND, Mode::RECV, Mode::CONNECT, Mode::UDP];

    const fn new(transport: Transport, load: Load) -> Mode {
        Mode { transport, load }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match (self.transport, self.load) {
            (Transport::Tcp, Load::RoundTrip) => "echo",
            (Transport::Tcp, Load::Upload) => "send",
            (Transport::Tcp, Load::Download) => "recv",
            (Transport::Tcp, Load::Churn) => "connect",
            (Transport::Udp, Load::RoundTrip) => "udp",
            (Transport::Udp, _) => "udp (unsupported load)",
        }
    }

    /// Whether messages get replies whose latency is measured.
    pub fn has_round_trips(self) -> bool {
        matches!(self.load, Load::RoundTrip | Load::Churn)
    }

    /// Whether the client can tell that the server served a connection (something came
    /// back). An upload gets nothing back, so it cannot.
    pub fn observes_service(self) -> bool {
        self.load != Load::Upload
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode '{s}'"))
    }
}

impl From<Mode> for String {
    fn from(m: Mode) -> String {
        m.name().to_string()
    }
}

impl TryFrom<String> for Mode {
    type Error = String;

    fn try_from(s: String) -> Result<Mode, String> {
        s.parse()
    }
}

/// What recv mode checks the received stream against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The RFC 864 chargen stream, from its start.
    Chargen,
}

/// When the measured part of a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long (following the ramp and the warm-up).
    After(Duration),
    /// When this many measured messages have completed, spread evenly over the connections.
    Count(u64),
}

/// A range of local addresses that connections bind to, round-robin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources(Vec<IpAddr>);

impl Sources {
    /// Parses `ADDR` or `ADDR-ADDR` (inclusive; IPv4 ranges vary the last octets, IPv6
    /// ranges the last 64 bits).
    pub fn parse(s: &str) -> Result<Sources, String> {
        let parse = |a: &str| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("'{a}' is not an IP address"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        let addrs: Vec<IpAddr> = match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a)..=u32::from(b))
                .map(|n| IpAddr::V4(n.into()))
                .collect(),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a)..=u128::from(b))
                .take(MAX_SOURCES + 1)
                .map(|n| IpAddr::V6(n.into()))
                .collect(),
            _ => return Err(format!("'{s}' mixes IPv4 and IPv6")),
        };
        if addrs.is_empty() {
            return Err(format!(
                "'{s}' is an empty range (the first address is after the last)"
            ));
        }
        if addrs.len() > MAX_SOURCES {
            return Err(format!("'{s}' has more than {MAX_SOURCES} addresses"));
        }
        Ok(Sources(addrs))
    }

    /// The addresses in order.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }

    /// The address connection `i` binds to.
    pub fn pick(&self, i: usize) -> IpAddr {
        self.0[i % self.0.len()]
    }
}

/// Each source address gives one machine another ~28,000 ephemeral ports towards one
/// target; 65,536 addresses is far more connections than any machine holds.
const MAX_SOURCES: usize = 65_536;

/// Resolves `host:port` to its first address; the error names what was given.
pub fn resolve(host: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    host.to_socket_addrs()
        .map_err(|e| format!("'{host}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{host}' resolves to no address"))
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The server under test.
    pub target: SocketAddr,
    /// What each connection does.
    pub mode: Mode,
    /// Request framing in echo mode.
    pub protocol: Protocol,
    /// Concurrent connections (UDP: sockets).
    pub connections: usize,
    /// Worker threads, each with its own poller; connections are dealt round-robin.
    pub threads: usize,
    /// When the measurement ends.
    pub stop: Stop,
    /// Load before the measurement starts, excluded from the results.
    pub warmup: Duration,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages each connection keeps in flight.
    pub pipeline: usize,
    /// Open loop: total messages per second on a fixed schedule; `None` is closed loop.
    pub rate: Option<f64>,
    /// New connections per second while opening them; `None` opens all at once.
    pub ramp: Option<f64>,
    /// How long a connection may take to establish.
    pub connect_timeout: Duration,
    /// Local addresses to bind, round-robin; `None` lets the kernel choose.
    pub sources: Option<Sources>,
    /// With work outstanding and no byte moving either way for this long, the run gives up.
    pub stall_timeout: Duration,
    /// UDP: the largest share of datagrams (percent) that may be lost in a passing run.
    pub max_loss: f64,
    /// recv mode: the stream to verify against; `None` counts bytes only.
    pub expect: Option<Expect>,
    /// Ask each connection's server for its identity (the `line` service's `SERVER`) and
    /// report every backend behind a load balancer on its own.
    pub per_backend: bool,
    /// CPU counters to read at both ends of the window besides the client's own.
    pub cpu: CpuSources,
    /// Keep a latency histogram per second as well (`--hlog`).
    pub intervals: bool,
}

impl BenchConfig {
    /// The defaults of `loopd-bench` against `target`.
    pub fn new(target: SocketAddr) -> BenchConfig {
        BenchConfig {
            target,
            mode: Mode::ECHO,
            protocol: Protocol::Raw,
            connections: DEFAULT_CONNECTIONS,
            threads: 1,
            stop: Stop::After(DEFAULT_DURATION),
            warmup: DEFAULT_WARMUP,
            size: DEFAULT_SIZE,
            pipeline: 1,
            rate: None,
            ramp: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            sources: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_loss: DEFAULT_MAX_LOSS,
            expect: None,
            per_backend: false,
            cpu: CpuSources::default(),
            intervals: false,
        }
    }

    /// Checks the combination of settings; the message says which flag to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.threads == 0 || self.pipeline == 0 {
            return Err("connections, threads and pipeline must be at least 1".into());
        }
        if self.connections > u32::MAX as usize {
            return Err("-c must fit a 32-bit connection id".into());
        }
        if self.threads > self.connections {
            return Err(format!(
                "{} threads for {} connections would leave threads idle",
                self.threads, self.connections
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("--rate must be a positive number of messages per second".into());
            }
            if self.mode.load != Load::RoundTrip {
                return Err(format!(
                    "--rate schedules request/response messages: use it with echo or udp, not {}",
                    self.mode
                ));
            }
        }
        if let Some(ramp) = self.ramp {
            if !(ramp.is_finite() && ramp > 0.0) {
                return Err("--ramp must be a positive number of connections per second".into());
            }
        }
        if self.protocol != Protocol::Raw && self.mode != Mode::ECHO {
            return Err(format!(
                "--protocol {} frames echo requests: use it with --mode echo",
                self.protocol
            ));
        }
        if self.per_backend && (self.mode != Mode::ECHO || self.protocol != Protocol::Line) {
            return Err(
                "--per-backend asks each connection's server SERVER: use it with --mode echo \
                 --protocol line"
                    .into(),
            );
        }
        if self.expect.is_some() && self.mode != Mode::RECV {
            return Err("--expect checks what recv mode receives: use it with --mode recv".into());
        }
        if self.size == 0 && self.mode != Mode::RECV {
            return Err("-s must be at least 1 byte".into());
        }
        if self.size > MAX_SIZE {
            return Err(format!("-s {} is larger than {MAX_SIZE}", self.size));
        }
        if self.mode == Mode::UDP {
            if self.size < HEADER_LEN {
                return Err(format!(
                    "udp datagrams carry a {HEADER_LEN}-byte id header: -s must be at least {HEADER_LEN}"
                ));
            }
            if self.size > MAX_DATAGRAM {
                return Err(format!(
                    "-s {} exceeds the largest UDP payload, {MAX_DATAGRAM}",
                    self.size
                ));
            }
        }
        if !(0.0..=100.0).contains(&self.max_loss) {
            return Err("--max-loss is a percentage from 0 to 100".into());
        }
        if self.stall_timeout.is_zero() {
            return Err("--stall-timeout must be longer than zero".into());
        }
        if let Some(sources) = &self.sources {
            if sources
                .addrs()
                .iter()
                .any(|a| a.is_ipv4() != self.target.is_ipv4())
            {
                return Err("--source addresses must be the same family as the target".into());
            }
        }
        match self.stop {
            Stop::Count(0) => return Err("-n must be at least 1".into()),
            Stop::Count(_) if self.mode == Mode::RECV => {
                return Err(
                    "recv mode reads whatever the server sends: time it with -d, not -n".into(),
                )
            }
            _ => {}
        }
        Ok(())
    }

    /// How long opening every connection takes under `--ramp`.
    pub fn ramp_time(&self) -> Duration {
        match self.ramp {
            Some(per_sec) => Duration::from_secs_f64(self.connections as f64 / per_sec),
            None => Duration::ZERO,
        }
    }
}

/// The largest UDP payload over IPv4: 65,535 minus the IP and UDP headers.
pub const MAX_DATAGRAM: usize = 65_507;
/// The largest message: every message is generated on the fly from a pattern of its size,
/// and 1 GiB is far past any request/response size worth measuring.
pub const MAX_SIZE: usize = 1 << 30;

/// Enough connections that a single-threaded server sees many ready sockets per wakeup, few
/// enough to open instantly on any machine.
pub const DEFAULT_CONNECTIONS: usize = 50;
/// Long enough for a stable rate and a p99.99 backed by thousands of samples.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Lets connections, caches, page faults and CPU frequency settle before measuring.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);
/// A small request: the per-message cost, not bandwidth, dominates.
pub const DEFAULT_SIZE: usize = 64;
/// Long enough for a loaded loopback server's backlog; short enough to report a black hole
/// before the user gives up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Ten seconds with nothing moving while work is outstanding: far beyond any pause of a
/// healthy server (a garbage collection, a page-cache flush), short enough that a wedged
/// one ends the run with an error instead of hanging it.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// On loopback or a healthy LAN an echo server loses nothing; more than 1% lost means the
/// run measured loss (full socket buffers, an overloaded path), not the server. Raise it to
/// measure loss itself.
pub const DEFAULT_MAX_LOSS: f64 = 1.0;

/// The settings as recorded in a JSON report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedConfig {
    /// Target address.
    pub target: String,
    /// Mode.
    pub mode: Mode,
    /// Protocol name.
    pub protocol: String,
    /// Connections requested.
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// Requested measurement length in seconds, if the run was timed.
    pub duration_secs: Option<f64>,
    /// Requested message count, if the run was counted.
    pub messages: Option<u64>,
    /// Warm-up in seconds.
    pub warmup_secs: f64,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Ramp in connections per second, if any.
    pub ramp: Option<f64>,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: f64,
    /// Local source addresses, if bound.
    pub sources: Vec<String>,
    /// Stall timeout in seconds.
    #[serde(default)]
    pub stall_timeout_secs: f64,
    /// UDP loss allowed, percent.
    #[serde(default)]
    pub max_loss_pct: f64,
    /// recv mode: the stream verified against.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Results per backend were asked for.
    #[serde(default)]
    pub per_backend: bool,
    /// `--server-metrics` or `--server-pid`: where the server's CPU time was read.
    #[serde(default)]
    pub server_metrics: Option<String>,
    /// `--system-cpu`: the machine's CPU time was read.
    #[serde(default)]
    pub system_cpu: bool,
}

impl From<&BenchConfig> for RecordedConfig {
    fn from(c: &BenchConfig) -> RecordedConfig {
        RecordedConfig {
            target: c.target.to_string(),
            mode: c.mode,
            protocol: c.protocol.name().into(),
            connections: c.connections,
            threads: c.threads,
            duration_secs: match c.stop {
                Stop::After(d) => Some(d.as_secs_f64()),
                Stop::Count(_) => None,
            },
            messages: match c.stop {
                Stop::Count(n) => Some(n),
                Stop::After(_) => None,
            },
            warmup_secs: c.warmup.as_secs_f64(),
            size: c.size,
            pipeline: c.pipeline,
            rate: c.rate,
            ramp: c.ramp,
            connect_timeout_secs: c.connect_timeout.as_secs_f64(),
            sources: c
                .sources
                .iter()
                .flat_map(|s| s.addrs().iter().map(IpAddr::to_string))
                .collect(),
            stall_timeout_secs: c.stall_timeout.as_secs_f64(),
            max_loss_pct: c.max_loss,
            expect: c.expect,
            per_backend: c.per_backend,
            server_metrics: c.cpu.server.as_ref().map(|s| s.describe()),
            system_cpu: c.cpu.system,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source ranges expand inclusively and reject nonsense.
    #[test]
    fn sources() {
        let s = Sources::parse("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(s.addrs().len(), 3);
        assert_eq!(s.pick(4).to_string(), "127.0.0.3");
        assert_eq!(Sources::parse("::1").unwrap().addrs().len(), 1);
        assert!(Sources::parse("127.0.0.5-127.0.0.4").is_err());
        assert!(Sources::parse("127.0.0.1-::1").is_err());
        assert!(Sources::parse("localhost").is_err());
    }

    /// Per-backend results need the line protocol's SERVER, so echo mode over line.
    #[test]
    fn per_backend_needs_the_line_protocol() {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        c.per_backend = true;
        assert!(c.validate().unwrap_err().contains("--per-backend"));
        c.protocol = Protocol::Line;
        c.validate().expect("echo over line");
        c.mode = Mode::UDP;
        c.protocol = Protocol::Raw;
        assert!(c.validate().unwrap_err().contains("--per-backend"));
    }

    /// Combinations that cannot mean anything are refused with the flag to change.
    #[test]
    fn validation() {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        assert!(c.validate().is_ok());
        c.mode = Mode::SEND;
        c.rate = Some(100.0);
        assert!(c.validate().unwrap_err().contains("--rate"));
        c.rate = None;
        c.protocol = Protocol::Line;
        assert!(c.validate().unwrap_err().contains("--protocol"));

        c.protocol = Protocol::Raw;
        c.expect = Some(Expect::Chargen);
        assert!(c.validate().unwrap_err().contains("--expect"));
        c.expect = None;
        c.mode = Mode::UDP;
        c.size = 10;
        assert!(c.validate().unwrap_err().contains("-s"));
        c.size = 64;
        c.max_loss = 101.0;
        assert!(c.validate().unwrap_err().contains("--max-loss"));
        c.max_loss = 1.0;
        c.threads = 51;
        assert!(c.validate().is_err());
    }

    /// A mode is its pair; names round-trip and the JSON form is the name.
    #[test]
    fn modes() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(Mode::UDP.transport, Transport::Udp);
        assert!(Mode::CONNECT.has_round_trips());
        assert!(!Mode::SEND.observes_service());
    }
}
