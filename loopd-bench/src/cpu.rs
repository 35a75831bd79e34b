//! What a message costs in CPU time ("service demand", as netperf calls it): the client's
//! own, the server's (scraped from its Prometheus endpoint), and the whole machine's.
//!
//! Each figure is the CPU time spent over the measured window divided by the messages
//! measured, in microseconds per message, and names how it was taken:
//!
//! * **client**: `getrusage(RUSAGE_SELF)`, user plus system time of every loopd-bench thread.
//! * **server**: `process_cpu_seconds_total` from the URL given to `--server-metrics`
//!   (loopd's `/metrics`, or any Prometheus client library's), scraped at the start and the
//!   end of the window; or, for a server on this machine, `/proc/PID/stat` (`--server-pid`).
//!   Both count in 10 ms, so short windows are coarse.
//! * **system**: `/proc/stat`, the busy time of every CPU (user, nice, system, irq, softirq,
//!   steal), in clock ticks of 10 ms.
//!
//! On loopback the per-process figures misattribute work: the kernel delivers a message
//! into the receiver's socket on the *sender's* CPU, inside the sender's `write`, so each
//! side is charged for part of the other's receive path. The system-wide figure has no such
//! bias (with nothing else running), which is why it is offered beside the others.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use loopd::service::http::chunked::Decoder;
use serde::{Deserialize, Serialize};

/// How long a scrape may take before it is given up.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest metrics page read.
const MAX_PAGE: u64 = 16 << 20;
/// The counter Prometheus client libraries (and loopd) export for a process's CPU time.
const CPU_COUNTER: &str = "process_cpu_seconds_total";
/// Seconds per clock tick, the unit of `/proc/stat` and `/proc/PID/stat` (`USER_HZ`:
/// 100 per second on Linux, but asked rather than assumed).
fn tick_seconds() -> f64 {
    // SAFETY: sysconf has no memory-safety requirements.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// One CPU-cost figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// How it was measured.
    pub method: String,
    /// CPU seconds spent over the measured window.
    pub cpu_seconds: f64,
    /// CPU microseconds per measured message; `None` when no message was measured.
    pub us_per_message: Option<f64>,
    /// TLS: CPU microseconds per measured handshake — the cost of one in handshake mode
    /// (where a handshake is the message), all the run's work over its handshakes in the
    /// others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub us_per_handshake: Option<f64>,
}

impl Cost {
    /// `cpu_seconds` spent on `messages`.
    pub fn new(method: String, cpu_seconds: f64, messages: u64) -> Cost {
        Cost {
            method,
            cpu_seconds,
            us_per_message: (messages > 0).then(|| cpu_seconds * 1e6 / messages as f64),
            us_per_handshake: None,
        }
    }

    /// The same, also per handshake, when the run counted `handshakes` (TLS).
    pub fn per_handshake(mut self, handshakes: Option<u64>) -> Cost {
        self.us_per_handshake = handshakes
            .filter(|&n| n > 0)
            .map(|n| self.cpu_seconds * 1e6 / n as f64);
        self
    }
}

impl CpuCosts {
    /// Every figure also per handshake, when the run counted `handshakes` (TLS).
    pub fn per_handshake(self, handshakes: Option<u64>) -> CpuCosts {
        let per = |c: Option<Cost>| c.map(|c| c.per_handshake(handshakes));
        CpuCosts {
            client: per(self.client),
            server: per(self.server),
            system: per(self.system),
            unavailable: self.unavailable,
        }
    }
}

/// The CPU costs of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuCosts {
    /// loopd-bench's own.
    pub client: Option<Cost>,
    /// The server's, with `--server-metrics`.
    pub server: Option<Cost>,
    /// The whole machine's, with `--system-cpu`.
    pub system: Option<Cost>,
    /// Figures that were asked for and could not be taken, and why.
    #[serde(default)]
    pub unavailable: Vec<String>,
}

/// Where to scrape the server's CPU counter: an `http://HOST:PORT/PATH` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsUrl {
    /// As given.
    pub url: String,
    host: String,
    addr: SocketAddr,
    path: String,
}

impl MetricsUrl {
    /// Parses and resolves `url`. Only plain `http://` (metrics endpoints are internal).
    pub fn parse(url: &str) -> Result<MetricsUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let addr = crate::net::resolve(host).map_err(|e| format!("{url}: {e}"))?;
        Ok(MetricsUrl {
            url: url.to_string(),
            host: host.to_string(),
            addr,
            path: path.to_string(),
        })
    }

    /// Reads the process CPU counter now.
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        let page = self.get().map_err(|e| format!("{}: {e}", self.url))?;
        cpu_counter(&page).ok_or_else(|| {
            format!(
                "{}: no {CPU_COUNTER} sample with a counter's value (finite, not negative)",
                self.url
            )
        })
    }

    /// `GET` the page, over a fresh connection.
    pub(crate) fn get(&self) -> Result<String, String> {
        let mut c =
            TcpStream::connect_timeout(&self.addr, SCRAPE_TIMEOUT).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(SCRAPE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
            self.path, self.host
        );
        c.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        c.take(MAX_PAGE)
            .read_to_end(&mut raw)
            .map_err(|e| e.to_string())?;
        page(&raw)
    }
}

/// The body of the response `raw`, read to the end of the connection: a 200 whose body,
/// dechunked if it came in chunks, is UTF-8 text.
pub(crate) fn page(raw: &[u8]) -> Result<String, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("an incomplete HTTP response".into()),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    if response.code != Some(200) {
        return Err(format!("HTTP status {:?}", response.code));
    }
    let chunked = response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let body = &raw[head..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| "the page is not UTF-8".into())
}

/// A chunked body, joined (`Connection: close` servers rarely chunk, but some do), by the
/// server's own strict decoder: one reading of the chunked grammar in the project.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    while !decoder.is_done() {
        let step = decoder
            .decode(body)
            .map_err(|e| format!("a malformed chunked body: {}", e.reason()))?;
        if step.consumed == 0 {
            return Err("a truncated chunked body".into());
        }
        out.extend_from_slice(step.data);
        body = &body[step.consumed..];
    }
    Ok(out)
}

/// The value of the `process_cpu_seconds_total` sample in a Prometheus text page (the sum,
/// if a page has several, say one per process label); `None` if there is none, or if one is
/// not a CPU counter's value (negative, infinite, not a number): a figure from it would be
/// nonsense.
pub fn cpu_counter(page: &str) -> Option<f64> {
    let mut total = None;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(CPU_COUNTER) else {
            continue;
        };
        // `name value`, or `name{labels} value`, maybe followed by a timestamp.
        let rest = match rest.strip_prefix('{') {
            Some(labelled) => &labelled[labelled.find('}')? + 1..],
            None if rest.starts_with(' ') => rest,
            None => continue, // a longer name that starts the same
        };
        let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
        if !(value.is_finite() && value >= 0.0) {
            return None;
        }
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// Busy clock ticks of every CPU together, from `/proc/stat`'s `cpu` line.
fn system_busy_ticks() -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("/proc/stat has no cpu line")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Ok(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// This process's user plus system CPU time.
fn client_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Where the server's CPU time comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCpu {
    /// `--server-metrics URL`: its Prometheus endpoint.
    Metrics(MetricsUrl),
    /// `--server-pid PID`: `/proc/PID/stat`, for a server on this machine without metrics.
    Pid(u32),
}

impl ServerCpu {
    /// Reads the server's CPU seconds now.
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        match self {
            ServerCpu::Metrics(url) => url.cpu_seconds(),
            ServerCpu::Pid(pid) => process_cpu(*pid),
        }
    }

    /// How the figure is taken, for the report.
    pub fn method(&self) -> String {
        match self {
            ServerCpu::Metrics(url) => format!("{CPU_COUNTER} scraped from {}", url.url),
            ServerCpu::Pid(pid) => format!("/proc/{pid}/stat: utime+stime of the server process"),
        }
    }

    /// As given on the command line.
    pub fn describe(&self) -> String {
        match self {
            ServerCpu::Metrics(url) => url.url.clone(),
            ServerCpu::Pid(pid) => format!("pid:{pid}"),
        }
    }

    /// `http://…` or `pid:N`.
    pub fn parse(s: &str) -> Result<ServerCpu, String> {
        match s.strip_prefix("pid:") {
            Some(pid) => pid
                .parse()
                .map(ServerCpu::Pid)
                .map_err(|_| format!("'{s}' is not pid:N")),
            None => MetricsUrl::parse(s).map(ServerCpu::Metrics),
        }
    }
}

/// User plus system CPU seconds of process `pid`, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Result<f64, String> {
    loopd::metrics::process_cpu_seconds(&pid.to_string())
        .ok_or_else(|| format!("/proc/{pid}/stat cannot be read"))
}

/// What to sample at each end of the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuSources {
    /// `--server-metrics` or `--server-pid`.
    pub server: Option<ServerCpu>,
    /// `--system-cpu`.
    pub system: bool,
}

/// The counters at one end of the window.
#[derive(Clone, Debug)]
pub struct CpuSample {
    client: f64,
    server: Option<Result<f64, String>>,
    system: Option<Result<u64, String>>,
}

impl CpuSample {
    /// Reads every counter `sources` asks for, now.
    pub fn take(sources: &CpuSources) -> CpuSample {
        CpuSample {
            client: client_cpu(),
            server: sources.server.as_ref().map(ServerCpu::cpu_seconds),
            system: sources.system.then(system_busy_ticks),
        }
    }
}

/// The costs between two samples, over `messages`. A figure whose counter could not be read
/// at either end is listed as unavailable, with the reason.
pub fn costs(start: &CpuSample, end: &CpuSample, sources: &CpuSources, messages: u64) -> CpuCosts {
    let mut unavailable = Vec::new();
    let client = Some(Cost::new(
        "getrusage(RUSAGE_SELF): user+system time of loopd-bench's threads".into(),
        (end.client - start.client).max(0.0),
        messages,
    ));
    let server = match (&start.server, &end.server, &sources.server) {
        (Some(Ok(a)), Some(Ok(b)), Some(server)) => {
            Some(Cost::new(server.method(), (b - a).max(0.0), messages))
        }
        (Some(Err(e)), _, _) | (_, Some(Err(e)), _) => {
            unavailable.push(format!("server CPU: {e}"));
            None
        }
        _ => None,
    };
    let system = match (&start.system, &end.system) {
        (Some(Ok(a)), Some(Ok(b))) => Some(Cost::new(
            "/proc/stat: busy time of every CPU (user, nice, system, irq, softirq, steal)".into(),
            b.saturating_sub(*a) as f64 * tick_seconds(),
            messages,
        )),
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            unavailable.push(format!("system CPU: {e}"));
            None
        }
        _ => None,
    };
    CpuCosts {
        client,
        server,
        system,
        unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter is found bare, labelled, or with a timestamp; names that only start the
    /// same are not it.
    #[test]
    fn counter_in_a_page() {
        let page = "# HELP process_cpu_seconds_total Total CPU.\n\
                    # TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.5\n\
                    process_cpu_seconds_total_created 1.7e9\n";
        assert_eq!(cpu_counter(page), Some(12.5));
        assert_eq!(
            cpu_counter("process_cpu_seconds_total{pid=\"1\"} 3 1700000000000\n"),
            Some(3.0)
        );
        assert_eq!(cpu_counter("loopd_connections_active 1\n"), None);
    }

    /// A sample that cannot be a CPU counter's — negative, infinite, not a number — makes the
    /// page's counter unusable instead of a figure: a negative one gave a negative cost, an
    /// infinite one a cost the JSON report writes as null, which `merge` then refuses. Found
    /// by the `metrics` fuzz target.
    #[test]
    fn counter_values_that_are_not_counters_are_refused() {
        for value in ["-14.5", "+Inf", "-Inf", "NaN", "inf"] {
            let page = format!("process_cpu_seconds_total {value}\n");
            assert_eq!(cpu_counter(&page), None, "{value}");
        }
        let page = "process_cpu_seconds_total{a=\"1\"} 2\nprocess_cpu_seconds_total{a=\"2\"} -1\n";
        assert_eq!(cpu_counter(page), None);
        assert_eq!(cpu_counter("process_cpu_seconds_total 0\n"), Some(0.0));
    }

    /// This test process's own CPU time, read as a server's would be.
    #[test]
    fn pid_source() {
        let me = ServerCpu::parse(&format!("pid:{}", std::process::id())).unwrap();
        assert!(me.cpu_seconds().unwrap() >= 0.0);
        assert!(ServerCpu::parse("pid:x").is_err());
        assert!(matches!(
            ServerCpu::parse("http://127.0.0.1:1/metrics").unwrap(),
            ServerCpu::Metrics(_)
        ));
    }

    #[test]
    fn urls() {
        let u = MetricsUrl::parse("http://127.0.0.1:9107/metrics").unwrap();
        assert_eq!(u.path, "/metrics");
        assert_eq!(
            MetricsUrl::parse("http://127.0.0.1:9107").unwrap().path,
            "/metrics"
        );
        assert!(MetricsUrl::parse("https://127.0.0.1:9107/metrics").is_err());
    }

    /// Costs divide CPU time by messages; no messages, no figure.
    #[test]
    fn per_message() {
        let c = Cost::new("m".into(), 0.5, 100_000);
        assert!((c.us_per_message.unwrap() - 5.0).abs() < 1e-9);
        assert_eq!(Cost::new("m".into(), 0.5, 0).us_per_message, None);
    }

    /// The process's CPU time only grows, and system ticks are read.
    #[test]
    fn samples() {
        let a = client_cpu();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(client_cpu() >= a);
        assert!(system_busy_ticks().unwrap() > 0);
    }
}
