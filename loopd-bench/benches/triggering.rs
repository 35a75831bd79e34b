//! Level against edge triggering, measured: the same echo loop both ways, and loopd.
//!
//! Run with `cargo bench -p loopd-bench --bench triggering`. Three servers, each its own
//! process pinned to CPU 0, loopd-bench's engine on CPU 1:
//!
//! * **C, level-triggered** — `benches/peers/echo_epoll.c` run as `lt`, compiled here with
//!   the system's `cc -O2`: one read per event, `EPOLLOUT` swapped in with `EPOLL_CTL_MOD`
//!   while a tail waits and swapped out again once it is written.
//! * **C, edge-triggered** — the same file run as `et`: registered once for both directions,
//!   never modified; reads until a short read or `EAGAIN`.
//! * **loopd** — the release daemon: edge-triggered through mio, WRITABLE asked for only
//!   while output waits.
//!
//! Five loads: single messages (64 bytes, one in flight on each of 50 connections), pipelined
//! messages (the same with 16 in flight), bulk (64 KiB messages on 4 connections), large
//! messages (1 MiB on 4 connections), and slow readers (64 KiB messages to clients whose
//! small receive buffer makes the server's writes come up short: the case where interest
//! changes). For
//! each, per echoed message: the system calls the server entered (`perf stat` on
//! `raw_syscalls:sys_enter`), how many of them were reads, writes, `epoll_wait` and
//! `epoll_ctl` (their tracepoints), and the server's CPU time (`/proc/PID/stat`, in runs
//! without perf attached). Then, for single messages, the share of each server's CPU that
//! `perf record` finds in epoll's own kernel code (`ep_*` functions and the socket's poll):
//! the re-polling a level-triggered set does inside `epoll_wait`, which no system-call count
//! shows. The servers take turns, [`ROUNDS`] rounds; the medians are printed, with each
//! server's CPU per message as a ratio to loopd's.

mod support;

use std::time::Duration;

use loopd_bench::{BenchConfig, Stop};
use support::{
    compile_epoll_peer, count_events, median, pin_current_thread, profile, start_loopd, started,
    Server,
};

/// Rounds per load; the servers take turns within each.
const ROUNDS: usize = 3;

/// One load: connections, message size, messages in flight per connection, and the
/// messages of one CPU-time run (the system-call counts use a fifth of them). A slow reader
/// is not loopd-bench but [`slow_readers`].
struct Load {
    name: &'static str,
    connections: usize,
    size: usize,
    pipeline: usize,
    messages: u64,
    slow_reader: bool,
}

/// The receive buffer of a slow reader's socket: small enough that the server's writes come
/// up short on every message (the kernel doubles it, and keeps a floor of a few KiB).
const SLOW_RCVBUF: usize = 4096;

const LOADS: [Load; 5] = [
    Load {
        name: "single messages (64 B, 1 in flight, 50 connections)",
        connections: 50,
        size: 64,
        pipeline: 1,
        messages: 300_000,
        slow_reader: false,
    },
    Load {
        name: "pipelined messages (64 B, 16 in flight, 50 connections)",
        connections: 50,
        size: 64,
        pipeline: 16,
        messages: 1_500_000,
        slow_reader: false,
    },
    Load {
        name: "bulk (64 KiB, 1 in flight, 4 connections)",
        connections: 4,
        size: 64 * 1024,
        pipeline: 1,
        messages: 30_000,
        slow_reader: false,
    },
    Load {
        name: "large (1 MiB, 1 in flight, 4 connections)",
        connections: 4,
        size: 1024 * 1024,
        pipeline: 1,
        messages: 2_000,
        slow_reader: false,
    },
    Load {
        name: "slow readers (64 KiB, 4 connections reading through a 4 KiB receive buffer)",
        connections: 4,
        size: 64 * 1024,
        pipeline: 1,
        messages: 4_000,
        slow_reader: true,
    },
];

/// The events counted per message, and their column names.
const EVENTS: [&str; 9] = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_epoll_ctl",
];

const NAMES: [&str; 3] = [
    "C, level-triggered",
    "C, edge-triggered",
    "loopd (mio, edge)",
];

fn start(which: usize, peer: &std::path::Path) -> Server {
    match which {
        0 => started(Server::start_program(Some(0), peer, &["lt"], &[])),
        1 => started(Server::start_program(Some(0), peer, &["et"], &[])),
        _ => start_loopd(Some(0), &[]),
    }
}

/// A closed-loop run of `messages` round trips of `load` against `server`, every byte
/// verified; returns the messages done.
fn run(server: &Server, load: &Load, messages: u64) -> u64 {
    if load.slow_reader {
        return slow_readers(server.addr(), load, messages);
    }
    let mut cfg = BenchConfig::new(server.addr());
    cfg.connections = load.connections;
    cfg.size = load.size;
    cfg.pipeline = load.pipeline;
    cfg.stop = Stop::Count(messages);
    cfg.warmup = Duration::ZERO;
    let report = loopd_bench::run(&cfg, |_| {}).expect("bench run");
    if let Err(why) = report.verdict() {
        panic!("the run failed: {why}\n{report}");
    }
    report.messages
}

/// `load.connections` clients whose receive buffer is [`SLOW_RCVBUF`]: each writes its share
/// of `messages` messages of `load.size` bytes from one thread and reads the echo from
/// another, checking every byte, so the server's writes keep finding the socket full.
/// Returns the messages echoed.
fn slow_readers(addr: std::net::SocketAddr, load: &Load, messages: u64) -> u64 {
    use socket2::{Domain, Socket, Type};
    use std::io::{Read, Write};
    let per = messages / load.connections as u64;
    let clients: Vec<_> = (0..load.connections)
        .map(|i| {
            let size = load.size;
            std::thread::spawn(move || {
                let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                socket.set_recv_buffer_size(SLOW_RCVBUF).unwrap();
                socket.connect(&addr.into()).expect("connect");
                let mut reader: std::net::TcpStream = socket.into();
                reader.set_nodelay(true).unwrap();
                let mut writer = reader.try_clone().unwrap();
                let message = vec![b'a' + i as u8; size];
                let sent = message.clone();
                let w = std::thread::spawn(move || {
                    for _ in 0..per {
                        writer.write_all(&sent).unwrap();
                    }
                });
                let (mut got, mut buf) = (0, vec![0; SLOW_RCVBUF]);
                while got < per as usize * size {
                    let n = reader.read(&mut buf).unwrap();
                    assert!(n > 0, "the server closed early");
                    assert!(buf[..n].iter().all(|&b| b == message[0]), "echo differs");
                    got += n;
                }
                w.join().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    per * load.connections as u64
}

/// Per-message figures of one server under one load.
#[derive(Default)]
struct Figures {
    syscalls: Vec<f64>,
    reads: Vec<f64>,
    writes: Vec<f64>,
    waits: Vec<f64>,
    ctls: Vec<f64>,
    cpu_us: Vec<f64>,
}

fn measure(server: &Server, load: &Load, into: &mut Figures) {
    let counted = load.messages / 5;
    if let Some((c, done)) =
        count_events(server.pid() as u32, &EVENTS, || run(server, load, counted))
    {
        let per = |n: u64| n as f64 / done as f64;
        into.syscalls.push(per(c[0]));
        into.reads.push(per(c[1] + c[2]));
        into.writes.push(per(c[3] + c[4] + c[5]));
        into.waits.push(per(c[6] + c[7]));
        into.ctls.push(per(c[8]));
    }
    let before = server.cpu_time();
    let done = run(server, load, load.messages);
    let cpu = server.cpu_time() - before;
    into.cpu_us.push(cpu.as_secs_f64() * 1e6 / done as f64);
}

fn cell(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        "n/a".into()
    } else {
        format!("{:.*}", digits, median(v.to_vec()))
    }
}

/// The share of samples in epoll's own kernel code: the functions that gather and re-check
/// ready items (`ep_*`, `__ep_*`) and the socket's poll they call (`tcp_poll`, `sock_poll`).
fn epoll_share(shares: &[(String, f64)]) -> f64 {
    shares
        .iter()
        .filter(|(sym, _)| {
            let sym = sym.trim_start_matches('_');
            sym.starts_with("ep_") || sym == "tcp_poll" || sym == "sock_poll"
        })
        .map(|(_, share)| share)
        .sum()
}

fn main() {
    let peer = compile_epoll_peer();
    let servers: Vec<Server> = (0..3).map(|i| start(i, &peer)).collect();
    pin_current_thread(1).expect("pin the client to CPU 1");

    println!(
        "level against edge triggering: per echoed message, servers on CPU 0, loopd-bench on \
         CPU 1, medians of {ROUNDS} alternating rounds"
    );
    for load in &LOADS {
        for s in &servers {
            run(s, load, load.messages / 10); // warm-up: connections, caches, allocator
        }
        let mut figures: Vec<Figures> = (0..3).map(|_| Figures::default()).collect();
        for _ in 0..ROUNDS {
            for (s, f) in servers.iter().zip(&mut figures) {
                measure(s, load, f);
            }
        }
        let loopd_cpu = median(figures[2].cpu_us.clone());
        println!();
        println!("{}", load.name);
        println!();
        println!("| server | syscalls | reads | writes | epoll_wait | epoll_ctl | server CPU µs | ratio |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, f) in NAMES.iter().zip(&figures) {
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} | {:.2} |",
                cell(&f.syscalls, 3),
                cell(&f.reads, 3),
                cell(&f.writes, 3),
                cell(&f.waits, 3),
                cell(&f.ctls, 3),
                cell(&f.cpu_us, 2),
                median(f.cpu_us.clone()) / loopd_cpu
            );
        }
    }

    println!();
    println!(
        "{}: where each server's CPU goes (perf record)",
        LOADS[0].name
    );
    println!();
    println!("| server | epoll's own kernel code (ep_*, tcp_poll, sock_poll) | largest symbols |");
    println!("|---|---:|---|");
    for (name, s) in NAMES.iter().zip(&servers) {
        match profile(s.pid() as u32, || run(s, &LOADS[0], LOADS[0].messages)) {
            Some((shares, _)) => {
                let top: Vec<String> = shares
                    .iter()
                    .take(4)
                    .map(|(sym, share)| format!("{sym} {share:.1}%"))
                    .collect();
                println!(
                    "| {name} | {:.1}% | {} |",
                    epoll_share(&shares),
                    top.join(", ")
                );
            }
            None => println!("| {name} | n/a (perf record is not available here) | |"),
        }
    }
}
