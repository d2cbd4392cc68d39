//! The RTP, RTCP and telephone-event parsers on every UDP datagram of the
//! real captures in `shared/fixtures/pcaps/` (provenance in
//! `shared/fixtures/SOURCES.md`). The expected counts were computed
//! independently with a throwaway Python reader; the per-direction stream
//! counts agree with tshark's `-z rtp,streams` (each SSRC in
//! `ws_SIP_CALL_RTP_G711.pcap` is captured on two legs, hence twice the
//! tshark count).
//!
//! The capture decoder (`wire::capture`) is written separately; this test
//! carries a minimal Ethernet/Linux-SLL/IPv4/UDP walk of its own.

use std::collections::HashMap;
use std::path::Path;

use pcap_file::pcap::PcapReader;
use testkit::fixtures;
use wire::dtmf::TelephoneEvent;
use wire::rtcp::{Compound, RtcpRepr};
use wire::rtp::{self, Kind, RtpPacket, RtpRepr};
use wire::{PayloadType, Ssrc};

/// UDP payloads of every IPv4 datagram in a classic pcap file.
fn udp_payloads(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).expect("open pcap");
    let mut reader = PcapReader::new(file).expect("pcap header");
    let linktype = u32::from(reader.header().datalink);
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.expect("pcap record");
        let frame = &pkt.data[..];
        let ip = match linktype {
            // Ethernet, with optional 802.1Q tags.
            1 => {
                let mut at = 12;
                let mut ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
                while ethertype == 0x8100 {
                    at += 4;
                    ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
                }
                if ethertype != 0x0800 {
                    continue;
                }
                &frame[at + 2..]
            }
            // Linux cooked capture.
            113 => &frame[16..],
            _ => continue,
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let udp = &ip[usize::from(ip[0] & 0x0F) * 4..];
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        out.push(udp[8..len.min(udp.len())].to_vec());
    }
    out
}

#[test]
fn every_datagram_of_every_capture_is_handled_without_panic() {
    let Some(dir) = fixtures() else { return };
    let mut files = 0;
    let (mut rtp_count, mut rtcp_count) = (0, 0);
    for entry in std::fs::read_dir(dir.join("pcaps")).expect("pcaps dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("pcap") {
            continue;
        }
        files += 1;
        for payload in udp_payloads(&path) {
            match rtp::classify(&payload) {
                Some(Kind::Rtp) => {
                    if let Ok(pkt) = RtpPacket::new_checked(&payload[..]) {
                        rtp_count += 1;
                        let repr = RtpRepr::parse(&pkt).expect("checked packet parses");
                        assert_eq!(repr.buffer_len(), payload.len());
                    }
                }
                Some(Kind::Rtcp) => {
                    rtcp_count += 1;
                    for pkt in Compound::new(&payload).flatten() {
                        let _ = RtcpRepr::parse(&pkt);
                    }
                }
                None => assert!(!rtp::looks_like_rtp(&payload)),
            }
        }
    }
    assert_eq!(files, 12, "classic pcap files in fixtures/pcaps");
    assert!(rtp_count > 10_000, "{rtp_count} RTP packets");
    assert!(rtcp_count > 60, "{rtcp_count} RTCP packets");
}

#[test]
fn sip_call_rtp_g711_streams_and_rtcp() {
    let Some(dir) = fixtures() else { return };
    let payloads = udp_payloads(&dir.join("pcaps/ws_SIP_CALL_RTP_G711.pcap"));
    let mut per_ssrc: HashMap<Ssrc, usize> = HashMap::new();
    let mut compounds = 0;
    let mut trailing_garbage = 0;
    for payload in &payloads {
        if rtp::looks_like_rtp(payload) {
            let pkt = RtpPacket::new_checked(&payload[..]).expect("heuristic implies valid");
            assert_eq!(pkt.payload_type(), PayloadType::PCMA);
            *per_ssrc.entry(pkt.ssrc()).or_default() += 1;
        } else if rtp::classify(payload) == Some(Kind::Rtcp) {
            compounds += 1;
            let mut reprs = Vec::new();
            for pkt in Compound::new(payload) {
                match pkt {
                    Ok(pkt) => reprs.push(RtcpRepr::parse(&pkt).expect("valid contents")),
                    // The Verso endpoint appends two null octets after an
                    // SDES whose length field does not cover them (RFC 3550
                    // A.2 validity check fails); the iterator reports them.
                    Err(e) => {
                        assert_eq!(e, wire::rtcp::Error::TooShort { len: 2 });
                        trailing_garbage += 1;
                    }
                }
            }
            assert!(reprs[0].is_report(), "compound starts with SR/RR");
            // Parse -> emit reproduces the datagram byte for byte.
            let mut out = vec![0u8; wire::rtcp::compound_len(&reprs)];
            wire::rtcp::emit_compound(&reprs, &mut out).expect("emit");
            assert_eq!(&out[..], &payload[..out.len()]);
            assert!(payload.len() - out.len() <= 2);
        }
    }
    assert_eq!(per_ssrc.get(&Ssrc(0x58F33DEA)), Some(&1782));
    assert_eq!(per_ssrc.get(&Ssrc(0xD2BD4E3E)), Some(&1096));
    assert_eq!(per_ssrc.get(&Ssrc(0x00002E3D)), Some(&6));
    assert_eq!(per_ssrc.len(), 3);
    assert_eq!(compounds, 28);
    assert_eq!(trailing_garbage, 4);
}

#[test]
fn sip_dtmf2_telephone_events() {
    let Some(dir) = fixtures() else { return };
    let payloads = udp_payloads(&dir.join("pcaps/ws_SIP_DTMF2.pcap"));
    let mut digits = String::new();
    let mut events = 0;
    let mut last_end_seq = None;
    for payload in &payloads {
        let Ok(pkt) = RtpPacket::new_checked(&payload[..]) else {
            continue;
        };
        if pkt.payload_type() != PayloadType(96) {
            continue;
        }
        events += 1;
        let ev = TelephoneEvent::new_checked(pkt.payload()).expect("4-octet payload");
        assert_eq!(ev.volume(), 7);
        if ev.end() && last_end_seq != Some(pkt.sequence_number()) {
            last_end_seq = Some(pkt.sequence_number());
            digits.push(ev.event_char().expect("DTMF digit"));
            assert_eq!(ev.duration(), 960, "120 ms at 8 kHz");
        }
    }
    assert_eq!(events, 35);
    assert_eq!(digits, "6789123");
}
