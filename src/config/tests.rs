//! The configuration's rules, without a server.

use super::*;
use crate::service::Builtin;

/// The defaults are a valid configuration serving echo on loopback port 7007.
#[test]
fn defaults_validate() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.listen[0].service, Builtin::Echo);
    assert_eq!(c.listen[0].addr, "127.0.0.1:7007".parse().unwrap());
}

/// SERVICE=ADDR accepts IPv4, IPv6 and the dual-stack wildcard.
#[test]
fn listen_specs() {
    let v4: ListenSpec = "discard=0.0.0.0:9".parse().unwrap();
    assert_eq!(v4.service, Builtin::Discard);
    let v6: ListenSpec = "chargen=[::1]:19".parse().unwrap();
    assert!(v6.addr.is_ipv6());
    let dual: ListenSpec = "echo=[::]:7".parse().unwrap();
    assert_eq!(dual.to_string(), "echo=[::]:7");
    assert!("echo"
        .parse::<ListenSpec>()
        .unwrap_err()
        .contains("SERVICE=ADDR"));
    assert!("echo=localhost:7".parse::<ListenSpec>().is_err());
    let proxied: ListenSpec = "line=0.0.0.0:7100,proxy".parse().unwrap();
    assert!(proxied.proxy && !v4.proxy);
    assert_eq!(proxied.to_string(), "line=0.0.0.0:7100,proxy");
    let udp = "udp-echo=0.0.0.0:7,proxy"
        .parse::<ListenSpec>()
        .unwrap_err();
    assert!(udp.contains("for TCP listeners"), "{udp}");
    let unknown = "echo=0.0.0.0:7,ssl".parse::<ListenSpec>().unwrap_err();
    assert!(
        unknown.contains("unknown listener option 'ssl' (known: proxy, tls)"),
        "{unknown}"
    );
}

/// `,tls` in either order with `,proxy`, written back with the PROXY header first (the order
/// on the wire); refused on UDP services.
#[test]
fn tls_listen_specs() {
    let tls: ListenSpec = "echo=127.0.0.1:7443,tls".parse().unwrap();
    assert!(tls.tls && !tls.proxy);
    assert_eq!(tls.to_string(), "echo=127.0.0.1:7443,tls");
    for both in ["line=[::]:7443,proxy,tls", "line=[::]:7443,tls,proxy"] {
        let spec: ListenSpec = both.parse().unwrap();
        assert!(spec.tls && spec.proxy, "{both}");
        assert_eq!(spec.to_string(), "line=[::]:7443,proxy,tls");
    }
    let udp = "udp-echo=0.0.0.0:7,tls".parse::<ListenSpec>().unwrap_err();
    assert_eq!(udp, "udp-echo is a UDP service; TLS is for TCP listeners");
}

/// A `,tls` listener needs a certificate, said with the flags that give one.
#[test]
fn tls_listener_needs_a_certificate() {
    let mut c = Config {
        listen: vec!["echo=127.0.0.1:0,tls".parse().unwrap()],
        ..Config::default()
    };
    let err = c.validate().unwrap_err();
    assert!(matches!(err, ConfigError::NoCertificate(_)));
    assert!(err.to_string().contains("--tls-self-signed NAME"), "{err}");
    c.loops.tls.certs = vec![CertSource::SelfSigned {
        names: vec!["localhost".into()],
    }];
    c.validate().unwrap();
}

/// A server id is one word of visible ASCII; the host name is the default.
#[test]
fn server_ids() {
    assert!(valid_server_id(&host_name()));
    for good in ["web-1", "10.0.0.7", "a"] {
        assert!(valid_server_id(good), "{good}");
    }
    for bad in ["", "two words", "tab\there", "é", &"x".repeat(256)] {
        assert!(!valid_server_id(bad), "{bad}");
    }
    let mut c = Config::default();
    c.loops.server_id = "two words".into();
    assert!(matches!(c.validate(), Err(ConfigError::ServerId(_))));
}

/// A low watermark of zero is refused: reading resumes when pending output falls below the
/// low watermark, which it never does below zero, so a connection paused by backpressure
/// would never read again (not even its peer's FIN). Found by the `frame` fuzz target.
#[test]
fn zero_low_watermark_is_refused() {
    let mut c = Config::default();
    c.loops.limits.low_watermark = 0;
    assert_eq!(c.validate(), Err(ConfigError::Zero("low watermark")));
}

/// Watermarks must leave hysteresis; zero sizes are refused.
#[test]
fn invalid_combinations() {
    let mut c = Config::default();
    c.loops.limits.low_watermark = c.loops.limits.high_watermark;
    assert!(matches!(c.validate(), Err(ConfigError::Watermarks { .. })));
    let mut c = Config::default();
    c.loops.limits.read_budget = 0;
    assert_eq!(c.validate(), Err(ConfigError::Zero("read budget")));
    let mut c = Config::default();
    c.listen.push(c.listen[0]);
    assert!(matches!(c.validate(), Err(ConfigError::DuplicateListen(_))));
    let mut c = Config::default();
    c.listen.push("udp-echo=127.0.0.1:7007".parse().unwrap());
    c.validate().expect("TCP and UDP may share a port");
    let c = Config {
        listen: vec![
            "echo=127.0.0.1:0".parse().unwrap(),
            "line=127.0.0.1:0".parse().unwrap(),
        ],
        ..Config::default()
    };
    c.validate().expect("two ephemeral ports are distinct");
}

/// Sizes that cannot be honoured are refused by name before any arithmetic sees them.
#[test]
fn oversize_settings() {
    let mut c = Config::default();
    c.services.max_line = usize::MAX;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::TooLarge {
            flag: "--max-line",
            ..
        })
    ));
    let mut c = Config::default();
    c.services.max_frame = u32::MAX as usize + 1;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::TooLarge {
            flag: "--max-frame",
            ..
        })
    ));
    let mut c = Config::default();
    c.services.max_frame = MAX_SIZE_SETTING;
    c.validate().expect("the largest setting is allowed");
}

/// A UDP rate limit is off (`None`) or between 1 and a million a second.
#[test]
fn udp_rate_limits() {
    let mut c = Config::default();
    c.loops.udp.echo_rate_limit = Some(MAX_UDP_RATE_LIMIT);
    c.validate().expect("the largest limit is allowed");
    c.loops.udp.rate_limit = Some(MAX_UDP_RATE_LIMIT + 1);
    let err = c.validate().unwrap_err();
    assert!(
        err.to_string()
            .contains("--udp-rate-limit 1000001 is more than 1000000 replies a second"),
        "{err}"
    );
    c.loops.udp.rate_limit = Some(0);
    assert_eq!(c.validate(), Err(ConfigError::Zero("a UDP rate limit")));
    c.loops.udp.rate_limit = None;
    c.validate().expect("off");
}

/// Shares add up to the total, differ by at most one, and never leave a loop without
/// a slot when there are enough for all.
#[test]
fn connection_shares() {
    for (total, threads) in [(40, 4), (10, 4), (10_000, 3), (5, 5), (7, 2)] {
        let shares: Vec<usize> = (0..threads)
            .map(|i| connection_share(total, threads, i))
            .collect();
        assert_eq!(shares.iter().sum::<usize>(), total, "{shares:?}");
        let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
        assert!(hi - lo <= 1 && *lo >= 1, "{shares:?}");
    }
}

/// CPU lists as taskset writes them.
#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0-3"), Ok(vec![0, 1, 2, 3]));
    assert_eq!(parse_cpu_list("0,2"), Ok(vec![0, 2]));
    assert_eq!(parse_cpu_list("1, 4-5"), Ok(vec![1, 4, 5]));
    assert!(parse_cpu_list("3-1").is_err());
    assert!(parse_cpu_list("x").is_err());
}

/// Human units for durations and sizes.
#[test]
fn human_units() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert!(parse_duration("soon").is_err());
    assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
    assert_eq!(parse_size("1MiB"), Ok(1 << 20));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("lots").is_err());
}
