//! loopd-bench over TLS against real TLS servers: HAProxy `ssl` in front of loopd in every
//! stream mode and protocol, `openssl s_server` (TLS 1.2 and 1.3, tickets or none, client
//! certificates required, a version it refuses), nginx's stream `ssl` with a session cache
//! and tickets, and a TLS-terminating proxy written here that flips a byte or truncates.
//! Resumption counts are checked against each server's own: `s_server`'s `Reused
//! session-id` lines and nginx's `$ssl_session_reused`. Certificates are made at run time.

mod client;
#[path = "../../tests/common/mod.rs"]
mod common;
mod tls_peers;

use std::net::SocketAddr;

use loopd::config::Config;
use loopd::service::Builtin;
use serde_json::Value;

use client::{bench, bench_json, error, errors, printed};
use common::{haproxy, TestServer, HAPROXY_DEFAULTS};
use tls_peers::{wait_listening, Fault, Nginx, Pki, Proxy, SServer};

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Full and resumed handshakes, inside the window and out: everything the server saw.
fn all_handshakes(report: &Value) -> (u64, u64) {
    let t = &report["tls"];
    (
        n(&t["handshakes"]["full"]) + n(&t["handshakes_outside_window"]["full"]),
        n(&t["handshakes"]["resumed"]) + n(&t["handshakes_outside_window"]["resumed"]),
    )
}

fn assert_clean(code: i32, report: &Value, text: &str) {
    assert_eq!(errors(report), 0, "{text}");
    assert_eq!(code, 0, "{text}");
}

/// Every stream mode and protocol over TLS, through a real HAProxy terminating TLS in front
/// of plain loopd: echo (raw, line, frame), send, recv (every byte checked against chargen)
/// and connect; each verified, each handshake counted and timed apart, what was negotiated
/// named.
#[test]
fn every_stream_mode_through_haproxy_ssl() {
    let pki = Pki::new("haproxy");
    let loopd = TestServer::start(
        Config::default(),
        &[
            Builtin::Echo,
            Builtin::Line,
            Builtin::Frame,
            Builtin::Discard,
            Builtin::Chargen,
        ],
    );
    let services = ["echo", "line", "frame", "discard", "chargen"];
    let ports: Vec<u16> = services.iter().map(|_| tls_peers::free_port()).collect();
    let mut config = HAPROXY_DEFAULTS.to_string();
    for (i, name) in services.iter().enumerate() {
        config += &format!(
            "listen {name}\n    bind 127.0.0.1:{} ssl crt {}\n    server loopd {}\n",
            ports[i],
            pki.combined.display(),
            loopd.addrs[i]
        );
    }
    let (proxy, _dir) = haproxy(&config);
    let front = |i: usize| -> SocketAddr { ([127, 0, 0, 1], ports[i]).into() };
    for i in 0..services.len() {
        wait_listening(front(i), &format!("haproxy ({:?})", proxy.log()));
    }
    let ca = pki.ca.to_str().unwrap();
    let tls = ["--tls", "--cacert", ca, "--tls-sni", "localhost"];
    let cases: [(usize, &[&str]); 6] = [
        (0, &["-m", "echo"]),
        (1, &["-m", "echo", "--protocol", "line"]),
        (2, &["-m", "echo", "--protocol", "frame", "-s", "1000"]),
        (3, &["-m", "send", "-s", "16KiB"]),
        (4, &["-m", "recv", "--expect", "chargen"]),
        (0, &["-m", "connect", "--tls-resume", "50"]),
    ];
    for (i, mode) in cases {
        let mut args = vec!["-c", "4", "-d", "500ms"];
        args.extend_from_slice(mode);
        args.extend_from_slice(&tls);
        let (code, r, text) = bench_json(front(i), &args);
        assert_clean(code, &r, &text);
        let (full, resumed) = all_handshakes(&r);
        assert!(full + resumed >= 4, "{text}");
        let negotiated = &r["tls"]["negotiated"][0];
        assert_eq!(negotiated["version"], "TLSv1.3", "{text}");
        assert!(text.contains("negotiated   TLSv1.3"), "{text}");
        match mode[1] {
            "recv" => assert!(n(&r["bytes_received"]) > 0, "{text}"),
            "send" => assert!(n(&r["messages"]) > 0, "{text}"),
            _ => assert!(n(&r["messages"]) > 0, "{text}"),
        }
        if mode[1] == "connect" {
            // Each connection one handshake; half of them resumed, by HAProxy's cache.
            assert!(resumed > 0 && full > 0, "{text}");
            let connect = &r["connect_latency"];
            let handshake = &r["tls"]["handshake_latency"]["full"];
            assert!(n(&connect["count"]) > 0 && n(&handshake["count"]) > 0);
        }
    }
}

/// `-m handshake --tls-resume 50` against `openssl s_server`, TLS 1.3 then 1.2: every
/// other connection resumes, and loopd-bench's count of resumed handshakes is exactly the
/// number of sessions s_server reports reused. The server's CPU per handshake is read from
/// its process.
#[test]
fn resumption_matches_s_servers_count() {
    let pki = Pki::new("s_server");
    for version in ["-tls1_3", "-tls1_2"] {
        let server = SServer::start(&pki, &[version]);
        let pid = server.pid().to_string();
        let (code, r, text) = bench_json(
            server.addr,
            &[
                "-m",
                "handshake",
                "-c",
                "1",
                "-d",
                "1s",
                "--cacert",
                pki.ca.to_str().unwrap(),
                "--tls-sni",
                "localhost",
                "--tls-resume",
                "50",
                "--server-pid",
                &pid,
            ],
        );
        assert_clean(code, &r, &text);
        let (full, resumed) = all_handshakes(&r);
        assert!(resumed >= 5, "{text}");
        // The schedule alternates from the first connection: exact, or one more full.
        assert!(
            full == resumed || full == resumed + 1,
            "{full} {resumed}: {text}"
        );
        common::wait_until(
            &format!(
                "s_server to report {resumed} reused sessions: {}",
                server.output()
            ),
            || (server.lines_with("Reused session-id") as u64 >= resumed).then_some(()),
        );
        assert_eq!(
            server.lines_with("Reused session-id") as u64,
            resumed,
            "{version}"
        );
        let v = if version == "-tls1_3" {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        };
        assert_eq!(r["tls"]["negotiated"][0]["version"], v, "{text}");
        assert!(r["cpu"]["server"]["us_per_handshake"].as_f64().unwrap() >= 0.0);
        assert!(r["cpu"]["client"]["us_per_handshake"].as_f64().unwrap() > 0.0);
        assert!(text.contains("cpu/handshake"), "{text}");
        assert!(text.contains("50.0% resumed") || text.contains("% resumed (asked 50%"));
    }
}

/// A TLS 1.3 server that sends no ticket (`-num_tickets 0`) and does not speak first: no
/// connection has a session to offer, none resumes, and each waits the connect timeout after
/// its handshake for a word that never comes — said in a warning, not an error.
#[test]
fn no_tickets_no_resumption() {
    let pki = Pki::new("no-tickets");
    let server = SServer::start(&pki, &["-tls1_3", "-num_tickets", "0"]);
    let (code, r, text) = bench_json(
        server.addr,
        &[
            "-m",
            "handshake",
            "-c",
            "1",
            "-d",
            "600ms",
            "--connect-timeout",
            "100ms",
            "--cacert",
            pki.ca.to_str().unwrap(),
            "--tls-resume",
            "100",
        ],
    );
    assert_clean(code, &r, &text);
    assert_eq!(all_handshakes(&r).1, 0, "{text}");
    assert_eq!(n(&r["tls"]["offered"]), 0);
    assert!(n(&r["tls"]["waited_out"]) >= 2, "{text}");
    assert!(
        text.contains("no connection had a session to offer"),
        "{text}"
    );
    assert!(text.contains("waited the connect timeout"), "{text}");
    assert_eq!(server.lines_with("Reused session-id"), 0);
}

/// Client certificates against `s_server -Verify`: none, and the server's alert is counted
/// with its name; one from a CA it does not trust, the same; the right one, clean.
#[test]
fn client_certificates() {
    let pki = Pki::new("client-certs");
    let client_ca = pki.client_ca.to_str().unwrap();
    let server = SServer::start(
        &pki,
        &[
            "-tls1_3",
            "-Verify",
            "1",
            "-verify_return_error",
            "-CAfile",
            client_ca,
        ],
    );
    let ca = pki.ca.to_str().unwrap();
    let base = ["-m", "handshake", "-c", "1", "-d", "300ms", "--cacert", ca];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        bench_json(server.addr, &args)
    };

    let (code, r, text) = with(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(error(&r, "tls_alert") >= 1, "{text}");
    assert!(
        n(&r["tls"]["alerts_received"]["certificate_required"]) >= 1,
        "{text}"
    );
    assert!(text.contains("certificate_required"), "{text}");
    assert_eq!(error(&r, "io"), 0, "never folded into io: {text}");

    let (stranger, stranger_key) = (pki.stranger_cert.to_str(), pki.stranger_key.to_str());
    let (code, r, text) = with(&[
        "--tls-cert",
        stranger.unwrap(),
        "--tls-key",
        stranger_key.unwrap(),
    ]);
    assert_eq!(code, 1, "{text}");
    let alerts = r["tls"]["alerts_received"].as_object().unwrap();
    assert!(alerts.contains_key("unknown_ca"), "{text}");

    let (code, r, text) = with(&[
        "--tls-cert",
        pki.client_cert.to_str().unwrap(),
        "--tls-key",
        pki.client_key.to_str().unwrap(),
    ]);
    assert_clean(code, &r, &text);
    assert!(n(&r["messages"]) >= 1, "{text}");
}

/// The server's certificate refused, by what is wrong with it: not from a trusted CA (the
/// system store does not hold the test CA), not for the name asked; `--insecure` takes it.
#[test]
fn refused_certificates_name_the_problem() {
    let pki = Pki::new("refused");
    let server = SServer::start(&pki, &[]);
    let base = ["-m", "handshake", "-c", "1", "-d", "200ms"];

    let (code, r, text) = bench_json(server.addr, &base);
    assert_eq!(code, 1, "{text}");
    assert!(error(&r, "tls_certificate") >= 1, "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert_eq!(n(&r["connections"]["failed"]), error(&r, "tls_certificate"));

    let mut wrong_name = base.to_vec();
    wrong_name.extend([
        "--cacert",
        pki.ca.to_str().unwrap(),
        "--tls-sni",
        "elsewhere.test",
    ]);
    let (code, r, text) = bench_json(server.addr, &wrong_name);
    assert_eq!(code, 1, "{text}");
    assert!(error(&r, "tls_certificate") >= 1, "{text}");
    assert!(text.contains("elsewhere.test"), "{text}");

    let mut insecure = base.to_vec();
    insecure.push("--insecure");
    let (code, r, text) = bench_json(server.addr, &insecure);
    assert_clean(code, &r, &text);
}

/// A server that refuses the version offered sends an alert: counted as `tls_alert`, with
/// its name (`protocol_version`), as a connection that never established.
#[test]
fn an_alert_is_counted_with_its_name() {
    let pki = Pki::new("alert");
    let server = SServer::start(&pki, &["-tls1_2"]);
    let ca = pki.ca.to_str().unwrap();
    let (code, r, text) = bench_json(
        server.addr,
        &[
            "-c",
            "1",
            "-d",
            "200ms",
            "--tls",
            "--cacert",
            ca,
            "--tls-version",
            "1.3",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert!(error(&r, "tls_alert") >= 1, "{text}");
    assert!(
        n(&r["tls"]["alerts_received"]["protocol_version"]) >= 1,
        "{text}"
    );
    assert!(n(&r["connections"]["failed"]) >= 1);
}

/// A server that accepts TCP and never answers the ClientHello: a TLS handshake timeout,
/// not a connect timeout.
#[test]
fn a_silent_server_is_a_handshake_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, r, text) = bench_json(
        silent.local_addr().unwrap(),
        &[
            "-c",
            "2",
            "-d",
            "200ms",
            "--tls",
            "--insecure",
            "--connect-timeout",
            "150ms",
        ],
    );
    assert_eq!(code, 1, "{text}");
    assert_eq!(error(&r, "tls_handshake_timeout"), 2, "{text}");
    assert_eq!(error(&r, "connect_timeout"), 0, "{text}");
}

/// Byte verification still holds over TLS: a TLS-terminating proxy that flips one bit of
/// the decrypted echo is caught at that byte; one that closes without `close_notify`
/// mid-reply is a truncation.
#[test]
fn a_flipped_byte_and_a_truncation_are_caught_through_tls() {
    let pki = Pki::new("corrupt");
    let echo = TestServer::echo();
    let ca = pki.ca.to_str().unwrap();
    let args = [
        "-c",
        "1",
        "-d",
        "300ms",
        "--tls",
        "--cacert",
        ca,
        "--tls-sni",
        "localhost",
    ];

    let clean = Proxy::start(&pki, echo.addr(), Fault::None);
    let (code, r, text) = bench_json(clean.addr, &args);
    assert_clean(code, &r, &text);

    let flip = Proxy::start(&pki, echo.addr(), Fault::Flip(1000));
    let (code, r, text) = bench_json(flip.addr, &args);
    assert_eq!(code, 1, "{text}");
    assert_eq!(error(&r, "mismatch"), 1, "{text}");
    // 64-byte messages: byte 1000 is byte 40 of message 15.
    assert!(text.contains("message 15: byte 40"), "{text}");

    let cut = Proxy::start(&pki, echo.addr(), Fault::Truncate(1000));
    let (code, r, text) = bench_json(cut.addr, &args);
    assert_eq!(code, 1, "{text}");
    assert_eq!(error(&r, "tls_truncated"), 1, "{text}");
    assert!(text.contains("without close_notify"), "{text}");
}

/// nginx's stream `ssl`, which speaks first, with a session cache and tickets, TLS 1.3
/// and then 1.2 (tickets off: session ids): loopd-bench's full and resumed counts equal
/// nginx's own `$ssl_session_reused` log; `merge` of two runs keeps the TLS parts; the
/// `.hgrm` files and the picture carry each kind's handshake latency.
#[test]
fn resumption_matches_nginx_and_merges() {
    let pki = Pki::new("nginx");
    let cache = "ssl_session_cache shared:tls:1m; ssl_session_timeout 5m;";
    for (ssl, asked) in [
        (
            format!("ssl_protocols TLSv1.3; {cache} ssl_session_tickets on;"),
            "75",
        ),
        (
            format!("ssl_protocols TLSv1.2; {cache} ssl_session_tickets off;"),
            "100",
        ),
    ] {
        let nginx = Nginx::start(&pki, &ssl, None);
        let ca = pki.ca.to_str().unwrap();
        let dir = &pki.dir;
        let json = |k: usize| dir.join(format!("run{k}.json"));
        let mut totals = (0, 0);
        for k in 0..2 {
            let path = json(k);
            let (code, r, text) = bench_json(
                nginx.addr,
                &[
                    "-m",
                    "handshake",
                    "-c",
                    "4",
                    "-d",
                    "500ms",
                    "--cacert",
                    ca,
                    "--tls-sni",
                    "localhost",
                    "--tls-resume",
                    asked,
                ],
            );
            assert_clean(code, &r, &text);
            std::fs::write(&path, r.to_string()).unwrap();
            let (full, resumed) = all_handshakes(&r);
            assert!(resumed > 0, "{text}");
            totals = (totals.0 + full, totals.1 + resumed);
        }
        common::wait_until("nginx to log every session", || {
            (nginx.sessions().0 + nginx.sessions().1 >= totals.0 + totals.1).then_some(())
        });
        assert_eq!(nginx.sessions(), totals, "{ssl}");

        let merged = dir.join("merged.json");
        let hgrm = dir.join("merged.hgrm");
        let svg = dir.join("merged.svg");
        let out = bench(&[
            "merge",
            "--json",
            merged.to_str().unwrap(),
            "--hgrm",
            hgrm.to_str().unwrap(),
            "--report",
            svg.to_str().unwrap(),
            json(0).to_str().unwrap(),
            json(1).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", printed(&out));
        let m: Value = serde_json::from_slice(&std::fs::read(&merged).unwrap()).unwrap();
        assert_eq!(all_handshakes(&m), totals);
        assert!(n(&m["tls"]["handshake_latency"]["resumed"]["count"]) > 0);
        assert!(m["rates"]["handshakes_per_sec"].as_f64().unwrap() > 0.0);
        assert!(dir.join("merged.tls-resumed.hgrm").exists());
        assert!(dir.join("merged.tls-full.hgrm").exists());
        let picture = std::fs::read_to_string(&svg).unwrap();
        assert!(picture.contains("TLS handshake, resumed"));
    }
}

/// `compare` takes TLS targets: two nginx servers side by side in handshake mode, the table
/// in handshakes per second.
#[test]
fn compare_with_tls_targets() {
    let pki = Pki::new("compare");
    let a = Nginx::start(&pki, "ssl_protocols TLSv1.3;", None);
    let b = Nginx::start(&pki, "ssl_protocols TLSv1.2;", None);
    let out = bench(&[
        "compare",
        &format!("tls13={}", a.addr),
        &format!("tls12={}", b.addr),
        "-m",
        "handshake",
        "-c",
        "2",
        "-d",
        "300ms",
        "--warmup",
        "0s",
        "--iterations",
        "2",
        "--cacert",
        pki.ca.to_str().unwrap(),
        "--tls-sni",
        "localhost",
    ]);
    let text = printed(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("| tls13 | 2 |") && text.contains("| tls12 | 2 |"),
        "{text}"
    );
}

/// Against TLS loopd (two loops sharing the session keys): `-m handshake --tls-resume 50`,
/// TLS 1.3 then 1.2, and loopd-bench's counts of full and resumed handshakes equal loopd's
/// own (`loopd_tls_handshakes_completed_total`, summed over the loops); an echo run over
/// TLS verifies every byte, and a line run reads what the session settled.
#[test]
fn resumption_matches_loopds_own_metrics() {
    let pki = Pki::new("loopd");
    let loopd = common::daemon::Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0,tls",
        "-l",
        "line=127.0.0.1:0,tls",
        "--tls-cert",
        pki.chain.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--threads",
        "2",
    ]);
    let (echo, line, admin) = (
        loopd.addr_of("echo"),
        loopd.addr_of("line"),
        loopd.addr_of("admin"),
    );
    let ca = pki.ca.to_str().unwrap();
    let counted = |version: &str, kind: &str| -> u64 {
        let text = common::http_get(admin, "/metrics").body;
        (0..2)
            .map(|i| {
                let s = format!(
                    "loopd_tls_handshakes_completed_total{{service=\"echo\",listener=\"{echo}\",\
                     loop=\"{i}\",version=\"{version}\",handshake=\"{kind}\"}}"
                );
                common::metric(&text, &s).unwrap_or_else(|| panic!("no {s} in\n{text}")) as u64
            })
            .sum()
    };
    for (version, name) in [("1.3", "TLSv1.3"), ("1.2", "TLSv1.2")] {
        let (code, r, text) = bench_json(
            echo,
            &[
                "-m",
                "handshake",
                "-c",
                "4",
                "-d",
                "500ms",
                "--cacert",
                ca,
                "--tls-sni",
                "localhost",
                "--tls-version",
                version,
                "--tls-resume",
                "50",
            ],
        );
        assert_clean(code, &r, &text);
        let (full, resumed) = all_handshakes(&r);
        assert!(resumed > 0 && full > 0, "{text}");
        common::wait_until("loopd to count every handshake", || {
            (counted(name, "full") + counted(name, "resumed") >= full + resumed).then_some(())
        });
        assert_eq!(
            (counted(name, "full"), counted(name, "resumed")),
            (full, resumed),
            "{name}: {text}"
        );
    }
    let tls = ["--tls", "--cacert", ca, "--tls-sni", "localhost"];
    let mut args = vec!["-m", "echo", "-c", "4", "-d", "500ms", "-s", "16KiB"];
    args.extend_from_slice(&tls);
    let (code, r, text) = bench_json(echo, &args);
    assert_clean(code, &r, &text);
    assert!(n(&r["messages"]) > 0, "{text}");
    let mut args = vec!["-m", "echo", "--protocol", "line", "-c", "2", "-d", "300ms"];
    args.extend_from_slice(&tls);
    let (code, r, text) = bench_json(line, &args);
    assert_clean(code, &r, &text);
    assert_eq!(r["tls"]["negotiated"][0]["version"], "TLSv1.3", "{text}");
}
