//! The relay core on AF_XDP: [`AfXdpBackend`] runs one busy-polling
//! [`Worker`] per rx queue, each owning a relay shard ([`RelayHandler`]),
//! its AF_XDP sockets (one per interface, one shared UMEM) and its
//! counters. `media_redirect` is loaded once per interface with the relay's
//! port range, so only media reaches the workers; ARP, SIP and everything
//! else stay with the kernel. Control commands reach a worker through the
//! same channel and command set as the `udp` and `uring` backends
//! ([`UdpControl`]); no ports are bound (the XDP program steers the whole
//! range), so `PortsOpened`/`PortsClosed` need no work here.
//!
//! Forwarding: the relay core decides (`Forward { src, dst }`), the next
//! hop's MAC and the egress interface come from the kernel's neighbour
//! table (refreshed at most every 100 ms when a destination is missing),
//! and [`crate::frame::rewrite`] rewrites the frame in place (MACs, IPs,
//! ports, TTL, RFC 1624 checksums) before it is queued on that interface's
//! TX ring. Limits: IPv4 only; the peer must be on a directly attached
//! subnet and already resolved by the kernel (any traffic to it, e.g. SIP,
//! does that); until then its packets are dropped and counted as TX errors.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::{
    AfXdpError, FrameHandler, MediaConfig, MediaRedirect, Neighbours, PortId, Verdict, Worker,
    WorkerConfig,
};
use crate::backend::Running;
use crate::frame::{self, Macs};
use crate::relay::{self, Relay, RelayConfig, RelayEvent};
use crate::udp::{Cmd, IoCounters, MirrorConfig, Mirrors, UdpControl, apply_command, timed_out};

/// Configuration of the AF_XDP backend.
#[derive(Debug, Clone, Default)]
pub struct AfXdpConfig {
    /// The whole relay; split into one shard per worker.
    pub relay: RelayConfig,
    /// Interfaces media arrives on and leaves by (all in the calling
    /// thread's network namespace).
    pub interfaces: Vec<String>,
    /// Workers; worker `q` serves rx queue `q` of every interface.
    pub workers: usize,
    /// Where copies of recorded sessions' packets go.
    pub mirror: MirrorConfig,
}

/// A running AF_XDP backend. Dropping it stops the workers, then detaches
/// the XDP programs. Its workers inherit the calling thread's network
/// namespace and CPU affinity.
pub type AfXdpBackend = Running<XdpPrograms>;

/// What the `afxdp` kind of [`Running`] backend owns besides its workers:
/// the `media_redirect` instance attached to each interface.
pub struct XdpPrograms(Arc<Mutex<Vec<MediaRedirect>>>);

impl std::fmt::Debug for XdpPrograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XdpPrograms")
    }
}

/// How long a worker may take to open its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Running<XdpPrograms> {
    /// Loads and attaches `media_redirect` on every interface, then starts
    /// the workers and waits until each has registered its sockets.
    ///
    /// # Errors
    /// [`AfXdpError`]: without CAP_BPF / CAP_NET_ADMIN, a missing
    /// interface or queue, or an unusable relay configuration
    /// ([`AfXdpError::Worker`]).
    pub fn start(config: AfXdpConfig) -> Result<Self, AfXdpError> {
        let count = config.workers.max(1);
        let media = MediaConfig {
            port_lo: *config.relay.ports.start(),
            port_hi: *config.relay.ports.end(),
            flags: 0,
        };
        let mut programs = Vec::with_capacity(config.interfaces.len());
        for iface in &config.interfaces {
            let mut prog = MediaRedirect::load(media)?;
            prog.attach(iface)?;
            programs.push(prog);
        }
        let mut backend = Running::new(XdpPrograms(Arc::new(Mutex::new(programs))));
        let mut senders = Vec::with_capacity(count);
        for queue in 0..count {
            let shard = config
                .relay
                .shard(queue, count)
                .map_err(|e| AfXdpError::Worker(e.to_string()))?;
            let relay = Relay::new(shard).map_err(|e| AfXdpError::Worker(e.to_string()))?;
            let (mirrors, consumer) =
                Mirrors::new(&config.mirror).map_err(|e| AfXdpError::Worker(e.to_string()))?;
            backend.consumers.extend(consumer);
            let (tx, rx) = mpsc::channel();
            let (ready_tx, ready_rx) = mpsc::channel();
            let interfaces = config.interfaces.clone();
            let programs = backend.kind.0.clone();
            let handle = thread::Builder::new()
                .name(format!("relay-xdp-{queue}"))
                .spawn(move || {
                    let made = open_worker(&interfaces, queue as u32, relay, mirrors, &programs);
                    match made {
                        Ok(worker) => {
                            let _ = ready_tx.send(Ok(()));
                            run(worker, &rx);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| AfXdpError::Worker(format!("cannot spawn a worker: {e}")))?;
            backend.threads.push(handle);
            senders.push(tx);
            backend.control = UdpControl::new(senders.clone());
            match ready_rx.recv_timeout(START_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(AfXdpError::Worker("a worker did not start".into())),
            }
        }
        Ok(backend)
    }
}

/// The link-layer address of `ifname` in the calling thread's network
/// namespace.
///
/// # Errors
/// [`AfXdpError::Interface`] when there is no such interface.
pub fn interface_mac(ifname: &str) -> Result<[u8; 6], AfXdpError> {
    super::sys::hardware_address(ifname).map_err(|_| AfXdpError::Interface(ifname.to_owned()))
}

/// One relay shard as an AF_XDP [`FrameHandler`]: parse the frame, let the
/// core decide, find the next hop, rewrite in place.
pub struct RelayHandler {
    pub(super) relay: Relay,
    /// Interface names and MACs, indexed by [`PortId`].
    ports: Vec<(String, [u8; 6])>,
    next_hops: HashMap<Ipv4Addr, (PortId, [u8; 6]), rustc_hash::FxBuildHasher>,
    pub(super) refreshed: Option<Instant>,
    mirrors: Mirrors,
    io: IoCounters,
    /// Forwards dropped for want of a next hop (IPv6, unresolved, off-link)
    /// or a rewrite (TTL expired).
    unroutable: u64,
}

/// Shortest interval between two reads of the neighbour table.
const NEIGHBOUR_REFRESH: Duration = Duration::from_millis(100);

impl RelayHandler {
    /// A handler for `relay` on `interfaces` (index = [`PortId`]).
    ///
    /// # Errors
    /// [`AfXdpError::Interface`] for an interface that does not exist.
    pub fn new(relay: Relay, interfaces: &[String]) -> Result<RelayHandler, AfXdpError> {
        let ports = interfaces
            .iter()
            .map(|name| Ok((name.clone(), interface_mac(name)?)))
            .collect::<Result<_, AfXdpError>>()?;
        Ok(RelayHandler {
            relay,
            ports,
            next_hops: HashMap::default(),
            refreshed: None,
            mirrors: Mirrors::default(),
            io: IoCounters::default(),
            unroutable: 0,
        })
    }

    /// The relay shard.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Forwards dropped because no next hop or rewrite was possible.
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// Sets the next hop for `ip` (tests: the neighbour table is the
    /// kernel's).
    #[cfg(test)]
    pub(crate) fn set_next_hop(&mut self, ip: Ipv4Addr, port: PortId, mac: [u8; 6]) {
        self.next_hops.insert(ip, (port, mac));
    }

    /// Runs a control command and acts on the events it raised.
    fn command(&mut self, cmd: Cmd) {
        apply_command(&mut self.relay, &mut self.io, &mut self.mirrors, cmd);
        self.drain_events();
    }

    /// Acts on the core's events: ports need no work (the XDP program
    /// steers the whole range); a media timeout was a delete.
    fn drain_events(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            if let RelayEvent::MediaTimeout { call_id } = event {
                timed_out(&mut self.io, &mut self.mirrors, &call_id);
            }
        }
    }

    /// The egress port and MAC for `dst`, from the neighbour table.
    fn next_hop(&mut self, now: Instant, dst: Ipv4Addr) -> Option<(PortId, [u8; 6])> {
        if let Some(hop) = self.next_hops.get(&dst) {
            return Some(*hop);
        }
        if self
            .refreshed
            .is_some_and(|at| now.saturating_duration_since(at) < NEIGHBOUR_REFRESH)
        {
            return None;
        }
        self.refreshed = Some(now);
        let table = Neighbours::read().ok()?;
        self.next_hops.clear();
        for n in table.entries() {
            if let Some(i) = self.ports.iter().position(|(name, _)| *name == n.interface) {
                self.next_hops.insert(n.ip, (PortId(i), n.mac));
            }
        }
        self.next_hops.get(&dst).copied()
    }
}

impl FrameHandler for RelayHandler {
    fn handle(&mut self, now: Instant, _port: PortId, frame: &mut [u8]) -> Verdict {
        let Ok(udp) = frame::parse(frame) else {
            // Not a UDP datagram the program should have sent us.
            return Verdict::Pass;
        };
        let payload = udp.payload.clone();
        let relay::Verdict::Forward(fwd) =
            self.relay
                .handle_datagram(now, udp.meta, &mut frame[payload.clone()])
        else {
            return Verdict::Drop;
        };
        let hop = match fwd.dst.ip() {
            IpAddr::V4(dst) => self.next_hop(now, dst),
            IpAddr::V6(_) => None,
        };
        let Some((out, dst_mac)) = hop else {
            self.unroutable += 1;
            return Verdict::Drop;
        };
        if fwd.mirror {
            self.mirrors.copy(
                &self.relay,
                &mut self.io,
                udp.meta,
                fwd.kind,
                &frame[payload],
            );
        }
        let macs = Macs {
            src: self.ports[out.0].1,
            dst: dst_mac,
        };
        match frame::rewrite(frame, &fwd, &macs) {
            Ok(()) => Verdict::Tx(out),
            Err(_) => {
                self.unroutable += 1;
                Verdict::Drop
            }
        }
    }
}

/// Builds a worker's handler and sockets on its own thread and registers
/// the sockets with each interface's program.
fn open_worker(
    interfaces: &[String],
    queue: u32,
    relay: Relay,
    mirrors: Mirrors,
    programs: &Mutex<Vec<MediaRedirect>>,
) -> Result<Worker<RelayHandler>, AfXdpError> {
    let mut handler = RelayHandler::new(relay, interfaces)?;
    handler.mirrors = mirrors;
    let names: Vec<&str> = interfaces.iter().map(String::as_str).collect();
    let worker = Worker::new(&WorkerConfig::new(&names, queue), handler)?;
    let mut programs = programs
        .lock()
        .map_err(|_| AfXdpError::Worker("program registry poisoned".into()))?;
    for (i, prog) in programs.iter_mut().enumerate() {
        worker.register(PortId(i), prog)?;
    }
    Ok(worker)
}

/// The worker loop: busy-poll the queues; between rounds run control
/// commands and due timers. On shutdown, drain pending transmissions
/// (bounded).
#[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
fn run(mut worker: Worker<RelayHandler>, rx: &mpsc::Receiver<Cmd>) {
    loop {
        let now = Instant::now();
        worker.poll(now);
        let stats = worker.stats();
        let h = worker.handler_mut();
        h.io.tx_packets = stats.tx;
        h.io.tx_errors = stats.tx_ring_full + h.unroutable;
        h.io.unroutable = h.unroutable;
        h.mirrors.flush(&mut h.io);
        loop {
            match rx.try_recv() {
                Ok(Cmd::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                    for _ in 0..1000 {
                        if worker.frames().tx == 0 {
                            break;
                        }
                        worker.poll(Instant::now());
                    }
                    return;
                }
                Ok(cmd) => h.command(cmd),
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if h.relay.poll_timeout().is_some_and(|at| at <= now) {
            h.relay.handle_timeout(now);
            h.drain_events();
        }
    }
}
