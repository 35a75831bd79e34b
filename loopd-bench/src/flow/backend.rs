//! Which server answers a connection (`--per-backend`): before its first message, each
//! connection asks its server `SERVER`, and the answer — the first line on the reply stream —
//! names the backend everything the connection then measures is counted under.

use std::io::Write;
use std::net::SocketAddr;

use super::{Ctx, Failure};
use crate::errors::ErrorKind;
use crate::net::{interrupted, would_block};

/// The request that asks a loopd `line` service which backend it is.
pub const ASK_SERVER: &[u8] = b"SERVER\n";

/// The longest answer to `SERVER` accepted: a server id (at most 255 bytes), an address and
/// a loop number.
pub(crate) const MAX_SERVER_REPLY: usize = 512;

/// Which server answers a connection.
#[derive(Debug, Default)]
pub enum Backend {
    /// Not asked (`--per-backend` is off).
    #[default]
    Unasked,
    /// `SERVER` asked: how much of the request is written, and the answer so far.
    Asking {
        /// Bytes of [`ASK_SERVER`] written.
        written: usize,
        /// The answer so far.
        answer: Vec<u8>,
    },
    /// Answered: the backend's index in the worker's tally.
    Known(usize),
}

impl Backend {
    /// How a new connection starts: asking, if `--per-backend` is on.
    pub fn new(per_backend: bool) -> Backend {
        if per_backend {
            Backend::Asking {
                written: 0,
                answer: Vec::new(),
            }
        } else {
            Backend::Unasked
        }
    }

    /// The backend's index, once known.
    pub fn index(&self) -> Option<usize> {
        match self {
            Backend::Known(i) => Some(*i),
            _ => None,
        }
    }

    /// Whether the answer is awaited: nothing else is sent meanwhile, since the answer must
    /// be the first line that comes back.
    pub fn asking(&self) -> bool {
        matches!(self, Backend::Asking { .. })
    }
}

/// Writes what is left of the `SERVER` request to `socket` (`written` bytes of it are out).
/// Sets `blocked` when the socket has no room.
pub fn ask<S: Write>(
    socket: &mut S,
    written: &mut usize,
    blocked: &mut bool,
) -> Result<(), Failure> {
    while *written < ASK_SERVER.len() && !*blocked {
        match socket.write(&ASK_SERVER[*written..]) {
            Ok(0) => {
                return Err(Failure::new(
                    ErrorKind::Io,
                    "write: the socket took no bytes",
                ))
            }
            Ok(n) => *written += n,
            Err(e) if would_block(&e) => *blocked = true,
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                let kind = ErrorKind::of_established(&e);
                return Err(Failure::new(kind, format!("write: {e}")));
            }
        }
    }
    Ok(())
}

/// A connection's backend (its index in the worker's tally) and the bytes after the answer.
pub type Identified<'d> = (usize, &'d [u8]);

/// Collects the answer to `SERVER` from `data`. Once its line is complete, returns the
/// backend's index in the worker's tally (counting this connection) and the bytes after the
/// line; `None` while the line is incomplete.
pub fn identify<'d, S>(
    cx: &mut Ctx<S>,
    answer: &mut Vec<u8>,
    data: &'d [u8],
) -> Result<Option<Identified<'d>>, Failure> {
    let Some((server_id, rest)) = answer_line(answer, data)? else {
        return Ok(None);
    };
    let tally = &mut cx.record.tally;
    let backend = tally.backend(server_id);
    tally.backends[backend].connections += 1;
    Ok(Some((backend, rest)))
}

/// Collects the answer to `SERVER` from `data` into `answer`. Once its line is complete,
/// returns the server id it names and the bytes after the line; `None` while the line is
/// incomplete.
pub(crate) fn answer_line<'a, 'd>(
    answer: &'a mut Vec<u8>,
    data: &'d [u8],
) -> Result<Option<(&'a str, &'d [u8])>, Failure> {
    let end = data.iter().position(|&b| b == b'\n');
    let take = end.map_or(data.len(), |e| e + 1);
    if answer.len() + take > MAX_SERVER_REPLY {
        return Err(Failure::new(
            ErrorKind::Mismatch,
            format!("no answer to SERVER in {MAX_SERVER_REPLY} bytes"),
        ));
    }
    answer.extend_from_slice(&data[..take]);
    if end.is_none() {
        return Ok(None);
    }
    let server_id = parse_server_answer(answer).ok_or_else(|| {
        Failure::new(
            ErrorKind::Mismatch,
            format!(
                "SERVER was answered {:?}, not '<server-id> <listener> <loop>': \
                 is the target loopd's line service (or a balancer in front of it)?",
                String::from_utf8_lossy(answer)
            ),
        )
    })?;
    Ok(Some((server_id, &data[take..])))
}

/// The server id in a `line` service's answer to `SERVER`: `<server-id> <listener> <loop>`
/// and CRLF.
pub fn parse_server_answer(line: &[u8]) -> Option<&str> {
    let line = std::str::from_utf8(line).ok()?.strip_suffix("\r\n")?;
    let mut words = line.split(' ');
    let (server_id, listener, index) = (words.next()?, words.next()?, words.next()?);
    let valid = words.next().is_none()
        && !server_id.is_empty()
        && listener.parse::<SocketAddr>().is_ok()
        && index.parse::<u32>().is_ok();
    valid.then_some(server_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<server-id> <listener> <loop>` and CRLF, nothing else.
    #[test]
    fn server_answers() {
        assert_eq!(
            parse_server_answer(b"web-1 10.0.0.7:7100 3\r\n"),
            Some("web-1")
        );
        assert_eq!(parse_server_answer(b"a [::1]:7 0\r\n"), Some("a"));
        for bad in [
            &b"web-1 10.0.0.7:7100 3\n"[..],
            b"SERVER\n",
            b"ERR unknown command 'SERVER'\r\n",
            b"web-1 10.0.0.7:7100\r\n",
            b"web-1 nowhere 3\r\n",
            b"web-1 10.0.0.7:7100 3 extra\r\n",
            b" 10.0.0.7:7100 3\r\n",
        ] {
            assert_eq!(
                parse_server_answer(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
