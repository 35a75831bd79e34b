//! A length-prefixed request/response protocol.
//!
//! The other common answer to TCP's lack of message boundaries: every frame is a 4-byte
//! big-endian length followed by that many payload bytes, and the service echoes each frame
//! back as a frame. Zero-length frames are valid.
//!
//! Unlike a delimiter, a length prefix says up front how much to wait for, and the payload may
//! contain any byte. Reassembly is the same idea as for lines: [`Service::on_input`] answers
//! every complete frame and leaves a partial one with the connection. Because a frame may be
//! larger than the output high watermark, the service declares its own input limit
//! ([`Service::input_limit`]): the header plus the largest frame allowed.
//!
//! A length above the limit (`--max-frame`) is not waited for: replies to earlier frames are
//! flushed, one line is logged, and the connection is closed gracefully.

use log::warn;

use super::{Output, Service};

/// Default for `--max-frame`: generous for request/response payloads, and a bound on what one
/// client can make the server hold while a frame arrives.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Bytes in the length prefix.
const HEADER: usize = 4;

/// The frame echo service for one connection.
pub struct Frame {
    max_frame: usize,
}

impl Frame {
    /// Frames with payloads up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Frame {
        Frame { max_frame }
    }
}

impl Service for Frame {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        let mut used = 0;
        // The output contract: echo a frame only while output has room; the rest waits,
        // unconsumed, until the peer has read what is pending.
        while out.room() > 0 {
            let Some(header) = input.get(used..used + HEADER) else {
                break;
            };
            let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
            if len > self.max_frame {
                warn!(
                    "frame of {len} bytes exceeds the {}-byte limit; closing after earlier replies",
                    self.max_frame
                );
                out.finish();
                return input.len();
            }
            let end = (used + HEADER).saturating_add(len);
            let Some(frame) = input.get(used..end) else {
                break; // incomplete: wait for the rest
            };
            out.write(frame);
            out.end_reply();
            used += HEADER + len;
        }
        used
    }

    fn input_limit(&self) -> Option<usize> {
        Some(HEADER.saturating_add(self.max_frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Harness;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    /// Complete frames are echoed as frames, zero-length included.
    #[test]
    fn echoes_frames() {
        let mut h = Harness::new(Frame::new(100));
        let mut input = frame(b"hello");
        input.extend(frame(b""));
        input.extend(frame(&[0, 10, 255]));
        assert_eq!(h.input(&input), input.len());
        assert_eq!(h.take_output(), input);
    }

    /// A partial header or payload is left for later.
    #[test]
    fn partial_frames_wait() {
        let mut h = Harness::new(Frame::new(100));
        let f = frame(b"abcdef");
        assert_eq!(h.input(&f[..3]), 0);
        assert_eq!(h.input(&f[..7]), 0);
        assert!(h.take_output().is_empty());
        let mut two = f.clone();
        two.extend(&f[..2]);
        assert_eq!(h.input(&two), f.len());
        assert_eq!(h.take_output(), f);
    }

    /// An oversize length closes after the frames before it were answered.
    #[test]
    fn oversize_frame_finishes() {
        let mut h = Harness::new(Frame::new(8));
        let mut input = frame(b"ok");
        input.extend(9u32.to_be_bytes());
        input.extend([0; 9]);
        assert_eq!(h.input(&input), input.len());
        assert_eq!(h.take_output(), frame(b"ok"));
        assert!(h.finished);
    }

    /// The input limit covers a whole maximal frame.
    #[test]
    fn input_limit_covers_a_frame() {
        assert_eq!(Frame::new(1000).input_limit(), Some(1004));
    }
}
