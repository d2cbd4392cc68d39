#![no_main]
//! cargo-fuzz target for the rtcp parser; the harness is `wire::fuzz::rtcp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzz::rtcp(data));
