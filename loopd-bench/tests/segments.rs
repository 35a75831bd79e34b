//! Load from many machines, tested without a cluster: the Kubernetes Indexed Job of
//! `dist/kubernetes/loopd-bench-job.yaml` run as local processes with the environment its pods
//! get, against one loopd, their reports taken from their logs the way
//! `loopd-bench-job.sh collect` does and merged, and compared with one process making the
//! same load. The manifest's arguments are the ones run: only the target, the size of the
//! load and the start time are replaced.

mod client;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use loopd::config::{parse_duration, Config};
use loopd::service::{Builtin, ConnInfo, Handler, Output as Sink, Service, ServiceOptions};
use loopd::{EndpointSpec, Server};
use loopd_bench::payload::{parse_header, HEADER_LEN};
use loopd_bench::DRAIN_GRACE;
use serde_json::Value;

use client::{bench, errors};
use common::{require, wait_until, Scratch, PATIENCE};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest() -> PathBuf {
    root().join("dist/kubernetes/loopd-bench-job.yaml")
}

fn script() -> PathBuf {
    root().join("dist/kubernetes/loopd-bench-job.sh")
}

/// The first YAML document of `text`, as JSON, through Debian's PyYAML (`.ci/run`
/// installs python3-yaml).
fn yaml(text: &str) -> Value {
    let python = require("python3", "python3");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "the manifest does not parse (PyYAML is Debian's python3-yaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the script with `args`, `stdin` on its standard input and `env` added.
fn run_script(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut child = Command::new(require("sh", "dash"))
        .arg(script())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Job's container: its arguments as strings.
fn container_args(job: &Value) -> Vec<String> {
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"][0], "/usr/local/bin/loopd-bench");
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("the Job's args have no {name}: {args:?}"));
    &args[i + 1]
}

/// The Job is an Indexed Job of N segments, all at once, not retried, bounded in time, whose
/// pods take their segment from the index, start at the rendered time and print their report.
#[test]
fn the_job_is_an_indexed_job_of_segments() {
    let job = yaml(&std::fs::read_to_string(manifest()).unwrap());
    assert_eq!(job["kind"], "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let args = container_args(&job);
    let segment = flag(&args, "--segment");
    let n: u64 = segment
        .strip_prefix("JOB_COMPLETION_INDEX/")
        .unwrap_or_else(|| panic!("--segment {segment}: not taken from the index"))
        .parse()
        .unwrap();
    assert!(n >= 2);
    assert_eq!(spec["completions"], n, "one pod per segment");
    assert_eq!(spec["parallelism"], n, "every segment at once");
    assert_eq!(
        spec["backoffLimitPerIndex"], 0,
        "a late retry cannot rejoin"
    );
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(flag(&args, "--start-at"), "START_AT");
    assert_eq!(flag(&args, "--json"), "-");
    assert!(
        args.iter().any(|a| a == "--quiet"),
        "only the report on stdout"
    );

    // The deadline covers the script's lead, the warm-up, the measurement and the drain.
    let text = std::fs::read_to_string(script()).unwrap();
    let lead: u64 = text
        .split("lead=${LEAD:-")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .and_then(|n| n.parse().ok())
        .expect("the script's default lead");
    let warmup = args
        .iter()
        .position(|a| a == "--warmup")
        .map_or(Duration::from_secs(1), |i| {
            parse_duration(&args[i + 1]).unwrap()
        });
    let run = Duration::from_secs(lead)
        + warmup
        + parse_duration(flag(&args, "-d")).unwrap()
        + DRAIN_GRACE;
    let deadline = spec["activeDeadlineSeconds"].as_u64().unwrap();
    assert!(
        deadline > run.as_secs(),
        "activeDeadlineSeconds {deadline} < {run:?}"
    );
}

/// `render` fills in a start LEAD seconds ahead and changes nothing else; `extract` takes the
/// report out of a log that has warnings before it and an error after it.
#[test]
fn the_script_renders_the_start_and_extracts_the_report() {
    let before = SystemTime::now();
    let out = run_script(&["render"], b"", &[("LEAD", "90")]);
    let rendered = yaml(&String::from_utf8(out.stdout).unwrap());
    let original = yaml(&std::fs::read_to_string(manifest()).unwrap());
    let (args, template) = (container_args(&rendered), container_args(&original));
    let start = humantime::parse_rfc3339(flag(&args, "--start-at")).unwrap();
    let ahead = start.duration_since(before).unwrap();
    assert!(
        ahead > Duration::from_secs(88) && ahead <= Duration::from_secs(92),
        "{ahead:?}"
    );
    let i = template.iter().position(|a| a == "START_AT").unwrap();
    let mut expected = template.clone();
    expected[i] = flag(&args, "--start-at").to_string();
    assert_eq!(args, expected);

    let log = "[2026-12-05T10:00:00Z WARN  loopd_bench::run] the system clock is not \
               synchronised\n{\n  \"runs\": [\n    {\n      \"mode\": \"echo\"\n    }\n  ]\n}\n\
               loopd-bench: error: 3 errors: 3 mismatch\n";
    let out = run_script(&["extract"], log.as_bytes(), &[]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["runs"][0]["mode"], "echo");
}

/// Echo that writes down, for each connection, the connection id its first message names:
/// which identities the clients used, and how often.
fn recording_echo() -> (SocketAddr, Arc<Mutex<Vec<u32>>>, impl FnOnce()) {
    struct Recording {
        inner: Box<dyn Service>,
        head: Vec<u8>,
        ids: Arc<Mutex<Vec<u32>>>,
    }
    impl Service for Recording {
        fn on_input(&mut self, input: &[u8], out: &mut Sink<'_>) -> usize {
            let consumed = self.inner.on_input(input, out);
            if self.head.len() < HEADER_LEN {
                let n = (HEADER_LEN - self.head.len()).min(consumed);
                self.head.extend_from_slice(&input[..n]);
                if self.head.len() == HEADER_LEN {
                    let (id, seq) = parse_header(&self.head).expect("a message header");
                    assert_eq!(seq, 0, "a connection's first message");
                    self.ids.lock().unwrap().push(id);
                }
            }
            consumed
        }
        fn on_peer_finished(&mut self, out: &mut Sink<'_>) {
            self.inner.on_peer_finished(out)
        }
        fn on_drained(&mut self, out: &mut Sink<'_>) {
            self.inner.on_drained(out)
        }
    }
    let ids: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = ids.clone();
    let echo = Builtin::Echo.factory(ServiceOptions::default()).unwrap();
    let factory = Arc::new(move |conn: &ConnInfo<'_>| -> Box<dyn Service> {
        Box::new(Recording {
            inner: echo.new_service(conn),
            head: Vec::new(),
            ids: seen.clone(),
        })
    });
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config::default();
    let endpoint = EndpointSpec::bind(addr, Handler::Stream(factory));
    let server = Server::with_endpoints(&config.deployment, &config.loops, vec![endpoint]).unwrap();
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    let stop = move || {
        handle.shutdown();
        thread.join().unwrap().unwrap();
    };
    (addr, ids, stop)
}

/// The Job's arguments for this machine: the target, the load and the start replaced, every
/// other argument as the manifest has it. Each replaced flag must be in the manifest.
fn local_args(manifest_args: &[String], replace: &[(&str, &str)], target: &str) -> Vec<String> {
    let mut args = manifest_args.to_vec();
    assert!(!args[0].starts_with('-'), "the target comes first");
    args[0] = target.to_string();
    for (name, value) in replace {
        let i = args
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("the Job's args have no {name}"));
        args[i + 1] = value.to_string();
    }
    args
}

/// Starts a pod's process: `args`, `JOB_COMPLETION_INDEX` set as the Job controller sets it,
/// standard output and standard error into one stream as a pod's log has them.
fn start_pod(args: &[String], index: u32) -> std::process::Child {
    Command::new(require("sh", "dash"))
        .args([
            "-c",
            "exec \"$0\" \"$@\" 2>&1",
            env!("CARGO_BIN_EXE_loopd-bench"),
        ])
        .args(args)
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn loopd-bench")
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The Job's segments, as local processes with the index in their environment and a shared
/// start, against one loopd: merged from their logs, they make the same run as one process
/// with the same total load — every connection identity used exactly once, the same
/// connections and messages (exactly: the open-loop slots of a window are a function of the
/// connection ids), every reply verified, the same rate. Leaving a segment out, or moving one
/// window away from the others, is caught by `merge`.
#[test]
fn segments_of_the_job_add_up_to_one_process() {
    const CONNECTIONS: usize = 40;
    let manifest_args = container_args(&yaml(&std::fs::read_to_string(manifest()).unwrap()));
    let n: u32 = flag(&manifest_args, "--segment")
        .strip_prefix("JOB_COMPLETION_INDEX/")
        .unwrap()
        .parse()
        .unwrap();
    let (addr, ids, stop) = recording_echo();
    let target = addr.to_string();
    let connections = CONNECTIONS.to_string();
    // Long enough for every process to be started and to connect before its warm-up ends
    // on a loaded machine; a process later than that refuses, and the test says so.
    let start = SystemTime::now() + Duration::from_secs(4);
    let start_at = humantime::format_rfc3339_millis(start).to_string();
    let load = [
        ("-c", connections.as_str()),
        ("--rate", "2000"),
        ("-d", "3s"),
    ];
    let mut replace = load.to_vec();
    replace.push(("--start-at", &start_at));
    let args = local_args(&manifest_args, &replace, &target);

    let scratch = Scratch::new("segments");
    let mut pods: Vec<_> = (0..n).map(|i| start_pod(&args, i)).collect();
    let deadline = Instant::now() + PATIENCE * 2;
    wait_until("the segments to finish", || {
        if Instant::now() > deadline {
            pods.iter_mut().for_each(|p| drop(p.kill()));
        }
        pods.iter_mut()
            .all(|p| p.try_wait().unwrap().is_some())
            .then_some(())
    });
    let mut files = Vec::new();
    let mut segments = Vec::new();
    for (i, pod) in pods.into_iter().enumerate() {
        let log = pod.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&log.stdout).into_owned();
        assert!(log.status.success(), "segment {i}: {text}");
        let extracted = run_script(&["extract"], &log.stdout, &[]).stdout;
        let report: Value = serde_json::from_slice(&extracted)
            .unwrap_or_else(|e| panic!("segment {i}: no report in its log ({e}): {text}"));
        let share = CONNECTIONS / n as usize + usize::from(i < CONNECTIONS % n as usize);
        assert_eq!(report["runs"][0]["segment"]["index"], i);
        assert_eq!(u(&report["connections"], "requested"), share as u64);
        assert_eq!(u(&report["connections"], "established"), share as u64);
        assert_eq!(errors(&report), 0, "segment {i}: {}", report["errors"]);
        let window = &report["window"];
        let lag = window["start_lag_secs"].as_f64().expect("a start lag");
        assert!(
            (0.0..1.0).contains(&lag),
            "segment {i} started {lag} s late"
        );
        assert!(
            window["clock_synchronised"].is_boolean(),
            "the kernel was asked: {window}"
        );
        let path = scratch.write(
            &format!("segment-{i}.json"),
            std::str::from_utf8(&extracted).unwrap(),
        );
        files.push(path.display().to_string());
        segments.push(report);
    }
    let mut used = std::mem::take(&mut *ids.lock().unwrap());
    used.sort();
    assert_eq!(
        used,
        (0..CONNECTIONS as u32).collect::<Vec<_>>(),
        "every connection id once across the segments"
    );

    let out = bench(
        &[
            &["merge"],
            &files.iter().map(String::as_str).collect::<Vec<_>>()[..],
            &["--json", "-"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", client::printed(&out));
    let merged: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(merged["merged"]["kind"], "segments");
    assert_eq!(
        merged["merged"]["present"],
        serde_json::json!((0..n).collect::<Vec<_>>())
    );
    assert_eq!(merged["merged"]["missing"], serde_json::json!([]));

    // One process, the same total load, no segment and no shared start.
    let mut single_args = local_args(&manifest_args, &load, &target);
    let i = single_args.iter().position(|a| a == "--segment").unwrap();
    single_args.drain(i..i + 2);
    let i = single_args.iter().position(|a| a == "--start-at").unwrap();
    single_args.drain(i..i + 2);
    let out = bench(&single_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", client::printed(&out));
    let single: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut used = std::mem::take(&mut *ids.lock().unwrap());
    used.sort();
    assert_eq!(used, (0..CONNECTIONS as u32).collect::<Vec<_>>());
    stop();

    for key in ["requested", "established", "served"] {
        assert_eq!(u(&merged["connections"], key), CONNECTIONS as u64, "{key}");
        assert_eq!(u(&single["connections"], key), CONNECTIONS as u64, "{key}");
    }
    assert_eq!(errors(&merged), 0);
    assert_eq!(errors(&single), 0);
    assert_eq!(
        u(&merged, "messages"),
        u(&single, "messages"),
        "the same schedule"
    );
    // Bytes count when they are written and read, not at their message's slot: on a loaded
    // machine a write due just before the window's edge can land just after it, in either
    // run. So they agree to within a few messages, while the messages agree exactly.
    for key in ["bytes_sent", "bytes_received"] {
        let (m, s) = (u(&merged, key), u(&single, key));
        assert!(
            m.abs_diff(s) <= s / 100,
            "{key}: merged {m}, one process {s}"
        );
    }
    assert_eq!(u(&merged["latency"], "count"), u(&merged, "messages"));
    let rate = |r: &Value| r["rates"]["messages_per_sec"].as_f64().unwrap();
    let (m, s) = (rate(&merged), rate(&single));
    assert!(
        (m / s - 1.0).abs() < 0.01,
        "merged {m:.1} msg/s, one process {s:.1}"
    );
    assert!(
        (s / 2000.0 - 1.0).abs() < 0.02,
        "{s:.1} msg/s for --rate 2000"
    );
    let p = |r: &Value, q: &str| r["latency"][q].as_f64().unwrap();
    eprintln!(
        "{n} segments merged: {} messages, {m:.1} msg/s, p50 {:.0} µs, p99 {:.0} µs; one \
         process: {} messages, {s:.1} msg/s, p50 {:.0} µs, p99 {:.0} µs",
        u(&merged, "messages"),
        p(&merged, "p50_us"),
        p(&merged, "p99_us"),
        u(&single, "messages"),
        p(&single, "p50_us"),
        p(&single, "p99_us"),
    );

    // One segment left out: named, and the merge fails its verdict.
    let partial: Vec<&str> = files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, f)| f.as_str())
        .collect();
    let out = bench(&[&["merge"], &partial[..], &["--json", "-"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("segment 1 of {n} missing")),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["merged"]["missing"], serde_json::json!([1]));

    // One segment's window moved by two seconds of three: refused.
    let mut moved = segments[0].clone();
    for end in ["start", "end"] {
        let t = humantime::parse_rfc3339(moved["window"][end].as_str().unwrap()).unwrap();
        moved["window"][end] =
            Value::from(humantime::format_rfc3339_nanos(t + Duration::from_secs(2)).to_string());
    }
    let path = scratch.write("moved.json", &moved.to_string());
    let mut others: Vec<&str> = files[1..].iter().map(String::as_str).collect();
    others.push(path.to_str().unwrap());
    let out = bench(&[&["merge"], &others[..]].concat());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("measurement windows overlap for") && stderr.contains("less than 90%"),
        "{stderr}"
    );
}

/// Segments and starts that cannot make a run are refused before anything connects, with
/// exit status 2 and the reason: an index out of range or unset, a start already past the
/// warm-up or hours ahead, a segment repeated as a series.
#[test]
fn impossible_segments_and_starts_are_refused() {
    let at = |t: SystemTime| humantime::format_rfc3339(t).to_string();
    let now = SystemTime::now();
    let past = at(now - Duration::from_secs(60));
    let far = at(now + Duration::from_secs(3 * 3600));
    let soon = at(now + Duration::from_secs(30));
    for (args, says) in [
        (vec!["--segment", "4/4"], "the last of 4 is 3/4"),
        (
            vec!["--segment", "NO_SUCH_INDEX/4"],
            "NO_SUCH_INDEX is not set",
        ),
        (
            vec!["--segment", "0/4", "-c", "3"],
            "4 segments for 3 connections",
        ),
        (vec!["--start-at", "10:00"], "not an RFC 3339 time in UTC"),
        (
            vec!["--start-at", &past],
            "s ago, and the measurement was to begin 1.0 s after it",
        ),
        (vec!["--start-at", &far], "ahead, more than the 1h allowed"),
        (
            vec!["--segment", "0/2", "--iterations", "3"],
            "repeat the whole run",
        ),
        (
            vec!["--start-at", &soon, "--iterations", "3"],
            "repeat the whole run",
        ),
    ] {
        let mut all = vec!["127.0.0.1:9"];
        all.extend_from_slice(&args);
        let out = bench(&all);
        let said = client::printed(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains(says), "{args:?}: {said}");
    }
}
