//! Identifiers and units shared by every format: newtypes instead of bare
//! integers, widened once at the edge.

use core::fmt;

/// RTP synchronisation source identifier (RFC 3550 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0)
    }
}

/// RTP payload type, 7 bits (RFC 3550 §5.1, RFC 3551 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PayloadType(pub u8);

impl PayloadType {
    /// PCMU (G.711 µ-law), static.
    pub const PCMU: Self = Self(0);
    /// GSM 06.10, static.
    pub const GSM: Self = Self(3);
    /// G.723.1, static.
    pub const G723: Self = Self(4);
    /// PCMA (G.711 A-law), static.
    pub const PCMA: Self = Self(8);
    /// G.722, static (clock rate 8000 by RFC 3551's historical error).
    pub const G722: Self = Self(9);
    /// Comfort noise (RFC 3389), static.
    pub const CN: Self = Self(13);
    /// G.729 / G.729A, static.
    pub const G729: Self = Self(18);
    /// Comfort noise on the reserved PT 19 used by older equipment.
    pub const CN_OLD: Self = Self(19);

    /// True for the static comfort-noise payload types (13, and the old 19).
    pub fn is_comfort_noise(self) -> bool {
        self == Self::CN || self == Self::CN_OLD
    }

    /// True if the payload type is dynamic (96–127, RFC 3551 §3).
    pub fn is_dynamic(self) -> bool {
        (96..=127).contains(&self.0)
    }

    /// The static assignment of RFC 3551 Table 4 and 5 for audio: encoding
    /// name and clock rate, or `None` for dynamic/unassigned types.
    pub fn static_info(self) -> Option<(&'static str, ClockRate)> {
        let (name, rate) = match self.0 {
            0 => ("PCMU", 8000),
            3 => ("GSM", 8000),
            4 => ("G723", 8000),
            5 => ("DVI4", 8000),
            6 => ("DVI4", 16000),
            7 => ("LPC", 8000),
            8 => ("PCMA", 8000),
            9 => ("G722", 8000),
            10 | 11 => ("L16", 44100),
            12 => ("QCELP", 8000),
            13 => ("CN", 8000),
            14 => ("MPA", 90000),
            15 => ("G728", 8000),
            16 => ("DVI4", 11025),
            17 => ("DVI4", 22050),
            18 => ("G729", 8000),
            19 => ("CN", 8000),
            25 => ("CelB", 90000),
            26 => ("JPEG", 90000),
            28 => ("nv", 90000),
            31 => ("H261", 90000),
            32 => ("MPV", 90000),
            33 => ("MP2T", 90000),
            34 => ("H263", 90000),
            _ => return None,
        };
        Some((name, ClockRate(rate)))
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An RTP sequence number widened to 64 bits at the edge (RFC 3550 A.1's
/// "extended sequence number": cycles × 65536 + seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeqNo(pub u64);

/// A media clock rate in Hz (RTP timestamp ticks per second).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClockRate(pub u32);

impl ClockRate {
    /// 8 kHz narrowband audio.
    pub const NARROWBAND: Self = Self(8000);

    /// Converts a tick count at this rate into seconds.
    pub fn ticks_to_secs(self, ticks: f64) -> f64 {
        ticks / f64::from(self.0)
    }
}

/// A capture or arrival time: nanoseconds since the Unix epoch. Cores take
/// this as `now`; they never read a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Builds a timestamp from seconds and nanoseconds.
    pub fn from_secs_nanos(secs: u64, nanos: u32) -> Self {
        Self(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(u64::from(nanos)),
        )
    }

    /// Whole seconds since the epoch.
    pub fn secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    /// Sub-second part in nanoseconds.
    pub fn subsec_nanos(self) -> u32 {
        (self.0 % 1_000_000_000) as u32
    }

    /// Seconds since the epoch as a float (for display and arithmetic on
    /// differences; exact to ~0.2 µs for present-day dates).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Signed difference `self - earlier` in seconds.
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0 as i128 - earlier.0 as i128) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_payload_types() {
        assert_eq!(PayloadType::PCMU.static_info().unwrap().0, "PCMU");
        assert_eq!(PayloadType::G722.static_info().unwrap().1, ClockRate(8000));
        assert!(PayloadType(101).static_info().is_none());
        assert!(PayloadType(101).is_dynamic());
        assert!(PayloadType::CN.is_comfort_noise());
    }

    #[test]
    fn timestamp_parts() {
        let t = Timestamp::from_secs_nanos(12, 345);
        assert_eq!(t.secs(), 12);
        assert_eq!(t.subsec_nanos(), 345);
        assert!(
            (Timestamp(2_500_000_000).secs_since(Timestamp(1_000_000_000)) - 1.5).abs() < 1e-12
        );
        assert_eq!(format!("{}", Ssrc(0x2e3d)), "0x00002E3D");
    }
}
