//! The PROXY protocol: the client's real address, from the load balancer in front.
//!
//! Behind a proxy (HAProxy, nginx `stream`, Envoy, a cloud load balancer) every connection
//! loopd accepts comes from the proxy, so the service would see the proxy's address. A proxy
//! configured for the PROXY protocol (HAProxy's `send-proxy`, nginx's `proxy_protocol on`)
//! sends one header before the client's first byte, naming the client and the address it
//! connected to. A listener declared with `,proxy` (`-l echo=0.0.0.0:7007,proxy`) reads that
//! header before anything else; the service is created only once it is in, and sees both
//! addresses ([`ConnInfo`](crate::service::ConnInfo)).
//!
//! Two versions exist, told apart by their first bytes:
//!
//! * **v1**, text: `PROXY TCP4 192.0.2.7 198.51.100.1 56324 7007\r\n`, at most 107 bytes;
//!   `PROXY UNKNOWN\r\n` when the proxy cannot say.
//! * **v2**, binary: a 12-byte signature, a version and command byte (`PROXY`, or `LOCAL` for
//!   the proxy's own connections such as health checks), the address family and transport,
//!   a 16-bit length, the addresses, and type-length-value extensions (TLVs), which loopd
//!   checks and skips.
//!
//! The header is parsed by the `ppp` crate; this module adds what a server must decide around
//! it: a header is complete only when its end is in the buffer, garbage is refused at its
//! first byte instead of waiting, and sizes are bounded (v1: 107 bytes, the specification's
//! limit; v2: [`V2_MAX`]), so a partial header costs a bounded amount of memory and the answer
//! never depends on how the bytes were split into reads (a property test checks that).
//!
//! Trust is the operator's job: anyone who can send a header can claim any address, so only
//! connections from [`TrustList`] sources may (by default loopback only; `--proxy-from CIDR`
//! names the proxies). A connection from elsewhere is closed before its first byte is read.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use ppp::v1;
use ppp::v2;

/// The longest v1 header, CRLF included (the specification's figure).
pub const V1_MAX: usize = 107;

/// The largest v2 header loopd accepts: the fixed 16 bytes, IPv6 addresses (36), and about
/// 2 KiB of TLVs — more than any proxy sends (HAProxy's largest TLVs are a TLS client
/// certificate's names, a few hundred bytes). The format allows 64 KiB; a header that
/// claims more than this is refused instead of buffered.
pub const V2_MAX: usize = 16 + 2048;

/// The v2 signature.
const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;

/// A v2 header's fixed part: the signature, version and command, family and transport, and
/// the length of the rest.
const V2_FIXED: usize = 16;

/// The original connection, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxied {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to (the proxy's listener).
    pub destination: SocketAddr,
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The connection relays a client's.
    Client(Proxied),
    /// The connection is the proxy's own (v2 `LOCAL`, a health check), or the proxy could not
    /// name the client (v1 `UNKNOWN`, v2 `UNSPEC` or a Unix socket): the socket's own
    /// addresses stand.
    Proxy,
}

/// Why a header is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a PROXY protocol header, or a broken one.
    Malformed(String),
    /// Longer than loopd accepts ([`V1_MAX`], [`V2_MAX`]); a v2 header says how long it
    /// claims to be.
    TooLong {
        /// The limit.
        limit: usize,
        /// The length the header claims (v2).
        claimed: Option<usize>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
            Refusal::TooLong {
                limit,
                claimed: Some(n),
            } => write!(f, "PROXY header of {n} bytes, over the limit of {limit}"),
            Refusal::TooLong {
                limit,
                claimed: None,
            } => write!(f, "PROXY header longer than {limit} bytes"),
        }
    }
}

/// The result of looking at the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// Everything so far can start a valid header; wait for more.
    Incomplete,
    /// A header of `len` bytes, version `version`; what follows is the client's stream.
    Done {
        /// The header's length: the stream starts after it.
        len: usize,
        /// 1 or 2.
        version: u8,
        /// What it says.
        origin: Origin,
    },
    /// Never a valid header, whatever follows.
    Refused(Refusal),
}

/// Parses the header at the start of `input`.
///
/// Streaming-safe by construction: for any `input`, `parse(input)` is `Incomplete` only if
/// some continuation could make it valid, and once it is `Done` or `Refused`, appending bytes
/// does not change the answer.
pub fn parse(input: &[u8]) -> Parse {
    if is_prefix(input, V2_SIGNATURE) {
        parse_v2(input)
    } else if is_prefix(input, b"PROXY ") {
        parse_v1(input)
    } else {
        // Named by the byte that ruled out both signatures, so the answer does not depend
        // on how much arrived after it.
        let at = mismatch(input, b"PROXY ").max(mismatch(input, V2_SIGNATURE));
        Parse::Refused(Refusal::Malformed(format!(
            "not a PROXY protocol header (byte {at} is {:?})",
            char::from(input[at])
        )))
    }
}

/// `input` and `signature` agree on their common length.
fn is_prefix(input: &[u8], signature: &[u8]) -> bool {
    let n = input.len().min(signature.len());
    input[..n] == signature[..n]
}

/// The index of the first byte where `input` leaves `signature`.
fn mismatch(input: &[u8], signature: &[u8]) -> usize {
    input
        .iter()
        .zip(signature)
        .position(|(a, b)| a != b)
        .unwrap_or(input.len().min(signature.len()))
}

fn parse_v1(input: &[u8]) -> Parse {
    // A header of at most V1_MAX bytes has its CR at index V1_MAX - 2 at the latest.
    let Some(cr) = input.iter().take(V1_MAX - 1).position(|&b| b == b'\r') else {
        return if input.len() >= V1_MAX - 1 {
            Parse::Refused(Refusal::TooLong {
                limit: V1_MAX,
                claimed: None,
            })
        } else {
            Parse::Incomplete
        };
    };
    // The header ends at CRLF; wait for the LF, then hand exactly the header to the parser.
    let Some(&lf) = input.get(cr + 1) else {
        return Parse::Incomplete;
    };
    if lf != b'\n' {
        return Parse::Refused(Refusal::Malformed("CR not followed by LF".into()));
    }
    let len = cr + 2;
    match v1::Header::try_from(&input[..len]) {
        Ok(header) => {
            let origin = match header.addresses {
                v1::Addresses::Tcp4(a) => Origin::Client(Proxied {
                    source: (a.source_address, a.source_port).into(),
                    destination: (a.destination_address, a.destination_port).into(),
                }),
                v1::Addresses::Tcp6(a) => Origin::Client(Proxied {
                    source: (a.source_address, a.source_port).into(),
                    destination: (a.destination_address, a.destination_port).into(),
                }),
                v1::Addresses::Unknown => Origin::Proxy,
            };
            Parse::Done {
                len,
                version: 1,
                origin,
            }
        }
        Err(e) => Parse::Refused(Refusal::Malformed(format!("v1: {e}"))),
    }
}

fn parse_v2(input: &[u8]) -> Parse {
    if input.len() < V2_FIXED {
        return Parse::Incomplete;
    }
    // The fixed part says everything but the addresses: version, command, family and length
    // are judged as soon as they are here, not after waiting for the length's bytes.
    let header = match v2::Header::try_from(input) {
        Ok(header) => header,
        Err(v2::ParseError::Partial(_, length)) => {
            let len = V2_FIXED + length;
            return if len > V2_MAX {
                Parse::Refused(too_long_v2(len))
            } else {
                Parse::Incomplete
            };
        }
        Err(e) => return Parse::Refused(Refusal::Malformed(format!("v2: {e}"))),
    };
    let len = header.len();
    if len > V2_MAX {
        return Parse::Refused(too_long_v2(len));
    }
    if let Some(Err(e)) = header.tlvs().find(Result::is_err) {
        return Parse::Refused(Refusal::Malformed(format!("v2 TLVs: {e}")));
    }
    let origin = match (header.command, header.addresses) {
        (v2::Command::Local, _) => Origin::Proxy,
        (v2::Command::Proxy, _) if header.protocol == v2::Protocol::Datagram => {
            return Parse::Refused(Refusal::Malformed(
                "v2: a datagram header on a stream connection".into(),
            ));
        }
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Origin::Client(Proxied {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        }),
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Origin::Client(Proxied {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        }),
        (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => Origin::Proxy,
    };
    Parse::Done {
        len,
        version: 2,
        origin,
    }
}

fn too_long_v2(len: usize) -> Refusal {
    Refusal::TooLong {
        limit: V2_MAX,
        claimed: Some(len),
    }
}

/// The sources allowed to send a PROXY header: `--proxy-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustList(Vec<IpNet>);

impl TrustList {
    /// Trusts these networks.
    pub fn new(networks: Vec<IpNet>) -> TrustList {
        TrustList(networks)
    }

    /// Whether a connection from `ip` may send a header. IPv4 clients of a dual-stack
    /// listener are matched as IPv4 (`::ffff:127.0.0.1` is `127.0.0.1`).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The networks, for logs.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

impl fmt::Display for TrustList {
    /// The networks, separated by spaces, as `--proxy-from` takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for net in &self.0 {
            write!(f, "{sep}{net}")?;
            sep = " ";
        }
        Ok(())
    }
}

impl Default for TrustList {
    /// Loopback only: a proxy on the same host.
    fn default() -> TrustList {
        TrustList(vec![
            IpNet::from_str("127.0.0.0/8").expect("a network"),
            IpNet::from_str("::1/128").expect("a network"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend(((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend(addresses);
        h.extend(tlvs);
        h
    }

    fn v2_tcp4(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else {
            unreachable!()
        };
        let mut a = Vec::new();
        a.extend(s.ip().octets());
        a.extend(d.ip().octets());
        a.extend(s.port().to_be_bytes());
        a.extend(d.port().to_be_bytes());
        v2_header(1, 0x11, &a, &[])
    }

    fn client(source: &str, destination: &str) -> Origin {
        Origin::Client(Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        })
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 7007\r\nhello";
        assert_eq!(
            parse(h),
            Parse::Done {
                len: h.len() - 5,
                version: 1,
                origin: client("192.0.2.7:56324", "198.51.100.1:7007"),
            }
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n";
        assert_eq!(
            parse(h),
            Parse::Done {
                len: h.len(),
                version: 1,
                origin: client("[2001:db8::7]:1", "[2001:db8::1]:2"),
            }
        );
        let h = b"PROXY UNKNOWN\r\n";
        assert!(matches!(
            parse(h),
            Parse::Done {
                len: 15,
                version: 1,
                origin: Origin::Proxy
            }
        ));
    }

    #[test]
    fn v2_proxy_local_unspec_and_tlvs() {
        let s: SocketAddr = "192.0.2.7:56324".parse().unwrap();
        let d: SocketAddr = "198.51.100.1:7007".parse().unwrap();
        let h = v2_tcp4(s, d);
        assert_eq!(
            parse(&h),
            Parse::Done {
                len: 28,
                version: 2,
                origin: Origin::Client(Proxied {
                    source: s,
                    destination: d
                }),
            }
        );
        // LOCAL (a health check): the addresses, if any, do not count.
        let mut local = h.clone();
        local[12] = 0x20;
        assert!(matches!(
            parse(&local),
            Parse::Done {
                origin: Origin::Proxy,
                ..
            }
        ));
        // UNSPEC: whatever follows is skipped, as the specification says.
        let h = v2_header(1, 0x00, &[], &[0x04, 0, 2, 0, 0]);
        assert_eq!(
            parse(&h),
            Parse::Done {
                len: 21,
                version: 2,
                origin: Origin::Proxy
            }
        );
        // IPv6.
        let mut a = Vec::new();
        a.extend(Ipv6Addr::LOCALHOST.octets());
        a.extend(Ipv6Addr::LOCALHOST.octets());
        a.extend(1u16.to_be_bytes());
        a.extend(2u16.to_be_bytes());
        let h = v2_header(1, 0x21, &a, &[]);
        assert_eq!(
            parse(&h),
            Parse::Done {
                len: 52,
                version: 2,
                origin: client("[::1]:1", "[::1]:2"),
            }
        );
    }

    #[test]
    fn refusals() {
        let malformed =
            |input: &[u8]| matches!(parse(input), Parse::Refused(Refusal::Malformed(_)));
        assert!(malformed(b"GET / HTTP/1.1\r\n"));
        assert!(malformed(b"hello"));
        assert!(malformed(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rX"));
        assert!(malformed(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n"));
        assert!(malformed(b"PROXY TCP5 1.2.3.4 5.6.7.8 80 443\r\n"));
        assert!(malformed(b"PROXY TCP4 1.2.3.4 ::1 80 443\r\n"));
        // Version 1 in a v2 signature, an unknown command, a truncated TLV.
        let mut h = v2_tcp4("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap());
        h[12] = 0x11;
        assert!(malformed(&h));
        h[12] = 0x2F;
        assert!(malformed(&h));
        assert!(malformed(&v2_header(1, 0x11, &[0; 12], &[0x04, 0, 9, 0])));
        // UDP over a stream.
        assert!(malformed(&v2_header(1, 0x12, &[0; 12], &[])));
        // 200 bytes and no CRLF; a v2 length of 65535.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        let v1_long = Refusal::TooLong {
            limit: V1_MAX,
            claimed: None,
        };
        assert_eq!(parse(&long), Parse::Refused(v1_long.clone()));
        assert_eq!(parse(&long[..106]), Parse::Refused(v1_long));
        assert_eq!(parse(&long[..105]), Parse::Incomplete);
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xFF, 0xFF]);
        assert_eq!(parse(&huge), Parse::Refused(too_long_v2(16 + 65535)));
    }

    #[test]
    fn prefixes_wait() {
        for h in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 7007\r\n"[..],
            &v2_tcp4("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap()),
        ] {
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Parse::Incomplete, "{:?}", &h[..n]);
            }
        }
    }

    #[test]
    fn trust_list() {
        let t = TrustList::default();
        assert!(t.trusts(Ipv4Addr::new(127, 0, 0, 2).into()));
        assert!(t.trusts(Ipv6Addr::LOCALHOST.into()));
        assert!(t.trusts(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into()));
        assert!(!t.trusts(Ipv4Addr::new(192, 0, 2, 7).into()));
        let t = TrustList::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(t.trusts(Ipv4Addr::new(10, 1, 2, 3).into()));
        assert!(!t.trusts(Ipv4Addr::LOCALHOST.into()));
    }

    fn any_header() -> impl Strategy<Value = (Vec<u8>, Parse)> {
        let v4 = (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port)));
        let v6 = (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port)));
        let pair = prop_oneof![(v4.clone(), v4), (v6.clone(), v6)];
        (pair, any::<bool>()).prop_map(|((s, d), text)| {
            let bytes = if text {
                let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
                .into_bytes()
            } else {
                let mut a = Vec::new();
                let family = match (s.ip(), d.ip()) {
                    (IpAddr::V4(x), IpAddr::V4(y)) => {
                        a.extend(x.octets());
                        a.extend(y.octets());
                        0x11
                    }
                    (IpAddr::V6(x), IpAddr::V6(y)) => {
                        a.extend(x.octets());
                        a.extend(y.octets());
                        0x21
                    }
                    _ => unreachable!(),
                };
                a.extend(s.port().to_be_bytes());
                a.extend(d.port().to_be_bytes());
                v2_header(1, family, &a, &[0x04, 0, 3, 1, 2, 3])
            };
            let parse = Parse::Done {
                len: bytes.len(),
                version: if text { 1 } else { 2 },
                origin: Origin::Client(Proxied {
                    source: s,
                    destination: d,
                }),
            };
            (bytes, parse)
        })
    }

    proptest! {
        /// Any valid header with any stream after it: every proper prefix waits, and every
        /// longer input gives the same header — however the bytes were split into reads.
        #[test]
        fn valid_headers_parse_whatever_the_split(
            (header, expected) in any_header(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut input = header.clone();
            input.extend(&rest);
            for n in 0..header.len() {
                prop_assert_eq!(parse(&input[..n]), Parse::Incomplete);
            }
            for n in header.len()..=input.len() {
                prop_assert_eq!(parse(&input[..n]), expected.clone());
            }
        }

        /// Any bytes at all: an answer other than `Incomplete` never changes as bytes are
        /// appended, and `Incomplete` never lasts past the size limits.
        #[test]
        fn answers_are_final(
            prefix in prop_oneof![
                Just(b"PROXY ".to_vec()),
                Just(V2_SIGNATURE.to_vec()),
                Just(Vec::new()),
            ],
            noise in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut input = prefix;
            input.extend(noise);
            let mut settled: Option<Parse> = None;
            for n in 0..=input.len() {
                let p = parse(&input[..n]);
                if let Some(s) = &settled {
                    prop_assert_eq!(&p, s);
                } else if p != Parse::Incomplete {
                    settled = Some(p);
                } else {
                    prop_assert!(n < V2_MAX);
                }
            }
        }
    }
}
