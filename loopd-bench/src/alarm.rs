//! A wake-up with microsecond precision for the open-loop schedule.
//!
//! `epoll_wait` takes its timeout in whole milliseconds and mio rounds up, so a loop that
//! sleeps in `poll` alone sends every scheduled message up to a millisecond late; in an
//! open-loop run that lateness would be reported as server latency. On Linux a `timerfd`
//! registered with the poller fires at the scheduled instant instead (within the thread's
//! timer slack, 50 µs by default). Elsewhere the poll timeout is the fallback.
//!
//! The expiry count is never read: the descriptor is registered edge-triggered, every
//! expiry wakes its wait queue and so reports a new edge, and `timerfd_settime` resets the
//! count. That saves a `read` per wake-up.

use std::io;
use std::time::Duration;

use mio::{Interest, Registry, Token};

/// A one-shot timer whose expiry makes the poller return.
pub struct Alarm {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
}

impl Alarm {
    /// Creates the alarm and registers it under `token`.
    #[cfg(target_os = "linux")]
    pub fn new(registry: &Registry, token: Token) -> io::Result<Alarm> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: timerfd_create has no memory-safety preconditions; the result is checked.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just created and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        Ok(Alarm { fd })
    }

    /// Creates the fallback alarm: the poll timeout does the work.
    #[cfg(not(target_os = "linux"))]
    pub fn new(_registry: &Registry, _token: Token) -> io::Result<Alarm> {
        Ok(Alarm {})
    }

    /// Arms the alarm to fire `after` from now (a zero duration fires at once).
    #[cfg(target_os = "linux")]
    pub fn set(&self, after: Duration) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // A zero it_value disarms a timerfd, so "now" is one nanosecond.
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not requested.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fallback: nothing to arm.
    #[cfg(not(target_os = "linux"))]
    pub fn set(&self, _after: Duration) -> io::Result<()> {
        Ok(())
    }

    /// Whether the alarm is precise; when not, the caller must bound its poll timeout by
    /// the next wake-up itself.
    pub const PRECISE: bool = cfg!(target_os = "linux");
}
