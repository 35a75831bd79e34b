//! RFC 867 daytime: one line with the current time, then the server closes.
//!
//! Over UDP (`udp-daytime`) any datagram is answered with the same line. The RFC leaves the
//! format open; loopd sends RFC 3339 UTC, which both people and programs
//! read without ambiguity. The close is graceful: the loop flushes the line, sends FIN, and
//! lingers reading whatever the client still sends so that the kernel does not answer with a
//! reset that could destroy the unread line on the client's side.

use std::net::SocketAddr;
use std::time::SystemTime;

use super::datagram::{DatagramService, Replies, Reply};
use super::{Output, Service};

/// The daytime service.
#[derive(Debug, Default, Clone, Copy)]
pub struct Daytime;

impl Daytime {
    /// The line sent for `now`, with its CRLF.
    pub fn line(now: SystemTime) -> String {
        format!("{}\r\n", humantime::format_rfc3339_seconds(now))
    }
}

impl Service for Daytime {
    fn on_connect(&mut self, out: &mut Output<'_>) {
        out.write(Daytime::line(SystemTime::now()).as_bytes());
        out.finish();
    }

    fn on_input(&mut self, input: &[u8], _out: &mut Output<'_>) -> usize {
        // Anything the client sends is ignored (RFC 867: "any data received is thrown away").
        input.len()
    }
}

/// RFC 867 over UDP: any datagram is answered with the daytime line.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpDaytime;

impl DatagramService for UdpDaytime {
    fn on_datagram(&mut self, _peer: SocketAddr, _data: &[u8], reply: &mut Reply) {
        reply.send(Daytime::line(SystemTime::now()).as_bytes());
    }

    /// A line of about thirty bytes for any datagram, an empty one included.
    fn replies(&self) -> Replies {
        Replies::Larger
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Harness;
    use std::time::{Duration, UNIX_EPOCH};

    /// The line is RFC 3339 UTC with CRLF.
    #[test]
    fn line_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(Daytime::line(t), "2023-11-14T22:13:20Z\r\n");
    }

    /// One line on connect, then finished.
    #[test]
    fn one_line_then_finish() {
        let mut h = Harness::new(Daytime);
        h.connect();
        assert!(h.finished);
        let out = h.take_output();
        assert!(out.ends_with(b"Z\r\n"), "{out:?}");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
