//! Retention, sans-IO: which recordings' local files to delete, by age and
//! by the total size the recordings directory may hold.
//!
//! Rules ([`select`]):
//! - a recording whose call ended more than `max_age_ns` ago goes;
//! - then, while the local recordings add up to more than `max_bytes`, the
//!   oldest go (by end time, then id);
//! - with S3 offload configured, only recordings already uploaded are
//!   eligible: a local copy is never the last one deleted. A recording still
//!   queued for upload stays, even past its age or over the size limit (it
//!   is counted in the size all the same).
//!
//! What deleting means is the driver's: without S3 the recording is gone
//! (index tombstone, files removed); with S3 its index entry stays,
//! marked offloaded, and only the local files are removed.

/// Limits; `None` means no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Oldest a local recording may be (from its end), ns.
    pub max_age_ns: Option<u64>,
    /// Most octets the local recordings may take together.
    pub max_bytes: Option<u64>,
}

impl Policy {
    /// Whether any limit is set.
    pub fn is_active(&self) -> bool {
        self.max_age_ns.is_some() || self.max_bytes.is_some()
    }
}

/// One recording with local files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local<'a> {
    /// Recording id.
    pub id: &'a str,
    /// Call end, ns since the Unix epoch.
    pub end_ns: u64,
    /// Octets of its local files.
    pub bytes: u64,
    /// May its local files go (no S3, or already uploaded)?
    pub deletable: bool,
}

/// The ids whose local files to delete at `now_ns`, oldest first.
pub fn select<'a>(policy: &Policy, now_ns: u64, recordings: &[Local<'a>]) -> Vec<&'a str> {
    let mut order: Vec<&Local<'a>> = recordings.iter().collect();
    order.sort_by(|a, b| a.end_ns.cmp(&b.end_ns).then_with(|| a.id.cmp(b.id)));
    let mut total: u64 = recordings.iter().map(|r| r.bytes).sum();
    let mut out = Vec::new();
    for r in order {
        if !r.deletable {
            continue;
        }
        let too_old = policy
            .max_age_ns
            .is_some_and(|age| now_ns.saturating_sub(r.end_ns) > age);
        let too_big = policy.max_bytes.is_some_and(|max| total > max);
        if too_old || too_big {
            total -= r.bytes;
            out.push(r.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn local(id: &str, end_s: u64, bytes: u64, deletable: bool) -> Local<'_> {
        Local {
            id,
            end_ns: end_s * S,
            bytes,
            deletable,
        }
    }

    #[test]
    fn by_age() {
        let p = Policy {
            max_age_ns: Some(100 * S),
            max_bytes: None,
        };
        let r = [
            local("new", 950, 10, true),
            local("old", 800, 10, true),
            local("older", 700, 10, true),
            local("edge", 900, 10, true),
        ];
        assert_eq!(select(&p, 1000 * S, &r), ["older", "old"]);
        assert!(select(&Policy::default(), 1000 * S, &r).is_empty());
        assert!(!Policy::default().is_active() && p.is_active());
    }

    #[test]
    fn by_size_oldest_first_until_under() {
        let p = Policy {
            max_age_ns: None,
            max_bytes: Some(25),
        };
        let r = [
            local("c", 30, 10, true),
            local("a", 10, 10, true),
            local("b", 20, 10, true),
            local("d", 40, 10, true),
        ];
        // 40 octets: the two oldest go to get to 20 ≤ 25.
        assert_eq!(select(&p, 0, &r), ["a", "b"]);
        // Exactly at the limit: nothing.
        let p = Policy {
            max_bytes: Some(40),
            ..p
        };
        assert!(select(&p, 0, &r).is_empty());
    }

    #[test]
    fn never_a_copy_not_yet_uploaded() {
        let p = Policy {
            max_age_ns: Some(10 * S),
            max_bytes: Some(15),
        };
        let r = [
            local("queued-old", 1, 10, false),
            local("up-old", 2, 10, true),
            local("up-new", 99, 10, true),
        ];
        // The queued one stays though old and counted; the size rule then
        // takes the newest uploaded one too (30 → 20 → 10 ≤ 15).
        assert_eq!(select(&p, 100 * S, &r), ["up-old", "up-new"]);
        let all_queued = [local("q", 1, 10, false)];
        assert!(select(&p, 100 * S, &all_queued).is_empty());
    }
}
