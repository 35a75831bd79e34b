//! The token codec: what each `mio::Token` of a loop names.
//!
//! A slab key is reused as soon as a connection is removed, but the same poll batch, the run
//! queue or the deadline set may still name the old occupant. Each token therefore carries
//! the low 32 bits of the connection's serial number beside its slab key, and a lookup whose
//! serial does not match is ignored (invariant 8 in `docs/02-event-loop.md`). Tokens with
//! serial 0 belong to the loop itself: listeners, UDP endpoints, the waker. A token
//! is 64 bits (32 of serial, 32 of key), so loopd needs a 64-bit `usize`; the build says so
//! on any other target instead of silently truncating tokens.
//!
//! Listener and endpoint tokens are looked up, never indexed: draining closes the listeners
//! while later events of the same poll batch may still name them.

use mio::Token;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("loopd packs a 32-bit serial and a 32-bit slab key into each 64-bit mio token");

pub(super) const WAKER_KEY: usize = u32::MAX as usize;
/// Loop tokens from here up (below the waker key) are UDP endpoints.
pub(super) const DATAGRAM_BASE: usize = 1 << 31;

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Listener(usize),
    Datagram(usize),
    Waker,
    Connection { key: usize, serial: u32 },
}

pub(super) fn conn_token(key: usize, serial: u64) -> Token {
    Token(((serial as u32 as usize) << 32) | key)
}

pub(super) fn loop_token(key: usize) -> Token {
    Token(key)
}

pub(super) fn decode(token: Token) -> Target {
    let (serial, key) = ((token.0 >> 32) as u32, token.0 & 0xFFFF_FFFF);
    match (serial, key) {
        (0, WAKER_KEY) => Target::Waker,
        (0, i) if i >= DATAGRAM_BASE => Target::Datagram(i - DATAGRAM_BASE),
        (0, i) => Target::Listener(i),
        (serial, key) => Target::Connection { key, serial },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens round-trip, and loop tokens never collide with connection tokens.
    #[test]
    fn token_codec() {
        let t = conn_token(42, 7);
        assert_eq!(decode(t), Target::Connection { key: 42, serial: 7 });
        assert_eq!(decode(loop_token(3)), Target::Listener(3));
        assert_eq!(decode(loop_token(WAKER_KEY)), Target::Waker);
        assert_eq!(decode(loop_token(DATAGRAM_BASE + 2)), Target::Datagram(2));
        // Only the low 32 bits of the serial travel in the token.
        assert_eq!(
            decode(conn_token(1, (5u64 << 32) | 9)),
            Target::Connection { key: 1, serial: 9 }
        );
    }

    /// A token for a slot's previous occupant does not match the new occupant.
    #[test]
    fn stale_token_is_rejected() {
        let old = conn_token(0, 1);
        let new = conn_token(0, 2);
        assert_ne!(old, new);
        let Target::Connection { serial, .. } = decode(old) else {
            panic!()
        };
        assert_ne!(serial, 2);
    }
}
