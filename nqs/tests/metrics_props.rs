//! Property tests: no packet sequence makes the stream statistics panic,
//! and the loss equations hold for any input.

use nqs::emodel::Codec;
use nqs::stream::{PayloadKind, RemoteReport, RtpPacketInfo, StreamStats};
use proptest::prelude::*;
use wire::types::{ClockRate, PayloadType, Ssrc, Timestamp};

fn kind(k: u8, rate: u32) -> PayloadKind {
    match k % 5 {
        0 | 1 => PayloadKind::Audio(ClockRate(rate)),
        2 => PayloadKind::TelephoneEvent(ClockRate(rate)),
        3 => PayloadKind::ComfortNoise(ClockRate(rate)),
        _ => PayloadKind::Unknown,
    }
}

fn packet() -> impl Strategy<Value = (RtpPacketInfo, PayloadKind)> {
    (
        any::<u64>(),
        any::<u16>(),
        any::<u32>(),
        any::<u8>(),
        any::<bool>(),
        any::<u16>(),
        any::<u8>(),
        prop_oneof![Just(0u32), Just(8000), Just(48000), any::<u32>()],
    )
        .prop_map(|(t, seq, ts, pt, marker, len, k, rate)| {
            (
                RtpPacketInfo {
                    arrival: Timestamp(t),
                    seq,
                    timestamp: ts,
                    ssrc: Ssrc(1),
                    payload_type: PayloadType(pt),
                    marker,
                    payload_len: len,
                },
                kind(k, rate),
            )
        })
}

/// A mostly well-formed stream: 20 ms packets with random loss, duplicates,
/// reordering, jumps and timing noise.
fn realistic() -> impl Strategy<Value = Vec<(u16, u32, u64)>> {
    (
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec((0u8..20, 0u64..200_000_000), 1..400),
    )
        .prop_map(|(seq0, ts0, steps)| {
            let mut seq = seq0;
            let mut out = Vec::new();
            for (i, (op, noise)) in steps.into_iter().enumerate() {
                let step = match op {
                    0 => 2,                    // one lost
                    1 => 0,                    // duplicate
                    2 => 5000,                 // large jump
                    3 => 0u16.wrapping_sub(3), // back 3 (late)
                    _ => 1,
                };
                seq = seq.wrapping_add(step);
                let ts = ts0.wrapping_add(u32::from(seq.wrapping_sub(seq0)) * 160);
                let t = 1_700_000_000_000_000_000 + i as u64 * 20_000_000 + noise;
                out.push((seq, ts, t));
            }
            out
        })
}

proptest! {
    #[test]
    fn arbitrary_packets_never_panic(pkts in prop::collection::vec(packet(), 0..300)) {
        let mut s = StreamStats::new();
        for (p, k) in &pkts {
            s.handle_packet(p, *k);
            let _ = s.poll_interval();
            s.handle_rtcp_report(p.arrival, RemoteReport { jitter: p.timestamp, ..RemoteReport::default() });
        }
        if let Some(t) = s.poll_timeout() {
            s.handle_timeout(t);
        }
        let r = s.report(Codec::G711Plc);
        prop_assert_eq!(r.packets, pkts.len() as u64);
        prop_assert!(r.mos.is_finite() && (1.0..=4.5).contains(&r.mos));
        prop_assert!(r.rfc_jitter_ts.is_finite() || pkts.is_empty());
        prop_assert!(serde_json::to_string(&r).is_ok());
    }

    #[test]
    fn loss_equations_hold(stream in realistic()) {
        let mut s = StreamStats::new();
        let mut samples = Vec::new();
        for &(seq, ts, t) in &stream {
            let p = RtpPacketInfo {
                arrival: Timestamp(t),
                seq,
                timestamp: ts,
                ssrc: Ssrc(9),
                payload_type: PayloadType::PCMA,
                marker: false,
                payload_len: 160,
            };
            s.handle_packet(&p, PayloadKind::Audio(ClockRate(8000)));
            samples.extend(s.poll_interval());
        }
        let r = s.report(Codec::G711Plc);
        // RFC 3550: lost = expected - received, with duplicates counted.
        prop_assert_eq!(r.rfc_lost, r.rfc_expected as i64 - r.rfc_received as i64);
        // A.1 ignores only the unconfirmed large jumps.
        prop_assert!(r.rfc_received <= r.packets);
        prop_assert!(r.packets - r.rfc_received <= r.seq_jumps);
        prop_assert!(r.duplicates + r.late <= r.rfc_received);
        // Jitter-buffer discards only add to the loss.
        prop_assert!(r.loss_f2_pct <= r.loss_f1_pct + 1e-9);
        prop_assert!(r.loss_f1_pct + 1e-9 >= r.loss_pct);
        prop_assert!(r.discards_f1 + r.discards_f2 + r.discards_adapt <= 3 * r.packets);
        prop_assert!(r.burst_r > 0.0 && r.burst_r.is_finite());
        // Interval samples never count more packets than the stream.
        let in_samples: u64 = samples.iter().map(|x| x.packets).sum();
        prop_assert!(in_samples <= r.packets);
        for w in samples.windows(2) {
            prop_assert!(w[0].index < w[1].index);
        }
    }
}
