//! Recorder core throughput and render latency (not a test).
//!
//! `cargo run --release -p mis --example bench_core -- [CALLS] [SECONDS]`
//!
//! Feeds CALLS concurrent two-leg PCMU calls (50 packets/s per leg) for
//! SECONDS of virtual time through journal encoding and the sans-IO
//! recorder on one thread, then stops them all (rendering stereo + mono WAV
//! bytes). Separately times the stop → WAV bytes of a 3-minute call.
#![expect(clippy::disallowed_methods, reason = "a benchmark measures wall time")]

use std::time::Instant;

use mis::journal::{self, RecordKind};
use mis::proto::{
    Codec, Control, Direction, Leg, LegId, MediaRepr, Policy, Role, SessionId, SessionStart,
};
use mis::recorder::{Recorder, RecorderConfig};
use wire::rtp::{RtpPacket, RtpRepr};
use wire::{PayloadType, Ssrc, Timestamp};

fn start(id: u64) -> Control {
    let codecs = vec![Codec {
        pt: PayloadType::PCMU,
        name: "PCMU".into(),
        clock_rate: 8000,
    }];
    Control::Start(SessionStart {
        session: SessionId(id),
        call_id: format!("bench-{id}"),
        domain: "bench.example".into(),
        from: "1".into(),
        to: "2".into(),
        start_time: Timestamp(0),
        policy: Policy::BOTH,
        legs: vec![
            Leg {
                role: Role::Caller,
                codecs: codecs.clone(),
            },
            Leg {
                role: Role::Callee,
                codecs,
            },
        ],
    })
}

fn datagram(id: u64, leg: u8, i: u32, out: &mut Vec<u8>) {
    let repr = RtpRepr {
        payload_type: PayloadType::PCMU,
        sequence_number: i as u16,
        timestamp: i * 160,
        ssrc: Ssrc(id as u32 * 2 + u32::from(leg)),
        payload_len: 160,
        ..RtpRepr::default()
    };
    let mut rtp = [0u8; 172];
    let mut p = RtpPacket::new_unchecked(&mut rtp[..]);
    repr.emit(&mut p).expect("fits");
    p.payload_mut().fill((i % 256) as u8);
    out.clear();
    MediaRepr {
        session: SessionId(id),
        leg: LegId(leg),
        direction: Direction::FromParty,
        capture_time: Timestamp(u64::from(i) * 20_000_000),
    }
    .emit(&rtp, out);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let secs: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);

    // Throughput.
    let mut rec = Recorder::new(RecorderConfig::default());
    for id in 0..calls {
        rec.handle_control(Timestamp(0), &start(id)).expect("start");
    }
    let mut d = Vec::with_capacity(256);
    let mut journal_buf = Vec::with_capacity(1 << 20);
    let t = Instant::now();
    let mut packets = 0u64;
    for i in 0..secs * 50 {
        let now = Timestamp(u64::from(i) * 20_000_000);
        for id in 0..calls {
            for leg in 0..2 {
                datagram(id, leg, i, &mut d);
                journal::encode(RecordKind::Media, now, &d, &mut journal_buf);
                rec.handle_media(now, &d).expect("media");
                packets += 1;
            }
        }
        journal_buf.clear();
    }
    let ingest = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for id in 0..calls {
        rec.handle_control(
            Timestamp(1),
            &Control::Stop {
                session: SessionId(id),
                time: Timestamp(1),
            },
        )
        .expect("stop");
        let r = rec.poll_recording().expect("rendered");
        std::hint::black_box((
            mis::wav::to_bytes(&r.stereo(), 2),
            mis::wav::to_bytes(&r.mono(), 1),
        ));
    }
    let render_all = t.elapsed().as_secs_f64();
    let pps = packets as f64 / ingest;

    // Stop → WAV bytes of a 3-minute call, 20 times.
    let mut ms = Vec::new();
    for n in 0..20u64 {
        let mut rec = Recorder::new(RecorderConfig::default());
        rec.handle_control(Timestamp(0), &start(n)).expect("start");
        for i in 0..180 * 50 {
            for leg in 0..2 {
                datagram(n, leg, i, &mut d);
                rec.handle_media(Timestamp(0), &d).expect("media");
            }
        }
        let t = Instant::now();
        rec.handle_control(
            Timestamp(1),
            &Control::Stop {
                session: SessionId(n),
                time: Timestamp(1),
            },
        )
        .expect("stop");
        let r = rec.poll_recording().expect("rendered");
        std::hint::black_box((
            mis::wav::to_bytes(&r.stereo(), 2),
            mis::wav::to_bytes(&r.mono(), 1),
        ));
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{{\"calls\": {calls}, \"seconds\": {secs}, \"packets\": {packets}, \"ingest_pps\": {pps:.0}, \
         \"calls_per_core\": {:.0}, \"render_all_s\": {render_all:.3}, \
         \"render_3min_ms_p50\": {:.2}, \"render_3min_ms_p99\": {:.2}}}",
        pps / 100.0,
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}
