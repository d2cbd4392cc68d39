//! The SIP control plane: transports, sans-IO transactions (RFC 3261 §17)
//! and dialogs under a tokio driver, and a B2BUA that anchors every call's
//! media on the dataplane through its control API.
//!
//! ```text
//!  UDP / TCP / TLS ──driver──> B2bua::handle_datagram(now, peer, bytes)
//!                                ├─ security::Guard (rate limit, scanners, RFC 4475 checks)
//!                                ├─ Transactions (RFC 3261 §17 + RFC 6026), timers A–M
//!                                ├─ registrar + auth (REGISTER, digest), dialplan (routing)
//!                                ├─ calls: A dialog (UAS) ⇄ B dialog (UAC, parallel forks)
//!                                └─ dataplane::relay::Control: offer / answer / delete
//!  driver <── poll_transmit / poll_event (CDRs via cdr) / poll_timeout
//! ```
//!
//! The cores ([`transaction`], [`b2bua`], [`msg`]) and the policy modules
//! ([`auth`], [`registrar`], [`security`], [`dialplan`], [`provision`]'s
//! snapshot, [`cdr`]'s recorder) never read the clock or touch a socket;
//! [`driver`] owns both.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod b2bua;
pub mod cdr;
pub mod dialplan;
pub mod driver;
pub mod msg;
pub mod policy;
pub mod provision;
pub mod registrar;
pub mod response;
pub mod security;
mod stream;
pub mod transaction;
pub mod transport;

/// A real instant as the origin of virtual time in tests (time then only moves by
/// adding durations to it).
#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "tests need one origin instant")]
pub(crate) fn test_origin() -> std::time::Instant {
    std::time::Instant::now()
}
