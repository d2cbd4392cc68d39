//! The HTTP API end to end in-process: synthetic calls through the live
//! pipeline (lifecycle, per-call pcaps, rows into SQLite), then every
//! endpoint under every scope (admin, reseller, share link, none).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use nqs::api::auth::{Keyring, Scope};
use nqs::api::{ApiState, Metrics, ShareLink, router};
use nqs::live::LiveConfig;
use nqs::pcap_spool::{PcapSpool, PcapSpoolConfig};
use nqs::service::Pipeline;
use nqs::sink::sqlite::SqliteSink;
use tower::ServiceExt;
use wire::Timestamp;
use wire::capture::{Packet, Transport};

const S: u64 = 1_000_000_000;
/// 2025-11-25 00:00:00 UTC.
const T0: u64 = 1_764_028_800 * S;
/// The injected API clock (Unix seconds): one hour after the calls.
const NOW: u64 = 1_764_028_800 + 3600;

struct Call {
    id: &'static str,
    from: &'static str,
    to: &'static str,
    ruri_host: &'static str,
    start: u64,
    /// Drop every n-th RTP packet (0: none).
    lose_every: u64,
    /// Seconds of media.
    secs: u64,
}

const CALLS: [Call; 3] = [
    Call {
        id: "a@192.0.2.1",
        from: "1001@alpha.example",
        to: "2002@beta.example",
        ruri_host: "beta.example",
        start: 10,
        lose_every: 0,
        secs: 25,
    },
    Call {
        id: "b@192.0.2.1",
        from: "3003@gamma.example",
        to: "4004@gamma.example",
        ruri_host: "gamma.example",
        start: 20,
        lose_every: 5,
        secs: 3,
    },
    Call {
        id: "c/../x@192.0.2.1",
        from: "5005@beta.example",
        to: "6006@delta.example",
        ruri_host: "delta.example",
        start: 30,
        lose_every: 0,
        secs: 3,
    },
];

fn sip(first: &str, c: &Call, cseq: &str, sdp: Option<String>) -> Vec<u8> {
    let body = sdp.unwrap_or_default();
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{first}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{n}\r\nFrom: <sip:{from}>;tag=f\r\n\
         To: <sip:{to}>\r\nCall-ID: {id}\r\nCSeq: {cseq}\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len(),
        n = cseq.len(),
        from = c.from,
        to = c.to,
        id = c.id,
    )
    .into_bytes()
}

fn sdp(ip: &str, port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    // A recognisable tone-ish pattern (µ-law bytes).
    p.extend((0..160).map(|i| if (i / 10) % 2 == 0 { 0x20 } else { 0xa0 }));
    p
}

/// Runs the three calls (3 s of media each, both directions) through a
/// pipeline writing pcaps into `dir/pcaps` and rows into `store`.
fn load(dir: &std::path::Path, store: &SqliteSink, metrics: Arc<Metrics>, header_only: bool) {
    let spool = PcapSpool::new(PcapSpoolConfig {
        dir: dir.join("pcaps"),
        rtp_header_only: header_only,
        max_age: None,
        max_bytes: None,
    })
    .unwrap();
    let mut pipe = Pipeline::new(LiveConfig::default(), Some(spool), metrics);
    let feed = |pipe: &mut Pipeline, ts: u64, src: &str, dst: &str, payload: &[u8]| {
        pipe.handle_packet(&Packet {
            ts: Timestamp(ts),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            transport: Transport::Udp,
            payload,
            ip: None,
            stream_gap: false,
            truncated: false,
        });
    };
    for (i, c) in CALLS.iter().enumerate() {
        let t = T0 + c.start * S;
        let a = format!("192.0.2.{}", 10 + i);
        let b = format!("192.0.2.{}", 20 + i);
        let (sa, sb) = (format!("{a}:5060"), format!("{b}:5060"));
        let (ma, mb) = (format!("{a}:40000"), format!("{b}:50000"));
        let ruri = format!("sip:{}@{}", c.to.split('@').next().unwrap(), c.ruri_host);
        feed(
            &mut pipe,
            t,
            &sa,
            &sb,
            &sip(
                &format!("INVITE {ruri} SIP/2.0"),
                c,
                "1 INVITE",
                Some(sdp(&a, 40000)),
            ),
        );
        feed(
            &mut pipe,
            t + S / 10,
            &sb,
            &sa,
            &sip("SIP/2.0 200 OK", c, "1 INVITE", Some(sdp(&b, 50000))),
        );
        feed(
            &mut pipe,
            t + S / 5,
            &sa,
            &sb,
            &sip(&format!("ACK {ruri} SIP/2.0"), c, "1 ACK", None),
        );
        for n in 0..c.secs * 50 {
            let ts = t + S / 5 + n * 20_000_000;
            if c.lose_every == 0 || n % c.lose_every != 1 {
                feed(&mut pipe, ts, &ma, &mb, &rtp(n as u16, 0x1000 + i as u32));
            }
            feed(
                &mut pipe,
                ts + 500_000,
                &mb,
                &ma,
                &rtp(n as u16, 0x2000 + i as u32),
            );
        }
        feed(
            &mut pipe,
            t + (c.secs + 1) * S,
            &sa,
            &sb,
            &sip(&format!("BYE {ruri} SIP/2.0"), c, "2 BYE", None),
        );
        feed(
            &mut pipe,
            t + (c.secs + 1) * S + S / 20,
            &sb,
            &sa,
            &sip("SIP/2.0 200 OK", c, "2 BYE", None),
        );
    }
    pipe.handle_timeout(Timestamp(T0 + 100 * S));
    let batch = pipe.take_batch();
    assert_eq!(batch.calls.len(), 3, "all calls finished on BYE");
    assert_eq!(batch.pcaps.len(), 3);
    store.write_now(&batch).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    app: axum::Router,
    keyring: Keyring,
}

fn fixture() -> Fixture {
    fixture_with(false)
}

fn fixture_with(header_only: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteSink::open(&dir.path().join("nqs.sqlite")).unwrap();
    let metrics = Arc::new(Metrics::default());
    load(dir.path(), &store, metrics.clone(), header_only);
    let keyring = Keyring::new(b"test secret, thirty-two bytes ok");
    let state = ApiState {
        store,
        keyring: keyring.clone(),
        pcap_dir: dir.path().join("pcaps"),
        clock: Arc::new(|| NOW),
        metrics,
        sinks: Vec::new(),
        share_ttl_secs: 600,
        objects: None,
    };
    Fixture {
        app: router(state),
        keyring,
        _dir: dir,
    }
}

impl Fixture {
    fn admin(&self) -> String {
        self.keyring.issue(&Scope::Admin)
    }
    fn reseller(&self, d: &str) -> String {
        self.keyring.issue(&Scope::Reseller {
            domains: vec![d.into()],
        })
    }
    fn share(&self, call: &str, expires: u64) -> String {
        self.keyring.issue(&Scope::Share {
            call_id: call.into(),
            expires,
        })
    }

    async fn req(&self, method: Method, uri: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let resp = self
            .app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn get(&self, uri: &str, token: Option<&str>) -> (StatusCode, Vec<u8>) {
        self.req(Method::GET, uri, token).await
    }

    async fn ids(&self, uri: &str, token: &str) -> Vec<String> {
        let (status, body) = self.get(uri, Some(token)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["call_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

fn esc(id: &str) -> String {
    id.replace('/', "%2F")
}

const A: &str = "a@192.0.2.1";
const B: &str = "b@192.0.2.1";
const C: &str = "c/../x@192.0.2.1";

#[tokio::test]
async fn list_calls_per_scope_and_filters() {
    let f = fixture();
    assert_eq!(f.ids("/api/calls", &f.admin()).await, vec![A, B, C]);
    // beta.example: A by its Request-URI/To, C by its From.
    assert_eq!(
        f.ids("/api/calls", &f.reseller("beta.example")).await,
        vec![A, C]
    );
    assert_eq!(
        f.ids("/api/calls", &f.reseller("gamma.example")).await,
        vec![B]
    );
    assert!(
        f.ids("/api/calls", &f.reseller("nobody.example"))
            .await
            .is_empty()
    );
    assert_eq!(f.ids("/api/calls", &f.share(B, NOW + 60)).await, vec![B]);
    // Filters: number, domain, time, MOS (B has 20 % loss on one leg).
    assert_eq!(f.ids("/api/calls?number=6006", &f.admin()).await, vec![C]);
    assert_eq!(
        f.ids("/api/calls?domain=gamma.example", &f.admin()).await,
        vec![B]
    );
    let since = 1_764_028_800 + 15;
    assert_eq!(
        f.ids(
            &format!("/api/calls?since={since}&until={}", since + 10),
            &f.admin()
        )
        .await,
        vec![B]
    );
    assert_eq!(f.ids("/api/calls?max_mos=4.0", &f.admin()).await, vec![B]);
    assert_eq!(
        f.ids("/api/calls?min_mos=4.0", &f.admin()).await,
        vec![A, C]
    );
    // A reseller's filters never widen its scope.
    assert!(
        f.ids(
            "/api/calls?domain=gamma.example",
            &f.reseller("beta.example")
        )
        .await
        .is_empty()
    );
    assert!(
        f.ids("/api/calls?number=2002", &f.share(B, NOW + 60))
            .await
            .is_empty()
    );
    // The documented fields.
    let (_, body) = f.get("/api/calls?number=2002", Some(&f.admin())).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let c = &v[0];
    assert_eq!(
        (c["from"].as_str(), c["to"].as_str(), c["domain"].as_str()),
        (Some("1001"), Some("2002"), Some("beta.example"))
    );
    assert_eq!(c["streams"], 2);
    assert_eq!(c["start"].as_f64(), Some(1_764_028_810.0));
    assert!(c["mos"].as_f64().unwrap() > 4.0);
    // No token, a bad one, an expired share link.
    assert_eq!(f.get("/api/calls", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.get("/api/calls", Some("vxp1.00.00")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.get("/api/calls", Some(&f.share(B, NOW))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let other = Keyring::new(b"some other service's secret key!").issue(&Scope::Admin);
    assert_eq!(
        f.get("/api/calls", Some(&other)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn call_detail_per_scope() {
    let f = fixture();
    let uri = |id: &str| format!("/api/calls/{}", esc(id));
    let (status, body) = f.get(&uri(A), Some(&f.admin())).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["streams"].as_array().unwrap().len(), 2);
    assert_eq!(v["sip"].as_array().unwrap().len(), 5, "the ladder");
    assert_eq!(v["sip"][0]["method"], "INVITE");
    // 25 s of media: two complete 10 s intervals per leg while the call was up.
    let intervals = v["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 4, "{intervals:?}");
    assert!(
        intervals
            .iter()
            .all(|i| i["packets"] == 500 && i["lost"] == 0)
    );
    assert_eq!(v["record"]["reason"], "bye");
    assert_eq!(v["legs"].as_array().unwrap().len(), 2);
    assert!(v["pcap"]["packets"].as_u64().unwrap() >= 300);
    assert_eq!(
        f.get(&uri(A), Some(&f.reseller("beta.example"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.get(&uri(B), Some(&f.reseller("beta.example"))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get(&uri(C), Some(&f.share(C, NOW + 1))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.get(&uri(A), Some(&f.share(C, NOW + 1))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(f.get(&uri(A), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.get(&uri(A), Some(&f.share(A, NOW - 1))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.get(&uri("nope"), Some(&f.admin())).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn pcap_download_per_scope() {
    let f = fixture();
    let uri = |id: &str| format!("/api/calls/{}/pcap", esc(id));
    let (status, body) = f.get(&uri(C), Some(&f.admin())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with(&0xa1b2c3d4u32.to_le_bytes())
            || body.starts_with(&0xa1b2c3d4u32.to_be_bytes())
    );
    // The pcap holds exactly this call: re-analysed, one call, two streams.
    let mut reader = wire::capture::FileReader::new(std::io::Cursor::new(body)).unwrap();
    let mut decoder = wire::capture::Decoder::new();
    let mut analyzer = nqs::analyzer::Analyzer::new(Default::default());
    while let Some(frame) = reader.next_frame() {
        if let Some(p) = decoder.decode(&frame.unwrap()) {
            let _ = analyzer.handle_packet(&p);
        }
    }
    let report = analyzer.report();
    assert_eq!(report.calls.len(), 1);
    assert_eq!(report.calls[0].call_id, C);
    assert_eq!(report.streams.len(), 2);
    assert_eq!(
        f.get(&uri(C), Some(&f.reseller("beta.example"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.get(&uri(B), Some(&f.reseller("beta.example"))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get(&uri(B), Some(&f.share(B, NOW + 5))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.get(&uri(A), Some(&f.share(B, NOW + 5))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(f.get(&uri(A), None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn leg_wav_per_scope() {
    let f = fixture();
    let uri = |id: &str, n: usize| format!("/api/calls/{}/legs/{n}.wav", esc(id));
    let (status, body) = f.get(&uri(A, 0), Some(&f.admin())).await;
    assert_eq!(status, StatusCode::OK);
    let wav = hound::WavReader::new(std::io::Cursor::new(body)).unwrap();
    assert_eq!(wav.spec().sample_rate, 8000);
    assert_eq!(wav.len(), 25 * 8000, "25 s of 8 kHz audio");
    // B's first leg lost 30 packets: the gaps are silence, the length stays.
    let (status, body) = f.get(&uri(B, 0), Some(&f.admin())).await;
    assert_eq!(status, StatusCode::OK);
    let samples: Vec<i16> = hound::WavReader::new(std::io::Cursor::new(body))
        .unwrap()
        .into_samples()
        .map(Result::unwrap)
        .collect();
    assert_eq!(samples.len(), 150 * 160);
    assert!(
        samples[160..320].iter().all(|&s| s == 0),
        "packet 1 was lost"
    );
    assert!(samples[..160].iter().any(|&s| s != 0));
    assert_eq!(
        f.get(&uri(A, 2), Some(&f.admin())).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get(
            &format!("/api/calls/{}/legs/0.mp3", esc(A)),
            Some(&f.admin())
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get(&uri(A, 1), Some(&f.reseller("beta.example"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.get(&uri(B, 0), Some(&f.reseller("beta.example"))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get(&uri(A, 0), Some(&f.share(A, NOW + 5))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.get(&uri(C, 0), Some(&f.share(A, NOW + 5))).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(f.get(&uri(A, 0), None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn share_links_per_scope_and_what_they_open() {
    let f = fixture();
    let uri = |id: &str| format!("/api/calls/{}/share", esc(id));
    let (status, body) = f
        .req(Method::POST, &uri(A), Some(&f.reseller("beta.example")))
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let link: ShareLink = serde_json::from_slice(&body).unwrap();
    assert_eq!(link.expires, NOW + 600);
    assert!(link.link.starts_with("/api/calls/a@192.0.2.1?token="));
    // The link opens the call (token in the query), its pcap and audio...
    assert_eq!(f.get(&link.link, None).await.0, StatusCode::OK);
    assert_eq!(
        f.get(
            &format!("/api/calls/{}/pcap?token={}", esc(A), link.token),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        f.get(
            &format!("/api/calls/{}/legs/1.wav?token={}", esc(A), link.token),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    // ...and nothing else.
    assert_eq!(
        f.get(&format!("/api/calls/{}?token={}", esc(C), link.token), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(f.ids("/api/calls", &link.token).await, vec![A]);
    assert_eq!(
        f.get("/metrics", Some(&link.token)).await.0,
        StatusCode::FORBIDDEN
    );
    // A share link cannot mint links, a reseller only for its domains.
    assert_eq!(
        f.req(Method::POST, &uri(A), Some(&link.token)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.req(Method::POST, &uri(B), Some(&f.reseller("beta.example")))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.req(Method::POST, &uri(B), Some(&f.admin())).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.req(Method::POST, &uri(B), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A custom lifetime; expired links stop working.
    let resp = f
        .app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri(uri(C))
                .header("Authorization", format!("Bearer {}", f.admin()))
                .header("Content-Type", "application/json")
                .body(Body::from(r#"{"ttl_secs": 5}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let short: ShareLink = serde_json::from_slice(&body).unwrap();
    assert_eq!(short.expires, NOW + 5);
    let expired = f.share(C, NOW);
    assert_eq!(
        f.get(&format!("/api/calls/{}?token={expired}", esc(C)), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn metrics_admin_only() {
    let f = fixture();
    let (status, body) = f.get("/metrics", Some(&f.admin())).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("nqs_calls_finished_total 3\n"), "{text}");
    assert!(text.contains("nqs_calls_active 0\n"));
    assert!(text.contains("# TYPE nqs_packets_total counter"));
    assert_eq!(
        f.get("/metrics", Some(&f.reseller("beta.example"))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.get("/metrics", Some(&f.share(A, NOW + 5))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(f.get("/metrics", None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn header_only_pcaps_download_but_have_no_audio() {
    let f = fixture_with(true);
    let (status, body) = f
        .get(&format!("/api/calls/{}/pcap", esc(A)), Some(&f.admin()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, wav) = f
        .get(
            &format!("/api/calls/{}/legs/0.wav", esc(A)),
            Some(&f.admin()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&wav)
    );
    // The header-only pcap still carries every packet's headers and length.
    let mut reader = wire::capture::FileReader::new(std::io::Cursor::new(body)).unwrap();
    let (mut frames, mut cut) = (0, 0);
    while let Some(frame) = reader.next_frame() {
        let frame = frame.unwrap();
        frames += 1;
        if (frame.data.len() as u32) < frame.orig_len {
            assert_eq!(frame.data.len(), 14 + 20 + 8 + 12);
            assert_eq!(frame.orig_len, 14 + 20 + 8 + 172);
            cut += 1;
        }
    }
    assert_eq!(cut, 2 * 25 * 50, "every RTP packet cut to its headers");
    assert_eq!(frames, cut + 5, "SIP kept whole");
}

/// Who calls, in the route × role matrix.
#[derive(Clone, Copy, Debug)]
enum Role {
    Admin,
    /// Reseller of beta.example: sees A (Request-URI/To) and C (From).
    ResellerBeta,
    /// Reseller of gamma.example: sees B only.
    ResellerGamma,
    /// Share link of A, as a bearer header.
    ShareA,
    /// Share link of A, in `?token=` (how a browser opens it).
    ShareAQuery,
    /// Share link of A, past its expiry.
    ShareExpired,
    /// An admin token signed with another secret.
    Forged,
    /// A share link of A whose claims were changed to B.
    Tampered,
    /// Not a token.
    Garbage,
    /// No token at all.
    Nobody,
}

impl Role {
    const ALL: [Role; 10] = [
        Role::Admin,
        Role::ResellerBeta,
        Role::ResellerGamma,
        Role::ShareA,
        Role::ShareAQuery,
        Role::ShareExpired,
        Role::Forged,
        Role::Tampered,
        Role::Garbage,
        Role::Nobody,
    ];

    fn token(self, f: &Fixture) -> Option<String> {
        Some(match self {
            Role::Admin => f.admin(),
            Role::ResellerBeta => f.reseller("beta.example"),
            Role::ResellerGamma => f.reseller("GAMMA.example"),
            Role::ShareA | Role::ShareAQuery => f.share(A, NOW + 60),
            Role::ShareExpired => f.share(A, NOW),
            Role::Forged => Keyring::new(b"not the service's secret, 32 b!!").issue(&Scope::Admin),
            Role::Tampered => {
                let t = f.share(A, NOW + 60);
                let (_, mac) = t.rsplit_once('.').unwrap();
                let claims: String = format!(
                    r#"{{"scope":"share","call_id":"{B}","expires":{}}}"#,
                    NOW + 60
                )
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect();
                format!("vxp1.{claims}.{mac}")
            }
            Role::Garbage => "vxp1.zz.zz".into(),
            Role::Nobody => return None,
        })
    }

    /// Whether the token verifies at all.
    fn valid(self) -> bool {
        matches!(
            self,
            Role::Admin
                | Role::ResellerBeta
                | Role::ResellerGamma
                | Role::ShareA
                | Role::ShareAQuery
        )
    }

    /// The calls this role may see.
    fn visible(self) -> &'static [&'static str] {
        match self {
            Role::Admin => &[A, B, C],
            Role::ResellerBeta => &[A, C],
            Role::ResellerGamma => &[B],
            Role::ShareA | Role::ShareAQuery => &[A],
            _ => &[],
        }
    }

    fn is_share(self) -> bool {
        matches!(self, Role::ShareA | Role::ShareAQuery)
    }
}

/// What each route answers for each role and call.
fn expected(route: &str, role: Role, call: Option<&str>) -> StatusCode {
    // The web UI's pages and assets carry no data: public.
    if route.starts_with("page") || route.starts_with("asset") {
        return StatusCode::OK;
    }
    if !role.valid() {
        return StatusCode::UNAUTHORIZED;
    }
    // A POST takes its token from the header only, never from the URL.
    if route == "share" && matches!(role, Role::ShareAQuery) {
        return StatusCode::UNAUTHORIZED;
    }
    match (route, call) {
        ("metrics", _) if matches!(role, Role::Admin) => StatusCode::OK,
        ("metrics", _) => StatusCode::FORBIDDEN,
        (_, None) => StatusCode::OK,
        (_, Some(id)) if !role.visible().contains(&id) => StatusCode::NOT_FOUND,
        ("share", _) if role.is_share() => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    }
}

/// Every route under every role (JSON, pcap, WAV, share, metrics, UI
/// pages): valid tokens see exactly their calls, out-of-scope answers are
/// indistinguishable from unknown calls, bad tokens get 401 everywhere, and
/// pages leak nothing.
#[tokio::test]
async fn every_route_under_every_role() {
    let f = fixture();
    const UNKNOWN: &str = "nope@192.0.2.99";
    let per_call: [(&str, Method, &str); 5] = [
        ("detail", Method::GET, ""),
        ("pcap", Method::GET, "/pcap"),
        ("wav", Method::GET, "/legs/0.wav"),
        ("wav1", Method::GET, "/legs/1.wav"),
        ("share", Method::POST, "/share"),
    ];
    let global: [(&str, &str); 6] = [
        ("list", "/api/calls"),
        ("whoami", "/api/whoami"),
        ("metrics", "/metrics"),
        ("page-history", "/"),
        ("asset-js", "/ui/app.js"),
        ("asset-css", "/ui/app.css"),
    ];
    let mut checked = 0;
    for role in Role::ALL {
        let token = role.token(&f);
        let call = |uri: &str| -> (String, Option<String>) {
            match (role, &token) {
                (Role::ShareAQuery, Some(t)) => {
                    let sep = if uri.contains('?') { '&' } else { '?' };
                    (format!("{uri}{sep}token={t}"), None)
                }
                _ => (uri.to_owned(), token.clone()),
            }
        };
        for (name, uri) in global {
            let (uri, bearer) = call(uri);
            let (status, body) = f.get(&uri, bearer.as_deref()).await;
            assert_eq!(status, expected(name, role, None), "{role:?} {uri}");
            checked += 1;
            if name.starts_with("page") || name.starts_with("asset") {
                let text = String::from_utf8(body).unwrap();
                for id in [A, B, C] {
                    assert!(!text.contains(id), "{uri} leaks {id}");
                }
            } else if name == "list" && status == StatusCode::OK {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut ids: Vec<&str> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["call_id"].as_str().unwrap())
                    .collect();
                ids.sort();
                assert_eq!(ids, role.visible(), "{role:?} list");
                // A domain filter never widens the scope.
                let (uri, bearer) = call("/api/calls?domain=gamma.example");
                let (_, body) = f.get(&uri, bearer.as_deref()).await;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for c in v.as_array().unwrap() {
                    assert!(role.visible().contains(&c["call_id"].as_str().unwrap()));
                }
            } else if name == "whoami" && status == StatusCode::OK {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let want = match role {
                    Role::Admin => "admin",
                    Role::ResellerBeta | Role::ResellerGamma => "reseller",
                    _ => "share",
                };
                assert_eq!(v["scope"], want, "{role:?} whoami");
            }
        }
        // The deep-link page of every call, and per-call routes for the
        // three calls and an unknown one.
        for id in [A, B, C, UNKNOWN] {
            let (uri, bearer) = call(&format!("/calls/{}", esc(id)));
            let (status, body) = f.get(&uri, bearer.as_deref()).await;
            assert_eq!(status, expected("page-call", role, Some(id)), "{uri}");
            assert!(!String::from_utf8(body).unwrap().contains("192.0.2.1"));
            checked += 1;
            for (name, method, suffix) in &per_call {
                let (uri, bearer) = call(&format!("/api/calls/{}{suffix}", esc(id)));
                let (status, body) = f.req(method.clone(), &uri, bearer.as_deref()).await;
                let want = expected(name, role, Some(id));
                assert_eq!(
                    status,
                    want,
                    "{role:?} {method} {uri}: {}",
                    String::from_utf8_lossy(&body)
                );
                checked += 1;
                match (*name, status) {
                    ("pcap", StatusCode::OK) => assert_eq!(&body[..4], b"\xd4\xc3\xb2\xa1"),
                    ("wav" | "wav1", StatusCode::OK) => assert_eq!(&body[..4], b"RIFF"),
                    ("detail", StatusCode::OK) => {
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        assert_eq!(v["call"]["call_id"], id);
                    }
                    (_, StatusCode::NOT_FOUND) => {
                        // No existence leak: the same answer as for a call
                        // that does not exist.
                        let (unknown_uri, bearer) =
                            call(&format!("/api/calls/{}{suffix}", esc(UNKNOWN)));
                        let (s2, b2) = f.req(method.clone(), &unknown_uri, bearer.as_deref()).await;
                        assert_eq!((status, &body), (s2, &b2), "{uri} vs unknown");
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(checked, Role::ALL.len() * (6 + 4 * 6));
}
