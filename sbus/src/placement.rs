//! Data sovereignty: which domain a change belongs to, and whether a member of a region
//! may hold it.
//!
//! A change belongs to a domain when its table is per-domain (subscribers, dialplans,
//! routing rules, greetings, voicemails: the key's first `/`-separated part) or when it
//! is a CDR (its `domain` field). Domain rows and global tables (trunks) belong to no
//! domain and go everywhere, as does the data of a domain with no row. The placement of a
//! domain is the `placement` of its row in [`Table::Domains`]
//! ([`crate::record::Placement`]).

use serde::Deserialize;

use crate::record::Placement;
use crate::types::{Op, Table};

/// The domain a change belongs to, or `None` for data that goes everywhere.
#[must_use]
pub fn domain_of(op: &Op) -> Option<String> {
    match op {
        Op::Put { table, key, .. }
        | Op::Delete { table, key }
        | Op::BlobChunk { table, key, .. } => domain_of_key(*table, key).map(str::to_owned),
        Op::AppendCdr { record } => cdr_domain(record),
        Op::Placeholder { domain } => Some(domain.clone()),
    }
}

/// The domain of a row key of `table`, or `None` for a global table.
#[must_use]
pub fn domain_of_key(table: Table, key: &str) -> Option<&str> {
    match table {
        Table::Domains | Table::Trunks => None,
        Table::Subscribers
        | Table::Dialplans
        | Table::RoutingRules
        | Table::Greetings
        | Table::Voicemails => key.split('/').next().filter(|d| !d.is_empty()),
    }
}

/// The `domain` field of an encoded CDR (`None` if absent, empty or not a JSON object).
#[must_use]
pub fn cdr_domain(record: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        domain: String,
    }
    serde_json::from_slice::<Only>(record)
        .ok()
        .map(|o| o.domain)
        .filter(|d| !d.is_empty())
}

/// The placement in an encoded domain row (`Global` if it cannot be read).
#[must_use]
pub fn placement_of(domain_row: &[u8]) -> Placement {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        placement: Placement,
    }
    serde_json::from_slice::<Only>(domain_row)
        .map(|o| o.placement)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_come_from_keys_and_cdrs() {
        let put = |table, key: &str| Op::Put {
            table,
            key: key.into(),
            value: vec![],
        };
        assert_eq!(
            domain_of(&put(Table::Subscribers, "eu.example/alice")).as_deref(),
            Some("eu.example")
        );
        assert_eq!(domain_of(&put(Table::Trunks, "t1")), None);
        assert_eq!(domain_of(&put(Table::Domains, "eu.example")), None);
        assert_eq!(domain_of(&put(Table::Voicemails, "/x")), None);
        let cdr = Op::AppendCdr {
            record: br#"{"call_id":"c","domain":"eu.example"}"#.to_vec(),
        };
        assert_eq!(domain_of(&cdr).as_deref(), Some("eu.example"));
        let junk = Op::AppendCdr {
            record: b"\xff".to_vec(),
        };
        assert_eq!(domain_of(&junk), None);
    }

    #[test]
    fn placement_decodes_and_allows_regions() {
        let p = placement_of(br#"{"name":"d","placement":{"Regions":["eu-west"]}}"#);
        assert!(p.allows(Some("eu-west")));
        assert!(!p.allows(Some("us-east")));
        assert!(!p.allows(None));
        assert_eq!(placement_of(b"garbage"), Placement::Global);
        assert!(Placement::Global.allows(None));
    }
}
