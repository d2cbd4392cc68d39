//! Promiscuous capture: `AF_PACKET` TPACKET_V3 memory-mapped rings, fanned
//! out by flow across capture threads, merged into one analysis pipeline.
//!
//! ```text
//!  IFACE ──PACKET_FANOUT_HASH──> ring 0 ── capture thread 0 ──SPSC ring──┐
//!        └───────────────────> ring 1 ── capture thread 1 ──SPSC ring──┼─> Capture::drain (oldest first) ─> Pipeline
//!  IFACE2 (one ring per thread too) ────────────────────────────────────┘
//! ```
//!
//! **Why one analysis pipeline.** A call's SIP and each of its RTP streams
//! have different 5-tuples, so the kernel's flow hash spreads one call over
//! several capture threads; the analyser needs all of them in one place to
//! tie media to the call (SDP) and to finish the call on its BYE. Routing by
//! call in the capture threads would need the SDP state there (shared and
//! locked, or replicated); instead the capture threads only copy frames out
//! of the kernel ring into a bounded lock-free single-producer ring each
//! (`ringbuf`), and the analysis thread takes the oldest head frame of all
//! rings next, so per-flow order is kept and flows of a call interleave in
//! capture-time order. The capture threads never wait: a full hand-off ring
//! drops the frame and counts it ([`CaptureStats::handoff_drops`]); the
//! kernel ring's own drops come from `PACKET_STATISTICS`
//! ([`CaptureStats::kernel_drops`], [`CaptureStats::freeze_q`]).
//! Scaling analysis beyond one core would shard by call behind this merge
//! (not done; see `docs/nqs.md`).
//!
//! The threads never read the clock: frames carry the kernel's receive
//! time, which becomes the pipeline's `now`.

#[expect(
    unsafe_code,
    reason = "the AF_PACKET ring is raw syscalls and shared memory"
)]
mod sys;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use wire::Timestamp;
use wire::capture::{Frame, LinkType};

use sys::{PacketRing, RingGeometry};

/// What to capture and how.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Interfaces to capture on (promiscuous).
    pub interfaces: Vec<String>,
    /// Capture threads; each has one ring per interface, and the rings of
    /// an interface form one `PACKET_FANOUT` group (hash by flow).
    pub workers: usize,
    /// Bytes per kernel ring block (a multiple of 4096).
    pub block_size: usize,
    /// Blocks per kernel ring.
    pub block_count: usize,
    /// Milliseconds after which a partly filled block is handed over.
    pub retire_ms: u32,
    /// Bytes of each capture thread's hand-off ring to the analysis thread.
    pub handoff_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            workers: 1,
            block_size: 1 << 20,
            block_count: 64,
            retire_ms: 10,
            handoff_bytes: 32 << 20,
        }
    }
}

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// No interface, no worker, or a ring geometry the kernel refuses.
    #[error("capture configuration: {0}")]
    Config(&'static str),
    /// Opening the ring on an interface failed (no such interface, no
    /// CAP_NET_RAW, ...).
    #[error("capture on {iface}: {source}")]
    Open {
        /// The interface.
        iface: String,
        /// The system error.
        source: io::Error,
    },
    /// A capture thread could not be started.
    #[error("starting a capture thread: {0}")]
    Thread(io::Error),
}

/// Counters of all capture threads (monotonic).
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Frames the kernel rings saw (`tp_packets`, received + dropped).
    pub kernel_packets: AtomicU64,
    /// Frames the kernel dropped because a ring was full (`tp_drops`).
    pub kernel_drops: AtomicU64,
    /// Times a ring's queue froze, all blocks in user space (`tp_freeze_q_cnt`).
    pub freeze_q: AtomicU64,
    /// Frames copied to the analysis thread.
    pub frames: AtomicU64,
    /// Frames dropped because a hand-off ring was full (analysis too slow).
    pub handoff_drops: AtomicU64,
}

impl CaptureStats {
    /// Frames lost before analysis (kernel and hand-off drops) as a
    /// percentage of the frames the kernel saw.
    pub fn drop_pct(&self) -> f64 {
        let seen = self.kernel_packets.load(Ordering::Relaxed);
        let lost =
            self.kernel_drops.load(Ordering::Relaxed) + self.handoff_drops.load(Ordering::Relaxed);
        if seen == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / seen as f64
        }
    }
}

/// A running capture: the threads and the analysis side of their rings.
/// Stops (and joins the threads) on drop.
pub struct Capture {
    lanes: Vec<Lane>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Arc<CaptureStats>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("workers", &self.threads.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Capture {
    /// Opens the rings (in the calling thread's network namespace) and
    /// starts the capture threads.
    ///
    /// # Errors
    ///
    /// [`CaptureError`]: what was opened is closed again.
    pub fn start(config: &CaptureConfig) -> Result<Self, CaptureError> {
        if config.interfaces.is_empty() {
            return Err(CaptureError::Config("no interface"));
        }
        if config.workers == 0 || config.workers > 64 {
            return Err(CaptureError::Config("1 to 64 capture workers"));
        }
        if config.block_size < 4096 || !config.block_size.is_multiple_of(4096) {
            return Err(CaptureError::Config("block size: a multiple of 4096"));
        }
        if config.block_count == 0 {
            return Err(CaptureError::Config("at least one block"));
        }
        let geometry = RingGeometry {
            block_size: config.block_size,
            block_count: config.block_count,
            retire_ms: config.retire_ms,
        };
        // rings[worker][interface]
        let mut rings: Vec<Vec<PacketRing>> = (0..config.workers).map(|_| Vec::new()).collect();
        for iface in &config.interfaces {
            let open = |fanout| {
                PacketRing::open(iface, geometry, fanout).map_err(|source| CaptureError::Open {
                    iface: iface.clone(),
                    source,
                })
            };
            if config.workers == 1 {
                rings[0].push(open(None)?);
                continue;
            }
            // The first socket gets a unique group id from the kernel; the
            // others join it.
            let first = open(Some(0))?;
            let id = first.fanout_id().map_err(|source| CaptureError::Open {
                iface: iface.clone(),
                source,
            })?;
            rings[0].push(first);
            for worker in rings.iter_mut().skip(1) {
                worker.push(open(Some(id))?);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(CaptureStats::default());
        let mut capture = Capture {
            lanes: Vec::new(),
            threads: Vec::new(),
            stop: stop.clone(),
            stats: stats.clone(),
        };
        for (index, rings) in rings.into_iter().enumerate() {
            let (prod, cons) = HeapRb::<u8>::new(config.handoff_bytes.max(1 << 16)).split();
            let worker = Worker {
                rings,
                out: prod,
                stop: stop.clone(),
                stats: stats.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("nqs-capture-{index}"))
                .spawn(move || worker.run())
                .map_err(CaptureError::Thread)?;
            capture.threads.push(thread);
            capture.lanes.push(Lane {
                cons,
                head: Vec::new(),
                head_ts: None,
            });
        }
        Ok(capture)
    }

    /// The capture counters (shared with the threads).
    pub fn stats(&self) -> &Arc<CaptureStats> {
        &self.stats
    }

    /// Hands up to `max` captured frames to `f`, oldest first across the
    /// capture threads; returns how many.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&Frame<'_>)) -> usize {
        let mut done = 0;
        while done < max {
            let mut oldest: Option<(usize, Timestamp)> = None;
            for (i, lane) in self.lanes.iter_mut().enumerate() {
                if let Some(ts) = lane.fill()
                    && oldest.is_none_or(|(_, t)| ts < t)
                {
                    oldest = Some((i, ts));
                }
            }
            let Some((i, ts)) = oldest else {
                break;
            };
            let lane = &mut self.lanes[i];
            let orig_len = read_u32(&lane.head, 4);
            f(&Frame {
                ts,
                link: LinkType::ETHERNET,
                data: &lane.head[RECORD_HEADER..],
                orig_len,
            });
            lane.head_ts = None;
            done += 1;
        }
        done
    }

    /// Stops the capture threads and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// caplen (4), orig_len (4), ts in ns (8), then the frame.
const RECORD_HEADER: usize = 16;

/// The analysis side of one capture thread's hand-off ring, with the next
/// record popped out of it (the lane's head).
struct Lane {
    cons: ringbuf::HeapCons<u8>,
    head: Vec<u8>,
    head_ts: Option<Timestamp>,
}

impl Lane {
    /// Pops the next record into `head` if it is empty; the head's time.
    fn fill(&mut self) -> Option<Timestamp> {
        if self.head_ts.is_none() {
            if self.cons.occupied_len() < RECORD_HEADER {
                return None;
            }
            let mut header = [0u8; RECORD_HEADER];
            self.cons.peek_slice(&mut header);
            let caplen = read_u32(&header, 0) as usize;
            // The producer publishes the header and the frame in two steps:
            // take the record only once all of it is there.
            if self.cons.occupied_len() < RECORD_HEADER + caplen {
                return None;
            }
            self.head.resize(RECORD_HEADER + caplen, 0);
            self.cons.pop_slice(&mut self.head);
            let ns = u64::from_ne_bytes(header[8..16].try_into().unwrap_or_default());
            self.head_ts = Some(Timestamp(ns));
        }
        self.head_ts
    }
}

/// One capture thread: its rings (one per interface) and the producer end
/// of its hand-off ring.
struct Worker {
    rings: Vec<PacketRing>,
    out: ringbuf::HeapProd<u8>,
    stop: Arc<AtomicBool>,
    stats: Arc<CaptureStats>,
}

impl Worker {
    fn run(mut self) {
        let fds: Vec<libc::c_int> = self.rings.iter().map(PacketRing::raw_fd).collect();
        let mut blocks_since_stats = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            let mut busy = false;
            for ring in &mut self.rings {
                let (mut frames, mut drops) = (0u64, 0u64);
                let out = &mut self.out;
                while ring
                    .read_block(|frame| {
                        if push_record(out, &frame) {
                            frames += 1;
                        } else {
                            drops += 1;
                        }
                    })
                    .is_some()
                {
                    busy = true;
                    blocks_since_stats += 1;
                }
                self.stats.frames.fetch_add(frames, Ordering::Relaxed);
                self.stats.handoff_drops.fetch_add(drops, Ordering::Relaxed);
            }
            if !busy || blocks_since_stats >= 64 {
                blocks_since_stats = 0;
                self.collect_stats();
            }
            if !busy && let Err(e) = sys::poll_readable(&fds, 100) {
                tracing::warn!("capture poll: {e}");
                break;
            }
        }
        self.collect_stats();
    }

    fn collect_stats(&self) {
        for ring in &self.rings {
            match ring.take_stats() {
                Ok(s) => {
                    self.stats
                        .kernel_packets
                        .fetch_add(s.packets, Ordering::Relaxed);
                    self.stats
                        .kernel_drops
                        .fetch_add(s.drops, Ordering::Relaxed);
                    self.stats.freeze_q.fetch_add(s.freeze_q, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("PACKET_STATISTICS: {e}"),
            }
        }
    }
}

/// Copies a frame into the hand-off ring whole, or not at all (full).
fn push_record(out: &mut ringbuf::HeapProd<u8>, frame: &sys::RawFrame<'_>) -> bool {
    let total = RECORD_HEADER + frame.data.len();
    if out.vacant_len() < total {
        return false;
    }
    let ts = Timestamp::from_secs_nanos(u64::from(frame.sec), frame.nsec);
    let mut header = [0u8; RECORD_HEADER];
    header[0..4].copy_from_slice(&(frame.data.len() as u32).to_ne_bytes());
    header[4..8].copy_from_slice(&frame.len.to_ne_bytes());
    header[8..16].copy_from_slice(&ts.0.to_ne_bytes());
    out.push_slice(&header);
    out.push_slice(frame.data);
    true
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_merge_oldest_first_and_full_ring_drops() {
        let (mut p0, c0) = HeapRb::<u8>::new(1 << 12).split();
        let (mut p1, c1) = HeapRb::<u8>::new(64).split();
        let frame = |sec, data| sys::RawFrame {
            sec,
            nsec: 5,
            data,
            len: 100,
        };
        assert!(push_record(&mut p0, &frame(1, &[1; 20])));
        assert!(push_record(&mut p0, &frame(3, &[3; 20])));
        assert!(push_record(&mut p1, &frame(2, &[2; 20])));
        // 36 bytes used of 64: a second record does not fit whole.
        assert!(!push_record(&mut p1, &frame(4, &[4; 40])));
        let mut capture = Capture {
            lanes: [c0, c1]
                .into_iter()
                .map(|cons| Lane {
                    cons,
                    head: Vec::new(),
                    head_ts: None,
                })
                .collect(),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::default(),
        };
        let mut seen = Vec::new();
        let n = capture.drain(10, |f| {
            seen.push((f.ts, f.data[0], f.data.len(), f.orig_len));
        });
        assert_eq!(n, 3);
        let ts = |s| Timestamp::from_secs_nanos(s, 5);
        assert_eq!(
            seen,
            [
                (ts(1), 1, 20, 100),
                (ts(2), 2, 20, 100),
                (ts(3), 3, 20, 100)
            ]
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        let mut c = CaptureConfig::default();
        assert!(matches!(Capture::start(&c), Err(CaptureError::Config(_))));
        c.interfaces.push("lo".into());
        c.workers = 0;
        assert!(matches!(Capture::start(&c), Err(CaptureError::Config(_))));
        c.workers = 1;
        c.block_size = 1000;
        assert!(matches!(Capture::start(&c), Err(CaptureError::Config(_))));
    }
}
