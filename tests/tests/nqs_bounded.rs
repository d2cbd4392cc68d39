//! NQS memory stays bounded over a long capture: 600 synthetic calls, 20 at
//! a time, through the live pipeline with per-call pcaps. Finished calls
//! are freed after their late window and their slots reused, so the
//! analyser holds about the open calls plus those of the last 10 s, every
//! call still gets its rows and its own pcap, and the tables end empty.

use std::sync::Arc;

use bench::synth::{Codec, DtmfConfig, Synth, SynthConfig};
use nqs::api::Metrics;
use nqs::live::LiveConfig;
use nqs::pcap_spool::{PcapSpool, PcapSpoolConfig};
use nqs::service::Pipeline;
use wire::capture::{Decoder, Frame, LinkType};

#[test]
fn long_capture_holds_only_recent_calls() {
    let config = SynthConfig {
        seed: 6,
        calls: 600,
        concurrent: 20,
        duration_ms: (1_000, 2_000),
        ring_ms: (100, 300),
        codecs: vec![(Codec::Pcmu, 1), (Codec::Pcma, 1)],
        dtmf: DtmfConfig {
            call_share: 0.0,
            ..DtmfConfig::default()
        },
        ipv6_share: 0.1,
        ..SynthConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = PcapSpool::new(PcapSpoolConfig {
        dir: dir.path().to_path_buf(),
        rtp_header_only: true,
        max_age: None,
        max_bytes: None,
    })
    .unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut pipeline = Pipeline::new(LiveConfig::default(), Some(spool), metrics);
    let mut synth = Synth::new(&config).unwrap();
    let mut decoder = Decoder::new();
    let (mut calls, mut pcaps, mut streams) = (Vec::new(), 0, 0);
    let (mut peak_calls, mut peak_streams, mut last) = (0, 0, wire::Timestamp(0));
    for frame in synth.by_ref() {
        last = frame.timestamp;
        let frame = Frame {
            ts: frame.timestamp,
            link: LinkType::ETHERNET,
            data: &frame.data,
            orig_len: frame.data.len() as u32,
        };
        if let Some(packet) = decoder.decode(&frame) {
            pipeline.handle_packet(&packet);
        }
        let t = pipeline.live().analyzer().table_sizes();
        peak_calls = peak_calls.max(t.call_slots);
        peak_streams = peak_streams.max(t.stream_slots);
        let batch = pipeline.take_batch();
        calls.extend(batch.calls.into_iter().map(|c| c.call_id));
        pcaps += batch.pcaps.len();
        streams += batch.streams.len();
    }
    // Past the last BYE's linger and the late window.
    for s in [5, 20] {
        pipeline.handle_timeout(wire::Timestamp(last.0 + s * 1_000_000_000));
    }
    let batch = pipeline.take_batch();
    calls.extend(batch.calls.into_iter().map(|c| c.call_id));
    pcaps += batch.pcaps.len();
    streams += batch.streams.len();

    let truth = synth.into_truth();
    let mut expected: Vec<String> = truth.calls.iter().map(|c| c.call_id.clone()).collect();
    expected.sort();
    calls.sort();
    assert_eq!(calls, expected, "every call finished exactly once");
    assert_eq!(pcaps, 600, "each call its own pcap, slots reused or not");
    assert_eq!(streams, 1200);
    // 20 open + about 7 finishing per second held for 10 s: far below the
    // 600 a table that never frees would reach.
    assert!(peak_calls <= 150, "call slots peaked at {peak_calls}");
    assert!(peak_streams <= 300, "stream slots peaked at {peak_streams}");
    let end = pipeline.live().analyzer().table_sizes();
    assert_eq!(
        (end.calls, end.streams, end.index_entries),
        (0, 0, 0),
        "{end:?}"
    );
}
