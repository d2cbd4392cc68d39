//! The dataplane's in-process mirror rings as an NQS source: a real udp
//! relay session on loopback with recording on, RTP sent both ways through
//! it, the workers' rings drained into the pipeline, and the call's two
//! streams found in the rows, attributed to the call by its Call-ID (no SIP
//! passes through NQS). About one second.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a driver test: real sockets and the wall clock of a live relay"
)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::relay::{Answer, Control as _, Offer, RelayConfig, SessionFlags};
use dataplane::udp::{MirrorConfig, UdpBackend, UdpConfig};
use nqs::api::Metrics;
use nqs::live::LiveConfig;
use nqs::service::Pipeline;
use nqs::source::MirrorSource;

fn sdp(sock: &UdpSocket) -> String {
    let a = sock.local_addr().unwrap();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtcp-mux\r\n",
        ip = a.ip(),
        port = a.port()
    )
}

/// The relay's port in a rewritten SDP.
fn relay_port(sdp: &str) -> u16 {
    let m = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .expect("m=audio line");
    m.split(' ').next().unwrap().parse().unwrap()
}

/// A 20 ms G.711 A-law packet.
fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let repr = wire::rtp::RtpRepr {
        marker: false,
        payload_type: wire::PayloadType(8),
        sequence_number: seq,
        timestamp: u32::from(seq) * 160,
        ssrc: wire::Ssrc(ssrc),
        csrcs: Vec::new(),
        extension: None,
        payload_len: 160,
        padding_len: 0,
    };
    let mut buf = vec![0xd5; repr.buffer_len()];
    repr.emit(&mut wire::rtp::RtpPacket::new_unchecked(&mut buf[..]))
        .unwrap();
    buf
}

#[test]
fn relay_mirror_rings_feed_the_pipeline() {
    let mut backend = UdpBackend::start(UdpConfig {
        relay: RelayConfig {
            media_v4: Some("127.0.0.1".parse().unwrap()),
            media_v6: None,
            ports: 53000..=53399,
            max_sessions: 10,
            ..RelayConfig::default()
        },
        workers: 2,
        mirror: MirrorConfig {
            ring_bytes: Some(1 << 20),
            ..MirrorConfig::default()
        },
    })
    .unwrap();
    let mut source = MirrorSource::new(backend.take_mirror_consumers());
    let mut control = backend.control();
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    let id = "mirror-1@192.0.2.1";
    let now = Instant::now();
    let offer = control
        .offer(
            now,
            &Offer {
                call_id: id,
                from_tag: "a",
                sdp: &sdp(&caller),
                flags: SessionFlags::default(),
            },
        )
        .unwrap();
    let answer = control
        .answer(
            now,
            &Answer {
                call_id: id,
                from_tag: "a",
                to_tag: "b",
                sdp: &sdp(&callee),
                flags: SessionFlags::default(),
            },
        )
        .unwrap();
    control.set_recording(id, true).unwrap();
    let to_caller_side: SocketAddr = ([127, 0, 0, 1], relay_port(&answer)).into();
    let to_callee_side: SocketAddr = ([127, 0, 0, 1], relay_port(&offer)).into();

    // 50 packets each way at the G.711 pace.
    for seq in 0..50 {
        caller.send_to(&rtp(0xA, seq), to_caller_side).unwrap();
        callee.send_to(&rtp(0xB, seq), to_callee_side).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut pipeline = Pipeline::new(LiveConfig::default(), None, Arc::new(Metrics::default()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while source.packets() < 100 && Instant::now() < deadline {
        if source.drain(&mut pipeline, 64) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(source.packets(), 100, "every copy arrives once");
    let end = wire::Timestamp(pipeline.poll_timeout().map_or(0, |t| t.0));
    pipeline.finish_all(end);
    let batch = pipeline.take_batch();
    assert_eq!(batch.calls.len(), 1, "{:?}", batch.calls);
    let call = &batch.calls[0];
    assert_eq!((call.call_id.as_str(), call.streams), (id, 2));
    assert_eq!(batch.streams.len(), 2);
    for s in &batch.streams {
        assert_eq!(s.call_id, id);
        assert_eq!((s.packets, s.lost), (50, 0), "{s:?}");
        assert_eq!(s.codec, "g711A");
        // Loopback at a 20 ms pace: a clean stream.
        assert!(s.mos > 4.0, "{s:?}");
    }
    let sources: Vec<&str> = batch.streams.iter().map(|s| s.src.as_str()).collect();
    let caller_addr = caller.local_addr().unwrap().to_string();
    let callee_addr = callee.local_addr().unwrap().to_string();
    assert!(sources.contains(&caller_addr.as_str()), "{sources:?}");
    assert!(sources.contains(&callee_addr.as_str()), "{sources:?}");
}
