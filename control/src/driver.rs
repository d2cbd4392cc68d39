//! The driver: sockets, the clock and a thread around the sans-IO
//! [`B2bua`]. One core thread owns the B2BUA and the relay control handle
//! (control calls block for a moment on the relay worker's channel, which
//! is why this is a thread and not a task on an async runtime); one
//! receive thread per UDP socket feeds it through a channel.
//!
//! Today: UDP over IPv4 or IPv6. TCP and TLS are not wired yet (see
//! `docs/sip.md`).

#![expect(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "the driver owns the clock and the sockets"
)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::relay::Control;

use crate::b2bua::{B2bua, CallEvent, CallRecord, Config, LocalAddrs, SipCounters};
use crate::transaction::TxnCounters;
use crate::transport::Peer;

/// What the driver publishes for `/metrics` (refreshed every 100 ms).
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// SIP counters.
    pub sip: SipCounters,
    /// Transaction counters.
    pub txn: TxnCounters,
    /// Transactions alive.
    pub transactions: usize,
    /// Calls held (any phase).
    pub calls: usize,
    /// Confirmed dialogs.
    pub dialogs: usize,
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// UDP listen address (port 0 picks one).
    pub udp: SocketAddr,
    /// The B2BUA configuration; its `local` addresses are filled in from the
    /// bound sockets.
    pub core: Config,
}

/// Receives every finished call (the CDR writer).
pub type CallSink = Box<dyn FnMut(CallRecord) + Send>;

enum Input {
    Datagram(Peer, Vec<u8>),
    Stop,
}

/// A running SIP service. Dropping it stops it.
pub struct Driver {
    /// The bound UDP address.
    pub udp_addr: SocketAddr,
    snapshot: Arc<Mutex<Snapshot>>,
    tx: mpsc::Sender<Input>,
    core: Option<thread::JoinHandle<()>>,
    socket: UdpSocket,
}

impl Driver {
    /// Binds the sockets and starts the threads.
    ///
    /// # Errors
    /// A socket cannot be bound or a thread cannot be started.
    pub fn start<C: Control + Send + 'static>(
        mut config: DriverConfig,
        media: C,
        mut sink: CallSink,
    ) -> std::io::Result<Driver> {
        let socket = UdpSocket::bind(config.udp)?;
        let udp_addr = socket.local_addr()?;
        config.core.local = LocalAddrs {
            udp: Some(udp_addr),
            ..config.core.local
        };
        let (tx, rx) = mpsc::channel::<Input>();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let recv_socket = socket.try_clone()?;
        let recv_tx = tx.clone();
        thread::Builder::new()
            .name("sip-udp-rx".into())
            .spawn(move || receive_udp(&recv_socket, &recv_tx))?;
        let send_socket = socket.try_clone()?;
        let snap = Arc::clone(&snapshot);
        let core = thread::Builder::new()
            .name("sip-core".into())
            .spawn(move || {
                let mut b2bua = B2bua::new(config.core, media);
                run_core(&mut b2bua, &rx, &send_socket, &snap, &mut sink);
            })?;
        Ok(Driver {
            udp_addr,
            snapshot,
            tx,
            core: Some(core),
            socket,
        })
    }

    /// The latest counters.
    pub fn snapshot(&self) -> Snapshot {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the core thread (it runs until the driver is dropped).
    pub fn join(mut self) {
        if let Some(t) = self.core.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.tx.send(Input::Stop);
        // Wake the receive thread: it exits when the channel is closed.
        let _ = self.socket.send_to(b"\r\n\r\n", self.udp_addr);
        if let Some(t) = self.core.take() {
            let _ = t.join();
        }
    }
}

fn receive_udp(socket: &UdpSocket, tx: &mpsc::Sender<Input>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if tx
                    .send(Input::Datagram(Peer::udp(from), buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // ICMP errors surface as ConnectionRefused on some kernels; keep going.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                tracing::warn!(error = %e, "SIP UDP receive failed");
                return;
            }
        }
    }
}

fn run_core<C: Control>(
    b2bua: &mut B2bua<C>,
    rx: &mpsc::Receiver<Input>,
    socket: &UdpSocket,
    snapshot: &Mutex<Snapshot>,
    sink: &mut CallSink,
) {
    let mut published = Instant::now();
    loop {
        let now = Instant::now();
        let wait = b2bua
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            })
            .min(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(Input::Datagram(peer, bytes)) => b2bua.handle_datagram(Instant::now(), peer, &bytes),
            Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        b2bua.handle_timeout(Instant::now());
        while let Some(t) = b2bua.poll_transmit() {
            if let Err(e) = socket.send_to(&t.bytes, t.peer.addr) {
                tracing::debug!(peer = %t.peer, error = %e, "SIP send failed");
            }
        }
        while let Some(e) = b2bua.poll_event() {
            match e {
                CallEvent::Ended(record) => sink(*record),
            }
        }
        let now = Instant::now();
        if now.duration_since(published) >= Duration::from_millis(100) {
            published = now;
            let s = Snapshot {
                sip: b2bua.counters(),
                txn: b2bua.transactions().counters(),
                transactions: b2bua.transactions().len(),
                calls: b2bua.calls(),
                dialogs: b2bua.dialogs(),
            };
            *snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
        }
    }
}
