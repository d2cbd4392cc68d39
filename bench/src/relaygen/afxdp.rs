//! The generator's AF_XDP driver: one [`Worker`] on one interface queue
//! sends what the [`Generator`] schedules and feeds every frame that comes
//! back to the [`Receiver`]. A UDP-socket sender tops out near 0.5 Mpps on
//! this machine; AF_XDP reaches 1.2–1.6 Mpps (design.md).

use std::sync::{Arc, Barrier};

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

use dataplane::afxdp::{
    AfXdpError, FrameHandler, MediaConfig, MediaRedirect, PortId, Verdict, Worker, WorkerConfig,
    WorkerStats,
};

use super::{FRAME_LEN, Generator, Leg, Receiver, RxReport};

/// One generator run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Interface to send on and receive from (in the calling thread's
    /// network namespace).
    pub iface: String,
    /// Streams' addresses.
    pub leg: Leg,
    /// Concurrent calls (one stream each from this generator).
    pub calls: u32,
    /// Packets per stream (50 per second).
    pub packets_per_stream: u32,
    /// How long to wait for stragglers after the last send.
    pub drain: Duration,
    /// SSRC of stream 0 (stream i uses base + i).
    pub ssrc_base: u32,
    /// Time zero of send timestamps and of the schedule. Generators driving
    /// the two legs of the same calls share one, so the latency each
    /// measures is one-way on one clock.
    pub epoch: Instant,
    /// When set, every generator sharing it waits here after its set-up,
    /// so the legs start sending together.
    pub barrier: Option<Arc<Barrier>>,
}

/// What a run sent and got back.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// Packets the generator scheduled.
    pub scheduled: u64,
    /// Packets put on the TX ring.
    pub sent: u64,
    /// Receiving side figures.
    pub rx: RxReport,
    /// Loss, % of sent.
    pub loss_pct: f64,
    /// Wall time of the sending phase, s.
    pub send_secs: f64,
    /// The worker's counters.
    pub worker: WorkerStats,
    /// One-way latency, µs (to merge the legs of a run).
    pub latency: Histogram<u64>,
}

/// Runs the generator to completion in the calling thread (busy-polling).
/// The replies must arrive on `cfg.iface` addressed to the leg's source
/// ports, which the loaded XDP program redirects to the worker.
///
/// # Errors
/// When the XDP program or the AF_XDP socket cannot be set up.
pub fn run(cfg: &RunConfig) -> Result<RunReport, AfXdpError> {
    run_with_ports(cfg, None)
}

/// As [`run`], sending stream `i` to `dst_ports[i]` (the ports a relay
/// allocated for each call) when given.
///
/// # Errors
/// As [`run`].
pub fn run_with_ports(cfg: &RunConfig, dst_ports: Option<&[u16]>) -> Result<RunReport, AfXdpError> {
    let start = cfg.epoch;
    let set_up = set_up(cfg);
    // Wait at the barrier even after a failed set-up, so the generator of
    // the other leg is not left waiting for ever.
    if let Some(barrier) = &cfg.barrier {
        barrier.wait();
    }
    let (_prog, mut worker) = set_up?;
    // The schedule starts now; send timestamps stay on the shared epoch.
    let began = Instant::now();
    let offset = began.saturating_duration_since(start).as_nanos() as u64;
    let mut generator =
        Generator::new(cfg.leg, cfg.calls, cfg.packets_per_stream, cfg.ssrc_base).start_at(offset);
    if let Some(ports) = dst_ports {
        generator = generator.with_dst_ports(ports.to_vec());
    }
    let mut buf = [0u8; FRAME_LEN];
    let mut pending: Option<usize> = None;
    let mut sent = 0u64;
    while generator.poll_timeout().is_some() || pending.is_some() {
        let now_ns = start.elapsed().as_nanos() as u64;
        let before = sent;
        loop {
            let len = match pending.take() {
                Some(len) => len,
                None => match generator.poll_transmit(now_ns, &mut buf) {
                    Some(len) => len,
                    None => break,
                },
            };
            if worker.send(PortId(0), &buf[..len]) {
                sent += 1;
            } else {
                // TX ring or pool full: retry after the next poll reaps.
                pending = Some(len);
                break;
            }
        }
        if worker.poll(Instant::now()) == 0 && sent == before {
            // Idle: let a generator sharing this core (the other leg) run.
            std::thread::yield_now();
        }
    }
    let send_secs = began.elapsed().as_secs_f64();
    let drain_until = Instant::now() + cfg.drain;
    while Instant::now() < drain_until {
        if worker.poll(Instant::now()) == 0 {
            std::thread::yield_now();
        }
    }
    let rx = worker.handler().receiver.report();
    let loss_pct = if sent == 0 {
        0.0
    } else {
        100.0 * (sent.saturating_sub(rx.received)) as f64 / sent as f64
    };
    Ok(RunReport {
        scheduled: generator.total(),
        sent,
        rx,
        loss_pct,
        send_secs,
        worker: worker.stats(),
        latency: worker.handler().receiver.histogram().clone(),
    })
}

/// Loads and attaches the program for the replies (to our source ports:
/// `src_port .. src_port + 2 × calls`) and opens the socket.
fn set_up(cfg: &RunConfig) -> Result<(MediaRedirect, Worker<RxHandler>), AfXdpError> {
    let last = u32::from(cfg.leg.src_port) + 2 * cfg.calls.max(1) - 1;
    let mut prog = MediaRedirect::load(MediaConfig {
        port_lo: cfg.leg.src_port,
        port_hi: u16::try_from(last).unwrap_or(u16::MAX),
        flags: 0,
    })?;
    prog.attach(&cfg.iface)?;
    let config = WorkerConfig::new(&[&cfg.iface], 0);
    // The previous run's socket on this queue is released asynchronously
    // by the kernel: binding again at once can meet EBUSY for a moment.
    let mut tries = 0;
    let worker = loop {
        let handler = RxHandler {
            start: cfg.epoch,
            receiver: Receiver::new(cfg.calls, cfg.packets_per_stream),
        };
        match Worker::new(&config, handler) {
            Ok(w) => break w,
            Err(AfXdpError::Socket { errno: EBUSY, .. }) if tries < 40 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    };
    worker.register(PortId(0), &mut prog)?;
    Ok((prog, worker))
}

/// Linux's EBUSY.
const EBUSY: i32 = 16;

struct RxHandler {
    start: Instant,
    receiver: Receiver,
}

impl FrameHandler for RxHandler {
    fn handle(&mut self, now: Instant, _port: PortId, frame: &mut [u8]) -> Verdict {
        let now_ns = now.saturating_duration_since(self.start).as_nanos() as u64;
        self.receiver.handle_frame(now_ns, frame);
        Verdict::Drop
    }
}
