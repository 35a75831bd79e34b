#![no_main]
//! Fuzzes the HTTP request head parser. The properties checked are in `loopd::fuzzing::http_head`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::http_head(data));
