//! Batching, back-pressure and spooling in front of a [`Sink`].
//!
//! Producers [`SinkHandle::send`] batches into a bounded channel (a full
//! channel makes them wait: back-pressure). The worker merges them up to
//! [`WorkerConfig::max_batch_rows`] or for [`WorkerConfig::flush_interval`],
//! then writes. A failed write goes to the [`RowSpool`]; while anything is
//! spooled, new rows are spooled behind it so the store receives them in
//! order, and the spool is retried every [`WorkerConfig::retry_interval`].
//! On shutdown (every handle dropped) pending rows are written or spooled:
//! nothing is lost, and the next start sends what is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::spool::RowSpool;
use super::{Batch, Sink};

/// Tunables of a sink worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Batches waiting in the channel before senders wait.
    pub channel_batches: usize,
    /// Rows merged before a write.
    pub max_batch_rows: usize,
    /// Longest time rows wait before a write.
    pub flush_interval: Duration,
    /// How often the spool is retried while the sink is failing.
    pub retry_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            channel_batches: 64,
            max_batch_rows: 10_000,
            flush_interval: Duration::from_secs(1),
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// Counters of a worker (for `/metrics`).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Rows the sink accepted.
    pub rows_written: AtomicU64,
    /// Rows put into the spool.
    pub rows_spooled: AtomicU64,
    /// Failed writes.
    pub write_errors: AtomicU64,
    /// Batches in the spool now.
    pub spooled_batches: AtomicU64,
}

/// The sending side of a worker. Drop every clone to shut it down.
#[derive(Clone)]
pub struct SinkHandle {
    tx: mpsc::Sender<Batch>,
    stats: Arc<WorkerStats>,
}

impl SinkHandle {
    /// Queues a batch, waiting while the channel is full.
    ///
    /// # Errors
    ///
    /// Gives the batch back when the worker has stopped.
    pub async fn send(&self, batch: Batch) -> Result<(), Batch> {
        self.tx.send(batch).await.map_err(|e| e.0)
    }

    /// Queues a batch from outside the runtime (a capture thread), blocking
    /// while the channel is full.
    ///
    /// # Errors
    ///
    /// Gives the batch back when the worker has stopped.
    ///
    /// # Panics
    ///
    /// When called from inside an async context (tokio's rule).
    pub fn blocking_send(&self, batch: Batch) -> Result<(), Batch> {
        self.tx.blocking_send(batch).map_err(|e| e.0)
    }

    /// The worker's counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }
}

/// Starts a worker for `sink` with its spool on the current tokio runtime.
pub fn spawn<S: Sink + 'static>(
    sink: S,
    spool: RowSpool,
    config: WorkerConfig,
) -> (SinkHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.channel_batches.max(1));
    let stats = Arc::new(WorkerStats::default());
    let worker = Worker {
        sink,
        spool,
        config,
        stats: stats.clone(),
        pending: Batch::default(),
    };
    let task = tokio::spawn(worker.run(rx));
    (SinkHandle { tx, stats }, task)
}

struct Worker<S> {
    sink: S,
    spool: RowSpool,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    pending: Batch,
}

impl<S: Sink> Worker<S> {
    async fn run(mut self, mut rx: mpsc::Receiver<Batch>) {
        let mut flush = tokio::time::interval(self.config.flush_interval);
        let mut retry = tokio::time::interval(self.config.retry_interval);
        self.update_spooled();
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(mut batch) => {
                        self.pending.append(&mut batch);
                        if self.pending.len() >= self.config.max_batch_rows {
                            self.flush().await;
                        }
                    }
                    None => break,
                },
                _ = flush.tick() => self.flush().await,
                _ = retry.tick() => self.drain_spool().await,
            }
        }
        self.flush().await;
    }

    async fn flush(&mut self) {
        self.drain_spool().await;
        if self.pending.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.pending);
        let spooled = self.stats.spooled_batches.load(Ordering::Relaxed) > 0;
        if !spooled {
            let rows = batch.len();
            let result = self.sink.write(&mut batch).await;
            self.stats
                .rows_written
                .fetch_add((rows - batch.len()) as u64, Ordering::Relaxed);
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("sink write failed, spooling {} rows: {e}", batch.len());
                }
            }
        }
        match self.spool.push(&batch) {
            Ok(()) => {
                self.stats
                    .rows_spooled
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Keep the rows in memory and try again at the next flush.
                tracing::error!("cannot spool {} rows: {e}", batch.len());
                let mut batch = batch;
                self.pending.append(&mut batch);
            }
        }
        self.update_spooled();
    }

    /// Sends spooled batches, oldest first, until one fails.
    async fn drain_spool(&mut self) {
        loop {
            let (path, mut batch) = match self.spool.peek() {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("spool: {e}");
                    break;
                }
            };
            let rows = batch.len();
            let result = self.sink.write(&mut batch).await;
            let sent = rows - batch.len();
            self.stats
                .rows_written
                .fetch_add(sent as u64, Ordering::Relaxed);
            if let Err(e) = result {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("spooled batch not sent yet: {e}");
                if sent > 0
                    && let Err(e) = self.spool.replace(&path, &batch)
                {
                    tracing::error!("{e}");
                }
                break;
            }
            if let Err(e) = self.spool.remove(&path) {
                tracing::error!("{e}");
                break;
            }
        }
        self.update_spooled();
    }

    fn update_spooled(&self) {
        let n = self.spool.len().unwrap_or(0) as u64;
        self.stats.spooled_batches.store(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{PcapRow, SinkError};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    /// A sink that fails while told to.
    #[derive(Clone, Default)]
    struct Flaky {
        down: Arc<AtomicBool>,
        got: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for Flaky {
        async fn write(&mut self, batch: &mut Batch) -> Result<(), SinkError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(SinkError::Spool {
                    path: "flaky".into(),
                    source: std::io::Error::other("down"),
                });
            }
            let mut got = self.got.lock().unwrap();
            got.extend(batch.pcaps.iter().map(|p| p.call_id.clone()));
            *batch = Batch::default();
            Ok(())
        }
    }

    fn one(id: &str) -> Batch {
        Batch {
            pcaps: vec![PcapRow {
                day: 0,
                call_id: id.into(),
                path: String::new(),
                packets: 0,
                bytes: 0,
                first_ns: 0,
                last_ns: 0,
            }],
            ..Batch::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outage_spools_in_order_and_delivers_everything_when_back() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Flaky::default();
        let config = WorkerConfig {
            max_batch_rows: 2,
            ..WorkerConfig::default()
        };
        let (handle, task) = spawn(sink.clone(), RowSpool::open(dir.path()).unwrap(), config);
        handle.send(one("a")).await.unwrap();
        handle.send(one("b")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sink.down.store(true, Ordering::SeqCst);
        for id in ["c", "d", "e"] {
            handle.send(one(id)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(handle.stats().spooled_batches.load(Ordering::Relaxed) > 0);
        assert_eq!(*sink.got.lock().unwrap(), vec!["a", "b"]);
        sink.down.store(false, Ordering::SeqCst);
        handle.send(one("f")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            *sink.got.lock().unwrap(),
            vec!["a", "b", "c", "d", "e", "f"]
        );
        assert_eq!(handle.stats().spooled_batches.load(Ordering::Relaxed), 0);
        drop(handle);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_down_leaves_rows_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Flaky::default();
        sink.down.store(true, Ordering::SeqCst);
        let (handle, task) = spawn(
            sink.clone(),
            RowSpool::open(dir.path()).unwrap(),
            WorkerConfig::default(),
        );
        handle.send(one("x")).await.unwrap();
        drop(handle);
        task.await.unwrap();
        assert!(sink.got.lock().unwrap().is_empty());
        sink.down.store(false, Ordering::SeqCst);
        let (handle, task) = spawn(
            sink.clone(),
            RowSpool::open(dir.path()).unwrap(),
            WorkerConfig::default(),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(handle);
        task.await.unwrap();
        assert_eq!(*sink.got.lock().unwrap(), vec!["x"]);
    }

    /// A sink that blocks until released.
    struct Stuck(Arc<tokio::sync::Semaphore>);

    impl Sink for Stuck {
        async fn write(&mut self, batch: &mut Batch) -> Result<(), SinkError> {
            self.0.acquire().await.expect("open").forget();
            *batch = Batch::default();
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_sink_makes_senders_wait() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let config = WorkerConfig {
            channel_batches: 1,
            max_batch_rows: 1,
            ..WorkerConfig::default()
        };
        let (handle, task) = spawn(
            Stuck(gate.clone()),
            RowSpool::open(dir.path()).unwrap(),
            config,
        );
        // The worker takes the first batch and blocks in write; the second
        // fills the channel; the third must wait.
        handle.send(one("1")).await.unwrap();
        tokio::task::yield_now().await;
        handle.send(one("2")).await.unwrap();
        let third = tokio::time::timeout(Duration::from_secs(5), handle.send(one("3"))).await;
        assert!(third.is_err(), "send completed although the sink is stuck");
        gate.add_permits(10);
        tokio::time::timeout(Duration::from_secs(5), handle.send(one("3")))
            .await
            .expect("released")
            .unwrap();
        drop(handle);
        task.await.unwrap();
        assert!(gate.available_permits() < 10);
    }
}
