//! What loopd-bench sends, and what it expects back.
//!
//! Every message names its sender and its place: it starts with a header of the connection
//! id and the sequence number in hex, `cccccccc:ssssssssssssssss:`, followed by the RFC 864
//! character rotation starting at a point that depends on both. Every byte is therefore a
//! function of `(connection, sequence, offset)`: a byte flipped in transit, a message from
//! another connection, a replayed or reordered message all show up as a mismatch at a known
//! offset of a known message. The text is printable ASCII with no newline, so the same
//! payload travels inside a `line` request, and it stays readable in a packet capture.
//! A message shorter than the header carries a prefix of it.

use std::fmt;

/// Length of the `cccccccc:ssssssssssssssss:` header.
pub const HEADER_LEN: usize = 8 + 1 + 16 + 1;

/// The printable characters of RFC 864, from which the pattern after the header is cut.
const PRINTABLE_FIRST: u8 = b' ';
const PRINTABLE_COUNT: u8 = 95;

/// How requests and replies are framed on a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The payload itself; the echo is the same bytes.
    Raw,
    /// `ECHO <payload>\n`; the reply is `<payload>\r\n`, as loopd's `line` service answers.
    Line,
    /// A 4-byte big-endian length, then the payload; the reply is the same frame.
    Frame,
}

impl Protocol {
    /// Every protocol, in the order `--help` lists them.
    pub const ALL: [Protocol; 3] = [Protocol::Raw, Protocol::Line, Protocol::Frame];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Raw => "raw",
            Protocol::Line => "line",
            Protocol::Frame => "frame",
        }
    }

    /// Appends the request carrying `payload` to `out`.
    pub fn encode_request(self, payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Protocol::Raw => out.extend_from_slice(payload),
            Protocol::Line => {
                out.extend_from_slice(b"ECHO ");
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
            Protocol::Frame => {
                out.extend_from_slice(&frame_len(payload).to_be_bytes());
                out.extend_from_slice(payload);
            }
        }
    }

    /// Appends the exact reply an echoing server sends for `payload` to `out`.
    pub fn encode_reply(self, payload: &[u8], out: &mut Vec<u8>) {
        match self {
            Protocol::Raw => out.extend_from_slice(payload),
            Protocol::Line => {
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            }
            Protocol::Frame => self.encode_request(payload, out),
        }
    }

    /// Bytes of the reply to a `size`-byte payload.
    pub fn reply_len(self, size: usize) -> usize {
        match self {
            Protocol::Raw => size,
            Protocol::Line => size + 2,
            Protocol::Frame => size + 4,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn frame_len(payload: &[u8]) -> u32 {
    u32::try_from(payload.len()).expect("a payload fits a 4-byte length prefix")
}

/// Fills `buf` with the payload of message `seq` on connection `conn`.
pub fn fill(buf: &mut [u8], conn: u32, seq: u64) {
    let mut header = [0u8; HEADER_LEN];
    hex(&mut header[..8], u64::from(conn));
    header[8] = b':';
    hex(&mut header[9..25], seq);
    header[25] = b':';
    let n = buf.len().min(HEADER_LEN);
    buf[..n].copy_from_slice(&header[..n]);
    let start = (u64::from(conn).wrapping_add(seq) % u64::from(PRINTABLE_COUNT)) as u8;
    let mut c = start;
    for b in &mut buf[n..] {
        *b = PRINTABLE_FIRST + c;
        c += 1;
        if c == PRINTABLE_COUNT {
            c = 0;
        }
    }
}

/// The connection id and sequence number a payload claims to be, if it carries a whole
/// well-formed header.
pub fn parse_header(payload: &[u8]) -> Option<(u32, u64)> {
    let h = payload.get(..HEADER_LEN)?;
    if h[8] != b':' || h[25] != b':' {
        return None;
    }
    let conn = unhex(&h[..8])?;
    let seq = unhex(&h[9..25])?;
    Some((u32::try_from(conn).ok()?, seq))
}

/// Writes `value`'s low `out.len() * 4` bits as lowercase hex, most significant first.
fn hex(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn unhex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | u64::from(v))
    })
}

/// Where the first differing byte of a reply is, described for a person.
pub fn describe_mismatch(offset: usize, expected: u8, got: u8) -> String {
    format!(
        "byte {offset} is {} where {} was sent",
        show(got),
        show(expected)
    )
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header round-trips and the pattern is printable with no newline.
    #[test]
    fn header_and_pattern() {
        let mut buf = [0u8; 200];
        fill(&mut buf, 7, 0x1234_5678_9abc);
        assert_eq!(&buf[..HEADER_LEN], b"00000007:0000123456789abc:");
        assert_eq!(parse_header(&buf), Some((7, 0x1234_5678_9abc)));
        assert!(buf.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
    }

    /// Different messages differ, even past the header.
    #[test]
    fn messages_differ() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        fill(&mut a, 1, 2);
        fill(&mut b, 1, 3);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    /// Short messages carry a prefix of the header; a short payload has no parsable header.
    #[test]
    fn short_messages() {
        let mut buf = [0u8; 5];
        fill(&mut buf, 0xabcdef01, 9);
        assert_eq!(&buf, b"abcde");
        assert_eq!(parse_header(&buf), None);
        assert_eq!(parse_header(b"0000000g:0000000000000001:"), None);
    }

    /// Each protocol's request and reply are the framing its server speaks.
    #[test]
    fn framing() {
        let mut out = Vec::new();
        Protocol::Line.encode_request(b"hi", &mut out);
        assert_eq!(out, b"ECHO hi\n");
        out.clear();
        Protocol::Line.encode_reply(b"hi", &mut out);
        assert_eq!(out, b"hi\r\n");
        out.clear();
        Protocol::Frame.encode_reply(b"hi", &mut out);
        assert_eq!(out, b"\0\0\0\x02hi");
        for p in Protocol::ALL {
            out.clear();
            p.encode_reply(&[b'x'; 10], &mut out);
            assert_eq!(out.len(), p.reply_len(10));
        }
    }
}
