//! The storage seam under the replication core: a [`Storage`] holds rows, the change log,
//! CDRs, blob staging and the version vector, all inside one open transaction that
//! [`Storage::commit`] makes durable (fsync) and [`Storage::rollback`] (or a crash)
//! discards. The core decides *what* to write (last-writer-wins, ordering, idempotence);
//! storages only keep it.
//!
//! Two implementations: [`crate::sqlite::SqliteStorage`] (the durable one) and
//! [`MemStorage`] (for simulation; a "crash" is [`Storage::recover`], which drops every
//! write since the last sync exactly as a power cut drops un-fsynced pages).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{CdrId, Change, Hlc, MemberId, Row, Seq, Table, VersionVector};

/// Local storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// SQLite reported an error (I/O, full disk, locked database…).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file operation failed (opening the WAL, fsync).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes do not decode: the file was damaged or written by another version.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

/// A blob being received chunk by chunk (durable, so a transfer resumes after a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStage {
    /// Destination table.
    pub table: Table,
    /// Destination key.
    pub key: String,
    /// Index of the next chunk expected.
    pub next: u32,
    /// Number of chunks.
    pub count: u32,
    /// Bytes so far.
    pub bytes: Vec<u8>,
}

/// Makes a storage's written-back transactions durable from any thread (see
/// [`Storage::syncer`]): `fdatasync` of the file they were appended to.
#[derive(Clone, Debug)]
pub struct Syncer(pub std::sync::Arc<std::fs::File>);

impl Syncer {
    /// Flushes the file to stable storage.
    ///
    /// # Errors
    /// I/O failure: whether the data is durable is then unknown.
    pub fn sync(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

/// Storage housekeeping run from its own thread (see [`Storage::take_checkpointer`]).
pub type Checkpointer = Box<dyn FnMut() -> Result<(), StorageError> + Send>;

/// Which per-origin mark to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The version vector: every change with `seq <= mark` is applied.
    Applied,
    /// The log floor: log entries with `seq <= mark` may be missing (pruned, or the
    /// state came from a snapshot).
    Floor,
    /// Data sovereignty: the highest change of the origin held here only as a
    /// placeholder (or skipped by a snapshot that left data out). A member whose
    /// snapshot would carry a peer past it may lack data the peer may hold.
    Withheld,
}

/// What a storage holds after opening (or after a crash).
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Durable version vector.
    pub applied: VersionVector,
    /// Durable log floors.
    pub floor: VersionVector,
    /// Durable [`Mark::Withheld`] marks.
    pub withheld: VersionVector,
    /// Largest HLC ever committed (the clock restarts above it).
    pub clock: Hlc,
    /// Tombstones at or below this HLC have been collected here.
    pub collected: Hlc,
}

/// A CDR as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCdr {
    /// Identity.
    pub id: CdrId,
    /// When it was written.
    pub hlc: Hlc,
    /// Encoded record.
    pub record: Vec<u8>,
}

/// Durable storage under the replication core. Every mutating call joins the current
/// transaction; reads see it.
pub trait Storage {
    /// Discards any uncommitted writes and reports the durable marks.
    ///
    /// # Errors
    /// Storage failure.
    fn recover(&mut self) -> Result<Recovered, StorageError>;
    /// Makes every write since the last commit durable (fsync) before returning.
    ///
    /// # Errors
    /// Storage failure; the transaction is then rolled back.
    fn commit(&mut self, clock: Hlc) -> Result<(), StorageError>;
    /// Drops every write since the last commit.
    ///
    /// # Errors
    /// Storage failure.
    fn rollback(&mut self) -> Result<(), StorageError>;
    /// Ends the transaction without waiting for it to be durable: the next writes go
    /// into a new transaction while [`Storage::syncer`] (or [`Storage::sync`]) makes
    /// this one durable. A crash before that sync may lose written-back transactions,
    /// always a suffix of them (never one without those before it). The default is
    /// [`Storage::commit`], which is already durable.
    ///
    /// # Errors
    /// Storage failure; the transaction is then rolled back.
    fn write_back(&mut self, clock: Hlc) -> Result<(), StorageError> {
        self.commit(clock)
    }
    /// Makes every written-back transaction durable (fsync) before returning.
    ///
    /// # Errors
    /// I/O failure: whether the written-back transactions are durable is then unknown.
    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    /// A handle that does what [`Storage::sync`] does from another thread, without the
    /// storage (so a store can fsync while the next transaction is being staged).
    /// `None`: call [`Storage::sync`] instead.
    fn syncer(&self) -> Option<Syncer> {
        None
    }
    /// Hands over the storage's housekeeping (for SQLite: copying the WAL back into the
    /// database) to be run by the caller from another thread, off the write path; the
    /// storage then no longer does it inline during commits. `None`: nothing to hand
    /// over (the default).
    fn take_checkpointer(&mut self) -> Option<Checkpointer> {
        None
    }

    /// A row (or tombstone).
    ///
    /// # Errors
    /// Storage failure.
    fn row(&mut self, table: Table, key: &str) -> Result<Option<Row>, StorageError>;
    /// Writes a row (or tombstone).
    ///
    /// # Errors
    /// Storage failure.
    fn put_row(&mut self, table: Table, key: &str, row: &Row) -> Result<(), StorageError>;
    /// Rows of `table` whose key starts with `prefix`, tombstones included, in key order.
    ///
    /// # Errors
    /// Storage failure.
    fn scan(&mut self, table: Table, prefix: &str) -> Result<Vec<(String, Row)>, StorageError>;
    /// Removes tombstones whose HLC is at or below `upto`; returns how many.
    ///
    /// # Errors
    /// Storage failure.
    fn collect_tombstones(&mut self, upto: Hlc) -> Result<usize, StorageError>;

    /// Appends to the change log.
    ///
    /// # Errors
    /// Storage failure.
    fn append_log(&mut self, change: &Change) -> Result<(), StorageError>;
    /// Log entries of `origin` with `after < seq <= upto`, in order, at most `max`.
    ///
    /// # Errors
    /// Storage failure.
    fn log_range(
        &mut self,
        origin: MemberId,
        after: Seq,
        upto: Seq,
        max: usize,
    ) -> Result<Vec<Change>, StorageError>;
    /// Deletes log entries of `origin` with `seq <= upto`.
    ///
    /// # Errors
    /// Storage failure.
    fn prune_log(&mut self, origin: MemberId, upto: Seq) -> Result<(), StorageError>;

    /// Inserts a CDR unless one with the same id exists; returns whether it was new.
    ///
    /// # Errors
    /// Storage failure.
    fn insert_cdr(&mut self, cdr: &StoredCdr) -> Result<bool, StorageError>;
    /// CDRs in id order after `after`, at most `max`.
    ///
    /// # Errors
    /// Storage failure.
    fn cdrs(&mut self, after: Option<CdrId>, max: usize) -> Result<Vec<StoredCdr>, StorageError>;

    /// The blob being staged from `origin`, if any.
    ///
    /// # Errors
    /// Storage failure.
    fn stage(&mut self, origin: MemberId) -> Result<Option<BlobStage>, StorageError>;
    /// Sets or clears the blob staged from `origin`.
    ///
    /// # Errors
    /// Storage failure.
    fn set_stage(
        &mut self,
        origin: MemberId,
        stage: Option<&BlobStage>,
    ) -> Result<(), StorageError>;
    /// Every staged blob (for snapshots).
    ///
    /// # Errors
    /// Storage failure.
    fn stages(&mut self) -> Result<Vec<(MemberId, BlobStage)>, StorageError>;

    /// Sets a per-origin mark.
    ///
    /// # Errors
    /// Storage failure.
    fn set_mark(&mut self, mark: Mark, origin: MemberId, seq: Seq) -> Result<(), StorageError>;

    /// Deletes a row outright (no tombstone): used when a snapshot proves it dead.
    ///
    /// # Errors
    /// Storage failure.
    fn delete_row(&mut self, table: Table, key: &str) -> Result<(), StorageError>;

    /// Records the tombstone-collection horizon (see [`Recovered::collected`]).
    ///
    /// # Errors
    /// Storage failure.
    fn set_collected(&mut self, upto: Hlc) -> Result<(), StorageError>;
}

/// In-memory [`Storage`] with exact crash semantics, for simulation and tests.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    rows: BTreeMap<(Table, String), Row>,
    log: BTreeMap<(MemberId, Seq), Change>,
    cdrs: BTreeMap<CdrId, StoredCdr>,
    stages: BTreeMap<MemberId, BlobStage>,
    applied: VersionVector,
    floor: VersionVector,
    withheld: VersionVector,
    clock: Hlc,
    collected: Hlc,
    undo: Vec<Undo>,
    /// Undo logs of transactions written back but not yet synced (oldest first): a
    /// crash drops them too, newest first.
    unsynced: Vec<Vec<Undo>>,
    /// Number of commits (each one an fsync in a real store).
    pub commits: u64,
}

#[derive(Clone, Debug)]
enum Undo {
    Row((Table, String), Option<Row>),
    Log((MemberId, Seq), Option<Change>),
    Cdr(CdrId),
    Stage(MemberId, Option<BlobStage>),
    Mark(Mark, MemberId, Seq),
    Collected(Hlc),
    Clock(Hlc),
}

impl MemStorage {
    /// An empty store.
    #[must_use]
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Number of log entries held (for tests of pruning).
    #[must_use]
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Number of tombstones held.
    #[must_use]
    pub fn tombstones(&self) -> usize {
        self.rows.values().filter(|r| r.value.is_none()).count()
    }
}

impl Storage for MemStorage {
    fn recover(&mut self) -> Result<Recovered, StorageError> {
        self.rollback()?;
        // What a crash does: written-back but unsynced transactions are lost as well
        // (the worst case a power cut allows), newest first.
        while let Some(u) = self.unsynced.pop() {
            self.undo = u;
            self.undo_open();
        }
        Ok(Recovered {
            applied: self.applied.clone(),
            floor: self.floor.clone(),
            withheld: self.withheld.clone(),
            clock: self.clock,
            collected: self.collected,
        })
    }

    fn commit(&mut self, clock: Hlc) -> Result<(), StorageError> {
        self.write_back(clock)?;
        self.sync()
    }

    fn write_back(&mut self, clock: Hlc) -> Result<(), StorageError> {
        let undo = std::mem::take(&mut self.undo);
        let old = self.clock;
        self.clock = self.clock.max(clock);
        self.unsynced.push(undo);
        if let Some(u) = self.unsynced.last_mut() {
            u.insert(0, Undo::Clock(old));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if !self.unsynced.is_empty() {
            self.unsynced.clear();
            self.commits += 1;
        }
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), StorageError> {
        self.undo_open();
        Ok(())
    }

    fn row(&mut self, table: Table, key: &str) -> Result<Option<Row>, StorageError> {
        Ok(self.rows.get(&(table, key.to_owned())).cloned())
    }

    fn put_row(&mut self, table: Table, key: &str, row: &Row) -> Result<(), StorageError> {
        let k = (table, key.to_owned());
        let old = self.rows.insert(k.clone(), row.clone());
        self.undo.push(Undo::Row(k, old));
        Ok(())
    }

    fn scan(&mut self, table: Table, prefix: &str) -> Result<Vec<(String, Row)>, StorageError> {
        Ok(self
            .rows
            .range((table, prefix.to_owned())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), r)| (k.clone(), r.clone()))
            .collect())
    }

    fn collect_tombstones(&mut self, upto: Hlc) -> Result<usize, StorageError> {
        let dead: Vec<(Table, String)> = self
            .rows
            .iter()
            .filter(|(_, r)| r.value.is_none() && r.version.hlc <= upto)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            let old = self.rows.remove(k);
            self.undo.push(Undo::Row(k.clone(), old));
        }
        Ok(dead.len())
    }

    fn append_log(&mut self, change: &Change) -> Result<(), StorageError> {
        let k = (change.origin, change.seq);
        let old = self.log.insert(k, change.clone());
        self.undo.push(Undo::Log(k, old));
        Ok(())
    }

    fn log_range(
        &mut self,
        origin: MemberId,
        after: Seq,
        upto: Seq,
        max: usize,
    ) -> Result<Vec<Change>, StorageError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        Ok(self
            .log
            .range((origin, after.next())..=(origin, upto))
            .take(max)
            .map(|(_, c)| c.clone())
            .collect())
    }

    fn prune_log(&mut self, origin: MemberId, upto: Seq) -> Result<(), StorageError> {
        let keys: Vec<_> = self
            .log
            .range((origin, Seq(0))..=(origin, upto))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let old = self.log.remove(&k);
            self.undo.push(Undo::Log(k, old));
        }
        Ok(())
    }

    fn insert_cdr(&mut self, cdr: &StoredCdr) -> Result<bool, StorageError> {
        if self.cdrs.contains_key(&cdr.id) {
            return Ok(false);
        }
        self.cdrs.insert(cdr.id, cdr.clone());
        self.undo.push(Undo::Cdr(cdr.id));
        Ok(true)
    }

    fn cdrs(&mut self, after: Option<CdrId>, max: usize) -> Result<Vec<StoredCdr>, StorageError> {
        let it: Box<dyn Iterator<Item = &StoredCdr>> = match after {
            Some(a) => Box::new(
                self.cdrs
                    .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                    .map(|(_, c)| c),
            ),
            None => Box::new(self.cdrs.values()),
        };
        Ok(it.take(max).cloned().collect())
    }

    fn stage(&mut self, origin: MemberId) -> Result<Option<BlobStage>, StorageError> {
        Ok(self.stages.get(&origin).cloned())
    }

    fn set_stage(
        &mut self,
        origin: MemberId,
        stage: Option<&BlobStage>,
    ) -> Result<(), StorageError> {
        let old = match stage {
            Some(s) => self.stages.insert(origin, s.clone()),
            None => self.stages.remove(&origin),
        };
        self.undo.push(Undo::Stage(origin, old));
        Ok(())
    }

    fn stages(&mut self) -> Result<Vec<(MemberId, BlobStage)>, StorageError> {
        Ok(self.stages.iter().map(|(o, s)| (*o, s.clone())).collect())
    }

    fn set_mark(&mut self, mark: Mark, origin: MemberId, seq: Seq) -> Result<(), StorageError> {
        let vv = match mark {
            Mark::Applied => &mut self.applied,
            Mark::Floor => &mut self.floor,
            Mark::Withheld => &mut self.withheld,
        };
        let old = vv.get(origin);
        vv.set(origin, seq);
        self.undo.push(Undo::Mark(mark, origin, old));
        Ok(())
    }

    fn delete_row(&mut self, table: Table, key: &str) -> Result<(), StorageError> {
        let k = (table, key.to_owned());
        if let Some(old) = self.rows.remove(&k) {
            self.undo.push(Undo::Row(k, Some(old)));
        }
        Ok(())
    }

    fn set_collected(&mut self, upto: Hlc) -> Result<(), StorageError> {
        self.undo.push(Undo::Collected(self.collected));
        self.collected = upto;
        Ok(())
    }
}

/// Puts back a map entry as it was (`None`: absent).
fn restore<K: Ord, V>(map: &mut BTreeMap<K, V>, k: K, old: Option<V>) {
    match old {
        Some(v) => {
            map.insert(k, v);
        }
        None => {
            map.remove(&k);
        }
    }
}

impl MemStorage {
    fn undo_open(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Row(k, old) => restore(&mut self.rows, k, old),
                Undo::Log(k, old) => restore(&mut self.log, k, old),
                Undo::Cdr(id) => {
                    self.cdrs.remove(&id);
                }
                Undo::Stage(o, old) => restore(&mut self.stages, o, old),
                Undo::Collected(h) => self.collected = h,
                Undo::Clock(h) => self.clock = h,
                Undo::Mark(m, o, s) => match m {
                    Mark::Applied => self.applied.set(o, s),
                    Mark::Floor => self.floor.set(o, s),
                    Mark::Withheld => self.withheld.set(o, s),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Op, Version};

    fn row(v: &str) -> Row {
        Row {
            seq: Seq(1),
            version: Version {
                hlc: Hlc::default(),
                origin: MemberId(1),
            },
            value: Some(v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn rollback_restores_exactly_the_committed_state() {
        let mut s = MemStorage::new();
        s.put_row(Table::Domains, "a", &row("1")).unwrap();
        s.set_mark(Mark::Applied, MemberId(1), Seq(1)).unwrap();
        s.commit(Hlc::default()).unwrap();
        s.put_row(Table::Domains, "a", &row("2")).unwrap();
        s.put_row(Table::Domains, "b", &row("3")).unwrap();
        s.append_log(&Change {
            origin: MemberId(1),
            seq: Seq(2),
            hlc: Hlc::default(),
            op: Op::Delete {
                table: Table::Domains,
                key: "a".into(),
            },
        })
        .unwrap();
        s.set_mark(Mark::Applied, MemberId(1), Seq(2)).unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.applied.get(MemberId(1)), Seq(1));
        assert_eq!(s.row(Table::Domains, "a").unwrap(), Some(row("1")));
        assert_eq!(s.row(Table::Domains, "b").unwrap(), None);
        assert_eq!(s.log_len(), 0);
    }

    #[test]
    fn scan_stays_within_table_and_prefix() {
        let mut s = MemStorage::new();
        s.put_row(Table::Subscribers, "a.example/1", &row("x"))
            .unwrap();
        s.put_row(Table::Subscribers, "a.example/2", &row("y"))
            .unwrap();
        s.put_row(Table::Subscribers, "b.example/1", &row("z"))
            .unwrap();
        s.put_row(Table::Trunks, "a.example/3", &row("w")).unwrap();
        let got: Vec<String> = s
            .scan(Table::Subscribers, "a.example/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, ["a.example/1", "a.example/2"]);
    }
}
