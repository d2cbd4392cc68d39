//! Differential test against a local tshark, when one is installed:
//! seeded synthetic RTP streams (sequence and timestamp wrap, loss, jumps,
//! duplicates, reordering, marker bits, comfort noise, RFC 4733 events,
//! arrival noise) are written as a classic pcap, analysed by
//! `tshark -o rtp.heuristic_rtp:TRUE -z rtp,streams` and by `StreamStats`
//! from the same packet list, and the printed figures must agree.
//!
//! Prints SKIP when `tshark` cannot be run (it is not part of the build).

use std::process::Command;

use nqs::emodel::Codec;
use nqs::stream::{PayloadKind, RtpPacketInfo, StreamStats};
use wire::types::{ClockRate, PayloadType, Ssrc, Timestamp};

const SSRC: u32 = 0xABCD_EF01;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Pkt {
    arrival_us: u64,
    seq: u16,
    ts: u32,
    pt: u8,
    marker: bool,
}

#[derive(Clone, Copy)]
enum Mode {
    Plain,
    ComfortNoise,
    Events,
}

fn scenario(seed: u64, mode: Mode) -> Vec<Pkt> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut seq: u16 = 65_500;
    let mut ts: u32 = 0xFFFF_0000;
    let t0: u64 = 1_000_000_000_000;
    let mut out = Vec::new();
    for i in 0..500u64 {
        let mut pt = 8;
        let mut pkt_ts = ts;
        match mode {
            Mode::ComfortNoise if (100..110).contains(&i) || (300..303).contains(&i) => pt = 13,
            Mode::Events if (200..206).contains(&i) => {
                pt = 101;
                pkt_ts = 0xFFFF_0000u32.wrapping_add(200 * 160);
            }
            _ => {}
        }
        let marker = rng.unit() < 0.03;
        if rng.unit() < 0.02 {
            seq = seq.wrapping_add(2 + (rng.next() % 3) as u16);
        }
        let arrival_us = t0 + i * 20_000 + (rng.unit() * 30_000.0) as u64;
        out.push(Pkt {
            arrival_us,
            seq,
            ts: pkt_ts,
            pt,
            marker,
        });
        if rng.unit() < 0.02 {
            out.push(Pkt {
                arrival_us: arrival_us + 1_000,
                seq,
                ts: pkt_ts,
                pt,
                marker,
            });
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
    }
    out.sort_by_key(|p| p.arrival_us);
    out
}

fn write_pcap(path: &std::path::Path, pkts: &[Pkt]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65_535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for p in pkts {
        let mut rtp = vec![0x80, (u8::from(p.marker) << 7) | p.pt];
        rtp.extend_from_slice(&p.seq.to_be_bytes());
        rtp.extend_from_slice(&p.ts.to_be_bytes());
        rtp.extend_from_slice(&SSRC.to_be_bytes());
        rtp.extend_from_slice(&[0xd5; 160]);
        let udp_len = (8 + rtp.len()) as u16;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(20 + udp_len).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
        frame.extend_from_slice(&40_000u16.to_be_bytes());
        frame.extend_from_slice(&50_000u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        f.extend_from_slice(&((p.arrival_us / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((p.arrival_us % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&frame);
    }
    std::fs::write(path, f).expect("write pcap");
}

/// (pkts, lost, max delta, mean jitter, max jitter) from tshark's line.
fn tshark(path: &std::path::Path) -> Option<(f64, f64, f64, f64, f64)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-o", "rtp.heuristic_rtp:TRUE", "-q", "-z", "rtp,streams"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("0xABCDEF01"))?;
    let mut t: Vec<&str> = line.split_whitespace().collect();
    if t.last() == Some(&"X") {
        t.pop();
    }
    let n = t.len();
    let f = |i: usize| t[n - i].parse::<f64>().ok();
    Some((f(9)?, f(8)?, f(4)?, f(2)?, f(1)?))
}

#[test]
fn agrees_with_local_tshark() {
    if !testkit::tool("tshark") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("nqs-tshark-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    let mut runs = 0;
    for seed in 1..=4u64 {
        for (name, mode) in [
            ("plain", Mode::Plain),
            ("cn", Mode::ComfortNoise),
            ("events", Mode::Events),
        ] {
            let pkts = scenario(seed, mode);
            let path = dir.join(format!("{name}{seed}.pcap"));
            write_pcap(&path, &pkts);
            let Some(want) = tshark(&path) else {
                failures.push(format!("{name}{seed}: no tshark line"));
                continue;
            };
            let mut s = StreamStats::new();
            for p in &pkts {
                let kind = match p.pt {
                    13 => PayloadKind::ComfortNoise(ClockRate(8000)),
                    101 => PayloadKind::TelephoneEvent(ClockRate(8000)),
                    _ => PayloadKind::Audio(ClockRate(8000)),
                };
                s.handle_packet(
                    &RtpPacketInfo {
                        arrival: Timestamp(p.arrival_us * 1000),
                        seq: p.seq,
                        timestamp: p.ts,
                        ssrc: Ssrc(SSRC),
                        payload_type: PayloadType(p.pt),
                        marker: p.marker,
                        payload_len: 160,
                    },
                    kind,
                );
            }
            let r = s.report(Codec::G711Plc);
            let got = (
                r.packets as f64,
                r.ws_lost as f64,
                r.ws_max_delta_ms,
                r.ws_mean_jitter_ms,
                r.ws_max_jitter_ms,
            );
            let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol;
            if !(close(got.0, want.0, 0.0)
                && close(got.1, want.1, 0.0)
                && close(got.2, want.2, 0.001)
                && close(got.3, want.3, 0.001)
                && close(got.4, want.4, 0.001))
            {
                failures.push(format!("{name}{seed}: ours {got:?} tshark {want:?}"));
            }
            runs += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(runs, 12);
}
