//! TLS for stream listeners, behind the `tls` feature: rustls under the connection state
//! machine. The chapter is `docs/08-tls.md`; this is the map.
//!
//! 1. [`x509`] — just enough DER to print a certificate's subject (for logs and the client
//!    certificate a session presented).
//! 2. [`certs`] — certificate chains and keys from PEM files (with clear errors for the usual
//!    mistakes), a generated self-signed certificate for a quick start, and the
//!    [`CertStore`](certs::CertStore): several certificates chosen by SNI with a default,
//!    optionally strict, reloadable at run time without touching established sessions.
//! 3. [`settings`] — TLS settings (versions, ALPN, key-exchange groups by name, session
//!    resumption, client certificates) into the one rustls `ServerConfig` every loop shares.
//! 4. [`layer`] — [`TlsStream`](layer::TlsStream): a rustls server session over the TCP
//!    socket, read and written as plaintext, keeping the edge-triggered rules where TLS
//!    changes them (buffered plaintext, output of its own, bounds, closing).
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
pub mod x509;
