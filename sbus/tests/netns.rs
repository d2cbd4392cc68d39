//! Real processes in network namespaces: three `voxplane sbus` members, one namespace
//! each, joined pairwise by veth links (198.18.0.0/15, port 443). Member 1 is cut off
//! (`ip link set down` on both of its links); members 1 and 2 both take writes; the links
//! come back; every member converges, and the flush time is printed.
//!
//! Needs root, `ip` (iproute2) and the `voxplane` binary. Without them it prints `SKIP:`
//! and passes, unless `VOXPLANE_REQUIRE_TOOLS` is set. Namespaces are named
//! `sbus-t<pid>-<n>` and removed even when the test fails.
#![expect(
    clippy::disallowed_methods,
    reason = "a real-process test waits on wall time"
)]

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

fn skip(why: &str) {
    assert!(
        std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none(),
        "required: {why}"
    );
    eprintln!("SKIP: {why}");
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ns_ip(ns: &str, args: &[&str]) -> bool {
    let mut a = vec!["netns", "exec", ns, "ip"];
    a.extend_from_slice(args);
    ip(&a)
}

/// Namespaces and processes, removed on drop.
struct Lab {
    ns: Vec<String>,
    procs: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.ns {
            ip(&["netns", "del", n]);
        }
    }
}

fn voxplane(bin: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

fn applied(bin: &Path, data: &Path) -> Option<serde_json::Value> {
    let (ok, out) = voxplane(
        bin,
        &["sbus", "status", "--data-dir", data.to_str().unwrap()],
    );
    ok.then(|| serde_json::from_str::<serde_json::Value>(&out).ok())
        .flatten()
        .map(|v| v["applied"].clone())
}

fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// Address of member `m` on the link between members `a < b`.
fn addr(a: usize, b: usize, m: usize) -> String {
    format!("198.18.{a}{b}.{}", if m == a { 1 } else { 2 })
}

#[test]
fn partitioned_member_converges_after_links_return() {
    let Some(bin) = binary() else {
        return skip("voxplane binary not built (run a workspace `cargo test`)");
    };
    let pid = std::process::id();
    let probe = format!("sbus-t{pid}-probe");
    if !ip(&["netns", "add", &probe]) {
        return skip("cannot create network namespaces (needs root and iproute2)");
    }
    ip(&["netns", "del", &probe]);
    let mut lab = Lab {
        ns: Vec::new(),
        procs: Vec::new(),
    };
    for m in 1..=3 {
        let n = format!("sbus-t{pid}-{m}");
        assert!(ip(&["netns", "add", &n]));
        lab.ns.push(n.clone());
        assert!(ns_ip(&n, &["link", "set", "lo", "up"]));
    }
    let ns = |m: usize| lab.ns[m - 1].clone();
    for (a, b) in [(1, 2), (1, 3), (2, 3)] {
        let (va, vb) = (format!("sb{a}{b}a{pid}"), format!("sb{a}{b}b{pid}"));
        // Interface names are limited to 15 bytes.
        let (va, vb) = (&va[..va.len().min(15)], &vb[..vb.len().min(15)]);
        assert!(ip(&["link", "add", va, "type", "veth", "peer", "name", vb]));
        assert!(ip(&["link", "set", va, "netns", &ns(a)]));
        assert!(ip(&["link", "set", vb, "netns", &ns(b)]));
        for (m, v) in [(a, va), (b, vb)] {
            let cidr = format!("{}/24", addr(a, b, m));
            assert!(ns_ip(&ns(m), &["addr", "add", &cidr, "dev", v]));
            assert!(ns_ip(&ns(m), &["link", "set", v, "up"]));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = |s: &str| dir.join(s).to_str().unwrap().to_owned();
    assert!(voxplane(&bin, &["cert", "ca", "--out", &d("ca")]).0);
    for m in 1..=3 {
        let (id, out) = (m.to_string(), d(&format!("c{m}")));
        assert!(
            voxplane(
                &bin,
                &[
                    "cert",
                    "member",
                    "--ca-key",
                    &d("ca/ca.key"),
                    "--id",
                    &id,
                    "--out",
                    &out
                ]
            )
            .0
        );
    }
    for m in 1..=3usize {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns(m)]).arg(&bin).args([
            "sbus",
            "--data-dir",
            &d(&format!("d{m}")),
            "--listen",
            "0.0.0.0:443",
        ]);
        for p in (1..=3).filter(|&p| p != m) {
            let (a, b) = (m.min(p), m.max(p));
            cmd.args(["--peer", &format!("{p}@{}:443", addr(a, b, p))]);
        }
        cmd.args([
            "--cert",
            &d(&format!("c{m}/member.pem")),
            "--key",
            &d(&format!("c{m}/member.key")),
            "--ca",
            &d("ca/ca.pem"),
        ]);
        let log = std::fs::File::create(dir.join(format!("log{m}"))).unwrap();
        lab.procs
            .push(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    }
    let data = |m: usize| dir.join(format!("d{m}"));
    let linked = |m: usize| {
        let (ok, out) = voxplane(
            &bin,
            &["sbus", "lag", "--data-dir", data(m).to_str().unwrap()],
        );
        ok && out.matches("true").count() == 2
    };
    for m in 1..=3 {
        if !(0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(40));
            linked(m)
        }) {
            let logs: Vec<String> = (1..=3)
                .map(|m| std::fs::read_to_string(dir.join(format!("log{m}"))).unwrap_or_default())
                .collect();
            panic!("links of member {m} not up; logs: {logs:#?}");
        }
    }

    // Cut member 1 off, write on both sides of the cut.
    for (a, b) in [(1, 2), (1, 3)] {
        let v = format!("sb{a}{b}a{pid}");
        assert!(ns_ip(
            &ns(1),
            &["link", "set", &v[..v.len().min(15)], "down"]
        ));
    }
    let writes = 100;
    for k in 0..writes {
        for m in [1, 2] {
            let (ok, _) = voxplane(
                &bin,
                &[
                    "sbus",
                    "put",
                    "--data-dir",
                    data(m).to_str().unwrap(),
                    "trunks",
                    &format!("m{m}-{k}"),
                    "x",
                ],
            );
            assert!(ok);
        }
    }
    let a1 = applied(&bin, &data(1)).unwrap();
    let a3 = applied(&bin, &data(3)).unwrap();
    assert!(
        a3["1"].as_u64().unwrap_or(0) < a1["1"].as_u64().unwrap(),
        "the cut let writes through"
    );
    // Heal and measure the flush.
    for (a, b) in [(1, 2), (1, 3)] {
        let v = format!("sb{a}{b}a{pid}");
        assert!(ns_ip(&ns(1), &["link", "set", &v[..v.len().min(15)], "up"]));
    }
    let t = until(Duration::from_secs(60), "convergence after healing", || {
        let all: Vec<_> = (1..=3).map(|m| applied(&bin, &data(m))).collect();
        all.iter().all(|a| a.is_some() && *a == all[0])
    });
    eprintln!(
        "flush of {} writes queued across the cut: {t:?}",
        2 * writes
    );
    for m in 1..=3 {
        for k in (0..writes).step_by(37) {
            for w in [1, 2] {
                let (ok, v) = voxplane(
                    &bin,
                    &[
                        "sbus",
                        "get",
                        "--data-dir",
                        data(m).to_str().unwrap(),
                        "trunks",
                        &format!("m{w}-{k}"),
                    ],
                );
                assert!(ok && v == "x", "member {m} lacks m{w}-{k}");
            }
        }
    }
}
