//! From TLS settings ([`TlsSettings`], plain data in [`crate::config`]) to one rustls
//! `ServerConfig`, shared by every loop.
//!
//! Everything a handshake needs that is not per connection lives in the `ServerConfig`: the
//! protocol versions, the key-exchange groups, ALPN, the certificate store, the client
//! certificate verifier, and session resumption. Built once and shared as an `Arc`, it gives
//! every loop the same ticket keys and the same session cache, so a client resumes on
//! whichever loop its next connection lands (`SO_REUSEPORT` spreads them by hash).
//!
//! Resumption takes two forms, both on: TLS 1.3 and most TLS 1.2 clients resume with a
//! **ticket** (the session state encrypted under a key only the server knows, held by the
//! client: nothing to store, and rustls rotates the key every six hours); TLS 1.2 clients that
//! do not do tickets resume by **session ID** from a server-side cache of bounded size.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use super::certs::{self, CertError, CertStore};
pub use crate::config::{ClientAuth, TlsSettings, DEFAULT_SESSION_CACHE};

/// The key-exchange groups loopd knows by name, in rustls's order of preference.
/// `X25519MLKEM768` (post-quantum hybrid) comes first as rustls offers it; clients that lack
/// it get `X25519`, at the cost of one HelloRetryRequest round trip when their first key share
/// was for a group the server does not take.
pub const KX_GROUPS: &[(&str, &dyn SupportedKxGroup)] = &[
    (
        "X25519MLKEM768",
        rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768,
    ),
    ("X25519", rustls::crypto::aws_lc_rs::kx_group::X25519),
    ("secp256r1", rustls::crypto::aws_lc_rs::kx_group::SECP256R1),
    ("secp384r1", rustls::crypto::aws_lc_rs::kx_group::SECP384R1),
];

/// The crypto provider loopd uses: aws-lc-rs, chosen by measurement (see the
/// [module documentation](super)). Always passed explicitly: with a second provider compiled
/// in (the benchmark compares ring), rustls has no process default to fall back on.
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Why a `ServerConfig` could not be built.
#[derive(Debug)]
pub enum SettingsError {
    /// A key-exchange group name loopd does not know.
    UnknownGroup(String),
    /// The client CA file.
    ClientCa(CertError),
    /// The client CA file holds no usable trust anchor, or the verifier refused it.
    ClientVerifier(String),
    /// rustls refused the combination (no cipher suite for a version, for one).
    Rustls(rustls::Error),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::UnknownGroup(name) => {
                let known: Vec<&str> = KX_GROUPS.iter().map(|(n, _)| *n).collect();
                write!(
                    f,
                    "unknown key-exchange group {name:?} (known: {})",
                    known.join(", ")
                )
            }
            SettingsError::ClientCa(e) => write!(f, "client CA: {e}"),
            SettingsError::ClientVerifier(e) => write!(f, "client CA: {e}"),
            SettingsError::Rustls(e) => write!(f, "TLS settings: {e}"),
        }
    }
}

impl std::error::Error for SettingsError {}

/// Looks up key-exchange groups by name, case-insensitively, in the order given.
pub fn kx_groups(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, SettingsError> {
    names
        .iter()
        .map(|name| {
            KX_GROUPS
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(name))
                .map(|(_, group)| *group)
                .ok_or_else(|| SettingsError::UnknownGroup(name.clone()))
        })
        .collect()
}

/// Builds the one `ServerConfig` all loops share, with `store` answering for certificates.
pub fn server_config(
    settings: &TlsSettings,
    store: Arc<CertStore>,
) -> Result<Arc<ServerConfig>, SettingsError> {
    let mut provider = provider();
    // Suites whose key schedule hashes with SHA-256 first, chosen by the server: a full
    // ECDSA handshake then costs 11% less CPU here (96 against 108 µs, `tls_server` bench),
    // as aws-lc's SHA-384 has no fast path on this machine's CPU and a handshake runs its
    // key schedule, transcript and two tickets through it. AES-128-GCM is the first choice
    // of Mozilla's recommended configurations too. What it gives up: a client without AES
    // instructions that prefers ChaCha20 still gets AES-GCM if it offers it.
    provider.cipher_suites.sort_by_key(|suite| {
        suite
            .suite()
            .as_str()
            .is_some_and(|n| n.ends_with("SHA384"))
    });
    if !settings.groups.is_empty() {
        provider.kx_groups = kx_groups(&settings.groups)?;
    }
    let provider = Arc::new(provider);
    let versions: &[&'static rustls::SupportedProtocolVersion] = if settings.tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(SettingsError::Rustls)?;
    let builder = match &settings.client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional { ca } | ClientAuth::Required { ca } => {
            let mut roots = RootCertStore::empty();
            for cert in certs::load_certificates(ca).map_err(SettingsError::ClientCa)? {
                roots
                    .add(cert)
                    .map_err(|e| SettingsError::ClientVerifier(format!("{}: {e}", ca.display())))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = match settings.client_auth {
                ClientAuth::Optional { .. } => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| SettingsError::ClientVerifier(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.ignore_client_order = true;
    config.alpn_protocols = settings.alpn.clone();
    config.session_storage = if settings.session_cache > 0 {
        ServerSessionMemoryCache::new(settings.session_cache)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    };
    if settings.tickets {
        config.ticketer =
            rustls::crypto::aws_lc_rs::Ticketer::new().map_err(SettingsError::Rustls)?;
    } else if settings.session_cache == 0 {
        // Without a ticketer, TLS 1.3 tickets name entries of the session cache; with no
        // cache either, a ticket could never be honoured, so none is sent.
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}
