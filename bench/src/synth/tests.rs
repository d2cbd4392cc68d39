//! Tests of the synthesizer against its own ground truth, re-reading the
//! capture with `pcap-file` and an independent frame decoder, and against
//! tshark when it is installed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use pcap_file::pcap::PcapReader;

use super::*;

/// A small capture: 6 calls, 3 at a time, 2–4 s of talk.
fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        calls: 6,
        concurrent: 3,
        duration_ms: (2_000, 4_000),
        ring_ms: (100, 300),
        rtcp_interval_ms: 1_000,
        ipv6_share: 0.3,
        ..SynthConfig::default()
    }
}

fn to_bytes(cfg: &SynthConfig) -> (Vec<u8>, GroundTruth) {
    let mut buf = Vec::new();
    let truth = write_pcap(cfg, &mut buf).unwrap();
    (buf, truth)
}

/// FNV-1a, 64 bits: an independent, stable hash of the capture bytes.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One's-complement sum over 16-bit words, folded; written independently
/// of the frame builder in `wire::capture`.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u64 = 0;
    for w in bytes.chunks(2) {
        sum += (u64::from(w[0]) << 8) | u64::from(w[1]);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A decoded UDP datagram from a frame, with all checksums verified.
struct Datagram {
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
    ipv6: bool,
}

/// Decodes Ethernet → IPv4/IPv6 → UDP, asserting every length and checksum.
fn decode(frame: &[u8]) -> Datagram {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    let (src_ip, dst_ip, udp, pseudo, ipv6): (IpAddr, IpAddr, &[u8], Vec<u8>, bool) =
        match ethertype {
            0x0800 => {
                assert_eq!(ip[0], 0x45, "IPv4 without options");
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                assert_eq!(total, ip.len(), "IPv4 total length");
                assert_eq!(ip[9], 17, "protocol UDP");
                assert_eq!(ones_sum(&[&ip[..20]]), 0xffff, "IPv4 header checksum");
                let s: [u8; 4] = ip[12..16].try_into().unwrap();
                let d: [u8; 4] = ip[16..20].try_into().unwrap();
                let udp = &ip[20..];
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s);
                pseudo.extend_from_slice(&d);
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
                (s.into(), d.into(), udp, pseudo, false)
            }
            0x86dd => {
                assert_eq!(ip[0] >> 4, 6, "IPv6 version");
                let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                assert_eq!(plen + 40, ip.len(), "IPv6 payload length");
                assert_eq!(ip[6], 17, "next header UDP");
                assert_eq!(ip[7], 64, "hop limit");
                let s: [u8; 16] = ip[8..24].try_into().unwrap();
                let d: [u8; 16] = ip[24..40].try_into().unwrap();
                let udp = &ip[40..];
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s);
                pseudo.extend_from_slice(&d);
                pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
                (s.into(), d.into(), udp, pseudo, true)
            }
            other => panic!("unexpected ethertype {other:#x}"),
        };
    assert_eq!(
        usize::from(u16::from_be_bytes([udp[4], udp[5]])),
        udp.len(),
        "UDP length"
    );
    assert_ne!(&udp[6..8], &[0, 0], "UDP checksum present");
    assert_eq!(ones_sum(&[&pseudo, udp]), 0xffff, "UDP checksum");
    Datagram {
        src: SocketAddr::new(src_ip, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddr::new(dst_ip, u16::from_be_bytes([udp[2], udp[3]])),
        payload: udp[8..].to_vec(),
        ipv6,
    }
}

/// Per-(src, dst, SSRC) counts recovered from the capture.
#[derive(Default, Debug)]
struct Seen {
    packets: u64,
    pt: Option<u8>,
    events: u64,
    end_events: u64,
    /// Packets whose 16-bit sequence number is below the previous maximum
    /// (unwrapped by hand); duplicates counted separately.
    seqs: Vec<u16>,
    /// (marker, RTP timestamp) of each audio packet, in arrival order.
    audio: Vec<(bool, u32)>,
}

struct Read {
    rtp: HashMap<(SocketAddr, SocketAddr, u32), Seen>,
    sip: u64,
    rtcp: u64,
    rtcp_rr: u64,
    frames: u64,
    ipv6_frames: u64,
}

fn read_back(bytes: &[u8], truth: &GroundTruth) -> Read {
    let media: HashMap<(SocketAddr, SocketAddr), usize> = truth
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.src, s.dst), i))
        .collect();
    let mut reader = PcapReader::new(bytes).unwrap();
    let header = reader.header();
    assert_eq!(header.datalink, pcap_file::DataLink::ETHERNET);
    assert_eq!(header.ts_resolution, pcap_file::TsResolution::MicroSecond);
    let mut out = Read {
        rtp: HashMap::new(),
        sip: 0,
        rtcp: 0,
        rtcp_rr: 0,
        frames: 0,
        ipv6_frames: 0,
    };
    let mut last_ts = Duration::ZERO;
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap();
        assert!(pkt.timestamp >= last_ts, "frames in arrival order");
        last_ts = pkt.timestamp;
        out.frames += 1;
        let d = decode(&pkt.data);
        out.ipv6_frames += u64::from(d.ipv6);
        if d.src.port() == 5060 && d.dst.port() == 5060 {
            assert!(d.payload.starts_with(b"SIP/2.0 ") || d.payload.ends_with(b"\r\n"));
            out.sip += 1;
        } else if media.contains_key(&(d.src, d.dst)) {
            let p = &d.payload;
            assert_eq!(p[0] >> 6, 2, "RTP version");
            let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            let seen = out.rtp.entry((d.src, d.dst, ssrc)).or_default();
            seen.packets += 1;
            let pt = p[1] & 0x7f;
            if pt == TELEPHONE_EVENT_PT.0 {
                seen.events += 1;
                seen.end_events += u64::from(p[13] >> 7);
            } else {
                assert!(seen.pt.is_none_or(|x| x == pt));
                seen.pt = Some(pt);
                let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                seen.audio.push((p[1] >> 7 == 1, ts));
            }
            seen.seqs.push(u16::from_be_bytes([p[2], p[3]]));
        } else {
            let src = SocketAddr::new(d.src.ip(), d.src.port() - 1);
            let dst = SocketAddr::new(d.dst.ip(), d.dst.port() - 1);
            assert!(
                media.contains_key(&(src, dst)),
                "unknown datagram {d:?}",
                d = d.src
            );
            match d.payload[1] {
                200 => {}
                201 => out.rtcp_rr += 1,
                other => panic!("RTCP compound starts with PT {other}"),
            }
            out.rtcp += 1;
        }
    }
    out
}

/// Counts arrivals below the running maximum, unwrapping the 16-bit
/// sequence number against the previous packet (as RFC 3550 A.1 does).
fn count_late(seqs: &[u16]) -> (u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let (mut late, mut dups) = (0, 0);
    let mut ext: i64 = i64::from(seqs[0]);
    let mut max = ext;
    for &s in seqs {
        let delta = i64::from(s.wrapping_sub(ext as u16) as i16);
        ext += delta;
        if !seen.insert(ext) {
            dups += 1;
            continue;
        }
        if ext < max {
            late += 1;
        }
        max = max.max(ext);
    }
    (late, dups)
}

#[test]
fn same_seed_same_bytes() {
    let (a, ta) = to_bytes(&small(7));
    let (b, tb) = to_bytes(&small(7));
    assert_eq!(fnv1a(&a), fnv1a(&b));
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    let (c, _) = to_bytes(&small(8));
    assert_ne!(fnv1a(&a), fnv1a(&c));
}

#[test]
fn capture_matches_ground_truth() {
    let cfg = SynthConfig {
        loss: LossPreset::Bursty,
        dtmf: DtmfConfig {
            call_share: 0.5,
            ..DtmfConfig::default()
        },
        wrap_share: 0.5,
        ..small(11)
    };
    let (bytes, truth) = to_bytes(&cfg);
    let read = read_back(&bytes, &truth);
    assert_eq!(truth.calls.len(), 6);
    assert_eq!(truth.streams.len(), 12);
    assert_eq!(read.frames, truth.frames);
    assert_eq!(read.sip, 7 * 6);
    assert_eq!(read.sip, truth.sip_messages);
    assert_eq!(read.rtcp, truth.rtcp_packets);
    assert!(read.rtcp > 0);
    assert!(truth.max_concurrent_calls <= 3);
    let mut rtp_total = 0;
    let mut lost_total = 0;
    for s in &truth.streams {
        let seen = read
            .rtp
            .get(&(s.src, s.dst, s.ssrc.0))
            .unwrap_or_else(|| panic!("stream {} missing", s.ssrc));
        assert_eq!(seen.packets, s.received, "stream {}", s.ssrc);
        assert_eq!(s.sent, s.received - s.duplicates + s.lost_in_network);
        assert_eq!(seen.pt, Some(s.payload_type.0));
        assert!(seen.events <= s.dtmf_packets);
        let (late, dups) = count_late(&seen.seqs);
        assert_eq!((late, dups), (s.reordered, s.duplicates));
        assert!(s.sent > 50);
        rtp_total += seen.packets;
        lost_total += s.lost_in_network;
    }
    assert_eq!(rtp_total, truth.rtp_packets);
    assert!(lost_total > 0, "bursty legs lose packets");
    assert_eq!(read.rtp.len(), truth.streams.len());
}

#[test]
fn dtmf_end_packets_sent_three_times() {
    let cfg = SynthConfig {
        loss: LossPreset::Clean,
        jitter: JitterModel::NONE,
        dtmf: DtmfConfig {
            call_share: 1.0,
            digits: (2, 4),
            ..DtmfConfig::default()
        },
        ..small(5)
    };
    let (bytes, truth) = to_bytes(&cfg);
    let read = read_back(&bytes, &truth);
    let mut digits = 0;
    for c in &truth.calls {
        let s = &truth.streams[c.streams[0]];
        assert_eq!(s.dtmf_events as usize, c.dtmf_digits.len());
        let seen = &read.rtp[&(s.src, s.dst, s.ssrc.0)];
        assert_eq!(seen.end_events, 3 * u64::from(s.dtmf_events));
        assert_eq!(seen.events, s.dtmf_packets);
        digits += c.dtmf_digits.len();
        // Clean, FIFO path: nothing lost, nothing late.
        assert_eq!(s.apparent_lost(), 0);
        assert_eq!(s.lost_in_network, 0);
        assert_eq!(s.reordered, 0);
    }
    assert!(digits >= 6, "{digits}");
}

#[test]
fn ipv6_calls_are_valid_frames() {
    let cfg = SynthConfig {
        ipv6_share: 1.0,
        calls: 2,
        ..small(3)
    };
    let (bytes, truth) = to_bytes(&cfg);
    let read = read_back(&bytes, &truth);
    assert_eq!(read.ipv6_frames, read.frames);
    for c in &truth.calls {
        assert!(c.ipv6);
        match c.caller.ip() {
            IpAddr::V6(a) => assert_eq!(a.segments()[..2], [0x2001, 0xdb8]),
            IpAddr::V4(_) => panic!("IPv4 in an IPv6 call"),
        }
    }
}

#[test]
fn documentation_ranges_only() {
    let (_, truth) = to_bytes(&small(21));
    for s in &truth.streams {
        for a in [s.src.ip(), s.dst.ip()] {
            let ok = match a {
                IpAddr::V4(v4) => {
                    let o = v4.octets();
                    o[..3] == [192, 0, 2] || (o[0] == 198 && (o[1] & 0xfe) == 18)
                }
                IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0xdb8],
            };
            assert!(ok, "{a}");
        }
        assert_eq!(s.src.port() % 2, 0, "RTP on even ports");
    }
}

#[test]
fn reordering_and_duplicates_are_counted() {
    let cfg = SynthConfig {
        jitter: JitterModel {
            pdv_mean_ms: 15.0,
            duplicate_probability: 0.01,
            ..JitterModel::ROUGH
        },
        ..small(13)
    };
    let (bytes, truth) = to_bytes(&cfg);
    let read = read_back(&bytes, &truth);
    let reordered: u64 = truth.streams.iter().map(|s| s.reordered).sum();
    let dups: u64 = truth.streams.iter().map(|s| s.duplicates).sum();
    assert!(reordered > 10, "{reordered}");
    assert!(dups > 0, "{dups}");
    for s in &truth.streams {
        let seen = &read.rtp[&(s.src, s.dst, s.ssrc.0)];
        assert_eq!(count_late(&seen.seqs), (s.reordered, s.duplicates));
        assert!(s.jitter_ms > 1.0, "jitter {}", s.jitter_ms);
    }
}

/// Silence suppression: gaps without packets, the media clock running on,
/// a marker on each talkspurt's first packet, RRs when a sender was silent
/// for two report intervals, and no loss.
#[test]
fn vad_silences_are_gaps_not_loss() {
    let cfg = SynthConfig {
        vad_share: 1.0,
        loss: LossPreset::Clean,
        jitter: JitterModel::NONE,
        dtmf: DtmfConfig {
            call_share: 0.0,
            ..DtmfConfig::default()
        },
        duration_ms: (8_000, 10_000),
        rtcp_interval_ms: 500,
        ..small(31)
    };
    let (bytes, truth) = to_bytes(&cfg);
    let read = read_back(&bytes, &truth);
    let silences: u32 = truth.streams.iter().map(|s| s.silences).sum();
    let rr: u64 = truth.streams.iter().map(|s| s.rtcp_rr_sent).sum();
    assert!(silences > 12, "{silences}");
    assert!(rr > 0);
    assert_eq!(rr, read.rtcp_rr);
    for s in &truth.streams {
        assert!(s.vad);
        assert_eq!(s.apparent_lost(), 0);
        assert_eq!(s.sent, s.received);
        let seen = &read.rtp[&(s.src, s.dst, s.ssrc.0)];
        let markers = seen.audio.iter().filter(|a| a.0).count() as u32;
        assert!((s.silences..=s.silences + 1).contains(&markers));
        for w in seen.audio.windows(2) {
            let step = w[1].1.wrapping_sub(w[0].1);
            if w[1].0 {
                assert!(step > TICKS_PER_PACKET && step % TICKS_PER_PACKET == 0);
            } else {
                assert_eq!(step, TICKS_PER_PACKET);
            }
        }
    }
}

#[test]
fn sequence_numbers_wrap() {
    let cfg = SynthConfig {
        wrap_share: 1.0,
        loss: LossPreset::Clean,
        ..small(17)
    };
    let (bytes, truth) = to_bytes(&cfg);
    let read = read_back(&bytes, &truth);
    for s in &truth.streams {
        assert!(s.first_seq >= 65_535 - 300);
        let seen = &read.rtp[&(s.src, s.dst, s.ssrc.0)];
        if s.sent > 300 {
            assert!(seen.seqs.iter().any(|&q| q < 1000), "stream wraps");
            assert!(s.max_ext_seq.unwrap() > 65_535);
        }
        assert_eq!(s.apparent_lost(), 0);
    }
}

/// The generator's aggregate loss over many legs is close to the mean of
/// the legs' stationary rates. 40 calls × 2 legs × ~250 packets ≈ 20,000
/// Bernoulli(≈2 %) draws: σ ≈ sqrt(0.02 · 0.98 / 20,000) ≈ 0.001; allow
/// 0.006 (6 σ).
#[test]
fn aggregate_loss_matches_models() {
    let cfg = SynthConfig {
        calls: 40,
        concurrent: 40,
        duration_ms: (5_000, 5_000),
        loss: LossPreset::LOSSY,
        dtmf: DtmfConfig {
            call_share: 0.0,
            ..DtmfConfig::default()
        },
        ..small(99)
    };
    let mut synth = Synth::new(&cfg).unwrap();
    let frames = synth.by_ref().count() as u64;
    let truth = synth.into_truth();
    assert_eq!(frames, truth.frames);
    assert_eq!(truth.max_concurrent_calls, 40);
    let sent: u64 = truth.streams.iter().map(|s| s.sent).sum();
    let lost: u64 = truth.streams.iter().map(|s| s.lost_in_network).sum();
    let expected: f64 = truth
        .streams
        .iter()
        .map(|s| s.sent as f64 * s.loss_model.stationary_loss())
        .sum::<f64>()
        / sent as f64;
    let got = lost as f64 / sent as f64;
    assert!((0.01..=0.03).contains(&expected));
    assert!(
        (got - expected).abs() < 0.006,
        "got {got}, expected {expected}"
    );
}

/// 1,000 simultaneous calls stream through a bounded working set: only the
/// packets in flight. With a mean base delay of 35 ms a stream has about 2
/// packets in flight (more during a spike, up to ≈ 10 for 200 ms); we allow
/// 5 per stream on average, far below the capture's ~200,000 frames.
#[test]
fn thousand_concurrent_calls_stream() {
    let cfg = SynthConfig {
        calls: 1_000,
        concurrent: 1_000,
        duration_ms: (2_000, 2_000),
        ring_ms: (100, 100),
        ..SynthConfig::default()
    };
    let mut synth = Synth::new(&cfg).unwrap();
    let (mut frames, mut peak, mut last) = (0u64, 0, Timestamp(0));
    while let Some(f) = synth.next() {
        assert!(f.timestamp >= last);
        last = f.timestamp;
        frames += 1;
        peak = peak.max(synth.in_flight());
    }
    let truth = synth.into_truth();
    assert_eq!(truth.max_concurrent_calls, 1_000);
    assert_eq!(frames, truth.frames);
    assert!(truth.rtp_packets > 190_000, "{}", truth.rtp_packets);
    assert!(peak < 2_000 * 5, "peak in flight {peak}");
}

#[test]
fn exactly_the_configured_number_of_calls() {
    for (calls, concurrent) in [(1, 1), (6, 4), (7, 3), (10, 10), (10, 20), (25, 4)] {
        let cfg = SynthConfig {
            calls,
            concurrent,
            duration_ms: (500, 3_000),
            ..small(u64::from(calls * 100 + concurrent))
        };
        let (_, truth) = to_bytes(&cfg);
        assert_eq!(
            truth.calls.len(),
            calls as usize,
            "calls {calls}, concurrent {concurrent}"
        );
        assert!(truth.max_concurrent_calls <= concurrent);
    }
}

#[test]
fn zero_calls_give_an_empty_capture() {
    let (bytes, truth) = to_bytes(&SynthConfig {
        calls: 0,
        ..SynthConfig::default()
    });
    assert_eq!(bytes.len(), 24, "pcap global header only");
    assert_eq!(truth, GroundTruth::default());
}

#[test]
fn invalid_configs_rejected() {
    for cfg in [
        SynthConfig {
            concurrent: 0,
            ..SynthConfig::default()
        },
        SynthConfig {
            duration_ms: (5, 1),
            ..SynthConfig::default()
        },
        SynthConfig {
            codecs: vec![],
            ..SynthConfig::default()
        },
        SynthConfig {
            ipv6_share: 1.5,
            ..SynthConfig::default()
        },
        SynthConfig {
            loss: LossPreset::Lossy { min: 0.5, max: 0.1 },
            ..SynthConfig::default()
        },
    ] {
        assert!(matches!(
            Synth::new(&cfg),
            Err(SynthError::InvalidConfig(_))
        ));
    }
}

/// tshark's RTP stream statistics agree with the ground truth on packet
/// and loss counts. Skipped (with a message) when tshark is absent.
#[test]
fn tshark_rtp_streams_agree() {
    if !testkit::tool("tshark") {
        return;
    }
    let tshark = "tshark";
    let cfg = SynthConfig {
        calls: 4,
        concurrent: 2,
        ipv6_share: 0.5,
        wrap_share: 0.5,
        loss: LossPreset::LOSSY,
        jitter: JitterModel::TYPICAL,
        dtmf: DtmfConfig {
            call_share: 1.0,
            ..DtmfConfig::default()
        },
        ..small(23)
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.pcap");
    let truth = write_pcap_file(&cfg, &path).unwrap();
    // The seed is chosen so that the file exercises every feature.
    assert!(truth.calls.iter().any(|c| c.ipv6));
    assert!(truth.calls.iter().any(|c| !c.ipv6));
    assert!(truth.streams.iter().any(|s| s.dtmf_events > 0));
    assert!(truth.streams.iter().any(|s| s.max_ext_seq > Some(65_535)));
    assert!(truth.streams.iter().any(|s| s.lost_in_network > 0));
    let out = Command::new(tshark)
        .args(["-n", "-q", "-z", "rtp,streams", "-r"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = HashMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let Some(pct) = t
            .iter()
            .position(|w| w.starts_with('(') && w.ends_with("%)"))
        else {
            continue;
        };
        let ssrc = u32::from_str_radix(t[6].trim_start_matches("0x"), 16).unwrap();
        let packets: u64 = t[pct - 2].parse().unwrap();
        let lost: i64 = t[pct - 1].parse().unwrap();
        rows.insert(ssrc, (t[2].to_string(), packets, lost));
    }
    assert_eq!(rows.len(), truth.streams.len(), "tshark output:\n{text}");
    for s in &truth.streams {
        let (src, packets, lost) = &rows[&s.ssrc.0];
        assert_eq!(src, &s.src.ip().to_string());
        assert_eq!(*packets, s.received, "packets of {}", s.ssrc);
        assert_eq!(*lost, s.apparent_lost(), "lost of {}", s.ssrc);
    }
}
