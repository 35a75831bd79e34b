//! Certificates for the TLS tests and benchmarks, generated at run time with rcgen (ECDSA
//! P-256) as PEM files in a directory of their own: a CA, a server certificate it signed
//! for `localhost` and 127.0.0.1, a CA for client certificates with a client certificate,
//! and one from a CA nobody trusts. [`Pki::issue`] signs more server certificates (for SNI).
//! Shared by loopd's tests and loopd-bench's (`loopd-bench/tests/tls_peers`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA or a certificate it signed, with its key.
type Issued = (rcgen::Certificate, KeyPair);

/// Certificates and keys as PEM files in a directory of their own, removed when dropped.
pub struct Pki {
    pub dir: PathBuf,
    /// The server's CA.
    pub ca: PathBuf,
    /// Its private key (to sign more with other tools: an RSA certificate by openssl).
    pub ca_key: PathBuf,
    /// The server's certificate, then the CA's (a chain).
    pub chain: PathBuf,
    pub key: PathBuf,
    /// Chain and key in one file, as HAProxy takes them.
    pub combined: PathBuf,
    /// The CA that signs client certificates.
    pub client_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate from a CA nobody trusts.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    /// The server CA itself, to sign more.
    server_ca: Issued,
}

fn ca(name: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(names: &[&str], cn: &str, issuer: &Issued) -> Issued {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    (params.signed_by(&key, &issuer.0, &issuer.1).unwrap(), key)
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "loopd-pki-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let server_ca = ca("loopd test CA");
        let server = leaf(&["localhost", "127.0.0.1"], "localhost", &server_ca);
        let client_ca = ca("loopd client CA");
        let client = leaf(&["client.test"], "client.test", &client_ca);
        let stranger_ca = ca("nobody's CA");
        let stranger = leaf(&["stranger.test"], "stranger.test", &stranger_ca);
        let chain = format!("{}{}", server.0.pem(), server_ca.0.pem());
        let key = server.1.serialize_pem();
        Pki {
            ca: write("ca.pem", &server_ca.0.pem()),
            ca_key: write("ca-key.pem", &server_ca.1.serialize_pem()),
            chain: write("chain.pem", &chain),
            key: write("key.pem", &key),
            combined: write("combined.pem", &format!("{chain}{key}")),
            client_ca: write("client-ca.pem", &client_ca.0.pem()),
            client_cert: write("client.pem", &client.0.pem()),
            client_key: write("client-key.pem", &client.1.serialize_pem()),
            stranger_cert: write("stranger.pem", &stranger.0.pem()),
            stranger_key: write("stranger-key.pem", &stranger.1.serialize_pem()),
            server_ca,
            dir,
        }
    }

    /// A server certificate for `names` (the first also its common name), signed by the
    /// server CA, as `STEM.pem` (the chain) and `STEM-key.pem`; written again if they exist.
    pub fn issue(&self, names: &[&str], stem: &str) -> (PathBuf, PathBuf) {
        let cert = leaf(names, names[0], &self.server_ca);
        let chain = self.dir.join(format!("{stem}.pem"));
        let key = self.dir.join(format!("{stem}-key.pem"));
        let chain_pem = format!("{}{}", cert.0.pem(), self.server_ca.0.pem());
        std::fs::write(&chain, chain_pem).unwrap();
        std::fs::write(&key, cert.1.serialize_pem()).unwrap();
        (chain, key)
    }

    pub fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
