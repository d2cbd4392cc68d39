//! Real processes: three `voxplane sbus` members on loopback over mutual TLS, driven by
//! the `voxplane sbus`/`voxplane cert` commands. A member is `kill -9`ed while writes
//! stream into another, restarted, and catches up; a member certified by a foreign CA
//! gets nothing.
//!
//! Needs the `voxplane` binary next to the test's `deps/` directory (a workspace
//! `cargo test` builds it first). Without it the test prints `SKIP:` and passes, unless
//! `VOXPLANE_REQUIRE_TOOLS` is set.
#![expect(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a real-process test: wall time, and a std listener to find free ports"
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("VOXPLANE_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("voxplane");
    p.exists().then_some(p)
}

/// Children killed on drop, even when the test fails.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn voxplane(bin: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

fn member(bin: &Path, dir: &Path, id: u32, port: u16, peers: &[u16], certs: &Path) -> Child {
    let mut cmd = Command::new(bin);
    cmd.arg("sbus")
        .arg("--data-dir")
        .arg(dir.join(format!("d{id}")))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    for p in peers {
        cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
    }
    // Members 1 and 2 are in the EU, member 3 in the US (data sovereignty).
    let region = if id == 3 { "us-east" } else { "eu-west" };
    cmd.arg("--region").arg(region);
    cmd.arg("--cert")
        .arg(certs.join("member.pem"))
        .arg("--key")
        .arg(certs.join("member.key"))
        .arg("--ca")
        .arg(dir.join("ca/ca.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

fn connected_peers(bin: &Path, data: &Path) -> usize {
    let (ok, out) = voxplane(
        bin,
        &["sbus", "status", "--data-dir", data.to_str().unwrap()],
    );
    if !ok {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["peers"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count())
}

#[test]
fn three_processes_converge_survive_kill_9_and_refuse_a_foreign_certificate() {
    let Some(bin) = binary() else {
        assert!(
            std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none(),
            "voxplane binary not found"
        );
        eprintln!("SKIP: voxplane binary not built (run a workspace `cargo test`)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = |s: &str| dir.join(s).to_str().unwrap().to_owned();
    assert!(voxplane(&bin, &["cert", "ca", "--out", &d("ca")]).0);
    for id in 1..=3 {
        let ok = voxplane(
            &bin,
            &[
                "cert",
                "member",
                "--ca-key",
                &d("ca/ca.key"),
                "--id",
                &id.to_string(),
                "--out",
                &d(&format!("c{id}")),
            ],
        )
        .0;
        assert!(ok);
    }
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let others = |i: usize| -> Vec<u16> {
        ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| *p)
            .collect()
    };
    let mut procs = Procs(Vec::new());
    for i in 0..3u32 {
        let c = dir.join(format!("c{}", i + 1));
        procs.0.push(member(
            &bin,
            dir,
            i + 1,
            ports[i as usize],
            &others(i as usize),
            &c,
        ));
    }
    for i in 1..=3 {
        until(Duration::from_secs(15), "links up", || {
            connected_peers(&bin, &dir.join(format!("d{i}"))) == 2
        });
    }

    // Write on 1 through the CLI, read on 3 through the CLI.
    assert!(
        voxplane(
            &bin,
            &[
                "sbus",
                "put",
                "--data-dir",
                &d("d1"),
                "domains",
                "example.com",
                "v1"
            ]
        )
        .0
    );
    until(Duration::from_secs(10), "example.com on member 3", || {
        voxplane(
            &bin,
            &[
                "sbus",
                "get",
                "--data-dir",
                &d("d3"),
                "domains",
                "example.com",
            ],
        )
        .1 == "v1"
    });

    // An EU domain's subscriber reaches member 2 (EU), never member 3 (US); a trunk
    // written after it reaches member 3, so member 3 has had its chance.
    let put = |table: &str, key: &str, value: &str| {
        let args = ["sbus", "put", "--data-dir", &d("d1"), table, key, value];
        assert!(voxplane(&bin, &args).0, "put {table} {key}");
    };
    let get = |data: &str, table: &str, key: &str| {
        voxplane(&bin, &["sbus", "get", "--data-dir", &d(data), table, key])
    };
    put(
        "domains",
        "eu.example",
        r#"{"name":"eu.example","placement":{"Regions":["eu-west"]}}"#,
    );
    put("subscribers", "eu.example/alice", "secret");
    put("trunks", "t1", "trunk");
    until(Duration::from_secs(10), "trunk on member 3", || {
        get("d3", "trunks", "t1").1 == "trunk"
    });
    until(Duration::from_secs(10), "subscriber on member 2", || {
        get("d2", "subscribers", "eu.example/alice").1 == "secret"
    });
    assert!(!get("d3", "subscribers", "eu.example/alice").0);
    let (_, st) = voxplane(&bin, &["sbus", "status", "--data-dir", &d("d3")]);
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(st["region"], "us-east", "{st}");
    assert!(
        st["stats"]["placeholders_stored"].as_u64() >= Some(1),
        "{st}"
    );

    // Stream writes into member 1 over its control socket; kill -9 member 2 midway.
    let mut sock = UnixStream::connect(dir.join("d1/sbus.sock")).unwrap();
    let mut replies = BufReader::new(sock.try_clone().unwrap());
    let total = 600;
    let mut line = String::new();
    for k in 0..total {
        if k == total / 3 {
            procs.0[1].kill().unwrap(); // SIGKILL
            procs.0[1].wait().unwrap();
        }
        writeln!(
            sock,
            r#"{{"op":"put","table":"trunks","key":"t{k}","value":"{k}"}}"#
        )
        .unwrap();
        line.clear();
        replies.read_line(&mut line).unwrap();
        assert!(line.contains("seq"), "{line}");
    }
    let t0 = Instant::now();
    procs.0[1] = member(&bin, dir, 2, ports[1], &others(1), &dir.join("c2"));
    // Caught up when member 2's durable version vector holds all of member 1's.
    let applied = |data: &str| -> serde_json::Value {
        let (_, out) = voxplane(&bin, &["sbus", "status", "--data-dir", &d(data)]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_default()["applied"].clone()
    };
    let want = applied("d1");
    assert!(want["1"].as_u64().unwrap() >= u64::try_from(total).unwrap());
    until(Duration::from_secs(20), "member 2 catches up", || {
        let have = applied("d2");
        want.as_object()
            .unwrap()
            .iter()
            .all(|(o, s)| have[o].as_u64() >= s.as_u64())
    });
    eprintln!(
        "member 2 restart and catch-up of {total} writes: {:?}",
        t0.elapsed()
    );
    for k in (0..total).step_by(53) {
        let (_, v) = voxplane(
            &bin,
            &[
                "sbus",
                "get",
                "--data-dir",
                &d("d2"),
                "trunks",
                &format!("t{k}"),
            ],
        );
        assert_eq!(v, k.to_string());
    }

    // export dumps every live row; peers lists both links.
    let (ok, dump) = voxplane(&bin, &["sbus", "export", "--data-dir", &d("d3")]);
    assert!(ok);
    assert_eq!(
        dump.lines().filter(|l| l.contains("\"trunks\"")).count(),
        total
    );
    until(
        Duration::from_secs(10),
        "member 3 lists two linked peers",
        || {
            let (ok, peers) = voxplane(&bin, &["sbus", "peers", "--data-dir", &d("d3")]);
            ok && peers.matches("connected=true").count() == 2
        },
    );

    // A member certified by a foreign CA: refused, holds nothing, is no one's peer.
    assert!(voxplane(&bin, &["cert", "ca", "--out", &d("fca")]).0);
    assert!(
        voxplane(
            &bin,
            &[
                "cert",
                "member",
                "--ca-key",
                &d("fca/ca.key"),
                "--id",
                "9",
                "--out",
                &d("c9")
            ]
        )
        .0
    );
    let mut cmd = Command::new(&bin);
    cmd.args([
        "sbus",
        "--data-dir",
        &d("d9"),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    for p in &ports {
        cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
    }
    cmd.args([
        "--cert",
        &d("c9/member.pem"),
        "--key",
        &d("c9/member.key"),
        "--ca",
        &d("fca/ca.pem"),
    ]);
    procs.0.push(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1_500));
    let (found, _) = voxplane(
        &bin,
        &[
            "sbus",
            "get",
            "--data-dir",
            &d("d9"),
            "domains",
            "example.com",
        ],
    );
    assert!(!found, "the foreign member received data");
    assert_eq!(connected_peers(&bin, &dir.join("d9")), 0);
    let (_, st) = voxplane(&bin, &["sbus", "status", "--data-dir", &d("d1")]);
    assert!(
        !st.contains("\"member\": 9"),
        "member 1 linked to the foreign member: {st}"
    );
}
