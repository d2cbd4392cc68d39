//! IP fragment reassembly (IPv4 and IPv6), driven by frame timestamps.

use std::collections::HashMap;
use std::net::IpAddr;

use super::decode::DecodeStats;
use crate::types::Timestamp;

/// Identifies the fragments of one datagram.
//= https://www.rfc-editor.org/rfc/rfc791#section-3.2
//# The internet identification field (ID) is used together with the source and
//# destination address, and the protocol fields, to identify datagram fragments
//# for reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub id: u32,
}

/// Datagrams being reassembled, bounded in count and bytes.
pub(crate) struct FragTable {
    map: HashMap<FragKey, Datagram>,
    /// The last reassembled datagram's payload (above the IP layer).
    pub out: Vec<u8>,
    bytes: usize,
    timeout_ns: u64,
    max_datagrams: usize,
    max_bytes: usize,
}

/// Largest reassembled payload: the 16-bit IP total/payload length.
const MAX_DATAGRAM: u32 = 65_535;

struct Datagram {
    first_seen: Timestamp,
    data: Vec<u8>,
    /// Received byte ranges `[start, end)`, sorted and merged.
    have: Vec<(u32, u32)>,
    /// Payload length, known once the last fragment (MF = 0) arrived.
    total: Option<u32>,
}

/// Outcome of adding one fragment.
pub(crate) enum FragResult {
    /// The datagram is complete and its payload is in `FragTable::out`.
    Complete,
    /// More fragments are needed (or the fragment was dropped).
    Pending,
}

impl FragTable {
    pub fn new(timeout_ns: u64, max_datagrams: usize, max_bytes: usize) -> Self {
        FragTable {
            map: HashMap::new(),
            out: Vec::new(),
            bytes: 0,
            timeout_ns,
            max_datagrams: max_datagrams.max(1),
            max_bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds the fragment carrying payload bytes `[offset, offset + data.len())`.
    pub fn insert(
        &mut self,
        key: FragKey,
        offset: u32,
        more: bool,
        data: &[u8],
        now: Timestamp,
        stats: &mut DecodeStats,
    ) -> FragResult {
        stats.fragments += 1;
        let end = offset + data.len() as u32;
        if end > MAX_DATAGRAM {
            stats.fragments_too_big += 1;
            self.remove(&key);
            return FragResult::Pending;
        }
        if !self.map.contains_key(&key) && self.map.len() >= self.max_datagrams {
            self.evict_oldest(stats);
        }
        let dgram = self.map.entry(key).or_insert_with(|| Datagram {
            first_seen: now,
            data: Vec::new(),
            have: Vec::new(),
            total: None,
        });
        //= https://www.rfc-editor.org/rfc/rfc791#section-3.2
        //# If this is the last fragment (that is the more fragments field is
        //# zero) the total data length is computed.
        let inconsistent = match (more, dgram.total) {
            (false, Some(t)) => t != end,
            (false, None) => dgram.have.last().is_some_and(|&(_, e)| e > end),
            (true, Some(t)) => end > t,
            (true, None) => false,
        };
        if inconsistent {
            stats.fragments_overlapping += 1;
            self.remove(&key);
            return FragResult::Pending;
        }
        if !more {
            dgram.total = Some(end);
        }
        // Copy only the bytes not yet received (first copy wins).
        let mut covered = 0u32;
        for &(s, e) in &dgram.have {
            let (a, b) = (s.max(offset), e.min(end));
            if a < b {
                covered += b - a;
            }
        }
        let len = end - offset;
        if len > 0 && covered == len {
            stats.fragments_duplicate += 1;
            return FragResult::Pending;
        }
        if covered > 0 {
            stats.fragments_overlapping += 1;
        }
        let before = dgram.data.capacity();
        if dgram.data.len() < end as usize {
            dgram.data.resize(end as usize, 0);
        }
        let mut cursor = offset;
        let mut holes = Vec::new();
        for &(s, e) in &dgram.have {
            if e <= cursor || s >= end {
                continue;
            }
            if s > cursor {
                holes.push((cursor, s));
            }
            cursor = cursor.max(e);
        }
        if cursor < end {
            holes.push((cursor, end));
        }
        // Every hole lies within [offset, end), and `data` was resized to
        // at least `end`, so both slices are in bounds.
        for (a, b) in holes {
            let src = &data[(a - offset) as usize..(b - offset) as usize];
            dgram.data[a as usize..b as usize].copy_from_slice(src);
        }
        insert_range(&mut dgram.have, offset, end);
        self.bytes = self.bytes + dgram.data.capacity() - before;

        if let (Some(t), [(0, e)]) = (dgram.total, dgram.have.as_slice())
            && *e == t
        {
            if let Some(mut d) = self.map.remove(&key) {
                self.bytes = self.bytes.saturating_sub(d.data.capacity());
                d.data.truncate(t as usize);
                std::mem::swap(&mut self.out, &mut d.data);
            }
            stats.fragments_reassembled += 1;
            return FragResult::Complete;
        }
        while self.bytes > self.max_bytes && !self.map.is_empty() {
            self.evict_oldest(stats);
        }
        FragResult::Pending
    }

    /// Drops datagrams whose first fragment is older than the timeout.
    //= https://www.rfc-editor.org/rfc/rfc791#section-3.2
    //# If the timer runs out, the all reassembly resources for this buffer
    //# identifier are released.
    pub fn expire(&mut self, now: Timestamp, stats: &mut DecodeStats) {
        let timeout = self.timeout_ns;
        let mut freed = 0;
        self.map.retain(|_, d| {
            let keep = now.0.saturating_sub(d.first_seen.0) <= timeout;
            if !keep {
                stats.fragments_expired += 1;
                freed += d.data.capacity();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }

    fn remove(&mut self, key: &FragKey) {
        if let Some(d) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(d.data.capacity());
        }
    }

    fn evict_oldest(&mut self, stats: &mut DecodeStats) {
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, d)| d.first_seen)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.remove(&k);
            stats.fragments_evicted += 1;
        }
    }
}

/// Adds `[s, e)` to a sorted list of disjoint ranges, merging neighbours.
fn insert_range(ranges: &mut Vec<(u32, u32)>, s: u32, e: u32) {
    if s >= e {
        return;
    }
    let mut ns = s;
    let mut ne = e;
    ranges.retain(|&(a, b)| {
        if b < ns || a > ne {
            true
        } else {
            ns = ns.min(a);
            ne = ne.max(b);
            false
        }
    });
    let at = ranges.partition_point(|&(a, _)| a < ns);
    ranges.insert(at, (ns, ne));
}
