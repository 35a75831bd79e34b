//! Writing a response head into an [`Output`] in a few pieces, with numbers formatted on the
//! stack: no response allocates.
//!
//! Each piece is one [`Output::write`], so the usual head is three: the status line with the
//! connection's `loopd-server` header (kept together per connection), the `Date` line (kept
//! per thread, formatted once a second), and the length with the blank line.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::service::Output;

/// The status line of most responses.
pub const OK_LINE: &[u8] = b"HTTP/1.1 200 OK\r\n";

/// The reason phrase for `status` (RFC 9110 §15); any other code gets an empty one, which
/// RFC 9112 §4 allows.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Whether a response with this status carries no body and no length (RFC 9110 §6.4.1).
pub fn is_bodiless(status: u16) -> bool {
    status == 204 || status == 304 || status < 200
}

/// `HTTP/1.1 200 OK\r\n`.
pub fn status_line(out: &mut Output<'_>, status: u16) {
    if status == 200 {
        out.write(OK_LINE);
        return;
    }
    out.write(b"HTTP/1.1 ");
    decimal(out, u64::from(status));
    out.write(b" ");
    out.write(reason(status).as_bytes());
    out.write(b"\r\n");
}

/// `n` in decimal.
pub fn decimal(out: &mut Output<'_>, n: u64) {
    let mut buf = [0u8; 20];
    let at = decimal_into(&mut buf, n);
    out.write(&buf[at..]);
}

/// Writes `n` in decimal at the end of `buf`; returns where it starts.
fn decimal_into(buf: &mut [u8; 20], n: u64) -> usize {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// `Content-Length: n\r\n`, and the blank line that ends the head if `last`: one piece.
pub fn content_length(out: &mut Output<'_>, n: u64, last: bool) {
    const NAME: &[u8] = b"Content-Length: ";
    let mut digits = [0u8; 20];
    let at = decimal_into(&mut digits, n);
    let mut line = [0u8; NAME.len() + 20 + 4];
    let mut len = NAME.len();
    line[..len].copy_from_slice(NAME);
    line[len..len + 20 - at].copy_from_slice(&digits[at..]);
    len += 20 - at;
    let end: &[u8] = if last { b"\r\n\r\n" } else { b"\r\n" };
    line[len..len + end.len()].copy_from_slice(end);
    out.write(&line[..len + end.len()]);
}

/// `Date: <IMF-fixdate>\r\n` (RFC 9110 §6.6.1: an origin server with a clock sends it).
/// The line is kept per thread and formatted again only when the second changes, as nginx
/// keeps its cached time: a response pays one clock read. A clock outside the years an
/// IMF-fixdate can say (before 1970, after 9999) is not one to date by, and RFC 9110 says a
/// server without a clock sends no `Date`: then none is sent.
pub fn date(out: &mut Output<'_>) {
    /// `Date: ` (6), the date (29: `Sun, 06 Nov 1994 08:49:37 GMT`), CRLF (2).
    const LINE: usize = 37;
    /// 10000-01-01T00:00:00Z, in seconds since the epoch.
    const YEAR_10000: u64 = 253_402_300_800;
    thread_local! {
        static DATE: RefCell<(u64, [u8; LINE])> = const { RefCell::new((u64::MAX, [0; LINE])) };
    }
    let now = SystemTime::now();
    let second = match now.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => since.as_secs(),
        _ => return,
    };
    DATE.with_borrow_mut(|(cached, line)| {
        if *cached != second {
            let text = httpdate::fmt_http_date(now);
            debug_assert_eq!(text.len(), LINE - 8, "{text}");
            line[..6].copy_from_slice(b"Date: ");
            line[6..LINE - 2].copy_from_slice(text.as_bytes());
            line[LINE - 2..].copy_from_slice(b"\r\n");
            *cached = second;
        }
        out.write(&line[..]);
    });
}

/// A chunk's size line: `n` in hex and `CRLF`.
pub fn chunk_size(out: &mut Output<'_>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    let mut i = buf.len() - 2;
    buf[i..].copy_from_slice(b"\r\n");
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.write(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Buffer;

    fn written(f: impl FnOnce(&mut Output<'_>)) -> String {
        let mut buf = Buffer::new();
        let mut finished = false;
        let mut out = Output::new(&mut buf, 1 << 20, &mut finished);
        f(&mut out);
        String::from_utf8(buf.as_slice().to_vec()).unwrap()
    }

    /// Status lines, decimal and hex numbers, as they go on the wire.
    #[test]
    fn pieces() {
        assert_eq!(written(|o| status_line(o, 200)), "HTTP/1.1 200 OK\r\n");
        assert_eq!(
            written(|o| status_line(o, 431)),
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        );
        assert_eq!(written(|o| status_line(o, 299)), "HTTP/1.1 299 \r\n");
        assert_eq!(written(|o| decimal(o, 0)), "0");
        assert_eq!(written(|o| decimal(o, u64::MAX)), u64::MAX.to_string());
        assert_eq!(
            written(|o| content_length(o, 1234, false)),
            "Content-Length: 1234\r\n"
        );
        assert_eq!(
            written(|o| content_length(o, u64::MAX, true)),
            format!("Content-Length: {}\r\n\r\n", u64::MAX)
        );
        assert_eq!(written(|o| chunk_size(o, 0)), "0\r\n");
        assert_eq!(written(|o| chunk_size(o, 0x1f40)), "1f40\r\n");
        assert_eq!(
            written(|o| chunk_size(o, usize::MAX)),
            "ffffffffffffffff\r\n"
        );
    }

    /// The `Date` line: an IMF-fixdate that reads back as now, the same line twice in a
    /// second.
    #[test]
    fn date_line() {
        let line = written(date);
        let text = line
            .strip_prefix("Date: ")
            .and_then(|l| l.strip_suffix("\r\n"))
            .expect(&line);
        assert!(text.ends_with(" GMT") && text.len() == 29, "{line:?}");
        let then = httpdate::parse_http_date(text).expect("an IMF-fixdate");
        let skew = SystemTime::now()
            .duration_since(then)
            .expect("not in the future");
        assert!(skew.as_secs() <= 2, "{line:?} is {skew:?} old");
    }
}
