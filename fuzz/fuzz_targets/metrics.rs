#![no_main]
//! Fuzzes loopd-bench `--server-metrics`: the HTTP response and the Prometheus page. The properties checked are in `loopd_bench::fuzzing::metrics`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd_bench::fuzzing::metrics(data));
