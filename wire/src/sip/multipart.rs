//! Multipart bodies (RFC 2046 §5.1, RFC 5621): splitting a body into parts,
//! and finding the SDP among them.

use super::Error;
use super::framing::head_end;
use super::lex::trim_lws;
use super::value::MediaType;

/// One body part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    /// The part's header block as written (may be empty).
    pub headers: &'a str,
    /// The part's Content-Type, if present and well-formed (RFC 2046 says a
    /// missing one means `text/plain`).
    pub content_type: Option<MediaType<'a>>,
    /// The part's content, without the CRLF that precedes the next delimiter.
    pub body: &'a [u8],
}

impl<'a> Part<'a> {
    /// The first value of the part header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        part_header(self.headers, name)
    }
}

/// Splits a `multipart/*` body on the `boundary` of `content_type`.
///
/// # Errors
/// [`Error::BadMultipart`] if the type is not multipart, has no boundary, or
/// the body has no opening or closing delimiter or a part's headers are not
/// UTF-8 or not terminated.
//= https://www.rfc-editor.org/rfc/rfc2046#section-5.1.1
//# The boundary delimiter MUST occur at the beginning of a line, i.e.,
//# following a CRLF, and the initial CRLF is considered to be attached
//# to the boundary delimiter line rather than part of the preceding
//# part.
pub fn parts<'a>(content_type: &MediaType<'_>, body: &'a [u8]) -> Result<Vec<Part<'a>>, Error> {
    if !content_type.ty.eq_ignore_ascii_case("multipart") {
        return Err(Error::BadMultipart);
    }
    let boundary = content_type
        .param("boundary")
        .filter(|b| !b.is_empty())
        .ok_or(Error::BadMultipart)?
        .as_bytes();
    let mut out = Vec::new();
    let mut at = find_delimiter(body, 0, boundary).ok_or(Error::BadMultipart)?;
    loop {
        let after = at + 2 + boundary.len();
        let tail = body.get(after..).ok_or(Error::BadMultipart)?;
        if tail.starts_with(b"--") {
            return Ok(out);
        }
        // transport-padding, then CRLF
        let pad = tail
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let tail = &tail[pad..];
        let eol = if tail.starts_with(b"\r\n") {
            2
        } else if tail.starts_with(b"\n") {
            1
        } else {
            return Err(Error::BadMultipart);
        };
        let start = after + pad + eol;
        let next = find_delimiter(body, start, boundary).ok_or(Error::BadMultipart)?;
        let mut end = next;
        if end > start && body[end - 1] == b'\n' {
            end -= 1;
            if end > start && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        out.push(parse_part(&body[start..end])?);
        at = next;
    }
}

/// The SDP in a body of type `ct`, looking into multiparts `depth` levels.
pub(crate) fn find_sdp<'a>(ct: MediaType<'_>, body: &'a [u8], depth: u8) -> Option<&'a [u8]> {
    if ct.is("application", "sdp") {
        return Some(body);
    }
    if depth == 0 || !ct.ty.eq_ignore_ascii_case("multipart") {
        return None;
    }
    parts(&ct, body)
        .ok()?
        .into_iter()
        .find_map(|p| find_sdp(p.content_type?, p.body, depth - 1))
}

fn find_delimiter(body: &[u8], from: usize, boundary: &[u8]) -> Option<usize> {
    let mut i = from;
    loop {
        let line = body.get(i..)?;
        if line.starts_with(b"--") && line[2..].starts_with(boundary) {
            return Some(i);
        }
        i += line.iter().position(|&b| b == b'\n')? + 1;
    }
}

fn parse_part(b: &[u8]) -> Result<Part<'_>, Error> {
    let (headers, body) = if b.starts_with(b"\r\n") {
        ("", &b[2..])
    } else if b.starts_with(b"\n") {
        ("", &b[1..])
    } else {
        let (h, s) = head_end(b).ok_or(Error::BadMultipart)?;
        let headers = core::str::from_utf8(&b[..h]).map_err(|_| Error::BadMultipart)?;
        (headers, &b[s..])
    };
    let content_type = part_header(headers, "Content-Type").and_then(MediaType::parse);
    Ok(Part {
        headers,
        content_type,
        body,
    })
}

fn part_header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim_end().eq_ignore_ascii_case(name).then(|| trim_lws(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parts() {
        let ct = MediaType::parse("multipart/alternative;boundary=\"b 1\"").unwrap();
        let body = b"preamble\r\n--b 1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b 1 \r\n\r\nraw\r\n--b 1--\r\n";
        let p = parts(&ct, body).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].content_type.unwrap().is("text", "plain"));
        assert_eq!(p[0].body, b"hi");
        assert_eq!((p[1].headers, p[1].body), ("", &b"raw"[..]));
        assert_eq!(parts(&ct, b"--b 1\r\n\r\nx"), Err(Error::BadMultipart));
        let plain = MediaType::parse("text/plain").unwrap();
        assert_eq!(parts(&plain, body), Err(Error::BadMultipart));
    }
}
