//! Lexical helpers shared by the SIP parsers (RFC 3261 §25.1). Private.

/// Linear white space inside a header value. Folding has already been
/// accepted by the header scanner, so a CR or LF inside a value can only be
/// part of a fold and counts as white space.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8))
}

pub(crate) fn trim_lws_start(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii() && is_lws(c as u8))
}

//= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
//# token       =  1*(alphanum / "-" / "." / "!" / "%" / "*"
//#                   / "_" / "+" / "`" / "'" / "~" )
pub(crate) fn is_token_char(b: u8) -> bool {
    CLASS[usize::from(b)] & TOKEN != 0
}

/// Characters allowed anywhere in a SIP/SIPS URI after the scheme (unreserved,
/// reserved, `%`, IPv6 brackets, and UTF-8 bytes, which some stacks send).
pub(crate) fn is_sip_uri_char(b: u8) -> bool {
    CLASS[usize::from(b)] & SIP_URI != 0
}

/// Hostname or IPv4 character. `_` is not in RFC 3261's grammar but common
/// in deployed host names, so it is accepted.
pub(crate) fn is_host_char(b: u8) -> bool {
    CLASS[usize::from(b)] & HOST != 0
}

const TOKEN: u8 = 1;
const SIP_URI: u8 = 2;
const HOST: u8 = 4;

/// Character classes, one lookup per byte on the hot path.
static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_alphanumeric() {
            c |= TOKEN | SIP_URI | HOST;
        }
        if matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        ) {
            c |= TOKEN;
        }
        if b >= 0x80
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b'%'
                    | b';'
                    | b'/'
                    | b'?'
                    | b':'
                    | b'@'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b','
                    | b'['
                    | b']'
            )
        {
            c |= SIP_URI;
        }
        if matches!(b, b'-' | b'.' | b'_') {
            c |= HOST;
        }
        t[i] = c;
        i += 1;
    }
    t
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Error while scanning a quoted string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unterminated;

//= https://www.rfc-editor.org/rfc/rfc3261#section-25.1
//# quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
//# quoted-pair  =  "\" (%x00-09 / %x0B-0C
//#                 / %x0E-7F)
/// `s` starts with `"`. Returns the index just past the closing quote.
pub(crate) fn quoted_end(s: &[u8]) -> Result<usize, Unterminated> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(Unterminated)
}

/// Removes the quoted-pair escapes of a quoted string's contents.
pub(crate) fn unescape_quoted(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Splits `s` on `sep` outside quoted strings and `<...>`. An unterminated
/// quote swallows the rest of the input into the last element, so the
/// element parser reports it.
pub(crate) struct SplitTop<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

pub(crate) fn split_top(s: &str, sep: u8) -> SplitTop<'_> {
    SplitTop { rest: Some(s), sep }
}

impl<'a> Iterator for SplitTop<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let b = s.as_bytes();
        let mut i = 0;
        let mut angle = false;
        while i < b.len() {
            match b[i] {
                b'"' => match quoted_end(&b[i..]) {
                    Ok(n) => {
                        i += n;
                        continue;
                    }
                    Err(Unterminated) => break,
                },
                b'<' => angle = true,
                b'>' => angle = false,
                c if c == self.sep && !angle => {
                    self.rest = s.get(i + 1..);
                    return s.get(..i);
                }
                _ => {}
            }
            i += 1;
        }
        self.rest = None;
        Some(s)
    }
}

/// Parses an unsigned decimal made only of digits; `None` when empty or not
/// digits, `Some(Err(()))` when it overflows `u64`.
pub(crate) fn parse_digits(s: &str) -> Option<Result<u64, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
        {
            Some(n) => v = n,
            None => return Some(Err(())),
        }
    }
    Some(Ok(v))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True if every `%` in `s` starts a valid `%HH` escape.
pub(crate) fn escapes_valid(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (b.get(i + 1).copied(), b.get(i + 2).copied()) {
                (Some(h), Some(l)) if hex_val(h).is_some() && hex_val(l).is_some() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// Decodes `%HH` escapes; an invalid escape is kept literally.
pub(crate) fn pct_decode(s: &str) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_angles() {
        let v: Vec<_> = split_top(r#""a,\"b" <sip:x;a=1,2>, c"#, b',').collect();
        assert_eq!(v, vec![r#""a,\"b" <sip:x;a=1,2>"#, " c"]);
        assert_eq!(split_top("", b',').collect::<Vec<_>>(), vec![""]);
    }

    #[test]
    fn decoding() {
        assert_eq!(&*pct_decode("a%41%2"), b"aA%2");
        assert!(escapes_valid("a%41"));
        assert!(!escapes_valid("a%4"));
        assert_eq!(unescape_quoted(r#"a\"b\\"#), "a\"b\\");
        assert_eq!(parse_digits("0042"), Some(Ok(42)));
        assert_eq!(parse_digits("99999999999999999999999"), Some(Err(())));
        assert_eq!(parse_digits("-1"), None);
    }
}
