//! Is loopd-bench cheap enough to measure a server? Its engine against a
//! thread-per-connection blocking client, both driving the same loopd.
//!
//! Run with `cargo bench -p loopd-bench --bench client`. loopd is pinned to CPU 0 and the client under
//! test to CPU 1; 50 connections, 64-byte messages, closed loop, one message in flight per
//! connection. The two clients alternate for [`ROUNDS`] rounds against the same server
//! process, and the medians are compared. Printed: each client's message rate, the ratio
//! (target: loopd-bench at least 1.2x the blocking client), and how busy each client keeps
//! the server's core.

mod support;

use std::time::Instant;

use support::{blocking_client, drive, median, pin_current_thread, start_loopd, Server};

const CONNECTIONS: usize = 50;
const MESSAGE: usize = 64;
/// Seconds per measurement; long enough for thousands of samples per connection.
const SECS: f64 = 4.0;
/// Alternations of the two clients; the median damps one-off interference.
const ROUNDS: usize = 3;

/// Runs `f` and returns its result with the share of a core the server used meanwhile.
fn with_server_cpu<T>(server: &Server, f: impl FnOnce() -> T) -> (T, f64) {
    let (cpu, start) = (server.cpu_time(), Instant::now());
    let result = f();
    let busy = (server.cpu_time() - cpu).as_secs_f64() / start.elapsed().as_secs_f64();
    (result, busy)
}

fn main() {
    let server = start_loopd(Some(0), &[]);
    pin_current_thread(1).expect("pin the clients to CPU 1");
    let (mut ours, mut theirs, mut ours_busy, mut theirs_busy) = (vec![], vec![], vec![], vec![]);
    for round in 1..=ROUNDS {
        let (report, busy) = with_server_cpu(&server, || {
            drive(server.addr(), CONNECTIONS, MESSAGE, SECS, None)
        });
        ours.push(report.rates.messages_per_sec);
        // The warm-up second is outside the rate but inside the CPU window: same load.
        ours_busy.push(busy);
        let (rate, busy) = with_server_cpu(&server, || {
            blocking_client(server.addr(), CONNECTIONS, MESSAGE, SECS)
        });
        theirs.push(rate);
        theirs_busy.push(busy);
        println!(
            "  round {round}: loopd-bench {:.0} msg/s (server {:.0}% busy), blocking {:.0} msg/s (server {:.0}% busy)",
            ours[round - 1],
            ours_busy[round - 1] * 100.0,
            theirs[round - 1],
            theirs_busy[round - 1] * 100.0
        );
    }
    let (a, b) = (median(ours), median(theirs));
    println!("client efficiency: {CONNECTIONS} connections, {MESSAGE}-byte messages, loopd on CPU 0, client on CPU 1");
    println!("| client | messages/s | loopd's core busy |");
    println!("|---|---:|---:|");
    println!(
        "| loopd-bench (1 thread, mio) | {a:.0} | {:.0}% |",
        median(ours_busy) * 100.0
    );
    println!(
        "| thread per connection, blocking | {b:.0} | {:.0}% |",
        median(theirs_busy) * 100.0
    );
    println!(
        "ratio loopd-bench / blocking: {:.2}x (target >= 1.2x)",
        a / b
    );
}
