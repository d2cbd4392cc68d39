//! The io_uring backend: one worker thread per core, each with its own ring
//! (`SINGLE_ISSUER` + `DEFER_TASKRUN`), a multishot `recvmsg` per socket
//! drawing from a provided-buffer ring, and sends submitted straight from
//! the buffer the packet arrived in (the buffer goes back to the kernel
//! when the send completes). Control, sharding and port handling are those
//! of [`crate::udp`]; the workers take the same commands.
//!
//! Mirroring works as in [`crate::udp`] ([`udp::MirrorConfig`]). Not yet:
//! batching several sends per `sendmsg` (each forward is one SQE; the ring
//! submits them together).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::Running;
use crate::relay::{ControlError, Relay, RelayEvent, RxMeta, Verdict};
use crate::udp::{self, CONTROL_LATENCY, Cmd, IoCounters, Mirrors, UdpConfig, UdpControl};

pub mod sys;

/// Provided receive buffers per worker.
const BUFFERS: u16 = 1024;

const TAG_RECV: u64 = 0;
const TAG_SEND: u64 = 1;

/// Socket generations wrap at 30 bits: they share the user data with a
/// 2-bit tag and a 32-bit index.
const GENERATION_MASK: u32 = (1 << 30) - 1;

fn user_data(tag: u64, index: u32, generation: u32) -> u64 {
    tag | (u64::from(index) << 2) | (u64::from(generation & GENERATION_MASK) << 34)
}

fn split(ud: u64) -> (u64, u32, u32) {
    (ud & 3, ((ud >> 2) & 0xFFFF_FFFF) as u32, (ud >> 34) as u32)
}

/// A running io_uring backend. Dropping it stops the workers.
pub type UringBackend = Running<Uring>;

/// The `uring` kind of [`Running`] backend (its rings live on the worker
/// threads).
#[derive(Debug)]
pub struct Uring;

impl Running<Uring> {
    /// Starts `config.workers` workers.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`] for a range too small to split, or
    /// when the kernel refuses the ring (no io_uring, no buffer rings).
    pub fn start(config: UdpConfig) -> Result<Self, ControlError> {
        let count = config.workers.max(1);
        let mut senders = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        let mut consumers = Vec::new();
        for index in 0..count {
            let (relay, mirrors, consumer) = udp::worker_shard(&config, index, count)?;
            consumers.extend(consumer);
            let (tx, rx) = mpsc::channel();
            let (ready_tx, ready_rx) = mpsc::channel();
            // The ring is created on its worker thread: SINGLE_ISSUER binds
            // it to the thread that submits.
            let handle = thread::Builder::new()
                .name(format!("uring-{index}"))
                .spawn(move || match sys::Ring::new(BUFFERS) {
                    Ok(ring) => {
                        let _ = ready_tx.send(Ok(()));
                        let mut worker = Worker::new(relay, ring, rx);
                        worker.mirrors = mirrors;
                        worker.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|_| ControlError::InvalidConfig("cannot spawn a worker thread"))?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                _ => {
                    let _ = handle.join();
                    for tx in &senders {
                        let _ = mpsc::Sender::send(tx, Cmd::Shutdown);
                    }
                    return Err(ControlError::InvalidConfig(
                        "the kernel refused an io_uring with provided buffers",
                    ));
                }
            }
            senders.push(tx);
            threads.push(handle);
        }
        Ok(Self {
            control: UdpControl::new(senders),
            threads,
            consumers,
            kind: Uring,
        })
    }
}

struct Sock {
    fd: OwnedFd,
    local: SocketAddr,
    generation: u32,
}

struct Worker {
    relay: Relay,
    ring: sys::Ring,
    rx: mpsc::Receiver<Cmd>,
    socks: Vec<Option<Sock>>,
    free: Vec<usize>,
    by_local: HashMap<SocketAddr, usize, rustc_hash::FxBuildHasher>,
    /// Sockets closed while their receive may still complete: kept open
    /// until the cancellation's final completion.
    closing: HashMap<u64, OwnedFd, rustc_hash::FxBuildHasher>,
    ips: Vec<IpAddr>,
    io: IoCounters,
    generation: u32,
    /// Sockets whose multishot receive stopped (no buffers) and must be re-armed.
    rearm: Vec<usize>,
    /// Sends submitted and not yet completed.
    sending: usize,
    mirrors: Mirrors,
}

impl Worker {
    fn new(relay: Relay, ring: sys::Ring, rx: mpsc::Receiver<Cmd>) -> Self {
        let ips = [relay.config().media_v4, relay.config().media_v6]
            .into_iter()
            .flatten()
            .collect();
        Self {
            relay,
            ring,
            rx,
            socks: Vec::new(),
            free: Vec::new(),
            by_local: HashMap::default(),
            closing: HashMap::default(),
            ips,
            io: IoCounters::default(),
            generation: 0,
            rearm: Vec::new(),
            sending: 0,
            mirrors: Mirrors::default(),
        }
    }

    #[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
    fn run(&mut self) {
        let mut cqes = Vec::new();
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(Cmd::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                        self.quiesce();
                        return;
                    }
                    Ok(cmd) => {
                        udp::apply_command(&mut self.relay, &mut self.io, &mut self.mirrors, cmd);
                        self.drain_events();
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            for slot in std::mem::take(&mut self.rearm) {
                self.arm(slot);
            }
            let now = Instant::now();
            let wait = self
                .relay
                .poll_timeout()
                .map_or(CONTROL_LATENCY, |t| t.saturating_duration_since(now))
                .min(CONTROL_LATENCY);
            if self.ring.submit_and_wait(wait).is_err() {
                thread::sleep(Duration::from_millis(1));
            }
            self.ring.completions(&mut cqes);
            let now = Instant::now();
            for &(ud, result, flags) in &cqes {
                self.complete(now, ud, result, flags);
            }
            self.mirrors.flush(&mut self.io);
            self.relay.handle_timeout(now);
            self.drain_events();
        }
    }

    /// Cancels every receive and waits (bounded) for the kernel to finish
    /// with the buffers and sockets before they are freed.
    #[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
    fn quiesce(&mut self) {
        let open: Vec<SocketAddr> = self.by_local.keys().copied().collect();
        for local in open {
            self.close(local);
        }
        let mut cqes = Vec::new();
        for _ in 0..200 {
            if self.closing.is_empty() && self.sending == 0 {
                return;
            }
            let _ = self.ring.submit_and_wait(Duration::from_millis(5));
            self.ring.completions(&mut cqes);
            for &(ud, result, flags) in &cqes {
                self.complete(Instant::now(), ud, result, flags);
            }
        }
    }

    fn complete(&mut self, now: Instant, ud: u64, result: i32, flags: u32) {
        if ud == u64::MAX {
            return; // a cancellation's own completion
        }
        let (tag, index, generation) = split(ud);
        if tag == TAG_SEND {
            // The send of buffer `index` is done: the buffer goes back.
            self.sending = self.sending.saturating_sub(1);
            if result < 0 {
                self.io.tx_errors += 1;
            } else {
                self.io.tx_packets += 1;
            }
            self.ring.provide(index as u16);
            return;
        }
        let bid = sys::buffer_id(flags);
        let slot = index as usize;
        let live = matches!(self.socks.get(slot), Some(Some(s)) if s.generation == generation);
        if !sys::more(flags) {
            if live {
                // Stopped (out of buffers, or an error): arm it again.
                self.rearm.push(slot);
            } else {
                // The cancelled receive of a closed socket is over.
                self.closing.remove(&ud);
            }
        }
        let Some(bid) = bid else { return };
        if result < 0 || !live {
            self.ring.provide(bid);
            return;
        }
        self.packet(now, slot, bid, result as usize);
    }

    fn packet(&mut self, now: Instant, slot: usize, bid: u16, len: usize) {
        let Some(Some(sock)) = self.socks.get(slot) else {
            self.ring.provide(bid);
            return;
        };
        let local = sock.local;
        let Some((src, range)) = self.ring.received(bid, len) else {
            self.ring.provide(bid);
            return;
        };
        let meta = RxMeta { src, dst: local };
        let verdict =
            self.relay
                .handle_datagram(now, meta, &mut self.ring.buf_mut(bid)[range.clone()]);
        let Verdict::Forward(f) = verdict else {
            self.ring.provide(bid);
            return;
        };
        if f.mirror {
            let payload = &self.ring.buf_mut(bid)[range.clone()];
            self.mirrors
                .copy(&self.relay, &mut self.io, meta, f.kind, payload);
        }
        let Some(Some(out)) = self.by_local.get(&f.src).and_then(|&s| self.socks.get(s)) else {
            self.io.tx_errors += 1;
            self.ring.provide(bid);
            return;
        };
        let ud = user_data(TAG_SEND, u32::from(bid), 0);
        let fd = out.fd.as_fd();
        if self.ring.send(fd, bid, range, f.dst, ud).is_err() {
            self.io.tx_errors += 1;
            self.ring.provide(bid);
        } else {
            self.sending += 1;
        }
    }

    fn arm(&mut self, slot: usize) {
        let Some(Some(sock)) = self.socks.get(slot) else {
            return;
        };
        let ud = user_data(TAG_RECV, slot as u32, sock.generation);
        if self.ring.arm_recv(sock.fd.as_fd(), ud).is_err() {
            self.rearm.push(slot);
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            match event {
                RelayEvent::PortsOpened { rtp } => {
                    for local in udp::session_sockets(&self.ips, rtp) {
                        self.open(local);
                    }
                }
                RelayEvent::PortsClosed { rtp } => {
                    for local in udp::session_sockets(&self.ips, rtp) {
                        self.close(local);
                    }
                }
                // The core deleted it (its ports closed above); the
                // recorder hears the stop.
                RelayEvent::MediaTimeout { call_id } => {
                    udp::timed_out(&mut self.io, &mut self.mirrors, &call_id);
                }
                RelayEvent::Latched { .. } => {}
            }
        }
    }

    fn open(&mut self, local: SocketAddr) {
        let Ok(fd) = udp::sys::bind_udp(local) else {
            self.io.bind_errors += 1;
            return;
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.socks.push(None);
            self.socks.len() - 1
        });
        self.generation = self.generation.wrapping_add(1) & GENERATION_MASK;
        self.socks[slot] = Some(Sock {
            fd,
            local,
            generation: self.generation,
        });
        self.by_local.insert(local, slot);
        self.arm(slot);
    }

    fn close(&mut self, local: SocketAddr) {
        if let Some(slot) = self.by_local.remove(&local)
            && let Some(sock) = self.socks[slot].take()
        {
            let ud = user_data(TAG_RECV, slot as u32, sock.generation);
            let _ = self.ring.cancel(ud);
            self.closing.insert(ud, sock.fd);
            self.free.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;
    use crate::relay::RelayConfig;

    fn start(workers: usize, base: u16) -> Option<UringBackend> {
        match UringBackend::start(UdpConfig {
            relay: RelayConfig {
                media_v4: Some("127.0.0.1".parse().unwrap()),
                media_v6: None,
                ports: base..=base + 399,
                max_sessions: 100,
                ..RelayConfig::default()
            },
            workers,
            ..UdpConfig::default()
        }) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("SKIP: io_uring backend unavailable here: {e}");
                None
            }
        }
    }

    #[test]
    fn user_data_round_trip() {
        let ud = user_data(TAG_RECV, 123_456, GENERATION_MASK);
        assert_eq!(split(ud), (TAG_RECV, 123_456, GENERATION_MASK));
        assert_eq!(
            split(user_data(TAG_RECV, 7, GENERATION_MASK + 1)),
            (TAG_RECV, 7, 0)
        );
        assert_ne!(ud, u64::MAX);
        assert_eq!(split(user_data(TAG_SEND, 1023, 0)), (TAG_SEND, 1023, 0));
    }

    #[test]
    fn conformance_one_worker() {
        if let Some(b) = start(1, 48000) {
            conformance::run_all(&b, &conformance::Loopback);
        }
    }

    #[test]
    fn conformance_two_workers() {
        if let Some(b) = start(2, 48400) {
            conformance::run_all(&b, &conformance::Loopback);
        }
    }

    /// A measurement, not a check of speed (run with `--release --
    /// --ignored --nocapture`).
    #[test]
    #[ignore = "measurement; run in release"]
    fn measure_loopback_pps() {
        if let Some(b) = start(1, 44400) {
            conformance::measure_loopback(&b, "uring");
        }
    }

    #[test]
    fn recording_mirrors_to_hep_and_ring() {
        crate::udp::tests::recording_scenario(47400, &|config| {
            let mut b = UringBackend::start(config).ok()?;
            let rings = b.take_mirror_consumers();
            let control = b.control();
            Some((Box::new(b), rings, control))
        });
    }
}
