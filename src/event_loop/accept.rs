//! Accepting: from ready listeners, until `WouldBlock`, the listener's pool is full, or
//! descriptors run out (invariant 7 in `docs/02-event-loop.md`).
//!
//! Client listeners share the `--max-connections` cap; a listener given an allowance of its
//! own (the admin endpoint) counts against that instead, so the operator's probes are answered
//! when the clients' cap is full ([`Pool`]). On `EMFILE` and its kin accepting pauses on a
//! timer ([`AcceptPause`]) rather than spinning, with a rate-limited warning. Each accepted
//! socket becomes a [`Connection`] in the slab, greeted and registered.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info, warn};
use mio::net::TcpStream;

#[cfg(feature = "tls")]
use super::slot::TlsSocket;
use super::slot::{token_of, Family, Slot};
use super::EventLoop;
use crate::connection::{Connection, Stages, Turn, Unborn};
use crate::fault::{Accept, ConnFaults, Kind as FaultKind};
use crate::listener::Accepted;
use crate::logging::Throttle;
use crate::service::ConnInfo;
use crate::socket;
use crate::stats::{CloseReason, Stats};
use crate::timer::Time;

/// Connections accepted per listener per turn before serving others. Accepting until
/// `WouldBlock` under a connect flood would starve established connections.
const ACCEPT_BUDGET: usize = 256;

/// How long accepting pauses after `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`. Long enough that an
/// exhausted server costs a few system calls a second; short enough that a freed descriptor
/// is used promptly.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Minimum interval between two "accept paused" warnings; the ones in between are counted.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Connection slots that listeners draw from: the clients' cap (`--max-connections`, this
/// loop's share of it), shared by every client listener, or the allowance of a listener that
/// has its own (the admin endpoint, [`ADMIN_CONNECTIONS`](crate::config::ADMIN_CONNECTIONS)).
/// A listener whose pool is full leaves its clients in the kernel backlog; the others go on
/// accepting. The slab holds every pool's connections.
pub(super) struct Pool {
    /// What its limit is called in the log.
    name: String,
    /// The most connections open at once.
    pub(super) limit: usize,
    /// Connections open now.
    pub(super) open: usize,
    /// Accepting stopped at the limit (counted and logged once per stop).
    full: bool,
}

impl Pool {
    pub(super) fn new(name: String, limit: usize) -> Pool {
        Pool {
            name,
            limit,
            open: 0,
            full: false,
        }
    }

    pub(super) fn has_room(&self) -> bool {
        self.open < self.limit
    }
}

/// Accept pausing after resource exhaustion, and its rate-limited log.
pub(super) struct AcceptPause {
    pub(super) until: Option<Time>,
    log: Throttle,
}

impl AcceptPause {
    pub(super) fn new() -> AcceptPause {
        AcceptPause {
            until: None,
            log: Throttle::new(ACCEPT_LOG_INTERVAL),
        }
    }
}

impl EventLoop {
    /// Accepting is on: not draining, not paused (each listener's pool is asked besides).
    pub(super) fn may_accept(&self) -> bool {
        self.draining.is_none() && self.accept_pause.until.is_none()
    }

    /// Accepts from every ready listener, within the limits.
    pub(super) fn accept(&mut self) {
        if let Some(until) = self.accept_pause.until {
            if self.now < until {
                return;
            }
            // Edge-triggered: no new edge will report connections already waiting, so retry.
            self.accept_pause.until = None;
            self.listeners.iter_mut().for_each(|l| l.ready = true);
        }
        self.listener_faults_next = None;
        for i in 0..self.listeners.len() {
            if self.listeners[i].faults.is_some() && !self.listener_faults(i) {
                continue;
            }
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

    /// Applies listener `i`'s own faults at this turn's time: `refuse` shuts the listening
    /// socket for its window (and listens again after it), `stop-accept` leaves connections in
    /// the backlog for its window. Returns whether the listener may accept now, and notes
    /// when the next window begins or ends (the loop's poll wakes then).
    fn listener_faults(&mut self, i: usize) -> bool {
        let (now, backlog) = (self.now, self.backlog);
        let l = &mut self.listeners[i];
        let addr = l.local_addr();
        let Some(f) = l.faults.as_mut() else {
            return true;
        };
        let (refuse, refuse_next) = f.window(FaultKind::Refuse, now);
        let (stop, stop_next) = f.window(FaultKind::StopAccept, now);
        let next = [refuse_next, stop_next, self.listener_faults_next];
        self.listener_faults_next = next.into_iter().flatten().min();
        f.switch.set_active(FaultKind::Refuse, refuse);
        f.switch.set_active(FaultKind::StopAccept, stop);
        let refusing = refuse && !f.refused;
        let refused_over = !refuse && f.refused;
        f.refused = refuse;
        if refusing {
            f.switch.note(FaultKind::Refuse);
        }
        let stop_over = !stop && f.stopped;
        if stop && !f.stopped {
            info!("fault stop-accept: {addr} stops accepting");
        }
        f.stopped = stop;
        if stop_over {
            f.backlog_counted = 0;
            info!("fault stop-accept over: {addr} accepts again");
        }
        if stop && l.ready {
            // Each connection that joins the backlog while accepting is stopped is counted
            // once, as it arrives (its readable edge brought this turn), so a client sees
            // the count while it waits.
            if let (Some(n), Some(f)) = (l.backlog(), l.faults.as_mut()) {
                for _ in f.backlog_counted..n {
                    f.switch.note(FaultKind::StopAccept);
                }
                f.backlog_counted = f.backlog_counted.max(n);
            }
            l.ready = false;
        }
        if refusing {
            info!("fault refuse: {addr} stops listening");
            if let Err(e) = l.refuse() {
                warn!("fault refuse: {addr}: {e}");
            }
        }
        if refused_over {
            info!("fault refuse over: {addr} listens again");
            if let Err(e) = l.listen_again(backlog) {
                warn!("fault refuse: cannot listen on {addr} again: {e}");
            }
        }
        if refused_over || stop_over {
            // Edge-triggered: connections that waited raise no new edge.
            l.ready = true;
        }
        l.held = refuse || stop;
        !l.held
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

    /// Sets up an accepted stream: options, service (or the stages before it), greeting,
    /// registration, deadline. It takes a slot of its listener's pool once it is in the slab:
    /// the TLS slab for a `,tls` listener's connection, the plain one otherwise.
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
        let (endpoint, pool) = (
            self.listeners[listener].endpoint(),
            self.listeners[listener].pool,
        );
        self.kit.stats[endpoint].opened();
        // Faults are chosen before the service exists: a connection that fails first is
        // reset without one.
        let Some(faults) = self.choose_faults(listener, serial, &stream, endpoint) else {
            return;
        };
        let l = &self.listeners[listener];
        let stats = &self.kit.stats[endpoint];
        if l.proxy && !self.proxy_from.trusts(peer.ip()) {
            // Anyone who may send a header may claim any address: refused before a byte is
            // read.
            warn!(
                "conn {serial}: {peer} is not allowed to send a PROXY header (--proxy-from {}); closing",
                self.proxy_from
            );
            Stats::incr(&stats.proxy_untrusted);
            stats.closed(CloseReason::Proxy);
            return;
        }
        let stages = Stages {
            proxy_header: l.proxy,
            handshake: l.tls,
        };
        let unborn = || Unborn {
            factory: Arc::clone(l.factory()),
            peer,
            listener: l.local_addr(),
            loop_index: self.index,
            server_id: Arc::clone(&self.server_id),
            stats: Arc::clone(stats),
        };
        debug!("conn {serial}: accepted from {peer}");
        if stages.handshake {
            #[cfg(feature = "tls")]
            {
                let socket = self
                    .tls
                    .as_ref()
                    .ok_or_else(|| "no TLS configuration".to_string())
                    .and_then(|config| {
                        TlsSocket::new(Arc::clone(config), stream).map_err(|e| e.to_string())
                    });
                match socket {
                    Ok(socket) => {
                        let conn =
                            Connection::with_stages(socket, unborn(), stages, serial, self.now);
                        self.insert(conn, endpoint, pool, faults);
                    }
                    Err(e) => {
                        warn!("conn {serial}: cannot start TLS: {e}; closing");
                        stats.closed(CloseReason::Error);
                    }
                }
            }
            #[cfg(not(feature = "tls"))]
            {
                // Refused at start-up (`Server::with_endpoints`): never here.
                warn!("conn {serial}: a ,tls listener in a build without TLS; closing");
                stats.closed(CloseReason::Error);
            }
            return;
        }
        let conn = if stages.proxy_header {
            Connection::with_stages(stream, unborn(), stages, serial, self.now)
        } else {
            let service = l.factory().new_service(&ConnInfo {
                peer,
                proxied: None,
                listener: l.local_addr(),
                loop_index: self.index,
                server_id: &self.server_id,
                stats,
                tls: None,
            });
            Connection::new(stream, service, serial, self.now)
        };
        self.insert(conn, endpoint, pool, faults);
    }

    /// The faults of a new connection of `listener`: `None` inside if it has none, `None`
    /// if it was reset at once (`fail-first` on a raw stream).
    fn choose_faults(
        &mut self,
        listener: usize,
        serial: u64,
        stream: &TcpStream,
        endpoint: usize,
    ) -> Option<Option<Box<ConnFaults>>> {
        let Some(f) = self.listeners[listener].faults.as_mut() else {
            return Some(None);
        };
        let plan = Arc::clone(f.plan());
        let seed = self.fault_rng.next_u64();
        match ConnFaults::accept(&f.switch, &plan, seed, self.now) {
            Accept::Serve(faults) => Some(Some(faults)),
            Accept::Reset => {
                debug!("conn {serial}: fault fail-first: reset at accept");
                if let Err(e) = socket::set_abortive_close(stream) {
                    debug!("conn {serial}: SO_LINGER: {e}");
                }
                self.kit.stats[endpoint].closed(CloseReason::Fault);
                None
            }
        }
    }

    /// Opens a new connection of `endpoint`, registers it and puts it in its slab, counted
    /// in `pool`.
    fn insert<S: Family>(
        &mut self,
        mut conn: Connection<S>,
        endpoint: usize,
        pool: usize,
        faults: Option<Box<ConnFaults>>,
    ) {
        if let Some(faults) = faults {
            conn.set_faults(faults);
        }
        let turn = conn.open(&mut self.kit.cx(self.now, endpoint));
        if let Turn::Closed(reason) = turn {
            self.kit.stats[endpoint].closed(reason);
            return;
        }
        let entry = S::slab(&mut self.conns).vacant_entry();
        let key = entry.key();
        let token = token_of(key, &conn);
        let wanted = conn.want();
        let registered =
            match socket::register(self.poll.registry(), conn.socket_mut(), token, wanted) {
                Ok(registered) => registered,
                Err(e) => {
                    warn!("conn {}: register failed: {e}", conn.id());
                    self.kit.stats[endpoint].closed(CloseReason::Error);
                    return;
                }
            };
        entry.insert(Slot::new(conn, endpoint, pool, registered));
        self.pools[pool].open += 1;
        self.after_turn::<S>(key, turn);
    }
}
