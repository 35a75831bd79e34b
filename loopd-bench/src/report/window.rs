//! When a measurement ran, on the wall clock: the report's `window`, and the rule by which
//! `merge` decides that the windows of several segments are one run's.
//!
//! A run is timed on the monotonic clock; its window is put on the wall clock once, when it
//! opens, so that reports from several machines can be laid side by side. How far apart
//! those machines' clocks are cannot be known from any one of them: the window says whether
//! the kernel kept its clock synchronised, which is what can be known.
//!
//! **The overlap rule.** Segments of one run measure together: their common window (from
//! the latest start to the earliest end) must cover at least [`MIN_OVERLAP`] of the
//! shortest window. Starts that differ by a few milliseconds (the start lags, and the
//! offsets of synchronised clocks) pass easily; a segment that ran a minute after the others,
//! or with another `-d`, does not, and adding its rate to theirs would describe load that
//! never happened at once.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The common window must cover this share of the shortest window.
pub const MIN_OVERLAP: f64 = 0.9;

/// When a measurement ran, by the wall clock of the machine that made it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// When the measurement began (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub start: SystemTime,
    /// When it ended.
    #[serde(with = "rfc3339")]
    pub end: SystemTime,
    /// `--start-at`: how late the run began its schedule, in seconds (its first connection
    /// opened after it was due; the latest of its worker threads; merged, the largest).
    #[serde(default)]
    pub start_lag_secs: Option<f64>,
    /// Whether the kernel kept the clock synchronised (`adjtimex`); `None` where unknown;
    /// merged, whether every clock was.
    #[serde(default)]
    pub clock_synchronised: Option<bool>,
}

impl Window {
    /// A window of `secs` seconds from `start`.
    pub fn new(start: SystemTime, secs: f64) -> Window {
        Window {
            start,
            end: start + Duration::from_secs_f64(secs.max(0.0)),
            start_lag_secs: None,
            clock_synchronised: None,
        }
    }

    /// Its length in seconds.
    pub fn secs(&self) -> f64 {
        between(self.start, self.end)
    }
}

/// Seconds from `a` to `b` (negative if `b` is earlier).
pub fn between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The common part of several windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Overlap {
    /// The latest start.
    pub start: SystemTime,
    /// The earliest end.
    pub end: SystemTime,
    /// The shortest window's length, in seconds.
    pub shortest_secs: f64,
}

impl Overlap {
    /// The common part of `windows` (`None` for none).
    pub fn of<'a>(windows: impl IntoIterator<Item = &'a Window>) -> Option<Overlap> {
        windows.into_iter().fold(None, |o: Option<Overlap>, w| {
            Some(match o {
                None => Overlap {
                    start: w.start,
                    end: w.end,
                    shortest_secs: w.secs(),
                },
                Some(o) => Overlap {
                    start: o.start.max(w.start),
                    end: o.end.min(w.end),
                    shortest_secs: o.shortest_secs.min(w.secs()),
                },
            })
        })
    }

    /// Its length in seconds: zero when the windows do not all meet.
    pub fn secs(&self) -> f64 {
        between(self.start, self.end).max(0.0)
    }

    /// Whether it covers at least [`MIN_OVERLAP`] of the shortest window.
    pub fn enough(&self) -> bool {
        self.secs() >= MIN_OVERLAP * self.shortest_secs
    }
}

/// A `SystemTime` as an RFC 3339 UTC string with nanoseconds, as serde reads and writes it.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_secs_f64(secs)
    }

    fn window(start: f64, secs: f64) -> Window {
        Window::new(at(start), secs)
    }

    /// Starts a few milliseconds apart overlap almost wholly; a tenth of the shortest
    /// window apart is the limit; disjoint windows have no overlap at all.
    #[test]
    fn overlap_rule() {
        let close = [window(0.0, 10.0), window(0.003, 10.0), window(0.001, 10.0)];
        let o = Overlap::of(&close).unwrap();
        assert_eq!((o.start, o.end), (at(0.003), at(10.0)));
        assert!((o.secs() - 9.997).abs() < 1e-9 && o.enough());

        assert!(Overlap::of(&[window(0.0, 10.0), window(1.0, 10.0)])
            .unwrap()
            .enough());
        assert!(!Overlap::of(&[window(0.0, 10.0), window(1.001, 10.0)])
            .unwrap()
            .enough());
        // The shortest window is the measure: a 5 s window inside a 60 s one is covered.
        assert!(Overlap::of(&[window(0.0, 60.0), window(20.0, 5.0)])
            .unwrap()
            .enough());
        let apart = Overlap::of(&[window(0.0, 10.0), window(30.0, 10.0)]).unwrap();
        assert_eq!(apart.secs(), 0.0);
        assert!(!apart.enough());
        assert!(Overlap::of(&[]).is_none());
    }

    /// The JSON form is RFC 3339 with nanoseconds, and reads back to the same instant.
    #[test]
    fn json_round_trip() {
        let mut w = window(0.000_001_5, 2.5);
        w.start_lag_secs = Some(0.000_2);
        w.clock_synchronised = Some(true);
        let text = serde_json::to_string(&w).unwrap();
        assert!(
            text.contains("\"start\":\"2027-01-15T08:00:00.000001500Z\""),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Window>(&text).unwrap(), w);
    }
}
