#![no_main]
//! Fuzzes the chunked body decoder. The properties checked are in `loopd::fuzzing::chunked`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::chunked(data));
