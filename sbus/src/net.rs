//! The tokio driver: mutual-TLS links between members, and a local control socket.
//!
//! - Links are TLS 1.3 only, both sides present a certificate signed by the cluster CA
//!   (rustls `WebPkiClientVerifier`), and the peer's member id is read from its
//!   certificate (`m<ID>.sbus.voxplane`). A peer without a valid certificate fails the
//!   handshake and never reaches the replication core.
//! - One link per pair: the member with the lower id keeps the connection it dialled; a
//!   connection dialled by the higher id is closed after the handshake (the lower one
//!   dials). Every member dials every configured peer, with exponential backoff
//!   (100 ms doubling to 5 s).
//! - Frames: `u32` big-endian length, then [`Message::encode`]. Keepalive: the core
//!   acknowledges at least every `ack_interval_ms`; a link silent for [`IDLE_TIMEOUT`] is
//!   closed and redialled.
//! - Each link has a send queue of [`LINK_QUEUE`] frames; when it is full the link is
//!   dropped (the core then resends from the last acknowledgement on the next link).
//! - The control socket (`DIR/sbus.sock`, JSON lines) serves `voxplane sbus put|get|status|lag`.
//!
//! The loop itself only moves bytes and time into the core ([`crate::replica`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{Notify, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::cert::{CLUSTER_NAME, member_of};
use crate::msg::{MAX_FRAME, Message};
use crate::sqlite::SqliteStorage;
use crate::store::{Clock, Store, SystemClock};
use crate::types::{MemberId, Table};

/// A link with no frame for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued per link before the link is dropped.
pub const LINK_QUEUE: usize = 4_096;
/// The control socket's file name in the data directory.
pub const CONTROL_SOCKET: &str = "sbus.sock";

/// File in the data directory listing the ids of peers ever linked, one per line: they
/// count as members (for tombstone collection) from the next start on, before their
/// first contact, even when `--peer` gives no `ID@`.
pub const PEERS_FILE: &str = "peers";

/// Peer ids recorded in `data_dir` (none if the file is missing or unreadable).
#[must_use]
pub fn learned_peers(data_dir: &Path) -> Vec<MemberId> {
    std::fs::read_to_string(data_dir.join(PEERS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok().map(MemberId))
        .collect()
}

/// Records `peers` in `data_dir` (write to a temporary file, fsync, rename).
fn record_peers(data_dir: &Path, peers: &[MemberId]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = data_dir.join(format!("{PEERS_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    for p in peers {
        writeln!(f, "{}", p.0)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(PEERS_FILE))
}

/// Driver failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Reading a certificate or key file failed.
    #[error("{path}: {why}")]
    Pem {
        /// File.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The certificate does not name a member (`m<ID>.sbus.voxplane`).
    #[error("{0}: certificate names no member id")]
    NoMemberId(PathBuf),
    /// Socket failure.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Certificate files of a member.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Member certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Cluster CA certificate (PEM).
    pub ca: PathBuf,
}

/// TLS configuration of a member, loaded from [`TlsFiles`].
#[derive(Clone, Debug)]
pub struct Tls {
    /// This member, from its certificate.
    pub member: MemberId,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::Pem {
        path: path.to_owned(),
        why: e.to_string(),
    }
}

impl Tls {
    /// Loads and checks the files.
    ///
    /// # Errors
    /// Unreadable or invalid files, or a certificate without a member id.
    pub fn load(files: &TlsFiles) -> Result<Tls, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| pem_err(&files.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(&files.cert, e))?;
        let member = chain
            .first()
            .and_then(|c| member_of(c))
            .ok_or_else(|| NetError::NoMemberId(files.cert.clone()))?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_err(&files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| pem_err(&files.ca, e))? {
            roots.add(ca.map_err(|e| pem_err(&files.ca, e))?)?;
        }
        let roots = Arc::new(roots);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| pem_err(&files.ca, e))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Tls {
            member,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

enum Input {
    Up {
        peer: MemberId,
        conn: u64,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        peer: MemberId,
        conn: u64,
        msg: Message,
    },
    Down {
        peer: MemberId,
        conn: u64,
    },
}

/// Runs a member: accepts on `listener`, dials `peers`, serves the control socket in
/// `data_dir` (and Prometheus `/metrics` on `metrics` if given), until `shutdown`
/// resolves.
///
/// # Errors
/// The control socket cannot be bound.
pub async fn run(
    store: Arc<Store<SqliteStorage>>,
    tls: Tls,
    listener: TcpListener,
    peers: Vec<SocketAddr>,
    data_dir: &Path,
    metrics: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NetError> {
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(LINK_QUEUE);
    let kick = Arc::new(Notify::new());
    {
        let kick = Arc::clone(&kick);
        store.set_on_commit(Box::new(move || kick.notify_one()));
    }
    let me = tls.member;
    let mut tasks = tokio::task::JoinSet::new();
    let next_conn = Arc::new(std::sync::atomic::AtomicU64::new(1));
    {
        let (tls, in_tx, next_conn) = (tls.clone(), in_tx.clone(), Arc::clone(&next_conn));
        tasks.spawn(accept_loop(listener, tls, in_tx, next_conn));
    }
    for addr in peers {
        let (tls, in_tx, next_conn) = (tls.clone(), in_tx.clone(), Arc::clone(&next_conn));
        tasks.spawn(dial_loop(addr, tls, in_tx, next_conn));
    }
    let sock = data_dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&sock);
    let control = UnixListener::bind(&sock)?;
    tasks.spawn(control_loop(control, Arc::clone(&store), Arc::clone(&kick)));
    if let Some(m) = metrics {
        tasks.spawn(metrics_loop(m, Arc::clone(&store)));
    }

    let mut known = learned_peers(data_dir);
    store.with_replica(|r, _| known.iter().for_each(|&p| r.add_peer(p)));
    let clock = SystemClock;
    let mut links: BTreeMap<MemberId, (u64, mpsc::Sender<Vec<u8>>)> = BTreeMap::new();
    tokio::pin!(shutdown);
    loop {
        let delay = store
            .with_replica(|r, _| r.poll_timeout())
            .map_or(Duration::from_secs(1), |t| {
                Duration::from_millis(t.since(clock.now()))
            });
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(delay) => {
                if let Err(e) = store.with_replica(|r, now| r.handle_timeout(now)) {
                    tracing::error!(error = %e, "sbus timeout handling failed");
                }
            }
            () = kick.notified() => {}
            Some(input) = in_rx.recv() => match input {
                Input::Up { peer, conn, tx } => {
                    links.insert(peer, (conn, tx));
                    store.with_replica(|r, now| {
                        r.add_peer(peer);
                        r.handle_disconnected(now, peer);
                        r.handle_connected(now, peer);
                    });
                    tracing::info!(%me, %peer, "sbus link up");
                    if !known.contains(&peer) {
                        known.push(peer);
                        if let Err(e) = record_peers(data_dir, &known) {
                            tracing::warn!(error = %e, "sbus cannot record peer ids");
                        }
                    }
                }
                Input::Frame { peer, conn, msg } => {
                    if links.get(&peer).is_some_and(|(c, _)| *c == conn) {
                        let r = store.with_replica(|r, now| r.handle_message(now, peer, msg));
                        if let Err(e) = r {
                            tracing::warn!(%peer, error = %e, "sbus dropping link");
                            links.remove(&peer);
                            store.with_replica(|r, now| r.handle_disconnected(now, peer));
                        }
                    }
                }
                Input::Down { peer, conn } => {
                    if links.get(&peer).is_some_and(|(c, _)| *c == conn) {
                        links.remove(&peer);
                        store.with_replica(|r, now| r.handle_disconnected(now, peer));
                        tracing::info!(%me, %peer, "sbus link down");
                    }
                }
            },
        }
        // Drain the core's output onto the links.
        store.with_replica(|r, now| {
            loop {
                match r.poll_transmit(now) {
                    Ok(Some((peer, msg))) => {
                        let full = links
                            .get(&peer)
                            .is_some_and(|(_, tx)| tx.try_send(msg.encode()).is_err());
                        if full {
                            tracing::warn!(%peer, "sbus link queue full; dropping link");
                            links.remove(&peer);
                            r.handle_disconnected(now, peer);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "sbus transmit failed");
                        break;
                    }
                }
            }
        });
    }
    // Wait for the tasks to end so that nothing holds the store after we return (a
    // restart in the same process reopens the same database).
    tasks.shutdown().await;
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    in_tx: mpsc::Sender<Input>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.server));
    loop {
        let Ok((tcp, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (acceptor, in_tx, me) = (acceptor.clone(), in_tx.clone(), tls.member);
        let conn = next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let stream = match tokio::time::timeout(IDLE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "sbus refused a connection");
                    return;
                }
                Err(_) => return,
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| member_of(c));
            // The lower id dials; keep inbound links from lower ids only.
            if let Some(peer) = peer.filter(|p| *p < me) {
                link(stream, peer, conn, in_tx).await;
            }
        });
    }
}

async fn dial_loop(
    addr: SocketAddr,
    tls: Tls,
    in_tx: mpsc::Sender<Input>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
) {
    let connector = TlsConnector::from(Arc::clone(&tls.client));
    let Ok(name) = ServerName::try_from(CLUSTER_NAME) else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(addr).await.ok()?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name.clone(), tcp).await.ok()
        };
        match tokio::time::timeout(IDLE_TIMEOUT, attempt).await {
            Ok(Some(stream)) => {
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| member_of(c));
                match peer {
                    Some(peer) if peer > tls.member => {
                        backoff = Duration::from_millis(100);
                        let conn = next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        link(stream, peer, conn, in_tx.clone()).await;
                    }
                    // The peer has the lower id and dials us; check back now and then.
                    _ => backoff = Duration::from_secs(5),
                }
            }
            _ => backoff = (backoff * 2).min(Duration::from_secs(5)),
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Moves frames between an established link and the core loop until either side fails.
async fn link<S>(stream: S, peer: MemberId, conn: u64, in_tx: mpsc::Sender<Input>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE);
    if in_tx.send(Input::Up { peer, conn, tx }).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            if wr.write_all(&len.to_be_bytes()).await.is_err()
                || wr.write_all(&frame).await.is_err()
            {
                break;
            }
            if rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(IDLE_TIMEOUT, rd.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            tracing::warn!(%peer, n, "sbus frame too large");
            break;
        }
        let mut body = vec![0u8; n];
        match tokio::time::timeout(IDLE_TIMEOUT, rd.read_exact(&mut body)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let msg = match Message::decode(&body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "sbus malformed frame");
                break;
            }
        };
        if in_tx.send(Input::Frame { peer, conn, msg }).await.is_err() {
            break;
        }
    }
    writer.abort();
    let _ = in_tx.send(Input::Down { peer, conn }).await;
}

async fn metrics_loop(listener: TcpListener, store: Arc<Store<SqliteStorage>>) {
    while let Ok((mut sock, _)) = listener.accept().await {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                match tokio::time::timeout(IDLE_TIMEOUT, sock.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let reply = if req.starts_with(b"GET /metrics ") {
                let body = metrics_text(&store);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = sock.write_all(reply.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// The Prometheus text exposition of a member's counters and per-peer lag.
#[must_use]
pub fn metrics_text<S: crate::storage::Storage + Send + 'static>(store: &Store<S>) -> String {
    use std::fmt::Write as _;
    let s = store.status();
    let mut out = String::new();
    let counters = [
        ("commits", "storage commits (fsyncs)", s.stats.commits),
        ("applied", "changes applied", s.stats.applied),
        (
            "duplicates",
            "remote changes already held",
            s.stats.duplicates,
        ),
        (
            "gaps",
            "remote changes ahead of a missing one",
            s.stats.gaps,
        ),
        (
            "superseded",
            "writes that lost last-writer-wins",
            s.stats.superseded,
        ),
        (
            "retransmits",
            "go-back retransmissions",
            s.stats.retransmits,
        ),
        ("snapshots_sent", "snapshots sent", s.stats.snapshots_sent),
        (
            "snapshots_applied",
            "snapshots applied",
            s.stats.snapshots_applied,
        ),
        (
            "rejected_writes",
            "local writes refused by backpressure",
            s.stats.rejected_writes,
        ),
        (
            "tombstones_collected",
            "tombstones collected",
            s.stats.tombstones_collected,
        ),
        (
            "placeholders_sent",
            "changes sent as placeholders (the peer's region may not hold their domain)",
            s.stats.placeholders_sent,
        ),
        (
            "placeholders_stored",
            "changes held here as placeholders (this region may not hold their domain)",
            s.stats.placeholders_stored,
        ),
        (
            "placement_refused",
            "received data this region may not hold, stored as placeholders, never applied",
            s.stats.placement_refused,
        ),
        (
            "placeholders_refused",
            "placeholders received for a domain this region may hold (dropped, awaiting the data)",
            s.stats.placeholders_refused,
        ),
        (
            "snapshots_withheld",
            "snapshots withheld from a peer that may hold a domain this region may not",
            s.stats.snapshots_withheld,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP sbus_{name}_total {help}\n# TYPE sbus_{name}_total counter"
        );
        let _ = writeln!(out, "sbus_{name}_total {v}");
    }
    let _ = writeln!(
        out,
        "# HELP sbus_applied_seq highest sequence number applied, per origin\n# TYPE sbus_applied_seq gauge"
    );
    for (o, q) in &s.applied.0 {
        let _ = writeln!(out, "sbus_applied_seq{{origin=\"{}\"}} {}", o.0, q.0);
    }
    let _ = writeln!(
        out,
        "# HELP sbus_peer_lag_changes changes held here that the peer has not acknowledged (its queue)\n# TYPE sbus_peer_lag_changes gauge"
    );
    for (m, p) in &s.peers {
        let _ = writeln!(out, "sbus_peer_lag_changes{{peer=\"{}\"}} {}", m.0, p.lag);
    }
    let _ = writeln!(
        out,
        "# HELP sbus_peer_inflight_changes changes sent and not yet acknowledged\n# TYPE sbus_peer_inflight_changes gauge"
    );
    for (m, p) in &s.peers {
        let _ = writeln!(
            out,
            "sbus_peer_inflight_changes{{peer=\"{}\"}} {}",
            m.0, p.inflight
        );
    }
    let _ = writeln!(
        out,
        "# HELP sbus_peer_connected whether the link is up\n# TYPE sbus_peer_connected gauge"
    );
    for (m, p) in &s.peers {
        let _ = writeln!(
            out,
            "sbus_peer_connected{{peer=\"{}\"}} {}",
            m.0,
            u8::from(p.connected)
        );
    }
    out
}

/// A control request (one JSON object per line).
#[derive(serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Put {
        table: String,
        key: String,
        value: String,
    },
    Get {
        table: String,
        key: String,
    },
    Delete {
        table: String,
        key: String,
    },
    Status,
}

async fn control_loop(listener: UnixListener, store: Arc<Store<SqliteStorage>>, kick: Arc<Notify>) {
    while let Ok((sock, _)) = listener.accept().await {
        let (store, kick) = (Arc::clone(&store), Arc::clone(&kick));
        tokio::spawn(async move {
            let (rd, mut wr) = sock.into_split();
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let store = Arc::clone(&store);
                let reply = tokio::task::spawn_blocking(move || control(&store, &line))
                    .await
                    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
                kick.notify_one();
                let mut out = reply.to_string();
                out.push('\n');
                if wr.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Serves one control request.
#[must_use]
pub fn control(store: &Store<SqliteStorage>, line: &str) -> serde_json::Value {
    use serde_json::json;
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return json!({ "error": format!("bad request: {e}") }),
    };
    let table = |name: &str| Table::from_name(name).ok_or_else(|| format!("no table {name}"));
    let result: Result<serde_json::Value, String> = match req {
        Request::Put {
            table: t,
            key,
            value,
        } => table(&t).and_then(|t| {
            store
                .put_raw(t, &key, value.into_bytes())
                .map(|seq| json!({ "seq": seq.0 }))
                .map_err(|e| e.to_string())
        }),
        Request::Delete { table: t, key } => table(&t).and_then(|t| {
            store
                .delete_raw(t, &key)
                .map(|seq| json!({ "seq": seq.0 }))
                .map_err(|e| e.to_string())
        }),
        Request::Get { table: t, key } => table(&t).and_then(|t| {
            store
                .get_raw(t, &key)
                .map(|v| json!({ "value": v.map(|v| String::from_utf8_lossy(&v).into_owned()) }))
                .map_err(|e| e.to_string())
        }),
        Request::Status => Ok(status_json(store)),
    };
    result.unwrap_or_else(|e| json!({ "error": e }))
}

/// The member's status as JSON: version vector, counters, and per-peer lag (changes
/// this member holds that the peer has not acknowledged: its queue here).
#[must_use]
pub fn status_json(store: &Store<SqliteStorage>) -> serde_json::Value {
    use serde_json::json;
    let s = store.status();
    let vv = |v: &crate::types::VersionVector| {
        v.0.iter()
            .map(|(m, q)| (m.0.to_string(), json!(q.0)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "member": s.member.0,
        "region": s.region,
        "applied": vv(&s.applied),
        "stats": {
            "commits": s.stats.commits,
            "applied": s.stats.applied,
            "duplicates": s.stats.duplicates,
            "gaps": s.stats.gaps,
            "superseded": s.stats.superseded,
            "retransmits": s.stats.retransmits,
            "snapshots_sent": s.stats.snapshots_sent,
            "snapshots_applied": s.stats.snapshots_applied,
            "rejected_writes": s.stats.rejected_writes,
            "tombstones_collected": s.stats.tombstones_collected,
            "placeholders_sent": s.stats.placeholders_sent,
            "placeholders_stored": s.stats.placeholders_stored,
            "placement_refused": s.stats.placement_refused,
            "placeholders_refused": s.stats.placeholders_refused,
            "snapshots_withheld": s.stats.snapshots_withheld,
        },
        "peers": s.peers.iter().map(|(m, p)| json!({
            "member": m.0,
            "connected": p.connected,
            "lag": p.lag,
            "inflight": p.inflight,
            "acked": vv(&p.acked),
        })).collect::<Vec<_>>(),
    })
}
