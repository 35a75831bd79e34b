//! RFC 863 discard: everything received is dropped; nothing is ever sent.
//!
//! The loop's `bytes_in` counter is the record of what arrived.

use super::{Output, Service};

/// The discard service.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Service for Discard {
    fn on_input(&mut self, input: &[u8], _out: &mut Output<'_>) -> usize {
        input.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Harness;

    /// Input is consumed and nothing is written.
    #[test]
    fn consumes_silently() {
        let mut h = Harness::new(Discard);
        assert_eq!(h.input(&[1; 1000]), 1000);
        assert!(h.take_output().is_empty());
    }
}
