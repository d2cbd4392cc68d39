//! Frames of the synthetic capture: `wire`'s Ethernet + IPv4/IPv6 + UDP
//! builder with MAC addresses derived from the IP addresses (so each host
//! of the capture keeps one MAC) and a per-frame IPv4 identification.

use std::net::{IpAddr, SocketAddr};

use wire::capture::{FrameSpec, build_udp_frame_with};

/// Builds one frame into `out` (cleared first).
///
/// # Errors
///
/// As [`wire::capture::build_udp_frame_with`]: mixed address families or a
/// payload too large for one IP packet.
pub fn build_frame(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    ip_id: u16,
    payload: &[u8],
) -> Result<(), wire::capture::Error> {
    let spec = FrameSpec {
        src_mac: mac_for(src.ip()),
        dst_mac: mac_for(dst.ip()),
        ip_id,
        ttl: 64,
    };
    build_udp_frame_with(&spec, src, dst, payload, out)
}

/// A locally administered MAC whose last four bytes are the address's last
/// four bytes.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_addresses_and_ip_id_is_set() {
        let mut out = Vec::new();
        build_frame(
            &mut out,
            "192.0.2.1:5060".parse().unwrap(),
            "198.18.0.1:5060".parse().unwrap(),
            7,
            b"hello",
        )
        .unwrap();
        assert_eq!(out.len(), 14 + 20 + 8 + 5);
        assert_eq!(&out[0..6], &[2, 0, 198, 18, 0, 1]);
        assert_eq!(&out[6..12], &[2, 0, 192, 0, 2, 1]);
        assert_eq!(u16::from_be_bytes([out[18], out[19]]), 7);
        let mixed = build_frame(
            &mut out,
            "192.0.2.1:1".parse().unwrap(),
            "[2001:db8::1]:1".parse().unwrap(),
            0,
            b"",
        );
        assert!(mixed.is_err());
    }
}
