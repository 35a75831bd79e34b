//! `--tls` and its flags: the TLS settings of a run, as plain data. The rustls client they
//! make is built once per run by [`tls`](crate::tls); a bad file or name is refused then,
//! before any connection, as a bad setting.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// Which TLS versions the client offers (`--tls-version`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3; the server picks (1.3 if it can).
    #[default]
    #[serde(rename = "1.2,1.3")]
    Both,
    /// TLS 1.2 only.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersions {
    /// `1.2` or `1.3`.
    pub fn parse(s: &str) -> Result<TlsVersions, ConfigError> {
        match s {
            "1.2" => Ok(TlsVersions::Tls12),
            "1.3" => Ok(TlsVersions::Tls13),
            _ => Err(ConfigError::Tls(format!(
                "--tls-version {s}: give 1.2 or 1.3 (without it, both are offered)"
            ))),
        }
    }
}

impl fmt::Display for TlsVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersions::Both => "1.2,1.3",
            TlsVersions::Tls12 => "1.2",
            TlsVersions::Tls13 => "1.3",
        })
    }
}

/// Whom the client trusts to have signed the server's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's trust store (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
    #[default]
    System,
    /// The CA certificates in this PEM file, instead of the system's (`--cacert`, as curl).
    CaFile(PathBuf),
    /// Nobody: the certificate is not checked (`--insecure`). The handshake's signature
    /// still is, so a handshake costs the client what a checking one does, less the chain.
    Insecure,
}

/// The TLS settings of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsSettings {
    /// The name sent as SNI and checked against the certificate; `None`: the target's host
    /// as given on the command line, or its address.
    pub server_name: Option<String>,
    /// Protocols offered by ALPN, in order of preference (`--tls-alpn h2,http/1.1`).
    pub alpn: Vec<String>,
    /// The versions offered.
    pub versions: TlsVersions,
    /// Key-exchange groups offered, by name, in order (`--tls-groups x25519,secp256r1`);
    /// empty: the provider's default (`X25519MLKEM768`, `X25519`, `secp256r1`, ...).
    pub groups: Vec<String>,
    /// How the server's certificate is checked.
    pub trust: Trust,
    /// A client certificate chain and its key, PEM (`--tls-cert`, `--tls-key`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The share of new connections, in percent, that resume a session (`--tls-resume`):
    /// 0, every handshake is full; 100, every one resumes once a session is held.
    pub resume_pct: f64,
}

impl TlsSettings {
    /// Checks what can be checked without reading files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=100.0).contains(&self.resume_pct) {
            return Err(ConfigError::Tls(
                "--tls-resume is a percentage from 0 to 100".into(),
            ));
        }
        if self.alpn.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(ConfigError::Tls(
                "--tls-alpn: each protocol name is 1 to 255 bytes".into(),
            ));
        }
        Ok(())
    }
}

/// Splits a comma-separated list, dropping empty items.
pub fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The TLS settings as the JSON report records them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedTls {
    /// The name sent as SNI and checked.
    pub server_name: Option<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// Versions offered.
    pub versions: TlsVersions,
    /// Groups offered (empty: the default list).
    pub groups: Vec<String>,
    /// `system`, `cacert:PATH` or `insecure`.
    pub trust: String,
    /// The client certificate file, if one was presented.
    pub client_cert: Option<String>,
    /// `--tls-resume`, percent.
    pub resume_pct: f64,
}

impl From<&TlsSettings> for RecordedTls {
    fn from(t: &TlsSettings) -> RecordedTls {
        RecordedTls {
            server_name: t.server_name.clone(),
            alpn: t.alpn.clone(),
            versions: t.versions,
            groups: t.groups.clone(),
            trust: match &t.trust {
                Trust::System => "system".into(),
                Trust::CaFile(p) => format!("cacert:{}", p.display()),
                Trust::Insecure => "insecure".into(),
            },
            client_cert: t.client_cert.as_ref().map(|(c, _)| c.display().to_string()),
            resume_pct: t.resume_pct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions and lists parse; a resumption share outside 0–100 is refused.
    #[test]
    fn settings() {
        assert_eq!(TlsVersions::parse("1.3"), Ok(TlsVersions::Tls13));
        assert!(TlsVersions::parse("1.1").is_err());
        assert_eq!(list("h2, http/1.1,,"), ["h2", "http/1.1"]);
        let mut t = TlsSettings::default();
        t.validate().unwrap();
        t.resume_pct = 101.0;
        assert!(t
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--tls-resume"));
        assert_eq!(
            serde_json::to_string(&TlsVersions::Tls12).unwrap(),
            "\"1.2\""
        );
    }
}
