//! The framed services on the wire: line (newline-delimited commands) and frame (4-byte
//! big-endian length prefix).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};

use common::*;
use loopd::config::Config;
use loopd::service::line::{Line, DEFAULT_MAX_LINE, INCOMPLETE};
use loopd::service::{Builtin, ConnInfo, Handler, Output, Service, ServiceFactory};
use loopd::{EndpointSpec, Server};

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

/// What a [`Counted`] line service saw of its input: the size of each read, and how many
/// reads ended inside a line.
#[derive(Debug, Default)]
struct Reads {
    sizes: Vec<usize>,
    ended_mid_line: usize,
}

/// The line service, watched: each call that brings new bytes is one read of the socket
/// (nothing here is held back for output room, so no call only re-offers input).
struct Counted {
    line: Line,
    held: usize,
    reads: Arc<Mutex<Reads>>,
}

impl Service for Counted {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        let used = self.line.on_input(input, out);
        let mut reads = self.reads.lock().unwrap();
        reads.sizes.push(input.len() - self.held);
        self.held = input.len() - used;
        if self.held > 0 {
            reads.ended_mid_line += 1;
        }
        used
    }

    fn on_peer_finished(&mut self, out: &mut Output<'_>) {
        self.line.on_peer_finished(out);
    }

    fn input_limit(&self) -> Option<usize> {
        self.line.input_limit()
    }
}

/// The boundaries of the sender's writes do not survive TCP: 10,000 lines sent in one write
/// reach the service in a few reads, far fewer than 10,000, each holding many lines
/// ("sticky packets"), and a read can end in the middle of a line ("half packets"), whose
/// rest comes with the next read. The replies come back just as coalesced: the client reads
/// them in a few reads too. Every line is answered, in order, whatever the split.
#[test]
fn ten_thousand_lines_arrive_in_a_few_reads() {
    let reads = Arc::new(Mutex::new(Reads::default()));
    let seen = Arc::clone(&reads);
    let factory: Arc<dyn ServiceFactory> = Arc::new(move |conn: &ConnInfo<'_>| {
        Box::new(Counted {
            line: Line::new(conn, DEFAULT_MAX_LINE),
            held: 0,
            reads: Arc::clone(&seen),
        }) as Box<dyn Service>
    });
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config::default();
    let endpoint = EndpointSpec::bind(addr, Handler::Stream(factory));
    let server = Server::with_endpoints(&config.deployment, &config.loops, vec![endpoint]).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());

    let mut c = connect(addr);
    let requests: String = (0..10_000).map(|i| format!("PING {i:05}\n")).collect();
    c.write_all(requests.as_bytes()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let expected: String = (0..10_000).map(|i| format!("PONG {i:05}\r\n")).collect();
    let (mut got, mut client_reads, mut buf) = (Vec::new(), 0, vec![0; 256 * 1024]);
    loop {
        match c.read(&mut buf).unwrap() {
            0 => break,
            n => {
                got.extend_from_slice(&buf[..n]);
                client_reads += 1;
            }
        }
    }
    assert!(got == expected.as_bytes(), "the replies differ");
    handle.shutdown();
    thread.join().unwrap().unwrap();

    let reads = reads.lock().unwrap();
    let total: usize = reads.sizes.iter().sum();
    assert_eq!(total, requests.len(), "every byte read once: {reads:?}");
    eprintln!(
        "10,000 lines ({total} bytes) in {} server reads ({:?} bytes), {} ending mid-line; \
         the replies in {client_reads} client reads",
        reads.sizes.len(),
        reads.sizes,
        reads.ended_mid_line
    );
    assert!(
        reads.sizes.len() <= 100,
        "10,000 lines took {} reads: {reads:?}",
        reads.sizes.len()
    );
    assert!(client_reads <= 100, "the replies took {client_reads} reads");
}

/// The peer finishes sending with a line left without its ending: the lines before it are
/// answered, the incomplete one is reported and not answered, then both sides close.
#[test]
fn incomplete_last_line_is_reported_at_eof() {
    let server = TestServer::start(Config::default(), &[Builtin::Line]);
    let mut c = connect(server.addr());
    let got = exchange(&mut c, b"PING\nECHO cut sh", 3);
    assert_eq!(
        String::from_utf8(got).unwrap(),
        format!("PONG\r\n{INCOMPLETE}\r\n")
    );
    let s = server.wait_stats("closed", |s| s.active == 0);
    assert_eq!(s.closed_peer, 1, "{s}");
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

/// Malformed input never panics the server: garbage gets errors, half a line followed by EOF
/// is reported and closed, a length prefix followed by EOF closes cleanly, and the server
/// keeps serving.
#[test]
fn malformed_input() {
    let server = TestServer::start(Config::default(), &[Builtin::Line, Builtin::Frame]);
    let (line_addr, frame_addr) = (server.addrs[0], server.addrs[1]);

    let mut c = connect(line_addr);
    let garbage: Vec<u8> = (0..=255u8).chain([b'\n']).collect();
    let got = exchange(&mut c, &garbage, garbage.len());
    assert!(String::from_utf8_lossy(&got).starts_with("ERR unknown command"));

    // Half a line, then EOF: not answered as a request, but reported, then the close.
    let mut c = connect(line_addr);
    let got = exchange(&mut c, b"ECHO never fini", 4);
    assert_eq!(got, format!("{INCOMPLETE}\r\n").as_bytes());

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
