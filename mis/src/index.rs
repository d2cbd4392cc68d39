//! The recordings index (sans-IO): one JSON object per finished recording,
//! appended as a line to `index.jsonl`, loaded into memory at start and
//! searched there.
//!
//! Why an append-only JSON-lines file and not SQLite: one writer (the
//! recorder task), appends only, and searches over what fits in memory
//! (a million recordings ≈ 300 MB of entries is beyond one node's local
//! retention anyway); a torn last line after a crash is skipped and the
//! recording is re-indexed from its journal. It keeps a C build out of the
//! recorder. A relational index (rusqlite) is the step when retention or
//! query shapes outgrow a scan.

use serde::{Deserialize, Serialize};

use crate::recorder::{DtmfEvent, HoldEvent, Recording};

/// One recording in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Recording id (file stem): `<start ns>-<session id, 16 hex digits>`.
    pub id: String,
    /// Sender's session id.
    pub session: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// Tenant domain.
    pub domain: String,
    /// Calling number.
    pub from: String,
    /// Called number.
    pub to: String,
    /// Call start, ns since the Unix epoch.
    pub start_ns: u64,
    /// Call end, ns since the Unix epoch.
    pub end_ns: u64,
    /// Audio length, ms.
    pub duration_ms: u64,
    /// Stereo file name (in the recordings directory), if written.
    pub stereo: Option<String>,
    /// Mono file name, if written.
    pub mono: Option<String>,
    /// `Stopped` or `IdleTimeout`.
    pub reason: String,
    /// DTMF events.
    #[serde(default)]
    pub dtmf: Vec<DtmfEventOwned>,
    /// Hold/resume events.
    #[serde(default)]
    pub holds: Vec<HoldEventOwned>,
    /// Retention removed the local files; the recording is in S3 (under
    /// the offload prefix, same file names).
    #[serde(default, skip_serializing_if = "is_false")]
    pub offloaded: bool,
    /// A tombstone: retention deleted the recording (no S3); loading drops
    /// the entry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub removed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// [`DtmfEvent`] as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtmfEventOwned {
    /// Leg index.
    pub leg: u8,
    /// Digit.
    pub digit: char,
    /// ms from the first sample.
    pub at_ms: u64,
    /// ms.
    pub duration_ms: u64,
}

/// [`HoldEvent`] as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldEventOwned {
    /// Leg index.
    pub leg: u8,
    /// On hold?
    pub on: bool,
    /// ns since the Unix epoch.
    pub time_ns: u64,
}

impl Entry {
    /// The entry for a finished recording (file names per its policy).
    pub fn new(rec: &Recording) -> Self {
        let id = recording_id(rec);
        let s = &rec.start;
        Self {
            stereo: s.policy.stereo().then(|| format!("{id}.wav")),
            mono: s.policy.mono().then(|| format!("{id}.mono.wav")),
            id,
            session: s.session.0,
            call_id: s.call_id.clone(),
            domain: s.domain.clone(),
            from: s.from.clone(),
            to: s.to.clone(),
            start_ns: s.start_time.0,
            end_ns: rec.end_time.0,
            duration_ms: rec.duration_ms(),
            reason: format!("{:?}", rec.reason),
            dtmf: rec.dtmf.iter().map(dtmf).collect(),
            holds: rec.holds.iter().map(hold).collect(),
            offloaded: false,
            removed: false,
        }
    }
}

fn dtmf(e: &DtmfEvent) -> DtmfEventOwned {
    DtmfEventOwned {
        leg: e.leg,
        digit: e.digit,
        at_ms: e.at_ms,
        duration_ms: e.duration_ms,
    }
}

fn hold(e: &HoldEvent) -> HoldEventOwned {
    HoldEventOwned {
        leg: e.leg,
        on: e.on,
        time_ns: e.time_ns,
    }
}

/// The id a recording's files and index entry use.
pub fn recording_id(rec: &Recording) -> String {
    format!("{}-{:016x}", rec.start.start_time.0, rec.start.session.0)
}

/// A search. Every given field must match; `number` matches `from` or `to`
/// (substring), `domain` exactly, `from`/`to` bound the start time
/// (ns, inclusive), durations bound the audio length (ms).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Query {
    /// Calling or called number (substring).
    pub number: Option<String>,
    /// Domain (exact).
    pub domain: Option<String>,
    /// Call-ID (exact).
    pub call_id: Option<String>,
    /// Earliest start, ns since the Unix epoch.
    pub from: Option<u64>,
    /// Latest start, ns since the Unix epoch.
    pub to: Option<u64>,
    /// Shortest duration, ms.
    pub min_duration_ms: Option<u64>,
    /// Longest duration, ms.
    pub max_duration_ms: Option<u64>,
}

impl Query {
    /// Whether `e` matches.
    pub fn matches(&self, e: &Entry) -> bool {
        self.number
            .as_deref()
            .is_none_or(|n| e.from.contains(n) || e.to.contains(n))
            && self.domain.as_deref().is_none_or(|d| e.domain == d)
            && self.call_id.as_deref().is_none_or(|c| e.call_id == c)
            && self.from.is_none_or(|t| e.start_ns >= t)
            && self.to.is_none_or(|t| e.start_ns <= t)
            && self.min_duration_ms.is_none_or(|d| e.duration_ms >= d)
            && self.max_duration_ms.is_none_or(|d| e.duration_ms <= d)
    }
}

/// The in-memory index.
#[derive(Debug, Default)]
pub struct Index {
    entries: Vec<Entry>,
    /// Position of each id in `entries`.
    by_id: std::collections::HashMap<String, usize>,
}

impl Index {
    /// Loads `index.jsonl` bytes; lines that do not parse (a torn last
    /// line) are skipped and counted in the second value. A later entry
    /// with an id already present replaces it (a re-render after a crash).
    pub fn load(bytes: &[u8]) -> (Self, usize) {
        let mut idx = Self::default();
        let mut bad = 0;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => idx.insert(e),
                Err(_) => bad += 1,
            }
        }
        (idx, bad)
    }

    /// Adds or replaces (same id) an entry; a tombstone
    /// ([`Entry::removed`]) removes it.
    pub fn insert(&mut self, e: Entry) {
        if e.removed {
            if let Some(i) = self.by_id.remove(&e.id) {
                self.entries.swap_remove(i);
                if let Some(moved) = self.entries.get(i) {
                    self.by_id.insert(moved.id.clone(), i);
                }
            }
            return;
        }
        match self.by_id.get(&e.id) {
            Some(&i) => self.entries[i] = e,
            None => {
                self.by_id.insert(e.id.clone(), self.entries.len());
                self.entries.push(e);
            }
        }
    }

    /// The entry with `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    /// Matching entries, newest first.
    pub fn search(&self, q: &Query) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.entries.iter().filter(|e| q.matches(e)).collect();
        v.sort_by(|a, b| b.start_ns.cmp(&a.start_ns).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One index line (JSON + `\n`) for `e`.
pub fn line(e: &Entry) -> Vec<u8> {
    // Serialising a struct of strings and integers cannot fail.
    let mut v = serde_json::to_vec(e).expect("entry serialises");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, from: &str, domain: &str, start: u64, dur: u64) -> Entry {
        Entry {
            id: id.into(),
            session: 1,
            call_id: format!("c-{id}"),
            domain: domain.into(),
            from: from.into(),
            to: "2002".into(),
            start_ns: start,
            end_ns: start + dur * 1_000_000,
            duration_ms: dur,
            stereo: Some(format!("{id}.wav")),
            mono: None,
            reason: "Stopped".into(),
            dtmf: vec![],
            holds: vec![],
            offloaded: false,
            removed: false,
        }
    }

    #[test]
    fn search_and_reload_with_torn_tail() {
        let mut bytes = Vec::new();
        bytes.extend(line(&entry("a", "15551230001", "x.com", 10, 1000)));
        bytes.extend(line(&entry("b", "15551230002", "y.com", 20, 5000)));
        bytes.extend(line(&entry("a", "15551230001", "x.com", 10, 1200)));
        bytes.extend_from_slice(b"{\"id\":\"c\",\"sess");
        let (idx, bad) = Index::load(&bytes);
        assert_eq!((idx.len(), bad), (2, 1));
        assert_eq!(idx.get("a").unwrap().duration_ms, 1200);
        let q = |f: fn(&mut Query)| {
            let mut q = Query::default();
            f(&mut q);
            idx.search(&q)
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(q(|_| {}), ["b", "a"]);
        assert_eq!(q(|q| q.number = Some("0001".into())), ["a"]);
        assert_eq!(q(|q| q.number = Some("2002".into())), ["b", "a"]);
        assert_eq!(q(|q| q.domain = Some("y.com".into())), ["b"]);
        assert_eq!(q(|q| q.from = Some(15)), ["b"]);
        assert_eq!(q(|q| q.to = Some(15)), ["a"]);
        assert_eq!(q(|q| q.min_duration_ms = Some(2000)), ["b"]);
        assert_eq!(q(|q| q.call_id = Some("c-a".into())), ["a"]);
        assert!(q(|q| q.domain = Some("z.com".into())).is_empty());
    }

    #[test]
    fn tombstones_remove_and_flags_round_trip() {
        let mut bytes = Vec::new();
        for id in ["a", "b", "c"] {
            bytes.extend(line(&entry(id, "1", "x.com", 10, 1000)));
        }
        let mut gone = entry("a", "1", "x.com", 10, 1000);
        gone.removed = true;
        bytes.extend(line(&gone));
        let mut off = entry("b", "1", "x.com", 10, 1000);
        off.offloaded = true;
        bytes.extend(line(&off));
        // Flags are written only when set, so older readers see the same
        // lines as before.
        assert!(!String::from_utf8_lossy(&line(&entry("z", "1", "x", 1, 1))).contains("offloaded"));
        let (idx, bad) = Index::load(&bytes);
        assert_eq!((idx.len(), bad), (2, 0));
        assert!(idx.get("a").is_none());
        assert!(idx.get("b").unwrap().offloaded);
        assert_eq!(
            idx.get("c").unwrap().id,
            "c",
            "positions fixed after removal"
        );
        let mut ids: Vec<&str> = idx.entries().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["b", "c"]);
    }
}
