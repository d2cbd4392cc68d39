//! `voxplane bench relay` (issue #3): the relay's capacity in calls per
//! core and the latency it adds, beside rtpengine and the in-kernel
//! ceiling, measured in one run between network namespaces.
//!
//! ```text
//!  caller ns (CPU 0)          relay ns (relay on CPU 1)          callee ns (CPU 0)
//!  AF_XDP generator ── c0 ═ r0 ── relay under test ── r1 ═ e0 ── AF_XDP generator
//! ```
//!
//! Each call is set up with ng `offer`/`answer` (the same requests for
//! Voxplane and rtpengine), then both generators send one G.711 stream per
//! call (50 packets/s, real RTP sequence numbers and timestamps, send time
//! in the payload) to the ports the relay allocated, and each measures what
//! comes back: loss and one-way latency on a shared clock. The number of
//! calls doubles until loss reaches 0.01 %, then is bisected. The ceiling
//! is `xdp-progs/media_reflect.c`: each datagram rewritten and reflected in
//! the kernel, no sessions.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bench::relaygen::Leg;
use bench::relaygen::afxdp::{RunConfig, RunReport, run_with_ports};
use dataplane::afxdp::{
    AfXdpBackend, AfXdpConfig, MediaConfig, MediaReflect, Neighbours, interface_mac,
};
use dataplane::mirror::MirrorConsumer;
use dataplane::relay::{Answer, Offer, Relay, RelayConfig, RxMeta, SessionFlags};
use dataplane::testnet::{Host, TestNet, TestNetError};
use dataplane::udp::{MirrorConfig, UdpBackend, UdpConfig, UdpControl, serve_ng};
use dataplane::uring::UringBackend;
use hdrhistogram::Histogram;
use serde_json::{Value as Json, json};
use wire::bencode::Value;

/// Arguments of `voxplane bench relay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The backend measured beside rtpengine and the ceiling.
    #[arg(long, value_enum, default_value_t = BackendKind::Afxdp)]
    backend: BackendKind,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds of traffic per trial.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Calls in the first trial (then doubled until loss, then bisected).
    #[arg(long, default_value_t = 500)]
    start_calls: u32,
    /// Most calls tried for a relay (its port range holds 10,383).
    #[arg(long, default_value_t = 10_000)]
    max_calls: u32,
    /// Do not measure rtpengine.
    #[arg(long)]
    no_rtpengine: bool,
    /// Do not measure the backend (only the peers).
    #[arg(long)]
    no_backend: bool,
    /// Do not measure the in-kernel ceiling.
    #[arg(long)]
    no_ceiling: bool,
    /// Do not measure the cost of mirroring.
    #[arg(long)]
    no_mirror: bool,
}

/// A relay backend.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    /// recvmmsg/sendmmsg.
    Udp,
    /// io_uring.
    Uring,
    /// AF_XDP.
    Afxdp,
}

/// Largest loss a trial may have and still count as carried, %.
const MAX_LOSS_PCT: f64 = 0.01;
/// Largest p99.9 one-way latency a trial may have and still count as
/// carried, µs: beyond a jitter buffer's depth a late packet is a lost one,
/// and a relay whose queues grow for the whole trial is not keeping up.
const MAX_P999_US: u64 = 50_000;
/// The relay's media ports (4 per call: 10,383 calls).
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 24000..=65535;
/// First RTP port of each generator (stream i uses +2i).
const GEN_PORT: u16 = 20000;
/// First port the ceiling reflects (stream i is sent to +2i).
const CEILING_PORT: u16 = 24000;
/// Most calls the ceiling can be offered (ports up to 65535).
const CEILING_MAX_CALLS: u32 = 20_000;
/// The relay runs here; generators, ng and mirror sink on CPU 0.
const RELAY_CPU: usize = 1;
/// Relays, generators and sinks run at this nice value (rtpengine too), so
/// that on a shared machine they get most of their core, as on a dedicated
/// media core, without starving everything else (no real-time policy).
const NICE: &str = "-19";
const GEN_CPU: usize = 0;

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let net = match TestNet::create() {
        Ok(net) => net,
        Err(e @ (TestNetError::Unprivileged | TestNetError::NoIproute)) => {
            return skip(args, &format!("cannot build the test network: {e}"));
        }
        Err(e) => return Err(e).context("building the test network"),
    };
    let env = match Env::new(&net) {
        Ok(env) => env,
        Err(e) => return skip(args, &format!("AF_XDP unusable here: {e:#}")),
    };
    let _priority = Priority::raise();
    let mut out = Report::default();
    // Progress on stderr, also with --json (stdout stays one document).
    let progress = |what: &str, t: &Trial| eprintln!("  {what}: {t}");

    // The backend under test, then with a recording mirror on.
    if !args.no_backend {
        let mut ours = match Ours::start(&net, args.backend, false)? {
            Ok(o) => o,
            Err(why) => return skip(args, &why),
        };
        out.ours = Some(search(args.start_calls, args.max_calls, |n| {
            let t = trial(&net, &env, &mut ours, n, args.seconds)?;
            progress(args.backend.name(), &t);
            Ok(t)
        })?);
    }
    if !args.no_mirror && !args.no_backend {
        let mut mirrored = Ours::start(&net, args.backend, true)?.map_err(|e| anyhow!(e))?;
        let start = out
            .ours_calls()
            .map_or(args.start_calls, |c| (c / 2).max(50));
        let s = search(start, args.max_calls, |n| {
            let t = trial(&net, &env, &mut mirrored, n, args.seconds)?;
            progress("mirror on", &t);
            Ok(t)
        })?;
        out.mirror_sink_records = mirrored.mirrored();
        out.mirror = Some(s);
    }
    if args.no_rtpengine {
        out.rtpengine_note = Some("not measured (--no-rtpengine)".into());
    } else {
        match Rtpengine::start(&net)? {
            Ok(mut rtp) => {
                let s = search(args.start_calls, args.max_calls, |n| {
                    let t = trial(&net, &env, &mut rtp, n, args.seconds)?;
                    progress("rtpengine", &t);
                    Ok(t)
                })?;
                out.rtpengine = Some(s);
            }
            Err(why) => {
                if !args.json {
                    eprintln!("SKIP: rtpengine: {why}");
                }
                out.rtpengine_note = Some(why);
            }
        }
    }
    if !args.no_ceiling {
        let mut ceiling = Ceiling::start(&net)?;
        let s = search(args.start_calls, CEILING_MAX_CALLS, |n| {
            let t = trial(&net, &env, &mut ceiling, n, args.seconds)?;
            progress("ceiling", &t);
            Ok(t)
        })?;
        out.ceiling = Some(s);
    }
    out.table = Some(session_table());
    let doc = out.json(args);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        out.print(args, &doc);
    }
    Ok(())
}

fn skip(args: &Args, why: &str) -> anyhow::Result<()> {
    if args.json {
        println!("{}", json!({ "skipped": why }));
    } else {
        println!("SKIP: voxplane bench relay: {why} (needs root, iproute2, AF_XDP and BPF)");
    }
    Ok(())
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Udp => "udp",
            BackendKind::Uring => "uring",
            BackendKind::Afxdp => "afxdp",
        }
    }
}

/// Addresses of the test network as the generators see them.
struct Env {
    caller: Leg,
    callee: Leg,
}

impl Env {
    /// Reads the MACs and lets every host resolve its neighbours.
    fn new(net: &TestNet) -> anyhow::Result<Env> {
        let mac = |host, ifname: &'static str| {
            net.run_in(host, move || interface_mac(ifname))?
                .with_context(|| format!("MAC of {ifname}"))
        };
        let relay_ip = ip4(TestNet::addr(Host::Relay));
        let caller = Leg {
            src_mac: mac(Host::Caller, "c0")?,
            dst_mac: mac(Host::Relay, "r0")?,
            src_ip: ip4(TestNet::addr(Host::Caller)),
            dst_ip: relay_ip,
            src_port: GEN_PORT,
            dst_port: CEILING_PORT,
        };
        let callee = Leg {
            src_mac: mac(Host::Callee, "e0")?,
            dst_mac: mac(Host::Relay, "r1")?,
            src_ip: ip4(TestNet::addr(Host::Callee)),
            dst_ip: relay_ip,
            src_port: GEN_PORT,
            dst_port: CEILING_PORT,
        };
        // The relay resolves both neighbours as any host would (AF_XDP
        // takes next hops from the kernel's neighbour table): one datagram
        // to the discard port, then wait for the entry.
        for peer in [caller.src_ip, callee.src_ip] {
            let resolved = net.run_in(Host::Relay, move || {
                let probe = UdpSocket::bind("0.0.0.0:0")?;
                for _ in 0..200 {
                    probe.send_to(b"arp", (peer, 9))?;
                    if Neighbours::read()?.mac(peer).is_some() {
                        return Ok(true);
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Ok::<_, std::io::Error>(false)
            })??;
            if !resolved {
                bail!("the relay namespace cannot resolve {peer}");
            }
        }
        Ok(Env { caller, callee })
    }
}

fn ip4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// Something calls are relayed through.
trait Target {
    /// Makes sure calls `0..calls` exist; returns, per call, the port the
    /// caller sends to and the port the callee sends to.
    fn prepare(&mut self, calls: u32) -> anyhow::Result<(Vec<u16>, Vec<u16>)>;

    /// The relay's own counters since it started, when it has any we can
    /// read (for the report: where packets went).
    fn counters(&self) -> Option<Json> {
        None
    }
}

/// One trial at a fixed number of calls.
#[derive(Clone, Debug)]
struct Trial {
    calls: u32,
    sent: u64,
    received: u64,
    loss_pct: f64,
    /// p50, p99, p99.9, max one-way latency over both directions, µs.
    latency_us: [u64; 4],
    /// The generators could not keep the schedule (sent > 5 % late): the
    /// figure measures the sender, not the relay.
    sender_limited: bool,
    /// The relay's counters after the trial (cumulative), where readable.
    relay: Option<Json>,
}

impl Trial {
    fn carried(&self) -> bool {
        self.sent > 0
            && self.loss_pct < MAX_LOSS_PCT
            && self.latency_us[2] <= MAX_P999_US
            && !self.sender_limited
    }
}

impl std::fmt::Display for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [p50, p99, p999, max] = self.latency_us;
        write!(
            f,
            "{} calls: sent {} received {} loss {:.4} % latency µs p50 {p50} p99 {p99} p99.9 {p999} max {max}{}",
            self.calls,
            self.sent,
            self.received,
            self.loss_pct,
            if self.sender_limited {
                " (sender limited)"
            } else {
                ""
            }
        )
    }
}

/// Runs both generators for `seconds` through `target` with `calls` calls.
fn trial(
    net: &TestNet,
    env: &Env,
    target: &mut dyn Target,
    calls: u32,
    seconds: u32,
) -> anyhow::Result<Trial> {
    let (to_relay_a, to_relay_b) = target.prepare(calls)?;
    let epoch = Instant::now();
    let barrier = Arc::new(Barrier::new(2));
    let config = |iface: &str, leg: Leg, ssrc_base| RunConfig {
        iface: iface.to_owned(),
        leg,
        calls,
        packets_per_stream: seconds * 50,
        drain: Duration::from_millis(500),
        ssrc_base,
        epoch,
        barrier: Some(barrier.clone()),
    };
    let a = config("c0", env.caller, 0x5650_0000);
    let b = config("e0", env.callee, 0x5660_0000);
    let (ra, rb) = thread::scope(|s| {
        let callee = s.spawn(|| {
            net.run_in(Host::Callee, || {
                pin(GEN_CPU);
                run_with_ports(&b, Some(&to_relay_b))
            })
        });
        let caller = net.run_in(Host::Caller, || {
            pin(GEN_CPU);
            run_with_ports(&a, Some(&to_relay_a))
        });
        let callee = callee
            .join()
            .map_err(|_| anyhow!("callee generator panicked"));
        (caller, callee)
    });
    let ra = ra?.context("caller generator")?;
    let rb = rb??.context("callee generator")?;
    let mut t = summarize(calls, seconds, &[ra, rb]);
    t.relay = target.counters();
    Ok(t)
}

fn summarize(calls: u32, seconds: u32, legs: &[RunReport]) -> Trial {
    let sent: u64 = legs.iter().map(|r| r.sent).sum();
    let scheduled: u64 = legs.iter().map(|r| r.scheduled).sum();
    let received: u64 = legs.iter().map(|r| r.rx.received).sum();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for r in legs {
        // Same bounds on both sides: adding cannot fail.
        let _ = hist.add(&r.latency);
    }
    let q = |p: f64| hist.value_at_quantile(p);
    let late = legs
        .iter()
        .any(|r| r.send_secs > f64::from(seconds) * 1.05 + 0.02);
    Trial {
        calls,
        sent,
        received,
        loss_pct: if sent == 0 {
            100.0
        } else {
            100.0 * sent.saturating_sub(received) as f64 / sent as f64
        },
        latency_us: [q(0.5), q(0.99), q(0.999), hist.max()],
        sender_limited: late || sent < scheduled,
        relay: None,
    }
}

/// The trials of one search and the largest number of calls carried.
#[derive(Clone, Debug, Default)]
struct Search {
    trials: Vec<Trial>,
    best: Option<Trial>,
    /// The search stopped at its upper bound, not at a loss.
    capped: bool,
}

/// Doubles from `start` while calls are carried, then bisects (down to 5 %
/// or 4 steps) between the last carried and the first lost.
fn search(
    start: u32,
    max: u32,
    mut trial: impl FnMut(u32) -> anyhow::Result<Trial>,
) -> anyhow::Result<Search> {
    let mut out = Search::default();
    let mut n = start.clamp(1, max);
    let mut failed: Option<u32> = None;
    loop {
        let t = trial(n)?;
        let ok = t.carried();
        out.trials.push(t.clone());
        if !ok {
            failed = Some(n);
            break;
        }
        out.best = Some(t);
        if n >= max {
            out.capped = true;
            break;
        }
        n = (n * 2).min(max);
    }
    if let Some(mut hi) = failed {
        let mut lo = out.best.as_ref().map_or(0, |t| t.calls);
        for _ in 0..4 {
            if hi - lo <= (lo / 20).max(10) {
                break;
            }
            let mid = lo + (hi - lo) / 2;
            let t = trial(mid)?;
            out.trials.push(t.clone());
            if t.carried() {
                lo = mid;
                out.best = Some(t);
            } else {
                hi = mid;
            }
        }
    }
    Ok(out)
}

/// Pins the calling thread (and the threads it starts) to `cpu`, when the
/// machine has it, at nice -19 (see [`NICE`]).
fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
    // Threads have their own nice value; threads started later inherit it.
    renice(&nix::unistd::gettid().to_string(), NICE);
}

/// While alive, this process's scheduling autogroup (with autogroups on,
/// thread nice values only count inside the group, and every other
/// session on the machine is its own group) and the kernel's softirq
/// threads run at [`NICE`]. Packets a relay sends on a veth are delivered by the peer's
/// NAPI in softirq context on the relay's core; once the kernel defers
/// softirqs to `ksoftirqd`, a busy-polling relay at a better nice value
/// would starve its own deliveries (milliseconds of latency, full TX
/// rings). Restored on drop.
struct Priority(Vec<(String, String)>, Option<String>);

const AUTOGROUP: &str = "/proc/self/autogroup";

impl Priority {
    fn raise() -> Priority {
        // "/autogroup-N nice K"
        let group = std::fs::read_to_string(AUTOGROUP)
            .ok()
            .and_then(|t| t.split_whitespace().last().map(str::to_owned));
        let group = group.filter(|_| std::fs::write(AUTOGROUP, NICE).is_ok());
        let mut saved = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("ksoftirqd/") {
                continue;
            }
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // Field 19 is the nice value (after the parenthesised name).
            let nice = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(16))
                .unwrap_or("0")
                .to_owned();
            if renice(&pid, NICE) {
                saved.push((pid, nice));
            }
        }
        Priority(saved, group)
    }
}

impl Drop for Priority {
    fn drop(&mut self) {
        for (pid, nice) in &self.0 {
            renice(pid, nice);
        }
        if let Some(nice) = &self.1 {
            let _ = std::fs::write(AUTOGROUP, nice);
        }
    }
}

fn renice(pid: &str, nice: &str) -> bool {
    Command::new("renice")
        .args(["-n", nice, "-p", pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A minimal ng client (the requests Kamailio's module sends).
struct Ng {
    sock: UdpSocket,
    server: SocketAddr,
    cookie: u64,
}

impl Ng {
    /// A client socket in the relay namespace, for a server on its loopback.
    fn new(net: &TestNet, port: u16) -> anyhow::Result<Ng> {
        let sock = net.run_in(Host::Relay, || UdpSocket::bind("127.0.0.1:0"))??;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Ng {
            sock,
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            cookie: 0,
        })
    }

    /// Sends `entries` as a dict and returns the response's `sdp` (empty
    /// when it has none).
    ///
    /// # Errors
    /// `result: error` (with the reason), or no answer after 5 tries.
    fn request(&mut self, entries: Vec<(&[u8], Value<'_>)>) -> anyhow::Result<String> {
        self.cookie += 1;
        let mut msg = format!("vx{} ", self.cookie).into_bytes();
        let prefix = msg.len();
        Value::Dict(entries).emit(&mut msg);
        let mut buf = vec![0u8; 65536];
        for _ in 0..5 {
            self.sock.send_to(&msg, self.server)?;
            let Ok(len) = self.sock.recv(&mut buf) else {
                continue;
            };
            if buf.get(..prefix) != Some(&msg[..prefix]) {
                continue;
            }
            let resp = Value::parse(&buf[prefix..len]).context("ng response")?;
            let text = |key: &[u8]| match dict_get(&resp, key) {
                Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            if text(b"result") != "ok" && text(b"result") != "pong" {
                bail!("ng error: {}", text(b"error-reason"));
            }
            return Ok(text(b"sdp"));
        }
        bail!("no ng answer from {}", self.server)
    }

    fn ping(&mut self) -> anyhow::Result<()> {
        self.request(vec![(b"command", Value::str("ping"))])
            .map(|_| ())
    }

    /// Offer and answer for call `i`; returns the relay ports the caller
    /// and the callee send to.
    fn call(&mut self, i: u32) -> anyhow::Result<(u16, u16)> {
        let (id, from, to) = (format!("bench-{i}"), format!("a{i}"), format!("b{i}"));
        let port = GEN_PORT + 2 * i as u16;
        let offer = sdp(TestNet::addr(Host::Caller), port, i);
        let resp = self.request(vec![
            (b"command", Value::str("offer")),
            (b"call-id", Value::str(&id)),
            (b"from-tag", Value::str(&from)),
            (b"sdp", Value::str(&offer)),
        ])?;
        let callee_sends_to = media_port(&resp).context("offer response SDP")?;
        let answer = sdp(TestNet::addr(Host::Callee), port, i);
        let resp = self.request(vec![
            (b"command", Value::str("answer")),
            (b"call-id", Value::str(&id)),
            (b"from-tag", Value::str(&from)),
            (b"to-tag", Value::str(&to)),
            (b"sdp", Value::str(&answer)),
        ])?;
        let caller_sends_to = media_port(&resp).context("answer response SDP")?;
        Ok((caller_sends_to, callee_sends_to))
    }

    fn start_recording(&mut self, i: u32) -> anyhow::Result<()> {
        let id = format!("bench-{i}");
        self.request(vec![
            (b"command", Value::str("start recording")),
            (b"call-id", Value::str(&id)),
        ])
        .map(|_| ())
    }
}

fn dict_get<'v, 'a>(dict: &'v Value<'a>, key: &[u8]) -> Option<&'v Value<'a>> {
    match dict {
        Value::Dict(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
        _ => None,
    }
}

/// A G.711 A-law offer or answer from `addr:port`.
fn sdp(addr: IpAddr, port: u16, session: u32) -> String {
    format!(
        "v=0\r\no=- {session} 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The port of the first `m=audio` line.
fn media_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

/// Calls set up so far and their ports, shared by the relays.
#[derive(Default)]
struct Calls {
    caller: Vec<u16>,
    callee: Vec<u16>,
}

impl Calls {
    fn ensure(
        &mut self,
        ng: &mut Ng,
        calls: u32,
        mut after: impl FnMut(&mut Ng, u32) -> anyhow::Result<()>,
    ) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        for i in self.caller.len() as u32..calls {
            let (a, b) = ng.call(i).with_context(|| format!("setting up call {i}"))?;
            after(ng, i)?;
            self.caller.push(a);
            self.callee.push(b);
        }
        let n = calls as usize;
        Ok((self.caller[..n].to_vec(), self.callee[..n].to_vec()))
    }
}

/// Voxplane's relay (one backend) with ng on the relay namespace's
/// loopback; the relay's workers on [`RELAY_CPU`].
struct Ours {
    _backend: Box<dyn Send>,
    control: UdpControl,
    ng: Ng,
    calls: Calls,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    mirror: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// A started backend: its mirror consumers, control handle and owner.
type Started = (Vec<MirrorConsumer>, UdpControl, Box<dyn Send>);

const OURS_NG_PORT: u16 = 22223;
const RTPENGINE_NG_PORT: u16 = 22224;

impl Ours {
    /// `Ok(Err(why))` when the backend cannot run here (a reason to skip).
    fn start(
        net: &TestNet,
        kind: BackendKind,
        mirror: bool,
    ) -> anyhow::Result<Result<Ours, String>> {
        let relay = RelayConfig {
            media_v4: Some(TestNet::addr(Host::Relay)),
            ports: RELAY_PORTS,
            max_sessions: 20_000,
            // Idle calls stay between trials.
            media_timeout: Duration::from_secs(3600),
            ..RelayConfig::default()
        };
        let mirror_config = MirrorConfig {
            ring_bytes: mirror.then_some(16 << 20),
            ..MirrorConfig::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let started = net.run_in(Host::Relay, move || {
            pin(RELAY_CPU);
            let made: Result<Started, String> = match kind {
                BackendKind::Udp => UdpBackend::start(UdpConfig {
                    relay,
                    workers: 1,
                    mirror: mirror_config,
                })
                .map(|mut b| (b.take_mirror_consumers(), b.control(), Box::new(b) as _))
                .map_err(|e| e.to_string()),
                BackendKind::Uring => UringBackend::start(UdpConfig {
                    relay,
                    workers: 1,
                    mirror: mirror_config,
                })
                .map(|mut b| (b.take_mirror_consumers(), b.control(), Box::new(b) as _))
                .map_err(|e| e.to_string()),
                BackendKind::Afxdp => AfXdpBackend::start(AfXdpConfig {
                    relay,
                    interfaces: vec!["r0".into(), "r1".into()],
                    workers: 1,
                    mirror: mirror_config,
                })
                .map(|mut b| (b.take_mirror_consumers(), b.control(), Box::new(b) as _))
                .map_err(|e| format!("AF_XDP backend: {e}")),
            };
            let (consumers, control, backend) = match made {
                Ok(x) => x,
                Err(e) => return Ok(Err(e)),
            };
            // Control and the mirror sink run beside the generators.
            pin(GEN_CPU);
            let socket = UdpSocket::bind(("127.0.0.1", OURS_NG_PORT))?;
            let mut threads = Vec::new();
            let s = stop2.clone();
            let mut ng_control = control.clone();
            threads.push(thread::spawn(move || {
                let _ = serve_ng(&socket, &mut ng_control, &|| s.load(Ordering::Relaxed));
            }));
            let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
            for mut consumer in consumers {
                let (s, counter) = (stop2.clone(), counter.clone());
                threads.push(thread::spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        let mut n = 0;
                        while consumer.pop().is_some() {
                            n += 1;
                        }
                        counter.fetch_add(n, Ordering::Relaxed);
                        if n == 0 {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }));
            }
            Ok::<_, std::io::Error>(Ok((backend, control, threads, counter)))
        })??;
        let (backend, control, threads, counter) = match started {
            Ok(x) => x,
            Err(why) => return Ok(Err(why)),
        };
        let mut ng = Ng::new(net, OURS_NG_PORT)?;
        ng.ping().context("ng ping")?;
        Ok(Ok(Ours {
            _backend: backend,
            control,
            ng,
            calls: Calls::default(),
            stop,
            threads,
            mirror: mirror.then_some(counter),
        }))
    }

    /// Records taken from the mirror ring so far.
    fn mirrored(&self) -> Option<u64> {
        self.mirror.as_ref().map(|c| c.load(Ordering::Relaxed))
    }
}

impl Target for Ours {
    fn prepare(&mut self, calls: u32) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        let record = self.mirror.is_some();
        self.calls.ensure(&mut self.ng, calls, |ng, i| {
            if record {
                ng.start_recording(i)?;
            }
            Ok(())
        })
    }

    fn counters(&self) -> Option<Json> {
        let (relay, io) = self.control.counters();
        let drops: serde_json::Map<String, Json> = dataplane::relay::DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), json!(relay.drops.get(*r))))
            .collect();
        Some(json!({
            "rx": relay.rx_packets, "forwarded": relay.forwarded, "tx": io.tx_packets,
            "tx_errors": io.tx_errors, "unroutable": io.unroutable, "drops": drops,
            "mirror_ring": io.mirror_ring_packets, "mirror_ring_drops": io.mirror_ring_drops,
        }))
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Debian's rtpengine, userspace forwarding only (`--table=-1`), pinned to
/// [`RELAY_CPU`] with one worker thread.
struct Rtpengine {
    child: Child,
    ng: Ng,
    calls: Calls,
}

impl Rtpengine {
    /// `Ok(Err(why))` when rtpengine is not installed or does not start.
    fn start(net: &TestNet) -> anyhow::Result<Result<Rtpengine, String>> {
        if Command::new("rtpengine")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Ok(Err(
                "rtpengine not installed (Debian package rtpengine-daemon)".into(),
            ));
        }
        let relay = TestNet::addr(Host::Relay);
        let child = Command::new("taskset")
            .args(["-c", &RELAY_CPU.to_string(), "nice", "-n", NICE])
            .args(["ip", "netns", "exec"])
            .arg(net.namespace(Host::Relay))
            .args([
                "rtpengine",
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=3",
                "--table=-1",
                "--num-threads=1",
                "--timeout=3600",
                "--silent-timeout=3600",
                "--offer-timeout=3600",
                "--delete-delay=0",
            ])
            .arg(format!("--interface={relay}"))
            .arg(format!("--listen-ng=127.0.0.1:{RTPENGINE_NG_PORT}"))
            .arg(format!("--port-min={}", RELAY_PORTS.start()))
            .arg(format!("--port-max={}", RELAY_PORTS.end()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("cannot start rtpengine: {e}"))),
        };
        let mut this = Rtpengine {
            child,
            ng: Ng::new(net, RTPENGINE_NG_PORT)?,
            calls: Calls::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while this.ng.ping().is_err() {
            if Instant::now() > deadline || this.child.try_wait()?.is_some() {
                return Ok(Err("rtpengine did not answer ng ping".into()));
            }
        }
        Ok(Ok(this))
    }
}

impl Target for Rtpengine {
    fn prepare(&mut self, calls: u32) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        self.calls.ensure(&mut self.ng, calls, |_, _| Ok(()))
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `media_reflect` on both relay interfaces.
struct Ceiling {
    _progs: Vec<MediaReflect>,
}

impl Ceiling {
    fn start(net: &TestNet) -> anyhow::Result<Ceiling> {
        let config = MediaConfig {
            port_lo: CEILING_PORT,
            port_hi: u16::MAX,
            flags: 0,
        };
        let progs = net.run_in(Host::Relay, move || {
            ["r0", "r1"]
                .into_iter()
                .map(|ifname| {
                    let mut prog = MediaReflect::load(config)?;
                    prog.attach(ifname)?;
                    Ok(prog)
                })
                .collect::<Result<Vec<_>, dataplane::afxdp::AfXdpError>>()
        })??;
        Ok(Ceiling { _progs: progs })
    }
}

impl Target for Ceiling {
    fn prepare(&mut self, calls: u32) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
        let ports: Vec<u16> = (0..calls).map(|i| CEILING_PORT + 2 * i as u16).collect();
        Ok((ports.clone(), ports))
    }
}

/// The relay core's session table: bytes per session and the cost of one
/// forwarding decision with few and with as many sessions as one media
/// address holds.
#[derive(Clone, Debug)]
struct TableFigures {
    bytes_per_session: usize,
    /// (sessions, ns per decision).
    decision_ns: Vec<(u32, f64)>,
}

fn session_table() -> TableFigures {
    let now = Instant::now();
    let mut decision_ns = Vec::new();
    let mut bytes = 0;
    for sessions in [1_000u32, 16_000] {
        let mut relay = Relay::new(RelayConfig {
            media_v4: Some(IpAddr::from([192, 0, 2, 1])),
            ports: 2..=65535,
            max_sessions: sessions as usize,
            ..RelayConfig::default()
        })
        .expect("valid config");
        let mut targets = Vec::with_capacity(sessions as usize);
        for i in 0..sessions {
            let id = format!(
                "{:08x}-bench-call@voxplane.example.net",
                i.wrapping_mul(2_654_435_761)
            );
            let caller = IpAddr::from([198, 18, 1 + (i / 60_000) as u8, 2]);
            let port = 10000 + (i % 25_000) as u16 * 2;
            let offer = Offer {
                call_id: &id,
                from_tag: "as7f3k2l",
                sdp: &sdp(caller, port, i),
                flags: SessionFlags::default(),
            };
            if relay.offer(now, &offer).is_err() {
                break;
            }
            let answer = Answer {
                call_id: &id,
                from_tag: "as7f3k2l",
                to_tag: "bq82jd91",
                sdp: &sdp(IpAddr::from([198, 18, 2, 2]), port, i),
                flags: SessionFlags::default(),
            };
            let Ok(answered) = relay.answer(now, &answer) else {
                break;
            };
            if let Some(local) = media_port(&answered) {
                targets.push((SocketAddr::new(caller, port), local));
            }
            if i == 0 {
                bytes = relay.session_footprint(&id).unwrap_or(0);
            }
        }
        // RTP from the caller to its relay port, in a scattered order.
        let mut pkt = [0u8; 172];
        pkt[0] = 0x80;
        pkt[1] = 8;
        let n = targets.len().max(1);
        let rounds = 2_000_000 / n + 1;
        let begin = Instant::now();
        let mut decided = 0u64;
        let mut k = 0usize;
        for r in 0..rounds {
            for _ in 0..n {
                k = (k + 7919) % n;
                let Some(&(src, local)) = targets.get(k) else {
                    continue;
                };
                pkt[2..4].copy_from_slice(&(r as u16).to_be_bytes());
                let meta = RxMeta {
                    src,
                    dst: SocketAddr::new(IpAddr::from([192, 0, 2, 1]), local),
                };
                let _ = std::hint::black_box(relay.handle_datagram(now, meta, &mut pkt));
                decided += 1;
            }
        }
        let ns = begin.elapsed().as_nanos() as f64 / decided.max(1) as f64;
        decision_ns.push((targets.len() as u32, ns));
    }
    TableFigures {
        bytes_per_session: bytes,
        decision_ns,
    }
}

/// Everything measured.
#[derive(Default)]
struct Report {
    ours: Option<Search>,
    mirror: Option<Search>,
    mirror_sink_records: Option<u64>,
    rtpengine: Option<Search>,
    rtpengine_note: Option<String>,
    ceiling: Option<Search>,
    table: Option<TableFigures>,
}

fn best_calls(s: &Option<Search>) -> Option<u32> {
    s.as_ref().and_then(|s| s.best.as_ref()).map(|t| t.calls)
}

impl Report {
    fn ours_calls(&self) -> Option<u32> {
        best_calls(&self.ours)
    }

    fn json(&self, args: &Args) -> Json {
        let best = self.ours.as_ref().and_then(|s| s.best.clone());
        let ratio = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(a), Some(b)) if b > 0 => Some(f64::from(a) / f64::from(b)),
            _ => None,
        };
        let ours = best_calls(&self.ours);
        let mirror = best_calls(&self.mirror);
        let rtpengine = best_calls(&self.rtpengine);
        let ceiling = best_calls(&self.ceiling);
        let trials = |s: &Option<Search>| {
            s.as_ref().map(|s| {
                s.trials
                    .iter()
                    .map(|t| {
                        json!({
                            "calls": t.calls, "sent": t.sent, "received": t.received,
                            "loss_pct": t.loss_pct, "latency_us": t.latency_us,
                            "sender_limited": t.sender_limited, "relay_counters": t.relay,
                        })
                    })
                    .collect::<Vec<_>>()
            })
        };
        let capped = |s: &Option<Search>| s.as_ref().is_some_and(|s| s.capped);
        json!({
            "backend": args.backend.name(),
            "machine": machine(),
            "seconds_per_trial": args.seconds,
            "max_loss_pct": MAX_LOSS_PCT,
            "max_latency_p999_us": MAX_P999_US,
            "calls_per_core": ours,
            "calls_per_core_capped_by_search": capped(&self.ours),
            "loss_pct": best.as_ref().map(|t| t.loss_pct),
            "latency_p50_us": best.as_ref().map(|t| t.latency_us[0]),
            "latency_p99_us": best.as_ref().map(|t| t.latency_us[1]),
            "latency_p999_us": best.as_ref().map(|t| t.latency_us[2]),
            "rtpengine_calls_per_core": rtpengine,
            "rtpengine_note": self.rtpengine_note,
            "rtpengine_latency_p99_us": self.rtpengine.as_ref().and_then(|s| s.best.as_ref()).map(|t| t.latency_us[1]),
            "ceiling_calls_per_core": ceiling,
            "ceiling_capped_by_search": capped(&self.ceiling),
            "ceiling_latency_p99_us": self.ceiling.as_ref().and_then(|s| s.best.as_ref()).map(|t| t.latency_us[1]),
            "mirror_calls_per_core": mirror,
            "mirror_cost_pct": ratio(mirror, ours).map(|r| 100.0 * (1.0 - r)),
            "mirror_sink_records": self.mirror_sink_records,
            "ratio_to_ceiling": ratio(ours, ceiling),
            "ratio_to_rtpengine": ratio(ours, rtpengine),
            "bytes_per_session": self.table.as_ref().map(|t| t.bytes_per_session),
            "decision_ns": self.table.as_ref().map(|t| t.decision_ns.iter().map(|(s, ns)| json!({"sessions": s, "ns_per_packet": ns})).collect::<Vec<_>>()),
            "trials": {
                "ours": trials(&self.ours),
                "mirror": trials(&self.mirror),
                "rtpengine": trials(&self.rtpengine),
                "ceiling": trials(&self.ceiling),
            },
        })
    }

    fn print(&self, args: &Args, doc: &Json) {
        let show = |what: &str, s: &Option<Search>| match s.as_ref().and_then(|s| s.best.as_ref()) {
            Some(t) => println!("{what:<22} {t}"),
            None if s.is_some() => println!("{what:<22} no trial carried without loss"),
            None => {}
        };
        println!(
            "voxplane bench relay --backend {} ({})",
            args.backend.name(),
            doc["machine"]
        );
        show(args.backend.name(), &self.ours);
        show("mirror on (1 sink)", &self.mirror);
        show("rtpengine", &self.rtpengine);
        if let Some(note) = &self.rtpengine_note {
            println!("{:<22} {note}", "rtpengine");
        }
        show("ceiling (XDP reflect)", &self.ceiling);
        for key in [
            "ratio_to_ceiling",
            "ratio_to_rtpengine",
            "mirror_cost_pct",
            "bytes_per_session",
        ] {
            println!("{key:<22} {}", doc[key]);
        }
        println!("{:<22} {}", "decision_ns", doc["decision_ns"]);
    }
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "Linux {}, {cores} cores, load {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
