//! Packet capture input and output: pcap/pcapng files down to UDP datagrams
//! and TCP byte streams.
//!
//! Three layers, each usable alone:
//!
//! 1. [`FileReader`] reads classic pcap (both byte orders, µs and ns
//!    resolution) and pcapng (several interfaces, each with its own link type
//!    and `if_tsresol`), yielding borrowed [`Frame`]s from one reused buffer.
//! 2. [`Decoder`] is a sans-IO core: feed it frames, it strips link layers
//!    (Ethernet with VLAN tags and PPPoE, Linux SLL/SLL2, raw IP, BSD
//!    loopback), IPv4/IPv6 (with extension headers), reassembles IP fragments
//!    and TCP streams, and returns UDP datagrams and newly contiguous TCP
//!    bytes as [`Packet`]s. Time only advances through frame timestamps.
//! 3. [`PcapWriter`] and [`build_udp_frame`] write classic pcap files and
//!    synthesise Ethernet/IP/UDP frames.
//!
//! ```no_run
//! use wire::capture::{Decoder, FileReader};
//! # fn main() -> Result<(), wire::capture::Error> {
//! let file = std::fs::File::open("call.pcap").map_err(wire::capture::Error::open)?;
//! // The reader buffers internally: no BufReader needed.
//! let mut reader = FileReader::new(file)?;
//! let mut decoder = Decoder::new();
//! while let Some(frame) = reader.next_frame() {
//!     let frame = frame?;
//!     if let Some(packet) = decoder.decode(&frame) {
//!         println!("{} -> {} {} bytes", packet.src, packet.dst, packet.payload.len());
//!     }
//! }
//! println!("{:?}", decoder.stats());
//! # Ok(())
//! # }
//! ```

mod decode;
mod ipfrag;
mod reader;
mod tcp;
mod writer;

pub use decode::{DecodeStats, Decoder, DecoderConfig, Packet, Transport};
pub use reader::{FileFormat, FileReader};
pub use writer::{FrameSpec, PcapWriter, TsResolution, build_udp_frame, build_udp_frame_with};

use crate::types::Timestamp;

/// One captured frame, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time.
    pub ts: Timestamp,
    /// Link-layer type of `data`.
    pub link: LinkType,
    /// The captured bytes (possibly shorter than `orig_len` if the capture
    /// used a snap length).
    pub data: &'a [u8],
    /// Length of the frame on the wire, in bytes.
    pub orig_len: u32,
}

/// A link-layer header type, as registered in the tcpdump.org
/// `LINKTYPE_*` list and stored in pcap/pcapng headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback: 4-byte address family in the capturing host's byte order.
    pub const NULL: Self = Self(0);
    /// IEEE 802.3 Ethernet.
    pub const ETHERNET: Self = Self(1);
    /// Raw IPv4 or IPv6, told apart by the version nibble.
    pub const RAW: Self = Self(101);
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: Self = Self(108);
    /// Linux "cooked" capture, version 1 (16-byte header).
    pub const LINUX_SLL: Self = Self(113);
    /// Raw IPv4.
    pub const IPV4: Self = Self(228);
    /// Raw IPv6.
    pub const IPV6: Self = Self(229);
    /// Linux "cooked" capture, version 2 (20-byte header).
    pub const LINUX_SLL2: Self = Self(276);
}

/// Why a capture file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("I/O error at byte offset {offset} (after {frames} frames): {source}")]
    Io {
        /// Byte offset in the file where reading stopped.
        offset: u64,
        /// Frames successfully read before the error.
        frames: u64,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The first four bytes are neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (magic {magic:#010x})")]
    UnknownFormat {
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// The file ends in the middle of a header or record.
    #[error("capture truncated at byte offset {offset}: frame {frame} is incomplete")]
    Truncated {
        /// Byte offset of the incomplete record.
        offset: u64,
        /// 1-based number of the frame that could not be read.
        frame: u64,
    },
    /// A header or record is malformed.
    #[error("corrupt capture at byte offset {offset}, frame {frame}: {reason}")]
    Corrupt {
        /// Byte offset of the malformed record.
        offset: u64,
        /// 1-based number of the frame that could not be read.
        frame: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing a capture failed.
    #[error("writing capture: {0}")]
    Write(String),
}

impl Error {
    /// Wraps an error from opening a file (before any byte was read).
    pub fn open(source: std::io::Error) -> Self {
        Error::Io {
            offset: 0,
            frames: 0,
            source,
        }
    }
}
