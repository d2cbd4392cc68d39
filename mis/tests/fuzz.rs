//! Fuzz-style test (seeded, deterministic): mutated ingest bytes thrown at
//! the frame splitter, the parsers and the recorder core. Nothing may
//! panic, and every media datagram must be counted exactly once (accepted
//! or dropped for one cause).

use mis::proto::{
    Codec, Control, Direction, FrameView, Leg, LegId, MediaRepr, Policy, Role, SessionId,
    SessionStart, SessionUpdate, UpdateKind,
};
use mis::recorder::{Recorder, RecorderConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wire::{PayloadType, Timestamp};

fn seeds() -> Vec<Vec<u8>> {
    let codecs = vec![
        Codec {
            pt: PayloadType::PCMA,
            name: "PCMA".into(),
            clock_rate: 8000,
        },
        Codec {
            pt: PayloadType(101),
            name: "telephone-event".into(),
            clock_rate: 8000,
        },
    ];
    let msgs = [
        Control::Start(SessionStart {
            session: SessionId(1),
            call_id: "a@b".into(),
            domain: "d".into(),
            from: "1".into(),
            to: "2".into(),
            start_time: Timestamp(5),
            policy: Policy::BOTH,
            legs: vec![
                Leg {
                    role: Role::Caller,
                    codecs: codecs.clone(),
                },
                Leg {
                    role: Role::Callee,
                    codecs: codecs.clone(),
                },
            ],
        }),
        Control::Update(SessionUpdate {
            session: SessionId(1),
            time: Timestamp(6),
            kind: UpdateKind::Codecs {
                leg: LegId(1),
                codecs,
            },
        }),
        Control::Update(SessionUpdate {
            session: SessionId(1),
            time: Timestamp(6),
            kind: UpdateKind::Hold {
                leg: LegId(0),
                on: true,
            },
        }),
        Control::Stop {
            session: SessionId(1),
            time: Timestamp(7),
        },
    ];
    msgs.iter()
        .map(|m| {
            let mut v = Vec::new();
            m.emit(&mut v).unwrap();
            v
        })
        .collect()
}

fn media(rng: &mut SmallRng) -> Vec<u8> {
    let mut rtp = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    rtp[1] = *[0u8, 8, 101, 13, 96].get(rng.gen_range(0..5)).unwrap_or(&8);
    rtp[2..4].copy_from_slice(&rng.gen_range(0u16..40).to_be_bytes());
    rtp[4..8].copy_from_slice(&(rng.gen_range(0u32..40) * 160).to_be_bytes());
    let n = rng.gen_range(0..200);
    rtp.extend((0..n).map(|_| rng.r#gen::<u8>()));
    let mut out = Vec::new();
    MediaRepr {
        session: SessionId(rng.gen_range(0..3)),
        leg: LegId(rng.gen_range(0..3)),
        direction: if rng.r#gen() {
            Direction::FromParty
        } else {
            Direction::ToPeer
        },
        capture_time: Timestamp(rng.gen_range(0..10_000_000_000)),
    }
    .emit(&rtp, &mut out);
    out
}

fn mutate(rng: &mut SmallRng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.gen_range(0..4) {
        if b.is_empty() {
            break;
        }
        let i = rng.gen_range(0..b.len());
        match rng.gen_range(0..4) {
            0 => b[i] ^= 1 << rng.gen_range(0..8),
            1 => b[i] = rng.r#gen(),
            2 => b.truncate(i),
            _ => b.insert(i, rng.r#gen()),
        }
    }
    b
}

#[test]
fn mutated_ingest_never_panics_and_is_always_counted() {
    let seeds = seeds();
    let mut rng = SmallRng::seed_from_u64(0x5EED);
    let mut rec = Recorder::new(RecorderConfig {
        idle_timeout_ns: 3_000_000_000,
    });
    let mut datagrams = 0u64;
    let mut now = 0u64;
    for _ in 0..100_000 {
        now += rng.gen_range(0..5_000_000);
        match rng.gen_range(0..10) {
            0..=1 => {
                let pick = seeds[rng.gen_range(0..seeds.len())].clone();
                let f = mutate(&mut rng, pick);
                if let Ok(Some((frame, _))) = FrameView::split(&f)
                    && let Ok(Some(msg)) = Control::parse(&frame)
                {
                    let _ = rec.handle_control(Timestamp(now), &msg);
                }
            }
            2 => {
                rec.handle_timeout(Timestamp(now));
            }
            _ => {
                let d = media(&mut rng);
                let d = if rng.gen_bool(0.3) {
                    mutate(&mut rng, d)
                } else {
                    d
                };
                datagrams += 1;
                let _ = rec.handle_media(Timestamp(now), &d);
            }
        }
        while let Some(r) = rec.poll_recording() {
            let _ = (r.stereo(), r.mono());
        }
    }
    let s = rec.stats();
    assert_eq!(
        s.media + s.malformed + s.unknown_session + s.after_stop + s.unknown_leg,
        datagrams
    );
    assert!(s.media > 1000 && s.stopped + s.timed_out > 10, "{s:?}");
}
