//! The recorder process (`voxplane mis`): a tokio driver around the sans-IO
//! [`Recorder`]. It owns the sockets, the clock and the files:
//!
//! ```text
//! DATA_DIR/journal/<session>.vxj     append-only journal per running session
//! DATA_DIR/recordings/<id>.wav       stereo (caller left, callee right)
//! DATA_DIR/recordings/<id>.mono.wav  mixed mono
//! DATA_DIR/index.jsonl               one line per finished recording
//! DATA_DIR/outbox/<id>               marker: not yet uploaded to S3
//! ```
//!
//! With S3 configured, every stored recording gets an outbox marker and is
//! uploaded (`<prefix><id>.wav`, `.mono.wav`, `.json`) by an uploader task
//! driven by the sans-IO [`RetryQueue`]; the marker is removed after the
//! last object is stored. While S3 is unreachable recordings stay local and
//! queued; markers found at start are queued again.
//!
//! Durability: a media datagram of a running session is written to its
//! journal (one `write` per receive batch and session) before the core sees
//! it, so a `kill -9` loses nothing the recorder counted; journals are
//! fsynced every [`Config::fsync_interval`] (a power cut loses at most that
//! much), metadata records immediately. At start, every journal is
//! replayed: sessions that had stopped are rendered, running ones go on.
//! Output files are written atomically (temporary file, fsync, rename,
//! directory fsync); the journal is deleted only after the files and the
//! index line are durable.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use wire::Timestamp;

use crate::index::{self, Entry, Index, Query};
use crate::journal::{self, RecordKind};
use crate::offload::{RetryConfig, RetryQueue};
use crate::proto::{Control, FrameView, MediaPacket, SessionId, negotiate};
use crate::recorder::{Recorder, RecorderConfig, RecorderError, Recording, Stats};
use crate::wav;

/// Settings of the recorder process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where journals, recordings and the index live.
    pub data_dir: PathBuf,
    /// Metadata listener (TCP; 1040 by default).
    pub control: SocketAddr,
    /// Media listener (UDP; 5400 by default).
    pub media: SocketAddr,
    /// HTTP search API.
    pub http: SocketAddr,
    /// Journal fsync period.
    pub fsync_interval: Duration,
    /// Idle time after which a session is finished from what arrived.
    pub idle_timeout: Duration,
    /// S3 offload; `None` keeps recordings local only.
    pub s3: Option<S3Config>,
    /// Upload retry backoff.
    pub retry: RetryConfig,
}

/// Where to offload recordings (shared with NQS's pcap offload).
pub use nqs::offload::S3Config;

/// The addresses actually bound (ports may have been 0).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Metadata (TCP).
    pub control: SocketAddr,
    /// Media (UDP).
    pub media: SocketAddr,
    /// HTTP API.
    pub http: SocketAddr,
}

/// Runs the recorder until the process ends. `on_ready` is called once the
/// journals have been replayed and every socket is bound.
///
/// # Errors
///
/// Failing to create the data directories, replay the journals or bind a
/// socket.
pub async fn run(config: Config, on_ready: impl FnOnce(Bound)) -> io::Result<()> {
    let dirs = Dirs::create(&config.data_dir)?;
    let (index, bad) = Index::load(&read_or_empty(&dirs.index)?);
    if bad > 0 {
        tracing::warn!(lines = bad, "index: skipped unreadable lines (torn tail)");
    }
    let shared = Arc::new(Shared {
        index: RwLock::new(index),
        stats: Mutex::new(Stats::default()),
        dirs: dirs.clone(),
        uploads: AtomicU64::new(0),
        upload_failures: AtomicU64::new(0),
        outbox: AtomicU64::new(0),
    });
    let mut core = Core::new(&config, shared.clone())?;
    if let Some(s3) = &config.s3 {
        let store = s3_store(s3)?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Markers left by a previous run go first.
        for e in fs::read_dir(&dirs.outbox)? {
            let e = e?;
            if let Some(name) = e.file_name().to_str()
                && !name.starts_with('.')
            {
                let _ = tx.send(name.to_owned());
            }
        }
        core.offload = Some(tx);
        tokio::spawn(uploader(
            store,
            s3.prefix.clone(),
            config.retry,
            shared.clone(),
            rx,
        ));
    }
    core.replay()?;

    let udp = UdpSocket::bind(config.media).await?;
    let tcp = TcpListener::bind(config.control).await?;
    let http = TcpListener::bind(config.http).await?;
    on_ready(Bound {
        control: tcp.local_addr()?,
        media: udp.local_addr()?,
        http: http.local_addr()?,
    });

    let (tx, rx) = mpsc::channel::<Vec<u8>>(1024);
    tokio::spawn(accept_control(tcp, tx));
    let app = axum::Router::new()
        .route("/api/recordings", get(search))
        .route("/api/recordings/{file}", get(download))
        .route("/metrics", get(metrics))
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    core.run(udp, rx).await
}

/// [`run`] on a multi-threaded tokio runtime of its own (two workers: the
/// recorder task and the connection/HTTP tasks), for callers without one.
///
/// # Errors
///
/// As [`run`], or failing to build the runtime.
pub fn run_blocking(config: Config, on_ready: impl FnOnce(Bound)) -> io::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(config, on_ready))
}

struct Shared {
    index: RwLock<Index>,
    stats: Mutex<Stats>,
    dirs: Dirs,
    uploads: AtomicU64,
    upload_failures: AtomicU64,
    outbox: AtomicU64,
}

#[derive(Clone, Debug)]
struct Dirs {
    journal: PathBuf,
    recordings: PathBuf,
    outbox: PathBuf,
    index: PathBuf,
}

impl Dirs {
    fn create(root: &Path) -> io::Result<Self> {
        let d = Self {
            journal: root.join("journal"),
            recordings: root.join("recordings"),
            outbox: root.join("outbox"),
            index: root.join("index.jsonl"),
        };
        fs::create_dir_all(&d.journal)?;
        fs::create_dir_all(&d.recordings)?;
        fs::create_dir_all(&d.outbox)?;
        Ok(d)
    }

    fn journal_file(&self, s: SessionId) -> PathBuf {
        self.journal.join(format!("{:016x}.vxj", s.0))
    }
}

/// The recorder task: the core, the journals, the output files.
struct Core {
    rec: Recorder,
    shared: Arc<Shared>,
    journals: HashMap<SessionId, File>,
    dirty: HashSet<SessionId>,
    index_file: File,
    fsync_interval: Duration,
    logged: HashSet<String>,
    /// Per-session bytes of the current receive batch.
    batch: HashMap<SessionId, Vec<u8>>,
    /// Recording ids to the uploader, when S3 is configured.
    offload: Option<mpsc::UnboundedSender<String>>,
}

/// Datagrams taken per wake-up before they are journaled and processed.
const BATCH: usize = 64;

impl Core {
    fn new(config: &Config, shared: Arc<Shared>) -> io::Result<Self> {
        let index_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shared.dirs.index)?;
        Ok(Self {
            rec: Recorder::new(RecorderConfig {
                idle_timeout_ns: u64::try_from(config.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            }),
            shared,
            journals: HashMap::new(),
            dirty: HashSet::new(),
            index_file,
            fsync_interval: config.fsync_interval,
            logged: HashSet::new(),
            batch: HashMap::new(),
            offload: None,
        })
    }

    /// Replays every journal: stopped sessions are rendered, running ones
    /// resume (their journal reopened for appending).
    fn replay(&mut self) -> io::Result<()> {
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.shared.dirs.journal)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "vxj"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = fs::read(&path)?;
            let mut reader = journal::Reader::new(&bytes);
            let mut session = None;
            for r in reader.by_ref() {
                match r.kind {
                    RecordKind::Control => {
                        if let Ok(Some((f, _))) = FrameView::split(r.payload)
                            && let Ok(Some(msg)) = Control::parse(&f)
                        {
                            if let Control::Start(s) = &msg {
                                session = Some(s.session);
                            }
                            let _ = self.rec.handle_control(r.now, &msg);
                        }
                    }
                    RecordKind::Media => {
                        let _ = self.rec.handle_media(r.now, r.payload);
                    }
                }
            }
            let valid = reader.valid_len();
            tracing::info!(journal = %path.display(), records_bytes = valid, torn = bytes.len() - valid, "replayed");
            match session {
                Some(s) if self.rec.is_active(s) => {
                    let f = OpenOptions::new().write(true).open(&path)?;
                    // Cut a torn tail so new records follow intact ones.
                    f.set_len(valid as u64)?;
                    drop(f);
                    let f = OpenOptions::new().append(true).open(&path)?;
                    self.journals.insert(s, f);
                }
                Some(_) => {}
                None => {
                    // No intact start record: nothing to render.
                    fs::remove_file(&path)?;
                }
            }
            self.drain_recordings()?;
        }
        Ok(())
    }

    async fn run(mut self, udp: UdpSocket, mut control: mpsc::Receiver<Vec<u8>>) -> io::Result<()> {
        let mut tick = tokio::time::interval(self.fsync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 65_536];
        let mut datagrams: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                r = udp.recv_from(&mut buf) => {
                    let (n, _) = r?;
                    datagrams.push(buf[..n].to_vec());
                    while datagrams.len() < BATCH {
                        match udp.try_recv_from(&mut buf) {
                            Ok((n, _)) => datagrams.push(buf[..n].to_vec()),
                            Err(_) => break,
                        }
                    }
                    self.on_media(now(), &mut datagrams)?;
                }
                Some(frame) = control.recv() => self.on_control(now(), &frame)?,
                _ = tick.tick() => self.on_tick(now())?,
            }
        }
    }

    fn on_media(&mut self, now: Timestamp, datagrams: &mut Vec<Vec<u8>>) -> io::Result<()> {
        // Journal first: one write per session for the whole batch.
        for d in datagrams.iter() {
            if let Ok(p) = MediaPacket::new_checked(&d[..])
                && self.journals.contains_key(&p.session())
            {
                let b = self.batch.entry(p.session()).or_default();
                journal::encode(RecordKind::Media, now, d, b);
            }
        }
        for (s, bytes) in self.batch.iter_mut() {
            if bytes.is_empty() {
                continue;
            }
            if let Some(f) = self.journals.get_mut(s) {
                f.write_all(bytes)?;
                self.dirty.insert(*s);
            }
            bytes.clear();
        }
        for d in datagrams.drain(..) {
            if let Err(e) = self.rec.handle_media(now, &d) {
                self.log_once(&e);
            }
        }
        Ok(())
    }

    fn on_control(&mut self, now: Timestamp, frame: &[u8]) -> io::Result<()> {
        let Ok(Some((f, _))) = FrameView::split(frame) else {
            return Ok(());
        };
        let Ok(Some(msg)) = Control::parse(&f) else {
            return Ok(());
        };
        let mut rec = Vec::with_capacity(frame.len() + journal::RECORD_HEADER);
        journal::encode(RecordKind::Control, now, frame, &mut rec);
        match &msg {
            Control::Start(s) if !self.rec.is_active(s.session) => {
                let path = self.shared.dirs.journal_file(s.session);
                let mut f = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)?;
                f.write_all(&rec)?;
                f.sync_data()?;
                sync_dir(&self.shared.dirs.journal)?;
                self.journals.insert(s.session, f);
            }
            Control::Update(u) => self.append_sync(u.session, &rec)?,
            Control::Stop { session, .. } => self.append_sync(*session, &rec)?,
            _ => {}
        }
        if let Err(e) = self.rec.handle_control(now, &msg) {
            self.log_once(&e);
        }
        self.drain_recordings()
    }

    fn append_sync(&mut self, s: SessionId, rec: &[u8]) -> io::Result<()> {
        if let Some(f) = self.journals.get_mut(&s) {
            f.write_all(rec)?;
            f.sync_data()?;
            self.dirty.remove(&s);
        }
        Ok(())
    }

    fn on_tick(&mut self, now: Timestamp) -> io::Result<()> {
        for s in self.dirty.drain() {
            if let Some(f) = self.journals.get(&s) {
                f.sync_data()?;
            }
        }
        if self.rec.poll_timeout().is_some_and(|t| t <= now) {
            self.rec.handle_timeout(now);
        }
        self.drain_recordings()?;
        if let Ok(mut st) = self.shared.stats.lock() {
            *st = *self.rec.stats();
        }
        Ok(())
    }

    fn drain_recordings(&mut self) -> io::Result<()> {
        while let Some(done) = self.rec.poll_recording() {
            self.store(&done)?;
        }
        Ok(())
    }

    /// Writes a finished recording's files and index line, then drops its
    /// journal.
    fn store(&mut self, done: &Recording) -> io::Result<()> {
        let entry = Entry::new(done);
        let dir = &self.shared.dirs.recordings;
        if let Some(name) = &entry.stereo {
            write_atomic(dir, name, &wav::to_bytes(&done.stereo(), 2))?;
        }
        if let Some(name) = &entry.mono {
            write_atomic(dir, name, &wav::to_bytes(&done.mono(), 1))?;
        }
        sync_dir(dir)?;
        self.index_file.write_all(&index::line(&entry))?;
        self.index_file.sync_data()?;

        tracing::info!(id = %entry.id, call_id = %entry.call_id, duration_ms = entry.duration_ms, reason = %entry.reason, "recording stored");
        let id = entry.id.clone();
        if let Ok(mut idx) = self.shared.index.write() {
            idx.insert(entry);
        }
        // Queued only once the entry is in the index the uploader reads.
        if let Some(tx) = &self.offload {
            write_atomic(&self.shared.dirs.outbox, &id, b"")?;
            sync_dir(&self.shared.dirs.outbox)?;
            let _ = tx.send(id);
        }
        let s = done.start.session;
        self.journals.remove(&s);
        self.dirty.remove(&s);
        match fs::remove_file(self.shared.dirs.journal_file(s)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_dir(&self.shared.dirs.journal)
    }

    fn log_once(&mut self, e: &RecorderError) {
        let cause = match e {
            RecorderError::Malformed(_) | RecorderError::MalformedRtp => "malformed",
            RecorderError::UnknownSession(_) => "unknown session",
            RecorderError::AfterStop(_) => "after stop",
            RecorderError::DuplicateStart(_) => "duplicate start",
            RecorderError::UnknownLeg(..) => "unknown leg",
        };
        if self.logged.insert(cause.to_owned()) {
            tracing::warn!(error = %e, "dropping input (logged once per cause; see /metrics)");
        }
    }
}

async fn accept_control(tcp: TcpListener, tx: mpsc::Sender<Vec<u8>>) {
    loop {
        match tcp.accept().await {
            Ok((stream, peer)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = control_connection(stream, tx).await {
                        tracing::warn!(%peer, error = %e, "metadata connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One metadata connection: version negotiation, then frames to the core.
/// A malformed frame closes the connection (the stream cannot be
/// resynchronised); its sessions finish by idle timeout unless a new
/// connection stops them.
async fn control_connection(mut stream: TcpStream, tx: mpsc::Sender<Vec<u8>>) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut negotiated = false;
    loop {
        loop {
            let (len, msg) = match FrameView::split(&buf) {
                Ok(Some((f, used))) => (used, Control::parse(&f)),
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            };
            let frame: Vec<u8> = buf.drain(..len).collect();
            match msg {
                Ok(Some(Control::Hello { min, max, agent })) => {
                    let mut out = Vec::new();
                    let reply = match negotiate(min, max) {
                        Some(version) => {
                            tracing::info!(%agent, version = version.0, "metadata sender connected");
                            negotiated = true;
                            Control::HelloAck { version }
                        }
                        None => Control::Reject {
                            reason: format!(
                                "no common version: sender {}..={}, recorder {}..={}",
                                min.0,
                                max.0,
                                crate::proto::VERSIONS.0.0,
                                crate::proto::VERSIONS.1.0
                            ),
                        },
                    };
                    let _ = reply.emit(&mut out);
                    stream.write_all(&out).await?;
                    if !negotiated {
                        return Ok(());
                    }
                }
                Ok(Some(_)) if !negotiated => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "message before hello",
                    ));
                }
                Ok(Some(_)) => {
                    if tx.send(frame).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => {} // unknown frame type: skipped
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// HTTP query of `GET /api/recordings`: `from`/`to` in Unix seconds.
#[derive(Debug, Default, serde::Deserialize)]
struct SearchParams {
    number: Option<String>,
    domain: Option<String>,
    call_id: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    min_duration_ms: Option<u64>,
    max_duration_ms: Option<u64>,
}

async fn search(State(s): State<Arc<Shared>>, UrlQuery(p): UrlQuery<SearchParams>) -> Response {
    let q = Query {
        number: p.number.filter(|x| !x.is_empty()),
        domain: p.domain.filter(|x| !x.is_empty()),
        call_id: p.call_id.filter(|x| !x.is_empty()),
        from: p.from.map(|t| t.saturating_mul(1_000_000_000)),
        to: p
            .to
            .map(|t| t.saturating_mul(1_000_000_000).saturating_add(999_999_999)),
        min_duration_ms: p.min_duration_ms,
        max_duration_ms: p.max_duration_ms,
    };
    let Ok(idx) = s.index.read() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let hits: Vec<&Entry> = idx.search(&q);
    axum::Json(serde_json::json!({ "recordings": hits })).into_response()
}

async fn download(State(s): State<Arc<Shared>>, UrlPath(file): UrlPath<String>) -> Response {
    let (id, mono) = if let Some(id) = file.strip_suffix(".mono.wav") {
        (id, true)
    } else if let Some(id) = file.strip_suffix(".wav") {
        (id, false)
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Only files the index names are served (no path from the URL).
    let name = {
        let Ok(idx) = s.index.read() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let Some(e) = idx.get(id) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let name = if mono {
            e.mono.as_ref()
        } else {
            e.stereo.as_ref().or(e.mono.as_ref())
        };
        match name {
            Some(n) => n.clone(),
            None => return StatusCode::NOT_FOUND.into_response(),
        }
    };
    match tokio::fs::read(s.dirs.recordings.join(&name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let st = s.stats.lock().map(|g| *g).unwrap_or_default();
    let recordings = s.index.read().map(|i| i.len()).unwrap_or(0);
    let mut out = String::new();
    for (name, v) in [
        ("media_packets_total", st.media),
        ("dropped_malformed_total", st.malformed),
        ("dropped_unknown_session_total", st.unknown_session),
        ("dropped_after_stop_total", st.after_stop),
        ("dropped_unknown_leg_total", st.unknown_leg),
        ("rejected_control_total", st.rejected_control),
        ("duplicates_total", st.duplicates),
        ("late_packets_total", st.late),
        ("unsupported_payload_total", st.unsupported_payload),
        ("sessions_stopped_total", st.stopped),
        ("sessions_timed_out_total", st.timed_out),
        ("recordings_indexed", recordings as u64),
        ("s3_uploads_total", s.uploads.load(Ordering::Relaxed)),
        (
            "s3_upload_failures_total",
            s.upload_failures.load(Ordering::Relaxed),
        ),
        ("s3_outbox", s.outbox.load(Ordering::Relaxed)),
    ] {
        out.push_str(&format!("voxplane_mis_{name} {v}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn s3_store(c: &S3Config) -> io::Result<object_store::aws::AmazonS3> {
    nqs::offload::s3_store(c).map_err(io::Error::other)
}

/// The uploader task: drives the [`RetryQueue`] with real time and puts
/// each recording's files and entry.
async fn uploader(
    store: object_store::aws::AmazonS3,
    prefix: String,
    retry: RetryConfig,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let mut q = RetryQueue::new(retry);
    let mut logged_failure = false;
    loop {
        let wait = q
            .poll_timeout()
            .map(|t| Duration::from_nanos(t.0.saturating_sub(now().0)))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            id = rx.recv() => match id {
                Some(id) => q.handle_enqueue(now(), id),
                None => return,
            },
            _ = tokio::time::sleep(wait) => {}
        }
        while let Some(id) = q.poll_upload(now()) {
            let ok = match upload(&store, &prefix, &shared, &id).await {
                Ok(()) => {
                    shared.uploads.fetch_add(1, Ordering::Relaxed);
                    logged_failure = false;
                    let _ = fs::remove_file(shared.dirs.outbox.join(&id));
                    tracing::info!(%id, "uploaded to S3");
                    true
                }
                Err(e) => {
                    shared.upload_failures.fetch_add(1, Ordering::Relaxed);
                    if !logged_failure {
                        tracing::warn!(%id, error = %e, "S3 upload failed; recordings stay local and are retried");
                        logged_failure = true;
                    }
                    false
                }
            };
            q.handle_result(now(), &id, ok);
        }
        shared.outbox.store(q.len() as u64, Ordering::Relaxed);
    }
}

async fn upload(
    store: &object_store::aws::AmazonS3,
    prefix: &str,
    shared: &Shared,
    id: &str,
) -> Result<(), String> {
    use object_store::ObjectStoreExt;
    let entry = shared
        .index
        .read()
        .map_err(|_| "index lock poisoned".to_owned())?
        .get(id)
        .cloned();
    let Some(entry) = entry else {
        // Never dropped silently: retried (and counted) until it appears.
        return Err(format!("{id} is not in the index"));
    };
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for name in [&entry.stereo, &entry.mono].into_iter().flatten() {
        let bytes = tokio::fs::read(shared.dirs.recordings.join(name))
            .await
            .map_err(|e| format!("reading {name}: {e}"))?;
        files.push((name.clone(), bytes));
    }
    files.push((format!("{id}.json"), index::line(&entry)));
    for (name, bytes) in files {
        let path = object_store::path::Path::from(format!("{prefix}{name}"));
        store
            .put(&path, bytes.into())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Writes `dir/name` atomically: a temporary file, fsync, rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_or_empty(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The driver's clock: wall time as the core's `now`.
#[expect(
    clippy::disallowed_methods,
    reason = "the driver is where the clock is read; cores get `now` from here"
)]
fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_secs_nanos(d.as_secs(), d.subsec_nanos())
}
