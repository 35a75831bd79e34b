//! The UDP transport: a connected datagram socket per flow, and matching replies to the
//! datagrams they answer.
//!
//! Differences from TCP, each visible here or in the flow:
//!
//! * **No handshake.** A connected UDP socket is ready at once; connecting it only makes
//!   the kernel drop datagrams from anyone else and report ICMP errors (nothing listening)
//!   to us as `ECONNREFUSED`.
//! * **Whole messages, any order, or none.** One `recv` is one datagram. Replies may come
//!   out of order, twice, or never, so each is matched by the sequence number in its header,
//!   and a datagram not answered within [`LOSS_TIMEOUT`] is lost — counted, not an error,
//!   unless loss exceeds `--max-loss`.
//! * **Drain until `WouldBlock`.** A short read says nothing about what is left; only
//!   `WouldBlock` does. The receive budget still applies.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mio::net::UdpSocket;

use crate::flow::{any_address, Pending};
use crate::payload::{self, Codec, Dir};

/// A datagram not answered within this long is lost. Loopback round trips take
/// microseconds, a loaded LAN milliseconds; a second is unambiguous for both.
pub const LOSS_TIMEOUT: Duration = Duration::from_secs(1);

/// A UDP socket bound to `source` (or any local address) and connected to `target`.
pub fn open(target: SocketAddr, source: Option<IpAddr>) -> io::Result<UdpSocket> {
    let local = source.unwrap_or_else(|| any_address(target));
    let socket = std::net::UdpSocket::bind(SocketAddr::new(local, 0))?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket))
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
    use std::time::Instant;

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
