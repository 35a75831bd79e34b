//! The stream targets: what a TCP peer can send, through a whole [`Connection`] in the
//! simulated loop ([`super::conversation`]), so that what the connection does around a
//! parser (holding a partial request, offering it again, backpressure, closing) is fuzzed
//! with it.
//!
//! Each case begins with [`SETUP`] bytes of settings — watermarks, read budget, the
//! services' limits, the loop's read buffer, the room in the send buffer, and a seed for how
//! the stream is cut into reads and how fast the peer reads — and the rest is the stream.
//! Settings the configuration would refuse are skipped. Each stream is sent twice, whole
//! and cut up; the replies must be the same.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::admin::{self, AdminState, MAX_REQUEST};
use crate::buffer::Buffer;
use crate::config::{Config, Limits};
use crate::connection::{Connection, Unborn};
use crate::proxy::{self, Parse, V1_MAX, V2_MAX};
use crate::service::http::{head::MAX_HEAD, Http, HttpLimits};
use crate::service::{ConnInfo, Echo, Frame, Line, Output, Service, ServiceOptions};
use crate::stats::{CloseReason, Stats};
use crate::timer::Time;

use super::conversation::{Bounds, Conversation, Outcome, Pace, Wire};
use super::input::{Input, Rng};

/// Bytes of settings at the start of every stream case.
pub const SETUP: usize = 11;

/// The settings a stream case begins with.
struct Setup {
    limits: Limits,
    services: ServiceOptions,
    scratch: usize,
    window: usize,
    seed: u64,
}

impl Setup {
    /// Reads [`SETUP`] bytes; `None` if the configuration would refuse the settings.
    fn read(input: &mut Input<'_>) -> Option<Setup> {
        let mut config = Config::default();
        let l = &mut config.loops.limits;
        // Mostly small values, where the boundaries are (a watermark of a few bytes, lines
        // and frames of a few dozen), up to the defaults (256 KiB watermark, 64 KiB reads).
        let square = |b: u8| usize::from(b).pow(2);
        l.high_watermark = 1 + 4 * square(input.byte());
        l.low_watermark = usize::from(input.byte()) * l.high_watermark / 256;
        l.read_budget = 1 + 4 * square(input.byte());
        // Time stands still: every timeout is off, so only the bytes decide.
        l.idle_timeout = None;
        l.write_stall_timeout = None;
        l.request_timeout = None;
        config.services.max_line = 1 + usize::from(input.byte());
        config.services.max_frame = 1 + usize::from(input.byte());
        config.validate().ok()?;
        Some(Setup {
            limits: config.loops.limits,
            services: config.services,
            scratch: 1 + square(input.byte()),
            window: usize::from(input.byte()) * 16,
            seed: u64::from(input.u32()),
        })
    }

    /// The stream sent whole and cut up, to a service from `make` each time.
    fn both(
        &self,
        make: impl Fn() -> Box<dyn Service>,
        stream: &[u8],
        bounds: Bounds,
    ) -> (Outcome, Outcome) {
        let converse = |pace, window| {
            let service = make();
            Conversation::new(
                |wire| Connection::new(wire, service, 1, Time(0)),
                self.limits.clone(),
                self.scratch,
                window,
                bounds,
            )
            .run(stream, pace)
        };
        let whole = converse(Pace::Whole, usize::MAX / 4);
        let split = converse(Pace::Split(Rng::new(self.seed)), self.window);
        (whole, split)
    }
}

/// A connection's description for a service created outside the loop.
struct Info {
    server_id: Arc<str>,
    stats: Arc<Stats>,
}

impl Info {
    fn new() -> Info {
        Info {
            server_id: Arc::from("fuzz-1"),
            stats: Arc::new(Stats::default()),
        }
    }

    fn conn(&self) -> ConnInfo<'_> {
        Info::conn_of(&self.server_id, &self.stats)
    }

    /// A connection from a fixed peer to a fixed listener, of the server `server_id`.
    fn conn_of<'a>(server_id: &'a Arc<str>, stats: &'a Arc<Stats>) -> ConnInfo<'a> {
        ConnInfo {
            peer: SocketAddr::from(([192, 0, 2, 7], 40000)),
            proxied: None,
            listener: SocketAddr::from(([127, 0, 0, 1], 7000)),
            loop_index: 0,
            server_id,
            stats,
            tls: None,
        }
    }
}

/// The connection closed gracefully: neither an error nor a broken contract.
fn graceful(o: &Outcome) {
    assert!(
        o.fin_sent && !o.abortive && matches!(o.reason, CloseReason::Peer | CloseReason::Server),
        "not a graceful close: {:?}, FIN {}, abortive {}",
        o.reason,
        o.fin_sent,
        o.abortive
    );
}

/// Replies compared byte for byte, except that a digit may stand for another (the time in
/// a `TIME` reply moves between two runs).
fn same_replies(whole: &[u8], split: &[u8]) {
    let same = whole.len() == split.len()
        && whole
            .iter()
            .zip(split)
            .all(|(a, b)| a == b || (a.is_ascii_digit() && b.is_ascii_digit()));
    assert!(
        same,
        "the replies depend on how the stream was cut:\n whole: {}\n split: {}",
        whole.escape_ascii(),
        split.escape_ascii()
    );
}

/// The `line` service: every request line in any cuts, and the peer reading at any pace.
/// The replies are the same whatever the cuts; pending output stays within the high
/// watermark plus the longest reply, held input within the line limit plus one read; the
/// connection always closes gracefully.
pub fn line(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(setup) = Setup::read(&mut input) else {
        return;
    };
    let max_line = setup.services.max_line;
    let info = Info::new();
    let make = || Box::new(Line::new(&info.conn(), max_line)) as Box<dyn Service>;
    let bounds = Bounds {
        pending: setup.limits.high_watermark + longest_line_reply(&make, max_line),
        held: max_line + 2 + setup.scratch,
    };
    let (whole, split) = setup.both(make, input.rest(), bounds);
    graceful(&whole);
    graceful(&split);
    same_replies(&whole.written, &split.written);
}

/// What the `line` service of a server named `server_id` answers to `SERVER` on `listener`
/// in loop `loop_index`: what loopd-bench's `--per-backend` reads (its target checks that it
/// reads back every answer loopd can give).
pub fn server_reply(server_id: &str, listener: SocketAddr, loop_index: usize) -> Vec<u8> {
    let (server_id, stats): (Arc<str>, _) = (Arc::from(server_id), Arc::new(Stats::default()));
    let conn = ConnInfo {
        listener,
        loop_index,
        ..Info::conn_of(&server_id, &stats)
    };
    let (mut target, mut finished) = (Buffer::new(), false);
    let mut out = Output::new(&mut target, usize::MAX, &mut finished);
    Line::new(&conn, 64).on_input(b"SERVER\n", &mut out);
    target.as_slice().to_vec()
}

/// The longest single reply the `line` service can give with lines of `max_line` bytes: each
/// command asked once, at its longest.
fn longest_line_reply(make: &impl Fn() -> Box<dyn Service>, max_line: usize) -> usize {
    let filler = |command: &str| {
        let mut request = command.as_bytes().to_vec();
        request.resize(max_line.max(request.len()), b'\xff');
        request
    };
    let requests = [
        filler("PING "),
        filler("ECHO "),
        filler(""),
        b"TIME".to_vec(),
        b"WHOAMI".to_vec(),
        b"SERVER".to_vec(),
        b"STATS".to_vec(),
        b"HELP".to_vec(),
        b"QUIT".to_vec(),
        vec![b'x'; max_line + 1],
    ];
    requests
        .iter()
        .map(|request| {
            let mut request = request.clone();
            request.push(b'\n');
            let (mut target, mut finished) = (Buffer::new(), false);
            let mut out = Output::new(&mut target, usize::MAX, &mut finished);
            make().on_input(&request, &mut out);
            target.len()
        })
        .max()
        .unwrap_or(0)
}

/// The `frame` service: frames in any cuts. The echo is exactly the frames before the first
/// one over the limit (or the incomplete end), whatever the cuts; pending output stays
/// within the high watermark plus one frame, held input within one frame plus one read.
pub fn frame(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(setup) = Setup::read(&mut input) else {
        return;
    };
    let max_frame = setup.services.max_frame;
    let stream = input.rest();
    let bounds = Bounds {
        pending: setup.limits.high_watermark + 4 + max_frame,
        held: 4 + max_frame + setup.scratch,
    };
    let (whole, split) = setup.both(|| Box::new(Frame::new(max_frame)), stream, bounds);
    graceful(&whole);
    graceful(&split);
    // The frames a correct echo sends back, read straight off the stream.
    let mut end = 0;
    while let Some(header) = stream.get(end..end + 4) {
        let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
        if len > max_frame || stream.len() - end - 4 < len {
            break;
        }
        end += 4 + len;
    }
    let expected = &stream[..end];
    assert!(
        whole.written == expected && split.written == expected,
        "the echo is not the whole frames: expected {} bytes, whole {}, split {}",
        expected.len(),
        whole.written.len(),
        split.written.len()
    );
}

/// The admin endpoint's HTTP request handling: any bytes in any cuts (after [`SETUP`], four
/// bytes say where to insert how long a run of which byte). Every request is
/// answered the same way whatever the cuts (the status lines in order); pending output stays
/// within the high watermark plus the longest response, held input within the request
/// limit plus one read; the connection always closes gracefully.
pub fn admin(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(setup) = Setup::read(&mut input) else {
        return;
    };
    // A run of one byte, up to three request limits long, inserted into the stream: the
    // fuzzer's inputs are short (4 KiB), and the limits are not.
    let (pad, at, fill) = (
        usize::from(input.u16()) % (3 * MAX_REQUEST),
        usize::from(input.byte()),
        input.byte(),
    );
    let rest = input.rest();
    let at = at * rest.len() / 256;
    let stream = [&rest[..at], &vec![fill; pad], &rest[at..]].concat();
    let state = Arc::new(AdminState::new(Arc::default()));
    let factory = admin::factory(Arc::clone(&state));
    let info = Info::new();
    // The metrics page is the longest answer; its figures move a little between calls.
    let longest = state.metrics().len() + 1024;
    let bounds = Bounds {
        pending: setup.limits.high_watermark + longest,
        held: MAX_REQUEST + 1 + setup.scratch,
    };
    let (whole, split) = setup.both(|| factory.new_service(&info.conn()), &stream, bounds);
    graceful(&whole);
    graceful(&split);
    let (a, b) = (status_lines(&whole.written), status_lines(&split.written));
    assert!(
        a == b,
        "the answers depend on how the requests were cut:\n whole: {a:?}\n split: {b:?}"
    );
}

/// The `http` service: requests in any cuts (after [`SETUP`], four bytes say where to insert
/// how long a run of which byte, and two how large a body may be). Pending output stays
/// within the high watermark plus one response head and one `msg` (every body is written
/// only as far as the room goes), held input within the head limit plus one read; the
/// connection always closes gracefully; and the status lines are the same whatever the cuts
/// — unless a chunked body is echoed, whose chunks follow the reads, so that a status line
/// inside the echoed bytes may be cut apart in one run and not the other.
pub fn http(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(setup) = Setup::read(&mut input) else {
        return;
    };
    let (pad, at, fill) = (
        usize::from(input.u16()) % (3 * MAX_HEAD),
        usize::from(input.byte()),
        input.byte(),
    );
    let limits = HttpLimits {
        max_body: 1 + u64::from(input.u16()),
        ..HttpLimits::default()
    };
    let rest = input.rest();
    let at = at * rest.len() / 256;
    let stream = [&rest[..at], &vec![fill; pad], &rest[at..]].concat();
    let info = Info::new();
    // The same seed for both runs: the knobs' choices do not depend on the cuts.
    let make = || Box::new(Http::with_seed(&info.conn(), limits, 7)) as Box<dyn Service>;
    let bounds = Bounds {
        // A 100 Continue, a head with `header` knobs, a `msg` body: each under the head.
        pending: setup.limits.high_watermark + 2 * MAX_HEAD + 1024,
        held: MAX_HEAD + 1 + setup.scratch,
    };
    let (whole, split) = setup.both(make, &stream, bounds);
    graceful(&whole);
    graceful(&split);
    let chunked_echo = stream
        .windows(7)
        .any(|w| w.eq_ignore_ascii_case(b"chunked"));
    if !chunked_echo {
        let (a, b) = (status_lines(&whole.written), status_lines(&split.written));
        assert!(
            a == b,
            "the answers depend on how the requests were cut:\n whole: {a:?}\n split: {b:?}"
        );
    }
}

/// The status line of every response in `written`, in order.
fn status_lines(written: &[u8]) -> Vec<String> {
    const START: &[u8] = b"HTTP/1.1 ";
    written
        .windows(START.len() + 3)
        .filter(|w| w.starts_with(START) && w[START.len()..].iter().all(u8::is_ascii_digit))
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// The PROXY protocol header, v1 and v2: the streaming parser on every prefix of the input,
/// then a `,proxy` connection in front of echo, with the input cut into reads.
///
/// The parser's answer is final once given and comes no later than the header's end: a
/// header is `Done` exactly when its last byte arrives, and `Incomplete` never outlasts the
/// size limits. The connection serves the client's stream, exactly the bytes after the
/// header, or closes without serving a byte when the parser refuses (or the peer finishes
/// first); held bytes stay within the watermark.
pub fn proxy(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(setup) = Setup::read(&mut input) else {
        return;
    };
    let stream = input.rest();
    let mut settled: Option<Parse> = None;
    for n in 0..=stream.len().min(V2_MAX + 64) {
        let p = proxy::parse(&stream[..n]);
        match &settled {
            Some(s) => assert_eq!(&p, s, "the answer changed at byte {n}"),
            None => match &p {
                Parse::Incomplete => assert!(n < V2_MAX, "still incomplete at {n} bytes"),
                Parse::Done { len, version, .. } => {
                    let limit = if *version == 1 { V1_MAX } else { V2_MAX };
                    assert!(
                        *len == n && *len <= limit,
                        "a {len}-byte v{version} header done at byte {n}"
                    );
                    settled = Some(p);
                }
                Parse::Refused(_) => settled = Some(p),
            },
        }
    }
    let expected = proxy::parse(stream);

    let info = Info::new();
    let unborn = Unborn {
        factory: Arc::new(|_: &ConnInfo<'_>| Box::new(Echo) as Box<dyn Service>),
        peer: info.conn().peer,
        listener: info.conn().listener,
        loop_index: 0,
        server_id: Arc::clone(&info.server_id),
        stats: Arc::clone(&info.stats),
    };
    // Echo reads no more than its output has room for, and the header's last read is no
    // longer than the watermark: output stays within it.
    let bounds = Bounds {
        pending: setup.limits.high_watermark,
        held: setup.limits.high_watermark,
    };
    let make = |wire: Wire| Connection::behind_proxy(wire, unborn, 1, Time(0));
    let outcome = Conversation::new(make, setup.limits, setup.scratch, setup.window, bounds)
        .run(stream, Pace::Split(Rng::new(setup.seed)));
    match expected {
        Parse::Done { len, .. } => {
            graceful(&outcome);
            assert!(
                outcome.written == stream[len..],
                "the service saw other bytes than the stream after a {len}-byte header"
            );
        }
        Parse::Refused(_) | Parse::Incomplete => {
            assert_eq!(outcome.reason, CloseReason::Proxy);
            assert!(outcome.written.is_empty(), "served without a header");
        }
    }
}
