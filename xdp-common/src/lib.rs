//! Types shared by Voxplane's XDP programs (C, in `xdp-progs/`) and user
//! space: the map keys and values, `#[repr(C)]` with no implicit padding so
//! their bytes are the kernel's bytes.
//!
//! The C side declares the same types in `xdp-progs/voxplane_xdp.h`; the
//! tests below pin sizes and offsets so a change on one side shows up.
//! Values are written to BPF maps as raw bytes ([`MediaConfig::to_bytes`]),
//! so this crate needs no `unsafe` and no `Pod` trait.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// Name of the program section in `media_redirect.o`.
pub const MEDIA_REDIRECT_PROGRAM: &str = "media_redirect";
/// Name of the one-entry `ARRAY` map holding the [`MediaConfig`] (key 0).
pub const MEDIA_CONFIG_MAP: &str = "media_config";
/// Name of the `XSKMAP` keyed by rx queue index.
pub const XSKS_MAP: &str = "xsks";
/// Name of the per-CPU counters array, indexed by [`MediaCounter`].
pub const COUNTERS_MAP: &str = "counters";
/// Entries of the `XSKMAP`: the highest rx queue index served, plus one.
pub const MAX_QUEUES: u32 = 64;

/// Value of the `media_config` map: UDP datagrams whose destination port is
/// in `port_lo..=port_hi` (host byte order) are redirected to the AF_XDP
/// socket of their rx queue. `port_lo > port_hi` redirects nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaConfig {
    /// First media port (inclusive).
    pub port_lo: u16,
    /// Last media port (inclusive).
    pub port_hi: u16,
    /// Reserved, 0.
    pub flags: u32,
}

impl MediaConfig {
    /// Size of the value in the map, bytes.
    pub const SIZE: usize = 8;

    /// The value as the kernel stores it (native byte order, as in C).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..2].copy_from_slice(&self.port_lo.to_ne_bytes());
        out[2..4].copy_from_slice(&self.port_hi.to_ne_bytes());
        out[4..8].copy_from_slice(&self.flags.to_ne_bytes());
        out
    }

    /// Reads a value back from the map's bytes.
    pub fn from_bytes(b: [u8; Self::SIZE]) -> Self {
        MediaConfig {
            port_lo: u16::from_ne_bytes([b[0], b[1]]),
            port_hi: u16::from_ne_bytes([b[2], b[3]]),
            flags: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Keys of the per-CPU `counters` map (each value a `u64` packet count).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaCounter {
    /// Media datagram handed to an AF_XDP socket.
    Redirected = 0,
    /// Media datagram, but no socket on its rx queue: passed to the kernel.
    NoSocket = 1,
    /// Not IP (ARP, LLDP…): passed.
    PassNotIp = 2,
    /// IP but not UDP (ICMP, TCP: SIP over TCP, SSH), or IPv6 with extension
    /// headers: passed.
    PassNotUdp = 3,
    /// UDP outside the media port range (SIP, DNS…): passed.
    PassPort = 4,
    /// IPv4 fragment: passed for the kernel to reassemble.
    PassFragment = 5,
    /// Truncated or inconsistent headers: passed (the kernel drops them).
    PassMalformed = 6,
}

impl MediaCounter {
    /// Every counter, in key order.
    pub const ALL: [MediaCounter; 7] = [
        MediaCounter::Redirected,
        MediaCounter::NoSocket,
        MediaCounter::PassNotIp,
        MediaCounter::PassNotUdp,
        MediaCounter::PassPort,
        MediaCounter::PassFragment,
        MediaCounter::PassMalformed,
    ];

    /// The map key.
    pub const fn key(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn media_config_layout_matches_c() {
        // struct media_config { __u16 port_lo; __u16 port_hi; __u32 flags; }
        assert_eq!(size_of::<MediaConfig>(), MediaConfig::SIZE);
        assert_eq!(offset_of!(MediaConfig, port_lo), 0);
        assert_eq!(offset_of!(MediaConfig, port_hi), 2);
        assert_eq!(offset_of!(MediaConfig, flags), 4);
    }

    #[test]
    fn media_config_bytes_round_trip() {
        let c = MediaConfig {
            port_lo: 30000,
            port_hi: 40000,
            flags: 0,
        };
        assert_eq!(MediaConfig::from_bytes(c.to_bytes()), c);
        assert_eq!(&c.to_bytes()[..2], &30000u16.to_ne_bytes());
    }

    #[test]
    fn counter_keys_match_the_c_enum() {
        // enum media_counter in voxplane_xdp.h; MC_COUNT = 7.
        for (i, c) in MediaCounter::ALL.iter().enumerate() {
            assert_eq!(c.key() as usize, i);
        }
        let header = include_str!("../../xdp-progs/voxplane_xdp.h");
        for (name, c) in [
            ("MC_REDIRECTED = 0", MediaCounter::Redirected),
            ("MC_NO_SOCKET = 1", MediaCounter::NoSocket),
            ("MC_PASS_NOT_IP = 2", MediaCounter::PassNotIp),
            ("MC_PASS_NOT_UDP = 3", MediaCounter::PassNotUdp),
            ("MC_PASS_PORT = 4", MediaCounter::PassPort),
            ("MC_PASS_FRAGMENT = 5", MediaCounter::PassFragment),
            ("MC_PASS_MALFORMED = 6", MediaCounter::PassMalformed),
        ] {
            assert!(header.contains(name), "{name} missing from voxplane_xdp.h");
            assert_eq!(
                name.rsplit(' ').next().unwrap().parse::<u32>().unwrap(),
                c.key()
            );
        }
        assert!(header.contains("MC_COUNT = 7"));
    }
}
