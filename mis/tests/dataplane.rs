//! The dataplane's MIS sink against the real recorder: a call relayed over
//! loopback by the UDP backend, recording switched on over ng, the
//! recorder (a child process) renders the call's WAVs bit-exact with the
//! RTP the parties sent.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "an end-to-end test of two drivers uses real sockets and real time"
)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use dataplane::mis_sink::MisConfig;
use dataplane::ng::NgServer;
use dataplane::relay::{Answer, Control, Offer, RelayConfig, SessionFlags};
use dataplane::udp::{MirrorConfig, UdpBackend, UdpConfig};
use wire::bencode::Value;

/// Not a test on its own: the child process's body (see `common`).
#[test]
fn child_server() {
    common::child_main();
}

fn sdp(sock: &UdpSocket) -> String {
    let a = sock.local_addr().unwrap();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\n",
        ip = a.ip(),
        port = a.port()
    )
}

fn relay_port(sdp: &str) -> u16 {
    let m = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split(' ').nth(1).unwrap().parse().unwrap()
}

fn ng(control: &mut dyn Control, command: &str, call_id: &str) -> Vec<u8> {
    let mut req = b"c1 ".to_vec();
    Value::Dict(vec![
        (b"command".as_slice(), Value::str(command)),
        (b"call-id".as_slice(), Value::str(call_id)),
    ])
    .emit(&mut req);
    let resp = NgServer::new()
        .handle_request(Instant::now(), control, &req)
        .unwrap();
    resp[3..].to_vec()
}

fn metric(http: std::net::SocketAddr, name: &str) -> u64 {
    let (_, body) = http_get(http, "/metrics");
    let key = format!("voxplane_mis_{name} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&key).map(|v| v.trim().parse().unwrap()))
        .unwrap()
}

/// The channel's samples after its leading silence (the leg's start
/// offset, which follows the relay's capture times).
fn trimmed(ch: &[i16]) -> &[i16] {
    let k = ch.iter().position(|&s| s != 0).unwrap_or(ch.len());
    &ch[k..]
}

#[test]
fn relayed_call_recorded_bit_exact() {
    const N: u16 = 100;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let backend = UdpBackend::start(UdpConfig {
        relay: RelayConfig {
            media_v4: Some("127.0.0.1".parse().unwrap()),
            media_v6: None,
            ports: 49600..=49799,
            max_sessions: 10,
            ..RelayConfig::default()
        },
        workers: 2,
        mirror: MirrorConfig {
            mis: Some(MisConfig {
                control: srv.control,
                media: srv.media,
            }),
            ..MirrorConfig::default()
        },
    })
    .unwrap();
    let mut control = backend.control();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.counters().1.mis_connected < 2 {
        assert!(Instant::now() < deadline, "the MIS links never connected");
        std::thread::sleep(Duration::from_millis(20));
    }

    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&caller, &callee] {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    let call = "mis-e2e@192.0.2.1";
    let flags = SessionFlags::default();
    let to_callee = control
        .offer(
            Instant::now(),
            &Offer {
                call_id: call,
                from_tag: "a",
                sdp: &sdp(&caller),
                flags,
            },
        )
        .unwrap();
    let to_caller = control
        .answer(
            Instant::now(),
            &Answer {
                call_id: call,
                from_tag: "a",
                to_tag: "b",
                sdp: &sdp(&callee),
                flags,
            },
        )
        .unwrap();
    // Each party talks to the relay port in the SDP it received.
    let caller_dst = ("127.0.0.1", relay_port(&to_caller));
    let callee_dst = ("127.0.0.1", relay_port(&to_callee));
    // Not recorded yet: nothing reaches the recorder.
    caller.send_to(&rtp(0, 0), caller_dst).unwrap();
    let mut buf = [0u8; 2048];
    callee.recv_from(&mut buf).expect("relayed");
    assert_eq!(backend.counters().1.mis_packets, 0);

    assert_eq!(ng(&mut control, "start recording", call), b"d6:result2:oke");
    // The Start travels over TCP, the copies over UDP: copies that overtake
    // it are dropped as for an unknown session (docs/dataplane.md), so the
    // parties talk once the recorder has the session.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(srv.http, "sessions_started_total") < 1 {
        assert!(
            Instant::now() < deadline,
            "the recorder never got the Start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..N {
        caller.send_to(&rtp(0, i), caller_dst).unwrap();
        callee.send_to(&rtp(1, i), callee_dst).unwrap();
        callee.recv_from(&mut buf).expect("forwarded to the callee");
        caller.recv_from(&mut buf).expect("forwarded to the caller");
    }
    // A BYE: the session is deleted, the sink sends Stop.
    control.delete(Instant::now(), call).unwrap();
    let (_, io) = backend.counters();
    assert_eq!(io.mis_packets, 2 * u64::from(N), "{io:?}");
    assert_eq!((io.mis_drops, io.mis_meta_drops), (0, 0));

    let e = wait_recording(srv.http, &format!("call_id={call}"));
    let id = e["id"].as_str().unwrap().to_owned();
    let (status, body) = http_get(srv.http, &format!("/api/recordings/{id}.wav"));
    assert_eq!(status, 200);
    let (channels, s) = wav(&body);
    assert_eq!(channels, 2);
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
    let n = usize::from(N) * 160;
    // Each leg starts at its first copy's capture time; the audio itself
    // is the payloads sent, sample for sample, then the shorter leg's
    // padding.
    for (ch, leg) in [(&left, 0), (&right, 1)] {
        let t = trimmed(ch);
        assert!(t.len() >= n, "leg {leg}: {} samples", t.len());
        assert!(t[..n] == expected_leg(leg, N)[..], "leg {leg} differs");
        assert!(t[n..].iter().all(|&x| x == 0), "leg {leg}: padding");
    }
    assert!(
        left.len() - trimmed(&left).len() == 0 || right.len() - trimmed(&right).len() == 0,
        "one leg starts the recording"
    );
    // The mixed mono file is there too.
    let (status, _) = http_get(srv.http, &format!("/api/recordings/{id}.mono.wav"));
    assert_eq!(status, 200);
}
