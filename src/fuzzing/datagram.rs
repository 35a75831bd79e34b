//! The UDP target: datagrams from any source, of any content, to a UDP endpoint with each
//! built-in service behind its guard, on a scripted socket.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

use crate::config::UdpLimits;
use crate::service::chargen::{CYCLE, UDP_MAX};
use crate::service::datagram::Replies;
use crate::service::{DatagramService, UdpChargen, UdpDaytime, UdpDiscard, UdpEcho, UdpTime};
use crate::socket::{canonical, DatagramSocket, Local};
use crate::stats::Stats;
use crate::timer::Time;
use crate::udp::guard::{Guard, FIRST_UNPRIVILEGED_PORT, IPV6_PREFIX};
use crate::udp::{UdpEndpoint, UdpTurn, QUEUE_BYTES};

use super::input::Input;

/// The endpoint's address.
const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7019);

/// Most turns in a row that may ask to run again: a flood is read in budgets, but every
/// turn reads something.
const MAX_AGAINS: usize = 1 << 16;

/// A datagram received: from whom, to which local address, what.
type Received = (SocketAddr, Option<Local>, Vec<u8>);

/// What the scripted socket does and did: datagrams to receive, then `WouldBlock`; sends
/// succeed while `send_ok` is set, and are recorded.
#[derive(Default)]
struct Script {
    incoming: VecDeque<Received>,
    received: Vec<Received>,
    sent: Vec<(SocketAddr, Option<Local>, Vec<u8>)>,
    send_ok: bool,
}

/// The endpoint's socket: the script, shared with the target that writes it.
struct Scripted(Rc<RefCell<Script>>);

impl DatagramSocket for Scripted {
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<Local>)> {
        let mut s = self.0.borrow_mut();
        let (peer, local, data) = s.incoming.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        buf[..data.len()].copy_from_slice(&data);
        let n = data.len();
        s.received.push((peer, local, data));
        Ok((n, peer, local))
    }

    fn send_to(&mut self, buf: &[u8], to: SocketAddr, from: Option<Local>) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        if !s.send_ok {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.sent.push((to, from, buf.to_vec()));
        Ok(buf.len())
    }
}

/// A source address from a selector byte and a port: IPv4, IPv6 in a few /64s, IPv4-mapped
/// IPv6 (the same sources as IPv4, as a dual-stack socket reports them), loopback.
fn source(selector: u8, port: u16) -> SocketAddr {
    let low = selector >> 2;
    let ip = match selector & 3 {
        0 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, low & 7)),
        1 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            u16::from(low & 3),
            0,
            0,
            0,
            u16::from(low >> 2),
        )),
        2 => IpAddr::V6(Ipv4Addr::new(192, 0, 2, low & 7).to_ipv6_mapped()),
        _ if low & 1 == 0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, port)
}

/// What the rate limit counts a source by: its IPv4 address, or its IPv6 /64.
fn limit_key(peer: SocketAddr) -> u128 {
    match canonical(peer).ip() {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a) & (u128::MAX << (128 - IPV6_PREFIX)),
    }
}

/// A UDP endpoint serving one of the built-in services, with rate limits and the server's
/// own ports from the first bytes; then a script of datagrams (any source, any content),
/// clock steps, a send buffer that fills and drains, and turns.
///
/// The guard refuses every datagram from a privileged or an own port before any answer; an
/// answer goes to the address the datagram came from, from the address it was sent to; echo
/// answers with the datagram, discard never, chargen with at most 512 bytes of the pattern,
/// daytime with a line, time with four bytes; no source gets more than its rate limit
/// allows; the reply queue stays within its bound and WRITABLE is wanted exactly while it
/// holds something; every datagram is read (no lost wakeup) and counted.
pub fn udp(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = input.byte() % 5;
    let rate = |b: u8| (b != 0).then_some(u32::from(b));
    let limits = UdpLimits {
        rate_limit: rate(input.byte()),
        echo_rate_limit: rate(input.byte()),
    };
    let own_ports = vec![LOCAL.port(), input.u16()];
    let service: Box<dyn DatagramService> = match kind {
        0 => Box::new(UdpEcho),
        1 => Box::new(UdpDiscard),
        2 => Box::new(UdpChargen::new(u64::from(input.u32()))),
        3 => Box::new(UdpDaytime),
        _ => Box::new(UdpTime),
    };
    let replies = service.replies();
    let rate_limit = match replies {
        Replies::Never => None,
        Replies::NoLarger => limits.echo_rate_limit,
        Replies::Larger => limits.rate_limit,
    };
    let guard = Guard::new(replies, &limits, own_ports.clone());
    let script = Rc::new(RefCell::new(Script::default()));
    let socket = Scripted(Rc::clone(&script));
    let mut u = UdpEndpoint::with_socket(socket, LOCAL, service, guard);
    let stats = Stats::default();
    let mut scratch = vec![0; 65536];
    let mut now = Time(0);

    let mut turn = |u: &mut UdpEndpoint<Scripted>, readable: bool, writable: bool, now: Time| {
        let mut again = 0;
        let (mut readable, mut writable) = (readable, writable);
        while u.turn(readable, writable, &mut scratch, &stats, now) == UdpTurn::Again {
            (readable, writable) = (false, false);
            again += 1;
            assert!(again < MAX_AGAINS, "a UDP endpoint that never stops");
        }
        assert!(
            u.queued_bytes() <= QUEUE_BYTES,
            "the reply queue outgrew its bound"
        );
        assert_eq!(
            u.want().write,
            u.queued_bytes() > 0,
            "WRITABLE wanted other than while replies wait"
        );
    };

    while !input.is_empty() {
        match input.byte() % 4 {
            // Datagrams arrive: one readable edge for the batch.
            0 | 1 => {
                for _ in 0..1 + input.byte() % 4 {
                    let peer = source(input.byte(), input.u16());
                    let local = match input.byte() % 3 {
                        0 => None,
                        1 => Some(Local::V4(Ipv4Addr::new(127, 0, 0, 2))),
                        _ => Some(Local::V6(Ipv6Addr::LOCALHOST, 1)),
                    };
                    let len = usize::from(input.u16()) % 2048;
                    let payload = input.bytes(len).to_vec();
                    script
                        .borrow_mut()
                        .incoming
                        .push_back((peer, local, payload));
                }
                turn(&mut u, true, false, now);
            }
            // Time passes.
            2 => now = Time(now.0 + u64::from(input.u16())),
            // The send buffer fills, or drains: a writable edge if replies wait for it.
            _ => {
                let send_ok = !script.borrow().send_ok;
                script.borrow_mut().send_ok = send_ok;
                if send_ok && u.want().write {
                    turn(&mut u, false, true, now);
                }
            }
        }
    }
    script.borrow_mut().send_ok = true;
    if u.want().write {
        turn(&mut u, false, true, now);
    }

    let script = script.borrow();
    assert!(
        script.incoming.is_empty(),
        "datagrams left unread: a lost wakeup"
    );
    let s = stats.snapshot();
    assert_eq!(s.datagrams_in, script.received.len() as u64);
    assert_eq!(s.datagrams_out, script.sent.len() as u64);
    assert_eq!(
        u.queued_bytes(),
        0,
        "replies left queued on a writable socket"
    );

    // Answers, in order, are answers to a subsequence of the datagrams received.
    let mut asked = script.received.iter();
    for (to, from, reply) in &script.sent {
        let answered = asked
            .by_ref()
            .find(|(peer, local, data)| {
                peer == to && local == from && (replies != Replies::NoLarger || data == reply)
            })
            .unwrap_or_else(|| panic!("an answer to {to} that no datagram asked for"));
        let port = answered.0.port();
        assert!(
            port >= FIRST_UNPRIVILEGED_PORT && !own_ports.contains(&port),
            "answered a datagram from port {port}, which the guard refuses"
        );
        match kind {
            1 => panic!("discard answered"),
            2 => assert!(reply.len() <= UDP_MAX && CYCLE.starts_with(reply)),
            3 => assert!(reply.ends_with(b"\r\n") && reply.len() < 64),
            4 => assert_eq!(reply.len(), 4),
            _ => {}
        }
    }

    // The rate limit: over the whole script, a burst of `rate` and `rate` a second.
    if let Some(rate) = rate_limit {
        let mut answers: BTreeMap<u128, u64> = BTreeMap::new();
        for (to, ..) in &script.sent {
            *answers.entry(limit_key(*to)).or_default() += 1;
        }
        let allowed = u64::from(rate) + u64::from(rate) * now.0.div_ceil(1000);
        for (key, n) in answers {
            assert!(
                n <= allowed,
                "{n} answers to source {key:x} in {} ms, over a limit of {rate} a second",
                now.0
            );
        }
    }
}
