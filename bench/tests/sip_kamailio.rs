//! The SIP benchmark harness end to end at a low rate: sipp UAC → Kamailio
//! (configured by the harness as a stateful proxy) → sipp UAS on loopback.
//! Checks behaviour (the CSVs parse, calls pass, a rate and response times
//! come out, memory is read), never speed. Skips without sipp or Kamailio
//! unless `VOXPLANE_REQUIRE_TOOLS` is set.

mod sip_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bench::sip::campaign::{self, Settings};
use bench::sip::sipp::Sipp;
use bench::sip::target::{Kamailio, Target};
use sip_common::{endpoint, free_addr, low_rate};

#[test]
fn low_rate_campaign_through_kamailio() {
    if !(testkit::tool("sipp") && testkit::tool("kamailio") && testkit::tool("taskset")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (uac, uas) = (endpoint(), endpoint());
    let kamailio = Kamailio {
        program: PathBuf::from("kamailio"),
        modules: PathBuf::from(Kamailio::DEBIAN_MODULES),
        listen: free_addr(),
        next_hop: uas.sip,
        children: 2,
        shm_mib: 64,
        pkg_mib: 8,
        cpu: None,
    };
    let sipp = Sipp::new(PathBuf::from("sipp"), dir.path(), None).unwrap();
    assert!(sipp.version().unwrap().contains("SIPp"));
    assert!(kamailio.version().unwrap().contains("kamailio"));
    let settings = low_rate(uac, uas, 120);
    let mut seen = 0;
    let rate = campaign::measure_rate(&kamailio, &sipp, &settings, dir.path(), &mut |_| seen += 1)
        .unwrap();
    let log = || format!("{:#?}", rate.steps);
    assert_eq!(seen, 2, "{}", log());
    assert_eq!(
        rate.steps.iter().map(|s| s.rate).collect::<Vec<_>>(),
        [20, 40]
    );
    assert_eq!(rate.cps, Some(40), "{}", log());
    assert_eq!(rate.failed_calls, 0);
    let last = &rate.steps[1];
    assert_eq!((last.calls, last.successful, last.failed), (80, 80, 0));
    assert!(last.carried_cps.unwrap() > 30.0, "{}", log());
    let p = last.response_ms.unwrap();
    assert_eq!(p.count, 80);
    assert!(rate.response_ms_p99.unwrap() >= rate.response_ms_p50.unwrap());

    let mem = campaign::measure_memory(&kamailio, &sipp, &settings, dir.path(), rate.cps).unwrap();
    assert_eq!(mem.dialogs_held, 120);
    assert_eq!(mem.setup_rate, 30, "3/4 of the 40 calls/s carried");
    assert!(mem.before.processes >= 3, "{mem:?}");
    assert!(
        mem.before.pss_kib > 0 && mem.during.pss_kib >= mem.before.pss_kib,
        "{mem:?}"
    );
    assert!(mem.bytes_per_dialog.is_some());
}

#[test]
fn a_target_that_does_not_answer_fails_every_step() {
    if !testkit::tool("sipp") {
        return;
    }
    // The "target" is a port where nothing listens: the UAS is never
    // reached, every call times out, and the search reports no rate.
    struct Nothing(SocketAddr);
    impl Target for Nothing {
        fn label(&self) -> &'static str {
            "nothing"
        }
        fn sip_addr(&self) -> SocketAddr {
            self.0
        }
        fn start(
            &self,
            dir: &std::path::Path,
            _: bench::sip::target::Purpose,
        ) -> Result<bench::sip::process::ProcessGroup, bench::sip::Error> {
            bench::sip::process::ProcessGroup::spawn("sleep", "sleep".as_ref(), ["30"], dir, None)
        }
        fn memory_metric(&self) -> bench::sip::target::MemoryMetric {
            bench::sip::target::MemoryMetric::Rss
        }
        fn version(&self) -> Result<String, bench::sip::Error> {
            Ok("nothing".into())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let sipp = Sipp::new(PathBuf::from("sipp"), dir.path(), None).unwrap();
    let settings = Settings {
        start_rate: 4,
        max_rate: 4,
        resolution: 0.5,
        step: Duration::from_secs(1),
        hold_ms: 0,
        recv_timeout_ms: 500,
        dialogs: 1,
        dialog_rate: 1,
        uac: endpoint(),
        uas: endpoint(),
    };
    let r = campaign::measure_rate(
        &Nothing(free_addr()),
        &sipp,
        &settings,
        dir.path(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.cps, None, "{:#?}", r.steps);
    assert_eq!(r.first_failing_rate, Some(1));
    let first = &r.steps[0];
    assert_eq!((first.rate, first.failed, first.passed), (4, 4, false));
    assert!(
        first.note.as_deref().unwrap().contains("failed calls"),
        "{first:?}"
    );
}
