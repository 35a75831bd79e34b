//! Several loops, shared-nothing: a [`Server`] runs `N` copies of the [`EventLoop`], one per
//! thread, and supervises them.
//!
//! **Read this first.** Each loop owns everything it touches: its `Poll`, its own socket for
//! every listener and UDP endpoint, its slab of connections, run queue, deadlines and
//! counters. Nothing is shared on the path of a message, so nothing is locked and no cache
//! line bounces between cores. The sockets of one listener form a `SO_REUSEPORT` group
//! ([`socket::bind_group`]): the kernel hands each new connection (and each datagram flow)
//! to one of them by a hash of the peer's address and port, so a connection lives and dies
//! on the loop that accepted it.
//!
//! What is shared is small and cold: the service factories (read-only), each loop's counters
//! (written by that loop only, read by anyone who asks), and the shutdown handles.
//!
//! * **The connection cap** is split at start: loop `i` serves at most
//!   [`connection_share`] of `--max-connections`, the shares adding up to the total exactly.
//!   A loop whose share is full leaves its clients in its own accept queue even if another
//!   loop has room; that is the cost of sharing nothing (`docs/12-scaling.md`).
//! * **The supervisor** is the thread that calls [`Server::run`]. It runs a small poll of
//!   its own over the signals (through signal-hook-mio, like any readable source) and a
//!   waker the loops ring as they end. SIGTERM or SIGINT asks every loop to drain, a second
//!   one to exit at once; SIGHUP logs the counters.
//! * **A loop that fails** — its `poll` fails, or a service panics — does not leave the
//!   process half-alive: the supervisor logs it, drains every other loop (their clients lose
//!   nothing), and [`Server::run`] returns an error, so the process exits non-zero and its
//!   supervisor (systemd, Kubernetes) restarts it whole. Restarting the one loop instead
//!   would keep the process up but lose that loop's connections anyway, and would hide a
//!   bug (a panic in a service) behind a process that looks healthy.

use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info, warn, Level};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::admin::{self, AdminState};
use crate::config::{connection_share, Config, ADMIN_CONNECTIONS};
use crate::event_loop::{Bound, Endpoint, EventLoop, Exit, Handle};
use crate::logging::{log_with_fields, Fields};
use crate::service::Handler;
use crate::socket;
use crate::stats::Snapshot;

const SIGNALS: Token = Token(0);
const ENDED: Token = Token(1);

/// Several event loops on their own threads. See the [module documentation](self).
pub struct Server {
    loops: Vec<EventLoop>,
    handle: ServerHandle,
    local_addrs: Vec<SocketAddr>,
    pin_cpus: Option<Vec<usize>>,
    /// See [`Config::drain_delay`].
    drain_delay: Duration,
    /// See [`Config::server_id`]: named in the exit line.
    server_id: String,
    /// Readiness and health, for `/readyz` and `/healthz`.
    admin: Arc<AdminState>,
    /// Installed by [`Server::handle_signals`], before any log line says the server is up,
    /// so a signal sent as soon as it is listening is never lost to the default action.
    signals: Option<signal_hook_mio::v1_0::Signals>,
}

/// Controls a running [`Server`] from another thread: stops every loop, reads the counters.
#[derive(Clone)]
pub struct ServerHandle {
    loops: Arc<[Handle]>,
}

impl ServerHandle {
    /// Requests a graceful shutdown of every loop, like SIGTERM; a second request exits at
    /// once.
    pub fn shutdown(&self) {
        for h in self.loops.iter() {
            h.shutdown();
        }
    }

    /// Every loop's counters added together.
    pub fn stats(&self) -> Snapshot {
        self.loops.iter().map(Handle::stats).sum()
    }

    /// Each loop's counters, in loop order.
    pub fn loop_stats(&self) -> Vec<Snapshot> {
        self.loops.iter().map(Handle::stats).collect()
    }

    /// Each loop's handle, in loop order.
    pub fn loops(&self) -> &[Handle] {
        &self.loops
    }
}

/// Where an endpoint's socket comes from.
#[derive(Debug)]
pub enum Origin {
    /// Bind this address (one socket per loop; see [`socket::bind_group`]).
    Bind(SocketAddr),
    /// A socket already bound and listening, handed over by the service manager (systemd
    /// socket activation). With several loops every loop gets a duplicate of the one socket,
    /// so they share its accept queue.
    Inherited(socket2::Socket),
}

/// What serves an endpoint.
#[derive(Clone)]
pub enum Serve {
    /// A service handler, on every loop.
    Handler(Handler),
    /// The admin endpoint (`/metrics`, `/healthz`, `/readyz`), on the first loop only, with
    /// an allowance of [`ADMIN_CONNECTIONS`] apart from the clients' cap.
    Admin,
}

/// One endpoint to serve: its service's name (for logs and metrics), its socket, and what
/// serves it.
pub struct EndpointSpec {
    /// The service's name.
    pub name: String,
    /// Where the socket comes from.
    pub origin: Origin,
    /// What serves it.
    pub serve: Serve,
    /// Its connections start with a PROXY protocol header (TCP handlers only).
    pub proxy: bool,
}

impl Server {
    /// Binds the built-in services named in `config.listen` (and the admin endpoint if
    /// `config.admin` names one), on `config.threads` loops.
    pub fn new(config: &Config) -> io::Result<Server> {
        let mut specs: Vec<EndpointSpec> = config
            .listen
            .iter()
            .map(|spec| EndpointSpec {
                name: spec.service.name().to_string(),
                origin: Origin::Bind(spec.addr),
                serve: Serve::Handler(spec.service.handler(config.services)),
                proxy: spec.proxy,
            })
            .collect();
        if let Some(addr) = config.admin {
            specs.push(EndpointSpec {
                name: "admin".into(),
                origin: Origin::Bind(addr),
                serve: Serve::Admin,
                proxy: false,
            });
        }
        Server::with_endpoints(config, specs)
    }

    /// Binds each address with its handler on every loop; `config.listen` is ignored. This
    /// is how a program serves its own services on several loops.
    pub fn serve(
        config: &Config,
        endpoints: impl IntoIterator<Item = (SocketAddr, Handler)>,
    ) -> io::Result<Server> {
        let specs = endpoints
            .into_iter()
            .map(|(addr, handler)| EndpointSpec {
                name: match handler {
                    Handler::Stream(_) => "tcp".into(),
                    Handler::Datagram(_) => "udp".into(),
                },
                origin: Origin::Bind(addr),
                serve: Serve::Handler(handler),
                proxy: false,
            })
            .collect();
        Server::with_endpoints(config, specs)
    }

    /// Serves `endpoints` on `config.threads` loops. Every socket is bound (or duplicated)
    /// before any loop starts, so an address in use is reported here.
    pub fn with_endpoints(config: &Config, endpoints: Vec<EndpointSpec>) -> io::Result<Server> {
        let n = config.threads.max(1);
        let admin = Arc::new(AdminState::default());
        let mut per_loop: Vec<Vec<Bound>> = (0..n).map(|_| Vec::new()).collect();
        for spec in endpoints {
            let (handler, copies, allowance) = match spec.serve {
                Serve::Handler(handler) => (handler, n, None),
                Serve::Admin => (
                    Handler::Stream(admin::factory(Arc::clone(&admin))),
                    1,
                    Some(ADMIN_CONNECTIONS),
                ),
            };
            let sockets = match spec.origin {
                Origin::Bind(addr) => socket::bind_group(addr, handler.socket_type(), copies)?,
                Origin::Inherited(socket) => {
                    let mut copies: Vec<socket2::Socket> = (1..copies)
                        .map(|_| socket.try_clone())
                        .collect::<io::Result<_>>()?;
                    copies.insert(0, socket);
                    copies
                }
            };
            for (loop_sockets, socket) in per_loop.iter_mut().zip(sockets) {
                loop_sockets.push(Bound {
                    socket,
                    handler: handler.clone(),
                    name: spec.name.clone(),
                    proxy: spec.proxy,
                    allowance,
                });
            }
        }
        let loops = per_loop
            .into_iter()
            .enumerate()
            .map(|(i, bound)| {
                let cap = connection_share(config.max_connections, n, i);
                EventLoop::assemble(config, i, cap, bound)
            })
            .collect::<io::Result<Vec<EventLoop>>>()?;
        let local_addrs = loops[0].local_addrs();
        let handle = ServerHandle {
            loops: loops.iter().map(EventLoop::handle).collect(),
        };
        admin.attach(handle.clone());
        Ok(Server {
            loops,
            handle,
            local_addrs,
            pin_cpus: config.pin_cpus.clone(),
            drain_delay: config.drain_delay,
            server_id: config.server_id.clone(),
            admin,
            signals: None,
        })
    }

    /// Every endpoint of the first loop, in order: what the server listens on.
    pub fn endpoints(&self) -> &[Endpoint] {
        self.handle.loops[0].endpoints()
    }

    /// The readiness and health the admin endpoint reports.
    pub fn admin(&self) -> Arc<AdminState> {
        Arc::clone(&self.admin)
    }

    /// The bound addresses, in listener order (every loop shares them).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// How many loops.
    pub fn loops(&self) -> usize {
        self.loops.len()
    }

    /// A handle to stop the server or read its counters from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Makes [`Server::run`] handle signals: SIGTERM and SIGINT drain every loop (a second
    /// one exits at once), and SIGHUP logs the counters instead of killing the process.
    ///
    /// SIGHUP reloads nothing: loopd has no configuration file (every setting is a flag fixed
    /// at start) and logs to standard error, which systemd or the container runtime owns, so
    /// there is no file to reopen. A terminal closing or a `systemctl reload` must not stop
    /// the server, and a line of counters is the useful answer.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.signals = Some(signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ])?);
        Ok(())
    }

    /// Runs every loop on its own thread and supervises them until all have ended. Returns
    /// how the server ended, or an error if a loop failed (after draining the others).
    pub fn run(self) -> io::Result<Exit> {
        let n = self.loops.len();
        let mut poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), ENDED)?);
        let mut signals = self.signals;
        if let Some(s) = &mut signals {
            poll.registry().register(s, SIGNALS, Interest::READABLE)?;
        }
        let (tx, rx) = mpsc::channel();
        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(n);
        for (i, event_loop) in self.loops.into_iter().enumerate() {
            let cpu = self.pin_cpus.as_ref().map(|cpus| cpus[i]);
            let mut report = EndReport {
                index: i,
                tx: tx.clone(),
                waker: Arc::clone(&waker),
                sent: false,
            };
            let thread = thread::Builder::new()
                .name(format!("loopd-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        match pin_to_cpu(cpu) {
                            Ok(()) => info!("loop {i}: pinned to CPU {cpu}"),
                            Err(e) => warn!("loop {i}: cannot pin to CPU {cpu}: {e}"),
                        }
                    }
                    let outcome = event_loop.run();
                    report.send(Ended::Ran(outcome));
                })?;
            threads.push(thread);
        }
        drop(tx);

        let mut supervisor = Supervisor {
            handle: self.handle,
            admin: self.admin,
            drain_delay: self.drain_delay,
            stopping: Stopping::No,
            watchdog: sd_notify::watchdog_enabled().map(Watchdog::new),
            failure: None,
        };
        supervisor.notify_ready();
        let mut outcomes: Vec<Option<Ended>> = (0..n).map(|_| None).collect();
        let mut ended = 0;
        let mut events = Events::with_capacity(8);
        while ended < n {
            let timeout = supervisor
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The supervisor cannot watch any more: stop every loop now.
                error!("supervisor poll failed: {e}; stopping every loop");
                supervisor.handle.shutdown();
                supervisor.handle.shutdown();
                supervisor
                    .failure
                    .get_or_insert_with(|| format!("supervisor poll failed: {e}"));
                for (i, outcome) in rx.iter() {
                    outcomes[i] = Some(outcome);
                }
                break;
            }
            if events.iter().any(|e| e.token() == SIGNALS) {
                if let Some(signals) = &mut signals {
                    for signal in signals.pending() {
                        supervisor.on_signal(signal);
                    }
                }
            }
            while let Ok((i, outcome)) = rx.try_recv() {
                ended += 1;
                if let Some(why) = outcome.failure() {
                    supervisor.loop_failed(i, &why);
                }
                outcomes[i] = Some(outcome);
            }
            supervisor.on_time(Instant::now());
        }
        for t in threads {
            let _ = t.join();
        }
        let handle = &supervisor.handle;
        let per_loop = handle.loop_stats();
        let accepted: Vec<String> = per_loop.iter().map(|s| s.accepted.to_string()).collect();
        let total: Snapshot = per_loop.into_iter().sum();
        let accepted = accepted.join("/");
        let named = [
            ("server_id", log::kv::Value::from(self.server_id.as_str())),
            ("loops", log::kv::Value::from(n as u64)),
            ("accepted_per_loop", log::kv::Value::from(accepted.as_str())),
        ];
        let fields = Fields {
            named: &named,
            counters: Some(&total),
        };
        if let Some(why) = supervisor.failure {
            log_with_fields(
                Level::Error,
                module_path!(),
                &fields,
                format_args!("exit: {why};"),
            );
            return Err(io::Error::other(why));
        }
        let exit = outcomes
            .into_iter()
            .flatten()
            .filter_map(|o| match o {
                Ended::Ran(Ok(exit)) => Some(exit),
                _ => None,
            })
            .fold(Exit::Drained, combine);
        log_with_fields(
            Level::Info,
            module_path!(),
            &fields,
            format_args!("exit: {exit:?};"),
        );
        Ok(exit)
    }
}

/// Where a shutdown is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    /// Serving.
    No,
    /// Not ready any more, still serving until the drain delay ends.
    Delaying(Instant),
    /// The loops are draining.
    Draining,
}

/// The systemd watchdog: a ping at half the interval systemd gave, sent only while every
/// loop answers the supervisor's probes.
struct Watchdog {
    every: Duration,
    next: Instant,
    /// The probe each loop was sent last round; none before the first round.
    probes: Option<Vec<u64>>,
}

impl Watchdog {
    fn new(timeout: Duration) -> Watchdog {
        Watchdog {
            every: timeout / 2,
            next: Instant::now(),
            probes: None,
        }
    }
}

/// The supervisor's state: the shutdown sequence, the watchdog, a failed loop.
struct Supervisor {
    handle: ServerHandle,
    admin: Arc<AdminState>,
    drain_delay: Duration,
    stopping: Stopping,
    watchdog: Option<Watchdog>,
    failure: Option<String>,
}

impl Supervisor {
    /// Tells the service manager the server is serving (a no-op without `NOTIFY_SOCKET`).
    fn notify_ready(&self) {
        let listening: Vec<String> = self.handle.loops[0]
            .endpoints()
            .iter()
            .map(Endpoint::to_string)
            .collect();
        let status = format!(
            "serving {} on {} loop(s)",
            listening.join(" "),
            self.handle.loops.len()
        );
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
    }

    /// The next instant the supervisor must act without an event.
    fn next_deadline(&self) -> Option<Instant> {
        let delay = match self.stopping {
            Stopping::Delaying(until) => Some(until),
            _ => None,
        };
        [delay, self.watchdog.as_ref().map(|w| w.next)]
            .into_iter()
            .flatten()
            .min()
    }

    /// What a signal asks of the server. The first SIGTERM or SIGINT turns `/readyz` to 503
    /// at once, then drains (after the drain delay, if one is set); another one exits at
    /// once. SIGHUP logs the counters.
    fn on_signal(&mut self, signal: i32) {
        if signal == signal_hook::consts::SIGHUP {
            let counters = self.handle.stats();
            let fields = Fields {
                named: &[],
                counters: Some(&counters),
            };
            log_with_fields(
                Level::Info,
                module_path!(),
                &fields,
                format_args!(
                    "SIGHUP: nothing to reload (settings are fixed at start, logs go to \
                     standard error);"
                ),
            );
            return;
        }
        let name = if signal == signal_hook::consts::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        match self.stopping {
            Stopping::No => {
                self.admin.not_ready();
                notify(&[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::Status("shutting down"),
                ]);
                if self.drain_delay.is_zero() {
                    info!("{name}: draining {} loop(s)", self.handle.loops.len());
                    self.drain();
                } else {
                    info!(
                        "{name}: not ready; serving for the drain delay of {:?}, then draining",
                        self.drain_delay
                    );
                    self.stopping = Stopping::Delaying(Instant::now() + self.drain_delay);
                }
            }
            Stopping::Delaying(_) => {
                warn!("{name} again: exiting now");
                self.handle.shutdown();
                self.handle.shutdown();
                self.stopping = Stopping::Draining;
            }
            Stopping::Draining => {
                warn!("{name} again: exiting now");
                self.handle.shutdown();
            }
        }
    }

    fn drain(&mut self) {
        self.stopping = Stopping::Draining;
        self.handle.shutdown();
    }

    /// A loop ended with a failure: report unhealthy and drain the others.
    fn loop_failed(&mut self, i: usize, why: &str) {
        error!("loop {i} failed: {why}");
        self.admin.unhealthy();
        if self.failure.is_none() {
            self.failure = Some(format!("loop {i} failed: {why}"));
            if self.stopping != Stopping::Draining {
                info!("draining the other loops before exiting");
                self.drain();
            }
        }
    }

    /// Timed work: the end of the drain delay, and the watchdog.
    fn on_time(&mut self, now: Instant) {
        if let Stopping::Delaying(until) = self.stopping {
            if now >= until {
                info!(
                    "drain delay over: draining {} loop(s)",
                    self.handle.loops.len()
                );
                self.drain();
            }
        }
        let Some(w) = &mut self.watchdog else {
            return;
        };
        if now < w.next {
            return;
        }
        w.next = now + w.every;
        let loops = &self.handle.loops;
        // Every loop must have answered the last probe: a loop stuck in a service does not,
        // and then systemd is not told the process is alive and restarts it.
        let stuck: Vec<usize> = match &w.probes {
            Some(sent) => loops
                .iter()
                .zip(sent)
                .enumerate()
                .filter(|(_, (h, &probe))| h.answered() < probe)
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        };
        if stuck.is_empty() && self.failure.is_none() {
            let status = format!("{} connections", self.handle.stats().active);
            notify(&[
                sd_notify::NotifyState::Watchdog,
                sd_notify::NotifyState::Status(&status),
            ]);
        } else {
            warn!("loops {stuck:?} did not answer the watchdog probe: not telling systemd we are alive");
        }
        w.probes = Some(loops.iter().map(Handle::ping).collect());
    }
}

/// Sends `states` to the service manager; a failure is logged, never fatal.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify the service manager: {e}");
    }
}

/// Two loops' endings as the server's: an interrupted loop makes the server interrupted, a
/// forced drain makes it forced, and the counts add.
fn combine(a: Exit, b: Exit) -> Exit {
    match (a, b) {
        (Exit::Interrupted { open: x }, Exit::Interrupted { open: y }) => {
            Exit::Interrupted { open: x + y }
        }
        (Exit::Interrupted { open }, _) | (_, Exit::Interrupted { open }) => {
            Exit::Interrupted { open }
        }
        (Exit::DrainTimeout { forced: x }, Exit::DrainTimeout { forced: y }) => {
            Exit::DrainTimeout { forced: x + y }
        }
        (Exit::DrainTimeout { forced }, _) | (_, Exit::DrainTimeout { forced }) => {
            Exit::DrainTimeout { forced }
        }
        (Exit::Drained, Exit::Drained) => Exit::Drained,
    }
}

/// How a loop thread ended.
enum Ended {
    /// `EventLoop::run` returned.
    Ran(io::Result<Exit>),
    /// The thread panicked (a service's bug): its connections are gone.
    Panicked,
}

impl Ended {
    fn failure(&self) -> Option<String> {
        match self {
            Ended::Ran(Ok(_)) => None,
            Ended::Ran(Err(e)) => Some(format!("poll failed: {e}")),
            Ended::Panicked => Some("it panicked".into()),
        }
    }
}

/// Tells the supervisor that a loop thread ended, also when it ends by panicking: the
/// report is sent from `drop`, which runs while the panic unwinds.
struct EndReport {
    index: usize,
    tx: mpsc::Sender<(usize, Ended)>,
    waker: Arc<Waker>,
    sent: bool,
}

impl EndReport {
    fn send(&mut self, ended: Ended) {
        self.sent = true;
        let _ = self.tx.send((self.index, ended));
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the supervisor: {e}");
        }
    }
}

impl Drop for EndReport {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Ended::Panicked);
        }
    }
}

/// Pins the calling thread to `cpu` with one `sched_setaffinity` call (pid 0: the calling
/// thread). Threads the caller starts afterwards inherit the pinning.
#[cfg(target_os = "linux")]
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "CPU number out of range"))?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    Ok(())
}

/// Pinning is a Linux feature here.
#[cfg(not(target_os = "linux"))]
pub fn pin_to_cpu(_cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning needs Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server ends as its worst loop did, with the counts added.
    #[test]
    fn endings_combine() {
        let d = Exit::Drained;
        let t = |forced| Exit::DrainTimeout { forced };
        let i = |open| Exit::Interrupted { open };
        assert_eq!(combine(d, d), d);
        assert_eq!(combine(d, t(2)), t(2));
        assert_eq!(combine(t(1), t(2)), t(3));
        assert_eq!(combine(t(5), i(1)), i(1));
        assert_eq!(combine(i(1), i(2)), i(3));
    }

    /// A CPU beyond what an affinity mask can name is refused before any system call.
    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_to_a_cpu_out_of_range_is_refused() {
        let err = pin_to_cpu(1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }
}
