//! Shared by the end-to-end benchmarks: the release `loopd` binary as a child process, and
//! an event-driven closed-loop echo client cheap enough not to be the bottleneck.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// The release `loopd` binary, serving echo on an ephemeral loopback port.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Server::start_on(None, extra)
    }

    /// Starts loopd, pinned to `cpu` if given (with `taskset`).
    pub fn start_on(cpu: Option<usize>, extra: &[&str]) -> Server {
        let mut args = vec!["--listen", "echo=127.0.0.1:0", "-q"];
        args.extend_from_slice(extra);
        Server::spawn(cpu, env!("CARGO_BIN_EXE_loopd"), &args, &[])
    }

    /// Starts `program` with `args` and `env`, pinned to `cpu` if given, and waits for the
    /// line `listening on echo=ADDR` on its standard error, as loopd logs it.
    pub fn spawn(cpu: Option<usize>, program: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), program]);
                c
            }
            None => Command::new(program),
        };
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server exited during start-up")
                .unwrap();
            if let Some(spec) = line.split("listening on ").nth(1) {
                let first = spec.split_whitespace().next().unwrap();
                break first.split_once('=').unwrap().1.parse().unwrap();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory-safety requirements.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        kb * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client connection in the closed loop: one message in flight at a time.
struct Conn {
    stream: TcpStream,
    /// Bytes of the current message written so far.
    sent: usize,
    /// Bytes of its echo received so far.
    received: usize,
}

/// A single-threaded mio client keeping one `size`-byte message in flight on each of
/// `conns` connections, checking every echoed byte.
pub struct ClosedLoop {
    poll: Poll,
    events: Option<Events>,
    conns: Vec<Conn>,
    msg: Vec<u8>,
    buf: Vec<u8>,
}

impl ClosedLoop {
    pub fn connect(addr: SocketAddr, conns: usize, size: usize) -> io::Result<ClosedLoop> {
        let poll = Poll::new()?;
        let mut list = Vec::with_capacity(conns);
        for i in 0..conns {
            let std = std::net::TcpStream::connect(addr)?;
            std.set_nodelay(true)?;
            std.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(std);
            poll.registry()
                .register(&mut stream, Token(i), Interest::READABLE)?;
            list.push(Conn {
                stream,
                sent: 0,
                received: 0,
            });
        }
        let msg = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        Ok(ClosedLoop {
            poll,
            events: Some(Events::with_capacity(1024)),
            conns: list,
            msg,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Runs until `messages` round trips completed or `limit` passed; returns the number of
    /// completed round trips.
    pub fn run(&mut self, messages: u64, limit: Duration) -> io::Result<u64> {
        let deadline = Instant::now() + limit;
        let mut done = 0u64;
        let mut in_flight = 0u64;
        for i in 0..self.conns.len() {
            if in_flight < messages {
                self.send(i)?;
                in_flight += 1;
            }
        }
        let mut events = self.events.take().unwrap();
        while done < messages && Instant::now() < deadline {
            self.poll
                .poll(&mut events, Some(Duration::from_millis(100)))?;
            for i in events.iter().map(|e| e.token().0) {
                // Like the server: a short read means the socket is drained, so no second
                // read just to see WouldBlock.
                loop {
                    let c = &mut self.conns[i];
                    let n = match c.stream.read(&mut self.buf) {
                        Ok(0) => {
                            return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed"))
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    };
                    assert!(c.received + n <= self.msg.len(), "more echoed than sent");
                    let expect = &self.msg[c.received..c.received + n];
                    assert_eq!(&self.buf[..n], expect, "echo mismatch");
                    c.received += n;
                    if c.received == self.msg.len() {
                        c.received = 0;
                        c.sent = 0;
                        done += 1;
                        in_flight -= 1;
                        if done + in_flight < messages {
                            self.send(i)?;
                            in_flight += 1;
                        }
                    }
                    if n < self.buf.len() {
                        break;
                    }
                }
            }
        }
        self.events = Some(events);
        Ok(done)
    }

    fn send(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        // Small messages fit the send buffer; a short write here would be a client bug.
        let n = c.stream.write(&self.msg)?;
        assert_eq!(n, self.msg.len(), "short write of a small message");
        c.sent = n;
        Ok(())
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Counts the system calls a process enters while `f` runs, with `perf stat`. `None` when
/// perf or its tracepoint is not available here.
pub fn count_syscalls<T>(pid: u32, f: impl FnOnce() -> T) -> Option<(u64, T)> {
    let mut perf = Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter",
            "-p",
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // perf attaches asynchronously; the server is idle now, so this pause counts nothing.
    std::thread::sleep(Duration::from_millis(500));
    let result = f();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on a child's pid.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    perf.stderr.take().unwrap().read_to_string(&mut err).ok()?;
    perf.wait().ok()?;
    let count = err
        .lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((count, result))
}

/// Which system calls a process makes, by name, while `f` runs (strace -c), for the
/// breakdown printed beside the perf total.
pub fn syscall_breakdown(pid: u32, f: impl FnOnce()) -> Option<HashMap<String, u64>> {
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    f();
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on a child's pid.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let mut err = String::new();
    strace
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .ok()?;
    strace.wait().ok()?;
    let mut calls = HashMap::new();
    for line in err.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if cols.len() >= 5 && cols[0].parse::<f64>().is_ok() {
            let name = cols[cols.len() - 1].to_string();
            if let Ok(n) = cols[3].parse() {
                calls.insert(name, n);
            }
        }
    }
    Some(calls)
}

/// A closed-loop run of loopd-bench's engine against `addr` (in this process, on this
/// thread's CPU): `conns` connections, `size`-byte messages, for `secs` after a 1 s warm-up;
/// open loop at `rate` if given.
pub fn drive(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    secs: f64,
    rate: Option<f64>,
) -> loopd::bench::Report {
    let mut cfg = loopd::bench::BenchConfig::new(addr);
    cfg.connections = conns;
    cfg.size = size;
    cfg.stop = loopd::bench::Stop::After(Duration::from_secs_f64(secs));
    cfg.warmup = Duration::from_secs(1);
    cfg.rate = rate;
    let report = loopd::bench::run(&cfg, |_| {}).expect("bench run");
    assert_eq!(report.error_total(), 0, "verification errors: {report}");
    report
}

/// The thread-per-connection blocking client: `conns` threads, each writing a `size`-byte
/// message and reading its echo until `secs` have passed. Returns messages per second.
/// Threads inherit the calling thread's CPU affinity.
pub fn blocking_client(addr: SocketAddr, conns: usize, size: usize, secs: f64) -> f64 {
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).unwrap();
                let msg: Vec<u8> = (0..size).map(|k| (k + i) as u8).collect();
                let mut back = vec![0; size];
                let mut done = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        return done;
                    }
                    s.write_all(&msg).unwrap();
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg, "echo mismatch");
                    if now >= start {
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / secs
}

/// Waits until a process's RSS stops changing (allocator and page-table settling).
pub fn settled_rss(server: &Server) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = server.rss();
    loop {
        std::thread::sleep(Duration::from_millis(200)); // a sampling interval
        let now = server.rss();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Resident bytes per idle connection: RSS growth while `n` connections each make one
/// 64-byte round trip and then sit idle, after warming up the server's one-off allocations
/// with a few large exchanges.
pub fn idle_footprint(server: &Server, n: usize) -> f64 {
    let big = vec![0xA5u8; 256 * 1024];
    for _ in 0..16 {
        let mut c = std::net::TcpStream::connect(server.addr).unwrap();
        let mut w = c.try_clone().unwrap();
        let data = big.clone();
        let t = std::thread::spawn(move || w.write_all(&data).unwrap());
        let mut back = vec![0; big.len()];
        c.read_exact(&mut back).unwrap();
        t.join().unwrap();
    }
    let before = settled_rss(server);
    let mut idle = Vec::with_capacity(n);
    let msg = [0x5Au8; 64];
    let mut back = [0u8; 64];
    for _ in 0..n {
        let mut c = std::net::TcpStream::connect(server.addr).expect("connect");
        c.write_all(&msg).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
        idle.push(c);
    }
    let after = settled_rss(server);
    drop(idle);
    after.saturating_sub(before) as f64 / n as f64
}

/// The median of some measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Jiffies the hypervisor took from this machine's CPUs (the `steal` column of
/// `/proc/stat`) and all jiffies, so far. On a virtual machine under load, stolen time
/// is time neither the server nor the client ran, and shows up as latency stalls.
pub fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cols: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    (cols.get(7).copied().unwrap_or(0), cols.iter().sum())
}
