#![no_main]
//! cargo-fuzz target for the HEP3 decoder; the harness is `wire::fuzz::hep`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzz::hep(data));
