//! `--iterations MIN[,MAX]` and `--confidence LEVEL,WIDTH`: how many whole runs make one
//! result, after netperf's `-i` and `-I`. The statistics are in
//! [`report::iterations`](crate::report::iterations), the driver in
//! [`repeat`](crate::repeat).

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// How many iterations, and what precision to stop at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    /// Iterations at least.
    pub min: usize,
    /// Iterations at most.
    pub max: usize,
    /// The precision that ends the series early, if any.
    pub target: Option<Confidence>,
}

impl Default for Repeat {
    fn default() -> Repeat {
        Repeat {
            min: 1,
            max: 1,
            target: None,
        }
    }
}

impl Repeat {
    /// From `--iterations MIN[,MAX]` (MAX defaults to MIN) and `--confidence`.
    pub fn new(iterations: &str, target: Option<Confidence>) -> Result<Repeat, ConfigError> {
        let number = |s: &str| {
            s.trim().parse::<usize>().map_err(|_| {
                ConfigError::Iterations(format!(
                    "--iterations '{iterations}' is not MIN or MIN,MAX"
                ))
            })
        };
        let (min, max) = match iterations.split_once(',') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(iterations)?;
                (n, n)
            }
        };
        if min == 0 || max < min {
            return Err(ConfigError::Iterations(format!(
                "--iterations {iterations}: need 1 <= MIN <= MAX"
            )));
        }
        if target.is_some() && max < 2 {
            return Err(ConfigError::ConfidenceNeedsIterations);
        }
        Ok(Repeat { min, max, target })
    }

    /// More than one iteration, or a target: the report describes the series.
    pub fn is_series(&self) -> bool {
        self.max > 1 || self.target.is_some()
    }
}

/// `--confidence LEVEL,WIDTH`: LEVEL percent confidence that the true mean lies within an
/// interval WIDTH percent of the mean wide.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// Percent, such as 95 or 99.
    pub level: f64,
    /// The interval's whole width, in percent of the mean (±WIDTH/2).
    pub width: f64,
}

impl Confidence {
    /// Parses `LEVEL,WIDTH`.
    pub fn parse(s: &str) -> Result<Confidence, ConfigError> {
        let bad =
            || ConfigError::Confidence(format!("'{s}' is not LEVEL,WIDTH in percent, like 99,5"));
        let (l, w) = s.split_once(',').ok_or_else(bad)?;
        let level: f64 = l.trim().parse().map_err(|_| bad())?;
        let width: f64 = w.trim().parse().map_err(|_| bad())?;
        if !(level > 0.0 && level < 100.0 && width > 0.0 && width.is_finite()) {
            return Err(ConfigError::Confidence(format!(
                "--confidence {s}: the level is between 0 and 100, the width above 0"
            )));
        }
        Ok(Confidence { level, width })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(
            Repeat::new("3,10", None).unwrap(),
            Repeat {
                min: 3,
                max: 10,
                target: None
            }
        );
        assert_eq!(Repeat::new("4", None).unwrap().max, 4);
        assert!(Repeat::new("5,3", None).is_err());
        assert!(Repeat::new("0", None).is_err());
        let c = Confidence::parse("99,5").unwrap();
        assert_eq!((c.level, c.width), (99.0, 5.0));
        assert!(Confidence::parse("100,5").is_err());
        assert!(Confidence::parse("99").is_err());
        assert!(
            Repeat::new("1", Some(c)).is_err(),
            "one iteration cannot be confident"
        );
    }
}
