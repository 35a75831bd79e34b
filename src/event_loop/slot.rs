//! What the loop keeps per connection: the slab entries, the two slabs (plain and TLS), and
//! what a turn borrows.
//!
//! Plain and TLS connections live in slabs of their own, each of its own socket type, so the
//! loop's code for a connection is written once (generic over the socket, [`Family`]) and
//! compiled twice: a plain connection's slot holds a `TcpStream` and nothing of TLS, and no
//! plain read or write asks whether it is TLS. The token says which slab (`token.rs`).

use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::Token;
use slab::Slab;

use super::token::{conn_token, Kind};
use crate::buffer::Buffer;
use crate::config::Limits;
use crate::connection::{Connection, Context};
use crate::socket::{Socket, Want};
use crate::stats::{CloseReason, Stats};
use crate::timer::{Time, TimerSlot};

/// One slab entry: a connection plus what the loop tracks about it. Every connection,
/// busy or idle, costs one of these, so it is kept to what every connection needs: the
/// connection's hot part (what waits, or a stage before serving, is behind a pointer), its
/// deadline entry, and narrow indices. The test below pins the size.
pub(super) struct Slot<S> {
    pub(super) conn: Connection<S>,
    /// Where its entry in the loop's deadline set is.
    pub(super) timer: TimerSlot,
    /// Which endpoint accepted it: its counters are that endpoint's. (A loop has far fewer
    /// endpoints than descriptors, so 32 bits hold any index.)
    endpoint: u32,
    /// Which allowance it counts against (at most [`MAX_POOLS`]).
    pool: u8,
    /// Already on the run queue.
    pub(super) queued: bool,
    /// The interest currently registered with the poller.
    pub(super) registered: Want,
}

/// The most connection allowances a loop keeps: the clients' cap and one per listener with
/// an allowance of its own (the admin endpoint's). A slot names its pool in one byte.
pub(super) const MAX_POOLS: usize = u8::MAX as usize + 1;

impl<S> Slot<S> {
    /// A newly registered connection of `endpoint`, counted in `pool` (below [`MAX_POOLS`]).
    pub(super) fn new(
        conn: Connection<S>,
        endpoint: usize,
        pool: usize,
        registered: Want,
    ) -> Slot<S> {
        debug_assert!(pool < MAX_POOLS && u32::try_from(endpoint).is_ok());
        Slot {
            conn,
            timer: TimerSlot::default(),
            endpoint: endpoint as u32,
            pool: pool as u8,
            queued: false,
            registered,
        }
    }

    /// Which endpoint accepted it.
    pub(super) fn endpoint(&self) -> usize {
        self.endpoint as usize
    }

    /// Which allowance it counts against.
    pub(super) fn pool(&self) -> usize {
        usize::from(self.pool)
    }
}

/// The TLS connections' socket (the `tls` feature).
#[cfg(feature = "tls")]
pub(super) type TlsSocket = crate::tls::socket::TlsSocket;

/// A loop's connections: a slab per kind of socket.
pub(super) struct Conns {
    pub(super) plain: Slab<Slot<TcpStream>>,
    #[cfg(feature = "tls")]
    pub(super) tls: Slab<Slot<TlsSocket>>,
}

impl Conns {
    /// Room for `plain` plain connections and `tls` TLS ones, reserved up front: the untouched
    /// part costs address space, not memory, and a slab never stalls the loop to copy itself
    /// while growing.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub(super) fn with_capacity(plain: usize, tls: usize) -> Conns {
        Conns {
            plain: Slab::with_capacity(plain),
            #[cfg(feature = "tls")]
            tls: Slab::with_capacity(tls),
        }
    }

    /// Connections open, of every kind.
    pub(super) fn len(&self) -> usize {
        #[cfg(feature = "tls")]
        return self.plain.len() + self.tls.len();
        #[cfg(not(feature = "tls"))]
        self.plain.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A kind of connection socket with a slab of its own: the loop's code for a connection is
/// generic over this.
pub(super) trait Family: Socket + Source + Sized {
    /// What its tokens say.
    const KIND: Kind;

    /// Its slab.
    fn slab(conns: &mut Conns) -> &mut Slab<Slot<Self>>;

    /// The reason a connection closes for, as counted: a layer may know better than the
    /// state machine (a TLS peer's FIN without `close_notify` is a truncation). Also where
    /// a layer's end of session is counted and logged.
    #[inline]
    fn closing(conn: &Connection<Self>, reason: CloseReason, stats: &Stats) -> CloseReason {
        let _ = (conn, stats);
        reason
    }
}

impl Family for TcpStream {
    const KIND: Kind = Kind::Plain;

    #[inline]
    fn slab(conns: &mut Conns) -> &mut Slab<Slot<TcpStream>> {
        &mut conns.plain
    }
}

/// The token of the connection at `key` of `S`'s slab.
pub(super) fn token_of<S: Family>(key: usize, conn: &Connection<S>) -> Token {
    conn_token(S::KIND, key, conn.id())
}

/// The connection a token names, if it is still there: the slab key may since have been
/// reused by a newer connection, whose serial differs (invariant 8).
pub(super) fn lookup<S: Socket>(
    conns: &mut Slab<Slot<S>>,
    key: usize,
    serial: u32,
) -> Option<&mut Slot<S>> {
    conns
        .get_mut(key)
        .filter(|slot| slot.conn.id() as u32 == serial)
}

/// What a turn borrows from the loop, kept apart from the slab so both can be borrowed at
/// once.
pub(super) struct TurnKit {
    pub(super) limits: Limits,
    pub(super) scratch: Box<[u8]>,
    pub(super) out_scratch: Buffer,
    /// Every endpoint's counters, by endpoint number; they outlive the sockets (a draining
    /// loop closes its listeners while their connections finish).
    pub(super) stats: Vec<Arc<Stats>>,
    /// Handshake steps left in this turn of the loop (see [`Context::handshakes`]): granted
    /// by the run-queue pass, zero otherwise.
    pub(super) handshakes: usize,
}

impl TurnKit {
    pub(super) fn cx(&mut self, now: Time, endpoint: usize) -> Context<'_> {
        Context {
            now,
            limits: &self.limits,
            scratch: &mut self.scratch,
            out_scratch: &mut self.out_scratch,
            out_borrowed: None,
            stats: &self.stats[endpoint],
            handshakes: &mut self.handshakes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// A slab entry as the `slab` crate lays it out (`slab::Entry` is private).
    #[allow(dead_code)]
    enum Entry<T> {
        Vacant(usize),
        Occupied(T),
    }

    /// What one idle connection costs the loop in its slab, pinned. In release builds (those
    /// the footprint benchmark measures) a `mio::net::TcpStream` is its descriptor: the entry
    /// is 72 bytes — 56 for the connection (socket, serial, idle clock and readiness flags;
    /// the service; a pointer to what waits, `None` when nothing does; state and flags), 8
    /// for the deadline slot, and 8 for the loop's narrow indices and flags. Debug builds
    /// add mio's selector check to every socket. A change here changes `cargo bench -p
    /// loopd-bench --bench footprint`: measure it.
    #[test]
    fn slot_sizes_are_pinned() {
        // mio's debug builds keep a selector id beside each descriptor.
        let (socket, debug_extra) = if cfg!(debug_assertions) {
            (16, 16)
        } else {
            (4, 0)
        };
        assert_eq!(size_of::<TcpStream>(), socket);
        assert_eq!(size_of::<TimerSlot>(), 8);
        assert_eq!(size_of::<Connection<TcpStream>>(), 56 + debug_extra);
        assert_eq!(size_of::<Slot<TcpStream>>(), 72 + debug_extra);
        assert_eq!(
            size_of::<Entry<Slot<TcpStream>>>(),
            size_of::<Slot<TcpStream>>(),
            "the slab's vacant/occupied tag fits in a niche of the slot"
        );
    }
}
