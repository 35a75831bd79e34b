//! TLS: rustls under the connection state machine (draft; see `docs/13-tls.md`).

pub mod certs;
pub mod layer;
pub mod settings;
pub mod x509;
