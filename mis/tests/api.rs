//! Token scopes on the recorder's HTTP API, per endpoint and role: admin,
//! reseller (domains), share link (one recording, expiring), none, forged.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "an end-to-end test of the driver uses real sockets and real time"
)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::http_request as request;
use common::*;
use mis::proto::{Control, SessionId, SessionStart};
use nqs::api::auth::{Keyring, Scope};
use wire::Timestamp;

const SECRET: &str = "mis api test secret, 32 bytes ok";

/// Not a test on its own: the child process's body (see `common`).
#[test]
fn child_server() {
    common::child_main();
}

fn ids(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Vec<String> {
    let (status, body) = request(addr, "GET", path, bearer, "");
    assert_eq!(status, 200, "{path}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut out: Vec<String> = v["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["domain"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// Records one short call for `domain` (session `id`) and returns its
/// recording id.
fn record(srv: &Server, admin: &str, id: u64, domain: &str) -> String {
    let mut ctl = connect(srv.control);
    let Control::Start(start) = session_start(id) else {
        unreachable!()
    };
    send(
        &mut ctl,
        &Control::Start(SessionStart {
            domain: domain.into(),
            ..start
        }),
    );
    std::thread::sleep(Duration::from_millis(50));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_media(&udp, srv.media, id, 0..10);
    std::thread::sleep(Duration::from_millis(100));
    send(
        &mut ctl,
        &Control::Stop {
            session: SessionId(id),
            time: Timestamp(1_700_000_001_000_000_000),
        },
    );
    for _ in 0..500 {
        let (_, body) = request(
            srv.http,
            "GET",
            &format!("/api/recordings?call_id=call-{id}@example.com"),
            Some(admin),
            "",
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if let Some(e) = v["recordings"].as_array().and_then(|a| a.first()) {
            return e["id"].as_str().unwrap().to_owned();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("call {id} never indexed");
}

#[test]
fn scopes_per_endpoint_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start_with(dir.path(), &[(SECRET_ENV, SECRET)]);
    let keys = Keyring::new(SECRET.as_bytes());
    let admin = keys.issue(&Scope::Admin);
    let alpha = keys.issue(&Scope::Reseller {
        domains: vec!["alpha.example".into()],
    });
    let a = record(&srv, &admin, 1, "alpha.example");
    let b = record(&srv, &admin, 2, "beta.example");
    let h = srv.http;

    // No token, a forged one, another service's: 401 on every endpoint.
    let forged = Keyring::new(b"some other secret of 32 bytes!!!").issue(&Scope::Admin);
    for bearer in [None, Some(forged.as_str()), Some("vxp1.zz.00")] {
        for (m, p) in [
            ("GET", "/api/recordings".to_owned()),
            ("GET", format!("/api/recordings/{a}.wav")),
            ("GET", format!("/api/recordings/{a}.mono.wav")),
            ("POST", format!("/api/recordings/{a}/share")),
            ("GET", "/metrics".to_owned()),
        ] {
            assert_eq!(request(h, m, &p, bearer, "").0, 401, "{m} {p} {bearer:?}");
        }
    }

    // Admin: everything.
    assert_eq!(
        ids(h, "/api/recordings", Some(&admin)),
        ["alpha.example", "beta.example"]
    );
    for id in [&a, &b] {
        let (status, body) = request(
            h,
            "GET",
            &format!("/api/recordings/{id}.wav"),
            Some(&admin),
            "",
        );
        assert_eq!(status, 200);
        assert_eq!(wav(&body).0, 2);
    }
    let (status, body) = request(h, "GET", "/metrics", Some(&admin), "");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("voxplane_mis_http_denied_total"));

    // Reseller of alpha: its recording only; the other is hidden (404).
    assert_eq!(ids(h, "/api/recordings", Some(&alpha)), ["alpha.example"]);
    assert_eq!(
        ids(h, "/api/recordings?domain=beta.example", Some(&alpha)),
        Vec::<String>::new()
    );
    let get = |id: &str, ext: &str, t: &str| {
        request(h, "GET", &format!("/api/recordings/{id}{ext}"), Some(t), "").0
    };
    assert_eq!(get(&a, ".wav", &alpha), 200);
    assert_eq!(get(&a, ".mono.wav", &alpha), 200);
    assert_eq!(get(&b, ".wav", &alpha), 404);
    assert_eq!(get(&b, ".mono.wav", &alpha), 404);
    assert_eq!(request(h, "GET", "/metrics", Some(&alpha), "").0, 403);
    assert_eq!(
        request(
            h,
            "POST",
            &format!("/api/recordings/{b}/share"),
            Some(&alpha),
            ""
        )
        .0,
        404
    );

    // The reseller shares its recording: the link opens that one only.
    let (status, body) = request(
        h,
        "POST",
        &format!("/api/recordings/{a}/share"),
        Some(&alpha),
        r#"{"ttl_secs": 600}"#,
    );
    assert_eq!(status, 200);
    let link: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let share = link["token"].as_str().unwrap().to_owned();
    let url = link["link"].as_str().unwrap();
    assert!(url.starts_with(&format!("/api/recordings/{a}.wav?token=")));
    let (status, body) = request(h, "GET", url, None, "");
    assert_eq!(status, 200, "the link works without a header");
    assert_eq!(wav(&body).0, 2);
    assert_eq!(ids(h, "/api/recordings", Some(&share)), ["alpha.example"]);
    assert_eq!(get(&a, ".mono.wav", &share), 200);
    assert_eq!(get(&b, ".wav", &share), 404);
    assert_eq!(request(h, "GET", "/metrics", Some(&share), "").0, 403);
    assert_eq!(
        request(
            h,
            "POST",
            &format!("/api/recordings/{a}/share"),
            Some(&share),
            ""
        )
        .0,
        403,
        "a share link cannot mint links"
    );
    // An expired link, and one for another recording id, refused.
    let expired = keys.issue(&Scope::Share {
        call_id: a.clone(),
        expires: 1,
    });
    assert_eq!(get(&a, ".wav", &expired), 401);
    let other = keys.issue(&Scope::Share {
        call_id: b.clone(),
        expires: u64::MAX,
    });
    assert_eq!(get(&a, ".wav", &other), 404);
    assert_eq!(get(&b, ".wav", &other), 200);

    // Refusals are counted.
    let (_, body) = request(h, "GET", "/metrics", Some(&admin), "");
    let text = String::from_utf8_lossy(&body).to_string();
    let denied: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("voxplane_mis_http_denied_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(denied >= 20, "{denied}");
}
