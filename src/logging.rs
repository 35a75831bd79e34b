//! Log lines that carry figures, and warnings that must not flood.
//!
//! loopd logs through the `log` crate and installs no logger: the program does (the `loopd`
//! daemon installs env_logger, as text or JSON). Lines that carry figures (the exit line,
//! SIGHUP's counters) attach them as structured key/value fields ([`Fields`]) rather than
//! text, so each output format renders them natively: `key=value` in text, a member of its
//! own in JSON.

use std::fmt;
use std::time::Duration;

use log::kv::{self, Key, Source, Value, VisitSource};
use log::{Level, Record};

use crate::stats::Snapshot;
use crate::timer::Time;

/// A warning that can repeat as fast as the network can cause it (accept failing for want of
/// descriptors, forged datagrams refused): logged at most once an interval, each line saying
/// how many it stood for, so a flood of events never becomes a flood of log lines while the
/// counters keep the exact figures.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Time>,
    suppressed: u64,
}

impl Throttle {
    /// At most one line every `interval`.
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// An event happened at `now`: `Some(n)` if it is to be logged, `n` being the events
    /// suppressed since the last line; `None` (and one more suppressed) otherwise.
    pub fn admit(&mut self, now: Time) -> Option<u64> {
        if self.last.is_some_and(|t| now < t.after(self.interval)) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Source for Snapshot {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        for (name, value) in self.fields() {
            visitor.visit_pair(Key::from_str(name), Value::from(value))?;
        }
        Ok(())
    }
}

/// A line's fields: named figures first, then the counters of a snapshot.
pub struct Fields<'a> {
    /// Named figures: numbers stay numbers in JSON.
    pub named: &'a [(&'static str, Value<'a>)],
    /// Counters, if any.
    pub counters: Option<&'a Snapshot>,
}

impl Source for Fields<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        for (key, value) in self.named {
            visitor.visit_pair(Key::from_str(key), value.clone())?;
        }
        if let Some(s) = self.counters {
            s.visit(visitor)?;
        }
        Ok(())
    }
}

/// Logs `message` with `fields` attached, as `log`'s macros would at this level and target.
pub fn log_with_fields(
    level: Level,
    target: &str,
    fields: &Fields<'_>,
    message: fmt::Arguments<'_>,
) {
    let logger = log::logger();
    let metadata = log::Metadata::builder().level(level).target(target).build();
    if level <= log::max_level() && logger.enabled(&metadata) {
        logger.log(
            &Record::builder()
                .metadata(metadata)
                .args(message)
                .key_values(fields)
                .build(),
        );
    }
}
