//! Deterministic simulation of a cluster: N replicas over in-memory storage on virtual
//! time, joined by a seeded network that delays (and so reorders), duplicates, loses,
//! partitions and reconnects, with members that crash (losing every uncommitted write)
//! and restart, and sometimes a member that joins late and must bootstrap from a
//! snapshot. After healing, every member must hold exactly the state an oracle computes
//! from the writes that survived, and no acknowledged write may be missing.
//!
//! In half the seeds (decided by a separate generator, so the fault schedule of a seed is
//! the same either way) members commit as `Store` does — pipelined: the transaction is
//! written back, the fsync lands 0–3 ms later while new changes stage, and a crash in
//! between loses every written-back transaction not yet synced.
//!
//! Members are labelled with regions (`eu`, `us`) and write into placed domains: `eu.d`
//! (EU only), `all.d` (EU and US) and `g.d` (no domain row: everywhere). Over every
//! seed: no member ever holds data of a domain its region may not hold (checked on every
//! change it commits, and in its log and final state), every member converges to the
//! oracle's state filtered by its region, and no acknowledged write is lost.
//!
//! `SBUS_SIM_SEEDS=N` overrides the number of seeds of the normal run; the `#[ignore]`d
//! test runs 20,000 seeds with a longer fault phase.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sbus::msg::Message;
use sbus::placement::{cdr_domain, domain_of, domain_of_key};
use sbus::record::{Domain, Placement};
use sbus::replica::{Config, Event, Replica};
use sbus::storage::{MemStorage, Storage};
use sbus::types::{CdrId, MemberId, Millis, Op, Seq, Table, Version, VersionVector};

#[derive(Clone, Copy, Debug)]
struct Params {
    active_ms: u64,
    write_every_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
    Cdr(Vec<u8>),
    /// A blob chunk; `Some` on the last chunk with the whole blob.
    Chunk(Option<(Table, String, Vec<u8>)>),
}

struct Node {
    replica: Option<Replica<MemStorage>>,
    /// Storage of a crashed member.
    disk: Option<MemStorage>,
    cfg: Config,
    restart_at: Option<u64>,
    joined: bool,
    /// Commits are driven here (prepare, later sync and finish), not by the core.
    pipelined: bool,
    /// When the fsync of a written-back generation completes.
    sync_at: Option<(u64, u64)>,
    /// Its region.
    region: &'static str,
}

/// The placed domains (rows written by member 0 before any other write) and, last, a
/// domain without a row (global).
const DOMAINS: [(&str, &[&str]); 3] = [("eu.d", &["eu"]), ("all.d", &["eu", "us"]), ("g.d", &[])];

/// Whether a member of `region` may hold data of `domain` (`None`: global data).
fn may_hold(region: &str, domain: Option<&str>) -> bool {
    let Some(d) = domain else { return true };
    DOMAINS
        .iter()
        .find(|(name, _)| *name == d)
        .is_none_or(|(_, regions)| regions.is_empty() || regions.contains(&region))
}

struct Packet {
    from: usize,
    to: usize,
    epoch: u64,
    bytes: Vec<u8>,
}

struct Sim {
    rng: SmallRng,
    /// Pipelined-commit decisions (kept off `rng` so a seed's faults do not change).
    prng: SmallRng,
    now: u64,
    nodes: Vec<Node>,
    /// (deliver at, tie-break) → packet
    net: BinaryHeap<Reverse<(u64, u64, usize)>>,
    packets: Vec<Option<Packet>>,
    /// Link state: partitioned-until, and the connection epoch.
    cut_until: BTreeMap<(usize, usize), u64>,
    connected: BTreeSet<(usize, usize)>,
    epoch: BTreeMap<(usize, usize), u64>,
    faults: bool,
    /// Oracle: every write that is still durable somewhere (or pending at its origin).
    writes: BTreeMap<(MemberId, Seq), (Version, Effect)>,
    acked: BTreeMap<MemberId, Seq>,
    tie: u64,
    cdr_n: u64,
    crashes: u64,
}

fn id(i: usize) -> MemberId {
    MemberId(u32::try_from(i).unwrap() + 1)
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = rng.gen_range(2..=5);
        let late = n >= 3 && rng.gen_bool(0.3);
        let retention = if rng.gen_bool(0.3) {
            rng.gen_range(5..40)
        } else {
            1_000_000
        };
        let mut nodes = Vec::new();
        let mut prng = SmallRng::seed_from_u64(seed ^ 0x5eed_f00d);
        let pipelined = prng.gen_bool(0.5);
        // Regions, from their own generator too (member 0, which places the domains,
        // is in the EU).
        let mut grng = SmallRng::seed_from_u64(seed ^ 0x00e0_0005);
        let regions: Vec<&'static str> = (0..n)
            .map(|i| {
                if i == 0 || grng.gen_bool(0.5) {
                    "eu"
                } else {
                    "us"
                }
            })
            .collect();
        for (i, region) in regions.iter().enumerate() {
            let mut cfg = Config::new(id(i));
            cfg.region = Some((*region).to_owned());
            cfg.auto_commit = !pipelined;
            cfg.commit_interval_ms = rng.gen_range(1..5);
            cfg.commit_batch = rng.gen_range(1..32);
            cfg.max_pending = 64;
            cfg.window = rng.gen_range(4..64);
            cfg.batch_bytes = 512;
            cfg.retransmit_ms = 150;
            cfg.ack_interval_ms = 60;
            cfg.log_retention = retention;
            cfg.blob_chunk = 8;
            cfg.snapshot_items = rng.gen_range(1..16);
            let replica = Replica::open(cfg.clone(), MemStorage::new(), Millis(0)).unwrap();
            nodes.push(Node {
                replica: Some(replica),
                disk: None,
                cfg,
                restart_at: None,
                joined: !(late && i == n - 1),
                pipelined,
                sync_at: None,
                region,
            });
        }
        let mut sim = Sim {
            rng,
            prng,
            now: 0,
            nodes,
            net: BinaryHeap::new(),
            packets: Vec::new(),
            cut_until: BTreeMap::new(),
            connected: BTreeSet::new(),
            epoch: BTreeMap::new(),
            faults: true,
            writes: BTreeMap::new(),
            acked: BTreeMap::new(),
            tie: 0,
            cdr_n: 0,
            crashes: 0,
        };
        for i in 0..n {
            if sim.nodes[i].joined {
                sim.introduce(i);
            }
        }
        sim.place_domains();
        sim
    }

    /// Member 0 writes the placed domains' rows; runs (without faults) until every
    /// joined member holds them, so no member writes a placed domain's data unaware of
    /// its placement.
    fn place_domains(&mut self) {
        let now = Millis(self.now);
        for (name, regions) in DOMAINS.iter().filter(|(_, r)| !r.is_empty()) {
            let value = sbus::record::encode(&Domain {
                name: (*name).to_owned(),
                placement: Placement::Regions(regions.iter().map(|r| (*r).to_owned()).collect()),
                description: String::new(),
            });
            let r = self.nodes[0].replica.as_mut().unwrap();
            let op = Op::Put {
                table: Table::Domains,
                key: (*name).to_owned(),
                value: value.clone(),
            };
            let s = r.write(now, op).unwrap();
            let version = Version {
                hlc: r.clock(),
                origin: id(0),
            };
            self.writes.insert(
                (id(0), s),
                (
                    version,
                    Effect::Put(Table::Domains, (*name).to_owned(), value),
                ),
            );
        }
        let placed = self.writes.len() as u64;
        loop {
            let next = self.next_deadline().unwrap_or(self.now + 1);
            self.run_until(next);
            let done = self.nodes.iter().all(|n| {
                !n.joined
                    || n.replica
                        .as_ref()
                        .is_some_and(|r| r.applied().get(id(0)) >= Seq(placed))
            });
            if done {
                break;
            }
            assert!(self.now < 60_000, "domains never placed");
        }
    }

    /// Panics if member `i` holds content of a domain its region may not hold.
    fn check_sovereignty(&mut self, i: usize, events: &[Event]) {
        let region = self.nodes[i].region;
        let r = self.nodes[i].replica.as_mut().unwrap();
        for e in events {
            match e {
                Event::Changed { table, key } => {
                    let d = domain_of_key(*table, key);
                    assert!(
                        may_hold(region, d) || r.get(*table, key).unwrap().is_none(),
                        "member {i} ({region}) holds {table:?} {key}"
                    );
                }
                Event::CdrAppended(cdr) => {
                    let before = CdrId {
                        origin: cdr.origin,
                        seq: Seq(cdr.seq.0 - 1),
                    };
                    for c in r.cdrs(Some(before), 1).unwrap() {
                        assert!(
                            c.id != *cdr || may_hold(region, cdr_domain(&c.record).as_deref()),
                            "member {i} ({region}) holds CDR {cdr:?}"
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Makes member `i` known to every joined member (and them to it).
    fn introduce(&mut self, i: usize) {
        self.nodes[i].joined = true;
        for j in 0..self.nodes.len() {
            if j != i && self.nodes[j].joined {
                if let Some(r) = self.nodes[i].replica.as_mut() {
                    r.add_peer(id(j));
                }
                if let Some(r) = self.nodes[j].replica.as_mut() {
                    r.add_peer(id(i));
                }
            }
        }
    }

    fn peers_of(&self, i: usize) -> Vec<MemberId> {
        (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].joined)
            .map(id)
            .collect()
    }

    /// Brings the connection set in line with who is up, joined and not partitioned.
    fn relink(&mut self) {
        let now = Millis(self.now);
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                let k = (a, b);
                let want = self.nodes[a].joined
                    && self.nodes[b].joined
                    && self.nodes[a].replica.is_some()
                    && self.nodes[b].replica.is_some()
                    && self.cut_until.get(&k).is_none_or(|&t| t <= self.now);
                let have = self.connected.contains(&k);
                if want == have {
                    continue;
                }
                *self.epoch.entry(k).or_default() += 1;
                for (x, y) in [(a, b), (b, a)] {
                    if let Some(r) = self.nodes[x].replica.as_mut() {
                        if want {
                            r.handle_connected(now, id(y));
                        } else {
                            r.handle_disconnected(now, id(y));
                        }
                    }
                }
                if want {
                    self.connected.insert(k);
                } else {
                    self.connected.remove(&k);
                }
            }
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(r) = self.nodes[i].replica.take() else {
            return;
        };
        self.crashes += 1;
        let durable = r.applied().get(id(i));
        // Everything the origin had not committed is gone, and was never acknowledged.
        assert!(durable >= self.acked.get(&id(i)).copied().unwrap_or_default());
        self.writes.retain(|&(o, s), _| o != id(i) || s <= durable);
        let mut disk = r.into_storage().unwrap();
        let rec = disk.recover().unwrap();
        assert_eq!(
            rec.applied.get(id(i)),
            durable,
            "storage lost committed writes"
        );
        self.nodes[i].disk = Some(disk);
        self.nodes[i].sync_at = None;
        let down = self.rng.gen_range(20..600);
        self.nodes[i].restart_at = Some(self.now + down);
        self.relink();
    }

    fn restart(&mut self, i: usize) {
        let disk = self.nodes[i].disk.take().unwrap();
        let mut r = Replica::open(self.nodes[i].cfg.clone(), disk, Millis(self.now)).unwrap();
        for p in self.peers_of(i) {
            r.add_peer(p);
        }
        self.nodes[i].replica = Some(r);
        self.nodes[i].restart_at = None;
        self.relink();
    }

    fn write(&mut self, i: usize) {
        let now = Millis(self.now);
        let table =
            [Table::Domains, Table::Subscribers, Table::Greetings][self.rng.gen_range(0..3)];
        let n = self.rng.gen_range(0..12);
        let region = self.nodes[i].region;
        let dom = DOMAINS[self.rng.gen_range(0..DOMAINS.len())].0;
        let dom = if may_hold(region, Some(dom)) {
            dom
        } else {
            "g.d"
        };
        let key = if table == Table::Domains {
            format!("k{n}")
        } else {
            format!("{dom}/k{n}")
        };
        let roll = self.rng.gen_range(0..100);
        let value: Vec<u8> = (0..self.rng.gen_range(0..24))
            .map(|_| self.rng.r#gen())
            .collect();
        let r = self.nodes[i].replica.as_mut().unwrap();
        let me = id(i);
        if !may_hold(region, Some("eu.d"))
            && roll == 0
            && r.get(Table::Domains, "eu.d").unwrap().is_some()
        {
            // Writing data of a domain its region may not hold is refused (once it knows
            // the placement: a member that just joined may not yet).
            let op = Op::Put {
                table: Table::Subscribers,
                key: "eu.d/x".into(),
                value: vec![],
            };
            assert!(matches!(
                r.write(now, op),
                Err(sbus::replica::Error::NotPlaced { .. })
            ));
        }
        let result = if roll < 55 {
            r.write(
                now,
                Op::Put {
                    table,
                    key: key.clone(),
                    value: value.clone(),
                },
            )
            .map(|s| vec![(s, Effect::Put(table, key.clone(), value.clone()))])
        } else if roll < 75 {
            r.write(
                now,
                Op::Delete {
                    table,
                    key: key.clone(),
                },
            )
            .map(|s| vec![(s, Effect::Delete(table, key.clone()))])
        } else if roll < 90 {
            self.cdr_n += 1;
            let rec = format!(
                r#"{{"domain":"{dom}","call_id":"cdr-{}-{}"}}"#,
                me.0, self.cdr_n
            )
            .into_bytes();
            r.write(
                now,
                Op::AppendCdr {
                    record: rec.clone(),
                },
            )
            .map(|s| vec![(s, Effect::Cdr(rec))])
        } else {
            r.write_blob(now, table, &key, &value).map(|last| {
                let chunks = value.len().div_ceil(8).max(1) as u64;
                (last.0 + 1 - chunks..=last.0)
                    .map(|s| {
                        let whole = (s == last.0).then(|| (table, key.clone(), value.clone()));
                        (Seq(s), Effect::Chunk(whole))
                    })
                    .collect()
            })
        };
        match result {
            Ok(list) => {
                // Recover the HLC the core gave each change from its log.
                let r = self.nodes[i].replica.as_mut().unwrap();
                let version = Version {
                    hlc: r.clock(),
                    origin: me,
                };
                for (s, e) in list {
                    let old = self.writes.insert((me, s), (version, e));
                    assert!(old.is_none(), "sequence {s:?} of {me} reused while durable");
                }
            }
            Err(
                sbus::replica::Error::Backpressure { .. } | sbus::replica::Error::Recovering { .. },
            ) => {}
            Err(e) => panic!("write failed: {e}"),
        }
    }

    fn send(&mut self, from: usize, to: MemberId, msg: Message) {
        let to = (to.0 - 1) as usize;
        let k = pair(from, to);
        if !self.connected.contains(&k) {
            return;
        }
        let epoch = self.epoch[&k];
        let bytes = msg.encode();
        let copies = if self.faults && self.rng.gen_bool(0.01) {
            0
        } else if self.rng.gen_bool(0.03) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.rng.gen_range(1..30);
            self.tie += 1;
            self.packets.push(Some(Packet {
                from,
                to,
                epoch,
                bytes: bytes.clone(),
            }));
            self.net
                .push(Reverse((at, self.tie, self.packets.len() - 1)));
        }
    }

    /// Drains every member's outputs.
    fn drain(&mut self) {
        let now = Millis(self.now);
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                let mut out = Vec::new();
                let mut events = Vec::new();
                if let Some(r) = self.nodes[i].replica.as_mut() {
                    while let Some(t) = r.poll_transmit(now).unwrap() {
                        out.push(t);
                    }
                    while let Some(e) = r.poll_event() {
                        events.push(e);
                    }
                }
                if !events.is_empty() {
                    self.check_sovereignty(i, &events);
                }
                for e in events {
                    if let Event::Committed(s) = e {
                        let a = self.acked.entry(id(i)).or_default();
                        assert!(s >= *a, "acknowledgements went backwards");
                        *a = s;
                    }
                }
                any |= !out.is_empty();
                for (to, m) in out {
                    self.send(i, to, m);
                }
            }
            if !any {
                break;
            }
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let mut t = self.net.peek().map(|Reverse((at, _, _))| *at);
        for n in &self.nodes {
            if let Some(d) = n.replica.as_ref().and_then(|r| r.poll_timeout()) {
                t = Some(t.map_or(d.0, |x| x.min(d.0)));
            }
            if let Some(d) = n.restart_at {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
            if let Some((d, _)) = n.sync_at {
                t = Some(t.map_or(d, |x| x.min(d)));
            } else if n.pipelined && n.replica.as_ref().is_some_and(|r| r.pending() > 0) {
                t = Some(self.now);
            }
        }
        for &c in self.cut_until.values() {
            if c > self.now {
                t = Some(t.map_or(c, |x| x.min(c)));
            }
        }
        t
    }

    /// Advances to `until`, processing everything due.
    fn run_until(&mut self, until: u64) {
        while let Some(t) = self.next_deadline().filter(|&t| t <= until) {
            self.now = self.now.max(t);
            self.step();
        }
        self.now = self.now.max(until);
        self.step();
    }

    fn step(&mut self) {
        let now = Millis(self.now);
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at.is_some_and(|t| t <= self.now) {
                self.restart(i);
            }
        }
        self.relink();
        while let Some(&Reverse((at, _, idx))) = self.net.peek() {
            if at > self.now {
                break;
            }
            self.net.pop();
            let p = self.packets[idx].take().unwrap();
            let k = pair(p.from, p.to);
            if !self.connected.contains(&k) || self.epoch[&k] != p.epoch {
                continue;
            }
            let msg = Message::decode(&p.bytes).unwrap();
            let r = self.nodes[p.to].replica.as_mut().unwrap();
            r.handle_message(now, id(p.from), msg).unwrap();
        }
        for n in &mut self.nodes {
            if let Some(r) = n.replica.as_mut()
                && r.poll_timeout().is_some_and(|t| t <= now)
            {
                r.handle_timeout(now).unwrap();
            }
            if let Some(r) = n.replica.as_mut()
                && n.pipelined
            {
                if let Some((at, g)) = n.sync_at
                    && at <= self.now
                {
                    r.storage().sync().unwrap();
                    r.finish_commit(now, g, Ok(())).unwrap();
                    n.sync_at = None;
                }
                if n.sync_at.is_none()
                    && let Some(g) = r.prepare_commit().unwrap()
                {
                    n.sync_at = Some((self.now + self.prng.gen_range(0..4), g));
                }
            }
        }
        self.drain();
    }

    fn random_fault(&mut self) {
        let n = self.nodes.len();
        match self.rng.gen_range(0..10) {
            0..=5 => {
                let a = self.rng.gen_range(0..n);
                let b = self.rng.gen_range(0..n);
                if a != b {
                    let d = self.rng.gen_range(20..800);
                    self.cut_until.insert(pair(a, b), self.now + d);
                    self.relink();
                }
            }
            _ => {
                let i = self.rng.gen_range(0..n);
                if self.nodes[i].joined && self.nodes[i].replica.is_some() {
                    self.crash(i);
                }
            }
        }
    }

    /// The state a member of `region` must end with: the oracle's, without the data of
    /// domains it may not hold.
    fn oracle_for(&self, region: &str) -> State {
        let (rows, cdrs, vv) = self.oracle();
        let rows = rows
            .into_iter()
            .filter(|((t, k), _)| may_hold(region, domain_of_key(*t, k)))
            .collect();
        let cdrs = cdrs
            .into_iter()
            .filter(|(_, rec)| may_hold(region, cdr_domain(rec).as_deref()))
            .collect();
        (rows, cdrs, vv)
    }

    /// The state every member must end with, from the surviving writes.
    fn oracle(&self) -> State {
        type Slot = (Version, Option<Vec<u8>>);
        let mut rows: BTreeMap<(Table, String), Slot> = BTreeMap::new();
        let mut cdrs = BTreeMap::new();
        let mut vv = VersionVector::default();
        for (&(o, s), (v, e)) in &self.writes {
            assert_eq!(vv.get(o).next(), s, "oracle log of {o} not dense");
            vv.set(o, s);
            let (t, k, val) = match e {
                Effect::Put(t, k, val) => (t, k, Some(val.clone())),
                Effect::Delete(t, k) => (t, k, None),
                Effect::Chunk(Some((t, k, val))) => (t, k, Some(val.clone())),
                Effect::Chunk(None) => continue,
                Effect::Cdr(rec) => {
                    cdrs.insert(CdrId { origin: o, seq: s }, rec.clone());
                    continue;
                }
            };
            let slot = rows.entry((*t, k.clone())).or_insert((*v, val.clone()));
            if *v > slot.0 {
                *slot = (*v, val);
            }
        }
        let live = rows
            .into_iter()
            .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
            .collect();
        (live, cdrs, vv)
    }

    fn state_of(&mut self, i: usize) -> State {
        let r = self.nodes[i].replica.as_mut().unwrap();
        let mut rows = BTreeMap::new();
        for t in Table::ALL {
            for (k, v) in r.scan(t, "").unwrap() {
                rows.insert((t, k), v);
            }
        }
        let cdrs = r
            .cdrs(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.record))
            .collect();
        (rows, cdrs, r.applied().clone())
    }

    fn converged(&self, vv: &VersionVector) -> bool {
        self.net.is_empty()
            && self.nodes.iter().all(|n| {
                n.replica
                    .as_ref()
                    .is_some_and(|r| r.pending() == 0 && r.applied() == vv)
            })
    }
}

/// Live rows, CDRs and version vector: what a member holds, or should.
type State = (
    BTreeMap<(Table, String), Vec<u8>>,
    BTreeMap<CdrId, Vec<u8>>,
    VersionVector,
);

/// Totals over a run of seeds, to show the faults were exercised.
#[derive(Debug, Default)]
struct Totals {
    crashes: u64,
    writes: u64,
    retransmits: u64,
    duplicates: u64,
    gaps: u64,
    snapshots: u64,
    tombstones: u64,
    superseded: u64,
    placeholders_sent: u64,
    placeholders_stored: u64,
    placement_refused: u64,
    placeholders_refused: u64,
    snapshots_withheld: u64,
}

/// Runs one seed; panics (naming the seed) on any violation.
fn run(seed: u64, p: Params, totals: &mut Totals) {
    let mut sim = Sim::new(seed);
    let n = sim.nodes.len();
    let join_at = sim.rng.gen_range(p.active_ms / 4..p.active_ms);
    // Fault phase.
    let mut t = 0;
    while t < p.active_ms {
        t += sim.rng.gen_range(1..=2 * p.write_every_ms);
        sim.run_until(t);
        if !sim.nodes[n - 1].joined && t >= join_at {
            sim.introduce(n - 1);
            sim.relink();
        }
        let i = sim.rng.gen_range(0..n);
        // A member joins empty: writes before it joined could be older than tombstones
        // the cluster collected without knowing it (see docs/sbus.md, membership).
        if sim.nodes[i].joined && sim.nodes[i].replica.is_some() {
            sim.write(i);
        }
        if sim.rng.gen_bool(0.08) {
            sim.random_fault();
        }
        sim.drain();
    }
    // Heal: no more loss, partitions end, everyone restarts and joins.
    sim.faults = false;
    sim.cut_until.clear();
    if !sim.nodes[n - 1].joined {
        sim.introduce(n - 1);
    }
    for i in 0..n {
        if sim.nodes[i].replica.is_none() {
            sim.restart(i);
        }
    }
    sim.relink();
    let (_, _, vv) = sim.oracle();
    let deadline = sim.now + 60_000;
    while !sim.converged(&vv) {
        assert!(
            sim.now < deadline,
            "seed {seed}: no convergence; want {vv:?}, have {:?}",
            sim.nodes
                .iter()
                .map(|n| n.replica.as_ref().map(|r| (
                    r.applied().clone(),
                    r.stats().clone(),
                    r.peers().map(|p| (p, r.peer_status(p))).collect::<Vec<_>>()
                )))
                .collect::<Vec<_>>()
        );
        let next = sim.next_deadline().unwrap_or(sim.now + 1);
        sim.run_until(next);
    }
    for (o, a) in &sim.acked {
        assert!(
            vv.get(*o) >= *a,
            "seed {seed}: acknowledged write of {o} lost"
        );
    }
    for i in 0..n {
        let (rows, cdrs, _) = sim.oracle_for(sim.nodes[i].region);
        let (r, c, v) = sim.state_of(i);
        assert_eq!(v, vv, "seed {seed}: member {i} version vector");
        assert_eq!(c, cdrs, "seed {seed}: member {i} CDRs");
        assert_eq!(r, rows, "seed {seed}: member {i} rows");
        let st = sim.nodes[i]
            .replica
            .as_mut()
            .unwrap()
            .storage()
            .stages()
            .unwrap();
        assert!(st.is_empty(), "seed {seed}: member {i} left a blob staged");
        // Its log holds no content of a domain its region may not hold.
        let region = sim.nodes[i].region;
        let r = sim.nodes[i].replica.as_mut().unwrap();
        for (o, top) in vv.0.clone() {
            for c in r.storage().log_range(o, Seq(0), top, usize::MAX).unwrap() {
                let held = matches!(c.op, Op::Placeholder { .. })
                    || may_hold(region, domain_of(&c.op).as_deref());
                assert!(held, "seed {seed}: member {i} ({region}) logs {c:?}");
            }
        }
    }
    // Quiet traffic lets clock reports go round: every tombstone is then collected and
    // the log pruned to what some peer still lacks (nothing).
    for round in 0..6 {
        for i in 0..n {
            let now = Millis(sim.now);
            let r = sim.nodes[i].replica.as_mut().unwrap();
            let s = r
                .write(
                    now,
                    Op::Put {
                        table: Table::Trunks,
                        key: format!("tick{i}"),
                        value: vec![round],
                    },
                )
                .unwrap();
            let v = Version {
                hlc: r.clock(),
                origin: id(i),
            };
            sim.writes.insert(
                (id(i), s),
                (
                    v,
                    Effect::Put(Table::Trunks, format!("tick{i}"), vec![round]),
                ),
            );
        }
        let until = sim.now + 200;
        sim.run_until(until);
    }
    let (_, _, vv) = sim.oracle();
    let deadline = sim.now + 10_000;
    while !sim.converged(&vv) {
        assert!(
            sim.now < deadline,
            "seed {seed}: no convergence after quiet rounds"
        );
        let next = sim.next_deadline().unwrap_or(sim.now + 1);
        sim.run_until(next);
    }
    for i in 0..n {
        let r = sim.nodes[i].replica.as_mut().unwrap();
        assert_eq!(
            r.storage().tombstones(),
            0,
            "seed {seed}: member {i} kept tombstones"
        );
        let st = r.stats();
        totals.retransmits += st.retransmits;
        totals.duplicates += st.duplicates;
        totals.gaps += st.gaps;
        totals.snapshots += st.snapshots_applied;
        totals.tombstones += st.tombstones_collected;
        totals.superseded += st.superseded;
        totals.placeholders_sent += st.placeholders_sent;
        totals.placeholders_stored += st.placeholders_stored;
        totals.placement_refused += st.placement_refused;
        totals.placeholders_refused += st.placeholders_refused;
        totals.snapshots_withheld += st.snapshots_withheld;
    }
    totals.crashes += sim.crashes;
    totals.writes += sim.writes.len() as u64;
}

fn seeds(default: u64) -> u64 {
    std::env::var("SBUS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn cluster_converges_without_losing_acknowledged_writes_over_1000_seeds() {
    let p = Params {
        active_ms: 1_500,
        write_every_ms: 6,
    };
    let mut totals = Totals::default();
    let from: u64 = std::env::var("SBUS_SIM_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in from..from + seeds(1_000) {
        run(seed, p, &mut totals);
    }
    eprintln!("{totals:?}");
    // The faults the test exists for must have happened (over a full run).
    if seeds(1_000) < 100 {
        return;
    }
    assert!(totals.crashes > 0 && totals.retransmits > 0 && totals.snapshots > 0);
    assert!(totals.duplicates > 0 && totals.gaps > 0 && totals.tombstones > 0);
    assert!(totals.placeholders_sent > 0 && totals.placeholders_stored > 0);
}

#[test]
#[ignore = "long: 20,000 seeds with a longer fault phase"]
fn cluster_converges_over_20000_seeds() {
    let p = Params {
        active_ms: 4_000,
        write_every_ms: 4,
    };
    let mut totals = Totals::default();
    let from: u64 = std::env::var("SBUS_SIM_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    for seed in from..from + seeds(20_000) {
        run(seed, p, &mut totals);
    }
    eprintln!("{totals:?}");
}

/// Seeds of the long run that once failed (a half-committed blob left staged; two
/// snapshots with one version vector mixed; a lost Hello stalled a link), kept in the
/// normal run.
#[test]
fn long_run_regressions() {
    let p = Params {
        active_ms: 4_000,
        write_every_ms: 4,
    };
    let mut totals = Totals::default();
    for seed in [1_000_162, 1_000_819, 2_003_125] {
        run(seed, p, &mut totals);
    }
}
