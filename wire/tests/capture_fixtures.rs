//! Every fixture capture reads to the end, and the decoder finds as many UDP
//! datagrams as tshark does.

use std::collections::HashMap;

use testkit::fixtures;
use wire::capture::{Decoder, FileFormat, FileReader, PcapWriter, Transport, TsResolution};

/// (path, frames, UDP datagrams, TCP segments with data).
///
/// Produced with tshark 4.0.17, for each file F:
/// `tshark -r F | wc -l`,
/// `tshark -r F -Y 'udp && !icmp && !icmpv6' | wc -l` and
/// `tshark -r F -Y 'tcp.len>0' | wc -l`.
/// None of these files holds IP fragments (`-Y 'ip.flags.mf==1 ||
/// ip.frag_offset>0'` is empty) or ICMP, so frame and datagram counts agree.
const REFERENCE: &[(&str, u64, u64, u64)] = &[
    ("pcaps/derived_multicall_4calls.pcap", 6988, 6302, 198),
    ("pcaps/pkts_sip_rtp.pcap", 507, 507, 0),
    ("pcaps/protos_c07-sip-r2.pcap", 39, 39, 0),
    ("pcaps/sipnab_audiocodes_rtp-cn.pcap", 259, 259, 0),
    ("pcaps/sipnab_b2bua-asterisk.pcapng", 416, 416, 0),
    ("pcaps/sipnab_codec-reinvite.pcap", 614, 614, 0),
    ("pcaps/sipnab_sipp-branch-1334calls.pcapng", 8989, 8989, 0),
    ("pcaps/ws_Asterisk_ZFONE_XLITE.pcap", 1042, 1042, 0),
    ("pcaps/ws_DTMFsipinfo.pcap", 32, 32, 0),
    ("pcaps/ws_SIP_CALL_RTP_G711.pcap", 4269, 3583, 198),
    ("pcaps/ws_SIP_DTMF2.pcap", 1360, 1360, 0),
    ("pcaps/ws_aaa.pcap", 691, 590, 29),
    ("pcaps/ws_sip-rtp-g711.pcap", 852, 852, 0),
    ("pcaps/ws_sip-rtp-g729a.pcap", 433, 433, 0),
    ("audio/rtp/harvard_pcma.pcap", 677, 677, 0),
    ("audio/rtp/harvard_pcmu.pcap", 677, 677, 0),
    ("audio/rtp/harvard_pcmu_loss4pct.pcap", 651, 651, 0),
    ("quality/vectors/v1_clean.pcap", 55, 55, 0),
    ("quality/vectors/v2_alternating_5ms.pcap", 55, 55, 0),
    ("quality/vectors/v3_step_40ms.pcap", 55, 55, 0),
];

#[test]
fn every_fixture_reads_to_the_end_with_tshark_counts() {
    let Some(dir) = fixtures() else { return };
    for &(name, frames, udp, tcp_data) in REFERENCE {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).unwrap();
        let mut reader = FileReader::new(file).unwrap();
        let mut decoder = Decoder::new();
        let (mut n, mut u, mut t) = (0u64, 0u64, 0u64);
        while let Some(frame) = reader.next_frame() {
            let frame = frame.unwrap_or_else(|e| panic!("{name}: {e}"));
            n += 1;
            match decoder.decode(&frame).map(|p| p.transport) {
                Some(Transport::Udp) => u += 1,
                Some(Transport::Tcp) => t += 1,
                None => {}
            }
        }
        assert_eq!(n, frames, "{name}: frames");
        assert_eq!(u, udp, "{name}: UDP datagrams");
        // Each data segment yields at most one delivery; retransmitted
        // segments yield none.
        assert!(t <= tcp_data, "{name}: TCP deliveries {t} > {tcp_data}");
        assert!(tcp_data == 0 || t > 0, "{name}: no TCP delivered");
        let stats = decoder.stats();
        assert_eq!(stats.frames, frames);
        assert_eq!(stats.udp, udp);
    }
}

/// The PROTOS INVITEs are up to 16 kB, in single unfragmented IPv4 packets
/// (`tshark -r protos_c07-sip-r2.pcap -T fields -e ip.len` peaks at 16028
/// with no fragments): they come through whole.
#[test]
fn protos_huge_invites_come_through_whole() {
    let Some(dir) = fixtures() else { return };
    let data = std::fs::read(dir.join("pcaps/protos_c07-sip-r2.pcap")).unwrap();
    let mut reader = FileReader::new(&data[..]).unwrap();
    let mut decoder = Decoder::new();
    let mut largest = 0;
    while let Some(frame) = reader.next_frame() {
        if let Some(p) = decoder.decode(&frame.unwrap()) {
            largest = largest.max(p.payload.len());
        }
    }
    assert_eq!(largest, 16028 - 28);
    assert_eq!(decoder.stats().fragments, 0);
}

#[test]
fn formats_are_detected() {
    let Some(dir) = fixtures() else { return };
    let open = |name: &str| {
        FileReader::new(std::fs::File::open(dir.join(name)).unwrap())
            .unwrap()
            .format()
    };
    assert!(matches!(
        open("pcaps/sipnab_b2bua-asterisk.pcapng"),
        FileFormat::PcapNg { .. }
    ));
    assert!(matches!(
        open("pcaps/ws_aaa.pcap"),
        FileFormat::Pcap { nanos: false, .. }
    ));
}

/// `ws_DTMFsipinfo.pcap` is Ethernet + PPPoE: every frame must get through
/// the PPPoE session header.
#[test]
fn pppoe_fixture_decodes() {
    let Some(dir) = fixtures() else { return };
    let data = std::fs::read(dir.join("pcaps/ws_DTMFsipinfo.pcap")).unwrap();
    let mut reader = FileReader::new(&data[..]).unwrap();
    let mut decoder = Decoder::new();
    let mut pppoe = 0;
    while let Some(frame) = reader.next_frame() {
        let frame = frame.unwrap();
        if frame.data.get(12..14) == Some(&[0x88, 0x64]) {
            pppoe += 1;
            assert!(decoder.decode(&frame).is_some());
        }
    }
    assert!(pppoe > 0, "expected PPPoE frames");
}

/// Truncating a file mid-record returns every complete frame, then an error
/// naming the frame and byte offset.
#[test]
fn truncated_files_report_where_they_stop() {
    let Some(dir) = fixtures() else { return };
    for name in [
        "pcaps/ws_DTMFsipinfo.pcap",
        "pcaps/sipnab_b2bua-asterisk.pcapng",
    ] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let cut = &data[..data.len() - 7];
        let mut reader = FileReader::new(cut).unwrap();
        let mut frames = 0u64;
        let err = loop {
            match reader.next_frame() {
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => break e,
                None => panic!("{name}: truncation not reported"),
            }
        };
        assert!(reader.next_frame().is_none());
        let msg = err.to_string();
        match err {
            wire::capture::Error::Truncated { offset, frame } => {
                assert_eq!(frame, frames + 1, "{msg}");
                assert!(offset > 0 && offset < cut.len() as u64, "{msg}");
                assert!(msg.contains(&offset.to_string()));
            }
            other => panic!("{name}: unexpected {other}"),
        }
    }
}

/// Reading a file and writing it back with `PcapWriter` preserves every
/// frame and timestamp.
#[test]
fn rewrite_round_trip() {
    let Some(dir) = fixtures() else { return };
    let data = std::fs::read(dir.join("pcaps/sipnab_b2bua-asterisk.pcapng")).unwrap();
    for resolution in [TsResolution::Micro, TsResolution::Nano] {
        let mut reader = FileReader::new(&data[..]).unwrap();
        let mut writer = None;
        let mut originals = Vec::new();
        while let Some(frame) = reader.next_frame() {
            let frame = frame.unwrap();
            let w = writer.get_or_insert_with(|| {
                PcapWriter::new(Vec::new(), frame.link, resolution).unwrap()
            });
            w.write_frame(&frame).unwrap();
            originals.push((frame.ts, frame.data.to_vec()));
        }
        let out = writer.unwrap().into_inner();
        let mut reader = FileReader::new(&out[..]).unwrap();
        let mut i = 0;
        while let Some(frame) = reader.next_frame() {
            let frame = frame.unwrap();
            let (ts, bytes) = &originals[i];
            let expected_ts = match resolution {
                TsResolution::Micro => ts.0 / 1000 * 1000,
                TsResolution::Nano => ts.0,
            };
            assert_eq!(frame.ts.0, expected_ts);
            assert_eq!(frame.data, &bytes[..]);
            i += 1;
        }
        assert_eq!(i, originals.len());
    }
}

/// TCP streams deliver every byte once. Reference byte counts from tshark
/// 4.0.17 (sum of `tcp.len` per direction, retransmissions excluded):
/// `tshark -r F -Y "tcp.len>0 && !tcp.analysis.retransmission &&
/// !tcp.analysis.fast_retransmission && !tcp.analysis.spurious_retransmission"
/// -T fields -e ip.src -e tcp.srcport -e ip.dst -e tcp.dstport -e tcp.len`.
#[test]
fn tcp_streams_deliver_every_byte_once() {
    let Some(dir) = fixtures() else { return };
    let streams = |name: &str| {
        let data = std::fs::read(dir.join(name)).unwrap();
        let mut reader = FileReader::new(&data[..]).unwrap();
        let mut decoder = Decoder::new();
        let mut per_flow: HashMap<(String, String), Vec<u8>> = HashMap::new();
        while let Some(frame) = reader.next_frame() {
            let frame = frame.unwrap();
            if let Some(p) = decoder.decode(&frame)
                && p.transport == Transport::Tcp
            {
                per_flow
                    .entry((p.src.to_string(), p.dst.to_string()))
                    .or_default()
                    .extend_from_slice(p.payload);
            }
        }
        per_flow
    };
    let ftp = streams("pcaps/ws_aaa.pcap");
    let key = |a: &str, b: &str| (a.to_string(), b.to_string());
    let server = &ftp[&key("147.234.1.253:21", "192.168.1.2:2720")];
    assert_eq!(server.len(), 747);
    assert!(server.starts_with(b"220 "));
    assert_eq!(ftp[&key("192.168.1.2:2720", "147.234.1.253:21")].len(), 67);
    assert_eq!(ftp.len(), 2);

    for name in [
        "pcaps/ws_SIP_CALL_RTP_G711.pcap",
        "pcaps/derived_multicall_4calls.pcap",
    ] {
        let flows = streams(name);
        let total: usize = flows.values().map(Vec::len).sum();
        assert_eq!(total, 99_282, "{name}");
        assert_eq!(flows.len(), 70, "{name}");
    }
}
