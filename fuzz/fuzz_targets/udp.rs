#![no_main]
//! Fuzzes the UDP services behind their guard: datagrams from any source. The properties checked are in `loopd::fuzzing::udp`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loopd::fuzzing::udp(data));
