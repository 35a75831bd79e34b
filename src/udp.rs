//! A UDP endpoint in the event loop: a socket, its datagram service, and a bounded queue of
//! replies the kernel could not take yet.
//!
//! Differences from a TCP connection, each visible below:
//!
//! * **Read until `WouldBlock`.** Every `recv_from` returns one whole datagram, whatever its
//!   size, so a short read says nothing about what is left; only `WouldBlock` does. A per-turn
//!   budget keeps a flood on one socket from starving the loop, as for TCP.
//! * **No backpressure from the peer.** A UDP sender is never slowed by the receiver. When the
//!   socket's send buffer is full, replies wait in a queue bounded in bytes; past that they are
//!   dropped and counted. The loop never blocks and never grows without bound.
//! * **WRITABLE only while replies wait**, exactly as for TCP output.
//! * **Replies come from the address the request was sent to.** A TCP connection has one
//!   local address; a UDP socket bound to a wildcard (`0.0.0.0`, `[::]`) on a host with
//!   several addresses receives on all of them, and a plain `send_to` lets the kernel choose
//!   the source by routing — often not the address the client wrote to, so clients (whose
//!   connected sockets filter by source) and NATs drop the reply. On wildcard binds loopd asks
//!   for each datagram's destination (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and sends the reply
//!   from it (the same control message on `sendmsg`), as DNS servers do.
//! * **The sender's address is a claim.** Nothing proves a datagram came from where it says,
//!   so a forged one can set two services answering each other forever, or turn a service
//!   into an amplifier aimed at a victim. Each endpoint has a [`guard`]: datagrams from
//!   privileged and from this server's own ports are refused before the service sees them,
//!   and answers to one source are rate-limited where the service's answers outgrow its
//!   requests.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use log::debug;
use mio::net::UdpSocket;
use socket2::Type;

pub mod guard;

use crate::config::UdpLimits;
use crate::fault::{
    not_before, since_start, Kind as FaultKind, Local as FaultLocal, Rng, Value as FaultValue,
};
use crate::service::datagram::Reply;
use crate::service::DatagramService;
use crate::socket::{self, DatagramSocket, Local, PktinfoSocket, Want};
use crate::stats::Stats;
use crate::timer::Time;

use guard::Guard;

/// Bytes of replies that may wait for the socket. Sixteen maximal datagrams, or thousands of
/// small ones: enough to ride out a full send buffer for a moment, and a hard bound on what a
/// flood can make the server hold.
pub const QUEUE_BYTES: usize = 1024 * 1024;

/// Datagrams received per endpoint per loop turn before serving others.
const DATAGRAM_BUDGET: usize = 256;

/// A reply waiting for the socket: to whom, from which local address, what.
type Queued = (SocketAddr, Option<Local>, Box<[u8]>);

/// What a queued reply of `len` bytes costs against [`QUEUE_BYTES`]: its bytes and its queue
/// entry, so that even empty replies cannot grow the queue without bound.
fn queue_cost(len: usize) -> usize {
    len + std::mem::size_of::<Queued>()
}

/// How a UDP turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpTurn {
    /// Drained: wait for the next event.
    Wait,
    /// The budget ran out with datagrams left: run again next turn.
    Again,
}

/// A bound UDP socket with its service and reply queue.
pub struct UdpEndpoint<S = PktinfoSocket> {
    socket: S,
    local: SocketAddr,
    service: Box<dyn DatagramService>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    reply: Reply,
    /// Port rules and rate limit, before the service and before each answer.
    guard: Guard,
    /// A readable edge was seen and the socket not yet drained.
    read_ready: bool,
    /// The loop's number for this endpoint (its counters).
    endpoint: usize,
    /// The interest registered with the poller.
    pub(crate) registered: Want,
    /// Its faults (`--fault`), if any: drop, duplicate, reorder, delay, corrupt, fail-first.
    faults: Option<Box<DatagramFaults>>,
}

/// A UDP endpoint's faults: its switch, its own random stream, and the replies they hold.
/// What is held counts against [`QUEUE_BYTES`] with the reply queue, so a delay cannot make
/// the endpoint hold more than a full send buffer would.
struct DatagramFaults {
    local: FaultLocal,
    rng: Rng,
    /// Replies held by `delay`, with the time each may leave.
    delayed: VecDeque<(Time, Queued)>,
    /// A reply held by `reorder`, sent after the next one (or at this time, if none comes).
    reordered: Option<(Time, Queued)>,
}

/// How long a reordered reply waits for another to overtake it before it leaves anyway: long
/// enough for a client sending a stream of requests to send the next, short enough that a
/// client sending one at a time sees its reply late, not lost.
const REORDER_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

impl UdpEndpoint {
    /// Binds `addr` exclusively; an unspecified IPv6 address is dual-stack, as for TCP. Its
    /// defences are the default ones for what `service` says of its answers, with its own
    /// port as the server's only one.
    pub fn bind(addr: SocketAddr, service: Box<dyn DatagramService>) -> io::Result<UdpEndpoint> {
        let socket = socket::bind_group(addr, Type::DGRAM, 1)?.remove(0);
        let port = socket.local_addr()?.as_socket().map_or(0, |a| a.port());
        let guard = Guard::new(service.replies(), &UdpLimits::default(), vec![port]);
        UdpEndpoint::from_socket(socket, service, 0, guard)
    }

    /// An endpoint on a socket bound by [`socket::bind_group`].
    pub(crate) fn from_socket(
        socket: socket2::Socket,
        service: Box<dyn DatagramService>,
        endpoint: usize,
        guard: Guard,
    ) -> io::Result<UdpEndpoint> {
        let socket = UdpSocket::from_std(socket.into());
        let local = socket.local_addr()?;
        let socket = PktinfoSocket::new(socket)?;
        let mut u = UdpEndpoint::with_socket(socket, local, service, guard);
        u.endpoint = endpoint;
        Ok(u)
    }

    /// The mio source, for registration.
    pub(crate) fn source(&mut self) -> &mut UdpSocket {
        self.socket.source()
    }
}

impl<S: DatagramSocket> UdpEndpoint<S> {
    /// An endpoint on any [`DatagramSocket`]: a bound socket, or a scripted one in the tests
    /// and the fuzz targets.
    pub(crate) fn with_socket(
        socket: S,
        local: SocketAddr,
        service: Box<dyn DatagramService>,
        guard: Guard,
    ) -> Self {
        UdpEndpoint {
            socket,
            local,
            service,
            queue: VecDeque::new(),
            queued_bytes: 0,
            reply: Reply::default(),
            guard,
            read_ready: true,
            endpoint: 0,
            registered: Want::READ,
            faults: None,
        }
    }

    /// Gives the endpoint its faults, with the seed of its random choices.
    pub(crate) fn set_faults(&mut self, local: Option<FaultLocal>, seed: u64) {
        self.faults = local.map(|local| {
            Box::new(DatagramFaults {
                local,
                rng: Rng::new(seed),
                delayed: VecDeque::new(),
                reordered: None,
            })
        });
    }

    /// When a held reply may next leave.
    pub fn next_release(&self) -> Option<Time> {
        let f = self.faults.as_deref()?;
        let delayed = f.delayed.iter().map(|(t, _)| *t).min();
        [delayed, f.reordered.as_ref().map(|(t, _)| *t)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a held reply may leave at `now`.
    pub fn release_due(&self, now: Time) -> bool {
        self.next_release().is_some_and(|t| t <= now)
    }

    /// Sends the held replies whose time has come.
    fn release(&mut self, now: Time, stats: &Stats) {
        let Some(f) = self.faults.as_deref_mut() else {
            return;
        };
        let mut due = Vec::new();
        while let Some(i) = f.delayed.iter().position(|(t, _)| *t <= now) {
            if let Some((_, q)) = f.delayed.remove(i) {
                due.push(q);
            }
        }
        if f.reordered.as_ref().is_some_and(|(t, _)| *t <= now) {
            due.extend(f.reordered.take().map(|(_, q)| q));
        }
        for (peer, local, data) in due {
            self.queued_bytes -= queue_cost(data.len());
            self.send_or_queue(peer, local, &data, stats);
        }
    }

    /// Answers with the reply the service wrote, through the endpoint's faults if it has
    /// any: each datagram draws its own choices.
    fn answer(&mut self, peer: SocketAddr, local: Option<Local>, stats: &Stats, now: Time) {
        let reply = std::mem::take(&mut self.reply);
        let data = reply.datagram().unwrap_or_default();
        match self.faults.is_some() {
            false => self.send_or_queue(peer, local, data, stats),
            true => self.answer_faulted(peer, local, data.to_vec(), stats, now),
        }
        self.reply = reply;
    }

    fn answer_faulted(
        &mut self,
        peer: SocketAddr,
        local: Option<Local>,
        mut data: Vec<u8>,
        stats: &Stats,
        now: Time,
    ) {
        let Some(f) = self.faults.as_deref_mut() else {
            return;
        };
        let plan = Arc::clone(f.local.plan());
        let (mut copies, mut hold, mut reorder) = (1, None, false);
        for fault in &plan.faults {
            if !fault.in_window(since_start(now)) || !f.rng.chance(fault.ppm) {
                continue;
            }
            let switch = &f.local.switch;
            match (fault.kind, fault.value) {
                (FaultKind::Drop, _) => {
                    switch.note(FaultKind::Drop);
                    return;
                }
                (FaultKind::FailFirst, FaultValue::Count(n)) if plan.fails_first(n) => {
                    switch.note(FaultKind::FailFirst);
                    return;
                }
                (FaultKind::Corrupt, _) if !data.is_empty() => {
                    let at = f.rng.below(data.len() as u64) as usize;
                    data[at] ^= 0xFF;
                    switch.note(FaultKind::Corrupt);
                }
                (FaultKind::Duplicate, _) => {
                    copies = 2;
                    switch.note(FaultKind::Duplicate);
                }
                (FaultKind::Reorder, _) => {
                    reorder = true;
                    switch.note(FaultKind::Reorder);
                }
                (FaultKind::Delay, FaultValue::Duration(d)) => {
                    let j = fault.jitter.as_millis() as u64;
                    let ms = (d.as_millis() as u64 + f.rng.below(2 * j + 1)).saturating_sub(j);
                    hold = Some(not_before(now, std::time::Duration::from_millis(ms)));
                    switch.note(FaultKind::Delay);
                }
                _ => {}
            }
        }
        for _ in 0..copies {
            let held = match (hold, reorder) {
                (Some(t), _) => Some((t, false)),
                (None, true) => Some((now.after(REORDER_WAIT), true)),
                (None, false) => None,
            };
            let Some((at, reordered)) = held else {
                self.send_or_queue(peer, local, &data, stats);
                self.send_reordered(stats);
                continue;
            };
            let cost = queue_cost(data.len());
            if self.queued_bytes + cost > QUEUE_BYTES {
                Stats::incr(&stats.datagrams_dropped);
                continue;
            }
            self.queued_bytes += cost;
            let Some(f) = self.faults.as_deref_mut() else {
                return;
            };
            let q: Queued = (peer, local, data.clone().into());
            if reordered && f.reordered.is_none() {
                f.reordered = Some((at, q));
                // The next reply overtakes it.
                reorder = false;
            } else {
                f.delayed.push_back((at, q));
            }
        }
    }

    /// Sends a reordered reply after the one that overtook it.
    fn send_reordered(&mut self, stats: &Stats) {
        let Some((_, (peer, local, data))) =
            self.faults.as_deref_mut().and_then(|f| f.reordered.take())
        else {
            return;
        };
        self.queued_bytes -= queue_cost(data.len());
        self.send_or_queue(peer, local, &data, stats);
    }

    /// The loop's number for this endpoint.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Bytes of replies waiting for the socket.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether datagrams may be waiting unread.
    pub fn has_work(&self) -> bool {
        self.read_ready
    }

    /// The interest wanted now: READABLE always, WRITABLE while replies wait.
    pub fn want(&self) -> Want {
        Want {
            read: true,
            write: !self.queue.is_empty(),
        }
    }

    /// One turn at `now`: send queued replies if writable, then receive and answer up to the
    /// budget. `scratch` must hold a maximal datagram (64 KiB).
    pub fn turn(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        stats: &Stats,
        now: Time,
    ) -> UdpTurn {
        self.read_ready |= readable;
        if writable {
            self.flush(stats);
        }
        self.release(now, stats);
        for _ in 0..DATAGRAM_BUDGET {
            if !self.read_ready {
                return UdpTurn::Wait;
            }
            match self.socket.recv_from(scratch) {
                Ok((n, peer, local)) => {
                    Stats::incr(&stats.datagrams_in);
                    // The service sees the address as people write it; the reply goes back
                    // to the address exactly as the socket reported it.
                    let shown = socket::canonical(peer);
                    if !self.guard.admit(shown, self.local, now, stats) {
                        continue;
                    }
                    Stats::add(&stats.bytes_in, n as u64);
                    self.reply.clear();
                    self.service
                        .on_datagram(shown, &scratch[..n], &mut self.reply);
                    if self.reply.datagram().is_some()
                        && self.guard.may_answer(shown, self.local, now, stats)
                    {
                        self.answer(peer, local, stats, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error reported for an earlier send, or similar: it concerns one
                // datagram, not the endpoint.
                Err(e) => debug!("udp {}: recv_from: {e}", self.local),
            }
        }
        if self.read_ready {
            UdpTurn::Again
        } else {
            UdpTurn::Wait
        }
    }

    /// Sends the reply at once if nothing is queued ahead of it; otherwise queues it, or drops
    /// it when the queue is full.
    fn send_or_queue(
        &mut self,
        peer: SocketAddr,
        local: Option<Local>,
        reply: &[u8],
        stats: &Stats,
    ) {
        if self.queue.is_empty() {
            match self.socket.send_to(reply, peer, local) {
                Ok(_) => {
                    Stats::incr(&stats.datagrams_out);
                    Stats::add(&stats.bytes_out, reply.len() as u64);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    debug!("udp {}: send_to {peer}: {e}", self.local);
                    Stats::incr(&stats.datagrams_dropped);
                    return;
                }
            }
        }
        let cost = queue_cost(reply.len());
        if self.queued_bytes + cost > QUEUE_BYTES {
            Stats::incr(&stats.datagrams_dropped);
            return;
        }
        self.queued_bytes += cost;
        self.queue.push_back((peer, local, reply.into()));
    }

    /// Sends queued replies until the socket refuses.
    fn flush(&mut self, stats: &Stats) {
        while let Some((peer, local, data)) = self.queue.front() {
            match self.socket.send_to(data, *peer, *local) {
                Ok(_) => {
                    Stats::incr(&stats.datagrams_out);
                    Stats::add(&stats.bytes_out, data.len() as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("udp {}: send_to {peer}: {e}", self.local);
                    Stats::incr(&stats.datagrams_dropped);
                }
            }
            self.queued_bytes -= queue_cost(data.len());
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::UdpEcho;
    use std::cell::RefCell;
    use std::net::Ipv4Addr;

    /// Receives scripted datagrams, then `WouldBlock`; sends succeed while `send_ok` is set.
    #[derive(Default)]
    struct Fake {
        incoming: RefCell<VecDeque<Vec<u8>>>,
        sent: RefCell<Vec<Vec<u8>>>,
        send_ok: std::cell::Cell<bool>,
        /// The destination every datagram reports, and the sources replies were sent from.
        local: Option<Local>,
        sent_from: Vec<Option<Local>>,
    }

    impl DatagramSocket for Fake {
        fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Local>)> {
            let d = self
                .incoming
                .borrow_mut()
                .pop_front()
                .ok_or(io::ErrorKind::WouldBlock)?;
            buf[..d.len()].copy_from_slice(&d);
            Ok((d.len(), "127.0.0.1:9".parse().unwrap(), self.local))
        }

        fn send_to(&mut self, buf: &[u8], _: SocketAddr, from: Option<Local>) -> io::Result<usize> {
            if !self.send_ok.get() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.sent_from.push(from);
            self.sent.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
    }

    /// An echo endpoint without defences: these tests are about what lies behind them (the
    /// fake's peer sends from port 9, which the port rules would refuse).
    fn endpoint() -> UdpEndpoint<Fake> {
        UdpEndpoint::with_socket(
            Fake::default(),
            "127.0.0.1:7".parse().unwrap(),
            Box::new(UdpEcho),
            Guard::none(),
        )
    }

    /// Replies go out at once while the socket takes them.
    #[test]
    fn replies_immediately() {
        let mut u = endpoint();
        u.socket.send_ok.set(true);
        u.socket
            .incoming
            .borrow_mut()
            .extend([b"a".to_vec(), b"bc".to_vec()]);
        let stats = Stats::default();
        assert_eq!(
            u.turn(true, false, &mut [0; 16], &stats, Time(0)),
            UdpTurn::Wait
        );
        assert_eq!(*u.socket.sent.borrow(), [b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(u.want(), Want::READ);
        assert_eq!(stats.snapshot().datagrams_out, 2);
    }

    /// When the socket refuses, replies queue up to the byte bound, the rest are dropped and
    /// counted, and WRITABLE is wanted until the queue drains in order.
    #[test]
    fn queue_is_bounded_and_drains_in_order() {
        let mut u = endpoint();
        let to = Local::V4(Ipv4Addr::new(127, 0, 0, 2));
        u.socket.local = Some(to);
        let big = vec![7u8; 60_000];
        let n = QUEUE_BYTES / queue_cost(big.len()) + 5;
        u.socket
            .incoming
            .borrow_mut()
            .extend((0..n).map(|_| big.clone()));
        let stats = Stats::default();
        let mut scratch = vec![0; 65536];
        u.turn(true, false, &mut scratch, &stats, Time(0));
        let fits = QUEUE_BYTES / queue_cost(big.len());
        assert_eq!(u.queued_bytes(), fits * queue_cost(big.len()));
        assert!(u.queued_bytes() <= QUEUE_BYTES);
        assert_eq!(stats.snapshot().datagrams_dropped, (n - fits) as u64);
        assert_eq!(
            u.want(),
            Want {
                read: true,
                write: true
            }
        );

        u.socket.send_ok.set(true);
        u.turn(false, true, &mut scratch, &stats, Time(0));
        assert_eq!(u.socket.sent.borrow().len(), fits);
        assert!(
            u.socket.sent_from.iter().all(|&f| f == Some(to)),
            "queued replies keep the address they must come from"
        );
        assert_eq!(u.queued_bytes(), 0);
        assert_eq!(u.want(), Want::READ);
        let s = stats.snapshot();
        assert_eq!(s.datagrams_in, s.datagrams_out + s.datagrams_dropped);
    }

    /// A flood stops at the per-turn budget and asks to run again.
    #[test]
    fn budget_yields() {
        let mut u = endpoint();
        u.socket.send_ok.set(true);
        u.socket
            .incoming
            .borrow_mut()
            .extend((0..DATAGRAM_BUDGET + 1).map(|_| vec![1]));
        let stats = Stats::default();
        assert_eq!(
            u.turn(true, false, &mut [0; 4], &stats, Time(0)),
            UdpTurn::Again
        );
        assert!(u.has_work());
        assert_eq!(
            u.turn(false, false, &mut [0; 4], &stats, Time(0)),
            UdpTurn::Wait
        );
        assert_eq!(stats.snapshot().datagrams_out, DATAGRAM_BUDGET as u64 + 1);
    }
}
