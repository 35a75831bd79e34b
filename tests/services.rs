//! The classic services on the wire: chargen (RFC 864), discard (RFC 863), daytime (RFC 867).

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

/// The RFC 864 pattern, computed independently of the server: line `i` is 72 characters of
/// the printable ring starting at character `i`, then CRLF.
fn chargen_reference(len: usize) -> Vec<u8> {
    let ring: Vec<u8> = (b' '..=b'~').collect();
    let mut out = Vec::with_capacity(len + 74);
    let mut line = 0;
    while out.len() < len {
        out.extend((0..72).map(|k| ring[(line + k) % ring.len()]));
        out.extend_from_slice(b"\r\n");
        line += 1;
    }
    out.truncate(len);
    out
}

/// Chargen's stream is the RFC 864 pattern, wrapping after 95 lines.
#[test]
fn chargen_matches_rfc_864() {
    let server = TestServer::start(Config::default(), &[Builtin::Chargen]);
    let mut c = connect(server.addr());
    let len = 95 * 74 * 3 + 1000;
    let got = read_n(&mut c, len);
    assert!(got == chargen_reference(len), "pattern differs");
    // The client half-closes and reads on: the server flushes what it had pending (at most
    // the watermark), stops generating, and sends FIN.
    c.shutdown(Shutdown::Write).unwrap();
    let tail = read_to_eof(&mut c);
    let mut all = got;
    all.extend(tail);
    assert!(
        all == chargen_reference(all.len()),
        "pattern differs before FIN"
    );
    server.wait_stats("chargen closed", |s| s.active == 0 && s.closed_peer == 1);
}

/// The first 10 MiB on the wire are exactly the RFC 864 stream, as an independent generator
/// writes it: the pattern sent from a static buffer, in chunks, across partial writes.
#[test]
fn chargen_first_ten_mib_exact() {
    let server = TestServer::start(Config::default(), &[Builtin::Chargen]);
    let mut c = connect(server.addr());
    let len = 10 << 20;
    let got = read_n(&mut c, len);
    assert!(
        got == chargen_reference(len),
        "pattern differs within 10 MiB"
    );
}

/// Against a client that stops reading, chargen's pending output stops at the high
/// watermark and memory stays bounded however long the stall; reading again resumes the
/// pattern exactly where it left off.
#[test]
fn chargen_bounded_against_stopped_reader() {
    let mut config = Config::default();
    config.loops.limits.high_watermark = 64 * 1024;
    config.loops.limits.low_watermark = 16 * 1024;
    config.loops.limits.write_stall_timeout = None;
    let server = TestServer::start(config, &[Builtin::Chargen, Builtin::Echo]);
    let mut c = connect(server.addr());
    let mut first = read_n(&mut c, 1000);

    // Stop reading. The kernel buffers fill, output starts pending on the server, and then
    // nothing moves.
    let mut last = server.stats().bytes_out;
    let mut still_since = Instant::now();
    let stalled = wait_until("chargen output stops moving", || {
        let s = server.stats();
        if s.bytes_out != last {
            last = s.bytes_out;
            still_since = Instant::now();
            return None;
        }
        (s.peak_pending_output > 0 && still_since.elapsed() > Duration::from_millis(100))
            .then_some(s)
    });
    // Keep the loop busy on another connection: chargen must not grow meanwhile.
    let mut other = connect(server.addrs[1]);
    for i in 0..500u64 {
        round_trip(&mut other, &pattern(i, 100));
    }
    // Counters are updated just after the write that a client may already have read.
    let later = server.wait_stats("echo counted", |s| {
        s.bytes_out >= stalled.bytes_out + 500 * 100
    });
    assert!(
        later.peak_pending_output <= 64 * 1024,
        "pending grew past the watermark: {later}"
    );
    assert_eq!(
        later.bytes_out - stalled.bytes_out,
        500 * 100,
        "chargen kept producing without a reader"
    );

    // Read on: the stream continues without a gap or a repeat.
    let more = read_n(&mut c, 4 << 20);
    first.extend(more);
    assert!(
        first == chargen_reference(first.len()),
        "pattern broken across the stall"
    );
}

/// Discard reads and counts everything and sends nothing.
#[test]
fn discard_counts_bytes() {
    let server = TestServer::start(Config::default(), &[Builtin::Discard]);
    let mut c = connect(server.addr());
    let data = pattern(3, 3 << 20);
    c.write_all(&data).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut c).is_empty(), "discard sent something");
    let s = server.wait_stats("discard closed", |s| s.active == 0);
    assert_eq!(s.bytes_in, data.len() as u64);
    assert_eq!(s.bytes_out, 0);
}

/// Daytime sends one RFC 3339 line and then FIN, without being asked anything.
#[test]
fn daytime_one_line_then_fin() {
    let server = TestServer::start(Config::default(), &[Builtin::Daytime]);
    let mut c = connect(server.addr());
    let got = String::from_utf8(read_to_eof(&mut c)).unwrap();
    let line = got.strip_suffix("\r\n").expect("CRLF-terminated");
    assert!(!line.contains('\n'));
    let t = humantime::parse_rfc3339(line).expect("RFC 3339 time");
    let age = std::time::SystemTime::now()
        .duration_since(t)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "time is off by {age:?}");
    drop(c);
    server.wait_stats("daytime closed", |s| {
        s.active == 0 && s.closed_server + s.closed_peer == 1
    });
}

/// Nothing a client sends to chargen is echoed or kept.
#[test]
fn chargen_ignores_input() {
    let server = TestServer::start(Config::default(), &[Builtin::Chargen]);
    let mut c = connect(server.addr());
    c.write_all(&[0xFF; 10_000]).unwrap();
    let got = read_n(&mut c, 10_000);
    assert!(got == chargen_reference(10_000));
    let mut buf = [0; 1];
    c.read_exact(&mut buf).unwrap();
}

/// RFC 868 over TCP: four bytes, the seconds since 1900 by the server's clock, then FIN. The
/// value is checked against an independent computation from this machine's clock.
#[test]
fn time_is_seconds_since_1900_then_fin() {
    let server = TestServer::start(Config::default(), &[Builtin::Time]);
    let mut c = connect(server.addr());
    let before = seconds_since_1900();
    let got = read_to_eof(&mut c);
    let after = seconds_since_1900();
    assert_eq!(got.len(), 4, "{got:?}");
    let t = u32::from_be_bytes(got[..4].try_into().unwrap());
    assert!(
        (before..=after).contains(&t),
        "{t} not in {before}..={after}"
    );
}

/// The RFC 868 count now, computed here from the Unix clock and the calendar: 70 years of
/// 365 days and 17 leap days separate 1900 from 1970.
fn seconds_since_1900() -> u32 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (unix + (70 * 365 + 17) * 86_400) as u32
}
