//! The replication bus: a durable local store (typed tables, watch/subscribe)
//! and mutual-TLS peer links that stream each member's change log to every
//! peer, queueing while a link is down and flushing when it returns.
//!
//! Status: built under the SBUS issue.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
