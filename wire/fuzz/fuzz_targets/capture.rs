#![no_main]
//! cargo-fuzz target for the capture parser; the harness is `wire::fuzz::capture`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzz::capture(data));
