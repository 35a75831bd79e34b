#![no_main]
//! Fuzzes the `line` service in a connection: any bytes, any cuts, any reading pace. The properties checked are in `loopd::fuzzing::line`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::line(data));
