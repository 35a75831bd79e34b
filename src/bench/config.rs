//! What a run does: the validated settings the binary builds from its flags.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::payload::{Protocol, HEADER_LEN};

/// What each connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Request/response round trips against an echoing server, every byte verified.
    Echo,
    /// Stream messages to a discard-style server: upload throughput.
    Send,
    /// Read from a chargen-style server: download throughput.
    Recv,
    /// Churn: connect, one verified round trip, close, repeat.
    Connect,
    /// Datagrams to a UDP echo server: round-trip time and loss.
    Udp,
}

impl Mode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Mode; 5] = [Mode::Echo, Mode::Send, Mode::Recv, Mode::Connect, Mode::Udp];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Send => "send",
            Mode::Recv => "recv",
            Mode::Connect => "connect",
            Mode::Udp => "udp",
        }
    }

    /// Whether messages get replies whose latency is measured.
    pub fn has_round_trips(self) -> bool {
        matches!(self, Mode::Echo | Mode::Connect | Mode::Udp)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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
}

impl BenchConfig {
    /// The defaults of `loopd-bench` against `target`.
    pub fn new(target: SocketAddr) -> BenchConfig {
        BenchConfig {
            target,
            mode: Mode::Echo,
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
        }
    }

    /// Checks the combination of settings; the message says which flag to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.threads == 0 || self.pipeline == 0 {
            return Err("connections, threads and pipeline must be at least 1".into());
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
            if !matches!(self.mode, Mode::Echo | Mode::Udp) {
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
        if self.protocol != Protocol::Raw && self.mode != Mode::Echo {
            return Err(format!(
                "--protocol {} frames echo requests: use it with --mode echo",
                self.protocol
            ));
        }
        if self.size == 0 && self.mode != Mode::Recv {
            return Err("-s must be at least 1 byte".into());
        }
        if self.mode == Mode::Udp {
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
        if self.protocol == Protocol::Frame && u32::try_from(self.size).is_err() {
            return Err("-s does not fit a 4-byte frame length".into());
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
            Stop::Count(_) if self.mode == Mode::Recv => {
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

/// The settings as recorded in a JSON report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedConfig {
    /// Target address.
    pub target: String,
    /// Mode name.
    pub mode: String,
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
}

impl From<&BenchConfig> for RecordedConfig {
    fn from(c: &BenchConfig) -> RecordedConfig {
        RecordedConfig {
            target: c.target.to_string(),
            mode: c.mode.name().into(),
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

    /// Combinations that cannot mean anything are refused with the flag to change.
    #[test]
    fn validation() {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        assert!(c.validate().is_ok());
        c.mode = Mode::Send;
        c.rate = Some(100.0);
        assert!(c.validate().unwrap_err().contains("--rate"));
        c.rate = None;
        c.protocol = Protocol::Line;
        assert!(c.validate().unwrap_err().contains("--protocol"));
        c.protocol = Protocol::Raw;
        c.mode = Mode::Udp;
        c.size = 10;
        assert!(c.validate().unwrap_err().contains("-s"));
        c.size = 64;
        c.threads = 51;
        assert!(c.validate().is_err());
    }
}
