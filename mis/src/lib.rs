//! The media recorder: RTP copies in (UDP 5400), metadata in (TCP 1040),
//! stereo and mixed mono WAV files out to a local directory, an index and
//! a search API.
//!
//! Modules:
//!
//! | module | what | I/O |
//! |---|---|---|
//! | [`proto`] | the versioned ingest protocol (frames, media header), re-exported from `wire::mis` | none |
//! | [`recorder`] | sessions, per-leg reorder, SSRC runs, DTMF, rendering | none (`now` passed in) |
//! | [`journal`] | journal record format, torn-tail detection | none |
//! | [`wav`] | WAV bytes | none |
//! | [`index`] | recording metadata and search | none |
//! | [`offload`] | S3 upload retry queue (backoff) | none |
//! | [`retention`] | which local recordings to delete (age, total size, uploaded first) | none |
//! | [`server`] | tokio driver: sockets, journal files, atomic writes | yes |
//! | [`api`] | the HTTP API: search, download, share links, metrics; token scopes | yes |
//!
//! Driving the core (what [`server`] does, minus the files):
//!
//! ```no_run
//! use mis::recorder::{Recorder, RecorderConfig};
//! use wire::Timestamp;
//! # fn recv() -> (Timestamp, Vec<u8>) { unimplemented!() }
//! let mut rec = Recorder::new(RecorderConfig::default());
//! loop {
//!     let (now, datagram) = recv();
//!     // journal the datagram first, then:
//!     let _ = rec.handle_media(now, &datagram);
//!     if rec.poll_timeout().is_some_and(|t| t <= now) {
//!         rec.handle_timeout(now);
//!     }
//!     while let Some(done) = rec.poll_recording() {
//!         let _stereo = mis::wav::to_bytes(&done.stereo(), 2);
//!     }
//! }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod index;
pub mod journal;
pub mod offload;
/// The ingest protocol; it lives in `wire` so a sender (the dataplane's
/// mirror sink) shares the one implementation.
pub use wire::mis as proto;
pub mod recorder;
pub mod retention;
pub mod server;
pub mod wav;
