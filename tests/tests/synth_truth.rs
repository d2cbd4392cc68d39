//! The analyser against the synthesiser's ground truth: captures with
//! random and bursty loss, jitter spikes, reordering, duplicates, sequence
//! wrap, RFC 4733 events, silence suppression and IPv6 calls. Every stream
//! must be correlated to its call, and its packets, loss and RFC 3550
//! jitter must be exactly what the generator did to it.

use bench::synth::{JitterModel, LossPreset, SynthConfig};
use tests::analyze_file;

fn check(name: &str, cfg: &SynthConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.pcap"));
    let truth = bench::synth::write_pcap_file(cfg, &path).unwrap();
    let (report, error) = analyze_file(&path);
    assert!(error.is_none(), "{name}: {error:?}");
    assert_eq!(report.calls.len(), truth.calls.len(), "{name}: calls");
    let mut failures = Vec::new();
    for t in &truth.streams {
        if t.received == 0 {
            continue;
        }
        let Some(s) = report.streams.iter().find(|s| {
            s.src == t.src.to_string() && s.dst == t.dst.to_string() && s.ssrc == t.ssrc.to_string()
        }) else {
            failures.push(format!("{} -> {} {}: not reported", t.src, t.dst, t.ssrc));
            continue;
        };
        let id = format!("{} -> {} {}", t.src, t.dst, t.ssrc);
        if s.call_id.as_deref() != Some(t.call_id.as_str()) {
            failures.push(format!("{id}: call {:?} vs {}", s.call_id, t.call_id));
        }
        if s.packets != t.received {
            failures.push(format!("{id}: packets {} vs {}", s.packets, t.received));
        }
        if s.lost != t.apparent_lost() {
            failures.push(format!(
                "{id}: lost {} vs {} (expected {} vs {}, min/max ext {:?}/{:?}, first seq {})",
                s.lost,
                t.apparent_lost(),
                s.expected,
                t.expected(),
                t.min_ext_seq,
                t.max_ext_seq,
                t.first_seq
            ));
        }
        if s.metrics.duplicates != t.duplicates {
            failures.push(format!(
                "{id}: duplicates {} vs {}",
                s.metrics.duplicates, t.duplicates
            ));
        }
        if (s.jitter_ms - t.jitter_ms).abs() > 0.01 {
            failures.push(format!(
                "{id}: RFC 3550 jitter {:.4} vs {:.4} (dups {} reordered {} dtmf pkts {} vad {})",
                s.jitter_ms, t.jitter_ms, t.duplicates, t.reordered, t.dtmf_packets, t.vad
            ));
        }
        if s.metrics.dtmf_events != u64::from(t.dtmf_events) {
            failures.push(format!(
                "{id}: DTMF events {} vs {}",
                s.metrics.dtmf_events, t.dtmf_events
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn lossy_calls_with_typical_jitter() {
    check(
        "lossy",
        &SynthConfig {
            seed: 7,
            calls: 24,
            concurrent: 8,
            duration_ms: (3_000, 8_000),
            loss: LossPreset::LOSSY,
            jitter: JitterModel::TYPICAL,
            ipv6_share: 0.25,
            wrap_share: 0.3,
            ..SynthConfig::default()
        },
    );
}

#[test]
fn bursty_loss_rough_network_with_reordering_and_dtmf() {
    let mut cfg = SynthConfig {
        seed: 11,
        calls: 16,
        concurrent: 16,
        duration_ms: (4_000, 9_000),
        loss: LossPreset::Bursty,
        jitter: JitterModel::ROUGH,
        ipv6_share: 0.2,
        wrap_share: 0.5,
        ..SynthConfig::default()
    };
    cfg.dtmf.call_share = 0.5;
    check("rough", &cfg);
}

#[test]
fn many_seeds_of_a_rough_network() {
    for seed in 100..130 {
        let mut cfg = SynthConfig {
            seed,
            calls: 4,
            concurrent: 4,
            duration_ms: (2_000, 5_000),
            loss: if seed % 2 == 0 {
                LossPreset::Bursty
            } else {
                LossPreset::LOSSY
            },
            jitter: JitterModel::ROUGH,
            ipv6_share: 0.3,
            wrap_share: 0.5,
            ..SynthConfig::default()
        };
        cfg.dtmf.call_share = 0.5;
        check(&format!("seed{seed}"), &cfg);
    }
}
