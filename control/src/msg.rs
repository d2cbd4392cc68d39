//! Building SIP messages as bytes: response heads taken from a request,
//! requests within a dialog, and the small parsing helpers the B2BUA needs
//! (addresses out of URIs, header values).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use wire::sip::{Message, Uri};

use crate::transaction::first_element;
use crate::transport::{Peer, Transport};

/// Headers a B2BUA passes from one leg to the other with a request or a
/// response (everything else is rebuilt per leg).
pub const PASS_THROUGH: &[&str] = &[
    "Content-Type",
    "Content-Disposition",
    "Require",
    "Supported",
    "Allow",
    "Accept",
    "RSeq",
    "Session-Expires",
    "Min-SE",
    "Reason",
    "Event",
    "Subscription-State",
    "Unsupported",
    "Retry-After",
    "Warning",
    "P-Asserted-Identity",
    "Privacy",
];

/// Methods we accept (the `Allow` header).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REGISTER";

/// The response head for `req`: Via (the top one with `received` and
/// `rport` filled in, RFC 3581 §4), From, To (with `to_tag` added when the
/// request's To has none), Call-ID, CSeq — each ending in CRLF.
pub fn response_head(req: &Message<'_>, source: &Peer, to_tag: Option<&str>) -> String {
    let mut out = String::with_capacity(320);
    let mut first = true;
    for via in req.find("Via") {
        if first {
            first = false;
            let top = first_element(via.value);
            let rest = via.value.trim()[top.len()..].trim_start_matches(',').trim();
            out.push_str("Via: ");
            push_top_via(&mut out, top, source);
            out.push_str("\r\n");
            if !rest.is_empty() {
                let _ = write!(out, "Via: {rest}\r\n");
            }
        } else {
            let _ = write!(out, "Via: {}\r\n", via.value);
        }
    }
    if let Some(from) = req.header("From") {
        let _ = write!(out, "From: {from}\r\n");
    }
    if let Some(to) = req.header("To") {
        let has_tag = req.to().and_then(|t| t.tag()).is_some();
        match to_tag {
            Some(tag) if !has_tag => {
                let _ = write!(out, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(out, "To: {to}\r\n");
            }
        }
    }
    if let Some(id) = req.call_id() {
        let _ = write!(out, "Call-ID: {id}\r\n");
    }
    if let Some(cseq) = req.header("CSeq") {
        let _ = write!(out, "CSeq: {cseq}\r\n");
    }
    out
}

//= https://www.rfc-editor.org/rfc/rfc3581#section-4
//# When a server compliant to this specification (which can be a proxy
//# or UAS) receives a request, it examines the topmost Via header field
//# value. If this Via header field value contains an "rport" parameter
//# with no value, it MUST set the value of the parameter to the source
//# port of the request.
fn push_top_via(out: &mut String, top: &str, source: &Peer) {
    let ip = source.addr.ip();
    let mut has_received = false;
    let mut parts = top.split(';');
    let sent = parts.next().unwrap_or("");
    out.push_str(sent.trim_end());
    let sent_host = wire::sip::Via::parse(top).map_or("", |v| v.host);
    for p in parts {
        let p = p.trim();
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            let _ = write!(out, ";rport={}", source.addr.port());
        } else if name.eq_ignore_ascii_case("received") {
            has_received = true;
            let _ = write!(out, ";received={ip}");
        } else {
            out.push(';');
            out.push_str(p);
        }
    }
    //= https://www.rfc-editor.org/rfc/rfc3261#section-18.2.1
    //# If the host portion of the "sent-by" parameter contains a domain name,
    //# or if it contains an IP address that differs from the packet source
    //# address, the server MUST add a "received" parameter to that Via
    //# header field value.
    if !has_received && host_ip(sent_host) != Some(ip) {
        let _ = write!(out, ";received={ip}");
    }
}

/// A whole response: status line, `head`, `extra` header lines (each
/// ending in CRLF), Content-Length and body.
pub fn response(code: u16, head: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + extra.len() + body.len() + 64);
    let _ = write!(
        Writer(&mut out),
        "SIP/2.0 {code} {}\r\n{head}{extra}Content-Length: {}\r\n\r\n",
        crate::response::reason(code),
        body.len()
    );
    out.extend_from_slice(body);
    out
}

/// Copies the [`PASS_THROUGH`] headers of `msg` as header lines.
pub fn pass_headers(out: &mut String, msg: &Message<'_>) {
    for h in msg.headers() {
        if PASS_THROUGH.iter().any(|p| p.eq_ignore_ascii_case(h.name)) {
            let _ = write!(out, "{}: {}\r\n", h.name, h.value);
        }
    }
}

/// Where a URI points, for IP-literal hosts (no DNS here): host and port
/// (default 5060, 5061 for TLS) and the transport its `transport`
/// parameter names (default UDP).
pub fn uri_target(uri: &Uri<'_>) -> Option<(SocketAddr, Transport)> {
    let ip = host_ip(uri.host?)?;
    let transport = uri
        .params
        .value("transport")
        .and_then(Transport::from_token)
        .unwrap_or(Transport::Udp);
    let port = uri.port.unwrap_or(if transport == Transport::Tls {
        5061
    } else {
        5060
    });
    Some((SocketAddr::new(ip, port), transport))
}

/// An IP literal host (IPv6 with or without brackets).
pub fn host_ip(host: &str) -> Option<IpAddr> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    h.parse().ok()
}

/// The URI inside a name-addr value (`"Bob" <sip:b@x>;tag=1` → `sip:b@x`).
pub fn uri_of(name_addr: &str) -> &str {
    match (name_addr.find('<'), name_addr.find('>')) {
        (Some(a), Some(b)) if a < b => &name_addr[a + 1..b],
        _ => name_addr.split(';').next().unwrap_or(name_addr).trim(),
    }
}

/// A host:port for Via and Contact (IPv6 in brackets).
pub fn hostport(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// `fmt::Write` over a byte vector.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl std::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_head_fills_rport_and_received() {
        let req = Message::parse(
            b"OPTIONS sip:a@192.0.2.1 SIP/2.0\r\n\
              Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKx;rport, SIP/2.0/UDP 192.0.2.8\r\n\
              Via: SIP/2.0/TCP p.example.com\r\n\
              From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n\
              Call-ID: c1\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let peer = Peer::udp("192.0.2.10:4000".parse().unwrap());
        let head = response_head(&req, &peer, Some("t9"));
        assert_eq!(
            head,
            "Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKx;rport=4000;received=192.0.2.10\r\n\
             Via: SIP/2.0/UDP 192.0.2.8\r\n\
             Via: SIP/2.0/TCP p.example.com\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=t9\r\n\
             Call-ID: c1\r\nCSeq: 7 OPTIONS\r\n"
        );
        let r = response(200, &head, "", b"");
        let parsed = Message::parse(&r).unwrap();
        assert_eq!(parsed.status(), Some(200));
        assert_eq!(parsed.via().next().unwrap().rport(), Some(Some(4000)));
    }

    #[test]
    fn uri_targets() {
        let u = Uri::parse("sip:bob@[2001:db8::1]:5070;transport=tcp").unwrap();
        assert_eq!(
            uri_target(&u),
            Some(("[2001:db8::1]:5070".parse().unwrap(), Transport::Tcp))
        );
        let u = Uri::parse("sip:bob@example.com").unwrap();
        assert_eq!(uri_target(&u), None);
        assert_eq!(uri_of("\"B\" <sip:b@x;lr>;tag=1"), "sip:b@x;lr");
    }
}
