//! `loopd-bench`: flags in, a [`BenchConfig`] out, then the library runs the load.
//!
//! Exit status: 0 when every connection established and every reply was verified, 1 when
//! any error was counted (or the run could not be made), 2 for bad flags.

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand, ValueEnum};

use loopd::config::{parse_duration, parse_size};
use loopd_bench::compare::{compare, Target};
use loopd_bench::config as bench_config;
use loopd_bench::config::start::parse_start_at;
use loopd_bench::config::tls::list as tls_list;
use loopd_bench::config::{HttpSettings, TlsSettings, TlsVersions, Trust};
use loopd_bench::cpu::{CpuSources, MetricsUrl, ServerCpu};
use loopd_bench::http::Method;
use loopd_bench::net::resolve;
use loopd_bench::repeat::{self, Confidence, Repeat, EXIT_NOT_CONFIDENT};
use loopd_bench::report::{files, plot, Second};
use loopd_bench::{BenchConfig, Expect, Mode, Protocol, Report, Sources, Stop};
use loopd_bench::{ConfigError, Segment};

/// A load client for TCP, TLS and UDP echo-style servers: closed or open loop, every echoed
/// byte verified, HdrHistogram latency, JSON and an SVG picture; and TLS handshake rates.
///
/// Sizes take units (64, 16KiB); durations take units (10s, 500ms).
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The server: HOST:PORT.
    #[arg(required = true, value_name = "TARGET")]
    target: Option<String>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    segments: SegmentArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// One run made by several processes (machines, or the pods of a Kubernetes Indexed Job).
#[derive(Debug, Args)]
struct SegmentArgs {
    /// Run segment I of N of the load: -c, --rate, --ramp and -n stay the whole run's, and
    /// this process opens its share of the connections. I counts from 0; it may also be the
    /// name of an environment variable that holds it: JOB_COMPLETION_INDEX/4 in the pods of
    /// a Kubernetes Indexed Job. `merge` aggregates the segments' reports.
    #[arg(long, value_name = "I/N", value_parser = parse_segment)]
    segment: Option<Segment>,

    /// Start at TIME, an RFC 3339 time in UTC (2026-12-05T10:00:00Z), rather than at once:
    /// give every segment of a run the same. The report gives the start lag and whether the
    /// clock was synchronised. Refused if the measurement (after the ramp and warm-up) would
    /// already have begun, or if TIME is more than an hour ahead.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    start_at: Option<SystemTime>,
}

/// `--segment`, with `I` looked up in the environment when it is a variable's name.
fn parse_segment(spec: &str) -> Result<Segment, ConfigError> {
    Segment::parse(spec, |name| std::env::var(name).ok())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Combine the JSON reports of runs made at the same time (say, from several machines)
    /// into one report, as if one client had made all their connections. The segments of one
    /// run (--segment) make its aggregate over their common window, with any missing segment
    /// named; other runs are merged as unrelated runs. Interval logs (.hlog, from --hlog) are
    /// read too: their latencies and message counts add.
    Merge {
        /// JSON files written by --json, or .hlog files written by --hlog.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run the same load against several servers in alternating iterations and print a
    /// table of messages/s (mean ± interval), latency and CPU per message, with ratios to
    /// the first. Each target is [NAME=]HOST:PORT[@CPU], where CPU is where the server's CPU
    /// time is read: its metrics URL (http://…/metrics) or pid:N for a local process. Give
    /// --iterations (and --confidence) for intervals; the default is 5 iterations each.
    Compare {
        /// The servers; the first is the reference for the ratios.
        #[arg(required = true, num_args = 2.., value_name = "[NAME=]HOST:PORT[@CPU]")]
        targets: Vec<String>,
        #[command(flatten)]
        run: Box<RunArgs>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// echo: round trips, every echoed byte verified; send: upload to a discard server;
    /// recv: download from a chargen server (bytes counted; verified with --expect chargen);
    /// connect: connect, one verified round trip, close, repeat; udp: verified datagram round
    /// trips with loss; handshake: connect, TLS handshake, the server's first word (bytes, a
    /// session ticket or its close), close_notify, repeat (implies --tls).
    #[arg(short, long, value_enum, default_value = "echo")]
    mode: ModeArg,

    /// Request framing in echo mode: raw bytes, `ECHO <payload>` lines, 4-byte
    /// length-prefixed frames (loopd's line and frame services), or HTTP/1.1 requests (also
    /// in connect mode: a new connection per request), every response checked.
    #[arg(long, value_enum, default_value = "raw")]
    protocol: ProtocolArg,

    /// Concurrent connections (udp: sockets).
    #[arg(short = 'c', long, value_name = "N", default_value_t = bench_config::DEFAULT_CONNECTIONS)]
    connections: usize,

    /// Worker threads, each with its own event loop; one is enough to keep a one-core server
    /// busy.
    #[arg(short = 't', long, value_name = "N", default_value_t = bench_config::DEFAULT_THREADS)]
    threads: usize,

    /// How long to measure, after the ramp and the warm-up.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, conflicts_with = "messages")]
    duration: Duration,

    /// Measure exactly this many messages (spread evenly over the connections) instead of a
    /// duration.
    #[arg(short = 'n', long = "messages", value_name = "N")]
    messages: Option<u64>,

    /// Load applied before measuring and excluded from the results: lets caches, the
    /// allocator and the CPU clock settle.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,

    /// Payload bytes per message.
    #[arg(short = 's', long, value_name = "SIZE", default_value = "64", value_parser = parse_size)]
    size: usize,

    /// Messages each connection keeps in flight (closed loop), or at most (open loop).
    #[arg(long, value_name = "N", default_value_t = bench_config::DEFAULT_PIPELINE)]
    pipeline: usize,

    /// Open loop: total messages per second on a fixed schedule, latency measured from each
    /// message's intended send time. Without it, closed loop.
    #[arg(long, value_name = "PER_SEC")]
    rate: Option<f64>,

    /// Open this many connections per second instead of all at once.
    #[arg(long, value_name = "PER_SEC")]
    ramp: Option<f64>,

    /// Give up on a connection that has not established after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// Bind connections round-robin to local addresses ADDR or ADDR-ADDR, for more than
    /// ~28K connections to one port (127.0.0.2-127.0.0.50 on loopback).
    #[arg(long, value_name = "ADDR[-ADDR]", value_parser = Sources::parse)]
    source: Option<Sources>,

    /// With replies outstanding or requests unwritten and no byte moving either way for this
    /// long, give up and count what was waiting as errors: a wedged server ends the run.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    stall_timeout: Duration,

    /// udp: fail the run when more than this percentage of datagrams is lost (on loopback or
    /// a healthy LAN nothing is; raise it to measure loss itself).
    #[arg(long, value_name = "PCT", default_value_t = bench_config::DEFAULT_MAX_LOSS)]
    max_loss: f64,

    /// recv: verify the received stream against a known pattern (chargen: RFC 864 from its
    /// first byte) instead of only counting it.
    #[arg(long, value_enum, value_name = "PATTERN")]
    expect: Option<ExpectArg>,

    /// Behind a load balancer: each connection first asks its server which backend it is
    /// (the line service's SERVER), and the results are also given per backend, with how
    /// evenly connections spread. Needs --protocol line; with --protocol http, each
    /// response's loopd-server header names its backend.
    #[arg(long)]
    per_backend: bool,

    /// http: the request method; POST sends a body of -s bytes.
    #[arg(long, value_enum, default_value = "post")]
    http_method: MethodArg,

    /// http: the request path. /echo (with POST) checks every response body against the body
    /// sent; other paths check status and framing.
    #[arg(long, value_name = "PATH", default_value = "/echo")]
    http_path: String,

    /// http: an extra request header, NAME: VALUE; repeatable.
    #[arg(long, value_name = "HEADER")]
    http_header: Vec<String>,

    /// http: the statuses that are not errors (repeatable, or a comma list); by default any
    /// 2xx. Every status is counted and shown.
    #[arg(long, value_name = "CODE", value_delimiter = ',')]
    expect_status: Vec<u16>,

    /// Also report the server's CPU time per message, from the process_cpu_seconds_total
    /// counter at URL (loopd's --admin /metrics, or any Prometheus client library's), read
    /// at both ends of the measured window; and reconcile the errors seen with the faults
    /// each loopd says it injected during the run (loopd_faults_injected_total): errors its
    /// faults explain do not fail the run. Repeatable, one URL per backend (CPU time is the
    /// first's).
    #[arg(long, value_name = "URL", value_parser = MetricsUrl::parse, conflicts_with = "server_pid")]
    server_metrics: Vec<MetricsUrl>,

    /// Also report the server's CPU time per message, from /proc/PID/stat: for a server on
    /// this machine that has no metrics endpoint.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Also report the whole machine's CPU time per message, from /proc/stat. On loopback
    /// the kernel charges the receiver's delivery work to the sender, so per-process figures
    /// mislead and this one does not (with nothing else running).
    #[arg(long)]
    system_cpu: bool,

    /// Repeat the whole run (connect, warm up, measure, close) at least MIN and at most MAX
    /// times; the summary gives each iteration and the mean with its confidence interval.
    /// Default: 1, and 5 for each target of compare.
    #[arg(long, value_name = "MIN[,MAX]")]
    iterations: Option<String>,

    /// Keep repeating, up to the MAX of --iterations, until the LEVEL% confidence interval of
    /// the mean messages/s is WIDTH% wide (99,5: within ±2.5%). Not met: exit status 3.
    #[arg(long, value_name = "LEVEL,WIDTH", value_parser = Confidence::parse)]
    confidence: Option<Confidence>,

    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
struct TlsArgs {
    /// Speak TLS on every connection (echo, send, recv, connect; handshake mode always does).
    /// The server's certificate is checked against the system's trust store.
    #[arg(long)]
    tls: bool,

    /// The name sent as SNI and checked against the certificate. Default: the target's host
    /// name as given (or its address).
    #[arg(long, value_name = "NAME")]
    tls_sni: Option<String>,

    /// Offer these ALPN protocols, in order of preference.
    #[arg(long, value_name = "PROTO[,PROTO]")]
    tls_alpn: Option<String>,

    /// Offer only this TLS version (default: 1.2 and 1.3).
    #[arg(long, value_name = "1.2|1.3", value_parser = TlsVersions::parse)]
    tls_version: Option<TlsVersions>,

    /// Offer these key-exchange groups, in order (X25519MLKEM768, X25519, secp256r1,
    /// secp384r1; default: all of them, post-quantum first).
    #[arg(long, value_name = "GROUP[,GROUP]")]
    tls_groups: Option<String>,

    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    cacert: Option<PathBuf>,

    /// Do not check the server's certificate (its handshake signature still is).
    #[arg(long)]
    insecure: bool,

    /// Present this client certificate chain (PEM); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); with --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// The share of new connections that resume a session, in percent: 0, every handshake is
    /// full; 100, every one resumes once a session is held (the first cannot).
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    tls_resume: f64,
}

impl TlsArgs {
    /// Whether any TLS setting was given besides `--tls`.
    fn any(&self) -> bool {
        self.tls_sni.is_some()
            || self.tls_alpn.is_some()
            || self.tls_version.is_some()
            || self.tls_groups.is_some()
            || self.cacert.is_some()
            || self.insecure
            || self.tls_cert.is_some()
            || self.tls_resume != 0.0
    }

    /// The TLS settings for `target` as given on the command line, if TLS is on.
    fn settings(&self, mode: Mode, target: &str) -> Result<Option<TlsSettings>, String> {
        if !self.tls && mode != Mode::Handshake {
            if self.any() {
                return Err("the --tls-… settings, --cacert and --insecure need --tls".into());
            }
            return Ok(None);
        }
        let trust = match (&self.cacert, self.insecure) {
            (Some(file), _) => Trust::CaFile(file.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::System,
        };
        Ok(Some(TlsSettings {
            server_name: self.tls_sni.clone().or_else(|| host_name(target)),
            alpn: self.tls_alpn.as_deref().map(tls_list).unwrap_or_default(),
            versions: self.tls_version.unwrap_or_default(),
            groups: self.tls_groups.as_deref().map(tls_list).unwrap_or_default(),
            trust,
            client_cert: self.tls_cert.clone().zip(self.tls_key.clone()),
            resume_pct: self.tls_resume,
        }))
    }
}

/// The host of `HOST:PORT` when it is a name rather than an address: the SNI to send.
fn host_name(target: &str) -> Option<String> {
    let (host, _port) = target.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host.parse::<std::net::IpAddr>().is_err() && !host.is_empty()).then(|| host.to_string())
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Write the report as JSON to PATH, or to standard output with '-' (the summary then
    /// goes to standard error).
    #[arg(long, value_name = "PATH|-", global = true)]
    json: Option<String>,

    /// Draw the latency percentile spectrum and per-second throughput as an SVG file.
    #[arg(long, value_name = "PATH.svg", global = true)]
    report: Option<PathBuf>,

    /// Write the latency percentile distribution as an HdrHistogram .hgrm file (what wrk2
    /// writes and HdrHistogram's plotter reads); in open loop the uncorrected one goes beside
    /// it, as NAME.uncorrected.hgrm.
    #[arg(long, value_name = "PATH.hgrm", global = true)]
    hgrm: Option<PathBuf>,

    /// Write an HdrHistogram interval log: one latency histogram per second, tagged
    /// "latency" (and "uncorrected" in open loop). `merge` reads these back, from several
    /// machines.
    #[arg(long, value_name = "PATH.hlog", global = true)]
    hlog: Option<PathBuf>,

    /// No progress line and no summary; errors are still reported on standard error.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Echo,
    Send,
    Recv,
    Connect,
    Udp,
    Handshake,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExpectArg {
    Chargen,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    Raw,
    Line,
    Frame,
    Http,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MethodArg {
    Get,
    Post,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let (report, output) = match cli.command {
        Some(Command::Merge { files, output }) => {
            if output.hlog.is_some() {
                return fail(
                    "merge writes JSON, .hgrm and SVG; an interval log comes from a run",
                    2,
                );
            }
            match merge(&files) {
                Ok(r) => (r, output),
                Err(e) => return fail(&e, 1),
            }
        }
        Some(Command::Compare {
            targets,
            run,
            output,
        }) => return compare_command(&targets, &run, &output),
        None => {
            let target = cli.target.as_deref().expect("clap requires a target");
            let mut cfg = match config(target, &cli.run) {
                Ok(c) => c,
                Err(e) => return fail(&format!("{e} (see loopd-bench --help)"), 2),
            };
            cfg.intervals = cli.output.hlog.is_some();
            cfg.segment = cli.segments.segment;
            cfg.start_at = cli.segments.start_at;
            let iterations = cli.run.iterations.as_deref().unwrap_or("1");
            let repetition = match Repeat::new(iterations, cli.run.confidence) {
                Ok(r) => r,
                Err(e) => return fail(&format!("{e} (see loopd-bench --help)"), 2),
            };
            if repetition.is_series() && (cfg.segment.is_some() || cfg.start_at.is_some()) {
                return fail(
                    "--segment and --start-at make one run of several processes: repeat the \
                     whole run rather than give --iterations",
                    2,
                );
            }
            let quiet = cli.output.quiet;
            if let (Some(at), false) = (cfg.start_at, quiet) {
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                eprintln!(
                    "starting at {} (in {:.1} s)",
                    humantime::format_rfc3339(at),
                    wait.as_secs_f64()
                );
            }
            let on_iteration = |k: usize, r: &Report| {
                if repetition.is_series() && !quiet {
                    // Over the progress line, on a terminal.
                    let clear = if io::stderr().is_terminal() {
                        "\r\x1b[K"
                    } else {
                        ""
                    };
                    eprintln!(
                        "{clear}iteration {k}: {:.0} msg/s",
                        r.rates.messages_per_sec
                    );
                }
            };
            match repeat::repeat(&cfg, &repetition, progress_printer(quiet), on_iteration) {
                Ok(r) => (r, cli.output),
                Err(e) if e.is_usage() => return fail(&format!("{e} (see loopd-bench --help)"), 2),
                Err(e) => return fail(&e.to_string(), 1),
            }
        }
    };
    if let Err(e) = write_outputs(&report, &output) {
        return fail(&e, 1);
    }
    verdict(&report)
}

/// `compare`: every target in turn, iteration by iteration; the table, and the exit status
/// of the worst target.
fn compare_command(targets: &[String], run: &RunArgs, out: &OutputArgs) -> ExitCode {
    let usage =
        |e: &dyn std::fmt::Display| fail(&format!("{e} (see loopd-bench compare --help)"), 2);
    if !run.server_metrics.is_empty() || run.server_pid.is_some() {
        return usage(&"give each target's CPU source in the target: NAME=HOST:PORT@URL or @pid:N");
    }
    if out.hgrm.is_some() || out.hlog.is_some() || run.per_backend {
        return usage(&"compare writes a table, JSON (--json) and a picture (--report)");
    }
    let targets: Vec<Target> = match targets.iter().map(|t| Target::parse(t)).collect() {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let cfg = match config(&targets[0].addr.to_string(), run) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let iterations = run.iterations.as_deref().unwrap_or("5");
    let repetition = match Repeat::new(iterations, run.confidence) {
        Ok(r) => r,
        Err(e) => return usage(&e),
    };
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let quiet = out.quiet;
    let on_iteration = |i: usize, k: usize, r: &Report| {
        if !quiet {
            let clear = if io::stderr().is_terminal() {
                "\r\x1b[K"
            } else {
                ""
            };
            eprintln!(
                "{clear}{} iteration {k}: {:.0} msg/s",
                names[i], r.rates.messages_per_sec
            );
        }
    };
    let comparison = match compare(
        &cfg,
        &targets,
        &repetition,
        progress_printer(quiet),
        on_iteration,
    ) {
        Ok(c) => c,
        Err(e) if e.is_usage() => return usage(&e),
        Err(e) => return fail(&e.to_string(), 1),
    };
    if let Some(path) = &out.json {
        let text = serde_json::to_string_pretty(&comparison).expect("a comparison serialises");
        let written = if path == "-" {
            println!("{text}");
            Ok(())
        } else {
            fs::write(path, text + "\n").map_err(|e| format!("{path}: {e}"))
        };
        if let Err(e) = written {
            return fail(&e, 1);
        }
    }
    if let Some(path) = &out.report {
        if let Err(e) = plot::draw_comparison(&comparison, path) {
            return fail(&e, 1);
        }
    }
    if !quiet {
        if out.json.as_deref() == Some("-") {
            eprint!("{comparison}");
        } else {
            print!("{comparison}");
        }
    }
    match comparison.verdict() {
        Err(why) => fail(&why, 1),
        Ok(false) => fail(
            "a confidence target was not met within the iterations allowed",
            EXIT_NOT_CONFIDENT,
        ),
        Ok(true) => ExitCode::SUCCESS,
    }
}

/// Raw flags to a validated configuration.
fn config(target: &str, a: &RunArgs) -> Result<BenchConfig, String> {
    let given = target;
    let target = resolve(target).map_err(|e| format!("target {e}"))?;
    let mut cfg = BenchConfig::new(target);
    cfg.mode = match a.mode {
        ModeArg::Echo => Mode::Echo,
        ModeArg::Send => Mode::Send,
        ModeArg::Recv => Mode::Recv,
        ModeArg::Connect => Mode::Connect,
        ModeArg::Udp => Mode::Udp,
        ModeArg::Handshake => Mode::Handshake,
    };
    cfg.protocol = match a.protocol {
        ProtocolArg::Raw => Protocol::Raw,
        ProtocolArg::Line => Protocol::Line,
        ProtocolArg::Frame => Protocol::Frame,
        ProtocolArg::Http => Protocol::Http,
    };
    cfg.http = HttpSettings {
        method: match a.http_method {
            MethodArg::Get => Method::Get,
            MethodArg::Post => Method::Post,
        },
        path: a.http_path.clone(),
        headers: a.http_header.clone(),
        expect_status: a.expect_status.clone(),
    };
    cfg.connections = a.connections;
    cfg.threads = a.threads;
    cfg.stop = match a.messages {
        Some(n) => Stop::Count(n),
        None => Stop::After(a.duration),
    };
    cfg.warmup = a.warmup;
    cfg.size = a.size;
    cfg.pipeline = a.pipeline;
    cfg.rate = a.rate;
    cfg.ramp = a.ramp;
    cfg.connect_timeout = a.connect_timeout;
    cfg.sources = a.source.clone();
    cfg.stall_timeout = a.stall_timeout;
    cfg.max_loss = a.max_loss;
    cfg.expect = a.expect.map(|ExpectArg::Chargen| Expect::Chargen);
    cfg.per_backend = a.per_backend;
    cfg.cpu = CpuSources {
        server: match (a.server_metrics.first(), a.server_pid) {
            (Some(url), _) => Some(ServerCpu::Metrics(url.clone())),
            (None, Some(pid)) => Some(ServerCpu::Pid(pid)),
            (None, None) => None,
        },
        system: a.system_cpu,
    };
    cfg.fault_metrics = a.server_metrics.clone();
    cfg.tls = a.tls.settings(cfg.mode, given)?;
    Ok(cfg) // validated by the run, which reports a bad combination as exit status 2
}

/// The live line: rewritten in place once a second on a terminal, absent otherwise.
fn progress_printer(quiet: bool) -> impl FnMut(&Second) {
    let live = !quiet && io::stderr().is_terminal();
    let mut prev_t = 0.0;
    move |s: &Second| {
        if !live {
            return;
        }
        let span = (s.t - prev_t).max(1e-3);
        prev_t = s.t;
        let mib = 1024.0 * 1024.0;
        eprint!(
            "\r\x1b[K{:>5.0}s  {:>9.0} msg/s  {:>8.2} MiB/s out  {:>8.2} MiB/s in  {} open  {} errors",
            s.t,
            s.messages as f64 / span,
            s.bytes_sent as f64 / mib / span,
            s.bytes_received as f64 / mib / span,
            s.open,
            s.errors
        );
        let _ = io::stderr().flush();
    }
}

fn merge(files: &[PathBuf]) -> Result<Report, String> {
    let reports = files
        .iter()
        .map(|f| {
            let text = fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            if f.extension().is_some_and(|e| e == "hlog") {
                return files::read_hlog(&text).map_err(|e| format!("{}: {e}", f.display()));
            }
            serde_json::from_str::<Report>(&text)
                .map_err(|e| format!("{}: not a loopd-bench report: {e}", f.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Report::merge(&reports)
}

fn write_outputs(report: &Report, out: &OutputArgs) -> Result<(), String> {
    if io::stderr().is_terminal() && !out.quiet {
        eprint!("\r\x1b[K"); // clear the progress line
    }
    let json_to_stdout = out.json.as_deref() == Some("-");
    if let Some(path) = &out.json {
        let text = serde_json::to_string_pretty(report).expect("a report serialises");
        if json_to_stdout {
            println!("{text}");
        } else {
            fs::write(path, text + "\n").map_err(|e| format!("{path}: {e}"))?;
        }
    }
    if let Some(path) = &out.report {
        plot::draw(report, path)?;
    }
    if let Some(path) = &out.hgrm {
        files::write_hgrm_files(report, path)?;
    }
    if let Some(path) = &out.hlog {
        files::write_hlog(report, path)?;
    }
    if !out.quiet {
        if json_to_stdout {
            eprint!("{report}");
        } else {
            print!("{report}");
        }
    }
    Ok(())
}

/// The exit status, with one line on standard error saying what went wrong: 1 for errors
/// or a run that measured nothing, 3 for a confidence target not met.
fn verdict(report: &Report) -> ExitCode {
    match report.verdict() {
        Err(why) => fail(&why, 1),
        Ok(()) if report.iterations.as_ref().and_then(|i| i.met) == Some(false) => fail(
            "the confidence target was not met within the iterations allowed",
            EXIT_NOT_CONFIDENT,
        ),
        Ok(()) => ExitCode::SUCCESS,
    }
}

fn fail(message: &str, status: u8) -> ExitCode {
    eprintln!("loopd-bench: error: {message}");
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The flag definitions are consistent (clap's own debug assertions).
    #[test]
    fn flags() {
        Cli::command().debug_assert();
    }

    /// The flag defaults are exactly the library's documented defaults: a bare
    /// `loopd-bench TARGET` runs `BenchConfig::new(TARGET)`, and one iteration.
    #[test]
    fn flag_defaults_match_library_defaults() {
        let cli = Cli::parse_from(["loopd-bench", "127.0.0.1:7"]);
        let cfg = config("127.0.0.1:7", &cli.run).unwrap();
        assert_eq!(cfg, BenchConfig::new("127.0.0.1:7".parse().unwrap()));
        let iterations = cli.run.iterations.as_deref().unwrap_or("1");
        assert_eq!(Repeat::new(iterations, None).unwrap(), Repeat::default());
    }

    /// Every mode and protocol on the command line maps to the library's.
    #[test]
    fn names_match() {
        for m in Mode::ALL {
            assert!(ModeArg::from_str(m.name(), false).is_ok(), "{m}");
        }
        for p in Protocol::ALL {
            assert!(ProtocolArg::from_str(p.name(), false).is_ok(), "{p}");
        }
    }

    /// TLS flags make the settings: the SNI defaults to the target's host name (not an
    /// address); handshake mode implies TLS; a TLS setting without TLS is refused.
    #[test]
    fn tls_flags() {
        let parse = |args: &[&str]| {
            let mut all = vec!["loopd-bench", "example.test:443"];
            all.extend_from_slice(args);
            let cli = Cli::parse_from(all);
            let mode = match cli.run.mode {
                ModeArg::Handshake => Mode::Handshake,
                _ => Mode::Echo,
            };
            cli.run.tls.settings(mode, "example.test:443")
        };
        let t = parse(&["--tls", "--tls-resume", "50", "--cacert", "ca.pem"])
            .unwrap()
            .unwrap();
        assert_eq!(t.server_name.as_deref(), Some("example.test"));
        assert_eq!(t.resume_pct, 50.0);
        assert_eq!(t.trust, Trust::CaFile("ca.pem".into()));
        assert!(parse(&["-m", "handshake"]).unwrap().is_some());
        assert!(parse(&[]).unwrap().is_none());
        assert!(parse(&["--insecure"]).unwrap_err().contains("need --tls"));
        assert_eq!(host_name("127.0.0.1:443"), None);
        assert_eq!(host_name("[::1]:443"), None);
        assert_eq!(host_name("localhost:443").as_deref(), Some("localhost"));
    }
}
