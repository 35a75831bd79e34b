//! A newline-delimited request/response protocol.
//!
//! TCP delivers a byte stream, not messages: one read may hold half a request, or a hundred.
//! This service finds request boundaries by delimiter. [`Service::on_input`] is handed every
//! byte not yet consumed; it answers each complete line in order (pipelining needs nothing
//! more) and returns how far it got, so an incomplete last line stays with the connection until
//! the rest arrives.
//!
//! Requests end in `\n`; a `\r` before it is stripped. Commands are case-insensitive:
//!
//! | request | reply |
//! | --- | --- |
//! | `PING [text]` | `PONG [text]` |
//! | `ECHO text` | `text` |
//! | `TIME` | the current UTC time, RFC 3339 |
//! | `WHOAMI` | the client's address: the one a PROXY protocol header named, or the peer's |
//! | `SERVER` | `<server-id> <listener address> <loop>`: which backend, listener and loop answered |
//! | `STATS` | the server id and the endpoint's counters in this loop, one line of `key=value` |
//! | `TLS` | what the TLS handshake settled, one line of `key=value`: `version`, `cipher`, `group`, `alpn`, `sni`, `resumed`, `client` (the certificate's subject), `-` for what is absent; `not TLS: a plaintext connection` on a plain one |
//! | `HELP` | the command list |
//! | `QUIT` | `BYE`, then a graceful close |
//! | anything else | `ERR unknown command '…'`; the connection stays open |
//!
//! Replies end in `\r\n`. A line longer than the limit (`--max-line`) gets `ERR line too long`
//! and a graceful close. The limit is enforced while the line is still arriving, so a client
//! that never sends a newline holds at most the limit plus one read of the server's memory.
//! A last line the peer leaves without its ending when it finishes sending is not answered as
//! a request (it may be a command cut short) but reported: `ERR incomplete line at end of
//! input`, then the close.
//!
//! Finding the ending is linear in the bytes received, however they are split: the service
//! remembers how much of the incomplete line it has searched already (as tokio-util's
//! `LinesCodec` does), so the bytes held from earlier reads are not searched again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::{ConnInfo, Negotiated, Output, Service};
use crate::stats::Stats;

/// Default for `--max-line`: far above any command this protocol has, small enough that
/// 10,000 clients each holding a partial line cost 80 MiB at most.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// The longest command name quoted back in an error: the reply to garbage stays short.
const QUOTE_LIMIT: usize = 32;

/// The reply to a line the peer left without its ending when it finished sending.
pub const INCOMPLETE: &str = "ERR incomplete line at end of input";

const HELP: &str = "commands: PING [text], ECHO text, TIME, WHOAMI, SERVER, STATS, TLS, HELP, QUIT";

/// The `TLS` reply on a plain connection: not an error (the question has an answer), and
/// never mistaken for a TLS one, whose reply starts with `version=`.
const NOT_TLS: &[u8] = b"not TLS: a plaintext connection";

/// The line service for one connection.
pub struct Line {
    client: SocketAddr,
    server_id: Arc<str>,
    listener: SocketAddr,
    loop_index: usize,
    stats: Arc<Stats>,
    max_line: usize,
    /// The length of the incomplete line the connection holds for this service (the tail of
    /// the input it left unconsumed), all of it searched already: it holds no `\n`.
    partial: usize,
    /// Bytes examined looking for line endings, so that a test can hold the scan to linear
    /// work.
    #[cfg(test)]
    examined: usize,
    /// What the TLS handshake settled; boxed, so a plain connection carries one word.
    tls: Option<Box<Negotiated>>,
}

impl Line {
    /// A line service for the connection `conn` describes, with lines up to `max_line` bytes
    /// (not counting the line ending).
    pub fn new(conn: &ConnInfo<'_>, max_line: usize) -> Line {
        Line {
            client: conn.client(),
            server_id: Arc::clone(conn.server_id),
            listener: conn.listener,
            loop_index: conn.loop_index,
            stats: Arc::clone(conn.stats),
            max_line,
            partial: 0,
            #[cfg(test)]
            examined: 0,
            tls: conn.tls.map(|n| Box::new(n.clone())),
        }
    }

    /// The position of the first `\n` in `bytes`.
    fn find_newline(&mut self, bytes: &[u8]) -> Option<usize> {
        let found = bytes.iter().position(|&b| b == b'\n');
        #[cfg(test)]
        {
            self.examined += found.map_or(bytes.len(), |i| i + 1);
        }
        found
    }

    /// Answers one request line (without its line ending). Returns `false` to end the
    /// conversation.
    fn answer(&self, line: &[u8], out: &mut Output<'_>) -> bool {
        let (command, arg) = match line.iter().position(|&b| b == b' ') {
            Some(space) => (&line[..space], Some(&line[space + 1..])),
            None => (line, None),
        };
        let is = |name: &str| command.eq_ignore_ascii_case(name.as_bytes());
        if is("PING") {
            match arg {
                Some(text) => reply(out, &[b"PONG ", text]),
                None => reply(out, &[b"PONG"]),
            }
        } else if is("ECHO") {
            reply(out, &[arg.unwrap_or_default()]);
        } else if is("TIME") {
            let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            reply(out, &[now.as_bytes()]);
        } else if is("WHOAMI") {
            reply(out, &[self.client.to_string().as_bytes()]);
        } else if is("SERVER") {
            let listener = format!(" {} {}", self.listener, self.loop_index);
            reply(out, &[self.server_id.as_bytes(), listener.as_bytes()]);
        } else if is("STATS") {
            let counters = self.stats.snapshot().to_string();
            reply(
                out,
                &[
                    b"server_id=",
                    self.server_id.as_bytes(),
                    b" ",
                    counters.as_bytes(),
                ],
            );
        } else if is("TLS") {
            match &self.tls {
                Some(negotiated) => reply(out, &[negotiated.to_string().as_bytes()]),
                None => reply(out, &[NOT_TLS]),
            }
        } else if is("HELP") {
            reply(out, &[HELP.as_bytes()]);
        } else if is("QUIT") {
            reply(out, &[b"BYE"]);
            return false;
        } else {
            let quoted = &command[..command.len().min(QUOTE_LIMIT)];
            let quoted = quoted.escape_ascii().to_string();
            let more = if command.len() > QUOTE_LIMIT {
                "..."
            } else {
                ""
            };
            reply(
                out,
                &[format!("ERR unknown command '{quoted}{more}'").as_bytes()],
            );
        }
        true
    }
}

/// Writes the parts of one reply line and its CRLF.
fn reply(out: &mut Output<'_>, parts: &[&[u8]]) {
    for part in parts {
        out.write(part);
    }
    out.write(b"\r\n");
    out.end_reply();
}

impl Service for Line {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
        let mut used = 0;
        // The first line's bytes that an earlier call already searched: the connection
        // offers the unconsumed tail again, followed by newer bytes, so only the newer bytes
        // need looking at. Rescanning from the start would make a line trickled in a byte at
        // a time cost O(n²).
        let mut searched = std::mem::take(&mut self.partial).min(input.len());
        // The output contract: answer only while output has room. A reply may be far longer
        // than its request (STATS: 6 bytes in, hundreds out), so the rest of the input is
        // left unconsumed and offered again once the peer has read what is pending.
        while out.room() > 0 {
            let Some(nl) = self.find_newline(&input[used + searched..]) else {
                // An incomplete line: keep it, unless it is already too long to ever be
                // valid. The `+ 1` leaves room for a `\r` that the next read may show to be
                // part of the ending.
                let partial = input.len() - used;
                if partial > self.max_line.saturating_add(1) {
                    reply(out, &[b"ERR line too long"]);
                    out.finish();
                    return input.len();
                }
                self.partial = partial;
                return used;
            };
            let mut line = &input[used..used + searched + nl];
            used += searched + nl + 1;
            searched = 0;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.len() > self.max_line {
                reply(out, &[b"ERR line too long"]);
                out.finish();
                return input.len();
            }
            if !self.answer(line, out) {
                out.finish();
                return input.len();
            }
        }
        // Out of room. What is left may hold complete lines; whatever the first of them was
        // searched already stays known.
        self.partial = searched;
        used
    }

    /// The peer finished sending. A line it left without its ending is not a request — it
    /// may be a command cut short — so it is not answered as one; but it is not dropped in
    /// silence either: the peer is told, then the connection closes as usual.
    fn on_peer_finished(&mut self, out: &mut Output<'_>) {
        if self.partial > 0 {
            reply(out, &[INCOMPLETE.as_bytes()]);
        }
        out.finish();
    }

    fn input_limit(&self) -> Option<usize> {
        // A partial line and its line ending; more than that was answered or refused.
        Some(self.max_line.saturating_add(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{test_connection, Harness};

    /// A line service for a client at 192.0.2.7:4242 (through a proxy, if `proxied`).
    fn service(max_line: usize, proxied: bool) -> Line {
        test_connection(proxied, |conn| Line::new(conn, max_line))
    }

    fn line() -> Harness<Line> {
        Harness::new(service(16, false))
    }

    fn ask(h: &mut Harness<Line>, input: &[u8]) -> String {
        let used = h.input(input);
        assert_eq!(used, input.len(), "complete lines are consumed");
        String::from_utf8(h.take_output()).unwrap()
    }

    /// Every command's reply, case-insensitive, CRLF or LF.
    #[test]
    fn commands() {
        let mut h = line();
        assert_eq!(ask(&mut h, b"PING\n"), "PONG\r\n");
        assert_eq!(ask(&mut h, b"ping hello\r\n"), "PONG hello\r\n");
        assert_eq!(ask(&mut h, b"Echo a b  c\n"), "a b  c\r\n");
        assert_eq!(ask(&mut h, b"WHOAMI\n"), "192.0.2.7:4242\r\n");
        assert_eq!(ask(&mut h, b"SERVER\n"), "web-1 127.0.0.1:7100 3\r\n");
        assert!(ask(&mut h, b"stats\n").starts_with("server_id=web-1 accepted=0 "));
        assert!(ask(&mut h, b"HELP\n").contains("QUIT"));
        let time = ask(&mut h, b"TIME\n");
        humantime::parse_rfc3339(time.trim_end()).expect("RFC 3339");
        assert!(!h.finished);
        assert_eq!(ask(&mut h, b"QUIT\n"), "BYE\r\n");
        assert!(h.finished);
    }

    /// `TLS` names what the handshake settled, one line of `key=value`, and says so plainly
    /// on a plaintext connection.
    #[test]
    fn tls_command() {
        let mut plain = line();
        assert_eq!(
            ask(&mut plain, b"TLS\n"),
            "not TLS: a plaintext connection\r\n"
        );
        let mut h = line();
        h.service.tls = Some(Box::new(Negotiated {
            version: "TLSv1.3",
            cipher_suite: "TLS13_AES_128_GCM_SHA256",
            group: Some("X25519"),
            alpn: Some("h2".into()),
            sni: Some("a.test".into()),
            resumed: true,
            client_subject: None,
        }));
        assert_eq!(
            ask(&mut h, b"tls\r\n"),
            "version=TLSv1.3 cipher=TLS13_AES_128_GCM_SHA256 group=X25519 alpn=h2 \
             sni=a.test resumed=yes client=-\r\n"
        );
        assert!(!h.finished);
    }

    /// Behind a proxy, WHOAMI names the client the PROXY header named, not the proxy.
    #[test]
    fn whoami_behind_a_proxy() {
        let mut h = Harness::new(service(16, true));
        assert_eq!(ask(&mut h, b"WHOAMI\n"), "192.0.2.7:4242\r\n");
    }

    /// Unknown commands get an error and the connection stays open; garbage is escaped and
    /// truncated in the reply.
    #[test]
    fn unknown_command() {
        let mut h = line();
        assert_eq!(ask(&mut h, b"FLY me\n"), "ERR unknown command 'FLY'\r\n");
        assert_eq!(
            ask(&mut h, b"\x00\xff\n"),
            "ERR unknown command '\\x00\\xff'\r\n"
        );
        assert_eq!(ask(&mut h, b"\n"), "ERR unknown command ''\r\n");
        assert!(!h.finished);
    }

    /// A partial line is left unconsumed until its newline arrives.
    #[test]
    fn partial_line_waits() {
        let mut h = line();
        assert_eq!(h.input(b"PING\nECH"), 5);
        assert_eq!(h.take_output(), b"PONG\r\n");
        assert_eq!(h.input(b"ECHO x\n"), 7);
        assert_eq!(h.take_output(), b"x\r\n");
    }

    /// Pipelined requests are answered in order.
    #[test]
    fn pipelined_in_order() {
        let mut h = line();
        assert_eq!(
            ask(&mut h, b"ECHO 1\nECHO 2\nPING 3\n"),
            "1\r\n2\r\nPONG 3\r\n"
        );
    }

    /// A line over the limit is refused while it is still arriving, then the service ends.
    #[test]
    fn too_long_before_newline() {
        let mut h = line();
        assert_eq!(
            h.input(&[b'a'; 17]),
            0,
            "17 bytes may still end in CRLF: kept"
        );
        assert!(!h.finished);
        // The connection offers the held 17 bytes again with one more.
        assert_eq!(h.input(&[b'a'; 18]), 18);
        assert_eq!(h.take_output(), b"ERR line too long\r\n");
        assert!(h.finished);
    }

    /// A complete line over the limit is refused; replies to earlier lines come first.
    #[test]
    fn too_long_complete_line() {
        let mut h = line();
        let mut input = b"PING\n".to_vec();
        input.extend([b'b'; 17]);
        input.push(b'\n');
        assert_eq!(ask(&mut h, &input), "PONG\r\nERR line too long\r\n");
        assert!(h.finished);
    }

    /// Exactly the limit is fine, with or without CR.
    #[test]
    fn limit_is_inclusive() {
        let mut h = line();
        let mut input = b"ECHO ".to_vec();
        input.extend([b'z'; 11]);
        input.extend(b"\r\n");
        assert_eq!(ask(&mut h, &input), format!("{}\r\n", "z".repeat(11)));
    }

    /// Offers `bytes` one at a time as the connection does: what the service leaves
    /// unconsumed is offered again, followed by the next byte. Returns the replies.
    fn trickle(h: &mut Harness<Line>, bytes: &[u8]) -> Vec<u8> {
        let mut held = Vec::new();
        for &b in bytes {
            held.push(b);
            let used = h.input(&held);
            held.drain(..used);
        }
        h.take_output()
    }

    /// A line trickled in a byte at a time is scanned once, not once per byte: the service
    /// remembers how far it has looked (as tokio-util's `LinesCodec` keeps `next_index`), so
    /// the work is linear in the line's length. Rescanning from the start on every read
    /// examined 8 KiB twice per byte — 67 million bytes for one line.
    #[test]
    fn trickled_line_is_scanned_once() {
        let mut h = Harness::new(service(DEFAULT_MAX_LINE, false));
        let mut request = b"ECHO ".to_vec();
        request.resize(DEFAULT_MAX_LINE, b'x');
        request.extend(b"\r\nPING\n");
        let replies = trickle(&mut h, &request);
        let expected = format!("{}\r\nPONG\r\n", "x".repeat(DEFAULT_MAX_LINE - 5));
        assert_eq!(String::from_utf8(replies).unwrap(), expected);
        let examined = h.service.examined;
        assert!(
            examined <= 2 * request.len(),
            "{examined} bytes examined for a {}-byte input",
            request.len()
        );
    }

    /// A line left without its ending when the peer finishes is reported, after the replies
    /// to the complete lines before it; without one, the close is all there is.
    #[test]
    fn incomplete_last_line_is_reported() {
        let mut h = line();
        assert_eq!(h.input(b"PING\nECHO cut sh"), 5);
        assert_eq!(h.take_output(), b"PONG\r\n");
        h.peer_finished();
        assert_eq!(h.take_output(), format!("{INCOMPLETE}\r\n").as_bytes());
        assert!(h.finished);

        let mut h = line();
        assert_eq!(h.input(b"PING\n"), 5);
        h.take_output();
        h.peer_finished();
        assert!(
            h.take_output().is_empty(),
            "nothing left: nothing to report"
        );
        assert!(h.finished);
    }

    /// A partial line already too long is refused only while output has room: when the
    /// replies before it filled the room, the refusal waits with the line, so pending output
    /// exceeds the high watermark by one reply at most (the output contract). Found by the
    /// `line` fuzz target.
    #[test]
    fn too_long_partial_line_waits_for_room() {
        let mut h = line();
        h.high_watermark = 10;
        let mut input = b"PING xxxxxxx\n".to_vec();
        input.extend([b'a'; 40]);
        assert_eq!(h.input(&input), 13, "the partial line is held");
        assert_eq!(
            h.take_output(),
            b"PONG xxxxxxx\r\n",
            "one reply over the watermark"
        );
        assert!(!h.finished);
        // Offered again once the reply has drained.
        assert_eq!(h.input(&input[13..]), 40);
        assert_eq!(h.take_output(), b"ERR line too long\r\n");
        assert!(h.finished);
    }

    /// The largest limit the type can express does not wrap around: a short partial line
    /// is kept, not refused as too long.
    #[test]
    fn huge_limit_does_not_overflow() {
        let mut h = Harness::new(service(usize::MAX, false));
        assert_eq!(h.input(b"PING"), 0);
        assert!(h.take_output().is_empty());
        assert!(!h.finished);
    }
}
