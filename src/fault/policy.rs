//! One connection's faults: what was chosen at accept, and what happens to each reply.
//!
//! The connection consults a [`ConnFaults`] at its decision points (see the table in
//! [`crate::fault`]); all of the schedule of its held output is the [`Hold`]'s.

use std::sync::Arc;
use std::time::Duration;

use super::hold::{not_before, Hold, Pace};
use super::rng::Rng;
use super::spec::{Fault, How, Kind, Per, Value};
use super::{since_start, Plan, Switch};
use crate::buffer::Buffer;
use crate::service::Asked;
use crate::timer::Time;

/// What accept decides for a new connection of a faulted listener.
pub(crate) enum Accept {
    /// Reset it at once (`fail-first` on a raw stream).
    Reset,
    /// Serve it, with these faults.
    Serve(Box<ConnFaults>),
}

/// What a fault wants when one of its deadlines comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// `reset-after:DUR` ran out: RST now.
    Reset,
    /// `idle-close`: idle long enough; FIN.
    IdleClose,
    /// Held output may go, or a held FIN: run a turn.
    Work,
}

/// What a reply became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Reply {
    /// Bytes of it kept (the rest was cut or dropped).
    pub(crate) kept: usize,
    /// The connection ends after it: FIN once flushed.
    pub(crate) finish: bool,
    /// The connection ends now, with RST.
    pub(crate) reset: bool,
}

/// The faults of one connection. Kept in the connection's cold part for its whole life.
#[derive(Debug)]
pub(crate) struct ConnFaults {
    /// The listener's switch, where injections are counted; `None` for a connection whose
    /// service asked for a hold or a reset itself (nothing injected, nothing counted).
    switch: Option<Arc<Switch>>,
    plan: Arc<Plan>,
    rng: Rng,
    /// Which of the plan's faults were chosen at accept (bit `i` for fault `i`).
    chosen: u32,
    /// The schedule of held output.
    pub(crate) hold: Hold,
    /// When more held output may leave (worked out after every flush).
    next_release: Option<Time>,
    /// Replies produced so far.
    replies: u64,
    /// `reset-after:DUR`: when.
    reset_at: Option<Time>,
    /// `idle-close`: after how long.
    idle_close: Option<Duration>,
    /// `slow-close`: how long our FIN waits after the peer's, and when it may go once known.
    slow_close: Option<Duration>,
    fin_at: Option<Time>,
    /// The kind whose ending the hold carries (counted when it happens).
    ending: Option<Kind>,
    /// Accept and read, never answer: the connection's service is replaced.
    pub(crate) blackhole: bool,
}

impl ConnFaults {
    /// Decides the per-connection faults of a connection accepted at `now`, with a
    /// generator seeded from its loop's.
    pub(crate) fn accept(switch: &Arc<Switch>, plan: &Arc<Plan>, seed: u64, now: Time) -> Accept {
        let mut rng = Rng::new(seed);
        let mut chosen = 0u32;
        let mut pace = Pace::Free;
        let mut blackhole = false;
        let (mut reset_at, mut idle_close, mut slow_close) = (None, None, None);
        let mut ending = None;
        for (i, f) in plan.faults.iter().enumerate() {
            if f.per != Per::Conn || !f.in_window(since_start(now)) || !rng.chance(f.ppm) {
                continue;
            }
            chosen |= 1 << i;
            match (f.kind, f.value) {
                // Counting is the guard's side effect: every connection counts once.
                (Kind::FailFirst, Value::Count(n)) if !switch.framed() && plan.fails_first(n) => {
                    switch.note(Kind::FailFirst);
                    return Accept::Reset;
                }
                (Kind::Blackhole, _) => blackhole = true,
                (Kind::Bandwidth, Value::Bytes(rate)) => pace = Pace::Rate(rate),
                (Kind::Slice, Value::Bytes(size)) => pace = Pace::Slice { size, gap: f.gap },
                (Kind::ResetAfter, Value::Duration(d)) => reset_at = Some(not_before(now, d)),
                (Kind::IdleClose, Value::Duration(d)) => idle_close = Some(d),
                (Kind::SlowClose, Value::Duration(d)) => slow_close = Some(d),
                (Kind::CloseAfter, Value::Bytes(n)) => ending = Some((n, How::Fin, f.kind)),
                (Kind::ResetAfter, Value::Bytes(n)) => ending = Some((n, How::Rst, f.kind)),
                _ => {}
            }
        }
        if blackhole {
            switch.note(Kind::Blackhole);
        }
        for kind in [Kind::Bandwidth, Kind::Slice] {
            if plan
                .faults
                .iter()
                .enumerate()
                .any(|(i, f)| f.kind == kind && chosen & (1 << i) != 0)
            {
                // Counted once per connection it paces.
                switch.note(kind);
            }
        }
        let mut hold = Hold::new(pace, now);
        if let Some((n, how, _)) = ending {
            hold.end_at(n, how);
        }
        Accept::Serve(Box::new(ConnFaults {
            switch: Some(Arc::clone(switch)),
            plan: Arc::clone(plan),
            rng,
            chosen,
            hold,
            next_release: None,
            replies: 0,
            reset_at,
            idle_close,
            slow_close,
            fin_at: None,
            ending: ending.map(|(_, _, kind)| kind),
            blackhole,
        }))
    }

    /// The schedule of a connection whose service asks for holds or a reset itself
    /// ([`Output::hold`](crate::service::Output::hold)), with no faults of its listener.
    pub(crate) fn for_service(now: Time) -> ConnFaults {
        ConnFaults {
            switch: None,
            plan: Arc::new(Plan::default()),
            rng: Rng::new(0),
            chosen: 0,
            hold: Hold::new(Pace::Free, now),
            next_release: None,
            replies: 0,
            reset_at: None,
            idle_close: None,
            slow_close: None,
            fin_at: None,
            ending: None,
            blackhole: false,
        }
    }

    /// Counts one injection of `kind` at the listener's switch.
    fn count(&self, kind: Kind) {
        if let Some(switch) = &self.switch {
            switch.note(kind);
        }
    }

    /// Whether fault `i` of the plan acts on this message: chosen at accept, or chosen now.
    fn applies(&mut self, i: usize, f: &Fault, now: Time) -> bool {
        match f.per {
            Per::Conn => self.chosen & (1 << i) != 0,
            Per::Msg => f.in_window(since_start(now)) && self.rng.chance(f.ppm),
        }
    }

    /// A reply of `len` bytes was just appended to `output` (it starts at `start`): drops,
    /// corrupts, cuts or holds it, and says whether the connection ends after it.
    pub(crate) fn on_reply(
        &mut self,
        output: &mut Buffer,
        start: usize,
        len: usize,
        now: Time,
        asked: Asked,
    ) -> Reply {
        let mut reply = Reply {
            kept: len,
            ..Reply::default()
        };
        if len == 0 {
            // Nothing to hold; a reset asked with no reply comes once what waits is sent.
            if asked.reset {
                self.hold.end_at(self.hold.produced(), How::Rst);
            }
            return reply;
        }
        let plan = Arc::clone(&self.plan);
        // What the service asked for itself comes first; faults may hold longer.
        let mut hold_until: Option<Time> = asked.hold.map(|d| not_before(now, d));
        let mut end_after: Option<(How, Kind)> = None;
        for (i, f) in plan.faults.iter().enumerate() {
            if !matches!(
                f.kind,
                Kind::FailFirst
                    | Kind::CloseBeforeReply
                    | Kind::Blackhole
                    | Kind::Corrupt
                    | Kind::Delay
                    | Kind::FirstByteDelay
                    | Kind::CloseAfter
                    | Kind::ResetAfter
            ) || !self.applies(i, f, now)
            {
                continue;
            }
            match (f.kind, f.value) {
                // Counting is the guard's side effect: every request counts once.
                (Kind::FailFirst, Value::Count(n))
                    if self.switch.as_ref().is_some_and(|s| s.framed()) && plan.fails_first(n) =>
                {
                    self.count(Kind::FailFirst);
                    return self.drop_reply(output, start, f.how);
                }
                (Kind::CloseBeforeReply, _) => {
                    self.count(Kind::CloseBeforeReply);
                    return self.drop_reply(output, start, f.how);
                }
                (Kind::Blackhole, _) if f.per == Per::Msg => {
                    // This reply is never sent; the connection goes on.
                    self.count(Kind::Blackhole);
                    output.truncate(start);
                    reply.kept = 0;
                    return reply;
                }
                (Kind::Corrupt, _) => {
                    let at = start + self.rng.below(len as u64) as usize;
                    output.as_mut_slice()[at] ^= 0xFF;
                    self.count(Kind::Corrupt);
                }
                (Kind::Delay, Value::Duration(d)) => {
                    let d = self.jittered(d, f.jitter);
                    hold_until = hold_until.max(Some(not_before(now, d)));
                    self.count(Kind::Delay);
                }
                (Kind::FirstByteDelay, Value::Duration(d)) if self.replies == 0 => {
                    hold_until = hold_until.max(Some(not_before(now, d)));
                    self.count(Kind::FirstByteDelay);
                }
                (Kind::CloseAfter | Kind::ResetAfter, Value::Count(n)) if self.replies + 1 == n => {
                    let how = if f.kind == Kind::CloseAfter {
                        How::Fin
                    } else {
                        How::Rst
                    };
                    end_after = Some((how, f.kind));
                }
                _ => {}
            }
        }
        let kept = self.hold.add(len as u64, hold_until) as usize;
        if kept < len {
            output.truncate(start + kept);
        }
        reply.kept = kept;
        self.replies += 1;
        if let Some((how, kind)) = end_after {
            self.hold.end_at(self.hold.produced(), how);
            self.ending = Some(kind);
        }
        if asked.reset {
            self.hold.end_at(self.hold.produced(), How::Rst);
        }
        if self.hold.ending_reached() == Some(How::Fin) {
            // Every byte before a FIN ending is produced: the connection finishes, flushing
            // them first (its usual graceful close).
            reply.finish = true;
            if let Some(kind) = self.ending.take() {
                self.count(kind);
            }
        }
        self.next_release = self.hold.next_release(now);
        reply
    }

    /// A reply that is never sent, and the connection's end: FIN or RST.
    fn drop_reply(&mut self, output: &mut Buffer, start: usize, how: How) -> Reply {
        output.truncate(start);
        Reply {
            kept: 0,
            finish: how == How::Fin,
            reset: how == How::Rst,
        }
    }

    /// `d` moved by up to `jitter` either way, never below zero.
    fn jittered(&mut self, d: Duration, jitter: Duration) -> Duration {
        let j = jitter.as_millis() as u64;
        if j == 0 {
            return d;
        }
        let offset = self.rng.below(2 * j + 1);
        let ms = (d.as_millis() as u64 + offset).saturating_sub(j);
        Duration::from_millis(ms)
    }

    /// After a flush at `now`: works out when held output may next leave, and whether an RST
    /// ending is due (counted here, when it happens).
    pub(crate) fn after_flush(&mut self, now: Time) -> Option<How> {
        self.next_release = self.hold.next_release(now);
        let due = self.hold.ending_due().filter(|&how| how == How::Rst);
        if due.is_some() {
            if let Some(kind) = self.ending.take() {
                self.count(kind);
            }
        }
        due
    }

    /// Whether output waits for a time or a pace (rather than for the socket).
    pub(crate) fn holding(&self) -> bool {
        self.next_release.is_some()
    }

    /// The next time a fault needs the connection, given its last activity; `open` while
    /// both directions are open and nothing waits (idle-close applies only then: with output
    /// waiting its deadline would come due and find nothing to do, again and again).
    pub(crate) fn deadline(&self, last_active: Time, open: bool) -> Option<Time> {
        let idle = self
            .idle_close
            .filter(|_| open)
            .map(|d| not_before(last_active, d));
        [self.reset_at, idle, self.next_release, self.fin_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// What is due at `now`.
    pub(crate) fn due(
        &self,
        now: Time,
        last_active: Time,
        open: bool,
        waiting: bool,
    ) -> Option<Due> {
        if self.reset_at.is_some_and(|t| now >= t) {
            return Some(Due::Reset);
        }
        let idle = self.idle_close.filter(|_| open && !waiting);
        if idle.is_some_and(|d| now >= not_before(last_active, d)) {
            return Some(Due::IdleClose);
        }
        let release = [self.next_release, self.fin_at].into_iter().flatten().min();
        release.filter(|&t| now >= t).map(|_| Due::Work)
    }

    /// Counts the fault that fired from a deadline.
    pub(crate) fn note(&self, kind: Kind) {
        self.count(kind);
    }

    /// A deadline came due: a held FIN whose time has come is released for good, so that
    /// its deadline, once past, is never armed again (the FIN may still wait for output to
    /// flush, and a past deadline would come due at once, again and again).
    pub(crate) fn settle(&mut self, now: Time) {
        if self.fin_at.is_some_and(|t| now >= t) {
            self.slow_close = None;
            self.fin_at = None;
        }
    }

    /// `slow-close`: whether our FIN, due now that the peer finished, must wait; the first
    /// call starts the wait.
    pub(crate) fn hold_fin(&mut self, now: Time) -> bool {
        let Some(d) = self.slow_close else {
            return false;
        };
        let at = match self.fin_at {
            Some(at) => at,
            None => {
                self.count(Kind::SlowClose);
                *self.fin_at.insert(not_before(now, d))
            }
        };
        if now >= at {
            self.slow_close = None;
            self.fin_at = None;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection of a listener with `faults`, accepted at time 0, with its switch.
    fn conn(faults: &str, framed: bool) -> (Box<ConnFaults>, Arc<Switch>) {
        let spec: crate::fault::FaultSpec = format!("echo={faults}").parse().unwrap();
        let switch = Arc::new(Switch::new("echo@test".into(), false, framed, spec.faults).unwrap());
        let plan = switch.plan();
        match ConnFaults::accept(&switch, &plan, 7, Time(0)) {
            Accept::Serve(f) => (f, switch),
            Accept::Reset => panic!("reset at accept"),
        }
    }

    fn reply(f: &mut ConnFaults, out: &mut Buffer, bytes: &[u8], now: u64) -> Reply {
        let start = out.len();
        out.extend(bytes);
        f.on_reply(out, start, bytes.len(), Time(now), Asked::default())
    }

    /// close-after:N finishes after the Nth reply and counts once; earlier replies go free.
    #[test]
    fn close_after_counts_replies() {
        let (mut f, switch) = conn("close-after:2", false);
        let mut out = Buffer::new();
        assert!(!reply(&mut f, &mut out, b"one", 0).finish);
        assert!(reply(&mut f, &mut out, b"two", 0).finish);
        assert_eq!(switch.injected(Kind::CloseAfter), 1);
        assert_eq!(out.as_slice(), b"onetwo");
    }

    /// reset-after:SIZE cuts the reply at the size, and the RST is due once it is sent.
    #[test]
    fn reset_after_size_cuts_and_comes_due() {
        let (mut f, switch) = conn("reset-after:4B", false);
        let mut out = Buffer::new();
        let r = reply(&mut f, &mut out, b"abcdef", 0);
        assert_eq!((r.kept, out.as_slice()), (4, &b"abcd"[..]));
        assert_eq!(f.after_flush(Time(0)), None, "nothing sent yet");
        assert_eq!(f.hold.sendable(Time(0)), 4);
        f.hold.sent(4, Time(0));
        assert_eq!(f.after_flush(Time(0)), Some(How::Rst));
        assert_eq!(switch.injected(Kind::ResetAfter), 1);
    }

    /// close-before-reply drops the reply and asks for the close, by how: FIN or RST.
    #[test]
    fn close_before_reply_drops_the_reply() {
        for (how, fin) in [("", true), (",how:rst", false)] {
            let (mut f, _) = conn(&format!("close-before-reply{how}"), false);
            let mut out = Buffer::new();
            out.extend(b"earlier");
            let r = reply(&mut f, &mut out, b"dropped", 0);
            assert_eq!((r.kept, r.finish, r.reset), (0, fin, !fin));
            assert_eq!(out.as_slice(), b"earlier", "only the reply is dropped");
        }
    }

    /// A delay holds each reply from the time it is produced, never less.
    #[test]
    fn delay_holds_from_production() {
        let (mut f, switch) = conn("delay:10ms", false);
        let mut out = Buffer::new();
        reply(&mut f, &mut out, b"x", 5);
        assert_eq!(f.hold.sendable(Time(15)), 0);
        assert_eq!(f.deadline(Time(5), false), Some(Time(16)));
        assert_eq!(f.hold.sendable(Time(16)), 1);
        assert_eq!(switch.injected(Kind::Delay), 1);
    }

    /// fail-first on a framed service fails that many requests, then none.
    #[test]
    fn fail_first_counts_requests_of_a_framed_service() {
        let (mut f, switch) = conn("fail-first:1", true);
        let mut out = Buffer::new();
        assert!(reply(&mut f, &mut out, b"PONG\r\n", 0).reset);
        assert!(!reply(&mut f, &mut out, b"PONG\r\n", 0).reset);
        assert_eq!(switch.injected(Kind::FailFirst), 1);
    }

    /// A service's own hold and reset take the same path with no listener faults, and
    /// count nothing.
    #[test]
    fn a_service_asks_for_a_hold_and_a_reset() {
        let mut f = ConnFaults::for_service(Time(0));
        let mut out = Buffer::new();
        out.extend(b"late");
        let asked = Asked {
            hold: Some(Duration::from_millis(20)),
            reset: true,
        };
        f.on_reply(&mut out, 0, 4, Time(0), asked);
        assert_eq!(f.hold.sendable(Time(20)), 0);
        assert_eq!(f.hold.sendable(Time(21)), 4);
        f.hold.sent(4, Time(21));
        assert_eq!(f.after_flush(Time(21)), Some(How::Rst));
    }
}
