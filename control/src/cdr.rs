//! Call detail records: a [`CallRecorder`] the B2BUA feeds as a call progresses
//! (start, answer, legs with codecs and the dataplane's media statistics, end), which
//! yields an [`sbus::record::Cdr`]; [`write()`] appends it to the store (SQLite, and
//! replicated by SBUS), and [`write_csv()`] exports CDRs as CSV with a filter.
//!
//! Timestamps are wall-clock Unix milliseconds passed by the driver.
//!
//! ```
//! use control::cdr::{CallRecorder, Cause};
//! use sbus::record::CdrLeg;
//! let mut rec = CallRecorder::start("abc@192.0.2.1", "example.com", "alice", "bob", 1_700_000_000_000);
//! rec.answer(1_700_000_002_000);
//! rec.leg(CdrLeg { role: "caller".into(), peer: "192.0.2.1:4000".into(), codec: "PCMU".into(),
//!                  packets: 500, bytes: 86_000, drops: 0, lost: 2 });
//! let cdr = rec.end(1_700_000_012_000, 200, Cause::CallerBye);
//! assert_eq!(control::cdr::duration_ms(&cdr), 10_000);
//! // control::cdr::write(&store, &cdr) appends it durably.
//! ```

use std::io::Write;

use sbus::record::{Cdr, CdrLeg};
use sbus::store::Store;
use sbus::types::CdrId;

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The caller hung up (BYE from the caller).
    CallerBye,
    /// The callee hung up.
    CalleeBye,
    /// The caller cancelled before answer.
    Cancel,
    /// The callee (or the dialplan) rejected it.
    Rejected,
    /// No answer in time, or a transaction timed out.
    Timeout,
    /// Media stopped (RTP timeout) or a session timer expired.
    MediaTimeout,
    /// Ended by the system (shutdown, error).
    System,
}

impl Cause {
    /// The stored text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::CallerBye => "caller-bye",
            Cause::CalleeBye => "callee-bye",
            Cause::Cancel => "cancel",
            Cause::Rejected => "rejected",
            Cause::Timeout => "timeout",
            Cause::MediaTimeout => "media-timeout",
            Cause::System => "system",
        }
    }
}

/// Builds the CDR of one call.
#[derive(Clone, Debug)]
pub struct CallRecorder {
    cdr: Cdr,
}

impl CallRecorder {
    /// A call started (INVITE received) at `start_ms`.
    #[must_use]
    pub fn start(call_id: &str, domain: &str, from: &str, to: &str, start_ms: u64) -> CallRecorder {
        CallRecorder {
            cdr: Cdr {
                call_id: call_id.to_owned(),
                domain: domain.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
                start_ms,
                answer_ms: None,
                end_ms: start_ms,
                status: 0,
                disconnect_cause: String::new(),
                legs: Vec::new(),
            },
        }
    }

    /// The call was answered (first 2xx) at `at_ms`; later answers are ignored.
    pub fn answer(&mut self, at_ms: u64) {
        self.cdr.answer_ms.get_or_insert(at_ms);
    }

    /// Adds a leg, or replaces the one with the same role (final media statistics).
    pub fn leg(&mut self, leg: CdrLeg) {
        match self.cdr.legs.iter_mut().find(|l| l.role == leg.role) {
            Some(l) => *l = leg,
            None => self.cdr.legs.push(leg),
        }
    }

    /// The call ended at `end_ms` with final status `status` (200 if answered).
    #[must_use]
    pub fn end(mut self, end_ms: u64, status: u16, cause: Cause) -> Cdr {
        self.cdr.end_ms = end_ms.max(self.cdr.start_ms);
        self.cdr.status = status;
        self.cdr.disconnect_cause = cause.as_str().to_owned();
        self.cdr
    }
}

/// Talk time: end − answer, 0 if unanswered.
#[must_use]
pub fn duration_ms(cdr: &Cdr) -> u64 {
    cdr.answer_ms.map_or(0, |a| cdr.end_ms.saturating_sub(a))
}

/// Appends `cdr` to the store (durable when this returns; SBUS replicates it).
///
/// # Errors
/// The store failed.
pub fn write(store: &Store, cdr: &Cdr) -> Result<CdrId, sbus::store::Error> {
    store.append_cdr(cdr)
}

/// Which CDRs an export keeps.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this domain.
    pub domain: Option<String>,
    /// Calls started at or after (Unix ms).
    pub from_ms: Option<u64>,
    /// Calls started before (Unix ms).
    pub to_ms: Option<u64>,
}

impl Filter {
    /// Whether `cdr` passes.
    #[must_use]
    pub fn keeps(&self, cdr: &Cdr) -> bool {
        self.domain
            .as_ref()
            .is_none_or(|d| d.eq_ignore_ascii_case(&cdr.domain))
            && self.from_ms.is_none_or(|f| cdr.start_ms >= f)
            && self.to_ms.is_none_or(|t| cdr.start_ms < t)
    }
}

/// The CSV header line of [`write_csv`].
pub const CSV_COLUMNS: &str = "call_id,domain,from,to,start_ms,answer_ms,end_ms,duration_ms,status,disconnect_cause,\
legs,codecs,packets,bytes,drops,lost";

/// Writes every CDR of `store` that `filter` keeps as CSV (RFC 4180 quoting), one row
/// per call, media counters summed over legs; returns the number of rows.
///
/// # Errors
/// The store or the writer failed.
pub fn write_csv(store: &Store, filter: &Filter, out: &mut dyn Write) -> Result<usize, CsvError> {
    writeln!(out, "{CSV_COLUMNS}")?;
    let mut after = None;
    let mut rows = 0;
    loop {
        let page = store.cdrs(after, 1000)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(*last);
        for (_, cdr) in page.iter().filter(|(_, c)| filter.keeps(c)) {
            write_row(out, cdr)?;
            rows += 1;
        }
    }
    Ok(rows)
}

/// CSV export failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    /// Reading CDRs failed.
    #[error(transparent)]
    Store(#[from] sbus::store::Error),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn write_row(out: &mut dyn Write, c: &Cdr) -> std::io::Result<()> {
    let sum = |f: fn(&CdrLeg) -> u64| c.legs.iter().map(f).sum::<u64>();
    let legs: Vec<String> = c
        .legs
        .iter()
        .map(|l| format!("{}={}", l.role, l.peer))
        .collect();
    let codecs: Vec<&str> = c.legs.iter().map(|l| l.codec.as_str()).collect();
    let fields = [
        csv(&c.call_id),
        csv(&c.domain),
        csv(&c.from),
        csv(&c.to),
        c.start_ms.to_string(),
        c.answer_ms.map(|a| a.to_string()).unwrap_or_default(),
        c.end_ms.to_string(),
        duration_ms(c).to_string(),
        c.status.to_string(),
        csv(&c.disconnect_cause),
        csv(&legs.join(" ")),
        csv(&codecs.join(" ")),
        sum(|l| l.packets).to_string(),
        sum(|l| l.bytes).to_string(),
        sum(|l| l.drops).to_string(),
        sum(|l| l.lost).to_string(),
    ];
    writeln!(out, "{}", fields.join(","))
}

/// RFC 4180: quote fields with `,`, `"` or line breaks, doubling quotes. A leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so spreadsheets do not run it as a formula.
fn csv(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Writes CDRs into a ClickHouse table `cdrs` (created on first use), over HTTP with
/// `RowBinary` through the `clickhouse` crate, validation off so that Debian's
/// ClickHouse 18.16 works (as `nqs::sink::clickhouse` does). The table layout is in
/// `docs/sip-provisioning.md`. Async: call it from the driver, never from a core.
#[derive(Clone)]
pub struct ClickHouseWriter {
    client: ::clickhouse::Client,
    database: String,
    ready: bool,
}

impl std::fmt::Debug for ClickHouseWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseWriter")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// The DDL of the `cdrs` table (ClickHouse 18.16 syntax; positional order of [`CdrRow`]).
pub const CLICKHOUSE_DDL: &str = "CREATE TABLE IF NOT EXISTS cdrs (\
day Date, start DateTime, start_ms UInt64, call_id String, domain String, \
from_user String, to_user String, answer_ms UInt64, end_ms UInt64, duration_ms UInt64, \
status UInt16, disconnect_cause String, leg_roles Array(String), leg_peers Array(String), \
leg_codecs Array(String), leg_packets Array(UInt64), leg_bytes Array(UInt64), \
leg_drops Array(UInt64), leg_lost Array(UInt64)) \
ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (domain, start, call_id)";

/// One row of the ClickHouse `cdrs` table (legs as parallel arrays).
#[derive(Clone, Debug, PartialEq, serde::Serialize, ::clickhouse::Row)]
#[clickhouse(crate = "::clickhouse")]
pub struct CdrRow {
    /// Day of the start (`Date`: days since 1970-01-01).
    pub day: u16,
    /// Start, whole seconds (`DateTime`).
    pub start: u32,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// Call-ID.
    pub call_id: String,
    /// Domain.
    pub domain: String,
    /// Caller.
    pub from_user: String,
    /// Callee.
    pub to_user: String,
    /// Answer, Unix ms; 0 if unanswered.
    pub answer_ms: u64,
    /// End, Unix ms.
    pub end_ms: u64,
    /// Talk time, ms.
    pub duration_ms: u64,
    /// Final status.
    pub status: u16,
    /// Why it ended.
    pub disconnect_cause: String,
    /// Leg roles.
    pub leg_roles: Vec<String>,
    /// Leg peers.
    pub leg_peers: Vec<String>,
    /// Leg codecs.
    pub leg_codecs: Vec<String>,
    /// Packets per leg.
    pub leg_packets: Vec<u64>,
    /// Bytes per leg.
    pub leg_bytes: Vec<u64>,
    /// Dataplane drops per leg.
    pub leg_drops: Vec<u64>,
    /// Upstream loss per leg.
    pub leg_lost: Vec<u64>,
}

impl From<&Cdr> for CdrRow {
    fn from(c: &Cdr) -> CdrRow {
        let legs = |f: fn(&CdrLeg) -> u64| c.legs.iter().map(f).collect();
        let texts = |f: fn(&CdrLeg) -> &String| c.legs.iter().map(|l| f(l).clone()).collect();
        CdrRow {
            day: u16::try_from(c.start_ms / 86_400_000).unwrap_or(u16::MAX),
            start: u32::try_from(c.start_ms / 1000).unwrap_or(u32::MAX),
            start_ms: c.start_ms,
            call_id: c.call_id.clone(),
            domain: c.domain.clone(),
            from_user: c.from.clone(),
            to_user: c.to.clone(),
            answer_ms: c.answer_ms.unwrap_or(0),
            end_ms: c.end_ms,
            duration_ms: duration_ms(c),
            status: c.status,
            disconnect_cause: c.disconnect_cause.clone(),
            leg_roles: texts(|l| &l.role),
            leg_peers: texts(|l| &l.peer),
            leg_codecs: texts(|l| &l.codec),
            leg_packets: legs(|l| l.packets),
            leg_bytes: legs(|l| l.bytes),
            leg_drops: legs(|l| l.drops),
            leg_lost: legs(|l| l.lost),
        }
    }
}

impl ClickHouseWriter {
    /// A writer for `url` (e.g. `http://127.0.0.1:8123`) into `database`. Nothing
    /// is sent before the first write.
    ///
    /// # Errors
    /// A database name that is not `[A-Za-z0-9_]+`.
    pub fn new(url: &str, database: &str) -> Result<ClickHouseWriter, String> {
        let valid = !database.is_empty()
            && database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "ClickHouse database name {database:?}: use [A-Za-z0-9_]+"
            ));
        }
        Ok(ClickHouseWriter {
            client: ::clickhouse::Client::default()
                .with_url(url)
                .with_validation(false),
            database: database.to_owned(),
            ready: false,
        })
    }

    /// The client (for queries; tables are `DATABASE.cdrs`).
    #[must_use]
    pub fn client(&self) -> &::clickhouse::Client {
        &self.client
    }

    /// Inserts `cdrs` in one `INSERT`, creating the database and table first if needed.
    ///
    /// # Errors
    /// An unreachable server, or a refused statement; nothing of
    /// this batch was written then, and the caller retries it (SQLite keeps the CDRs).
    pub async fn write(&mut self, cdrs: &[Cdr]) -> Result<(), ::clickhouse::error::Error> {
        if !self.ready {
            // Named `[A-Za-z0-9_]+` (checked by `new`): safe to splice into the DDL.
            let db = &self.database;
            for ddl in [
                format!("CREATE DATABASE IF NOT EXISTS {db}"),
                CLICKHOUSE_DDL.replace("EXISTS cdrs", &format!("EXISTS {db}.cdrs")),
            ] {
                self.client.query(&ddl).execute().await?;
            }
            self.ready = true;
        }
        if cdrs.is_empty() {
            return Ok(());
        }
        // Insert names one table: the database goes in the request's settings.
        let db = self.client.clone().with_database(&self.database);
        let mut insert = db.insert::<CdrRow>("cdrs").await?;
        for c in cdrs {
            insert.write(&CdrRow::from(c)).await?;
        }
        insert.end().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbus::types::MemberId;

    #[test]
    fn record_store_and_export() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), MemberId(1)).unwrap();
        let mut rec = CallRecorder::start("c1", "example.com", "alice", "+44 20, \"x\"", 1_000);
        rec.answer(3_000);
        rec.answer(4_000);
        for role in ["caller", "callee", "caller"] {
            rec.leg(CdrLeg {
                role: role.into(),
                peer: "192.0.2.1:4000".into(),
                codec: "PCMU".into(),
                packets: 10,
                bytes: 1720,
                drops: 1,
                lost: 2,
            });
        }
        let cdr = rec.end(13_000, 200, Cause::CalleeBye);
        assert_eq!(duration_ms(&cdr), 10_000);
        write(&store, &cdr).unwrap();
        let missed = CallRecorder::start("c2", "other.org", "=cmd", "bob", 20_000).end(
            25_000,
            487,
            Cause::Cancel,
        );
        write(&store, &missed).unwrap();
        let mut out = Vec::new();
        assert_eq!(write_csv(&store, &Filter::default(), &mut out).unwrap(), 2);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_COLUMNS);
        assert_eq!(
            lines[1],
            "c1,example.com,alice,\"'+44 20, \"\"x\"\"\",1000,3000,13000,10000,200,callee-bye,\
             caller=192.0.2.1:4000 callee=192.0.2.1:4000,PCMU PCMU,20,3440,2,4"
        );
        assert_eq!(
            lines[2],
            "c2,other.org,'=cmd,bob,20000,,25000,0,487,cancel,,,0,0,0,0"
        );
        let f = Filter {
            domain: Some("other.org".into()),
            from_ms: Some(20_000),
            to_ms: Some(20_001),
        };
        let mut out = Vec::new();
        assert_eq!(write_csv(&store, &f, &mut out).unwrap(), 1);
        let f = Filter {
            to_ms: Some(1_000),
            ..Filter::default()
        };
        assert_eq!(write_csv(&store, &f, &mut Vec::new()).unwrap(), 0);
    }
}
