//! Entry points of loopd-bench's fuzz targets in `fuzz/` (`cargo +nightly fuzz run NAME`):
//! what the client reads from the servers it measures, and the reports `merge` reads. One
//! plain function per target, taking the fuzzer's bytes and panicking when a property does
//! not hold; a stable `cargo test` replays the committed corpus and every crash ever found
//! through them (the test below). `docs/fuzzing.md` says how to fuzz.
//!
//! Compiled only for the tests and with the `fuzzing` feature, and hidden: not part of the
//! API.
//!
//! | target | what reads the bytes |
//! | --- | --- |
//! | [`server_answer`] | `--per-backend`: the answer to `SERVER`, in any cuts |
//! | [`metrics`] | `--server-metrics`: the HTTP response and the Prometheus page scraped |
//! | [`replies`] | the verification of every reply: stream, datagram, chargen |
//! | [`merge_json`] | `merge` of JSON reports |
//! | [`merge_hlog`] | `merge` of HdrHistogram interval logs |
//! | [`http_response`] | `--protocol http`: the response stream, in any cuts |

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Instant;

use loopd::fuzzing::{server_reply, Input, Rng, Target};
use loopd::service::chargen::{CYCLE, PERIOD};

use crate::cpu;
use crate::flow::backend::{answer_line, parse_server_answer, MAX_SERVER_REPLY};
use crate::flow::datagram::{match_reply, Matched};
use crate::flow::Pending;
use crate::payload::{check_chargen, Codec, Cursor, Dir, Mismatch, Protocol, HEADER_LEN};
use crate::report::files::read_hlog;
use crate::report::Report;

/// Every target of this package, by its name in `fuzz/` (its binary, and its directories
/// under `fuzz/corpus/` and `fuzz/artifacts/`).
pub fn targets() -> Vec<(&'static str, Target)> {
    vec![
        ("server_answer", server_answer),
        ("metrics", metrics),
        ("replies", replies),
        ("merge_json", merge_json),
        ("merge_hlog", merge_hlog),
        ("http_response", http_response),
    ]
}

/// `data` cut into pieces by `rng`, mostly small.
fn cuts<'d>(data: &'d [u8], rng: &mut Rng) -> Vec<&'d [u8]> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (piece, after) = rest.split_at(rng.size(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces
}

/// What reading the answer to `SERVER` from some pieces came to.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Still waiting for the end of the line, with this much of it.
    Waiting(usize),
    /// The server id, and every byte after the line.
    Named(String, Vec<u8>),
    /// Refused, with the reason.
    Refused(String),
}

/// Feeds the pieces one by one, as reads, until the answer is complete or refused.
fn read_answer(pieces: &[&[u8]]) -> Answer {
    let mut answer = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let result = answer_line(&mut answer, piece).map(|o| o.map(|(id, r)| (id.to_owned(), r)));
        assert!(
            answer.len() <= MAX_SERVER_REPLY,
            "the answer outgrew its bound"
        );
        match result {
            Ok(None) => {}
            Ok(Some((id, rest))) => {
                let after = pieces[i + 1..].concat();
                return Answer::Named(id, [rest, &after].concat());
            }
            Err(f) => return Answer::Refused(f.what),
        }
    }
    Answer::Waiting(answer.len())
}

/// `--per-backend`'s reading of the answer to `SERVER`: first, what loopd's `line` service
/// answers for any server id it accepts, on any listener address and loop, is read back as
/// that id; then any bytes as a server's answer, whole and in any cuts, give the same
/// result (the id and the bytes after the line, a refusal, or still waiting), holding at
/// most the bound of an answer.
pub fn server_answer(data: &[u8]) {
    let mut input = Input::new(data);
    let mut rng = Rng::new(u64::from(input.u32()));
    let id_len = usize::from(input.byte());
    let id = String::from_utf8_lossy(input.bytes(id_len)).into_owned();
    let listener = match input.byte() % 2 {
        0 => SocketAddr::from((input.u32().to_be_bytes(), input.u16())),
        _ => {
            let mut ip = [0; 16];
            for b in &mut ip {
                *b = input.byte();
            }
            let (port, flow, scope) = (input.u16(), input.u32(), input.u32());
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope))
        }
    };
    let loop_index = usize::from(input.u16());
    if loopd::config::valid_server_id(&id) {
        let reply = server_reply(&id, listener, loop_index);
        assert_eq!(
            parse_server_answer(&reply),
            Some(id.as_str()),
            "loopd's answer {:?} does not read back",
            String::from_utf8_lossy(&reply)
        );
    }
    let stream = input.rest();
    let whole = read_answer(&[stream]);
    let split = read_answer(&cuts(stream, &mut rng));
    assert_eq!(whole, split, "the answer depends on how it was cut");
}

/// `--server-metrics`: any bytes as the HTTP response to the scrape (or, if the first byte
/// is odd, as the page itself). No input panics, and the CPU counter read from a page is a
/// counter's value: finite and not negative.
pub fn metrics(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let page = if mode % 2 == 0 {
        match cpu::page(data) {
            Ok(page) => page,
            Err(_) => return,
        }
    } else {
        String::from_utf8_lossy(data).into_owned()
    };
    if let Some(seconds) = cpu::cpu_counter(&page) {
        assert!(
            seconds.is_finite() && seconds >= 0.0,
            "a CPU counter of {seconds} seconds"
        );
    }
}

/// The verification of what servers send back, against an exact oracle: the correct reply
/// stream, computed here. The first bytes choose the framing, size, connection, the
/// messages in flight and a seed; the rest is what arrives, as is or (if the mode byte says
/// so) as the correct stream with a byte changed or cut short.
///
/// On a stream, whole or in any cuts, the check reports the same: every complete reply
/// while the bytes are right, the first wrong byte exactly where it is, bytes beyond every
/// reply outstanding as extra. A datagram is matched to the message it answers exactly when
/// it is that message's reply. A chargen stream is checked to its first wrong byte.
pub fn replies(data: &[u8]) {
    let mut input = Input::new(data);
    let protocol = Protocol::ALL[usize::from(input.byte()) % 3];
    let codec = Codec::new(protocol, 1 + usize::from(input.u16()) % 512);
    let conn = u32::from(input.byte());
    let start = u64::from(input.u16());
    let end = start + 1 + u64::from(input.byte() % 16);
    let mut rng = Rng::new(u64::from(input.u32()));
    let mode = input.byte() % 3;
    let (at, flip) = (usize::from(input.u16()), input.byte());
    let mut correct = Vec::new();
    for seq in start..end {
        codec.encode(Dir::Reply, conn, seq, &mut correct);
    }
    let stream = match mode {
        0 => input.rest().to_vec(),
        1 => {
            let mut s = correct.clone();
            if let Some(b) = s.get_mut(at % (correct.len() + 1)) {
                *b ^= flip;
            }
            s
        }
        _ => correct[..at % (correct.len() + 1)].to_vec(),
    };

    // The stream, against the oracle.
    let len = codec.len(Dir::Reply);
    let first_wrong = stream.iter().zip(&correct).position(|(a, b)| a != b);
    let expected = match first_wrong {
        Some(p) => Err(Mismatch::Byte {
            seq: start + (p / len) as u64,
            offset: p % len,
            expected: correct[p],
            got: stream[p],
        }),
        None if stream.len() > correct.len() => Err(Mismatch::Extra(0)),
        None => Ok((stream.len() / len) as u64),
    };
    for pieces in [vec![&stream[..]], cuts(&stream, &mut rng)] {
        let mut at = Cursor {
            seq: start,
            offset: 0,
        };
        let mut completed = 0;
        let mut result = Ok(0);
        for piece in pieces {
            match codec.check(conn, &mut at, end, piece) {
                Ok(n) => completed += n,
                Err(m) => {
                    result = Err(m);
                    break;
                }
            }
        }
        let result = result.map(|_| completed).map_err(|m| match m {
            // How much is extra depends on the piece it was found in.
            Mismatch::Extra(_) => Mismatch::Extra(0),
            m => m,
        });
        assert_eq!(result, expected, "the check of a reply stream");
    }

    // The same bytes as one datagram, with the messages in flight: for what a UDP run
    // accepts (raw messages, each carrying the whole id header).
    if protocol == Protocol::Raw && codec.size() >= HEADER_LEN {
        datagram(&codec, conn, start..end, &stream);
    }

    // The same bytes as a chargen stream from offset `at`.
    let offset = at as u64;
    let first_wrong = stream
        .iter()
        .enumerate()
        .position(|(i, &b)| b != CYCLE[(at + i) % PERIOD]);
    let expected = first_wrong.map(|i| {
        let p = (at + i) % PERIOD;
        (offset + i as u64, CYCLE[p], stream[i])
    });
    for pieces in [vec![&stream[..]], cuts(&stream, &mut rng)] {
        let mut received = offset;
        let found = pieces
            .iter()
            .find_map(|piece| check_chargen(&mut received, piece).err());
        assert_eq!(found, expected, "the check of a chargen stream");
    }
}

/// `stream` as one datagram, with messages `seqs` in flight: matched to a message exactly when
/// it is that message's reply.
fn datagram(codec: &Codec, conn: u32, seqs: std::ops::Range<u64>, stream: &[u8]) {
    let (start, end) = (seqs.start, seqs.end);
    let now = Instant::now();
    let inflight: VecDeque<Pending> = (start..end)
        .map(|seq| Pending {
            seq,
            intended: now,
            sent: now,
            answered: false,
        })
        .collect();
    let mut scratch = Vec::new();
    let matched = match_reply(codec, conn, &inflight, stream, &mut scratch);
    let answers = (start..end).position(|seq| {
        let mut reply = Vec::new();
        codec.encode(Dir::Reply, conn, seq, &mut reply);
        reply == stream
    });
    match (answers, &matched) {
        (Some(k), Matched::Reply(m)) => assert_eq!(k, *m),
        (None, Matched::Late | Matched::Wrong(_)) => {}
        _ => panic!("a datagram matched as {matched:?}; it answers message {answers:?}"),
    }
}

/// `merge` of JSON reports: the input, split at NUL bytes, as the files given (one file is
/// merged with itself). No input panics; a merge that succeeds prints, gives a verdict,
/// and writes JSON that reads back as a report that merges again (merges of merges: a
/// tree of load generators).
pub fn merge_json(data: &[u8]) {
    let reports: Vec<Report> = data
        .split(|&b| b == 0)
        .filter_map(|file| serde_json::from_slice(file).ok())
        .collect();
    merged(reports);
}

/// `merge` of HdrHistogram interval logs: the input as a `.hlog` file, merged with itself.
/// No input panics, and a merge that succeeds behaves as [`merge_json`]'s.
pub fn merge_hlog(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the file is read as UTF-8 text
    };
    if let Ok(report) = read_hlog(text) {
        merged(vec![report]);
    }
}

/// Merges `reports` (one is merged with itself), and uses the result as `merge` does.
fn merged(mut reports: Vec<Report>) {
    if let [one] = &reports[..] {
        reports.push(one.clone());
    }
    if reports.is_empty() {
        return;
    }
    let Ok(merged) = Report::merge(&reports) else {
        return;
    };
    let _ = merged.to_string();
    let _ = merged.verdict();
    let json = serde_json::to_string(&merged).expect("a merged report writes as JSON");
    let back: Report = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("a merged report does not read back: {e}\n{json}"));
    let _ = Report::merge(&[back.clone(), back]);
}

/// `--protocol http`'s response parser ([`crate::http`]): any bytes as a response stream,
/// whole and cut where the first four bytes' seed says. The same responses (status, backend,
/// body) and the same error come out however the stream is cut; a body is never longer than
/// the stream; a stream of well-formed responses built from the fuzzer's bytes parses back
/// to exactly them.
pub fn http_response(data: &[u8]) {
    use crate::http::parse_all;
    let mut input = Input::new(data);
    let mut rng = Rng::new(u64::from(input.u32()));
    let stream = input.rest();
    let whole = parse_all(stream, &[]);
    let cuts: Vec<usize> = (0..rng.below(8))
        .map(|_| rng.below(stream.len() + 1))
        .collect();
    let split = parse_all(stream, &cuts);
    assert_eq!(whole, split, "cut at {cuts:?}");
    let body: usize = whole.0.iter().map(|r| r.2.len()).sum();
    assert!(body <= stream.len());
    // Well-formed responses, one per 16 bytes of the stream, as length or chunked framing.
    let mut built = Vec::new();
    let mut expected = Vec::new();
    for (i, piece) in stream.chunks(16).enumerate() {
        let status = 200 + (i as u16 % 400);
        let server = format!("s{}", piece.len());
        built.extend_from_slice(
            format!("HTTP/1.1 {status} X\r\nloopd-server: {server} 127.0.0.1:1 0\r\n").as_bytes(),
        );
        if i % 2 == 0 {
            built.extend_from_slice(format!("Content-Length: {}\r\n\r\n", piece.len()).as_bytes());
            built.extend_from_slice(piece);
        } else {
            built.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            if !piece.is_empty() {
                built.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                built.extend_from_slice(piece);
                built.extend_from_slice(b"\r\n");
            }
            built.extend_from_slice(b"0\r\n\r\n");
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else {
            piece.to_vec()
        };
        expected.push((status, Some(server), body));
    }
    // 204 and 304 carry no body: their pieces would be read as the next response's head.
    if expected.iter().any(|r| r.0 == 204 || r.0 == 304) {
        return;
    }
    let cuts: Vec<usize> = (0..rng.below(8))
        .map(|_| rng.below(built.len() + 1))
        .collect();
    assert_eq!(parse_all(&built, &cuts), (expected, None));
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopd::fuzzing::{not_built, replay};
    use std::path::{Path, PathBuf};

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    /// Every input of every target's committed corpus, and every crash the fuzzer ever
    /// found (`fuzz/artifacts/`), passes its target on a stable build.
    #[test]
    fn corpus_and_crashes_replay() {
        let failed = replay(&fuzz_dir(), &targets());
        assert!(failed.is_empty(), "fuzz inputs that fail: {failed:#?}");
    }

    /// Every target here is a binary of the fuzz crate, so `cargo fuzz` runs it.
    #[test]
    fn targets_are_fuzz_binaries() {
        assert_eq!(not_built(&fuzz_dir(), &targets()), Vec::<&str>::new());
    }
}
