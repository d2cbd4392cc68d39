//! The in-process store API: typed reads and writes, acknowledged once durable, and
//! change subscriptions for hot reload. Thread-safe; share it in an `Arc`.
//!
//! Writes use group commit: the first writer to find no commit under way becomes the
//! leader, waits up to `commit_interval_ms` for others to stage their changes (the lock
//! is released while it waits), then commits them all with one fsync and wakes them.
//! Every `put`/`delete`/`append_cdr` returns only after its change is durable.
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

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

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
    /// Durable version vector.
    pub applied: VersionVector,
    /// Counters.
    pub stats: Stats,
    /// Configured peers and their status.
    pub peers: Vec<(MemberId, replica::PeerStatus)>,
}

struct Inner<S: Storage> {
    replica: Replica<S>,
    /// Number of group commits finished.
    commits: u64,
    /// The last commit that failed, and why.
    failed: Option<(u64, String)>,
    leader: bool,
    subs: Vec<(Vec<Table>, bool, Sender<Notice>)>,
}

/// A member's store. See the module docs.
pub struct Store<S: Storage = SqliteStorage> {
    inner: Mutex<Inner<S>>,
    on_commit: Mutex<Option<CommitHook>>,
    done: Condvar,
    clock: Box<dyn Clock>,
}

impl<S: Storage> std::fmt::Debug for Store<S> {
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
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::CommitFailed(format!("cannot create {}: {e}", dir.display())))?;
        let storage = SqliteStorage::open(&dir.join(DB_FILE))?;
        Store::with_storage(Config::new(member), storage, Box::new(SystemClock))
    }
}

impl<S: Storage> Store<S> {
    /// A store over any storage, with the given clock.
    ///
    /// # Errors
    /// Storage failure while recovering.
    pub fn with_storage(cfg: Config, storage: S, clock: Box<dyn Clock>) -> Result<Store<S>, Error> {
        let replica = Replica::open(cfg, storage, clock.now())?;
        Ok(Store {
            inner: Mutex::new(Inner {
                replica,
                commits: 0,
                failed: None,
                leader: false,
                subs: Vec::new(),
            }),
            done: Condvar::new(),
            on_commit: Mutex::new(None),
            clock,
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
        *self.on_commit.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Runs `f` on the replication core (for the network driver), then delivers the
    /// notifications it produced.
    pub fn with_replica<T>(&self, f: impl FnOnce(&mut Replica<S>, Millis) -> T) -> T {
        let now = self.clock.now();
        let mut g = self.lock();
        let out = f(&mut g.replica, now);
        dispatch(&mut g);
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // A panic while holding the lock leaves the replica as it was between inputs
        // (each input is applied or rolled back as a whole); keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages a write, then waits for (or leads) the group commit that carries it.
    fn submit(
        &self,
        write: impl FnOnce(&mut Replica<S>, Millis) -> Result<Seq, replica::Error>,
    ) -> Result<Seq, Error> {
        let mut g = self.lock();
        let now = self.clock.now();
        let seq = write(&mut g.replica, now)?;
        let target = g.commits + 1;
        if g.leader {
            while g.commits < target {
                g = self.done.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        } else {
            g.leader = true;
            let wait = Duration::from_millis(g.replica.config().commit_interval_ms);
            let batch = g.replica.config().commit_batch;
            if g.replica.pending() < batch && !wait.is_zero() {
                g = self
                    .done
                    .wait_timeout(g, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            let now = self.clock.now();
            let result = g.replica.commit(now);
            g.commits += 1;
            g.leader = false;
            if let Err(e) = result {
                let n = g.commits;
                g.failed = Some((n, e.to_string()));
            }
            dispatch(&mut g);
            self.done.notify_all();
            if let Some(hook) = self
                .on_commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                hook();
            }
        }
        match &g.failed {
            Some((n, why)) if *n == target => Err(Error::CommitFailed(why.clone())),
            _ => Ok(seq),
        }
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
            let store = Store::open(dir.path(), MemberId(1)).unwrap();
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
