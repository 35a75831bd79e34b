#![no_main]
//! Fuzzes loopd-bench `--per-backend`: the answer to `SERVER`. The properties checked are in `loopd_bench::fuzzing::server_answer`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd_bench::fuzzing::server_answer(data));
