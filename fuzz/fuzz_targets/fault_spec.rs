#![no_main]
//! Fuzzes the `--fault` spec parser (also the query of `POST /faults`). The properties checked are in `loopd::fuzzing::fault_spec`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::fault_spec(data));
