//! The demo's two scripted user agents: plain UDP sockets, messages built
//! as text and parsed with `wire::sip`. Enough of RFC 3261 for the demo's
//! script (REGISTER and INVITE with digest, ACK, BYE; the callee answers
//! INVITE and BYE), each message logged as its first line.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use control::auth::{Algorithm, digest_response, ha1};
use wire::sip::Message;

use super::live::DOMAIN;

/// A received SIP message, owned.
pub struct Received {
    /// The raw bytes (parse again with [`Message::parse`]).
    pub bytes: Vec<u8>,
    /// Where it came from.
    pub from: SocketAddr,
}

impl Received {
    /// The parsed message (it parsed once already).
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("parsed when received")
    }
}

/// One user agent: a SIP socket, its credentials and the exchange log.
pub struct Ua {
    /// `alice` or `bob`.
    pub user: &'static str,
    password: String,
    socket: UdpSocket,
    proxy: SocketAddr,
    /// First lines of every message sent (`→`) and received (`←`).
    pub log: Vec<String>,
    branch: u64,
}

impl Ua {
    /// A UA on an ephemeral loopback port talking to `proxy`.
    pub fn new(user: &'static str, password: &str, proxy: SocketAddr) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding a UA socket")?;
        Ok(Self {
            user,
            password: password.to_owned(),
            socket,
            proxy,
            log: Vec::new(),
            branch: 0,
        })
    }

    /// The UA's SIP address.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("bound socket")
    }

    fn next_branch(&mut self) -> String {
        self.branch += 1;
        format!("z9hG4bK-{}-{}", self.user, self.branch)
    }

    /// Sends `text` to the proxy and logs its first line.
    pub fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.log.push(format!(
            "{:>5} → {}",
            self.user,
            first_line(text.as_bytes())
        ));
        self.socket.send_to(text.as_bytes(), self.proxy)?;
        Ok(())
    }

    /// The next SIP message, or `None` after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> anyhow::Result<Option<Received>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let bytes = buf[..n].to_vec();
                    if Message::parse(&bytes).is_err() {
                        continue; // keep-alives and the like
                    }
                    self.log
                        .push(format!("{:>5} ← {}", self.user, first_line(&bytes)));
                    return Ok(Some(Received { bytes, from }));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a request and waits for its final response (provisional ones
    /// are logged and skipped), retransmitting on T1 doubling (loopback
    /// rarely needs it). Other messages arriving meanwhile are skipped
    /// (the demo's script never crosses requests).
    pub fn transact(&mut self, request: &str) -> anyhow::Result<Received> {
        let cseq = header_of(request, "CSeq").unwrap_or_default();
        let mut interval = Duration::from_millis(500);
        let deadline = Instant::now() + Duration::from_secs(8);
        self.send(request)?;
        let mut got_provisional = false;
        while Instant::now() < deadline {
            let Some(r) = self.recv(interval)? else {
                if !got_provisional {
                    self.send(request)?;
                    interval = (interval * 2).min(Duration::from_secs(4));
                }
                continue;
            };
            let m = r.msg();
            let Some(status) = m.status() else { continue };
            if m.header("CSeq").map(str::trim) != Some(cseq.trim()) {
                continue;
            }
            if status < 200 {
                got_provisional = true;
                continue;
            }
            return Ok(r);
        }
        bail!(
            "{}: no final response to {}",
            self.user,
            first_line(request.as_bytes())
        )
    }

    /// Builds a request outside or inside a dialog.
    pub fn request(&mut self, r: &Req<'_>) -> String {
        let branch = self.next_branch();
        let me = self.addr();
        let mut s = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{DOMAIN}>;tag={from_tag}\r\nTo: <{to}>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:{user}@{me}>\r\nUser-Agent: voxplane-demo\r\n",
            method = r.method,
            uri = r.uri,
            user = self.user,
            from_tag = r.from_tag,
            to = r.to,
            to_tag = r.to_tag.map(|t| format!(";tag={t}")).unwrap_or_default(),
            call_id = r.call_id,
            cseq = r.cseq,
        );
        for h in r.extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        match r.sdp {
            Some(sdp) => s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s
    }

    /// The credentials header answering the first challenge of a 401/407.
    pub fn authorize(
        &self,
        challenge: &Message<'_>,
        method: &str,
        uri: &str,
    ) -> anyhow::Result<String> {
        let (name, value) = match challenge.status() {
            Some(401) => ("Authorization", challenge.header("WWW-Authenticate")),
            Some(407) => (
                "Proxy-Authorization",
                challenge.header("Proxy-Authenticate"),
            ),
            other => bail!("not a challenge: {other:?}"),
        };
        let value = value.context("challenge without its header")?;
        let param = |p: &str| digest_param(value, p);
        let realm = param("realm").context("challenge without realm")?;
        let nonce = param("nonce").context("challenge without nonce")?;
        let alg = Algorithm::from_param(param("algorithm").as_deref())
            .context("challenge with an unknown algorithm")?;
        let qop = param("qop").filter(|q| q.split(',').any(|q| q.trim() == "auth"));
        let cnonce = format!("{}cnonce{}", self.user, self.branch);
        let ha1 = ha1(alg, self.user, &realm, &self.password);
        let response = digest_response(
            alg,
            &ha1,
            &nonce,
            qop.as_ref().map(|_| ("00000001", cnonce.as_str(), "auth")),
            method,
            uri,
        );
        let mut h = format!(
            "{name}: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}",
            self.user,
            alg.as_str()
        );
        if qop.is_some() {
            h.push_str(&format!(", qop=auth, nc=00000001, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = param("opaque") {
            h.push_str(&format!(", opaque=\"{opaque}\""));
        }
        Ok(h)
    }

    /// REGISTER, answering the digest challenge.
    pub fn register(&mut self) -> anyhow::Result<u16> {
        let uri = format!("sip:{DOMAIN}");
        let to = format!("sip:{}@{DOMAIN}", self.user);
        let call_id = format!("reg-{}", self.user);
        let tag = format!("{}-reg", self.user);
        let mut req = Req {
            method: "REGISTER",
            uri: &uri,
            to: &to,
            to_tag: None,
            call_id: &call_id,
            from_tag: &tag,
            cseq: 1,
            extra: &["Expires: 300"],
            sdp: None,
        };
        let text = self.request(&req);
        let r = self.transact(&text)?;
        let mut status = r.msg().status().unwrap_or(0);
        if status == 401 || status == 407 {
            let auth = self.authorize(&r.msg(), "REGISTER", &uri)?;
            let extra = ["Expires: 300", auth.as_str()];
            req.cseq = 2;
            req.extra = &extra;
            let text = self.request(&req);
            status = self.transact(&text)?.msg().status().unwrap_or(0);
        }
        Ok(status)
    }

    /// Answers `request` (a received request) with `status`, echoing its
    /// Via, From, To (plus `to_tag`), Call-ID and CSeq.
    pub fn respond(
        &mut self,
        request: &Received,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        sdp: Option<&str>,
    ) -> anyhow::Result<()> {
        let m = request.msg();
        let mut s = format!("SIP/2.0 {status} {reason}\r\n");
        for via in m.header_values("Via") {
            s.push_str(&format!("Via: {via}\r\n"));
        }
        let to = m.header("To").unwrap_or_default();
        let to = match to_tag {
            Some(t) if !to.contains("tag=") => format!("{to};tag={t}"),
            _ => to.to_owned(),
        };
        s.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:{}@{}>\r\n",
            m.header("From").unwrap_or_default(),
            m.call_id().unwrap_or_default(),
            m.header("CSeq").unwrap_or_default(),
            self.user,
            self.addr()
        ));
        match sdp {
            Some(sdp) => s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        self.log
            .push(format!("{:>5} → {}", self.user, first_line(s.as_bytes())));
        self.socket.send_to(s.as_bytes(), request.from)?;
        Ok(())
    }
}

/// The parts of a request [`Ua::request`] fills in.
#[derive(Clone, Copy)]
pub struct Req<'a> {
    /// Method.
    pub method: &'a str,
    /// Request-URI.
    pub uri: &'a str,
    /// To URI.
    pub to: &'a str,
    /// To tag (in a dialog).
    pub to_tag: Option<&'a str>,
    /// Call-ID.
    pub call_id: &'a str,
    /// From tag.
    pub from_tag: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// Whole extra header lines.
    pub extra: &'a [&'a str],
    /// SDP body.
    pub sdp: Option<&'a str>,
}

/// A G.711 µ-law SDP offer/answer for media on `addr`.
pub fn sdp(user: &str, addr: SocketAddr) -> String {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 {ip}\r\ns=voxplane demo\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// The media address and the first codec of an SDP body.
pub fn sdp_media(body: &[u8]) -> Option<(SocketAddr, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip = None;
    let mut port = None;
    let mut pt = None;
    let mut names = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.trim().parse::<std::net::IpAddr>().ok();
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut f = m.split_whitespace();
            port = f.next()?.parse::<u16>().ok();
            pt = f.nth(1).map(str::to_owned);
        } else if let Some(r) = line.strip_prefix("a=rtpmap:") {
            names.push(r.to_owned());
        }
    }
    let pt = pt?;
    let codec = names
        .iter()
        .find_map(|r| {
            r.strip_prefix(&format!("{pt} "))
                .map(|n| n.split('/').next().unwrap_or(n).to_owned())
        })
        .unwrap_or_else(|| format!("PT {pt}"));
    Some((SocketAddr::new(ip?, port?), codec))
}

/// The value of header `name` in a message being built.
fn header_of(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// One `name=value` / `name="value"` parameter of a Digest challenge.
fn digest_param(header: &str, name: &str) -> Option<String> {
    let rest = header.trim().strip_prefix("Digest")?;
    rest.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The first line of a message, for the log.
pub fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
