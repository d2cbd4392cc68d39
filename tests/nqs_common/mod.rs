//! Helpers of the `voxplane nqs` end-to-end tests (`nqs_ui`, `nqs_s3`).
#![allow(dead_code, reason = "each test binary uses a part of the helpers")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills a child process on drop, even when the test fails.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A token minted offline from the data dir (`voxplane token create`).
pub fn token(data: &Path, scope: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_voxplane"))
        .args(["token", "create", "--data-dir", data.to_str().unwrap()])
        .args(scope)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// A port the kernel just handed out (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `voxplane nqs --read capture [args]` (with `env`) serving on a
/// port of its choice; returns once the API lists `calls` calls.
pub fn start_nqs(
    data: &Path,
    capture: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    calls: usize,
) -> (Kill, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxplane"))
        .args(["nqs", "--data-dir", data.to_str().unwrap()])
        .args(["--http-listen", "127.0.0.1:0", "--read"])
        .arg(capture)
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                let _ = tx.send(rest.split('/').next().and_then(|p| p.parse::<u16>().ok()));
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("nqs started")
        .expect("nqs printed its port");
    let admin = token(data, &["--admin"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while listed(port, &admin) != calls {
        assert!(Instant::now() < deadline, "nqs did not store {calls} calls");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// How many calls `GET /api/calls` lists.
pub fn listed(port: u16, token: &str) -> usize {
    let (_, body) = http_get(port, "/api/calls?limit=1000", token);
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

/// `GET path` with a bearer token: (status, body); (0, empty) when the
/// server does not answer.
pub fn http_get(port: u16, path: &str, token: &str) -> (u16, Vec<u8>) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Vec::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let status = std::str::from_utf8(&raw[..split])
        .ok()
        .and_then(|h| h.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

/// A Prometheus counter or gauge of `/metrics` (0 when absent).
pub fn metric(port: u16, token: &str, name: &str) -> u64 {
    let (_, body) = http_get(port, "/metrics", token);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (20 s at most) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
