//! Rendering an analysis ([`nqs::analyzer::Analyzer`]) as a table, JSON or CSV.

use std::io::{self, Write};

use nqs::analyzer::{Analyzer, StreamSummary};

use crate::Format;

/// Writes the analyser's report in `format`, one stream at a time (no
/// summary is kept in memory longer than it takes to write it). `color`
/// enables ANSI colours on MOS.
pub fn write(
    out: &mut dyn Write,
    format: Format,
    analyzer: &Analyzer,
    color: bool,
) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &analyzer.view())?;
            writeln!(out)
        }
        Format::Csv => write_csv(out, analyzer),
        Format::Table => write_table(out, analyzer, color),
    }
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "call_id",
    "direction",
    "src",
    "dst",
    "ssrc",
    "payload",
    "packets",
    "expected",
    "lost",
    "lost_percent",
    "duplicates",
    "out_of_order",
    "max_delta_ms",
    "max_jitter_ms",
    "mean_jitter_ms",
    "jitter_ms",
    "burst_r",
    "r_factor",
    "mos",
    "mos_f1",
    "mos_f2",
    "mos_adapt",
];

fn write_csv(out: &mut dyn Write, analyzer: &Analyzer) -> io::Result<()> {
    writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    for s in analyzer
        .stream_ids()
        .filter_map(|id| analyzer.stream_summary(id))
    {
        let v = serde_json::to_value(&s).map_err(io::Error::other)?;
        let row: Vec<String> = CSV_COLUMNS.iter().map(|c| csv_field(v.get(*c))).collect();
        writeln!(out, "{}", row.join(","))?;
    }
    Ok(())
}

fn csv_field(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.clone()
            }
        }
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => format!("{f:.3}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

fn write_table(out: &mut dyn Write, analyzer: &Analyzer, color: bool) -> io::Result<()> {
    let header = format!(
        "  {:>4} {:<45} {:<10} {:<22} {:>7} {:>12} {:>9} {:>8} {:>8} {:>6} {:>5}",
        "id",
        "src -> dst",
        "ssrc",
        "payload",
        "pkts",
        "lost (%)",
        "maxΔ ms",
        "maxJ ms",
        "meanJ ms",
        "R",
        "MOS"
    );
    let mut calls_with_media = 0;
    let mut streams = 0;
    for call in analyzer.calls() {
        if call.streams.is_empty() && call.method != "INVITE" {
            continue;
        }
        let status = call
            .final_status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        let duration = match (call.answer, call.end) {
            (Some(a), Some(e)) => format!("{:.1} s talk", e - a),
            _ => String::new(),
        };
        writeln!(
            out,
            "Call {}  {} -> {}  [{} {}] {}",
            call.call_id, call.from, call.to, call.method, status, duration
        )?;
        if call.streams.is_empty() {
            writeln!(out, "  (no RTP)")?;
        } else {
            writeln!(out, "{header}")?;
            calls_with_media += 1;
            for &id in &call.streams {
                if let Some(s) = analyzer.stream_summary(id) {
                    streams += 1;
                    write_stream_row(out, &s, color)?;
                }
            }
        }
        writeln!(out)?;
    }
    let mut orphans = analyzer
        .stream_ids()
        .filter_map(|id| analyzer.stream_summary(id))
        .filter(|s| s.call.is_none());
    if let Some(first) = orphans.next() {
        writeln!(out, "Streams without signalling (found by RTP heuristics)")?;
        writeln!(out, "{header}")?;
        for s in std::iter::once(first).chain(orphans) {
            streams += 1;
            write_stream_row(out, &s, color)?;
        }
        writeln!(out)?;
    }
    let c = analyzer.counters();
    writeln!(
        out,
        "calls with media: {}, streams: {}; packets: {}, SIP messages: {} ({} malformed), RTP: {}, RTCP: {}",
        calls_with_media,
        streams,
        c.packets,
        c.sip_messages,
        c.sip_malformed,
        c.rtp_packets,
        c.rtcp_packets
    )
}

fn write_stream_row(out: &mut dyn Write, s: &StreamSummary, color: bool) -> io::Result<()> {
    let flow = format!("{} -> {}", s.src, s.dst);
    let mos = format!("{:>5.2}", s.mos);
    let mos = if color {
        colorize_mos(s.mos, &mos)
    } else {
        mos
    };
    writeln!(
        out,
        "  {:>4} {:<45} {:<10} {:<22} {:>7} {:>12} {:>9.3} {:>8.3} {:>8.3} {:>6.1} {}",
        s.id,
        flow,
        s.ssrc,
        s.payload,
        s.packets,
        format!("{} ({:.1})", s.lost, s.lost_percent),
        s.max_delta_ms,
        s.max_jitter_ms,
        s.mean_jitter_ms,
        s.r_factor,
        mos
    )
}

/// Green ≥ 4.0, yellow ≥ 3.6, red below (the usual NOC thresholds for
/// "good", "fair", "poor" narrowband calls).
fn colorize_mos(mos: f64, text: &str) -> String {
    let code = if mos >= 4.0 {
        "32"
    } else if mos >= 3.6 {
        "33"
    } else {
        "31"
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}
