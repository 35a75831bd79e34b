//! The framed services on the wire: line (newline-delimited commands) and frame (4-byte
//! big-endian length prefix).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;

use common::*;
use loopd::config::Config;
use loopd::service::Builtin;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Each command's reply over a real connection; WHOAMI is the client's own address; QUIT
/// says BYE and closes.
#[test]
fn line_commands() {
    let server = TestServer::start(Config::default(), &[Builtin::Line]);
    let mut c = connect(server.addr());
    let me = c.local_addr().unwrap().to_string();
    c.write_all(b"PING\r\nping there\nECHO some text\nWHOAMI\nstats\nTIME\nHELP\nbogus\nQUIT\n")
        .unwrap();
    let reply = String::from_utf8(read_to_eof(&mut c)).unwrap();
    let lines: Vec<&str> = reply.split("\r\n").collect();
    assert_eq!(lines[0], "PONG");
    assert_eq!(lines[1], "PONG there");
    assert_eq!(lines[2], "some text");
    assert_eq!(lines[3], me);
    assert!(lines[4].contains("accepted=1 active=1 "), "{}", lines[4]);
    humantime::parse_rfc3339(lines[5]).expect("TIME is RFC 3339");
    assert!(lines[6].starts_with("commands: PING"));
    assert_eq!(lines[7], "ERR unknown command 'bogus'");
    assert_eq!(lines[8], "BYE");
    assert_eq!(lines[9], "", "nothing after BYE but the close");
    assert_eq!(lines.len(), 10);
}

/// 10,000 pipelined requests in a single write are all answered, in order.
#[test]
fn ten_thousand_pipelined_lines() {
    let server = TestServer::start(Config::default(), &[Builtin::Line]);
    let mut c = connect(server.addr());
    let requests: String = (0..10_000).map(|i| format!("ECHO {i}\n")).collect();
    c.write_all(requests.as_bytes()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let reader = BufReader::new(c);
    let mut n = 0;
    for (i, line) in reader.lines().enumerate() {
        assert_eq!(line.unwrap().trim_end(), i.to_string());
        n += 1;
    }
    assert_eq!(n, 10_000);
}

/// 10,000 pipelined frames in a single write come back identical, in order.
#[test]
fn ten_thousand_pipelined_frames() {
    let server = TestServer::start(Config::default(), &[Builtin::Frame]);
    let mut c = connect(server.addr());
    let stream: Vec<u8> = (0..10_000u64)
        .flat_map(|i| frame(&pattern(i, (i % 97) as usize)))
        .collect();
    let got = exchange(&mut c, &stream, stream.len());
    assert!(got == stream, "frames differ");
}

/// An oversize line: earlier replies, then the error, then a graceful close; the server
/// stops taking line bytes at the limit, and other connections are unaffected.
#[test]
fn oversize_line() {
    let server = TestServer::start(Config::default(), &[Builtin::Line]);
    let mut other = connect(server.addr());
    let mut c = connect(server.addr());
    let mut input = b"PING first\n".to_vec();
    input.extend(vec![b'x'; 4 << 20]); // 4 MiB, no newline
    let got = String::from_utf8(exchange(&mut c, &input, 64 * 1024)).unwrap();
    assert_eq!(got, "PONG first\r\nERR line too long\r\n");
    let s = server.wait_stats("closed", |s| s.closed_server + s.closed_peer == 1);
    // What reached the service is bounded by the limit plus one read, not the 4 MiB sent.
    let ceiling = 8 * 1024 + 64 * 1024 + input.len() as u64 - (4 << 20);
    assert!(s.bytes_in <= ceiling, "service took {} bytes", s.bytes_in);
    other.write_all(b"PING still here\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut other).read_line(&mut line).unwrap();
    assert_eq!(line, "PONG still here\r\n");
}

/// An oversize length prefix: earlier frames are answered, then the connection closes;
/// other connections are unaffected.
#[test]
fn oversize_frame() {
    let server = TestServer::start(Config::default(), &[Builtin::Frame]);
    let mut other = connect(server.addr());
    let mut c = connect(server.addr());
    let mut input = frame(b"one");
    input.extend(frame(b"two"));
    input.extend((2u32 << 20).to_be_bytes()); // 2 MiB > the 1 MiB limit
    input.extend(vec![0u8; 100_000]);
    let got = exchange(&mut c, &input, input.len());
    let mut expected = frame(b"one");
    expected.extend(frame(b"two"));
    assert_eq!(got, expected);
    let f = frame(b"unaffected");
    round_trip(&mut other, &f);
}

/// Malformed input never panics the server: garbage gets errors, a length prefix or half a
/// line followed by EOF closes cleanly, and the server keeps serving.
#[test]
fn malformed_input() {
    let server = TestServer::start(Config::default(), &[Builtin::Line, Builtin::Frame]);
    let (line_addr, frame_addr) = (server.addrs[0], server.addrs[1]);

    let mut c = connect(line_addr);
    let garbage: Vec<u8> = (0..=255u8).chain([b'\n']).collect();
    let got = exchange(&mut c, &garbage, garbage.len());
    assert!(String::from_utf8_lossy(&got).starts_with("ERR unknown command"));

    // Half a line, then EOF: an incomplete request gets no reply, just the close.
    let mut c = connect(line_addr);
    assert!(exchange(&mut c, b"ECHO never fini", 4).is_empty());

    // A length prefix promising 100 bytes, then EOF after 10.
    let mut c = connect(frame_addr);
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend([7; 10]);
    assert!(exchange(&mut c, &partial, 3).is_empty());

    // Half a header.
    let mut c = connect(frame_addr);
    assert!(exchange(&mut c, &[0, 0], 1).is_empty());

    let s = server.wait_stats("all closed", |s| s.active == 0);
    assert_eq!(s.closed_error + s.closed_protocol, 0, "{s}");
    let mut c = connect(frame_addr);
    round_trip(&mut c, &frame(b"alive"));
}

/// On a dual-stack `[::]` listener, an IPv4 client is shown as the IPv4 address it is, not
/// as an IPv4-mapped IPv6 address.
#[test]
fn whoami_on_dual_stack_shows_ipv4() {
    let config = Config {
        listen: vec!["line=[::]:0".parse().unwrap()],
        ..Config::default()
    };
    let server = loopd::Server::new(&config).expect("IPv6 is available");
    let port = server.local_addrs()[0].port();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    let mut c = connect(([127, 0, 0, 1], port).into());
    let me = c.local_addr().unwrap();
    c.write_all(b"WHOAMI\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut c).read_line(&mut line).unwrap();
    assert_eq!(line, format!("{me}\r\n"));
    drop(c);
    handle.shutdown();
    thread.join().unwrap().unwrap();
}
