//! Building a response to a request (RFC 3261 §8.2.6): the status line, the request's
//! Via (all of them, in order), From, To (with a tag added when the request had none),
//! Call-ID and CSeq, then extra headers and Content-Length.
//!
//! ```
//! let req = wire::sip::Message::parse(b"OPTIONS sip:example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n\
//!     To: <sip:example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n").unwrap();
//! let out = control::response::build(&req, 420, "Bad Extension", Some("srv1"), &[("Unsupported", "foo")], b"");
//! assert!(out.starts_with(b"SIP/2.0 420 Bad Extension\r\n"));
//! ```

use std::fmt::Write as _;

use wire::sip::Message;

/// The response to `req` with `status` and `reason`. `to_tag` is added to the To header
/// when the request's To has no tag (RFC 3261 §8.2.6.2; the caller must pass one for
/// any response but 100). `extra` headers are appended as given; `body` is sent with
/// the right Content-Length (its Content-Type goes in `extra`).
#[must_use]
pub fn build(
    req: &Message<'_>,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {status:03} {reason}\r\n");
    //= https://www.rfc-editor.org/rfc/rfc3261#section-8.2.6.2
    //# The From field of the response MUST equal the From header field of
    //# the request.  The Call-ID header field of the response MUST equal the
    //# Call-ID header field of the request.  The CSeq header field of the
    //# response MUST equal the CSeq field of the request.  The Via header
    //# field values in the response MUST equal the Via header field values
    //# in the request and MUST maintain the same ordering.
    for h in req.headers() {
        match h.name {
            "Via" | "From" | "Call-ID" | "CSeq" => {
                let _ = write!(s, "{}: {}\r\n", h.name, h.value);
            }
            "To" => {
                let tagged = req.to().is_some_and(|t| t.tag().is_some());
                match to_tag {
                    Some(tag) if !tagged => {
                        let _ = write!(s, "To: {};tag={tag}\r\n", h.value);
                    }
                    _ => {
                        let _ = write!(s, "To: {}\r\n", h.value);
                    }
                }
            }
            _ => {}
        }
    }
    for (name, value) in extra {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The standard reason phrase of a status code (RFC 3261 §21 and extensions), or
/// a generic one for its class.
#[must_use]
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Provisional",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_dialog_headers_and_adds_to_tag() {
        let raw =
            b"INVITE sip:b@example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
            Via: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK2\r\nf: <sip:a@example.com>;tag=1\r\n\
            t: <sip:b@example.com>\r\ni: c1\r\nCSeq: 7 INVITE\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        let out = build(
            &m,
            486,
            reason(486),
            Some("x9"),
            &[("Retry-After", "30")],
            b"",
        );
        let r = Message::parse(&out).unwrap();
        assert_eq!(r.status(), Some(486));
        assert_eq!(r.via().count(), 2);
        assert_eq!(r.to().and_then(|t| t.tag()), Some("x9"));
        assert_eq!(r.cseq().map(|c| c.seq), Some(7));
        assert_eq!(r.header("Retry-After"), Some("30"));
    }
}
