//! The whole offline pipeline (file reader → decoder → SIP/SDP correlation →
//! stream metrics) against Wireshark's reference numbers for every capture
//! in the fixtures (`pcaps/tshark/*.rtp_streams.txt`,
//! `quality/vectors/*.tshark_rtp_streams.txt`,
//! `audio/rtp/*.tshark_rtp_streams.txt`).
//!
//! Tolerances are those of `quality/NOTES.md` §2: packets and lost exact,
//! max delta ±0.001 ms, max/mean jitter ±0.01 ms. tshark prints three
//! decimals, so ±0.0015 covers its rounding for max delta.
//!
//! Streams are matched on (src, dst, SSRC). tshark's SDP-mode table lists
//! only RTP that signalling announced, so each of its rows must be one of our
//! *correlated* streams (with a Call-ID); our extra streams must be orphans
//! (found by the RTP heuristic), and each of those must appear in tshark's
//! heuristic-mode table when the file has one.

use std::path::Path;

use nqs::analyzer::{Report, StreamSummary};
use tests::{TsharkStream, analyze_file, fixtures, parse_tshark_streams};

/// Files whose RTP is announced by SDP: compare with the first (SDP-mode)
/// table of the reference output.
const SDP_FILES: &[&str] = &[
    "pcaps/derived_multicall_4calls.pcap",
    "pcaps/pkts_sip_rtp.pcap",
    "pcaps/sipnab_audiocodes_rtp-cn.pcap",
    "pcaps/sipnab_b2bua-asterisk.pcapng",
    "pcaps/sipnab_codec-reinvite.pcap",
    "pcaps/ws_Asterisk_ZFONE_XLITE.pcap",
    "pcaps/ws_SIP_CALL_RTP_G711.pcap",
    "pcaps/ws_SIP_DTMF2.pcap",
    "pcaps/ws_aaa.pcap",
    "pcaps/ws_sip-rtp-g711.pcap",
    "pcaps/ws_sip-rtp-g729a.pcap",
    "quality/vectors/v1_clean.pcap",
    "quality/vectors/v2_alternating_5ms.pcap",
    "quality/vectors/v3_step_40ms.pcap",
    "audio/rtp/harvard_pcmu.pcap",
    "audio/rtp/harvard_pcma.pcap",
];

/// Files with no RTP at all: nothing may be reported as a stream.
const NO_RTP_FILES: &[&str] = &[
    "pcaps/ws_DTMFsipinfo.pcap",
    "pcaps/protos_c07-sip-r2.pcap",
    "pcaps/sipnab_sipp-branch-1334calls.pcapng",
];

fn reference_path(fx: &Path, file: &str) -> std::path::PathBuf {
    let name = Path::new(file).file_name().unwrap().to_str().unwrap();
    if file.starts_with("pcaps/") {
        fx.join(format!("pcaps/tshark/{name}.rtp_streams.txt"))
    } else {
        fx.join(format!("{file}.tshark_rtp_streams.txt"))
    }
}

fn find<'r>(report: &'r Report, r: &TsharkStream) -> Option<&'r StreamSummary> {
    report.streams.iter().find(|s| {
        s.src == r.src.to_string()
            && s.dst == r.dst.to_string()
            && s.ssrc == format!("0x{:08X}", r.ssrc)
    })
}

fn check_file(fx: &Path, file: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let (report, error) = analyze_file(&fx.join(file));
    if let Some(e) = error {
        failures.push(format!("{file}: read error {e}"));
    }
    let text = std::fs::read_to_string(reference_path(fx, file)).expect("reference output");
    let sdp_rows = parse_tshark_streams(&text, 0);
    let heuristic_rows = parse_tshark_streams(&text, 1);
    assert!(!sdp_rows.is_empty(), "{file}: no reference rows parsed");
    for r in &sdp_rows {
        let Some(s) = find(&report, r) else {
            failures.push(format!(
                "{file}: tshark stream {} -> {} 0x{:08X} not found",
                r.src, r.dst, r.ssrc
            ));
            continue;
        };
        let m = &s.metrics;
        let id = format!("{file} {} -> {} {}", s.src, s.dst, s.ssrc);
        if s.call_id.is_none() {
            failures.push(format!("{id}: announced by SDP in tshark, orphan here"));
        }
        if m.packets != r.packets {
            failures.push(format!(
                "{id}: packets {} vs tshark {}",
                m.packets, r.packets
            ));
        }
        if m.ws_lost != r.lost {
            failures.push(format!("{id}: lost {} vs tshark {}", m.ws_lost, r.lost));
        }
        // RFC 3550 lost equals Wireshark's on every fixture stream: none ends
        // on a reordered packet or restarts its sequence.
        if s.lost != r.lost {
            failures.push(format!(
                "{id}: RFC 3550 lost {} vs tshark {}",
                s.lost, r.lost
            ));
        }
        let close = |ours: f64, theirs: f64, tol: f64| (ours - theirs).abs() <= tol;
        if !close(s.max_delta_ms, r.max_delta_ms, 0.0015) {
            failures.push(format!(
                "{id}: max delta {:.4} vs tshark {:.3}",
                s.max_delta_ms, r.max_delta_ms
            ));
        }
        if !close(s.max_jitter_ms, r.max_jitter_ms, 0.01) {
            failures.push(format!(
                "{id}: max jitter {:.4} vs tshark {:.3}",
                s.max_jitter_ms, r.max_jitter_ms
            ));
        }
        if !close(s.mean_jitter_ms, r.mean_jitter_ms, 0.01) {
            failures.push(format!(
                "{id}: mean jitter {:.4} vs tshark {:.3}",
                s.mean_jitter_ms, r.mean_jitter_ms
            ));
        }
        if s.payload != r.payload {
            failures.push(format!(
                "{id}: payload {:?} vs tshark {:?}",
                s.payload, r.payload
            ));
        }
    }
    for s in &report.streams {
        let known = sdp_rows
            .iter()
            .any(|r| find(&report, r).is_some_and(|f| f.id == s.id));
        if known {
            continue;
        }
        if s.call_id.is_some() {
            failures.push(format!(
                "{file}: stream {} -> {} {} correlated but not in tshark",
                s.src, s.dst, s.ssrc
            ));
        }
        let in_heuristic = heuristic_rows
            .iter()
            .any(|r| find(&report, r).is_some_and(|f| f.id == s.id));
        if !heuristic_rows.is_empty() && !in_heuristic {
            failures.push(format!(
                "{file}: orphan {} -> {} {} not in tshark's heuristic table",
                s.src, s.dst, s.ssrc
            ));
        }
    }
    failures
}

#[test]
fn every_stream_matches_wireshark() {
    let Some(fx) = fixtures() else { return };
    let mut failures = Vec::new();
    for file in SDP_FILES {
        failures.extend(check_file(&fx, file));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn captures_without_rtp_report_no_streams() {
    let Some(fx) = fixtures() else { return };
    for file in NO_RTP_FILES {
        let (report, error) = analyze_file(&fx.join(file));
        assert!(error.is_none(), "{file}: {error:?}");
        assert!(
            report.streams.is_empty(),
            "{file}: {:?}",
            report.streams.iter().map(|s| &s.src).collect::<Vec<_>>()
        );
        assert!(!report.calls.is_empty(), "{file}: SIP calls expected");
    }
}

#[test]
fn sip_load_capture_has_every_call() {
    let Some(fx) = fixtures() else { return };
    let (report, _) = analyze_file(&fx.join("pcaps/sipnab_sipp-branch-1334calls.pcapng"));
    // SOURCES.md: 8989 SIP messages, 1334 Call-IDs.
    assert_eq!(report.calls.len(), 1334);
    assert_eq!(report.counters.sip_messages, 8989);
    assert_eq!(report.counters.sip_malformed, 0);
}

#[test]
fn rfc3550_vectors_are_exact() {
    let Some(fx) = fixtures() else { return };
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fx.join("quality/vectors/expected_rfc3550.json")).unwrap(),
    )
    .unwrap();
    for v in expected.as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let (report, _) = analyze_file(&fx.join(format!("quality/vectors/{name}.pcap")));
        assert_eq!(report.streams.len(), 1, "{name}");
        let s = &report.streams[0];
        assert!(s.call_id.is_some(), "{name}: correlated through SDP");
        assert_eq!(s.packets, v["received"].as_u64().unwrap(), "{name}");
        assert_eq!(s.expected, v["expected"].as_u64().unwrap(), "{name}");
        assert_eq!(s.lost, v["lost"].as_i64().unwrap(), "{name}");
        let j = v["final_jitter_ts"].as_f64().unwrap();
        assert!(
            (s.metrics.rfc_jitter_ts - j).abs() < 1e-3,
            "{name}: {} vs {j}",
            s.metrics.rfc_jitter_ts
        );
        let jm = v["final_jitter_ms"].as_f64().unwrap();
        assert!(
            (s.jitter_ms - jm).abs() < 1e-3,
            "{name}: {} vs {jm}",
            s.jitter_ms
        );
    }
}

#[test]
fn calls_know_their_parties_and_codecs() {
    let Some(fx) = fixtures() else { return };
    let (report, _) = analyze_file(&fx.join("pcaps/sipnab_codec-reinvite.pcap"));
    let call = report
        .calls
        .iter()
        .find(|c| !c.streams.is_empty())
        .expect("a call with media");
    assert_eq!(call.method, "INVITE");
    assert_eq!(call.final_status, Some(200));
    assert!(
        call.sdp_updates >= 1,
        "the re-INVITE to G.722 is an SDP update"
    );
    let streams: Vec<&StreamSummary> = call
        .streams
        .iter()
        .map(|&i| {
            report
                .streams
                .iter()
                .find(|s| s.id == i)
                .expect("listed stream")
        })
        .collect();
    let payloads: Vec<&str> = streams.iter().map(|s| s.payload.as_str()).collect();
    assert!(
        payloads.contains(&"g722") && payloads.contains(&"g711U"),
        "{payloads:?}"
    );
    assert!(streams.iter().all(|s| s.direction.is_some()));
    // The re-INVITE switched codec and SSRC on the same 5-tuple.
    assert!(
        streams.iter().all(|s| s.ssrc_changes >= 1),
        "{:?}",
        streams.iter().map(|s| s.ssrc_changes).collect::<Vec<_>>()
    );
    let (report, _) = analyze_file(&fx.join("pcaps/ws_SIP_DTMF2.pcap"));
    assert!(report.streams.iter().all(|s| s.ssrc_changes == 0));
}
