//! Request screening before a request reaches the transaction layer: a per-source-IP
//! token-bucket [`RateLimiter`] (bounded table, least-recently-seen eviction), a
//! [`ScannerList`] of user agents to drop silently, and [`check_request`], which turns
//! what [`wire::sip`] reports (parse errors, [`wire::sip::SemanticIssue`]s) into the
//! response RFC 3261 and the RFC 4475 torture tests ask for (400, 416, 420 with
//! Unsupported, 415 with Accept, 406, 483, 505, 513 …) or a silent drop.
//!
//! ```
//! use std::time::Instant;
//! use control::security::{Guard, GuardConfig, Screen};
//! let mut guard = Guard::new(GuardConfig::default());
//! let src = "192.0.2.7".parse().unwrap();
//! let datagram = b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1\r\n\
//!     From: <sip:a@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: c1\r\n\
//!     CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: friendly-scanner\r\n\r\n";
//! match guard.screen(Instant::now(), src, datagram) {
//!     Screen::Accept(_msg) => { /* hand to the transaction layer */ }
//!     Screen::Respond(bytes) => { /* send bytes back to src, statelessly */ let _ = bytes; }
//!     Screen::Challenge(_msg) => { /* answer 401 with control::auth */ }
//!     Screen::Drop(why) => assert_eq!(why, control::security::DropReason::Scanner),
//! }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use wire::sip::{Message, SemanticIssue};

use crate::response;

/// What to do with a request that parsed, per [`check_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Process it.
    Accept,
    /// Answer with this status and these extra headers.
    Respond {
        /// Status code.
        status: u16,
        /// Extra headers (`Unsupported`, `Accept`…).
        headers: Vec<(&'static str, String)>,
    },
    /// Challenge it (an Authorization header of an unknown scheme, RFC 4475 §3.3.7).
    Challenge,
    /// Drop silently (a response that must be discarded).
    Drop,
}

/// Which option tags this element supports, for `Require` / `Proxy-Require`.
#[derive(Clone, Debug)]
pub struct Supported(pub Vec<String>);

impl Default for Supported {
    fn default() -> Self {
        Supported(vec![
            "100rel".into(),
            "timer".into(),
            "replaces".into(),
            "path".into(),
        ])
    }
}

/// Checks a parsed message for what [`Message::semantic_issues`] reports and decides,
/// in the order RFC 3261 §8.2 / §16.3 processes a request: malformed (400), URI scheme
/// (416), Max-Forwards (483, except an OPTIONS to the server itself), extensions (420),
/// body type (415), Accept (406), authorization scheme (challenge). Responses with
/// several Via values are dropped (§8.1.3.3).
#[must_use]
pub fn check_request(msg: &Message<'_>, supported: &Supported) -> Check {
    let issues = msg.semantic_issues();
    if !msg.is_request() {
        return if issues
            .iter()
            .any(|i| matches!(i, SemanticIssue::ResponseWithMultipleVias))
        {
            Check::Drop
        } else {
            Check::Accept
        };
    }
    let mut best: Option<(u8, Check)> = None;
    for issue in &issues {
        let (rank, check) = match issue {
            // RFC 2543 clients send no Max-Forwards: assume 70 (RFC 4475 §3.4.1).
            SemanticIssue::MissingHeader("Max-Forwards") => continue,
            SemanticIssue::MissingHeader(_)
            | SemanticIssue::MultipleValues(_)
            | SemanticIssue::MultipleContentLength => (0, respond(400, Vec::new())),
            SemanticIssue::UnsupportedUriScheme(_) => (1, respond(416, Vec::new())),
            //= https://www.rfc-editor.org/rfc/rfc3261#section-16.3
            //# If the Max-Forwards value is zero (0), the element MUST NOT forward the
            //# request.  If the request was for OPTIONS, the element MAY act as the final
            //# recipient and respond per Section 11.
            SemanticIssue::TooManyHops => {
                let to_us = msg.request_uri().is_some_and(|u| u.user.is_none());
                if to_us && msg.method().is_some_and(|m| m.as_str() == "OPTIONS") {
                    continue;
                }
                (2, respond(483, Vec::new()))
            }
            //= https://www.rfc-editor.org/rfc/rfc3261#section-8.2.2.3
            //# If a UAS does not understand an option-tag listed in a Require header
            //# field, it MUST respond by generating a response with status code 420
            //# (Bad Extension).  The UAS MUST add an Unsupported header field, and list
            //# in it those options it does not understand amongst those in the Require
            //# header field of the request.
            SemanticIssue::RequiredExtensions { tags, .. } => {
                let unknown: Vec<&str> = tags
                    .iter()
                    .copied()
                    .filter(|t| !supported.0.iter().any(|s| s.eq_ignore_ascii_case(t)))
                    .collect();
                if unknown.is_empty() {
                    continue;
                }
                (3, respond(420, vec![("Unsupported", unknown.join(", "))]))
            }
            //= https://www.rfc-editor.org/rfc/rfc3261#section-8.2.3
            //# If a UAS does not understand the type of a message body ... it MUST respond
            //# with a 415 (Unsupported Media Type) response.  The response MUST contain an
            //# Accept header field listing the types of all bodies it understands
            SemanticIssue::UnsupportedMediaType(_) => (
                4,
                respond(
                    415,
                    vec![("Accept", wire::sip::KNOWN_BODY_TYPES.join(", "))],
                ),
            ),
            SemanticIssue::NotAcceptable => (5, respond(406, Vec::new())),
            SemanticIssue::UnsupportedAuthScheme(_) => (6, Check::Challenge),
            _ => continue,
        };
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, check));
        }
    }
    best.map_or(Check::Accept, |(_, c)| c)
}

fn respond(status: u16, headers: Vec<(&'static str, String)>) -> Check {
    Check::Respond { status, headers }
}

/// Why [`Guard::screen`] dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The source is over its rate.
    RateLimited,
    /// A scanner user agent.
    Scanner,
    /// A response that must be discarded, or one that does not parse.
    BadResponse,
    /// Bytes that are not even a request line.
    Garbage,
}

/// The result of [`Guard::screen`].
#[derive(Debug)]
pub enum Screen<'a> {
    /// A message to process.
    Accept(Message<'a>),
    /// Send this response back to the source and stop.
    Respond(Vec<u8>),
    /// Answer with a digest challenge (see [`crate::auth`]).
    Challenge(Message<'a>),
    /// Drop silently (counted).
    Drop(DropReason),
}

/// [`Guard`] settings.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    /// Sustained requests per second per source address.
    pub rate_per_s: f64,
    /// Burst size (bucket depth) per source.
    pub burst: f64,
    /// Most sources tracked; the least recently seen is evicted beyond.
    pub max_sources: usize,
    /// Scanner user agents.
    pub scanners: ScannerList,
    /// Supported option tags.
    pub supported: Supported,
    /// The To tag put in stateless error responses.
    pub to_tag: String,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            rate_per_s: 50.0,
            burst: 100.0,
            max_sources: 100_000,
            scanners: ScannerList::default(),
            supported: Supported::default(),
            to_tag: "vxp-guard".into(),
        }
    }
}

/// Counters of [`Guard`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Messages accepted.
    pub accepted: u64,
    /// Dropped by the rate limiter.
    pub rate_limited: u64,
    /// Dropped as scanners.
    pub scanners: u64,
    /// Answered with an error statelessly.
    pub rejected: u64,
    /// Dropped as garbage or bad responses.
    pub dropped: u64,
}

/// Rate limit, scanner filter and semantic checks in one call per datagram.
#[derive(Debug)]
pub struct Guard {
    cfg: GuardConfig,
    limiter: RateLimiter,
    stats: GuardStats,
}

impl Guard {
    /// A guard with these settings.
    #[must_use]
    pub fn new(cfg: GuardConfig) -> Guard {
        let limiter = RateLimiter::new(cfg.rate_per_s, cfg.burst, cfg.max_sources);
        Guard {
            cfg,
            limiter,
            stats: GuardStats::default(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// Screens one datagram (or one framed stream message) from `src` at `now`.
    pub fn screen<'a>(&mut self, now: Instant, src: IpAddr, buf: &'a [u8]) -> Screen<'a> {
        if !self.limiter.allow(now, src) {
            self.stats.rate_limited += 1;
            return Screen::Drop(DropReason::RateLimited);
        }
        let msg = match Message::parse(buf) {
            Ok(m) => m,
            Err(e) => {
                // A response, or nothing we could answer: drop.
                if buf.starts_with(b"SIP/") || !buf.windows(4).any(|w| w == b"SIP/") {
                    self.stats.dropped += 1;
                    return Screen::Drop(DropReason::Garbage);
                }
                self.stats.rejected += 1;
                return Screen::Respond(stateless_error(buf, e.status_code()));
            }
        };
        if msg
            .header("User-Agent")
            .is_some_and(|ua| self.cfg.scanners.matches(ua))
        {
            self.stats.scanners += 1;
            return Screen::Drop(DropReason::Scanner);
        }
        match check_request(&msg, &self.cfg.supported) {
            Check::Accept => {
                self.stats.accepted += 1;
                Screen::Accept(msg)
            }
            Check::Challenge => {
                self.stats.accepted += 1;
                Screen::Challenge(msg)
            }
            Check::Drop => {
                self.stats.dropped += 1;
                Screen::Drop(DropReason::BadResponse)
            }
            Check::Respond { status, headers } => {
                self.stats.rejected += 1;
                let extra: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                Screen::Respond(response::build(
                    &msg,
                    status,
                    response::reason(status),
                    Some(&self.cfg.to_tag),
                    &extra,
                    b"",
                ))
            }
        }
    }
}

/// A response to a request that does not parse: the status line and whichever of
/// Via/From/To/Call-ID/CSeq lines can be found verbatim, so the client can match it.
fn stateless_error(buf: &[u8], status: u16) -> Vec<u8> {
    let text = String::from_utf8_lossy(buf);
    let mut out = format!("SIP/2.0 {status} {}\r\n", response::reason(status));
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    for line in head.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").trim();
        let canonical = match name.to_ascii_lowercase().as_str() {
            "via" | "v" => "Via",
            "from" | "f" => "From",
            "to" | "t" => "To",
            "call-id" | "i" => "Call-ID",
            "cseq" => "CSeq",
            _ => continue,
        };
        let value = line.split_once(':').map_or("", |(_, v)| v.trim());
        out.push_str(canonical);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// User-agent substrings of SIP scanners (case-insensitive).
#[derive(Clone, Debug)]
pub struct ScannerList(Vec<String>);

/// The default scanner list: SIPVicious and its forks, sipcli, sundayddr, iWar…
pub const DEFAULT_SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "iwar",
    "sip-scan",
    "sipsak",
    "smap",
    "pplsip",
    "sippscan",
    "siparmyknife",
    "voip-sip-scanner",
    "scanner",
];

impl Default for ScannerList {
    fn default() -> Self {
        ScannerList::new(DEFAULT_SCANNERS.iter().copied())
    }
}

impl ScannerList {
    /// A list of substrings.
    pub fn new<'s>(names: impl IntoIterator<Item = &'s str>) -> ScannerList {
        ScannerList(names.into_iter().map(str::to_ascii_lowercase).collect())
    }

    /// Whether `user_agent` contains one of them.
    #[must_use]
    pub fn matches(&self, user_agent: &str) -> bool {
        let ua = user_agent.to_ascii_lowercase();
        self.0.iter().any(|s| ua.contains(s.as_str()))
    }
}

/// Per-source token buckets: `rate` tokens/s up to `burst`; one request takes one.
/// At most `max_sources` are tracked; a new source evicts the least recently seen.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// Recency index: tick → source.
    lru: BTreeMap<u64, IpAddr>,
    tick: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    tick: u64,
}

impl RateLimiter {
    /// A limiter of `rate` requests/s with bursts of `burst`.
    #[must_use]
    pub fn new(rate: f64, burst: f64, max_sources: usize) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
        }
    }

    /// Takes a token for `src` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, now: Instant, src: IpAddr) -> bool {
        self.tick += 1;
        let tick = self.tick;
        if !self.buckets.contains_key(&src)
            && self.buckets.len() >= self.max_sources
            && let Some((_, old)) = self.lru.pop_first()
        {
            self.buckets.remove(&old);
        }
        let b = self.buckets.entry(src).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            tick,
        });
        self.lru.remove(&b.tick);
        self.lru.insert(tick, src);
        b.tick = tick;
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.rate).min(self.burst);
        b.last = now.max(b.last);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn token_bucket_refills_on_virtual_time_and_table_is_bounded() {
        let t0 = crate::test_origin();
        let mut l = RateLimiter::new(10.0, 5.0, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..5).all(|_| l.allow(t0, a)));
        assert!(!l.allow(t0, a));
        assert!(l.allow(t0 + Duration::from_millis(100), a));
        assert!(!l.allow(t0 + Duration::from_millis(100), a));
        for i in 2..10 {
            let ip: IpAddr = format!("192.0.2.{i}").parse().unwrap();
            assert!(l.allow(t0, ip));
            assert!(l.len() <= 3);
        }
        // `a` was evicted (least recently seen): it starts with a full bucket again.
        assert!((0..5).all(|_| l.allow(t0 + Duration::from_millis(100), a)));
    }

    #[test]
    fn scanners_are_dropped() {
        let mut g = Guard::new(GuardConfig::default());
        let src = "192.0.2.9".parse().unwrap();
        let msg =
            b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n\
            From: <sip:100@x>;tag=1\r\nTo: <sip:100@x>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\
            Max-Forwards: 70\r\nUser-Agent: VaxSIPUserAgent/3.1\r\n\r\n";
        assert!(matches!(
            g.screen(crate::test_origin(), src, msg),
            Screen::Drop(DropReason::Scanner)
        ));
        assert_eq!(g.stats().scanners, 1);
        assert!(!ScannerList::default().matches("Linphone/5.2"));
    }
}
