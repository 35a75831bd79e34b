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
//!
//! A service ends its side of the conversation with [`Output::finish`]: the loop flushes every
//! byte already written, sends FIN, and closes without losing data (lingering close).
//!
//! [`Output::room`] tells a producer how much it may write before reaching the high
//! watermark. A service that writes only in response to input (echo) can ignore it: the loop
//! never reads more than the room left, so echo output is bounded by construction. A service
//! that generates output by itself (chargen) must respect it, and produces more only when
//! [`on_drained`](Service::on_drained) is called — that is how a slow reader is kept from
//! growing the server's memory.

pub mod chargen;
pub mod datagram;
mod daytime;
mod discard;
mod echo;
pub mod frame;
pub mod line;

pub use chargen::Chargen;
pub use datagram::{DatagramService, UdpDiscard, UdpEcho};
pub use daytime::Daytime;
pub use discard::Discard;
pub use echo::Echo;
pub use frame::Frame;
pub use line::Line;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use crate::buffer::Buffer;
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
    /// read. Returning less than `input.len()` is how a framed protocol waits for the rest of
    /// a request. The unconsumed tail is bounded by the high watermark: a service that keeps
    /// more than that unconsumed is closed as a protocol error.
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

    /// The most unconsumed input this service may leave with the connection (a partial
    /// request). `None`, the default, means the high watermark. A length-prefixed protocol
    /// that must reassemble a whole frame before answering declares its frame limit here.
    fn input_limit(&self) -> Option<usize> {
        None
    }
}

/// What a factory knows about the connection it creates a service for.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo<'a> {
    /// The client's address as the server sees it.
    pub peer: SocketAddr,
    /// The counters of the loop serving the connection.
    pub stats: &'a Arc<Stats>,
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
pub struct Output<'a> {
    /// The connection's pending output, or the loop's empty scratch when nothing is pending.
    target: &'a mut Buffer,
    high_watermark: usize,
    finished: &'a mut bool,
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
            high_watermark,
            finished,
        }
    }

    /// Queues `bytes` for the peer.
    ///
    /// Writing after [`Output::finish`] is a bug in the service and is ignored with a debug
    /// assertion, because the FIN may already be on its way.
    pub fn write(&mut self, bytes: &[u8]) {
        debug_assert!(!*self.finished, "service wrote after finish()");
        if !*self.finished {
            self.target.extend(bytes);
        }
    }

    /// Bytes queued for the peer and not yet accepted by the kernel, including this call's.
    pub fn pending(&self) -> usize {
        self.target.len()
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
    /// Newline-delimited commands ([`Line`]).
    Line,
    /// Length-prefixed frames, echoed ([`Frame`]).
    Frame,
    /// RFC 862 over UDP ([`UdpEcho`]).
    UdpEcho,
    /// RFC 863 over UDP ([`UdpDiscard`]).
    UdpDiscard,
}

/// What serves an endpoint: a factory of per-connection services for TCP, or one datagram
/// service for a UDP socket.
pub enum Handler {
    /// A TCP listener; each accepted connection gets a service from the factory.
    Stream(Arc<dyn ServiceFactory>),
    /// A UDP socket and the service answering its datagrams.
    Datagram(Box<dyn DatagramService>),
}

/// Limits of the framed services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceOptions {
    /// The longest request line of the `line` service.
    pub max_line: usize,
    /// The largest payload of the `frame` service.
    pub max_frame: usize,
}

impl Default for ServiceOptions {
    fn default() -> ServiceOptions {
        ServiceOptions {
            max_line: line::DEFAULT_MAX_LINE,
            max_frame: frame::DEFAULT_MAX_FRAME,
        }
    }
}

impl Builtin {
    /// Every built-in, in help order.
    pub const ALL: [Builtin; 8] = [
        Builtin::Echo,
        Builtin::Discard,
        Builtin::Chargen,
        Builtin::Daytime,
        Builtin::Line,
        Builtin::Frame,
        Builtin::UdpEcho,
        Builtin::UdpDiscard,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
            Builtin::Discard => "discard",
            Builtin::Chargen => "chargen",
            Builtin::Daytime => "daytime",
            Builtin::Line => "line",
            Builtin::Frame => "frame",
            Builtin::UdpEcho => "udp-echo",
            Builtin::UdpDiscard => "udp-discard",
        }
    }

    /// Whether this service runs over UDP.
    pub fn is_datagram(self) -> bool {
        matches!(self, Builtin::UdpEcho | Builtin::UdpDiscard)
    }

    /// What serves an endpoint of this service.
    pub fn handler(self, options: ServiceOptions) -> Handler {
        fn stream<F>(f: F) -> Handler
        where
            F: Fn(&ConnInfo<'_>) -> Box<dyn Service> + Send + Sync + 'static,
        {
            Handler::Stream(Arc::new(f))
        }
        match self {
            Builtin::Echo => stream(|_| Box::new(Echo)),
            Builtin::Discard => stream(|_| Box::new(Discard)),
            Builtin::Chargen => stream(|_| Box::new(Chargen::new())),
            Builtin::Daytime => stream(|_| Box::new(Daytime)),
            Builtin::Line => stream(move |conn| {
                Box::new(Line::new(
                    conn.peer,
                    Arc::clone(conn.stats),
                    options.max_line,
                ))
            }),
            Builtin::Frame => stream(move |_| Box::new(Frame::new(options.max_frame))),
            Builtin::UdpEcho => Handler::Datagram(Box::new(UdpEcho)),
            Builtin::UdpDiscard => Handler::Datagram(Box::new(UdpDiscard)),
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
            err.contains("echo, discard, chargen, daytime, line, frame"),
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
}
