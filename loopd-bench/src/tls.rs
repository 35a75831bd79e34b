//! The TLS transport: a rustls client session over any [`Stream`] (TCP), itself a
//! [`Stream`] that reads and writes plaintext. The flow runs `Flow<Bytes<TlsStream<..>>>`
//! exactly as it runs `Flow<Bytes<TcpStream>>`; nothing in it knows about TLS.
//!
//! **Read this first.** Three things a TLS layer does that a socket does not, and how this
//! one keeps the client's readiness discipline (drain or remember, no lost wakeups, budgets)
//! where each would break it. The server's layer (loopd's `src/tls/layer.rs`) meets the
//! same three; the client differs where said.
//!
//! 1. **It holds bytes after the socket is drained.** One socket read can bring several
//!    records; rustls decrypts them all, and [`read`](Read::read) hands out what fits the
//!    caller's buffer. The socket may then say `WouldBlock` while rustls still holds
//!    plaintext — no edge will announce it. So a read from rustls that fills the buffer, or a
//!    socket read that filled what rustls offered, leaves [`buffered`](Layer::buffered)
//!    true, and the flow's reading pass goes on (or, out of budget, the flow goes on the run
//!    queue). A read comes back short *and* `buffered` is false only when rustls is empty and
//!    the socket's last read came back short or `WouldBlock`: then the next byte is a new
//!    edge. The server's layer instead makes every short read mean drained by reading the
//!    socket until its caller's buffer is full; the client's engine asks the stream instead,
//!    which saves that extra system call on every small reply.
//! 2. **It has output of its own.** The ClientHello (queued when the session is made, sent
//!    when TCP connects), the client's Finished, alerts, `close_notify`: all written eagerly,
//!    right after whatever produced them; what the socket does not take stays in rustls and
//!    [`owes_output`](Layer::owes_output) says so. The flow flushes it first on the writable
//!    edge, even with nothing to send, and keeps the connection until it has left. A write
//!    whose records the socket refused (`WouldBlock`) still reports the plaintext taken: the
//!    refusal guarantees the writable edge that flushes them.
//! 3. **Its handshake comes after TCP's.** [`handshake`](Stream::handshake) reports TCP's
//!    completion on its own ([`Handshake::Connected`]: the connect is timed to there, the TLS
//!    handshake from there), then reads and processes the server's flights until the session
//!    is established. It stops reading the moment it is: whatever the server sent behind its
//!    Finished (a greeting, a chargen stream) is left to the flow's budgeted reads, and
//!    rustls never holds more than one read's worth of plaintext (it refuses to read more
//!    past 16 KiB).
//!
//! Bounds: rustls's queue of outgoing records is capped ([`OUTPUT_LIMIT`]); a write takes
//! plaintext only while it has room, so a server that stops reading cannot grow it. Incoming,
//! the socket is read only when rustls holds no plaintext.
//!
//! # Sessions and resumption
//!
//! `--tls-resume PCT` makes exactly that share of new connections offer a session. Each
//! worker has a [`SessionPool`] (the tickets and TLS 1.2 sessions servers gave it) and two
//! client configurations over it that differ only in their [`ClientSessionStore`]: the full
//! one's store hands out nothing, the resuming one's hands out what the pool holds; both put
//! what the server sends into the pool. [`TlsDial`] picks the configuration per connection on
//! an exact schedule (connection *k* resumes when `⌊(k+1)·PCT/100⌋ > ⌊k·PCT/100⌋`), and knows
//! whether a session was actually offered (the pool counts what it hands out), since a pool can
//! be empty — say, for the first connections, opened before any handshake finished. Whether
//! the server accepted it is what rustls reports after the handshake; the report counts both.
//!
//! # Trust
//!
//! By default the server's certificate is checked against the system's trust store, read with
//! rustls-native-certs (`/etc/ssl/certs` through openssl-probe, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`): the store the machine's administrator keeps, with the site's own CA
//! already in it, and updated with the system. (webpki-roots compiles Mozilla's list into the
//! binary instead: it ages with the build and ignores a private CA, which is what a load test
//! of an internal service usually meets.) `--cacert FILE` trusts that file's CAs instead, as
//! curl's does; `--insecure` checks no certificate but still verifies the handshake's
//! signature, so a handshake costs the client what a checked one does, less the chain.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, DigitallySignedStruct, NamedGroup,
    RootCertStore, SignatureScheme,
};

use crate::config::{TlsSettings, TlsVersions, Trust};
use crate::errors::{ErrorKind, TlsError};
use crate::net::{interrupted, would_block};
use crate::record::tls::{HandshakeKind, Negotiated};
use crate::transport::{Dial, Handshake, Layer, Session, Stream};

/// Cap on rustls's queue of encrypted records waiting for the socket: four full records,
/// as the server's layer, which is what one large write of the flow produces at most
/// (its send budget is larger, but the writes stop when the queue is full and the socket
/// refuses, and go on at the writable edge).
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// TLS 1.3 tickets a worker keeps. Each is used once; servers send one or two per handshake,
/// so a pool this size never runs dry in a steady run, and a server that sends many cannot
/// grow it.
const MAX_TICKETS: usize = 64;

/// The TLS client of a run: the settings made into a rustls configuration once (trust store,
/// client certificate, versions, groups, ALPN), from which each worker makes its [`TlsDial`].
pub struct TlsClient {
    base: ClientConfig,
    server_name: ServerName<'static>,
    resume_pct: f64,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("resume_pct", &self.resume_pct)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Builds the client for `settings` against `target`; the error says which setting or
    /// file is wrong.
    pub fn new(settings: &TlsSettings, target: SocketAddr) -> Result<TlsClient, String> {
        let mut provider = aws_lc_rs::default_provider();
        if !settings.groups.is_empty() {
            provider.kx_groups = groups(&provider, &settings.groups)?;
        }
        let provider = Arc::new(provider);
        let versions: &[&rustls::SupportedProtocolVersion] = match settings.versions {
            TlsVersions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersions::Tls12 => &[&rustls::version::TLS12],
            TlsVersions::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("--tls-version {}: {e}", settings.versions))?;
        let builder = match &settings.trust {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider))),
            Trust::System => builder.with_root_certificates(system_roots()?),
            Trust::CaFile(path) => builder.with_root_certificates(file_roots(path)?),
        };
        let mut base = match &settings.client_cert {
            Some((cert, key)) => {
                let (chain, key) = client_cert(cert, key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        base.alpn_protocols = settings
            .alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let name = match &settings.server_name {
            Some(n) => n.clone(),
            None => target.ip().to_string(),
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| format!("--tls-sni '{name}' is not a DNS name or an IP address"))?;
        Ok(TlsClient {
            base,
            server_name,
            resume_pct: settings.resume_pct,
        })
    }

    /// A worker's dial: TLS over what `inner` opens, with its own session pool.
    pub fn dial<D>(&self, inner: D) -> TlsDial<D> {
        let pool = Arc::new(SessionPool::default());
        let with_store = |offer: bool| {
            let mut config = self.base.clone();
            let store = Arc::new(Store {
                pool: pool.clone(),
                offer,
            });
            config.resumption = Resumption::store(store);
            Arc::new(config)
        };
        TlsDial {
            inner,
            full: with_store(false),
            resume: with_store(true),
            pool,
            server_name: self.server_name.clone(),
            schedule: ResumeSchedule::new(self.resume_pct),
        }
    }
}

/// The provider's groups named in `names`, in that order.
fn groups(
    provider: &CryptoProvider,
    names: &[String],
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, String> {
    let name_of = |g: &&'static dyn rustls::crypto::SupportedKxGroup| {
        g.name().as_str().unwrap_or("unknown").to_string()
    };
    names
        .iter()
        .map(|n| {
            provider
                .kx_groups
                .iter()
                .find(|g| name_of(g).eq_ignore_ascii_case(n))
                .copied()
                .ok_or_else(|| {
                    let known: Vec<String> = provider.kx_groups.iter().map(name_of).collect();
                    format!(
                        "--tls-groups: unknown group '{n}' (known: {})",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

/// The system's trust store.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "the system's trust store has no certificate{}: give --cacert FILE, or --insecure",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        ));
    }
    Ok(roots)
}

/// The CA certificates of a PEM file.
fn file_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--cacert {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--cacert {shown}: {e}"))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("--cacert {shown}: no CA certificate in it"));
    }
    Ok(roots)
}

/// A client certificate chain and its key from PEM files.
fn client_cert(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    Ok((chain, key))
}

/// `--insecure`: any certificate is accepted; the handshake's signature is still verified
/// with the provider's algorithms.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which of the new connections resume: connection `k` (from 0) does when
/// `⌊(k+1)·pct⌋ > ⌊k·pct⌋`, in hundredths of a percent — exactly the share asked for over
/// any run of connections, spread evenly, with no random choice to repeat.
#[derive(Clone, Copy, Debug)]
pub struct ResumeSchedule {
    basis_points: u64,
    k: u64,
}

impl ResumeSchedule {
    /// The schedule for `pct` percent.
    pub fn new(pct: f64) -> ResumeSchedule {
        ResumeSchedule {
            basis_points: (pct.clamp(0.0, 100.0) * 100.0).round() as u64,
            k: 0,
        }
    }

    /// Whether the next connection resumes.
    pub fn next_resumes(&mut self) -> bool {
        let k = self.k;
        self.k += 1;
        (k + 1) * self.basis_points / 10_000 > k * self.basis_points / 10_000
    }
}

/// The sessions a worker holds for its one server: TLS 1.3 tickets (each used once), the
/// last TLS 1.2 session, and the group the server chose (so a ClientHello carries only that
/// key share, not a post-quantum one the server would not use). Counts what it hands out
/// and takes in, so a connection can tell whether it offered a session and how many tickets
/// it received.
#[derive(Debug, Default)]
pub struct SessionPool(Mutex<Pool>);

#[derive(Debug, Default)]
struct Pool {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: std::collections::VecDeque<Tls13ClientSessionValue>,
    handed_out: u64,
    taken_in: u64,
}

impl SessionPool {
    fn with<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> T {
        // A worker's own pool, so never contended; a panic elsewhere cannot leave it torn.
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sessions handed out to ClientHellos so far.
    fn handed_out(&self) -> u64 {
        self.with(|p| p.handed_out)
    }

    /// Tickets and sessions taken in from servers so far.
    fn taken_in(&self) -> u64 {
        self.with(|p| p.taken_in)
    }
}

/// The pool as one configuration's store: the full configuration's offers nothing.
#[derive(Debug)]
struct Store {
    pool: Arc<SessionPool>,
    offer: bool,
}

impl ClientSessionStore for Store {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        self.pool.with(|p| p.kx_hint = Some(group));
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.pool.with(|p| p.kx_hint)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.pool.with(|p| {
            p.tls12 = Some(value);
            p.taken_in += 1;
        });
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        if !self.offer {
            return None;
        }
        self.pool.with(|p| {
            let s = p.tls12.clone();
            p.handed_out += u64::from(s.is_some());
            s
        })
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        self.pool.with(|p| p.tls12 = None);
    }

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.pool.with(|p| {
            if p.tls13.len() == MAX_TICKETS {
                p.tls13.pop_front();
            }
            p.tls13.push_back(value);
            p.taken_in += 1;
        });
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        if !self.offer {
            return None;
        }
        self.pool.with(|p| {
            // The newest: the furthest from its expiry.
            let t = p.tls13.pop_back();
            p.handed_out += u64::from(t.is_some());
            t
        })
    }
}

/// Opens TLS connections over what `D` opens (TCP; a scripted stream in the tests).
pub struct TlsDial<D> {
    inner: D,
    full: Arc<ClientConfig>,
    resume: Arc<ClientConfig>,
    pool: Arc<SessionPool>,
    server_name: ServerName<'static>,
    schedule: ResumeSchedule,
}

impl<D> Dial for TlsDial<D>
where
    D: Dial,
    D::Transport: Stream,
{
    type Transport = TlsStream<D::Transport>;

    fn dial(&mut self, target: SocketAddr, source: Option<IpAddr>) -> io::Result<Self::Transport> {
        let io = self.inner.dial(target, source)?;
        let config = match self.schedule.next_resumes() {
            true => &self.resume,
            false => &self.full,
        };
        // The ClientHello is built (and its key shares made) here, asking the store.
        let before = self.pool.handed_out();
        let tls = ClientConnection::new(config.clone(), self.server_name.clone())
            .map_err(|e| io::Error::other(format!("TLS session: {e}")))?;
        let offered = self.pool.handed_out() > before;
        Ok(TlsStream::new(io, tls, self.pool.clone(), offered))
    }
}

/// How the socket answered one read.
enum SocketRead {
    /// Records (or part of one) read and processed.
    Data,
    /// `WouldBlock`.
    Blocked,
    /// The server's FIN.
    Eof,
}

/// A TLS client session over a stream, read and written as plaintext. See the
/// [module documentation](self).
pub struct TlsStream<S> {
    io: S,
    tls: ClientConnection,
    /// The stream below has connected (its `Handshake::Done` was seen).
    below_up: bool,
    pool: Arc<SessionPool>,
    /// This connection offered a session.
    offered: bool,
    /// Tickets (or a TLS 1.2 session) received on this connection.
    tickets: u32,
    /// What the handshake settled, once done.
    negotiated: Option<Negotiated>,
    /// The socket's last read filled what rustls offered: it may hold more.
    socket_more: bool,
    /// The last read from rustls filled the caller's buffer: it may hold more.
    plaintext_more: bool,
    /// `close_notify` is queued.
    closing: bool,
    /// The fatal failure, once there is one; every later call reports it again.
    failed: Option<TlsError>,
    /// Writing failed (the server is gone): nothing more can be sent, nothing is owed.
    write_dead: bool,
}

impl<S: Stream> TlsStream<S> {
    /// A session `tls` over `io` (connecting); `offered`: its ClientHello offers a session.
    pub fn new(io: S, mut tls: ClientConnection, pool: Arc<SessionPool>, offered: bool) -> Self {
        tls.set_buffer_limit(Some(OUTPUT_LIMIT));
        TlsStream {
            io,
            tls,
            below_up: false,
            pool,
            offered,
            tickets: 0,
            negotiated: None,
            socket_more: false,
            plaintext_more: false,
            closing: false,
            failed: None,
            write_dead: false,
        }
    }

    /// The rustls session, for what this layer does not wrap.
    pub fn session_ref(&self) -> &ClientConnection {
        &self.tls
    }

    /// Writes queued records until none is left (`Ok(true)`) or the socket would block
    /// (`Ok(false)`).
    fn flush_tls(&mut self) -> io::Result<bool> {
        if self.write_dead {
            return Ok(true);
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.io) {
                Ok(0) => {
                    self.write_dead = true;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    self.write_dead = true;
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// Reads from the socket once and processes what came; a TLS failure is kept and
    /// returned.
    fn read_socket(&mut self) -> io::Result<SocketRead> {
        let mut probe = Probe {
            io: &mut self.io,
            short: false,
        };
        let n = loop {
            match self.tls.read_tls(&mut probe) {
                Ok(n) => break n,
                Err(e) if interrupted(&e) => {}
                Err(e) if would_block(&e) => {
                    self.socket_more = false;
                    return Ok(SocketRead::Blocked);
                }
                Err(e) => return Err(e),
            }
        };
        self.socket_more = n > 0 && !probe.short;
        if n == 0 {
            return Ok(SocketRead::Eof);
        }
        let taken_in = self.pool.taken_in();
        let processed = self.tls.process_new_packets();
        self.tickets += (self.pool.taken_in() - taken_in) as u32;
        if let Err(error) = processed {
            // rustls queued an alert telling the server why: one attempt to send it.
            let _ = self.flush_tls();
            let failure = classify(&error, &self.tls);
            self.failed = Some(failure.clone());
            return Err(failure.into_io());
        }
        // Whatever the records asked us to say (a key update, an alert): say it now.
        self.flush_tls()?;
        Ok(SocketRead::Data)
    }

    /// The handshake past TCP: reads and processes the server's flights until established
    /// (and no further: see the module documentation), then sends what rustls queued.
    fn tls_handshake(&mut self) -> Handshake {
        while self.tls.is_handshaking() {
            match self.read_socket() {
                Ok(SocketRead::Data) => {}
                Ok(SocketRead::Blocked) => break,
                Ok(SocketRead::Eof) => {
                    let failure = TlsError {
                        kind: ErrorKind::TlsTruncated,
                        alert: None,
                        what: "the server closed the connection during the TLS handshake, \
                               without an alert"
                            .into(),
                    };
                    self.failed = Some(failure.clone());
                    return Handshake::Failed(failure.into_io());
                }
                Err(e) => return Handshake::Failed(e),
            }
        }
        if let Err(e) = self.flush_tls() {
            return Handshake::Failed(e);
        }
        if self.tls.is_handshaking() {
            return Handshake::Pending;
        }
        self.negotiated = Some(negotiated(&self.tls));
        Handshake::Done
    }
}

impl<S: Stream> Stream for TlsStream<S> {
    fn handshake(&mut self) -> Handshake {
        if !self.below_up {
            match self.io.handshake() {
                Handshake::Done | Handshake::Connected => self.below_up = true,
                other => return other,
            }
            // The ClientHello was queued when the session was made.
            return match self.flush_tls() {
                Ok(_) => Handshake::Connected,
                Err(e) => Handshake::Failed(e),
            };
        }
        self.tls_handshake()
    }
}

impl<S: Stream> Layer for TlsStream<S> {
    fn buffered(&self) -> bool {
        self.failed.is_none() && (self.plaintext_more || self.socket_more)
    }

    fn owes_output(&self) -> bool {
        !self.write_dead && self.tls.wants_write()
    }

    /// Queues `close_notify` (once, and only on an established session that has not failed:
    /// after a fatal alert there is nothing to close) and writes it with anything before it.
    fn close(&mut self) {
        if !self.closing && self.failed.is_none() && self.negotiated.is_some() {
            self.tls.send_close_notify();
            self.closing = true;
        }
        // A server already gone cannot read it: nothing more is owed then (write_dead).
        let _ = self.flush_tls();
    }

    fn session(&self) -> Option<Session> {
        let negotiated = self.negotiated.clone()?;
        let kind = match self.tls.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => HandshakeKind::Resumed,
            _ => HandshakeKind::Full,
        };
        Some(Session {
            kind,
            offered: self.offered,
            // TLS 1.2 gives its ticket (or session id) inside the handshake; TLS 1.3 after it.
            ticket_pending: negotiated.version == "TLSv1.3" && self.tickets == 0,
            negotiated,
            tickets: self.tickets,
        })
    }
}

impl<S: Stream> Read for TlsStream<S> {
    /// Reads plaintext: what rustls holds, else one socket read's worth (more socket reads
    /// only when one brought no plaintext, such as a ticket or part of a record). `Ok(0)`:
    /// the server's `close_notify`. A FIN without it is a `TlsTruncated` failure. A fatal
    /// TLS error is returned on this and every later call.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.clone().into_io());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => {
                    self.plaintext_more = n == buf.len();
                    return Ok(n);
                }
                Err(e) if would_block(&e) => self.plaintext_more = false,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    let failure = TlsError {
                        kind: ErrorKind::TlsTruncated,
                        alert: None,
                        what: "the server closed the connection without close_notify: what \
                               it sent may have been cut short"
                            .into(),
                    };
                    self.failed = Some(failure.clone());
                    return Err(failure.into_io());
                }
                Err(e) => return Err(e),
            }
            match self.read_socket()? {
                // Processed: hand out what it decrypted, if anything, or read on.
                SocketRead::Data | SocketRead::Eof => {}
                SocketRead::Blocked => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }
}

impl<S: Stream> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Encrypts what rustls's queue has room for and writes the records out, again and
    /// again, until everything offered is taken or the socket refuses. So a short count
    /// means what it means for a socket — the socket is full and a writable edge will come —
    /// and never merely "rustls's queue was full" (the flow would wait for an edge that the
    /// socket, having taken everything, never raises). `WouldBlock` when nothing was taken.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(f.clone().into_io());
        }
        if self.closing || self.write_dead {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = self.tls.writer().write_vectored(bufs)?;
        loop {
            let flushed = self.flush_tls()?;
            if taken == offered {
                return Ok(taken);
            }
            if !flushed {
                return match taken {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                };
            }
            // The queue filled and the socket took all of it: room again for the rest.
            let rest = remainder(bufs, taken);
            taken += self.tls.writer().write_vectored(&rest)?;
        }
    }

    /// Writes the records rustls holds (output of its own, or plaintext the socket refused
    /// earlier); `WouldBlock` while some remain.
    fn flush(&mut self) -> io::Result<()> {
        match self.flush_tls()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: Source> Source for TlsStream<S> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.io.register(registry, token, interest)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.io.reregister(registry, token, interest)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.io.deregister(registry)
    }
}

impl<S> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.tls.is_handshaking())
            .field("negotiated", &self.negotiated)
            .field("closing", &self.closing)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The slices of `bufs` after their first `skip` bytes.
fn remainder<'b>(bufs: &'b [IoSlice<'_>], mut skip: usize) -> Vec<IoSlice<'b>> {
    let mut rest = Vec::with_capacity(bufs.len());
    for b in bufs {
        let slice: &'b [u8] = b;
        if skip >= slice.len() {
            skip -= slice.len();
            continue;
        }
        rest.push(IoSlice::new(&slice[skip..]));
        skip = 0;
    }
    rest
}

/// The socket as `read_tls` sees it: notes whether a read came back short (the receive
/// queue was empty).
struct Probe<'a, S> {
    io: &'a mut S,
    short: bool,
}

impl<S: Read> Read for Probe<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.io.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// What a completed handshake settled.
fn negotiated(tls: &ClientConnection) -> Negotiated {
    let name = |s: Option<&str>| s.unwrap_or("unknown").to_string();
    Negotiated {
        version: match tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            other => format!("{other:?}"),
        },
        cipher_suite: name(
            tls.negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str()),
        ),
        group: tls
            .negotiated_key_exchange_group()
            .map(|g| name(g.name().as_str())),
        alpn: tls
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}

/// A rustls error as a TLS failure of its kind, described with the remedy where there is one.
fn classify(error: &rustls::Error, tls: &ClientConnection) -> TlsError {
    let during = if tls.is_handshaking() {
        "TLS handshake"
    } else {
        "TLS"
    };
    match error {
        rustls::Error::InvalidCertificate(cert) => {
            let remedy = match cert {
                rustls::CertificateError::UnknownIssuer => {
                    " (not signed by a CA this client trusts: --cacert FILE trusts its CA, \
                     --insecure skips the check)"
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    " (--tls-sni NAME asks for the name it is for)"
                }
                _ => "",
            };
            TlsError {
                kind: ErrorKind::TlsCertificate,
                alert: None,
                what: format!("{during}: the server's certificate was refused: {cert}{remedy}"),
            }
        }
        rustls::Error::AlertReceived(alert) => {
            let name = alert_name(*alert);
            let hint = match alert {
                AlertDescription::CertificateRequired => {
                    " (it requires a client certificate: --tls-cert and --tls-key)"
                }
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                    if tls.is_handshaking() || tls.protocol_version().is_some() =>
                {
                    " (it refused a certificate: ours, if one was sent)"
                }
                AlertDescription::ProtocolVersion => {
                    " (no TLS version in common: see --tls-version)"
                }
                AlertDescription::HandshakeFailure => {
                    " (no parameters in common, or it wants a client certificate)"
                }
                AlertDescription::NoApplicationProtocol => " (no ALPN protocol in common)",
                _ => "",
            };
            TlsError {
                kind: ErrorKind::TlsAlert,
                alert: Some(name.clone()),
                what: format!("{during}: the server sent alert {name}{hint}"),
            }
        }
        other => TlsError {
            kind: ErrorKind::TlsProtocol,
            alert: None,
            what: format!("{during}: {other}"),
        },
    }
}

/// An alert's name as the RFCs write it: `HandshakeFailure` → `handshake_failure`,
/// `UnknownCA` → `unknown_ca`, `UnknownPSKIdentity` → `unknown_psk_identity`.
pub fn alert_name(alert: AlertDescription) -> String {
    let camel = format!("{alert:?}");
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev_lower = chars[i - 1].is_ascii_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev_lower || (chars[i - 1].is_ascii_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests;
