//! Typed header values: name-addr, Via, CSeq, media types, methods.

use std::borrow::Cow;

use super::lex::{self, is_lws, is_token, quoted_end, trim_lws, trim_lws_start};
use super::uri::{ParamRules, Params, Uri, UriError};

/// A SIP method. Method names are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// PUBLISH (RFC 3903)
    Publish,
    /// INFO (RFC 6086)
    Info,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// UPDATE (RFC 3311)
    Update,
    /// Any other token.
    Other(&'a str),
}

impl<'a> Method<'a> {
    /// Maps a method token (not validated) to a method.
    pub fn from_token(s: &'a str) -> Self {
        match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "PUBLISH" => Self::Publish,
            "INFO" => Self::Info,
            "REFER" => Self::Refer,
            "MESSAGE" => Self::Message,
            "UPDATE" => Self::Update,
            other => Self::Other(other),
        }
    }

    /// The method token.
    pub fn as_str(&self) -> &'a str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Publish => "PUBLISH",
            Self::Info => "INFO",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Update => "UPDATE",
            Self::Other(s) => s,
        }
    }
}

/// `name-addr` or `addr-spec` with header parameters: the value of From, To,
/// Contact, Route, Record-Route, Refer-To, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written: a quoted string's contents without the quotes
    /// (escapes still in, see [`NameAddr::display_name_text`]) or the
    /// unquoted tokens. `None` when absent.
    pub display_name: Option<&'a str>,
    /// True if the display name was a quoted string.
    pub display_quoted: bool,
    /// The URI (inside `<>` if enclosed).
    pub uri: Uri<'a>,
    /// Header parameters after the address (`tag`, `expires`, `q`, ...).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses a `name-addr` or `addr-spec` with header parameters (one element of a comma list); `None` if malformed.
    pub fn parse(s: &'a str) -> Option<Self> {
        Self::parse_checked(s).ok()
    }

    /// Parses one name-addr / addr-spec with its parameters.
    pub(crate) fn parse_checked(s: &'a str) -> Result<Self, ValueError> {
        let s = trim_lws(s);
        let b = s.as_bytes();
        let (display_name, display_quoted, after_dn) = if b.first() == Some(&b'"') {
            let end = quoted_end(b).map_err(|_| ValueError::Unterminated)?;
            let rest = trim_lws_start(&s[end..]);
            if !rest.starts_with('<') {
                return Err(ValueError::Syntax);
            }
            (Some(&s[1..end - 1]), true, rest)
        } else if let Some(lt) = s.find('<') {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
            //# display-name   =  *(token LWS)/ quoted-string
            let dn = trim_lws(&s[..lt]);
            if !dn
                .split(|c: char| c.is_ascii() && is_lws(c as u8))
                .all(|w| w.is_empty() || is_token(w))
            {
                return Err(ValueError::DisplayName);
            }
            (if dn.is_empty() { None } else { Some(dn) }, false, &s[lt..])
        } else {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-20
            //# If the URI is not enclosed in angle brackets, any semicolon-delimited
            //# parameters are header-parameters, not URI parameters.
            let (u, params) = s.split_at(s.find(';').unwrap_or(s.len()));
            let u = trim_lws(u);
            //= https://www.rfc-editor.org/rfc/rfc3261#section-20.10
            //# when the header field value contains a display name, the URI
            //# including all URI parameters is enclosed in "<" and ">".  If no "<"
            //# and ">" are present, all parameters after the URI are header
            //# parameters, not URI parameters.
            //
            //= https://www.rfc-editor.org/rfc/rfc3261#section-20
            //# Even if the "display-name" is empty, the "name-addr" form MUST be
            //# used if the "addr-spec" contains a comma, semicolon, or question
            //# mark.
            if u.contains([',', '?']) {
                return Err(ValueError::Unenclosed);
            }
            if u.contains('"') {
                return Err(ValueError::DisplayName);
            }
            let uri = Uri::parse(u).map_err(ValueError::Uri)?;
            let params = Params::parse(params, ParamRules::Header).ok_or(ValueError::Syntax)?;
            return Ok(NameAddr {
                display_name: None,
                display_quoted: false,
                uri,
                params,
            });
        };
        // after_dn starts with '<'
        let gt = after_dn.find('>').ok_or(ValueError::Syntax)?;
        let uri = Uri::parse(&after_dn[1..gt]).map_err(ValueError::Uri)?;
        let params =
            Params::parse(&after_dn[gt + 1..], ParamRules::Header).ok_or(ValueError::Syntax)?;
        Ok(NameAddr {
            display_name,
            display_quoted,
            uri,
            params,
        })
    }

    /// The display name with quoted-pair escapes removed.
    pub fn display_name_text(&self) -> Option<Cow<'a, str>> {
        self.display_name.map(|d| {
            if self.display_quoted {
                lex::unescape_quoted(d)
            } else {
                Cow::Borrowed(d)
            }
        })
    }

    /// The `tag` parameter (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.value("tag")
    }
}

/// One Via header value (RFC 3261 §20.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name, normally `SIP`.
    pub protocol: &'a str,
    /// Protocol version, normally `2.0`.
    pub version: &'a str,
    /// Transport token as written (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, ...).
    pub transport: &'a str,
    /// sent-by host (IPv6 references keep brackets).
    pub host: &'a str,
    /// sent-by port.
    pub port: Option<u16>,
    /// Via parameters.
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    /// Parses one `via-parm` (one element of a comma list); `None` if malformed.
    pub fn parse(s: &'a str) -> Option<Self> {
        Self::parse_checked(s).ok()
    }

    //= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
    //# via-parm          =  sent-protocol LWS sent-by *( SEMI via-params )
    //# sent-protocol     =  protocol-name SLASH protocol-version
    //#                      SLASH transport
    pub(crate) fn parse_checked(s: &'a str) -> Result<Self, ValueError> {
        let s = trim_lws(s);
        let mut it = s.splitn(3, '/');
        let protocol = trim_lws(it.next().ok_or(ValueError::Syntax)?);
        let version = trim_lws(it.next().ok_or(ValueError::Syntax)?);
        let rest = trim_lws_start(it.next().ok_or(ValueError::Syntax)?);
        if !is_token(protocol) || !is_token(version) {
            return Err(ValueError::Syntax);
        }
        let tlen = rest.bytes().take_while(|&b| lex::is_token_char(b)).count();
        let transport = &rest[..tlen];
        let after = &rest[tlen..];
        if transport.is_empty() || !after.bytes().next().is_some_and(is_lws) {
            return Err(ValueError::Syntax);
        }
        let after = trim_lws_start(after);
        let (sent_by, params) = after.split_at(after.find(';').unwrap_or(after.len()));
        let sent_by = trim_lws(sent_by);
        let (host, port) = split_hostport(sent_by).ok_or(ValueError::Syntax)?;
        let params = Params::parse(params, ParamRules::Header).ok_or(ValueError::Syntax)?;
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.value("branch")
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.params.value("received")
    }

    /// The `rport` parameter (RFC 3581): `Some(None)` when present without a
    /// value (a request asking for it), `Some(Some(port))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|v| v.parse().ok()))
    }

    /// True if the branch starts with the RFC 3261 magic cookie `z9hG4bK`
    /// followed by at least one more character.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }
}

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Method.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// Parses a CSeq value (`1*DIGIT LWS Method`); `None` if malformed.
    pub fn parse(s: &'a str) -> Option<Self> {
        Self::parse_checked(s).ok()
    }

    //= https://www.rfc-editor.org/rfc/rfc3261#section-8.1.1.5
    //# The sequence number value MUST be expressible as a 32-bit unsigned
    //# integer and MUST be less than 2**31.
    /// Parses `1*DIGIT LWS Method`. Values up to 2^32-1 are accepted (a
    /// receiver must not reject what the sender side is merely told to avoid).
    pub(crate) fn parse_checked(s: &'a str) -> Result<Self, ValueError> {
        let s = trim_lws(s);
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, rest) = s.split_at(n);
        if !rest.bytes().next().is_some_and(is_lws) {
            return Err(ValueError::Syntax);
        }
        let method = trim_lws(rest);
        if !is_token(method) {
            return Err(ValueError::Syntax);
        }
        let seq = match lex::parse_digits(digits) {
            Some(Ok(v)) => u32::try_from(v).map_err(|_| ValueError::TooLarge)?,
            Some(Err(())) => return Err(ValueError::TooLarge),
            None => return Err(ValueError::Syntax),
        };
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

/// A media type such as `application/sdp` or
/// `multipart/mixed;boundary=xyz` (RFC 3261 §20.15, RFC 2045 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// Top-level type as written.
    pub ty: &'a str,
    /// Subtype as written.
    pub subtype: &'a str,
    /// Parameters (`boundary`, `charset`, ...).
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// Parses `type "/" subtype *(SEMI m-parameter)`; `None` if malformed.
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = trim_lws(s);
        let (mt, params) = s.split_at(s.find(';').unwrap_or(s.len()));
        let (ty, subtype) = mt.split_once('/')?;
        let (ty, subtype) = (trim_lws(ty), trim_lws(subtype));
        if !is_token(ty) || !is_token(subtype) {
            return None;
        }
        let params = Params::parse(params, ParamRules::Header)?;
        Some(MediaType {
            ty,
            subtype,
            params,
        })
    }

    /// Case-insensitive comparison of type and subtype.
    pub fn is(&self, ty: &str, subtype: &str) -> bool {
        self.ty.eq_ignore_ascii_case(ty) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// A parameter value with surrounding quotes removed.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.value(name).map(|v| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    }
}

/// Why a header value failed to parse. Mapped to [`super::Error`] with the
/// line number by the message parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueError {
    Syntax,
    Unterminated,
    DisplayName,
    Uri(UriError),
    Unenclosed,
    TooLarge,
}

fn split_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        let after = &s[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&s[..=end], Some(p)),
            None if after.is_empty() => (s, None),
            None => return None,
        }
    } else {
        match s.find(':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    let host_ok =
        !host.is_empty() && (host.starts_with('[') || host.bytes().all(lex::is_host_char));
    if !host_ok {
        return None;
    }
    let port = match port {
        Some(p) => match lex::parse_digits(p) {
            Some(Ok(v)) if v <= u64::from(u16::MAX) => Some(v as u16),
            _ => return None,
        },
        None => None,
    };
    Some((host, port))
}

//= https://www.rfc-editor.org/rfc/rfc3261#section-20.17
//# Note that unlike HTTP/1.1, SIP only supports recent dates in
//# this format, and only GMT.
//
//= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
//# rfc1123-date  =  wkday "," SP date1 SP time SP "GMT"
/// True if `s` is an RFC 1123 date in GMT.
pub(crate) fn is_sip_date(s: &str) -> bool {
    const WKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let s = trim_lws(s);
    let b = s.as_bytes();
    // "Sat, 13 Nov 2010 23:29:00 GMT" is exactly 29 bytes.
    if b.len() != 29 {
        return false;
    }
    let digits = |r: core::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    WKDAYS.contains(&&s[0..3])
        && &s[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&s[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &s[25..] == " GMT"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse_checked(r#" "A \"B\"" <sip:a@b;lr>;tag=1 ; x"#).unwrap();
        assert_eq!(n.display_name_text().unwrap(), "A \"B\"");
        assert_eq!(n.uri.params.get("lr"), Some(None));
        assert_eq!(n.tag(), Some("1"));
        assert_eq!(n.params.get("x"), Some(None));
        let n = NameAddr::parse_checked("sip:a@b;tag=2").unwrap();
        assert_eq!((n.display_name, n.tag()), (None, Some("2")));
        let n = NameAddr::parse_checked("Bob Smith<sip:a@b>").unwrap();
        assert_eq!(n.display_name, Some("Bob Smith"));
        assert_eq!(
            NameAddr::parse_checked("\"x <sip:a@b>"),
            Err(ValueError::Unterminated)
        );
        assert_eq!(
            NameAddr::parse_checked("a, b <sip:a@b>"),
            Err(ValueError::DisplayName)
        );
        assert_eq!(
            NameAddr::parse_checked("sip:a@b?x=y"),
            Err(ValueError::Unenclosed)
        );
        assert_eq!(
            NameAddr::parse_checked("< sip:a@b >"),
            Err(ValueError::Uri(UriError::Whitespace))
        );
    }

    #[test]
    fn via_cseq_media_date() {
        let v = Via::parse_checked("SIP / 2.0 / UDP\r\n 192.0.2.1:5060 ; branch = z9hG4bKx;rport")
            .unwrap();
        assert_eq!(
            (v.transport, v.host, v.port),
            ("UDP", "192.0.2.1", Some(5060))
        );
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert_eq!(v.rport(), Some(None));
        assert!(v.is_rfc3261_branch());
        assert_eq!(
            Via::parse_checked("SIP/2.0/UDP h;;"),
            Err(ValueError::Syntax)
        );
        let c = CSeq::parse_checked("0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert_eq!(
            CSeq::parse_checked("4294967296 ACK"),
            Err(ValueError::TooLarge)
        );
        let m = MediaType::parse("multipart/mixed; boundary=\"a b\"").unwrap();
        assert!(m.is("Multipart", "MIXED"));
        assert_eq!(m.param("boundary"), Some("a b"));
        assert!(is_sip_date("Sat, 15 Oct 2005 04:44:56 GMT"));
        assert!(!is_sip_date("Fri, 01 Jan 2010 16:00:00 EST"));
    }
}
