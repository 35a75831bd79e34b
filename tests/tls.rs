//! TLS on the loop, against real clients: the `loopd` daemon with `,tls` listeners, spoken to
//! by `openssl s_client` (TLS 1.2 and 1.3, ALPN, SNI, session resumption with `-sess_out` and
//! `-sess_in`, `close_notify` in each direction) and by a rustls client written here (10 MiB
//! byte-exact with half-close, a peer that never reads, a burst of handshakes beside an
//! established connection). Certificates are generated at run time; they are reloaded on
//! SIGHUP and when a rotated file is noticed, with connections open. (`required-features =
//! ["tls"]`: the client is rustls with the provider the server uses.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};

use common::daemon::Daemon;
use common::pki::Pki;
use common::*;

/// A rustls client session over a blocking TCP socket.
type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A client configuration trusting `pki`'s CA, for `versions`: the provider named
/// explicitly, as the build carries two (the handshake benchmark compares ring).
fn client_config(pki: &Pki, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn tls13(pki: &Pki) -> Arc<ClientConfig> {
    client_config(pki, &[&rustls::version::TLS13])
}

/// Connects and completes the handshake with `sni`.
fn tls_connect(addr: SocketAddr, sni: &str, config: &Arc<ClientConfig>) -> Tls {
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut s = StreamOwned::new(conn, connect(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("handshake");
    }
    s
}

/// The subject of the certificate the server presented (`CN=...`).
fn server_subject(s: &Tls) -> String {
    let der = &s.conn.peer_certificates().unwrap()[0];
    loopd::tls::x509::subject(der.as_ref()).unwrap()
}

/// Reads from a TLS stream until the server's `close_notify` (`Ok(0)`), returning what came;
/// a truncation (EOF without it) or any other error fails the test.
fn read_to_close_notify(s: &mut Tls) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("after {} bytes: {e} (no close_notify)", got.len()),
        }
    }
}

/// Sends our `close_notify`, then FIN.
fn close_notify_and_fin(s: &mut Tls) {
    s.conn.send_close_notify();
    s.flush().unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
}

/// One line of the `line` service over TLS: the request and its reply's line.
fn ask(s: &mut Tls, request: &str) -> String {
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0; 1];
    while !reply.ends_with(b"\r\n") {
        s.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap().trim_end().to_string()
}

/// `openssl s_client` to `addr` with `args`, `input` on its standard input (kept open until
/// the server closes: `-ign_eof`); everything it printed.
fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> String {
    let openssl = require("openssl", "openssl");
    let mut child = Command::new(openssl)
        .args(["s_client", "-connect", &addr.to_string(), "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of a sample on the daemon's admin endpoint.
fn sample(admin: SocketAddr, name_and_labels: &str) -> f64 {
    let text = http_get(admin, "/metrics").body;
    metric(&text, name_and_labels).unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
}

/// `loopd` serving `listen` with `pki`'s server certificate and an admin endpoint.
fn daemon(pki: &Pki, listen: &[&str], extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--tls-cert",
        Pki::path(&pki.chain),
        "--tls-key",
        Pki::path(&pki.key),
        "--admin",
        "127.0.0.1:0",
    ];
    for l in listen {
        args.extend(["-l", l]);
    }
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    d.addr();
    d
}

/// What `openssl s_client` sees of versions, ALPN and SNI, and what reached the service
/// (the `line` service's `TLS` command): TLS 1.3 and 1.2 each as asked, with loopd's choice
/// of cipher suite (AES-128-GCM, whatever OpenSSL prefers); the certificate
/// chosen by SNI; the default one for no name or an unknown one; the ALPN protocol chosen;
/// `close_notify` received from loopd and sent to it.
#[test]
fn s_client_versions_alpn_sni_and_close_notify() {
    let pki = Pki::new("s-client");
    let (a, a_key) = pki.issue(&["a.test"], "a");
    let (b, b_key) = pki.issue(&["b.test", "*.b.test"], "b");
    let d = Daemon::start(&[
        "-l",
        "line=127.0.0.1:0,tls",
        "--tls-cert",
        Pki::path(&a),
        "--tls-key",
        Pki::path(&a_key),
        "--tls-cert",
        Pki::path(&b),
        "--tls-key",
        Pki::path(&b_key),
        "--tls-alpn",
        "loopd,h2",
    ]);
    let addr = d.addr();
    let ca = Pki::path(&pki.ca);
    let out = s_client(
        addr,
        &[
            "-tls1_3",
            "-servername",
            "x.b.test",
            "-alpn",
            "h2",
            "-CAfile",
            ca,
            "-msg",
        ],
        "TLS\nQUIT\n",
    );
    assert!(out.contains("New, TLSv1.3"), "{out}");
    assert!(
        out.contains("subject=CN = b.test"),
        "the SNI certificate: {out}"
    );
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    // OpenSSL offers AES-256-GCM first; loopd chooses AES-128-GCM (SHA-256), its order.
    assert!(
        out.contains("version=TLSv1.3 cipher=TLS13_AES_128_GCM_SHA256 ")
            && out.contains(" alpn=h2 sni=x.b.test resumed=no client=-"),
        "{out}"
    );
    assert!(out.contains("BYE"), "{out}");
    assert!(
        out.contains("<<< TLS 1.3, Alert [length 0002], warning close_notify"),
        "loopd's close_notify: {out}"
    );

    let out = s_client(addr, &["-tls1_2", "-CAfile", ca], "TLS\nQUIT\n");
    assert!(out.contains("New, TLSv1.2"), "{out}");
    assert!(
        out.contains("subject=CN = a.test"),
        "no SNI: the default: {out}"
    );
    assert!(
        out.contains("version=TLSv1.2 cipher=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 ")
            && out.contains(" alpn=- sni=- resumed=no"),
        "{out}"
    );
    let out = s_client(addr, &["-servername", "unknown.test"], "TLS\nQUIT\n");
    assert!(
        out.contains("subject=CN = a.test"),
        "an unknown name: {out}"
    );
    assert!(out.contains(" sni=unknown.test "), "{out}");
}

/// Strict SNI refuses a client whose name no certificate covers, with an alert, counted.
#[test]
fn strict_sni_refuses_unknown_names() {
    let pki = Pki::new("strict");
    let d = daemon(&pki, &["line=127.0.0.1:0,tls"], &["--tls-strict-sni", "on"]);
    let (addr, admin) = (d.addr_of("line"), d.addr_of("admin"));
    let ok = s_client(addr, &["-servername", "localhost"], "TLS\nQUIT\n");
    assert!(ok.contains(" sni=localhost "), "{ok}");
    let refused = s_client(addr, &["-servername", "other.test"], "TLS\nQUIT\n");
    assert!(!refused.contains("version="), "{refused}");
    assert!(refused.contains("alert"), "{refused}");
    let labels = format!("service=\"line\",listener=\"{addr}\"");
    let sent = format!("loopd_tls_handshakes_total{{{labels},outcome=\"alert_sent\"}}");
    wait_until("the refusal counted", || {
        (sample(admin, &sent) == 1.0).then_some(())
    });
}

/// Resumption as `openssl s_client` does it (`-sess_out`, then `-sess_in`), TLS 1.3 (a
/// ticket) and TLS 1.2 (a ticket as well, rustls's default): the second connection is
/// reused, the service is told so, and loopd's metrics count one full and one resumed
/// handshake of each version — the session keys are shared by every loop.
#[test]
fn resumption_with_sess_out_and_sess_in() {
    let pki = Pki::new("resume");
    let d = daemon(&pki, &["line=127.0.0.1:0,tls"], &["--threads", "2"]);
    let (addr, admin) = (d.addr_of("line"), d.addr_of("admin"));
    let ca = Pki::path(&pki.ca);
    for (version, flag) in [("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")] {
        let session = pki.dir.join(format!("session-{flag}"));
        let session = session.to_str().unwrap();
        let first = s_client(
            addr,
            &[flag, "-CAfile", ca, "-sess_out", session],
            "TLS\nQUIT\n",
        );
        assert!(first.contains(&format!("New, {version}")), "{first}");
        assert!(first.contains("resumed=no"), "{first}");
        let second = s_client(
            addr,
            &[flag, "-CAfile", ca, "-sess_in", session],
            "TLS\nQUIT\n",
        );
        assert!(second.contains(&format!("Reused, {version}")), "{second}");
        assert!(second.contains("resumed=yes"), "{second}");
        for kind in ["full", "resumed"] {
            let s = format!(
                "loopd_tls_handshakes_completed_total{{service=\"line\",listener=\"{addr}\",\
                 loop=\"0\",version=\"{version}\",handshake=\"{kind}\"}}"
            );
            let t = format!(
                "loopd_tls_handshakes_completed_total{{service=\"line\",listener=\"{addr}\",\
                 loop=\"1\",version=\"{version}\",handshake=\"{kind}\"}}"
            );
            assert_eq!(
                sample(admin, &s) + sample(admin, &t),
                1.0,
                "{kind} {version}"
            );
        }
    }
}

/// 10 MiB echoed byte-exact over TLS 1.3, then half-close in TLS terms: the client's
/// `close_notify` and FIN end its side, loopd echoes everything that came before them,
/// then sends its own `close_notify` before its FIN (RFC 8446: each direction closes on its
/// own). The peer's clean end is counted as such.
#[test]
fn ten_mib_echo_and_half_close_over_tls13() {
    let pki = Pki::new("ten-mib");
    let d = daemon(&pki, &["echo=127.0.0.1:0,tls"], &[]);
    let (addr, admin) = (d.addr_of("echo"), d.addr_of("admin"));
    let data = pattern(22, 10 << 20);
    let s = tls_connect(addr, "localhost", &tls13(&pki));
    let got = pump(s, &data);
    assert_eq!(got.len(), data.len(), "10 MiB back");
    assert!(got == data, "echoed bytes differ");
    let ends = format!(
        "loopd_tls_peer_ends_total{{service=\"echo\",listener=\"{addr}\",how=\"close_notify\"}}"
    );
    wait_until("the clean end counted", || {
        (sample(admin, &ends) == 1.0).then_some(())
    });
    let peer = format!(
        "loopd_connections_closed_total{{service=\"echo\",listener=\"{addr}\",reason=\"peer\"}}"
    );
    assert_eq!(sample(admin, &peer), 1.0);
}

/// TLS 1.2 closes as RFC 5246 says: the peer's `close_notify` is answered with ours at once
/// (echo has nothing pending: the client read its echo first), then FIN. A client that
/// leaves with a bare FIN is counted as a truncation, in the closes and in how peers ended.
#[test]
fn tls12_close_and_a_truncation() {
    let pki = Pki::new("tls12");
    let d = daemon(&pki, &["echo=127.0.0.1:0,tls"], &[]);
    let (addr, admin) = (d.addr_of("echo"), d.addr_of("admin"));
    let tls12 = client_config(&pki, &[&rustls::version::TLS12]);
    let mut s = tls_connect(addr, "localhost", &tls12);
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    s.write_all(b"hello 1.2").unwrap();
    let mut back = [0; 9];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello 1.2");
    close_notify_and_fin(&mut s);
    assert!(read_to_close_notify(&mut s).is_empty());

    let mut t = tls_connect(addr, "localhost", &tls13(&pki));
    t.write_all(b"x").unwrap();
    t.read_exact(&mut [0; 1]).unwrap();
    t.sock.shutdown(std::net::Shutdown::Write).unwrap(); // no close_notify
    assert!(
        read_to_close_notify(&mut t).is_empty(),
        "loopd still says goodbye"
    );

    let labels = format!("service=\"echo\",listener=\"{addr}\"");
    let closed = |reason: &str| {
        sample(
            admin,
            &format!("loopd_connections_closed_total{{{labels},reason=\"{reason}\"}}"),
        )
    };
    let ends = |how: &str| {
        sample(
            admin,
            &format!("loopd_tls_peer_ends_total{{{labels},how=\"{how}\"}}"),
        )
    };
    wait_until("both closes counted", || {
        (closed("peer") + closed("truncated") == 2.0).then_some(())
    });
    assert_eq!((closed("peer"), closed("truncated")), (1.0, 1.0));
    assert_eq!((ends("close_notify"), ends("truncated")), (1.0, 1.0));
}

/// A peer that sends without ever reading: loopd stops reading at the high watermark, and
/// what waits for it — loopd's output and rustls's queue of records together — stays within
/// the watermark; once the peer reads, every byte comes back.
#[test]
fn a_peer_that_never_reads_stays_within_the_bound() {
    let pki = Pki::new("never-reads");
    let high = 64 * 1024;
    let d = daemon(
        &pki,
        &["echo=127.0.0.1:0,tls"],
        &["--high-watermark", "64KiB", "--low-watermark", "16KiB"],
    );
    let (addr, admin) = (d.addr_of("echo"), d.addr_of("admin"));
    let labels = format!("service=\"echo\",listener=\"{addr}\"");
    let pauses = format!("loopd_backpressure_pauses_total{{{labels}}}");
    let data = pattern(9, 64 << 20);
    let mut c = Client::new(tls_connect(addr, "localhost", &tls13(&pki)));
    let mut sent = 0;
    // Send while the socket takes it; once nothing has moved for a while, the server has
    // either stopped reading (paused: done) or is only slow (go on).
    loop {
        let (n, blocked) = c.write(&data[sent..]);
        sent += n;
        assert!(
            sent < data.len(),
            "64 MiB taken by a server that should have paused"
        );
        if blocked
            && !c.wait(std::time::Duration::from_millis(200))
            && sample(admin, &pauses) >= 1.0
        {
            break;
        }
    }
    let peak = sample(
        admin,
        &format!("loopd_pending_output_peak_bytes{{{labels}}}"),
    );
    // Records add 22 bytes to each 16 KiB of plaintext: the bound holds in ciphertext too.
    assert!(
        peak > 0.0 && peak <= (high + 1024) as f64,
        "{peak} bytes waited, over the {high}-byte watermark"
    );
    let mut got = Vec::with_capacity(sent);
    while got.len() < sent {
        // Records rustls still holds for the socket go out as it takes them.
        c.flush();
        assert!(!c.read(&mut got), "loopd closed first");
        if got.len() < sent {
            assert!(c.wait(PATIENCE), "stalled at {} of {sent}", got.len());
        }
    }
    assert!(got == data[..sent], "echoed bytes differ");
    let peak_after = sample(
        admin,
        &format!("loopd_pending_output_peak_bytes{{{labels}}}"),
    );
    assert!(peak_after <= (high + 1024) as f64, "{peak_after}");
}

/// A burst of new TLS clients does not stall an established connection on the same loop:
/// 64 ClientHellos arrive, and once the loop is busy with them (the first ServerHello is
/// back) an echo message arrives on an established connection. The loop answers it before
/// most of the handshakes — it runs at most a handshake budget of them per turn, after the
/// events of established connections — and then every handshake completes. Arrival order is
/// read from one poll over every socket, which keeps the order the kernel readied them in.
/// (With `--tls-handshake-budget` set beyond the burst, the loop finishes every handshake
/// first and this test fails.)
#[test]
fn a_burst_of_handshakes_waits_behind_an_established_connection() {
    use mio::{Events, Interest, Poll, Token};
    const BURST: usize = 64;
    let pki = Pki::new("burst");
    let d = daemon(&pki, &["echo=127.0.0.1:0,tls"], &[]);
    let (addr, admin) = (d.addr_of("echo"), d.addr_of("admin"));
    let config = tls13(&pki);
    let labels = format!("service=\"echo\",listener=\"{addr}\"");
    let mut established = Client::new(tls_connect(addr, "localhost", &config));
    let mut poll = Poll::new().unwrap();
    let mut clients: Vec<(ClientConnection, mio::net::TcpStream)> = (0..BURST)
        .map(|i| {
            let tcp = connect(addr);
            tcp.set_nonblocking(true).unwrap();
            let mut tcp = mio::net::TcpStream::from_std(tcp);
            poll.registry()
                .register(&mut tcp, Token(i + 1), Interest::READABLE)
                .unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            (
                ClientConnection::new(Arc::clone(&config), name).unwrap(),
                tcp,
            )
        })
        .collect();
    established
        .poll
        .registry()
        .deregister(&mut established.sock)
        .unwrap();
    poll.registry()
        .register(&mut established.sock, Token(0), Interest::READABLE)
        .unwrap();
    // Every connection accepted and waiting, so all the hellos meet a loop that is ready.
    let active = format!("loopd_connections_active{{{labels}}}");
    wait_until("every connection accepted", || {
        (sample(admin, &active) == (BURST + 1) as f64).then_some(())
    });
    for (tls, tcp) in &mut clients {
        let mut hello = Vec::new();
        tls.write_tls(&mut hello).unwrap();
        tcp.write_all(&hello).unwrap();
    }

    let mut events = Events::with_capacity(BURST + 1);
    let mut answered_first = 0;
    let mut echoed = Vec::new();
    let mut done = [false; BURST];
    let mut answered = [false; BURST];
    let mut pinged = false;
    while done.iter().any(|d| !d) || echoed.len() < 4 {
        poll.poll(&mut events, Some(PATIENCE)).unwrap();
        assert!(!events.is_empty(), "stalled");
        for event in events.iter() {
            match event.token() {
                Token(0) => {
                    established.read(&mut echoed);
                }
                Token(i) => {
                    if !pinged {
                        // The loop is in the middle of the burst: now the established
                        // connection speaks.
                        assert!(established.write(b"ping") == (4, false));
                        pinged = true;
                    }
                    if echoed.len() < 4 && !answered[i - 1] {
                        answered[i - 1] = true;
                        answered_first += 1;
                    }
                    let (tls, tcp) = &mut clients[i - 1];
                    while tls.read_tls(tcp).is_ok_and(|n| n > 0) {
                        tls.process_new_packets().expect("handshake");
                    }
                    while tls.wants_write() {
                        tls.write_tls(tcp).unwrap();
                    }
                    done[i - 1] = !tls.is_handshaking();
                }
            }
        }
    }
    assert_eq!(echoed, b"ping");
    assert!(
        answered_first < BURST / 2,
        "{answered_first} of {BURST} handshakes were answered before the established \
         connection's echo"
    );
    let ok = format!("loopd_tls_handshakes_total{{{labels},outcome=\"ok\"}}");
    wait_until("every handshake completed", || {
        (sample(admin, &ok) == (BURST + 1) as f64).then_some(())
    });
}

/// A record that does not decrypt, after the handshake: the layer refuses it, the alert it
/// owes goes out, and the connection closes as `tls` — one connection, every other one
/// untouched.
#[test]
fn a_corrupt_record_after_the_handshake_closes_as_tls() {
    let pki = Pki::new("corrupt");
    let d = daemon(&pki, &["echo=127.0.0.1:0,tls"], &[]);
    let (addr, admin) = (d.addr_of("echo"), d.addr_of("admin"));
    let config = tls13(&pki);
    let mut bystander = tls_connect(addr, "localhost", &config);
    let mut s = tls_connect(addr, "localhost", &config);
    round_trip_tls(&mut s, b"fine so far");
    // An application-data record of 32 bytes that no key sealed.
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    forged.extend(pattern(5, 32));
    s.sock.write_all(&forged).unwrap();
    let mut rest = Vec::new();
    let _ = s.sock.read_to_end(&mut rest);
    assert!(!rest.is_empty(), "an alert before the close");
    let closed = format!(
        "loopd_connections_closed_total{{service=\"echo\",listener=\"{addr}\",reason=\"tls\"}}"
    );
    wait_until("the refused session counted", || {
        (sample(admin, &closed) == 1.0).then_some(())
    });
    d.wait_log("TLS: ");
    round_trip_tls(&mut bystander, b"untouched");
}

/// SIGHUP reloads the certificate files with connections open: new handshakes get the new
/// certificate, an established session goes on; a reload that fails (a broken key) keeps
/// the certificate in force and says why.
#[test]
fn sighup_reloads_certificates_with_connections_open() {
    let pki = Pki::new("sighup");
    let (cert, key) = pki.issue(&["old.test"], "served");
    let d = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0,tls",
        "--tls-cert",
        Pki::path(&cert),
        "--tls-key",
        Pki::path(&key),
        "--tls-cert-check",
        "0",
    ]);
    let addr = d.addr();
    let config = tls13(&pki);
    let mut before = tls_connect(addr, "old.test", &config);
    assert_eq!(server_subject(&before), "CN=old.test");
    round_trip_tls(&mut before, b"before");

    pki.issue(&["new.test"], "served");
    d.signal(libc::SIGHUP);
    d.wait_log("SIGHUP: TLS certificate reloaded (default)");
    let mut after = tls_connect(addr, "new.test", &config);
    assert_eq!(server_subject(&after), "CN=new.test");
    round_trip_tls(&mut after, b"after");
    round_trip_tls(&mut before, b"still the old session");

    std::fs::write(&key, "not a key").unwrap();
    d.signal(libc::SIGHUP);
    let line = d.wait_log("TLS certificates not reloaded");
    assert!(line.contains("served-key.pem"), "{line}");
    let third = tls_connect(addr, "new.test", &config);
    assert_eq!(server_subject(&third), "CN=new.test", "the old set stays");
    for mut s in [before, after, third] {
        close_notify_and_fin(&mut s);
        assert!(read_to_close_notify(&mut s).is_empty());
    }
}

/// A Kubernetes Secret rotated the way the kubelet does it — a new directory, and the
/// `..data` link swapped to it in one rename — is noticed without a signal, and served to
/// new handshakes while an established session goes on.
#[test]
fn a_rotated_secret_is_picked_up_without_a_signal() {
    use std::os::unix::fs::symlink;
    let pki = Pki::new("rotate");
    let secret = pki.dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let version = |name: &str, dir: &str| {
        let (cert, key) = pki.issue(&[name], name);
        let at = secret.join(dir);
        std::fs::create_dir_all(&at).unwrap();
        std::fs::rename(cert, at.join("tls.crt")).unwrap();
        std::fs::rename(key, at.join("tls.key")).unwrap();
    };
    version("old.test", "..2024_01");
    symlink("..2024_01", secret.join("..data")).unwrap();
    symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    symlink("..data/tls.key", secret.join("tls.key")).unwrap();
    let d = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0,tls",
        "--tls-cert",
        secret.join("tls.crt").to_str().unwrap(),
        "--tls-key",
        secret.join("tls.key").to_str().unwrap(),
        "--tls-cert-check",
        "100ms",
    ]);
    let addr = d.addr();
    let config = tls13(&pki);
    let mut before = tls_connect(addr, "old.test", &config);
    assert_eq!(server_subject(&before), "CN=old.test");

    version("new.test", "..2024_02");
    symlink("..2024_02", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    d.wait_log("a certificate file changed: TLS certificate reloaded");
    let after = tls_connect(addr, "new.test", &config);
    assert_eq!(server_subject(&after), "CN=new.test");
    round_trip_tls(&mut before, b"the old session goes on");
}

/// One round trip of `msg` over TLS.
fn round_trip_tls(s: &mut Tls, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// Client certificates through rustls's WebPKI verifier: required refuses a client without
/// one (an alert, counted) and one from a CA it does not trust, and tells the service the
/// subject of a good one; optional serves a client without one.
#[test]
fn client_certificates_required_and_optional() {
    let pki = Pki::new("client-certs");
    let ca = Pki::path(&pki.client_ca);
    let d = daemon(&pki, &["line=127.0.0.1:0,tls"], &["--tls-client-ca", ca]);
    let (line, admin) = (d.addr_of("line"), d.addr_of("admin"));
    let with = |cert: &Path, key: &Path| {
        s_client(
            line,
            &["-cert", Pki::path(cert), "-key", Pki::path(key)],
            "TLS\nQUIT\n",
        )
    };
    let good = with(&pki.client_cert, &pki.client_key);
    assert!(good.contains(" client=CN=client.test"), "{good}");
    let stranger = with(&pki.stranger_cert, &pki.stranger_key);
    assert!(!stranger.contains("version="), "{stranger}");
    let none = s_client(line, &[], "TLS\nQUIT\n");
    assert!(!none.contains("version="), "{none}");
    let sent = format!(
        "loopd_tls_handshakes_total{{service=\"line\",listener=\"{line}\",outcome=\"alert_sent\"}}"
    );
    wait_until("both refusals counted", || {
        (sample(admin, &sent) == 2.0).then_some(())
    });

    let optional = daemon(
        &pki,
        &["line=127.0.0.1:0,tls"],
        &["--tls-client-ca", ca, "--tls-client-auth", "optional"],
    );
    let none = s_client(optional.addr_of("line"), &[], "TLS\nQUIT\n");
    assert!(none.contains(" client=-"), "{none}");
}

/// What cannot work is refused at start-up, in one line that says why: `,tls` on a UDP
/// service or on the admin endpoint (status 2, like any bad flag), a `,tls` listener without
/// a certificate (2), an encrypted key and a key that is not the certificate's (1, like an
/// address that cannot be bound: the flags are right, the files are not).
#[test]
fn tls_misconfigurations_are_start_up_errors() {
    let pki = Pki::new("misconfigured");
    let exits = |args: &[&str], status: i32, says: &str| {
        let mut d = Daemon::start(args);
        assert_eq!(
            d.wait_exit().code(),
            Some(status),
            "{args:?}: {:?}",
            d.log()
        );
        d.wait_log(says);
    };
    exits(
        &["-l", "udp-echo=127.0.0.1:0,tls", "--tls-self-signed", "x"],
        2,
        "udp-echo is a UDP service; TLS is for TCP listeners",
    );
    exits(
        &["--admin", "127.0.0.1:0,tls"],
        2,
        "the admin endpoint takes no options",
    );
    exits(
        &["-l", "echo=127.0.0.1:0,tls"],
        2,
        "echo=127.0.0.1:0,tls needs a certificate",
    );
    let encrypted = pki.dir.join("encrypted.pem");
    let status = Command::new(require("openssl", "openssl"))
        .args(["pkcs8", "-topk8", "-passout", "pass:secret", "-in"])
        .arg(&pki.key)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .unwrap();
    assert!(status.success());
    let chain = Pki::path(&pki.chain);
    exits(
        &[
            "-l",
            "echo=127.0.0.1:0,tls",
            "--tls-cert",
            chain,
            "--tls-key",
            encrypted.to_str().unwrap(),
        ],
        1,
        "the private key is encrypted",
    );
    exits(
        &[
            "-l",
            "echo=127.0.0.1:0,tls",
            "--tls-cert",
            chain,
            "--tls-key",
            Pki::path(&pki.client_key),
        ],
        1,
        "does not match the certificate",
    );
}

/// A TLS listener exports the TLS families and its closes for TLS, and only it does; the
/// handshakes are counted by outcome (a plaintext client is `not_tls`); promtool accepts
/// the page.
#[test]
fn tls_metrics_on_tls_listeners_only() {
    let pki = Pki::new("metrics");
    let d = daemon(&pki, &["echo=127.0.0.1:0,tls", "line=127.0.0.1:0"], &[]);
    let (echo, line, admin) = (d.addr_of("echo"), d.addr_of("line"), d.addr_of("admin"));
    let mut s = tls_connect(echo, "localhost", &tls13(&pki));
    round_trip_tls(&mut s, b"counted");
    let mut plain = connect(echo);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_to_eof(&mut plain).len() < 64, "an alert at most");
    let mut plain_line = connect(line);
    assert_eq!(
        String::from_utf8_lossy(&{
            plain_line.write_all(b"TLS\n").unwrap();
            read_n(&mut plain_line, 33)
        }),
        "not TLS: a plaintext connection\r\n"
    );
    let labels = format!("service=\"echo\",listener=\"{echo}\"");
    let outcome = |o: &str| {
        sample(
            admin,
            &format!("loopd_tls_handshakes_total{{{labels},outcome=\"{o}\"}}"),
        )
    };
    wait_until("the plaintext client counted", || {
        (outcome("not_tls") == 1.0).then_some(())
    });
    assert_eq!(outcome("ok"), 1.0);
    let text = http_get(admin, "/metrics").body;
    promtool_accepts(&text);
    let all = series(&text);
    let tls_families = [
        "loopd_tls_handshakes_total",
        "loopd_tls_handshakes_completed_total",
        "loopd_tls_handshake_duration_seconds_bucket",
        "loopd_tls_handshake_duration_seconds_sum",
        "loopd_tls_handshake_duration_seconds_count",
        "loopd_tls_peer_ends_total",
    ];
    let echo_families = families_of(&all, "echo");
    let line_families = families_of(&all, "line");
    for f in tls_families {
        assert!(echo_families.contains(&f.to_string()), "echo lacks {f}");
        assert!(!line_families.contains(&f.to_string()), "line exports {f}");
    }
    let line_label = format!("service=\"line\",listener=\"{line}\"");
    for reason in ["handshake", "tls", "truncated"] {
        let plain_close = format!("{line_label},reason=\"{reason}\"");
        assert!(
            !all.iter().any(|(_, l)| *l == plain_close),
            "line has {reason}"
        );
        let tls_close = format!("{labels},reason=\"{reason}\"");
        assert!(
            all.iter().any(|(_, l)| *l == tls_close),
            "echo lacks {reason}"
        );
    }
    assert!(
        text.contains(&format!(
            "loopd_tls_handshake_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 1"
        )),
        "{text}"
    );
}

/// Under socket activation, a socket named `echo,proxy,tls` is served as `--listen` would
/// serve `echo=ADDR,proxy,tls`: a PROXY header, then TLS, then echo.
#[test]
fn socket_activation_with_proxy_and_tls() {
    let activate = require("systemd-socket-activate", "systemd");
    let pki = Pki::new("activated");
    let port = free_port();
    let d = Daemon::start_program(
        None,
        &activate,
        &[
            &format!("--listen=127.0.0.1:{port}"),
            "--fdname=echo,proxy,tls",
            common::daemon::loopd_binary().to_str().unwrap(),
            "--tls-cert",
            Pki::path(&pki.chain),
            "--tls-key",
            Pki::path(&pki.key),
        ],
        &[],
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut tcp = wait_until("the activated socket", || TcpStream::connect(addr).ok());
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 7007\r\n")
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(tls13(&pki), name).unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    round_trip_tls(&mut s, b"activated, proxied, encrypted");
    d.wait_log("socket activation: serving 1 socket(s)");
    d.wait_log(&format!("listening on echo=127.0.0.1:{port},proxy,tls"));
}

/// A rustls client session over a non-blocking socket with a poll of its own: one thread
/// drives both directions (a rustls session is not split between threads), and waits on
/// readiness, never on a timer.
struct Client {
    tls: ClientConnection,
    sock: mio::net::TcpStream,
    poll: mio::Poll,
    events: mio::Events,
}

impl Client {
    fn new(s: Tls) -> Client {
        let StreamOwned { conn: tls, sock } = s;
        sock.set_nonblocking(true).unwrap();
        let mut sock = mio::net::TcpStream::from_std(sock);
        let poll = mio::Poll::new().unwrap();
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        poll.registry()
            .register(&mut sock, mio::Token(0), interest)
            .unwrap();
        Client {
            tls,
            sock,
            poll,
            events: mio::Events::with_capacity(4),
        }
    }

    /// Encrypts what rustls takes of `data` and writes records until the socket blocks;
    /// returns the plaintext bytes taken and whether the socket blocked.
    fn write(&mut self, data: &[u8]) -> (usize, bool) {
        let mut taken = 0;
        loop {
            if taken < data.len() {
                taken += self.tls.writer().write(&data[taken..]).unwrap();
            }
            if !self.flush() {
                return (taken, true);
            }
            if taken == data.len() {
                return (taken, false);
            }
        }
    }

    /// Writes queued records; `false` if the socket blocked first.
    fn flush(&mut self) -> bool {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => panic!("write: {e}"),
            }
        }
        true
    }

    /// Reads and decrypts until the socket has nothing more, appending the plaintext to
    /// `got`. `true` once the server has ended its side: with `close_notify`, or else the
    /// test fails (a FIN alone is a truncation).
    fn read(&mut self, got: &mut Vec<u8>) -> bool {
        let mut buf = [0; 64 * 1024];
        loop {
            let eof = match self.tls.read_tls(&mut self.sock) {
                Ok(n) => n == 0,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => panic!("read after {} bytes: {e}", got.len()),
            };
            let state = self
                .tls
                .process_new_packets()
                .expect("the server's records");
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if state.peer_has_closed() {
                return true;
            }
            assert!(!eof, "FIN without close_notify after {} bytes", got.len());
        }
    }

    /// Waits for the socket to become ready (or `timeout`); whether it did.
    fn wait(&mut self, timeout: std::time::Duration) -> bool {
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        !self.events.is_empty()
    }

    /// Sends `close_notify`, then FIN once it has left.
    fn close(&mut self, got: &mut Vec<u8>) -> bool {
        self.tls.send_close_notify();
        while !self.flush() {
            if self.read(got) {
                return true;
            }
            assert!(self.wait(PATIENCE), "stalled sending close_notify");
        }
        self.sock.shutdown(std::net::Shutdown::Write).unwrap();
        false
    }
}

/// Writes `data` and reads what comes back, then our `close_notify` and FIN, then
/// everything until the server's `close_notify`, which must come before its FIN and after
/// ours (echo answers a half-close; it does not close first).
fn pump(s: Tls, data: &[u8]) -> Vec<u8> {
    let mut c = Client::new(s);
    let mut got = Vec::with_capacity(data.len());
    let mut sent = 0;
    while sent < data.len() {
        let (n, _) = c.write(&data[sent..]);
        sent += n;
        assert!(!c.read(&mut got), "loopd closed before we did");
        if sent < data.len() {
            assert!(c.wait(PATIENCE), "stalled: {sent} sent, {} back", got.len());
        }
    }
    let mut ended = c.close(&mut got);
    while !ended {
        ended = c.read(&mut got);
        if !ended {
            assert!(
                c.wait(PATIENCE),
                "stalled after close_notify: {} back",
                got.len()
            );
        }
    }
    got
}

/// Starts HAProxy with `listen` sections after the shared defaults; waits for `ports`.
fn haproxy_with(listen: &str, ports: &[u16]) -> (Daemon, Scratch) {
    let (proxy, dir) = haproxy_listening(&format!("{HAPROXY_DEFAULTS}{listen}"), ports);
    (proxy, dir)
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// HAProxy terminating TLS in front of plain loopd (`send-proxy`): 10 MiB echoed byte-exact
/// and the client's close carried through (a `close_notify` comes back after the last byte),
/// and `WHOAMI` names this client, not the proxy.
#[test]
fn haproxy_terminates_tls_in_front_of_plain_loopd() {
    let pki = Pki::new("ha-terminate");
    let d = Daemon::start(&[
        "-l",
        "echo=127.0.0.1:0,proxy",
        "-l",
        "line=127.0.0.1:0,proxy",
    ]);
    let (echo, line) = (d.addr_of("echo"), d.addr_of("line"));
    let (p_echo, p_line) = (free_port(), free_port());
    let crt = pki.combined.display();
    let (_proxy, _dir) = haproxy_with(
        &format!(
            "listen echo\n    bind 127.0.0.1:{p_echo} ssl crt {crt}\n    server loopd {echo} send-proxy\n\
             listen line\n    bind 127.0.0.1:{p_line} ssl crt {crt}\n    server loopd {line} send-proxy\n"
        ),
        &[p_echo, p_line],
    );
    let config = tls13(&pki);
    let data = pattern(31, 10 << 20);
    let got = pump(tls_connect(local(p_echo), "localhost", &config), &data);
    assert!(got == data, "10 MiB through HAProxy's TLS");
    let mut s = tls_connect(local(p_line), "localhost", &config);
    let me = s.sock.local_addr().unwrap().to_string();
    assert_eq!(ask(&mut s, "WHOAMI"), me);
    assert_eq!(
        ask(&mut s, "TLS"),
        "not TLS: a plaintext connection",
        "HAProxy decrypted"
    );
}

/// HAProxy passing TCP through with `send-proxy` to a `,proxy,tls` loopd: the PROXY header
/// first, then the client's own TLS, ended at loopd — which sees the client's SNI and its
/// address, and echoes 10 MiB with the half-close carried.
#[test]
fn haproxy_passes_tls_through_to_proxy_tls_loopd() {
    let pki = Pki::new("ha-passthrough");
    let d = daemon(
        &pki,
        &["echo=127.0.0.1:0,proxy,tls", "line=127.0.0.1:0,tls,proxy"],
        &[],
    );
    let (echo, line, admin) = (d.addr_of("echo"), d.addr_of("line"), d.addr_of("admin"));
    let (p_echo, p_line) = (free_port(), free_port());
    let (_proxy, _dir) = haproxy_with(
        &format!(
            "listen echo\n    bind 127.0.0.1:{p_echo}\n    server loopd {echo} send-proxy-v2\n\
             listen line\n    bind 127.0.0.1:{p_line}\n    server loopd {line} send-proxy\n"
        ),
        &[p_echo, p_line],
    );
    let config = tls13(&pki);
    let mut s = tls_connect(local(p_line), "localhost", &config);
    let me = s.sock.local_addr().unwrap().to_string();
    assert_eq!(ask(&mut s, "WHOAMI"), me, "the PROXY header, under TLS");
    let tls = ask(&mut s, "TLS");
    assert!(
        tls.starts_with("version=TLSv1.3 ") && tls.contains(" sni=localhost "),
        "{tls}"
    );
    let data = pattern(32, 10 << 20);
    let got = pump(tls_connect(local(p_echo), "localhost", &config), &data);
    assert!(got == data, "10 MiB passed through");
    let proxied = format!(
        "loopd_proxy_connections_total{{service=\"echo\",listener=\"{echo}\",outcome=\"proxied\"}}"
    );
    // The probe that waited for HAProxy to listen was passed through too.
    assert!(sample(admin, &proxied) >= 1.0);
}

/// HAProxy re-encrypting to a TLS loopd backend with `ssl verify required`: HAProxy checks
/// loopd's certificate against the CA and the name, and the backend session is what the
/// `TLS` command reports. A backend whose certificate HAProxy cannot verify gets HAProxy's
/// alert, which loopd counts as `alert_received`.
#[test]
fn haproxy_reencrypts_to_a_verified_tls_backend() {
    let pki = Pki::new("ha-reencrypt");
    let d = daemon(&pki, &["line=127.0.0.1:0,tls"], &[]);
    let (line, admin) = (d.addr_of("line"), d.addr_of("admin"));
    let (p_good, p_bad) = (free_port(), free_port());
    let crt = pki.combined.display();
    let ca = pki.ca.display();
    let wrong_ca = pki.client_ca.display();
    let (_proxy, _dir) = haproxy_with(
        &format!(
            "listen good\n    bind 127.0.0.1:{p_good} ssl crt {crt}\n    \
             server loopd {line} ssl verify required ca-file {ca} sni str(localhost)\n\
             listen bad\n    bind 127.0.0.1:{p_bad} ssl crt {crt}\n    \
             server loopd {line} ssl verify required ca-file {wrong_ca} sni str(localhost)\n"
        ),
        &[p_good, p_bad],
    );
    let config = tls13(&pki);
    let mut s = tls_connect(local(p_good), "localhost", &config);
    assert_eq!(ask(&mut s, "PING re-encrypted"), "PONG re-encrypted");
    let tls = ask(&mut s, "TLS");
    assert!(
        tls.starts_with("version=TLSv1.3 ") && tls.contains(" sni=localhost "),
        "{tls}"
    );

    let mut refused = tls_connect(local(p_bad), "localhost", &config);
    refused.write_all(b"PING\n").unwrap();
    let mut buf = [0; 64];
    assert!(
        !matches!(refused.read(&mut buf), Ok(n) if n > 0),
        "HAProxy refused the backend it could not verify"
    );
    let alert = format!(
        "loopd_tls_handshakes_total{{service=\"line\",listener=\"{line}\",outcome=\"alert_received\"}}"
    );
    wait_until("HAProxy's alert counted", || {
        (sample(admin, &alert) >= 1.0).then_some(())
    });
}

/// nginx's stream module routing by SNI (`ssl_preread`) to two TLS loopd backends, each
/// with a certificate of its own: the name decides which backend answers, and that backend
/// presents its certificate and sees the name.
#[test]
fn nginx_routes_by_sni_to_two_tls_backends() {
    let module = nginx_stream_module();
    let pki = Pki::new("nginx-sni");
    let backend = |name: &str| {
        let (cert, key) = pki.issue(&[name], name);
        let d = Daemon::start(&[
            "-l",
            "line=127.0.0.1:0,tls",
            "--tls-cert",
            Pki::path(&cert),
            "--tls-key",
            Pki::path(&key),
            "--server-id",
            name,
        ]);
        d.addr();
        d
    };
    let (a, b) = (backend("a.test"), backend("b.test"));
    let port = free_port();
    let scratch = Scratch::new("nginx-sni");
    let config = format!(
        "load_module {module};
daemon off;
worker_processes 1;
error_log stderr warn;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
stream {{
    map $ssl_preread_server_name $backend {{
        a.test {a};
        b.test {b};
    }}
    server {{
        listen 127.0.0.1:{port};
        ssl_preread on;
        proxy_pass $backend;
    }}
}}
",
        module = module.display(),
        dir = scratch.0.display(),
        a = a.addr(),
        b = b.addr(),
    );
    let proxy = Nginx::start(&scratch, &config);
    wait_until(&format!("nginx ({:?})", proxy.0.log()), || {
        TcpStream::connect(local(port)).ok()
    });
    let tls = tls13(&pki);
    for name in ["a.test", "b.test", "a.test"] {
        let mut s = tls_connect(local(port), name, &tls);
        assert_eq!(server_subject(&s), format!("CN={name}"));
        let server = ask(&mut s, "SERVER");
        assert!(server.starts_with(&format!("{name} ")), "{server}");
        assert!(ask(&mut s, "TLS").contains(&format!(" sni={name} ")));
    }
}

/// Faults act on the plaintext, after the handshake: a corrupted reply decrypts (the record
/// layer's integrity check passes) with exactly one byte of the plaintext flipped, and the
/// held first reply leaves after its delay; the session goes on.
#[test]
fn faults_act_on_the_plaintext() {
    let pki = Pki::new("faults");
    let d = daemon(
        &pki,
        &["echo=127.0.0.1:0,tls"],
        &[
            "--fault",
            "echo=corrupt;first-byte-delay:200ms",
            "--fault-seed",
            "3",
        ],
    );
    assert!(d.logged("faults: echo@"), "faults are logged at start-up");
    let mut s = tls_connect(d.addr_of("echo"), "localhost", &tls13(&pki));
    let data = pattern(1, 500);
    let t = std::time::Instant::now();
    s.write_all(&data).unwrap();
    let mut got = vec![0; 500];
    s.read_exact(&mut got).unwrap();
    let took = t.elapsed();
    let flipped: Vec<usize> = (0..500).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(flipped.len(), 1, "one plaintext byte");
    assert_eq!(got[flipped[0]], data[flipped[0]] ^ 0xFF);
    s.write_all(b"again").unwrap();
    let mut again = [0; 5];
    s.read_exact(&mut again).unwrap();
    assert_eq!(
        again.iter().zip(b"again").filter(|(a, b)| a != b).count(),
        1
    );
    // The hold counts from the loop's time for the turn that read the request, and a turn
    // that completed the handshake (slow in a debug build) read it too: up to that turn's
    // length early by the client's clock.
    let faults = http_get(d.addr_of("admin"), "/faults").body;
    assert!(
        took >= std::time::Duration::from_millis(180),
        "first reply after {took:?}: {faults}"
    );
}
