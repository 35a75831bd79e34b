//! The supervisor: the thread that calls [`Server::run`](crate::server::Server::run) watches
//! the loops it started, and is the only part of loopd that talks to the service manager.
//!
//! It runs a small poll of its own over the signals (through signal-hook-mio, like any
//! readable source) and a waker the loop threads ring as they end, with a timeout to its next
//! deadline (the end of the drain delay, the next watchdog ping):
//!
//! * **Signals.** SIGTERM or SIGINT turns `/readyz` to 503 at once, then asks every loop to
//!   drain — after `--drain-delay`, if one is set, so that a load balancer watching `/readyz`
//!   stops sending new clients first. Another one exits at once. SIGHUP reloads the TLS
//!   certificates and logs the counters.
//! * **Certificates** (`,tls` listeners) are read again on SIGHUP, and when the supervisor
//!   sees that a certificate or key file changed: it looks every few seconds
//!   (`--tls-cert-check`), because a rotated Kubernetes Secret sends no signal. New
//!   handshakes use what loaded; established sessions are not touched; a reload that fails
//!   keeps what is in force and says why.
//! * **A loop that fails** — its `poll` fails, or a service panics — does not leave the
//!   process half-alive: `/healthz` turns to 503, every other loop drains, and the server
//!   ends with an error, so its own supervisor (systemd, Kubernetes) restarts it whole.
//! * **The service manager** (`sd_notify`, a no-op without `NOTIFY_SOCKET`) hears `READY=1`
//!   once the loops run, `STOPPING=1` at the first signal, and `WATCHDOG=1` at half the
//!   interval it asked for — only while every loop answers a liveness probe
//!   ([`Handle::ping`](crate::control::Handle::ping)), so a loop stuck in a service gets the
//!   process restarted.

use std::io;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use log::{error, info, warn, Level};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use crate::control::{Endpoint, Exit, Handle, Health, ServerHandle};
use crate::logging::{log_with_fields, Fields};

const SIGNALS: Token = Token(0);
const ENDED: Token = Token(1);

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

/// The supervisor. See the [module documentation](self).
pub(crate) struct Supervisor {
    poll: Poll,
    /// Installed before the server said it was up (see `Server::handle_signals`).
    signals: Option<Signals>,
    /// Rung by each loop thread as it ends.
    waker: Arc<Waker>,
    /// Given to each loop thread to report its end; dropped once they all have theirs.
    tx: Option<mpsc::Sender<(usize, Ended)>>,
    rx: mpsc::Receiver<(usize, Ended)>,
    handle: ServerHandle,
    health: Arc<Health>,
    drain_delay: Duration,
    stopping: Stopping,
    watchdog: Option<Watchdog>,
    failure: Option<String>,
    /// The TLS certificates to reload, and the watch on their files.
    #[cfg(feature = "tls")]
    certs: Option<Certs>,
}

/// The certificates of a server's `,tls` listeners, as the supervisor reloads them.
#[cfg(feature = "tls")]
struct Certs {
    tls: crate::tls::Tls,
    watch: crate::tls::Watch,
    /// How often the files are looked at; `None`: only SIGHUP reloads.
    every: Option<Duration>,
    next: Instant,
}

impl Supervisor {
    /// A supervisor of the loops behind `handle`, hearing `signals` if given.
    pub(crate) fn new(
        handle: ServerHandle,
        health: Arc<Health>,
        drain_delay: Duration,
        mut signals: Option<Signals>,
    ) -> io::Result<Supervisor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), ENDED)?);
        if let Some(s) = &mut signals {
            poll.registry().register(s, SIGNALS, Interest::READABLE)?;
        }
        let (tx, rx) = mpsc::channel();
        Ok(Supervisor {
            poll,
            signals,
            waker,
            tx: Some(tx),
            rx,
            handle,
            health,
            drain_delay,
            stopping: Stopping::No,
            watchdog: sd_notify::watchdog_enabled().map(Watchdog::new),
            failure: None,
            #[cfg(feature = "tls")]
            certs: None,
        })
    }

    /// Reloads `tls`'s certificates on SIGHUP, and when one of its files changed (looked at
    /// every `every`, if given).
    #[cfg(feature = "tls")]
    pub(crate) fn with_certificates(
        mut self,
        tls: crate::tls::Tls,
        every: Option<Duration>,
    ) -> Supervisor {
        let watch = crate::tls::Watch::new(tls.files().to_vec());
        let every = every.filter(|_| !watch.is_empty());
        self.certs = Some(Certs {
            tls,
            watch,
            every,
            next: Instant::now() + every.unwrap_or_default(),
        });
        self
    }

    /// What loop `index`'s thread holds to report its end, by returning or by panicking.
    pub(crate) fn report_for(&self, index: usize) -> EndReport {
        EndReport {
            index,
            tx: self
                .tx
                .clone()
                .expect("reports are handed out before supervising"),
            waker: Arc::clone(&self.waker),
            sent: false,
        }
    }

    /// Supervises until every loop has ended: signals, the drain delay, the watchdog, a loop
    /// that fails. Returns how the loops ended together, or why the server failed.
    pub(crate) fn supervise(mut self) -> Result<Exit, String> {
        // Every loop thread holds its own sender: the channel ends when the last one ends.
        self.tx = None;
        let n = self.handle.loops().len();
        self.notify_ready();
        let mut outcomes: Vec<Option<Ended>> = (0..n).map(|_| None).collect();
        let mut ended = 0;
        let mut events = Events::with_capacity(8);
        while ended < n {
            let timeout = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The supervisor cannot watch any more: stop every loop now.
                error!("supervisor poll failed: {e}; stopping every loop");
                self.handle.shutdown();
                self.handle.shutdown();
                self.failure
                    .get_or_insert_with(|| format!("supervisor poll failed: {e}"));
                for (i, outcome) in self.rx.iter() {
                    outcomes[i] = Some(outcome);
                }
                break;
            }
            if events.iter().any(|e| e.token() == SIGNALS) {
                let pending: Vec<i32> = match &mut self.signals {
                    Some(signals) => signals.pending().collect(),
                    None => Vec::new(),
                };
                for signal in pending {
                    self.on_signal(signal);
                }
            }
            while let Ok((i, outcome)) = self.rx.try_recv() {
                ended += 1;
                if let Some(why) = outcome.failure() {
                    self.loop_failed(i, &why);
                }
                outcomes[i] = Some(outcome);
            }
            self.on_time(Instant::now());
        }
        if let Some(why) = self.failure {
            return Err(why);
        }
        Ok(outcomes
            .into_iter()
            .flatten()
            .filter_map(|o| match o {
                Ended::Ran(Ok(exit)) => Some(exit),
                _ => None,
            })
            .fold(Exit::Drained, Exit::combine))
    }

    /// Tells the service manager the server is serving (a no-op without `NOTIFY_SOCKET`).
    fn notify_ready(&self) {
        let listening: Vec<String> = self.handle.loops()[0]
            .endpoints()
            .iter()
            .map(Endpoint::to_string)
            .collect();
        let status = format!(
            "serving {} on {} loop(s)",
            listening.join(" "),
            self.handle.loops().len()
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
        #[cfg(feature = "tls")]
        let certs = self
            .certs
            .as_ref()
            .filter(|c| c.every.is_some())
            .map(|c| c.next);
        #[cfg(not(feature = "tls"))]
        let certs = None;
        [delay, self.watchdog.as_ref().map(|w| w.next), certs]
            .into_iter()
            .flatten()
            .min()
    }

    /// What a signal asks of the server. The first SIGTERM or SIGINT turns `/readyz` to 503
    /// at once, then drains (after the drain delay, if one is set); another one exits at
    /// once. SIGHUP logs the counters.
    fn on_signal(&mut self, signal: i32) {
        if signal == signal_hook::consts::SIGHUP {
            #[cfg(feature = "tls")]
            if let Some(certs) = &mut self.certs {
                // What is there now is what this reload reads: the watch need not reload it
                // again.
                certs.watch.refresh();
                reload(&certs.tls, "SIGHUP");
            }
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
                    "SIGHUP: TLS certificates reloaded if there are any; every other setting \
                     is fixed at start, and logs go to standard error;"
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
                self.health.not_ready();
                notify(&[
                    sd_notify::NotifyState::Stopping,
                    sd_notify::NotifyState::Status("shutting down"),
                ]);
                if self.drain_delay.is_zero() {
                    info!("{name}: draining {} loop(s)", self.handle.loops().len());
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
        self.health.unhealthy();
        if self.failure.is_none() {
            self.failure = Some(format!("loop {i} failed: {why}"));
            if self.stopping != Stopping::Draining {
                info!("draining the other loops before exiting");
                self.drain();
            }
        }
    }

    /// Timed work: the end of the drain delay, a look at the certificate files, and the
    /// watchdog.
    fn on_time(&mut self, now: Instant) {
        #[cfg(feature = "tls")]
        if let Some(certs) = &mut self.certs {
            if let Some(every) = certs.every.filter(|_| now >= certs.next) {
                certs.next = now + every;
                if certs.watch.changed() {
                    reload(&certs.tls, "a certificate file changed");
                }
            }
        }
        if let Stopping::Delaying(until) = self.stopping {
            if now >= until {
                info!(
                    "drain delay over: draining {} loop(s)",
                    self.handle.loops().len()
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
        let loops = self.handle.loops();
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

/// Reads the certificate files again, for `why`, and logs what is in force now, or why the
/// old certificates stay.
#[cfg(feature = "tls")]
fn reload(tls: &crate::tls::Tls, why: &str) {
    match tls.reload() {
        Ok(summaries) => {
            for (i, summary) in summaries.iter().enumerate() {
                let role = if i == 0 { "default" } else { "by SNI" };
                info!("{why}: TLS certificate reloaded ({role}): {summary}");
            }
        }
        Err(e) => error!("{why}: TLS certificates not reloaded, the ones in force stay: {e}"),
    }
}

/// Sends `states` to the service manager; a failure is logged, never fatal.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify the service manager: {e}");
    }
}

/// How a loop thread ended.
pub(crate) enum Ended {
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
pub(crate) struct EndReport {
    index: usize,
    tx: mpsc::Sender<(usize, Ended)>,
    waker: Arc<Waker>,
    sent: bool,
}

impl EndReport {
    /// Reports that the loop's run returned `outcome`.
    pub(crate) fn ran(mut self, outcome: io::Result<Exit>) {
        self.send(Ended::Ran(outcome));
    }

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
