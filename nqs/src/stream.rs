//! Per-stream RTP quality statistics: RFC 3550 loss and jitter, the figures
//! Wireshark's `-z rtp,streams` reports, loss burstiness, jitter-buffer
//! simulations, histograms and 10-second interval samples.
//!
//! # Driving contract
//!
//! One [`StreamStats`] per RTP stream, keyed by the caller (source address,
//! destination address and SSRC, like Wireshark). For every packet of the
//! stream, in capture order, call [`StreamStats::handle_packet`] with the
//! capture time as `arrival`, then drain [`StreamStats::poll_interval`].
//! When the capture goes idle, [`StreamStats::handle_timeout`] at or after
//! [`StreamStats::poll_timeout`] closes the running interval. At the end,
//! [`StreamStats::report`] gives the serialisable summary. RTCP reports
//! about this stream go to [`StreamStats::handle_rtcp_report`].
//!
//! The state is fixed-size (under 1 KiB), nothing allocates, and no input
//! can make it panic.
//!
//! ```
//! use nqs::emodel::Codec;
//! use nqs::stream::{PayloadKind, RtpPacketInfo, StreamStats};
//! use wire::types::{ClockRate, PayloadType, Ssrc, Timestamp};
//!
//! let mut stats = StreamStats::new();
//! let mut samples = Vec::new();
//! for i in 0..1000u32 {
//!     let pkt = RtpPacketInfo {
//!         arrival: Timestamp(u64::from(i) * 20_000_000),
//!         seq: i as u16,
//!         timestamp: i * 160,
//!         ssrc: Ssrc(0x1234),
//!         payload_type: PayloadType::PCMA,
//!         marker: false,
//!         payload_len: 160,
//!     };
//!     // The caller resolves the kind from the static table or the SDP.
//!     stats.handle_packet(&pkt, PayloadKind::Audio(ClockRate(8000)));
//!     samples.extend(stats.poll_interval());
//! }
//! if let Some(end) = stats.poll_timeout() {
//!     stats.handle_timeout(end);
//!     samples.extend(stats.poll_interval());
//! }
//! let report = stats.report(Codec::G711Plc);
//! assert_eq!((report.packets, report.rfc_lost, samples.len()), (1000, 0, 2));
//! assert!((report.mos - 4.409).abs() < 0.001);
//! ```
//!
//! SSRC changes on one 5-tuple are counted by [`SsrcChangeCounter`], which
//! the caller keeps per (source, destination) beside its streams.
//!
//! # Two sets of figures
//!
//! * `rfc_*`: RFC 3550 A.1 sequence tracking (wrap, MAX_DROPOUT 3000,
//!   MAX_MISORDER 100, restart after 2 sequential packets; the first packet
//!   is accepted without probation because signalling announced the
//!   stream) and the A.8 interarrival jitter in arrival order. Only audio
//!   packets update J: telephone-event packets carry the event's start
//!   timestamp and comfort-noise packets are sent on their own schedule, so
//!   both are left out, as in the independent reference
//!   (`SUMMARY_rfc3550_independent.tsv`).
//! * `ws_*`: what tshark 4.0 `-z rtp,streams` prints (quality/NOTES.md §2):
//!   lost from the *last* sequence number in capture order; jitter
//!   `J = (15 J + |D|) / 16` in ms where D compares the arrival with the
//!   last in-time packet of any kind and the timestamp advance with the
//!   last in-time packet that had a clock rate (so after telephone events
//!   the next audio packet shows a spike); "in time" means within 2^31
//!   after the first packet's timestamp; max/mean jitter and max delta
//!   leave out the first packet, marker-bit packets, comfort noise and the
//!   packet after it, and out-of-time packets; the mean is a running mean
//!   whose n counts *all* packets. Matches tshark 4.0.17 to its printed
//!   precision on every fixture stream.
//!
//! Loss runs, BurstR and the jitter buffers see the sequence as it arrives:
//! a gap is booked as a loss run when the packet after it arrives; a late
//! packet that later fills it is counted as late, not un-lost (a playout
//! buffer would have given up on it too).

use serde::Serialize;
use wire::types::{ClockRate, PayloadType, Ssrc, Timestamp};

use crate::emodel::{self, Codec};
use crate::histogram::{DelayHistogram, LossRunHistogram};
use crate::jitter_buffer::{ADAPTIVE_MAX_MS, F1_MS, F2_MS, JitterBuffer, Playout};

/// Default length of an interval sample, ns (10 s).
pub const INTERVAL_NS: u64 = 10_000_000_000;

/// Per-stream tunables. `Default` gives the documented defaults: 10 s
/// intervals, fixed jitter buffers of 50 and 200 ms (VoIPmonitor's F1/F2)
/// and an adaptive buffer of at most 500 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Length of an interval sample, ns (at least 1 ms).
    pub interval_ns: u64,
    /// Depth of the first fixed jitter buffer (F1), ms.
    pub jb_f1_ms: u32,
    /// Depth of the second fixed jitter buffer (F2), ms.
    pub jb_f2_ms: u32,
    /// Ceiling of the adaptive jitter buffer, ms.
    pub jb_adaptive_max_ms: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            interval_ns: INTERVAL_NS,
            jb_f1_ms: F1_MS,
            jb_f2_ms: F2_MS,
            jb_adaptive_max_ms: ADAPTIVE_MAX_MS,
        }
    }
}

/// The per-packet fields the analyser needs, taken from the RTP header and
/// the capture record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacketInfo {
    /// Capture time of the packet (`now`).
    pub arrival: Timestamp,
    /// RTP sequence number as on the wire.
    pub seq: u16,
    /// RTP timestamp as on the wire.
    pub timestamp: u32,
    /// RTP SSRC.
    pub ssrc: Ssrc,
    /// RTP payload type.
    pub payload_type: PayloadType,
    /// RTP marker bit.
    pub marker: bool,
    /// Payload length in bytes (after the RTP header, without padding).
    pub payload_len: u16,
}

/// What the payload type carries, resolved by the caller from the static
/// table (RFC 3551) or the SDP `rtpmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    /// Audio media at this clock rate.
    Audio(ClockRate),
    /// RFC 4733 `telephone-event` at this clock rate.
    TelephoneEvent(ClockRate),
    /// RFC 3389 comfort noise at this clock rate.
    ComfortNoise(ClockRate),
    /// Not known: counted, but no jitter can be computed.
    Unknown,
}

/// An RTCP receiver report (RFC 3550 §6.4.2) about this stream, from the
/// far end, with the optional RTCP XR VoIP metrics block (RFC 3611 §4.7).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RemoteReport {
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    /// Interarrival jitter, in RTP timestamp units.
    pub jitter: u32,
    /// RFC 3611 VoIP metrics, if an XR block came with it.
    pub voip_metrics: Option<RemoteVoipMetrics>,
}

/// The RFC 3611 §4.7 VoIP metrics the report carries, already decoded
/// (`None` where the sender said "unavailable", 127).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RemoteVoipMetrics {
    /// R factor, 0–100.
    pub r_factor: Option<u8>,
    /// MOS-LQ (listening quality), 1.0–5.0.
    pub mos_lq: Option<f64>,
    /// MOS-CQ (conversational quality), 1.0–5.0.
    pub mos_cq: Option<f64>,
    /// Loss rate, in 1/256.
    pub loss_rate: u8,
    /// Discard rate, in 1/256.
    pub discard_rate: u8,
    /// Burst density, in 1/256.
    pub burst_density: u8,
    /// Round-trip delay, ms.
    pub round_trip_delay_ms: u16,
}

/// Loss fields of an RTCP reception report block (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceptionLoss {
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, clamped to the 24-bit signed field.
    pub cumulative_lost: i32,
}

/// A completed interval of [`INTERVAL_NS`], aligned to the stream's first
/// packet: interval `index` covers `[first + index·10 s, first + (index+1)·10 s)`.
/// Intervals with no packet at all produce no sample (the gap shows as a
/// jump in `index`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IntervalSample {
    /// Interval number since the stream's first packet.
    pub index: u64,
    /// Start of the interval, ns since the Unix epoch.
    pub start_ns: u64,
    /// Packets received in the interval.
    pub packets: u64,
    /// Packets lost in the interval (extended-sequence advance − received,
    /// floored at 0).
    pub lost: u64,
    /// Loss in percent of the packets expected in the interval.
    pub lost_pct: f64,
    /// Largest RFC 3550 interarrival jitter seen in the interval, ms.
    pub max_jitter_ms: f64,
    /// Mean of the RFC 3550 interarrival jitter over the interval's packets, ms.
    pub mean_jitter_ms: f64,
    /// BurstR of the interval's loss pattern.
    pub burst_r: f64,
    /// E-model MOS for the interval (stream codec, no delay term).
    pub mos: f64,
}

/// The summary of one stream. All times are ms, percentages 0–100.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamReport {
    /// SSRC (of the first packet; the key is per SSRC). Not serialised:
    /// the stream's identity is reported by the caller beside the metrics.
    #[serde(skip)]
    pub ssrc: u32,
    /// Codec used for the MOS figures.
    pub codec: Codec,
    /// Packets seen (all, including duplicates).
    pub packets: u64,
    /// Payload bytes seen.
    pub bytes: u64,
    /// First arrival, ns since the Unix epoch.
    pub first_arrival_ns: u64,
    /// Last arrival, ns since the Unix epoch.
    pub last_arrival_ns: u64,
    /// Last − first arrival, ms.
    pub duration_ms: f64,
    /// Payload types seen, ascending.
    pub payload_types: Vec<u8>,
    /// Payload type changes between consecutive packets.
    pub payload_type_changes: u64,
    /// Telephone-event packets.
    pub telephone_event_packets: u64,
    /// Distinct telephone events (distinct event start timestamps).
    pub dtmf_events: u64,
    /// Comfort-noise packets.
    pub comfort_noise_packets: u64,
    /// RFC 3550 A.1: packets accepted as received (duplicates included).
    pub rfc_received: u64,
    /// RFC 3550 A.1: packets expected (summed over restarts).
    pub rfc_expected: u64,
    /// RFC 3550: expected − received (negative with duplicates).
    pub rfc_lost: i64,
    /// `rfc_lost` in percent of `rfc_expected`.
    pub rfc_lost_pct: f64,
    /// RFC 3550 A.1 restarts (large jump confirmed by 2 sequential packets).
    pub seq_restarts: u64,
    /// Large sequence jumps that were not (yet) confirmed, packets ignored.
    pub seq_jumps: u64,
    /// Duplicate packets (same sequence number seen within the last 128).
    pub duplicates: u64,
    /// Late (out-of-order) packets, duplicates excluded.
    pub late: u64,
    /// Final RFC 3550 A.8 interarrival jitter (audio packets only), RTP
    /// timestamp units.
    pub rfc_jitter_ts: f64,
    /// Final RFC 3550 A.8 interarrival jitter, ms.
    pub rfc_jitter_ms: f64,
    /// Largest RFC 3550 A.8 jitter seen, ms.
    pub rfc_max_jitter_ms: f64,
    /// Wireshark's lost: last seq + cycles·65536 − first seq + 1 − packets.
    pub ws_lost: i64,
    /// `ws_lost` in percent of Wireshark's expected.
    pub ws_lost_pct: f64,
    /// Wireshark's sequence-error count (its "Problems" flag).
    pub ws_seq_errors: u64,
    /// Wireshark's max delta, ms.
    pub ws_max_delta_ms: f64,
    /// Wireshark's min delta, ms (0 if none).
    pub ws_min_delta_ms: f64,
    /// Wireshark's max jitter, ms.
    pub ws_max_jitter_ms: f64,
    /// Wireshark's mean jitter, ms.
    pub ws_mean_jitter_ms: f64,
    /// BurstR from the loss runs (2-state Markov model).
    pub burst_r: f64,
    /// Lost packets in percent used for MOS (RFC loss floored at 0).
    pub loss_pct: f64,
    /// E-model R (network loss only, no delay term).
    pub r_factor: f64,
    /// E-model MOS (network loss only, no delay term).
    pub mos: f64,
    /// Effective loss with the fixed 50 ms buffer, percent.
    pub loss_f1_pct: f64,
    /// Effective loss with the fixed 200 ms buffer, percent.
    pub loss_f2_pct: f64,
    /// Effective loss with the adaptive buffer, percent.
    pub loss_adapt_pct: f64,
    /// Packets discarded by the 50 ms buffer.
    pub discards_f1: u64,
    /// Packets discarded by the 200 ms buffer.
    pub discards_f2: u64,
    /// Packets discarded by the adaptive buffer.
    pub discards_adapt: u64,
    /// MOS with the 50 ms buffer's effective loss.
    pub mos_f1: f64,
    /// MOS with the 200 ms buffer's effective loss.
    pub mos_f2: f64,
    /// MOS with the adaptive buffer's effective loss.
    pub mos_adapt: f64,
    /// Consecutive-loss run histogram, see [`LossRunHistogram::BUCKETS`].
    pub loss_runs: LossRunHistogram,
    /// Delay-variation histogram (|D| of RFC 3550), see [`DelayHistogram::BUCKETS`].
    pub delay_variation: DelayHistogram,
    /// Interval samples dropped because the caller did not drain them.
    pub dropped_interval_samples: u64,
    /// RTCP reports received about this stream.
    pub remote_reports: u64,
    /// Far end's last fraction lost, percent.
    pub remote_fraction_lost_pct: Option<f64>,
    /// Far end's last cumulative lost.
    pub remote_cumulative_lost: Option<i64>,
    /// Far end's last jitter, ms (at the stream's audio clock rate).
    pub remote_jitter_ms: Option<f64>,
    /// Far end's largest reported jitter, ms.
    pub remote_max_jitter_ms: Option<f64>,
    /// RFC 3611 R factor.
    pub remote_r_factor: Option<f64>,
    /// RFC 3611 MOS-LQ.
    pub remote_mos_lq: Option<f64>,
    /// RFC 3611 MOS-CQ.
    pub remote_mos_cq: Option<f64>,
    /// RFC 3611 loss rate, percent.
    pub remote_loss_rate_pct: Option<f64>,
    /// RFC 3611 discard rate, percent.
    pub remote_discard_rate_pct: Option<f64>,
    /// RFC 3611 burst density, percent.
    pub remote_burst_density_pct: Option<f64>,
    /// RFC 3611 round-trip delay, ms.
    pub remote_rtt_ms: Option<f64>,
}

/// Quality statistics of one RTP stream. See the module docs for the
/// driving contract.
#[derive(Clone, Debug)]
pub struct StreamStats {
    started: bool,
    ssrc: Ssrc,
    codec: Option<Codec>,
    packets: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    /// Bit n set: payload type n seen.
    pt_seen: u128,
    last_pt: PayloadType,
    pt_changes: u64,
    events: u64,
    dtmf_events: u64,
    last_event_ts: Option<u32>,
    cn: u64,
    /// Last wire timestamp and its extension to 64 bits.
    last_ts: u32,
    ext_ts: i64,
    seq: SeqTracker,
    ws: WiresharkState,
    rfc: RfcJitter,
    interval_ns: u64,
    audio_rate: Option<ClockRate>,
    loss_runs: LossRunHistogram,
    delay_hist: DelayHistogram,
    markov: Markov,
    jb: [JitterBuffer; 3],
    interval: IntervalState,
    pending: Option<IntervalSample>,
    dropped_samples: u64,
    /// Boxed: most streams never get an RTCP report, and the state is the
    /// largest part of a stream otherwise (memory per stream is a goal).
    remote: Option<Box<RemoteState>>,
}

impl Default for StreamStats {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamStats {
    /// A stream with no packet yet. The codec for the interval MOS is taken
    /// from the first audio packet's static payload type unless set with
    /// [`StreamStats::set_codec`]; G.711 with PLC if neither.
    pub fn new() -> Self {
        Self::with_config(StreamConfig::default())
    }

    /// A stream with no packet yet, with the given interval length and
    /// jitter-buffer depths.
    pub fn with_config(config: StreamConfig) -> Self {
        Self {
            interval_ns: config.interval_ns.max(1_000_000),
            started: false,
            ssrc: Ssrc(0),
            codec: None,
            packets: 0,
            bytes: 0,
            first_ns: 0,
            last_ns: 0,
            pt_seen: 0,
            last_pt: PayloadType(0),
            pt_changes: 0,
            events: 0,
            dtmf_events: 0,
            last_event_ts: None,
            cn: 0,
            last_ts: 0,
            ext_ts: 0,
            seq: SeqTracker::default(),
            ws: WiresharkState::default(),
            rfc: RfcJitter::default(),
            audio_rate: None,
            loss_runs: LossRunHistogram::default(),
            delay_hist: DelayHistogram::default(),
            markov: Markov::default(),
            jb: [
                JitterBuffer::fixed(config.jb_f1_ms),
                JitterBuffer::fixed(config.jb_f2_ms),
                JitterBuffer::adaptive(config.jb_adaptive_max_ms),
            ],
            interval: IntervalState::default(),
            pending: None,
            dropped_samples: 0,
            remote: None,
        }
    }

    /// Sets the codec used for the interval samples' MOS (e.g. from SDP).
    pub fn set_codec(&mut self, codec: Codec) {
        self.codec = Some(codec);
    }

    /// Accounts one RTP packet of this stream, in capture order.
    pub fn handle_packet(&mut self, pkt: &RtpPacketInfo, kind: PayloadKind) {
        let now = pkt.arrival.0;
        if !self.started {
            self.started = true;
            self.ssrc = pkt.ssrc;
            self.first_ns = now;
            self.last_ts = pkt.timestamp;
            self.last_pt = pkt.payload_type;
            self.interval.reset(0, now, 0);
        } else if pkt.payload_type != self.last_pt {
            self.pt_changes += 1;
            self.last_pt = pkt.payload_type;
        }
        self.roll_interval(now);

        self.packets += 1;
        self.bytes += u64::from(pkt.payload_len);
        // The capture may not be monotonic; keep the latest time seen.
        self.last_ns = self.last_ns.max(now);
        self.pt_seen |= 1u128 << (pkt.payload_type.0 & 0x7f);

        // RTP timestamps are extended against the previous packet: a
        // signed 32-bit difference (RFC 3550 §6.4.1, timestamps modulo 2^32).
        self.ext_ts = self
            .ext_ts
            .wrapping_add(i64::from(pkt.timestamp.wrapping_sub(self.last_ts) as i32));
        self.last_ts = pkt.timestamp;

        let rate = match kind {
            PayloadKind::Audio(r) => {
                if self.audio_rate.is_none() {
                    self.audio_rate = Some(r);
                    if self.codec.is_none() {
                        self.codec = Codec::from_payload_type(pkt.payload_type);
                    }
                }
                Some(r)
            }
            PayloadKind::ComfortNoise(r) => {
                self.cn += 1;
                Some(r)
            }
            PayloadKind::TelephoneEvent(_) => {
                self.events += 1;
                if self.last_event_ts != Some(pkt.timestamp) {
                    self.dtmf_events += 1;
                    self.last_event_ts = Some(pkt.timestamp);
                }
                None
            }
            PayloadKind::Unknown => None,
        }
        .filter(|r| r.0 > 0);

        let class = self.seq.update(pkt.seq);
        match class {
            SeqClass::InOrder { gap } => {
                let lost = u64::from(gap.saturating_sub(1));
                self.loss_runs.record(lost);
                self.markov.record_run(lost);
                self.interval.markov.record_run(lost);
            }
            SeqClass::Duplicate
            | SeqClass::Late
            | SeqClass::Rejected
            | SeqClass::Restart
            | SeqClass::First => {}
        }

        self.ws.handle(now, pkt, kind, self.first_ns);

        if let Some(rate) = rate {
            let is_media = matches!(kind, PayloadKind::Audio(_));
            if is_media {
                if let Some(abs_d) = self.rfc.update(now, self.ext_ts, rate) {
                    // |D| in µs for the delay-variation histogram.
                    let us = abs_d * 1e6 / f64::from(rate.0);
                    self.delay_hist.record_us(us as u64);
                }
                let j_ms = self.rfc.jitter_ms(rate);
                self.interval.max_jitter_ms = self.interval.max_jitter_ms.max(j_ms);
                self.interval.jitter_sum_ms += j_ms;
                self.interval.jitter_n += 1;
                // Duplicates are not played twice; packets A.1 did not believe
                // (a stray large jump) would skew the playout schedule.
                if !matches!(class, SeqClass::Duplicate | SeqClass::Rejected) {
                    let transit = transit_us(now, self.ext_ts, rate);
                    for jb in &mut self.jb {
                        // Discards are counted inside the buffer.
                        let _: Playout = jb.handle_packet(transit);
                    }
                }
            }
        }
        self.interval.packets += 1;
    }

    /// Yields the last completed interval sample, if any. Drain it after
    /// every [`StreamStats::handle_packet`] / [`StreamStats::handle_timeout`]:
    /// only one is kept, an undrained one is replaced (and counted).
    pub fn poll_interval(&mut self) -> Option<IntervalSample> {
        self.pending.take()
    }

    /// When the running interval ends (ns since the epoch), or `None` before
    /// the first packet.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.started
            .then(|| Timestamp(self.interval.start_ns.saturating_add(self.interval_ns)))
    }

    /// Closes the running interval if `now` is at or past its end, so an
    /// idle stream still yields its last sample.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.started {
            self.roll_interval(now.0);
        }
    }

    /// Accounts an RTCP receiver report (and optional XR VoIP metrics) that
    /// the far end sent about this stream. Its figures are reported beside
    /// ours as `remote_*`, never in their place.
    pub fn handle_rtcp_report(&mut self, now: Timestamp, report: RemoteReport) {
        let r = self.remote.get_or_insert_with(Box::default);
        r.count += 1;
        r.last_ns = now.0;
        r.max_jitter = r.max_jitter.max(report.jitter);
        r.last = Some(report);
        if let Some(xr) = report.voip_metrics {
            r.last_xr = Some(xr);
        }
    }

    /// Packets seen so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// RFC 3550 A.1 loss so far: expected − received (negative with duplicates).
    pub fn rfc_lost(&self) -> i64 {
        self.seq.expected() as i64 - self.seq.received as i64
    }

    /// Wireshark's lost so far (see [`StreamReport::ws_lost`]).
    pub fn ws_lost(&self) -> i64 {
        self.ws.expected() - self.ws.total_nr as i64
    }

    /// The loss fields of an RTCP reception report block about this stream
    /// (RFC 3550 §6.4.1, computed as in A.3) for the interval since the
    /// previous call, for a caller that sends receiver reports.
    pub fn poll_reception_loss(&mut self) -> ReceptionLoss {
        let seq = &mut self.seq;
        let expected = seq.expected();
        let received = seq.received;
        //= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.3
        //# Since this signed number is carried in 24 bits, it should be clamped
        //# at 0x7fffff for positive loss or 0x800000 for negative loss rather
        //# than wrapping around.
        let lost = (expected as i64 - received as i64).clamp(-0x80_0000, 0x7f_ffff) as i32;
        //# expected_interval = expected - s->expected_prior;
        //# s->expected_prior = expected;
        //# received_interval = s->received - s->received_prior;
        //# s->received_prior = s->received;
        //# lost_interval = expected_interval - received_interval;
        //# if (expected_interval == 0 || lost_interval <= 0) fraction = 0;
        //# else fraction = (lost_interval << 8) / expected_interval;
        let expected_interval = expected as i64 - seq.expected_prior as i64;
        seq.expected_prior = expected;
        let received_interval = received as i64 - seq.received_prior as i64;
        seq.received_prior = received;
        let lost_interval = expected_interval - received_interval;
        let fraction = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        ReceptionLoss {
            fraction_lost: fraction,
            cumulative_lost: lost,
        }
    }

    /// BurstR of the loss pattern so far.
    pub fn burst_r(&self) -> f64 {
        self.markov.burst_r()
    }

    /// The summary, with MOS figures for `codec`.
    pub fn report(&self, codec: Codec) -> StreamReport {
        let expected = self.seq.expected();
        let rfc_lost = self.rfc_lost();
        let net_lost = rfc_lost.max(0) as u64;
        let loss_pct = pct(net_lost, expected);
        let burst_r = self.markov.burst_r();
        let r = emodel::r_factor(codec, loss_pct, burst_r, 0.0);
        let eff = |jb: &JitterBuffer| pct(net_lost + jb.discarded(), expected);
        let [f1, f2, ad] = &self.jb;
        let ws_expected = self.ws.expected();
        let rate = self.audio_rate.unwrap_or(ClockRate::NARROWBAND);
        let ts_ms = |ts: f64| {
            if rate.0 == 0 {
                0.0
            } else {
                ts * 1000.0 / f64::from(rate.0)
            }
        };
        let none = RemoteState::default();
        let remote = self.remote.as_deref().unwrap_or(&none);
        let xr = remote.last_xr;
        StreamReport {
            ssrc: self.ssrc.0,
            codec,
            packets: self.packets,
            bytes: self.bytes,
            first_arrival_ns: self.first_ns,
            last_arrival_ns: self.last_ns,
            duration_ms: self.last_ns.saturating_sub(self.first_ns) as f64 / 1e6,
            payload_types: (0u8..128)
                .filter(|&pt| self.pt_seen & (1u128 << pt) != 0)
                .collect(),
            payload_type_changes: self.pt_changes,
            telephone_event_packets: self.events,
            dtmf_events: self.dtmf_events,
            comfort_noise_packets: self.cn,
            rfc_received: self.seq.received,
            rfc_expected: expected,
            rfc_lost,
            rfc_lost_pct: signed_pct(rfc_lost, expected as i64),
            seq_restarts: self.seq.restarts,
            seq_jumps: self.seq.jumps,
            duplicates: self.seq.duplicates,
            late: self.seq.late,
            rfc_jitter_ts: self.rfc.jitter,
            rfc_jitter_ms: self.rfc.last_rate.map_or(0.0, |r| self.rfc.jitter_ms(r)),
            rfc_max_jitter_ms: self.rfc.max_ms,
            ws_lost: self.ws_lost(),
            ws_lost_pct: signed_pct(self.ws_lost(), ws_expected),
            ws_seq_errors: self.ws.seq_errors,
            ws_max_delta_ms: self.ws.max_delta,
            ws_min_delta_ms: self.ws.min_delta.unwrap_or(0.0),
            ws_max_jitter_ms: self.ws.max_jitter,
            ws_mean_jitter_ms: self.ws.mean_jitter,
            burst_r,
            loss_pct,
            r_factor: r,
            mos: emodel::mos_from_r(r),
            loss_f1_pct: eff(f1),
            loss_f2_pct: eff(f2),
            loss_adapt_pct: eff(ad),
            discards_f1: f1.discarded(),
            discards_f2: f2.discarded(),
            discards_adapt: ad.discarded(),
            mos_f1: emodel::mos(codec, eff(f1), burst_r, 0.0),
            mos_f2: emodel::mos(codec, eff(f2), burst_r, 0.0),
            mos_adapt: emodel::mos(codec, eff(ad), burst_r, 0.0),
            loss_runs: self.loss_runs,
            delay_variation: self.delay_hist,
            dropped_interval_samples: self.dropped_samples,
            remote_reports: remote.count,
            remote_fraction_lost_pct: remote
                .last
                .map(|r| f64::from(r.fraction_lost) * 100.0 / 256.0),
            remote_cumulative_lost: remote.last.map(|r| i64::from(r.cumulative_lost)),
            remote_jitter_ms: remote.last.map(|r| ts_ms(f64::from(r.jitter))),
            remote_max_jitter_ms: remote.last.map(|_| ts_ms(f64::from(remote.max_jitter))),
            remote_r_factor: xr.and_then(|x| x.r_factor).map(f64::from),
            remote_mos_lq: xr.and_then(|x| x.mos_lq),
            remote_mos_cq: xr.and_then(|x| x.mos_cq),
            remote_loss_rate_pct: xr.map(|x| f64::from(x.loss_rate) * 100.0 / 256.0),
            remote_discard_rate_pct: xr.map(|x| f64::from(x.discard_rate) * 100.0 / 256.0),
            remote_burst_density_pct: xr.map(|x| f64::from(x.burst_density) * 100.0 / 256.0),
            remote_rtt_ms: xr.map(|x| f64::from(x.round_trip_delay_ms)),
        }
    }

    /// Closes the running interval if `now` lies past its end and opens the
    /// one containing `now`.
    fn roll_interval(&mut self, now: u64) {
        let end = self.interval.start_ns.saturating_add(self.interval_ns);
        if now < end {
            return;
        }
        let ext_max = self.seq.ext_max_total();
        let iv = &self.interval;
        if iv.packets > 0 {
            let expected = ext_max.saturating_sub(iv.ext_max_at_start);
            let received = iv.seq_received_at_start;
            let received = self.seq.received.saturating_sub(received);
            let lost = expected.saturating_sub(received);
            let lost_pct = pct(lost, expected);
            let burst_r = iv.markov.burst_r();
            let codec = self.codec.unwrap_or(Codec::G711Plc);
            let sample = IntervalSample {
                index: iv.index,
                start_ns: iv.start_ns,
                packets: iv.packets,
                lost,
                lost_pct,
                max_jitter_ms: iv.max_jitter_ms,
                mean_jitter_ms: if iv.jitter_n == 0 {
                    0.0
                } else {
                    iv.jitter_sum_ms / iv.jitter_n as f64
                },
                burst_r,
                mos: emodel::mos(codec, lost_pct, burst_r, 0.0),
            };
            if self.pending.replace(sample).is_some() {
                self.dropped_samples += 1;
            }
        }
        let index = now.saturating_sub(self.first_ns) / self.interval_ns;
        let start = self
            .first_ns
            .saturating_add(index.saturating_mul(self.interval_ns));
        self.interval.reset(index, start, ext_max);
        self.interval.seq_received_at_start = self.seq.received;
    }
}

/// Counts SSRC changes on one (source, destination) pair: keep one beside
/// the streams of each 5-tuple and feed it every packet's SSRC. A change is
/// a packet whose SSRC differs from the previous packet's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SsrcChangeCounter {
    last: Option<Ssrc>,
    changes: u64,
}

impl SsrcChangeCounter {
    /// Accounts one packet's SSRC; returns true if it is a change.
    pub fn handle_ssrc(&mut self, ssrc: Ssrc) -> bool {
        let changed = self.last.is_some_and(|l| l != ssrc);
        self.last = Some(ssrc);
        if changed {
            self.changes += 1;
        }
        changed
    }

    /// SSRC changes so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn signed_pct(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Arrival minus media time, µs, with an arbitrary common origin.
fn transit_us(now_ns: u64, ext_ts: i64, rate: ClockRate) -> i64 {
    let rate = i64::from(rate.0.max(1));
    // 64-bit fast path (ext_ts below ~9e12 ticks: years of media); the
    // 128-bit division is several times slower.
    let media_us = match ext_ts.checked_mul(1_000_000) {
        Some(v) => v / rate,
        None => (i128::from(ext_ts) * 1_000_000 / i128::from(rate)) as i64,
    };
    ((now_ns / 1000) as i64).wrapping_sub(media_us)
}

/// How RFC 3550 A.1 classified a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqClass {
    First,
    /// Advanced by `gap` (1 = next in order).
    InOrder {
        gap: u16,
    },
    Duplicate,
    Late,
    /// A large jump, not (yet) believed.
    Rejected,
    /// Second sequential packet after a large jump: counting restarts.
    Restart,
}

//= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.1
//# const int MAX_DROPOUT = 3000;
//# const int MAX_MISORDER = 100;
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// RFC 3550 A.1 sequence tracking, extended with duplicate detection (a
/// bitmap of the last 128 sequence numbers) and totals that survive restarts.
#[derive(Clone, Copy, Debug, Default)]
struct SeqTracker {
    started: bool,
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: u32,
    received: u64,
    /// Expected packets of the sequences before the last restart.
    expected_before: u64,
    /// Extended max of the sequences before the last restart (for intervals).
    ext_before: u64,
    restarts: u64,
    jumps: u64,
    duplicates: u64,
    late: u64,
    /// Bit i set: sequence number `max_seq - i` was received.
    recent: u128,
    /// A.3 state of the last reception report.
    expected_prior: u64,
    received_prior: u64,
}

impl SeqTracker {
    fn init(&mut self, seq: u16) {
        self.base_seq = u64::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.recent = 1;
    }

    fn ext_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// A monotonic extended max across restarts (for interval deltas).
    fn ext_max_total(&self) -> u64 {
        if !self.started {
            return 0;
        }
        self.ext_before + (self.ext_max() + 1).saturating_sub(self.base_seq)
    }

    //= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.3
    //# expected = s->cycles + s->max_seq - s->base_seq + 1;
    fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        self.expected_before + (self.ext_max() + 1).saturating_sub(self.base_seq)
    }

    fn update(&mut self, seq: u16) -> SeqClass {
        if !self.started {
            // A passive analyser knows the stream from signalling: the first
            // packet is accepted without A.1's probation.
            self.started = true;
            self.init(seq);
            self.received = 1;
            return SeqClass::First;
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        //= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.1
        //# } else if (udelta < MAX_DROPOUT) {
        //#     /* in order, with permissible gap */
        if udelta == 0 {
            self.received += 1;
            self.duplicates += 1;
            SeqClass::Duplicate
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                //# /*
                //#  * Sequence number wrapped - count another 64K cycle.
                //#  */
                self.cycles += u64::from(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
            self.recent = if udelta >= 128 {
                1
            } else {
                (self.recent << udelta) | 1
            };
            self.received += 1;
            SeqClass::InOrder { gap: udelta }
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            //# /* the sequence number made a very large jump */
            //# if (seq == s->bad_seq) {
            //#     /*
            //#      * Two sequential packets -- assume that the other side
            //#      * restarted without telling us so just re-sync
            //#      * (i.e., pretend this was the first packet).
            //#      */
            if u32::from(seq) == self.bad_seq {
                self.expected_before = self.expected();
                self.ext_before = self.ext_max_total();
                self.init(seq);
                self.received += 1;
                self.restarts += 1;
                SeqClass::Restart
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                self.jumps += 1;
                SeqClass::Rejected
            }
        } else {
            //# /* duplicate or reordered packet */
            self.received += 1;
            let back = self.max_seq.wrapping_sub(seq);
            let bit = 1u128 << back.min(127);
            if back < 128 && self.recent & bit != 0 {
                self.duplicates += 1;
                SeqClass::Duplicate
            } else {
                if back < 128 {
                    self.recent |= bit;
                }
                self.late += 1;
                SeqClass::Late
            }
        }
    }
}

/// The state of Wireshark's `rtppacket_analyse` (ui/tap-rtp-analysis.c),
/// as tshark 4.0 behaves (quality/NOTES.md §2 and the module docs),
/// re-implemented from that description.
#[derive(Clone, Copy, Debug, Default)]
struct WiresharkState {
    total_nr: u64,
    start_seq: u16,
    stop_seq: u16,
    seq_num: u16,
    seq_cycles: u64,
    under: bool,
    seq_errors: u64,
    /// RTP timestamp of the stream's first packet.
    first_ts: u32,
    /// RTP timestamp of the last in-time packet that had a clock rate.
    nominal_ts: u32,
    /// Arrival (ms since the stream's first packet) of the last in-time
    /// packet of any kind.
    time_ms: f64,
    prev_cn: bool,
    delta: f64,
    jitter: f64,
    max_delta: f64,
    min_delta: Option<f64>,
    max_jitter: f64,
    mean_jitter: f64,
}

impl WiresharkState {
    fn expected(&self) -> i64 {
        if self.total_nr == 0 {
            return 0;
        }
        (i64::from(self.stop_seq) + (self.seq_cycles as i64).saturating_mul(65536))
            - i64::from(self.start_seq)
            + 1
    }

    fn handle(&mut self, now_ns: u64, pkt: &RtpPacketInfo, kind: PayloadKind, first_ns: u64) {
        let current = now_ns.wrapping_sub(first_ns) as i64 as f64 / 1e6;
        let is_cn = matches!(kind, PayloadKind::ComfortNoise(_));
        let seq = pkt.seq;
        if self.total_nr == 0 {
            self.start_seq = seq;
            self.stop_seq = seq;
            self.seq_num = seq;
            self.first_ts = pkt.timestamp;
            self.nominal_ts = pkt.timestamp;
            self.time_ms = current;
            self.prev_cn = is_cn;
            self.total_nr = 1;
            return;
        }
        // Timestamp order: the packet is "in time sequence" when its
        // timestamp lies within 2^31 after the first packet's.
        let nominal = |ts: u32| ts.wrapping_sub(self.first_ts);
        let in_time = nominal(pkt.timestamp) < 0x8000_0000;

        // Cycle counting, as Wireshark does it (relative to the first seq).
        if in_time && !self.under && (seq < self.start_seq || (seq == 0 && self.stop_seq == 65535))
        {
            self.seq_cycles += 1;
            self.under = true;
        } else if in_time && self.under && seq > self.start_seq {
            self.under = false;
        }

        if in_time && self.seq_num.wrapping_add(1) == seq {
            self.seq_num = seq;
        } else if in_time
            && (u32::from(self.seq_num) + 1 < u32::from(seq)
                || self.seq_num.wrapping_sub(seq) > 0xFF00)
        {
            self.seq_num = seq;
            self.seq_errors += 1;
        } else if u32::from(self.seq_num) + 1 > u32::from(seq) {
            self.seq_errors += 1;
        }

        let follows_cn = self.prev_cn;
        self.prev_cn = is_cn;

        let clock = match kind {
            PayloadKind::Audio(r) | PayloadKind::ComfortNoise(r) => r.0 / 1000,
            PayloadKind::TelephoneEvent(_) | PayloadKind::Unknown => 0,
        };
        let mut current_jitter = 0.0;
        if in_time {
            self.delta = current - self.time_ms;
            if clock != 0 {
                // The timestamp advance is taken from the last packet that
                // had a clock rate, the arrival from the last packet of any
                // kind: after telephone events this compares the next audio
                // packet with the event packet's arrival, as tshark does.
                let nominal_diff = (f64::from(nominal(pkt.timestamp))
                    - f64::from(nominal(self.nominal_ts)))
                    / f64::from(clock);
                let expected_time = self.time_ms + nominal_diff;
                let diff = (current - expected_time).abs();
                current_jitter = (15.0 * self.jitter + diff) / 16.0;
                self.jitter = current_jitter;
                self.nominal_ts = pkt.timestamp;
            }
        }

        let regular = !pkt.marker && !is_cn && in_time && !follows_cn;
        if regular {
            if self.delta > self.max_delta {
                self.max_delta = self.delta;
            }
            if self.min_delta.is_none_or(|m| self.delta < m) {
                self.min_delta = Some(self.delta);
            }
            if clock != 0 {
                if self.jitter > self.max_jitter {
                    self.max_jitter = self.jitter;
                }
                // n = all packets seen before this one.
                let n = self.total_nr as f64;
                self.mean_jitter = (self.mean_jitter * (n - 1.0) + current_jitter) / n;
            }
        }
        if in_time {
            self.time_ms = current;
        }
        self.stop_seq = seq;
        self.total_nr += 1;
    }
}

/// RFC 3550 A.8 interarrival jitter in arrival order.
#[derive(Clone, Copy, Debug, Default)]
struct RfcJitter {
    /// J, RTP timestamp units.
    jitter: f64,
    max_ms: f64,
    last_ns: u64,
    last_ext_ts: i64,
    last_rate: Option<ClockRate>,
}

impl RfcJitter {
    /// Updates J with one packet; returns |D| in timestamp units, or
    /// `None` for the first packet (or after a clock-rate change).
    fn update(&mut self, now_ns: u64, ext_ts: i64, rate: ClockRate) -> Option<f64> {
        let prev = self.last_rate.replace(rate);
        let (last_ns, last_ts) = (self.last_ns, self.last_ext_ts);
        self.last_ns = now_ns;
        self.last_ext_ts = ext_ts;
        if prev != Some(rate) {
            return None;
        }
        //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
        //# If Si is the RTP timestamp from packet i, and Ri is the time of
        //# arrival in RTP timestamp units for packet i, then for two packets
        //# i and j, D may be expressed as
        //#
        //#    D(i,j) = (Rj - Ri) - (Sj - Si) = (Rj - Sj) - (Ri - Si)
        let dt = now_ns.wrapping_sub(last_ns) as i64;
        let d = dt as f64 * f64::from(rate.0) / 1e9 - ext_ts.wrapping_sub(last_ts) as f64;
        //# J(i) = J(i-1) + (|D(i-1,i)| - J(i-1))/16
        //
        // Kept in floating point: the integer form of A.8 (J scaled by 16)
        // loses the fraction below 1/16 timestamp unit, and the vectors are
        // exact to 1e-3. The division by 16 compiles to a multiplication.
        let abs_d = d.abs();
        self.jitter += (abs_d - self.jitter) / 16.0;
        self.max_ms = self.max_ms.max(self.jitter_ms(rate));
        Some(abs_d)
    }

    fn jitter_ms(&self, rate: ClockRate) -> f64 {
        if rate.0 == 0 {
            0.0
        } else {
            self.jitter * 1000.0 / f64::from(rate.0)
        }
    }
}

/// Loss-run transitions of the 2-state (Gilbert) Markov model.
///
/// BurstR (ITU-T G.107 §7.4 and G.113 Appendix I, with the state model of
/// RFC 3611 Appendix A): with `p` the probability of moving from "found"
/// to "lost" and `q` from "lost" to "found",
/// `BurstR = 1 / (p + q)`, which is 1 for random loss (`q = 1 - p`) and
/// above 1 when losses cluster.
#[derive(Clone, Copy, Debug, Default)]
struct Markov {
    found_found: u64,
    found_lost: u64,
    lost_lost: u64,
    lost_found: u64,
}

impl Markov {
    /// One received packet that followed `lost` lost ones.
    fn record_run(&mut self, lost: u64) {
        if lost == 0 {
            self.found_found += 1;
        } else {
            self.found_lost += 1;
            self.lost_lost += lost - 1;
            self.lost_found += 1;
        }
    }

    fn burst_r(&self) -> f64 {
        let from_found = self.found_found + self.found_lost;
        let from_lost = self.lost_lost + self.lost_found;
        if self.found_lost == 0 || from_found == 0 || from_lost == 0 {
            return 1.0;
        }
        let p = self.found_lost as f64 / from_found as f64;
        let q = self.lost_found as f64 / from_lost as f64;
        1.0 / (p + q)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct IntervalState {
    index: u64,
    start_ns: u64,
    packets: u64,
    ext_max_at_start: u64,
    seq_received_at_start: u64,
    max_jitter_ms: f64,
    jitter_sum_ms: f64,
    jitter_n: u64,
    markov: Markov,
}

impl IntervalState {
    fn reset(&mut self, index: u64, start_ns: u64, ext_max: u64) {
        *self = Self {
            index,
            start_ns,
            ext_max_at_start: ext_max,
            ..Self::default()
        };
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct RemoteState {
    count: u64,
    last_ns: u64,
    max_jitter: u32,
    last: Option<RemoteReport>,
    last_xr: Option<RemoteVoipMetrics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCMU: PayloadKind = PayloadKind::Audio(ClockRate(8000));

    fn pkt(seq: u16, ts: u32, ms: u64) -> RtpPacketInfo {
        RtpPacketInfo {
            arrival: Timestamp(1_000_000_000_000 + ms * 1_000_000),
            seq,
            timestamp: ts,
            ssrc: Ssrc(7),
            payload_type: PayloadType::PCMU,
            marker: false,
            payload_len: 160,
        }
    }

    fn feed(s: &mut StreamStats, seqs: &[u16]) {
        for (i, &q) in seqs.iter().enumerate() {
            s.handle_packet(&pkt(q, u32::from(q) * 160, i as u64 * 20), PCMU);
        }
    }

    #[test]
    fn memory_is_bounded() {
        let size = core::mem::size_of::<StreamStats>();
        println!("StreamStats: {size} bytes");
        assert!(size <= 2048, "{size}");
    }

    #[test]
    fn dtmf_only_stream_like_sipp() {
        // SIPp dtmf_2833_*: one event, end packet sent 3 times with the same
        // seq; tshark reports 10 packets, lost -2 (-25 %), jitter 0.
        let ev = PayloadKind::TelephoneEvent(ClockRate(8000));
        let mut s = StreamStats::new();
        for (i, q) in [1u16, 2, 3, 4, 5, 6, 7, 8, 8, 8].into_iter().enumerate() {
            let mut p = pkt(q, 8000, i as u64 * 20);
            p.payload_type = PayloadType(101);
            p.marker = i == 0;
            s.handle_packet(&p, ev);
        }
        let r = s.report(Codec::G711Plc);
        assert_eq!((r.packets, r.ws_lost, r.rfc_lost), (10, -2, -2));
        assert!((r.ws_lost_pct + 25.0).abs() < 1e-9);
        assert_eq!((r.ws_max_jitter_ms, r.ws_mean_jitter_ms), (0.0, 0.0));
        assert!((r.ws_max_delta_ms - 20.0).abs() < 1e-9);
        assert_eq!((r.dtmf_events, r.duplicates), (1, 2));
    }

    #[test]
    fn jitter_buffers_on_delay_spikes() {
        // 20 ms packets; every 50th packet is 120 ms late, one 300 ms spike.
        let mut s = StreamStats::new();
        for i in 0..1000u64 {
            let q = i as u16;
            let late = match i {
                500 => 300,
                _ if i % 50 == 25 => 120,
                _ => 0,
            };
            s.handle_packet(&pkt(q, u32::from(q) * 160, i * 20 + late), PCMU);
        }
        let r = s.report(Codec::G711Plc);
        assert_eq!(r.rfc_lost, 0);
        assert_eq!(r.discards_f1, 21); // every spike
        assert_eq!(r.discards_f2, 1); // only the 300 ms one
        // Adaptive: the first 120 ms spike is lost and the buffer grows to
        // 130 ms. It shrinks by 1/4096 of the distance to 20 ms per calm
        // packet, so after ~400 packets it is below 120 ms again and loses
        // one more spike; then the 300 ms spike: 3 in all.
        assert_eq!(r.discards_adapt, 3);
        assert!(r.mos_f2 > r.mos_f1 && r.mos_adapt > r.mos_f1);
        assert_eq!(r.mos, emodel::mos(Codec::G711Plc, 0.0, 1.0, 0.0));
        // The spikes show in the delay-variation histogram (|D| = 120 ms).
        assert_eq!(r.delay_variation.counts[5], 40);
    }

    #[test]
    fn stray_packet_does_not_skew_playout() {
        let mut s = StreamStats::new();
        for i in 0..100u64 {
            s.handle_packet(&pkt(i as u16, i as u32 * 160, i * 20), PCMU);
            if i == 50 {
                // One stray packet from elsewhere: far seq, timestamp 1 s ahead.
                s.handle_packet(&pkt(40_000, (i as u32 + 50) * 160, i * 20 + 1), PCMU);
            }
        }
        let r = s.report(Codec::G711Plc);
        assert_eq!((r.seq_jumps, r.rfc_lost), (1, 0));
        assert_eq!((r.discards_f1, r.discards_f2, r.discards_adapt), (0, 0, 0));
    }

    #[test]
    fn interval_index_jumps_over_silence() {
        let mut s = StreamStats::new();
        let mut samples = Vec::new();
        for i in 0..10u64 {
            s.handle_packet(&pkt(i as u16, i as u32 * 160, i * 20), PCMU);
            samples.extend(s.poll_interval());
        }
        // 35 s later (sender kept its clock running).
        s.handle_packet(&pkt(10, 1750 * 160, 35_000), PCMU);
        samples.extend(s.poll_interval());
        assert_eq!(samples.len(), 1);
        assert_eq!((samples[0].index, samples[0].packets), (0, 10));
        assert_eq!(
            s.poll_timeout(),
            Some(Timestamp(1_000_000_000_000 + 40_000_000_000))
        );
    }

    #[test]
    fn wrap_is_counted() {
        let mut s = StreamStats::new();
        for i in 0..40u32 {
            s.handle_packet(&pkt((65520 + i) as u16, i * 160, u64::from(i) * 20), PCMU);
        }
        let r = s.report(Codec::G711Plc);
        assert_eq!(r.rfc_expected, 40);
        assert_eq!(r.rfc_lost, 0);
        assert_eq!(r.ws_lost, 0);
        assert_eq!(r.seq_restarts, 0);
    }

    #[test]
    fn loss_duplicate_and_reorder() {
        let mut s = StreamStats::new();
        // 3 lost (4,5,6 never come), 8 duplicated, 10/11 swapped.
        feed(&mut s, &[1, 2, 3, 7, 8, 8, 9, 11, 10, 12]);
        let r = s.report(Codec::G711Plc);
        assert_eq!(r.packets, 10);
        assert_eq!(r.rfc_expected, 12);
        assert_eq!(r.rfc_received, 10);
        assert_eq!(r.rfc_lost, 2); // 3 lost, 1 duplicate
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.late, 1);
        assert_eq!(r.ws_lost, 2);
        // Runs are taken from gaps at arrival: 10 is counted as a run of 1
        // when 11 arrives, then late (as a playout buffer would see it).
        assert_eq!(r.loss_runs.counts, [1, 0, 1, 0, 0, 0, 0]);
        assert!(r.ws_seq_errors >= 2);
    }

    #[test]
    fn negative_loss_with_duplicates() {
        let mut s = StreamStats::new();
        feed(&mut s, &[1, 2, 2, 2, 3]);
        assert_eq!(s.rfc_lost(), -2);
        assert_eq!(s.ws_lost(), -2);
    }

    #[test]
    fn restart_after_two_sequential() {
        let mut s = StreamStats::new();
        feed(&mut s, &[100, 101, 102, 30000, 30001, 30002]);
        let r = s.report(Codec::G711Plc);
        assert_eq!(r.seq_restarts, 1);
        assert_eq!(r.seq_jumps, 1);
        // 3 before + 2 after the restart point; the rejected packet is not
        // counted by A.1.
        assert_eq!(r.rfc_expected, 5);
        assert_eq!(r.rfc_received, 5);
        assert_eq!(r.rfc_lost, 0);
        assert_eq!(r.packets, 6);
        // A single stray packet is ignored, not a restart.
        let mut s = StreamStats::new();
        feed(&mut s, &[100, 101, 9000, 102, 103]);
        let r = s.report(Codec::G711Plc);
        assert_eq!((r.seq_restarts, r.seq_jumps, r.rfc_lost), (0, 1, 0));
    }

    #[test]
    fn burst_r_patterns() {
        // Random-like: isolated single losses every 10 packets.
        let mut m = Markov::default();
        for _ in 0..100 {
            for _ in 0..8 {
                m.record_run(0);
            }
            m.record_run(1);
        }
        // p = 100/900, q = 1: BurstR = 1/(1+1/9) = 0.9 (less bursty than random).
        assert!((m.burst_r() - 0.9).abs() < 1e-9);
        // Bursts of 5 lost after 45 received: p = 1/45, q = 1/5.
        let mut m = Markov::default();
        for _ in 0..50 {
            for _ in 0..44 {
                m.record_run(0);
            }
            m.record_run(5);
        }
        let want = 1.0 / (1.0 / 45.0 + 1.0 / 5.0);
        assert!((m.burst_r() - want).abs() < 1e-9);
        // No loss.
        assert_eq!(Markov::default().burst_r(), 1.0);
    }

    #[test]
    fn burst_r_from_stream() {
        let mut s = StreamStats::new();
        let seqs: Vec<u16> = (0..1000u16).filter(|q| q % 100 >= 10).collect();
        feed(&mut s, &seqs);
        // Bursts of 10 lost every 100: p = 1/90, q = 1/10 → BurstR = 9.
        assert!((s.burst_r() - 1.0 / (1.0 / 90.0 + 0.1)).abs() < 0.1);
        let r = s.report(Codec::G711Plc);
        assert_eq!(r.loss_runs.counts[5], 9);
        assert!(r.mos < emodel::mos(Codec::G711Plc, r.loss_pct, 1.0, 0.0));
    }

    #[test]
    fn interval_samples_with_virtual_time() {
        let mut s = StreamStats::new();
        let mut samples = Vec::new();
        // 25 s of 20 ms packets, seq 300..=309 lost (in the first interval).
        for i in 0..1250u64 {
            let q = i as u16;
            if (300..310).contains(&q) {
                continue;
            }
            s.handle_packet(&pkt(q, u32::from(q) * 160, i * 20), PCMU);
            samples.extend(s.poll_interval());
        }
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].index, 0);
        assert_eq!(samples[0].packets, 490);
        assert_eq!(samples[0].lost, 10);
        assert!(samples[0].mos < samples[1].mos);
        assert_eq!(samples[1].packets, 500);
        assert_eq!(samples[1].lost, 0);
        assert!((samples[1].mos - 4.409).abs() < 0.001);
        // Idle: the timeout closes the third interval.
        let t = s.poll_timeout().unwrap();
        assert_eq!(t.0, 1_000_000_000_000 + 30 * 1_000_000_000);
        s.handle_timeout(Timestamp(t.0 - 1));
        assert!(s.poll_interval().is_none());
        s.handle_timeout(t);
        let last = s.poll_interval().unwrap();
        assert_eq!((last.index, last.packets), (2, 250));
    }

    #[test]
    fn events_and_cn_are_counted() {
        let mut s = StreamStats::new();
        let ev = PayloadKind::TelephoneEvent(ClockRate(8000));
        let cn = PayloadKind::ComfortNoise(ClockRate(8000));
        s.handle_packet(&pkt(1, 160, 0), PCMU);
        for (q, t) in [(2u16, 320), (3, 320), (4, 320), (5, 960), (6, 960)] {
            let mut p = pkt(q, t, u64::from(q) * 20);
            p.payload_type = PayloadType(101);
            s.handle_packet(&p, ev);
        }
        let mut p = pkt(7, 1120, 140);
        p.payload_type = PayloadType::CN;
        s.handle_packet(&p, cn);
        let r = s.report(Codec::G711Plc);
        assert_eq!(r.telephone_event_packets, 5);
        assert_eq!(r.dtmf_events, 2);
        assert_eq!(r.comfort_noise_packets, 1);
        assert_eq!(r.payload_types, vec![0, 13, 101]);
        assert_eq!(r.payload_type_changes, 2);
    }

    #[test]
    fn remote_figures_stay_beside_ours() {
        let mut s = StreamStats::new();
        feed(&mut s, &[1, 2, 3]);
        s.handle_rtcp_report(
            Timestamp(5),
            RemoteReport {
                fraction_lost: 64,
                cumulative_lost: 12,
                jitter: 80,
                voip_metrics: Some(RemoteVoipMetrics {
                    r_factor: Some(80),
                    mos_lq: Some(4.1),
                    ..RemoteVoipMetrics::default()
                }),
            },
        );
        let r = s.report(Codec::G711Plc);
        assert_eq!(r.remote_fraction_lost_pct, Some(25.0));
        assert_eq!(r.remote_cumulative_lost, Some(12));
        assert_eq!(r.remote_jitter_ms, Some(10.0));
        assert_eq!(r.remote_r_factor, Some(80.0));
        assert_eq!(r.rfc_lost, 0);
        assert!(r.mos > 4.4);
    }

    #[test]
    fn reception_loss_per_report() {
        let mut s = StreamStats::new();
        feed(&mut s, &[1, 2, 3, 4]);
        assert_eq!(
            s.poll_reception_loss(),
            ReceptionLoss {
                fraction_lost: 0,
                cumulative_lost: 0
            }
        );
        // 5..=8 then 10, 12: 2 of 8 expected lost → 64/256.
        for (i, q) in [5u16, 6, 7, 8, 10, 12].into_iter().enumerate() {
            s.handle_packet(&pkt(q, u32::from(q) * 160, 100 + i as u64 * 20), PCMU);
        }
        assert_eq!(
            s.poll_reception_loss(),
            ReceptionLoss {
                fraction_lost: 64,
                cumulative_lost: 2
            }
        );
        // Duplicates only: negative interval loss reports fraction 0.
        for _ in 0..3 {
            s.handle_packet(&pkt(12, 12 * 160, 300), PCMU);
        }
        assert_eq!(
            s.poll_reception_loss(),
            ReceptionLoss {
                fraction_lost: 0,
                cumulative_lost: -1
            }
        );
    }

    #[test]
    fn ssrc_changes() {
        let mut c = SsrcChangeCounter::default();
        for s in [1, 1, 2, 2, 1] {
            let _ = c.handle_ssrc(Ssrc(s));
        }
        assert_eq!(c.changes(), 2);
    }
}
