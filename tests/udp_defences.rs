//! UDP's old trap, the echo–chargen loop (CVE-1999-0103): one datagram with a forged source
//! must not set loopd's own services on each other, and one source must not draw more than
//! the response rate limit from a service whose replies outgrow its requests.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use loopd::config::{Config, DEFAULT_UDP_RATE_LIMIT};
use loopd::service::Builtin;
use loopd::stats::Snapshot;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Datagrams a loop may exchange before it is ended: the defences refuse the very first one,
/// and a few more would still be "ended" in the sense the issue asks; a live loop sends
/// hundreds of thousands a second.
const A_FEW: u64 = 3;

/// Sends one UDP datagram to `to` from 127.0.0.1 with the forged source port `from_port`,
/// through a raw socket: the kernel writes the IP header (source 127.0.0.1, by routing), we
/// write the UDP header. The checksum is 0, "none", which IPv4 allows.
fn spoof(from_port: u16, to: SocketAddr, payload: &[u8]) {
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).unwrap_or_else(|e| {
        panic!("a raw socket needs root or CAP_NET_RAW, as CI runs the tests: {e}")
    });
    let length = u16::try_from(8 + payload.len()).unwrap();
    let mut datagram = Vec::with_capacity(8 + payload.len());
    datagram.extend(from_port.to_be_bytes());
    datagram.extend(to.port().to_be_bytes());
    datagram.extend(length.to_be_bytes());
    datagram.extend([0, 0]);
    datagram.extend(payload);
    // A raw socket takes the address only; the port travels in the header above.
    let dest = SockAddr::from(SocketAddr::new(to.ip(), 0));
    assert_eq!(raw.send_to(&datagram, &dest).unwrap(), datagram.len());
}

fn client(ip: [u8; 4]) -> UdpSocket {
    let c = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c
}

/// Sends `probes` datagrams from a real client to each of `targets` and waits for every
/// reply: the loop has had its turns, and anything a spoofed datagram started has run. The
/// client is on 127.0.0.2, a source of its own: what forged datagrams from 127.0.0.1 used up
/// of a rate limit is not its share.
fn probe(targets: &[SocketAddr], probes: u64) {
    let c = client([127, 0, 0, 2]);
    let mut buf = [0; 1024];
    for &to in targets {
        for _ in 0..probes {
            c.send_to(b"probe", to).unwrap();
            let (_, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, to);
        }
    }
}

/// Datagrams sent by every endpoint of the server, once at least `answered` are counted (a
/// reply can reach its client a moment before the loop counts it).
fn sent(server: &TestServer, answered: u64) -> u64 {
    server
        .wait_stats("the replies counted", |s| s.datagrams_out >= answered)
        .datagrams_out
}

/// A datagram forged to come from udp-echo's port, sent to udp-chargen on the same server,
/// does not start the echo–chargen loop: it ends after at most a few datagrams.
#[test]
fn spoofed_datagram_starts_no_chargen_echo_loop() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpEcho, Builtin::UdpChargen]);
    let (echo, chargen) = (server.addrs[0], server.addrs[1]);
    spoof(echo.port(), chargen, b"x");
    server.wait_stats("the forged datagram received", |s: &Snapshot| {
        s.datagrams_in >= 1
    });
    const PROBES: u64 = 3;
    probe(&[echo, chargen], PROBES);
    let loop_datagrams = sent(&server, 2 * PROBES) - 2 * PROBES;
    assert!(
        loop_datagrams <= A_FEW,
        "the spoofed datagram started a loop: {loop_datagrams} datagrams"
    );
    probe(&[echo, chargen], PROBES);
    assert_eq!(
        sent(&server, 4 * PROBES) - 4 * PROBES,
        loop_datagrams,
        "still looping"
    );
    // Refused as a loop request, before chargen said a word.
    let s = server.stats();
    assert_eq!(
        (s.datagrams_refused_own_port, loop_datagrams),
        (1, 0),
        "{s}"
    );
}

/// The same with two udp-echo endpoints of one server: a datagram forged to come from one,
/// sent to the other, ends after at most a few datagrams.
#[test]
fn spoofed_datagram_starts_no_echo_echo_loop() {
    let server = TestServer::start(Config::default(), &[Builtin::UdpEcho, Builtin::UdpEcho]);
    let (one, other) = (server.addrs[0], server.addrs[1]);
    spoof(one.port(), other, b"x");
    server.wait_stats("the forged datagram received", |s: &Snapshot| {
        s.datagrams_in >= 1
    });
    const PROBES: u64 = 3;
    probe(&[one, other], PROBES);
    let loop_datagrams = sent(&server, 2 * PROBES) - 2 * PROBES;
    assert!(
        loop_datagrams <= A_FEW,
        "the spoofed datagram started a loop: {loop_datagrams} datagrams"
    );
    probe(&[one, other], PROBES);
    assert_eq!(
        sent(&server, 4 * PROBES) - 4 * PROBES,
        loop_datagrams,
        "still looping"
    );
    let s = server.stats();
    assert_eq!(
        (s.datagrams_refused_own_port, loop_datagrams),
        (1, 0),
        "{s}"
    );
}

/// Asks `to` from `c` until answered, waiting briefly each time: while a flood fills the
/// server's receive queue the kernel drops datagrams, whoever sent them. Returns the replies
/// `c` read (a late reply to an earlier try counts too).
fn ask(c: &UdpSocket, to: SocketAddr) -> u64 {
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0; 1024];
    for _ in 0..100 {
        c.send_to(b"still there?", to).unwrap();
        match c.recv_from(&mut buf) {
            Ok((_, from)) => {
                assert_eq!(from, to);
                return 1;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{to} never answered {:?}", c.local_addr());
}

/// A chargen flood from one source (its address: the ports vary) gets at most the rate limit
/// back — a burst of one second's worth, then the rate — while another source is answered
/// throughout.
#[test]
fn chargen_flood_gets_at_most_the_rate_while_others_are_answered() {
    const RATE: u64 = DEFAULT_UDP_RATE_LIMIT as u64;
    let server = TestServer::start(Config::default(), &[Builtin::UdpChargen]);
    let chargen = server.addr();
    let flooder = client([127, 0, 0, 1]);
    let other = client([127, 0, 0, 2]);
    const FLOOD: u64 = 4000;
    const ASKS: u64 = 8;
    let mut answered = 0;
    let started = Instant::now();
    for i in 0..FLOOD {
        flooder.send_to(b"x", chargen).unwrap();
        if i % (FLOOD / ASKS) == 0 {
            answered += ask(&other, chargen);
        }
    }
    // The socket's queue is in order: once this is answered, every flood datagram before it
    // has been answered or refused (or dropped by the kernel, full), and every reply to the
    // other source is in its socket.
    answered += ask(&other, chargen);
    let elapsed = started.elapsed().as_secs_f64();
    other.set_nonblocking(true).unwrap();
    while other.recv_from(&mut [0; 1024]).is_ok() {
        answered += 1;
    }
    // Every datagram the server received has been answered, dropped or refused (counted a
    // moment after the reply it may have sent).
    let s = server.wait_stats("every datagram accounted for", |s| {
        s.datagrams_in == s.datagrams_out + s.datagrams_dropped + s.datagrams_rate_limited
    });
    let to_flooder = s.datagrams_out - answered;
    let allowed = RATE + (RATE as f64 * elapsed).ceil() as u64 + 1;
    assert!(
        to_flooder <= allowed,
        "{to_flooder} replies to one source in {elapsed:.3} s, limit {RATE}/s (at most {allowed})"
    );
    assert!(s.datagrams_rate_limited > 0, "{s}");
}

/// Refused datagrams are counted by reason on `/metrics` and logged, at most one line per
/// interval: twenty forged datagrams from a privileged port make one log line and a count of
/// twenty.
#[test]
fn refusals_are_counted_and_logged_at_a_bounded_rate() {
    let daemon =
        common::daemon::Daemon::start(&["-l", "udp-echo=127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (echo, admin) = (daemon.addr_of("udp-echo"), daemon.addr_of("admin"));
    const FORGED: u64 = 20;
    for _ in 0..FORGED {
        // From chargen's well-known port: the classic loop.
        spoof(19, echo, b"x");
    }
    let sample = format!(
        "loopd_datagrams_refused_total{{service=\"udp-echo\",listener=\"{echo}\",reason=\"low_port\"}}"
    );
    wait_until("the refusals counted", || {
        let text = http_get(admin, "/metrics").body;
        (metric(&text, &sample) == Some(FORGED as f64)).then_some(())
    });
    let line = daemon.wait_log("not answering 127.0.0.1:19");
    assert!(line.contains("below 1024"), "{line}");
    let lines = daemon
        .log()
        .iter()
        .filter(|l| l.contains("not answering"))
        .count();
    assert_eq!(lines, 1, "{:?}", daemon.log());
    let text = http_get(admin, "/metrics").body;
    assert_eq!(
        metric(
            &text,
            &format!("loopd_datagrams_sent_total{{service=\"udp-echo\",listener=\"{echo}\"}}")
        ),
        Some(0.0)
    );
}

/// A loop between two servers on high ports: the port rules cannot see it (neither port is
/// privileged, neither is the other server's own), so it runs until a rate limit refuses an
/// answer — which drops the one datagram the loop is made of. Returns the datagrams each
/// server sent, counted once the loop has ended.
fn loop_between(a: (Config, Builtin), b: (Config, Builtin)) -> (u64, u64) {
    let (a, b) = (
        TestServer::start(a.0, &[a.1]),
        TestServer::start(b.0, &[b.1]),
    );
    spoof(b.addr().port(), a.addr(), b"x");
    wait_until("a rate limit to end the loop", || {
        let limited = a.stats().datagrams_rate_limited + b.stats().datagrams_rate_limited;
        (limited >= 1).then_some(())
    });
    let counts = || (a.stats().datagrams_out, b.stats().datagrams_out);
    let before = counts();
    probe(&[a.addr(), b.addr()], 1);
    // A reply can reach its client a moment before the loop counts it.
    let after = wait_until("the probes' replies counted", || {
        let now = counts();
        (now.0 > before.0 && now.1 > before.1).then_some(now)
    });
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "still looping: only the probes should have been answered"
    );
    before
}

/// chargen on one server and echo on another, on high ports: a forged datagram starts a loop
/// that chargen's rate limit (on by default) ends after one burst.
#[test]
fn loop_with_another_server_ends_at_the_chargen_rate_limit() {
    let (chargen, echo) = loop_between(
        (Config::default(), Builtin::UdpChargen),
        (Config::default(), Builtin::UdpEcho),
    );
    let burst = u64::from(DEFAULT_UDP_RATE_LIMIT);
    assert!(chargen <= burst + 1, "{chargen} answers from chargen");
    assert!(echo <= chargen, "{echo} echoes of {chargen}");
}

/// echo on two servers: no limit is on by default (echo amplifies nothing, and load tools
/// must not be throttled), so `--udp-echo-rate-limit` on one of them is what ends the loop.
#[test]
fn echo_loop_between_two_servers_ends_where_the_echo_limit_is_on() {
    const LIMIT: u32 = 20;
    let mut limited = Config::default();
    limited.loops.udp.echo_rate_limit = Some(LIMIT);
    let (a, b) = loop_between(
        (limited, Builtin::UdpEcho),
        (Config::default(), Builtin::UdpEcho),
    );
    assert!(
        a <= u64::from(LIMIT) + 1,
        "{a} echoes from the limited server"
    );
    assert!(b <= a + 1, "{b} echoes from the other");
}
