//! The network quality service's analysis core, sans-IO: packets in (with
//! their capture time as `now`), stream and call records out.
//!
//!
//! | module | what |
//! |---|---|
//! | [`analyzer`] | packets → calls (SIP/SDP correlation) and streams |
//! | [`stream`] | per-stream RFC 3550 and Wireshark-compatible loss/jitter, intervals |
//! | [`emodel`] | ITU-T G.107 E-model: R-factor and MOS, per-codec constants |
//! | [`jitter_buffer`] | effective loss behind fixed and adaptive jitter buffers |
//! | [`histogram`] | loss-run and delay-variation histograms |
//! | [`render`] | G.711 streams to linear PCM for WAV files |
//! | [`live`] | call lifecycle (BYE, media timeout), interval and SIP rows; sans-IO |
//!
//! The live service's parts (drivers: they do I/O but never read the clock,
//! which is passed in) are described in `docs/nqs.md`:
//!
//! | module | what |
//! |---|---|
//! | [`capture`] | `AF_PACKET` TPACKET_V3 promiscuous capture, fanout by flow |
//! | [`source`] | the dataplane's in-process mirror rings as a source |
//! | [`service`] | the pipeline: live analyser + per-call pcaps → row batches |
//! | [`pcap_spool`] | per-call pcaps with retention |
//! | [`sink`] | SQLite and ClickHouse sinks, batching, back-pressure, disk spool |
//! | [`api`] | the HTTP API (axum) with scoped tokens, and the web UI |
//! | [`offload`] | S3 offload of pcaps (retry queue, uploader) |
#![deny(missing_docs)]
// `unsafe` only in the capture backend (`capture::sys`), which opts in.
#![deny(unsafe_code)]

pub mod analyzer;
pub mod api;
pub mod capture;
pub mod emodel;
pub mod histogram;
pub mod jitter_buffer;
pub mod live;
pub mod offload;
pub mod pcap_spool;
pub mod render;
pub mod service;
pub mod sink;
pub mod source;
pub mod stream;
