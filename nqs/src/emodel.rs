//! ITU-T G.107 E-model (narrowband): transmission rating factor R and the
//! conversational-quality MOS estimate derived from it.
//!
//! The project's model, fixed here and tested row by row against
//! `quality/emodel_computed_table.tsv`:
//!
//! ```text
//! R      = R_DEFAULT - Idd - Ie,eff          (R_DEFAULT = 93.2: Ro - Is - Id with
//!                                             every G.107 §7.7 default, T = Ta = 0, A = 0)
//! Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)     (G.107 §7.4)
//! Idd    = 0 for Ta <= 100 ms, else
//!          25 * ((1 + X^6)^(1/6) - 3 * (1 + (X/3)^6)^(1/6) + 2),  X = log2(Ta / 100)
//! MOS    = 1 (R < 0), 4.5 (R > 100),
//!          max(1, 1 + 0.035 R + R (R - 60) (100 - R) * 7e-6) otherwise   (G.107 Annex B)
//! ```
//!
//! Echo terms (Idte, Idle) stay at their default values, which are part of
//! `R_DEFAULT`. A passive analyser does not know the one-way delay; callers
//! pass 0 ms unless they have it (e.g. from RTCP round-trip time / 2).

use serde::Serialize;
use wire::types::PayloadType;

/// `Ro - Is - Id` with every G.107 §7.7 default value (T = Ta = 0 ms, A = 0).
pub const R_DEFAULT: f64 = 93.2;

/// A codec as far as the E-model is concerned: its equipment impairment
/// factor `Ie` and packet-loss robustness factor `Bpl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum Codec {
    /// G.711 (PCMU/PCMA) with the G.711 Appendix I packet-loss concealment.
    /// The default for PCMU/PCMA: every current endpoint conceals loss.
    G711Plc,
    /// G.711 without packet-loss concealment.
    G711,
    /// G.729 Annex A (with VAD), the usual "G729" payload.
    G729A,
    /// G.722 at 64 kbit/s, rated on the narrowband scale (see [`Codec::params`]).
    G722,
    /// G.723.1 at 6.3 kbit/s with VAD.
    G7231,
    /// GSM 06.10 full rate.
    Gsm,
    /// iLBC (RFC 3951), 20 or 30 ms frames.
    Ilbc,
    /// Opus restricted to narrowband.
    OpusNb,
}

/// The per-codec constants of the E-model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CodecParams {
    /// Equipment impairment factor `Ie` (R units).
    pub ie: f64,
    /// Packet-loss robustness factor `Bpl`.
    pub bpl: f64,
    /// Whether both values are taken from ITU-T G.113 Appendix I (false:
    /// a project assumption, see [`Codec::params`]).
    pub from_g113: bool,
}

impl Codec {
    /// The E-model constants for this codec.
    ///
    /// | codec | Ie | Bpl | source |
    /// |---|---|---|---|
    /// | G.711 + PLC (G.711 App. I) | 0 | 25.1 | G.113 App. I |
    /// | G.711, no PLC | 0 | 4.3 | G.113 App. I |
    /// | G.729A + VAD | 11 | 19.0 | G.113 App. I |
    /// | G.723.1 6.3k + VAD | 15 | 16.1 | G.113 App. I |
    /// | GSM 06.10 FR | 20 | 10.0 | Ie: G.113 App. I; **Bpl assumed** (GSM-EFR's value) |
    /// | G.722 | 0 | 25.1 | **assumed**: narrowband-equivalent of G.711+PLC (G.113 rates G.722 only on the wideband scale) |
    /// | iLBC | 10 | 32.0 | **assumed**: commonly quoted planning values, not in G.113 |
    /// | Opus NB | 0 | 25.1 | **assumed**: treated like G.711+PLC, not in G.113 |
    ///
    /// The G.113 values are the ones commonly cited from it (and, for the
    /// three codecs of `quality/emodel_computed_table.tsv`, the ones the
    /// table uses); the Recommendation text itself was not available to
    /// check them against.
    pub fn params(self) -> CodecParams {
        let (ie, bpl, from_g113) = match self {
            Codec::G711Plc => (0.0, 25.1, true),
            Codec::G711 => (0.0, 4.3, true),
            Codec::G729A => (11.0, 19.0, true),
            Codec::G7231 => (15.0, 16.1, true),
            Codec::Gsm => (20.0, 10.0, false),
            Codec::G722 => (0.0, 25.1, false),
            Codec::Ilbc => (10.0, 32.0, false),
            Codec::OpusNb => (0.0, 25.1, false),
        };
        CodecParams { ie, bpl, from_g113 }
    }

    /// Picks the codec from an SDP `rtpmap` encoding name (case-insensitive),
    /// or `None` for names the E-model table does not cover.
    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        const NAMES: [(&str, Codec); 9] = [
            ("PCMU", Codec::G711Plc),
            ("PCMA", Codec::G711Plc),
            ("G729", Codec::G729A),
            ("G729A", Codec::G729A),
            ("G722", Codec::G722),
            ("G723", Codec::G7231),
            ("GSM", Codec::Gsm),
            ("iLBC", Codec::Ilbc),
            ("opus", Codec::OpusNb),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, c)| c)
    }

    /// Picks the codec from a static payload type (RFC 3551), or `None` for
    /// dynamic or non-audio types.
    pub fn from_payload_type(pt: PayloadType) -> Option<Codec> {
        pt.static_info()
            .and_then(|(name, _)| Codec::from_encoding_name(name))
    }
}

/// The effective equipment impairment factor `Ie,eff` (G.107 §7.4).
///
/// `ppl_percent` is the packet-loss probability in percent (clamped to
/// 0–100), `burst_r` the burst ratio (1 for random loss; values below 1
/// are taken as 1).
pub fn ie_eff(codec: Codec, ppl_percent: f64, burst_r: f64) -> f64 {
    let CodecParams { ie, bpl, .. } = codec.params();
    let ppl = finite_or(ppl_percent, 0.0).clamp(0.0, 100.0);
    let burst_r = finite_or(burst_r, 1.0).max(1.0);
    // Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)
    ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)
}

/// The absolute-delay impairment `Idd` (G.107 §7.3) for a one-way delay
/// `ta_ms`; 0 up to 100 ms.
pub fn idd(ta_ms: f64) -> f64 {
    let ta = finite_or(ta_ms, 0.0);
    if ta <= 100.0 {
        return 0.0;
    }
    let x = (ta / 100.0).log2();
    25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
        + 2.0)
}

/// The transmission rating factor R for a codec under `ppl_percent` packet
/// loss (percent) with burst ratio `burst_r`, at `one_way_delay_ms`.
pub fn r_factor(codec: Codec, ppl_percent: f64, burst_r: f64, one_way_delay_ms: f64) -> f64 {
    R_DEFAULT - idd(one_way_delay_ms) - ie_eff(codec, ppl_percent, burst_r)
}

/// The MOS (conversational quality, estimated) for a rating factor R
/// (G.107 Annex B, eq. B-4).
///
/// The cubic dips slightly below 1 for 0 < R < 6.5 (to 0.989 at R ≈ 3.2);
/// the result is floored at 1 so that MOS stays in 1–4.5 and never rises
/// when R falls.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r < 0.0 {
        1.0
    } else if r > 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).max(1.0)
    }
}

/// Shortcut: `mos_from_r(r_factor(..))`.
pub fn mos(codec: Codec, ppl_percent: f64, burst_r: f64, one_way_delay_ms: f64) -> f64 {
    mos_from_r(r_factor(codec, ppl_percent, burst_r, one_way_delay_ms))
}

fn finite_or(v: f64, default: f64) -> f64 {
    if v.is_finite() { v } else { default }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_sample_points() {
        // quality/NOTES.md §4: G.711+PLC random loss.
        for (ppl, r, m) in [
            (0.0, 93.20, 4.409),
            (1.0, 89.56, 4.328),
            (2.0, 86.19, 4.235),
            (5.0, 77.42, 3.923),
            (10.0, 66.13, 3.411),
            (20.0, 51.07, 2.631),
        ] {
            let got = r_factor(Codec::G711Plc, ppl, 1.0, 0.0);
            assert!((got - r).abs() < 0.01, "{ppl}: {got}");
            assert!((mos_from_r(got) - m).abs() < 0.001);
        }
    }

    #[test]
    fn mos_clamps_and_ignores_nan() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(3.2), 1.0);
        assert_eq!(mos_from_r(150.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        assert_eq!(idd(f64::NAN), 0.0);
        assert!(r_factor(Codec::G711, f64::NAN, f64::INFINITY, -1.0).is_finite());
    }

    #[test]
    fn burstiness_lowers_quality() {
        let random = r_factor(Codec::G729A, 5.0, 1.0, 0.0);
        let bursty = r_factor(Codec::G729A, 5.0, 2.0, 0.0);
        assert!(bursty < random);
    }

    #[test]
    fn names() {
        assert_eq!(Codec::from_encoding_name("pcma"), Some(Codec::G711Plc));
        assert_eq!(Codec::from_encoding_name("G729"), Some(Codec::G729A));
        assert_eq!(Codec::from_encoding_name("telephone-event"), None);
        assert_eq!(
            Codec::from_payload_type(PayloadType::G722),
            Some(Codec::G722)
        );
        assert_eq!(Codec::from_payload_type(PayloadType(101)), None);
    }
}
