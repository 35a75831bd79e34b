//! Output held back on purpose: when each byte of a connection's output may leave, and when
//! the connection ends.
//!
//! A [`Hold`] sits beside a connection's output buffer and counts in stream offsets: every
//! byte a service produced is `add`ed (with the time before which it may not be sent, if
//! any), and every byte the socket took is `sent`. From those it answers the two questions
//! the connection asks at its flush: how many bytes may go now ([`Hold::sendable`]), and when
//! more may ([`Hold::next_release`], a deadline in the loop's timer set — nothing sleeps).
//! It also carries an ending: FIN or RST once the stream reaches an offset, with the bytes
//! past it cut ([`Hold::end_at`]).
//!
//! The held bytes themselves stay in the connection's output buffer, so they count against
//! the high watermark like any other pending output: while held output is at the watermark
//! the connection stops reading and a streaming service stops producing. A delayed or paced
//! reply therefore costs no more memory than a slow reader's. The schedule is bounded too:
//! replies released at the same millisecond share one entry, so it holds at most one entry
//! per millisecond of the longest hold.
//!
//! Nothing here knows about faults: delay, first-byte-delay, bandwidth, slice, close-after and
//! reset-after are a few lines each on top of it (`fault::policy`), and a service that wants
//! its replies held or its connection ended (an HTTP service's `delay=` or `close=`) can use
//! the same machinery.

use std::collections::VecDeque;
use std::time::Duration;

use super::spec::How;
use crate::timer::Time;

/// How output is paced once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// No pacing: released bytes go as fast as the socket takes them.
    Free,
    /// At most this many bytes a second (a token bucket with a burst of 20 ms' worth).
    Rate(u64),
    /// Writes of at most `size` bytes, `gap` apart.
    Slice {
        /// Bytes per write.
        size: u64,
        /// Pause between two writes.
        gap: Duration,
    },
}

/// How much a paced connection may send at once after being idle: 20 ms of its rate. Enough
/// that a timer tick (1 ms resolution) releases a useful amount, small enough that the rate
/// holds over any window of a tenth of a second.
const BURST_MS: u64 = 20;

/// The schedule of one connection's held output. See the [module documentation](self).
#[derive(Debug)]
pub struct Hold {
    /// Offset of the next byte to be produced.
    produced: u64,
    /// Offset of the next byte to be sent.
    sent: u64,
    /// Bytes before this offset are held by no release time.
    free_end: u64,
    /// `(end, not_before)`: the bytes up to `end` may not leave before `not_before`. Ends and
    /// times both increase.
    releases: VecDeque<(u64, Time)>,
    pace: Pace,
    /// Bytes the pace allows now, and when that was last worked out.
    credit: u64,
    credit_at: Time,
    /// The stream ends at this offset, this way; bytes past it are never produced.
    ending: Option<(u64, How)>,
}

impl Hold {
    /// Nothing held, paced as `pace`, from `now`.
    pub fn new(pace: Pace, now: Time) -> Hold {
        let credit = match pace {
            Pace::Free => 0,
            Pace::Rate(rate) => burst(rate),
            Pace::Slice { size, .. } => size,
        };
        Hold {
            produced: 0,
            sent: 0,
            free_end: 0,
            releases: VecDeque::new(),
            pace,
            credit,
            credit_at: now,
            ending: None,
        }
    }

    /// Bytes produced and not yet sent: what the connection's output buffer holds.
    pub fn waiting(&self) -> u64 {
        self.produced - self.sent
    }

    /// Bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Records `len` more bytes of output that may not leave before `not_before`, and returns
    /// how many to keep: fewer if the stream ends before them ([`Hold::end_at`]).
    pub fn add(&mut self, len: u64, not_before: Option<Time>) -> u64 {
        let len = match self.ending {
            Some((end, _)) => len.min(end.saturating_sub(self.produced)),
            None => len,
        };
        if len == 0 {
            return 0;
        }
        self.produced += len;
        match (not_before, self.releases.back_mut()) {
            // Bytes leave in order: a later reply can never leave before an earlier one.
            (Some(t), Some(last)) if t <= last.1 => last.0 = self.produced,
            (Some(t), _) => self.releases.push_back((self.produced, t)),
            (None, Some(last)) => last.0 = self.produced,
            (None, None) => self.free_end = self.produced,
        }
        len
    }

    /// Ends the stream `how` once it reaches `offset`: nothing past it is kept, and
    /// [`Hold::ending_due`] says so once every byte before it is sent. The earliest ending
    /// asked for wins.
    pub fn end_at(&mut self, offset: u64, how: How) {
        if self.ending.is_none_or(|(end, _)| offset < end) {
            self.ending = Some((offset.max(self.sent), how));
        }
    }

    /// Whether an ending has been set.
    pub fn ends(&self) -> bool {
        self.ending.is_some()
    }

    /// Whether every byte before the ending has been produced (nothing more will be).
    pub fn ending_reached(&self) -> Option<How> {
        self.ending
            .filter(|&(end, _)| self.produced >= end)
            .map(|(_, how)| how)
    }

    /// The ending, once every byte before it has been sent.
    pub fn ending_due(&self) -> Option<How> {
        self.ending
            .filter(|&(end, _)| self.sent >= end)
            .map(|(_, how)| how)
    }

    /// The bytes released by time (not counting the pace).
    fn released(&self, now: Time) -> u64 {
        let mut end = self.free_end;
        for &(until, at) in &self.releases {
            if at > now {
                return end;
            }
            end = until;
        }
        if self.releases.is_empty() {
            self.produced
        } else {
            end
        }
    }

    fn credit_now(&self, now: Time) -> u64 {
        match self.pace {
            Pace::Free => u64::MAX,
            Pace::Rate(rate) => {
                let ms = now.0.saturating_sub(self.credit_at.0);
                let earned = ms.saturating_mul(rate) / 1000;
                self.credit.saturating_add(earned).min(burst(rate))
            }
            Pace::Slice { .. } if now < self.credit_at => 0,
            Pace::Slice { .. } => self.credit,
        }
    }

    /// How many bytes may be sent now.
    pub fn sendable(&mut self, now: Time) -> u64 {
        while let Some(&(end, at)) = self.releases.front() {
            if at > now {
                break;
            }
            self.free_end = end;
            self.releases.pop_front();
        }
        let released = self.released(now).saturating_sub(self.sent);
        released.min(self.credit_now(now))
    }

    /// Records that the socket took `n` bytes at `now`.
    pub fn sent(&mut self, n: u64, now: Time) {
        self.sent += n;
        match self.pace {
            Pace::Free => {}
            Pace::Rate(_) => {
                self.credit = self.credit_now(now).saturating_sub(n);
                self.credit_at = now;
            }
            Pace::Slice { size, gap } => {
                self.credit = self.credit.saturating_sub(n);
                if self.credit == 0 {
                    // The slice is out: the next one leaves after the gap.
                    self.credit = size;
                    self.credit_at = now.after(gap);
                }
            }
        }
    }

    /// When more held bytes may be sent, if some wait for a time rather than for the socket.
    pub fn next_release(&self, now: Time) -> Option<Time> {
        if self.waiting() == 0 {
            return None;
        }
        let released = self.released(now);
        if released <= self.sent {
            return self.releases.iter().map(|&(_, at)| at).find(|&at| at > now);
        }
        match self.pace {
            Pace::Free => None,
            Pace::Rate(rate) if self.credit_now(now) == 0 => {
                let need = (released - self.sent).min(burst(rate));
                let ms = (need.saturating_mul(1000)).div_ceil(rate.max(1)).max(1);
                Some(Time(now.0.saturating_add(ms)))
            }
            Pace::Slice { .. } if now < self.credit_at => Some(self.credit_at),
            _ => None,
        }
    }
}

/// The first instant at which `d` has surely passed since `now`. The loop's clock counts
/// whole milliseconds rounded up, so `now` may be up to a millisecond later than the real
/// instant it stands for, and so may the time the deadline is checked against: one more
/// millisecond makes sure a hold never ends early.
pub fn not_before(now: Time, d: Duration) -> Time {
    now.after(d).after(Duration::from_millis(1))
}

fn burst(rate: u64) -> u64 {
    (rate.saturating_mul(BURST_MS) / 1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held reply leaves at its time, not before; replies stay in order.
    #[test]
    fn delayed_replies_leave_in_order() {
        let mut h = Hold::new(Pace::Free, Time(0));
        h.add(10, Some(Time(100)));
        h.add(5, None); // behind the held one
        assert_eq!(h.sendable(Time(99)), 0);
        assert_eq!(h.next_release(Time(99)), Some(Time(100)));
        assert_eq!(h.sendable(Time(100)), 15);
        h.sent(15, Time(100));
        assert_eq!(h.waiting(), 0);
        assert_eq!(h.next_release(Time(100)), None);
    }

    /// Replies released at the same millisecond share one schedule entry.
    #[test]
    fn schedule_is_bounded_by_milliseconds() {
        let mut h = Hold::new(Pace::Free, Time(0));
        for _ in 0..10_000 {
            h.add(1, Some(Time(50)));
        }
        assert_eq!(h.releases.len(), 1);
        // A shorter hold after a longer one still waits for it.
        h.add(1, Some(Time(10)));
        assert_eq!(h.releases.len(), 1);
        assert_eq!(h.sendable(Time(49)), 0);
    }

    /// A rate lets about its bytes per second through, in ticks.
    #[test]
    fn rate_paces() {
        let mut h = Hold::new(Pace::Rate(1000), Time(0));
        h.add(100, None);
        let mut now = Time(0);
        let mut ticks = 0;
        while h.waiting() > 0 {
            let n = h.sendable(now);
            h.sent(n, now);
            if h.waiting() > 0 {
                now = h
                    .next_release(now)
                    .expect("waiting bytes have a release time");
                ticks += 1;
            }
        }
        // 20 bytes of burst at once, 80 more at 1 byte/ms.
        assert!(
            (75..=85).contains(&now.0),
            "done at {now:?} after {ticks} ticks"
        );
    }

    /// Slices are written one at a time, a gap apart.
    #[test]
    fn slices_with_gaps() {
        let gap = Duration::from_millis(10);
        let mut h = Hold::new(Pace::Slice { size: 4, gap }, Time(0));
        h.add(10, None);
        assert_eq!(h.sendable(Time(0)), 4);
        h.sent(4, Time(0));
        assert_eq!(h.sendable(Time(5)), 0);
        assert_eq!(h.next_release(Time(5)), Some(Time(10)));
        assert_eq!(h.sendable(Time(10)), 4);
        h.sent(3, Time(10)); // a short write: the rest of the slice may follow at once
        assert_eq!(h.sendable(Time(10)), 1);
    }

    /// An ending cuts what comes after it, and is due once the bytes before it are sent.
    #[test]
    fn ending_cuts_and_comes_due() {
        let mut h = Hold::new(Pace::Free, Time(0));
        h.end_at(8, How::Rst);
        assert_eq!(h.add(5, None), 5);
        assert_eq!(h.add(5, None), 3);
        assert_eq!(h.add(5, None), 0);
        assert_eq!(h.ending_due(), None);
        h.sent(8, Time(0));
        assert_eq!(h.ending_due(), Some(How::Rst));
    }
}
