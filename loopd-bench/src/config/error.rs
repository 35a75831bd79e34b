//! Why a combination of settings cannot make a run: one variant per rule, each saying which
//! flag to change. The binary prints it and exits with status 2.

use std::fmt;

use super::mode::Mode;
use crate::payload::{Protocol, HEADER_LEN};

/// A setting, or a combination of settings, that cannot make a run.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigError {
    /// `-c`, `-t` or `--pipeline` is zero.
    Zero,
    /// More connections than a 32-bit connection id can name.
    TooManyConnections,
    /// `--segment` is not `I/N` with `I < N`, or its index cannot be read.
    Segment(String),
    /// More segments than connections: some segment would have none.
    IdleSegments {
        /// `N` of `--segment I/N`.
        segments: u32,
        /// `-c`.
        connections: usize,
    },
    /// `--start-at` is not a time, or one this run cannot start at.
    StartAt(String),
    /// More threads than connections.
    IdleThreads {
        /// `-t`.
        threads: usize,
        /// `-c`.
        connections: usize,
    },
    /// `--rate` is not a positive number.
    Rate,
    /// `--rate` with a mode that has no request/response messages.
    RateWithoutRoundTrips(Mode),
    /// `--ramp` is not a positive number.
    Ramp,
    /// `--protocol` other than raw outside echo mode.
    ProtocolOutsideEcho(Protocol),
    /// `--per-backend` without echo over the line protocol, or HTTP.
    PerBackend,
    /// `--protocol http` in a mode other than echo or connect.
    HttpOutsideRoundTrips(Mode),
    /// `--protocol http` settings that cannot make a request.
    Http(super::http::HttpError),
    /// `--expect` outside recv mode.
    ExpectOutsideRecv,
    /// `-s 0` where messages are sent.
    EmptyMessages,
    /// `-s` above the largest message.
    TooLarge(usize),
    /// A UDP datagram too short for its id header.
    DatagramTooShort,
    /// A UDP datagram too long for IPv4.
    DatagramTooLong(usize),
    /// `--max-loss` outside 0–100.
    MaxLoss,
    /// `--stall-timeout 0`.
    StallTimeout,
    /// `--source` of another address family than the target.
    SourceFamily,
    /// `-n 0`.
    NoMessages,
    /// `-n` in recv mode, which sends no messages.
    CountedDownload,
    /// A `--source` that is not an address or a range of them.
    Source(String),
    /// `--iterations` is not `MIN` or `MIN,MAX` with `1 <= MIN <= MAX`.
    Iterations(String),
    /// `--confidence` with fewer than two iterations allowed.
    ConfidenceNeedsIterations,
    /// `--confidence` is not `LEVEL,WIDTH` in range.
    Confidence(String),
    /// `--tls` with the udp mode.
    TlsOverUdp,
    /// `-m handshake` without TLS settings.
    HandshakeWithoutTls,
    /// `-n` in handshake mode, which is timed.
    CountedHandshakes,
    /// A TLS setting that cannot be used, and why.
    Tls(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigError::*;
        match self {
            Zero => write!(f, "connections, threads and pipeline must be at least 1"),
            TooManyConnections => write!(f, "-c must fit a 32-bit connection id"),
            Segment(why) | StartAt(why) => f.write_str(why),
            IdleSegments {
                segments,
                connections,
            } => write!(
                f,
                "{segments} segments for {connections} connections would leave segments \
                 idle: -c is the whole run's, shared by the segments"
            ),
            IdleThreads {
                threads,
                connections,
            } => write!(
                f,
                "{threads} threads for {connections} connections would leave threads idle"
            ),
            Rate => write!(
                f,
                "--rate must be a positive number of messages per second"
            ),
            RateWithoutRoundTrips(mode) => write!(
                f,
                "--rate schedules request/response messages: use it with echo or udp, not {mode}"
            ),
            Ramp => write!(
                f,
                "--ramp must be a positive number of connections per second"
            ),
            ProtocolOutsideEcho(p) => write!(
                f,
                "--protocol {p} frames echo requests: use it with --mode echo"
            ),
            PerBackend => write!(
                f,
                "--per-backend asks each connection's server SERVER, or reads each HTTP \
                 response's loopd-server header: use it with --mode echo --protocol line, or \
                 --protocol http"
            ),
            HttpOutsideRoundTrips(m) => write!(
                f,
                "--protocol http sends requests and reads responses: use it with --mode echo or \
                 --mode connect, not {m}"
            ),
            Http(e) => write!(f, "{e}"),
            ExpectOutsideRecv => write!(
                f,
                "--expect checks what recv mode receives: use it with --mode recv"
            ),
            EmptyMessages => write!(f, "-s must be at least 1 byte"),
            TooLarge(size) => write!(f, "-s {size} is larger than {}", super::MAX_SIZE),
            DatagramTooShort => write!(
                f,
                "udp datagrams carry a {HEADER_LEN}-byte id header: -s must be at least {HEADER_LEN}"
            ),
            DatagramTooLong(size) => write!(
                f,
                "-s {size} exceeds the largest UDP payload, {}",
                super::MAX_DATAGRAM
            ),
            MaxLoss => write!(f, "--max-loss is a percentage from 0 to 100"),
            StallTimeout => write!(f, "--stall-timeout must be longer than zero"),
            SourceFamily => write!(
                f,
                "--source addresses must be the same family as the target"
            ),
            NoMessages => write!(f, "-n must be at least 1"),
            CountedDownload => write!(
                f,
                "recv mode reads whatever the server sends: time it with -d, not -n"
            ),
            Source(why) => f.write_str(why),
            Iterations(why) => f.write_str(why),
            ConfidenceNeedsIterations => write!(
                f,
                "--confidence needs at least two iterations to estimate anything: \
                 --iterations MIN,MAX with MAX >= 2"
            ),
            Confidence(why) => f.write_str(why),
            TlsOverUdp => write!(f, "--tls secures streams: use it with echo, send, recv, connect or handshake, not udp"),
            HandshakeWithoutTls => write!(f, "-m handshake measures TLS handshakes: it needs --tls"),
            CountedHandshakes => write!(f, "handshake mode is timed: use -d, not -n"),
            Tls(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}
