//! Capture file reading: classic pcap and pcapng through `pcap-file`'s
//! slice parsers, over one reused, growable buffer.

use std::io::Read;
use std::ops::Range;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::PcapNgParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::{Endianness, PcapError};

use super::{Error, Frame, LinkType};
use crate::types::Timestamp;

/// Which container format a [`FileReader`] detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFormat {
    /// Classic libpcap format.
    Pcap {
        /// True for the nanosecond-resolution variant (magic `a1b23c4d`).
        nanos: bool,
        /// True if the file's headers are big-endian.
        big_endian: bool,
    },
    /// pcapng (the first section's byte order).
    PcapNg {
        /// True if the first section is big-endian.
        big_endian: bool,
    },
}

/// Reads frames from a pcap or pcapng stream, detecting the format from the
/// magic number.
///
/// Frames borrow an internal buffer that is reused (and only grows for
/// records larger than it), so reading allocates nothing per packet.
///
/// After an error, [`FileReader::next_frame`] returns `None`: every readable
/// frame before the damage has been returned, and the error names the byte
/// offset and frame number where reading stopped.
pub struct FileReader<R: Read> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    done: bool,
    /// File offset of `buf[pos]`.
    offset: u64,
    frames: u64,
    kind: Kind,
}

impl<R: Read> std::fmt::Debug for FileReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("format", &self.format())
            .field("offset", &self.offset)
            .field("frames", &self.frames)
            .finish()
    }
}

impl<R: Read> FileReader<R> {
    /// Opens a capture stream and reads its file header.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownFormat`] if the magic number is not pcap or pcapng,
    /// [`Error::Truncated`] / [`Error::Corrupt`] if the file header is
    /// incomplete or invalid, [`Error::Io`] on read errors.
    pub fn new(src: R) -> Result<Self, Error> {
        let mut reader = FileReader {
            src,
            buf: vec![0; INITIAL_BUFFER],
            pos: 0,
            len: 0,
            eof: false,
            done: false,
            offset: 0,
            frames: 0,
            kind: Kind::Pcap {
                parser: None,
                link: LinkType::ETHERNET,
                nanos: false,
                big_endian: false,
            },
        };
        while reader.len - reader.pos < 4 && !reader.eof {
            reader.fill()?;
        }
        let head = &reader.buf[reader.pos..reader.len];
        let magic = match head {
            [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => {
                return Err(Error::Truncated {
                    offset: 0,
                    frame: 1,
                });
            }
        };
        loop {
            let head = &reader.buf[reader.pos..reader.len];
            let parsed = match magic {
                PCAP_MAGIC_US | PCAP_MAGIC_US_SWAPPED | PCAP_MAGIC_NS | PCAP_MAGIC_NS_SWAPPED => {
                    PcapParser::new(head).map(|(rem, parser)| {
                        let header = parser.header();
                        let kind = Kind::Pcap {
                            link: LinkType(u32::from(header.datalink)),
                            nanos: header.ts_resolution == pcap_file::TsResolution::NanoSecond,
                            big_endian: header.endianness == Endianness::Big,
                            parser: Some(parser),
                        };
                        (head.len() - rem.len(), kind)
                    })
                }
                PCAPNG_MAGIC => PcapNgParser::new(head).map(|(rem, parser)| {
                    let kind = Kind::PcapNg {
                        big_endian: parser.section().endianness == Endianness::Big,
                        parser,
                        interfaces: Vec::new(),
                    };
                    (head.len() - rem.len(), kind)
                }),
                _ => return Err(Error::UnknownFormat { magic }),
            };
            match parsed {
                Ok((consumed, kind)) => {
                    reader.kind = kind;
                    reader.advance(consumed);
                    return Ok(reader);
                }
                Err(PcapError::IncompleteBuffer) if !reader.eof => reader.fill()?,
                Err(PcapError::IncompleteBuffer) => {
                    return Err(Error::Truncated {
                        offset: 0,
                        frame: 1,
                    });
                }
                Err(e) => {
                    return Err(Error::Corrupt {
                        offset: 0,
                        frame: 1,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    /// The detected container format.
    pub fn format(&self) -> FileFormat {
        match &self.kind {
            Kind::Pcap {
                nanos, big_endian, ..
            } => FileFormat::Pcap {
                nanos: *nanos,
                big_endian: *big_endian,
            },
            Kind::PcapNg { big_endian, .. } => FileFormat::PcapNg {
                big_endian: *big_endian,
            },
        }
    }

    /// Number of frames returned so far.
    pub fn frames_read(&self) -> u64 {
        self.frames
    }

    /// Byte offset in the file of the next unread record.
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }

    /// Returns the next frame, `None` at the end of the file (or after an
    /// error has been returned).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the file ends inside a record,
    /// [`Error::Corrupt`] for malformed records, [`Error::Io`] for read
    /// errors; each names the byte offset and the 1-based frame number.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, Error>> {
        if self.done {
            return None;
        }
        loop {
            let avail = &self.buf[self.pos..self.len];
            match self.kind.step(avail) {
                Step::Frame {
                    consumed,
                    data,
                    ts,
                    link,
                    orig_len,
                } => {
                    let start = self.pos;
                    let range = start + data.start..start + data.end;
                    if range.end > self.len {
                        self.done = true;
                        return Some(Err(Error::Corrupt {
                            offset: self.offset,
                            frame: self.frames + 1,
                            reason: "record data out of range".into(),
                        }));
                    }
                    self.advance(consumed);
                    self.frames += 1;
                    let data = self.buf.get(range)?;
                    return Some(Ok(Frame {
                        ts,
                        link,
                        data,
                        orig_len,
                    }));
                }
                Step::Skip { consumed } => self.advance(consumed),
                Step::Incomplete => {
                    if self.eof {
                        self.done = true;
                        if self.pos == self.len {
                            return None;
                        }
                        return Some(Err(Error::Truncated {
                            offset: self.offset,
                            frame: self.frames + 1,
                        }));
                    }
                    if let Err(e) = self.fill() {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Step::Corrupt(reason) => {
                    self.done = true;
                    return Some(Err(Error::Corrupt {
                        offset: self.offset,
                        frame: self.frames + 1,
                        reason,
                    }));
                }
            }
        }
    }
}

const INITIAL_BUFFER: usize = 1 << 20;
/// Largest record we accept; anything bigger is treated as corruption.
const MAX_BUFFER: usize = 64 << 20;
/// Largest classic pcap record accepted when the snap length is smaller
/// (Wireshark's `WTAP_MAX_PACKET_SIZE_STANDARD`).
const MAX_PCAP_RECORD: u32 = 262_144;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_US_SWAPPED: u32 = 0xd4c3_b2a1;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAP_MAGIC_NS_SWAPPED: u32 = 0x4d3c_b2a1;
const PCAPNG_MAGIC: u32 = 0x0a0d_0d0a;

const BLOCK_SHB: u32 = 0x0A0D_0D0A;
const BLOCK_IDB: u32 = 1;
const BLOCK_PB: u32 = 2;
const BLOCK_SPB: u32 = 3;
const BLOCK_EPB: u32 = 6;

impl<R: Read> FileReader<R> {
    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    /// Moves unread bytes to the front, grows the buffer if it is full, and
    /// reads more.
    fn fill(&mut self) -> Result<(), Error> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            if self.buf.len() >= MAX_BUFFER {
                return Err(Error::Corrupt {
                    offset: self.offset,
                    frame: self.frames + 1,
                    reason: format!("record larger than {MAX_BUFFER} bytes"),
                });
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        offset: self.offset + self.len as u64,
                        frames: self.frames,
                        source,
                    });
                }
            }
        }
    }
}

/// Per-format parsing state.
enum Kind {
    Pcap {
        /// Always `Some` once the header was read.
        parser: Option<PcapParser>,
        link: LinkType,
        nanos: bool,
        big_endian: bool,
    },
    PcapNg {
        parser: PcapNgParser,
        /// Link type and ticks per second for each interface of the
        /// current section.
        interfaces: Vec<(LinkType, u64)>,
        big_endian: bool,
    },
}

/// Outcome of parsing at the current position. Holds no borrow, so the
/// reader can refill between attempts.
enum Step {
    Frame {
        consumed: usize,
        data: Range<usize>,
        ts: Timestamp,
        link: LinkType,
        orig_len: u32,
    },
    Skip {
        consumed: usize,
    },
    Incomplete,
    Corrupt(String),
}

impl Kind {
    fn step(&mut self, src: &[u8]) -> Step {
        match self {
            Kind::Pcap {
                parser: Some(parser),
                link,
                nanos,
                big_endian,
            } => {
                let limit = MAX_PCAP_RECORD.max(parser.header().snaplen);
                if let Some(incl_len) = read_u32(src, 8, *big_endian)
                    && incl_len > limit
                {
                    return Step::Corrupt(format!(
                        "record length {incl_len} exceeds the maximum of {limit}"
                    ));
                }
                match parser.next_raw_packet(src) {
                    Ok((rem, raw)) => {
                        let nanos_part = if *nanos {
                            u64::from(raw.ts_frac)
                        } else {
                            u64::from(raw.ts_frac) * 1000
                        };
                        Step::Frame {
                            consumed: src.len() - rem.len(),
                            data: 16..16 + raw.data.len(),
                            ts: Timestamp(
                                u64::from(raw.ts_sec)
                                    .saturating_mul(1_000_000_000)
                                    .saturating_add(nanos_part),
                            ),
                            link: *link,
                            orig_len: raw.orig_len,
                        }
                    }
                    Err(PcapError::IncompleteBuffer) => Step::Incomplete,
                    Err(e) => Step::Corrupt(e.to_string()),
                }
            }
            Kind::Pcap { parser: None, .. } => Step::Corrupt("no pcap header".into()),
            Kind::PcapNg {
                parser,
                interfaces,
                big_endian,
            } => {
                // A new section may switch byte order: leave SHBs to the parser.
                if read_u32(src, 0, *big_endian) != Some(BLOCK_SHB)
                    && let Some(len) = read_u32(src, 4, *big_endian)
                    && (len as usize > MAX_BUFFER || len < 12 || len % 4 != 0)
                {
                    return Step::Corrupt(format!("invalid block length {len}"));
                }
                let (consumed, block_type, body) = match parser.next_raw_block(src) {
                    Ok((rem, raw)) => (src.len() - rem.len(), raw.type_, 8..8 + raw.body.len()),
                    Err(PcapError::IncompleteBuffer) => return Step::Incomplete,
                    Err(e) => return Step::Corrupt(e.to_string()),
                };
                let body = match src.get(body) {
                    Some(body) => body,
                    None => return Step::Corrupt("block body out of range".into()),
                };
                match block_type {
                    BLOCK_SHB => {
                        interfaces.clear();
                        *big_endian = parser.section().endianness == Endianness::Big;
                        Step::Skip { consumed }
                    }
                    BLOCK_IDB => {
                        if let Some(idb) = parser.interfaces().last() {
                            let mut tsresol = 6u8;
                            for opt in &idb.options {
                                if let InterfaceDescriptionOption::IfTsResol(r) = opt {
                                    tsresol = *r;
                                }
                            }
                            interfaces
                                .push((LinkType(u32::from(idb.linktype)), ticks_per_sec(tsresol)));
                        }
                        Step::Skip { consumed }
                    }
                    BLOCK_EPB | BLOCK_PB => {
                        let rd = |at: usize| read_u32(body, at, *big_endian);
                        let (iface, hi, lo, caplen, orig) =
                            match (rd(0), rd(4), rd(8), rd(12), rd(16)) {
                                (Some(i), Some(h), Some(l), Some(c), Some(o)) => (i, h, l, c, o),
                                _ => return Step::Corrupt("packet block too short".into()),
                            };
                        // The obsolete Packet Block has a 16-bit interface id
                        // followed by a 16-bit drop counter.
                        let iface = if block_type == BLOCK_PB {
                            if *big_endian {
                                iface >> 16
                            } else {
                                iface & 0xffff
                            }
                        } else {
                            iface
                        };
                        let Some(&(link, per_sec)) = interfaces.get(iface as usize) else {
                            return Step::Corrupt(format!(
                                "packet refers to undeclared interface {iface}"
                            ));
                        };
                        let caplen = caplen as usize;
                        if 20 + caplen > body.len() {
                            return Step::Corrupt("captured length exceeds block".into());
                        }
                        let ticks = (u64::from(hi) << 32) | u64::from(lo);
                        let ns = u128::from(ticks) * 1_000_000_000 / u128::from(per_sec);
                        Step::Frame {
                            consumed,
                            data: 8 + 20..8 + 20 + caplen,
                            ts: Timestamp(u64::try_from(ns).unwrap_or(u64::MAX)),
                            link,
                            orig_len: orig,
                        }
                    }
                    BLOCK_SPB => {
                        let Some(orig) = read_u32(body, 0, *big_endian) else {
                            return Step::Corrupt("simple packet block too short".into());
                        };
                        let Some(&(link, _)) = interfaces.first() else {
                            return Step::Corrupt("simple packet block without interface".into());
                        };
                        let caplen = (orig as usize).min(body.len() - 4);
                        Step::Frame {
                            consumed,
                            data: 8 + 4..8 + 4 + caplen,
                            ts: Timestamp(0),
                            link,
                            orig_len: orig,
                        }
                    }
                    _ => Step::Skip { consumed },
                }
            }
        }
    }
}

fn read_u32(b: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

//= https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html#section-4.2
//# If the Most Significant Bit is equal to zero, the remaining bits
//# indicates the resolution of the timestamp as a negative power of 10 (e.g.
//# 6 means microsecond resolution, timestamps are the number of
//# microseconds since 1970-01-01 00:00:00 UTC). If the Most Significant Bit
//# is equal to one, the remaining bits indicates the resolution as negative
//# power of 2 (e.g. 10 means 1/1024 of second).
fn ticks_per_sec(tsresol: u8) -> u64 {
    let exp = u32::from(tsresol & 0x7f);
    let per_sec = if tsresol & 0x80 == 0 {
        10u64.checked_pow(exp)
    } else {
        2u64.checked_pow(exp)
    };
    per_sec.unwrap_or(1_000_000).max(1)
}
