//! Writing a response head into an [`Output`] piece by piece, with numbers formatted on the
//! stack: no response allocates.

use crate::service::Output;

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
        out.write(b"HTTP/1.1 200 OK\r\n");
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
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.write(&buf[i..]);
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
        assert_eq!(written(|o| chunk_size(o, 0)), "0\r\n");
        assert_eq!(written(|o| chunk_size(o, 0x1f40)), "1f40\r\n");
        assert_eq!(
            written(|o| chunk_size(o, usize::MAX)),
            "ffffffffffffffff\r\n"
        );
    }
}
