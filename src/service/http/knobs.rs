//! Fortio's query knobs: `delay`, `status`, `size`, `close` and `header` on any path, each
//! value optionally a probability list (`status=503:10,429:5` answers 503 one time in ten,
//! 429 one time in twenty, and the endpoint's own status otherwise; `delay=150us:10,2ms:5`).
//!
//! Choices come from a small generator seeded per connection, so they cost nothing and need
//! no lock. A delay is the fault machinery's hold ([`Output::hold`](crate::service::Output::hold)):
//! the response is output the connection keeps, under its watermarks, until its time.

use std::time::Duration;

/// The longest `delay` a query can ask for, as fortio's `-max-echo-delay` default: a longer
/// wait is a property of the listener (the `delay` fault), not of any client's query.
pub const MAX_DELAY: Duration = Duration::from_millis(1500);

/// What the knobs of one request decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Knobs {
    /// `status`: the response's status instead of the endpoint's.
    pub status: Option<u16>,
    /// `size`: a generated body of this many bytes instead of the endpoint's.
    pub size: Option<u64>,
    /// `close`: close the connection after the response.
    pub close: bool,
    /// `delay`: hold the response this long (at most [`MAX_DELAY`]).
    pub delay: Option<Duration>,
}

/// A knob the query got wrong: answered with 400 (or 501 for one not implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadKnob {
    /// 400 or 501.
    pub status: u16,
    /// One line for the response body.
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> BadKnob {
    BadKnob {
        status: 400,
        reason,
    }
}

/// Probabilities are in hundredths of a percent: `0.01` is the finest step.
const SCALE: u32 = 10_000;

/// A xorshift64* generator: statistical quality enough for choosing among answers, one
/// word of state, no allocation, no lock.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is moved off the fixed point).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A number in `0..SCALE`.
    fn roll(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % u64::from(SCALE)) as u32
    }
}

/// `value[:percent],…`: the value chosen by one roll, or `None` when no entry was chosen.
/// A value without a percent is always chosen (when the entries before it were not).
fn choose<T>(
    list: &str,
    rng: &mut Rng,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, BadKnob> {
    let roll = rng.roll();
    let mut cumulative = 0u32;
    let mut chosen = None;
    for entry in list.split(',') {
        let (value, share) = match entry.split_once(':') {
            Some((v, p)) => (
                v,
                percent(p).ok_or(bad("a knob's probability is not a percentage"))?,
            ),
            None => (entry, SCALE),
        };
        let value = parse(value).ok_or(bad("a knob's value is not valid"))?;
        let before = cumulative;
        cumulative = cumulative.saturating_add(share);
        if chosen.is_none() && roll >= before && roll < cumulative {
            chosen = Some(value);
        }
    }
    if cumulative > SCALE && list.contains(':') {
        return Err(bad("a knob's probabilities add up to more than 100%"));
    }
    Ok(chosen)
}

/// `12.5` → 1250 (hundredths of a percent), at most 100%.
fn percent(p: &str) -> Option<u32> {
    let (whole, frac) = p.split_once('.').unwrap_or((p, ""));
    if whole.is_empty() || whole.len() > 3 || frac.len() > 2 {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        format_frac(frac)
    };
    let v = whole * 100 + frac;
    (v <= SCALE).then_some(v)
}

/// `5` → 50, `05` → 5 (hundredths).
fn format_frac(frac: &str) -> u32 {
    let b = frac.as_bytes();
    let first = u32::from(b[0] - b'0') * 10;
    first + b.get(1).map_or(0, |&d| u32::from(d - b'0'))
}

/// Reads the knobs of `query` (`a=b&c=d`), calling `header` with each `header` knob's raw
/// value. Unknown parameters are left to the endpoint (`msg` is `/echo`'s).
pub fn read<'q>(
    query: &'q str,
    rng: &mut Rng,
    max_size: u64,
    mut header: impl FnMut(&'q str) -> Result<(), BadKnob>,
) -> Result<Knobs, BadKnob> {
    let mut knobs = Knobs::default();
    if query.is_empty() {
        // Most requests: nothing to split.
        return Ok(knobs);
    }
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            // agnhost's `/echo?code=` is fortio's `status`.
            "status" | "code" => {
                let parse = |v: &str| v.parse::<u16>().ok().filter(|s| (200..=599).contains(s));
                if let Some(s) = choose(value, rng, parse)? {
                    knobs.status = Some(s);
                }
            }
            "size" => {
                // Capped, as fortio caps it: a query cannot ask for more than a body the
                // listener would accept.
                if let Some(n) = choose(value, rng, |v: &str| v.parse::<u64>().ok())? {
                    knobs.size = Some(n.min(max_size));
                }
            }
            "close" => {
                knobs.close |= match value {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    p => {
                        rng.roll()
                            < percent(p).ok_or(bad("close is true, false or a percentage"))?
                    }
                };
            }
            "header" => header(value)?,
            "delay" => {
                let parse = |v: &str| humantime::parse_duration(v).ok();
                if let Some(d) = choose(value, rng, parse)? {
                    knobs.delay = Some(d.min(MAX_DELAY));
                }
            }
            _ => {}
        }
    }
    Ok(knobs)
}

/// Percent-decodes `value` into `into` (cleared first). `+` stays `+`.
pub fn percent_decode(value: &str, into: &mut Vec<u8>) -> Result<(), BadKnob> {
    into.clear();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(bad("a bad percent escape in the query"));
            };
            into.push((h * 16 + l) as u8);
            i += 3;
        } else {
            into.push(b[i]);
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(query: &str) -> Result<Knobs, BadKnob> {
        read(query, &mut Rng::new(7), 1000, |_| Ok(()))
    }

    /// Plain values, caps, and the refusals.
    #[test]
    fn plain_values() {
        assert_eq!(
            knobs("status=503&size=10&close"),
            Ok(Knobs {
                status: Some(503),
                size: Some(10),
                close: true,
                delay: None,
            })
        );
        assert_eq!(knobs("size=5000").unwrap().size, Some(1000));
        assert_eq!(knobs("code=404&msg=x").unwrap().status, Some(404));
        assert_eq!(knobs("status=99").unwrap_err().status, 400);
        assert_eq!(knobs("status=503:101").unwrap_err().status, 400);
        assert_eq!(knobs("status=503:60,429:60").unwrap_err().status, 400);
        assert_eq!(
            knobs("delay=2ms").unwrap().delay,
            Some(Duration::from_millis(2))
        );
        assert_eq!(knobs("delay=1h").unwrap().delay, Some(MAX_DELAY));
        assert_eq!(knobs("delay=soon").unwrap_err().status, 400);
        assert_eq!(knobs("close=false"), Ok(Knobs::default()));
    }

    /// Probability lists choose in proportion: 10,000 rolls of `503:30,429:10` land near
    /// 30%, 10% and 60%.
    #[test]
    fn probability_lists() {
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            let k = read("status=503:30,429:10", &mut rng, 0, |_| Ok(())).unwrap();
            counts[match k.status {
                Some(503) => 0,
                Some(429) => 1,
                _ => 2,
            }] += 1;
        }
        for (count, expected) in counts.iter().zip([3000, 1000, 6000]) {
            assert!(count.abs_diff(expected) < 300, "{counts:?}");
        }
        assert_eq!(percent("0.5"), Some(50));
        assert_eq!(percent("12.25"), Some(1225));
        assert_eq!(percent("100"), Some(10_000));
        assert_eq!(percent("100.01"), None);
        assert_eq!(percent("1e2"), None);
    }

    /// Percent escapes decode; broken ones are refused.
    #[test]
    fn decoding() {
        let mut v = Vec::new();
        percent_decode("a%20b%0D+", &mut v).unwrap();
        assert_eq!(v, b"a b\r+");
        assert!(percent_decode("%2", &mut v).is_err());
        assert!(percent_decode("%zz", &mut v).is_err());
    }
}
