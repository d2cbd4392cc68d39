//! The SIP control plane: transports, sans-IO transactions (RFC 3261 §17) and
//! dialogs under a tokio driver, registrar, B2BUA, dialplans and CDRs. Drives
//! the dataplane through its control API.
//!
//! The policy modules are sans-IO libraries a B2BUA calls with `now` and parsed
//! [`wire::sip`] messages: [`auth`] (digest), [`registrar`] (REGISTER and location),
//! [`security`] (rate limits, scanners, RFC 4475 semantic checks), [`dialplan`]
//! (routing rules), [`provision`] (typed store access and hot reload) and [`cdr`]
//! (call detail records).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod cdr;
pub mod dialplan;
pub mod provision;
pub mod registrar;
pub mod response;
pub mod security;

/// A real instant as the origin of virtual time in tests (time then only moves by
/// adding durations to it).
#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "tests need one origin instant")]
pub(crate) fn test_origin() -> std::time::Instant {
    std::time::Instant::now()
}
