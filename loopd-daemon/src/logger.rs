//! Where the daemon's log lines go and how they look: env_logger on standard error, as text
//! for people or as one JSON object per line for log shippers (`--log-format json`).
//!
//! The library logs through the `log` crate and attaches figures as structured key/value
//! fields ([`loopd::logging`]); which logger renders them is the program's choice, so the
//! logger and the JSON encoder live here, with the binary, and a program embedding the
//! library brings its own.
//!
//! * **text** (the default): `[time LEVEL target] message key=value key=value`, env_logger's
//!   format;
//! * **json**: one object per line with `timestamp` (RFC 3339, UTC), `level`, `target`,
//!   `message`, and every field as a member of its own — what Loki, Elasticsearch or a
//!   Kubernetes log pipeline ingest without a parser.

use std::io::Write;
use std::str::FromStr;

use log::kv::{self, Key, Value, VisitSource};
use log::{LevelFilter, Record};

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

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;
    use loopd::logging::Fields;
    use loopd::stats::Snapshot;

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
