//! WAV bytes for rendered audio (8 kHz, signed 16-bit PCM).

use std::io::Cursor;

use crate::recorder::SAMPLE_RATE;

/// Encodes interleaved samples with `channels` channels as a WAV file.
pub fn to_bytes(samples: &[i16], channels: u16) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cur = Cursor::new(Vec::with_capacity(44 + 2 * samples.len()));
    {
        // Writing to memory cannot fail except on a > 4 GiB file, which a
        // recording never reaches (the recorder bounds gaps).
        let mut w = hound::WavWriter::new(&mut cur, spec).expect("in-memory WAV header");
        for &s in samples {
            w.write_sample(s).expect("in-memory WAV sample");
        }
        w.finalize().expect("in-memory WAV finalize");
    }
    cur.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back() {
        let b = to_bytes(&[1, -2, 3, -4], 2);
        let mut r = hound::WavReader::new(&b[..]).unwrap();
        assert_eq!(r.spec().channels, 2);
        let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s, [1, -2, 3, -4]);
    }
}
