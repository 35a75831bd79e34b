//! Shared helpers for the wire-conversation tests: an in-process server on an ephemeral
//! loopback port, deadline-bounded waiting, and deterministic payloads.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopd::config::{Config, ListenSpec};
use loopd::service::Builtin;
use loopd::stats::Snapshot;
use loopd::{Exit, Server, ServerHandle};

pub mod daemon;
pub mod pki;

/// Generous bound for anything a test waits for; only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A server (one loop unless the config asks for more) running on its own thread.
pub struct TestServer {
    pub addrs: Vec<SocketAddr>,
    pub handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<Exit>>>,
}

impl TestServer {
    /// Serves `services` on ephemeral loopback ports with `config`'s other settings.
    pub fn start(mut config: Config, services: &[Builtin]) -> TestServer {
        config.listen = services
            .iter()
            .map(|&service| ListenSpec {
                service,
                addr: "127.0.0.1:0".parse().unwrap(),
                proxy: false,
                tls: false,
            })
            .collect();
        let server = Server::new(&config).expect("bind");
        let addrs = server.local_addrs();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addrs,
            handle,
            thread: Some(thread),
        }
    }

    /// Echo with default settings.
    pub fn echo() -> TestServer {
        TestServer::start(Config::default(), &[Builtin::Echo])
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every loop's counters added together.
    pub fn stats(&self) -> Snapshot {
        self.handle.stats()
    }

    /// Each loop's counters.
    pub fn loop_stats(&self) -> Vec<Snapshot> {
        self.handle.loop_stats()
    }

    /// Waits until the counters satisfy `cond`.
    pub fn wait_stats(&self, what: &str, mut cond: impl FnMut(&Snapshot) -> bool) -> Snapshot {
        wait_until(what, || {
            let s = self.stats();
            cond(&s).then_some(s)
        })
    }

    /// Graceful shutdown; returns how the loop ended.
    pub fn stop(mut self) -> Exit {
        self.handle.shutdown();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // Two requests: drain, then exit at once; a failed test should not linger.
            self.handle.shutdown();
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// Polls `probe` until it yields a value, or panics after [`PATIENCE`] naming `what`.
pub fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A connected client with read/write timeouts so a broken server fails the test instead of
/// hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// `len` bytes of a pattern unique to `seed`, so misrouted bytes are detected.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64: cheap, deterministic, and never all-zero.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until EOF; an error (such as a reset) fails the test.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        panic!(
            "read failed after {} bytes (a reset is a bug): {e}",
            buf.len()
        );
    }
    buf
}

/// Sends `data` in `chunk`-sized writes from a second thread (so neither side can deadlock on
/// full buffers), then FIN; meanwhile reads until the server's FIN. Returns what came back.
pub fn exchange(c: &mut TcpStream, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut writer = c.try_clone().unwrap();
    let sent = data.to_vec();
    let t = std::thread::spawn(move || {
        for piece in sent.chunks(chunk) {
            writer.write_all(piece).unwrap();
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let got = read_to_eof(c);
    t.join().unwrap();
    got
}

/// Closes with RST instead of FIN.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// One request/response round trip.
pub fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    assert_eq!(read_n(s, msg.len()), msg);
}

/// The path of `program` on the PATH, or a failure in one line saying what is missing and
/// where it comes from. `.ci/run` installs every such package before the tests.
pub fn require(program: &str, package: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is missing: install Debian's {package} (apt-get install -y {package}; .ci/run does)")
        })
}

/// A TCP port free on loopback now (for programs that must be told a port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP/1.1 response: status code, headers as read, body.
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `GET path` over a fresh connection (`Connection: close`), read to the end.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut c = connect(addr);
    c.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    parse_response(&read_to_eof(&mut c))
}

/// Parses one HTTP response.
pub fn parse_response(bytes: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    HttpResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The value of a sample in a Prometheus text exposition, by its exact name and labels as
/// written (`name{a="b"}`).
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Every sample of a scrape as `(family, labels)`, in order.
pub fn series(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let sample = l.rsplit_once(' ').expect("a sample and its value").0;
            match sample.split_once('{') {
                Some((name, labels)) => (name.to_string(), labels.trim_end_matches('}').into()),
                None => (sample.to_string(), String::new()),
            }
        })
        .collect()
}

/// The families each listener exports, as sorted names.
pub fn families_of(series: &[(String, String)], service: &str) -> Vec<String> {
    let label = format!("service=\"{service}\"");
    let mut names: Vec<String> = series
        .iter()
        .filter(|(_, labels)| labels.split(',').any(|l| l == label))
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `promtool check metrics` passes `text` with nothing to say.
pub fn promtool_accepts(text: &str) {
    let promtool = require("promtool", "prometheus");
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// A scratch directory (for a proxy's configuration), removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "loopd-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn write(&self, file: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The global and default sections every test's HAProxy shares: TCP mode, one thread (so a
/// round robin is exact), generous timeouts.
pub const HAPROXY_DEFAULTS: &str = "global
    maxconn 4096
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
";

/// A real HAProxy (Debian's package) running `config` in the foreground, and the directory
/// holding its configuration.
/// nginx's stream module, checked to be installed (Debian's libnginx-mod-stream).
pub fn nginx_stream_module() -> &'static std::path::Path {
    let module = std::path::Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
    assert!(
        module.exists(),
        "{} is missing: install Debian's libnginx-mod-stream (apt-get install -y libnginx-mod-stream; .ci/run does)",
        module.display()
    );
    module
}

/// nginx's master, serving `config` from `scratch` (its prefix, where the configuration is
/// written), its log collected from standard error. Dropped, it is stopped with SIGTERM so
/// that the master takes its worker with it (a killed master would leave the worker serving).
pub struct Nginx(pub daemon::Daemon);

impl Nginx {
    pub fn start(scratch: &Scratch, config: &str) -> Nginx {
        let nginx = require("nginx", "nginx-light");
        let path = scratch.write("nginx.conf", config);
        let mut cmd = std::process::Command::new(nginx);
        cmd.arg("-p")
            .arg(&scratch.0)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg("stderr");
        Nginx(daemon::Daemon::spawn(cmd))
    }

    /// The worker's pid (the master's only child), for its CPU time.
    pub fn worker(&self) -> u32 {
        let master = self.0.pid();
        wait_until("nginx's worker", || {
            let children =
                std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.0.signal(libc::SIGTERM);
        self.0.wait_exit();
    }
}

/// [`haproxy`], returned once it listens on every port of `ports` (on 127.0.0.1).
pub fn haproxy_listening(config: &str, ports: &[u16]) -> (daemon::Daemon, Scratch) {
    let (proxy, scratch) = haproxy(config);
    for &port in ports {
        wait_until(
            &format!("haproxy on port {port}: {:?}", proxy.log()),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
    }
    (proxy, scratch)
}

pub fn haproxy(config: &str) -> (daemon::Daemon, Scratch) {
    let haproxy = require("haproxy", "haproxy");
    let scratch = Scratch::new("haproxy");
    let path = scratch.write("haproxy.cfg", config);
    let proxy =
        daemon::Daemon::start_program(None, &haproxy, &["-db", "-f", path.to_str().unwrap()], &[]);
    (proxy, scratch)
}
