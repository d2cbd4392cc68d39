//! Live call lifecycle on top of the [`Analyzer`]: calls finish on BYE (after
//! a linger for the 200 OK and late RTP), on a final error response, or when
//! neither SIP nor media was seen for a configurable timeout. Sans-IO: every
//! input carries its `now` (capture time).
//!
//! # Driving contract
//! For each decoded packet: [`LiveAnalyzer::handle_timeout`] with the
//! packet's time, then [`LiveAnalyzer::handle_packet`], then drain
//! [`LiveAnalyzer::poll_event`]. When idle, sleep until
//! [`LiveAnalyzer::poll_timeout`] and call `handle_timeout` again. At the end
//! of an input (or on shutdown) call [`LiveAnalyzer::finish_all`].
//!
//! ```no_run
//! # fn packets() -> Vec<wire::capture::Packet<'static>> { vec![] }
//! use nqs::live::{LiveAnalyzer, LiveConfig, LiveEvent};
//! let mut live = LiveAnalyzer::new(LiveConfig::default());
//! for packet in packets() {
//!     live.handle_timeout(packet.ts);
//!     let _class = live.handle_packet(&packet);
//!     while let Some(event) = live.poll_event() {
//!         if let LiveEvent::CallFinished(call) = event {
//!             println!("{} finished: {:?}", call.call.call_id, call.reason);
//!         }
//!     }
//! }
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rustc_hash::FxHashMap;
use serde::Serialize;
use wire::Timestamp;
use wire::capture::Packet;

use crate::analyzer::{
    Analyzer, AnalyzerConfig, AnalyzerEvent, CallReport, PacketClass, StreamSummary,
};
use crate::stream::IntervalSample;

/// Tunables of the live lifecycle.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// The analysis core's configuration.
    pub analyzer: AnalyzerConfig,
    /// How long a call stays open after its BYE (or final error response)
    /// to take the 200 OK and late RTP, in ns.
    pub bye_linger_ns: u64,
    /// A call with neither SIP nor RTP/RTCP for this long is finished, in ns.
    /// An orphan stream (RTP of no call) this long idle is freed.
    pub media_timeout_ns: u64,
    /// How long a finished call's state is kept to recognise its late
    /// packets (counted in [`LiveCounters::late_packets`]) before it is
    /// freed ([`Analyzer::release_call`]), in ns. Packets of the call after
    /// that are analysed as new.
    pub late_window_ns: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            analyzer: AnalyzerConfig::default(),
            bye_linger_ns: 2_000_000_000,
            media_timeout_ns: 60_000_000_000,
            late_window_ns: 10_000_000_000,
        }
    }
}

/// Why a call was finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// BYE seen (and the linger passed).
    Bye,
    /// A final error response (≥ 300) to the call's first request.
    Rejected,
    /// No SIP, RTP or RTCP for [`LiveConfig::media_timeout_ns`].
    MediaTimeout,
    /// [`LiveAnalyzer::finish_all`] (end of input or shutdown).
    Shutdown,
}

/// A finished call with everything the sinks need.
#[derive(Clone, Debug)]
pub struct FinishedCall {
    /// The call as the analyser reports it.
    pub call: CallReport,
    /// Summaries of the call's reported streams.
    pub streams: Vec<StreamSummary>,
    /// Host part of the first request's Request-URI, if seen.
    pub request_uri_host: Option<String>,
    /// Why it finished.
    pub reason: FinishReason,
    /// When it was finished (capture time).
    pub finished_at: Timestamp,
}

/// One SIP message of a call, for the `sip_messages` table and the ladder.
#[derive(Clone, Debug, PartialEq)]
pub struct SipMessageRecord {
    /// The call's SIP Call-ID.
    pub call_id: String,
    /// Capture time.
    pub ts: Timestamp,
    /// Source address and port.
    pub src: String,
    /// Destination address and port.
    pub dst: String,
    /// Request method, empty for a response.
    pub method: String,
    /// Response status, 0 for a request.
    pub status: u16,
    /// The CSeq header's method and number, e.g. `1 INVITE`.
    pub cseq: String,
    /// Size of the message in bytes.
    pub size: u32,
}

/// What the live analyser reports.
#[derive(Clone, Debug)]
pub enum LiveEvent {
    /// A stream completed an interval while its call is up.
    Interval {
        /// Call-ID of the stream's call (`None` for an orphan stream).
        call_id: Option<String>,
        /// Index of the stream.
        stream: usize,
        /// The interval's figures.
        sample: IntervalSample,
    },
    /// A SIP message of a call was seen.
    SipMessage(SipMessageRecord),
    /// A call finished.
    CallFinished(Box<FinishedCall>),
    /// A finished call's state was freed after its late window: its index
    /// (from [`FinishedCall::call`]) may now name a new call, so whatever a
    /// driver keeps by index must be dropped.
    CallReleased(usize),
}

/// Counters of the lifecycle.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveCounters {
    /// Calls currently open.
    pub active_calls: u64,
    /// Calls finished so far.
    pub finished_calls: u64,
    /// Packets of calls that had already finished (not analysed further).
    pub late_packets: u64,
}

/// The live analyser. See the module docs for the driving contract.
pub struct LiveAnalyzer {
    config: LiveConfig,
    analyzer: Analyzer,
    active: FxHashMap<usize, Track>,
    /// Finished calls not yet released, and when to release them (in
    /// finishing order, so the queue is sorted).
    finished: FxHashMap<usize, ()>,
    releases: VecDeque<(u64, usize)>,
    /// Orphan streams (RTP of no call): last packet time, and lazy
    /// deadlines to free them when idle.
    orphans: FxHashMap<usize, Timestamp>,
    orphan_deadlines: BinaryHeap<Reverse<(u64, usize)>>,
    /// Lazy deadlines: an entry is re-checked against its call's real
    /// deadline when it pops.
    deadlines: BinaryHeap<Reverse<(u64, usize)>>,
    events: VecDeque<LiveEvent>,
    counters: LiveCounters,
}

struct Track {
    last_activity: Timestamp,
    ended: Option<Timestamp>,
    request_uri_host: Option<String>,
}

impl LiveAnalyzer {
    /// A new live analyser.
    pub fn new(config: LiveConfig) -> Self {
        let analyzer = Analyzer::new(config.analyzer.clone());
        Self {
            config,
            analyzer,
            active: FxHashMap::default(),
            finished: FxHashMap::default(),
            releases: VecDeque::new(),
            orphans: FxHashMap::default(),
            orphan_deadlines: BinaryHeap::new(),
            deadlines: BinaryHeap::new(),
            events: VecDeque::new(),
            counters: LiveCounters::default(),
        }
    }

    /// The analysis core (for reports and kept audio).
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Lifecycle counters.
    pub fn counters(&self) -> &LiveCounters {
        &self.counters
    }

    /// Handles one decoded packet; its capture time is `now`.
    pub fn handle_packet(&mut self, packet: &Packet<'_>) -> PacketClass {
        let class = self.analyzer.handle_packet(packet);
        self.after_packet(class, packet)
    }

    /// Handles a media packet its source attributes to `call_id` (see
    /// [`Analyzer::handle_call_media`]); its capture time is `now`.
    pub fn handle_call_media(&mut self, call_id: &str, packet: &Packet<'_>) -> PacketClass {
        let class = self.analyzer.handle_call_media(call_id, packet);
        self.after_packet(class, packet)
    }

    fn after_packet(&mut self, class: PacketClass, packet: &Packet<'_>) -> PacketClass {
        let now = packet.ts;
        let call = match class {
            PacketClass::Sip { call } | PacketClass::Rtcp { call } => call,
            PacketClass::Rtp { call, .. } => call,
            PacketClass::Other => None,
        };
        if let PacketClass::Rtp { stream, call: None } = class {
            self.on_orphan(now, stream);
        }
        if let Some(call) = call {
            if self.finished.contains_key(&call) {
                self.counters.late_packets += 1;
            } else {
                self.on_activity(now, call, packet, matches!(class, PacketClass::Sip { .. }));
                self.counters.active_calls = self.active.len() as u64;
            }
        }
        while let Some(event) = self.analyzer.poll_event() {
            let AnalyzerEvent::Interval { stream, sample } = event;
            let call_id = self.analyzer.stream_summary(stream).and_then(|s| s.call_id);
            self.events.push_back(LiveEvent::Interval {
                call_id,
                stream,
                sample,
            });
        }
        class
    }

    /// Finishes the calls whose linger or media timeout passed at `now`,
    /// frees finished calls past their late window and idle orphan streams.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(at, call)) = self.releases.front() {
            if at > now.0 {
                break;
            }
            self.releases.pop_front();
            self.finished.remove(&call);
            self.analyzer.release_call(call);
            self.events.push_back(LiveEvent::CallReleased(call));
        }
        while let Some(&Reverse((at, stream))) = self.orphan_deadlines.peek() {
            if at > now.0 {
                break;
            }
            self.orphan_deadlines.pop();
            let Some(&last) = self.orphans.get(&stream) else {
                continue;
            };
            let due = last.0.saturating_add(self.config.media_timeout_ns);
            if due <= now.0 {
                self.orphans.remove(&stream);
                self.analyzer.release_orphan_stream(stream);
            } else {
                self.orphan_deadlines.push(Reverse((due, stream)));
            }
        }
        while let Some(&Reverse((at, call))) = self.deadlines.peek() {
            if at > now.0 {
                break;
            }
            self.deadlines.pop();
            let Some(deadline) = self.deadline(call) else {
                continue; // already finished
            };
            if deadline <= now.0 {
                let reason = if self.active.get(&call).is_some_and(|t| t.ended.is_some()) {
                    self.end_reason(call)
                } else {
                    FinishReason::MediaTimeout
                };
                self.finish(call, now, reason);
            } else {
                self.deadlines.push(Reverse((deadline, call)));
            }
        }
    }

    /// The earliest time [`LiveAnalyzer::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            self.deadlines.peek().map(|Reverse((at, _))| *at),
            self.releases.front().map(|(at, _)| *at),
            self.orphan_deadlines.peek().map(|Reverse((at, _))| *at),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(Timestamp)
    }

    /// Finishes every open call (end of input, shutdown).
    pub fn finish_all(&mut self, now: Timestamp) {
        let mut calls: Vec<usize> = self.active.keys().copied().collect();
        calls.sort_unstable();
        for call in calls {
            self.finish(call, now, FinishReason::Shutdown);
        }
        self.deadlines.clear();
    }

    /// The next event, if any. Drain after every input.
    pub fn poll_event(&mut self) -> Option<LiveEvent> {
        self.events.pop_front()
    }

    fn on_orphan(&mut self, now: Timestamp, stream: usize) {
        let timeout = self.config.media_timeout_ns;
        match self.orphans.entry(stream) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if now > *e.get() {
                    e.insert(now);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(now);
                self.orphan_deadlines
                    .push(Reverse((now.0.saturating_add(timeout), stream)));
            }
        }
    }

    fn on_activity(&mut self, now: Timestamp, call: usize, packet: &Packet<'_>, sip: bool) {
        let timeout = self.config.media_timeout_ns;
        let track = self.active.entry(call).or_insert_with(|| {
            self.deadlines
                .push(Reverse((now.0.saturating_add(timeout), call)));
            Track {
                last_activity: now,
                ended: None,
                request_uri_host: None,
            }
        });
        if now > track.last_activity {
            track.last_activity = now;
        }
        if !sip {
            return;
        }
        let Ok(msg) = wire::sip::Message::parse(packet.payload) else {
            return;
        };
        if track.request_uri_host.is_none()
            && msg
                .method()
                .is_some_and(|m| matches!(m.as_str(), "INVITE" | "MESSAGE" | "OPTIONS"))
        {
            track.request_uri_host = msg.request_uri().and_then(|u| uri_host(u.as_str()));
        }
        if track.ended.is_none()
            && let Some(end) = self.analyzer.call_end(call)
        {
            track.ended = Some(end);
            self.deadlines.push(Reverse((
                end.0.saturating_add(self.config.bye_linger_ns),
                call,
            )));
        }
        let call_id = msg.header("Call-ID").or_else(|| msg.header("i"));
        self.events
            .push_back(LiveEvent::SipMessage(SipMessageRecord {
                call_id: call_id.unwrap_or_default().trim().to_string(),
                ts: now,
                src: packet.src.to_string(),
                dst: packet.dst.to_string(),
                method: msg
                    .method()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
                status: msg.status().unwrap_or(0),
                cseq: msg
                    .cseq()
                    .map(|c| format!("{} {}", c.seq, c.method.as_str()))
                    .unwrap_or_default(),
                size: u32::try_from(packet.payload.len()).unwrap_or(u32::MAX),
            }));
    }

    /// The call's real deadline, `None` when it is not open.
    fn deadline(&self, call: usize) -> Option<u64> {
        let t = self.active.get(&call)?;
        let idle = t
            .last_activity
            .0
            .saturating_add(self.config.media_timeout_ns);
        Some(match t.ended {
            Some(end) => idle.min(end.0.saturating_add(self.config.bye_linger_ns)),
            None => idle,
        })
    }

    fn end_reason(&self, call: usize) -> FinishReason {
        let rejected = self
            .analyzer
            .call_report(call)
            .and_then(|c| c.final_status)
            .is_some_and(|s| s >= 300);
        if rejected {
            FinishReason::Rejected
        } else {
            FinishReason::Bye
        }
    }

    fn finish(&mut self, call: usize, now: Timestamp, reason: FinishReason) {
        let Some(track) = self.active.remove(&call) else {
            return;
        };
        self.finished.insert(call, ());
        self.releases
            .push_back((now.0.saturating_add(self.config.late_window_ns), call));
        self.counters.active_calls = self.active.len() as u64;
        self.counters.finished_calls += 1;
        let Some(report) = self.analyzer.call_report(call) else {
            return;
        };
        let streams = report
            .streams
            .iter()
            .filter_map(|&id| self.analyzer.stream_summary(id))
            .collect();
        self.events
            .push_back(LiveEvent::CallFinished(Box::new(FinishedCall {
                call: report,
                streams,
                request_uri_host: track.request_uri_host,
                reason,
                finished_at: now,
            })));
    }
}

/// The host part of a SIP URI, or of a name-addr header value
/// (`"Bob" <sip:bob@example.com:5060>;tag=1` → `example.com`), lowercased.
pub fn uri_host(value: &str) -> Option<String> {
    let uri = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let rest = uri
        .trim()
        .strip_prefix("sips:")
        .or_else(|| uri.trim().strip_prefix("sip:"))
        .or_else(|| uri.trim().strip_prefix("tel:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?']).next().unwrap_or(hostport);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        hostport.split(':').next().unwrap_or(hostport)
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The user part of a SIP URI or name-addr header value (the number).
pub fn uri_user(value: &str) -> Option<String> {
    let uri = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let rest = uri
        .trim()
        .strip_prefix("sips:")
        .or_else(|| uri.trim().strip_prefix("sip:"))
        .or_else(|| uri.trim().strip_prefix("tel:"))?;
    let user = rest.rsplit_once('@').map(|(u, _)| u)?;
    let user = user.split([';', ':']).next().unwrap_or(user);
    (!user.is_empty()).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use wire::capture::Transport;

    const S: u64 = 1_000_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn packet<'a>(ts: u64, src: &str, dst: &str, payload: &'a [u8]) -> Packet<'a> {
        Packet {
            ts: Timestamp(ts),
            src: addr(src),
            dst: addr(dst),
            transport: Transport::Udp,
            payload,
            ip: None,
            stream_gap: false,
            truncated: false,
        }
    }

    fn sip(first_line: &str, call_id: &str, cseq: &str, sdp: Option<&str>) -> Vec<u8> {
        let body = sdp.unwrap_or("");
        let ctype = if sdp.is_some() {
            "Content-Type: application/sdp\r\n"
        } else {
            ""
        };
        format!(
            "{first_line}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{cseq_n}\r\n\
             From: <sip:1001@alpha.example>;tag=a\r\nTo: <sip:2002@beta.example>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq}\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len(),
            cseq_n = cseq.replace(' ', "")
        )
        .into_bytes()
    }

    fn sdp(ip: &str, port: u16) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
    }

    fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    /// Feeds one call: INVITE/200/ACK at t0, 20 ms RTP both ways for
    /// `media_secs`, then BYE/200 if `bye`. Returns the time of the last
    /// packet.
    fn run_call(
        live: &mut LiveAnalyzer,
        events: &mut Vec<LiveEvent>,
        t0: u64,
        id: &str,
        media_secs: u64,
        bye: bool,
    ) -> u64 {
        let caller = "192.0.2.10:5060";
        let callee = "192.0.2.20:5060";
        // Each call its own SSRCs (as real endpoints pick them at random),
        // over the same addresses.
        let ssrc = id
            .bytes()
            .fold(0x1111_u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
        let mut feed = |live: &mut LiveAnalyzer, ts: u64, src: &str, dst: &str, p: &[u8]| {
            live.handle_timeout(Timestamp(ts));
            let _ = live.handle_packet(&packet(ts, src, dst, p));
            while let Some(e) = live.poll_event() {
                events.push(e);
            }
        };
        let offer = sdp("192.0.2.10", 40000);
        let answer = sdp("192.0.2.20", 50000);
        feed(
            live,
            t0,
            caller,
            callee,
            &sip(
                "INVITE sip:2002@beta.example SIP/2.0",
                id,
                "1 INVITE",
                Some(&offer),
            ),
        );
        feed(
            live,
            t0 + S / 10,
            callee,
            caller,
            &sip("SIP/2.0 200 OK", id, "1 INVITE", Some(&answer)),
        );
        feed(
            live,
            t0 + S / 5,
            caller,
            callee,
            &sip("ACK sip:2002@beta.example SIP/2.0", id, "1 ACK", None),
        );
        let n = media_secs * 50;
        let mut t = t0 + S / 5;
        for i in 0..n {
            t = t0 + S / 5 + i * 20_000_000;
            let seq = i as u16;
            feed(
                live,
                t,
                "192.0.2.10:40000",
                "192.0.2.20:50000",
                &rtp(seq, seq as u32 * 160, ssrc),
            );
            feed(
                live,
                t + 1_000_000,
                "192.0.2.20:50000",
                "192.0.2.10:40000",
                &rtp(seq, seq as u32 * 160, !ssrc),
            );
        }
        if bye {
            t += S / 10;
            feed(
                live,
                t,
                caller,
                callee,
                &sip("BYE sip:2002@beta.example SIP/2.0", id, "2 BYE", None),
            );
            t += S / 20;
            feed(
                live,
                t,
                callee,
                caller,
                &sip("SIP/2.0 200 OK", id, "2 BYE", None),
            );
        }
        t
    }

    fn finished(events: &[LiveEvent]) -> Vec<&FinishedCall> {
        events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::CallFinished(c) => Some(&**c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn bye_finishes_the_call_after_the_linger_with_both_streams() {
        let mut live = LiveAnalyzer::new(LiveConfig::default());
        let mut events = Vec::new();
        let end = run_call(&mut live, &mut events, 100 * S, "call-1", 25, true);
        assert!(finished(&events).is_empty(), "not before the linger");
        // A late RTP packet inside the linger still counts.
        live.handle_timeout(Timestamp(end + S));
        assert!(live.poll_event().is_none());
        assert_eq!(live.poll_timeout(), Some(Timestamp(end - S / 20 + 2 * S)));
        live.handle_timeout(Timestamp(end + 3 * S));
        while let Some(e) = live.poll_event() {
            events.push(e);
        }
        let done = finished(&events);
        assert_eq!(done.len(), 1);
        let call = done[0];
        assert_eq!(call.reason, FinishReason::Bye);
        assert_eq!(call.call.call_id, "call-1");
        assert_eq!(call.streams.len(), 2);
        assert!(
            call.streams
                .iter()
                .all(|s| s.packets == 25 * 50 && s.lost == 0)
        );
        assert_eq!(call.request_uri_host.as_deref(), Some("beta.example"));
        // Two 10 s interval rows per stream while the call was up.
        let intervals = events
            .iter()
            .filter(|e| matches!(e, LiveEvent::Interval { call_id: Some(c), .. } if c == "call-1"))
            .count();
        assert_eq!(intervals, 4);
        let sip = events
            .iter()
            .filter(|e| matches!(e, LiveEvent::SipMessage(_)))
            .count();
        assert_eq!(sip, 5);
        assert_eq!(live.counters().active_calls, 0);
        assert_eq!(live.counters().finished_calls, 1);
    }

    #[test]
    fn silent_call_finishes_on_media_timeout_and_late_packets_are_counted() {
        let config = LiveConfig {
            media_timeout_ns: 5 * S,
            ..LiveConfig::default()
        };
        let mut live = LiveAnalyzer::new(config);
        let mut events = Vec::new();
        let end = run_call(&mut live, &mut events, 10 * S, "call-2", 3, false);
        live.handle_timeout(Timestamp(end + 4 * S));
        assert!(live.poll_event().is_none(), "still within the timeout");
        live.handle_timeout(Timestamp(end + 5 * S + 1_000_000));
        let e = live.poll_event().expect("finished");
        let LiveEvent::CallFinished(call) = e else {
            panic!("expected CallFinished, got {e:?}");
        };
        assert_eq!(call.reason, FinishReason::MediaTimeout);
        // Only the release of the finished call's state is pending.
        let finished = end + 5 * S + 1_000_000;
        assert_eq!(live.poll_timeout(), Some(Timestamp(finished + 10 * S)));
        // Media of the finished call arriving later is counted, not revived.
        let late = rtp(9999, 9999 * 160, 0x1111);
        let _ = live.handle_packet(&packet(
            end + 6 * S,
            "192.0.2.10:40000",
            "192.0.2.20:50000",
            &late,
        ));
        assert_eq!(live.counters().late_packets, 1);
        assert_eq!(live.counters().active_calls, 0);
    }

    #[test]
    fn rejected_call_and_shutdown_of_open_calls() {
        let mut live = LiveAnalyzer::new(LiveConfig::default());
        let p = sip(
            "INVITE sip:2002@beta.example SIP/2.0",
            "rej",
            "1 INVITE",
            None,
        );
        let _ = live.handle_packet(&packet(S, "192.0.2.1:5060", "192.0.2.2:5060", &p));
        let r = sip("SIP/2.0 486 Busy Here", "rej", "1 INVITE", None);
        let _ = live.handle_packet(&packet(S + S / 2, "192.0.2.2:5060", "192.0.2.1:5060", &r));
        let p = sip(
            "INVITE sip:3003@gamma.example SIP/2.0",
            "open",
            "1 INVITE",
            None,
        );
        let _ = live.handle_packet(&packet(2 * S, "192.0.2.1:5060", "192.0.2.3:5060", &p));
        live.handle_timeout(Timestamp(4 * S));
        let mut reasons = Vec::new();
        while let Some(e) = live.poll_event() {
            if let LiveEvent::CallFinished(c) = e {
                reasons.push((c.call.call_id.clone(), c.reason));
            }
        }
        assert_eq!(reasons, vec![("rej".to_string(), FinishReason::Rejected)]);
        live.finish_all(Timestamp(5 * S));
        let e = live.poll_event().expect("open call flushed");
        let LiveEvent::CallFinished(c) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (c.call.call_id.as_str(), c.reason),
            ("open", FinishReason::Shutdown)
        );
        assert_eq!(c.request_uri_host.as_deref(), Some("gamma.example"));
    }

    #[test]
    fn a_long_capture_of_sequential_calls_stays_bounded() {
        // 400 calls one after another (the same endpoints and SSRCs, as a
        // load generator would reuse them): finished calls are freed after
        // the late window and their slots reused, so the tables stay at
        // the few calls of the window instead of growing with the capture.
        let mut live = LiveAnalyzer::new(LiveConfig::default());
        let mut events = Vec::new();
        let mut peak = crate::analyzer::TableSizes::default();
        for i in 0..400u64 {
            run_call(
                &mut live,
                &mut events,
                i * 4 * S,
                &format!("seq-{i}"),
                1,
                true,
            );
            let t = live.analyzer().table_sizes();
            peak.call_slots = peak.call_slots.max(t.call_slots);
            peak.stream_slots = peak.stream_slots.max(t.stream_slots);
            peak.index_entries = peak.index_entries.max(t.index_entries);
        }
        while let Some(t) = live.poll_timeout() {
            live.handle_timeout(t);
        }
        while let Some(e) = live.poll_event() {
            events.push(e);
        }
        let finished: Vec<&FinishedCall> = events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::CallFinished(c) => Some(&**c),
                _ => None,
            })
            .collect();
        assert_eq!(finished.len(), 400);
        for (i, c) in finished.iter().enumerate() {
            assert_eq!(c.call.call_id, format!("seq-{i}"));
            assert_eq!(c.reason, FinishReason::Bye);
            assert_eq!(c.streams.len(), 2, "{}", c.call.call_id);
            for s in &c.streams {
                assert_eq!((s.packets, s.lost), (50, 0), "{}", c.call.call_id);
            }
        }
        // A 10 s late window over calls 4 s apart: at most 4 held.
        assert!(peak.call_slots <= 5, "{peak:?}");
        assert!(peak.stream_slots <= 10, "{peak:?}");
        assert!(peak.index_entries <= 40, "{peak:?}");
        let end = live.analyzer().table_sizes();
        assert_eq!((end.calls, end.streams, end.index_entries), (0, 0, 0));
        assert_eq!(live.counters().late_packets, 0);
    }

    #[test]
    fn orphan_streams_are_freed_when_idle_and_capped() {
        let config = LiveConfig {
            analyzer: AnalyzerConfig {
                max_streams: 50,
                max_calls: 1,
                ..AnalyzerConfig::default()
            },
            media_timeout_ns: 5 * S,
            ..LiveConfig::default()
        };
        let mut live = LiveAnalyzer::new(config);
        // An RTP flood without signalling: 80 sources, 20 packets each.
        let mut t = S;
        for round in 0..20u16 {
            for src in 0..80u32 {
                t += 100_000;
                let p = rtp(round, u32::from(round) * 160, 0x5000 + src);
                let from = format!("198.51.100.{}:{}", src % 250, 20000 + src);
                live.handle_timeout(Timestamp(t));
                let _ = live.handle_packet(&packet(t, &from, "192.0.2.99:30000", &p));
            }
        }
        let sizes = live.analyzer().table_sizes();
        assert_eq!(sizes.streams, 50, "capped: {sizes:?}");
        assert!(live.analyzer().counters().streams_dropped > 0);
        // Idle for the media timeout: every orphan is freed.
        live.handle_timeout(Timestamp(t + 6 * S));
        let sizes = live.analyzer().table_sizes();
        assert_eq!((sizes.streams, sizes.index_entries), (0, 0), "{sizes:?}");
        // The call cap: a second Call-ID is refused and counted.
        for (i, id) in ["a", "b"].iter().enumerate() {
            let p = sip("INVITE sip:1@x.example SIP/2.0", id, "1 INVITE", None);
            let at = t + 7 * S + i as u64;
            let _ = live.handle_packet(&packet(at, "192.0.2.1:5060", "192.0.2.2:5060", &p));
        }
        assert_eq!(live.analyzer().call_count(), 1);
        assert_eq!(live.analyzer().counters().calls_dropped, 1);
    }

    #[test]
    fn many_interleaved_calls_in_virtual_time_each_finish_once() {
        // Deterministic simulation: calls with seeded durations, some
        // ending with BYE, some going silent; virtual time jumps to the
        // next deadline.
        let config = LiveConfig {
            media_timeout_ns: 7 * S,
            ..LiveConfig::default()
        };
        let mut live = LiveAnalyzer::new(config);
        let mut events = Vec::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut expect_bye = 0;
        for i in 0..20u64 {
            let bye = next() % 2 == 0;
            expect_bye += u64::from(bye);
            let secs = 1 + next() % 4;
            run_call(
                &mut live,
                &mut events,
                (i * 10) * S,
                &format!("sim-{i}"),
                secs,
                bye,
            );
        }
        while let Some(t) = live.poll_timeout() {
            live.handle_timeout(t);
        }
        while let Some(e) = live.poll_event() {
            events.push(e);
        }
        let done = finished(&events);
        assert_eq!(done.len(), 20);
        let mut ids: Vec<_> = done.iter().map(|c| c.call.call_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20);
        let byes = done
            .iter()
            .filter(|c| c.reason == FinishReason::Bye)
            .count() as u64;
        assert_eq!(byes, expect_bye);
    }

    #[test]
    fn uri_parts() {
        assert_eq!(
            uri_host("\"Bob\" <sip:bob@Example.COM:5060>;tag=1").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            uri_host("sip:2002@beta.example;user=phone").as_deref(),
            Some("beta.example")
        );
        assert_eq!(
            uri_host("<sip:[2001:db8::1]:5060>").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(uri_host("garbage"), None);
        assert_eq!(
            uri_user("<sip:+15551234@carrier.example>").as_deref(),
            Some("+15551234")
        );
        assert_eq!(uri_user("<sip:carrier.example>"), None);
    }
}
