#![no_main]
//! Fuzzes loopd-bench's verification of every reply: stream, datagram, chargen. The properties checked are in `loopd_bench::fuzzing::replies`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd_bench::fuzzing::replies(data));
