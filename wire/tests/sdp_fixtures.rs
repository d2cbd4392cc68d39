//! SDP bodies from the fixture captures, extracted through our own capture
//! decoder, parse and re-emit byte for byte.

use testkit::fixtures;
use wire::capture::{Decoder, FileReader};
use wire::sdp::SessionDescription;

/// SIP message bodies starting with `v=` in one capture (UDP only; a body
/// is what follows the first blank line, cut to the datagram).
fn sdp_bodies(path: &std::path::Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let mut reader = FileReader::new(&data[..]).unwrap();
    let mut decoder = Decoder::new();
    let mut bodies = Vec::new();
    while let Some(frame) = reader.next_frame() {
        let frame = frame.unwrap();
        let Some(p) = decoder.decode(&frame) else {
            continue;
        };
        let Some(pos) = p.payload.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = &p.payload[..pos];
        if !head.windows(7).any(|w| w == b"SIP/2.0") {
            continue;
        }
        let body = &p.payload[pos + 4..];
        if body.starts_with(b"v=") {
            bodies.push(body.to_vec());
        }
    }
    bodies
}

/// (file, SDP bodies in SIP messages). Reference: `tshark -r F -Y 'sip &&
/// sdp' | wc -l` (tshark 4.0.17). No fixture carries SIP over TCP or SDP in
/// a multipart body; the MGCP-carried SDPs (`-Y sdp` finds 2 more in two
/// files) are not SIP and are left out.
const REFERENCE: &[(&str, usize)] = &[
    ("derived_multicall_4calls.pcap", 13),
    ("pkts_sip_rtp.pcap", 2),
    ("sipnab_audiocodes_rtp-cn.pcap", 2),
    ("sipnab_b2bua-asterisk.pcapng", 12),
    ("sipnab_codec-reinvite.pcap", 4),
    ("sipnab_sipp-branch-1334calls.pcapng", 1436),
    ("ws_Asterisk_ZFONE_XLITE.pcap", 5),
    ("ws_DTMFsipinfo.pcap", 10),
    ("ws_SIP_CALL_RTP_G711.pcap", 3),
    ("ws_SIP_DTMF2.pcap", 4),
    ("ws_aaa.pcap", 12),
    ("ws_sip-rtp-g711.pcap", 4),
    ("ws_sip-rtp-g729a.pcap", 2),
];

#[test]
fn fixture_sdps_round_trip() {
    let Some(dir) = fixtures() else { return };
    let mut total = 0;
    for &(name, expected) in REFERENCE {
        let bodies = sdp_bodies(&dir.join("pcaps").join(name));
        assert_eq!(bodies.len(), expected, "{name}");
        for body in &bodies {
            let sdp = SessionDescription::parse_bytes(body)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", String::from_utf8_lossy(body)));
            let mut out = String::new();
            sdp.emit(&mut out);
            assert_eq!(out.as_bytes(), &body[..], "{name}");
            assert!(sdp.origin().is_some(), "{name}");
            assert!(sdp.media_count() >= 1, "{name}");
            for m in sdp.media_sections() {
                assert!(m.connection().and_then(|c| c.ip()).is_some(), "{name}");
                for pt in m.payload_types() {
                    // Every listed RTP payload type resolves to a codec,
                    // except dynamic ones a sloppy peer left unmapped.
                    assert!(m.codec(pt).is_some() || pt.is_dynamic(), "{name}: {pt}");
                }
            }
            // An owned copy with no edits is identical too.
            assert_eq!(sdp.to_owned().to_string().as_bytes(), &body[..]);
            total += 1;
        }
    }
    assert_eq!(total, 1509);
}

/// The PROTOS c07 test INVITEs carry deliberately broken SDPs: every one
/// must either parse or be rejected with an error, never panic.
#[test]
fn protos_sdps_never_panic() {
    let Some(dir) = fixtures() else { return };
    let bodies = sdp_bodies(&dir.join("pcaps/protos_c07-sip-r2.pcap"));
    assert!(!bodies.is_empty());
    for body in &bodies {
        if let Ok(sdp) = SessionDescription::parse_bytes(body) {
            let mut out = String::new();
            sdp.emit(&mut out);
            assert_eq!(out.as_bytes(), &body[..]);
            for m in sdp.media_sections() {
                let _ = (m.port(), m.rtcp(), m.direction(), m.ptime());
            }
        }
    }
}

/// Spot checks on a known capture.
#[test]
fn fixture_sdp_fields() {
    let Some(dir) = fixtures() else { return };
    let bodies = sdp_bodies(&dir.join("pcaps/ws_sip-rtp-g729a.pcap"));
    let sdp = SessionDescription::parse_bytes(&bodies[0]).unwrap();
    let m = sdp.media(0).unwrap();
    assert_eq!(m.kind(), "audio");
    assert_eq!(m.proto(), "RTP/AVP");
    assert!(m.payload_types().any(|pt| pt == wire::PayloadType::G729));
    assert_eq!(
        m.codec(wire::PayloadType::G729).map(|c| c.clock_rate),
        Some(wire::ClockRate(8000))
    );
}
