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

use dataplane::afxdp::{
    FrameHandler, MediaConfig, MediaCounter, MediaRedirect, Neighbours, PortId, Verdict, Worker,
    WorkerConfig, WorkerStats,
};
use tests::netns::{
    CALLEE_IF, CALLEE_IP, CALLER_IP, RELAY_CALLEE_IF, RELAY_CALLEE_SIDE_IP, RELAY_CALLER_IF,
    RELAY_CALLER_SIDE_IP, Topology,
};

const MEDIA_PORT: u16 = 30000;
const SIP_PORT: u16 = 5060;
const CALLEE_PORT: u16 = 40000;
const PACKETS: usize = 50;

#[test]
fn media_flows_caller_to_callee_through_af_xdp() {
    let Some(topo) = Topology::new() else { return };
    let relay_mac = topo.relay.mac(RELAY_CALLEE_IF);
    let callee_mac = topo.callee.mac(CALLEE_IF);
    let callee = topo
        .callee
        .run(|| UdpSocket::bind((CALLEE_IP, CALLEE_PORT)).expect("callee socket"));
    callee
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let relay = {
        let stop = stop.clone();
        topo.relay
            .spawn(move || relay_thread(relay_mac, callee_mac, &stop, &ready_tx))
    };
    let sip = match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(sip)) => sip,
        Ok(Err(why)) => {
            stop.store(true, Ordering::Relaxed);
            let _ = relay.join();
            if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some() {
                panic!("AF_XDP relay could not start: {why}");
            }
            eprintln!("SKIP: media_flows_caller_to_callee_through_af_xdp: {why}");
            return;
        }
        Err(_) => panic!("relay thread did not start"),
    };

    let sent = topo.caller.run(|| {
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
        PACKETS
    });

    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < sent && Instant::now() < deadline {
        if let Ok((n, from)) = callee.recv_from(&mut buf) {
            assert_eq!(
                from,
                SocketAddrV4::new(RELAY_CALLEE_SIDE_IP, MEDIA_PORT).into()
            );
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    // The SIP datagram went to the relay's kernel socket, not to AF_XDP.
    sip.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (n, from) = sip
        .recv_from(&mut buf)
        .expect("SIP reached the kernel socket");
    assert_eq!(&buf[..n], b"OPTIONS sip:relay SIP/2.0");
    assert_eq!(from, SocketAddrV4::new(CALLER_IP, 50000).into());

    stop.store(true, Ordering::Relaxed);
    let (stats, counters, forwarded) = relay.join().expect("relay thread");
    let expected: Vec<String> = (0..PACKETS).map(|i| format!("rtp-{i}")).collect();
    assert_eq!(got, expected, "callee received every datagram, in order");
    assert_eq!(forwarded, PACKETS as u64);
    assert!(
        stats.rx >= PACKETS as u64 && stats.tx >= PACKETS as u64,
        "{stats:?}"
    );
    assert_eq!(
        stats.completed, stats.tx,
        "every TX frame completed: {stats:?}"
    );
    assert_eq!(
        counters[MediaCounter::Redirected.key() as usize],
        PACKETS as u64
    );
    assert!(
        counters[MediaCounter::PassPort.key() as usize] >= 1,
        "SIP passed: {counters:?}"
    );
    assert!(
        counters[MediaCounter::PassNotIp.key() as usize] >= 1,
        "ARP passed: {counters:?}"
    );
}

type RelayResult = (WorkerStats, [u64; 7], u64);

/// Runs in the relay namespace: loads and attaches the program, learns the
/// callee's MAC from the neighbour table, then busy-polls until `stop`.
/// Sends `Ok(sip socket)` when ready, or `Err(why)` when AF_XDP is unusable.
fn relay_thread(
    relay_mac: [u8; 6],
    callee_mac_seen_by_callee: [u8; 6],
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<UdpSocket, String>>,
) -> RelayResult {
    let fail = |why: String| {
        let _ = ready.send(Err(why));
        (WorkerStats::default(), [0; 7], 0)
    };
    // Resolve the callee through the kernel first: ARP, as any host would.
    let probe = UdpSocket::bind((RELAY_CALLEE_SIDE_IP, 0)).unwrap();
    let mut callee_mac = None;
    for _ in 0..100 {
        probe.send_to(b"arp", (CALLEE_IP, 9)).unwrap();
        callee_mac = Neighbours::read().unwrap().mac(CALLEE_IP);
        if callee_mac.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(callee_mac) = callee_mac else {
        return fail("the callee never appeared in the relay's neighbour table".into());
    };
    if callee_mac != callee_mac_seen_by_callee {
        return fail(format!(
            "neighbour table says {callee_mac:02x?}, callee has {callee_mac_seen_by_callee:02x?}"
        ));
    }
    let sip = UdpSocket::bind((RELAY_CALLER_SIDE_IP, SIP_PORT)).unwrap();

    let config = MediaConfig {
        port_lo: MEDIA_PORT,
        port_hi: MEDIA_PORT + 99,
        flags: 0,
    };
    let mut prog = match MediaRedirect::load(config) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot load the XDP program: {e}")),
    };
    for iface in [RELAY_CALLER_IF, RELAY_CALLEE_IF] {
        if let Err(e) = prog.attach(iface) {
            return fail(format!("cannot attach to {iface}: {e}"));
        }
    }
    let forwarder = Forwarder {
        out_src_mac: relay_mac,
        out_dst_mac: callee_mac,
        out_src: SocketAddrV4::new(RELAY_CALLEE_SIDE_IP, MEDIA_PORT),
        out_dst: SocketAddrV4::new(CALLEE_IP, CALLEE_PORT),
        forwarded: 0,
    };
    let mut worker = match Worker::new(
        &WorkerConfig::new(&[RELAY_CALLER_IF, RELAY_CALLEE_IF], 0),
        forwarder,
    ) {
        Ok(w) => w,
        Err(e) => return fail(format!("cannot open AF_XDP sockets: {e}")),
    };
    worker.register(&mut prog).expect("XSKMAP update");
    let _ = ready.send(Ok(sip));
    worker.run(stop);
    let counters = prog.counters().expect("counters");
    (worker.stats(), counters, worker.handler().forwarded)
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

impl FrameHandler for Forwarder {
    fn handle(&mut self, _now: Instant, port: PortId, frame: &mut [u8]) -> Verdict {
        if port != PortId(0)
            || frame.len() < 42
            || frame[12..14] != [0x08, 0x00]
            || frame[14] != 0x45
        {
            return Verdict::Drop;
        }
        frame[0..6].copy_from_slice(&self.out_dst_mac);
        frame[6..12].copy_from_slice(&self.out_src_mac);
        frame[26..30].copy_from_slice(&self.out_src.ip().octets());
        frame[30..34].copy_from_slice(&self.out_dst.ip().octets());
        frame[22] -= 1; // TTL
        frame[24..26].copy_from_slice(&[0, 0]);
        let sum = checksum(&frame[14..34], 0);
        frame[24..26].copy_from_slice(&sum.to_be_bytes());
        frame[34..36].copy_from_slice(&self.out_src.port().to_be_bytes());
        frame[36..38].copy_from_slice(&self.out_dst.port().to_be_bytes());
        let udp_len = u16::from_be_bytes([frame[38], frame[39]]) as usize;
        if 34 + udp_len > frame.len() {
            return Verdict::Drop;
        }
        frame[40..42].copy_from_slice(&[0, 0]);
        let pseudo = pseudo_header(*self.out_src.ip(), *self.out_dst.ip(), udp_len as u16);
        let sum = match checksum(&frame[34..34 + udp_len], pseudo) {
            0 => 0xffff,
            s => s,
        };
        frame[40..42].copy_from_slice(&sum.to_be_bytes());
        self.forwarded += 1;
        Verdict::Tx(PortId(1))
    }
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
