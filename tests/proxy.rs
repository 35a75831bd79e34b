//! The PROXY protocol against a live daemon, sent by hand: each adversarial header is closed
//! with its own counter while a proxied client beside it keeps exchanging verified bytes;
//! the service sees the client the header names; a header in many pieces works.
//! (tests/load_balancers.rs puts real HAProxy and nginx in front.)

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use common::daemon::Daemon;
use common::*;

fn v1(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        server.ip(),
        client.port(),
        server.port()
    )
    .into_bytes()
}

/// A v2 header naming `client` (IPv4), or LOCAL when `client` is `None`.
fn v2(client: Option<SocketAddr>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match client {
        Some(SocketAddr::V4(c)) => {
            h.extend([0x21, 0x11, 0, 12]);
            h.extend(c.ip().octets());
            h.extend([127, 0, 0, 1]);
            h.extend(c.port().to_be_bytes());
            h.extend(7007u16.to_be_bytes());
        }
        _ => h.extend([0x20, 0x00, 0, 0]),
    }
    h
}

/// `line` and `echo` behind the PROXY protocol, with the admin endpoint and a short header
/// timeout; `extra` flags appended.
fn proxied_daemon(extra: &[&str]) -> Daemon {
    let mut args = vec![
        "-l",
        "echo=127.0.0.1:0,proxy",
        "-l",
        "line=127.0.0.1:0,proxy",
        "--admin",
        "127.0.0.1:0",
        "--proxy-timeout",
        "1s",
        "--server-id",
        "backend-a",
    ];
    args.extend(extra);
    Daemon::start(&args)
}

/// The counter of `outcome` on the listener at `addr`.
fn outcome(admin: SocketAddr, service: &str, addr: SocketAddr, outcome: &str) -> f64 {
    let text = http_get(admin, "/metrics").body;
    let sample = format!(
        "loopd_proxy_connections_total{{service=\"{service}\",listener=\"{addr}\",outcome=\"{outcome}\"}}"
    );
    metric(&text, &sample).unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}

/// Whether the server ended the connection without sending anything: EOF or a reset.
fn refused(mut c: TcpStream) -> bool {
    let mut buf = [0; 64];
    match c.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// WHOAMI answers with the client the header names (v1 and v2), SERVER names this backend,
/// and bytes after the header in the same write are the stream's first bytes, echoed once.
#[test]
fn the_service_sees_the_client_the_header_names() {
    let daemon = proxied_daemon(&[]);
    let (echo, line) = (daemon.addr_of("echo"), daemon.addr_of("line"));
    let client: SocketAddr = "192.0.2.7:56324".parse().unwrap();

    let mut c = connect(line);
    let mut first = v1(client, line);
    first.extend(b"WHOAMI\nSERVER\n");
    c.write_all(&first).unwrap();
    let expected = format!("{client}\r\nbackend-a {line} 0\r\n");
    assert_eq!(read_n(&mut c, expected.len()), expected.as_bytes());

    let mut c = connect(line);
    c.write_all(&v2(Some(client))).unwrap();
    c.write_all(b"WHOAMI\n").unwrap();
    assert_eq!(
        read_n(&mut c, client.to_string().len() + 2),
        format!("{client}\r\n").as_bytes()
    );

    // A LOCAL header (a health check): the socket's own peer stands.
    let mut c = connect(line);
    c.write_all(&v2(None)).unwrap();
    c.write_all(b"WHOAMI\n").unwrap();
    let me = c.local_addr().unwrap().to_string();
    assert_eq!(read_n(&mut c, me.len() + 2), format!("{me}\r\n").as_bytes());

    // Header and data in one write; then a header dribbled a byte at a time.
    let mut c = connect(echo);
    let mut first = v1(client, echo);
    first.extend(b"first bytes");
    c.write_all(&first).unwrap();
    assert_eq!(read_n(&mut c, 11), b"first bytes");
    let mut c = connect(echo);
    c.set_nodelay(true).unwrap();
    for b in v2(Some(client)) {
        c.write_all(&[b]).unwrap();
    }
    round_trip(&mut c, b"after a dribbled header");
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut c).is_empty());
}

/// Each adversarial header is closed with its counter, and a proxied client beside them keeps
/// its conversation throughout: garbage, a 200-byte v1 line without CRLF, a v2 header claiming
/// 65535 bytes, a header that never completes, a FIN before the header, and a valid header
/// followed by RST.
#[test]
fn adversarial_headers_are_closed_and_counted() {
    let daemon = proxied_daemon(&[]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    let client: SocketAddr = "192.0.2.7:1".parse().unwrap();
    let mut good = connect(echo);
    good.write_all(&v1(client, echo)).unwrap();
    let mut n = 0u64;
    let mut keep_talking = |good: &mut TcpStream| {
        n += 1;
        round_trip(good, &pattern(n, 1000));
    };
    keep_talking(&mut good);

    let c = connect(echo);
    (&c).write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(refused(c));
    keep_talking(&mut good);

    let c = connect(echo);
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(200, b'9');
    (&c).write_all(&long).unwrap();
    assert!(refused(c));
    keep_talking(&mut good);

    let c = connect(echo);
    let mut huge = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    huge.extend([0x21, 0x11, 0xFF, 0xFF]);
    (&c).write_all(&huge).unwrap();
    assert!(refused(c));
    keep_talking(&mut good);

    // Never completes: closed at the header timeout (1 s here), not at the idle timeout.
    let c = connect(echo);
    (&c).write_all(b"PROXY TCP4 192.0").unwrap();
    assert!(refused(c));
    keep_talking(&mut good);

    let c = connect(echo);
    c.shutdown(Shutdown::Write).unwrap();
    assert!(refused(c));
    keep_talking(&mut good);

    let c = connect(echo);
    (&c).write_all(&v1(client, echo)).unwrap();
    (&c).write_all(b"then a reset").unwrap();
    reset(c);
    keep_talking(&mut good);

    let counted = |o: &str| outcome(admin, "echo", echo, o);
    wait_until("every refusal counted", || {
        (counted("malformed") == 1.0
            && counted("too_long") == 2.0
            && counted("timeout") == 1.0
            && counted("truncated") == 1.0
            && counted("proxied") == 2.0)
            .then_some(())
    });
    assert_eq!(counted("untrusted"), 0.0);
    assert_eq!(counted("local"), 0.0);
    let text = http_get(admin, "/metrics").body;
    let closed = |reason: &str| {
        metric(
            &text,
            &format!(
                "loopd_connections_closed_total{{service=\"echo\",listener=\"{echo}\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap()
    };
    assert_eq!(closed("proxy"), 5.0);
    assert_eq!(
        closed("reset"),
        1.0,
        "the valid header's RST is an ordinary reset"
    );
    keep_talking(&mut good);
    daemon.wait_log("PROXY header longer than 107 bytes");
    daemon.wait_log("PROXY header of 65551 bytes, over the limit of 2064");
    daemon.wait_log("PROXY header incomplete after 1s");
    daemon.wait_log("not a PROXY protocol header");
}

/// A source outside `--proxy-from` is refused before a byte is read, even with a valid
/// header; a trusted one is served.
#[test]
fn untrusted_sources_are_refused() {
    let daemon = proxied_daemon(&["--proxy-from", "10.0.0.0/8"]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    let c = connect(echo);
    (&c).write_all(&v1("192.0.2.7:1".parse().unwrap(), echo))
        .unwrap();
    assert!(refused(c));
    assert_eq!(outcome(admin, "echo", echo, "untrusted"), 1.0);
    daemon.wait_log("is not allowed to send a PROXY header (--proxy-from 10.0.0.0/8)");

    let trusted = proxied_daemon(&["--proxy-from", "10.0.0.0/8", "--proxy-from", "127.0.0.1"]);
    let echo = trusted.addr_of("echo");
    let mut c = connect(echo);
    c.write_all(&v1("192.0.2.7:1".parse().unwrap(), echo))
        .unwrap();
    round_trip(&mut c, b"trusted");
}

/// Without `,proxy` a header is data: echo returns it (the listener option is per listener,
/// as HAProxy's accept-proxy and nginx's proxy_protocol are).
#[test]
fn only_proxy_listeners_read_a_header() {
    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0", "-l", "line=127.0.0.1:0,proxy"]);
    let echo = daemon.addr_of("echo");
    let header = v1("192.0.2.7:1".parse().unwrap(), echo);
    let mut c = connect(echo);
    round_trip(&mut c, &header);
    assert!(daemon.logged(&format!("line={},proxy", daemon.addr_of("line"))));
}
