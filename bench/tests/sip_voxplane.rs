//! The SIP benchmark harness end to end at a low rate against `voxplane up`:
//! sipp UAC (trunk `bench-uac`, trusted by address) → Voxplane's B2BUA
//! (media anchored, provisioned by the harness) → sipp UAS (trunk
//! `bench-uas`) on loopback. Checks behaviour (admission, routing, calls
//! pass, memory is read), never speed.
//!
//! The `voxplane` binary is `$VOXPLANE_BIN`, else the one beside this test's
//! `deps/` directory (built by `cargo test --workspace` or `cargo build`).
//! Skips without sipp or that binary unless `VOXPLANE_REQUIRE_TOOLS` is set.

mod sip_common;

use std::path::PathBuf;

use bench::sip::campaign;
use bench::sip::sipp::Sipp;
use bench::sip::target::{Target, Voxplane};
use sip_common::{endpoint, free_addr, low_rate};

fn voxplane_bin() -> Option<PathBuf> {
    let bin = match std::env::var_os("VOXPLANE_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            let exe = std::env::current_exe().ok()?;
            exe.parent()?.parent()?.join("voxplane")
        }
    };
    let missing = !bin.is_file();
    let why = format!(
        "{} is missing (cargo build, or set VOXPLANE_BIN)",
        bin.display()
    );
    assert!(
        !(missing && std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_some()),
        "{why} and VOXPLANE_REQUIRE_TOOLS is set"
    );
    if missing {
        println!("SKIP: {why}");
        return None;
    }
    Some(bin)
}

#[test]
fn low_rate_campaign_through_voxplane() {
    if !testkit::tool("sipp") {
        return;
    }
    let Some(program) = voxplane_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (uac, uas) = (endpoint(), endpoint());
    // 400 media ports: 100 anchored calls at most.
    let lo = loop {
        let p = free_addr().port();
        if p.is_multiple_of(2) && p < 60000 {
            break p;
        }
    };
    let voxplane = Voxplane {
        program,
        listen: free_addr(),
        uac,
        uas,
        media_addr: "127.0.0.1".parse().unwrap(),
        port_range: (lo, lo + 399),
        cpu: None,
    };
    let sipp = Sipp::new(PathBuf::from("sipp"), dir.path(), None).unwrap();
    assert!(voxplane.version().unwrap().contains("voxplane"));
    let settings = low_rate(uac, uas, 150);
    let rate =
        campaign::measure_rate(&voxplane, &sipp, &settings, dir.path(), &mut |_| {}).unwrap();
    let log = || format!("{:#?}", rate.steps);
    assert_eq!(rate.cps, Some(40), "{}", log());
    let last = &rate.steps[1];
    assert_eq!((last.calls, last.successful, last.failed), (80, 80, 0));
    assert!(last.response_ms.unwrap().count == 80, "{}", log());

    // 150 dialogs asked, 100 allowed by the port range: the harness says so.
    let mem = campaign::measure_memory(&voxplane, &sipp, &settings, dir.path(), rate.cps).unwrap();
    assert_eq!(mem.dialogs_requested, 150);
    assert_eq!(mem.dialogs_held, 100, "{mem:?}");
    assert!(
        mem.limited_by
            .as_deref()
            .unwrap()
            .contains("media port range")
    );
    assert_eq!(mem.before.processes, 1, "{mem:?}");
    assert!(
        mem.before.rss_kib > 0 && mem.during.rss_kib >= mem.before.rss_kib,
        "{mem:?}"
    );
    assert!(mem.bytes_per_dialog.is_some());
}
