//! The coordinator: checks that a run can be made, waits for its start (`--start-at`),
//! starts the workers with their share of the connections (this process's segment's, with
//! `--segment`), samples their counters once a second for the progress line and the
//! timeline (and the CPU counters at both ends of the window), and assembles the report.
//!
//! [`run`] is the whole of it; [`Coordinator`] is the same in steps: [`Coordinator::start`],
//! [`Coordinator::watch`] until the workers are done, [`Coordinator::report`].

use std::fmt;
use std::io;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use loopd::rlimit;

use crate::clock;
use crate::config::start::check_start;
use crate::config::{BenchConfig, ConfigError, RecordedConfig, Stop};
use crate::cpu::{self, CpuSample};
use crate::faults::{self, Reconciliation};
use crate::payload::{Codec, Protocol};
use crate::record::intervals::IntervalCollector;
use crate::record::live::{Live, Moved};
use crate::record::{Second, Tally};
use crate::report::files::wall_time;
use crate::report::{Report, Window};
use crate::schedule::Plan;
use crate::tls::TlsClient;
use crate::worker::{Outcome, Worker};

/// Why a run could not be made at all (as opposed to errors it measured).
#[derive(Debug)]
pub enum BenchError {
    /// The settings contradict each other.
    Invalid(ConfigError),
    /// The server's CPU counter, asked for, cannot be read: a bad setting too.
    ServerCpu(String),
    /// `compare` was given fewer than two targets.
    TooFewTargets,
    /// The machine cannot hold the run (open-files limit).
    Resources(String),
    /// A worker could not set up or run its poller.
    Io(io::Error),
    /// The reports of a series do not combine.
    Report(String),
    /// The TLS settings cannot make a client (a missing file, an unknown group, ...).
    Tls(String),
}

impl BenchError {
    /// Whether the settings are to blame (exit status 2) rather than the run (1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BenchError::Invalid(_)
                | BenchError::ServerCpu(_)
                | BenchError::TooFewTargets
                | BenchError::Tls(_)
        )
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Invalid(e) => write!(f, "{e}"),
            BenchError::ServerCpu(s)
            | BenchError::Resources(s)
            | BenchError::Report(s)
            | BenchError::Tls(s) => f.write_str(s),
            BenchError::TooFewTargets => f.write_str("compare needs at least two targets"),
            BenchError::Io(e) => write!(f, "worker: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<ConfigError> for BenchError {
    fn from(e: ConfigError) -> BenchError {
        BenchError::Invalid(e)
    }
}

/// Descriptors per worker besides connections: its poller and its alarm.
const PER_WORKER_DESCRIPTORS: u64 = 2;

/// Runs the benchmark described by `cfg`, calling `on_second` with each measured second
/// as it ends (for a progress line).
pub fn run(cfg: &BenchConfig, mut on_second: impl FnMut(&Second)) -> Result<Report, BenchError> {
    let mut coordinator = Coordinator::start(cfg)?;
    coordinator.watch(&mut on_second);
    coordinator.report()
}

/// A run in progress, seen from the coordinating thread.
pub struct Coordinator {
    cfg: Arc<BenchConfig>,
    plan: Plan,
    lives: Vec<Arc<Live>>,
    handles: Vec<JoinHandle<io::Result<Outcome>>>,
    /// One message per worker as it finishes.
    done: mpsc::Receiver<()>,
    running: usize,
    /// `--hlog`: the workers' seconds, added up.
    collector: Option<IntervalCollector>,
    /// The ramp and warm-up, a second at a time from the start.
    lead_in: Vec<Second>,
    lead_last: Second,
    lead_next: Instant,
    /// The measurement, a second at a time.
    timeline: Vec<Second>,
    last: Second,
    next: Instant,
    /// The CPU counters as the window opened and as it closed (or as the run ended).
    cpu_start: Option<CpuSample>,
    cpu_end: Option<CpuSample>,
    /// The servers' fault counters before the workers started (`--server-metrics`).
    faults_before: Vec<faults::Counters>,
    /// When the measurement began, on the wall clock.
    started: Option<SystemTime>,
    /// Whether the kernel said the clock was synchronised as the run started.
    clock_synchronised: Option<bool>,
    /// When the last worker finished.
    ended: Instant,
}

impl Coordinator {
    /// Checks the settings and the machine, waits for `--start-at` if it is given, then
    /// starts the workers.
    pub fn start(cfg: &BenchConfig) -> Result<Coordinator, BenchError> {
        cfg.validate()?;
        if let Some(at) = cfg.start_at {
            check_start(at, SystemTime::now(), cfg.lead_in())?;
        }
        let nofile = rlimit::raise_nofile_limit()
            .map_err(|e| BenchError::Resources(format!("cannot read the open-files limit: {e}")))?;
        let needed = cfg.own_connections() as u64
            + cfg.threads as u64 * PER_WORKER_DESCRIPTORS
            + rlimit::RESERVED_DESCRIPTORS;
        if needed > nofile {
            return Err(BenchError::Resources(format!(
                "{} connections need about {needed} open files but the limit is {nofile}; \
                 raise the hard limit (ulimit -Hn) or use fewer connections",
                cfg.own_connections()
            )));
        }
        if let Some(server) = &cfg.cpu.server {
            // Scraped once before anything starts, so a wrong URL is a bad setting (exit 2),
            // not a run that measured everything but what was asked.
            server.cpu_seconds().map_err(|e| {
                BenchError::ServerCpu(format!("server CPU ({}): {e}", server.describe()))
            })?;
        }
        // The faults' counters, before anything starts: the reconciliation covers the whole
        // run, as the error counts do.
        let faults_before = faults::scrape(&cfg.fault_metrics)
            .map_err(|e| BenchError::ServerCpu(format!("server metrics: {e}")))?;
        // Trust store, certificates and names, once: a bad one is a bad setting (exit 2).
        let tls = match &cfg.tls {
            Some(settings) => Some(Arc::new(
                TlsClient::new(settings, cfg.target).map_err(BenchError::Tls)?,
            )),
            None => None,
        };
        let cfg = Arc::new(cfg.clone());
        // One codec for every worker: the ring it generates bodies from is read-only.
        let codec = Arc::new(match cfg.protocol {
            Protocol::Http => Codec::http(
                cfg.http.request_head(cfg.target, cfg.size),
                cfg.http.body(cfg.size),
            ),
            p => Codec::new(p, cfg.size),
        });
        let clock_synchronised = clock::synchronised();
        let t0 = match cfg.start_at {
            Some(at) => {
                if clock_synchronised == Some(false) {
                    log::warn!(
                        "the system clock is not synchronised (adjtimex: STA_UNSYNC): \
                         --start-at lines this run up with others only as well as their \
                         clocks agree"
                    );
                }
                // Anchored at the time given, even if it has just gone by (within the
                // lead-in, as checked): the window stays the other processes' window.
                clock::wait_until(at)
            }
            None => Instant::now(),
        };
        let from = t0 + cfg.ramp_time() + cfg.warmup;
        let until = match cfg.stop {
            Stop::After(d) => Some(from + d),
            Stop::Count(_) => None,
        };
        let plan = Plan { t0, from, until };

        let (done_tx, done) = mpsc::channel();
        let (interval_tx, interval_rx) = mpsc::channel();
        let collector = cfg
            .intervals
            .then(|| IntervalCollector::new(interval_rx, from));
        let interval_tx = cfg.intervals.then_some(interval_tx);
        let mut lives = Vec::new();
        let mut handles = Vec::new();
        let own = cfg.connection_ids();
        for w in 0..cfg.threads {
            // Deal connections round-robin so a ramp opens them evenly across threads.
            let ids: Vec<u32> = own.iter().copied().skip(w).step_by(cfg.threads).collect();
            let live = Arc::new(Live::default());
            lives.push(live.clone());
            let worker = Worker::new(
                cfg.clone(),
                codec.clone(),
                plan,
                ids,
                live,
                interval_tx.clone(),
                tls.clone(),
            );
            let done = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("loopd-bench-{w}"))
                .spawn(move || {
                    let outcome = worker.run();
                    let _ = done.send(());
                    outcome
                })
                .map_err(BenchError::Io)?;
            handles.push(handle);
        }
        let running = cfg.threads;
        Ok(Coordinator {
            cfg,
            plan,
            lives,
            handles,
            done,
            running,
            collector,
            lead_in: Vec::new(),
            lead_last: Second::default(),
            lead_next: t0 + Duration::from_secs(1),
            timeline: Vec::new(),
            last: Second::default(),
            next: from + Duration::from_secs(1),
            cpu_start: None,
            cpu_end: None,
            faults_before,
            started: None,
            clock_synchronised,
            ended: t0,
        })
    }

    /// Follows the run until every worker is done, calling `on_second` as each measured
    /// second ends.
    pub fn watch(&mut self, on_second: &mut impl FnMut(&Second)) {
        while self.running > 0 {
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            match self.done.recv_timeout(wait) {
                Ok(()) => self.running -= 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => self.running = 0,
            }
            self.tick(Instant::now(), on_second);
        }
    }

    /// When something is next due: a second ends, the window opens or closes.
    fn next_wake(&self) -> Instant {
        let (from, until) = (self.plan.from, self.plan.until);
        [
            Some(self.next),
            (self.lead_next < from).then_some(self.lead_next),
            self.cpu_start.is_none().then_some(from),
            until.filter(|_| self.cpu_end.is_none()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next)
    }

    /// Does what is due at `now`.
    fn tick(&mut self, now: Instant, on_second: &mut impl FnMut(&Second)) {
        let (from, until) = (self.plan.from, self.plan.until);
        if self.cpu_start.is_none() && now >= from {
            self.cpu_start = Some(CpuSample::take(&self.cfg.cpu));
            self.started = Some(wall_time(from, now, SystemTime::now()));
        }
        if let Some(c) = &mut self.collector {
            c.poll(now);
        }
        while self.lead_next < from && now >= self.lead_next {
            let total = self.sum(|l| &l.lead_in);
            let t = self.secs_from(self.lead_next);
            self.lead_in.push(total.since(&self.lead_last, t));
            self.lead_last = total;
            self.lead_next += Duration::from_secs(1);
        }
        if self.cpu_start.is_some()
            && self.cpu_end.is_none()
            && (until.is_some_and(|u| now >= u) || self.running == 0)
        {
            self.cpu_end = Some(CpuSample::take(&self.cfg.cpu));
        }
        // One entry per whole second of the measurement...
        while now >= self.next && until.is_none_or(|u| self.next <= u) {
            self.close_second(self.next, on_second);
            self.next += Duration::from_secs(1);
        }
        // ...and the partial one at the end, if the run stopped between seconds.
        if self.running == 0 {
            self.ended = now;
            let end = until.map_or(now, |u| u.min(now));
            let covered = from + Duration::from_secs(self.timeline.len() as u64);
            if end > covered + Duration::from_millis(10) {
                self.close_second(end, on_second);
            }
        }
    }

    /// Ends the timeline's current second at `end`.
    fn close_second(&mut self, end: Instant, on_second: &mut impl FnMut(&Second)) {
        let total = self.sum(|l| &l.measured);
        let t = end.duration_since(self.plan.from).as_secs_f64();
        let second = total.since(&self.last, t);
        on_second(&second);
        self.timeline.push(second);
        self.last = total;
    }

    /// Every worker's totals of what moved inside the window, or before it.
    fn sum(&self, moved: fn(&Live) -> &Moved) -> Second {
        self.lives.iter().fold(Second::default(), |mut sum, live| {
            sum.add(&live.totals(moved));
            sum
        })
    }

    /// Seconds from the start of the measurement to `at` (negative before it).
    fn secs_from(&self, at: Instant) -> f64 {
        let from = self.plan.from;
        if at >= from {
            at.duration_since(from).as_secs_f64()
        } else {
            -from.duration_since(at).as_secs_f64()
        }
    }

    /// Joins the workers and builds the report.
    pub fn report(mut self) -> Result<Report, BenchError> {
        let mut tally = Tally::new();
        let mut last_completion = None;
        let mut start_lag = None;
        for h in std::mem::take(&mut self.handles) {
            let outcome = h
                .join()
                .map_err(|_| BenchError::Io(io::Error::other("a worker thread panicked")))?
                .map_err(BenchError::Io)?;
            last_completion = last_completion.max(outcome.last_completion);
            // The run has started when its last worker has.
            start_lag = start_lag.max(outcome.start_lag);
            tally.absorb(outcome.tally);
        }
        let (t0, from) = (self.plan.t0, self.plan.from);
        let end = match self.plan.until {
            // A timed run measures its whole window unless every connection ended early.
            Some(u) => u.min(self.ended),
            None => last_completion.unwrap_or(self.ended),
        };
        let duration = end.saturating_duration_since(from).as_secs_f64();
        let costs = match (&self.cpu_start, &self.cpu_end) {
            (Some(a), Some(b)) => {
                let handshakes = self
                    .cfg
                    .tls
                    .as_ref()
                    .map(|_| tally.tls.full + tally.tls.resumed);
                Some(cpu::costs(a, b, &self.cfg.cpu, tally.messages).per_handshake(handshakes))
            }
            _ => None, // the run ended before its window began
        };
        if from > t0 {
            let total = self.sum(|l| &l.lead_in);
            self.lead_in.push(total.since(&self.lead_last, 0.0));
        }
        let config = RecordedConfig::from(&*self.cfg);
        let mut report = Report::new(config, duration, &tally, std::mem::take(&mut self.timeline));
        report.lead_in = std::mem::take(&mut self.lead_in);
        report.lead_in_secs = self.secs_from(t0);
        report.cpu = costs;
        report.started = self.started;
        report.window = self.started.map(|start| Window {
            start_lag_secs: self
                .cfg
                .start_at
                .and(start_lag)
                .map(|lag| lag.as_secs_f64()),
            clock_synchronised: self.clock_synchronised,
            ..Window::new(start, duration)
        });
        if let Some(c) = self.collector.take() {
            report.intervals = c.finish(Duration::from_secs_f64(duration));
        }
        if !self.cfg.fault_metrics.is_empty() {
            // After every worker has finished: what each server injected during the run.
            let after = faults::scrape(&self.cfg.fault_metrics)
                .map_err(|e| BenchError::ServerCpu(format!("server metrics: {e}")))?;
            let injected = faults::injected(&self.cfg.fault_metrics, &self.faults_before, &after);
            report.faults = Some(Reconciliation::new(injected, &report.reconciled_errors()));
        }
        Ok(report)
    }
}
