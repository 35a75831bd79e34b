//! Several loops, shared-nothing: a [`Server`] binds its endpoints, builds `N` event loops,
//! runs each on its own thread, and supervises them.
//!
//! **Read this first.** Each loop owns everything it touches: its `Poll`, its own socket for
//! every listener and UDP endpoint, its slab of connections, run queue, deadlines and
//! counters. Nothing is shared on the path of a message, so nothing is locked and no cache
//! line bounces between cores. The sockets of one listener form a `SO_REUSEPORT` group
//! ([`bind_group`]): the kernel hands each new connection (and each
//! datagram flow) to one of them by a hash of the peer's address and port, so a connection
//! lives and dies on the loop that accepted it.
//!
//! What is shared is small and cold: the service factories (read-only), each loop's counters
//! (written by that loop only, read by anyone who asks), and the shutdown handles
//! ([`crate::control`]).
//!
//! * **One construction path.** Every endpoint — from `--listen` and `--admin`
//!   ([`Config::endpoints`]), from socket activation, or from a program's own list — is an
//!   [`EndpointSpec`], and [`Server::with_endpoints`] is the one place they are bound, a
//!   socket per loop, and the loops built. It reads the [`Deployment`] (loops, cap, pinning,
//!   drain delay) and hands each loop the [`LoopConfig`], all of both.
//! * **The connection cap** is split at start: loop `i` serves at most
//!   [`connection_share`] of `--max-connections`, the shares adding up to the total exactly.
//!   A loop whose share is full leaves its clients in its own accept queue even if another
//!   loop has room; that is the cost of sharing nothing (`docs/10-scaling.md`).
//! * **The supervisor** is the thread that calls [`Server::run`] ([`crate::supervisor`]):
//!   signals, the drain delay, the watchdog, and a loop that fails — which does not leave the
//!   process half-alive: every other loop drains (their clients lose nothing), and
//!   [`Server::run`] returns an error, so the process exits non-zero and its own supervisor
//!   (systemd, Kubernetes) restarts it whole. Restarting the one loop instead would keep the
//!   process up but lose that loop's connections anyway, and would hide a bug (a panic in a
//!   service) behind a process that looks healthy.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{info, warn, Level};

use crate::admin::{self, AdminState};
use crate::config::{connection_share, Config, Deployment, LoopConfig, ADMIN_CONNECTIONS};
use crate::control::{Endpoint, Exit, Health, ServerHandle};
use crate::endpoint::{Bound, EndpointSpec, Origin, Serve};
use crate::event_loop::EventLoop;
use crate::fault::spec::listener_name;
use crate::fault::{FaultConfig, Rng, Switch};
use crate::logging::{log_with_fields, Fields};
use crate::service::Handler;
use crate::socket::bind_group;
use crate::stats::Snapshot;
use crate::supervisor::Supervisor;

/// Several event loops on their own threads. See the [module documentation](self).
pub struct Server {
    loops: Vec<EventLoop>,
    handle: ServerHandle,
    local_addrs: Vec<SocketAddr>,
    pin_cpus: Option<Vec<usize>>,
    /// See [`Deployment::drain_delay`].
    drain_delay: Duration,
    /// See [`LoopConfig::server_id`]: named in the exit line.
    server_id: String,
    /// Readiness and health, set by the supervisor, for `/readyz` and `/healthz`.
    health: Arc<Health>,
    /// Installed by [`Server::handle_signals`], before any log line says the server is up,
    /// so a signal sent as soon as it is listening is never lost to the default action.
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// The certificates and configuration of its `,tls` listeners, if it has any: reloaded
    /// by the supervisor.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: Option<TlsContext>,
    /// See [`TlsConfig::cert_check`](crate::config::TlsConfig::cert_check).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    cert_check: Option<Duration>,
}

impl Server {
    /// Serves what `config` names — its `listen` services and its admin endpoint — laid out
    /// as `config.deployment` says, each loop set up by `config.loops`.
    pub fn new(config: &Config) -> io::Result<Server> {
        Server::with_endpoints(&config.deployment, &config.loops, config.endpoints())
    }

    /// Serves `endpoints` on `deployment.threads` loops, each set up by `loops`: the one path
    /// from configuration to bound endpoints, whether they come from [`Config::endpoints`],
    /// from socket activation ([`crate::systemd`]) or from a program's own
    /// [`EndpointSpec::bind`]. Every socket is bound (or duplicated) before any loop starts, so
    /// an address in use is reported here.
    pub fn with_endpoints(
        deployment: &Deployment,
        loops: &LoopConfig,
        endpoints: Vec<EndpointSpec>,
    ) -> io::Result<Server> {
        let n = deployment.threads.max(1);
        let health = Arc::new(Health::default());
        let admin = Arc::new(
            AdminState::new(Arc::clone(&health))
                .with_fault_changes(deployment.faults.runtime_changes),
        );
        let tls = tls_for(&endpoints, loops)?;
        let mut per_loop: Vec<Vec<Bound>> = (0..n).map(|_| Vec::new()).collect();
        let mut faults = FaultMatcher::new(&deployment.faults);
        for spec in endpoints {
            let is_admin = matches!(spec.serve, Serve::Admin);
            let (handler, copies, allowance) = match spec.serve {
                Serve::Handler(handler) => (handler, n, None),
                Serve::Admin => (
                    Handler::Stream(admin::factory(Arc::clone(&admin))),
                    1,
                    Some(ADMIN_CONNECTIONS),
                ),
            };
            let configured = match &spec.origin {
                Origin::Bind(addr) => Some(*addr),
                Origin::Inherited(_) => None,
            };
            let datagram = handler.socket_type() == socket2::Type::DGRAM;
            let sockets = sockets(spec.origin, handler.socket_type(), copies)?;
            let bound = sockets[0].local_addr()?.as_socket();
            let name = listener_name(&spec.name, spec.proxy, spec.tls);
            let switch = match bound {
                Some(bound) if !is_admin => faults.switch(&name, configured, bound, datagram)?,
                _ => None,
            };
            for (loop_sockets, socket) in per_loop.iter_mut().zip(sockets) {
                loop_sockets.push(Bound {
                    socket,
                    handler: handler.clone(),
                    name: spec.name.clone(),
                    proxy: spec.proxy,
                    tls: spec.tls,
                    allowance,
                    faults: switch.clone(),
                });
            }
        }
        let seed = faults.finish()?;
        let event_loops = per_loop
            .into_iter()
            .enumerate()
            .map(|(i, bound)| {
                let cap = connection_share(deployment.max_connections, n, i);
                #[allow(unused_mut)] // without TLS, nothing more to set
                let mut event_loop = EventLoop::new(loops, i, cap, bound, seed)?;
                #[cfg(feature = "tls")]
                if let Some(tls) = &tls {
                    event_loop.set_tls(Arc::clone(tls.server_config()));
                }
                Ok(event_loop)
            })
            .collect::<io::Result<Vec<EventLoop>>>()?;
        let local_addrs = event_loops[0].local_addrs();
        let handle = ServerHandle::new(event_loops.iter().map(EventLoop::handle).collect());
        admin.attach(handle.clone());
        Ok(Server {
            loops: event_loops,
            handle,
            local_addrs,
            pin_cpus: deployment.pin_cpus.clone(),
            drain_delay: deployment.drain_delay,
            server_id: loops.server_id.clone(),
            health,
            signals: None,
            tls,
            cert_check: loops.tls.cert_check,
        })
    }

    /// Every endpoint of the first loop, in order: what the server listens on.
    pub fn endpoints(&self) -> &[Endpoint] {
        self.handle.loops()[0].endpoints()
    }

    /// The readiness and health the supervisor sets and the admin endpoint reports.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
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
    /// one exits at once), and SIGHUP reloads the TLS certificates (if any listener has
    /// `,tls`) and logs the counters, instead of killing the process.
    ///
    /// SIGHUP reloads nothing else: every other setting is a flag fixed at start, and loopd
    /// logs to standard error, which systemd or the container runtime owns, so there is no
    /// file to reopen. A terminal closing or a `systemctl reload` must not stop the server.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.signals = Some(signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ])?);
        Ok(())
    }

    /// Runs every loop on its own thread and supervises them until all have ended (see
    /// [`crate::supervisor`]). Returns how the server ended, or an error if a loop failed
    /// (after draining the others).
    pub fn run(self) -> io::Result<Exit> {
        let n = self.loops.len();
        let supervisor = Supervisor::new(
            self.handle.clone(),
            self.health,
            self.drain_delay,
            self.signals,
        )?;
        #[cfg(feature = "tls")]
        let supervisor = match self.tls {
            Some(tls) => supervisor.with_certificates(tls, self.cert_check),
            None => supervisor,
        };
        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(n);
        for (i, event_loop) in self.loops.into_iter().enumerate() {
            let cpu = self.pin_cpus.as_ref().map(|cpus| cpus[i]);
            let report = supervisor.report_for(i);
            let thread = thread::Builder::new()
                .name(format!("loopd-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        match pin_to_cpu(cpu) {
                            Ok(()) => info!("loop {i}: pinned to CPU {cpu}"),
                            Err(e) => warn!("loop {i}: cannot pin to CPU {cpu}: {e}"),
                        }
                    }
                    report.ran(event_loop.run());
                })?;
            threads.push(thread);
        }
        let ended = supervisor.supervise();
        for t in threads {
            let _ = t.join();
        }
        let per_loop = self.handle.loop_stats();
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
        match ended {
            Err(why) => {
                log_with_fields(
                    Level::Error,
                    module_path!(),
                    &fields,
                    format_args!("exit: {why};"),
                );
                Err(io::Error::other(why))
            }
            Ok(exit) => {
                log_with_fields(
                    Level::Info,
                    module_path!(),
                    &fields,
                    format_args!("exit: {exit:?};"),
                );
                Ok(exit)
            }
        }
    }
}

/// A server's TLS: [`crate::tls::Tls`] with the `tls` feature; without it, a type with no
/// value, since a server without TLS never has one.
#[cfg(feature = "tls")]
pub(crate) type TlsContext = crate::tls::Tls;
/// A server's TLS: [`crate::tls::Tls`] with the `tls` feature; without it, a type with no
/// value, since a server without TLS never has one.
#[cfg(not(feature = "tls"))]
pub(crate) type TlsContext = std::convert::Infallible;

/// The TLS context the `,tls` endpoints need, loaded from `loops.tls` (certificates read,
/// the shared configuration built, each certificate logged with its fingerprint); `None`
/// when no endpoint speaks TLS. A `,tls` endpoint without a certificate, the admin endpoint
/// with `,tls`, or a build without TLS is an error that says so.
fn tls_for(endpoints: &[EndpointSpec], loops: &LoopConfig) -> io::Result<Option<TlsContext>> {
    let refuse = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let Some(spec) = endpoints.iter().find(|e| e.tls) else {
        if !loops.tls.certs.is_empty() {
            warn!("TLS certificates given, but no listener has ,tls: they serve nothing");
        }
        return Ok(None);
    };
    if let Some(admin) = endpoints
        .iter()
        .find(|e| e.tls && matches!(e.serve, Serve::Admin))
    {
        return Err(refuse(format!(
            "{}: the admin endpoint serves plain HTTP; put TLS in front of it if it must \
             cross a network",
            admin.name
        )));
    }
    let listener = match &spec.origin {
        Origin::Bind(addr) => format!("{}={addr},tls", spec.name),
        Origin::Inherited(_) => format!("{},tls (socket activation)", spec.name),
    };
    if loops.tls.certs.is_empty() {
        return Err(refuse(crate::config::no_certificate(&listener)));
    }
    #[cfg(feature = "tls")]
    {
        let tls = crate::tls::Tls::load(&loops.tls).map_err(|e| refuse(e.to_string()))?;
        for (i, summary) in tls.summaries().iter().enumerate() {
            let role = if i == 0 { "default" } else { "by SNI" };
            info!("TLS certificate ({role}): {summary}");
        }
        Ok(Some(tls))
    }
    #[cfg(not(feature = "tls"))]
    Err(refuse(format!(
        "{listener}: this build of loopd has no TLS (build it with the `tls` feature)"
    )))
}

/// `n` sockets of `kind` for an endpoint, one for each loop: bound here, or duplicates of
/// the one the service manager handed over (the loops then share its accept queue).
/// Matches `--fault` specs to endpoints as they are bound, and checks that each names one.
struct FaultMatcher<'a> {
    config: &'a FaultConfig,
    /// Whether each spec matched an endpoint.
    used: Vec<bool>,
    /// Some endpoint has faults (or may get them): the seed is logged.
    any: bool,
}

impl<'a> FaultMatcher<'a> {
    fn new(config: &'a FaultConfig) -> FaultMatcher<'a> {
        FaultMatcher {
            config,
            used: vec![false; config.specs.len()],
            any: false,
        }
    }

    /// The switch of endpoint `name`, given as `configured` and bound at `bound`: with the
    /// last spec that names it, or empty if faults may be set at run time; `None` otherwise.
    fn switch(
        &mut self,
        name: &str,
        configured: Option<SocketAddr>,
        bound: SocketAddr,
        datagram: bool,
    ) -> io::Result<Option<Arc<Switch>>> {
        let mut chosen = None;
        for (i, spec) in self.config.specs.iter().enumerate() {
            if spec.listener.matches(name, configured, bound) {
                self.used[i] = true;
                chosen = Some(spec.faults.clone());
            }
        }
        if chosen.is_none() && !self.config.runtime_changes {
            return Ok(None);
        }
        let service = name.split(',').next().unwrap_or(name);
        let framed = matches!(service, "line" | "frame");
        let faults = chosen.unwrap_or_default();
        let switch = Switch::new(format!("{service}@{bound}"), datagram, framed, faults)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--fault {e}")))?;
        if !switch.plan().faults.is_empty() {
            info!("faults: {switch}");
        }
        self.any = true;
        Ok(Some(Arc::new(switch)))
    }

    /// Checks that every spec named an endpoint, and returns the seed of the loops' choices.
    fn finish(self) -> io::Result<u64> {
        if let Some(i) = self.used.iter().position(|used| !used) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--fault {}: no listener is {}",
                    self.config.specs[i], self.config.specs[i].listener
                ),
            ));
        }
        let seed = self.config.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Rng::new(t.as_nanos() as u64 ^ u64::from(std::process::id())).next_u64()
        });
        if self.any {
            info!("fault seed {seed} (repeat these choices with --fault-seed {seed} and the same --threads)");
        }
        Ok(seed)
    }
}

fn sockets(origin: Origin, kind: socket2::Type, n: usize) -> io::Result<Vec<socket2::Socket>> {
    match origin {
        Origin::Bind(addr) => bind_group(addr, kind, n),
        Origin::Inherited(socket) => {
            let mut copies: Vec<socket2::Socket> = (1..n)
                .map(|_| socket.try_clone())
                .collect::<io::Result<_>>()?;
            copies.insert(0, socket);
            Ok(copies)
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

    /// A CPU beyond what an affinity mask can name is refused before any system call.
    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_to_a_cpu_out_of_range_is_refused() {
        let err = pin_to_cpu(1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }
}
