//! In-process capture source: the dataplane's mirror rings.
//!
//! A relay worker copies each packet of a recorded (mirrored) session into
//! its lock-free ring ([`dataplane::mirror`]): the call's Call-ID, the
//! sender, the relay address it arrived on, the arrival time and the UDP
//! payload. [`MirrorSource`] drains those rings into the [`Pipeline`] in
//! the same process (for `voxplane up`, which runs relay and NQS together):
//! each copy is RTP or RTCP the relay already attributed to its call, so it
//! goes through [`Pipeline::handle_call_media`] and its streams belong to
//! the call even though no SIP of it passes through NQS.
//!
//! The rings are drained oldest head first across workers (a session's
//! packets all pass one worker, so per-stream order is the ring's). A copy
//! the relay could not queue (ring full) is counted by the dataplane
//! ([`dataplane::mirror::MirrorProducer::dropped`]), never waited for.

use dataplane::mirror::{MirrorConsumer, MirrorPacket};
use wire::Timestamp;
use wire::capture::{Packet, Transport};

use crate::service::Pipeline;

/// The consumer ends of the relay workers' mirror rings.
#[derive(Debug)]
pub struct MirrorSource {
    rings: Vec<MirrorConsumer>,
    /// Copies taken out of a ring, one per ring, waiting for the merge.
    heads: Vec<Option<Head>>,
    packets: u64,
}

/// An owned copy of one mirror record.
#[derive(Debug)]
struct Head {
    call_id: String,
    ts: Timestamp,
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    payload: Vec<u8>,
}

impl MirrorSource {
    /// A source over these rings (from `UdpBackend::take_mirror_consumers`
    /// or the io_uring backend's).
    pub fn new(rings: Vec<MirrorConsumer>) -> Self {
        let heads = rings.iter().map(|_| None).collect();
        Self {
            rings,
            heads,
            packets: 0,
        }
    }

    /// Hands up to `max` mirrored packets to `pipeline`, oldest first
    /// across the rings; returns how many.
    pub fn drain(&mut self, pipeline: &mut Pipeline, max: usize) -> usize {
        let mut done = 0;
        while done < max {
            let mut oldest: Option<(usize, Timestamp)> = None;
            for i in 0..self.rings.len() {
                if self.heads[i].is_none() {
                    self.heads[i] = self.pop(i);
                }
                if let Some(h) = &self.heads[i]
                    && oldest.is_none_or(|(_, t)| h.ts < t)
                {
                    oldest = Some((i, h.ts));
                }
            }
            let Some((i, _)) = oldest else {
                break;
            };
            let Some(h) = self.heads[i].take() else {
                break;
            };
            let packet = Packet {
                ts: h.ts,
                src: h.src,
                dst: h.dst,
                transport: Transport::Udp,
                payload: &h.payload,
                ip: None,
                stream_gap: false,
                truncated: false,
            };
            pipeline.handle_call_media(&h.call_id, &packet);
            self.packets += 1;
            done += 1;
        }
        done
    }

    /// Mirrored packets handed to the pipeline so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The next record of ring `i`. A record that does not decode (only
    /// our own producer writes them, so never in practice) is consumed and
    /// reads as empty until the next call.
    fn pop(&mut self, i: usize) -> Option<Head> {
        self.rings[i].pop().map(|p| head(&p))
    }
}

fn head(p: &MirrorPacket<'_>) -> Head {
    Head {
        call_id: p.call_id.to_string(),
        ts: Timestamp::from_secs_nanos(p.secs, p.micros.saturating_mul(1000)),
        src: p.src,
        dst: p.dst,
        payload: p.payload.to_vec(),
    }
}
