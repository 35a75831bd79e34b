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
//!
//! A loop keeps its connections in two slabs, plain and TLS (so a plain connection carries
//! nothing of TLS), and the top bit of a connection token's key says which: slab keys stay
//! far below 2^31 (the connection cap is at most 2^24), and the loop's own tokens, which use
//! that bit for UDP endpoints, have serial 0.

use mio::Token;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("loopd packs a 32-bit serial and a 32-bit slab key into each 64-bit mio token");

pub(super) const WAKER_KEY: usize = u32::MAX as usize;
/// Loop tokens from here up (below the waker key) are UDP endpoints.
pub(super) const DATAGRAM_BASE: usize = 1 << 31;

/// The bit of a connection token's key that names the TLS slab.
const TLS_BIT: usize = 1 << 31;

/// Which of a loop's slabs a connection is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Plain TCP.
    Plain,
    /// TLS over TCP.
    Tls,
}

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Listener(usize),
    Datagram(usize),
    Waker,
    Connection { kind: Kind, key: usize, serial: u32 },
}

pub(super) fn conn_token(kind: Kind, key: usize, serial: u64) -> Token {
    debug_assert!(key < TLS_BIT);
    let key = match kind {
        Kind::Plain => key,
        Kind::Tls => key | TLS_BIT,
    };
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
        (serial, key) if key & TLS_BIT != 0 => Target::Connection {
            kind: Kind::Tls,
            key: key & !TLS_BIT,
            serial,
        },
        (serial, key) => Target::Connection {
            kind: Kind::Plain,
            key,
            serial,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens round-trip, and loop tokens never collide with connection tokens.
    #[test]
    fn token_codec() {
        let t = conn_token(Kind::Plain, 42, 7);
        let plain = |key, serial| Target::Connection {
            kind: Kind::Plain,
            key,
            serial,
        };
        assert_eq!(decode(t), plain(42, 7));
        assert_eq!(
            decode(conn_token(Kind::Tls, 42, 7)),
            Target::Connection {
                kind: Kind::Tls,
                key: 42,
                serial: 7
            }
        );
        assert_ne!(conn_token(Kind::Tls, 42, 7), t);
        assert_eq!(decode(loop_token(3)), Target::Listener(3));
        assert_eq!(decode(loop_token(WAKER_KEY)), Target::Waker);
        assert_eq!(decode(loop_token(DATAGRAM_BASE + 2)), Target::Datagram(2));
        // Only the low 32 bits of the serial travel in the token.
        assert_eq!(
            decode(conn_token(Kind::Plain, 1, (5u64 << 32) | 9)),
            plain(1, 9)
        );
    }

    /// A token for a slot's previous occupant does not match the new occupant.
    #[test]
    fn stale_token_is_rejected() {
        let old = conn_token(Kind::Plain, 0, 1);
        let new = conn_token(Kind::Plain, 0, 2);
        assert_ne!(old, new);
        let Target::Connection { serial, .. } = decode(old) else {
            panic!()
        };
        assert_ne!(serial, 2);
    }
}
