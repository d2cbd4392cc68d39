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
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start(port_range: &str) -> Up {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_voxplane"))
            .args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--sip-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--port-range",
                port_range,
                "--workers",
                "1",
                // Short timers keep the failure paths of the tests quick.
                "--t1-ms",
                "100",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting voxplane up");
        let stdout = child.stdout.take().expect("piped");
        let mut sip = String::new();
        let mut metrics = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading voxplane up");
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

fn sipp(dir: &Path, name: &str, scenario: &str, args: &[&str]) -> Sipp {
    let xml = dir.join(format!("{name}.xml"));
    std::fs::write(&xml, scenario).unwrap();
    let stat = dir.join(format!("{name}.csv"));
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(&xml)
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-nostdin"])
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

fn register(dir: &Path, up: &Up, user: &str, port: u16) {
    let xml = REGISTER.replace("USER", user);
    sipp(
        dir,
        &format!("register-{user}"),
        &xml,
        &["-p", &port.to_string(), &up.sip, "-m", "1"],
    )
    .expect_success(1);
}

fn ready() -> bool {
    testkit::tool("sipp")
}

/// Registers `user` (the callee on `base`), runs the callee scenario there
/// and the caller on `base + 10`, `calls` times; both must succeed.
fn call_through(
    ports: &str,
    user: &str,
    base: u16,
    uas_xml: &str,
    uac_xml: &str,
    calls: u32,
) -> Up {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(ports);
    register(dir.path(), &up, user, base);
    let n = calls.to_string();
    let uas = sipp(
        dir.path(),
        "uas",
        uas_xml,
        &["-p", &base.to_string(), "-m", &n],
    );
    std::thread::sleep(Duration::from_millis(300));
    let caller_port = (base + 10).to_string();
    let uac = sipp(
        dir.path(),
        "uac",
        uac_xml,
        &[
            "-p",
            &caller_port,
            "-s",
            user,
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
    let up = call_through("41000-41199", "bob", 25070, &UAS, &UAC, 3);
    up.expect_metrics(&[
        "voxplane_sip_calls_answered_total 3",
        "voxplane_relay_sessions 0",
        "voxplane_sip_requests_total{method=\"BYE\"} 3",
    ]);
}

#[test]
fn cancel_before_answer() {
    if !ready() {
        return;
    }
    let up = call_through(
        "41200-41399",
        "carol",
        25170,
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
        "41400-41599",
        "dave",
        25270,
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
        &["-p", "25380", "-s", "nobody", &up.sip, "-m", "1"],
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
"#;

const ACK_AND_BYE: &str = r#"
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
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
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:alice@voxplane.local>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#
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
      CSeq: 1 CANCEL
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
      CSeq: 1 ACK
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
      CSeq: 1 ACK
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
