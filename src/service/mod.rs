//! The public face of the library: what a protocol handler implements.
//!
//! A [`Service`] is pure byte-in/byte-out logic. The event loop calls it with the bytes it has
//! read and an [`Output`] sink for the bytes it wants written; the service never sees a
//! socket, the `Poll`, or a readiness event. That split is what lets one loop carry any
//! protocol, and lets a service be unit-tested with plain byte slices.
//!
//! The four hooks map onto the life of a connection:
//!
//! | hook | called when | typical use |
//! | --- | --- | --- |
//! | [`on_connect`](Service::on_connect) | the connection is accepted | greeting, daytime's line |
//! | [`on_input`](Service::on_input) | bytes were read | parse requests, write replies |
//! | [`on_peer_finished`](Service::on_peer_finished) | the peer shut down its sending half | flush a final reply |
//! | [`on_drained`](Service::on_drained) | pending output fell below the low watermark | stream more (chargen) |
//! | [`on_request_timeout`](Service::on_request_timeout) | a partial request outlived the request timeout | answer it (HTTP's 408) |
//!
//! A service ends its side of the conversation with [`Output::finish`]: the loop flushes every
//! byte already written, sends FIN, and closes without losing data (lingering close).
//!
//! # The output contract
//!
//! The high watermark bounds what one connection holds only if every service keeps this
//! contract. [`Output::room`] says how much may still be written before pending output reaches
//! the high watermark.
//!
//! * **A service consumes input only while its output has room.** Before answering each
//!   request, check `out.room() > 0`; when it is 0, stop and return the bytes consumed so far.
//!   The connection holds the rest and offers it again, by itself, once the peer has read
//!   enough of the pending output — no new read is needed, so a peer that pipelined
//!   everything and is now only reading is still served. Pending output then exceeds the high
//!   watermark by at most one reply, whatever the replies' size. Input held this way is not
//!   counted against [`input_limit`](Service::input_limit), and nothing more is read while it
//!   waits, so it is bounded by one read.
//! * **A service whose reply is exactly its input** (echo) may ignore `room`: the loop never
//!   reads more than the room left, so its output is bounded by construction.
//! * **A service that generates output by itself** (chargen) writes at most `room` bytes, and
//!   more only when [`on_drained`](Service::on_drained) is called.
//!
//! `line` and `frame` are written this way; `tests/backpressure.rs`
//! `amplifying_requests_stay_within_the_watermark` holds `line` to it with 10,000 pipelined
//! `STATS` requests, each answered with hundreds of bytes.

pub mod chargen;
pub mod datagram;
mod daytime;
mod discard;
mod echo;
pub mod frame;
pub mod http;
pub mod line;
pub mod time;

pub use chargen::{Chargen, UdpChargen};
pub use datagram::{DatagramFactory, DatagramService, Replies, Reply, UdpDiscard, UdpEcho};
pub use daytime::{Daytime, UdpDaytime};
pub use discard::Discard;
pub use echo::Echo;
pub use frame::Frame;
pub use http::Http;
pub use line::Line;
pub use time::{Time, UdpTime};

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use crate::buffer::Buffer;
use crate::proxy::Proxied;
use crate::stats::Stats;

/// A per-connection protocol handler. See the [module documentation](self).
///
/// `Send` so that a loop can be built on one thread and run on another.
pub trait Service: Send {
    /// The connection was accepted. Default: nothing.
    fn on_connect(&mut self, out: &mut Output<'_>) {
        let _ = out;
    }

    /// `input` holds bytes read from the peer that no earlier call consumed. Return how many
    /// bytes were consumed; the rest is offered again, followed by newer bytes, after the next
    /// read — or, if the service stopped because `out.room()` was 0, as soon as output drains
    /// (see [the output contract](self#the-output-contract)). Returning less than
    /// `input.len()` is how a framed protocol waits for the rest of a request. A partial
    /// request is bounded by [`input_limit`](Service::input_limit): a service that keeps more
    /// than that unconsumed while its output has room is closed as a protocol error.
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize;

    /// The peer finished sending (it read EOF). Default: [`Output::finish`], so the
    /// connection flushes and closes.
    fn on_peer_finished(&mut self, out: &mut Output<'_>) {
        out.finish();
    }

    /// Pending output fell below the low watermark: a streaming service may write up to
    /// [`Output::room`] more bytes. Default: nothing.
    fn on_drained(&mut self, out: &mut Output<'_>) {
        let _ = out;
    }

    /// The partial request the connection holds has been arriving for longer than the
    /// request timeout. A service that answers it (HTTP's 408) writes the answer and calls
    /// [`Output::finish`]: the connection then closes gracefully, the answer first. Default:
    /// nothing, and the connection is reset — nothing is owed to a client too slow to send
    /// a request.
    fn on_request_timeout(&mut self, out: &mut Output<'_>) {
        let _ = out;
    }

    /// The most unconsumed input this service may leave with the connection (a partial
    /// request). `None`, the default, means the high watermark. A length-prefixed protocol
    /// that must reassemble a whole frame before answering declares its frame limit here.
    fn input_limit(&self) -> Option<usize> {
        None
    }
}

/// What a factory knows about the connection it creates a service for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConnInfo<'a> {
    /// The address the connection comes from: the client, or the proxy in front of it.
    pub peer: SocketAddr,
    /// On a `,proxy` listener, the original connection its PROXY protocol header named;
    /// `None` elsewhere, and for the proxy's own connections (health checks). See
    /// [`crate::proxy`].
    pub proxied: Option<Proxied>,
    /// The address of the listener that accepted it.
    pub listener: SocketAddr,
    /// Which loop serves it (0 when there is one).
    pub loop_index: usize,
    /// The server's name (`--server-id`).
    pub server_id: &'a Arc<str>,
    /// The counters of the endpoint serving the connection.
    pub stats: &'a Arc<Stats>,
    /// On a `,tls` listener, what the TLS handshake settled (the service exists only once it
    /// has completed); `None` on a plain connection.
    pub tls: Option<&'a Negotiated>,
}

/// The parameters a completed TLS handshake settled, for logs, metrics and services (the
/// `line` service's `TLS` command). Plain data, so that a service can be written and tested
/// without the `tls` feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: &'static str,
    /// Key-exchange group, e.g. `X25519MLKEM768` (none when a TLS 1.2 session was resumed).
    pub group: Option<&'static str>,
    /// The protocol chosen by ALPN.
    pub alpn: Option<String>,
    /// The name the client asked for (SNI).
    pub sni: Option<String>,
    /// Resumed from a ticket or the session cache.
    pub resumed: bool,
    /// The client certificate's subject (RFC 4514), when one was presented.
    pub client_subject: Option<String>,
}

impl fmt::Display for Negotiated {
    /// One line of `key=value` pairs: `version=TLSv1.3 cipher=… group=… alpn=- sni=- …`, a
    /// `-` for what is absent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
        write!(
            f,
            "version={} cipher={} group={} alpn={} sni={} resumed={} client={}",
            self.version,
            self.cipher_suite,
            or_dash(self.group),
            or_dash(self.alpn.as_deref()),
            or_dash(self.sni.as_deref()),
            if self.resumed { "yes" } else { "no" },
            or_dash(self.client_subject.as_deref()),
        )
    }
}

impl ConnInfo<'_> {
    /// The client: the one the PROXY header named, or else the peer.
    pub fn client(&self) -> SocketAddr {
        self.proxied.map_or(self.peer, |p| p.source)
    }
}

/// Creates a [`Service`] for each accepted connection.
///
/// Implemented for any `Fn(&ConnInfo) -> Box<dyn Service>`, so a closure is a factory.
/// A factory is shared by every loop thread, hence `Send + Sync`.
pub trait ServiceFactory: Send + Sync {
    /// A new handler for the connection described by `conn`.
    fn new_service(&self, conn: &ConnInfo<'_>) -> Box<dyn Service>;
}

impl<F> ServiceFactory for F
where
    F: Fn(&ConnInfo<'_>) -> Box<dyn Service> + Send + Sync,
{
    fn new_service(&self, conn: &ConnInfo<'_>) -> Box<dyn Service> {
        self(conn)
    }
}

/// The sink a [`Service`] writes into. The loop tries to hand these bytes to the kernel as
/// soon as the hook returns; what the kernel does not take stays pending on the connection.
///
/// **Bytes that need no copy are not copied.** When nothing is pending ahead of a reply, its
/// first write is recorded by reference if it is a slice of the fresh input (echo writes its
/// whole input back) or a `'static` slice given to [`Output::write_static`] (chargen's
/// precomputed pattern), and the loop writes it to the socket from where it lies. Only what
/// the kernel does not accept is copied to the connection. Any further write keeps the order
/// by copying the recorded bytes first.
pub struct Output<'a> {
    /// The connection's pending output, or the loop's empty scratch when nothing is pending.
    target: &'a mut Buffer,
    /// The fresh input in the loop's read buffer, which a write may refer to instead of
    /// copying; empty when none may be.
    window: &'a [u8],
    /// Whether the first write may be recorded by reference (nothing is pending ahead).
    by_reference: bool,
    /// The first write, recorded by reference.
    borrowed: Option<Borrowed>,
    high_watermark: usize,
    finished: &'a mut bool,
    /// What the service asked of this call's output besides its bytes.
    asked: Asked,
    /// Where each reply ended ([`Output::end_reply`]), as pending output then; kept only
    /// when the connection has faults that act per reply.
    marks: Option<&'a mut Vec<usize>>,
}

/// What a service asked of one call's output besides its bytes: to hold it, or to end the
/// connection with RST once it is sent ([`Output::hold`], [`Output::reset`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Asked {
    /// Hold this call's output at least this long.
    pub(crate) hold: Option<std::time::Duration>,
    /// RST once this call's output is sent.
    pub(crate) reset: bool,
}

impl Asked {
    /// Whether anything was asked.
    pub(crate) fn any(&self) -> bool {
        self.hold.is_some() || self.reset
    }
}

/// Output recorded by reference: where its bytes lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Borrowed {
    /// `len` bytes at `start` of the loop's read buffer.
    Input {
        /// Offset in the read buffer.
        start: usize,
        /// Bytes.
        len: usize,
    },
    /// A static slice.
    Static(&'static [u8]),
}

impl Borrowed {
    /// The bytes, given the loop's read buffer.
    pub(crate) fn bytes<'s>(&self, read_buffer: &'s [u8]) -> &'s [u8] {
        match *self {
            Borrowed::Input { start, len } => &read_buffer[start..start + len],
            Borrowed::Static(s) => s,
        }
    }

    fn len(&self) -> usize {
        match self {
            Borrowed::Input { len, .. } => *len,
            Borrowed::Static(s) => s.len(),
        }
    }
}

impl<'a> Output<'a> {
    /// A sink appending to `target`, which holds whatever output is already pending.
    pub(crate) fn new(
        target: &'a mut Buffer,
        high_watermark: usize,
        finished: &'a mut bool,
    ) -> Output<'a> {
        Output {
            target,
            window: &[],
            by_reference: false,
            borrowed: None,
            high_watermark,
            finished,
            asked: Asked::default(),
            marks: None,
        }
    }

    /// The same sink, keeping where each reply ends in `marks`.
    pub(crate) fn with_marks(mut self, marks: &'a mut Vec<usize>) -> Output<'a> {
        self.marks = Some(marks);
        self
    }

    /// A sink whose first write may be recorded by reference: a slice of `window` (the fresh
    /// input, at the start of the loop's read buffer) or a static slice. `target` must be
    /// empty: nothing may be pending ahead of a reply sent from elsewhere.
    pub(crate) fn by_reference(
        target: &'a mut Buffer,
        window: &'a [u8],
        high_watermark: usize,
        finished: &'a mut bool,
    ) -> Output<'a> {
        debug_assert!(target.is_empty());
        Output {
            window,
            by_reference: true,
            ..Output::new(target, high_watermark, finished)
        }
    }

    /// Queues `bytes` for the peer.
    ///
    /// Writing after [`Output::finish`] is a bug in the service and is ignored with a debug
    /// assertion, because the FIN may already be on its way.
    pub fn write(&mut self, bytes: &[u8]) {
        debug_assert!(!*self.finished, "service wrote after finish()");
        if *self.finished || bytes.is_empty() {
            return;
        }
        if self.may_borrow() {
            if let Some(start) = offset_in(self.window, bytes) {
                self.borrowed = Some(Borrowed::Input {
                    start,
                    len: bytes.len(),
                });
                return;
            }
        }
        self.materialize();
        self.target.extend(bytes);
    }

    /// Queues `bytes`, which live for the whole program, for the peer: when nothing is pending
    /// ahead of them they go to the socket from where they lie, without a copy.
    pub fn write_static(&mut self, bytes: &'static [u8]) {
        debug_assert!(!*self.finished, "service wrote after finish()");
        if *self.finished || bytes.is_empty() {
            return;
        }
        if self.may_borrow() {
            self.borrowed = Some(Borrowed::Static(bytes));
            return;
        }
        self.materialize();
        self.target.extend(bytes);
    }

    fn may_borrow(&self) -> bool {
        self.by_reference && self.borrowed.is_none() && self.target.is_empty()
    }

    /// Copies output recorded by reference into the target, so more can follow in order.
    fn materialize(&mut self) {
        match self.borrowed.take() {
            Some(Borrowed::Input { start, len }) => {
                self.target.extend(&self.window[start..start + len])
            }
            Some(Borrowed::Static(bytes)) => self.target.extend(bytes),
            None => {}
        }
    }

    /// The output recorded by reference, for the loop to write.
    pub(crate) fn take_borrowed(&mut self) -> Option<Borrowed> {
        self.borrowed.take()
    }

    /// Bytes queued for the peer and not yet accepted by the kernel, including this call's.
    pub fn pending(&self) -> usize {
        self.target.len() + self.borrowed.map_or(0, |b| b.len())
    }

    /// How many more bytes may be written before pending output reaches the high watermark.
    pub fn room(&self) -> usize {
        self.high_watermark.saturating_sub(self.pending())
    }

    /// Ends this side of the conversation: flush what was written, then close gracefully.
    pub fn finish(&mut self) {
        *self.finished = true;
    }

    /// Whether [`Output::finish`] has been called.
    pub fn is_finished(&self) -> bool {
        *self.finished
    }

    /// Holds what this call writes for at least `d` before it is sent: a reply a protocol
    /// delays on purpose (an HTTP service's `delay=`). The connection keeps it as pending
    /// output, so it counts against the high watermark like any other, and replies written
    /// by later calls wait behind it. The same machinery as the `delay` fault
    /// ([`Hold`](crate::fault::Hold)); the time is the loop's, in whole milliseconds.
    pub fn hold(&mut self, d: std::time::Duration) {
        self.asked.hold = Some(self.asked.hold.map_or(d, |h| h.max(d)));
    }

    /// Ends the connection with RST (`SO_LINGER` 0) once what was written so far, this
    /// call's output included, is sent: an abortive close a protocol asks for on purpose.
    /// [`Output::finish`] is the graceful close.
    pub fn reset(&mut self) {
        self.asked.reset = true;
    }

    /// What the service asked of this call besides its bytes.
    pub(crate) fn asked(&self) -> Asked {
        self.asked
    }

    /// Marks the end of one reply: a framed service's answer to one request, when one read
    /// holds several. Faults that act per message (`close-after:N`, `delay`, `corrupt`, …)
    /// count these replies; a call that marks none is one reply. Costs a branch when the
    /// connection has no faults.
    pub fn end_reply(&mut self) {
        let at = self.pending();
        if let Some(marks) = self.marks.as_deref_mut() {
            if marks.last() != Some(&at) {
                marks.push(at);
            }
        }
    }
}

/// A seed for pseudo-random choices that need no cryptographic quality: the clock's
/// nanoseconds.
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Where `inner` starts within `outer`, if it lies wholly inside it. Compares addresses only.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    (i >= o && i + inner.len() <= o + outer.len()).then(|| i - o)
}

/// The services built into the `loopd` binary, by the name used in `--listen NAME=ADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// RFC 862: every byte back.
    Echo,
    /// RFC 863: read and drop.
    Discard,
    /// RFC 864: an endless rotating character pattern.
    Chargen,
    /// RFC 867: one line with the time, then close.
    Daytime,
    /// RFC 868: the time as four bytes, then close.
    Time,
    /// Newline-delimited commands ([`Line`]).
    Line,
    /// Length-prefixed frames, echoed ([`Frame`]).
    Frame,
    /// HTTP/1.1, a test backend with agnhost's endpoints ([`Http`]).
    Http,
    /// RFC 862 over UDP ([`UdpEcho`]).
    UdpEcho,
    /// RFC 863 over UDP ([`UdpDiscard`]).
    UdpDiscard,
    /// RFC 864 over UDP ([`UdpChargen`]).
    UdpChargen,
    /// RFC 867 over UDP ([`UdpDaytime`]).
    UdpDaytime,
    /// RFC 868 over UDP ([`UdpTime`]).
    UdpTime,
}

/// What serves an endpoint: a factory of per-connection services for TCP, or a factory of
/// the one datagram service each loop's UDP socket gets. Cloning shares the factories, so one
/// handler serves every loop of a [`Server`](crate::server::Server).
#[derive(Clone)]
pub enum Handler {
    /// A TCP listener; each accepted connection gets a service from the factory.
    Stream(Arc<dyn ServiceFactory>),
    /// A UDP socket per loop, each with a service from the factory.
    Datagram(Arc<dyn DatagramFactory>),
}

impl Handler {
    /// The kind of socket this handler serves.
    pub(crate) fn socket_type(&self) -> socket2::Type {
        match self {
            Handler::Stream(_) => socket2::Type::STREAM,
            Handler::Datagram(_) => socket2::Type::DGRAM,
        }
    }
}

/// Limits of the framed services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceOptions {
    /// The longest request line of the `line` service.
    pub max_line: usize,
    /// The largest payload of the `frame` service.
    pub max_frame: usize,
    /// The `http` service's limits.
    pub http: http::HttpLimits,
}

impl Default for ServiceOptions {
    fn default() -> ServiceOptions {
        ServiceOptions {
            max_line: line::DEFAULT_MAX_LINE,
            max_frame: frame::DEFAULT_MAX_FRAME,
            http: http::HttpLimits::default(),
        }
    }
}

impl Builtin {
    /// Every built-in, in help order.
    pub const ALL: [Builtin; 13] = [
        Builtin::Echo,
        Builtin::Discard,
        Builtin::Chargen,
        Builtin::Daytime,
        Builtin::Time,
        Builtin::Line,
        Builtin::Frame,
        Builtin::Http,
        Builtin::UdpEcho,
        Builtin::UdpDiscard,
        Builtin::UdpChargen,
        Builtin::UdpDaytime,
        Builtin::UdpTime,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
            Builtin::Discard => "discard",
            Builtin::Chargen => "chargen",
            Builtin::Daytime => "daytime",
            Builtin::Time => "time",
            Builtin::Line => "line",
            Builtin::Frame => "frame",
            Builtin::Http => "http",
            Builtin::UdpEcho => "udp-echo",
            Builtin::UdpDiscard => "udp-discard",
            Builtin::UdpChargen => "udp-chargen",
            Builtin::UdpDaytime => "udp-daytime",
            Builtin::UdpTime => "udp-time",
        }
    }

    /// Whether this service runs over UDP.
    pub fn is_datagram(self) -> bool {
        matches!(
            self,
            Builtin::UdpEcho
                | Builtin::UdpDiscard
                | Builtin::UdpChargen
                | Builtin::UdpDaytime
                | Builtin::UdpTime
        )
    }

    /// What serves an endpoint of this service.
    pub fn handler(self, options: ServiceOptions) -> Handler {
        fn stream<F>(f: F) -> Handler
        where
            F: Fn(&ConnInfo<'_>) -> Box<dyn Service> + Send + Sync + 'static,
        {
            Handler::Stream(Arc::new(f))
        }
        fn datagram<F>(f: F) -> Handler
        where
            F: Fn() -> Box<dyn DatagramService> + Send + Sync + 'static,
        {
            Handler::Datagram(Arc::new(f))
        }
        match self {
            Builtin::Echo => stream(|_| Box::new(Echo)),
            Builtin::Discard => stream(|_| Box::new(Discard)),
            Builtin::Chargen => stream(|_| Box::new(Chargen::new())),
            Builtin::Daytime => stream(|_| Box::new(Daytime)),
            Builtin::Time => stream(|_| Box::new(Time)),
            Builtin::Line => stream(move |conn| Box::new(Line::new(conn, options.max_line))),
            Builtin::Frame => stream(move |_| Box::new(Frame::new(options.max_frame))),
            Builtin::Http => stream(move |conn| Box::new(Http::new(conn, options.http))),
            Builtin::UdpEcho => datagram(|| Box::new(UdpEcho)),
            Builtin::UdpDiscard => datagram(|| Box::new(UdpDiscard)),
            Builtin::UdpChargen => datagram(|| Box::new(UdpChargen::new(seed()))),
            Builtin::UdpDaytime => datagram(|| Box::new(UdpDaytime)),
            Builtin::UdpTime => datagram(|| Box::new(UdpTime)),
        }
    }

    /// A factory creating this service for each TCP connection; `None` for the UDP
    /// services, which have no connections (see [`Builtin::handler`]).
    pub fn factory(self, options: ServiceOptions) -> Option<Arc<dyn ServiceFactory>> {
        match self.handler(options) {
            Handler::Stream(factory) => Some(factory),
            Handler::Datagram(_) => None,
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Builtin {
    type Err = String;

    fn from_str(s: &str) -> Result<Builtin, String> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Builtin::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "unknown service '{s}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Test helper: what a service is told about its connection, for a client at
/// 192.0.2.7:4242 on listener 127.0.0.1:7100, loop 3 of server `web-1` — through a PROXY
/// header from 127.0.0.1:50000 if `proxied` — passed to `make`.
#[cfg(test)]
pub(crate) fn test_connection<S>(proxied: bool, make: impl FnOnce(&ConnInfo<'_>) -> S) -> S {
    let stats = Arc::new(Stats::default());
    let server_id: Arc<str> = Arc::from("web-1");
    let client: SocketAddr = "192.0.2.7:4242".parse().unwrap();
    let conn = ConnInfo {
        peer: if proxied {
            "127.0.0.1:50000".parse().unwrap()
        } else {
            client
        },
        proxied: proxied.then(|| Proxied {
            source: client,
            destination: "198.51.100.1:7100".parse().unwrap(),
        }),
        listener: "127.0.0.1:7100".parse().unwrap(),
        loop_index: 3,
        server_id: &server_id,
        stats: &stats,
        tls: None,
    };
    make(&conn)
}

/// Test helper: drives a service with plain byte slices, no sockets.
#[cfg(test)]
pub(crate) struct Harness<S> {
    pub service: S,
    pub out: Buffer,
    pub finished: bool,
    pub high_watermark: usize,
}

#[cfg(test)]
impl<S: Service> Harness<S> {
    pub fn new(service: S) -> Harness<S> {
        Harness {
            service,
            out: Buffer::new(),
            finished: false,
            high_watermark: 256 * 1024,
        }
    }

    fn sink(&mut self) -> (&mut S, Output<'_>) {
        let out = Output::new(&mut self.out, self.high_watermark, &mut self.finished);
        (&mut self.service, out)
    }

    pub fn connect(&mut self) {
        let (s, mut out) = self.sink();
        s.on_connect(&mut out);
    }

    pub fn input(&mut self, data: &[u8]) -> usize {
        let (s, mut out) = self.sink();
        s.on_input(data, &mut out)
    }

    pub fn drained(&mut self) {
        let (s, mut out) = self.sink();
        s.on_drained(&mut out);
    }

    pub fn peer_finished(&mut self) {
        let (s, mut out) = self.sink();
        s.on_peer_finished(&mut out);
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        let v = self.out.as_slice().to_vec();
        self.out.release();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built-in names parse case-insensitively and unknown names say what is accepted.
    #[test]
    fn builtin_names() {
        assert_eq!("ECHO".parse::<Builtin>(), Ok(Builtin::Echo));
        assert_eq!("chargen".parse::<Builtin>(), Ok(Builtin::Chargen));
        let err = "gopher".parse::<Builtin>().unwrap_err();
        assert!(
            err.contains("echo, discard, chargen, daytime, time, line, frame, http, udp-echo"),
            "{err}"
        );
    }

    /// `room` counts output already pending on the connection and written in this call.
    #[test]
    fn output_room_accounts_for_pending() {
        let mut buf = Buffer::new();
        buf.extend(&[0; 60]);
        let mut finished = false;
        let mut out = Output::new(&mut buf, 100, &mut finished);
        assert_eq!(out.room(), 40);
        out.write(&[0; 30]);
        assert_eq!(out.pending(), 90);
        assert_eq!(out.room(), 10);
        out.write(&[0; 30]);
        assert_eq!(out.room(), 0);
    }

    /// Every built-in has a handler; only the stream services have a connection factory,
    /// and asking a UDP service for one is an answer, not a panic.
    #[test]
    fn handlers_and_factories() {
        for b in Builtin::ALL {
            let handler = b.handler(ServiceOptions::default());
            assert_eq!(
                matches!(handler, Handler::Datagram(_)),
                b.is_datagram(),
                "{b}"
            );
            assert_eq!(
                b.factory(ServiceOptions::default()).is_some(),
                !b.is_datagram(),
                "{b}"
            );
        }
    }

    /// A write of a slice of the fresh input is recorded, not copied; a second write copies
    /// it first, so order is kept.
    #[test]
    fn output_borrows_input_then_keeps_order() {
        let input = b"hello world".to_vec();
        let mut target = Buffer::new();
        let mut finished = false;
        let mut out = Output::by_reference(&mut target, &input, 100, &mut finished);
        out.write(&input[6..]);
        assert_eq!(out.pending(), 5);
        assert_eq!(out.room(), 95);
        assert!(out.target.is_empty(), "nothing copied");
        out.write(b"!");
        assert_eq!(out.take_borrowed(), None);
        assert_eq!(target.as_slice(), b"world!");
    }

    /// A slice from elsewhere is copied; a static slice is recorded; a plain sink never
    /// borrows.
    #[test]
    fn output_borrows_only_what_it_may() {
        let input = b"abc".to_vec();
        let other = b"xyz".to_vec();
        let mut target = Buffer::new();
        let mut finished = false;
        let mut out = Output::by_reference(&mut target, &input, 100, &mut finished);
        out.write(&other);
        assert_eq!(out.take_borrowed(), None);
        assert_eq!(target.as_slice(), b"xyz");
        let mut target = Buffer::new();
        let mut out = Output::by_reference(&mut target, &input, 100, &mut finished);
        out.write_static(b"static");
        assert_eq!(out.take_borrowed(), Some(Borrowed::Static(b"static")));
        let mut target = Buffer::new();
        let mut out = Output::new(&mut target, 100, &mut finished);
        out.write_static(b"static");
        assert_eq!(out.take_borrowed(), None);
        assert_eq!(target.as_slice(), b"static");
    }
}
