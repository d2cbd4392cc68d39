//! RFC 4475 SIP torture tests, one test per message, driven by
//! `rfc4475/MANIFEST.tsv` in the shared fixtures (see `shared/fixtures/README.md`):
//! `valid/` must parse (with a few fields checked per file), `invalid/` must be
//! rejected with the specific error the RFC gives as the reason, `semantic/`
//! must parse and report the expected [`SemanticIssue`]s.
//!
//! Source: <https://www.rfc-editor.org/rfc/rfc4475> (fixture provenance in
//! `shared/fixtures/SOURCES.md`).

use std::path::PathBuf;

use testkit::fixtures;
use wire::sip::{Error, Message, Method, Scheme, SemanticIssue, UriError, multipart};

/// `rfc4475/` in the shared fixtures (skips or fails per `testkit`).
fn rfc4475_dir() -> Option<PathBuf> {
    fixtures().map(|dir| dir.join("rfc4475"))
}

struct Row {
    name: String,
    expected: String,
    file: PathBuf,
    bytes: usize,
}

/// Reads the manifest. One row (`sdp01`) lacks its `file` column; its file is
/// then found as `<category>/<name>.sip` for the category implied by the
/// expectation.
fn manifest(dir: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let name = f[0].to_owned();
            let expected = f[3].to_owned();
            let (file, bytes) = if f.get(4).is_some_and(|p| p.ends_with(".sip")) {
                (f[4].to_owned(), f[5])
            } else {
                let cat = category(&expected);
                (format!("{cat}/{name}.sip"), f[4])
            };
            Row {
                name,
                expected,
                file: dir.join(file),
                bytes: bytes.parse().expect("bytes column"),
            }
        })
        .collect()
}

fn category(expected: &str) -> &'static str {
    if expected.starts_with("parse") {
        "valid"
    } else if expected.starts_with("reject") {
        "invalid"
    } else if expected.starts_with("semantic") {
        "semantic"
    } else {
        panic!("unknown expectation {expected:?}")
    }
}

fn run(name: &str) {
    let Some(dir) = rfc4475_dir() else { return };
    let rows = manifest(&dir);
    let row = rows
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} not in MANIFEST.tsv"));
    let data = std::fs::read(&row.file).expect("fixture file");
    assert_eq!(data.len(), row.bytes, "{name}: size differs from manifest");
    let parsed = Message::parse(&data);
    match category(&row.expected) {
        "invalid" => {
            let err = parsed.expect_err("must be rejected");
            check_invalid(name, err);
        }
        _ => {
            let msg = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            check_parsed(name, &msg, &data);
        }
    }
}

fn issues<'a>(m: &Message<'a>) -> Vec<SemanticIssue<'a>> {
    m.semantic_issues()
}

fn check_invalid(name: &str, err: Error) {
    let want = match name {
        "badinv01" => Error::BadHeaderValue {
            line: 7,
            header: "Via",
        },
        "clerr" => {
            assert!(matches!(err, Error::BodyTooShort { declared: 9999, .. }));
            err
        }
        "ncl" => Error::BadContentLength { line: 10 },
        "scalar02" | "scalarlg" => Error::ValueTooLarge {
            line: 5,
            header: "CSeq",
        },
        "quotbal" => Error::UnterminatedQuote { line: 2 },
        "ltgtruri" => Error::BadRequestUri(UriError::Scheme),
        "lwsruri" => Error::BadRequestUri(UriError::Whitespace),
        "lwsstart" | "trws" => Error::BadStartLine,
        "escruri" => Error::BadRequestUri(UriError::HeadersNotAllowed),
        "baddate" => Error::BadDate { line: 8 },
        "regbadct" => Error::UnenclosedUri {
            line: 8,
            header: "Contact",
        },
        "badaspec" => Error::BadUri {
            line: 5,
            header: "To",
            reason: UriError::Whitespace,
        },
        "baddn" => Error::BadDisplayName { line: 4 },
        "badvers" => Error::UnsupportedVersion,
        "mismatch01" | "mismatch02" => Error::CSeqMethodMismatch,
        "bigcode" => Error::BadStatusCode,
        other => panic!("no expectation for invalid message {other}"),
    };
    assert_eq!(err, want, "{name}");
    let status = if name == "badvers" { 505 } else { 400 };
    assert_eq!(err.status_code(), status, "{name}");
}

fn check_parsed(name: &str, m: &Message<'_>, data: &[u8]) {
    let to = m.to();
    let from = m.from();
    match name {
        // ---- valid
        "wsinv" => {
            assert_eq!(m.method(), Some(Method::Invite));
            let ruri = m.request_uri().unwrap();
            assert_eq!(ruri.user, Some("vivekg"));
            assert_eq!(ruri.params.get("unknownparam"), Some(None));
            assert_eq!(to.unwrap().tag(), Some("1918181833n"));
            let from = from.unwrap();
            assert_eq!(from.display_name_text().unwrap(), r#"J Rosenberg \""#);
            assert_eq!(from.tag(), Some("98asjd8"));
            assert_eq!(m.max_forwards(), Some(68));
            let cseq = m.cseq().unwrap();
            assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
            let via: Vec<_> = m.via().collect();
            assert_eq!(via.len(), 3);
            assert_eq!(
                (via[0].host, via[0].branch()),
                ("192.0.2.2", Some("390skdjuw"))
            );
            assert_eq!(via[1].transport, "TCP");
            assert_eq!(via[1].branch(), Some("z9hG4bK9ikj8"));
            assert_eq!(via[2].host, "192.168.255.111");
            assert_eq!(via[2].branch(), Some("z9hG4bK30239"));
            let c = m.contact().unwrap();
            assert_eq!(c.display_name_text().unwrap(), r#"Quoted string """#);
            assert_eq!(c.params.value("newparam"), Some("newvalue"));
            assert_eq!(c.params.value("q"), Some("0.33"));
            assert_eq!(c.params.get("secondparam"), Some(None));
            assert!(
                m.header("newfangledheader")
                    .unwrap()
                    .ends_with("continued newfangled value")
            );
            assert_eq!(m.header("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
            assert_eq!(m.header("Subject"), Some(""));
            assert_eq!(m.route().next().unwrap().uri.params.get("lr"), Some(None));
            assert_eq!(m.body().len(), 150);
            assert!(m.sdp_body().unwrap().starts_with(b"v=0"));
        }
        "intmeth" => {
            let method = "!interesting-Method0123456789_*+`.%indeed'~";
            assert_eq!(m.method(), Some(Method::Other(method)));
            assert_eq!(m.cseq().unwrap().method.as_str(), method);
            let ruri = m.request_uri().unwrap();
            assert_eq!(
                ruri.user,
                Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
            );
            assert_eq!(
                ruri.password,
                Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
            );
            assert_eq!(ruri.host, Some("example.com"));
            assert_eq!(
                to.unwrap().display_name_text().unwrap(),
                "BEL:\u{7} NUL:\0 DEL:\u{7f}"
            );
            let from = from.unwrap();
            assert_eq!(from.display_name, Some("token1~` token2'+_ token3*%!.-"));
            assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
            assert!(
                from.params
                    .value("fromParam''~+*_!.-%")
                    .unwrap()
                    .starts_with('"')
            );
            assert_eq!(
                m.header("extensionHeader-!.%*+_`'~"),
                Some("\u{feff}\u{5927}\u{505c}\u{96fb}")
            );
            assert!(m.call_id().unwrap().ends_with("[?}{"));
        }
        "esc01" => {
            let ruri = m.request_uri().unwrap();
            assert_eq!(&*ruri.user_decoded().unwrap(), b"sips:user@example.com");
            assert_eq!(ruri.host, Some("example.net"));
            assert_eq!(&*to.unwrap().uri.user_decoded().unwrap(), b"user");
            assert_eq!(
                &*from.unwrap().uri.user_decoded().unwrap(),
                b"I have spaces"
            );
            let c = m.contact().unwrap();
            assert_eq!(&*c.uri.user_decoded().unwrap(), b"caller");
            let p: Vec<_> = c.uri.params.iter().collect();
            assert_eq!(&*wire::sip::pct_decode(p[0].name), b"lr");
            assert_eq!(&*wire::sip::pct_decode(p[1].name), b"name");
            assert_eq!(&*wire::sip::pct_decode(p[1].value.unwrap()), b"value%41");
            assert!(m.content_type().unwrap().is("application", "sdp"));
        }
        "escnull" => {
            assert_eq!(&*to.unwrap().uri.user_decoded().unwrap(), b"null-\0-null");
            let c: Vec<_> = m.contacts().collect();
            assert_eq!(c.len(), 2);
            assert_eq!(&*c[1].uri.user_decoded().unwrap(), b"\0\0");
            assert_eq!(m.content_length(), Some(0));
        }
        "esc02" => {
            assert_eq!(m.method(), Some(Method::Other("RE%47IST%45R")));
            assert_eq!(to.unwrap().display_name, Some("%Z%45"));
            assert_eq!(
                m.via().next().unwrap().branch(),
                Some("z9hG4bK209%fzsnel234")
            );
            let hosts: Vec<_> = m.contacts().map(|c| c.uri.host.unwrap()).collect();
            assert_eq!(hosts, ["host1.example.com", "host3.example.com"]);
            assert_eq!(
                m.header("C%6Fntact"),
                Some("<sip:alias2@host2.example.com>")
            );
        }
        "lwsdisp" => {
            let from = from.unwrap();
            assert_eq!(
                (from.display_name, from.tag()),
                (Some("caller"), Some("323"))
            );
        }
        "longreq" => {
            let to = to.unwrap();
            assert!(to.display_name.unwrap().contains("extremeextremeextreme"));
            assert_eq!(to.uri.port, Some(6000));
            assert!(to.uri.params.value("unknownparam1").unwrap().len() > 80);
            assert!(to.uri.params.iter().count() >= 3);
            assert!(to.uri.params.iter().last().unwrap().value.is_none());
            assert_eq!(to.tag(), None);
            let from = from.unwrap();
            assert!(from.uri.user.unwrap().len() > 100);
            assert!(from.tag().unwrap().len() > 100);
            assert!(m.call_id().unwrap().ends_with("reallylongcallid"));
            let via: Vec<_> = m.via().collect();
            assert_eq!(via.len(), 34);
            assert_eq!(via[0].host, "sip33.example.com");
            assert_eq!(via[33].received(), Some("192.0.2.5"));
            assert!(via[33].branch().unwrap().len() > 100);
            assert_eq!(m.content_length(), Some(150));
            assert_eq!(m.body().len(), 150);
        }
        "dblreq" => {
            assert_eq!(m.method(), Some(Method::Register));
            assert_eq!(m.call_id(), Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
            assert!(m.body().is_empty());
            assert!(data[m.len()..].starts_with(b"\r\nINVITE "));
        }
        "semiuri" => {
            let ruri = m.request_uri().unwrap();
            assert_eq!(ruri.user, Some("user;par=u%40example.net"));
            assert_eq!(ruri.host, Some("example.com"));
            assert!(ruri.params.is_empty());
            assert_eq!(m.header_values("Accept").count(), 6);
            assert_eq!(m.header_values("Accept").last(), Some("message/sipfrag"));
        }
        "transports" => {
            let t: Vec<_> = m.via().map(|v| v.transport).collect();
            assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
            assert_eq!(m.call_id(), Some("transports.kijh4akdnaqjkwendsasfdj"));
        }
        "mpart01" => {
            // Note: RFC 4475's mpart01 carries text/plain and an S/MIME-like
            // octet-stream part; it has no SDP part.
            assert_eq!(m.method(), Some(Method::Message));
            let ct = m.content_type().unwrap();
            assert_eq!(ct.param("boundary"), Some("7a9cbec02ceef655"));
            let parts = multipart::parts(&ct, m.body()).unwrap();
            assert_eq!(parts.len(), 2);
            assert!(parts[0].content_type.unwrap().is("text", "plain"));
            assert_eq!(parts[0].body, b"Hello");
            assert!(
                parts[1]
                    .content_type
                    .unwrap()
                    .is("application", "octet-stream")
            );
            assert_eq!(parts[1].header("content-transfer-encoding"), Some("binary"));
            assert_eq!(parts[1].body.first(), Some(&0x30));
            assert_eq!(m.sdp_body(), None);
        }
        "unreason" => {
            assert_eq!(m.status(), Some(200));
            assert_eq!(
                m.reason(),
                Some("= 2**3 * 5**2 но сто девяносто девять - простое")
            );
            assert!(m.sdp_body().is_some());
        }
        "noreason" => {
            assert_eq!((m.status(), m.reason()), (Some(100), Some("")));
            assert_eq!(m.semantic_issues(), vec![]);
        }
        // ---- semantic
        "badbranch" => {
            assert_eq!(m.via().next().unwrap().branch(), Some("z9hG4bK"));
            assert_eq!(issues(m), [SemanticIssue::Rfc2543Transaction]);
        }
        "insuf" => {
            let want = ["Call-ID", "From", "To", "Max-Forwards"].map(SemanticIssue::MissingHeader);
            assert_eq!(issues(m), want);
            assert!(issues(m).iter().all(|i| i.status_code() == Some(400)));
        }
        "unkscm" | "novelsc" => {
            let scheme = if name == "unkscm" {
                "nobodyKnowsThisScheme"
            } else {
                "soap.beep"
            };
            assert_eq!(m.request_uri().unwrap().kind, Scheme::Other);
            let i = issues(m);
            assert_eq!(i, [SemanticIssue::UnsupportedUriScheme(scheme)]);
            assert_eq!(i[0].status_code(), Some(416));
        }
        "unksm2" => {
            assert_eq!(to.unwrap().uri.scheme, "isbn");
            assert_eq!(from.unwrap().uri.opaque, "//www.example.com");
            assert_eq!(m.contact().unwrap().uri.scheme, "name");
            assert_eq!(issues(m), []);
        }
        "bext01" => {
            let i = issues(m);
            assert_eq!(
                i,
                [
                    SemanticIssue::RequiredExtensions {
                        header: "Require",
                        tags: vec!["nothingSupportsThis", "nothingSupportsThisEither"],
                    },
                    SemanticIssue::RequiredExtensions {
                        header: "Proxy-Require",
                        tags: vec!["noProxiesSupportThis", "norDoAnyProxiesSupportThis"],
                    },
                ]
            );
            assert_eq!(i[0].status_code(), Some(420));
        }
        "invut" => {
            let i = issues(m);
            assert_eq!(
                i,
                [SemanticIssue::UnsupportedMediaType(
                    "application/unknownformat"
                )]
            );
            assert_eq!(i[0].status_code(), Some(415));
            assert_eq!(m.sdp_body(), None);
        }
        "regaut01" => {
            let i = issues(m);
            assert_eq!(
                i,
                [SemanticIssue::UnsupportedAuthScheme("NoOneKnowsThisScheme")]
            );
            assert_eq!(i[0].status_code(), Some(401));
        }
        "multi01" => {
            let want = ["Call-ID", "From", "To", "CSeq", "Max-Forwards"]
                .map(SemanticIssue::MultipleValues);
            assert_eq!(issues(m), want);
        }
        "mcl01" => {
            assert_eq!(issues(m), [SemanticIssue::MultipleContentLength]);
            assert_eq!(m.content_length(), Some(13));
            assert_eq!(
                wire::sip::framing::message_len(data),
                Err(Error::ConflictingContentLength)
            );
        }
        "bcast" => {
            assert_eq!(m.via().nth(1).unwrap().host, "255.255.255.255");
            let i = issues(m);
            assert_eq!(i, [SemanticIssue::ResponseWithMultipleVias]);
            assert_eq!(i[0].status_code(), None);
        }
        "zeromf" => {
            assert_eq!(m.max_forwards(), Some(0));
            let i = issues(m);
            assert_eq!(i, [SemanticIssue::TooManyHops]);
            assert_eq!(i[0].status_code(), Some(483));
        }
        "cparam01" => {
            let c = m.contact().unwrap();
            assert!(c.uri.params.is_empty());
            assert_eq!(c.params.get("unknownparam"), Some(None));
            assert_eq!(issues(m), []);
        }
        "cparam02" => {
            let c = m.contact().unwrap();
            assert_eq!(c.uri.params.get("unknownparam"), Some(None));
            assert!(c.params.is_empty());
            assert_eq!(issues(m), []);
        }
        "regescrt" => {
            let c = m.contact().unwrap();
            assert_eq!(c.uri.headers, Some("Route=%3Csip:sip.example.com%3E"));
            assert_eq!(issues(m), []);
        }
        "sdp01" => {
            let i = issues(m);
            assert_eq!(i, [SemanticIssue::NotAcceptable]);
            assert_eq!(i[0].status_code(), Some(406));
        }
        "inv2543" => {
            assert_eq!(to.unwrap().params.value("user"), Some("phone"));
            assert_eq!(m.content_length(), None);
            assert!(m.sdp_body().unwrap().ends_with(b"RTP/AVP 0\r\n"));
            assert_eq!(
                issues(m),
                [
                    SemanticIssue::MissingHeader("Max-Forwards"),
                    SemanticIssue::Rfc2543Transaction,
                    SemanticIssue::MissingFromTag,
                ]
            );
        }
        other => panic!("no expectation for {other}"),
    }
}

macro_rules! per_file {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { run(stringify!($name)); } )*
        const COVERED: &[&str] = &[$(stringify!($name)),*];
    };
}

per_file!(
    wsinv, intmeth, esc01, escnull, esc02, lwsdisp, longreq, dblreq, semiuri, transports, mpart01,
    unreason, noreason, badinv01, clerr, ncl, scalar02, scalarlg, quotbal, ltgtruri, lwsruri,
    lwsstart, trws, escruri, baddate, regbadct, badaspec, baddn, badvers, mismatch01, mismatch02,
    bigcode, badbranch, insuf, unkscm, novelsc, unksm2, bext01, invut, regaut01, multi01, mcl01,
    bcast, zeromf, cparam01, cparam02, regescrt, sdp01, inv2543,
);

/// Every manifest row has a test above, every file on disk is in the manifest.
#[test]
fn manifest_is_fully_covered() {
    let Some(dir) = rfc4475_dir() else { return };
    let rows = manifest(&dir);
    assert_eq!(rows.len(), 49);
    for r in &rows {
        assert!(COVERED.contains(&r.name.as_str()), "no test for {}", r.name);
        assert!(r.file.is_file(), "{} missing", r.file.display());
    }
    for cat in ["valid", "invalid", "semantic"] {
        for e in std::fs::read_dir(dir.join(cat)).unwrap() {
            let p = e.unwrap().path();
            assert!(
                rows.iter().any(|r| r.file == p),
                "{} not in manifest",
                p.display()
            );
        }
    }
}

/// Stream framing agrees with datagram parsing on every message that carries
/// an unambiguous Content-Length.
#[test]
fn framing_agrees_with_parse() {
    let Some(dir) = rfc4475_dir() else { return };
    for r in manifest(&dir) {
        let data = std::fs::read(&r.file).unwrap();
        let (Ok(m), Ok(Some(n))) = (
            Message::parse(&data),
            wire::sip::framing::message_len(&data),
        ) else {
            continue;
        };
        assert_eq!(m.len(), n, "{}", r.name);
    }
}
