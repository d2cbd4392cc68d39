//! What the B2BUA asks of provisioning: which domains and users exist
//! (with their digest credentials), each domain's dialplan, and the trunks.
//! [`StorePolicy`] reads the SBUS store through a hot-reloading
//! [`provision::Snapshot`]; [`StaticPolicy`] is an in-memory one for tests
//! and embedded use.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use sbus::record::{Credentials, Trunk};

use crate::dialplan::{Cidr, Dialplan};
use crate::provision::{self, Provisioning, Snapshot};
use crate::registrar::Directory;

/// Provisioning as the B2BUA sees it.
pub trait Policy: Directory + Send {
    /// The dialplan of `domain` (or the default one).
    fn dialplan(&self, domain: &str) -> Arc<Dialplan>;
    /// The trunk trusted for requests from `ip`, if any.
    fn trunk_by_ip(&self, ip: IpAddr) -> Option<Trunk>;
    /// The trunk called `name`.
    fn trunk(&self, name: &str) -> Option<Trunk>;
    /// Picks up changes (called by the driver between inputs; cheap when
    /// nothing changed).
    fn reload(&mut self) {}
}

/// The SBUS store, through a hot-reloading snapshot.
#[derive(Debug)]
pub struct StorePolicy {
    provisioning: Provisioning,
    snapshot: Snapshot,
}

impl StorePolicy {
    /// Loads the snapshot.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn new(provisioning: Provisioning) -> Result<StorePolicy, provision::Error> {
        let snapshot = Snapshot::load(&provisioning)?;
        Ok(StorePolicy {
            provisioning,
            snapshot,
        })
    }
}

impl Directory for StorePolicy {
    fn serves(&self, domain: &str) -> bool {
        self.snapshot.serves(domain)
    }

    fn credentials(&self, domain: &str, user: &str) -> Option<Credentials> {
        self.snapshot.credentials(domain, user)
    }
}

impl Policy for StorePolicy {
    fn dialplan(&self, domain: &str) -> Arc<Dialplan> {
        self.snapshot.dialplan(domain)
    }

    fn trunk_by_ip(&self, ip: IpAddr) -> Option<Trunk> {
        self.snapshot.trunk_by_ip(ip).cloned()
    }

    fn trunk(&self, name: &str) -> Option<Trunk> {
        self.snapshot.trunk(name).cloned()
    }

    fn reload(&mut self) {
        if let Err(e) = self.snapshot.poll_reload(&self.provisioning) {
            tracing::warn!(error = %e, "provisioning reload failed; keeping the previous snapshot");
        }
    }
}

/// An in-memory policy.
#[derive(Debug, Default)]
pub struct StaticPolicy {
    domains: HashSet<String>,
    users: HashMap<(String, String), Credentials>,
    dialplans: HashMap<String, Arc<Dialplan>>,
    trunks: Vec<Trunk>,
}

impl StaticPolicy {
    /// Adds a user (and its domain) with this password.
    pub fn user(mut self, user: &str, domain: &str, password: &str) -> Self {
        self.domains.insert(domain.to_owned());
        self.users.insert(
            (domain.to_owned(), user.to_owned()),
            crate::auth::credentials(user, domain, password),
        );
        self
    }

    /// Sets a domain's dialplan.
    pub fn dialplan(mut self, domain: &str, plan: Dialplan) -> Self {
        self.dialplans.insert(domain.to_owned(), Arc::new(plan));
        self
    }

    /// Adds a trunk.
    pub fn trunk(mut self, trunk: Trunk) -> Self {
        self.trunks.push(trunk);
        self
    }
}

impl Directory for StaticPolicy {
    fn serves(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    fn credentials(&self, domain: &str, user: &str) -> Option<Credentials> {
        self.users
            .get(&(domain.to_owned(), user.to_owned()))
            .cloned()
    }
}

impl Policy for StaticPolicy {
    fn dialplan(&self, domain: &str) -> Arc<Dialplan> {
        self.dialplans
            .get(domain)
            .cloned()
            .unwrap_or_else(|| Arc::new(Dialplan::empty()))
    }

    fn trunk_by_ip(&self, ip: IpAddr) -> Option<Trunk> {
        self.trunks
            .iter()
            .find(|t| {
                t.allow_ips
                    .iter()
                    .filter_map(|c| c.parse::<Cidr>().ok())
                    .any(|c| c.contains(ip))
            })
            .cloned()
    }

    fn trunk(&self, name: &str) -> Option<Trunk> {
        self.trunks.iter().find(|t| t.name == name).cloned()
    }
}
