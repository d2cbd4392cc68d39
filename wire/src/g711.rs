//! G.711 µ-law and A-law companding, bit-exact with the ITU-T G.191 Software
//! Tool Library (STL) reference `g711.c`.
//!
//! Decoding goes through 256-entry tables built at compile time. Encoding
//! follows the STL's integer arithmetic exactly: µ-law works on 14-bit input
//! (`sample >> 2`) with a bias of 33, A-law on 12 bits of magnitude
//! (`sample >> 4`, one's complement for negative samples). Decoded values
//! are left-justified 16-bit linear PCM, as the STL writes them.
//!
//! ```
//! use wire::g711;
//! assert_eq!(g711::ulaw_to_linear(0x00), -32124);
//! assert_eq!(g711::alaw_to_linear(0xD5), 8);
//! assert_eq!(g711::linear_to_ulaw(0), 0xFF);
//! ```

/// µ-law code of digital silence (the encoding of linear 0).
pub const ULAW_SILENCE: u8 = 0xFF;

/// A-law code of digital silence (the encoding of linear 0).
pub const ALAW_SILENCE: u8 = 0xD5;

/// Decodes one µ-law code to left-justified 16-bit linear PCM.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Decodes one A-law code to left-justified 16-bit linear PCM.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// Encodes one 16-bit linear sample to µ-law, as the G.191 STL
/// `ulaw_compress` does (the two low bits are ignored).
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    // One's complement for negative input, then 14-bit magnitude plus the
    // bias of 33 (G.711 Table 2a), clipped to 13 bits.
    let magnitude = if sample < 0 { !sample } else { sample };
    let absno = ((i32::from(magnitude) >> 2) + 33).min(0x1FFF);
    // Segment number: 1 + position of the highest set bit of absno >> 6.
    let segno = 1 + (32 - ((absno >> 6) as u32).leading_zeros()) as i32;
    let high_nibble = 0x08 - segno;
    let low_nibble = 0x0F - ((absno >> segno) & 0x0F);
    let code = ((high_nibble << 4) | low_nibble) as u8;
    if sample >= 0 { code | 0x80 } else { code }
}

/// Encodes one 16-bit linear sample to A-law, as the G.191 STL
/// `alaw_compress` does (the three low bits are ignored).
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    // One's complement for negative input, 12-bit magnitude.
    let magnitude = if sample < 0 { !sample } else { sample };
    let mut ix = i32::from(magnitude) >> 4;
    if ix > 15 {
        // Segment 1..7: exponent from the highest set bit, mantissa the four
        // bits below it.
        let exponent = (32 - (ix as u32).leading_zeros()) as i32 - 4;
        ix = ((ix >> (exponent - 1)) - 16) + (exponent << 4);
    }
    if sample >= 0 {
        ix |= 0x80;
    }
    (ix ^ 0x55) as u8
}

/// Decodes µ-law codes into linear samples, one per code.
///
/// Decodes `min(codes.len(), out.len())` samples and returns that count.
pub fn decode_ulaw(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
        *o = ULAW_DECODE[usize::from(c)];
    }
    n
}

/// Decodes A-law codes into linear samples, one per code.
///
/// Decodes `min(codes.len(), out.len())` samples and returns that count.
pub fn decode_alaw(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (o, &c) in out[..n].iter_mut().zip(&codes[..n]) {
        *o = ALAW_DECODE[usize::from(c)];
    }
    n
}

/// Encodes linear samples into µ-law codes, one per sample.
///
/// Encodes `min(samples.len(), out.len())` samples and returns that count.
pub fn encode_ulaw(samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
        *o = linear_to_ulaw(s);
    }
    n
}

/// Encodes linear samples into A-law codes, one per sample.
///
/// Encodes `min(samples.len(), out.len())` samples and returns that count.
pub fn encode_alaw(samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    for (o, &s) in out[..n].iter_mut().zip(&samples[..n]) {
        *o = linear_to_alaw(s);
    }
    n
}

/// µ-law decode table, indexed by code.
static ULAW_DECODE: [i16; 256] = build_ulaw_table();

/// A-law decode table, indexed by code.
static ALAW_DECODE: [i16; 256] = build_alaw_table();

/// The STL `ulaw_expand` for every code.
const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        // The code is transmitted inverted (G.711 §3.2).
        let inverted = !(code as i32);
        let exponent = (inverted >> 4) & 0x07;
        let segment = exponent + 1;
        let mantissa = inverted & 0x0F;
        let step = 4 << segment;
        let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
        table[code] = if code < 0x80 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        code += 1;
    }
    table
}

/// The STL `alaw_expand` for every code.
const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        // Even bits are inverted on the line (G.711 §2.2).
        let ix = (code as i32 ^ 0x55) & 0x7F;
        let exponent = ix >> 4;
        let mut mantissa = ix & 0x0F;
        if exponent > 0 {
            mantissa += 16;
        }
        mantissa = (mantissa << 4) + 0x08;
        if exponent > 1 {
            mantissa <<= exponent - 1;
        }
        table[code] = if code > 127 {
            mantissa as i16
        } else {
            -mantissa as i16
        };
        code += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_points_from_stl_readme() {
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(0), ULAW_SILENCE);
        assert_eq!(linear_to_alaw(0), ALAW_SILENCE);
    }

    #[test]
    fn digital_milliwatt() {
        // G.711 digital milliwatt sequences (quality/NOTES.md §5).
        let mu = [0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E];
        let a = [0x34, 0x21, 0x21, 0x34, 0xB4, 0xA1, 0xA1, 0xB4];
        let mut out = [0i16; 8];
        assert_eq!(decode_ulaw(&mu, &mut out), 8);
        assert_eq!(
            out,
            [-8828, -20860, -20860, -8828, 8828, 20860, 20860, 8828]
        );
        decode_alaw(&a, &mut out);
        assert_eq!(
            out,
            [-8960, -20992, -20992, -8960, 8960, 20992, 20992, 8960]
        );
    }

    #[test]
    fn decode_then_encode_is_identity_on_codes() {
        for code in 0..=255u8 {
            // µ-law 0x7F (negative zero) decodes to 0, which encodes as 0xFF.
            if code != 0x7F {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(code)), code, "µ {code:#04x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "A {code:#04x}");
        }
    }

    #[test]
    fn slice_helpers_stop_at_shorter_side() {
        let mut codes = [0u8; 3];
        assert_eq!(encode_ulaw(&[0, 100, -100, 5], &mut codes), 3);
        assert_eq!(codes[0], 0xFF);
        let mut short = [0u8; 2];
        assert_eq!(encode_alaw(&[0, 1, 2], &mut short), 2);
    }
}
