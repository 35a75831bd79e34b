//! loopd-bench's engine: a load client for TCP and UDP echo-style servers.
//!
//! The client is built like the server it measures: each worker thread runs one mio
//! `Poll` over its share of the connections, with no async runtime and no thread per
//! connection, so it costs about what the server costs per message and can keep one
//! server core busy from one client core.
//!
//! # Layout
//!
//! 1. [`config`] — what a run does: mode (`echo`, `send`, `recv`, `connect`, `udp`), load
//!    model (closed loop with `pipeline` messages in flight, or open loop at a `rate`),
//!    and the flags' defaults with their reasons.
//! 2. [`payload`] — what is sent: every message carries its connection id, sequence number
//!    and a pattern, framed `raw`, as a `line` or as a length-prefixed `frame`.
//! 3. `worker` — one thread's event loop and the per-connection state: partial writes,
//!    byte-by-byte verification of replies, latency from the intended send time.
//! 4. [`run`](mod@run) — starts the workers, samples a per-second timeline, builds the report.
//! 5. [`report`] — histograms, the summary, JSON, and merging runs from several machines;
//!    [`plot`] — the SVG picture.
//!
//! `docs/11-load-testing.md` explains closed and open loops, coordinated omission, and how
//! to read the results.

mod alarm;
pub mod config;
pub mod payload;
pub mod plot;
pub mod report;
pub mod run;
mod worker;

pub use config::{BenchConfig, Mode, Sources, Stop};
pub use payload::Protocol;
pub use report::{ErrorKind, Report};
pub use run::{run, BenchError};
pub use worker::{DRAIN_GRACE, LOSS_TIMEOUT, STALL_LIMIT};
