//! Interop of `voxplane up` with the real sipp (Debian `sip-tester`), on
//! loopback: the callee registers, then sipp places calls through the
//! B2BUA. sipp's exit code and its `-trace_stat` CSV decide pass or fail.
//! Skips (or fails in CI) without sipp.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `voxplane up` on ephemeral ports, killed on drop.
struct Up {
    child: Child,
    sip: String,
    tls: String,
    /// Demo user → password, as printed on first start.
    passwords: std::collections::HashMap<String, String>,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start(port_range: &str) -> Up {
        Up::start_with(port_range, &[])
    }

    fn start_with(port_range: &str, extra: &[&str]) -> Up {
        Up::launch(None, "127.0.0.1", port_range, extra)
    }

    /// `voxplane up` on `ip` (SIP on an ephemeral port, media on `ip`),
    /// inside network namespace `ns` if given.
    fn launch(ns: Option<&str>, ip: &str, port_range: &str, extra: &[&str]) -> Up {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = in_namespace(ns, env!("CARGO_BIN_EXE_voxplane"));
        let mut child = command
            .args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--sip-listen",
                &std::net::SocketAddr::new(ip.parse().unwrap(), 0).to_string(),
                "--media-addr",
                ip,
                "--metrics-listen",
                "127.0.0.1:0",
                "--port-range",
                port_range,
                "--workers",
                "1",
                // Short timers keep the failure paths of the tests quick.
                "--t1-ms",
                "100",
                // sipp 3.6 answers the first challenge and knows MD5 only.
                "--digest",
                "md5,sha-256",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting voxplane up");
        let stdout = child.stdout.take().expect("piped");
        let mut sip = String::new();
        let mut tls = String::new();
        let mut passwords = std::collections::HashMap::new();
        let mut metrics = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading voxplane up");
            if let Some(rest) = line.strip_prefix("voxplane up: demo user ") {
                let mut f = rest.split_whitespace();
                if let (Some(aor), Some(_), Some(pw)) = (f.next(), f.next(), f.next()) {
                    let user = aor.split('@').next().unwrap_or("").to_owned();
                    passwords.insert(user, pw.to_owned());
                }
            }
            if let Some(rest) = line.strip_prefix("voxplane up: SIP tls:") {
                tls = rest.trim().to_owned();
            }
            if let Some(rest) = line.strip_prefix("voxplane up: SIP udp:") {
                sip = rest.split_whitespace().next().unwrap_or("").to_owned();
                metrics = line
                    .split("http://")
                    .nth(1)
                    .and_then(|s| s.split('/').next())
                    .unwrap_or("")
                    .to_owned();
                break;
            }
        }
        assert!(
            !sip.is_empty(),
            "voxplane up did not report its SIP address"
        );
        Up {
            child,
            sip,
            tls,
            passwords,
            metrics,
            _dir: dir,
        }
    }

    /// Waits (up to 2 s: counters are published every 100 ms) until every
    /// line in `want` is in `/metrics`; panics with the page otherwise.
    fn expect_metrics(&self, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let m = self.metrics();
            if want.iter().all(|w| m.lines().any(|l| l == *w)) {
                return;
            }
            assert!(Instant::now() < deadline, "want {want:?} in\n{m}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn password(&self, user: &str) -> &str {
        self.passwords.get(user).map_or("", String::as_str)
    }

    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sipp run.
struct Sipp {
    child: Child,
    stat: PathBuf,
    name: String,
}

/// `program` run directly, or through `ip netns exec NS`.
fn in_namespace(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

fn sipp(dir: &Path, name: &str, scenario: &str, args: &[&str]) -> Sipp {
    sipp_at(dir, name, scenario, None, "127.0.0.1", args)
}

/// sipp with `scenario` (XML text, or the name of a built-in scenario), on
/// address `ip`, in namespace `ns` if given, from `dir`.
fn sipp_at(
    dir: &Path,
    name: &str,
    scenario: &str,
    ns: Option<&str>,
    ip: &str,
    args: &[&str],
) -> Sipp {
    let mut command = in_namespace(ns, "sipp");
    if scenario.starts_with('<') {
        let xml = dir.join(format!("{name}.xml"));
        std::fs::write(&xml, scenario).unwrap();
        command.arg("-sf").arg(xml);
    } else {
        command.args(["-sn", scenario]);
    }
    let stat = dir.join(format!("{name}.csv"));
    let child = command
        .current_dir(dir)
        .args(["-i", ip, "-mi", ip, "-nostdin"])
        .args(["-timeout", "20s", "-timeout_error", "-trace_stat", "-stf"])
        .arg(&stat)
        .args(["-trace_err", "-error_file"])
        .arg(dir.join(format!("{name}.err")))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting sipp");
    Sipp {
        child,
        stat,
        name: name.to_owned(),
    }
}

impl Sipp {
    /// Waits for sipp; asserts exit code 0 and `calls` successful, 0 failed
    /// calls in the last (cumulative) row of its statistics CSV.
    fn expect_success(mut self, calls: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sipp {} did not finish", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = std::fs::read_to_string(self.stat.with_extension("err")).unwrap_or_default();
        assert!(
            status.success(),
            "sipp {} exited with {status}: {err}",
            self.name
        );
        let csv = std::fs::read_to_string(&self.stat).expect("sipp stat file");
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().expect("header").split(';').collect();
        let last: Vec<&str> = lines.next_back().expect("a row").split(';').collect();
        let col = |name: &str| {
            let i = header.iter().position(|h| *h == name).expect(name);
            last[i].trim().parse::<u64>().expect("a number")
        };
        assert_eq!(
            col("SuccessfulCall(C)"),
            u64::from(calls),
            "sipp {}",
            self.name
        );
        assert_eq!(col("FailedCall(C)"), 0, "sipp {}", self.name);
    }
}

fn register(dir: &Path, up: &Up, user: &str, port: u16, transport: &str) {
    register_at(dir, up, user, port, transport, None, "127.0.0.1");
}

fn register_at(
    dir: &Path,
    up: &Up,
    user: &str,
    port: u16,
    transport: &str,
    ns: Option<&str>,
    ip: &str,
) {
    let xml = REGISTER.replace("USER", user);
    sipp_at(
        dir,
        &format!("register-{user}"),
        &xml,
        ns,
        ip,
        &[
            "-t",
            transport,
            "-p",
            &port.to_string(),
            &up.sip,
            "-m",
            "1",
            "-au",
            user,
            "-ap",
            up.password(user),
        ],
    )
    .expect_success(1);
}

/// A port free on 127.0.0.1 for both UDP and TCP (sipp binds both with -t t1).
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn ready() -> bool {
    testkit::tool("sipp")
}

/// Registers `user` (the callee on `base`), runs the callee scenario there
/// and the caller on another free port, `calls` times; both must succeed.
fn call_through(
    transport: &str,
    ports: &str,
    user: &str,
    uas_xml: &str,
    uac_xml: &str,
    calls: u32,
) -> Up {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(ports);
    // Free ports: other services on this machine bind wide UDP ranges.
    let base = free_port();
    register(dir.path(), &up, user, base, transport);
    let n = calls.to_string();
    let uas = sipp(
        dir.path(),
        "uas",
        uas_xml,
        &["-t", transport, "-p", &base.to_string(), "-m", &n],
    );
    std::thread::sleep(Duration::from_millis(300));
    let caller_port = free_port().to_string();
    let uac = sipp(
        dir.path(),
        "uac",
        uac_xml,
        &[
            "-t",
            transport,
            "-p",
            &caller_port,
            "-s",
            user,
            "-au",
            "alice",
            "-ap",
            up.password("alice"),
            &up.sip,
            "-m",
            &n,
            "-r",
            "10",
        ],
    );
    uac.expect_success(calls);
    uas.expect_success(calls);
    up
}

#[test]
fn uac_to_uas_invite_ack_bye() {
    if !ready() {
        return;
    }
    let up = call_through("u1", "41000-41199", "bob", &UAS, &UAC, 3);
    up.expect_metrics(&[
        "voxplane_sip_calls_answered_total 3",
        "voxplane_relay_sessions 0",
        "voxplane_sip_requests_total{method=\"BYE\"} 3",
    ]);
    // Three CDRs in the store, answered, ended by the caller, with both legs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_voxplane"))
            .args(["cdr", "export", "--data-dir"])
            .arg(up._dir.path().join("data"))
            .output()
            .expect("voxplane cdr export");
        let csv = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows: Vec<String> = csv.lines().skip(1).map(str::to_owned).collect();
        if rows.len() >= 3 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert!(
            r.contains(",voxplane.local,") && r.contains(",200,caller-bye,"),
            "{r}"
        );
        assert!(r.contains("caller") && r.contains("callee"), "{r}");
    }
}

#[test]
fn calls_over_tcp() {
    if !ready() {
        return;
    }
    let up = call_through("t1", "41800-41999", "bob", &UAS, &UAC, 2);
    up.expect_metrics(&[
        "voxplane_sip_calls_answered_total 2",
        "voxplane_relay_sessions 0",
        "voxplane_sip_send_errors_total 0",
    ]);
}

#[test]
fn cancel_before_answer() {
    if !ready() {
        return;
    }
    let up = call_through(
        "u1",
        "41200-41399",
        "bob",
        &UAS_RING_CANCELLED,
        &UAC_CANCEL,
        1,
    );
    up.expect_metrics(&[
        "voxplane_relay_sessions 0",
        "voxplane_sip_calls_answered_total 0",
        "voxplane_sip_calls_total 1",
    ]);
}

#[test]
fn bye_from_the_callee() {
    if !ready() {
        return;
    }
    let up = call_through(
        "u1",
        "41400-41599",
        "bob",
        &UAS_HANGS_UP,
        &UAC_RECEIVES_BYE,
        1,
    );
    up.expect_metrics(&[
        "voxplane_relay_sessions 0",
        "voxplane_sip_calls_answered_total 1",
    ]);
}

#[test]
fn unknown_user_gets_404() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start("41600-41799");
    sipp(
        dir.path(),
        "uac",
        &UAC_EXPECT_404,
        &[
            "-p",
            &free_port().to_string(),
            "-s",
            "nobody",
            &up.sip,
            "-m",
            "1",
            "-au",
            "alice",
            "-ap",
            up.password("alice"),
        ],
    )
    .expect_success(1);
}

const REGISTER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send>
    <![CDATA[
      REGISTER sip:voxplane.local SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:USER@voxplane.local>;tag=[pid]reg
      To: <sip:USER@voxplane.local>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:USER@[local_ip]:[local_port]>
      Expires: 300
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send>
    <![CDATA[
      REGISTER sip:voxplane.local SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:USER@voxplane.local>;tag=[pid]reg
      To: <sip:USER@voxplane.local>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:USER@[local_ip]:[local_port]>
      Expires: 300
      Max-Forwards: 70
      [authentication]
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

const SDP: &str = "      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
";

const UAC_HEAD: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@voxplane.local>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
SDP
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@voxplane.local>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      [authentication]
SDP
    ]]>
  </send>
"#;

/// The caller hangs up.
const CALLER_BYE: &str = r#"  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#;

const ACK_AND_BYE: &str = r#"
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#;

fn uac(body: &str) -> String {
    let mut s = UAC_HEAD.replace("SDP\n", SDP);
    s.push_str(body);
    s.push_str("</scenario>\n");
    s
}

static UAC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uac(&format!(
        r#"  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
{ACK_AND_BYE}
  <pause milliseconds="200"/>
{CALLER_BYE}"#
    ))
});

static UAC_CANCEL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uac(r#"  <recv response="100" optional="true"/>
  <recv response="180"/>
  <send>
    <![CDATA[
      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@voxplane.local>
      Call-ID: [call_id]
      CSeq: 2 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#)
});

static UAC_RECEIVES_BYE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uac(&format!(
        r#"  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
{ACK_AND_BYE}
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#
    ))
});

static UAC_EXPECT_404: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uac(r#"  <recv response="100" optional="true"/>
  <recv response="404"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#)
});

const UAS_HEAD: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas">
  <recv request="INVITE" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]callee[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
"#;

const UAS_ANSWER: &str = r#"
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]callee[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]>
SDP
    ]]>
  </send>
  <recv request="ACK"/>
"#;

fn uas(body: &str) -> String {
    let mut s = UAS_HEAD.to_owned();
    s.push_str(body);
    s.push_str("  <Reference variables=\"caller\"/>\n</scenario>\n");
    s
}

static UAS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uas(&format!(
        r#"{}
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#,
        UAS_ANSWER.replace("SDP\n", SDP)
    ))
});

static UAS_RING_CANCELLED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uas(r#"
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]callee[call_number]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
"#)
});

static UAS_HANGS_UP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uas(&format!(
        r#"{}
  <pause milliseconds="200"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:callee@voxplane.local>;tag=[pid]callee[call_number]
      To: [$caller]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#,
        UAS_ANSWER.replace("SDP\n", SDP)
    ))
});

/// SIP over TLS with the self-signed certificate `up` creates: OPTIONS gets
/// 200 on the connection, a CRLFCRLF ping gets a CRLF pong (RFC 5626), and
/// two messages in one write are framed apart. Needs no external tool.
#[test]
fn tls_options_framing_and_keepalive_pong() {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use std::io::{Read, Write};

    let up = Up::start_with("42000-42099", &["--sip-tls-listen", "127.0.0.1:0"]);
    assert!(!up.tls.is_empty(), "TLS address printed");
    let cert = up._dir.path().join("data/tls/sip-cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).expect("the self-signed certificate"))
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let tcp = std::net::TcpStream::connect(&up.tls).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = tcp.local_addr().unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let options = |n: u32| {
        format!(
            "OPTIONS sip:voxplane.local SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls{n}\r\n\
             From: <sip:t@voxplane.local>;tag=t{n}\r\nTo: <sip:voxplane.local>\r\nCall-ID: tls{n}\r\n\
             CSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // Two requests in one write: both answered, in order.
    tls.write_all(format!("{}{}", options(1), options(2)).as_bytes())
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("SIP/2.0 200 OK").count() < 2 {
        let n = tls.read(&mut buf).expect("responses");
        assert!(n > 0, "connection closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        got.find("CSeq: 1 OPTIONS") < got.find("CSeq: 2 OPTIONS"),
        "{got}"
    );
    tls.write_all(b"\r\n\r\n").unwrap();
    let n = tls.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"\r\n", "pong");
    up.expect_metrics(&[
        "voxplane_sip_connections 1",
        "voxplane_sip_requests_total{method=\"OPTIONS\"} 2",
    ]);
}

/// (d) A call with RTP whose media crosses the relay between network
/// namespaces: caller (198.18.1.2) — `voxplane up` in the relay namespace
/// (198.18.1.1) — callee (198.18.2.2). The caller plays sipp's G.711 A-law
/// and RFC 4733 pcaps, the callee echoes RTP; tshark on both relay links
/// must see four G.711 streams (caller→relay, relay→callee and back) with
/// equal packet counts and no loss.
#[test]
fn rtp_crosses_the_relay_between_namespaces() {
    use dataplane::testnet::{Host, TestNet};
    if !ready() || !testkit::tool("tshark") {
        return;
    }
    let net = match TestNet::create() {
        Ok(n) => n,
        Err(e) if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none() => {
            eprintln!("SKIP: rtp_crosses_the_relay_between_namespaces: {e}");
            return;
        }
        Err(e) => panic!("test network: {e}"),
    };
    let (caller, relay, callee) = (
        net.namespace(Host::Caller).to_owned(),
        net.namespace(Host::Relay).to_owned(),
        net.namespace(Host::Callee).to_owned(),
    );
    let dir = tempfile::tempdir().unwrap();
    let up = Up::launch(Some(&relay), "198.18.1.1", "43000-43099", &[]);
    // tshark on both relay links, media ports only.
    let capture = dir.path().join("media.pcapng");
    let log = dir.path().join("tshark.log");
    let mut tshark = in_namespace(Some(&relay), "tshark")
        .args(["-i", "r0", "-i", "r1", "-q", "-a", "duration:40", "-w"])
        .arg(&capture)
        .args(["-f", "udp portrange 43000-43099"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("tshark");
    let started = Instant::now();
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("Capturing on")
        .count()
        < 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "tshark did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    register_at(
        dir.path(),
        &up,
        "bob",
        5070,
        "u1",
        Some(&callee),
        "198.18.2.2",
    );
    let uas = sipp_at(
        dir.path(),
        "uas",
        "uas",
        Some(&callee),
        "198.18.2.2",
        &["-p", "5070", "-rtp_echo", "-mp", "6000", "-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(300));
    std::os::unix::fs::symlink("/usr/share/sip-tester", dir.path().join("pcap")).unwrap();
    let uac = sipp_at(
        dir.path(),
        "uac",
        &UAC_PCAP,
        Some(&caller),
        "198.18.1.2",
        &[
            "-p",
            "5080",
            "-mp",
            "16000",
            "-s",
            "bob",
            &up.sip,
            "-m",
            "1",
            "-au",
            "alice",
            "-ap",
            up.password("alice"),
        ],
    );
    uac.expect_success(1);
    uas.expect_success(1);
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &tshark.id().to_string()])
        .status();
    let _ = tshark.wait();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args(["-q", "-o", "rtp.heuristic_rtp:TRUE", "-z", "rtp,streams"])
        .output()
        .expect("tshark -z rtp,streams");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Columns: start, end, src ip, src port, dst ip, dst port, SSRC, payload, packets, lost, ...
    let audio: Vec<(String, String, u64, i64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[7].eq_ignore_ascii_case("g711A")).then(|| {
                (
                    f[2].to_owned(),
                    f[4].to_owned(),
                    f[8].parse().unwrap(),
                    f[9].parse().unwrap(),
                )
            })
        })
        .collect();
    assert_eq!(
        audio.len(),
        4,
        "four G.711 streams through the relay:\n{text}"
    );
    let mut pairs: Vec<(&str, &str)> = audio.iter().map(|a| (a.0.as_str(), a.1.as_str())).collect();
    pairs.sort_unstable();
    assert_eq!(
        pairs,
        vec![
            ("198.18.1.1", "198.18.1.2"),
            ("198.18.1.1", "198.18.2.2"),
            ("198.18.1.2", "198.18.1.1"),
            ("198.18.2.2", "198.18.1.1"),
        ],
        "{text}"
    );
    for a in &audio {
        assert_eq!(a.3, 0, "loss on {} -> {}:\n{text}", a.0, a.1);
    }
    assert!(
        audio.iter().all(|a| a.2 == audio[0].2 && a.2 > 100),
        "{text}"
    );
    drop(up);
    drop(net);
}

/// The caller of the media test: authenticated INVITE offering G.711 A-law
/// and telephone-event, then sipp's own A-law pcap played after the ACK.
static UAC_PCAP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    uac(&format!(
        r#"  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
{ACK_AND_BYE}
  <nop>
    <action>
      <exec play_pcap_audio="pcap/g711a.pcap"/>
    </action>
  </nop>
  <pause milliseconds="9000"/>
{CALLER_BYE}"#
    ))
    .replace("m=audio [media_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000", "m=audio [media_port] RTP/AVP 8 101\n      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000")
});

/// RFC 4475 §3.3 messages sent over UDP to a running `voxplane up` get the
/// responses the RFC asks for.
#[test]
fn rfc4475_semantic_messages_get_the_rfc_responses() {
    let Some(fixtures) = testkit::fixtures() else {
        return;
    };
    let up = Up::start("42100-42199");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    for (name, want) in [
        ("insuf", 400),
        ("unkscm", 416),
        ("bext01", 420),
        ("invut", 415),
        ("regaut01", 401),
        ("multi01", 400),
        ("mcl01", 400),
        ("sdp01", 406),
    ] {
        let bytes = std::fs::read(fixtures.join(format!("rfc4475/semantic/{name}.sip"))).unwrap();
        socket.send_to(&bytes, &up.sip).unwrap();
        let mut buf = [0u8; 4096];
        // Skip a 100 Trying, if any.
        let status = loop {
            let (n, _) = socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{name}: no response: {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code != 100 {
                break code;
            }
        };
        assert_eq!(status, want, "{name}");
    }
    up.expect_metrics(&["voxplane_sip_responses_sent_total{class=\"4xx\"} 8"]);
}

/// The same call over IPv6 loopback: SIP on [::1], media anchored on ::1.
#[test]
fn call_over_ipv6() {
    if !ready() || std::net::UdpSocket::bind("[::1]:0").is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = Up::launch(None, "::1", "42200-42299", &[]);
    let base = free_port();
    let xml = REGISTER.replace("USER", "bob");
    let auth = |user: &'static str| ["-au", user, "-ap", up.password(user)];
    let mut args = vec![
        "-p".to_owned(),
        base.to_string(),
        up.sip.clone(),
        "-m".into(),
        "1".into(),
    ];
    args.extend(auth("bob").iter().map(|s| s.to_string()));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    sipp_at(dir.path(), "register", &xml, None, "::1", &args_ref).expect_success(1);
    let uas = sipp_at(
        dir.path(),
        "uas",
        &UAS,
        None,
        "::1",
        &["-p", &base.to_string(), "-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let caller = free_port().to_string();
    let mut args = vec![
        "-p",
        caller.as_str(),
        "-s",
        "bob",
        up.sip.as_str(),
        "-m",
        "1",
    ];
    args.extend(auth("alice"));
    sipp_at(dir.path(), "uac", &UAC, None, "::1", &args).expect_success(1);
    uas.expect_success(1);
    up.expect_metrics(&[
        "voxplane_sip_calls_answered_total 1",
        "voxplane_relay_sessions 0",
    ]);
}
