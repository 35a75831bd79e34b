//! TLS on the server, side by side in one run: loopd's `,tls` listeners against nginx's
//! stream `ssl` (one worker, OpenSSL) and `openssl s_server`, each server pinned to CPU 0 and
//! driven by the same client, loopd-bench, pinned to CPU 1.
//!
//! ```sh
//! cargo bench -p loopd-bench --bench tls_server
//! ```
//!
//! 1. **Handshakes** on one loop (one worker, one process): full (`--tls-resume 0`) and
//!    resumed (`--tls-resume 100`) TLS 1.3 handshakes per second, with an ECDSA P-256 and an
//!    RSA-2048 certificate, and the server's CPU per handshake (`/proc/PID/stat` over the
//!    measured window, accept and close included) — the figure the ratio to nginx is of.
//!    Every server speaks first and closes (loopd `daytime`, nginx `return`), so each
//!    connection is: connect, handshake, one line, `close_notify` both ways. Key exchange
//!    X25519 for all three (OpenSSL 3.0 has no post-quantum group); cipher suite as the
//!    client prefers.
//! 2. **Echo throughput**: 64 KiB messages over TLS against plaintext, one loop, the same
//!    loopd, MiB/s and server CPU per MiB.
//! 3. **Latency under a handshake flood**: established TLS echo connections at a fixed rate
//!    (open loop: latency from each message's intended send time), p99 alone and while other
//!    clients make full handshakes as fast as they can on the same loop — with the default
//!    handshake budget, and with none (`--tls-handshake-budget` beyond any burst).
//! 4. **Resident bytes per idle TLS connection** (and per idle plain one, on the same
//!    server): RSS growth over 2,000 connections that each made one round trip.
//!
//! Rounds take turns between the servers; medians are printed. Tunables: `TLS_BENCH_SECS`
//! (default 4) per run, `TLS_BENCH_ROUNDS` (3), `TLS_BENCH_CONNECTIONS` (loopd-bench's `-c`
//! for handshakes, 16), `TLS_BENCH_FLOOD` (its `-c` for the flood beside the echo, 64),
//! `TLS_BENCH_IDLE` (2000).

mod support;
#[path = "../tests/tls_peers/mod.rs"]
mod tls_peers;

// loopd's test helpers, through the benchmarks' support, as `tls_peers` expects them.
use support::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::Value;

use support::{median, settled_rss, Server};
use tls_peers::{require, Nginx, Pki, SServer};

/// The servers' core, and the client's.
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An RSA-2048 certificate for localhost signed by `pki`'s CA (rcgen generates ECDSA only
/// here): `(chain, key)`.
fn rsa_certificate(pki: &Pki) -> (PathBuf, PathBuf) {
    let openssl = require("openssl", "openssl");
    let dir = &pki.dir;
    let (key, csr, cert, ext, chain) = (
        dir.join("rsa-key.pem"),
        dir.join("rsa.csr"),
        dir.join("rsa.pem"),
        dir.join("rsa.ext"),
        dir.join("rsa-chain.pem"),
    );
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&openssl).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |p: &Path| p.to_str().unwrap().to_string();
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&pki.ca),
        "-CAkey",
        &p(&pki.ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    let pem = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&pki.ca).unwrap();
    std::fs::write(&chain, pem).unwrap();
    (chain, key)
}

/// A server under test: what the client connects to, and whose CPU is counted.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
}

/// What one loopd-bench run reported.
struct Run {
    json: Value,
}

impl Run {
    fn f(&self, path: &[&str]) -> Option<f64> {
        let mut v = &self.json;
        for key in path {
            v = v.get(key)?;
        }
        v.as_f64()
    }
}

/// Runs loopd-bench against `addr` with `args`, pinned to the client's core, counting the
/// CPU of process `pid` over its measured window; its JSON report.
fn loopd_bench(addr: SocketAddr, pid: u32, args: &[&str], json: &Path) -> Run {
    loopd_bench_as(&["nice", "-n", "0"], addr, pid, args, json)
}

/// [`loopd_bench`] run under `prefix` (`nice -n 19`, `chrt -f 50`): a client that loads
/// the server as fast as it can yields the shared client core to one that measures latency.
fn loopd_bench_as(prefix: &[&str], addr: SocketAddr, pid: u32, args: &[&str], json: &Path) -> Run {
    let out = Command::new(prefix[0])
        .args(&prefix[1..])
        .arg("taskset")
        .arg("-c")
        .arg(CLIENT_CPU.to_string())
        .arg(env!("CARGO_BIN_EXE_loopd-bench"))
        .arg(addr.to_string())
        .args(args)
        .args([
            "--server-pid",
            &pid.to_string(),
            "--json",
            json.to_str().unwrap(),
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loopd-bench {args:?} against {addr}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        json: serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap(),
    }
}

/// The client options every TLS run shares.
fn tls_args(pki: &Pki) -> Vec<String> {
    [
        "--cacert",
        pki.ca.to_str().unwrap(),
        "--tls-sni",
        "localhost",
        "--tls-version",
        "1.3",
        "--tls-groups",
        "X25519",
    ]
    .map(String::from)
    .to_vec()
}

/// The release loopd pinned to the servers' core with `args`.
fn loopd(args: &[&str]) -> Server {
    let server = Server::start_program(Some(SERVER_CPU), &support::loopd_release(), args, &[]);
    server.addr();
    server
}

/// One handshake measurement: rate, server and client CPU per handshake, p99 latency.
#[derive(Clone, Copy, Default)]
struct Handshakes {
    rate: f64,
    server_us: f64,
    client_us: f64,
    p99_us: f64,
}

fn handshakes(
    t: &Target,
    pki: &Pki,
    resumed: bool,
    secs: u64,
    conns: u64,
    dir: &Path,
) -> Handshakes {
    let kind = if resumed { "resumed" } else { "full" };
    let mut args: Vec<String> = [
        "-m",
        "handshake",
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{secs}s"),
        "--warmup",
        "1s",
        "--tls-resume",
        if resumed { "100" } else { "0" },
    ]
    .map(String::from)
    .to_vec();
    args.extend(tls_args(pki));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = loopd_bench(
        t.addr,
        t.pid,
        &args,
        &dir.join(format!("{}-{kind}.json", t.name)),
    );
    let done = r.f(&["tls", "handshakes", kind]).unwrap_or(0.0);
    let other = r
        .f(&[
            "tls",
            "handshakes",
            if resumed { "full" } else { "resumed" },
        ])
        .unwrap_or(0.0);
    assert!(
        done > 10.0 * other.max(1.0),
        "{}: {done} {kind} handshakes, {other} of the other kind",
        t.name
    );
    Handshakes {
        rate: done / r.f(&["duration_secs"]).unwrap(),
        server_us: r.f(&["cpu", "server", "us_per_handshake"]).unwrap(),
        client_us: r.f(&["cpu", "client", "us_per_handshake"]).unwrap(),
        p99_us: r
            .f(&["tls", "handshake_latency", kind, "p99_us"])
            .unwrap_or(f64::NAN),
    }
}

fn medians(runs: &[Handshakes]) -> Handshakes {
    let m = |f: fn(&Handshakes) -> f64| median(runs.iter().map(f).collect());
    Handshakes {
        rate: m(|h| h.rate),
        server_us: m(|h| h.server_us),
        client_us: m(|h| h.client_us),
        p99_us: m(|h| h.p99_us),
    }
}

/// Part 1: handshakes per second and server CPU per handshake, loopd against nginx and
/// s_server, for one certificate.
fn handshake_table(
    pki: &Pki,
    cert: &str,
    chain: &Path,
    key: &Path,
    secs: u64,
    rounds: usize,
    conns: u64,
) {
    let loopd = loopd(&[
        "-l",
        "daytime=127.0.0.1:0,tls",
        "--tls-cert",
        chain.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let nginx = Nginx::start_with(
        pki,
        chain,
        key,
        "ssl_protocols TLSv1.3; ssl_session_cache shared:tls:10m; ssl_session_tickets on;",
        Some(SERVER_CPU),
    );
    let s_server = SServer::start_with(chain, key, &["-tls1_3"], Some(SERVER_CPU));
    let targets = [
        Target {
            name: "loopd",
            addr: loopd.addr(),
            pid: loopd.pid() as u32,
        },
        Target {
            name: "nginx",
            addr: nginx.addr,
            pid: nginx.worker_pid(),
        },
        Target {
            name: "s_server",
            addr: s_server.addr,
            pid: s_server.pid(),
        },
    ];
    for resumed in [false, true] {
        let mut runs: Vec<Vec<Handshakes>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (t, r) in targets.iter().zip(&mut runs) {
                r.push(handshakes(t, pki, resumed, secs, conns, &pki.dir));
            }
        }
        let m: Vec<Handshakes> = runs.iter().map(|r| medians(r)).collect();
        let nginx_us = m[1].server_us;
        for (t, h) in targets.iter().zip(&m) {
            println!(
                "| {cert} | {} | {} | {:.0} | {:.1} | {:.2} | {:.1} | {:.2} ms |",
                if resumed { "resumed" } else { "full" },
                t.name,
                h.rate,
                h.server_us,
                h.server_us / nginx_us,
                h.client_us,
                h.p99_us / 1000.0,
            );
        }
    }
}

/// Part 2: 64 KiB echo over TLS and over plaintext, on one loopd.
fn echo_throughput(pki: &Pki, secs: u64, rounds: usize) {
    let server = loopd(&[
        "-l",
        "echo=127.0.0.1:0",
        "-l",
        "echo=127.0.0.1:0,tls",
        "--tls-cert",
        pki.chain.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ]);
    let addrs = server.addrs();
    let pid = server.pid() as u32;
    let base = [
        "-s",
        "64KiB",
        "-c",
        "4",
        "-d",
        &format!("{secs}s"),
        "--warmup",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for (name, addr, tls) in [
        ("plaintext", addrs[0].1, false),
        ("TLS 1.3", addrs[1].1, true),
    ] {
        let mut mib = Vec::new();
        let mut cpu = Vec::new();
        for round in 0..rounds {
            let mut args = base.clone();
            if tls {
                args.push("--tls".into());
                args.extend(tls_args(pki));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = loopd_bench(
                addr,
                pid,
                &args,
                &pki.dir.join(format!("echo-{tls}-{round}.json")),
            );
            let rate = r.f(&["rates", "mib_per_sec_received"]).unwrap();
            mib.push(rate);
            // µs per 64 KiB message, so per MiB sixteen times that.
            cpu.push(r.f(&["cpu", "server", "us_per_message"]).unwrap() * 16.0);
        }
        rows.push((name, median(mib), median(cpu)));
    }
    let (plain_mib, plain_cpu) = (rows[0].1, rows[0].2);
    for (name, mib, cpu) in rows {
        println!(
            "| {name} | {mib:.0} | {:.2} | {cpu:.0} | {:.2} |",
            mib / plain_mib,
            cpu / plain_cpu
        );
    }
}

/// Part 3: p99 of established TLS echo connections at a fixed rate, alone and beside a
/// flood of full handshakes on the same loop, with the default handshake budget and with
/// one larger than any burst (every queued handshake in one turn).
///
/// Latency on a shared machine is mostly other tenants' doing (a fuzzer or a build on the
/// server's core preempts it for milliseconds), so when the system allows it (`chrt -f`)
/// the server and the echo client run at real-time priorities, above everything else but
/// each other: what the echo's latency then shows is the server's own scheduling of its
/// work. The flood client runs at normal priority, as fast as its core lets it.
fn latency_under_flood(pki: &Pki, secs: u64, conns: u64) {
    let realtime = Command::new("chrt")
        .args(["-f", "50", "true"])
        .status()
        .is_ok_and(|s| s.success());
    println!(
        "({}; the flood client at normal priority)",
        if realtime {
            "loopd at SCHED_FIFO 40 and the echo client at SCHED_FIFO 50"
        } else {
            "chrt -f is not allowed here: every process at normal priority"
        }
    );
    let mut echo_args: Vec<String> = [
        "-s",
        "64",
        "-c",
        "8",
        "--rate",
        "4000",
        "-d",
        &format!("{secs}s"),
        "--warmup",
        "1s",
        "--tls",
    ]
    .map(String::from)
    .to_vec();
    echo_args.extend(tls_args(pki));
    let echo_args: Vec<&str> = echo_args.iter().map(String::as_str).collect();
    let mut flood_args: Vec<String> = [
        "-m",
        "handshake",
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{}s", secs + 2),
        "--warmup",
        "0s",
        "--tls-resume",
        "0",
    ]
    .map(String::from)
    .to_vec();
    flood_args.extend(tls_args(pki));
    let flood_args: Vec<&str> = flood_args.iter().map(String::as_str).collect();
    let ms = |r: &Run, q: &str| r.f(&["latency", q]).unwrap_or(f64::NAN) / 1000.0;
    let echo_prio: &[&str] = if realtime {
        &["chrt", "-f", "50"]
    } else {
        &["nice", "-n", "0"]
    };
    for budget in ["4", "1000000"] {
        let mut cmd = Command::new(if realtime { "chrt" } else { "nice" });
        cmd.args(if realtime { ["-f", "40"] } else { ["-n", "0"] })
            .args(["taskset", "-c", &SERVER_CPU.to_string()])
            .arg(support::loopd_release())
            .args([
                "-l",
                "echo=127.0.0.1:0,tls",
                "-l",
                "daytime=127.0.0.1:0,tls",
            ])
            .args(["--tls-cert", pki.chain.to_str().unwrap()])
            .args(["--tls-key", pki.key.to_str().unwrap()])
            .args(["--tls-handshake-budget", budget])
            .env("RUST_LOG", "info");
        let server = Server::spawn(cmd);
        let (echo, daytime) = (server.addr_of("echo"), server.addr_of("daytime"));
        let pid = server.pid() as u32;
        let label = if budget == "4" {
            "4 (default)"
        } else {
            "unbounded"
        };
        let json = pki.dir.join(format!("alone-{budget}.json"));
        let alone = loopd_bench_as(echo_prio, echo, pid, &echo_args, &json);
        let (beside, flood) = std::thread::scope(|s| {
            let flood = s.spawn(|| {
                let json = pki.dir.join(format!("flood-{budget}.json"));
                loopd_bench(daytime, pid, &flood_args, &json)
            });
            let json = pki.dir.join(format!("beside-{budget}.json"));
            let beside = loopd_bench_as(echo_prio, echo, pid, &echo_args, &json);
            (beside, flood.join().unwrap())
        });
        for (what, r, rate) in [
            ("alone", &alone, None),
            (
                "beside a handshake flood",
                &beside,
                flood.f(&["rates", "handshakes_per_sec"]),
            ),
        ] {
            println!(
                "| {what} | {label} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
                rate.map_or("—".to_string(), |r| format!("{r:.0}")),
                ms(r, "p50_us"),
                ms(r, "p99_us"),
                ms(r, "p99_9_us"),
                ms(r, "max_us")
            );
        }
    }
}

/// A TLS client connection that completed its handshake and one round trip.
type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_client(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Client {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    s.write_all(&[0x5a; 64]).unwrap();
    let mut back = [0; 64];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, [0x5a; 64]);
    s
}

/// Part 4: resident bytes per idle connection, TLS and plain, on one loopd.
fn idle_footprint(pki: &Pki, n: usize) {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let server = Server::start_program(
        None,
        &support::loopd_release(),
        &[
            "-l",
            "echo=127.0.0.1:0",
            "-l",
            "echo=127.0.0.1:0,tls",
            "--tls-cert",
            pki.chain.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
            "--max-connections",
            "20000",
        ],
        &[],
    );
    let addrs = server.addrs();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    // Warm-up: the server's one-off allocations (the first handshakes, the scratch buffers).
    for _ in 0..64 {
        drop(tls_client(addrs[1].1, &config));
        let mut c = TcpStream::connect(addrs[0].1).unwrap();
        c.write_all(&[1; 64]).unwrap();
        c.read_exact(&mut [0; 64]).unwrap();
    }
    let before = settled_rss(&server);
    let tls: Vec<Client> = (0..n).map(|_| tls_client(addrs[1].1, &config)).collect();
    let after_tls = settled_rss(&server);
    let plain: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(addrs[0].1).unwrap();
            c.write_all(&[2; 64]).unwrap();
            c.read_exact(&mut [0; 64]).unwrap();
            c
        })
        .collect();
    let after_plain = settled_rss(&server);
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64;
    println!(
        "| TLS 1.3 | {n} | {:.0} | {:.1} KiB |",
        per(after_tls, before),
        per(after_tls, before) / 1024.0
    );
    println!("| plain | {n} | {:.0} | — |", per(after_plain, after_tls));
    drop((tls, plain));
}

fn main() {
    let secs = env_or("TLS_BENCH_SECS", 4);
    let rounds = env_or("TLS_BENCH_ROUNDS", 3) as usize;
    let conns = env_or("TLS_BENCH_CONNECTIONS", 16);
    let idle = env_or("TLS_BENCH_IDLE", 2000) as usize;
    let flood = env_or("TLS_BENCH_FLOOD", 64);
    require("taskset", "util-linux");
    loopd::rlimit::raise_nofile_limit().expect("raise the open-files limit");
    let pki = Pki::new("tls-server");
    let (rsa_chain, rsa_key) = rsa_certificate(&pki);
    println!(
        "servers pinned to CPU {SERVER_CPU}, loopd-bench to CPU {CLIENT_CPU}; TLS 1.3, key \
         exchange X25519; {rounds} rounds of {secs} s each, taking turns; medians\n"
    );
    println!("TLS 1.3 handshakes on one loop (loopd daytime,tls; nginx stream ssl, 1 worker; openssl s_server), loopd-bench -m handshake -c {conns}");
    println!("| certificate | handshake | server | handshakes/s | server CPU µs/handshake | ÷ nginx | client CPU µs/handshake | p99 handshake |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    handshake_table(
        &pki,
        "ECDSA P-256",
        &pki.chain,
        &pki.key,
        secs,
        rounds,
        conns,
    );
    handshake_table(&pki, "RSA-2048", &rsa_chain, &rsa_key, secs, rounds, conns);

    println!("\nEcho, 64 KiB messages, 4 connections, one loop (loopd-bench -s 64KiB -c 4)");
    println!("| transport | MiB/s | ÷ plaintext | server CPU µs/MiB | ÷ plaintext |");
    println!("|---|---:|---:|---:|---:|");
    echo_throughput(&pki, secs, rounds);

    println!(
        "\nEstablished TLS echo connections (8, 64-byte messages, open loop at 4,000/s), alone \
         and while loopd-bench -m handshake -c {flood} makes full handshakes on the same loop"
    );
    println!("| echo | handshake budget | handshakes/s beside | p50 | p99 | p99.9 | max |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    latency_under_flood(&pki, secs, flood);

    println!(
        "\nResident memory per idle connection (RSS growth; each made one 64-byte round trip)"
    );
    println!("| connection | count | bytes each | |");
    println!("|---|---:|---:|---|");
    idle_footprint(&pki, idle);
}
