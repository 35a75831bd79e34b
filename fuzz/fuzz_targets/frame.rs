#![no_main]
//! Fuzzes the `frame` service in a connection: any bytes, any cuts, any reading pace. The properties checked are in `loopd::fuzzing::frame`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::frame(data));
