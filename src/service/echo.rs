//! RFC 862 echo: every byte received is sent back, in order.

use super::{Output, Service};

/// The echo service. Stateless, so a boxed `Echo` allocates nothing.
///
/// Backpressure needs no code here: the loop reads at most [`Output::room`] bytes at a time,
/// so the echo of one read can never push pending output past the high watermark.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Service for Echo {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        out.write(input);
        input.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Harness;

    /// Input comes back unchanged and is fully consumed.
    #[test]
    fn echoes_everything() {
        let mut h = Harness::new(Echo);
        assert_eq!(h.input(b"abc"), 3);
        assert_eq!(h.input(b"\0\xff"), 2);
        assert_eq!(h.take_output(), b"abc\0\xff");
    }

    /// Peer EOF finishes the conversation.
    #[test]
    fn finishes_on_peer_eof() {
        let mut h = Harness::new(Echo);
        h.peer_finished();
        assert!(h.finished);
    }
}
