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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use wire::Timestamp;

use crate::index::{self, Entry, Index};
use crate::journal::{self, RecordKind};
use crate::offload::{RetryConfig, RetryQueue};
use crate::proto::{Control, FrameView, MediaPacket, SessionId, negotiate};
use crate::recorder::{Recorder, RecorderConfig, RecorderError, Recording, Stats};
use crate::retention;
use crate::wav;
use nqs::api::auth::Keyring;

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
    /// Which local recordings to delete ([`crate::retention`]).
    pub retention: retention::Policy,
    /// How often retention is applied.
    pub retention_interval: Duration,
    /// Tokens the HTTP API accepts (`nqs::api::auth`: admin, reseller,
    /// share links); `None` serves everyone (keep the API on loopback).
    pub auth: Option<Keyring>,
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
        retention_deleted: AtomicU64::new(0),
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

    let udp = bind_media(config.media)?;
    let tcp = TcpListener::bind(config.control).await?;
    let http = TcpListener::bind(config.http).await?;
    on_ready(Bound {
        control: tcp.local_addr()?,
        media: udp.local_addr()?,
        http: http.local_addr()?,
    });

    let (tx, rx) = mpsc::channel::<Vec<u8>>(1024);
    tokio::spawn(accept_control(tcp, tx));
    let app = crate::api::router(shared, config.auth.clone());
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

/// State shared by the recorder task, the uploader and the HTTP API.
pub(crate) struct Shared {
    pub(crate) index: RwLock<Index>,
    pub(crate) stats: Mutex<Stats>,
    pub(crate) dirs: Dirs,
    pub(crate) uploads: AtomicU64,
    pub(crate) upload_failures: AtomicU64,
    pub(crate) outbox: AtomicU64,
    /// Recordings whose local files retention deleted.
    pub(crate) retention_deleted: AtomicU64,
}

#[derive(Clone, Debug)]
pub(crate) struct Dirs {
    journal: PathBuf,
    pub(crate) recordings: PathBuf,
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
    journals: HashMap<SessionId, Arc<File>>,
    /// The journal fsync batch running on its own thread, if any.
    syncing: Option<std::thread::JoinHandle<io::Result<()>>>,
    dirty: HashSet<SessionId>,
    index_file: File,
    fsync_interval: Duration,
    logged: HashSet<String>,
    /// Per-session bytes of the current receive batch.
    batch: HashMap<SessionId, Vec<u8>>,
    /// Recording ids to the uploader, when S3 is configured.
    offload: Option<mpsc::UnboundedSender<String>>,
    retention: retention::Policy,
    retention_interval_ns: u64,
    next_retention: Timestamp,
}

/// Datagrams taken per wake-up before they are journaled and processed.
const BATCH: usize = 64;
/// Most batches drained from the media socket before a metadata frame.
const DRAIN_BATCHES: usize = 64;

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
            syncing: None,
            dirty: HashSet::new(),
            index_file,
            fsync_interval: config.fsync_interval,
            retention: config.retention,
            retention_interval_ns: u64::try_from(config.retention_interval.as_nanos())
                .unwrap_or(u64::MAX),
            next_retention: Timestamp(0),
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
                    self.journals.insert(s, Arc::new(f));
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
                Some(frame) = control.recv() => {
                    // Media queued before this frame goes first, so a Stop
                    // does not overtake the copies sent ahead of it.
                    self.drain_socket(&udp, &mut buf, &mut datagrams)?;
                    self.on_control(now(), &frame)?;
                }
                _ = tick.tick() => self.on_tick(now())?,
            }
        }
    }

    /// Processes what the media socket holds now (bounded, so metadata is
    /// not starved by a flood).
    fn drain_socket(
        &mut self,
        udp: &UdpSocket,
        buf: &mut [u8],
        datagrams: &mut Vec<Vec<u8>>,
    ) -> io::Result<()> {
        for _ in 0..DRAIN_BATCHES {
            while datagrams.len() < BATCH {
                match udp.try_recv_from(buf) {
                    Ok((n, _)) => datagrams.push(buf[..n].to_vec()),
                    Err(_) => break,
                }
            }
            if datagrams.is_empty() {
                break;
            }
            self.on_media(now(), datagrams)?;
        }
        Ok(())
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
            if let Some(f) = self.journals.get(s) {
                (&**f).write_all(bytes)?;
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
                self.journals.insert(s.session, Arc::new(f));
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
        if let Some(f) = self.journals.get(&s) {
            (&**f).write_all(rec)?;
            f.sync_data()?;
            self.dirty.remove(&s);
        }
        Ok(())
    }

    fn on_tick(&mut self, now: Timestamp) -> io::Result<()> {
        // Journal fsyncs run on a thread of their own, one batch at a time,
        // so the receive loop never waits for the disk; sessions written
        // while a batch runs go in the next one.
        if self.syncing.as_ref().is_some_and(|h| h.is_finished())
            && let Some(h) = self.syncing.take()
        {
            h.join()
                .map_err(|_| io::Error::other("journal fsync thread panicked"))??;
        }
        if self.syncing.is_none() && !self.dirty.is_empty() {
            let files: Vec<Arc<File>> = self
                .dirty
                .drain()
                .filter_map(|s| self.journals.get(&s).cloned())
                .collect();
            self.syncing = Some(std::thread::spawn(move || {
                files.iter().try_for_each(|f| f.sync_data())
            }));
        }
        if self.rec.poll_timeout().is_some_and(|t| t <= now) {
            self.rec.handle_timeout(now);
        }
        self.drain_recordings()?;
        if let Ok(mut st) = self.shared.stats.lock() {
            *st = *self.rec.stats();
        }
        if self.retention.is_active() && now >= self.next_retention {
            self.next_retention = Timestamp(now.0.saturating_add(self.retention_interval_ns));
            self.apply_retention(now)?;
        }
        Ok(())
    }

    /// Deletes the local files [`retention::select`] picks. Without S3 the
    /// recording goes (a tombstone in the index); with S3 (only uploaded
    /// ones are picked) its entry stays, marked offloaded. The index line
    /// is durable before any file is removed: a crash in between leaves
    /// orphan files, never an entry without its files.
    fn apply_retention(&mut self, now: Timestamp) -> io::Result<()> {
        let dirs = &self.shared.dirs;
        let s3 = self.offload.is_some();
        let size = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| fs::metadata(dirs.recordings.join(n)).ok())
                .map_or(0, |m| m.len())
        };
        let doomed: Vec<Entry> = {
            let Ok(idx) = self.shared.index.read() else {
                return Ok(());
            };
            let local: Vec<&Entry> = idx.entries().filter(|e| !e.offloaded).collect();
            let candidates: Vec<retention::Local<'_>> = local
                .iter()
                .map(|e| retention::Local {
                    id: &e.id,
                    end_ns: e.end_ns,
                    bytes: size(&e.stereo) + size(&e.mono),
                    deletable: !s3 || !dirs.outbox.join(&e.id).exists(),
                })
                .collect();
            let ids = retention::select(&self.retention, now.0, &candidates);
            ids.iter().filter_map(|id| idx.get(id).cloned()).collect()
        };
        if doomed.is_empty() {
            return Ok(());
        }
        for e in &doomed {
            let mut mark = e.clone();
            mark.offloaded = s3;
            mark.removed = !s3;
            self.index_file.write_all(&index::line(&mark))?;
        }
        self.index_file.sync_data()?;
        for e in &doomed {
            if let Ok(mut idx) = self.shared.index.write() {
                let mut mark = e.clone();
                mark.offloaded = s3;
                mark.removed = !s3;
                idx.insert(mark);
            }
            for name in [&e.stereo, &e.mono].into_iter().flatten() {
                match fs::remove_file(dirs.recordings.join(name)) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
            }
            tracing::info!(id = %e.id, offloaded = s3, "retention: local files deleted");
        }
        sync_dir(&dirs.recordings)?;
        self.shared
            .retention_deleted
            .fetch_add(doomed.len() as u64, Ordering::Relaxed);
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
/// Receive buffer asked for on the media socket: it absorbs bursts while
/// the recorder task renders or writes (the kernel caps it at
/// `net.core.rmem_max`).
const MEDIA_RCVBUF: usize = 8 << 20;

/// The media socket, with a large receive buffer.
fn bind_media(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = sock.set_recv_buffer_size(MEDIA_RCVBUF) {
        tracing::warn!(error = %e, "media socket: could not enlarge the receive buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

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
