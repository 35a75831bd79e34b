//! Latency distributions as a report carries them: the percentiles read off a histogram
//! (recorded by [`record::histogram`](crate::record::histogram)) and the histogram itself in
//! HdrHistogram's interchange format (V2, deflate-compressed, base64), which the Java, C, Go
//! and Rust libraries all read, so reports from several runs merge exactly.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency distribution: the serialised histogram and the figures read from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest, in microseconds.
    pub min_us: f64,
    /// Mean, in microseconds.
    pub mean_us: f64,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 90th percentile, in microseconds.
    pub p90_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, in microseconds.
    pub p99_9_us: f64,
    /// 99.99th percentile, in microseconds.
    pub p99_99_us: f64,
    /// Largest, in microseconds.
    pub max_us: f64,
    /// The histogram of nanoseconds, HdrHistogram V2 deflate, base64.
    pub histogram: String,
}

impl Latency {
    /// Reads the figures off `h`; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        let q = |p: f64| us(h.value_at_quantile(p));
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut bytes)
            .expect("serialising into memory");
        Some(Latency {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1_000.0,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: us(h.max()),
            histogram: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    /// Decodes the serialised histogram.
    pub fn histogram(&self) -> Result<Histogram<u64>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.histogram)
            .map_err(|e| format!("histogram is not base64: {e}"))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram does not decode: {e:?}"))
    }

    /// The percentile spectrum (percentile, microseconds), for plotting.
    pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
        h.iter_quantiles(1)
            .map(|v| {
                (
                    v.quantile_iterated_to() * 100.0,
                    v.value_iterated_to() as f64 / 1_000.0,
                )
            })
            .collect()
    }
}

/// Adds the histogram inside `l`, if any, to `h`.
pub fn add_serialized(h: &mut Histogram<u64>, l: &Option<Latency>) -> Result<(), String> {
    if let Some(l) = l {
        add_read(h, &l.histogram()?)?;
    }
    Ok(())
}

/// Adds `other`, a histogram read from a file, to `h`, refusing a sum the HdrHistogram
/// format cannot write back: a count beyond `i64::MAX` in one bucket (a measured run never
/// comes near; a doctored or corrupt file can, and the merged report must still be
/// writable). Found by the `merge_hlog` fuzz target, which merges a log with itself.
pub fn add_read(h: &mut Histogram<u64>, other: &Histogram<u64>) -> Result<(), String> {
    h.add(other).map_err(|e| format!("{e:?}"))?;
    let limit = i64::MAX as u64;
    if h.iter_recorded().any(|v| v.count_at_value() > limit) {
        return Err("a histogram count too large to be real (over 2^63 in one bucket)".into());
    }
    Ok(())
}

/// Formats microseconds with a unit that keeps three significant figures readable.
pub fn human_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::histogram::new_histogram;

    /// Two histograms whose sum no file could hold are refused when read, not written out
    /// to fail later (the serialiser refuses a count over 2^63): a merge of a doctored log
    /// with itself found it.
    #[test]
    fn a_sum_too_large_to_write_is_refused() {
        let mut h = new_histogram();
        h.record_n(1_000, i64::MAX as u64 / 2 + 1).unwrap();
        let mut sum = h.clone();
        assert_eq!(
            add_read(&mut sum, &h).map_err(|e| e.contains("too large")),
            Err(true)
        );
        let mut fine = h.clone();
        let mut one = new_histogram();
        one.record(1_000).unwrap();
        assert_eq!(add_read(&mut fine, &one), Ok(()));
    }

    /// A histogram survives the trip through its interchange format.
    #[test]
    fn histogram_round_trip() {
        let mut h = new_histogram();
        for v in [1_000, 2_000, 50_000, 3_000_000] {
            h.record(v).unwrap();
        }
        let l = Latency::from_histogram(&h).unwrap();
        assert_eq!(l.histogram().unwrap(), h);
        assert_eq!(l.count, 4);
        assert!((l.max_us - 3_000.0).abs() / 3_000.0 < 0.001);
    }

    /// Unit choice keeps numbers short.
    #[test]
    fn human_units() {
        assert_eq!(human_us(12.4), "12 µs");
        assert_eq!(human_us(1_500.0), "1.50 ms");
        assert_eq!(human_us(2_500_000.0), "2.50 s");
    }
}
