//! `--source ADDR[-ADDR]`: the local addresses connections bind to, round-robin.

use std::net::IpAddr;

use super::error::ConfigError;

/// Each source address gives one machine another ~28,000 ephemeral ports towards one
/// target; 65,536 addresses is far more connections than any machine holds.
const MAX_SOURCES: usize = 65_536;

/// A range of local addresses that connections bind to, round-robin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources(Vec<IpAddr>);

impl Sources {
    /// Parses `ADDR` or `ADDR-ADDR` (inclusive; IPv4 ranges vary the last octets, IPv6
    /// ranges the last 64 bits).
    pub fn parse(s: &str) -> Result<Sources, ConfigError> {
        let bad = |why: String| ConfigError::Source(why);
        let parse = |a: &str| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| bad(format!("'{a}' is not an IP address")))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        let addrs: Vec<IpAddr> = match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a)..=u32::from(b))
                .map(|n| IpAddr::V4(n.into()))
                .collect(),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a)..=u128::from(b))
                .take(MAX_SOURCES + 1)
                .map(|n| IpAddr::V6(n.into()))
                .collect(),
            _ => return Err(bad(format!("'{s}' mixes IPv4 and IPv6"))),
        };
        if addrs.is_empty() {
            return Err(bad(format!(
                "'{s}' is an empty range (the first address is after the last)"
            )));
        }
        if addrs.len() > MAX_SOURCES {
            return Err(bad(format!("'{s}' has more than {MAX_SOURCES} addresses")));
        }
        Ok(Sources(addrs))
    }

    /// The addresses in order.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }

    /// The address connection `i` binds to.
    pub fn pick(&self, i: usize) -> IpAddr {
        self.0[i % self.0.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source ranges expand inclusively and reject nonsense.
    #[test]
    fn sources() {
        let s = Sources::parse("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(s.addrs().len(), 3);
        assert_eq!(s.pick(4).to_string(), "127.0.0.3");
        assert_eq!(Sources::parse("::1").unwrap().addrs().len(), 1);
        assert!(Sources::parse("127.0.0.5-127.0.0.4").is_err());
        assert!(Sources::parse("127.0.0.1-::1").is_err());
        assert!(Sources::parse("localhost").is_err());
    }
}
