//! TLS servers for loopd-bench's tests and its handshake benchmark: certificates generated at
//! run time (loopd's `tests/common/pki.rs`), `openssl s_server`, nginx's stream `ssl`, and a
//! small TLS-terminating proxy written here that can corrupt or truncate what it forwards.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The certificates are loopd's test helpers', shared rather than copied: every includer
// has them as `common` (loopd's `tests/common`).
pub use super::common::pki::Pki;

/// Bound on anything these helpers wait for; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `probe` until it yields, or panics after [`PATIENCE`] naming `what`.
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The path of `program`, or a one-line failure naming the Debian package (`.ci/run`
/// installs it).
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is missing: install Debian's {package} (apt-get install -y {package}; .ci/run does)")
        })
}

/// A port free on loopback now, for programs told their port up front.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections at `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    wait_for(&format!("{what} listening on {addr}"), || {
        TcpStream::connect(addr).ok()
    });
}

/// `openssl s_server` on a port of its own, its standard output collected line by line
/// (it prints `Reused session-id` for every resumed session). Its standard input is held
/// open: at end-of-file it would shut down.
pub struct SServer {
    child: Child,
    _stdin: ChildStdin,
    out: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
}

impl SServer {
    /// Starts `openssl s_server` with the server certificate of `pki` and `extra` options.
    pub fn start(pki: &Pki, extra: &[&str]) -> SServer {
        SServer::start_with(&pki.chain, &pki.key, extra, None)
    }

    /// Starts `openssl s_server` with the certificate chain `chain` and its `key`, and
    /// `extra` options, pinned to `cpu` if given.
    pub fn start_with(chain: &Path, key: &Path, extra: &[&str], cpu: Option<usize>) -> SServer {
        let openssl = require("openssl", "openssl");
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(openssl);
                c
            }
            None => Command::new(openssl),
        };
        let mut child = cmd
            .args(["s_server", "-accept", &addr.to_string()])
            .args(["-cert", Pki::path(chain), "-key", Pki::path(key)])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_server");
        let stdin = child.stdin.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let server = SServer {
            child,
            _stdin: stdin,
            out,
            addr,
        };
        wait_for("s_server to print ACCEPT", || {
            server.lines_with("ACCEPT").gt(&0).then_some(())
        });
        server
    }

    /// Output lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> usize {
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed.
    pub fn output(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's stream module terminating TLS on a port of its own and answering every session
/// with `hello\n` (nginx `return`, so it speaks first), one worker pinned to `cpu` if given,
/// logging each session's `$ssl_session_reused` (`r` or `.`) to a file. `ssl` holds the
/// extra directives (protocols, session cache, tickets).
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(pki: &Pki, ssl: &str, cpu: Option<usize>) -> Nginx {
        Nginx::start_with(pki, &pki.chain, &pki.key, ssl, cpu)
    }

    /// As [`Nginx::start`], with the certificate chain `chain` and its `key` (a directory of
    /// `pki`'s for the configuration and the log).
    pub fn start_with(pki: &Pki, chain: &Path, key: &Path, ssl: &str, cpu: Option<usize>) -> Nginx {
        let nginx = require("nginx", "nginx-light");
        let module = super::common::nginx_stream_module();
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = pki.dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sessions.log");
        let affinity = match cpu {
            Some(c) => format!("worker_cpu_affinity {:b};", 1u64 << c),
            None => String::new(),
        };
        let config = format!(
            "load_module {module};
daemon off;
worker_processes 1;
{affinity}
error_log stderr warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
stream {{
    log_format reuse '$ssl_session_reused';
    server {{
        listen {addr} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        {ssl}
        access_log {log} reuse;
        return \"hello\\n\";
    }}
}}
",
            module = module.display(),
            dir = dir.display(),
            chain = chain.display(),
            key = key.display(),
            log = log.display(),
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg("stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        // The master writes its pid file once its sockets listen. (Not a probe connection:
        // nginx would log it as a session, and the tests count sessions.)
        let pid_file = dir.join("nginx.pid");
        wait_for("nginx to write its pid file", || {
            let text = std::fs::read_to_string(&pid_file).ok()?;
            (!text.trim().is_empty()).then_some(())
        });
        Nginx {
            child,
            addr,
            log,
            dir,
        }
    }

    /// `(full, resumed)` sessions logged so far.
    pub fn sessions(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let full = text.lines().filter(|l| *l == ".").count() as u64;
        let resumed = text.lines().filter(|l| *l == "r").count() as u64;
        (full, resumed)
    }

    /// The worker's pid (the master's only child), for its CPU time.
    pub fn worker_pid(&self) -> u32 {
        let master = self.child.id();
        wait_for("nginx's worker", || {
            let children =
                std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so the master takes its worker with it (a killed master leaves it serving).
        // SAFETY: kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the proxy does to the reply stream it forwards.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Nothing.
    None,
    /// Flips the lowest bit of the reply byte at this offset of each connection.
    Flip(u64),
    /// After this many reply bytes, closes the connection (FIN) without `close_notify`.
    Truncate(u64),
}

/// A TLS-terminating proxy written here (rustls, a thread per connection): decrypts what a
/// client sends, forwards it in plaintext to `upstream` (an echo server), and encrypts the
/// echo back — after `fault` has had its way with it.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(pki: &Pki, upstream: SocketAddr, fault: Fault) -> Proxy {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&pki.chain)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = serve(config, client, upstream, fault);
                });
            }
        });
        Proxy { addr, stop }
    }
}

impl Drop for Proxy {
    /// Stops accepting: the flag, then a connection to wake the accept that waits.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// One connection: request bytes up, the same number of echoed bytes back (the client keeps
/// one message in flight, so an echo answers each read in full).
fn serve(
    config: Arc<rustls::ServerConfig>,
    client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(PATIENCE))?;
    let session = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(session, client);
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(PATIENCE))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut replied = 0u64;
    loop {
        let n = match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        up.write_all(&buf[..n])?;
        up.read_exact(&mut buf[..n])?;
        let at = replied;
        replied += n as u64;
        match fault {
            Fault::Flip(offset) if (at..replied).contains(&offset) => {
                buf[(offset - at) as usize] ^= 1;
            }
            Fault::Truncate(after) if replied >= after => {
                let keep = (after - at) as usize;
                tls.write_all(&buf[..keep])?;
                tls.flush()?;
                // FIN without close_notify.
                return tls.sock.shutdown(std::net::Shutdown::Both);
            }
            _ => {}
        }
        tls.write_all(&buf[..n])?;
        tls.flush()?;
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}
