//! The ClickHouse sink, over HTTP with `RowBinary` through the official
//! `clickhouse` crate. Validation is off: with it the crate describes tables
//! with `describe_include_subcolumns` and reads `RowBinaryWithNamesAndTypes`,
//! neither of which Debian's ClickHouse 18.16 knows. The schema is chosen by
//! the server's `version()`: on 18.16 (what the tests run against) only
//! MergeTree with PARTITION BY / ORDER BY, `Date`, `DateTime` and `Array`;
//! from 20.1 on also `LowCardinality(String)` for the repetitive columns and
//! a `TTL` when a retention is configured. Both encode the same way in
//! RowBinary, so the row types do not change. See `docs/nqs.md`.

use std::future::Future;

use ::clickhouse::Client;

use super::{Batch, Sink, SinkError};

/// Writes batches into one ClickHouse database, creating its tables on the
/// first write that reaches the server.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: Client,
    database: String,
    ttl_days: Option<u32>,
    schema_ready: bool,
}

/// A server version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion(pub u32, pub u32);

impl ServerVersion {
    /// Parses `version()` output such as `18.16.1` or `23.8.2.7`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self(major, minor))
    }

    /// `LowCardinality` without the experimental setting, `TTL`,
    /// `DateTime64`: all there from 20.1.
    pub fn is_modern(self) -> bool {
        self >= ServerVersion(20, 1)
    }
}

impl ClickHouseSink {
    /// A sink for `url` (e.g. `http://127.0.0.1:8123`) and `database`.
    /// Nothing is sent until the first write.
    pub fn new(url: &str, database: &str) -> Self {
        let client = Client::default()
            .with_url(url)
            .with_validation(false)
            .with_database(database);
        Self {
            client,
            database: database.to_string(),
            ttl_days: None,
            schema_ready: false,
        }
    }

    /// Rows older than `days` are dropped by the server (a `TTL` on every
    /// table), on servers that have TTL (not 18.16: there the option is
    /// ignored and a warning logged).
    pub fn with_ttl_days(mut self, days: u32) -> Self {
        self.ttl_days = Some(days);
        self
    }

    /// The client (for queries).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the database and tables if they do not exist.
    ///
    /// # Errors
    ///
    /// When the server is unreachable or refuses the DDL.
    pub async fn ensure_schema(&mut self) -> Result<(), SinkError> {
        if self.database.is_empty()
            || !self
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(SinkError::Config(format!(
                "ClickHouse database name {:?}: only letters, digits and _",
                self.database
            )));
        }
        // The database must exist before a client bound to it can run DDL.
        let root = self.client.clone().with_database("default");
        root.query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            self.database
        ))
        .execute()
        .await?;
        let version: String = self.client.query("SELECT version()").fetch_one().await?;
        let version = ServerVersion::parse(&version).unwrap_or(ServerVersion(0, 0));
        if self.ttl_days.is_some() && !version.is_modern() {
            tracing::warn!(
                "ClickHouse {version:?} has no TTL: rows are kept until dropped by hand"
            );
        }
        for ddl in schema(version, self.ttl_days) {
            self.client.query(&ddl).execute().await?;
        }
        self.schema_ready = true;
        Ok(())
    }

    async fn write_batch(&mut self, batch: &mut Batch) -> Result<(), SinkError> {
        if !self.schema_ready {
            self.ensure_schema().await?;
        }
        // Each table is taken out of the batch once the server confirmed it.
        insert(&self.client, "calls", &mut batch.calls).await?;
        insert(&self.client, "streams", &mut batch.streams).await?;
        insert(&self.client, "stream_intervals", &mut batch.intervals).await?;
        insert(&self.client, "sip_messages", &mut batch.sip_messages).await?;
        insert(&self.client, "pcaps", &mut batch.pcaps).await?;
        Ok(())
    }
}

/// One `INSERT … FORMAT RowBinary` of `rows`, emptied on success.
async fn insert<T>(client: &Client, table: &str, rows: &mut Vec<T>) -> Result<(), SinkError>
where
    T: ::clickhouse::Row + ::clickhouse::RowWrite + for<'a> ::clickhouse::Row<Value<'a> = T>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for row in rows.iter() {
        insert.write(row).await?;
    }
    insert.end().await?;
    rows.clear();
    Ok(())
}

impl Sink for ClickHouseSink {
    fn write(&mut self, batch: &mut Batch) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.write_batch(batch)
    }
}

/// The DDL of the tables for a server version, in the column order of the
/// row types (RowBinary is positional).
pub fn schema(version: ServerVersion, ttl_days: Option<u32>) -> Vec<String> {
    let modern = version.is_modern();
    let lc = if modern {
        "LowCardinality(String)"
    } else {
        "String"
    };
    let ttl = match ttl_days {
        Some(days) if modern => format!(" TTL day + INTERVAL {days} DAY"),
        _ => String::new(),
    };
    let table = |name: &str, columns: &str, order: &str| {
        format!(
            "CREATE TABLE IF NOT EXISTS {name} ({columns}) ENGINE = MergeTree \
             PARTITION BY toYYYYMM(day) ORDER BY ({order}){ttl}"
        )
    };
    vec![
        table(
            "calls",
            &format!(
                "day Date, start DateTime, start_ns UInt64, call_id String, \
                 from_uri String, to_uri String, from_user String, to_user String, \
                 domain {lc}, from_domain {lc}, to_domain {lc}, method {lc}, \
                 answer_ns UInt64, end_ns UInt64, finished_ns UInt64, final_status UInt16, \
                 reason {lc}, sip_messages UInt64, streams UInt32, mos Float64"
            ),
            "domain, start, call_id",
        ),
        table(
            "streams",
            &format!(
                "day Date, start DateTime, call_id String, stream UInt32, src String, dst String, \
                 ssrc String, codec {lc}, direction {lc}, packets UInt64, expected UInt64, \
                 lost Int64, lost_pct Float64, out_of_order UInt64, jitter_ms Float64, \
                 max_jitter_ms Float64, mean_jitter_ms Float64, max_delta_ms Float64, \
                 burst_r Float64, r_factor Float64, mos Float64, mos_f1 Float64, mos_f2 Float64, \
                 mos_adapt Float64, loss_runs Array(UInt64), delay_variation Array(UInt64)"
            ),
            "start, call_id, stream",
        ),
        table(
            "stream_intervals",
            "day Date, start DateTime, call_id String, stream UInt32, index UInt64, \
             start_ns UInt64, packets UInt64, lost UInt64, lost_pct Float64, \
             max_jitter_ms Float64, mean_jitter_ms Float64, burst_r Float64, mos Float64",
            "start, call_id, stream, index",
        ),
        table(
            "sip_messages",
            &format!(
                "day Date, ts DateTime, ts_ns UInt64, call_id String, src String, dst String, \
                 method {lc}, status UInt16, cseq String, size UInt32"
            ),
            "ts, call_id",
        ),
        table(
            "pcaps",
            "day Date, call_id String, path String, packets UInt64, bytes UInt64, \
             first_ns UInt64, last_ns UInt64",
            "call_id",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_the_schema_they_get() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        assert_eq!(old, ServerVersion(18, 16));
        assert!(!old.is_modern());
        assert!(ServerVersion::parse("23.8.2.7").unwrap().is_modern());
        assert_eq!(ServerVersion::parse("x"), None);
        let legacy = schema(old, Some(30));
        assert_eq!(legacy.len(), 5);
        assert!(
            legacy
                .iter()
                .all(|d| !d.contains("LowCardinality") && !d.contains("TTL"))
        );
        let modern = schema(ServerVersion(24, 3), Some(30));
        assert!(
            modern
                .iter()
                .all(|d| d.ends_with(" TTL day + INTERVAL 30 DAY"))
        );
        assert!(modern[0].contains("domain LowCardinality(String)"));
        assert!(!schema(ServerVersion(24, 3), None)[0].contains("TTL"));
    }
}
