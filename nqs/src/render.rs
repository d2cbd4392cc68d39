//! Rendering a G.711 stream to linear PCM (the `--wav-dir` output).
//!
//! Rules (also in `docs/analysis.md`):
//! - Each payload is placed at its RTP timestamp, relative to the earliest
//!   timestamp of the stream (timestamps are unwrapped modulo 2^32 in arrival
//!   order), so reordered packets land where they belong and duplicates
//!   overwrite themselves.
//! - A gap (lost packets, or silence suppression) is filled with zero
//!   samples, one per missing timestamp tick: a lost 20 ms PCMU packet
//!   becomes 160 zero samples. No loss concealment is applied: the render
//!   shows the damage the network did.
//! - A gap longer than [`MAX_GAP_TICKS`] (a timestamp jump, e.g. a restarted
//!   sender) is shortened to [`COLLAPSED_GAP_TICKS`], so a bad timestamp
//!   cannot make the file huge.
//! - Only PCMU and PCMA payloads are rendered; other payload types (events,
//!   comfort noise) are not in the input (the analyser keeps only G.711).

use wire::PayloadType;

/// Gaps longer than this many ticks (60 s at 8 kHz) are collapsed.
pub const MAX_GAP_TICKS: i64 = 60 * 8000;
/// What a collapsed gap becomes (1 s at 8 kHz).
pub const COLLAPSED_GAP_TICKS: i64 = 8000;

/// Renders kept G.711 packets `(rtp_timestamp, payload_type, payload)`, in
/// arrival order, to 8 kHz signed 16-bit samples.
pub fn render_g711(packets: &[(u32, PayloadType, Vec<u8>)]) -> Vec<i16> {
    let Some(&(first, _, _)) = packets.first() else {
        return Vec::new();
    };
    // Unwrap timestamps in arrival order.
    let mut prev = first;
    let mut ext: i64 = 0;
    let mut placed: Vec<(i64, usize)> = Vec::with_capacity(packets.len());
    for (i, (ts, _, _)) in packets.iter().enumerate() {
        ext += i64::from(ts.wrapping_sub(prev) as i32);
        prev = *ts;
        placed.push((ext, i));
    }
    placed.sort_by_key(|&(ts, i)| (ts, i));

    let mut out: Vec<i16> = Vec::new();
    // Position in `out` that corresponds to the previous packet's timestamp.
    let mut base_ts = placed[0].0;
    let mut base_pos: i64 = 0;
    for &(ts, i) in &placed {
        let (_, pt, payload) = &packets[i];
        let mut pos = base_pos + (ts - base_ts);
        let end = out.len() as i64;
        if pos - end > MAX_GAP_TICKS {
            pos = end + COLLAPSED_GAP_TICKS;
        }
        base_ts = ts;
        base_pos = pos;
        let pos = pos.max(0) as usize;
        let needed = pos + payload.len();
        if out.len() < needed {
            out.resize(needed, 0);
        }
        let dst = &mut out[pos..needed];
        if *pt == PayloadType::PCMA {
            wire::g711::decode_alaw(payload, dst);
        } else {
            wire::g711::decode_ulaw(payload, dst);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_zero_filled_and_reorder_is_undone() {
        let pkt = |ts: u32| (ts, PayloadType::PCMU, vec![0x00u8; 160]);
        // 0, 320 (one lost at 160), then 480 arriving before 640 swapped.
        let packets = vec![pkt(0), pkt(320), pkt(640), pkt(480)];
        let pcm = render_g711(&packets);
        assert_eq!(pcm.len(), 800);
        assert!(pcm[..160].iter().all(|&s| s == -32124));
        assert!(pcm[160..320].iter().all(|&s| s == 0));
        assert!(pcm[320..].iter().all(|&s| s == -32124));
    }

    #[test]
    fn timestamp_wrap_and_jump() {
        let pkt = |ts: u32| (ts, PayloadType::PCMA, vec![0xD5u8; 160]);
        let pcm = render_g711(&[pkt(u32::MAX - 159), pkt(0)]);
        assert_eq!(pcm.len(), 320);
        let pcm = render_g711(&[pkt(0), pkt(100_000_000)]);
        assert_eq!(pcm.len() as i64, 160 + COLLAPSED_GAP_TICKS + 160);
    }
}
