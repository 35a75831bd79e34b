//! The open-files limit, which bounds how many connections can exist at all.
//!
//! Every connection is a descriptor. Many systems start processes with a soft limit of 1024
//! and a much higher hard limit; a server raises its soft limit to the hard one at start-up
//! (as nginx's `worker_rlimit_nofile` and Redis's `maxclients` handling do) and then checks
//! that its connection limit fits.

use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept free for everything that is not a client connection: standard streams,
/// the poller, the waker, the signal pipe, listeners, log files, and the admin endpoint's own
/// allowance ([`ADMIN_CONNECTIONS`](crate::config::ADMIN_CONNECTIONS)). Generous, because
/// running out of descriptors turns accept into a pause loop.
pub const RESERVED_DESCRIPTORS: u64 = 32;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(soft.max(hard))
}

/// The soft `RLIMIT_NOFILE`: how many descriptors this process may hold now.
pub fn nofile_limit() -> io::Result<u64> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(soft)
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
