//! `--per-backend` through a real HAProxy in front of two loopd backends with different
//! `--server-id`s: a round robin shows both backends with half the connections each, `balance
//! first` shows one; merging runs keeps the split; the picture has a curve per backend.

mod client;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;

use loopd::config::Config;
use loopd::service::Builtin;
use serde_json::Value;

use client::{bench, printed, read_json};
use common::{haproxy_listening, Scratch, TestServer, HAPROXY_DEFAULTS};

fn line_backend(server_id: &str) -> TestServer {
    let mut config = Config::default();
    config.loops.server_id = server_id.into();
    TestServer::start(config, &[Builtin::Line])
}

/// Runs loopd-bench: its exit code and what it printed.
fn run(args: &[&str]) -> (i32, String) {
    let out = bench(args);
    (out.status.code().expect("an exit code"), printed(&out))
}

/// `(server id, connections, errors)` of every backend in a report, and its spread.
fn backends(report: &Value) -> (Vec<(String, u64, u64)>, Value) {
    let list = report["backends"]
        .as_array()
        .unwrap_or_else(|| panic!("no backends in {report}"))
        .iter()
        .map(|b| {
            (
                b["server_id"].as_str().unwrap().to_string(),
                b["connections"].as_u64().unwrap(),
                b["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    (list, report["spread"].clone())
}

#[test]
fn per_backend_through_haproxy() {
    let (alpha, beta) = (line_backend("alpha"), line_backend("beta"));
    let scratch = Scratch::new("per-backend");
    let mut reports = Vec::new();
    for balance in ["roundrobin", "first"] {
        let port = common::free_port();
        let config = format!(
            "{HAPROXY_DEFAULTS}
listen lines
    bind 127.0.0.1:{port}
    balance {balance}
    server alpha {} check inter 1s
    server beta {} check inter 1s
",
            alpha.addr(),
            beta.addr()
        );
        let (_proxy, _config) = haproxy_listening(&config, &[port]);
        let front: SocketAddr = ([127, 0, 0, 1], port).into();
        let json = scratch.0.join(format!("{balance}.json"));
        let svg = scratch.0.join(format!("{balance}.svg"));
        let (code, summary) = run(&[
            &front.to_string(),
            "--protocol",
            "line",
            "--per-backend",
            "-c",
            "100",
            "-d",
            "1s",
            "--warmup",
            "200ms",
            "--json",
            json.to_str().unwrap(),
            "--report",
            svg.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{summary}");
        let report = read_json(&json);
        let (list, spread) = backends(&report);
        match balance {
            "roundrobin" => {
                assert_eq!(
                    list,
                    [("alpha".into(), 50, 0), ("beta".into(), 50, 0)],
                    "{summary}"
                );
                assert_eq!(spread["chi_square"], 0.0);
                assert_eq!(spread["degrees_of_freedom"], 1);
                let picture = std::fs::read_to_string(&svg).unwrap();
                assert!(picture.contains("backend alpha") && picture.contains("backend beta"));
            }
            _ => assert_eq!(list, [("alpha".into(), 100, 0)], "{summary}"),
        }
        assert!(summary.contains("backends     "), "{summary}");
        reports.push(json);
    }

    // Merged, the two runs are one report with the backends added by name.
    let merged = scratch.0.join("merged.json");
    let mut args = vec!["merge", "--json", merged.to_str().unwrap()];
    args.extend(reports.iter().map(|p| p.to_str().unwrap()));
    let (code, summary) = run(&args);
    assert_eq!(code, 0, "{summary}");
    let (list, spread) = backends(&read_json(&merged));
    assert_eq!(list, [("alpha".into(), 150, 0), ("beta".into(), 50, 0)]);
    // (150 − 100)² / 100 + (50 − 100)² / 100 = 50.
    assert_eq!(spread["chi_square"], 50.0);
}

/// A server that does not speak the line protocol (here, echo, which returns `SERVER` as it
/// came) fails the run with a located error instead of inventing a backend.
#[test]
fn a_server_without_server_fails_clearly() {
    let echo = TestServer::start(Config::default(), &[Builtin::Echo]);
    let (code, printed) = run(&[
        &echo.addr().to_string(),
        "--protocol",
        "line",
        "--per-backend",
        "-c",
        "2",
        "-d",
        "300ms",
        "--warmup",
        "0s",
    ]);
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.contains("SERVER was answered \"SERVER\\n\""),
        "{printed}"
    );
}
