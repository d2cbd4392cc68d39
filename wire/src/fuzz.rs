//! Fuzz harnesses: one function per parser, each must never panic on any
//! input. Used by `wire/fuzz` (cargo-fuzz) and by the stable smoke tests.
