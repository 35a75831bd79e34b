//! The open-files limit, which bounds how many connections can exist at all.
//!
//! Every connection is a descriptor. Many systems start processes with a soft limit of 1024
//! and a much higher hard limit; a server raises its soft limit to the hard one at start-up
//! (as nginx's `worker_rlimit_nofile` and Redis's `maxclients` handling do) and then checks
//! that its connection limit fits.

use std::io;

/// Descriptors kept free for everything that is not a client connection: standard streams,
/// the poller, the waker, the signal pipe, listeners, log files, and the admin endpoint's own
/// allowance ([`ADMIN_CONNECTIONS`](crate::config::ADMIN_CONNECTIONS)). Generous, because
/// running out of descriptors turns accept into a pause loop.
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    // rlim_t is narrower than u64 on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

/// The largest connection limit that fits in `nofile` descriptors.
pub fn connections_that_fit(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raising is idempotent and never lowers the limit.
    #[test]
    fn raise_is_idempotent() {
        let first = raise_nofile_limit().unwrap();
        assert_eq!(raise_nofile_limit().unwrap(), first);
        assert!(first > RESERVED_DESCRIPTORS);
    }

    /// The reserve is subtracted, saturating at zero.
    #[test]
    fn fit() {
        assert_eq!(connections_that_fit(1024), 992);
        assert_eq!(connections_that_fit(10), 0);
    }
}
