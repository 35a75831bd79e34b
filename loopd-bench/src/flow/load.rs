//! The load policies: what a flow queues, and when its part is done.
//!
//! | load | queued | done when |
//! | --- | --- | --- |
//! | round trip (echo, udp) | up to `--pipeline` in flight; in open loop at their slots | the measurement ended and every reply is in |
//! | upload (send) | enough whole messages to keep a large write going | the same, with every byte written |
//! | download (recv) | nothing | the measurement ended |
//! | churn (connect) | one per connection | one round trip, then close and open the next |
//! | handshake | nothing | the server's first word after the TLS handshake (bytes, a session ticket or its close), then close and open the next |
//!
//! A counted run (`-n`) gives each flow its share of the measured messages; messages sent
//! before the measurement (the warm-up) are free. What counts as established differs too:
//! churn measures connects, so only those made inside the window count.

use std::time::Instant;

use super::state::State;
use super::wire::Wire;
use super::{Ctx, Failure, Flow, Pending};
use crate::config::{BenchConfig, Load};
use crate::payload::Dir;
use crate::record::histogram::nanos;
use crate::schedule::{send_lag, Plan, Slot, Wake};

/// Upload: bytes of whole messages kept queued ahead of the writer, so small messages still
/// go out in large writes (a stream has no boundaries to keep).
const UPLOAD_AHEAD: u64 = 256 * 1024;

impl<W: Wire> Flow<W> {
    /// Queues what the load policy allows now.
    pub(super) fn queue_due(
        &mut self,
        cx: &mut Ctx<W::Socket>,
        now: Instant,
    ) -> Result<(), Failure> {
        let Some(conn) = self.conn() else {
            return Ok(());
        };
        if conn.backend.asking() {
            // Nothing is sent before the answer: it must be the first line that comes back.
            return Ok(());
        }
        match cx.cfg.mode.load() {
            Load::RoundTrip => self.round_trips(cx, now, cx.cfg.pipeline),
            // One round trip per connection.
            Load::Churn if conn.sent == 0 => self.round_trips(cx, now, 1),
            Load::Churn | Load::Download | Load::Handshake => Ok(()),
            Load::Upload => {
                self.upload(cx, now);
                Ok(())
            }
        }
    }

    /// Round trips: queue every message the load model allows now, up to `pipeline` in
    /// flight. In open loop each goes at its slot (or as soon as it can, timed from the
    /// slot); a slot still ahead asks for a wake-up.
    fn round_trips(
        &mut self,
        cx: &mut Ctx<W::Socket>,
        now: Instant,
        pipeline: usize,
    ) -> Result<(), Failure> {
        loop {
            let Some(conn) = self.conn() else {
                return Ok(());
            };
            if conn.inflight.len() >= pipeline || conn.blocked {
                return Ok(());
            }
            let intended = match (self.next_due, cx.open_loop) {
                (Some(due), Some(schedule)) => match schedule.slot(due, now) {
                    Slot::Later(at) => {
                        self.arm_send(cx, at);
                        return Ok(());
                    }
                    Slot::Now(intended) => intended,
                },
                _ => now,
            };
            let plan = cx.record.plan;
            if !plan.may_send(intended) || !take_quota(&mut self.quota, &plan, intended) {
                return Ok(());
            }
            // The state and the quota are borrowed apart: the quota may be given back.
            let State::Established(conn) = &mut self.state else {
                return Ok(());
            };
            let p = Pending {
                seq: conn.next_seq,
                intended,
                sent: now,
                answered: false,
            };
            if !W::send(conn, cx, p)? {
                // The message goes when the socket has room; its quota is not spent.
                return_quota(&mut self.quota, &plan, intended);
                return Ok(());
            }
            conn.next_seq += 1;
            conn.sent += 1;
            if let (Some(due), Some(schedule)) = (self.next_due, cx.open_loop) {
                self.next_due = Some(schedule.next(due));
                if plan.measured(intended) {
                    let lag = nanos(send_lag(intended, now));
                    cx.record.tally.send_lag.saturating_record(lag);
                }
            }
        }
    }

    /// Upload: keep enough whole messages queued for large writes; their bytes are
    /// generated as they are written.
    fn upload(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let len = cx.codec.len(Dir::Request) as u64;
        let plan = cx.record.plan;
        let State::Established(conn) = &mut self.state else {
            return;
        };
        while W::queued(conn) * len < UPLOAD_AHEAD {
            if !plan.may_send(now) || !take_quota(&mut self.quota, &plan, now) {
                break;
            }
            conn.next_seq += 1;
            conn.sent += 1;
        }
    }

    /// Whether the writer should go on after writing everything queued: an upload that may
    /// queue more, since no writable edge will come to ask.
    pub(super) fn keeps_writing(&self, cx: &Ctx<W::Socket>, now: Instant) -> bool {
        cx.cfg.mode.load() == Load::Upload && cx.record.plan.may_send(now) && self.quota != Some(0)
    }

    /// After a pump: finish once the policy's part is done and nothing is outstanding; in
    /// churn, close each connection after its round trip and open the next; in handshake
    /// mode, once the server has said its first word.
    pub(super) fn when_sent(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let Some(conn) = self.conn() else {
            return;
        };
        let idle = conn.idle();
        let done_sending = !cx.record.plan.may_send(now) || self.quota == Some(0);
        let done_with_this_one = idle
            && match cx.cfg.mode.load() {
                Load::Churn => conn.sent > 0,
                Load::Handshake => W::heard(conn),
                _ => false,
            };
        if done_with_this_one {
            self.next_connection(cx, now);
        } else if idle && done_sending {
            self.finish(cx, now);
        }
    }

    /// Churn and handshakes: closes this connection and, while the run sends, opens the
    /// next. A connection still saying goodbye (`close_notify` waiting for the socket) is
    /// not replaced until it has gone.
    pub(super) fn next_connection(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let done_sending = !cx.record.plan.may_send(now) || self.quota == Some(0);
        self.finish(cx, now);
        if !done_sending && self.conn().is_none() {
            self.open(cx, now);
        }
    }

    /// Counts an established connection: churn counts only the connects in the window,
    /// and the connect time is recorded where there was a handshake (`handshake`: when the
    /// dial started, and when the socket connected). A TLS handshake is counted and timed
    /// apart, from the socket's connect to now.
    pub(super) fn established(
        &mut self,
        cx: &mut Ctx<W::Socket>,
        handshake: Option<(Instant, Instant)>,
        now: Instant,
    ) {
        let load = cx.cfg.mode.load();
        let record = &mut cx.record;
        record.last_progress = now;
        let churn = load.churns();
        if churn && now < record.plan.from {
            record.tally.established_before += 1;
        }
        let counted = !churn || record.plan.in_window(now);
        if counted {
            record.tally.established += 1;
            if let Some((since, tcp)) = handshake {
                let connect = nanos(tcp.duration_since(since));
                record.tally.connect.saturating_record(connect);
            }
        }
        let session = self.conn().and_then(W::session);
        if let (Some((_, tcp)), Some(session)) = (handshake, session) {
            if session.offered {
                record.tally.tls.offered += 1;
            }
            let took = nanos(now.duration_since(tcp));
            let is_message = load == Load::Handshake;
            record.handshake(session.kind, took, session.negotiated, is_message, now);
        }
        if let Some(schedule) = cx.open_loop {
            self.next_due = Some(schedule.first_slot(self.id, now));
        }
    }

    /// Whether the run expects the server to send something back on this flow's
    /// connection: round trips it was asked for, or a download. An upload gets nothing
    /// back, and churn measures connects.
    pub(super) fn expects_service(&self, cfg: &BenchConfig) -> bool {
        match cfg.mode.load() {
            Load::RoundTrip => self.asked,
            Load::Download => true,
            Load::Upload | Load::Churn | Load::Handshake => false,
        }
    }

    /// Whether the flow's messages expect replies, which are unanswered if they never come
    /// (an upload's do not).
    pub(super) fn expects_replies(&self, cfg: &BenchConfig) -> bool {
        cfg.mode.has_round_trips()
    }

    /// Asks for a [`Wake::Send`] at `at`, unless one for that instant is already asked for.
    fn arm_send(&mut self, cx: &mut Ctx<W::Socket>, at: Instant) {
        if self.armed != Some(at) {
            cx.wakes.push(at, self.token.0, Wake::Send);
            self.armed = Some(at);
        }
    }
}

/// Counted runs: spends one measured message of a flow's share, if any is left. Messages
/// sent before the measurement (warm-up) are free.
fn take_quota(quota: &mut Option<u64>, plan: &Plan, intended: Instant) -> bool {
    match quota {
        Some(q) if plan.measured(intended) => {
            if *q == 0 {
                return false;
            }
            *q -= 1;
            true
        }
        _ => true,
    }
}

/// Gives back what [`take_quota`] took for a message that could not go.
fn return_quota(quota: &mut Option<u64>, plan: &Plan, intended: Instant) {
    if let Some(q) = quota {
        if plan.measured(intended) {
            *q += 1;
        }
    }
}
