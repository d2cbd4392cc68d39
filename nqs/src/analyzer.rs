//! The packet-level analyser: decoded packets in, calls and streams out.
//!
//! This is the sans-IO heart of `voxplane analyze` and of the live NQS
//! service. It recognises SIP (over UDP, or TCP streams split with
//! [`wire::sip::framing::message_len`]), learns media endpoints from the SDP
//! in INVITE, 18x, 200, ACK, UPDATE and re-INVITEs, and feeds every RTP packet
//! to the [`StreamStats`] of its stream, keyed like Wireshark by
//! (source, destination, SSRC). RTCP SR/RR/XR reports are attached to the
//! stream they describe, beside our own figures.
//!
//! RTP that no SDP announced is still analysed when it passes a strict RTP
//! heuristic; such streams are reported as *orphan* streams (no call).
//!
//! # Driving contract
//! Feed every decoded packet, in capture order, to [`Analyzer::handle_packet`]
//! (the packet's capture time is the analyser's `now`); drain
//! [`Analyzer::poll_event`] for interval samples; call [`Analyzer::report`]
//! at the end (or at any time, for a snapshot).
//!
//! ```no_run
//! # fn frames() -> Vec<wire::capture::Packet<'static>> { vec![] }
//! let mut analyzer = nqs::analyzer::Analyzer::new(nqs::analyzer::AnalyzerConfig::default());
//! for packet in frames() {
//!     analyzer.handle_packet(&packet);
//!     while let Some(event) = analyzer.poll_event() {
//!         println!("{event:?}");
//!     }
//! }
//! let report = analyzer.report();
//! println!("{} calls, {} streams", report.calls.len(), report.streams.len());
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;
use wire::capture::{Packet, Transport};
use wire::{PayloadType, Ssrc, Timestamp};

use crate::emodel::Codec;
use crate::stream::{
    IntervalSample, PayloadKind, RemoteReport, RemoteVoipMetrics, RtpPacketInfo, SsrcChangeCounter,
    StreamConfig, StreamReport, StreamStats,
};

/// Tunables of the analyser. `Default` gives the embedded defaults.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
    /// Report RTP that no SDP announced (found by the RTP heuristic).
    pub orphan_streams: bool,
    /// An orphan stream is reported only if it has at least this many packets
    /// (filters out stray UDP that happens to look like RTP).
    pub min_orphan_packets: u64,
    /// Keep the payload of G.711 streams so they can be rendered to WAV.
    pub keep_audio: bool,
    /// Largest SIP-over-TCP backlog kept per flow before it is dropped and
    /// counted (bytes).
    pub max_tcp_backlog: usize,
    /// Interval length and jitter-buffer depths of every stream.
    pub stream: StreamConfig,
    /// Keep every stream's interval samples for its summary instead of
    /// handing them out through [`Analyzer::poll_event`].
    pub keep_intervals: bool,
    /// Encoding names for payload types whose SDP was not captured
    /// (consulted after the SDP, before the static table), e.g. 96 → opus.
    pub codec_overrides: Vec<(PayloadType, String)>,
    /// Calls held at once (open, or finished and not yet released with
    /// [`Analyzer::release_call`]); a new Call-ID beyond it is not analysed
    /// and counts in [`AnalyzerCounters::calls_dropped`].
    pub max_calls: usize,
    /// Streams held at once; a new stream beyond it is not analysed and
    /// counts in [`AnalyzerCounters::streams_dropped`].
    pub max_streams: usize,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            orphan_streams: true,
            min_orphan_packets: 10,
            keep_audio: false,
            max_tcp_backlog: 256 * 1024,
            stream: StreamConfig::default(),
            keep_intervals: false,
            codec_overrides: Vec::new(),
            max_calls: usize::MAX,
            max_streams: usize::MAX,
        }
    }
}

/// What the analyser made of one packet: lets a driver route the packet
/// (e.g. into a per-call pcap) without parsing it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum PacketClass {
    /// A SIP message of the call with this index (into [`Report::calls`]).
    Sip {
        /// Index of the call.
        call: Option<usize>,
    },
    /// An RTP packet of the stream with this index.
    Rtp {
        /// Index of the stream (into [`Report::streams`]).
        stream: usize,
        /// Index of the call the stream belongs to, if any.
        call: Option<usize>,
    },
    /// An RTCP packet on a call's media endpoint.
    Rtcp {
        /// Index of the call, if the endpoint is known.
        call: Option<usize>,
    },
    /// Anything else (counted, not analysed).
    Other,
}

/// Something the analyser reports while it runs.
#[derive(Clone, Debug)]
pub enum AnalyzerEvent {
    /// A stream completed a 10-second interval.
    Interval {
        /// Index of the stream.
        stream: usize,
        /// The interval's figures.
        sample: IntervalSample,
    },
}

/// Counters of what was seen and what was not analysed (drops are counters,
/// never errors).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AnalyzerCounters {
    /// Packets handed to the analyser.
    pub packets: u64,
    /// SIP messages parsed.
    pub sip_messages: u64,
    /// Payloads that looked like SIP but did not parse.
    pub sip_malformed: u64,
    /// SIP messages without a usable Call-ID.
    pub sip_without_call_id: u64,
    /// MGCP messages (their SDP is correlated like SIP's).
    pub mgcp_messages: u64,
    /// SDP bodies that did not parse.
    pub sdp_malformed: u64,
    /// RTP packets analysed.
    pub rtp_packets: u64,
    /// RTCP packets seen on media endpoints.
    pub rtcp_packets: u64,
    /// RTCP packets that did not parse.
    pub rtcp_malformed: u64,
    /// UDP on a media endpoint that was neither RTP nor RTCP.
    pub media_not_rtp: u64,
    /// SIP-over-TCP bytes dropped because a flow's backlog overflowed.
    pub tcp_backlog_dropped: u64,
    /// Packets that were neither SIP nor media.
    pub other: u64,
    /// New calls not analysed because [`AnalyzerConfig::max_calls`] were held.
    pub calls_dropped: u64,
    /// New streams not analysed because [`AnalyzerConfig::max_streams`]
    /// were held.
    pub streams_dropped: u64,
}

/// How big the analyser's tables are (for memory checks and `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableSizes {
    /// Calls held (open or not yet released).
    pub calls: usize,
    /// Call slots allocated (held + free for reuse).
    pub call_slots: usize,
    /// Streams held.
    pub streams: usize,
    /// Stream slots allocated (held + free for reuse).
    pub stream_slots: usize,
    /// Entries of the hash-keyed indexes (Call-IDs, SDP endpoints, stream
    /// keys, 5-tuples, SSRCs).
    pub index_entries: usize,
}

/// The result of an analysis: calls and streams, cross-referenced by index.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Calls, in order of their first SIP message.
    pub calls: Vec<CallReport>,
    /// Streams, in order of their first packet.
    pub streams: Vec<StreamSummary>,
    /// What was seen and what was dropped.
    pub counters: AnalyzerCounters,
}

/// One SIP call (one Call-ID).
#[derive(Clone, Debug, Serialize)]
pub struct CallReport {
    /// Index of the call in [`Report::calls`].
    pub index: usize,
    /// The Call-ID.
    pub call_id: String,
    /// The From of the first request (display name and URI as sent).
    pub from: String,
    /// The To of the first request.
    pub to: String,
    /// The method of the first request (`INVITE`, `REGISTER`, …).
    pub method: String,
    /// Time of the first SIP message, seconds since the Unix epoch.
    pub start: f64,
    /// Time of the 2xx to the first INVITE, if answered.
    pub answer: Option<f64>,
    /// Time of the BYE (or of the final non-2xx answer), if any.
    pub end: Option<f64>,
    /// Final status of the first INVITE (or request), if seen.
    pub final_status: Option<u16>,
    /// Number of SIP messages in this call.
    pub sip_messages: u64,
    /// SDP bodies that changed media a party had already announced
    /// (re-INVITE, UPDATE, codec change); retransmissions do not count.
    pub sdp_updates: u32,
    /// Media endpoints announced in SDP, `ip:port`, by party.
    pub media: Vec<MediaEndpoint>,
    /// Indexes of this call's streams in [`Report::streams`].
    pub streams: Vec<usize>,
}

/// A media endpoint announced in SDP.
#[derive(Clone, Debug, Serialize)]
pub struct MediaEndpoint {
    /// `caller` or `callee`: who receives media here.
    pub party: Party,
    /// Receive address, `ip:port`.
    pub addr: String,
    /// Codecs offered at this endpoint, as `PT name/rate`.
    pub codecs: Vec<String>,
}

/// A side of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    /// The party that sent the first INVITE.
    Caller,
    /// The other party.
    Callee,
}

/// One RTP stream: its identity plus the metrics of [`StreamReport`].
#[derive(Clone, Debug, Serialize)]
pub struct StreamSummary {
    /// Index of the stream in [`Report::streams`].
    pub id: usize,
    /// Source, `ip:port`.
    pub src: String,
    /// Destination, `ip:port`.
    pub dst: String,
    /// SSRC as `0x…` (8 hex digits).
    pub ssrc: String,
    /// Payload names seen, comma-separated as Wireshark shows them
    /// (`g711A, telephone-event`).
    pub payload: String,
    /// The call's Call-ID; `None` for orphan streams.
    pub call_id: Option<String>,
    /// Index of the call; `None` for orphan streams.
    pub call: Option<usize>,
    /// Which way the media flows, when the call is known
    /// (`caller->callee` or `callee->caller`).
    pub direction: Option<String>,
    /// Packets received (including duplicates).
    pub packets: u64,
    /// RFC 3550 expected packets (extended highest − base + 1).
    pub expected: u64,
    /// RFC 3550 cumulative lost (expected − received; negative with
    /// duplicates). Equals Wireshark's `Lost` except after a trailing
    /// reorder or a sequence restart; Wireshark's figure is `ws_lost`.
    pub lost: i64,
    /// `lost` as a percentage of `expected`.
    pub lost_percent: f64,
    /// Packets that arrived after a higher sequence number (RFC 3550 "late").
    pub out_of_order: u64,
    /// SSRC changes on this stream's (source, destination) pair, counted
    /// over all its SSRCs in arrival order (a restarted sender, a B2BUA
    /// switching legs).
    pub ssrc_changes: u64,
    /// Largest gap between consecutive packets, ms (Wireshark's Max Delta).
    pub max_delta_ms: f64,
    /// Largest interarrival jitter, ms (Wireshark's Max Jitter).
    pub max_jitter_ms: f64,
    /// Mean interarrival jitter, ms (Wireshark's Mean Jitter).
    pub mean_jitter_ms: f64,
    /// Final RFC 3550 A.8 interarrival jitter, ms.
    pub jitter_ms: f64,
    /// E-model MOS (ITU-T G.107 Annex B) from the network loss and BurstR.
    pub mos: f64,
    /// E-model R-factor.
    pub r_factor: f64,
    /// Completed interval samples, oldest first (only with
    /// [`AnalyzerConfig::keep_intervals`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Vec<IntervalSample>>,
    /// Every metric, including RFC 3550 and Wireshark variants, jitter
    /// buffer simulations, histograms and remote (RTCP) figures.
    #[serde(flatten)]
    pub metrics: StreamReport,
}

/// A lazily serialised [`Report`] (see [`Analyzer::view`]).
pub struct ReportView<'a> {
    analyzer: &'a Analyzer,
}

impl Serialize for ReportView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Calls<'a>(&'a Analyzer);
        impl Serialize for Calls<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.calls())
            }
        }
        struct Streams<'a>(&'a Analyzer);
        impl Serialize for Streams<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(
                    self.0
                        .stream_ids()
                        .filter_map(|id| self.0.stream_summary(id)),
                )
            }
        }
        let mut st = serializer.serialize_struct("Report", 3)?;
        st.serialize_field("calls", &Calls(self.analyzer))?;
        st.serialize_field("streams", &Streams(self.analyzer))?;
        st.serialize_field("counters", &self.analyzer.counters)?;
        st.end()
    }
}

/// Audio kept for WAV rendering: (RTP timestamp, payload type, payload).
pub type KeptAudio = Vec<(u32, PayloadType, Vec<u8>)>;

/// The analyser. See the module docs for the driving contract.
pub struct Analyzer {
    config: AnalyzerConfig,
    calls: Vec<CallState>,
    call_index: FxHashMap<String, usize>,
    /// SDP-announced receive endpoints (RTP and RTCP ports) → media info.
    endpoints: FxHashMap<SocketAddr, Endpoint>,
    streams: Vec<StreamState>,
    stream_index: StreamIndex,
    /// SSRC → the latest stream with it (older ones chained through
    /// `StreamState::next_same_ssrc`), to attach RTCP report blocks.
    ssrc_index: FxHashMap<Ssrc, u32>,
    /// (source, destination) → the first stream of that 5-tuple, which
    /// holds the 5-tuple's SSRC-change counter.
    flows: StreamIndex,
    /// MGCP transaction id → call, so responses find their call.
    mgcp_transactions: FxHashMap<u32, usize>,
    /// SIP over TCP: bytes of each direction not yet framed into messages.
    tcp_backlog: FxHashMap<(SocketAddr, SocketAddr), Vec<u8>>,
    events: VecDeque<AnalyzerEvent>,
    counters: AnalyzerCounters,
    /// Released call slots, reused by new calls.
    free_calls: Vec<usize>,
    /// Released stream slots, reused by new streams.
    free_streams: Vec<usize>,
    held_calls: usize,
    held_streams: usize,
}

impl Analyzer {
    /// A new analyser.
    pub fn new(config: AnalyzerConfig) -> Self {
        Self {
            config,
            calls: Vec::new(),
            call_index: FxHashMap::default(),
            endpoints: FxHashMap::default(),
            streams: Vec::new(),
            stream_index: StreamIndex::default(),
            ssrc_index: FxHashMap::default(),
            flows: StreamIndex::default(),
            mgcp_transactions: FxHashMap::default(),
            tcp_backlog: FxHashMap::default(),
            events: VecDeque::new(),
            counters: AnalyzerCounters::default(),
            free_calls: Vec::new(),
            free_streams: Vec::new(),
            held_calls: 0,
            held_streams: 0,
        }
    }

    /// Handles one decoded packet; its capture time is `now`.
    pub fn handle_packet(&mut self, packet: &Packet<'_>) -> PacketClass {
        self.counters.packets += 1;
        match packet.transport {
            Transport::Udp => self.handle_udp(packet.ts, packet.src, packet.dst, packet.payload),
            Transport::Tcp => {
                if packet.stream_gap {
                    // Bytes were lost before this piece: whatever was half
                    // framed can never complete.
                    self.tcp_backlog.remove(&(packet.src, packet.dst));
                }
                self.handle_tcp(packet.ts, packet.src, packet.dst, packet.payload)
            }
        }
    }

    /// Handles a media packet (RTP or RTCP over UDP) that its source already
    /// attributes to the call `call_id`, such as the dataplane's mirror
    /// copies: the call is opened by its Call-ID if none of its SIP was seen
    /// (its SIP fields then stay empty), and a new stream of the packet
    /// belongs to it. A stream first seen as an orphan stays one.
    pub fn handle_call_media(&mut self, call_id: &str, packet: &Packet<'_>) -> PacketClass {
        if call_id.is_empty() || packet.transport != Transport::Udp {
            return self.handle_packet(packet);
        }
        self.counters.packets += 1;
        let call = match self.call_index.get(call_id) {
            Some(&i) => i,
            None => match self.open_call(
                call_id.to_string(),
                CallState::from_media(packet.ts, call_id),
            ) {
                Some(i) => i,
                None => return PacketClass::Other,
            },
        };
        self.handle_media(
            packet.ts,
            packet.src,
            packet.dst,
            packet.payload,
            Some(call),
        )
    }

    /// The next event, if any. Drain after every [`Analyzer::handle_packet`].
    pub fn poll_event(&mut self) -> Option<AnalyzerEvent> {
        self.events.pop_front()
    }

    /// Number of calls seen so far.
    pub fn call_count(&self) -> usize {
        self.held_calls
    }

    /// The sizes of the analyser's tables.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            calls: self.held_calls,
            call_slots: self.calls.len(),
            streams: self.held_streams,
            stream_slots: self.streams.len(),
            index_entries: self.call_index.len()
                + self.endpoints.len()
                + self.stream_index.len()
                + self.flows.len()
                + self.ssrc_index.len(),
        }
    }

    /// Frees a call's state and its streams' (a live driver calls this once
    /// the call's rows are out): its Call-ID, SDP endpoints and streams
    /// leave the indexes, and the slots are reused by new calls and
    /// streams, so a long capture holds only the calls it has not released.
    /// Its index (and its streams') may then name another call: callers must
    /// drop them. Unknown or already released indexes are ignored.
    pub fn release_call(&mut self, call: usize) {
        let Some(slot) = self.calls.get_mut(call) else {
            return;
        };
        if !slot.held {
            return;
        }
        let state = std::mem::replace(slot, CallState::vacant());
        let key = match state.method.strip_prefix("MGCP ") {
            Some(_) => {
                self.mgcp_transactions.retain(|_, c| *c != call);
                format!("mgcp:{}", state.call_id)
            }
            None => state.call_id,
        };
        if self.call_index.get(&key) == Some(&call) {
            self.call_index.remove(&key);
        }
        for addr in state
            .media
            .iter()
            .map(|m| m.addr)
            .chain(state.rtcp_endpoints)
        {
            if self.endpoints.get(&addr).is_some_and(|e| e.call == call) {
                self.endpoints.remove(&addr);
            }
        }
        for id in state.streams {
            self.release_stream(id);
        }
        self.held_calls -= 1;
        self.free_calls.push(call);
    }

    /// Frees a stream that belongs to no call (an orphan the driver saw go
    /// idle). Streams of a call are freed with [`Analyzer::release_call`];
    /// for them, and for unknown indexes, this does nothing.
    pub fn release_orphan_stream(&mut self, id: usize) {
        if self
            .streams
            .get(id)
            .is_some_and(|s| s.held && s.call.is_none())
        {
            self.release_stream(id);
        }
    }

    /// The audio kept for a stream (only with [`AnalyzerConfig::keep_audio`]).
    pub fn kept_audio(&self, stream: usize) -> Option<&KeptAudio> {
        self.streams
            .get(stream)
            .and_then(|s| s.extras.as_ref()?.audio.as_ref())
    }

    /// A report of everything seen so far. Orphan streams with fewer than
    /// [`AnalyzerConfig::min_orphan_packets`] packets are left out, but
    /// stream indexes stay those of [`PacketClass`]. This materialises every
    /// summary; [`Analyzer::view`] serialises the same document one stream
    /// at a time.
    pub fn report(&self) -> Report {
        Report {
            calls: self.calls().collect(),
            streams: self
                .stream_ids()
                .filter_map(|id| self.stream_summary(id))
                .collect(),
            counters: self.counters.clone(),
        }
    }

    /// The same JSON document as [`Report`], produced lazily: each stream's
    /// summary is built only while it is written, so output needs no memory
    /// per stream beyond the analysis state.
    pub fn view(&self) -> ReportView<'_> {
        ReportView { analyzer: self }
    }

    /// Counters of what was seen and dropped.
    pub fn counters(&self) -> &AnalyzerCounters {
        &self.counters
    }

    /// Every call, with the indexes of its reported streams.
    pub fn calls(&self) -> impl Iterator<Item = CallReport> + '_ {
        (0..self.calls.len()).filter_map(|i| self.call_report(i))
    }

    /// The report of one call (with its reported streams), or `None` for an
    /// unknown index. Costs one call, unlike [`Analyzer::calls`].
    pub fn call_report(&self, call: usize) -> Option<CallReport> {
        let c = self.calls.get(call).filter(|c| c.held)?;
        let mut report = c.report(call);
        report.streams = c
            .streams
            .iter()
            .copied()
            .filter(|&id| self.is_reported(id))
            .collect();
        Some(report)
    }

    /// When the call ended in signalling (BYE, or a final error response to
    /// its first request), if it did. Cheap: no report is built.
    pub fn call_end(&self, call: usize) -> Option<Timestamp> {
        self.calls.get(call).and_then(|c| c.end)
    }

    /// Indexes of the streams a report includes, in order of first packet.
    pub fn stream_ids(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.streams.len()).filter(|&id| self.is_reported(id))
    }

    /// The summary of one stream, or `None` if it is unknown or an orphan
    /// below [`AnalyzerConfig::min_orphan_packets`].
    pub fn stream_summary(&self, id: usize) -> Option<StreamSummary> {
        if !self.is_reported(id) {
            return None;
        }
        let s = &self.streams[id];
        let call = s.call;
        let metrics = s.stats.report(s.codec());
        Some(StreamSummary {
            id,
            src: s.key.src().to_string(),
            dst: s.key.dst().to_string(),
            ssrc: Ssrc(s.key.ssrc).to_string(),
            payload: s.payload_names(),
            call_id: call.map(|c| self.calls[c].call_id.clone()),
            call,
            direction: s.direction.map(|p| match p {
                Party::Caller => "callee->caller".to_string(),
                Party::Callee => "caller->callee".to_string(),
            }),
            packets: metrics.packets,
            expected: metrics.rfc_expected,
            lost: metrics.rfc_lost,
            lost_percent: metrics.rfc_lost_pct,
            out_of_order: metrics.late,
            ssrc_changes: self
                .streams
                .get(s.flow as usize)
                .map_or(0, |first| first.ssrc_counter.changes()),
            max_delta_ms: metrics.ws_max_delta_ms,
            max_jitter_ms: metrics.ws_max_jitter_ms,
            mean_jitter_ms: metrics.ws_mean_jitter_ms,
            jitter_ms: metrics.rfc_jitter_ms,
            mos: metrics.mos,
            r_factor: metrics.r_factor,
            intervals: s.extras.as_ref().and_then(|e| e.intervals.clone()),
            metrics,
        })
    }

    /// The SDP endpoint an address belongs to: its RTP address, or the
    /// RTCP address next to it (odd port = RTP port + 1).
    fn endpoint(&self, addr: &SocketAddr) -> Option<&Endpoint> {
        self.endpoints.get(addr).or_else(|| {
            let port = addr.port();
            (port % 2 == 1)
                .then(|| self.endpoints.get(&SocketAddr::new(addr.ip(), port - 1)))
                .flatten()
        })
    }

    fn is_reported(&self, id: usize) -> bool {
        self.streams.get(id).is_some_and(|s| {
            s.held && (s.call.is_some() || s.stats.packets() >= self.config.min_orphan_packets)
        })
    }

    fn handle_udp(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> PacketClass {
        // Fast path: RTP of a stream already known. SIP and MGCP start with
        // ASCII letters or digits, never with an RTP version-2 first byte.
        if let Ok(rtp) = wire::rtp::RtpPacket::new_checked(payload)
            && let Some(id) =
                self.stream_index
                    .get(&FlowKey::new(src, dst, rtp.ssrc()), &self.streams, |k| *k)
            && wire::rtp::classify(payload) == Some(wire::rtp::Kind::Rtp)
        {
            self.counters.rtp_packets += 1;
            return self.handle_rtp(now, id, &rtp);
        }
        let endpoint = self
            .endpoint(&dst)
            .or_else(|| self.endpoint(&src))
            .map(|e| e.call);
        // Only RTP or RTCP counts as media on an announced endpoint; anything
        // else there (SIP from a neighbouring port, STUN…) is classified below.
        if endpoint.is_some() && wire::rtp::classify(payload).is_some() {
            return self.handle_media(now, src, dst, payload, endpoint);
        }
        if looks_like_sip(payload) {
            return self.handle_sip_message(now, payload);
        }
        if let Some(mgcp) = Mgcp::parse(payload) {
            return self.handle_mgcp(now, &mgcp);
        }
        if self.config.orphan_streams && wire::rtp::looks_like_rtp(payload) {
            return self.handle_media(now, src, dst, payload, None);
        }
        self.counters.other += 1;
        PacketClass::Other
    }

    fn handle_tcp(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> PacketClass {
        let key = (src, dst);
        let backlog = self.tcp_backlog.entry(key).or_default();
        if backlog.is_empty() && !looks_like_sip(trim_keepalive(payload)) {
            self.counters.other += 1;
            return PacketClass::Other;
        }
        backlog.extend_from_slice(payload);
        let mut buf = std::mem::take(backlog);
        let mut class = PacketClass::Other;
        let mut consumed = 0;
        loop {
            let rest = &buf[consumed..];
            let skip = rest.len() - trim_keepalive(rest).len();
            consumed += skip;
            let rest = &buf[consumed..];
            if rest.is_empty() {
                break;
            }
            match wire::sip::framing::message_len(rest) {
                Ok(Some(n)) => {
                    let n = n.min(rest.len());
                    class = self.handle_sip_message(now, &rest[..n]);
                    consumed += n;
                }
                Ok(None) => break,
                Err(_) => {
                    // Unframeable stream: drop the backlog, resynchronise on
                    // the next segment that starts a message.
                    self.counters.sip_malformed += 1;
                    consumed = buf.len();
                    break;
                }
            }
        }
        buf.drain(..consumed);
        if buf.len() > self.config.max_tcp_backlog {
            self.counters.tcp_backlog_dropped += buf.len() as u64;
            buf.clear();
        }
        if let Some(b) = self.tcp_backlog.get_mut(&key) {
            *b = buf;
        }
        class
    }

    fn handle_sip_message(&mut self, now: Timestamp, bytes: &[u8]) -> PacketClass {
        let msg = match wire::sip::Message::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.counters.sip_malformed += 1;
                return PacketClass::Sip { call: None };
            }
        };
        self.counters.sip_messages += 1;
        let Some(call_id) = msg.call_id() else {
            self.counters.sip_without_call_id += 1;
            return PacketClass::Sip { call: None };
        };
        let call = match self.call_index.get(call_id) {
            Some(&i) => i,
            None => match self.open_call(call_id.to_string(), CallState::new(now, call_id, &msg)) {
                Some(i) => i,
                None => return PacketClass::Sip { call: None },
            },
        };
        let party = self.calls[call].on_message(now, &msg);
        if let Some(sdp) = msg.sdp_body() {
            match wire::sdp::SessionDescription::parse_bytes_lenient(sdp) {
                Ok(sdp) => self.learn_sdp(call, party, &sdp),
                Err(_) => self.counters.sdp_malformed += 1,
            }
        }
        PacketClass::Sip { call: Some(call) }
    }

    /// MGCP (RFC 3435) also carries SDP: a command's SDP is the remote
    /// connection descriptor (the far end, reported as the callee), a
    /// response's SDP is the gateway's own connection (the caller). The call
    /// is keyed by the command's `C:` (CallId) parameter; a response finds
    /// its call through the transaction id.
    fn handle_mgcp(&mut self, now: Timestamp, mgcp: &Mgcp<'_>) -> PacketClass {
        self.counters.mgcp_messages += 1;
        let call = match (mgcp.verb, mgcp.call_id) {
            (Some(verb), Some(call_id)) => {
                let key = format!("mgcp:{call_id}");
                let call = match self.call_index.get(&key) {
                    Some(&i) => i,
                    None => {
                        let state = CallState::new_mgcp(now, call_id, verb, mgcp.endpoint);
                        match self.open_call(key, state) {
                            Some(i) => i,
                            None => return PacketClass::Other,
                        }
                    }
                };
                if self.mgcp_transactions.len() >= MAX_MGCP_TRANSACTIONS {
                    self.mgcp_transactions.clear();
                }
                self.mgcp_transactions.insert(mgcp.transaction, call);
                Some(call)
            }
            (None, _) => self.mgcp_transactions.get(&mgcp.transaction).copied(),
            (Some(_), None) => None,
        };
        let Some(call) = call else {
            return PacketClass::Sip { call: None };
        };
        self.calls[call].sip_messages += 1;
        if let Some(sdp) = mgcp.sdp {
            let party = if mgcp.verb.is_some() {
                Party::Callee
            } else {
                Party::Caller
            };
            match wire::sdp::SessionDescription::parse_bytes_lenient(sdp) {
                Ok(sdp) => self.learn_sdp(call, party, &sdp),
                Err(_) => self.counters.sdp_malformed += 1,
            }
        }
        PacketClass::Sip { call: Some(call) }
    }

    /// Registers the receive endpoints an SDP announces for `party`.
    fn learn_sdp(&mut self, call: usize, party: Party, sdp: &wire::sdp::SessionDescription<'_>) {
        let state = &mut self.calls[call];
        // An update is an SDP that changes media a party had already
        // announced (re-INVITE, UPDATE, codec change); retransmissions and
        // the first answer are not.
        let party_known = state.media.iter().any(|m| m.party == party);
        let mut changed = false;
        for media in sdp.media_sections() {
            if media.kind() != "audio" && media.kind() != "video" {
                continue;
            }
            let Some(ip) = media.connection().and_then(|c| c.ip()) else {
                continue;
            };
            let port = media.port();
            if port == 0 {
                continue;
            }
            let mut codecs = Vec::new();
            for pt in media.payload_types() {
                if let Some(codec) = media.codec(pt) {
                    codecs.push(CodecInfo {
                        pt,
                        name: codec.name.into(),
                        clock: codec.clock_rate.0,
                    });
                }
            }
            let rtp = SocketAddr::new(ip, port);
            let rtcp_port = if media.rtcp_mux() {
                port
            } else {
                media.rtcp().map_or(port.wrapping_add(1), |r| r.port)
            };
            let ep = Endpoint {
                call,
                party,
                codecs: codecs.into(),
            };
            let known = state
                .media
                .iter()
                .any(|m| m.party == party && m.addr == rtp && m.codecs[..] == ep.codecs[..]);
            if !known {
                state.media.push(MediaState {
                    party,
                    addr: rtp,
                    codecs: ep.codecs.clone(),
                });
                changed = true;
            }
            // RTCP on port + 1 is found by `endpoint()`; only other ports
            // (RFC 3605 `a=rtcp`) need their own entry.
            if rtcp_port != port && rtcp_port != port.wrapping_add(1) {
                let rtcp = SocketAddr::new(ip, rtcp_port);
                self.endpoints.insert(rtcp, ep.clone());
                if !state.rtcp_endpoints.contains(&rtcp) {
                    state.rtcp_endpoints.push(rtcp);
                }
            }
            self.endpoints.insert(rtp, ep);
        }
        if changed && party_known {
            state.sdp_updates += 1;
        }
    }

    fn handle_media(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        call: Option<usize>,
    ) -> PacketClass {
        match wire::rtp::classify(payload) {
            Some(wire::rtp::Kind::Rtp) => {}
            Some(wire::rtp::Kind::Rtcp) => {
                self.handle_rtcp(now, src, payload);
                return PacketClass::Rtcp { call };
            }
            None => {
                self.counters.media_not_rtp += 1;
                return PacketClass::Other;
            }
        }
        let Ok(rtp) = wire::rtp::RtpPacket::new_checked(payload) else {
            self.counters.media_not_rtp += 1;
            return PacketClass::Other;
        };
        self.counters.rtp_packets += 1;
        let key = FlowKey::new(src, dst, rtp.ssrc());
        let id = match self.stream_index.get(&key, &self.streams, |k| *k) {
            Some(id) => id,
            None => match self.new_stream(key, (src, dst, rtp.ssrc()), call) {
                Some(id) => id,
                None => return PacketClass::Other,
            },
        };
        self.handle_rtp(now, id, &rtp)
    }

    /// A stream seen for the first time. The PT numbers in RTP sent *to*
    /// an endpoint follow that endpoint's SDP; for symmetric RTP seen only
    /// from its source's SDP, the source's SDP is the best there is.
    fn new_stream(
        &mut self,
        key: FlowKey,
        addrs: (SocketAddr, SocketAddr, Ssrc),
        call: Option<usize>,
    ) -> Option<usize> {
        if self.held_streams >= self.config.max_streams {
            self.counters.streams_dropped += 1;
            return None;
        }
        let (src, dst, _) = addrs;
        let receiver = self.endpoint(&dst).filter(|e| Some(e.call) == call);
        let sender = self.endpoint(&src).filter(|e| Some(e.call) == call);
        let direction = receiver
            .map(|e| e.party)
            .or_else(|| sender.map(|e| other(e.party)));
        let mut codecs = receiver
            .or(sender)
            .map(|e| e.codecs.clone())
            .unwrap_or_else(|| Arc::from([]));
        if !self.config.codec_overrides.is_empty() {
            let mut list = codecs.to_vec();
            for (pt, name) in &self.config.codec_overrides {
                if !list.iter().any(|c| c.pt == *pt) {
                    list.push(CodecInfo {
                        pt: *pt,
                        name: name.as_str().into(),
                        clock: override_clock_rate(name),
                    });
                }
            }
            codecs = list.into();
        }
        let id = self.free_streams.pop().unwrap_or(self.streams.len());
        let id32 = u32::try_from(id).unwrap_or(u32::MAX);
        let tuple = FlowKey::new(src, dst, Ssrc(0));
        let flow = match self.flows.get(&tuple, &self.streams, FlowKey::without_ssrc) {
            Some(first) => first as u32,
            None => {
                self.flows.insert(tuple, id32);
                id32
            }
        };
        let next_same_ssrc = self
            .ssrc_index
            .insert(addrs.2, u32::try_from(id).unwrap_or(u32::MAX))
            .unwrap_or(u32::MAX);
        let state = StreamState {
            held: true,
            flow,
            ssrc_counter: SsrcChangeCounter::default(),
            next_same_ssrc,
            key,
            call,
            direction,
            codecs,
            stats: StreamStats::with_config(self.config.stream),
            pts: [PayloadType(0); MAX_PTS],
            kinds: [PayloadKind::Unknown; MAX_PTS],
            pt_count: 0,
            extras: (self.config.keep_audio || self.config.keep_intervals).then(|| {
                Box::new(Extras {
                    audio: self.config.keep_audio.then(Vec::new),
                    intervals: self.config.keep_intervals.then(Vec::new),
                })
            }),
        };
        match self.streams.get_mut(id) {
            Some(slot) => *slot = state,
            None => self.streams.push(state),
        }
        self.held_streams += 1;
        self.stream_index.insert(key, id32);
        if let Some(c) = call {
            self.calls[c].streams.push(id);
        }
        Some(id)
    }

    /// Adds a call under `key` in a free slot, or refuses it (counted) when
    /// [`AnalyzerConfig::max_calls`] are held.
    fn open_call(&mut self, key: String, state: CallState) -> Option<usize> {
        if self.held_calls >= self.config.max_calls {
            self.counters.calls_dropped += 1;
            return None;
        }
        let i = match self.free_calls.pop() {
            Some(i) => {
                self.calls[i] = state;
                i
            }
            None => {
                self.calls.push(state);
                self.calls.len() - 1
            }
        };
        self.held_calls += 1;
        self.call_index.insert(key, i);
        Some(i)
    }

    /// Takes a stream out of the indexes and frees its slot.
    fn release_stream(&mut self, id: usize) {
        let Some(s) = self.streams.get(id).filter(|s| s.held) else {
            return;
        };
        let (key, next) = (s.key, s.next_same_ssrc);
        let id32 = u32::try_from(id).unwrap_or(u32::MAX);
        self.stream_index.remove(&key, id32);
        self.flows.remove(&key.without_ssrc(), id32);
        // Unlink it from its SSRC's chain (newest first).
        let ssrc = Ssrc(key.ssrc);
        match self.ssrc_index.get(&ssrc).copied() {
            Some(head) if head == id32 => {
                if next == u32::MAX {
                    self.ssrc_index.remove(&ssrc);
                } else {
                    self.ssrc_index.insert(ssrc, next);
                }
            }
            Some(mut at) => {
                while let Some(prev) = self.streams.get_mut(at as usize) {
                    if prev.next_same_ssrc == id32 {
                        prev.next_same_ssrc = next;
                        break;
                    }
                    at = prev.next_same_ssrc;
                }
            }
            None => {}
        }
        // A vacant slot keeps no heap memory (no codecs, no extras).
        let slot = &mut self.streams[id];
        slot.held = false;
        slot.call = None;
        slot.codecs = Arc::from([]);
        slot.extras = None;
        slot.stats = StreamStats::with_config(self.config.stream);
        self.held_streams -= 1;
        self.free_streams.push(id);
    }

    /// One RTP packet of a known stream.
    fn handle_rtp(
        &mut self,
        now: Timestamp,
        id: usize,
        rtp: &wire::rtp::RtpPacket<&[u8]>,
    ) -> PacketClass {
        let flow = self.streams[id].flow as usize;
        if let Some(first) = self.streams.get_mut(flow) {
            let _ = first.ssrc_counter.handle_ssrc(rtp.ssrc());
        }
        let stream = &mut self.streams[id];
        let pt = rtp.payload_type();
        let count = usize::from(stream.pt_count);
        let kind = match stream.pts[..count].iter().position(|&p| p == pt) {
            Some(i) => stream.kinds[i],
            None => {
                let kind = stream.kind(pt);
                if count < MAX_PTS {
                    stream.pts[count] = pt;
                    stream.kinds[count] = kind;
                    stream.pt_count += 1;
                    let codec = stream.codec();
                    stream.stats.set_codec(codec);
                }
                kind
            }
        };
        let info = RtpPacketInfo {
            arrival: now,
            seq: rtp.sequence_number(),
            timestamp: rtp.timestamp(),
            ssrc: rtp.ssrc(),
            payload_type: pt,
            marker: rtp.marker(),
            payload_len: u16::try_from(rtp.payload().len()).unwrap_or(u16::MAX),
        };
        stream.stats.handle_packet(&info, kind);
        if let Some(audio) = stream.extras.as_mut().and_then(|e| e.audio.as_mut())
            && (pt == PayloadType::PCMU || pt == PayloadType::PCMA)
        {
            audio.push((info.timestamp, pt, rtp.payload().to_vec()));
        }
        while let Some(sample) = stream.stats.poll_interval() {
            match stream.extras.as_mut().and_then(|e| e.intervals.as_mut()) {
                Some(kept) => kept.push(sample),
                None => self
                    .events
                    .push_back(AnalyzerEvent::Interval { stream: id, sample }),
            }
        }
        PacketClass::Rtp {
            stream: id,
            call: stream.call,
        }
    }

    /// Attaches RTCP report blocks to the streams they describe: a block
    /// about SSRC X sent from host H describes the stream of X towards H.
    fn handle_rtcp(&mut self, now: Timestamp, src: SocketAddr, payload: &[u8]) {
        self.counters.rtcp_packets += 1;
        for packet in wire::rtcp::Compound::new(payload) {
            let Ok(packet) = packet else {
                self.counters.rtcp_malformed += 1;
                return;
            };
            let mut reports: Vec<(Ssrc, RemoteReport)> = Vec::new();
            match &packet {
                wire::rtcp::RtcpPacket::SenderReport(sr) => {
                    for block in sr.report_blocks() {
                        reports.push((block.ssrc(), remote_from_block(&block)));
                    }
                }
                wire::rtcp::RtcpPacket::ReceiverReport(rr) => {
                    for block in rr.report_blocks() {
                        reports.push((block.ssrc(), remote_from_block(&block)));
                    }
                }
                wire::rtcp::RtcpPacket::Xr(xr) => {
                    for block in xr.blocks() {
                        if let Ok(wire::rtcp::XrBlock::VoipMetrics(vm)) = block {
                            reports.push((vm.ssrc(), remote_from_voip_metrics(&vm)));
                        }
                    }
                }
                _ => {}
            }
            for (ssrc, report) in reports {
                let mut next = self.ssrc_index.get(&ssrc).copied().unwrap_or(u32::MAX);
                while let Some(stream) = self.streams.get_mut(next as usize) {
                    if stream.key.dst().ip() == src.ip() {
                        stream.stats.handle_rtcp_report(now, report);
                        break;
                    }
                    next = stream.next_same_ssrc;
                }
            }
        }
    }
}

/// A media endpoint as a call keeps it (rendered as [`MediaEndpoint`]).
struct MediaState {
    party: Party,
    addr: SocketAddr,
    codecs: Arc<[CodecInfo]>,
}

#[derive(Clone, Debug, PartialEq)]
struct CodecInfo {
    pt: PayloadType,
    name: Arc<str>,
    clock: u32,
}

#[derive(Clone, Debug)]
struct Endpoint {
    call: usize,
    party: Party,
    /// Shared by every stream to or from this endpoint.
    codecs: Arc<[CodecInfo]>,
}

/// Payload types remembered per stream (for its payload names).
const MAX_PTS: usize = 6;

struct StreamState {
    /// In use (not a free slot).
    held: bool,
    /// The first stream of this stream's 5-tuple (maybe itself), whose
    /// `ssrc_counter` counts the 5-tuple's SSRC changes.
    flow: u32,
    /// SSRC changes of the 5-tuple (used on the first stream only).
    ssrc_counter: SsrcChangeCounter,
    /// The previous stream with the same SSRC (`u32::MAX`: none), chained
    /// from `Analyzer::ssrc_index`.
    next_same_ssrc: u32,
    key: FlowKey,
    call: Option<usize>,
    /// Who receives this stream.
    direction: Option<Party>,
    codecs: Arc<[CodecInfo]>,
    stats: StreamStats,
    pts: [PayloadType; MAX_PTS],
    /// How each of `pts` is analysed (resolved once, when first seen).
    kinds: [PayloadKind; MAX_PTS],
    pt_count: u8,
    /// What only some runs keep (WAV audio, interval samples), boxed so a
    /// stream pays one pointer for it.
    extras: Option<Box<Extras>>,
}

struct Extras {
    audio: Option<KeptAudio>,
    intervals: Option<Vec<IntervalSample>>,
}

/// The stream table's key: (source, destination, SSRC) packed into
/// integers (IPv4 as IPv4-mapped IPv6) so hashing and comparing are cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    src: u128,
    dst: u128,
    ports: u32,
    ssrc: u32,
}

impl FlowKey {
    fn without_ssrc(&self) -> Self {
        Self { ssrc: 0, ..*self }
    }

    fn src(&self) -> SocketAddr {
        SocketAddr::new(unpack_ip(self.src), (self.ports >> 16) as u16)
    }

    fn dst(&self) -> SocketAddr {
        SocketAddr::new(unpack_ip(self.dst), self.ports as u16)
    }

    fn new(src: SocketAddr, dst: SocketAddr, ssrc: Ssrc) -> Self {
        fn ip(a: &SocketAddr) -> u128 {
            match a.ip() {
                std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
                std::net::IpAddr::V6(v6) => u128::from(v6),
            }
        }
        Self {
            src: ip(&src),
            dst: ip(&dst),
            ports: u32::from(src.port()) << 16 | u32::from(dst.port()),
            ssrc: ssrc.0,
        }
    }
}

impl StreamState {
    fn codec_info(&self, pt: PayloadType) -> Option<(&str, u32)> {
        if let Some(c) = self.codecs.iter().find(|c| c.pt == pt) {
            return Some((&*c.name, c.clock));
        }
        pt.static_info().map(|(name, rate)| (name, rate.0))
    }

    fn kind(&self, pt: PayloadType) -> PayloadKind {
        match self.codec_info(pt) {
            Some((name, clock)) if name.eq_ignore_ascii_case("telephone-event") => {
                PayloadKind::TelephoneEvent(wire::ClockRate(clock))
            }
            Some((name, clock)) if name.eq_ignore_ascii_case("CN") => {
                PayloadKind::ComfortNoise(wire::ClockRate(clock))
            }
            Some((_, clock)) if clock > 0 => PayloadKind::Audio(wire::ClockRate(clock)),
            _ => PayloadKind::Unknown,
        }
    }

    /// The codec used for MOS: the first audio payload type seen with a
    /// known E-model entry (G.711 with PLC when none is known).
    fn codec(&self) -> Codec {
        for &pt in &self.pts[..usize::from(self.pt_count)] {
            if let Some((name, _)) = self.codec_info(pt)
                && !name.eq_ignore_ascii_case("telephone-event")
                && !name.eq_ignore_ascii_case("CN")
                && let Some(codec) = Codec::from_encoding_name(name)
            {
                return codec;
            }
        }
        Codec::G711Plc
    }

    /// Payload names as Wireshark prints them (`g711U`, `g711A`, `g729`…).
    fn payload_names(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for &pt in &self.pts[..usize::from(self.pt_count)] {
            let name = match self.codec_info(pt) {
                Some((name, _)) => wireshark_payload_name(name),
                None => pt.0.to_string(),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names.join(", ")
    }
}

struct CallState {
    call_id: String,
    from: String,
    to: String,
    from_tag: Option<String>,
    method: String,
    start: Timestamp,
    answer: Option<Timestamp>,
    end: Option<Timestamp>,
    final_status: Option<u16>,
    first_cseq: Option<u32>,
    sip_messages: u64,
    sdp_updates: u32,
    media: Vec<MediaState>,
    /// RTCP endpoints announced on their own port (RFC 3605 `a=rtcp`).
    rtcp_endpoints: Vec<SocketAddr>,
    /// Streams of this call (reported or not).
    streams: Vec<usize>,
    /// In use (not a free slot).
    held: bool,
}

impl CallState {
    fn new(now: Timestamp, call_id: &str, msg: &wire::sip::Message<'_>) -> Self {
        let from = msg.header("From").unwrap_or_default().trim().to_string();
        let to = msg.header("To").unwrap_or_default().trim().to_string();
        // The caller is the party that sent the first request we see; if
        // the first message is a response, its From is still the caller.
        let from_tag = msg.from().and_then(|f| f.tag().map(str::to_string));
        let method = msg
            .cseq()
            .map(|c| c.method.as_str().to_string())
            .unwrap_or_default();
        Self {
            call_id: call_id.to_string(),
            from,
            to,
            from_tag,
            method,
            start: now,
            answer: None,
            end: None,
            final_status: None,
            first_cseq: msg.cseq().map(|c| c.seq),
            sip_messages: 0,
            sdp_updates: 0,
            media: Vec::new(),
            rtcp_endpoints: Vec::new(),
            streams: Vec::new(),
            held: true,
        }
    }

    /// A free slot (allocates nothing).
    fn vacant() -> Self {
        Self {
            held: false,
            ..Self::from_media(Timestamp(0), "")
        }
    }

    /// A call known only from media its source attributed to it.
    fn from_media(now: Timestamp, call_id: &str) -> Self {
        Self {
            call_id: call_id.to_string(),
            from: String::new(),
            to: String::new(),
            from_tag: None,
            method: String::new(),
            start: now,
            answer: None,
            end: None,
            final_status: None,
            first_cseq: None,
            sip_messages: 0,
            sdp_updates: 0,
            media: Vec::new(),
            rtcp_endpoints: Vec::new(),
            streams: Vec::new(),
            held: true,
        }
    }

    /// Updates the call's timeline; returns the party whose SDP this
    /// message would carry (the sender).
    fn on_message(&mut self, now: Timestamp, msg: &wire::sip::Message<'_>) -> Party {
        self.sip_messages += 1;
        let cseq = msg.cseq();
        let from_is_caller = match (
            &self.from_tag,
            msg.from().and_then(|f| f.tag().map(str::to_string)),
        ) {
            (Some(a), Some(b)) => *a == b,
            _ => true,
        };
        if let Some(status) = msg.status() {
            let first_tx = cseq.as_ref().is_some_and(|c| {
                Some(c.seq) == self.first_cseq && c.method.as_str() == self.method
            });
            if first_tx && status >= 200 && self.final_status.is_none() {
                self.final_status = Some(status);
                if status < 300 {
                    self.answer = Some(now);
                } else {
                    self.end = Some(now);
                }
            }
            // A response is sent by the request's recipient.
            if from_is_caller {
                Party::Callee
            } else {
                Party::Caller
            }
        } else {
            if msg.method().is_some_and(|m| m.as_str() == "BYE") && self.end.is_none() {
                self.end = Some(now);
            }
            if from_is_caller {
                Party::Caller
            } else {
                Party::Callee
            }
        }
    }

    fn new_mgcp(now: Timestamp, call_id: &str, verb: &str, endpoint: &str) -> Self {
        Self {
            from: endpoint.to_string(),
            method: format!("MGCP {verb}"),
            ..Self::from_media(now, call_id)
        }
    }

    fn report(&self, index: usize) -> CallReport {
        CallReport {
            index,
            call_id: self.call_id.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            method: self.method.clone(),
            start: self.start.as_secs_f64(),
            answer: self.answer.map(Timestamp::as_secs_f64),
            end: self.end.map(Timestamp::as_secs_f64),
            final_status: self.final_status,
            sip_messages: self.sip_messages,
            sdp_updates: self.sdp_updates,
            media: self
                .media
                .iter()
                .map(|m| MediaEndpoint {
                    party: m.party,
                    addr: m.addr.to_string(),
                    codecs: m
                        .codecs
                        .iter()
                        .map(|c| format!("{} {}/{}", c.pt.0, c.name, c.clock))
                        .collect(),
                })
                .collect(),
            streams: Vec::new(),
        }
    }
}

/// Streams by key, storing a 64-bit hash of the key (16 bytes an entry
/// instead of 56): a hit is verified against the stream's own key, and a
/// key whose hash is already taken by another goes to an exact overflow map.
#[derive(Default)]
struct StreamIndex {
    by_hash: FxHashMap<u64, u32>,
    overflow: FxHashMap<FlowKey, u32>,
}

impl StreamIndex {
    /// The stream whose `project(key)` equals `key`.
    fn get(
        &self,
        key: &FlowKey,
        streams: &[StreamState],
        project: fn(&FlowKey) -> FlowKey,
    ) -> Option<usize> {
        if let Some(&id) = self.by_hash.get(&hash_key(key))
            && streams
                .get(id as usize)
                .is_some_and(|s| s.held && project(&s.key) == *key)
        {
            return Some(id as usize);
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(key).map(|&id| id as usize)
    }

    /// Removes `key`'s entry if it names stream `id`.
    fn remove(&mut self, key: &FlowKey, id: u32) {
        let hash = hash_key(key);
        if self.by_hash.get(&hash) == Some(&id) {
            self.by_hash.remove(&hash);
        } else if self.overflow.get(key) == Some(&id) {
            self.overflow.remove(key);
        }
    }

    fn len(&self) -> usize {
        self.by_hash.len() + self.overflow.len()
    }

    fn insert(&mut self, key: FlowKey, id: u32) {
        match self.by_hash.entry(hash_key(&key)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.overflow.insert(key, id);
            }
        }
    }
}

fn hash_key(key: &FlowKey) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(key)
}

/// The inverse of `FlowKey`'s packing: IPv4-mapped addresses are IPv4.
fn unpack_ip(ip: u128) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(ip);
    match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    }
}

/// Clock rate for a codec named in `codec_overrides`: the static table's
/// rate for its name, 48 kHz for Opus (RFC 7587), 16 kHz for the wideband
/// AMR-WB, else 8 kHz.
fn override_clock_rate(name: &str) -> u32 {
    let upper = name.to_ascii_uppercase();
    match upper.as_str() {
        "OPUS" => 48_000,
        "AMR-WB" | "G7221" | "SPEEX-WB" => 16_000,
        _ => (0..=34u8)
            .filter_map(|pt| PayloadType(pt).static_info())
            .find(|(n, _)| n.eq_ignore_ascii_case(&upper))
            .map_or(8_000, |(_, rate)| rate.0),
    }
}

/// Bound on remembered MGCP transactions (cleared when reached).
const MAX_MGCP_TRANSACTIONS: usize = 65_536;

/// The parts of an MGCP message (RFC 3435 §3) the analyser needs.
struct Mgcp<'a> {
    /// The command verb (`CRCX`, `MDCX`, …); `None` for a response.
    verb: Option<&'a str>,
    transaction: u32,
    endpoint: &'a str,
    /// The `C:` (CallId) parameter.
    call_id: Option<&'a str>,
    /// The session description after the empty line, if any.
    sdp: Option<&'a [u8]>,
}

impl<'a> Mgcp<'a> {
    //= https://www.rfc-editor.org/rfc/rfc3435#section-3.2
    //# The command header is composed of:
    //# - A command line, identifying the requested action or verb, the
    //#   transaction identifier, the endpoint towards which the action is
    //#   requested, and the MGCP protocol version,
    fn parse(payload: &'a [u8]) -> Option<Self> {
        const VERBS: [&str; 10] = [
            "EPCF", "CRCX", "MDCX", "DLCX", "RQNT", "NTFY", "AUEP", "AUCX", "RSIP", "MESG",
        ];
        let head_end = find_blank_line(payload);
        let head =
            core::str::from_utf8(&payload[..head_end.map_or(payload.len(), |(start, _)| start)])
                .ok()?;
        let mut lines = head.lines();
        let first = lines.next()?;
        let mut words = first.split_ascii_whitespace();
        let w0 = words.next()?;
        let w1 = words.next()?;
        let transaction: u32 = w1.parse().ok()?;
        let (verb, endpoint) = if VERBS.contains(&w0) {
            let endpoint = words.next()?;
            (words.next() == Some("MGCP")).then_some(())?;
            (Some(w0), endpoint)
        } else if w0.len() == 3 && w0.bytes().all(|b| b.is_ascii_digit()) {
            (None, "")
        } else {
            return None;
        };
        let call_id = lines.find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("C").then(|| value.trim())
        });
        let sdp = head_end
            .map(|(_, body)| &payload[body..])
            .filter(|b| b.starts_with(b"v="));
        Some(Mgcp {
            verb,
            transaction,
            endpoint,
            call_id,
            sdp,
        })
    }
}

/// Position of the first empty line: (end of the header, start of the body).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn other(p: Party) -> Party {
    match p {
        Party::Caller => Party::Callee,
        Party::Callee => Party::Caller,
    }
}

/// Cheap check that a payload starts like a SIP message: a request line
/// ending in `SIP/2.0` or a status line starting with `SIP/`.
fn looks_like_sip(payload: &[u8]) -> bool {
    if payload.starts_with(b"SIP/") {
        return true;
    }
    let line_end = payload.iter().take(1024).position(|&b| b == b'\n');
    match line_end {
        Some(end) => {
            let line = payload[..end]
                .strip_suffix(b"\r")
                .unwrap_or(&payload[..end]);
            line.len() > 8
                && line[..line.len() - 3].ends_with(b"SIP/")
                && payload[0].is_ascii_uppercase()
        }
        None => false,
    }
}

/// Skips CRLF keep-alives (RFC 5626 §3.5.1) in front of a stream message.
fn trim_keepalive(mut buf: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = buf {
        buf = rest;
    }
    buf
}

fn wireshark_payload_name(name: &str) -> String {
    match name.to_ascii_uppercase().as_str() {
        "PCMU" => "g711U".into(),
        "PCMA" => "g711A".into(),
        "G729" => "g729".into(),
        "G722" => "g722".into(),
        "TELEPHONE-EVENT" => "telephone-event".into(),
        "CN" => "CN".into(),
        _ => name.to_string(),
    }
}

fn remote_from_block(block: &wire::rtcp::ReportBlock<'_>) -> RemoteReport {
    RemoteReport {
        fraction_lost: block.fraction_lost(),
        cumulative_lost: block.cumulative_lost(),
        jitter: block.jitter(),
        voip_metrics: None,
    }
}

fn remote_from_voip_metrics(vm: &wire::rtcp::VoipMetrics<'_>) -> RemoteReport {
    RemoteReport {
        // An XR block alone carries no RR figures: loss rate stands in for
        // fraction lost (both are /256), the rest stays unset.
        fraction_lost: vm.loss_rate(),
        cumulative_lost: 0,
        jitter: 0,
        voip_metrics: Some(RemoteVoipMetrics {
            r_factor: vm.r_factor(),
            mos_lq: vm.mos_lq().map(|m| f64::from(m) / 10.0),
            mos_cq: vm.mos_cq().map(|m| f64::from(m) / 10.0),
            loss_rate: vm.loss_rate(),
            discard_rate: vm.discard_rate(),
            burst_density: vm.burst_density(),
            round_trip_delay_ms: vm.round_trip_delay(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_sniffing() {
        assert!(looks_like_sip(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n"));
        assert!(looks_like_sip(b"SIP/2.0 200 OK\r\n"));
        assert!(!looks_like_sip(b"\x80\x00\x01\x02abcdefgh"));
        assert!(!looks_like_sip(b"GET / HTTP/1.1\r\n"));
        assert_eq!(trim_keepalive(b"\r\n\r\nINVITE"), b"INVITE");
    }

    fn rtp(seq: u16, ts: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x00, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0xFF; 160]);
        p
    }

    fn udp(ts_ms: u64, payload: &[u8]) -> Packet<'_> {
        Packet {
            ts: Timestamp(1_700_000_000_000_000_000 + ts_ms * 1_000_000),
            src: "192.0.2.1:4000".parse().unwrap(),
            dst: "192.0.2.2:5000".parse().unwrap(),
            transport: Transport::Udp,
            payload,
            ip: None,
            stream_gap: false,
            truncated: false,
        }
    }

    fn run_orphan_stream(config: AnalyzerConfig) -> (Report, usize) {
        let mut a = Analyzer::new(config);
        let mut intervals = 0;
        // 6 s of 20 ms PCMU, with packet 100 lost.
        for i in 0..300u16 {
            if i == 100 {
                continue;
            }
            let p = rtp(i, u32::from(i) * 160);
            assert!(matches!(
                a.handle_packet(&udp(u64::from(i) * 20, &p)),
                PacketClass::Rtp { call: None, .. }
            ));
            while let Some(AnalyzerEvent::Interval { .. }) = a.poll_event() {
                intervals += 1;
            }
        }
        (a.report(), intervals)
    }

    #[test]
    fn orphan_stream_and_configured_intervals() {
        let (report, intervals) = run_orphan_stream(AnalyzerConfig::default());
        assert_eq!(intervals, 0, "6 s of media completes no 10 s interval");
        assert_eq!(report.streams.len(), 1);
        let s = &report.streams[0];
        assert_eq!((s.packets, s.lost, s.call_id.as_deref()), (299, 1, None));
        assert_eq!(s.payload, "g711U");
        let config = AnalyzerConfig {
            stream: StreamConfig {
                interval_ns: 1_000_000_000,
                ..StreamConfig::default()
            },
            ..AnalyzerConfig::default()
        };
        let (_, intervals) = run_orphan_stream(config);
        assert_eq!(intervals, 5, "1 s intervals: 5 complete within 6 s");
        let config = AnalyzerConfig {
            min_orphan_packets: 1000,
            ..AnalyzerConfig::default()
        };
        assert!(run_orphan_stream(config).0.streams.is_empty());
    }

    #[test]
    fn sip_over_tcp_is_framed_across_segments() {
        let invite = b"INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@192.0.2.2>\r\nCall-ID: tcp-call\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: 51\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        // Put the real body length in Content-Length.
        let text = String::from_utf8_lossy(invite).into_owned();
        let body_len = text.split("\r\n\r\n").nth(1).unwrap().len();
        let text = text.replace("Content-Length: 51", &format!("Content-Length: {body_len}"));
        let bytes = format!("\r\n{text}{text}").into_bytes();
        let mut a = Analyzer::new(AnalyzerConfig::default());
        for (i, chunk) in bytes.chunks(37).enumerate() {
            let p = Packet {
                transport: Transport::Tcp,
                ..udp(i as u64, chunk)
            };
            let _ = a.handle_packet(&p);
        }
        let report = a.report();
        assert_eq!(report.counters.sip_messages, 2);
        assert_eq!(report.calls.len(), 1);
        assert_eq!(report.calls[0].call_id, "tcp-call");
        assert_eq!(
            report.calls[0].media.len(),
            1,
            "SDP learnt: {:?}",
            report.calls[0].media
        );
    }

    #[test]
    fn stream_index_survives_hash_collisions() {
        let mut a = Analyzer::new(AnalyzerConfig {
            min_orphan_packets: 1,
            ..AnalyzerConfig::default()
        });
        let mut p = rtp(1, 160);
        let _ = a.handle_packet(&udp(0, &p));
        // Make the next stream's key hash to stream 0's slot.
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let dst: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        let other = FlowKey::new(src, dst, Ssrc(0x9999_9999));
        a.stream_index.by_hash.insert(hash_key(&other), 0);
        p[8..12].copy_from_slice(&0x9999_9999u32.to_be_bytes());
        for seq in 2..6u16 {
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            let class = a.handle_packet(&udp(u64::from(seq) * 20, &p));
            assert_eq!(
                class,
                PacketClass::Rtp {
                    stream: 1,
                    call: None
                }
            );
        }
        let report = a.report();
        assert_eq!(report.streams.len(), 2);
        assert_eq!(
            (report.streams[0].packets, report.streams[1].packets),
            (1, 4)
        );
        assert_eq!(report.streams[1].ssrc, "0x99999999");
        // Both SSRCs on one 5-tuple: one change.
        assert_eq!(report.streams[1].ssrc_changes, 1);
    }

    #[test]
    fn flow_keys_round_trip_addresses() {
        for (src, dst) in [
            ("192.0.2.1:4000", "198.18.0.2:5002"),
            ("[2001:db8::1]:4000", "[2001:db8::2]:65535"),
        ] {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let key = FlowKey::new(src, dst, Ssrc(7));
            assert_eq!((key.src(), key.dst(), key.ssrc), (src, dst, 7));
        }
    }

    #[test]
    fn mgcp_command_and_response() {
        let cmd = b"CRCX 1204 aaln/1@gw.example.net MGCP 1.0\r\nC: A3C47F21456789F0\r\nM: sendrecv\r\n\r\nv=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 3456 RTP/AVP 0\r\n";
        let m = Mgcp::parse(cmd).expect("command");
        assert_eq!(m.verb, Some("CRCX"));
        assert_eq!(m.transaction, 1204);
        assert_eq!(m.endpoint, "aaln/1@gw.example.net");
        assert_eq!(m.call_id, Some("A3C47F21456789F0"));
        assert!(m.sdp.unwrap().starts_with(b"v=0"));
        let resp = b"200 1204 OK\r\nI: FDE234C8\r\n\r\nv=0\r\nc=IN IP4 192.0.2.2\r\nm=audio 3456 RTP/AVP 0\r\n";
        let r = Mgcp::parse(resp).expect("response");
        assert_eq!((r.verb, r.transaction, r.call_id), (None, 1204, None));
        assert!(Mgcp::parse(b"HELLO 12 x MGCP 1.0\r\n").is_none());
        assert!(Mgcp::parse(b"\x80\x08\x00\x01").is_none());
    }
}
