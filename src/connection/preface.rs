//! The stages before serving: work a connection does before its service exists.
//!
//! A listener may ask for stages that come before any byte reaches a service, in the order
//! they come on the wire: a PROXY protocol header ([`header`](super::header): consumed, never
//! seen by the service, and what it says is the service's [`ConnInfo`]), then the socket
//! layer's handshake ([`handshake`](super::handshake): TLS, whose outcome — SNI, ALPN,
//! version — is the service's `ConnInfo` too). Each stage reads (and, for a handshake,
//! writes) on the connection's socket, has its own deadline and its own ways to fail, and
//! ends by handing over to the next stage or to the service. The serving state machine ([`super::serving`]) starts after the
//! last one and does not know whether any came first; a plain connection has no preface at
//! all and pays nothing for one (it is boxed, and only a connection that has one allocates
//! it).
//!
//! A stage ends a turn with a [`Step`]: wait for the next event, run again (budget spent),
//! close for a reason, or serve — with the service created from what the stages learned and
//! any bytes that arrived after the last stage's own, for the service to be offered first.

use std::net::SocketAddr;
use std::sync::Arc;

use log::debug;

use super::handshake::{Handshake, Progress};
use super::header::Header;
use super::{Context, Io};
use crate::buffer::Buffer;
use crate::config::Limits;
use crate::fault::ConnFaults;
use crate::proxy::Origin;
use crate::service::{ConnInfo, Negotiated, Service, ServiceFactory};
use crate::socket::{Socket, Want};
use crate::stats::{CloseReason, Stats};
use crate::timer::Time;

/// What creates a connection's service once the stages before serving are done: a
/// [`ConnInfo`] with owned parts.
pub struct Unborn {
    /// The listener's service factory.
    pub factory: Arc<dyn ServiceFactory>,
    /// The socket's peer (behind a proxy: the proxy).
    pub peer: SocketAddr,
    /// The listener's address.
    pub listener: SocketAddr,
    /// The loop's number.
    pub loop_index: usize,
    /// `--server-id`.
    pub server_id: Arc<str>,
    /// The endpoint's counters.
    pub stats: Arc<Stats>,
}

impl Unborn {
    /// The service, for the client a PROXY header named (or the peer itself), over the TLS
    /// session a handshake settled (if there was one).
    fn service(&self, origin: Origin, tls: Option<&Negotiated>) -> Box<dyn Service> {
        let proxied = match origin {
            Origin::Client(p) => Some(p),
            Origin::Proxy => None,
        };
        self.factory.new_service(&ConnInfo {
            peer: self.peer,
            proxied,
            listener: self.listener,
            loop_index: self.loop_index,
            server_id: &self.server_id,
            stats: &self.stats,
            tls,
        })
    }
}

/// Which stages a connection has before serving, in the order they come on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stages {
    /// A PROXY protocol header.
    pub proxy_header: bool,
    /// The socket layer's handshake (TLS): the socket must have one
    /// ([`Socket::handshake`]).
    pub handshake: bool,
}

/// The stage a connection is in before serving.
enum Stage {
    /// Reading a PROXY protocol header.
    Header(Header),
    /// The socket layer's handshake.
    Handshake(Handshake),
}

/// How a stage's turn ended.
pub(crate) enum Step {
    /// Nothing more to do until the next readiness event or deadline.
    Wait,
    /// The budget ran out with bytes left to read, or a handshake waits for the loop's
    /// handshake budget: run again next turn.
    Again,
    /// Refused, late, or cut short: the connection ends before any service saw a byte.
    Closed(CloseReason),
    /// Done: serve with this service, offering it `input` (bytes that followed the last
    /// stage's own) first.
    Serve {
        /// The service the stages' outcome created.
        service: Box<dyn Service>,
        /// Bytes for the service, already read.
        input: Buffer,
    },
}

/// What a connection does before serving. See the [module documentation](self).
pub(crate) struct Preface {
    /// The connection's faults, handed to serving when it begins (faults act after the
    /// stages: on what the service says).
    pub(crate) faults: Option<Box<ConnFaults>>,
    unborn: Unborn,
    stage: Stage,
    /// A handshake follows the header.
    handshake_next: bool,
    /// When the connection was accepted: the stages' deadlines count from here.
    accepted: Time,
}

impl Preface {
    /// A connection with `stages` (at least one) before serving.
    pub(crate) fn new(unborn: Unborn, stages: Stages, now: Time) -> Preface {
        debug_assert!(stages.proxy_header || stages.handshake);
        let stage = if stages.proxy_header {
            Stage::Header(Header::default())
        } else {
            Stage::Handshake(Handshake::new(Origin::Proxy, Buffer::new()))
        };
        Preface {
            faults: None,
            unborn,
            stage,
            handshake_next: stages.proxy_header && stages.handshake,
            accepted: now,
        }
    }

    /// Heap bytes held: the header read so far, or the handshake's bytes in waiting.
    pub(crate) fn buffered_capacity(&self) -> usize {
        match &self.stage {
            Stage::Header(h) => h.buffered_capacity(),
            Stage::Handshake(h) => h.buffered_capacity(),
        }
    }

    /// The readiness to register for: a header is only read; a handshake is read, and
    /// written while the layer has a flight of its own waiting.
    pub(crate) fn want<S: Socket>(&self, io: &Io<S>) -> Want {
        match self.stage {
            Stage::Header(_) => Want::READ,
            Stage::Handshake(_) => Want {
                read: true,
                write: io.socket.has_pending_output(),
            },
        }
    }

    /// Runs the stages for one turn, reading within `budget`: the header, then (in the same
    /// turn, if the bytes are there) the handshake, then the service is born.
    pub(crate) fn turn<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> Step {
        loop {
            let progress = match &mut self.stage {
                Stage::Header(h) => match h.turn(io, cx, budget) {
                    Ok(Some((origin, rest))) if self.handshake_next => {
                        // What followed the header belongs to the layer: its first records.
                        self.stage = Stage::Handshake(Handshake::new(origin, rest));
                        continue;
                    }
                    Ok(Some((origin, rest))) => {
                        return Step::Serve {
                            service: self.unborn.service(origin, None),
                            input: rest,
                        };
                    }
                    Ok(None) if *budget == 0 && io.read_ready => return Step::Again,
                    Ok(None) => return Step::Wait,
                    Err(reason) => return Step::Closed(reason),
                },
                Stage::Handshake(h) => h.turn(io, cx, budget),
            };
            return match progress {
                Progress::Done(handover) => Step::Serve {
                    service: self
                        .unborn
                        .service(handover.origin, Some(&handover.negotiated)),
                    input: handover.input,
                },
                Progress::Waiting => Step::Wait,
                Progress::Yield => Step::Again,
                Progress::Failed(reason) => Step::Closed(reason),
            };
        }
    }

    /// The current stage's deadline, counted from accept.
    fn stage_deadline(&self, limits: &Limits) -> Time {
        match self.stage {
            Stage::Header(_) => self.accepted.after(limits.proxy_timeout),
            Stage::Handshake(_) => self.accepted.after(limits.handshake_timeout),
        }
    }

    /// The next time the connection needs attention without an event: the stage's deadline,
    /// or the idle timeout if that comes first.
    pub(crate) fn deadline<S>(&self, io: &Io<S>, limits: &Limits) -> Option<Time> {
        let stage = self.stage_deadline(limits);
        let idle = limits.idle_timeout.map(|d| io.last_active.after(d));
        [Some(stage), idle].into_iter().flatten().min()
    }

    /// The loop's timer came due: closes the connection if the stage's deadline, or the idle
    /// timeout, has passed.
    pub(crate) fn on_deadline<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &Context<'_>,
    ) -> Option<CloseReason> {
        if cx.now >= self.stage_deadline(cx.limits) {
            return Some(match &self.stage {
                Stage::Header(h) => {
                    h.timed_out(io, cx);
                    CloseReason::Proxy
                }
                Stage::Handshake(h) => h.timed_out(io, cx),
            });
        }
        if cx
            .limits
            .idle_timeout
            .is_some_and(|d| cx.now >= io.last_active.after(d))
        {
            debug!("conn {}: idle timeout", io.id);
            return Some(CloseReason::Idle);
        }
        None
    }
}
