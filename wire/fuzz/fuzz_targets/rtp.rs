#![no_main]
//! cargo-fuzz target for the rtp parser; the harness is `wire::fuzz::rtp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzz::rtp(data));
