//! A UDP endpoint's defences against loops and reflection.
//!
//! **Read this first.** A UDP service answers the address a datagram says it comes from, and
//! that address is whatever the sender wrote. One datagram forged to come from port 7 of a
//! host running echo, sent to chargen, sets the two answering each other for as long as both
//! run: the echo–chargen loop of CVE-1999-0103. Forged to come from a victim, a flood of
//! one-byte requests to chargen becomes a flood of 512-byte answers at the victim
//! (reflection, amplified). loopd's own services are no exception: one forged datagram from
//! `127.0.0.1:<udp-echo's port>` to udp-chargen made one loopd exchange 600,000 datagrams a
//! second with itself, for as long as it lived.
//!
//! Three defences, each for what the others miss (`docs/09-udp.md` has what each stops):
//!
//! 1. **Privileged source ports are refused** (xinetd's `bad_port_check`). The services a
//!    loop can be made with (echo 7, chargen 19, daytime 13, time 37, and DNS, NTP…) listen
//!    below 1024; clients send from ephemeral ports above it. A datagram from below 1024 is
//!    another service's answer or a forgery made to look like one.
//! 2. **This server's own UDP ports are refused** (the BSD inetds' `check_loop`). loopd's
//!    services usually listen on high ports, where rule 1 does not look: a datagram "from"
//!    one of them is a loop between two of this server's services.
//! 3. **A per-source response rate limit**, in the spirit of DNS response-rate limiting, for
//!    what no port rule can tell: a loop with another server on high ports (another loopd),
//!    and reflection. At most the rate a second reach one source, after a burst of as many.
//!
//! Which apply follows from what the service says of its answers ([`Replies`]): none for a
//! service that never answers; the port rules and the echo limit (off by default) for one
//! whose answers are never larger than the request; the port rules and the rate limit (on by
//! default) for one whose answers can outgrow it. Refusals are counted by reason and logged
//! at most once every [`LOG_INTERVAL`] per endpoint.
//!
//! The rate limit's table has a fixed size, whatever a forged flood does: see [`RateLimit`].

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use log::warn;

use crate::config::UdpLimits;
use crate::logging::Throttle;
use crate::service::datagram::Replies;
use crate::stats::Stats;
use crate::timer::Time;

/// Source ports below this are the system ports, where the services a loop can be made with
/// listen; clients send from ephemeral ports above it (32768–60999 on Linux).
pub const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// How often an endpoint may log that it refused datagrams. A forged flood must not become a
/// flood of log lines: one line in ten seconds says it is happening and what it looks like,
/// and the counters say how much.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// IPv6 sources are limited by this prefix, not by address. A host, or a whole LAN, is given
/// a /64 and may send from any address in it (privacy addresses change by the day), so keyed
/// by address one IPv6 host would have 2^64 allowances. A /64 is to IPv6 what one address is
/// to IPv4, which is keyed by address.
pub const IPV6_PREFIX: u32 = 64;

/// Entries of the rate limit's table: sources it can track at once, per endpoint and loop. An
/// entry is busy for 1/rate seconds after an answer (10 ms at the default 100), so a forged
/// flood from ever new sources fills the table only above 4096 × rate new sources a second,
/// more than one loop receives. 96 KiB, taken at the first answer.
pub const TABLE_ENTRIES: usize = SETS * WAYS;

/// Sets of the table. A source belongs to one set, by a keyed hash of its address.
const SETS: usize = 512;

/// Entries per set. Eight tolerate the uneven spread of a hash without looking far.
const WAYS: usize = 8;

/// Why a datagram was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source port is below [`FIRST_UNPRIVILEGED_PORT`].
    LowPort,
    /// Its source port is one of this server's UDP services'.
    OwnPort,
    /// Its source has had its share of answers.
    RateLimit,
}

/// The defences of one endpoint. See the [module documentation](self).
#[derive(Debug)]
pub struct Guard {
    /// Refuse privileged and own source ports.
    port_rules: bool,
    /// Every UDP port this server serves.
    own_ports: Vec<u16>,
    limit: Option<RateLimit>,
    log: Throttle,
}

impl Guard {
    /// The defences a service answering like `replies` needs, with `limits` and the server's
    /// UDP ports.
    pub fn new(replies: Replies, limits: &UdpLimits, own_ports: Vec<u16>) -> Guard {
        let (port_rules, rate) = match replies {
            Replies::Never => (false, None),
            Replies::NoLarger => (true, limits.echo_rate_limit),
            Replies::Larger => (true, limits.rate_limit),
        };
        Guard {
            port_rules,
            own_ports,
            limit: rate.map(RateLimit::new),
            log: Throttle::new(LOG_INTERVAL),
        }
    }

    /// No defences at all: for tests of what lies behind them.
    #[cfg(test)]
    pub(crate) fn none() -> Guard {
        Guard::new(Replies::Never, &UdpLimits::default(), Vec::new())
    }

    /// Whether a datagram from `peer` may reach the service. A refusal is counted and
    /// (at a bounded rate) logged.
    pub fn admit(&mut self, peer: SocketAddr, local: SocketAddr, now: Time, stats: &Stats) -> bool {
        if !self.port_rules {
            return true;
        }
        let refusal = if peer.port() < FIRST_UNPRIVILEGED_PORT {
            Refusal::LowPort
        } else if self.own_ports.contains(&peer.port()) {
            Refusal::OwnPort
        } else {
            return true;
        };
        self.refused(refusal, peer, local, now, stats);
        false
    }

    /// Whether an answer may go to `peer` now; if so, it is taken from the source's share.
    /// A refusal is counted and (at a bounded rate) logged.
    pub fn may_answer(
        &mut self,
        peer: SocketAddr,
        local: SocketAddr,
        now: Time,
        stats: &Stats,
    ) -> bool {
        let Some(limit) = &mut self.limit else {
            return true;
        };
        if limit.allow(peer.ip(), now) {
            return true;
        }
        self.refused(Refusal::RateLimit, peer, local, now, stats);
        false
    }

    fn refused(
        &mut self,
        refusal: Refusal,
        peer: SocketAddr,
        local: SocketAddr,
        now: Time,
        stats: &Stats,
    ) {
        let counter = match refusal {
            Refusal::LowPort => &stats.datagrams_refused_low_port,
            Refusal::OwnPort => &stats.datagrams_refused_own_port,
            Refusal::RateLimit => &stats.datagrams_rate_limited,
        };
        Stats::incr(counter);
        let Some(suppressed) = self.log.admit(now) else {
            return;
        };
        let why = match refusal {
            Refusal::LowPort => format!(
                "its source port is below {FIRST_UNPRIVILEGED_PORT}, a service's: answering could \
                 start a loop with it"
            ),
            Refusal::OwnPort => "its source port is one of this server's UDP services: a loop \
                                 request"
                .to_string(),
            Refusal::RateLimit => format!(
                "its source has had its share, {} answers a second (rate limit)",
                self.limit.as_ref().map_or(0, |l| l.per_second)
            ),
        };
        warn!(
            "udp {local}: not answering {peer}: {why} ({suppressed} more refused, not logged, \
             since the previous such line)"
        );
    }
}

/// One source's entry: its key and when its share is whole again.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The source's address, or its IPv6 prefix (see [`key`]), in two halves.
    key: [u64; 2],
    /// The theoretical arrival time of the generic cell rate algorithm, in nanoseconds of the
    /// loop's clock: each answer moves it one interval on (from now, if it lies in the past),
    /// and an answer is allowed while it is at most a burst less one interval ahead of now.
    /// At or before now, the source has its whole share, exactly as a source never seen, so
    /// its entry may be given to another.
    due: u64,
}

/// A per-source limit of `per_second` answers a second, after a burst of as many, in a table
/// of [`TABLE_ENTRIES`] entries whatever the sources.
///
/// The table is set-associative: a source's set is chosen by a keyed hash (random per process,
/// so no one can aim sources at a set), and within its set it has an entry of its own. An
/// entry is given to a new source only when its old source has its whole share again — when
/// forgetting it changes nothing — so no source ever gets more than its limit, however many
/// others come and go. When every entry of a set is in use by sources inside their limit, a
/// new source of that set is not answered until one frees (one interval after a source's
/// single answer, a second after a whole burst): a forged flood can delay new sources, never
/// multiply what any one source receives.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u32,
    /// Nanoseconds between two answers at the limit.
    interval: u64,
    /// How far ahead of now `due` may be: a burst of `per_second`, less the one being sent.
    tolerance: u64,
    /// Empty until the first answer: an endpoint nobody asks costs nothing.
    table: Vec<[Entry; WAYS]>,
    hasher: std::collections::hash_map::RandomState,
}

impl RateLimit {
    /// At most `per_second` answers a second to one source (at least 1).
    pub fn new(per_second: u32) -> RateLimit {
        let per_second = per_second.max(1);
        let interval = 1_000_000_000 / u64::from(per_second);
        RateLimit {
            per_second,
            interval,
            tolerance: interval * u64::from(per_second - 1),
            table: Vec::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Whether `source` may be answered at `now`; if so, the answer is counted.
    pub fn allow(&mut self, source: IpAddr, now: Time) -> bool {
        let now = now.0.saturating_mul(1_000_000);
        if self.table.is_empty() {
            self.table = vec![[Entry::default(); WAYS]; SETS];
        }
        let key = key(source);
        let set = &mut self.table[self.hasher.hash_one(key) as usize % SETS];
        let entry = match set.iter().position(|e| e.key == key) {
            Some(i) => &mut set[i],
            None => match set.iter().position(|e| e.due <= now) {
                Some(i) => {
                    set[i] = Entry { key, due: now };
                    &mut set[i]
                }
                None => return false,
            },
        };
        let due = entry.due.max(now);
        if due - now > self.tolerance {
            return false;
        }
        entry.due = due + self.interval;
        true
    }
}

/// What a source is limited by: an IPv4 address (an IPv4-mapped IPv6 one counts as its IPv4
/// address), or the [`IPV6_PREFIX`] of an IPv6 one. The two never collide: the IPv4 key is the
/// mapped address, whose low 64 bits are never zero, and an IPv6 key's low 64 bits are.
fn key(source: IpAddr) -> [u64; 2] {
    let bits = match source.to_canonical() {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a) & (u128::MAX << (128 - IPV6_PREFIX)),
    };
    [(bits >> 64) as u64, bits as u64]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// A burst of `rate` at once, then one answer per interval: never more than the rate
    /// after the burst, at any pace of asking.
    #[test]
    fn burst_then_rate() {
        let mut l = RateLimit::new(100);
        let source = v4(192, 0, 2, 7);
        let at_once = (0..1000).filter(|_| l.allow(source, Time(0))).count();
        assert_eq!(at_once, 100);
        // 10 ms is one interval at 100 a second.
        assert!(!l.allow(source, Time(9)));
        assert!(l.allow(source, Time(10)));
        assert!(!l.allow(source, Time(10)));
        // Asked a thousand times a second for the next ten seconds: a hundred a second get
        // through.
        let answered = (20..10_020).filter(|&ms| l.allow(source, Time(ms))).count();
        assert_eq!(answered, 1000);
        // A quiet source gets its whole burst back, no more.
        let later = Time(60_000);
        assert_eq!((0..1000).filter(|_| l.allow(source, later)).count(), 100);
    }

    /// Sources are limited apart: another address, another /64, has its own share; an
    /// IPv4-mapped address is its IPv4 address; addresses within one /64 share one.
    #[test]
    fn sources_and_prefixes() {
        let mut l = RateLimit::new(5);
        let drain = |l: &mut RateLimit, s: IpAddr| (0..10).filter(|_| l.allow(s, Time(0))).count();
        assert_eq!(drain(&mut l, v4(127, 0, 0, 1)), 5);
        assert_eq!(drain(&mut l, v4(127, 0, 0, 2)), 5);
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(drain(&mut l, mapped), 0, "the mapped address is 127.0.0.1");
        let a: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:0:1:ffff:ffff:ffff:ffff".parse().unwrap();
        let next_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert_eq!(drain(&mut l, a), 5);
        assert_eq!(drain(&mut l, same_64), 0, "one /64, one share");
        assert_eq!(drain(&mut l, next_64), 5);
        assert_ne!(key(v4(0, 0, 0, 0)), key(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }

    /// A forged flood from a million different sources neither grows the table nor takes a
    /// tracked source's entry while that source is inside its limit: the source still gets
    /// exactly its rate, no fresh burst.
    #[test]
    fn flood_of_sources_keeps_the_table_and_every_limit() {
        let mut l = RateLimit::new(100);
        let victim = v4(198, 51, 100, 1);
        assert_eq!((0..200).filter(|_| l.allow(victim, Time(0))).count(), 100);
        let size = l.table.len();
        let mut answered_flood = 0;
        for i in 0..1_000_000u32 {
            let spoofed = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i));
            // A millisecond passes every thousand datagrams: a million a second.
            if l.allow(spoofed, Time(u64::from(i / 1000))) {
                answered_flood += 1;
            }
            if i % 1000 == 999 {
                // The victim asks once a millisecond: it gets no more than its rate.
                l.allow(victim, Time(u64::from(i / 1000)));
            }
        }
        assert_eq!(l.table.len(), size, "the table grew");
        assert_eq!(size * WAYS, TABLE_ENTRIES);
        // A new source is answered only into a free entry, and an entry frees one interval
        // (10 ms) after its answer: over the flood's second, at most every entry a hundred
        // times (and once more at the edge), of a million asking.
        assert!(answered_flood <= TABLE_ENTRIES * 101, "{answered_flood}");
        // Over the flood's second, the victim's entry was never given away: right after it,
        // asking at once gets nothing (a forgotten entry would give a fresh burst of 100).
        let end = Time(1_000);
        assert!(
            (0..100).filter(|_| l.allow(victim, end)).count() <= 1,
            "the victim was forgotten and got a fresh burst"
        );
    }

    /// Which defences follow from what a service says of its answers.
    #[test]
    fn defences_follow_the_answers() {
        let (local, now, stats) = ("127.0.0.1:7".parse().unwrap(), Time(0), Stats::default());
        let limits = UdpLimits::default();
        let low: SocketAddr = "192.0.2.1:19".parse().unwrap();
        let own: SocketAddr = "192.0.2.1:17007".parse().unwrap();
        let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let mut echo = Guard::new(Replies::NoLarger, &limits, vec![17007]);
        assert!(!echo.admit(low, local, now, &stats));
        assert!(!echo.admit(own, local, now, &stats));
        assert!(echo.admit(client, local, now, &stats));
        assert!(
            (0..10_000).all(|_| echo.may_answer(client, local, now, &stats)),
            "echo is not rate-limited by default"
        );
        let mut chargen = Guard::new(Replies::Larger, &limits, vec![17007]);
        assert!(!chargen.admit(own, local, now, &stats));
        let answered = (0..10_000)
            .filter(|_| chargen.may_answer(client, local, now, &stats))
            .count();
        assert_eq!(answered, limits.rate_limit.unwrap() as usize);
        let mut discard = Guard::new(Replies::Never, &limits, vec![17007]);
        assert!(discard.admit(low, local, now, &stats));
        let s = stats.snapshot();
        assert_eq!(
            (
                s.datagrams_refused_low_port,
                s.datagrams_refused_own_port,
                s.datagrams_rate_limited
            ),
            (1, 2, 10_000 - answered as u64)
        );
    }
}
