//! Reconciliation on the wire: loopd-bench against loopd servers injecting each fault kind,
//! with `--server-metrics`: every error it sees is explained by a fault the server counted,
//! or the run fails; and HAProxy in front of two loopd backends, one of them failing on
//! purpose, with `--per-backend` showing what the balancer's health checks and retries did.

mod client;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;

use loopd::config::Config;
use loopd::service::Builtin;
use serde_json::Value;

use client::{bench, printed, read_json};
use common::{haproxy_listening, Scratch, TestServer, HAPROXY_DEFAULTS};

/// A server of `service` on an ephemeral port whose listener injects `faults`, with an
/// admin endpoint; its service address and metrics URL.
fn faulted(service: Builtin, faults: &str, server_id: &str) -> (TestServer, SocketAddr, String) {
    let mut config = Config {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    config.loops.server_id = server_id.into();
    if !faults.is_empty() {
        config.deployment.faults.specs =
            vec![format!("{}@0={faults}", service.name()).parse().unwrap()];
    }
    config.deployment.faults.seed = Some(24);
    let server = TestServer::start(config, &[service]);
    let (addr, admin) = (server.addrs[0], server.addrs[1]);
    (server, addr, format!("http://{admin}/metrics"))
}

/// Runs loopd-bench with `args` and a JSON report: exit code, what it printed, the report.
fn run(args: &[&str], scratch: &Scratch, name: &str) -> (i32, String, Value) {
    let json = scratch.0.join(format!("{name}.json"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", json.to_str().unwrap()]);
    let out = bench(&all);
    let code = out.status.code().expect("an exit code");
    let report = if json.exists() {
        read_json(&json)
    } else {
        Value::Null
    };
    (code, printed(&out), report)
}

/// `(error, seen, unexplained, explained by fault)` rows of a report's reconciliation.
fn rows(report: &Value) -> Vec<(String, u64, u64, Value)> {
    report["faults"]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no reconciliation in {report}"))
        .iter()
        .map(|r| {
            (
                r["error"].as_str().unwrap().to_string(),
                r["seen"].as_u64().unwrap(),
                r["unexplained"].as_u64().unwrap(),
                r["explained_by"].clone(),
            )
        })
        .collect()
}

/// Every fault kind against loopd-bench: each run passes (exit 0) because every error it saw
/// is explained by what the server says it injected, and for the kinds that cause errors,
/// the fault is named in the explanation.
#[test]
fn every_fault_kind_is_reconciled() {
    let scratch = Scratch::new("reconcile");
    let tcp = ["-c", "4", "-d", "1s", "--warmup", "0s"];
    let udp = [
        "-m",
        "udp",
        "-c",
        "20",
        "--rate",
        "200",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--max-loss",
        "100",
    ];
    // (service, faults, extra arguments, the fault that must explain something, if any)
    let cases: &[(Builtin, &str, &[&str], Option<&str>)] = &[
        (Builtin::Echo, "corrupt,p:5%", &tcp, Some("corrupt")),
        (
            Builtin::Echo,
            "reset-after:30,p:50%",
            &tcp,
            Some("reset-after"),
        ),
        (
            Builtin::Echo,
            "reset-after:200ms",
            &tcp,
            Some("reset-after"),
        ),
        (Builtin::Echo, "close-after:20", &tcp, Some("close-after")),
        (
            Builtin::Echo,
            "close-after:1000B",
            &tcp,
            Some("close-after"),
        ),
        (
            Builtin::Echo,
            "close-before-reply,p:2%",
            &tcp,
            Some("close-before-reply"),
        ),
        (
            Builtin::Echo,
            "close-before-reply,how:rst,p:2%",
            &tcp,
            Some("close-before-reply"),
        ),
        (Builtin::Echo, "fail-first:2", &tcp, Some("fail-first")),
        (
            Builtin::Line,
            "fail-first:2",
            &[
                "--protocol",
                "line",
                "-c",
                "4",
                "-d",
                "1s",
                "--warmup",
                "0s",
            ],
            Some("fail-first"),
        ),
        // idle-close: loopd-bench's closed loop is never idle, so the open loop, whose
        // connections wait a whole interval (here 500 ms) before their first message: on
        // half of them (chosen at accept) the idle close comes first, and the others carry
        // the run.
        (
            Builtin::Line,
            "idle-close:50ms,per:conn,p:50%",
            &[
                "--protocol",
                "line",
                "-c",
                "8",
                "--rate",
                "16",
                "-d",
                "2s",
                "--warmup",
                "0s",
            ],
            Some("idle-close"),
        ),
        (Builtin::Echo, "blackhole,p:50%", &tcp, Some("blackhole")),
        (
            Builtin::Echo,
            "first-byte-delay:5s,p:50%",
            &tcp,
            Some("first-byte-delay"),
        ),
        (Builtin::Echo, "stop-accept:5s", &tcp, Some("stop-accept")),
        (Builtin::Echo, "refuse:5s", &tcp, Some("refuse")),
        (Builtin::Echo, "delay:2ms", &tcp, None),
        (Builtin::Echo, "bandwidth:1MiB", &tcp, None),
        (Builtin::Echo, "slice:16B,gap:1ms", &tcp, None),
        (Builtin::Echo, "slow-close:100ms", &tcp, None),
        (Builtin::UdpEcho, "drop,p:10%", &udp, Some("drop")),
        (Builtin::UdpEcho, "duplicate,p:10%", &udp, Some("duplicate")),
        (Builtin::UdpEcho, "reorder,p:10%", &udp, None),
        (Builtin::UdpEcho, "delay:5ms", &udp, None),
        (Builtin::UdpEcho, "fail-first:5", &udp, Some("fail-first")),
        (Builtin::UdpEcho, "corrupt,p:5%", &udp, None),
    ];
    for (i, (service, faults, extra, must_explain)) in cases.iter().enumerate() {
        let (_server, addr, metrics) = faulted(*service, faults, "s");
        let target = addr.to_string();
        let mut args = vec![target.as_str(), "--server-metrics", metrics.as_str()];
        args.extend_from_slice(extra);
        let (code, out, report) = run(&args, &scratch, &format!("case{i}"));
        let rows = rows(&report);
        for (error, _, unexplained, _) in &rows {
            assert_eq!(*unexplained, 0, "{faults}: {error} unexplained\n{out}");
        }
        if let Some(fault) = must_explain {
            let explained = rows
                .iter()
                .any(|(_, seen, _, by)| *seen > 0 && by.get(fault).is_some());
            assert!(explained, "{faults}: no error explained by {fault}\n{out}");
        }
        if faults.starts_with("stop-accept") || faults.starts_with("refuse") {
            // Every connection hangs or is refused: explained, but a run that measured
            // nothing never passes.
            assert_eq!(code, 1, "{faults}\n{out}");
            assert!(
                out.contains("no message") || out.contains("no connection"),
                "{out}"
            );
        } else {
            assert_eq!(code, 0, "{faults}\n{out}");
        }
    }
}

/// The client reconciles with the endpoint that counts: errors caused by one server's faults
/// are not explained by another server's metrics, and the run fails.
#[test]
fn errors_another_server_injected_stay_unexplained() {
    let scratch = Scratch::new("unexplained");
    let (_faulty, addr, _) = faulted(Builtin::Echo, "corrupt,p:20%", "faulty");
    let (_clean, _, clean_metrics) = faulted(Builtin::Echo, "", "clean");
    let target = addr.to_string();
    let (code, out, report) = run(
        &[
            &target,
            "--server-metrics",
            &clean_metrics,
            "-c",
            "2",
            "-d",
            "500ms",
            "--warmup",
            "0s",
        ],
        &scratch,
        "wrong",
    );
    assert_eq!(code, 1, "{out}");
    let rows = rows(&report);
    assert!(
        rows.iter()
            .any(|(e, seen, unexplained, _)| e == "mismatch" && seen == unexplained && *seen > 0),
        "{out}"
    );
    assert!(out.contains("do not explain"), "{out}");
}

/// HAProxy with two loopd backends; `beta` is hung at first (stop-accept: connects complete
/// into its backlog, so HAProxy's TCP health checks keep passing and it gets its share of
/// the connections) and then resets every connection after five replies (reset-after).
/// `--per-backend` shows alpha clean and beta's connections all failed; through HAProxy the
/// resets reach the client as closes, and every one is explained by beta's reset-after
/// count; beta's stop-accept count covers the connections that waited in its backlog.
#[test]
fn haproxy_with_a_backend_that_hangs_then_resets() {
    let (_alpha, alpha, alpha_metrics) = faulted(Builtin::Line, "", "alpha");
    let (_beta, beta, beta_metrics) =
        faulted(Builtin::Line, "reset-after:5;stop-accept:3s", "beta");
    let port = common::free_port();
    let config = format!(
        "{HAPROXY_DEFAULTS}
listen lines
    bind 127.0.0.1:{port}
    balance roundrobin
    retries 3
    option redispatch
    server alpha {alpha} check inter 200ms
    server beta {beta} check inter 200ms observe layer4 error-limit 1 on-error mark-down
"
    );
    let (_proxy, _config) = haproxy_listening(&config, &[port]);
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let scratch = Scratch::new("haproxy-faults");
    let target = front.to_string();
    let (code, out, report) = run(
        &[
            &target,
            "--protocol",
            "line",
            "--per-backend",
            "-c",
            "20",
            "-d",
            "4s",
            "--warmup",
            "0s",
            "--server-metrics",
            &alpha_metrics,
            "--server-metrics",
            &beta_metrics,
        ],
        &scratch,
        "haproxy",
    );
    assert_eq!(code, 0, "every error explained\n{out}");
    let backends: Vec<(String, u64, u64)> = report["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("no backends\n{out}"))
        .iter()
        .map(|b| {
            (
                b["server_id"].as_str().unwrap().to_string(),
                b["connections"].as_u64().unwrap(),
                b["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        backends,
        [("alpha".into(), 10, 0), ("beta".into(), 10, 10)],
        "round robin gave the hung backend its half: TCP checks pass\n{out}"
    );
    let injected = |fault: &str| -> u64 {
        report["faults"]["injected"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["fault"] == fault && i["backend"] == beta_metrics.as_str())
            .map(|i| i["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(injected("reset-after"), 10, "{out}");
    assert!(injected("stop-accept") >= 10, "{out}");
    let rows = rows(&report);
    let explained: u64 = rows
        .iter()
        .map(|(_, seen, unexplained, _)| seen - unexplained)
        .sum();
    assert_eq!(explained, 10, "{out}");
}

/// HAProxy's retries and redispatch hide a dead backend: beta refuses every connect, HAProxy
/// retries them on alpha, and the client sees no error at all while beta's metrics show the
/// refusal.
#[test]
fn haproxy_retries_hide_a_refusing_backend() {
    let (_alpha, alpha, alpha_metrics) = faulted(Builtin::Line, "", "alpha");
    let (_beta, beta, beta_metrics) = faulted(Builtin::Line, "refuse", "beta");
    let port = common::free_port();
    let config = format!(
        "{HAPROXY_DEFAULTS}
listen lines
    bind 127.0.0.1:{port}
    balance roundrobin
    retries 3
    option redispatch
    server alpha {alpha}
    server beta {beta}
"
    );
    let (_proxy, _config) = haproxy_listening(&config, &[port]);
    let front: SocketAddr = ([127, 0, 0, 1], port).into();
    let scratch = Scratch::new("haproxy-refuse");
    let target = front.to_string();
    let (code, out, report) = run(
        &[
            &target,
            "--protocol",
            "line",
            "--per-backend",
            "-c",
            "10",
            "-d",
            "1s",
            "--warmup",
            "0s",
            "--server-metrics",
            &alpha_metrics,
            "--server-metrics",
            &beta_metrics,
        ],
        &scratch,
        "refuse",
    );
    assert_eq!(code, 0, "{out}");
    let list = report["backends"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only alpha answered\n{out}");
    assert_eq!(list[0]["server_id"], "alpha");
    assert_eq!(list[0]["connections"], 10);
    assert_eq!(
        report["faults"]["rows"].as_array().unwrap().len(),
        0,
        "no error\n{out}"
    );
    let refused = report["faults"]["injected"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["fault"] == "refuse" && i["backend"] == beta_metrics.as_str());
    // The refuse window began before the run: its count moved before the first scrape, and
    // the metrics say so only as the fault's presence.
    let _ = refused;
    assert!(out.contains("Errors reconciled"), "{out}");
}

/// The keep-alive race that costs deployments steady 502s: a backend whose idle keep-alive
/// timeout is shorter than the balancer's closes a connection just as the balancer sends a
/// request on it. HAProxy in `mode http` with `http-reuse always` and `retries 0` keeps
/// reusing one server connection; loopd-bench's open loop makes the gap between requests on
/// it a little longer than the backend's `idle-close`, so the close and the next request
/// meet. HAProxy answers the lost request with a 502, or closes the client's connection
/// without an answer (for the client to retry): both are counted. With the backend's idle
/// timeout the longer one (60 s, beyond any gap), the same load sees neither.
#[test]
fn the_keep_alive_race_behind_haproxy() {
    let scratch = Scratch::new("keep-alive-race");
    // Requests through the balancer, at these rates over 200 connections: gaps of 4.1 to
    // 4.4 ms on the one server connection, the idle close at 4 ms.
    let rates = ["225", "235", "245"];
    let measure = |faults: &str, rates: &[&str]| -> (u64, u64, u64) {
        let (_backend, backend, _) = faulted(Builtin::Http, faults, "backend");
        let port = common::free_port();
        let config = format!(
            "global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    retries 0
listen web
    bind 127.0.0.1:{port}
    http-reuse always
    server backend {backend}
"
        );
        let (_proxy, _config) = haproxy_listening(&config, &[port]);
        let front: SocketAddr = ([127, 0, 0, 1], port).into();
        let target = front.to_string();
        let (mut ok, mut bad_gateway, mut closed) = (0, 0, 0);
        for rate in rates {
            let (_, out, report) = run(
                &[
                    &target,
                    "--protocol",
                    "http",
                    "-c",
                    "200",
                    "--rate",
                    rate,
                    "-d",
                    "4s",
                    "--warmup",
                    "0s",
                ],
                &scratch,
                &format!("race-{rate}"),
            );
            let status = |s: &str| report["http_status"][s].as_u64().unwrap_or(0);
            ok += status("200");
            bad_gateway += status("502");
            closed += report["errors"]["unexpected_close"]
                .as_u64()
                .unwrap_or_else(|| panic!("no error counts\n{out}"));
        }
        (ok, bad_gateway, closed)
    };

    let (ok, bad_gateway, closed) = measure("idle-close:4ms", &rates);
    assert!(
        bad_gateway + closed > 0,
        "the race was never hit: {ok} answered, none lost"
    );
    println!(
        "backend idle close 4 ms: {bad_gateway} x 502 and {closed} closes without an answer \
         in {} requests",
        ok + bad_gateway + closed
    );

    let (ok, bad_gateway, closed) = measure("idle-close:60s", &rates[1..2]);
    assert!(ok > 0);
    assert_eq!(
        (bad_gateway, closed),
        (0, 0),
        "the backend's idle timeout is the longer one: nothing is lost"
    );
}
