//! Helpers shared by the tests of every crate (a dev-dependency only).
//!
//! The policy for material a test needs but the repository does not hold:
//! the shared fixtures (`../shared/fixtures` beside the checkout) and
//! external tools (tshark, sipp, …). Locally a test *skips* with a `SKIP:`
//! line when they are missing; in CI (`VOXPLANE_REQUIRE_FIXTURES`,
//! `VOXPLANE_REQUIRE_TOOLS`, set by `scripts/test.sh` under `CI=true`) a
//! missing one is a failure, so a green CI always means the test ran.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod weed;

/// The shared fixtures directory: `$VOXPLANE_FIXTURES` if set, else
/// `../shared/fixtures` beside the workspace. `None` (after printing
/// `SKIP: …`) when it does not exist.
///
/// # Panics
///
/// When the directory is missing and `VOXPLANE_REQUIRE_FIXTURES` is set.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("VOXPLANE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures"
            ))
        });
    if dir.is_dir() {
        Some(dir)
    } else if std::env::var_os("VOXPLANE_REQUIRE_FIXTURES").is_some() {
        panic!(
            "fixtures directory {} is missing and VOXPLANE_REQUIRE_FIXTURES is set",
            dir.display()
        );
    } else {
        println!("SKIP: fixtures directory {} is missing", dir.display());
        None
    }
}

/// Whether the external program `name` is on `PATH`. Prints `SKIP: …`
/// and returns false when it is not.
///
/// # Panics
///
/// When the program is missing and `VOXPLANE_REQUIRE_TOOLS` is set.
pub fn tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    if found {
        true
    } else if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() {
        panic!("{name} is not installed and VOXPLANE_REQUIRE_TOOLS is set");
    } else {
        println!("SKIP: {name} is not installed");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_that_exists_and_not_one_that_does_not() {
        assert!(tool("sh"));
        if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none() {
            assert!(!tool("voxplane-no-such-program"));
        }
    }
}
