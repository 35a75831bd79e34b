//! What kind of run: a [`Mode`] is one of six meaningful pairs of a transport and a load
//! policy, and nothing else. The transport and the load are derived from it, so a run that
//! means nothing (a UDP socket with connection churn, say) cannot be written down.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// Connect and complete the TLS handshake, wait for the server's first word (bytes, a
    /// session ticket or its close), close with `close_notify`, again.
    Handshake,
}

impl Load {
    /// Whether each connection is short-lived and replaced by the next: connects (and
    /// handshakes) are what is measured, so only those inside the window count.
    pub fn churns(self) -> bool {
        matches!(self, Load::Churn | Load::Handshake)
    }
}

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Mode {
    /// Verified round trips over TCP.
    Echo,
    /// Upload to a discard-style server.
    Send,
    /// Download from a chargen-style server.
    Recv,
    /// Connection churn: connect, one verified round trip, close.
    Connect,
    /// Verified datagram round trips, with loss.
    Udp,
    /// TLS handshakes: connect, handshake, the server's first word, `close_notify`, again.
    Handshake,
}

impl Mode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Mode; 6] = [
        Mode::Echo,
        Mode::Send,
        Mode::Recv,
        Mode::Connect,
        Mode::Udp,
        Mode::Handshake,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Send => "send",
            Mode::Recv => "recv",
            Mode::Connect => "connect",
            Mode::Udp => "udp",
            Mode::Handshake => "handshake",
        }
    }

    /// How its messages travel.
    pub fn transport(self) -> Transport {
        match self {
            Mode::Udp => Transport::Udp,
            Mode::Echo | Mode::Send | Mode::Recv | Mode::Connect | Mode::Handshake => {
                Transport::Tcp
            }
        }
    }

    /// What each connection does.
    pub fn load(self) -> Load {
        match self {
            Mode::Echo | Mode::Udp => Load::RoundTrip,
            Mode::Send => Load::Upload,
            Mode::Recv => Load::Download,
            Mode::Connect => Load::Churn,
            Mode::Handshake => Load::Handshake,
        }
    }

    /// Whether messages get replies whose latency is measured.
    pub fn has_round_trips(self) -> bool {
        matches!(self.load(), Load::RoundTrip | Load::Churn)
    }

    /// Whether the client can tell that the server served a connection (something came
    /// back). An upload gets nothing back, so it cannot; a handshake's connection is served
    /// by the handshake itself, counted apart.
    pub fn observes_service(self) -> bool {
        !matches!(self.load(), Load::Upload | Load::Handshake)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the modes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown mode '{}'", self.0)
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

impl From<Mode> for String {
    fn from(m: Mode) -> String {
        m.name().to_string()
    }
}

impl TryFrom<String> for Mode {
    type Error = UnknownMode;

    fn try_from(s: String) -> Result<Mode, UnknownMode> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mode names its pair; names round-trip and the JSON form is the name.
    #[test]
    fn modes() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(Mode::Udp.transport(), Transport::Udp);
        assert!(Mode::Connect.has_round_trips());
        assert!(!Mode::Send.observes_service());
        assert!(Mode::Handshake.load().churns() && !Mode::Handshake.has_round_trips());
        assert_eq!("churn".parse::<Mode>(), Err(UnknownMode("churn".into())));
    }
}
