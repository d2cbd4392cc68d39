//! Formats on the wire and in files, with no I/O.
//!
//! Every format follows the same shape (see `shared/style.md`): a borrowed,
//! zero-copy *view* whose accessors cannot panic once its length has been
//! checked, and, where a format is built as well as read, an owned *repr*
//! with `parse` and `emit`.
//!
//! | module | format |
//! |---|---|
//! | [`sip`] | SIP messages (RFC 3261), stream framing, multipart bodies |
//! | [`sdp`] | session descriptions (RFC 8866 / 4566) |
//! | [`rtp`] | RTP fixed header and payload (RFC 3550) |
//! | [`rtcp`] | RTCP SR, RR, SDES, BYE (RFC 3550) and XR VoIP metrics (RFC 3611) |
//! | [`dtmf`] | telephone-events (RFC 4733) |
//! | [`g711`] | G.711 µ-law and A-law, bit-exact with ITU-T G.191 |
//! | [`hep`] | HEP3 (Homer encapsulation) decode and encode |
//! | [`mis`] | the MIS recorder ingest protocol: metadata frames (TCP 1040), RTP copy header (UDP 5400) |
//! | [`capture`] | pcap/pcapng frames down to UDP datagrams and TCP streams |
//! | [`bencode`] | bencode, the encoding of rtpengine's ng control protocol |
//!
//! Shared identifiers and units live in [`types`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bencode;
pub mod capture;
pub mod dtmf;
pub mod g711;
pub mod hep;
pub mod mis;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod types;

#[cfg(feature = "fuzzing")]
pub mod fuzz;

pub use types::{ClockRate, PayloadType, SeqNo, Ssrc, Timestamp};
