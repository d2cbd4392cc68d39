//! Hand-written SDPs: accessors, errors, golden rewrites and property tests.

use std::net::IpAddr;

use proptest::prelude::*;
use wire::sdp::{Direction, Error, Sdp, SessionDescription};
use wire::{ClockRate, PayloadType};

const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n\
s=Call\r\n\
c=IN IP4 192.0.2.10\r\n\
b=AS:128\r\n\
t=0 0\r\n\
a=recvonly\r\n\
m=audio 49170 RTP/AVP 0 8 97 101\r\n\
i=voice\r\n\
a=rtpmap:97 opus/48000/2\r\n\
a=fmtp:97 useinbandfec=1; stereo=0\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp-fb:97 nack\r\n\
a=ptime:20\r\n\
a=maxptime:40\r\n\
a=rtcp:49171 IN IP4 192.0.2.11\r\n\
m=video 51372/2 UDP/TLS/RTP/SAVPF 96\r\n\
c=IN IP6 2001:db8::5\r\n\
b=TIAS:500000\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=sendonly\r\n\
a=rtcp-mux\r\n\
a=rtcp:9\r\n";

#[test]
fn session_level_fields() {
    let sdp = SessionDescription::parse(OFFER).unwrap();
    assert_eq!(sdp.version(), 0);
    let o = sdp.origin().unwrap();
    assert_eq!(
        (
            o.username,
            o.session_id,
            o.session_version,
            o.nettype,
            o.addrtype,
            o.address
        ),
        ("alice", "2890844526", 2890844527, "IN", "IP4", "192.0.2.10")
    );
    assert_eq!(sdp.session_name(), Some("Call"));
    assert_eq!(
        sdp.connection().unwrap().ip(),
        Some("192.0.2.10".parse().unwrap())
    );
    let bw: Vec<_> = sdp.bandwidths().map(|b| (b.bwtype, b.value)).collect();
    assert_eq!(bw, [("AS", 128)]);
    assert_eq!(sdp.timing(), Some((0, 0)));
    assert_eq!(sdp.direction(), Direction::RecvOnly);
    assert_eq!(sdp.attribute("recvonly"), Some(""));
    assert_eq!(sdp.media_count(), 2);
    assert_eq!(sdp.to_string(), OFFER);
}

#[test]
fn media_level_fields() {
    let sdp = SessionDescription::parse(OFFER).unwrap();
    let audio = sdp.media(0).unwrap();
    assert_eq!(
        (audio.kind(), audio.port(), audio.port_count()),
        ("audio", 49170, None)
    );
    assert_eq!(audio.proto(), "RTP/AVP");
    assert_eq!(audio.formats().collect::<Vec<_>>(), ["0", "8", "97", "101"]);
    // No media c=: the session-level one applies.
    assert!(audio.own_connection().is_none());
    assert_eq!(audio.connection().unwrap().address, "192.0.2.10");
    let opus = audio.rtpmap(PayloadType(97)).unwrap();
    assert_eq!(
        (opus.encoding, opus.clock_rate, opus.channels),
        ("opus", ClockRate(48000), Some(2))
    );
    assert_eq!(
        audio.fmtp(PayloadType(97)),
        Some("useinbandfec=1; stereo=0")
    );
    assert_eq!(audio.fmtp(PayloadType(101)), Some("0-15"));
    assert_eq!(audio.fmtp(PayloadType(0)), None);
    assert_eq!((audio.ptime(), audio.maxptime()), (Some(20), Some(40)));
    // Direction inherited from the session.
    assert_eq!(audio.direction(), Direction::RecvOnly);
    let rtcp = audio.rtcp().unwrap();
    assert_eq!(rtcp.port, 49171);
    assert_eq!(
        rtcp.connection.unwrap().ip(),
        Some("192.0.2.11".parse().unwrap())
    );
    assert!(!audio.rtcp_mux());
    // Codecs from rtpmap and from the static table.
    let pcmu = audio.codec(PayloadType::PCMU).unwrap();
    assert_eq!(
        (pcmu.name, pcmu.clock_rate, pcmu.channels),
        ("PCMU", ClockRate(8000), 1)
    );
    assert_eq!(audio.codec(PayloadType(97)).unwrap().channels, 2);
    assert_eq!(
        audio.codec(PayloadType(101)).unwrap().name,
        "telephone-event"
    );
    assert!(audio.codec(PayloadType(98)).is_none());

    let video = sdp.media(1).unwrap();
    assert_eq!(
        (video.kind(), video.port(), video.port_count()),
        ("video", 51372, Some(2))
    );
    assert_eq!(video.proto(), "UDP/TLS/RTP/SAVPF");
    assert_eq!(
        video.connection().unwrap().ip(),
        Some("2001:db8::5".parse().unwrap())
    );
    assert_eq!(video.bandwidths().next().map(|b| b.value), Some(500000));
    assert_eq!(video.direction(), Direction::SendOnly);
    assert!(video.rtcp_mux());
    assert_eq!(
        video.rtcp().map(|r| (r.port, r.connection)),
        Some((9, None))
    );
    assert!(sdp.media(2).is_none());
}

#[test]
fn default_direction_and_lf_endings() {
    let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 0 RTP/AVP 0";
    let sdp = SessionDescription::parse(text).unwrap();
    assert_eq!(sdp.direction(), Direction::SendRecv);
    assert_eq!(sdp.media(0).unwrap().direction(), Direction::SendRecv);
    assert_eq!(sdp.media(0).unwrap().port(), 0);
    assert_eq!(sdp.to_string(), text);
}

#[test]
fn errors_name_line_and_field() {
    let cases: &[(&str, Error)] = &[
        ("", Error::MissingVersion),
        ("v=1\r\n", Error::MissingVersion),
        ("o=- 1 1 IN IP4 x\r\n", Error::MissingVersion),
        ("v=0\r\nbogus\r\n", Error::Malformed { line: 2 }),
        (
            "v=0\r\no=- 1 x IN IP4 192.0.2.1\r\n",
            Error::InvalidField {
                line: 2,
                kind: 'o',
                field: "sess-version",
            },
        ),
        (
            "v=0\r\no=- 1 IN IP4 192.0.2.1\r\n",
            Error::InvalidField {
                line: 2,
                kind: 'o',
                field: "field count",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4\r\n",
            Error::InvalidField {
                line: 4,
                kind: 'c',
                field: "connection",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n",
            Error::InvalidField {
                line: 5,
                kind: 'm',
                field: "port",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 7000\r\n",
            Error::InvalidField {
                line: 5,
                kind: 'm',
                field: "proto",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 96\r\na=rtpmap:96 opus\r\n",
            Error::InvalidField {
                line: 6,
                kind: 'a',
                field: "rtpmap",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 96\r\na=rtcp:x\r\n",
            Error::InvalidField {
                line: 6,
                kind: 'a',
                field: "rtcp port",
            },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\nt=0 0\r\n",
            Error::Missing { kind: 's' },
        ),
        (
            "v=0\r\no=- 1 1 IN IP4 a\r\ns=x\r\n",
            Error::Missing { kind: 't' },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(
            SessionDescription::parse(text).unwrap_err(),
            *expected,
            "{text:?}"
        );
    }
    let msg = SessionDescription::parse("v=0\r\no=- 1 x IN IP4 a\r\n")
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "line 2: invalid sess-version in `o=` line");
    assert_eq!(
        SessionDescription::parse_bytes(b"v=0\r\n\xff").unwrap_err(),
        Error::NotUtf8 { offset: 5 }
    );
}

/// Golden rewrite: the relay's usual edits, each touching only its lines.
#[test]
fn golden_rewrite() {
    let mut sdp = Sdp::parse(OFFER).unwrap();
    let relay: IpAddr = "198.51.100.7".parse().unwrap();
    sdp.set_connection_address(None, relay).unwrap();
    sdp.set_connection_address(Some(0), relay).unwrap();
    sdp.set_connection_address(Some(1), "2001:db8::77".parse().unwrap())
        .unwrap();
    sdp.set_media_port(0, 30000).unwrap();
    sdp.set_media_port(1, 30002).unwrap();
    sdp.set_rtcp(0, Some((30001, None))).unwrap();
    sdp.set_rtcp(1, None).unwrap();
    sdp.set_direction(Some(0), Direction::SendRecv).unwrap();
    sdp.set_direction(Some(1), Direction::Inactive).unwrap();
    sdp.retain_formats(0, |pt| pt != PayloadType(97)).unwrap();
    sdp.bump_origin_version().unwrap();
    let expected = "v=0\r\n\
o=alice 2890844526 2890844528 IN IP4 192.0.2.10\r\n\
s=Call\r\n\
c=IN IP4 198.51.100.7\r\n\
b=AS:128\r\n\
t=0 0\r\n\
a=recvonly\r\n\
m=audio 30000 RTP/AVP 0 8 101\r\n\
i=voice\r\n\
c=IN IP4 198.51.100.7\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=maxptime:40\r\n\
a=rtcp:30001\r\n\
a=sendrecv\r\n\
m=video 30002/2 UDP/TLS/RTP/SAVPF 96\r\n\
c=IN IP6 2001:db8::77\r\n\
b=TIAS:500000\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=inactive\r\n\
a=rtcp-mux\r\n";
    assert_eq!(sdp.to_string(), expected);
    let mut buf = String::new();
    let view = sdp.view(&mut buf).unwrap();
    assert_eq!(view.media(0).unwrap().direction(), Direction::SendRecv);
    assert_eq!(view.media(1).unwrap().direction(), Direction::Inactive);
    assert_eq!(view.media(0).unwrap().rtcp().unwrap().port, 30001);
}

/// Inserting into an LF-only SDP without a final line ending keeps LF and
/// terminates the former last line.
#[test]
fn golden_rewrite_lf_unterminated() {
    let text = "v=0\no=- 7 7 IN IP6 2001:db8::1\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\nm=audio 4000 RTP/AVP 0 18\na=rtpmap:18 G729/8000\na=fmtp:18 annexb=no";
    let mut sdp = Sdp::parse(text).unwrap();
    sdp.retain_formats(0, |pt| pt == PayloadType::PCMU).unwrap();
    sdp.set_direction(Some(0), Direction::SendOnly).unwrap();
    sdp.set_direction(None, Direction::Inactive).unwrap();
    assert_eq!(
        sdp.to_string(),
        "v=0\no=- 7 7 IN IP6 2001:db8::1\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\na=inactive\nm=audio 4000 RTP/AVP 0\na=sendonly"
    );
    assert!(matches!(
        sdp.set_media_port(3, 1),
        Err(Error::NoSuchMedia { index: 3 })
    ));
}

#[test]
fn untouched_sdp_is_identical_even_with_odd_spacing() {
    let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1 \r\ns= \r\nc=IN IP4 192.0.2.1 \r\nt=0 0\r\nm=audio 4000 RTP/AVP 0  8\r\na=x-custom:a:b:c\r\n\r\n";
    let sdp = SessionDescription::parse(text).unwrap();
    // Trailing spaces (seen in the wild) are tolerated by the accessors.
    assert_eq!(
        sdp.connection().unwrap().ip(),
        Some("192.0.2.1".parse().unwrap())
    );
    assert_eq!(sdp.origin().unwrap().address, "192.0.2.1");
    assert_eq!(
        sdp.media(0).unwrap().formats().collect::<Vec<_>>(),
        ["0", "8"]
    );
    assert_eq!(sdp.to_string(), text);
    let mut owned = sdp.to_owned();
    owned.set_media_port(0, 4002).unwrap();
    // Only the edited line changes (and is normalised to single spaces).
    assert_eq!(
        owned.to_string(),
        text.replace("m=audio 4000 RTP/AVP 0  8", "m=audio 4002 RTP/AVP 0 8")
    );
    assert_eq!(owned.media_count(), 1);
    assert_eq!(sdp.media(0).unwrap().attribute("x-custom"), Some("a:b:c"));
}

fn arb_sdp() -> impl Strategy<Value = String> {
    let media = (
        prop::sample::select(vec!["audio", "video", "application"]),
        any::<u16>(),
        prop::sample::select(vec!["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"]),
        prop::collection::vec(0u8..128, 1..5),
        prop::option::of(prop::sample::select(vec![
            "sendrecv", "sendonly", "recvonly", "inactive",
        ])),
        prop::option::of(1u16..65535),
        prop::option::of(any::<[u8; 4]>()),
    )
        .prop_map(|(kind, port, proto, pts, dir, rtcp, c)| {
            let fmts: Vec<String> = pts.iter().map(u8::to_string).collect();
            let mut s = format!("m={kind} {port} {proto} {}\r\n", fmts.join(" "));
            if let Some(c) = c {
                s += &format!("c=IN IP4 {}.{}.{}.{}\r\n", c[0], c[1], c[2], c[3]);
            }
            for pt in pts.iter().filter(|p| **p >= 96) {
                s += &format!("a=rtpmap:{pt} X{pt}/48000/2\r\na=fmtp:{pt} a=1\r\n");
            }
            if let Some(d) = dir {
                s += &format!("a={d}\r\n");
            }
            if let Some(r) = rtcp {
                s += &format!("a=rtcp:{r}\r\n");
            }
            s
        });
    (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(media, 0..4),
        any::<bool>(),
    )
        .prop_map(|(id, version, media, lf)| {
            let mut s = format!("v=0\r\no=- {id} {version} IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n");
            for m in media {
                s += &m;
            }
            if lf { s.replace("\r\n", "\n") } else { s }
        })
}

proptest! {
    #[test]
    fn parse_emit_parse(text in arb_sdp()) {
        let sdp = SessionDescription::parse(&text).unwrap();
        let mut out = String::new();
        sdp.emit(&mut out);
        prop_assert_eq!(&out, &text);
        let again = SessionDescription::parse(&out).unwrap();
        prop_assert_eq!(&again, &sdp);
        // Edits keep the SDP parseable and leave untouched media alone.
        let mut owned = sdp.to_owned();
        if sdp.media_count() > 0 {
            owned.set_media_port(0, 1234).unwrap();
            owned.retain_formats(0, |pt| pt.0 % 2 == 0).unwrap();
            owned.set_rtcp(0, Some((1235, None))).unwrap();
            owned.set_direction(Some(0), Direction::Inactive).unwrap();
            let mut buf = String::new();
            let view = owned.view(&mut buf).unwrap();
            let m = view.media(0).unwrap();
            prop_assert_eq!(m.port(), 1234);
            prop_assert!(m.payload_types().all(|pt| pt.0 % 2 == 0));
            prop_assert!(m.rtpmaps().all(|r| r.pt.0 % 2 == 0));
            prop_assert_eq!(m.direction(), Direction::Inactive);
            prop_assert_eq!(m.rtcp().map(|r| r.port), Some(1235));
            for i in 1..sdp.media_count() {
                let (a, b) = (sdp.media(i).unwrap(), view.media(i).unwrap());
                prop_assert_eq!(a.port(), b.port());
                prop_assert_eq!(a.formats().collect::<Vec<_>>(), b.formats().collect::<Vec<_>>());
            }
        }
        owned.bump_origin_version().unwrap();
    }

    #[test]
    fn random_text_never_panics(text in "(v=0\r\n)?([a-z]=[ -~]{0,20}(\r\n|\n)|\r\n|m=audio [0-9]{1,5} RTP/AVP [0-9 ]{0,8}\n|a=(rtpmap|rtcp|fmtp):[ -~]{0,12}\n){0,12}") {
        if let Ok(sdp) = SessionDescription::parse(&text) {
            prop_assert_eq!(sdp.to_string(), text.clone());
            for m in sdp.media_sections() {
                let _ = (m.port(), m.rtcp(), m.codec(PayloadType(0)), m.direction(), m.ptime());
            }
            let mut owned = sdp.to_owned();
            let _ = owned.retain_formats(0, |_| false);
            let _ = owned.set_connection_address(Some(0), "192.0.2.9".parse().unwrap());
            let _ = owned.bump_origin_version();
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = SessionDescription::parse_bytes(&bytes);
    }
}

#[test]
fn lenient_parse_accepts_reduced_descriptions() {
    // The SDP of an MGCP CRCX in ws_SIP_CALL_RTP_G711.pcap (no o=, s=, t=).
    let text = "v=0\nc=IN IP4 192.0.2.1\nm=audio 40362 RTP/AVP 0\n";
    assert_eq!(
        wire::sdp::SessionDescription::parse(text).unwrap_err(),
        wire::sdp::Error::Missing { kind: 'o' }
    );
    let sdp = wire::sdp::SessionDescription::parse_bytes_lenient(text.as_bytes()).unwrap();
    assert_eq!(sdp.media(0).unwrap().port(), 40362);
    assert_eq!(sdp.to_string(), text);
    assert!(wire::sdp::SessionDescription::parse_bytes_lenient(b"v=0\nbogus\n").is_err());
}
