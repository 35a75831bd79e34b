//! The TLS transport without sockets: a [`TlsStream`] over the scripted stream of
//! [`crate::fake`], talking to an in-memory rustls server that the test moves bytes to and
//! from. Every byte the client writes lands in the script; every byte the server writes is
//! handed to the client as one scripted read, so "several records in one read" and "the
//! socket refuses" are exact.

use std::io::{ErrorKind as IoKind, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::*;
use crate::config::TlsSettings;
use crate::errors::TlsError;
use crate::fake::{FakeDial, FakeStream, Shared, Sockets, Step};
use crate::flow::stream::{read_some, ReadEnd};

/// A CA, and a leaf certificate for `localhost` and 127.0.0.1 that it signed.
struct Pki {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
    ca: rcgen::Certificate,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            key: key.serialize_der(),
            ca,
        }
    }

    /// The CA as a file a client can be told to trust.
    fn ca_file(&self) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "loopd-bench-tls-ca-{}-{:?}.pem",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    fn server(&self, tickets: bool, client_auth: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut config = builder
            .with_single_cert(vec![self.leaf.clone()], key)
            .unwrap();
        if tickets {
            config.ticketer = aws_lc_rs::Ticketer::new().unwrap();
        } else {
            config.send_tls13_tickets = 0;
        }
        Arc::new(config)
    }
}

const TARGET: &str = "127.0.0.1:443";

/// A client trusting `pki`'s CA, resuming `pct` percent.
fn client(pki: &Pki, pct: f64) -> TlsClient {
    let settings = TlsSettings {
        server_name: Some("localhost".into()),
        trust: Trust::CaFile(pki.ca_file()),
        resume_pct: pct,
        ..TlsSettings::default()
    };
    TlsClient::new(&settings, TARGET.parse().unwrap()).unwrap()
}

/// A client session over a scripted socket, and the server at the other end.
struct Link {
    client: TlsStream<FakeStream>,
    script: Shared,
    server: ServerConnection,
}

impl Link {
    fn open(
        dial: &mut TlsDial<FakeDial<FakeStream>>,
        sockets: &Sockets,
        server: &Arc<ServerConfig>,
    ) -> Link {
        let target: SocketAddr = TARGET.parse().unwrap();
        let client = dial.dial(target, None).unwrap();
        Link {
            client,
            script: sockets.get(sockets.len() - 1),
            server: ServerConnection::new(server.clone()).unwrap(),
        }
    }

    /// What the client wrote reaches the server, which processes it.
    fn deliver_to_server(&mut self) -> Result<(), rustls::Error> {
        let bytes = std::mem::take(&mut self.script.borrow_mut().written);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            self.server.read_tls(&mut rest).unwrap();
            self.server.process_new_packets()?;
        }
        Ok(())
    }

    /// What the server has to say reaches the client's socket, as one read.
    fn deliver_to_client(&mut self) {
        let mut out = Vec::new();
        while self.server.wants_write() {
            self.server.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            self.script.borrow_mut().reads.push_back(Step::Data(out));
        }
    }

    /// TCP connects, the ClientHello goes out, the server answers, the client finishes, the
    /// server takes its Finished and sends its tickets; the client reads them.
    fn establish(&mut self) {
        assert!(matches!(self.client.handshake(), Handshake::Connected));
        self.deliver_to_server().unwrap();
        self.deliver_to_client();
        let done = self.client.handshake();
        assert!(matches!(done, Handshake::Done), "{done:?}");
        self.deliver_to_server().unwrap();
        self.deliver_to_client();
        let mut buf = [0; 64];
        let read = self.client.read(&mut buf);
        assert_eq!(read.unwrap_err().kind(), IoKind::WouldBlock);
    }
}

fn rig(pki: &Pki, pct: f64) -> (TlsDial<FakeDial<FakeStream>>, Sockets) {
    let (fake, sockets) = FakeDial::streams();
    (client(pki, pct).dial(fake), sockets)
}

fn tls_error(e: &io::Error) -> TlsError {
    TlsError::of(e)
        .unwrap_or_else(|| panic!("not a TLS failure: {e}"))
        .clone()
}

/// TCP's completion is reported apart (`Connected`, with the ClientHello sent), then the TLS
/// handshake completes; the session is full, TLS 1.3, and its ticket — which comes after the
/// handshake — is counted once read.
#[test]
fn the_handshake_comes_after_tcp_and_the_ticket_after_it() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    let (mut dial, sockets) = rig(&pki, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    assert!(matches!(link.client.handshake(), Handshake::Connected));
    assert!(!link.script.borrow().written.is_empty(), "the ClientHello");
    assert!(link.client.session().is_none());
    link.deliver_to_server().unwrap();
    link.deliver_to_client();
    assert!(matches!(link.client.handshake(), Handshake::Done));
    let s = link.client.session().unwrap();
    assert_eq!(s.kind, HandshakeKind::Full);
    assert!(!s.offered);
    assert_eq!(s.negotiated.version, "TLSv1.3");
    assert!(
        s.ticket_pending,
        "no ticket yet: TLS 1.3 sends it after the handshake"
    );
    link.deliver_to_server().unwrap();
    link.deliver_to_client();
    let mut buf = [0; 16];
    assert_eq!(
        link.client.read(&mut buf).unwrap_err().kind(),
        IoKind::WouldBlock
    );
    let s = link.client.session().unwrap();
    assert!(s.tickets >= 1 && !s.ticket_pending, "{s:?}");
}

/// Several records arrive in one socket read: after the socket is drained, rustls still holds
/// plaintext, and the stream says so until it is all read — a reading pass gets every byte
/// and ends drained with nothing held. (Without `buffered`, the pass stopped at the first
/// short read with most of the bytes left in rustls and no edge to come.)
#[test]
fn records_held_after_the_socket_is_drained_are_all_read() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    let (mut dial, sockets) = rig(&pki, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    link.establish();
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    link.server.writer().write_all(&data).unwrap();
    link.deliver_to_client();
    assert_eq!(link.script.borrow().reads.len(), 1, "all in one read");

    // One read of 1000 bytes: short of what is there, and more is held.
    let mut small = [0; 1000];
    assert_eq!(link.client.read(&mut small).unwrap(), 1000);
    assert!(link.client.buffered());
    let mut got = small.to_vec();
    let mut scratch = vec![0; 4096];
    let end = read_some(&mut link.client, &mut scratch, 1 << 20, false, |d| {
        got.extend_from_slice(d);
        true
    });
    assert!(matches!(end, ReadEnd::Drained), "{end:?}");
    assert_eq!(got, data);
    assert!(!link.client.buffered());
    assert!(link.script.borrow().reads.is_empty());
}

/// Output of the layer's own (the client's Finished) that the socket refuses is owed, not
/// lost: `owes_output` says so, and a flush once the socket has room sends it, with nothing
/// written by the flow.
#[test]
fn own_output_the_socket_refuses_is_owed_and_flushed_later() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    let (mut dial, sockets) = rig(&pki, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    assert!(matches!(link.client.handshake(), Handshake::Connected));
    link.deliver_to_server().unwrap();
    link.deliver_to_client();
    link.script.borrow_mut().window = 0;
    assert!(matches!(link.client.handshake(), Handshake::Done));
    assert!(
        link.client.owes_output(),
        "the Finished waits for the socket"
    );
    assert_eq!(link.client.flush().unwrap_err().kind(), IoKind::WouldBlock);
    link.script.borrow_mut().window = 1 << 20;
    link.client.flush().unwrap();
    assert!(!link.client.owes_output());
    link.deliver_to_server().unwrap();
    assert!(!link.server.is_handshaking(), "the server got the Finished");
}

/// Closing queues `close_notify` and writes it: the server sees a clean close.
#[test]
fn close_says_close_notify() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    let (mut dial, sockets) = rig(&pki, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    link.establish();
    link.client.close();
    assert!(!link.client.owes_output());
    link.deliver_to_server().unwrap();
    let state = link.server.process_new_packets().unwrap();
    assert!(state.peer_has_closed());
    assert_eq!(
        link.client.write(b"late").unwrap_err().kind(),
        IoKind::BrokenPipe
    );
}

/// The server's `close_notify` reads as the end; a FIN without it is a truncation, a failure
/// of its own kind.
#[test]
fn a_fin_without_close_notify_is_a_truncation() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    let (mut dial, sockets) = rig(&pki, 0.0);

    let mut clean = Link::open(&mut dial, &sockets, &server);
    clean.establish();
    clean.server.send_close_notify();
    clean.deliver_to_client();
    clean.script.borrow_mut().reads.push_back(Step::Eof);
    let mut buf = [0; 64];
    assert_eq!(clean.client.read(&mut buf).unwrap(), 0);

    let mut cut = Link::open(&mut dial, &sockets, &server);
    cut.establish();
    cut.server.writer().write_all(b"partial").unwrap();
    cut.deliver_to_client();
    cut.script.borrow_mut().reads.push_back(Step::Eof);
    assert_eq!(cut.client.read(&mut buf).unwrap(), 7, "the data first");
    let e = cut.client.read(&mut buf).unwrap_err();
    assert_eq!(tls_error(&e).kind, ErrorKind::TlsTruncated);
    assert_eq!(ErrorKind::of_established(&e), ErrorKind::TlsTruncated);
}

/// A certificate from a CA the client does not trust is refused, and the failure names the
/// problem and the remedy.
#[test]
fn an_untrusted_certificate_is_refused_by_name() {
    let (trusted, other) = (Pki::new("trusted"), Pki::new("other"));
    let server = other.server(true, false);
    let (mut dial, sockets) = rig(&trusted, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    assert!(matches!(link.client.handshake(), Handshake::Connected));
    link.deliver_to_server().unwrap();
    link.deliver_to_client();
    let Handshake::Failed(e) = link.client.handshake() else {
        panic!("accepted a certificate from an unknown CA");
    };
    let failure = tls_error(&e);
    assert_eq!(failure.kind, ErrorKind::TlsCertificate);
    assert!(failure.what.contains("UnknownIssuer"), "{}", failure.what);
    assert!(failure.what.contains("--cacert"), "{}", failure.what);
    // The client told the server why.
    let told = link.deliver_to_server().unwrap_err();
    assert!(matches!(told, rustls::Error::AlertReceived(_)), "{told:?}");
}

/// A server that requires a client certificate refuses a client without one with an alert
/// (in TLS 1.3, after the client thinks the handshake done): a failure of kind `tls_alert`
/// with the alert's RFC name.
#[test]
fn a_refusal_is_an_alert_with_its_name() {
    let pki = Pki::new("ca");
    let server = pki.server(true, true);
    let (mut dial, sockets) = rig(&pki, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    assert!(matches!(link.client.handshake(), Handshake::Connected));
    link.deliver_to_server().unwrap();
    link.deliver_to_client();
    assert!(matches!(link.client.handshake(), Handshake::Done));
    assert!(link.deliver_to_server().is_err(), "the server refuses");
    link.deliver_to_client();
    let mut buf = [0; 16];
    let e = link.client.read(&mut buf).unwrap_err();
    let failure = tls_error(&e);
    assert_eq!(failure.kind, ErrorKind::TlsAlert);
    assert_eq!(failure.alert.as_deref(), Some("certificate_required"));
    assert!(failure.what.contains("--tls-cert"), "{}", failure.what);
}

/// The share of resumed handshakes is exactly the share asked for, connection by
/// connection: 0% never offers a session, 100% always does once one is held (the first
/// cannot), 50% every other connection; and the server accepts every offer.
#[test]
fn resumption_follows_the_schedule_exactly() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    for (pct, expected) in [
        (0.0, "FFFFFFFF"),
        (100.0, "FRRRRRRR"),
        (50.0, "FRFRFRFR"),
        (25.0, "FFFRFFFR"),
    ] {
        let (mut dial, sockets) = rig(&pki, pct);
        let kinds: String = (0..8)
            .map(|_| {
                let mut link = Link::open(&mut dial, &sockets, &server);
                link.establish();
                let s = link.client.session().unwrap();
                assert_eq!(s.offered, s.kind == HandshakeKind::Resumed);
                link.client.close();
                match s.kind {
                    HandshakeKind::Full => 'F',
                    HandshakeKind::Resumed => 'R',
                }
            })
            .collect();
        assert_eq!(kinds, expected, "--tls-resume {pct}");
    }
}

/// A server that gives no ticket leaves nothing to resume: the connections that were to
/// resume offer nothing, and say so.
#[test]
fn no_ticket_nothing_offered() {
    let pki = Pki::new("ca");
    let server = pki.server(false, false);
    let (mut dial, sockets) = rig(&pki, 100.0);
    for _ in 0..3 {
        let mut link = Link::open(&mut dial, &sockets, &server);
        link.establish();
        let s = link.client.session().unwrap();
        assert_eq!(
            (s.kind, s.offered, s.tickets),
            (HandshakeKind::Full, false, 0)
        );
        assert!(s.ticket_pending);
    }
}

/// A server that stops reading cannot make the layer queue without bound: writes take
/// plaintext while rustls's queue has room, then say `WouldBlock`.
#[test]
fn a_server_that_never_reads_stays_bounded() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    let (mut dial, sockets) = rig(&pki, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    link.establish();
    link.script.borrow_mut().window = 0;
    let chunk = vec![7u8; 16 * 1024];
    let mut taken = 0;
    let mut blocked = false;
    for _ in 0..100 {
        match link.client.write_vectored(&[IoSlice::new(&chunk)]) {
            Ok(n) => taken += n,
            Err(e) if e.kind() == IoKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(blocked, "took {taken} bytes without pushing back");
    assert!(taken <= OUTPUT_LIMIT + chunk.len(), "{taken}");
    assert!(link.client.owes_output());
}

/// Alert names are the RFCs' snake_case.
#[test]
fn alert_names() {
    assert_eq!(
        alert_name(AlertDescription::HandshakeFailure),
        "handshake_failure"
    );
    assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
    assert_eq!(
        alert_name(AlertDescription::UnknownPSKIdentity),
        "unknown_psk_identity"
    );
    assert_eq!(
        alert_name(AlertDescription::CertificateRequired),
        "certificate_required"
    );
}

/// The schedule gives exactly the share asked for over any whole number of hundreds.
#[test]
fn the_schedule_is_exact() {
    for pct in [0.0, 1.0, 12.5, 33.0, 99.0, 100.0] {
        let mut s = ResumeSchedule::new(pct);
        let resumed = (0..10_000).filter(|_| s.next_resumes()).count();
        assert_eq!(resumed as f64, pct * 100.0, "{pct}%");
    }
}

/// A write larger than rustls's queue, to a socket with room for all of it, is taken whole:
/// a short count must mean the socket is full, since the flow then waits for a writable
/// edge. (Returning when only rustls's queue was full stalled every TLS upload: the socket,
/// having taken everything, raised no edge.)
#[test]
fn a_short_write_means_the_socket_is_full() {
    let pki = Pki::new("ca");
    let server = pki.server(true, false);
    let (mut dial, sockets) = rig(&pki, 0.0);
    let mut link = Link::open(&mut dial, &sockets, &server);
    link.establish();
    let data = vec![5u8; 4 * OUTPUT_LIMIT];
    let halves = [
        IoSlice::new(&data[..OUTPUT_LIMIT]),
        IoSlice::new(&data[OUTPUT_LIMIT..]),
    ];
    assert_eq!(link.client.write_vectored(&halves).unwrap(), data.len());
    assert!(!link.client.owes_output());

    // A socket with room for half: the count is short, and the rest is owed to the edge.
    link.script.borrow_mut().window = OUTPUT_LIMIT;
    let taken = link.client.write_vectored(&halves).unwrap();
    assert!(taken < data.len(), "{taken}");
    assert_eq!(
        link.script.borrow().window,
        0,
        "only when the socket is full"
    );
}
