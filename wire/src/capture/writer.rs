//! Classic pcap writing and synthetic Ethernet/IP/UDP frames.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket};

use super::{Error, Frame, LinkType};
use crate::types::Timestamp;

/// Timestamp resolution of a written classic pcap file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TsResolution {
    /// Microseconds (magic `a1b2c3d4`, readable by every tool).
    #[default]
    Micro,
    /// Nanoseconds (magic `a1b23c4d`).
    Nano,
}

/// Writes classic pcap files (native byte order) with one link type.
pub struct PcapWriter<W: Write> {
    inner: pcap_file::pcap::PcapWriter<W>,
    link: LinkType,
}

impl<W: Write> std::fmt::Debug for PcapWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapWriter").finish_non_exhaustive()
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] if the header cannot be written.
    pub fn new(out: W, link: LinkType, resolution: TsResolution) -> Result<Self, Error> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::from(link.0),
            ts_resolution: match resolution {
                TsResolution::Micro => pcap_file::TsResolution::MicroSecond,
                TsResolution::Nano => pcap_file::TsResolution::NanoSecond,
            },
            endianness: pcap_file::Endianness::native(),
        };
        let inner = pcap_file::pcap::PcapWriter::with_header(out, header)
            .map_err(|e| Error::Write(e.to_string()))?;
        Ok(PcapWriter { inner, link })
    }

    /// Appends one record. `data` longer than the snap length (262144) is
    /// cut; `orig_len` is kept as given.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] if the record cannot be written.
    pub fn write(&mut self, ts: Timestamp, data: &[u8], orig_len: u32) -> Result<(), Error> {
        let data = &data[..data.len().min(SNAPLEN as usize)];
        let packet = PcapPacket::new(
            std::time::Duration::new(ts.secs(), ts.subsec_nanos()),
            orig_len.max(data.len() as u32),
            data,
        );
        self.inner
            .write_packet(&packet)
            .map(|_| ())
            .map_err(|e| Error::Write(e.to_string()))
    }

    /// Appends a frame as read.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] if the frame's link type differs from the file's
    /// (classic pcap has one per file) or the record cannot be written.
    pub fn write_frame(&mut self, frame: &Frame<'_>) -> Result<(), Error> {
        if frame.link != self.link {
            return Err(Error::Write(format!(
                "frame link type {} differs from the file's {}",
                frame.link.0, self.link.0
            )));
        }
        self.write(frame.ts, frame.data, frame.orig_len)
    }

    /// The file's link type.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.inner.into_writer()
    }
}

/// Link-layer and IP header fields of a frame built by
/// [`build_udp_frame_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Ethernet source address.
    pub src_mac: [u8; 6],
    /// Ethernet destination address.
    pub dst_mac: [u8; 6],
    /// IPv4 identification (ignored for IPv6).
    pub ip_id: u16,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
}

impl Default for FrameSpec {
    /// Locally administered `02:00:00:00:00:01` → `02:00:00:00:00:02`,
    /// IP id 0, TTL 64.
    fn default() -> Self {
        Self {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            ip_id: 0,
            ttl: 64,
        }
    }
}

/// Builds an Ethernet II frame carrying `payload` in UDP over IPv4 or IPv6
/// (by the address family of `src`; `dst` must match), with valid IPv4
/// header and UDP checksums, into `out` (which is cleared first), with the
/// header fields of [`FrameSpec::default`].
///
/// # Errors
///
/// [`Error::Write`] if the address families differ or the payload does not
/// fit in one IP packet.
pub fn build_udp_frame(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    build_udp_frame_with(&FrameSpec::default(), src, dst, payload, out)
}

/// [`build_udp_frame`] with explicit MAC addresses, IPv4 id and TTL.
///
/// # Errors
///
/// As [`build_udp_frame`].
pub fn build_udp_frame_with(
    spec: &FrameSpec,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    out.clear();
    let udp_len = payload.len() + 8;
    out.extend_from_slice(&spec.dst_mac);
    out.extend_from_slice(&spec.src_mac);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(udp_len + 20)
                .map_err(|_| Error::Write("UDP payload too large for IPv4".into()))?;
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let ip_start = out.len();
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&spec.ip_id.to_be_bytes());
            out.extend_from_slice(&[0x40, 0, spec.ttl, 17, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let csum = checksum_finish(checksum_add(0, &out[ip_start..]));
            out[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());
            let pseudo = {
                let mut acc = checksum_add(0, &s.octets());
                acc = checksum_add(acc, &d.octets());
                acc + 17 + udp_len as u32
            };
            push_udp(out, src.port(), dst.port(), payload, pseudo);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(udp_len)
                .map_err(|_| Error::Write("UDP payload too large for IPv6".into()))?;
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&plen.to_be_bytes());
            out.extend_from_slice(&[17, spec.ttl]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let pseudo = {
                let mut acc = checksum_add(0, &s.octets());
                acc = checksum_add(acc, &d.octets());
                acc + 17 + udp_len as u32
            };
            push_udp(out, src.port(), dst.port(), payload, pseudo);
        }
        _ => {
            return Err(Error::Write(
                "source and destination address families differ".into(),
            ));
        }
    }
    Ok(())
}

const SNAPLEN: u32 = 262_144;

//= https://www.rfc-editor.org/rfc/rfc768
//# Checksum is the 16-bit one's complement of the one's complement sum of a
//# pseudo header of information from the IP header, the UDP header, and the
//# data,  padded  with zero octets  at the end (if  necessary)  to  make  a
//# multiple of two octets.
//#
//# If the computed  checksum  is zero,  it is transmitted  as all ones
fn push_udp(out: &mut Vec<u8>, sport: u16, dport: u16, payload: &[u8], pseudo: u32) {
    let start = out.len();
    let len = (payload.len() + 8) as u16;
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let mut csum = checksum_finish(checksum_add(pseudo, &out[start..]));
    if csum == 0 {
        csum = 0xffff;
    }
    out[start + 6..start + 8].copy_from_slice(&csum.to_be_bytes());
}

/// Adds `data` to a running one's complement sum (RFC 1071), as 16-bit
/// big-endian words, padding an odd final byte with zero.
pub(crate) fn checksum_add(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        if acc > 0xffff_0000 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a running sum and complements it.
pub(crate) fn checksum_finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}
