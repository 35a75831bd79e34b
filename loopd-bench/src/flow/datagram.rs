//! The datagram discipline: how a flow's messages travel over any
//! [`Datagram`] socket (UDP).
//!
//! * **Sent when queued.** A message is one datagram, encoded and sent at once; a socket
//!   with no room (`WouldBlock`) keeps it for the writable edge.
//! * **Matched, not streamed.** Replies may come out of order, twice, or never, so each is
//!   matched by the sequence number in its header ([`match_reply`]) and checked whole.
//! * **Lost after a timeout.** A datagram not answered within the socket's
//!   [`Datagram::LOSS_TIMEOUT`] is lost — counted, not an error, unless loss exceeds
//!   `--max-loss` — and a reply after that is late.
//! * **Drain until `WouldBlock`.** A short read says nothing about what is left; only
//!   `WouldBlock` does. The receive budget still applies.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Instant;

use super::wire::{Conn, Wire, WriteEnd};
use super::{Ctx, Failure, Pending, RECV_BUDGET};
use crate::errors::ErrorKind;
use crate::net::{interrupted, would_block};
use crate::payload::{self, Codec, Dir};
use crate::schedule::Wake;
use crate::transport::{Datagram, Handshake};

/// The datagram [`Wire`] over a datagram socket `D`.
#[derive(Debug)]
pub struct Datagrams<D>(PhantomData<D>);

/// What a datagram connection keeps besides its messages in flight.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatagramState {
    /// The loss-timeout wake-up currently asked for, if any.
    pub expiry: Option<Instant>,
}

impl<D: Datagram> Wire for Datagrams<D> {
    type Socket = D;
    type State = DatagramState;
    const HANDSHAKE: bool = false;
    const LOSSY: bool = true;
    const ASKS_BACKEND: bool = true;

    fn handshake(_: &mut D) -> Handshake {
        Handshake::Done
    }

    fn start(_: u64) -> DatagramState {
        DatagramState::default()
    }

    /// Sends the datagram now.
    fn send(conn: &mut Conn<Self>, cx: &mut Ctx<D>, p: Pending) -> Result<bool, Failure> {
        let datagram = &mut cx.buffers.datagram;
        datagram.clear();
        cx.codec.encode(Dir::Request, conn.id, p.seq, datagram);
        match conn.socket.send(datagram) {
            Ok(n) => {
                cx.record.sent(n, p.sent, None);
                if cx.record.plan.measured(p.intended) {
                    cx.record.tally.udp.sent += 1;
                }
                conn.inflight.push_back(p);
                arm_expiry(conn, cx);
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                conn.blocked = true;
                Ok(false)
            }
            Err(e) => Err(Failure::new(
                ErrorKind::of_datagram(&e),
                format!("send: {e}"),
            )),
        }
    }

    /// Nothing waits to be written: each datagram went when it was queued.
    fn write(
        _: &mut Conn<Self>,
        _: &mut Ctx<D>,
        _: Instant,
        _: &mut usize,
    ) -> Result<WriteEnd, Failure> {
        Ok(WriteEnd::Done)
    }

    fn queued(_: &Conn<Self>) -> u64 {
        0
    }

    /// Reads every waiting datagram (up to the budget) and matches each to its message.
    fn receive(conn: &mut Conn<Self>, cx: &mut Ctx<D>, now: Instant) -> Result<(), Failure> {
        let mut left = RECV_BUDGET;
        loop {
            if left == 0 {
                conn.read_pending = true;
                break;
            }
            let n = match conn.socket.recv(&mut cx.buffers.scratch) {
                Ok(n) => n,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    let kind = ErrorKind::of_datagram(&e);
                    return Err(Failure::new(kind, format!("receive: {e}")));
                }
            };
            // An empty datagram still costs a turn of the budget.
            left = left.saturating_sub(n.max(1));
            cx.record.received(n, now, None);
            take_datagram(conn, cx, n, now);
        }
        let inflight = &mut conn.inflight;
        while inflight.front().is_some_and(|p| p.answered) {
            inflight.pop_front();
        }
        Ok(())
    }

    fn expire(conn: &mut Conn<Self>, cx: &mut Ctx<D>, at: Instant, now: Instant) -> bool {
        if conn.wire.expiry != Some(at) {
            return false; // stale: a later datagram is the oldest now
        }
        conn.wire.expiry = None;
        // Datagrams older than the loss timeout are lost, oldest first.
        let plan = cx.record.plan;
        let inflight = &mut conn.inflight;
        while let Some(&p) = inflight.front() {
            if !p.answered && now.duration_since(p.sent) < D::LOSS_TIMEOUT {
                break;
            }
            if !p.answered && plan.measured(p.intended) {
                cx.record.tally.udp.lost += 1;
            }
            inflight.pop_front();
        }
        arm_expiry(conn, cx);
        true
    }

    /// Whatever is still in flight is lost.
    fn abandon(conn: &mut Conn<Self>, cx: &mut Ctx<D>, _: &str, _: bool) {
        let plan = cx.record.plan;
        let lost = conn
            .inflight
            .iter()
            .filter(|p| !p.answered && plan.measured(p.intended))
            .count() as u64;
        cx.record.tally.udp.lost += lost;
    }

    /// One `recv` is one datagram: only `WouldBlock` says drained, and the reading pass
    /// waits for it.
    fn heard(_: &Conn<Self>) -> bool {
        false // no handshake mode over datagrams
    }
}

/// Asks for the loss check of the oldest datagram in flight, unless one is pending.
fn arm_expiry<D: Datagram>(conn: &mut Conn<Datagrams<D>>, cx: &mut Ctx<D>) {
    if let (None, Some(front)) = (conn.wire.expiry, conn.inflight.front()) {
        let at = front.sent + D::LOSS_TIMEOUT;
        cx.wakes.push(at, conn.index, Wake::Expire);
        conn.wire.expiry = Some(at);
    }
}

/// Matches the `n`-byte datagram in the scratch buffer to the message it answers.
fn take_datagram<D: Datagram>(
    conn: &mut Conn<Datagrams<D>>,
    cx: &mut Ctx<D>,
    n: usize,
    now: Instant,
) {
    let id = conn.id;
    let data = &cx.buffers.scratch[..n];
    let matched = match_reply(
        &cx.codec,
        id,
        &conn.inflight,
        data,
        &mut cx.buffers.datagram,
    );
    match matched {
        Matched::Reply(k) => {
            let p = &mut conn.inflight[k];
            p.answered = true;
            let p = *p;
            if cx.record.plan.measured(p.intended) {
                cx.record.tally.udp.received += 1;
            }
            cx.record.served(&mut conn.served, now);
            cx.record.completed(p.intended, p.sent, now, None);
        }
        Matched::Late => {
            if cx.record.plan.in_window(now) {
                cx.record.tally.udp.late += 1;
            }
        }
        Matched::Wrong(what) => cx.record.error(ErrorKind::Mismatch, 1, || {
            format!("connection {id}, {what}")
        }),
    }
}

/// What a received datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched {
    /// The verified reply to the message at this index of the in-flight queue.
    Reply(usize),
    /// A reply to a message already answered, or already declared lost.
    Late,
    /// Not a correct reply to anything this flow sent.
    Wrong(String),
}

/// Matches `data`, received on connection `conn`, to the in-flight message it answers, and
/// checks every byte of it (`expected` is scratch space).
pub fn match_reply(
    codec: &Codec,
    conn: u32,
    inflight: &VecDeque<Pending>,
    data: &[u8],
    expected: &mut Vec<u8>,
) -> Matched {
    let Some((_, seq)) = payload::parse_header(data).filter(|&(c, _)| c == conn) else {
        return Matched::Wrong(format!(
            "a {}-byte datagram that is not one of its own",
            data.len()
        ));
    };
    let slot = inflight
        .front()
        .and_then(|front| usize::try_from(seq.checked_sub(front.seq)?).ok())
        .filter(|&k| k < inflight.len());
    let Some(k) = slot.filter(|&k| !inflight[k].answered) else {
        return Matched::Late;
    };
    expected.clear();
    codec.encode(Dir::Reply, conn, seq, expected);
    if data != expected.as_slice() {
        let what = match data.iter().zip(expected.iter()).position(|(a, b)| a != b) {
            Some(at) => payload::describe_mismatch(at, expected[at], data[at]),
            None => format!("{} bytes came back for {} sent", data.len(), expected.len()),
        };
        return Matched::Wrong(format!("datagram {seq}: {what}"));
    }
    Matched::Reply(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Protocol;

    fn inflight(seqs: &[u64]) -> VecDeque<Pending> {
        let now = Instant::now();
        seqs.iter()
            .map(|&seq| Pending {
                seq,
                intended: now,
                sent: now,
                answered: false,
            })
            .collect()
    }

    /// Replies match by sequence number in any order; a repeat or a stranger's datagram is
    /// told apart from a corrupt one.
    #[test]
    fn matching() {
        let codec = Codec::new(Protocol::Raw, 64);
        let mut q = inflight(&[5, 6, 7]);
        let mut scratch = Vec::new();
        let reply = |seq| {
            let mut v = Vec::new();
            codec.encode(Dir::Reply, 2, seq, &mut v);
            v
        };
        assert_eq!(
            match_reply(&codec, 2, &q, &reply(7), &mut scratch),
            Matched::Reply(2)
        );
        q[2].answered = true;
        assert_eq!(
            match_reply(&codec, 2, &q, &reply(7), &mut scratch),
            Matched::Late
        );
        assert_eq!(
            match_reply(&codec, 2, &q, &reply(4), &mut scratch),
            Matched::Late
        );
        let mut bad = reply(5);
        bad[40] ^= 1;
        match match_reply(&codec, 2, &q, &bad, &mut scratch) {
            Matched::Wrong(what) => assert!(what.contains("datagram 5: byte 40"), "{what}"),
            other => panic!("{other:?}"),
        }
        let mut other = Vec::new();
        codec.encode(Dir::Reply, 3, 5, &mut other);
        assert!(matches!(
            match_reply(&codec, 2, &q, &other, &mut scratch),
            Matched::Wrong(_)
        ));
        assert!(matches!(
            match_reply(&codec, 2, &q, &reply(6)[..30], &mut scratch),
            Matched::Wrong(_)
        ));
    }
}
