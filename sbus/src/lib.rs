//! The replication bus: a durable local store (typed tables, watch/subscribe) whose
//! changes every cluster member replicates to every other, queueing while a link is down
//! and flushing when it returns.
//!
//! Layers, bottom up:
//! - [`types`]: identities, the hybrid logical clock, change-log entries, version vectors.
//! - [`storage`]: the [`storage::Storage`] seam (rows, log, CDRs, blob staging, marks in
//!   one transaction) with [`storage::MemStorage`] for simulation and
//!   [`sqlite::SqliteStorage`] for real.
//! - [`msg`]: the messages between members and their binary encoding.
//! - [`replica`]: the sans-IO replication core ([`replica::Replica`]): no clock, no
//!   socket, `now` passed in.
//! - [`placement`]: data sovereignty (the domain of a change, and who may hold it).
//! - [`record`]: typed tables (domains, subscribers, dialplans, routing rules, trunks,
//!   CDRs) over the core.
//! - [`store`]: the in-process API other crates use ([`store::Store`]): typed reads and
//!   writes acknowledged after a group commit, and change subscriptions for hot reload.
//! - [`net`] and [`cert`]: the tokio driver (mutual-TLS links, control socket) and the
//!   cluster certificate helpers.
//!
//! See `docs/sbus.md` for the design, the limits and what happens at them.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cert;
pub mod msg;
pub mod net;
pub mod placement;
pub mod record;
pub mod replica;
pub mod sqlite;
pub mod storage;
pub mod store;
pub mod types;
