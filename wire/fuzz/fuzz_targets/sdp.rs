#![no_main]
//! cargo-fuzz target for the sdp parser; the harness is `wire::fuzz::sdp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzz::sdp(data));
