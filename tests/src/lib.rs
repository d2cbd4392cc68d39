//! Cross-crate integration tests live in `tests/tests/`. This library holds
//! their shared helpers: where the fixtures are, and how to run the
//! `voxplane` binary.
#![deny(missing_docs)]

use std::path::PathBuf;

/// The shared fixtures directory (`../shared/fixtures` beside the checkout),
/// or `VOXPLANE_FIXTURES` when set. Returns `None` when it does not exist;
/// tests then skip with a message, unless `VOXPLANE_REQUIRE_FIXTURES` is set
/// (CI sets it) in which case they fail.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("VOXPLANE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    if dir.is_dir() {
        Some(dir)
    } else if std::env::var_os("VOXPLANE_REQUIRE_FIXTURES").is_some() {
        panic!(
            "fixtures not found at {} and VOXPLANE_REQUIRE_FIXTURES is set",
            dir.display()
        );
    } else {
        eprintln!("SKIP: fixtures not found at {}", dir.display());
        None
    }
}
