//! The wall clock, for runs that several machines start together (`--start-at`).
//!
//! A run is timed on the monotonic clock (`Instant`), which no one can step; only its start
//! and its report's window are wall-clock times, because only those are compared between
//! machines. Two things are needed for that:
//!
//! * **Whether the clock is synchronised** ([`synchronised`]). One machine cannot measure
//!   its clock's offset from another's, so the report does not pretend to; what the kernel
//!   does know is whether a time daemon (chrony, ntpd, systemd-timesyncd) is disciplining
//!   the clock. `adjtimex(2)` with no mode bits set only reads that state (no privilege is
//!   needed), and its `STA_UNSYNC` status flag is set until a daemon says the clock is
//!   synchronised. It comes from the `libc` crate, already a dependency: `nix` has no
//!   wrapper for it, and one read-only call does not justify another dependency.
//! * **Waiting for a wall-clock time** ([`wait_until`]) and handing the run the `Instant`
//!   it corresponds to. The wait looks at the wall clock again at least every
//!   [`RECHECK`], so a step of the clock during a long wait (a daemon's first
//!   synchronisation) is followed; the last mapping is made [`HAND_OVER`] before the start,
//!   and from then on the workers' own timers (`timerfd`, microseconds) keep the time.

use std::time::{Duration, Instant, SystemTime};

/// The longest sleep between two looks at the wall clock while waiting for a start: a
/// clock stepped during the wait is noticed within a second.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How long before the start the wall-clock time is mapped onto the monotonic clock for the
/// last time: long enough to start the worker threads before it comes, short enough that a
/// step of the clock within it is unlikely.
pub const HAND_OVER: Duration = Duration::from_millis(100);

/// Whether the kernel says the system clock is synchronised: `Some(false)` while the
/// `STA_UNSYNC` flag of `adjtimex` is set, `None` where that cannot be asked (not Linux, or
/// the call is refused, as a seccomp filter may do).
pub fn synchronised() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `timex` is plain data, valid zeroed; with `modes` 0 the call only fills it
        // in (a read, allowed without CAP_SYS_TIME).
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        if unsafe { libc::adjtimex(&mut t) } == -1 {
            return None;
        }
        Some(t.status & libc::STA_UNSYNC == 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The `Instant` of wall-clock time `at`, given readings of both clocks taken together;
/// `now` itself if `at` lies before the monotonic clock began (long before any start that
/// [`check_start`](crate::config::start::check_start) lets through).
pub fn instant_of(at: SystemTime, now: Instant, wall_now: SystemTime) -> Instant {
    match at.duration_since(wall_now) {
        Ok(ahead) => now + ahead,
        Err(past) => now.checked_sub(past.duration()).unwrap_or(now),
    }
}

/// Sleeps until shortly before wall-clock time `at` and returns its `Instant` (at once, and
/// an `Instant` in the past, if `at` has gone by).
pub fn wait_until(at: SystemTime) -> Instant {
    loop {
        let (now, wall_now) = (Instant::now(), SystemTime::now());
        match at.duration_since(wall_now) {
            Ok(ahead) if ahead > HAND_OVER => {
                std::thread::sleep((ahead - HAND_OVER).min(RECHECK));
            }
            _ => return instant_of(at, now, wall_now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wall-clock times map to instants at the same distance from the reading, either way.
    #[test]
    fn instants_of_wall_times() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let s = Duration::from_secs;
        assert_eq!(instant_of(wall + s(5), now, wall), now + s(5));
        assert_eq!(instant_of(wall, now, wall), now);
        if let Some(earlier) = now.checked_sub(s(2)) {
            assert_eq!(instant_of(wall - s(2), now, wall), earlier);
        }
    }

    /// On Linux the kernel always answers the read-only call (this machine's answer is
    /// whatever its time daemon says, so only the presence of an answer is checked).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_answers() {
        assert!(synchronised().is_some());
    }
}
