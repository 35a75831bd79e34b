#![no_main]
//! Fuzzes loopd-bench `merge` of JSON reports. The properties checked are in `loopd_bench::fuzzing::merge_json`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd_bench::fuzzing::merge_json(data));
