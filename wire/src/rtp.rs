//! RTP fixed header and payload (RFC 3550 §5.1), header extensions
//! (RFC 3550 §5.3.1, RFC 8285) and RTP/RTCP demultiplexing (RFC 5761,
//! RFC 7983).
//!
//! [`RtpPacket`] is a zero-copy view over any byte buffer. Once
//! [`RtpPacket::new_checked`] has accepted a buffer, no accessor can panic.
//! The relay rewrites sequence numbers, timestamps, SSRCs, payload types and
//! the marker in place through the setters on `RtpPacket<T: AsMut<[u8]>>`.
//! [`RtpRepr`] is the owned form with [`RtpRepr::parse`] and
//! [`RtpRepr::emit`].
//!
//! ```
//! use wire::rtp::{RtpPacket, RtpRepr};
//! use wire::{PayloadType, Ssrc};
//!
//! let bytes = [0x80, 0x08, 0x00, 0x01, 0, 0, 0, 160, 0, 0, 0x2e, 0x3d, 0xd5, 0xd5];
//! let pkt = RtpPacket::new_checked(&bytes[..])?;
//! assert_eq!(pkt.payload_type(), PayloadType::PCMA);
//! assert_eq!(pkt.ssrc(), Ssrc(0x2e3d));
//! assert_eq!(pkt.payload(), &[0xd5, 0xd5]);
//!
//! let repr = RtpRepr::parse(&pkt)?;
//! let mut out = vec![0u8; repr.buffer_len()];
//! let mut view = RtpPacket::new_unchecked(&mut out[..]);
//! repr.emit(&mut view)?;
//! view.payload_mut().copy_from_slice(pkt.payload());
//! assert_eq!(out, bytes);
//! # Ok::<(), wire::rtp::Error>(())
//! ```

use crate::types::{PayloadType, Ssrc};

/// Length of the fixed RTP header in octets.
pub const HEADER_LEN: usize = 12;

/// The RTP version this module understands.
pub const VERSION: u8 = 2;

/// Profile identifier of an RFC 8285 one-byte header extension.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;

/// Why a buffer is not a well-formed RTP packet, or cannot hold one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the 12-octet fixed header.
    #[error("RTP packet too short: {len} octets, fixed header needs 12")]
    TooShort {
        /// Length of the buffer in octets.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    /// The CSRC list or the header extension runs past the end of the buffer.
    #[error(
        "RTP header ({header_len} octets with CSRCs and extension) exceeds the {len}-octet packet"
    )]
    HeaderOverrun {
        /// Header length implied by CC and the extension length, in octets.
        header_len: usize,
        /// Length of the buffer in octets.
        len: usize,
    },
    /// The padding count is zero or larger than what follows the header.
    #[error("RTP padding count {count} invalid for {available} octets after the header")]
    Padding {
        /// The padding count found in the last octet.
        count: u8,
        /// Octets after the header (payload plus padding).
        available: usize,
    },
    /// A repr cannot be emitted: too many CSRCs, an extension whose length
    /// is not a multiple of 4, or the output buffer is too small.
    #[error("cannot emit RTP packet: {0}")]
    Emit(&'static str),
}

/// What the first octets of a datagram on a shared port look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An RTP data packet.
    Rtp,
    /// An RTCP packet (the first of a compound).
    Rtcp,
}

/// Classifies a datagram received on a port that may carry both RTP and
/// RTCP (RFC 5761), or `None` if it is neither (wrong version or too short).
///
/// This only looks at the first two octets and the length; it does not
/// validate the packet.
#[inline]
pub fn classify(buf: &[u8]) -> Option<Kind> {
    //= https://www.rfc-editor.org/rfc/rfc5761#section-4
    //# Given these constraints, it is RECOMMENDED to follow the guidelines
    //# in the RTP/AVP profile [7] for the choice of RTP payload type values,
    //# with the additional restriction that payload type values in the range
    //# 64-95 MUST NOT be used.
    if buf.len() < 8 || buf[0] >> 6 != VERSION {
        return None;
    }
    if (64..=95).contains(&(buf[1] & 0x7F)) {
        Some(Kind::Rtcp)
    } else if buf.len() >= HEADER_LEN {
        Some(Kind::Rtp)
    } else {
        None
    }
}

/// A strict heuristic for spotting RTP in captures that carry no
/// signalling: version 2, a header (CSRCs, extension) and padding that fit,
/// a payload type outside the RTCP range, and a first octet outside the
/// STUN, ZRTP, DTLS and TURN ranges of RFC 7983.
///
/// False negatives are preferred to false positives: a datagram that passes
/// is almost certainly RTP (or SRTP, whose header is in the clear).
pub fn looks_like_rtp(buf: &[u8]) -> bool {
    //= https://www.rfc-editor.org/rfc/rfc7983#section-7
    //# If the value is in between 128 and 191 (inclusive),
    //# then the packet is RTP (or RTCP, if both RTCP and RTP are being
    //# multiplexed over the same destination port).
    let Some(&first) = buf.first() else {
        return false;
    };
    if !(128..=191).contains(&first) {
        return false;
    }
    if classify(buf) != Some(Kind::Rtp) {
        return false;
    }
    let Ok(pkt) = RtpPacket::new_checked(buf) else {
        return false;
    };
    // Payload types 1 and 2 are reserved (RFC 3551 Table 4) and 0 SSRC is
    // what zeroed or garbage buffers show; real senders pick random SSRCs.
    let pt = pkt.payload_type().0;
    pt != 1 && pt != 2 && pkt.ssrc().0 != 0
}

/// A zero-copy view of an RTP packet.
///
/// Construct it with [`RtpPacket::new_checked`]; its accessors then never
/// panic. A view from [`RtpPacket::new_unchecked`] panics on access if the
/// buffer is shorter than the fields read.
#[derive(Debug, Clone)]
pub struct RtpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// An RFC 3550 header extension: profile-defined identifier and the
/// extension data (without its 4-octet header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The 16-bit "defined by profile" field (0xBEDE for RFC 8285 one-byte
    /// elements, 0x100X for two-byte elements).
    pub profile: u16,
    /// The extension data, a multiple of 4 octets.
    pub data: &'a [u8],
}

impl<'a> Extension<'a> {
    /// Iterates over RFC 8285 elements if the profile is the one-byte
    /// (0xBEDE) or two-byte (0x100X) form, else returns `None`.
    pub fn elements(&self) -> Option<ExtensionElements<'a>> {
        //= https://www.rfc-editor.org/rfc/rfc8285#section-4.2
        //# the 16-bit value required by the RTP specification for a header
        //# extension, labeled in the RTP specification as "defined by profile",
        //# MUST have the fixed bit pattern 0xBEDE
        //= https://www.rfc-editor.org/rfc/rfc8285#section-4.3
        //# the 16-bit value
        //# required by the RTP specification for a header extension, labeled in
        //# the RTP specification as "defined by profile", takes the form shown
        //# in the diagram below
        let two_byte = if self.profile == ONE_BYTE_PROFILE {
            false
        } else if self.profile & 0xFFF0 == 0x1000 {
            true
        } else {
            return None;
        };
        Some(ExtensionElements {
            data: self.data,
            two_byte,
        })
    }
}

/// One RFC 8285 header extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionElement<'a> {
    /// Local identifier (1–14 for one-byte, 1–255 for two-byte elements).
    pub id: u8,
    /// Element data.
    pub data: &'a [u8],
}

/// Iterator over RFC 8285 header extension elements. Stops at the end of
/// the data, at a one-byte ID of 15, or at an element that would run past
/// the end (malformed input ends iteration, it never panics).
#[derive(Debug, Clone)]
pub struct ExtensionElements<'a> {
    data: &'a [u8],
    two_byte: bool,
}

impl<'a> Iterator for ExtensionElements<'a> {
    type Item = ExtensionElement<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&first, rest) = self.data.split_first()?;
            //= https://www.rfc-editor.org/rfc/rfc8285#section-4.2
            //# The ID
            //# value 0 is reserved for padding and MUST NOT be used as a local
            //# identifier.
            if first == 0 {
                self.data = rest;
                continue;
            }
            let (id, len, rest) = if self.two_byte {
                let (&len, rest) = rest.split_first()?;
                (first, usize::from(len), rest)
            } else {
                //= https://www.rfc-editor.org/rfc/rfc8285#section-4.2
                //# The local identifier value 15 is reserved for a future extension
                //# and MUST NOT be used as an identifier.  If the ID value 15 is
                //# encountered, its length field should be ignored, processing of the
                //# entire extension should terminate at that point
                //= https://www.rfc-editor.org/rfc/rfc8285#section-4.2
                //# An extension element with an ID value equal to 0 MUST NOT have an
                //# associated length field greater than 0.  If such an extension
                //# element is encountered, its length field MUST be ignored,
                //# processing of the entire extension MUST terminate at that point
                let id = first >> 4;
                if id == 15 || id == 0 {
                    self.data = &[];
                    return None;
                }
                (id, usize::from(first & 0x0F) + 1, rest)
            };
            if len > rest.len() {
                self.data = &[];
                return None;
            }
            let (data, rest) = rest.split_at(len);
            self.data = rest;
            return Some(ExtensionElement { id, data });
        }
    }
}

/// Iterator over the CSRC list of an [`RtpPacket`].
#[derive(Debug, Clone)]
pub struct Csrcs<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for Csrcs<'_> {
    type Item = Ssrc;

    fn next(&mut self) -> Option<Ssrc> {
        self.chunks.next().map(|c| Ssrc(be32(c)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for Csrcs<'_> {}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    ///
    /// Accessors panic if the buffer is shorter than the fields they read;
    /// use [`RtpPacket::new_checked`] for untrusted input.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking that it holds a well-formed RTP packet.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] under 12 octets, [`Error::Version`] if the version
    /// is not 2, [`Error::HeaderOverrun`] if the CSRC list or header extension
    /// runs past the end, [`Error::Padding`] if the P bit is set and the
    /// padding count is zero or exceeds the octets after the header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let pkt = Self::new_unchecked(buffer);
        pkt.check_len()?;
        Ok(pkt)
    }

    /// Checks the version and every length in the header against the buffer.
    ///
    /// # Errors
    ///
    /// As for [`RtpPacket::new_checked`].
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        let len = data.len();
        if len < HEADER_LEN {
            return Err(Error::TooShort { len });
        }
        //= https://www.rfc-editor.org/rfc/rfc3550#section-5.1
        //# This field identifies the version of RTP.  The version defined by
        //# this specification is two (2).
        let version = data[field::FLAGS] >> 6;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        //= https://www.rfc-editor.org/rfc/rfc3550#section-5.3.1
        //# If the X bit in the RTP header is one, a variable-length header
        //# extension MUST be appended to the RTP header, following the CSRC
        //# list if present.
        let csrc_end = HEADER_LEN + 4 * usize::from(data[field::FLAGS] & 0x0F);
        let header_len = if data[field::FLAGS] & 0x10 != 0 {
            match data.get(csrc_end..csrc_end + 4) {
                Some(ext) => csrc_end + 4 + 4 * usize::from(be16(&ext[2..4])),
                None => csrc_end + 4,
            }
        } else {
            csrc_end
        };
        if header_len > len {
            return Err(Error::HeaderOverrun { header_len, len });
        }
        //= https://www.rfc-editor.org/rfc/rfc3550#section-5.1
        //# The last octet of the padding contains a count of how many padding
        //# octets should be ignored, including itself.
        if data[field::FLAGS] & 0x20 != 0 {
            let count = data[len - 1];
            let available = len - header_len;
            if count == 0 || usize::from(count) > available {
                return Err(Error::Padding { count, available });
            }
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole packet as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version (V), 2 for valid packets.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] >> 6
    }

    /// Padding flag (P).
    #[inline]
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & 0x20 != 0
    }

    /// Extension flag (X).
    #[inline]
    pub fn extension(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & 0x10 != 0
    }

    /// CSRC count (CC), 0–15.
    #[inline]
    pub fn csrc_count(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] & 0x0F
    }

    /// Marker bit (M).
    #[inline]
    pub fn marker(&self) -> bool {
        self.buffer.as_ref()[field::MARKER_PT] & 0x80 != 0
    }

    /// Payload type (PT), 7 bits.
    #[inline]
    pub fn payload_type(&self) -> PayloadType {
        PayloadType(self.buffer.as_ref()[field::MARKER_PT] & 0x7F)
    }

    /// Sequence number, as sent (widen it with the stream's cycle count).
    #[inline]
    pub fn sequence_number(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::SEQUENCE])
    }

    /// RTP timestamp, in ticks of the payload's clock rate.
    #[inline]
    pub fn timestamp(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::TIMESTAMP])
    }

    /// Synchronisation source.
    #[inline]
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(&self.buffer.as_ref()[field::SSRC]))
    }

    /// The contributing sources, in order.
    pub fn csrcs(&self) -> Csrcs<'_> {
        let data = self.buffer.as_ref();
        let end = self.csrc_end().min(data.len());
        Csrcs {
            chunks: data[HEADER_LEN.min(end)..end].chunks_exact(4),
        }
    }

    /// The header extension if the X bit is set: profile-defined field and
    /// the extension data.
    pub fn extension_header(&self) -> Option<Extension<'_>> {
        if !self.extension() {
            return None;
        }
        let data = self.buffer.as_ref();
        let start = self.csrc_end();
        let head = data.get(start..start + 4)?;
        let len = 4 * usize::from(be16(&head[2..4]));
        let ext = data.get(start + 4..start + 4 + len)?;
        Some(Extension {
            profile: be16(&head[0..2]),
            data: ext,
        })
    }

    /// Length of the header in octets: fixed part, CSRCs and extension.
    #[inline]
    pub fn header_len(&self) -> usize {
        let data = self.buffer.as_ref();
        let csrc_end = self.csrc_end();
        if data[field::FLAGS] & 0x10 == 0 {
            return csrc_end;
        }
        match data.get(csrc_end + 2..csrc_end + 4) {
            Some(len) => csrc_end + 4 + 4 * usize::from(be16(len)),
            None => csrc_end + 4,
        }
    }

    /// Number of padding octets at the end (0 if P is clear).
    #[inline]
    pub fn padding_len(&self) -> usize {
        let data = self.buffer.as_ref();
        if self.padding() {
            data.last().map_or(0, |&n| usize::from(n))
        } else {
            0
        }
    }

    /// The payload, without header and padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let start = self.header_len();
        let end = data.len().saturating_sub(self.padding_len());
        data.get(start..end).unwrap_or(&[])
    }

    fn csrc_end(&self) -> usize {
        HEADER_LEN + 4 * usize::from(self.csrc_count())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    /// Sets the sequence number.
    #[inline]
    pub fn set_sequence_number(&mut self, seq: u16) {
        self.buffer.as_mut()[field::SEQUENCE].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the RTP timestamp.
    #[inline]
    pub fn set_timestamp(&mut self, ts: u32) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&ts.to_be_bytes());
    }

    /// Sets the SSRC.
    #[inline]
    pub fn set_ssrc(&mut self, ssrc: Ssrc) {
        self.buffer.as_mut()[field::SSRC].copy_from_slice(&ssrc.0.to_be_bytes());
    }

    /// Sets the payload type (the high bit of `pt` is ignored).
    #[inline]
    pub fn set_payload_type(&mut self, pt: PayloadType) {
        let b = &mut self.buffer.as_mut()[field::MARKER_PT];
        *b = (*b & 0x80) | (pt.0 & 0x7F);
    }

    /// Sets the marker bit.
    #[inline]
    pub fn set_marker(&mut self, marker: bool) {
        let b = &mut self.buffer.as_mut()[field::MARKER_PT];
        *b = (*b & 0x7F) | (u8::from(marker) << 7);
    }

    /// The payload, mutable (without header and padding).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let end = self
            .buffer
            .as_ref()
            .len()
            .saturating_sub(self.padding_len());
        self.buffer.as_mut().get_mut(start..end).unwrap_or(&mut [])
    }
}

/// An owned RTP header: every field plus the payload and padding lengths.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtpRepr {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: PayloadType,
    /// Sequence number.
    pub sequence_number: u16,
    /// RTP timestamp, in ticks of the payload clock.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: Ssrc,
    /// Contributing sources (at most 15).
    pub csrcs: Vec<Ssrc>,
    /// Header extension: profile-defined field and data (a multiple of 4
    /// octets, at most 4 × 65535).
    pub extension: Option<(u16, Vec<u8>)>,
    /// Payload length in octets.
    pub payload_len: usize,
    /// Padding octets at the end, including the count octet (0 = no
    /// padding, P clear).
    pub padding_len: u8,
}

impl RtpRepr {
    /// Reads every header field of a checked packet.
    ///
    /// # Errors
    ///
    /// Re-checks the packet, as [`RtpPacket::new_checked`] does.
    pub fn parse<T: AsRef<[u8]>>(pkt: &RtpPacket<T>) -> Result<Self, Error> {
        pkt.check_len()?;
        Ok(Self {
            marker: pkt.marker(),
            payload_type: pkt.payload_type(),
            sequence_number: pkt.sequence_number(),
            timestamp: pkt.timestamp(),
            ssrc: pkt.ssrc(),
            csrcs: pkt.csrcs().collect(),
            extension: pkt
                .extension_header()
                .map(|ext| (ext.profile, ext.data.to_vec())),
            payload_len: pkt.payload().len(),
            // check_len guarantees the count fits in the last octet.
            padding_len: pkt.padding_len() as u8,
        })
    }

    /// Length of the header this repr emits, in octets.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + 4 * self.csrcs.len() + self.extension.as_ref().map_or(0, |(_, d)| 4 + d.len())
    }

    /// Length of the whole packet in octets: header, payload and padding.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len + usize::from(self.padding_len)
    }

    /// Writes the header and the padding into `pkt`. The payload area is
    /// left for the caller to fill through [`RtpPacket::payload_mut`].
    ///
    /// # Errors
    ///
    /// [`Error::Emit`] if there are more than 15 CSRCs, the extension data
    /// is not a multiple of 4 octets or longer than 4 × 65535, or the buffer
    /// is shorter than [`RtpRepr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pkt: &mut RtpPacket<T>) -> Result<(), Error> {
        if self.csrcs.len() > 15 {
            return Err(Error::Emit("more than 15 CSRCs"));
        }
        let ext_words = match &self.extension {
            Some((_, d)) if d.len() % 4 != 0 => {
                return Err(Error::Emit("extension length not a multiple of 4"));
            }
            Some((_, d)) => {
                Some(u16::try_from(d.len() / 4).map_err(|_| Error::Emit("extension too long"))?)
            }
            None => None,
        };
        let total = self.buffer_len();
        let buf = pkt.buffer.as_mut();
        if buf.len() < total {
            return Err(Error::Emit("buffer shorter than buffer_len()"));
        }
        let buf = &mut buf[..total];
        buf[field::FLAGS] = (VERSION << 6)
            | (u8::from(self.padding_len > 0) << 5)
            | (u8::from(self.extension.is_some()) << 4)
            | self.csrcs.len() as u8;
        buf[field::MARKER_PT] = (u8::from(self.marker) << 7) | (self.payload_type.0 & 0x7F);
        buf[field::SEQUENCE].copy_from_slice(&self.sequence_number.to_be_bytes());
        buf[field::TIMESTAMP].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[field::SSRC].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let mut at = HEADER_LEN;
        for csrc in &self.csrcs {
            buf[at..at + 4].copy_from_slice(&csrc.0.to_be_bytes());
            at += 4;
        }
        if let (Some((profile, data)), Some(words)) = (&self.extension, ext_words) {
            buf[at..at + 2].copy_from_slice(&profile.to_be_bytes());
            buf[at + 2..at + 4].copy_from_slice(&words.to_be_bytes());
            buf[at + 4..at + 4 + data.len()].copy_from_slice(data);
        }
        if self.padding_len > 0 {
            let pad = &mut buf[total - usize::from(self.padding_len)..];
            pad.fill(0);
            if let Some(last) = pad.last_mut() {
                *last = self.padding_len;
            }
        }
        Ok(())
    }
}

/// Byte offsets of the fixed header fields.
mod field {
    use core::ops::Range;

    /// V, P, X, CC.
    pub const FLAGS: usize = 0;
    /// M, PT.
    pub const MARKER_PT: usize = 1;
    /// Sequence number.
    pub const SEQUENCE: Range<usize> = 2..4;
    /// Timestamp.
    pub const TIMESTAMP: Range<usize> = 4..8;
    /// SSRC.
    pub const SSRC: Range<usize> = 8..12;
}

#[inline]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
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

    /// First PCMA packet of the 0xD2BD4E3E stream in Wireshark's
    /// SIP_CALL_RTP_G711 sample (truncated after 4 payload octets).
    #[test]
    fn parses_real_pcma_header() {
        let bytes = hex("80880001000000a0d2bd4e3e dcdec4c5");
        let pkt = RtpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(pkt.version(), 2);
        assert!(!pkt.padding() && !pkt.extension());
        assert!(pkt.marker());
        assert_eq!(pkt.payload_type(), PayloadType::PCMA);
        assert_eq!(pkt.sequence_number(), 1);
        assert_eq!(pkt.timestamp(), 160);
        assert_eq!(pkt.ssrc(), Ssrc(0xD2BD4E3E));
        assert_eq!(pkt.csrcs().count(), 0);
        assert_eq!(pkt.payload(), &hex("dcdec4c5")[..]);
        assert_eq!(classify(&bytes), Some(Kind::Rtp));
        assert!(looks_like_rtp(&bytes));
        let repr = RtpRepr::parse(&pkt).unwrap();
        assert_eq!(repr.buffer_len(), bytes.len());
    }

    #[test]
    fn csrcs_extension_and_padding() {
        // V=2 P=1 X=1 CC=2, PT 0, seq 0x1234, ts 0xdeadbeef, ssrc 1,
        // CSRCs 2 and 3, one-byte extension with id 1 (2 octets) + pad,
        // payload "ab", 3 padding octets.
        let bytes = hex("b2001234deadbeef00000001 00000002 00000003 bede0001 11aabb00 6162 000003");
        let pkt = RtpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(pkt.csrc_count(), 2);
        assert_eq!(pkt.csrcs().collect::<Vec<_>>(), vec![Ssrc(2), Ssrc(3)]);
        let ext = pkt.extension_header().unwrap();
        assert_eq!(ext.profile, ONE_BYTE_PROFILE);
        let elems: Vec<_> = ext.elements().unwrap().collect();
        assert_eq!(
            elems,
            vec![ExtensionElement {
                id: 1,
                data: &[0xaa, 0xbb]
            }]
        );
        assert_eq!(pkt.header_len(), 12 + 8 + 8);
        assert_eq!(pkt.padding_len(), 3);
        assert_eq!(pkt.payload(), b"ab");

        let repr = RtpRepr::parse(&pkt).unwrap();
        let mut out = vec![0xffu8; repr.buffer_len()];
        let mut view = RtpPacket::new_unchecked(&mut out[..]);
        repr.emit(&mut view).unwrap();
        view.payload_mut().copy_from_slice(b"ab");
        assert_eq!(out, bytes);
    }

    #[test]
    fn two_byte_extension_elements() {
        let ext = Extension {
            profile: 0x1000,
            data: &[0, 5, 2, 0xa, 0xb, 7, 0, 0],
        };
        let elems: Vec<_> = ext.elements().unwrap().collect();
        assert_eq!(elems.len(), 2);
        assert_eq!(elems[0].id, 5);
        assert_eq!(elems[0].data, &[0xa, 0xb]);
        assert_eq!(elems[1].id, 7);
        assert!(elems[1].data.is_empty());
        // An element running past the end stops iteration.
        let bad = Extension {
            profile: ONE_BYTE_PROFILE,
            data: &[0x1f, 0],
        };
        assert_eq!(bad.elements().unwrap().count(), 0);
        // ID 0 with a non-zero length ends processing (RFC 8285 §4.2).
        let zero = Extension {
            profile: ONE_BYTE_PROFILE,
            data: &[0x10, 0xaa, 0x03, 0x20, 0xbb],
        };
        let elems: Vec<_> = zero.elements().unwrap().collect();
        assert_eq!(elems.len(), 1);
        assert_eq!(elems[0].id, 1);
        let other = Extension {
            profile: 0x1234,
            data: &[],
        };
        assert!(other.elements().is_none());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            RtpPacket::new_checked(&[0x80u8; 11][..]).unwrap_err(),
            Error::TooShort { len: 11 }
        );
        let mut v1 = hex("40000000000000000000000100");
        assert_eq!(
            RtpPacket::new_checked(&v1[..]).unwrap_err(),
            Error::Version(1)
        );
        v1[0] = 0x81; // one CSRC announced, none present
        assert!(matches!(
            RtpPacket::new_checked(&v1[..]).unwrap_err(),
            Error::HeaderOverrun { header_len: 16, .. }
        ));
        v1[0] = 0x90; // extension announced, header missing
        assert!(matches!(
            RtpPacket::new_checked(&v1[..]).unwrap_err(),
            Error::HeaderOverrun { .. }
        ));
        v1[0] = 0xa0; // padding count 0
        v1[12] = 0;
        assert!(matches!(
            RtpPacket::new_checked(&v1[..]).unwrap_err(),
            Error::Padding { count: 0, .. }
        ));
        v1[12] = 2; // padding count larger than what follows the header
        assert!(matches!(
            RtpPacket::new_checked(&v1[..]).unwrap_err(),
            Error::Padding {
                count: 2,
                available: 1
            }
        ));
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut bytes = hex("80880001000000a0d2bd4e3e dcde");
        let mut pkt = RtpPacket::new_checked(&mut bytes[..]).unwrap();
        pkt.set_sequence_number(0xfffe);
        pkt.set_timestamp(0x01020304);
        pkt.set_ssrc(Ssrc(0xcafebabe));
        pkt.set_payload_type(PayloadType(101));
        pkt.set_marker(false);
        assert_eq!(pkt.sequence_number(), 0xfffe);
        assert_eq!(pkt.payload_type(), PayloadType(101));
        assert!(!pkt.marker());
        pkt.set_marker(true);
        assert_eq!(pkt.payload_type(), PayloadType(101));
        assert_eq!(pkt.into_inner(), &hex("80e5fffe01020304cafebabe dcde")[..]);
    }

    #[test]
    fn demultiplexing() {
        // SR from the SIP_CALL_RTP_G711 sample.
        let sr = hex("81c8000cd2bd4e3ec59286d4e6e978d5");
        assert_eq!(classify(&sr), Some(Kind::Rtcp));
        assert!(!looks_like_rtp(&sr));
        // STUN binding request, DTLS record, ZRTP.
        for first in [0x00u8, 0x16, 0x10] {
            let mut b = hex("80000001000000a0d2bd4e3e");
            b[0] = first;
            assert!(!looks_like_rtp(&b));
            assert_eq!(classify(&b), None);
        }
        assert_eq!(classify(&[0x80, 0x00, 0, 0, 0, 0, 0, 0]), None);
        assert!(!looks_like_rtp(&[0x80; 12][..4]));
        // Zero SSRC is not accepted by the strict heuristic.
        assert!(!looks_like_rtp(&hex("80000001000000a000000000")));
    }

    #[test]
    fn emit_rejects_bad_reprs() {
        let mut buf = [0u8; 64];
        let repr = RtpRepr {
            csrcs: vec![Ssrc(1); 16],
            ..Default::default()
        };
        assert!(
            repr.emit(&mut RtpPacket::new_unchecked(&mut buf[..]))
                .is_err()
        );
        let repr = RtpRepr {
            extension: Some((1, vec![0; 3])),
            ..Default::default()
        };
        assert!(
            repr.emit(&mut RtpPacket::new_unchecked(&mut buf[..]))
                .is_err()
        );
        let repr = RtpRepr {
            payload_len: 60,
            ..Default::default()
        };
        assert!(
            repr.emit(&mut RtpPacket::new_unchecked(&mut buf[..]))
                .is_err()
        );
    }

    fn arb_repr() -> impl Strategy<Value = RtpRepr> {
        (
            (
                any::<bool>(),
                0u8..128,
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
            ),
            proptest::collection::vec(any::<u32>().prop_map(Ssrc), 0..=15),
            proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..8))),
            0usize..200,
            any::<u8>(),
        )
            .prop_map(
                |((marker, pt, seq, ts, ssrc), csrcs, ext, payload_len, pad)| RtpRepr {
                    marker,
                    payload_type: PayloadType(pt),
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc: Ssrc(ssrc),
                    csrcs,
                    extension: ext.map(|(p, mut d)| {
                        d.truncate(d.len() / 4 * 4);
                        (p, d)
                    }),
                    payload_len,
                    padding_len: pad,
                },
            )
    }

    proptest! {
        #[test]
        fn repr_round_trip(repr in arb_repr(), fill in any::<u8>()) {
            let mut buf = vec![0u8; repr.buffer_len()];
            let mut pkt = RtpPacket::new_unchecked(&mut buf[..]);
            repr.emit(&mut pkt).unwrap();
            pkt.payload_mut().fill(fill);
            let pkt = RtpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(pkt.payload().len(), repr.payload_len);
            prop_assert!(pkt.payload().iter().all(|&b| b == fill));
            prop_assert_eq!(RtpRepr::parse(&pkt).unwrap(), repr);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            check_random(&bytes)?;
        }

        #[test]
        fn random_version_2_bytes_never_panic(
            first in 0x80u8..0xc0,
            rest in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut bytes = vec![first];
            bytes.extend_from_slice(&rest);
            check_random(&bytes)?;
        }
    }

    fn check_random(bytes: &[u8]) -> Result<(), TestCaseError> {
        let _ = classify(bytes);
        let _ = looks_like_rtp(bytes);
        if let Ok(pkt) = RtpPacket::new_checked(bytes) {
            let _ = (
                pkt.version(),
                pkt.marker(),
                pkt.payload_type(),
                pkt.sequence_number(),
            );
            let _ = (
                pkt.timestamp(),
                pkt.ssrc(),
                pkt.csrcs().count(),
                pkt.padding_len(),
            );
            if let Some(ext) = pkt.extension_header() {
                let _ = ext.elements().map(|e| e.count());
            }
            prop_assert!(pkt.header_len() + pkt.payload().len() + pkt.padding_len() == bytes.len());
            let repr = RtpRepr::parse(&pkt).unwrap();
            prop_assert_eq!(repr.buffer_len(), bytes.len());
        }
        Ok(())
    }
}
