//! SIP digest authentication (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760): challenges
//! offering SHA-256 then MD5 with `qop=auth`, verification of `Authorization` /
//! `Proxy-Authorization` against stored HA1s (never passwords), stateless HMAC-signed
//! nonces with expiry (`stale=true` once expired) and replay protection by nonce-count
//! tracking in a bounded table.
//!
//! Sans-IO: the caller passes `now`; the secret key comes from the driver (random per
//! process, or shared by the members of a cluster so that any of them accepts a nonce
//! another issued).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use control::auth::{Authenticator, AuthConfig, Realm, Verdict, ChallengeKind};
//! use sbus::record::Credentials;
//!
//! let t0 = Instant::now();
//! let mut auth = Authenticator::new([7; 32], t0, AuthConfig::default());
//! // A REGISTER arrives without credentials: answer 401 with these headers.
//! let headers = auth.challenge(Realm("example.com"), ChallengeKind::Www, t0, false);
//! assert_eq!(headers.len(), 2); // SHA-256 first, then MD5
//! // A REGISTER with an Authorization header is checked against the stored HA1s:
//! let req = wire::sip::Message::parse(b"REGISTER sip:example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
//!     To: <sip:alice@example.com>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\
//!     Content-Length: 0\r\n\r\n").unwrap();
//! let lookup = |_user: &str| -> Option<Credentials> { None };
//! match auth.verify(&req, ChallengeKind::Www, Realm("example.com"), t0 + Duration::from_secs(1), lookup) {
//!     Verdict::Authenticated { user, .. } => println!("{user} may register"),
//!     Verdict::Challenge { stale } => { let _ = auth.challenge(Realm("example.com"), ChallengeKind::Www, t0, stale); }
//!     Verdict::Forbidden(why) => println!("403 {why}"),
//!     Verdict::BadRequest(why) => println!("400 {why}"),
//! }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::Md5;
use sbus::record::Credentials;
use sha2::{Digest, Sha256};
use wire::sip::Message;

/// A digest algorithm (RFC 8760 registry names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (RFC 2617).
    Md5,
    /// `SHA-256` (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token used in headers.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses the `algorithm` parameter (absent means MD5, RFC 2617 §3.2.1).
    #[must_use]
    pub fn from_param(s: Option<&str>) -> Option<Algorithm> {
        match s {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            Some(_) => None,
        }
    }

    /// `H(data)` as lower-case hex.
    #[must_use]
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
        }
    }
}

/// `H(user ":" realm ":" password)`: what a store keeps instead of the password.
#[must_use]
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(format!("{user}:{realm}:{password}").as_bytes())
}

/// Both HA1s of a subscriber, as stored in [`Credentials`].
#[must_use]
pub fn credentials(user: &str, realm: &str, password: &str) -> Credentials {
    Credentials {
        realm: realm.to_owned(),
        ha1: ha1(Algorithm::Md5, user, realm, password),
        ha1_sha256: ha1(Algorithm::Sha256, user, realm, password),
    }
}

/// The `response` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1) from HA1. `qop` `None` is
/// the RFC 2069 form `H(HA1:nonce:HA2)`.
#[must_use]
pub fn digest_response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    //= https://www.rfc-editor.org/rfc/rfc2617#section-3.2.2.3
    //# A2       = Method ":" digest-uri-value
    let ha2 = alg.hash_hex(format!("{method}:{uri}").as_bytes());
    //= https://www.rfc-editor.org/rfc/rfc2617#section-3.2.2.1
    //# request-digest  = <"> < KD ( H(A1),     unq(nonce-value)
    //#                                     ":" nc-value
    //#                                     ":" unq(cnonce-value)
    //#                                     ":" unq(qop-value)
    //#                                     ":" H(A2)
    //#                             ) <">
    let kd = match qop {
        Some((nc, cnonce, qop)) => format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
        None => format!("{ha1}:{nonce}:{ha2}"),
    };
    alg.hash_hex(kd.as_bytes())
}

/// A realm: the SIP domain (Voxplane uses realm = domain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Realm<'a>(pub &'a str);

/// Whether the challenge is a UAS one (401, `WWW-Authenticate` / `Authorization`) or a
/// proxy one (407, `Proxy-Authenticate` / `Proxy-Authorization`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401 Unauthorized.
    Www,
    /// 407 Proxy Authentication Required.
    Proxy,
}

impl ChallengeKind {
    /// The response status that carries the challenge.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            ChallengeKind::Www => 401,
            ChallengeKind::Proxy => 407,
        }
    }
    /// The challenge header name.
    #[must_use]
    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "WWW-Authenticate",
            ChallengeKind::Proxy => "Proxy-Authenticate",
        }
    }
    /// The credentials header name.
    #[must_use]
    pub fn credentials_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "Authorization",
            ChallengeKind::Proxy => "Proxy-Authorization",
        }
    }
}

/// Authenticator settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// How long a nonce is accepted after it was issued.
    pub nonce_ttl: Duration,
    /// Most nonces whose counts are tracked at once (bounded memory). When full, the
    /// oldest are forgotten and any nonce issued before them is answered `stale=true`.
    pub max_tracked_nonces: usize,
    /// The algorithms offered (and accepted), most preferred first: one challenge
    /// header each, in this order (RFC 8760 §2.4: the UAC uses the topmost one it
    /// supports). Default SHA-256 then MD5. Legacy clients that just take the first
    /// header and only know MD5 (sipp 3.6, older phones) need MD5 first.
    pub algorithms: Vec<Algorithm>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            nonce_ttl: Duration::from_secs(300),
            max_tracked_nonces: 65_536,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }
}

/// The result of [`Authenticator::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials are valid for this request.
    Authenticated {
        /// Digest user name.
        user: String,
        /// Algorithm used.
        algorithm: Algorithm,
    },
    /// No (usable) credentials, or a nonce that is expired/replayed: answer 401/407 with
    /// [`Authenticator::challenge`], passing `stale`.
    Challenge {
        /// `stale=true`: the response was right but the nonce is too old, the client
        /// retries without asking the user (RFC 2617 §3.2.1).
        stale: bool,
    },
    /// Wrong password, unknown user or credentials for another realm: answer 403.
    Forbidden(&'static str),
    /// The credentials header does not parse: answer 400.
    BadRequest(&'static str),
}

/// Counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Challenges issued.
    pub challenges: u64,
    /// Successful verifications.
    pub accepted: u64,
    /// Wrong responses or unknown users.
    pub rejected: u64,
    /// Expired nonces (`stale=true`).
    pub stale: u64,
    /// Nonce counts replayed (or not increasing).
    pub replayed: u64,
    /// Nonces with a bad signature (forged or from another key).
    pub forged: u64,
    /// Headers that did not parse.
    pub malformed: u64,
}

/// Issues challenges and verifies credentials. See the module docs.
pub struct Authenticator {
    key: [u8; 32],
    origin: Instant,
    cfg: AuthConfig,
    /// nonce → (issued ms since `origin`, highest nonce-count seen).
    seen: HashMap<String, (u64, u32)>,
    /// Nonces issued at or before this (ms since `origin`) and no longer tracked are
    /// treated as stale.
    forgotten_until: Option<u64>,
    /// Makes nonces issued in the same millisecond distinct.
    counter: u32,
    stats: AuthStats,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tracked", &self.seen.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// A new authenticator signing nonces with `key`; `origin` is the instant nonce
    /// timestamps count from (nonces do not survive a restart with another origin or
    /// key: clients are then challenged again with `stale=true`, transparently).
    #[must_use]
    pub fn new(key: [u8; 32], origin: Instant, cfg: AuthConfig) -> Authenticator {
        Authenticator {
            key,
            origin,
            cfg,
            seen: HashMap::new(),
            forgotten_until: None,
            counter: 0,
            stats: AuthStats::default(),
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> AuthStats {
        self.stats
    }

    /// The challenge header values to put in a 401/407 (named by
    /// [`ChallengeKind::challenge_header`]), one per configured algorithm, most
    /// preferred first (RFC 8760 §2.4).
    pub fn challenge(
        &mut self,
        realm: Realm<'_>,
        _kind: ChallengeKind,
        now: Instant,
        stale: bool,
    ) -> Vec<String> {
        self.stats.challenges += 1;
        self.counter = self.counter.wrapping_add(1);
        let nonce = self.nonce(realm.0, self.ms(now), self.counter);
        self.cfg
            .algorithms
            .iter()
            .map(|a| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    quote_escape(realm.0),
                    a.as_str()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    /// Verifies the request's credentials for `realm`. `lookup` returns the stored
    /// credentials of a user name of this realm (the registrar passes a store read).
    /// Several credential headers may be present (one per realm); the one for `realm`
    /// is used.
    pub fn verify(
        &mut self,
        req: &Message<'_>,
        kind: ChallengeKind,
        realm: Realm<'_>,
        now: Instant,
        lookup: impl FnOnce(&str) -> Option<Credentials>,
    ) -> Verdict {
        let method = req.method().map(|m| m.as_str()).unwrap_or_default();
        let mut found = None;
        for value in req.find(kind.credentials_header()).map(|h| h.value) {
            match DigestCredentials::parse(value) {
                Ok(c) if c.realm == realm.0 => {
                    found = Some(c);
                    break;
                }
                Ok(_) => {}
                Err(DigestParseError::NotDigest) => {}
                Err(_) => {
                    self.stats.malformed += 1;
                    return Verdict::BadRequest("malformed digest credentials");
                }
            }
        }
        let Some(c) = found else {
            return Verdict::Challenge { stale: false };
        };
        self.verify_credentials(&c, method, realm, now, lookup)
    }

    /// [`Authenticator::verify`] on already parsed credentials.
    pub fn verify_credentials(
        &mut self,
        c: &DigestCredentials,
        method: &str,
        realm: Realm<'_>,
        now: Instant,
        lookup: impl FnOnce(&str) -> Option<Credentials>,
    ) -> Verdict {
        let Some(alg) = Algorithm::from_param(c.algorithm.as_deref()) else {
            return Verdict::Challenge { stale: false };
        };
        if !self.cfg.algorithms.contains(&alg) {
            return Verdict::Challenge { stale: false };
        }
        let now_ms = self.ms(now);
        // Nonce: ours, unexpired, and signed for this realm.
        let Some(issued) = self.check_nonce(realm.0, &c.nonce) else {
            self.stats.forged += 1;
            return Verdict::Challenge { stale: false };
        };
        let ttl = u64::try_from(self.cfg.nonce_ttl.as_millis()).unwrap_or(u64::MAX);
        let expired = now_ms.saturating_sub(issued) > ttl || issued > now_ms;
        let qop = match (&c.qop, &c.nc, &c.cnonce) {
            (Some(q), Some(nc), Some(cn)) if q.eq_ignore_ascii_case("auth") => {
                let Ok(n) = u32::from_str_radix(nc, 16) else {
                    self.stats.malformed += 1;
                    return Verdict::BadRequest("malformed nc");
                };
                Some((nc.as_str(), cn.as_str(), q.as_str(), n))
            }
            (None, None, None) => None,
            _ => {
                self.stats.malformed += 1;
                return Verdict::BadRequest("qop needs nc and cnonce; only qop=auth is offered");
            }
        };
        let Some(creds) = lookup(&c.username) else {
            self.stats.rejected += 1;
            return Verdict::Forbidden("unknown user");
        };
        if creds.realm != realm.0 {
            self.stats.rejected += 1;
            return Verdict::Forbidden("credentials of another realm");
        }
        let stored = match alg {
            Algorithm::Md5 => &creds.ha1,
            Algorithm::Sha256 => &creds.ha1_sha256,
        };
        if stored.is_empty() {
            // Old row without a SHA-256 HA1: ask again; the client falls back to MD5.
            return Verdict::Challenge { stale: false };
        }
        let expected = digest_response(
            alg,
            stored,
            &c.nonce,
            qop.map(|(nc, cn, q, _)| (nc, cn, q)),
            method,
            &c.uri,
        );
        if !constant_time_eq(
            expected.as_bytes(),
            c.response.to_ascii_lowercase().as_bytes(),
        ) {
            self.stats.rejected += 1;
            return Verdict::Forbidden("wrong digest response");
        }
        //= https://www.rfc-editor.org/rfc/rfc2617#section-3.2.1
        //# stale ... indicating that the previous request from the client was rejected
        //# because the nonce value was stale. If stale is TRUE (case-insensitive), the
        //# client may wish to simply retry the request with a new encrypted response
        if expired {
            self.stats.stale += 1;
            return Verdict::Challenge { stale: true };
        }
        // Replay protection: the nonce count must grow (no qop: a nonce is single-use).
        let nc = qop.map_or(1, |q| q.3);
        match self.seen.get_mut(&c.nonce) {
            Some((_, last)) if nc <= *last => {
                self.stats.replayed += 1;
                return Verdict::Challenge { stale: true };
            }
            Some((_, last)) => *last = nc,
            None => {
                if self.forgotten_until.is_some_and(|f| issued <= f) {
                    self.stats.stale += 1;
                    return Verdict::Challenge { stale: true };
                }
                self.track(c.nonce.clone(), issued, nc, now_ms);
            }
        }
        self.stats.accepted += 1;
        Verdict::Authenticated {
            user: c.username.clone(),
            algorithm: alg,
        }
    }

    /// Nonces currently tracked for replay protection.
    #[must_use]
    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// `hex(issued_ms) hex(counter) hex(HMAC-SHA256(key, realm ":" issued_ms counter)[..16])`.
    fn nonce(&self, realm: &str, issued: u64, counter: u32) -> String {
        let mut s = format!("{issued:016x}{counter:08x}");
        s.push_str(&hex(&self.sign(realm, issued, counter)));
        s
    }

    fn sign(&self, realm: &str, issued: u64, counter: u32) -> [u8; 16] {
        // HMAC accepts keys of any length: new_from_slice cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(realm.as_bytes());
        mac.update(b":");
        mac.update(&issued.to_be_bytes());
        mac.update(&counter.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The issue time of a nonce we signed for `realm`.
    fn check_nonce(&self, realm: &str, nonce: &str) -> Option<u64> {
        if nonce.len() != 56 || !nonce.is_ascii() {
            return None;
        }
        let issued = u64::from_str_radix(&nonce[..16], 16).ok()?;
        let counter = u32::from_str_radix(&nonce[16..24], 16).ok()?;
        let mac = unhex(&nonce[24..])?;
        constant_time_eq(&mac, &self.sign(realm, issued, counter)).then_some(issued)
    }

    fn track(&mut self, nonce: String, issued: u64, nc: u32, now_ms: u64) {
        if self.seen.len() >= self.cfg.max_tracked_nonces.max(1) {
            let ttl = u64::try_from(self.cfg.nonce_ttl.as_millis()).unwrap_or(u64::MAX);
            self.seen
                .retain(|_, (t, _)| now_ms.saturating_sub(*t) <= ttl);
            if self.seen.len() >= self.cfg.max_tracked_nonces.max(1) {
                // Forget the oldest eighth; nonces issued up to then are now stale.
                let mut times: Vec<u64> = self.seen.values().map(|(t, _)| *t).collect();
                times.sort_unstable();
                let cut = times[(times.len() / 8).min(times.len() - 1)];
                self.seen.retain(|_, (t, _)| *t > cut);
                self.forgotten_until = Some(self.forgotten_until.map_or(cut, |f| f.max(cut)));
            }
        }
        if self.forgotten_until.is_some_and(|f| issued <= f) {
            return;
        }
        self.seen.insert(nonce, (issued, nc));
    }
}

/// The parameters of a `Digest` credentials header (RFC 2617 §3.2.2, RFC 7616 §3.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DigestCredentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri` (digest-uri).
    pub uri: String,
    /// `response` (hex).
    pub response: String,
    /// `algorithm`, if given.
    pub algorithm: Option<String>,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `opaque`.
    pub opaque: Option<String>,
    /// `qop`.
    pub qop: Option<String>,
    /// `nc` (8 hex digits).
    pub nc: Option<String>,
}

/// Why a credentials header did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestParseError {
    /// Another scheme than Digest (RFC 4475 §3.3.7: challenge again).
    #[error("not a Digest credentials header")]
    NotDigest,
    /// Broken `name=value` list or quoting.
    #[error("malformed auth-param list")]
    Syntax,
    /// `username`, `realm`, `nonce`, `uri` or `response` missing.
    #[error("missing mandatory parameter {0}")]
    Missing(&'static str),
}

impl DigestCredentials {
    /// Parses `Digest name=value, name="quoted", …`.
    ///
    /// # Errors
    /// [`DigestParseError`].
    pub fn parse(value: &str) -> Result<DigestCredentials, DigestParseError> {
        let value = value.trim_start_matches([' ', '\t', '\r', '\n']);
        let (scheme, rest) =
            value.split_at(value.find([' ', '\t', '\r', '\n']).unwrap_or(value.len()));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestParseError::NotDigest);
        }
        let mut params = parse_auth_params(rest)?;
        let mut take = |name: &str| {
            params
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| std::mem::take(v))
        };
        let mut need = |name: &'static str| take(name).ok_or(DigestParseError::Missing(name));
        let (username, realm, nonce, uri, response) = (
            need("username")?,
            need("realm")?,
            need("nonce")?,
            need("uri")?,
            need("response")?,
        );
        Ok(DigestCredentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm: take("algorithm"),
            cnonce: take("cnonce"),
            opaque: take("opaque"),
            qop: take("qop"),
            nc: take("nc"),
        })
    }
}

/// Splits `a=b, c="d, e"` into unquoted pairs.
fn parse_auth_params(s: &str) -> Result<Vec<(String, String)>, DigestParseError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    loop {
        while i < b.len() && (ws(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len()
            && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'_' | b'.' | b'*'))
        {
            i += 1;
        }
        let name = &s[start..i];
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        if name.is_empty() || b.get(i) != Some(&b'=') {
            return Err(DigestParseError::Syntax);
        }
        i += 1;
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        let mut v = String::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    b'\\' if i + 1 < b.len() => {
                        v.push(char::from(b[i + 1]));
                        i += 2;
                    }
                    _ => {
                        // Copy one whole UTF-8 character.
                        let ch = s[i..].chars().next().ok_or(DigestParseError::Syntax)?;
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if !closed {
                return Err(DigestParseError::Syntax);
            }
        } else {
            let st = i;
            while i < b.len() && !ws(b[i]) && b[i] != b',' {
                i += 1;
            }
            if st == i {
                return Err(DigestParseError::Syntax);
            }
            v.push_str(&s[st..i]);
        }
        out.push((name.to_owned(), v));
        while i < b.len() && ws(b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            return Err(DigestParseError::Syntax);
        }
    }
}

fn quote_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    //= https://www.rfc-editor.org/rfc/rfc2617#section-3.5
    #[test]
    fn rfc2617_example() {
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let r = digest_response(
            Algorithm::Md5,
            &h,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b", "auth")),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    //= https://www.rfc-editor.org/rfc/rfc7616#section-3.9.1
    #[test]
    fn rfc7616_examples() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, want) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let h = ha1(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
            let r = digest_response(
                alg,
                &h,
                nonce,
                Some(("00000001", cnonce, "auth")),
                "GET",
                "/dir/index.html",
            );
            assert_eq!(r, want, "{alg:?}");
        }
        // The RFC's header parses to the same fields.
        let c = DigestCredentials::parse(
            "Digest username=\"Mufasa\",\r\n realm=\"http-auth@example.org\",\r\n uri=\"/dir/index.html\",\r\n \
             algorithm=SHA-256,\r\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n nc=00000001,\r\n \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\r\n qop=auth,\r\n \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\",\r\n \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(c.cnonce.as_deref(), Some(cnonce));
    }

    fn register(auth_header: &str) -> Vec<u8> {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: c1\r\n\
             CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n{auth_header}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// What a client does with a challenge (RFC 2617 §3.2.2).
    pub(crate) fn answer(
        challenge: &str,
        user: &str,
        pw: &str,
        method: &str,
        uri: &str,
        nc: u32,
    ) -> String {
        let params: HashMap<String, String> =
            parse_auth_params(challenge.trim_start_matches("Digest"))
                .unwrap()
                .into_iter()
                .collect();
        let alg = Algorithm::from_param(params.get("algorithm").map(String::as_str)).unwrap();
        let realm = &params["realm"];
        let nonce = &params["nonce"];
        let ncs = format!("{nc:08x}");
        let r = digest_response(
            alg,
            &ha1(alg, user, realm, pw),
            nonce,
            Some((&ncs, "abc", "auth")),
            method,
            uri,
        );
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{r}\", algorithm={}, qop=auth, nc={ncs}, cnonce=\"abc\"",
            alg.as_str()
        )
    }

    /// Answers `challenge` as alice with `pw` and count `nc`, and verifies at `now`.
    fn try_auth(
        a: &mut Authenticator,
        challenge: &str,
        pw: &str,
        nc: u32,
        now: Instant,
    ) -> Verdict {
        let hdr = format!(
            "Authorization: {}\r\n",
            answer(challenge, "alice", pw, "REGISTER", "sip:example.com", nc)
        );
        let raw = register(&hdr);
        let m = Message::parse(&raw).unwrap();
        a.verify(&m, ChallengeKind::Www, Realm("example.com"), now, alice)
    }

    fn alice(user: &str) -> Option<Credentials> {
        (user == "alice").then(|| credentials("alice", "example.com", "secret"))
    }

    #[test]
    fn challenge_verify_replay_and_expiry() {
        let t0 = crate::test_origin();
        let mut a = Authenticator::new([1; 32], t0, AuthConfig::default());
        let realm = Realm("example.com");
        let ch = a.challenge(realm, ChallengeKind::Www, t0, false);
        assert!(
            ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"),
            "{ch:?}"
        );
        let sec = |n| t0 + Duration::from_secs(n);
        for (i, c) in ch.iter().enumerate() {
            let v = try_auth(&mut a, c, "secret", 1, sec(1));
            assert!(
                matches!(v, Verdict::Authenticated { ref user, .. } if user == "alice") || i == 1,
                "{v:?}"
            );
            // The same nonce-count again is a replay.
            let v = try_auth(&mut a, c, "secret", 1, sec(2));
            assert_eq!(v, Verdict::Challenge { stale: true });
        }
        // MD5 offered in the same challenge shares the nonce: a fresh nc is accepted.
        assert!(matches!(
            try_auth(&mut a, &ch[1], "secret", 2, sec(3)),
            Verdict::Authenticated {
                algorithm: Algorithm::Md5,
                ..
            }
        ));
        // Expired nonce, right password: stale=true.
        assert_eq!(
            try_auth(&mut a, &ch[0], "secret", 9, sec(301)),
            Verdict::Challenge { stale: true }
        );
        // Wrong password: forbidden.
        assert!(matches!(
            try_auth(&mut a, &ch[0], "nope", 10, t0),
            Verdict::Forbidden(_)
        ));
        // A nonce for another realm or forged: a fresh challenge.
        let other = a.challenge(Realm("other.org"), ChallengeKind::Www, t0, false);
        let forged = answer(
            &other[0],
            "alice",
            "secret",
            "REGISTER",
            "sip:example.com",
            1,
        )
        .replace("realm=\"other.org\"", "realm=\"example.com\"");
        let raw = register(&format!("Authorization: {forged}\r\n"));
        let m = Message::parse(&raw).unwrap();
        assert_eq!(
            a.verify(&m, ChallengeKind::Www, realm, t0, alice),
            Verdict::Challenge { stale: false }
        );
        // No credentials, or another scheme (RFC 4475 regaut01): a challenge.
        let raw = register("Authorization: NoOneKnowsThisScheme opaque-data=here\r\n");
        let m = Message::parse(&raw).unwrap();
        assert_eq!(
            a.verify(&m, ChallengeKind::Www, realm, t0, alice),
            Verdict::Challenge { stale: false }
        );
        let raw = register("Authorization: Digest username=\"alice\r\n");
        let m = Message::parse(&raw).unwrap();
        assert!(matches!(
            a.verify(&m, ChallengeKind::Www, realm, t0, alice),
            Verdict::BadRequest(_)
        ));
        assert!(a.stats().replayed >= 2 && a.stats().forged == 1);
    }

    #[test]
    fn replay_table_is_bounded_and_forgotten_nonces_go_stale() {
        let t0 = crate::test_origin();
        let cfg = AuthConfig {
            max_tracked_nonces: 16,
            ..AuthConfig::default()
        };
        let mut a = Authenticator::new([2; 32], t0, cfg);
        let realm = Realm("example.com");
        let mut first = None;
        for i in 0..100u64 {
            let now = t0 + Duration::from_millis(i);
            let ch = a.challenge(realm, ChallengeKind::Www, now, false);
            first.get_or_insert_with(|| ch[0].clone());
            assert!(matches!(
                try_auth(&mut a, &ch[0], "secret", 1, now),
                Verdict::Authenticated { .. }
            ));
            assert!(a.tracked_nonces() <= 16);
        }
        // The first nonce was forgotten: even a "new" count is answered stale.
        assert_eq!(
            try_auth(
                &mut a,
                first.as_ref().unwrap(),
                "secret",
                5,
                t0 + Duration::from_millis(200)
            ),
            Verdict::Challenge { stale: true }
        );
    }

    proptest::proptest! {
        #[test]
        fn digest_header_parser_never_panics(s in "\\PC{0,200}") {
            let _ = DigestCredentials::parse(&s);
            let _ = DigestCredentials::parse(&format!("Digest {s}"));
        }

        #[test]
        fn digest_header_round_trips(user in "[a-zA-Z0-9 ,=\"\\\\]{1,20}", uri in "sip:[a-z0-9.@]{1,20}", nc in 0u32..) {
            let hdr = format!(
                "Digest username=\"{}\",realm=\"r\" , nonce=\"n\",uri=\"{uri}\",response=\"00\",nc={nc:08x}",
                quote_escape(&user)
            );
            let c = DigestCredentials::parse(&hdr).unwrap();
            proptest::prop_assert_eq!(c.username, user);
            proptest::prop_assert_eq!(c.uri, uri);
            proptest::prop_assert_eq!(c.nc, Some(format!("{nc:08x}")));
        }
    }
}
