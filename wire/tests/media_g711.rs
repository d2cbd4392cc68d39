//! Bit-exactness of `wire::g711` against the ITU-T G.191 STL exhaustive
//! sweep vectors in `shared/fixtures/g711/` (provenance in
//! `shared/fixtures/SOURCES.md`, github.com/openitu/STL @139db497).

use testkit::fixtures;
use wire::g711;

/// Reads a file of little-endian 16-bit words.
fn words(dir: &std::path::Path, name: &str) -> Vec<i16> {
    let bytes = std::fs::read(dir.join("g711").join(name)).expect("read fixture");
    assert_eq!(bytes.len(), 131_072, "{name}: one word per 16-bit input");
    bytes
        .chunks_exact(2)
        .map(|w| i16::from_le_bytes([w[0], w[1]]))
        .collect()
}

#[test]
fn sweep_source_is_every_int16() {
    let Some(dir) = fixtures() else { return };
    let src = words(&dir, "sweep.src");
    let expected: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    assert_eq!(src, expected);
}

fn check_encoder(ref_name: &str, encode: fn(i16) -> u8, one: fn(&[i16], &mut [u8]) -> usize) {
    let Some(dir) = fixtures() else { return };
    let src = words(&dir, "sweep.src");
    let reference = words(&dir, ref_name);
    let mut mismatches = 0;
    for (&s, &r) in src.iter().zip(&reference) {
        // One code per word, in the low byte.
        let want = (r as u16 & 0xFF) as u8;
        if encode(s) != want {
            if mismatches < 10 {
                eprintln!(
                    "{ref_name}: input {s} -> {:#04x}, STL {want:#04x}",
                    encode(s)
                );
            }
            mismatches += 1;
        }
    }
    assert_eq!(
        mismatches, 0,
        "{ref_name}: {mismatches} of 65536 inputs differ"
    );
    let mut codes = vec![0u8; src.len()];
    assert_eq!(one(&src, &mut codes), src.len());
    assert!(
        codes
            .iter()
            .zip(&reference)
            .all(|(&c, &r)| u16::from(c) == (r as u16 & 0xFF))
    );
}

fn check_decoder(
    code_name: &str,
    ref_name: &str,
    decode: fn(u8) -> i16,
    slice: fn(&[u8], &mut [i16]) -> usize,
) {
    let Some(dir) = fixtures() else { return };
    let codes: Vec<u8> = words(&dir, code_name)
        .iter()
        .map(|&w| (w as u16 & 0xFF) as u8)
        .collect();
    let reference = words(&dir, ref_name);
    let mut mismatches = 0;
    for (&c, &r) in codes.iter().zip(&reference) {
        if decode(c) != r {
            if mismatches < 10 {
                eprintln!("{ref_name}: code {c:#04x} -> {}, STL {r}", decode(c));
            }
            mismatches += 1;
        }
    }
    assert_eq!(
        mismatches, 0,
        "{ref_name}: {mismatches} of 65536 decodes differ"
    );
    let mut out = vec![0i16; codes.len()];
    assert_eq!(slice(&codes, &mut out), codes.len());
    assert_eq!(out, reference);
    // Every one of the 256 codes occurs in the sweep.
    let mut seen = [false; 256];
    codes.iter().for_each(|&c| seen[usize::from(c)] = true);
    assert!(seen.iter().all(|&s| s), "{code_name} covers all codes");
}

#[test]
fn ulaw_encoder_matches_stl_on_all_inputs() {
    check_encoder("sweep-r.u", g711::linear_to_ulaw, g711::encode_ulaw);
}

#[test]
fn alaw_encoder_matches_stl_on_all_inputs() {
    check_encoder("sweep-r.a", g711::linear_to_alaw, g711::encode_alaw);
}

#[test]
fn ulaw_decoder_matches_stl_on_all_inputs() {
    check_decoder(
        "sweep-r.u",
        "sweep-r.reu",
        g711::ulaw_to_linear,
        g711::decode_ulaw,
    );
    check_decoder(
        "sweep-r.u",
        "sweep-r.u-u",
        g711::ulaw_to_linear,
        g711::decode_ulaw,
    );
}

#[test]
fn alaw_decoder_matches_stl_on_all_inputs() {
    check_decoder(
        "sweep-r.a",
        "sweep-r.rea",
        g711::alaw_to_linear,
        g711::decode_alaw,
    );
    check_decoder(
        "sweep-r.a",
        "sweep-r.a-a",
        g711::alaw_to_linear,
        g711::decode_alaw,
    );
}
