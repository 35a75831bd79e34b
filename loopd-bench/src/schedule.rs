//! The client's clock work, without sockets: how a counted run splits its messages over the
//! connections, when each message of an open-loop run is due, and which wake-ups a worker
//! asks its poller for.
//!
//! Everything here takes the time as an argument instead of reading a clock, so the tests
//! drive it with made-up instants (a fake clock) and never wait.
//!
//! * **Closed loop, counted** (`-n`): [`quota`] gives each connection its share, differing
//!   by at most one message.
//! * **Open loop** (`--rate R` over `C` connections): connection `i` sends at
//!   `t0 + i/R + k·C/R`, so the whole client sends at rate `R` with the connections
//!   interleaved evenly ([`OpenLoop`]). A connection that establishes late joins at its next
//!   slot: slots before it could not have been sent by anyone, and counting them would report
//!   connect time as latency. Send times are rounded up to a [`SCHEDULE_QUANTUM`] grid, so
//!   one wake-up serves every message due within the quantum.
//! * **Wake-ups** ([`Wakes`]): opening a connection (`--ramp`), giving up on a connect,
//!   sending the next open-loop message, declaring a datagram lost. A flow that moves on
//!   leaves its old entries behind; each names what it was for, so a stale one is ignored.
//! * **The alarm** ([`AlarmPlan`]): `epoll_wait` sleeps in whole milliseconds, so precise
//!   wake-ups come from a timer descriptor that is re-armed only for an earlier instant.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Open-loop send times are rounded up to this grid, so that every message due within one
/// quantum goes out after a single wake-up: each wake-up costs a `timerfd_settime` and an
/// `epoll_wait`, which at 50,000 messages/s would otherwise double the client's system calls
/// per message. 50 µs is the kernel's default timer slack, so a finer schedule would not be
/// kept anyway. Latency is measured from the rounded time, the time the schedule really meant.
pub const SCHEDULE_QUANTUM: Duration = Duration::from_micros(50);

/// The run's time marks, shared by every worker.
///
/// Connections open from `t0` (spread by `--ramp`); the measurement covers `from..until`
/// (`from` is after the ramp and the warm-up; a counted run has no `until`). After `until`,
/// flows stop sending and wait a grace period for their last replies, so that every message
/// sent inside the window is either timed or counted as unanswered.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// When connections start opening.
    pub t0: Instant,
    /// When the measurement starts.
    pub from: Instant,
    /// When the measurement ends, for a timed run.
    pub until: Option<Instant>,
}

impl Plan {
    /// Whether a message meant to be sent at `intended` belongs to the measurement: sent
    /// inside the window. Its reply is timed whenever it arrives.
    pub fn measured(&self, intended: Instant) -> bool {
        intended >= self.from && self.may_send(intended)
    }

    /// Whether `at` is inside the measurement window (for bytes, which are counted by time).
    pub fn in_window(&self, at: Instant) -> bool {
        at >= self.from && self.until.is_none_or(|u| at < u)
    }

    /// Whether a message may still be started at `at`.
    pub fn may_send(&self, at: Instant) -> bool {
        self.until.is_none_or(|u| at < u)
    }
}

/// Connection `id`'s share of `total` messages spread over `connections`: the first
/// `total % connections` connections carry one more.
pub fn quota(total: u64, connections: usize, id: u32) -> u64 {
    let c = connections as u64;
    total / c + u64::from(u64::from(id) < total % c)
}

/// When connection `id` opens: at once, or spread at `ramp` connections per second.
pub fn open_at(t0: Instant, ramp: Option<f64>, id: u32) -> Instant {
    match ramp {
        Some(per_sec) => t0 + Duration::from_secs_f64(f64::from(id) / per_sec),
        None => t0,
    }
}

/// The open-loop schedule of a run.
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    t0: Instant,
    rate: f64,
    interval: Duration,
}

impl OpenLoop {
    /// `rate` messages per second in all, over `connections` connections, from `t0`.
    pub fn new(t0: Instant, rate: f64, connections: usize) -> OpenLoop {
        OpenLoop {
            t0,
            rate,
            interval: Duration::from_secs_f64(connections as f64 / rate),
        }
    }

    /// The time between two messages of one connection.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Connection `id`'s first slot at or after `now`.
    pub fn first_slot(&self, id: u32, now: Instant) -> Instant {
        let mut due = self.t0 + Duration::from_secs_f64(f64::from(id) / self.rate);
        if due < now {
            let missed = now.duration_since(due).as_nanos() / self.interval.as_nanos().max(1);
            due += self.interval * u32::try_from(missed).unwrap_or(u32::MAX);
            if due < now {
                due += self.interval;
            }
        }
        due
    }

    /// The slot after `due`.
    pub fn next(&self, due: Instant) -> Instant {
        due + self.interval
    }

    /// What a sender looking at slot `due` at `now` does: send it now, as meant for its
    /// grid time, or wait for that time.
    pub fn slot(&self, due: Instant, now: Instant) -> Slot {
        let at = self.on_grid(due);
        if at > now {
            Slot::Later(at)
        } else {
            Slot::Now(at)
        }
    }

    /// When the message of slot `due` is sent: the next multiple of [`SCHEDULE_QUANTUM`]
    /// after `t0`.
    pub fn on_grid(&self, due: Instant) -> Instant {
        let q = SCHEDULE_QUANTUM.as_nanos();
        let offset = due
            .saturating_duration_since(self.t0)
            .as_nanos()
            .div_ceil(q)
            * q;
        self.t0 + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }
}

/// What to do about an open-loop slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Send it now; it was meant for this instant (its grid time, now or earlier).
    Now(Instant),
    /// Wait until this instant.
    Later(Instant),
}

/// How far behind its schedule the sender was for one message: when it was queued minus
/// when the schedule meant it to go. A sender that keeps up lags by its wake-up latency; one
/// that is starved of CPU (too few client threads for the rate, or a busy machine) lags by
/// the time it was kept from running, and the latency it reports then includes that time.
pub fn send_lag(intended: Instant, sent: Instant) -> Duration {
    sent.saturating_duration_since(intended)
}

/// Something a flow asked to be woken for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wake {
    /// Open the connection (`--ramp`).
    Open,
    /// Give up on connect attempt number `.0`.
    ConnectTimeout(u32),
    /// Send the next open-loop message.
    Send,
    /// Declare the oldest unanswered datagram lost.
    Expire,
}

/// The wake-ups a worker owes its flows, earliest first.
#[derive(Debug, Default)]
pub struct Wakes {
    heap: BinaryHeap<Reverse<(Instant, usize, Wake)>>,
}

impl Wakes {
    /// Asks for `wake` for flow `flow` at `at`.
    pub fn push(&mut self, at: Instant, flow: usize, wake: Wake) {
        self.heap.push(Reverse((at, flow, wake)));
    }

    /// Moves every wake-up due at `now` into `due`, in time order. Taking them all before
    /// handling any keeps a wake-up scheduled *for* `now` by a handler out of this pass: it
    /// belongs to the next turn, after a poll.
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<(Instant, usize, Wake)>) {
        while let Some(&Reverse(w)) = self.heap.peek().filter(|w| w.0 .0 <= now) {
            self.heap.pop();
            due.push(w);
        }
    }

    /// The earliest wake-up asked for.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|&Reverse((at, _, _))| at)
    }
}

/// When a worker's poll must return: at the next wake-up or the end of the measurement,
/// whichever is first, and within `tick` in any case, so the stall guard runs.
pub fn poll_deadline(
    now: Instant,
    next_wake: Option<Instant>,
    until: Option<Instant>,
    tick: Duration,
) -> Instant {
    [next_wake, until, Some(now + tick)]
        .into_iter()
        .flatten()
        .min()
        .expect("one candidate is always there")
}

/// The instant the alarm is set for, and the rule for re-arming it: only for an earlier
/// instant than the one set, or when that one has passed. A later wake-up does not need a
/// system call: the alarm fires first, the worker looks at its wake-ups, and sets the alarm
/// again.
#[derive(Debug, Default)]
pub struct AlarmPlan {
    at: Option<Instant>,
}

impl AlarmPlan {
    /// Whether the alarm must be (re)armed for `next`, as seen at `now`; records it if so.
    pub fn arm(&mut self, next: Instant, now: Instant) -> bool {
        if self.at.is_none_or(|at| next < at || at <= now) {
            self.at = Some(next);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Segment;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Shares add up to the total and differ by at most one.
    #[test]
    fn quotas_split_evenly() {
        for (total, c) in [(10, 3), (3, 10), (1_000_003, 7), (5, 5)] {
            let shares: Vec<u64> = (0..c as u32).map(|i| quota(total, c, i)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{shares:?}");
        }
    }

    /// A counted run's messages follow the global connection ids, so the segments' counts
    /// add up to `-n` exactly, however it divides.
    #[test]
    fn counted_shares_add_up_across_segments() {
        let (total, connections, n) = (1_000_003u64, 37usize, 5u32);
        let sum: u64 = (0..n)
            .flat_map(|i| Segment::new(i, n).unwrap().ids(connections))
            .map(|id| quota(total, connections, id))
            .sum();
        assert_eq!(sum, total);
    }

    /// The segments of an open-loop run send the one-process schedule between them, each
    /// at its share of the rate, spread evenly: over any stretch of time each segment's
    /// slots are its share of the run's, within one per connection.
    #[test]
    fn segments_share_the_open_loop_schedule() {
        let t0 = Instant::now();
        let (rate, connections, n) = (1_000.0, 10usize, 4u32);
        let s = OpenLoop::new(t0, rate, connections);
        let slots = |ids: &mut dyn Iterator<Item = u32>, from: Instant, until: Instant| {
            let mut all = Vec::new();
            for id in ids {
                let mut due = s.first_slot(id, from);
                while due < until {
                    all.push(due);
                    due = s.next(due);
                }
            }
            all.sort();
            all
        };
        let (from, until) = (t0 + ms(3), t0 + ms(1_003));
        let whole = slots(&mut (0..connections as u32), from, until);
        assert_eq!(whole.len(), 1_000);
        let mut union = Vec::new();
        for i in 0..n {
            let seg = Segment::new(i, n).unwrap();
            let mine = slots(&mut seg.ids(connections), from, until);
            let share = seg.share(connections);
            // 3, 3, 2 and 2 of the 10 connections: 300, 300, 200 and 200 messages a second.
            assert_eq!(mine.len(), 100 * share, "segment {seg}");
            // Spread over the period rather than bunched: no gap longer than one
            // connection's interval over the share.
            let widest = mine.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(
                widest <= s.interval() / share as u32 * 2,
                "{seg}: {widest:?}"
            );
            union.extend(mine);
        }
        union.sort();
        assert_eq!(union, whole, "the segments together are the one schedule");
    }

    /// A ramp spreads opening times; without one, everything opens at once.
    #[test]
    fn ramp_spreads_opens() {
        let t0 = Instant::now();
        assert_eq!(open_at(t0, None, 7), t0);
        assert_eq!(open_at(t0, Some(100.0), 7), t0 + ms(70));
    }

    /// Connections interleave evenly, and each sends every C/R.
    #[test]
    fn open_loop_slots() {
        let t0 = Instant::now();
        let s = OpenLoop::new(t0, 1000.0, 4);
        assert_eq!(s.interval(), ms(4));
        assert_eq!(s.first_slot(0, t0), t0);
        assert_eq!(s.first_slot(2, t0), t0 + ms(2));
        assert_eq!(s.next(t0 + ms(2)), t0 + ms(6));
    }

    /// A connection established late joins at its first slot from then on, never earlier.
    #[test]
    fn late_connection_joins_at_its_next_slot() {
        let t0 = Instant::now();
        let s = OpenLoop::new(t0, 1000.0, 4);
        // Connection 1's slots: 1, 5, 9, 13 ms...
        assert_eq!(s.first_slot(1, t0 + ms(10)), t0 + ms(13));
        assert_eq!(s.first_slot(1, t0 + ms(9)), t0 + ms(9));
    }

    /// Send times round up to the 50 µs grid, and exact grid points stay put.
    #[test]
    fn slots_now_or_later() {
        let t0 = Instant::now();
        let s = OpenLoop::new(t0, 1000.0, 1);
        assert_eq!(s.slot(t0 + ms(5), t0 + ms(4)), Slot::Later(t0 + ms(5)));
        assert_eq!(s.slot(t0 + ms(5), t0 + ms(5)), Slot::Now(t0 + ms(5)));
        assert_eq!(s.slot(t0 + ms(5), t0 + ms(9)), Slot::Now(t0 + ms(5)));
    }

    /// A sender on a fake clock, woken every `wake` to send what is due, as a flow does: its
    /// lag is at most one wake period, zero when it wakes at each grid time, and grows with
    /// every stall it suffers.
    #[test]
    fn send_lag_follows_the_sender() {
        let t0 = Instant::now();
        let schedule = OpenLoop::new(t0, 10_000.0, 1); // a slot every 100 µs
        let lags = |wakes: &[Instant]| -> Vec<Duration> {
            let mut due = schedule.first_slot(0, t0);
            let mut lags = Vec::new();
            for &now in wakes {
                while let Slot::Now(intended) = schedule.slot(due, now) {
                    lags.push(send_lag(intended, now));
                    due = schedule.next(due);
                }
            }
            lags
        };
        let us = |n: u64| Duration::from_micros(n);
        // Woken at each slot: no lag at all.
        let prompt: Vec<Instant> = (0..100).map(|k| t0 + us(100 * k)).collect();
        let l = lags(&prompt);
        assert_eq!(l.len(), 100);
        assert!(l.iter().all(|d| d.is_zero()), "{l:?}");
        // Starved: woken only every 10 ms, so each wake sends 100 overdue messages whose lag
        // runs from 0 to 9.9 ms; half of them lag 5 ms or more.
        let starved: Vec<Instant> = (0..10).map(|k| t0 + us(10_000 * k)).collect();
        let mut l = lags(&starved);
        l.sort();
        assert_eq!(l.len(), 901);
        assert!(
            l[l.len() / 2] >= us(4_900),
            "median lag {:?}",
            l[l.len() / 2]
        );
        assert_eq!(*l.last().unwrap(), us(9_900));
    }

    #[test]
    fn grid_rounds_up() {
        let t0 = Instant::now();
        let s = OpenLoop::new(t0, 1000.0, 1);
        let us = Duration::from_micros;
        assert_eq!(s.on_grid(t0 + us(1)), t0 + us(50));
        assert_eq!(s.on_grid(t0 + us(50)), t0 + us(50));
        assert_eq!(s.on_grid(t0 + us(51)), t0 + us(100));
        assert_eq!(s.on_grid(t0), t0);
    }

    /// Wake-ups come out in time order, and one scheduled during a pass waits for the next.
    #[test]
    fn wakes_in_order() {
        let t0 = Instant::now();
        let mut w = Wakes::default();
        w.push(t0 + ms(3), 1, Wake::Send);
        w.push(t0 + ms(1), 2, Wake::Open);
        w.push(t0 + ms(9), 3, Wake::Expire);
        let mut due = Vec::new();
        w.take_due(t0 + ms(5), &mut due);
        assert_eq!(
            due,
            vec![(t0 + ms(1), 2, Wake::Open), (t0 + ms(3), 1, Wake::Send)]
        );
        assert_eq!(w.next(), Some(t0 + ms(9)));
    }

    /// The poll returns at the next wake-up, the end of the window, or the tick.
    #[test]
    fn poll_deadlines() {
        let t0 = Instant::now();
        let tick = ms(100);
        assert_eq!(poll_deadline(t0, None, None, tick), t0 + tick);
        assert_eq!(
            poll_deadline(t0, Some(t0 + ms(5)), Some(t0 + ms(2)), tick),
            t0 + ms(2)
        );
        assert_eq!(poll_deadline(t0, Some(t0 + ms(5)), None, tick), t0 + ms(5));
    }

    /// Messages sent in the window are measured; bytes count by when they move.
    #[test]
    fn plan_window() {
        let t0 = Instant::now();
        let p = Plan {
            t0,
            from: t0 + ms(10),
            until: Some(t0 + ms(20)),
        };
        assert!(!p.measured(t0 + ms(5)), "warm-up");
        assert!(p.measured(t0 + ms(15)));
        assert!(!p.measured(t0 + ms(20)), "after the window");
        assert!(p.in_window(t0 + ms(10)) && !p.in_window(t0 + ms(20)));
        assert!(p.may_send(t0 + ms(19)) && !p.may_send(t0 + ms(21)));
        let counted = Plan { until: None, ..p };
        assert!(counted.measured(t0 + ms(1_000_000)));
    }

    /// The alarm is re-armed only for an earlier instant or after it fired.
    #[test]
    fn alarm_rearms_only_when_earlier() {
        let t0 = Instant::now();
        let mut a = AlarmPlan::default();
        assert!(a.arm(t0 + ms(10), t0));
        assert!(
            !a.arm(t0 + ms(20), t0),
            "a later wake-up needs no system call"
        );
        assert!(a.arm(t0 + ms(5), t0));
        assert!(
            a.arm(t0 + ms(20), t0 + ms(6)),
            "the alarm set for 5 ms has fired"
        );
    }
}
