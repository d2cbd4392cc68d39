//! The back-to-back user agent (sans-IO): every call has an A leg (we are
//! its UAS) and a B leg (we are its UAC, forked in parallel to every
//! contact of the callee), each its own dialog with its own Call-ID, tags
//! and CSeq. Every SDP crosses the dataplane's control API
//! ([`dataplane::relay::Control`]) so media is anchored on the relay.
//!
//! # Driving contract
//!
//! One input — [`B2bua::handle_datagram`] for each message the driver
//! received, [`B2bua::handle_timeout`] at [`B2bua::poll_timeout`] — then
//! drain [`B2bua::poll_transmit`] and [`B2bua::poll_event`]. `now` is an
//! argument everywhere; the relay control calls take it too.
//!
//! # Admission and routing
//!
//! Every message first passes [`security::Guard`] (per-source rate limit,
//! scanner user agents, RFC 4475 semantic checks answered statelessly).
//! REGISTER goes to the [`Registrar`] (digest, RFC 8760). An INVITE is
//! accepted from a trunk trusted by source address, or from a subscriber
//! who answers a 407 digest challenge for the domain of its From URI (no
//! open relay). The domain's dialplan decides: ring a user (every
//! registered contact in parallel), a trunk (its codec list filters the
//! offer), another core, or reject. With no rule matching, the
//! Request-URI user of the domain is rung.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use dataplane::relay::{Answer, Control, Offer, SessionFlags, SessionStats};
use wire::sip::{Message, Method, Uri};

use crate::auth::{AuthConfig, Authenticator, ChallengeKind, Realm, Verdict};
use crate::dialplan::{Action, CallInfo, CallSource};
use crate::msg::{self, ALLOW};
use crate::policy::Policy;
use crate::registrar::{Registrar, RegistrarConfig};
use crate::security::{self, Guard, GuardConfig, Screen};
use crate::transaction::{
    RequestVerdict, ResponseVerdict, TimerConfig, Transactions, Transmit, TxnEvent, TxnId,
};
use crate::transport::{Peer, Transport};

/// Where the B2BUA can be reached: the sent-by it puts in Via and Contact,
/// per transport.
#[derive(Debug, Clone, Default)]
pub struct LocalAddrs {
    /// UDP listen address.
    pub udp: Option<std::net::SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<std::net::SocketAddr>,
    /// TLS listen address.
    pub tls: Option<std::net::SocketAddr>,
}

impl LocalAddrs {
    fn for_transport(&self, t: Transport) -> Option<std::net::SocketAddr> {
        match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        }
    }
}

/// Configuration of the B2BUA core.
#[derive(Debug, Clone)]
pub struct Config {
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Our addresses.
    pub local: LocalAddrs,
    /// A random token (from the driver's RNG) that prefixes our Call-IDs,
    /// tags and branches, so they are unique across restarts.
    pub instance: String,
    /// The nonce key of digest authentication (random, from the driver).
    pub auth_key: [u8; 32],
    /// Digest settings.
    pub auth: AuthConfig,
    /// Rate limit, scanners, supported extensions.
    pub guard: GuardConfig,
    /// Registration bounds.
    pub registrar: RegistrarConfig,
}

impl Config {
    /// Defaults around the given instance token and nonce key.
    pub fn new(instance: String, auth_key: [u8; 32]) -> Config {
        Config {
            timers: TimerConfig::default(),
            local: LocalAddrs::default(),
            instance,
            auth_key,
            auth: AuthConfig::default(),
            guard: GuardConfig::default(),
            registrar: RegistrarConfig::default(),
        }
    }
}

/// Why a call ended, for CDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The caller hung up (BYE from A).
    CallerBye,
    /// The callee hung up (BYE from B).
    CalleeBye,
    /// The caller cancelled before an answer.
    Cancelled,
    /// The callee (all branches) refused; the status says how.
    Rejected,
    /// No route: user unknown or not registered.
    NoRoute,
    /// No final response in time (Timer B on every branch).
    Timeout,
    /// The 2xx was never acknowledged.
    NoAck,
    /// The media relay refused the SDP.
    MediaError,
    /// Too many hops (483).
    Loop,
    /// No session refresh before Session-Expires (RFC 4028).
    SessionExpired,
}

impl Cause {
    /// A short stable name (CDR `cause` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::CallerBye => "caller_bye",
            Cause::CalleeBye => "callee_bye",
            Cause::Cancelled => "cancelled",
            Cause::Rejected => "rejected",
            Cause::NoRoute => "no_route",
            Cause::Timeout => "timeout",
            Cause::NoAck => "no_ack",
            Cause::MediaError => "media_error",
            Cause::Loop => "loop",
            Cause::SessionExpired => "session_expired",
        }
    }
}

/// A finished call, for the CDR writer.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The A leg's Call-ID.
    pub call_id: String,
    /// The B leg's Call-ID (empty if no B leg was created).
    pub b_call_id: String,
    /// Caller URI (From of the A leg).
    pub from: String,
    /// Called URI (Request-URI of the A leg).
    pub to: String,
    /// When the INVITE arrived.
    pub start: Instant,
    /// When the 2xx was sent to A.
    pub answer: Option<Instant>,
    /// When the call ended.
    pub end: Instant,
    /// The final status sent to A (200 for answered calls).
    pub status: u16,
    /// Why it ended.
    pub cause: Cause,
    /// The relay's final statistics, when media was anchored.
    pub media: Option<SessionStats>,
    /// The domain the call was routed in.
    pub domain: String,
    /// Wall-clock start, answer and end (ms since the Unix epoch).
    pub unix_ms: (u64, Option<u64>, u64),
}

impl CallRecord {
    /// The stored CDR (`sbus::record::Cdr`) of this call, with the relay's
    /// per-leg statistics.
    pub fn to_cdr(&self) -> sbus::record::Cdr {
        use crate::cdr::{CallRecorder, Cause as CdrCause};
        let (start, answer, end) = self.unix_ms;
        let mut rec = CallRecorder::start(&self.call_id, &self.domain, &self.from, &self.to, start);
        if let Some(a) = answer {
            rec.answer(a);
        }
        if let Some(media) = &self.media {
            for (role, leg) in ["caller", "callee"].iter().zip(&media.legs) {
                rec.leg(sbus::record::CdrLeg {
                    role: (*role).to_owned(),
                    peer: leg.remote.map(|a| a.to_string()).unwrap_or_default(),
                    codec: String::new(),
                    packets: leg.rtp_packets,
                    bytes: leg.rtp_bytes,
                    drops: leg.drops.total(),
                    lost: leg.lost,
                });
            }
        }
        let cause = match self.cause {
            Cause::CallerBye => CdrCause::CallerBye,
            Cause::CalleeBye => CdrCause::CalleeBye,
            Cause::Cancelled => CdrCause::Cancel,
            Cause::Timeout | Cause::NoAck => CdrCause::Timeout,
            Cause::SessionExpired => CdrCause::MediaTimeout,
            Cause::Rejected | Cause::NoRoute | Cause::MediaError | Cause::Loop => {
                CdrCause::Rejected
            }
        };
        rec.end(end, self.status, cause)
    }
}

/// What the B2BUA reports to its driver.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// A call ended (answered or not).
    Ended(Box<CallRecord>),
}

/// SIP counters (Prometheus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SipCounters {
    /// Requests received, by method: INVITE, ACK, BYE, CANCEL, OPTIONS,
    /// REGISTER, PRACK, UPDATE, other.
    pub requests: [u64; 9],
    /// Responses received, by class 1xx..6xx.
    pub responses_in: [u64; 6],
    /// Responses sent, by class 1xx..6xx.
    pub responses_out: [u64; 6],
    /// Messages that failed to parse.
    pub malformed: u64,
    /// Calls set up (INVITEs accepted for routing).
    pub calls: u64,
    /// Calls answered.
    pub answered: u64,
    /// Digest authentication failures.
    pub auth_failures: u64,
    /// Requests refused by the per-source rate limit.
    pub rate_limited: u64,
    /// Requests from scanner user agents.
    pub scanners: u64,
}

/// Method names in [`SipCounters::requests`] order.
pub const COUNTED_METHODS: [&str; 9] = [
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "other",
];

/// The B2BUA core. See the [module docs](self).
pub struct B2bua<C: Control> {
    config: Config,
    txns: Transactions,
    media: C,
    policy: Box<dyn Policy>,
    guard: Guard,
    registrar: Registrar,
    auth: Authenticator,
    next_sweep: Option<Instant>,
    unix_ms: u64,
    calls: HashMap<u64, Call, rustc_hash::FxBuildHasher>,
    by_call_id: HashMap<Box<str>, (u64, Side), rustc_hash::FxBuildHasher>,
    client: HashMap<TxnId, ClientRole, rustc_hash::FxBuildHasher>,
    server: HashMap<TxnId, ServerRole, rustc_hash::FxBuildHasher>,
    next_id: u64,
    session_timers: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    branch_seq: std::cell::Cell<u64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
    counters: SipCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent to the branches; no final response yet.
    Proceeding,
    /// 2xx sent to A, waiting for its ACK or in the call.
    Confirmed,
    /// Ended; waiting for the last transactions.
    Ended,
}

/// One side's dialog. For A we are the UAS, for B the UAC.
#[derive(Debug, Default)]
struct Dialog {
    call_id: Box<str>,
    /// Our From/To value on this side, with our tag.
    local: Box<str>,
    /// Their From/To value (with their tag once known).
    remote: Box<str>,
    local_tag: Box<str>,
    remote_tag: Box<str>,
    remote_target: Box<str>,
    route_set: Vec<Box<str>>,
    peer: Option<Peer>,
    local_cseq: u32,
}

#[derive(Debug)]
struct Branch {
    peer: Peer,
    request_uri: Box<str>,
    via: Box<str>,
    provisional: bool,
    done: bool,
    cancelled: bool,
}

#[derive(Debug)]
struct Call {
    a: Dialog,
    b: Dialog,
    phase: Phase,
    a_invite: Option<TxnId>,
    a_invite_head: Box<str>,
    b_invite_cseq: u32,
    branches: Vec<Branch>,
    best_status: u16,
    best_response: Option<Box<[u8]>>,
    /// The ACK sent for B's 2xx (re-sent on 2xx retransmissions).
    media: bool,
    from_uri: Box<str>,
    to_uri: Box<str>,
    started: Instant,
    answered: Option<Instant>,
    status: u16,
    cause: Option<Cause>,
    pending_client: u32,
    /// When the session expires without a refresh (RFC 4028).
    session_deadline: Option<Instant>,
    domain: Box<str>,
    started_unix_ms: u64,
    answered_unix_ms: Option<u64>,
}

/// Where a call goes.
struct Route {
    domain: String,
    targets: Vec<Target>,
    /// The trunk's codec list (empty: no filtering).
    codecs: Vec<String>,
}

struct Target {
    contact: String,
    peer: Peer,
}

/// Why an INVITE is refused before a call exists.
struct Refusal {
    code: u16,
    cause: Cause,
    /// Extra header lines (the digest challenge).
    extra: String,
}

impl Refusal {
    fn new(code: u16, cause: Cause) -> Refusal {
        Refusal {
            code,
            cause,
            extra: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ClientRole {
    BranchInvite {
        call: u64,
        branch: usize,
        /// Where the fork went (its entry may be released after the answer).
        peer: Peer,
    },
    /// A request we forwarded to `to`; its response goes back on `server`.
    Forward {
        call: u64,
        to: Side,
        server: TxnId,
        offer: bool,
    },
    /// A request of our own (BYE, CANCEL): nothing to relay back.
    Own { call: u64 },
}

#[derive(Debug)]
enum ServerRole {
    /// A forwarded request waiting for the other side's answer.
    Forwarded { head: Box<str> },
}

impl<C: Control> B2bua<C> {
    /// A B2BUA anchoring media through `media`, provisioned by `policy`.
    /// `origin` is any instant (the epoch of digest nonces).
    pub fn new(config: Config, media: C, policy: Box<dyn Policy>, origin: Instant) -> Self {
        Self {
            txns: Transactions::new(config.timers),
            guard: Guard::new(config.guard.clone()),
            registrar: Registrar::new(config.registrar.clone()),
            auth: Authenticator::new(config.auth_key, origin, config.auth.clone()),
            next_sweep: None,
            unix_ms: 0,
            policy,
            config,
            media,
            calls: HashMap::default(),
            by_call_id: HashMap::default(),
            client: HashMap::default(),
            server: HashMap::default(),
            next_id: 1,
            session_timers: std::collections::BinaryHeap::new(),
            branch_seq: std::cell::Cell::new(0),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: SipCounters::default(),
        }
    }

    /// Counters since start.
    pub fn counters(&self) -> SipCounters {
        let g = self.guard.stats();
        let a = self.auth.stats();
        SipCounters {
            auth_failures: a.rejected + a.forged + a.replayed + a.malformed,
            rate_limited: g.rate_limited,
            scanners: g.scanners,
            ..self.counters
        }
    }

    /// Registrations held now.
    pub fn registrations(&self) -> usize {
        self.registrar.len()
    }

    /// The wall clock (ms since the Unix epoch) for dialplan time rules and
    /// CDRs; the driver sets it before each input.
    pub fn set_unix_ms(&mut self, unix_ms: u64) {
        self.unix_ms = unix_ms;
    }

    /// Lets the policy pick up provisioning changes.
    pub fn reload_policy(&mut self) {
        self.policy.reload();
    }

    /// The transaction layer (for its counters and size).
    pub fn transactions(&self) -> &Transactions {
        &self.txns
    }

    /// Calls held now (any phase).
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Confirmed dialogs now.
    pub fn dialogs(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.phase == Phase::Confirmed)
            .count()
    }

    /// The relay control handle.
    pub fn media(&mut self) -> &mut C {
        &mut self.media
    }

    /// One received datagram or framed stream message from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return; // keep-alive
        }
        let msg = match self.guard.screen(now, peer.addr.ip(), bytes) {
            Screen::Accept(m) => m,
            Screen::Challenge(m) => {
                // Credentials in a scheme other than Digest (RFC 4475 §3.3.7):
                // challenge for Digest.
                let kind = if m.method() == Some(Method::Register) {
                    ChallengeKind::Www
                } else {
                    ChallengeKind::Proxy
                };
                let realm = m
                    .request_uri()
                    .and_then(|u| u.host)
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let mut extra = String::new();
                for v in self.auth.challenge(Realm(&realm), kind, now, false) {
                    let _ = write!(extra, "{}: {v}\r\n", kind.challenge_header());
                }
                let tag = self.new_token();
                let head = msg::response_head(&m, &peer, Some(&tag));
                let response = msg::response(kind.status(), &head, &extra, b"");
                self.count_out(&response);
                self.transmits.push_back(Transmit {
                    peer,
                    bytes: response,
                });
                return;
            }
            Screen::Respond(response) => {
                self.counters.malformed += u64::from(Message::parse(bytes).is_err());
                self.count_out(&response);
                self.transmits.push_back(Transmit {
                    peer,
                    bytes: response,
                });
                return;
            }
            Screen::Drop(reason) => {
                if reason == security::DropReason::Garbage {
                    self.counters.malformed += 1;
                }
                tracing::debug!(%peer, ?reason, "SIP message dropped");
                return;
            }
        };
        if msg.is_request() {
            self.handle_request(now, peer, &msg);
        } else {
            self.handle_response(now, &msg);
        }
        self.drain_txn_events(now);
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| t <= now) {
            self.registrar.handle_timeout(now);
            self.next_sweep = Some(now + Duration::from_secs(5));
        }
        self.txns.handle_timeout(now);
        self.drain_txn_events(now);
        self.fire_session_timers(now);
        self.drain_txn_events(now);
    }

    /// The earliest deadline.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Stale session timers (refreshed or ended calls) are dropped here.
        while let Some(&std::cmp::Reverse((at, id))) = self.session_timers.peek() {
            if self
                .calls
                .get(&id)
                .is_some_and(|c| c.session_deadline == Some(at))
            {
                break;
            }
            self.session_timers.pop();
        }
        let session = self.session_timers.peek().map(|r| r.0.0);
        [self.txns.poll_timeout(), session, self.next_sweep]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        let t = self.txns.poll_transmit()?;
        self.count_out(&t.bytes);
        Some(t)
    }

    /// The next call event.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// The driver could not send to `peer` for this transaction.
    pub fn transport_error(&mut self, now: Instant, txn: TxnId) {
        self.txns.transport_error(txn);
        self.drain_txn_events(now);
    }

    fn count_out(&mut self, bytes: &[u8]) {
        if let Some(rest) = bytes.strip_prefix(b"SIP/2.0 ")
            && let Some(&c) = rest.first()
            && (b'1'..=b'6').contains(&c)
        {
            self.counters.responses_out[usize::from(c - b'1')] += 1;
        }
    }

    fn handle_request(&mut self, now: Instant, peer: Peer, msg: &Message<'_>) {
        let method = msg.method().unwrap_or(Method::Other(""));
        let idx = COUNTED_METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(8);
        self.counters.requests[idx] += 1;
        match self.txns.handle_request(now, peer, msg) {
            RequestVerdict::Retransmission | RequestVerdict::AckAbsorbed => {}
            RequestVerdict::Ack => self.on_ack(now, msg),
            RequestVerdict::Cancel { txn, invite } => self.on_cancel(now, peer, msg, txn, invite),
            RequestVerdict::New(txn) => {
                let in_dialog = msg.to().and_then(|t| t.tag()).is_some();
                if in_dialog {
                    return self.in_dialog(now, peer, msg, txn);
                }
                match method {
                    Method::Invite => self.on_invite(now, peer, msg, txn),
                    Method::Options => {
                        let extra = format!(
                            "Allow: {ALLOW}\r\nAccept: application/sdp\r\nSupported: 100rel, timer\r\n"
                        );
                        self.reply(now, txn, msg, &peer, 200, &extra);
                    }
                    Method::Register => self.on_register(now, peer, msg, txn),
                    Method::Bye | Method::Prack | Method::Update | Method::Info => {
                        self.reply(now, txn, msg, &peer, 481, "")
                    }
                    _ => {
                        let extra = format!("Allow: {ALLOW}\r\n");
                        self.reply(now, txn, msg, &peer, 405, &extra);
                    }
                }
            }
        }
    }

    /// Responds on a server transaction with a head built from `msg`.
    fn reply(
        &mut self,
        now: Instant,
        txn: TxnId,
        msg: &Message<'_>,
        peer: &Peer,
        code: u16,
        extra: &str,
    ) {
        let tag = self.new_token();
        let head = msg::response_head(msg, peer, Some(&tag));
        let bytes = msg::response(code, &head, extra, b"");
        self.txns.respond(now, txn, code, bytes);
    }

    fn on_register(&mut self, now: Instant, peer: Peer, msg: &Message<'_>, txn: TxnId) {
        let source = crate::registrar::Source {
            addr: peer.addr,
            transport: peer.transport.as_str(),
        };
        let reply = self
            .registrar
            .handle_register(now, msg, source, &mut self.auth, &*self.policy);
        self.txns.respond(now, txn, reply.status, reply.bytes);
    }

    fn on_invite(&mut self, now: Instant, peer: Peer, msg: &Message<'_>, txn: TxnId) {
        let local_tag = self.new_token();
        let head: Box<str> = msg::response_head(msg, &peer, Some(&local_tag)).into();
        let trying = msg::response(100, &head, "", b"");
        self.txns.respond(now, txn, 100, trying);
        //= https://www.rfc-editor.org/rfc/rfc3261#section-16.3
        //# If the Max-Forwards value reaches 0 [...] the element MUST NOT forward
        //# the request [and returns] a 483 (Too many hops) error response.
        //= https://www.rfc-editor.org/rfc/rfc4028#section-8
        //# If the Session-Expires interval is too small [...] the UAS MUST
        //# reject the request with a 422 response [...] containing a Min-SE
        //# header field
        if session_expires(msg).is_some_and(|se| se < MIN_SE) {
            let bytes = msg::response(422, &head, &format!("Min-SE: {MIN_SE}\r\n"), b"");
            self.txns.respond(now, txn, 422, bytes);
            return;
        }
        let max_forwards = msg.max_forwards().unwrap_or(70);
        if max_forwards == 0 {
            return self.fail_early(now, txn, msg, &head, Refusal::new(483, Cause::Loop));
        }
        let (Some(call_id), Some(from), Some(uri)) = (msg.call_id(), msg.from(), msg.request_uri())
        else {
            return self.fail_early(now, txn, msg, &head, Refusal::new(400, Cause::Rejected));
        };
        let Some(from_tag) = from.tag() else {
            return self.fail_early(now, txn, msg, &head, Refusal::new(400, Cause::Rejected));
        };
        if self.by_call_id.contains_key(call_id) {
            // A second INVITE for a call we hold, with a new branch and no To tag:
            // a merged request (RFC 3261 §8.2.2.2).
            return self.fail_early(now, txn, msg, &head, Refusal::new(482, Cause::Loop));
        }
        let route = match self.route(now, peer, msg) {
            Ok(r) => r,
            Err(refusal) => {
                return self.fail_early(now, txn, msg, &head, refusal);
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.counters.calls += 1;
        let sdp = msg.sdp_body().and_then(|b| std::str::from_utf8(b).ok());
        let mut call = Call {
            a: Dialog {
                call_id: call_id.into(),
                local: format!("{};tag={local_tag}", msg.header("To").unwrap_or("")).into(),
                remote: msg.header("From").unwrap_or("").into(),
                local_tag: local_tag.into(),
                remote_tag: from_tag.into(),
                remote_target: msg
                    .contact()
                    .map_or(uri.as_str(), |c| c.uri.as_str())
                    .into(),
                route_set: msg.header_values("Record-Route").map(Into::into).collect(),
                peer: Some(peer),
                local_cseq: 1,
            },
            b: Dialog::default(),
            phase: Phase::Proceeding,
            a_invite: Some(txn),
            a_invite_head: head.clone(),
            b_invite_cseq: 1,
            branches: Vec::new(),
            best_status: 0,
            best_response: None,
            media: false,
            from_uri: from.uri.as_str().into(),
            to_uri: uri.as_str().into(),
            domain: route.domain.as_str().into(),
            started_unix_ms: self.unix_ms,
            answered_unix_ms: None,
            started: now,
            answered: None,
            status: 0,
            cause: None,
            pending_client: 0,
            session_deadline: None,
        };
        let mut body = String::new();
        if let Some(sdp) = sdp {
            let offer = Offer {
                call_id,
                from_tag,
                sdp,
                flags: SessionFlags::default(),
            };
            match self.media.offer(now, &offer) {
                Ok(rewritten) => {
                    call.media = true;
                    body = rewritten;
                    if !route.codecs.is_empty() {
                        match filter_codecs(&body, &route.codecs) {
                            Some(filtered) => body = filtered,
                            None => {
                                call.cause = Some(Cause::MediaError);
                                self.calls.insert(id, call);
                                return self.end_unanswered(now, id, 488, None);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "relay refused the offer");
                    call.cause = Some(Cause::MediaError);
                    let code = match e {
                        dataplane::relay::ControlError::InvalidSdp(_)
                        | dataplane::relay::ControlError::NoMedia => 488,
                        _ => 503,
                    };
                    self.calls.insert(id, call);
                    return self.end_unanswered(now, id, code, None);
                }
            }
        }
        // The B leg.
        let b_tag = self.new_token();
        let b_call_id = format!("{}@voxplane", self.new_token());
        call.b = Dialog {
            call_id: b_call_id.as_str().into(),
            local: format!("<{}>;tag={b_tag}", from.uri.as_str()).into(),
            remote: format!("<{}>", uri.as_str()).into(),
            local_tag: b_tag.into(),
            remote_tag: "".into(),
            remote_target: "".into(),
            route_set: Vec::new(),
            peer: None,
            local_cseq: 1,
        };
        let mut pass = String::new();
        msg::pass_headers(&mut pass, msg);
        for b in &route.targets {
            let branch = self.new_branch();
            let via = self.via(b.peer.transport, &branch);
            let contact = self.contact(b.peer.transport);
            let mut req = String::with_capacity(600 + body.len());
            let _ = write!(
                req,
                "INVITE {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\n{pass}",
                b.contact,
                max_forwards - 1,
                call.b.local,
                call.b.remote,
                call.b.call_id,
            );
            if !body.is_empty() && !pass.contains("Content-Type") {
                req.push_str("Content-Type: application/sdp\r\n");
            }
            let _ = write!(req, "Content-Length: {}\r\n\r\n{body}", body.len());
            let t = self
                .txns
                .send_request(now, b.peer, Method::Invite, &branch, req.into_bytes());
            self.client.insert(
                t,
                ClientRole::BranchInvite {
                    call: id,
                    branch: call.branches.len(),
                    peer: b.peer,
                },
            );
            call.branches.push(Branch {
                peer: b.peer,
                request_uri: b.contact.as_str().into(),
                via: via.into(),
                provisional: false,
                done: false,
                cancelled: false,
            });
            call.pending_client += 1;
        }
        self.by_call_id
            .insert(call.a.call_id.clone(), (id, Side::A));
        self.by_call_id
            .insert(call.b.call_id.clone(), (id, Side::B));
        self.calls.insert(id, call);
    }

    /// Who is calling (trunk by address, or a subscriber by digest) and
    /// where the dialplan sends the call.
    fn route(&mut self, now: Instant, peer: Peer, msg: &Message<'_>) -> Result<Route, Refusal> {
        let (Some(from), Some(uri)) = (msg.from(), msg.request_uri()) else {
            return Err(Refusal::new(400, Cause::Rejected));
        };
        let from_user = from.uri.user.unwrap_or("");
        let from_host = from.uri.host.unwrap_or("").to_ascii_lowercase();
        let ruri_host = uri.host.unwrap_or("").to_ascii_lowercase();
        let called = uri.user.unwrap_or("");
        let ip = peer.addr.ip();
        let trunk = self.policy.trunk_by_ip(ip);
        let authenticated;
        let source = match &trunk {
            Some(t) => CallSource::Trunk(&t.name),
            None => {
                //= https://www.rfc-editor.org/rfc/rfc3261#section-22.3
                //# When a UAC sends a request to a proxy server, the proxy server MAY
                //# authenticate the originator before the request is processed.
                if !self.policy.serves(&from_host) {
                    return Err(Refusal::new(403, Cause::Rejected));
                }
                let policy = &*self.policy;
                let verdict =
                    self.auth
                        .verify(msg, ChallengeKind::Proxy, Realm(&from_host), now, |u| {
                            policy.credentials(&from_host, u)
                        });
                match verdict {
                    Verdict::Authenticated { user, .. } if user == from_user => {
                        authenticated = user;
                        CallSource::User(&authenticated)
                    }
                    Verdict::Authenticated { .. } | Verdict::Forbidden(_) => {
                        return Err(Refusal::new(403, Cause::Rejected));
                    }
                    Verdict::BadRequest(_) => return Err(Refusal::new(400, Cause::Rejected)),
                    Verdict::Challenge { stale } => {
                        let mut extra = String::new();
                        for v in
                            self.auth
                                .challenge(Realm(&from_host), ChallengeKind::Proxy, now, stale)
                        {
                            let _ = write!(
                                extra,
                                "{}: {v}\r\n",
                                ChallengeKind::Proxy.challenge_header()
                            );
                        }
                        return Err(Refusal {
                            code: 407,
                            cause: Cause::Rejected,
                            extra,
                        });
                    }
                }
            }
        };
        let domain = if self.policy.serves(&ruri_host) {
            ruri_host
        } else {
            from_host
        };
        let info = CallInfo {
            to: called,
            from: from_user,
            source,
            ip: Some(ip),
        };
        let decision = self.policy.dialplan(&domain).evaluate(&info, self.unix_ms);
        let mut route = Route {
            domain,
            targets: Vec::new(),
            codecs: Vec::new(),
        };
        match decision.action {
            Action::Ring(user) => self.ring(now, &user, &mut route)?,
            // No rule matched: ring the called user of the domain.
            Action::NoRoute if decision.rule.is_none() => {
                self.ring(now, &decision.number, &mut route)?
            }
            Action::NoRoute => return Err(Refusal::new(404, Cause::NoRoute)),
            Action::Reject(code, _) => return Err(Refusal::new(code, Cause::Rejected)),
            Action::Trunk(name) => {
                let t = self
                    .policy
                    .trunk(&name)
                    .ok_or(Refusal::new(503, Cause::NoRoute))?;
                let transport = Transport::from_token(&t.transport).unwrap_or(Transport::Udp);
                let ip = msg::host_ip(&t.host).ok_or(Refusal::new(503, Cause::NoRoute))?;
                let port = if t.port == 0 { 5060 } else { t.port };
                let addr = std::net::SocketAddr::new(ip, port);
                route.targets.push(Target {
                    contact: format!("sip:{}@{}", decision.number, msg::hostport(addr)),
                    peer: Peer {
                        transport,
                        addr,
                        conn: None,
                    },
                });
                route.codecs = t.codecs.clone();
            }
            Action::Core(core) => {
                let target = Uri::parse(msg::uri_of(&core))
                    .ok()
                    .and_then(|u| msg::uri_target(&u))
                    .ok_or(Refusal::new(503, Cause::NoRoute))?;
                route.targets.push(Target {
                    contact: format!("sip:{}@{}", decision.number, msg::hostport(target.0)),
                    peer: Peer {
                        transport: target.1,
                        addr: target.0,
                        conn: None,
                    },
                });
            }
        }
        Ok(route)
    }

    /// Every registered contact of `user` in the route's domain.
    fn ring(&self, now: Instant, user: &str, route: &mut Route) -> Result<(), Refusal> {
        if self.policy.credentials(&route.domain, user).is_none() {
            return Err(Refusal::new(404, Cause::NoRoute));
        }
        let aor = format!("{user}@{}", route.domain);
        for b in self.registrar.lookup(&aor, now) {
            let transport = Transport::from_token(&b.transport).unwrap_or(Transport::Udp);
            // Requests go where the REGISTER came from (NAT); on streams, to
            // the Contact when it is an address (the registering connection,
            // if still open, is found by address by the stream layer).
            let mut addr = b.source;
            if transport.is_reliable()
                && let Some((contact_addr, _)) = Uri::parse(&b.contact)
                    .ok()
                    .and_then(|u| msg::uri_target(&u))
            {
                addr = contact_addr;
            }
            route.targets.push(Target {
                contact: b.contact.clone(),
                peer: Peer {
                    transport,
                    addr,
                    conn: None,
                },
            });
        }
        if route.targets.is_empty() {
            return Err(Refusal::new(480, Cause::NoRoute));
        }
        Ok(())
    }

    /// Refuses an INVITE before a call exists; the attempt still gets a CDR.
    fn fail_early(
        &mut self,
        now: Instant,
        txn: TxnId,
        msg: &Message<'_>,
        head: &str,
        refusal: Refusal,
    ) {
        let Refusal { code, cause, extra } = refusal;
        let bytes = msg::response(code, head, &extra, b"");
        self.txns.respond(now, txn, code, bytes);
        if code == 407 {
            return; // a challenge is not a call attempt of its own
        }
        let record = CallRecord {
            call_id: msg.call_id().unwrap_or("").to_owned(),
            b_call_id: String::new(),
            from: msg.from().map_or("", |f| f.uri.as_str()).to_owned(),
            to: msg.request_uri().map_or("", |u| u.as_str()).to_owned(),
            start: now,
            answer: None,
            end: now,
            status: code,
            cause,
            media: None,
            domain: String::new(),
            unix_ms: (self.unix_ms, None, self.unix_ms),
        };
        self.events.push_back(CallEvent::Ended(Box::new(record)));
    }

    fn handle_response(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(status) = msg.status() else { return };
        if (100..700).contains(&status) {
            self.counters.responses_in[usize::from(status / 100 - 1)] += 1;
        }
        match self.txns.handle_response(now, msg) {
            ResponseVerdict::Absorbed => {}
            ResponseVerdict::Stray => self.on_stray_response(msg),
            ResponseVerdict::Deliver(txn) => match self.client.get(&txn).copied() {
                Some(ClientRole::BranchInvite { call, branch, peer }) => {
                    self.on_branch_response(now, call, (branch, peer), msg, status)
                }
                Some(ClientRole::Forward {
                    call,
                    to,
                    server,
                    offer,
                }) => self.on_forward_response(now, call, to, server, offer, msg, status),
                Some(ClientRole::Own { .. }) | None => {}
            },
        }
    }

    fn on_stray_response(&mut self, msg: &Message<'_>) {
        // A retransmitted 2xx to our INVITE after its transaction ended: ACK again.
        let Some(status) = msg.status() else { return };
        if !(200..300).contains(&status) || msg.cseq().map(|c| c.method) != Some(Method::Invite) {
            return;
        }
        let Some(&(id, Side::B)) = msg.call_id().and_then(|c| self.by_call_id.get(c)) else {
            return;
        };
        // The ACK is rebuilt from the dialog (an ACK for a 2xx is a
        // transaction of its own; any branch will do), so calls hold no copy.
        if let Some(call) = self.calls.get(&id)
            && call.b.peer.is_some()
        {
            let (peer, _, bytes) =
                self.dialog_request(&call.b, Method::Ack, call.b_invite_cseq, "", "");
            self.transmits.push_back(Transmit { peer, bytes });
        }
    }

    fn on_branch_response(
        &mut self,
        now: Instant,
        id: u64,
        fork: (usize, Peer),
        msg: &Message<'_>,
        status: u16,
    ) {
        let branch = fork.0;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if status < 200 {
            if let Some(b) = call.branches.get_mut(branch) {
                let first = !b.provisional;
                b.provisional = true;
                if b.cancelled {
                    if first {
                        let (peer, cancel) = cancel_request(&call.b, b);
                        release_branches(call);
                        let _ = self.send_own(now, id, peer, Method::Cancel, cancel);
                    }
                    return;
                }
            }
            if status == 100 || call.phase != Phase::Proceeding {
                return;
            }
            // Early dialog towards this branch (for PRACK/UPDATE).
            if let Some(tag) = msg.to().and_then(|t| t.tag()) {
                adopt_remote(&mut call.b, msg, tag, call.branches[branch].peer);
            }
            let body = match self.rewrite(now, id, Side::B, msg, false) {
                Ok(b) => b,
                Err(()) => return,
            };
            let contact = self.contact_for(self.calls[&id].a.peer);
            let call = self.calls.get_mut(&id).expect("call checked above");
            let mut extra = String::new();
            msg::pass_headers(&mut extra, msg);
            let _ = write!(extra, "Contact: {contact}\r\n");
            let bytes = msg::response(status, &call.a_invite_head, &extra, body.as_bytes());
            if let Some(t) = call.a_invite {
                self.txns.respond(now, t, status, bytes);
            }
            return;
        }
        if let Some(b) = call.branches.get_mut(branch) {
            b.done = true;
        }
        if (200..300).contains(&status) {
            self.on_branch_answer(now, id, fork, msg, status);
            return;
        }
        // A failure on this branch.
        if call.phase != Phase::Proceeding {
            return;
        }
        let better = call.best_status == 0
            || status / 100 == 6
            || (call.best_status / 100 != 6 && status < call.best_status);
        if better {
            call.best_status = status;
            let mut extra = String::new();
            msg::pass_headers(&mut extra, msg);
            call.best_response =
                Some(msg::response(status, &call.a_invite_head, &extra, b"").into());
        }
        //= https://www.rfc-editor.org/rfc/rfc3261#section-16.7
        //# If a 6xx response is received, it is not immediately forwarded, but
        //# the stateful proxy SHOULD cancel all client pending transactions
        if status / 100 == 6 {
            self.cancel_branches(now, id, None);
        }
        let call = self.calls.get_mut(&id).expect("call checked above");
        if call.branches.iter().all(|b| b.done) {
            let code = call.best_status;
            let resp = call.best_response.take();
            self.end_unanswered(now, id, code, resp.map(Vec::from));
        }
    }

    fn on_branch_answer(
        &mut self,
        now: Instant,
        id: u64,
        fork: (usize, Peer),
        msg: &Message<'_>,
        status: u16,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (branch, peer) = fork;
        let tag = msg.to().and_then(|t| t.tag()).unwrap_or("");
        if call.phase != Phase::Proceeding {
            // A second 2xx (another fork) or a 2xx after CANCEL: ACK and BYE it.
            let mut d = Dialog {
                call_id: call.b.call_id.clone(),
                local: call.b.local.clone(),
                local_tag: call.b.local_tag.clone(),
                local_cseq: call.b_invite_cseq + 1,
                ..Dialog::default()
            };
            adopt_remote(&mut d, msg, tag, peer);
            let ack = self.dialog_request(&d, Method::Ack, call.b_invite_cseq, "", "");
            self.transmits.push_back(Transmit {
                peer: ack.0,
                bytes: ack.2,
            });
            let bye = self.dialog_request(&d, Method::Bye, d.local_cseq, "", "");
            let _ = self.send_own_with_branch(now, id, bye);
            return;
        }
        let call = self.calls.get_mut(&id).expect("checked above");
        adopt_remote(&mut call.b, msg, tag, peer);
        call.b.local_cseq = call.b_invite_cseq;
        // ACK the 2xx at once (end-to-end ACK; A's ACK is absorbed).
        let (ack_peer, _, ack) = self.dialog_request(
            &self.calls[&id].b,
            Method::Ack,
            self.calls[&id].b_invite_cseq,
            "",
            "",
        );
        self.transmits.push_back(Transmit {
            peer: ack_peer,
            bytes: ack,
        });
        self.cancel_branches(now, id, Some(branch));
        let body = self
            .rewrite(now, id, Side::B, msg, false)
            .unwrap_or_default();
        let contact = self.contact_for(self.calls[&id].a.peer);
        self.refresh_session(now, id, msg);
        let call = self.calls.get_mut(&id).expect("call checked above");
        call.phase = Phase::Confirmed;
        call.answered = Some(now);
        call.answered_unix_ms = Some(self.unix_ms);
        call.status = status;
        self.counters.answered += 1;
        let mut extra = String::new();
        msg::pass_headers(&mut extra, msg);
        let _ = write!(extra, "Contact: {contact}\r\n");
        let bytes = msg::response(status, &call.a_invite_head, &extra, body.as_bytes());
        if let Some(t) = call.a_invite {
            self.txns.respond(now, t, status, bytes);
        }
        // What only the setup needed is released: a held call keeps its two
        // dialogs (the budget is 4 KiB per held dialog).
        call.a_invite_head = Box::default();
        call.best_response = None;
        release_branches(call);
    }

    /// Passes an SDP through the relay: an offer from `from` (leg `from`'s
    /// tag as the relay's from-tag), or an answer to the other side's offer.
    /// No SDP, or an answer in a call without media: empty body.
    fn rewrite(
        &mut self,
        now: Instant,
        id: u64,
        from: Side,
        msg: &Message<'_>,
        offer: bool,
    ) -> Result<String, ()> {
        let Some(sdp) = msg.sdp_body().and_then(|b| std::str::from_utf8(b).ok()) else {
            return Ok(String::new());
        };
        let call = self.calls.get_mut(&id).ok_or(())?;
        if !offer && !call.media {
            return Ok(String::new());
        }
        let (offerer, answerer) = if offer {
            (from, from.other())
        } else {
            (from.other(), from)
        };
        let (from_tag, to_tag) = relay_tags(call, offerer, answerer);
        let call_id = &call.a.call_id;
        let flags = SessionFlags::default();
        let result = if offer {
            self.media.offer(
                now,
                &Offer {
                    call_id,
                    from_tag,
                    sdp,
                    flags,
                },
            )
        } else {
            self.media.answer(
                now,
                &Answer {
                    call_id,
                    from_tag,
                    to_tag,
                    sdp,
                    flags,
                },
            )
        };
        match result {
            Ok(s) => {
                call.media = true;
                Ok(s)
            }
            Err(e) => {
                tracing::info!(error = %e, offer, "relay refused the SDP");
                Err(())
            }
        }
    }

    /// CANCELs every live branch except `keep`.
    fn cancel_branches(&mut self, now: Instant, id: u64, keep: Option<usize>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let mut out = Vec::new();
        for (i, b) in call.branches.iter_mut().enumerate() {
            if Some(i) == keep || b.done || b.cancelled {
                continue;
            }
            b.cancelled = true;
            //= https://www.rfc-editor.org/rfc/rfc3261#section-9.1
            //# If no provisional response has been received, the CANCEL request
            //# MUST NOT be sent; rather, the client MUST wait for the arrival of a
            //# provisional response before sending the request.
            if b.provisional {
                out.push(cancel_request(&call.b, b));
            }
        }
        for (peer, bytes) in out {
            let _ = self.send_own(now, id, peer, Method::Cancel, bytes);
        }
    }

    fn send_own(
        &mut self,
        now: Instant,
        id: u64,
        peer: Peer,
        method: Method<'_>,
        bytes: (String, Vec<u8>),
    ) -> Option<TxnId> {
        let (branch, bytes) = bytes;
        let t = self.txns.send_request(now, peer, method, &branch, bytes);
        self.client.insert(t, ClientRole::Own { call: id });
        if let Some(c) = self.calls.get_mut(&id) {
            c.pending_client += 1;
        }
        Some(t)
    }

    fn send_own_with_branch(
        &mut self,
        now: Instant,
        id: u64,
        req: (Peer, String, Vec<u8>),
    ) -> Option<TxnId> {
        let (peer, branch, bytes) = req;
        let method = if bytes.starts_with(b"BYE") {
            Method::Bye
        } else {
            Method::Other("")
        };
        self.send_own(now, id, peer, method, (branch, bytes))
    }

    /// Ends a call that was never answered: the final response to A, media
    /// deleted, a CDR.
    fn end_unanswered(&mut self, now: Instant, id: u64, code: u16, response: Option<Vec<u8>>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let code = if code == 0 { 500 } else { code };
        let bytes = response.unwrap_or_else(|| msg::response(code, &call.a_invite_head, "", b""));
        if let Some(t) = call.a_invite {
            self.txns.respond(now, t, code, bytes);
        }
        call.status = code;
        if call.cause.is_none() {
            call.cause = Some(match code {
                404 | 480 => Cause::NoRoute,
                408 => Cause::Timeout,
                487 => Cause::Cancelled,
                _ => Cause::Rejected,
            });
        }
        self.finish(now, id);
    }

    /// Marks the call ended, deletes its media, emits the CDR; the call is
    /// forgotten once its last transaction ends.
    fn finish(&mut self, now: Instant, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.phase == Phase::Ended {
            return;
        }
        call.phase = Phase::Ended;
        let media = if call.media {
            call.media = false;
            let cid = call.a.call_id.clone();
            self.media.delete(now, &cid).ok()
        } else {
            None
        };
        let call = &self.calls[&id];
        let record = CallRecord {
            call_id: call.a.call_id.to_string(),
            b_call_id: call.b.call_id.to_string(),
            from: call.from_uri.to_string(),
            to: call.to_uri.to_string(),
            start: call.started,
            answer: call.answered,
            end: now,
            status: call.status,
            cause: call.cause.unwrap_or(Cause::Rejected),
            media,
            domain: call.domain.to_string(),
            unix_ms: (call.started_unix_ms, call.answered_unix_ms, self.unix_ms),
        };
        self.events.push_back(CallEvent::Ended(Box::new(record)));
        self.maybe_forget(id);
    }

    fn maybe_forget(&mut self, id: u64) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let a_gone = call.a_invite.is_none_or(|t| self.txns.state(t).is_none());
        if call.phase == Phase::Ended && call.pending_client == 0 && a_gone {
            let call = self.calls.remove(&id).expect("checked above");
            self.by_call_id.remove(&call.a.call_id);
            self.by_call_id.remove(&call.b.call_id);
        }
    }

    fn on_ack(&mut self, now: Instant, msg: &Message<'_>) {
        let Some(&(id, side)) = msg.call_id().and_then(|c| self.by_call_id.get(c)) else {
            return;
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if side == Side::A
            && let Some(t) = call.a_invite
        {
            self.txns.ack_received(now, t);
        }
        // ACKs of re-INVITE 2xx were sent by us to the other side already.
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        peer: Peer,
        msg: &Message<'_>,
        txn: TxnId,
        invite: Option<TxnId>,
    ) {
        let Some(invite) = invite else {
            return self.reply(now, txn, msg, &peer, 481, "");
        };
        self.reply(now, txn, msg, &peer, 200, "");
        let Some(&(id, _)) = msg.call_id().and_then(|c| self.by_call_id.get(c)) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.a_invite != Some(invite) || call.phase != Phase::Proceeding {
            return;
        }
        //= https://www.rfc-editor.org/rfc/rfc3261#section-9.2
        //# the UAS [...] SHOULD then respond to the INVITE with a 487 (Request
        //# Terminated).
        call.cause = Some(Cause::Cancelled);
        self.cancel_branches(now, id, None);
        self.end_unanswered(now, id, 487, None);
    }

    /// A request inside a dialog (To tag present).
    fn in_dialog(&mut self, now: Instant, peer: Peer, msg: &Message<'_>, txn: TxnId) {
        let Some(method) = msg.method() else { return };
        let Some(&(id, side)) = msg.call_id().and_then(|c| self.by_call_id.get(c)) else {
            return self.reply(now, txn, msg, &peer, 481, "");
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return self.reply(now, txn, msg, &peer, 481, "");
        };
        let to_tag = msg.to().and_then(|t| t.tag()).unwrap_or("");
        let dialog = match side {
            Side::A => &call.a,
            Side::B => &call.b,
        };
        if to_tag != &*dialog.local_tag || call.phase == Phase::Ended {
            return self.reply(now, txn, msg, &peer, 481, "");
        }
        if method == Method::Bye {
            self.reply(now, txn, msg, &peer, 200, "");
            let call = self.calls.get_mut(&id).expect("checked above");
            call.cause = Some(if side == Side::A {
                Cause::CallerBye
            } else {
                Cause::CalleeBye
            });
            if call.phase == Phase::Proceeding {
                // BYE in an early dialog: treat as the end of the attempt.
                self.cancel_branches(now, id, None);
                return self.end_unanswered(now, id, 487, None);
            }
            let other = match side.other() {
                Side::A => &self.calls[&id].a,
                Side::B => &self.calls[&id].b,
            };
            let seq = other.local_cseq + 1;
            let req = self.dialog_request(other, Method::Bye, seq, "", "");
            let call = self.calls.get_mut(&id).expect("checked above");
            match side.other() {
                Side::A => call.a.local_cseq = seq,
                Side::B => call.b.local_cseq = seq,
            }
            let _ = self.send_own_with_branch(now, id, req);
            self.finish(now, id);
            return;
        }
        // Forward the request to the other side.
        let offer = msg.sdp_body().is_some();
        let body = match if offer {
            self.rewrite(now, id, side, msg, true)
        } else {
            Ok(String::new())
        } {
            Ok(b) => b,
            Err(()) => return self.reply(now, txn, msg, &peer, 488, ""),
        };
        let call = self.calls.get(&id).expect("checked above");
        let to = side.other();
        let other = match to {
            Side::A => &call.a,
            Side::B => &call.b,
        };
        if other.peer.is_none() {
            return self.reply(now, txn, msg, &peer, 481, "");
        }
        let seq = if method == Method::Ack {
            other.local_cseq
        } else {
            other.local_cseq + 1
        };
        let mut extra = String::new();
        msg::pass_headers(&mut extra, msg);
        if let Some(rack) = msg.header("RAck") {
            // RAck: rseq cseq method; the CSeq is the other side's INVITE.
            let mut it = rack.split_whitespace();
            if let (Some(rseq), Some(_), Some(m)) = (it.next(), it.next(), it.next()) {
                let _ = write!(extra, "RAck: {rseq} {} {m}\r\n", call.b_invite_cseq);
            }
        }
        let req = self.dialog_request(other, method, seq, &extra, &body);
        let call = self.calls.get_mut(&id).expect("checked above");
        match to {
            Side::A => call.a.local_cseq = seq,
            Side::B => call.b.local_cseq = seq,
        }
        let head: Box<str> = msg::response_head(msg, &peer, None).into();
        let (to_peer, branch, bytes) = req;
        let t = self.txns.send_request(now, to_peer, method, &branch, bytes);
        call.pending_client += 1;
        self.client.insert(
            t,
            ClientRole::Forward {
                call: id,
                to,
                server: txn,
                offer,
            },
        );
        self.server.insert(txn, ServerRole::Forwarded { head });
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one response, its routing context"
    )]
    fn on_forward_response(
        &mut self,
        now: Instant,
        id: u64,
        to: Side,
        server: TxnId,
        offer: bool,
        msg: &Message<'_>,
        status: u16,
    ) {
        if status == 100 {
            return;
        }
        let body = if msg.sdp_body().is_some() {
            let r = if offer {
                self.rewrite(now, id, to, msg, false)
            } else {
                self.rewrite(now, id, to, msg, true)
            };
            r.unwrap_or_default()
        } else {
            String::new()
        };
        let Some(ServerRole::Forwarded { head }) = self.server.get(&server) else {
            return;
        };
        let mut extra = String::new();
        msg::pass_headers(&mut extra, msg);
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if msg.cseq().map(|c| c.method) == Some(Method::Invite) {
            let from_side = match to.other() {
                Side::A => call.a.peer,
                Side::B => call.b.peer,
            };
            let _ = write!(extra, "Contact: {}\r\n", self.contact_for(from_side));
        }
        let bytes = msg::response(status, head, &extra, body.as_bytes());
        self.txns.respond(now, server, status, bytes);
        if status >= 200 {
            self.server.remove(&server);
            // A refresh (re-INVITE or UPDATE) succeeded: restart the session timer.
            if (200..300).contains(&status)
                && matches!(
                    msg.cseq().map(|c| c.method),
                    Some(Method::Invite | Method::Update)
                )
            {
                self.refresh_session(now, id, msg);
            }
            // The 2xx to a re-INVITE: ACK it ourselves (end-to-end ACK absorbed).
            if (200..300).contains(&status) && msg.cseq().map(|c| c.method) == Some(Method::Invite)
            {
                let call = &self.calls[&id];
                let d = match to {
                    Side::A => &call.a,
                    Side::B => &call.b,
                };
                let (peer, _, ack) = self.dialog_request(d, Method::Ack, d.local_cseq, "", "");
                self.transmits.push_back(Transmit { peer, bytes: ack });
            }
        }
    }

    /// Builds a request within dialog `d`: (destination, branch, bytes).
    fn dialog_request(
        &self,
        d: &Dialog,
        method: Method<'_>,
        seq: u32,
        extra: &str,
        body: &str,
    ) -> (Peer, String, Vec<u8>) {
        let peer = d.peer.unwrap_or(Peer::udp(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            5060,
        ))));
        // Route set first hop (loose routing), when it names an IP.
        let peer = d
            .route_set
            .first()
            .and_then(|r| Uri::parse(msg::uri_of(r)).ok())
            .and_then(|u| msg::uri_target(&u))
            .filter(|(addr, _)| *addr != peer.addr)
            .map_or(peer, |(addr, transport)| Peer {
                transport,
                addr,
                conn: None,
            });
        let branch = self.branch_for(method);
        let via = self.via(peer.transport, &branch);
        let mut out = String::with_capacity(500 + body.len());
        let _ = write!(
            out,
            "{} {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {}\r\n",
            method.as_str(),
            d.remote_target,
            d.local,
            d.remote,
            d.call_id,
            method.as_str(),
        );
        for r in &d.route_set {
            let _ = write!(out, "Route: {r}\r\n");
        }
        if matches!(method, Method::Invite | Method::Update) {
            let _ = write!(out, "Contact: {}\r\n", self.contact(peer.transport));
        }
        out.push_str(extra);
        if !body.is_empty() && !extra.contains("Content-Type") {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n{body}", body.len());
        (peer, branch, out.into_bytes())
    }

    fn branch_for(&self, _method: Method<'_>) -> String {
        // Branches must be unique; the counter only grows.
        let n = self.branch_seq.get();
        self.branch_seq.set(n + 1);
        format!("z9hG4bK{}b{n}", self.config.instance)
    }

    fn via(&self, transport: Transport, branch: &str) -> String {
        let addr = self
            .config
            .local
            .for_transport(transport)
            .or(self.config.local.udp)
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 5060)));
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            transport.as_str(),
            msg::hostport(addr)
        )
    }

    fn contact(&self, transport: Transport) -> String {
        let addr = self
            .config
            .local
            .for_transport(transport)
            .or(self.config.local.udp)
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 5060)));
        match transport {
            Transport::Udp => format!("<sip:voxplane@{}>", msg::hostport(addr)),
            t => format!(
                "<sip:voxplane@{};transport={}>",
                msg::hostport(addr),
                t.as_str().to_ascii_lowercase()
            ),
        }
    }

    fn contact_for(&self, peer: Option<Peer>) -> String {
        self.contact(peer.map_or(Transport::Udp, |p| p.transport))
    }

    fn new_branch(&mut self) -> String {
        self.next_id += 1;
        format!("z9hG4bK{}{}", self.config.instance, self.next_id)
    }

    fn new_token(&mut self) -> String {
        self.next_id += 1;
        format!("{}{:x}", self.config.instance, self.next_id)
    }

    /// Ends a confirmed call from the middle: BYE on both legs.
    fn bye_both(&mut self, now: Instant, id: u64, cause: Cause) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let reqs = [
            self.dialog_request(&call.a, Method::Bye, call.a.local_cseq + 1, "", ""),
            self.dialog_request(&call.b, Method::Bye, call.b.local_cseq + 1, "", ""),
        ];
        let call = self.calls.get_mut(&id).expect("checked above");
        call.a.local_cseq += 1;
        call.b.local_cseq += 1;
        call.cause = Some(cause);
        for r in reqs {
            let _ = self.send_own_with_branch(now, id, r);
        }
        self.finish(now, id);
    }

    /// Starts or refreshes the session timer from a 2xx's Session-Expires.
    //= https://www.rfc-editor.org/rfc/rfc4028#section-10
    //# If the side not performing refreshes does not receive a session
    //# refresh request before the session expiration, it SHOULD send a BYE
    //# to terminate the session
    fn refresh_session(&mut self, now: Instant, id: u64, msg: &Message<'_>) {
        let Some(interval) = session_expires(msg) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&id) {
            let at = now + Duration::from_secs(u64::from(interval));
            call.session_deadline = Some(at);
            self.session_timers.push(std::cmp::Reverse((at, id)));
        }
    }

    fn fire_session_timers(&mut self, now: Instant) {
        while let Some(&std::cmp::Reverse((at, id))) = self.session_timers.peek() {
            if at > now {
                break;
            }
            self.session_timers.pop();
            let live = self
                .calls
                .get(&id)
                .is_some_and(|c| c.session_deadline == Some(at) && c.phase == Phase::Confirmed);
            if live {
                self.bye_both(now, id, Cause::SessionExpired);
            }
        }
    }

    fn drain_txn_events(&mut self, now: Instant) {
        while let Some(e) = self.txns.poll_event() {
            match e {
                TxnEvent::Timeout(t) | TxnEvent::TransportError(t) => {
                    if let Some(ClientRole::BranchInvite { call, branch, .. }) =
                        self.client.get(&t).copied()
                        && let Some(c) = self.calls.get_mut(&call)
                    {
                        if let Some(b) = c.branches.get_mut(branch) {
                            b.done = true;
                        }
                        if c.phase == Phase::Proceeding && c.branches.iter().all(|b| b.done) {
                            let code = if c.best_status == 0 {
                                408
                            } else {
                                c.best_status
                            };
                            let resp = c.best_response.take().map(Vec::from);
                            self.end_unanswered(now, call, code, resp);
                        }
                    } else if let Some(ClientRole::Forward { server, .. }) =
                        self.client.get(&t).copied()
                        && let Some(ServerRole::Forwarded { head }) = self.server.remove(&server)
                    {
                        let bytes = msg::response(408, &head, "", b"");
                        self.txns.respond(now, server, 408, bytes);
                    }
                }
                TxnEvent::NoAck(t) => {
                    let found = self
                        .calls
                        .iter()
                        .find(|(_, c)| c.a_invite == Some(t) && c.phase == Phase::Confirmed)
                        .map(|(id, _)| *id);
                    if let Some(id) = found {
                        //= https://www.rfc-editor.org/rfc/rfc3261#section-13.3.1.4
                        //# If the server retransmits the 2xx response for 64*T1 seconds
                        //# without receiving an ACK, the dialog is confirmed, but the
                        //# session SHOULD be terminated. This is accomplished with a BYE
                        self.bye_both(now, id, Cause::NoAck);
                    }
                }
                TxnEvent::Terminated(t) => {
                    self.server.remove(&t);
                    let call = match self.client.remove(&t) {
                        Some(
                            ClientRole::BranchInvite { call, .. }
                            | ClientRole::Forward { call, .. }
                            | ClientRole::Own { call },
                        ) => {
                            if let Some(c) = self.calls.get_mut(&call) {
                                c.pending_client = c.pending_client.saturating_sub(1);
                            }
                            Some(call)
                        }
                        None => self
                            .calls
                            .iter()
                            .find(|(_, c)| c.a_invite == Some(t))
                            .map(|(id, _)| *id),
                    };
                    if let Some(id) = call {
                        if let Some(c) = self.calls.get_mut(&id)
                            && c.a_invite == Some(t)
                        {
                            c.a_invite = None;
                        }
                        self.maybe_forget(id);
                    }
                }
            }
        }
    }
}

/// Keeps only the payload types of the first audio section whose encoding
/// name is in `allowed` (static types by RFC 3551 number, dynamic ones by
/// their rtpmap); telephone-event always stays. `None` if no codec is left.
pub fn filter_codecs(sdp: &str, allowed: &[String]) -> Option<String> {
    const STATIC: &[(&str, &str)] = &[
        ("0", "PCMU"),
        ("3", "GSM"),
        ("4", "G723"),
        ("8", "PCMA"),
        ("9", "G722"),
        ("18", "G729"),
    ];
    let rtpmap = |pt: &str| {
        sdp.lines().find_map(|l| {
            let rest = l.strip_prefix("a=rtpmap:")?;
            let (p, enc) = rest.split_once(' ')?;
            (p == pt).then(|| enc.split('/').next().unwrap_or("").to_owned())
        })
    };
    let name = |pt: &str| {
        rtpmap(pt).or_else(|| {
            STATIC
                .iter()
                .find(|(p, _)| *p == pt)
                .map(|(_, n)| (*n).to_owned())
        })
    };
    let mut out = String::with_capacity(sdp.len());
    let mut removed: Vec<String> = Vec::new();
    let mut in_audio = false;
    let mut audio_done = false;
    let mut kept_codec = true;
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end();
        if let Some(m) = text.strip_prefix("m=") {
            in_audio = !audio_done && m.starts_with("audio ");
            if in_audio {
                audio_done = true;
                let mut parts = m.split(' ');
                let head: Vec<&str> = parts.by_ref().take(3).collect();
                let mut keep = Vec::new();
                kept_codec = false;
                for pt in parts {
                    let n = name(pt).unwrap_or_default();
                    if n.eq_ignore_ascii_case("telephone-event") {
                        keep.push(pt);
                    } else if allowed.iter().any(|a| a.eq_ignore_ascii_case(&n)) {
                        keep.push(pt);
                        kept_codec = true;
                    } else {
                        removed.push(pt.to_owned());
                    }
                }
                let _ = write!(out, "m={} {}\r\n", head.join(" "), keep.join(" "));
                continue;
            }
        }
        if in_audio
            && let Some(rest) = text
                .strip_prefix("a=rtpmap:")
                .or_else(|| text.strip_prefix("a=fmtp:"))
            && removed
                .iter()
                .any(|pt| rest.split(' ').next() == Some(pt.as_str()))
        {
            continue;
        }
        out.push_str(line);
    }
    kept_codec.then_some(out)
}

/// Frees the forks of an answered call once none of them needs a CANCEL
/// any more (late final responses of forks find no entry and are only
/// ACKed by their transactions).
fn release_branches(call: &mut Call) {
    if call.phase != Phase::Proceeding
        && call
            .branches
            .iter()
            .all(|b| b.done || (b.cancelled && b.provisional))
    {
        call.branches = Vec::new();
    }
}

/// Our smallest acceptable session interval (RFC 4028 §4: at least 90 s).
pub const MIN_SE: u32 = 90;

/// The delta-seconds of a Session-Expires header.
fn session_expires(msg: &Message<'_>) -> Option<u32> {
    msg.header("Session-Expires")
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse().ok())
}

fn relay_tags(call: &Call, from: Side, to: Side) -> (&str, &str) {
    let tag = |s: Side| match s {
        Side::A => &*call.a.remote_tag,
        Side::B => &*call.a.local_tag,
    };
    (tag(from), tag(to))
}

/// Takes the remote tag, target and route set of a response that creates
/// (or updates) the B dialog.
fn adopt_remote(d: &mut Dialog, msg: &Message<'_>, tag: &str, peer: Peer) {
    if let Some(to) = msg.header("To") {
        d.remote = to.into();
    }
    d.remote_tag = tag.into();
    if let Some(c) = msg.contact() {
        d.remote_target = c.uri.as_str().into();
    }
    //= https://www.rfc-editor.org/rfc/rfc3261#section-12.1.2
    //# The route set MUST be set to the list of URIs in the Record-Route
    //# header field from the response, taken in reverse order
    let mut routes: Vec<Box<str>> = msg.header_values("Record-Route").map(Into::into).collect();
    routes.reverse();
    d.route_set = routes;
    d.peer = Some(peer);
}

fn cancel_request(b: &Dialog, branch: &Branch) -> (Peer, (String, Vec<u8>)) {
    //= https://www.rfc-editor.org/rfc/rfc3261#section-9.1
    //# The Request-URI, Call-ID, To, the numeric part of CSeq, and From header
    //# fields in the CANCEL request MUST be identical to those in the
    //# request being cancelled, including tags. A CANCEL constructed by a
    //# client MUST have only a single Via header field value matching the
    //# top Via value in the request being cancelled.
    let mut out = String::with_capacity(400);
    let _ = write!(
        out,
        "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: <{}>\r\nCall-ID: {}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        branch.request_uri,
        branch.via,
        b.local,
        msg::uri_of(&b.remote),
        b.call_id,
    );
    let br = branch
        .via
        .split(';')
        .find_map(|p| p.trim().strip_prefix("branch="))
        .unwrap_or("")
        .to_owned();
    (branch.peer, (br, out.into_bytes()))
}

#[cfg(test)]
mod tests {
    //! Whole calls through the core with the real (sans-IO) relay shard as
    //! the media control, on virtual time.

    use std::net::SocketAddr;

    use dataplane::relay::{Relay, RelayConfig};
    use wire::sdp::Direction;

    use super::*;

    const ALICE: &str = "198.18.0.10:5060";

    #[expect(
        clippy::disallowed_methods,
        reason = "the one real instant virtual time starts from"
    )]
    fn epoch() -> Instant {
        Instant::now()
    }

    struct World {
        b2bua: B2bua<Relay>,
        now: Instant,
        ended: Vec<CallRecord>,
        _store: tempfile::TempDir,
    }

    fn sdp(ip: &str, port: u16, dir: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na={dir}\r\n"
        )
    }

    impl World {
        fn new() -> World {
            let relay = Relay::new(RelayConfig {
                media_v4: Some("192.0.2.1".parse().unwrap()),
                ports: 30000..=30099,
                ..RelayConfig::default()
            })
            .unwrap();
            let mut config = Config::new("t".into(), [7; 32]);
            config.local.udp = Some("192.0.2.1:5060".parse().unwrap());
            // Alice's address is a trusted trunk (no digest); everyone else
            // authenticates. Provisioning in a real (temporary) SBUS store.
            let dir = tempfile::tempdir().unwrap();
            let policy = crate::policy::demo_policy(dir.path(), "198.18.0.10").unwrap();
            let now = epoch();
            let mut w = World {
                b2bua: B2bua::new(config, relay, Box::new(policy), now),
                now,
                ended: Vec::new(),
                _store: dir,
            };
            for (i, contact) in ["198.18.0.20:5060", "198.18.0.21:5060"].iter().enumerate() {
                let reg = |cseq: u32, auth: &str| {
                    format!(
                        "REGISTER sip:voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP {contact};branch=z9hG4bKr{i}{cseq}\r\n\
                         From: <sip:bob@voxplane.local>;tag=r{i}\r\nTo: <sip:bob@voxplane.local>\r\n\
                         Call-ID: reg{i}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:bob@{contact}>\r\nExpires: 600\r\n{auth}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                    )
                };
                let out = w.send(contact, &reg(1, ""));
                let challenge = Message::parse(&out[0].bytes).unwrap();
                assert_eq!(challenge.status(), Some(401));
                let answer = crate::auth::tests::answer(
                    challenge.header("WWW-Authenticate").unwrap(),
                    "bob",
                    "bpw",
                    "REGISTER",
                    "sip:voxplane.local",
                    1,
                );
                let out = w.send(contact, &reg(2, &format!("Authorization: {answer}\r\n")));
                assert_eq!(status(&out[0].bytes), 200);
            }
            w
        }

        fn send(&mut self, from: &str, msg: &str) -> Vec<Transmit> {
            let peer = Peer::udp(from.parse().unwrap());
            self.b2bua.handle_datagram(self.now, peer, msg.as_bytes());
            self.collect()
        }

        fn collect(&mut self) -> Vec<Transmit> {
            while let Some(CallEvent::Ended(r)) = self.b2bua.poll_event() {
                self.ended.push(*r);
            }
            let out: Vec<Transmit> = std::iter::from_fn(|| self.b2bua.poll_transmit()).collect();
            while let Some(CallEvent::Ended(r)) = self.b2bua.poll_event() {
                self.ended.push(*r);
            }
            out
        }

        fn advance(&mut self, d: Duration) -> Vec<Transmit> {
            let until = self.now + d;
            let mut out = Vec::new();
            while let Some(at) = self.b2bua.poll_timeout() {
                if at > until {
                    break;
                }
                self.now = at;
                self.b2bua.handle_timeout(at);
                out.extend(self.collect());
            }
            self.now = until;
            out
        }

        /// Alice's INVITE to bob; returns what we sent.
        fn invite(&mut self, body: &str, max_forwards: u8) -> Vec<Transmit> {
            let inv = format!(
                "INVITE sip:bob@voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKa1;rport\r\n\
                 From: \"Alice\" <sip:alice@voxplane.local>;tag=at\r\nTo: <sip:bob@voxplane.local>\r\n\
                 Call-ID: a-call\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{ALICE}>\r\nMax-Forwards: {max_forwards}\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            self.send(ALICE, &inv)
        }
    }

    fn status(b: &[u8]) -> u16 {
        Message::parse(b).unwrap().status().unwrap_or(0)
    }

    fn to(t: &Transmit) -> SocketAddr {
        t.peer.addr
    }

    /// A response from a callee to one of our requests (`req`).
    fn answer(req: &[u8], code: u16, to_tag: &str, body: &str) -> String {
        let m = Message::parse(req).unwrap();
        let mut out = format!("SIP/2.0 {code} X\r\n");
        for v in m.find("Via") {
            out.push_str(&format!("Via: {}\r\n", v.value));
        }
        out.push_str(&format!(
            "From: {}\r\nTo: {};tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:bob@{}>\r\n",
            m.header("From").unwrap(),
            m.header("To").unwrap(),
            m.call_id().unwrap(),
            m.header("CSeq").unwrap(),
            m.request_uri().unwrap().host.unwrap(),
        ));
        if body.is_empty() {
            out.push_str("Content-Length: 0\r\n\r\n");
        } else {
            out.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        out
    }

    fn body(t: &Transmit) -> String {
        String::from_utf8(Message::parse(&t.bytes).unwrap().body().to_vec()).unwrap()
    }

    fn method(t: &Transmit) -> String {
        Message::parse(&t.bytes)
            .unwrap()
            .method()
            .unwrap()
            .as_str()
            .to_owned()
    }

    #[test]
    fn parallel_ringing_answer_cancels_the_other_fork_and_anchors_media() {
        let mut w = World::new();
        let out = w.invite(&sdp("198.18.0.10", 4000, "sendrecv"), 70);
        assert_eq!(status(&out[0].bytes), 100);
        let invites: Vec<&Transmit> = out
            .iter()
            .filter(|t| t.bytes.starts_with(b"INVITE"))
            .collect();
        assert_eq!(invites.len(), 2, "both contacts ring");
        let offer = body(invites[0]);
        assert!(offer.contains("c=IN IP4 192.0.2.1"), "{offer}");
        assert!(!offer.contains("4000"), "the relay's port, not Alice's");
        let m = Message::parse(&invites[0].bytes).unwrap();
        assert_eq!(m.max_forwards(), Some(69));
        assert_ne!(m.call_id(), Some("a-call"), "the B leg has its own Call-ID");
        // Both ring; the second answers.
        let r1 = w.send(
            "198.18.0.20:5060",
            &answer(&invites[0].bytes, 180, "b0", ""),
        );
        assert_eq!(status(&r1[0].bytes), 180);
        w.send(
            "198.18.0.21:5060",
            &answer(&invites[1].bytes, 180, "b1", ""),
        );
        let ok = answer(
            &invites[1].bytes,
            200,
            "b1",
            &sdp("198.18.0.21", 5000, "sendrecv"),
        );
        let out = w.send("198.18.0.21:5060", &ok);
        let ack = out
            .iter()
            .find(|t| method_is(t, "ACK"))
            .expect("ACK to the answering fork");
        assert_eq!(to(ack), "198.18.0.21:5060".parse().unwrap());
        let cancel = out
            .iter()
            .find(|t| method_is(t, "CANCEL"))
            .expect("CANCEL to the other fork");
        assert_eq!(to(cancel), "198.18.0.20:5060".parse().unwrap());
        let to_alice = out
            .iter()
            .find(|t| status(&t.bytes) == 200)
            .expect("200 to Alice");
        assert_eq!(to(to_alice), ALICE.parse().unwrap());
        let ans = body(to_alice);
        assert!(
            ans.contains("c=IN IP4 192.0.2.1") && !ans.contains("5000"),
            "{ans}"
        );
        // The relay holds one session with both legs' addresses.
        let stats = w.b2bua.media().query(w.now, "a-call").unwrap();
        assert_eq!(
            stats.legs[0].remote,
            Some("198.18.0.10:4000".parse().unwrap())
        );
        assert_eq!(
            stats.legs[1].remote,
            Some("198.18.0.21:5000".parse().unwrap())
        );
        // The cancelled fork answers 200 (CANCEL) and 487 (INVITE): our
        // transaction ACKs the 487.
        w.send("198.18.0.20:5060", &answer(&cancel.bytes, 200, "b0", ""));
        let out = w.send(
            "198.18.0.20:5060",
            &answer(&invites[0].bytes, 487, "b0", ""),
        );
        assert!(out.iter().any(|t| method_is(t, "ACK")));
        assert_eq!(w.b2bua.dialogs(), 1);
    }

    fn method_is(t: &Transmit, m: &str) -> bool {
        t.bytes.starts_with(m.as_bytes())
    }

    /// Sets up an answered call; returns (bob's INVITE, our 200 to Alice).
    fn answered(w: &mut World) -> (Transmit, Transmit) {
        let out = w.invite(&sdp("198.18.0.10", 4000, "sendrecv"), 70);
        let inv = out.into_iter().find(|t| method_is(t, "INVITE")).unwrap();
        let out = w.send(
            "198.18.0.20:5060",
            &answer(&inv.bytes, 200, "bt", &sdp("198.18.0.20", 5000, "sendrecv")),
        );
        let ok = out.into_iter().find(|t| status(&t.bytes) == 200).unwrap();
        // Alice's ACK.
        let ack = format!(
            "ACK sip:voxplane@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKa2\r\n\
             From: \"Alice\" <sip:alice@voxplane.local>;tag=at\r\nTo: {}\r\nCall-ID: a-call\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            Message::parse(&ok.bytes).unwrap().header("To").unwrap()
        );
        assert!(w.send(ALICE, &ack).is_empty());
        (inv, ok)
    }

    /// A request from Alice inside the call.
    fn from_alice(ok: &Transmit, method: &str, cseq: u32, body: &str) -> String {
        let to = Message::parse(&ok.bytes)
            .unwrap()
            .header("To")
            .unwrap()
            .to_owned();
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:voxplane@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKa{cseq}{method}\r\n\
             From: \"Alice\" <sip:alice@voxplane.local>;tag=at\r\nTo: {to}\r\nCall-ID: a-call\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn the_2xx_is_retransmitted_until_the_ack() {
        let mut w = World::new();
        let out = w.invite(&sdp("198.18.0.10", 4000, "sendrecv"), 70);
        let inv = out.into_iter().find(|t| method_is(t, "INVITE")).unwrap();
        let ok = answer(&inv.bytes, 200, "bt", &sdp("198.18.0.20", 5000, "sendrecv"));
        w.send("198.18.0.20:5060", &ok);
        let again = w.advance(Duration::from_millis(1600));
        assert_eq!(again.iter().filter(|t| status(&t.bytes) == 200).count(), 2);
        // B's retransmitted 2xx gets our ACK again.
        let out = w.send("198.18.0.20:5060", &ok);
        assert!(out.iter().any(|t| method_is(t, "ACK")));
        // No ACK from Alice for 64*T1: BYE both legs, CDR says no_ack.
        let out = w.advance(Duration::from_secs(40));
        let mut byes: Vec<SocketAddr> =
            out.iter().filter(|t| method_is(t, "BYE")).map(to).collect();
        byes.sort();
        byes.dedup();
        assert_eq!(
            byes,
            vec![ALICE.parse().unwrap(), "198.18.0.20:5060".parse().unwrap()]
        );
        assert_eq!(w.ended.len(), 1);
        assert_eq!(w.ended[0].cause, Cause::NoAck);
    }

    #[test]
    fn reinvite_hold_reaches_the_relay_and_bye_ends_with_stats() {
        let mut w = World::new();
        let (_, ok) = answered(&mut w);
        let hold = from_alice(&ok, "INVITE", 2, &sdp("198.18.0.10", 4000, "sendonly"));
        let out = w.send(ALICE, &hold);
        let reinv = out
            .iter()
            .find(|t| method_is(t, "INVITE"))
            .expect("re-INVITE to bob");
        assert_eq!(to(reinv), "198.18.0.20:5060".parse().unwrap());
        let m = Message::parse(&reinv.bytes).unwrap();
        assert_eq!(m.cseq().unwrap().seq, 2);
        assert_eq!(m.to().unwrap().tag(), Some("bt"));
        assert!(body(reinv).contains("a=sendonly"));
        let out = w.send(
            "198.18.0.20:5060",
            &answer(
                &reinv.bytes,
                200,
                "bt",
                &sdp("198.18.0.20", 5000, "recvonly"),
            ),
        );
        assert!(out.iter().any(|t| method_is(t, "ACK")), "we ACK bob's 2xx");
        let to_alice = out.iter().find(|t| status(&t.bytes) == 200).unwrap();
        assert!(body(to_alice).contains("a=recvonly"));
        let stats = w.b2bua.media().query(w.now, "a-call").unwrap();
        assert_eq!(stats.legs[0].direction, Direction::SendOnly);
        // Alice hangs up.
        let out = w.send(ALICE, &from_alice(&ok, "BYE", 3, ""));
        assert!(out.iter().any(|t| status(&t.bytes) == 200));
        let bye = out
            .iter()
            .find(|t| method_is(t, "BYE"))
            .expect("BYE to bob");
        assert_eq!(Message::parse(&bye.bytes).unwrap().cseq().unwrap().seq, 3);
        assert_eq!(w.ended.len(), 1);
        let cdr = &w.ended[0];
        assert_eq!((cdr.status, cdr.cause), (200, Cause::CallerBye));
        assert!(cdr.media.is_some(), "the relay's final stats");
        assert!(
            w.b2bua.media().query(w.now, "a-call").is_err(),
            "session deleted"
        );
        w.send("198.18.0.20:5060", &answer(&bye.bytes, 200, "bt", ""));
        w.advance(Duration::from_secs(40));
        assert_eq!(w.b2bua.calls(), 0, "forgotten once its transactions end");
    }

    #[test]
    fn cancel_before_answer_gets_487_and_cancels_the_ringing_forks() {
        let mut w = World::new();
        let out = w.invite(&sdp("198.18.0.10", 4000, "sendrecv"), 70);
        let invites: Vec<Transmit> = out.into_iter().filter(|t| method_is(t, "INVITE")).collect();
        w.send(
            "198.18.0.20:5060",
            &answer(&invites[0].bytes, 180, "b0", ""),
        );
        let cancel = "CANCEL sip:bob@voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKa1;rport\r\n\
             From: \"Alice\" <sip:alice@voxplane.local>;tag=at\r\nTo: <sip:bob@voxplane.local>\r\n\
             Call-ID: a-call\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let out = w.send(ALICE, cancel);
        let codes: Vec<u16> = out
            .iter()
            .map(|t| status(&t.bytes))
            .filter(|&c| c != 0)
            .collect();
        assert_eq!(codes, vec![200, 487]);
        // Only the fork that sent a provisional is cancelled now…
        assert_eq!(out.iter().filter(|t| method_is(t, "CANCEL")).count(), 1);
        // …the other when its first provisional arrives (RFC 3261 §9.1).
        let out = w.send(
            "198.18.0.21:5060",
            &answer(&invites[1].bytes, 180, "b1", ""),
        );
        assert!(out.iter().any(|t| method_is(t, "CANCEL")));
        assert!(
            !out.iter().any(|t| status(&t.bytes) == 180),
            "nothing more to Alice"
        );
        assert_eq!(w.ended[0].cause, Cause::Cancelled);
        assert!(w.b2bua.media().query(w.now, "a-call").is_err());
    }

    #[test]
    fn max_forwards_zero_is_483_and_unknown_user_404() {
        let mut w = World::new();
        let out = w.invite(&sdp("198.18.0.10", 4000, "sendrecv"), 0);
        assert_eq!(status(&out.last().unwrap().bytes), 483);
        let mut w = World::new();
        let body = sdp("198.18.0.10", 4000, "sendrecv");
        let inv = format!(
            "INVITE sip:nobody@voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKn\r\n\
             From: <sip:alice@voxplane.local>;tag=n\r\nTo: <sip:nobody@voxplane.local>\r\nCall-ID: n1\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = w.send(ALICE, &inv);
        assert_eq!(status(&out.last().unwrap().bytes), 404);
        assert_eq!(w.ended[0].cause, Cause::NoRoute);
    }

    fn with_header(msg: &str, header: &str) -> String {
        msg.replacen("\r\n", &format!("\r\n{header}\r\n"), 1)
    }

    #[test]
    fn session_interval_below_min_se_is_422() {
        let mut w = World::new();
        let body = sdp("198.18.0.10", 4000, "sendrecv");
        let req = format!(
            "INVITE sip:bob@voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKse\r\n\
             From: <sip:alice@voxplane.local>;tag=se\r\nTo: <sip:bob@voxplane.local>\r\nCall-ID: se1\r\n\
             CSeq: 1 INVITE\r\nSession-Expires: 60\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = w.send(ALICE, &req);
        let last = Message::parse(&out.last().unwrap().bytes).unwrap();
        assert_eq!(last.status(), Some(422));
        assert_eq!(last.header("Min-SE"), Some("90"));
        assert!(!out.iter().any(|t| method_is(t, "INVITE")), "not forwarded");
    }

    #[test]
    fn session_timer_byes_both_legs_unless_refreshed() {
        let mut w = World::new();
        let out = w.invite(&sdp("198.18.0.10", 4000, "sendrecv"), 70);
        let inv = out.into_iter().find(|t| method_is(t, "INVITE")).unwrap();
        let ok = with_header(
            &answer(&inv.bytes, 200, "bt", &sdp("198.18.0.20", 5000, "sendrecv")),
            "Session-Expires: 120;refresher=uac",
        );
        let out = w.send("198.18.0.20:5060", &ok);
        let to_alice = out
            .iter()
            .find(|t| status(&t.bytes) == 200)
            .unwrap()
            .clone();
        assert_eq!(
            Message::parse(&to_alice.bytes)
                .unwrap()
                .header("Session-Expires"),
            Some("120;refresher=uac"),
            "passed to the caller"
        );
        let ack = from_alice(&to_alice, "ACK", 1, "");
        w.send(ALICE, &ack);
        // Alice refreshes at 60 s with a re-INVITE; bob accepts with 120 s again.
        w.advance(Duration::from_secs(60));
        let out = w.send(
            ALICE,
            &with_header(
                &from_alice(
                    &to_alice,
                    "INVITE",
                    2,
                    &sdp("198.18.0.10", 4000, "sendrecv"),
                ),
                "Session-Expires: 120;refresher=uac",
            ),
        );
        let reinv = out.iter().find(|t| method_is(t, "INVITE")).unwrap();
        w.send(
            "198.18.0.20:5060",
            &with_header(
                &answer(
                    &reinv.bytes,
                    200,
                    "bt",
                    &sdp("198.18.0.20", 5000, "sendrecv"),
                ),
                "Session-Expires: 120;refresher=uac",
            ),
        );
        let out = w.advance(Duration::from_secs(100)); // 160 s: past the first expiry
        assert!(!out.iter().any(|t| method_is(t, "BYE")), "refreshed");
        assert!(w.ended.is_empty());
        let out = w.advance(Duration::from_secs(30)); // 190 s: 130 s after the refresh
        let byes: Vec<SocketAddr> = out.iter().filter(|t| method_is(t, "BYE")).map(to).collect();
        assert!(
            byes.contains(&ALICE.parse().unwrap())
                && byes.contains(&"198.18.0.20:5060".parse().unwrap())
        );
        assert_eq!(w.ended[0].cause, Cause::SessionExpired);
        assert!(w.b2bua.media().query(w.now, "a-call").is_err());
    }

    #[test]
    fn no_open_relay_and_digest_for_subscribers() {
        let mut w = World::new();
        // A stranger from a domain we do not serve: 403.
        let inv = "INVITE sip:bob@voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKx\r\n\
             From: <sip:x@example.com>;tag=x\r\nTo: <sip:bob@voxplane.local>\r\nCall-ID: x1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let out = w.send("192.0.2.99:5060", inv);
        assert_eq!(status(&out.last().unwrap().bytes), 403);
        // Alice from a phone (not the trunk address): 407, then authenticated.
        let phone = "198.18.0.30:5060";
        let body = sdp("198.18.0.30", 4000, "sendrecv");
        let invite = |cseq: u32, auth: &str| {
            format!(
                "INVITE sip:bob@voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKp{cseq}\r\n\
                 From: <sip:alice@voxplane.local>;tag=p\r\nTo: <sip:bob@voxplane.local>\r\nCall-ID: p1\r\n\
                 CSeq: {cseq} INVITE\r\n{auth}Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let out = w.send(phone, &invite(1, ""));
        let challenge = Message::parse(&out.last().unwrap().bytes).unwrap();
        assert_eq!(challenge.status(), Some(407));
        let ch = challenge.header("Proxy-Authenticate").unwrap();
        let wrong =
            crate::auth::tests::answer(ch, "alice", "nope", "INVITE", "sip:bob@voxplane.local", 1);
        let out = w.send(
            phone,
            &invite(2, &format!("Proxy-Authorization: {wrong}\r\n")),
        );
        assert_eq!(status(&out.last().unwrap().bytes), 403);
        let right =
            crate::auth::tests::answer(ch, "alice", "apw", "INVITE", "sip:bob@voxplane.local", 2);
        let out = w.send(
            phone,
            &invite(3, &format!("Proxy-Authorization: {right}\r\n")),
        );
        assert_eq!(
            out.iter().filter(|t| method_is(t, "INVITE")).count(),
            2,
            "both of bob's phones ring"
        );
        assert!(w.b2bua.counters().auth_failures >= 1);
    }

    #[test]
    fn trunk_codec_list_filters_the_offer() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                   m=audio 30000 RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:18 G729/8000\r\n\
                   a=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
        let out = filter_codecs(sdp, &["PCMA".into(), "G729".into()]).unwrap();
        assert!(out.contains("m=audio 30000 RTP/AVP 8 18 101\r\n"), "{out}");
        assert!(
            !out.contains("PCMU") && out.contains("a=fmtp:18") && out.contains("telephone-event")
        );
        assert_eq!(filter_codecs(sdp, &["OPUS".into()]), None);
    }

    #[test]
    fn options_gets_200_with_allow_and_accept() {
        let mut w = World::new();
        let out = w.send(
            ALICE,
            "OPTIONS sip:voxplane.local SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKo\r\n\
             From: <sip:alice@voxplane.local>;tag=o\r\nTo: <sip:voxplane.local>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        );
        let m = Message::parse(&out[0].bytes).unwrap();
        assert_eq!(m.status(), Some(200));
        assert!(m.header("Allow").unwrap().contains("INVITE"));
        assert_eq!(m.header("Accept"), Some("application/sdp"));
    }

    #[test]
    fn bad_sdp_is_488_and_in_dialog_request_for_unknown_call_is_481() {
        let mut w = World::new();
        let out = w.invite("this is not sdp", 70);
        assert_eq!(status(&out.last().unwrap().bytes), 488);
        assert_eq!(w.ended[0].cause, Cause::MediaError);
        let bye = "BYE sip:voxplane@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bKx\r\n\
             From: <sip:alice@voxplane.local>;tag=x\r\nTo: <sip:bob@voxplane.local>;tag=y\r\nCall-ID: nope\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(status(&w.send(ALICE, bye)[0].bytes), 481);
        assert!(w.send(ALICE, "garbage\r\n\r\n").is_empty());
        assert_eq!(w.b2bua.counters().malformed, 1);
    }

    #[test]
    fn callee_bye_and_failed_forks_pick_the_best_response() {
        let mut w = World::new();
        let out = w.invite(&sdp("198.18.0.10", 4000, "sendrecv"), 70);
        let invites: Vec<Transmit> = out.into_iter().filter(|t| method_is(t, "INVITE")).collect();
        w.send(
            "198.18.0.20:5060",
            &answer(&invites[0].bytes, 486, "b0", ""),
        );
        let out = w.send(
            "198.18.0.21:5060",
            &answer(&invites[1].bytes, 480, "b1", ""),
        );
        let final_ = out.iter().find(|t| status(&t.bytes) >= 400).unwrap();
        assert_eq!(status(&final_.bytes), 480, "lowest 4xx of the forks");
        assert_eq!(w.ended[0].cause, Cause::NoRoute);
        assert_eq!(method(&out[0]), "ACK");
    }
}
