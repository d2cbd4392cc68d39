//! The registrar (RFC 3261 §10.3): REGISTER with digest authentication (realm = the
//! domain), several contacts per address of record, per-contact `expires` and the
//! `Expires` header, min/max expiry (423 with `Min-Expires`), `*` with `Expires: 0`,
//! Call-ID/CSeq ordering, q-values, Path (RFC 3327) and the source address the
//! REGISTER came from (for NAT: the B2BUA sends to it, RFC 3581), a 200 OK listing the
//! current bindings, and location lookup ordered by q.
//!
//! Bindings are local in-flight state kept in memory (they are not persisted: after a
//! restart clients re-register within their interval); domains and credentials come
//! from a [`Directory`] (the SBUS store through [`crate::provision`]). Expiry runs on
//! the `now` the driver passes: call [`Registrar::handle_timeout`] at
//! [`Registrar::poll_timeout`].
//!
//! ```
//! use std::time::Instant;
//! use control::auth::{Authenticator, AuthConfig};
//! use control::registrar::{Directory, Registrar, RegistrarConfig, Source};
//! use sbus::record::Credentials;
//!
//! struct Users;
//! impl Directory for Users {
//!     fn serves(&self, domain: &str) -> bool { domain == "example.com" }
//!     fn credentials(&self, _domain: &str, user: &str) -> Option<Credentials> {
//!         (user == "alice").then(|| control::auth::credentials("alice", "example.com", "pw"))
//!     }
//! }
//! let t0 = Instant::now();
//! let mut auth = Authenticator::new([9; 32], t0, AuthConfig::default());
//! let mut reg = Registrar::new(RegistrarConfig::default());
//! let req = wire::sip::Message::parse(b"REGISTER sip:example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
//!     To: <sip:alice@example.com>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\
//!     Contact: <sip:alice@10.0.0.5:5060>\r\nContent-Length: 0\r\n\r\n").unwrap();
//! let src = Source { addr: "192.0.2.1:40000".parse().unwrap(), transport: "udp" };
//! let reply = reg.handle_register(t0, &req, src, &mut auth, &Users);
//! assert_eq!(reply.status, 401); // send reply.bytes; the client retries with credentials
//! let contacts = reg.lookup("alice@example.com", t0);
//! assert!(contacts.is_empty());
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sbus::record::Credentials;
use wire::sip::{Message, NameAddr, Uri};

use crate::auth::{Authenticator, ChallengeKind, Realm, Verdict};
use crate::response;

/// Where domains and credentials come from.
pub trait Directory {
    /// Whether this core serves `domain`.
    fn serves(&self, domain: &str) -> bool;
    /// The stored credentials of `user@domain`.
    fn credentials(&self, domain: &str, user: &str) -> Option<Credentials>;
}

/// Registrar settings.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    /// Shortest accepted registration, in s (shorter → 423 Interval Too Brief).
    pub min_expires: u32,
    /// Longest registration, in s (longer requests are shortened).
    pub max_expires: u32,
    /// Expiry when the request gives none, in s.
    pub default_expires: u32,
    /// Most contacts per address of record (more → 403).
    pub max_contacts: usize,
    /// The To tag of our responses.
    pub to_tag: String,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            to_tag: "vxp-reg".into(),
        }
    }
}

/// Where a REGISTER came from.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// Source address and port of the datagram or connection.
    pub addr: SocketAddr,
    /// `udp`, `tcp`, `tls`…
    pub transport: &'a str,
}

/// One registered contact of an address of record.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The Contact URI as registered.
    pub contact: String,
    /// Preference, 0..=1000 (q × 1000); higher first.
    pub q: u16,
    /// When it expires.
    pub expires_at: Instant,
    /// Call-ID of the REGISTER that made it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// Source address the REGISTER came from (NAT: send requests here).
    pub source: SocketAddr,
    /// Transport it came over.
    pub transport: String,
    /// Path header values (RFC 3327): route requests through these.
    pub path: Vec<String>,
    /// User-Agent of the registering device.
    pub user_agent: String,
    /// When it was last refreshed.
    pub updated: Instant,
}

/// The outcome of a REGISTER: the response to send and what changed.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code of `bytes`.
    pub status: u16,
    /// The response.
    pub bytes: Vec<u8>,
    /// The address of record (`user@domain`), when authenticated.
    pub aor: Option<String>,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    /// Successful REGISTERs (200).
    pub ok: u64,
    /// Challenged (401).
    pub challenged: u64,
    /// Refused (4xx other than 401).
    pub refused: u64,
    /// Bindings that expired.
    pub expired: u64,
}

/// The location service. See the module docs.
#[derive(Debug)]
pub struct Registrar {
    cfg: RegistrarConfig,
    bindings: HashMap<String, Vec<Binding>>,
    stats: RegistrarStats,
}

impl Registrar {
    /// An empty registrar.
    #[must_use]
    pub fn new(cfg: RegistrarConfig) -> Registrar {
        Registrar {
            cfg,
            bindings: HashMap::new(),
            stats: RegistrarStats::default(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> RegistrarStats {
        self.stats
    }

    /// Handles a REGISTER received from `src` at `now`: authenticates it with `auth`
    /// against `dir`, applies the bindings and returns the response to send.
    pub fn handle_register(
        &mut self,
        now: Instant,
        req: &Message<'_>,
        src: Source<'_>,
        auth: &mut Authenticator,
        dir: &dyn Directory,
    ) -> Reply {
        match self.register((now, req, src), (auth, dir)) {
            Ok((aor, bytes)) => {
                self.stats.ok += 1;
                Reply {
                    status: 200,
                    bytes,
                    aor: Some(aor),
                }
            }
            Err(Refusal {
                status,
                headers,
                reason,
            }) => {
                if status == 401 {
                    self.stats.challenged += 1;
                } else {
                    self.stats.refused += 1;
                }
                let extra: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                Reply {
                    status,
                    bytes: response::build(
                        req,
                        status,
                        reason,
                        Some(&self.cfg.to_tag),
                        &extra,
                        b"",
                    ),
                    aor: None,
                }
            }
        }
    }

    /// The live contacts of `aor` (`user@domain`), highest q first, then most
    /// recently refreshed.
    #[must_use]
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<&Binding> {
        let mut v: Vec<&Binding> = self
            .bindings
            .get(&aor.to_ascii_lowercase())
            .map(|b| b.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.q.cmp(&a.q).then(b.updated.cmp(&a.updated)));
        v
    }

    /// Removes expired bindings.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = 0;
        self.bindings.retain(|_, v| {
            let before = v.len();
            v.retain(|b| b.expires_at > now);
            expired += before - v.len();
            !v.is_empty()
        });
        self.stats.expired += expired as u64;
    }

    /// The next expiry, if any binding exists.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bindings.values().flatten().map(|b| b.expires_at).min()
    }

    /// Number of live bindings (all AORs).
    #[must_use]
    pub fn len(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Whether there is no binding.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(
        &mut self,
        (now, req, src): (Instant, &Message<'_>, Source<'_>),
        (auth, dir): (&mut Authenticator, &dyn Directory),
    ) -> Result<(String, Vec<u8>), Refusal> {
        //= https://www.rfc-editor.org/rfc/rfc3261#section-10.3
        //# 1. The registrar inspects the Request-URI to determine whether it
        //#    has access to bindings for the domain identified in the
        //#    Request-URI.
        let domain = req
            .request_uri()
            .and_then(|u| u.host)
            .map(str::to_ascii_lowercase)
            .ok_or(Refusal::new(400, "Bad Request-URI"))?;
        if !dir.serves(&domain) {
            return Err(Refusal::new(404, "Domain Not Served"));
        }
        //# 3. A registrar SHOULD authenticate the UAC.
        let user = match auth.verify(req, ChallengeKind::Www, Realm(&domain), now, |u| {
            dir.credentials(&domain, u)
        }) {
            Verdict::Authenticated { user, .. } => user,
            Verdict::Challenge { stale } => {
                let headers = auth
                    .challenge(Realm(&domain), ChallengeKind::Www, now, stale)
                    .into_iter()
                    .map(|v| ("WWW-Authenticate", v))
                    .collect();
                return Err(Refusal {
                    status: 401,
                    headers,
                    reason: "Unauthorized",
                });
            }
            Verdict::Forbidden(why) => return Err(Refusal::new(403, why)),
            Verdict::BadRequest(why) => return Err(Refusal::new(400, why)),
        };
        //# 5. The registrar extracts the address-of-record from the To header
        //#    field of the request.  If the address-of-record is not valid for
        //#    the domain in the Request-URI, the registrar MUST send a 404 (Not
        //#    Found) response and skip the remaining steps.
        let to = req.to().ok_or(Refusal::new(400, "Missing To"))?;
        let to_user = to.uri.user.unwrap_or("");
        let to_host = to.uri.host.unwrap_or("").to_ascii_lowercase();
        if to_host != domain || dir.credentials(&domain, to_user).is_none() {
            return Err(Refusal::new(404, "Not Found"));
        }
        //# 6. ... the registrar checks whether the authenticated user is
        //#    authorized to modify registrations for this address-of-record.
        if to_user != user {
            return Err(Refusal::new(403, "Not Allowed To Register This AOR"));
        }
        let aor = format!("{to_user}@{domain}").to_ascii_lowercase();
        let call_id = req.call_id().unwrap_or("").to_owned();
        let cseq = req.cseq().map_or(0, |c| c.seq);
        let header_expires = req.expires();
        let path: Vec<String> = req.header_values("Path").map(str::to_owned).collect();
        let user_agent = req.header("User-Agent").unwrap_or("").to_owned();

        let current = self.bindings.entry(aor.clone()).or_default();
        current.retain(|b| b.expires_at > now);
        if req.is_contact_star() {
            //= https://www.rfc-editor.org/rfc/rfc3261#section-10.3
            //# If the request contains a Contact header field value of "*" ... the
            //# registrar checks that the Expires header field value is "0"; if not
            //# (or if there is more than one Contact header field value), it returns
            //# 400 (Bad Request).
            if header_expires != Some(0) || req.contacts().count() > 0 {
                return Err(Refusal::new(400, "Contact * needs Expires: 0 alone"));
            }
            current.retain(|b| b.call_id == call_id && cseq <= b.cseq);
        } else {
            let mut changes: Vec<(NameAddr<'_>, u32, u16)> = Vec::new();
            for c in req.contacts() {
                let expires = match c.params.value("expires") {
                    Some(v) => v.parse::<u64>().map_or(self.cfg.default_expires, |e| {
                        u32::try_from(e).unwrap_or(u32::MAX)
                    }),
                    None => header_expires.unwrap_or(self.cfg.default_expires),
                };
                //= https://www.rfc-editor.org/rfc/rfc3261#section-10.3
                //# If and only if the requested expiration interval is greater than
                //# zero AND smaller than one hour AND less than a registrar-configured
                //# minimum, the registrar MAY reject the registration with a response
                //# of 423 (Interval Too Brief).
                if expires != 0 && expires < self.cfg.min_expires {
                    return Err(Refusal {
                        status: 423,
                        headers: vec![("Min-Expires", self.cfg.min_expires.to_string())],
                        reason: "Interval Too Brief",
                    });
                }
                let q = match c.params.value("q") {
                    Some(q) => parse_q(q).ok_or(Refusal::new(400, "Bad q-value"))?,
                    None => 1000,
                };
                changes.push((c, expires.min(self.cfg.max_expires), q));
            }
            // Check ordering first, so the request is applied entirely or not at all.
            for (c, _, _) in &changes {
                if let Some(b) = current.iter().find(|b| same_uri(&b.contact, &c.uri)) {
                    //# If they are the same, the registrar compares the CSeq value.  If
                    //# the value is higher than that of the existing binding, it MUST
                    //# update or remove the binding as above.  If not, the update MUST
                    //# be aborted and the request fails.
                    if b.call_id == call_id && cseq <= b.cseq {
                        return Err(Refusal::new(400, "Out Of Order CSeq"));
                    }
                }
            }
            let mut next = current.clone();
            for (c, expires, q) in changes {
                next.retain(|b| !same_uri(&b.contact, &c.uri));
                if expires > 0 {
                    next.push(Binding {
                        contact: c.uri.as_str().to_owned(),
                        q,
                        expires_at: now + Duration::from_secs(expires.into()),
                        call_id: call_id.clone(),
                        cseq,
                        source: src.addr,
                        transport: src.transport.to_ascii_lowercase(),
                        path: path.clone(),
                        user_agent: user_agent.clone(),
                        updated: now,
                    });
                }
            }
            // Refuse rather than push out other devices' bindings.
            if next.len() > self.cfg.max_contacts {
                return Err(Refusal::new(403, "Too Many Contacts"));
            }
            *current = next;
        }
        //= https://www.rfc-editor.org/rfc/rfc3261#section-10.3
        //# 8. The registrar returns a 200 (OK) response.  The response MUST contain
        //#    Contact header field values enumerating all current bindings.
        let mut headers: Vec<(&str, String)> = Vec::new();
        for b in current.iter() {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            let mut v = format!("<{}>;expires={left}", b.contact);
            if b.q != 1000 {
                let _ = write!(v, ";q={}.{:03}", b.q / 1000, b.q % 1000);
            }
            headers.push(("Contact", v));
        }
        //= https://www.rfc-editor.org/rfc/rfc3327#section-5.3
        //# the registrar MUST copy the Path header field values into the response
        for p in &path {
            headers.push(("Path", p.clone()));
        }
        if current.is_empty() {
            self.bindings.remove(&aor);
        }
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        Ok((
            aor,
            response::build(req, 200, "OK", Some(&self.cfg.to_tag), &extra, b""),
        ))
    }
}

struct Refusal {
    status: u16,
    headers: Vec<(&'static str, String)>,
    reason: &'static str,
}

impl Refusal {
    fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal {
            status,
            headers: Vec::new(),
            reason,
        }
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` → thousandths.
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(f),
        "1" if f == 0 => Some(1000),
        _ => None,
    }
}

/// URI equality for bindings (RFC 3261 §19.1.4, simplified): scheme and host
/// case-insensitive, user case-sensitive, default port 5060, parameters ignored.
fn same_uri(stored: &str, uri: &Uri<'_>) -> bool {
    let Ok(s) = Uri::parse(stored) else {
        return stored == uri.as_str();
    };
    s.scheme.eq_ignore_ascii_case(uri.scheme)
        && s.user == uri.user
        && s.host.map(str::to_ascii_lowercase) == uri.host.map(str::to_ascii_lowercase)
        && s.port.unwrap_or(5060) == uri.port.unwrap_or(5060)
        && (s.host.is_some() || s.opaque == uri.opaque)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthConfig, tests::answer};

    struct Users;
    impl Directory for Users {
        fn serves(&self, domain: &str) -> bool {
            domain == "example.com"
        }
        fn credentials(&self, domain: &str, user: &str) -> Option<Credentials> {
            (domain == "example.com" && (user == "alice" || user == "bob"))
                .then(|| crate::auth::credentials(user, "example.com", "pw"))
        }
    }

    struct Phone {
        auth: Authenticator,
        reg: Registrar,
        t0: Instant,
        challenge: String,
        nc: u32,
    }

    impl Phone {
        fn new() -> Phone {
            let t0 = crate::test_origin();
            Phone {
                auth: Authenticator::new([3; 32], t0, AuthConfig::default()),
                reg: Registrar::new(RegistrarConfig::default()),
                t0,
                challenge: String::new(),
                nc: 0,
            }
        }

        /// Sends a REGISTER as `user` with these extra header lines, answering a
        /// challenge once if needed; returns the final reply.
        fn register(
            &mut self,
            at_s: u64,
            user: &str,
            call_id: &str,
            cseq: u32,
            extra: &str,
        ) -> Reply {
            let now = self.t0 + Duration::from_secs(at_s);
            for _ in 0..2 {
                let auth = if self.challenge.is_empty() {
                    String::new()
                } else {
                    self.nc += 1;
                    format!(
                        "Authorization: {}\r\n",
                        answer(
                            &self.challenge,
                            user,
                            "pw",
                            "REGISTER",
                            "sip:example.com",
                            self.nc
                        )
                    )
                };
                let raw = format!(
                    "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK{cseq};rport\r\n\
                     From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\n\
                     Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n{auth}{extra}\
                     Content-Length: 0\r\n\r\n"
                );
                let m = Message::parse(raw.as_bytes()).unwrap();
                let src = Source {
                    addr: "198.18.0.9:40000".parse().unwrap(),
                    transport: "UDP",
                };
                let r = self
                    .reg
                    .handle_register(now, &m, src, &mut self.auth, &Users);
                if r.status != 401 {
                    return r;
                }
                let resp = Message::parse(&r.bytes).unwrap();
                self.challenge = resp.header("WWW-Authenticate").unwrap().to_owned();
                self.nc = 0;
            }
            panic!("challenged twice");
        }
    }

    impl Phone {
        fn alice(&mut self, at_s: u64, call_id: &str, cseq: u32, extra: &str) -> Reply {
            self.register(at_s, "alice", call_id, cseq, extra)
        }
    }

    #[test]
    fn register_lookup_refresh_expire_and_unregister() {
        let mut p = Phone::new();
        let r = p.alice(
            0,
            "c1",
            1,
            "Contact: <sip:alice@10.0.0.5:5062>;q=0.5, <sip:alice@10.0.0.6>\r\nExpires: 600\r\n",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
        let m = Message::parse(&r.bytes).unwrap();
        assert_eq!(m.contacts().count(), 2);
        let found = p.reg.lookup("alice@example.com", p.t0);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].contact, "sip:alice@10.0.0.6"); // q=1 before q=0.5
        assert_eq!(found[1].q, 500);
        assert_eq!(found[0].source, "198.18.0.9:40000".parse().unwrap());
        // Contact expires param beats the header; too brief → 423 with Min-Expires.
        let r = p.alice(10, "c1", 2, "Contact: <sip:alice@10.0.0.7>;expires=30\r\n");
        assert_eq!(r.status, 423);
        assert_eq!(
            Message::parse(&r.bytes).unwrap().header("Min-Expires"),
            Some("60")
        );
        // Out-of-order CSeq on the same Call-ID fails and changes nothing.
        let r = p.alice(10, "c1", 1, "Contact: <sip:alice@10.0.0.6>;expires=0\r\n");
        assert_eq!(r.status, 400);
        assert_eq!(p.reg.lookup("alice@example.com", p.t0).len(), 2);
        // Removing one contact with expires=0; max-expires caps long requests.
        let r = p.alice(
            20,
            "c1",
            3,
            "Contact: <sip:alice@10.0.0.6>;expires=0, <sip:ALICE@10.0.0.8>;expires=99999\r\n",
        );
        assert_eq!(r.status, 200);
        let now = p.t0 + Duration::from_secs(20);
        let found = p.reg.lookup("alice@example.com", now);
        assert_eq!(found.len(), 2);
        assert!(
            found
                .iter()
                .any(|b| b.expires_at == now + Duration::from_secs(3600))
        );
        // Virtual time: the 600 s binding expires, the 3600 s one stays.
        assert_eq!(p.reg.poll_timeout(), Some(p.t0 + Duration::from_secs(600)));
        p.reg.handle_timeout(p.t0 + Duration::from_secs(601));
        assert_eq!(p.reg.len(), 1);
        assert_eq!(p.reg.stats().expired, 1);
        // `*` needs Expires: 0; then removes everything.
        let r = p.alice(700, "c2", 1, "Contact: *\r\nExpires: 5\r\n");
        assert_eq!(r.status, 400);
        let r = p.alice(700, "c2", 2, "Contact: *\r\nExpires: 0\r\n");
        assert_eq!(r.status, 200);
        assert!(p.reg.is_empty());
    }

    #[test]
    fn refusals() {
        let mut p = Phone::new();
        // Bob's credentials cannot register Alice.
        let now = p.t0;
        let ch = p
            .auth
            .challenge(Realm("example.com"), ChallengeKind::Www, now, false);
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: x\r\n\
             CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nAuthorization: {}\r\nContact: <sip:a@10.0.0.1>\r\n\
             Content-Length: 0\r\n\r\n",
            answer(&ch[0], "bob", "pw", "REGISTER", "sip:example.com", 1)
        );
        let m = Message::parse(raw.as_bytes()).unwrap();
        let src = Source {
            addr: "198.18.0.9:5060".parse().unwrap(),
            transport: "udp",
        };
        assert_eq!(
            p.reg
                .handle_register(now, &m, src, &mut p.auth, &Users)
                .status,
            403
        );
        // Unknown domain: 404, without a challenge.
        let other = raw.replace("REGISTER sip:example.com", "REGISTER sip:other.org");
        let m = Message::parse(other.as_bytes()).unwrap();
        assert_eq!(
            p.reg
                .handle_register(now, &m, src, &mut p.auth, &Users)
                .status,
            404
        );
        // A bad q-value: 400.
        let r = p.register(0, "bob", "c", 1, "Contact: <sip:b@10.0.0.1>;q=1.5\r\n");
        assert_eq!(r.status, 400);
        assert!(p.reg.is_empty());
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.123"), Some(123));
        assert_eq!(parse_q("1.1"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("x"), None);
    }
}
