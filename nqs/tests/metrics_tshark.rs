//! Accuracy of the stream metrics against tshark 4.0.17 (`-z rtp,streams`)
//! and the exact RFC 3550 vectors, on the shared fixture captures.
//!
//! The captures are decoded by [`oracle`], a tiny **test-only** pcap/pcapng
//! extractor written for these files; it is an oracle for the tests, not
//! the project's decoder.

use std::path::PathBuf;

use nqs::emodel::Codec;
use nqs::stream::{IntervalSample, PayloadKind, RtpPacketInfo, StreamReport, StreamStats};
use testkit::fixtures;
use wire::types::{ClockRate, PayloadType, Ssrc, Timestamp};

/// Runs one stream (selected by src, dst, SSRC) of a capture through
/// `StreamStats`; returns the report and every interval sample (the last
/// one closed by a timeout after the capture).
fn analyse(
    path: &std::path::Path,
    src: &str,
    dst: &str,
    ssrc: u32,
) -> (StreamReport, Vec<IntervalSample>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let udp = oracle::udp_datagrams(&bytes);
    let rtpmap = oracle::rtpmap(&udp);
    let mut stats = StreamStats::new();
    let mut samples = Vec::new();
    for d in &udp {
        if d.src != src || d.dst != dst {
            continue;
        }
        let Some(rtp) = oracle::rtp(&d.payload) else {
            continue;
        };
        if rtp.ssrc != ssrc {
            continue;
        }
        let pt = PayloadType(rtp.pt);
        let kind = match pt.static_info() {
            Some(_) if pt.is_comfort_noise() => PayloadKind::ComfortNoise(ClockRate(8000)),
            Some((_, rate)) => PayloadKind::Audio(rate),
            None => match rtpmap.iter().find(|(p, _, _)| *p == rtp.pt) {
                Some((_, name, rate)) if name.eq_ignore_ascii_case("telephone-event") => {
                    PayloadKind::TelephoneEvent(ClockRate(*rate))
                }
                Some((_, name, rate)) if name.eq_ignore_ascii_case("CN") => {
                    PayloadKind::ComfortNoise(ClockRate(*rate))
                }
                Some((_, _, rate)) => PayloadKind::Audio(ClockRate(*rate)),
                None => PayloadKind::Unknown,
            },
        };
        stats.handle_packet(
            &RtpPacketInfo {
                arrival: Timestamp(d.ts_ns),
                seq: rtp.seq,
                timestamp: rtp.timestamp,
                ssrc: Ssrc(rtp.ssrc),
                payload_type: pt,
                marker: rtp.marker,
                payload_len: rtp.payload_len,
            },
            kind,
        );
        samples.extend(stats.poll_interval());
    }
    if let Some(end) = stats.poll_timeout() {
        stats.handle_timeout(end);
        samples.extend(stats.poll_interval());
    }
    (stats.report(Codec::G711Plc), samples)
}

fn capture_path(fixtures: &std::path::Path, file: &str) -> PathBuf {
    match file.strip_prefix("sipp_") {
        Some(rest) => fixtures.join("sipp").join(rest),
        None => fixtures.join("pcaps").join(file),
    }
}

struct Row {
    file: String,
    src: String,
    dst: String,
    ssrc: u32,
    payload: String,
    pkts: u64,
    lost: i64,
    max_delta: f64,
    max_jitter: f64,
    mean_jitter: f64,
    problem: bool,
}

fn summary_rows(fixtures: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(fixtures.join("pcaps/tshark/SUMMARY_rtp_streams.tsv"))
        .expect("SUMMARY_rtp_streams.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                file: f[0].to_string(),
                src: f[2].to_string(),
                dst: f[3].to_string(),
                ssrc: u32::from_str_radix(f[4].trim_start_matches("0x"), 16).unwrap(),
                payload: f[5].to_string(),
                pkts: f[6].parse().unwrap(),
                lost: f[7].parse().unwrap(),
                max_delta: f[9].parse().unwrap(),
                max_jitter: f[10].parse().unwrap(),
                mean_jitter: f[11].parse().unwrap(),
                problem: f.get(12).is_some_and(|x| x.trim() == "X"),
            }
        })
        .collect()
}

/// Every RTP stream of `SUMMARY_rtp_streams.tsv` whose capture is in the
/// fixtures: packets and lost exact, max delta, max and mean jitter within
/// 0.001 ms (tshark prints 3 decimals, so the bound is its rounding; the
/// suggested tolerance for jitter was 0.01 ms). No stream needs an
/// exception: telephone-event (ws_SIP_DTMF2 0x5711BF84, max 15.767 ms
/// against 0.015 ms for RFC 3550), comfort noise (sipnab_audiocodes) and
/// marker-bit talkspurts follow tshark 4.0's rules exactly.
#[test]
fn matches_tshark_rtp_streams() {
    let Some(fx) = fixtures() else { return };
    let mut compared = 0;
    let mut failures = Vec::new();
    for row in summary_rows(&fx) {
        let path = capture_path(&fx, &row.file);
        if !path.exists() {
            // The SIPp dtmf_2833_* and g711a captures are listed in the
            // summary but not shipped in the fixtures.
            println!("SKIP row: {} not in the fixtures", row.file);
            continue;
        }
        let (r, _) = analyse(&path, &row.src, &row.dst, row.ssrc);
        compared += 1;
        let tag = format!(
            "{} {}→{} 0x{:08X} ({})",
            row.file, row.src, row.dst, row.ssrc, row.payload
        );
        let checks = [
            ("pkts", r.packets as f64, row.pkts as f64, 0.0),
            ("lost", r.ws_lost as f64, row.lost as f64, 0.0),
            ("max_delta", r.ws_max_delta_ms, row.max_delta, 0.001),
            ("max_jitter", r.ws_max_jitter_ms, row.max_jitter, 0.001),
            ("mean_jitter", r.ws_mean_jitter_ms, row.mean_jitter, 0.001),
            // tshark's "Problems" X: here always sequence errors.
            (
                "problem",
                f64::from(u8::from(r.ws_seq_errors > 0)),
                f64::from(u8::from(row.problem)),
                0.0,
            ),
        ];
        for (what, got, want, tol) in checks {
            if (got - want).abs() > tol + 1e-9 {
                failures.push(format!("{tag}: {what} {got:.4} vs tshark {want}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 30, "only {compared} streams compared");
}

/// The RFC 3550 figures against the independent computation
/// (`SUMMARY_rfc3550_independent.tsv`, tools/rfc3550_stats.py): received,
/// expected, lost exact; final jitter within 0.01 ts unit.
#[test]
fn matches_independent_rfc3550() {
    let Some(fx) = fixtures() else { return };
    let text = std::fs::read_to_string(fx.join("pcaps/tshark/SUMMARY_rfc3550_independent.tsv"))
        .expect("SUMMARY_rfc3550_independent.tsv");
    let mut compared = 0;
    let mut failures = Vec::new();
    for l in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split('\t').collect();
        let path = capture_path(&fx, f[0]);
        if !path.exists() {
            println!("SKIP row: {} not in the fixtures", f[0]);
            continue;
        }
        let ssrc = u32::from_str_radix(f[3].trim_start_matches("0x"), 16).unwrap();
        let (r, _) = analyse(&path, f[1], f[2], ssrc);
        compared += 1;
        let want = |i: usize| f[i].parse::<f64>().unwrap();
        let checks = [
            ("received", r.rfc_received as f64, want(4), 0.0),
            ("expected", r.rfc_expected as f64, want(5), 0.0),
            ("lost", r.rfc_lost as f64, want(6), 0.0),
            ("final_jitter_ts", r.rfc_jitter_ts, want(7), 0.01),
            ("final_jitter_ms", r.rfc_jitter_ms, want(8), 0.0015),
        ];
        for (what, got, want, tol) in checks {
            if (got - want).abs() > tol + 1e-9 {
                failures.push(format!(
                    "{} {}→{} {}: {what} {got:.4} vs {want}",
                    f[0], f[1], f[2], f[3]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 25, "only {compared} streams compared");
}

/// `quality/vectors/*.pcap`: the exact RFC 3550 results of
/// `expected_rfc3550.json` (final jitter to 1e-3 timestamp unit) and the
/// tshark figures beside each vector.
#[test]
fn matches_rfc3550_vectors() {
    let Some(fx) = fixtures() else { return };
    let dir = fx.join("quality/vectors");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected_rfc3550.json")).expect("expected_rfc3550.json"),
    )
    .expect("json");
    let vectors = json.as_array().expect("array");
    assert!(vectors.len() >= 3);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let pcap = dir.join(format!("{name}.pcap"));
        let (r, _) = analyse(&pcap, "10.0.0.1:40000", "10.0.0.2:50000", 0x1122_3344);
        let num = |k: &str| v[k].as_f64().unwrap();
        assert_eq!(r.rfc_received as f64, num("received"), "{name}");
        assert_eq!(r.rfc_expected as f64, num("expected"), "{name}");
        assert_eq!(r.rfc_lost as f64, num("lost"), "{name}");
        assert!(
            (r.rfc_jitter_ts - num("final_jitter_ts")).abs() < 1e-3,
            "{name}: {}",
            r.rfc_jitter_ts
        );
        assert!(
            (r.rfc_jitter_ms - num("final_jitter_ms")).abs() < 1e-5,
            "{name}"
        );
        assert!(
            (r.rfc_max_jitter_ms - num("max_jitter_ms")).abs() < 1e-5,
            "{name}"
        );
        // With no exclusions, Wireshark's running mean is the mean of J
        // over the N-1 updates.
        assert!(
            (r.ws_mean_jitter_ms - num("mean_jitter_ms_over_updates")).abs() < 1e-5,
            "{name}: {}",
            r.ws_mean_jitter_ms
        );

        // tshark's own line for this vector.
        let txt = std::fs::read_to_string(dir.join(format!("{name}.pcap.tshark_rtp_streams.txt")))
            .expect("tshark txt");
        let line = txt
            .lines()
            .find(|l| l.contains("0x11223344"))
            .expect("stream line");
        let t: Vec<&str> = line.split_whitespace().collect();
        // ... Pkts Lost (pct) MinΔ MeanΔ MaxΔ MinJ MeanJ MaxJ
        let n = t.len();
        let f = |i: usize| t[n - i].parse::<f64>().unwrap();
        assert_eq!(r.packets as f64, t[n - 9].parse::<f64>().unwrap(), "{name}");
        assert_eq!(r.ws_lost as f64, t[n - 8].parse::<f64>().unwrap(), "{name}");
        assert!((r.ws_max_delta_ms - f(4)).abs() < 0.0015, "{name}");
        assert!((r.ws_mean_jitter_ms - f(2)).abs() < 0.0015, "{name}");
        assert!((r.ws_max_jitter_ms - f(1)).abs() < 0.0015, "{name}");
    }
}

/// Reports serialise to plain JSON numbers, and a real call gets a sane
/// MOS in every figure.
#[test]
fn report_serialises() {
    let Some(fx) = fixtures() else { return };
    let path = fx.join("pcaps/ws_SIP_DTMF2.pcap");
    let (r, _) = analyse(
        &path,
        "192.168.105.110:4374",
        "192.168.105.172:4376",
        0x9A7B_5382,
    );
    let v = serde_json::to_value(&r).expect("serialise");
    assert_eq!(v["ws_lost"], 2);
    assert_eq!(v["rfc_lost"], 2);
    assert!(r.mos > 4.0 && r.mos < 4.41, "{}", r.mos);
    assert!(r.mos_f1 <= r.mos && r.mos_f2 <= r.mos && r.mos_adapt <= r.mos);
    assert_eq!(r.loss_runs.counts.iter().sum::<u32>(), 2);
    assert!(v["delay_variation"]["counts"].is_array());

    let (r, _) = analyse(
        &fx.join("pcaps/ws_SIP_DTMF2.pcap"),
        "192.168.105.172:4376",
        "192.168.105.110:4376",
        0x5711_BF84,
    );
    assert!(r.telephone_event_packets > 0);
    assert!(r.dtmf_events >= 1 && r.dtmf_events < r.telephone_event_packets);
}

/// `audio/rtp/harvard_pcmu_loss4pct.pcap`: every 25th packet of a clean
/// 672-packet PCMU stream dropped (26 lost; tshark: 646 pkts, lost 26,
/// max delta 40 ms, jitter 0). Checks loss runs, BurstR, MOS, the
/// jitter-buffer figures and the interval samples on isolated loss.
#[test]
fn isolated_loss_stream() {
    let Some(fx) = fixtures() else { return };
    let path = fx.join("audio/rtp/harvard_pcmu_loss4pct.pcap");
    let (r, samples) = analyse(&path, "10.0.0.1:40000", "10.0.0.2:50000", 0x5EED_0001);
    assert_eq!(
        (r.packets, r.ws_lost, r.rfc_lost, r.rfc_expected),
        (646, 26, 26, 672)
    );
    assert!((r.ws_max_delta_ms - 40.0).abs() < 0.001);
    assert!(r.ws_max_jitter_ms < 0.001 && r.rfc_jitter_ms < 0.001);
    // 26 runs of exactly one packet.
    assert_eq!(r.loss_runs.counts, [26, 0, 0, 0, 0, 0, 0]);
    // Isolated losses: q = 1, p = 26/646 → BurstR = 1/(1 + p) < 1.
    assert!(
        (r.burst_r - 1.0 / (1.0 + 26.0 / 646.0)).abs() < 0.002,
        "{}",
        r.burst_r
    );
    let loss = 26.0 * 100.0 / 672.0;
    assert!((r.loss_pct - loss).abs() < 1e-9);
    let mos = nqs::emodel::mos(Codec::G711Plc, loss, r.burst_r, 0.0);
    assert!(
        (r.mos - mos).abs() < 1e-12 && r.mos > 3.9 && r.mos < 4.2,
        "{}",
        r.mos
    );
    // Perfect timing: no buffer discards anything, effective loss = network loss.
    assert_eq!((r.discards_f1, r.discards_f2, r.discards_adapt), (0, 0, 0));
    assert_eq!((r.mos_f1, r.mos_f2, r.mos_adapt), (r.mos, r.mos, r.mos));
    assert_eq!(
        r.delay_variation.samples(),
        r.delay_variation.counts[0] as u64
    );
    // 13.42 s: one full 10 s interval, then the rest closed by the timeout.
    assert_eq!(samples.len(), 2);
    assert_eq!(samples.iter().map(|s| s.packets).sum::<u64>(), 646);
    assert_eq!(samples.iter().map(|s| s.lost).sum::<u64>(), 26);
    // Packets 0..500 (by index) fall into the first interval; 20 of them
    // are dropped, but the drop of index 499 only shows when index 500
    // arrives, so it is booked in the second interval.
    assert_eq!((samples[0].packets, samples[0].lost), (480, 19));
    assert!(samples.iter().all(|s| s.mos < 4.3 && s.mos > 3.8));
}

/// A test-only capture reader: classic pcap and pcapng (enhanced packet
/// blocks), Ethernet / VLAN / PPPoE / Linux SLL / BSD loopback / raw IP,
/// IPv4 and IPv6, UDP, and the RTP fixed header. Enough for the fixture
/// files, nothing more; never used outside tests.
mod oracle {
    pub struct Datagram {
        pub ts_ns: u64,
        pub src: String,
        pub dst: String,
        pub payload: Vec<u8>,
    }

    pub struct Rtp {
        pub seq: u16,
        pub timestamp: u32,
        pub ssrc: u32,
        pub pt: u8,
        pub marker: bool,
        pub payload_len: u16,
    }

    fn u16_at(b: &[u8], i: usize, le: bool) -> Option<u16> {
        let s: [u8; 2] = b.get(i..i + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }

    fn u32_at(b: &[u8], i: usize, le: bool) -> Option<u32> {
        let s: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }

    /// Every UDP datagram of the capture, in file order.
    pub fn udp_datagrams(file: &[u8]) -> Vec<Datagram> {
        let mut out = Vec::new();
        let magic = u32_at(file, 0, true).expect("magic");
        match magic {
            0x0A0D_0D0A => pcapng(file, &mut out),
            _ => pcap(file, &mut out),
        }
        out
    }

    fn pcap(file: &[u8], out: &mut Vec<Datagram>) {
        let (le, nanos) = match u32_at(file, 0, true).unwrap() {
            0xa1b2_c3d4 => (true, false),
            0xa1b2_3c4d => (true, true),
            0xd4c3_b2a1 => (false, false),
            0x4d3c_b2a1 => (false, true),
            m => panic!("not a capture: magic {m:08x}"),
        };
        let linktype = u32_at(file, 20, le).unwrap();
        let mut i = 24;
        while let (Some(sec), Some(frac), Some(len)) = (
            u32_at(file, i, le),
            u32_at(file, i + 4, le),
            u32_at(file, i + 8, le),
        ) {
            let len = len as usize;
            let Some(data) = file.get(i + 16..i + 16 + len) else {
                break;
            };
            let ns = u64::from(sec) * 1_000_000_000
                + if nanos {
                    u64::from(frac)
                } else {
                    u64::from(frac) * 1000
                };
            link(linktype, data, ns, out);
            i += 16 + len;
        }
    }

    fn pcapng(file: &[u8], out: &mut Vec<Datagram>) {
        let mut le = true;
        // (linktype, ticks per second) per interface of the current section.
        let mut ifaces: Vec<(u32, u64)> = Vec::new();
        let mut i = 0;
        while i + 12 <= file.len() {
            let btype = u32_at(file, i, le).unwrap();
            if btype == 0x0A0D_0D0A {
                le = u32_at(file, i + 8, true) == Some(0x1A2B_3C4D);
                ifaces.clear();
            }
            let Some(blen) = u32_at(file, i, le).and(u32_at(file, i + 4, le)) else {
                break;
            };
            let blen = blen as usize;
            if blen < 12 || i + blen > file.len() {
                break;
            }
            let body = &file[i + 8..i + blen - 4];
            match btype {
                1 => {
                    let lt = u32::from(u16_at(body, 0, le).unwrap());
                    let mut res = 1_000_000u64;
                    let mut o = 8;
                    while let (Some(code), Some(olen)) =
                        (u16_at(body, o, le), u16_at(body, o + 2, le))
                    {
                        if code == 0 {
                            break;
                        }
                        if code == 9 {
                            let v = body[o + 4];
                            res = if v & 0x80 == 0 {
                                10u64.pow(u32::from(v))
                            } else {
                                1 << (v & 0x7f)
                            };
                        }
                        o += 4 + usize::from(olen).div_ceil(4) * 4;
                    }
                    ifaces.push((lt, res));
                }
                6 => {
                    let iface = u32_at(body, 0, le).unwrap() as usize;
                    let ts = (u64::from(u32_at(body, 4, le).unwrap()) << 32)
                        | u64::from(u32_at(body, 8, le).unwrap());
                    let cap = u32_at(body, 12, le).unwrap() as usize;
                    let (lt, res) = ifaces[iface];
                    let ns = (u128::from(ts) * 1_000_000_000 / u128::from(res)) as u64;
                    if let Some(data) = body.get(20..20 + cap) {
                        link(lt, data, ns, out);
                    }
                }
                _ => {}
            }
            i += blen;
        }
    }

    fn link(linktype: u32, d: &[u8], ns: u64, out: &mut Vec<Datagram>) {
        let ip = match linktype {
            1 => {
                let mut et = u16_at(d, 12, false);
                let mut off = 14;
                while et == Some(0x8100) {
                    et = u16_at(d, off + 2, false);
                    off += 4;
                }
                match et {
                    Some(0x0800 | 0x86DD) => d.get(off..),
                    // PPPoE session: 6-byte header, then the PPP protocol.
                    Some(0x8864) if u16_at(d, off + 6, false) == Some(0x0021) => d.get(off + 8..),
                    _ => None,
                }
            }
            0 | 108 => d.get(4..),
            101 | 228 | 229 => Some(d),
            113 => d.get(16..),
            276 => d.get(20..),
            _ => None,
        };
        if let Some(dg) = ip.and_then(|ip| ip_udp(ip, ns)) {
            out.push(dg);
        }
    }

    fn ip_udp(ip: &[u8], ns: u64) -> Option<Datagram> {
        let (src, dst, udp) = match ip.first()? >> 4 {
            4 => {
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16_at(ip, 2, false)?);
                let frag = u16_at(ip, 6, false)?;
                if ip.get(9)? != &17 || frag & 0x3fff != 0 {
                    return None;
                }
                let a = |o: usize| format!("{}.{}.{}.{}", ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
                (a(12), a(16), ip.get(ihl..total.min(ip.len()))?)
            }
            6 => {
                if ip.get(6)? != &17 {
                    return None;
                }
                let a = |o: usize| {
                    let addr: [u8; 16] = ip[o..o + 16].try_into().unwrap();
                    format!("[{}]", std::net::Ipv6Addr::from(addr))
                };
                let plen = usize::from(u16_at(ip, 4, false)?);
                (a(8), a(24), ip.get(40..(40 + plen).min(ip.len()))?)
            }
            _ => return None,
        };
        let sport = u16_at(udp, 0, false)?;
        let dport = u16_at(udp, 2, false)?;
        let ulen = usize::from(u16_at(udp, 4, false)?);
        let payload = udp.get(8..ulen.clamp(8, udp.len()))?.to_vec();
        Some(Datagram {
            ts_ns: ns,
            src: format!("{src}:{sport}"),
            dst: format!("{dst}:{dport}"),
            payload,
        })
    }

    /// The RTP fixed header (RFC 3550 §5.1), or `None` if it is not RTP v2.
    pub fn rtp(b: &[u8]) -> Option<Rtp> {
        if b.len() < 12 || b[0] >> 6 != 2 {
            return None;
        }
        let cc = usize::from(b[0] & 0x0f);
        let mut hdr = 12 + 4 * cc;
        if b[0] & 0x10 != 0 {
            hdr += 4 + 4 * usize::from(u16_at(b, hdr + 2, false)?);
        }
        let pad = if b[0] & 0x20 != 0 {
            usize::from(*b.last()?)
        } else {
            0
        };
        let payload_len = b.len().checked_sub(hdr + pad)?;
        Some(Rtp {
            seq: u16_at(b, 2, false)?,
            timestamp: u32_at(b, 4, false)?,
            ssrc: u32_at(b, 8, false)?,
            pt: b[1] & 0x7f,
            marker: b[1] & 0x80 != 0,
            payload_len: u16::try_from(payload_len).ok()?,
        })
    }

    /// `a=rtpmap:<pt> <name>/<rate>` lines of every SDP in the capture.
    pub fn rtpmap(datagrams: &[Datagram]) -> Vec<(u8, String, u32)> {
        let mut out = Vec::new();
        for d in datagrams {
            let Ok(text) = std::str::from_utf8(&d.payload) else {
                continue;
            };
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("a=rtpmap:") else {
                    continue;
                };
                let mut it = rest.split_whitespace();
                let (Some(pt), Some(enc)) = (it.next(), it.next()) else {
                    continue;
                };
                let mut enc = enc.split('/');
                let (Ok(pt), Some(name), Some(Ok(rate))) = (
                    pt.parse::<u8>(),
                    enc.next(),
                    enc.next().map(str::parse::<u32>),
                ) else {
                    continue;
                };
                if !out.iter().any(|(p, _, _)| *p == pt) {
                    out.push((pt, name.to_string(), rate));
                }
            }
        }
        out
    }
}
