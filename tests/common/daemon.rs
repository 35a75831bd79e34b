//! A server as a child process — the `loopd` binary, or any program that logs
//! `listening on SERVICE=ADDR` the way loopd does: its log lines, its address, signals, CPU
//! time and resident memory. Tests and the benchmarks share it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{wait_until, PATIENCE};

/// The `loopd` binary, built from this tree. It belongs to the loopd-daemon package, so Cargo
/// names it (`CARGO_BIN_EXE_loopd`) only to that package's own tests; the library's and
/// loopd-bench's tests, which share these helpers, have Cargo build it once per test process
/// in their own profile (a no-op when it is up to date), so a test never runs a stale daemon.
pub fn loopd_binary() -> std::path::PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_loopd") {
        return path.into();
    }
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/<test executable>
            let exe = std::env::current_exe().expect("the test executable's path");
            let dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("the target directory");
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(other) => other,
            };
            let status = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--profile", profile])
                .args(["-p", "loopd-daemon", "--bin", "loopd"])
                .status()
                .expect("run cargo to build the loopd daemon");
            assert!(status.success(), "building the loopd daemon failed");
            dir.join("loopd")
        })
        .clone()
}

/// A running `loopd` whose stderr (the log) is collected line by line.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `loopd` with `args`.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with(args, |_| {})
    }

    /// Starts `loopd` with `args`, letting `setup` adjust the command (limits, descriptors).
    pub fn start_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Daemon {
        let mut cmd = Command::new(loopd_binary());
        cmd.args(args).env("RUST_LOG", "info");
        setup(&mut cmd);
        Daemon::spawn(cmd)
    }

    /// Starts `program` with `args` and `env`, pinned to `cpu` with `taskset` if given.
    pub fn start_program(
        cpu: Option<usize>,
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        Daemon::spawn(cmd)
    }

    /// Spawns `cmd` with its standard error collected as the log.
    pub fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the server");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        wait_until(&format!("log line containing {needle:?}"), || {
            self.log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
    }

    /// Whether some log line contains `needle` now.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The address of the first listener, from the start-up log line.
    pub fn addr(&self) -> SocketAddr {
        self.addrs()[0].1
    }

    /// Every listener as `(service, address)`, from the start-up log line.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        let line = self.wait_log("listening on ");
        let specs = line.split("listening on ").nth(1).unwrap();
        specs
            .split_whitespace()
            .map_while(|spec| spec.split_once('='))
            .map_while(|(service, addr)| {
                // A listener's options follow its address: line=127.0.0.1:7100,proxy.
                let addr = addr.split(',').next()?;
                Some((service.to_string(), addr.parse().ok()?))
            })
            .collect()
    }

    /// The address of the listener serving `service`, from the start-up log line.
    pub fn addr_of(&self, service: &str) -> SocketAddr {
        self.addrs()
            .into_iter()
            .find(|(s, _)| s == service)
            .unwrap_or_else(|| panic!("no {service} in {:?}", self.log()))
            .1
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a child's pid has no memory-safety requirements.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the daemon to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "loopd did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// User plus system CPU time consumed so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let secs = loopd::metrics::process_cpu_seconds(&self.pid().to_string())
            .expect("the daemon's /proc/PID/stat");
        Duration::from_secs_f64(secs)
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

    /// The full log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Limits the child to `nofile` descriptors (soft and hard) and occupies `occupied` of them
/// with inherited copies of /dev/null, as other parts of a real process would.
pub fn constrain_descriptors(cmd: &mut Command, nofile: u64, occupied: i32) {
    let pre_exec = move || {
        let lim = libc::rlimit {
            rlim_cur: nofile,
            rlim_max: nofile,
        };
        // SAFETY: only async-signal-safe calls (setrlimit, open, dup2, close) between fork and
        // exec, on memory owned by this closure.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 10..10 + occupied {
                if libc::dup2(null, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::close(null);
        }
        Ok(())
    };
    // SAFETY: the closure above only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(pre_exec);
    }
}
