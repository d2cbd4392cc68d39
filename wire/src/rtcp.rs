//! RTCP compound packets (RFC 3550 §6): sender and receiver reports, source
//! descriptions, BYE, APP, and extended reports (RFC 3611) with a full
//! decoding of the VoIP Metrics block (§4.7).
//!
//! [`Compound`] iterates over the packets of a compound datagram and yields
//! borrowed views ([`RtcpPacket`]). Each view's length has been checked
//! against its counts when it is yielded, so its accessors never panic.
//! Variable-length contents (SDES chunks, XR blocks) are validated by their
//! own iterators, which yield `Err` on malformed input and then stop.
//!
//! The owned [`RtcpRepr`] (and the per-packet `*Repr` types) parse from a
//! view and emit back to bytes; [`emit_compound`] writes a compound with
//! the reports first.
//!
//! ```
//! use wire::rtcp::{Compound, RtcpPacket};
//! use wire::Ssrc;
//!
//! // SR (no report blocks) + SDES CNAME "c0" from an AudioCodes gateway.
//! let bytes = [
//!     0x80, 0xc8, 0x00, 0x06, 0x44, 0xc6, 0x1a, 0xfb, 0x00, 0x1c, 0xd3, 0xb3,
//!     0xda, 0x1c, 0xab, 0x0c, 0x32, 0xa1, 0x05, 0x3c, 0x00, 0x00, 0x00, 0x01,
//!     0x00, 0x00, 0x00, 0xa0, 0x81, 0xca, 0x00, 0x03, 0x44, 0xc6, 0x1a, 0xfb,
//!     0x01, 0x03, 0x63, 0x30, 0x00, 0x00, 0x00, 0x00,
//! ];
//! let mut packets = Compound::new(&bytes);
//! let Some(Ok(RtcpPacket::SenderReport(sr))) = packets.next() else { panic!() };
//! assert_eq!(sr.ssrc(), Ssrc(0x44c61afb));
//! assert_eq!(sr.packet_count(), 1);
//! assert_eq!(sr.octet_count(), 160);
//! let Some(Ok(RtcpPacket::Sdes(sdes))) = packets.next() else { panic!() };
//! let chunk = sdes.chunks().next().unwrap()?;
//! // The gateway counts a trailing NUL in the CNAME.
//! assert_eq!(chunk.cname(), Some(&b"c0\0"[..]));
//! assert!(packets.next().is_none());
//! # Ok::<(), wire::rtcp::Error>(())
//! ```

use crate::types::Ssrc;

/// Length of the common RTCP header in octets.
pub const HEADER_LEN: usize = 4;

/// Length of one reception report block in octets.
pub const REPORT_BLOCK_LEN: usize = 24;

/// RTCP packet type numbers.
pub mod packet_type {
    /// Sender report (RFC 3550 §6.4.1).
    pub const SR: u8 = 200;
    /// Receiver report (RFC 3550 §6.4.2).
    pub const RR: u8 = 201;
    /// Source description (RFC 3550 §6.5).
    pub const SDES: u8 = 202;
    /// Goodbye (RFC 3550 §6.6).
    pub const BYE: u8 = 203;
    /// Application-defined (RFC 3550 §6.7).
    pub const APP: u8 = 204;
    /// Extended report (RFC 3611).
    pub const XR: u8 = 207;
}

/// XR block type of the VoIP Metrics Report Block (RFC 3611 §4.7).
pub const XR_VOIP_METRICS: u8 = 7;

/// Why an RTCP datagram is malformed, or a repr cannot be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fewer than 4 octets left for a packet header.
    #[error("RTCP packet too short: {len} octets left, header needs 4")]
    TooShort {
        /// Octets left in the compound.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTCP version {0}, expected 2")]
    Version(u8),
    /// The length field points past the end of the datagram.
    #[error("RTCP length field says {length} octets, {available} left")]
    LengthOverrun {
        /// Packet length from the length field, in octets.
        length: usize,
        /// Octets left in the compound.
        available: usize,
    },
    /// The padding count is zero or larger than the packet body.
    #[error("RTCP padding count {0} invalid")]
    Padding(u8),
    /// The packet is too short for the fields its counts announce.
    #[error("RTCP packet type {packet_type} needs {needed} octets, has {len}")]
    Truncated {
        /// The packet type.
        packet_type: u8,
        /// Octets needed after the common header.
        needed: usize,
        /// Octets present after the common header (padding removed).
        len: usize,
    },
    /// The contents are malformed (an SDES chunk or item, a BYE reason or
    /// an XR block runs past the end, or has a wrong fixed length).
    #[error("malformed RTCP packet: {0}")]
    Malformed(&'static str),
    /// A repr cannot be emitted: a count over 31, a value over 255 octets,
    /// a length not a multiple of 4, or the buffer is too small.
    #[error("cannot emit RTCP: {0}")]
    Emit(&'static str),
}

/// An iterator over the packets of an RTCP compound datagram.
///
/// Yields `Err` once for the first malformed packet and then stops, since
/// the position of any later packet is unknown.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    /// Starts iterating over a compound datagram.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = next_packet(self.rest);
        match result {
            Ok((pkt, rest)) => {
                self.rest = rest;
                Some(Ok(pkt))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// One RTCP packet of a compound.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RtcpPacket<'a> {
    /// Sender report (PT 200).
    SenderReport(SenderReport<'a>),
    /// Receiver report (PT 201).
    ReceiverReport(ReceiverReport<'a>),
    /// Source description (PT 202).
    Sdes(Sdes<'a>),
    /// Goodbye (PT 203).
    Bye(Bye<'a>),
    /// Application-defined (PT 204).
    App(App<'a>),
    /// Extended report (PT 207).
    Xr(Xr<'a>),
    /// Any other packet type (RTPFB, PSFB, ...): the packet type and the
    /// whole packet, common header included.
    Unknown(u8, &'a [u8]),
}

impl RtcpPacket<'_> {
    /// The packet type number.
    pub fn packet_type(&self) -> u8 {
        match self {
            Self::SenderReport(_) => packet_type::SR,
            Self::ReceiverReport(_) => packet_type::RR,
            Self::Sdes(_) => packet_type::SDES,
            Self::Bye(_) => packet_type::BYE,
            Self::App(_) => packet_type::APP,
            Self::Xr(_) => packet_type::XR,
            Self::Unknown(pt, _) => *pt,
        }
    }
}

/// The sender information section of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// NTP timestamp: seconds since 1900 in the high 32 bits, fraction in
    /// the low 32 bits.
    pub ntp_timestamp: u64,
    /// The same instant in RTP timestamp units.
    pub rtp_timestamp: u32,
    /// Packets sent since the start of transmission.
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission.
    pub octet_count: u32,
}

/// The middle 32 bits of a 64-bit NTP timestamp, the form used by the LSR
/// field of report blocks (units of 1/65536 s).
pub fn ntp_middle_32(ntp: u64) -> u32 {
    //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
    //# The middle 32 bits out of 64 in the NTP timestamp (as explained in
    //# Section 4) received as part of the most recent RTCP sender report
    //# (SR) packet from source SSRC_n.
    (ntp >> 16) as u32
}

/// A sender report view.
#[derive(Debug, Clone, Copy)]
pub struct SenderReport<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> SenderReport<'a> {
    /// SSRC of the sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(&self.body[0..4]))
    }

    /// NTP timestamp (seconds since 1900 in the high 32 bits, fraction in
    /// the low 32 bits).
    pub fn ntp_timestamp(&self) -> u64 {
        u64::from_be_bytes([
            self.body[4],
            self.body[5],
            self.body[6],
            self.body[7],
            self.body[8],
            self.body[9],
            self.body[10],
            self.body[11],
        ])
    }

    /// RTP timestamp corresponding to the NTP timestamp.
    pub fn rtp_timestamp(&self) -> u32 {
        be32(&self.body[12..16])
    }

    /// Sender's packet count.
    pub fn packet_count(&self) -> u32 {
        be32(&self.body[16..20])
    }

    /// Sender's octet count (payload octets only).
    pub fn octet_count(&self) -> u32 {
        be32(&self.body[20..24])
    }

    /// The whole sender information section.
    pub fn sender_info(&self) -> SenderInfo {
        SenderInfo {
            ntp_timestamp: self.ntp_timestamp(),
            rtp_timestamp: self.rtp_timestamp(),
            packet_count: self.packet_count(),
            octet_count: self.octet_count(),
        }
    }

    /// The reception report blocks (RC of them).
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks::new(&self.body[24..], self.count)
    }

    /// Profile-specific extension octets after the report blocks.
    pub fn profile_extension(&self) -> &'a [u8] {
        &self.body[24 + REPORT_BLOCK_LEN * usize::from(self.count)..]
    }
}

/// A receiver report view.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverReport<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    /// SSRC of the packet sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(&self.body[0..4]))
    }

    /// The reception report blocks (RC of them).
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks::new(&self.body[4..], self.count)
    }

    /// Profile-specific extension octets after the report blocks.
    pub fn profile_extension(&self) -> &'a [u8] {
        &self.body[4 + REPORT_BLOCK_LEN * usize::from(self.count)..]
    }
}

/// Iterator over the reception report blocks of an SR or RR.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
    left: u8,
}

impl<'a> ReportBlocks<'a> {
    fn new(data: &'a [u8], count: u8) -> Self {
        Self {
            chunks: data.chunks_exact(REPORT_BLOCK_LEN),
            left: count,
        }
    }
}

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock<'a>;

    fn next(&mut self) -> Option<ReportBlock<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let data = self.chunks.next()?.try_into().ok()?;
        Some(ReportBlock { data })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy)]
pub struct ReportBlock<'a> {
    data: &'a [u8; REPORT_BLOCK_LEN],
}

impl ReportBlock<'_> {
    /// SSRC of the source this block reports on.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(&self.data[0..4]))
    }

    /// Fraction of packets lost since the previous report, in 1/256.
    pub fn fraction_lost(&self) -> u8 {
        self.data[4]
    }

    /// Cumulative number of packets lost, sign-extended from 24 bits
    /// (negative when duplicates outnumber losses).
    pub fn cumulative_lost(&self) -> i32 {
        //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
        //# Thus, packets that arrive late are not counted as lost, and the
        //# loss may be negative if there are duplicates.
        i32::from_be_bytes([self.data[5], self.data[6], self.data[7], 0]) >> 8
    }

    /// Extended highest sequence number received (cycles × 65536 + seq).
    pub fn extended_highest_seq(&self) -> u32 {
        be32(&self.data[8..12])
    }

    /// Interarrival jitter, in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        be32(&self.data[12..16])
    }

    /// Last SR timestamp: middle 32 bits of the NTP timestamp of the last
    /// SR received from this source (1/65536 s), 0 if none.
    pub fn lsr(&self) -> u32 {
        be32(&self.data[16..20])
    }

    /// Delay since the last SR, in units of 1/65536 s, 0 if none.
    pub fn dlsr(&self) -> u32 {
        be32(&self.data[20..24])
    }

    /// The owned form of this block.
    pub fn to_repr(&self) -> ReportBlockRepr {
        ReportBlockRepr {
            ssrc: self.ssrc(),
            fraction_lost: self.fraction_lost(),
            cumulative_lost: self.cumulative_lost(),
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            lsr: self.lsr(),
            dlsr: self.dlsr(),
        }
    }
}

/// An SDES item type (RFC 3550 §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SdesItemType(pub u8);

impl SdesItemType {
    /// Canonical end-point identifier.
    pub const CNAME: Self = Self(1);
    /// User name.
    pub const NAME: Self = Self(2);
    /// Electronic mail address.
    pub const EMAIL: Self = Self(3);
    /// Phone number.
    pub const PHONE: Self = Self(4);
    /// Geographic user location.
    pub const LOC: Self = Self(5);
    /// Application or tool name.
    pub const TOOL: Self = Self(6);
    /// Notice/status.
    pub const NOTE: Self = Self(7);
    /// Private extensions.
    pub const PRIV: Self = Self(8);
}

/// A source description view.
#[derive(Debug, Clone, Copy)]
pub struct Sdes<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> Sdes<'a> {
    /// The chunks (SC of them); a malformed chunk yields `Err` and ends the
    /// iteration.
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks {
            rest: self.body,
            left: self.count,
        }
    }
}

/// Iterator over the chunks of an SDES packet.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = Result<SdesChunk<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match split_sdes_chunk(self.rest) {
            Ok((chunk, rest)) => {
                self.rest = rest;
                Some(Ok(chunk))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

/// One SDES chunk: an SSRC/CSRC and its items.
#[derive(Debug, Clone, Copy)]
pub struct SdesChunk<'a> {
    ssrc: Ssrc,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// The source the items describe.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The items, in order (validated when the chunk was yielded).
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }

    /// The value of the first CNAME item, if any.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items()
            .find(|i| i.kind == SdesItemType::CNAME)
            .map(|i| i.value)
    }
}

/// One SDES item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesItem<'a> {
    /// Item type.
    pub kind: SdesItemType,
    /// Item text (UTF-8 by the RFC, but not checked).
    pub value: &'a [u8],
}

/// Iterator over the items of an SDES chunk.
#[derive(Debug, Clone)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<SdesItem<'a>> {
        let (&kind, rest) = self.rest.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        self.rest = &rest[usize::from(len)..];
        Some(SdesItem {
            kind: SdesItemType(kind),
            value,
        })
    }
}

/// A BYE view.
#[derive(Debug, Clone, Copy)]
pub struct Bye<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> Bye<'a> {
    /// The sources leaving (SC of them).
    pub fn ssrcs(&self) -> impl ExactSizeIterator<Item = Ssrc> + 'a {
        self.body[..4 * usize::from(self.count)]
            .chunks_exact(4)
            .map(|c| Ssrc(be32(c)))
    }

    /// The reason for leaving, if present.
    pub fn reason(&self) -> Option<&'a [u8]> {
        let rest = &self.body[4 * usize::from(self.count)..];
        let (&len, text) = rest.split_first()?;
        text.get(..usize::from(len))
    }
}

/// An APP view.
#[derive(Debug, Clone, Copy)]
pub struct App<'a> {
    subtype: u8,
    body: &'a [u8],
}

impl<'a> App<'a> {
    /// Subtype (the 5-bit count field).
    pub fn subtype(&self) -> u8 {
        self.subtype
    }

    /// SSRC/CSRC of the sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(&self.body[0..4]))
    }

    /// Four-character name.
    pub fn name(&self) -> [u8; 4] {
        [self.body[4], self.body[5], self.body[6], self.body[7]]
    }

    /// Application-dependent data.
    pub fn data(&self) -> &'a [u8] {
        &self.body[8..]
    }
}

/// An extended report (RFC 3611) view.
#[derive(Debug, Clone, Copy)]
pub struct Xr<'a> {
    body: &'a [u8],
}

impl<'a> Xr<'a> {
    /// SSRC of the packet sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(&self.body[0..4]))
    }

    /// The report blocks; a malformed block yields `Err` and ends the
    /// iteration.
    pub fn blocks(&self) -> XrBlocks<'a> {
        XrBlocks {
            rest: &self.body[4..],
        }
    }
}

/// Iterator over XR report blocks.
#[derive(Debug, Clone)]
pub struct XrBlocks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for XrBlocks<'a> {
    type Item = Result<XrBlock<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match split_xr_block(self.rest) {
            Ok((block, rest)) => {
                self.rest = rest;
                Some(Ok(block))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// One XR report block.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum XrBlock<'a> {
    /// VoIP Metrics (BT=7), fully decoded.
    VoipMetrics(VoipMetrics<'a>),
    /// Any other block type, raw.
    Other {
        /// Block type (BT).
        block_type: u8,
        /// The type-specific octet.
        type_specific: u8,
        /// Block contents after the 4-octet block header.
        data: &'a [u8],
    },
}

/// Packet loss concealment method from the VoIP Metrics RX config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Plc {
    /// 00: unspecified.
    #[default]
    Unspecified,
    /// 01: PLC disabled.
    Disabled,
    /// 10: standard (e.g. G.711 Appendix I).
    Standard,
    /// 11: enhanced.
    Enhanced,
}

/// Jitter buffer mode from the VoIP Metrics RX config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum JitterBufferMode {
    /// 00: unknown.
    #[default]
    Unknown,
    /// 01: reserved.
    Reserved,
    /// 10: non-adaptive (fixed).
    NonAdaptive,
    /// 11: adaptive.
    Adaptive,
}

/// The receiver configuration byte of a VoIP Metrics block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RxConfig {
    /// Packet loss concealment (PLC, 2 bits).
    pub plc: Plc,
    /// Jitter buffer adaptive flag (JBA, 2 bits).
    pub jitter_buffer: JitterBufferMode,
    /// Jitter buffer adjustment rate (JB rate, 4 bits, 0–15).
    pub jb_rate: u8,
}

impl RxConfig {
    /// Decodes the RX config octet.
    pub fn from_byte(b: u8) -> Self {
        // RFC 3611 §4.7.6: PLC in the two most significant bits, then JBA
        // (two bits), then JB rate (four bits).
        let plc = match b >> 6 {
            0b11 => Plc::Enhanced,
            0b10 => Plc::Standard,
            0b01 => Plc::Disabled,
            _ => Plc::Unspecified,
        };
        let jitter_buffer = match (b >> 4) & 0b11 {
            0b11 => JitterBufferMode::Adaptive,
            0b10 => JitterBufferMode::NonAdaptive,
            0b01 => JitterBufferMode::Reserved,
            _ => JitterBufferMode::Unknown,
        };
        Self {
            plc,
            jitter_buffer,
            jb_rate: b & 0x0F,
        }
    }

    /// Encodes the RX config octet (JB rate above 15 is truncated).
    pub fn to_byte(self) -> u8 {
        let plc = match self.plc {
            Plc::Unspecified => 0,
            Plc::Disabled => 1,
            Plc::Standard => 2,
            Plc::Enhanced => 3,
        };
        let jba = match self.jitter_buffer {
            JitterBufferMode::Unknown => 0,
            JitterBufferMode::Reserved => 1,
            JitterBufferMode::NonAdaptive => 2,
            JitterBufferMode::Adaptive => 3,
        };
        (plc << 6) | (jba << 4) | (self.jb_rate & 0x0F)
    }
}

/// The value that marks signal/noise level, RERL, R factors and MOS as
/// unavailable in a VoIP Metrics block.
pub const UNAVAILABLE: u8 = 127;

/// A VoIP Metrics Report Block view (RFC 3611 §4.7): 32 octets after the
/// block header.
#[derive(Debug, Clone, Copy)]
pub struct VoipMetrics<'a> {
    data: &'a [u8; 32],
}

impl VoipMetrics<'_> {
    /// The source this block reports on.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(&self.data[0..4]))
    }

    /// Fraction of packets lost since the start of reception, in 1/256.
    pub fn loss_rate(&self) -> u8 {
        self.data[4]
    }

    /// Fraction of packets discarded by the jitter buffer, in 1/256.
    pub fn discard_rate(&self) -> u8 {
        self.data[5]
    }

    /// Fraction of packets lost or discarded within bursts, in 1/256.
    pub fn burst_density(&self) -> u8 {
        self.data[6]
    }

    /// Fraction of packets lost or discarded within gaps, in 1/256.
    pub fn gap_density(&self) -> u8 {
        self.data[7]
    }

    /// Mean burst duration in ms.
    pub fn burst_duration(&self) -> u16 {
        be16(&self.data[8..10])
    }

    /// Mean gap duration in ms.
    pub fn gap_duration(&self) -> u16 {
        be16(&self.data[10..12])
    }

    /// Most recent round-trip delay in ms (0 if unknown).
    pub fn round_trip_delay(&self) -> u16 {
        be16(&self.data[12..14])
    }

    /// Most recent end-system delay in ms (0 if unknown).
    pub fn end_system_delay(&self) -> u16 {
        be16(&self.data[14..16])
    }

    /// Signal level in dBm0, `None` if unavailable (127).
    pub fn signal_level(&self) -> Option<i8> {
        // RFC 3611 §4.7.4: signed dBm0, 127 means unavailable.
        sentinel(self.data[16]).map(|v| v as i8)
    }

    /// Noise level in dBm0, `None` if unavailable (127).
    pub fn noise_level(&self) -> Option<i8> {
        sentinel(self.data[17]).map(|v| v as i8)
    }

    /// Residual echo return loss in dB, `None` if unavailable (127).
    pub fn rerl(&self) -> Option<u8> {
        sentinel(self.data[18])
    }

    /// Gap threshold Gmin (received packets between losses that end a
    /// burst; 16 recommended).
    pub fn gmin(&self) -> u8 {
        self.data[19]
    }

    /// R factor (0–100), `None` if unavailable (127).
    pub fn r_factor(&self) -> Option<u8> {
        sentinel(self.data[20])
    }

    /// External R factor (0–100), `None` if unavailable (127).
    pub fn ext_r_factor(&self) -> Option<u8> {
        sentinel(self.data[21])
    }

    /// MOS-LQ × 10 (10–50), `None` if unavailable (127).
    pub fn mos_lq(&self) -> Option<u8> {
        sentinel(self.data[22])
    }

    /// MOS-CQ × 10 (10–50), `None` if unavailable (127).
    pub fn mos_cq(&self) -> Option<u8> {
        sentinel(self.data[23])
    }

    /// Receiver configuration (PLC, jitter buffer mode and rate).
    pub fn rx_config(&self) -> RxConfig {
        RxConfig::from_byte(self.data[24])
    }

    /// Nominal jitter buffer delay in ms.
    pub fn jb_nominal(&self) -> u16 {
        be16(&self.data[26..28])
    }

    /// Maximum jitter buffer delay in ms.
    pub fn jb_maximum(&self) -> u16 {
        be16(&self.data[28..30])
    }

    /// Absolute maximum jitter buffer delay in ms.
    pub fn jb_abs_max(&self) -> u16 {
        be16(&self.data[30..32])
    }

    /// The owned form of this block.
    pub fn to_repr(&self) -> VoipMetricsRepr {
        VoipMetricsRepr {
            ssrc: self.ssrc(),
            loss_rate: self.loss_rate(),
            discard_rate: self.discard_rate(),
            burst_density: self.burst_density(),
            gap_density: self.gap_density(),
            burst_duration: self.burst_duration(),
            gap_duration: self.gap_duration(),
            round_trip_delay: self.round_trip_delay(),
            end_system_delay: self.end_system_delay(),
            signal_level: self.signal_level(),
            noise_level: self.noise_level(),
            rerl: self.rerl(),
            gmin: self.gmin(),
            r_factor: self.r_factor(),
            ext_r_factor: self.ext_r_factor(),
            mos_lq: self.mos_lq(),
            mos_cq: self.mos_cq(),
            rx_config: self.rx_config(),
            jb_nominal: self.jb_nominal(),
            jb_maximum: self.jb_maximum(),
            jb_abs_max: self.jb_abs_max(),
        }
    }
}

// ---------------------------------------------------------------------------
// Owned reprs
// ---------------------------------------------------------------------------

/// An owned reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlockRepr {
    /// Source reported on.
    pub ssrc: Ssrc,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost; emitted saturated to 24-bit signed
    /// (−8 388 608 ..= 8 388 607).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Last SR timestamp (middle 32 bits of NTP), 1/65536 s.
    pub lsr: u32,
    /// Delay since last SR, 1/65536 s.
    pub dlsr: u32,
}

/// An owned sender report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderReportRepr {
    /// SSRC of the sender.
    pub ssrc: Ssrc,
    /// Sender information.
    pub sender_info: SenderInfo,
    /// Report blocks (at most 31).
    pub report_blocks: Vec<ReportBlockRepr>,
    /// Profile-specific extension (a multiple of 4 octets).
    pub profile_extension: Vec<u8>,
}

/// An owned receiver report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiverReportRepr {
    /// SSRC of the packet sender.
    pub ssrc: Ssrc,
    /// Report blocks (at most 31).
    pub report_blocks: Vec<ReportBlockRepr>,
    /// Profile-specific extension (a multiple of 4 octets).
    pub profile_extension: Vec<u8>,
}

/// An owned SDES item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesItemRepr {
    /// Item type (not 0, which ends the item list).
    pub kind: SdesItemType,
    /// Item text, at most 255 octets.
    pub value: Vec<u8>,
}

/// An owned SDES chunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdesChunkRepr {
    /// Source described.
    pub ssrc: Ssrc,
    /// Items.
    pub items: Vec<SdesItemRepr>,
}

/// An owned SDES packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdesRepr {
    /// Chunks (at most 31).
    pub chunks: Vec<SdesChunkRepr>,
}

/// An owned BYE packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ByeRepr {
    /// Sources leaving (at most 31).
    pub ssrcs: Vec<Ssrc>,
    /// Reason for leaving, at most 255 octets.
    pub reason: Option<Vec<u8>>,
}

/// An owned APP packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppRepr {
    /// Subtype (0–31).
    pub subtype: u8,
    /// SSRC/CSRC of the sender.
    pub ssrc: Ssrc,
    /// Four-character name.
    pub name: [u8; 4],
    /// Application data (a multiple of 4 octets).
    pub data: Vec<u8>,
}

/// An owned VoIP Metrics Report Block (RFC 3611 §4.7). Fields use the
/// units of the wire format; `None` is emitted as 127 (unavailable), so
/// `Some(127)` does not survive a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VoipMetricsRepr {
    /// Source reported on.
    pub ssrc: Ssrc,
    /// Loss rate, in 1/256.
    pub loss_rate: u8,
    /// Discard rate, in 1/256.
    pub discard_rate: u8,
    /// Burst density, in 1/256.
    pub burst_density: u8,
    /// Gap density, in 1/256.
    pub gap_density: u8,
    /// Mean burst duration, ms.
    pub burst_duration: u16,
    /// Mean gap duration, ms.
    pub gap_duration: u16,
    /// Round-trip delay, ms.
    pub round_trip_delay: u16,
    /// End-system delay, ms.
    pub end_system_delay: u16,
    /// Signal level, dBm0.
    pub signal_level: Option<i8>,
    /// Noise level, dBm0.
    pub noise_level: Option<i8>,
    /// Residual echo return loss, dB.
    pub rerl: Option<u8>,
    /// Gap threshold.
    pub gmin: u8,
    /// R factor, 0–100.
    pub r_factor: Option<u8>,
    /// External R factor, 0–100.
    pub ext_r_factor: Option<u8>,
    /// MOS-LQ × 10.
    pub mos_lq: Option<u8>,
    /// MOS-CQ × 10.
    pub mos_cq: Option<u8>,
    /// Receiver configuration.
    pub rx_config: RxConfig,
    /// Nominal jitter buffer delay, ms.
    pub jb_nominal: u16,
    /// Maximum jitter buffer delay, ms.
    pub jb_maximum: u16,
    /// Absolute maximum jitter buffer delay, ms.
    pub jb_abs_max: u16,
}

/// An owned XR report block.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XrBlockRepr {
    /// VoIP Metrics (BT=7).
    VoipMetrics(VoipMetricsRepr),
    /// Any other block, raw.
    Other {
        /// Block type (BT), not 7.
        block_type: u8,
        /// The type-specific octet.
        type_specific: u8,
        /// Contents after the block header (a multiple of 4 octets).
        data: Vec<u8>,
    },
}

/// An owned XR packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XrRepr {
    /// SSRC of the packet sender.
    pub ssrc: Ssrc,
    /// Report blocks.
    pub blocks: Vec<XrBlockRepr>,
}

/// An owned RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpRepr {
    /// Sender report.
    SenderReport(SenderReportRepr),
    /// Receiver report.
    ReceiverReport(ReceiverReportRepr),
    /// Source description.
    Sdes(SdesRepr),
    /// Goodbye.
    Bye(ByeRepr),
    /// Application-defined.
    App(AppRepr),
    /// Extended report.
    Xr(XrRepr),
    /// Another packet type, kept raw.
    Unknown {
        /// Packet type.
        packet_type: u8,
        /// The 5-bit count field.
        count: u8,
        /// Body after the common header (a multiple of 4 octets).
        body: Vec<u8>,
    },
}

impl RtcpRepr {
    /// Converts a view into its owned form.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] if an SDES chunk or XR block is malformed.
    pub fn parse(pkt: &RtcpPacket<'_>) -> Result<Self, Error> {
        Ok(match pkt {
            RtcpPacket::SenderReport(sr) => Self::SenderReport(SenderReportRepr {
                ssrc: sr.ssrc(),
                sender_info: sr.sender_info(),
                report_blocks: sr.report_blocks().map(|b| b.to_repr()).collect(),
                profile_extension: sr.profile_extension().to_vec(),
            }),
            RtcpPacket::ReceiverReport(rr) => Self::ReceiverReport(ReceiverReportRepr {
                ssrc: rr.ssrc(),
                report_blocks: rr.report_blocks().map(|b| b.to_repr()).collect(),
                profile_extension: rr.profile_extension().to_vec(),
            }),
            RtcpPacket::Sdes(sdes) => {
                let mut chunks = Vec::new();
                for chunk in sdes.chunks() {
                    let chunk = chunk?;
                    chunks.push(SdesChunkRepr {
                        ssrc: chunk.ssrc(),
                        items: chunk
                            .items()
                            .map(|i| SdesItemRepr {
                                kind: i.kind,
                                value: i.value.to_vec(),
                            })
                            .collect(),
                    });
                }
                Self::Sdes(SdesRepr { chunks })
            }
            RtcpPacket::Bye(bye) => Self::Bye(ByeRepr {
                ssrcs: bye.ssrcs().collect(),
                reason: bye.reason().map(<[u8]>::to_vec),
            }),
            RtcpPacket::App(app) => Self::App(AppRepr {
                subtype: app.subtype(),
                ssrc: app.ssrc(),
                name: app.name(),
                data: app.data().to_vec(),
            }),
            RtcpPacket::Xr(xr) => {
                let mut blocks = Vec::new();
                for block in xr.blocks() {
                    blocks.push(match block? {
                        XrBlock::VoipMetrics(vm) => XrBlockRepr::VoipMetrics(vm.to_repr()),
                        XrBlock::Other {
                            block_type,
                            type_specific,
                            data,
                        } => XrBlockRepr::Other {
                            block_type,
                            type_specific,
                            data: data.to_vec(),
                        },
                    });
                }
                Self::Xr(XrRepr {
                    ssrc: xr.ssrc(),
                    blocks,
                })
            }
            RtcpPacket::Unknown(pt, bytes) => Self::Unknown {
                packet_type: *pt,
                count: bytes.first().map_or(0, |b| b & 0x1F),
                body: bytes.get(HEADER_LEN..).unwrap_or(&[]).to_vec(),
            },
        })
    }

    /// True for sender and receiver reports, which lead a compound.
    pub fn is_report(&self) -> bool {
        matches!(self, Self::SenderReport(_) | Self::ReceiverReport(_))
    }

    /// Length of the emitted packet in octets (header included, no padding).
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Writes the packet at the start of `buf` and returns its length.
    ///
    /// # Errors
    ///
    /// [`Error::Emit`] if a count exceeds 31, an SDES item or BYE reason
    /// exceeds 255 octets, an SDES item has type 0, an opaque field's length
    /// is not a multiple of 4, or `buf` is shorter than
    /// [`RtcpRepr::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(Error::Emit("buffer shorter than buffer_len()"));
        }
        if len > 4 * 65536 {
            return Err(Error::Emit("packet longer than the length field allows"));
        }
        let buf = &mut buf[..len];
        let (pt, count) = match self {
            Self::SenderReport(sr) => {
                check_multiple_of_4(&sr.profile_extension)?;
                let mut w = Writer::new(&mut buf[HEADER_LEN..]);
                w.u32(sr.ssrc.0);
                w.u64(sr.sender_info.ntp_timestamp);
                w.u32(sr.sender_info.rtp_timestamp);
                w.u32(sr.sender_info.packet_count);
                w.u32(sr.sender_info.octet_count);
                sr.report_blocks.iter().for_each(|b| w.report_block(b));
                w.bytes(&sr.profile_extension);
                (packet_type::SR, count5(sr.report_blocks.len())?)
            }
            Self::ReceiverReport(rr) => {
                check_multiple_of_4(&rr.profile_extension)?;
                let mut w = Writer::new(&mut buf[HEADER_LEN..]);
                w.u32(rr.ssrc.0);
                rr.report_blocks.iter().for_each(|b| w.report_block(b));
                w.bytes(&rr.profile_extension);
                (packet_type::RR, count5(rr.report_blocks.len())?)
            }
            Self::Sdes(sdes) => {
                let mut w = Writer::new(&mut buf[HEADER_LEN..]);
                for chunk in &sdes.chunks {
                    w.u32(chunk.ssrc.0);
                    let mut chunk_len = 4;
                    for item in &chunk.items {
                        if item.kind.0 == 0 {
                            return Err(Error::Emit("SDES item type 0"));
                        }
                        let n = u8::try_from(item.value.len())
                            .map_err(|_| Error::Emit("SDES item longer than 255 octets"))?;
                        w.u8(item.kind.0);
                        w.u8(n);
                        w.bytes(&item.value);
                        chunk_len += 2 + item.value.len();
                    }
                    //= https://www.rfc-editor.org/rfc/rfc3550#section-6.5
                    //# The list of items in each chunk
                    //# MUST be terminated by one or more null octets, the first of
                    //# which is interpreted as an item type of zero to denote the end
                    //# of the list.
                    let nulls = 4 - chunk_len % 4;
                    (0..nulls).for_each(|_| w.u8(0));
                }
                (packet_type::SDES, count5(sdes.chunks.len())?)
            }
            Self::Bye(bye) => {
                let mut w = Writer::new(&mut buf[HEADER_LEN..]);
                bye.ssrcs.iter().for_each(|s| w.u32(s.0));
                if let Some(reason) = &bye.reason {
                    let n = u8::try_from(reason.len())
                        .map_err(|_| Error::Emit("BYE reason longer than 255 octets"))?;
                    w.u8(n);
                    w.bytes(reason);
                    (0..pad4(1 + reason.len())).for_each(|_| w.u8(0));
                }
                (packet_type::BYE, count5(bye.ssrcs.len())?)
            }
            Self::App(app) => {
                check_multiple_of_4(&app.data)?;
                let mut w = Writer::new(&mut buf[HEADER_LEN..]);
                w.u32(app.ssrc.0);
                w.bytes(&app.name);
                w.bytes(&app.data);
                (packet_type::APP, count5(usize::from(app.subtype))?)
            }
            Self::Xr(xr) => {
                let mut w = Writer::new(&mut buf[HEADER_LEN..]);
                w.u32(xr.ssrc.0);
                for block in &xr.blocks {
                    match block {
                        XrBlockRepr::VoipMetrics(vm) => w.voip_metrics(vm),
                        XrBlockRepr::Other {
                            block_type,
                            type_specific,
                            data,
                        } => {
                            check_multiple_of_4(data)?;
                            let words = u16::try_from(data.len() / 4)
                                .map_err(|_| Error::Emit("XR block too long"))?;
                            w.u8(*block_type);
                            w.u8(*type_specific);
                            w.u16(words);
                            w.bytes(data);
                        }
                    }
                }
                (packet_type::XR, 0)
            }
            Self::Unknown {
                packet_type,
                count,
                body,
            } => {
                check_multiple_of_4(body)?;
                buf[HEADER_LEN..].copy_from_slice(body);
                (*packet_type, count5(usize::from(*count))?)
            }
        };
        //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
        //# The length of this RTCP packet in 32-bit words minus one,
        //# including the header and any padding.
        let words = (len / 4 - 1) as u16;
        buf[0] = (2 << 6) | count;
        buf[1] = pt;
        buf[2..4].copy_from_slice(&words.to_be_bytes());
        Ok(len)
    }

    fn body_len(&self) -> usize {
        match self {
            Self::SenderReport(sr) => {
                24 + REPORT_BLOCK_LEN * sr.report_blocks.len() + sr.profile_extension.len()
            }
            Self::ReceiverReport(rr) => {
                4 + REPORT_BLOCK_LEN * rr.report_blocks.len() + rr.profile_extension.len()
            }
            Self::Sdes(sdes) => sdes
                .chunks
                .iter()
                .map(|c| {
                    let items: usize = c.items.iter().map(|i| 2 + i.value.len()).sum();
                    let len = 4 + items;
                    len + 4 - len % 4
                })
                .sum(),
            Self::Bye(bye) => {
                4 * bye.ssrcs.len()
                    + bye
                        .reason
                        .as_ref()
                        .map_or(0, |r| 1 + r.len() + pad4(1 + r.len()))
            }
            Self::App(app) => 8 + app.data.len(),
            Self::Xr(xr) => {
                4 + xr
                    .blocks
                    .iter()
                    .map(|b| match b {
                        XrBlockRepr::VoipMetrics(_) => 36,
                        XrBlockRepr::Other { data, .. } => 4 + data.len(),
                    })
                    .sum::<usize>()
            }
            Self::Unknown { body, .. } => body.len(),
        }
    }
}

/// Length of a compound built from `packets` by [`emit_compound`].
pub fn compound_len(packets: &[RtcpRepr]) -> usize {
    packets.iter().map(RtcpRepr::buffer_len).sum()
}

/// Writes a compound packet: the SR/RR packets first (in their given
/// order), then the others (in their given order). Returns the length.
///
/// # Errors
///
/// As for [`RtcpRepr::emit`], for the first packet that fails.
pub fn emit_compound(packets: &[RtcpRepr], buf: &mut [u8]) -> Result<usize, Error> {
    //= https://www.rfc-editor.org/rfc/rfc3550#section-6.1
    //# The first RTCP packet in the compound packet MUST
    //# always be a report packet to facilitate header validation as
    //# described in Appendix A.2.
    if buf.len() < compound_len(packets) {
        return Err(Error::Emit("buffer shorter than compound_len()"));
    }
    let mut at = 0;
    let reports = packets.iter().filter(|p| p.is_report());
    let others = packets.iter().filter(|p| !p.is_report());
    for pkt in reports.chain(others) {
        at += pkt.emit(&mut buf[at..])?;
    }
    Ok(at)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Splits the first packet off a compound and builds its view.
fn next_packet(buf: &[u8]) -> Result<(RtcpPacket<'_>, &[u8]), Error> {
    if buf.len() < HEADER_LEN {
        return Err(Error::TooShort { len: buf.len() });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(Error::Version(version));
    }
    let length = 4 * (usize::from(be16(&buf[2..4])) + 1);
    if length > buf.len() {
        return Err(Error::LengthOverrun {
            length,
            available: buf.len(),
        });
    }
    let (packet, rest) = buf.split_at(length);
    let mut body = &packet[HEADER_LEN..];
    //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
    //# If the padding bit is set, this individual RTCP packet contains
    //# some additional padding octets at the end which are not part of
    //# the control information but are included in the length field.
    if buf[0] & 0x20 != 0 {
        let count = packet[length - 1];
        if count == 0 || usize::from(count) > body.len() {
            return Err(Error::Padding(count));
        }
        body = &body[..body.len() - usize::from(count)];
    }
    let count = buf[0] & 0x1F;
    let pt = buf[1];
    let need = |needed: usize| {
        if body.len() < needed {
            Err(Error::Truncated {
                packet_type: pt,
                needed,
                len: body.len(),
            })
        } else {
            Ok(())
        }
    };
    let pkt = match pt {
        packet_type::SR => {
            need(24 + REPORT_BLOCK_LEN * usize::from(count))?;
            RtcpPacket::SenderReport(SenderReport { count, body })
        }
        packet_type::RR => {
            need(4 + REPORT_BLOCK_LEN * usize::from(count))?;
            RtcpPacket::ReceiverReport(ReceiverReport { count, body })
        }
        packet_type::SDES => RtcpPacket::Sdes(Sdes { count, body }),
        packet_type::BYE => {
            need(4 * usize::from(count))?;
            let rest = &body[4 * usize::from(count)..];
            //= https://www.rfc-editor.org/rfc/rfc3550#section-6.6
            //# Optionally, the BYE packet MAY include an 8-bit octet count
            //# followed by that many octets of text indicating the reason for
            //# leaving
            if let Some((&n, text)) = rest.split_first()
                && usize::from(n) > text.len()
            {
                return Err(Error::Malformed("BYE reason runs past the packet"));
            }
            RtcpPacket::Bye(Bye { count, body })
        }
        packet_type::APP => {
            need(8)?;
            RtcpPacket::App(App {
                subtype: count,
                body,
            })
        }
        packet_type::XR => {
            need(4)?;
            RtcpPacket::Xr(Xr { body })
        }
        _ => RtcpPacket::Unknown(pt, packet),
    };
    Ok((pkt, rest))
}

/// Splits one SDES chunk (SSRC, items, null terminator padded to 32 bits)
/// off the front of `buf`.
fn split_sdes_chunk(buf: &[u8]) -> Result<(SdesChunk<'_>, &[u8]), Error> {
    let ssrc = buf
        .get(0..4)
        .ok_or(Error::Malformed("SDES chunk shorter than its SSRC"))?;
    let mut at = 4;
    loop {
        match buf.get(at) {
            None => return Err(Error::Malformed("SDES chunk without terminating null")),
            Some(0) => break,
            Some(_) => {
                let len = *buf
                    .get(at + 1)
                    .ok_or(Error::Malformed("SDES item without length"))?;
                at += 2 + usize::from(len);
                if at > buf.len() {
                    return Err(Error::Malformed("SDES item runs past the packet"));
                }
            }
        }
    }
    let items = &buf[4..at];
    // The null octet, then up to the next 32-bit boundary.
    let end = at + 1 + pad4(at + 1);
    if end > buf.len() {
        return Err(Error::Malformed("SDES chunk padding runs past the packet"));
    }
    Ok((
        SdesChunk {
            ssrc: Ssrc(be32(ssrc)),
            items,
        },
        &buf[end..],
    ))
}

/// Splits one XR block off the front of `buf`.
fn split_xr_block(buf: &[u8]) -> Result<(XrBlock<'_>, &[u8]), Error> {
    //= https://www.rfc-editor.org/rfc/rfc3611#section-3
    //# block length: 16 bits
    //#    The length of this report block, including the header, in 32-
    //#    bit words minus one.
    let head = buf
        .get(0..4)
        .ok_or(Error::Malformed("XR block header truncated"))?;
    let len = 4 * usize::from(be16(&head[2..4]));
    let data = buf
        .get(4..4 + len)
        .ok_or(Error::Malformed("XR block runs past the packet"))?;
    let rest = &buf[4 + len..];
    let block = if head[0] == XR_VOIP_METRICS {
        //= https://www.rfc-editor.org/rfc/rfc3611#section-4.7
        //# block length: 16 bits
        //#    The constant 8, in accordance with the definition of this field
        //#    in Section 3.
        let data = data
            .try_into()
            .map_err(|_| Error::Malformed("VoIP Metrics block length is not 8"))?;
        XrBlock::VoipMetrics(VoipMetrics { data })
    } else {
        XrBlock::Other {
            block_type: head[0],
            type_specific: head[1],
            data,
        }
    };
    Ok((block, rest))
}

/// `None` for the "unavailable" value 127.
fn sentinel(v: u8) -> Option<u8> {
    (v != UNAVAILABLE).then_some(v)
}

fn unsentinel(v: Option<u8>) -> u8 {
    v.unwrap_or(UNAVAILABLE)
}

/// Octets needed after `len` to reach a multiple of 4.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn check_multiple_of_4(data: &[u8]) -> Result<(), Error> {
    if data.len().is_multiple_of(4) {
        Ok(())
    } else {
        Err(Error::Emit("opaque field length not a multiple of 4"))
    }
}

/// A count for the 5-bit count field.
fn count5(n: usize) -> Result<u8, Error> {
    u8::try_from(n)
        .ok()
        .filter(|&n| n <= 31)
        .ok_or(Error::Emit("count over 31"))
}

#[inline]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Sequential writer over a buffer already checked to be long enough.
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    fn report_block(&mut self, b: &ReportBlockRepr) {
        self.u32(b.ssrc.0);
        self.u8(b.fraction_lost);
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF);
        self.bytes(&lost.to_be_bytes()[1..4]);
        self.u32(b.extended_highest_seq);
        self.u32(b.jitter);
        self.u32(b.lsr);
        self.u32(b.dlsr);
    }

    fn voip_metrics(&mut self, vm: &VoipMetricsRepr) {
        self.u8(XR_VOIP_METRICS);
        self.u8(0);
        self.u16(8);
        self.u32(vm.ssrc.0);
        self.bytes(&[
            vm.loss_rate,
            vm.discard_rate,
            vm.burst_density,
            vm.gap_density,
        ]);
        self.u16(vm.burst_duration);
        self.u16(vm.gap_duration);
        self.u16(vm.round_trip_delay);
        self.u16(vm.end_system_delay);
        self.bytes(&[
            unsentinel(vm.signal_level.map(|v| v as u8)),
            unsentinel(vm.noise_level.map(|v| v as u8)),
            unsentinel(vm.rerl),
            vm.gmin,
            unsentinel(vm.r_factor),
            unsentinel(vm.ext_r_factor),
            unsentinel(vm.mos_lq),
            unsentinel(vm.mos_cq),
            vm.rx_config.to_byte(),
            0,
        ]);
        self.u16(vm.jb_nominal);
        self.u16(vm.jb_maximum);
        self.u16(vm.jb_abs_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn round_trip(bytes: &[u8]) -> Vec<RtcpRepr> {
        let reprs: Vec<RtcpRepr> = Compound::new(bytes)
            .map(|p| RtcpRepr::parse(&p.unwrap()).unwrap())
            .collect();
        let mut out = vec![0u8; compound_len(&reprs)];
        assert_eq!(emit_compound(&reprs, &mut out).unwrap(), bytes.len());
        assert_eq!(out, bytes);
        reprs
    }

    /// SR + RR from Wireshark's SIP_CALL_RTP_G711 sample (UDP 8001 → 40377).
    #[test]
    fn real_sr_rr_compound() {
        let bytes = hex("81c8000cd2bd4e3ec59286d4e6e978d5000001400000000200000140
             d2bd4e3e00000000000200020000000086d4e6e900000001
             81c90007d2bd4e3e0000000000000000000000000000000086d4e6e900000001");
        let mut it = Compound::new(&bytes);
        let Some(Ok(RtcpPacket::SenderReport(sr))) = it.next() else {
            panic!("SR expected")
        };
        assert_eq!(sr.ssrc(), Ssrc(0xd2bd4e3e));
        assert_eq!(sr.ntp_timestamp(), 0xc59286d4_e6e978d5);
        assert_eq!(sr.rtp_timestamp(), 320);
        assert_eq!(sr.packet_count(), 2);
        assert_eq!(sr.octet_count(), 320);
        let blocks: Vec<_> = sr.report_blocks().collect();
        assert_eq!(blocks.len(), 1);
        let b = blocks[0];
        assert_eq!(b.ssrc(), Ssrc(0xd2bd4e3e));
        assert_eq!(b.fraction_lost(), 0);
        assert_eq!(b.cumulative_lost(), 0);
        assert_eq!(b.extended_highest_seq(), 0x0002_0002);
        assert_eq!(b.jitter(), 0);
        assert_eq!(b.lsr(), 0x86d4e6e9);
        assert_eq!(b.lsr(), ntp_middle_32(sr.ntp_timestamp()));
        assert_eq!(b.dlsr(), 1);
        assert!(sr.profile_extension().is_empty());
        let Some(Ok(RtcpPacket::ReceiverReport(rr))) = it.next() else {
            panic!("RR expected")
        };
        assert_eq!(rr.ssrc(), Ssrc(0xd2bd4e3e));
        assert_eq!(rr.report_blocks().count(), 1);
        assert!(it.next().is_none());
        round_trip(&bytes);
    }

    /// SR + SDES (CNAME, TOOL) + BYE with reason from Wireshark's aaa.pcap
    /// sample (Nero SIPPS).
    #[test]
    fn real_sr_sdes_bye_compound() {
        let bytes = hex("80c800063796cb7142c907ca5efac603000024c3000000090000060c
             81ca000b3796cb71011d31313839343239372d3434333261396638403139322e3136382e312e32
             06055349505053000081cb00063796cb711073657373696f6e2073687574646f776e000000");
        let pkts: Vec<_> = Compound::new(&bytes).map(Result::unwrap).collect();
        assert_eq!(pkts.len(), 3);
        let RtcpPacket::Sdes(sdes) = pkts[1] else {
            panic!("SDES expected")
        };
        let chunk = sdes.chunks().next().unwrap().unwrap();
        assert_eq!(chunk.ssrc(), Ssrc(0x3796cb71));
        assert_eq!(chunk.cname(), Some(&b"11894297-4432a9f8@192.168.1.2"[..]));
        let items: Vec<_> = chunk.items().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].kind, SdesItemType::TOOL);
        assert_eq!(items[1].value, b"SIPPS");
        let RtcpPacket::Bye(bye) = pkts[2] else {
            panic!("BYE expected")
        };
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), vec![Ssrc(0x3796cb71)]);
        assert_eq!(bye.reason(), Some(&b"session shutdown"[..]));
        round_trip(&bytes);
    }

    /// A hand-built XR packet: VoIP Metrics block with every field set to a
    /// distinct value (RFC 3611 §4.7 layout), followed by a raw
    /// Receiver Reference Time block (BT=4, §4.4).
    #[test]
    fn xr_voip_metrics_block() {
        let bytes = hex("80cf000d 11223344
             07000008 55667788
             0d 05 40 02 0078 0bb8 0096 0028 ed b5 7f 10 5d 7f 2a 7f
             e3 00 003c 0078 00c8
             04000002 e6e978d5 86d4e6e9");
        let pkts: Vec<_> = Compound::new(&bytes).map(Result::unwrap).collect();
        let RtcpPacket::Xr(xr) = pkts[0] else {
            panic!("XR expected")
        };
        assert_eq!(xr.ssrc(), Ssrc(0x11223344));
        let blocks: Vec<_> = xr.blocks().map(Result::unwrap).collect();
        assert_eq!(blocks.len(), 2);
        let XrBlock::VoipMetrics(vm) = blocks[0] else {
            panic!("VoIP metrics expected")
        };
        assert_eq!(vm.ssrc(), Ssrc(0x55667788));
        assert_eq!(vm.loss_rate(), 13);
        assert_eq!(vm.discard_rate(), 5);
        assert_eq!(vm.burst_density(), 64);
        assert_eq!(vm.gap_density(), 2);
        assert_eq!(vm.burst_duration(), 120);
        assert_eq!(vm.gap_duration(), 3000);
        assert_eq!(vm.round_trip_delay(), 150);
        assert_eq!(vm.end_system_delay(), 40);
        assert_eq!(vm.signal_level(), Some(-19));
        assert_eq!(vm.noise_level(), Some(-75));
        assert_eq!(vm.rerl(), None);
        assert_eq!(vm.gmin(), 16);
        assert_eq!(vm.r_factor(), Some(93));
        assert_eq!(vm.ext_r_factor(), None);
        assert_eq!(vm.mos_lq(), Some(42));
        assert_eq!(vm.mos_cq(), None);
        assert_eq!(
            vm.rx_config(),
            RxConfig {
                plc: Plc::Enhanced,
                jitter_buffer: JitterBufferMode::NonAdaptive,
                jb_rate: 3,
            }
        );
        assert_eq!(vm.jb_nominal(), 60);
        assert_eq!(vm.jb_maximum(), 120);
        assert_eq!(vm.jb_abs_max(), 200);
        let XrBlock::Other {
            block_type,
            type_specific,
            data,
        } = blocks[1]
        else {
            panic!("raw block expected")
        };
        assert_eq!((block_type, type_specific, data.len()), (4, 0, 8));
        round_trip(&bytes);
    }

    #[test]
    fn negative_cumulative_lost_is_sign_extended() {
        // RR with one block: cumulative lost 0xFFFFFE = -2 (duplicates).
        let bytes = hex("81c90007 00000001 00000002 00fffffe 0001000a 00000003 00000000 00000000");
        let Some(Ok(RtcpPacket::ReceiverReport(rr))) = Compound::new(&bytes).next() else {
            panic!("RR expected")
        };
        let b = rr.report_blocks().next().unwrap();
        assert_eq!(b.cumulative_lost(), -2);
        assert_eq!(b.extended_highest_seq(), 65546);
        round_trip(&bytes);
        // Emission saturates at the 24-bit signed range.
        let mut repr = b.to_repr();
        repr.cumulative_lost = -20_000_000;
        let rr = RtcpRepr::ReceiverReport(ReceiverReportRepr {
            ssrc: Ssrc(1),
            report_blocks: vec![repr],
            profile_extension: vec![],
        });
        let mut out = vec![0u8; rr.buffer_len()];
        rr.emit(&mut out).unwrap();
        assert_eq!(&out[13..16], &[0x80, 0, 0]);
    }

    #[test]
    fn padding_and_unknown_types() {
        // RR without blocks, padded by 4 octets, then an RTPFB (205).
        let bytes = hex("a0c90002 00000001 00000004 8dcd0002 00000001 00000002");
        let pkts: Vec<_> = Compound::new(&bytes).map(Result::unwrap).collect();
        assert_eq!(pkts.len(), 2);
        let RtcpPacket::ReceiverReport(rr) = pkts[0] else {
            panic!()
        };
        assert!(rr.profile_extension().is_empty());
        assert_eq!(pkts[1].packet_type(), 205);
        let RtcpPacket::Unknown(205, raw) = pkts[1] else {
            panic!()
        };
        assert_eq!(raw.len(), 12);
        let repr = RtcpRepr::parse(&pkts[1]).unwrap();
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn rejects_malformed() {
        let first_err = |b: &[u8]| Compound::new(b).find_map(Result::err);
        assert_eq!(first_err(&[0x80, 0xc8]), Some(Error::TooShort { len: 2 }));
        assert_eq!(first_err(&hex("40c90000")), Some(Error::Version(1)));
        assert_eq!(
            first_err(&hex("80c90002 00000001")),
            Some(Error::LengthOverrun {
                length: 12,
                available: 8
            })
        );
        assert_eq!(
            first_err(&hex("a0c90001 00000000")),
            Some(Error::Padding(0))
        );
        assert!(matches!(
            first_err(&hex("81c90001 00000001")),
            Some(Error::Truncated {
                packet_type: 201,
                needed: 28,
                len: 4
            })
        ));
        assert!(matches!(
            first_err(&hex("81cb0002 00000001 05616200")),
            Some(Error::Malformed(_))
        ));
        // After an error, the iterator stops.
        let bytes = hex("40c90000 80c90001 00000001");
        assert_eq!(Compound::new(&bytes).count(), 1);
        // SDES chunk without terminator; XR VoIP block with wrong length.
        let sdes = hex("81ca0002 00000001 01026162");
        let Some(Ok(RtcpPacket::Sdes(s))) = Compound::new(&sdes).next() else {
            panic!()
        };
        assert!(s.chunks().next().unwrap().is_err());
        let xr = hex("80cf0002 00000001 07000000");
        let Some(Ok(RtcpPacket::Xr(x))) = Compound::new(&xr).next() else {
            panic!()
        };
        assert!(x.blocks().next().unwrap().is_err());
    }

    #[test]
    fn compound_emission_puts_reports_first() {
        let bye = RtcpRepr::Bye(ByeRepr {
            ssrcs: vec![Ssrc(7)],
            reason: None,
        });
        let rr = RtcpRepr::ReceiverReport(ReceiverReportRepr {
            ssrc: Ssrc(7),
            ..Default::default()
        });
        let packets = [bye.clone(), rr.clone()];
        let mut out = vec![0u8; compound_len(&packets)];
        emit_compound(&packets, &mut out).unwrap();
        let parsed: Vec<_> = Compound::new(&out)
            .map(|p| RtcpRepr::parse(&p.unwrap()).unwrap())
            .collect();
        assert_eq!(parsed, vec![rr, bye]);
        let mut short = [0u8; 8];
        assert!(emit_compound(&packets, &mut short).is_err());
    }

    #[test]
    fn emit_rejects_bad_reprs() {
        let mut buf = vec![0u8; 4096];
        let too_many = RtcpRepr::Bye(ByeRepr {
            ssrcs: vec![Ssrc(1); 32],
            reason: None,
        });
        assert!(too_many.emit(&mut buf).is_err());
        let long_item = RtcpRepr::Sdes(SdesRepr {
            chunks: vec![SdesChunkRepr {
                ssrc: Ssrc(1),
                items: vec![SdesItemRepr {
                    kind: SdesItemType::NOTE,
                    value: vec![b'x'; 256],
                }],
            }],
        });
        assert!(long_item.emit(&mut buf).is_err());
        let odd_app = RtcpRepr::App(AppRepr {
            data: vec![1, 2, 3],
            ..Default::default()
        });
        assert!(odd_app.emit(&mut buf).is_err());
    }

    fn arb_block() -> impl Strategy<Value = ReportBlockRepr> {
        (
            any::<u32>(),
            any::<u8>(),
            -0x80_0000i32..=0x7F_FFFF,
            any::<[u32; 4]>(),
        )
            .prop_map(|(ssrc, fraction_lost, cumulative_lost, [a, b, c, d])| {
                ReportBlockRepr {
                    ssrc: Ssrc(ssrc),
                    fraction_lost,
                    cumulative_lost,
                    extended_highest_seq: a,
                    jitter: b,
                    lsr: c,
                    dlsr: d,
                }
            })
    }

    fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<[u8; 4]>(), 0..max)
            .prop_map(|w| w.into_iter().flatten().collect())
    }

    fn opt_avail() -> impl Strategy<Value = Option<u8>> {
        proptest::option::of(any::<u8>().prop_filter("127 is the sentinel", |&v| v != 127))
    }

    fn arb_voip() -> impl Strategy<Value = VoipMetricsRepr> {
        (
            (any::<u32>(), any::<[u8; 4]>(), any::<[u16; 4]>()),
            (opt_avail(), opt_avail(), opt_avail(), any::<u8>()),
            (opt_avail(), opt_avail(), opt_avail(), opt_avail()),
            (any::<u8>(), any::<[u16; 3]>()),
        )
            .prop_map(
                |((ssrc, r, d), (sig, noise, rerl, gmin), (rf, erf, lq, cq), (rx, jb))| {
                    VoipMetricsRepr {
                        ssrc: Ssrc(ssrc),
                        loss_rate: r[0],
                        discard_rate: r[1],
                        burst_density: r[2],
                        gap_density: r[3],
                        burst_duration: d[0],
                        gap_duration: d[1],
                        round_trip_delay: d[2],
                        end_system_delay: d[3],
                        signal_level: sig.map(|v| v as i8),
                        noise_level: noise.map(|v| v as i8),
                        rerl,
                        gmin,
                        r_factor: rf,
                        ext_r_factor: erf,
                        mos_lq: lq,
                        mos_cq: cq,
                        rx_config: RxConfig::from_byte(rx),
                        jb_nominal: jb[0],
                        jb_maximum: jb[1],
                        jb_abs_max: jb[2],
                    }
                },
            )
    }

    fn arb_repr() -> impl Strategy<Value = RtcpRepr> {
        let blocks = || proptest::collection::vec(arb_block(), 0..4);
        let sr = (
            any::<u32>(),
            any::<(u64, u32, u32, u32)>(),
            blocks(),
            words(3),
        )
            .prop_map(
                |(ssrc, (ntp, rtp, pc, oc), report_blocks, profile_extension)| {
                    RtcpRepr::SenderReport(SenderReportRepr {
                        ssrc: Ssrc(ssrc),
                        sender_info: SenderInfo {
                            ntp_timestamp: ntp,
                            rtp_timestamp: rtp,
                            packet_count: pc,
                            octet_count: oc,
                        },
                        report_blocks,
                        profile_extension,
                    })
                },
            );
        let rr = (any::<u32>(), blocks(), words(3)).prop_map(|(ssrc, report_blocks, ext)| {
            RtcpRepr::ReceiverReport(ReceiverReportRepr {
                ssrc: Ssrc(ssrc),
                report_blocks,
                profile_extension: ext,
            })
        });
        let item =
            (1u8..=255, proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(k, value)| {
                SdesItemRepr {
                    kind: SdesItemType(k),
                    value,
                }
            });
        let chunk =
            (any::<u32>(), proptest::collection::vec(item, 0..4)).prop_map(|(ssrc, items)| {
                SdesChunkRepr {
                    ssrc: Ssrc(ssrc),
                    items,
                }
            });
        let sdes = proptest::collection::vec(chunk, 0..4)
            .prop_map(|chunks| RtcpRepr::Sdes(SdesRepr { chunks }));
        let bye = (
            proptest::collection::vec(any::<u32>().prop_map(Ssrc), 0..5),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)),
        )
            .prop_map(|(ssrcs, reason)| RtcpRepr::Bye(ByeRepr { ssrcs, reason }));
        let app = (0u8..32, any::<u32>(), any::<[u8; 4]>(), words(4)).prop_map(
            |(subtype, ssrc, name, data)| {
                RtcpRepr::App(AppRepr {
                    subtype,
                    ssrc: Ssrc(ssrc),
                    name,
                    data,
                })
            },
        );
        let xr_block = prop_oneof![
            arb_voip().prop_map(XrBlockRepr::VoipMetrics),
            (
                any::<u8>().prop_filter("not BT 7", |&b| b != 7),
                any::<u8>(),
                words(4)
            )
                .prop_map(|(block_type, type_specific, data)| XrBlockRepr::Other {
                    block_type,
                    type_specific,
                    data
                }),
        ];
        let xr =
            (any::<u32>(), proptest::collection::vec(xr_block, 0..4)).prop_map(|(ssrc, blocks)| {
                RtcpRepr::Xr(XrRepr {
                    ssrc: Ssrc(ssrc),
                    blocks,
                })
            });
        prop_oneof![sr, rr, sdes, bye, app, xr]
    }

    proptest! {
        #[test]
        fn compound_round_trip(packets in proptest::collection::vec(arb_repr(), 1..5)) {
            let mut buf = vec![0u8; compound_len(&packets)];
            let len = emit_compound(&packets, &mut buf).unwrap();
            prop_assert_eq!(len, buf.len());
            let parsed: Vec<RtcpRepr> = Compound::new(&buf)
                .map(|p| RtcpRepr::parse(&p.unwrap()).unwrap())
                .collect();
            let mut expected: Vec<RtcpRepr> = packets.iter().filter(|p| p.is_report()).cloned().collect();
            expected.extend(packets.iter().filter(|p| !p.is_report()).cloned());
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            walk(&bytes);
        }

        #[test]
        fn random_rtcp_like_bytes_never_panic(
            first in 0x80u8..0xc0,
            pt in prop_oneof![200u8..=207, any::<u8>()],
            len in 0u16..20,
            rest in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut bytes = vec![first, pt];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&rest);
            walk(&bytes);
        }
    }

    /// Touches every accessor of every packet in `bytes`.
    fn walk(bytes: &[u8]) {
        for pkt in Compound::new(bytes) {
            let Ok(pkt) = pkt else { continue };
            let _ = RtcpRepr::parse(&pkt);
            match pkt {
                RtcpPacket::SenderReport(sr) => {
                    let _ = (sr.ssrc(), sr.sender_info(), sr.profile_extension());
                    sr.report_blocks().for_each(|b| {
                        let _ = b.to_repr();
                    });
                }
                RtcpPacket::ReceiverReport(rr) => {
                    let _ = (rr.ssrc(), rr.profile_extension());
                    rr.report_blocks().for_each(|b| {
                        let _ = b.to_repr();
                    });
                }
                RtcpPacket::Sdes(s) => {
                    for c in s.chunks().flatten() {
                        let _ = (c.ssrc(), c.cname(), c.items().count());
                    }
                }
                RtcpPacket::Bye(b) => {
                    let _ = (b.ssrcs().count(), b.reason());
                }
                RtcpPacket::App(a) => {
                    let _ = (a.subtype(), a.ssrc(), a.name(), a.data());
                }
                RtcpPacket::Xr(x) => {
                    let _ = x.ssrc();
                    for b in x.blocks().flatten() {
                        if let XrBlock::VoipMetrics(vm) = b {
                            let _ = vm.to_repr();
                        }
                    }
                }
                RtcpPacket::Unknown(_, raw) => {
                    let _ = raw.len();
                }
            }
        }
    }
}
