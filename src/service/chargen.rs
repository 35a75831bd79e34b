//! RFC 864 character generator.
//!
//! The RFC's suggested pattern: the 95 printable ASCII characters (space to `~`) in a ring;
//! each line is 72 consecutive characters followed by CRLF, and each line starts one character
//! further round the ring than the line before. The pattern repeats every 95 lines.
//!
//! Chargen is the reason [`Service::on_drained`] exists. It never writes more than
//! [`Output::room`] bytes, and writes again only when the loop reports that pending output
//! fell below the low watermark; a client that stops reading therefore costs at most the high
//! watermark of memory, however long it stalls.

use std::net::SocketAddr;

use super::datagram::{DatagramService, Replies, Reply};
use super::{Output, Service};

/// Printable ASCII, space (32) through tilde (126): the ring the pattern walks.
pub const RING: &[u8; 95] = b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
/// Characters per line before CRLF (RFC 864).
pub const LINE_CHARS: usize = 72;
/// A full line on the wire.
pub const LINE_LEN: usize = LINE_CHARS + 2;
/// Bytes in one full period of the pattern (95 lines of 74 bytes).
pub const PERIOD: usize = RING.len() * LINE_LEN;

/// One period of the stream, computed at compile time. The stream is this, repeated: a
/// server sends slices of it and a client checks what it receives against it.
pub static CYCLE: [u8; PERIOD] = cycle();

const fn cycle() -> [u8; PERIOD] {
    let mut c = [0u8; PERIOD];
    let mut i = 0;
    while i < PERIOD {
        let (line, col) = (i / LINE_LEN, i % LINE_LEN);
        c[i] = if col == LINE_CHARS {
            b'\r'
        } else if col > LINE_CHARS {
            b'\n'
        } else {
            RING[(line + col) % RING.len()]
        };
        i += 1;
    }
    c
}

/// The most chargen hands the loop at once: one read buffer's worth. The loop calls
/// [`Service::on_drained`] again while output stays below the low watermark, so a fast reader
/// gets a steady stream of 64 KiB writes.
pub const CHUNK: usize = 64 * 1024;

/// Periods in [`STREAM`]: enough that a chunk starting anywhere in the first period ends
/// inside it.
const STREAM_PERIODS: usize = (CHUNK + PERIOD).div_ceil(PERIOD);

/// The stream, long enough that any [`CHUNK`] of it is one contiguous slice: chargen's output
/// is a slice of this static buffer, written to the socket from where it lies. No connection
/// builds or holds a copy of the pattern.
static STREAM: [u8; PERIOD * STREAM_PERIODS] = stream();

const fn stream() -> [u8; PERIOD * STREAM_PERIODS] {
    let mut s = [0u8; PERIOD * STREAM_PERIODS];
    let mut i = 0;
    while i < s.len() {
        s[i] = CYCLE[i % PERIOD];
        i += 1;
    }
    s
}

/// The chargen service: a position in the infinite pattern.
#[derive(Debug, Clone)]
pub struct Chargen {
    /// Offset into the 95-line period of the next byte to send.
    offset: usize,
}

impl Chargen {
    /// A generator positioned at the start of the pattern.
    pub fn new() -> Chargen {
        Chargen { offset: 0 }
    }

    /// Writes the next `n` bytes of the pattern (at most a [`CHUNK`]): one slice of the
    /// static stream, no per-byte work and no copy when the loop can send it as it is.
    fn produce(&mut self, out: &mut Output<'_>, n: usize) {
        let len = n.min(CHUNK);
        out.write_static(&STREAM[self.offset..self.offset + len]);
        self.offset = (self.offset + len) % PERIOD;
    }
}

impl Default for Chargen {
    fn default() -> Self {
        Chargen::new()
    }
}

impl Service for Chargen {
    fn on_connect(&mut self, out: &mut Output<'_>) {
        let room = out.room();
        self.produce(out, room);
    }

    fn on_input(&mut self, input: &[u8], _out: &mut Output<'_>) -> usize {
        // RFC 864: "any data received is thrown away".
        input.len()
    }

    fn on_drained(&mut self, out: &mut Output<'_>) {
        let room = out.room();
        self.produce(out, room);
    }
}

/// The longest UDP chargen answer (RFC 864: "a random number (between 0 and 512) of
/// characters").
pub const UDP_MAX: usize = 512;

/// RFC 864 over UDP: each datagram is answered with a datagram of 0 to 512 characters of the
/// pattern, from its start; the length is pseudo-random, as the RFC asks. The UDP service has
/// "no history or state information", so no answer continues the previous one.
#[derive(Debug, Clone)]
pub struct UdpChargen {
    /// xorshift64 state: a cheap, non-cryptographic source of lengths.
    state: u64,
}

impl UdpChargen {
    /// A generator whose lengths follow from `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> UdpChargen {
        UdpChargen { state: seed.max(1) }
    }

    fn next_len(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        (x % (UDP_MAX as u64 + 1)) as usize
    }
}

impl DatagramService for UdpChargen {
    fn on_datagram(&mut self, _peer: SocketAddr, _data: &[u8], reply: &mut Reply) {
        let len = self.next_len();
        reply.send(&CYCLE[..len]);
    }

    /// Up to 512 bytes for any datagram, an empty one included.
    fn replies(&self) -> Replies {
        Replies::Larger
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Harness;

    /// The first lines are exactly those printed in RFC 864.
    #[test]
    fn matches_rfc_864_sample() {
        let mut h = Harness::new(Chargen::new());
        h.high_watermark = 3 * LINE_LEN;
        h.connect();
        let out = h.take_output();
        let text = std::str::from_utf8(&out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            r##" !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefg"##
        );
        assert_eq!(
            lines[1],
            r##"!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefgh"##
        );
        assert_eq!(
            lines[2],
            r##""#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghi"##
        );
        assert!(lines[..3].iter().all(|l| l.len() == LINE_CHARS));
    }

    /// Never more than the room the loop grants, and at most a chunk per call.
    #[test]
    fn respects_room() {
        let mut h = Harness::new(Chargen::new());
        h.high_watermark = 1000;
        h.connect();
        assert_eq!(h.take_output().len(), 1000);
        h.drained();
        assert_eq!(h.take_output().len(), 1000);
        h.high_watermark = 10 * CHUNK;
        h.drained();
        assert_eq!(h.take_output().len(), CHUNK);
    }

    /// Output produced in arbitrary pieces is one continuous pattern, wrapping after 95 lines.
    #[test]
    fn continuous_across_calls_and_period() {
        let mut whole = Harness::new(Chargen::new());
        whole.high_watermark = PERIOD + 3 * LINE_LEN;
        whole.connect();
        let expected = whole.take_output();
        assert_eq!(&expected[PERIOD..PERIOD + LINE_LEN], &expected[..LINE_LEN]);

        let mut pieces = Harness::new(Chargen::new());
        let mut got = Vec::new();
        for size in [1, 73, 74, 75, 4095, 4097, 9000, CHUNK + 1].iter().cycle() {
            if got.len() >= expected.len() {
                break;
            }
            pieces.high_watermark = *size;
            pieces.drained();
            got.extend(pieces.take_output());
        }
        assert_eq!(&got[..expected.len()], &expected[..]);
    }

    /// The first 10 MiB are byte for byte what an independent, per-character generator of
    /// RFC 864 produces (95 printable characters, lines of 72 plus CRLF, each line one
    /// further round the ring), however the loop asks for them.
    #[test]
    fn ten_mib_match_an_independent_generator() {
        const TOTAL: usize = 10 << 20;
        let mut expected = Vec::with_capacity(TOTAL);
        let mut line = 0usize;
        while expected.len() < TOTAL {
            for col in 0..72 {
                expected.push(b' ' + ((line + col) % 95) as u8);
            }
            expected.extend_from_slice(b"\r\n");
            line += 1;
        }
        expected.truncate(TOTAL);
        let mut h = Harness::new(Chargen::new());
        let mut got = Vec::with_capacity(TOTAL);
        let sizes = [CHUNK, 1, 7030, 65_537, 300_000, 73];
        for size in sizes.iter().cycle() {
            if got.len() >= TOTAL {
                break;
            }
            h.high_watermark = *size;
            h.drained();
            got.extend(h.take_output());
        }
        got.truncate(TOTAL);
        assert!(got == expected, "chargen differs from RFC 864");
    }

    /// UDP answers are prefixes of the pattern, 0 to 512 bytes long, of varying length.
    #[test]
    fn udp_answers_are_pattern_prefixes() {
        let mut u = UdpChargen::new(42);
        let peer = "127.0.0.1:9".parse().unwrap();
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let mut reply = Reply::default();
            u.on_datagram(peer, b"anything", &mut reply);
            let d = reply.datagram().expect("always answers");
            assert!(d.len() <= UDP_MAX);
            assert_eq!(d, &CYCLE[..d.len()]);
            lengths.insert(d.len());
        }
        assert!(lengths.len() > 100, "lengths hardly vary: {lengths:?}");
    }
}
