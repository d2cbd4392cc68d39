//! The RTP relay: media sessions with two legs, latching, mirroring, and the
//! packet I/O backends (`afxdp`, `uring`, `udp`, `sim`) that execute the relay
//! core's decisions.
//!
//! Status: the crate exists so the workspace has its final shape; the relay
//! core and backends are built under the Dataplane issue. Nothing here is
//! exported yet, on purpose: no placeholder API for others to depend on.
#![deny(missing_docs)]
// Unsafe code lives only in `afxdp::sys` (the AF_XDP backend's edge).
#![cfg_attr(not(feature = "afxdp"), forbid(unsafe_code))]
#![cfg_attr(feature = "afxdp", deny(unsafe_code))]

#[cfg(feature = "afxdp")]
pub mod afxdp;
