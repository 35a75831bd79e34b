//! The event loop: one `Poll`, its listeners, a slab of connections, a run queue and a set
//! of deadlines.
//!
//! One turn of [`EventLoop::run`]:
//!
//! 1. **Poll** with a timeout that is zero while the run queue or a listener has work left,
//!    and otherwise the time to the next deadline (or forever).
//! 2. **Dispatch** each event: connections get a [`Connection::turn`] with the readiness;
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
//! # Tokens
//!
//! A slab key is reused as soon as a connection is removed, but the same poll batch, the run
//! queue or the deadline set may still name the old occupant. Each token therefore carries
//! the low 32 bits of the connection's serial number beside its slab key, and a lookup whose
//! serial does not match is ignored (invariant 8 in `docs/02-event-loop.md`). Tokens with
//! serial 0 belong to the loop itself: listeners, UDP endpoints, the waker. A token
//! is 64 bits (32 of serial, 32 of key), so loopd needs a 64-bit `usize`; the build says so
//! on any other target instead of silently truncating tokens.
//!
//! Listener and endpoint tokens are looked up, never indexed: draining closes the listeners
//! while later events of the same poll batch may still name them.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::buffer::Buffer;
use crate::config::{Config, Limits, StreamOptions};
use crate::connection::{Connection, Context, Ready, Turn, Unborn};
use crate::listener::{Accepted, Listener};
use crate::logging::Throttle;
use crate::proxy::TrustList;
use crate::service::{ConnInfo, Handler};
use crate::socket::{self, Want};
use crate::stats::{CloseReason, Snapshot, Stats};
use crate::timer::{Clock, Time, Timers};
use crate::udp::guard::Guard;
use crate::udp::{UdpEndpoint, UdpTurn};

/// Size of the loop's shared read buffer. 64 KiB takes a loopback burst in one read (the
/// loopback MTU is 64 KiB) and still fits in L2 cache; it is allocated once per loop, not per
/// connection.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// Events taken from the kernel per `poll`. Larger batches amortise the system call; 1024 is
/// where the gain flattens out while keeping the array (12 bytes per event) small.
const EVENTS_CAPACITY: usize = 1024;

/// Connections accepted per listener per turn before serving others. Accepting until
/// `WouldBlock` under a connect flood would starve established connections.
const ACCEPT_BUDGET: usize = 256;

/// How long accepting pauses after `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`. Long enough that an
/// exhausted server costs a few system calls a second; short enough that a freed descriptor
/// is used promptly.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Minimum interval between two "accept paused" warnings; the ones in between are counted.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(not(target_pointer_width = "64"))]
compile_error!("loopd packs a 32-bit serial and a 32-bit slab key into each 64-bit mio token");

const WAKER_KEY: usize = u32::MAX as usize;
/// Loop tokens from here up (below the waker key) are UDP endpoints.
const DATAGRAM_BASE: usize = 1 << 31;

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Listener(usize),
    Datagram(usize),
    Waker,
    Connection { key: usize, serial: u32 },
}

fn conn_token(key: usize, serial: u64) -> Token {
    Token(((serial as u32 as usize) << 32) | key)
}

fn loop_token(key: usize) -> Token {
    Token(key)
}

fn decode(token: Token) -> Target {
    let (serial, key) = ((token.0 >> 32) as u32, token.0 & 0xFFFF_FFFF);
    match (serial, key) {
        (0, WAKER_KEY) => Target::Waker,
        (0, i) if i >= DATAGRAM_BASE => Target::Datagram(i - DATAGRAM_BASE),
        (0, i) => Target::Listener(i),
        (serial, key) => Target::Connection { key, serial },
    }
}

/// A socket bound for a loop, with what serves it and the service's name.
pub(crate) struct Bound {
    pub(crate) socket: socket2::Socket,
    pub(crate) handler: Handler,
    pub(crate) name: String,
    /// Connections start with a PROXY protocol header (TCP only).
    pub(crate) proxy: bool,
    /// Connections count against an allowance of this many of their own instead of the
    /// clients' cap (TCP only): the admin endpoint's.
    pub(crate) allowance: Option<usize>,
}

/// How [`EventLoop::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested and every connection closed in time.
    Drained,
    /// The drain timeout passed; this many connections were aborted.
    DrainTimeout {
        /// Connections still open at the deadline.
        forced: usize,
    },
    /// A second shutdown request arrived while draining; this many connections were dropped.
    Interrupted {
        /// Connections still open.
        open: usize,
    },
}

/// What an endpoint carries: which of its counters can move, and so which the metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP listener: connections.
    Tcp,
    /// A UDP socket: datagrams.
    Udp,
}

/// One endpoint of a loop (a TCP listener or a UDP socket): what it is and its counters.
/// Written only by the loop; anyone holding a [`Handle`] reads it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The service's name (`echo`, `udp-echo`, `admin`, ...).
    pub service: String,
    /// The address bound.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub transport: Transport,
    /// Its connections start with a PROXY protocol header.
    pub proxy: bool,
    /// Its counters: connections accepted and closed on it, bytes and datagrams through it.
    pub stats: Arc<Stats>,
}

impl fmt::Display for Endpoint {
    /// As `--listen` names it: `echo=127.0.0.1:7007`, `line=0.0.0.0:7100,proxy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.service, self.addr)?;
        if self.proxy {
            f.write_str(",proxy")?;
        }
        Ok(())
    }
}

/// What a [`Handle`] shares with its loop.
struct Shared {
    waker: Waker,
    shutdown_requests: AtomicU32,
    /// Liveness probes asked for, and the last one the loop answered (see [`Handle::ping`]).
    pings: AtomicU64,
    pongs: AtomicU64,
    endpoints: Vec<Endpoint>,
}

/// Controls a running loop from another thread.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Requests a graceful shutdown, like SIGTERM. A second request exits at once.
    pub fn shutdown(&self) {
        self.shared.shutdown_requests.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.shared.waker.wake() {
            warn!("could not wake the event loop: {e}");
        }
    }

    /// The loop's counters now: every endpoint's added together.
    pub fn stats(&self) -> Snapshot {
        self.shared
            .endpoints
            .iter()
            .map(|e| e.stats.snapshot())
            .sum()
    }

    /// Each endpoint of the loop with its counters.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.shared.endpoints
    }

    /// Asks the loop to prove it is turning: it answers the next time it polls. A loop stuck
    /// in a service (an endless loop, a blocking call) never answers. Returns the probe's
    /// number.
    pub fn ping(&self) -> u64 {
        let n = self.shared.pings.fetch_add(1, Ordering::SeqCst) + 1;
        if let Err(e) = self.shared.waker.wake() {
            warn!("could not wake the event loop: {e}");
        }
        n
    }

    /// The last probe the loop answered.
    pub fn answered(&self) -> u64 {
        self.shared.pongs.load(Ordering::SeqCst)
    }
}

/// One slab entry: a connection plus what the loop tracks about it.
struct Slot {
    conn: Connection<TcpStream>,
    /// Which endpoint accepted it: its counters are that endpoint's.
    endpoint: usize,
    /// Which allowance it counts against.
    pool: usize,
    /// The interest currently registered with the poller.
    registered: Want,
    /// Already on the run queue.
    queued: bool,
}

/// The connection a token names, if it is still there: the slab key may since have been
/// reused by a newer connection, whose serial differs (invariant 8).
fn lookup(conns: &mut Slab<Slot>, key: usize, serial: u32) -> Option<&mut Slot> {
    conns
        .get_mut(key)
        .filter(|slot| slot.conn.id() as u32 == serial)
}

/// What a turn borrows from the loop, kept apart from the slab so both can be borrowed at
/// once.
struct TurnKit {
    limits: Limits,
    scratch: Box<[u8]>,
    out_scratch: Buffer,
    /// Every endpoint's counters, by endpoint number; they outlive the sockets (a draining
    /// loop closes its listeners while their connections finish).
    stats: Vec<Arc<Stats>>,
}

impl TurnKit {
    fn cx(&mut self, now: Time, endpoint: usize) -> Context<'_> {
        Context {
            now,
            limits: &self.limits,
            scratch: &mut self.scratch,
            out_scratch: &mut self.out_scratch,
            out_borrowed: None,
            stats: &self.stats[endpoint],
        }
    }
}

/// Connection slots that listeners draw from: the clients' cap (`--max-connections`, this
/// loop's share of it), shared by every client listener, or the allowance of a listener that
/// has its own (the admin endpoint, [`ADMIN_CONNECTIONS`](crate::config::ADMIN_CONNECTIONS)).
/// A listener whose pool is full leaves its clients in the kernel backlog; the others go on
/// accepting. The slab holds every pool's connections.
struct Pool {
    /// What its limit is called in the log.
    name: String,
    /// The most connections open at once.
    limit: usize,
    /// Connections open now.
    open: usize,
    /// Accepting stopped at the limit (counted and logged once per stop).
    full: bool,
}

impl Pool {
    fn new(name: String, limit: usize) -> Pool {
        Pool {
            name,
            limit,
            open: 0,
            full: false,
        }
    }

    fn has_room(&self) -> bool {
        self.open < self.limit
    }
}

/// Accept pausing after resource exhaustion, and its rate-limited log.
struct AcceptPause {
    until: Option<Time>,
    log: Throttle,
}

/// The event loop. See the [module documentation](self).
pub struct EventLoop {
    /// Which loop of a [`Server`](crate::server::Server) this is (0 when alone), for logs.
    index: usize,
    poll: Poll,
    listeners: Vec<Listener>,
    datagrams: Vec<UdpEndpoint>,
    /// Every bound address, in the order the endpoints were given.
    local_addrs: Vec<SocketAddr>,
    conns: Slab<Slot>,
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
}

impl EventLoop {
    /// Binds the built-in services named in `config.listen` (reading a PROXY protocol
    /// header where a listener says `,proxy`).
    pub fn new(config: &Config) -> io::Result<EventLoop> {
        let bound = config
            .listen
            .iter()
            .map(|spec| {
                let handler = spec.service.handler(config.services);
                let mut group = socket::bind_group(spec.addr, handler.socket_type(), 1)?;
                Ok(Bound {
                    socket: group.remove(0),
                    handler,
                    name: spec.service.name().to_string(),
                    proxy: spec.proxy,
                    allowance: None,
                })
            })
            .collect::<io::Result<Vec<Bound>>>()?;
        EventLoop::assemble(config, 0, config.max_connections, bound)
    }

    /// Binds each address with its handler; `config.listen` is ignored. This is how a program
    /// serves its own [`Service`](crate::service::Service) or
    /// [`DatagramService`](crate::service::DatagramService) on one loop; a
    /// [`Server`](crate::server::Server) runs several.
    pub fn serve(
        config: &Config,
        endpoints: impl IntoIterator<Item = (SocketAddr, Handler)>,
    ) -> io::Result<EventLoop> {
        let bound = endpoints
            .into_iter()
            .map(|(addr, handler)| {
                let mut group = socket::bind_group(addr, handler.socket_type(), 1)?;
                let name = match handler {
                    Handler::Stream(_) => "tcp",
                    Handler::Datagram(_) => "udp",
                };
                Ok(Bound {
                    socket: group.remove(0),
                    handler,
                    name: name.to_string(),
                    proxy: false,
                    allowance: None,
                })
            })
            .collect::<io::Result<Vec<Bound>>>()?;
        EventLoop::assemble(config, 0, config.max_connections, bound)
    }

    /// Builds loop number `index` around sockets already bound, serving at most
    /// `max_connections` clients at once (and any listener's own allowance besides).
    pub(crate) fn assemble(
        config: &Config,
        index: usize,
        max_connections: usize,
        endpoints: Vec<Bound>,
    ) -> io::Result<EventLoop> {
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
        for Bound {
            socket,
            handler,
            name,
            proxy,
            allowance,
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
                    if let Some(limit) = allowance {
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
                stats: Arc::new(Stats::default()),
            });
        }
        let stats = described.iter().map(|e| Arc::clone(&e.stats)).collect();
        let shared = Arc::new(Shared {
            waker: Waker::new(poll.registry(), loop_token(WAKER_KEY))?,
            shutdown_requests: AtomicU32::new(0),
            pings: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            endpoints: described,
        });
        let clock = Clock::new();
        Ok(EventLoop {
            index,
            poll,
            listeners,
            datagrams,
            local_addrs,
            // Reserve the whole slab up front: the untouched part costs address space, not
            // memory, and the slab never stalls the loop to copy itself while growing.
            conns: Slab::with_capacity(pools.iter().map(|p| p.limit).sum()),
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
            },
            pools,
            stream_options: config.stream,
            server_id: Arc::from(config.server_id.as_str()),
            proxy_from: config.proxy_from.clone(),
            drain_timeout: config.drain_timeout,
            accept_pause: AcceptPause {
                until: None,
                log: Throttle::new(ACCEPT_LOG_INTERVAL),
            },
            draining: None,
            shared,
            handled_requests: 0,
        })
    }

    /// The bound addresses, in listener order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// A handle to stop the loop or read its counters from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs until shut down. Only a failing `poll` is an error.
    pub fn run(mut self) -> io::Result<Exit> {
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
                    .any(|l| l.ready && self.pools[l.pool].has_room())
            || self.datagrams.iter().any(UdpEndpoint::has_work)
        {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next_deadline(),
            self.accept_pause.until,
            self.draining,
        ]
        .into_iter()
        .flatten()
        .min();
        next.map(|t| self.clock.now().until(t))
    }

    fn dispatch(&mut self, event: &Event) -> Option<Exit> {
        match decode(event.token()) {
            Target::Connection { key, serial } => {
                let ready = Ready {
                    readable: event.is_readable(),
                    writable: event.is_writable(),
                    closed: event.is_read_closed() || event.is_error(),
                };
                self.turn(key, serial, ready);
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
                let probe = self.shared.pings.load(Ordering::SeqCst);
                self.shared.pongs.store(probe, Ordering::SeqCst);
                let requests = self.shared.shutdown_requests.load(Ordering::SeqCst);
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
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let slot = &mut self.conns[key];
            let turn = slot
                .conn
                .shut_down(&mut self.kit.cx(self.now, slot.endpoint));
            self.after_turn(key, turn);
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
        for (_, slot) in self.conns.iter_mut() {
            slot.conn.abort(self.now);
            self.kit.stats[slot.endpoint].closed(CloseReason::Forced);
        }
        self.conns.clear();
        self.pools.iter_mut().for_each(|p| p.open = 0);
        Some(Exit::DrainTimeout { forced })
    }

    fn finish(&self, exit: Exit) -> Exit {
        let total: Snapshot = self.kit.stats.iter().map(|s| s.snapshot()).sum();
        debug!("loop {}: {exit:?}; {total}", self.index);
        exit
    }

    /// One turn for the connection at `key`, if it is still the one the token named.
    fn turn(&mut self, key: usize, serial: u32, ready: Ready) {
        let Some(slot) = lookup(&mut self.conns, key, serial) else {
            return;
        };
        let turn = slot
            .conn
            .turn(&mut self.kit.cx(self.now, slot.endpoint), ready);
        self.after_turn(key, turn);
    }

    /// Applies a turn's outcome: close, or update interest, run queue and deadline.
    fn after_turn(&mut self, key: usize, turn: Turn) {
        if let Turn::Closed(reason) = turn {
            self.remove(key, reason);
            return;
        }
        let slot = &mut self.conns[key];
        let token = conn_token(key, slot.conn.id());
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
            self.remove(key, CloseReason::Error);
            return;
        }
        let deadline = slot.conn.deadline(&self.kit.limits);
        self.timers.arm(&mut slot.conn.timer, deadline, token);
    }

    /// Drops the connection at `key`: its deadline, its slot, and (by closing the descriptor)
    /// its epoll registration, so no deregister call is needed. Stale run-queue entries are
    /// rejected later by their serial.
    fn remove(&mut self, key: usize, reason: CloseReason) {
        let mut slot = self.conns.remove(key);
        self.pools[slot.pool].open -= 1;
        let token = conn_token(key, slot.conn.id());
        self.timers.disarm(&mut slot.conn.timer, token);
        debug!("conn {}: closed ({reason:?})", slot.conn.id());
        self.kit.stats[slot.endpoint].closed(reason);
    }

    /// Connections that used up their budget run again, in order. Only those queued before
    /// this pass run now; one that queues itself again waits for the next turn, after the
    /// next poll, so it cannot starve the others.
    fn run_queued(&mut self) {
        for _ in 0..self.run_queue.len() {
            let Some(token) = self.run_queue.pop_front() else {
                break;
            };
            let Target::Connection { key, serial } = decode(token) else {
                continue;
            };
            match lookup(&mut self.conns, key, serial) {
                Some(slot) => slot.queued = false,
                None => continue,
            }
            self.turn(key, serial, Ready::NONE);
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
            if self.datagrams[i].has_work() {
                self.datagram_turn(i, false, false);
            }
        }
    }

    /// Hands due deadlines to their connections.
    fn expire(&mut self) {
        while let Some((at, token)) = self.timers.pop_due(self.now) {
            let Target::Connection { key, serial } = decode(token) else {
                continue;
            };
            let Some(slot) = lookup(&mut self.conns, key, serial) else {
                continue;
            };
            if !Timers::<Token>::fired(&mut slot.conn.timer, at) {
                continue;
            }
            let turn = slot
                .conn
                .on_deadline(&mut self.kit.cx(self.now, slot.endpoint));
            self.after_turn(key, turn);
        }
    }

    /// Accepting is on: not draining, not paused (each listener's pool is asked besides).
    fn may_accept(&self) -> bool {
        self.draining.is_none() && self.accept_pause.until.is_none()
    }

    /// Accepts from every ready listener, within the limits.
    fn accept(&mut self) {
        if let Some(until) = self.accept_pause.until {
            if self.now < until {
                return;
            }
            // Edge-triggered: no new edge will report connections already waiting, so retry.
            self.accept_pause.until = None;
            self.listeners.iter_mut().for_each(|l| l.ready = true);
        }
        for i in 0..self.listeners.len() {
            let mut budget = ACCEPT_BUDGET;
            let pool = self.listeners[i].pool;
            while self.listeners[i].ready && budget > 0 {
                let p = &mut self.pools[pool];
                if !p.has_room() {
                    // Leave the rest in the kernel backlog; `ready` stays set, so the first
                    // close lets the next turn accept again. Listeners drawing from another
                    // pool (the admin endpoint) go on accepting.
                    if !p.full {
                        p.full = true;
                        let endpoint = self.listeners[i].endpoint();
                        Stats::incr(&self.kit.stats[endpoint].accept_limit_stops);
                        info!("{} limit ({}) reached; pausing accept", p.name, p.limit);
                    }
                    break;
                }
                budget -= 1;
                match self.listeners[i].accept() {
                    Accepted::Stream(stream, peer) => self.add(i, stream, peer),
                    Accepted::Drained => self.listeners[i].ready = false,
                    Accepted::Skip(e) => debug!("accept: connection lost before accept: {e}"),
                    Accepted::Exhausted(e) => {
                        self.pause_accept(i, &e);
                        return;
                    }
                }
            }
        }
        for p in self.pools.iter_mut().filter(|p| p.full && p.has_room()) {
            p.full = false;
            debug!("below the {} limit; accepting again", p.name);
        }
    }

    fn pause_accept(&mut self, listener: usize, e: &io::Error) {
        self.accept_pause.until = Some(self.now.after(ACCEPT_PAUSE));
        let endpoint = self.listeners[listener].endpoint();
        Stats::incr(&self.kit.stats[endpoint].accept_pauses);
        if let Some(suppressed) = self.accept_pause.log.admit(self.now) {
            warn!(
                "accept failed: {e}; pausing accept for {ACCEPT_PAUSE:?} ({suppressed} similar suppressed, {} connections open)",
                self.conns.len()
            );
        }
    }

    /// Sets up an accepted stream: options, service, greeting, registration, deadline. It
    /// takes a slot of its listener's pool once it is in the slab.
    fn add(&mut self, listener: usize, stream: TcpStream, peer: SocketAddr) {
        let peer = socket::canonical(peer);
        if let Err(e) = socket::configure_stream(&stream, &self.stream_options) {
            debug!("socket options for {peer}: {e}");
        }
        self.next_serial += 1;
        if self.next_serial as u32 == 0 {
            // Serial 0 (mod 2^32) marks the loop's own tokens.
            self.next_serial += 1;
        }
        let serial = self.next_serial;
        let l = &self.listeners[listener];
        let (endpoint, pool) = (l.endpoint(), l.pool);
        let stats = &self.kit.stats[endpoint];
        stats.opened();
        let mut conn = if l.proxy {
            if !self.proxy_from.trusts(peer.ip()) {
                // Anyone who may send a header may claim any address: refused before a byte
                // is read.
                warn!(
                    "conn {serial}: {peer} is not allowed to send a PROXY header (--proxy-from {}); closing",
                    self.proxy_from
                );
                Stats::incr(&stats.proxy_untrusted);
                stats.closed(CloseReason::Proxy);
                return;
            }
            let unborn = Unborn {
                factory: Arc::clone(l.factory()),
                peer,
                listener: l.local_addr(),
                loop_index: self.index,
                server_id: Arc::clone(&self.server_id),
                stats: Arc::clone(stats),
            };
            Connection::behind_proxy(stream, unborn, serial, self.now)
        } else {
            let service = l.factory().new_service(&ConnInfo {
                peer,
                proxied: None,
                listener: l.local_addr(),
                loop_index: self.index,
                server_id: &self.server_id,
                stats,
            });
            Connection::new(stream, service, serial, self.now)
        };
        debug!("conn {serial}: accepted from {peer}");

        let turn = conn.open(&mut self.kit.cx(self.now, endpoint));
        if let Turn::Closed(reason) = turn {
            self.kit.stats[endpoint].closed(reason);
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = conn_token(key, serial);
        let wanted = conn.want();
        let registered =
            match socket::register(self.poll.registry(), conn.socket_mut(), token, wanted) {
                Ok(registered) => registered,
                Err(e) => {
                    warn!("conn {serial}: register failed: {e}");
                    self.kit.stats[endpoint].closed(CloseReason::Error);
                    return;
                }
            };
        entry.insert(Slot {
            conn,
            endpoint,
            pool,
            registered,
            queued: false,
        });
        self.pools[pool].open += 1;
        self.after_turn(key, turn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens round-trip, and loop tokens never collide with connection tokens.
    #[test]
    fn token_codec() {
        let t = conn_token(42, 7);
        assert_eq!(decode(t), Target::Connection { key: 42, serial: 7 });
        assert_eq!(decode(loop_token(3)), Target::Listener(3));
        assert_eq!(decode(loop_token(WAKER_KEY)), Target::Waker);
        assert_eq!(decode(loop_token(DATAGRAM_BASE + 2)), Target::Datagram(2));
        // Only the low 32 bits of the serial travel in the token.
        assert_eq!(
            decode(conn_token(1, (5u64 << 32) | 9)),
            Target::Connection { key: 1, serial: 9 }
        );
    }

    /// A token for a slot's previous occupant does not match the new occupant.
    #[test]
    fn stale_token_is_rejected() {
        let old = conn_token(0, 1);
        let new = conn_token(0, 2);
        assert_ne!(old, new);
        let Target::Connection { serial, .. } = decode(old) else {
            panic!()
        };
        assert_ne!(serial, 2);
    }
}
