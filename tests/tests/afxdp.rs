//! The AF_XDP backend end to end, in network namespaces: UDP media sent by
//! the caller reaches the relay's AF_XDP socket (via `media_redirect`), a
//! forwarder rewrites it for the callee using the kernel's neighbour table,
//! and the callee's ordinary UDP socket receives it; SIP to the relay's
//! kernel socket keeps working beside it.
//!
//! The forwarder here stands in for the relay core, which plugs into the
//! same `FrameHandler` trait.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bench::relaygen::Leg;
use bench::relaygen::afxdp::RunConfig;
use dataplane::afxdp::{
    FrameCensus, FrameHandler, MediaConfig, MediaCounter, MediaRedirect, Neighbours, PortId,
    Verdict, Worker, WorkerConfig, WorkerStats,
};
use tests::netns::{
    CALLEE_IF, CALLEE_IP, CALLER_IF, CALLER_IP, RELAY_CALLEE_IF, RELAY_CALLEE_SIDE_IP,
    RELAY_CALLER_IF, RELAY_CALLER_SIDE_IP, Topology,
};

const MEDIA_PORT: u16 = 30000;
const SIP_PORT: u16 = 5060;
const CALLEE_PORT: u16 = 40000;
const PACKETS: usize = 50;

#[test]
fn media_flows_caller_to_callee_through_af_xdp() {
    let Some(topo) = Topology::new() else { return };
    let relay_mac = topo.relay.mac(RELAY_CALLEE_IF);
    let callee = topo
        .callee
        .run(|| UdpSocket::bind((CALLEE_IP, CALLEE_PORT)).expect("callee socket"));
    callee
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let make = move |macs: Macs| Forwarder {
        out_src_mac: relay_mac,
        out_dst_mac: macs.callee,
        out_src: SocketAddrV4::new(RELAY_CALLEE_SIDE_IP, MEDIA_PORT),
        out_dst: SocketAddrV4::new(CALLEE_IP, CALLEE_PORT),
        forwarded: 0,
    };
    let Some(relay) = Relay::start(&topo, "media_flows_caller_to_callee_through_af_xdp", make)
    else {
        return;
    };

    // The caller must ARP the relay again, through the attached program.
    topo.caller.ip(&["neigh", "flush", "all"]);
    topo.caller.run(|| {
        let sock = UdpSocket::bind((CALLER_IP, 50000)).unwrap();
        for i in 0..PACKETS {
            sock.send_to(
                format!("rtp-{i}").as_bytes(),
                (RELAY_CALLER_SIDE_IP, MEDIA_PORT),
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        sock.send_to(
            b"OPTIONS sip:relay SIP/2.0",
            (RELAY_CALLER_SIDE_IP, SIP_PORT),
        )
        .unwrap();
    });

    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < PACKETS && Instant::now() < deadline {
        if let Ok((n, from)) = callee.recv_from(&mut buf) {
            assert_eq!(
                from,
                SocketAddrV4::new(RELAY_CALLEE_SIDE_IP, MEDIA_PORT).into()
            );
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    // The SIP datagram went to the relay's kernel socket, not to AF_XDP.
    relay
        .sip
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (n, from) = relay
        .sip
        .recv_from(&mut buf)
        .expect("SIP reached the kernel socket");
    assert_eq!(&buf[..n], b"OPTIONS sip:relay SIP/2.0");
    assert_eq!(from, SocketAddrV4::new(CALLER_IP, 50000).into());

    let run = relay.stop();
    let expected: Vec<String> = (0..PACKETS).map(|i| format!("rtp-{i}")).collect();
    assert_eq!(got, expected, "callee received every datagram, in order");
    assert_eq!(run.handled, PACKETS as u64);
    let stats = run.stats;
    assert!(
        stats.rx >= PACKETS as u64 && stats.tx >= PACKETS as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.completed, stats.tx,
        "every TX frame completed: {stats:?}"
    );
    assert_eq!(
        run.counters[MediaCounter::Redirected.key() as usize],
        PACKETS as u64
    );
    assert!(
        run.counters[MediaCounter::PassPort.key() as usize] >= 1,
        "SIP passed: {:?}",
        run.counters
    );
    assert!(
        run.counters[MediaCounter::PassNotIp.key() as usize] >= 1,
        "ARP passed: {:?}",
        run.counters
    );
    assert_eq!(run.census.total(), run.frames, "{:?}", run.census);
}

#[test]
fn verdicts_are_counted_and_no_umem_frame_leaks() {
    let Some(topo) = Topology::new() else { return };
    let Some(relay) = Relay::start(
        &topo,
        "verdicts_are_counted_and_no_umem_frame_leaks",
        |_| Sorter::default(),
    ) else {
        return;
    };
    // One letter per datagram: Reflect, Drop, Pass, Bad port.
    let plan = "RDPBRRDPBRRRDDPPBB";
    let replies = topo.caller.run(|| {
        let sock = UdpSocket::bind((CALLER_IP, 50001)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        for (i, verdict) in plan.chars().enumerate() {
            sock.send_to(
                format!("{verdict}{i}").as_bytes(),
                (RELAY_CALLER_SIDE_IP, MEDIA_PORT + 1),
            )
            .unwrap();
        }
        let mut replies = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(
                from,
                SocketAddrV4::new(RELAY_CALLER_SIDE_IP, MEDIA_PORT + 1).into()
            );
            replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        replies
    });
    let run = relay.stop();
    let count = |c: char| plan.chars().filter(|&v| v == c).count() as u64;
    let expected: Vec<String> = plan
        .char_indices()
        .filter(|&(_, v)| v == 'R')
        .map(|(i, v)| format!("{v}{i}"))
        .collect();
    assert_eq!(replies, expected, "only reflected datagrams come back");
    let s = run.stats;
    assert_eq!(s.rx, plan.len() as u64, "{s:?}");
    assert_eq!(
        (s.tx, s.dropped, s.passed, s.bad_port),
        (count('R'), count('D'), count('P'), count('B')),
        "{s:?}"
    );
    assert_eq!(s.completed, s.tx);
    assert_eq!(run.census.tx, 0, "TX drained before stop returned");
    assert_eq!(
        run.census.total(),
        run.frames,
        "every UMEM frame accounted for: {:?}",
        run.census
    );
}

#[test]
fn generator_through_a_reflecting_relay_loses_nothing() {
    let test = "generator_through_a_reflecting_relay_loses_nothing";
    let Some(topo) = Topology::new() else { return };
    let Some(relay) = Relay::start(&topo, test, |_| Reflector::default()) else {
        return;
    };
    let (calls, packets) = (20, 50);
    let cfg = RunConfig {
        iface: CALLER_IF.into(),
        leg: Leg {
            src_mac: topo.caller.mac(CALLER_IF),
            dst_mac: topo.relay.mac(RELAY_CALLER_IF),
            src_ip: CALLER_IP,
            dst_ip: RELAY_CALLER_SIDE_IP,
            src_port: 20000,
            dst_port: MEDIA_PORT,
        },
        calls,
        packets_per_stream: packets,
        drain: Duration::from_millis(300),
        ssrc_base: 0x5650_0000,
        epoch: Instant::now(),
        barrier: None,
    };
    let report = topo.caller.run(|| bench::relaygen::afxdp::run(&cfg));
    let run = relay.stop();
    let report = report.expect("generator ran");
    let total = u64::from(calls * packets);
    assert_eq!((report.scheduled, report.sent), (total, total));
    assert_eq!(run.handled, total, "the relay saw every packet once");
    assert_eq!(report.rx.received, total, "{report:?}");
    assert_eq!((report.rx.duplicates, report.rx.foreign), (0, 0));
    assert_eq!(report.loss_pct, 0.0);
    let [p50, p99, _, max] = report.rx.latency_us;
    assert!(p50 >= 1 && p50 <= p99 && p99 <= max, "{report:?}");
    // 50 packets per call at 50 pps: paced over a second, not blasted.
    assert!(report.send_secs >= 0.98, "{report:?}");
}

#[test]
fn generators_both_ways_through_a_two_leg_relay() {
    let test = "generators_both_ways_through_a_two_leg_relay";
    let Some(topo) = Topology::new() else { return };
    let (rel0_mac, rel1_mac) = (
        topo.relay.mac(RELAY_CALLER_IF),
        topo.relay.mac(RELAY_CALLEE_IF),
    );
    let make = move |macs| Bridge {
        macs,
        rel0_mac,
        rel1_mac,
        handled: 0,
    };
    let Some(relay) = Relay::start(&topo, test, make) else {
        return;
    };
    let (calls, packets) = (10, 50);
    let epoch = Instant::now();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let leg =
        |ns: &tests::netns::Netns, iface: &str, ip, relay_if, relay_ip, relay_port| RunConfig {
            iface: iface.to_owned(),
            leg: Leg {
                src_mac: ns.mac(iface),
                dst_mac: topo.relay.mac(relay_if),
                src_ip: ip,
                dst_ip: relay_ip,
                src_port: GEN_PORT,
                dst_port: relay_port,
            },
            calls,
            packets_per_stream: packets,
            drain: Duration::from_millis(300),
            ssrc_base: 0x1000,
            epoch,
            barrier: Some(barrier.clone()),
        };
    let a = leg(
        &topo.caller,
        CALLER_IF,
        CALLER_IP,
        RELAY_CALLER_IF,
        RELAY_CALLER_SIDE_IP,
        BRIDGE_A,
    );
    let b = leg(
        &topo.callee,
        CALLEE_IF,
        CALLEE_IP,
        RELAY_CALLEE_IF,
        RELAY_CALLEE_SIDE_IP,
        BRIDGE_B,
    );
    let callee_side = topo.callee.spawn(move || bench::relaygen::afxdp::run(&b));
    let caller = topo
        .caller
        .run(|| bench::relaygen::afxdp::run(&a))
        .expect("caller generator");
    let callee = callee_side.join().unwrap().expect("callee generator");
    let run = relay.stop();
    let total = u64::from(calls * packets);
    assert_eq!(run.handled, 2 * total, "the relay carried both directions");
    for (side, r) in [("caller", &caller), ("callee", &callee)] {
        assert_eq!(r.sent, total, "{side}: {r:?}");
        assert_eq!(
            r.rx.received, total,
            "{side} got every packet of the other side: {r:?}"
        );
        assert_eq!((r.rx.duplicates, r.rx.foreign), (0, 0), "{side}: {r:?}");
        // One-way latency through the relay, on one clock.
        assert!(r.rx.latency_us[0] >= 1, "{side}: {r:?}");
    }
}

/// Benchmark, not a test: the generator at `VOXPLANE_BENCH_CALLS` calls
/// (default 2000) for `VOXPLANE_BENCH_SECS` seconds (default 3) through the
/// reflecting AF_XDP relay; prints loss and round-trip latency. Run with
/// `cargo test --release -p tests --test afxdp -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: busy-polls both cores for seconds"]
fn bench_generator_through_reflecting_relay() {
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (calls, secs) = (
        env("VOXPLANE_BENCH_CALLS", 2000),
        env("VOXPLANE_BENCH_SECS", 3),
    );
    let Some(topo) = Topology::new() else { return };
    let Some(relay) = Relay::start(&topo, "bench", |_| Reflector::default()) else {
        return;
    };
    let cfg = RunConfig {
        iface: CALLER_IF.into(),
        leg: Leg {
            src_mac: topo.caller.mac(CALLER_IF),
            dst_mac: topo.relay.mac(RELAY_CALLER_IF),
            src_ip: CALLER_IP,
            dst_ip: RELAY_CALLER_SIDE_IP,
            src_port: 20000,
            dst_port: MEDIA_PORT,
        },
        calls,
        packets_per_stream: secs * 50,
        drain: Duration::from_millis(500),
        ssrc_base: 1,
        epoch: Instant::now(),
        barrier: None,
    };
    let report = topo
        .caller
        .run(|| bench::relaygen::afxdp::run(&cfg))
        .expect("generator");
    let run = relay.stop();
    let [p50, p99, p999, max] = report.rx.latency_us;
    println!(
        "calls {calls} x {secs} s: scheduled {} sent {} in {:.2} s ({:.0} pps), relay handled {}, \
         received {}, loss {:.4} %, round trip µs p50 {p50} p99 {p99} p99.9 {p999} max {max}; worker {:?}",
        report.scheduled,
        report.sent,
        report.send_secs,
        report.sent as f64 / report.send_secs,
        run.handled,
        report.rx.received,
        report.loss_pct,
        report.worker,
    );
}

/// The neighbours' MACs, as the relay's neighbour table has them.
#[derive(Clone, Copy, Debug)]
struct Macs {
    caller: [u8; 6],
    callee: [u8; 6],
}

/// What the relay thread reports when stopped.
struct RelayRun {
    stats: WorkerStats,
    counters: [u64; 7],
    census: FrameCensus,
    frames: u32,
    handled: u64,
}

/// A handler that counts what it handled.
trait Handled: FrameHandler {
    fn handled(&self) -> u64;
}

/// An AF_XDP relay running in the relay namespace on `rel0` + `rel1`.
struct Relay {
    thread: std::thread::JoinHandle<RelayRun>,
    stop: Arc<AtomicBool>,
    /// A kernel UDP socket on the relay's SIP port (caller side).
    sip: UdpSocket,
}

impl Relay {
    /// Starts the relay thread; `make` builds the handler from the callee's
    /// MAC as the relay's neighbour table has it. `None` after `SKIP:` when
    /// AF_XDP is unusable here (a failure under `VOXPLANE_REQUIRE_TOOLS`).
    fn start<H, F>(topo: &Topology, test: &str, make: F) -> Option<Relay>
    where
        H: Handled,
        F: FnOnce(Macs) -> H + Send + 'static,
    {
        let callee_mac = topo.callee.mac(CALLEE_IF);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            topo.relay
                .spawn(move || relay_thread(make, callee_mac, &stop, &ready_tx))
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(sip)) => Some(Relay { thread, stop, sip }),
            Ok(Err(why)) => {
                stop.store(true, Ordering::Relaxed);
                let _ = thread.join();
                // Only a missing privilege or kernel feature is a reason to
                // skip; anything else is a bug.
                let skippable = [
                    "Operation not permitted",
                    "not supported",
                    "Permission denied",
                ]
                .iter()
                .any(|s| why.contains(s));
                if !skippable || std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() {
                    panic!("{test}: AF_XDP relay could not start: {why}");
                }
                eprintln!("SKIP: {test}: {why}");
                None
            }
            Err(_) => panic!("{test}: relay thread did not start"),
        }
    }

    fn stop(self) -> RelayRun {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("relay thread")
    }
}

/// Runs in the relay namespace: learns the callee's MAC from the neighbour
/// table, loads and attaches the program, opens the sockets, then
/// busy-polls until `stop`. Sends `Ok(sip socket)` when ready, or
/// `Err(why)` when AF_XDP is unusable.
fn relay_thread<H: Handled>(
    make: impl FnOnce(Macs) -> H,
    callee_mac_seen_by_callee: [u8; 6],
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<UdpSocket, String>>,
) -> RelayRun {
    let fail = |why: String| {
        let _ = ready.send(Err(why));
        RelayRun {
            stats: WorkerStats::default(),
            counters: [0; 7],
            census: FrameCensus {
                free: 0,
                fill: 0,
                tx: 0,
            },
            frames: 0,
            handled: 0,
        }
    };
    // Resolve both neighbours through the kernel first: ARP, as any host would.
    let resolve = |from: Ipv4Addr, to: Ipv4Addr| {
        let probe = UdpSocket::bind((from, 0)).unwrap();
        for _ in 0..100 {
            probe.send_to(b"arp", (to, 9)).unwrap();
            if let Some(mac) = Neighbours::read().unwrap().mac(to) {
                return Some(mac);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    };
    let (Some(caller_mac), Some(callee_mac)) = (
        resolve(RELAY_CALLER_SIDE_IP, CALLER_IP),
        resolve(RELAY_CALLEE_SIDE_IP, CALLEE_IP),
    ) else {
        return fail("a neighbour never appeared in the relay's neighbour table".into());
    };
    if callee_mac != callee_mac_seen_by_callee {
        return fail(format!(
            "neighbour table says {callee_mac:02x?}, callee has {callee_mac_seen_by_callee:02x?}"
        ));
    }
    let sip = UdpSocket::bind((RELAY_CALLER_SIDE_IP, SIP_PORT)).unwrap();

    // One program instance per interface: each has its own XSKMAP.
    let config = MediaConfig {
        port_lo: MEDIA_PORT,
        port_hi: MEDIA_PORT + 9999,
        flags: 0,
    };
    let mut progs = Vec::new();
    for iface in [RELAY_CALLER_IF, RELAY_CALLEE_IF] {
        let mut prog = match MediaRedirect::load(config) {
            Ok(p) => p,
            Err(e) => return fail(format!("cannot load the XDP program: {e}")),
        };
        if let Err(e) = prog.attach(iface) {
            return fail(format!("cannot attach to {iface}: {e}"));
        }
        progs.push(prog);
    }
    let wconfig = WorkerConfig::new(&[RELAY_CALLER_IF, RELAY_CALLEE_IF], 0);
    let mut worker = match Worker::new(
        &wconfig,
        make(Macs {
            caller: caller_mac,
            callee: callee_mac,
        }),
    ) {
        Ok(w) => w,
        Err(e) => return fail(format!("cannot open AF_XDP sockets: {e}")),
    };
    for (i, prog) in progs.iter_mut().enumerate() {
        worker.register(PortId(i), prog).expect("XSKMAP update");
    }
    let _ = ready.send(Ok(sip));
    worker.run(stop);
    RelayRun {
        stats: worker.stats(),
        counters: sum_counters(&progs),
        census: worker.frames(),
        frames: wconfig.frames,
        handled: worker.handler().handled(),
    }
}

fn sum_counters(progs: &[MediaRedirect]) -> [u64; 7] {
    let mut sum = [0; 7];
    for prog in progs {
        for (s, c) in sum.iter_mut().zip(prog.counters().expect("counters")) {
            *s += c;
        }
    }
    sum
}

/// Sorts frames from the caller by the first payload byte: `R` reflected
/// to the caller, `D` dropped, `P` passed, `B` sent to a port that does not
/// exist.
#[derive(Default)]
struct Sorter {
    handled: u64,
}

impl Handled for Sorter {
    fn handled(&self) -> u64 {
        self.handled
    }
}

impl FrameHandler for Sorter {
    fn handle(&mut self, _now: Instant, port: PortId, frame: &mut [u8]) -> Verdict {
        self.handled += 1;
        if port != PortId(0) || frame.len() < 43 {
            return Verdict::Drop;
        }
        match frame[42] {
            b'R' => {
                // Both checksums are unchanged by a swap (RFC 1071: the sum
                // is commutative).
                swap_endpoints(frame);
                Verdict::Tx(PortId(0))
            }
            b'P' => Verdict::Pass,
            b'B' => Verdict::Tx(PortId(7)),
            _ => Verdict::Drop,
        }
    }
}

/// Reflects every frame back where it came from (swapping MACs, addresses
/// and ports; the checksums are unchanged by a swap).
#[derive(Default)]
struct Reflector {
    handled: u64,
}

impl Handled for Reflector {
    fn handled(&self) -> u64 {
        self.handled
    }
}

impl FrameHandler for Reflector {
    fn handle(&mut self, _now: Instant, port: PortId, frame: &mut [u8]) -> Verdict {
        if frame.len() < 42 {
            return Verdict::Drop;
        }
        self.handled += 1;
        swap_endpoints(frame);
        Verdict::Tx(port)
    }
}

fn swap_endpoints(frame: &mut [u8]) {
    let (a, b) = frame[..12].split_at_mut(6);
    a.swap_with_slice(b);
    let (a, b) = frame[26..34].split_at_mut(4);
    a.swap_with_slice(b);
    let (a, b) = frame[34..38].split_at_mut(2);
    a.swap_with_slice(b);
}

/// Forwards IPv4/UDP from port 0 (caller side) to the callee on port 1,
/// rewriting MACs, addresses and ports and recomputing both checksums.
struct Forwarder {
    out_src_mac: [u8; 6],
    out_dst_mac: [u8; 6],
    out_src: SocketAddrV4,
    out_dst: SocketAddrV4,
    forwarded: u64,
}

impl Handled for Forwarder {
    fn handled(&self) -> u64 {
        self.forwarded
    }
}

impl FrameHandler for Forwarder {
    fn handle(&mut self, _now: Instant, port: PortId, frame: &mut [u8]) -> Verdict {
        if port != PortId(0) {
            return Verdict::Drop;
        }
        if !rewrite(
            frame,
            self.out_src_mac,
            self.out_dst_mac,
            self.out_src,
            self.out_dst,
        ) {
            return Verdict::Drop;
        }
        self.forwarded += 1;
        Verdict::Tx(PortId(1))
    }
}

/// A two-leg relay by port arithmetic: caller → relay port `A + 2i` goes
/// to the callee's `G + 2i` from relay port `B + 2i`, and back.
struct Bridge {
    macs: Macs,
    rel0_mac: [u8; 6],
    rel1_mac: [u8; 6],
    handled: u64,
}

const BRIDGE_A: u16 = MEDIA_PORT;
const BRIDGE_B: u16 = MEDIA_PORT + 1000;
const GEN_PORT: u16 = 20000;

impl Handled for Bridge {
    fn handled(&self) -> u64 {
        self.handled
    }
}

impl FrameHandler for Bridge {
    fn handle(&mut self, _now: Instant, port: PortId, frame: &mut [u8]) -> Verdict {
        if frame.len() < 42 {
            return Verdict::Drop;
        }
        let dport = u16::from_be_bytes([frame[36], frame[37]]);
        let (base_in, out, src_mac, dst_mac, src_ip, dst_ip, base_out) = match port {
            PortId(0) => (
                BRIDGE_A,
                1,
                self.rel1_mac,
                self.macs.callee,
                RELAY_CALLEE_SIDE_IP,
                CALLEE_IP,
                BRIDGE_B,
            ),
            _ => (
                BRIDGE_B,
                0,
                self.rel0_mac,
                self.macs.caller,
                RELAY_CALLER_SIDE_IP,
                CALLER_IP,
                BRIDGE_A,
            ),
        };
        let Some(offset) = dport.checked_sub(base_in).filter(|o| *o < 1000) else {
            return Verdict::Drop;
        };
        let src = SocketAddrV4::new(src_ip, base_out + offset);
        let dst = SocketAddrV4::new(dst_ip, GEN_PORT + offset);
        if !rewrite(frame, src_mac, dst_mac, src, dst) {
            return Verdict::Drop;
        }
        self.handled += 1;
        Verdict::Tx(PortId(out))
    }
}

/// Rewrites an IPv4/UDP frame's MACs, addresses and ports, decrements the
/// TTL and recomputes both checksums. `false` when it is not IPv4/UDP.
fn rewrite(
    frame: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
) -> bool {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 || frame[23] != 17 {
        return false;
    }
    let udp_len = u16::from_be_bytes([frame[38], frame[39]]) as usize;
    if udp_len < 8 || 34 + udp_len > frame.len() {
        return false;
    }
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    frame[26..30].copy_from_slice(&src.ip().octets());
    frame[30..34].copy_from_slice(&dst.ip().octets());
    frame[22] = frame[22].saturating_sub(1);
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&frame[14..34], 0);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame[34..36].copy_from_slice(&src.port().to_be_bytes());
    frame[36..38].copy_from_slice(&dst.port().to_be_bytes());
    frame[40..42].copy_from_slice(&[0, 0]);
    let pseudo = pseudo_header(*src.ip(), *dst.ip(), udp_len as u16);
    let sum = match checksum(&frame[34..34 + udp_len], pseudo) {
        0 => 0xffff,
        s => s,
    };
    frame[40..42].copy_from_slice(&sum.to_be_bytes());
    true
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let words = |ip: Ipv4Addr| {
        let o = ip.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    words(src) + words(dst) + 17 + u32::from(udp_len)
}

/// RFC 1071 Internet checksum of `data`, starting from `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
