//! The stages before serving: work a connection does before its service exists.
//!
//! A listener may ask for stages that come before any byte reaches a service, in the order
//! they come on the wire: a PROXY protocol header ([`header`](super::header): consumed, never
//! seen by the service, and what it says is the service's [`ConnInfo`]), and next a TLS
//! handshake. Each stage reads (and, for a handshake, writes) on the connection's socket,
//! has its own deadline and its own ways to fail, and ends by handing over to the next
//! stage or to the service. The serving state machine ([`super::serving`]) starts after the
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

use super::header::Header;
use super::{Context, Io};
use crate::buffer::Buffer;
use crate::config::Limits;
use crate::proxy::Origin;
use crate::service::{ConnInfo, Service, ServiceFactory};
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
    /// The service, for the client a PROXY header named (or the peer itself).
    fn service(&self, origin: Origin) -> Box<dyn Service> {
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
        })
    }
}

/// The stage a connection is in before serving. A TLS handshake comes after the header.
enum Stage {
    /// Reading a PROXY protocol header.
    Header(Header),
}

/// How a stage's turn ended.
pub(crate) enum Step {
    /// Nothing more to do until the next readiness event or deadline.
    Wait,
    /// The budget ran out with bytes left to read: run again next turn.
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
    unborn: Unborn,
    stage: Stage,
    /// When the connection was accepted: the stages' deadlines count from here.
    accepted: Time,
}

impl Preface {
    /// A connection that reads a PROXY protocol header first.
    pub(crate) fn proxy_header(unborn: Unborn, now: Time) -> Preface {
        Preface {
            unborn,
            stage: Stage::Header(Header::default()),
            accepted: now,
        }
    }

    /// Heap bytes held (the header read so far).
    pub(crate) fn buffered_capacity(&self) -> usize {
        match &self.stage {
            Stage::Header(h) => h.buffered_capacity(),
        }
    }

    /// The readiness to register for: a header is only read.
    pub(crate) fn want(&self) -> Want {
        match self.stage {
            Stage::Header(_) => Want::READ,
        }
    }

    /// Runs the current stage for one turn, reading within `budget`.
    pub(crate) fn turn<S: Socket>(
        &mut self,
        io: &mut Io<S>,
        cx: &mut Context<'_>,
        budget: &mut usize,
    ) -> Step {
        let done = match &mut self.stage {
            Stage::Header(h) => h.turn(io, cx, budget),
        };
        match done {
            Ok(Some((origin, rest))) => Step::Serve {
                service: self.unborn.service(origin),
                input: rest,
            },
            Ok(None) if *budget == 0 && io.read_ready => Step::Again,
            Ok(None) => Step::Wait,
            Err(reason) => Step::Closed(reason),
        }
    }

    /// The next time the connection needs attention without an event: the stage's deadline,
    /// or the idle timeout if that comes first.
    pub(crate) fn deadline<S>(&self, io: &Io<S>, limits: &Limits) -> Option<Time> {
        let stage = match self.stage {
            Stage::Header(_) => self.accepted.after(limits.proxy_timeout),
        };
        let idle = limits.idle_timeout.map(|d| io.last_active.after(d));
        [Some(stage), idle].into_iter().flatten().min()
    }

    /// The loop's timer came due: closes the connection if the stage's deadline, or the idle
    /// timeout, has passed.
    pub(crate) fn on_deadline<S>(&mut self, io: &Io<S>, cx: &Context<'_>) -> Option<CloseReason> {
        let (now, limits) = (cx.now, cx.limits);
        match &self.stage {
            Stage::Header(h) if now >= self.accepted.after(limits.proxy_timeout) => {
                h.timed_out(io, cx);
                return Some(CloseReason::Proxy);
            }
            Stage::Header(_) => {}
        }
        if limits
            .idle_timeout
            .is_some_and(|d| now >= io.last_active.after(d))
        {
            debug!("conn {}: idle timeout", io.id);
            return Some(CloseReason::Idle);
        }
        None
    }
}
