//! The settings as a JSON report records them: what a reader (or `merge`) needs to know
//! about the run that produced the figures.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::http::RecordedHttp;
use super::tls::RecordedTls;
use super::{BenchConfig, Expect, Mode, Segment, Stop};
use crate::payload::Protocol;

/// The settings as recorded in a JSON report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedConfig {
    /// Target address.
    pub target: String,
    /// Mode.
    pub mode: Mode,
    /// Protocol name.
    pub protocol: String,
    /// Connections requested.
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// Requested measurement length in seconds, if the run was timed.
    pub duration_secs: Option<f64>,
    /// Requested message count, if the run was counted.
    pub messages: Option<u64>,
    /// Warm-up in seconds.
    pub warmup_secs: f64,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Ramp in connections per second, if any.
    pub ramp: Option<f64>,
    /// `--segment`: which part of the run this process made (`connections`, `rate`, `ramp`
    /// and `messages` are the whole run's).
    #[serde(default)]
    pub segment: Option<Segment>,
    /// `--start-at`: the run's shared start, RFC 3339 UTC.
    #[serde(default)]
    pub start_at: Option<String>,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: f64,
    /// Local source addresses, if bound.
    pub sources: Vec<String>,
    /// Stall timeout in seconds.
    #[serde(default)]
    pub stall_timeout_secs: f64,
    /// UDP loss allowed, percent.
    #[serde(default)]
    pub max_loss_pct: f64,
    /// recv mode: the stream verified against.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Results per backend were asked for.
    #[serde(default)]
    pub per_backend: bool,
    /// `--server-metrics` or `--server-pid`: where the server's CPU time was read.
    #[serde(default)]
    pub server_metrics: Option<String>,
    /// `--system-cpu`: the machine's CPU time was read.
    #[serde(default)]
    pub system_cpu: bool,
    /// `--tls`: the TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RecordedTls>,
    /// `--protocol http`: the requests' method, path and headers, and the statuses expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<RecordedHttp>,
}

impl From<&BenchConfig> for RecordedConfig {
    fn from(c: &BenchConfig) -> RecordedConfig {
        RecordedConfig {
            target: c.target.to_string(),
            mode: c.mode,
            protocol: c.protocol.name().into(),
            connections: c.connections,
            threads: c.threads,
            duration_secs: match c.stop {
                Stop::After(d) => Some(d.as_secs_f64()),
                Stop::Count(_) => None,
            },
            messages: match c.stop {
                Stop::Count(n) => Some(n),
                Stop::After(_) => None,
            },
            warmup_secs: c.warmup.as_secs_f64(),
            size: c.size,
            pipeline: c.pipeline,
            rate: c.rate,
            ramp: c.ramp,
            segment: c.segment,
            start_at: c.start_at.map(|t| humantime::format_rfc3339(t).to_string()),
            connect_timeout_secs: c.connect_timeout.as_secs_f64(),
            sources: c
                .sources
                .iter()
                .flat_map(|s| s.addrs().iter().map(IpAddr::to_string))
                .collect(),
            stall_timeout_secs: c.stall_timeout.as_secs_f64(),
            max_loss_pct: c.max_loss,
            expect: c.expect,
            per_backend: c.per_backend,
            server_metrics: c.cpu.server.as_ref().map(|s| s.describe()),
            system_cpu: c.cpu.system,
            tls: c.tls.as_ref().map(RecordedTls::from),
            http: (c.protocol == Protocol::Http).then(|| RecordedHttp::from(&c.http)),
        }
    }
}

impl RecordedConfig {
    /// The connections this run opened: its segment's share of `connections`, or all.
    pub fn own_connections(&self) -> usize {
        self.segment
            .map_or(self.connections, |s| s.share(self.connections))
    }
}
