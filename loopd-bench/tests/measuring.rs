//! loopd-bench as a measuring instrument, end to end: CPU per message checked against
//! /proc, repetitions until a confidence interval is met (or not), standard histogram files
//! read back by the hdrhistogram crate, the send lag of an open loop, and `compare`.

mod client;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use serde_json::Value;

use client::{bench, printed, read_json};
use common::daemon::Daemon;
use common::Scratch;

/// `--server-metrics` against loopd gives the server's CPU per message; the test measures
/// the same from /proc/PID/stat around the whole run (a little longer than the window, and
/// in 10 ms ticks), and the two agree within that slack.
#[test]
fn server_cpu_per_message_matches_proc() {
    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (echo, admin) = (daemon.addr_of("echo"), daemon.addr_of("admin"));
    let scratch = Scratch::new("cpu");
    let json = scratch.0.join("cpu.json");
    let metrics = format!("http://{admin}/metrics");
    let before = daemon.cpu_time();
    let out = bench(&[
        &echo.to_string(),
        "-c",
        "10",
        "-d",
        "2s",
        "--warmup",
        "0s",
        "--server-metrics",
        &metrics,
        "--system-cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let after = daemon.cpu_time();
    assert!(out.status.success(), "{}", printed(&out));
    let report = read_json(&json);
    let messages = report["messages"].as_f64().unwrap();
    let cpu = &report["cpu"];
    let server = cpu["server"]["us_per_message"].as_f64().unwrap();
    assert!(cpu["server"]["method"]
        .as_str()
        .unwrap()
        .contains("process_cpu_seconds_total scraped from http://"));
    let proc = (after - before).as_secs_f64() * 1e6 / messages;
    // Both counters tick in 10 ms: up to two ticks of error at each end of each figure.
    let slack = 0.04 * 1e6 / messages + 0.15 * proc;
    assert!(
        (server - proc).abs() <= slack,
        "server {server:.3} µs/msg by /metrics, {proc:.3} by /proc (slack {slack:.3})"
    );
    assert!(cpu["client"]["us_per_message"].as_f64().unwrap() > 0.0);
    assert!(cpu["system"]["us_per_message"].as_f64().unwrap() > 0.0);
    assert!(printed(&out).contains("cpu/message  client"));

    // A URL that does not answer is a bad setting, said at once.
    let out = bench(&[
        &echo.to_string(),
        "-d",
        "1s",
        "--server-metrics",
        "http://127.0.0.1:1/metrics",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", printed(&out));
    assert!(
        printed(&out).contains("server CPU (http://127.0.0.1:1/metrics)"),
        "{}",
        printed(&out)
    );
}

/// A confidence run against a steady loopd converges (a wide target: this machine may be
/// busy) and exits 0, with every iteration in the JSON.
#[test]
fn confidence_converges_against_a_steady_server() {
    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0"]);
    let scratch = Scratch::new("confident");
    let json = scratch.0.join("run.json");
    let out = bench(&[
        &daemon.addr().to_string(),
        "-c",
        "4",
        "-d",
        "500ms",
        "--warmup",
        "100ms",
        "--iterations",
        "3,12",
        "--confidence",
        "95,60",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", printed(&out));
    let report = read_json(&json);
    let it = &report["iterations"];
    let n = it["each"].as_array().unwrap().len();
    assert!((3..=12).contains(&n), "{it}");
    assert_eq!(it["met"], true);
    assert!(it["interval"]["half_width_pct"].as_f64().unwrap() <= 30.0);
    assert!(printed(&out).contains("target ±30%: met"));
}

/// An echo server (a thread per connection) that is fast for the connections of even
/// iterations and slow (a millisecond per reply) for odd ones: `connections` per
/// iteration.
fn alternating_server(connections: usize) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { return };
            let slow = (i / connections) % 2 == 1;
            std::thread::spawn(move || {
                let mut buf = [0; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if slow {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Against a server whose speed alternates between iterations, the target is never met:
/// MAX iterations, a warning, and exit status 3.
#[test]
fn confidence_not_met_exits_3() {
    let target = alternating_server(2);
    let scratch = Scratch::new("unconfident");
    let json = scratch.0.join("run.json");
    let out = bench(&[
        &target.to_string(),
        "-c",
        "2",
        "-d",
        "300ms",
        "--warmup",
        "0s",
        "--iterations",
        "2,4",
        "--confidence",
        "95,5",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", printed(&out));
    assert!(printed(&out)
        .contains("warning: the target of ±2.5% at 95% confidence was not met in 4 iterations"));
    let report = read_json(&json);
    assert_eq!(report["iterations"]["each"].as_array().unwrap().len(), 4);
    assert_eq!(report["iterations"]["met"], false);
}

/// Every row of the `.hgrm` file is the JSON histogram's value at that percentile; the
/// `.hlog` reads back through the hdrhistogram crate's interval-log reader to the JSON's
/// totals; and merging two runs' logs gives what merging their JSON gives.
#[test]
fn histogram_files_agree_with_the_json() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use loopd_bench::report::Latency;

    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0"]);
    let scratch = Scratch::new("histogram-files");
    let file = |name: &str| scratch.0.join(name).to_str().unwrap().to_string();
    for (run, extra) in [("a", vec![]), ("b", vec!["--rate", "2000"])] {
        let mut args = vec![
            daemon.addr().to_string(),
            "-c".into(),
            "4".into(),
            "-d".into(),
            "1500ms".into(),
            "--warmup".into(),
            "100ms".into(),
            "--json".into(),
            file(&format!("{run}.json")),
            "--hgrm".into(),
            file(&format!("{run}.hgrm")),
            "--hlog".into(),
            file(&format!("{run}.hlog")),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bench(&args);
        assert!(out.status.success(), "{}", printed(&out));
    }
    let latency = |report: &Value, key: &str| -> Latency {
        serde_json::from_value(report[key].clone()).unwrap()
    };

    // .hgrm rows against the JSON histogram (values in ms, three decimals).
    let a = read_json(&scratch.0.join("a.json"));
    let h = latency(&a, "latency").histogram().unwrap();
    let hgrm = std::fs::read_to_string(scratch.0.join("a.hgrm")).unwrap();
    let rows: Vec<(f64, f64, u64)> = hgrm
        .lines()
        .skip(2)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert!(rows.len() > 20, "{hgrm}");
    for &(value_ms, q, _) in &rows {
        // The quantile column is printed to six decimals, so a row sitting on a step of the
        // distribution may belong to either side of it: the row is right if its value is
        // the JSON histogram's at some quantile that prints as `q`.
        let at = |q: f64| h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1e6;
        let (low, high) = (at(q - 5e-7), at(q + 5e-7));
        let slack = 0.0005 + high * 0.001;
        assert!(
            value_ms >= low - slack && value_ms <= high + slack,
            "row at {q}: {value_ms} ms in .hgrm, {low}..{high} ms in the JSON"
        );
    }
    assert_eq!(rows.last().unwrap().2, h.len());
    // Open loop: the uncorrected distribution beside the corrected one.
    assert!(scratch.0.join("b.uncorrected.hgrm").exists());

    // .hlog through the crate's reader: every second's histograms add to the JSON's.
    let hlog = std::fs::read(scratch.0.join("a.hlog")).unwrap();
    let mut total = 0;
    let mut seconds = 0;
    for entry in IntervalLogIterator::new(&hlog) {
        if let LogEntry::Interval(i) = entry.unwrap() {
            assert_eq!(i.tag().unwrap().as_str(), "latency");
            let bytes = base64_decode(i.encoded_histogram());
            let part: hdrhistogram::Histogram<u64> = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .unwrap();
            total += part.len();
            seconds += 1;
        }
    }
    assert_eq!(total, h.len());
    assert!(seconds >= 2, "one histogram per second: {seconds}");

    // Merging the logs gives the latencies merging the JSON gives.
    let merged = |inputs: [&str; 2], out: &str| -> Value {
        let out_path = file(out);
        let a = file(inputs[0]);
        let b = file(inputs[1]);
        let o = bench(&["merge", "--json", &out_path, &a, &b]);
        assert!(o.status.success(), "{}", printed(&o));
        read_json(std::path::Path::new(&out_path))
    };
    let from_json = merged(["a.json", "b.json"], "m1.json");
    let from_logs = merged(["a.hlog", "b.hlog"], "m2.json");
    for key in ["latency", "uncorrected_latency"] {
        let (x, y) = (latency(&from_json, key), latency(&from_logs, key));
        assert_eq!(x.histogram().unwrap(), y.histogram().unwrap(), "{key}");
    }
    assert_eq!(from_json["messages"], from_logs["messages"]);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Open loop against a fast server: the sender keeps to its schedule, so its lag is a
/// wake-up's latency and no warning is printed. (How the lag
/// grows when the sender is starved is pinned on a fake clock in `schedule.rs`.)
#[test]
fn send_lag_is_small_against_a_fast_server() {
    let daemon = Daemon::start(&["-l", "echo=127.0.0.1:0"]);
    let scratch = Scratch::new("send-lag");
    let json = scratch.0.join("run.json");
    let out = bench(&[
        &daemon.addr().to_string(),
        "-c",
        "4",
        "--rate",
        "2000",
        "-d",
        "1s",
        "--warmup",
        "200ms",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", printed(&out));
    let report = read_json(&json);
    let lag = &report["send_lag"];
    assert!(lag["count"].as_u64().unwrap() > 1000, "{lag}");
    // Tens of microseconds on an idle machine; the bound leaves room for a busy one.
    assert!(lag["p50_us"].as_f64().unwrap() < 5000.0, "{lag}");
    assert!(printed(&out).contains("send lag"));

    // Closed loop has no schedule to lag behind.
    let out = bench(&[
        &daemon.addr().to_string(),
        "-c",
        "2",
        "-d",
        "300ms",
        "--json",
        "-",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["send_lag"].is_null());
}

/// `compare` against two servers: alternating iterations, every column of the table filled
/// (server CPU from one's metrics and the other's /proc entry), ratios to the first; the
/// picture renders to PNG with `rsvg-convert` and its text is of a legible size.
#[test]
fn compare_two_servers() {
    let a = Daemon::start(&["-l", "echo=127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let b = Daemon::start(&["-l", "echo=127.0.0.1:0", "--threads", "2"]);
    let scratch = Scratch::new("compare");
    let svg = scratch.0.join("compare.svg");
    let json = scratch.0.join("compare.json");
    let first = format!(
        "one={}@http://{}/metrics",
        a.addr_of("echo"),
        a.addr_of("admin")
    );
    let second = format!("two={}@pid:{}", b.addr(), b.pid());
    let out = bench(&[
        "compare",
        &first,
        &second,
        "-c",
        "4",
        "-d",
        "500ms",
        "--warmup",
        "200ms",
        "--iterations",
        "3",
        "--report",
        svg.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let text = printed(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("| target | iterations | msg/s (mean ± 95% interval) | ratio | p50 | ratio | p99 | ratio | client CPU µs/msg | ratio | server CPU µs/msg | ratio |"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| one |") || l.starts_with("| two |"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in &rows {
        assert_eq!(row[2], "3", "three iterations each: {row:?}");
        for cell in &row[3..13] {
            assert!(
                !cell.is_empty() && *cell != "—",
                "an empty column in {row:?}"
            );
        }
    }
    for ratio in [4, 6, 8, 10, 12] {
        assert_eq!(rows[0][ratio], "1.00", "the first target is the reference");
    }
    assert!(text.contains("two vs one: msg/s intervals"), "{text}");
    // Iterations alternate: one, two, one, two, ...
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.split(" iteration ")
                .next()
                .filter(|_| l.contains(" iteration "))
        })
        .collect();
    assert_eq!(order, ["one", "two", "one", "two", "one", "two"]);
    let report = read_json(&json);
    assert_eq!(report["targets"].as_array().unwrap().len(), 2);

    let rsvg = common::require("rsvg-convert", "librsvg2-bin");
    let png = scratch.0.join("compare.png");
    let converted = Command::new(rsvg)
        .arg(&svg)
        .arg("-o")
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        converted.status.success() && converted.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&converted.stderr)
    );
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let picture = std::fs::read_to_string(&svg).unwrap();
    for size in picture.split("font-size=\"").skip(1) {
        let px: f64 = size
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(px >= 10.0, "text of {px}px is too small to read");
    }
    let labelled = |name: &str| picture.lines().filter(|l| l.trim() == name).count();
    // Each target's name labels its latency curve and its throughput line.
    assert!(
        labelled("one") >= 2 && labelled("two") >= 2,
        "a curve per target"
    );
}
