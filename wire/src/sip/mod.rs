//! SIP messages (RFC 3261): a zero-copy [`Message`] view over one datagram or
//! one framed stream message, typed header accessors, [`framing`] for stream
//! transports, [`multipart`] bodies and an owned [`MessageRepr`] with `emit`.
//!
//! Parsing is strict where RFC 3261 and the RFC 4475 torture tests require a
//! rejection (the [`Error`] says which response to send), and lenient where
//! they ask receivers to cope (folded lines, odd white space, compact names,
//! unknown headers and schemes). What parses but still needs a specific
//! answer is reported by [`Message::semantic_issues`].
//!
//! `parse` does not allocate for messages with up to [`INLINE_HEADERS`]
//! header fields: it indexes each field's name and value once, validates the
//! headers whose syntax decides framing or transaction matching (Via, From,
//! To, Contact, Route, Record-Route, CSeq, Max-Forwards, Content-Length,
//! Date), and leaves everything else to lazy accessors.
//!
//! ```
//! let msg = wire::sip::Message::parse(
//!     b"BYE sip:bob@192.0.2.4 SIP/2.0\r\n\
//!       Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK776\r\n\
//!       From: \"Alice\" <sip:alice@example.com>;tag=1\r\n\
//!       t: <sip:bob@example.com>;tag=2\r\n\
//!       i: a84b4c76e66710\r\n\
//!       CSeq: 2 BYE\r\n\
//!       Max-Forwards: 70\r\n\
//!       l: 0\r\n\r\n",
//! )?;
//! assert_eq!(msg.method(), Some(wire::sip::Method::Bye));
//! assert_eq!(msg.call_id(), Some("a84b4c76e66710"));
//! assert_eq!(msg.to().and_then(|to| to.tag()), Some("2"));
//! # Ok::<(), wire::sip::Error>(())
//! ```

pub mod framing;
mod lex;
pub mod multipart;
mod repr;
mod uri;
mod value;

pub use repr::{MessageRepr, StartLineRepr};
pub use uri::{Param, Params, Scheme, Uri, UriError, pct_decode};
pub use value::{CSeq, MediaType, Method, NameAddr, Via};

use lex::{is_lws, split_top, trim_lws};
use value::ValueError;

/// Largest start line + header section accepted, in bytes (bodies are bounded
/// by Content-Length only). Larger messages get [`Error::TooLarge`].
pub const MAX_HEADER_LEN: usize = 65_535;

/// Header fields indexed without allocating; more spill into a `Vec`.
pub const INLINE_HEADERS: usize = 32;

/// Why a message was rejected. [`Error::status_code`] gives the response a
/// server sends for a rejected request (responses are silently dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing but CRLFs.
    #[error("empty message")]
    Empty,
    /// The start line is neither a Request-Line nor a Status-Line (wrong
    /// number of single-space separated elements, trailing space...).
    #[error("malformed start line")]
    BadStartLine,
    /// A well-formed `SIP/x.y` other than `SIP/2.0`.
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// The method is not a token.
    #[error("malformed method")]
    BadMethod,
    /// The Request-URI is malformed.
    #[error("malformed Request-URI: {0}")]
    BadRequestUri(UriError),
    /// The status code is not three digits in 100..=699.
    #[error("status code not in 100..=699")]
    BadStatusCode,
    /// The start line or header section is not UTF-8.
    #[error("line {line}: not UTF-8")]
    NotUtf8 {
        /// 1-based line number (1 = start line).
        line: usize,
    },
    /// A header line without a colon, with a non-token name, or a
    /// continuation line with nothing to continue.
    #[error("line {line}: malformed header field")]
    BadHeaderLine {
        /// 1-based line number.
        line: usize,
    },
    /// A known header's value does not follow its grammar.
    #[error("line {line}: malformed {header} value")]
    BadHeaderValue {
        /// 1-based line number where the header field starts.
        line: usize,
        /// Canonical header name.
        header: &'static str,
    },
    /// A quoted string without its closing quote.
    #[error("line {line}: unterminated quoted string")]
    UnterminatedQuote {
        /// 1-based line number.
        line: usize,
    },
    /// An unquoted display name containing non-token characters.
    #[error("line {line}: display name must be tokens or a quoted string")]
    BadDisplayName {
        /// 1-based line number.
        line: usize,
    },
    /// A malformed URI inside a header (including white space inside `<>`).
    #[error("line {line}: malformed URI in {header}: {reason}")]
    BadUri {
        /// 1-based line number.
        line: usize,
        /// Canonical header name.
        header: &'static str,
        /// What is wrong with it.
        reason: UriError,
    },
    /// An addr-spec containing `,` or `?` not enclosed in `<>`.
    #[error("line {line}: URI with ',' or '?' in {header} must be enclosed in <>")]
    UnenclosedUri {
        /// 1-based line number.
        line: usize,
        /// Canonical header name.
        header: &'static str,
    },
    /// A scalar that does not fit its type (CSeq > 2^32-1, Max-Forwards > 255).
    #[error("line {line}: {header} value out of range")]
    ValueTooLarge {
        /// 1-based line number.
        line: usize,
        /// Canonical header name.
        header: &'static str,
    },
    /// Content-Length is negative, not a number or too large.
    #[error("line {line}: malformed Content-Length")]
    BadContentLength {
        /// 1-based line number.
        line: usize,
    },
    /// Stream framing: several Content-Length fields that disagree.
    #[error("conflicting Content-Length fields")]
    ConflictingContentLength,
    /// Stream framing: no Content-Length (mandatory on streams).
    #[error("Content-Length is mandatory on stream transports")]
    MissingContentLength,
    /// Content-Length larger than the bytes that follow the header section.
    #[error("body shorter than Content-Length ({available} < {declared})")]
    BodyTooShort {
        /// Content-Length value.
        declared: usize,
        /// Bytes available after the header section.
        available: usize,
    },
    /// A Date header not in RFC 1123 format with GMT.
    #[error("line {line}: Date must be an RFC 1123 date in GMT")]
    BadDate {
        /// 1-based line number.
        line: usize,
    },
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// The header section exceeds [`MAX_HEADER_LEN`].
    #[error("header section larger than {MAX_HEADER_LEN} bytes")]
    TooLarge,
    /// A multipart body that cannot be split (no boundary, no delimiter...).
    #[error("malformed multipart body")]
    BadMultipart,
}

impl Error {
    /// The status code a UAS or proxy answers a request rejected with this
    /// error (RFC 3261 §21): 505 for a version it does not speak, 513 for a
    /// message too large to process, 400 for everything else.
    pub fn status_code(&self) -> u16 {
        match self {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-21.5.6
            //# The server does not support, or refuses to support, the SIP
            //# protocol version that was used in the request.
            Error::UnsupportedVersion => 505,
            //= https://www.rfc-editor.org/rfc/rfc3261#section-21.5.8
            //# The server was unable to process the request since the message
            //# length exceeded its capabilities.
            Error::TooLarge => 513,
            _ => 400,
        }
    }
}

/// A header field as found in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Canonical long-form name for known headers (`v` → `Via`,
    /// `cAlL-iD` → `Call-ID`), otherwise the name as written.
    pub name: &'a str,
    /// The name as written.
    pub raw_name: &'a str,
    /// The value without surrounding LWS. Folded lines stay in (CRLF + SP/HT);
    /// every typed accessor treats them as white space.
    pub value: &'a str,
    /// 1-based line number of the field (1 = start line).
    pub line: usize,
}

/// A borrowed view over one SIP message. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Message<'a> {
    buf: &'a [u8],
    text: &'a str,
    text_at: usize,
    start: Start<'a>,
    index: Index,
    body: &'a [u8],
    len: usize,
    content_length: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Start<'a> {
    Request { method: &'a str, uri: Uri<'a> },
    Response { code: u16, reason: &'a str },
}

impl<'a> Message<'a> {
    /// Parses the first message in a datagram.
    ///
    /// Leading CRLFs (keep-alives) are skipped. When Content-Length is present
    /// it bounds the body and any bytes after it are ignored ([`Message::len`]
    /// tells how many bytes the message used); without it the body runs to
    /// the end of `buf`. A datagram whose header section is not terminated by
    /// an empty line is accepted with an empty body.
    ///
    /// # Errors
    /// The first [`Error`] found, in message order.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let skip = framing::leading_crlf_len(buf);
        let rest = &buf[skip..];
        if rest.is_empty() {
            return Err(Error::Empty);
        }
        let (head_end, body_start) = match framing::head_end(rest) {
            Some((h, b)) => (h, b),
            None => (rest.len(), rest.len()),
        };
        if head_end > MAX_HEADER_LEN {
            return Err(Error::TooLarge);
        }
        let text = match core::str::from_utf8(&rest[..head_end]) {
            Ok(t) => t,
            Err(e) => {
                let valid = &rest[..e.valid_up_to()];
                let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
                return Err(Error::NotUtf8 { line });
            }
        };
        let mut lines = LineIter { text, pos: 0 };
        let (_, first_end) = lines.next().ok_or(Error::BadStartLine)?;
        let start = parse_start_line(&text[..first_end])?;

        let mut index = Index::default();
        let mut cur: Option<(usize, usize, usize, usize)> = None; // name_s, name_e, val_s, line
        let mut val_end = 0;
        let mut state = Validate::default();
        let mut line_no = 1;
        for (ls, le) in &mut lines {
            line_no += 1;
            let line = &text[ls..le];
            if line.is_empty() {
                continue;
            }
            //= https://www.rfc-editor.org/rfc/rfc3261#section-7.3.1
            //# Header fields can be extended over multiple lines by preceding
            //# each extra line with at least one SP or horizontal tab (HT).
            if line.starts_with([' ', '\t']) {
                if cur.is_none() {
                    return Err(Error::BadHeaderLine { line: line_no });
                }
                val_end = le;
                continue;
            }
            if let Some(c) = cur.take() {
                finish(text, &mut index, &mut state, c, val_end)?;
            }
            let colon = line
                .find(':')
                .ok_or(Error::BadHeaderLine { line: line_no })?;
            let name = line[..colon].trim_end_matches([' ', '\t']);
            if !lex::is_token(name) {
                return Err(Error::BadHeaderLine { line: line_no });
            }
            cur = Some((ls, ls + name.len(), ls + colon + 1, line_no));
            val_end = le;
        }
        if let Some(c) = cur.take() {
            finish(text, &mut index, &mut state, c, val_end)?;
        }

        //= https://www.rfc-editor.org/rfc/rfc3261#section-20.16
        //# The method MUST match that of the request.
        if let (Start::Request { method, .. }, Some(cseq)) = (&start, state.cseq_method)
            && *method != cseq
        {
            return Err(Error::CSeqMethodMismatch);
        }

        //= https://www.rfc-editor.org/rfc/rfc3261#section-18.3
        //# If the message is sent over a datagram transport and contains a
        //# Content-Length header field, the message body is restricted to the
        //# number of bytes specified in the Content-Length header field.
        let available = rest.len() - body_start;
        let body_len = match state.content_length {
            Some(cl) if cl > available => {
                return Err(Error::BodyTooShort {
                    declared: cl,
                    available,
                });
            }
            Some(cl) => cl,
            None => available,
        };
        let body = &rest[body_start..body_start + body_len];
        Ok(Message {
            buf,
            text,
            text_at: skip,
            start,
            index,
            body,
            len: skip + body_start + body_len,
            content_length: state.content_length,
        })
    }

    /// Bytes of the input used by this message, including skipped leading
    /// CRLFs; bytes after it (a second message in a datagram) are ignored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a message has at least a start line.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The message's bytes, without skipped leading CRLFs or trailing bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        &self.buf[self.text_at..self.len]
    }

    /// True for a request, false for a response.
    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    /// The request method, `None` for a response.
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            Start::Request { method, .. } => Some(Method::from_token(method)),
            Start::Response { .. } => None,
        }
    }

    /// The Request-URI, `None` for a response.
    pub fn request_uri(&self) -> Option<Uri<'a>> {
        match self.start {
            Start::Request { uri, .. } => Some(uri),
            Start::Response { .. } => None,
        }
    }

    /// The status code (100..=699), `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            Start::Response { code, .. } => Some(code),
            Start::Request { .. } => None,
        }
    }

    /// The reason phrase (may be empty or contain UTF-8), `None` for a request.
    pub fn reason(&self) -> Option<&'a str> {
        match self.start {
            Start::Response { reason, .. } => Some(reason),
            Start::Request { .. } => None,
        }
    }

    /// All header fields in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + '_ {
        let text = self.text;
        self.index.iter().map(move |s| s.header(text))
    }

    /// The value of the first header called `name` (case-insensitive; long
    /// and compact forms are equivalent).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.find(name).next().map(|h| h.value)
    }

    /// Every value of every header called `name`, split on commas outside
    /// quoted strings and `<>`, trimmed, empty elements skipped.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.find(name).flat_map(|h| {
            split_top(h.value, b',')
                .map(trim_lws)
                .filter(|v| !v.is_empty())
        })
    }

    /// The header fields called `name`.
    pub fn find<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Header<'a>> + 's {
        let id = known_id(name);
        let text = self.text;
        self.index
            .iter()
            .filter(move |s| match id {
                Some(id) => s.id == id,
                None => {
                    s.id == UNKNOWN
                        && text
                            .get(usize::from(s.name.0)..usize::from(s.name.1))
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                }
            })
            .map(move |s| s.header(text))
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<&'a str> {
        self.header("Call-ID")
    }

    /// From.
    pub fn from(&self) -> Option<NameAddr<'a>> {
        self.header("From").and_then(NameAddr::parse)
    }

    /// To.
    pub fn to(&self) -> Option<NameAddr<'a>> {
        self.header("To").and_then(NameAddr::parse)
    }

    /// CSeq.
    pub fn cseq(&self) -> Option<CSeq<'a>> {
        self.header("CSeq").and_then(CSeq::parse)
    }

    /// Via values, topmost first, across all Via fields.
    pub fn via(&self) -> impl Iterator<Item = Via<'a>> + '_ {
        self.header_values("Via").filter_map(Via::parse)
    }

    /// The first Contact (`None` if absent or `*`).
    pub fn contact(&self) -> Option<NameAddr<'a>> {
        self.contacts().next()
    }

    /// All Contact values (a `*` Contact yields nothing, see
    /// [`Message::is_contact_star`]).
    pub fn contacts(&self) -> impl Iterator<Item = NameAddr<'a>> + '_ {
        self.header_values("Contact").filter_map(NameAddr::parse)
    }

    /// True for `Contact: *` (REGISTER removing all bindings).
    pub fn is_contact_star(&self) -> bool {
        self.header("Contact").is_some_and(|v| v == "*")
    }

    /// Route values in order.
    pub fn route(&self) -> impl Iterator<Item = NameAddr<'a>> + '_ {
        self.header_values("Route").filter_map(NameAddr::parse)
    }

    /// Record-Route values in order.
    pub fn record_route(&self) -> impl Iterator<Item = NameAddr<'a>> + '_ {
        self.header_values("Record-Route")
            .filter_map(NameAddr::parse)
    }

    /// Max-Forwards (validated to fit 0..=255 by `parse`).
    pub fn max_forwards(&self) -> Option<u8> {
        self.header("Max-Forwards")
            .and_then(|v| trim_lws(v).parse().ok())
    }

    /// Expires in seconds; values above 2^32-1 saturate (RFC 3261 §20.19
    /// allows treating malformed values as absent, overlarge ones as large).
    pub fn expires(&self) -> Option<u32> {
        match lex::parse_digits(trim_lws(self.header("Expires")?))? {
            Ok(v) => Some(u32::try_from(v).unwrap_or(u32::MAX)),
            Err(()) => Some(u32::MAX),
        }
    }

    /// Content-Type.
    pub fn content_type(&self) -> Option<MediaType<'a>> {
        self.header("Content-Type").and_then(MediaType::parse)
    }

    /// Content-Length (the first one if repeated).
    pub fn content_length(&self) -> Option<usize> {
        self.content_length
    }

    /// The body, bounded by Content-Length when present.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The `application/sdp` payload: the body itself, or the first
    /// `application/sdp` part of a `multipart/*` body (nested multiparts are
    /// searched two levels deep).
    pub fn sdp_body(&self) -> Option<&'a [u8]> {
        let ct = self.content_type()?;
        multipart::find_sdp(ct, self.body, 2)
    }

    /// What a UAS or proxy must do about a message that parsed. An empty
    /// list means nothing is known to be wrong. Allocates; not for the hot
    /// path.
    pub fn semantic_issues(&self) -> Vec<SemanticIssue<'a>> {
        semantic_issues(self)
    }
}

/// Something wrong with a well-formed message, with the response it calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SemanticIssue<'a> {
    /// A mandatory header is missing (Call-ID, From, To, CSeq, Via; and
    /// Max-Forwards for requests, RFC 3261 §8.1.1). → 400. Elements keeping
    /// RFC 2543 compatibility may instead assume Max-Forwards 70.
    MissingHeader(&'static str),
    /// A single-valued header appears more than once. → 400
    MultipleValues(&'static str),
    /// More than one Content-Length: the framing is ambiguous. → 400
    MultipleContentLength,
    /// A Request-URI scheme other than sip, sips or tel. → 416
    UnsupportedUriScheme(&'a str),
    /// Max-Forwards is 0: a proxy must not forward (→ 483); a UAS may answer
    /// OPTIONS itself.
    TooManyHops,
    /// Require or Proxy-Require lists option tags: a UAS/proxy that does not
    /// support one of them answers 420 with an Unsupported header.
    RequiredExtensions {
        /// `Require` or `Proxy-Require`.
        header: &'static str,
        /// The option tags.
        tags: Vec<&'a str>,
    },
    /// A body type outside [`KNOWN_BODY_TYPES`]. → 415 (with Accept).
    UnsupportedMediaType(&'a str),
    /// An INVITE whose Accept does not allow `application/sdp`. → 406
    NotAcceptable,
    /// Authorization with a scheme other than Digest: challenge again. → 401
    UnsupportedAuthScheme(&'a str),
    /// The top Via branch lacks the `z9hG4bK` cookie (or is only the
    /// cookie): match the transaction with RFC 2543 rules (RFC 3261
    /// §17.2.3). No response.
    Rfc2543Transaction,
    /// A request From without a tag (RFC 2543 syntax). No response.
    MissingFromTag,
    /// A response with more than one Via: the UAC discards it (RFC 3261
    /// §8.1.3.3). No response.
    ResponseWithMultipleVias,
}

impl SemanticIssue<'_> {
    /// The response this issue calls for, `None` if it only changes how the
    /// message is processed (or, for responses, that it is dropped).
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::MissingHeader(_) | Self::MultipleValues(_) | Self::MultipleContentLength => {
                Some(400)
            }
            Self::UnsupportedUriScheme(_) => Some(416),
            Self::TooManyHops => Some(483),
            Self::RequiredExtensions { .. } => Some(420),
            Self::UnsupportedMediaType(_) => Some(415),
            Self::NotAcceptable => Some(406),
            Self::UnsupportedAuthScheme(_) => Some(401),
            Self::Rfc2543Transaction | Self::MissingFromTag | Self::ResponseWithMultipleVias => {
                None
            }
        }
    }
}

/// Body types [`Message::semantic_issues`] considers understood.
pub const KNOWN_BODY_TYPES: &[&str] = &[
    "application/sdp",
    "multipart/mixed",
    "multipart/alternative",
    "multipart/related",
    "text/plain",
    "message/sipfrag",
    "message/sip",
    "application/dtmf-relay",
    "application/dtmf",
    "application/pidf+xml",
    "application/simple-message-summary",
    "application/isup",
];

// ---------------------------------------------------------------------------
// Helpers

//= https://www.rfc-editor.org/rfc/rfc3261#section-7.3.3
//# SIP provides a mechanism to represent common header field names in an
//# abbreviated form.
/// Known header names: (canonical long form, compact form or 0).
const KNOWN: &[(&str, u8)] = &[
    ("Call-ID", b'i'),
    ("From", b'f'),
    ("To", b't'),
    ("Via", b'v'),
    ("Contact", b'm'),
    ("Content-Length", b'l'),
    ("Content-Type", b'c'),
    ("Content-Encoding", b'e'),
    ("Supported", b'k'),
    ("Subject", b's'),
    ("Event", b'o'),
    ("Allow-Events", b'u'),
    ("Refer-To", b'r'),
    ("Referred-By", b'b'),
    ("Session-Expires", b'x'),
    ("Identity", b'y'),
    ("Accept-Contact", b'a'),
    ("Reject-Contact", b'j'),
    ("Request-Disposition", b'd'),
    ("CSeq", 0),
    ("Max-Forwards", 0),
    ("Expires", 0),
    ("Date", 0),
    ("Retry-After", 0),
    ("Require", 0),
    ("Proxy-Require", 0),
    ("Accept", 0),
    ("Authorization", 0),
    ("Proxy-Authorization", 0),
    ("Route", 0),
    ("Record-Route", 0),
    ("Warning", 0),
    ("User-Agent", 0),
    ("Server", 0),
    ("Allow", 0),
    ("Unsupported", 0),
    ("WWW-Authenticate", 0),
    ("Proxy-Authenticate", 0),
    ("Content-Disposition", 0),
    ("MIME-Version", 0),
    ("Reason", 0),
    ("P-Asserted-Identity", 0),
];
const UNKNOWN: u8 = u8::MAX;

fn known_id(name: &str) -> Option<u8> {
    let b = name.as_bytes();
    let pos = if b.len() == 1 {
        let c = b[0].to_ascii_lowercase();
        KNOWN.iter().position(|&(_, k)| k != 0 && k == c)
    } else {
        let first = b.first()?.to_ascii_lowercase();
        KNOWN.iter().position(|&(n, _)| {
            n.len() == b.len()
                && n.as_bytes()[0].to_ascii_lowercase() == first
                && n.eq_ignore_ascii_case(name)
        })
    };
    pos.and_then(|p| u8::try_from(p).ok())
}

fn known_name(id: u8) -> &'static str {
    KNOWN.get(usize::from(id)).map_or("", |k| k.0)
}

#[derive(Debug, Clone, Copy, Default)]
/// Offsets into the header text, which is at most [`MAX_HEADER_LEN`]
/// (65,535) bytes and therefore has at most as many lines: `u16` suffices.
struct Slot {
    name: (u16, u16),
    value: (u16, u16),
    line: u16,
    id: u8,
}

/// Narrows an offset into the header text (invariant: ≤ [`MAX_HEADER_LEN`]).
fn off(x: usize) -> u16 {
    u16::try_from(x).unwrap_or(u16::MAX)
}

impl Slot {
    fn header<'a>(&self, text: &'a str) -> Header<'a> {
        let raw_name = text
            .get(usize::from(self.name.0)..usize::from(self.name.1))
            .unwrap_or("");
        Header {
            name: if self.id == UNKNOWN {
                raw_name
            } else {
                known_name(self.id)
            },
            raw_name,
            value: text
                .get(usize::from(self.value.0)..usize::from(self.value.1))
                .unwrap_or(""),
            line: usize::from(self.line),
        }
    }
}

/// Header index: inline for the first [`INLINE_HEADERS`] fields.
#[derive(Debug, Clone)]
struct Index {
    inline: [Slot; INLINE_HEADERS],
    len: usize,
    spill: Vec<Slot>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            inline: [Slot::default(); INLINE_HEADERS],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl Index {
    fn push(&mut self, s: Slot) {
        if self.len < INLINE_HEADERS {
            self.inline[self.len] = s;
            self.len += 1;
        } else {
            self.spill.push(s);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.inline[..self.len].iter().chain(self.spill.iter())
    }
}

/// Lines of the header text as (start, end) offsets without CR/LF.
struct LineIter<'a> {
    text: &'a str,
    pos: usize,
}

impl Iterator for LineIter<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.pos >= self.text.len() {
            return None;
        }
        let b = self.text.as_bytes();
        let start = self.pos;
        let nl = b[start..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| start + p);
        self.pos = nl + 1;
        let end = if nl > start && b[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        Some((start, end))
    }
}

#[derive(Default)]
struct Validate<'a> {
    cseq_method: Option<&'a str>,
    content_length: Option<usize>,
}

fn finish<'a>(
    text: &'a str,
    index: &mut Index,
    state: &mut Validate<'a>,
    (ns, ne, vs, line): (usize, usize, usize, usize),
    ve: usize,
) -> Result<(), Error> {
    let raw = text.get(vs..ve).unwrap_or("");
    let value = trim_lws(raw);
    let start = vs + (raw.len() - lex::trim_lws_start(raw).len());
    let id = known_id(text.get(ns..ne).unwrap_or("")).unwrap_or(UNKNOWN);
    index.push(Slot {
        name: (off(ns), off(ne)),
        value: (off(start), off(start + value.len())),
        line: off(line),
        id,
    });
    if id == UNKNOWN {
        return Ok(());
    }
    let header = known_name(id);
    let map = |e: ValueError| match e {
        ValueError::Syntax => Error::BadHeaderValue { line, header },
        ValueError::Unterminated => Error::UnterminatedQuote { line },
        ValueError::DisplayName => Error::BadDisplayName { line },
        ValueError::Uri(reason) => Error::BadUri {
            line,
            header,
            reason,
        },
        ValueError::Unenclosed => Error::UnenclosedUri { line, header },
        ValueError::TooLarge => Error::ValueTooLarge { line, header },
    };
    match header {
        "CSeq" => {
            let c = CSeq::parse_checked(value).map_err(map)?;
            state.cseq_method.get_or_insert(c.method.as_str());
        }
        "Max-Forwards" => match lex::parse_digits(value) {
            Some(Ok(v)) if v <= 255 => {}
            Some(_) => return Err(Error::ValueTooLarge { line, header }),
            None => return Err(Error::BadHeaderValue { line, header }),
        },
        //= https://www.rfc-editor.org/rfc/rfc3261#section-20.14
        //# Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
        "Content-Length" => match lex::parse_digits(value) {
            Some(Ok(v)) => {
                let v = usize::try_from(v).map_err(|_| Error::BadContentLength { line })?;
                state.content_length.get_or_insert(v);
            }
            _ => return Err(Error::BadContentLength { line }),
        },
        "From" | "To" => {
            NameAddr::parse_checked(value).map_err(map)?;
        }
        "Contact" if value == "*" => {}
        "Contact" | "Route" | "Record-Route" => {
            for v in split_top(value, b',') {
                NameAddr::parse_checked(v).map_err(map)?;
            }
        }
        "Via" => {
            for v in split_top(value, b',') {
                Via::parse_checked(v).map_err(map)?;
            }
        }
        "Date" if !value::is_sip_date(value) => return Err(Error::BadDate { line }),
        _ => {}
    }
    Ok(())
}

//= https://www.rfc-editor.org/rfc/rfc3261#section-7.1
//# The elements of the Request-Line are separated by single space (SP)
//# characters.
fn parse_start_line(line: &str) -> Result<Start<'_>, Error> {
    let first_sp = line.find(' ').ok_or(Error::BadStartLine)?;
    let first = &line[..first_sp];
    if first.contains('/') {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-7.2
        //# Status-Line  =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
        check_version(first)?;
        let rest = &line[first_sp + 1..];
        let (code, reason) = match rest.find(' ') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let code = match lex::parse_digits(code) {
            Some(Ok(v)) if code.len() == 3 && (100..=699).contains(&v) => v as u16,
            _ => return Err(Error::BadStatusCode),
        };
        return Ok(Start::Response { code, reason });
    }
    if !lex::is_token(first) {
        return Err(Error::BadMethod);
    }
    let last_sp = line.rfind(' ').ok_or(Error::BadStartLine)?;
    if last_sp == first_sp {
        return Err(Error::BadStartLine);
    }
    check_version(&line[last_sp + 1..])?;
    let uri = &line[first_sp + 1..last_sp];
    if uri.is_empty() || uri.starts_with(' ') || uri.ends_with(' ') {
        return Err(Error::BadStartLine);
    }
    let uri = Uri::parse(uri).map_err(Error::BadRequestUri)?;
    //= https://www.rfc-editor.org/rfc/rfc3261#section-19.1.1
    //# headers              -       -       -       o      -          o       -
    // (Table 1: headers are not allowed in a Request-URI.)
    if uri.headers.is_some() {
        return Err(Error::BadRequestUri(UriError::HeadersNotAllowed));
    }
    Ok(Start::Request { method: first, uri })
}

fn check_version(v: &str) -> Result<(), Error> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let numbered = v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v[4..]
            .split_once('.')
            .is_some_and(|(a, b)| lex::parse_digits(a).is_some() && lex::parse_digits(b).is_some());
    if numbered {
        Err(Error::UnsupportedVersion)
    } else {
        Err(Error::BadStartLine)
    }
}

fn semantic_issues<'a>(m: &Message<'a>) -> Vec<SemanticIssue<'a>> {
    let mut out = Vec::new();
    let count = |name: &str| m.find(name).count();
    let mut required: Vec<&'static str> = vec!["Call-ID", "From", "To", "CSeq", "Via"];
    if m.is_request() {
        required.push("Max-Forwards");
    }
    //= https://www.rfc-editor.org/rfc/rfc3261#section-8.1.1
    //# A valid SIP request formulated by a UAC MUST, at a minimum, contain
    //# the following header fields: To, From, CSeq, Call-ID, Max-Forwards,
    //# and Via; all of these header fields are mandatory in all SIP
    //# requests.
    for h in &required {
        if count(h) == 0 {
            out.push(SemanticIssue::MissingHeader(h));
        }
    }
    for h in [
        "Call-ID",
        "From",
        "To",
        "CSeq",
        "Max-Forwards",
        "Content-Type",
    ] {
        if count(h) > 1 {
            out.push(SemanticIssue::MultipleValues(h));
        }
    }
    if count("Content-Length") > 1 {
        out.push(SemanticIssue::MultipleContentLength);
    }
    if m.is_request() {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-8.2.2.1
        //# If the Request-URI uses a scheme not supported by the UAS, it
        //# SHOULD reject the request with a 416 (Unsupported URI Scheme)
        //# response.
        if let Some(u) = m.request_uri()
            && u.kind == Scheme::Other
        {
            out.push(SemanticIssue::UnsupportedUriScheme(u.scheme));
        }
        if m.max_forwards() == Some(0) {
            out.push(SemanticIssue::TooManyHops);
        }
        for header in ["Require", "Proxy-Require"] {
            let tags: Vec<&str> = m.header_values(header).collect();
            if !tags.is_empty() {
                out.push(SemanticIssue::RequiredExtensions { header, tags });
            }
        }
        if !m.body.is_empty()
            && let Some(ct) = m.content_type()
        {
            let known = KNOWN_BODY_TYPES
                .iter()
                .any(|k| k.split_once('/').is_some_and(|(t, s)| ct.is(t, s)));
            if !known {
                let raw = m.header("Content-Type").unwrap_or("");
                out.push(SemanticIssue::UnsupportedMediaType(raw));
            }
        }
        if m.method() == Some(Method::Invite) && m.find("Accept").next().is_some() {
            let sdp_ok = m.header_values("Accept").any(|a| {
                MediaType::parse(a).is_some_and(|t| {
                    t.is("application", "sdp") || t.is("application", "*") || t.is("*", "*")
                })
            });
            if !sdp_ok {
                out.push(SemanticIssue::NotAcceptable);
            }
        }
        if let Some(auth) = m.header("Authorization") {
            let scheme = auth.split(|c: char| c.is_ascii() && is_lws(c as u8)).next();
            if let Some(s) = scheme
                && !s.eq_ignore_ascii_case("Digest")
            {
                out.push(SemanticIssue::UnsupportedAuthScheme(s));
            }
        }
        if m.via().next().is_some_and(|v| !v.is_rfc3261_branch()) {
            out.push(SemanticIssue::Rfc2543Transaction);
        }
        if m.from().is_some_and(|f| f.tag().is_none()) {
            out.push(SemanticIssue::MissingFromTag);
        }
    } else if m.header_values("Via").nth(1).is_some() {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-8.1.3.3
        //# If more than one Via header field value is present in a response, the
        //# UAC SHOULD discard the message.
        out.push(SemanticIssue::ResponseWithMultipleVias);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds, SIP/2.0/TCP 192.0.2.9\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@example.com>\r\n\
        From: \"Alice, \\\"A\\\"\" <sip:alice@example.com>;tag=1928301774\r\n\
        i: a84b4c76e66710@pc33.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        m: <sip:alice@pc33.example.com>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\r\nextra";

    #[test]
    fn parses_request() {
        let m = Message::parse(INVITE).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.request_uri().unwrap().user, Some("bob"));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.example.com"));
        assert_eq!(m.header("CALL-id"), m.header("i"));
        let from = m.from().unwrap();
        assert_eq!(from.display_name_text().unwrap(), "Alice, \"A\"");
        assert_eq!(from.tag(), Some("1928301774"));
        assert_eq!(m.to().unwrap().display_name, Some("Bob"));
        assert_eq!(m.cseq().unwrap().seq, 314159);
        let via: Vec<_> = m.via().collect();
        assert_eq!(via.len(), 2);
        assert_eq!(via[1].transport, "TCP");
        assert_eq!(m.contact().unwrap().uri.host, Some("pc33.example.com"));
        assert_eq!(m.max_forwards(), Some(70));
        assert!(m.content_type().unwrap().is("application", "sdp"));
        assert_eq!(m.body(), b"v=0\r");
        assert_eq!(m.sdp_body(), Some(&b"v=0\r"[..]));
        assert_eq!(m.len(), INVITE.len() - 6);
        assert!(
            m.headers()
                .any(|h| h.name == "Contact" && h.raw_name == "m")
        );
        assert_eq!(m.semantic_issues(), vec![]);
    }

    #[test]
    fn sdp_inside_multipart() {
        let msg = |ct: &str, body: &str| {
            format!(
                "INVITE sip:b@example.com SIP/2.0\r\nContent-Type: {ct}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        // SIP-I style: SDP next to an ISUP part.
        let mixed = msg(
            "multipart/mixed;boundary=unique-boundary-1",
            "--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n\
             --unique-boundary-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n\r\n\x01\x02\r\n\
             --unique-boundary-1--\r\n",
        );
        let m = Message::parse(mixed.as_bytes()).unwrap();
        assert_eq!(m.sdp_body(), Some(&b"v=0\r\n"[..]));
        // SDP in an alternative nested inside a mixed body.
        let nested = msg(
            "multipart/mixed; boundary=\"outer\"",
            "--outer\r\nContent-Type: multipart/alternative;boundary=inner\r\n\r\n\
             --inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n--inner\r\n\
             content-type: APPLICATION/SDP\r\n\r\nv=0\r\n--inner--\r\n--outer--",
        );
        let m = Message::parse(nested.as_bytes()).unwrap();
        assert_eq!(m.sdp_body(), Some(&b"v=0"[..]));
        let plain = msg("text/plain", "v=0");
        assert_eq!(Message::parse(plain.as_bytes()).unwrap().sdp_body(), None);
    }

    #[test]
    fn start_line_errors() {
        let e = |s: &str| Message::parse(s.as_bytes()).unwrap_err();
        assert_eq!(e("\r\n\r\n"), Error::Empty);
        assert_eq!(
            e("INVITE sip:a@b SIP/3.0\r\n\r\n"),
            Error::UnsupportedVersion
        );
        assert_eq!(Error::UnsupportedVersion.status_code(), 505);
        assert_eq!(e("INVITE sip:a@b HTTP/1.1\r\n\r\n"), Error::BadStartLine);
        assert_eq!(e("SIP/2.0 99 Hm\r\n\r\n"), Error::BadStatusCode);
        assert_eq!(e("IN(VITE sip:a@b SIP/2.0\r\n\r\n"), Error::BadMethod);
        assert_eq!(
            e("INVITE sip:a@b SIP/2.0\r\n x\r\n\r\n"),
            Error::BadHeaderLine { line: 2 }
        );
        assert_eq!(
            e("INVITE sip:a@b SIP/2.0\r\nNo colon\r\n\r\n"),
            Error::BadHeaderLine { line: 2 }
        );
        let r = Message::parse(b"SIP/2.0 180 \r\n\r\n").unwrap();
        assert_eq!((r.status(), r.reason()), (Some(180), Some("")));
    }
}
