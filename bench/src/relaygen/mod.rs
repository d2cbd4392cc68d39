//! The relay load generator's core (sans-IO): N synthetic G.711 calls, one
//! RTP stream per call and leg at 50 packets/s with real sequence numbers
//! and timestamps, each packet carrying its send time; and the receiving
//! side, which checks what came back and records the latency the relay
//! added. The AF_XDP driver (`bench-relay-gen`) only moves frames.
//!
//! Driving contract: call [`Generator::poll_transmit`] with the current time
//! (nanoseconds since the run began) until it returns `None`; hand every
//! received frame to [`Receiver::handle_frame`] with its arrival time.
//!
//! Payload layout (160 bytes of PCMA after the 12-byte RTP header): bytes
//! 0..8 the send time (ns since start, big endian), 8..12 the stream index,
//! 12..16 the packet index in the stream; the rest is A-law silence (0xd5).

pub mod afxdp;

use std::net::Ipv4Addr;

use hdrhistogram::Histogram;

/// Packet interval of a 20 ms G.711 stream, ns.
pub const PTIME_NS: u64 = 20_000_000;
/// RTP timestamp increment per packet (8000 Hz × 20 ms).
pub const TS_STEP: u32 = 160;
/// G.711 payload per packet, bytes.
pub const PAYLOAD_LEN: usize = 160;
/// Ethernet + IPv4 + UDP + RTP + payload: the 214-byte frame of design.md.
pub const FRAME_LEN: usize = 14 + 20 + 8 + 12 + PAYLOAD_LEN;

/// Addresses of the streams one generator sends: stream `i` goes from
/// `src_ip:(src_port + 2i)` to `dst_ip:(dst_port + 2i)` (RTP ports are even).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    /// Our MAC.
    pub src_mac: [u8; 6],
    /// The next hop's MAC (the relay's interface).
    pub dst_mac: [u8; 6],
    /// Our address.
    pub src_ip: Ipv4Addr,
    /// The relay's media address.
    pub dst_ip: Ipv4Addr,
    /// Our first RTP port.
    pub src_port: u16,
    /// The relay's first RTP port for this leg.
    pub dst_port: u16,
}

/// Sends `streams` RTP streams at 50 packets/s each, spread evenly over
/// each 20 ms period so the load is smooth.
#[derive(Clone, Debug)]
pub struct Generator {
    leg: Leg,
    streams: u32,
    /// Packets to send per stream before stopping.
    packets_per_stream: u32,
    /// Index of the next packet overall (period × streams + stream).
    next: u64,
    ssrc_base: u32,
    /// Where the schedule starts on the caller's clock, ns.
    offset_ns: u64,
    /// The relay's port for each stream, when not `leg.dst_port + 2i`.
    dst_ports: Option<Vec<u16>>,
}

impl Generator {
    /// A generator of `streams` streams lasting `packets_per_stream`
    /// packets each (50 per second of run).
    ///
    /// # Panics
    /// When `streams` would overflow the 16-bit port space from `leg`'s
    /// first ports (a configuration error).
    pub fn new(leg: Leg, streams: u32, packets_per_stream: u32, ssrc_base: u32) -> Generator {
        let last = |base: u16| u32::from(base) + 2 * streams.saturating_sub(1);
        assert!(
            last(leg.src_port) <= 65535 && last(leg.dst_port) <= 65535,
            "port range overflow"
        );
        Generator {
            leg,
            streams,
            packets_per_stream,
            next: 0,
            ssrc_base,
            offset_ns: 0,
            dst_ports: None,
        }
    }

    /// Sends stream `i` to `ports[i]` instead of `leg.dst_port + 2i` (the
    /// ports a relay allocated for each call). Streams beyond the list keep
    /// the default.
    pub fn with_dst_ports(mut self, ports: Vec<u16>) -> Generator {
        self.dst_ports = Some(ports);
        self
    }

    /// Starts the schedule `offset_ns` after time zero (the send
    /// timestamps stay on the caller's clock).
    pub fn start_at(mut self, offset_ns: u64) -> Generator {
        self.offset_ns = offset_ns;
        self
    }

    /// Total packets this generator sends.
    pub fn total(&self) -> u64 {
        u64::from(self.streams) * u64::from(self.packets_per_stream)
    }

    /// Packets emitted so far.
    pub fn sent(&self) -> u64 {
        self.next
    }

    /// When the next packet is due (ns since start), or `None` when done.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.next < self.total()).then(|| self.due(self.next))
    }

    /// Writes the next packet due at `now_ns` into `out` and returns its
    /// length, or `None` when nothing is due (or all were sent).
    ///
    /// # Panics
    /// When `out` is shorter than [`FRAME_LEN`].
    pub fn poll_transmit(&mut self, now_ns: u64, out: &mut [u8]) -> Option<usize> {
        let due = self.poll_timeout()?;
        if due > now_ns {
            return None;
        }
        let n = self.next;
        self.next += 1;
        let stream = (n % u64::from(self.streams)) as u32;
        let index = (n / u64::from(self.streams)) as u32;
        Some(self.emit(stream, index, now_ns, &mut out[..FRAME_LEN]))
    }

    fn due(&self, n: u64) -> u64 {
        let streams = u64::from(self.streams);
        self.offset_ns + (n / streams) * PTIME_NS + (n % streams) * PTIME_NS / streams
    }

    fn emit(&self, stream: u32, index: u32, now_ns: u64, f: &mut [u8]) -> usize {
        let leg = &self.leg;
        let src_port = leg.src_port + 2 * stream as u16;
        let dst_port = self
            .dst_ports
            .as_ref()
            .and_then(|p| p.get(stream as usize).copied())
            .unwrap_or(leg.dst_port + 2 * stream as u16);
        f[0..6].copy_from_slice(&leg.dst_mac);
        f[6..12].copy_from_slice(&leg.src_mac);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        // IPv4: DF, TTL 64, UDP.
        let ip_len = (FRAME_LEN - 14) as u16;
        f[14..34].copy_from_slice(&[
            0x45, 0xb8, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[26..30].copy_from_slice(&leg.src_ip.octets());
        f[30..34].copy_from_slice(&leg.dst_ip.octets());
        let sum = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        // UDP.
        let udp_len = (FRAME_LEN - 34) as u16;
        f[34..36].copy_from_slice(&src_port.to_be_bytes());
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        f[40..42].copy_from_slice(&[0, 0]);
        //= https://www.rfc-editor.org/rfc/rfc3550#section-5.1
        //# The sequence number increments by one for each RTP data packet
        //# sent [...] The initial value of the sequence number SHOULD be random
        // Seeded per stream here (reproducible runs), not random.
        let ssrc = self.ssrc_base.wrapping_add(stream);
        let seq = (ssrc as u16).wrapping_add(index as u16);
        let ts = ssrc
            .rotate_left(16)
            .wrapping_add(index.wrapping_mul(TS_STEP));
        f[42] = 0x80; // V=2
        f[43] = 8; // PCMA
        f[44..46].copy_from_slice(&seq.to_be_bytes());
        f[46..50].copy_from_slice(&ts.to_be_bytes());
        f[50..54].copy_from_slice(&ssrc.to_be_bytes());
        let p = &mut f[54..];
        p[0..8].copy_from_slice(&now_ns.to_be_bytes());
        p[8..12].copy_from_slice(&stream.to_be_bytes());
        p[12..16].copy_from_slice(&index.to_be_bytes());
        p[16..].fill(0xd5);
        let sum = checksum(
            &f[34..FRAME_LEN],
            pseudo_header(leg.src_ip, leg.dst_ip, udp_len),
        );
        f[40..42].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
        FRAME_LEN
    }
}

/// What a run measured on the receiving side.
#[derive(Clone, Debug, PartialEq)]
pub struct RxReport {
    /// Generator packets received.
    pub received: u64,
    /// Received more than once (same stream and index).
    pub duplicates: u64,
    /// Frames that were not generator packets (or were corrupted).
    pub foreign: u64,
    /// Latency percentiles, µs: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
}

/// Counts generator packets coming back and their one-way latency.
#[derive(Clone, Debug)]
pub struct Receiver {
    streams: u32,
    packets_per_stream: u32,
    seen: Vec<u64>,
    received: u64,
    duplicates: u64,
    foreign: u64,
    latency: Histogram<u64>,
}

impl Receiver {
    /// A receiver for `streams` × `packets_per_stream` packets.
    pub fn new(streams: u32, packets_per_stream: u32) -> Receiver {
        let bits = streams as usize * packets_per_stream as usize;
        Receiver {
            streams,
            packets_per_stream,
            seen: vec![0; bits.div_ceil(64)],
            received: 0,
            duplicates: 0,
            foreign: 0,
            // 1 µs .. 60 s at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    /// Handles one received Ethernet frame that arrived at `now_ns`.
    pub fn handle_frame(&mut self, now_ns: u64, frame: &[u8]) {
        let Some((send_ns, stream, index)) = parse(frame) else {
            self.foreign += 1;
            return;
        };
        if stream >= self.streams || index >= self.packets_per_stream {
            self.foreign += 1;
            return;
        }
        let bit = stream as usize * self.packets_per_stream as usize + index as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if self.seen[word] & mask != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= mask;
        self.received += 1;
        let us = now_ns.saturating_sub(send_ns) / 1000;
        self.latency.saturating_record(us.max(1));
    }

    /// The one-way latency histogram, µs.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// The figures so far.
    pub fn report(&self) -> RxReport {
        let q = |p: f64| self.latency.value_at_quantile(p);
        RxReport {
            received: self.received,
            duplicates: self.duplicates,
            foreign: self.foreign,
            latency_us: [q(0.5), q(0.99), q(0.999), self.latency.max()],
        }
    }
}

/// Extracts (send time, stream, index) from a generator frame, checking the
/// headers and the UDP checksum on the way.
fn parse(f: &[u8]) -> Option<(u64, u32, u32)> {
    if f.len() < FRAME_LEN || f[12..14] != [0x08, 0x00] || f[14] != 0x45 || f[23] != 17 {
        return None;
    }
    let udp_len = u16::from_be_bytes([f[38], f[39]]);
    if usize::from(udp_len) != FRAME_LEN - 34 || f[42] != 0x80 {
        return None;
    }
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    if f[40..42] != [0, 0] && checksum(&f[34..FRAME_LEN], pseudo_header(src, dst, udp_len)) != 0 {
        return None;
    }
    let p = &f[54..70];
    let send_ns = u64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
    let stream = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
    let index = u32::from_be_bytes([p[12], p[13], p[14], p[15]]);
    Some((send_ns, stream, index))
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let words = |ip: Ipv4Addr| {
        let o = ip.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    words(src) + words(dst) + 17 + u32::from(udp_len)
}

//= https://www.rfc-editor.org/rfc/rfc1071#section-1
//# To generate a checksum, the checksum field itself is cleared, the
//# 16-bit 1's complement sum is computed over the octets concerned, and
//# the 1's complement of this sum is placed in the checksum field.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from(*a) << 8,
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> Leg {
        Leg {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(198, 18, 0, 1),
            dst_ip: Ipv4Addr::new(198, 18, 0, 2),
            src_port: 20000,
            dst_port: 30000,
        }
    }

    #[test]
    fn packets_are_spread_over_the_period_at_50_pps() {
        let mut g = Generator::new(leg(), 4, 3, 7);
        let mut buf = [0u8; FRAME_LEN];
        let mut times = Vec::new();
        let mut now = 0;
        while let Some(due) = g.poll_timeout() {
            now = now.max(due);
            if due > 0 {
                assert!(
                    g.poll_transmit(due - 1, &mut buf).is_none(),
                    "not before it is due"
                );
            }
            assert!(g.poll_transmit(now, &mut buf).is_some());
            times.push(now);
        }
        assert_eq!(times.len(), 12);
        assert_eq!(
            &times[..5],
            &[0, 5_000_000, 10_000_000, 15_000_000, 20_000_000]
        );
        assert_eq!(*times.last().unwrap(), 2 * PTIME_NS + 15_000_000);
        assert_eq!(g.sent(), g.total());
        assert!(g.poll_transmit(u64::MAX, &mut buf).is_none());
    }

    #[test]
    fn a_delayed_start_shifts_the_schedule_not_the_timestamps() {
        let mut g = Generator::new(leg(), 2, 2, 0).start_at(7_000_000);
        let mut buf = [0u8; FRAME_LEN];
        assert_eq!(g.poll_timeout(), Some(7_000_000));
        assert!(g.poll_transmit(6_999_999, &mut buf).is_none());
        g.poll_transmit(7_000_100, &mut buf).unwrap();
        // The payload carries the clock reading, not the schedule slot.
        assert_eq!(parse(&buf).unwrap().0, 7_000_100);
        assert_eq!(g.poll_timeout(), Some(7_000_000 + PTIME_NS / 2));
    }

    #[test]
    fn a_late_driver_catches_up_in_order() {
        let mut g = Generator::new(leg(), 10, 5, 0);
        let mut buf = [0u8; FRAME_LEN];
        // 1 s late: everything is due, one packet per call.
        let mut n = 0;
        while g.poll_transmit(1_000_000_000, &mut buf).is_some() {
            n += 1;
        }
        assert_eq!(n, 50);
    }

    #[test]
    fn frames_are_valid_rtp_with_real_seq_and_timestamps() {
        let mut g = Generator::new(leg(), 2, 3, 0x1234_0000);
        let mut buf = [0u8; FRAME_LEN];
        let mut seen = Vec::new();
        while let Some(due) = g.poll_timeout() {
            let len = g.poll_transmit(due, &mut buf).unwrap();
            assert_eq!(len, 214);
            assert_eq!(checksum(&buf[14..34], 0), 0, "IPv4 header checksum");
            let rtp = wire::rtp::RtpPacket::new_checked(&buf[42..len]).expect("RTP");
            let port = u16::from_be_bytes([buf[36], buf[37]]);
            seen.push((
                port,
                rtp.ssrc(),
                rtp.sequence_number(),
                rtp.timestamp(),
                rtp.payload().len(),
            ));
            assert_eq!(parse(&buf).map(|p| p.0), Some(due));
        }
        let ssrc0 = wire::Ssrc(0x1234_0000);
        let (p0, s0, q0, t0, l0) = seen[0];
        assert_eq!((p0, s0, l0), (30000, ssrc0, PAYLOAD_LEN));
        assert_eq!(seen[1].0, 30002, "stream 1 on the next even port");
        // Stream 0's packets: seq +1, timestamp +160 each.
        assert_eq!(seen[2].2, q0.wrapping_add(1));
        assert_eq!(seen[2].3, t0.wrapping_add(TS_STEP));
        assert_eq!(seen[4].2, q0.wrapping_add(2));
    }

    #[test]
    fn allocated_ports_replace_the_default_layout() {
        let mut g = Generator::new(leg(), 3, 1, 0).with_dst_ports(vec![31000, 30404]);
        let mut buf = [0u8; FRAME_LEN];
        let mut ports = Vec::new();
        while let Some(due) = g.poll_timeout() {
            g.poll_transmit(due, &mut buf).unwrap();
            ports.push(u16::from_be_bytes([buf[36], buf[37]]));
            assert!(parse(&buf).is_some(), "checksum covers the new port");
        }
        // Stream 2 is not in the list: the default layout.
        assert_eq!(ports, [31000, 30404, 30004]);
    }

    #[test]
    fn receiver_counts_latency_loss_duplicates_and_corruption() {
        let mut g = Generator::new(leg(), 3, 4, 0);
        let mut r = Receiver::new(3, 4);
        let mut buf = [0u8; FRAME_LEN];
        let mut i = 0;
        while let Some(due) = g.poll_timeout() {
            g.poll_transmit(due, &mut buf).unwrap();
            i += 1;
            match i {
                // Lost.
                5 => continue,
                // Delivered twice.
                6 => r.handle_frame(due + 300_000, &buf),
                // Corrupted in flight: the UDP checksum catches it.
                7 => {
                    let mut bad = buf;
                    bad[100] ^= 1;
                    r.handle_frame(due + 1000, &bad);
                    continue;
                }
                _ => {}
            }
            r.handle_frame(due + 250_000, &buf);
        }
        let rep = r.report();
        assert_eq!(rep.received, 10);
        assert_eq!(rep.duplicates, 1);
        assert_eq!(rep.foreign, 1);
        // 250 µs for all but the first copy of packet 6 (300 µs).
        assert_eq!(rep.latency_us[0], 250);
        assert!((299..=301).contains(&rep.latency_us[3]), "{rep:?}");
        r.handle_frame(0, &[0u8; 60]);
        assert_eq!(r.report().foreign, 2);
    }
}
