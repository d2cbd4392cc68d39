//! `media_redirect` through `BPF_PROG_TEST_RUN`, and the worker's frame
//! accounting. Skipped (with `SKIP:`) without CAP_BPF / CAP_NET_ADMIN,
//! unless `VOXPLANE_REQUIRE_TOOLS` is set.

use super::*;

const MEDIA: MediaConfig = MediaConfig {
    port_lo: 30000,
    port_hi: 30099,
    flags: 0,
};

/// Whether an error only says we lack a privilege or a kernel feature (a
/// reason to skip), rather than that something is wrong (a failure).
fn skippable(e: &AfXdpError) -> bool {
    let text = e.to_string();
    std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none()
        && [
            "Operation not permitted",
            "Permission denied",
            "not supported",
        ]
        .iter()
        .any(|s| text.contains(s))
}

/// Loads the program, or explains why not (and fails under CI).
fn load(test: &str) -> Option<MediaRedirect> {
    match MediaRedirect::load(MEDIA) {
        Ok(p) => Some(p),
        Err(e) if !skippable(&e) => panic!("{test}: cannot load the XDP program: {e}"),
        Err(e) => {
            eprintln!("SKIP: {test}: cannot load the XDP program (needs CAP_BPF): {e}");
            None
        }
    }
}

/// An AF_XDP socket on loopback, so the XSKMAP has an entry for queue 0.
fn loopback_xsk(test: &str) -> Option<(FramePool, sys::Xsk)> {
    let made = FramePool::new(64, 64).and_then(|mut pool| {
        let xsk = sys::Xsk::new(&mut pool, "lo", 0, 64)?;
        Ok((pool, xsk))
    });
    match made {
        Ok(x) => Some(x),
        Err(e) if !skippable(&e) => panic!("{test}: AF_XDP socket: {e}"),
        Err(e) => {
            eprintln!("SKIP: {test}: no AF_XDP socket: {e}");
            None
        }
    }
}

const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn ether(ethertype: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    for vid in vlans {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn ipv4(proto: u8, frag_off: u16, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ];
    h[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
    h[6..8].copy_from_slice(&frag_off.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    let mut dst = src;
    src[15] = 1;
    dst[15] = 2;
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(l4);
    h
}

/// A 172-byte RTP payload (12-byte header + 160 bytes of G.711).
fn rtp() -> Vec<u8> {
    let mut p = vec![0x80, 8, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn media_v4(dport: u16) -> Vec<u8> {
    ether(0x0800, &[], &ipv4(17, 0x4000, &udp(40000, dport, &rtp())))
}

#[test]
fn media_is_redirected_and_everything_else_passed() {
    let test = "media_is_redirected_and_everything_else_passed";
    let Some(mut prog) = load(test) else { return };
    let Some((_pool, xsk)) = loopback_xsk(test) else {
        return;
    };
    prog.register(0, xsk.fd()).unwrap();

    let sip = b"OPTIONS sip:192.0.2.2 SIP/2.0\r\n\r\n";
    let arp = {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&MAC_SRC);
        a.extend_from_slice(&[192, 0, 2, 1]);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&[192, 0, 2, 2]);
        a
    };
    let icmp = [8, 0, 0xf7, 0xff, 0, 0, 0, 0];
    let tcp_ssh = {
        let mut t = vec![
            0xc3, 0x50, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        t.extend_from_slice(b"SSH-2.0");
        t
    };
    let cases: Vec<(&str, Vec<u8>, XdpAction, MediaCounter)> = vec![
        (
            "UDP v4, first media port",
            media_v4(30000),
            XdpAction::Redirect,
            MediaCounter::Redirected,
        ),
        (
            "UDP v4, last media port",
            media_v4(30099),
            XdpAction::Redirect,
            MediaCounter::Redirected,
        ),
        (
            "UDP v6 in range",
            ether(0x86dd, &[], &ipv6(17, &udp(40000, 30050, &rtp()))),
            XdpAction::Redirect,
            MediaCounter::Redirected,
        ),
        (
            "UDP v4 in range behind a VLAN tag",
            ether(0x0800, &[100], &ipv4(17, 0, &udp(40000, 30001, &rtp()))),
            XdpAction::Redirect,
            MediaCounter::Redirected,
        ),
        (
            "UDP v4 in range behind QinQ",
            ether(
                0x0800,
                &[100, 200],
                &ipv4(17, 0, &udp(40000, 30001, &rtp())),
            ),
            XdpAction::Redirect,
            MediaCounter::Redirected,
        ),
        (
            "UDP v4 one below the range",
            media_v4(29999),
            XdpAction::Pass,
            MediaCounter::PassPort,
        ),
        (
            "UDP v4 one above the range",
            media_v4(30100),
            XdpAction::Pass,
            MediaCounter::PassPort,
        ),
        (
            "SIP over UDP v4",
            ether(0x0800, &[], &ipv4(17, 0, &udp(5060, 5060, sip))),
            XdpAction::Pass,
            MediaCounter::PassPort,
        ),
        (
            "SIP over UDP v6",
            ether(0x86dd, &[], &ipv6(17, &udp(5060, 5060, sip))),
            XdpAction::Pass,
            MediaCounter::PassPort,
        ),
        (
            "ARP request",
            ether(0x0806, &[], &arp),
            XdpAction::Pass,
            MediaCounter::PassNotIp,
        ),
        (
            "ICMP echo",
            ether(0x0800, &[], &ipv4(1, 0, &icmp)),
            XdpAction::Pass,
            MediaCounter::PassNotUdp,
        ),
        (
            "TCP to SSH",
            ether(0x0800, &[], &ipv4(6, 0, &tcp_ssh)),
            XdpAction::Pass,
            MediaCounter::PassNotUdp,
        ),
        (
            "IPv6 with a hop-by-hop header before UDP",
            ether(0x86dd, &[], &ipv6(0, &[17, 0, 1, 4, 0, 0, 0, 0])),
            XdpAction::Pass,
            MediaCounter::PassNotUdp,
        ),
        (
            "IPv4 first fragment (MF) to a media port",
            ether(0x0800, &[], &ipv4(17, 0x2000, &udp(40000, 30000, &rtp()))),
            XdpAction::Pass,
            MediaCounter::PassFragment,
        ),
        (
            "IPv4 later fragment",
            ether(0x0800, &[], &ipv4(17, 0x0010, &rtp())),
            XdpAction::Pass,
            MediaCounter::PassFragment,
        ),
    ];
    let mut expected = [0u64; MediaCounter::ALL.len()];
    for (what, frame, action, counter) in &cases {
        assert_eq!(prog.test_run(frame).unwrap(), *action, "{what}");
        expected[counter.key() as usize] += 1;
    }
    assert_eq!(prog.counters().unwrap(), expected);
}

#[test]
fn malformed_and_truncated_frames_are_passed() {
    let test = "malformed_and_truncated_frames_are_passed";
    let Some(mut prog) = load(test) else { return };
    let full = media_v4(30000);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // Cut inside the IPv4 header, inside the UDP header, and inside the payload
    // (UDP length then overstates the frame).
    for len in [14, 20, 33, 34, 38, 41, 42, 60] {
        cases.push((
            format!("IPv4 media frame cut to {len} bytes"),
            full[..len].to_vec(),
        ));
    }
    let v6 = ether(0x86dd, &[], &ipv6(17, &udp(40000, 30000, &rtp())));
    for len in [20, 53, 54, 61] {
        cases.push((
            format!("IPv6 media frame cut to {len} bytes"),
            v6[..len].to_vec(),
        ));
    }
    cases.push(("VLAN tag cut".into(), ether(0x8100, &[], &[0, 100])));
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x44;
    cases.push(("IPv4 IHL 4 (< 20 bytes)".into(), bad_ihl));
    let mut bad_version = full.clone();
    bad_version[14] = 0x65;
    cases.push(("IP version 6 in an IPv4 ethertype".into(), bad_version));
    let mut short_udp_len = full.clone();
    short_udp_len[38..40].copy_from_slice(&7u16.to_be_bytes());
    cases.push(("UDP length 7".into(), short_udp_len));
    let mut long_ihl = full.clone();
    long_ihl[14] = 0x4f; // 60-byte header: the UDP header would start at 74
    cases.push((
        "IPv4 IHL 15 pushing UDP past the frame".into(),
        long_ihl[..80].to_vec(),
    ));
    for (what, frame) in &cases {
        assert_eq!(prog.test_run(frame).unwrap(), XdpAction::Pass, "{what}");
    }
    let counters = prog.counters().unwrap();
    assert_eq!(
        counters[MediaCounter::PassMalformed.key() as usize],
        cases.len() as u64
    );
    assert_eq!(counters[MediaCounter::Redirected.key() as usize], 0);
}

#[test]
fn media_without_a_socket_goes_to_the_kernel() {
    let Some(mut prog) = load("media_without_a_socket_goes_to_the_kernel") else {
        return;
    };
    // Nothing registered in the XSKMAP for queue 0.
    assert_eq!(prog.test_run(&media_v4(30000)).unwrap(), XdpAction::Pass);
    let c = prog.counters().unwrap();
    assert_eq!(c[MediaCounter::NoSocket.key() as usize], 1);
    assert_eq!(c[MediaCounter::Redirected.key() as usize], 0);
}

#[test]
fn port_range_follows_the_config_map() {
    let test = "port_range_follows_the_config_map";
    let Some(mut prog) = load(test) else { return };
    let Some((_pool, xsk)) = loopback_xsk(test) else {
        return;
    };
    prog.register(0, xsk.fd()).unwrap();
    assert_eq!(prog.test_run(&media_v4(40000)).unwrap(), XdpAction::Pass);
    prog.set_config(MediaConfig {
        port_lo: 40000,
        port_hi: 40000,
        flags: 0,
    })
    .unwrap();
    assert_eq!(
        prog.test_run(&media_v4(40000)).unwrap(),
        XdpAction::Redirect
    );
    assert_eq!(prog.test_run(&media_v4(30000)).unwrap(), XdpAction::Pass);
    // An empty range (lo > hi) redirects nothing.
    prog.set_config(MediaConfig {
        port_lo: 1,
        port_hi: 0,
        flags: 0,
    })
    .unwrap();
    assert_eq!(prog.test_run(&media_v4(0)).unwrap(), XdpAction::Pass);
    assert_eq!(prog.test_run(&media_v4(1)).unwrap(), XdpAction::Pass);
}

#[test]
fn queue_beyond_the_xskmap_is_refused() {
    let Some(mut prog) = load("queue_beyond_the_xskmap_is_refused") else {
        return;
    };
    let err = prog
        .register(xdp_common::MAX_QUEUES, sys::XskFd::invalid())
        .unwrap_err();
    assert!(matches!(err, AfXdpError::QueueOutOfRange(64)), "{err}");
}

#[test]
fn embedded_object_is_the_committed_one() {
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../xdp-progs/media_redirect.o"
    ))
    .unwrap();
    assert_eq!(MEDIA_REDIRECT_OBJECT, on_disk.as_slice());
}

#[test]
fn committed_objects_match_their_sources() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../xdp-progs/check.sh");
    let has_clang = std::process::Command::new("clang")
        .arg("--version")
        .output()
        .is_ok();
    if !has_clang {
        if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() {
            panic!("clang not found and VOXPLANE_REQUIRE_TOOLS is set");
        }
        eprintln!(
            "SKIP: committed_objects_match_their_sources: clang not found (apt-get install clang llvm libbpf-dev)"
        );
        return;
    }
    let out = std::process::Command::new("sh")
        .arg(script)
        .output()
        .expect("run check.sh");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One's complement sum check of an IPv4 header (0 when valid).
fn header_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `media_v4` with a valid IPv4 header checksum.
fn media_v4_checked(sport: u16, dport: u16) -> Vec<u8> {
    let mut f = ether(0x0800, &[], &ipv4(17, 0x4000, &udp(sport, dport, &rtp())));
    let sum = header_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f
}

#[test]
fn ceiling_reflects_media_rewritten_and_passes_the_rest() {
    let test = "ceiling_reflects_media_rewritten_and_passes_the_rest";
    let mut prog = match MediaReflect::load(MEDIA) {
        Ok(p) => p,
        Err(e) if !skippable(&e) => panic!("{test}: cannot load media_reflect: {e}"),
        Err(e) => {
            eprintln!("SKIP: {test}: cannot load the XDP program (needs CAP_BPF): {e}");
            return;
        }
    };
    let frame = media_v4_checked(40000, 30002);
    let (action, out) = prog.test_run(&frame).unwrap();
    assert_eq!(action, XdpAction::Tx);
    assert_eq!(out.len(), frame.len());
    assert_eq!((&out[0..6], &out[6..12]), (&MAC_SRC[..], &MAC_DST[..]));
    assert_eq!(out[14 + 8], 63, "TTL decremented");
    assert_eq!(&out[26..30], &frame[30..34], "addresses swapped");
    assert_eq!(&out[30..34], &frame[26..30]);
    assert_eq!(&out[34..36], &frame[36..38], "ports swapped");
    assert_eq!(&out[36..38], &frame[34..36]);
    assert_eq!(
        header_checksum(&out[14..34]),
        0,
        "IPv4 checksum still valid"
    );
    assert_eq!(
        &out[38..],
        &frame[38..],
        "UDP length, checksum, payload kept"
    );

    // Outside the range, not IPv4 UDP, TTL 1: the kernel's.
    assert_eq!(
        prog.test_run(&media_v4_checked(40000, 29999)).unwrap().0,
        XdpAction::Pass
    );
    let mut ttl1 = media_v4_checked(40000, 30002);
    ttl1[14 + 8] = 1;
    assert_eq!(prog.test_run(&ttl1).unwrap().0, XdpAction::Pass);
    let v6 = ether(0x86dd, &[], &ipv6(17, &udp(40000, 30002, &rtp())));
    assert_eq!(prog.test_run(&v6).unwrap().0, XdpAction::Pass);
    let tcp = ether(0x0800, &[], &ipv4(6, 0, &[0; 20]));
    assert_eq!(prog.test_run(&tcp).unwrap().0, XdpAction::Pass);
    assert_eq!(prog.counters().unwrap(), (1, 4));
}

#[test]
fn relay_handler_forwards_rewritten_frames_and_drops_spoofed_ones() {
    use crate::relay::{Answer, Offer, Relay, RelayConfig, SessionFlags};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[expect(clippy::disallowed_methods, reason = "a fixed origin for virtual time")]
    let now = Instant::now();
    let relay = Relay::new(RelayConfig {
        media_v4: Some("192.0.2.2".parse().unwrap()),
        ports: 30000..=30099,
        ..RelayConfig::default()
    })
    .unwrap();
    let sdp = |ip: &str, port: u16| {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\n"
        )
    };
    // "lo" exists in every namespace; its MAC is all zeroes.
    let mut h = RelayHandler::new(relay, &["lo".to_owned(), "lo".to_owned()]).unwrap();
    let flags = SessionFlags::default();
    let offered = h
        .relay
        .offer(
            now,
            &Offer {
                call_id: "c1",
                from_tag: "a",
                sdp: &sdp("192.0.2.1", 40000),
                flags,
            },
        )
        .unwrap();
    let answered = h
        .relay
        .answer(
            now,
            &Answer {
                call_id: "c1",
                from_tag: "a",
                to_tag: "b",
                sdp: &sdp("198.18.2.2", 50000),
                flags,
            },
        )
        .unwrap();
    let port_of = |s: &str| -> u16 {
        s.lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let (caller_to, callee_to) = (port_of(&answered), port_of(&offered));
    let callee_mac = [2, 0, 0, 0, 0, 0x22];
    h.set_next_hop(Ipv4Addr::new(198, 18, 2, 2), PortId(1), callee_mac);

    // From the caller (192.0.2.1:40000) to its relay port: out of port 1 to the callee.
    let mut frame = media_v4_checked(40000, caller_to);
    let verdict = h.handle(now + Duration::from_millis(1), PortId(0), &mut frame);
    assert_eq!(verdict, Verdict::Tx(PortId(1)));
    let parsed = crate::frame::parse(&frame).unwrap();
    assert_eq!(parsed.meta.src.ip().to_string(), "192.0.2.2");
    assert_eq!(
        parsed.meta.src.port(),
        callee_to,
        "sent from the callee's relay port"
    );
    assert_eq!(parsed.meta.dst.to_string(), "198.18.2.2:50000");
    assert_eq!(&frame[0..6], &callee_mac);
    assert_eq!(header_checksum(&frame[14..34]), 0);

    // A spoofed source on the same port after latching: dropped.
    let mut spoofed = media_v4_checked(40002, caller_to);
    assert_eq!(
        h.handle(now + Duration::from_secs(10), PortId(0), &mut spoofed),
        Verdict::Drop
    );
    // A destination with no next hop: dropped and counted.
    h.set_next_hop(Ipv4Addr::new(198, 18, 2, 2), PortId(1), callee_mac);
    let mut back = media_v4_checked(40000, callee_to);
    // From the callee's side but the caller's address is not in the table.
    back[26..30].copy_from_slice(&[198, 18, 2, 2]);
    back[34..36].copy_from_slice(&50000u16.to_be_bytes());
    let sum = header_checksum(&{
        let mut h = back[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    back[24..26].copy_from_slice(&sum.to_be_bytes());
    h.refreshed = Some(now + Duration::from_secs(10));
    assert_eq!(
        h.handle(now + Duration::from_secs(10), PortId(1), &mut back),
        Verdict::Drop
    );
    assert_eq!(h.unroutable(), 1);
    // Not UDP at all: passed (and counted by the worker).
    let mut arp = ether(0x0806, &[], &[0; 28]);
    assert_eq!(h.handle(now, PortId(0), &mut arp), Verdict::Pass);
}
