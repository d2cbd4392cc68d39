//! Whole-frame helpers for backends that see Ethernet frames (AF_XDP):
//! find the UDP datagram in a received frame, and apply a relay
//! [`Forward`] decision to the frame in place — MACs, IP addresses, UDP
//! ports, TTL / hop limit — with the IPv4 header and UDP checksums updated
//! incrementally (RFC 1624) rather than recomputed over the payload.
//!
//! Handles Ethernet II with at most one 802.1Q tag, IPv4 without fragments
//! (options allowed) and IPv6 whose next header is UDP. Anything else is an
//! [`FrameError`], which a backend treats as "pass to the kernel".

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use crate::relay::{Forward, RxMeta};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_UDP: u8 = 17;

/// Why a frame cannot be parsed or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its headers claim.
    #[error("truncated frame")]
    Truncated,
    /// Not IPv4/IPv6 UDP (or an IPv4 fragment, or IPv6 extension headers).
    #[error("not a UDP datagram this relay handles")]
    NotUdp,
    /// The decision's addresses are not of the frame's IP version
    /// (translating between IPv4 and IPv6 changes the header size).
    #[error("address family differs from the frame's")]
    FamilyMismatch,
    /// TTL or hop limit would reach zero.
    #[error("TTL expired")]
    TtlExpired,
}

/// The link-layer half of a rewrite: the next hop's MAC and ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Macs {
    /// Our interface's MAC.
    pub src: [u8; 6],
    /// The next hop's MAC (from the neighbour table).
    pub dst: [u8; 6],
}

/// Where the UDP datagram sits in a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame {
    /// Sender and receiver addresses.
    pub meta: RxMeta,
    /// The UDP payload's byte range within the frame.
    pub payload: Range<usize>,
}

/// Finds the UDP datagram in an Ethernet frame.
///
/// # Errors
///
/// [`FrameError::Truncated`] or [`FrameError::NotUdp`].
pub fn parse(frame: &[u8]) -> Result<UdpFrame, FrameError> {
    let l = Layout::of(frame)?;
    let udp = l.udp;
    let ports = frame.get(udp..udp + 4).ok_or(FrameError::Truncated)?;
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    let (src, dst) = l.addresses(frame);
    Ok(UdpFrame {
        meta: RxMeta {
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
        payload: udp + 8..l.end,
    })
}

/// Rewrites a received frame in place so it can be transmitted as `fwd`
/// says: Ethernet addresses from `macs`, IP and UDP addresses from `fwd`,
/// TTL / hop limit decremented, checksums updated incrementally.
///
/// # Errors
///
/// [`FrameError`]; the frame is unchanged unless `Ok`.
pub fn rewrite(frame: &mut [u8], fwd: &Forward, macs: &Macs) -> Result<(), FrameError> {
    let l = Layout::of(frame)?;
    let udp = l.udp;
    match (l.v6, fwd.src.ip(), fwd.dst.ip()) {
        (false, IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = l.ip;
            let ttl = frame[ip + 8];
            if ttl <= 1 {
                return Err(FrameError::TtlExpired);
            }
            // Word 4 of the header holds TTL and protocol.
            let old_ttl_word = [ttl, frame[ip + 9]];
            frame[ip + 8] = ttl - 1;
            let new_ttl_word = [ttl - 1, frame[ip + 9]];
            let mut old_addrs = [0u8; 8];
            old_addrs.copy_from_slice(&frame[ip + 12..ip + 20]);
            frame[ip + 12..ip + 16].copy_from_slice(&s.octets());
            frame[ip + 16..ip + 20].copy_from_slice(&d.octets());
            let new_addrs: [u8; 8] = frame[ip + 12..ip + 20]
                .try_into()
                .map_err(|_| FrameError::Truncated)?;
            let hc = u16::from_be_bytes([frame[ip + 10], frame[ip + 11]]);
            let hc = update(
                update(hc, &old_ttl_word, &new_ttl_word),
                &old_addrs,
                &new_addrs,
            );
            frame[ip + 10..ip + 12].copy_from_slice(&hc.to_be_bytes());
            rewrite_udp(frame, udp, &old_addrs, &new_addrs, fwd, true);
        }
        (true, IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = l.ip;
            let hop = frame[ip + 7];
            if hop <= 1 {
                return Err(FrameError::TtlExpired);
            }
            frame[ip + 7] = hop - 1;
            let mut old_addrs = [0u8; 32];
            old_addrs.copy_from_slice(&frame[ip + 8..ip + 40]);
            frame[ip + 8..ip + 24].copy_from_slice(&s.octets());
            frame[ip + 24..ip + 40].copy_from_slice(&d.octets());
            let mut new_addrs = [0u8; 32];
            new_addrs.copy_from_slice(&frame[ip + 8..ip + 40]);
            rewrite_udp(frame, udp, &old_addrs, &new_addrs, fwd, false);
        }
        _ => return Err(FrameError::FamilyMismatch),
    }
    frame[0..6].copy_from_slice(&macs.dst);
    frame[6..12].copy_from_slice(&macs.src);
    Ok(())
}

/// Ports and checksum of the UDP header at `udp` (bounds checked by
/// [`Layout::of`]).
fn rewrite_udp(
    frame: &mut [u8],
    udp: usize,
    old_addrs: &[u8],
    new_addrs: &[u8],
    fwd: &Forward,
    v4: bool,
) {
    let old_ports: [u8; 4] = [frame[udp], frame[udp + 1], frame[udp + 2], frame[udp + 3]];
    frame[udp..udp + 2].copy_from_slice(&fwd.src.port().to_be_bytes());
    frame[udp + 2..udp + 4].copy_from_slice(&fwd.dst.port().to_be_bytes());
    let new_ports: [u8; 4] = [frame[udp], frame[udp + 1], frame[udp + 2], frame[udp + 3]];
    let sum = u16::from_be_bytes([frame[udp + 6], frame[udp + 7]]);
    //= https://www.rfc-editor.org/rfc/rfc768
    //# If the computed  checksum  is zero,  it is transmitted  as all ones (the
    //# equivalent  in one's complement  arithmetic).   An all zero  transmitted
    //# checksum  value means that the transmitter  generated  no checksum
    if v4 && sum == 0 {
        return;
    }
    let sum = update(update(sum, old_addrs, new_addrs), &old_ports, &new_ports);
    let sum = if sum == 0 { 0xFFFF } else { sum };
    frame[udp + 6..udp + 8].copy_from_slice(&sum.to_be_bytes());
}

//= https://www.rfc-editor.org/rfc/rfc1624#section-3
//# HC' = ~(~HC + ~m + m')    --    [Eqn. 3]
/// Updates a one's-complement checksum `hc` for the 16-bit words of `old`
/// becoming those of `new` (same even length).
fn update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!hc);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// Offsets of one frame's headers, all checked to lie within the frame.
struct Layout {
    ip: usize,
    udp: usize,
    /// End of the UDP datagram (from the UDP length).
    end: usize,
    v6: bool,
}

impl Layout {
    fn of(frame: &[u8]) -> Result<Self, FrameError> {
        let ethertype = |at: usize| -> Result<u16, FrameError> {
            let b = frame.get(at..at + 2).ok_or(FrameError::Truncated)?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        };
        let (ip, ty) = match ethertype(12)? {
            ETHERTYPE_VLAN => (18, ethertype(16)?),
            ty => (14, ty),
        };
        let (udp, v6) = match ty {
            ETHERTYPE_IPV4 => {
                let h = frame.get(ip..ip + 20).ok_or(FrameError::Truncated)?;
                let ihl = usize::from(h[0] & 0x0F) * 4;
                let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3FFF != 0;
                if h[0] >> 4 != 4 || ihl < 20 || h[9] != PROTO_UDP || fragment {
                    return Err(FrameError::NotUdp);
                }
                (ip + ihl, false)
            }
            ETHERTYPE_IPV6 => {
                let h = frame.get(ip..ip + 40).ok_or(FrameError::Truncated)?;
                if h[0] >> 4 != 6 || h[6] != PROTO_UDP {
                    return Err(FrameError::NotUdp);
                }
                (ip + 40, true)
            }
            _ => return Err(FrameError::NotUdp),
        };
        let h = frame.get(udp..udp + 8).ok_or(FrameError::Truncated)?;
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if len < 8 || udp + len > frame.len() {
            return Err(FrameError::Truncated);
        }
        Ok(Self {
            ip,
            udp,
            end: udp + len,
            v6,
        })
    }

    fn addresses(&self, frame: &[u8]) -> (IpAddr, IpAddr) {
        let ip = self.ip;
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        if self.v6 {
            a.copy_from_slice(&frame[ip + 8..ip + 24]);
            b.copy_from_slice(&frame[ip + 24..ip + 40]);
            (IpAddr::from(a), IpAddr::from(b))
        } else {
            let s: [u8; 4] = [
                frame[ip + 12],
                frame[ip + 13],
                frame[ip + 14],
                frame[ip + 15],
            ];
            let d: [u8; 4] = [
                frame[ip + 16],
                frame[ip + 17],
                frame[ip + 18],
                frame[ip + 19],
            ];
            (IpAddr::from(s), IpAddr::from(d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wire::rtp::Kind;

    fn sum16(bytes: &[u8]) -> u32 {
        bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    fn fold(mut s: u32) -> u16 {
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        !(s as u16)
    }

    /// Full (non-incremental) checksums, the oracle.
    fn full_checksums(frame: &[u8]) -> (Option<u16>, u16) {
        let l = Layout::of(frame).unwrap();
        let udp = &frame[l.udp..l.end];
        let mut udp_zeroed = udp.to_vec();
        udp_zeroed[6] = 0;
        udp_zeroed[7] = 0;
        let (ip_sum, pseudo) = if l.v6 {
            let mut p = sum16(&frame[l.ip + 8..l.ip + 40]);
            p += udp.len() as u32 + u32::from(PROTO_UDP);
            (None, p)
        } else {
            let mut hdr = frame[l.ip..l.udp].to_vec();
            hdr[10] = 0;
            hdr[11] = 0;
            let mut p = sum16(&frame[l.ip + 12..l.ip + 20]);
            p += udp.len() as u32 + u32::from(PROTO_UDP);
            (Some(fold(sum16(&hdr))), p)
        };
        let u = fold(pseudo + sum16(&udp_zeroed));
        (ip_sum, if u == 0 { 0xFFFF } else { u })
    }

    fn build(src: SocketAddr, dst: SocketAddr, payload: &[u8], vlan: bool) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        }
        let udp_len = 8 + payload.len();
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&[0x08, 0x00]);
                let total = (20 + udp_len) as u16;
                f.extend_from_slice(&[0x45, 0xb8]);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&(udp_len as u16).to_be_bytes());
                f.extend_from_slice(&[17, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => unreachable!(),
        }
        f.extend_from_slice(&src.port().to_be_bytes());
        f.extend_from_slice(&dst.port().to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        let (ip_sum, udp_sum) = full_checksums(&f);
        let l = Layout::of(&f).unwrap();
        if let Some(s) = ip_sum {
            f[l.ip + 10..l.ip + 12].copy_from_slice(&s.to_be_bytes());
        }
        f[l.udp + 6..l.udp + 8].copy_from_slice(&udp_sum.to_be_bytes());
        f
    }

    fn check(frame: &[u8]) {
        let (ip_sum, udp_sum) = full_checksums(frame);
        let l = Layout::of(frame).unwrap();
        if let Some(s) = ip_sum {
            assert_eq!(
                u16::from_be_bytes([frame[l.ip + 10], frame[l.ip + 11]]),
                s,
                "IPv4 header checksum"
            );
        }
        assert_eq!(
            u16::from_be_bytes([frame[l.udp + 6], frame[l.udp + 7]]),
            udp_sum,
            "UDP checksum"
        );
    }

    const MACS: Macs = Macs {
        src: [0x02, 0xaa, 0, 0, 0, 1],
        dst: [0x02, 0xbb, 0, 0, 0, 2],
    };

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives
        // HC' = 0x0000 by [Eqn. 3].
        assert_eq!(update(0xDD2F, &[0x55, 0x55], &[0x32, 0x85]), 0x0000);
    }

    #[test]
    fn ipv4_rewrite_matches_full_checksum() {
        let src: SocketAddr = "192.0.2.10:4000".parse().unwrap();
        let dst: SocketAddr = "192.0.2.1:30000".parse().unwrap();
        for vlan in [false, true] {
            let mut f = build(
                src,
                dst,
                &[0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4, 0xd5, 0xd5, 0xd5],
                vlan,
            );
            check(&f);
            let parsed = parse(&f).unwrap();
            assert_eq!(parsed.meta.src, src);
            assert_eq!(parsed.meta.dst, dst);
            assert_eq!(&f[parsed.payload.clone()][..2], &[0x80, 0]);
            let fwd = Forward {
                src: "198.18.0.1:30002".parse().unwrap(),
                dst: "198.18.1.20:5004".parse().unwrap(),
                kind: Kind::Rtp,
                mirror: false,
            };
            rewrite(&mut f, &fwd, &MACS).unwrap();
            check(&f);
            let parsed = parse(&f).unwrap();
            assert_eq!(parsed.meta.src, fwd.src);
            assert_eq!(parsed.meta.dst, fwd.dst);
            assert_eq!(&f[0..6], &MACS.dst);
            assert_eq!(&f[6..12], &MACS.src);
            let ip = if vlan { 18 } else { 14 };
            assert_eq!(f[ip + 8], 63, "TTL decremented");
        }
    }

    #[test]
    fn ipv6_rewrite_matches_full_checksum() {
        let src: SocketAddr = "[2001:db8::10]:4000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:30000".parse().unwrap();
        let mut f = build(src, dst, &[0x80; 33], false);
        check(&f);
        let fwd = Forward {
            src: "[2001:db8::1]:30002".parse().unwrap(),
            dst: "[2001:db8:ffff::20]:5004".parse().unwrap(),
            kind: Kind::Rtp,
            mirror: false,
        };
        rewrite(&mut f, &fwd, &MACS).unwrap();
        check(&f);
        assert_eq!(f[14 + 7], 63);
    }

    #[test]
    fn refusals() {
        let src: SocketAddr = "192.0.2.10:4000".parse().unwrap();
        let dst: SocketAddr = "192.0.2.1:30000".parse().unwrap();
        let f = build(src, dst, &[0; 12], false);
        let v6 = Forward {
            src: "[2001:db8::1]:1".parse().unwrap(),
            dst: "[2001:db8::2]:2".parse().unwrap(),
            kind: Kind::Rtp,
            mirror: false,
        };
        let mut g = f.clone();
        assert_eq!(rewrite(&mut g, &v6, &MACS), Err(FrameError::FamilyMismatch));
        assert_eq!(g, f, "unchanged on error");
        let mut ttl1 = f.clone();
        ttl1[14 + 8] = 1;
        let v4 = Forward {
            src,
            dst,
            kind: Kind::Rtp,
            mirror: false,
        };
        assert_eq!(rewrite(&mut ttl1, &v4, &MACS), Err(FrameError::TtlExpired));
        let mut tcp = f.clone();
        tcp[14 + 9] = 6;
        assert_eq!(parse(&tcp), Err(FrameError::NotUdp));
        for cut in 0..f.len() {
            assert!(parse(&f[..cut]).is_err());
            assert!(rewrite(&mut f[..cut].to_vec(), &v4, &MACS).is_err());
        }
        // UDP checksum 0 (none) over IPv4 stays 0.
        let mut none = f.clone();
        none[14 + 20 + 6] = 0;
        none[14 + 20 + 7] = 0;
        rewrite(&mut none, &v4, &MACS).unwrap();
        assert_eq!(&none[14 + 26..14 + 28], &[0, 0]);
    }

    proptest! {
        #[test]
        fn incremental_equals_full(
            a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), c in any::<[u8; 4]>(), d in any::<[u8; 4]>(),
            p in any::<[u16; 4]>(), payload in proptest::collection::vec(any::<u8>(), 0..200),
            a6 in any::<[u8; 16]>(), b6 in any::<[u8; 16]>(),
        ) {
            let mut f = build(SocketAddr::new(a.into(), p[0]), SocketAddr::new(b.into(), p[1]), &payload, false);
            let fwd = Forward { src: SocketAddr::new(c.into(), p[2]), dst: SocketAddr::new(d.into(), p[3]), kind: Kind::Rtp, mirror: false };
            rewrite(&mut f, &fwd, &MACS).unwrap();
            check(&f);
            let mut f6 = build(SocketAddr::new(a6.into(), p[0]), SocketAddr::new(b6.into(), p[1]), &payload, true);
            let fwd6 = Forward { src: SocketAddr::new(b6.into(), p[2]), dst: SocketAddr::new(a6.into(), p[3]), kind: Kind::Rtp, mirror: false };
            rewrite(&mut f6, &fwd6, &MACS).unwrap();
            check(&f6);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse(&bytes);
        }
    }
}
