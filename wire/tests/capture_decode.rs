//! Hand-built frames through `capture::Decoder`: every link type, VLAN and
//! PPPoE, IPv6 extension headers, IP fragments, TCP reordering, and
//! property tests for robustness and reassembly.

use std::net::SocketAddr;

use proptest::prelude::*;
use wire::Timestamp;
use wire::capture::{
    Decoder, DecoderConfig, FileReader, Frame, LinkType, PcapWriter, Transport, TsResolution,
    build_udp_frame,
};

const A4: &str = "192.0.2.1:5060";
const B4: &str = "192.0.2.2:40000";
const A6: &str = "[2001:db8::1]:5060";
const B6: &str = "[2001:db8::2]:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn frame(link: LinkType, data: &[u8], ts: u64) -> Frame<'_> {
    Frame {
        ts: Timestamp(ts),
        link,
        data,
        orig_len: data.len() as u32,
    }
}

/// Ethernet frame from `build_udp_frame`; returns (frame, IP packet).
fn udp_frame(src: &str, dst: &str, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    build_udp_frame(addr(src), addr(dst), payload, &mut out).unwrap();
    let ip = out[14..].to_vec();
    (out, ip)
}

fn ether(ethertype: u16, inner: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(inner);
    f
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn ipv4_checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let c = !fold(sum16(h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Splits an IPv4 packet into fragments at the given payload cut points
/// (multiples of 8).
fn fragment_v4(ip: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let payload = &ip[20..];
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < payload.len()));
    bounds.push(payload.len());
    bounds.dedup();
    bounds
        .windows(2)
        .map(|w| {
            let (s, e) = (w[0], w[1]);
            let mut h = ip[..20].to_vec();
            let total = (20 + e - s) as u16;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            let more = if e < payload.len() { 0x2000 } else { 0 };
            let ff = more | (s / 8) as u16;
            h[6..8].copy_from_slice(&ff.to_be_bytes());
            ipv4_checksum(&mut h);
            h.extend_from_slice(&payload[s..e]);
            ether(0x0800, &h)
        })
        .collect()
}

/// Splits an IPv6 packet (no extension headers) into fragments.
fn fragment_v6(ip: &[u8], cuts: &[usize], id: u32) -> Vec<Vec<u8>> {
    let payload = &ip[40..];
    let next = ip[6];
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < payload.len()));
    bounds.push(payload.len());
    bounds.dedup();
    bounds
        .windows(2)
        .map(|w| {
            let (s, e) = (w[0], w[1]);
            let mut h = ip[..40].to_vec();
            h[4..6].copy_from_slice(&((8 + e - s) as u16).to_be_bytes());
            h[6] = 44;
            let more = u16::from(e < payload.len());
            h.extend_from_slice(&[next, 0]);
            h.extend_from_slice(&((s as u16) | more).to_be_bytes());
            h.extend_from_slice(&id.to_be_bytes());
            h.extend_from_slice(&payload[s..e]);
            ether(0x86dd, &h)
        })
        .collect()
}

/// Ethernet + IPv4 + TCP segment.
fn tcp_frame(src: &str, dst: &str, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (addr(src), addr(dst));
    let (std::net::IpAddr::V4(si), std::net::IpAddr::V4(di)) = (s.ip(), d.ip()) else {
        unreachable!()
    };
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&si.octets());
    ip.extend_from_slice(&di.octets());
    ipv4_checksum(&mut ip);
    ip.extend_from_slice(&s.port().to_be_bytes());
    ip.extend_from_slice(&d.port().to_be_bytes());
    ip.extend_from_slice(&seq.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    ip.extend_from_slice(payload);
    ether(0x0800, &ip)
}

fn decode_one(
    decoder: &mut Decoder,
    link: LinkType,
    data: &[u8],
) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
    decoder
        .decode(&frame(link, data, 1_000_000_000))
        .map(|p| (p.src, p.dst, p.payload.to_vec()))
}

#[test]
fn every_link_type_decodes_udp() {
    let payload = b"v=0\r\nhello";
    let (eth, ip4) = udp_frame(A4, B4, payload);
    let (_, ip6) = udp_frame(A6, B6, payload);
    let mut cases: Vec<(&str, LinkType, Vec<u8>, bool)> = vec![
        ("ethernet", LinkType::ETHERNET, eth.clone(), true),
        ("raw v4", LinkType::RAW, ip4.clone(), true),
        ("raw v6", LinkType::RAW, ip6.clone(), false),
        ("ipv4", LinkType::IPV4, ip4.clone(), true),
        ("ipv6", LinkType::IPV6, ip6.clone(), false),
        (
            "ethernet v6",
            LinkType::ETHERNET,
            ether(0x86dd, &ip6),
            false,
        ),
    ];
    // 802.1Q, 802.1ad + 802.1Q (QinQ), and the old 0x9100 outer tag.
    let mut vlan = vec![0x00, 0x64];
    vlan.extend_from_slice(&0x0800u16.to_be_bytes());
    vlan.extend_from_slice(&ip4);
    cases.push(("802.1Q", LinkType::ETHERNET, ether(0x8100, &vlan), true));
    let mut qinq = vec![0x00, 0x0a, 0x81, 0x00];
    qinq.extend_from_slice(&vlan);
    cases.push(("QinQ", LinkType::ETHERNET, ether(0x88a8, &qinq), true));
    cases.push(("9100", LinkType::ETHERNET, ether(0x9100, &qinq), true));
    // PPPoE session: ver/type 0x11, code 0, session id, length, PPP proto.
    for (proto, ip, v4) in [(0x0021u16, &ip4, true), (0x0057, &ip6, false)] {
        let mut pppoe = vec![0x11, 0x00, 0x12, 0x34];
        pppoe.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
        pppoe.extend_from_slice(&proto.to_be_bytes());
        pppoe.extend_from_slice(ip);
        cases.push(("pppoe", LinkType::ETHERNET, ether(0x8864, &pppoe), v4));
    }
    // Linux SLL: packet type, ARPHRD, addr len, 8-byte addr, protocol.
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip4);
    cases.push(("sll", LinkType::LINUX_SLL, sll, true));
    // SLL2: protocol, reserved, ifindex, ARPHRD, packet type, addr len, addr.
    let mut sll2 = vec![
        0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    sll2.extend_from_slice(&ip6);
    cases.push(("sll2", LinkType::LINUX_SLL2, sll2, false));
    // BSD loopback in both byte orders, and OpenBSD LOOP (network order).
    for (name, link, fam, ip, v4) in [
        ("null le v4", LinkType::NULL, 2u32.to_le_bytes(), &ip4, true),
        ("null be v4", LinkType::NULL, 2u32.to_be_bytes(), &ip4, true),
        (
            "null le v6",
            LinkType::NULL,
            30u32.to_le_bytes(),
            &ip6,
            false,
        ),
        (
            "null be v6",
            LinkType::NULL,
            24u32.to_be_bytes(),
            &ip6,
            false,
        ),
        ("loop v4", LinkType::LOOP, 2u32.to_be_bytes(), &ip4, true),
        ("loop v6", LinkType::LOOP, 24u32.to_be_bytes(), &ip6, false),
    ] {
        let mut f = fam.to_vec();
        f.extend_from_slice(ip);
        cases.push((name, link, f, v4));
    }
    for (name, link, data, v4) in cases {
        let mut decoder = Decoder::new();
        let got = decode_one(&mut decoder, link, &data)
            .unwrap_or_else(|| panic!("{name}: {:?}", decoder.stats()));
        let (src, dst) = if v4 { (A4, B4) } else { (A6, B6) };
        assert_eq!(got, (addr(src), addr(dst), payload.to_vec()), "{name}");
        assert_eq!(decoder.stats().udp, 1, "{name}");
        assert_eq!(decoder.stats().ipv4_bad_checksum, 0, "{name}");
    }
}

#[test]
fn non_ip_truncated_and_unknown_links_are_counted() {
    let mut d = Decoder::new();
    let arp = ether(0x0806, &[0; 28]);
    assert!(decode_one(&mut d, LinkType::ETHERNET, &arp).is_none());
    assert!(decode_one(&mut d, LinkType::ETHERNET, &[0; 10]).is_none());
    assert!(decode_one(&mut d, LinkType(147), &[0; 64]).is_none());
    let (eth, _) = udp_frame(A4, B4, b"0123456789");
    assert!(decode_one(&mut d, LinkType::ETHERNET, &eth[..eth.len() - 3]).is_none());
    let s = d.stats();
    assert_eq!(
        (s.non_ip, s.truncated, s.unsupported_link, s.udp),
        (1, 2, 1, 0)
    );
}

#[test]
fn ethernet_padding_is_not_payload_and_bad_checksum_is_counted() {
    let (mut eth, _) = udp_frame(A4, B4, b"x");
    eth.extend_from_slice(&[0; 20]);
    eth[14 + 8] = 1; // TTL changed: header checksum now wrong
    let mut d = Decoder::new();
    let p = d.decode(&frame(LinkType::ETHERNET, &eth, 0)).unwrap();
    assert_eq!(p.payload, b"x");
    assert_eq!(p.ip, Some(14..14 + 29));
    assert_eq!(d.stats().ipv4_bad_checksum, 1);
}

/// A frame cut by the snap length still yields its UDP payload's first
/// bytes, marked truncated; cut TCP is dropped and counted.
#[test]
fn snap_length_cut_udp_is_delivered_truncated() {
    let payload: Vec<u8> = (0..172u8).collect();
    for (src, dst) in [(A4, B4), (A6, B6)] {
        let (eth, _) = udp_frame(src, dst, &payload);
        let cut = &eth[..96];
        let mut d = Decoder::new();
        let f = Frame {
            ts: Timestamp(0),
            link: LinkType::ETHERNET,
            data: cut,
            orig_len: eth.len() as u32,
        };
        let p = d.decode(&f).unwrap();
        assert!(p.truncated);
        assert_eq!(p.payload, &eth[eth.len() - 172..96]);
        assert_eq!(d.stats().udp_truncated, 1);
        // The same bytes without the snap length evidence are damage.
        assert!(d.decode(&frame(LinkType::ETHERNET, cut, 0)).is_none());
        assert_eq!(d.stats().truncated, 1);
    }
    let seg = tcp_frame("192.0.2.1:1", "192.0.2.2:2", 1, 0x18, &[b'x'; 200]);
    let mut d = Decoder::new();
    let f = Frame {
        ts: Timestamp(0),
        link: LinkType::ETHERNET,
        data: &seg[..100],
        orig_len: seg.len() as u32,
    };
    assert!(d.decode(&f).is_none());
    assert_eq!(d.stats().truncated, 1);
}

#[test]
fn ipv4_options_are_skipped() {
    let (_, ip) = udp_frame(A4, B4, b"opt");
    let mut with_opts = vec![0x46, 0];
    with_opts.extend_from_slice(&((ip.len() + 4) as u16).to_be_bytes());
    with_opts.extend_from_slice(&ip[4..20]);
    with_opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    ipv4_checksum(&mut with_opts[..24]);
    with_opts.extend_from_slice(&ip[20..]);
    let mut d = Decoder::new();
    let got = decode_one(&mut d, LinkType::RAW, &with_opts).unwrap();
    assert_eq!(got.2, b"opt");
    assert_eq!(d.stats().ipv4_bad_checksum, 0);
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let (_, ip6) = udp_frame(A6, B6, b"ext");
    let udp = &ip6[40..];
    let mut pkt = ip6[..40].to_vec();
    pkt[6] = 0; // hop-by-hop
    // Hop-by-hop (8 bytes) -> routing (24) -> destination options (8) ->
    // an atomic fragment header (offset 0, M = 0, RFC 6946) -> UDP.
    let mut ext = vec![43, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[60, 2, 0, 0, 0, 0, 0, 0]);
    ext.extend_from_slice(&[0; 16]);
    ext.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
    ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 9]);
    pkt.extend_from_slice(&ext);
    pkt.extend_from_slice(udp);
    let plen = (pkt.len() - 40) as u16;
    pkt[4..6].copy_from_slice(&plen.to_be_bytes());
    let mut d = Decoder::new();
    let got = decode_one(&mut d, LinkType::IPV6, &pkt).unwrap();
    assert_eq!(got, (addr(A6), addr(B6), b"ext".to_vec()));
}

#[test]
fn icmp_quoting_udp_is_not_a_packet() {
    let (_, ip) = udp_frame(A4, B4, b"rtp inside icmp");
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&ip);
    let mut outer = vec![0x45, 0];
    outer.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    outer.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1]);
    ipv4_checksum(&mut outer);
    outer.extend_from_slice(&icmp);
    let mut d = Decoder::new();
    assert!(decode_one(&mut d, LinkType::RAW, &outer).is_none());
    assert_eq!((d.stats().icmp, d.stats().udp), (1, 0));
}

fn run_frames(d: &mut Decoder, frames: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter_map(|(ts, f)| {
            d.decode(&frame(LinkType::ETHERNET, f, *ts))
                .map(|p| p.payload.to_vec())
        })
        .collect()
}

#[test]
fn ipv4_fragments_in_any_order() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let (_, ip) = udp_frame(A4, B4, &payload);
    let frags = fragment_v4(&ip, &[1480, 2960]);
    assert_eq!(frags.len(), 3);
    let orders: [&[usize]; 3] = [&[0, 1, 2], &[2, 1, 0], &[1, 2, 0]];
    for order in orders {
        let mut d = Decoder::new();
        let input: Vec<_> = order.iter().map(|&i| (0, frags[i].clone())).collect();
        let out = run_frames(&mut d, &input);
        assert_eq!(out, vec![payload.clone()], "order {order:?}");
        assert_eq!(d.stats().fragments_reassembled, 1);
        assert_eq!(d.stats().fragments, 3);
    }
}

#[test]
fn duplicated_and_overlapping_fragments() {
    let payload: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let (_, ip) = udp_frame(A4, B4, &payload);
    let a = fragment_v4(&ip, &[800]);
    let b = fragment_v4(&ip, &[400, 1200]);
    // a[0] = 0..800, b[1] = 400..1200 overlaps, a[0] again duplicates,
    // a[1] = 800.. completes.
    let input = vec![
        (0, a[0].clone()),
        (0, b[1].clone()),
        (0, a[0].clone()),
        (0, a[1].clone()),
    ];
    let mut d = Decoder::new();
    assert_eq!(run_frames(&mut d, &input), vec![payload.clone()]);
    assert_eq!(d.stats().fragments_duplicate, 1);
    // b[1] overlaps a[0] (400..800) and then a[1] overlaps b[1] (800..1200).
    assert_eq!(d.stats().fragments_overlapping, 2);
    // A second copy of the whole datagram reassembles again.
    assert_eq!(
        run_frames(&mut d, &[(0, a[1].clone()), (0, a[0].clone())]),
        vec![payload]
    );
}

#[test]
fn fragments_time_out_by_capture_time() {
    let payload = vec![0x55u8; 2000];
    let (_, ip) = udp_frame(A4, B4, &payload);
    let f = fragment_v4(&ip, &[1000]);
    let mut d = Decoder::new();
    let sec = 1_000_000_000u64;
    let input = vec![(sec, f[0].clone()), (40 * sec, f[1].clone())];
    assert!(run_frames(&mut d, &input).is_empty());
    assert_eq!(d.stats().fragments_expired, 1);
    assert_eq!(d.stats().fragments_reassembled, 0);
    // Within the timeout it completes.
    let mut d = Decoder::new();
    let input = vec![(sec, f[0].clone()), (20 * sec, f[1].clone())];
    assert_eq!(run_frames(&mut d, &input), vec![payload]);
}

#[test]
fn fragment_memory_is_bounded() {
    let cfg = {
        let mut c = DecoderConfig::default();
        c.max_frag_datagrams = 4;
        c
    };
    let mut d = Decoder::with_config(cfg);
    for id in 0..10u16 {
        let (_, mut ip) = udp_frame(A4, B4, &[1; 100]);
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        let f = fragment_v4(&ip, &[40]);
        run_frames(&mut d, &[(0, f[0].clone())]);
    }
    assert_eq!(d.stats().fragments_evicted, 6);
}

#[test]
fn ipv6_fragments_reassemble() {
    let payload: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let (_, ip6) = udp_frame(A6, B6, &payload);
    let frags = fragment_v6(&ip6, &[1232, 2464], 0xdead);
    let mut d = Decoder::new();
    let input: Vec<_> = frags.iter().rev().map(|f| (0, f.clone())).collect();
    let mut got = Vec::new();
    for (ts, f) in &input {
        if let Some(p) = d.decode(&frame(LinkType::ETHERNET, f, *ts)) {
            assert_eq!((p.src, p.dst, p.ip.clone()), (addr(A6), addr(B6), None));
            got.push(p.payload.to_vec());
        }
    }
    assert_eq!(got, vec![payload]);
}

/// A destination options header in the fragmentable part is only visible
/// after reassembly, and is skipped then.
#[test]
fn ipv6_fragment_with_extension_in_fragmentable_part() {
    let payload = vec![7u8; 1800];
    let (_, ip6) = udp_frame(A6, B6, &payload);
    let mut with_dst = ip6[..40].to_vec();
    with_dst[6] = 60;
    with_dst.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    with_dst.extend_from_slice(&ip6[40..]);
    let plen = (with_dst.len() - 40) as u16;
    with_dst[4..6].copy_from_slice(&plen.to_be_bytes());
    let frags = fragment_v6(&with_dst, &[1000], 5);
    let mut d = Decoder::new();
    let input: Vec<_> = frags.into_iter().map(|f| (0, f)).collect();
    assert_eq!(run_frames(&mut d, &input), vec![payload]);
}

#[test]
fn tcp_reordering_and_retransmission() {
    let (c, s) = ("192.0.2.1:5060", "192.0.2.2:5060");
    let mut d = Decoder::new();
    let isn = 0xffff_fff0u32; // wraps during the stream
    let msg = b"INVITE sip:bob@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let seg = |off: usize, len: usize, flags: u8| {
        tcp_frame(
            c,
            s,
            isn.wrapping_add(1 + off as u32),
            flags,
            &msg[off..off + len],
        )
    };
    let syn = tcp_frame(c, s, isn, 0x02, b"");
    let frames = vec![
        (0, syn),
        (0, seg(0, 10, 0x18)),
        (0, seg(20, 10, 0x18)), // out of order
        (0, seg(0, 10, 0x18)),  // retransmission
        (0, seg(5, 20, 0x18)),  // overlaps both sides, fills the gap
        (0, seg(30, msg.len() - 30, 0x19)),
    ];
    let mut stream = Vec::new();
    for (ts, f) in &frames {
        if let Some(p) = d.decode(&frame(LinkType::ETHERNET, f, *ts)) {
            assert_eq!(p.transport, Transport::Tcp);
            stream.extend_from_slice(p.payload);
        }
    }
    assert_eq!(stream, msg);
    let st = d.stats();
    assert_eq!(st.tcp_out_of_order, 1);
    assert!(st.tcp_retransmissions >= 2);
    // After the FIN, a late retransmission is recognised, not re-delivered.
    let late = &frames[5].1;
    assert!(d.decode(&frame(LinkType::ETHERNET, late, 0)).is_none());
    let late = &frames[1].1;
    assert!(d.decode(&frame(LinkType::ETHERNET, late, 0)).is_none());
    // Data beyond the FIN (port pair reused, SYN not captured) starts over.
    let seg = tcp_frame(c, s, 0x1000, 0x18, b"new");
    let p = d.decode(&frame(LinkType::ETHERNET, &seg, 0)).unwrap();
    assert_eq!(p.payload, b"new");
    // A new SYN restarts the direction too.
    let syn = tcp_frame(c, s, 99, 0x02, b"");
    assert!(d.decode(&frame(LinkType::ETHERNET, &syn, 0)).is_none());
    let seg = tcp_frame(c, s, 100, 0x18, b"again");
    assert_eq!(
        d.decode(&frame(LinkType::ETHERNET, &seg, 0))
            .unwrap()
            .payload,
        b"again"
    );
}

#[test]
fn tcp_gap_is_skipped_when_buffer_is_full() {
    let mut cfg = DecoderConfig::default();
    cfg.max_tcp_buffered = 100;
    let mut d = Decoder::with_config(cfg);
    let (c, s) = ("192.0.2.1:1000", "192.0.2.2:5060");
    let mut got = Vec::new();
    let mut push = |d: &mut Decoder, seq: u32, data: &[u8]| {
        if let Some(p) = d.decode(&frame(
            LinkType::ETHERNET,
            &tcp_frame(c, s, seq, 0x18, data),
            0,
        )) {
            got.extend_from_slice(p.payload);
        }
    };
    push(&mut d, 1000, &[b'a'; 10]);
    push(&mut d, 1100, &[b'c'; 60]); // gap 1010..1100 never arrives
    push(&mut d, 1160, &[b'd'; 60]);
    assert_eq!(got.len(), 130);
    assert_eq!((d.stats().tcp_gaps, d.stats().tcp_gap_bytes), (1, 90));
    // The delivery after the gap says so.
    let mut d = Decoder::with_config({
        let mut c = DecoderConfig::default();
        c.max_tcp_buffered = 10;
        c
    });
    let first = tcp_frame(c, s, 1, 0x18, b"abc");
    let after_gap = tcp_frame(c, s, 100, 0x18, b"0123456789ab");
    let p = d.decode(&frame(LinkType::ETHERNET, &first, 0)).unwrap();
    assert!(!p.stream_gap);
    let p = d.decode(&frame(LinkType::ETHERNET, &after_gap, 0)).unwrap();
    assert!(p.stream_gap);
    assert_eq!(p.payload, b"0123456789ab");
}

#[test]
fn rst_drops_flow_and_ack_only_creates_none() {
    let (c, s) = ("192.0.2.1:1000", "192.0.2.2:5060");
    let mut d = Decoder::new();
    assert!(
        d.decode(&frame(
            LinkType::ETHERNET,
            &tcp_frame(c, s, 5, 0x10, b""),
            0
        ))
        .is_none()
    );
    assert!(
        d.decode(&frame(
            LinkType::ETHERNET,
            &tcp_frame(c, s, 5, 0x18, b"ab"),
            0
        ))
        .is_some()
    );
    assert!(
        d.decode(&frame(
            LinkType::ETHERNET,
            &tcp_frame(c, s, 7, 0x04, b""),
            0
        ))
        .is_none()
    );
    // A new flow starts wherever its first data segment is.
    let seg = tcp_frame(c, s, 900, 0x18, b"cd");
    let p = d.decode(&frame(LinkType::ETHERNET, &seg, 0)).unwrap();
    assert_eq!(p.payload, b"cd");
    // Bare ACKs with any sequence number are not out-of-order data.
    for seq in [902, 5000, 100] {
        let ack = tcp_frame(c, s, seq, 0x10, b"");
        assert!(d.decode(&frame(LinkType::ETHERNET, &ack, 0)).is_none());
    }
    assert_eq!(
        (d.stats().tcp_out_of_order, d.stats().tcp_retransmissions),
        (0, 0)
    );
    let seg = tcp_frame(c, s, 902, 0x18, b"ef");
    assert_eq!(
        d.decode(&frame(LinkType::ETHERNET, &seg, 0))
            .unwrap()
            .payload,
        b"ef"
    );
}

#[test]
fn built_frames_have_valid_checksums() {
    for (src, dst) in [(A4, B4), (A6, B6)] {
        for len in [0usize, 1, 160, 1001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let (eth, ip) = udp_frame(src, dst, &payload);
            assert_eq!(&eth[..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
            let (pseudo, udp) = if ip[0] >> 4 == 4 {
                assert_eq!(fold(sum16(&ip[..20])), 0xffff, "IPv4 header checksum");
                (sum16(&ip[12..20]), &ip[20..])
            } else {
                (sum16(&ip[8..40]), &ip[40..])
            };
            let total = pseudo + 17 + udp.len() as u32 + sum16(udp);
            assert_eq!(fold(total), 0xffff, "UDP checksum {src} len {len}");
            assert_ne!(&udp[6..8], &[0, 0]);
        }
    }
    let mut out = Vec::new();
    assert!(build_udp_frame(addr(A4), addr(B6), b"", &mut out).is_err());
}

#[test]
fn writer_output_reads_back() {
    let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, TsResolution::Nano).unwrap();
    let (eth, _) = udp_frame(A4, B4, b"abc");
    w.write(Timestamp(1_700_000_000_123_456_789), &eth, eth.len() as u32)
        .unwrap();
    let bytes = w.into_inner();
    let mut r = FileReader::new(&bytes[..]).unwrap();
    let f = r.next_frame().unwrap().unwrap();
    assert_eq!(
        (f.ts.0, f.link, f.data),
        (1_700_000_000_123_456_789, LinkType::ETHERNET, &eth[..])
    );
    assert!(r.next_frame().is_none());
}

#[test]
fn writer_rejects_other_link_types() {
    let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, TsResolution::Micro).unwrap();
    let raw = [0x45u8; 20];
    assert!(w.write_frame(&frame(LinkType::RAW, &raw, 0)).is_err());
    assert!(w.write_frame(&frame(LinkType::ETHERNET, &raw, 0)).is_ok());
    assert_eq!(w.link(), LinkType::ETHERNET);
}

#[test]
fn corrupt_record_lengths_are_reported_with_offset() {
    // Classic pcap: one good record, then one claiming 2 GB.
    let mut w = PcapWriter::new(Vec::new(), LinkType::RAW, TsResolution::Micro).unwrap();
    let (_, ip) = udp_frame(A4, B4, b"x");
    w.write(Timestamp(0), &ip, ip.len() as u32).unwrap();
    let mut file = w.into_inner();
    let bad_at = file.len() as u64;
    let mut rec = [0u8; 16];
    rec[8..12].copy_from_slice(&0x7fff_ffffu32.to_ne_bytes());
    file.extend_from_slice(&rec);
    file.extend_from_slice(&[0; 64]);
    let mut r = FileReader::new(&file[..]).unwrap();
    assert!(r.next_frame().unwrap().is_ok());
    match r.next_frame().unwrap() {
        Err(wire::capture::Error::Corrupt { offset, frame, .. }) => {
            assert_eq!((offset, frame), (bad_at, 2));
        }
        other => panic!("{other:?}"),
    }
    assert!(r.next_frame().is_none());
}

/// Big-endian classic pcap, µs and ns magic, built by hand.
#[test]
fn big_endian_pcap_both_resolutions() {
    let (_, ip) = udp_frame(A4, B4, b"be");
    for (magic, frac, expected_ns) in [
        (0xa1b2_c3d4u32, 123_456u32, 123_456_000u64),
        (0xa1b2_3c4d, 123_456_789, 123_456_789),
    ] {
        let mut f = magic.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&101u32.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&frac.to_be_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
        f.extend_from_slice(&ip);
        let mut r = FileReader::new(&f[..]).unwrap();
        assert!(matches!(
            r.format(),
            wire::capture::FileFormat::Pcap {
                big_endian: true,
                ..
            }
        ));
        let fr = r.next_frame().unwrap().unwrap();
        assert_eq!(
            (fr.ts.0, fr.link, fr.data),
            (7_000_000_000 + expected_ns, LinkType::RAW, &ip[..])
        );
        assert!(r.next_frame().is_none());
    }
}

/// A source that returns at most a few bytes per read exercises buffer
/// refills at every boundary; the frames must match slice reading.
#[test]
fn short_reads_give_the_same_frames() {
    struct Dribble<'a>(&'a [u8], usize);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, TsResolution::Nano).unwrap();
    for i in 0..50u32 {
        let payload = vec![i as u8; (i * 37 % 300) as usize];
        let (eth, _) = udp_frame(A4, B4, &payload);
        w.write(Timestamp(u64::from(i) * 20_000_000), &eth, eth.len() as u32)
            .unwrap();
    }
    let file = w.into_inner();
    let collect = |mut r: FileReader<Box<dyn std::io::Read + '_>>| {
        let mut v = Vec::new();
        while let Some(f) = r.next_frame() {
            let f = f.unwrap();
            v.push((f.ts, f.data.to_vec()));
        }
        v
    };
    let whole = collect(FileReader::new(Box::new(&file[..]) as Box<dyn std::io::Read>).unwrap());
    let dribbled =
        collect(FileReader::new(Box::new(Dribble(&file, 0)) as Box<dyn std::io::Read>).unwrap());
    assert_eq!(whole.len(), 50);
    assert_eq!(whole, dribbled);
}

/// A record larger than the initial 1 MiB buffer makes it grow.
#[test]
fn records_larger_than_the_buffer() {
    let mut f = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    f.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&(8u32 << 20).to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    for len in [big.len(), 10] {
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(len as u32).to_le_bytes());
        f.extend_from_slice(&(len as u32).to_le_bytes());
        f.extend_from_slice(&big[..len]);
    }
    let mut r = FileReader::new(&f[..]).unwrap();
    assert_eq!(r.next_frame().unwrap().unwrap().data, &big[..]);
    assert_eq!(r.next_frame().unwrap().unwrap().data, &big[..10]);
    assert!(r.next_frame().is_none());
    assert_eq!(r.byte_offset(), f.len() as u64);
}

#[test]
fn garbage_files_are_rejected() {
    assert!(matches!(
        FileReader::new(&b"hello world, not a pcap"[..]),
        Err(wire::capture::Error::UnknownFormat { .. })
    ));
    assert!(FileReader::new(&b"\xd4\xc3"[..]).is_err());
}

/// pcapng with two interfaces of different link types and resolutions,
/// built by hand (little-endian).
#[test]
fn pcapng_interfaces_have_their_own_link_and_resolution() {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let len = (12 + body.len()) as u32;
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut f = Vec::new();
    let mut shb = 0x1a2b3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut f, 0x0a0d0d0a, &shb);
    // Interface 0: Ethernet, default µs. Interface 1: raw IP, if_tsresol=9.
    let mut idb0 = 1u16.to_le_bytes().to_vec();
    idb0.extend_from_slice(&[0, 0, 0, 0, 4, 0]);
    block(&mut f, 1, &idb0);
    let mut idb1 = 101u16.to_le_bytes().to_vec();
    idb1.extend_from_slice(&[0, 0, 0, 0, 4, 0]);
    idb1.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    block(&mut f, 1, &idb1);
    let (eth, ip) = udp_frame(A4, B4, b"ng");
    for (iface, ticks, data) in [(0u32, 1_500_000u64, &eth), (1, 2_000_000_123, &ip)] {
        let mut epb = iface.to_le_bytes().to_vec();
        epb.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ticks as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(data);
        while epb.len() % 4 != 0 {
            epb.push(0);
        }
        block(&mut f, 6, &epb);
    }
    let mut r = FileReader::new(&f[..]).unwrap();
    let mut d = Decoder::new();
    let a = r.next_frame().unwrap().unwrap();
    assert_eq!((a.ts.0, a.link), (1_500_000_000, LinkType::ETHERNET));
    assert_eq!(d.decode(&a).unwrap().payload, b"ng");
    let b = r.next_frame().unwrap().unwrap();
    assert_eq!((b.ts.0, b.link), (2_000_000_123, LinkType::RAW));
    assert_eq!(d.decode(&b).unwrap().payload, b"ng");
    assert!(r.next_frame().is_none());
    // An EPB naming an undeclared interface is a clear error.
    let mut bad = f.clone();
    let mut epb = 7u32.to_le_bytes().to_vec();
    epb.extend_from_slice(&[0; 16]);
    block(&mut bad, 6, &epb);
    let mut r = FileReader::new(&bad[..]).unwrap();
    assert!(r.next_frame().unwrap().is_ok());
    assert!(r.next_frame().unwrap().is_ok());
    let err = r.next_frame().unwrap().unwrap_err();
    assert!(err.to_string().contains("frame 3"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_frames_never_panic(
        link in prop::sample::select(vec![0u32, 1, 12, 14, 101, 108, 113, 228, 229, 276, 9999]),
        data in prop::collection::vec(any::<u8>(), 0..200),
        prefix in prop::sample::select(vec![
            vec![], vec![0x45], vec![0x60], vec![0x46, 0, 0, 40, 0, 0, 0x20, 0],
        ]),
    ) {
        let mut d = Decoder::new();
        let mut bytes = prefix.clone();
        bytes.extend_from_slice(&data);
        let _ = d.decode(&frame(LinkType(link), &bytes, 0));
        // Also as the payload of an Ethernet frame.
        let eth = ether(if prefix.first() == Some(&0x60) { 0x86dd } else { 0x0800 }, &bytes);
        let _ = d.decode(&frame(LinkType::ETHERNET, &eth, 0));
    }

    #[test]
    fn random_files_never_panic(data in prop::collection::vec(any::<u8>(), 0..400), pcapng in any::<bool>()) {
        let mut bytes = if pcapng {
            vec![0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a]
        } else {
            vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]
        };
        bytes.extend_from_slice(&data);
        if let Ok(mut r) = FileReader::new(&bytes[..]) {
            let mut d = Decoder::new();
            while let Some(Ok(f)) = r.next_frame() {
                let _ = d.decode(&f);
            }
        }
    }

    #[test]
    fn random_fragmentation_reassembles(
        payload in prop::collection::vec(any::<u8>(), 1..4000),
        cuts in prop::collection::vec(1usize..500, 1..8),
        seed in any::<u64>(),
        v6 in any::<bool>(),
    ) {
        let (_, ip) = if v6 { udp_frame(A6, B6, &payload) } else { udp_frame(A4, B4, &payload) };
        let udp_len = payload.len() + 8;
        let points: Vec<usize> = cuts
            .iter()
            .scan(0, |acc, c| { *acc += c * 8; Some(*acc) })
            .filter(|&p| p < udp_len)
            .collect();
        let mut frags = if v6 { fragment_v6(&ip, &points, 42) } else { fragment_v4(&ip, &points) };
        shuffle(&mut frags, seed);
        let mut d = Decoder::new();
        let input: Vec<_> = frags.into_iter().map(|f| (0, f)).collect();
        let out = run_frames(&mut d, &input);
        prop_assert_eq!(out, vec![payload]);
    }

    #[test]
    fn random_tcp_segments_reassemble(
        stream in prop::collection::vec(any::<u8>(), 1..3000),
        cuts in prop::collection::vec(1usize..300, 1..20),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        isn in any::<u32>(),
        seed in any::<u64>(),
    ) {
        let (c, s) = ("192.0.2.1:1000", "192.0.2.2:5060");
        let mut bounds = vec![0];
        let mut acc = 0;
        for cut in &cuts {
            acc += cut;
            if acc < stream.len() { bounds.push(acc); }
        }
        bounds.push(stream.len());
        let mut segs: Vec<Vec<u8>> = bounds
            .windows(2)
            .map(|w| tcp_frame(c, s, isn.wrapping_add(1 + w[0] as u32), 0x18, &stream[w[0]..w[1]]))
            .collect();
        for i in &dups {
            let dup = segs[i.index(segs.len())].clone();
            segs.push(dup);
        }
        shuffle(&mut segs, seed);
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let syn = tcp_frame(c, s, isn, 0x02, b"");
        for f in std::iter::once(&syn).chain(segs.iter()) {
            if let Some(p) = d.decode(&frame(LinkType::ETHERNET, f, 0)) {
                out.extend_from_slice(p.payload);
            }
        }
        prop_assert_eq!(out, stream);
    }
}

/// Deterministic Fisher–Yates shuffle (xorshift), so failures reproduce.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}
