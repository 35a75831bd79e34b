//! RFC 868 time: the current time as a 32-bit big-endian count of seconds since
//! 1900-01-01 00:00 UTC.
//!
//! Over TCP the server sends the four bytes as the connection opens and closes (gracefully,
//! like daytime); over UDP it answers any datagram with them. The count is the low 32 bits
//! of the seconds since 1900, as RFC 868 defines it, so it wraps on 2036-02-07; clients that
//! follow RFC 868 read it relative to their own idea of the era.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::datagram::{DatagramService, Replies, Reply};
use super::{Output, Service};

/// Seconds from 1900-01-01 to the Unix epoch, 1970-01-01 (70 years, 17 of them leap).
pub const SECONDS_1900_TO_1970: u64 = 2_208_988_800;

/// The four bytes RFC 868 sends for `now`.
pub fn rfc868(now: SystemTime) -> [u8; 4] {
    let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Truncation to the low 32 bits is the protocol's own wrap-around.
    ((unix + SECONDS_1900_TO_1970) as u32).to_be_bytes()
}

/// The time service over TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct Time;

impl Service for Time {
    fn on_connect(&mut self, out: &mut Output<'_>) {
        out.write(&rfc868(SystemTime::now()));
        out.finish();
    }

    fn on_input(&mut self, input: &[u8], _out: &mut Output<'_>) -> usize {
        // Nothing is expected from the client; whatever comes is ignored.
        input.len()
    }
}

/// The time service over UDP: any datagram is answered with the time.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpTime;

impl DatagramService for UdpTime {
    fn on_datagram(&mut self, _peer: SocketAddr, _data: &[u8], reply: &mut Reply) {
        reply.send(&rfc868(SystemTime::now()));
    }

    /// Four bytes for any datagram, an empty one included.
    fn replies(&self) -> Replies {
        Replies::Larger
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Harness;
    use std::time::Duration;

    /// Known instants: the Unix epoch, and a date checked against an independent calendar
    /// computation (2023-11-14T22:13:20Z is Unix 1,700,000,000).
    #[test]
    fn known_instants() {
        assert_eq!(u32::from_be_bytes(rfc868(UNIX_EPOCH)), 2_208_988_800);
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            u32::from_be_bytes(rfc868(t)),
            (1_700_000_000u64 + 2_208_988_800) as u32
        );
        // 70 years of 365 days plus 17 leap days.
        assert_eq!(SECONDS_1900_TO_1970, (70 * 365 + 17) * 86_400);
    }

    /// Four bytes on connect, then finished.
    #[test]
    fn tcp_sends_four_bytes_and_finishes() {
        let mut h = Harness::new(Time);
        h.connect();
        assert_eq!(h.take_output().len(), 4);
        assert!(h.finished);
    }
}
