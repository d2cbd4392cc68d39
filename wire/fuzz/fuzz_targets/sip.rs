#![no_main]
//! cargo-fuzz target for the sip parser; the harness is `wire::fuzz::sip`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzz::sip(data));
