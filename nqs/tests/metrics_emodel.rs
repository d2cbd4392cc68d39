//! The E-model against every row of `quality/emodel_computed_table.tsv`
//! (G.107 formulas evaluated by tools/emodel_table.py; computed values, not
//! an ITU test vector): Ie,eff, Idd and R within 0.01, MOS within 0.01.

use nqs::emodel::{self, Codec};
use testkit::fixtures;

#[test]
fn every_row_of_the_computed_table() {
    let Some(fx) = fixtures() else { return };
    let text = std::fs::read_to_string(fx.join("quality/emodel_computed_table.tsv"))
        .expect("emodel_computed_table.tsv");
    let mut rows = 0;
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| f[i].parse::<f64>().expect("number");
        let codec = match f[0] {
            s if s.starts_with("G.711 with PLC") => Codec::G711Plc,
            s if s.starts_with("G.711 without PLC") => Codec::G711,
            s if s.starts_with("G.729A") => Codec::G729A,
            other => panic!("unknown codec row {other}"),
        };
        let p = codec.params();
        assert_eq!((p.ie, p.bpl), (num(1), num(2)), "{line}");
        assert!(p.from_g113);
        let (burst_r, ppl, ta) = (num(3), num(4), num(5));
        let ie_eff = emodel::ie_eff(codec, ppl, burst_r);
        let idd = emodel::idd(ta);
        let r = emodel::r_factor(codec, ppl, burst_r, ta);
        let mos = emodel::mos_from_r(r);
        assert!((ie_eff - num(6)).abs() < 0.01, "Ie,eff {ie_eff} in {line}");
        assert!((idd - num(7)).abs() < 0.01, "Idd {idd} in {line}");
        assert!((r - num(8)).abs() < 0.01, "R {r} in {line}");
        assert!((mos - num(9)).abs() < 0.01, "MOS {mos} in {line}");
        rows += 1;
    }
    assert_eq!(rows, 81);
}

#[test]
fn mos_is_monotonic_in_loss_and_delay() {
    for codec in [
        Codec::G711Plc,
        Codec::G711,
        Codec::G729A,
        Codec::G722,
        Codec::Gsm,
    ] {
        let mut prev = f64::INFINITY;
        for i in 0..=100 {
            let m = emodel::mos(codec, f64::from(i), 1.0, 0.0);
            assert!(m <= prev + 1e-12 && (1.0..=4.5).contains(&m));
            prev = m;
        }
        let mut prev = f64::INFINITY;
        for ta in (0..2000).step_by(10) {
            let m = emodel::mos(codec, 1.0, 1.0, f64::from(ta));
            assert!(m <= prev + 1e-12);
            prev = m;
        }
    }
}
