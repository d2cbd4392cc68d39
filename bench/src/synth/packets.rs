//! RTP, RFC 4733 telephone-event and RTCP payload builders, and the SIP/SDP
//! message text of one call. These only build bytes; the generator decides
//! what to send when.

use std::fmt::Write as _;
use std::net::SocketAddr;

use wire::{PayloadType, Ssrc};

/// The dynamic payload type the synthesizer negotiates for telephone-events.
pub const TELEPHONE_EVENT_PT: PayloadType = PayloadType(101);

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Fields of one RTP packet's fixed header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RtpHeader {
    pub marker: bool,
    pub pt: PayloadType,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: Ssrc,
}

/// Appends a 12-byte RTP fixed header (no CSRC, no extension).
pub(crate) fn push_rtp_header(out: &mut Vec<u8>, h: &RtpHeader) {
    //= https://www.rfc-editor.org/rfc/rfc3550#section-5.1
    //# version (V): 2 bits
    //# This field identifies the version of RTP.  The version defined by
    //# this specification is two (2).
    out.push(0x80);
    out.push((u8::from(h.marker) << 7) | (h.pt.0 & 0x7F));
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.0.to_be_bytes());
}

/// Appends an RFC 4733 event payload (4 bytes).
pub(crate) fn push_telephone_event(out: &mut Vec<u8>, event: u8, end: bool, duration: u16) {
    //= https://www.rfc-editor.org/rfc/rfc4733#section-2.3
    //# 0                   1                   2                   3
    //# 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    //# +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    //# |     event     |E|R| volume    |          duration             |
    const VOLUME_DBM0: u8 = 10;
    out.push(event);
    out.push((u8::from(end) << 7) | VOLUME_DBM0);
    out.extend_from_slice(&duration.to_be_bytes());
}

/// The RFC 4733 event code of a DTMF digit (0–9, *, #, A–D), if any.
pub(crate) fn dtmf_event_code(digit: char) -> Option<u8> {
    // RFC 4733 §3.2, Table 7: events 0–9 are the digits, 10 is *, 11 is
    // #, 12–15 are A–D.
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        _ => None,
    }
}

/// A reception report block's contents (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReportBlock {
    pub ssrc: Ssrc,
    pub fraction_lost: u8,
    pub cumulative_lost: u32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

/// Sender-side counters for an SR.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SenderInfo {
    pub now_ns: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// The NTP timestamp (64-bit fixed point) of a Unix time in nanoseconds.
pub(crate) fn ntp_timestamp(unix_ns: u64) -> u64 {
    let secs = unix_ns / 1_000_000_000 + NTP_UNIX_OFFSET;
    let frac = ((unix_ns % 1_000_000_000) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Appends a compound RTCP packet: an SR (with `report` if given, else an
/// RR when `sender` is `None`) followed by an SDES with a CNAME.
pub(crate) fn push_rtcp_compound(
    out: &mut Vec<u8>,
    own_ssrc: Ssrc,
    sender: Option<&SenderInfo>,
    report: Option<&ReportBlock>,
    cname: &str,
) {
    let rc = u8::from(report.is_some());
    let start = out.len();
    match sender {
        Some(s) => {
            //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
            //# packet type (PT): 8 bits
            //# Contains the constant 200 to identify this as an RTCP SR packet.
            out.extend_from_slice(&[0x80 | rc, 200, 0, 0]);
            out.extend_from_slice(&own_ssrc.0.to_be_bytes());
            out.extend_from_slice(&ntp_timestamp(s.now_ns).to_be_bytes());
            out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
            out.extend_from_slice(&s.packets.to_be_bytes());
            out.extend_from_slice(&s.octets.to_be_bytes());
        }
        None => {
            out.extend_from_slice(&[0x80 | rc, 201, 0, 0]);
            out.extend_from_slice(&own_ssrc.0.to_be_bytes());
        }
    }
    if let Some(b) = report {
        out.extend_from_slice(&b.ssrc.0.to_be_bytes());
        let lost = b.cumulative_lost.min(0x7F_FFFF);
        out.push(b.fraction_lost);
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.lsr.to_be_bytes());
        out.extend_from_slice(&b.dlsr.to_be_bytes());
    }
    set_rtcp_length(out, start);

    //= https://www.rfc-editor.org/rfc/rfc3550#section-6.1
    //# An SDES packet containing a CNAME item MUST be included in each
    //# compound RTCP packet, except as noted in Section 9.1.
    let sdes = out.len();
    out.extend_from_slice(&[0x81, 202, 0, 0]);
    out.extend_from_slice(&own_ssrc.0.to_be_bytes());
    let name = &cname.as_bytes()[..cname.len().min(255)];
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    // The item list ends with a null octet, then pads to 32 bits.
    out.push(0);
    while !(out.len() - sdes).is_multiple_of(4) {
        out.push(0);
    }
    set_rtcp_length(out, sdes);
}

fn set_rtcp_length(out: &mut [u8], start: usize) {
    //= https://www.rfc-editor.org/rfc/rfc3550#section-6.4.1
    //# length: 16 bits
    //# The length of this RTCP packet in 32-bit words minus one,
    //# including the header and any padding.
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// Everything the SIP messages of one call need.
#[derive(Clone, Debug)]
pub(crate) struct Dialog {
    pub call_id: String,
    pub caller_sip: SocketAddr,
    pub callee_sip: SocketAddr,
    pub caller_user: String,
    pub callee_user: String,
    pub from_tag: String,
    pub to_tag: String,
    pub branch: String,
    pub caller_media: SocketAddr,
    pub callee_media: SocketAddr,
    pub pt: PayloadType,
    pub codec_name: &'static str,
    pub session_id: u64,
}

/// The SIP messages of one call, in send order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SipStep {
    Invite,
    Trying,
    Ringing,
    Ok,
    Ack,
    /// BYE; `true` if the caller hangs up.
    Bye(bool),
    /// 200 OK to the BYE; `true` if the caller hung up.
    ByeOk(bool),
}

impl Dialog {
    /// The message text and (source, destination) of one step.
    pub(crate) fn message(&self, step: SipStep) -> (String, SocketAddr, SocketAddr) {
        let caller = self.caller_sip;
        let callee = self.callee_sip;
        let a_uri = format!("sip:{}@{}", self.caller_user, host(caller));
        let b_uri = format!("sip:{}@{}", self.callee_user, host(callee));
        let from = format!("<{a_uri}>;tag={}", self.from_tag);
        let to_tagged = format!("<{b_uri}>;tag={}", self.to_tag);
        let via_a = format!(
            "SIP/2.0/UDP {}:{};branch=z9hG4bK{}",
            host(caller),
            caller.port(),
            self.branch
        );
        let mut m = String::with_capacity(1024);
        let (src, dst, body) = match step {
            SipStep::Invite => {
                let _ = write!(m, "INVITE {b_uri} SIP/2.0\r\n");
                header(&mut m, "Via", &via_a);
                header(&mut m, "Max-Forwards", "70");
                header(&mut m, "From", &from);
                header(&mut m, "To", &format!("<{b_uri}>"));
                header(&mut m, "Call-ID", &self.call_id);
                header(&mut m, "CSeq", "1 INVITE");
                header(&mut m, "Contact", &format!("<{a_uri}:{}>", caller.port()));
                header(&mut m, "User-Agent", "voxplane-synth");
                (caller, callee, Some(self.sdp(self.caller_media)))
            }
            SipStep::Trying | SipStep::Ringing | SipStep::Ok => {
                let status = match step {
                    SipStep::Trying => "100 Trying",
                    SipStep::Ringing => "180 Ringing",
                    _ => "200 OK",
                };
                let _ = write!(m, "SIP/2.0 {status}\r\n");
                header(&mut m, "Via", &via_a);
                header(&mut m, "From", &from);
                if step == SipStep::Trying {
                    header(&mut m, "To", &format!("<{b_uri}>"));
                } else {
                    header(&mut m, "To", &to_tagged);
                }
                header(&mut m, "Call-ID", &self.call_id);
                header(&mut m, "CSeq", "1 INVITE");
                if step != SipStep::Trying {
                    header(&mut m, "Contact", &format!("<{b_uri}:{}>", callee.port()));
                }
                let body = (step == SipStep::Ok).then(|| self.sdp(self.callee_media));
                (callee, caller, body)
            }
            SipStep::Ack => {
                let _ = write!(m, "ACK {b_uri}:{} SIP/2.0\r\n", callee.port());
                header(
                    &mut m,
                    "Via",
                    &format!(
                        "SIP/2.0/UDP {}:{};branch=z9hG4bK{}a",
                        host(caller),
                        caller.port(),
                        self.branch
                    ),
                );
                header(&mut m, "Max-Forwards", "70");
                header(&mut m, "From", &from);
                header(&mut m, "To", &to_tagged);
                header(&mut m, "Call-ID", &self.call_id);
                header(&mut m, "CSeq", "1 ACK");
                (caller, callee, None)
            }
            SipStep::Bye(by_caller) | SipStep::ByeOk(by_caller) => {
                let (src, dst, via_host, target, f, t, cseq) = if by_caller {
                    let target = format!("{b_uri}:{}", callee.port());
                    (caller, callee, caller, target, &from, &to_tagged, "2 BYE")
                } else {
                    let target = format!("{a_uri}:{}", caller.port());
                    (callee, caller, callee, target, &to_tagged, &from, "1 BYE")
                };
                let via = format!(
                    "SIP/2.0/UDP {}:{};branch=z9hG4bK{}b",
                    host(via_host),
                    via_host.port(),
                    self.branch
                );
                let bye = matches!(step, SipStep::Bye(_));
                if bye {
                    let _ = write!(m, "BYE {target} SIP/2.0\r\n");
                } else {
                    m.push_str("SIP/2.0 200 OK\r\n");
                }
                header(&mut m, "Via", &via);
                if bye {
                    header(&mut m, "Max-Forwards", "70");
                }
                header(&mut m, "From", f);
                header(&mut m, "To", t);
                header(&mut m, "Call-ID", &self.call_id);
                header(&mut m, "CSeq", cseq);
                if bye {
                    (src, dst, None)
                } else {
                    (dst, src, None)
                }
            }
        };
        match body {
            Some(b) => {
                header(&mut m, "Content-Type", "application/sdp");
                header(&mut m, "Content-Length", &b.len().to_string());
                m.push_str("\r\n");
                m.push_str(&b);
            }
            None => {
                header(&mut m, "Content-Length", "0");
                m.push_str("\r\n");
            }
        }
        (m, src, dst)
    }

    fn sdp(&self, media: SocketAddr) -> String {
        let family = if media.is_ipv4() { "IP4" } else { "IP6" };
        let ip = media.ip();
        let pt = self.pt.0;
        let mut s = String::with_capacity(300);
        let _ = write!(
            s,
            "v=0\r\no=- {id} {id} IN {family} {ip}\r\ns=voxplane-synth\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {pt} {te}\r\na=rtpmap:{pt} {name}/8000\r\n",
            id = self.session_id,
            port = media.port(),
            te = TELEPHONE_EVENT_PT.0,
            name = self.codec_name,
        );
        if self.pt == PayloadType::G729 {
            let _ = write!(s, "a=fmtp:{pt} annexb=no\r\n");
        }
        let _ = write!(
            s,
            "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            te = TELEPHONE_EVENT_PT.0
        );
        s
    }
}

fn header(m: &mut String, name: &str, value: &str) {
    m.push_str(name);
    m.push_str(": ");
    m.push_str(value);
    m.push_str("\r\n");
}

/// The host part of a SIP URI: IPv6 references are bracketed (RFC 3261 §25).
fn host(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog(v6: bool) -> Dialog {
        let (a, b) = if v6 {
            ("[2001:db8:1::5]", "[2001:db8:2::9]")
        } else {
            ("192.0.2.5", "198.18.0.9")
        };
        Dialog {
            call_id: "abc@synth".into(),
            caller_sip: format!("{a}:5060").parse().unwrap(),
            callee_sip: format!("{b}:5060").parse().unwrap(),
            caller_user: "+15550100".into(),
            callee_user: "+15550199".into(),
            from_tag: "f1".into(),
            to_tag: "t1".into(),
            branch: "b1".into(),
            caller_media: format!("{a}:20000").parse().unwrap(),
            callee_media: format!("{b}:30000").parse().unwrap(),
            pt: PayloadType::G729,
            codec_name: "G729",
            session_id: 7,
        }
    }

    #[test]
    fn invite_content_length_matches_body() {
        let (m, src, dst) = dialog(false).message(SipStep::Invite);
        assert_eq!(src.port(), 5060);
        assert_eq!(dst.ip().to_string(), "198.18.0.9");
        let (head, body) = m.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("m=audio 20000 RTP/AVP 18 101\r\n"));
        assert!(body.contains("c=IN IP4 192.0.2.5\r\n"));
        assert!(body.contains("a=fmtp:18 annexb=no"));
    }

    #[test]
    fn ipv6_hosts_bracketed() {
        let (m, _, _) = dialog(true).message(SipStep::Ok);
        assert!(m.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(m.contains("Via: SIP/2.0/UDP [2001:db8:1::5]:5060;branch=z9hG4bKb1\r\n"));
        assert!(m.contains("c=IN IP6 2001:db8:2::9\r\n"));
        let (bye, src, _) = dialog(true).message(SipStep::Bye(false));
        assert!(bye.starts_with("BYE sip:+15550100@[2001:db8:1::5]:5060 SIP/2.0\r\n"));
        assert_eq!(src.port(), 5060);
        assert!(src.ip().to_string().starts_with("2001:db8:2"));
        let (ok, src, _) = dialog(true).message(SipStep::ByeOk(false));
        assert!(ok.contains("CSeq: 1 BYE"));
        assert!(src.ip().to_string().starts_with("2001:db8:1"));
    }

    #[test]
    fn rtcp_lengths_and_padding() {
        let mut out = Vec::new();
        let sender = SenderInfo {
            now_ns: 1_000_000_000,
            rtp_timestamp: 5,
            packets: 10,
            octets: 1600,
        };
        let block = ReportBlock {
            ssrc: Ssrc(2),
            cumulative_lost: 3,
            ..ReportBlock::default()
        };
        push_rtcp_compound(&mut out, Ssrc(1), Some(&sender), Some(&block), "a@b");
        // SR with one block: 7 + 6 words = 52 bytes, length field 12.
        assert_eq!(&out[..4], &[0x81, 200, 0, 12]);
        assert_eq!(out.len() % 4, 0);
        let sdes = &out[52..];
        assert_eq!(sdes[1], 202);
        let words = u16::from_be_bytes([sdes[2], sdes[3]]) as usize;
        assert_eq!((words + 1) * 4, sdes.len());
        assert_eq!(
            &out[8..12],
            &((1u64 + NTP_UNIX_OFFSET) as u32).to_be_bytes()
        );
    }

    #[test]
    fn rr_without_sender_info() {
        let mut out = Vec::new();
        let block = ReportBlock {
            ssrc: Ssrc(2),
            fraction_lost: 64,
            cumulative_lost: 0x0102_0304,
            ..ReportBlock::default()
        };
        push_rtcp_compound(&mut out, Ssrc(1), None, Some(&block), "x");
        // RR with one block: 2 + 6 words = 32 bytes, length field 7.
        assert_eq!(&out[..4], &[0x81, 201, 0, 7]);
        assert_eq!(&out[8..12], &2u32.to_be_bytes());
        // Cumulative loss is clamped to the 24-bit signed maximum.
        assert_eq!(&out[12..16], &[64, 0x7F, 0xFF, 0xFF]);
        assert_eq!(out[33], 202);
    }

    #[test]
    fn dtmf_codes() {
        assert_eq!(dtmf_event_code('7'), Some(7));
        assert_eq!(dtmf_event_code('#'), Some(11));
        assert_eq!(dtmf_event_code('D'), Some(15));
        assert_eq!(dtmf_event_code('x'), None);
    }
}
