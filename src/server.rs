//! Several loops, shared-nothing: a [`Server`] runs `N` copies of the [`EventLoop`], one per
//! thread, and supervises them.
//!
//! **Read this first.** Each loop owns everything it touches: its `Poll`, its own socket for
//! every listener and UDP endpoint, its slab of connections, run queue, deadlines and
//! counters. Nothing is shared on the path of a message, so nothing is locked and no cache
//! line bounces between cores. The sockets of one listener form a `SO_REUSEPORT` group
//! ([`listener::bind_group`]): the kernel hands each new connection (and each datagram flow)
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

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{connection_share, Config};
use crate::event_loop::{Bound, EventLoop, Exit, Handle};
use crate::listener;
use crate::service::Handler;
use crate::stats::Snapshot;

const SIGNALS: Token = Token(0);
const ENDED: Token = Token(1);

/// Several event loops on their own threads. See the [module documentation](self).
pub struct Server {
    loops: Vec<EventLoop>,
    handle: ServerHandle,
    local_addrs: Vec<SocketAddr>,
    pin_cpus: Option<Vec<usize>>,
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
}

impl Server {
    /// Binds the built-in services named in `config.listen`, on `config.threads` loops.
    pub fn new(config: &Config) -> io::Result<Server> {
        Server::serve(config, config.endpoints())
    }

    /// Binds each address with its handler on every loop; `config.listen` is ignored. Every
    /// socket is bound before any loop starts, so an address in use is reported here.
    pub fn serve(
        config: &Config,
        endpoints: impl IntoIterator<Item = (SocketAddr, Handler)>,
    ) -> io::Result<Server> {
        let n = config.threads.max(1);
        let mut per_loop: Vec<Vec<Bound>> = (0..n).map(|_| Vec::new()).collect();
        for (addr, handler) in endpoints {
            let group = listener::bind_group(addr, handler.socket_type(), n)?;
            for (sockets, socket) in per_loop.iter_mut().zip(group) {
                sockets.push(Bound {
                    socket,
                    handler: handler.clone(),
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
        Ok(Server {
            loops,
            handle,
            local_addrs,
            pin_cpus: config.pin_cpus.clone(),
            signals: None,
        })
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

        let handle = self.handle;
        let mut outcomes: Vec<Option<Ended>> = (0..n).map(|_| None).collect();
        let mut ended = 0;
        let mut failure: Option<String> = None;
        let mut events = Events::with_capacity(8);
        while ended < n {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The supervisor cannot watch any more: stop every loop now.
                error!("supervisor poll failed: {e}; stopping every loop");
                handle.shutdown();
                handle.shutdown();
                failure.get_or_insert_with(|| format!("supervisor poll failed: {e}"));
                for (i, outcome) in rx.iter() {
                    outcomes[i] = Some(outcome);
                }
                break;
            }
            if events.iter().any(|e| e.token() == SIGNALS) {
                if let Some(signals) = &mut signals {
                    for signal in signals.pending() {
                        on_signal(signal, &handle, n);
                    }
                }
            }
            while let Ok((i, outcome)) = rx.try_recv() {
                ended += 1;
                if let Some(why) = outcome.failure() {
                    error!("loop {i} failed: {why}");
                    if failure.is_none() {
                        info!("draining the other loops before exiting");
                        handle.shutdown();
                    }
                    failure.get_or_insert(format!("loop {i} failed: {why}"));
                }
                outcomes[i] = Some(outcome);
            }
        }
        for t in threads {
            let _ = t.join();
        }
        let per_loop = handle.loop_stats();
        let accepted: Vec<String> = per_loop.iter().map(|s| s.accepted.to_string()).collect();
        let total: Snapshot = per_loop.into_iter().sum();
        if let Some(why) = failure {
            error!(
                "exit: {why}; {total}; loops={n} accepted_per_loop={}",
                accepted.join("/")
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
        info!(
            "exit: {exit:?}; {total}; loops={n} accepted_per_loop={}",
            accepted.join("/")
        );
        Ok(exit)
    }
}

/// What a signal asks of the server.
fn on_signal(signal: i32, handle: &ServerHandle, loops: usize) {
    match signal {
        signal_hook::consts::SIGHUP => info!(
            "SIGHUP: nothing to reload (settings are fixed at start, logs go to standard \
             error); {}",
            handle.stats()
        ),
        _ => {
            let name = if signal == signal_hook::consts::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            info!("{name}: shutting down {loops} loop(s)");
            handle.shutdown();
        }
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

/// Pins the calling thread to `cpu` with one `sched_setaffinity` call: a dependency for a
/// single system call would be a crate to keep up for nothing. Threads the caller starts
/// afterwards inherit the pinning.
#[cfg(target_os = "linux")]
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "CPU number out of range",
        ));
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (the index is checked above)
    // and sched_setaffinity only reads it, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
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
}
