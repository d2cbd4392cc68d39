//! The SIP control plane: transports, sans-IO transactions (RFC 3261 §17) and
//! dialogs under a tokio driver, registrar, B2BUA, dialplans and CDRs. Drives
//! the dataplane through its control API.
//!
//! Status: built under the SIP core issue; it will parse with
//! [`wire::sip`] and describe media with [`wire::sdp`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]
