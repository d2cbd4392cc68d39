//! URIs (RFC 3261 §19.1, RFC 3966 `tel:`, any other `scheme:`) and
//! `;name=value` parameter lists.

use std::borrow::Cow;

use super::lex::{self, is_lws, is_token, quoted_end, split_top, trim_lws};

/// Why a URI was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Empty, or the scheme is missing or not `ALPHA *(ALPHA / DIGIT / "+" / "-" / ".")`
    /// (for example a Request-URI enclosed in `<>`).
    #[error("missing or malformed URI scheme")]
    Scheme,
    /// The URI contains white space.
    #[error("white space inside a URI")]
    Whitespace,
    /// A character that may not appear in this kind of URI.
    #[error("character not allowed in a URI")]
    Syntax,
    /// A `%` not followed by two hex digits in a SIP URI.
    #[error("malformed % escape")]
    Escape,
    /// Missing or malformed host.
    #[error("malformed host")]
    Host,
    /// Port not a number in 0..=65535.
    #[error("malformed port")]
    Port,
    /// Malformed `;name=value` parameter.
    #[error("malformed URI parameter")]
    Param,
    /// `?headers` in a Request-URI (RFC 3261 §19.1.1 table 1).
    #[error("headers are not allowed in a Request-URI")]
    HeadersNotAllowed,
}

/// URI scheme family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Anything else; only [`Uri::opaque`] is meaningful.
    Other,
}

/// A borrowed URI. Parsing validates SIP and SIPS URIs fully; `tel:` and
/// other schemes are split but otherwise kept opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a str,
    /// The scheme as written (compare case-insensitively or use [`Uri::kind`]).
    pub scheme: &'a str,
    /// Scheme family.
    pub kind: Scheme,
    /// SIP: user part (may contain `%` escapes, see [`Uri::user_decoded`]);
    /// tel: the number. `None` for other schemes or no user.
    pub user: Option<&'a str>,
    /// SIP password (deprecated but parsed).
    pub password: Option<&'a str>,
    /// SIP host (IPv6 references keep their brackets). `None` for tel and
    /// other schemes.
    pub host: Option<&'a str>,
    /// SIP port.
    pub port: Option<u16>,
    /// `;` parameters (SIP, tel). Empty for other schemes.
    pub params: Params<'a>,
    /// `?` headers without the `?` (SIP).
    pub headers: Option<&'a str>,
    /// Everything after `scheme:`.
    pub opaque: &'a str,
}

impl<'a> Uri<'a> {
    /// Parses a URI without surrounding white space or `<>`.
    ///
    /// # Errors
    /// A [`UriError`] naming the first problem found.
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        if s.bytes().any(is_lws) {
            return Err(UriError::Whitespace);
        }
        let colon = s.find(':').ok_or(UriError::Scheme)?;
        let scheme = &s[..colon];
        let sb = scheme.as_bytes();
        if sb.is_empty()
            || !sb[0].is_ascii_alphabetic()
            || !sb
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(UriError::Scheme);
        }
        let rest = &s[colon + 1..];
        if rest.is_empty() || rest.bytes().any(|b| b.is_ascii_control()) {
            return Err(UriError::Syntax);
        }
        let kind = if scheme.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let mut uri = Uri {
            raw: s,
            scheme,
            kind,
            user: None,
            password: None,
            host: None,
            port: None,
            params: Params::EMPTY,
            headers: None,
            opaque: rest,
        };
        match kind {
            Scheme::Sip | Scheme::Sips => parse_sip(rest, &mut uri)?,
            Scheme::Tel => {
                if rest.bytes().any(|b| matches!(b, b'<' | b'>' | b'"')) {
                    return Err(UriError::Syntax);
                }
                let (num, params) = rest.split_at(rest.find(';').unwrap_or(rest.len()));
                if num.is_empty() {
                    return Err(UriError::Syntax);
                }
                uri.user = Some(num);
                uri.params = Params::parse(params, ParamRules::Uri).ok_or(UriError::Param)?;
            }
            Scheme::Other => {
                if rest.bytes().any(|b| matches!(b, b'<' | b'>' | b'"')) {
                    return Err(UriError::Syntax);
                }
            }
        }
        Ok(uri)
    }

    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The user part with `%` escapes decoded (may contain any byte, even NUL).
    pub fn user_decoded(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(pct_decode)
    }
}

/// Decodes `%HH` escapes (RFC 3986 §2.1); an invalid escape is kept as is.
pub fn pct_decode(s: &str) -> Cow<'_, [u8]> {
    lex::pct_decode(s)
}

/// A `;name[=value]` parameter list, kept as the raw text starting at the
/// first `;` (or empty). Lookups are case-insensitive on names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a str,
}

/// One parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// Name as written.
    pub name: &'a str,
    /// Value as written (quoted strings keep their quotes); `None` for a flag.
    pub value: Option<&'a str>,
}

impl<'a> Params<'a> {
    /// No parameters.
    pub const EMPTY: Params<'static> = Params { raw: "" };

    /// Validates `raw` (empty, or starting with `;` after optional LWS).
    pub(crate) fn parse(raw: &'a str, rules: ParamRules) -> Option<Self> {
        let t = trim_lws(raw);
        if t.is_empty() {
            return Some(Params { raw: t });
        }
        let body = t.strip_prefix(';')?;
        for item in split_top(body, b';') {
            let item = trim_lws(item);
            let (name, value) = match item.find('=') {
                Some(e) => (trim_lws(&item[..e]), Some(trim_lws(&item[e + 1..]))),
                None => (item, None),
            };
            let name_ok = match rules {
                ParamRules::Uri => !name.is_empty() && !name.contains(['=', '"']),
                ParamRules::Header => is_token(name),
            };
            if !name_ok {
                return None;
            }
            if let Some(v) = value {
                let vb = v.as_bytes();
                let ok = match (rules, vb.first()) {
                    (_, None) => false,
                    (ParamRules::Header, Some(b'"')) => quoted_end(vb) == Ok(vb.len()),
                    // gen-value = token / host / quoted-string; accept any
                    // other visible character too (seen in the wild: '@',
                    // '/'), but not separators or white space.
                    (ParamRules::Header, _) => v.bytes().all(|b| {
                        b >= 0x80
                            || (b.is_ascii_graphic()
                                && !matches!(b, b';' | b',' | b'"' | b'<' | b'>' | b'\\'))
                    }),
                    (ParamRules::Uri, _) => !v.contains(['=', '"']),
                };
                if !ok {
                    return None;
                }
            }
        }
        Some(Params { raw: t })
    }

    /// The raw text (starts with `;` unless empty).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// True if there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Iterates over the parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        let body = self.raw.strip_prefix(';').unwrap_or("");
        split_top(body, b';').filter_map(|item| {
            let item = trim_lws(item);
            if item.is_empty() {
                return None;
            }
            Some(match item.find('=') {
                Some(e) => Param {
                    name: trim_lws(&item[..e]),
                    value: Some(trim_lws(&item[e + 1..])),
                },
                None => Param {
                    name: item,
                    value: None,
                },
            })
        })
    }

    /// The first parameter called `name`: `Some(None)` for a flag
    /// (`;lr`), `Some(Some(v))` with a value, `None` if absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value)
    }

    /// The value of `name`, `None` if absent or a flag.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).flatten()
    }
}

//= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
//# SIP-URI          =  "sip:" [ userinfo ] hostport
//#                     uri-parameters [ headers ]
fn parse_sip<'a>(rest: &'a str, uri: &mut Uri<'a>) -> Result<(), UriError> {
    if !rest.bytes().all(lex::is_sip_uri_char) {
        return Err(UriError::Syntax);
    }
    if !lex::escapes_valid(rest) {
        return Err(UriError::Escape);
    }
    // No unescaped '@' may follow the userinfo (params and headers escape it),
    // while the user part may contain ';', '?' and '/': split at the last '@'.
    let hostpart = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.find(':') {
                Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return Err(UriError::Syntax);
            }
            uri.user = Some(user);
            uri.password = password;
            &rest[at + 1..]
        }
        None => rest,
    };
    let (before_headers, headers) = match hostpart.find('?') {
        Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
        None => (hostpart, None),
    };
    let (hostport, params) =
        before_headers.split_at(before_headers.find(';').unwrap_or(before_headers.len()));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6.find(']').ok_or(UriError::Host)?;
        let inner = &v6[..end];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UriError::Host);
        }
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError::Host),
        };
        (&hostport[..end + 2], port)
    } else {
        match hostport.find(':') {
            Some(c) => (&hostport[..c], Some(&hostport[c + 1..])),
            None => (hostport, None),
        }
    };
    if host.is_empty() || (!host.starts_with('[') && !host.bytes().all(lex::is_host_char)) {
        return Err(UriError::Host);
    }
    uri.host = Some(host);
    if let Some(p) = port {
        match lex::parse_digits(p) {
            Some(Ok(v)) if v <= u64::from(u16::MAX) => uri.port = Some(v as u16),
            _ => return Err(UriError::Port),
        }
    }
    uri.params = Params::parse(params, ParamRules::Uri).ok_or(UriError::Param)?;
    uri.headers = headers;
    Ok(())
}

/// Which grammar a parameter list follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamRules {
    /// URI parameters: names may be `%`-escaped, values any paramchar.
    Uri,
    /// Header parameters (`generic-param`): token names, values token, host or
    /// quoted-string, LWS around `;` and `=`.
    Header,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse("sips:alice:pw@[2001:db8::1]:5061;transport=tcp;lr?subject=hi").unwrap();
        assert_eq!(u.kind, Scheme::Sips);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host, Some("[2001:db8::1]"));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.params.value("TRANSPORT"), Some("tcp"));
        assert_eq!(u.params.get("lr"), Some(None));
        assert_eq!(u.headers, Some("subject=hi"));
    }

    #[test]
    fn other_schemes_and_errors() {
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!((t.kind, t.user), (Scheme::Tel, Some("+1-201-555-0123")));
        assert_eq!(t.params.value("phone-context"), Some("example.com"));
        let o = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!((o.kind, o.opaque), (Scheme::Other, "//192.0.2.103:3002"));
        assert_eq!(Uri::parse("<sip:a@b>"), Err(UriError::Scheme));
        assert_eq!(Uri::parse("sip:a@b; lr"), Err(UriError::Whitespace));
        assert_eq!(Uri::parse("sip:a@b:99999"), Err(UriError::Port));
        assert_eq!(Uri::parse("sip:a@b%zz"), Err(UriError::Escape));
        assert_eq!(Uri::parse("sip:a@"), Err(UriError::Host));
        assert_eq!(Uri::parse(""), Err(UriError::Scheme));
    }
}
