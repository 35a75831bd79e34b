//! One latency histogram per second (`--hlog`), recorded without slowing the workers.
//!
//! A worker records each measured message into its current second's histogram and hands it
//! to the coordinator when the second ends ([`IntervalRecorder`]); the coordinator adds the
//! workers' histograms of each second and keeps them compressed ([`IntervalCollector`]), so
//! an hour-long run holds kilobytes, not a histogram per second. Writing them out as an
//! interval log is the report's job ([`report::files`](crate::report::files)).

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::histogram::new_histogram;

/// The tag of the corrected latency in an interval log.
pub const LATENCY_TAG: &str = "latency";
/// The tag of the uncorrected latency (open loop).
pub const UNCORRECTED_TAG: &str = "uncorrected";

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

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

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
