//! Memory per idle connection: loopd's own (user space), and the kernel's.
//!
//! Run with `cargo bench -p loopd-bench --bench footprint`. The release `loopd` runs as its own process;
//! 10,000 echo connections each make one 64-byte round trip and then sit idle.
//!
//! * **User space.** The growth of the server's resident set (VmRSS) divided by 10,000: what
//!   loopd itself keeps per connection. Target: at most 128 bytes.
//! * **The kernel.** What the same 10,000 connections cost outside any process: the growth
//!   of the slab caches (`/proc/slabinfo`, active objects times object size, and the `Slab`
//!   line of `/proc/meminfo`) and of TCP's socket-buffer memory (`/proc/net/sockstat`).
//!   Both ends of each connection live on this host — the client's socket (this process)
//!   and the server's — so socket, file and dentry objects count twice per connection;
//!   only the epoll registration (`eventpoll_*`) is the server's alone. Reading
//!   `/proc/slabinfo` needs root; without it that part says so.
//!
//! `FOOTPRINT_BASELINE=/path/to/loopd` measures another build's user-space figure beside this
//! one, in the same run, taking turns: before and after a change. (Idle TLS connections are
//! measured by `--bench tls_server`.)

mod support;

use std::collections::HashMap;

use support::{start_loopd, started, Server};

const IDLE_CONNECTIONS: usize = 10_000;

/// Rounds per build when a baseline is measured beside this tree; the median is printed.
const BASELINE_ROUNDS: usize = 2;

/// The kernel's memory, as far as it can be read from `/proc`.
#[derive(Default)]
struct Kernel {
    /// Slab cache name → (active objects, object size).
    slabs: HashMap<String, (u64, u64)>,
    /// `Slab:` of `/proc/meminfo`, bytes.
    slab_total: u64,
    /// `TCP: ... mem N` of `/proc/net/sockstat`, pages of socket buffers.
    tcp_mem_pages: u64,
}

impl Kernel {
    fn read() -> Kernel {
        let mut k = Kernel::default();
        if let Ok(info) = std::fs::read_to_string("/proc/slabinfo") {
            for line in info.lines().skip(2) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                if let (Some(name), Some(Ok(active)), Some(Ok(size))) = (
                    cols.first(),
                    cols.get(1).map(|v| v.parse()),
                    cols.get(3).map(|v| v.parse()),
                ) {
                    k.slabs.insert(name.to_string(), (active, size));
                }
            }
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        k.slab_total = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("Slab:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        k.tcp_mem_pages = sockstat
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .and_then(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                let at = cols.iter().position(|c| *c == "mem")?;
                cols.get(at + 1)?.parse().ok()
            })
            .unwrap_or(0);
        k
    }
}

/// The slab caches the kernel merged with each other (SLUB gives caches of one size and
/// flags a single store, listed under one name in `/proc/slabinfo`): name → the others.
/// `/sys/kernel/slab/NAME` is a link to the store of a merged cache.
fn merged_caches() -> HashMap<String, Vec<String>> {
    let mut stores: HashMap<std::path::PathBuf, Vec<String>> = HashMap::new();
    for entry in std::fs::read_dir("/sys/kernel/slab")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(store) = std::fs::read_link(entry.path()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            stores.entry(store).or_default().push(name);
        }
    }
    let mut merged = HashMap::new();
    for names in stores.values().filter(|n| n.len() > 1) {
        for name in names {
            let mut others: Vec<String> = names.iter().filter(|n| *n != name).cloned().collect();
            others.sort();
            merged.insert(name.clone(), others);
        }
    }
    merged
}

/// Bytes of resident memory per idle connection of the `loopd` at `binary`.
fn idle_footprint_of(binary: &std::path::Path) -> f64 {
    let server = started(Server::start_program(
        None,
        binary,
        &["--listen", "echo=127.0.0.1:0", "--max-connections", "20000"],
        &[],
    ));
    support::idle_footprint(&server, IDLE_CONNECTIONS)
}

fn main() {
    loopd::rlimit::raise_nofile_limit().expect("raise the open-files limit");
    let server = start_loopd(None, &["--max-connections", "20000"]);
    let (mut before, mut after) = (Kernel::default(), Kernel::default());
    let per = support::idle_footprint_observed(
        &server,
        IDLE_CONNECTIONS,
        || before = Kernel::read(),
        || after = Kernel::read(),
    );
    drop(server);
    println!("resident memory per idle connection ({IDLE_CONNECTIONS} echo connections, one round trip each)");
    match std::env::var_os("FOOTPRINT_BASELINE").map(std::path::PathBuf::from) {
        None => println!("  loopd: {per:.0} bytes per connection (target <= 128)"),
        Some(baseline) => {
            let this = support::loopd_release();
            let (mut ours, mut theirs) = (vec![per], Vec::new());
            for round in 0..BASELINE_ROUNDS {
                theirs.push(idle_footprint_of(&baseline));
                if round + 1 < BASELINE_ROUNDS {
                    ours.push(idle_footprint_of(&this));
                }
            }
            for (name, binary, results) in
                [("this tree", &this, ours), ("baseline", &baseline, theirs)]
            {
                println!(
                    "  {name} ({}): {:.0} bytes per connection {results:.0?} (target <= 128)",
                    binary.display(),
                    support::median(results.clone())
                );
            }
        }
    }
    println!(
        "  in-process: Connection is {} bytes; idle buffers own 0 bytes",
        std::mem::size_of::<loopd::connection::Connection<mio::net::TcpStream>>()
    );

    let n = IDLE_CONNECTIONS as f64;
    println!();
    println!(
        "kernel memory per idle connection (the same {IDLE_CONNECTIONS}; client and server \
         sockets both on this host)"
    );
    println!(
        "  slab (/proc/meminfo Slab): {:.0} bytes per connection, both ends",
        after.slab_total.saturating_sub(before.slab_total) as f64 / n
    );
    println!(
        "  socket buffers (/proc/net/sockstat TCP mem): {} pages for all of them",
        after.tcp_mem_pages as i64 - before.tcp_mem_pages as i64
    );
    if after.slabs.is_empty() {
        println!("  /proc/slabinfo is not readable here (it needs root): no breakdown");
        return;
    }
    let mut grown: Vec<(String, f64, f64)> = after
        .slabs
        .iter()
        .filter_map(|(name, &(active, size))| {
            let was = before.slabs.get(name).map_or(0, |&(a, _)| a);
            let objects = active.saturating_sub(was) as f64 / n;
            (objects >= 0.5).then(|| (name.clone(), objects, objects * size as f64))
        })
        .collect();
    grown.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("  by slab cache (/proc/slabinfo: active objects x object size, per connection):");
    let merged = merged_caches();
    for (name, objects, bytes) in &grown {
        let size = after.slabs[name].1;
        let also = merged
            .get(name)
            .map(|others| format!(" (one cache with {})", others.join(", ")))
            .unwrap_or_default();
        println!("    {name:<20} {objects:>5.2} x {size:>4} bytes = {bytes:>6.0} bytes{also}");
    }
    let total: f64 = grown.iter().map(|(_, _, b)| b).sum();
    println!("    {:<24} {:>5} {:>16.0} bytes", "total", "", total);
}
