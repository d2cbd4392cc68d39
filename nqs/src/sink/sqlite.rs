//! The embedded SQLite sink: the default store, and the index the HTTP API
//! queries (also when ClickHouse is configured).

use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Batch, CallRow, IntervalRow, PcapRow, Sink, SinkError, SipMessageRow, StreamRow};

/// The SQLite store. Clones share one connection.
#[derive(Clone)]
pub struct SqliteSink {
    conn: Arc<Mutex<Connection>>,
}

/// Which calls [`SqliteSink::list_calls`] returns.
#[derive(Clone, Debug, Default)]
pub struct CallFilter {
    /// Only calls in one of these domains (request, From or To host); `None`
    /// for all (admin).
    pub scope: Option<Vec<String>>,
    /// Calling or called number contains this.
    pub number: Option<String>,
    /// Request, From or To host equals this.
    pub domain: Option<String>,
    /// Started at or after, ns since the epoch.
    pub since_ns: Option<u64>,
    /// Started before, ns since the epoch.
    pub until_ns: Option<u64>,
    /// MOS at most (bad calls).
    pub max_mos: Option<f64>,
    /// MOS at least.
    pub min_mos: Option<f64>,
    /// At most this many rows.
    pub limit: u32,
    /// Rows skipped first (pagination).
    pub offset: u32,
    /// Sort column (ties: newest first, then Call-ID).
    pub sort: CallSort,
    /// Ascending instead of descending.
    pub ascending: bool,
}

/// The column [`SqliteSink::list_calls`] sorts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallSort {
    /// Start time (the default, newest first).
    #[default]
    Start,
    /// Calling number.
    From,
    /// Called number.
    To,
    /// Domain.
    Domain,
    /// Lowest leg MOS.
    Mos,
    /// Number of RTP legs.
    Streams,
    /// Final status of the INVITE.
    FinalStatus,
    /// Why the call finished.
    Reason,
}

impl CallSort {
    fn column(self) -> &'static str {
        match self {
            CallSort::Start => "start_ns",
            CallSort::From => "from_user",
            CallSort::To => "to_user",
            CallSort::Domain => "domain",
            CallSort::Mos => "mos",
            CallSort::Streams => "streams",
            CallSort::FinalStatus => "final_status",
            CallSort::Reason => "reason",
        }
    }
}

impl SqliteSink {
    /// Opens (creating if needed) the database at `path` with its schema.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or the schema not created.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// An in-memory database (tests).
    ///
    /// # Errors
    ///
    /// When the schema cannot be created.
    pub fn in_memory() -> Result<Self, SinkError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Writes a batch in one transaction.
    ///
    /// # Errors
    ///
    /// On any SQLite error (nothing of the batch is kept then).
    pub fn write_now(&self, batch: &Batch) -> Result<(), SinkError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO calls VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)",
            )?;
            for c in &batch.calls {
                st.execute(params![
                    c.start_ns as i64,
                    c.call_id,
                    c.from_uri,
                    c.to_uri,
                    c.from_user,
                    c.to_user,
                    c.domain,
                    c.from_domain,
                    c.to_domain,
                    c.method,
                    c.answer_ns as i64,
                    c.end_ns as i64,
                    c.finished_ns as i64,
                    c.final_status,
                    c.reason,
                    c.sip_messages as i64,
                    c.streams,
                    c.mos,
                    c.day,
                ])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO streams VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26)",
            )?;
            for s in &batch.streams {
                st.execute(params![
                    s.day,
                    s.start,
                    s.call_id,
                    s.stream,
                    s.src,
                    s.dst,
                    s.ssrc,
                    s.codec,
                    s.direction,
                    s.packets as i64,
                    s.expected as i64,
                    s.lost,
                    s.lost_pct,
                    s.out_of_order as i64,
                    s.jitter_ms,
                    s.max_jitter_ms,
                    s.mean_jitter_ms,
                    s.max_delta_ms,
                    s.burst_r,
                    s.r_factor,
                    s.mos,
                    s.mos_f1,
                    s.mos_f2,
                    s.mos_adapt,
                    join(&s.loss_runs),
                    join(&s.delay_variation),
                ])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO stream_intervals VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
            )?;
            for i in &batch.intervals {
                st.execute(params![
                    i.day,
                    i.start,
                    i.call_id,
                    i.stream,
                    i.index as i64,
                    i.start_ns as i64,
                    i.packets as i64,
                    i.lost as i64,
                    i.lost_pct,
                    i.max_jitter_ms,
                    i.mean_jitter_ms,
                    i.burst_r,
                    i.mos,
                ])?;
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO sip_messages VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
            )?;
            for m in &batch.sip_messages {
                st.execute(params![
                    m.day,
                    m.ts,
                    m.ts_ns as i64,
                    m.call_id,
                    m.src,
                    m.dst,
                    m.method,
                    m.status,
                    m.cseq,
                    m.size,
                ])?;
            }
            let mut st =
                tx.prepare_cached("INSERT OR REPLACE INTO pcaps VALUES (?1,?2,?3,?4,?5,?6,?7)")?;
            for p in &batch.pcaps {
                st.execute(params![
                    p.day,
                    p.call_id,
                    p.path,
                    p.packets as i64,
                    p.bytes as i64,
                    p.first_ns as i64,
                    p.last_ns as i64,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Calls matching `filter`, in its order (newest first by default).
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn list_calls(&self, filter: &CallFilter) -> Result<Vec<CallRow>, SinkError> {
        let mut sql = String::from("SELECT * FROM calls WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(scope) = &filter.scope {
            sql.push_str(" AND (0");
            for d in scope {
                arg(&mut sql, " OR domain = ? COLLATE NOCASE", d.clone().into());
                arg(
                    &mut sql,
                    " OR from_domain = ? COLLATE NOCASE",
                    d.clone().into(),
                );
                arg(
                    &mut sql,
                    " OR to_domain = ? COLLATE NOCASE",
                    d.clone().into(),
                );
            }
            sql.push(')');
        }
        if let Some(n) = &filter.number {
            let pattern = format!("%{}%", n.replace(['%', '_'], ""));
            arg(&mut sql, " AND (from_user LIKE ?", pattern.clone().into());
            arg(&mut sql, " OR to_user LIKE ?)", pattern.into());
        }
        if let Some(d) = &filter.domain {
            arg(
                &mut sql,
                " AND (domain = ? COLLATE NOCASE",
                d.clone().into(),
            );
            arg(
                &mut sql,
                " OR from_domain = ? COLLATE NOCASE",
                d.clone().into(),
            );
            arg(
                &mut sql,
                " OR to_domain = ? COLLATE NOCASE)",
                d.clone().into(),
            );
        }
        if let Some(t) = filter.since_ns {
            arg(&mut sql, " AND start_ns >= ?", (t as i64).into());
        }
        if let Some(t) = filter.until_ns {
            arg(&mut sql, " AND start_ns < ?", (t as i64).into());
        }
        if let Some(m) = filter.max_mos {
            arg(&mut sql, " AND mos <= ?", m.into());
        }
        if let Some(m) = filter.min_mos {
            arg(&mut sql, " AND mos >= ?", m.into());
        }
        let dir = if filter.ascending { "ASC" } else { "DESC" };
        let _ = write!(
            sql,
            " ORDER BY {} {dir}, start_ns DESC, call_id",
            filter.sort.column()
        );
        arg(&mut sql, " LIMIT ?", i64::from(filter.limit.max(1)).into());
        arg(&mut sql, " OFFSET ?", i64::from(filter.offset).into());
        let conn = self.lock();
        let mut st = conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), call_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One call by Call-ID.
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn call(&self, call_id: &str) -> Result<Option<CallRow>, SinkError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT * FROM calls WHERE call_id = ?1",
                [call_id],
                call_row,
            )
            .optional()?)
    }

    /// The streams of a call, by stream index.
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn streams(&self, call_id: &str) -> Result<Vec<StreamRow>, SinkError> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT * FROM streams WHERE call_id = ?1 ORDER BY stream")?;
        let rows = st.query_map([call_id], stream_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The interval rows of a call.
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn intervals(&self, call_id: &str) -> Result<Vec<IntervalRow>, SinkError> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT * FROM stream_intervals WHERE call_id = ?1 ORDER BY stream, idx")?;
        let rows = st.query_map([call_id], |r| {
            Ok(IntervalRow {
                day: r.get(0)?,
                start: r.get(1)?,
                call_id: r.get(2)?,
                stream: r.get(3)?,
                index: r.get::<_, i64>(4)? as u64,
                start_ns: r.get::<_, i64>(5)? as u64,
                packets: r.get::<_, i64>(6)? as u64,
                lost: r.get::<_, i64>(7)? as u64,
                lost_pct: r.get(8)?,
                max_jitter_ms: r.get(9)?,
                mean_jitter_ms: r.get(10)?,
                burst_r: r.get(11)?,
                mos: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The SIP messages of a call, in capture order (the ladder).
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn sip_messages(&self, call_id: &str) -> Result<Vec<SipMessageRow>, SinkError> {
        let conn = self.lock();
        let mut st =
            conn.prepare("SELECT * FROM sip_messages WHERE call_id = ?1 ORDER BY ts_ns")?;
        let rows = st.query_map([call_id], |r| {
            Ok(SipMessageRow {
                day: r.get(0)?,
                ts: r.get(1)?,
                ts_ns: r.get::<_, i64>(2)? as u64,
                call_id: r.get(3)?,
                src: r.get(4)?,
                dst: r.get(5)?,
                method: r.get(6)?,
                status: r.get(7)?,
                cseq: r.get(8)?,
                size: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Where a call's pcap is.
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn pcap(&self, call_id: &str) -> Result<Option<PcapRow>, SinkError> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT * FROM pcaps WHERE call_id = ?1", [call_id], |r| {
                Ok(PcapRow {
                    day: r.get(0)?,
                    call_id: r.get(1)?,
                    path: r.get(2)?,
                    packets: r.get::<_, i64>(3)? as u64,
                    bytes: r.get::<_, i64>(4)? as u64,
                    first_ns: r.get::<_, i64>(5)? as u64,
                    last_ns: r.get::<_, i64>(6)? as u64,
                })
            })
            .optional()?)
    }

    /// Pcaps not yet offloaded to the object store, in the order their
    /// rows were written, after row `after` (a rowid; 0 for all):
    /// `(rowid, call_id, path)`. The S3 offload's durable queue; the rowid
    /// lets it read only new rows on each scan (a range on the primary
    /// key, not a scan of the table).
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn pcaps_to_offload(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String, String)>, SinkError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT p.rowid, p.call_id, p.path FROM pcaps p \
             LEFT JOIN pcap_objects o USING (call_id) \
             WHERE p.rowid > ?1 AND o.call_id IS NULL ORDER BY p.rowid LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, i64::from(limit)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records where a call's pcap was offloaded (its object path in the
    /// bucket), `uploaded_ns` since the epoch.
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn set_pcap_object(
        &self,
        call_id: &str,
        object: &str,
        uploaded_ns: u64,
    ) -> Result<(), SinkError> {
        self.lock().execute(
            "INSERT OR REPLACE INTO pcap_objects VALUES (?1, ?2, ?3)",
            params![call_id, object, uploaded_ns as i64],
        )?;
        Ok(())
    }

    /// Spool paths of the pcaps already offloaded (what retention may
    /// remove when the offload is on).
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn offloaded_pcap_paths(&self) -> Result<Vec<String>, SinkError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT p.path FROM pcaps p JOIN pcap_objects o USING (call_id) WHERE o.object <> ''",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The object path of a call's offloaded pcap.
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn pcap_object(&self, call_id: &str) -> Result<Option<String>, SinkError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT object FROM pcap_objects WHERE call_id = ?1",
                [call_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Rows per table (for `/metrics` and tests).
    ///
    /// # Errors
    ///
    /// On any SQLite error.
    pub fn counts(&self) -> Result<[(&'static str, u64); 5], SinkError> {
        let conn = self.lock();
        let mut out = [
            ("calls", 0),
            ("streams", 0),
            ("stream_intervals", 0),
            ("sip_messages", 0),
            ("pcaps", 0),
        ];
        for (table, n) in &mut out {
            *n = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // write is one transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sink for SqliteSink {
    fn write(&mut self, batch: &mut Batch) -> impl Future<Output = Result<(), SinkError>> + Send {
        // One transaction: all or nothing.
        let result = self.write_now(batch);
        if result.is_ok() {
            *batch = Batch::default();
        }
        std::future::ready(result)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS calls (
  start_ns INTEGER NOT NULL, call_id TEXT PRIMARY KEY, from_uri TEXT, to_uri TEXT,
  from_user TEXT, to_user TEXT, domain TEXT, from_domain TEXT, to_domain TEXT, method TEXT,
  answer_ns INTEGER, end_ns INTEGER, finished_ns INTEGER, final_status INTEGER, reason TEXT,
  sip_messages INTEGER, streams INTEGER, mos REAL, day INTEGER);
CREATE INDEX IF NOT EXISTS calls_start ON calls(start_ns);
CREATE INDEX IF NOT EXISTS calls_domain ON calls(domain);
CREATE TABLE IF NOT EXISTS streams (
  day INTEGER, start INTEGER, call_id TEXT NOT NULL, stream INTEGER NOT NULL, src TEXT, dst TEXT,
  ssrc TEXT, codec TEXT, direction TEXT, packets INTEGER, expected INTEGER, lost INTEGER,
  lost_pct REAL, out_of_order INTEGER, jitter_ms REAL, max_jitter_ms REAL, mean_jitter_ms REAL,
  max_delta_ms REAL, burst_r REAL, r_factor REAL, mos REAL, mos_f1 REAL, mos_f2 REAL,
  mos_adapt REAL, loss_runs TEXT, delay_variation TEXT, PRIMARY KEY (call_id, stream));
CREATE TABLE IF NOT EXISTS stream_intervals (
  day INTEGER, start INTEGER, call_id TEXT NOT NULL, stream INTEGER NOT NULL, idx INTEGER NOT NULL,
  start_ns INTEGER, packets INTEGER, lost INTEGER, lost_pct REAL, max_jitter_ms REAL,
  mean_jitter_ms REAL, burst_r REAL, mos REAL, PRIMARY KEY (call_id, stream, idx));
CREATE TABLE IF NOT EXISTS sip_messages (
  day INTEGER, ts INTEGER, ts_ns INTEGER, call_id TEXT NOT NULL, src TEXT, dst TEXT,
  method TEXT, status INTEGER, cseq TEXT, size INTEGER);
CREATE INDEX IF NOT EXISTS sip_messages_call ON sip_messages(call_id);
CREATE TABLE IF NOT EXISTS pcaps (
  day INTEGER, call_id TEXT PRIMARY KEY, path TEXT NOT NULL, packets INTEGER, bytes INTEGER,
  first_ns INTEGER, last_ns INTEGER);
CREATE TABLE IF NOT EXISTS pcap_objects (
  call_id TEXT PRIMARY KEY, object TEXT NOT NULL, uploaded_ns INTEGER);
";

fn call_row(r: &Row<'_>) -> rusqlite::Result<CallRow> {
    let start_ns = r.get::<_, i64>(0)? as u64;
    Ok(CallRow {
        start_ns,
        call_id: r.get(1)?,
        from_uri: r.get(2)?,
        to_uri: r.get(3)?,
        from_user: r.get(4)?,
        to_user: r.get(5)?,
        domain: r.get(6)?,
        from_domain: r.get(7)?,
        to_domain: r.get(8)?,
        method: r.get(9)?,
        answer_ns: r.get::<_, i64>(10)? as u64,
        end_ns: r.get::<_, i64>(11)? as u64,
        finished_ns: r.get::<_, i64>(12)? as u64,
        final_status: r.get(13)?,
        reason: r.get(14)?,
        sip_messages: r.get::<_, i64>(15)? as u64,
        streams: r.get(16)?,
        mos: r.get(17)?,
        day: r.get(18)?,
        start: super::secs(start_ns),
    })
}

fn stream_row(r: &Row<'_>) -> rusqlite::Result<StreamRow> {
    Ok(StreamRow {
        day: r.get(0)?,
        start: r.get(1)?,
        call_id: r.get(2)?,
        stream: r.get(3)?,
        src: r.get(4)?,
        dst: r.get(5)?,
        ssrc: r.get(6)?,
        codec: r.get(7)?,
        direction: r.get(8)?,
        packets: r.get::<_, i64>(9)? as u64,
        expected: r.get::<_, i64>(10)? as u64,
        lost: r.get(11)?,
        lost_pct: r.get(12)?,
        out_of_order: r.get::<_, i64>(13)? as u64,
        jitter_ms: r.get(14)?,
        max_jitter_ms: r.get(15)?,
        mean_jitter_ms: r.get(16)?,
        max_delta_ms: r.get(17)?,
        burst_r: r.get(18)?,
        r_factor: r.get(19)?,
        mos: r.get(20)?,
        mos_f1: r.get(21)?,
        mos_f2: r.get(22)?,
        mos_adapt: r.get(23)?,
        loss_runs: split(&r.get::<_, String>(24)?),
        delay_variation: split(&r.get::<_, String>(25)?),
    })
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn split(s: &str) -> Vec<u64> {
    s.split(',').filter_map(|x| x.parse().ok()).collect()
}
