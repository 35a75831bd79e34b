//! What the loop keeps per connection: the slab's entries, and what a turn borrows.

use std::sync::Arc;

use mio::net::TcpStream;
use slab::Slab;

use crate::buffer::Buffer;
use crate::config::Limits;
use crate::connection::{Connection, Context};
use crate::socket::Want;
use crate::stats::Stats;
use crate::timer::{Time, TimerSlot};

/// One slab entry: a connection plus what the loop tracks about it. Every connection,
/// busy or idle, costs one of these, so it is kept to what every connection needs: the
/// connection's hot part (what waits, or a stage before serving, is behind a pointer), its
/// deadline entry, and narrow indices. The test below pins the size.
pub(super) struct Slot {
    pub(super) conn: Connection<TcpStream>,
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

impl Slot {
    /// A newly registered connection of `endpoint`, counted in `pool` (below [`MAX_POOLS`]).
    pub(super) fn new(
        conn: Connection<TcpStream>,
        endpoint: usize,
        pool: usize,
        registered: Want,
    ) -> Slot {
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

/// The connection a token names, if it is still there: the slab key may since have been
/// reused by a newer connection, whose serial differs (invariant 8).
pub(super) fn lookup(conns: &mut Slab<Slot>, key: usize, serial: u32) -> Option<&mut Slot> {
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
        assert_eq!(size_of::<Slot>(), 72 + debug_extra);
        assert_eq!(
            size_of::<Entry<Slot>>(),
            size_of::<Slot>(),
            "the slab's vacant/occupied tag fits in a niche of the slot"
        );
    }
}
