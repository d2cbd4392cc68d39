//! What the B2BUA asks of provisioning: which domains and users exist
//! (with their digest credentials), each domain's dialplan, and the trunks.
//! [`StorePolicy`] reads the SBUS store through a hot-reloading
//! [`provision::Snapshot`].

use std::net::IpAddr;
use std::sync::Arc;

use sbus::record::{Credentials, Trunk};

use crate::dialplan::Dialplan;
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

/// A store in `dir` holding the domain `voxplane.local` with users `alice`
/// (password `apw`) and `bob` (`bpw`), and a trunk `alice-pbx` trusted from
/// `trunk_ip` — for tests and examples.
///
/// # Errors
/// The store cannot be created or written.
pub fn demo_policy(dir: &std::path::Path, trunk_ip: &str) -> Result<StorePolicy, provision::Error> {
    let store = Arc::new(
        sbus::store::Store::open(dir, sbus::types::MemberId(1)).map_err(provision::Error::from)?,
    );
    let p = Provisioning::new(store);
    p.add_domain("voxplane.local", Default::default())?;
    p.add_user("alice@voxplane.local", "apw", "")?;
    p.add_user("bob@voxplane.local", "bpw", "")?;
    p.add_trunk(&Trunk {
        name: "alice-pbx".into(),
        host: trunk_ip.into(),
        port: 5060,
        transport: "udp".into(),
        allow_ips: vec![format!("{trunk_ip}/32")],
        auth: None,
        codecs: Vec::new(),
        options_ping_s: 0,
    })?;
    StorePolicy::new(p)
}
