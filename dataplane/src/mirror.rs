//! Mirroring: copies of a session's packets for analysers and recorders,
//! without slowing forwarding.
//!
//! The relay core marks forwarding decisions of mirrored sessions
//! ([`crate::relay::Forward::mirror`]); the backend that executed the
//! forward then hands a [`MirrorPacket`] to its sinks:
//!
//! - an in-process lock-free SPSC ring ([`ring`], on the `ringbuf` crate)
//!   per worker, for NQS and MIS in the same process. A full ring drops the
//!   copy and counts it: the worker never waits for a consumer.
//! - HEP3 over UDP ([`emit_hep3`]) to a remote analyser (Homer,
//!   heplify-server, NQS on another host).
//!
//! Both encodings are sans-IO: bytes in, bytes out.

use std::net::{IpAddr, SocketAddr};

use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use wire::rtp::Kind;

use crate::relay::LegId;

/// One mirrored datagram, borrowing its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorPacket<'a> {
    /// The call.
    pub call_id: &'a str,
    /// The leg it was received on (whose party sent it).
    pub leg: LegId,
    /// RTP or RTCP.
    pub kind: Kind,
    /// The original sender.
    pub src: SocketAddr,
    /// The relay address it arrived on.
    pub dst: SocketAddr,
    /// Wall-clock arrival time: seconds since the Unix epoch.
    pub secs: u64,
    /// Wall-clock arrival time: microseconds within the second.
    pub micros: u32,
    /// The UDP payload.
    pub payload: &'a [u8],
}

// HEP3 (sipcapture's HEP3_rev12 specification, summarised): the ID
// "HEP3" (4 octets) and the total length (2 octets), then chunks of vendor
// ID (2), type ID (2), chunk length (2, header included) and value.
const HEP3_ID: &[u8; 4] = b"HEP3";
const CHUNK_FAMILY: u16 = 0x0001;
const CHUNK_PROTO_ID: u16 = 0x0002;
const CHUNK_SRC_V4: u16 = 0x0003;
const CHUNK_DST_V4: u16 = 0x0004;
const CHUNK_SRC_V6: u16 = 0x0005;
const CHUNK_DST_V6: u16 = 0x0006;
const CHUNK_SRC_PORT: u16 = 0x0007;
const CHUNK_DST_PORT: u16 = 0x0008;
const CHUNK_TS_SECS: u16 = 0x0009;
const CHUNK_TS_MICROS: u16 = 0x000a;
const CHUNK_PROTO_TYPE: u16 = 0x000b;
const CHUNK_CAPTURE_ID: u16 = 0x000c;
const CHUNK_PAYLOAD: u16 = 0x000f;
const CHUNK_CORRELATION: u16 = 0x0011;
/// HEP protocol types: RTP is 4, RTCP 5.
const PROTO_RTP: u8 = 0x04;
const PROTO_RTCP: u8 = 0x05;

/// Appends the HEP3 encapsulation of `p` to `out`, with capture agent id
/// `capture_id` and the Call-ID as correlation id. Returns `false` (and
/// appends nothing) if it would exceed 65,535 octets.
pub fn emit_hep3(p: &MirrorPacket<'_>, capture_id: u32, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.extend_from_slice(HEP3_ID);
    out.extend_from_slice(&[0, 0]);
    let v4 = matches!((p.src.ip(), p.dst.ip()), (IpAddr::V4(_), IpAddr::V4(_)));
    chunk(out, CHUNK_FAMILY, &[if v4 { 2 } else { 10 }]);
    chunk(out, CHUNK_PROTO_ID, &[17]);
    match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(out, CHUNK_SRC_V4, &s.octets());
            chunk(out, CHUNK_DST_V4, &d.octets());
        }
        (s, d) => {
            chunk(out, CHUNK_SRC_V6, &v6_octets(s));
            chunk(out, CHUNK_DST_V6, &v6_octets(d));
        }
    }
    chunk(out, CHUNK_SRC_PORT, &p.src.port().to_be_bytes());
    chunk(out, CHUNK_DST_PORT, &p.dst.port().to_be_bytes());
    chunk(out, CHUNK_TS_SECS, &(p.secs as u32).to_be_bytes());
    chunk(out, CHUNK_TS_MICROS, &p.micros.to_be_bytes());
    let proto = match p.kind {
        Kind::Rtp => PROTO_RTP,
        Kind::Rtcp => PROTO_RTCP,
    };
    chunk(out, CHUNK_PROTO_TYPE, &[proto]);
    chunk(out, CHUNK_CAPTURE_ID, &capture_id.to_be_bytes());
    chunk(out, CHUNK_CORRELATION, p.call_id.as_bytes());
    chunk(out, CHUNK_PAYLOAD, p.payload);
    let Ok(total) = u16::try_from(out.len() - start) else {
        out.truncate(start);
        return false;
    };
    out[start + 4..start + 6].copy_from_slice(&total.to_be_bytes());
    true
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn chunk(out: &mut Vec<u8>, type_id: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&type_id.to_be_bytes());
    // Values over 65,529 octets make the whole packet too long; emit_hep3
    // refuses it afterwards, so the truncated length is never sent.
    let len = u16::try_from(6 + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// A ring of `bytes` octets shared by one producer (a relay worker) and one
/// consumer (NQS, MIS).
pub fn ring(bytes: usize) -> (MirrorProducer, MirrorConsumer) {
    let (prod, cons) = HeapRb::<u8>::new(bytes.max(64)).split();
    (
        MirrorProducer {
            prod,
            dropped: 0,
            pushed: 0,
        },
        MirrorConsumer {
            cons,
            buf: Vec::new(),
        },
    )
}

/// The worker's end of a mirror ring.
pub struct MirrorProducer {
    prod: ringbuf::HeapProd<u8>,
    dropped: u64,
    pushed: u64,
}

impl std::fmt::Debug for MirrorProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorProducer")
            .field("pushed", &self.pushed)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl MirrorProducer {
    /// Copies `p` into the ring, or drops it (and counts it) when the ring
    /// lacks room. Never blocks.
    pub fn push(&mut self, p: &MirrorPacket<'_>) -> bool {
        let mut record = [0u8; RECORD_HEADER + 255];
        let call = &p.call_id.as_bytes()[..p.call_id.len().min(255)];
        let head = encode_header(p, call, &mut record);
        let total = head + p.payload.len();
        if total > usize::from(u16::MAX) || self.prod.vacant_len() < 2 + total {
            self.dropped += 1;
            return false;
        }
        // Room was checked just above and only this producer adds data,
        // so every slice goes in whole.
        self.prod.push_slice(&(total as u16).to_be_bytes());
        self.prod.push_slice(&record[..head]);
        self.prod.push_slice(p.payload);
        self.pushed += 1;
        true
    }

    /// Copies pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Copies dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The analyser's end of a mirror ring.
pub struct MirrorConsumer {
    cons: ringbuf::HeapCons<u8>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for MirrorConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConsumer")
            .field("queued_bytes", &self.cons.occupied_len())
            .finish()
    }
}

impl MirrorConsumer {
    /// The next mirrored packet, if any.
    pub fn pop(&mut self) -> Option<MirrorPacket<'_>> {
        if self.cons.occupied_len() < 2 {
            return None;
        }
        // The producer publishes a record's length, header and payload in
        // three steps, so the length can be visible before the rest: peek
        // it, and take the record only once all of it is there.
        let mut len = [0u8; 2];
        self.cons.peek_slice(&mut len);
        let total = usize::from(u16::from_be_bytes(len));
        if self.cons.occupied_len() < 2 + total {
            return None;
        }
        self.cons.skip(2);
        self.buf.resize(total, 0);
        let got = self.cons.pop_slice(&mut self.buf);
        decode(&self.buf[..got])
    }
}

/// flags (1), secs (8), micros (4), src (19), dst (19), call-id length (1).
const RECORD_HEADER: usize = 1 + 8 + 4 + 19 + 19 + 1;

fn encode_header(p: &MirrorPacket<'_>, call: &[u8], out: &mut [u8]) -> usize {
    let flags = u8::from(p.kind == Kind::Rtcp) | (u8::from(p.leg == LegId::Callee) << 1);
    out[0] = flags;
    out[1..9].copy_from_slice(&p.secs.to_be_bytes());
    out[9..13].copy_from_slice(&p.micros.to_be_bytes());
    encode_addr(p.src, &mut out[13..32]);
    encode_addr(p.dst, &mut out[32..51]);
    out[51] = call.len() as u8;
    out[52..52 + call.len()].copy_from_slice(call);
    RECORD_HEADER + call.len()
}

fn encode_addr(a: SocketAddr, out: &mut [u8]) {
    let (family, octets) = match a.ip() {
        IpAddr::V4(v4) => (4, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => (6, v6.octets()),
    };
    out[0] = family;
    out[1..17].copy_from_slice(&octets);
    out[17..19].copy_from_slice(&a.port().to_be_bytes());
}

fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
    let octets: [u8; 16] = b.get(1..17)?.try_into().ok()?;
    let v6 = std::net::Ipv6Addr::from(octets);
    let ip = match b.first()? {
        4 => IpAddr::V4(v6.to_ipv4_mapped()?),
        6 => IpAddr::V6(v6),
        _ => return None,
    };
    let port = u16::from_be_bytes(b.get(17..19)?.try_into().ok()?);
    Some(SocketAddr::new(ip, port))
}

fn decode(r: &[u8]) -> Option<MirrorPacket<'_>> {
    let flags = *r.first()?;
    let secs = u64::from_be_bytes(r.get(1..9)?.try_into().ok()?);
    let micros = u32::from_be_bytes(r.get(9..13)?.try_into().ok()?);
    let src = decode_addr(r.get(13..32)?)?;
    let dst = decode_addr(r.get(32..51)?)?;
    let call_len = usize::from(*r.get(51)?);
    let call_id = std::str::from_utf8(r.get(52..52 + call_len)?).ok()?;
    Some(MirrorPacket {
        call_id,
        leg: if flags & 2 != 0 {
            LegId::Callee
        } else {
            LegId::Caller
        },
        kind: if flags & 1 != 0 {
            Kind::Rtcp
        } else {
            Kind::Rtp
        },
        src,
        dst,
        secs,
        micros,
        payload: r.get(52 + call_len..)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8]) -> MirrorPacket<'_> {
        MirrorPacket {
            call_id: "abc@192.0.2.1",
            leg: LegId::Callee,
            kind: Kind::Rtp,
            src: "192.0.2.10:4000".parse().unwrap(),
            dst: "192.0.2.1:30002".parse().unwrap(),
            secs: 1_764_000_000,
            micros: 123_456,
            payload,
        }
    }

    /// Walks HEP3 chunks: the independent reading of what we emit.
    fn chunks(hep: &[u8]) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(&hep[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([hep[4], hep[5]])), hep.len());
        let mut at = 6;
        let mut out = Vec::new();
        while at < hep.len() {
            let vendor = u16::from_be_bytes([hep[at], hep[at + 1]]);
            assert_eq!(vendor, 0, "generic chunks only");
            let ty = u16::from_be_bytes([hep[at + 2], hep[at + 3]]);
            let len = usize::from(u16::from_be_bytes([hep[at + 4], hep[at + 5]]));
            out.push((ty, hep[at + 6..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, hep.len());
        out
    }

    #[test]
    fn hep3_ipv4_rtp() {
        let payload = [0x80, 0x08, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9, 0xd5];
        let mut out = Vec::new();
        assert!(emit_hep3(&packet(&payload), 2001, &mut out));
        let c = chunks(&out);
        let get = |t: u16| {
            c.iter()
                .find(|(ty, _)| *ty == t)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(CHUNK_FAMILY), [2]);
        assert_eq!(get(CHUNK_PROTO_ID), [17]);
        assert_eq!(get(CHUNK_SRC_V4), [192, 0, 2, 10]);
        assert_eq!(get(CHUNK_DST_V4), [192, 0, 2, 1]);
        assert_eq!(get(CHUNK_SRC_PORT), 4000u16.to_be_bytes());
        assert_eq!(get(CHUNK_DST_PORT), 30002u16.to_be_bytes());
        assert_eq!(get(CHUNK_TS_SECS), 1_764_000_000u32.to_be_bytes());
        assert_eq!(get(CHUNK_TS_MICROS), 123_456u32.to_be_bytes());
        assert_eq!(get(CHUNK_PROTO_TYPE), [PROTO_RTP]);
        assert_eq!(get(CHUNK_CAPTURE_ID), 2001u32.to_be_bytes());
        assert_eq!(get(CHUNK_CORRELATION), b"abc@192.0.2.1");
        assert_eq!(get(CHUNK_PAYLOAD), payload);
    }

    #[test]
    fn hep3_ipv6_and_too_long() {
        let mut p = packet(&[0x80, 201, 0, 1, 0, 0, 0, 1]);
        p.kind = Kind::Rtcp;
        p.src = "[2001:db8::10]:4001".parse().unwrap();
        p.dst = "[2001:db8::1]:30003".parse().unwrap();
        let mut out = vec![0xEE];
        assert!(emit_hep3(&p, 1, &mut out));
        let c = chunks(&out[1..]);
        assert!(c.contains(&(CHUNK_FAMILY, vec![10])));
        assert!(c.contains(&(CHUNK_PROTO_TYPE, vec![PROTO_RTCP])));
        assert!(
            c.contains(&(
                CHUNK_SRC_V6,
                "2001:db8::10"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
                    .to_vec()
            ))
        );
        let huge = vec![0u8; 65_500];
        let mut out = vec![0xEE];
        assert!(!emit_hep3(&packet(&huge), 1, &mut out));
        assert_eq!(out, [0xEE], "nothing appended");
    }

    #[test]
    fn ring_round_trip_and_drops_when_full() {
        let (mut prod, mut cons) = ring(1024);
        let payload = [7u8; 172];
        let mut pushed = 0;
        while prod.push(&packet(&payload)) {
            pushed += 1;
        }
        assert!(pushed >= 3, "{pushed}");
        assert_eq!(prod.dropped(), 1);
        assert!(!prod.push(&packet(&payload)));
        assert_eq!(prod.dropped(), 2);
        for _ in 0..pushed {
            assert_eq!(cons.pop(), Some(packet(&payload)));
        }
        assert_eq!(cons.pop(), None);
        // Room again after the consumer caught up; v6 and RTCP survive too.
        let mut p = packet(b"rtcp");
        p.kind = Kind::Rtcp;
        p.leg = LegId::Caller;
        p.src = "[2001:db8::10]:4001".parse().unwrap();
        assert!(prod.push(&p));
        assert_eq!(cons.pop(), Some(p));
        assert_eq!(prod.pushed(), pushed + 1);
    }

    #[test]
    fn ring_across_threads() {
        let (mut prod, mut cons) = ring(64 * 1024);
        let t = std::thread::spawn(move || {
            let mut sent = 0u32;
            for i in 0..10_000u32 {
                let payload = i.to_be_bytes();
                if prod.push(&packet(&payload)) {
                    sent += 1;
                }
            }
            (sent, prod.dropped())
        });
        let mut got = Vec::new();
        loop {
            if let Some(p) = cons.pop() {
                got.push(u32::from_be_bytes(p.payload.try_into().unwrap()));
            } else if t.is_finished() {
                while let Some(p) = cons.pop() {
                    got.push(u32::from_be_bytes(p.payload.try_into().unwrap()));
                }
                break;
            }
        }
        let (sent, dropped) = t.join().unwrap();
        assert_eq!(got.len() as u32, sent);
        assert_eq!(u64::from(sent) + dropped, 10_000);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, none torn");
    }
}
