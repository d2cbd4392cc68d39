//! Sans-IO decoding of frames down to UDP datagrams and TCP stream bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use super::ipfrag::{FragKey, FragResult, FragTable};
use super::tcp::{Delivery, TcpTable};
use super::writer::{checksum_add, checksum_finish};
use super::{Frame, LinkType};
use crate::types::Timestamp;

/// Transport protocol of a decoded [`Packet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A complete UDP datagram (reassembled if it was fragmented).
    Udp,
    /// Newly contiguous bytes of one direction of a TCP stream.
    Tcp,
}

/// A UDP datagram or a piece of a TCP stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time of the frame that completed this packet.
    pub ts: Timestamp,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// The UDP payload, or the newly contiguous TCP bytes.
    pub payload: &'a [u8],
    /// Byte range of the IP packet (header included, link padding
    /// excluded) inside the frame's data, when `payload` lies within this
    /// one frame; `None` when it came from fragment or stream reassembly.
    pub ip: Option<Range<usize>>,
    /// TCP only: bytes of this direction were given up on just before
    /// `payload` (see [`DecoderConfig::max_tcp_buffered`]), so a stream
    /// parser must resynchronise.
    pub stream_gap: bool,
    /// UDP only: the capture's snap length cut the datagram, so `payload`
    /// holds only its first bytes (enough for RTP header statistics).
    pub truncated: bool,
}

/// Limits of the [`Decoder`]'s reassembly state. Times are in nanoseconds
/// of capture time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecoderConfig {
    /// Drop incomplete fragmented datagrams this long after their first
    /// fragment (ns; default 30 s, Linux's `ipfrag_time`).
    pub frag_timeout_ns: u64,
    /// Most datagrams reassembled at once (default 1024); the oldest is
    /// evicted beyond.
    pub max_frag_datagrams: usize,
    /// Most bytes held for fragment reassembly (default 16 MiB).
    pub max_frag_bytes: usize,
    /// Most TCP directions tracked at once (default 4096).
    pub max_tcp_flows: usize,
    /// Most out-of-order bytes buffered per TCP direction (default 256 KiB);
    /// beyond, the gap is skipped and counted.
    pub max_tcp_buffered: usize,
    /// Forget TCP directions idle this long (ns; default 300 s).
    pub tcp_idle_ns: u64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            frag_timeout_ns: 30_000_000_000,
            max_frag_datagrams: 1024,
            max_frag_bytes: 16 << 20,
            max_tcp_flows: 4096,
            max_tcp_buffered: 256 << 10,
            tcp_idle_ns: 300_000_000_000,
        }
    }
}

/// What the [`Decoder`] saw and dropped. Every frame that yields no packet
/// is counted somewhere here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeStats {
    /// Frames given to [`Decoder::decode`].
    pub frames: u64,
    /// Frames whose link type is not supported.
    pub unsupported_link: u64,
    /// Frames carrying something other than IPv4/IPv6 (ARP, LLDP, …).
    pub non_ip: u64,
    /// Frames cut short (snap length or damage) before the end of a header
    /// or of the length the IP/UDP header announces.
    pub truncated: u64,
    /// Headers with impossible values (bad version, lengths too small).
    pub malformed: u64,
    /// IPv4 packets seen.
    pub ipv4: u64,
    /// IPv6 packets seen.
    pub ipv6: u64,
    /// IPv4 headers whose checksum is wrong (counted, not dropped: capture
    /// on a sending host sees offloaded checksums).
    pub ipv4_bad_checksum: u64,
    /// ICMP and ICMPv6 packets (never returned, even when they quote UDP).
    pub icmp: u64,
    /// IP packets of other protocols (SCTP, ESP, GRE, …).
    pub other_protocol: u64,
    /// UDP datagrams returned.
    pub udp: u64,
    /// UDP datagrams returned with a payload cut short by the snap length
    /// (also counted in `udp`).
    pub udp_truncated: u64,
    /// IP fragments seen.
    pub fragments: u64,
    /// Datagrams completed from fragments.
    pub fragments_reassembled: u64,
    /// Incomplete datagrams dropped after the timeout.
    pub fragments_expired: u64,
    /// Incomplete datagrams evicted to stay within the memory bounds.
    pub fragments_evicted: u64,
    /// Fragments overlapping earlier ones (first copy wins) or inconsistent
    /// with the datagram's length (datagram dropped).
    pub fragments_overlapping: u64,
    /// Fragments fully duplicating bytes already received.
    pub fragments_duplicate: u64,
    /// Fragments reaching past 65,535 bytes (datagram dropped).
    pub fragments_too_big: u64,
    /// TCP segments seen.
    pub tcp_segments: u64,
    /// TCP segments arriving beyond a gap.
    pub tcp_out_of_order: u64,
    /// TCP segments (wholly or partly) carrying bytes already delivered.
    pub tcp_retransmissions: u64,
    /// Gaps given up on because a direction buffered too much.
    pub tcp_gaps: u64,
    /// Bytes skipped over by those gaps.
    pub tcp_gap_bytes: u64,
    /// TCP directions evicted to stay within `max_tcp_flows`.
    pub tcp_flows_evicted: u64,
    /// TCP directions dropped after being idle.
    pub tcp_flows_expired: u64,
}

/// Decodes frames into UDP datagrams and TCP stream bytes.
///
/// Driving contract: call [`Decoder::decode`] once per frame, in capture
/// order. Time advances only through frame timestamps: fragment and TCP
/// timeouts are checked against them, never against a clock. At most one
/// [`Packet`] comes out per frame; it borrows the frame on the fast path
/// (unfragmented UDP, in-order TCP) and the decoder's buffers after
/// reassembly.
pub struct Decoder {
    stats: DecodeStats,
    frags: FragTable,
    tcp: TcpTable,
    next_sweep: Timestamp,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the default limits.
    pub fn new() -> Self {
        Self::with_config(DecoderConfig::default())
    }

    /// A decoder with the given limits.
    pub fn with_config(config: DecoderConfig) -> Self {
        Decoder {
            stats: DecodeStats::default(),
            frags: FragTable::new(
                config.frag_timeout_ns,
                config.max_frag_datagrams,
                config.max_frag_bytes,
            ),
            tcp: TcpTable::new(
                config.max_tcp_flows,
                config.max_tcp_buffered,
                config.tcp_idle_ns,
            ),
            next_sweep: Timestamp(0),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Decodes one frame. Returns `None` for frames that carry no UDP
    /// payload or new TCP bytes (each counted in [`DecodeStats`]).
    pub fn decode<'a>(&'a mut self, frame: &Frame<'a>) -> Option<Packet<'a>> {
        self.stats.frames += 1;
        self.sweep(frame.ts);
        let data = frame.data;
        let ip_start = match link_payload(frame.link, data) {
            Link::Ip(offset) => offset,
            Link::NotIp => {
                self.stats.non_ip += 1;
                return None;
            }
            Link::Truncated => {
                self.stats.truncated += 1;
                return None;
            }
            Link::Unsupported => {
                self.stats.unsupported_link += 1;
                return None;
            }
        };
        let ip_bytes = data.get(ip_start..)?;
        let snapped = data.len() < frame.orig_len as usize;
        let l3 = parse_ip(ip_bytes, snapped, &mut self.stats)?;
        if l3.cut && (l3.frag.is_some() || l3.proto != PROTO_UDP) {
            // Only UDP is useful cut short (RTP headers for statistics).
            self.stats.truncated += 1;
            return None;
        }
        let ip_range = ip_start..ip_start + l3.ip_len;
        let mut proto = l3.proto;
        let (l4, reassembled): (&'a [u8], bool) = match l3.frag {
            None => (l3.payload, false),
            Some(frag) => {
                let key = FragKey {
                    src: l3.src,
                    dst: l3.dst,
                    proto: l3.proto,
                    id: frag.id,
                };
                match self.frags.insert(
                    key,
                    frag.offset,
                    frag.more,
                    l3.payload,
                    frame.ts,
                    &mut self.stats,
                ) {
                    FragResult::Complete => {
                        let out = &self.frags.out[..];
                        // Extension headers of the fragmentable part are
                        // only visible after reassembly.
                        if l3.src.is_ipv6() && is_ipv6_extension(l3.proto) {
                            match walk_ipv6_extensions(l3.proto, out, 0, &mut self.stats) {
                                Some((next, offset, None)) => {
                                    proto = next;
                                    (out.get(offset..)?, true)
                                }
                                Some((_, _, Some(_))) => {
                                    self.stats.malformed += 1;
                                    return None;
                                }
                                None => return None,
                            }
                        } else {
                            (out, true)
                        }
                    }
                    FragResult::Pending => return None,
                }
            }
        };
        match proto {
            PROTO_UDP => {
                let Some(hdr) = l4.get(..8) else {
                    self.stats.truncated += 1;
                    return None;
                };
                let sport = u16::from_be_bytes([hdr[0], hdr[1]]);
                let dport = u16::from_be_bytes([hdr[2], hdr[3]]);
                let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
                //= https://www.rfc-editor.org/rfc/rfc768
                //# Length  is the length  in octets  of this user datagram  including  this
                //# header  and the data.   (This  means the minimum value of the length is
                //# eight.)
                if len < 8 {
                    self.stats.malformed += 1;
                    return None;
                }
                let (payload, truncated) = match l4.get(8..len) {
                    Some(p) => (p, false),
                    None if l3.cut => (l4.get(8..)?, true),
                    None => {
                        self.stats.truncated += 1;
                        return None;
                    }
                };
                self.stats.udp += 1;
                self.stats.udp_truncated += u64::from(truncated);
                Some(Packet {
                    ts: frame.ts,
                    src: SocketAddr::new(l3.src, sport),
                    dst: SocketAddr::new(l3.dst, dport),
                    transport: Transport::Udp,
                    payload,
                    ip: (!reassembled).then_some(ip_range),
                    stream_gap: false,
                    truncated,
                })
            }
            PROTO_TCP => {
                let Some(hdr) = l4.get(..20) else {
                    self.stats.truncated += 1;
                    return None;
                };
                let sport = u16::from_be_bytes([hdr[0], hdr[1]]);
                let dport = u16::from_be_bytes([hdr[2], hdr[3]]);
                let seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
                let data_offset = usize::from(hdr[12] >> 4) * 4;
                let flags = hdr[13];
                if data_offset < 20 {
                    self.stats.malformed += 1;
                    return None;
                }
                let Some(segment) = l4.get(data_offset..) else {
                    self.stats.truncated += 1;
                    return None;
                };
                let src = SocketAddr::new(l3.src, sport);
                let dst = SocketAddr::new(l3.dst, dport);
                let delivery =
                    self.tcp
                        .segment((src, dst), seq, flags, segment, frame.ts, &mut self.stats)?;
                let (payload, ip, stream_gap) = match delivery {
                    Delivery::Direct(r) => {
                        (segment.get(r)?, (!reassembled).then_some(ip_range), false)
                    }
                    Delivery::Buffered { gap } => (&self.tcp.out[..], None, gap),
                };
                Some(Packet {
                    ts: frame.ts,
                    src,
                    dst,
                    transport: Transport::Tcp,
                    payload,
                    ip,
                    stream_gap,
                    truncated: false,
                })
            }
            PROTO_ICMP | PROTO_ICMPV6 => {
                self.stats.icmp += 1;
                None
            }
            _ => {
                self.stats.other_protocol += 1;
                None
            }
        }
    }

    fn sweep(&mut self, now: Timestamp) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = Timestamp(now.0.saturating_add(SWEEP_INTERVAL_NS));
        if !self.frags.is_empty() {
            self.frags.expire(now, &mut self.stats);
        }
        if !self.tcp.is_empty() {
            self.tcp.expire(now, &mut self.stats);
        }
    }
}

const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;

enum Link {
    Ip(usize),
    NotIp,
    Truncated,
    Unsupported,
}

/// Finds the offset of the IP header inside a frame.
fn link_payload(link: LinkType, data: &[u8]) -> Link {
    match link {
        LinkType::ETHERNET => {
            let Some(t) = be16(data, 12) else {
                return Link::Truncated;
            };
            ethertype_payload(t, data, 14)
        }
        LinkType::LINUX_SLL => match be16(data, 14) {
            Some(t) => ethertype_payload(t, data, 16),
            None => Link::Truncated,
        },
        LinkType::LINUX_SLL2 => match be16(data, 0) {
            Some(t) if data.len() >= 20 => ethertype_payload(t, data, 20),
            _ => Link::Truncated,
        },
        LinkType::RAW | LinkType(12) | LinkType(14) | LinkType::IPV4 | LinkType::IPV6 => {
            Link::Ip(0)
        }
        LinkType::NULL | LinkType::LOOP => {
            let Some(b) = data.get(..4) else {
                return Link::Truncated;
            };
            // The family is in the capturing host's byte order (NULL) or
            // network order (LOOP); small values tell which.
            let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let family = if le > 0xffff { le.swap_bytes() } else { le };
            match family {
                // AF_INET; AF_INET6 on Linux, BSDs, macOS/FreeBSD.
                2 | 10 | 24 | 28 | 30 => Link::Ip(4),
                _ => Link::NotIp,
            }
        }
        _ => Link::Unsupported,
    }
}

/// Follows VLAN tags and PPPoE to the IP header.
fn ethertype_payload(mut ethertype: u16, data: &[u8], mut offset: usize) -> Link {
    for _ in 0..8 {
        match ethertype {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => {
                return if data.len() > offset {
                    Link::Ip(offset)
                } else {
                    Link::Truncated
                };
            }
            // IEEE 802.1Q C-tag, 802.1ad S-tag, and the pre-standard 0x9100
            // outer tag: 2 bytes of tag control, then the inner EtherType.
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                let Some(t) = be16(data, offset + 2) else {
                    return Link::Truncated;
                };
                ethertype = t;
                offset += 4;
            }
            //= https://www.rfc-editor.org/rfc/rfc2516#section-6
            //# The PPPoE payload contains a PPP frame.  The frame begins with
            //# the PPP Protocol-ID.
            ETHERTYPE_PPPOE_SESSION => {
                // 6-byte PPPoE header, then the 2-byte PPP protocol field.
                let Some(proto) = be16(data, offset + 6) else {
                    return Link::Truncated;
                };
                offset += 8;
                ethertype = match proto {
                    0x0021 => ETHERTYPE_IPV4,
                    0x0057 => ETHERTYPE_IPV6,
                    _ => return Link::NotIp,
                };
            }
            _ => return Link::NotIp,
        }
    }
    Link::NotIp
}

struct FragInfo {
    id: u32,
    /// Offset of this fragment's data in the datagram payload, bytes.
    offset: u32,
    more: bool,
}

struct L3<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    payload: &'a [u8],
    /// Length of the IP packet (without link padding).
    ip_len: usize,
    frag: Option<FragInfo>,
    /// The packet is longer than the bytes captured (snap length).
    cut: bool,
}

/// `snapped`: the frame was cut by the capture's snap length, so an IP
/// packet longer than the bytes captured is accepted (marked `cut`).
fn parse_ip<'a>(ip: &'a [u8], snapped: bool, stats: &mut DecodeStats) -> Option<L3<'a>> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(ip, snapped, stats),
        Some(6) => parse_ipv6(ip, snapped, stats),
        Some(_) => {
            stats.malformed += 1;
            None
        }
        None => {
            stats.truncated += 1;
            None
        }
    }
}

fn parse_ipv4<'a>(ip: &'a [u8], snapped: bool, stats: &mut DecodeStats) -> Option<L3<'a>> {
    stats.ipv4 += 1;
    let Some(hdr) = ip.get(..20) else {
        stats.truncated += 1;
        return None;
    };
    //= https://www.rfc-editor.org/rfc/rfc791#section-3.1
    //# Internet Header Length is the length of the internet header in 32
    //# bit words, and thus points to the beginning of the data.  Note that
    //# the minimum value for a correct header is 5.
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    let total = match usize::from(u16::from_be_bytes([hdr[2], hdr[3]])) {
        // Outgoing TCP segmentation offload captures carry a zero total
        // length: take what was captured (as Wireshark does).
        0 => ip.len(),
        n => n,
    };
    if ihl < 20 || total < ihl {
        stats.malformed += 1;
        return None;
    }
    let (ip, cut) = match ip.get(..total) {
        Some(ip) => (ip, false),
        None if snapped => (ip, true),
        None => {
            stats.truncated += 1;
            return None;
        }
    };
    let Some(header) = ip.get(..ihl) else {
        stats.truncated += 1;
        return None;
    };
    if checksum_finish(checksum_add(0, header)) != 0 {
        stats.ipv4_bad_checksum += 1;
    }
    let flags_frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    //= https://www.rfc-editor.org/rfc/rfc791#section-3.1
    //# The fragment offset is measured in units of 8 octets (64 bits).
    let offset = u32::from(flags_frag & 0x1fff) * 8;
    let more = flags_frag & 0x2000 != 0;
    let frag = (more || offset > 0).then(|| FragInfo {
        id: u32::from(u16::from_be_bytes([hdr[4], hdr[5]])),
        offset,
        more,
    });
    Some(L3 {
        src: IpAddr::V4(Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15])),
        dst: IpAddr::V4(Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19])),
        proto: hdr[9],
        payload: ip.get(ihl..)?,
        ip_len: ip.len(),
        frag,
        cut,
    })
}

fn parse_ipv6<'a>(ip: &'a [u8], snapped: bool, stats: &mut DecodeStats) -> Option<L3<'a>> {
    stats.ipv6 += 1;
    let Some(hdr) = ip.get(..40) else {
        stats.truncated += 1;
        return None;
    };
    let plen = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    if plen == 0 {
        // Jumbograms (RFC 2675) are not used for voice.
        stats.other_protocol += 1;
        return None;
    }
    let (ip, cut) = match ip.get(..40 + plen) {
        Some(ip) => (ip, false),
        None if snapped => (ip, true),
        None => {
            stats.truncated += 1;
            return None;
        }
    };
    let src: [u8; 16] = hdr[8..24].try_into().ok()?;
    let dst: [u8; 16] = hdr[24..40].try_into().ok()?;
    let (next, offset, frag) = walk_ipv6_extensions(hdr[6], ip, 40, stats)?;
    let Some(payload) = ip.get(offset..) else {
        stats.truncated += 1;
        return None;
    };
    Some(L3 {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        proto: next,
        payload,
        ip_len: ip.len(),
        frag,
        cut,
    })
}

/// Skips IPv6 extension headers starting at `offset`, stopping at the upper
/// layer header or at a (non-atomic) Fragment header. Returns the next
/// header value, the offset of what follows, and the fragment details.
fn walk_ipv6_extensions(
    mut next: u8,
    ip: &[u8],
    mut offset: usize,
    stats: &mut DecodeStats,
) -> Option<(u8, usize, Option<FragInfo>)> {
    loop {
        match next {
            //= https://www.rfc-editor.org/rfc/rfc8200#section-4.3
            //# Hdr Ext Len         8-bit unsigned integer.  Length of the
            //#                     Hop-by-Hop Options header in 8-octet units,
            //#                     not including the first 8 octets.
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_AH => {
                let Some(ext) = ip.get(offset..offset + 2) else {
                    stats.truncated += 1;
                    return None;
                };
                let len = if next == EXT_AH {
                    (usize::from(ext[1]) + 2) * 4
                } else {
                    (usize::from(ext[1]) + 1) * 8
                };
                next = ext[0];
                offset += len;
            }
            //= https://www.rfc-editor.org/rfc/rfc8200#section-4.5
            //# Fragment Offset     13-bit unsigned integer.  The offset, in
            //#                     8-octet units, of the data following this
            //#                     header, relative to the start of the
            //#                     Fragmentable Part of the original packet.
            EXT_FRAGMENT => {
                let Some(ext) = ip.get(offset..offset + 8) else {
                    stats.truncated += 1;
                    return None;
                };
                let fo = u16::from_be_bytes([ext[2], ext[3]]);
                let fragment_offset = u32::from(fo >> 3) * 8;
                let more = fo & 1 != 0;
                next = ext[0];
                offset += 8;
                if more || fragment_offset > 0 {
                    let frag = FragInfo {
                        id: u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]),
                        offset: fragment_offset,
                        more,
                    };
                    return Some((next, offset, Some(frag)));
                }
                // An atomic fragment (RFC 6946): just skip the header.
            }
            _ => return Some((next, offset, None)),
        }
    }
}

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;

fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_AH)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}
