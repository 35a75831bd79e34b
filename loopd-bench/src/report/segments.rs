//! `merge` of the segments of one run (`--segment I/N`), told apart from a merge of unrelated
//! runs.
//!
//! **Recognising a run.** Reports are segments of one run when every one of them carries a
//! segment, they were made with the same settings — everything but what may differ from one
//! machine to the next: threads, source addresses, where CPU time was read — and no segment
//! comes twice ([`recognise`]). Segments not given are named: the merge still combines what
//! it has (to look at), and its verdict fails, since the figures are not the whole run's.
//! Reports without segments merge as before, labelled as unrelated runs; a mixture of both is
//! refused rather than guessed at.
//!
//! **A true aggregate.** The segments' windows must overlap (the rule in
//! [`window`](super::window)); the merged window is their common part. Histograms and counts
//! add as in any merge. The rates are the sum of the segments' rates, each measured over
//! its own window — the rate of the whole run over the common window if each segment's rate
//! held steady across its own, which the overlap rule makes a small assumption — and the
//! same for each backend. The per-second timelines are added second by second from the
//! start of the common window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tls::ByKind;
use super::window::{between, Overlap, Window, MIN_OVERLAP};
use super::{Rates, Report, Second};
use crate::config::RecordedConfig;

/// What a merged report combines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Merged {
    /// Segments of one run, aggregated over their common window (the report's `window`
    /// and `duration_secs`).
    Segments {
        /// How many segments make the run.
        count: u32,
        /// The segments merged.
        present: Vec<u32>,
        /// The segments of the run that were not given: the figures are not the whole run's.
        missing: Vec<u32>,
        /// The shortest of the segments' windows, in seconds.
        shortest_secs: f64,
    },
    /// Runs that are not segments of one run: counts and histograms add, and the rates are
    /// the totals over the longest duration — the rate of their load together only if they
    /// ran at the same time.
    Unrelated {
        /// How many runs.
        runs: usize,
    },
}

/// Settings that may differ between the machines of one run.
const PER_MACHINE: [&str; 5] = [
    "threads",
    "sources",
    "server_metrics",
    "system_cpu",
    "segment",
];

/// What the reports given to `merge` are.
#[derive(Debug, PartialEq)]
pub enum Recognised {
    /// Not segments: merged as concurrent runs and labelled unrelated.
    Unrelated,
    /// Segments of one run.
    Segments(Found),
}

/// The segments of a run found among the reports.
#[derive(Debug, PartialEq)]
pub struct Found {
    /// How many make the run.
    pub count: u32,
    /// The ones given, in order.
    pub present: Vec<u32>,
    /// The ones missing, in order.
    pub missing: Vec<u32>,
    /// The common part of their windows.
    pub overlap: Overlap,
}

/// Tells segments of one run from unrelated runs, and refuses what is neither: segments of
/// different runs, a segment given twice, segments that did not measure together, or
/// segments mixed with unrelated runs. Reports are named by their place in `reports`
/// (from 1), which is the order of the files on the command line.
pub fn recognise(reports: &[Report]) -> Result<Recognised, String> {
    let segmented = |r: &Report| r.runs.iter().any(|c| c.segment.is_some());
    let Some(first) = reports.iter().position(segmented) else {
        return Ok(Recognised::Unrelated);
    };
    if let Some(plain) = reports
        .iter()
        .position(|r| !r.runs.iter().all(|c| c.segment.is_some()))
    {
        return Err(format!(
            "report {} is a segment of a run and report {} is not: merge the segments of a \
             run together, and unrelated runs together",
            first + 1,
            plain + 1
        ));
    }
    let reference = &reports[first].runs[0];
    let count = reference.segment.expect("a segment").count;
    let settings = run_settings(reference);
    let mut given: BTreeMap<u32, usize> = BTreeMap::new();
    for (k, r) in reports.iter().enumerate() {
        for c in &r.runs {
            let s = c.segment.expect("checked above");
            if s.count != count {
                return Err(format!(
                    "report {} is segment {s} and report 1 is one of {count}: not one run",
                    k + 1
                ));
            }
            if let Some(what) = difference(&settings, &run_settings(c)) {
                return Err(format!(
                    "report {} is not a segment of the same run as report 1: {what}",
                    k + 1
                ));
            }
            if let Some(other) = given.insert(s.index, k) {
                return Err(format!(
                    "segment {s} is in report {} and in report {}: give each segment once",
                    other + 1,
                    k + 1
                ));
            }
        }
    }
    let windows = reports
        .iter()
        .enumerate()
        .map(|(k, r)| {
            r.window.ok_or_else(|| {
                format!(
                    "report {} has no measurement window (the run never reached its \
                     measurement): its segment cannot be placed beside the others",
                    k + 1
                )
            })
        })
        .collect::<Result<Vec<Window>, String>>()?;
    let overlap = Overlap::of(&windows).expect("at least one report");
    if !overlap.enough() {
        let each: Vec<String> = reports
            .iter()
            .zip(&windows)
            .map(|(r, w)| {
                let segments: Vec<String> = r
                    .runs
                    .iter()
                    .filter_map(|c| c.segment.map(|s| s.to_string()))
                    .collect();
                format!(
                    "{} from {} for {:.3} s",
                    segments.join("+"),
                    humantime::format_rfc3339_millis(w.start),
                    w.secs()
                )
            })
            .collect();
        return Err(format!(
            "the segments' measurement windows overlap for {:.3} s, less than {:.0}% of the \
             shortest ({:.3} s): they did not measure together ({}); start them with one \
             --start-at",
            overlap.secs(),
            MIN_OVERLAP * 100.0,
            overlap.shortest_secs,
            each.join(", ")
        ));
    }
    Ok(Recognised::Segments(Found {
        count,
        present: given.keys().copied().collect(),
        missing: (0..count).filter(|i| !given.contains_key(i)).collect(),
        overlap,
    }))
}

/// The settings of a run that all its segments share, as JSON.
fn run_settings(c: &RecordedConfig) -> Value {
    let mut v = serde_json::to_value(c).expect("settings serialise");
    if let Value::Object(map) = &mut v {
        for key in PER_MACHINE {
            map.remove(key);
        }
    }
    v
}

/// The first setting in which `b` differs from `a`, described.
fn difference(a: &Value, b: &Value) -> Option<String> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else {
        return (a != b).then(|| "the settings differ".into());
    };
    a.keys().chain(b.keys()).find_map(|k| {
        let (x, y) = (
            a.get(k).unwrap_or(&Value::Null),
            b.get(k).unwrap_or(&Value::Null),
        );
        (x != y).then(|| format!("its {k} is {y}, report 1's is {x}"))
    })
}

/// `r` with its timeline counted from the start of the common window, by whole seconds:
/// starts a few milliseconds apart leave it as it is.
pub fn aligned(r: &Report, found: &Found) -> Report {
    let early = r
        .window
        .map_or(0.0, |w| between(w.start, found.overlap.start));
    let skip = early.round().max(0.0) as usize;
    let mut r = r.clone();
    r.timeline = r
        .timeline
        .iter()
        .skip(skip)
        .map(|s| Second {
            t: s.t - skip as f64,
            ..*s
        })
        .collect();
    r
}

/// Turns `merged`, the counts and histograms of the segments `found` in `reports` added up,
/// into their aggregate: the common window, the rates added, the merge described.
pub fn finish(merged: &mut Report, reports: &[Report], found: Found) {
    let overlap = found.overlap;
    merged.duration_secs = overlap.secs();
    merged.rates = Rates::default();
    let mut per_backend: BTreeMap<&str, Rates> = BTreeMap::new();
    if let Some(t) = &mut merged.tls {
        t.handshakes_per_sec = ByKind::default();
    }
    for r in reports {
        add_rates(&mut merged.rates, &r.rates);
        if let (Some(sum), Some(t)) = (&mut merged.tls, &r.tls) {
            sum.handshakes_per_sec.full += t.handshakes_per_sec.full;
            sum.handshakes_per_sec.resumed += t.handshakes_per_sec.resumed;
        }
        for b in r.backends.iter().flatten() {
            add_rates(per_backend.entry(&b.server_id).or_default(), &b.rates);
        }
    }
    for b in merged.backends.iter_mut().flatten() {
        b.rates = per_backend
            .get(b.server_id.as_str())
            .copied()
            .unwrap_or_default();
    }
    let windows = reports.iter().filter_map(|r| r.window);
    merged.window = Some(Window {
        start: overlap.start,
        end: overlap.end.max(overlap.start),
        start_lag_secs: windows
            .clone()
            .filter_map(|w| w.start_lag_secs)
            .reduce(f64::max),
        clock_synchronised: windows
            .map(|w| w.clock_synchronised)
            .reduce(|a, b| match (a, b) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
            .flatten(),
    });
    merged.merged = Some(Merged::Segments {
        count: found.count,
        present: found.present,
        missing: found.missing,
        shortest_secs: overlap.shortest_secs,
    });
}

/// Adds rates measured at the same time.
fn add_rates(sum: &mut Rates, r: &Rates) {
    sum.messages_per_sec += r.messages_per_sec;
    sum.mib_per_sec_sent += r.mib_per_sec_sent;
    sum.mib_per_sec_received += r.mib_per_sec_received;
    let add = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    sum.connects_per_sec = add(sum.connects_per_sec, r.connects_per_sec);
    sum.handshakes_per_sec = add(sum.handshakes_per_sec, r.handshakes_per_sec);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config::{BenchConfig, Segment};
    use crate::record::Tally;

    /// The start of every test window.
    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_secs_f64(secs)
    }

    /// The settings of a 40-connection open-loop run at 4000 msg/s, per backend.
    fn run() -> BenchConfig {
        let mut c = BenchConfig::new("127.0.0.1:7".parse().unwrap());
        c.connections = 40;
        c.rate = Some(4_000.0);
        c.per_backend = true;
        c
    }

    /// Segment `i` of `n` of [`run`]: `messages` over `secs` from `start`, each taking
    /// `latency_us`, split evenly over backends `a` and `b`.
    fn segment(i: u32, n: u32, start: f64, secs: f64, messages: u64, latency_us: u64) -> Report {
        let mut cfg = run();
        cfg.segment = Some(Segment::new(i, n).unwrap());
        let mut tally = Tally::new();
        tally.messages = messages;
        tally.established = cfg.own_connections() as u64;
        for k in 0..messages {
            tally.latency.record(latency_us * 1_000).unwrap();
            let b = tally.backend(if k % 2 == 0 { "a" } else { "b" });
            tally.backends[b].messages += 1;
            tally.backends[b]
                .latency
                .record(latency_us * 1_000)
                .unwrap();
        }
        for id in ["a", "b"] {
            let b = tally.backend(id);
            tally.backends[b].connections = tally.established / 2;
        }
        let timeline = (1..=secs as u64)
            .map(|t| Second {
                t: t as f64,
                messages: messages / secs as u64,
                ..Second::default()
            })
            .collect();
        let mut r = Report::new(RecordedConfig::from(&cfg), secs, &tally, timeline);
        r.window = Some(Window {
            start_lag_secs: Some(0.000_1 * f64::from(i + 1)),
            clock_synchronised: Some(true),
            ..Window::new(at(start), secs)
        });
        r
    }

    fn found(reports: &[Report]) -> Found {
        match recognise(reports).unwrap() {
            Recognised::Segments(f) => f,
            Recognised::Unrelated => panic!("not recognised as segments"),
        }
    }

    /// Segments of one run are recognised, whatever their order and their machines' own
    /// settings (threads); the ones not given are named, and the merge of what was given
    /// fails its verdict.
    #[test]
    fn missing_segments_are_named() {
        let mut reports = vec![
            segment(3, 4, 0.0, 10.0, 1_000, 100),
            segment(0, 4, 0.0, 10.0, 1_000, 100),
            segment(1, 4, 0.0, 10.0, 1_000, 100),
        ];
        reports[1].runs[0].threads = 4;
        let f = found(&reports);
        assert_eq!(
            (f.count, f.present.clone(), f.missing.clone()),
            (4, vec![0, 1, 3], vec![2])
        );
        let merged = Report::merge(&reports).unwrap();
        let verdict = merged.verdict().unwrap_err();
        assert!(verdict.contains("segment 2 of 4 missing"), "{verdict}");
        let text = merged.to_string();
        assert!(
            text.contains("3 of 4 segments (0, 1, 3); MISSING 2"),
            "{text}"
        );

        reports.push(segment(2, 4, 0.0, 10.0, 1_000, 100));
        let whole = Report::merge(&reports).unwrap();
        assert_eq!(whole.verdict(), Ok(()));
        assert_eq!(whole.connections.requested, 40, "the shares add up to -c");
    }

    /// A segment given twice, segments of another run (another rate, another number of
    /// segments), and segments mixed with plain runs are each refused with the reason.
    #[test]
    fn what_is_not_one_run_is_refused() {
        let a = segment(0, 2, 0.0, 10.0, 1_000, 100);
        let twice = recognise(&[a.clone(), a.clone()]).unwrap_err();
        assert!(
            twice.contains("segment 0/2 is in report 1 and in report 2"),
            "{twice}"
        );

        let mut faster = segment(1, 2, 0.0, 10.0, 1_000, 100);
        faster.runs[0].rate = Some(8_000.0);
        let other = recognise(&[a.clone(), faster]).unwrap_err();
        assert!(
            other.contains("its rate is 8000.0, report 1's is 4000.0"),
            "{other}"
        );

        let of_three = recognise(&[a.clone(), segment(1, 3, 0.0, 10.0, 1, 100)]).unwrap_err();
        assert!(
            of_three.contains("segment 1/3 and report 1 is one of 2"),
            "{of_three}"
        );

        let mut plain = segment(1, 2, 0.0, 10.0, 1_000, 100);
        plain.runs[0].segment = None;
        let mixed = recognise(&[a, plain.clone()]).unwrap_err();
        assert!(mixed.contains("report 2 is not"), "{mixed}");

        let unrelated = Report::merge(&[plain.clone(), plain]).unwrap();
        assert_eq!(unrelated.merged, Some(Merged::Unrelated { runs: 2 }));
        assert!(unrelated.to_string().contains("2 unrelated runs merged"));
    }

    /// Windows a tenth of the shortest apart are one run; further apart, or without a
    /// window at all, they are refused, with each segment's window in the message.
    #[test]
    fn windows_must_overlap() {
        let first = segment(0, 2, 0.0, 10.0, 1_000, 100);
        assert!(recognise(&[first.clone(), segment(1, 2, 1.0, 10.0, 1_000, 100)]).is_ok());
        let late = recognise(&[first.clone(), segment(1, 2, 1.5, 10.0, 1_000, 100)]).unwrap_err();
        assert!(
            late.contains("overlap for 8.500 s, less than 90% of the shortest (10.000 s)")
                && late.contains("1/2 from 2027-01-15T08:00:01.500Z for 10.000 s"),
            "{late}"
        );
        let mut never = segment(1, 2, 0.0, 10.0, 0, 100);
        never.window = None;
        let e = recognise(&[first, never]).unwrap_err();
        assert!(e.contains("report 2 has no measurement window"), "{e}");
    }

    /// Segments of a TLS run: handshake rates add like message rates, over the common
    /// window, overall and per kind.
    #[test]
    fn tls_handshake_rates_add_over_the_common_window() {
        use crate::record::tls::TlsTally;
        use crate::report::TlsReport;
        let with_tls = |mut r: Report, full: u64, resumed: u64| {
            let mut t = TlsTally::new();
            (t.full, t.resumed) = (full, resumed);
            let tls = TlsReport::new(&t, r.duration_secs, 50.0);
            r.rates.handshakes_per_sec = Some(tls.per_sec());
            r.tls = Some(tls);
            r
        };
        let reports = [
            with_tls(segment(0, 2, 0.0, 10.0, 1_000, 100), 300, 200),
            with_tls(segment(1, 2, 0.002, 10.0, 1_200, 300), 100, 400),
        ];
        let m = Report::merge(&reports).unwrap();
        let t = m.tls.as_ref().unwrap();
        assert_eq!((t.handshakes.full, t.handshakes.resumed), (400, 600));
        assert!((t.handshakes_per_sec.full - 40.0).abs() < 1e-9, "{t:?}");
        assert!((t.handshakes_per_sec.resumed - 60.0).abs() < 1e-9, "{t:?}");
        let all = m.rates.handshakes_per_sec.unwrap();
        assert!((all - 100.0).abs() < 1e-9, "{:?}", m.rates);
    }

    /// The aggregate: counts and histograms add, the rates are the segments' rates added,
    /// per backend too, over the common window; the timelines add from its start; the
    /// window carries the largest start lag. It survives its JSON form.
    #[test]
    fn the_aggregate_adds_rates_over_the_common_window() {
        let reports = [
            segment(0, 2, 0.0, 10.0, 1_000, 100),
            segment(1, 2, 0.002, 10.0, 1_200, 300),
        ];
        let m = Report::merge(&reports).unwrap();
        assert_eq!(m.messages, 2_200);
        let latency = m.latency.as_ref().unwrap();
        assert_eq!(latency.count, 2_200);
        assert!(
            latency.p50_us > 250.0,
            "1,200 of 2,200 took 300 µs: {latency:?}"
        );
        assert!(
            (m.duration_secs - 9.998).abs() < 1e-6,
            "{}",
            m.duration_secs
        );
        assert!(
            (m.rates.messages_per_sec - 220.0).abs() < 1e-9,
            "{:?}",
            m.rates
        );
        let backends = m.backends.as_ref().unwrap();
        assert_eq!(backends.len(), 2);
        for b in backends {
            assert_eq!((b.messages, b.connections), (1_100, 20), "{b:?}");
            assert!((b.rates.messages_per_sec - 110.0).abs() < 1e-9, "{b:?}");
        }
        assert_eq!(m.timeline.len(), 10);
        assert_eq!(m.timeline[0].messages, 100 + 120);
        let w = m.window.unwrap();
        assert_eq!((w.start, w.end), (at(0.002), at(10.0)));
        assert_eq!(
            (w.start_lag_secs, w.clock_synchronised),
            (Some(0.000_2), Some(true))
        );
        let text = m.to_string();
        assert!(
            text.contains("2 of 2 segments (0, 1); rates added over their common window, 9.998 s"),
            "{text}"
        );
        assert!(
            text.contains("open loop at 4000 msg/s"),
            "the whole run's rate: {text}"
        );
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(r#""merged":{"kind":"segments","count":2"#),
            "{json}"
        );
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.merged, m.merged);
        assert_eq!(back.window, m.window);
    }

    /// A segment that started a few seconds early (allowed when the windows still overlap)
    /// has its timeline counted from the common start.
    #[test]
    fn timelines_line_up_by_the_wall_clock() {
        let reports = [
            segment(0, 2, 0.0, 30.0, 3_000, 100),
            segment(1, 2, 2.0, 30.0, 6_000, 100),
        ];
        let m = Report::merge(&reports).unwrap();
        // Segment 0's first two seconds fall before the common window.
        assert_eq!(m.timeline[0].messages, 100 + 200);
        assert_eq!(m.timeline[0].t, 1.0);
    }

    /// A single segment's summary names its share of the run.
    #[test]
    fn a_segment_names_its_share() {
        let r = segment(1, 3, 0.0, 10.0, 100, 100);
        let text = r.to_string();
        assert!(
            text.contains("segment      1/3: 13 of the 40 connections, 1300 of the 4000 msg/s"),
            "{text}"
        );
        assert!(
            text.contains("started 200 µs late; clock synchronised"),
            "{text}"
        );
        assert_eq!(r.connections.requested, 13);
    }
}
