//! Per-domain dialplans: ordered rules that match the called and calling numbers
//! (prefix or regex), the source of the call (a user, a trunk, an address range) and
//! the local time of day and weekday, and decide: ring a user, route to a trunk, route
//! to another core (a SIP URI), or reject with a code — optionally after translating
//! the number (strip N digits, replace by regex, prepend), and a rule may translate
//! and let the following rules continue. The text format (TOML) is documented in
//! `docs/dialplan.md`; [`Dialplan::parse`] reports errors with line numbers.
//!
//! ```
//! use control::dialplan::{CallInfo, CallSource, Dialplan, Action};
//! let plan = Dialplan::parse(r#"
//! [[rule]]
//! name = "national"
//! to_prefix = "0"
//! strip = 1
//! prepend = "+44"
//! continue = true
//!
//! [[rule]]
//! name = "uk-out"
//! to_regex = '^\+44\d{9,10}$'
//! source = "user"
//! trunk = "carrier1"
//! "#).unwrap();
//! let call = CallInfo { to: "02071234567", from: "alice", source: CallSource::User("alice"), ip: None };
//! let d = plan.evaluate(&call, 1_700_000_000_000);
//! assert_eq!(d.action, Action::Trunk("carrier1".into()));
//! assert_eq!(d.number, "+442071234567");
//! assert_eq!(d.rule.as_deref(), Some("uk-out"));
//! ```

use std::net::IpAddr;
use std::str::FromStr;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

/// A parsed dialplan: rules tried in order.
#[derive(Clone, Debug)]
pub struct Dialplan {
    rules: Vec<Rule>,
}

/// What a call looks like to the dialplan.
#[derive(Clone, Copy, Debug)]
pub struct CallInfo<'a> {
    /// Called number or user (Request-URI user part).
    pub to: &'a str,
    /// Calling number or user (From user part, or P-Asserted-Identity).
    pub from: &'a str,
    /// Who sent it, as authenticated by the B2BUA.
    pub source: CallSource<'a>,
    /// The source address of the request.
    pub ip: Option<IpAddr>,
}

/// Who placed a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallSource<'a> {
    /// An authenticated subscriber of the domain.
    User(&'a str),
    /// A trunk (authenticated by address or digest).
    Trunk(&'a str),
    /// Another core of the cluster.
    Core,
    /// Nobody we know.
    Unknown,
}

/// The decision of [`Dialplan::evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The rule that decided, `None` when none matched.
    pub rule: Option<String>,
    /// The called number after the translations applied.
    pub number: String,
    /// Every rule that matched, in order (translating rules, then the deciding one).
    pub matched: Vec<String>,
}

/// A dialplan action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ring all contacts of this user of the domain.
    Ring(String),
    /// Send to this trunk.
    Trunk(String),
    /// Send to another core at this SIP URI.
    Core(String),
    /// Reject with this status and reason.
    Reject(u16, String),
    /// No rule decided (the B2BUA answers 404).
    NoRoute,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Ring(u) => write!(f, "ring user {u}"),
            Action::Trunk(t) => write!(f, "route to trunk {t}"),
            Action::Core(u) => write!(f, "route to core {u}"),
            Action::Reject(c, r) => write!(f, "reject {c} {r}"),
            Action::NoRoute => write!(f, "no route (404)"),
        }
    }
}

/// A dialplan that does not parse: where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// An address range (`192.0.2.0/24`, `2001:db8::/32`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() {
            max
        } else {
            l.parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("bad prefix length {l:?}"))?
        };
        Ok(Cidr { addr, len })
    }
}

impl Cidr {
    /// Whether `ip` is inside.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(a.to_bits()), u128::from(b.to_bits()), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
            (IpAddr::V6(a), IpAddr::V4(b)) => match a.to_ipv4_mapped() {
                Some(a) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
                None => return false,
            },
            (IpAddr::V4(_), IpAddr::V6(b)) => match b.to_ipv4_mapped() {
                Some(b) => return self.contains(IpAddr::V4(b)),
                None => return false,
            },
        };
        let len = u32::from(self.len);
        if len == 0 {
            return true;
        }
        let shift = bits - len;
        (a >> shift) == (b >> shift)
    }
}

impl Dialplan {
    /// Parses the TOML dialplan format (`docs/dialplan.md`).
    ///
    /// # Errors
    /// A [`ParseError`] with the line of the problem: TOML syntax, an unknown key, a
    /// bad regex, time, weekday, address range or status code, or a rule with no
    /// action.
    pub fn parse(text: &str) -> Result<Dialplan, ParseError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let doc: Document = toml::from_str(text).map_err(|e| ParseError {
            line: e.span().map_or(1, |s| line_of(s.start)),
            message: e.message().to_owned(),
        })?;
        let rules = doc
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let line = line_of(r.span().start);
                Rule::build(i, r.into_inner()).map_err(|message| ParseError { line, message })
            })
            .collect::<Result<_, _>>()?;
        Ok(Dialplan { rules })
    }

    /// An empty dialplan (every call gets [`Action::NoRoute`]).
    #[must_use]
    pub fn empty() -> Dialplan {
        Dialplan { rules: Vec::new() }
    }

    /// Number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule names with a one-line summary, in order.
    #[must_use]
    pub fn summary(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .map(|r| (r.name.clone(), r.describe()))
            .collect()
    }

    /// Decides what to do with `call` at `now_unix_ms` (wall clock, ms since the Unix
    /// epoch; rules with a time window use their own UTC offset).
    #[must_use]
    pub fn evaluate(&self, call: &CallInfo<'_>, now_unix_ms: u64) -> Decision {
        let mut number = call.to.to_owned();
        let mut matched = Vec::new();
        for r in &self.rules {
            if !r.matches(call, &number, now_unix_ms) {
                continue;
            }
            matched.push(r.name.clone());
            number = r.translate(&number);
            if let Some(action) = &r.action {
                let action = match action {
                    Action::Ring(u) if u == "$number" => Action::Ring(number.clone()),
                    a => a.clone(),
                };
                return Decision {
                    action,
                    rule: Some(r.name.clone()),
                    number,
                    matched,
                };
            }
        }
        Decision {
            action: Action::NoRoute,
            rule: None,
            number,
            matched,
        }
    }
}

/// The document: `[[rule]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    to_prefix: Option<String>,
    to_regex: Option<String>,
    from_prefix: Option<String>,
    from_regex: Option<String>,
    source: Option<String>,
    source_ip: Option<Vec<String>>,
    time: Option<String>,
    weekdays: Option<Vec<String>>,
    utc_offset: Option<String>,
    strip: Option<usize>,
    replace: Option<String>,
    with: Option<String>,
    prepend: Option<String>,
    #[serde(rename = "continue")]
    cont: Option<bool>,
    ring: Option<String>,
    trunk: Option<String>,
    core: Option<String>,
    reject: Option<u16>,
    reason: Option<String>,
}

#[derive(Clone, Debug)]
enum Pattern {
    Prefix(String),
    Regex(Regex),
}

impl Pattern {
    fn build(
        prefix: Option<String>,
        regex: Option<String>,
        what: &str,
    ) -> Result<Option<Pattern>, String> {
        match (prefix, regex) {
            (Some(_), Some(_)) => Err(format!("{what}_prefix and {what}_regex are exclusive")),
            (Some(p), None) => Ok(Some(Pattern::Prefix(p))),
            (None, Some(r)) => Regex::new(&r)
                .map(|r| Some(Pattern::Regex(r)))
                .map_err(|e| format!("{what}_regex: {e}")),
            (None, None) => Ok(None),
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Prefix(p) => s.starts_with(p.as_str()),
            Pattern::Regex(r) => r.is_match(s),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SourceMatch {
    User(Option<String>),
    Trunk(Option<String>),
    Core,
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    to: Option<Pattern>,
    from: Option<Pattern>,
    source: Option<SourceMatch>,
    source_ip: Vec<Cidr>,
    /// Minutes of the day, [start, end); end < start wraps past midnight.
    time: Option<(u16, u16)>,
    /// Bit 0 = Sunday … bit 6 = Saturday.
    weekdays: u8,
    utc_offset_min: i32,
    strip: usize,
    replace: Option<(Regex, String)>,
    prepend: String,
    action: Option<Action>,
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Rule {
    fn build(index: usize, r: RawRule) -> Result<Rule, String> {
        let name = r.name.unwrap_or_else(|| format!("rule{}", index + 1));
        let source = match r.source.as_deref() {
            None | Some("any") => None,
            Some("user") => Some(SourceMatch::User(None)),
            Some("trunk") => Some(SourceMatch::Trunk(None)),
            Some("core") => Some(SourceMatch::Core),
            Some(s) => match s.split_once(':') {
                Some(("user", u)) => Some(SourceMatch::User(Some(u.to_owned()))),
                Some(("trunk", t)) => Some(SourceMatch::Trunk(Some(t.to_owned()))),
                _ => {
                    return Err(format!(
                        "source {s:?}: expected any, user, user:NAME, trunk, trunk:NAME or core"
                    ));
                }
            },
        };
        let source_ip = r
            .source_ip
            .unwrap_or_default()
            .iter()
            .map(|c| c.parse::<Cidr>().map_err(|e| format!("source_ip: {e}")))
            .collect::<Result<_, _>>()?;
        let time = r.time.as_deref().map(parse_window).transpose()?;
        let weekdays = match r.weekdays {
            None => 0x7f,
            Some(days) => days.iter().try_fold(0u8, |acc, d| {
                let d = d.to_ascii_lowercase();
                DAYS.iter()
                    .position(|x| d.starts_with(x))
                    .map(|i| acc | (1 << i))
                    .ok_or_else(|| format!("weekday {d:?}: expected mon, tue, … sun"))
            })?,
        };
        let utc_offset_min = r.utc_offset.as_deref().map_or(Ok(0), parse_offset)?;
        let replace = match (r.replace, r.with) {
            (Some(re), with) => Some((
                Regex::new(&re).map_err(|e| format!("replace: {e}"))?,
                with.unwrap_or_default(),
            )),
            (None, Some(_)) => return Err("`with` needs `replace`".into()),
            (None, None) => None,
        };
        let mut actions = Vec::new();
        if let Some(u) = r.ring {
            actions.push(Action::Ring(u));
        }
        if let Some(t) = r.trunk {
            actions.push(Action::Trunk(t));
        }
        if let Some(u) = r.core {
            if wire::sip::Uri::parse(&u).is_err() {
                return Err(format!("core {u:?} is not a SIP URI"));
            }
            actions.push(Action::Core(u));
        }
        if let Some(code) = r.reject {
            if !(400..=699).contains(&code) {
                return Err(format!(
                    "reject {code}: a final failure code 400..=699 is needed"
                ));
            }
            let reason = r
                .reason
                .unwrap_or_else(|| crate::response::reason(code).to_owned());
            actions.push(Action::Reject(code, reason));
        }
        if actions.len() > 1 {
            return Err("a rule has at most one of ring, trunk, core, reject".into());
        }
        let action = actions.pop();
        let cont = r.cont.unwrap_or(false);
        if action.is_some() && cont {
            return Err("`continue` is for rules without an action".into());
        }
        let translates = r.strip.is_some() || replace.is_some() || r.prepend.is_some();
        if action.is_none() && !(cont && translates) {
            return Err(
                "a rule needs an action (ring, trunk, core, reject), or a translation with continue = true".into(),
            );
        }
        Ok(Rule {
            name,
            to: Pattern::build(r.to_prefix, r.to_regex, "to")?,
            from: Pattern::build(r.from_prefix, r.from_regex, "from")?,
            source,
            source_ip,
            time,
            weekdays,
            utc_offset_min,
            strip: r.strip.unwrap_or(0),
            replace,
            prepend: r.prepend.unwrap_or_default(),
            action,
        })
    }

    fn matches(&self, call: &CallInfo<'_>, number: &str, now_unix_ms: u64) -> bool {
        if self.to.as_ref().is_some_and(|p| !p.matches(number))
            || self.from.as_ref().is_some_and(|p| !p.matches(call.from))
        {
            return false;
        }
        let source_ok = match (&self.source, call.source) {
            (None, _) => true,
            (Some(SourceMatch::User(None)), CallSource::User(_))
            | (Some(SourceMatch::Trunk(None)), CallSource::Trunk(_))
            | (Some(SourceMatch::Core), CallSource::Core) => true,
            (Some(SourceMatch::User(Some(w))), CallSource::User(u))
            | (Some(SourceMatch::Trunk(Some(w))), CallSource::Trunk(u)) => w == u,
            _ => false,
        };
        if !source_ok {
            return false;
        }
        if !self.source_ip.is_empty()
            && !call
                .ip
                .is_some_and(|ip| self.source_ip.iter().any(|c| c.contains(ip)))
        {
            return false;
        }
        if self.time.is_some() || self.weekdays != 0x7f {
            let local_min = i64::try_from(now_unix_ms / 60_000).unwrap_or(i64::MAX)
                + i64::from(self.utc_offset_min);
            let day = local_min.div_euclid(1440);
            let minute = u16::try_from(local_min.rem_euclid(1440)).unwrap_or(0);
            // 1970-01-01 was a Thursday (index 4).
            let weekday = (day + 4).rem_euclid(7);
            if self.weekdays & (1 << weekday) == 0 {
                return false;
            }
            if let Some((start, end)) = self.time {
                let inside = if start <= end {
                    (start..end).contains(&minute)
                } else {
                    minute >= start || minute < end
                };
                if !inside {
                    return false;
                }
            }
        }
        true
    }

    /// Strip, then replace, then prepend.
    fn translate(&self, number: &str) -> String {
        let mut n: String = number.chars().skip(self.strip).collect();
        if let Some((re, with)) = &self.replace {
            n = re.replace(&n, with.as_str()).into_owned();
        }
        if !self.prepend.is_empty() {
            n.insert_str(0, &self.prepend);
        }
        n
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.to {
            Some(Pattern::Prefix(p)) => parts.push(format!("to ^{p}")),
            Some(Pattern::Regex(r)) => parts.push(format!("to /{}/", r.as_str())),
            None => {}
        }
        if self.strip > 0 || self.replace.is_some() || !self.prepend.is_empty() {
            parts.push("translate".into());
        }
        parts.push(
            self.action
                .as_ref()
                .map_or("continue".into(), ToString::to_string),
        );
        parts.join(", ")
    }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

fn parse_window(s: &str) -> Result<(u16, u16), String> {
    s.split_once('-')
        .and_then(|(a, b)| Some((parse_hhmm(a)?, parse_hhmm(b)?)))
        .ok_or_else(|| format!("time {s:?}: expected HH:MM-HH:MM"))
}

fn parse_offset(s: &str) -> Result<i32, String> {
    let bad = || format!("utc_offset {s:?}: expected +HH:MM or -HH:MM");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let m = parse_hhmm(rest).filter(|&m| m <= 14 * 60).ok_or_else(bad)?;
    Ok(sign * i32::from(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
# Emergency calls always go out.
[[rule]]
name = "emergency"
to_regex = '^(112|999)$'
trunk = "emergency-sbc"

[[rule]]
name = "blocked-caller"
from_prefix = "+1900"
reject = 403
reason = "Caller Blocked"

[[rule]]
name = "office-hours"
to_prefix = "100"
time = "09:00-17:30"
weekdays = ["mon", "tue", "wed", "thu", "fri"]
utc_offset = "+01:00"
ring = "reception"

[[rule]]
name = "extensions"
to_regex = '^1\d\d$'
ring = "$number"

[[rule]]
name = "national"
to_regex = '^0[1-9]'
strip = 1
prepend = "+44"
continue = true

[[rule]]
name = "from-carrier"
source = "trunk:carrier1"
source_ip = ["198.18.0.0/16"]
core = "sip:core2.example.net;transport=tcp"

[[rule]]
name = "uk"
to_prefix = "+44"
source = "user"
trunk = "carrier1"
"#;

    fn call<'a>(to: &'a str, from: &'a str, source: CallSource<'a>) -> CallInfo<'a> {
        CallInfo {
            to,
            from,
            source,
            ip: Some("198.18.3.4".parse().unwrap()),
        }
    }

    // 2023-11-14 22:13:20 UTC, a Tuesday.
    const TUE_2213: u64 = 1_700_000_000_000;
    // 2023-11-15 10:00 UTC, a Wednesday (11:00 at +01:00).
    const WED_1000: u64 = 1_700_042_400_000;

    #[test]
    fn rules_in_order_with_translation_time_and_source() {
        let p = Dialplan::parse(PLAN).unwrap();
        assert_eq!(p.len(), 7);
        let d = p.evaluate(&call("112", "alice", CallSource::User("alice")), TUE_2213);
        assert_eq!(d.action, Action::Trunk("emergency-sbc".into()));
        let d = p.evaluate(&call("101", "+19005551234", CallSource::Unknown), TUE_2213);
        assert_eq!(d.action, Action::Reject(403, "Caller Blocked".into()));
        // Office hours: Wednesday 11:00 local rings reception; Tuesday 23:13 local does not.
        let d = p.evaluate(&call("100", "bob", CallSource::User("bob")), WED_1000);
        assert_eq!(
            (d.rule.as_deref(), d.action),
            (Some("office-hours"), Action::Ring("reception".into()))
        );
        let d = p.evaluate(&call("100", "bob", CallSource::User("bob")), TUE_2213);
        assert_eq!(d.action, Action::Ring("100".into()));
        // Translate then continue.
        let d = p.evaluate(
            &call("02071234567", "alice", CallSource::User("alice")),
            TUE_2213,
        );
        assert_eq!(d.action, Action::Trunk("carrier1".into()));
        assert_eq!(d.number, "+442071234567");
        assert_eq!(d.matched, ["national", "uk"]);
        // Source: trunk + address range.
        let d = p.evaluate(
            &call("02071234567", "x", CallSource::Trunk("carrier1")),
            TUE_2213,
        );
        assert_eq!(
            d.action,
            Action::Core("sip:core2.example.net;transport=tcp".into())
        );
        let mut c = call("02071234567", "x", CallSource::Trunk("carrier1"));
        c.ip = Some("192.0.2.1".parse().unwrap());
        assert_eq!(p.evaluate(&c, TUE_2213).action, Action::NoRoute);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                "[[rule]]\nname = \"a\"\nto_regex = '(('\nring = \"x\"\n",
                1,
                "to_regex",
            ),
            ("\n\n[[rule]]\nto_prefix = \"1\"\n", 3, "needs an action"),
            (
                "[[rule]]\nring = \"a\"\n\n[[rule]]\ntime = \"25:00-26:00\"\nring = \"b\"\n",
                4,
                "time",
            ),
            ("[[rule]]\nring = \"a\"\nbogus = 1\n", 3, "unknown field"),
            ("[[rule]]\nring = \"a\"\ntrunk = \"b\"\n", 1, "at most one"),
            ("[[rule]]\nreject = 200\n", 1, "400..=699"),
            (
                "[[rule]]\nsource_ip = [\"10.0.0.0/33\"]\nring = \"a\"\n",
                1,
                "prefix length",
            ),
            ("[[rule]\n", 1, ""),
        ];
        for (text, line, msg) in cases {
            let e = Dialplan::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn cidr() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.200".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains("2001:db8:1::1".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("203.0.113.1".parse().unwrap())
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,300}") {
            let _ = Dialplan::parse(&s);
            let _ = Dialplan::parse(&format!("[[rule]]\n{s}"));
        }

        #[test]
        fn generated_rules_parse_and_prefix_rules_match(
            prefix in "[0-9+]{1,6}", strip in 0usize..4, add in "[0-9]{0,3}", rest in "[0-9]{0,8}",
        ) {
            let text = format!(
                "[[rule]]\nto_prefix = \"{prefix}\"\nstrip = {strip}\nprepend = \"{add}\"\ncontinue = true\n\
                 [[rule]]\nname = \"last\"\nring = \"$number\"\n"
            );
            let p = Dialplan::parse(&text).unwrap();
            let to = format!("{prefix}{rest}");
            let d = p.evaluate(&call(&to, "a", CallSource::Unknown), 0);
            let want = format!("{add}{}", to.chars().skip(strip).collect::<String>());
            proptest::prop_assert_eq!(d.action, Action::Ring(want));
        }
    }
}
