//! The provisioning commands end to end: domain, user, trunk, dialplan load/test and
//! CDR export against a temporary data directory.

use std::process::{Command, Output};

fn voxplane(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_voxplane"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("running voxplane")
}

fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let o = voxplane(dir, args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const PLAN: &str = r#"
[[rule]]
name = "extensions"
to_regex = '^1\d\d$'
ring = "$number"

[[rule]]
name = "night"
to_prefix = "0"
time = "22:00-06:00"
utc_offset = "+01:00"
reject = 480
reason = "Closed"

[[rule]]
name = "national"
to_prefix = "0"
source = "user"
strip = 1
prepend = "+44"
continue = true

[[rule]]
name = "out"
to_prefix = "+44"
trunk = "carrier1"

[[rule]]
name = "inbound"
source = "trunk:carrier1"
ring = "alice"
"#;

#[test]
fn provision_then_test_the_dialplan_and_export_cdrs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["domain", "add", "example.com"]);
    ok(
        d,
        &[
            "domain",
            "add",
            "eu.example",
            "--placement",
            "eu-west,eu-central",
        ],
    );
    assert!(
        ok(d, &["domain", "list"]).contains("eu.example\tRegions([\"eu-west\", \"eu-central\"])")
    );
    ok(
        d,
        &[
            "user",
            "add",
            "alice@example.com",
            "--password",
            "pw",
            "--display-name",
            "Alice",
        ],
    );
    let o = voxplane(d, &["user", "add", "bob@nowhere.org", "--password", "pw"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown domain"));
    assert_eq!(ok(d, &["user", "list"]), "alice@example.com\tAlice\n");
    ok(
        d,
        &[
            "trunk",
            "add",
            "carrier1",
            "--host",
            "192.0.2.10",
            "--allow-ip",
            "192.0.2.0/28",
            "--allow-ip",
            "198.18.5.5",
            "--username",
            "vx",
            "--password",
            "s3",
            "--codecs",
            "PCMA,PCMU",
        ],
    );
    assert!(ok(d, &["trunk", "list"]).contains(
        "carrier1\t192.0.2.10:5060/udp\tallow=192.0.2.0/28,198.18.5.5\tdigest=vx\tcodecs=PCMA,PCMU"
    ));
    let o = voxplane(
        d,
        &[
            "trunk",
            "add",
            "bad",
            "--host",
            "h",
            "--allow-ip",
            "10.0.0.0/40",
        ],
    );
    assert!(!o.status.success());

    // A dialplan with an error is refused with its line.
    let bad = d.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\nring = \"a\"\n[[rule]]\nto_regex = '(('\nring = \"a\"\n",
    )
    .unwrap();
    let o = voxplane(
        d,
        &[
            "dialplan",
            "load",
            bad.to_str().unwrap(),
            "--domain",
            "example.com",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 4"), "{err}");
    let file = d.join("plan.toml");
    std::fs::write(&file, PLAN).unwrap();
    assert!(
        ok(
            d,
            &[
                "dialplan",
                "load",
                file.to_str().unwrap(),
                "--domain",
                "example.com"
            ]
        )
        .contains("5 rules")
    );

    let test = |args: &str| {
        let mut a = vec!["dialplan", "test", "--domain", "example.com"];
        a.extend(args.split(' '));
        ok(d, &a)
    };
    let out = test("--from alice --to 02071234567 --at 2026-11-25T10:00:00Z");
    assert!(out.contains("matched: national -> out"), "{out}");
    assert!(out.contains("number: +442071234567"), "{out}");
    assert!(out.contains("action: route to trunk carrier1"), "{out}");
    let out = test("--from alice --to 02071234567 --at 2026-11-25T22:30:00Z");
    assert!(
        out.contains("rule: night") && out.contains("action: reject 480 Closed"),
        "{out}"
    );
    let out = test("--from +331234 --to 555 --source-ip 192.0.2.3 --at 1700000000000");
    assert!(
        out.contains("source: Trunk(\"carrier1\")") && out.contains("action: ring user alice"),
        "{out}"
    );
    let out = test("--from alice --to 105");
    assert!(out.contains("action: ring user 105"), "{out}");
    let out = test("--from stranger --to 02071234567 --at 2026-11-25T10:00:00Z");
    assert!(out.contains("action: no route"), "{out}");

    // CDRs written by the control plane are exported as CSV.
    {
        let store = sbus::store::Store::open(d, sbus::types::MemberId(1)).unwrap();
        for (i, domain) in ["example.com", "eu.example"].iter().enumerate() {
            let mut rec = control::cdr::CallRecorder::start(
                &format!("call{i}"),
                domain,
                "alice",
                "bob",
                1_700_000_000_000 + i as u64 * 60_000,
            );
            rec.answer(1_700_000_001_000 + i as u64 * 60_000);
            let cdr = rec.end(
                1_700_000_011_000 + i as u64 * 60_000,
                200,
                control::cdr::Cause::CallerBye,
            );
            control::cdr::write(&store, &cdr).unwrap();
        }
    }
    let csv = ok(d, &["cdr", "export"]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("call_id,domain,"));
    let csv = ok(d, &["cdr", "export", "--domain", "eu.example"]);
    assert_eq!(csv.lines().count(), 2);
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("call1,eu.example,alice,bob,1700000060000,")
    );
    let csv = ok(d, &["cdr", "export", "--from", "2023-11-14T22:14:00Z"]);
    assert_eq!(csv.lines().count(), 2);
}
