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

    /// Writes the next `n` bytes of the pattern: slices of the precomputed period, no
    /// per-byte work.
    fn produce(&mut self, out: &mut Output<'_>, mut n: usize) {
        while n > 0 {
            let len = n.min(PERIOD - self.offset);
            out.write(&CYCLE[self.offset..self.offset + len]);
            self.offset = (self.offset + len) % PERIOD;
            n -= len;
        }
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

    /// Never more than the room the loop grants.
    #[test]
    fn respects_room() {
        let mut h = Harness::new(Chargen::new());
        h.high_watermark = 1000;
        h.connect();
        assert_eq!(h.take_output().len(), 1000);
        h.drained();
        assert_eq!(h.take_output().len(), 1000);
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
        for size in [1, 73, 74, 75, 4095, 4097, 9000].iter().cycle() {
            if got.len() >= expected.len() {
                break;
            }
            pieces.high_watermark = *size;
            pieces.drained();
            got.extend(pieces.take_output());
        }
        assert_eq!(&got[..expected.len()], &expected[..]);
    }
}
