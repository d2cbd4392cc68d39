//! Message framing on stream transports (TCP, TLS, WebSocket-less streams).
//!
//! A stream carries messages back to back, each delimited by its
//! Content-Length, which is therefore mandatory. [`message_len`] tells a
//! driver how many bytes the first complete message takes:
//!
//! ```
//! use wire::sip::{framing, Message};
//! let stream = b"\r\n\r\nOPTIONS sip:a@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\nOPT";
//! let n = framing::message_len(stream)?.expect("complete");
//! let msg = Message::parse(&stream[..n])?;
//! assert_eq!(msg.len(), n);
//! assert_eq!(framing::message_len(&stream[n..])?, None); // wait for more bytes
//! # Ok::<(), wire::sip::Error>(())
//! ```
//!
//! **Keep-alives.** CRLFs before a start line (RFC 3261 §7.5, and the
//! RFC 5626 §4.4.1 `CRLFCRLF` ping) are counted into the length returned for
//! the next message, so the caller consumes them with it, and
//! [`Message::parse`](super::Message::parse) skips them. A buffer holding only
//! CRLFs yields `Ok(None)`; a driver that answers pings with a `CRLF` pong
//! uses [`leading_crlf_len`] to see and consume them before a message
//! arrives.

use super::lex::{self, trim_lws};
use super::{Error, MAX_HEADER_LEN, known_id};

//= https://www.rfc-editor.org/rfc/rfc3261#section-7.5
//# Implementations processing SIP messages over stream-oriented
//# transports MUST ignore any CRLF appearing before the start-line
//# [H4.1].
/// Number of CR and LF bytes at the start of `buf`.
pub fn leading_crlf_len(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Length of the first complete message in `buf`.
///
/// `Ok(None)` while the header section or the body is incomplete,
/// `Ok(Some(n))` when `buf[..n]` holds a whole message (including any
/// leading CRLFs, see the [module docs](self)).
///
/// # Errors
/// [`Error::MissingContentLength`], [`Error::BadContentLength`],
/// [`Error::ConflictingContentLength`] when the framing cannot be known, and
/// [`Error::TooLarge`] when the header section exceeds [`MAX_HEADER_LEN`]
/// without ending. After an error the stream cannot be resynchronised: close
/// the connection (after answering 400 if possible).
//= https://www.rfc-editor.org/rfc/rfc3261#section-18.3
//# In the case of stream-oriented transports such as TCP, the Content-
//# Length header field indicates the size of the body.  All SIP
//# implementations MUST use the Content-Length header field when using
//# streams
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let skip = leading_crlf_len(buf);
    let rest = &buf[skip..];
    let Some((head, body_start)) = head_end(rest) else {
        return if rest.len() > MAX_HEADER_LEN {
            Err(Error::TooLarge)
        } else {
            Ok(None)
        };
    };
    if head > MAX_HEADER_LEN {
        return Err(Error::TooLarge);
    }
    let cl_id = known_id("Content-Length");
    let mut cl: Option<usize> = None;
    for (i, line) in rest[..head].split(|&b| b == b'\n').enumerate().skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = core::str::from_utf8(&line[..colon]).unwrap_or("");
        let name = name.trim_end_matches([' ', '\t']);
        if name.starts_with([' ', '\t']) || known_id(name) != cl_id {
            continue;
        }
        let value = core::str::from_utf8(&line[colon + 1..]).unwrap_or("");
        let line_no = i + 1;
        let v = match lex::parse_digits(trim_lws(value)) {
            Some(Ok(v)) => {
                usize::try_from(v).map_err(|_| Error::BadContentLength { line: line_no })?
            }
            _ => return Err(Error::BadContentLength { line: line_no }),
        };
        match cl {
            Some(prev) if prev != v => return Err(Error::ConflictingContentLength),
            _ => cl = Some(v),
        }
    }
    let cl = cl.ok_or(Error::MissingContentLength)?;
    let total = skip
        .checked_add(body_start)
        .and_then(|n| n.checked_add(cl))
        .ok_or(Error::BadContentLength { line: 0 })?;
    Ok((buf.len() >= total).then_some(total))
}

/// Finds the empty line ending the header section of `b` (which must not
/// start with CRLF): `(end of the last header line incl. its CRLF, start of
/// the body)`. Lines end in LF with an optional CR.
pub(crate) fn head_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut pos = 0;
    loop {
        let nl = pos + b[pos..].iter().position(|&c| c == b'\n')?;
        let empty = nl == pos || (nl == pos + 1 && b[pos] == b'\r');
        if empty && pos > 0 {
            return Some((pos, nl + 1));
        }
        pos = nl + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let m = b"\r\nBYE sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabcNEXT";
        assert_eq!(message_len(m), Ok(Some(m.len() - 4)));
        for n in 0..m.len() - 4 {
            assert_eq!(message_len(&m[..n]), Ok(None), "prefix {n}");
        }
        assert_eq!(
            message_len(b"BYE sip:a@b SIP/2.0\r\n\r\n"),
            Err(Error::MissingContentLength)
        );
        assert_eq!(
            message_len(b"BYE sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(Error::ConflictingContentLength)
        );
        assert_eq!(
            message_len(b"BYE sip:a@b SIP/2.0\r\nl: -1\r\n\r\n"),
            Err(Error::BadContentLength { line: 2 })
        );
        assert_eq!(message_len(b"\r\n\r\n"), Ok(None));
        assert_eq!(leading_crlf_len(b"\r\n\r\nX"), 4);
    }
}
