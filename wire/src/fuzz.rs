//! Fuzz harnesses: one function per parser. Each takes arbitrary bytes,
//! drives the parser and every accessor a caller would use, and checks the
//! round-trip invariants that must hold for whatever parsed. None may panic.
//!
//! Used by the cargo-fuzz targets in `wire/fuzz` and by the stable-toolchain
//! smoke test `wire/tests/fuzz_smoke.rs`.

use crate::capture::{Decoder, FileReader, Frame, LinkType};
use crate::types::Timestamp;

/// SIP: `Message::parse`, all accessors, semantic checks, stream framing,
/// and parse → emit → parse of the owned repr.
pub fn sip(data: &[u8]) {
    use crate::sip::{Message, MessageRepr, framing};
    if let Ok(msg) = Message::parse(data) {
        let _ = (msg.method(), msg.request_uri(), msg.status(), msg.reason());
        let _ = (
            msg.call_id(),
            msg.from(),
            msg.to(),
            msg.contact(),
            msg.cseq(),
            msg.max_forwards(),
        );
        let _ = (
            msg.content_type(),
            msg.content_length(),
            msg.expires(),
            msg.sdp_body(),
        );
        for h in msg.headers() {
            let _ = msg.header_values(h.name).count();
        }
        let _ = msg.via().count();
        let _ = msg.semantic_issues();
        let repr = MessageRepr::from_message(&msg);
        let mut out = Vec::new();
        repr.emit(&mut out);
        let again = Message::parse(&out).map(|m| MessageRepr::from_message(&m));
        assert!(
            again.as_ref().is_ok_and(|r| *r == repr),
            "SIP re-emit did not round-trip"
        );
    }
    if let Ok(Some(n)) = framing::message_len(data) {
        assert!(n <= data.len(), "framing length beyond the buffer");
    }
}

/// SDP: parse (strict and lenient), every accessor, byte-exact re-emit.
pub fn sdp(data: &[u8]) {
    use crate::sdp::SessionDescription;
    for parsed in [
        SessionDescription::parse_bytes(data),
        SessionDescription::parse_bytes_lenient(data),
    ] {
        let Ok(sdp) = parsed else { continue };
        let _ = (sdp.origin(), sdp.connection(), sdp.direction());
        for media in sdp.media_sections() {
            let _ = (
                media.kind(),
                media.port(),
                media.connection(),
                media.rtcp(),
                media.rtcp_mux(),
            );
            let _ = (media.ptime(), media.direction());
            for pt in media.payload_types() {
                let _ = (media.codec(pt), media.fmtp(pt));
            }
        }
        assert_eq!(
            sdp.to_string().as_bytes(),
            data,
            "SDP re-emit is not byte-exact"
        );
    }
}

/// RTP, RFC 4733 events and the demultiplexer: view accessors and
/// parse → emit → compare of the header.
pub fn rtp(data: &[u8]) {
    use crate::dtmf::TelephoneEvent;
    use crate::rtp::{RtpPacket, RtpRepr, classify, looks_like_rtp};
    let _ = (classify(data), looks_like_rtp(data));
    if let Ok(pkt) = RtpPacket::new_checked(data) {
        let _ = (
            pkt.marker(),
            pkt.payload_type(),
            pkt.sequence_number(),
            pkt.timestamp(),
            pkt.ssrc(),
        );
        let _ = (
            pkt.csrcs().count(),
            pkt.extension_header()
                .map(|e| e.elements().map(|i| i.count())),
        );
        let payload = pkt.payload();
        if let Ok(ev) = TelephoneEvent::new_checked(payload) {
            let _ = (
                ev.event(),
                ev.end(),
                ev.volume(),
                ev.duration(),
                ev.event_char(),
            );
        }
        if let Ok(repr) = RtpRepr::parse(&pkt) {
            let mut buf = vec![0u8; repr.buffer_len()];
            let mut out = RtpPacket::new_unchecked(&mut buf[..]);
            if repr.emit(&mut out).is_ok() {
                let back = RtpPacket::new_checked(&buf[..]).map(|p| RtpRepr::parse(&p));
                assert!(
                    matches!(back, Ok(Ok(ref r)) if *r == repr),
                    "RTP re-emit did not round-trip"
                );
            }
        }
    }
}

/// RTCP compound packets: every packet and report block, reprs re-emitted.
pub fn rtcp(data: &[u8]) {
    use crate::rtcp::{Compound, RtcpPacket, RtcpRepr, XrBlock};
    for packet in Compound::new(data) {
        let Ok(packet) = packet else { break };
        match &packet {
            RtcpPacket::SenderReport(sr) => {
                for b in sr.report_blocks() {
                    let _ = (b.cumulative_lost(), b.jitter());
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                for b in rr.report_blocks() {
                    let _ = (b.fraction_lost(), b.dlsr());
                }
            }
            RtcpPacket::Sdes(sdes) => {
                for chunk in sdes.chunks().flatten() {
                    let _ = chunk.items().count();
                }
            }
            RtcpPacket::Xr(xr) => {
                for block in xr.blocks().flatten() {
                    if let XrBlock::VoipMetrics(vm) = block {
                        let _ = (vm.r_factor(), vm.mos_lq(), vm.rx_config());
                    }
                }
            }
            _ => {}
        }
        if let Ok(repr) = RtcpRepr::parse(&packet) {
            let mut buf = vec![0u8; repr.buffer_len()];
            let _ = repr.emit(&mut buf);
        }
    }
}

/// Capture files and frames: the data as a whole file, then as one frame of
/// every supported link type.
pub fn capture(data: &[u8]) {
    if let Ok(mut reader) = FileReader::new(data) {
        let mut decoder = Decoder::new();
        while let Some(Ok(frame)) = reader.next_frame() {
            let _ = decoder.decode(&frame).map(|p| p.payload.len());
        }
    }
    let mut decoder = Decoder::new();
    for link in [
        LinkType::ETHERNET,
        LinkType::RAW,
        LinkType::IPV4,
        LinkType::IPV6,
        LinkType::LINUX_SLL,
        LinkType::LINUX_SLL2,
        LinkType::NULL,
        LinkType::LOOP,
    ] {
        let frame = Frame {
            ts: Timestamp(0),
            link,
            data,
            orig_len: data.len() as u32,
        };
        let _ = decoder.decode(&frame).map(|p| p.payload.len());
    }
}

/// Bencode (ng protocol): parse, accessors, and emit → byte-identical
/// input for everything accepted; `parse_prefix` never reads past the end.
pub fn bencode(data: &[u8]) {
    use crate::bencode::Value;
    if let Ok(v) = Value::parse(data) {
        let _ = (v.get(b"command"), v.as_str(), v.as_int(), v.as_list());
        let mut out = Vec::new();
        v.emit(&mut out);
        assert_eq!(out, data, "bencode re-emit is not byte-identical");
    }
    if let Ok((_, used)) = Value::parse_prefix(data) {
        assert!(used <= data.len(), "bencode prefix beyond the buffer");
    }
}

/// HEP3: `Hep3Repr::parse`, and parse → emit → parse of whatever parsed
/// (vendor chunks and unknown types are dropped, the rest must survive).
pub fn hep(data: &[u8]) {
    use crate::hep::Hep3Repr;
    if let Ok(Some(hep)) = Hep3Repr::parse(data) {
        let _ = hep.to_packet();
        let mut out = Vec::new();
        if hep.emit(&mut out).is_ok() {
            assert_eq!(
                Hep3Repr::parse(&out),
                Ok(Some(hep)),
                "HEP3 re-emit did not round-trip"
            );
        }
    }
}
