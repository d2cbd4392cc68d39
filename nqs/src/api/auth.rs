//! Bearer tokens and their scopes. A token is
//! `vxp1.<hex(JSON claims)>.<hex(HMAC-SHA256(secret, "vxp1." + hex claims))>`:
//! self-contained (no token table), signed with the service's secret, so
//! `voxplane token create` can mint one offline from the same data dir.
//! Share links carry an expiry (Unix seconds) checked against the `now`
//! the caller passes in.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token may see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Calls whose Request-URI, From or To host is one of these domains.
    Reseller {
        /// Lowercase domains.
        domains: Vec<String>,
    },
    /// One call (and its pcap and audio), until `expires`.
    Share {
        /// The call's SIP Call-ID.
        call_id: String,
        /// Expiry, Unix seconds.
        expires: u64,
    },
}

impl Scope {
    /// Whether this scope may see a call with these domains and Call-ID.
    pub fn allows(&self, call_id: &str, domains: &[&str]) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Reseller { domains: mine } => domains
                .iter()
                .any(|d| !d.is_empty() && mine.iter().any(|m| m.eq_ignore_ascii_case(d))),
            Scope::Share { call_id: id, .. } => id == call_id,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Not of the `vxp1.<claims>.<mac>` form, or the claims do not decode.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match this service's secret.
    #[error("bad token signature")]
    BadSignature,
    /// A share link past its expiry.
    #[error("token expired")]
    Expired,
}

/// The secret tokens are signed with.
#[derive(Clone)]
pub struct Keyring {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(..)")
    }
}

const PREFIX: &str = "vxp1.";

impl Keyring {
    /// A keyring over `secret` (at least 32 random bytes in production).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    /// A signed token for `scope`.
    pub fn issue(&self, scope: &Scope) -> String {
        // Serialising a plain enum of strings and integers cannot fail.
        let claims = hex(&serde_json::to_vec(scope).unwrap_or_default());
        let signed = format!("{PREFIX}{claims}");
        let mac = hex(&self.mac(signed.as_bytes()).finalize().into_bytes());
        format!("{signed}.{mac}")
    }

    /// The scope of a token, checked at `now` (Unix seconds).
    ///
    /// # Errors
    ///
    /// [`AuthError`] when the token is malformed, not ours, or expired.
    pub fn verify(&self, token: &str, now: u64) -> Result<Scope, AuthError> {
        let (signed, mac) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let claims = signed.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
        let mac = unhex(mac).ok_or(AuthError::Malformed)?;
        self.mac(signed.as_bytes())
            .verify_slice(&mac)
            .map_err(|_| AuthError::BadSignature)?;
        let claims = unhex(claims).ok_or(AuthError::Malformed)?;
        let scope: Scope = serde_json::from_slice(&claims).map_err(|_| AuthError::Malformed)?;
        if let Scope::Share { expires, .. } = &scope
            && now >= *expires
        {
            return Err(AuthError::Expired);
        }
        Ok(scope)
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(data);
        mac
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 8192 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_and_refusals() {
        let k = Keyring::new(b"0123456789abcdef0123456789abcdef");
        let admin = k.issue(&Scope::Admin);
        assert_eq!(k.verify(&admin, 0), Ok(Scope::Admin));
        let r = Scope::Reseller {
            domains: vec!["beta.example".into()],
        };
        assert_eq!(k.verify(&k.issue(&r), 0), Ok(r));
        let share = k.issue(&Scope::Share {
            call_id: "c1".into(),
            expires: 100,
        });
        assert!(k.verify(&share, 99).is_ok());
        assert_eq!(k.verify(&share, 100), Err(AuthError::Expired));
        // Another service's secret, a flipped claim, garbage.
        let other = Keyring::new(b"another secret of thirty-two b!!");
        assert_eq!(other.verify(&admin, 0), Err(AuthError::BadSignature));
        let (claims, mac) = share.rsplit_once('.').unwrap();
        let forged_claims = hex(br#"{"scope":"share","call_id":"c1","expires":999999}"#);
        let forged = format!("vxp1.{forged_claims}.{mac}");
        assert_eq!(k.verify(&forged, 0), Err(AuthError::BadSignature));
        assert!(claims.starts_with("vxp1."));
        for bad in ["", "vxp1.", "vxp1.zz.zz", "abc.def", "vxp1.00.0"] {
            assert!(k.verify(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_allow() {
        let r = Scope::Reseller {
            domains: vec!["beta.example".into()],
        };
        assert!(r.allows("x", &["alpha.example", "BETA.example"]));
        assert!(!r.allows("x", &["alpha.example", ""]));
        let s = Scope::Share {
            call_id: "c1".into(),
            expires: 1,
        };
        assert!(s.allows("c1", &[]) && !s.allows("c2", &["beta.example"]));
        assert!(Scope::Admin.allows("any", &[]));
    }
}
