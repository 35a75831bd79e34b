//! Server CPU per TLS 1.3 handshake, in memory, for each crypto provider rustls offers:
//! aws-lc-rs (loopd's choice) and ring, with an ECDSA P-256 and an RSA-2048 certificate, full
//! and resumed (tickets). No sockets: client and server exchange records through memory, and
//! only the time the *server* spends in rustls (reading, processing, writing records) is
//! counted, as thread CPU time, so neither the client's work nor other processes on the
//! machine are charged to it.
//!
//! Cases take turns round by round, and each figure is the median of the rounds' means, so a
//! burst of load from elsewhere moves every case alike rather than one. The last column is
//! each case's cost relative to aws-lc-rs's for the same certificate and kind.
//!
//! `cargo bench -p loopd --features tls --bench tls_handshake` (`-- --quick` for a short run).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::ServerSessionMemoryCache;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};

/// Rounds in which every case runs once. Seven give a median that one disturbed round cannot
/// move.
const ROUNDS: usize = 7;
/// CPU time each case spends per round: long enough that the clock's granularity and the
/// start of a round vanish (hundreds of handshakes), short enough for the whole run to take
/// well under a minute on a shared two-core machine.
const ROUND_TIME: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    AwsLcRs,
    Ring,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::AwsLcRs => "aws-lc-rs",
            Provider::Ring => "ring",
        }
    }

    /// The provider with one key-exchange group, so that both do the same work (ring has
    /// no ML-KEM).
    fn with_group(self, group: Group) -> CryptoProvider {
        let mut provider = match self {
            Provider::AwsLcRs => rustls::crypto::aws_lc_rs::default_provider(),
            // Deprecated in rustls 0.23 because ring has no post-quantum key exchange — one of
            // the reasons loopd uses aws-lc-rs; measured here for the comparison.
            #[allow(deprecated)]
            Provider::Ring => rustls::crypto::ring::default_provider(),
        };
        let kx = match (self, group) {
            (Provider::AwsLcRs, Group::X25519) => rustls::crypto::aws_lc_rs::kx_group::X25519,
            (Provider::AwsLcRs, Group::X25519Mlkem768) => {
                rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768
            }
            (Provider::Ring, Group::X25519) => rustls::crypto::ring::kx_group::X25519,
            (Provider::Ring, Group::X25519Mlkem768) => unreachable!("ring has no ML-KEM"),
        };
        provider.kx_groups = vec![kx];
        provider
    }

    fn ticketer(self) -> Arc<dyn rustls::server::ProducesTickets> {
        match self {
            Provider::AwsLcRs => rustls::crypto::aws_lc_rs::Ticketer::new().unwrap(),
            Provider::Ring => rustls::crypto::ring::Ticketer::new().unwrap(),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Group {
    X25519,
    X25519Mlkem768,
}

#[derive(Clone, Copy, PartialEq)]
enum Key {
    EcdsaP256,
    Rsa2048,
}

struct Case {
    provider: Provider,
    key: Key,
    group: Group,
    resumed: bool,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// Per-round mean server CPU per handshake, in µs.
    rounds: Vec<f64>,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{:<9} {:<10} {:<14} {}",
            self.provider.name(),
            match self.key {
                Key::EcdsaP256 => "ECDSA P256",
                Key::Rsa2048 => "RSA 2048",
            },
            match self.group {
                Group::X25519 => "X25519",
                Group::X25519Mlkem768 => "X25519MLKEM768",
            },
            if self.resumed { "resumed" } else { "full" },
        )
    }
}

/// A certificate and key of each kind, generated once and shared by both providers.
fn identity(key: Key) -> (CertificateDer<'static>, Vec<u8>) {
    let alg = match key {
        Key::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Key::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
    };
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench.test".to_owned()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    (cert.der().clone(), pair.serialize_der())
}

fn configs(
    provider: Provider,
    group: Group,
    cert: &CertificateDer<'static>,
    key: &[u8],
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let crypto = Arc::new(provider.with_group(group));
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&crypto))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
        )
        .unwrap();
    server.session_storage = ServerSessionMemoryCache::new(4096);
    server.ticketer = provider.ticketer();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let client = ClientConfig::builder_with_provider(crypto)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One handshake in memory; returns the server's CPU time and how it went.
fn handshake(
    server_config: &Arc<ServerConfig>,
    client_config: &Arc<ClientConfig>,
) -> (Duration, HandshakeKind) {
    let name = ServerName::try_from("bench.test").unwrap();
    let mut client = ClientConnection::new(Arc::clone(client_config), name).unwrap();
    let mut server_cpu = Duration::ZERO;
    let start = thread_cpu();
    let mut server = ServerConnection::new(Arc::clone(server_config)).unwrap();
    server_cpu += thread_cpu() - start;
    let mut wire = Vec::with_capacity(8192);
    for _ in 0..10 {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let start = thread_cpu();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        let mut out = Vec::with_capacity(8192);
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        server_cpu += thread_cpu() - start;
        let mut rd = &out[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        if !server.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
            // The tickets have reached the client; drain its plaintext side (none).
            let _ = client.reader().read(&mut [0; 1]);
            let _ = client.writer().flush();
            return (server_cpu, server.handshake_kind().unwrap());
        }
    }
    panic!("handshake did not finish");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, round_time) = if quick {
        (3, Duration::from_millis(100))
    } else {
        (ROUNDS, ROUND_TIME)
    };
    let ecdsa = identity(Key::EcdsaP256);
    let rsa = identity(Key::Rsa2048);
    let mut cases = Vec::new();
    for key in [Key::EcdsaP256, Key::Rsa2048] {
        let (cert, der) = match key {
            Key::EcdsaP256 => &ecdsa,
            Key::Rsa2048 => &rsa,
        };
        for resumed in [false, true] {
            for (provider, group) in [
                (Provider::AwsLcRs, Group::X25519),
                (Provider::Ring, Group::X25519),
                (Provider::AwsLcRs, Group::X25519Mlkem768),
            ] {
                let (server, mut client) = configs(provider, group, cert, der);
                if !resumed {
                    // No ticket is kept: every handshake is full.
                    Arc::make_mut(&mut client).resumption = rustls::client::Resumption::disabled();
                }
                cases.push(Case {
                    provider,
                    key,
                    group,
                    resumed,
                    server,
                    client,
                    rounds: Vec::new(),
                });
            }
        }
    }
    // Warm up, and give every resuming client a ticket.
    for case in &mut cases {
        for _ in 0..5 {
            handshake(&case.server, &case.client);
        }
    }
    for _ in 0..rounds {
        for case in &mut cases {
            let (mut spent, mut count) = (Duration::ZERO, 0u32);
            while spent < round_time {
                let (cpu, kind) = handshake(&case.server, &case.client);
                let want = if case.resumed {
                    HandshakeKind::Resumed
                } else {
                    HandshakeKind::Full
                };
                assert_eq!(kind, want, "{}", case.label());
                spent += cpu;
                count += 1;
            }
            case.rounds
                .push(spent.as_secs_f64() * 1e6 / f64::from(count));
        }
    }
    println!(
        "Server CPU per TLS 1.3 handshake, in memory (median of {rounds} rounds of {round_time:?} each)"
    );
    println!(
        "{:<9} {:<10} {:<14} {:<8} {:>10} {:>14} {:>9}",
        "provider", "key", "group", "kind", "µs/hs", "handshakes/s", "vs aws-lc"
    );
    let medians: Vec<f64> = cases.iter_mut().map(|c| median(&mut c.rounds)).collect();
    for (i, case) in cases.iter().enumerate() {
        let base = cases
            .iter()
            .position(|c| {
                c.provider == Provider::AwsLcRs
                    && c.group == Group::X25519
                    && c.key == case.key
                    && c.resumed == case.resumed
            })
            .unwrap();
        println!(
            "{}  {:>10.1} {:>14.0} {:>8.2}x",
            case.label(),
            medians[i],
            1e6 / medians[i],
            medians[i] / medians[base]
        );
    }
}
