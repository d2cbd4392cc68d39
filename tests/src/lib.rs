//! Cross-crate integration tests live in `tests/tests/`. This library holds
//! their shared helpers: where the fixtures are, and how to run the
//! `voxplane` binary.
#![deny(missing_docs)]

pub mod netns;

pub use testkit::fixtures;

use std::net::SocketAddr;
use std::path::Path;

/// Runs the whole offline pipeline (file reader → decoder → analyser) on a
/// capture and returns the analyser's report and how reading ended.
pub fn analyze_file(path: &Path) -> (nqs::analyzer::Report, Option<String>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = wire::capture::FileReader::new(std::io::BufReader::new(file))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = wire::capture::Decoder::new();
    let mut analyzer = nqs::analyzer::Analyzer::new(nqs::analyzer::AnalyzerConfig::default());
    let mut error = None;
    loop {
        match reader.next_frame() {
            None => break,
            Some(Ok(frame)) => {
                if let Some(packet) = decoder.decode(&frame) {
                    let _ = analyzer.handle_packet(&packet);
                    while analyzer.poll_event().is_some() {}
                }
            }
            Some(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    (analyzer.report(), error)
}

/// One row of `tshark -q -z rtp,streams`.
#[derive(Clone, Debug, PartialEq)]
pub struct TsharkStream {
    /// Source.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// SSRC.
    pub ssrc: u32,
    /// Payload column, e.g. `g711A, telephone-event`.
    pub payload: String,
    /// Packets.
    pub packets: u64,
    /// Lost (may be negative).
    pub lost: i64,
    /// Max delta, ms.
    pub max_delta_ms: f64,
    /// Mean jitter, ms.
    pub mean_jitter_ms: f64,
    /// Max jitter, ms.
    pub max_jitter_ms: f64,
    /// The "Problems?" flag.
    pub problem: bool,
}

/// Parses the first `RTP Streams` table of a `tshark -q -z rtp,streams`
/// output (the SDP-driven run, when the file holds both runs).
pub fn parse_tshark_streams(text: &str, section: usize) -> Vec<TsharkStream> {
    let mut out = Vec::new();
    let mut current = 0usize;
    let mut inside = false;
    for line in text.lines() {
        if line.contains("RTP Streams") {
            current += 1;
            inside = current == section + 1;
            continue;
        }
        if !inside || line.trim().is_empty() || line.trim_start().starts_with("Start time") {
            continue;
        }
        if line.starts_with("====") {
            inside = false;
            continue;
        }
        let tok: Vec<&str> = line.split_whitespace().collect();
        if tok.len() < 16 {
            continue;
        }
        let problem = *tok.last().unwrap_or(&"") == "X";
        let end = if problem { tok.len() - 1 } else { tok.len() };
        // From the right: 6 delta/jitter figures, "(x%)", lost, pkts.
        let f = |i: usize| tok[end - i].parse::<f64>().unwrap_or(f64::NAN);
        let max_jitter_ms = f(1);
        let mean_jitter_ms = f(2);
        let max_delta_ms = f(4);
        let lost: i64 = tok[end - 8].parse().unwrap_or(i64::MIN);
        let packets: u64 = tok[end - 9].parse().unwrap_or(u64::MAX);
        let payload = tok[7..end - 9].join(" ");
        let addr = |ip: &str, port: &str| format!("{ip}:{port}").parse::<SocketAddr>().ok();
        let (Some(src), Some(dst)) = (addr(tok[2], tok[3]), addr(tok[4], tok[5])) else {
            continue;
        };
        let ssrc = u32::from_str_radix(tok[6].trim_start_matches("0x"), 16).unwrap_or(0);
        out.push(TsharkStream {
            src,
            dst,
            ssrc,
            payload,
            packets,
            lost,
            max_delta_ms,
            mean_jitter_ms,
            max_jitter_ms,
            problem,
        });
    }
    out
}
