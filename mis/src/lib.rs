//! The media recorder: RTP copies in (mirror rings, UDP 5400), metadata in
//! (TCP 1040), WAV files out to a local directory or S3, and a search API.
//!
//! Status: built under the MIS issue. The WAV rendering rules used by
//! `voxplane analyze --wav-dir` today live in `nqs::render` and move here.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
