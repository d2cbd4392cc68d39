//! The recorder core (sans-IO): sessions from metadata, RTP copies per leg,
//! and on stop (or idle timeout) a finished [`Recording`] with the audio of
//! each leg, DTMF and hold events.
//!
//! Driving contract: feed every metadata message to
//! [`Recorder::handle_control`] and every media datagram to
//! [`Recorder::handle_media`], with the arrival time as `now`; call
//! [`Recorder::handle_timeout`] when [`Recorder::poll_timeout`] is due; after
//! each input drain [`Recorder::poll_recording`].
//!
//! Rendering rules (also in `docs/mis.md`):
//! - Per leg and direction, packets pass a reorder buffer of
//!   [`REORDER_WINDOW`] packets keyed by extended sequence number; exact
//!   duplicates inside it are dropped. Packets older than the window are
//!   still kept (counted as late): placement is by RTP timestamp anyway.
//! - A leg's audio is what its party sent ([`Direction::FromParty`]); the
//!   relay's outgoing copies ([`Direction::ToPeer`]) are used only for a leg
//!   that has no `FromParty` packets.
//! - Each SSRC run of a leg (a new SSRC starts a new run) is rendered with
//!   [`nqs::render::render_g711`] (placement by timestamp, gaps zero-filled,
//!   no concealment). A run starts at its first packet's capture time
//!   relative to the session's first audio packet, or right after the
//!   previous run if that is later, so legs line up in the stereo file.
//! - Comfort noise is not rendered (its interval is a zero-filled gap).
//!   RFC 4733 events become [`DtmfEvent`]s, not audio.

use std::collections::{BTreeMap, HashMap, VecDeque};

use thiserror::Error;
use wire::rtp::RtpPacket;
use wire::{PayloadType, Ssrc, Timestamp};

use crate::proto::{
    Codec, Control, Direction, LegId, MediaPacket, MediaRepr, ProtoError, Role, SessionId,
    SessionStart, UpdateKind,
};

/// Reorder buffer depth per leg and direction, in packets (640 ms of 20 ms
/// packets).
pub const REORDER_WINDOW: usize = 32;
/// Output sample rate (G.711), Hz.
pub const SAMPLE_RATE: u32 = 8000;

/// Recorder settings.
#[derive(Clone, Copy, Debug)]
pub struct RecorderConfig {
    /// A session with no input for this long (ns) is finished from what
    /// arrived (a sender that died, a lost stop).
    pub idle_timeout_ns: u64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            idle_timeout_ns: 60_000_000_000,
        }
    }
}

/// Why an input was not used. The driver counts these per variant (see
/// [`Stats`]) and logs each cause once.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecorderError {
    /// Bytes that are not a valid ingest datagram or frame.
    #[error("malformed: {0}")]
    Malformed(#[from] ProtoError),
    /// The media header is fine but the RTP packet inside is not.
    #[error("malformed RTP in media copy")]
    MalformedRtp,
    /// A session id never started (or already finished and forgotten).
    #[error("unknown session {0:?}")]
    UnknownSession(SessionId),
    /// A packet or update for a session that already stopped.
    #[error("session {0:?} already stopped")]
    AfterStop(SessionId),
    /// A start for a session that is running.
    #[error("session {0:?} already started")]
    DuplicateStart(SessionId),
    /// A leg index the session start did not declare.
    #[error("session {0:?} has no leg {1:?}")]
    UnknownLeg(SessionId, LegId),
}

/// Counters of everything the recorder saw and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Media datagrams accepted.
    pub media: u64,
    /// Malformed datagrams or frames.
    pub malformed: u64,
    /// Datagrams for unknown sessions.
    pub unknown_session: u64,
    /// Datagrams after stop.
    pub after_stop: u64,
    /// Metadata messages rejected (unknown or stopped session, duplicate
    /// start, undeclared leg).
    pub rejected_control: u64,
    /// Datagrams for undeclared legs.
    pub unknown_leg: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Packets that arrived after the reorder window had passed them (kept).
    pub late: u64,
    /// Packets of payload types that are neither G.711, comfort noise nor
    /// telephone-event (not rendered).
    pub unsupported_payload: u64,
    /// Sessions started.
    pub started: u64,
    /// Sessions finished by stop.
    pub stopped: u64,
    /// Sessions finished by idle timeout.
    pub timed_out: u64,
}

/// One RFC 4733 event seen on a leg.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DtmfEvent {
    /// Leg index.
    pub leg: u8,
    /// `0-9`, `*`, `#`, `A-D`; other events as `?`.
    pub digit: char,
    /// Event start relative to the recording's first sample, ms.
    pub at_ms: u64,
    /// Duration from the event's end packet (0 if no end arrived), ms.
    pub duration_ms: u64,
}

/// A hold or resume seen in an update.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HoldEvent {
    /// Leg index.
    pub leg: u8,
    /// On hold (`true`) or resumed.
    pub on: bool,
    /// When, ns since the Unix epoch.
    pub time_ns: u64,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum FinishReason {
    /// A stop message.
    Stopped,
    /// No input for [`RecorderConfig::idle_timeout_ns`].
    IdleTimeout,
}

/// A finished session.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The session's start message (updated codecs included).
    pub start: SessionStart,
    /// When it ended (stop time, or `now` at the timeout).
    pub end_time: Timestamp,
    /// Why it ended.
    pub reason: FinishReason,
    /// Audio per leg (8 kHz, s16), aligned: sample 0 of every leg is the
    /// same instant.
    pub legs: Vec<Vec<i16>>,
    /// DTMF events, in arrival order.
    pub dtmf: Vec<DtmfEvent>,
    /// Hold/resume updates.
    pub holds: Vec<HoldEvent>,
    /// Capture time of the first audio sample (ns), if any audio arrived.
    pub audio_origin: Option<Timestamp>,
}

impl Recording {
    /// Audio of the first leg with `role`, or silence.
    fn channel(&self, role: Role) -> Option<&[i16]> {
        self.start
            .legs
            .iter()
            .position(|l| l.role == role)
            .and_then(|i| self.legs.get(i))
            .map(Vec::as_slice)
    }

    /// Length of the longest leg, in samples.
    pub fn samples(&self) -> usize {
        self.legs.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Interleaved stereo: caller left, callee right, the shorter padded
    /// with zeros.
    pub fn stereo(&self) -> Vec<i16> {
        let n = self.samples();
        let l = self.channel(Role::Caller).unwrap_or(&[]);
        let r = self.channel(Role::Callee).unwrap_or(&[]);
        let mut out = Vec::with_capacity(2 * n);
        for i in 0..n {
            out.push(l.get(i).copied().unwrap_or(0));
            out.push(r.get(i).copied().unwrap_or(0));
        }
        out
    }

    /// Mono mix: the saturating sum of every leg.
    pub fn mono(&self) -> Vec<i16> {
        let mut out = vec![0i16; self.samples()];
        for leg in &self.legs {
            for (o, s) in out.iter_mut().zip(leg) {
                *o = o.saturating_add(*s);
            }
        }
        out
    }

    /// Duration of the audio, ms.
    pub fn duration_ms(&self) -> u64 {
        self.samples() as u64 * 1000 / u64::from(SAMPLE_RATE)
    }
}

/// The recorder state machine. See the module docs for the driving contract.
#[derive(Debug, Default)]
pub struct Recorder {
    config: RecorderConfig,
    sessions: HashMap<SessionId, Session>,
    /// Recently finished ids, to tell "after stop" from "unknown".
    finished: VecDeque<SessionId>,
    done: VecDeque<Recording>,
    stats: Stats,
}

/// How many finished session ids are remembered.
const FINISHED_MEMORY: usize = 4096;

impl Recorder {
    /// A recorder with no sessions.
    pub fn new(config: RecorderConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Handles one metadata message. `Hello`/`HelloAck`/`Reject` belong to
    /// the connection (the driver answers them) and are ignored here.
    ///
    /// # Errors
    ///
    /// [`RecorderError::DuplicateStart`], [`RecorderError::UnknownSession`],
    /// [`RecorderError::AfterStop`], [`RecorderError::UnknownLeg`]; the
    /// message is then dropped and counted.
    pub fn handle_control(&mut self, now: Timestamp, msg: &Control) -> Result<(), RecorderError> {
        let r = self.control(now, msg);
        if r.is_err() {
            self.stats.rejected_control += 1;
        }
        r
    }

    fn control(&mut self, now: Timestamp, msg: &Control) -> Result<(), RecorderError> {
        match msg {
            Control::Start(start) => {
                if self.sessions.contains_key(&start.session) {
                    return Err(RecorderError::DuplicateStart(start.session));
                }
                self.sessions
                    .insert(start.session, Session::new(now, start.clone()));
                self.stats.started += 1;
            }
            Control::Update(u) => {
                let s = self.session_mut(u.session)?;
                s.last_input = now;
                match &u.kind {
                    UpdateKind::Codecs { leg, codecs } => {
                        let l = s
                            .legs
                            .get_mut(usize::from(leg.0))
                            .ok_or(RecorderError::UnknownLeg(u.session, *leg))?;
                        l.codecs.clone_from(codecs);
                        s.start.legs[usize::from(leg.0)].codecs.clone_from(codecs);
                    }
                    UpdateKind::Hold { leg, on } => {
                        if usize::from(leg.0) >= s.legs.len() {
                            return Err(RecorderError::UnknownLeg(u.session, *leg));
                        }
                        s.holds.push(HoldEvent {
                            leg: leg.0,
                            on: *on,
                            time_ns: u.time.0,
                        });
                    }
                    // A kind added to the protocol later: skipped, as the
                    // protocol's compatibility rules say.
                    _ => {}
                }
            }
            Control::Stop { session, time } => {
                self.session_mut(*session)?;
                self.finish(*session, *time, FinishReason::Stopped);
            }
            // Handshake frames are the driver's; later message types are
            // skipped.
            _ => {}
        }
        Ok(())
    }

    /// Handles one media datagram (ingest header + RTP copy).
    ///
    /// # Errors
    ///
    /// A [`RecorderError`] naming why the datagram was dropped (it is also
    /// counted in [`Recorder::stats`]).
    pub fn handle_media(
        &mut self,
        now: Timestamp,
        datagram: &[u8],
    ) -> Result<SessionId, RecorderError> {
        let r = self.media(now, datagram);
        if let Err(e) = &r {
            let c = &mut self.stats;
            match e {
                RecorderError::Malformed(_) | RecorderError::MalformedRtp => c.malformed += 1,
                RecorderError::UnknownSession(_) => c.unknown_session += 1,
                RecorderError::AfterStop(_) => c.after_stop += 1,
                RecorderError::UnknownLeg(..) => c.unknown_leg += 1,
                RecorderError::DuplicateStart(_) => {}
            }
        }
        r
    }

    /// Finishes sessions idle for longer than the configured timeout.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let idle = self.config.idle_timeout_ns;
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.0.saturating_sub(s.last_input.0) >= idle)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish(id, now, FinishReason::IdleTimeout);
        }
    }

    /// When [`Recorder::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.sessions
            .values()
            .map(|s| Timestamp(s.last_input.0.saturating_add(self.config.idle_timeout_ns)))
            .min()
    }

    /// The next finished recording.
    pub fn poll_recording(&mut self) -> Option<Recording> {
        self.done.pop_front()
    }

    /// Whether `session` is running.
    pub fn is_active(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Number of running sessions.
    pub fn active(&self) -> usize {
        self.sessions.len()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn session_mut(&mut self, id: SessionId) -> Result<&mut Session, RecorderError> {
        if !self.sessions.contains_key(&id) {
            return Err(if self.finished.contains(&id) {
                RecorderError::AfterStop(id)
            } else {
                RecorderError::UnknownSession(id)
            });
        }
        // Checked just above.
        Ok(self.sessions.get_mut(&id).expect("present"))
    }

    fn media(&mut self, now: Timestamp, datagram: &[u8]) -> Result<SessionId, RecorderError> {
        let pkt = MediaPacket::new_checked(datagram)?;
        let repr = MediaRepr::parse(&pkt)?;
        let rtp = RtpPacket::new_checked(pkt.rtp()).map_err(|_| RecorderError::MalformedRtp)?;
        let Some(s) = self.sessions.get_mut(&repr.session) else {
            return Err(if self.finished.contains(&repr.session) {
                RecorderError::AfterStop(repr.session)
            } else {
                RecorderError::UnknownSession(repr.session)
            });
        };
        let Some(leg) = s.legs.get_mut(usize::from(repr.leg.0)) else {
            return Err(RecorderError::UnknownLeg(repr.session, repr.leg));
        };
        s.last_input = now;
        self.stats.media += 1;
        let pt = rtp.payload_type();
        match classify(&leg.codecs, pt) {
            PayloadClass::Audio => {
                let stream = &mut leg.streams[repr.direction as usize];
                stream.push(&rtp, repr.capture_time, &mut self.stats);
            }
            PayloadClass::Event => {
                if repr.direction == Direction::FromParty || !leg.has_from_party_events {
                    leg.has_from_party_events |= repr.direction == Direction::FromParty;
                    leg.on_event(repr.leg.0, &rtp, repr.capture_time);
                }
            }
            PayloadClass::ComfortNoise => {}
            PayloadClass::Other => self.stats.unsupported_payload += 1,
        }
        Ok(repr.session)
    }

    fn finish(&mut self, id: SessionId, end: Timestamp, reason: FinishReason) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        match reason {
            FinishReason::Stopped => self.stats.stopped += 1,
            FinishReason::IdleTimeout => self.stats.timed_out += 1,
        }
        if self.finished.len() == FINISHED_MEMORY {
            self.finished.pop_front();
        }
        self.finished.push_back(id);
        self.done.push_back(s.render(end, reason));
    }
}

#[derive(Debug)]
struct Session {
    start: SessionStart,
    last_input: Timestamp,
    legs: Vec<LegState>,
    holds: Vec<HoldEvent>,
}

impl Session {
    fn new(now: Timestamp, start: SessionStart) -> Self {
        let legs = start
            .legs
            .iter()
            .map(|l| LegState {
                codecs: l.codecs.clone(),
                streams: [Stream::default(), Stream::default()],
                events: Vec::new(),
                has_from_party_events: false,
            })
            .collect();
        Self {
            start,
            last_input: now,
            legs,
            holds: Vec::new(),
        }
    }

    fn render(mut self, end: Timestamp, reason: FinishReason) -> Recording {
        for leg in &mut self.legs {
            for s in &mut leg.streams {
                s.flush();
            }
        }
        let chosen: Vec<&Stream> = self
            .legs
            .iter()
            .map(|l| {
                if l.streams[0].runs.is_empty() {
                    &l.streams[1]
                } else {
                    &l.streams[0]
                }
            })
            .collect();
        let origin = chosen
            .iter()
            .filter_map(|s| s.runs.first().map(|r| r.first_capture))
            .min();
        let legs = chosen
            .iter()
            .map(|s| s.render(origin.unwrap_or_default()))
            .collect();
        let mut dtmf: Vec<DtmfEvent> = Vec::new();
        for leg in &self.legs {
            for e in &leg.events {
                dtmf.push(DtmfEvent {
                    leg: e.leg,
                    digit: e.digit,
                    at_ms: origin.map_or(0, |o| e.capture.0.saturating_sub(o.0) / 1_000_000),
                    duration_ms: u64::from(e.duration_ticks) / 8,
                });
            }
        }
        Recording {
            start: self.start,
            end_time: end,
            reason,
            legs,
            dtmf,
            holds: self.holds,
            audio_origin: origin,
        }
    }
}

#[derive(Debug)]
struct LegState {
    codecs: Vec<Codec>,
    /// Indexed by `Direction as usize`.
    streams: [Stream; 2],
    events: Vec<Event>,
    has_from_party_events: bool,
}

#[derive(Debug)]
struct Event {
    leg: u8,
    ssrc: Ssrc,
    rtp_ts: u32,
    digit: char,
    capture: Timestamp,
    /// 1/8000 s.
    duration_ticks: u16,
}

impl LegState {
    fn on_event(&mut self, leg: u8, rtp: &RtpPacket<&[u8]>, capture: Timestamp) {
        let Ok(ev) = wire::dtmf::TelephoneEvent::new_checked(rtp.payload()) else {
            return;
        };
        let (ssrc, ts) = (rtp.ssrc(), rtp.timestamp());
        //= https://www.rfc-editor.org/rfc/rfc4733#section-2.5.1.2
        //# The RTP timestamp of an event packet ... is the same for all
        //# packets of an event.
        if let Some(e) = self
            .events
            .iter_mut()
            .rev()
            .take(8)
            .find(|e| e.ssrc == ssrc && e.rtp_ts == ts)
        {
            e.duration_ticks = e.duration_ticks.max(ev.duration());
            return;
        }
        self.events.push(Event {
            leg,
            ssrc,
            rtp_ts: ts,
            digit: ev.event_char().unwrap_or('?'),
            capture,
            duration_ticks: ev.duration(),
        });
    }
}

/// One SSRC run: its G.711 packets in release order.
#[derive(Debug)]
struct Run {
    ssrc: Ssrc,
    first_capture: Timestamp,
    packets: Vec<(u32, PayloadType, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Stream {
    runs: Vec<Run>,
    /// Current SSRC and its sequence state.
    ssrc: Option<Ssrc>,
    highest: u64,
    released: Option<u64>,
    reorder: BTreeMap<u64, (Timestamp, u32, PayloadType, Vec<u8>)>,
}

impl Stream {
    fn push(&mut self, rtp: &RtpPacket<&[u8]>, capture: Timestamp, stats: &mut Stats) {
        let ssrc = rtp.ssrc();
        let seq = rtp.sequence_number();
        if self.ssrc != Some(ssrc) {
            if self.runs.iter().any(|r| r.ssrc == ssrc) && self.ssrc.is_some() {
                // A straggler of an earlier SSRC run: its slot was rendered.
                stats.late += 1;
                return;
            }
            self.flush();
            self.ssrc = Some(ssrc);
            self.highest = u64::from(seq) + (1 << 16);
            self.released = None;
        }
        let ext = extend(self.highest, seq);
        self.highest = self.highest.max(ext);
        let item = (
            capture,
            rtp.timestamp(),
            rtp.payload_type(),
            rtp.payload().to_vec(),
        );
        if self.released.is_some_and(|r| ext <= r) {
            stats.late += 1;
            self.release(ext, item);
            return;
        }
        if self.reorder.insert(ext, item).is_some() {
            stats.duplicates += 1;
        }
        while self.reorder.len() > REORDER_WINDOW {
            if let Some((k, v)) = self.reorder.pop_first() {
                self.release(k, v);
            }
        }
    }

    fn release(
        &mut self,
        ext: u64,
        (capture, ts, pt, payload): (Timestamp, u32, PayloadType, Vec<u8>),
    ) {
        self.released = Some(self.released.map_or(ext, |r| r.max(ext)));
        let ssrc = self.ssrc.unwrap_or_default();
        match self.runs.last_mut() {
            Some(run) if run.ssrc == ssrc => run.packets.push((ts, pt, payload)),
            _ => self.runs.push(Run {
                ssrc,
                first_capture: capture,
                packets: vec![(ts, pt, payload)],
            }),
        }
    }

    fn flush(&mut self) {
        while let Some((k, v)) = self.reorder.pop_first() {
            self.release(k, v);
        }
    }

    fn render(&self, origin: Timestamp) -> Vec<i16> {
        let mut out: Vec<i16> = Vec::new();
        for run in &self.runs {
            let offset = run.first_capture.0.saturating_sub(origin.0) as u128
                * u128::from(SAMPLE_RATE)
                / 1_000_000_000;
            let at = usize::try_from(offset).unwrap_or(usize::MAX).max(out.len());
            // Bound a bogus capture time the same way render_g711 bounds a
            // timestamp jump.
            let at = at.min(out.len() + nqs::render::MAX_GAP_TICKS as usize);
            let pcm = nqs::render::render_g711(&run.packets);
            out.resize(at, 0);
            out.extend_from_slice(&pcm);
        }
        out
    }
}

/// Widens a 16-bit sequence number to the value nearest `highest`.
fn extend(highest: u64, seq: u16) -> u64 {
    let base = highest & !0xFFFF;
    let cand = base | u64::from(seq);
    let alt_lo = cand.wrapping_sub(1 << 16);
    let alt_hi = cand + (1 << 16);
    [cand, alt_lo, alt_hi]
        .into_iter()
        .filter(|&c| c >= 1 << 16)
        .min_by_key(|&c| c.abs_diff(highest))
        .unwrap_or(cand)
}

enum PayloadClass {
    Audio,
    Event,
    ComfortNoise,
    Other,
}

fn classify(codecs: &[Codec], pt: PayloadType) -> PayloadClass {
    if let Some(c) = codecs.iter().find(|c| c.pt == pt) {
        let n = c.name.to_ascii_uppercase();
        return match n.as_str() {
            "PCMU" | "PCMA" if pt == PayloadType::PCMU || pt == PayloadType::PCMA => {
                PayloadClass::Audio
            }
            "TELEPHONE-EVENT" => PayloadClass::Event,
            "CN" => PayloadClass::ComfortNoise,
            _ => PayloadClass::Other,
        };
    }
    if pt == PayloadType::PCMU || pt == PayloadType::PCMA {
        PayloadClass::Audio
    } else if pt.is_comfort_noise() {
        PayloadClass::ComfortNoise
    } else {
        PayloadClass::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Leg, Policy, SessionUpdate};
    use rand::{Rng, SeedableRng, rngs::SmallRng};
    use wire::rtp::RtpRepr;

    pub(crate) fn start(id: u64) -> Control {
        let codecs = vec![
            Codec {
                pt: PayloadType::PCMU,
                name: "PCMU".into(),
                clock_rate: 8000,
            },
            Codec {
                pt: PayloadType(101),
                name: "telephone-event".into(),
                clock_rate: 8000,
            },
        ];
        Control::Start(SessionStart {
            session: SessionId(id),
            call_id: format!("call-{id}"),
            domain: "example.com".into(),
            from: "1001".into(),
            to: "2002".into(),
            start_time: Timestamp(1_000_000_000),
            policy: Policy::BOTH,
            legs: vec![
                Leg {
                    role: Role::Caller,
                    codecs: codecs.clone(),
                },
                Leg {
                    role: Role::Callee,
                    codecs,
                },
            ],
        })
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "test packet builder, one argument per header field"
    )]
    pub(crate) fn media(
        id: u64,
        leg: u8,
        ssrc: u32,
        seq: u16,
        ts: u32,
        pt: u8,
        payload: &[u8],
        capture_ns: u64,
    ) -> Vec<u8> {
        let repr = RtpRepr {
            payload_type: PayloadType(pt),
            sequence_number: seq,
            timestamp: ts,
            ssrc: Ssrc(ssrc),
            payload_len: payload.len(),
            ..RtpRepr::default()
        };
        let mut rtp = vec![0u8; repr.header_len() + payload.len()];
        let mut p = RtpPacket::new_unchecked(&mut rtp[..]);
        repr.emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(payload);
        let mut out = Vec::new();
        MediaRepr {
            session: SessionId(id),
            leg: LegId(leg),
            direction: Direction::FromParty,
            capture_time: Timestamp(capture_ns),
        }
        .emit(&rtp, &mut out);
        out
    }

    const T0: u64 = 2_000_000_000;

    #[test]
    fn two_legs_stereo_and_mono() {
        let mut r = Recorder::new(RecorderConfig::default());
        r.handle_control(Timestamp(T0), &start(1)).unwrap();
        // Caller: 0xFF (µ-law zero) is 0; use 0x00 (-32124) and 0x80 (32124).
        for i in 0..3u16 {
            let at = T0 + u64::from(i) * 20_000_000;
            r.handle_media(
                Timestamp(at),
                &media(1, 0, 11, i, u32::from(i) * 160, 0, &[0x80; 160], at),
            )
            .unwrap();
        }
        // Callee starts 20 ms later.
        for i in 0..2u16 {
            let at = T0 + 20_000_000 + u64::from(i) * 20_000_000;
            r.handle_media(
                Timestamp(at),
                &media(
                    1,
                    1,
                    22,
                    100 + i,
                    5000 + u32::from(i) * 160,
                    0,
                    &[0x00; 160],
                    at,
                ),
            )
            .unwrap();
        }
        assert!(r.poll_recording().is_none());
        r.handle_control(
            Timestamp(T0 + 1),
            &Control::Stop {
                session: SessionId(1),
                time: Timestamp(T0 + 1),
            },
        )
        .unwrap();
        let rec = r.poll_recording().unwrap();
        assert_eq!(rec.legs[0].len(), 480);
        assert_eq!(rec.legs[1].len(), 480);
        assert!(rec.legs[1][..160].iter().all(|&s| s == 0));
        let st = rec.stereo();
        assert_eq!(st.len(), 960);
        assert_eq!((st[0], st[1]), (32124, 0));
        assert_eq!((st[2 * 200], st[2 * 200 + 1]), (32124, -32124));
        let mono = rec.mono();
        assert_eq!(mono[0], 32124);
        assert_eq!(mono[200], 0);
        assert_eq!(rec.duration_ms(), 60);
        assert!(!r.is_active(SessionId(1)));
        // After stop: counted, not a crash.
        assert_eq!(
            r.handle_media(Timestamp(T0), &media(1, 0, 11, 9, 0, 0, &[0; 160], T0)),
            Err(RecorderError::AfterStop(SessionId(1)))
        );
        assert_eq!(r.stats().after_stop, 1);
    }

    #[test]
    fn bad_input_is_counted() {
        let mut r = Recorder::new(RecorderConfig::default());
        assert!(matches!(
            r.handle_media(Timestamp(0), b"garbage"),
            Err(RecorderError::Malformed(_))
        ));
        assert_eq!(
            r.handle_media(Timestamp(0), &media(9, 0, 1, 1, 1, 0, &[0; 10], 0)),
            Err(RecorderError::UnknownSession(SessionId(9)))
        );
        r.handle_control(Timestamp(0), &start(9)).unwrap();
        assert_eq!(
            r.handle_control(Timestamp(0), &start(9)),
            Err(RecorderError::DuplicateStart(SessionId(9)))
        );
        assert_eq!(
            r.handle_media(Timestamp(0), &media(9, 5, 1, 1, 1, 0, &[0; 10], 0)),
            Err(RecorderError::UnknownLeg(SessionId(9), LegId(5)))
        );
        let mut d = media(9, 0, 1, 1, 1, 0, &[0; 10], 0);
        d.truncate(26);
        assert_eq!(
            r.handle_media(Timestamp(0), &d),
            Err(RecorderError::MalformedRtp)
        );
        let s = r.stats();
        assert_eq!(
            (
                s.malformed,
                s.unknown_session,
                s.unknown_leg,
                s.media,
                s.rejected_control
            ),
            (2, 1, 1, 0, 1)
        );
    }

    #[test]
    fn dtmf_hold_codec_change_and_idle_timeout() {
        let mut r = Recorder::new(RecorderConfig {
            idle_timeout_ns: 5_000_000_000,
        });
        r.handle_control(Timestamp(T0), &start(3)).unwrap();
        r.handle_media(Timestamp(T0), &media(3, 0, 5, 1, 0, 0, &[0x80; 160], T0))
            .unwrap();
        // Digit 5: three packets with the same timestamp, the last with E set.
        for (i, (end, dur)) in [(false, 160u16), (false, 320), (true, 800)]
            .into_iter()
            .enumerate()
        {
            let mut ev = [5u8, 10, 0, 0];
            if end {
                ev[1] |= 0x80;
            }
            ev[2..].copy_from_slice(&dur.to_be_bytes());
            let at = T0 + 100_000_000 + i as u64 * 20_000_000;
            r.handle_media(
                Timestamp(at),
                &media(3, 0, 5, 2 + i as u16, 800, 101, &ev, at),
            )
            .unwrap();
        }
        r.handle_control(
            Timestamp(T0),
            &Control::Update(SessionUpdate {
                session: SessionId(3),
                time: Timestamp(T0 + 5),
                kind: UpdateKind::Hold {
                    leg: LegId(1),
                    on: true,
                },
            }),
        )
        .unwrap();
        // Codec change to PCMA on leg 0 only.
        r.handle_control(
            Timestamp(T0),
            &Control::Update(SessionUpdate {
                session: SessionId(3),
                time: Timestamp(T0 + 6),
                kind: UpdateKind::Codecs {
                    leg: LegId(0),
                    codecs: vec![Codec {
                        pt: PayloadType::PCMA,
                        name: "PCMA".into(),
                        clock_rate: 8000,
                    }],
                },
            }),
        )
        .unwrap();
        r.handle_media(
            Timestamp(T0),
            &media(3, 0, 5, 5, 960, 8, &[0xD5; 160], T0 + 120_000_000),
        )
        .unwrap();
        // PCMU is no longer negotiated on leg 0 but is still G.711: rendered.
        assert_eq!(r.poll_timeout(), Some(Timestamp(T0 + 5_000_000_000)));
        r.handle_timeout(Timestamp(T0 + 4_999_999_999));
        assert!(r.poll_recording().is_none());
        r.handle_timeout(Timestamp(T0 + 5_000_000_000));
        let rec = r.poll_recording().unwrap();
        assert_eq!(rec.reason, FinishReason::IdleTimeout);
        assert_eq!(
            rec.dtmf,
            vec![DtmfEvent {
                leg: 0,
                digit: '5',
                at_ms: 100,
                duration_ms: 100
            }]
        );
        assert_eq!(rec.holds.len(), 1);
        assert_eq!(rec.start.legs[0].codecs[0].name, "PCMA");
        assert_eq!(rec.legs[0].len(), 1120);
        assert_eq!(rec.legs[0][960], 8);
        assert_eq!(r.stats().timed_out, 1);
    }

    #[test]
    fn ssrc_change_starts_a_new_run_at_its_capture_time() {
        let mut r = Recorder::new(RecorderConfig::default());
        r.handle_control(Timestamp(T0), &start(4)).unwrap();
        r.handle_media(
            Timestamp(T0),
            &media(4, 0, 1, 500, 77_000, 0, &[0x80; 160], T0),
        )
        .unwrap();
        // New SSRC, unrelated seq/ts, 1 s later by capture time.
        r.handle_media(
            Timestamp(T0),
            &media(4, 0, 2, 9, 3, 0, &[0x00; 160], T0 + 1_000_000_000),
        )
        .unwrap();
        // A straggler of the first SSRC is dropped as late.
        r.handle_media(
            Timestamp(T0),
            &media(4, 0, 1, 501, 77_160, 0, &[0x80; 160], T0),
        )
        .unwrap();
        r.handle_control(
            Timestamp(T0),
            &Control::Stop {
                session: SessionId(4),
                time: Timestamp(T0),
            },
        )
        .unwrap();
        let rec = r.poll_recording().unwrap();
        assert_eq!(rec.legs[0].len(), 8000 + 160);
        assert_eq!(rec.legs[0][8000], -32124);
        assert_eq!(rec.legs[0][500], 0);
        assert_eq!(r.stats().late, 1);
    }

    /// Deterministic simulation: a seeded lossy, reordering, duplicating
    /// link between a sender and the recorder, in virtual time. Every packet
    /// that arrives must land at its timestamp; every lost one is zeros.
    #[test]
    fn seeded_lossy_link_renders_what_arrived_at_its_place() {
        for seed in 0..20u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut r = Recorder::new(RecorderConfig::default());
            r.handle_control(Timestamp(T0), &start(seed)).unwrap();
            let n = 300u16;
            let base_seq = rng.r#gen::<u16>();
            let base_ts = rng.r#gen::<u32>();
            // Gilbert-Elliott loss; jitter up to 100 ms; 2 % duplicates.
            let mut bad = false;
            let mut arrivals = Vec::new();
            let mut lost = vec![false; usize::from(n)];
            for i in 0..n {
                bad = if bad {
                    rng.gen_bool(0.7)
                } else {
                    rng.gen_bool(0.03)
                };
                if bad && i > 0 {
                    lost[usize::from(i)] = true;
                    continue;
                }
                let sent = T0 + u64::from(i) * 20_000_000;
                let at = sent + rng.gen_range(0..100_000_000);
                let payload = [(i % 250) as u8 ^ 0x55; 160];
                let d = media(
                    seed,
                    0,
                    7,
                    base_seq.wrapping_add(i),
                    base_ts.wrapping_add(u32::from(i) * 160),
                    0,
                    &payload,
                    sent,
                );
                if rng.gen_bool(0.02) {
                    arrivals.push((at + 1, d.clone()));
                }
                arrivals.push((at, d));
            }
            arrivals.sort_by_key(|(at, _)| *at);
            for (at, d) in &arrivals {
                r.handle_media(Timestamp(*at), d).unwrap();
            }
            let end = arrivals.last().unwrap().0;
            r.handle_control(
                Timestamp(end),
                &Control::Stop {
                    session: SessionId(seed),
                    time: Timestamp(end),
                },
            )
            .unwrap();
            let rec = r.poll_recording().unwrap();
            let last = (0..n).rev().find(|&i| !lost[usize::from(i)]).unwrap();
            let pcm = &rec.legs[0];
            assert_eq!(pcm.len(), (usize::from(last) + 1) * 160, "seed {seed}");
            for i in 0..=last {
                let chunk = &pcm[usize::from(i) * 160..][..160];
                let mut want = [0i16; 160];
                if !lost[usize::from(i)] {
                    wire::g711::decode_ulaw(&[(i % 250) as u8 ^ 0x55; 160], &mut want);
                }
                assert_eq!(chunk, &want[..], "seed {seed} packet {i}");
            }
        }
    }
}
