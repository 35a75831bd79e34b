//! Certificates: loaded from PEM files or generated, chosen by SNI, reloaded at run time.
//!
//! A [`CertStore`] holds the server's identities, each a certificate chain with its private
//! key. The first one given is the **default**: it answers a ClientHello without SNI (an IP
//! address, an old client, a health check) or with a name no certificate covers — unless
//! strict SNI is on, and then such a handshake is refused with an alert. The others are
//! chosen by SNI, in the order given, with webpki deciding whether a certificate is valid
//! for the name (wildcards included).
//!
//! The store is what rustls asks for a certificate in every handshake
//! ([`ResolvesServerCert`]), and what `SIGHUP` will ask to [reload](CertStore::reload): the
//! files are read again, every chain and key is checked, and only if all of them load does
//! the new set replace the old. A handshake takes its set when it starts, so handshakes under
//! way and sessions already established keep the certificates they began with; a failed
//! reload changes nothing and says why.
//!
//! # Swapping the set
//!
//! The current set sits behind an `RwLock<Arc<CertSet>>`. A handshake takes the read lock
//! only to clone the `Arc` — a few nanoseconds against the hundred microseconds a handshake
//! costs — and a reload takes the write lock only to store the new `Arc`, after loading
//! everything outside the lock. The `arc-swap` crate would make the read lock-free, which
//! pays off when reads are on the hot path of every message; here they happen once per
//! handshake, so the standard library is enough.
//!
//! # Errors
//!
//! Each way a certificate or key can be wrong has its own [`CertError`] variant naming the
//! file: missing or unreadable, no certificate in it, no key, an encrypted key (loopd has no
//! passphrase to open it; decrypt it with `openssl pkey`), a key rustls cannot use, or a key
//! that does not belong to the certificate.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::x509;

/// The largest PEM file read: a chain of a few certificates is a few KiB, and a CA bundle a
/// few hundred; 16 MiB refuses only a wrong path (a log file, a device) before it is read
/// into memory.
pub const MAX_PEM_FILE: u64 = 16 << 20;

pub use crate::config::CertSource;

/// Why certificates could not be loaded. Every variant names the file or source at fault.
#[derive(Debug)]
pub enum CertError {
    /// The file could not be read (missing, unreadable, a directory).
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is larger than [`MAX_PEM_FILE`].
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid PEM.
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        source: pem::Error,
    },
    /// The file holds no `CERTIFICATE` section.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key.
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is encrypted (`ENCRYPTED PRIVATE KEY`, or OpenSSL's
    /// `Proc-Type: 4,ENCRYPTED`).
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls cannot use the key (an unsupported algorithm, or a malformed key).
    Key {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The key does not belong to the chain's first certificate.
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A self-signed certificate could not be generated (an invalid name, for one).
    Generate {
        /// The names asked for.
        names: Vec<String>,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// A self-signed certificate was asked for without a name.
    NoNames,
    /// No source was given.
    Empty,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read { path, source } => write!(f, "{}: {source}", path.display()),
            CertError::TooLarge { path } => write!(
                f,
                "{}: larger than {} bytes; not a PEM certificate or key",
                path.display(),
                MAX_PEM_FILE
            ),
            CertError::Pem { path, source } => {
                write!(f, "{}: not valid PEM: {source}", path.display())
            }
            CertError::NoCertificate { path } => write!(
                f,
                "{}: no certificate found (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
            CertError::NoKey { path } => write!(
                f,
                "{}: no private key found (expected -----BEGIN PRIVATE KEY-----, \
                 RSA PRIVATE KEY or EC PRIVATE KEY)",
                path.display()
            ),
            CertError::EncryptedKey { path } => write!(
                f,
                "{}: the private key is encrypted; loopd takes no passphrase \
                 (decrypt it with `openssl pkey -in KEY -out KEY.plain`)",
                path.display()
            ),
            CertError::Key { path, source } => {
                write!(f, "{}: unusable private key: {source}", path.display())
            }
            CertError::KeyMismatch { cert, key } => write!(
                f,
                "{}: the private key does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            CertError::Generate { names, source } => write!(
                f,
                "cannot generate a self-signed certificate for {}: {source}",
                names.join(",")
            ),
            CertError::NoNames => f.write_str("a self-signed certificate needs a name"),
            CertError::Empty => f.write_str("no certificate given"),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Read { source, .. } => Some(source),
            CertError::Pem { source, .. } => Some(source),
            CertError::Key { source, .. } => Some(source),
            CertError::Generate { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A SHA-256 digest of a certificate's DER, the form `openssl x509 -fingerprint -sha256`
/// prints and clients pin.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }
}

impl fmt::Display for Fingerprint {
    /// Upper-case hex pairs joined by colons, as OpenSSL prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// What to log about one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Where it came from.
    pub source: String,
    /// The end-entity certificate's subject (RFC 4514), if it parses.
    pub subject: Option<String>,
    /// SHA-256 of the end-entity certificate.
    pub fingerprint: Fingerprint,
    /// Certificates in the chain, end-entity included.
    pub chain_len: usize,
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (subject {}, chain of {}, SHA-256 {})",
            self.source,
            self.subject.as_deref().unwrap_or("?"),
            self.chain_len,
            self.fingerprint
        )
    }
}

/// One certificate chain with its key.
#[derive(Debug)]
struct Identity {
    key: Arc<CertifiedKey>,
    summary: CertSummary,
}

impl Identity {
    fn new(key: CertifiedKey, source: &CertSource) -> Identity {
        let end_entity = key.cert[0].as_ref();
        let summary = CertSummary {
            source: source.to_string(),
            subject: x509::subject(end_entity),
            fingerprint: Fingerprint::of(end_entity),
            chain_len: key.cert.len(),
        };
        Identity {
            key: Arc::new(key),
            summary,
        }
    }

    /// Whether this certificate is valid for the DNS name a client asked for.
    fn serves(&self, name: &ServerName<'_>) -> bool {
        webpki::EndEntityCert::try_from(&self.key.cert[0])
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    }
}

/// The identities in force: the default first.
#[derive(Debug)]
struct CertSet {
    identities: Vec<Identity>,
}

/// The server's certificates, chosen by SNI, reloadable. See the [module documentation](self).
pub struct CertStore {
    sources: Vec<CertSource>,
    strict_sni: bool,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertSet>>,
}

impl CertStore {
    /// Loads every source, in order; the first is the default certificate. With `strict_sni`,
    /// a ClientHello whose name no certificate covers — or that names none — is refused
    /// instead of answered with the default.
    pub fn load(
        sources: Vec<CertSource>,
        strict_sni: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<CertStore, CertError> {
        let set = load_set(&sources, None, &provider)?;
        Ok(CertStore {
            sources,
            strict_sni,
            provider,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// Reads every file source again. If all load, the new certificates serve every
    /// handshake that starts from now on and their summaries are returned; if any fails,
    /// the certificates in force stay and the error says which file and why.
    /// Self-signed identities are kept as they are.
    pub fn reload(&self) -> Result<Vec<CertSummary>, CertError> {
        let old = self.current();
        let set = load_set(&self.sources, Some(&old), &self.provider)?;
        let summaries = summaries(&set);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        Ok(summaries)
    }

    /// What is in force, default first, for the start-up and reload log lines.
    pub fn summaries(&self) -> Vec<CertSummary> {
        summaries(&self.current())
    }

    /// Whether a ClientHello without a name this store serves is refused.
    pub fn strict_sni(&self) -> bool {
        self.strict_sni
    }

    fn current(&self) -> Arc<CertSet> {
        // The lock is held only to clone or store an Arc, which cannot panic; a poisoned lock
        // still holds a whole set.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The certificate for an SNI name (`None`: no SNI).
    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.current();
        let named = sni
            .and_then(|name| ServerName::try_from(name).ok())
            .and_then(|name| set.identities.iter().find(|id| id.serves(&name)));
        match named {
            Some(id) => Some(Arc::clone(&id.key)),
            None if self.strict_sni => None,
            None => Some(Arc::clone(&set.identities[0].key)),
        }
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("sources", &self.sources)
            .field("strict_sni", &self.strict_sni)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    /// Called by rustls once per full handshake. `None` makes rustls refuse the handshake
    /// with an `access_denied` alert (strict SNI).
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = self.choose(hello.server_name());
        if chosen.is_none() {
            log::debug!(
                "TLS: no certificate for SNI {:?} (strict SNI); refusing",
                hello.server_name()
            );
        }
        chosen
    }
}

fn summaries(set: &CertSet) -> Vec<CertSummary> {
    set.identities.iter().map(|id| id.summary.clone()).collect()
}

/// Loads every source; a self-signed one is taken from `previous` when there is one.
fn load_set(
    sources: &[CertSource],
    previous: Option<&CertSet>,
    provider: &CryptoProvider,
) -> Result<CertSet, CertError> {
    if sources.is_empty() {
        return Err(CertError::Empty);
    }
    let mut identities = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        let identity = match (source, previous) {
            (CertSource::SelfSigned { .. }, Some(previous)) => Identity {
                key: Arc::clone(&previous.identities[i].key),
                summary: previous.identities[i].summary.clone(),
            },
            (CertSource::SelfSigned { names }, None) => {
                Identity::new(self_signed(names, provider)?, source)
            }
            (CertSource::Files { cert, key }, _) => {
                Identity::new(load_pair(cert, key, provider)?, source)
            }
        };
        identities.push(identity);
    }
    Ok(CertSet { identities })
}

/// Loads a PEM chain and its PEM key, and checks that they belong together.
pub fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let chain = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| CertError::Key {
            path: key_path.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        // The provider cannot derive this key's public half; nothing to compare against.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(source) => Err(CertError::Key {
            path: cert_path.to_owned(),
            source,
        }),
    }
}

/// Every `CERTIFICATE` in a PEM file, in order (end-entity first, for a chain; the trust
/// anchors, for a CA file).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let text = read_pem(path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key in a PEM file. An encrypted key is recognised and refused by name:
/// the PEM reader would skip an `ENCRYPTED PRIVATE KEY` section as unknown and report no key
/// at all, which sends the operator looking in the wrong place.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let text = read_pem(path)?;
    if contains(&text, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(&text, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(CertError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|source| match source {
        pem::Error::NoItemsFound => CertError::NoKey {
            path: path.to_owned(),
        },
        source => CertError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

fn read_pem(path: &Path) -> Result<Vec<u8>, CertError> {
    let read_error = |source| CertError::Read {
        path: path.to_owned(),
        source,
    };
    let len = fs::metadata(path).map_err(read_error)?.len();
    if len > MAX_PEM_FILE {
        return Err(CertError::TooLarge {
            path: path.to_owned(),
        });
    }
    fs::read(path).map_err(read_error)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Generates a self-signed ECDSA P-256 certificate for `names`.
pub fn self_signed(names: &[String], provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
    let generate_error = |source| CertError::Generate {
        names: names.to_vec(),
        source,
    };
    if names.is_empty() {
        return Err(CertError::NoNames);
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate_error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].as_str());
    let key_pair = rcgen::KeyPair::generate().map_err(generate_error)?;
    let cert = params.self_signed(&key_pair).map_err(generate_error)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| CertError::Key {
            path: PathBuf::from("(generated)"),
            source,
        })?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}
