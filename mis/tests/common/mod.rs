//! Helpers of the end-to-end tests: the recorder as a real child process
//! (the test binary re-executed in server mode), a metadata sender, a media
//! sender and an HTTP client.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mis::proto::{
    Codec, Control, Direction, Leg, LegId, MediaRepr, Policy, ProtoVersion, Role, SessionId,
    SessionStart,
};
use wire::rtp::{RtpPacket, RtpRepr};
use wire::{PayloadType, Ssrc, Timestamp};

const CHILD_ENV: &str = "MIS_TEST_CHILD_DATA_DIR";
const S3_ENV: &str = "MIS_TEST_CHILD_S3_ENDPOINT";
/// The token signing secret of the child's API (no tokens when unset).
pub const SECRET_ENV: &str = "MIS_TEST_CHILD_SECRET";
/// The child's retention size limit, octets (none when unset).
pub const RETAIN_BYTES_ENV: &str = "MIS_TEST_CHILD_RETAIN_BYTES";

/// The body of the child process: each test binary has a `child_server`
/// test that calls this. Returns at once unless the parent set
/// `MIS_TEST_CHILD_DATA_DIR`.
pub fn child_main() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = mis::server::Config {
        data_dir: dir.into(),
        control: any,
        media: any,
        http: any,
        fsync_interval: Duration::from_millis(10),
        idle_timeout: Duration::from_secs(30),
        s3: std::env::var(S3_ENV)
            .ok()
            .map(|endpoint| mis::server::S3Config {
                endpoint,
                bucket: "recordings".into(),
                prefix: "rec/".into(),
            }),
        retry: mis::offload::RetryConfig {
            initial_backoff_ns: 200_000_000,
            max_backoff_ns: 1_000_000_000,
        },
        retention: mis::retention::Policy {
            max_age_ns: None,
            max_bytes: std::env::var(RETAIN_BYTES_ENV)
                .ok()
                .map(|b| b.parse().unwrap()),
        },
        retention_interval: Duration::from_millis(100),
        auth: std::env::var(SECRET_ENV)
            .ok()
            .map(|s| nqs::api::auth::Keyring::new(s.as_bytes())),
    };
    mis::server::run_blocking(config, |b| {
        println!("READY {} {} {}", b.control, b.media, b.http);
    })
    .unwrap();
}

pub struct Server {
    child: Child,
    pub control: SocketAddr,
    pub media: SocketAddr,
    pub http: SocketAddr,
}

impl Server {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    #[expect(clippy::zombie_processes, reason = "reaped in kill9 or Drop")]
    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "child never became ready");
            let line = lines.next().expect("child exited").unwrap();
            // The harness may have printed `test child_server ... ` first.
            if let Some((_, rest)) = line.split_once("READY ") {
                let a: Vec<SocketAddr> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                // Keep draining the pipe so the child never blocks on it.
                std::thread::spawn(move || for _ in lines {});
                return Self {
                    child,
                    control: a[0],
                    media: a[1],
                    http: a[2],
                };
            }
        }
    }

    pub fn kill9(mut self) {
        // Child::kill sends SIGKILL on Unix.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn send(stream: &mut TcpStream, msg: &Control) {
    let mut out = Vec::new();
    msg.emit(&mut out).unwrap();
    stream.write_all(&out).unwrap();
}

pub fn read_frame(stream: &mut TcpStream) -> Control {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    let mut all = len.to_vec();
    all.extend(body);
    let (f, _) = mis::proto::FrameView::split(&all).unwrap().unwrap();
    Control::parse(&f).unwrap().unwrap()
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(
        &mut s,
        &Control::Hello {
            min: ProtoVersion(1),
            max: ProtoVersion(3),
            agent: "test-core/0".into(),
        },
    );
    assert_eq!(
        read_frame(&mut s),
        Control::HelloAck {
            version: ProtoVersion(1)
        }
    );
    s
}

pub fn session_start(id: u64) -> Control {
    let codecs = vec![Codec {
        pt: PayloadType::PCMU,
        name: "PCMU".into(),
        clock_rate: 8000,
    }];
    Control::Start(SessionStart {
        session: SessionId(id),
        call_id: format!("call-{id}@example.com"),
        domain: "example.com".into(),
        from: "15551230001".into(),
        to: "15551239999".into(),
        start_time: Timestamp(1_700_000_000_000_000_000 + id),
        policy: Policy::BOTH,
        legs: vec![
            Leg {
                role: Role::Caller,
                codecs: codecs.clone(),
            },
            Leg {
                role: Role::Callee,
                codecs,
            },
        ],
    })
}

/// µ-law payload of packet `i` of leg `leg`: a distinct byte per packet.
pub fn payload(leg: u8, i: u16) -> [u8; 160] {
    [(i as u8).wrapping_mul(3) ^ (leg * 0x40) ^ 0x11; 160]
}

/// RTP packet `i` of leg `leg`: PCMU, 20 ms, one SSRC per leg.
pub fn rtp(leg: u8, i: u16) -> Vec<u8> {
    let p = payload(leg, i);
    let repr = RtpRepr {
        payload_type: PayloadType::PCMU,
        sequence_number: 1000 + i,
        timestamp: 160 * u32::from(i),
        ssrc: Ssrc(0xABC0 + u32::from(leg)),
        payload_len: p.len(),
        ..RtpRepr::default()
    };
    let mut rtp = vec![0u8; repr.header_len() + p.len()];
    let mut pkt = RtpPacket::new_unchecked(&mut rtp[..]);
    repr.emit(&mut pkt).unwrap();
    pkt.payload_mut().copy_from_slice(&p);
    rtp
}

pub fn datagram(id: u64, leg: u8, i: u16) -> Vec<u8> {
    let rtp = rtp(leg, i);
    let mut out = Vec::new();
    MediaRepr {
        session: SessionId(id),
        leg: LegId(leg),
        direction: Direction::FromParty,
        // Both legs start together: identical capture times per index.
        capture_time: Timestamp(1_700_000_000_000_000_000 + u64::from(i) * 20_000_000),
    }
    .emit(&rtp, &mut out);
    out
}

/// Sends packets `range` of both legs, paced so loopback never drops.
pub fn send_media(udp: &UdpSocket, to: SocketAddr, id: u64, range: std::ops::Range<u16>) {
    for i in range {
        for leg in 0..2 {
            udp.send_to(&datagram(id, leg, i), to).unwrap();
        }
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub fn expected_leg(leg: u8, n: u16) -> Vec<i16> {
    let mut out = vec![0i16; usize::from(n) * 160];
    for i in 0..n {
        wire::g711::decode_ulaw(&payload(leg, i), &mut out[usize::from(i) * 160..][..160]);
    }
    out
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    http_request(addr, "GET", path, None, "")
}

/// One HTTP/1.1 request, with an optional bearer token and JSON body:
/// (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{ct}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..head_end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = resp[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// Polls the search API until `id`'s recording is indexed.
pub fn wait_recording(http: SocketAddr, query: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(http, &format!("/api/recordings?{query}"));
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if let Some(first) = v["recordings"].as_array().and_then(|a| a.first()) {
            return first.clone();
        }
        assert!(Instant::now() < deadline, "recording never indexed: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wav(bytes: &[u8]) -> (u16, Vec<i16>) {
    let mut r = hound::WavReader::new(bytes).unwrap();
    (
        r.spec().channels,
        r.samples::<i16>().map(Result::unwrap).collect(),
    )
}

pub fn check_stereo(http: SocketAddr, id: &str, n: u16) {
    let (status, body) = http_get(http, &format!("/api/recordings/{id}.wav"));
    assert_eq!(status, 200);
    let (ch, s) = wav(&body);
    assert_eq!(ch, 2);
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
    assert!(left == expected_leg(0, n), "left channel differs");
    assert!(right == expected_leg(1, n), "right channel differs");
    let (status, body) = http_get(http, &format!("/api/recordings/{id}.mono.wav"));
    assert_eq!(status, 200);
    let (ch, m) = wav(&body);
    assert_eq!(ch, 1);
    let want: Vec<i16> = left
        .iter()
        .zip(&right)
        .map(|(a, b)| a.saturating_add(*b))
        .collect();
    assert!(m == want, "mono mix differs");
}
