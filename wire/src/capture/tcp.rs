//! TCP stream reassembly: per direction, in sequence order, bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use super::decode::DecodeStats;
use crate::types::Timestamp;

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;

/// Flows keyed by (source, destination): one entry per direction.
pub(crate) struct TcpTable {
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
    /// Bytes delivered by the last [`Delivery::Buffered`].
    pub out: Vec<u8>,
    max_flows: usize,
    max_buffered: usize,
    idle_ns: u64,
}

/// Where the newly contiguous bytes of a segment are.
pub(crate) enum Delivery {
    /// A sub-range of the segment's own payload.
    Direct(Range<usize>),
    /// Assembled in [`TcpTable::out`]; `gap` if bytes were skipped first.
    Buffered {
        /// Bytes before these were given up on.
        gap: bool,
    },
}

struct Flow {
    /// Next expected sequence number.
    next: u32,
    last_seen: Timestamp,
    /// Segments beyond `next`, waiting for the gap to fill.
    pending: Vec<(u32, Vec<u8>)>,
    pending_bytes: usize,
    /// Sequence number of the FIN, once seen.
    fin: Option<u32>,
    /// Every byte up to the FIN was delivered. The entry stays (until idle
    /// expiry) so late retransmissions are recognised, not re-delivered.
    closed: bool,
}

impl TcpTable {
    pub fn new(max_flows: usize, max_buffered: usize, idle_ns: u64) -> Self {
        TcpTable {
            flows: HashMap::new(),
            out: Vec::new(),
            max_flows: max_flows.max(1),
            max_buffered,
            idle_ns,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Handles one segment; returns the bytes that became contiguous.
    pub fn segment(
        &mut self,
        key: (SocketAddr, SocketAddr),
        seq: u32,
        flags: u8,
        payload: &[u8],
        now: Timestamp,
        stats: &mut DecodeStats,
    ) -> Option<Delivery> {
        stats.tcp_segments += 1;
        //= https://www.rfc-editor.org/rfc/rfc9293#section-3.10.7.4
        //# If the RST bit is set, then any outstanding RECEIVEs and SEND
        //# should receive "reset" responses.
        if flags & RST != 0 {
            self.flows.remove(&key);
            return None;
        }
        //= https://www.rfc-editor.org/rfc/rfc9293#section-3.4
        //# The SYN is considered to occur before the first actual data octet
        //# of the segment in which it occurs
        let data_seq = if flags & SYN != 0 {
            seq.wrapping_add(1)
        } else {
            seq
        };
        if !self.flows.contains_key(&key) {
            if payload.is_empty() && flags & SYN == 0 {
                return None;
            }
            if self.flows.len() >= self.max_flows {
                self.evict_oldest(stats);
            }
            self.flows.insert(
                key,
                Flow {
                    next: data_seq,
                    last_seen: now,
                    pending: Vec::new(),
                    pending_bytes: 0,
                    fin: None,
                    closed: false,
                },
            );
        }
        let flow = self.flows.get_mut(&key)?;
        flow.last_seen = now;
        if flags & SYN != 0 && payload.is_empty() {
            // A (re)transmitted SYN restarts the direction.
            flow.next = data_seq;
            flow.pending.clear();
            flow.pending_bytes = 0;
            flow.fin = None;
            flow.closed = false;
            return None;
        }
        if flow.closed {
            if (data_seq.wrapping_sub(flow.next) as i32) < 0 {
                if !payload.is_empty() {
                    stats.tcp_retransmissions += 1;
                }
                return None;
            }
            // Data beyond the FIN: the port pair was reused without a SYN
            // in the capture; start over.
            flow.next = data_seq;
            flow.fin = None;
            flow.closed = false;
        }
        let end = data_seq.wrapping_add(payload.len() as u32);
        if flags & FIN != 0 {
            flow.fin = Some(end);
        } else if payload.is_empty() {
            // A bare ACK (or keep-alive): nothing to deliver.
            return None;
        }
        let rel = data_seq.wrapping_sub(flow.next) as i32;
        let delivery = if rel > 0 {
            // Beyond a gap: keep it for later.
            stats.tcp_out_of_order += 1;
            if !payload.is_empty() {
                if flow
                    .pending
                    .iter()
                    .any(|(s, d)| *s == data_seq && d.len() >= payload.len())
                {
                    stats.tcp_retransmissions += 1;
                } else {
                    flow.pending.push((data_seq, payload.to_vec()));
                    flow.pending_bytes += payload.len();
                }
            }
            if flow.pending_bytes > self.max_buffered {
                // Give up on the gap: resume at the earliest buffered byte.
                let base = flow.next;
                if let Some(&(first, _)) = flow
                    .pending
                    .iter()
                    .min_by_key(|(s, _)| s.wrapping_sub(base))
                {
                    stats.tcp_gaps += 1;
                    stats.tcp_gap_bytes += u64::from(first.wrapping_sub(base));
                    flow.next = first;
                    self.out.clear();
                    drain(flow, &mut self.out, stats);
                    Some(Delivery::Buffered { gap: true })
                } else {
                    None
                }
            } else {
                None
            }
        } else {
            let skip = rel.unsigned_abs() as usize;
            if skip >= payload.len() {
                if !payload.is_empty() {
                    stats.tcp_retransmissions += 1;
                }
                None
            } else {
                if skip > 0 {
                    stats.tcp_retransmissions += 1;
                }
                flow.next = end;
                if flow.pending.is_empty() {
                    Some(Delivery::Direct(skip..payload.len()))
                } else {
                    self.out.clear();
                    self.out.extend_from_slice(&payload[skip..]);
                    drain(flow, &mut self.out, stats);
                    Some(Delivery::Buffered { gap: false })
                }
            }
        };
        //= https://www.rfc-editor.org/rfc/rfc9293#section-3.4
        //# the FIN is considered to occur after the last actual data octet
        //# in a segment in which it occurs.
        if let Some(fin) = flow.fin
            && fin.wrapping_sub(flow.next) as i32 <= 0
        {
            flow.closed = true;
            flow.next = fin.wrapping_add(1);
            flow.pending.clear();
            flow.pending_bytes = 0;
        }
        delivery
    }

    /// Drops flows idle for longer than the idle timeout.
    pub fn expire(&mut self, now: Timestamp, stats: &mut DecodeStats) {
        let idle = self.idle_ns;
        self.flows.retain(|_, f| {
            let keep = now.0.saturating_sub(f.last_seen.0) <= idle;
            if !keep {
                stats.tcp_flows_expired += 1;
            }
            keep
        });
    }

    fn evict_oldest(&mut self, stats: &mut DecodeStats) {
        let oldest = self
            .flows
            .iter()
            .min_by_key(|(_, f)| f.last_seen)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.flows.remove(&k);
            stats.tcp_flows_evicted += 1;
        }
    }
}

/// Appends every pending segment that now starts at or before `next`.
fn drain(flow: &mut Flow, out: &mut Vec<u8>, stats: &mut DecodeStats) {
    loop {
        let next = flow.next;
        let Some(i) = flow
            .pending
            .iter()
            .position(|(s, _)| s.wrapping_sub(next) as i32 <= 0)
        else {
            return;
        };
        let (seq, data) = flow.pending.swap_remove(i);
        flow.pending_bytes -= data.len();
        let skip = next.wrapping_sub(seq) as usize;
        if skip < data.len() {
            out.extend_from_slice(&data[skip..]);
            flow.next = seq.wrapping_add(data.len() as u32);
        } else {
            stats.tcp_retransmissions += 1;
        }
    }
}
