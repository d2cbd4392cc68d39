//! Every RFC 4475 torture message through `control::security::Guard::screen`, with the
//! outcome the RFC (and the fixtures' MANIFEST.tsv) asks for.

use control::security::{DropReason, Guard, GuardConfig, Screen};
use wire::sip::Message;

#[expect(clippy::disallowed_methods, reason = "test origin of virtual time")]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// The expected outcome of a fixture: a status, "accept", "challenge" or "drop".
fn expected(folder: &str, name: &str) -> &'static str {
    match (folder, name) {
        ("valid", _) => "accept",
        ("invalid", "badvers") => "505",
        // Responses that do not parse are dropped, never answered.
        ("invalid", "scalarlg" | "bigcode") => "drop",
        ("invalid", _) => "400",
        ("semantic", "insuf" | "multi01" | "mcl01") => "400",
        ("semantic", "unkscm" | "novelsc") => "416",
        ("semantic", "bext01") => "420",
        ("semantic", "invut") => "415",
        ("semantic", "sdp01") => "406",
        ("semantic", "zeromf") => "483",
        ("semantic", "regaut01") => "challenge",
        ("semantic", "bcast") => "drop",
        ("semantic", _) => "accept",
        _ => unreachable!(),
    }
}

#[test]
fn every_rfc4475_message_gets_the_outcome_the_rfc_asks_for() {
    let Some(dir) = testkit::fixtures() else {
        return;
    };
    let mut seen = 0;
    for folder in ["valid", "invalid", "semantic"] {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("rfc4475").join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let bytes = std::fs::read(&path).unwrap();
            // A fresh guard each time: the rate limiter is not under test here.
            let mut guard = Guard::new(GuardConfig::default());
            let got = match guard.screen(now(), "192.0.2.1".parse().unwrap(), &bytes) {
                Screen::Accept(_) => "accept".to_owned(),
                Screen::Challenge(_) => "challenge".to_owned(),
                Screen::Drop(DropReason::BadResponse | DropReason::Garbage) => "drop".to_owned(),
                Screen::Drop(r) => format!("{r:?}"),
                Screen::Respond(resp) => {
                    // The status line; error responses to invalid messages echo their
                    // (broken) Via/From/To so the client can match them.
                    let line = std::str::from_utf8(&resp[..12]).unwrap();
                    assert!(line.starts_with("SIP/2.0 "), "{name}: {line}");
                    let status: u16 = line[8..11].parse().unwrap();
                    if folder == "semantic" {
                        let r = Message::parse(&resp)
                            .unwrap_or_else(|e| panic!("{name}: our response does not parse: {e}"));
                        assert_eq!(r.status(), Some(status));
                        if status == 420 {
                            assert_eq!(
                                r.header("Unsupported"),
                                Some("nothingSupportsThis, nothingSupportsThisEither")
                            );
                        }
                        if status == 415 {
                            assert!(r.header("Accept").unwrap().contains("application/sdp"));
                        }
                    }
                    status.to_string()
                }
            };
            assert_eq!(got, expected(folder, &name), "{folder}/{name}");
            seen += 1;
        }
    }
    assert_eq!(seen, 49);
}
