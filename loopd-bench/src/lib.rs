//! # loopd-bench
//!
//! A load client for TCP, TLS and UDP echo-style servers, built like the server it measures:
//! each worker thread runs one mio `Poll` over its share of the connections, with no async
//! runtime and no thread per connection, so it costs about what the server costs per
//! message and can keep one server core busy from one client core. Every echoed byte is
//! verified, latency goes into HdrHistograms, and the report is text, JSON and a picture.
//!
//! `docs/C-load-testing.md` explains closed and open loops, coordinated omission, how to
//! read the results, and how the engine is built.
//!
//! # Layout
//!
//! A suggested reading order, one concern per module. It is also the order of dependence:
//! a module uses only modules above it, never one below.
//!
//! 1. [`errors`] — what can go wrong in a run, by kind.
//! 2. [`net`] — socket helpers: resolving, source binding, `WouldBlock` as a value.
//! 3. [`payload`] — what is sent: every message is a function of its connection id and
//!    sequence number, generated on the fly and checked with `memcmp`; `raw`, `line` or
//!    `frame` framing; [`http`] — the HTTP/1.1 requests of `--protocol http` and an
//!    incremental parser of the responses.
//! 4. [`cpu`] — what a message costs the client, the server and the machine; [`clock`] —
//!    the wall clock: whether the kernel keeps it synchronised, and waiting for a shared
//!    start.
//! 5. [`config`] — what a run does: the [`Mode`] (six kinds of run, each a transport and a
//!    load policy), the load model, every default with its reason, and typed errors; this
//!    process's [`Segment`] of a run that several make, and their shared start.
//! 6. [`schedule`] — the clock work, without sockets: quota split, the open-loop grid,
//!    wake-ups, the measurement window. Unit-tested with made-up instants. (`alarm`, private:
//!    the `timerfd` that makes a wake-up precise.)
//! 7. [`record`] — what the workers count: tallies, histograms, the per-second series, the
//!    interval recorder.
//! 8. [`transport`] — the seam: a byte [`Stream`](transport::Stream) and a
//!    [`Datagram`](transport::Datagram) socket; [`tcp`] and [`udp`] implement them, [`tls`]
//!    is a `Stream` over another `Stream` (and a scripted fake in the tests).
//! 9. [`flow`] — one connection's life, generic over its transport: wire-named states with
//!    one choke point, the load policies, the stream and datagram disciplines, per-backend
//!    identification.
//! 10. [`worker`] — one thread's event loop: wake-ups, the run queue, the guards that end
//!     every run, the poll.
//! 11. [`report`] — the report and its JSON, `merge` (of a run's segments, or of unrelated
//!     runs), the text summary and verdict, the comparison table, the SVG picture and the
//!     histogram files.
//! 12. [`run`](mod@run) — the coordinator: starts the workers, samples the timeline and the
//!     CPU counters, builds the [`Report`].
//! 13. [`repeat`] — iterations until a confidence interval is met; [`compare`] — several
//!     servers in alternating iterations, side by side.
//!
//! Last, hidden and compiled only for the tests and with the `fuzzing` feature,
//! `fuzzing` holds the entry points of the fuzz targets in `fuzz/` for what servers send
//! (`docs/fuzzing.md`).

#![deny(missing_docs)]

// Declared in the reading order above (blank lines keep rustfmt from sorting them).
pub mod errors;
pub mod http;
pub mod net;
pub mod payload;

pub mod cpu;

pub mod faults;

pub mod clock;

pub mod config;

pub mod schedule;

mod alarm;

pub mod record;

pub mod transport;

pub mod tcp;
pub mod udp;

pub mod tls;

#[cfg(test)]
mod fake;

pub mod flow;

pub mod worker;

pub mod report;

pub mod run;

pub mod repeat;

pub mod compare;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use config::{BenchConfig, ConfigError, Expect, Load, Mode, Segment, Sources, Stop, Transport};
pub use errors::ErrorKind;
pub use flow::DRAIN_GRACE;
pub use payload::Protocol;
pub use report::Report;
pub use run::{run, BenchError};
pub use udp::LOSS_TIMEOUT;
