//! What loopd-bench sends, and what it expects back.
//!
//! Every message names its sender and its place: it starts with a header of the connection
//! id and the sequence number in hex, `cccccccc:ssssssssssssssss:`, followed by the RFC 864
//! character ring starting at a point that depends on both. Every byte is therefore a
//! function of `(connection, sequence, offset)`: a byte flipped in transit, a message from
//! another connection, a replayed or reordered message all show up as a mismatch at a known
//! offset of a known message. The text is printable ASCII with no newline, so the same
//! payload travels inside a `line` request, and it stays readable in a packet capture. A
//! message shorter than the header carries a prefix of it.
//!
//! Nothing is stored per message. A [`Codec`] holds the ring once, long enough for any
//! rotation of a body to be one slice of it, so a message is four slices — framing prefix,
//! header, body, framing suffix — and the request stream of a connection is generated on the
//! fly from a [`Cursor`] ([`Gather`] turns it into one `writev`), while the reply stream is
//! checked against the same slices with `==` (a `memcmp`). Bulk runs therefore cost the
//! client no more per byte than the kernel's own copy.

use std::fmt;
use std::io::IoSlice;

use loopd::service::chargen::{CYCLE, PERIOD, RING};

/// Length of the `cccccccc:ssssssssssssssss:` header.
pub const HEADER_LEN: usize = 8 + 1 + 16 + 1;

/// A message header.
pub type Header = [u8; HEADER_LEN];

/// How requests and replies are framed on a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The payload itself; the echo is the same bytes.
    Raw,
    /// `ECHO <payload>\n`; the reply is `<payload>\r\n`, as loopd's `line` service answers.
    Line,
    /// A 4-byte big-endian length, then the payload; the reply is the same frame.
    Frame,
    /// An HTTP/1.1 request whose body is the payload ([`crate::http`]); the reply is a
    /// response, read by the HTTP wire, whose body, for `POST /echo`, is the payload.
    Http,
}

impl Protocol {
    /// Every protocol, in the order `--help` lists them.
    pub const ALL: [Protocol; 4] = [
        Protocol::Raw,
        Protocol::Line,
        Protocol::Frame,
        Protocol::Http,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Raw => "raw",
            Protocol::Line => "line",
            Protocol::Frame => "frame",
            Protocol::Http => "http",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    Request,
    /// Server to client.
    Reply,
}

/// The header of message `seq` on connection `conn`.
pub fn header(conn: u32, seq: u64) -> Header {
    let mut h = [0u8; HEADER_LEN];
    hex(&mut h[..8], u64::from(conn));
    h[8] = b':';
    hex(&mut h[9..25], seq);
    h[25] = b':';
    h
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

/// A position in a connection's stream of messages: byte `offset` of message `seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The message.
    pub seq: u64,
    /// Bytes of it already past.
    pub offset: usize,
}

/// Where a reply first differs from what was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Byte `offset` of the reply to message `seq` is `got` where `expected` was sent.
    Byte {
        /// The message.
        seq: u64,
        /// The offset in its reply.
        offset: usize,
        /// What should have arrived.
        expected: u8,
        /// What did.
        got: u8,
    },
    /// Bytes arrived beyond every reply outstanding.
    Extra(usize),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Byte {
                seq,
                offset,
                expected,
                got,
            } => write!(
                f,
                "message {seq}: {}",
                describe_mismatch(*offset, *expected, *got)
            ),
            Mismatch::Extra(n) => write!(f, "{n} bytes arrived that were never sent"),
        }
    }
}

/// Generates and checks the messages of one run. See the [module documentation](self).
#[derive(Debug)]
pub struct Codec {
    protocol: Protocol,
    size: usize,
    /// The RFC 864 ring repeated to `size + 95` bytes: every body is one slice of it.
    ring: Box<[u8]>,
    frame_prefix: [u8; 4],
    /// HTTP: the request head before each body.
    request_head: Box<[u8]>,
}

impl Codec {
    /// A codec for `size`-byte payloads framed by `protocol`.
    pub fn new(protocol: Protocol, size: usize) -> Codec {
        let ring: Box<[u8]> = RING
            .iter()
            .copied()
            .cycle()
            .take(size + RING.len())
            .collect();
        Codec {
            protocol,
            size,
            ring,
            frame_prefix: u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes(),
            request_head: Box::new([]),
        }
    }

    /// A codec for HTTP requests: `head` (the same for every message, [`crate::http`]), then
    /// a body of `body` payload bytes (0 for `GET`). A reply is the body echoed.
    pub fn http(head: Vec<u8>, body: usize) -> Codec {
        Codec {
            request_head: head.into_boxed_slice(),
            ..Codec::new(Protocol::Http, body)
        }
    }

    /// Payload bytes per message.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes of one message on the wire in direction `dir`.
    pub fn len(&self, dir: Dir) -> usize {
        self.prefix(dir).len() + self.size + self.suffix(dir).len()
    }

    fn prefix(&self, dir: Dir) -> &[u8] {
        match (self.protocol, dir) {
            (Protocol::Http, Dir::Request) => &self.request_head,
            (Protocol::Raw | Protocol::Http, _) | (Protocol::Line, Dir::Reply) => b"",
            (Protocol::Line, Dir::Request) => b"ECHO ",
            (Protocol::Frame, _) => &self.frame_prefix,
        }
    }

    fn suffix(&self, dir: Dir) -> &'static [u8] {
        match (self.protocol, dir) {
            (Protocol::Raw | Protocol::Frame | Protocol::Http, _) => b"",
            (Protocol::Line, Dir::Request) => b"\n",
            (Protocol::Line, Dir::Reply) => b"\r\n",
        }
    }

    /// The four parts of message `seq` on `conn`: framing prefix, header, body, framing
    /// suffix. `header` must hold [`header`]`(conn, seq)`.
    pub fn parts<'a>(&'a self, dir: Dir, conn: u32, seq: u64, header: &'a Header) -> [&'a [u8]; 4] {
        let h = self.size.min(HEADER_LEN);
        let start = (u64::from(conn).wrapping_add(seq) % RING.len() as u64) as usize;
        let body = &self.ring[start..start + (self.size - h)];
        [self.prefix(dir), &header[..h], body, self.suffix(dir)]
    }

    /// Appends message `seq` on `conn` to `out`, whole (datagrams, tests).
    pub fn encode(&self, dir: Dir, conn: u32, seq: u64, out: &mut Vec<u8>) {
        let h = header(conn, seq);
        for part in self.parts(dir, conn, seq, &h) {
            out.extend_from_slice(part);
        }
    }

    /// Checks `data` against the stream of replies on `conn` from `at`, which may not run
    /// past message `end` (exclusive: replies to messages not sent yet cannot arrive).
    /// Advances `at` and returns how many replies `data` completed.
    pub fn check(
        &self,
        conn: u32,
        at: &mut Cursor,
        end: u64,
        mut data: &[u8],
    ) -> Result<u64, Mismatch> {
        let len = self.len(Dir::Reply);
        let mut completed = 0;
        while !data.is_empty() {
            if at.seq >= end {
                return Err(Mismatch::Extra(data.len()));
            }
            let h = header(conn, at.seq);
            let mut part_start = 0;
            for part in self.parts(Dir::Reply, conn, at.seq, &h) {
                let part_end = part_start + part.len();
                if at.offset < part_end && !data.is_empty() {
                    let from = at.offset - part_start;
                    let n = (part.len() - from).min(data.len());
                    let (expected, got) = (&part[from..from + n], &data[..n]);
                    if expected != got {
                        let k = first_difference(expected, got);
                        return Err(Mismatch::Byte {
                            seq: at.seq,
                            offset: at.offset + k,
                            expected: expected[k],
                            got: got[k],
                        });
                    }
                    at.offset += n;
                    data = &data[n..];
                }
                part_start = part_end;
            }
            if at.offset == len {
                *at = Cursor {
                    seq: at.seq + 1,
                    offset: 0,
                };
                completed += 1;
            }
        }
        Ok(completed)
    }
}

/// Builds the iovec list of one `writev` over a stream of requests without copying bodies:
/// parts shorter than [`Gather::COALESCE`] (headers, framing, small bodies) are copied into
/// one scratch buffer so that small messages still go out as one large contiguous write,
/// and longer bodies are referenced in the codec's ring where they lie.
#[derive(Debug, Default)]
pub struct Gather {
    scratch: Vec<u8>,
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, Copy)]
enum Seg {
    Scratch(usize, usize),
    Ring(usize, usize),
}

impl Gather {
    /// Parts at least this long are written from where they lie; shorter ones are copied.
    /// A copy of under 512 bytes costs less than the kernel's work for one more iovec.
    pub const COALESCE: usize = 512;
    /// The most iovecs one write hands the kernel (far below `IOV_MAX`, 1024); with
    /// coalescing, each is either many small messages or one large body.
    pub const MAX_IOV: usize = 64;

    /// Lays out the requests on `conn` from `at` up to message `end` (exclusive), at most
    /// `limit` bytes. Returns the bytes laid out.
    pub fn build(&mut self, codec: &Codec, conn: u32, at: Cursor, end: u64, limit: usize) -> usize {
        self.scratch.clear();
        self.segs.clear();
        let mut total = 0;
        let mut cursor = at;
        'messages: while cursor.seq < end && total < limit {
            let h = header(conn, cursor.seq);
            let mut part_start = 0;
            for part in codec.parts(Dir::Request, conn, cursor.seq, &h) {
                let part_end = part_start + part.len();
                if cursor.offset < part_end {
                    let from = cursor.offset - part_start;
                    let n = (part.len() - from).min(limit - total);
                    let piece = &part[from..from + n];
                    let seg = if n < Self::COALESCE {
                        let s = self.scratch.len();
                        match self.segs.last_mut() {
                            Some(Seg::Scratch(_, end)) if *end == s => {
                                *end += n;
                                None
                            }
                            _ => Some(Seg::Scratch(s, s + n)),
                        }
                    } else {
                        // A long part is always a body, which lies in the ring.
                        let offset = piece.as_ptr() as usize - codec.ring.as_ptr() as usize;
                        Some(Seg::Ring(offset, offset + n))
                    };
                    if let Some(seg) = seg {
                        if self.segs.len() == Self::MAX_IOV {
                            break 'messages;
                        }
                        self.segs.push(seg);
                    }
                    if n < Self::COALESCE {
                        self.scratch.extend_from_slice(piece);
                    }
                    cursor.offset += n;
                    total += n;
                    if total == limit {
                        break 'messages;
                    }
                }
                part_start = part_end;
            }
            cursor = Cursor {
                seq: cursor.seq + 1,
                offset: 0,
            };
        }
        total
    }

    /// The laid-out bytes as iovecs, in order; `slots` must hold [`Gather::MAX_IOV`].
    pub fn slices<'a>(&'a self, codec: &'a Codec, slots: &mut [IoSlice<'a>]) -> usize {
        for (slot, seg) in slots.iter_mut().zip(&self.segs) {
            *slot = IoSlice::new(match *seg {
                Seg::Scratch(a, b) => &self.scratch[a..b],
                Seg::Ring(a, b) => &codec.ring[a..b],
            });
        }
        self.segs.len()
    }
}

/// Advances `at` by `n` bytes of the request stream. Returns the messages completed.
pub fn advance(codec: &Codec, at: &mut Cursor, n: usize) -> u64 {
    let len = codec.len(Dir::Request) as u64;
    let total = at.offset as u64 + n as u64;
    let whole = total / len;
    at.seq += whole;
    at.offset = (total % len) as usize;
    whole
}

/// Checks `data`, received at byte `at` of an RFC 864 chargen stream, against the pattern.
/// Advances `at`. Returns the stream offset and the bytes of the first difference.
pub fn check_chargen(at: &mut u64, mut data: &[u8]) -> Result<(), (u64, u8, u8)> {
    while !data.is_empty() {
        let pos = (*at % PERIOD as u64) as usize;
        let n = (PERIOD - pos).min(data.len());
        let (expected, got) = (&CYCLE[pos..pos + n], &data[..n]);
        if expected != got {
            let k = first_difference(expected, got);
            return Err((*at + k as u64, expected[k], got[k]));
        }
        *at += n as u64;
        data = &data[n..];
    }
    Ok(())
}

/// Index of the first differing byte of two slices known to differ.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .expect("slices differ")
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

/// A byte as a person reads it: the character if printable, hex otherwise.
pub fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(codec: &Codec, dir: Dir, conn: u32, seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        codec.encode(dir, conn, seq, &mut v);
        v
    }

    /// The header round-trips and the pattern is printable with no newline.
    #[test]
    fn header_and_pattern() {
        let codec = Codec::new(Protocol::Raw, 200);
        let m = message(&codec, Dir::Request, 7, 0x1234_5678_9abc);
        assert_eq!(&m[..HEADER_LEN], b"00000007:0000123456789abc:");
        assert_eq!(parse_header(&m), Some((7, 0x1234_5678_9abc)));
        assert_eq!(m.len(), 200);
        assert!(m.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
    }

    /// Different messages differ, even past the header.
    #[test]
    fn messages_differ() {
        let codec = Codec::new(Protocol::Raw, 64);
        let a = message(&codec, Dir::Request, 1, 2);
        let b = message(&codec, Dir::Request, 1, 3);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    /// Short messages carry a prefix of the header; a short payload has no parsable header.
    #[test]
    fn short_messages() {
        let codec = Codec::new(Protocol::Raw, 5);
        assert_eq!(message(&codec, Dir::Request, 0xabcdef01, 9), b"abcde");
        assert_eq!(parse_header(b"abcde"), None);
        assert_eq!(parse_header(b"0000000g:0000000000000001:"), None);
    }

    /// Each protocol's request and reply are the framing its server speaks.
    #[test]
    fn framing() {
        let line = Codec::new(Protocol::Line, 2);
        assert_eq!(message(&line, Dir::Request, 0, 0), b"ECHO 00\n");
        assert_eq!(message(&line, Dir::Reply, 0, 0), b"00\r\n");
        let frame = Codec::new(Protocol::Frame, 2);
        assert_eq!(message(&frame, Dir::Reply, 0, 0), b"\0\0\0\x0200");
        for p in Protocol::ALL {
            let c = Codec::new(p, 10);
            assert_eq!(message(&c, Dir::Reply, 3, 4).len(), c.len(Dir::Reply));
            assert_eq!(message(&c, Dir::Request, 3, 4).len(), c.len(Dir::Request));
        }
    }

    /// A flipped byte is found at its offset in its message, across read boundaries.
    #[test]
    fn check_locates_a_flip() {
        let codec = Codec::new(Protocol::Raw, 64);
        let mut stream: Vec<u8> = (0..20)
            .flat_map(|s| message(&codec, Dir::Reply, 3, s))
            .collect();
        stream[10 * 64 + 40] ^= 1;
        let mut at = Cursor::default();
        let mut done = 0;
        let mut result = Ok(0);
        for piece in stream.chunks(37) {
            result = codec.check(3, &mut at, 20, piece);
            match result {
                Ok(n) => done += n,
                Err(_) => break,
            }
        }
        assert_eq!(done, 10);
        match result.unwrap_err() {
            Mismatch::Byte { seq, offset, .. } => assert_eq!((seq, offset), (10, 40)),
            other => panic!("{other:?}"),
        }
    }

    /// Bytes beyond the replies outstanding are reported as never sent.
    #[test]
    fn check_refuses_extra_bytes() {
        let codec = Codec::new(Protocol::Raw, 8);
        let mut data = message(&codec, Dir::Reply, 0, 0);
        data.extend_from_slice(b"xyz");
        let mut at = Cursor::default();
        assert_eq!(codec.check(0, &mut at, 1, &data), Err(Mismatch::Extra(3)));
    }

    /// A deviating chargen stream is caught at its offset; a correct one passes in pieces.
    #[test]
    fn chargen_stream() {
        let stream: Vec<u8> = CYCLE
            .iter()
            .copied()
            .cycle()
            .take(3 * PERIOD + 100)
            .collect();
        let mut at = 0;
        for piece in stream.chunks(1000) {
            check_chargen(&mut at, piece).unwrap();
        }
        let mut bad = stream.clone();
        bad[PERIOD + 5] = b'#';
        let mut at = 0;
        let err = bad
            .chunks(999)
            .find_map(|p| check_chargen(&mut at, p).err());
        assert_eq!(err.map(|e| e.0), Some(PERIOD as u64 + 5));
    }

    proptest! {
        /// What `Gather` lays out, written in any pieces, is exactly the encoded request
        /// stream, and `advance` follows it.
        #[test]
        fn gather_is_the_request_stream(
            size in 1usize..3000,
            protocol in 0usize..3,
            limits in proptest::collection::vec(1usize..5000, 1..20),
        ) {
            let codec = Codec::new(Protocol::ALL[protocol], size);
            let end = 12;
            let expected: Vec<u8> =
                (0..end).flat_map(|s| message(&codec, Dir::Request, 5, s)).collect();
            let mut got = Vec::new();
            let mut at = Cursor::default();
            let mut gather = Gather::default();
            for limit in limits.iter().cycle().take(10_000) {
                if at.seq == end {
                    break;
                }
                let n = gather.build(&codec, 5, at, end, *limit);
                let mut slots = [IoSlice::new(&[]); Gather::MAX_IOV];
                let k = gather.slices(&codec, &mut slots);
                let bytes: Vec<u8> = slots[..k].iter().flat_map(|s| s.iter().copied()).collect();
                prop_assert_eq!(bytes.len(), n);
                got.extend_from_slice(&bytes);
                advance(&codec, &mut at, n);
            }
            prop_assert_eq!(got, expected);
        }
    }
}
