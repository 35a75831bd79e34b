//! The standard HdrHistogram files, for the tools that already read them.
//!
//! * **`.hgrm`** (`--hgrm PATH`): the percentile distribution as HdrHistogram's
//!   `outputPercentileDistribution` prints it and wrk2 writes it — value, percentile, total
//!   count and `1/(1-percentile)` per row, five rows per halving of the distance to 100%,
//!   then the mean, deviation, maximum and count. Values in milliseconds, which is what
//!   HdrHistogram's plotter expects. In open loop the uncorrected distribution goes beside it
//!   (`PATH` with `.uncorrected` before the extension).
//! * **`.hlog`** (`--hlog PATH`): an HdrHistogram interval log — one histogram per second of
//!   the measurement, tagged `latency` (and `uncorrected` in open loop) — written and read
//!   with the hdrhistogram crate's interval-log support. Logs from several machines are
//!   merged by `loopd-bench merge` as they are: the histograms add.
//!
//! A worker records each measured message into its current second's histogram and hands it
//! to the coordinator when the second ends ([`IntervalRecorder`]); the coordinator adds the
//! workers' histograms of each second and keeps them compressed ([`IntervalCollector`]), so
//! an hour-long run holds kilobytes, not a histogram per second.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::latency::new_histogram;
use super::{Connections, Parts, Report, Second};
use crate::config::RecordedConfig;

/// Nanoseconds per millisecond: `.hgrm` values and `.hlog` maxima are in milliseconds.
const NANOS_PER_MS: f64 = 1e6;
/// Rows per halving of the distance to 100%, as wrk2 prints them.
const TICKS_PER_HALF: u32 = 5;
/// The tag of the corrected latency in an interval log.
pub const LATENCY_TAG: &str = "latency";
/// The tag of the uncorrected latency (open loop).
pub const UNCORRECTED_TAG: &str = "uncorrected";
/// The comment line that carries the run's settings in an interval log.
const CONFIG_COMMENT: &str = "loopd-bench config: ";

/// Writes `h` (nanoseconds) as an `.hgrm` percentile distribution in milliseconds.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> std::io::Result<()> {
    let digits = usize::from(h.sigfig());
    let ms = |ns: f64| ns / NANOS_PER_MS;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for v in h.iter_quantiles(TICKS_PER_HALF) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = ms(v.value_iterated_to() as f64);
        if q < 1.0 {
            writeln!(
                out,
                "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}")?;
        }
    }
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    writeln!(
        out,
        "#[Mean    = {:>12.digits$}, StdDeviation   = {:>12.digits$}]",
        ms(h.mean()),
        ms(h.stdev())
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.digits$}, Total count    = {:>12}]",
        ms(h.max() as f64),
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets
    )
}

/// The `.uncorrected` companion of an `.hgrm` path: `run.hgrm` → `run.uncorrected.hgrm`.
pub fn uncorrected_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.uncorrected.{}", ext.to_string_lossy()),
        None => format!("{stem}.uncorrected"),
    };
    path.with_file_name(name)
}

/// Writes `report`'s latency (and, in open loop, its uncorrected latency) as `.hgrm` files.
pub fn write_hgrm_files(report: &Report, path: &Path) -> Result<(), String> {
    let write = |latency: &Option<super::Latency>, path: &Path| -> Result<(), String> {
        let Some(l) = latency else {
            return Ok(());
        };
        let mut out = Vec::new();
        write_hgrm(&l.histogram()?, &mut out).map_err(|e| e.to_string())?;
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
    };
    if report.latency.is_none() {
        return Err("--hgrm: this run has no round-trip latency to write".into());
    }
    write(&report.latency, path)?;
    write(&report.uncorrected_latency, &uncorrected_path(path))
}

/// One second's latencies from one worker (or, added, from all).
#[derive(Debug)]
pub struct IntervalHistogram {
    /// Seconds since the measurement began.
    pub index: u64,
    /// Corrected latency, nanoseconds.
    pub latency: Histogram<u64>,
    /// Uncorrected latency (open loop).
    pub uncorrected: Option<Histogram<u64>>,
}

/// A worker's current second, handed to the coordinator as it ends (`--hlog`).
#[derive(Debug)]
pub struct IntervalRecorder {
    from: Instant,
    current: IntervalHistogram,
    end: Instant,
    tx: Sender<IntervalHistogram>,
}

impl IntervalRecorder {
    /// Starts at the measurement's start `from`; `uncorrected` in open loop.
    pub fn new(from: Instant, uncorrected: bool, tx: Sender<IntervalHistogram>) -> Self {
        IntervalRecorder {
            from,
            current: IntervalHistogram {
                index: 0,
                latency: new_histogram(),
                uncorrected: uncorrected.then(new_histogram),
            },
            end: from + Duration::from_secs(1),
            tx,
        }
    }

    /// Records one measured message completed at `now`.
    pub fn record(&mut self, now: Instant, latency: u64, uncorrected: u64) {
        self.rotate(now);
        self.current.latency.saturating_record(latency);
        if let Some(u) = &mut self.current.uncorrected {
            u.saturating_record(uncorrected);
        }
    }

    /// Hands the current second over if it has ended (called every turn, so the coordinator
    /// gets each second promptly even from a worker with nothing to record).
    pub fn rotate(&mut self, now: Instant) {
        if now < self.end {
            return;
        }
        let index = now.saturating_duration_since(self.from).as_secs();
        let next = IntervalHistogram {
            index,
            latency: new_histogram(),
            uncorrected: self.current.uncorrected.as_ref().map(|_| new_histogram()),
        };
        self.end = self.from + Duration::from_secs(index + 1);
        let ended = std::mem::replace(&mut self.current, next);
        if !ended.latency.is_empty() {
            let _ = self.tx.send(ended);
        }
    }

    /// Hands the last, partial second over.
    pub fn finish(self) {
        if !self.current.latency.is_empty() {
            let _ = self.tx.send(self.current);
        }
    }
}

/// One interval of the log: its place in time, tag, and histogram (V2 deflate).
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// Since the log's start time.
    pub start: Duration,
    /// How long.
    pub length: Duration,
    /// [`LATENCY_TAG`] or [`UNCORRECTED_TAG`].
    pub tag: &'static str,
    /// The histogram, serialised.
    pub histogram: Vec<u8>,
}

/// The coordinator's side: adds the workers' seconds and keeps them compressed.
#[derive(Debug)]
pub struct IntervalCollector {
    rx: Receiver<IntervalHistogram>,
    from: Instant,
    /// Seconds still receiving parts.
    open: BTreeMap<u64, IntervalHistogram>,
    done: Vec<Interval>,
}

impl IntervalCollector {
    /// Collects what `rx` brings, for a measurement that began at `from`.
    pub fn new(rx: Receiver<IntervalHistogram>, from: Instant) -> IntervalCollector {
        IntervalCollector {
            rx,
            from,
            open: BTreeMap::new(),
            done: Vec::new(),
        }
    }

    /// Takes in what arrived, and compresses the seconds that ended long enough ago that
    /// every worker has handed its part over (each looks at least every 100 ms).
    pub fn poll(&mut self, now: Instant) {
        while let Ok(part) = self.rx.try_recv() {
            self.add(part);
        }
        let settled = now
            .saturating_duration_since(self.from)
            .saturating_sub(Duration::from_millis(500))
            .as_secs();
        while let Some((&index, _)) = self.open.first_key_value() {
            if index + 1 > settled {
                break;
            }
            let whole = self.open.remove(&index).expect("the first key is there");
            self.close(whole, Duration::from_secs(1));
        }
    }

    fn add(&mut self, part: IntervalHistogram) {
        match self.open.get_mut(&part.index) {
            Some(sum) => {
                sum.latency.add(&part.latency).expect("same bounds");
                if let (Some(s), Some(p)) = (&mut sum.uncorrected, &part.uncorrected) {
                    s.add(p).expect("same bounds");
                }
            }
            None => {
                self.open.insert(part.index, part);
            }
        }
    }

    fn close(&mut self, whole: IntervalHistogram, length: Duration) {
        let start = Duration::from_secs(whole.index);
        let mut push = |tag: &'static str, h: &Histogram<u64>| {
            let mut histogram = Vec::new();
            V2DeflateSerializer::new()
                .serialize(h, &mut histogram)
                .expect("serialising into memory");
            self.done.push(Interval {
                start,
                length,
                tag,
                histogram,
            });
        };
        push(LATENCY_TAG, &whole.latency);
        if let Some(u) = &whole.uncorrected {
            push(UNCORRECTED_TAG, u);
        }
    }

    /// Everything, once the workers are done; the last second is as long as the
    /// measurement lasted into it.
    pub fn finish(mut self, duration: Duration) -> Vec<Interval> {
        while let Ok(part) = self.rx.try_recv() {
            self.add(part);
        }
        for (index, whole) in std::mem::take(&mut self.open) {
            let start = Duration::from_secs(index);
            let length = duration.saturating_sub(start).min(Duration::from_secs(1));
            self.close(whole, length.max(Duration::from_millis(1)));
        }
        self.done.sort_by_key(|i| (i.start, i.tag));
        self.done
    }
}

/// Writes the interval log of `report` (its settings in a comment, then every interval).
pub fn write_hlog(report: &Report, path: &Path) -> Result<(), String> {
    let start = report
        .started
        .ok_or("--hlog: the run never reached its measurement")?;
    let mut file = Vec::new();
    let config = serde_json::to_string(&report.runs).expect("settings serialise");
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("Latency in nanoseconds; maxima in milliseconds. Written by loopd-bench.")
        .add_comment(&format!("{CONFIG_COMMENT}{config}"))
        .with_start_time(start)
        .with_max_value_divisor(NANOS_PER_MS)
        .begin_log_with(&mut file, &mut serializer)
        .map_err(|e| e.to_string())?;
    for i in &report.intervals {
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut i.histogram.as_slice())
            .map_err(|e| format!("{e:?}"))?;
        log.write_histogram(&h, i.start, i.length, Tag::new(i.tag))
            .map_err(|e| e.to_string())?;
    }
    drop(log);
    std::fs::write(path, file).map_err(|e| format!("{}: {e}", path.display()))
}

/// A report from an interval log written by loopd-bench: the latencies (all intervals
/// added), the messages they count, and a timeline of one entry per interval. What a log
/// does not hold (bytes, connections, errors) is zero.
pub fn read_hlog(text: &str) -> Result<Report, String> {
    let runs: Vec<RecordedConfig> = text
        .lines()
        .find_map(|l| l.strip_prefix('#')?.strip_prefix(CONFIG_COMMENT))
        .ok_or("not an interval log written by loopd-bench (its settings comment is missing)")
        .and_then(|json| {
            serde_json::from_str(json).map_err(|_| "its settings comment does not parse")
        })?;
    let mut latency = new_histogram();
    let mut uncorrected = new_histogram();
    let mut any_uncorrected = false;
    let mut seconds: BTreeMap<Duration, (Duration, u64)> = BTreeMap::new();
    for entry in IntervalLogIterator::new(text.as_bytes()) {
        let LogEntry::Interval(i) = entry.map_err(|e| format!("{e:?}"))? else {
            continue;
        };
        let bytes = base64_decode(i.encoded_histogram())?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("a histogram does not decode: {e:?}"))?;
        match i.tag().map(|t| t.as_str()) {
            Some(UNCORRECTED_TAG) => {
                any_uncorrected = true;
                uncorrected.add(&h).map_err(|e| format!("{e:?}"))?;
            }
            _ => {
                latency.add(&h).map_err(|e| format!("{e:?}"))?;
                let entry = seconds
                    .entry(i.start_timestamp())
                    .or_insert((i.duration(), 0));
                entry.1 += h.len();
            }
        }
    }
    let timeline: Vec<Second> = seconds
        .iter()
        .map(|(start, (length, count))| Second {
            t: (*start + *length).as_secs_f64(),
            messages: *count,
            ..Second::default()
        })
        .collect();
    let duration_secs = timeline.last().map_or(0.0, |s| s.t);
    Ok(Report::assemble(Parts {
        runs,
        duration_secs,
        connections: Connections::default(),
        messages: latency.len(),
        bytes_sent: 0,
        bytes_received: 0,
        latency: &latency,
        uncorrected: any_uncorrected.then_some(&uncorrected),
        send_lag: None,
        connect: &new_histogram(),
        udp: None,
        errors: BTreeMap::new(),
        examples: Vec::new(),
        timeline,
        backends: None,
        cpu: None,
    }))
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("a histogram is not base64: {e}"))
}

/// Wall-clock time at `at`, given a pair of readings of both clocks.
pub fn wall_time(at: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    if at <= now {
        wall_now - (now - at)
    } else {
        wall_now + (at - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are value (ms), percentile, cumulative count and 1/(1-p); the last is 100% with
    /// the total; the footer has the mean, the maximum and the count.
    #[test]
    fn hgrm_shape() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1_000).unwrap(); // 1 µs to 1 ms
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0].len(), 4);
        let last = rows.last().unwrap();
        assert_eq!((last[1], last[2]), ("1.000000000000", "1000"));
        let median = rows
            .iter()
            .find(|r| r[1].parse::<f64>().unwrap() >= 0.5)
            .unwrap();
        assert!(
            (median[0].parse::<f64>().unwrap() - 0.5).abs() < 0.001,
            "{median:?}"
        );
        assert!(text.contains("Total count    =         1000]"), "{text}");
    }

    #[test]
    fn uncorrected_names() {
        assert_eq!(
            uncorrected_path(Path::new("/tmp/run.hgrm")),
            Path::new("/tmp/run.uncorrected.hgrm")
        );
        assert_eq!(
            uncorrected_path(Path::new("run")),
            Path::new("run.uncorrected")
        );
    }

    /// A worker's seconds reach the collector, which adds workers' parts of one second.
    #[test]
    fn intervals_add_by_second() {
        let from = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut a = IntervalRecorder::new(from, false, tx.clone());
        let mut b = IntervalRecorder::new(from, false, tx);
        a.record(from, 1_000, 1_000);
        b.record(from + Duration::from_millis(500), 2_000, 2_000);
        a.record(from + Duration::from_millis(1_200), 3_000, 3_000);
        a.finish();
        b.finish();
        let collected = IntervalCollector::new(rx, from).finish(Duration::from_millis(1_500));
        assert_eq!(collected.len(), 2);
        let decode = |i: &Interval| -> Histogram<u64> {
            Deserializer::new()
                .deserialize(&mut i.histogram.as_slice())
                .unwrap()
        };
        assert_eq!(decode(&collected[0]).len(), 2);
        assert_eq!(collected[1].start, Duration::from_secs(1));
        assert_eq!(collected[1].length, Duration::from_millis(500));
        assert_eq!(decode(&collected[1]).len(), 1);
    }
}
