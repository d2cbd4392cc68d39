//! Identifiers, clocks and the change-log entry shared by every part of the bus.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A cluster member's identity; also the *origin* of the changes it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub u32);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// Per-origin sequence number of a change: the first change of an origin is 1,
/// and 0 means "nothing yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number after this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// Wall-clock time in milliseconds since the Unix epoch, as passed in by the driver
/// (or by the simulation's virtual clock). Cores never read a clock themselves.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    #[must_use]
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds elapsed since `earlier` (0 if `earlier` is later).
    #[must_use]
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A hybrid logical clock reading (Kulkarni et al., "Logical Physical Clocks", 2014):
/// the largest physical time seen (ms) and a counter that orders events within it.
/// Ordered by `(wall, logical)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical component, ms since the Unix epoch.
    pub wall: u64,
    /// Logical counter within `wall`.
    pub logical: u32,
}

/// The HLC state of one member. Sans-IO: the physical time is an argument.
#[derive(Clone, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that will never issue a reading at or below `floor` (used on restart with
    /// the largest HLC found in the durable log).
    #[must_use]
    pub fn starting_after(floor: Hlc) -> HlcClock {
        HlcClock { last: floor }
    }

    /// The latest reading issued or observed. Every later [`HlcClock::tick`] is greater.
    #[must_use]
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new reading for a local event at physical time `now`, strictly greater than
    /// every reading issued or observed so far.
    pub fn tick(&mut self, now: Millis) -> Hlc {
        self.last = if now.0 > self.last.wall {
            Hlc {
                wall: now.0,
                logical: 0,
            }
        } else {
            self.bump(self.last)
        };
        self.last
    }

    /// Merges a remote reading received at physical time `now`.
    pub fn observe(&mut self, remote: Hlc, now: Millis) {
        let max = self.last.max(remote);
        if now.0 > max.wall {
            self.last = Hlc {
                wall: now.0,
                logical: 0,
            };
        } else {
            self.last = max;
        }
    }

    fn bump(&self, h: Hlc) -> Hlc {
        match h.logical.checked_add(1) {
            Some(logical) => Hlc {
                wall: h.wall,
                logical,
            },
            // Counter exhausted within one millisecond: borrow the next millisecond.
            None => Hlc {
                wall: h.wall + 1,
                logical: 0,
            },
        }
    }
}

/// The version a row carries: last writer wins by HLC, then by origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// When the write happened.
    pub hlc: Hlc,
    /// Who wrote it (the tie-breaker).
    pub origin: MemberId,
}

/// Row tables: each holds last-writer-wins rows keyed by a string. CDRs are not a row
/// table: they are append-only and live in their own log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Table {
    /// SIP domains and their placement policy.
    Domains,
    /// Subscribers and their credentials.
    Subscribers,
    /// Dialplans.
    Dialplans,
    /// Routing rules.
    RoutingRules,
    /// SIP trunks.
    Trunks,
    /// Greetings (blobs).
    Greetings,
    /// Voicemail messages (blobs).
    Voicemails,
}

impl Table {
    /// Every row table, in a stable order.
    pub const ALL: [Table; 7] = [
        Table::Domains,
        Table::Subscribers,
        Table::Dialplans,
        Table::RoutingRules,
        Table::Trunks,
        Table::Greetings,
        Table::Voicemails,
    ];

    /// A stable small integer for storage.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Table::Domains => 1,
            Table::Subscribers => 2,
            Table::Dialplans => 3,
            Table::RoutingRules => 4,
            Table::Trunks => 5,
            Table::Greetings => 6,
            Table::Voicemails => 7,
        }
    }

    /// The inverse of [`Table::code`].
    #[must_use]
    pub fn from_code(code: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The table's name as used on the CLI and in `docs/sbus.md`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Table::Domains => "domains",
            Table::Subscribers => "subscribers",
            Table::Dialplans => "dialplans",
            Table::RoutingRules => "routing_rules",
            Table::Trunks => "trunks",
            Table::Greetings => "greetings",
            Table::Voicemails => "voicemails",
        }
    }

    /// Parses [`Table::name`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Identity of a CDR: the member that wrote it and the sequence number of the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CdrId {
    /// The writer.
    pub origin: MemberId,
    /// The writer's change sequence number.
    pub seq: Seq,
}

/// What a change does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert or replace a row.
    Put {
        /// Table.
        table: Table,
        /// Row key.
        key: String,
        /// Encoded value (see [`crate::record`]).
        value: Vec<u8>,
    },
    /// Delete a row (leaves a tombstone until every member has it).
    Delete {
        /// Table.
        table: Table,
        /// Row key.
        key: String,
    },
    /// Append a CDR (never replaced, never deleted by replication).
    AppendCdr {
        /// Encoded CDR.
        record: Vec<u8>,
    },
    /// One chunk of a blob row. A blob is `count` consecutive chunks of one origin; it
    /// becomes visible (as a row put, versioned by the last chunk) when the last arrives.
    BlobChunk {
        /// Table.
        table: Table,
        /// Row key.
        key: String,
        /// Index of this chunk, from 0.
        index: u32,
        /// Number of chunks.
        count: u32,
        /// Chunk bytes.
        bytes: Vec<u8>,
    },
    /// A change of `domain` withheld from this member by the domain's placement
    /// (data sovereignty): it carries no content and only advances the version vector, so
    /// per-origin sequences stay dense. See [`crate::placement`].
    Placeholder {
        /// The domain whose change was withheld.
        domain: String,
    },
}

/// One entry of the replicated change log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The member that made the change.
    pub origin: MemberId,
    /// Its per-origin sequence number (dense: 1, 2, 3 …).
    pub seq: Seq,
    /// When it was made.
    pub hlc: Hlc,
    /// What it does.
    pub op: Op,
}

impl Change {
    /// The row version this change writes.
    #[must_use]
    pub fn version(&self) -> Version {
        Version {
            hlc: self.hlc,
            origin: self.origin,
        }
    }

    /// Approximate encoded size in bytes, for batching.
    #[must_use]
    pub fn weight(&self) -> usize {
        32 + match &self.op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
            Op::AppendCdr { record } => record.len(),
            Op::BlobChunk { key, bytes, .. } => key.len() + bytes.len(),
            Op::Placeholder { domain } => domain.len(),
        }
    }
}

/// A row as stored: its version, and its value or `None` for a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Last writer.
    pub version: Version,
    /// Sequence number (of `version.origin`) of the change that wrote it: a member whose
    /// version vector covers it already reflects this write.
    pub seq: Seq,
    /// Value, or `None` if deleted.
    pub value: Option<Vec<u8>>,
}

/// Per-origin high-water marks: for each origin, every change with `seq <= vv[origin]`
/// is held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<MemberId, Seq>);

impl VersionVector {
    /// The mark for `origin` (0 when absent).
    #[must_use]
    pub fn get(&self, origin: MemberId) -> Seq {
        self.0.get(&origin).copied().unwrap_or_default()
    }

    /// Sets the mark for `origin` (a zero mark is no entry, so equal vectors compare
    /// equal).
    pub fn set(&mut self, origin: MemberId, seq: Seq) {
        if seq == Seq(0) {
            self.0.remove(&origin);
        } else {
            self.0.insert(origin, seq);
        }
    }

    /// Raises each mark to the other vector's where that is higher.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&o, &s) in &other.0 {
            if s > self.get(o) {
                self.set(o, s);
            }
        }
    }

    /// Whether every mark of `other` is at or below ours.
    #[must_use]
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&o, &s)| self.get(o) >= s)
    }

    /// Total number of changes `other` holds that we do not.
    #[must_use]
    pub fn missing_from(&self, other: &VersionVector) -> u64 {
        other
            .0
            .iter()
            .map(|(&o, &s)| s.0.saturating_sub(self.get(o).0))
            .sum()
    }

    /// Origins with a mark.
    pub fn origins(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.0.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_is_strictly_monotonic_when_wall_clock_stalls_or_goes_back() {
        let mut c = HlcClock::default();
        let a = c.tick(Millis(100));
        let b = c.tick(Millis(100));
        let d = c.tick(Millis(50));
        assert!(a < b && b < d);
        assert_eq!(d.wall, 100);
        let e = c.tick(Millis(200));
        assert_eq!(
            e,
            Hlc {
                wall: 200,
                logical: 0
            }
        );
    }

    #[test]
    fn hlc_observe_moves_past_remote() {
        let mut c = HlcClock::default();
        c.tick(Millis(10));
        c.observe(
            Hlc {
                wall: 500,
                logical: 7,
            },
            Millis(20),
        );
        let t = c.tick(Millis(30));
        assert_eq!(
            t,
            Hlc {
                wall: 500,
                logical: 8
            }
        );
    }

    #[test]
    fn hlc_logical_overflow_borrows_next_millisecond() {
        let mut c = HlcClock::starting_after(Hlc {
            wall: 9,
            logical: u32::MAX,
        });
        assert_eq!(
            c.tick(Millis(1)),
            Hlc {
                wall: 10,
                logical: 0
            }
        );
    }

    #[test]
    fn version_vector_merge_and_dominance() {
        let mut a = VersionVector::default();
        a.set(MemberId(1), Seq(5));
        let mut b = VersionVector::default();
        b.set(MemberId(1), Seq(3));
        b.set(MemberId(2), Seq(4));
        assert!(!a.dominates(&b));
        assert_eq!(a.missing_from(&b), 4);
        a.merge(&b);
        assert!(a.dominates(&b));
        assert_eq!(a.get(MemberId(1)), Seq(5));
        assert_eq!(a.get(MemberId(2)), Seq(4));
    }

    #[test]
    fn versions_order_by_hlc_then_origin() {
        let h = Hlc {
            wall: 1,
            logical: 0,
        };
        let lo = Version {
            hlc: h,
            origin: MemberId(1),
        };
        let hi = Version {
            hlc: h,
            origin: MemberId(2),
        };
        assert!(lo < hi);
        let later = Version {
            hlc: Hlc {
                wall: 1,
                logical: 1,
            },
            origin: MemberId(0),
        };
        assert!(hi < later);
    }

    #[test]
    fn table_codes_round_trip() {
        for t in Table::ALL {
            assert_eq!(Table::from_code(t.code()), Some(t));
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        assert_eq!(Table::from_code(0), None);
    }
}
