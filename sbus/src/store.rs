//! The in-process store API: typed reads and writes, acknowledged once durable, and
//! change subscriptions for hot reload. Thread-safe; share it in an `Arc`.
//!
//! Writes use pipelined group commit: a writer stages its change in the open storage
//! transaction and waits; a commit thread ends that transaction without fsync
//! ([`Replica::prepare_commit`]), releases the lock, fsyncs while the next writers (and
//! changes received from peers) stage into a new transaction, then takes the lock again to
//! acknowledge ([`Replica::finish_commit`]). So a commit carries everything staged while
//! the previous fsync ran, and staging never waits for the disk. Every
//! `put`/`delete`/`append_cdr` returns only after its change is durable, and nothing is
//! streamed to a peer before that.
//!
//! ```no_run
//! use sbus::record::{Domain, Placement};
//! use sbus::store::Store;
//! use sbus::types::{MemberId, Table};
//! let store = Store::open(std::path::Path::new("/var/lib/voxplane/sbus"), MemberId(1)).unwrap();
//! let changes = store.subscribe(&[Table::Domains]);
//! store.put(&Domain { name: "example.com".into(), placement: Placement::Global,
//!                     description: String::new() }).unwrap();
//! let d: Option<Domain> = store.get("example.com").unwrap();
//! for notice in changes.try_iter() { println!("reload {notice:?}"); }
//! ```

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::record::{self, BlobTable, Cdr, Record};
use crate::replica::{self, Config, Event, Replica, Stats};
use crate::sqlite::SqliteStorage;
use crate::storage::{Storage, StorageError};
use crate::types::{CdrId, MemberId, Millis, Op, Seq, Table, VersionVector};

/// The store's clock (the driver side of the sans-IO line).
pub trait Clock: Send + Sync {
    /// Now, in ms since the Unix epoch.
    fn now(&self) -> Millis;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(
        clippy::disallowed_methods,
        reason = "the store handle is a driver: it owns the clock the core is given"
    )]
    fn now(&self) -> Millis {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The replication core refused or failed (backpressure, storage…).
    #[error(transparent)]
    Replica(#[from] replica::Error),
    /// A stored value is not the record type asked for.
    #[error("row {table:?}/{key} does not decode: {source}")]
    Decode {
        /// Table.
        table: Table,
        /// Key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A stored CDR does not decode.
    #[error("CDR {id:?} does not decode: {source}")]
    DecodeCdr {
        /// Which CDR.
        id: CdrId,
        /// Why.
        source: serde_json::Error,
    },
    /// The group commit that carried this write failed; the write is lost.
    #[error("commit failed: {0}")]
    CommitFailed(String),
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        Error::Replica(e.into())
    }
}

/// A change notification (after commit).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// A row changed.
    Changed {
        /// Table.
        table: Table,
        /// Key.
        key: String,
    },
    /// A CDR was appended.
    Cdr(CdrId),
}

/// A member's status.
#[derive(Clone, Debug)]
pub struct Status {
    /// This member.
    pub member: MemberId,
    /// Its region (data sovereignty), if configured.
    pub region: Option<String>,
    /// Durable version vector.
    pub applied: VersionVector,
    /// Counters.
    pub stats: Stats,
    /// Configured peers and their status.
    pub peers: Vec<(MemberId, replica::PeerStatus)>,
}

struct Inner<S: Storage> {
    replica: Replica<S>,
    /// Recent commit generations whose write-back failed, and why (the writers they
    /// carried get the error).
    failed: VecDeque<(u64, String)>,
    /// An fsync failed: nothing more is acknowledged.
    poisoned: Option<String>,
    stop: bool,
    subs: Vec<(Vec<Table>, bool, Sender<Notice>)>,
}

struct Shared<S: Storage> {
    inner: Mutex<Inner<S>>,
    on_commit: Mutex<Option<CommitHook>>,
    /// Writers wait here for their commit, on the condition variable of its
    /// generation's parity: the writers staging for the next commit are not woken when
    /// the one before it ends.
    done: [Condvar; 2],
    /// The commit thread waits here for work.
    work: Condvar,
    clock: Box<dyn Clock>,
}

/// Pause between two WAL checkpoints.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// How many failed commit generations are remembered for their waiting writers.
const FAILED_KEPT: usize = 64;

/// A member's store. See the module docs.
pub struct Store<S: Storage + Send + 'static = SqliteStorage> {
    shared: Arc<Shared<S>>,
    committer: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

impl<S: Storage + Send + 'static> std::fmt::Debug for Store<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Called after each group commit of local writes (the network driver wakes up on it).
pub type CommitHook = Box<dyn Fn() + Send + Sync>;

/// The file name of a member's database inside its data directory.
pub const DB_FILE: &str = "sbus.db";

impl Store<SqliteStorage> {
    /// Opens (creating) the store of `member` in directory `dir`.
    ///
    /// # Errors
    /// The directory or database cannot be opened.
    pub fn open(dir: &Path, member: MemberId) -> Result<Store<SqliteStorage>, Error> {
        Store::open_in_region(dir, member, None)
    }

    /// As [`Store::open`], for a member of `region` (data sovereignty: it holds, and
    /// accepts writes of, only the domains whose placement allows its region; `None`
    /// holds only data that goes everywhere).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_in_region(
        dir: &Path,
        member: MemberId,
        region: Option<String>,
    ) -> Result<Store<SqliteStorage>, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::CommitFailed(format!("cannot create {}: {e}", dir.display())))?;
        let storage = SqliteStorage::open(&dir.join(DB_FILE))?;
        let mut cfg = Config::new(member);
        cfg.region = region;
        Store::with_storage(cfg, storage, Box::new(SystemClock))
    }
}

impl<S: Storage + Send + 'static> Store<S> {
    /// A store over any storage, with the given clock. The store runs its own commits
    /// (a thread named `sbus-commit`), so `cfg.auto_commit` is turned off.
    ///
    /// # Errors
    /// Storage failure while recovering.
    pub fn with_storage(
        mut cfg: Config,
        storage: S,
        clock: Box<dyn Clock>,
    ) -> Result<Store<S>, Error> {
        cfg.auto_commit = false;
        let mut storage = storage;
        let housekeeping = storage.take_checkpointer();
        let replica = Replica::open(cfg, storage, clock.now())?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                replica,
                failed: VecDeque::new(),
                poisoned: None,
                stop: false,
                subs: Vec::new(),
            }),
            done: [Condvar::new(), Condvar::new()],
            work: Condvar::new(),
            on_commit: Mutex::new(None),
            clock,
        });
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        let checkpointer = match housekeeping {
            Some(mut run) => Some(
                std::thread::Builder::new()
                    .name("sbus-checkpoint".into())
                    .spawn(move || {
                        // After each commit (at most every CHECKPOINT_PAUSE): copy the
                        // WAL back so it stays short; ends when the commit thread does.
                        while nudged.recv().is_ok() {
                            if let Err(e) = run() {
                                tracing::warn!(error = %e, "sbus checkpoint failed");
                            }
                            std::thread::sleep(CHECKPOINT_PAUSE);
                        }
                    })
                    .map_err(|e| Error::CommitFailed(format!("cannot start a thread: {e}")))?,
            ),
            None => None,
        };
        let committer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sbus-commit".into())
                .spawn(move || commit_loop(&shared, &nudge))
                .map_err(|e| Error::CommitFailed(format!("cannot start a thread: {e}")))?
        };
        Ok(Store {
            shared,
            committer: Some(committer),
            checkpointer,
        })
    }

    /// Writes (inserts or replaces) a record; returns once durable.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn put<R: Record>(&self, r: &R) -> Result<Seq, Error> {
        self.put_raw(R::TABLE, &r.key(), record::encode(r))
    }

    /// Reads a record.
    ///
    /// # Errors
    /// Storage failure, or the stored value is not an `R`.
    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>, Error> {
        self.get_raw(R::TABLE, key)?
            .map(|b| decode::<R>(R::TABLE, key, &b))
            .transpose()
    }

    /// Deletes a record; returns once durable.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn delete<R: Record>(&self, key: &str) -> Result<Seq, Error> {
        self.delete_raw(R::TABLE, key)
    }

    /// Records whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// Storage failure, or a stored value is not an `R`.
    pub fn list<R: Record>(&self, prefix: &str) -> Result<Vec<R>, Error> {
        let rows = self.lock().replica.scan(R::TABLE, prefix)?;
        rows.into_iter()
            .map(|(k, v)| decode::<R>(R::TABLE, &k, &v))
            .collect()
    }

    /// Writes a blob (greeting or voicemail); returns once durable.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn put_blob(&self, table: BlobTable, key: &str, bytes: &[u8]) -> Result<Seq, Error> {
        self.submit(|r, now| r.write_blob(now, table.table(), key, bytes))
    }

    /// Reads a blob.
    ///
    /// # Errors
    /// Storage failure.
    pub fn blob(&self, table: BlobTable, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.get_raw(table.table(), key)
    }

    /// Deletes a blob; returns once durable.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn delete_blob(&self, table: BlobTable, key: &str) -> Result<Seq, Error> {
        self.delete_raw(table.table(), key)
    }

    /// Appends a CDR; returns its id once durable.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn append_cdr(&self, cdr: &Cdr) -> Result<CdrId, Error> {
        let member = self.lock().replica.member();
        let record = record::encode(cdr);
        let seq = self.submit(|r, now| r.write(now, Op::AppendCdr { record }))?;
        Ok(CdrId {
            origin: member,
            seq,
        })
    }

    /// CDRs after `after` in id order (origin, then sequence), at most `max`.
    ///
    /// # Errors
    /// Storage failure, or a stored CDR does not decode.
    pub fn cdrs(&self, after: Option<CdrId>, max: usize) -> Result<Vec<(CdrId, Cdr)>, Error> {
        let list = self.lock().replica.cdrs(after, max)?;
        list.into_iter()
            .map(|c| {
                record::decode(&c.record)
                    .map(|r| (c.id, r))
                    .map_err(|source| Error::DecodeCdr { id: c.id, source })
            })
            .collect()
    }

    /// Writes raw bytes to a row; returns once durable.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn put_raw(&self, table: Table, key: &str, value: Vec<u8>) -> Result<Seq, Error> {
        let key = key.to_owned();
        self.submit(|r, now| r.write(now, Op::Put { table, key, value }))
    }

    /// Writes many raw changes, sharing group commits; returns the sequence number of the
    /// last once all are durable. Backpressure is checked for the whole batch first.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn write_batch(&self, ops: Vec<Op>) -> Result<Seq, Error> {
        self.submit(|r, now| {
            let limit = r.config().max_pending;
            if r.pending() + ops.len() > limit {
                return Err(replica::Error::Backpressure {
                    pending: r.pending(),
                    limit,
                });
            }
            let mut last = r.applied().get(r.member());
            for op in ops {
                last = r.write(now, op)?;
            }
            Ok(last)
        })
    }

    /// Reads a row's raw bytes.
    ///
    /// # Errors
    /// Storage failure.
    pub fn get_raw(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock().replica.get(table, key)?)
    }

    /// Deletes a row; returns once durable.
    ///
    /// # Errors
    /// Backpressure, storage failure.
    pub fn delete_raw(&self, table: Table, key: &str) -> Result<Seq, Error> {
        let key = key.to_owned();
        self.submit(|r, now| r.write(now, Op::Delete { table, key }))
    }

    /// Notifies of every committed change to `tables` (all tables if empty; CDRs are
    /// included when `tables` is empty). Dropping the receiver unsubscribes.
    pub fn subscribe(&self, tables: &[Table]) -> Receiver<Notice> {
        let (tx, rx) = channel();
        self.lock()
            .subs
            .push((tables.to_vec(), tables.is_empty(), tx));
        rx
    }

    /// Status and counters.
    #[must_use]
    pub fn status(&self) -> Status {
        let g = self.lock();
        let r = &g.replica;
        Status {
            member: r.member(),
            region: r.config().region.clone(),
            applied: r.applied().clone(),
            stats: r.stats().clone(),
            peers: r
                .peers()
                .filter_map(|p| r.peer_status(p).map(|s| (p, s)))
                .collect(),
        }
    }

    /// Sets the hook called after each group commit of local writes.
    pub fn set_on_commit(&self, hook: CommitHook) {
        *self
            .shared
            .on_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Runs `f` on the replication core (for the network driver), then delivers the
    /// notifications it produced; changes it staged (received from peers) are
    /// committed by the commit thread.
    pub fn with_replica<T>(&self, f: impl FnOnce(&mut Replica<S>, Millis) -> T) -> T {
        let now = self.shared.clock.now();
        let mut g = self.lock();
        let durable = g.replica.durable_gen();
        let out = f(&mut g.replica, now);
        dispatch(&mut g);
        if g.replica.pending() > 0 {
            self.shared.work.notify_one();
        }
        if g.replica.durable_gen() != durable {
            // `f` committed (a snapshot does): writers it made durable may go.
            self.shared.wake_all();
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        self.shared.lock()
    }

    /// Stages a write, then waits for the commit that carries it.
    fn submit(
        &self,
        write: impl FnOnce(&mut Replica<S>, Millis) -> Result<Seq, replica::Error>,
    ) -> Result<Seq, Error> {
        let mut g = self.lock();
        if let Some(why) = &g.poisoned {
            return Err(Error::CommitFailed(why.clone()));
        }
        let now = self.shared.clock.now();
        let seq = write(&mut g.replica, now)?;
        let target = g.replica.written_gen() + 1;
        self.shared.work.notify_one();
        loop {
            if let Some((_, why)) = g.failed.iter().find(|(n, _)| *n == target) {
                return Err(Error::CommitFailed(why.clone()));
            }
            if g.replica.durable_gen() >= target {
                return Ok(seq);
            }
            if let Some(why) = &g.poisoned {
                return Err(Error::CommitFailed(why.clone()));
            }
            g = self.shared.done[parity(target)]
                .wait(g)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<S: Storage + Send + 'static> Drop for Store<S> {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.work.notify_all();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        if let Some(t) = self.checkpointer.take() {
            let _ = t.join();
        }
    }
}

fn parity(generation: u64) -> usize {
    usize::from(generation % 2 == 1)
}

impl<S: Storage> Shared<S> {
    fn wake_all(&self) {
        self.done[0].notify_all();
        self.done[1].notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // A panic while holding the lock leaves the replica as it was between inputs
        // (each input is applied or rolled back as a whole); keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The commit thread: writes back whatever is staged, fsyncs without the lock (so the
/// next transaction stages meanwhile), acknowledges; until the store is dropped (what
/// is staged then is committed first).
fn commit_loop<S: Storage>(shared: &Shared<S>, checkpoint: &std::sync::mpsc::SyncSender<()>) {
    let mut g = shared.lock();
    loop {
        while !g.stop && g.replica.pending() == 0 {
            g = shared.work.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        if g.replica.pending() == 0 {
            return; // stopping, nothing staged
        }
        let before = g.replica.durable_gen();
        let generation = match g.replica.prepare_commit() {
            Ok(Some(generation)) => generation,
            Ok(None) => continue,
            Err(e) => {
                let generation = g.replica.written_gen();
                tracing::error!(error = %e, "sbus commit failed");
                if matches!(e, replica::Error::SyncFailed(_)) {
                    g.poisoned.get_or_insert_with(|| e.to_string());
                }
                g.failed.push_back((generation, e.to_string()));
                if g.failed.len() > FAILED_KEPT {
                    g.failed.pop_front();
                }
                dispatch(&mut g);
                shared.wake_all();
                continue;
            }
        };
        let synced = match g.replica.storage().syncer() {
            Some(syncer) => {
                drop(g);
                let r = syncer.sync().map_err(|e| e.to_string());
                g = shared.lock();
                r
            }
            None => g.replica.storage().sync().map_err(|e| e.to_string()),
        };
        let now = shared.clock.now();
        if let Err(e) = g.replica.finish_commit(now, generation, synced) {
            tracing::error!(error = %e, "sbus fsync failed; acknowledging nothing more");
            g.poisoned.get_or_insert_with(|| e.to_string());
        }
        dispatch(&mut g);
        if g.poisoned.is_some() || generation != before + 1 {
            shared.wake_all();
        } else {
            shared.done[parity(generation)].notify_all();
        }
        drop(g);
        let _ = checkpoint.try_send(());
        if let Some(hook) = shared
            .on_commit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            hook();
        }
        g = shared.lock();
    }
}

fn decode<R: Record>(table: Table, key: &str, bytes: &[u8]) -> Result<R, Error> {
    record::decode(bytes).map_err(|source| Error::Decode {
        table,
        key: key.to_owned(),
        source,
    })
}

fn dispatch<S: Storage>(g: &mut Inner<S>) {
    while let Some(e) = g.replica.poll_event() {
        let notice = match e {
            Event::Changed { table, key } => Notice::Changed { table, key },
            Event::CdrAppended(id) => Notice::Cdr(id),
            _ => continue,
        };
        g.subs.retain(|(tables, all, tx)| {
            let wanted = match &notice {
                Notice::Changed { table, .. } => *all || tables.contains(table),
                Notice::Cdr(_) => *all,
            };
            !wanted || tx.send(notice.clone()).is_ok()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Credentials, Domain, Placement, Subscriber};
    use std::sync::Arc;

    fn sub(user: &str) -> Subscriber {
        Subscriber {
            domain: "example.com".into(),
            user: user.into(),
            display_name: user.to_uppercase(),
            credentials: Credentials {
                realm: "example.com".into(),
                ha1: "a".repeat(32),
                ha1_sha256: String::new(),
            },
            voicemail: true,
        }
    }

    #[test]
    fn typed_round_trip_subscribe_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_in_region(dir.path(), MemberId(1), Some("eu".into())).unwrap();
            let notices = store.subscribe(&[Table::Subscribers]);
            store.put(&sub("alice")).unwrap();
            store.put(&sub("bob")).unwrap();
            store
                .put(&Domain {
                    name: "example.com".into(),
                    placement: Placement::Regions(vec!["eu".into()]),
                    description: String::new(),
                })
                .unwrap();
            store.delete::<Subscriber>("example.com/bob").unwrap();
            let got: Vec<Notice> = notices.try_iter().collect();
            assert_eq!(got.len(), 3, "{got:?}"); // domains not subscribed
            let id = store
                .append_cdr(&Cdr {
                    call_id: "c1".into(),
                    domain: "example.com".into(),
                    from: "alice".into(),
                    to: "bob".into(),
                    start_ms: 1,
                    answer_ms: None,
                    end_ms: 2,
                    status: 486,
                    disconnect_cause: "busy".into(),
                    legs: Vec::new(),
                })
                .unwrap();
            assert_eq!(id.origin, MemberId(1));
            store
                .put_blob(BlobTable::Greetings, "example.com/alice/busy", &[1, 2, 3])
                .unwrap();
        }
        let store = Store::open(dir.path(), MemberId(1)).unwrap();
        let alice: Subscriber = store.get("example.com/alice").unwrap().unwrap();
        assert_eq!(alice, sub("alice"));
        assert_eq!(store.get::<Subscriber>("example.com/bob").unwrap(), None);
        assert_eq!(store.list::<Subscriber>("example.com/").unwrap().len(), 1);
        assert_eq!(store.cdrs(None, 10).unwrap()[0].1.status, 486);
        assert_eq!(
            store
                .blob(BlobTable::Greetings, "example.com/alice/busy")
                .unwrap(),
            Some(vec![1, 2, 3])
        );
        assert!(matches!(store.get::<Domain>("nope"), Ok(None)));
        store
            .put_raw(Table::Domains, "bad", b"not json".to_vec())
            .unwrap();
        assert!(matches!(
            store.get::<Domain>("bad"),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn concurrent_writers_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), MemberId(1)).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        store.put(&sub(&format!("u{t}-{i}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let status = store.status();
        assert_eq!(status.applied.get(MemberId(1)), Seq(200));
        assert_eq!(store.list::<Subscriber>("example.com/").unwrap().len(), 200);
        // Group commit: fewer fsyncs than writes.
        assert!(
            status.stats.commits < 200,
            "{} commits",
            status.stats.commits
        );
    }
}
