#![no_main]
//! Fuzzes the admin endpoint's HTTP request handling in a connection. The properties checked are in `loopd::fuzzing::admin`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::admin(data));
