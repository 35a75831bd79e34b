//! Entry points of the fuzz targets in `fuzz/` (`cargo +nightly fuzz run NAME`): one plain
//! function per target, taking the fuzzer's bytes, feeding them to code that reads from the
//! network, and panicking when a property that code promises does not hold. A stable `cargo
//! test` replays the committed corpus of every target, and every crash ever found, through
//! the same functions (the test below). `docs/fuzzing.md` says how to fuzz.
//!
//! Compiled only for the tests and with the `fuzzing` feature (which the fuzz crate turns
//! on), and hidden: not part of the library's API.
//!
//! | target | what reads the bytes | [`targets`] name |
//! | --- | --- | --- |
//! | [`proxy`] | the PROXY v1/v2 header parser, alone and in front of a service | `proxy` |
//! | [`line`] | the `line` service in a connection, any cuts, any reading pace | `line` |
//! | [`frame`] | the `frame` service, the same way | `frame` |
//! | [`admin`] | the admin endpoint's HTTP request handling, the same way | `admin` |
//! | [`http`] | the `http` service in a connection, the same way | `http` |
//! | [`http_head`] | the HTTP request head parser, on every prefix | `http_head` |
//! | [`chunked`] | the chunked body decoder, in any cuts | `chunked` |
//! | [`udp`] | the UDP services behind their guard, datagrams from any source | `udp` |
//! | `x509` | the client certificate's subject reader (`tls` feature) | `x509` |
//! | [`fault_spec`] | the `--fault` spec parser (also `POST /faults`'s query) | `fault_spec` |

use std::path::{Path, PathBuf};

mod conversation;
mod datagram;
mod http;
mod input;
mod stream;

pub use datagram::udp;
pub use http::{chunked, http_head};
pub use input::{Input, Rng};
pub use stream::{admin, frame, http, line, proxy, server_reply, SETUP};

/// The `--fault` spec parser (`LISTENER=FAULT[;FAULT…]`), which also reads the query of a
/// run-time `POST /faults`: any bytes (as UTF-8, lossily) give a spec or an error, never a
/// panic; a spec prints as text that parses back to the same spec; and every fault it holds
/// has a value and options within the documented bounds.
pub fn fault_spec(data: &[u8]) {
    use crate::fault::spec::{MAX_BYTES, MAX_DURATION};
    use crate::fault::{FaultSpec, Value};
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = text.parse::<FaultSpec>() else {
        return;
    };
    let printed = spec.to_string();
    let again: FaultSpec = printed
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, spec, "{text:?} printed as {printed:?}");
    for f in &spec.faults {
        assert!(f.ppm <= crate::fault::spec::CERTAIN);
        match f.value {
            Value::Duration(d) => assert!(d <= MAX_DURATION),
            Value::Bytes(b) => assert!(b <= MAX_BYTES),
            Value::Count(_) | Value::None => {}
        }
        for d in [f.after, f.jitter, f.gap] {
            assert!(d <= MAX_DURATION);
        }
        assert!(f.window.is_none_or(|w| w <= MAX_DURATION));
    }
}

/// A fuzz target: the fuzzer's bytes in, a panic if a property is broken.
pub type Target = fn(&[u8]);

/// Every target of this library, by its name in `fuzz/` (its binary, and its directories
/// under `fuzz/corpus/` and `fuzz/artifacts/`).
pub fn targets() -> Vec<(&'static str, Target)> {
    let plain: [(&'static str, Target); 9] = [
        ("proxy", proxy),
        ("line", line),
        ("frame", frame),
        ("admin", admin),
        ("http", http),
        ("http_head", http_head),
        ("chunked", chunked),
        ("udp", udp),
        ("fault_spec", fault_spec),
    ];
    #[cfg(feature = "tls")]
    let tls: [(&'static str, Target); 1] = [("x509", x509)];
    #[cfg(not(feature = "tls"))]
    let tls: [(&'static str, Target); 0] = [];
    plain.into_iter().chain(tls).collect()
}

/// The subject of a client certificate (DER from the network, `tls` feature): any bytes as
/// a certificate, or as the subject of an otherwise well-formed one (the first byte says
/// which), so that the fuzzer reaches the name quickly. No input panics, and a subject
/// comes out with every control character escaped: it goes into log lines and labels.
#[cfg(feature = "tls")]
pub fn x509(data: &[u8]) {
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        match contents.len() {
            n if n < 0x80 => v.push(n as u8),
            n if n < 0x100 => v.extend([0x81, n as u8]),
            n => v.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend(contents);
        v
    }
    let mut input = input::Input::new(data);
    let mode = input.byte() % 3;
    let rest = input.rest();
    let der = if mode == 0 {
        rest.to_vec()
    } else {
        let name = if mode == 1 {
            rest.to_vec()
        } else {
            tlv(0x30, rest)
        };
        let algorithm = tlv(
            0x30,
            &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
        );
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            algorithm.clone(),
            tlv(0x30, &[]),
            tlv(0x30, &[]),
            name,
        ]
        .concat();
        tlv(
            0x30,
            &[tlv(0x30, &tbs), algorithm, tlv(0x03, &[0])].concat(),
        )
    };
    if let Some(subject) = crate::tls::x509::subject(&der) {
        assert!(
            !subject.chars().any(char::is_control),
            "a control character in the subject {subject:?}"
        );
    }
}

/// The files of a directory, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Runs every input of each target's committed corpus (`corpus/NAME/` under `fuzz_dir`)
/// and every crash the fuzzer ever found (`artifacts/NAME/`) through the target, as a
/// stable `cargo test` does; returns the inputs that fail. A target without a seed corpus
/// fails too.
pub fn replay(fuzz_dir: &Path, targets: &[(&str, Target)]) -> Vec<String> {
    let mut failed = Vec::new();
    for &(name, target) in targets {
        let seeds = files(&fuzz_dir.join("corpus").join(name));
        if seeds.is_empty() {
            failed.push(format!("{name}: no seed corpus"));
        }
        let crashes = files(&fuzz_dir.join("artifacts").join(name));
        for path in seeds.iter().chain(&crashes) {
            let ran = std::fs::read(path).map(|data| std::panic::catch_unwind(|| target(&data)));
            if !matches!(ran, Ok(Ok(()))) {
                failed.push(path.display().to_string());
            }
        }
    }
    failed
}

/// The targets that are not a `[[bin]]` of the fuzz crate in `fuzz_dir`, which `cargo fuzz`
/// would therefore not run.
pub fn not_built(fuzz_dir: &Path, targets: &[(&'static str, Target)]) -> Vec<&'static str> {
    let manifest = std::fs::read_to_string(fuzz_dir.join("Cargo.toml")).unwrap_or_default();
    targets
        .iter()
        .map(|&(name, _)| name)
        .filter(|name| !manifest.contains(&format!("name = \"{name}\"")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// Every input of every target's committed corpus, and every crash the fuzzer ever
    /// found (`fuzz/artifacts/`), passes its target on a stable build.
    #[test]
    fn corpus_and_crashes_replay() {
        let failed = replay(&fuzz_dir(), &targets());
        assert!(failed.is_empty(), "fuzz inputs that fail: {failed:#?}");
    }

    /// Every target here is a binary of the fuzz crate, so `cargo fuzz` runs it.
    #[test]
    fn targets_are_fuzz_binaries() {
        assert_eq!(not_built(&fuzz_dir(), &targets()), Vec::<&str>::new());
    }
}
