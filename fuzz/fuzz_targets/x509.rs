#![no_main]
//! Fuzzes the subject of a client certificate (DER), for logs and labels. The properties checked are in `loopd::fuzzing::x509`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::x509(data));
