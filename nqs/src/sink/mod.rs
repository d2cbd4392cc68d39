//! Where the live service's rows go: the tables `calls`, `streams`,
//! `stream_intervals`, `sip_messages` and `pcaps` (documented in
//! `docs/nqs.md`), written in [`Batch`]es through one [`Sink`] trait.
//!
//! | sink | what |
//! |---|---|
//! | [`sqlite::SqliteSink`] | the embedded default; also the index the HTTP API reads |
//! | [`clickhouse::ClickHouseSink`] | the production sink (works on ClickHouse 18.16) |
//! | [`spool::RowSpool`] | batches a sink could not take, on local disk until it can |
//! | [`worker`] | batching, back-pressure and spooling in front of any sink |
//!
//! Row types derive both `serde` traits (the spool stores them as JSON) and
//! [`::clickhouse::Row`] (RowBinary for ClickHouse). Times are nanoseconds
//! since the Unix epoch (`*_ns`), plus a `day` (days since the epoch, a
//! ClickHouse `Date`) and a whole-second `DateTime` for partitioning.

pub mod clickhouse;
pub mod spool;
pub mod sqlite;
pub mod worker;

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::live::{FinishedCall, SipMessageRecord, uri_host, uri_user};
use crate::stream::IntervalSample;

/// What can go wrong while writing rows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The SQLite database failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// ClickHouse refused the rows or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] ::clickhouse::error::Error),
    /// The local spool could not be read or written.
    #[error("spool {path}: {source}")]
    Spool {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A configuration value the sink cannot use.
    #[error("configuration: {0}")]
    Config(String),
    /// A spooled batch could not be decoded (the file is left in place).
    #[error("spooled batch {path} is corrupt: {reason}")]
    CorruptSpool {
        /// The file.
        path: String,
        /// The decoder's message.
        reason: String,
    },
}

/// A destination for rows.
pub trait Sink: Send {
    /// Writes the rows of `batch`, taking out of it every table it
    /// delivered: on success the batch is empty; on error it holds exactly
    /// what is still to be sent, so a retry does not repeat a table that
    /// already arrived (ClickHouse inserts are per table, not one
    /// transaction).
    ///
    /// # Errors
    ///
    /// When the store is unreachable or refuses the rows; the caller keeps
    /// what is left of the batch (see [`worker`]).
    fn write(&mut self, batch: &mut Batch) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Rows of every table, written together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// `calls` rows.
    pub calls: Vec<CallRow>,
    /// `streams` rows.
    pub streams: Vec<StreamRow>,
    /// `stream_intervals` rows.
    pub intervals: Vec<IntervalRow>,
    /// `sip_messages` rows.
    pub sip_messages: Vec<SipMessageRow>,
    /// `pcaps` rows.
    pub pcaps: Vec<PcapRow>,
}

impl Batch {
    /// Number of rows over all tables.
    pub fn len(&self) -> usize {
        self.calls.len()
            + self.streams.len()
            + self.intervals.len()
            + self.sip_messages.len()
            + self.pcaps.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every row of `other` into `self`.
    pub fn append(&mut self, other: &mut Batch) {
        self.calls.append(&mut other.calls);
        self.streams.append(&mut other.streams);
        self.intervals.append(&mut other.intervals);
        self.sip_messages.append(&mut other.sip_messages);
        self.pcaps.append(&mut other.pcaps);
    }

    /// Adds the `calls` row and the `streams` rows of a finished call.
    pub fn push_finished(&mut self, call: &FinishedCall) {
        self.calls.push(CallRow::from_finished(call));
        for s in &call.streams {
            let m = &s.metrics;
            let start_ns = secs_to_ns(call.call.start);
            self.streams.push(StreamRow {
                day: day(start_ns),
                start: secs(start_ns),
                call_id: call.call.call_id.clone(),
                stream: s.id as u32,
                src: s.src.clone(),
                dst: s.dst.clone(),
                ssrc: s.ssrc.clone(),
                codec: s.payload.clone(),
                direction: s.direction.clone().unwrap_or_default(),
                packets: s.packets,
                expected: s.expected,
                lost: s.lost,
                lost_pct: s.lost_percent,
                out_of_order: s.out_of_order,
                jitter_ms: s.jitter_ms,
                max_jitter_ms: s.max_jitter_ms,
                mean_jitter_ms: s.mean_jitter_ms,
                max_delta_ms: s.max_delta_ms,
                burst_r: m.burst_r,
                r_factor: s.r_factor,
                mos: s.mos,
                mos_f1: m.mos_f1,
                mos_f2: m.mos_f2,
                mos_adapt: m.mos_adapt,
                loss_runs: m.loss_runs.counts.iter().map(|&c| u64::from(c)).collect(),
                delay_variation: m
                    .delay_variation
                    .counts
                    .iter()
                    .map(|&c| u64::from(c))
                    .collect(),
            });
        }
    }

    /// Adds a `stream_intervals` row.
    pub fn push_interval(&mut self, call_id: &str, stream: usize, sample: &IntervalSample) {
        self.intervals.push(IntervalRow {
            day: day(sample.start_ns),
            start: secs(sample.start_ns),
            call_id: call_id.to_string(),
            stream: stream as u32,
            index: sample.index,
            start_ns: sample.start_ns,
            packets: sample.packets,
            lost: sample.lost,
            lost_pct: sample.lost_pct,
            max_jitter_ms: sample.max_jitter_ms,
            mean_jitter_ms: sample.mean_jitter_ms,
            burst_r: sample.burst_r,
            mos: sample.mos,
        });
    }

    /// Adds a `sip_messages` row.
    pub fn push_sip(&mut self, m: &SipMessageRecord) {
        self.sip_messages.push(SipMessageRow {
            day: day(m.ts.0),
            ts: secs(m.ts.0),
            ts_ns: m.ts.0,
            call_id: m.call_id.clone(),
            src: m.src.clone(),
            dst: m.dst.clone(),
            method: m.method.clone(),
            status: m.status,
            cseq: m.cseq.clone(),
            size: m.size,
        });
    }
}

/// One finished call (`calls` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ::clickhouse::Row)]
#[clickhouse(crate = "::clickhouse")]
pub struct CallRow {
    /// Day of the call's start (ClickHouse `Date`: days since 1970-01-01).
    pub day: u16,
    /// Start, whole seconds (ClickHouse `DateTime`).
    pub start: u32,
    /// Start (first SIP message), ns since the epoch.
    pub start_ns: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// From header value.
    pub from_uri: String,
    /// To header value.
    pub to_uri: String,
    /// User part of the From URI (the calling number).
    pub from_user: String,
    /// User part of the To URI (the called number).
    pub to_user: String,
    /// The call's domain: host of the Request-URI, else of the To URI.
    pub domain: String,
    /// Host of the From URI.
    pub from_domain: String,
    /// Host of the To URI.
    pub to_domain: String,
    /// Method of the first request (INVITE).
    pub method: String,
    /// Answer time, ns since the epoch (0: not answered).
    pub answer_ns: u64,
    /// End time in signalling, ns since the epoch (0: none seen).
    pub end_ns: u64,
    /// When the call was finished, ns since the epoch.
    pub finished_ns: u64,
    /// Final status of the first request (0: none seen).
    pub final_status: u16,
    /// Why it was finished (`bye`, `rejected`, `media_timeout`, `shutdown`).
    pub reason: String,
    /// SIP messages seen.
    pub sip_messages: u64,
    /// Number of reported streams.
    pub streams: u32,
    /// Lowest MOS over the call's streams (0 without media).
    pub mos: f64,
}

impl CallRow {
    /// The row of a finished call.
    pub fn from_finished(f: &FinishedCall) -> Self {
        let c = &f.call;
        let start_ns = secs_to_ns(c.start);
        let to_domain = uri_host(&c.to).unwrap_or_default();
        let mos = f
            .streams
            .iter()
            .map(|s| s.mos)
            .filter(|m| m.is_finite() && *m > 0.0)
            .fold(None, |acc: Option<f64>, m| {
                Some(acc.map_or(m, |a| a.min(m)))
            });
        Self {
            day: day(start_ns),
            start: secs(start_ns),
            start_ns,
            call_id: c.call_id.clone(),
            from_uri: c.from.clone(),
            to_uri: c.to.clone(),
            from_user: uri_user(&c.from).unwrap_or_default(),
            to_user: uri_user(&c.to).unwrap_or_default(),
            domain: f
                .request_uri_host
                .clone()
                .unwrap_or_else(|| to_domain.clone()),
            from_domain: uri_host(&c.from).unwrap_or_default(),
            to_domain,
            method: c.method.clone(),
            answer_ns: c.answer.map_or(0, secs_to_ns),
            end_ns: c.end.map_or(0, secs_to_ns),
            finished_ns: f.finished_at.0,
            final_status: c.final_status.unwrap_or(0),
            reason: serde_json::to_value(f.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            sip_messages: c.sip_messages,
            streams: c.streams.len() as u32,
            mos: mos.unwrap_or(0.0),
        }
    }
}

/// One RTP stream (leg) of a call (`streams` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ::clickhouse::Row)]
#[clickhouse(crate = "::clickhouse")]
pub struct StreamRow {
    /// Day of the call's start.
    pub day: u16,
    /// Call start, whole seconds.
    pub start: u32,
    /// SIP Call-ID.
    pub call_id: String,
    /// Stream index within the analyser (the leg number of the API).
    pub stream: u32,
    /// Source address:port.
    pub src: String,
    /// Destination address:port.
    pub dst: String,
    /// SSRC, hex.
    pub ssrc: String,
    /// Payload type name(s), e.g. `PCMU`.
    pub codec: String,
    /// `caller->callee` or `callee->caller` (empty if unknown).
    pub direction: String,
    /// Packets received.
    pub packets: u64,
    /// Packets expected (RFC 3550).
    pub expected: u64,
    /// Packets lost (RFC 3550, may be negative with duplicates).
    pub lost: i64,
    /// Loss, percent.
    pub lost_pct: f64,
    /// Out-of-order packets.
    pub out_of_order: u64,
    /// RFC 3550 interarrival jitter at the end, ms.
    pub jitter_ms: f64,
    /// Highest jitter, ms.
    pub max_jitter_ms: f64,
    /// Mean jitter, ms.
    pub mean_jitter_ms: f64,
    /// Largest gap between packets, ms.
    pub max_delta_ms: f64,
    /// E-model burst ratio.
    pub burst_r: f64,
    /// E-model R factor.
    pub r_factor: f64,
    /// MOS without a jitter buffer.
    pub mos: f64,
    /// MOS behind the first fixed jitter buffer.
    pub mos_f1: f64,
    /// MOS behind the second fixed jitter buffer.
    pub mos_f2: f64,
    /// MOS behind the adaptive jitter buffer.
    pub mos_adapt: f64,
    /// Loss-run histogram (runs of 1, 2, 3, 4, 5, 6–10, 11+ packets).
    pub loss_runs: Vec<u64>,
    /// Delay-variation histogram (buckets in `docs/analysis.md`).
    pub delay_variation: Vec<u64>,
}

/// One interval of a stream while its call was up (`stream_intervals`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ::clickhouse::Row)]
#[clickhouse(crate = "::clickhouse")]
pub struct IntervalRow {
    /// Day of the interval's start.
    pub day: u16,
    /// Interval start, whole seconds.
    pub start: u32,
    /// SIP Call-ID (empty for an orphan stream).
    pub call_id: String,
    /// Stream index.
    pub stream: u32,
    /// Interval number within the stream.
    pub index: u64,
    /// Interval start, ns since the epoch.
    pub start_ns: u64,
    /// Packets received in the interval.
    pub packets: u64,
    /// Packets lost in the interval.
    pub lost: u64,
    /// Loss, percent.
    pub lost_pct: f64,
    /// Highest jitter, ms.
    pub max_jitter_ms: f64,
    /// Mean jitter, ms.
    pub mean_jitter_ms: f64,
    /// Burst ratio.
    pub burst_r: f64,
    /// MOS of the interval.
    pub mos: f64,
}

/// One SIP message of a call (`sip_messages`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ::clickhouse::Row)]
#[clickhouse(crate = "::clickhouse")]
pub struct SipMessageRow {
    /// Day of the message.
    pub day: u16,
    /// Capture time, whole seconds.
    pub ts: u32,
    /// Capture time, ns since the epoch.
    pub ts_ns: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// Source address:port.
    pub src: String,
    /// Destination address:port.
    pub dst: String,
    /// Request method (empty for a response).
    pub method: String,
    /// Response status (0 for a request).
    pub status: u16,
    /// CSeq number and method.
    pub cseq: String,
    /// Size in bytes.
    pub size: u32,
}

/// Where a call's pcap is (`pcaps`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ::clickhouse::Row)]
#[clickhouse(crate = "::clickhouse")]
pub struct PcapRow {
    /// Day of the call's first packet.
    pub day: u16,
    /// SIP Call-ID.
    pub call_id: String,
    /// Object path, relative to the spool directory.
    pub path: String,
    /// Packets written.
    pub packets: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// First packet, ns since the epoch.
    pub first_ns: u64,
    /// Last packet, ns since the epoch.
    pub last_ns: u64,
}

/// Days since the epoch of a time in ns (saturating at `u16::MAX`, 2149).
pub fn day(ns: u64) -> u16 {
    u16::try_from(ns / 86_400_000_000_000).unwrap_or(u16::MAX)
}

/// Whole seconds of a time in ns (saturating at `u32::MAX`, 2106).
pub fn secs(ns: u64) -> u32 {
    u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX)
}

fn secs_to_ns(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1e9).round() as u64
    } else {
        0
    }
}
