//! The ClickHouse sink, over HTTP with `RowBinary` through the official
//! `clickhouse` crate. Validation is off: with it the crate describes tables
//! with `describe_include_subcolumns` and reads `RowBinaryWithNamesAndTypes`,
//! neither of which Debian's ClickHouse 18.16 knows. The schema therefore
//! uses only what 18.16 has (MergeTree with PARTITION BY / ORDER BY, `Date`,
//! `DateTime`, `Array`); see `docs/nqs.md`.

use std::future::Future;

use ::clickhouse::Client;

use super::{Batch, Sink, SinkError};

/// Writes batches into one ClickHouse database, creating its tables on the
/// first write that reaches the server.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: Client,
    database: String,
    schema_ready: bool,
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
            schema_ready: false,
        }
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
        // The database must exist before a client bound to it can run DDL.
        let root = self.client.clone().with_database("default");
        root.query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            self.database
        ))
        .execute()
        .await?;
        for ddl in SCHEMA {
            self.client.query(ddl).execute().await?;
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

/// The tables, in the column order of the row types (RowBinary is
/// positional). 18.16 syntax: no TTL, no CODEC, no DateTime64.
const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS calls (
        day Date, start DateTime, start_ns UInt64, call_id String,
        from_uri String, to_uri String, from_user String, to_user String,
        domain String, from_domain String, to_domain String, method String,
        answer_ns UInt64, end_ns UInt64, finished_ns UInt64, final_status UInt16,
        reason String, sip_messages UInt64, streams UInt32, mos Float64
    ) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (domain, start, call_id)",
    "CREATE TABLE IF NOT EXISTS streams (
        day Date, start DateTime, call_id String, stream UInt32, src String, dst String,
        ssrc String, codec String, direction String, packets UInt64, expected UInt64,
        lost Int64, lost_pct Float64, out_of_order UInt64, jitter_ms Float64,
        max_jitter_ms Float64, mean_jitter_ms Float64, max_delta_ms Float64,
        burst_r Float64, r_factor Float64, mos Float64, mos_f1 Float64, mos_f2 Float64,
        mos_adapt Float64, loss_runs Array(UInt64), delay_variation Array(UInt64)
    ) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (start, call_id, stream)",
    "CREATE TABLE IF NOT EXISTS stream_intervals (
        day Date, start DateTime, call_id String, stream UInt32, index UInt64,
        start_ns UInt64, packets UInt64, lost UInt64, lost_pct Float64,
        max_jitter_ms Float64, mean_jitter_ms Float64, burst_r Float64, mos Float64
    ) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (start, call_id, stream, index)",
    "CREATE TABLE IF NOT EXISTS sip_messages (
        day Date, ts DateTime, ts_ns UInt64, call_id String, src String, dst String,
        method String, status UInt16, cseq String, size UInt32
    ) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (ts, call_id)",
    "CREATE TABLE IF NOT EXISTS pcaps (
        day Date, call_id String, path String, packets UInt64, bytes UInt64,
        first_ns UInt64, last_ns UInt64
    ) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (call_id)",
];
