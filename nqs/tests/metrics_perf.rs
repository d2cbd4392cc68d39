//! Throughput of `StreamStats::handle_packet`, for a manual check:
//! `cargo test -p nqs --release --test metrics_perf -- --ignored --nocapture`.
//! Ignored by default: timings on a shared machine are not a pass/fail
//! criterion; the bench crate tracks them.

use std::hint::black_box;
use std::time::Instant;

use nqs::emodel::Codec;
use nqs::stream::{PayloadKind, RtpPacketInfo, StreamStats};
use wire::types::{ClockRate, PayloadType, Ssrc, Timestamp};

#[test]
#[ignore = "manual timing, run in release"]
#[expect(
    clippy::disallowed_methods,
    reason = "a timing test reads the clock; the core does not"
)]
fn handle_packet_ns_per_packet() {
    const N: u32 = 5_000_000;
    let mut s = StreamStats::new();
    let kind = PayloadKind::Audio(ClockRate(8000));
    let start = Instant::now();
    for i in 0..N {
        // 1 % loss, a little arrival noise.
        if i % 100 == 7 {
            continue;
        }
        let p = RtpPacketInfo {
            arrival: Timestamp(
                1_700_000_000_000_000_000 + u64::from(i) * 20_000_000 + u64::from(i % 7) * 300_000,
            ),
            seq: i as u16,
            timestamp: i.wrapping_mul(160),
            ssrc: Ssrc(1),
            payload_type: PayloadType::PCMA,
            marker: false,
            payload_len: 160,
        };
        s.handle_packet(black_box(&p), kind);
        black_box(s.poll_interval());
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
    let r = s.report(Codec::G711Plc);
    println!(
        "handle_packet: {ns:.1} ns/packet (lost {} of {})",
        r.rfc_lost, r.rfc_expected
    );
    assert_eq!(r.rfc_lost, i64::from(N / 100));
}
