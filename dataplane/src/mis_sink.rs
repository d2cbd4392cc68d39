//! The MIS sink: recorded sessions go to a `voxplane mis` recorder in its
//! ingest protocol ([`wire::mis`], `docs/mis.md`).
//!
//! - Metadata over TCP (port 1040): a session Start when recording is
//!   switched on (ng `start recording`, [`crate::relay::Control::set_recording`]),
//!   with the call id, both legs and their codecs from the SDP seen so far;
//!   an Update when a re-INVITE changes a leg's codecs or hold state; a
//!   Stop when recording is switched off, the session is deleted or it
//!   times out.
//! - Media over UDP (port 5400): each RTP packet a recorded session
//!   forwards, behind the 24-octet header (session id, leg, direction 0 —
//!   as received from the leg's party —, capture time).
//!
//! [`MisCalls`] is the sans-IO part (what to say, given what the relay
//! did). [`MisLink`] is the driver of the metadata connection: a thread per
//! worker that connects, negotiates the version and writes frames; the
//! worker hands it frames through a bounded queue and never waits — a full
//! queue drops the frame and counts it. After a reconnect the link
//! replays the Start (and Updates) of every session still recorded, and
//! the Stops that came while it was down, so a recorder restart or a
//! dropped connection loses only the media sent while it was down. Media copies leave from the worker with non-blocking
//! `sendmmsg`, batched per receive batch; a refused send is counted.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use wire::Timestamp;
use wire::mis::{
    Codec, Control, Direction, FrameView, Leg, LegId as MisLeg, MediaRepr, Policy, ProtoVersion,
    Role, SessionId, SessionStart, SessionUpdate, UpdateKind, VERSIONS,
};
use wire::sdp::{self, SessionDescription};

use crate::relay::LegId;

/// Where the recorder listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MisConfig {
    /// Metadata (TCP), port 1040 by default.
    pub control: SocketAddr,
    /// Media (UDP), port 5400 by default.
    pub media: SocketAddr,
}

impl MisConfig {
    /// The recorder's default ports on `ip`.
    pub fn on(ip: std::net::IpAddr) -> Self {
        Self {
            control: SocketAddr::new(ip, 1040),
            media: SocketAddr::new(ip, 5400),
        }
    }
}

/// One metadata frame for the link, tagged with what it does to the
/// session's replay state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The session it belongs to.
    pub session: SessionId,
    /// Start, Update or Stop.
    pub kind: MetaKind,
    /// The encoded frame.
    pub frame: Vec<u8>,
}

/// What a [`Meta`] frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    /// Session start: replayed after a reconnect.
    Start,
    /// Session update: replayed after a reconnect, after the Start.
    Update,
    /// Session stop: the session is forgotten.
    Stop,
}

/// What the sink knows of one relay session (recorded or not).
#[derive(Debug, Default)]
struct Call {
    /// The tag of the caller leg (the first offerer) and of the callee.
    tags: [Option<Box<str>>; 2],
    codecs: [Vec<Codec>; 2],
    hold: [bool; 2],
    /// The MIS session while recording.
    session: Option<SessionId>,
}

/// The sans-IO part of the sink: per-call state of one relay worker, and
/// the frames and datagrams to send.
#[derive(Debug)]
pub struct MisCalls {
    calls: HashMap<Box<str>, Call, rustc_hash::FxBuildHasher>,
    next_session: u64,
    session_stride: u64,
}

impl MisCalls {
    /// No calls; session ids are `first`, `first + stride`, … (give each
    /// worker a distinct `first` below `stride`, plus a random high part,
    /// so ids stay unique per recorder).
    pub fn new(first: u64, stride: u64) -> Self {
        Self {
            calls: HashMap::default(),
            next_session: first,
            session_stride: stride.max(1),
        }
    }

    /// Calls known (recorded or not).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is known.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// An offer the relay accepted: its SDP describes the leg of
    /// `from_tag` (the caller's on a new call).
    pub fn offer(&mut self, now: Timestamp, call_id: &str, from_tag: &str, sdp: &str) -> Vec<Meta> {
        let call = self.calls.entry(call_id.into()).or_default();
        let leg = match &call.tags {
            [Some(t), _] if &**t == from_tag => LegId::Caller,
            [_, Some(t)] if &**t == from_tag => LegId::Callee,
            [None, _] => {
                call.tags[0] = Some(from_tag.into());
                LegId::Caller
            }
            _ => LegId::Callee,
        };
        Self::sdp(call, now, leg, sdp)
    }

    /// An answer the relay accepted: its SDP describes the leg of `to_tag`
    /// (the callee's, unless the callee sent the re-INVITE).
    pub fn answer(&mut self, now: Timestamp, call_id: &str, to_tag: &str, sdp: &str) -> Vec<Meta> {
        let call = self.calls.entry(call_id.into()).or_default();
        let leg = match &call.tags[0] {
            Some(t) if &**t == to_tag => LegId::Caller,
            _ => {
                call.tags[1] = Some(to_tag.into());
                LegId::Callee
            }
        };
        Self::sdp(call, now, leg, sdp)
    }

    fn sdp(call: &mut Call, now: Timestamp, leg: LegId, text: &str) -> Vec<Meta> {
        let Some((codecs, hold)) = parse_sdp(text) else {
            return Vec::new();
        };
        let i = leg as usize;
        let mut out = Vec::new();
        if let Some(session) = call.session {
            let update = |kind| {
                let msg = Control::Update(SessionUpdate {
                    session,
                    time: now,
                    kind,
                });
                frame(session, MetaKind::Update, &msg)
            };
            let id = MisLeg(i as u8);
            if codecs != call.codecs[i] {
                out.extend(update(UpdateKind::Codecs {
                    leg: id,
                    codecs: codecs.clone(),
                }));
            }
            if hold != call.hold[i] {
                out.extend(update(UpdateKind::Hold { leg: id, on: hold }));
            }
        }
        call.codecs[i] = codecs;
        call.hold[i] = hold;
        out
    }

    /// Recording switched on or off for `call_id`: a Start or a Stop
    /// (nothing if it already was so).
    pub fn recording(&mut self, now: Timestamp, call_id: &str, on: bool) -> Option<Meta> {
        let call = if on {
            self.calls.entry(call_id.into()).or_default()
        } else {
            self.calls.get_mut(call_id)?
        };
        match (on, call.session) {
            (true, None) => {
                let session = SessionId(self.next_session);
                self.next_session = self.next_session.wrapping_add(self.session_stride);
                call.session = Some(session);
                let legs = [Role::Caller, Role::Callee]
                    .into_iter()
                    .zip(&call.codecs)
                    .map(|(role, codecs)| Leg {
                        role,
                        codecs: codecs.clone(),
                    })
                    .collect();
                let start = Control::Start(SessionStart {
                    session,
                    call_id: call_id.to_owned(),
                    domain: String::new(),
                    from: String::new(),
                    to: String::new(),
                    start_time: now,
                    policy: Policy::BOTH,
                    legs,
                });
                frame(session, MetaKind::Start, &start)
            }
            (false, Some(session)) => {
                call.session = None;
                frame(
                    session,
                    MetaKind::Stop,
                    &Control::Stop { session, time: now },
                )
            }
            _ => None,
        }
    }

    /// The relay deleted `call_id` (BYE or media timeout): a Stop if it was
    /// recorded; the call is forgotten.
    pub fn ended(&mut self, now: Timestamp, call_id: &str) -> Option<Meta> {
        let session = self.calls.remove(call_id)?.session?;
        frame(
            session,
            MetaKind::Stop,
            &Control::Stop { session, time: now },
        )
    }

    /// Stops for every recorded call (the worker is shutting down).
    pub fn stop_all(&mut self, now: Timestamp) -> Vec<Meta> {
        self.calls
            .drain()
            .filter_map(|(_, c)| c.session)
            .filter_map(|session| {
                frame(
                    session,
                    MetaKind::Stop,
                    &Control::Stop { session, time: now },
                )
            })
            .collect()
    }

    /// Appends the media datagram for an RTP packet of `call_id` received
    /// on `leg` at `now` to `out`; `false` (nothing appended) if the call is
    /// not recorded.
    pub fn media(
        &self,
        now: Timestamp,
        call_id: &str,
        leg: LegId,
        rtp: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(session) = self.calls.get(call_id).and_then(|c| c.session) else {
            return false;
        };
        MediaRepr {
            session,
            leg: MisLeg(leg as u8),
            direction: Direction::FromParty,
            capture_time: now,
        }
        .emit(rtp, out);
        true
    }
}

fn frame(session: SessionId, kind: MetaKind, msg: &Control) -> Option<Meta> {
    let mut out = Vec::new();
    // Only over-long strings (a Call-ID beyond 64 KiB, which the relay
    // does not accept) fail to encode.
    msg.emit(&mut out).ok()?;
    Some(Meta {
        session,
        kind,
        frame: out,
    })
}

/// The codecs of the SDP's first audio section (from `a=rtpmap`, else the
/// static table) and whether that section puts its party on hold.
fn parse_sdp(text: &str) -> Option<(Vec<Codec>, bool)> {
    let sdp = SessionDescription::parse(text).ok()?;
    let m = sdp
        .media_sections()
        .find(|m| m.port() != 0 && m.kind() == "audio")?;
    let codecs = m
        .payload_types()
        .filter_map(|pt| {
            let c = m.codec(pt)?;
            Some(Codec {
                pt,
                name: c.name.to_owned(),
                clock_rate: c.clock_rate.0,
            })
        })
        .take(usize::from(u8::MAX))
        .collect();
    let hold = !matches!(m.direction(), sdp::Direction::SendRecv);
    Some((codecs, hold))
}

/// Counters of one metadata link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// 1 while the connection is up and negotiated.
    pub connected: AtomicU64,
    /// Successful connections (handshake done).
    pub connects: AtomicU64,
    /// Frames written.
    pub frames: AtomicU64,
    /// Connection attempts or writes that failed.
    pub errors: AtomicU64,
}

/// The worker's end of a metadata link (a thread owning the TCP
/// connection). Dropping it lets the thread write what is queued and end.
#[derive(Debug)]
pub struct MisLink {
    tx: SyncSender<Meta>,
    stats: Arc<LinkStats>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Frames a worker may queue for its link before it drops and counts.
pub const LINK_QUEUE: usize = 4096;

/// How long the link waits for a connection, a handshake or a write.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

impl MisLink {
    /// Starts the link thread for a recorder at `config.control`.
    ///
    /// # Errors
    ///
    /// The thread cannot be spawned.
    pub fn start(config: MisConfig) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(LINK_QUEUE);
        let stats = Arc::new(LinkStats::default());
        let s = stats.clone();
        let thread = thread::Builder::new()
            .name("mis-link".into())
            .spawn(move || link_main(config.control, &rx, &s))?;
        Ok(Self {
            tx,
            stats,
            thread: Some(thread),
        })
    }

    /// Queues a frame; `false` if the queue is full (the frame is dropped).
    /// Never waits.
    pub fn send(&self, meta: Meta) -> bool {
        match self.tx.try_send(meta) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// The link's counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Drops the queue's sender and waits (bounded by the link's I/O
    /// timeouts) for the thread to write what is queued.
    pub fn close(mut self) {
        let (dead, _) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.tx, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Replay state of the sessions the link knows: Start then Updates.
type Live = BTreeMap<u64, Vec<Vec<u8>>>;

#[expect(clippy::disallowed_methods, reason = "a driver owns the clock")]
#[expect(clippy::disallowed_types, reason = "a driver owns its socket")]
fn link_main(addr: SocketAddr, rx: &Receiver<Meta>, stats: &LinkStats) {
    let mut live = Live::new();
    // Stops of sessions the recorder may know, queued while disconnected.
    let mut stops: Vec<Vec<u8>> = Vec::new();
    let mut conn: Option<std::net::TcpStream> = None;
    let mut retry_at = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut closing = false;
    loop {
        let mut batch = Vec::new();
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => batch.push(m),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closing = true,
        }
        batch.extend(rx.try_iter());
        // The recorder sends nothing after its HelloAck: a readable socket
        // means it closed. Seen before writing, the frames wait for the
        // reconnect instead of vanishing into a dead connection (a close
        // racing the write itself still loses them: nothing is acked).
        if !batch.is_empty()
            && let Some(c) = &conn
            && !alive(c)
        {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            stats.connected.store(0, Ordering::Relaxed);
            conn = None;
        }
        for m in batch {
            let send = match m.kind {
                MetaKind::Start => {
                    live.insert(m.session.0, vec![m.frame.clone()]);
                    true
                }
                MetaKind::Update => match live.get_mut(&m.session.0) {
                    Some(frames) => {
                        frames.push(m.frame.clone());
                        true
                    }
                    None => false,
                },
                // A Stop for a session the recorder never heard of (its
                // Start was dropped) is still harmless to send.
                MetaKind::Stop => {
                    let known = live.remove(&m.session.0).is_some();
                    // Down now: the recorder may hold the session from
                    // before; it gets the Stop after the reconnect.
                    if known && conn.is_none() && stops.len() < LINK_QUEUE {
                        stops.push(m.frame.clone());
                    }
                    known
                }
            };
            if send && let Some(c) = &mut conn {
                if c.write_all(&m.frame).is_ok() {
                    stats.frames.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.connected.store(0, Ordering::Relaxed);
                    conn = None;
                    if m.kind == MetaKind::Stop && stops.len() < LINK_QUEUE {
                        stops.push(m.frame);
                    }
                }
            }
        }
        if closing {
            return;
        }
        if conn.is_none() && Instant::now() >= retry_at {
            match connect(addr).and_then(|mut c| {
                for f in live.values().flatten().chain(&stops) {
                    c.write_all(f)?;
                    stats.frames.fetch_add(1, Ordering::Relaxed);
                }
                Ok(c)
            }) {
                Ok(c) => {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    stats.connected.store(1, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    stops.clear();
                    conn = Some(c);
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Whether the recorder's end is still open (no EOF, no error pending).
#[expect(clippy::disallowed_types, reason = "a driver owns its socket")]
fn alive(c: &std::net::TcpStream) -> bool {
    if c.set_nonblocking(true).is_err() {
        return false;
    }
    let r = c.peek(&mut [0u8; 1]);
    let restored = c.set_nonblocking(false).is_ok();
    restored
        && match r {
            Ok(n) => n > 0,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
}

/// Connects and negotiates the protocol version.
#[expect(clippy::disallowed_types, reason = "a driver owns its socket")]
fn connect(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    let mut c = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut hello = Vec::new();
    Control::Hello {
        min: VERSIONS.0,
        max: VERSIONS.1,
        agent: concat!("voxplane-dataplane/", env!("CARGO_PKG_VERSION")).into(),
    }
    .emit(&mut hello)
    .map_err(io::Error::other)?;
    c.write_all(&hello)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((f, _)) = FrameView::split(&buf).map_err(io::Error::other)? {
            return match Control::parse(&f).map_err(io::Error::other)? {
                Some(Control::HelloAck {
                    version: ProtoVersion(1),
                }) => Ok(c),
                other => Err(io::Error::other(format!(
                    "recorder refused the handshake: {other:?}"
                ))),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::PayloadType;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    const ANSWER: &str = "v=0\r\no=- 2 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
        m=audio 5000 RTP/AVP 8\r\n";
    const HOLD: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";

    fn parse(m: &Meta) -> Control {
        let (f, used) = FrameView::split(&m.frame).unwrap().unwrap();
        assert_eq!(used, m.frame.len());
        Control::parse(&f).unwrap().unwrap()
    }

    fn codec(pt: u8, name: &str) -> Codec {
        Codec {
            pt: PayloadType(pt),
            name: name.into(),
            clock_rate: 8000,
        }
    }

    #[test]
    fn start_carries_both_legs_codecs_then_updates_and_stop() {
        let mut calls = MisCalls::new(5, 8);
        assert!(calls.offer(Timestamp(1), "c1", "ft", OFFER).is_empty());
        assert!(calls.answer(Timestamp(2), "c1", "tt", ANSWER).is_empty());
        let mut out = Vec::new();
        assert!(!calls.media(Timestamp(3), "c1", LegId::Caller, b"rtp", &mut out));
        assert!(out.is_empty(), "not recorded yet");

        let start = calls.recording(Timestamp(10), "c1", true).unwrap();
        assert_eq!(start.kind, MetaKind::Start);
        let Control::Start(s) = parse(&start) else {
            panic!("not a start")
        };
        assert_eq!(s.session, SessionId(5));
        assert_eq!(s.call_id, "c1");
        assert_eq!(s.start_time, Timestamp(10));
        assert_eq!(s.legs[0].role, Role::Caller);
        assert_eq!(
            s.legs[0].codecs,
            [
                codec(0, "PCMU"),
                codec(8, "PCMA"),
                codec(101, "telephone-event")
            ]
        );
        assert_eq!(s.legs[1].codecs, [codec(8, "PCMA")]);
        assert!(
            calls.recording(Timestamp(11), "c1", true).is_none(),
            "already on"
        );

        // Media: the header, then the RTP packet unchanged.
        assert!(calls.media(Timestamp(12), "c1", LegId::Callee, b"rtp", &mut out));
        let pkt = wire::mis::MediaPacket::new_checked(&out[..]).unwrap();
        let repr = MediaRepr::parse(&pkt).unwrap();
        assert_eq!(repr.session, SessionId(5));
        assert_eq!(repr.leg, MisLeg(1));
        assert_eq!(repr.direction, Direction::FromParty);
        assert_eq!(repr.capture_time, Timestamp(12));
        assert_eq!(pkt.rtp(), b"rtp");

        // The caller re-INVITEs with sendonly: a hold update, no codec one.
        let ups = calls.offer(Timestamp(20), "c1", "ft", HOLD);
        assert_eq!(ups.len(), 1);
        assert_eq!(
            parse(&ups[0]),
            Control::Update(SessionUpdate {
                session: SessionId(5),
                time: Timestamp(20),
                kind: UpdateKind::Hold {
                    leg: MisLeg(0),
                    on: true
                },
            })
        );
        // The callee re-INVITEs with other codecs: its leg changes.
        let ups = calls.offer(Timestamp(21), "c1", "tt", OFFER);
        assert_eq!(ups.len(), 1);
        let Control::Update(u) = parse(&ups[0]) else {
            panic!()
        };
        assert!(matches!(u.kind, UpdateKind::Codecs { leg: MisLeg(1), .. }));

        let stop = calls.recording(Timestamp(30), "c1", false).unwrap();
        assert_eq!(
            parse(&stop),
            Control::Stop {
                session: SessionId(5),
                time: Timestamp(30)
            }
        );
        // On again: a new session id; deleting the call stops it.
        let again = calls.recording(Timestamp(40), "c1", true).unwrap();
        assert_eq!(again.session, SessionId(13));
        let end = calls.ended(Timestamp(50), "c1").unwrap();
        assert_eq!(end.kind, MetaKind::Stop);
        assert_eq!(end.session, SessionId(13));
        assert!(calls.is_empty());
        assert!(calls.ended(Timestamp(51), "c1").is_none());
    }

    #[test]
    fn bad_sdp_and_unknown_calls_are_harmless() {
        let mut calls = MisCalls::new(0, 1);
        assert!(calls.offer(Timestamp(1), "c", "t", "garbage").is_empty());
        assert!(calls.ended(Timestamp(1), "nope").is_none());
        assert!(calls.recording(Timestamp(1), "nope", false).is_none());
        // Recording a call with no SDP yet: legs without codecs.
        let Control::Start(s) = parse(&calls.recording(Timestamp(2), "c2", true).unwrap()) else {
            panic!()
        };
        assert!(s.legs.iter().all(|l| l.codecs.is_empty()));
        assert_eq!(calls.stop_all(Timestamp(3)).len(), 1);
        assert!(calls.is_empty());
    }

    /// A recorder stand-in on loopback: answers the handshake, then
    /// collects frames until the connection closes.
    fn serve_once(listener: &std::net::TcpListener, frames: usize) -> Vec<Control> {
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((f, used)) = FrameView::split(&buf).unwrap() {
                let msg = Control::parse(&f).unwrap().unwrap();
                buf.drain(..used);
                if matches!(msg, Control::Hello { .. }) {
                    let mut ack = Vec::new();
                    Control::HelloAck {
                        version: ProtoVersion(1),
                    }
                    .emit(&mut ack)
                    .unwrap();
                    c.write_all(&ack).unwrap();
                }
                out.push(msg);
            }
            if out.len() > frames {
                return out;
            }
            let n = c
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("{e}; got so far: {out:?}"));
            assert!(n > 0, "link closed early: {out:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[test]
    fn link_replays_starts_and_stops_after_a_reconnect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let link = MisLink::start(MisConfig {
            control: addr,
            media: addr,
        })
        .unwrap();
        let mut calls = MisCalls::new(1, 1);
        assert!(link.send(calls.recording(Timestamp(1), "a", true).unwrap()));
        assert!(link.send(calls.recording(Timestamp(1), "b", true).unwrap()));
        // First connection: Hello, both Starts; then the recorder goes away.
        let first = serve_once(&listener, 2);
        assert!(matches!(first[0], Control::Hello { .. }));
        assert!(matches!(&first[1], Control::Start(s) if s.call_id == "a"));
        assert!(matches!(&first[2], Control::Start(s) if s.call_id == "b"));
        // While it is down (the link notices on its next write), "a" stops.
        assert!(link.send(calls.ended(Timestamp(2), "a").unwrap()));
        assert!(link.send(calls.recording(Timestamp(3), "c", true).unwrap()));
        // Second connection: Hello, then the Starts of what still records
        // (b, c) and the Stop of a, in some order.
        let second = serve_once(&listener, 3);
        assert!(matches!(second[0], Control::Hello { .. }));
        let starts: Vec<&str> = second[1..]
            .iter()
            .filter_map(|m| match m {
                Control::Start(s) => Some(s.call_id.as_str()),
                _ => None,
            })
            .collect();
        assert!(starts.contains(&"b") && starts.contains(&"c"), "{second:?}");
        assert!(second[1..].contains(&Control::Stop {
            session: SessionId(1),
            time: Timestamp(2)
        }));
        // Counted once the replay is written, just after the peer read it.
        for _ in 0..200 {
            if link.stats().connects.load(Ordering::Relaxed) >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(link.stats().connects.load(Ordering::Relaxed), 2);
        link.close();
    }
}
