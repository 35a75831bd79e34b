//! Just enough DER to name a certificate: its subject as an RFC 4514 string
//! (`CN=client,O=Example`), for logs, metrics labels and the `line` service's `TLS` command.
//!
//! rustls hands over certificates as DER and, rightly, parses only what the handshake needs;
//! webpki checks names but does not print them. A full X.509 parser would be a large
//! dependency for one string, so this module walks the few fields in front of the subject
//! and formats it. Every length is checked against what is left of the input: a malformed
//! certificate yields `None`, never a panic (a property test feeds it arbitrary bytes).

/// The subject of a DER certificate as an RFC 4514 string (most specific attribute first, as
/// OpenSSL prints with `-nameopt RFC2253`), or `None` if the certificate does not parse.
pub fn subject(cert_der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
    let (cert, _) = Der::new(cert_der).expect(SEQUENCE)?;
    let (mut tbs, _) = cert.expect(SEQUENCE)?;
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    //                               validity, subject, ... }
    if tbs.peek() == Some(VERSION) {
        tbs = tbs.skip()?;
    }
    for _ in ["serialNumber", "signature", "issuer", "validity"] {
        tbs = tbs.skip()?;
    }
    let (name, _) = tbs.expect(SEQUENCE)?;
    format_name(name)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// A cursor over DER bytes.
#[derive(Clone, Copy)]
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der(bytes)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element: its tag, its contents, and the rest after it.
    fn next(self) -> Option<(u8, Der<'a>, Der<'a>)> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // high tag numbers appear nowhere in a Name
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (digits, after) = rest.split_at(n);
            rest = after;
            digits
                .iter()
                .fold(0usize, |acc, &d| (acc << 8) | usize::from(d))
        };
        if rest.len() < len {
            return None;
        }
        let (contents, after) = rest.split_at(len);
        Some((tag, Der(contents), Der(after)))
    }

    /// The contents of the next element, which must carry `tag`, and the rest after it.
    fn expect(self, tag: u8) -> Option<(Der<'a>, Der<'a>)> {
        let (found, contents, rest) = self.next()?;
        (found == tag).then_some((contents, rest))
    }

    /// Everything after the next element.
    fn skip(self) -> Option<Der<'a>> {
        self.next().map(|(_, _, rest)| rest)
    }
}

/// Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue). RFC 4514
/// writes the RDNs last to first, joined by `,`, and the attributes of one RDN joined by `+`.
fn format_name(mut name: Der<'_>) -> Option<String> {
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = name.expect(SET)?;
        name = rest;
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let (pair, rest) = set.expect(SEQUENCE)?;
            set = rest;
            let (oid, value) = pair.expect(OID)?;
            let (tag, value, _) = value.next()?;
            attributes.push(format!(
                "{}={}",
                attribute_name(oid.0),
                escape(&decode_string(tag, value.0))
            ));
        }
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// The short names of RFC 4514 (and OpenSSL's `emailAddress`); any other attribute is written
/// as its dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    const KNOWN: &[(&[u8], &str)] = &[
        (&[0x55, 0x04, 0x03], "CN"),
        (&[0x55, 0x04, 0x06], "C"),
        (&[0x55, 0x04, 0x07], "L"),
        (&[0x55, 0x04, 0x08], "ST"),
        (&[0x55, 0x04, 0x09], "STREET"),
        (&[0x55, 0x04, 0x0a], "O"),
        (&[0x55, 0x04, 0x0b], "OU"),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
            "DC",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
            "UID",
        ),
        (
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
            "emailAddress",
        ),
    ];
    match KNOWN.iter().find(|(known, _)| *known == oid) {
        Some((_, name)) => (*name).to_owned(),
        None => dotted(oid),
    }
}

/// An OID in dotted decimal (X.690 §8.19: the first byte holds two arcs, then base-128).
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
        if value > u64::MAX >> 8 {
            break; // an arc this long is nonsense; stop before it overflows
        }
    }
    let arcs: Vec<String> = arcs.iter().map(u64::to_string).collect();
    arcs.join(".")
}

/// The text of a directory string. Types that are not text are written as RFC 4514's
/// `#` and the hex of the value's contents.
fn decode_string(tag: u8, bytes: &[u8]) -> String {
    match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => String::from_utf8_lossy(bytes).into_owned(),
        // TeletexString: in practice Latin-1.
        0x14 => bytes.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16 big-endian.
        0x1e => {
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect()
        }
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        }
    }
}

/// RFC 4514 §2.4: escape the characters that would change the string's structure, and
/// control characters (so a subject cannot forge a log line).
fn escape(value: &str) -> String {
    if value.starts_with('#')
        && value.len() > 1
        && value[1..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        return value.to_owned(); // already the hex form
    }
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            ' ' | '#' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A subject with several attributes comes out most specific first, special characters
    /// escaped.
    #[test]
    fn formats_a_generated_subject() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Loop, Inc.");
        dn.push(rcgen::DnType::CommonName, "client 1");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()).as_deref(),
            Some("CN=client 1,O=Loop\\, Inc.,C=DE")
        );
    }

    /// Unknown attributes are written as dotted OIDs, and non-text values as hex.
    #[test]
    fn unknown_attributes_and_values() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
        assert_eq!(decode_string(0x04, &[0xde, 0xad]), "#dead");
        assert_eq!(escape(" lead"), "\\ lead");
        assert_eq!(escape("a\nb"), "a\\0ab");
    }

    /// A cut or corrupted certificate yields `None`.
    #[test]
    fn truncated_input_is_none() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        for cut in [0, 1, 2, 10, 40, der.len() / 2] {
            assert_eq!(subject(&der[..cut]), None, "cut at {cut}");
        }
    }

    proptest! {
        /// Arbitrary bytes never panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = subject(&bytes);
        }

        /// Nor do arbitrary bytes behind a valid-looking header.
        #[test]
        fn never_panics_inside_a_sequence(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut der = vec![0x30, 0x81, body.len() as u8];
            der.extend(&body);
            let _ = subject(&der);
        }
    }
}
