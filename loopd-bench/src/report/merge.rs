//! Combining reports: runs made at the same time from several machines ([`Report::merge`]:
//! the segments of one run, see [`segments`], or unrelated runs), and the iterations of one
//! run ([`Report::sequence`]). Counts and histograms add; the percentiles of the result are
//! those of all samples together, never an average of percentiles.

use std::collections::BTreeMap;

use super::latency::add_serialized;
use super::segments::{self, Merged, Recognised};
use super::{Connections, Parts, Report, Second, Window};
use crate::cpu::{Cost, CpuCosts};
use crate::record::histogram::new_histogram;
use crate::record::intervals::Interval;
use crate::record::tally::MAX_EXAMPLES;
use crate::record::tls::TlsTally;
use crate::record::{BackendTally, UdpCounts};

impl Report {
    /// Combines the reports of runs made at the same time (on several machines) into the
    /// report of one run with all their connections: counts and histograms add, and the
    /// timelines add second by second. Segments of one run make a true aggregate over their
    /// common window, with their rates added; any other runs are labelled unrelated, with
    /// the longest duration as theirs.
    pub fn merge(reports: &[Report]) -> Result<Report, String> {
        match segments::recognise(reports)? {
            Recognised::Segments(found) => {
                let aligned: Vec<Report> = reports
                    .iter()
                    .map(|r| segments::aligned(r, &found))
                    .collect();
                let mut merged = Report::combine(&aligned, Combine::Concurrent)?;
                segments::finish(&mut merged, reports, found);
                Ok(merged)
            }
            Recognised::Unrelated => {
                let mut merged = Report::combine(reports, Combine::Concurrent)?;
                merged.merged = Some(Merged::Unrelated {
                    runs: merged.runs.len(),
                });
                Ok(merged)
            }
        }
    }

    /// Combines the reports of runs made one after another (the iterations of one run) into
    /// one: counts, histograms and CPU time add, durations add, and the timelines follow
    /// each other.
    pub fn sequence(reports: &[Report]) -> Result<Report, String> {
        Report::combine(reports, Combine::Sequential)
    }

    fn combine(reports: &[Report], how: Combine) -> Result<Report, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut latency = new_histogram();
        let mut uncorrected = new_histogram();
        let mut send_lag = new_histogram();
        let mut connect = new_histogram();
        let mut any_uncorrected = false;
        let mut connections = Connections::default();
        let (mut messages, mut bytes_sent, mut bytes_received) = (0, 0, 0);
        let mut udp: Option<UdpCounts> = None;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut examples = Vec::new();
        let mut timeline: Vec<Second> = Vec::new();
        let mut runs = Vec::new();
        let mut duration_secs: f64 = 0.0;
        let mut backends: Option<Vec<BackendTally>> = None;
        let mut cpu: Option<CpuCosts> = None;
        let mut intervals = Vec::new();
        let mut lead_in: Vec<Second> = Vec::new();
        let mut lead_in_secs: f64 = 0.0;
        let mut tls: Option<TlsTally> = None;
        let mut http_status: Option<BTreeMap<u16, u64>> = None;
        for r in reports {
            if r.mode() != first.mode() {
                return Err("cannot merge runs of different modes".into());
            }
            add_serialized(&mut latency, &r.latency)?;
            add_serialized(&mut uncorrected, &r.uncorrected_latency)?;
            add_serialized(&mut send_lag, &r.send_lag)?;
            add_serialized(&mut connect, &r.connect_latency)?;
            any_uncorrected |= r.uncorrected_latency.is_some();
            connections.add(&r.connections);
            messages += r.messages;
            bytes_sent += r.bytes_sent;
            bytes_received += r.bytes_received;
            if let Some(u) = &r.udp {
                udp.get_or_insert_with(UdpCounts::default).add(u);
            }
            for (k, n) in &r.errors {
                *errors.entry(k.clone()).or_default() += n;
            }
            let room = MAX_EXAMPLES.saturating_sub(examples.len());
            examples.extend(r.error_examples.iter().take(room).cloned());
            match how {
                Combine::Concurrent => {
                    for (i, s) in r.timeline.iter().enumerate() {
                        if timeline.len() <= i {
                            timeline.push(Second::default());
                        }
                        timeline[i].add(s);
                    }
                    // Lead-ins end together, where the measurements begin.
                    let n = r.lead_in.len();
                    if lead_in.len() < n {
                        // Placeholders take their time from the run that has them.
                        let empty = Second {
                            t: f64::NEG_INFINITY,
                            ..Second::default()
                        };
                        let mut longer = vec![empty; n - lead_in.len()];
                        longer.append(&mut lead_in);
                        lead_in = longer;
                    }
                    let skip = lead_in.len() - n;
                    for (sum, s) in lead_in[skip..].iter_mut().zip(&r.lead_in) {
                        sum.add(s);
                    }
                    lead_in_secs = lead_in_secs.min(r.lead_in_secs);
                    runs.extend(r.runs.iter().cloned());
                    duration_secs = duration_secs.max(r.duration_secs);
                }
                Combine::Sequential => {
                    // Each iteration's seconds, placed after the first one's start.
                    if let (Some(first), Some(this)) = (first.started, r.started) {
                        let offset = this.duration_since(first).unwrap_or_default();
                        intervals.extend(r.intervals.iter().map(|i| Interval {
                            start: i.start + offset,
                            ..i.clone()
                        }));
                    }
                    let offset = duration_secs;
                    timeline.extend(r.timeline.iter().map(|s| Second {
                        t: s.t + offset,
                        ..*s
                    }));
                    if runs.is_empty() {
                        runs.extend(r.runs.iter().cloned());
                        lead_in = r.lead_in.clone();
                        lead_in_secs = r.lead_in_secs;
                    }
                    duration_secs += r.duration_secs;
                }
            }
            if let Some(c) = &r.cpu {
                let total = cpu.get_or_insert_with(CpuCosts::default);
                let add = |sum: &mut Option<Cost>, part: &Option<Cost>| {
                    if let Some(p) = part {
                        let sum = sum.get_or_insert_with(|| Cost::new(p.method.clone(), 0.0, 0));
                        sum.cpu_seconds += p.cpu_seconds;
                    }
                };
                add(&mut total.client, &c.client);
                // A server's or the machine's CPU is read by every concurrent run: added,
                // it would be counted once per run. One after another, it adds up.
                if how == Combine::Sequential {
                    add(&mut total.server, &c.server);
                    add(&mut total.system, &c.system);
                }
                total.unavailable.extend(c.unavailable.iter().cloned());
            }
            if let Some(statuses) = &r.http_status {
                let total = http_status.get_or_insert_with(BTreeMap::new);
                for (&status, &n) in statuses {
                    *total.entry(status).or_default() += n;
                }
            }
            if let Some(t) = &r.tls {
                let part = TlsTally::try_from(t)?;
                tls.get_or_insert_with(TlsTally::new).absorb(&part);
            }
            if let Some(b) = &r.backends {
                let parts = backends.get_or_insert_with(Vec::new);
                for report in b {
                    parts.push(BackendTally::try_from(report)?);
                }
            }
        }
        let handshakes = tls.as_ref().map(|t| t.full + t.resumed);
        let mut combined = Report::assemble(Parts {
            runs,
            duration_secs,
            connections,
            messages,
            bytes_sent,
            bytes_received,
            latency: &latency,
            uncorrected: any_uncorrected.then_some(&uncorrected),
            send_lag: any_uncorrected.then_some(&send_lag),
            connect: &connect,
            udp,
            errors,
            examples,
            timeline,
            backends,
            tls,
            http_status,
            cpu: cpu.map(|c| {
                let per = |c: Option<Cost>| {
                    c.map(|c| {
                        Cost::new(c.method, c.cpu_seconds, messages).per_handshake(handshakes)
                    })
                };
                CpuCosts {
                    client: per(c.client),
                    server: per(c.server),
                    system: per(c.system),
                    unavailable: c.unavailable,
                }
            }),
        });
        if how == Combine::Sequential {
            combined.started = first.started;
            combined.intervals = intervals;
            // One iteration is the run itself; a series spans its iterations' windows.
            let last = reports.last().and_then(|r| r.window);
            combined.window = first
                .window
                .zip(last)
                .map(|(a, b)| Window { end: b.end, ..a });
        }
        combined.lead_in = lead_in;
        combined.lead_in_secs = lead_in_secs;
        Ok(combined)
    }
}

/// How the runs being combined relate in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Combine {
    /// At the same time, from several machines.
    Concurrent,
    /// One after another: the iterations of a run.
    Sequential,
}
