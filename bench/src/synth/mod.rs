//! A seeded, deterministic generator of SIP + RTP call captures, with the
//! ground truth of every stream.
//!
//! Each call is an INVITE (with SDP) → 100 Trying → 180 Ringing → 200 OK
//! (with SDP) → ACK exchange over UDP port 5060, two RTP streams (one per
//! direction, 20 ms packets of PCMU, PCMA or G.729, optionally with silence
//! suppression), RTCP SR or RR + SDES compound packets on the odd ports,
//! optional RFC 4733 DTMF bursts from the caller, and BYE → 200 OK from a
//! random side. Addresses come from the
//! documentation ranges: callers in 192.0.2.0/24, callees in 198.18.0.0/15,
//! or both in 2001:db8::/32 for IPv6 calls.
//!
//! Each RTP leg crosses its own impaired path ([`GilbertElliott`] loss and a
//! [`JitterModel`] delay) and frames carry their *arrival* times: the
//! capture point sits at the receiving end of each leg. Frames come out in
//! arrival order. The generator keeps only the active calls and the packets
//! in flight: call schedules are merged with a heap keyed by send time, and
//! generated frames wait in a second heap keyed by arrival time until no
//! source can still produce an earlier one. Memory is O(concurrent calls ×
//! packets in flight) plus O(calls) for the ground truth.
//!
//! The same [`SynthConfig`] (seed included) always yields the same bytes on
//! the same platform and build: all randomness comes from seeded
//! [`SmallRng`]s and no clock is read.
//!
//! ```no_run
//! use bench::synth::{SynthConfig, write_pcap_file};
//! let config = SynthConfig { calls: 10, ..SynthConfig::default() };
//! let truth = write_pcap_file(&config, "/tmp/calls.pcap")?;
//! for s in &truth.streams {
//!     println!("{} {} sent={} received={}", s.call_id, s.ssrc, s.sent, s.received);
//! }
//! # Ok::<(), bench::synth::SynthError>(())
//! ```

pub mod frame;
pub mod model;
mod packets;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use wire::{ClockRate, PayloadType, Ssrc, Timestamp};

pub use frame::build_frame;
pub use model::{GilbertElliott, JitterModel, LossPreset, LossState, PathState};
pub use packets::TELEPHONE_EVENT_PT;

use packets::{Dialog, ReportBlock, RtpHeader, SenderInfo, SipStep};

/// The audio codecs the synthesizer can negotiate (all 8 kHz, 20 ms ptime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, PT 0, 160 bytes per packet.
    Pcmu,
    /// G.711 A-law, PT 8, 160 bytes per packet.
    Pcma,
    /// G.729 (Annex B off), PT 18, 20 bytes per packet.
    G729,
}

impl Codec {
    /// The static payload type (RFC 3551).
    pub fn payload_type(self) -> PayloadType {
        match self {
            Self::Pcmu => PayloadType::PCMU,
            Self::Pcma => PayloadType::PCMA,
            Self::G729 => PayloadType::G729,
        }
    }

    /// The encoding name used in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G729 => "G729",
        }
    }

    /// RTP payload bytes per 20 ms packet.
    pub fn payload_len(self) -> usize {
        match self {
            Self::Pcmu | Self::Pcma => 160,
            Self::G729 => 20,
        }
    }

    /// The RTP clock rate (8 kHz for all three).
    pub fn clock_rate(self) -> ClockRate {
        ClockRate::NARROWBAND
    }
}

/// Packet interval (ptime) of every stream, in nanoseconds.
pub const PTIME_NS: u64 = 20_000_000;
/// RTP timestamp ticks per packet at 8 kHz and 20 ms.
pub const TICKS_PER_PACKET: u32 = 160;

/// RFC 4733 DTMF bursts sent by callers.
#[derive(Clone, Debug, PartialEq)]
pub struct DtmfConfig {
    /// Fraction of calls (0–1) whose caller sends digits.
    pub call_share: f64,
    /// Number of digits per such call, drawn uniformly from this range.
    pub digits: (u32, u32),
    /// Duration of one digit (ms), drawn uniformly; rounded to whole packets,
    /// at least 3.
    pub digit_ms: (u32, u32),
    /// Pause between digits (ms), drawn uniformly.
    pub gap_ms: (u32, u32),
}

impl Default for DtmfConfig {
    fn default() -> Self {
        Self {
            call_share: 0.1,
            digits: (1, 6),
            digit_ms: (80, 200),
            gap_ms: (60, 300),
        }
    }
}

/// Everything that shapes a synthetic capture.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Total number of calls.
    pub calls: u32,
    /// Maximum number of simultaneous calls (≥ 1). Calls run in this many
    /// "slots"; a slot starts its next call after the previous one ended.
    pub concurrent: u32,
    /// Talk time (200 OK → BYE) per call in ms, drawn uniformly.
    pub duration_ms: (u32, u32),
    /// Ringing time (180 → 200 OK) in ms, drawn uniformly.
    pub ring_ms: (u32, u32),
    /// Codec mix: each call picks a codec with probability proportional to
    /// its weight.
    pub codecs: Vec<(Codec, u32)>,
    /// How each RTP leg's loss model is chosen.
    pub loss: LossPreset,
    /// Delay model of every leg.
    pub jitter: JitterModel,
    /// DTMF bursts.
    pub dtmf: DtmfConfig,
    /// Fraction of calls (0–1) carried over IPv6.
    pub ipv6_share: f64,
    /// Fraction of streams (0–1) whose initial sequence number lies within
    /// 300 of 65535, so the stream wraps.
    pub wrap_share: f64,
    /// Fraction of streams (0–1) whose sender uses voice activity detection:
    /// talkspurts (exponential, mean 2 s) alternate with silences
    /// (exponential, mean 1.5 s) during which no packet is sent, the RTP
    /// timestamp runs on, the sequence number does not, and the first packet
    /// of the next talkspurt carries the marker bit (RFC 3551 §4.1). No
    /// comfort noise is sent. A silence is not loss.
    pub vad_share: f64,
    /// Mean RTCP interval per sender in ms (each interval is drawn from
    /// 0.5–1.5 × this, RFC 3550 §6.3.1); 0 disables RTCP.
    pub rtcp_interval_ms: u32,
    /// Time of the capture's start.
    pub start: Timestamp,
    /// Each slot's first call starts uniformly within this many ms of
    /// `start`, and idles as long between calls.
    pub arrival_spread_ms: u32,
}

impl Default for SynthConfig {
    /// 100 calls, 10 at a time, 5–15 s each, an even PCMU/PCMA/G.729 mix,
    /// lossy legs, typical jitter, 10 % of calls with DTMF, 10 % IPv6,
    /// 10 % of streams with silence suppression,
    /// starting 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self {
            seed: 1,
            calls: 100,
            concurrent: 10,
            duration_ms: (5_000, 15_000),
            ring_ms: (300, 2_000),
            codecs: vec![(Codec::Pcmu, 1), (Codec::Pcma, 1), (Codec::G729, 1)],
            loss: LossPreset::LOSSY,
            jitter: JitterModel::TYPICAL,
            dtmf: DtmfConfig::default(),
            ipv6_share: 0.1,
            wrap_share: 0.2,
            vad_share: 0.1,
            rtcp_interval_ms: 5_000,
            start: Timestamp::from_secs_nanos(1_767_225_600, 0),
            arrival_spread_ms: 1_000,
        }
    }
}

/// Why a capture could not be generated or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// A configuration field is out of range (the field is named).
    #[error("invalid synthesizer configuration: {0}")]
    InvalidConfig(&'static str),
    /// Writing the capture failed.
    #[error("cannot write capture: {0}")]
    Io(#[from] std::io::Error),
    /// The pcap writer failed.
    #[error("cannot write pcap: {0}")]
    Pcap(#[from] pcap_file::PcapError),
}

/// One captured frame: arrival time and Ethernet frame bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Arrival (capture) time; a whole number of microseconds.
    pub timestamp: Timestamp,
    /// Ethernet II frame.
    pub data: Vec<u8>,
}

/// Which way an RTP stream flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the caller (the INVITE's sender) to the callee.
    CallerToCallee,
    /// Sent by the callee to the caller.
    CalleeToCaller,
}

/// What really happened to one RTP stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamTruth {
    /// Index of the call in [`GroundTruth::calls`].
    pub call_index: u32,
    /// The SIP Call-ID of the call.
    pub call_id: String,
    /// Direction within the call.
    pub direction: Direction,
    /// Source address and port (the sender's SDP media address).
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The stream's SSRC.
    pub ssrc: Ssrc,
    /// Audio payload type (telephone-events use [`TELEPHONE_EVENT_PT`]).
    pub payload_type: PayloadType,
    /// Audio codec.
    pub codec: Codec,
    /// Sequence number of the first packet sent.
    pub first_seq: u16,
    /// RTP packets sent (audio and telephone-event).
    pub sent: u64,
    /// Packets dropped by the leg's loss model.
    pub lost_in_network: u64,
    /// Packets in the capture, duplicates included.
    pub received: u64,
    /// Extra copies of packets in the capture.
    pub duplicates: u64,
    /// Packets that arrived after a packet with a higher sequence number
    /// (duplicates not counted).
    pub reordered: u64,
    /// DTMF digits sent.
    pub dtmf_events: u32,
    /// RFC 4733 packets sent (including the repeated end packets).
    pub dtmf_packets: u64,
    /// RTCP compound packets sent by this stream's sender.
    pub rtcp_sent: u64,
    /// RTCP compound packets whose first report was an RR (the sender had
    /// sent no RTP in its last two report intervals, RFC 3550 §6.4).
    pub rtcp_rr_sent: u64,
    /// True if the sender suppresses silence (see [`SynthConfig::vad_share`]).
    pub vad: bool,
    /// Silences (gaps without packets) the sender went through.
    pub silences: u32,
    /// The leg's loss model.
    pub loss_model: GilbertElliott,
    /// The leg's base one-way delay (ms).
    pub base_delay_ms: f64,
    /// Arrival of the first captured packet.
    pub first_arrival: Option<Timestamp>,
    /// Arrival of the last captured packet.
    pub last_arrival: Option<Timestamp>,
    /// Lowest extended sequence number captured (first_seq-relative
    /// widening: `first_seq + packets sent before it`).
    pub min_ext_seq: Option<u64>,
    /// Highest extended sequence number captured.
    pub max_ext_seq: Option<u64>,
    /// Extended sequence number of the first packet captured (RFC 3550
    /// A.1's `base_seq`: a receiver counts from the first packet it sees,
    /// even if an earlier one arrives later).
    pub first_ext_seq: Option<u64>,
    /// RFC 3550 §6.4.1 interarrival jitter at the end of the stream (ms),
    /// computed in arrival order over audio packets (duplicates included,
    /// telephone-events not).
    pub jitter_ms: f64,
}

impl StreamTruth {
    /// Packets a receiver expects from what it saw: highest captured
    /// extended sequence number minus the first captured one, plus one
    /// (RFC 3550 A.1/A.3).
    pub fn expected(&self) -> u64 {
        match (self.first_ext_seq, self.max_ext_seq) {
            (Some(base), Some(hi)) => hi - base + 1,
            _ => 0,
        }
    }

    /// Loss as a receiver computes it: expected minus captured packets
    /// (duplicates included, as RFC 3550 A.3 counts them, so it can be
    /// negative). Differs from [`lost_in_network`](Self::lost_in_network)
    /// when the first or last packets were lost.
    pub fn apparent_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }
}

/// What really happened in one call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallTruth {
    /// Index of the call (order of INVITEs).
    pub index: u32,
    /// SIP Call-ID.
    pub call_id: String,
    /// Caller's SIP address.
    pub caller: SocketAddr,
    /// Callee's SIP address.
    pub callee: SocketAddr,
    /// True for an IPv6 call.
    pub ipv6: bool,
    /// Negotiated audio codec.
    pub codec: Codec,
    /// INVITE send time.
    pub invite_at: Timestamp,
    /// 200 OK send time.
    pub answer_at: Timestamp,
    /// BYE send time.
    pub hangup_at: Timestamp,
    /// Arrival of the 200 OK to the BYE.
    pub end_at: Timestamp,
    /// True if the caller sent the BYE.
    pub hung_up_by_caller: bool,
    /// DTMF digits sent by the caller, in order.
    pub dtmf_digits: String,
    /// Indices in [`GroundTruth::streams`]: caller→callee, callee→caller.
    pub streams: [usize; 2],
}

/// Ground truth of a whole capture.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroundTruth {
    /// Every call, by index.
    pub calls: Vec<CallTruth>,
    /// Every RTP stream (two per call).
    pub streams: Vec<StreamTruth>,
    /// Frames produced.
    pub frames: u64,
    /// Sum of frame lengths (bytes).
    pub frame_bytes: u64,
    /// SIP messages produced.
    pub sip_messages: u64,
    /// RTP frames produced (duplicates included).
    pub rtp_packets: u64,
    /// RTCP frames produced.
    pub rtcp_packets: u64,
    /// Peak number of calls in progress at once.
    pub max_concurrent_calls: u32,
}

/// The generator: an iterator of [`Frame`]s in arrival order. Once it is
/// exhausted, [`Synth::truth`] is final.
pub struct Synth {
    cfg: SynthConfig,
    rng: SmallRng,
    sources: BinaryHeap<Reverse<(u64, u64, Source)>>,
    calls: Vec<Option<CallState>>,
    free: Vec<usize>,
    pending: BinaryHeap<Pending>,
    rx: Vec<RxTrack>,
    order: u64,
    next_call: u32,
    active: u32,
    codec_total: u32,
    truth: GroundTruth,
}

impl Synth {
    /// Validates `config` and prepares the generator.
    ///
    /// # Errors
    ///
    /// [`SynthError::InvalidConfig`] naming the first bad field.
    pub fn new(config: &SynthConfig) -> Result<Self, SynthError> {
        validate(config)?;
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut sources = BinaryHeap::new();
        let mut order = 0;
        let start = config.start.0;
        for slot in 0..config.concurrent.min(config.calls) {
            let at = start + ms_rand(&mut rng, 0, config.arrival_spread_ms);
            sources.push(Reverse((at, order, Source::Slot(slot))));
            order += 1;
        }
        Ok(Self {
            codec_total: config.codecs.iter().map(|c| c.1).sum(),
            cfg: config.clone(),
            rng,
            sources,
            calls: Vec::new(),
            free: Vec::new(),
            pending: BinaryHeap::new(),
            rx: Vec::new(),
            order,
            next_call: 0,
            active: 0,
            truth: GroundTruth::default(),
        })
    }

    /// The ground truth so far; complete once the iterator returned `None`.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Consumes the generator and returns its ground truth.
    pub fn into_truth(self) -> GroundTruth {
        self.truth
    }

    /// Frames generated but not yet returned (waiting for their arrival
    /// time): the generator's working set, for memory checks.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

impl Iterator for Synth {
    type Item = Frame;

    fn next(&mut self) -> Option<Frame> {
        loop {
            let horizon = self.sources.peek().map_or(u64::MAX, |s| s.0.0);
            if self.pending.peek().is_some_and(|p| p.at <= horizon) {
                let p = self.pending.pop()?;
                return Some(self.deliver(p));
            }
            if self.sources.is_empty() {
                return None;
            }
            self.step();
        }
    }
}

/// Generates the capture described by `config` into `out` as a classic
/// pcap (Ethernet link type, microsecond timestamps, little-endian) and
/// returns its ground truth. Frames are streamed; `out` is not buffered
/// here (wrap it in a `BufWriter`).
///
/// # Errors
///
/// [`SynthError::InvalidConfig`] for a bad configuration; I/O and pcap
/// errors from the writer.
pub fn write_pcap<W: Write>(config: &SynthConfig, out: W) -> Result<GroundTruth, SynthError> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        snaplen: 65_535,
        ..PcapHeader::default()
    };
    let mut synth = Synth::new(config)?;
    let mut writer = PcapWriter::with_header(out, header)?;
    for f in synth.by_ref() {
        let ts = Duration::new(f.timestamp.secs(), f.timestamp.subsec_nanos());
        let len = f.data.len() as u32;
        writer.write_packet(&PcapPacket::new(ts, len, &f.data))?;
    }
    writer.into_writer().flush()?;
    Ok(synth.into_truth())
}

/// [`write_pcap`] into a new file at `path` (buffered).
///
/// # Errors
///
/// As [`write_pcap`], plus failure to create the file.
pub fn write_pcap_file(
    config: &SynthConfig,
    path: impl AsRef<Path>,
) -> Result<GroundTruth, SynthError> {
    let file = File::create(path)?;
    write_pcap(config, BufWriter::with_capacity(1 << 20, file))
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// A slot whose next call starts now.
    Slot(u32),
    /// An active call (index into `Synth::calls`).
    Call(usize),
}

/// A generated frame waiting for its arrival time. Ordered so that the
/// max-heap pops the earliest arrival first, ties in generation order.
struct Pending {
    at: u64,
    order: u64,
    data: Vec<u8>,
    tag: Tag,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.order == other.order
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

#[derive(Clone, Copy, Debug)]
enum Tag {
    Sip,
    Rtcp,
    Rtp {
        stream: usize,
        ext_seq: u64,
        rtp_ts: u32,
        audio: bool,
        duplicate: bool,
    },
}

/// Arrival-order receiver state of one stream, for the ground truth.
#[derive(Clone, Copy, Debug, Default)]
struct RxTrack {
    max_ext: Option<u64>,
    last_transit: Option<f64>,
    jitter: f64,
}

/// Receiver statistics of one stream as its receiver would report them in
/// RTCP (send order; packets still in flight count as received).
#[derive(Clone, Copy, Debug, Default)]
struct RxReport {
    received: u64,
    base_ext: Option<u64>,
    max_ext: u64,
    expected_prior: u64,
    received_prior: u64,
}

#[derive(Clone, Copy, Debug)]
enum Vad {
    /// Talking until this time (0: the first packet starts the talkspurt).
    Talk { until: u64 },
    /// Silent until this time.
    Silent { until: u64 },
}

/// Mean talkspurt length with VAD (ms).
const TALKSPURT_MEAN_MS: f64 = 2_000.0;
/// Mean silence length with VAD (ms).
const SILENCE_MEAN_MS: f64 = 1_500.0;

struct EventProgress {
    code: u8,
    ts: u32,
    updates: u32,
    sent: u32,
}

struct StreamState {
    truth: usize,
    src: SocketAddr,
    dst: SocketAddr,
    ssrc: Ssrc,
    codec: Codec,
    ext_seq: u64,
    ts: u32,
    next_send: u64,
    stop_at: u64,
    marker: bool,
    /// With VAD: end of the current talkspurt, or of the current silence.
    vad: Option<Vad>,
    /// RTP sent since the last RTCP report.
    sent_since_report: bool,
    /// RTP sent in the interval before that (SR if either, else RR).
    sent_interval_before: bool,
    loss: GilbertElliott,
    loss_state: LossState,
    path: PathState,
    dtmf: VecDeque<(u64, char, u32)>,
    event: Option<EventProgress>,
    packets: u32,
    octets: u32,
    ip_id: u16,
    rx: RxReport,
}

struct CallState {
    index: u32,
    slot: u32,
    rng: SmallRng,
    dialog: Dialog,
    sip: VecDeque<(u64, SipStep)>,
    streams: [StreamState; 2],
    rtcp_next: [u64; 2],
    /// Last SR each side received: (middle 32 bits of its NTP time, arrival).
    last_sr: [Option<(u32, u64)>; 2],
    end_at: u64,
    ip_id: u16,
}

impl CallState {
    fn next_time(&self) -> u64 {
        let sip = self.sip.front().map_or(u64::MAX, |s| s.0);
        sip.min(self.streams[0].next_send)
            .min(self.streams[1].next_send)
            .min(self.rtcp_next[0])
            .min(self.rtcp_next[1])
    }
}

impl Synth {
    fn push_pending(
        &mut self,
        at: u64,
        src: SocketAddr,
        dst: SocketAddr,
        ip_id: u16,
        payload: &[u8],
        tag: Tag,
    ) {
        let mut data = Vec::with_capacity(payload.len() + 62);
        // Every caller pairs addresses of one family (both taken from the
        // same call's plan) and payloads are < 2 KiB, so building cannot fail.
        build_frame(&mut data, src, dst, ip_id, payload)
            .expect("synthesizer frames have one address family and small payloads");
        self.pending.push(Pending {
            at,
            order: self.order,
            data,
            tag,
        });
        self.order += 1;
    }

    fn deliver(&mut self, p: Pending) -> Frame {
        self.truth.frames += 1;
        self.truth.frame_bytes += p.data.len() as u64;
        match p.tag {
            Tag::Sip => self.truth.sip_messages += 1,
            Tag::Rtcp => self.truth.rtcp_packets += 1,
            Tag::Rtp {
                stream,
                ext_seq,
                rtp_ts,
                audio,
                duplicate,
            } => {
                self.truth.rtp_packets += 1;
                let s = &mut self.truth.streams[stream];
                let rx = &mut self.rx[stream];
                let at = Timestamp(p.at);
                s.received += 1;
                s.first_arrival.get_or_insert(at);
                s.first_ext_seq.get_or_insert(ext_seq);
                s.last_arrival = Some(at);
                s.min_ext_seq = Some(s.min_ext_seq.map_or(ext_seq, |m| m.min(ext_seq)));
                s.max_ext_seq = Some(s.max_ext_seq.map_or(ext_seq, |m| m.max(ext_seq)));
                if duplicate {
                    s.duplicates += 1;
                } else {
                    if rx.max_ext.is_some_and(|m| ext_seq < m) {
                        s.reordered += 1;
                    }
                    rx.max_ext = Some(rx.max_ext.map_or(ext_seq, |m| m.max(ext_seq)));
                }
                {
                    // RFC 3550 A.8 runs on every data packet received,
                    // duplicates included.
                    if audio {
                        //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
                        //# J(i) = J(i-1) + (|D(i-1,i)| - J(i-1))/16
                        let arrival = p.at as f64 * 8000.0 / 1e9;
                        let transit = arrival - f64::from(rtp_ts);
                        if let Some(last) = rx.last_transit {
                            let mut d = (transit - last).abs();
                            // Timestamps wrap at 2^32 ticks.
                            if d > 2_147_483_648.0 {
                                d = (d - 4_294_967_296.0).abs();
                            }
                            rx.jitter += (d - rx.jitter) / 16.0;
                        }
                        rx.last_transit = Some(transit);
                        s.jitter_ms = rx.jitter / 8.0;
                    }
                }
            }
        }
        Frame {
            timestamp: Timestamp(p.at),
            data: p.data,
        }
    }

    fn step(&mut self) {
        let Some(Reverse((now, _, source))) = self.sources.pop() else {
            return;
        };
        match source {
            Source::Slot(slot) => {
                // Several slots may have been re-armed while the last calls
                // were still to start: only as many calls as configured.
                if self.next_call < self.cfg.calls {
                    let idx = self.start_call(slot, now);
                    self.reschedule(idx, now);
                }
            }
            Source::Call(idx) => {
                self.call_event(idx, now);
                self.reschedule(idx, now);
            }
        }
    }

    fn reschedule(&mut self, idx: usize, now: u64) {
        let Some(call) = self.calls[idx].as_ref() else {
            return;
        };
        let next = call.next_time();
        if next != u64::MAX {
            self.sources
                .push(Reverse((next, self.order, Source::Call(idx))));
            self.order += 1;
            return;
        }
        let (slot, end_at) = (call.slot, call.end_at);
        self.calls[idx] = None;
        self.free.push(idx);
        self.active -= 1;
        if self.next_call < self.cfg.calls {
            let gap = ms_rand(&mut self.rng, 0, self.cfg.arrival_spread_ms);
            // Sources must never go back in time (see `next`).
            let at = end_at.max(now) + gap;
            self.sources
                .push(Reverse((at, self.order, Source::Slot(slot))));
            self.order += 1;
        }
    }

    fn start_call(&mut self, slot: u32, t0: u64) -> usize {
        let index = self.next_call;
        self.next_call += 1;
        self.active += 1;
        self.truth.max_concurrent_calls = self.truth.max_concurrent_calls.max(self.active);
        let cfg = &self.cfg;
        let mut rng = SmallRng::seed_from_u64(self.rng.next_u64());

        let ipv6 = cfg.ipv6_share > 0.0 && rng.gen_bool(cfg.ipv6_share);
        let (caller_ip, callee_ip) = addresses(index, ipv6);
        let caller_sip = SocketAddr::new(caller_ip, 5060);
        let callee_sip = SocketAddr::new(callee_ip, 5060);
        let caller_media = SocketAddr::new(caller_ip, rng.gen_range(5_000..30_000) * 2);
        let callee_media = SocketAddr::new(callee_ip, rng.gen_range(5_000..30_000) * 2);
        let codec = pick_codec(&cfg.codecs, self.codec_total, &mut rng);
        let call_id = format!("{:016x}@synth.invalid", rng.next_u64());
        let dialog = Dialog {
            call_id: call_id.clone(),
            caller_sip,
            callee_sip,
            caller_user: format!("+1555010{:04}", index % 10_000),
            callee_user: format!("+1555020{:04}", (index * 7 + 3) % 10_000),
            from_tag: format!("{:08x}", rng.next_u32()),
            to_tag: format!("{:08x}", rng.next_u32()),
            branch: format!("{:012x}", rng.next_u64() >> 16),
            caller_media,
            callee_media,
            pt: codec.payload_type(),
            codec_name: codec.name(),
            session_id: u64::from(rng.next_u32()),
        };

        let mut streams = [
            self.new_stream(
                &mut rng,
                index,
                &call_id,
                Direction::CallerToCallee,
                caller_media,
                callee_media,
                codec,
            ),
            self.new_stream(
                &mut rng,
                index,
                &call_id,
                Direction::CalleeToCaller,
                callee_media,
                caller_media,
                codec,
            ),
        ];
        let cfg = &self.cfg;
        let d_ab = streams[0].path.base_ns();
        let d_ba = streams[1].path.base_ns();

        // Signalling timeline (send times).
        let invite = t0;
        let trying = t0 + d_ab + 500_000;
        let ringing = t0 + d_ab + ms_rand(&mut rng, 30, 200);
        let answer = ringing + ms_rand(&mut rng, cfg.ring_ms.0, cfg.ring_ms.1);
        let ack = answer + d_ba + 1_000_000;
        let talk = ms_rand(&mut rng, cfg.duration_ms.0, cfg.duration_ms.1);
        let hangup = answer + talk;
        let by_caller = rng.gen_bool(0.5);
        let to_other = if by_caller { d_ab } else { d_ba };
        let bye_ok = hangup + to_other + 1_000_000;
        let back = if by_caller { d_ba } else { d_ab };
        let end_at = bye_ok + back;

        // Media: the callee starts when it answers, the caller when the
        // 200 OK reaches it; the hanging-up side stops at once, the other
        // when the BYE arrives.
        streams[1].next_send = answer + 10_000_000;
        streams[0].next_send = answer + d_ba + ms_rand(&mut rng, 0, 20);
        let (stop_caller, stop_callee) = if by_caller {
            (hangup, hangup + d_ab)
        } else {
            (hangup + d_ba, hangup)
        };
        streams[0].stop_at = stop_caller;
        streams[1].stop_at = stop_callee;

        // DTMF plan for the caller's stream.
        let mut digits = String::new();
        let dtmf = &cfg.dtmf;
        if dtmf.call_share > 0.0 && rng.gen_bool(dtmf.call_share) {
            let n = rng.gen_range(dtmf.digits.0..=dtmf.digits.1);
            let mut at = streams[0].next_send + ms_rand(&mut rng, 500, 2_000);
            for _ in 0..n {
                let dur = rng.gen_range(dtmf.digit_ms.0..=dtmf.digit_ms.1).max(60);
                // Whole packets, plus the two repeated end packets.
                if at + u64::from(dur + 100) * 1_000_000 >= stop_caller {
                    break;
                }
                let digit = b"0123456789*#"[rng.gen_range(0..12)] as char;
                digits.push(digit);
                streams[0].dtmf.push_back((at, digit, dur));
                at += u64::from(dur + 40) * 1_000_000
                    + ms_rand(&mut rng, dtmf.gap_ms.0, dtmf.gap_ms.1);
            }
        }

        let mut rtcp_next = [u64::MAX; 2];
        if self.cfg.rtcp_interval_ms > 0 {
            for (i, next) in rtcp_next.iter_mut().enumerate() {
                let at = streams[i].next_send + self.rtcp_interval(&mut rng);
                if at < streams[i].stop_at {
                    *next = at;
                }
            }
        }

        self.truth.calls.push(CallTruth {
            index,
            call_id,
            caller: caller_sip,
            callee: callee_sip,
            ipv6,
            codec,
            invite_at: Timestamp(invite),
            answer_at: Timestamp(answer),
            hangup_at: Timestamp(hangup),
            end_at: Timestamp(end_at),
            hung_up_by_caller: by_caller,
            dtmf_digits: digits,
            streams: [streams[0].truth, streams[1].truth],
        });

        let sip = VecDeque::from([
            (invite, SipStep::Invite),
            (trying, SipStep::Trying),
            (ringing, SipStep::Ringing),
            (answer, SipStep::Ok),
            (ack, SipStep::Ack),
            (hangup, SipStep::Bye(by_caller)),
            (bye_ok, SipStep::ByeOk(by_caller)),
        ]);
        let call = CallState {
            index,
            slot,
            rng,
            dialog,
            sip,
            streams,
            rtcp_next,
            last_sr: [None; 2],
            end_at,
            ip_id: 0,
        };
        if let Some(idx) = self.free.pop() {
            self.calls[idx] = Some(call);
            idx
        } else {
            self.calls.push(Some(call));
            self.calls.len() - 1
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one call site, all plan fields")]
    fn new_stream(
        &mut self,
        rng: &mut SmallRng,
        call_index: u32,
        call_id: &str,
        direction: Direction,
        src: SocketAddr,
        dst: SocketAddr,
        codec: Codec,
    ) -> StreamState {
        let loss = self.cfg.loss.for_leg(rng);
        let path = PathState::new(&self.cfg.jitter, rng);
        let first_seq = if self.cfg.wrap_share > 0.0 && rng.gen_bool(self.cfg.wrap_share) {
            65_535 - rng.gen_range(0..300)
        } else {
            rng.r#gen::<u16>()
        };
        let ssrc = Ssrc(rng.next_u32());
        let vad = self.cfg.vad_share > 0.0 && rng.gen_bool(self.cfg.vad_share);
        let truth = self.truth.streams.len();
        self.truth.streams.push(StreamTruth {
            call_index,
            call_id: call_id.to_owned(),
            direction,
            src,
            dst,
            ssrc,
            payload_type: codec.payload_type(),
            codec,
            first_seq,
            sent: 0,
            lost_in_network: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            dtmf_events: 0,
            dtmf_packets: 0,
            rtcp_sent: 0,
            rtcp_rr_sent: 0,
            vad,
            silences: 0,
            loss_model: loss,
            base_delay_ms: path.base_ns() as f64 / 1e6,
            first_arrival: None,
            last_arrival: None,
            min_ext_seq: None,
            first_ext_seq: None,
            max_ext_seq: None,
            jitter_ms: 0.0,
        });
        self.rx.push(RxTrack::default());
        StreamState {
            truth,
            src,
            dst,
            ssrc,
            codec,
            ext_seq: u64::from(first_seq),
            ts: rng.next_u32(),
            next_send: u64::MAX,
            stop_at: 0,
            marker: true,
            loss,
            loss_state: LossState::default(),
            path,
            dtmf: VecDeque::new(),
            event: None,
            packets: 0,
            octets: 0,
            ip_id: rng.r#gen(),
            rx: RxReport::default(),
            vad: vad.then_some(Vad::Talk { until: 0 }),
            sent_since_report: false,
            sent_interval_before: false,
        }
    }

    fn rtcp_interval(&self, rng: &mut SmallRng) -> u64 {
        //= https://www.rfc-editor.org/rfc/rfc3550#section-6.3.1
        //# The calculated interval T is set to a number uniformly distributed
        //# between 0.5 and 1.5 times the deterministic calculated interval.
        let mean = f64::from(self.cfg.rtcp_interval_ms);
        model::ms_to_us_ns(rng.gen_range(0.5 * mean..=1.5 * mean))
    }

    fn call_event(&mut self, idx: usize, now: u64) {
        let Some(mut call) = self.calls[idx].take() else {
            return;
        };
        if call.sip.front().is_some_and(|s| s.0 == now) {
            if let Some((_, step)) = call.sip.pop_front() {
                self.send_sip(&mut call, now, step);
            }
        } else if call.streams[0].next_send == now {
            self.send_rtp(&mut call, 0, now);
        } else if call.streams[1].next_send == now {
            self.send_rtp(&mut call, 1, now);
        } else if call.rtcp_next[0] == now {
            self.send_rtcp(&mut call, 0, now);
        } else if call.rtcp_next[1] == now {
            self.send_rtcp(&mut call, 1, now);
        }
        self.calls[idx] = Some(call);
    }

    fn send_sip(&mut self, call: &mut CallState, now: u64, step: SipStep) {
        let (text, src, dst) = call.dialog.message(step);
        // Signalling shares the media path's base delay, without loss.
        let d = if src.ip() == call.dialog.caller_sip.ip() {
            call.streams[0].path.base_ns()
        } else {
            call.streams[1].path.base_ns()
        };
        call.ip_id = call.ip_id.wrapping_add(1);
        self.push_pending(now + d, src, dst, call.ip_id, text.as_bytes(), Tag::Sip);
    }

    fn send_rtp(&mut self, call: &mut CallState, i: usize, now: u64) {
        let rng = &mut call.rng;
        let s = &mut call.streams[i];
        if now >= s.stop_at {
            s.next_send = u64::MAX;
            return;
        }
        let mut payload = Vec::with_capacity(12 + 160);
        let seq = s.ext_seq as u16;
        let truth = &mut self.truth.streams[s.truth];
        if s.event.is_none()
            && s.dtmf.front().is_some_and(|d| d.0 <= now)
            && let Some((_, digit, dur)) = s.dtmf.pop_front()
        {
            // The plan holds only digits from "0123456789*#".
            let code = packets::dtmf_event_code(digit).unwrap_or(0);
            s.event = Some(EventProgress {
                code,
                ts: s.ts,
                updates: (dur / 20).max(3),
                sent: 0,
            });
            truth.dtmf_events += 1;
        }
        if s.event.is_none() && vad_silent(s, now, rng, truth) {
            // No packet this tick: the media clock runs on, the sequence
            // number does not.
            s.ts = s.ts.wrapping_add(TICKS_PER_PACKET);
            s.next_send = now + PTIME_NS;
            if s.next_send >= s.stop_at {
                s.next_send = u64::MAX;
            }
            return;
        }
        let audio;
        let rtp_ts;
        if let Some(ev) = s.event.as_mut() {
            audio = false;
            rtp_ts = ev.ts;
            //= https://www.rfc-editor.org/rfc/rfc4733#section-2.5.1.4
            //# The final packet for each event and for each segment SHOULD be
            //# sent a total of three times at the interval used by the source
            //# for updates.
            let k = ev.sent;
            let end = k + 1 >= ev.updates;
            let duration = (k.min(ev.updates - 1) + 1) * TICKS_PER_PACKET;
            packets::push_rtp_header(
                &mut payload,
                &RtpHeader {
                    marker: k == 0,
                    pt: TELEPHONE_EVENT_PT,
                    seq,
                    timestamp: ev.ts,
                    ssrc: s.ssrc,
                },
            );
            packets::push_telephone_event(&mut payload, ev.code, end, duration as u16);
            ev.sent += 1;
            truth.dtmf_packets += 1;
            if ev.sent >= ev.updates + 2 {
                s.event = None;
                s.marker = true;
            }
        } else {
            audio = true;
            rtp_ts = s.ts;
            packets::push_rtp_header(
                &mut payload,
                &RtpHeader {
                    marker: s.marker,
                    pt: s.codec.payload_type(),
                    seq,
                    timestamp: s.ts,
                    ssrc: s.ssrc,
                },
            );
            s.marker = false;
            fill_audio(&mut payload, s.codec, rng);
        }
        truth.sent += 1;
        s.sent_since_report = true;
        s.packets = s.packets.wrapping_add(1);
        s.octets = s.octets.wrapping_add((payload.len() - 12) as u32);
        let ext_seq = s.ext_seq;
        s.ext_seq += 1;
        s.ts = s.ts.wrapping_add(TICKS_PER_PACKET);
        s.next_send = now + PTIME_NS;
        if s.next_send >= s.stop_at {
            s.next_send = u64::MAX;
        }
        s.ip_id = s.ip_id.wrapping_add(1);

        let lost = s.loss_state.step(&s.loss, rng);
        let arrival = s.path.arrival(&self.cfg.jitter, now, rng);
        if lost {
            truth.lost_in_network += 1;
            return;
        }
        // Receiver report state (send order).
        let rx = &mut s.rx;
        rx.received += 1;
        rx.base_ext.get_or_insert(ext_seq);
        rx.max_ext = rx.max_ext.max(ext_seq);

        let (src, dst, ip_id, stream) = (s.src, s.dst, s.ip_id, s.truth);
        let dup_p = self.cfg.jitter.duplicate_probability;
        let dup_at = (dup_p > 0.0 && rng.gen_bool(dup_p)).then(|| arrival + ms_rand(rng, 0, 5));
        let tag = |duplicate| Tag::Rtp {
            stream,
            ext_seq,
            rtp_ts,
            audio,
            duplicate,
        };
        if let Some(at) = dup_at {
            self.push_pending(at, src, dst, ip_id, &payload, tag(true));
        }
        self.push_pending(arrival, src, dst, ip_id, &payload, tag(false));
    }

    fn send_rtcp(&mut self, call: &mut CallState, i: usize, now: u64) {
        let other = 1 - i;
        if now >= call.streams[i].stop_at {
            call.rtcp_next[i] = u64::MAX;
            return;
        }
        let next = now + self.rtcp_interval(&mut call.rng);
        call.rtcp_next[i] = if next < call.streams[i].stop_at {
            next
        } else {
            u64::MAX
        };
        let s = &mut call.streams[i];
        //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4
        //# The SR is issued if a site has sent any data packets during the
        //# interval since issuing the last report or the previous one,
        //# otherwise the RR is issued.
        let is_sender = s.sent_since_report || s.sent_interval_before;
        s.sent_interval_before = s.sent_since_report;
        s.sent_since_report = false;
        let sender = SenderInfo {
            now_ns: now,
            // The RTP clock runs on between packets: ts is the next packet's.
            rtp_timestamp: s.ts,
            packets: s.packets,
            octets: s.octets,
        };
        // Report on the stream this side receives.
        let other_ssrc = call.streams[other].ssrc;
        let other_jitter = self.rx[call.streams[other].truth].jitter;
        let last_sr = call.last_sr[i];
        let r = &mut call.streams[other].rx;
        let report = r.base_ext.map(|base| {
            //= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.3
            //# expected = extended_max - base_seq + 1;
            let expected = r.max_ext - base + 1;
            let lost = expected.saturating_sub(r.received);
            let exp_int = expected - r.expected_prior;
            let rec_int = r.received - r.received_prior;
            r.expected_prior = expected;
            r.received_prior = r.received;
            let lost_int = exp_int.saturating_sub(rec_int);
            //= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.3
            //# if (expected_interval == 0 || lost_interval <= 0) fraction = 0;
            //# else fraction = (lost_interval << 8) / expected_interval;
            let fraction = (lost_int << 8)
                .checked_div(exp_int)
                .map_or(0, |f| f.min(255) as u8);
            let (lsr, dlsr) = match last_sr {
                Some((mid, at)) if at <= now => (mid, (((now - at) << 16) / 1_000_000_000) as u32),
                _ => (0, 0),
            };
            ReportBlock {
                ssrc: other_ssrc,
                fraction_lost: fraction,
                cumulative_lost: lost as u32,
                highest_seq: r.max_ext as u32,
                jitter: other_jitter as u32,
                lsr,
                dlsr,
            }
        });
        let s = &call.streams[i];
        let cname = format!("synth{}-{}@{}", call.index, i, s.src.ip());
        let mut payload = Vec::with_capacity(96);
        let sender = is_sender.then_some(&sender);
        packets::push_rtcp_compound(&mut payload, s.ssrc, sender, report.as_ref(), &cname);
        let src = SocketAddr::new(s.src.ip(), s.src.port() + 1);
        let dst = SocketAddr::new(s.dst.ip(), s.dst.port() + 1);
        let arrival = now + s.path.base_ns();
        let ntp_mid = (packets::ntp_timestamp(now) >> 16) as u32;
        call.last_sr[other] = Some((ntp_mid, arrival));
        let t = &mut self.truth.streams[s.truth];
        t.rtcp_sent += 1;
        t.rtcp_rr_sent += u64::from(!is_sender);
        call.ip_id = call.ip_id.wrapping_add(1);
        self.push_pending(arrival, src, dst, call.ip_id, &payload, Tag::Rtcp);
    }
}

fn validate(cfg: &SynthConfig) -> Result<(), SynthError> {
    let bad = SynthError::InvalidConfig;
    if cfg.concurrent == 0 {
        return Err(bad("concurrent must be at least 1"));
    }
    if cfg.duration_ms.0 > cfg.duration_ms.1 || cfg.duration_ms.0 < 20 {
        return Err(bad(
            "duration_ms must be an ordered range starting at 20 ms or more",
        ));
    }
    if cfg.ring_ms.0 > cfg.ring_ms.1 {
        return Err(bad("ring_ms must be an ordered range"));
    }
    if cfg.codecs.is_empty() || cfg.codecs.iter().map(|c| u64::from(c.1)).sum::<u64>() == 0 {
        return Err(bad("codecs must have a positive total weight"));
    }
    if cfg.codecs.iter().map(|c| u64::from(c.1)).sum::<u64>() > u64::from(u32::MAX) {
        return Err(bad("codecs weights must sum to at most 2^32-1"));
    }
    for (name, v) in [
        ("ipv6_share must lie in 0..=1", cfg.ipv6_share),
        ("wrap_share must lie in 0..=1", cfg.wrap_share),
        ("vad_share must lie in 0..=1", cfg.vad_share),
        ("dtmf.call_share must lie in 0..=1", cfg.dtmf.call_share),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(bad(name));
        }
    }
    let d = &cfg.dtmf;
    if d.digits.0 > d.digits.1 || d.digit_ms.0 > d.digit_ms.1 || d.gap_ms.0 > d.gap_ms.1 {
        return Err(bad("dtmf ranges must be ordered"));
    }
    cfg.loss
        .validate()
        .map_err(|_| bad("loss model parameters must be probabilities"))?;
    cfg.jitter
        .validate()
        .map_err(|_| bad("jitter model ranges and probabilities"))?;
    Ok(())
}

/// Advances a VAD stream's talk/silence state for a tick at `now`; true if
/// the tick falls in a silence. A silence ending sets the marker for the
/// talkspurt's first packet.
fn vad_silent(s: &mut StreamState, now: u64, rng: &mut SmallRng, truth: &mut StreamTruth) -> bool {
    let exp_ns = |rng: &mut SmallRng, mean_ms: f64| {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        model::ms_to_us_ns(-u.ln() * mean_ms).max(PTIME_NS)
    };
    match s.vad {
        None => false,
        Some(Vad::Talk { until: 0 }) => {
            s.vad = Some(Vad::Talk {
                until: now + exp_ns(rng, TALKSPURT_MEAN_MS),
            });
            false
        }
        Some(Vad::Talk { until }) if now >= until => {
            s.vad = Some(Vad::Silent {
                until: now + exp_ns(rng, SILENCE_MEAN_MS),
            });
            truth.silences += 1;
            true
        }
        Some(Vad::Talk { .. }) => false,
        Some(Vad::Silent { until }) if now >= until => {
            s.vad = Some(Vad::Talk {
                until: now + exp_ns(rng, TALKSPURT_MEAN_MS),
            });
            //= https://www.rfc-editor.org/rfc/rfc3551#section-4.1
            //# the first packet of a talkspurt, that is, the first packet
            //# after a silence period during which packets have not been
            //# transmitted contiguously, SHOULD be distinguished by setting
            //# the marker bit in the RTP data header to one.
            s.marker = true;
            false
        }
        Some(Vad::Silent { .. }) => true,
    }
}

/// Uniform whole milliseconds in `lo..=hi`, in nanoseconds.
fn ms_rand<R: Rng + ?Sized>(rng: &mut R, lo: u32, hi: u32) -> u64 {
    let ms = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
    u64::from(ms) * 1_000_000
}

fn pick_codec(codecs: &[(Codec, u32)], total: u32, rng: &mut SmallRng) -> Codec {
    let mut x = rng.gen_range(0..total.max(1));
    for &(c, w) in codecs {
        if x < w {
            return c;
        }
        x -= w;
    }
    Codec::Pcmu
}

/// Caller and callee addresses of call `index`: callers cycle through
/// 192.0.2.1–254, callees through 198.18.0.1–198.19.255.254 (so concurrent
/// calls never share a 5-tuple); IPv6 calls use 2001:db8:1::/48 and
/// 2001:db8:2::/48.
fn addresses(index: u32, ipv6: bool) -> (IpAddr, IpAddr) {
    if ipv6 {
        // `index < calls <= u32::MAX`, so `index + 1` does not overflow.
        let n = index + 1;
        let (hi, lo) = ((n >> 16) as u16, n as u16);
        let a = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, hi, lo);
        let b = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, hi, lo);
        (a.into(), b.into())
    } else {
        let a = Ipv4Addr::new(192, 0, 2, 1 + (index % 254) as u8);
        let n = 1 + index % 131_070;
        let b = Ipv4Addr::new(198, 18 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
        (a.into(), b.into())
    }
}

/// Appends one packet of low-level noise: G.711 codes near zero amplitude
/// (µ-law 0xFF / A-law 0xD5 with the low 3 bits varied), random G.729
/// frames.
fn fill_audio(out: &mut Vec<u8>, codec: Codec, rng: &mut SmallRng) {
    let base = match codec {
        Codec::Pcmu => 0xFF,
        Codec::Pcma => 0xD5,
        Codec::G729 => {
            let start = out.len();
            out.resize(start + 20, 0);
            rng.fill_bytes(&mut out[start..]);
            return;
        }
    };
    for _ in 0..160 / 16 {
        let bits = rng.next_u64();
        for j in 0..16 {
            out.push(base ^ ((bits >> (j * 4)) as u8 & 0x07));
        }
    }
}

#[cfg(test)]
mod tests;
