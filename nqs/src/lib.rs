//! The network quality service's analysis core, sans-IO: packets in (with
//! their capture time as `now`), stream and call records out.
//!
//! Status: being written under the Foundation issue.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod emodel;
pub mod histogram;
pub mod jitter_buffer;
pub mod stream;
