//! CDRs into a real `clickhouse-server` on loopback (the NQS tests' harness, shared by
//! path), read back with SQL.

#[path = "../../nqs/tests/common/mod.rs"]
mod common;

use control::cdr::{CallRecorder, Cause, ClickHouseWriter};
use sbus::record::CdrLeg;

#[tokio::test(flavor = "current_thread")]
async fn cdrs_reach_clickhouse() {
    let Some(ch) = common::ClickHouse::start() else {
        return;
    };
    let mut w = ClickHouseWriter::new(&ch.url(), "voxplane_cdr").unwrap();
    let mut answered = CallRecorder::start("c1", "example.com", "alice", "bob", 1_700_000_000_000);
    answered.answer(1_700_000_002_000);
    for role in ["caller", "callee"] {
        answered.leg(CdrLeg {
            role: role.into(),
            peer: "192.0.2.1:4000".into(),
            codec: "PCMU".into(),
            packets: 500,
            bytes: 86_000,
            drops: 1,
            lost: 3,
        });
    }
    let cdrs = [
        answered.end(1_700_000_012_000, 200, Cause::CallerBye),
        CallRecorder::start("c2", "other.org", "carol", "dave", 1_700_000_100_000).end(
            1_700_000_105_000,
            487,
            Cause::Cancel,
        ),
    ];
    w.write(&cdrs).await.unwrap();
    w.write(&cdrs[..1]).await.unwrap(); // the table exists now; appends
    let c = w.client();
    let n: u64 = c
        .query("SELECT count() FROM voxplane_cdr.cdrs")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 3);
    let talk: u64 = c
        .query("SELECT sum(duration_ms) FROM voxplane_cdr.cdrs WHERE domain = 'example.com'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(talk, 20_000);
    let cause: String = c
        .query("SELECT any(disconnect_cause) FROM voxplane_cdr.cdrs WHERE call_id = 'c2'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(cause, "cancel");
    let packets: u64 = c
        .query("SELECT sum(arraySum(leg_packets)) FROM voxplane_cdr.cdrs WHERE call_id = 'c1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(packets, 2_000);
    assert!(ClickHouseWriter::new(&ch.url(), "bad-name; DROP").is_err());
}
