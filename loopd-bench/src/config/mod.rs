//! What a run does: the validated settings the binary builds from its flags, with each
//! default and the reason for it.
//!
//! * [`mode`] — the [`Mode`]: six kinds of run, each a transport and a load policy.
//! * [`tls`] — `--tls` and its flags.
//! * [`http`] — `--protocol http`: the requests and the statuses expected.
//! * [`sources`] — `--source`, local addresses bound round-robin.
//! * [`series`] — `--iterations` and `--confidence`.
//! * [`segment`] — `--segment I/N`: this process's part of a run made by several.
//! * [`start`] — `--start-at`: a start shared by the processes of a run.
//! * [`error`] — why settings cannot make a run, one variant per rule.
//! * [`recorded`] — the settings as the JSON report records them.

pub mod error;
pub mod http;
pub mod mode;
pub mod recorded;
pub mod segment;
pub mod series;
pub mod sources;
pub mod start;
pub mod tls;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cpu::{CpuSources, MetricsUrl};
use crate::payload::{Protocol, HEADER_LEN};
pub use error::ConfigError;
pub use http::HttpSettings;
pub use mode::{Load, Mode, Transport};
pub use recorded::RecordedConfig;
pub use segment::Segment;
pub use series::{Confidence, Repeat};
pub use sources::Sources;
pub use tls::{TlsSettings, TlsVersions, Trust};

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

/// Everything a run needs.
#[derive(Clone, Debug, PartialEq)]
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
    /// `--segment I/N`: this process runs its share of the run; `None` runs all of it.
    /// `connections`, `rate`, `ramp` and a count stay the whole run's.
    pub segment: Option<Segment>,
    /// `--start-at`: the run starts at this wall-clock time instead of at once.
    pub start_at: Option<SystemTime>,
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
    /// `--server-metrics`: every server whose injected faults are reconciled with the errors
    /// seen (see [`crate::faults`]).
    pub fault_metrics: Vec<MetricsUrl>,
    /// Keep a latency histogram per second as well (`--hlog`).
    pub intervals: bool,
    /// `--tls`: every stream connection speaks TLS, with these settings.
    pub tls: Option<TlsSettings>,
    /// `--protocol http`: the requests and the statuses expected.
    pub http: HttpSettings,
}

impl BenchConfig {
    /// The defaults of `loopd-bench` against `target`.
    pub fn new(target: SocketAddr) -> BenchConfig {
        BenchConfig {
            target,
            mode: Mode::Echo,
            protocol: Protocol::Raw,
            connections: DEFAULT_CONNECTIONS,
            threads: DEFAULT_THREADS,
            stop: Stop::After(DEFAULT_DURATION),
            warmup: DEFAULT_WARMUP,
            size: DEFAULT_SIZE,
            pipeline: DEFAULT_PIPELINE,
            rate: None,
            ramp: None,
            segment: None,
            start_at: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            sources: None,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_loss: DEFAULT_MAX_LOSS,
            expect: None,
            per_backend: false,
            cpu: CpuSources::default(),
            fault_metrics: Vec::new(),
            intervals: false,
            tls: None,
            http: HttpSettings::default(),
        }
    }

    /// Checks the combination of settings; the error says which flag to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError::*;
        if self.connections == 0 || self.threads == 0 || self.pipeline == 0 {
            return Err(Zero);
        }
        if self.connections > u32::MAX as usize {
            return Err(TooManyConnections);
        }
        if let Some(s) = self.segment {
            if s.count as usize > self.connections {
                return Err(IdleSegments {
                    segments: s.count,
                    connections: self.connections,
                });
            }
        }
        if self.threads > self.own_connections() {
            return Err(IdleThreads {
                threads: self.threads,
                connections: self.own_connections(),
            });
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Rate);
            }
            if self.mode.load() != Load::RoundTrip {
                return Err(RateWithoutRoundTrips(self.mode));
            }
        }
        if let Some(ramp) = self.ramp {
            if !(ramp.is_finite() && ramp > 0.0) {
                return Err(Ramp);
            }
        }
        // HTTP runs round trips on kept-alive connections (echo), or one request per
        // connection (connect).
        let http_modes = [Mode::Echo, Mode::Connect];
        match self.protocol {
            Protocol::Raw => {}
            Protocol::Http if http_modes.contains(&self.mode) => {}
            Protocol::Http => return Err(HttpOutsideRoundTrips(self.mode)),
            p if self.mode != Mode::Echo => return Err(ProtocolOutsideEcho(p)),
            _ => {}
        }
        let per_backend_ok = match self.protocol {
            Protocol::Line => self.mode == Mode::Echo,
            Protocol::Http => true,
            _ => false,
        };
        if self.per_backend && !per_backend_ok {
            return Err(PerBackend);
        }
        if self.protocol == Protocol::Http {
            self.http.validate().map_err(Http)?;
        }
        if self.expect.is_some() && self.mode != Mode::Recv {
            return Err(ExpectOutsideRecv);
        }
        if self.size == 0 && self.mode != Mode::Recv {
            return Err(EmptyMessages);
        }
        if self.size > MAX_SIZE {
            return Err(TooLarge(self.size));
        }
        if self.mode == Mode::Udp {
            if self.size < HEADER_LEN {
                return Err(DatagramTooShort);
            }
            if self.size > MAX_DATAGRAM {
                return Err(DatagramTooLong(self.size));
            }
        }
        if !(0.0..=100.0).contains(&self.max_loss) {
            return Err(MaxLoss);
        }
        if self.stall_timeout.is_zero() {
            return Err(StallTimeout);
        }
        if let Some(sources) = &self.sources {
            if sources
                .addrs()
                .iter()
                .any(|a| a.is_ipv4() != self.target.is_ipv4())
            {
                return Err(SourceFamily);
            }
        }
        match (&self.tls, self.mode.transport()) {
            (Some(_), Transport::Udp) => return Err(TlsOverUdp),
            (None, _) if self.mode == Mode::Handshake => return Err(HandshakeWithoutTls),
            (Some(tls), _) => tls.validate()?,
            (None, _) => {}
        }
        match self.stop {
            Stop::Count(0) => Err(NoMessages),
            Stop::Count(_) if self.mode == Mode::Recv => Err(CountedDownload),
            Stop::Count(_) if self.mode == Mode::Handshake => Err(CountedHandshakes),
            _ => Ok(()),
        }
    }

    /// How long opening every connection takes under `--ramp`.
    pub fn ramp_time(&self) -> Duration {
        match self.ramp {
            Some(per_sec) => Duration::from_secs_f64(self.connections as f64 / per_sec),
            None => Duration::ZERO,
        }
    }

    /// From the start of the run to the start of the measurement: the ramp and the warm-up.
    pub fn lead_in(&self) -> Duration {
        self.ramp_time() + self.warmup
    }

    /// The connections this process opens: its segment's share, or all of them.
    pub fn own_connections(&self) -> usize {
        self.segment
            .map_or(self.connections, |s| s.share(self.connections))
    }

    /// The global ids of this process's connections, in order.
    pub fn connection_ids(&self) -> Vec<u32> {
        let segment = self.segment.unwrap_or(Segment::WHOLE);
        segment.ids(self.connections).collect()
    }

    /// Where connection `id` stands among this process's connections (from 0).
    pub fn ordinal(&self, id: u32) -> usize {
        self.segment.map_or(id as usize, |s| s.ordinal(id))
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
/// One worker: one client core keeps one server core busy (the client costs about what the
/// server costs per message), and a one-thread client is the easiest to reason about.
pub const DEFAULT_THREADS: usize = 1;
/// Long enough for a stable rate and a p99.99 backed by thousands of samples.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Lets connections, caches, page faults and CPU frequency settle before measuring.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(1);
/// A small request: the per-message cost, not bandwidth, dominates.
pub const DEFAULT_SIZE: usize = 64;
/// One message in flight per connection: every latency is one request's round trip, with
/// nothing queued ahead of it on the same connection.
pub const DEFAULT_PIPELINE: usize = 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-backend results need the line protocol's SERVER, so echo mode over line.
    #[test]
    fn per_backend_needs_the_line_protocol() {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        c.per_backend = true;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--per-backend"));
        c.protocol = Protocol::Line;
        c.validate().expect("echo over line");
        c.mode = Mode::Udp;
        c.protocol = Protocol::Raw;
        assert_eq!(c.validate(), Err(ConfigError::PerBackend));
    }

    /// Combinations that cannot mean anything are refused with the flag to change.
    #[test]
    fn validation() {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        let refused = |c: &BenchConfig| c.validate().unwrap_err().to_string();
        assert!(c.validate().is_ok());
        c.mode = Mode::Send;
        c.rate = Some(100.0);
        assert!(refused(&c).contains("--rate"));
        c.rate = None;
        c.protocol = Protocol::Line;
        assert!(refused(&c).contains("--protocol"));

        c.protocol = Protocol::Raw;
        c.expect = Some(Expect::Chargen);
        assert!(refused(&c).contains("--expect"));
        c.expect = None;
        c.mode = Mode::Udp;
        c.size = 10;
        assert!(refused(&c).contains("-s"));
        c.size = 64;
        c.max_loss = 101.0;
        assert!(refused(&c).contains("--max-loss"));
        c.max_loss = 1.0;
        c.threads = 51;
        assert!(c.validate().is_err());
    }

    /// A segment's threads are checked against its share; more segments than connections
    /// are refused. `-c` stays the whole run's.
    #[test]
    fn segments_validate_against_their_share() {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        c.connections = 10;
        c.segment = Some(Segment::new(3, 4).unwrap()); // ids 3 and 7
        assert_eq!(c.own_connections(), 2);
        assert_eq!(c.connection_ids(), [3, 7]);
        assert_eq!(c.ordinal(7), 1);
        c.threads = 2;
        assert!(c.validate().is_ok());
        c.threads = 3;
        assert_eq!(
            c.validate(),
            Err(ConfigError::IdleThreads {
                threads: 3,
                connections: 2
            })
        );
        c.threads = 1;
        c.segment = Some(Segment::new(0, 11).unwrap());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("11 segments for 10 connections"));
    }

    /// TLS goes over streams only; the handshake mode needs it and is timed, not counted.
    #[test]
    fn tls_combinations() {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        c.mode = Mode::Handshake;
        assert_eq!(c.validate(), Err(ConfigError::HandshakeWithoutTls));
        c.tls = Some(TlsSettings::default());
        c.validate().expect("handshakes over TLS");
        c.stop = Stop::Count(10);
        assert_eq!(c.validate(), Err(ConfigError::CountedHandshakes));
        c.stop = Stop::After(DEFAULT_DURATION);
        c.mode = Mode::Udp;
        assert_eq!(c.validate(), Err(ConfigError::TlsOverUdp));
        for mode in [Mode::Echo, Mode::Send, Mode::Recv, Mode::Connect] {
            c.mode = mode;
            c.validate().expect("TLS over every stream mode");
        }
    }
}
