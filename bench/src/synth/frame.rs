//! A small Ethernet + IPv4/IPv6 + UDP frame builder with correct checksums.
//!
//! Only what the synthesizer needs: no options, no fragmentation, no
//! extension headers. Addresses of one frame are both IPv4 or both IPv6.

use std::net::{IpAddr, SocketAddr};

/// Length of an Ethernet II header (no VLAN tag).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const IPPROTO_UDP: u8 = 17;

/// Appends one Ethernet II frame carrying `payload` in a UDP datagram from
/// `src` to `dst` to `out`, and returns the frame's length.
///
/// MAC addresses are locally administered (`02:00:` followed by the last
/// four bytes of the IP address), so each host keeps one MAC. `ip_id` is the
/// IPv4 identification field (ignored for IPv6). Both the IPv4 header
/// checksum and the UDP checksum are computed.
///
/// # Errors
///
/// [`FrameError::MixedFamilies`] if one address is IPv4 and the other IPv6;
/// [`FrameError::TooLong`] if the datagram does not fit the IP length field.
pub fn build_udp_frame(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    ip_id: u16,
    payload: &[u8],
) -> Result<usize, FrameError> {
    let start = out.len();
    let udp_len = UDP_HEADER_LEN + payload.len();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = IPV4_HEADER_LEN + udp_len;
            let total16 = u16::try_from(total).map_err(|_| FrameError::TooLong(payload.len()))?;
            push_ethernet(out, src.ip(), dst.ip(), ETHERTYPE_IPV4);
            let ip_start = out.len();
            out.extend_from_slice(&[0x45, 0x00]);
            out.extend_from_slice(&total16.to_be_bytes());
            out.extend_from_slice(&ip_id.to_be_bytes());
            // Don't Fragment, offset 0.
            out.extend_from_slice(&[0x40, 0x00, 64, IPPROTO_UDP, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let csum = internet_checksum(&out[ip_start..ip_start + IPV4_HEADER_LEN], 0);
            out[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
            let mut pseudo = sum_words(&s.octets(), 0);
            pseudo = sum_words(&d.octets(), pseudo);
            pseudo += u32::from(IPPROTO_UDP) + total16 as u32 - IPV4_HEADER_LEN as u32;
            push_udp(out, src.port(), dst.port(), payload, pseudo);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let udp16 = u16::try_from(udp_len).map_err(|_| FrameError::TooLong(payload.len()))?;
            push_ethernet(out, src.ip(), dst.ip(), ETHERTYPE_IPV6);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&udp16.to_be_bytes());
            out.extend_from_slice(&[IPPROTO_UDP, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let mut pseudo = sum_words(&s.octets(), 0);
            pseudo = sum_words(&d.octets(), pseudo);
            pseudo += u32::from(IPPROTO_UDP) + u32::from(udp16);
            push_udp(out, src.port(), dst.port(), payload, pseudo);
        }
        _ => return Err(FrameError::MixedFamilies),
    }
    Ok(out.len() - start)
}

/// Why a frame could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Source and destination are of different address families.
    #[error("source and destination addresses are of different families")]
    MixedFamilies,
    /// The payload (its length given) does not fit in one IP datagram.
    #[error("UDP payload of {0} bytes does not fit in one IP datagram")]
    TooLong(usize),
}

/// The RFC 1071 Internet checksum of `data`, continuing from a partial
/// one's-complement sum `initial` (e.g. a pseudo-header sum).
pub fn internet_checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(sum_words(data, initial));
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn push_ethernet(out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, ethertype: u16) {
    out.extend_from_slice(&mac_for(dst));
    out.extend_from_slice(&mac_for(src));
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn push_udp(out: &mut Vec<u8>, sport: u16, dport: u16, payload: &[u8], pseudo: u32) {
    let udp_start = out.len();
    // The caller checked that the length fits in 16 bits.
    let len = (UDP_HEADER_LEN + payload.len()) as u16;
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    //= https://www.rfc-editor.org/rfc/rfc768
    //# If the computed  checksum  is zero,  it is transmitted  as all ones
    let mut csum = internet_checksum(&out[udp_start..], pseudo);
    if csum == 0 {
        csum = 0xFFFF;
    }
    out[udp_start + 6..udp_start + 8].copy_from_slice(&csum.to_be_bytes());
}

fn mac_for(ip: IpAddr) -> [u8; 6] {
    let tail = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x00, tail[0], tail[1], tail[2], tail[3]]
}

/// Adds `data` as big-endian 16-bit words (odd length padded with a zero
/// byte) to `initial`, without folding. Frames are < 64 KiB, so a u32 never
/// overflows.
fn sum_words(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 numerical example: the sum of these words is ddf2
        // (one's complement), so the checksum is its complement 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data, 0), !0xddf2);
    }

    #[test]
    fn ipv4_frame_layout() {
        let mut out = Vec::new();
        let n = build_udp_frame(
            &mut out,
            "192.0.2.1:5060".parse().unwrap(),
            "198.18.0.1:5060".parse().unwrap(),
            7,
            b"hello",
        )
        .unwrap();
        assert_eq!(n, 14 + 20 + 8 + 5);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(u16::from_be_bytes([out[16], out[17]]), 33);
        // A valid header sums to 0xFFFF, i.e. checksums to 0.
        assert_eq!(internet_checksum(&out[14..34], 0), 0);
    }

    #[test]
    fn oversized_payload_rejected() {
        let mut out = Vec::new();
        let big = vec![0u8; 65_535];
        let v4 = build_udp_frame(
            &mut out,
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:1".parse().unwrap(),
            0,
            &big,
        );
        assert_eq!(v4, Err(FrameError::TooLong(65_535)));
        let v6 = build_udp_frame(
            &mut out,
            "[2001:db8::1]:1".parse().unwrap(),
            "[2001:db8::2]:1".parse().unwrap(),
            0,
            &big,
        );
        assert_eq!(v6, Err(FrameError::TooLong(65_535)));
    }

    #[test]
    fn mixed_families_rejected() {
        let mut out = Vec::new();
        assert_eq!(
            build_udp_frame(
                &mut out,
                "192.0.2.1:1".parse().unwrap(),
                "[2001:db8::1]:1".parse().unwrap(),
                0,
                b"",
            ),
            Err(FrameError::MixedFamilies)
        );
    }
}
