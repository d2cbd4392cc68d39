//! HEP3 (the Homer Encapsulation Protocol, version 3): a captured packet and
//! its addresses, ports and capture time, sent over UDP by capture agents
//! (heplify, Kamailio/OpenSIPS `siptrace`, our dataplane's mirror).
//!
//! Specification: sipcapture's "HEP3 Network Protocol Specification"
//! (<https://github.com/sipcapture/HEP>). A packet is the ID `HEP3`, a 16-bit total length, then chunks, each
//! `vendor id (16) | type (16) | length (16, header included) | value`.
//! Generic chunks (vendor 0) used here:
//!
//! | type | value |
//! |---|---|
//! | 1 | IP protocol family (8 bit: 2 = IPv4, 10 = IPv6) |
//! | 2 | IP protocol id (8 bit: 17 = UDP, 6 = TCP) |
//! | 3, 4 | IPv4 source, destination |
//! | 5, 6 | IPv6 source, destination |
//! | 7, 8 | source, destination port (16 bit) |
//! | 9, 10 | capture time: seconds, microseconds (32 bit each) |
//! | 11 | protocol type (8 bit: 1 = SIP, 4 = RTP, 5 = RTCP, …) |
//! | 12 | capture agent id (32 bit) |
//! | 15 | the captured payload |
//!
//! Chunks of other vendors and unknown types are skipped. Compressed
//! payloads (type 16) are refused ([`HepError::Unsupported`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Timestamp;
use crate::capture::{Packet, Transport};

/// Why a HEP3 packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HepError {
    /// Shorter than its header or its stated length, or a chunk overruns it.
    #[error("truncated HEP3 packet")]
    Truncated,
    /// A chunk has a length below its 6-byte header or a value of the wrong
    /// size for its type.
    #[error("malformed HEP3 chunk type {0}")]
    BadChunk(u16),
    /// A chunk the packet cannot be used without is missing.
    #[error("HEP3 chunk type {0} missing")]
    MissingChunk(u16),
    /// A feature this decoder does not handle (compressed payload, an IP
    /// protocol other than UDP/TCP).
    #[error("unsupported HEP3 content: {0}")]
    Unsupported(&'static str),
}

/// A decoded HEP3 packet; `payload` borrows from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hep3Repr<'a> {
    /// UDP or TCP.
    pub transport: Transport,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Capture time (µs resolution on the wire).
    pub ts: Timestamp,
    /// HEP protocol type (1 = SIP, 4 = RTP, 5 = RTCP…), 0 if absent.
    pub proto_type: u8,
    /// Capture agent id, if sent.
    pub capture_id: Option<u32>,
    /// The captured payload (a UDP payload, or TCP stream bytes).
    pub payload: &'a [u8],
}

mod field {
    pub const ID: std::ops::Range<usize> = 0..4;
    pub const LEN: std::ops::Range<usize> = 4..6;
    pub const CHUNKS: usize = 6;
    pub const CHUNK_HEADER: usize = 6;
}

const FAMILY: u16 = 1;
const PROTO: u16 = 2;
const SRC4: u16 = 3;
const DST4: u16 = 4;
const SRC6: u16 = 5;
const DST6: u16 = 6;
const SPORT: u16 = 7;
const DPORT: u16 = 8;
const TS_SEC: u16 = 9;
const TS_USEC: u16 = 10;
const PROTO_TYPE: u16 = 11;
const CAPTURE_ID: u16 = 12;
const PAYLOAD: u16 = 15;
const COMPRESSED: u16 = 16;

impl<'a> Hep3Repr<'a> {
    /// Decodes a datagram. `Ok(None)` when it does not start with `HEP3`
    /// (not ours: HEP v1/v2 or anything else).
    ///
    /// # Errors
    ///
    /// [`HepError`] when it is HEP3 but unusable. Never panics.
    pub fn parse(buf: &'a [u8]) -> Result<Option<Self>, HepError> {
        if buf.get(field::ID) != Some(b"HEP3".as_slice()) {
            return Ok(None);
        }
        let total = buf.get(field::LEN).ok_or(HepError::Truncated)?;
        let total = usize::from(u16::from_be_bytes([total[0], total[1]]));
        if total < field::CHUNKS || total > buf.len() {
            return Err(HepError::Truncated);
        }
        let buf = &buf[..total];
        let mut at = field::CHUNKS;
        let (mut family, mut proto) = (None, None);
        let (mut src4, mut dst4, mut src6, mut dst6) = (None, None, None, None);
        let (mut sport, mut dport, mut secs, mut usecs) = (None, None, None, None);
        let (mut proto_type, mut capture_id, mut payload) = (0, None, None);
        while at < buf.len() {
            let header = buf
                .get(at..at + field::CHUNK_HEADER)
                .ok_or(HepError::Truncated)?;
            let vendor = u16::from_be_bytes([header[0], header[1]]);
            let kind = u16::from_be_bytes([header[2], header[3]]);
            let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if len < field::CHUNK_HEADER {
                return Err(HepError::BadChunk(kind));
            }
            let value = buf
                .get(at + field::CHUNK_HEADER..at + len)
                .ok_or(HepError::Truncated)?;
            at += len;
            if vendor != 0 {
                continue;
            }
            match kind {
                FAMILY => family = Some(u8_of(kind, value)?),
                PROTO => proto = Some(u8_of(kind, value)?),
                SRC4 => src4 = Some(Ipv4Addr::from(array::<4>(kind, value)?)),
                DST4 => dst4 = Some(Ipv4Addr::from(array::<4>(kind, value)?)),
                SRC6 => src6 = Some(Ipv6Addr::from(array::<16>(kind, value)?)),
                DST6 => dst6 = Some(Ipv6Addr::from(array::<16>(kind, value)?)),
                SPORT => sport = Some(u16::from_be_bytes(array::<2>(kind, value)?)),
                DPORT => dport = Some(u16::from_be_bytes(array::<2>(kind, value)?)),
                TS_SEC => secs = Some(u32::from_be_bytes(array::<4>(kind, value)?)),
                TS_USEC => usecs = Some(u32::from_be_bytes(array::<4>(kind, value)?)),
                PROTO_TYPE => proto_type = u8_of(kind, value)?,
                CAPTURE_ID => capture_id = Some(u32::from_be_bytes(array::<4>(kind, value)?)),
                PAYLOAD => payload = Some(value),
                COMPRESSED => return Err(HepError::Unsupported("compressed payload")),
                _ => {}
            }
        }
        let transport = match proto.ok_or(HepError::MissingChunk(PROTO))? {
            17 => Transport::Udp,
            6 => Transport::Tcp,
            _ => return Err(HepError::Unsupported("IP protocol other than UDP or TCP")),
        };
        let (src, dst): (IpAddr, IpAddr) = match family.ok_or(HepError::MissingChunk(FAMILY))? {
            2 => (
                src4.ok_or(HepError::MissingChunk(SRC4))?.into(),
                dst4.ok_or(HepError::MissingChunk(DST4))?.into(),
            ),
            10 => (
                src6.ok_or(HepError::MissingChunk(SRC6))?.into(),
                dst6.ok_or(HepError::MissingChunk(DST6))?.into(),
            ),
            _ => return Err(HepError::BadChunk(FAMILY)),
        };
        let secs = secs.ok_or(HepError::MissingChunk(TS_SEC))?;
        let usecs = usecs.unwrap_or(0);
        if usecs >= 1_000_000 {
            return Err(HepError::BadChunk(TS_USEC));
        }
        Ok(Some(Self {
            transport,
            src: SocketAddr::new(src, sport.ok_or(HepError::MissingChunk(SPORT))?),
            dst: SocketAddr::new(dst, dport.ok_or(HepError::MissingChunk(DPORT))?),
            ts: Timestamp::from_secs_nanos(u64::from(secs), usecs * 1000),
            proto_type,
            capture_id,
            payload: payload.ok_or(HepError::MissingChunk(PAYLOAD))?,
        }))
    }

    /// Appends the HEP3 encoding to `out`. Times are cut to whole
    /// microseconds and seconds to 32 bits.
    ///
    /// # Errors
    ///
    /// [`HepError::Unsupported`] when the addresses' families differ or the
    /// packet would exceed 65,535 bytes.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), HepError> {
        let start = out.len();
        out.extend_from_slice(b"HEP3\0\0");
        let chunk = |out: &mut Vec<u8>, kind: u16, value: &[u8]| {
            out.extend_from_slice(&0u16.to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            // Lengths are checked once, on the whole packet, below.
            out.extend_from_slice(&((value.len() + 6).min(0xffff) as u16).to_be_bytes());
            out.extend_from_slice(value);
        };
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                chunk(out, FAMILY, &[2]);
                chunk(out, SRC4, &s.octets());
                chunk(out, DST4, &d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                chunk(out, FAMILY, &[10]);
                chunk(out, SRC6, &s.octets());
                chunk(out, DST6, &d.octets());
            }
            _ => {
                out.truncate(start);
                return Err(HepError::Unsupported("mixed address families"));
            }
        }
        let proto = match self.transport {
            Transport::Udp => 17,
            Transport::Tcp => 6,
        };
        chunk(out, PROTO, &[proto]);
        chunk(out, SPORT, &self.src.port().to_be_bytes());
        chunk(out, DPORT, &self.dst.port().to_be_bytes());
        chunk(out, TS_SEC, &(self.ts.secs() as u32).to_be_bytes());
        chunk(out, TS_USEC, &(self.ts.subsec_nanos() / 1000).to_be_bytes());
        chunk(out, PROTO_TYPE, &[self.proto_type]);
        if let Some(id) = self.capture_id {
            chunk(out, CAPTURE_ID, &id.to_be_bytes());
        }
        chunk(out, PAYLOAD, self.payload);
        let Ok(total) = u16::try_from(out.len() - start) else {
            out.truncate(start);
            return Err(HepError::Unsupported("packet longer than 65,535 bytes"));
        };
        out[start + 4..start + 6].copy_from_slice(&total.to_be_bytes());
        Ok(())
    }

    /// The packet as the capture decoder would have produced it.
    pub fn to_packet(&self) -> Packet<'a> {
        Packet {
            ts: self.ts,
            src: self.src,
            dst: self.dst,
            transport: self.transport,
            payload: self.payload,
            ip: None,
            stream_gap: false,
            truncated: false,
        }
    }
}

fn array<const N: usize>(kind: u16, value: &[u8]) -> Result<[u8; N], HepError> {
    value.try_into().map_err(|_| HepError::BadChunk(kind))
}

fn u8_of(kind: u16, value: &[u8]) -> Result<u8, HepError> {
    match value {
        [v] => Ok(*v),
        _ => Err(HepError::BadChunk(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A HEP3 packet as heplify sends it (IPv4/UDP SIP, capture id 2001),
    /// built byte by byte from the specification's chunk layout.
    const HEPLIFY: &[u8] = &[
        b'H', b'E', b'P', b'3', 0x00, 0x6e, // id, total length 110
        0, 0, 0, 1, 0, 7, 2, // family IPv4
        0, 0, 0, 2, 0, 7, 17, // UDP
        0, 0, 0, 3, 0, 10, 192, 0, 2, 1, // src
        0, 0, 0, 4, 0, 10, 192, 0, 2, 2, // dst
        0, 0, 0, 7, 0, 8, 0x13, 0xc4, // sport 5060
        0, 0, 0, 8, 0, 8, 0x13, 0xc5, // dport 5061
        0, 0, 0, 9, 0, 10, 0x69, 0x25, 0x13, 0x80, // 1764037504 s
        0, 0, 0, 10, 0, 10, 0, 0x01, 0xe2, 0x40, // 123456 µs
        0, 0, 0, 11, 0, 7, 1, // SIP
        0, 0, 0, 12, 0, 10, 0, 0, 0x07, 0xd1, // capture id 2001
        0x00, 0x26, 0, 99, 0, 8, 0xab, 0xcd, // another vendor's chunk: skipped
        0, 0, 0, 15, 0, 9, b'B', b'Y', b'E', // payload
    ];

    #[test]
    fn decodes_a_heplify_style_packet() {
        let hep = Hep3Repr::parse(HEPLIFY).unwrap().unwrap();
        assert_eq!(hep.transport, Transport::Udp);
        assert_eq!(hep.src, "192.0.2.1:5060".parse().unwrap());
        assert_eq!(hep.dst, "192.0.2.2:5061".parse().unwrap());
        assert_eq!(
            hep.ts,
            Timestamp::from_secs_nanos(1_764_037_504, 123_456_000)
        );
        assert_eq!((hep.proto_type, hep.capture_id), (1, Some(2001)));
        assert_eq!(hep.payload, b"BYE");
        // Emitting leaves out the foreign chunk; parsing it gives the same.
        let mut out = Vec::new();
        hep.emit(&mut out).unwrap();
        assert_eq!(out.len(), HEPLIFY.len() - 8);
        assert_eq!(Hep3Repr::parse(&out).unwrap().unwrap(), hep);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            Hep3Repr::parse(b"\x01\x10\x02"),
            Ok(None),
            "HEP v1 is not ours"
        );
        assert_eq!(Hep3Repr::parse(b"HEP3"), Err(HepError::Truncated));
        let mut long = HEPLIFY.to_vec();
        long[5] += 1;
        assert_eq!(Hep3Repr::parse(&long), Err(HepError::Truncated));
        let mut no_payload = HEPLIFY[..HEPLIFY.len() - 9].to_vec();
        no_payload[5] = no_payload.len() as u8;
        assert_eq!(
            Hep3Repr::parse(&no_payload),
            Err(HepError::MissingChunk(PAYLOAD))
        );
        let mut bad = HEPLIFY.to_vec();
        bad[11] = 3; // family chunk length 3 < 6
        assert_eq!(Hep3Repr::parse(&bad), Err(HepError::BadChunk(FAMILY)));
        let mut sctp = HEPLIFY.to_vec();
        sctp[19] = 132;
        assert!(matches!(
            Hep3Repr::parse(&sctp),
            Err(HepError::Unsupported(_))
        ));
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).into(), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv6Addr::from(ip).into(), p)),
        ]
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(
            v6 in any::<bool>(),
            a in addr(), b in addr(),
            tcp in any::<bool>(),
            secs in any::<u32>(), usecs in 0u32..1_000_000,
            proto_type in any::<u8>(), capture_id in any::<Option<u32>>(),
            payload in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            // Same family on both sides.
            let fix = |x: SocketAddr| match (v6, x.ip()) {
                (false, IpAddr::V6(ip)) => SocketAddr::new(Ipv4Addr::from(ip.octets()[..4].try_into().unwrap_or([0; 4])).into(), x.port()),
                (true, IpAddr::V4(ip)) => SocketAddr::new(ip.to_ipv6_mapped().into(), x.port()),
                _ => x,
            };
            let repr = Hep3Repr {
                transport: if tcp { Transport::Tcp } else { Transport::Udp },
                src: fix(a), dst: fix(b),
                ts: Timestamp::from_secs_nanos(u64::from(secs), usecs * 1000),
                proto_type, capture_id, payload: &payload,
            };
            let mut out = Vec::new();
            repr.emit(&mut out).unwrap();
            prop_assert_eq!(Hep3Repr::parse(&out).unwrap().unwrap(), repr);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = b"HEP3".to_vec();
            buf.extend_from_slice(&bytes);
            let _ = Hep3Repr::parse(&buf);
            let _ = Hep3Repr::parse(&bytes);
        }
    }
}
