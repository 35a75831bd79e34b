#![no_main]
//! Fuzzes the http service in a connection. The properties checked are in `loopd::fuzzing::http`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::http(data));
