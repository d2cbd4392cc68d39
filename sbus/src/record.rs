//! Typed tables: the records `control`, `nqs` and `mis` read and write through
//! [`crate::store::Store`].
//!
//! Values are stored as JSON so that a record type can grow a field (with
//! `#[serde(default)]`) while older members still run: a cluster upgrades one member at
//! a time. Keys are built from the record by [`Record::key`]; keys of per-domain records
//! start with `domain/`, so `list("example.com/")` lists a domain's rows.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::types::Table;

/// A row type of a last-writer-wins table.
pub trait Record: Serialize + DeserializeOwned {
    /// Its table.
    const TABLE: Table;
    /// Its key.
    fn key(&self) -> String;
}

/// Where a domain's data may live (data sovereignty). Stored and replicated with the
/// domain; enforcement at sender and receiver is not built yet (see `docs/sbus.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Placement {
    /// Everywhere.
    #[default]
    Global,
    /// Only members in these regions.
    Regions(Vec<String>),
}

/// A SIP domain (a tenant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Domain name, e.g. `example.com`.
    pub name: String,
    /// Placement policy of its data.
    #[serde(default)]
    pub placement: Placement,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

impl Record for Domain {
    const TABLE: Table = Table::Domains;
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// SIP digest credentials, stored as `HA1` only, never the password.
///
/// RFC 2617 §3.2.2.2: `A1 = unq(username-value) ":" unq(realm-value) ":" passwd`, and the
/// server needs only `H(A1)` to verify a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Digest realm.
    pub realm: String,
    /// Lower-case hex `MD5(user ":" realm ":" password)`.
    pub ha1: String,
    /// Lower-case hex `SHA-256(user ":" realm ":" password)` (RFC 7616/8760); empty for
    /// rows written before SHA-256 digest support, which then verify with MD5 only.
    #[serde(default)]
    pub ha1_sha256: String,
}

/// A subscriber (a SIP user of a domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriber {
    /// Domain.
    pub domain: String,
    /// User part.
    pub user: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Digest credentials.
    pub credentials: Credentials,
    /// Whether unanswered calls go to voicemail.
    #[serde(default)]
    pub voicemail: bool,
}

impl Subscriber {
    /// The key of `user@domain`.
    #[must_use]
    pub fn key_of(domain: &str, user: &str) -> String {
        format!("{domain}/{user}")
    }
}

impl Record for Subscriber {
    const TABLE: Table = Table::Subscribers;
    fn key(&self) -> String {
        Subscriber::key_of(&self.domain, &self.user)
    }
}

/// One entry of a dialplan: a pattern on the dialled number and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialplanEntry {
    /// Pattern on the request-URI user part (syntax defined by `control`).
    pub pattern: String,
    /// Action (syntax defined by `control`).
    pub action: String,
}

/// A named dialplan of a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialplan {
    /// Domain.
    pub domain: String,
    /// Name.
    pub name: String,
    /// Entries, tried in order.
    pub entries: Vec<DialplanEntry>,
    /// The whole dialplan document in the text format `control` defines
    /// (`docs/dialplan.md`); `entries` then summarise its rules.
    #[serde(default)]
    pub text: String,
}

impl Record for Dialplan {
    const TABLE: Table = Table::Dialplans;
    fn key(&self) -> String {
        format!("{}/{}", self.domain, self.name)
    }
}

/// An outbound routing rule of a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    /// Domain.
    pub domain: String,
    /// Name.
    pub name: String,
    /// Lower is tried first.
    pub priority: u32,
    /// Number prefix it matches.
    pub prefix: String,
    /// Trunk name.
    pub trunk: String,
}

impl Record for RoutingRule {
    const TABLE: Table = Table::RoutingRules;
    fn key(&self) -> String {
        format!("{}/{}", self.domain, self.name)
    }
}

/// A SIP trunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trunk {
    /// Name.
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// Source addresses/networks trusted as this trunk (CIDR or bare address, e.g.
    /// `192.0.2.0/24`): requests from them are accepted without digest authentication.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Digest credentials, for a trunk that authenticates instead of (or as well as)
    /// by source address.
    #[serde(default)]
    pub auth: Option<TrunkAuth>,
    /// Allowed codecs in order of preference (SDP encoding names such as `PCMU`);
    /// empty allows all.
    #[serde(default)]
    pub codecs: Vec<String>,
    /// Interval between OPTIONS health checks, in seconds; 0 disables them.
    #[serde(default)]
    pub options_ping_s: u32,
}

/// Digest credentials of a trunk: the user name and password we send when the peer
/// challenges us, and the ones we expect when the peer registers or calls in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkAuth {
    /// Digest user name.
    pub username: String,
    /// Password (needed in clear to answer the peer's challenges).
    pub password: String,
}

impl Record for Trunk {
    const TABLE: Table = Table::Trunks;
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// A call detail record (append-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    /// SIP Call-ID.
    pub call_id: String,
    /// Domain.
    pub domain: String,
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// Start (ms since the Unix epoch).
    pub start_ms: u64,
    /// Answer time (ms since the Unix epoch), if answered.
    pub answer_ms: Option<u64>,
    /// End (ms since the Unix epoch).
    pub end_ms: u64,
    /// Final SIP status code.
    pub status: u16,
    /// Why the call ended (`caller-bye`, `callee-bye`, `cancel`, `rejected`, `timeout`…).
    #[serde(default)]
    pub disconnect_cause: String,
    /// The call's legs with their media statistics.
    #[serde(default)]
    pub legs: Vec<CdrLeg>,
}

/// One leg of a call in a CDR, with the dataplane's media statistics for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrLeg {
    /// `caller` or `callee` (or a trunk/contact name).
    pub role: String,
    /// The remote party's address (SIP URI or `ip:port`).
    pub peer: String,
    /// Negotiated codec (SDP encoding name, e.g. `PCMU`).
    #[serde(default)]
    pub codec: String,
    /// RTP packets relayed from this leg.
    #[serde(default)]
    pub packets: u64,
    /// RTP bytes relayed from this leg.
    #[serde(default)]
    pub bytes: u64,
    /// Packets the dataplane dropped from this leg.
    #[serde(default)]
    pub drops: u64,
    /// Packets lost upstream of the dataplane (RFC 3550 cumulative loss).
    #[serde(default)]
    pub lost: u64,
}

/// The blob tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobTable {
    /// Greetings, keyed `domain/user/name`.
    Greetings,
    /// Voicemails, keyed `domain/user/id`.
    Voicemails,
}

impl BlobTable {
    /// The row table.
    #[must_use]
    pub fn table(self) -> Table {
        match self {
            BlobTable::Greetings => Table::Greetings,
            BlobTable::Voicemails => Table::Voicemails,
        }
    }
}

/// Encodes a record value.
#[must_use]
pub fn encode<R: Serialize>(r: &R) -> Vec<u8> {
    // Our record types have string map keys only; serialization cannot fail.
    serde_json::to_vec(r).unwrap_or_default()
}

/// Decodes a record value.
///
/// # Errors
/// The bytes are not this record type.
pub fn decode<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_rows_by_domain() {
        let s = Subscriber {
            domain: "example.com".into(),
            user: "alice".into(),
            display_name: String::new(),
            credentials: Credentials {
                realm: "example.com".into(),
                ha1: "0".repeat(32),
                ha1_sha256: String::new(),
            },
            voicemail: false,
        };
        assert_eq!(s.key(), "example.com/alice");
        let back: Subscriber = decode(&encode(&s)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn older_values_without_new_fields_still_decode() {
        let d: Domain = decode(br#"{"name":"example.com"}"#).unwrap();
        assert_eq!(d.placement, Placement::Global);
        assert!(decode::<Domain>(b"{}").is_err());
    }
}
