//! Session descriptions (RFC 8866, which obsoletes RFC 4566).
//!
//! [`SessionDescription`] is a borrowed view that keeps every line of the
//! input, with its own line ending, so [`SessionDescription::emit`]
//! reproduces the input byte for byte. [`Sdp`] is the owned, editable form:
//! each setter rewrites (or inserts, or removes) only the lines it must, and
//! every other line is emitted exactly as received.
//!
//! ```
//! use wire::sdp::{Direction, SessionDescription};
//! let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
//!             m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
//! let sdp = SessionDescription::parse(text)?;
//! let media = sdp.media(0).unwrap();
//! assert_eq!(media.port(), 4000);
//! assert_eq!(media.codec(wire::PayloadType(0)).unwrap().name, "PCMU");
//! let mut owned = sdp.to_owned();
//! owned.set_media_port(0, 5000)?;
//! owned.set_direction(Some(0), Direction::SendOnly)?;
//! assert!(owned.to_string().contains("m=audio 5000 RTP/AVP 0 101\r\n"));
//! # Ok::<(), wire::sdp::Error>(())
//! ```

use core::fmt;
use std::net::IpAddr;
use std::ops::Range;

use crate::types::{ClockRate, PayloadType};

/// Why an SDP could not be parsed or edited. Line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not valid UTF-8.
    #[error("SDP is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A line is not of the form `<type>=<value>`.
    #[error("line {line}: expected `<type>=<value>`")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// A field of a line has an invalid value.
    #[error("line {line}: invalid {field} in `{kind}=` line")]
    InvalidField {
        /// 1-based line number.
        line: usize,
        /// The line type letter.
        kind: char,
        /// Which field (e.g. "port", "sess-version", "clock rate").
        field: &'static str,
    },
    /// The first line is not `v=0`.
    #[error("line 1: an SDP must start with `v=0`")]
    MissingVersion,
    /// A required line is missing.
    #[error("missing `{kind}=` line")]
    Missing {
        /// The line type letter.
        kind: char,
    },
    /// An edit named a media section that does not exist.
    #[error("no media section {index}")]
    NoSuchMedia {
        /// The 0-based index given.
        index: usize,
    },
}

/// A parsed session description borrowing its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription<'a> {
    /// Every line: text without line ending, then the ending ("\r\n", "\n"
    /// or "" for an unterminated last line).
    lines: Vec<(&'a str, &'a str)>,
    /// Index in `lines` of each `m=` line.
    media_starts: Vec<usize>,
}

/// The `o=` line (RFC 8866 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// User's login on the originating host, or "-".
    pub username: &'a str,
    /// Session identifier (numeric string).
    pub session_id: &'a str,
    /// Version number of this session description.
    pub session_version: u64,
    /// Network type, "IN".
    pub nettype: &'a str,
    /// Address type, "IP4" or "IP6".
    pub addrtype: &'a str,
    /// Address or FQDN of the originating host.
    pub address: &'a str,
}

/// A `c=` line (RFC 8866 §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection<'a> {
    /// Network type, "IN".
    pub nettype: &'a str,
    /// Address type, "IP4" or "IP6".
    pub addrtype: &'a str,
    /// The connection address, possibly with `/ttl` and `/count` suffixes.
    pub address: &'a str,
}

impl Connection<'_> {
    /// The address as an IP address (without multicast suffixes), if it is
    /// one rather than an FQDN.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
}

/// A `b=` line (RFC 8866 §5.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth<'a> {
    /// "CT", "AS", "TIAS", …
    pub bwtype: &'a str,
    /// The value (kbit/s for CT and AS).
    pub value: u64,
}

/// An `a=` line split into name and optional value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// Attribute name.
    pub name: &'a str,
    /// Value after the first colon, `None` for a property attribute.
    pub value: Option<&'a str>,
}

/// Media direction attributes (RFC 8866 §6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`, the default.
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attr(name: &str) -> Option<Self> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// An `a=rtpmap` attribute (RFC 8866 §6.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// The payload type it maps.
    pub pt: PayloadType,
    /// Encoding name as written (e.g. "opus", "PCMU", "telephone-event").
    pub encoding: &'a str,
    /// RTP clock rate.
    pub clock_rate: ClockRate,
    /// Encoding parameters: the number of audio channels, if given.
    pub channels: Option<u16>,
}

/// A codec resolved from `rtpmap` or from the static payload type table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec<'a> {
    /// Encoding name.
    pub name: &'a str,
    /// RTP clock rate.
    pub clock_rate: ClockRate,
    /// Number of audio channels (1 when not given).
    pub channels: u16,
}

/// An `a=rtcp` attribute (RFC 3605).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtcp<'a> {
    /// RTCP port.
    pub port: u16,
    /// Optional connection address for RTCP.
    pub connection: Option<Connection<'a>>,
}

/// One media section (`m=` line and the lines up to the next one).
#[derive(Clone, Copy, Debug)]
pub struct Media<'s, 'a> {
    sdp: &'s SessionDescription<'a>,
    lines: &'s [(&'a str, &'a str)],
}

impl<'a> SessionDescription<'a> {
    /// Parses an SDP body given as bytes (it must be UTF-8).
    ///
    /// # Errors
    ///
    /// [`Error::NotUtf8`], or any error of [`SessionDescription::parse`].
    pub fn parse_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        let text = core::str::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        Self::parse(text)
    }

    /// Parses an SDP body. Lines may end in CRLF or LF; both are kept.
    ///
    /// # Errors
    ///
    /// [`Error::MissingVersion`] if the first line is not `v=0`,
    /// [`Error::Malformed`] for a line that is not `<type>=<value>`,
    /// [`Error::InvalidField`] for a bad `o=`, `c=`, `m=`, `t=`, `b=`,
    /// `a=rtpmap` or `a=rtcp` field, [`Error::Missing`] if `o=`, `s=` or
    /// `t=` is absent.
    pub fn parse(text: &'a str) -> Result<Self, Error> {
        Self::parse_inner(text, true)
    }

    /// Parses like [`SessionDescription::parse_bytes`], but accepts a
    /// description without `o=`, `s=` or `t=` lines. MGCP (RFC 3435 §3.4)
    /// uses such reduced descriptions, and an analyser of captured traffic
    /// should read what endpoints actually sent; every other check stays.
    ///
    /// # Errors
    ///
    /// As [`SessionDescription::parse_bytes`], except [`Error::Missing`].
    pub fn parse_bytes_lenient(bytes: &'a [u8]) -> Result<Self, Error> {
        let text = core::str::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        Self::parse_inner(text, false)
    }

    fn parse_inner(text: &'a str, strict: bool) -> Result<Self, Error> {
        let mut lines = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (line, ending, next) = match rest.find('\n') {
                Some(nl) => {
                    let (line, ending) = match rest[..nl].strip_suffix('\r') {
                        Some(l) => (l, &rest[nl - 1..=nl]),
                        None => (&rest[..nl], &rest[nl..=nl]),
                    };
                    (line, ending, &rest[nl + 1..])
                }
                None => (rest, "", ""),
            };
            lines.push((line, ending));
            rest = next;
        }
        let mut media_starts = Vec::new();
        let mut seen = [false; 3];
        for (i, (line, _)) in lines.iter().enumerate() {
            let n = i + 1;
            if line.is_empty() {
                // Tolerated (some stacks add a trailing blank line).
                continue;
            }
            //= https://www.rfc-editor.org/rfc/rfc8866#section-5
            //# An SDP description consists of a number of lines of text of
            //# the form:
            //#
            //#    <type>=<value>
            //#
            //# where <type> is exactly one case-significant character and
            //# <value> is structured text whose format depends on <type>.
            let b = line.as_bytes();
            if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
                return Err(Error::Malformed { line: n });
            }
            let kind = b[0];
            // The first two bytes are ASCII, so 2 is a char boundary.
            let value = &line[2..];
            if i == 0 {
                //= https://www.rfc-editor.org/rfc/rfc8866#section-5.1
                //# The "v=" line (version-field) gives the version of the
                //# Session Description Protocol.  This memo defines version 0.
                if kind != b'v' || value != "0" {
                    return Err(Error::MissingVersion);
                }
                continue;
            }
            let in_session = media_starts.is_empty();
            match kind {
                b'o' if in_session => {
                    parse_origin(value).ok_or_else(|| origin_error(n, value))?;
                    seen[0] = true;
                }
                b's' if in_session => seen[1] = true,
                b't' => {
                    let mut f = value.split_ascii_whitespace();
                    let ok = f.next().is_some_and(|v| v.parse::<u64>().is_ok())
                        && f.next().is_some_and(|v| v.parse::<u64>().is_ok());
                    if !ok {
                        return Err(invalid(n, 't', "time"));
                    }
                    seen[2] = true;
                }
                b'c' => {
                    parse_connection(value).ok_or_else(|| invalid(n, 'c', "connection"))?;
                }
                b'b' => {
                    parse_bandwidth(value).ok_or_else(|| invalid(n, 'b', "bandwidth"))?;
                }
                b'm' => {
                    check_media_line(value, n)?;
                    media_starts.push(i);
                }
                b'a' => check_attribute(value, n)?,
                _ => {}
            }
        }
        if lines.first().is_none_or(|(l, _)| l.is_empty()) {
            return Err(Error::MissingVersion);
        }
        for (kind, ok) in ['o', 's', 't'].into_iter().zip(seen) {
            if strict && !ok {
                return Err(Error::Missing { kind });
            }
        }
        Ok(SessionDescription {
            lines,
            media_starts,
        })
    }

    /// The protocol version (always 0 once parsed).
    pub fn version(&self) -> u32 {
        0
    }

    /// The `o=` line.
    pub fn origin(&self) -> Option<Origin<'a>> {
        self.session_values(b'o').find_map(parse_origin)
    }

    /// The `s=` line's value.
    pub fn session_name(&self) -> Option<&'a str> {
        self.session_values(b's').next()
    }

    /// The session-level `c=` line.
    pub fn connection(&self) -> Option<Connection<'a>> {
        self.session_values(b'c').find_map(parse_connection)
    }

    /// Session-level `b=` lines.
    pub fn bandwidths(&self) -> impl Iterator<Item = Bandwidth<'a>> + '_ {
        self.session_values(b'b').filter_map(parse_bandwidth)
    }

    /// The first `t=` line: start and stop times (NTP seconds, 0 = unbounded).
    pub fn timing(&self) -> Option<(u64, u64)> {
        self.session_values(b't').find_map(|v| {
            let mut f = v.split_ascii_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
    }

    /// Session-level attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'a>> + '_ {
        self.session_values(b'a').map(parse_attribute)
    }

    /// The value of the first session-level attribute `name` (`Some("")`
    /// for a property attribute).
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        find_attribute(self.attributes(), name)
    }

    /// The session-level direction (default `sendrecv`).
    pub fn direction(&self) -> Direction {
        direction_of(self.attributes()).unwrap_or_default()
    }

    /// Number of media sections.
    pub fn media_count(&self) -> usize {
        self.media_starts.len()
    }

    /// Media section `index` (0-based).
    pub fn media(&self, index: usize) -> Option<Media<'_, 'a>> {
        let range = self.media_range(index)?;
        Some(Media {
            sdp: self,
            lines: self.lines.get(range)?,
        })
    }

    /// All media sections in order.
    pub fn media_sections(&self) -> impl Iterator<Item = Media<'_, 'a>> + '_ {
        (0..self.media_count()).filter_map(|i| self.media(i))
    }

    /// Appends the SDP, byte for byte as parsed, to `out`.
    pub fn emit(&self, out: &mut String) {
        for (line, ending) in &self.lines {
            out.push_str(line);
            out.push_str(ending);
        }
    }

    /// An owned, editable copy.
    pub fn to_owned(&self) -> Sdp {
        Sdp {
            lines: self
                .lines
                .iter()
                .map(|(l, e)| ((*l).to_owned(), Ending::from_str(e)))
                .collect(),
        }
    }
}

impl fmt::Display for SessionDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (line, ending) in &self.lines {
            f.write_str(line)?;
            f.write_str(ending)?;
        }
        Ok(())
    }
}

impl<'s, 'a> Media<'s, 'a> {
    fn m_fields(&self) -> core::str::SplitAsciiWhitespace<'a> {
        let value = self
            .lines
            .first()
            .map_or("", |(l, _)| l.get(2..).unwrap_or(""));
        value.split_ascii_whitespace()
    }

    /// Media type: "audio", "video", "text", "application", "message", or
    /// another token.
    pub fn kind(&self) -> &'a str {
        self.m_fields().next().unwrap_or("")
    }

    /// Transport port (0 means the stream is disabled or rejected).
    pub fn port(&self) -> u16 {
        self.m_fields()
            .nth(1)
            .and_then(|p| p.split('/').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Number of ports from a `port/count` form, if given.
    pub fn port_count(&self) -> Option<u16> {
        self.m_fields()
            .nth(1)
            .and_then(|p| p.split_once('/')?.1.parse().ok())
    }

    /// Transport protocol, e.g. "RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF".
    pub fn proto(&self) -> &'a str {
        self.m_fields().nth(2).unwrap_or("")
    }

    /// Media formats as written (payload type numbers for RTP).
    pub fn formats(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.m_fields().skip(3).filter(|f| !f.is_empty())
    }

    /// The numeric media formats as payload types.
    pub fn payload_types(&self) -> impl Iterator<Item = PayloadType> + use<'a> {
        self.formats()
            .filter_map(|f| f.parse().ok().map(PayloadType))
    }

    /// The media-level `c=` line, if any.
    pub fn own_connection(&self) -> Option<Connection<'a>> {
        self.values(b'c').find_map(parse_connection)
    }

    /// The effective connection: media-level `c=`, else session-level.
    pub fn connection(&self) -> Option<Connection<'a>> {
        self.own_connection().or_else(|| self.sdp.connection())
    }

    /// Media-level `b=` lines.
    pub fn bandwidths(&self) -> impl Iterator<Item = Bandwidth<'a>> + use<'s, 'a> {
        self.values(b'b').filter_map(parse_bandwidth)
    }

    /// Media-level attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'a>> + use<'s, 'a> {
        self.values(b'a').map(parse_attribute)
    }

    /// The value of the first media-level attribute `name` (`Some("")` for
    /// a property attribute).
    pub fn attribute(&self, name: &str) -> Option<&'a str> {
        find_attribute(self.attributes(), name)
    }

    /// All `a=rtpmap` attributes.
    pub fn rtpmaps(&self) -> impl Iterator<Item = RtpMap<'a>> + use<'s, 'a> {
        self.attributes()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| parse_rtpmap(a.value?))
    }

    /// The `a=rtpmap` for `pt`.
    pub fn rtpmap(&self, pt: PayloadType) -> Option<RtpMap<'a>> {
        self.rtpmaps().find(|m| m.pt == pt)
    }

    /// The format parameters of `a=fmtp:<pt> <params>`.
    pub fn fmtp(&self, pt: PayloadType) -> Option<&'a str> {
        self.attributes()
            .filter(|a| a.name == "fmtp")
            .filter_map(|a| a.value?.split_once(' '))
            .find(|(p, _)| p.parse::<u8>().ok() == Some(pt.0))
            .map(|(_, params)| params)
    }

    /// `a=ptime`, in milliseconds.
    pub fn ptime(&self) -> Option<u32> {
        parse_ms(self.attribute("ptime")?)
    }

    /// `a=maxptime`, in milliseconds.
    pub fn maxptime(&self) -> Option<u32> {
        parse_ms(self.attribute("maxptime")?)
    }

    /// The effective direction: media-level attribute, else session-level,
    /// else `sendrecv`.
    //= https://www.rfc-editor.org/rfc/rfc8866#section-6.7
    //# If none of the attributes "sendonly", "recvonly", "inactive", and
    //# "sendrecv" is present, "sendrecv" SHOULD be assumed as the default
    //# for sessions that are not of the conference type "broadcast" or "H332"
    pub fn direction(&self) -> Direction {
        direction_of(self.attributes())
            .or_else(|| direction_of(self.sdp.attributes()))
            .unwrap_or_default()
    }

    /// The `a=rtcp` attribute (RFC 3605).
    pub fn rtcp(&self) -> Option<Rtcp<'a>> {
        parse_rtcp(self.attribute("rtcp")?)
    }

    /// True if `a=rtcp-mux` is present (RFC 5761).
    pub fn rtcp_mux(&self) -> bool {
        self.attribute("rtcp-mux").is_some()
    }

    /// The codec for `pt`: from `a=rtpmap`, else from the static payload
    /// type table (RFC 3551).
    pub fn codec(&self, pt: PayloadType) -> Option<Codec<'a>> {
        if let Some(map) = self.rtpmap(pt) {
            return Some(Codec {
                name: map.encoding,
                clock_rate: map.clock_rate,
                channels: map.channels.unwrap_or(1),
            });
        }
        let (name, clock_rate) = pt.static_info()?;
        Some(Codec {
            name,
            clock_rate,
            channels: 1,
        })
    }

    fn values(&self, kind: u8) -> impl Iterator<Item = &'a str> + use<'s, 'a> {
        values_of(self.lines.get(1..).unwrap_or(&[]), kind)
    }
}

/// An owned SDP whose edits touch only the lines they must.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp {
    lines: Vec<(String, Ending)>,
}

impl Sdp {
    /// Parses and copies an SDP.
    ///
    /// # Errors
    ///
    /// As [`SessionDescription::parse`].
    pub fn parse(text: &str) -> Result<Self, Error> {
        Ok(SessionDescription::parse(text)?.to_owned())
    }

    /// A borrowed view of the current text (re-parsed).
    ///
    /// # Errors
    ///
    /// Only if an edit produced an invalid SDP (not expected).
    pub fn view<'b>(&self, buf: &'b mut String) -> Result<SessionDescription<'b>, Error> {
        buf.clear();
        self.emit(buf);
        SessionDescription::parse(buf)
    }

    /// Appends the SDP text to `out`.
    pub fn emit(&self, out: &mut String) {
        for (line, ending) in &self.lines {
            out.push_str(line);
            out.push_str(ending.as_str());
        }
    }

    /// Number of media sections.
    pub fn media_count(&self) -> usize {
        (0..self.lines.len())
            .filter(|&i| self.kind(i) == Some(b'm'))
            .count()
    }

    /// Sets the address of the session-level `c=` line (`media: None`) or
    /// of media section `media`'s `c=` line, inserting a media-level line
    /// after `m=` (and `i=`) if the section has none. The address type
    /// follows the address (IP4/IP6).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchMedia`], or [`Error::Missing`] when asked for a
    /// session-level line that does not exist.
    pub fn set_connection_address(
        &mut self,
        media: Option<usize>,
        address: IpAddr,
    ) -> Result<(), Error> {
        let range = self.section(media)?;
        let addrtype = if address.is_ipv4() { "IP4" } else { "IP6" };
        let existing = range.clone().find(|&i| self.kind(i) == Some(b'c'));
        match existing {
            Some(i) => {
                let nettype = self.lines[i]
                    .0
                    .get(2..)
                    .and_then(|v| v.split_ascii_whitespace().next())
                    .unwrap_or("IN")
                    .to_owned();
                self.lines[i].0 = format!("c={nettype} {addrtype} {address}");
            }
            None if media.is_none() => return Err(Error::Missing { kind: 'c' }),
            None => {
                //= https://www.rfc-editor.org/rfc/rfc8866#section-5
                //#       m=  (media name and transport address)
                //#       i=* (media title)
                //#       c=* (connection information -- optional if included at
                //#            session level)
                let mut at = range.start + 1;
                while at < range.end && self.kind(at) == Some(b'i') {
                    at += 1;
                }
                self.insert(at, format!("c=IN {addrtype} {address}"));
            }
        }
        Ok(())
    }

    /// Sets the port of media section `media`'s `m=` line, keeping any
    /// `/count`.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchMedia`].
    pub fn set_media_port(&mut self, media: usize, port: u16) -> Result<(), Error> {
        let at = self.section(Some(media))?.start;
        let line = &self.lines[at].0;
        let mut fields: Vec<String> = line
            .get(2..)
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(p) = fields.get_mut(1) {
            *p = match p.split_once('/') {
                Some((_, count)) => format!("{port}/{count}"),
                None => port.to_string(),
            };
        }
        self.lines[at].0 = format!("m={}", fields.join(" "));
        Ok(())
    }

    /// Sets (or with `None` removes) media section `media`'s `a=rtcp`
    /// attribute: `port` and optionally an address (RFC 3605).
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchMedia`].
    pub fn set_rtcp(
        &mut self,
        media: usize,
        rtcp: Option<(u16, Option<IpAddr>)>,
    ) -> Result<(), Error> {
        let range = self.section(Some(media))?;
        let existing = range.clone().find(|&i| self.attr_name(i) == Some("rtcp"));
        //= https://www.rfc-editor.org/rfc/rfc3605#section-2.1
        //# rtcp-attribute =  "a=rtcp:" port  [nettype space addrtype space
        //#                      connection-address] CRLF
        let text = rtcp.map(|(port, addr)| match addr {
            Some(a) if a.is_ipv4() => format!("a=rtcp:{port} IN IP4 {a}"),
            Some(a) => format!("a=rtcp:{port} IN IP6 {a}"),
            None => format!("a=rtcp:{port}"),
        });
        match (existing, text) {
            (Some(i), Some(t)) => self.lines[i].0 = t,
            (Some(i), None) => self.remove(i),
            (None, Some(t)) => self.insert(range.end, t),
            (None, None) => {}
        }
        Ok(())
    }

    /// Sets the direction attribute of the session (`media: None`) or of a
    /// media section, replacing an existing direction attribute there or
    /// appending one to the section.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchMedia`].
    pub fn set_direction(
        &mut self,
        media: Option<usize>,
        direction: Direction,
    ) -> Result<(), Error> {
        let range = self.section(media)?;
        let existing = range
            .clone()
            .find(|&i| self.attr_name(i).and_then(Direction::from_attr).is_some());
        let text = format!("a={}", direction.as_str());
        match existing {
            Some(i) => self.lines[i].0 = text,
            None => {
                // Session attributes go after t=/r=/z=/k= lines, i.e. at the
                // end of the session section, like media attributes.
                self.insert(range.end, text);
            }
        }
        Ok(())
    }

    /// Keeps only the payload types of media section `media` for which
    /// `keep` returns true (non-numeric formats are always kept), and
    /// removes the `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines of those
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchMedia`].
    pub fn retain_formats(
        &mut self,
        media: usize,
        mut keep: impl FnMut(PayloadType) -> bool,
    ) -> Result<(), Error> {
        let range = self.section(Some(media))?;
        let line = &self.lines[range.start].0;
        let mut fields = line.get(2..).unwrap_or_default().split_ascii_whitespace();
        let head: Vec<&str> = fields.by_ref().take(3).collect();
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for f in fields {
            match f.parse::<u8>() {
                Ok(pt) if !keep(PayloadType(pt)) => dropped.push(pt),
                _ => kept.push(f),
            }
        }
        if dropped.is_empty() {
            return Ok(());
        }
        let new_m = format!("m={} {}", head.join(" "), kept.join(" "));
        let new_m = new_m.trim_end().to_owned();
        self.lines[range.start].0 = new_m;
        let mut i = range.end;
        while i > range.start + 1 {
            i -= 1;
            let drop_line = match self.attr(i) {
                Some(Attribute {
                    name: "rtpmap" | "fmtp" | "rtcp-fb",
                    value: Some(v),
                }) => v
                    .split_ascii_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u8>().ok())
                    .is_some_and(|p| dropped.contains(&p)),
                _ => false,
            };
            if drop_line {
                self.remove(i);
            }
        }
        Ok(())
    }

    /// Increments the `o=` line's sess-version, as required when a
    /// session description is modified.
    ///
    /// # Errors
    ///
    /// [`Error::Missing`] if there is no `o=` line.
    //= https://www.rfc-editor.org/rfc/rfc8866#section-5.2
    //# <sess-version> is a version number for this session description.
    //# Its usage is up to the creating tool, so long as <sess-version> is
    //# increased when a modification is made to the session description.
    pub fn bump_origin_version(&mut self) -> Result<(), Error> {
        let at = (0..self.first_media())
            .find(|&i| self.kind(i) == Some(b'o'))
            .ok_or(Error::Missing { kind: 'o' })?;
        let mut fields: Vec<String> = self.lines[at]
            .0
            .get(2..)
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(v) = fields.get_mut(2) {
            let n: u64 = v
                .parse()
                .map_err(|_| invalid(at + 1, 'o', "sess-version"))?;
            *v = n.wrapping_add(1).to_string();
        }
        self.lines[at].0 = format!("o={}", fields.join(" "));
        Ok(())
    }

    /// The type letter of line `i`. Lines for which this is `Some` start
    /// with two ASCII bytes, so slicing them at 2 cannot panic.
    fn kind(&self, i: usize) -> Option<u8> {
        match self.lines.get(i)?.0.as_bytes() {
            [kind, b'=', ..] => Some(*kind),
            _ => None,
        }
    }

    fn attr(&self, i: usize) -> Option<Attribute<'_>> {
        if self.kind(i)? != b'a' {
            return None;
        }
        Some(parse_attribute(self.lines[i].0.get(2..)?))
    }

    fn attr_name(&self, i: usize) -> Option<&str> {
        self.attr(i).map(|a| a.name)
    }

    fn first_media(&self) -> usize {
        (0..self.lines.len())
            .find(|&i| self.kind(i) == Some(b'm'))
            .unwrap_or(self.lines.len())
    }

    /// Line range of the session section (`None`) or of media `index`,
    /// without trailing blank lines.
    fn section(&self, media: Option<usize>) -> Result<Range<usize>, Error> {
        let starts: Vec<usize> = (0..self.lines.len())
            .filter(|&i| self.kind(i) == Some(b'm'))
            .collect();
        let (start, mut end) = match media {
            None => (0, starts.first().copied().unwrap_or(self.lines.len())),
            Some(index) => {
                let start = *starts.get(index).ok_or(Error::NoSuchMedia { index })?;
                (
                    start,
                    starts.get(index + 1).copied().unwrap_or(self.lines.len()),
                )
            }
        };
        while end > start + 1 && self.lines[end - 1].0.is_empty() {
            end -= 1;
        }
        Ok(start..end)
    }

    /// Inserts a line before `at`, with the ending used by the line before
    /// it; if that line had no ending (it was the unterminated last line),
    /// it gets one and the new line takes its place as the last.
    fn insert(&mut self, at: usize, text: String) {
        let ending = self.typical_ending();
        match at.checked_sub(1).and_then(|p| self.lines.get_mut(p)) {
            Some(prev) if prev.1 == Ending::None => {
                prev.1 = ending;
                self.lines.insert(at, (text, Ending::None));
            }
            Some(prev) => {
                let e = prev.1;
                self.lines.insert(at, (text, e));
            }
            None => self.lines.insert(at, (text, ending)),
        }
    }

    /// Removes line `i`; if it was the unterminated last line, the line
    /// before it becomes the unterminated last line.
    fn remove(&mut self, i: usize) {
        let (_, ending) = self.lines.remove(i);
        if ending == Ending::None
            && i == self.lines.len()
            && let Some(prev) = self.lines.last_mut()
        {
            prev.1 = Ending::None;
        }
    }

    fn typical_ending(&self) -> Ending {
        self.lines
            .iter()
            .map(|(_, e)| *e)
            .find(|e| *e != Ending::None)
            .unwrap_or(Ending::CrLf)
    }
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (line, ending) in &self.lines {
            f.write_str(line)?;
            f.write_str(ending.as_str())?;
        }
        Ok(())
    }
}

/// A line ending as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    CrLf,
    Lf,
    None,
}

impl Ending {
    fn from_str(s: &str) -> Self {
        match s {
            "\r\n" => Ending::CrLf,
            "\n" => Ending::Lf,
            _ => Ending::None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Ending::CrLf => "\r\n",
            Ending::Lf => "\n",
            Ending::None => "",
        }
    }
}

impl<'a> SessionDescription<'a> {
    fn media_range(&self, index: usize) -> Option<Range<usize>> {
        let start = *self.media_starts.get(index)?;
        let end = self
            .media_starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.lines.len());
        Some(start..end)
    }

    fn session_values(&self, kind: u8) -> impl Iterator<Item = &'a str> + '_ {
        let end = self
            .media_starts
            .first()
            .copied()
            .unwrap_or(self.lines.len());
        values_of(&self.lines[..end], kind)
    }
}

fn values_of<'s, 'a>(
    lines: &'s [(&'a str, &'a str)],
    kind: u8,
) -> impl Iterator<Item = &'a str> + use<'s, 'a> {
    lines.iter().filter_map(move |(l, _)| {
        let b = l.as_bytes();
        (b.len() >= 2 && b[0] == kind && b[1] == b'=')
            .then(|| l.get(2..))
            .flatten()
    })
}

fn invalid(line: usize, kind: char, field: &'static str) -> Error {
    Error::InvalidField { line, kind, field }
}

fn origin_error(line: usize, value: &str) -> Error {
    let field = match value.split_ascii_whitespace().count() {
        n if n < 6 => "field count",
        _ => "sess-version",
    };
    invalid(line, 'o', field)
}

//= https://www.rfc-editor.org/rfc/rfc8866#section-5.2
//#    o=<username> <sess-id> <sess-version> <nettype> <addrtype>
//#      <unicast-address>
fn parse_origin(value: &str) -> Option<Origin<'_>> {
    let mut f = value.split_ascii_whitespace();
    let o = Origin {
        username: f.next()?,
        session_id: f.next()?,
        session_version: f.next()?.parse().ok()?,
        nettype: f.next()?,
        addrtype: f.next()?,
        address: f.next()?,
    };
    f.next().is_none().then_some(o)
}

//= https://www.rfc-editor.org/rfc/rfc8866#section-5.7
//#    c=<nettype> <addrtype> <connection-address>
fn parse_connection(value: &str) -> Option<Connection<'_>> {
    let mut f = value.split_ascii_whitespace();
    let c = Connection {
        nettype: f.next().filter(|s| !s.is_empty())?,
        addrtype: f.next().filter(|s| !s.is_empty())?,
        address: f.next().filter(|s| !s.is_empty())?,
    };
    f.next().is_none().then_some(c)
}

//= https://www.rfc-editor.org/rfc/rfc8866#section-5.8
//#    b=<bwtype>:<bandwidth>
fn parse_bandwidth(value: &str) -> Option<Bandwidth<'_>> {
    let (bwtype, v) = value.split_once(':')?;
    Some(Bandwidth {
        bwtype,
        value: v.trim().parse().ok()?,
    })
}

//= https://www.rfc-editor.org/rfc/rfc8866#section-5.14
//#    m=<media> <port> <proto> <fmt> ...
//#    m=<media> <port>/<number of ports> <proto> <fmt> ...
fn check_media_line(value: &str, line: usize) -> Result<(), Error> {
    let mut f = value.split_ascii_whitespace();
    if f.next().is_none_or(str::is_empty) {
        return Err(invalid(line, 'm', "media"));
    }
    let port_ok = f.next().is_some_and(|p| {
        let mut parts = p.split('/');
        parts.next().is_some_and(|v| v.parse::<u16>().is_ok())
            && parts.next().is_none_or(|c| c.parse::<u16>().is_ok())
            && parts.next().is_none()
    });
    if !port_ok {
        return Err(invalid(line, 'm', "port"));
    }
    if f.next().is_none_or(str::is_empty) {
        return Err(invalid(line, 'm', "proto"));
    }
    Ok(())
}

fn check_attribute(value: &str, line: usize) -> Result<(), Error> {
    let attr = parse_attribute(value);
    match (attr.name, attr.value) {
        ("rtpmap", Some(v)) => {
            parse_rtpmap(v).ok_or_else(|| invalid(line, 'a', "rtpmap"))?;
        }
        ("rtpmap", None) => return Err(invalid(line, 'a', "rtpmap")),
        ("rtcp", v) => {
            parse_rtcp(v.unwrap_or("")).ok_or_else(|| invalid(line, 'a', "rtcp port"))?;
        }
        _ => {}
    }
    Ok(())
}

//= https://www.rfc-editor.org/rfc/rfc8866#section-5.13
//#    a=<attribute-name>
//#    a=<attribute-name>:<attribute-value>
fn parse_attribute(value: &str) -> Attribute<'_> {
    match value.split_once(':') {
        Some((name, v)) => Attribute {
            name,
            value: Some(v),
        },
        None => Attribute {
            name: value,
            value: None,
        },
    }
}

fn find_attribute<'a>(
    mut attrs: impl Iterator<Item = Attribute<'a>>,
    name: &str,
) -> Option<&'a str> {
    attrs
        .find(|a| a.name == name)
        .map(|a| a.value.unwrap_or(""))
}

fn direction_of<'a>(attrs: impl Iterator<Item = Attribute<'a>>) -> Option<Direction> {
    attrs
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_attr(a.name))
}

//= https://www.rfc-editor.org/rfc/rfc8866#section-6.6
//#   a=rtpmap:<payload type> <encoding name>/<clock rate> [/<encoding
//#   parameters>]
fn parse_rtpmap(value: &str) -> Option<RtpMap<'_>> {
    let (pt, rest) = value.split_once(' ')?;
    let pt: u8 = pt.parse().ok()?;
    if pt > 127 {
        return None;
    }
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.parse().ok()?;
    let channels = match parts.next() {
        Some(c) => Some(c.parse().ok()?),
        None => None,
    };
    Some(RtpMap {
        pt: PayloadType(pt),
        encoding,
        clock_rate: ClockRate(clock_rate),
        channels,
    })
}

fn parse_rtcp(value: &str) -> Option<Rtcp<'_>> {
    let (port, rest) = match value.split_once(' ') {
        Some((p, r)) => (p, Some(r)),
        None => (value, None),
    };
    Some(Rtcp {
        port: port.parse().ok()?,
        connection: match rest {
            Some(r) => Some(parse_connection(r)?),
            None => None,
        },
    })
}

fn parse_ms(value: &str) -> Option<u32> {
    // Some stacks write fractional ptime ("20.0"); round down.
    let int = value.trim().split('.').next()?;
    int.parse().ok()
}
