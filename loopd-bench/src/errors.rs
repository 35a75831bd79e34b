//! What can go wrong in a run, by kind. Every kind counted makes the exit status non-zero.
//!
//! TLS failures have kinds of their own, never folded into `io`: the transport that meets
//! one ([`tls`](crate::tls)) wraps a [`TlsError`] in the `io::Error` it returns, and the
//! kind is read back from it here, so this module knows nothing of rustls.

use std::fmt;
use std::io::{self, ErrorKind as IoKind};
use std::net::IpAddr;

/// An error kind, as counted in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The connection was refused (nothing listening, or a full backlog with resets).
    ConnectRefused,
    /// The connection did not establish within `--connect-timeout`.
    ConnectTimeout,
    /// The connection was reset while establishing.
    ConnectReset,
    /// Any other failure to establish (no local port left, no route, ...).
    ConnectOther,
    /// An echoed byte differs from the byte sent, or bytes arrived that were never sent.
    Mismatch,
    /// The server closed in the middle of a reply.
    ShortEcho,
    /// The server closed an established connection the client still used.
    UnexpectedClose,
    /// The server reset an established connection.
    Reset,
    /// Replies that never came: outstanding at the end of the drain, or after a stall.
    Unanswered,
    /// Request bytes that could not be written: the server stopped reading.
    Stalled,
    /// A connection that completed the kernel's handshake but got nothing back inside the
    /// measurement: the server never served it (its connection cap, a full accept queue).
    Unserved,
    /// Any other I/O error on an established connection.
    Io,
    /// TLS: the server's certificate was refused (unknown issuer, wrong name, expired, ...).
    TlsCertificate,
    /// TLS: the server sent an alert (its name is counted apart, see `tls.alerts_received`).
    TlsAlert,
    /// TLS: the handshake did not complete within `--connect-timeout` of the dial.
    TlsHandshakeTimeout,
    /// TLS: the server closed (FIN) without a `close_notify`, so what it sent may have been
    /// cut short (RFC 8446 §6.1).
    TlsTruncated,
    /// TLS: any other protocol failure (no common version or cipher suite, a record that
    /// does not decrypt, bytes that are not TLS).
    TlsProtocol,
    /// HTTP: a response with a status the run does not expect (not 2xx, or not one of
    /// `--expect-status`). The response is read on; the connection goes on.
    HttpStatus,
    /// HTTP: a response head that is not HTTP/1.x, or too long.
    HttpHead,
    /// HTTP: a response whose length cannot be known (neither `Content-Length` nor chunked,
    /// or two lengths), or whose echoed body is not as long as the body sent.
    HttpLength,
    /// HTTP: a malformed chunked response body.
    HttpChunked,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 21] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectReset,
        ErrorKind::ConnectOther,
        ErrorKind::Mismatch,
        ErrorKind::ShortEcho,
        ErrorKind::UnexpectedClose,
        ErrorKind::Reset,
        ErrorKind::Unanswered,
        ErrorKind::Stalled,
        ErrorKind::Unserved,
        ErrorKind::Io,
        ErrorKind::TlsCertificate,
        ErrorKind::TlsAlert,
        ErrorKind::TlsHandshakeTimeout,
        ErrorKind::TlsTruncated,
        ErrorKind::TlsProtocol,
        ErrorKind::HttpStatus,
        ErrorKind::HttpHead,
        ErrorKind::HttpLength,
        ErrorKind::HttpChunked,
    ];

    /// The name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectReset => "connect_reset",
            ErrorKind::ConnectOther => "connect_other",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::ShortEcho => "short_echo",
            ErrorKind::UnexpectedClose => "unexpected_close",
            ErrorKind::Reset => "reset",
            ErrorKind::Unanswered => "unanswered",
            ErrorKind::Stalled => "stalled",
            ErrorKind::Unserved => "unserved",
            ErrorKind::Io => "io",
            ErrorKind::TlsCertificate => "tls_certificate",
            ErrorKind::TlsAlert => "tls_alert",
            ErrorKind::TlsHandshakeTimeout => "tls_handshake_timeout",
            ErrorKind::TlsTruncated => "tls_truncated",
            ErrorKind::TlsProtocol => "tls_protocol",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::HttpHead => "http_head",
            ErrorKind::HttpLength => "http_length",
            ErrorKind::HttpChunked => "http_chunked",
        }
    }

    /// Whether it is a TLS failure.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            ErrorKind::TlsCertificate
                | ErrorKind::TlsAlert
                | ErrorKind::TlsHandshakeTimeout
                | ErrorKind::TlsTruncated
                | ErrorKind::TlsProtocol
        )
    }

    /// Whether the error stopped a connection from ever establishing.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused
                | ErrorKind::ConnectTimeout
                | ErrorKind::ConnectReset
                | ErrorKind::ConnectOther
        )
    }

    /// The kind of a failed connection attempt.
    pub fn of_connect(e: &io::Error) -> ErrorKind {
        if let Some(tls) = TlsError::of(e) {
            return tls.kind;
        }
        match e.kind() {
            IoKind::ConnectionRefused => ErrorKind::ConnectRefused,
            IoKind::TimedOut => ErrorKind::ConnectTimeout,
            IoKind::ConnectionReset => ErrorKind::ConnectReset,
            _ => ErrorKind::ConnectOther,
        }
    }

    /// The kind of an error on an established connection.
    pub fn of_established(e: &io::Error) -> ErrorKind {
        if let Some(tls) = TlsError::of(e) {
            return tls.kind;
        }
        match e.kind() {
            IoKind::ConnectionReset | IoKind::BrokenPipe | IoKind::ConnectionAborted => {
                ErrorKind::Reset
            }
            _ => ErrorKind::Io,
        }
    }

    /// The kind of an error on a connected UDP socket: a refusal is the ICMP "port
    /// unreachable" answering an earlier datagram, so nothing listens at the target.
    pub fn of_datagram(e: &io::Error) -> ErrorKind {
        match e.kind() {
            IoKind::ConnectionRefused => ErrorKind::ConnectRefused,
            _ => ErrorKind::Io,
        }
    }
}

/// A TLS failure as a transport reports it inside an `io::Error`: its kind, what happened
/// in words (with the remedy, where there is one), and for an alert the alert's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError {
    /// One of the TLS kinds.
    pub kind: ErrorKind,
    /// The alert the server sent, by its RFC name (`handshake_failure`), if it sent one.
    pub alert: Option<String>,
    /// What happened.
    pub what: String,
}

impl TlsError {
    /// An `io::Error` carrying this failure.
    pub fn into_io(self) -> io::Error {
        io::Error::new(IoKind::InvalidData, self)
    }

    /// The TLS failure inside `e`, if it carries one.
    pub fn of(e: &io::Error) -> Option<&TlsError> {
        e.get_ref()?.downcast_ref::<TlsError>()
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for TlsError {}

/// A failed connect described for a person, with the remedy when the machine ran out of
/// local ports. A TLS failure describes itself.
pub fn connect_failure(e: &io::Error, source: Option<IpAddr>) -> String {
    if let Some(tls) = TlsError::of(e) {
        return tls.what.clone();
    }
    if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
        let from = source.map_or("this address".to_string(), |ip| ip.to_string());
        return format!(
            "connect: {e} (no local port left from {from}: add addresses with --source)"
        );
    }
    format!("connect: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are unique and I/O errors land in the right kinds.
    #[test]
    fn kinds() {
        let names: std::collections::BTreeSet<_> =
            ErrorKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        let e = |k| io::Error::from(k);
        assert_eq!(
            ErrorKind::of_connect(&e(IoKind::ConnectionRefused)),
            ErrorKind::ConnectRefused
        );
        assert_eq!(
            ErrorKind::of_established(&e(IoKind::BrokenPipe)),
            ErrorKind::Reset
        );
        assert_eq!(
            ErrorKind::of_datagram(&e(IoKind::ConnectionRefused)),
            ErrorKind::ConnectRefused
        );
        assert!(ErrorKind::ConnectOther.is_connect() && !ErrorKind::Stalled.is_connect());
    }

    /// A TLS failure inside an `io::Error` keeps its kind through both mappings, and
    /// describes itself.
    #[test]
    fn tls_failures_keep_their_kind() {
        let e = TlsError {
            kind: ErrorKind::TlsAlert,
            alert: Some("handshake_failure".into()),
            what: "the server sent alert handshake_failure".into(),
        }
        .into_io();
        assert_eq!(ErrorKind::of_established(&e), ErrorKind::TlsAlert);
        assert_eq!(ErrorKind::of_connect(&e), ErrorKind::TlsAlert);
        assert_eq!(
            connect_failure(&e, None),
            "the server sent alert handshake_failure"
        );
        assert!(ErrorKind::TlsAlert.is_tls() && !ErrorKind::Io.is_tls());
    }
}
