//! The recorder process end to end, on loopback with ephemeral ports: a real
//! child process (this test binary re-executed in server mode), real
//! sockets, `kill -9` and restart.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "an end-to-end test of the driver uses real sockets and real time"
)]

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use mis::proto::{Control, ProtoVersion, SessionId};
use wire::Timestamp;

/// Not a test on its own: the child process's body (see `common`).
#[test]
fn child_server() {
    common::child_main();
}

#[test]
fn records_searches_and_serves_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ctl = connect(srv.control);
    send(&mut ctl, &session_start(7));
    // Garbage on both ports and packets for an unknown session: counted.
    udp.send_to(b"not an ingest datagram", srv.media).unwrap();
    udp.send_to(&datagram(999, 0, 0), srv.media).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    send_media(&udp, srv.media, 7, 0..100);
    std::thread::sleep(Duration::from_millis(200));
    send(
        &mut ctl,
        &Control::Stop {
            session: SessionId(7),
            time: Timestamp(1_700_000_002_000_000_000),
        },
    );
    let e = wait_recording(srv.http, "number=1239999&domain=example.com");
    assert_eq!(e["call_id"], "call-7@example.com");
    assert_eq!(e["duration_ms"], 2000);
    let id = e["id"].as_str().unwrap().to_owned();
    check_stereo(srv.http, &id, 100);

    // Search filters; time range in Unix seconds.
    let (_, b) = http_get(srv.http, "/api/recordings?domain=other.example");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["recordings"],
        serde_json::json!([])
    );
    let (_, b) = http_get(srv.http, "/api/recordings?from=1700000000&to=1700000001");
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["recordings"].as_array().unwrap().len(), 1);
    let (_, b) = http_get(srv.http, "/api/recordings?from=1700000001");
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["recordings"].as_array().unwrap().len(), 0);
    assert_eq!(http_get(srv.http, "/api/recordings/nope.wav").0, 404);
    assert_eq!(
        http_get(srv.http, "/api/recordings/..%2Findex.jsonl").0,
        404
    );

    // Media after stop, garbage on the metadata port: counted, no crash.
    udp.send_to(&datagram(7, 0, 200), srv.media).unwrap();
    let mut junk = TcpStream::connect(srv.control).unwrap();
    junk.write_all(&[0xFF; 64]).unwrap();
    // A sender that speaks only a future version is rejected.
    let mut old = TcpStream::connect(srv.control).unwrap();
    old.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(
        &mut old,
        &Control::Hello {
            min: ProtoVersion(9),
            max: ProtoVersion(9),
            agent: "future".into(),
        },
    );
    assert!(matches!(read_frame(&mut old), Control::Reject { .. }));
    std::thread::sleep(Duration::from_millis(100));
    let (_, m) = http_get(srv.http, "/metrics");
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("voxplane_mis_media_packets_total 200\n"), "{m}");
    assert!(
        m.contains("voxplane_mis_dropped_malformed_total 1\n"),
        "{m}"
    );
    assert!(
        m.contains("voxplane_mis_dropped_unknown_session_total 1\n"),
        "{m}"
    );
    assert!(
        m.contains("voxplane_mis_dropped_after_stop_total 1\n"),
        "{m}"
    );
    // The journal is gone once the files are durable.
    assert_eq!(
        std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn call_in_progress_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ctl = connect(srv.control);
    send(&mut ctl, &session_start(11));
    std::thread::sleep(Duration::from_millis(100));
    send_media(&udp, srv.media, 11, 0..150);
    // Give the recorder time to receive (not necessarily to fsync).
    std::thread::sleep(Duration::from_millis(300));
    srv.kill9();
    drop(ctl);

    let srv = Server::start(dir.path());
    let udp2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_media(&udp2, srv.media, 11, 150..250);
    std::thread::sleep(Duration::from_millis(200));
    let mut ctl = connect(srv.control);
    send(
        &mut ctl,
        &Control::Stop {
            session: SessionId(11),
            time: Timestamp(1_700_000_005_000_000_000),
        },
    );
    let e = wait_recording(srv.http, "call_id=call-11@example.com");
    let id = e["id"].as_str().unwrap().to_owned();
    check_stereo(srv.http, &id, 250);
    assert_eq!(
        std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .count(),
        0
    );
}

/// Retention by total size: the oldest recordings' files and index
/// entries go once the limit is exceeded.
fn listed(http: std::net::SocketAddr) -> Vec<String> {
    let (_, body) = http_get(http, "/api/recordings");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["call_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn oldest_recordings_go_over_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    // One 1-s call: stereo 32,044 + mono 16,044 octets. Room for two.
    let srv = Server::start_with(dir.path(), &[(RETAIN_BYTES_ENV, "100000")]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ctl = connect(srv.control);
    for id in 1..=3u64 {
        send(&mut ctl, &session_start(id));
        std::thread::sleep(Duration::from_millis(100));
        send_media(&udp, srv.media, id, 0..50);
        std::thread::sleep(Duration::from_millis(100));
        // Calls end one after the other: 1 is the oldest.
        send(
            &mut ctl,
            &Control::Stop {
                session: SessionId(id),
                time: Timestamp(1_700_000_001_000_000_000 + id),
            },
        );
        wait_recording(srv.http, &format!("call_id=call-{id}@example.com"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(srv.http).len() > 2 {
        assert!(
            Instant::now() < deadline,
            "retention never ran: {:?}",
            listed(srv.http)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut left = listed(srv.http);
    left.sort();
    assert_eq!(left, ["call-2@example.com", "call-3@example.com"]);
    let files: Vec<String> = std::fs::read_dir(dir.path().join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 4, "two recordings, stereo and mono: {files:?}");
    assert!(
        files.iter().all(|f| !f.contains(&format!("{:016x}", 1))),
        "{files:?}"
    );
    let (_, body) = http_get(srv.http, "/metrics");
    assert!(String::from_utf8_lossy(&body).contains("voxplane_mis_retention_deleted_total 1"));
    // The tombstone survives a restart.
    drop(srv);
    let srv = Server::start(dir.path());
    let mut left = listed(srv.http);
    left.sort();
    assert_eq!(left, ["call-2@example.com", "call-3@example.com"]);
}
