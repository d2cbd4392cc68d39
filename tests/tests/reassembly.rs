//! End to end through file → decoder → analyser: a SIP INVITE too large for
//! one IPv4 packet arrives as fragments (in reverse order), and a call's SIP
//! arrives over TCP cut into small segments; both calls are correlated with
//! their RTP. (tshark 4.0 reads the same file as two SIP/SDP INVITEs and
//! two RTP streams of 50 packets.)

use std::net::SocketAddr;

use wire::capture::{LinkType, PcapWriter, TsResolution, build_udp_frame};
use wire::types::Timestamp;

fn invite(call_id: &str, media: SocketAddr, padding: usize, transport: &str) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        ip = media.ip(),
        port = media.port()
    );
    format!(
        "INVITE sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/{transport} 192.0.2.10:5060;branch=z9hG4bK-{call_id}\r\n\
         From: <sip:alice@192.0.2.10>;tag=a\r\nTo: <sip:bob@192.0.2.20>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\nX-Padding: {pad}\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        pad = "x".repeat(padding),
        len = sdp.len()
    )
    .into_bytes()
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0xCA, 0xFE, 0, 1];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&[0xFF; 160]);
    p
}

/// Splits an Ethernet + IPv4 frame into fragments of at most `mtu` bytes of
/// IP payload (a multiple of 8), each a full Ethernet + IPv4 frame.
fn fragment(frame: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14);
    let header_len = usize::from(ip[0] & 0x0F) * 4;
    let (header, payload) = ip.split_at(header_len);
    payload
        .chunks(mtu)
        .enumerate()
        .map(|(i, chunk)| {
            let offset = i * mtu / 8;
            let more = (i + 1) * mtu < payload.len();
            let mut h = header.to_vec();
            let total = (header_len + chunk.len()) as u16;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            let flags_offset = (u16::from(more) << 13) | offset as u16;
            h[6..8].copy_from_slice(&flags_offset.to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            [eth, &h, chunk].concat()
        })
        .collect()
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + TCP segment (checksums are not checked by the decoder,
/// but the TCP one is computed anyway so the file is valid for tshark).
fn tcp_frame(src: SocketAddr, dst: SocketAddr, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        unreachable!()
    };
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&s.octets());
    pseudo.extend_from_slice(&d.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&s.octets());
    ip.extend_from_slice(&d.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

#[test]
fn fragmented_udp_invite_and_sip_over_tcp_are_correlated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reassembly.pcap");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = PcapWriter::new(
        std::io::BufWriter::new(file),
        LinkType::ETHERNET,
        TsResolution::Micro,
    )
    .unwrap();
    let mut t = 1_700_000_000_000_000_000u64;
    let mut put = |w: &mut PcapWriter<_>, frame: &[u8]| {
        t += 1_000_000;
        w.write(Timestamp(t), frame, frame.len() as u32).unwrap();
    };
    let alice: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let bob: SocketAddr = "192.0.2.20:5060".parse().unwrap();

    // Call 1: a 4 KB INVITE over UDP, fragments written last-first.
    let media1: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let big = invite("frag-call", media1, 4000, "UDP");
    let mut frame = Vec::new();
    build_udp_frame(alice, bob, &big, &mut frame).unwrap();
    let fragments = fragment(&frame, 1480);
    assert!(fragments.len() >= 3);
    for f in fragments.iter().rev() {
        put(&mut w, f);
    }

    // Call 2: INVITE over TCP in 100-byte segments (after a handshake SYN).
    let media2: SocketAddr = "192.0.2.10:40002".parse().unwrap();
    let tcp_alice: SocketAddr = "192.0.2.10:40123".parse().unwrap();
    let msg = invite("tcp-call", media2, 300, "TCP");
    put(&mut w, &tcp_frame(tcp_alice, bob, 1000, 0x02, &[]));
    for (i, chunk) in msg.chunks(100).enumerate() {
        put(
            &mut w,
            &tcp_frame(tcp_alice, bob, 1001 + (i * 100) as u32, 0x18, chunk),
        );
    }

    // RTP from bob's side to each announced media address.
    let bob_media: SocketAddr = "192.0.2.20:50000".parse().unwrap();
    for seq in 0..50u16 {
        for dst in [media1, media2] {
            let mut p = rtp(seq);
            if dst == media2 {
                p[11] = 2; // another SSRC
            }
            build_udp_frame(bob_media, dst, &p, &mut frame).unwrap();
            put(&mut w, &frame);
        }
    }
    w.into_inner().into_inner().unwrap();

    let (report, error) = tests::analyze_file(&path);
    assert!(error.is_none(), "{error:?}");
    let ids: Vec<&str> = report.calls.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, ["frag-call", "tcp-call"]);
    for call in &report.calls {
        assert_eq!(call.media.len(), 1, "{}: SDP learnt", call.call_id);
        assert_eq!(call.streams.len(), 1, "{}: its RTP stream", call.call_id);
        let s = report
            .streams
            .iter()
            .find(|s| s.id == call.streams[0])
            .unwrap();
        assert_eq!((s.packets, s.lost), (50, 0));
        assert_eq!(s.direction.as_deref(), Some("callee->caller"));
    }
    assert_eq!(report.counters.sip_messages, 2);
    assert_eq!(report.counters.sip_malformed, 0);
}
