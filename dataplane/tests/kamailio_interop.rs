//! Interop: Kamailio's `rtpengine` module drives our relay over ng while
//! sipp places a call through Kamailio; tshark confirms the RTP went
//! through our ports both ways without loss.
//!
//! Needs the Debian packages `kamailio`, `sip-tester` and `tshark`, and
//! privileges to capture on `lo`. Everything runs on 127.0.0.1. Skips
//! (saying why) when a tool is missing, unless `VOXPLANE_REQUIRE_TOOLS` is
//! set, in which case it fails.
#![expect(
    clippy::disallowed_types,
    reason = "a test driving real processes and sockets"
)]
#![expect(clippy::disallowed_methods, reason = "a test driving real processes")]

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::relay::{DropReason, RelayConfig};
use dataplane::udp::{UdpBackend, UdpConfig, serve_ng};
use dataplane::uring::UringBackend;

const PORTS: (u16, u16) = (46000, 46099);
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

/// A child started in its own process group; dropping the guard sends
/// SIGTERM to the whole group (Kamailio forks workers), then SIGKILL if it
/// is still there after 3 s, so a failing test leaves nothing behind.
struct Guard(Child);

impl Guard {
    fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        cmd.process_group(0).spawn().map(Guard)
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn kamailio_sipp_call_relayed_both_ways() {
    let missing: Vec<&str> = ["kamailio", "sipp", "tshark"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        let msg = format!("missing {missing:?} (apt-get install kamailio sip-tester tshark)");
        if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIP: kamailio_interop: {msg}");
        return;
    }
    let modules = MODULES;
    assert!(
        Path::new(modules).join("rtpengine.so").exists(),
        "kamailio rtpengine module missing"
    );
    for backend in [Kind::Udp, Kind::Uring] {
        interop(backend);
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Udp,
    Uring,
}

/// One call through Kamailio with the relay on `kind`'s backend.
fn interop(kind: Kind) {
    let modules = MODULES;
    let dir = tempfile::tempdir().unwrap();

    // The relay, in process, with ng on an ephemeral port.
    let config = UdpConfig {
        relay: RelayConfig {
            media_v4: Some("127.0.0.1".parse().unwrap()),
            media_v6: None,
            ports: PORTS.0..=PORTS.1,
            max_sessions: 10,
            ..RelayConfig::default()
        },
        workers: 1,
        ..UdpConfig::default()
    };
    let (_udp, _uring, control) = match kind {
        Kind::Udp => {
            let b = UdpBackend::start(config).unwrap();
            let c = b.control();
            (Some(b), None, c)
        }
        Kind::Uring => {
            let b = UringBackend::start(config).expect("io_uring backend (kernel support)");
            let c = b.control();
            (None, Some(b), c)
        }
    };
    let ng_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ng_port = ng_socket.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let ng_thread = {
        let stop = Arc::clone(&stop);
        let mut control = control.clone();
        thread::spawn(move || serve_ng(&ng_socket, &mut control, &|| stop.load(Ordering::Relaxed)))
    };

    // Kamailio: a stateful proxy that anchors media with rtpengine_* calls.
    let (kam_port, uas_port, uac_port) = (free_udp_port(), free_udp_port(), free_udp_port());
    let cfg = format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:127.0.0.1:{kam_port}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng_port}")
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("INVITE") && has_body("application/sdp")) {{
        if (!rtpengine_offer("replace-origin replace-session-connection")) {{
            sl_send_reply("500", "ng offer failed"); exit;
        }}
        t_on_reply("ANSWER");
    }}
    if (is_method("BYE")) {{ rtpengine_delete(); }}
    $du = "sip:127.0.0.1:{uas_port}";
    if (!t_relay()) {{ sl_reply_error(); }}
}}
onreply_route[ANSWER] {{
    if (status =~ "^2" && has_body("application/sdp")) {{ rtpengine_answer("replace-origin replace-session-connection"); }}
}}
"#
    );
    let cfg_path = dir.path().join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let kam_log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
    let _kamailio = Guard::spawn(
        Command::new("kamailio")
            .args([
                "-f",
                cfg_path.to_str().unwrap(),
                "-DD",
                "-E",
                "-Y",
                dir.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(kam_log),
    )
    .expect("start kamailio");

    // sipp UAS echoing RTP back (the callee), sipp UAC playing G.711 (the caller).
    let uas_log = std::fs::File::create(dir.path().join("uas.log")).unwrap();
    let _uas = Guard::spawn(
        Command::new("sipp")
            .args([
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
                "-p",
                &uas_port.to_string(),
            ])
            .args([
                "-mp",
                "18000",
                "-rtp_echo",
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "40s",
            ])
            .current_dir(dir.path())
            .stdout(uas_log)
            .stderr(Stdio::null()),
    )
    .expect("start sipp uas");

    // tshark on lo, only our media ports.
    let capture = dir.path().join("media.pcap");
    let tshark_log = std::fs::File::create(dir.path().join("tshark.log")).unwrap();
    let mut tshark = Guard::spawn(
        Command::new("tshark")
            .args([
                "-i",
                "lo",
                "-q",
                "-w",
                capture.to_str().unwrap(),
                "-a",
                "duration:40",
            ])
            .args(["-f", &format!("udp portrange {}-{}", PORTS.0, PORTS.1)])
            .stdout(Stdio::null())
            .stderr(tshark_log),
    )
    .expect("start tshark");
    let started = Instant::now();
    while !std::fs::read_to_string(dir.path().join("tshark.log"))
        .unwrap_or_default()
        .contains("Capturing on")
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "tshark did not start"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // Kamailio's rtpengine module pings the relay at start-up; give it time to bind.
    thread::sleep(Duration::from_secs(2));

    std::os::unix::fs::symlink("/usr/share/sip-tester", dir.path().join("pcap")).unwrap();
    let uac = Command::new("sipp")
        .args([
            "-sn",
            "uac_pcap",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &uac_port.to_string(),
        ])
        .args([
            "-mp",
            "16000",
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
        ])
        .arg(format!("127.0.0.1:{kam_port}"))
        .current_dir(dir.path())
        .output()
        .expect("run sipp uac");
    let kam = std::fs::read_to_string(dir.path().join("kamailio.log")).unwrap_or_default();
    assert!(
        uac.status.success(),
        "{kind:?}: sipp uac failed: {}\n--- kamailio ---\n{}",
        String::from_utf8_lossy(&uac.stdout),
        kam.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    thread::sleep(Duration::from_millis(500));
    // Stop the capture cleanly so the file is complete.
    let _ = Command::new("kill")
        .args(["-INT", &tshark.0.id().to_string()])
        .status();
    let _ = tshark.0.wait();

    let (counters, io) = control.counters();
    stop.store(true, Ordering::Relaxed);
    ng_thread.join().unwrap().unwrap();
    assert_eq!(
        counters.sessions_created, 1,
        "one session from the ng offer"
    );
    assert_eq!(
        counters.sessions_deleted, 1,
        "deleted by rtpengine_delete at BYE"
    );
    assert!(counters.forwarded > 400, "{counters:?}");
    assert_eq!(
        counters.drops.get(DropReason::SpoofedSource),
        0,
        "{counters:?}"
    );
    assert_eq!(io.tx_errors, 0);

    // tshark: four RTP streams per payload (caller->relay, relay->callee,
    // callee->relay, relay->caller) through our ports, equal packet counts,
    // no loss. Columns: start, end, src ip, src port, dst ip, dst port, SSRC,
    // payload, packets, lost, ...
    let streams = Command::new("tshark")
        .args([
            "-r",
            capture.to_str().unwrap(),
            "-q",
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-z",
            "rtp,streams",
        ])
        .output()
        .expect("tshark -z rtp,streams");
    let text = String::from_utf8_lossy(&streams.stdout).into_owned();
    let rows = |payload: &str| -> Vec<(u16, u16, u64, i64)> {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 9 && f[7].eq_ignore_ascii_case(payload)).then(|| {
                    (
                        f[3].parse().unwrap(),
                        f[5].parse().unwrap(),
                        f[8].parse().unwrap(),
                        f[9].parse().unwrap(),
                    )
                })
            })
            .collect()
    };
    let audio = rows("g711A");
    assert_eq!(
        audio.len(),
        4,
        "expected 4 G.711 streams through the relay:\n{text}"
    );
    for &(sport, dport, _, lost) in &audio {
        assert!(
            [sport, dport]
                .iter()
                .any(|p| (PORTS.0..=PORTS.1).contains(p)),
            "stream {sport}->{dport} not through our ports:\n{text}"
        );
        assert_eq!(lost, 0, "loss on {sport}->{dport}:\n{text}");
    }
    assert!(
        audio.iter().all(|r| r.2 == audio[0].2 && r.2 > 100),
        "{text}"
    );
    // RFC 4733 events: sipp's DTMF pcap repeats its end packets (tshark shows
    // them as negative loss); what matters is that every leg carries the same.
    let events: Vec<(u64, i64)> = rows("rtpevent").iter().map(|r| (r.2, r.3)).collect();
    assert_eq!(events.len(), 4, "{text}");
    assert!(events.iter().all(|e| *e == events[0]), "{text}");
}
