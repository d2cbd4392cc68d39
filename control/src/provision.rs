//! Typed provisioning on the SBUS store: domains, subscribers (stored as HA1s only),
//! trunks (IP-list and/or digest authentication, codecs, OPTIONS interval) and
//! dialplans (validated before they are stored), plus a [`Snapshot`] of what the call
//! path reads, kept current through [`Store::subscribe`] (hot reload, including
//! changes replicated from other members).
//!
//! ```
//! use control::provision::{Provisioning, Snapshot};
//! let dir = tempfile::tempdir().unwrap();
//! let store = std::sync::Arc::new(sbus::store::Store::open(dir.path(), sbus::types::MemberId(1)).unwrap());
//! let prov = Provisioning::new(store.clone());
//! prov.add_domain("example.com", sbus::record::Placement::Global).unwrap();
//! prov.add_user("alice@example.com", "secret", "Alice").unwrap();
//! let mut snap = Snapshot::load(&prov).unwrap();
//! prov.load_dialplan("example.com", "[[rule]]\nto_prefix = \"1\"\nring = \"alice\"\n").unwrap();
//! assert!(snap.poll_reload(&prov).unwrap()); // the driver calls this in its loop
//! assert_eq!(snap.dialplan("example.com").len(), 1);
//! ```

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use sbus::record::{
    Credentials, Dialplan as DialplanRow, DialplanEntry, Domain, Placement, Subscriber, Trunk,
};
use sbus::store::{Notice, Store};
use sbus::types::Table;

use crate::auth;
use crate::dialplan::{Cidr, Dialplan, ParseError};
use crate::registrar::Directory;

/// The name under which a domain's dialplan is stored.
pub const DIALPLAN_NAME: &str = "default";

/// The pseudo-domain of the dialplan used by domains that have none.
pub const ANY_DOMAIN: &str = "*";

/// Provisioning failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sbus::store::Error),
    /// Bad input (an AOR without `@`, an unknown domain, a bad address range…).
    #[error("{0}")]
    Invalid(String),
    /// A dialplan that does not parse.
    #[error(transparent)]
    Dialplan(#[from] ParseError),
}

/// Typed reads and writes on a store.
#[derive(Clone, Debug)]
pub struct Provisioning {
    store: Arc<Store>,
}

impl Provisioning {
    /// Provisioning on `store`.
    #[must_use]
    pub fn new(store: Arc<Store>) -> Provisioning {
        Provisioning { store }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Adds or replaces a domain.
    ///
    /// # Errors
    /// An empty name, or the store failed.
    pub fn add_domain(&self, name: &str, placement: Placement) -> Result<(), Error> {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(['/', '@', ' ']) {
            return Err(Error::Invalid(format!("bad domain name {name:?}")));
        }
        self.store.put(&Domain {
            name,
            placement,
            description: String::new(),
        })?;
        Ok(())
    }

    /// All domains.
    ///
    /// # Errors
    /// The store failed.
    pub fn domains(&self) -> Result<Vec<Domain>, Error> {
        Ok(self.store.list("")?)
    }

    /// Adds or replaces the subscriber `user@domain` (the domain must exist); stores
    /// the MD5 and SHA-256 HA1s with realm = domain, never the password.
    ///
    /// # Errors
    /// A malformed AOR, an unknown domain, or the store failed.
    pub fn add_user(
        &self,
        aor: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Subscriber, Error> {
        let aor = aor.trim().trim_start_matches("sip:");
        let (user, domain) = aor
            .split_once('@')
            .filter(|(u, d)| !u.is_empty() && !d.is_empty())
            .ok_or_else(|| Error::Invalid(format!("{aor:?} is not user@domain")))?;
        let domain = domain.to_ascii_lowercase();
        if self.store.get::<Domain>(&domain)?.is_none() {
            return Err(Error::Invalid(format!(
                "unknown domain {domain}; add it first"
            )));
        }
        let s = Subscriber {
            domain: domain.clone(),
            user: user.to_owned(),
            display_name: display_name.to_owned(),
            credentials: auth::credentials(user, &domain, password),
            voicemail: false,
        };
        self.store.put(&s)?;
        Ok(s)
    }

    /// The subscribers of `domain`, or of every domain.
    ///
    /// # Errors
    /// The store failed.
    pub fn users(&self, domain: Option<&str>) -> Result<Vec<Subscriber>, Error> {
        let prefix = domain.map_or(String::new(), |d| format!("{}/", d.to_ascii_lowercase()));
        Ok(self.store.list(&prefix)?)
    }

    /// One subscriber.
    ///
    /// # Errors
    /// The store failed.
    pub fn user(&self, domain: &str, user: &str) -> Result<Option<Subscriber>, Error> {
        Ok(self.store.get(&Subscriber::key_of(domain, user))?)
    }

    /// Adds or replaces a trunk after checking its address ranges.
    ///
    /// # Errors
    /// A bad address range or transport, or the store failed.
    pub fn add_trunk(&self, trunk: &Trunk) -> Result<(), Error> {
        for c in &trunk.allow_ips {
            c.parse::<Cidr>()
                .map_err(|e| Error::Invalid(format!("trunk {}: {e}", trunk.name)))?;
        }
        if !["udp", "tcp", "tls"].contains(&trunk.transport.as_str()) {
            return Err(Error::Invalid(format!(
                "transport {:?}: udp, tcp or tls",
                trunk.transport
            )));
        }
        self.store.put(trunk)?;
        Ok(())
    }

    /// All trunks.
    ///
    /// # Errors
    /// The store failed.
    pub fn trunks(&self) -> Result<Vec<Trunk>, Error> {
        Ok(self.store.list("")?)
    }

    /// Validates and stores the dialplan of `domain` ([`ANY_DOMAIN`] for the default).
    ///
    /// # Errors
    /// The text does not parse (with its line), or the store failed.
    pub fn load_dialplan(&self, domain: &str, text: &str) -> Result<Dialplan, Error> {
        let plan = Dialplan::parse(text)?;
        let entries = plan
            .summary()
            .into_iter()
            .map(|(pattern, action)| DialplanEntry { pattern, action })
            .collect();
        self.store.put(&DialplanRow {
            domain: domain.to_ascii_lowercase(),
            name: DIALPLAN_NAME.into(),
            entries,
            text: text.to_owned(),
        })?;
        Ok(plan)
    }

    /// The stored dialplan of `domain`, falling back to the [`ANY_DOMAIN`] one, or an
    /// empty plan.
    ///
    /// # Errors
    /// The store failed, or a stored plan no longer parses.
    pub fn dialplan(&self, domain: &str) -> Result<Dialplan, Error> {
        for d in [domain.to_ascii_lowercase().as_str(), ANY_DOMAIN] {
            if let Some(row) = self
                .store
                .get::<DialplanRow>(&format!("{d}/{DIALPLAN_NAME}"))?
            {
                return Ok(Dialplan::parse(&row.text)?);
            }
        }
        Ok(Dialplan::empty())
    }
}

/// What the call path reads, compiled: domains, credentials, trunks with parsed
/// address ranges, and parsed dialplans; reloaded on store changes.
#[derive(Debug)]
pub struct Snapshot {
    changes: Receiver<Notice>,
    domains: HashSet<String>,
    users: HashMap<(String, String), Credentials>,
    trunks: Vec<(Trunk, Vec<Cidr>)>,
    dialplans: HashMap<String, Arc<Dialplan>>,
    empty: Arc<Dialplan>,
}

impl Snapshot {
    /// Subscribes to changes, then loads everything.
    ///
    /// # Errors
    /// The store failed.
    pub fn load(p: &Provisioning) -> Result<Snapshot, Error> {
        let changes = p.store.subscribe(&[
            Table::Domains,
            Table::Subscribers,
            Table::Trunks,
            Table::Dialplans,
        ]);
        let mut s = Snapshot {
            changes,
            domains: HashSet::new(),
            users: HashMap::new(),
            trunks: Vec::new(),
            dialplans: HashMap::new(),
            empty: Arc::new(Dialplan::empty()),
        };
        s.reload(p)?;
        Ok(s)
    }

    /// Applies pending store changes; true if any. Call it from the driver loop (the
    /// change channel is an `mpsc` receiver: a driver may also block on it in a thread).
    ///
    /// # Errors
    /// The store failed; the snapshot keeps its previous content.
    pub fn poll_reload(&mut self, p: &Provisioning) -> Result<bool, Error> {
        let pending: Vec<Notice> = self.changes.try_iter().collect();
        if pending.is_empty() {
            return Ok(false);
        }
        self.reload(p)?;
        Ok(true)
    }

    fn reload(&mut self, p: &Provisioning) -> Result<(), Error> {
        let domains = p.domains()?.into_iter().map(|d| d.name).collect();
        let users = p
            .users(None)?
            .into_iter()
            .map(|s| ((s.domain, s.user), s.credentials))
            .collect();
        let trunks = p
            .trunks()?
            .into_iter()
            .map(|t| {
                let cidrs = t.allow_ips.iter().filter_map(|c| c.parse().ok()).collect();
                (t, cidrs)
            })
            .collect();
        let mut dialplans = HashMap::new();
        for row in p.store.list::<DialplanRow>("")? {
            // A plan that no longer parses (written by a newer member?) is skipped:
            // its domain falls back to the default plan.
            if let Ok(plan) = Dialplan::parse(&row.text) {
                dialplans.insert(row.domain, Arc::new(plan));
            }
        }
        self.domains = domains;
        self.users = users;
        self.trunks = trunks;
        self.dialplans = dialplans;
        Ok(())
    }

    /// The dialplan of `domain` (or the default one, or an empty one).
    #[must_use]
    pub fn dialplan(&self, domain: &str) -> Arc<Dialplan> {
        self.dialplans
            .get(domain)
            .or_else(|| self.dialplans.get(ANY_DOMAIN))
            .unwrap_or(&self.empty)
            .clone()
    }

    /// The trunk whose address list contains `ip` (IP authentication).
    #[must_use]
    pub fn trunk_by_ip(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trunks
            .iter()
            .find(|(_, cidrs)| cidrs.iter().any(|c| c.contains(ip)))
            .map(|(t, _)| t)
    }

    /// A trunk by name.
    #[must_use]
    pub fn trunk(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().map(|(t, _)| t).find(|t| t.name == name)
    }
}

impl Directory for Snapshot {
    fn serves(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }
    fn credentials(&self, domain: &str, user: &str) -> Option<Credentials> {
        self.users
            .get(&(domain.to_owned(), user.to_owned()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbus::types::MemberId;

    #[test]
    fn provision_and_hot_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), MemberId(1)).unwrap());
        let p = Provisioning::new(store);
        assert!(p.add_user("alice@example.com", "pw", "").is_err()); // no domain yet
        p.add_domain("Example.com", Placement::Global).unwrap();
        let s = p.add_user("alice@example.com", "pw", "Alice").unwrap();
        assert_eq!(
            s.credentials.ha1,
            auth::ha1(auth::Algorithm::Md5, "alice", "example.com", "pw")
        );
        assert_eq!(s.credentials.ha1_sha256.len(), 64);
        let mut snap = Snapshot::load(&p).unwrap();
        assert!(snap.serves("example.com") && snap.credentials("example.com", "alice").is_some());
        assert!(!snap.poll_reload(&p).unwrap());
        p.add_trunk(&Trunk {
            name: "carrier1".into(),
            host: "192.0.2.10".into(),
            port: 5060,
            transport: "udp".into(),
            allow_ips: vec!["192.0.2.0/28".into()],
            auth: None,
            codecs: vec!["PCMA".into()],
            options_ping_s: 30,
        })
        .unwrap();
        let bad = Trunk {
            allow_ips: vec!["192.0.2.0/99".into()],
            ..snap
                .trunk("x")
                .cloned()
                .unwrap_or_else(|| p.trunks().unwrap()[0].clone())
        };
        assert!(p.add_trunk(&bad).is_err());
        assert!(
            p.load_dialplan("example.com", "[[rule]]\nring = 1\n")
                .is_err()
        );
        p.load_dialplan(ANY_DOMAIN, "[[rule]]\nreject = 404\n")
            .unwrap();
        assert!(snap.poll_reload(&p).unwrap());
        assert_eq!(
            snap.trunk_by_ip("192.0.2.3".parse().unwrap())
                .map(|t| t.name.as_str()),
            Some("carrier1")
        );
        assert!(snap.trunk_by_ip("192.0.2.30".parse().unwrap()).is_none());
        assert_eq!(snap.dialplan("example.com").len(), 1); // the default plan
        p.load_dialplan(
            "example.com",
            "[[rule]]\nring = \"alice\"\n[[rule]]\nring = \"bob\"\n",
        )
        .unwrap();
        assert!(snap.poll_reload(&p).unwrap());
        assert_eq!(snap.dialplan("example.com").len(), 2);
        assert_eq!(p.dialplan("example.com").unwrap().len(), 2);
    }
}
