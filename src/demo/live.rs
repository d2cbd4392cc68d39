//! The live part of `voxplane demo`: the SIP core and UDP relay of
//! `voxplane up` (through [`crate::up_cmd::start`]), NQS fed by the relay's
//! mirror ring, and an MIS recorder fed by the relay's MIS sink, all in this
//! process on loopback; two scripted user agents register and call through
//! the B2BUA with G.711 RTP.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use control::b2bua::CallRecord;
use dataplane::mis_sink::MisConfig;
use dataplane::relay::Control as _;
use dataplane::udp::MirrorConfig;
use nqs::api::Metrics;
use nqs::live::LiveConfig;
use nqs::service::Pipeline;
use nqs::sink::sqlite::SqliteSink;
use nqs::source::MirrorSource;
use rand::{Rng, SeedableRng};

use super::ua::{Req, Ua, sdp, sdp_media};
use crate::up_cmd::{DEMO_DOMAIN, Extras, UpArgs, start};

/// The SIP domain the demo users live in.
pub const DOMAIN: &str = DEMO_DOMAIN;

/// Calls placed; the first is recorded.
const CALLS: usize = 2;
/// RTP sent per leg and call.
const MEDIA: Duration = Duration::from_millis(600);
/// Packet loss on alice's leg (towards the relay), percent.
const LOSS_PCT: f64 = 5.0;

/// What one call produced.
struct CallOutcome {
    call_id: String,
    /// alice's and bob's RTP addresses.
    rtp: [SocketAddr; 2],
    log: Vec<String>,
    codec: String,
    sent: [u64; 2],
    received: [u64; 2],
    record: Option<CallRecord>,
}

/// Runs the live part, writing under `out/live`, and prints its report.
pub fn run(out: &Path, seed: u64, w: &mut dyn Write) -> anyhow::Result<()> {
    let root = out.join("live");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    let (sip_dir, nqs_dir, mis_dir) = (root.join("sip"), root.join("nqs"), root.join("mis"));
    for d in [&sip_dir, &nqs_dir, &mis_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }

    let mis = Mis::start(mis_dir.clone())?;
    let passwords = [format!("alice-{seed}"), format!("bob-{seed}")];
    let (cdr_tx, cdr_rx) = mpsc::channel::<CallRecord>();
    let mut running = start(
        &UpArgs::embedded(sip_dir.clone(), media_ports()?),
        Extras {
            mirror: MirrorConfig {
                ring_bytes: Some(4 << 20),
                mis: Some(MisConfig {
                    control: mis.bound.control,
                    media: mis.bound.media,
                }),
                ..MirrorConfig::default()
            },
            demo_passwords: Some(passwords.clone()),
            on_call: Some(Box::new(move |r| {
                let _ = cdr_tx.send(r);
            })),
            no_metrics: true,
        },
    )?;
    let proxy = running.driver.udp_addr;
    let nqs = Nqs::start(
        MirrorSource::new(running.backend.take_mirror_consumers()),
        nqs_dir.join("nqs.sqlite"),
    )?;
    let mut control = running.backend.control();
    writeln!(
        w,
        "\nLive: SIP core (B2BUA) on udp:{proxy}, UDP relay, NQS on the relay's mirror ring, MIS recorder \
         (media udp:{}), all in this process",
        mis.bound.media
    )?;

    let mut alice = Ua::new("alice", &passwords[0], proxy)?;
    let mut bob = Ua::new("bob", &passwords[1], proxy)?;
    for ua in [&mut alice, &mut bob] {
        let status = ua.register()?;
        writeln!(w, "  {}@{DOMAIN} REGISTER (digest) → {status}", ua.user)?;
        if status != 200 {
            bail!("{} could not register: {status}", ua.user);
        }
    }
    alice.log.clear();
    bob.log.clear();

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut calls = Vec::new();
    for n in 0..CALLS {
        let call = place_call(&mut alice, &mut bob, n, &mut rng, &mut control, &cdr_rx)?;
        calls.push(call);
    }

    // The recording is written when MIS gets the session's Stop (the relay
    // deletes the session at the BYE).
    let recorded = &calls[0].call_id;
    let recording = mis.wait_for(recorded, Duration::from_secs(10));
    // Stop the SIP core and relay first, then let NQS finish its calls.
    running.stop();
    let (streams, mirrored) = nqs.finish()?;
    mis.stop();
    writeln!(
        w,
        "  stopped: SIP core, relay, NQS ({mirrored} packets from the mirror ring), MIS",
    )?;

    for c in &calls {
        writeln!(
            w,
            "\nCall {} (alice → bob{}):",
            c.call_id,
            if c.call_id == *recorded {
                ", recorded"
            } else {
                ""
            }
        )?;
        for line in &c.log {
            writeln!(w, "    {line}")?;
        }
        writeln!(
            w,
            "    RTP sent alice {} (with {LOSS_PCT}% seeded loss before the relay) / bob {}; received alice {} / bob {}",
            c.sent[0], c.sent[1], c.received[0], c.received[1]
        )?;
        match &c.record {
            Some(r) => {
                let cdr = r.to_cdr();
                write!(
                    w,
                    "  CDR: {} s, status {}, cause {}, codec {}",
                    fmt_secs(control::cdr::duration_ms(&cdr)),
                    r.status,
                    r.cause.as_str(),
                    c.codec
                )?;
                for leg in &cdr.legs {
                    write!(
                        w,
                        "; {} leg {} pkts {} drops {} lost",
                        leg.role, leg.packets, leg.drops, leg.lost
                    )?;
                }
                writeln!(w)?;
            }
            None => writeln!(w, "  CDR: none arrived within 5 s")?,
        }
        let mine: Vec<_> = streams.iter().filter(|s| s.call_id == c.call_id).collect();
        if mine.is_empty() {
            writeln!(
                w,
                "  NQS: not analysed (the relay mirrors recorded sessions only)"
            )?;
        }
        for s in mine {
            writeln!(
                w,
                "  NQS {} {} → {}: {} pkts, lost {} ({:.1} %), jitter {:.2} ms, MOS {:.2}",
                match s.src.parse::<SocketAddr>() {
                    Ok(a) if a == c.rtp[0] => "alice → relay",
                    Ok(a) if a == c.rtp[1] => "bob → relay",
                    _ => "relay stream",
                },
                s.src,
                s.dst,
                s.packets,
                s.lost,
                s.lost_pct,
                s.jitter_ms,
                s.mos
            )?;
        }
    }
    writeln!(w)?;
    match recording {
        Some(e) => {
            let dir = mis_dir.join("recordings");
            for (kind, file) in [("stereo", &e.stereo), ("mono", &e.mono)] {
                match file {
                    Some(f) => {
                        let p = dir.join(f);
                        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                        writeln!(
                            w,
                            "MIS {kind} WAV ({len} bytes, {} ms): {}",
                            e.duration_ms,
                            p.display()
                        )?;
                    }
                    None => writeln!(w, "MIS wrote no {kind} WAV")?,
                }
            }
        }
        None => writeln!(w, "MIS: no recording of {recorded} indexed within 10 s")?,
    }
    writeln!(
        w,
        "Live data: SIP store and CDRs {} (voxplane cdr export --data-dir {}), NQS {}, MIS {}",
        sip_dir.display(),
        sip_dir.display(),
        nqs_dir.join("nqs.sqlite").display(),
        mis_dir.display()
    )?;
    Ok(())
}

/// One call: INVITE (answering the digest challenge), answer, ACK, RTP
/// both ways, BYE; the first call is recorded.
fn place_call(
    alice: &mut Ua,
    bob: &mut Ua,
    n: usize,
    rng: &mut rand::rngs::StdRng,
    control: &mut dataplane::udp::UdpControl,
    cdrs: &mpsc::Receiver<CallRecord>,
) -> anyhow::Result<CallOutcome> {
    let call_id = format!("demo-call-{}-{:08x}", n + 1, rng.r#gen::<u32>());
    let from_tag = format!("a{n}");
    let bob_uri = format!("sip:bob@{DOMAIN}");
    let rtp = [bind_rtp()?, bind_rtp()?];
    let offer = sdp("alice", rtp[0].local_addr()?);
    let req = Req {
        method: "INVITE",
        uri: &bob_uri,
        to: &bob_uri,
        to_tag: None,
        call_id: &call_id,
        from_tag: &from_tag,
        cseq: 1,
        extra: &[],
        sdp: Some(&offer),
    };
    let text = alice.request(&req);
    // bob answers on his own thread while alice waits for her final response.
    let bob_answer = sdp("bob", rtp[1].local_addr()?);
    let (r, bob_side) = thread::scope(|s| {
        let callee = s.spawn(|| answer(bob, &bob_answer));
        let r = (|| {
            let r = alice.transact(&text)?;
            if matches!(r.msg().status(), Some(401 | 407)) {
                ack_failure(alice, &req, &r)?;
                let auth = alice.authorize(&r.msg(), "INVITE", &bob_uri)?;
                let extra = [auth.as_str()];
                let text = alice.request(&Req {
                    cseq: 2,
                    extra: &extra,
                    ..req
                });
                return anyhow::Ok((alice.transact(&text)?, 2));
            }
            anyhow::Ok((r, 1))
        })();
        (r, callee.join())
    });
    let (r, cseq) = r?;
    let bob_relay = bob_side.map_err(|_| anyhow::anyhow!("callee thread panicked"))??;
    let m = r.msg();
    if m.status() != Some(200) {
        bail!(
            "call {call_id} not answered: {}",
            super::ua::first_line(&r.bytes)
        );
    }
    let (alice_relay, codec) = sdp_media(m.body()).context("200 OK without usable SDP")?;
    let to_tag = m
        .to()
        .and_then(|t| t.tag().map(str::to_owned))
        .context("200 OK without a To tag")?;
    let contact = m
        .contact()
        .map(|c| c.uri.as_str().to_owned())
        .unwrap_or_else(|| bob_uri.clone());
    let in_dialog = |method: &'static str, cseq: u32| Req {
        method,
        uri: &contact,
        to: &bob_uri,
        to_tag: Some(&to_tag),
        call_id: &call_id,
        from_tag: &from_tag,
        cseq,
        extra: &[],
        sdp: None,
    };
    let ack = alice.request(&in_dialog("ACK", cseq));
    alice.send(&ack)?;
    if n == 0 {
        control
            .set_recording(&call_id, true)
            .map_err(|e| anyhow::anyhow!("recording {call_id}: {e}"))?;
        alice
            .log
            .push("(recording switched on in the relay)".into());
    }

    // Media: alice → relay (seeded loss) and bob → relay, 20 ms G.711.
    let loss_seed = rng.r#gen::<u64>();
    let (sent, received) = thread::scope(|s| {
        let a = s.spawn(|| media(&rtp[0], alice_relay, 440.0, LOSS_PCT, loss_seed));
        let b = s.spawn(|| media(&rtp[1], bob_relay, 660.0, 0.0, 0));
        let a = a.join().unwrap_or_default();
        let b = b.join().unwrap_or_default();
        ([a.0, b.0], [a.1, b.1])
    });

    let bye = alice.request(&in_dialog("BYE", cseq + 1));
    let (bye_r, bob_bye) = thread::scope(|s| {
        let callee = s.spawn(|| -> anyhow::Result<()> {
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                if let Some(req) = bob.recv(Duration::from_millis(200))? {
                    let method = req.msg().method().map(|m| m.as_str().to_owned());
                    if method.as_deref() == Some("BYE") {
                        return bob.respond(&req, 200, "OK", None, None);
                    }
                }
            }
            bail!("bob got no BYE")
        });
        (alice.transact(&bye), callee.join())
    });
    bob_bye.map_err(|_| anyhow::anyhow!("callee thread panicked"))??;
    let bye_status = bye_r?.msg().status();
    if bye_status != Some(200) {
        bail!("BYE of {call_id} answered {bye_status:?}");
    }
    let record = loop {
        match cdrs.recv_timeout(Duration::from_secs(5)) {
            Ok(r) if r.call_id == call_id => break Some(r),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    let mut log = std::mem::take(&mut alice.log);
    log.append(&mut bob.log);
    Ok(CallOutcome {
        call_id,
        rtp: [rtp[0].local_addr()?, rtp[1].local_addr()?],
        log,
        codec,
        sent,
        received,
        record,
    })
}

/// ACKs a non-2xx final response (same branch as the INVITE).
fn ack_failure(ua: &mut Ua, req: &Req<'_>, r: &super::ua::Received) -> anyhow::Result<()> {
    let m = r.msg();
    let via = m.header("Via").unwrap_or_default();
    let to = m.header("To").unwrap_or_default();
    let ack = format!(
        "ACK {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\n\
         CSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
        req.uri,
        m.header("From").unwrap_or_default(),
        req.call_id,
        req.cseq
    );
    ua.send(&ack)
}

/// bob's side of the setup: answers the INVITE (180, then 200 with
/// `answer`) and waits for the ACK; returns the relay address the INVITE's
/// SDP offers him.
fn answer(bob: &mut Ua, answer: &str) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut relay = None;
    while Instant::now() < deadline {
        let Some(req) = bob.recv(Duration::from_millis(200))? else {
            continue;
        };
        let m = req.msg();
        match m.method().map(|m| m.as_str().to_owned()).as_deref() {
            Some("INVITE") => {
                relay = Some(sdp_media(m.body()).context("INVITE without usable SDP")?.0);
                bob.respond(&req, 180, "Ringing", Some("b1"), None)?;
                bob.respond(&req, 200, "OK", Some("b1"), Some(answer))?;
            }
            Some("ACK") => {
                if let Some(r) = relay {
                    return Ok(r);
                }
            }
            _ => {}
        }
    }
    bail!("bob: no INVITE and ACK within 10 s")
}

/// Sends a µ-law tone to `to` every 20 ms for [`MEDIA`], dropping
/// `loss_pct` % of the packets (seeded), while counting what arrives;
/// returns (sent, received).
fn media(socket: &UdpSocket, to: SocketAddr, hz: f64, loss_pct: f64, seed: u64) -> (u64, u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ssrc: u32 = rng.r#gen();
    let _ = socket.set_nonblocking(true);
    let start = Instant::now();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    let packets = (MEDIA.as_millis() / 20) as u16;
    let mut samples = [0i16; 160];
    for seq in 0..packets {
        let due = start + Duration::from_millis(u64::from(seq) * 20);
        while Instant::now() < due {
            while socket.recv_from(&mut buf).is_ok() {
                received += 1;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let ts = u32::from(seq) * 160;
        for (i, s) in samples.iter_mut().enumerate() {
            let t = f64::from(ts + i as u32) / 8000.0;
            *s = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16;
        }
        let mut pkt = vec![0x80, if seq == 0 { 0x80 } else { 0 }];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&ts.to_be_bytes());
        pkt.extend_from_slice(&ssrc.to_be_bytes());
        let mut payload = [0u8; 160];
        wire::g711::encode_ulaw(&samples, &mut payload);
        pkt.extend_from_slice(&payload);
        if rng.gen_bool(loss_pct / 100.0) {
            continue;
        }
        if socket.send_to(&pkt, to).is_ok() {
            sent += 1;
        }
    }
    // The last packets of the far end.
    let end = Instant::now() + Duration::from_millis(100);
    while Instant::now() < end {
        while socket.recv_from(&mut buf).is_ok() {
            received += 1;
        }
        thread::sleep(Duration::from_millis(5));
    }
    (sent, received)
}

fn bind_rtp() -> anyhow::Result<UdpSocket> {
    UdpSocket::bind("127.0.0.1:0").context("binding an RTP socket")
}

/// A media port range for this process. The relay allocates from a
/// range, not from the kernel's ephemeral ports, and a port it cannot bind
/// loses that leg's media: so take a block of 64 ports below the
/// ephemeral range (32768 up on Linux) that are all free now, starting at
/// a block chosen by the process id so that parallel demos (tests) differ.
fn media_ports() -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    const BLOCK: u16 = 64;
    const FIRST: u16 = 20_000;
    const BLOCKS: u16 = (32_768 - FIRST) / BLOCK;
    let start = (std::process::id() % u32::from(BLOCKS)) as u16;
    for i in 0..BLOCKS {
        let base = FIRST + (start + i) % BLOCKS * BLOCK;
        let range = base..=base + BLOCK - 1;
        if range
            .clone()
            .all(|p| UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok())
        {
            return Ok(range);
        }
    }
    bail!("no block of {BLOCK} free UDP ports on 127.0.0.1 between {FIRST} and 32767")
}

fn fmt_secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The in-process recorder on a runtime of its own.
struct Mis {
    bound: mis::server::Bound,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Mis {
    fn start(dir: PathBuf) -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = mis::server::Config {
            data_dir: dir.clone(),
            control: any,
            media: any,
            http: any,
            fsync_interval: Duration::from_millis(20),
            idle_timeout: Duration::from_secs(60),
            s3: None,
            retry: mis::offload::RetryConfig::default(),
            retention: mis::retention::Policy::default(),
            retention_interval: Duration::from_secs(3600),
            auth: None,
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let thread = thread::Builder::new().name("mis".into()).spawn(move || {
            let result = runtime.block_on(async move {
                tokio::select! {
                    r = mis::server::run(config, |b| { let _ = ready_tx.send(b); }) => r,
                    _ = stop_rx => Ok(()),
                }
            });
            if let Err(e) = result {
                tracing::error!(error = %e, "demo recorder stopped");
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        let bound = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the MIS recorder did not start")?;
        Ok(Self {
            bound,
            dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The index entry of `call_id` once the recording is written.
    fn wait_for(&self, call_id: &str, timeout: Duration) -> Option<mis::index::Entry> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(bytes) = std::fs::read(self.dir.join("index.jsonl")) {
                let (index, _) = mis::index::Index::load(&bytes);
                if let Some(e) = index.entries().find(|e| e.call_id == call_id) {
                    return Some(e.clone());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// NQS on the mirror ring: a thread draining the rings into a pipeline,
/// writing rows to SQLite.
struct Nqs {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<anyhow::Result<(Vec<nqs::sink::StreamRow>, u64)>>,
}

impl Nqs {
    fn start(mut source: MirrorSource, db: PathBuf) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new().name("nqs".into()).spawn(move || {
            let sink =
                SqliteSink::open(&db).with_context(|| format!("opening {}", db.display()))?;
            let mut pipeline =
                Pipeline::new(LiveConfig::default(), None, Arc::new(Metrics::default()));
            let mut call_ids = std::collections::BTreeSet::new();
            loop {
                let stopping = flag.load(Ordering::Relaxed);
                while source.drain(&mut pipeline, 4096) > 0 {}
                pipeline.handle_timeout(wall_now());
                let batch = pipeline.take_batch();
                call_ids.extend(batch.calls.iter().map(|c| c.call_id.clone()));
                sink.write_now(&batch).context("writing NQS rows")?;
                if stopping {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            pipeline.finish_all(wall_now());
            let batch = pipeline.take_batch();
            call_ids.extend(batch.calls.iter().map(|c| c.call_id.clone()));
            sink.write_now(&batch).context("writing NQS rows")?;
            let mut streams = Vec::new();
            for id in call_ids {
                streams.extend(sink.streams(&id).context("reading NQS streams")?);
            }
            Ok((streams, source.packets()))
        })?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread; the streams it stored and the mirrored packets.
    fn finish(self) -> anyhow::Result<(Vec<nqs::sink::StreamRow>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("NQS thread panicked"))?
    }
}

fn wall_now() -> wire::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    wire::Timestamp(d.as_nanos() as u64)
}
