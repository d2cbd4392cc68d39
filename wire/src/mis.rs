//! The MIS ingest protocol (version 1), sans-IO: metadata frames on TCP 1040 and
//! RTP copies on UDP 5400. The byte layout is specified in `docs/mis.md`.
//!
//! - Metadata: a stream of frames `len: u32 BE | type: u8 | body`, where
//!   `len` counts the type octet and the body. The sender opens with
//!   [`Control::Hello`] (the range of versions it speaks); the recorder
//!   answers [`Control::HelloAck`] with the highest common version or
//!   [`Control::Reject`]. Frames of unknown type are skipped (their length
//!   is known) and bytes after the known fields of a body are ignored, so a
//!   newer sender can add messages and fields without breaking an older
//!   recorder, and the negotiated version tells a newer recorder what an
//!   older sender can say.
//! - Media: one UDP datagram per RTP copy, a [`MediaPacket`] header of
//!   `header_len` octets (24 in version 1) followed by the RTP packet as it
//!   was on the wire.
//!
//! Two types per format (style.md): [`FrameView`] / [`MediaPacket`] are
//! borrowed views that check lengths once; [`Control`] / [`MediaRepr`] are
//! owned, validated representations with `parse` and `emit`.

use crate::{PayloadType, Timestamp};
use thiserror::Error;

/// Protocol versions this implementation speaks (inclusive).
pub const VERSIONS: (ProtoVersion, ProtoVersion) = (ProtoVersion(1), ProtoVersion(1));
/// Largest metadata frame accepted (type octet + body), in octets.
pub const MAX_FRAME: usize = 64 * 1024;
/// Length of the version 1 media header, in octets.
pub const MEDIA_HEADER_LEN: usize = 24;
/// The two magic octets that open every media datagram (`"VX"`).
pub const MEDIA_MAGIC: [u8; 2] = *b"VX";

/// A protocol version number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtoVersion(pub u16);

/// A recording session, chosen by the sender (unique per sender for the
/// session's life; the recorder keys journals and files by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// A call leg within a session (its index in [`SessionStart::legs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegId(pub u8);

/// What went wrong decoding ingest bytes. Every variant is *malformed*
/// input from the peer: the recorder counts it and drops the frame or
/// datagram (a malformed metadata frame also closes its connection, since
/// the stream cannot be resynchronised).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// Fewer octets than the structure needs.
    #[error("truncated: need {need} octets, have {have}")]
    Truncated {
        /// Octets needed.
        need: usize,
        /// Octets present.
        have: usize,
    },
    /// A frame length outside 1..=[`MAX_FRAME`].
    #[error("frame length {0} out of range")]
    FrameLength(usize),
    /// A media datagram without the `"VX"` magic.
    #[error("bad media magic")]
    BadMagic,
    /// A media header length smaller than version 1's.
    #[error("media header length {0} too small")]
    HeaderLength(usize),
    /// A string field that is not UTF-8.
    #[error("string field is not UTF-8")]
    Utf8,
    /// An enumerated field with a value this version does not define.
    #[error("bad value {value} for {field}")]
    BadValue {
        /// Field name.
        field: &'static str,
        /// Value found.
        value: u8,
    },
    /// A field too long to encode (strings over 65535 octets, over 255 legs
    /// or codecs).
    #[error("{0} too long to encode")]
    TooLong(&'static str),
}

/// Which party a leg carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The calling party (left channel of the stereo file).
    Caller = 0,
    /// The called party (right channel).
    Callee = 1,
}

/// Direction of a media copy relative to the relay that mirrored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// As received by the relay from the leg's party (what the party said).
    FromParty = 0,
    /// As sent by the relay towards the other party (the same audio after
    /// the relay's rewrite).
    ToPeer = 1,
}

/// One payload type of a leg's negotiated codecs (`a=rtpmap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    /// RTP payload type.
    pub pt: PayloadType,
    /// Encoding name as in SDP (`PCMU`, `PCMA`, `telephone-event`, …).
    pub name: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
}

/// One leg of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    /// The party.
    pub role: Role,
    /// Payload types the leg may send.
    pub codecs: Vec<Codec>,
}

/// Recording policy flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Policy(pub u8);

impl Policy {
    /// Write the stereo file (caller left, callee right).
    pub const STEREO: u8 = 0x01;
    /// Write the mixed mono file.
    pub const MONO: u8 = 0x02;
    /// Both files (the default).
    pub const BOTH: Self = Self(Self::STEREO | Self::MONO);

    /// Whether the stereo file is wanted.
    pub fn stereo(self) -> bool {
        self.0 & Self::STEREO != 0
    }

    /// Whether the mono file is wanted.
    pub fn mono(self) -> bool {
        self.0 & Self::MONO != 0
    }
}

/// Session start: who, what and how to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStart {
    /// Session id (media datagrams carry it).
    pub session: SessionId,
    /// SIP Call-ID.
    pub call_id: String,
    /// Tenant domain.
    pub domain: String,
    /// Calling number or URI user.
    pub from: String,
    /// Called number or URI user.
    pub to: String,
    /// Call start (ns since the Unix epoch).
    pub start_time: Timestamp,
    /// What to write.
    pub policy: Policy,
    /// The legs, indexed by [`LegId`].
    pub legs: Vec<Leg>,
}

/// A mid-call change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateKind {
    /// A re-INVITE changed a leg's codecs.
    Codecs {
        /// The leg.
        leg: LegId,
        /// Its new payload types.
        codecs: Vec<Codec>,
    },
    /// A leg went on hold (`true`) or resumed (`false`).
    Hold {
        /// The leg.
        leg: LegId,
        /// On hold?
        on: bool,
    },
}

/// Session update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionUpdate {
    /// Session id.
    pub session: SessionId,
    /// When the change happened (ns since the Unix epoch).
    pub time: Timestamp,
    /// What changed.
    pub kind: UpdateKind,
}

/// A metadata message (owned representation).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Sender → recorder, first frame: versions spoken and an agent string.
    Hello {
        /// Lowest version spoken.
        min: ProtoVersion,
        /// Highest version spoken.
        max: ProtoVersion,
        /// Free text (product and version), for logs.
        agent: String,
    },
    /// Recorder → sender: the version used on this connection.
    HelloAck {
        /// Chosen version.
        version: ProtoVersion,
    },
    /// Recorder → sender: no common version; the connection closes.
    Reject {
        /// Why.
        reason: String,
    },
    /// A session starts.
    Start(SessionStart),
    /// A session changes.
    Update(SessionUpdate),
    /// A session stops; the recorder renders what arrived.
    Stop {
        /// Session id.
        session: SessionId,
        /// Stop time (ns since the Unix epoch).
        time: Timestamp,
    },
}

/// Frame type octets.
mod ty {
    pub const HELLO: u8 = 1;
    pub const HELLO_ACK: u8 = 2;
    pub const REJECT: u8 = 3;
    pub const START: u8 = 16;
    pub const UPDATE: u8 = 17;
    pub const STOP: u8 = 18;
}

/// Picks the version for a connection: the highest version in both the
/// sender's range and ours, or `None`.
pub fn negotiate(min: ProtoVersion, max: ProtoVersion) -> Option<ProtoVersion> {
    let hi = max.min(VERSIONS.1);
    let lo = min.max(VERSIONS.0);
    (lo <= hi).then_some(hi)
}

/// A borrowed metadata frame: `len | type | body`, length checked.
#[derive(Clone, Copy, Debug)]
pub struct FrameView<'a> {
    ty: u8,
    body: &'a [u8],
}

impl<'a> FrameView<'a> {
    /// Splits one frame off the front of `buf`. `Ok(None)` when `buf` does
    /// not yet hold a whole frame (read more); otherwise the frame and the
    /// number of octets it used.
    ///
    /// # Errors
    ///
    /// [`ProtoError::FrameLength`] for a length of 0 or over [`MAX_FRAME`].
    pub fn split(buf: &'a [u8]) -> Result<Option<(Self, usize)>, ProtoError> {
        let Some(head) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(ProtoError::FrameLength(len));
        }
        let Some(frame) = buf.get(4..4 + len) else {
            return Ok(None);
        };
        Ok(Some((
            Self {
                ty: frame[0],
                body: &frame[1..],
            },
            4 + len,
        )))
    }

    /// The type octet.
    pub fn frame_type(&self) -> u8 {
        self.ty
    }

    /// The body.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

impl Control {
    /// Parses a frame. `Ok(None)` for a frame type this version does not
    /// know (skip it).
    ///
    /// # Errors
    ///
    /// Any [`ProtoError`] for a malformed body.
    pub fn parse(frame: &FrameView<'_>) -> Result<Option<Self>, ProtoError> {
        let mut r = Reader(frame.body);
        let msg = match frame.ty {
            ty::HELLO => Control::Hello {
                min: ProtoVersion(r.u16()?),
                max: ProtoVersion(r.u16()?),
                agent: r.str()?,
            },
            ty::HELLO_ACK => Control::HelloAck {
                version: ProtoVersion(r.u16()?),
            },
            ty::REJECT => Control::Reject { reason: r.str()? },
            ty::START => {
                let session = SessionId(r.u64()?);
                let call_id = r.str()?;
                let domain = r.str()?;
                let from = r.str()?;
                let to = r.str()?;
                let start_time = Timestamp(r.u64()?);
                let policy = Policy(r.u8()?);
                let n = r.u8()?;
                let mut legs = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let role = match r.u8()? {
                        0 => Role::Caller,
                        1 => Role::Callee,
                        value => {
                            return Err(ProtoError::BadValue {
                                field: "role",
                                value,
                            });
                        }
                    };
                    legs.push(Leg {
                        role,
                        codecs: r.codecs()?,
                    });
                }
                Control::Start(SessionStart {
                    session,
                    call_id,
                    domain,
                    from,
                    to,
                    start_time,
                    policy,
                    legs,
                })
            }
            ty::UPDATE => {
                let session = SessionId(r.u64()?);
                let time = Timestamp(r.u64()?);
                let kind = match r.u8()? {
                    1 => UpdateKind::Codecs {
                        leg: LegId(r.u8()?),
                        codecs: r.codecs()?,
                    },
                    2 => UpdateKind::Hold {
                        leg: LegId(r.u8()?),
                        on: r.u8()? != 0,
                    },
                    value => {
                        return Err(ProtoError::BadValue {
                            field: "update kind",
                            value,
                        });
                    }
                };
                Control::Update(SessionUpdate {
                    session,
                    time,
                    kind,
                })
            }
            ty::STOP => Control::Stop {
                session: SessionId(r.u64()?),
                time: Timestamp(r.u64()?),
            },
            _ => return Ok(None),
        };
        Ok(Some(msg))
    }

    /// Appends this message as one frame (length prefix included) to `out`.
    ///
    /// # Errors
    ///
    /// [`ProtoError::TooLong`] when a string, list or the whole frame does
    /// not fit its length field; `out` is then left as it was.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let start = out.len();
        let r = self.emit_inner(out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn emit_inner(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Control::Hello { min, max, agent } => {
                out.push(ty::HELLO);
                out.extend_from_slice(&min.0.to_be_bytes());
                out.extend_from_slice(&max.0.to_be_bytes());
                put_str(out, agent, "agent")?;
            }
            Control::HelloAck { version } => {
                out.push(ty::HELLO_ACK);
                out.extend_from_slice(&version.0.to_be_bytes());
            }
            Control::Reject { reason } => {
                out.push(ty::REJECT);
                put_str(out, reason, "reason")?;
            }
            Control::Start(s) => {
                out.push(ty::START);
                out.extend_from_slice(&s.session.0.to_be_bytes());
                put_str(out, &s.call_id, "call id")?;
                put_str(out, &s.domain, "domain")?;
                put_str(out, &s.from, "from")?;
                put_str(out, &s.to, "to")?;
                out.extend_from_slice(&s.start_time.0.to_be_bytes());
                out.push(s.policy.0);
                out.push(u8::try_from(s.legs.len()).map_err(|_| ProtoError::TooLong("legs"))?);
                for leg in &s.legs {
                    out.push(leg.role as u8);
                    put_codecs(out, &leg.codecs)?;
                }
            }
            Control::Update(u) => {
                out.push(ty::UPDATE);
                out.extend_from_slice(&u.session.0.to_be_bytes());
                out.extend_from_slice(&u.time.0.to_be_bytes());
                match &u.kind {
                    UpdateKind::Codecs { leg, codecs } => {
                        out.extend_from_slice(&[1, leg.0]);
                        put_codecs(out, codecs)?;
                    }
                    UpdateKind::Hold { leg, on } => {
                        out.extend_from_slice(&[2, leg.0, u8::from(*on)])
                    }
                }
            }
            Control::Stop { session, time } => {
                out.push(ty::STOP);
                out.extend_from_slice(&session.0.to_be_bytes());
                out.extend_from_slice(&time.0.to_be_bytes());
            }
        }
        let len = out.len() - start - 4;
        if len > MAX_FRAME {
            return Err(ProtoError::TooLong("frame"));
        }
        // `len <= MAX_FRAME` fits in a u32.
        out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

/// Byte offsets of the version 1 media header.
mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const HEADER_LEN: usize = 3;
    pub const SESSION: Range<usize> = 4..12;
    pub const LEG: usize = 12;
    pub const DIRECTION: usize = 13;
    pub const CAPTURE_TS: Range<usize> = 16..24;
}

/// A borrowed media datagram: header + RTP copy. Accessors cannot panic
/// once [`MediaPacket::new_checked`] succeeded.
#[derive(Clone, Copy, Debug)]
pub struct MediaPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MediaPacket<T> {
    /// Wraps a datagram, checking magic and lengths.
    ///
    /// # Errors
    ///
    /// [`ProtoError::Truncated`], [`ProtoError::BadMagic`] or
    /// [`ProtoError::HeaderLength`].
    pub fn new_checked(buffer: T) -> Result<Self, ProtoError> {
        let b = buffer.as_ref();
        if b.len() < MEDIA_HEADER_LEN {
            return Err(ProtoError::Truncated {
                need: MEDIA_HEADER_LEN,
                have: b.len(),
            });
        }
        if b[field::MAGIC] != MEDIA_MAGIC {
            return Err(ProtoError::BadMagic);
        }
        let hl = usize::from(b[field::HEADER_LEN]);
        if hl < MEDIA_HEADER_LEN {
            return Err(ProtoError::HeaderLength(hl));
        }
        if b.len() < hl {
            return Err(ProtoError::Truncated {
                need: hl,
                have: b.len(),
            });
        }
        Ok(Self { buffer })
    }

    /// Header version (informative: newer headers only append fields).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// Header length in octets (where the RTP packet starts).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::HEADER_LEN])
    }

    /// Session id.
    pub fn session(&self) -> SessionId {
        SessionId(be_u64(&self.buffer.as_ref()[field::SESSION]))
    }

    /// Leg.
    pub fn leg(&self) -> LegId {
        LegId(self.buffer.as_ref()[field::LEG])
    }

    /// Direction; `None` for a value version 1 does not define.
    pub fn direction(&self) -> Option<Direction> {
        match self.buffer.as_ref()[field::DIRECTION] {
            0 => Some(Direction::FromParty),
            1 => Some(Direction::ToPeer),
            _ => None,
        }
    }

    /// When the relay saw the packet (ns since the Unix epoch).
    pub fn capture_time(&self) -> Timestamp {
        Timestamp(be_u64(&self.buffer.as_ref()[field::CAPTURE_TS]))
    }

    /// The RTP packet.
    pub fn rtp(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// Owned media header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaRepr {
    /// Session id.
    pub session: SessionId,
    /// Leg.
    pub leg: LegId,
    /// Direction.
    pub direction: Direction,
    /// Capture time (ns since the Unix epoch).
    pub capture_time: Timestamp,
}

impl MediaRepr {
    /// Parses a checked packet's header.
    ///
    /// # Errors
    ///
    /// [`ProtoError::BadValue`] for an undefined direction.
    pub fn parse<T: AsRef<[u8]>>(pkt: &MediaPacket<T>) -> Result<Self, ProtoError> {
        Ok(Self {
            session: pkt.session(),
            leg: pkt.leg(),
            direction: pkt.direction().ok_or(ProtoError::BadValue {
                field: "direction",
                value: pkt.buffer.as_ref()[field::DIRECTION],
            })?,
            capture_time: pkt.capture_time(),
        })
    }

    /// Appends the header and then `rtp` to `out` (one datagram).
    pub fn emit(&self, rtp: &[u8], out: &mut Vec<u8>) {
        let mut h = [0u8; MEDIA_HEADER_LEN];
        h[field::MAGIC].copy_from_slice(&MEDIA_MAGIC);
        h[field::VERSION] = VERSIONS.1.0 as u8;
        h[field::HEADER_LEN] = MEDIA_HEADER_LEN as u8;
        h[field::SESSION].copy_from_slice(&self.session.0.to_be_bytes());
        h[field::LEG] = self.leg.0;
        h[field::DIRECTION] = self.direction as u8;
        h[field::CAPTURE_TS].copy_from_slice(&self.capture_time.0.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(rtp);
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), ProtoError> {
    let n = u16::try_from(s.len()).map_err(|_| ProtoError::TooLong(what))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_codecs(out: &mut Vec<u8>, codecs: &[Codec]) -> Result<(), ProtoError> {
    out.push(u8::try_from(codecs.len()).map_err(|_| ProtoError::TooLong("codecs"))?);
    for c in codecs {
        out.push(c.pt.0);
        out.extend_from_slice(&c.clock_rate.to_be_bytes());
        put_str(out, &c.name, "codec name")?;
    }
    Ok(())
}

/// A bounds-checked cursor over a body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::Truncated {
                need: n,
                have: self.0.len(),
            });
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(be_u64(self.take(8)?))
    }
    fn str(&mut self) -> Result<String, ProtoError> {
        let n = usize::from(self.u16()?);
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| ProtoError::Utf8)
    }
    fn codecs(&mut self) -> Result<Vec<Codec>, ProtoError> {
        let n = self.u8()?;
        let mut v = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let pt = PayloadType(self.u8()?);
            let clock_rate = self.u32()?;
            v.push(Codec {
                pt,
                name: self.str()?,
                clock_rate,
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_one(bytes: &[u8]) -> Control {
        let (f, used) = FrameView::split(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        Control::parse(&f).unwrap().unwrap()
    }

    #[test]
    fn stop_frame_bytes() {
        let mut out = Vec::new();
        Control::Stop {
            session: SessionId(0x0102),
            time: Timestamp(3),
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(
            out,
            [
                0, 0, 0, 17, 18, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3
            ]
        );
    }

    #[test]
    fn media_header_bytes() {
        let mut out = Vec::new();
        MediaRepr {
            session: SessionId(7),
            leg: LegId(1),
            direction: Direction::ToPeer,
            capture_time: Timestamp(0x0A0B),
        }
        .emit(&[0x80, 0], &mut out);
        assert_eq!(
            out,
            [
                b'V', b'X', 1, 24, 0, 0, 0, 0, 0, 0, 0, 7, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x0A,
                0x0B, 0x80, 0
            ]
        );
        let p = MediaPacket::new_checked(&out[..]).unwrap();
        assert_eq!(p.rtp(), &[0x80, 0]);
    }

    #[test]
    fn newer_sender_extensions_are_tolerated() {
        // A longer media header (version 2 with an extra field) still gives
        // the RTP packet; an unknown frame type is skipped; extra body bytes
        // after a known message are ignored.
        let mut d = Vec::new();
        MediaRepr {
            session: SessionId(1),
            leg: LegId(0),
            direction: Direction::FromParty,
            capture_time: Timestamp(1),
        }
        .emit(&[0x80, 8], &mut d);
        d[2] = 2;
        d[3] = 28;
        d.splice(24..24, [9, 9, 9, 9]);
        let p = MediaPacket::new_checked(&d[..]).unwrap();
        assert_eq!(p.rtp(), &[0x80, 8]);

        let unknown = [0, 0, 0, 3, 200, 1, 2];
        let (f, used) = FrameView::split(&unknown).unwrap().unwrap();
        assert_eq!(used, 7);
        assert_eq!(Control::parse(&f).unwrap(), None);

        let mut s = Vec::new();
        Control::HelloAck {
            version: ProtoVersion(1),
        }
        .emit(&mut s)
        .unwrap();
        s[3] += 2;
        s.extend_from_slice(&[0xEE, 0xEE]);
        assert_eq!(
            parse_one(&s),
            Control::HelloAck {
                version: ProtoVersion(1)
            }
        );
    }

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(
            negotiate(ProtoVersion(1), ProtoVersion(5)),
            Some(ProtoVersion(1))
        );
        assert_eq!(
            negotiate(ProtoVersion(1), ProtoVersion(1)),
            Some(ProtoVersion(1))
        );
        assert_eq!(negotiate(ProtoVersion(2), ProtoVersion(3)), None);
        assert_eq!(negotiate(ProtoVersion(0), ProtoVersion(0)), None);
    }

    #[test]
    fn partial_frames_ask_for_more_and_bad_lengths_fail() {
        assert!(FrameView::split(&[0, 0]).unwrap().is_none());
        assert!(FrameView::split(&[0, 0, 0, 5, 1]).unwrap().is_none());
        assert_eq!(
            FrameView::split(&[0, 0, 0, 0]).unwrap_err(),
            ProtoError::FrameLength(0)
        );
        assert!(FrameView::split(&[0xFF, 0, 0, 0]).is_err());
    }

    pub(crate) fn arb_codec() -> impl Strategy<Value = Codec> {
        (any::<u8>(), "[A-Za-z0-9-]{0,16}", any::<u32>()).prop_map(|(pt, name, clock_rate)| Codec {
            pt: PayloadType(pt),
            name,
            clock_rate,
        })
    }

    pub(crate) fn arb_control() -> impl Strategy<Value = Control> {
        let leg = (
            prop_oneof![Just(Role::Caller), Just(Role::Callee)],
            prop::collection::vec(arb_codec(), 0..4),
        )
            .prop_map(|(role, codecs)| Leg { role, codecs });
        let start = (
            any::<u64>(),
            ".{0,40}",
            ".{0,20}",
            ".{0,20}",
            ".{0,20}",
            any::<u64>(),
            any::<u8>(),
            prop::collection::vec(leg, 0..3),
        )
            .prop_map(|(s, call_id, domain, from, to, t, p, legs)| {
                Control::Start(SessionStart {
                    session: SessionId(s),
                    call_id,
                    domain,
                    from,
                    to,
                    start_time: Timestamp(t),
                    policy: Policy(p),
                    legs,
                })
            });
        let update = (
            any::<u64>(),
            any::<u64>(),
            any::<u8>(),
            any::<bool>(),
            prop::collection::vec(arb_codec(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(s, t, leg, on, codecs, hold)| {
                let leg = LegId(leg);
                Control::Update(SessionUpdate {
                    session: SessionId(s),
                    time: Timestamp(t),
                    kind: if hold {
                        UpdateKind::Hold { leg, on }
                    } else {
                        UpdateKind::Codecs { leg, codecs }
                    },
                })
            });
        prop_oneof![
            (any::<u16>(), any::<u16>(), ".{0,30}").prop_map(|(a, b, agent)| Control::Hello {
                min: ProtoVersion(a),
                max: ProtoVersion(b),
                agent
            }),
            any::<u16>().prop_map(|v| Control::HelloAck {
                version: ProtoVersion(v)
            }),
            ".{0,30}".prop_map(|reason| Control::Reject { reason }),
            start,
            update,
            (any::<u64>(), any::<u64>()).prop_map(|(s, t)| Control::Stop {
                session: SessionId(s),
                time: Timestamp(t)
            }),
        ]
    }

    proptest! {
        #[test]
        fn control_round_trips(msgs in prop::collection::vec(arb_control(), 1..5)) {
            let mut buf = Vec::new();
            for m in &msgs {
                m.emit(&mut buf).unwrap();
            }
            let mut rest = &buf[..];
            let mut back = Vec::new();
            while let Some((f, used)) = FrameView::split(rest).unwrap() {
                back.push(Control::parse(&f).unwrap().unwrap());
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(back, msgs);
        }

        #[test]
        fn media_round_trips(s in any::<u64>(), leg in any::<u8>(), dir in any::<bool>(),
                             t in any::<u64>(), rtp in prop::collection::vec(any::<u8>(), 0..200)) {
            let repr = MediaRepr {
                session: SessionId(s),
                leg: LegId(leg),
                direction: if dir { Direction::ToPeer } else { Direction::FromParty },
                capture_time: Timestamp(t),
            };
            let mut out = Vec::new();
            repr.emit(&rtp, &mut out);
            let p = MediaPacket::new_checked(&out[..]).unwrap();
            prop_assert_eq!(MediaRepr::parse(&p).unwrap(), repr);
            prop_assert_eq!(p.rtp(), &rtp[..]);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((f, _))) = FrameView::split(&bytes) {
                let _ = Control::parse(&f);
            }
            for ty in [1u8, 2, 3, 16, 17, 18, 99] {
                let _ = Control::parse(&FrameView { ty, body: &bytes });
            }
            if let Ok(p) = MediaPacket::new_checked(&bytes[..]) {
                let _ = MediaRepr::parse(&p);
                let _ = p.rtp();
            }
        }

        #[test]
        fn mutated_valid_frames_never_panic(m in arb_control(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut buf = Vec::new();
            m.emit(&mut buf).unwrap();
            for (i, v) in flips {
                let n = buf.len();
                buf[i % n] ^= v;
            }
            buf.truncate(cut % (buf.len() + 1));
            if let Ok(Some((f, _))) = FrameView::split(&buf) {
                let _ = Control::parse(&f);
            }
        }
    }
}
