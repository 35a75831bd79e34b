//! The command line: raw flags ([`Args`], clap) and their translation into a validated
//! [`Config`]. The two are separate types, so the library never sees a flag and every flag's
//! meaning is decided in one place, [`Args::into_config`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use ipnet::IpNet;

use loopd::config::{
    self, nonzero, parse_cpu_list, parse_duration, parse_size, CertSource, ClientAuth, Config,
    ConfigError, Deployment, Limits, ListenSpec, LoopConfig, StreamOptions, TlsConfig, TlsSettings,
    UdpLimits,
};
use loopd::fault::{FaultConfig, FaultSpec};
use loopd::proxy::TrustList;
use loopd::service::http::HttpLimits;
use loopd::service::ServiceOptions;

use crate::logger::LogFormat;

/// An edge-triggered event-loop server: echo, discard, chargen, daytime, time, line, frame and
/// http over TCP, and echo, discard, chargen, daytime and time over UDP.
///
/// Sizes take units (256KiB, 1MiB); durations take units (30s, 5m, 250ms); 0 turns a
/// timeout off. RUST_LOG overrides -v/-q.
#[derive(Debug, Parser)]
#[command(name = "loopd", version, about, max_term_width = 100)]
pub struct Args {
    /// Serve SERVICE on ADDR; repeatable. TCP: echo, discard, chargen, daytime, time, line,
    /// frame, http; UDP: udp-echo, udp-discard, udp-chargen, udp-daytime, udp-time. IPv6 as [::1]:7;
    /// [::] listens on IPv4 and IPv6. ADDR,proxy: every connection starts with a PROXY
    /// protocol header (behind HAProxy or nginx). ADDR,tls: every connection speaks TLS
    /// (after the PROXY header with ,proxy,tls). Default: loopback only, so a bare loopd
    /// exposes nothing.
    #[arg(short, long = "listen", value_name = "SERVICE=ADDR", default_value = config::DEFAULT_LISTEN, env = "LOOPD_LISTEN", value_delimiter = ' ')]
    listen: Vec<ListenSpec>,

    /// Event loops, each a thread with its own socket per listener (SO_REUSEPORT); 0 = one
    /// per CPU. One loop saturates one core.
    #[arg(long, value_name = "N", default_value = "1", env = "LOOPD_THREADS")]
    threads: usize,

    /// Pin loop i to the i-th CPU of LIST (0-3, 0,2); by default the kernel places them.
    #[arg(long, value_name = "LIST", value_parser = |s: &str| parse_cpu_list(s).map(CpuList), env = "LOOPD_PIN_CPUS")]
    pin_cpus: Option<CpuList>,

    /// Client connections served at once, in all loops together; more wait in the kernel
    /// backlog (the admin endpoint has 10 of its own besides, so the probes answer at the
    /// cap). Lowered at start-up if the open-files limit cannot hold them.
    #[arg(
        long,
        value_name = "N",
        default_value = "10000",
        env = "LOOPD_MAX_CONNECTIONS"
    )]
    max_connections: usize,

    /// Close a connection with no traffic for this long; reclaims descriptors from vanished
    /// peers.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration, env = "LOOPD_IDLE_TIMEOUT")]
    idle_timeout: Duration,

    /// Abort (RST) a connection whose pending output has not moved for this long: its peer
    /// stopped reading.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, env = "LOOPD_WRITE_STALL_TIMEOUT")]
    write_stall_timeout: Duration,

    /// After our FIN, read and discard the peer's data for at most this long, so closing never
    /// resets a reply the peer has not read.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, env = "LOOPD_LINGER_TIMEOUT")]
    linger_timeout: Duration,

    /// line, frame and http services: end a connection whose partial request has been
    /// arriving for this long, so slow clients cannot hold every slot (line and frame reset
    /// it: nothing is owed; http answers 408 and closes). For http that is the request head; a
    /// body is consumed as it arrives, and a body that stops arriving meets the idle timeout
    /// (as nginx's client_body_timeout bounds the time between reads, not the whole upload).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, env = "LOOPD_REQUEST_TIMEOUT")]
    request_timeout: Duration,

    /// On SIGTERM/SIGINT, let connections flush and close for this long, then abort the rest
    /// (twice the linger timeout, so a lingering close completes).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "LOOPD_DRAIN_TIMEOUT")]
    drain_timeout: Duration,

    /// Stop reading from a connection when this much output is pending for it; bounds the
    /// memory one slow reader can cost.
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = parse_size, env = "LOOPD_HIGH_WATERMARK")]
    high_watermark: usize,

    /// Resume reading when pending output falls below this; the gap keeps a connection from
    /// flapping between paused and reading.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size, env = "LOOPD_LOW_WATERMARK")]
    low_watermark: usize,

    /// Read at most this much from one connection per loop turn before serving the others;
    /// keeps one bulk sender from delaying everyone.
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = parse_size, env = "LOOPD_READ_BUDGET")]
    read_budget: usize,

    /// Listen backlog (capped by net.core.somaxconn); large enough to ride out connect bursts,
    /// where mio's own bind uses 128.
    #[arg(long, value_name = "N", default_value = "1024", env = "LOOPD_BACKLOG")]
    backlog: u32,

    /// TCP_NODELAY on accepted connections; small replies are not held back for delayed ACKs.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_switch, action = ArgAction::Set, env = "LOOPD_TCP_NODELAY")]
    tcp_nodelay: bool,

    /// TCP keepalive idle time on accepted connections (0 = off); finds peers that vanished
    /// without a FIN.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, env = "LOOPD_TCP_KEEPALIVE")]
    tcp_keepalive: Duration,

    /// SO_RCVBUF of accepted connections (0 = the kernel's autotuning). A large fixed buffer
    /// keeps bulk senders from waiting on our window, at the cost of kernel memory per
    /// connection; for bulk benchmarks.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size, env = "LOOPD_TCP_RCVBUF")]
    tcp_rcvbuf: usize,

    /// line service: the longest request line; longer gets an error and a close, and bounds
    /// what a client that never sends a newline can make the server hold.
    #[arg(long, value_name = "SIZE", default_value = "8KiB", value_parser = parse_size, env = "LOOPD_MAX_LINE")]
    max_line: usize,

    /// frame service: the largest frame payload; a larger length prefix closes the connection
    /// after earlier replies, and bounds what one partial frame can make the server hold.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size, env = "LOOPD_MAX_FRAME")]
    max_frame: usize,

    /// http service: the largest request body (and generated ?size= body); a larger one gets
    /// 413 and a close. Bodies are streamed, never held: this bounds work, not memory.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size, env = "LOOPD_MAX_BODY")]
    max_body: usize,

    /// udp-chargen, udp-daytime, udp-time: answer one source (an address; an IPv6 /64) at
    /// most N times a second, after a burst of N (0 = off). Their answers outgrow the
    /// requests, so a forged source could aim them at a victim, or at another server in a
    /// loop that never ends.
    #[arg(
        long,
        value_name = "N",
        default_value = "100",
        env = "LOOPD_UDP_RATE_LIMIT"
    )]
    udp_rate_limit: u32,

    /// udp-echo: the same limit (0 = off). Off by default: echo's answer is its request, and a
    /// load tool sending from one address must not be throttled; set it to bound an echo loop
    /// with another server.
    #[arg(
        long,
        value_name = "N",
        default_value = "0",
        env = "LOOPD_UDP_ECHO_RATE_LIMIT"
    )]
    udp_echo_rate_limit: u32,

    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP on ADDR; off by default
    /// (anyone who can reach it can read the counters, so keep it on loopback or a private
    /// network).
    #[arg(long, value_name = "ADDR", value_parser = parse_admin, env = "LOOPD_ADMIN")]
    admin: Option<SocketAddr>,

    /// This server's name: the line service's SERVER reply, STATS and the exit line, so a load
    /// test through a balancer can tell backends apart. Default: the host name.
    #[arg(long, value_name = "NAME", env = "LOOPD_SERVER_ID")]
    server_id: Option<String>,

    /// Sources allowed to send a PROXY protocol header to a ,proxy listener (CIDR or address;
    /// repeatable). Anyone who may send one can claim any client address, so only the proxies
    /// belong here; by default a proxy on this host.
    #[arg(long, value_name = "CIDR", default_value = "127.0.0.0/8 ::1/128", value_parser = parse_network, value_delimiter = ' ', env = "LOOPD_PROXY_FROM")]
    proxy_from: Vec<IpNet>,

    /// Close a connection to a ,proxy listener whose PROXY header is not complete this long
    /// after accept; a proxy sends it at once.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, env = "LOOPD_PROXY_TIMEOUT")]
    proxy_timeout: Duration,

    /// TLS: a PEM certificate chain (end-entity first); repeatable, each with its --tls-key
    /// in the same order. Several are chosen by SNI; the first is the default for clients
    /// that name none (or a name none covers).
    #[arg(
        long,
        value_name = "FILE",
        value_delimiter = ' ',
        env = "LOOPD_TLS_CERT"
    )]
    tls_cert: Vec<PathBuf>,

    /// TLS: the PEM private key of the --tls-cert given in the same place (unencrypted:
    /// loopd takes no passphrase).
    #[arg(
        long,
        value_name = "FILE",
        value_delimiter = ' ',
        env = "LOOPD_TLS_KEY"
    )]
    tls_key: Vec<PathBuf>,

    /// TLS: generate a self-signed certificate for NAME (repeatable: one certificate, every
    /// name) at start-up, its SHA-256 fingerprint logged, after any --tls-cert; for a quick
    /// start and tests, not for clients that check certificates.
    #[arg(
        long,
        value_name = "NAME",
        value_delimiter = ' ',
        env = "LOOPD_TLS_SELF_SIGNED"
    )]
    tls_self_signed: Vec<String>,

    /// TLS: refuse a client whose SNI names no certificate (or that sends none) instead of
    /// answering with the default one. Off: health checks and clients that connect by
    /// address send no name.
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = parse_switch, action = ArgAction::Set, env = "LOOPD_TLS_STRICT_SNI")]
    tls_strict_sni: bool,

    /// TLS: the oldest protocol version accepted. 1.2 by default: load balancers and older
    /// clients still speak it to backends.
    #[arg(long, value_name = "1.2|1.3", default_value = "1.2", value_parser = parse_tls_version, env = "LOOPD_TLS_MIN_VERSION")]
    tls_min_version: TlsVersion,

    /// TLS: ALPN protocols to offer, most preferred first, comma-separated (h2,http/1.1).
    /// None by default: loopd's services speak no protocol a client would name.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        env = "LOOPD_TLS_ALPN"
    )]
    tls_alpn: Vec<String>,

    /// TLS: key-exchange groups, most preferred first, comma-separated, from
    /// X25519MLKEM768, X25519, secp256r1, secp384r1. All of them by default, the
    /// post-quantum hybrid first.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        env = "LOOPD_TLS_GROUPS"
    )]
    tls_groups: Vec<String>,

    /// TLS: ask clients for a certificate chaining to the CAs in this PEM file (see
    /// --tls-client-auth).
    #[arg(long, value_name = "FILE", env = "LOOPD_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,

    /// TLS, with --tls-client-ca: required refuses a client without a valid certificate;
    /// optional serves one without, and refuses an invalid one.
    #[arg(long, value_name = "required|optional", default_value = "required", value_parser = parse_client_auth, env = "LOOPD_TLS_CLIENT_AUTH")]
    tls_client_auth: ClientAuthMode,

    /// TLS: close a connection whose handshake has not completed this long after accept; a
    /// client that never finishes would hold its slot.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "LOOPD_TLS_HANDSHAKE_TIMEOUT")]
    tls_handshake_timeout: Duration,

    /// TLS: handshake steps a loop runs per turn, after the events of established
    /// connections, so a burst of new clients cannot stall them (a full ECDSA handshake is
    /// about 110 µs of CPU).
    #[arg(
        long,
        value_name = "N",
        default_value = "4",
        env = "LOOPD_TLS_HANDSHAKE_BUDGET"
    )]
    tls_handshake_budget: usize,

    /// TLS: look at the certificate and key files this often and reload when one changed (0
    /// = SIGHUP only). A rotated Kubernetes Secret sends no signal; a look is a stat per file.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "LOOPD_TLS_CERT_CHECK")]
    tls_cert_check: Duration,

    /// On SIGTERM, turn /readyz to 503 and keep serving this long before draining, so a load
    /// balancer stops sending new clients first (0 = drain at once).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration, env = "LOOPD_DRAIN_DELAY")]
    drain_delay: Duration,

    /// Inject faults on a listener on purpose, to test clients and load balancers against a
    /// failing backend; repeatable. LISTENER is SERVICE@PORT, SERVICE@ADDR:PORT or a socket's
    /// name; FAULT is KIND[:VALUE][,p:PERCENT,per:conn|msg,after:DUR,for:DUR]: delay,
    /// first-byte-delay, bandwidth, slice, close-after, idle-close, reset-after,
    /// close-before-reply, blackhole, slow-close, stop-accept, refuse, corrupt, fail-first;
    /// UDP: drop, duplicate, reorder, delay, corrupt, fail-first (docs/F-fault-injection.md).
    /// None by default.
    #[arg(
        long = "fault",
        value_name = "LISTENER=FAULT;...",
        env = "LOOPD_FAULT",
        value_delimiter = ' '
    )]
    fault: Vec<FaultSpec>,
    /// Seed of the faults' random choices: the same seed and --threads repeat a run's choices.
    /// Default: a new seed each start, logged.
    #[arg(long, value_name = "N", env = "LOOPD_FAULT_SEED")]
    fault_seed: Option<u64>,
    /// Let POST /faults?LISTENER=FAULT;... on the admin endpoint change faults at run time.
    /// Off: anyone who reaches the admin address could make the server fail.
    #[arg(long, env = "LOOPD_FAULT_ADMIN")]
    fault_admin: bool,
    /// Log format: text for people, json for log shippers (one object per line).
    #[arg(
        long,
        value_name = "text|json",
        default_value = "text",
        env = "LOOPD_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet", env = "LOOPD_VERBOSE")]
    verbose: u8,

    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, action = ArgAction::Count, env = "LOOPD_QUIET")]
    quiet: u8,
}

/// `--tls-min-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsVersion {
    V12,
    V13,
}

fn parse_tls_version(s: &str) -> Result<TlsVersion, String> {
    match s.trim_start_matches("TLSv").trim_start_matches("tlsv") {
        "1.2" => Ok(TlsVersion::V12),
        "1.3" => Ok(TlsVersion::V13),
        _ => Err(format!(
            "'{s}' is not a TLS version loopd speaks (1.2 or 1.3)"
        )),
    }
}

/// `--tls-client-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuthMode {
    Required,
    Optional,
}

fn parse_client_auth(s: &str) -> Result<ClientAuthMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "required" => Ok(ClientAuthMode::Required),
        "optional" => Ok(ClientAuthMode::Optional),
        _ => Err(format!("'{s}' is not required or optional")),
    }
}

/// `--admin ADDR`: an address, and a clear word for options a listener takes but the admin
/// endpoint does not.
fn parse_admin(s: &str) -> Result<SocketAddr, String> {
    if let Some((_, options)) = s.split_once(',') {
        return Err(format!(
            "the admin endpoint takes no options (',{options}'): it serves plain HTTP to \
             probes and scrapers; keep it on loopback or a private network, or put TLS in \
             front of it"
        ));
    }
    s.parse()
        .map_err(|_| format!("'{s}' is not an IP:PORT address (IPv6 as [::1]:9107)"))
}

/// A parsed `--pin-cpus` (one value, many CPUs).
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

/// A network as CIDR (`10.0.0.0/8`), or one address (`192.0.2.7`).
fn parse_network(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{s}' is not a network like 10.0.0.0/8 or an address"))
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("'{s}' is not on or off")),
    }
}

impl Args {
    /// The TLS flags as settings: certificate pairs in order, then the self-signed one.
    fn tls_config(&self) -> Result<TlsConfig, ConfigError> {
        if self.tls_cert.len() != self.tls_key.len() {
            return Err(ConfigError::UnpairedCertificate);
        }
        let mut certs: Vec<CertSource> = self
            .tls_cert
            .iter()
            .zip(&self.tls_key)
            .map(|(cert, key)| CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect();
        if !self.tls_self_signed.is_empty() {
            certs.push(CertSource::SelfSigned {
                names: self.tls_self_signed.clone(),
            });
        }
        let client_auth = match (&self.tls_client_ca, self.tls_client_auth) {
            (None, _) => ClientAuth::Off,
            (Some(ca), ClientAuthMode::Required) => ClientAuth::Required { ca: ca.clone() },
            (Some(ca), ClientAuthMode::Optional) => ClientAuth::Optional { ca: ca.clone() },
        };
        Ok(TlsConfig {
            certs,
            strict_sni: self.tls_strict_sni,
            settings: TlsSettings {
                tls12: self.tls_min_version == TlsVersion::V12,
                alpn: self
                    .tls_alpn
                    .iter()
                    .map(|p| p.as_bytes().to_vec())
                    .collect(),
                groups: self.tls_groups.clone(),
                client_auth,
                ..TlsSettings::default()
            },
            cert_check: nonzero(self.tls_cert_check),
        })
    }

    /// Raw flags to a validated configuration.
    pub fn into_config(self) -> Result<Config, config::ConfigError> {
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let tls = self.tls_config()?;
        let config = Config {
            listen: self.listen,
            admin: self.admin,
            services: ServiceOptions {
                max_line: self.max_line,
                max_frame: self.max_frame,
                http: HttpLimits {
                    max_body: self.max_body as u64,
                    ..HttpLimits::default()
                },
            },
            deployment: Deployment {
                threads,
                pin_cpus: self.pin_cpus.map(|CpuList(cpus)| cpus),
                max_connections: self.max_connections,
                drain_delay: self.drain_delay,
                faults: FaultConfig {
                    specs: self.fault,
                    seed: self.fault_seed,
                    runtime_changes: self.fault_admin,
                },
            },
            loops: LoopConfig {
                limits: Limits {
                    high_watermark: self.high_watermark,
                    low_watermark: self.low_watermark,
                    read_budget: self.read_budget,
                    idle_timeout: nonzero(self.idle_timeout),
                    write_stall_timeout: nonzero(self.write_stall_timeout),
                    linger_timeout: self.linger_timeout,
                    request_timeout: nonzero(self.request_timeout),
                    proxy_timeout: self.proxy_timeout,
                    handshake_timeout: self.tls_handshake_timeout,
                },
                stream: StreamOptions {
                    nodelay: self.tcp_nodelay,
                    keepalive: nonzero(self.tcp_keepalive),
                    rcvbuf: (self.tcp_rcvbuf > 0).then_some(self.tcp_rcvbuf),
                },
                backlog: self.backlog,
                drain_timeout: self.drain_timeout,
                udp: UdpLimits {
                    rate_limit: (self.udp_rate_limit > 0).then_some(self.udp_rate_limit),
                    echo_rate_limit: (self.udp_echo_rate_limit > 0)
                        .then_some(self.udp_echo_rate_limit),
                },
                server_id: self.server_id.unwrap_or_else(config::host_name),
                proxy_from: TrustList::new(self.proxy_from),
                tls,
                handshake_budget: self.tls_handshake_budget,
            },
        };
        config.validate()?;
        Ok(config)
    }

    pub fn log_level(&self) -> log::LevelFilter {
        use log::LevelFilter::*;
        match (self.verbose, self.quiet) {
            (0, 0) => Info,
            (1, _) => Debug,
            (v, _) if v >= 2 => Trace,
            (_, 1) => Warn,
            _ => Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The flag defaults are exactly the library's documented defaults.
    #[test]
    fn flag_defaults_match_config_defaults() {
        let config = Args::parse_from(["loopd"]).into_config().unwrap();
        assert_eq!(config, Config::default());
    }

    /// The README's flags table, as `--help` defines it: every flag, its default and its
    /// reason. The table is generated from the same definitions, so it cannot drift.
    fn flags_table() -> String {
        let mut rows = vec![
            "| flag | environment | default | why this default |".to_string(),
            "| --- | --- | --- | --- |".to_string(),
        ];
        for arg in Args::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let mut flag = format!("--{long}");
            if let Some(short) = arg.get_short() {
                flag = format!("-{short}, {flag}");
            }
            if let Some(names) = arg
                .get_value_names()
                .filter(|_| arg.get_action().takes_values())
            {
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                flag = format!("{flag} {}", names.join(" "));
            }
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if default.is_empty() {
                "—".to_string()
            } else {
                format!("`{}`", default.join(" "))
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
            let flag = flag.replace('|', "\\|");
            let env = arg
                .get_env()
                .map_or("—".to_string(), |e| format!("`{}`", e.to_string_lossy()));
            rows.push(format!(
                "| `{flag}` | {env} | {default} | {} |",
                help.replace('|', "\\|")
            ));
        }
        rows.join("\n")
    }

    /// The README's flags table is exactly what `--help` says (regenerate it from the
    /// message if this fails).
    #[test]
    fn readme_flags_table_matches_help() {
        let readme = include_str!("../../README.md");
        let table = flags_table();
        let start = "<!-- flags table: generated from loopd --help, checked by a test -->\n";
        let section = readme
            .split_once(start)
            .and_then(|(_, rest)| rest.split_once("\n\n"))
            .map(|(t, _)| t)
            .expect("README has the flags table after its marker");
        assert!(
            section == table,
            "the README flags table is out of date; replace it with:\n{table}"
        );
    }

    /// The TLS flags become settings: pairs in order, the self-signed certificate after
    /// them, the client CA with its mode, the minimum version; unpaired files are refused.
    #[test]
    fn tls_flags() {
        let c = Args::parse_from([
            "loopd",
            "-l",
            "echo=127.0.0.1:0,tls",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "a.key",
            "--tls-cert",
            "b.pem",
            "--tls-key",
            "b.key",
            "--tls-self-signed",
            "localhost",
            "--tls-alpn",
            "h2,http/1.1",
            "--tls-min-version",
            "1.3",
            "--tls-client-ca",
            "ca.pem",
            "--tls-client-auth",
            "optional",
            "--tls-cert-check",
            "0",
        ])
        .into_config()
        .unwrap();
        let tls = &c.loops.tls;
        assert_eq!(tls.certs.len(), 3);
        assert!(matches!(&tls.certs[0], CertSource::Files { cert, .. } if cert.ends_with("a.pem")));
        assert!(
            matches!(&tls.certs[2], CertSource::SelfSigned { names } if names == &["localhost"])
        );
        assert_eq!(
            tls.settings.alpn,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!tls.settings.tls12);
        assert!(matches!(
            tls.settings.client_auth,
            ClientAuth::Optional { .. }
        ));
        assert_eq!(tls.cert_check, None);
        let unpaired = Args::parse_from(["loopd", "--tls-cert", "a.pem"]).into_config();
        assert_eq!(unpaired.unwrap_err(), ConfigError::UnpairedCertificate);
        let no_cert = Args::parse_from(["loopd", "-l", "echo=127.0.0.1:0,tls"]).into_config();
        assert!(matches!(no_cert, Err(ConfigError::NoCertificate(_))));
        let admin = Args::try_parse_from(["loopd", "--admin", "127.0.0.1:9107,tls"]).unwrap_err();
        assert!(admin.to_string().contains("takes no options"), "{admin}");
    }

    /// The clap definition is internally consistent.
    #[test]
    fn clap_definition() {
        Args::command().debug_assert();
    }

    /// Repeated --listen gives several listeners; human units parse.
    #[test]
    fn listen_and_units() {
        let c = Args::parse_from([
            "loopd",
            "--listen",
            "echo=127.0.0.1:0",
            "-l",
            "daytime=[::1]:0",
            "--high-watermark",
            "1MiB",
            "--idle-timeout",
            "0",
            "--threads",
            "2",
            "--pin-cpus",
            "0,3",
        ])
        .into_config()
        .unwrap();
        let (d, l) = (&c.deployment, &c.loops);
        assert_eq!(d.threads, 2);
        assert_eq!(d.pin_cpus, Some(vec![0, 3]));
        assert_eq!(c.listen.len(), 2);
        assert_eq!(l.limits.high_watermark, 1 << 20);
        assert_eq!(l.limits.idle_timeout, None);
    }
}
