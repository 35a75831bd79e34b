#![no_main]
//! Fuzzes the PROXY protocol v1/v2 header parser, alone and in front of a service. The properties checked are in `loopd::fuzzing::proxy`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::proxy(data));
