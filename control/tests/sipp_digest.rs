//! Interop with the real sipp (Debian `sip-tester`) over loopback: the scenarios in
//! `tests/sipp/` against a minimal UDP driver of the sans-IO modules (Guard →
//! Registrar / Authenticator, store-backed Snapshot). sipp's exit code decides.
#![expect(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "this test is a driver: it owns a socket and the clock"
)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::auth::{Algorithm, AuthConfig, Authenticator, ChallengeKind, Realm, Verdict};
use control::provision::{Provisioning, Snapshot};
use control::registrar::{Directory, Registrar, RegistrarConfig, Source};
use control::response;
use control::security::{Guard, GuardConfig, Screen};
use wire::sip::Message;

/// What the driver does with one screened request: the reply, if any.
type Handler = Box<dyn FnMut(Instant, &Message<'_>, SocketAddr) -> Option<Vec<u8>> + Send>;

/// A store with example.com and alice/secret, and its snapshot.
fn directory(dir: &std::path::Path) -> Snapshot {
    let store = Arc::new(sbus::store::Store::open(dir, sbus::types::MemberId(1)).unwrap());
    let prov = Provisioning::new(store);
    prov.add_domain("example.com", sbus::record::Placement::Global)
        .unwrap();
    prov.add_user("alice@example.com", "secret", "").unwrap();
    Snapshot::load(&prov).unwrap()
}

/// sipp 3.6 answers the first challenge and knows MD5 only.
fn authenticator() -> Authenticator {
    let cfg = AuthConfig {
        algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
        ..AuthConfig::default()
    };
    Authenticator::new([5; 32], Instant::now(), cfg)
}

/// Serves UDP on loopback with `handler` while sipp runs `scenario` with `args`;
/// panics with sipp's errors if it fails.
fn run_sipp(scenario: &str, args: &[&str], mut handler: Handler) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut guard = Guard::new(GuardConfig::default());
        let mut buf = vec![0u8; 65_535];
        while !stop2.load(Ordering::Relaxed) {
            let Ok((n, src)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let now = Instant::now();
            let reply = match guard.screen(now, src.ip(), &buf[..n]) {
                Screen::Accept(m) | Screen::Challenge(m) => handler(now, &m, src),
                Screen::Respond(bytes) => Some(bytes),
                Screen::Drop(_) => None,
            };
            if let Some(r) = reply {
                sock.send_to(&r, src).unwrap();
            }
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let scenario = format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .args(["60", "sipp", &format!("127.0.0.1:{port}"), "-sf", &scenario])
        .args(args)
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0", "-nostdin"])
        .args(["-timeout", "15s", "-timeout_error", "-trace_err"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let errors: String = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        out.status.success(),
        "sipp failed: {:?}\n{}\n{errors}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn sipp_registers_and_unregisters_with_digest() {
    if !testkit::tool("sipp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = directory(dir.path());
    let seen = Arc::new(Mutex::new((Vec::new(), 0, 0)));
    let seen2 = seen.clone();
    let mut auth = authenticator();
    let mut reg = Registrar::new(RegistrarConfig::default());
    let handler: Handler = Box::new(move |now, m, src| {
        let from = Source {
            addr: src,
            transport: "udp",
        };
        let r = reg.handle_register(now, m, from, &mut auth, &snap);
        let mut s = seen2.lock().unwrap();
        s.0.push(r.status);
        s.1 = s.1.max(reg.len());
        s.2 = reg.len();
        Some(r.bytes)
    });
    let args = "-key domain example.com -s alice -au alice -ap secret -m 3 -l 1";
    run_sipp(
        "register_digest.xml",
        &args.split(' ').collect::<Vec<_>>(),
        handler,
    );
    let (statuses, max_bindings, left) = seen.lock().unwrap().clone();
    // Three register/un-register cycles: 401, 200, 401, 200 each.
    assert_eq!(statuses, [401, 200, 401, 200].repeat(3));
    assert_eq!(max_bindings, 1);
    assert_eq!(left, 0);
}

/// The INVITE scenario against a UAS that challenges with the Authenticator (as the
/// B2BUA does before routing), answers the authenticated INVITE and the BYE.
#[test]
fn sipp_invite_is_challenged_then_authenticated() {
    if !testkit::tool("sipp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = directory(dir.path());
    let mut auth = authenticator();
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let verdicts2 = verdicts.clone();
    let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let handler: Handler = Box::new(move |now, m, _src| match m.method()?.as_str() {
        "INVITE" => {
            let realm = Realm("example.com");
            let v = auth.verify(m, ChallengeKind::Www, realm, now, |u| {
                snap.credentials("example.com", u)
            });
            verdicts2.lock().unwrap().push(v.clone());
            Some(match v {
                Verdict::Authenticated { .. } => {
                    let extra = [
                        ("Contact", "<sip:uas@127.0.0.1>"),
                        ("Content-Type", "application/sdp"),
                    ];
                    response::build(m, 200, "OK", Some("uas1"), &extra, sdp)
                }
                Verdict::Challenge { stale } => {
                    let ch = auth.challenge(realm, ChallengeKind::Www, now, stale);
                    let extra: Vec<(&str, &str)> = ch
                        .iter()
                        .map(|c| ("WWW-Authenticate", c.as_str()))
                        .collect();
                    response::build(m, 401, "Unauthorized", Some("uas1"), &extra, b"")
                }
                Verdict::Forbidden(_) | Verdict::BadRequest(_) => {
                    response::build(m, 403, "Forbidden", Some("uas1"), &[], b"")
                }
            })
        }
        "BYE" => Some(response::build(m, 200, "OK", None, &[], b"")),
        _ => None, // ACK
    });
    let args = "-key domain example.com -key caller alice -s bob -au alice -ap secret -m 2 -l 1";
    run_sipp(
        "invite_digest_uac.xml",
        &args.split(' ').collect::<Vec<_>>(),
        handler,
    );
    let v = verdicts.lock().unwrap().clone();
    // Two calls: challenged, then authenticated with MD5, each.
    assert_eq!(v.len(), 4, "{v:?}");
    for pair in v.chunks(2) {
        assert_eq!(pair[0], Verdict::Challenge { stale: false });
        assert!(
            matches!(pair[1], Verdict::Authenticated { algorithm: Algorithm::Md5, ref user } if user == "alice"),
            "{v:?}"
        );
    }
}
