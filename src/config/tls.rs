//! TLS settings for `,tls` listeners: which certificates, which protocol versions, ALPN and
//! key-exchange groups, resumption, client certificates, and how changed certificate files are
//! noticed. Plain data with a default and a reason for each; [`crate::tls`] (the `tls`
//! feature) turns it into the one rustls configuration every loop shares.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Session-ID cache entries (TLS 1.2 clients without tickets). Each holds a master secret and
/// the session's parameters, a few hundred bytes, so 4096 entries cost about a megabyte at
/// most, shared by all loops — enough for every client of a busy minute to resume.
pub const DEFAULT_SESSION_CACHE: usize = 4096;

/// How long a TLS client may take from accept to a completed handshake. A handshake is two
/// round trips and a few hundred microseconds of CPU; ten seconds covers a slow mobile link
/// many times over. Without a limit, a client that opens a connection and never finishes
/// the handshake holds a slot until the idle timeout (the TLS form of slowloris); nginx's
/// `ssl_handshake_timeout` is 60 s, HAProxy's `timeout client` applies at 50 s or less.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the supervisor looks at the certificate and key files for a change (their
/// modification time, size and inode), and reloads when one has changed. Kubernetes rotates a
/// mounted Secret by swapping a symbolic link and sends no signal, so a server that waited
/// for SIGHUP would serve the old certificate until it expired. A look costs one `stat` per
/// file on the supervisor's thread, never on a loop's; every ten seconds is nothing, and well
/// inside the minute or more the kubelet itself takes to update the volume.
pub const DEFAULT_CERT_CHECK: Duration = Duration::from_secs(10);

/// Where one identity (a certificate chain and its key) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A PEM certificate chain (end-entity first) and its PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). Read again on every reload.
    Files {
        /// The chain.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// A self-signed ECDSA P-256 certificate generated at start-up for these DNS names, for
    /// a quick start. Kept as it is across reloads, so its fingerprint stays the one logged.
    SelfSigned {
        /// Subject alternative names (the first is also the common name).
        names: Vec<String>,
    },
}

impl fmt::Display for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertSource::Files { cert, .. } => write!(f, "{}", cert.display()),
            CertSource::SelfSigned { names } => write!(f, "self-signed {}", names.join(",")),
        }
    }
}

/// Whether and how clients present certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    #[default]
    Off,
    /// Clients are asked; one without a certificate is served, one with an invalid
    /// certificate is refused.
    Optional {
        /// PEM file of the CAs that client certificates must chain to.
        ca: PathBuf,
    },
    /// A client without a valid certificate is refused.
    Required {
        /// PEM file of the CAs that client certificates must chain to.
        ca: PathBuf,
    },
}

/// The protocol settings of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Accept TLS 1.2 as well as 1.3. On by default: load balancers and older clients still
    /// speak 1.2 to backends (HAProxy 2.6 with OpenSSL 1.1, for one).
    pub tls12: bool,
    /// ALPN protocols, most preferred first; empty: no ALPN (a client that offers protocols
    /// is served without one being chosen).
    pub alpn: Vec<Vec<u8>>,
    /// Key-exchange groups by name, most preferred first; empty: all that loopd knows, in
    /// rustls's order (the post-quantum hybrid `X25519MLKEM768` first).
    pub groups: Vec<String>,
    /// Session-ID cache entries; 0 turns the cache off.
    pub session_cache: usize,
    /// Issue session tickets.
    pub tickets: bool,
    /// Client certificates.
    pub client_auth: ClientAuth,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            tls12: true,
            alpn: Vec::new(),
            groups: Vec::new(),
            session_cache: DEFAULT_SESSION_CACHE,
            tickets: true,
            client_auth: ClientAuth::Off,
        }
    }
}

/// Everything `,tls` listeners share: the certificates (the first the default), strict SNI,
/// the protocol settings, and how often certificate files are checked for a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server's identities, the default first; empty: no TLS listener can start.
    pub certs: Vec<CertSource>,
    /// Refuse a ClientHello whose SNI no certificate covers (or that names none) instead of
    /// answering with the default certificate. Off by default: health checks and clients
    /// that connect by IP address send no name.
    pub strict_sni: bool,
    /// Versions, ALPN, groups, resumption, client certificates.
    pub settings: TlsSettings,
    /// See [`DEFAULT_CERT_CHECK`]; `None`: only SIGHUP reloads.
    pub cert_check: Option<Duration>,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            certs: Vec::new(),
            strict_sni: false,
            settings: TlsSettings::default(),
            cert_check: Some(DEFAULT_CERT_CHECK),
        }
    }
}

impl TlsConfig {
    /// Every certificate and key file named, in order: what a reload reads again.
    pub fn files(&self) -> Vec<PathBuf> {
        self.certs
            .iter()
            .flat_map(|source| match source {
                CertSource::Files { cert, key } => vec![cert.clone(), key.clone()],
                CertSource::SelfSigned { .. } => Vec::new(),
            })
            .collect()
    }
}
