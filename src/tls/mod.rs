//! TLS for stream listeners, behind the `tls` feature: rustls under the connection state
//! machine. The chapter is `docs/08-tls.md`; this is the map.
//!
//! 1. [`x509`] — just enough DER to print a certificate's subject (for logs and the client
//!    certificate a session presented).
//! 2. [`certs`] — certificate chains and keys from PEM files (with clear errors for the usual
//!    mistakes), a generated self-signed certificate for a quick start, and the
//!    [`CertStore`]: several certificates chosen by SNI with a default,
//!    optionally strict, reloadable at run time without touching established sessions.
//! 3. [`settings`] — TLS settings (versions, ALPN, key-exchange groups by name, session
//!    resumption, client certificates) into the one rustls `ServerConfig` every loop shares.
//! 4. [`layer`] — [`TlsStream`](layer::TlsStream): a rustls server session over the TCP
//!    socket, read and written as plaintext, keeping the edge-triggered rules where TLS
//!    changes them (buffered plaintext, output of its own, bounds, closing).
//! 5. [`socket`] — [`TlsSocket`](socket::TlsSocket): the layer at the connection's
//!    [`Socket`](crate::socket::Socket) seam, over the loop's TCP socket; [`Tls`], a server's
//!    certificates and shared configuration; [`Watch`], which notices a certificate file
//!    that changed (a rotated Kubernetes Secret sends no signal).
//!
//! # The crypto provider, by measurement
//!
//! rustls delegates cryptography to a provider; two are maintained: **aws-lc-rs** (rustls's
//! default) and **ring**. `benches/tls_handshake.rs` measures the server's CPU time per TLS
//! 1.3 handshake in memory (no sockets; the client's work not counted), both providers on the
//! same certificates, cases taking turns, median of 7 rounds
//! (`cargo bench -p loopd --features tls --bench tls_handshake`, on the project's 2-core AMD
//! EPYC machine):
//!
//! | certificate | handshake | aws-lc-rs | ring | ring ÷ aws-lc-rs |
//! | --- | --- | ---: | ---: | ---: |
//! | ECDSA P-256 | full | 66.9 µs | 78.0 µs | 1.17 |
//! | ECDSA P-256 | resumed (ticket) | 61.6 µs | 69.7 µs | 1.13 |
//! | RSA-2048 | full | 254.4 µs | 479.4 µs | 1.88 |
//! | RSA-2048 | resumed (ticket) | 61.8 µs | 69.8 µs | 1.13 |
//!
//! (key exchange X25519 for both, as ring has no post-quantum group; with aws-lc-rs's default
//! `X25519MLKEM768` a full ECDSA handshake costs 81.8 µs and an RSA one 271.0 µs.)
//!
//! aws-lc-rs is faster in every case — by 13–17 % with ECDSA and almost twice as fast with
//! RSA-2048, where the RSA signature dominates — and it is the only one of the two with the
//! post-quantum hybrid `X25519MLKEM768` that rustls now offers first (rustls 0.23 deprecates
//! ring's default provider for that reason). Its cost is the build: aws-lc-sys compiles C
//! (about two minutes here, once), which needs only the C compiler the machine already has.
//! So loopd uses aws-lc-rs, named explicitly ([`settings::provider`]) rather than taken from
//! a process-wide default.
//!
//! A resumed handshake saves the certificate signature and, on the wire, a round trip and the
//! certificate chain; with ECDSA the signature is the small part, so resumption saves little
//! server CPU (8 %) — the key exchange, which a TLS 1.3 resumption repeats, dominates. With
//! RSA-2048 it saves three quarters.

pub mod certs;
pub mod layer;
pub mod settings;
pub mod socket;
mod watch;
pub mod x509;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::TlsConfig;
use certs::{CertError, CertStore, CertSummary};
use settings::SettingsError;
pub use watch::Watch;

/// A server's TLS: its certificates, reloadable, and the one rustls `ServerConfig` every
/// connection of every loop shares (so a session resumes on whichever loop the client's next
/// connection lands). Cloning shares it.
#[derive(Clone)]
pub struct Tls {
    store: Arc<CertStore>,
    config: Arc<ServerConfig>,
    files: Arc<[PathBuf]>,
}

/// Why a server's TLS could not be set up.
#[derive(Debug)]
pub enum TlsError {
    /// A certificate or key.
    Certs(CertError),
    /// The settings (a group name, the client CA).
    Settings(SettingsError),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Certs(e) => write!(f, "TLS certificate: {e}"),
            TlsError::Settings(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl Tls {
    /// Loads the certificates `config` names (or generates the self-signed one) and builds
    /// the shared `ServerConfig`. Every error names the file or setting at fault.
    pub fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(settings::provider());
        let store = CertStore::load(config.certs.clone(), config.strict_sni, provider)
            .map_err(TlsError::Certs)?;
        let store = Arc::new(store);
        let server = settings::server_config(&config.settings, Arc::clone(&store))
            .map_err(TlsError::Settings)?;
        Ok(Tls {
            store,
            config: server,
            files: config.files().into(),
        })
    }

    /// The rustls configuration every connection is served with.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// What is in force, the default first: for the start-up and reload log lines.
    pub fn summaries(&self) -> Vec<CertSummary> {
        self.store.summaries()
    }

    /// Reads the certificate and key files again; see [`CertStore::reload`]. New handshakes
    /// use what loaded, established sessions keep theirs, and a failure changes nothing.
    pub fn reload(&self) -> Result<Vec<CertSummary>, CertError> {
        self.store.reload()
    }

    /// The certificate and key files, for a [`Watch`] on them.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether `self` and `other` are the same context (clones of one load).
    pub fn same(&self, other: &Tls) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("store", &self.store).finish()
    }
}
