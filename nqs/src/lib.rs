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
//!
//! The live NQS service (capture sources, sinks, HTTP API) will drive the
//! same [`analyzer::Analyzer`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod analyzer;
pub mod api;
pub mod emodel;
pub mod histogram;
pub mod jitter_buffer;
pub mod live;
pub mod pcap_spool;
pub mod render;
pub mod service;
pub mod sink;
pub mod stream;
