//! The established connection ([`Conn`]) and the seam between the flow and its transport:
//! a [`Wire`] says how messages travel over one kind of socket.
//!
//! Two implementations cover every transport: [`Bytes`](super::stream::Bytes) for any byte
//! [`Stream`](crate::transport::Stream) and [`Datagrams`](super::datagram::Datagrams) for any
//! [`Datagram`](crate::transport::Datagram) socket. The flow calls only what is declared
//! here.

use std::collections::VecDeque;
use std::time::Instant;

use mio::event::Source;

use super::backend::Backend;
use super::{Ctx, Failure, Pending};
use crate::transport::{Handshake, Layer, Session};

/// How a write pass ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEnd {
    /// Everything queued was written.
    Done,
    /// The send buffer is full; the writable edge resumes.
    Blocked,
    /// The budget ran out with the socket still taking bytes: run again.
    Budget,
}

/// How messages travel over one kind of socket.
pub trait Wire: Sized {
    /// The socket.
    type Socket: Source + Layer;
    /// What the discipline keeps per connection besides the [`Conn`]'s common parts.
    type State;
    /// Whether a new socket must complete a handshake before it carries messages.
    const HANDSHAKE: bool;
    /// Whether what the server leaves unanswered is loss, counted against `--max-loss`,
    /// rather than an error (and a socket that got nothing back is not also `unserved`).
    const LOSSY: bool;
    /// Whether `--per-backend` asks each new connection's server who it is (`SERVER`, before
    /// any message) rather than reading it from every answer (HTTP's `loopd-server`).
    const ASKS_BACKEND: bool;

    /// Whether the handshake the dial started is done; asked while connecting.
    fn handshake(socket: &mut Self::Socket) -> Handshake;
    /// The discipline's state for a connection whose first message is number `seq`.
    fn start(seq: u64) -> Self::State;
    /// Sends message `p` now (a datagram) or queues it to be written (a stream), and adds
    /// it to the messages in flight. `Ok(false)`: the socket has no room now; the message
    /// waits for the writable edge.
    fn send(conn: &mut Conn<Self>, cx: &mut Ctx<Self::Socket>, p: Pending)
        -> Result<bool, Failure>;
    /// Writes what is queued and unwritten, spending `budget`.
    fn write(
        conn: &mut Conn<Self>,
        cx: &mut Ctx<Self::Socket>,
        now: Instant,
        budget: &mut usize,
    ) -> Result<WriteEnd, Failure>;
    /// Messages queued whose bytes are not all written yet.
    fn queued(conn: &Conn<Self>) -> u64;
    /// Reads what the server sent, up to the receive budget, checking every byte and
    /// completing the messages it answers.
    fn receive(
        conn: &mut Conn<Self>,
        cx: &mut Ctx<Self::Socket>,
        now: Instant,
    ) -> Result<(), Failure>;
    /// A loss-timer wake-up for `at` came due. Returns whether it was the current one.
    fn expire(conn: &mut Conn<Self>, cx: &mut Ctx<Self::Socket>, at: Instant, now: Instant)
        -> bool;
    /// The run is over with the connection still waiting for `why`: counts what it waited
    /// for (`replies`: the load expects replies to its messages).
    fn abandon(conn: &mut Conn<Self>, cx: &mut Ctx<Self::Socket>, why: &str, replies: bool);
    /// Whether the socket may have more to read without a new edge ([`Layer::buffered`]).
    fn buffered(conn: &Conn<Self>) -> bool {
        conn.socket.buffered()
    }
    /// Whether the socket owes output of its own: the connection is not idle until it has
    /// left ([`Layer::owes_output`]).
    fn owes_output(conn: &Conn<Self>) -> bool {
        conn.socket.owes_output()
    }
    /// Starts the close the transport wants before the socket is dropped.
    fn close(conn: &mut Conn<Self>) {
        conn.socket.close();
    }
    /// What a layer's handshake settled, if there is a layer.
    fn session(conn: &Conn<Self>) -> Option<Session> {
        conn.socket.session()
    }
    /// Handshake mode: whether the server has said its first word since the handshake —
    /// bytes, a session ticket, or its close.
    fn heard(conn: &Conn<Self>) -> bool;
}

/// An established connection: its socket, what the discipline keeps, and the messages in
/// flight.
pub struct Conn<W: Wire> {
    /// The flow's connection id, carried in every payload.
    pub(super) id: u32,
    /// The flow's place in the worker, for its wake-ups.
    pub(super) index: usize,
    pub(super) socket: W::Socket,
    pub(super) wire: W::State,
    /// The next message to queue.
    pub(super) next_seq: u64,
    /// Messages queued and not yet answered, oldest first.
    pub(super) inflight: VecDeque<Pending>,
    /// Messages queued on this connection (churn: exactly one).
    pub(super) sent: u64,
    /// Something came back inside the window.
    pub(super) served: bool,
    /// Which server answers this connection (`--per-backend`).
    pub(super) backend: Backend,
    /// The last write came up short or would block: wait for a writable edge.
    pub(super) blocked: bool,
    /// The poller reported the peer's FIN: read to the end regardless of short reads.
    pub(super) peer_closing: bool,
    /// The receive budget ran out with data possibly left.
    pub(super) read_pending: bool,
    /// The send budget ran out with the socket still taking bytes.
    pub(super) write_pending: bool,
}

impl<W: Wire> Conn<W> {
    /// A connection of flow `id` (the worker's `index`-th) over `socket`, numbering its
    /// messages from `seq`.
    pub(super) fn new(
        id: u32,
        index: usize,
        socket: W::Socket,
        seq: u64,
        backend: Backend,
    ) -> Self {
        Conn {
            id,
            index,
            socket,
            wire: W::start(seq),
            next_seq: seq,
            inflight: VecDeque::new(),
            sent: 0,
            served: false,
            backend,
            blocked: false,
            peer_closing: false,
            read_pending: false,
            write_pending: false,
        }
    }

    /// Nothing in flight, nothing unwritten (by the flow or by a layer under it), no answer
    /// awaited.
    pub fn idle(&self) -> bool {
        self.inflight.is_empty()
            && W::queued(self) == 0
            && !self.backend.asking()
            && !W::owes_output(self)
    }

    /// Messages sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether something came back inside the window.
    pub fn served(&self) -> bool {
        self.served
    }

    /// The discipline's state.
    pub fn wire(&self) -> &W::State {
        &self.wire
    }
}
