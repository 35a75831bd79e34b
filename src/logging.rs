//! Log lines for people and for log shippers.
//!
//! loopd logs through the `log` crate to standard error, where a terminal, journald or a
//! container runtime collects it. Lines that carry figures (the start-up line, the exit line,
//! SIGHUP's counters, a request timeout) attach them as structured key/value fields rather
//! than text, so each output format renders them natively:
//!
//! * **text** (the default): `[time LEVEL target] message key=value key=value`, env_logger's
//!   format;
//! * **json** (`--log-format json`): one object per line with `timestamp` (RFC 3339, UTC),
//!   `level`, `target`, `message`, and every field as a member of its own — what Loki,
//!   Elasticsearch or a Kubernetes log pipeline ingest without a parser.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use log::kv::{self, Key, Source, Value, VisitSource};
use log::{Level, LevelFilter, Record};

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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// For people: env_logger's format, fields as `key=value`.
    #[default]
    Text,
    /// For machines: one JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("'{s}' is not a log format (text or json)")),
        }
    }
}

/// Installs the logger: `level` unless `RUST_LOG` says otherwise, in `format`.
pub fn init(level: LevelFilter, format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).parse_default_env();
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = json_line(&buf.timestamp_micros().to_string(), record);
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

/// One record as one JSON object: the header members, the message, then every field.
pub fn json_line(timestamp: &str, record: &Record<'_>) -> String {
    let mut object = serde_json::Map::new();
    object.insert("timestamp".into(), timestamp.into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("target".into(), record.target().into());
    object.insert("message".into(), record.args().to_string().into());
    let mut fields = JsonFields(&mut object);
    // A field that cannot be visited is left out; the line itself is never lost.
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(object).to_string()
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        let v = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(b) = value.to_bool() {
            b.into()
        } else {
            value.to_string().into()
        };
        self.0.insert(key.as_str().to_string(), v);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON line parses back, with the header members, the message and typed fields.
    #[test]
    fn json_lines_parse() {
        let snapshot = Snapshot {
            accepted: 3,
            ..Snapshot::default()
        };
        let named = [
            ("exit", Value::from("Drained")),
            ("loops", Value::from(2u64)),
        ];
        let fields = Fields {
            named: &named,
            counters: Some(&snapshot),
        };
        let record = Record::builder()
            .level(Level::Info)
            .target("loopd::server")
            .args(format_args!("exit: \"quoted\"\nnext"))
            .key_values(&fields)
            .build();
        let line = json_line("2026-11-22T00:00:00.000000Z", &record);
        assert!(!line.contains('\n'), "one line: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "loopd::server");
        assert_eq!(v["message"], "exit: \"quoted\"\nnext");
        assert_eq!(v["exit"], "Drained");
        assert_eq!(v["loops"], 2);
        assert_eq!(v["accepted"], 3);
        assert_eq!(v["bytes_out"], 0);
    }

    /// Both formats by name, and nothing else.
    #[test]
    fn formats() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
