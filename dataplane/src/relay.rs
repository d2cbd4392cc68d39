//! The relay core: one shard of the session table, with no sockets, threads
//! or clocks.
//!
//! A [`Relay`] owns a range of local UDP ports and the sessions that use
//! them. Each session has two legs: leg 0 faces the party that sent the
//! first offer (the caller, by its `from-tag`), leg 1 the party that
//! answered (the callee, by its `to-tag`). Each leg has a local port pair
//! (RTP on an even port, RTCP on the next one, or both on the RTP port with
//! rtcp-mux). A datagram arriving on leg A's port from A's peer leaves
//! through leg B's port towards B's peer.
//!
//! # Driving contract
//!
//! One input at a time — [`Relay::handle_datagram`] for each received
//! datagram, [`Relay::handle_timeout`] when [`Relay::poll_timeout`] is
//! reached, or a control call ([`Relay::offer`], [`Relay::answer`],
//! [`Relay::delete`], …) — then drain [`Relay::poll_event`] (it tells the
//! driver which ports to open and close) and sleep until
//! [`Relay::poll_timeout`]. Forwarding decisions are returned synchronously
//! in the [`Verdict`]: the packet is sent as is, from [`Forward::src`] to
//! [`Forward::dst`], so a backend can forward from the buffer it received
//! into, without a copy. Backends that build whole frames (AF_XDP) apply the
//! decision with [`crate::frame::rewrite`].
//!
//! # Latching without RTP bleed
//!
//! A leg's remote address is learned ("latched") from the first packet seen
//! while the leg is young (within [`RelayConfig::latch_window`] of its SDP),
//! and never re-learned from another source afterwards, except that a
//! packet from the address the SDP named takes the latch over from an
//! earlier unknown source, so an attacker who races the real peer during the
//! window loses as soon as the peer speaks. RTCP is learned only from the
//! host whose RTP was latched. With [`SessionFlags::strict_source`] only the SDP
//! address is ever accepted. Everything else is dropped and counted as
//! [`DropReason::SpoofedSource`].
//!
//! # Sharding
//!
//! A worker thread owns one `Relay` and all the ports of its range, so the
//! packet path takes no locks. [`RelayConfig::shard`] splits one
//! configuration into per-worker ranges and [`shard_of`] names the shard of a
//! call, for whoever routes control commands.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use wire::rtp::{self, Kind};
use wire::sdp::{Direction, Sdp, SessionDescription};
use wire::{SeqNo, Ssrc};

/// Configuration of one relay shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Local IPv4 address advertised in SDP and used as the source of
    /// forwarded IPv4 packets.
    pub media_v4: Option<IpAddr>,
    /// Local IPv6 address, likewise.
    pub media_v6: Option<IpAddr>,
    /// Local ports; the first must be even. Each leg takes an even/odd pair.
    pub ports: RangeInclusive<u16>,
    /// Most sessions this shard holds at once.
    pub max_sessions: usize,
    /// How long after a leg's SDP (offer or answer) its remote may be
    /// learned from the first packets.
    pub latch_window: Duration,
    /// A session with no packet on either leg for this long is deleted
    /// and raises [`RelayEvent::MediaTimeout`].
    pub media_timeout: Duration,
    /// Largest UDP payload accepted, in octets.
    pub max_payload: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            media_v4: Some(IpAddr::from([127, 0, 0, 1])),
            media_v6: None,
            ports: 30000..=39999,
            max_sessions: 100_000,
            latch_window: Duration::from_secs(3),
            media_timeout: Duration::from_secs(60),
            max_payload: 1500,
        }
    }
}

impl RelayConfig {
    /// The configuration of shard `index` of `count`: an equal, even-aligned
    /// slice of the port range and of the session limit.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`] when the range cannot give every
    /// shard at least two port pairs, or `index >= count`.
    pub fn shard(&self, index: usize, count: usize) -> Result<Self, ControlError> {
        let lo = u32::from(*self.ports.start());
        let hi = u32::from(*self.ports.end());
        let pairs = (hi + 1).saturating_sub(lo) / 2;
        let per = pairs / count.max(1) as u32;
        if count == 0 || index >= count || per < 2 {
            return Err(ControlError::InvalidConfig(
                "port range too small for the number of workers",
            ));
        }
        let start = lo + 2 * per * index as u32;
        let end = start + 2 * per - 1;
        let mut cfg = self.clone();
        // start and end are within [lo, hi], which came from u16 values.
        cfg.ports = start as u16..=end as u16;
        cfg.max_sessions = self.max_sessions.div_ceil(count);
        Ok(cfg)
    }
}

/// The shard (of `count`) that owns `call_id`: a stable hash, so every
/// command for a call reaches the same worker.
pub fn shard_of(call_id: &str, count: usize) -> usize {
    let mut h = rustc_hash::FxHasher::default();
    call_id.hash(&mut h);
    (h.finish() % count.max(1) as u64) as usize
}

/// Per-session options from the control request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionFlags {
    /// Accept media only from the address in the leg's SDP (no latching).
    pub strict_source: bool,
    /// Advertise this address family in the rewritten SDP instead of the
    /// family of the incoming one.
    pub family: Option<Family>,
}

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// An offer: the SDP of the party identified by `from_tag`.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    /// SIP Call-ID.
    pub call_id: &'a str,
    /// Tag of the party whose SDP this is.
    pub from_tag: &'a str,
    /// The SDP body as received.
    pub sdp: &'a str,
    /// Options.
    pub flags: SessionFlags,
}

/// An answer: the SDP of the party identified by `to_tag`.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// SIP Call-ID.
    pub call_id: &'a str,
    /// Tag of the offerer.
    pub from_tag: &'a str,
    /// Tag of the party whose SDP this is.
    pub to_tag: &'a str,
    /// The SDP body as received.
    pub sdp: &'a str,
    /// Options.
    pub flags: SessionFlags,
}

/// Why a control command was refused. Each variant maps to an ng
/// `error-reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The SDP could not be parsed (malformed request).
    #[error("invalid SDP: {0}")]
    InvalidSdp(#[from] wire::sdp::Error),
    /// The SDP has no media section with a non-zero port (peer misbehaved).
    #[error("no usable media section in SDP")]
    NoMedia,
    /// No session has this Call-ID (or no leg has this tag).
    #[error("unknown call-id or tag")]
    UnknownCall,
    /// The session table is full (local limit).
    #[error("session table full")]
    TableFull,
    /// No free port pair is left in the range (local limit).
    #[error("port range exhausted")]
    PortsExhausted,
    /// The requested address family has no configured media address.
    #[error("no media address configured for the requested address family")]
    NoAddressFamily,
    /// The configuration is unusable.
    #[error("invalid relay configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Where a datagram came from and was sent to, as the backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// The sender.
    pub src: SocketAddr,
    /// The local address and port it arrived on.
    pub dst: SocketAddr,
}

/// What to do with a received datagram.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the datagram unchanged from `src` to `dst`.
    Forward(Forward),
    /// Drop it; it has been counted.
    Drop(DropReason),
}

/// A forwarding decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The relay's local address and port to send from.
    pub src: SocketAddr,
    /// The peer to send to.
    pub dst: SocketAddr,
    /// RTP or RTCP.
    pub kind: Kind,
    /// The session is mirrored: hand a copy to the mirror sinks
    /// ([`crate::mirror`]); [`Relay::mirror_info`] names the call.
    pub mirror: bool,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// No session owns the destination port.
    UnknownPort = 0,
    /// Not RTP/RTCP: a runt, wrong version, or RTP on an RTCP-only port.
    Malformed = 1,
    /// Larger than [`RelayConfig::max_payload`].
    Oversized = 2,
    /// From a source other than the latched (or, strict, the SDP) one.
    SpoofedSource = 3,
    /// The other leg's remote is not known yet (no answer, no SDP address).
    NoDestination = 4,
    /// RTP against the negotiated direction (hold).
    Hold = 5,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 6] = [
        DropReason::UnknownPort,
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::SpoofedSource,
        DropReason::NoDestination,
        DropReason::Hold,
    ];

    /// A stable snake_case name, for metrics and ng output.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownPort => "unknown_port",
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::NoDestination => "no_destination",
            DropReason::Hold => "hold",
        }
    }
}

/// Drop counts indexed by [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts(pub [u64; 6]);

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// Shard-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    /// Datagrams handed to [`Relay::handle_datagram`].
    pub rx_packets: u64,
    /// Octets of those datagrams.
    pub rx_bytes: u64,
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Drops by reason.
    pub drops: DropCounts,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions deleted.
    pub sessions_deleted: u64,
    /// Media timeouts raised.
    pub media_timeouts: u64,
}

impl RelayCounters {
    /// Adds `other` into `self` (to total the shards).
    pub fn merge(&mut self, other: &RelayCounters) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.forwarded += other.forwarded;
        self.drops.merge(&other.drops);
        self.sessions_created += other.sessions_created;
        self.sessions_deleted += other.sessions_deleted;
        self.media_timeouts += other.media_timeouts;
    }
}

/// Which of a session's two legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegId {
    /// The offerer's leg (`from-tag`).
    Caller = 0,
    /// The answerer's leg (`to-tag`).
    Callee = 1,
}

impl LegId {
    fn other(self) -> LegId {
        match self {
            LegId::Caller => LegId::Callee,
            LegId::Callee => LegId::Caller,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Something the driver should act on or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// Open the local port pair `rtp`, `rtp + 1`.
    PortsOpened {
        /// The even RTP port.
        rtp: u16,
    },
    /// Close the local port pair `rtp`, `rtp + 1`.
    PortsClosed {
        /// The even RTP port.
        rtp: u16,
    },
    /// A leg's remote was learned (or taken over by its SDP address).
    Latched {
        /// The call.
        call_id: String,
        /// The leg.
        leg: LegId,
        /// RTP or RTCP.
        kind: Kind,
        /// The latched remote.
        remote: SocketAddr,
    },
    /// No media on either leg for [`RelayConfig::media_timeout`]: the
    /// session has been deleted (its `PortsClosed` events come first).
    MediaTimeout {
        /// The call.
        call_id: String,
    },
}

/// Counters and state of one leg, as reported by query and delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegStats {
    /// The party's tag.
    pub tag: String,
    /// The relay's RTP port for this leg.
    pub local_port: u16,
    /// Where RTP for this party is sent: the latched address, else the SDP one.
    pub remote: Option<SocketAddr>,
    /// Whether `remote` was learned from packets.
    pub latched: bool,
    /// The direction in this party's SDP.
    pub direction: Direction,
    /// Last SSRC seen from this party.
    pub ssrc: Option<Ssrc>,
    /// Times the SSRC changed.
    pub ssrc_changes: u32,
    /// Highest extended sequence number seen from the current SSRC.
    pub max_seq: Option<SeqNo>,
    /// RTP packets expected but not received (RFC 3550 A.3), current SSRC.
    pub lost: u64,
    /// RTP packets accepted from this party.
    pub rtp_packets: u64,
    /// RTP octets accepted from this party (UDP payload).
    pub rtp_bytes: u64,
    /// RTCP packets accepted from this party.
    pub rtcp_packets: u64,
    /// Datagrams from this party forwarded to the other.
    pub forwarded: u64,
    /// Datagrams arriving on this leg's ports that were dropped, by reason.
    pub drops: DropCounts,
}

/// State and counters of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// The call.
    pub call_id: String,
    /// Age of the session.
    pub age: Duration,
    /// Time since the last accepted packet on either leg (or since creation).
    pub idle: Duration,
    /// Whether recording was requested (`start recording`).
    pub recording: bool,
    /// Caller leg, then callee leg.
    pub legs: [LegStats; 2],
}

/// One relay shard. See the [module documentation](self) for the driving
/// contract.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    /// Indexed by `port - ports.start()`: 0 for free, else
    /// `(slot + 1) << 1 | leg`.
    port_map: Vec<u32>,
    free_pairs: VecDeque<u16>,
    slots: Vec<Option<Session>>,
    free_slots: Vec<u32>,
    by_call: HashMap<Box<str>, u32, rustc_hash::FxBuildHasher>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    events: VecDeque<RelayEvent>,
    counters: RelayCounters,
    next_generation: u32,
}

impl Relay {
    /// A relay shard with no sessions.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`] for an odd first port, an empty
    /// range or no media address.
    pub fn new(config: RelayConfig) -> Result<Self, ControlError> {
        let lo = *config.ports.start();
        let hi = *config.ports.end();
        if !lo.is_multiple_of(2) || hi <= lo {
            return Err(ControlError::InvalidConfig(
                "port range must start on an even port and hold a pair",
            ));
        }
        if config.media_v4.is_none() && config.media_v6.is_none() {
            return Err(ControlError::InvalidConfig("no media address"));
        }
        let len = usize::from(hi - lo) + 1;
        let free_pairs = (lo..hi).step_by(2).collect();
        Ok(Self {
            port_map: vec![0; len],
            free_pairs,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_call: HashMap::default(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            counters: RelayCounters::default(),
            next_generation: 0,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Shard-wide counters.
    pub fn counters(&self) -> &RelayCounters {
        &self.counters
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.by_call.len()
    }

    /// True when there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.by_call.is_empty()
    }

    /// Decides what to do with one datagram (`pkt` is the UDP payload)
    /// received on one of this shard's ports.
    pub fn handle_datagram(&mut self, now: Instant, meta: RxMeta, pkt: &mut [u8]) -> Verdict {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += pkt.len() as u64;
        let verdict = self.decide(now, meta, pkt);
        match verdict {
            Verdict::Forward(_) => self.counters.forwarded += 1,
            Verdict::Drop(reason) => self.counters.drops.add(reason),
        }
        verdict
    }

    /// Raises the media timeouts that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let timeout = self.config.media_timeout;
            let Some(Some(session)) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if session.generation != generation {
                continue;
            }
            let due = session.last_activity + timeout;
            if session.on_hold() {
                // A held call is quiet on purpose.
                session.last_activity = now;
                self.timers.push(Reverse((now + timeout, slot, generation)));
            } else if due <= now {
                // As rtpengine does: a call whose media stopped is deleted
                // (its ports close first), and the driver is told why.
                let call_id = session.call_id.to_string();
                self.counters.media_timeouts += 1;
                let _ = self.delete(now, &call_id);
                self.events.push_back(RelayEvent::MediaTimeout { call_id });
            } else {
                self.timers.push(Reverse((due, slot, generation)));
            }
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// When [`Relay::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Handles an offer: creates the session (allocating a port pair per
    /// leg) or updates the offerer's leg (re-INVITE), and returns the SDP
    /// rewritten to point at the relay's port for the other party.
    ///
    /// # Errors
    ///
    /// [`ControlError`]: invalid SDP, table full, ports exhausted, unknown tag.
    pub fn offer(&mut self, now: Instant, offer: &Offer<'_>) -> Result<String, ControlError> {
        let remote = RemoteSdp::parse(offer.sdp)?;
        let local_ip = self.local_ip(offer.flags.family, remote.family)?;
        let own_ip = self.local_ip(None, remote.family)?;
        let slot = match self.by_call.get(offer.call_id) {
            Some(&slot) => slot,
            None => self.create(now, offer.call_id, offer.from_tag)?,
        };
        let session = self.session_mut(slot)?;
        let leg = session
            .leg_by_tag(offer.from_tag)
            .ok_or(ControlError::UnknownCall)?;
        session.flags = offer.flags;
        session.legs[leg.index()].apply(now, &remote, own_ip);
        let other = &mut session.legs[leg.other().index()];
        other.local_ip = Some(local_ip);
        remote.rewrite(offer.sdp, local_ip, other.local_port)
    }

    /// Handles an answer: records the answerer's SDP on its leg and returns
    /// the SDP rewritten to point at the relay's port for the offerer.
    ///
    /// # Errors
    ///
    /// [`ControlError`]: invalid SDP, unknown call.
    pub fn answer(&mut self, now: Instant, answer: &Answer<'_>) -> Result<String, ControlError> {
        let remote = RemoteSdp::parse(answer.sdp)?;
        let local_ip = self.local_ip(answer.flags.family, remote.family)?;
        let own_ip = self.local_ip(None, remote.family)?;
        let slot = *self
            .by_call
            .get(answer.call_id)
            .ok_or(ControlError::UnknownCall)?;
        let session = self.session_mut(slot)?;
        let leg = match session.leg_by_tag(answer.to_tag) {
            Some(leg) => leg,
            // First answer, or a later fork: the callee leg takes this tag
            // (the last answer wins), as long as the offerer is known.
            None if session.leg_by_tag(answer.from_tag) == Some(LegId::Caller) => {
                session.legs[1].tag = answer.to_tag.into();
                LegId::Callee
            }
            None => return Err(ControlError::UnknownCall),
        };
        if answer.flags.strict_source {
            session.flags.strict_source = true;
        }
        session.legs[leg.index()].apply(now, &remote, own_ip);
        let other = &mut session.legs[leg.other().index()];
        other.local_ip = Some(local_ip);
        remote.rewrite(answer.sdp, local_ip, other.local_port)
    }

    /// Deletes a session, releasing its ports, and returns its final stats.
    ///
    /// # Errors
    ///
    /// [`ControlError::UnknownCall`].
    pub fn delete(&mut self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError> {
        let slot = self
            .by_call
            .remove(call_id)
            .ok_or(ControlError::UnknownCall)?;
        let session = self
            .slots
            .get_mut(slot as usize)
            .and_then(Option::take)
            .ok_or(ControlError::UnknownCall)?;
        let lo = *self.config.ports.start();
        for leg in &session.legs {
            let i = usize::from(leg.local_port - lo);
            self.port_map[i] = 0;
            self.port_map[i + 1] = 0;
            self.free_pairs.push_back(leg.local_port);
            self.events.push_back(RelayEvent::PortsClosed {
                rtp: leg.local_port,
            });
        }
        self.free_slots.push(slot);
        self.counters.sessions_deleted += 1;
        Ok(session.stats(now))
    }

    /// The state and counters of a session.
    ///
    /// # Errors
    ///
    /// [`ControlError::UnknownCall`].
    pub fn query(&self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError> {
        let slot = *self.by_call.get(call_id).ok_or(ControlError::UnknownCall)?;
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|s| s.stats(now))
            .ok_or(ControlError::UnknownCall)
    }

    /// The Call-IDs of all sessions, in no particular order.
    pub fn list(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_call.keys().map(|k| &**k)
    }

    /// Marks a session as recorded or not (`start`/`stop recording`): the
    /// forwarding decisions of a recorded session carry
    /// [`Forward::mirror`], so the backend copies its packets to the
    /// mirror sinks.
    ///
    /// # Errors
    ///
    /// [`ControlError::UnknownCall`].
    pub fn set_recording(&mut self, call_id: &str, on: bool) -> Result<(), ControlError> {
        let slot = *self.by_call.get(call_id).ok_or(ControlError::UnknownCall)?;
        self.session_mut(slot)?.recording = on;
        Ok(())
    }

    /// The call and leg that own local port `port`, for labelling a mirrored
    /// copy.
    pub fn mirror_info(&self, port: u16) -> Option<(&str, LegId)> {
        let offset = port.checked_sub(*self.config.ports.start())?;
        let entry = *self.port_map.get(usize::from(offset))?;
        let slot = (entry >> 1).checked_sub(1)?;
        let session = self.slots.get(slot as usize)?.as_ref()?;
        let leg = if entry & 1 == 0 {
            LegId::Caller
        } else {
            LegId::Callee
        };
        Some((&session.call_id, leg))
    }

    /// Approximate bytes this shard's table spends on one session: the
    /// slot, the Call-ID key and its map entry, the tags and the port map.
    pub fn session_footprint(&self, call_id: &str) -> Option<usize> {
        let slot = *self.by_call.get(call_id)?;
        let s = self.slots.get(slot as usize)?.as_ref()?;
        let heap = 2 * s.call_id.len() + s.legs.iter().map(|l| l.tag.len()).sum::<usize>();
        let map_entry = std::mem::size_of::<(Box<str>, u32)>() + 1;
        let ports = 4 * std::mem::size_of::<u32>() + 2 * std::mem::size_of::<u16>();
        let timer = std::mem::size_of::<Reverse<(Instant, u32, u32)>>();
        Some(std::mem::size_of::<Option<Session>>() + heap + map_entry + ports + timer)
    }

    fn decide(&mut self, now: Instant, meta: RxMeta, pkt: &[u8]) -> Verdict {
        let lo = *self.config.ports.start();
        let Some(offset) = meta.dst.port().checked_sub(lo) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let entry = match self.port_map.get(usize::from(offset)) {
            Some(&e) if e != 0 => e,
            _ => return Verdict::Drop(DropReason::UnknownPort),
        };
        let slot = (entry >> 1) - 1;
        let leg = if entry & 1 == 0 {
            LegId::Caller
        } else {
            LegId::Callee
        };
        let on_rtcp_port = offset % 2 == 1;
        let max_payload = self.config.max_payload;
        let latch_window = self.config.latch_window;
        let Some(Some(session)) = self.slots.get_mut(slot as usize) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let verdict = session.forward(
            now,
            leg,
            on_rtcp_port,
            meta.src,
            pkt,
            max_payload,
            latch_window,
        );
        if let Some(event) = session.pending_event.take() {
            self.events.push_back(*event);
        }
        verdict
    }

    fn create(&mut self, now: Instant, call_id: &str, from_tag: &str) -> Result<u32, ControlError> {
        if self.by_call.len() >= self.config.max_sessions {
            return Err(ControlError::TableFull);
        }
        if self.free_pairs.len() < 2 {
            return Err(ControlError::PortsExhausted);
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        // Two pairs are free: checked above.
        let ports = [
            self.free_pairs.pop_front().unwrap_or_default(),
            self.free_pairs.pop_front().unwrap_or_default(),
        ];
        let lo = *self.config.ports.start();
        for (leg, &port) in ports.iter().enumerate() {
            let i = usize::from(port - lo);
            let entry = ((slot + 1) << 1) | leg as u32;
            self.port_map[i] = entry;
            self.port_map[i + 1] = entry;
            self.events.push_back(RelayEvent::PortsOpened { rtp: port });
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        self.slots[slot as usize] = Some(Session {
            call_id: call_id.into(),
            legs: [
                Leg::new(from_tag, ports[0], now),
                Leg::new("", ports[1], now),
            ],
            created: now,
            last_activity: now,
            flags: SessionFlags::default(),
            generation,
            recording: false,
            pending_event: None,
        });
        self.by_call.insert(call_id.into(), slot);
        self.timers
            .push(Reverse((now + self.config.media_timeout, slot, generation)));
        self.counters.sessions_created += 1;
        Ok(slot)
    }

    fn session_mut(&mut self, slot: u32) -> Result<&mut Session, ControlError> {
        self.slots
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .ok_or(ControlError::UnknownCall)
    }

    fn local_ip(&self, wanted: Option<Family>, sdp: Family) -> Result<IpAddr, ControlError> {
        let pick = |f| match f {
            Family::V4 => self.config.media_v4,
            Family::V6 => self.config.media_v6,
        };
        match wanted {
            Some(f) => pick(f).ok_or(ControlError::NoAddressFamily),
            None => pick(sdp)
                .or(self.config.media_v4)
                .or(self.config.media_v6)
                .ok_or(ControlError::NoAddressFamily),
        }
    }
}

/// The control API, as used in-process (by `control`) and by the ng
/// protocol. [`Relay`] implements it for one shard; a multi-worker backend
/// implements it by routing each call to the shard that owns it
/// ([`shard_of`]).
pub trait Control {
    /// See [`Relay::offer`].
    ///
    /// # Errors
    ///
    /// [`ControlError`].
    fn offer(&mut self, now: Instant, offer: &Offer<'_>) -> Result<String, ControlError>;
    /// See [`Relay::answer`].
    ///
    /// # Errors
    ///
    /// [`ControlError`].
    fn answer(&mut self, now: Instant, answer: &Answer<'_>) -> Result<String, ControlError>;
    /// See [`Relay::delete`].
    ///
    /// # Errors
    ///
    /// [`ControlError::UnknownCall`].
    fn delete(&mut self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError>;
    /// See [`Relay::query`].
    ///
    /// # Errors
    ///
    /// [`ControlError::UnknownCall`].
    fn query(&mut self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError>;
    /// Up to `limit` Call-IDs.
    fn list(&mut self, limit: usize) -> Vec<String>;
    /// See [`Relay::set_recording`].
    ///
    /// # Errors
    ///
    /// [`ControlError::UnknownCall`].
    fn set_recording(&mut self, call_id: &str, on: bool) -> Result<(), ControlError>;
}

impl Control for Relay {
    fn offer(&mut self, now: Instant, offer: &Offer<'_>) -> Result<String, ControlError> {
        Relay::offer(self, now, offer)
    }

    fn answer(&mut self, now: Instant, answer: &Answer<'_>) -> Result<String, ControlError> {
        Relay::answer(self, now, answer)
    }

    fn delete(&mut self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError> {
        Relay::delete(self, now, call_id)
    }

    fn query(&mut self, now: Instant, call_id: &str) -> Result<SessionStats, ControlError> {
        Relay::query(self, now, call_id)
    }

    fn list(&mut self, limit: usize) -> Vec<String> {
        Relay::list(self).take(limit).map(str::to_owned).collect()
    }

    fn set_recording(&mut self, call_id: &str, on: bool) -> Result<(), ControlError> {
        Relay::set_recording(self, call_id, on)
    }
}

/// One media session. Kept small: see the footprint test.
#[derive(Debug)]
struct Session {
    call_id: Box<str>,
    legs: [Leg; 2],
    created: Instant,
    last_activity: Instant,
    flags: SessionFlags,
    generation: u32,
    recording: bool,
    pending_event: Option<Box<RelayEvent>>,
}

impl Session {
    fn leg_by_tag(&self, tag: &str) -> Option<LegId> {
        if &*self.legs[0].tag == tag {
            Some(LegId::Caller)
        } else if !self.legs[1].tag.is_empty() && &*self.legs[1].tag == tag {
            Some(LegId::Callee)
        } else {
            None
        }
    }

    fn on_hold(&self) -> bool {
        self.legs
            .iter()
            .any(|l| l.direction != Direction::SendRecv && l.sdp_seen)
    }

    #[expect(clippy::too_many_arguments, reason = "the packet path, kept flat")]
    fn forward(
        &mut self,
        now: Instant,
        leg: LegId,
        on_rtcp_port: bool,
        src: SocketAddr,
        pkt: &[u8],
        max_payload: usize,
        latch_window: Duration,
    ) -> Verdict {
        let strict = self.flags.strict_source;
        let (from, to) = match leg {
            LegId::Caller => {
                let [a, b] = &mut self.legs;
                (a, &*b)
            }
            LegId::Callee => {
                let [a, b] = &mut self.legs;
                (b, &*a)
            }
        };
        if pkt.len() > max_payload {
            from.drops.add(DropReason::Oversized);
            return Verdict::Drop(DropReason::Oversized);
        }
        let kind = match (rtp::classify(pkt), on_rtcp_port) {
            (Some(Kind::Rtcp), _) => Kind::Rtcp,
            (Some(Kind::Rtp), false) => Kind::Rtp,
            _ => {
                from.drops.add(DropReason::Malformed);
                return Verdict::Drop(DropReason::Malformed);
            }
        };
        let rtp_pkt = match kind {
            Kind::Rtp => match rtp::RtpPacket::new_checked(pkt) {
                Ok(p) => Some(p),
                Err(_) => {
                    from.drops.add(DropReason::Malformed);
                    return Verdict::Drop(DropReason::Malformed);
                }
            },
            Kind::Rtcp => None,
        };
        let window_open = now < from.sdp_at + latch_window;
        // RTCP comes from the host that sends the RTP: once RTP is latched,
        // RTCP may only be learned from that address.
        if kind == Kind::Rtcp
            && from.rtcp.learned != Some(src)
            && from.rtp.learned.is_some_and(|a| a.ip() != src.ip())
        {
            from.drops.add(DropReason::SpoofedSource);
            return Verdict::Drop(DropReason::SpoofedSource);
        }
        let latch = match kind {
            Kind::Rtp => &mut from.rtp,
            Kind::Rtcp => &mut from.rtcp,
        };
        match latch.check(src, window_open, strict) {
            Err(reason) => {
                from.drops.add(reason);
                return Verdict::Drop(reason);
            }
            Ok(true) => {
                self.pending_event = Some(Box::new(RelayEvent::Latched {
                    call_id: self.call_id.to_string(),
                    leg,
                    kind,
                    remote: src,
                }));
            }
            Ok(false) => {}
        }
        self.last_activity = now;
        match &rtp_pkt {
            Some(p) => {
                from.rtp_packets += 1;
                from.rtp_bytes += pkt.len() as u64;
                from.seq.update(p.ssrc(), p.sequence_number());
            }
            None => from.rtcp_packets += 1,
        }
        //= https://www.rfc-editor.org/rfc/rfc3264#section-5.1
        //# If the offerer wishes to only send media on a stream to its peer, it
        //# MUST mark the stream as sendonly with the "a=sendonly" attribute.
        if kind == Kind::Rtp && !(from.sends() && to.receives()) {
            from.drops.add(DropReason::Hold);
            return Verdict::Drop(DropReason::Hold);
        }
        let dst = match kind {
            Kind::Rtp => to.rtp.target(),
            Kind::Rtcp => to.rtcp.target(),
        };
        let Some(dst) = dst else {
            from.drops.add(DropReason::NoDestination);
            return Verdict::Drop(DropReason::NoDestination);
        };
        let Some(local_ip) = to.local_ip else {
            from.drops.add(DropReason::NoDestination);
            return Verdict::Drop(DropReason::NoDestination);
        };
        let port = match kind {
            Kind::Rtcp if !to.rtcp_mux => to.local_port + 1,
            _ => to.local_port,
        };
        from.forwarded += 1;
        Verdict::Forward(Forward {
            src: SocketAddr::new(local_ip, port),
            dst,
            kind,
            mirror: self.recording,
        })
    }

    fn stats(&self, now: Instant) -> SessionStats {
        SessionStats {
            call_id: self.call_id.to_string(),
            age: now.saturating_duration_since(self.created),
            idle: now.saturating_duration_since(self.last_activity),
            recording: self.recording,
            legs: [self.legs[0].stats(), self.legs[1].stats()],
        }
    }
}

#[derive(Debug)]
struct Leg {
    tag: Box<str>,
    local_port: u16,
    /// The relay address this leg's party talks to (family of its SDP).
    local_ip: Option<IpAddr>,
    rtcp_mux: bool,
    sdp_seen: bool,
    direction: Direction,
    sdp_at: Instant,
    rtp: Latch,
    rtcp: Latch,
    seq: SeqTracker,
    rtp_packets: u64,
    rtp_bytes: u64,
    rtcp_packets: u64,
    forwarded: u64,
    drops: DropCounts,
}

impl Leg {
    fn new(tag: &str, local_port: u16, now: Instant) -> Self {
        Self {
            tag: tag.into(),
            local_port,
            local_ip: None,
            rtcp_mux: false,
            sdp_seen: false,
            direction: Direction::SendRecv,
            sdp_at: now,
            rtp: Latch::default(),
            rtcp: Latch::default(),
            seq: SeqTracker::default(),
            rtp_packets: 0,
            rtp_bytes: 0,
            rtcp_packets: 0,
            forwarded: 0,
            drops: DropCounts::default(),
        }
    }

    /// Takes this leg's party's SDP (offer, answer or re-INVITE).
    fn apply(&mut self, now: Instant, remote: &RemoteSdp, own_ip: IpAddr) {
        let moved = self.rtp.sdp != remote.rtp;
        self.rtp.set_sdp(remote.rtp);
        self.rtcp.set_sdp(remote.rtcp);
        self.rtcp_mux = remote.rtcp_mux;
        self.direction = remote.direction;
        // Until this party is sent a rewritten SDP, reach it from the
        // relay address of its own family.
        self.local_ip.get_or_insert(own_ip);
        if !self.sdp_seen || moved {
            // A new or moved peer: (re)open the latching window.
            self.sdp_at = now;
            self.rtp.learned = None;
            self.rtcp.learned = None;
        }
        self.sdp_seen = true;
    }

    fn sends(&self) -> bool {
        matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
    }

    fn receives(&self) -> bool {
        matches!(self.direction, Direction::SendRecv | Direction::RecvOnly)
    }

    fn stats(&self) -> LegStats {
        LegStats {
            tag: self.tag.to_string(),
            local_port: self.local_port,
            remote: self.rtp.target(),
            latched: self.rtp.learned.is_some(),
            direction: self.direction,
            ssrc: self.seq.ssrc,
            ssrc_changes: self.seq.ssrc_changes,
            max_seq: self.seq.ssrc.map(|_| SeqNo(self.seq.max)),
            lost: self.seq.lost(),
            rtp_packets: self.rtp_packets,
            rtp_bytes: self.rtp_bytes,
            rtcp_packets: self.rtcp_packets,
            forwarded: self.forwarded,
            drops: self.drops,
        }
    }
}

/// The remote address of one flow (RTP or RTCP) of a leg.
#[derive(Debug, Default, Clone, Copy)]
struct Latch {
    /// From the SDP (`None` for 0.0.0.0 or before any SDP).
    sdp: Option<SocketAddr>,
    /// Learned from packets.
    learned: Option<SocketAddr>,
    /// The learned address is the SDP address: it cannot be taken over.
    confirmed: bool,
}

impl Latch {
    fn set_sdp(&mut self, sdp: Option<SocketAddr>) {
        self.sdp = sdp;
        self.confirmed = self.learned.is_some() && self.learned == sdp;
    }

    fn target(&self) -> Option<SocketAddr> {
        self.learned.or(self.sdp)
    }

    /// Accepts or refuses a packet from `src`; `Ok(true)` when the latch
    /// changed.
    fn check(
        &mut self,
        src: SocketAddr,
        window_open: bool,
        strict: bool,
    ) -> Result<bool, DropReason> {
        let from_sdp = self.sdp == Some(src);
        if strict {
            return if from_sdp {
                Ok(false)
            } else {
                Err(DropReason::SpoofedSource)
            };
        }
        match self.learned {
            Some(l) if l == src => Ok(false),
            // The SDP address takes over from a source that got in first
            // (during the window); nobody else ever does.
            Some(_) if from_sdp && !self.confirmed => {
                self.learned = Some(src);
                self.confirmed = true;
                Ok(true)
            }
            Some(_) => Err(DropReason::SpoofedSource),
            None if window_open || from_sdp => {
                self.learned = Some(src);
                self.confirmed = from_sdp;
                Ok(true)
            }
            None => Err(DropReason::SpoofedSource),
        }
    }
}

/// RFC 3550 Appendix A.1-style sequence tracking, simplified: the highest
/// extended sequence number and the count received since the SSRC began.
#[derive(Debug, Default, Clone, Copy)]
struct SeqTracker {
    ssrc: Option<Ssrc>,
    ssrc_changes: u32,
    base: u64,
    max: u64,
    received: u64,
}

impl SeqTracker {
    fn update(&mut self, ssrc: Ssrc, seq: u16) {
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.ssrc_changes += 1;
            }
            self.ssrc = Some(ssrc);
            // Start one cycle up so a slightly older packet cannot go below 0.
            self.base = (1 << 16) + u64::from(seq);
            self.max = self.base;
            self.received = 1;
            return;
        }
        //= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.1
        //# The number of packets received is simply the count of packets as they
        //# arrive, including any late or duplicate packets.
        self.received += 1;
        let delta = i64::from(seq.wrapping_sub(self.max as u16) as i16);
        let ext = self.max as i64 + delta;
        if ext > self.max as i64 {
            self.max = ext as u64;
        }
    }

    fn lost(&self) -> u64 {
        //= https://www.rfc-editor.org/rfc/rfc3550#appendix-A.3
        //# The number of packets lost is defined to be the number of packets
        //# expected less the number of packets actually received:
        if self.ssrc.is_none() {
            return 0;
        }
        (self.max - self.base + 1).saturating_sub(self.received)
    }
}

/// What the relay needs from one party's SDP.
#[derive(Debug, Clone)]
struct RemoteSdp {
    media: usize,
    rtp: Option<SocketAddr>,
    rtcp: Option<SocketAddr>,
    rtcp_mux: bool,
    direction: Direction,
    family: Family,
}

impl RemoteSdp {
    fn parse(text: &str) -> Result<Self, ControlError> {
        let sdp = SessionDescription::parse(text)?;
        let (media, m) = sdp
            .media_sections()
            .enumerate()
            .find(|(_, m)| m.port() != 0 && m.kind() == "audio")
            .or_else(|| {
                sdp.media_sections()
                    .enumerate()
                    .find(|(_, m)| m.port() != 0)
            })
            .ok_or(ControlError::NoMedia)?;
        let ip = m.connection().and_then(|c| c.ip());
        let family = match ip {
            Some(IpAddr::V6(_)) => Family::V6,
            _ => Family::V4,
        };
        let ip = ip.filter(|ip| !ip.is_unspecified());
        let rtp = ip.map(|ip| SocketAddr::new(ip, m.port()));
        let rtcp_mux = m.rtcp_mux();
        //= https://www.rfc-editor.org/rfc/rfc3605#section-2
        //# If the "a=rtcp:" attribute is not present, the port used for RTCP
        //# is the next higher port number after the RTP port.
        let rtcp = match m.rtcp() {
            Some(a) => a
                .connection
                .and_then(|c| c.ip())
                .or(ip)
                .map(|ip| SocketAddr::new(ip, a.port)),
            None if rtcp_mux => rtp,
            None => ip.map(|ip| SocketAddr::new(ip, m.port().wrapping_add(1))),
        };
        Ok(Self {
            media,
            rtp,
            rtcp,
            rtcp_mux,
            direction: m.direction(),
            family,
        })
    }

    /// `text` with the chosen media section pointing at `ip:port` and the
    /// other sections refused (port 0).
    fn rewrite(&self, text: &str, ip: IpAddr, port: u16) -> Result<String, ControlError> {
        let mut sdp = Sdp::parse(text)?;
        match sdp.set_connection_address(None, ip) {
            Ok(()) | Err(wire::sdp::Error::Missing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut buf = String::new();
        let has_own_c = sdp
            .view(&mut buf)?
            .media(self.media)
            .and_then(|m| m.own_connection())
            .is_some();
        if has_own_c {
            sdp.set_connection_address(Some(self.media), ip)?;
        }
        sdp.set_media_port(self.media, port)?;
        //= https://www.rfc-editor.org/rfc/rfc3605#section-2.1
        //# The RTCP attribute is used to document the RTCP port used for media
        //# stream, when that port is not the next higher (odd) port number
        //# following the RTP port described in the media line.
        let rtcp = if self.rtcp_mux {
            None
        } else {
            Some((port + 1, None))
        };
        sdp.set_rtcp(self.media, rtcp)?;
        for i in 0..sdp.media_count() {
            if i != self.media {
                sdp.set_media_port(i, 0)?;
            }
        }
        let mut out = String::new();
        sdp.emit(&mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
