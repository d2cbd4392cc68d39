//! Cluster certificates: one CA per cluster, one certificate per member, signed by it
//! (`voxplane cert ca|member`). Every member certificate names [`CLUSTER_NAME`] (the
//! name links verify) and `m<ID>.` + [`CLUSTER_NAME`] (its member id).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::types::MemberId;

/// The DNS name every member certificate carries and every link verifies.
pub const CLUSTER_NAME: &str = "sbus.voxplane";

/// Certificate generation failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused (bad key file, unsupported algorithm…).
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM.
    pub key_pem: String,
}

fn ca_params() -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Voxplane SBUS cluster CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Creates a new cluster CA (ECDSA P-256).
///
/// # Errors
/// Key generation or signing failed.
pub fn generate_ca() -> Result<Pair, CertError> {
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Creates a member certificate signed by the CA whose key is `ca_key_pem` (the CA's
/// name is fixed, so its key is all that is needed to sign).
///
/// # Errors
/// The CA key does not parse, or signing failed.
pub fn generate_member(ca_key_pem: &str, member: MemberId) -> Result<Pair, CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut p = CertificateParams::new(vec![
        CLUSTER_NAME.to_owned(),
        format!("m{}.{CLUSTER_NAME}", member.0),
    ])?;
    p.distinguished_name.push(
        DnType::CommonName,
        format!("Voxplane SBUS member {}", member.0),
    );
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The member id named in a member certificate (DER), found as the `m<ID>.sbus.voxplane`
/// DNS name. A plain byte search: DNS names are stored verbatim (IA5String) in DER.
#[must_use]
pub fn member_of(cert_der: &[u8]) -> Option<MemberId> {
    let suffix = format!(".{CLUSTER_NAME}");
    let s = suffix.as_bytes();
    let mut i = 0;
    while i + s.len() <= cert_der.len() {
        if &cert_der[i..i + s.len()] == s {
            let digits = cert_der[..i]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let start = i - digits;
            if digits > 0 && start > 0 && cert_der[start - 1] == b'm' {
                let text = std::str::from_utf8(&cert_der[start..i]).ok()?;
                return text.parse().ok().map(MemberId);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    #[test]
    fn member_certificates_carry_their_id() {
        let ca = generate_ca().unwrap();
        let m = generate_member(&ca.key_pem, MemberId(42)).unwrap();
        let der = CertificateDer::from_pem_slice(m.cert_pem.as_bytes()).unwrap();
        assert_eq!(member_of(&der), Some(MemberId(42)));
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        assert_eq!(member_of(&ca_der), None);
    }
}
