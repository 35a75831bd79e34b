#![no_main]
//! Fuzzes loopd-bench's HTTP response parser (`--protocol http`). The properties checked are in `loopd_bench::fuzzing::http_response`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd_bench::fuzzing::http_response(data));
