//! RTP payload for telephone-events (RFC 4733 §2.3), the successor of
//! RFC 2833 DTMF.
//!
//! [`TelephoneEvent`] is a zero-copy view of the 4-octet payload;
//! [`TelephoneEventRepr`] is the owned form with `parse` and `emit`.
//!
//! ```
//! use wire::dtmf::TelephoneEvent;
//! // Digit 6, end bit, volume 7 (-7 dBm0), duration 960 ticks.
//! let ev = TelephoneEvent::new_checked(&[0x06, 0x87, 0x03, 0xc0][..])?;
//! assert_eq!(ev.event_char(), Some('6'));
//! assert!(ev.end());
//! assert_eq!(ev.volume(), 7);
//! assert_eq!(ev.duration(), 960);
//! # Ok::<(), wire::dtmf::Error>(())
//! ```

/// Length of one telephone-event payload in octets.
pub const PAYLOAD_LEN: usize = 4;

/// Why a payload is not a telephone-event, or cannot be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload is shorter than 4 octets.
    #[error("telephone-event payload too short: {len} octets, need 4")]
    TooShort {
        /// Length of the payload in octets.
        len: usize,
    },
    /// The volume does not fit in 6 bits (above 63).
    #[error("telephone-event volume {0} exceeds 63")]
    Volume(u8),
    /// The output buffer is shorter than 4 octets.
    #[error("buffer too short to emit a telephone-event")]
    BufferTooSmall,
}

/// A zero-copy view of an RFC 4733 telephone-event payload.
///
/// Construct it with [`TelephoneEvent::new_checked`]; its accessors then
/// never panic. Extra octets after the first four (RFC 4733 allows several
/// events only through RFC 2198 redundancy) are ignored.
#[derive(Debug, Clone)]
pub struct TelephoneEvent<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TelephoneEvent<T> {
    /// Wraps a payload without checking it.
    ///
    /// # Panics
    ///
    /// Accessors panic if the buffer is shorter than 4 octets.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a payload after checking its length.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if the payload has fewer than 4 octets.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let len = buffer.as_ref().len();
        if len < PAYLOAD_LEN {
            return Err(Error::TooShort { len });
        }
        Ok(Self { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The event code: 0–9, 10 (`*`), 11 (`#`), 12–15 (A–D) for DTMF, other
    /// values for the events of RFC 4734 and later registrations.
    #[inline]
    pub fn event(&self) -> u8 {
        self.buffer.as_ref()[field::EVENT]
    }

    //= https://www.rfc-editor.org/rfc/rfc4733#section-2.3.3
    //# If set to a value of one, the "end" bit indicates that this packet
    //# contains the end of the event.
    /// End bit (E): this packet carries the end of the event.
    #[inline]
    pub fn end(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS_VOLUME] & 0x80 != 0
    }

    /// Reserved bit (R); senders set it to zero, receivers ignore it.
    #[inline]
    pub fn reserved(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS_VOLUME] & 0x40 != 0
    }

    //= https://www.rfc-editor.org/rfc/rfc4733#section-2.3.4
    //# For DTMF digits and other events representable as tones, this field
    //# describes the power level of the tone, expressed in dBm0 after
    //# dropping the sign.
    /// Volume, in −dBm0 (0 is the loudest, 63 the quietest).
    #[inline]
    pub fn volume(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS_VOLUME] & 0x3F
    }

    /// Duration so far (RFC 4733 §2.3.5), in RTP timestamp units (1/8000 s for 8 kHz audio)
    /// counted from the event's RTP timestamp.
    #[inline]
    pub fn duration(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::DURATION];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The DTMF character for events 0–15, or `None` for other events.
    pub fn event_char(&self) -> Option<char> {
        event_char(self.event())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TelephoneEvent<T> {
    /// Sets the event code.
    pub fn set_event(&mut self, event: u8) {
        self.buffer.as_mut()[field::EVENT] = event;
    }

    /// Sets the end bit.
    pub fn set_end(&mut self, end: bool) {
        let b = &mut self.buffer.as_mut()[field::FLAGS_VOLUME];
        *b = (*b & 0x7F) | (u8::from(end) << 7);
    }

    /// Sets the volume in −dBm0 (bits above the sixth are ignored).
    pub fn set_volume(&mut self, volume: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS_VOLUME];
        *b = (*b & 0xC0) | (volume & 0x3F);
    }

    /// Sets the duration in timestamp units.
    pub fn set_duration(&mut self, duration: u16) {
        self.buffer.as_mut()[field::DURATION].copy_from_slice(&duration.to_be_bytes());
    }
}

/// The DTMF character of an event code 0–15 (RFC 4733 §3.2, Table 7):
/// `'0'..='9'`, `'*'`, `'#'`, `'A'..='D'`; `None` otherwise.
pub fn event_char(event: u8) -> Option<char> {
    const CHARS: &[u8; 16] = b"0123456789*#ABCD";
    CHARS.get(usize::from(event)).map(|&c| char::from(c))
}

/// The event code of a DTMF character (inverse of [`event_char`]; lower
/// case `a`–`d` accepted).
pub fn event_from_char(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}

/// An owned telephone-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TelephoneEventRepr {
    /// Event code (0–15 are DTMF).
    pub event: u8,
    /// End of the event.
    pub end: bool,
    /// Volume in −dBm0, 0–63.
    pub volume: u8,
    /// Duration in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEventRepr {
    /// Reads a checked view. The reserved bit is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::TooShort`] if the payload has fewer than 4 octets.
    pub fn parse<T: AsRef<[u8]>>(ev: &TelephoneEvent<T>) -> Result<Self, Error> {
        let len = ev.buffer.as_ref().len();
        if len < PAYLOAD_LEN {
            return Err(Error::TooShort { len });
        }
        Ok(Self {
            event: ev.event(),
            end: ev.end(),
            volume: ev.volume(),
            duration: ev.duration(),
        })
    }

    /// Length of the emitted payload: always 4 octets.
    pub const fn buffer_len(&self) -> usize {
        PAYLOAD_LEN
    }

    /// Writes the payload into the first 4 octets of the view's buffer,
    /// with the reserved bit clear.
    ///
    /// # Errors
    ///
    /// [`Error::Volume`] if the volume exceeds 63, [`Error::BufferTooSmall`]
    /// if the buffer has fewer than 4 octets.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        ev: &mut TelephoneEvent<T>,
    ) -> Result<(), Error> {
        //= https://www.rfc-editor.org/rfc/rfc4733#section-2.3.3
        //# This field is reserved for future use.  The sender MUST set it to
        //# zero, and the receiver MUST ignore it.
        if self.volume > 0x3F {
            return Err(Error::Volume(self.volume));
        }
        let buf = ev
            .buffer
            .as_mut()
            .get_mut(..PAYLOAD_LEN)
            .ok_or(Error::BufferTooSmall)?;
        buf[field::EVENT] = self.event;
        buf[field::FLAGS_VOLUME] = (u8::from(self.end) << 7) | self.volume;
        buf[field::DURATION].copy_from_slice(&self.duration.to_be_bytes());
        Ok(())
    }

    /// The DTMF character for events 0–15.
    pub fn event_char(&self) -> Option<char> {
        event_char(self.event)
    }
}

/// Byte offsets of the payload fields.
mod field {
    use core::ops::Range;

    /// Event code.
    pub const EVENT: usize = 0;
    /// E, R, volume.
    pub const FLAGS_VOLUME: usize = 1;
    /// Duration.
    pub const DURATION: Range<usize> = 2..4;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Payloads of the digit-6 event in Wireshark's SIP_DTMF2 sample
    /// (SSRC 0x5711BF84, PT 96): start, updates, and the end packet.
    #[test]
    fn real_dtmf_sequence() {
        let payloads: [[u8; 4]; 4] = [
            [0x06, 0x07, 0x00, 0x00],
            [0x06, 0x07, 0x00, 0xf0],
            [0x06, 0x07, 0x01, 0xe0],
            [0x06, 0x87, 0x03, 0xc0],
        ];
        let durations = [0, 240, 480, 960];
        for (p, d) in payloads.iter().zip(durations) {
            let ev = TelephoneEvent::new_checked(&p[..]).unwrap();
            assert_eq!(ev.event(), 6);
            assert_eq!(ev.event_char(), Some('6'));
            assert_eq!(ev.volume(), 7);
            assert_eq!(ev.duration(), d);
            assert_eq!(ev.end(), d == 960);
            assert!(!ev.reserved());
            let repr = TelephoneEventRepr::parse(&ev).unwrap();
            let mut out = [0u8; 4];
            repr.emit(&mut TelephoneEvent::new_unchecked(&mut out[..]))
                .unwrap();
            assert_eq!(&out, p);
        }
    }

    #[test]
    fn event_chars() {
        let all: String = (0..16).filter_map(event_char).collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(event_char(16), None);
        for e in 0..16 {
            assert_eq!(event_from_char(event_char(e).unwrap()), Some(e));
        }
        assert_eq!(event_from_char('d'), Some(15));
        assert_eq!(event_from_char('x'), None);
    }

    #[test]
    fn errors_and_setters() {
        assert_eq!(
            TelephoneEvent::new_checked(&[0u8; 3][..]).unwrap_err(),
            Error::TooShort { len: 3 }
        );
        let repr = TelephoneEventRepr {
            volume: 64,
            ..Default::default()
        };
        let mut out = [0u8; 4];
        assert_eq!(
            repr.emit(&mut TelephoneEvent::new_unchecked(&mut out[..])),
            Err(Error::Volume(64))
        );
        let mut short = [0u8; 2];
        assert_eq!(
            TelephoneEventRepr::default().emit(&mut TelephoneEvent::new_unchecked(&mut short[..])),
            Err(Error::BufferTooSmall)
        );
        let mut ev = TelephoneEvent::new_checked(&mut out[..]).unwrap();
        ev.set_event(11);
        ev.set_end(true);
        ev.set_volume(10);
        ev.set_duration(800);
        assert_eq!(ev.into_inner(), &[11, 0x8a, 0x03, 0x20]);
    }

    proptest! {
        #[test]
        fn repr_round_trip(event in any::<u8>(), end in any::<bool>(), volume in 0u8..64, duration in any::<u16>()) {
            let repr = TelephoneEventRepr { event, end, volume, duration };
            let mut buf = [0u8; 4];
            repr.emit(&mut TelephoneEvent::new_unchecked(&mut buf[..])).unwrap();
            let view = TelephoneEvent::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(TelephoneEventRepr::parse(&view).unwrap(), repr);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(ev) = TelephoneEvent::new_checked(&bytes[..]) {
                let repr = TelephoneEventRepr::parse(&ev).unwrap();
                prop_assert!(repr.volume < 64);
                let _ = (ev.event_char(), ev.reserved());
            }
        }
    }
}
