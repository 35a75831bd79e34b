//! # loopd-bench
//!
//! A load client for TCP and UDP echo-style servers, built like the server it measures:
//! each worker thread runs one mio `Poll` over its share of the connections, with no async
//! runtime and no thread per connection, so it costs about what the server costs per
//! message and can keep one server core busy from one client core. Every echoed byte is
//! verified, latency goes into HdrHistograms, and the report is text, JSON and a picture.
//!
//! `docs/11-load-testing.md` explains closed and open loops, coordinated omission, and how
//! to read the results.
//!
//! # Layout
//!
//! A suggested reading order, one concern per module:
//!
//! 1. [`config`] — what a run does: the [`Mode`] (a transport and a load policy), the load
//!    model (closed loop with `pipeline` messages in flight, or open loop at a `rate`), and
//!    every default with its reason.
//! 2. [`payload`] — what is sent: every message is a function of its connection id and
//!    sequence number, generated on the fly and checked with `memcmp`; `raw`, `line` or
//!    `frame` framing.
//! 3. [`schedule`] — the clock work, without sockets: quota split, the open-loop grid,
//!    wake-ups, the measurement window. Unit-tested with made-up instants.
//! 4. [`flow`] — one connection's life: phases, what the load policy queues, checking
//!    what comes back.
//! 5. [`tcp`], [`udp`] — the transports: non-blocking connect, budgeted reads, vectored
//!    writes, datagram matching.
//! 6. [`worker`] — one thread's event loop: wake-ups, the run queue, the guards that end
//!    every run, the poll.
//! 7. [`errors`] — what can go wrong, by kind.
//! 8. [`run`](mod@run) — starts the workers, samples the timeline and the CPU counters
//!    ([`cpu`]: what a message costs the client, the server and the machine), builds the
//!    [`Report`].
//! 9. [`repeat`] — iterations until a confidence interval is met; [`compare`] — several
//!    servers in alternating iterations, side by side.
//! 10. [`report`] — tallies, latency histograms, the report and its JSON, `merge`, the text
//!     summary and verdict, and the SVG picture.

#![deny(missing_docs)]

mod alarm;
pub mod compare;
pub mod config;
pub mod cpu;
pub mod errors;
pub mod flow;
pub mod payload;
pub mod repeat;
pub mod report;
pub mod run;
pub mod schedule;
pub mod tcp;
pub mod udp;
pub mod worker;

pub use config::{BenchConfig, Expect, Load, Mode, Sources, Stop, Transport};
pub use errors::ErrorKind;
pub use flow::DRAIN_GRACE;
pub use payload::Protocol;
pub use report::Report;
pub use run::{run, BenchError};
pub use udp::LOSS_TIMEOUT;
