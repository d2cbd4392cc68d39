//! The journal record format (sans-IO): what the driver appends to a
//! session's journal file before the recorder core sees an input, and how a
//! journal is read back after a crash.
//!
//! A record is `len: u32 BE | kind: u8 | now: u64 BE | crc32: u32 BE |
//! payload`, where `len` is the payload length and the CRC-32 (IEEE) covers
//! kind, `now` and payload. Reading stops at the first record that is
//! incomplete or fails its CRC: that is the torn tail of a write cut short
//! by a crash, and everything before it is intact.

use wire::Timestamp;

/// Octets before the payload.
pub const RECORD_HEADER: usize = 17;
/// Largest payload accepted when reading back (a UDP datagram or a frame).
pub const MAX_PAYLOAD: usize = 128 * 1024;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// A metadata frame (type octet + body, without the length prefix).
    Control = 1,
    /// A media datagram, as received.
    Media = 2,
}

/// One record read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kind.
    pub kind: RecordKind,
    /// Arrival time at the recorder.
    pub now: Timestamp,
    /// The bytes.
    pub payload: &'a [u8],
}

/// Appends one record to `out`.
pub fn encode(kind: RecordKind, now: Timestamp, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind as u8]);
    crc.update(&now.0.to_be_bytes());
    crc.update(payload);
    // Payloads are datagrams or frames (≤ MAX_FRAME), far below u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&now.0.to_be_bytes());
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(payload);
}

/// Iterates the intact records of a journal's bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from the start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Octets consumed by the intact records read so far (after the
    /// iterator ends: the length to truncate a torn journal to).
    pub fn valid_len(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let rest = self.buf.get(self.pos..)?;
        let h = rest.get(..RECORD_HEADER)?;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > MAX_PAYLOAD {
            return None;
        }
        let kind = match h[4] {
            1 => RecordKind::Control,
            2 => RecordKind::Media,
            _ => return None,
        };
        let mut now = [0u8; 8];
        now.copy_from_slice(&h[5..13]);
        let crc = u32::from_be_bytes([h[13], h[14], h[15], h[16]]);
        let payload = rest.get(RECORD_HEADER..RECORD_HEADER + len)?;
        let mut c = crc32fast::Hasher::new();
        c.update(&h[4..13]);
        c.update(payload);
        if c.finalize() != crc {
            return None;
        }
        self.pos += RECORD_HEADER + len;
        Some(Record {
            kind,
            now: Timestamp(u64::from_be_bytes(now)),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn torn_and_corrupt_tails_are_cut() {
        let mut buf = Vec::new();
        encode(RecordKind::Control, Timestamp(1), b"abc", &mut buf);
        encode(RecordKind::Media, Timestamp(2), &[9; 50], &mut buf);
        let whole = buf.len();
        let first = RECORD_HEADER + 3;
        for cut in 0..whole {
            let mut r = Reader::new(&buf[..cut]);
            let n = r.by_ref().count();
            assert_eq!(n, usize::from(cut >= first));
            assert_eq!(r.valid_len(), if cut >= first { first } else { 0 });
        }
        buf[whole - 1] ^= 1;
        let mut r = Reader::new(&buf);
        assert_eq!(r.next().unwrap().payload, b"abc");
        assert_eq!(r.next(), None);
        assert_eq!(r.valid_len(), first);
    }

    proptest! {
        #[test]
        fn round_trip(recs in prop::collection::vec((any::<bool>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)), 0..10)) {
            let mut buf = Vec::new();
            for (m, t, p) in &recs {
                encode(if *m { RecordKind::Media } else { RecordKind::Control }, Timestamp(*t), p, &mut buf);
            }
            let mut r = Reader::new(&buf);
            let back: Vec<_> = r.by_ref().map(|x| (x.kind == RecordKind::Media, x.now.0, x.payload.to_vec())).collect();
            prop_assert_eq!(back, recs);
            prop_assert_eq!(r.valid_len(), buf.len());
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut r = Reader::new(&bytes);
            for _ in r.by_ref() {}
            prop_assert!(r.valid_len() <= bytes.len());
        }
    }
}
