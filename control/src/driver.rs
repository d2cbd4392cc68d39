//! The driver: sockets, the clock and a thread around the sans-IO
//! [`B2bua`]. One core thread owns the B2BUA and the relay control handle
//! (control calls block for a moment on the relay worker's channel, which
//! is why this is a thread and not a task on an async runtime); one
//! receive thread per UDP socket feeds it through a channel.
//!
//! UDP (IPv4 or IPv6) on a std socket; TCP and TLS on a small tokio
//! runtime (the private `stream` module), framed by Content-Length, with RFC 5626
//! keep-alive pongs and connection reuse.

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
use crate::policy::Policy;
use crate::stream::Streams;
use crate::transaction::TxnCounters;
use crate::transport::{Peer, Transport};

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
    /// Registered contacts.
    pub registrations: usize,
    /// Messages the transports could not send.
    pub send_errors: u64,
    /// TCP and TLS connections open.
    pub connections: usize,
}

/// Where to listen.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// UDP listen address (port 0 picks one).
    pub udp: SocketAddr,
    /// TCP listen address, if any.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address and server configuration, if any.
    pub tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// The B2BUA configuration; its `local` addresses are filled in from the
    /// bound sockets.
    pub core: Config,
}

/// Receives every finished call (the CDR writer).
pub type CallSink = Box<dyn FnMut(CallRecord) + Send>;

pub(crate) enum Input {
    Datagram(Peer, Vec<u8>),
    Stop,
}

/// A running SIP service. Dropping it stops it.
pub struct Driver {
    /// The bound UDP address.
    pub udp_addr: SocketAddr,
    /// The bound TCP address.
    pub tcp_addr: Option<SocketAddr>,
    /// The bound TLS address.
    pub tls_addr: Option<SocketAddr>,
    streams: Streams,
    runtime: Option<tokio::runtime::Runtime>,
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
        policy: Box<dyn Policy>,
        mut sink: CallSink,
    ) -> std::io::Result<Driver> {
        let socket = UdpSocket::bind(config.udp)?;
        let udp_addr = socket.local_addr()?;
        config.core.local = LocalAddrs {
            udp: Some(udp_addr),
            ..config.core.local
        };
        let (tx, rx) = mpsc::channel::<Input>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sip-streams")
            .enable_all()
            .build()?;
        let streams = Streams::new(tx.clone(), runtime.handle().clone());
        // TCP on port 0 next to UDP takes UDP's port (one port for both).
        let tcp = config.tcp.map(|a| {
            if a.port() == 0 && a.ip() == udp_addr.ip() {
                udp_addr
            } else {
                a
            }
        });
        let tcp_addr = match tcp {
            Some(addr) => {
                let l = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
                let bound = l.local_addr()?;
                streams.serve_tcp(l);
                Some(bound)
            }
            None => None,
        };
        let tls_addr = match config.tls.take() {
            Some((addr, tls)) => {
                let l = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
                let bound = l.local_addr()?;
                streams.serve_tls(l, tls);
                Some(bound)
            }
            None => None,
        };
        config.core.local.tcp = tcp_addr;
        config.core.local.tls = tls_addr;
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let recv_socket = socket.try_clone()?;
        let recv_tx = tx.clone();
        thread::Builder::new()
            .name("sip-udp-rx".into())
            .spawn(move || receive_udp(&recv_socket, &recv_tx))?;
        let out = Out {
            udp: socket.try_clone()?,
            streams: streams.clone(),
        };
        let snap = Arc::clone(&snapshot);
        let core = thread::Builder::new()
            .name("sip-core".into())
            .spawn(move || {
                let mut b2bua = B2bua::new(config.core, media, policy, Instant::now());
                run_core(&mut b2bua, &rx, &out, &snap, &mut sink);
            })?;
        Ok(Driver {
            udp_addr,
            tcp_addr,
            tls_addr,
            streams,
            runtime: Some(runtime),
            snapshot,
            tx,
            core: Some(core),
            socket,
        })
    }

    /// The latest counters.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.connections = self.streams.len();
        s
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
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Where the core thread sends.
struct Out {
    udp: UdpSocket,
    streams: Streams,
}

impl Out {
    fn send(&self, peer: Peer, bytes: Vec<u8>) -> bool {
        match peer.transport {
            Transport::Udp => match self.udp.send_to(&bytes, peer.addr) {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "SIP send failed");
                    false
                }
            },
            Transport::Tcp | Transport::Tls => self.streams.send(peer, bytes),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    out: &Out,
    snapshot: &Mutex<Snapshot>,
    sink: &mut CallSink,
) {
    let mut published = Instant::now();
    let mut send_errors = 0u64;
    loop {
        let now = Instant::now();
        let wait = b2bua
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            })
            .min(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(Input::Datagram(peer, bytes)) => {
                b2bua.set_unix_ms(unix_ms());
                b2bua.handle_datagram(Instant::now(), peer, &bytes);
            }
            Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        b2bua.set_unix_ms(unix_ms());
        b2bua.handle_timeout(Instant::now());
        while let Some(t) = b2bua.poll_transmit() {
            if !out.send(t.peer, t.bytes) {
                send_errors += 1;
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
            b2bua.reload_policy();
            let s = Snapshot {
                sip: b2bua.counters(),
                txn: b2bua.transactions().counters(),
                transactions: b2bua.transactions().len(),
                calls: b2bua.calls(),
                dialogs: b2bua.dialogs(),
                registrations: b2bua.registrations(),
                send_errors,
                connections: 0,
            };
            *snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
        }
    }
}

/// TLS for SIP: a server configuration from PEM certificate chain and key.
///
/// # Errors
/// Unparseable PEM or a key that does not match.
pub fn tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A self-signed certificate and key (PEM) for `names` (DNS names or IP
/// addresses), for `voxplane up` without an operator certificate.
///
/// # Errors
/// Key generation failed.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let cert = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate or key PEM is invalid.
    #[error("invalid certificate or key: {0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}
