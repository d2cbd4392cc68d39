#![no_main]
//! cargo-fuzz target for the bencode parser; the harness is `wire::fuzz::bencode`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzz::bencode(data));
