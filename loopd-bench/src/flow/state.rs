//! Where a flow is in its life: the `State` that owns its socket, the [`Phase`] that
//! names it, and the transitions — open, connected, finish, fail — each through the one
//! function that changes state.

use std::fmt;
use std::time::Instant;

use log::trace;
use mio::Interest;

use super::backend::Backend;
use super::wire::{Conn, Wire};
use super::{Ctx, Failure, Flow};
use crate::errors::ErrorKind;
use crate::schedule::Wake;

/// Where a flow is in its life, named after what it means on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not opened yet (`--ramp`).
    Waiting,
    /// The handshake is under way (a TCP SYN is out).
    Connecting,
    /// Messages flow.
    Established,
    /// Done, normally: closed with a FIN, every reply read.
    Finished,
    /// Ended by an error.
    Failed,
}

impl Phase {
    /// The readiness a socket in this phase is registered for; `None` where there is no
    /// socket. Both readable and writable while connecting — the handshake's completion is
    /// a writable edge, and the same event may carry data the server sent at once — and the
    /// same when established: an interest that changed with every message would cost an
    /// `epoll_ctl` per message, while an unneeded writable edge costs a flag. So a socket is
    /// registered once and never re-registered.
    pub fn interest(self) -> Option<Interest> {
        match self {
            Phase::Connecting | Phase::Established => Some(Interest::READABLE | Interest::WRITABLE),
            Phase::Waiting | Phase::Finished | Phase::Failed => None,
        }
    }

    /// Whether the flow is over.
    pub fn ended(self) -> bool {
        matches!(self, Phase::Finished | Phase::Failed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Waiting => "WAITING",
            Phase::Connecting => "SYN-SENT",
            Phase::Established => "ESTABLISHED",
            Phase::Finished => "CLOSED",
            Phase::Failed => "FAILED",
        })
    }
}

/// A flow's state, holding the socket where there is one.
pub(super) enum State<W: Wire> {
    /// Not opened yet.
    Waiting,
    /// Connecting since `since`.
    Connecting {
        /// The socket whose handshake is under way.
        socket: W::Socket,
        /// When the dial started it.
        since: Instant,
        /// A layered stream (TLS): when the socket under it connected; its own handshake
        /// has been under way since.
        connected: Option<Instant>,
    },
    /// Established.
    Established(Conn<W>),
    /// Done.
    Finished,
    /// Failed.
    Failed,
}

impl<W: Wire> State<W> {
    /// Its name.
    pub(super) fn phase(&self) -> Phase {
        match self {
            State::Waiting => Phase::Waiting,
            State::Connecting { .. } => Phase::Connecting,
            State::Established(_) => Phase::Established,
            State::Finished => Phase::Finished,
            State::Failed => Phase::Failed,
        }
    }

    fn socket(&mut self) -> Option<&mut W::Socket> {
        match self {
            State::Connecting { socket, .. } => Some(socket),
            State::Established(conn) => Some(&mut conn.socket),
            _ => None,
        }
    }
}

impl<W: Wire> Flow<W> {
    /// The single choke point for state changes. `next` makes the new state from the old
    /// one, moving the socket along or letting it drop (which closes it and takes it off
    /// the poller). Logs the change at trace level, keeps the worker's counts of established
    /// and ended flows without sweeping, and registers the socket as it enters the first
    /// state that wants readiness (re-registering only if the wanted readiness changed,
    /// which no transition does). A socket the poller refuses fails the flow.
    pub(super) fn set_state(
        &mut self,
        cx: &mut Ctx<W::Socket>,
        now: Instant,
        next: impl FnOnce(State<W>) -> State<W>,
    ) {
        let before = self.state.phase();
        let old = std::mem::replace(&mut self.state, State::Finished);
        self.state = next(old);
        let after = self.state.phase();
        trace!("flow {}: state={before}=>{after}", self.id);
        let established = |p: Phase| p == Phase::Established;
        match (established(before), established(after)) {
            (false, true) => cx.open += 1,
            (true, false) => cx.open -= 1,
            _ => {}
        }
        match (before.ended(), after.ended()) {
            (false, true) => cx.ended += 1,
            (true, false) => cx.ended -= 1,
            _ => {}
        }
        let token = self.token;
        let registered = match (self.state.socket(), before.interest(), after.interest()) {
            (Some(socket), None, Some(interest)) => cx.registry.register(socket, token, interest),
            (Some(socket), Some(was), Some(interest)) if was != interest => {
                cx.registry.reregister(socket, token, interest)
            }
            _ => Ok(()),
        };
        if let Err(e) = registered {
            let failure = Failure::new(ErrorKind::ConnectOther, format!("register: {e}"));
            self.fail(cx, failure, now);
        }
    }

    /// Opens a socket: a stream starts its handshake (and a connect timeout), a datagram
    /// socket is established at once.
    pub(super) fn open(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        self.attempt += 1;
        let source = self.source(&cx.cfg);
        let socket = match cx.dial.dial(cx.cfg.target, source) {
            Ok(socket) => socket,
            Err(e) => {
                return self.fail(cx, Failure::connect(&e, source), now);
            }
        };
        if W::HANDSHAKE {
            self.set_state(cx, now, |_| State::Connecting {
                socket,
                since: now,
                connected: None,
            });
            if self.phase() == Phase::Connecting {
                let timeout = now + cx.cfg.connect_timeout;
                let wake = Wake::ConnectTimeout(self.attempt);
                cx.wakes.push(timeout, self.token.0, wake);
            }
        } else {
            // A connected datagram socket is ready at once: there is no handshake.
            let conn = self.new_conn(cx, socket);
            self.set_state(cx, now, |_| State::Established(conn));
            if self.phase() == Phase::Established {
                self.established(cx, None, now);
            }
        }
    }

    /// The handshake completed.
    pub(super) fn connected(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        let State::Connecting {
            since, connected, ..
        } = self.state
        else {
            return;
        };
        let tcp = connected.unwrap_or(now);
        let (id, index, seq) = (self.id, self.token.0, self.next_seq);
        let backend = Backend::new(cx.cfg.per_backend && W::ASKS_BACKEND);
        self.set_state(cx, now, |old| match old {
            State::Connecting { socket, .. } => {
                State::Established(Conn::new(id, index, socket, seq, backend))
            }
            other => other,
        });
        self.established(cx, Some((since, tcp)), now);
    }

    fn new_conn(&self, cx: &Ctx<W::Socket>, socket: W::Socket) -> Conn<W> {
        let backend = Backend::new(cx.cfg.per_backend && W::ASKS_BACKEND);
        Conn::new(self.id, self.token.0, socket, self.next_seq, backend)
    }

    /// Ends the flow normally, closing the socket (a FIN: every reply has been read). A
    /// layered stream says goodbye first (TLS: `close_notify`); if the socket cannot take it
    /// all now, the connection stays until the writable edge has flushed it (it is not idle
    /// meanwhile, so the next pump calls this again, and the stall guard still applies).
    pub(super) fn finish(&mut self, cx: &mut Ctx<W::Socket>, now: Instant) {
        if let State::Established(conn) = &mut self.state {
            W::close(conn);
            if W::owes_output(conn) {
                return;
            }
        }
        if self.unserved(cx) {
            let backend = self.conn().and_then(|c| c.backend.index());
            cx.record.backend_errors(backend, 1);
            let id = self.id;
            cx.record.error(ErrorKind::Unserved, 1, || {
                format!(
                    "connection {id}: established (the kernel completed the handshake) but \
                     nothing came back inside the measurement; is the server at its \
                     connection limit?"
                )
            });
        }
        self.close(cx, now, State::Finished);
    }

    /// A connection the run asked for that expected something back and got nothing inside
    /// the window, whenever its handshake completed: before the window (its first messages
    /// went out in the warm-up and their replies came only after it), inside it, or after
    /// it (a SYN dropped by a full accept queue and retransmitted too late). Neither the
    /// warm-up nor the kernel's retransmission timer may turn a starved connection into a
    /// silent one. Over a lossy transport, what was not answered is counted as loss instead.
    fn unserved(&self, cx: &Ctx<W::Socket>) -> bool {
        let Some(conn) = self.conn() else {
            return false;
        };
        !W::LOSSY && self.expects_service(&cx.cfg) && !conn.served
    }

    /// Ends the flow with an error.
    pub(super) fn fail(&mut self, cx: &mut Ctx<W::Socket>, failure: Failure, now: Instant) {
        let id = self.id;
        // A connection that never established: the dial or TCP failed, or a TLS handshake.
        if failure.kind.is_connect() || self.phase() == Phase::Connecting {
            cx.record.tally.failed += 1;
        }
        if let Some(alert) = &failure.alert {
            *cx.record.tally.tls.alerts.entry(alert.clone()).or_default() += 1;
        }
        let backend = self.conn().and_then(|c| c.backend.index());
        cx.record.backend_errors(backend, 1);
        if now < cx.record.plan.from {
            cx.record.tally.ended_before += 1;
        }
        cx.record.error(failure.kind, 1, || {
            format!("connection {id}: {}", failure.what)
        });
        self.close(cx, now, State::Failed);
    }

    /// Drops the socket, if any, moving to `next` (finished or failed). The next connection
    /// of a churning flow continues the sequence numbers.
    pub(super) fn close(&mut self, cx: &mut Ctx<W::Socket>, now: Instant, next: State<W>) {
        if let Some(conn) = self.conn() {
            self.next_seq = conn.next_seq;
        }
        self.set_state(cx, now, |_| next);
    }
}
