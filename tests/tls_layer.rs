//! The TLS layer without sockets: a `TlsStream` over a scripted in-memory transport, paired
//! with a rustls client. Every test drives both ends by hand, so partial reads and writes,
//! `WouldBlock`, a peer that never reads and a FIN without `close_notify` are exact and
//! repeatable. Certificates are generated with rcgen at test time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use loopd::tls::certs::{CertError, CertSource, CertStore, Fingerprint};
use loopd::tls::layer::{
    HandshakeOutcome, NotTls, PeerClose, TlsStream, Transport, DEFAULT_OUTPUT_LIMIT,
};
use loopd::tls::settings::{self, ClientAuth, SettingsError, TlsSettings};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, SignatureScheme,
};

// ---------------------------------------------------------------------------------------------
// The scripted transport.

/// What the server's socket would hold: bytes from the client not yet read, bytes the server
/// wrote not yet taken by the client, and how much more the kernel will accept.
#[derive(Default)]
struct Wire {
    to_server: VecDeque<u8>,
    client_fin: bool,
    to_client: Vec<u8>,
    /// Bytes the send buffer still accepts; `None`: unlimited.
    send_room: Option<usize>,
    /// Largest single read and write (partial I/O); `None`: as much as asked.
    read_chunk: Option<usize>,
    write_chunk: Option<usize>,
    /// Where in `to_client` (counting bytes already taken) our FIN was sent.
    fin_at: Option<usize>,
    taken_by_client: usize,
    reads: usize,
}

#[derive(Clone, Default)]
struct FakeSocket(Rc<RefCell<Wire>>);

impl Read for FakeSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        w.reads += 1;
        if w.to_server.is_empty() {
            return if w.client_fin {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf
            .len()
            .min(w.to_server.len())
            .min(w.read_chunk.unwrap_or(usize::MAX));
        for (dst, src) in buf.iter_mut().zip(w.to_server.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for FakeSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        assert!(w.fin_at.is_none(), "write after FIN");
        let room = w.send_room.unwrap_or(usize::MAX);
        let n = buf.len().min(room).min(w.write_chunk.unwrap_or(usize::MAX));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        w.to_client.extend_from_slice(&buf[..n]);
        if let Some(room) = &mut w.send_room {
            *room -= n;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for FakeSocket {
    fn shutdown_write(&mut self) -> io::Result<()> {
        let mut w = self.0.borrow_mut();
        assert!(w.fin_at.is_none(), "FIN sent twice");
        w.fin_at = Some(w.taken_by_client + w.to_client.len());
        Ok(())
    }
}

/// A server layer and a rustls client joined by a `Wire`.
struct Pair {
    server: TlsStream<FakeSocket>,
    client: ClientConnection,
    wire: Rc<RefCell<Wire>>,
}

impl Pair {
    fn new(server_config: Arc<ServerConfig>, client_config: Arc<ClientConfig>, sni: &str) -> Pair {
        let socket = FakeSocket::default();
        let wire = Rc::clone(&socket.0);
        let server = TlsStream::new(server_config, socket, DEFAULT_OUTPUT_LIMIT).unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let client = ClientConnection::new(client_config, name).unwrap();
        Pair {
            server,
            client,
            wire,
        }
    }

    /// Moves everything the client wants to send onto the wire.
    fn client_sends(&mut self) {
        let mut out = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut out).unwrap();
        }
        self.wire.borrow_mut().to_server.extend(out);
    }

    /// Lets the client take what the server wrote, and process it.
    fn client_receives(&mut self) -> Result<(), rustls::Error> {
        let bytes = {
            let mut w = self.wire.borrow_mut();
            let bytes = std::mem::take(&mut w.to_client);
            w.taken_by_client += bytes.len();
            if let Some(room) = &mut w.send_room {
                *room += bytes.len();
            }
            bytes
        };
        let mut rd = &bytes[..];
        while !rd.is_empty() {
            self.client.read_tls(&mut rd).unwrap();
            self.client.process_new_packets()?;
        }
        Ok(())
    }

    /// Server reads until `WouldBlock`, `0` or an error; returns the plaintext and how it
    /// ended.
    fn server_drains(&mut self) -> (Vec<u8>, io::Result<usize>) {
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        for _ in 0..10_000 {
            match self.server.read(&mut buf) {
                Ok(0) => return (got, Ok(0)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Err(e)),
            }
        }
        panic!("server read never blocked");
    }

    /// Runs the handshake to completion, bounded.
    fn handshake(&mut self) {
        self.try_handshake().expect("handshake");
    }

    fn try_handshake(&mut self) -> Result<(), String> {
        for _ in 0..20 {
            self.client_sends();
            let (data, end) = self.server_drains();
            assert!(data.is_empty(), "plaintext during the handshake");
            if let Err(e) = &end {
                if e.kind() != io::ErrorKind::WouldBlock {
                    let _ = self.client_receives();
                    return Err(format!("server: {e}"));
                }
            }
            let _ = self.server.flush();
            self.client_receives().map_err(|e| format!("client: {e}"))?;
            if !self.server.is_handshaking() && !self.client.is_handshaking() {
                // Let the client take the tickets that follow the handshake.
                let _ = self.server.flush();
                self.client_receives().map_err(|e| format!("client: {e}"))?;
                return Ok(());
            }
        }
        Err("handshake did not finish".into())
    }

    /// The client's plaintext, as far as received.
    fn client_plaintext(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match self.client.reader().read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return got,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates and configurations.

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("loopd-tls-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA that issues leaf certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names` (the first also as CN), as PEM chain (leaf, CA) and PEM key.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem() + &self.cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(settings::provider())
}

/// Writes a leaf for each name set and returns the sources, in order.
fn sources(dir: &TempDir, ca: &Ca, sets: &[&[&str]]) -> Vec<CertSource> {
    sets.iter()
        .enumerate()
        .map(|(i, names)| {
            let (chain, key) = ca.issue(names);
            CertSource::Files {
                cert: dir.write(&format!("cert{i}.pem"), &chain),
                key: dir.write(&format!("key{i}.pem"), &key),
            }
        })
        .collect()
}

fn store(sources: Vec<CertSource>, strict: bool) -> Arc<CertStore> {
    Arc::new(CertStore::load(sources, strict, provider()).unwrap())
}

fn server_config(store: &Arc<CertStore>, settings: &TlsSettings) -> Arc<ServerConfig> {
    settings::server_config(settings, Arc::clone(store)).unwrap()
}

fn client_builder(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
}

fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    Arc::new(
        client_builder(versions)
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    )
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// A client that accepts any certificate and remembers the one it was shown: for tests of
/// which certificate the server chose, whatever the name.
#[derive(Debug)]
struct AcceptAny(std::sync::Mutex<Option<CertificateDer<'static>>>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn accept_any() -> (Arc<AcceptAny>, Arc<ClientConfig>) {
    let verifier = Arc::new(AcceptAny(std::sync::Mutex::new(None)));
    let config = client_builder(TLS13)
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    (verifier, Arc::new(config))
}

fn shown(verifier: &AcceptAny) -> Fingerprint {
    Fingerprint::of(
        verifier
            .0
            .lock()
            .unwrap()
            .as_ref()
            .expect("a certificate was shown"),
    )
}

fn fingerprint_of_file(path: &Path) -> Fingerprint {
    let chain = loopd::tls::certs::load_certificates(path).unwrap();
    Fingerprint::of(&chain[0])
}

fn cert_path(source: &CertSource) -> &Path {
    match source {
        CertSource::Files { cert, .. } => cert,
        CertSource::SelfSigned { .. } => unreachable!(),
    }
}

/// One CA, one certificate for `a.test`, default settings.
fn simple() -> (TempDir, Ca, Arc<CertStore>) {
    let dir = TempDir::new("simple");
    let ca = Ca::new("Test CA");
    let store = store(sources(&dir, &ca, &[&["a.test"]]), false);
    (dir, ca, store)
}

fn established(versions: &[&'static rustls::SupportedProtocolVersion]) -> (TempDir, Pair) {
    let (dir, ca, store) = simple();
    let mut pair = Pair::new(
        server_config(&store, &TlsSettings::default()),
        client_config(&ca, versions),
        "a.test",
    );
    pair.handshake();
    (dir, pair)
}

// ---------------------------------------------------------------------------------------------
// Handshake and readiness.

/// A handshake completes when every read and write moves a few bytes at a time, and data
/// flows both ways afterwards.
#[test]
fn handshake_over_partial_io() {
    let (_dir, ca, store) = simple();
    let mut pair = Pair::new(
        server_config(&store, &TlsSettings::default()),
        client_config(&ca, TLS13),
        "a.test",
    );
    {
        let mut w = pair.wire.borrow_mut();
        w.read_chunk = Some(7);
        w.write_chunk = Some(5);
    }
    pair.handshake();
    assert_eq!(
        pair.server.take_handshake_event(),
        Some(HandshakeOutcome::Ok)
    );
    pair.client.writer().write_all(b"ping").unwrap();
    pair.client_sends();
    assert_eq!(pair.server_drains().0, b"ping");
    pair.server.write_all(b"pong").unwrap();
    pair.client_receives().unwrap();
    assert_eq!(pair.client_plaintext(), b"pong");
}

/// The handshake's outcome is reported exactly once.
#[test]
fn handshake_event_once() {
    let (_dir, mut pair) = established(TLS13);
    assert!(!pair.server.is_handshaking());
    assert_eq!(
        pair.server.take_handshake_event(),
        Some(HandshakeOutcome::Ok)
    );
    assert_eq!(pair.server.take_handshake_event(), None);
}

/// After the socket is drained, rustls still holds plaintext: the layer says so, a full
/// read hands it out without touching the socket, and only the last read comes up short.
#[test]
fn buffered_plaintext_after_the_socket_is_drained() {
    let (_dir, mut pair) = established(TLS13);
    for record in [&b"first record "[..], b"second record ", b"third"] {
        pair.client.writer().write_all(record).unwrap();
        pair.client_sends(); // one record each
    }
    let mut buf = [0; 5];
    assert_eq!(pair.server.read(&mut buf).unwrap(), 5, "a full read");
    assert!(
        pair.wire.borrow().to_server.is_empty(),
        "the socket is drained"
    );
    assert!(pair.server.has_plaintext(), "but the layer holds plaintext");
    let reads_before = pair.wire.borrow().reads;
    let mut got = buf.to_vec();
    loop {
        let n = pair.server.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            break;
        }
    }
    assert_eq!(got, b"first record second record third");
    assert!(!pair.server.has_plaintext());
    // Only the last read, which found rustls empty, went to the socket (and saw WouldBlock).
    assert!(pair.wire.borrow().reads - reads_before <= 1);
    assert_eq!(
        pair.server.read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
}

/// The promise the connection's drain rule rests on: a read that comes back short leaves
/// nothing behind — neither in the socket nor in rustls — so no edge can be lost.
#[test]
fn a_short_read_means_drained() {
    let (_dir, mut pair) = established(TLS13);
    let payload: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 249) as u8).collect();
    pair.client.set_buffer_limit(None);
    pair.client.writer().write_all(&payload).unwrap();
    pair.client_sends();
    let mut got = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let mut short_reads = 0;
    while got.len() < payload.len() {
        let n = pair.server.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            short_reads += 1;
            assert!(
                pair.wire.borrow().to_server.is_empty(),
                "short read, socket not drained"
            );
            assert!(!pair.server.has_plaintext(), "short read, plaintext left");
        }
    }
    assert_eq!(short_reads, 1, "only the last read is short");
    assert!(got == payload);
}

/// Several records that arrived in one socket read are delivered by one large read.
#[test]
fn several_records_fill_one_read() {
    let (_dir, mut pair) = established(TLS13);
    for record in [&b"one "[..], b"two ", b"three"] {
        pair.client.writer().write_all(record).unwrap();
        pair.client_sends();
    }
    let mut buf = [0; 1024];
    assert_eq!(pair.server.read(&mut buf).unwrap(), 13);
    assert_eq!(&buf[..13], b"one two three");
}

/// A full-size record delivered a few hundred bytes at a time yields nothing (WouldBlock,
/// never a false EOF) until its last piece, then all of it.
#[test]
fn a_large_record_in_pieces() {
    let (_dir, mut pair) = established(TLS13);
    let payload: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    pair.client.writer().write_all(&payload).unwrap();
    let mut ciphertext = Vec::new();
    while pair.client.wants_write() {
        pair.client.write_tls(&mut ciphertext).unwrap();
    }
    assert!(ciphertext.len() > 16384);
    let mut got = Vec::new();
    let mut buf = vec![0; 65536];
    for piece in ciphertext.chunks(700) {
        pair.wire.borrow_mut().to_server.extend(piece);
        match pair.server.read(&mut buf) {
            Ok(0) => panic!("false EOF"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
    }
    assert_eq!(got, payload);
}

/// During the handshake the layer has output of its own: with the socket full, the server's
/// flight waits in the layer and `pending_output` says so, though no service wrote a byte;
/// a flush on the writable edge sends it.
#[test]
fn handshake_output_pending_without_the_service() {
    let (_dir, ca, store) = simple();
    let mut pair = Pair::new(
        server_config(&store, &TlsSettings::default()),
        client_config(&ca, TLS13),
        "a.test",
    );
    pair.wire.borrow_mut().send_room = Some(0);
    pair.client_sends();
    let (data, end) = pair.server_drains();
    assert!(data.is_empty());
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let pending = pair.server.pending_output();
    assert!(
        pending > 100,
        "ServerHello and certificate queued: {pending}"
    );
    assert_eq!(
        pair.server.flush().unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    pair.wire.borrow_mut().send_room = None; // the writable edge
    pair.server.flush().unwrap();
    assert_eq!(pair.server.pending_output(), 0);
    assert_eq!(pair.wire.borrow().to_client.len(), pending);
    pair.handshake();
}

/// Session tickets after the handshake are output the service never wrote.
#[test]
fn tickets_are_output_of_the_layer() {
    let (_dir, ca, store) = simple();
    let mut pair = Pair::new(
        server_config(&store, &TlsSettings::default()),
        client_config(&ca, TLS13),
        "a.test",
    );
    pair.client_sends(); // ClientHello
    let _ = pair.server_drains();
    pair.client_receives().unwrap(); // ServerHello … Finished
    pair.client_sends(); // the client's Finished
    assert!(pair.wire.borrow().to_client.is_empty());
    let _ = pair.server_drains();
    assert!(!pair.server.is_handshaking());
    // The server answered the Finished with tickets, by itself.
    assert!(!pair.wire.borrow().to_client.is_empty());
    assert_eq!(pair.client.tls13_tickets_received(), 0);
    pair.client_receives().unwrap();
    assert_eq!(pair.client.tls13_tickets_received(), 2);
}

/// A peer that never reads cannot grow the layer past its limit: writes stop with
/// `WouldBlock`, and what is queued stays within the limit plus record overhead.
#[test]
fn a_peer_that_never_reads_stays_bounded() {
    let (_dir, mut pair) = established(TLS13);
    pair.wire.borrow_mut().send_room = Some(8192); // then full, and nobody reads
    let chunk = vec![b'x'; 65536];
    let mut taken = 0;
    for _ in 0..100 {
        match pair.server.write(&chunk) {
            Ok(n) => taken += n,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                break;
            }
        }
    }
    let pending = pair.server.pending_output();
    assert!(taken <= DEFAULT_OUTPUT_LIMIT + 8192, "took {taken}");
    assert!(
        pending <= DEFAULT_OUTPUT_LIMIT + 1024,
        "queued {pending} over the limit"
    );
    assert!(pending > 0);
    assert_eq!(
        pair.server.write(&chunk).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
}

/// A write that finds rustls's queue full, and a socket with room for all of it, moves
/// plaintext: the queue is flushed and the write goes on. `WouldBlock` is for a socket that
/// said so — reported otherwise, no writable edge would ever come (the socket never filled),
/// and the connection would wait forever with its output queued.
#[test]
fn a_full_queue_and_an_empty_socket_is_not_would_block() {
    let (_dir, mut pair) = established(TLS13);
    pair.wire.borrow_mut().send_room = Some(0); // full for now
    let chunk = vec![b'y'; DEFAULT_OUTPUT_LIMIT];
    let first = pair.server.write(&chunk).unwrap();
    assert!(first > 0 && pair.server.pending_output() >= first);
    assert_eq!(
        pair.server.write(&chunk).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "queue full, socket full"
    );
    pair.wire.borrow_mut().send_room = None; // the peer read everything
    let n = pair
        .server
        .write(&chunk)
        .expect("room in the socket: not WouldBlock");
    assert!(n > 0);
}

/// Input under backpressure: with 200 KiB waiting and the server reading in small steps,
/// rustls never refuses ciphertext ("received plaintext buffer full") and every byte
/// arrives in order.
#[test]
fn slow_reader_never_overfills_rustls() {
    let (_dir, mut pair) = established(TLS13);
    let payload: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 253) as u8).collect();
    pair.client.set_buffer_limit(None);
    pair.client.writer().write_all(&payload).unwrap();
    pair.client_sends();
    let mut got = Vec::new();
    let mut buf = [0; 100];
    loop {
        match pair.server.read(&mut buf) {
            Ok(0) => panic!("false EOF"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                break;
            }
        }
    }
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
}

// ---------------------------------------------------------------------------------------------
// Closing.

/// Our `close_notify` leaves before our FIN: with the socket full, `shutdown_write` waits
/// (no FIN), and the flush on the writable edge sends the data, `close_notify`, then FIN.
#[test]
fn close_notify_before_fin() {
    let (_dir, mut pair) = established(TLS13);
    pair.wire.borrow_mut().send_room = Some(0);
    pair.server.write_all(b"last words").unwrap_or(());
    let err = pair.server.shutdown_write().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(
        pair.wire.borrow().fin_at.is_none(),
        "no FIN with records queued"
    );
    assert!(pair.server.pending_output() > 0);
    assert_eq!(
        pair.server.write(b"more").unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    pair.wire.borrow_mut().send_room = None;
    pair.server.flush().unwrap();
    assert_eq!(pair.server.pending_output(), 0);
    let total = {
        let w = pair.wire.borrow();
        w.taken_by_client + w.to_client.len()
    };
    assert_eq!(
        pair.wire.borrow().fin_at,
        Some(total),
        "FIN after every byte"
    );
    pair.client_receives().unwrap();
    assert_eq!(pair.client_plaintext(), b"last words");
    let mut buf = [0; 8];
    assert_eq!(
        pair.client.reader().read(&mut buf).unwrap(),
        0,
        "clean close"
    );
}

/// A FIN without `close_notify` reads as the end, and is told apart as a truncation.
#[test]
fn truncation_is_detected() {
    let (_dir, mut pair) = established(TLS13);
    pair.client.writer().write_all(b"partial").unwrap();
    pair.client_sends();
    pair.wire.borrow_mut().client_fin = true;
    let (data, end) = pair.server_drains();
    assert_eq!(data, b"partial");
    assert_eq!(end.unwrap(), 0);
    assert_eq!(pair.server.peer_close(), Some(PeerClose::Truncated));
}

/// TLS 1.3 half-close: after the peer's `close_notify` the server reads `0`, goes on
/// writing (echo delivers everything), and ends with its own `close_notify` and FIN.
#[test]
fn tls13_half_close() {
    let (_dir, mut pair) = established(TLS13);
    pair.client.writer().write_all(b"echo me").unwrap();
    pair.client.send_close_notify();
    pair.client_sends();
    let (data, end) = pair.server_drains();
    assert_eq!((data.as_slice(), end.unwrap()), (&b"echo me"[..], 0));
    assert_eq!(pair.server.peer_close(), Some(PeerClose::CloseNotify));
    pair.client_receives().unwrap();
    assert!(
        pair.client_plaintext().is_empty(),
        "no close_notify of ours yet"
    );
    pair.server.write_all(b"echo me").unwrap();
    pair.server.shutdown_write().unwrap();
    pair.client_receives().unwrap();
    assert_eq!(pair.client_plaintext(), b"echo me");
    assert!(pair.wire.borrow().fin_at.is_some());
    assert_eq!(pair.server.discarded(), 0);
}

/// TLS 1.2 (RFC 5246 §7.2.1): the peer's `close_notify` is answered at once with ours, and
/// what the service writes afterwards is discarded and counted.
#[test]
fn tls12_close_notify_is_answered() {
    let (_dir, mut pair) = established(TLS12);
    pair.client.writer().write_all(b"bye").unwrap();
    pair.client.send_close_notify();
    pair.client_sends();
    let (data, end) = pair.server_drains();
    assert_eq!((data.as_slice(), end.unwrap()), (&b"bye"[..], 0));
    pair.client_receives().unwrap();
    let mut buf = [0; 8];
    assert_eq!(
        pair.client.reader().read(&mut buf).unwrap(),
        0,
        "our close_notify arrived without shutdown_write"
    );
    assert_eq!(pair.server.write(b"late").unwrap(), 4);
    assert_eq!(pair.server.discarded(), 4);
    pair.server.shutdown_write().unwrap();
    assert!(pair.wire.borrow().fin_at.is_some());
}

// ---------------------------------------------------------------------------------------------
// Versions, resumption, groups, ALPN.

/// TLS 1.2 and 1.3 both complete, and the negotiated parameters say which.
#[test]
fn tls12_and_tls13() {
    let (_d1, p13) = established(TLS13);
    let n13 = p13.server.negotiated().unwrap();
    assert_eq!(n13.version, "TLSv1.3");
    assert!(n13.cipher_suite.starts_with("TLS13_"), "{n13}");
    assert_eq!(n13.sni.as_deref(), Some("a.test"));
    assert!(!n13.resumed);
    let (_d2, p12) = established(TLS12);
    let n12 = p12.server.negotiated().unwrap();
    assert_eq!(n12.version, "TLSv1.2");
    assert!(n12.cipher_suite.starts_with("TLS_ECDHE_"), "{n12}");
}

/// A second connection with the same client resumes, with a ticket (TLS 1.3 and 1.2) or
/// from the session cache (TLS 1.2 without tickets), and the layer reports it.
#[test]
fn resumption_is_observed() {
    let cases: [(&[&rustls::SupportedProtocolVersion], bool); 3] =
        [(TLS13, true), (TLS12, true), (TLS12, false)];
    for (versions, tickets) in cases {
        let (_dir, ca, store) = simple();
        let settings = TlsSettings {
            tickets,
            ..TlsSettings::default()
        };
        let server = server_config(&store, &settings);
        let client = client_config(&ca, versions);
        let mut first = Pair::new(Arc::clone(&server), Arc::clone(&client), "a.test");
        first.handshake();
        assert!(!first.server.negotiated().unwrap().resumed);
        let mut second = Pair::new(server, client, "a.test");
        second.handshake();
        let negotiated = second.server.negotiated().unwrap();
        assert!(
            negotiated.resumed,
            "{versions:?} tickets={tickets}: {negotiated}"
        );
    }
}

/// Key-exchange groups are chosen by name, and an unknown name is a clear error.
#[test]
fn groups_by_name() {
    let (_dir, ca, store) = simple();
    let settings = TlsSettings {
        groups: vec!["secp256r1".into()],
        ..TlsSettings::default()
    };
    let mut pair = Pair::new(
        server_config(&store, &settings),
        client_config(&ca, TLS13),
        "a.test",
    );
    pair.handshake();
    assert_eq!(pair.server.negotiated().unwrap().group, Some("secp256r1"));
    let (_d, default) = established(TLS13);
    assert_eq!(
        default.server.negotiated().unwrap().group,
        Some("X25519MLKEM768")
    );
    let bad = TlsSettings {
        groups: vec!["x448".into()],
        ..TlsSettings::default()
    };
    let err = settings::server_config(&bad, store).unwrap_err();
    assert!(matches!(err, SettingsError::UnknownGroup(ref g) if g == "x448"));
    assert!(
        err.to_string()
            .contains("X25519MLKEM768, X25519, secp256r1, secp384r1"),
        "{err}"
    );
}

/// ALPN picks the server's first protocol the client offers; a client offering none of
/// them is refused with an alert.
#[test]
fn alpn() {
    let (_dir, ca, store) = simple();
    let settings = TlsSettings {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..TlsSettings::default()
    };
    let server = server_config(&store, &settings);
    let mut client = (*client_config(&ca, TLS13)).clone();
    client.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    let mut pair = Pair::new(Arc::clone(&server), Arc::new(client.clone()), "a.test");
    pair.handshake();
    assert_eq!(
        pair.server.negotiated().unwrap().alpn.as_deref(),
        Some("h2")
    );
    client.alpn_protocols = vec![b"imap".to_vec()];
    let mut refused = Pair::new(server, Arc::new(client), "a.test");
    assert!(refused.try_handshake().is_err());
    assert!(matches!(
        refused.server.take_handshake_event(),
        Some(HandshakeOutcome::AlertSent(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Certificates: SNI, reload, errors.

/// SNI picks the certificate that covers the name; no SNI or an unknown name gets the
/// default (the first given).
#[test]
fn sni_selects_with_a_default() {
    let dir = TempDir::new("sni");
    let ca = Ca::new("Test CA");
    let srcs = sources(&dir, &ca, &[&["a.test"], &["b.test", "*.b.test"]]);
    let (a, b) = (
        fingerprint_of_file(cert_path(&srcs[0])),
        fingerprint_of_file(cert_path(&srcs[1])),
    );
    let config = server_config(&store(srcs, false), &TlsSettings::default());
    for (name, want) in [
        ("b.test", b),
        ("x.b.test", b),
        ("a.test", a),
        ("other.test", a),
        ("127.0.0.1", a),
    ] {
        let (seen, client) = accept_any();
        let mut pair = Pair::new(Arc::clone(&config), client, name);
        pair.handshake();
        assert_eq!(shown(&seen), want, "for {name}");
    }
}

/// Strict SNI refuses a name no certificate covers, and a ClientHello without SNI, with an
/// alert; known names still work.
#[test]
fn strict_sni_refuses_unknown_names() {
    let dir = TempDir::new("strict");
    let ca = Ca::new("Test CA");
    let config = server_config(
        &store(sources(&dir, &ca, &[&["a.test"]]), true),
        &TlsSettings::default(),
    );
    for name in ["other.test", "127.0.0.1"] {
        let (_, client) = accept_any();
        let mut pair = Pair::new(Arc::clone(&config), client, name);
        let err = pair.try_handshake().unwrap_err();
        assert!(err.contains("server"), "{err}");
        assert!(matches!(
            pair.server.take_handshake_event(),
            Some(HandshakeOutcome::AlertSent(_))
        ));
        assert!(
            pair.client.process_new_packets().is_err(),
            "the client got an alert"
        );
    }
    let (_, client) = accept_any();
    Pair::new(config, client, "a.test").handshake();
}

/// A reload serves new handshakes with the new certificate while an established session goes
/// on; the summaries change with it.
#[test]
fn reload_swaps_for_new_handshakes_only() {
    let dir = TempDir::new("reload");
    let ca = Ca::new("Test CA");
    let srcs = sources(&dir, &ca, &[&["a.test"]]);
    let store = store(srcs.clone(), false);
    let config = server_config(&store, &TlsSettings::default());
    let old = fingerprint_of_file(cert_path(&srcs[0]));
    let (seen_old, client) = accept_any();
    let mut before = Pair::new(Arc::clone(&config), client, "a.test");
    before.handshake();
    assert_eq!(shown(&seen_old), old);

    let (chain, key) = ca.issue(&["a.test"]);
    dir.write("cert0.pem", &chain);
    dir.write("key0.pem", &key);
    let summaries = store.reload().unwrap();
    let new = fingerprint_of_file(cert_path(&srcs[0]));
    assert_ne!(old, new);
    assert_eq!(summaries[0].fingerprint, new);

    let (seen_new, client) = accept_any();
    Pair::new(Arc::clone(&config), client, "a.test").handshake();
    assert_eq!(shown(&seen_new), new);
    // The session from before the reload still carries data both ways.
    before.client.writer().write_all(b"still here").unwrap();
    before.client_sends();
    assert_eq!(before.server_drains().0, b"still here");
    before.server.write_all(b"yes").unwrap();
    before.client_receives().unwrap();
    assert_eq!(before.client_plaintext(), b"yes");
}

/// A reload that fails (a key that does not match, a missing file) keeps the certificates in
/// force and says why.
#[test]
fn failed_reload_keeps_the_old() {
    let dir = TempDir::new("badreload");
    let ca = Ca::new("Test CA");
    let srcs = sources(&dir, &ca, &[&["a.test"]]);
    let store = store(srcs.clone(), false);
    let config = server_config(&store, &TlsSettings::default());
    let old = fingerprint_of_file(cert_path(&srcs[0]));

    let (chain, _) = ca.issue(&["a.test"]);
    dir.write("cert0.pem", &chain); // the key file still holds the old key
    let err = store.reload().unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(store.summaries()[0].fingerprint, old);

    std::fs::remove_file(dir.0.join("key0.pem")).unwrap();
    assert!(matches!(
        store.reload().unwrap_err(),
        CertError::Read { .. }
    ));

    let (seen, client) = accept_any();
    Pair::new(config, client, "a.test").handshake();
    assert_eq!(shown(&seen), old);
}

/// Every bad certificate or key is a distinct, clear error naming the file.
#[test]
fn certificate_errors() {
    let dir = TempDir::new("errors");
    let ca = Ca::new("Test CA");
    let (chain, key) = ca.issue(&["a.test"]);
    let (_, other_key) = ca.issue(&["a.test"]);
    let cert = dir.write("cert.pem", &chain);
    let key_path = dir.write("key.pem", &key);
    let load = |cert: &Path, key: &Path| {
        CertStore::load(
            vec![CertSource::Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }],
            false,
            provider(),
        )
        .unwrap_err()
    };
    let missing = dir.0.join("missing.pem");
    let e = load(&missing, &key_path);
    assert!(
        matches!(e, CertError::Read { .. }) && e.to_string().contains("missing.pem"),
        "{e}"
    );
    let e = load(&key_path, &key_path);
    assert!(matches!(e, CertError::NoCertificate { .. }), "{e}");
    let e = load(&cert, &cert);
    assert!(matches!(e, CertError::NoKey { .. }), "{e}");
    let encrypted = dir.write(
        "enc.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let e = load(&cert, &encrypted);
    assert!(matches!(e, CertError::EncryptedKey { .. }), "{e}");
    assert!(e.to_string().contains("encrypted"), "{e}");
    let legacy = dir.write(
        "legacy.pem",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    );
    assert!(matches!(
        load(&cert, &legacy),
        CertError::EncryptedKey { .. }
    ));
    let mismatched = dir.write("other.pem", &other_key);
    let e = load(&cert, &mismatched);
    assert!(matches!(e, CertError::KeyMismatch { .. }), "{e}");
    assert!(matches!(
        CertStore::load(vec![], false, provider()).unwrap_err(),
        CertError::Empty
    ));
}

/// A generated self-signed certificate serves at once; its logged fingerprint is the one
/// the client sees, and a reload keeps it.
#[test]
fn self_signed_quick_start() {
    let store = Arc::new(
        CertStore::load(
            vec![CertSource::SelfSigned {
                names: vec!["localhost".into()],
            }],
            false,
            provider(),
        )
        .unwrap(),
    );
    let summary = store.summaries().remove(0);
    assert_eq!(summary.subject.as_deref(), Some("CN=localhost"));
    assert_eq!(summary.fingerprint.to_string().len(), 32 * 3 - 1);
    let (seen, client) = accept_any();
    let mut pair = Pair::new(
        server_config(&store, &TlsSettings::default()),
        client,
        "localhost",
    );
    pair.handshake();
    assert_eq!(shown(&seen), summary.fingerprint);
    assert_eq!(store.reload().unwrap()[0].fingerprint, summary.fingerprint);
}

// ---------------------------------------------------------------------------------------------
// Client certificates and failed handshakes.

/// With client certificates required, a client without one is refused, and one with a
/// certificate from the CA is served and named by its subject; optional lets both in.
#[test]
fn client_certificates() {
    let dir = TempDir::new("mtls");
    let ca = Ca::new("Server CA");
    let client_ca = Ca::new("Client CA");
    let ca_file = dir.write("client-ca.pem", &client_ca.cert.pem());
    let store = store(sources(&dir, &ca, &[&["a.test"]]), false);
    let (chain, key) = client_ca.issue(&["client.test"]);
    let chain = dir.write("client.pem", &chain);
    let key = dir.write("client-key.pem", &key);
    let with_cert = Arc::new(
        client_builder(TLS13)
            .with_root_certificates(ca.roots())
            .with_client_auth_cert(
                loopd::tls::certs::load_certificates(&chain).unwrap(),
                loopd::tls::certs::load_private_key(&key).unwrap(),
            )
            .unwrap(),
    );
    let without = client_config(&ca, TLS13);

    let required = server_config(
        &store,
        &TlsSettings {
            client_auth: ClientAuth::Required {
                ca: ca_file.clone(),
            },
            ..TlsSettings::default()
        },
    );
    let mut ok = Pair::new(Arc::clone(&required), Arc::clone(&with_cert), "a.test");
    ok.handshake();
    let n = ok.server.negotiated().unwrap();
    assert_eq!(n.client_subject.as_deref(), Some("CN=client.test"));
    assert!(n.to_string().contains("client=CN=client.test"), "{n}");
    let mut refused = Pair::new(required, Arc::clone(&without), "a.test");
    let _ = refused.try_handshake();
    // TLS 1.3: the client thinks it is done before the server has judged its (missing)
    // certificate; the server's verdict is what counts.
    let mut buf = [0; 8];
    let _ = refused.server.read(&mut buf);
    assert!(matches!(
        refused.server.take_handshake_event(),
        Some(HandshakeOutcome::AlertSent(_))
    ));

    let optional = server_config(
        &store,
        &TlsSettings {
            client_auth: ClientAuth::Optional { ca: ca_file },
            ..TlsSettings::default()
        },
    );
    let mut anonymous = Pair::new(Arc::clone(&optional), without, "a.test");
    anonymous.handshake();
    assert_eq!(anonymous.server.negotiated().unwrap().client_subject, None);
    Pair::new(optional, with_cert, "a.test").handshake();
}

/// A client that does not trust our certificate refuses with an alert, which the layer
/// classifies as received.
#[test]
fn alert_received() {
    let (_dir, _ca, store) = simple();
    let stranger = Ca::new("Another CA");
    let mut pair = Pair::new(
        server_config(&store, &TlsSettings::default()),
        client_config(&stranger, TLS13),
        "a.test",
    );
    assert!(pair.try_handshake().is_err());
    pair.client_sends(); // the client's alert
    let (_, end) = pair.server_drains();
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert!(matches!(
        pair.server.take_handshake_event(),
        Some(HandshakeOutcome::AlertReceived(
            rustls::AlertDescription::UnknownCA
        ))
    ));
}

/// Bytes that are not TLS — a plaintext HTTP request, a PROXY header — fail the handshake
/// and are named for what they are; a peer that closes before a byte is just "closed".
#[test]
fn not_tls() {
    let (_dir, _ca, store) = simple();
    let config = server_config(&store, &TlsSettings::default());
    let cases: [(&[u8], HandshakeOutcome); 4] = [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            HandshakeOutcome::NotTls(NotTls::Http),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            HandshakeOutcome::NotTls(NotTls::ProxyHeader),
        ),
        (
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c",
            HandshakeOutcome::NotTls(NotTls::ProxyHeader),
        ),
        (
            b"\x01\x02\x03\x04\x05\x06",
            HandshakeOutcome::NotTls(NotTls::Other),
        ),
    ];
    for (bytes, want) in cases {
        let (_, client) = accept_any();
        let mut pair = Pair::new(Arc::clone(&config), client, "a.test");
        pair.wire.borrow_mut().to_server.extend(bytes);
        let (_, end) = pair.server_drains();
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(pair.server.take_handshake_event(), Some(want));
    }
    let (_, client) = accept_any();
    let mut pair = Pair::new(config, client, "a.test");
    pair.wire.borrow_mut().client_fin = true;
    assert_eq!(pair.server_drains().1.unwrap(), 0);
    assert_eq!(
        pair.server.take_handshake_event(),
        Some(HandshakeOutcome::Closed)
    );
}

/// A handshake that runs out of time is recorded as a timeout, once; a completed one is not.
#[test]
fn handshake_timeout_is_recorded() {
    let (_dir, _ca, store) = simple();
    let (_, client) = accept_any();
    let mut pair = Pair::new(
        server_config(&store, &TlsSettings::default()),
        client,
        "a.test",
    );
    assert!(pair.server.handshake_timed_out());
    assert_eq!(
        pair.server.take_handshake_event(),
        Some(HandshakeOutcome::Timeout)
    );
    let (_d, mut done) = established(TLS13);
    assert!(!done.server.handshake_timed_out());
    assert_eq!(
        done.server.take_handshake_event(),
        Some(HandshakeOutcome::Ok)
    );
}
