//! Offload to an S3-compatible object store, shared by NQS (per-call pcaps)
//! and MIS (recordings).
//!
//! - [`RetryQueue`] (sans-IO): which items still have to be uploaded, and
//!   when to try each again.
//! - [`s3_store`]: the client both services build from [`S3Config`].
//! - [`PcapOffload`] (a driver: it reads files and talks to the store, but
//!   takes the clock as an argument): NQS's uploader of per-call pcaps.
//!
//! # Retry queue driving contract
//! [`RetryQueue::handle_enqueue`] for every item written locally (and for
//! every item found pending at start); take work with
//! [`RetryQueue::poll_upload`] until it returns `None`; report each attempt
//! with [`RetryQueue::handle_result`]; sleep until
//! [`RetryQueue::poll_timeout`]. A failed upload is retried after a backoff
//! that doubles from `initial_backoff_ns` up to `max_backoff_ns`, forever:
//! an item is never dropped because the object store is down (it stays
//! local and queued meanwhile).
//!
//! # Pcap offload
//! The durable queue is the index itself: a `pcaps` row without a
//! `pcap_objects` row is pending ([`SqliteSink::pcaps_to_offload`]), so
//! nothing is lost across restarts or outages. The uploader reads the rows
//! written since its last scan every `scan_interval` (all pending rows once
//! at start), keeps at most [`MAX_QUEUED`] in memory (the rest wait in the
//! index), puts each pending file at
//! `<prefix><path relative to the spool>` and records that object path
//! ([`SqliteSink::set_pcap_object`]); the API serves the object when the
//! local copy is gone (retention).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt};

use crate::sink::sqlite::SqliteSink;

use wire::Timestamp;

/// Backoff settings.
#[derive(Clone, Copy, Debug)]
pub struct RetryConfig {
    /// First retry delay, ns.
    pub initial_backoff_ns: u64,
    /// Largest retry delay, ns.
    pub max_backoff_ns: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ns: 1_000_000_000,
            max_backoff_ns: 60_000_000_000,
        }
    }
}

/// Items waiting for upload.
#[derive(Debug, Default)]
pub struct RetryQueue {
    config: RetryConfig,
    items: BTreeMap<String, Item>,
}

#[derive(Debug)]
struct Item {
    failures: u32,
    next_try: Timestamp,
    in_flight: bool,
}

impl RetryQueue {
    /// An empty queue.
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config,
            items: BTreeMap::new(),
        }
    }

    /// Adds an item id, due at once (no-op if already queued).
    pub fn handle_enqueue(&mut self, now: Timestamp, id: String) {
        self.items.entry(id).or_insert(Item {
            failures: 0,
            next_try: now,
            in_flight: false,
        });
    }

    /// The next item due for an upload attempt (marked in flight until
    /// its result is reported).
    pub fn poll_upload(&mut self, now: Timestamp) -> Option<String> {
        let (id, item) = self
            .items
            .iter_mut()
            .filter(|(_, i)| !i.in_flight && i.next_try <= now)
            .min_by_key(|(_, i)| i.next_try)?;
        item.in_flight = true;
        Some(id.clone())
    }

    /// Reports an attempt: success removes the id, failure schedules a
    /// retry.
    pub fn handle_result(&mut self, now: Timestamp, id: &str, ok: bool) {
        if ok {
            self.items.remove(id);
            return;
        }
        if let Some(i) = self.items.get_mut(id) {
            i.in_flight = false;
            i.failures = i.failures.saturating_add(1);
            let shift = (i.failures - 1).min(32);
            let backoff = self
                .config
                .initial_backoff_ns
                .saturating_mul(1u64 << shift)
                .min(self.config.max_backoff_ns);
            i.next_try = Timestamp(now.0.saturating_add(backoff));
        }
    }

    /// When the next waiting (not in-flight) item is due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.items
            .values()
            .filter(|i| !i.in_flight)
            .map(|i| i.next_try)
            .min()
    }

    /// Items not yet uploaded (in flight included).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether everything is uploaded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Where to offload. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_REGION`,
/// default `us-east-1`).
#[derive(Clone, Debug)]
pub struct S3Config {
    /// Endpoint URL (`http://127.0.0.1:8333`); path-style requests.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix (`recordings/`, `pcaps/`).
    pub prefix: String,
}

/// An S3 client for `c`: path-style requests, plain HTTP allowed, short
/// timeouts and one attempt per call (the [`RetryQueue`] retries).
/// Credentials and region come from the environment (see [`S3Config`]).
///
/// # Errors
///
/// When the configuration is not usable (e.g. a malformed endpoint).
pub fn s3_store(c: &S3Config) -> Result<object_store::aws::AmazonS3, object_store::Error> {
    let env = |k: &str| std::env::var(k).ok();
    s3_store_with(
        c,
        env("AWS_ACCESS_KEY_ID").zip(env("AWS_SECRET_ACCESS_KEY")),
        &env("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
    )
}

/// [`s3_store`] with explicit credentials (`(key id, secret)`) and region.
///
/// # Errors
///
/// When the configuration is not usable (e.g. a malformed endpoint).
pub fn s3_store_with(
    c: &S3Config,
    credentials: Option<(String, String)>,
    region: &str,
) -> Result<object_store::aws::AmazonS3, object_store::Error> {
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&c.endpoint)
        .with_bucket_name(&c.bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(false)
        // Our queue retries; one quick attempt per try here.
        .with_retry(object_store::RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .with_client_options(
            // Replaces every client option: `allow_http` is set here.
            object_store::ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(10))
                .with_connect_timeout(Duration::from_secs(2)),
        );
    if let Some((id, secret)) = credentials {
        b = b.with_access_key_id(id).with_secret_access_key(secret);
    }
    b.build()
}

/// The bytes of `object`.
///
/// # Errors
///
/// [`object_store::Error::NotFound`] when there is no such object; any other
/// error when the store cannot be reached.
pub async fn fetch(store: &dyn ObjectStore, object: &str) -> Result<Vec<u8>, object_store::Error> {
    let r = store.get(&object_store::path::Path::from(object)).await?;
    Ok(r.bytes().await?.to_vec())
}

/// Counters of the pcap offload (exposed at `/metrics`).
#[derive(Debug, Default)]
pub struct OffloadStats {
    /// Pcaps uploaded.
    pub uploaded: AtomicU64,
    /// Failed upload attempts (each is retried).
    pub failures: AtomicU64,
    /// Pcaps whose local file was gone before it could be uploaded.
    pub missing: AtomicU64,
    /// Pcaps waiting for upload now.
    pub pending: AtomicU64,
}

/// Pcaps the uploader holds in memory at most; further pending rows stay in
/// the index until there is room (an S3 outage does not grow memory).
pub const MAX_QUEUED: usize = 10_000;

/// Unix time now, as the driver reads it.
pub type OffloadClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The per-call pcap uploader. See the module docs.
pub struct PcapOffload {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Key prefix (e.g. `pcaps/`).
    pub prefix: String,
    /// The index: pending rows, object paths.
    pub index: SqliteSink,
    /// Root of the pcap spool (the `pcaps` rows' paths are relative to it).
    pub pcap_dir: PathBuf,
    /// Backoff of failed uploads.
    pub retry: RetryConfig,
    /// How often the index is scanned for new pcaps.
    pub scan_interval: Duration,
    /// Counters.
    pub stats: Arc<OffloadStats>,
    /// The clock (the driver's).
    pub clock: OffloadClock,
}

impl std::fmt::Debug for PcapOffload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapOffload")
            .field("prefix", &self.prefix)
            .field("pcap_dir", &self.pcap_dir)
            .finish_non_exhaustive()
    }
}

/// Why one pcap upload failed.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("local file gone: {0}")]
    Missing(String),
    #[error("{0}")]
    Retry(String),
}

impl PcapOffload {
    /// Runs until `stop` resolves, then returns (what is still pending is
    /// picked up by the next run from the index).
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let mut queue = RetryQueue::new(self.retry);
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        let mut logged_failure = false;
        let mut next_scan = Timestamp(0);
        // Rows up to this rowid are uploaded or in `queue`.
        let mut seen: i64 = 0;
        tokio::pin!(stop);
        loop {
            let now = (self.clock)();
            if now >= next_scan {
                next_scan = Timestamp(now.0.saturating_add(self.scan_interval.as_nanos() as u64));
                while queue.len() < MAX_QUEUED {
                    let room = (MAX_QUEUED - queue.len()).min(1000) as u32;
                    match self.index.pcaps_to_offload(seen, room) {
                        Ok(rows) => {
                            let more = rows.len() == room as usize;
                            for (rowid, call_id, path) in rows {
                                seen = seen.max(rowid);
                                queue.handle_enqueue(now, call_id.clone());
                                paths.insert(call_id, path);
                            }
                            if !more {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("pcap offload: reading the index: {e}");
                            break;
                        }
                    }
                }
            }
            while let Some(id) = queue.poll_upload((self.clock)()) {
                let rel = paths.get(&id).cloned().unwrap_or_default();
                let result = self.upload(&id, &rel).await;
                let now = (self.clock)();
                let ok = match result {
                    Ok(()) => {
                        self.stats.uploaded.fetch_add(1, Ordering::Relaxed);
                        logged_failure = false;
                        true
                    }
                    Err(UploadError::Missing(e)) => {
                        // Nothing to upload, ever: recorded as offloaded
                        // nowhere, so it leaves the queue.
                        self.stats.missing.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(call_id = %id, "pcap offload: {e}");
                        self.index.set_pcap_object(&id, "", now.0).is_ok()
                    }
                    Err(UploadError::Retry(e)) => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        if !logged_failure {
                            tracing::warn!(call_id = %id, "pcap offload failed (pcaps stay local and are retried): {e}");
                            logged_failure = true;
                        }
                        false
                    }
                };
                queue.handle_result(now, &id, ok);
                if ok {
                    paths.remove(&id);
                }
            }
            self.stats
                .pending
                .store(queue.len() as u64, Ordering::Relaxed);
            let now = (self.clock)();
            let wake = queue.poll_timeout().map_or(next_scan, |t| t.min(next_scan));
            let wait = Duration::from_nanos(wake.0.saturating_sub(now.0));
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// What the pcap spool's retention may remove: the pcaps already
    /// uploaded (a pcap not yet offloaded stays local whatever its age).
    pub fn removable(index: SqliteSink) -> crate::pcap_spool::Removable {
        Arc::new(move || match index.offloaded_pcap_paths() {
            Ok(paths) => Some(paths.into_iter().collect()),
            Err(e) => {
                tracing::warn!("pcap retention: reading the offload index: {e}");
                None
            }
        })
    }

    /// The object path of a pcap at `rel` in the spool.
    pub fn object_path(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    async fn upload(&self, call_id: &str, rel: &str) -> Result<(), UploadError> {
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || !rel_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(UploadError::Missing(format!("unusable index path {rel:?}")));
        }
        let bytes = match tokio::fs::read(self.pcap_dir.join(rel_path)).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(UploadError::Missing(rel.to_owned()));
            }
            Err(e) => return Err(UploadError::Retry(format!("reading {rel}: {e}"))),
        };
        let object = self.object_path(rel);
        self.store
            .put(
                &object_store::path::Path::from(object.as_str()),
                bytes.into(),
            )
            .await
            .map_err(|e| UploadError::Retry(e.to_string()))?;
        self.index
            .set_pcap_object(call_id, &object, (self.clock)().0)
            .map_err(|e| UploadError::Retry(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn backoff_doubles_to_the_cap_and_nothing_is_dropped() {
        let mut q = RetryQueue::new(RetryConfig {
            initial_backoff_ns: S,
            max_backoff_ns: 8 * S,
        });
        q.handle_enqueue(Timestamp(0), "a".into());
        q.handle_enqueue(Timestamp(0), "a".into());
        q.handle_enqueue(Timestamp(0), "b".into());
        assert_eq!(q.len(), 2);
        // Virtual time: the store is down for 30 s.
        let mut now = Timestamp(0);
        let mut tries_a = Vec::new();
        while now.0 < 30 * S {
            while let Some(id) = q.poll_upload(now) {
                if id == "a" {
                    tries_a.push(now.0 / S);
                }
                q.handle_result(now, &id, false);
            }
            now = q.poll_timeout().unwrap();
        }
        assert_eq!(tries_a, [0, 1, 3, 7, 15, 23]);
        assert_eq!(q.len(), 2);
        // Back up: both go through.
        now = q.poll_timeout().unwrap();
        while let Some(id) = q.poll_upload(now) {
            q.handle_result(now, &id, true);
        }
        assert!(q.is_empty());
        assert_eq!(q.poll_timeout(), None);
    }

    #[test]
    fn in_flight_items_are_not_handed_out_twice() {
        let mut q = RetryQueue::new(RetryConfig::default());
        q.handle_enqueue(Timestamp(5), "x".into());
        assert_eq!(q.poll_upload(Timestamp(4)), None);
        assert_eq!(q.poll_upload(Timestamp(5)).as_deref(), Some("x"));
        assert_eq!(q.poll_upload(Timestamp(99)), None);
        assert_eq!(q.poll_timeout(), None);
        q.handle_result(Timestamp(10), "x", false);
        assert_eq!(q.poll_timeout(), Some(Timestamp(10 + S)));
    }

    /// The uploader over an in-memory store, on paused tokio time: every
    /// pending pcap goes up at `<prefix><path>` with its object recorded,
    /// a vanished file leaves the queue as "missing", rows written later
    /// are found by the next scan, and nothing is uploaded twice.
    #[tokio::test(start_paused = true)]
    async fn uploads_what_the_index_lists() {
        use crate::sink::{Batch, PcapRow};
        let dir = tempfile::tempdir().unwrap();
        let index = SqliteSink::in_memory().unwrap();
        let row = |call: &str, rel: &str| PcapRow {
            day: 0,
            call_id: call.into(),
            path: rel.into(),
            packets: 1,
            bytes: 3,
            first_ns: 0,
            last_ns: 0,
        };
        let write = |rel: &str, body: &[u8]| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        let insert = |pcaps: Vec<PcapRow>| {
            let batch = Batch {
                pcaps,
                ..Batch::default()
            };
            index.write_now(&batch).unwrap();
        };
        write("2025/01/01/a.pcap", b"aaa");
        insert(vec![
            row("a", "2025/01/01/a.pcap"),
            row("gone", "2025/01/01/gone.pcap"),
        ]);
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let stats = Arc::new(OffloadStats::default());
        let start = tokio::time::Instant::now();
        let offload = PcapOffload {
            store: store.clone(),
            prefix: "p/".into(),
            index: index.clone(),
            pcap_dir: dir.path().to_path_buf(),
            retry: RetryConfig::default(),
            scan_interval: Duration::from_secs(1),
            stats: stats.clone(),
            clock: Arc::new(move || Timestamp(start.elapsed().as_nanos() as u64)),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(offload.run(async {
            let _ = stop_rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(stats.uploaded.load(Ordering::Relaxed), 1);
        assert_eq!(stats.missing.load(Ordering::Relaxed), 1);
        assert_eq!(
            fetch(store.as_ref(), "p/2025/01/01/a.pcap").await.unwrap(),
            b"aaa"
        );
        assert_eq!(
            index.pcap_object("a").unwrap().as_deref(),
            Some("p/2025/01/01/a.pcap")
        );
        assert_eq!(index.pcap_object("gone").unwrap().as_deref(), Some(""));
        assert!(index.pcaps_to_offload(0, 10).unwrap().is_empty());
        assert_eq!(index.offloaded_pcap_paths().unwrap(), ["2025/01/01/a.pcap"]);
        // A call finished later: found by the next scan, within a second.
        write("2025/01/02/b.pcap", b"bbbb");
        insert(vec![row("b", "2025/01/02/b.pcap")]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stats.uploaded.load(Ordering::Relaxed), 2);
        assert_eq!(stats.pending.load(Ordering::Relaxed), 0);
        assert_eq!(
            fetch(store.as_ref(), "p/2025/01/02/b.pcap").await.unwrap(),
            b"bbbb"
        );
        assert!(matches!(
            fetch(store.as_ref(), "p/2025/01/01/gone.pcap").await,
            Err(object_store::Error::NotFound { .. })
        ));
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
