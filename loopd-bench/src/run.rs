//! The coordinator: starts the workers, samples their counters once a second for the
//! progress line and the timeline, and assembles the report.

use std::fmt;
use std::io;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use loopd::rlimit;

use crate::config::{BenchConfig, RecordedConfig, Stop};
use crate::cpu::{self, CpuSample};
use crate::payload::Codec;
use crate::report::files::{wall_time, IntervalCollector};
use crate::report::{Report, Second, Tally};
use crate::schedule::Plan;
use crate::worker::{Live, Moved, Worker};

/// Why a run could not be made at all (as opposed to errors it measured).
#[derive(Debug)]
pub enum BenchError {
    /// The settings contradict each other.
    Invalid(String),
    /// The machine cannot hold the run (open-files limit).
    Resources(String),
    /// A worker could not set up or run its poller.
    Io(io::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Invalid(s) | BenchError::Resources(s) => f.write_str(s),
            BenchError::Io(e) => write!(f, "worker: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// Descriptors per worker besides connections: its poller and its alarm.
const PER_WORKER_DESCRIPTORS: u64 = 2;

/// Runs the benchmark described by `cfg`, calling `on_second` with each measured second
/// as it ends (for a progress line).
pub fn run(cfg: &BenchConfig, mut on_second: impl FnMut(&Second)) -> Result<Report, BenchError> {
    cfg.validate().map_err(BenchError::Invalid)?;
    let nofile = rlimit::raise_nofile_limit()
        .map_err(|e| BenchError::Resources(format!("cannot read the open-files limit: {e}")))?;
    let needed = cfg.connections as u64
        + cfg.threads as u64 * PER_WORKER_DESCRIPTORS
        + rlimit::RESERVED_DESCRIPTORS;
    if needed > nofile {
        return Err(BenchError::Resources(format!(
            "{} connections need about {needed} open files but the limit is {nofile}; \
             raise the hard limit (ulimit -Hn) or use fewer connections",
            cfg.connections
        )));
    }

    if let Some(server) = &cfg.cpu.server {
        // Scraped once before anything starts, so a wrong URL is a bad setting (exit 2),
        // not a run that measured everything but what was asked.
        server
            .cpu_seconds()
            .map_err(|e| BenchError::Invalid(format!("server CPU ({}): {e}", server.describe())))?;
    }
    let cfg = Arc::new(cfg.clone());
    // One codec for every worker: the ring it generates bodies from is read-only.
    let codec = Arc::new(Codec::new(cfg.protocol, cfg.size));
    let t0 = Instant::now();
    let from = t0 + cfg.ramp_time() + cfg.warmup;
    let until = match cfg.stop {
        Stop::After(d) => Some(from + d),
        Stop::Count(_) => None,
    };
    let plan = Plan { t0, from, until };

    let (done_tx, done_rx) = mpsc::channel();
    let (interval_tx, interval_rx) = mpsc::channel();
    let mut collector = cfg
        .intervals
        .then(|| IntervalCollector::new(interval_rx, from));
    let interval_tx = cfg.intervals.then_some(interval_tx);
    let mut lives = Vec::new();
    let mut handles = Vec::new();
    for w in 0..cfg.threads {
        // Deal connections round-robin so a ramp opens them evenly across threads.
        let ids: Vec<u32> = (w..cfg.connections)
            .step_by(cfg.threads)
            .map(|i| u32::try_from(i).expect("connection ids fit 32 bits"))
            .collect();
        let live = Arc::new(Live::default());
        lives.push(live.clone());
        let worker = Worker::new(
            cfg.clone(),
            codec.clone(),
            plan,
            ids,
            live,
            interval_tx.clone(),
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
    drop(done_tx);
    drop(interval_tx);

    // Every worker's totals of what moved inside the window, or before it.
    let sum = |moved: fn(&Live) -> &Moved| {
        lives.iter().fold(Second::default(), |mut sum, live| {
            sum.add(&live.totals(moved));
            sum
        })
    };
    let sample = || sum(|l| &l.measured);
    let sample_lead_in = || sum(|l| &l.lead_in);
    // The ramp and warm-up, a second at a time from the start; the last entry, ending where
    // the measurement begins, is taken from the final counts once the workers are done.
    let mut lead_in: Vec<Second> = Vec::new();
    let mut lead_last = Second::default();
    let mut lead_next = t0 + Duration::from_secs(1);
    let secs_from = |at: Instant| -> f64 {
        if at >= from {
            at.duration_since(from).as_secs_f64()
        } else {
            -from.duration_since(at).as_secs_f64()
        }
    };
    let mut timeline: Vec<Second> = Vec::new();
    let mut last = Second::default();
    let mut close_interval = |end: Instant, timeline: &mut Vec<Second>| {
        let total = sample();
        let second = total.since(&last, end.duration_since(from).as_secs_f64());
        on_second(&second);
        timeline.push(second);
        last = total;
    };
    let mut running = cfg.threads;
    let mut next = from + Duration::from_secs(1);
    let mut ended = Instant::now();
    // The CPU counters are read as the window opens and as it closes (or as the run ends,
    // for a counted run or one whose connections all ended early).
    let (mut cpu_start, mut cpu_end): (Option<CpuSample>, Option<CpuSample>) = (None, None);
    let mut started = None;
    while running > 0 {
        let wake = [
            Some(next),
            (lead_next < from).then_some(lead_next),
            cpu_start.is_none().then_some(from),
            until.filter(|_| cpu_end.is_none()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next);
        match done_rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(()) => running -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => running = 0,
        }
        let now = Instant::now();
        if cpu_start.is_none() && now >= from {
            cpu_start = Some(CpuSample::take(&cfg.cpu));
            started = Some(wall_time(from, now, SystemTime::now()));
        }
        if let Some(c) = &mut collector {
            c.poll(now);
        }
        while lead_next < from && now >= lead_next {
            let total = sample_lead_in();
            lead_in.push(total.since(&lead_last, secs_from(lead_next)));
            lead_last = total;
            lead_next += Duration::from_secs(1);
        }
        if cpu_start.is_some()
            && cpu_end.is_none()
            && (until.is_some_and(|u| now >= u) || running == 0)
        {
            cpu_end = Some(CpuSample::take(&cfg.cpu));
        }
        // One entry per whole second of the measurement...
        while now >= next && until.is_none_or(|u| next <= u) {
            close_interval(next, &mut timeline);
            next += Duration::from_secs(1);
        }
        // ...and the partial one at the end, if the run stopped between seconds.
        if running == 0 {
            ended = now;
            let end = until.map_or(now, |u| u.min(now));
            let covered = from + Duration::from_secs(timeline.len() as u64);
            if end > covered + Duration::from_millis(10) {
                close_interval(end, &mut timeline);
            }
        }
    }

    let mut tally = Tally::new();
    let mut last_completion = None;
    for h in handles {
        let outcome = h
            .join()
            .map_err(|_| BenchError::Io(io::Error::other("a worker thread panicked")))?
            .map_err(BenchError::Io)?;
        last_completion = last_completion.max(outcome.last_completion);
        tally.absorb(outcome.tally);
    }
    let end = match until {
        // A timed run measures its whole window unless every connection ended early.
        Some(u) => u.min(ended),
        None => last_completion.unwrap_or(ended),
    };
    let duration = end.saturating_duration_since(from).as_secs_f64();
    let costs = match (&cpu_start, &cpu_end) {
        (Some(a), Some(b)) => Some(cpu::costs(a, b, &cfg.cpu, tally.messages)),
        _ => None, // the run ended before its window began
    };
    if from > t0 {
        lead_in.push(sample_lead_in().since(&lead_last, 0.0));
    }
    let mut report = Report::new(RecordedConfig::from(&*cfg), duration, &tally, timeline);
    report.lead_in = lead_in;
    report.lead_in_secs = secs_from(t0);
    report.cpu = costs;
    report.started = started;
    if let Some(c) = collector {
        report.intervals = c.finish(Duration::from_secs_f64(duration));
    }
    Ok(report)
}
