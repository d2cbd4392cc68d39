//! Load generators and benchmark reports. Each benchmark prints the figures
//! that `docs/benchmarks.md` records, beside a peer measured in the same run.
//!
//! - [`synth`]: a seeded generator of SIP + RTP call captures with ground
//!   truth, for analyser tests and benchmarks.
//! - [`harness`]: timing and peak-memory measurement of external commands,
//!   and the markdown report of `bench-analyze`.
//! - [`relaygen`]: the relay load generator's core (synthetic G.711 calls
//!   with send timestamps; loss and latency of what comes back).
//! - [`sip`]: `voxplane bench sip` — sipp campaigns through a SIP target
//!   (Voxplane's B2BUA, Kamailio): rate search, response times, memory per
//!   held dialog.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod harness;
pub mod relaygen;
pub mod sip;
pub mod synth;
