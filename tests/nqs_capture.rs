//! `voxplane nqs --capture`: promiscuous AF_PACKET capture of a port
//! mirror, for real. Three network namespaces the test creates:
//!
//! ```text
//!  uac ns                                   uas ns
//!  a0 192.0.2.1/24 ──────── veth ──────── b0 192.0.2.2/24
//!  │ tc clsact: ingress + egress ─mirred mirror─> m0
//!  m0 ────────────── veth ────────────── m1 (monitor ns: voxplane nqs --capture m1)
//! ```
//!
//! sipp places one call with G.711 RTP (its `uac_pcap` scenario replays
//! sipp's own `g711a.pcap`; the uas echoes the media back), NQS captures the
//! mirrored copies on `m1` with two fanout threads, and the test checks the
//! call, its streams and MOS through the API, the capture counters in
//! `/metrics`, and the call's pcap in the spool. Needs root, `ip`, `tc`,
//! `curl` and sipp; skips with `SKIP:` otherwise (fails under
//! `VOXPLANE_REQUIRE_TOOLS`). Bounded: about 15 s.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tests::netns::Netns;

/// Kills a child process on drop, even when the test fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ip netns exec NS tc …`, asserting success.
fn tc(ns: &Netns, args: &[&str]) {
    let mut argv = vec!["tc"];
    argv.extend_from_slice(args);
    let out = ns.exec(&argv);
    assert!(
        out.status.success(),
        "tc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` on the API inside the monitor namespace.
fn api(ns: &Netns, port: u16, path: &str, token: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    let auth = format!("Authorization: Bearer {token}");
    let out = ns.exec(&["curl", "-sf", "--max-time", "10", "-H", &auth, &url]);
    assert!(out.status.success(), "GET {path}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 answer")
}

/// The value of a counter in Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[test]
fn nqs_captures_a_tc_mirrored_sipp_call() {
    if !tests::netns::available("nqs promiscuous capture")
        || !["sipp", "tc", "curl"].iter().all(|t| testkit::tool(t))
    {
        return;
    }
    let sipp_pcaps = Path::new("/usr/share/sip-tester");
    if !sipp_pcaps.join("g711a.pcap").is_file() {
        assert!(
            std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none(),
            "sipp's g711a.pcap is missing"
        );
        println!("SKIP: /usr/share/sip-tester/g711a.pcap missing");
        return;
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = format!(
        "vxt-{}-cap{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let uac = Netns::create(&format!("{base}-uac"));
    let uas = Netns::create(&format!("{base}-uas"));
    let mon = Netns::create(&format!("{base}-mon"));
    uac.ip(&[
        "link",
        "add",
        "a0",
        "type",
        "veth",
        "peer",
        "name",
        "b0",
        "netns",
        uas.name(),
    ]);
    uac.ip(&[
        "link",
        "add",
        "m0",
        "type",
        "veth",
        "peer",
        "name",
        "m1",
        "netns",
        mon.name(),
    ]);
    uac.ip(&["addr", "add", "192.0.2.1/24", "dev", "a0"]);
    uas.ip(&["addr", "add", "192.0.2.2/24", "dev", "b0"]);
    for (ns, dev) in [(&uac, "a0"), (&uac, "m0"), (&uas, "b0"), (&mon, "m1")] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    // The port mirror: every frame a0 receives or sends, copied out of m0.
    tc(&uac, &["qdisc", "add", "dev", "a0", "clsact"]);
    for dir in ["ingress", "egress"] {
        tc(
            &uac,
            &[
                "filter", "add", "dev", "a0", dir, "protocol", "all", "u32", "match", "u32", "0",
                "0", "action", "mirred", "egress", "mirror", "dev", "m0",
            ],
        );
    }
    for (ns, dev) in [(&uac, "a0"), (&uac, "m0"), (&uas, "b0"), (&mon, "m1")] {
        ns.wait_operational(dev, Duration::from_secs(3));
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let voxplane = env!("CARGO_BIN_EXE_voxplane");
    let out = Command::new(voxplane)
        .args(["token", "create", "--admin", "--data-dir", d])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            mon.name(),
            voxplane,
            "nqs",
            "--data-dir",
            d,
        ])
        .args(["--http-listen", "127.0.0.1:0", "--capture", "m1"])
        .args(["--capture-workers", "2", "--capture-ring-mb", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _nqs = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut port = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
            }
            if line.contains("capturing on m1") {
                let _ = tx.send(port);
            }
            eprintln!("nqs: {line}");
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("nqs started capturing")
        .expect("API port printed");

    // One call: the uas answers and echoes the media; the uac replays
    // sipp's G.711 A-law pcap (about 5 s) and hangs up.
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(sipp_pcaps, work.path().join("pcap")).unwrap();
    let sipp = |ns: &Netns, args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns.name(), "sipp"])
            .args(args)
            .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
            .current_dir(work.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let server = Running(sipp(
        &uas,
        &[
            "-sn",
            "uas",
            "-i",
            "192.0.2.2",
            "-mi",
            "192.0.2.2",
            "-rtp_echo",
        ],
    ));
    std::thread::sleep(Duration::from_millis(300));
    let client = sipp(
        &uac,
        &[
            "-sn",
            "uac_pcap",
            "192.0.2.2",
            "-i",
            "192.0.2.1",
            "-mi",
            "192.0.2.1",
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(
        client.status.success(),
        "sipp uac: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    drop(server);

    // The call is finished 2 s after its BYE, then written to SQLite.
    let deadline = Instant::now() + Duration::from_secs(20);
    let calls: serde_json::Value = loop {
        let calls: serde_json::Value =
            serde_json::from_str(&api(&mon, port, "/api/calls", &token)).unwrap();
        if calls.as_array().is_some_and(|a| !a.is_empty()) {
            break calls;
        }
        assert!(Instant::now() < deadline, "no call stored: {calls}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let id = calls[0]["call_id"].as_str().unwrap();
    let detail: serde_json::Value =
        serde_json::from_str(&api(&mon, port, &format!("/api/calls/{id}"), &token)).unwrap();
    assert_eq!(detail["call"]["reason"], "bye", "{detail}");
    let streams = detail["streams"].as_array().unwrap();
    // Both directions of the A-law stream, whole and loss-free (the
    // mirror copies every frame; the DTMF events may be extra streams).
    let audio: Vec<_> = streams
        .iter()
        .filter(|s| s["packets"].as_u64().unwrap() >= 200)
        .collect();
    assert_eq!(audio.len(), 2, "{streams:?}");
    for s in &audio {
        assert_eq!(s["lost"].as_i64().unwrap(), 0, "{s}");
        let mos = s["mos"].as_f64().unwrap();
        assert!(mos > 4.0, "{s}");
    }
    let sip = detail["sip"].as_array().unwrap();
    assert!(
        sip.len() >= 5,
        "INVITE, 100/180/200, ACK, BYE, 200: {sip:?}"
    );

    // The call's pcap, downloaded from the API: every captured packet of
    // the call (SIP and RTP).
    let url = detail["pcap"]["url"].as_str().expect("pcap row");
    let file = dir.path().join("call.pcap");
    let out = mon.exec(&[
        "curl",
        "-sf",
        "--max-time",
        "10",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-o",
        file.to_str().unwrap(),
        &format!("http://127.0.0.1:{port}{url}"),
    ]);
    assert!(out.status.success(), "GET {url}: {out:?}");
    let bytes = std::fs::read(&file).unwrap();
    let mut reader = wire::capture::FileReader::new(&bytes[..]).unwrap();
    let mut frames = 0;
    while let Some(f) = reader.next_frame() {
        f.unwrap();
        frames += 1;
    }
    assert_eq!(detail["pcap"]["packets"].as_u64(), Some(frames as u64));
    let rtp: u64 = audio.iter().map(|s| s["packets"].as_u64().unwrap()).sum();
    assert!(frames as u64 >= rtp + sip.len() as u64, "{frames} frames");

    let metrics = api(&mon, port, "/metrics", &token);
    assert!(metric(&metrics, "nqs_capture_packets_total") >= frames as u64);
    assert_eq!(metric(&metrics, "nqs_capture_kernel_drops_total"), 0);
    assert_eq!(metric(&metrics, "nqs_capture_handoff_drops_total"), 0);
}
