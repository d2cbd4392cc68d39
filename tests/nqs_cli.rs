//! `voxplane token` and `voxplane nqs` end to end: tokens minted offline
//! from the data dir, a capture read through the live pipeline, and the
//! API served from what it stored (loopback only, bounded waits).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn voxplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxplane"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running voxplane")
}

/// Kills the server on drop, even when the test fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let resp = String::from_utf8_lossy(&raw);
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn token(dir: &Path, scope: &[&str]) -> String {
    let mut args = vec!["token", "create", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(scope);
    let o = voxplane(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(t.starts_with("vxp1."), "{t}");
    t
}

#[test]
fn token_needs_exactly_one_scope() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(
        !voxplane(&["token", "create", "--data-dir", d])
            .status
            .success()
    );
    assert!(
        !voxplane(&[
            "token",
            "create",
            "--data-dir",
            d,
            "--admin",
            "--reseller",
            "x.example"
        ])
        .status
        .success()
    );
    let a = token(dir.path(), &["--admin"]);
    let r = token(dir.path(), &["--reseller", "beta.example"]);
    assert_ne!(a, r);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the signing secret is private");
}

#[test]
fn nqs_reads_a_capture_then_serves_it_with_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let o = voxplane(&[
        "demo",
        "--out",
        demo.to_str().unwrap(),
        "--calls",
        "3",
        "--seed",
        "7",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let o = voxplane(&[
        "nqs",
        "--data-dir",
        d,
        "--http-listen",
        "127.0.0.1:0",
        "--read",
        demo.join("demo.pcap").to_str().unwrap(),
        "--exit-after-read",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("3 calls finished"), "{err}");

    // Serve what was stored; the port is printed on stderr.
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxplane"))
        .args(["nqs", "--data-dir", d, "--http-listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or("").parse::<u16>().ok());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server started")
        .expect("port");

    let admin = token(&data, &["--admin"]);
    let (status, body) = http_get(port, "/api/calls", &admin);
    assert_eq!(status, 200, "{body}");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 3);
    let id = calls[0]["call_id"].as_str().unwrap().to_string();
    let domain = calls[0]["domain"].as_str().unwrap().to_string();
    let (status, _) = http_get(port, &format!("/api/calls/{id}/pcap"), &admin);
    assert_eq!(status, 200);
    let (status, _) = http_get(port, &format!("/api/calls/{id}/legs/0.wav"), &admin);
    assert_eq!(status, 200);
    let reseller = token(&data, &["--reseller", "nobody.example"]);
    let (status, body) = http_get(port, "/api/calls", &reseller);
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, _) = http_get(port, &format!("/api/calls/{id}"), &reseller);
    assert_eq!(status, 404);
    let own = token(&data, &["--reseller", &domain]);
    let (status, _) = http_get(port, &format!("/api/calls/{id}"), &own);
    assert_eq!(status, 200);
    let (status, body) = http_get(port, "/metrics", &admin);
    assert_eq!(status, 200);
    assert!(
        body.contains("nqs_sink_rows_written_total{sink=\"sqlite\"}"),
        "{body}"
    );
    let start = Instant::now();
    drop(server);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn nqs_analyses_hep3_over_udp_live() {
    use std::net::UdpSocket;
    use wire::hep::Hep3Repr;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxplane"))
        .args([
            "nqs",
            "--data-dir",
            d,
            "--http-listen",
            "127.0.0.1:0",
            "--hep-listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for (scheme, kind) in [("http://127.0.0.1:", "http"), ("udp://127.0.0.1:", "hep")] {
                if let Some(rest) = line.split(scheme).nth(1) {
                    let port = rest
                        .split('/')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .parse::<u16>()
                        .ok();
                    let _ = tx.send((kind, port));
                }
            }
        }
    });
    let (mut http, mut hep) = (None, None);
    while http.is_none() || hep.is_none() {
        match rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server started")
        {
            ("http", p) => http = p,
            (_, p) => hep = p,
        }
    }
    let (http, hep) = (http.unwrap(), hep.unwrap());

    // One call, stamped with the wall clock like a live agent would.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let t0 = wire::Timestamp::from_secs_nanos(now.as_secs(), 0).0;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |ts: u64, src: &str, dst: &str, payload: &[u8]| {
        let repr = Hep3Repr {
            transport: wire::capture::Transport::Udp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ts: wire::Timestamp(ts),
            proto_type: 1,
            capture_id: Some(7),
            payload,
        };
        let mut out = Vec::new();
        repr.emit(&mut out).unwrap();
        sock.send_to(&out, ("127.0.0.1", hep)).unwrap();
    };
    let sip = |first: &str, cseq: &str, sdp: &str| {
        let ct = if sdp.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{first}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{}\r\nFrom: <sip:100@hep.example>;tag=1\r\n\
             To: <sip:200@hep.example>\r\nCall-ID: hep-call-1\r\nCSeq: {cseq}\r\n{ct}Content-Length: {}\r\n\r\n{sdp}",
            cseq.len(),
            sdp.len()
        )
        .into_bytes()
    };
    let sdp = |ip: &str, port: u16| {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
        )
    };
    let ms = 1_000_000;
    send(
        t0,
        "192.0.2.1:5060",
        "192.0.2.2:5060",
        &sip(
            "INVITE sip:200@hep.example SIP/2.0",
            "1 INVITE",
            &sdp("192.0.2.1", 4000),
        ),
    );
    send(
        t0 + 50 * ms,
        "192.0.2.2:5060",
        "192.0.2.1:5060",
        &sip("SIP/2.0 200 OK", "1 INVITE", &sdp("192.0.2.2", 6000)),
    );
    for n in 0..50u16 {
        let mut rtp = vec![0x80, 0];
        rtp.extend_from_slice(&n.to_be_bytes());
        rtp.extend_from_slice(&(u32::from(n) * 160).to_be_bytes());
        rtp.extend_from_slice(&0xabcdu32.to_be_bytes());
        rtp.extend_from_slice(&[0x55; 160]);
        send(
            t0 + 100 * ms + u64::from(n) * 20 * ms,
            "192.0.2.1:4000",
            "192.0.2.2:6000",
            &rtp,
        );
    }
    sock.send_to(b"not hep at all", ("127.0.0.1", hep)).unwrap();
    send(
        t0 + 1200 * ms,
        "192.0.2.1:5060",
        "192.0.2.2:5060",
        &sip("BYE sip:200@hep.example SIP/2.0", "2 BYE", ""),
    );

    // Finished after the 2 s linger, on the wall clock; then stored.
    let admin = token(&data, &["--admin"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let calls = loop {
        let (status, body) = http_get(http, "/api/calls", &admin);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !v.as_array().unwrap().is_empty() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the HEP3 call was not stored within 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(calls[0]["call_id"], "hep-call-1");
    assert_eq!(calls[0]["domain"], "hep.example");
    let (_, detail) = http_get(http, "/api/calls/hep-call-1", &admin);
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["streams"][0]["packets"], 50);
    assert_eq!(detail["record"]["reason"], "bye");
    let (_, metrics) = http_get(http, "/metrics", &admin);
    assert!(
        metrics.contains("nqs_frames_dropped_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn nqs_pcap_retention_by_size_runs_in_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let o = voxplane(&["demo", "--out", demo.to_str().unwrap(), "--calls", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = dir.path().join("data");
    let count = |max_mb: &str| {
        let _ = std::fs::remove_dir_all(&data);
        let file = demo.join("demo.pcap");
        let mut args = vec![
            "nqs",
            "--data-dir",
            data.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
            "--read",
            file.to_str().unwrap(),
            "--exit-after-read",
        ];
        if !max_mb.is_empty() {
            args.extend_from_slice(&["--pcap-max-mb", max_mb]);
        }
        let o = voxplane(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut n = 0;
        let mut stack = vec![data.join("pcaps")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "pcap") {
                    n += 1;
                }
            }
        }
        n
    };
    assert_eq!(count(""), 2, "one pcap per call without retention");
    assert_eq!(
        count("0"),
        0,
        "a 0 MB limit evicts every finished call's pcap"
    );
}
