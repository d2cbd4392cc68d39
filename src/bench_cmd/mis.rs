//! `voxplane bench mis` (issue #7): the recorder end to end, through its
//! sockets and its journal.
//!
//! A `voxplane mis` child process (this binary) records into a temporary
//! data directory. Two measurements:
//!
//! 1. **Capacity** — a ramp of concurrent calls: for each step, N session
//!    Starts over TCP, then N two-leg PCMU calls at the real rate (50
//!    packets/s per leg, sent in 1 ms slices), for `--step-secs`; then
//!    Stops, and the time until all N recordings are indexed. Loss is the
//!    packets sent minus the packets the recorder counted
//!    (`voxplane_mis_media_packets_total`); the recorder's CPU time comes
//!    from `/proc/PID/stat`. `calls_per_core` = N ÷ cores the recorder
//!    used, at the largest step with no loss. The ramp stops at the first
//!    step with loss, or when the recorder uses more than
//!    `--max-core` of a core.
//! 2. **WAV ready after stop** — `--render-calls` calls of
//!    `--render-call-secs` (3 minutes) each, one after the other. Their RTP
//!    is synthesised faster than real time (capture times 20 ms apart, sent
//!    at up to ~250 k packets/s), then a Stop; the latency is Stop sent →
//!    the recording listed by the search API (its WAV files are renamed
//!    into place and fsynced before the index line is written).
//!
//! Peer: Debian's `rtpengine-recording-daemon` reads the packets rtpengine
//! hands it through the kernel module's `/proc/rtpengine/TABLE/calls/…`
//! files; see [`PEER`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mis::proto::{
    Codec, Control, Direction, FrameView, Leg, LegId, MediaRepr, Policy, ProtoVersion, Role,
    SessionId, SessionStart,
};
use wire::rtp::{RtpPacket, RtpRepr};
use wire::{PayloadType, Ssrc, Timestamp};

/// Why the peer is not measured on this machine.
const PEER: &str = "rtpengine-recording-daemon 10.5 (Debian 12) not driven: it reads each packet \
    with one read(2) from /proc/rtpengine/TABLE/calls/CALL/STREAM (path hard-coded in \
    recording-daemon/stream.c), files only the xt_RTPENGINE kernel module provides; this kernel \
    (6.18, Firecracker) has no loadable-module support (no /proc/modules), so the module cannot be \
    loaded, and a FIFO in its place would not keep packet boundaries";

/// Arguments of `voxplane bench mis`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Concurrent calls per ramp step, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250,500,1000,2000,3000,4000,6000,8000"
    )]
    calls: Vec<u32>,
    /// Seconds of real-rate media per ramp step.
    #[arg(long, default_value_t = 5)]
    step_secs: u64,
    /// Stop the ramp once the recorder uses more than this many cores.
    #[arg(long, default_value_t = 0.9)]
    max_core: f64,
    /// Calls whose stop → WAV latency is measured.
    #[arg(long, default_value_t = 20)]
    render_calls: u32,
    /// Length of those calls, seconds of audio.
    #[arg(long, default_value_t = 180)]
    render_call_secs: u32,
}

/// One ramp step's figures.
#[derive(Debug, serde::Serialize)]
struct Step {
    calls: u32,
    packets_sent: u64,
    packets_lost: u64,
    /// Cores the recorder used while media flowed.
    recorder_cores: f64,
    /// Packets per second offered.
    pps: f64,
    /// Stops sent → all of the step's recordings indexed, ms.
    drain_ms: f64,
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("voxplane-bench-mis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("temporary data directory")?;
    let result = measure(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let rec = Recorder::start(dir)?;
    let meta = MetaLink::connect(rec.control)?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    udp.connect(rec.media)?;
    let mut rig = Rig {
        rec,
        meta,
        udp,
        next_session: 1,
        indexed: 0,
    };

    let mut steps: Vec<Step> = Vec::new();
    for &n in &args.calls {
        let step = ramp_step(args, &mut rig, n)?;
        if !args.json {
            eprintln!(
                "mis: {} calls: {:.0} pps, lost {} of {}, recorder {:.2} cores, drain {:.0} ms",
                step.calls,
                step.pps,
                step.packets_lost,
                step.packets_sent,
                step.recorder_cores,
                step.drain_ms
            );
        }
        let stop = step.packets_lost > 0 || step.recorder_cores > args.max_core;
        steps.push(step);
        if stop {
            break;
        }
    }
    let best = steps
        .iter()
        .filter(|s| s.packets_lost == 0)
        .max_by_key(|s| s.calls);
    let calls_per_core = best.map_or(0.0, |s| f64::from(s.calls) / s.recorder_cores.max(1e-9));

    let mut lat = Vec::new();
    let mut render_lost = 0;
    for _ in 0..args.render_calls {
        let (ms, lost) = render_latency(args.render_call_secs, &mut rig)?;
        lat.push(ms);
        render_lost += lost;
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i]
    };
    let (p50, p99) = (pct(0.50), pct(0.99));

    if args.json {
        let doc = serde_json::json!({
            "benchmark": "mis",
            "calls_per_core": calls_per_core.round(),
            "max_calls_no_loss": best.map_or(0, |s| s.calls),
            "render_ms_p50": p50,
            "render_ms_p99": p99,
            "render_calls": lat.len(),
            "render_call_secs": args.render_call_secs,
            "render_packets_lost": render_lost,
            "steps": steps,
            "peer": PEER,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("| calls | pps offered | lost | recorder cores | calls/core | drain after stop |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for s in &steps {
            println!(
                "| {} | {:.0} | {} | {:.2} | {:.0} | {:.0} ms |",
                s.calls,
                s.pps,
                s.packets_lost,
                s.recorder_cores,
                f64::from(s.calls) / s.recorder_cores.max(1e-9),
                s.drain_ms
            );
        }
        println!();
        println!(
            "calls_per_core (largest step without loss): {calls_per_core:.0}\n\
             WAV ready after stop, {}-s calls (RTP synthesised faster than real time), {} calls: \
             p50 {p50:.1} ms, p99 {p99:.1} ms (packets lost: {render_lost})\n\
             peer: {PEER}",
            args.render_call_secs,
            lat.len()
        );
    }
    Ok(())
}

fn codecs() -> Vec<Codec> {
    vec![Codec {
        pt: PayloadType::PCMU,
        name: "PCMU".into(),
        clock_rate: 8000,
    }]
}

fn start_msg(session: u64, now: Timestamp) -> Control {
    Control::Start(SessionStart {
        session: SessionId(session),
        call_id: format!("bench-{session}@mis.example"),
        domain: "mis.example".into(),
        from: format!("1555{session:07}"),
        to: "15550000000".into(),
        start_time: now,
        policy: Policy::BOTH,
        legs: vec![
            Leg {
                role: Role::Caller,
                codecs: codecs(),
            },
            Leg {
                role: Role::Callee,
                codecs: codecs(),
            },
        ],
    })
}

/// Media datagram templates: header + RTP + 160 octets of µ-law; packet
/// `k` patches sequence, timestamp and capture time.
struct Templates {
    bufs: Vec<Vec<u8>>,
}

/// Offsets in a datagram: capture time in the 24-octet header, then the
/// RTP header's sequence number and timestamp.
const CAPTURE_AT: usize = 16;
const SEQ_AT: usize = 24 + 2;
const TS_AT: usize = 24 + 4;

impl Templates {
    fn new(sessions: std::ops::Range<u64>) -> Self {
        let mut bufs = Vec::new();
        for s in sessions {
            for leg in 0..2u8 {
                let repr = RtpRepr {
                    payload_type: PayloadType::PCMU,
                    ssrc: Ssrc((s as u32).wrapping_mul(2) + u32::from(leg)),
                    payload_len: 160,
                    ..RtpRepr::default()
                };
                let mut rtp = vec![0u8; repr.header_len() + 160];
                let mut p = RtpPacket::new_unchecked(&mut rtp[..]);
                // An RTP header always fits its own length.
                let _ = repr.emit(&mut p);
                p.payload_mut().fill(0x55 ^ leg);
                let mut out = Vec::with_capacity(24 + rtp.len());
                MediaRepr {
                    session: SessionId(s),
                    leg: LegId(leg),
                    direction: Direction::FromParty,
                    capture_time: Timestamp(0),
                }
                .emit(&rtp, &mut out);
                bufs.push(out);
            }
        }
        Self { bufs }
    }

    /// Sets packet `k` (capture time `at`) in datagram `i`.
    fn patch(&mut self, i: usize, k: u32, at: u64) -> &[u8] {
        let b = &mut self.bufs[i];
        b[CAPTURE_AT..CAPTURE_AT + 8].copy_from_slice(&at.to_be_bytes());
        b[SEQ_AT..SEQ_AT + 2].copy_from_slice(&(k as u16).to_be_bytes());
        b[TS_AT..TS_AT + 4].copy_from_slice(&k.wrapping_mul(160).to_be_bytes());
        b
    }
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Waits until the recorder has processed everything sent before on the
/// metadata connection: starts a probe session and sends its packets until
/// one is counted (media of a session counts only once its Start went
/// through, and the recorder takes metadata in order), then stops it.
fn sync(rig: &mut Rig) -> anyhow::Result<()> {
    let Rig {
        rec,
        meta,
        udp,
        next_session,
        indexed,
    } = rig;
    let s = *next_session;
    *next_session += 1;
    let mut t = Templates::new(s..s + 1);
    meta.send(&start_msg(s, Timestamp(wall_ns())))?;
    let before = rec.metric("media_packets_total")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut k = 0u32;
    loop {
        udp.send(t.patch(0, k, wall_ns()))?;
        k += 1;
        std::thread::sleep(Duration::from_millis(20));
        if rec.metric("media_packets_total")? > before {
            break;
        }
        if Instant::now() > deadline {
            bail!("the recorder never took the session starts");
        }
    }
    meta.send(&Control::Stop {
        session: SessionId(s),
        time: Timestamp(wall_ns()),
    })?;
    *indexed += 1;
    Ok(())
}

fn wait_indexed(rec: &Recorder, want: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while rec.metric("recordings_indexed")? < want {
        if Instant::now() > deadline {
            bail!("recordings never indexed ({want} expected)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn ramp_step(args: &Args, rig: &mut Rig, n: u32) -> anyhow::Result<Step> {
    let (first, mut t, _) = rig.start_calls(n)?;
    let end = first + u64::from(n);
    let base = rig.rec.metric("media_packets_total")?;
    let cpu0 = rig.rec.cpu_secs()?;
    let t0 = Instant::now();
    let ticks = (args.step_secs * 50) as u32;
    let per_tick = t.bufs.len();
    let slices = 20usize;
    let mut sent = 0u64;
    for k in 0..ticks {
        let at = wall_ns();
        for slice in 0..slices {
            let due = t0 + Duration::from_micros(u64::from(k) * 20_000 + slice as u64 * 1_000);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            let lo = per_tick * slice / slices;
            let hi = per_tick * (slice + 1) / slices;
            for i in lo..hi {
                if rig.udp.send(t.patch(i, k, at)).is_ok() {
                    sent += 1;
                }
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    // Let the recorder drain its socket before counting.
    std::thread::sleep(Duration::from_millis(300));
    let cpu = rig.rec.cpu_secs()? - cpu0;
    let got = rig.rec.metric("media_packets_total")? - base;
    let stop_at = Instant::now();
    let now = wall_ns();
    for s in first..end {
        rig.meta.send(&Control::Stop {
            session: SessionId(s),
            time: Timestamp(now),
        })?;
    }
    rig.indexed += u64::from(n);
    wait_indexed(&rig.rec, rig.indexed)?;
    Ok(Step {
        calls: n,
        packets_sent: sent,
        packets_lost: sent.saturating_sub(got),
        recorder_cores: cpu / wall,
        pps: sent as f64 / wall,
        drain_ms: stop_at.elapsed().as_secs_f64() * 1e3,
    })
}

/// One long call sent faster than real time, then Stop → indexed, in ms;
/// and the packets lost.
fn render_latency(secs: u32, rig: &mut Rig) -> anyhow::Result<(f64, u64)> {
    let (s, mut t, start) = rig.start_calls(1)?;
    let base = rig.rec.metric("media_packets_total")?;
    let mut sent = 0u64;
    for k in 0..secs * 50 {
        let at = start + u64::from(k) * 20_000_000;
        for i in 0..2 {
            rig.udp.send(t.patch(i, k, at))?;
            sent += 1;
        }
        // ~250 k packets/s at most: the recorder's socket buffer keeps up.
        if k % 250 == 249 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // All media counted before the Stop goes out (so the latency is the
    // render's, not the tail of the ingest).
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.rec.metric("media_packets_total")? - base < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lost = sent.saturating_sub(rig.rec.metric("media_packets_total")? - base);
    let t0 = Instant::now();
    rig.meta.send(&Control::Stop {
        session: SessionId(s),
        time: Timestamp(start + u64::from(secs) * 1_000_000_000),
    })?;
    rig.indexed += 1;
    let call_id = format!("bench-{s}@mis.example");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = rig.rec.get(&format!("/api/recordings?call_id={call_id}"))?;
        if body.contains("\"id\"") {
            break;
        }
        if Instant::now() > deadline {
            bail!("call {call_id} never indexed");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok((t0.elapsed().as_secs_f64() * 1e3, lost))
}

/// The recorder and the bench's two connections to it.
struct Rig {
    rec: Recorder,
    meta: MetaLink,
    udp: UdpSocket,
    next_session: u64,
    /// Recordings the recorder should have indexed by now.
    indexed: u64,
}

impl Rig {
    /// Starts `n` sessions and waits until the recorder has them: (first
    /// session id, their datagram templates, start time in ns).
    fn start_calls(&mut self, n: u32) -> anyhow::Result<(u64, Templates, u64)> {
        let first = self.next_session;
        let end = first + u64::from(n);
        self.next_session = end;
        let start = wall_ns();
        for s in first..end {
            self.meta.send(&start_msg(s, Timestamp(start)))?;
        }
        sync(self)?;
        Ok((first, Templates::new(first..end), start))
    }
}

/// The recorder as a child process.
struct Recorder {
    child: Child,
    /// An admin token for the API.
    token: String,
    control: SocketAddr,
    media: SocketAddr,
    http: SocketAddr,
}

impl Recorder {
    fn start(dir: &std::path::Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["mis", "--listen", "127.0.0.1", "--control-port", "0"])
            .args(["--media-port", "0", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `voxplane mis`")?;
        let out = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let addr = |key: &str| -> anyhow::Result<SocketAddr> {
            let v = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .with_context(|| format!("no {key} in {line:?}"))?;
            Ok(v.parse()?)
        };
        let token = crate::nqs_cmd::keyring(dir)?.issue(&nqs::api::auth::Scope::Admin);
        Ok(Self {
            token,
            control: addr("control=")?,
            media: addr("media=")?,
            http: addr("http=")?,
            child,
        })
    }

    /// User + system CPU seconds of the recorder so far.
    fn cpu_secs(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces).
        let rest = stat.rsplit_once(')').context("stat format")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 (1-based, whole line).
        let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()?
            + f.get(12).context("stime")?.parse::<u64>()?;
        // USER_HZ is 100 on Linux.
        Ok(ticks as f64 / 100.0)
    }

    fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(self.http)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Connection: close\r\n\r\n",
            self.token
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (_, body) = resp.split_once("\r\n\r\n").context("HTTP response")?;
        Ok(body.to_owned())
    }

    fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let body = self.get("/metrics")?;
        let key = format!("voxplane_mis_{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .with_context(|| format!("metric {name}"))?
            .trim()
            .parse()
            .context("metric value")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metadata connection, after the version handshake.
struct MetaLink {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl MetaLink {
    fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut link = Self {
            stream: stream.try_clone()?,
            buf: Vec::new(),
        };
        link.send(&Control::Hello {
            min: ProtoVersion(1),
            max: ProtoVersion(1),
            agent: "voxplane-bench".into(),
        })?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the recorder closed the metadata connection");
            }
            got.extend_from_slice(&chunk[..n]);
            if let Some((f, _)) = FrameView::split(&got)? {
                match Control::parse(&f)? {
                    Some(Control::HelloAck { .. }) => return Ok(link),
                    other => bail!("handshake refused: {other:?}"),
                }
            }
        }
    }

    fn send(&mut self, msg: &Control) -> anyhow::Result<()> {
        self.buf.clear();
        msg.emit(&mut self.buf)?;
        self.stream.write_all(&self.buf)?;
        Ok(())
    }
}
