//! `--segment I/N`: this process's part of a run that N processes (on several machines, or
//! the pods of a Kubernetes Indexed Job) make together.
//!
//! `-c` and `--rate` stay the totals of the whole run. Segment `I` of `N` owns the connection
//! ids `I, I+N, I+2N, …` below `-c`: every id belongs to exactly one segment, so the messages
//! of the run — each a function of its connection id and sequence number
//! ([`payload`](crate::payload)) — are all different, whichever segment sent them, and a
//! merged verification is as exact as one process's. Everything else follows from the ids
//! without the segment being mentioned again:
//!
//! * the open-loop schedule gives connection `id` the slots `t0 + id/R + k·C/R` of the whole
//!   run ([`OpenLoop`](crate::schedule::OpenLoop)), so the segments together send the one
//!   process's schedule exactly, each at `R × share / C`;
//! * a counted run (`-n`) gives each connection its [`quota`](crate::schedule::quota) of
//!   the total, so the segments' counts add up to `-n`;
//! * `--ramp` opens connection `id` at `id / ramp`, so together they ramp at the total rate.
//!
//! The ids are dealt in stride rather than in blocks so that each segment's connections are
//! spread evenly over the open-loop period and the ramp: a block of consecutive ids would
//! send all its messages in one part of every period and open all its connections in one
//! part of the ramp. The shares are [`connection_share`]s, the rule loopd uses to split its
//! connection cap over its loops: they add up to the total exactly and differ by at most one.

use std::fmt;

use loopd::config::connection_share;
use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// The environment variable a Kubernetes Indexed Job sets to each pod's index (from 0).
pub const JOB_INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

/// Segment `index` of `count`, counted from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Segment {
    /// Which one, from 0.
    pub index: u32,
    /// How many segments make the run.
    pub count: u32,
}

impl Segment {
    /// The whole run: the one segment of one.
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };

    /// Segment `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Segment, ConfigError> {
        if count == 0 {
            return Err(ConfigError::Segment(
                "--segment I/N: N is at least 1".into(),
            ));
        }
        if index >= count {
            return Err(ConfigError::Segment(format!(
                "--segment {index}/{count}: segments are counted from 0, so the last of {count} \
                 is {}/{count}",
                count - 1
            )));
        }
        Ok(Segment { index, count })
    }

    /// Parses `I/N`, where `I` is a number or the name of an environment variable that holds
    /// it (`JOB_COMPLETION_INDEX/4` in an Indexed Job's pod). `env` looks a variable up.
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Segment, ConfigError> {
        let bad = |why: String| ConfigError::Segment(format!("--segment {spec}: {why}"));
        let (i, n) = spec
            .split_once('/')
            .ok_or_else(|| bad("not I/N (such as 0/4, or JOB_COMPLETION_INDEX/4)".into()))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad(format!("'{n}' is not a number of segments")))?;
        let i = i.trim();
        let index = if !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) {
            i.parse()
                .map_err(|_| bad(format!("'{i}' is too large an index")))?
        } else if is_variable_name(i) {
            let value = env(i).ok_or_else(|| {
                bad(format!(
                    "the environment variable {i} is not set (a Kubernetes Indexed Job sets \
                     {JOB_INDEX_VAR} in each pod)"
                ))
            })?;
            value
                .trim()
                .parse()
                .map_err(|_| bad(format!("{i}='{value}' is not a segment index")))?
        } else {
            return Err(bad(format!(
                "'{i}' is neither an index nor the name of an environment variable"
            )));
        };
        Segment::new(index, count)
    }

    /// This segment's share of `total` connections: `total / N`, one more for the first
    /// `total % N` segments.
    pub fn share(self, total: usize) -> usize {
        connection_share(total, self.count as usize, self.index as usize)
    }

    /// The global ids of this segment's connections, of `total` in the run.
    pub fn ids(self, total: usize) -> impl Iterator<Item = u32> {
        (self.index as usize..total)
            .step_by(self.count as usize)
            .map(|id| u32::try_from(id).expect("connection ids fit 32 bits"))
    }

    /// Where connection `id` (one of this segment's) stands among the segment's
    /// connections, from 0: what `--source` addresses are dealt by, so that each machine
    /// uses all of its own addresses.
    pub fn ordinal(self, id: u32) -> usize {
        ((id - self.index) / self.count) as usize
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A POSIX environment variable name: letters, digits and `_`, not starting with a digit.
fn is_variable_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// `I/N` by number, or by the variable an Indexed Job sets; nonsense is refused with the
    /// reason.
    #[test]
    fn parsing() {
        assert_eq!(
            Segment::parse("1/4", no_env),
            Ok(Segment { index: 1, count: 4 })
        );
        let job = |name: &str| (name == JOB_INDEX_VAR).then(|| "3".to_string());
        assert_eq!(
            Segment::parse("JOB_COMPLETION_INDEX/4", job),
            Ok(Segment { index: 3, count: 4 })
        );
        let refused = |spec: &str| Segment::parse(spec, job).unwrap_err().to_string();
        assert!(refused("4/4").contains("the last of 4 is 3/4"));
        assert!(refused("0/0").contains("at least 1"));
        assert!(refused("2").contains("not I/N"));
        assert!(refused("MY_INDEX/4").contains("MY_INDEX is not set"));
        assert!(refused("JOB_COMPLETION_INDEX/2").contains("counted from 0"));
        assert!(refused("-1/4").contains("neither an index"));
        assert!(refused("1/x").contains("not a number of segments"));
        let garbage = |_: &str| Some("two".to_string());
        assert!(Segment::parse("JOB_COMPLETION_INDEX/4", garbage)
            .unwrap_err()
            .to_string()
            .contains("JOB_COMPLETION_INDEX='two' is not a segment index"));
    }

    /// The segments' ids are disjoint and cover every connection of the run exactly once;
    /// each segment's count of them is its share; shares differ by at most one.
    #[test]
    fn segments_partition_the_connections() {
        for (total, n) in [(100, 4), (10, 3), (7, 7), (5, 1), (1_001, 16), (3, 2)] {
            let mut seen = BTreeSet::new();
            let mut shares = Vec::new();
            for i in 0..n {
                let s = Segment::new(i, n).unwrap();
                let ids: Vec<u32> = s.ids(total).collect();
                assert_eq!(ids.len(), s.share(total), "{s} of {total}");
                for (k, &id) in ids.iter().enumerate() {
                    assert!(seen.insert(id), "id {id} in two segments");
                    assert_eq!(s.ordinal(id), k);
                }
                shares.push(s.share(total));
            }
            assert_eq!(seen, (0..total as u32).collect(), "{n} segments of {total}");
            assert_eq!(shares.iter().sum::<usize>(), total);
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{shares:?}");
        }
    }
}
