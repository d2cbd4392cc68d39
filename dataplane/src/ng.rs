//! rtpengine's *ng* control protocol, sans-IO: request datagram in,
//! response datagram out.
//!
//! A message is a cookie, one space, and a bencoded dictionary; the
//! response repeats the cookie. Commands: `ping`, `offer`, `answer`,
//! `delete`, `query`, `list`, `start recording`, `stop recording`, with the
//! keys Kamailio's `rtpengine` module sends (`sdp`, `call-id`, `from-tag`,
//! `to-tag`, `via-branch`, `flags`, `replace`, `direction`). Failures are
//! `result: error` with an `error-reason`.
//!
//! Retransmissions (a request whose cookie was seen in the last
//! [`RETRANSMIT_WINDOW`]) get the cached response and are not executed
//! twice, as rtpengine does.
//!
//! What is accepted but has no effect yet: `via-branch` (one session per
//! Call-ID; no per-branch forks), `direction` (one media interface),
//! `replace` (the connection address is always replaced; `origin` is not),
//! `received from` (the SDP address is what latching trusts).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use wire::bencode::Value;

use crate::relay::{Answer, Control, ControlError, Family, Offer, SessionFlags, SessionStats};

/// How long a response is kept for retransmitted requests.
pub const RETRANSMIT_WINDOW: Duration = Duration::from_secs(30);

/// Most responses kept for retransmissions.
pub const RETRANSMIT_CACHE: usize = 4096;

/// The ng protocol endpoint: parses requests, runs them against a
/// [`Control`], and encodes responses.
#[derive(Debug, Default)]
pub struct NgServer {
    cache: HashMap<Vec<u8>, (Instant, Vec<u8>)>,
    order: VecDeque<(Instant, Vec<u8>)>,
    counters: NgCounters,
}

/// Requests handled, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NgCounters {
    /// Requests answered `ok`/`pong`.
    pub ok: u64,
    /// Requests answered `error`.
    pub errors: u64,
    /// Retransmissions answered from the cache.
    pub retransmits: u64,
    /// Datagrams without a cookie (no response possible).
    pub unparseable: u64,
}

impl NgServer {
    /// A server with an empty retransmission cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn counters(&self) -> NgCounters {
        self.counters
    }

    /// Handles one request datagram; returns the response datagram, or
    /// `None` when the request has no cookie to answer to.
    pub fn handle_request(
        &mut self,
        now: Instant,
        control: &mut dyn Control,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        self.expire(now);
        let Some(space) = datagram.iter().position(|&b| b == b' ') else {
            self.counters.unparseable += 1;
            return None;
        };
        let (cookie, body) = (&datagram[..space], &datagram[space + 1..]);
        if cookie.is_empty() {
            self.counters.unparseable += 1;
            return None;
        }
        if let Some((_, response)) = self.cache.get(cookie) {
            self.counters.retransmits += 1;
            return Some(response.clone());
        }
        let mut out = cookie.to_vec();
        out.push(b' ');
        match execute(now, control, body) {
            Ok(entries) => {
                self.counters.ok += 1;
                Value::Dict(
                    entries
                        .iter()
                        .map(|(k, v)| (k.as_bytes(), v.view()))
                        .collect(),
                )
                .emit(&mut out);
            }
            Err(reason) => {
                self.counters.errors += 1;
                Value::Dict(vec![
                    (b"result", Value::str("error")),
                    (b"error-reason", Value::str(&reason)),
                ])
                .emit(&mut out);
            }
        }
        if self.cache.len() >= RETRANSMIT_CACHE
            && let Some((_, old)) = self.order.pop_front()
        {
            self.cache.remove(&old);
        }
        self.cache.insert(cookie.to_vec(), (now, out.clone()));
        self.order.push_back((now, cookie.to_vec()));
        Some(out)
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < RETRANSMIT_WINDOW {
                break;
            }
            if let Some((_, cookie)) = self.order.pop_front() {
                self.cache.remove(&cookie);
            }
        }
    }
}

/// An owned response value (the response borrows from it when encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Int(i64),
    Str(String),
    List(Vec<Out>),
    Dict(Vec<(&'static str, Out)>),
}

impl Out {
    fn view(&self) -> Value<'_> {
        match self {
            Out::Int(n) => Value::Int(*n),
            Out::Str(s) => Value::str(s),
            Out::List(l) => Value::List(l.iter().map(Out::view).collect()),
            Out::Dict(d) => Value::Dict(d.iter().map(|(k, v)| (k.as_bytes(), v.view())).collect()),
        }
    }

    fn str(s: impl Into<String>) -> Self {
        Out::Str(s.into())
    }

    fn count(n: u64) -> Self {
        Out::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

type Entries = Vec<(&'static str, Out)>;

fn execute(now: Instant, control: &mut dyn Control, body: &[u8]) -> Result<Entries, String> {
    let req = Value::parse(body).map_err(|e| format!("Failed to decode bencode: {e}"))?;
    if !matches!(req, Value::Dict(_)) {
        return Err("Could not decode dictionary".into());
    }
    let command = req
        .get(b"command")
        .and_then(Value::as_str)
        .ok_or("No command given")?;
    let ok = |mut rest: Entries| {
        rest.insert(0, ("result", Out::str("ok")));
        Ok(rest)
    };
    match command {
        "ping" => Ok(vec![("result", Out::str("pong"))]),
        "offer" => {
            let offer = Offer {
                call_id: key(&req, "call-id")?,
                from_tag: key(&req, "from-tag")?,
                sdp: key(&req, "sdp")?,
                flags: flags(&req),
            };
            let sdp = control.offer(now, &offer).map_err(reason)?;
            ok(vec![("sdp", Out::Str(sdp))])
        }
        "answer" => {
            let answer = Answer {
                call_id: key(&req, "call-id")?,
                from_tag: key(&req, "from-tag")?,
                to_tag: key(&req, "to-tag")?,
                sdp: key(&req, "sdp")?,
                flags: flags(&req),
            };
            let sdp = control.answer(now, &answer).map_err(reason)?;
            ok(vec![("sdp", Out::Str(sdp))])
        }
        "delete" => {
            let stats = control.delete(now, key(&req, "call-id")?).map_err(reason)?;
            ok(stats_entries(&stats))
        }
        "query" => {
            let stats = control.query(now, key(&req, "call-id")?).map_err(reason)?;
            ok(stats_entries(&stats))
        }
        "list" => {
            let limit = req
                .get(b"limit")
                .and_then(|v| v.as_int().or_else(|| v.as_str()?.parse().ok()))
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(32);
            let calls = control.list(limit).into_iter().map(Out::Str).collect();
            ok(vec![("calls", Out::List(calls))])
        }
        "start recording" | "stop recording" => {
            let on = command == "start recording";
            control
                .set_recording(key(&req, "call-id")?, on)
                .map_err(reason)?;
            ok(vec![])
        }
        other => Err(format!("Unrecognized command '{other}'")),
    }
}

fn key<'a>(req: &Value<'a>, name: &str) -> Result<&'a str, String> {
    req.get(name.as_bytes())
        .and_then(Value::as_str)
        .ok_or_else(|| format!("No {name} in message"))
}

/// Session options from `flags` (a list of words) and `address family`.
fn flags(req: &Value<'_>) -> SessionFlags {
    let words = req.get(b"flags").and_then(Value::as_list).unwrap_or(&[]);
    let strict_source = words.iter().filter_map(Value::as_str).any(|w| {
        w.eq_ignore_ascii_case("strict source") || w.eq_ignore_ascii_case("strict-source")
    });
    let family = match req.get(b"address family").and_then(Value::as_str) {
        Some("IP4") => Some(Family::V4),
        Some("IP6") => Some(Family::V6),
        _ => None,
    };
    SessionFlags {
        strict_source,
        family,
    }
}

/// The `error-reason` texts, rtpengine's where it has one.
fn reason(e: ControlError) -> String {
    match e {
        ControlError::UnknownCall => "Unknown call-id".into(),
        ControlError::PortsExhausted => "Ran out of ports".into(),
        ControlError::TableFull => "Session table full".into(),
        ControlError::InvalidSdp(e) => format!("Failed to parse SDP: {e}"),
        ControlError::NoMedia => "No usable media in SDP".into(),
        other => other.to_string(),
    }
}

/// Query/delete output: rtpengine's `totals` (what Kamailio's `$rtpstat`
/// reads) plus each leg's state.
fn stats_entries(s: &SessionStats) -> Entries {
    let sum = |f: fn(&crate::relay::LegStats) -> u64| s.legs.iter().map(f).sum::<u64>();
    let totals = Out::Dict(vec![
        (
            "RTP",
            Out::Dict(vec![
                ("packets", Out::count(sum(|l| l.rtp_packets))),
                ("bytes", Out::count(sum(|l| l.rtp_bytes))),
                ("errors", Out::count(sum(|l| l.drops.total()))),
            ]),
        ),
        (
            "RTCP",
            Out::Dict(vec![("packets", Out::count(sum(|l| l.rtcp_packets)))]),
        ),
    ]);
    let legs = s
        .legs
        .iter()
        .map(|l| {
            let mut d = vec![
                ("tag", Out::str(l.tag.clone())),
                ("local port", Out::Int(i64::from(l.local_port))),
                (
                    "remote",
                    Out::str(l.remote.map(|a| a.to_string()).unwrap_or_default()),
                ),
                ("latched", Out::Int(i64::from(l.latched))),
                ("direction", Out::str(l.direction.as_str())),
                ("packets", Out::count(l.rtp_packets)),
                ("bytes", Out::count(l.rtp_bytes)),
                ("forwarded", Out::count(l.forwarded)),
                ("lost", Out::count(l.lost)),
                ("ssrc changes", Out::Int(i64::from(l.ssrc_changes))),
            ];
            if let Some(ssrc) = l.ssrc {
                d.push(("SSRC", Out::Int(i64::from(ssrc.0))));
            }
            let drops = crate::relay::DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), Out::count(l.drops.get(*r))))
                .collect();
            d.push(("drops", Out::Dict(drops)));
            Out::Dict(d)
        })
        .collect();
    vec![
        (
            "created",
            Out::Int(i64::try_from(s.age.as_secs()).unwrap_or(i64::MAX)),
        ),
        ("recording", Out::Int(i64::from(s.recording))),
        ("totals", totals),
        ("legs", Out::List(legs)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Relay, RelayConfig};

    #[expect(
        clippy::disallowed_methods,
        reason = "one base instant; time is virtual from here on"
    )]
    fn t0() -> Instant {
        Instant::now()
    }

    fn relay(ports: std::ops::RangeInclusive<u16>, max: usize) -> Relay {
        Relay::new(RelayConfig {
            media_v4: Some("192.0.2.1".parse().unwrap()),
            ports,
            max_sessions: max,
            ..RelayConfig::default()
        })
        .unwrap()
    }

    fn msg(cookie: &str, entries: Vec<(&'static str, Value<'_>)>) -> Vec<u8> {
        let mut out = format!("{cookie} ").into_bytes();
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (k.as_bytes(), v))
                .collect(),
        )
        .emit(&mut out);
        out
    }

    fn reply(resp: &[u8]) -> (String, Value<'_>) {
        let space = resp.iter().position(|&b| b == b' ').unwrap();
        (
            String::from_utf8(resp[..space].to_vec()).unwrap(),
            Value::parse(&resp[space + 1..]).unwrap(),
        )
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const SDP_B: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

    fn offer(cookie: &str, call: &'static str) -> Vec<u8> {
        msg(
            cookie,
            vec![
                ("sdp", Value::str(SDP)),
                ("call-id", Value::str(call)),
                ("from-tag", Value::str("ft")),
                ("via-branch", Value::str("z9hG4bK1")),
                ("command", Value::str("offer")),
                (
                    "flags",
                    Value::List(vec![
                        Value::str("trust-address"),
                        Value::str("strict source"),
                    ]),
                ),
                (
                    "replace",
                    Value::List(vec![Value::str("origin"), Value::str("session-connection")]),
                ),
                (
                    "direction",
                    Value::List(vec![Value::str("external"), Value::str("external")]),
                ),
            ],
        )
    }

    #[test]
    fn ping_offer_answer_query_list_delete() {
        let now = t0();
        let mut r = relay(30000..=30099, 10);
        let mut ng = NgServer::new();
        let resp = ng
            .handle_request(
                now,
                &mut r,
                &msg("5323_1", vec![("command", Value::str("ping"))]),
            )
            .unwrap();
        assert_eq!(resp, b"5323_1 d6:result4:ponge");

        let resp = ng
            .handle_request(now, &mut r, &offer("c2", "call1"))
            .unwrap();
        let (cookie, v) = reply(&resp);
        assert_eq!(cookie, "c2");
        assert_eq!(v.get(b"result").and_then(Value::as_str), Some("ok"));
        let sdp = v.get(b"sdp").and_then(Value::as_str).unwrap();
        assert!(
            sdp.contains("c=IN IP4 192.0.2.1\r\n") && sdp.contains("m=audio 30002 "),
            "{sdp}"
        );

        let answer = msg(
            "c3",
            vec![
                ("command", Value::str("answer")),
                ("call-id", Value::str("call1")),
                ("from-tag", Value::str("ft")),
                ("to-tag", Value::str("tt")),
                ("sdp", Value::str(SDP_B)),
            ],
        );
        let resp = ng.handle_request(now, &mut r, &answer).unwrap();
        let (_, v) = reply(&resp);
        let sdp = v.get(b"sdp").and_then(Value::as_str).unwrap();
        assert!(sdp.contains("m=audio 30000 "), "{sdp}");

        let query = msg(
            "c4",
            vec![
                ("command", Value::str("query")),
                ("call-id", Value::str("call1")),
            ],
        );
        let resp = ng.handle_request(now, &mut r, &query).unwrap();
        let (_, v) = reply(&resp);
        let rtp = v.get(b"totals").and_then(|t| t.get(b"RTP")).unwrap();
        assert_eq!(rtp.get(b"packets").and_then(Value::as_int), Some(0));
        let legs = v.get(b"legs").and_then(Value::as_list).unwrap();
        assert_eq!(legs[1].get(b"tag").and_then(Value::as_str), Some("tt"));
        assert_eq!(
            legs[1].get(b"remote").and_then(Value::as_str),
            Some("192.0.2.20:6000")
        );

        let list = msg("c5", vec![("command", Value::str("list"))]);
        let resp = ng.handle_request(now, &mut r, &list).unwrap();
        assert_eq!(
            reply(&resp).1.get(b"calls"),
            Some(&Value::List(vec![Value::str("call1")]))
        );

        let rec = msg(
            "c6",
            vec![
                ("command", Value::str("start recording")),
                ("call-id", Value::str("call1")),
            ],
        );
        let resp = ng.handle_request(now, &mut r, &rec).unwrap();
        assert_eq!(resp, b"c6 d6:result2:oke");
        assert!(r.query(now, "call1").unwrap().recording);

        let del = msg(
            "c7",
            vec![
                ("command", Value::str("delete")),
                ("call-id", Value::str("call1")),
            ],
        );
        let resp = ng.handle_request(now, &mut r, &del).unwrap();
        let (_, v) = reply(&resp);
        assert_eq!(v.get(b"result").and_then(Value::as_str), Some("ok"));
        assert_eq!(v.get(b"recording").and_then(Value::as_int), Some(1));
        assert!(r.is_empty());
        // The strict-source flag reached the session.
        assert_eq!(ng.counters().ok, 7);
    }

    #[test]
    fn errors_have_reasons() {
        let now = t0();
        let mut r = relay(30000..=30003, 10);
        let mut ng = NgServer::new();
        let err = |resp: Vec<u8>| {
            let (_, v) = reply(&resp);
            assert_eq!(v.get(b"result").and_then(Value::as_str), Some("error"));
            v.get(b"error-reason")
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        };
        let del = msg(
            "e1",
            vec![
                ("command", Value::str("delete")),
                ("call-id", Value::str("nope")),
            ],
        );
        assert_eq!(
            err(ng.handle_request(now, &mut r, &del).unwrap()),
            "Unknown call-id"
        );
        assert!(ng.handle_request(now, &mut r, &offer("e2", "a")).is_some());
        assert_eq!(
            err(ng.handle_request(now, &mut r, &offer("e3", "b")).unwrap()),
            "Ran out of ports"
        );
        let mut full = relay(30000..=30099, 1);
        assert!(
            ng.handle_request(now, &mut full, &offer("e4", "a"))
                .is_some()
        );
        assert_eq!(
            err(ng
                .handle_request(now, &mut full, &offer("e5", "b"))
                .unwrap()),
            "Session table full"
        );
        let no_tag = msg(
            "e6",
            vec![
                ("command", Value::str("offer")),
                ("call-id", Value::str("x")),
                ("sdp", Value::str(SDP)),
            ],
        );
        assert_eq!(
            err(ng.handle_request(now, &mut r, &no_tag).unwrap()),
            "No from-tag in message"
        );
        assert!(
            err(ng.handle_request(now, &mut r, b"e7 d7:command").unwrap())
                .starts_with("Failed to decode bencode")
        );
        assert_eq!(
            err(ng.handle_request(now, &mut r, b"e8 li1ee").unwrap()),
            "Could not decode dictionary"
        );
        let bogus = msg("e9", vec![("command", Value::str("frobnicate"))]);
        assert_eq!(
            err(ng.handle_request(now, &mut r, &bogus).unwrap()),
            "Unrecognized command 'frobnicate'"
        );
        let bad_sdp = msg(
            "e10",
            vec![
                ("command", Value::str("offer")),
                ("call-id", Value::str("x")),
                ("from-tag", Value::str("f")),
                ("sdp", Value::str("hello")),
            ],
        );
        assert!(
            err(ng.handle_request(now, &mut r, &bad_sdp).unwrap())
                .starts_with("Failed to parse SDP")
        );
        assert_eq!(ng.handle_request(now, &mut r, b"no-space-no-cookie"), None);
        assert_eq!(ng.handle_request(now, &mut r, b" d1:ai1ee"), None);
        assert_eq!(ng.counters().unparseable, 2);
    }

    #[test]
    fn retransmissions_answered_from_cache() {
        let now = t0();
        let mut r = relay(30000..=30099, 10);
        let mut ng = NgServer::new();
        let first = ng.handle_request(now, &mut r, &offer("rt1", "a")).unwrap();
        let del = msg(
            "rt2",
            vec![
                ("command", Value::str("delete")),
                ("call-id", Value::str("a")),
            ],
        );
        let deleted = ng.handle_request(now, &mut r, &del).unwrap();
        // The retransmitted delete is not executed again (it would fail).
        let later = now + Duration::from_secs(1);
        assert_eq!(ng.handle_request(later, &mut r, &del).unwrap(), deleted);
        assert_eq!(
            ng.handle_request(later, &mut r, &offer("rt1", "a"))
                .unwrap(),
            first
        );
        assert!(
            r.is_empty(),
            "the retransmitted offer did not create a session"
        );
        assert_eq!(ng.counters().retransmits, 2);
        // After the window the cookie is forgotten.
        let much_later = now + RETRANSMIT_WINDOW + Duration::from_secs(1);
        let again = ng.handle_request(much_later, &mut r, &del).unwrap();
        assert_ne!(again, deleted);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut r = relay(30000..=30099, 10);
            let mut ng = NgServer::new();
            let mut req = b"x ".to_vec();
            req.extend_from_slice(&body);
            let resp = ng.handle_request(t0(), &mut r, &req).unwrap();
            proptest::prop_assert!(resp.starts_with(b"x d"));
        }
    }
}
