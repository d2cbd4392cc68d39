//! Property tests for `wire::sip`: generated valid messages survive
//! emit → parse unchanged (and their typed fields read back), arbitrary and
//! mutated inputs never panic, and stream framing agrees with parsing.

use proptest::prelude::*;
use wire::sip::{Message, MessageRepr, StartLineRepr, framing};

const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

/// Randomises the case of a header name (names are case-insensitive).
fn cased(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(METHODS).prop_map(str::to_owned),
        "[A-Z][A-Za-z0-9.!%*_+`'~-]{0,12}",
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z][a-z0-9]{0,5}){0,2}",
        (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("192.0.{a}.{b}")),
        (0u16..0xffff).prop_map(|n| format!("[2001:db8::{n:x}]")),
    ]
}

fn user() -> impl Strategy<Value = String> {
    "([a-zA-Z0-9_.!~*'()&=+$,;?/-]|%[0-9A-F]{2}){1,10}"
}

fn uri() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        proptest::option::of(user()),
        host(),
        proptest::option::of(any::<u16>()),
        proptest::collection::vec("[a-z]{1,6}(=[a-z0-9.]{1,6})?", 0..3),
    )
        .prop_map(|(sips, user, host, port, params)| {
            let mut s = String::from(if sips { "sips:" } else { "sip:" });
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for p in params {
                s.push(';');
                s.push_str(&p);
            }
            s
        })
}

/// A display name: (wire form, expected decoded text).
fn display_name() -> impl Strategy<Value = Option<(String, String)>> {
    proptest::option::of(prop_oneof![
        "[A-Za-z0-9 ,<>;:@\"\\\\é漢\t]{0,12}".prop_map(|t| {
            let esc: String = t
                .chars()
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            (format!("\"{esc}\""), t)
        }),
        "[A-Za-z0-9.!%*_+`'~-]{1,8}( [A-Za-z0-9.!%*_+`'~-]{1,8}){0,2}".prop_map(|t| (t.clone(), t)),
    ])
}

fn name_addr() -> impl Strategy<Value = (String, Option<String>, String)> {
    (
        display_name(),
        uri(),
        proptest::option::of("[A-Za-z0-9.!%*_+`'~-]{1,12}"),
        proptest::collection::vec("[a-z]{1,6}(=([a-z0-9]{1,6}|\"[a-z ,;]{0,6}\"))?", 0..2),
    )
        .prop_map(|(dn, uri, tag, params)| {
            let (wire_dn, text) = dn.map_or((String::new(), None), |(w, t)| (w, Some(t)));
            let mut s = format!("{wire_dn} <{uri}>");
            if wire_dn.is_empty() {
                s = format!("<{uri}>");
            }
            if let Some(t) = &tag {
                s.push_str(&format!(";tag={t}"));
            }
            for p in params {
                s.push_str(&format!(" ; {p}"));
            }
            (s, text, tag.unwrap_or_default())
        })
}

fn via() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(&["UDP", "TCP", "TLS", "SCTP", "WS"][..]),
        host(),
        proptest::option::of(1u16..),
        "[A-Za-z0-9.!%*_+`'~-]{1,10}",
        prop::bool::ANY,
    )
        .prop_map(|(t, h, p, b, rport)| {
            let port = p.map(|p| format!(":{p}")).unwrap_or_default();
            let rport = if rport { ";rport" } else { "" };
            format!("SIP/2.0/{t} {h}{port};branch=z9hG4bK{b}{rport}")
        })
}

#[derive(Debug, Clone)]
struct Generated {
    repr: MessageRepr,
    from_dn: Option<String>,
    from_tag: String,
    cseq: u32,
    vias: usize,
    call_id: String,
}

prop_compose! {
    fn message()(
        request in prop::bool::ANY,
        method in method(),
        ruri in uri(),
        status in 100u16..=699,
        reason in "[ -~é]{0,20}",
        from in name_addr(),
        to in name_addr(),
        vias in proptest::collection::vec(proptest::collection::vec(via(), 1..3), 1..3),
        call_id in "[a-zA-Z0-9.!%*_+`'~()<>:\\\\\"/?{}-]{1,20}(@[a-z0-9.]{1,10})?",
        cseq in any::<u32>(),
        max_forwards in 0u8..=255,
        contacts in proptest::collection::vec(name_addr(), 0..3),
        extensions in proptest::collection::vec(
            ("X-[A-Za-z0-9-]{1,10}", "[!-~]([ -~]{0,20}[!-~])?", prop::bool::ANY), 0..4),
        sdp in prop::bool::ANY,
        body in proptest::collection::vec(any::<u8>(), 0..200),
        compact in any::<u64>(),
        case in any::<u64>(),
    ) -> Generated {
        let mut headers = Vec::new();
        let name = |long: &str, short: &str, bit: u32| {
            if compact >> bit & 1 == 1 { cased(short, case >> bit) } else { cased(long, case >> bit) }
        };
        let nvias = vias.iter().map(Vec::len).sum();
        for (i, group) in vias.iter().enumerate() {
            headers.push((name("Via", "v", i as u32), group.join(" , ")));
        }
        headers.push((name("From", "f", 3), from.0.clone()));
        headers.push((name("To", "t", 4), to.0));
        headers.push((name("Call-ID", "i", 5), call_id.clone()));
        let cseq_method = if request { method.clone() } else { "INVITE".to_owned() };
        headers.push((cased("CSeq", case >> 6), format!("{cseq} {cseq_method}")));
        if request {
            headers.push((cased("Max-Forwards", case >> 7), max_forwards.to_string()));
        }
        if !contacts.is_empty() {
            let v: Vec<_> = contacts.into_iter().map(|c| c.0).collect();
            headers.push((name("Contact", "m", 8), v.join(",\r\n  ")));
        }
        for (n, v, fold) in extensions {
            let v = if fold { format!("{v}\r\n\t{v}") } else { v };
            headers.push((n, v));
        }
        if sdp {
            headers.push((name("Content-Type", "c", 9), "application/sdp".to_owned()));
        }
        headers.push((name("Content-Length", "l", 10), body.len().to_string()));
        let start = if request {
            StartLineRepr::Request { method, uri: ruri }
        } else {
            StartLineRepr::Response { status, reason }
        };
        Generated {
            repr: MessageRepr { start, headers, body },
            from_dn: from.1,
            from_tag: from.2,
            cseq,
            vias: nvias,
            call_id,
        }
    }
}

/// Calls every accessor; used on arbitrary input, so it must not panic.
fn touch(m: &Message<'_>) {
    let _ = (
        m.is_request(),
        m.method(),
        m.request_uri(),
        m.status(),
        m.reason(),
    );
    let _ = (
        m.call_id(),
        m.cseq(),
        m.max_forwards(),
        m.expires(),
        m.content_length(),
    );
    let _ = (
        m.content_type(),
        m.body(),
        m.sdp_body(),
        m.is_contact_star(),
        m.len(),
    );
    let _ = m.semantic_issues();
    for h in m.headers() {
        let _ = m.header(h.name);
        let _ = m.header_values(h.raw_name).count();
    }
    for v in m.via() {
        let _ = (v.branch(), v.received(), v.rport(), v.is_rfc3261_branch());
    }
    let addrs = m
        .from()
        .into_iter()
        .chain(m.to())
        .chain(m.contacts())
        .chain(m.route());
    for a in addrs {
        let _ = (a.display_name_text(), a.tag(), a.uri.user_decoded());
        let _ = a.uri.params.iter().count();
    }
    // A parsed message re-emits to something that parses to the same thing.
    let repr = MessageRepr::from_message(m);
    let mut out = Vec::new();
    repr.emit(&mut out);
    assert_eq!(MessageRepr::parse(&out).as_ref(), Ok(&repr));
}

/// Applies a list of edits to `bytes`.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"\r\n \t\"<>,;:%\\@=/?\x00\xff0z";
    for &(pos, op, val) in edits {
        if bytes.is_empty() {
            break;
        }
        let pos = pos % bytes.len();
        let byte = INTERESTING[usize::from(val) % INTERESTING.len()];
        match op % 4 {
            0 => bytes[pos] = byte,
            1 => bytes.insert(pos, byte),
            2 => {
                bytes.remove(pos);
            }
            _ => bytes[pos] = val,
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn emit_parse_round_trip(g in message()) {
        let mut wire = Vec::new();
        g.repr.emit(&mut wire);
        let m = Message::parse(&wire).map_err(|e| {
            TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&wire)))
        })?;
        prop_assert_eq!(MessageRepr::from_message(&m), g.repr.clone());
        let from = m.from().unwrap();
        prop_assert_eq!(from.display_name_text().map(|c| c.into_owned()), g.from_dn.clone());
        prop_assert_eq!(from.tag().unwrap_or(""), g.from_tag.as_str());
        prop_assert_eq!(m.cseq().unwrap().seq, g.cseq);
        prop_assert_eq!(m.via().count(), g.vias);
        prop_assert_eq!(m.call_id(), Some(g.call_id.as_str()));
        prop_assert_eq!(m.body(), &g.repr.body[..]);
        touch(&m);
    }

    #[test]
    fn framing_agrees_with_parse(g in message(), junk in proptest::collection::vec(any::<u8>(), 0..64), crlf in 0usize..3, cut in any::<prop::sample::Index>()) {
        let mut wire = b"\r\n".repeat(crlf);
        g.repr.emit(&mut wire);
        let n = wire.len();
        let whole = [&wire[..], &junk[..]].concat();
        prop_assert_eq!(framing::message_len(&whole), Ok(Some(n)));
        let m = Message::parse(&whole).unwrap();
        prop_assert_eq!(m.len(), n);
        prop_assert_eq!(m.as_bytes(), &wire[2 * crlf..]);
        let cut = cut.index(n);
        prop_assert_eq!(framing::message_len(&wire[..cut]), Ok(None));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = Message::parse(&bytes) {
            touch(&m);
        }
        let _ = framing::message_len(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(g in message(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let mut wire = Vec::new();
        g.repr.emit(&mut wire);
        let bytes = mutate(wire, &edits);
        let parsed = Message::parse(&bytes);
        if let Ok(m) = &parsed {
            touch(m);
        }
        if let (Ok(Some(n)), Ok(m)) = (framing::message_len(&bytes), &parsed) {
            prop_assert_eq!(m.len(), n);
        }
    }
}
