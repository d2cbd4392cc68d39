//! The fixture captures' RTP, mirrored through the ingest protocol into the
//! recorder core, renders bit-exact with the reference renders.

use std::path::Path;

use mis::proto::{
    Codec, Control, Direction, Leg, LegId, MediaRepr, Policy, Role, SessionId, SessionStart,
};
use mis::recorder::{Recorder, RecorderConfig};
use testkit::fixtures;
use wire::capture::{Decoder, FileReader, Transport};
use wire::{PayloadType, Timestamp};

/// Every G.711 RTP datagram of a capture as `(capture time, rtp bytes)`.
fn rtp_of(path: &Path) -> Vec<(Timestamp, Vec<u8>)> {
    let mut reader = FileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame() {
        let frame = frame.unwrap();
        let Some(pkt) = decoder.decode(&frame) else {
            continue;
        };
        if pkt.transport != Transport::Udp {
            continue;
        }
        let Ok(rtp) = wire::rtp::RtpPacket::new_checked(pkt.payload) else {
            continue;
        };
        if rtp.payload_type() == PayloadType::PCMU || rtp.payload_type() == PayloadType::PCMA {
            out.push((pkt.ts, pkt.payload.to_vec()));
        }
    }
    out
}

fn samples(path: &Path) -> (u16, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!((spec.sample_rate, spec.bits_per_sample), (8000, 16));
    (
        spec.channels,
        r.samples::<i16>().map(Result::unwrap).collect(),
    )
}

fn start(pt: PayloadType, name: &str) -> SessionStart {
    let codecs = vec![Codec {
        pt,
        name: name.into(),
        clock_rate: 8000,
    }];
    SessionStart {
        session: SessionId(42),
        call_id: "fixture".into(),
        domain: "example.com".into(),
        from: "1001".into(),
        to: "2002".into(),
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
    }
}

#[test]
fn fixture_legs_render_bit_exact() {
    let Some(fx) = fixtures() else { return };
    for (name, pt, codec) in [
        ("harvard_pcmu", PayloadType::PCMU, "PCMU"),
        ("harvard_pcma", PayloadType::PCMA, "PCMA"),
    ] {
        let packets = rtp_of(&fx.join(format!("audio/rtp/{name}.pcap")));
        assert!(packets.len() > 600, "{name}: {} packets", packets.len());
        let (channels, expected) =
            samples(&fx.join(format!("audio/rtp/{name}.expected_render_s16.wav")));
        assert_eq!(channels, 1);
        // The capture's one stream as the caller leg, and again as the
        // callee leg, in two sessions.
        for leg in [0u8, 1] {
            let mut rec = Recorder::new(RecorderConfig::default());
            let now = packets[0].0;
            rec.handle_control(now, &Control::Start(start(pt, codec)))
                .unwrap();
            for (ts, rtp) in &packets {
                let mut d = Vec::new();
                MediaRepr {
                    session: SessionId(42),
                    leg: LegId(leg),
                    direction: Direction::FromParty,
                    capture_time: *ts,
                }
                .emit(rtp, &mut d);
                rec.handle_media(*ts, &d).unwrap();
            }
            let end = packets.last().unwrap().0;
            rec.handle_control(
                end,
                &Control::Stop {
                    session: SessionId(42),
                    time: end,
                },
            )
            .unwrap();
            let done = rec.poll_recording().unwrap();
            let pcm = &done.legs[usize::from(leg)];
            assert_eq!(pcm.len(), expected.len(), "{name}: sample count");
            assert!(*pcm == expected, "{name}: leg {leg} samples differ");
            let stereo = done.stereo();
            let channel: Vec<i16> = stereo
                .iter()
                .skip(usize::from(leg))
                .step_by(2)
                .copied()
                .collect();
            assert!(channel == expected, "{name}: stereo channel {leg} differs");
            assert!(
                stereo
                    .iter()
                    .skip(1 - usize::from(leg))
                    .step_by(2)
                    .all(|&s| s == 0)
            );
            assert!(done.mono() == expected, "{name}: mono differs");
            // And through the WAV encoder.
            let bytes = mis::wav::to_bytes(&stereo, 2);
            let mut r = hound::WavReader::new(&bytes[..]).unwrap();
            assert_eq!(r.spec().channels, 2);
            assert_eq!(r.samples::<i16>().count(), 2 * expected.len());
        }
    }
}
