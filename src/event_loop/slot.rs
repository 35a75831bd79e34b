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

/// One slab entry: a connection plus what the loop tracks about it.
pub(super) struct Slot {
    pub(super) conn: Connection<TcpStream>,
    /// Which endpoint accepted it: its counters are that endpoint's.
    pub(super) endpoint: usize,
    /// Which allowance it counts against.
    pub(super) pool: usize,
    /// The interest currently registered with the poller.
    pub(super) registered: Want,
    /// Already on the run queue.
    pub(super) queued: bool,
    /// Where its entry in the loop's deadline set is.
    pub(super) timer: TimerSlot,
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
