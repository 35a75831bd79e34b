//! # loopd
//!
//! An event-loop network server built directly on readiness (epoll on Linux, kqueue on the
//! BSDs and macOS) through [mio], and a codebase meant to be read by anyone learning I/O
//! multiplexing.
//!
//! One thread runs one [event loop](event_loop) (and a [`Server`] runs several, one per core): a
//! `mio::Poll`, its listening sockets, and a slab of
//! [`Connection`](connection::Connection) state machines, whose buffers exist only while they
//! hold bytes. Readiness is edge-triggered, so every part of the
//! loop follows the ten invariants in `docs/02-event-loop.md`: drain or remember, write
//! eagerly and register lazily, stop reading at the high watermark and resume by reading,
//! half-close as two halves, close without losing data, keep errors local, accept until
//! `WouldBlock` and pause on exhaustion, never misroute a stale token, let memory follow
//! work, and keep time in a deadline structure rather than a sweep.
//!
//! The chapters in `docs/` are the course this map belongs to, read top-down (the README
//! lists them in order): readiness and what the kernel promises, one turn of the loop, a
//! connection's life, framing, backpressure, closing, timers and limits, TLS, UDP, scaling;
//! then the appendices — measurements, operations, load testing, the same loop in about 80
//! lines of plain mio (`examples/echo_loop.rs`), the other pollers, and fault injection.
//!
//! # Layout
//!
//! A suggested reading order, one concern per module. It is also the order in which the
//! modules depend on each other: each uses only modules above it, so there is no cycle to
//! untangle when reading.
//!
//! 1. [`buffer`] — a byte queue that allocates lazily and gives its memory back when empty.
//! 2. [`timer`] — deadlines (idle, write stall, linger) in an ordered set with lazy
//!    re-arming; [`stats`] — each endpoint's counters, written by its loop, read by anyone;
//!    [`logging`] — structured fields on log lines, and a throttle for warnings;
//!    [`rlimit`] — the open-files limit.
//! 3. [`proxy`] — the PROXY protocol header a `,proxy` listener reads before its service
//!    exists, parsed so that the answer never depends on how the bytes were split, and who
//!    may send one.
//! 4. [`service`] — the public traits a protocol implements, and the built-ins: echo,
//!    discard, chargen, daytime, time, the framed line and frame services, HTTP/1.1
//!    ([`service::http`]: the request head the admin endpoint shares, the chunked decoder),
//!    and their UDP counterparts. Pure bytes in, bytes out: no sockets.
//! 5. [`fault`] — faults on purpose: the `--fault` spec, the seeded choices, the schedule of
//!    held output ([`Hold`](fault::Hold)) and what each connection's faults decide; the
//!    connection and the loop consult it at their decision points.
//! 6. [`endpoint`] — what a server serves and where each socket comes from (bound here, or
//!    handed over by systemd); [`config`] — every tunable with its default and its reason,
//!    split by who reads it: what to serve, the [`Deployment`](config::Deployment) the
//!    server reads, the [`LoopConfig`](config::LoopConfig) every loop reads.
//! 7. [`socket`] — the socket glue, as Redis keeps `anet.c` beside `ae.c`: binding a socket
//!    per loop, the options of an accepted connection, UDP control messages, the
//!    connection's [`Socket`](socket::Socket) seam (with what a layer under the connection
//!    adds: input it holds, output of its own, a handshake), and [`Want`](socket::Want), the
//!    one interest type, with its re-registration (readable includes urgent data, where the
//!    poller reports it).
//! 8. `tls` (the `tls` feature) — rustls under the connection at the `Socket` seam: the
//!    layer that keeps the edge-triggered rules where TLS changes them, certificates chosen
//!    by SNI and reloaded at run time, the one configuration every loop shares
//!    (`docs/08-tls.md`).
//! 9. [`listener`] — what each `accept()` error means; [`udp`] — a UDP socket with a bounded
//!    reply queue, answering from the address each request was sent to, behind a
//!    [`guard`](udp::guard) against loops and reflection (forged sources).
//! 10. [`connection`] — one connection's life in two rooms: the stages before serving (a
//!     PROXY header, then a TLS handshake), then the serving state machine (`Open`,
//!     `CloseWait`, `Closing`, `Lingering`, `Closed`): partial reads and writes (and when a
//!     short read proves the socket drained: [`SHORT_READ_DRAINS`](connection::SHORT_READ_DRAINS)),
//!     backpressure, half-close, lingering close. Tested without sockets.
//! 11. [`control`] — what other threads see of a running loop: its [`Handle`], its
//!     endpoints and counters, how it ended ([`Exit`]), and the server's health.
//! 12. [`event_loop`] — `Poll`, tokens, the slabs (plain and TLS connections apart), the run
//!     queue and its handshake budget, accepting, deadlines, the drain. With [`socket`],
//!     [`listener`], [`udp`], [`control`]'s waker and the supervisor's poll, the only code
//!     that touches mio.
//! 13. Operating it: [`metrics`] — the Prometheus text; [`admin`] — `/metrics`, `/healthz`
//!     and `/readyz` as one more service on the loop.
//! 14. [`supervisor`] — signals, the drain delay, the watchdog and `sd_notify`, certificate
//!     reloads, a loop that fails; [`server`] — the one construction path from configuration
//!     to bound endpoints, and several loops on their own threads, shared-nothing
//!     (`SO_REUSEPORT`).
//! 15. [`systemd`] — socket activation: sockets handed over by the service manager.
//!
//! Last, hidden and compiled only for the tests and with the `fuzzing` feature,
//! `fuzzing` holds the entry points of the fuzz targets in `fuzz/`, which drive these modules
//! with arbitrary network input (`docs/fuzzing.md`).
//!
//! The bundled load client, `loopd-bench`, is its own package in this workspace
//! (`loopd-bench/`): the same kind of event loop from the other side, with verified payloads
//! and HdrHistogram latency. It uses this library for size and duration parsing, the
//! open-files limit and the RFC 864 pattern, so a server embedding loopd compiles none of the
//! client's crates.
//!
//! # Writing a service
//!
//! A service sees only bytes. This one answers every complete line with its length, waits
//! for the rest of a partial line by consuming only whole lines, and is served on an
//! ephemeral loopback port:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::{SocketAddr, TcpStream};
//! use std::sync::Arc;
//! use loopd::service::{ConnInfo, Handler, Output, Service, ServiceFactory};
//! use loopd::{Config, EndpointSpec, Server};
//!
//! struct LineLength;
//!
//! impl Service for LineLength {
//!     fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> usize {
//!         let mut used = 0;
//!         while let Some(n) = input[used..].iter().position(|&b| b == b'\n') {
//!             out.write(format!("{}\n", n).as_bytes());
//!             used += n + 1;
//!         }
//!         used // an incomplete line stays buffered until the rest arrives
//!     }
//! }
//!
//! let factory: Arc<dyn ServiceFactory> =
//!     Arc::new(|_: &ConnInfo<'_>| Box::new(LineLength) as Box<dyn Service>);
//! let addr: SocketAddr = "127.0.0.1:0".parse()?;
//! let config = Config::default();
//! let endpoint = EndpointSpec::bind(addr, Handler::Stream(factory));
//! let server = Server::with_endpoints(&config.deployment, &config.loops, vec![endpoint])?;
//! let addr = server.local_addrs()[0];
//! let handle = server.handle();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let mut client = TcpStream::connect(addr)?;
//! client.write_all(b"hello\nwor")?;
//! client.write_all(b"ld!\n")?;
//! let mut lines = BufReader::new(client).lines();
//! assert_eq!(lines.next().unwrap()?, "5");
//! assert_eq!(lines.next().unwrap()?, "6");
//! drop(lines); // our FIN: the server's lingering close ends at once
//!
//! handle.shutdown();
//! thread.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [mio]: https://docs.rs/mio

#![deny(missing_docs)]

pub mod admin;
pub mod buffer;
pub mod config;
pub mod connection;
pub mod control;
pub mod endpoint;
pub mod event_loop;
pub mod fault;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod rlimit;
pub mod server;
pub mod service;
pub mod socket;
pub mod stats;
pub mod supervisor;
pub mod systemd;
pub mod timer;
#[cfg(feature = "tls")]
pub mod tls;
pub mod udp;

pub use config::Config;
pub use control::{Exit, Handle, ServerHandle};
pub use endpoint::EndpointSpec;
pub use server::Server;
pub use service::{Output, Service, ServiceFactory};
