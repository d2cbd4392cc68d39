//! The UDP backend, the embedded default: works without privileges.
//!
//! One worker thread per core, each owning a [`Relay`] shard (its slice of
//! the port range and of the session limit, see [`RelayConfig::shard`]),
//! the sockets of its ports, an epoll instance and its counters. Datagrams
//! move in batches of up to 32 with `recvmmsg`/`sendmmsg`. Sockets are
//! bound with `SO_REUSEPORT` so a restarted relay can take its ports over
//! while the old process drains.
//!
//! Control commands reach the worker that owns the call ([`shard_of`])
//! over a channel, read between batches: the packet path takes no lock.
//! A command also writes the worker's `eventfd`, which is in its epoll set,
//! so a worker blocked in `epoll_wait` (no media flowing) takes it at once;
//! the wait is still bounded by [`CONTROL_LATENCY`]. Media timeouts delete the
//! session, as rtpengine does.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::Running;
use crate::mirror::{self, MirrorConsumer, MirrorPacket, MirrorProducer};
use crate::mis_sink::{Meta, MisCalls, MisConfig, MisLink};
use crate::ng::NgServer;
use crate::relay::{
    Answer, Control, ControlError, Offer, Relay, RelayConfig, RelayCounters, RelayEvent, RxMeta,
    SessionFlags, SessionStats, Verdict, shard_of,
};

pub mod sys;

/// Longest a worker sleeps before looking at its control channel.
pub const CONTROL_LATENCY: Duration = Duration::from_millis(5);

/// The epoll token of a worker's [`sys::Waker`] (socket tokens are slot
/// indexes).
const WAKE_TOKEN: u64 = u64::MAX;

/// Most batches read from one ready socket before the next `epoll_wait`.
const DRAIN_BATCHES: usize = 8;

/// Configuration of the UDP backend.
#[derive(Debug, Clone, Default)]
pub struct UdpConfig {
    /// The whole relay; split into one shard per worker.
    pub relay: RelayConfig,
    /// Worker threads (one per core is the intent).
    pub workers: usize,
    /// Where copies of recorded sessions' packets go.
    pub mirror: MirrorConfig,
}

/// Mirror sinks for sessions being recorded (ng `start recording`).
#[derive(Debug, Clone, Default)]
pub struct MirrorConfig {
    /// Send each copy as HEP3 over UDP to this collector.
    pub hep: Option<SocketAddr>,
    /// HEP3 capture agent id.
    pub hep_capture_id: u32,
    /// Give each worker an in-process ring of this many octets; take the
    /// consumers with [`UdpBackend::take_mirror_consumers`].
    pub ring_bytes: Option<usize>,
    /// Send recorded sessions to this MIS recorder ([`crate::mis_sink`]).
    pub mis: Option<MisConfig>,
}

/// Counters of one worker beyond the relay core's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Datagrams the kernel took.
    pub tx_packets: u64,
    /// Forwarded datagrams the kernel refused (full buffer, no socket).
    pub tx_errors: u64,
    /// Ports that could not be bound.
    pub bind_errors: u64,
    /// Sessions deleted after a media timeout.
    pub timeout_deletes: u64,
    /// Sessions in the table now (a gauge).
    pub sessions: u64,
    /// Copies put in the mirror ring.
    pub mirror_ring_packets: u64,
    /// Copies dropped because the mirror ring was full.
    pub mirror_ring_drops: u64,
    /// HEP3 packets sent.
    pub hep_packets: u64,
    /// HEP3 packets not sent (encoding too long, socket refused).
    pub hep_errors: u64,
    /// AF_XDP: forwards dropped for want of a next hop (IPv6, a peer not
    /// in the neighbour table) or of a valid rewrite (TTL expired); also
    /// counted in `tx_errors`.
    pub unroutable: u64,
    /// RTP copies sent to the MIS recorder.
    pub mis_packets: u64,
    /// RTP copies to the MIS recorder the socket refused (full buffer).
    pub mis_drops: u64,
    /// MIS metadata frames dropped because the link's queue was full.
    pub mis_meta_drops: u64,
    /// MIS metadata connections up (a gauge, one per worker).
    pub mis_connected: u64,
}

impl IoCounters {
    fn merge(&mut self, o: &IoCounters) {
        self.tx_packets += o.tx_packets;
        self.tx_errors += o.tx_errors;
        self.bind_errors += o.bind_errors;
        self.timeout_deletes += o.timeout_deletes;
        self.sessions += o.sessions;
        self.mirror_ring_packets += o.mirror_ring_packets;
        self.mirror_ring_drops += o.mirror_ring_drops;
        self.hep_packets += o.hep_packets;
        self.hep_errors += o.hep_errors;
        self.unroutable += o.unroutable;
        self.mis_packets += o.mis_packets;
        self.mis_drops += o.mis_drops;
        self.mis_meta_drops += o.mis_meta_drops;
        self.mis_connected += o.mis_connected;
    }
}

/// A running UDP backend. Dropping it stops the workers.
pub type UdpBackend = Running<Udp>;

/// The `udp` kind of [`Running`] backend (it owns nothing besides its
/// workers).
#[derive(Debug)]
pub struct Udp;

impl Running<Udp> {
    /// Starts `config.workers` workers.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`] for a range too small to split, or an
    /// I/O error creating a worker's epoll instance (as `InvalidConfig`).
    pub fn start(config: UdpConfig) -> Result<Self, ControlError> {
        let count = config.workers.max(1);
        let mut senders = Vec::with_capacity(count);
        let mut wakers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        let mut consumers = Vec::new();
        for index in 0..count {
            let (relay, mirrors, consumer) = worker_shard(&config, index, count)?;
            let epoll = sys::Epoll::new()
                .map_err(|_| ControlError::InvalidConfig("cannot create an epoll instance"))?;
            let waker = Arc::new(
                sys::Waker::new()
                    .map_err(|_| ControlError::InvalidConfig("cannot create an eventfd"))?,
            );
            epoll
                .add(waker.fd(), WAKE_TOKEN)
                .map_err(|_| ControlError::InvalidConfig("cannot watch the eventfd"))?;
            let (tx, rx) = mpsc::channel();
            let mut worker = Worker::new(relay, epoll, rx);
            worker.waker = Some(waker.clone());
            worker.mirrors = mirrors;
            consumers.extend(consumer);
            let handle = thread::Builder::new()
                .name(format!("relay-{index}"))
                .spawn(move || worker.run())
                .map_err(|_| ControlError::InvalidConfig("cannot spawn a worker thread"))?;
            senders.push(tx);
            wakers.push(Some(waker));
            threads.push(handle);
        }
        Ok(Self {
            control: UdpControl {
                workers: senders,
                wakers,
            },
            threads,
            consumers,
            kind: Udp,
        })
    }
}

/// Worker `index` of `count`: its relay shard (payloads bounded by the
/// receive buffers) and its mirror sinks, with the ring's consumer end
/// (shared by the socket backends, `udp` and `uring`).
pub(crate) fn worker_shard(
    config: &UdpConfig,
    index: usize,
    count: usize,
) -> Result<(Relay, Mirrors, Option<MirrorConsumer>), ControlError> {
    let mut shard = config.relay.shard(index, count)?;
    shard.max_payload = shard.max_payload.min(sys::BUF_LEN - 1);
    let relay = Relay::new(shard)?;
    let (mirrors, consumer) = Mirrors::new(&config.mirror)?;
    Ok((relay, mirrors, consumer))
}

/// Routes control commands to the worker that owns each call.
#[derive(Debug, Clone)]
pub struct UdpControl {
    workers: Vec<mpsc::Sender<Cmd>>,
    /// Per worker, what wakes it from a blocking wait (the `udp` workers;
    /// the busy-polling ones need none).
    wakers: Vec<Option<Arc<sys::Waker>>>,
}

impl UdpControl {
    /// A handle routing to these workers' channels.
    pub(crate) fn new(workers: Vec<mpsc::Sender<Cmd>>) -> Self {
        let wakers = vec![None; workers.len()];
        Self { workers, wakers }
    }

    /// Queues `cmd` for worker `index` and wakes it.
    fn send(&self, index: usize, cmd: Cmd) -> bool {
        let sent = self.workers[index].send(cmd).is_ok();
        if let Some(Some(waker)) = self.wakers.get(index) {
            waker.wake();
        }
        sent
    }

    /// Asks every worker to stop.
    pub(crate) fn shutdown(&self) {
        for index in 0..self.workers.len() {
            self.send(index, Cmd::Shutdown);
        }
    }

    fn ask<T>(&self, call_id: &str, make: impl FnOnce(mpsc::Sender<T>) -> Cmd) -> Option<T> {
        let shard = shard_of(call_id, self.workers.len());
        let (tx, rx) = mpsc::channel();
        if !self.send(shard, make(tx)) {
            return None;
        }
        rx.recv().ok()
    }

    /// The sum of all workers' counters.
    pub fn counters(&self) -> (RelayCounters, IoCounters) {
        let mut relay = RelayCounters::default();
        let mut io = IoCounters::default();
        for index in 0..self.workers.len() {
            let (tx, rx) = mpsc::channel();
            if self.send(index, Cmd::Counters(tx))
                && let Ok((r, i)) = rx.recv()
            {
                relay.merge(&r);
                io.merge(&i);
            }
        }
        (relay, io)
    }
}

const GONE: ControlError = ControlError::InvalidConfig("relay worker stopped");

impl Control for UdpControl {
    fn offer(&mut self, now: Instant, offer: &Offer<'_>) -> Result<String, ControlError> {
        let owned = OwnedRequest::new(offer.call_id, offer.from_tag, "", offer.sdp, offer.flags);
        self.ask(offer.call_id, |reply| Cmd::Offer(now, owned, reply))
            .unwrap_or(Err(GONE))
    }

    fn answer(&mut self, now: Instant, answer: &Answer<'_>) -> Result<String, ControlError> {
        let owned = OwnedRequest::new(
            answer.call_id,
            answer.from_tag,
            answer.to_tag,
            answer.sdp,
            answer.flags,
        );
        self.ask(answer.call_id, |reply| Cmd::Answer(now, owned, reply))
            .unwrap_or(Err(GONE))
    }

    fn delete(&mut self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError> {
        self.ask(call_id, |reply| Cmd::Delete(now, call_id.to_owned(), reply))
            .unwrap_or(Err(GONE))
    }

    fn query(&mut self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError> {
        self.ask(call_id, |reply| Cmd::Query(now, call_id.to_owned(), reply))
            .unwrap_or(Err(GONE))
    }

    fn list(&mut self, limit: usize) -> Vec<String> {
        let mut all = Vec::new();
        for index in 0..self.workers.len() {
            let (tx, rx) = mpsc::channel();
            if self.send(index, Cmd::List(limit - all.len().min(limit), tx))
                && let Ok(mut calls) = rx.recv()
            {
                all.append(&mut calls);
            }
        }
        all.truncate(limit);
        all
    }

    fn set_recording(&mut self, call_id: &str, on: bool) -> Result<(), ControlError> {
        self.ask(call_id, |reply| {
            Cmd::Recording(call_id.to_owned(), on, reply)
        })
        .unwrap_or(Err(GONE))
    }
}

/// Serves the ng protocol on `socket` (a bound UDP socket) against
/// `control` until `stop` returns true; checks `stop` at least every 100 ms.
///
/// # Errors
///
/// Socket errors other than timeouts.
#[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
#[expect(clippy::disallowed_types, reason = "a driver owns its socket")]
pub fn serve_ng(
    socket: &std::net::UdpSocket,
    control: &mut dyn Control,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut ng = NgServer::new();
    let mut buf = vec![0u8; 65536];
    while !stop() {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(resp) = ng.handle_request(Instant::now(), control, &buf[..len]) {
            // A peer that went away must not stop the listener.
            let _ = socket.send_to(&resp, from);
        }
    }
    Ok(())
}

/// An offer or answer with owned strings, to cross the channel.
#[derive(Debug)]
pub(crate) struct OwnedRequest {
    call_id: String,
    from_tag: String,
    to_tag: String,
    sdp: String,
    flags: SessionFlags,
}

impl OwnedRequest {
    fn new(call_id: &str, from_tag: &str, to_tag: &str, sdp: &str, flags: SessionFlags) -> Self {
        Self {
            call_id: call_id.into(),
            from_tag: from_tag.into(),
            to_tag: to_tag.into(),
            sdp: sdp.into(),
            flags,
        }
    }
}

type Reply<T> = mpsc::Sender<Result<T, ControlError>>;

#[derive(Debug)]
pub(crate) enum Cmd {
    Offer(Instant, OwnedRequest, Reply<String>),
    Answer(Instant, OwnedRequest, Reply<String>),
    Delete(Instant, String, Reply<SessionStats>),
    Query(Instant, String, Reply<SessionStats>),
    List(usize, mpsc::Sender<Vec<String>>),
    Recording(String, bool, Reply<()>),
    Counters(mpsc::Sender<(RelayCounters, IoCounters)>),
    Shutdown,
}

/// Runs one control command against a worker's shard and replies (shared
/// by the backends' workers).
pub(crate) fn apply_command(
    relay: &mut Relay,
    io: &mut IoCounters,
    mirrors: &mut Mirrors,
    cmd: Cmd,
) {
    match cmd {
        Cmd::Offer(now, r, reply) => {
            let offer = Offer {
                call_id: &r.call_id,
                from_tag: &r.from_tag,
                sdp: &r.sdp,
                flags: r.flags,
            };
            let result = relay.offer(now, &offer);
            if result.is_ok() {
                mirrors.offer(io, &r);
            }
            let _ = reply.send(result);
        }
        Cmd::Answer(now, r, reply) => {
            let answer = Answer {
                call_id: &r.call_id,
                from_tag: &r.from_tag,
                to_tag: &r.to_tag,
                sdp: &r.sdp,
                flags: r.flags,
            };
            let result = relay.answer(now, &answer);
            if result.is_ok() {
                mirrors.answer(io, &r);
            }
            let _ = reply.send(result);
        }
        Cmd::Delete(now, id, reply) => {
            let result = relay.delete(now, &id);
            if result.is_ok() {
                mirrors.ended(io, &id);
            }
            let _ = reply.send(result);
        }
        Cmd::Query(now, id, reply) => {
            let _ = reply.send(relay.query(now, &id));
        }
        Cmd::List(limit, reply) => {
            let _ = reply.send(Relay::list(relay).take(limit).map(str::to_owned).collect());
        }
        Cmd::Recording(id, on, reply) => {
            let result = relay.set_recording(&id, on);
            if result.is_ok() {
                mirrors.recording(io, &id, on);
            }
            let _ = reply.send(result);
        }
        Cmd::Counters(reply) => {
            let io = IoCounters {
                sessions: relay.len() as u64,
                mis_connected: mirrors.mis_connected(),
                ..*io
            };
            let _ = reply.send((*relay.counters(), io));
        }
        Cmd::Shutdown => {}
    }
}

struct Sock {
    fd: OwnedFd,
    local: SocketAddr,
}

/// One worker: a relay shard, its sockets, its buffers.
struct Worker {
    relay: Relay,
    epoll: sys::Epoll,
    rx: mpsc::Receiver<Cmd>,
    socks: Vec<Option<Sock>>,
    free: Vec<usize>,
    by_local: HashMap<SocketAddr, usize, rustc_hash::FxBuildHasher>,
    ips: Vec<IpAddr>,
    bufs: Vec<[u8; sys::BUF_LEN]>,
    io: IoCounters,
    mirrors: Mirrors,
    waker: Option<Arc<sys::Waker>>,
}

/// A worker's mirror sinks (shared by the backends' workers).
#[derive(Default)]
pub(crate) struct Mirrors {
    ring: Option<MirrorProducer>,
    hep: Option<HepSink>,
    mis: Option<MisSink>,
}

/// The MIS sink of one worker: the calls it knows, its metadata link and
/// the media copies of the current batch.
struct MisSink {
    calls: MisCalls,
    link: MisLink,
    media: UdpBatch,
}

/// Numbers the workers' MIS session id spaces within this process.
static MIS_WORKERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The wall clock as the ingest protocol's timestamps.
#[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
fn wall_now() -> wire::Timestamp {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    wire::Timestamp(u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX))
}

/// The relay core deleted a session whose media timed out: count it and
/// tell the mirrors (the MIS recorder gets its stop). Shared by the
/// backends' workers.
pub(crate) fn timed_out(io: &mut IoCounters, mirrors: &mut Mirrors, call_id: &str) {
    io.timeout_deletes += 1;
    mirrors.ended(io, call_id);
}

impl Mirrors {
    /// The sinks `config` asks for, and the ring's consumer end.
    pub(crate) fn new(
        config: &MirrorConfig,
    ) -> Result<(Self, Option<MirrorConsumer>), ControlError> {
        let mut mirrors = Self::default();
        let mut consumer = None;
        if let Some(bytes) = config.ring_bytes {
            let (prod, cons) = mirror::ring(bytes);
            mirrors.ring = Some(prod);
            consumer = Some(cons);
        }
        if let Some(dst) = config.hep {
            mirrors.hep = Some(HepSink {
                batch: UdpBatch::new(dst)
                    .map_err(|_| ControlError::InvalidConfig("cannot open the HEP socket"))?,
                capture_id: config.hep_capture_id,
            });
        }
        if let Some(mis) = config.mis {
            use std::hash::{BuildHasher, Hasher};
            // Session ids: a random high part per process (std's randomly
            // keyed hasher), the worker in the low octet.
            let random = std::hash::RandomState::new().build_hasher().finish();
            let worker = MIS_WORKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xff;
            let media = UdpBatch::new(mis.media)
                .map_err(|_| ControlError::InvalidConfig("cannot open the MIS media socket"))?;
            let link = MisLink::start(mis)
                .map_err(|_| ControlError::InvalidConfig("cannot start the MIS link thread"))?;
            mirrors.mis = Some(MisSink {
                calls: MisCalls::new((random & !0xff) | worker, 0x100),
                link,
                media,
            });
        }
        Ok((mirrors, consumer))
    }

    /// Copies a forwarded datagram (received as `meta`) to the sinks;
    /// never waits.
    pub(crate) fn copy(
        &mut self,
        relay: &Relay,
        io: &mut IoCounters,
        meta: RxMeta,
        kind: wire::rtp::Kind,
        payload: &[u8],
    ) {
        let Some((call_id, leg)) = relay.mirror_info(meta.dst.port()) else {
            return;
        };
        let now = wall_now();
        let packet = MirrorPacket {
            call_id,
            leg,
            kind,
            src: meta.src,
            dst: meta.dst,
            secs: now.0 / 1_000_000_000,
            micros: (now.0 % 1_000_000_000 / 1000) as u32,
            payload,
        };
        if let Some(ring) = &mut self.ring {
            if ring.push(&packet) {
                io.mirror_ring_packets += 1;
            } else {
                io.mirror_ring_drops += 1;
            }
        }
        if let Some(hep) = &mut self.hep {
            if mirror::emit_hep3(&packet, hep.capture_id, &mut hep.batch.out) {
                hep.batch.ends.push(hep.batch.out.len());
            } else {
                io.hep_errors += 1;
            }
        }
        // The recorder takes RTP; RTCP copies are not sent to it.
        if let Some(mis) = &mut self.mis
            && kind == wire::rtp::Kind::Rtp
            && mis
                .calls
                .media(now, call_id, leg, payload, &mut mis.media.out)
        {
            mis.media.ends.push(mis.media.out.len());
        }
    }

    /// Sends the copies gathered since the last flush.
    pub(crate) fn flush(&mut self, io: &mut IoCounters) {
        if let Some(hep) = &mut self.hep {
            let (sent, failed) = hep.batch.flush();
            io.hep_packets += sent;
            io.hep_errors += failed;
        }
        if let Some(mis) = &mut self.mis {
            let (sent, failed) = mis.media.flush();
            io.mis_packets += sent;
            io.mis_drops += failed;
        }
    }

    /// An offer the relay accepted.
    pub(crate) fn offer(&mut self, io: &mut IoCounters, r: &OwnedRequest) {
        if let Some(mis) = &mut self.mis {
            let metas = mis.calls.offer(wall_now(), &r.call_id, &r.from_tag, &r.sdp);
            mis.send(io, metas);
        }
    }

    /// An answer the relay accepted.
    pub(crate) fn answer(&mut self, io: &mut IoCounters, r: &OwnedRequest) {
        if let Some(mis) = &mut self.mis {
            let metas = mis.calls.answer(wall_now(), &r.call_id, &r.to_tag, &r.sdp);
            mis.send(io, metas);
        }
    }

    /// Recording switched on or off.
    pub(crate) fn recording(&mut self, io: &mut IoCounters, call_id: &str, on: bool) {
        if let Some(mis) = &mut self.mis {
            let meta = mis.calls.recording(wall_now(), call_id, on);
            mis.send(io, meta);
        }
    }

    /// The relay deleted a session.
    pub(crate) fn ended(&mut self, io: &mut IoCounters, call_id: &str) {
        if let Some(mis) = &mut self.mis {
            // Copies of this batch go out before the Stop is queued.
            let (sent, failed) = mis.media.flush();
            io.mis_packets += sent;
            io.mis_drops += failed;
            let meta = mis.calls.ended(wall_now(), call_id);
            mis.send(io, meta);
        }
    }

    /// MIS metadata connections up (0 or 1).
    pub(crate) fn mis_connected(&self) -> u64 {
        self.mis.as_ref().map_or(0, |m| {
            m.link
                .stats()
                .connected
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }
}

impl MisSink {
    fn send(&mut self, io: &mut IoCounters, metas: impl IntoIterator<Item = Meta>) {
        for m in metas {
            if !self.link.send(m) {
                io.mis_meta_drops += 1;
            }
        }
    }
}

impl Drop for MisSink {
    /// A worker that stops ends its recordings: the recorder renders them
    /// now rather than after its idle timeout.
    fn drop(&mut self) {
        let _ = self.media.flush();
        for m in self.calls.stop_all(wall_now()) {
            self.link.send(m);
        }
    }
}

/// HEP3 packets of one batch, sent together.
struct HepSink {
    batch: UdpBatch,
    capture_id: u32,
}

/// Datagrams to one destination gathered during a receive batch and sent
/// together with one non-blocking `sendmmsg`.
struct UdpBatch {
    fd: OwnedFd,
    dst: SocketAddr,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl UdpBatch {
    fn new(dst: SocketAddr) -> io::Result<Self> {
        let any = match dst {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        Ok(Self {
            fd: sys::bind_udp(any)?,
            dst,
            out: Vec::new(),
            ends: Vec::new(),
        })
    }

    /// Sends what was gathered: (sent, refused).
    fn flush(&mut self) -> (u64, u64) {
        if self.ends.is_empty() {
            return (0, 0);
        }
        let mut start = 0;
        let msgs: Vec<(&[u8], SocketAddr)> = self
            .ends
            .iter()
            .map(|&end| {
                let m = (&self.out[start..end], self.dst);
                start = end;
                m
            })
            .collect();
        let sent = sys::send_batch(self.fd.as_fd(), &msgs).unwrap_or(0);
        let failed = msgs.len() - sent;
        self.out.clear();
        self.ends.clear();
        (sent as u64, failed as u64)
    }
}

impl Worker {
    fn new(relay: Relay, epoll: sys::Epoll, rx: mpsc::Receiver<Cmd>) -> Self {
        let ips = [relay.config().media_v4, relay.config().media_v6]
            .into_iter()
            .flatten()
            .collect();
        Self {
            relay,
            epoll,
            rx,
            socks: Vec::new(),
            free: Vec::new(),
            by_local: HashMap::default(),
            ips,
            bufs: vec![[0; sys::BUF_LEN]; sys::MAX_BATCH],
            io: IoCounters::default(),
            mirrors: Mirrors::default(),
            waker: None,
        }
    }

    #[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
    fn run(&mut self) {
        let mut ready = Vec::new();
        let mut got = Vec::new();
        let mut out: Vec<(usize, usize, SocketAddr, usize)> = Vec::new();
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(Cmd::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            let wait = self
                .relay
                .poll_timeout()
                .map_or(CONTROL_LATENCY, |t| t.saturating_duration_since(now))
                .min(CONTROL_LATENCY);
            if self
                .epoll
                .wait(&mut ready, wait.as_millis() as i32)
                .is_err()
            {
                continue;
            }
            let now = Instant::now();
            for &token in &ready {
                if token == WAKE_TOKEN {
                    // A command is queued: read at the top of the loop.
                    if let Some(waker) = &self.waker {
                        waker.drain();
                    }
                    continue;
                }
                let Some(Some(sock)) = self.socks.get(token as usize) else {
                    continue;
                };
                let local = sock.local;
                // Drain a busy socket for a few batches before the next
                // epoll_wait, but let other sockets have their turn.
                for _ in 0..DRAIN_BATCHES {
                    let Some(Some(sock)) = self.socks.get(token as usize) else {
                        break;
                    };
                    if sys::recv_batch(sock.fd.as_fd(), &mut self.bufs, &mut got).is_err() {
                        break;
                    }
                    out.clear();
                    for (i, &(len, src)) in got.iter().enumerate() {
                        let meta = RxMeta { src, dst: local };
                        let pkt = &mut self.bufs[i][..len];
                        if let Verdict::Forward(f) = self.relay.handle_datagram(now, meta, pkt) {
                            match self.by_local.get(&f.src) {
                                Some(&s) => out.push((s, i, f.dst, len)),
                                None => self.io.tx_errors += 1,
                            }
                            if f.mirror {
                                let payload = &self.bufs[i][..len];
                                self.mirrors
                                    .copy(&self.relay, &mut self.io, meta, f.kind, payload);
                            }
                        }
                    }
                    self.flush(&mut out);
                    self.mirrors.flush(&mut self.io);
                    if got.len() < sys::MAX_BATCH {
                        break;
                    }
                }
            }
            self.relay.handle_timeout(now);
            self.drain_events();
        }
    }

    /// Sends the batch, one `sendmmsg` per source socket.
    fn flush(&mut self, out: &mut [(usize, usize, SocketAddr, usize)]) {
        out.sort_unstable_by_key(|o| o.0);
        for group in out.chunk_by(|a, b| a.0 == b.0) {
            let Some(Some(sock)) = self.socks.get(group[0].0) else {
                continue;
            };
            let msgs: Vec<(&[u8], SocketAddr)> = group
                .iter()
                .map(|&(_, i, dst, len)| (&self.bufs[i][..len], dst))
                .collect();
            let sent = sys::send_batch(sock.fd.as_fd(), &msgs).unwrap_or(0);
            self.io.tx_packets += sent as u64;
            self.io.tx_errors += (msgs.len() - sent) as u64;
        }
    }

    fn command(&mut self, cmd: Cmd) {
        apply_command(&mut self.relay, &mut self.io, &mut self.mirrors, cmd);
        // Open the new sessions' ports before replying to the next command.
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            match event {
                RelayEvent::PortsOpened { rtp } => {
                    for local in session_sockets(&self.ips, rtp) {
                        self.open(local);
                    }
                }
                RelayEvent::PortsClosed { rtp } => {
                    for local in session_sockets(&self.ips, rtp) {
                        self.close(local);
                    }
                }
                // The core deleted it (its ports closed above); the
                // recorder hears the stop.
                RelayEvent::MediaTimeout { call_id } => {
                    timed_out(&mut self.io, &mut self.mirrors, &call_id);
                }
                RelayEvent::Latched { .. } => {}
            }
        }
    }

    fn open(&mut self, local: SocketAddr) {
        let Ok(fd) = sys::bind_udp(local) else {
            self.io.bind_errors += 1;
            return;
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.socks.push(None);
            self.socks.len() - 1
        });
        if self.epoll.add(fd.as_fd(), slot as u64).is_err() {
            self.io.bind_errors += 1;
            self.free.push(slot);
            return;
        }
        self.socks[slot] = Some(Sock { fd, local });
        self.by_local.insert(local, slot);
    }

    fn close(&mut self, local: SocketAddr) {
        if let Some(slot) = self.by_local.remove(&local)
            && let Some(sock) = self.socks[slot].take()
        {
            let _ = self.epoll.delete(sock.fd.as_fd());
            self.free.push(slot);
        }
    }
}

/// The local sockets of a session's leg: its RTP port and RTCP port + 1 on
/// every media address (shared by the `udp` and `uring` backends).
pub(crate) fn session_sockets(ips: &[IpAddr], rtp: u16) -> Vec<SocketAddr> {
    ips.iter()
        .flat_map(|&ip| [rtp, rtp.wrapping_add(1)].map(|port| SocketAddr::new(ip, port)))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::conformance;

    fn start(workers: usize, base: u16) -> UdpBackend {
        UdpBackend::start(UdpConfig {
            relay: RelayConfig {
                media_v4: Some("127.0.0.1".parse().unwrap()),
                media_v6: None,
                ports: base..=base + 399,
                max_sessions: 100,
                ..RelayConfig::default()
            },
            workers,
            mirror: MirrorConfig::default(),
        })
        .unwrap()
    }

    #[test]
    fn conformance_one_worker() {
        conformance::run_all(&start(1, 41000), &conformance::Loopback);
    }

    #[test]
    #[expect(clippy::disallowed_types, reason = "probing for IPv6 loopback")]
    fn conformance_ipv6() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("SKIP: conformance_ipv6: no IPv6 loopback (::1) on this host");
            return;
        }
        let backend = UdpBackend::start(UdpConfig {
            relay: RelayConfig {
                media_v4: Some("127.0.0.1".parse().unwrap()),
                media_v6: Some("::1".parse().unwrap()),
                ports: 45000..=45399,
                max_sessions: 100,
                ..RelayConfig::default()
            },
            workers: 2,
            mirror: MirrorConfig::default(),
        })
        .unwrap();
        conformance::run_all(&backend, &conformance::LoopbackV6);
    }

    /// A recorded call's packets reach the HEP3 collector and the
    /// in-process ring; a ring too small drops copies, never forwarding.
    #[test]
    fn recording_mirrors_to_hep_and_ring() {
        recording_scenario(47000, &|config| {
            let mut b = UdpBackend::start(config).ok()?;
            let rings = b.take_mirror_consumers();
            let control = b.control();
            Some((Box::new(b), rings, control))
        });
    }

    /// What a backend under the recording scenario provides.
    pub(crate) type Started = (
        Box<dyn crate::backend::Backend>,
        Vec<MirrorConsumer>,
        UdpControl,
    );

    /// The recording scenario for any backend built from a [`UdpConfig`]
    /// (`start` returns `None` to skip where the backend is unavailable).
    #[expect(clippy::disallowed_types, reason = "a real HEP collector socket")]
    pub(crate) fn recording_scenario(base: u16, start: &dyn Fn(UdpConfig) -> Option<Started>) {
        use crate::backend::conformance::{Loopback, drain, exchange, ng_request, setup};
        use wire::bencode::Value;
        let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        collector
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        for (ring_bytes, workers) in [(1 << 20, 2), (512, 1)] {
            let config = UdpConfig {
                relay: RelayConfig {
                    media_v4: Some("127.0.0.1".parse().unwrap()),
                    media_v6: None,
                    ports: base..=base + 399,
                    max_sessions: 100,
                    ..RelayConfig::default()
                },
                workers,
                mirror: MirrorConfig {
                    hep: Some(collector.local_addr().unwrap()),
                    hep_capture_id: 77,
                    ring_bytes: Some(ring_bytes),
                    mis: None,
                },
            };
            let Some((backend, mut rings, control)) = start(config) else {
                eprintln!("SKIP: recording scenario: backend unavailable");
                return;
            };
            let backend = &*backend;
            assert_eq!(rings.len(), workers);
            let call = setup(backend, &Loopback, "rec-1");
            exchange(&call, 3);
            assert_eq!(drain(&call.callee).len(), 3);
            assert!(drain(&collector).is_empty(), "not recorded yet");
            let resp = ng_request(
                backend,
                vec![
                    ("command", Value::str("start recording")),
                    ("call-id", Value::str("rec-1")),
                ],
            );
            assert_eq!(resp, b"d6:result2:oke");
            exchange(&call, 10);
            assert_eq!(drain(&call.callee).len(), 10, "forwarding unaffected");
            assert_eq!(drain(&call.caller).len(), 13);
            let hep = drain(&collector);
            assert_eq!(hep.len(), 20, "10 each way as HEP3");
            for (pkt, _) in &hep {
                assert_eq!(&pkt[..4], b"HEP3");
                assert!(pkt.windows(5).any(|w| w == b"rec-1"), "correlation id");
            }
            let mut copies = 0;
            for ring in &mut rings {
                while let Some(p) = ring.pop() {
                    assert_eq!(p.call_id, "rec-1");
                    assert_eq!(p.payload.len(), 172);
                    copies += 1;
                }
            }
            let (_, io) = control.counters();
            assert_eq!(io.hep_packets, 20);
            assert_eq!(copies, io.mirror_ring_packets);
            assert_eq!(io.mirror_ring_packets + io.mirror_ring_drops, 20);
            if ring_bytes == 512 {
                assert!(io.mirror_ring_drops > 0, "a small ring drops: {io:?}");
            } else {
                assert_eq!(io.mirror_ring_drops, 0);
            }
        }
    }

    #[test]
    fn conformance_two_workers() {
        conformance::run_all(&start(2, 42000), &conformance::Loopback);
    }

    /// A measurement, not a check of speed (run with `--release --
    /// --ignored --nocapture`).
    #[test]
    #[ignore = "measurement; run in release"]
    fn measure_loopback_pps() {
        conformance::measure_loopback(&start(1, 44000), "udp");
    }
}
