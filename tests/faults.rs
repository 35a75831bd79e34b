//! Faults, both ways. The peer's stay local: resets leave the server healthy, and heavy
//! churn never misroutes a byte to a connection that reused a slot. The server's own,
//! injected on purpose (`--fault`), are measured on the wire from a test client: timings
//! within generous tolerances, byte counts exact, RST told apart from FIN; each keeps the
//! server's bounds, repeats with its seed, and is counted where a client can reconcile it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// A client that resets mid-transfer leaves the server healthy with no connection left.
#[test]
fn reset_mid_transfer() {
    let server = TestServer::echo();
    for i in 0..20u64 {
        let mut c = connect(server.addr());
        c.write_all(&pattern(i, 512 * 1024)).unwrap_or(());
        reset(c);
    }
    let s = server.wait_stats("all closed", |s| s.active == 0 && s.closed() == 20);
    assert_eq!(s.closed_error, 0, "resets are not errors: {s}");
    let mut c = connect(server.addr());
    round_trip(&mut c, b"still healthy");
}

/// 10,000 connect-then-close cycles beside verified echo traffic: every byte returns to the
/// connection that sent it.
#[test]
fn churn_never_misroutes() {
    let server = TestServer::start(Config::default(), &[Builtin::Echo]);
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));

    let talkers: Vec<_> = (0..8u64)
        .map(|id| {
            let stop = Arc::clone(&stop);
            let rounds = Arc::clone(&rounds);
            thread::spawn(move || {
                let mut c = connect(addr);
                let mut seq = 0u64;
                // Bounded: at most 1,000,000 round trips even if churn never finishes.
                while !stop.load(Ordering::Relaxed) && seq < 1_000_000 {
                    let msg = pattern(id << 32 | seq, 1 + (seq as usize * 7) % 700);
                    round_trip(&mut c, &msg);
                    rounds.fetch_add(1, Ordering::Relaxed);
                    seq += 1;
                }
            })
        })
        .collect();

    let churners: Vec<_> = (0..4u64)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..2_500u64 {
                    let mut c = connect(addr);
                    if i % 10 == 0 {
                        // Some churners talk before closing, so their slots hold state.
                        round_trip(&mut c, &pattern(1 << 40 | t << 20 | i, 64));
                    }
                    if i % 3 == 0 {
                        reset(c);
                    } else {
                        c.shutdown(Shutdown::Both).ok();
                    }
                }
            })
        })
        .collect();
    for c in churners {
        c.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for t in talkers {
        t.join().unwrap();
    }
    assert!(rounds.load(Ordering::Relaxed) > 0);
    let s = server.wait_stats("all closed", |s| s.active == 0);
    assert_eq!(s.accepted, 10_000 + 8);
    assert_eq!(s.closed_error, 0, "{s}");
    let mut probe = [0u8; 1];
    // The server is still serving.
    let mut c = connect(addr);
    round_trip(&mut c, b"ok");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.read(&mut probe).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// Faults injected on purpose.

/// A server of `services` whose first listener (`SERVICE@0`, the ephemeral port) has the
/// faults `faults`, with `tweak` applied to the rest of its configuration.
fn faulted(services: &[Builtin], faults: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config::default();
    let spec = format!("{}@0={faults}", services[0].name());
    config.deployment.faults.specs = vec![spec.parse().unwrap()];
    config.deployment.faults.seed = Some(1);
    tweak(&mut config);
    TestServer::start(config, services)
}

fn echo_with(faults: &str) -> TestServer {
    faulted(&[Builtin::Echo], faults, |_| {})
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `read() == 0`: the server's FIN.
    Fin,
    /// `ECONNRESET`: the server's RST.
    Rst,
    /// Nothing within the read timeout.
    Silence,
}

/// Reads until FIN, RST or `quiet` of silence; returns the bytes and how it ended.
fn read_until_end(c: &mut TcpStream, quiet: Duration) -> (Vec<u8>, End) {
    c.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (got, End::Fin),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, End::Rst),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, End::Silence)
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// One echo round trip of `msg`, timed.
fn timed_round_trip(c: &mut TcpStream, msg: &[u8]) -> Duration {
    let t = Instant::now();
    round_trip(c, msg);
    t.elapsed()
}

/// The injections the server counted for `kind`, summed over its listeners.
fn injected(server: &TestServer, kind: &str) -> u64 {
    server.handle.loops()[0]
        .endpoints()
        .iter()
        .filter_map(|e| e.faults.as_ref())
        .map(|s| s.injected(kind.parse().unwrap()))
        .sum()
}

/// delay holds every reply for its time, and no longer than a loaded machine explains.
#[test]
fn delay_holds_each_reply() {
    let server = echo_with("delay:200ms");
    let mut c = connect(server.addr());
    for i in 0..3 {
        let took = timed_round_trip(&mut c, &pattern(i, 1000));
        assert!(
            took >= Duration::from_millis(200),
            "reply {i} after {took:?}"
        );
        assert!(took < Duration::from_secs(3), "reply {i} after {took:?}");
    }
    assert_eq!(injected(&server, "delay"), 3);
}

/// delay's jitter spreads the holds within ± jitter, and a seed repeats them.
#[test]
fn delay_jitter_stays_within_its_range() {
    let server = echo_with("delay:150ms,jitter:100ms");
    let mut c = connect(server.addr());
    for i in 0..5 {
        let took = timed_round_trip(&mut c, &pattern(i, 10));
        assert!(
            took >= Duration::from_millis(50),
            "reply {i} after {took:?}"
        );
        assert!(took < Duration::from_secs(3), "reply {i} after {took:?}");
    }
}

/// first-byte-delay holds the first reply only.
#[test]
fn first_byte_delay_holds_only_the_first_reply() {
    let server = echo_with("first-byte-delay:1s");
    let mut c = connect(server.addr());
    let first = timed_round_trip(&mut c, b"first");
    let second = timed_round_trip(&mut c, b"second");
    assert!(first >= Duration::from_secs(1), "first after {first:?}");
    assert!(
        second < Duration::from_millis(800),
        "second after {second:?}"
    );
    assert_eq!(injected(&server, "first-byte-delay"), 1);
}

/// bandwidth paces a reply to about its rate: 100 KiB at 50 KiB/s takes about two seconds.
#[test]
fn bandwidth_paces_replies() {
    let server = echo_with("bandwidth:50KiB");
    let mut c = connect(server.addr());
    let data = pattern(7, 100 * 1024);
    let t = Instant::now();
    let got = exchange(&mut c, &data, 16 * 1024);
    let took = t.elapsed();
    assert_eq!(got, data, "every byte, in order");
    assert!(took >= Duration::from_millis(1800), "100 KiB in {took:?}");
    assert!(took < Duration::from_secs(8), "100 KiB in {took:?}");
}

/// slice writes a reply in pieces a gap apart: 1000 bytes in 100-byte slices, 30 ms apart,
/// take at least 9 gaps and arrive in several reads.
#[test]
fn slice_splits_replies_with_gaps() {
    let server = echo_with("slice:100B,gap:30ms");
    let mut c = connect(server.addr());
    let data = pattern(3, 1000);
    c.write_all(&data).unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buf = [0u8; 4096];
    while got.len() < data.len() {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    let took = t.elapsed();
    assert_eq!(got, data);
    assert!(
        took >= Duration::from_millis(9 * 30),
        "10 slices in {took:?}"
    );
    assert!(reads >= 2, "one read took every slice");
}

/// close-after:N answers N replies, then FIN.
#[test]
fn close_after_replies_sends_fin() {
    let server = echo_with("close-after:3");
    let mut c = connect(server.addr());
    for i in 0..3 {
        round_trip(&mut c, &pattern(i, 50));
    }
    let (rest, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!((rest.len(), end), (0, End::Fin));
    assert_eq!(injected(&server, "close-after"), 1);
}

/// close-after:SIZE cuts the reply stream at exactly SIZE bytes, then FIN.
#[test]
fn close_after_size_truncates_then_fin() {
    let server = echo_with("close-after:1000B");
    let mut c = connect(server.addr());
    let data = pattern(9, 3000);
    c.write_all(&data).unwrap();
    let (got, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!(end, End::Fin);
    assert_eq!(got, data[..1000], "exactly the first 1000 bytes");
}

/// reset-after:SIZE sends exactly SIZE bytes, then RST.
#[test]
fn reset_after_size_sends_exact_bytes_then_rst() {
    let server = echo_with("reset-after:1000B");
    let mut c = connect(server.addr());
    let data = pattern(11, 3000);
    c.write_all(&data).unwrap();
    let (got, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!(end, End::Rst);
    assert_eq!(got, data[..1000], "exactly the first 1000 bytes");
    server.wait_stats("closed by the fault", |s| s.closed_fault == 1);
    assert_eq!(injected(&server, "reset-after"), 1);
}

/// reset-after:N answers N replies, then RST.
#[test]
fn reset_after_replies_sends_rst() {
    let server = echo_with("reset-after:2");
    let mut c = connect(server.addr());
    round_trip(&mut c, b"one");
    round_trip(&mut c, b"two");
    let (rest, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!((rest.len(), end), (0, End::Rst));
}

/// reset-after:DUR resets a connection that time after accept, busy or not.
#[test]
fn reset_after_time_resets() {
    let server = echo_with("reset-after:300ms");
    let t = Instant::now();
    let mut c = connect(server.addr());
    round_trip(&mut c, b"still fine");
    let (_, end) = read_until_end(&mut c, PATIENCE);
    let took = t.elapsed();
    assert_eq!(end, End::Rst);
    assert!(took >= Duration::from_millis(300), "reset after {took:?}");
    assert!(took < Duration::from_secs(5), "reset after {took:?}");
}

/// idle-close sends FIN once the connection has been idle that long, counted from its last
/// byte.
#[test]
fn idle_close_sends_fin_after_idle() {
    let server = echo_with("idle-close:300ms");
    let mut c = connect(server.addr());
    let t = Instant::now();
    round_trip(&mut c, b"x");
    let (rest, end) = read_until_end(&mut c, PATIENCE);
    let took = t.elapsed();
    assert_eq!((rest.len(), end), (0, End::Fin));
    // Counted from the server's write of the reply, which is after this clock started and
    // before the client had read it (seen: 299.3 ms measured from the client's read).
    assert!(took >= Duration::from_millis(300), "FIN after {took:?}");
    assert!(took < Duration::from_secs(5), "FIN after {took:?}");
    assert_eq!(injected(&server, "idle-close"), 1);
}

/// close-before-reply reads the request and closes with nothing: FIN by default, RST with
/// how:rst.
#[test]
fn close_before_reply_fin_or_rst() {
    for (how, expected) in [("", End::Fin), (",how:rst", End::Rst)] {
        let server = echo_with(&format!("close-before-reply{how}"));
        let mut c = connect(server.addr());
        c.write_all(b"a request").unwrap();
        let (got, end) = read_until_end(&mut c, PATIENCE);
        assert_eq!((got.len(), end), (0, expected), "close-before-reply{how}");
        assert_eq!(injected(&server, "close-before-reply"), 1);
    }
}

/// blackhole accepts and reads but never answers nor closes; the connection holds a slot of
/// the cap (the next client waits in the backlog) until the idle timeout closes it.
#[test]
fn blackhole_holds_a_slot_until_the_idle_timeout() {
    let server = faulted(&[Builtin::Echo], "blackhole", |c| {
        c.deployment.max_connections = 1;
        c.loops.limits.idle_timeout = Some(Duration::from_millis(1500));
    });
    let t = Instant::now();
    let mut hole = connect(server.addr());
    hole.write_all(b"anyone there?").unwrap();
    server.wait_stats("the blackhole read it", |s| {
        s.bytes_in == 13 && s.active == 1
    });
    let (got, end) = read_until_end(&mut hole, Duration::from_millis(300));
    assert_eq!((got.len(), end), (0, End::Silence), "no reply, no close");
    // The cap is full: a second client is not served while the blackhole holds the slot.
    let mut next = connect(server.addr());
    next.write_all(b"me").unwrap();
    let (got, end) = read_until_end(&mut next, Duration::from_millis(300));
    assert_eq!((got.len(), end), (0, End::Silence));
    // The idle timeout still applies: FIN.
    let (_, end) = read_until_end(&mut hole, PATIENCE);
    assert_eq!(end, End::Fin);
    assert!(t.elapsed() >= Duration::from_millis(1400));
    server.wait_stats("closed idle", |s| s.closed_idle == 1);
}

/// slow-close holds our FIN after the peer's for its time.
#[test]
fn slow_close_delays_our_fin() {
    let server = echo_with("slow-close:500ms");
    let mut c = connect(server.addr());
    round_trip(&mut c, b"bye");
    let t = Instant::now();
    c.shutdown(Shutdown::Write).unwrap();
    let (rest, end) = read_until_end(&mut c, PATIENCE);
    let took = t.elapsed();
    assert_eq!((rest.len(), end), (0, End::Fin));
    assert!(took >= Duration::from_millis(500), "FIN after {took:?}");
    assert!(took < Duration::from_secs(5), "FIN after {took:?}");
}

/// stop-accept: a connect completes into the backlog, nothing is served during the window,
/// and the waiting connection is served (and counted) when it ends.
#[test]
fn stop_accept_leaves_clients_in_the_backlog() {
    let server = echo_with("stop-accept:1s");
    let mut c = connect(server.addr());
    c.write_all(b"waiting").unwrap();
    let (got, end) = read_until_end(&mut c, Duration::from_millis(400));
    assert_eq!(
        (got.len(), end),
        (0, End::Silence),
        "served inside the window"
    );
    assert_eq!(server.stats().accepted, 0);
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_n(&mut c, 7), b"waiting");
    assert!(injected(&server, "stop-accept") >= 1);
}

/// refuse: connects are refused during the window; after it the same port serves.
#[test]
fn refuse_refuses_then_listens_again() {
    let server = echo_with("refuse:1s");
    let addr = server.addr();
    // The window starts at start-up; the loop applies it on its first turn.
    wait_until("a refused connect", || match TcpStream::connect(addr) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
        _ => None,
    });
    let mut c = wait_until("listening again", || TcpStream::connect(addr).ok());
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    round_trip(&mut c, b"back");
    assert_eq!(injected(&server, "refuse"), 1);
}

/// corrupt flips exactly one byte of a reply (every bit of it), and counts it.
#[test]
fn corrupt_flips_one_byte() {
    let server = echo_with("corrupt");
    let mut c = connect(server.addr());
    let data = pattern(5, 1000);
    c.write_all(&data).unwrap();
    let got = read_n(&mut c, data.len());
    let diffs: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(diffs.len(), 1, "one byte differs");
    assert_eq!(got[diffs[0]], data[diffs[0]] ^ 0xFF);
    assert_eq!(injected(&server, "corrupt"), 1);
}

/// fail-first on a raw stream resets the first N connections, then serves all.
#[test]
fn fail_first_resets_the_first_connections() {
    let server = echo_with("fail-first:2");
    for i in 0..2 {
        // Reading first: a write that meets the RST would take its error, and the read after
        // it would say EOF.
        let mut c = connect(server.addr());
        let (got, end) = read_until_end(&mut c, PATIENCE);
        assert_eq!((got.len(), end), (0, End::Rst), "connection {i}");
    }
    let mut c = connect(server.addr());
    round_trip(&mut c, b"third time lucky");
    assert_eq!(injected(&server, "fail-first"), 2);
}

/// fail-first on a framed service fails the first N requests (RST), then answers all.
#[test]
fn fail_first_fails_the_first_requests_of_a_framed_service() {
    let server = faulted(&[Builtin::Line], "fail-first:1", |_| {});
    let mut c = connect(server.addr());
    c.write_all(b"PING\n").unwrap();
    let (got, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!((got.len(), end), (0, End::Rst));
    let mut c = connect(server.addr());
    c.write_all(b"PING\n").unwrap();
    assert_eq!(read_n(&mut c, 6), b"PONG\r\n");
}

fn udp_client() -> UdpSocket {
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    u
}

fn udp_recv(u: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    u.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

/// UDP: drop answers nothing, duplicate answers twice, reorder lets the next answer overtake,
/// delay holds each answer.
#[test]
fn udp_drop_duplicate_reorder_delay() {
    let send = |faults: &str| {
        let server = faulted(&[Builtin::UdpEcho], faults, |_| {});
        (server, udp_client())
    };
    let (server, u) = send("drop");
    u.send_to(b"lost", server.addr()).unwrap();
    assert_eq!(udp_recv(&u), None);
    assert_eq!(injected(&server, "drop"), 1);

    let (server, u) = send("duplicate");
    u.send_to(b"twice", server.addr()).unwrap();
    assert_eq!(udp_recv(&u).as_deref(), Some(&b"twice"[..]));
    assert_eq!(udp_recv(&u).as_deref(), Some(&b"twice"[..]));
    assert_eq!(udp_recv(&u), None);

    let (server, u) = send("reorder,p:50%");
    // With a seed, which datagrams are held is fixed; whichever are, every answer arrives
    // and at least one arrives after a later one.
    let sent: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 8]).collect();
    for d in &sent {
        u.send_to(d, server.addr()).unwrap();
    }
    let mut got = Vec::new();
    while let Some(d) = udp_recv(&u) {
        got.push(d);
    }
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, sent, "every answer, once");
    assert_ne!(got, sent, "some answer overtaken");
    assert!(injected(&server, "reorder") > 0);

    let (server, u) = send("delay:200ms");
    let t = Instant::now();
    u.send_to(b"later", server.addr()).unwrap();
    u.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(udp_recv(&u).as_deref(), Some(&b"later"[..]));
    assert!(t.elapsed() >= Duration::from_millis(200));
}

/// Bounds: a delayed reply is output held under the watermark. A client that sends 4 MiB
/// without reading makes the server stop reading at the high watermark while the replies are
/// held; the peak pending output stays within one read of it, and every byte arrives.
#[test]
fn held_output_stays_under_the_watermark() {
    for faults in ["delay:300ms", "bandwidth:4MiB", "slice:16KiB,gap:1ms"] {
        let server = faulted(&[Builtin::Echo], faults, |_| {});
        let mut c = connect(server.addr());
        let data = pattern(13, 4 << 20);
        let got = exchange(&mut c, &data, 256 * 1024);
        assert!(got == data, "{faults}: every byte, in order");
        let s = server.stats();
        let high = loopd::config::DEFAULT_HIGH_WATERMARK as u64;
        let read = loopd::event_loop::SCRATCH_SIZE as u64;
        assert!(
            s.peak_pending_output <= high + read,
            "{faults}: peak {} over {high} + {read}",
            s.peak_pending_output
        );
        assert!(
            s.backpressure_pauses > 0,
            "{faults}: reading never paused: {s}"
        );
    }
}

/// The same bound where replies are larger than their requests: `line`'s `STATS` (6 bytes
/// in, hundreds out) and `http`'s `size=` (a small request, a 64 KiB generated body), each
/// reply held by `delay` while the client pipelines faster than the holds release them.
/// The peak stays within one read of the watermark, and every reply arrives.
#[test]
fn held_replies_larger_than_their_requests_stay_under_the_watermark() {
    let cases: [(Builtin, &[u8], usize, &str); 2] = [
        (Builtin::Line, b"STATS\n", 5000, "\r\n"),
        (
            Builtin::Http,
            b"GET /?size=65536 HTTP/1.1\r\nHost: x\r\n\r\n",
            100,
            "HTTP/1.1 200 ",
        ),
    ];
    for (service, request, n, per_reply) in cases {
        let server = faulted(&[service], "delay:20ms", |_| {});
        let mut c = connect(server.addr());
        let got = exchange(&mut c, &request.repeat(n), 64 * 1024);
        let got = String::from_utf8_lossy(&got);
        assert_eq!(got.matches(per_reply).count(), n, "{service}: every reply");
        let s = server.stats();
        let high = loopd::config::DEFAULT_HIGH_WATERMARK as u64;
        let read = loopd::event_loop::SCRATCH_SIZE as u64;
        assert!(
            s.peak_pending_output <= high + read,
            "{service}: peak {} over {high} + {read}",
            s.peak_pending_output
        );
        assert!(
            s.backpressure_pauses > 0,
            "{service}: reading never paused: {s}"
        );
    }
}

/// Which replies `corrupt,p:30%` corrupts over 40 sequential connections, by index.
fn corrupted_connections(seed: u64) -> Vec<usize> {
    let mut config = Config::default();
    config.deployment.faults.specs = vec!["echo@0=corrupt,p:30%".parse().unwrap()];
    config.deployment.faults.seed = Some(seed);
    let server = TestServer::start(config, &[Builtin::Echo]);
    (0..40)
        .filter(|&i| {
            let mut c = connect(server.addr());
            let data = pattern(i as u64, 64);
            c.write_all(&data).unwrap();
            read_n(&mut c, 64) != data
        })
        .collect()
}

/// --fault-seed repeats the choices: the same connections are corrupted with the same seed,
/// and a different seed chooses differently.
#[test]
fn a_seed_repeats_the_choices() {
    let a = corrupted_connections(42);
    let b = corrupted_connections(42);
    let c = corrupted_connections(43);
    assert_eq!(a, b, "same seed, same choices");
    assert!((4..=20).contains(&a.len()), "about 30% of 40: {a:?}");
    assert_ne!(a, c, "another seed, other choices");
}

/// `POST path` with no body over a fresh connection, read to the end.
fn http_post(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut c = connect(addr);
    c.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    parse_response(&read_to_eof(&mut c))
}

/// Injections are exported per listener and kind, listed at `GET /faults`; `POST /faults`
/// is refused unless allowed, and once allowed changes what new connections get.
#[test]
fn faults_are_counted_listed_and_changed_through_admin() {
    for allowed in [false, true] {
        let server = faulted(&[Builtin::Echo], "corrupt", |c| {
            c.admin = Some("127.0.0.1:0".parse().unwrap());
            c.deployment.faults.runtime_changes = allowed;
        });
        let (echo, admin) = (server.addrs[0], server.addrs[1]);
        let mut c = connect(echo);
        for i in 0..3 {
            c.write_all(&pattern(i, 100)).unwrap();
            read_n(&mut c, 100);
        }
        let metrics = http_get(admin, "/metrics").body;
        promtool_accepts(&metrics);
        let sample = format!(
            "loopd_faults_injected_total{{service=\"echo\",listener=\"{echo}\",fault=\"corrupt\"}}"
        );
        assert_eq!(metric(&metrics, &sample), Some(3.0), "{metrics}");
        let closed = format!(
            "loopd_connections_closed_total{{service=\"echo\",listener=\"{echo}\",reason=\"fault\"}}"
        );
        assert_eq!(metric(&metrics, &closed), Some(0.0), "{metrics}");
        let listed = http_get(admin, "/faults").body;
        assert!(listed.contains(&format!("echo@{echo}=corrupt")), "{listed}");
        assert!(listed.contains("corrupt injected 3"), "{listed}");

        let changed = http_post(admin, "/faults?echo=delay:800ms");
        if !allowed {
            assert_eq!(changed.status, 403, "{}", changed.body);
            continue;
        }
        assert_eq!(changed.status, 200, "{}", changed.body);
        assert!(changed.body.contains("=delay:800ms"), "{}", changed.body);
        // The connection open before the change keeps its faults; a new one gets the new.
        c.write_all(&pattern(9, 100)).unwrap();
        assert_ne!(read_n(&mut c, 100), pattern(9, 100), "still corrupting");
        let mut fresh = connect(echo);
        let took = timed_round_trip(&mut fresh, b"held, not corrupted");
        assert!(took >= Duration::from_millis(800), "{took:?}");
        assert_eq!(http_post(admin, "/faults?echo@1=drop").status, 404);
        assert_eq!(
            http_post(admin, "/faults?echo=drop").status,
            400,
            "drop is UDP's"
        );
        assert_eq!(http_post(admin, "/faults?echo=none").status, 200);
        let mut plain = connect(echo);
        assert!(timed_round_trip(&mut plain, b"plain") < Duration::from_millis(800));
    }
}

/// Behind a PROXY header, faults act on what follows it: the header is consumed whole and
/// only the reply is corrupted.
#[test]
fn faults_act_after_the_proxy_header() {
    let mut config = Config {
        listen: vec!["echo=127.0.0.1:0,proxy".parse().unwrap()],
        ..Config::default()
    };
    config.deployment.faults.specs = vec!["echo@0=corrupt;first-byte-delay:200ms".parse().unwrap()];
    let server = loopd::Server::new(&config).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let t = thread::spawn(move || server.run());
    let mut c = connect(addr);
    let started = Instant::now();
    c.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n")
        .unwrap();
    let data = pattern(21, 500);
    c.write_all(&data).unwrap();
    let got = read_n(&mut c, 500);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let diffs = (0..500).filter(|&i| got[i] != data[i]).count();
    assert_eq!(diffs, 1, "the reply, one byte");
    drop(c);
    handle.shutdown();
    t.join().unwrap().unwrap();
}

/// The same seed and the same --threads repeat the choices in every loop.
#[test]
fn a_seed_repeats_the_choices_with_several_loops() {
    let run = |seed: u64| {
        let mut config = Config::default();
        config.deployment.threads = 2;
        config.deployment.faults.specs = vec!["echo@0=corrupt,p:50%".parse().unwrap()];
        config.deployment.faults.seed = Some(seed);
        let server = TestServer::start(config, &[Builtin::Echo]);
        // Which connection lands on which loop is the kernel's choice (a hash of the client's
        // port), so what repeats is each loop's own sequence of choices.
        let mut per_loop: Vec<Vec<bool>> = vec![Vec::new(); 2];
        for i in 0..30u64 {
            let mut c = connect(server.addr());
            let data = pattern(i, 64);
            c.write_all(&data).unwrap();
            let corrupted = read_n(&mut c, 64) != data;
            let accepted: Vec<u64> = server.loop_stats().iter().map(|s| s.accepted).collect();
            let on = per_loop
                .iter()
                .enumerate()
                .position(|(l, v)| accepted[l] as usize > v.len())
                .unwrap();
            per_loop[on].push(corrupted);
        }
        per_loop
    };
    let (a, b) = (run(5), run(5));
    for l in 0..2 {
        let n = a[l].len().min(b[l].len());
        assert_eq!(a[l][..n], b[l][..n], "loop {l}");
    }
}

/// A reply held longer than the write-stall timeout is not a stall: the wait is the
/// server's, not the peer's, so the connection is not reset for it.
#[test]
fn a_hold_longer_than_the_write_stall_timeout_is_not_a_stall() {
    let server = faulted(&[Builtin::Echo], "delay:1500ms", |c| {
        c.loops.limits.write_stall_timeout = Some(Duration::from_millis(500));
    });
    let mut c = connect(server.addr());
    let took = timed_round_trip(&mut c, b"patience");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert_eq!(server.stats().closed_write_stall, 0);
}

/// A deadline that comes due with nothing to do is not left armed in the past: with
/// `idle-close` shorter than a `delay`, the held reply keeps the connection from being idle,
/// and the loop sleeps until the reply's time instead of waking again and again. The
/// daemon's CPU time over the hold says which.
#[test]
fn a_held_reply_does_not_spin_the_idle_close_deadline() {
    let d = common::daemon::Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0",
        "--fault",
        "echo=idle-close:50ms;delay:1500ms",
    ]);
    let mut c = connect(d.addr());
    let before = d.cpu_time();
    let took = timed_round_trip(&mut c, b"held");
    let spent = d.cpu_time() - before;
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    // A loop that woke for a past deadline would burn the whole hold; a sleeping one a
    // few milliseconds. Half the hold tells them apart on a loaded machine.
    assert!(
        spent < Duration::from_millis(750),
        "{spent:?} of CPU over a {took:?} hold"
    );
}

/// A service asks for the same machinery itself (an HTTP service's `delay=` and `close=`):
/// `Output::hold` holds that call's reply, later replies wait behind it, and `Output::reset`
/// ends the connection with RST once its reply is sent — on a listener with no faults.
#[test]
fn a_service_holds_and_resets_through_the_same_machinery() {
    use loopd::service::{ConnInfo, Handler, Output, Service, ServiceFactory};

    /// Answers each line with itself; `slow` is held 800 ms, `bye` is the last, then RST.
    struct Knobs;
    impl Service for Knobs {
        fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
            let mut used = 0;
            while let Some(n) = input[used..].iter().position(|&b| b == b'\n') {
                let line = &input[used..used + n + 1];
                out.write(line);
                match line {
                    b"slow\n" => out.hold(Duration::from_millis(800)),
                    b"bye\n" => out.reset(),
                    _ => {}
                }
                used += n + 1;
            }
            used
        }
    }

    let factory: Arc<dyn ServiceFactory> =
        Arc::new(|_: &ConnInfo<'_>| Box::new(Knobs) as Box<dyn Service>);
    let config = Config::default();
    let endpoint =
        loopd::EndpointSpec::bind("127.0.0.1:0".parse().unwrap(), Handler::Stream(factory));
    let server =
        loopd::Server::with_endpoints(&config.deployment, &config.loops, vec![endpoint]).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let t = thread::spawn(move || server.run());

    let mut c = connect(addr);
    assert!(timed_round_trip(&mut c, b"fast\n") < Duration::from_millis(800));
    // The held reply, and the one behind it, wait; a later call is not held by itself.
    let start = Instant::now();
    c.write_all(b"slow\nnext\n").unwrap();
    assert_eq!(read_n(&mut c, 10), b"slow\nnext\n");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    assert!(timed_round_trip(&mut c, b"quick\n") < Duration::from_millis(800));
    c.write_all(b"bye\n").unwrap();
    let (got, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!((got, end), (b"bye\n".to_vec(), End::Rst));
    handle.shutdown();
    t.join().unwrap().unwrap();
}

/// Under socket activation a fault names its listener by the socket's name
/// (`FileDescriptorName=`), here `echo,proxy`: the PROXY header is read first, then the
/// reply is held; the admin socket beside it has no faults.
#[test]
fn socket_activation_names_the_faulted_listener() {
    let activate = require("systemd-socket-activate", "systemd");
    let loopd = common::daemon::loopd_binary();
    let (p_echo, p_admin) = (free_port(), free_port());
    let listen = |p: u16| format!("--listen=127.0.0.1:{p}");
    let daemon = common::daemon::Daemon::start_program(
        None,
        &activate,
        &[
            &listen(p_echo),
            &listen(p_admin),
            "--fdname=echo,proxy:admin",
            loopd.to_str().unwrap(),
            "--fault",
            "echo,proxy=first-byte-delay:300ms",
        ],
        &[],
    );
    let echo: SocketAddr = ([127, 0, 0, 1], p_echo).into();
    let mut c = wait_until("the activated socket", || TcpStream::connect(echo).ok());
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let start = Instant::now();
    c.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\nheld")
        .unwrap();
    assert_eq!(read_n(&mut c, 4), b"held");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    let admin: SocketAddr = ([127, 0, 0, 1], p_admin).into();
    let listed = http_get(admin, "/faults").body;
    assert!(
        listed.contains(&format!("echo@{echo}=first-byte-delay:300ms")),
        "{listed}"
    );
    assert!(listed.contains("first-byte-delay injected 1"), "{listed}");
    drop(daemon);
}

/// A framed service's replies are counted one by one, however many requests one read holds:
/// `close-after:3` answers exactly three of ten pipelined `PING`s, then FIN; `corrupt`
/// flips one byte in each reply.
#[test]
fn pipelined_requests_are_counted_one_by_one() {
    let server = faulted(&[Builtin::Line], "close-after:3", |_| {});
    let mut c = connect(server.addr());
    c.write_all(&b"PING\n".repeat(10)).unwrap();
    let (got, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!(end, End::Fin);
    assert_eq!(
        got,
        b"PONG\r\n".repeat(3),
        "{}",
        String::from_utf8_lossy(&got)
    );

    let server = faulted(&[Builtin::Line], "corrupt", |_| {});
    let mut c = connect(server.addr());
    c.write_all(&b"PING\n".repeat(5)).unwrap();
    let got = read_n(&mut c, 30);
    for (i, reply) in got.chunks(6).enumerate() {
        let flipped = reply
            .iter()
            .zip(b"PONG\r\n")
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(flipped, 1, "reply {i}: {reply:?}");
    }
    assert_eq!(injected(&server, "corrupt"), 5);
}

/// HTTP responses are replies one by one too: `close-after:2` answers two of three
/// pipelined requests, then FIN.
#[test]
fn pipelined_http_requests_are_counted_one_by_one() {
    let server = faulted(&[Builtin::Http], "close-after:2", |_| {});
    let mut c = connect(server.addr());
    c.write_all(&b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(3))
        .unwrap();
    let (got, end) = read_until_end(&mut c, PATIENCE);
    assert_eq!(end, End::Fin);
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
}
