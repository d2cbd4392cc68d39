//! [`Storage`] on SQLite in WAL mode: a commit returns only after the WAL is fsynced, so
//! an acknowledged change survives a power cut. The core batches many changes per commit
//! (group commit), which is what keeps fsyncs affordable.
//!
//! Commits are split in two so that staging never waits for a disk flush: the connection
//! runs with `synchronous=NORMAL` (a `COMMIT` appends the transaction's frames to the WAL
//! without fsync — [`Storage::write_back`]), and the store then calls `fdatasync` on the
//! WAL file itself ([`Storage::sync`], or a [`Syncer`] from another thread while the next
//! transaction is staged). Every frame appended before the `fdatasync` began is then
//! durable. A power cut before it may lose written-back transactions, but WAL recovery
//! stops at the first frame whose cumulative checksum fails, so what survives is a prefix
//! of the commits (SQLite's documented guarantee for `synchronous=NORMAL`: durability may
//! be lost, consistency is not). Checkpoints fsync the WAL before copying it back in this
//! mode. The WAL file keeps its inode while the connection is open (it is reset in place,
//! not recreated), so the handle stays valid.
//!
//! Why SQLite over redb: it is already the project's embedded database (design.md), its
//! WAL gives concurrent readers in other processes (`voxplane sbus get` beside a running
//! member), its file format and durability are the most exercised of any embedded store,
//! and `sqlite3` lets an operator inspect a member's data by hand. redb would avoid the C
//! build but offers none of those.

use std::path::Path;

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::storage::{
    BlobStage, Checkpointer, Mark, Recovered, Storage, StorageError, StoredCdr, Syncer,
};
use crate::types::{CdrId, Change, Hlc, MemberId, Row, Seq, Table, Version, VersionVector};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rows (
    tbl INTEGER NOT NULL, key TEXT NOT NULL,
    wall INTEGER NOT NULL, logical INTEGER NOT NULL, origin INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    value BLOB,                      -- NULL: tombstone
    PRIMARY KEY (tbl, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    origin INTEGER NOT NULL, seq INTEGER NOT NULL, change BLOB NOT NULL,
    PRIMARY KEY (origin, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cdrs (
    origin INTEGER NOT NULL, seq INTEGER NOT NULL,
    wall INTEGER NOT NULL, logical INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (origin, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stages (origin INTEGER PRIMARY KEY, stage BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS marks (
    kind INTEGER NOT NULL, origin INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (kind, origin)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, wall INTEGER NOT NULL, logical INTEGER NOT NULL);
";

/// A durable [`Storage`] in one SQLite file.
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Connection,
    in_tx: bool,
    /// The WAL file (None for a read-only handle).
    wal: Option<Arc<std::fs::File>>,
    path: std::path::PathBuf,
}

impl SqliteStorage {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// The file cannot be opened or is not a store.
    pub fn open(path: &Path) -> Result<SqliteStorage, StorageError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&wal_path)?;
        // The WAL's directory entry must be durable too (it may have just been created).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(SqliteStorage {
            conn,
            in_tx: false,
            wal: Some(Arc::new(wal)),
            path: path.to_owned(),
        })
    }

    /// Opens the store at `path` for reading while a member process owns it (WAL lets
    /// readers in other processes see its last commit).
    ///
    /// # Errors
    /// As [`SqliteStorage::open`].
    pub fn open_reader(path: &Path) -> Result<SqliteStorage, StorageError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(SqliteStorage {
            conn,
            in_tx: false,
            wal: None,
            path: path.to_owned(),
        })
    }

    fn begin(&mut self) -> Result<(), StorageError> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn marks(&self, kind: Mark) -> Result<VersionVector, StorageError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT origin, seq FROM marks WHERE kind = ?1")?;
        let mut vv = VersionVector::default();
        let rows = st.query_map([mark_code(kind)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        for r in rows {
            let (o, s) = r?;
            vv.set(member(o)?, Seq(to_u64(s)?));
        }
        Ok(vv)
    }
}

fn mark_code(m: Mark) -> i64 {
    match m {
        Mark::Applied => 0,
        Mark::Floor => 1,
        Mark::Withheld => 2,
    }
}

fn to_u64(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative value {v}")))
}

fn to_i64(v: u64) -> i64 {
    // Sequence numbers and HLC walls stay below 2^63 (ms since 1970 for 292 million years).
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn member(v: i64) -> Result<MemberId, StorageError> {
    u32::try_from(v)
        .map(MemberId)
        .map_err(|_| StorageError::Corrupt(format!("member id {v}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // postcard into a Vec cannot fail for our types.
    postcard::to_allocvec(v).unwrap_or_default()
}

type RawRow = (i64, i64, i64, i64, Option<Vec<u8>>);

fn row_from(raw: RawRow) -> Result<Row, StorageError> {
    let (wall, logical, origin, seq, value) = raw;
    Ok(Row {
        seq: Seq(to_u64(seq)?),
        version: Version {
            hlc: Hlc {
                wall: to_u64(wall)?,
                logical: u32::try_from(logical)
                    .map_err(|_| StorageError::Corrupt(format!("logical {logical}")))?,
            },
            origin: member(origin)?,
        },
        value,
    })
}

impl Storage for SqliteStorage {
    fn delete_row(&mut self, table: Table, key: &str) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .prepare_cached("DELETE FROM rows WHERE tbl = ?1 AND key = ?2")?
            .execute(params![i64::from(table.code()), key])?;
        Ok(())
    }

    fn set_collected(&mut self, upto: Hlc) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO meta (k, wall, logical) VALUES ('collected', ?1, ?2)",
            )?
            .execute(params![to_i64(upto.wall), i64::from(upto.logical)])?;
        Ok(())
    }

    fn recover(&mut self) -> Result<Recovered, StorageError> {
        self.rollback()?;
        let clock = self
            .conn
            .query_row(
                "SELECT wall, logical FROM meta WHERE k = 'clock'",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        let clock = match clock {
            Some((w, l)) => Hlc {
                wall: to_u64(w)?,
                logical: u32::try_from(l).unwrap_or(u32::MAX),
            },
            None => Hlc::default(),
        };
        let collected = self
            .conn
            .query_row(
                "SELECT wall, logical FROM meta WHERE k = 'collected'",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        let collected = match collected {
            Some((w, l)) => Hlc {
                wall: to_u64(w)?,
                logical: u32::try_from(l).unwrap_or(u32::MAX),
            },
            None => Hlc::default(),
        };
        Ok(Recovered {
            applied: self.marks(Mark::Applied)?,
            floor: self.marks(Mark::Floor)?,
            withheld: self.marks(Mark::Withheld)?,
            clock,
            collected,
        })
    }

    fn commit(&mut self, clock: Hlc) -> Result<(), StorageError> {
        self.write_back(clock)?;
        self.sync()
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        match &self.wal {
            Some(wal) => Ok(wal.sync_data()?),
            None => Ok(()),
        }
    }

    fn syncer(&self) -> Option<Syncer> {
        self.wal.as_ref().map(|w| Syncer(Arc::clone(w)))
    }

    /// A second connection runs passive checkpoints (they never block the writer), so
    /// the WAL's copy into the database and its two fsyncs happen off the write path;
    /// the writer connection stops checkpointing by itself.
    fn take_checkpointer(&mut self) -> Option<Checkpointer> {
        self.wal.as_ref()?;
        let conn = Connection::open(&self.path).ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        conn.pragma_update(None, "synchronous", "NORMAL").ok()?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .ok()?;
        Some(Box::new(move || {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(())
        }))
    }

    fn write_back(&mut self, clock: Hlc) -> Result<(), StorageError> {
        self.begin()?;
        let r = self
            .conn
            .prepare_cached(
                "INSERT INTO meta (k, wall, logical) VALUES ('clock', ?1, ?2)
                 ON CONFLICT (k) DO UPDATE SET wall = max(wall, ?1),
                 logical = CASE WHEN ?1 > wall THEN ?2 WHEN ?1 = wall THEN max(logical, ?2) ELSE logical END",
            )
            .and_then(|mut st| st.execute(params![to_i64(clock.wall), i64::from(clock.logical)]))
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        if let Err(e) = r {
            let _ = self.rollback();
            return Err(e.into());
        }
        self.in_tx = false;
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), StorageError> {
        if self.in_tx {
            self.in_tx = false;
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    fn row(&mut self, table: Table, key: &str) -> Result<Option<Row>, StorageError> {
        let raw: Option<RawRow> = self
            .conn
            .prepare_cached(
                "SELECT wall, logical, origin, seq, value FROM rows WHERE tbl = ?1 AND key = ?2",
            )?
            .query_row(params![i64::from(table.code()), key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        raw.map(row_from).transpose()
    }

    fn put_row(&mut self, table: Table, key: &str, row: &Row) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO rows (tbl, key, wall, logical, origin, seq, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                i64::from(table.code()),
                key,
                to_i64(row.version.hlc.wall),
                i64::from(row.version.hlc.logical),
                i64::from(row.version.origin.0),
                to_i64(row.seq.0),
                row.value
            ])?;
        Ok(())
    }

    fn scan(&mut self, table: Table, prefix: &str) -> Result<Vec<(String, Row)>, StorageError> {
        let mut st = self.conn.prepare_cached(
            "SELECT key, wall, logical, origin, seq, value FROM rows
             WHERE tbl = ?1 AND key >= ?2 ORDER BY key",
        )?;
        let mut rows = st.query(params![i64::from(table.code()), prefix])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let key: String = r.get(0)?;
            if !key.starts_with(prefix) {
                break;
            }
            let raw: RawRow = (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
            out.push((key, row_from(raw)?));
        }
        Ok(out)
    }

    fn collect_tombstones(&mut self, upto: Hlc) -> Result<usize, StorageError> {
        self.begin()?;
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM rows WHERE value IS NULL
                 AND (wall < ?1 OR (wall = ?1 AND logical <= ?2))",
            )?
            .execute(params![to_i64(upto.wall), i64::from(upto.logical)])?;
        Ok(n)
    }

    fn append_log(&mut self, change: &Change) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO log (origin, seq, change) VALUES (?1, ?2, ?3)")?
            .execute(params![
                i64::from(change.origin.0),
                to_i64(change.seq.0),
                encode(change)
            ])?;
        Ok(())
    }

    fn log_range(
        &mut self,
        origin: MemberId,
        after: Seq,
        upto: Seq,
        max: usize,
    ) -> Result<Vec<Change>, StorageError> {
        let mut st = self.conn.prepare_cached(
            "SELECT change FROM log WHERE origin = ?1 AND seq > ?2 AND seq <= ?3
             ORDER BY seq LIMIT ?4",
        )?;
        let mut rows = st.query(params![
            i64::from(origin.0),
            to_i64(after.0),
            to_i64(upto.0),
            i64::try_from(max).unwrap_or(i64::MAX)
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let bytes: Vec<u8> = r.get(0)?;
            out.push(decode(&bytes)?);
        }
        Ok(out)
    }

    fn prune_log(&mut self, origin: MemberId, upto: Seq) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .prepare_cached("DELETE FROM log WHERE origin = ?1 AND seq <= ?2")?
            .execute(params![i64::from(origin.0), to_i64(upto.0)])?;
        Ok(())
    }

    fn insert_cdr(&mut self, cdr: &StoredCdr) -> Result<bool, StorageError> {
        self.begin()?;
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO cdrs (origin, seq, wall, logical, record)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                i64::from(cdr.id.origin.0),
                to_i64(cdr.id.seq.0),
                to_i64(cdr.hlc.wall),
                i64::from(cdr.hlc.logical),
                cdr.record
            ])?;
        Ok(n == 1)
    }

    fn cdrs(&mut self, after: Option<CdrId>, max: usize) -> Result<Vec<StoredCdr>, StorageError> {
        let (o, s) = after.map_or((-1, 0), |a| (i64::from(a.origin.0), to_i64(a.seq.0)));
        let mut st = self.conn.prepare_cached(
            "SELECT origin, seq, wall, logical, record FROM cdrs
             WHERE origin > ?1 OR (origin = ?1 AND seq > ?2)
             ORDER BY origin, seq LIMIT ?3",
        )?;
        let mut rows = st.query(params![o, s, i64::try_from(max).unwrap_or(i64::MAX)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(StoredCdr {
                id: CdrId {
                    origin: member(r.get(0)?)?,
                    seq: Seq(to_u64(r.get(1)?)?),
                },
                hlc: Hlc {
                    wall: to_u64(r.get(2)?)?,
                    logical: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX),
                },
                record: r.get(4)?,
            });
        }
        Ok(out)
    }

    fn stage(&mut self, origin: MemberId) -> Result<Option<BlobStage>, StorageError> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT stage FROM stages WHERE origin = ?1")?
            .query_row([i64::from(origin.0)], |r| r.get(0))
            .optional()?;
        bytes.map(|b| decode(&b)).transpose()
    }

    fn set_stage(
        &mut self,
        origin: MemberId,
        stage: Option<&BlobStage>,
    ) -> Result<(), StorageError> {
        self.begin()?;
        match stage {
            Some(s) => self
                .conn
                .prepare_cached("INSERT OR REPLACE INTO stages (origin, stage) VALUES (?1, ?2)")?
                .execute(params![i64::from(origin.0), encode(s)])?,
            None => self
                .conn
                .prepare_cached("DELETE FROM stages WHERE origin = ?1")?
                .execute([i64::from(origin.0)])?,
        };
        Ok(())
    }

    fn stages(&mut self) -> Result<Vec<(MemberId, BlobStage)>, StorageError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT origin, stage FROM stages ORDER BY origin")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let bytes: Vec<u8> = r.get(1)?;
            out.push((member(r.get(0)?)?, decode(&bytes)?));
        }
        Ok(out)
    }

    fn set_mark(&mut self, mark: Mark, origin: MemberId, seq: Seq) -> Result<(), StorageError> {
        self.begin()?;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO marks (kind, origin, seq) VALUES (?1, ?2, ?3)")?
            .execute(params![mark_code(mark), i64::from(origin.0), to_i64(seq.0)])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::{Config, Replica};
    use crate::types::{Millis, Op};

    fn put(key: &str, v: &str) -> Op {
        Op::Put {
            table: Table::Dialplans,
            key: key.into(),
            value: v.as_bytes().to_vec(),
        }
    }

    #[test]
    fn committed_writes_survive_reopen_and_uncommitted_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let mut r = Replica::open(
                Config::new(MemberId(1)),
                SqliteStorage::open(&path).unwrap(),
                Millis(5),
            )
            .unwrap();
            r.write(Millis(10), put("a", "1")).unwrap();
            r.write(
                Millis(10),
                Op::AppendCdr {
                    record: b"cdr".to_vec(),
                },
            )
            .unwrap();
            r.write_blob(Millis(10), Table::Voicemails, "vm", &[7u8; 200_000])
                .unwrap();
            r.commit(Millis(11)).unwrap();
            r.write(Millis(12), put("b", "2")).unwrap();
            // Dropped without commit: the connection closes and SQLite rolls back.
        }
        let mut s = SqliteStorage::open(&path).unwrap();
        let rec = s.recover().unwrap();
        // 1 put + 1 CDR + 4 chunks of 64 KiB.
        assert_eq!(rec.applied.get(MemberId(1)), Seq(6));
        assert!(rec.clock.wall >= 10);
        let mut r = Replica::open(Config::new(MemberId(1)), s, Millis(13)).unwrap();
        assert_eq!(r.get(Table::Dialplans, "a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(r.get(Table::Dialplans, "b").unwrap(), None);
        assert_eq!(
            r.get(Table::Voicemails, "vm").unwrap(),
            Some(vec![7u8; 200_000])
        );
        assert_eq!(r.cdrs(None, 10).unwrap()[0].record, b"cdr");
        // The lost write's sequence number is reused, and the clock stays ahead.
        assert_eq!(r.write(Millis(1), put("c", "3")).unwrap(), Seq(7));
        assert!(r.clock().wall >= 10);
    }

    #[test]
    fn behaves_like_mem_storage() {
        use crate::storage::MemStorage;
        let dir = tempfile::tempdir().unwrap();
        let mut sq = SqliteStorage::open(&dir.path().join("s.db")).unwrap();
        let mut mem = MemStorage::new();
        let v = |w| Version {
            hlc: Hlc {
                wall: w,
                logical: 1,
            },
            origin: MemberId(2),
        };
        for st in [&mut sq as &mut dyn Storage, &mut mem as &mut dyn Storage] {
            st.put_row(
                Table::Trunks,
                "t/1",
                &Row {
                    seq: Seq(1),
                    version: v(5),
                    value: Some(b"x".to_vec()),
                },
            )
            .unwrap();
            st.put_row(
                Table::Trunks,
                "t/2",
                &Row {
                    seq: Seq(2),
                    version: v(6),
                    value: None,
                },
            )
            .unwrap();
            st.put_row(
                Table::Trunks,
                "u/1",
                &Row {
                    seq: Seq(3),
                    version: v(4),
                    value: None,
                },
            )
            .unwrap();
            for s in 1..=5 {
                st.append_log(&Change {
                    origin: MemberId(3),
                    seq: Seq(s),
                    hlc: Hlc::default(),
                    op: put("k", "v"),
                })
                .unwrap();
            }
            st.prune_log(MemberId(3), Seq(2)).unwrap();
            st.set_mark(Mark::Floor, MemberId(3), Seq(2)).unwrap();
            st.insert_cdr(&StoredCdr {
                id: CdrId {
                    origin: MemberId(2),
                    seq: Seq(9),
                },
                hlc: Hlc::default(),
                record: vec![1],
            })
            .unwrap();
            st.commit(Hlc::default()).unwrap();
            assert_eq!(st.scan(Table::Trunks, "t/").unwrap().len(), 2);
            let got: Vec<Seq> = st
                .log_range(MemberId(3), Seq(1), Seq(5), 2)
                .unwrap()
                .iter()
                .map(|c| c.seq)
                .collect();
            assert_eq!(got, [Seq(3), Seq(4)]);
            assert_eq!(
                st.collect_tombstones(Hlc {
                    wall: 5,
                    logical: 1
                })
                .unwrap(),
                1
            );
            st.commit(Hlc::default()).unwrap();
            assert!(st.row(Table::Trunks, "u/1").unwrap().is_none());
            assert!(st.row(Table::Trunks, "t/2").unwrap().is_some());
            assert!(
                !st.insert_cdr(&StoredCdr {
                    id: CdrId {
                        origin: MemberId(2),
                        seq: Seq(9)
                    },
                    hlc: Hlc::default(),
                    record: vec![2],
                })
                .unwrap()
            );
            assert_eq!(st.recover().unwrap().floor.get(MemberId(3)), Seq(2));
        }
    }
}
