//! `--start-at TIME`: a start shared by the processes of one run, as an RFC 3339 UTC time
//! (`2026-12-05T10:00:00Z`).
//!
//! The run's schedule is anchored at that time, not at the moment the process got going:
//! connections open from it (spread by `--ramp`), the measurement begins after the ramp and
//! the warm-up, and the open-loop slots count from it. A process that starts a little late
//! therefore still measures the same window as the others, with a shorter warm-up; it
//! reports how late it was (its *start lag*).
//!
//! Two times are refused, each as a likely mistake ([`check_start`]):
//!
//! * **one already past the start of the measurement** (more than the ramp and the warm-up
//!   ago): this process would join the window late, or open its connections inside it. In a
//!   Kubernetes Job this is a pod scheduled too late, or a manifest applied twice; retrying
//!   cannot help, so it is an error, and `merge` then names the missing segment;
//! * **one more than [`MAX_START_AHEAD`] ahead**: no cluster takes an hour to schedule a
//!   handful of pods, while a time written in local time with a `Z`, or a wrong date, lands
//!   hours away and would leave the processes (and the pods' nodes) waiting for nothing.
//!
//! The check is pure (the time is an argument), so the tests need no clock.

use std::time::{Duration, SystemTime};

use super::error::ConfigError;

/// How far ahead a start may be: far more than a cluster needs to pull an image and
/// schedule the pods (minutes), less than the hour by which a local time mistaken for UTC
/// is off in most of the world.
pub const MAX_START_AHEAD: Duration = Duration::from_secs(60 * 60);

/// Parses an RFC 3339 time in UTC (`2026-12-05T10:00:00Z`, fractions of a second allowed).
pub fn parse_start_at(s: &str) -> Result<SystemTime, ConfigError> {
    humantime::parse_rfc3339(s.trim()).map_err(|e| {
        ConfigError::StartAt(format!(
            "--start-at '{s}' is not an RFC 3339 time in UTC such as 2026-12-05T10:00:00Z ({e})"
        ))
    })
}

/// Whether a run that starts at `start` and begins measuring `lead_in` later (its ramp and
/// warm-up) can still start at `now`.
pub fn check_start(
    start: SystemTime,
    now: SystemTime,
    lead_in: Duration,
) -> Result<(), ConfigError> {
    let at = humantime::format_rfc3339(start);
    match start.duration_since(now) {
        Ok(ahead) if ahead > MAX_START_AHEAD => Err(ConfigError::StartAt(format!(
            "--start-at {at} is {} ahead, more than the {} allowed: is it a local time \
             written as UTC, or the wrong day?",
            humantime::format_duration(whole_seconds(ahead)),
            humantime::format_duration(MAX_START_AHEAD),
        ))),
        Ok(_) => Ok(()),
        Err(past) if past.duration() >= lead_in => Err(ConfigError::StartAt(format!(
            "--start-at {at} was {:.1} s ago, and the measurement was to begin {:.1} s after it \
             (ramp and warm-up): this process would join it late; give every process of the \
             run a later start",
            past.duration().as_secs_f64(),
            lead_in.as_secs_f64(),
        ))),
        // Late, but within the lead-in: the window is kept, the warm-up is shorter.
        Err(_) => Ok(()),
    }
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// RFC 3339 in UTC only: a local offset or a bare date is refused with an example.
    #[test]
    fn parsing() {
        let t = parse_start_at("2026-12-05T10:00:00Z").unwrap();
        assert_eq!(
            humantime::format_rfc3339(t).to_string(),
            "2026-12-05T10:00:00Z"
        );
        assert!(parse_start_at("2026-12-05T10:00:00.250Z").is_ok());
        for bad in [
            "2026-12-05T10:00:00+01:00",
            "2026-12-05",
            "10:00",
            "tomorrow",
        ] {
            let e = parse_start_at(bad).unwrap_err().to_string();
            assert!(e.contains("such as 2026-12-05T10:00:00Z"), "{bad}: {e}");
        }
    }

    /// Ahead by up to an hour is fine; late within the ramp and warm-up is fine (the
    /// window is kept); later than that, or further ahead, is refused with the reason.
    #[test]
    fn start_bounds() {
        let now = SystemTime::UNIX_EPOCH + secs(1_800_000_000);
        let lead_in = secs(5);
        assert!(check_start(now + secs(90), now, lead_in).is_ok());
        assert!(check_start(now + MAX_START_AHEAD, now, lead_in).is_ok());
        let far = check_start(now + MAX_START_AHEAD + secs(1), now, lead_in).unwrap_err();
        assert!(
            far.to_string()
                .contains("is 1h 1s ahead, more than the 1h allowed"),
            "{far}"
        );
        assert!(
            check_start(now - secs(4), now, lead_in).is_ok(),
            "late by 4 s of 5"
        );
        let late = check_start(now - secs(5), now, lead_in).unwrap_err();
        assert!(
            late.to_string().contains("was 5.0 s ago") && late.to_string().contains("later start"),
            "{late}"
        );
        assert!(
            check_start(now - secs(1), now, Duration::ZERO).is_err(),
            "no lead-in"
        );
        assert!(
            check_start(now, now, Duration::ZERO).is_ok(),
            "exactly on time"
        );
    }
}
