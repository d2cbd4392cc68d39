//! The AF_XDP backend: our `media_redirect` XDP program (loaded with `aya`)
//! steers UDP datagrams for the media port range into `xdpilone` AF_XDP
//! sockets; a busy-polling [`Worker`] per rx queue hands each frame to a
//! [`FrameHandler`] (the relay core, through a thin adapter) and transmits,
//! drops or counts it as the handler decides. Everything else (ARP, ICMP,
//! SIP, SSH, UDP outside the range) stays with the kernel.
//!
//! ```text
//!  NIC queue q ──XDP media_redirect──┬─ media UDP ──> XSKMAP[q] ──> Worker(q) ──> FrameHandler
//!                                    └─ everything else ──> kernel stack        │ Verdict::Tx(port)
//!                                                                                └──> TX ring of port
//! ```
//!
//! One [`Worker`] owns one queue on each of its ports (one AF_XDP socket per
//! port, all sharing one UMEM so a frame received on one interface is sent
//! on another without a copy), its [`FramePool`] and its
//! counters: no locks on the packet path. Copy mode is used (veth and most
//! virtual NICs refuse zero-copy).
//!
//! Driving contract: call [`Worker::poll`] in a loop with the current time;
//! it reaps TX completions, refills the fill rings, reads one batch per
//! port, calls the handler once per frame and kicks the TX rings. A
//! dedicated media core should busy-poll ([`Worker::run`]); the blocking
//! alternative burns more of a core on sleep/wake (design.md).
//!
//! ```no_run
//! use dataplane::afxdp::{FrameHandler, MediaConfig, MediaRedirect, PortId, Verdict, Worker, WorkerConfig};
//! use std::time::Instant;
//!
//! struct Reflect;
//! impl FrameHandler for Reflect {
//!     fn handle(&mut self, _now: Instant, _port: PortId, _frame: &mut [u8]) -> Verdict {
//!         Verdict::Tx(PortId(0))
//!     }
//! }
//!
//! let mut prog = MediaRedirect::load(MediaConfig { port_lo: 30000, port_hi: 39999, flags: 0 })?;
//! prog.attach("eth0")?;
//! let mut worker = Worker::new(&WorkerConfig::new(&["eth0"], 0), Reflect)?;
//! worker.register(PortId(0), &mut prog)?;
//! loop {
//!     worker.poll(Instant::now());
//! }
//! # Ok::<(), dataplane::afxdp::AfXdpError>(())
//! ```

mod ceiling;
mod neigh;
mod relay;
#[allow(
    unsafe_code,
    reason = "the AF_XDP backend's unsafe edge: UMEM memory and sockets"
)]
mod sys;

use std::time::Instant;

use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray, XskMap};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use xdp_common::{COUNTERS_MAP, MEDIA_CONFIG_MAP, MEDIA_REDIRECT_PROGRAM, XSKS_MAP};

pub use ceiling::{MEDIA_REFLECT_OBJECT, MediaReflect};
pub use neigh::{Neighbour, Neighbours};
pub use relay::{AfXdpBackend, AfXdpConfig, RelayHandler, XdpPrograms, interface_mac};
pub use sys::{FRAME_SIZE, FramePool, RxFrame};
pub use xdp_common::{MediaConfig, MediaCounter};

/// The compiled `xdp-progs/media_redirect.o`, embedded so the binary needs
/// no C toolchain (rebuilt and compared by `xdp-progs/check.sh` in CI).
pub static MEDIA_REDIRECT_OBJECT: &[u8] =
    aya::include_bytes_aligned!("../../../xdp-progs/media_redirect.o");

/// Failures of the AF_XDP backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AfXdpError {
    /// The BPF object could not be parsed or its maps created.
    #[error("loading the XDP object: {0}")]
    Object(#[from] aya::EbpfError),
    /// The program was rejected (the message carries the verifier log) or
    /// could not be attached or run.
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// A BPF map operation failed.
    #[error("XDP map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The object lacks a program or map this backend needs (stale object).
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    /// No interface of that name in this network namespace.
    #[error("no network interface {0:?}")]
    Interface(String),
    /// Mapping or registering the UMEM failed (errno).
    #[error("UMEM set-up failed: {}", std::io::Error::from_raw_os_error(*.0))]
    Umem(i32),
    /// An AF_XDP socket step failed (errno).
    #[error("AF_XDP socket ({what}): {}", std::io::Error::from_raw_os_error(*errno))]
    Socket {
        /// The step: socket, rings, bind…
        what: &'static str,
        /// The errno.
        errno: i32,
    },
    /// More queues than the program's `XSKMAP` has entries.
    #[error("rx queue {0} is beyond the XSKMAP ({max} entries)", max = xdp_common::MAX_QUEUES)]
    QueueOutOfRange(u32),
    /// A relay worker could not be configured or started.
    #[error("relay worker: {0}")]
    Worker(String),
}

/// An XDP action, as the kernel numbers them (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum XdpAction {
    /// `XDP_ABORTED` (0).
    Aborted,
    /// `XDP_DROP` (1).
    Drop,
    /// `XDP_PASS` (2): to the kernel stack.
    Pass,
    /// `XDP_TX` (3).
    Tx,
    /// `XDP_REDIRECT` (4): here, to an AF_XDP socket.
    Redirect,
    /// Any other return value.
    Other(u32),
}

impl From<u32> for XdpAction {
    fn from(v: u32) -> Self {
        match v {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => XdpAction::Other(other),
        }
    }
}

/// The loaded `media_redirect` program and its maps. Dropping it detaches
/// the program from every interface it was attached to. Load one per
/// interface: its `XSKMAP` is keyed by rx queue (see [`Worker::register`]).
pub struct MediaRedirect {
    ebpf: Ebpf,
}

impl MediaRedirect {
    /// Loads the embedded object, runs the verifier and writes `config` into
    /// the `media_config` map.
    ///
    /// # Errors
    /// [`AfXdpError::Object`] / [`AfXdpError::Program`] (with the verifier
    /// log) without CAP_BPF or on a kernel that rejects the program.
    pub fn load(config: MediaConfig) -> Result<MediaRedirect, AfXdpError> {
        let mut ebpf = Ebpf::load(MEDIA_REDIRECT_OBJECT)?;
        program(&mut ebpf)?.load()?;
        let mut this = MediaRedirect { ebpf };
        this.set_config(config)?;
        Ok(this)
    }

    /// Replaces the media port range.
    ///
    /// # Errors
    /// [`AfXdpError::Map`] when the map update fails.
    pub fn set_config(&mut self, config: MediaConfig) -> Result<(), AfXdpError> {
        let map = self
            .ebpf
            .map_mut(MEDIA_CONFIG_MAP)
            .ok_or(AfXdpError::Missing(MEDIA_CONFIG_MAP))?;
        let mut array: Array<&mut MapData, [u8; MediaConfig::SIZE]> = Array::try_from(map)?;
        array.set(0, config.to_bytes(), 0)?;
        Ok(())
    }

    /// Attaches the program to `ifname` in native (driver) mode, falling
    /// back to generic (skb) mode where the driver has no XDP support.
    ///
    /// # Errors
    /// [`AfXdpError::Program`] when both modes fail (e.g. another program is
    /// attached, or the interface does not exist).
    pub fn attach(&mut self, ifname: &str) -> Result<(), AfXdpError> {
        let prog = program(&mut self.ebpf)?;
        if prog.attach(ifname, XdpMode::Driver).is_err() {
            prog.attach(ifname, XdpMode::Skb)?;
        }
        Ok(())
    }

    /// Puts the AF_XDP socket serving rx queue `queue` into the `XSKMAP`.
    ///
    /// # Errors
    /// [`AfXdpError::QueueOutOfRange`], or [`AfXdpError::Map`] when the
    /// kernel refuses the socket (e.g. it has no RX ring).
    pub fn register(
        &mut self,
        queue: u32,
        xsk: impl std::os::fd::AsRawFd,
    ) -> Result<(), AfXdpError> {
        if queue >= xdp_common::MAX_QUEUES {
            return Err(AfXdpError::QueueOutOfRange(queue));
        }
        let map = self
            .ebpf
            .map_mut(XSKS_MAP)
            .ok_or(AfXdpError::Missing(XSKS_MAP))?;
        XskMap::try_from(map)?.set(queue, xsk, 0)?;
        Ok(())
    }

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN` (rx
    /// queue 0, nothing is actually redirected) and returns its verdict.
    ///
    /// # Errors
    /// [`AfXdpError::Program`] when the kernel refuses the run (e.g. a frame
    /// shorter than an Ethernet header).
    pub fn test_run(&mut self, frame: &[u8]) -> Result<XdpAction, AfXdpError> {
        let prog = program(&mut self.ebpf)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        Ok(XdpAction::from(prog.test_run(opts)?.return_value))
    }

    /// The `counters` map summed over CPUs, indexed by [`MediaCounter::key`].
    ///
    /// # Errors
    /// [`AfXdpError::Map`] when reading the map fails.
    pub fn counters(&self) -> Result<[u64; MediaCounter::ALL.len()], AfXdpError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(AfXdpError::Missing(COUNTERS_MAP))?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = [0u64; MediaCounter::ALL.len()];
        for c in MediaCounter::ALL {
            out[c.key() as usize] = array.get(&c.key(), 0)?.iter().sum();
        }
        Ok(out)
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, AfXdpError> {
    let prog = ebpf
        .program_mut(MEDIA_REDIRECT_PROGRAM)
        .ok_or(AfXdpError::Missing(MEDIA_REDIRECT_PROGRAM))?;
    prog.try_into().map_err(AfXdpError::Program)
}

/// Index of a port (an interface queue) in a [`Worker`], in the order of
/// [`WorkerConfig::interfaces`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortId(pub usize);

/// What a [`FrameHandler`] decided for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Drop the frame (the handler counts why).
    Drop,
    /// Transmit the frame, as rewritten in place, on this port.
    Tx(PortId),
    /// The frame is not the relay's. AF_XDP cannot hand a frame back to the
    /// kernel stack, so the worker drops it and counts it as passed; the XDP
    /// program should not have redirected it in the first place.
    Pass,
}

/// The relay core as the AF_XDP worker sees it: one Ethernet frame in,
/// rewritten in place, one verdict out. Implementations must not block.
pub trait FrameHandler {
    /// Handles one frame received on `port` at `now`.
    fn handle(&mut self, now: Instant, port: PortId, frame: &mut [u8]) -> Verdict;
}

/// Configuration of one [`Worker`].
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Interfaces, one AF_XDP socket each (index = [`PortId`]).
    pub interfaces: Vec<String>,
    /// The rx/tx queue this worker serves on every interface.
    pub queue: u32,
    /// UMEM frames of [`FRAME_SIZE`] bytes shared by the worker's sockets.
    pub frames: u32,
    /// Entries in each fill, completion, RX and TX ring (a power of two).
    pub ring_size: u32,
    /// Frames read per port per [`Worker::poll`].
    pub batch: u32,
}

impl WorkerConfig {
    /// Defaults: 16384 frames (64 MiB), rings of 4096 (20 ms of packets at
    /// 200 kpps, so a worker descheduled for a moment loses nothing), batches
    /// of 64.
    pub fn new(interfaces: &[&str], queue: u32) -> WorkerConfig {
        WorkerConfig {
            interfaces: interfaces.iter().map(|s| (*s).to_owned()).collect(),
            queue,
            frames: 16384,
            ring_size: 4096,
            batch: 64,
        }
    }
}

/// Per-worker counters (plain integers: one worker, one thread).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Frames read from RX rings.
    pub rx: u64,
    /// Frames queued on TX rings.
    pub tx: u64,
    /// Frames the handler dropped.
    pub dropped: u64,
    /// Frames the handler passed (dropped: see [`Verdict::Pass`]).
    pub passed: u64,
    /// Frames dropped because the TX ring was full.
    pub tx_ring_full: u64,
    /// Frames dropped because the handler named a port this worker lacks.
    pub bad_port: u64,
    /// TX frames completed by the kernel.
    pub completed: u64,
}

/// Where a worker's UMEM frames are (see [`Worker::frames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCensus {
    /// In the pool.
    pub free: u32,
    /// On fill rings.
    pub fill: u32,
    /// On TX rings, not yet completed.
    pub tx: u32,
}

impl FrameCensus {
    /// All frames.
    pub fn total(&self) -> u32 {
        self.free + self.fill + self.tx
    }
}

/// One busy-polling AF_XDP worker: a socket per port on one queue, a shared
/// UMEM, and the handler. Build it on the thread that will run it.
pub struct Worker<H> {
    // Field order: sockets drop before the pool that owns their UMEM.
    ports: Vec<sys::Xsk>,
    pool: FramePool,
    handler: H,
    config: WorkerConfig,
    stats: WorkerStats,
    rx: Vec<RxFrame>,
    /// Frames to transmit at the end of the round, per port.
    tx_queues: Vec<Vec<RxFrame>>,
}

impl<H: FrameHandler> Worker<H> {
    /// Creates the UMEM and one AF_XDP socket per interface, bound to
    /// `config.queue` in copy mode, and fills their fill rings.
    ///
    /// # Errors
    /// [`AfXdpError::Umem`] / [`AfXdpError::Socket`] /
    /// [`AfXdpError::Interface`]: without CAP_NET_RAW, or on a missing
    /// interface or queue.
    pub fn new(config: &WorkerConfig, handler: H) -> Result<Worker<H>, AfXdpError> {
        let mut pool = FramePool::new(config.frames, config.ring_size)?;
        let mut ports = Vec::with_capacity(config.interfaces.len());
        for ifname in &config.interfaces {
            ports.push(sys::Xsk::new(
                &mut pool,
                ifname,
                config.queue,
                config.ring_size,
            )?);
        }
        // Give each port's fill ring an equal share, keeping the rest for TX
        // of locally built frames.
        let share = config.frames / (config.interfaces.len() as u32 + 1);
        for port in &mut ports {
            port.refill(&mut pool, share.min(config.ring_size));
        }
        Ok(Worker {
            ports,
            pool,
            handler,
            config: config.clone(),
            stats: WorkerStats::default(),
            rx: Vec::with_capacity(config.batch as usize),
            tx_queues: (0..config.interfaces.len())
                .map(|_| Vec::with_capacity(config.batch as usize * config.interfaces.len()))
                .collect(),
        })
    }

    /// Puts `port`'s socket into `prog`'s `XSKMAP`. `prog` must be the
    /// instance attached to that port's interface: the map is keyed by rx
    /// queue only, and the kernel drops frames redirected to a socket bound
    /// to another interface, so each interface gets its own loaded
    /// [`MediaRedirect`].
    ///
    /// # Errors
    /// [`AfXdpError::Interface`] for a port this worker lacks; see
    /// [`MediaRedirect::register`].
    pub fn register(&self, port: PortId, prog: &mut MediaRedirect) -> Result<(), AfXdpError> {
        let xsk = self
            .ports
            .get(port.0)
            .ok_or_else(|| AfXdpError::Interface(format!("port {}", port.0)))?;
        prog.register(self.config.queue, xsk.fd())
    }

    /// One round: reap completions, refill, receive a batch per port, handle,
    /// transmit. Returns the number of frames received.
    pub fn poll(&mut self, now: Instant) -> usize {
        let mut received = 0;
        for i in 0..self.ports.len() {
            self.stats.completed += u64::from(self.ports[i].reap(&mut self.pool));
            self.ports[i].refill(&mut self.pool, self.config.ring_size);
            self.rx.clear();
            received += self.ports[i].receive(self.config.batch, &mut self.rx) as usize;
            self.stats.rx += self.rx.len() as u64;
            let mut frames = std::mem::take(&mut self.rx);
            for frame in frames.drain(..) {
                let verdict = self.handler.handle(now, PortId(i), self.pool.bytes(&frame));
                if let Some(frame) = self.execute(verdict, frame) {
                    self.pool.recycle(frame);
                }
            }
            self.rx = frames;
        }
        // One TX ring update per port per round.
        for (port, queue) in self.ports.iter_mut().zip(&mut self.tx_queues) {
            if !queue.is_empty() {
                let (queued, refused) = port.transmit_batch(queue, &mut self.pool);
                self.stats.tx += u64::from(queued);
                self.stats.tx_ring_full += u64::from(refused);
            }
            port.kick();
        }
        received
    }

    /// Carries out a verdict (TX frames are queued for the end of the
    /// round); returns the frame when it is to be recycled.
    fn execute(&mut self, verdict: Verdict, frame: RxFrame) -> Option<RxFrame> {
        match verdict {
            Verdict::Tx(PortId(out)) if out < self.ports.len() => {
                self.tx_queues[out].push(frame);
                None
            }
            Verdict::Tx(_) => {
                self.stats.bad_port += 1;
                Some(frame)
            }
            Verdict::Drop => {
                self.stats.dropped += 1;
                Some(frame)
            }
            Verdict::Pass => {
                self.stats.passed += 1;
                Some(frame)
            }
        }
    }

    /// Copies `frame` into a free UMEM frame and queues it on `port`'s TX
    /// ring (for locally generated packets: a traffic generator, RTCP).
    /// Returns `false` when no frame is free, the port does not exist, or
    /// its ring is full.
    pub fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        let Some(xsk) = self.ports.get_mut(port.0) else {
            return false;
        };
        let Some(f) = self.pool.alloc_with(frame) else {
            return false;
        };
        match xsk.transmit(f) {
            Ok(()) => {
                self.stats.tx += 1;
                true
            }
            Err(f) => {
                self.stats.tx_ring_full += 1;
                self.pool.recycle(f);
                false
            }
        }
    }

    /// Busy-polls until `stop` is set, then drains pending transmissions
    /// (bounded: at most 1000 more rounds).
    #[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            self.poll(Instant::now());
        }
        for _ in 0..1000 {
            if self.ports.iter().all(|p| p.in_flight() == 0) {
                break;
            }
            self.poll(Instant::now());
        }
    }

    /// The worker's counters.
    pub fn stats(&self) -> WorkerStats {
        self.stats
    }

    /// The handler (e.g. to read its counters).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably (a driver runs control commands against it
    /// between rounds).
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Where the UMEM's frames are: free in the pool, on fill rings (the
    /// kernel's until received), on TX rings (the kernel's until completed).
    /// Between calls to [`Worker::poll`] the three add up to
    /// [`WorkerConfig::frames`]: no frame is lost or owned twice.
    pub fn frames(&self) -> FrameCensus {
        FrameCensus {
            free: self.pool.free() as u32,
            fill: self.ports.iter().map(|p| p.in_fill()).sum(),
            tx: self.ports.iter().map(|p| p.in_flight()).sum(),
        }
    }
}

#[cfg(test)]
mod tests;
