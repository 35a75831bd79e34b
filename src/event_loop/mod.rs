//! The event loop: one `Poll`, its listeners, a slab of connections, a run queue and a set
//! of deadlines.
//!
//! One turn of `EventLoop::run`:
//!
//! 1. **Poll** with a timeout that is zero while the run queue or a listener has work left,
//!    and otherwise the time to the next deadline (or forever).
//! 2. **Dispatch** each event: connections get a
//!    [`Connection::turn`](crate::connection::Connection::turn) with the readiness;
//!    listeners are marked ready; UDP endpoints receive and answer datagrams; the shutdown
//!    [`Handle`] starts draining (signals reach the loop through it: see
//!    [`Server`](crate::server::Server)).
//! 3. **Accept** from ready listeners until `WouldBlock`, the connection limit, or descriptor
//!    exhaustion (which pauses accepting on a timer). Existing connections were served first.
//!    Client listeners share the `--max-connections` cap; a listener given an allowance of
//!    its own (the admin endpoint) counts against that instead, so the operator's probes are
//!    answered when the clients' cap is full (see `Pool`).
//! 4. **Run queue**: connections that used up their budget last turn run again, without an
//!    event, so a budget never loses a wakeup.
//! 5. **Deadlines** that came due are handed to their connections.
//!
//! The rooms around it: `token.rs` (what each token names, stale ones included), `slot.rs`
//! (what the loop keeps per connection), `accept.rs` (accepting, the connection pools and the
//! pause on exhaustion). What other threads see of a loop — its [`Handle`], its
//! [`Endpoint`]s, its [`Exit`] — is [`crate::control`].

mod accept;
mod slot;
#[cfg(feature = "tls")]
mod tls;
mod token;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::buffer::Buffer;
use crate::config::{LoopConfig, StreamOptions};
use crate::connection::{Ready, Turn};
use crate::control::{Endpoint, Exit, Handle, Shared, Transport};
use crate::endpoint::Bound;
use crate::fault::{Local, Rng};
use crate::listener::Listener;
use crate::proxy::TrustList;
use crate::service::Handler;
use crate::socket;
use crate::stats::{CloseReason, Snapshot, Stats};
use crate::timer::{Clock, Time, Timers};
use crate::udp::guard::Guard;
use crate::udp::{UdpEndpoint, UdpTurn};

use accept::{AcceptPause, Pool};
#[cfg(feature = "tls")]
use slot::TlsSocket;
use slot::{lookup, token_of, Conns, Family, TurnKit, MAX_POOLS};
use token::{decode, loop_token, Kind, Target, DATAGRAM_BASE, WAKER_KEY};

/// Runs `$self.$method::<S>(args)` with `S` the socket type of the slab `$kind` names.
macro_rules! by_kind {
    ($kind:expr, $self:ident . $method:ident ( $($arg:expr),* )) => {
        match $kind {
            Kind::Plain => $self.$method::<TcpStream>($($arg),*),
            #[cfg(feature = "tls")]
            Kind::Tls => $self.$method::<TlsSocket>($($arg),*),
            // No TLS connection exists without the feature, so no token names one.
            #[cfg(not(feature = "tls"))]
            Kind::Tls => {}
        }
    };
}

/// Size of the loop's shared read buffer. 64 KiB takes a loopback burst in one read (the
/// loopback MTU is 64 KiB) and still fits in L2 cache; it is allocated once per loop, not per
/// connection.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// Events taken from the kernel per `poll`. Larger batches amortise the system call; 1024 is
/// where the gain flattens out while keeping the array (12 bytes per event) small.
const EVENTS_CAPACITY: usize = 1024;

/// The event loop. See the [module documentation](self).
pub(crate) struct EventLoop {
    /// Which loop of a [`Server`](crate::server::Server) this is (0 when alone), for logs.
    index: usize,
    poll: Poll,
    listeners: Vec<Listener>,
    datagrams: Vec<UdpEndpoint>,
    /// Every bound address, in the order the endpoints were given.
    local_addrs: Vec<SocketAddr>,
    conns: Conns,
    next_serial: u64,
    run_queue: VecDeque<Token>,
    timers: Timers<Token>,
    clock: Clock,
    now: Time,
    kit: TurnKit,
    /// Connection allowances: the clients' cap first, then any listener's own.
    pools: Vec<Pool>,
    stream_options: StreamOptions,
    /// `--server-id`, for services that tell which backend answered.
    server_id: Arc<str>,
    /// Who may send a PROXY protocol header.
    proxy_from: TrustList,
    drain_timeout: Duration,
    accept_pause: AcceptPause,
    /// Set once draining: the drain deadline.
    draining: Option<Time>,
    shared: Arc<Shared>,
    /// Shutdown requests through the handle already acted on.
    handled_requests: u32,
    /// See [`LoopConfig::handshake_budget`].
    handshake_budget: usize,
    /// The TLS configuration of its `,tls` listeners, shared by every loop.
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The random choices of faults (`--fault-seed`, this loop's stream): each faulted
    /// connection and datagram endpoint draws its own seed from it.
    fault_rng: Rng,
    /// `--backlog`, to listen again after a `refuse` fault.
    backlog: u32,
    /// The next time a listener's own fault (stop-accept, refuse) begins or ends.
    listener_faults_next: Option<Time>,
}

impl EventLoop {
    /// Builds loop number `index` of a [`Server`](crate::server::Server) around sockets
    /// already bound for it, serving at most `max_connections` clients at once (and any
    /// listener's own allowance besides), set up by `config`, all of it.
    pub(crate) fn new(
        config: &LoopConfig,
        index: usize,
        max_connections: usize,
        endpoints: Vec<Bound>,
        fault_seed: u64,
    ) -> io::Result<EventLoop> {
        let mut fault_rng = Rng::for_loop(fault_seed, index);
        let poll = Poll::new()?;
        let (mut listeners, mut datagrams, mut local_addrs) = (Vec::new(), Vec::new(), Vec::new());
        let mut described = Vec::new();
        let mut pools = vec![Pool::new("connection".into(), max_connections)];
        // Every UDP port of the server (each loop has a socket on each): a datagram from one
        // of them is a loop between two of its services (see `udp::guard`).
        let own_ports: Vec<u16> = endpoints
            .iter()
            .filter(|b| matches!(b.handler, Handler::Datagram(_)))
            .filter_map(|b| b.socket.local_addr().ok()?.as_socket())
            .map(|a| a.port())
            .collect();
        let any_tls = endpoints.iter().any(|b| b.tls);
        for Bound {
            socket,
            handler,
            name,
            proxy,
            tls,
            allowance,
            faults,
        } in endpoints
        {
            let endpoint = described.len();
            let transport = match handler {
                Handler::Stream(_) => Transport::Tcp,
                Handler::Datagram(_) => Transport::Udp,
            };
            let addr = match handler {
                Handler::Stream(factory) => {
                    let mut l = Listener::from_socket(socket, config.backlog, factory, endpoint)?;
                    l.proxy = proxy;
                    l.tls = tls;
                    l.faults = faults.clone().map(Local::new);
                    if let Some(limit) = allowance {
                        if pools.len() == MAX_POOLS {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                format!(
                                    "more than {} listeners with an allowance of their own",
                                    MAX_POOLS - 1
                                ),
                            ));
                        }
                        l.pool = pools.len();
                        pools.push(Pool::new(format!("{name} connection"), limit));
                    }
                    let token = loop_token(listeners.len());
                    poll.registry()
                        .register(l.source(), token, Interest::READABLE)?;
                    let addr = l.local_addr();
                    listeners.push(l);
                    addr
                }
                Handler::Datagram(factory) => {
                    let service = factory.new_service();
                    let guard = Guard::new(service.replies(), &config.udp, own_ports.clone());
                    let mut u = UdpEndpoint::from_socket(socket, service, endpoint, guard)?;
                    u.set_faults(faults.clone().map(Local::new), fault_rng.next_u64());
                    let token = loop_token(DATAGRAM_BASE + datagrams.len());
                    let wanted = u.want();
                    u.registered = socket::register(poll.registry(), u.source(), token, wanted)?;
                    let addr = u.local_addr();
                    datagrams.push(u);
                    addr
                }
            };
            local_addrs.push(addr);
            described.push(Endpoint {
                service: name,
                addr,
                transport,
                proxy,
                tls,
                stats: Arc::new(Stats::default()),
                faults,
            });
        }
        let stats = described.iter().map(|e| Arc::clone(&e.stats)).collect();
        let waker = Waker::new(poll.registry(), loop_token(WAKER_KEY))?;
        let shared = Arc::new(Shared::new(waker, described));
        let clock = Clock::new();
        Ok(EventLoop {
            index,
            poll,
            listeners,
            datagrams,
            local_addrs,
            conns: {
                let all = pools.iter().map(|p| p.limit).sum();
                Conns::with_capacity(all, if any_tls { all } else { 0 })
            },
            next_serial: 0,
            run_queue: VecDeque::new(),
            timers: Timers::new(),
            now: clock.now(),
            clock,
            kit: TurnKit {
                limits: config.limits.clone(),
                scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
                out_scratch: Buffer::new(),
                stats,
                handshakes: 0,
            },
            pools,
            stream_options: config.stream,
            server_id: Arc::from(config.server_id.as_str()),
            proxy_from: config.proxy_from.clone(),
            drain_timeout: config.drain_timeout,
            accept_pause: AcceptPause::new(),
            draining: None,
            shared,
            handled_requests: 0,
            handshake_budget: config.handshake_budget,
            #[cfg(feature = "tls")]
            tls: None,
            fault_rng,
            backlog: config.backlog,
            listener_faults_next: None,
        })
    }

    /// Serves the loop's `,tls` listeners with `config`.
    #[cfg(feature = "tls")]
    pub(crate) fn set_tls(&mut self, config: Arc<rustls::ServerConfig>) {
        self.tls = Some(config);
    }

    /// The bound addresses, in listener order.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// A handle to stop the loop or read its counters from another thread.
    pub(crate) fn handle(&self) -> Handle {
        Handle::new(Arc::clone(&self.shared))
    }

    /// Runs until shut down. Only a failing `poll` is an error.
    pub(crate) fn run(mut self) -> io::Result<Exit> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = self.clock.now();
            for event in events.iter() {
                if let Some(exit) = self.dispatch(event) {
                    return Ok(self.finish(exit));
                }
            }
            self.accept();
            self.run_datagrams();
            self.run_queued();
            self.expire();
            if let Some(exit) = self.check_drained() {
                return Ok(self.finish(exit));
            }
        }
    }

    /// How long `poll` may sleep: not at all while work is queued, otherwise until the next
    /// deadline of any kind.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.run_queue.is_empty()
            || self.may_accept()
                && self
                    .listeners
                    .iter()
                    .any(|l| l.ready && !l.held && self.pools[l.pool].has_room())
            || self.datagrams.iter().any(UdpEndpoint::has_work)
        {
            return Some(Duration::ZERO);
        }
        let datagram_release = self
            .datagrams
            .iter()
            .filter_map(UdpEndpoint::next_release)
            .min();
        let next = [
            self.timers.next_deadline(),
            self.accept_pause.until,
            self.draining,
            self.listener_faults_next,
            datagram_release,
        ]
        .into_iter()
        .flatten()
        .min();
        next.map(|t| self.clock.now().until(t))
    }

    fn dispatch(&mut self, event: &Event) -> Option<Exit> {
        match decode(event.token()) {
            Target::Connection { kind, key, serial } => {
                let ready = Ready {
                    readable: event.is_readable(),
                    writable: event.is_writable(),
                    closed: event.is_read_closed() || event.is_error(),
                    urgent: event.is_priority(),
                };
                by_kind!(kind, self.turn(key, serial, ready));
            }
            Target::Listener(i) => {
                // Looked up: a drain earlier in this batch may have closed the listener.
                if let Some(l) = self.listeners.get_mut(i) {
                    l.ready = true;
                }
            }
            Target::Datagram(i) => self.datagram_turn(i, event.is_readable(), event.is_writable()),
            Target::Waker => {
                // Answer a liveness probe (the supervisor's watchdog): this loop is turning.
                self.shared.answer_probe();
                let requests = self.shared.shutdown_requests();
                while self.handled_requests < requests {
                    self.handled_requests += 1;
                    if let Some(exit) = self.shutdown_requested() {
                        return Some(exit);
                    }
                }
            }
        }
        None
    }

    /// The first request drains; the second exits at once.
    fn shutdown_requested(&mut self) -> Option<Exit> {
        if self.draining.is_some() {
            warn!("loop {}: second shutdown request: exiting now", self.index);
            return Some(Exit::Interrupted {
                open: self.conns.len(),
            });
        }
        self.begin_drain();
        None
    }

    /// Stops accepting and asks every connection to flush, half-close and linger.
    fn begin_drain(&mut self) {
        info!(
            "loop {}: shutdown requested: draining {} connections (up to {:?})",
            self.index,
            self.conns.len(),
            self.drain_timeout
        );
        self.draining = Some(self.now.after(self.drain_timeout));
        // Closing the listening sockets makes new clients fail fast instead of queueing in a
        // backlog nobody will accept from.
        self.listeners.clear();
        self.datagrams.clear();
        self.shut_down_all::<TcpStream>();
        #[cfg(feature = "tls")]
        self.shut_down_all::<TlsSocket>();
    }

    /// Starts a graceful close of every connection of `S`'s slab.
    fn shut_down_all<S: Family>(&mut self) {
        let keys: Vec<usize> = S::slab(&mut self.conns)
            .iter()
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            let slot = &mut S::slab(&mut self.conns)[key];
            let turn = slot
                .conn
                .shut_down(&mut self.kit.cx(self.now, slot.endpoint()));
            self.after_turn::<S>(key, turn);
        }
    }

    fn check_drained(&mut self) -> Option<Exit> {
        let deadline = self.draining?;
        if self.conns.is_empty() {
            return Some(Exit::Drained);
        }
        if self.now < deadline {
            return None;
        }
        let forced = self.conns.len();
        warn!("drain timeout: aborting {forced} connections");
        self.abort_all::<TcpStream>();
        #[cfg(feature = "tls")]
        self.abort_all::<TlsSocket>();
        self.pools.iter_mut().for_each(|p| p.open = 0);
        Some(Exit::DrainTimeout { forced })
    }

    /// Closes every connection of `S`'s slab at once, with RST.
    fn abort_all<S: Family>(&mut self) {
        for (_, slot) in S::slab(&mut self.conns).iter_mut() {
            slot.conn.abort(self.now);
            self.kit.stats[slot.endpoint()].closed(CloseReason::Forced);
        }
        S::slab(&mut self.conns).clear();
    }

    fn finish(&self, exit: Exit) -> Exit {
        let total: Snapshot = self.kit.stats.iter().map(|s| s.snapshot()).sum();
        debug!("loop {}: {exit:?}; {total}", self.index);
        exit
    }

    /// One turn for the connection at `key` of `S`'s slab, if it is still the one the token
    /// named.
    fn turn<S: Family>(&mut self, key: usize, serial: u32, ready: Ready) {
        let Some(slot) = lookup(S::slab(&mut self.conns), key, serial) else {
            return;
        };
        let turn = slot
            .conn
            .turn(&mut self.kit.cx(self.now, slot.endpoint()), ready);
        self.after_turn::<S>(key, turn);
    }

    /// Applies a turn's outcome: close, or update interest, run queue and deadline.
    fn after_turn<S: Family>(&mut self, key: usize, turn: Turn) {
        if let Turn::Closed(reason) = turn {
            self.remove::<S>(key, reason);
            return;
        }
        let slot = &mut S::slab(&mut self.conns)[key];
        let token = token_of(key, &slot.conn);
        if turn == Turn::Again && !slot.queued {
            slot.queued = true;
            self.run_queue.push_back(token);
        }
        // Interest is derived from state; the poller is told only when it changes.
        let wanted = slot.conn.want();
        let registry = self.poll.registry();
        if let Err(e) = socket::follow(
            registry,
            slot.conn.socket_mut(),
            token,
            &mut slot.registered,
            wanted,
        ) {
            warn!("conn {}: reregister failed: {e}", slot.conn.id());
            self.remove::<S>(key, CloseReason::Error);
            return;
        }
        let deadline = slot.conn.deadline(&self.kit.limits);
        self.timers.arm(&mut slot.timer, deadline, token);
    }

    /// Drops the connection at `key` of `S`'s slab: its deadline, its slot, and (by closing
    /// the descriptor) its epoll registration, so no deregister call is needed. Stale
    /// run-queue entries are rejected later by their serial.
    fn remove<S: Family>(&mut self, key: usize, reason: CloseReason) {
        let mut slot = S::slab(&mut self.conns).remove(key);
        self.pools[slot.pool()].open -= 1;
        let token = token_of(key, &slot.conn);
        self.timers.disarm(&mut slot.timer, token);
        let stats = &self.kit.stats[slot.endpoint()];
        let reason = S::closing(&slot.conn, reason, stats);
        debug!("conn {}: closed ({reason:?})", slot.conn.id());
        stats.closed(reason);
    }

    /// Connections that used up their budget run again, in order. Only those queued before
    /// this pass run now; one that queues itself again waits for the next turn, after the
    /// next poll, so it cannot starve the others.
    ///
    /// Handshakes run here only (the handshake budget's worth): a connection in its
    /// handshake stage that becomes ready during the dispatch queues itself, so handshakes
    /// are served in the order they became ready, after the events of established
    /// connections.
    fn run_queued(&mut self) {
        self.kit.handshakes = self.handshake_budget;
        for _ in 0..self.run_queue.len() {
            let Some(token) = self.run_queue.pop_front() else {
                break;
            };
            let Target::Connection { kind, key, serial } = decode(token) else {
                continue;
            };
            by_kind!(kind, self.run_again(key, serial));
        }
        self.kit.handshakes = 0;
    }

    /// A turn without an event for the connection a run-queue entry names, if it is still
    /// there.
    fn run_again<S: Family>(&mut self, key: usize, serial: u32) {
        if let Some(slot) = lookup(S::slab(&mut self.conns), key, serial) {
            slot.queued = false;
            self.turn::<S>(key, serial, Ready::NONE);
        }
    }

    /// One receive-and-answer turn for UDP endpoint `i`.
    fn datagram_turn(&mut self, i: usize, readable: bool, writable: bool) {
        let Some(u) = self.datagrams.get_mut(i) else {
            return;
        };
        // `Again` needs no queue entry: `has_work` keeps the poll timeout at zero.
        let stats = &self.kit.stats[u.endpoint()];
        let _: UdpTurn = u.turn(readable, writable, &mut self.kit.scratch, stats, self.now);
        let (wanted, token) = (u.want(), loop_token(DATAGRAM_BASE + i));
        let mut registered = u.registered;
        if let Err(e) = socket::follow(
            self.poll.registry(),
            u.source(),
            token,
            &mut registered,
            wanted,
        ) {
            warn!("udp {}: reregister failed: {e}", u.local_addr());
        }
        u.registered = registered;
    }

    /// UDP endpoints that stopped at their budget run again.
    fn run_datagrams(&mut self) {
        for i in 0..self.datagrams.len() {
            if self.datagrams[i].has_work() || self.datagrams[i].release_due(self.now) {
                self.datagram_turn(i, false, false);
            }
        }
    }

    /// Hands due deadlines to their connections.
    fn expire(&mut self) {
        while let Some((at, token)) = self.timers.pop_due(self.now) {
            let Target::Connection { kind, key, serial } = decode(token) else {
                continue;
            };
            by_kind!(kind, self.deadline_due(key, serial, at));
        }
    }

    /// A deadline entry of the connection at `key` came due at `at`.
    fn deadline_due<S: Family>(&mut self, key: usize, serial: u32, at: Time) {
        let Some(slot) = lookup(S::slab(&mut self.conns), key, serial) else {
            return;
        };
        if !Timers::<Token>::fired(&mut slot.timer, at) {
            return;
        }
        let turn = slot
            .conn
            .on_deadline(&mut self.kit.cx(self.now, slot.endpoint()));
        self.after_turn::<S>(key, turn);
    }
}
