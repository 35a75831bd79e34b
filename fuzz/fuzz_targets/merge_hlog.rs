#![no_main]
//! Fuzzes loopd-bench `merge` of HdrHistogram interval logs. The properties checked are in `loopd_bench::fuzzing::merge_hlog`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd_bench::fuzzing::merge_hlog(data));
