//! The chunked transfer coding (RFC 9112 §7.1), decoded a byte at a time so that no framing
//! byte is ever held: the decoder remembers where it is in the grammar, not the bytes it has
//! seen, and hands out chunk data as slices of the input where it lies.
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! last-chunk   = 1*("0") [ chunk-ext ] CRLF
//! ```
//!
//! What it does not bound by itself is bounded here: a chunk size has at most 16 hex digits
//! (a `u64`), extensions and trailers at most [`MAX_FRAMING`] bytes per chunk line and per
//! trailer section, so a peer that sends framing forever is refused rather than served
//! forever. The body's total size is the service's business (413).
//!
//! The grammar is read strictly: every line ends in `CRLF` (a bare `LF` or `CR` is an error),
//! and after the size only whitespace and `;`-extensions may come. Leniency here is how
//! chunked bodies are smuggled: a proxy that reads `5\n` or `5xyz` one way and a server that
//! reads it another disagree on where the body ends.

/// The most bytes of chunk extensions on one chunk line, and of trailer fields in the
/// trailer section: nothing sends more than a few dozen, and each is read and dropped.
pub const MAX_FRAMING: usize = 4 * 1024;

/// Where the decoder is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` so far).
    Size { digits: u8 },
    /// After the size: whitespace, then `;` and extensions, or the line's end.
    AfterSize,
    /// Extensions until the line's end.
    Extension,
    /// Saw `CR` at the end of a chunk line.
    SizeLf,
    /// In chunk data, this many bytes left.
    Data,
    /// After chunk data: its `CR`.
    DataCr,
    /// After chunk data's `CR`: its `LF`.
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Saw `CR` at the end of a trailer line.
    TrailerLf {
        /// The line was empty: this `LF` ends the body.
        last: bool,
    },
    /// The body is over.
    Done,
}

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not the grammar: a bad size digit, a missing `CRLF`.
    Malformed,
    /// A chunk size with more than 16 hex digits.
    SizeOverflow,
    /// More than [`MAX_FRAMING`] bytes of extensions or trailers.
    FramingTooLong,
}

impl ChunkError {
    /// One line for a 400 response or a log.
    pub fn reason(self) -> &'static str {
        match self {
            ChunkError::Malformed => "malformed chunked body",
            ChunkError::SizeOverflow => "chunk size too large",
            ChunkError::FramingTooLong => "chunk extensions or trailers too long",
        }
    }
}

/// One step of decoding: `consumed` bytes of the input were used, and `data` (a slice of it,
/// possibly empty) is chunk data. `done` once the whole body, trailers included, has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// Input bytes used, framing and data.
    pub consumed: usize,
    /// Chunk data found, the last thing in the consumed bytes.
    pub data: &'a [u8],
    /// The body has ended.
    pub done: bool,
}

/// An incremental decoder of one chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    /// The chunk size being read, then the data bytes left in the chunk.
    remaining: u64,
    /// Framing bytes (extensions, trailers) seen in the current line group.
    framing: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a body.
    pub const fn new() -> Decoder {
        Decoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            framing: 0,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes framing from the start of `input` until chunk data, the end of the body, or
    /// the end of the input, and returns the first stretch of data found. Call again with
    /// the rest of the input to go on; a step that consumes nothing needs more input.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data => {
                    let n = (input.len() - i)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step {
                        consumed: i + n,
                        data: &input[i..i + n],
                        done: false,
                    });
                }
                State::Size { digits } => match hex(b) {
                    Some(d) if digits < 16 => {
                        self.remaining = self.remaining << 4 | u64::from(d);
                        self.state = State::Size { digits: digits + 1 };
                    }
                    Some(_) => return Err(ChunkError::SizeOverflow),
                    None if digits == 0 => return Err(ChunkError::Malformed),
                    None => {
                        self.framing = 0;
                        self.state = State::AfterSize;
                        continue; // the same byte, as the start of what follows the size
                    }
                },
                State::AfterSize => match b {
                    b' ' | b'\t' => self.count_framing()?,
                    b';' => {
                        self.count_framing()?;
                        self.state = State::Extension;
                    }
                    b'\r' => self.state = State::SizeLf,
                    _ => return Err(ChunkError::Malformed),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    _ if is_control(b) => return Err(ChunkError::Malformed),
                    _ => self.count_framing()?,
                },
                State::SizeLf if b == b'\n' => self.end_size_line(),
                State::DataCr if b == b'\r' => self.state = State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.remaining = 0;
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::TrailerLf { last: true },
                    _ if is_control(b) => return Err(ChunkError::Malformed),
                    _ => {
                        self.state = State::Trailer;
                        self.count_framing()?;
                    }
                },
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf { last: false },
                    _ if is_control(b) => return Err(ChunkError::Malformed),
                    _ => self.count_framing()?,
                },
                State::TrailerLf { last } if b == b'\n' => {
                    self.state = if last {
                        State::Done
                    } else {
                        State::TrailerStart
                    };
                }
                State::SizeLf | State::DataCr | State::DataLf | State::TrailerLf { .. } => {
                    return Err(ChunkError::Malformed)
                }
            }
            i += 1;
            if self.state == State::Done {
                break;
            }
        }
        Ok(Step {
            consumed: i,
            data: &[],
            done: self.state == State::Done,
        })
    }

    /// The chunk line has ended: data follows, or, after the last chunk, the trailers.
    fn end_size_line(&mut self) {
        self.framing = 0;
        self.state = if self.remaining == 0 {
            State::TrailerStart
        } else {
            State::Data
        };
    }

    fn count_framing(&mut self) -> Result<(), ChunkError> {
        self.framing += 1;
        if self.framing > MAX_FRAMING {
            return Err(ChunkError::FramingTooLong);
        }
        Ok(())
    }
}

/// A control character other than horizontal tab: never part of an extension or a field.
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `input`, cut at `cuts` into the pieces a connection would offer (what it holds,
/// followed by the new bytes): the data, and whether the body ended (with how many bytes
/// followed it), or the error. For the tests and the fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_all(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Option<usize>), ChunkError> {
    let mut decoder = Decoder::new();
    let mut data = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    let mut offset = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for end in bounds {
        if end < offset {
            continue;
        }
        // Like the connection, offer what is held followed by the new bytes.
        held.extend_from_slice(&input[offset..end]);
        offset = end;
        let mut used = 0;
        loop {
            let step = decoder.decode(&held[used..])?;
            data.extend_from_slice(step.data);
            used += step.consumed;
            if step.done {
                // `held` is `input[offset - held.len()..offset]`.
                let end_of_body = offset - held.len() + used;
                return Ok((data, Some(input.len() - end_of_body)));
            }
            if step.consumed == 0 {
                break;
            }
        }
        held.drain(..used);
    }
    Ok((data, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body with extensions and trailers decodes to its data and stops at its end.
    #[test]
    fn decodes_and_stops_at_the_end() {
        let body = b"5 ;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (data, rest) = decode_all(body, &[]).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(rest, Some(4));
        assert_eq!(decode_all(b"0\r\n\r\n", &[]), Ok((vec![], Some(0))));
    }

    /// Lenient framing, the stuff of smuggling, is refused: bare LFs and CRs, junk after the
    /// size, data longer than its size.
    #[test]
    fn strict_framing() {
        for body in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3\r\nabc\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\n\n",
            b"3x\r\nabc\r\n0\r\n\r\n",
            b"3;a\nb\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"0\r\nX: a\nY: b\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(body, &[]),
                Err(ChunkError::Malformed),
                "{}",
                body.escape_ascii()
            );
        }
    }

    /// The answer is the same for every way of cutting the input.
    #[test]
    fn every_cut_gives_the_same_answer() {
        let body = b"a\r\n0123456789\r\n1;x\r\nZ\r\n0\r\nT: v\r\n\r\n";
        let whole = decode_all(body, &[]).unwrap();
        assert_eq!(whole.0, b"0123456789Z");
        for i in 0..body.len() {
            for j in i..body.len() {
                assert_eq!(decode_all(body, &[i, j]).unwrap(), whole, "cuts {i} {j}");
            }
        }
    }

    /// Malformed framing, oversized sizes and endless extensions are errors.
    #[test]
    fn errors() {
        assert_eq!(decode_all(b"x\r\n", &[]), Err(ChunkError::Malformed));
        assert_eq!(decode_all(b"3\r\nabcX", &[]), Err(ChunkError::Malformed));
        assert_eq!(decode_all(b"3\rX", &[]), Err(ChunkError::Malformed));
        assert_eq!(
            decode_all(b"11111111111111111\r\n", &[]),
            Err(ChunkError::SizeOverflow)
        );
        let mut ext = b"1;".to_vec();
        ext.extend(vec![b'e'; MAX_FRAMING + 1]);
        assert_eq!(decode_all(&ext, &[]), Err(ChunkError::FramingTooLong));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..=MAX_FRAMING / 3 {
            trailers.extend(b"a:b\r\n");
        }
        // Bounded as a section, not per line: many short trailers are too long together.
        assert_eq!(decode_all(&trailers, &[]), Err(ChunkError::FramingTooLong));
    }

    /// A partial body decodes what it can and asks for more.
    #[test]
    fn partial() {
        let mut d = Decoder::new();
        let step = d.decode(b"5\r\nhel").unwrap();
        assert_eq!(
            (step.consumed, step.data, step.done),
            (6, &b"hel"[..], false)
        );
        let step = d.decode(b"lo\r").unwrap();
        assert_eq!((step.consumed, step.data), (2, &b"lo"[..]));
        let step = d.decode(b"\r").unwrap();
        assert_eq!(step.consumed, 1);
        assert!(!d.is_done());
    }
}
