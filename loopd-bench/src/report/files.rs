//! The standard HdrHistogram files, for the tools that already read them.
//!
//! * **`.hgrm`** (`--hgrm PATH`): the percentile distribution as HdrHistogram's
//!   `outputPercentileDistribution` prints it and wrk2 writes it — value, percentile, total
//!   count and `1/(1-percentile)` per row, five rows per halving of the distance to 100%,
//!   then the mean, deviation, maximum and count. Values in milliseconds, which is what
//!   HdrHistogram's plotter expects. In open loop the uncorrected distribution goes beside it
//!   (`PATH` with `.uncorrected` before the extension). Over TLS, the handshake latencies go
//!   beside it too, `.tls-full` and `.tls-resumed`.
//! * **`.hlog`** (`--hlog PATH`): an HdrHistogram interval log — one histogram per second of
//!   the measurement, tagged `latency` (and `uncorrected` in open loop) — written and read
//!   with the hdrhistogram crate's interval-log support. Logs from several machines are
//!   merged by `loopd-bench merge` as they are: the histograms add.
//!
//! The seconds of an interval log are recorded while the run goes
//! ([`record::intervals`](crate::record::intervals)); this module writes and reads them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::latency::add_read;
use super::{Connections, Parts, Report, Window};
use crate::config::RecordedConfig;
use crate::record::histogram::new_histogram;
use crate::record::intervals::UNCORRECTED_TAG;
use crate::record::Second;

/// Nanoseconds per millisecond: `.hgrm` values and `.hlog` maxima are in milliseconds.
const NANOS_PER_MS: f64 = 1e6;
/// Rows per halving of the distance to 100%, as wrk2 prints them.
const TICKS_PER_HALF: u32 = 5;
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
    companion(path, "uncorrected")
}

/// `run.hgrm` → `run.TAG.hgrm`.
pub fn companion(path: &Path, tag: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    path.with_file_name(name)
}

/// Writes `report`'s latency (and, in open loop, its uncorrected latency) as `.hgrm` files;
/// over TLS, each kind of handshake's latency beside them (`.tls-full`, `.tls-resumed`).
pub fn write_hgrm_files(report: &Report, path: &Path) -> Result<(), String> {
    let write = |latency: &Option<super::Latency>, path: &Path| -> Result<(), String> {
        let Some(l) = latency else {
            return Ok(());
        };
        let mut out = Vec::new();
        write_hgrm(&l.histogram()?, &mut out).map_err(|e| e.to_string())?;
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
    };
    if report.latency.is_none() && report.tls.is_none() {
        return Err("--hgrm: this run has no round-trip latency to write".into());
    }
    write(&report.latency, path)?;
    write(&report.uncorrected_latency, &uncorrected_path(path))?;
    if let Some(t) = &report.tls {
        write(&t.handshake_latency.full, &companion(path, "tls-full"))?;
        write(
            &t.handshake_latency.resumed,
            &companion(path, "tls-resumed"),
        )?;
    }
    Ok(())
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
    let mut start = None;
    for entry in IntervalLogIterator::new(text.as_bytes()) {
        let i = match entry.map_err(|e| format!("{e:?}"))? {
            LogEntry::Interval(i) => i,
            // The log starts where the measurement did (see `write_hlog`).
            LogEntry::StartTime(t) => {
                start = Some(SystemTime::UNIX_EPOCH + t);
                continue;
            }
            LogEntry::BaseTime(_) => continue,
        };
        let bytes = base64_decode(i.encoded_histogram())?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("a histogram does not decode: {e:?}"))?;
        match i.tag().map(|t| t.as_str()) {
            Some(UNCORRECTED_TAG) => {
                any_uncorrected = true;
                add_read(&mut uncorrected, &h)?;
            }
            _ => {
                add_read(&mut latency, &h)?;
                let entry = seconds
                    .entry(i.start_timestamp())
                    .or_insert((i.duration(), 0));
                entry.1 = entry.1.saturating_add(h.len());
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
    let mut report = Report::assemble(Parts {
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
        tls: None,
        http_status: None,
    });
    report.window = start.map(|t| Window::new(t, duration_secs));
    Ok(report)
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
}
