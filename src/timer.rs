//! Deadlines without sweeps.
//!
//! Every connection has at most one entry in an ordered set keyed by `(deadline, token)`. The
//! poll timeout is the distance to the first entry, so the loop sleeps exactly until the next
//! thing can expire and never scans all connections (invariant 10 in `docs/02-event-loop.md`).
//!
//! Activity is the common case and must be cheap. A read or write only moves a connection's
//! deadline *later*, so the entry is left where it is: [`Timers::arm`] with a later deadline is
//! O(1). When the stale, earlier entry comes due, the owner recomputes its real deadline and
//! either fires or re-arms ([`Timers::pop_due`] hands the decision back). Only a deadline that
//! moves *earlier* (entering the linger state, output starting to pend) costs an O(log n)
//! remove and insert. HAProxy's wait queue is lazy the same way (a task whose expiry moved
//! later is requeued when it comes due); nginx instead leaves a timer alone when the new
//! deadline is within 300 ms of the old one, either way, and accepts that much error. Here a
//! deadline never fires early: the re-check at expiry costs one wake-up instead.
//!
//! Time is a plain millisecond count ([`Time`]) from a [`Clock`] the loop reads once per turn;
//! tests construct `Time` values directly, so nothing here waits in real time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Milliseconds since the owning [`Clock`]'s start. Millisecond resolution is what `epoll_wait`
/// offers for its timeout, so finer resolution would buy nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(pub u64);

impl Time {
    /// `self + d`, saturating.
    pub fn after(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }

    /// The duration from `self` until `later` (zero if `later` has passed).
    pub fn until(self, later: Time) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }
}

/// The loop's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock whose [`Time`] zero is now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Current time. Rounds *up* so that a deadline computed from it is never reported due a
    /// fraction of a millisecond early.
    pub fn now(&self) -> Time {
        let elapsed = self.start.elapsed();
        Time(elapsed.as_millis() as u64 + u64::from(elapsed.subsec_nanos() % 1_000_000 != 0))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Where an owner's single timer entry currently sits. Stored beside the owner (a
/// connection's slab entry), so that [`Timers`] itself needs no map from owner to entry.
///
/// One word: "not armed" is the one instant no deadline can be, [`TimerSlot::UNARMED`]
/// (`u64::MAX` milliseconds, half a billion years after the loop started); [`Timers::arm`]
/// moves a deadline that far out one millisecond earlier. Every connection carries one, so
/// the word that an `Option<Time>` would add is saved ten thousand times over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSlot {
    armed: Time,
}

impl TimerSlot {
    /// The value of a slot with no entry in the set.
    pub const UNARMED: Time = Time(u64::MAX);

    /// The deadline of the entry currently in the set, if any.
    pub fn armed(&self) -> Option<Time> {
        (self.armed != TimerSlot::UNARMED).then_some(self.armed)
    }

    fn take(&mut self) -> Option<Time> {
        let armed = self.armed();
        self.armed = TimerSlot::UNARMED;
        armed
    }
}

impl Default for TimerSlot {
    fn default() -> TimerSlot {
        TimerSlot {
            armed: TimerSlot::UNARMED,
        }
    }
}

/// An ordered set of `(deadline, key)` with at most one entry per owner.
#[derive(Debug)]
pub struct Timers<K> {
    set: BTreeSet<(Time, K)>,
}

impl<K: Copy + Ord> Timers<K> {
    /// An empty set.
    pub fn new() -> Timers<K> {
        Timers {
            set: BTreeSet::new(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Makes sure the owner `key` is woken no later than `deadline`.
    ///
    /// O(1) when the armed entry is already at or before `deadline` (the owner re-checks when
    /// it comes due); O(log n) when the deadline moved earlier or nothing was armed.
    /// `None` leaves any armed entry in place: it will come due and find nothing to do.
    pub fn arm(&mut self, slot: &mut TimerSlot, deadline: Option<Time>, key: K) {
        let Some(deadline) = deadline else { return };
        let deadline = deadline.min(Time(TimerSlot::UNARMED.0 - 1));
        match slot.armed() {
            Some(armed) if armed <= deadline => {}
            armed => {
                if let Some(old) = armed {
                    self.set.remove(&(old, key));
                }
                self.set.insert((deadline, key));
                slot.armed = deadline;
            }
        }
    }

    /// Removes the owner's entry, if any (the owner is going away).
    pub fn disarm(&mut self, slot: &mut TimerSlot, key: K) {
        if let Some(old) = slot.take() {
            self.set.remove(&(old, key));
        }
    }

    /// The earliest deadline in the set.
    pub fn next_deadline(&self) -> Option<Time> {
        self.set.first().map(|&(t, _)| t)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    ///
    /// The caller must then clear the owner's slot with [`Timers::fired`], look at the owner's
    /// real deadline, and either act on the timeout or [`Timers::arm`] again.
    pub fn pop_due(&mut self, now: Time) -> Option<(Time, K)> {
        match self.set.first() {
            Some(&(t, _)) if t <= now => self.set.pop_first(),
            _ => None,
        }
    }

    /// Records in the owner's slot that its entry at `at` has been popped. Returns `false` if
    /// the slot does not hold that entry (the key now belongs to a different owner).
    pub fn fired(slot: &mut TimerSlot, at: Time) -> bool {
        if slot.armed() == Some(at) {
            slot.armed = TimerSlot::UNARMED;
            true
        } else {
            false
        }
    }
}

impl<K: Copy + Ord> Default for Timers<K> {
    fn default() -> Self {
        Timers::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moving a deadline later leaves the set untouched (the O(1) activity path).
    #[test]
    fn later_deadline_is_lazy() {
        let mut timers = Timers::new();
        let mut slot = TimerSlot::default();
        timers.arm(&mut slot, Some(Time(100)), 1u32);
        timers.arm(&mut slot, Some(Time(500)), 1u32);
        assert_eq!(timers.next_deadline(), Some(Time(100)));
        assert_eq!(timers.len(), 1);
    }

    /// Moving a deadline earlier replaces the entry; there is never more than one per owner.
    #[test]
    fn earlier_deadline_replaces_entry() {
        let mut timers = Timers::new();
        let mut slot = TimerSlot::default();
        timers.arm(&mut slot, Some(Time(500)), 1u32);
        timers.arm(&mut slot, Some(Time(100)), 1u32);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next_deadline(), Some(Time(100)));
    }

    /// Entries come due in deadline order, and only once due.
    #[test]
    fn pop_due_in_order() {
        let mut timers = Timers::new();
        let mut slots = [TimerSlot::default(); 3];
        timers.arm(&mut slots[0], Some(Time(30)), 0u32);
        timers.arm(&mut slots[1], Some(Time(10)), 1u32);
        timers.arm(&mut slots[2], Some(Time(20)), 2u32);
        assert_eq!(timers.pop_due(Time(5)), None);
        assert_eq!(timers.pop_due(Time(25)), Some((Time(10), 1)));
        assert_eq!(timers.pop_due(Time(25)), Some((Time(20), 2)));
        assert_eq!(timers.pop_due(Time(25)), None);
        assert_eq!(timers.next_deadline(), Some(Time(30)));
    }

    /// A popped stale entry tells the owner to re-arm at its real, later deadline.
    #[test]
    fn stale_entry_rearms() {
        let mut timers = Timers::new();
        let mut slot = TimerSlot::default();
        timers.arm(&mut slot, Some(Time(100)), 7u32);
        // Activity pushed the real deadline to 400; the entry stays at 100.
        let real = Time(400);
        timers.arm(&mut slot, Some(real), 7u32);
        let (at, key) = timers.pop_due(Time(100)).unwrap();
        assert!(Timers::<u32>::fired(&mut slot, at));
        assert!(real > Time(100));
        timers.arm(&mut slot, Some(real), key);
        assert_eq!(timers.next_deadline(), Some(real));
    }

    /// A slot that does not hold the popped entry is not fooled by it.
    #[test]
    fn fired_rejects_foreign_entry() {
        let mut slot = TimerSlot::default();
        assert!(!Timers::<u32>::fired(&mut slot, Time(3)));
    }

    /// Disarming removes the entry so a departed owner is never woken.
    #[test]
    fn disarm_removes() {
        let mut timers = Timers::new();
        let mut slot = TimerSlot::default();
        timers.arm(&mut slot, Some(Time(9)), 1u32);
        timers.disarm(&mut slot, 1u32);
        assert!(timers.is_empty());
        assert_eq!(slot.armed(), None);
    }

    /// A deadline at the end of time is still armed, and still removable: it is moved one
    /// millisecond earlier than the value that means "not armed".
    #[test]
    fn deadline_at_the_end_of_time_is_armed() {
        let mut timers = Timers::new();
        let mut slot = TimerSlot::default();
        timers.arm(&mut slot, Some(Time(u64::MAX)), 1u32);
        assert_eq!(slot.armed(), Some(Time(u64::MAX - 1)));
        assert_eq!(timers.len(), 1);
        timers.disarm(&mut slot, 1u32);
        assert!(timers.is_empty());
    }

    /// Time arithmetic saturates instead of wrapping.
    #[test]
    fn time_arithmetic() {
        assert_eq!(Time(5).after(Duration::from_millis(10)), Time(15));
        assert_eq!(Time(u64::MAX).after(Duration::from_secs(1)), Time(u64::MAX));
        assert_eq!(Time(10).until(Time(4)), Duration::ZERO);
        assert_eq!(Time(4).until(Time(10)), Duration::from_millis(6));
    }
}
