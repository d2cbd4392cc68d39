//! The sans-IO replication core: one [`Replica`] per member.
//!
//! # Driving contract
//! Feed one input at a time — [`Replica::write`], [`Replica::handle_connected`],
//! [`Replica::handle_disconnected`], [`Replica::handle_message`] or
//! [`Replica::handle_timeout`] — then drain [`Replica::poll_transmit`] (send each message
//! on the named peer's link, in order) and [`Replica::poll_event`], and sleep until
//! [`Replica::poll_timeout`]. Every input takes `now`; the core never reads a clock and
//! owns no socket. Storage is reached through the [`Storage`] trait, whose transaction
//! the core commits (group commit: at most every `commit_interval_ms`, or at once when
//! `commit_batch` changes are pending, or when the caller calls [`Replica::commit`]).
//!
//! # Guarantees
//! - A local write is acknowledged ([`Event::Committed`]) only after the storage
//!   committed it durably; nothing uncommitted is ever sent to a peer, so a crash that
//!   loses uncommitted writes cannot leave a peer holding a change its origin forgot.
//! - Each origin's changes are applied in sequence order, exactly once (duplicates are
//!   dropped by the version vector, gaps wait for a retransmission).
//! - Rows converge by last-writer-wins on `(hlc, origin)`; deletes leave tombstones that
//!   are collected once every member holds every change that could precede them.
//! - CDRs are append-only, identified by `(origin, seq)`; blobs travel as chunks, one log
//!   entry each, so a transfer resumes where the acknowledged chunks end.
//!
//! ```no_run
//! use sbus::{replica::{Config, Replica}, storage::MemStorage, types::{MemberId, Millis}};
//! # fn send(_: MemberId, _: Vec<u8>) {}
//! # fn wait_until(_: Option<Millis>) -> Millis { Millis(0) }
//! let mut r = Replica::open(Config::new(MemberId(1)), MemStorage::new(), Millis(0)).unwrap();
//! r.add_peer(MemberId(2));
//! loop {
//!     let now = wait_until(r.poll_timeout());
//!     r.handle_timeout(now).unwrap();
//!     while let Some((peer, msg)) = r.poll_transmit(now).unwrap() {
//!         send(peer, msg.encode());
//!     }
//!     while let Some(_event) = r.poll_event() {}
//! }
//! ```

use std::collections::{BTreeMap, VecDeque};

use crate::msg::{Message, ProtocolError, SnapshotItem};
use crate::placement::{domain_of, domain_of_key, placement_of};
use crate::record::Placement;
use crate::storage::{BlobStage, Mark, Storage, StorageError, StoredCdr};
use crate::types::{
    CdrId, Change, Hlc, HlcClock, MemberId, Millis, Op, Row, Seq, Table, VersionVector,
};

/// Tunables of a replica. Every limit's behaviour is described in `docs/sbus.md`.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member.
    pub member: MemberId,
    /// Local changes buffered but not yet committed; beyond it [`Replica::write`] fails
    /// with [`Error::Backpressure`] (counted in [`Stats::rejected_writes`]).
    pub max_pending: usize,
    /// Group commit: longest wait (ms) between the first uncommitted change and commit.
    pub commit_interval_ms: u64,
    /// Group commit: commit at once when this many changes are pending.
    pub commit_batch: usize,
    /// Changes sent to a peer and not yet acknowledged by it, at most.
    pub window: u64,
    /// Bytes per `Changes` message, about.
    pub batch_bytes: usize,
    /// Resend from the last acknowledged change when a peer acknowledges nothing new for
    /// this long (ms) while changes are outstanding.
    pub retransmit_ms: u64,
    /// Acknowledge (and so keep the link alive) at least this often (ms).
    pub ack_interval_ms: u64,
    /// Log entries kept per origin beyond what every peer acknowledged. A peer further
    /// behind is brought back by a snapshot instead of the log.
    pub log_retention: u64,
    /// Blob chunk size (bytes).
    pub blob_chunk: usize,
    /// Items per `Snapshot` message.
    pub snapshot_items: usize,
    /// Whether the core commits by itself (every `commit_interval_ms`, or at
    /// `commit_batch` pending changes). A driver that runs its own pipelined commits
    /// ([`Replica::prepare_commit`] / [`Replica::finish_commit`], as `Store` does) turns
    /// this off.
    pub auto_commit: bool,
    /// This member's region (data sovereignty): it holds only the data of domains whose
    /// placement allows it. `None`: no region, so only data that goes everywhere.
    pub region: Option<String>,
}

impl Config {
    /// Defaults for a production member.
    #[must_use]
    pub fn new(member: MemberId) -> Config {
        Config {
            member,
            max_pending: 65_536,
            commit_interval_ms: 2,
            commit_batch: 4_096,
            window: 16_384,
            batch_bytes: 256 << 10,
            retransmit_ms: 2_000,
            ack_interval_ms: 500,
            log_retention: 1_000_000,
            blob_chunk: 64 << 10,
            snapshot_items: 1_024,
            auto_commit: true,
            region: None,
        }
    }
}

/// Errors of the replication core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Too many local changes await commit (local; retry after the next commit).
    #[error("backpressure: {pending} changes await commit (limit {limit})")]
    Backpressure {
        /// Pending changes.
        pending: usize,
        /// The configured limit.
        limit: usize,
    },
    /// This member's own changes are being recovered from a peer (its store lost data);
    /// writing now would reuse sequence numbers.
    #[error("recovering own changes {have:?} of {known:?} from peers")]
    Recovering {
        /// What we hold of our own origin.
        have: Seq,
        /// What a peer holds of it.
        known: Seq,
    },
    /// A message from a member that is not a configured peer.
    #[error("unknown peer {0}")]
    UnknownPeer(MemberId),
    /// The peer sent something invalid.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Local storage failed; uncommitted work was rolled back.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A local write of a domain this member's region may not hold (write it on a
    /// member of a region the domain's placement names).
    #[error("domain {domain} may not be held in region {region:?}")]
    NotPlaced {
        /// The domain.
        domain: String,
        /// This member's region.
        region: Option<String>,
    },
    /// An fsync failed: whether written-back changes are durable is unknown, so this
    /// replica acknowledges nothing more and refuses writes; restart the member (it
    /// recovers whatever the disk holds).
    #[error("fsync failed, restart the member: {0}")]
    SyncFailed(String),
}

/// Something the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A row was written or deleted (committed), by us or a peer: hot-reload hook.
    Changed {
        /// Table.
        table: Table,
        /// Key.
        key: String,
    },
    /// A CDR was appended (committed).
    CdrAppended(CdrId),
    /// Every local write with a sequence number up to this one is durable.
    Committed(Seq),
}

/// Counters, for `/metrics` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Storage commits (fsyncs).
    pub commits: u64,
    /// Changes applied (local and remote).
    pub applied: u64,
    /// Remote changes already held (dropped).
    pub duplicates: u64,
    /// Remote changes that arrived ahead of a missing one (dropped; resent later).
    pub gaps: u64,
    /// Row writes that lost last-writer-wins.
    pub superseded: u64,
    /// Go-back retransmissions.
    pub retransmits: u64,
    /// Snapshots sent.
    pub snapshots_sent: u64,
    /// Snapshots applied.
    pub snapshots_applied: u64,
    /// Local writes refused with [`Error::Backpressure`].
    pub rejected_writes: u64,
    /// Tombstones collected.
    pub tombstones_collected: u64,
    /// Changes sent to a peer as placeholders (its region may not hold their domain).
    pub placeholders_sent: u64,
    /// Changes held here as placeholders (received as such, or refused below).
    pub placeholders_stored: u64,
    /// Changes (or snapshot items) received with content this member's region may not
    /// hold: stored as placeholders (or skipped), never applied. Nonzero only while
    /// members disagree on a placement (it was just changed).
    pub placement_refused: u64,
    /// Placeholders received for a domain this member may hold: dropped (as a gap) to
    /// wait for the real change.
    pub placeholders_refused: u64,
    /// Times a snapshot was withheld from a peer whose region may hold a domain ours may
    /// not (we may lack that data; another member must bootstrap it).
    pub snapshots_withheld: u64,
}

/// A peer as seen from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Whether the link is up.
    pub connected: bool,
    /// What the peer has acknowledged.
    pub acked: VersionVector,
    /// Changes we hold that the peer has not acknowledged (its queue here).
    pub lag: u64,
    /// Changes sent and not yet acknowledged.
    pub inflight: u64,
}

/// Most frontier reports kept per member for tombstone collection.
const FRONTIERS: usize = 64;

#[derive(Debug, Default)]
struct Peer {
    connected: bool,
    hello: bool,
    acked: VersionVector,
    sent: VersionVector,
    last_progress: Millis,
    last_ack: Millis,
    /// Clock reports `(clock, peer's own seq)`, oldest first.
    frontiers: VecDeque<(Hlc, Seq)>,
    snapshot_due: bool,
    /// Something changed that may let us send more (acks, commits, retransmission).
    dirty: bool,
    /// Cached `has_inflight()`, refreshed wherever `sent` or `acked` change.
    outstanding: bool,
    /// The snapshot being received from this peer, if any.
    snapshot_rx: Option<SnapshotRx>,
    /// Its region, once its `Hello` or `Ack` told us (`Some(None)`: no region).
    region: Option<Option<String>>,
    /// A snapshot it needs is being withheld (counted once per episode).
    withheld: bool,
}

/// A snapshot being received: which parts arrived, and the blob stagings it carries
/// (applied only with the version vector, once every part is in).
#[derive(Debug)]
struct SnapshotRx {
    id: Hlc,
    applied: VersionVector,
    /// Placeholder marks it implies (see `Message::Snapshot::withheld`), raised by items
    /// this member refused.
    withheld: VersionVector,
    /// Rows the snapshot carried.
    keys: std::collections::BTreeSet<(Table, String)>,
    parts: u32,
    got: std::collections::BTreeSet<u32>,
    stages: Vec<(MemberId, BlobStage)>,
}

impl Peer {
    fn inflight(&self) -> u64 {
        self.acked.missing_from(&self.sent)
    }

    fn has_inflight(&self) -> bool {
        self.sent.0.iter().any(|(&o, &s)| self.acked.get(o) < s)
    }
}

/// One member's replication state machine over a [`Storage`]. See the module docs for
/// the driving contract.
#[derive(Debug)]
pub struct Replica<S: Storage> {
    cfg: Config,
    storage: S,
    clock: HlcClock,
    /// Durable version vector.
    applied: VersionVector,
    /// Including uncommitted changes.
    working: VersionVector,
    floor: VersionVector,
    /// Per origin, the highest change held here only as a placeholder ([`Mark::Withheld`]).
    withheld: VersionVector,
    /// Clock value of the last commit: every later own change has a greater HLC.
    committed_clock: Hlc,
    own_frontiers: VecDeque<(Hlc, Seq)>,
    pending: usize,
    pending_since: Option<Millis>,
    pending_events: Vec<Event>,
    peers: BTreeMap<MemberId, Peer>,
    events: VecDeque<Event>,
    outbox: VecDeque<(MemberId, Message)>,
    stats: Stats,
    /// Highest own sequence number any peer reported holding.
    own_known: Seq,
    /// Tombstone-collection horizon (durable in the storage).
    collected: Hlc,
    /// Transactions written back to the storage and awaiting a sync, oldest first.
    prepared: VecDeque<Prepared>,
    /// Generation of the last transaction written back.
    written_gen: u64,
    /// Set when a sync failed (see [`Error::SyncFailed`]).
    sync_failed: Option<String>,
    /// Placement of domains looked up so far (dropped when a domain row changes).
    placements: BTreeMap<String, Placement>,
}

/// A transaction written back but not yet known durable.
#[derive(Debug)]
struct Prepared {
    generation: u64,
    working: VersionVector,
    clock: Hlc,
    events: Vec<Event>,
}

impl<S: Storage> Replica<S> {
    /// Opens a replica over `storage`, discarding whatever the storage had not committed.
    ///
    /// # Errors
    /// Storage failure.
    pub fn open(cfg: Config, mut storage: S, now: Millis) -> Result<Replica<S>, Error> {
        let rec = storage.recover()?;
        let mut clock = HlcClock::starting_after(rec.clock);
        clock.observe(rec.clock, now);
        Ok(Replica {
            committed_clock: clock.last(),
            collected: rec.collected,
            clock,
            own_known: rec.applied.get(cfg.member),
            working: rec.applied.clone(),
            applied: rec.applied,
            floor: rec.floor,
            withheld: rec.withheld,
            cfg,
            storage,
            own_frontiers: VecDeque::new(),
            pending: 0,
            pending_since: None,
            pending_events: Vec::new(),
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            outbox: VecDeque::new(),
            stats: Stats::default(),
            prepared: VecDeque::new(),
            written_gen: 0,
            sync_failed: None,
            placements: BTreeMap::new(),
        })
    }

    /// Gives the storage back, discarding anything uncommitted (what a crash does).
    ///
    /// # Errors
    /// Storage failure.
    pub fn into_storage(mut self) -> Result<S, Error> {
        self.storage.rollback()?;
        Ok(self.storage)
    }

    /// This member.
    #[must_use]
    pub fn member(&self) -> MemberId {
        self.cfg.member
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Adds a peer (a cluster member we link to).
    pub fn add_peer(&mut self, peer: MemberId) {
        if peer != self.cfg.member {
            self.peers.entry(peer).or_default();
        }
    }

    /// Removes a peer (it stops holding back tombstone collection and log pruning).
    pub fn remove_peer(&mut self, peer: MemberId) {
        self.peers.remove(&peer);
    }

    /// Configured peers.
    pub fn peers(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.peers.keys().copied()
    }

    /// Durable version vector.
    #[must_use]
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// The latest HLC reading issued or observed (the HLC of the last local write, right
    /// after [`Replica::write`]).
    #[must_use]
    pub fn clock(&self) -> Hlc {
        self.clock.last()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Local changes not yet committed.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// A peer's status, if it is configured.
    #[must_use]
    pub fn peer_status(&self, peer: MemberId) -> Option<PeerStatus> {
        self.peers.get(&peer).map(|p| PeerStatus {
            connected: p.connected,
            acked: p.acked.clone(),
            lag: p.acked.missing_from(&self.applied),
            inflight: p.inflight(),
        })
    }

    /// Direct access to the storage (reads; writes outside the core break replication).
    pub fn storage(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Reads a row's value (`None` if absent or deleted). Sees uncommitted writes.
    ///
    /// # Errors
    /// Storage failure.
    pub fn get(&mut self, table: Table, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.storage.row(table, key)?.and_then(|r| r.value))
    }

    /// Live rows of `table` whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// Storage failure.
    pub fn scan(&mut self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(self
            .storage
            .scan(table, prefix)?
            .into_iter()
            .filter_map(|(k, r)| r.value.map(|v| (k, v)))
            .collect())
    }

    /// CDRs after `after` in id order, at most `max`.
    ///
    /// # Errors
    /// Storage failure.
    pub fn cdrs(&mut self, after: Option<CdrId>, max: usize) -> Result<Vec<StoredCdr>, Error> {
        Ok(self.storage.cdrs(after, max)?)
    }

    /// Writes a local change; it is acknowledged by [`Event::Committed`] once durable.
    /// Returns its sequence number.
    ///
    /// # Errors
    /// [`Error::Backpressure`], [`Error::Recovering`], storage failure.
    pub fn write(&mut self, now: Millis, op: Op) -> Result<Seq, Error> {
        if let Op::Placeholder { domain } = &op {
            return Err(Error::NotPlaced {
                domain: domain.clone(),
                region: self.cfg.region.clone(),
            });
        }
        self.check_placed(domain_of(&op))?;
        self.admit(1)?;
        let seq = self.write_one(now, op)?;
        self.maybe_commit(now)?;
        Ok(seq)
    }

    /// Writes a blob row as chunks of `blob_chunk` bytes (an empty blob is one empty
    /// chunk). Returns the sequence number of the last chunk, whose commit makes the
    /// whole blob durable.
    ///
    /// # Errors
    /// As [`Replica::write`].
    pub fn write_blob(
        &mut self,
        now: Millis,
        table: Table,
        key: &str,
        bytes: &[u8],
    ) -> Result<Seq, Error> {
        self.check_placed(domain_of_key(table, key).map(str::to_owned))?;
        let size = self.cfg.blob_chunk.max(1);
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(size).collect()
        };
        let count = u32::try_from(chunks.len()).map_err(|_| Error::Backpressure {
            pending: chunks.len(),
            limit: u32::MAX as usize,
        })?;
        self.admit(chunks.len())?;
        let mut last = Seq(0);
        for (index, c) in (0..count).zip(chunks) {
            last = self.write_one(
                now,
                Op::BlobChunk {
                    table,
                    key: key.to_owned(),
                    index,
                    count,
                    bytes: c.to_vec(),
                },
            )?;
        }
        // Only now: a blob's chunks commit together, so no crash leaves half of one
        // durable (and streamed) with the rest lost.
        self.maybe_commit(now)?;
        Ok(last)
    }

    /// Commits everything pending (one fsync), then queues acknowledgements and events.
    /// Returns the highest durable own sequence number. The same as
    /// [`Replica::prepare_commit`], [`Storage::sync`] and [`Replica::finish_commit`].
    ///
    /// # Errors
    /// Storage failure; uncommitted work is then rolled back and lost (unacknowledged).
    pub fn commit(&mut self, now: Millis) -> Result<Seq, Error> {
        self.prepare_commit()?;
        if let Some(generation) = self.prepared.back().map(|p| p.generation) {
            let synced = self.storage.sync();
            self.finish_commit(now, generation, synced.map_err(|e| e.to_string()))?;
        }
        Ok(self.applied.get(self.cfg.member))
    }

    /// First half of a pipelined commit: ends the storage transaction holding everything
    /// pending ([`Storage::write_back`], no fsync) so that new changes stage in the next
    /// one. Nothing of it is acknowledged or sent until [`Replica::finish_commit`] is
    /// told it was synced. Returns its generation, or `None` if nothing was pending.
    ///
    /// # Errors
    /// Storage failure (the pending changes are rolled back and lost, unacknowledged),
    /// or an earlier [`Error::SyncFailed`].
    pub fn prepare_commit(&mut self) -> Result<Option<u64>, Error> {
        if let Some(why) = &self.sync_failed {
            return Err(Error::SyncFailed(why.clone()));
        }
        if self.pending == 0 {
            return Ok(None);
        }
        let collected = self.collected;
        let clock = self.clock.last();
        let result = self
            .write_marks()
            .and_then(|()| self.maintain())
            .and_then(|()| self.storage.write_back(clock).map_err(Error::from));
        if let Err(e) = result {
            let _ = self.storage.rollback();
            self.placements.clear();
            self.collected = collected;
            self.working = self
                .prepared
                .back()
                .map_or_else(|| self.applied.clone(), |p| p.working.clone());
            self.pending = 0;
            self.pending_since = None;
            self.pending_events.clear();
            // The generation is used up: the writers it carried learn it failed.
            self.written_gen += 1;
            return Err(e);
        }
        self.pending = 0;
        self.pending_since = None;
        self.written_gen += 1;
        self.prepared.push_back(Prepared {
            generation: self.written_gen,
            working: self.working.clone(),
            clock,
            events: std::mem::take(&mut self.pending_events),
        });
        Ok(Some(self.written_gen))
    }

    /// Second half of a pipelined commit: the storage was synced (`Ok`) after every
    /// transaction up to generation `generation` was written back, so they are durable: queue
    /// their events, acknowledgements to peers, and let their changes be streamed.
    /// Generations already finished are ignored. A failed sync (`Err`) poisons the
    /// replica (see [`Error::SyncFailed`]).
    ///
    /// # Errors
    /// [`Error::SyncFailed`].
    pub fn finish_commit(
        &mut self,
        now: Millis,
        generation: u64,
        synced: Result<(), String>,
    ) -> Result<(), Error> {
        if let Err(why) = synced {
            self.sync_failed.get_or_insert(why.clone());
            return Err(Error::SyncFailed(why));
        }
        let mut last = None;
        while self
            .prepared
            .front()
            .is_some_and(|p| p.generation <= generation)
        {
            let p = self.prepared.pop_front();
            if let Some(p) = p {
                self.events.extend(p.events);
                last = Some((p.working, p.clock));
            }
        }
        let Some((working, clock)) = last else {
            return Ok(());
        };
        self.stats.commits += 1;
        self.applied = working;
        self.committed_clock = clock;
        let own = self.applied.get(self.cfg.member);
        push_frontier(&mut self.own_frontiers, (self.committed_clock, own));
        self.events.push_back(Event::Committed(own));
        let ack = Message::Ack {
            applied: self.applied.clone(),
            clock: self.committed_clock,
            region: self.cfg.region.clone(),
        };
        for (&id, p) in &mut self.peers {
            p.dirty = true;
            if p.connected {
                p.last_ack = now;
                self.outbox.push_back((id, ack.clone()));
            }
        }
        Ok(())
    }

    /// Writes the version vector of the transaction being committed (once per commit
    /// rather than once per change).
    fn write_marks(&mut self) -> Result<(), Error> {
        let written = self.prepared.back().map_or(&self.applied, |p| &p.working);
        let changed: Vec<(MemberId, Seq)> = self
            .working
            .0
            .iter()
            .filter(|&(&o, &s)| written.get(o) < s)
            .map(|(&o, &s)| (o, s))
            .collect();
        for (o, s) in changed {
            self.storage.set_mark(Mark::Applied, o, s)?;
        }
        Ok(())
    }

    /// Generation of the last transaction written back ([`Replica::prepare_commit`]),
    /// or whose write-back failed; changes pending now will be in the next one.
    #[must_use]
    pub fn written_gen(&self) -> u64 {
        self.written_gen
    }

    /// Every transaction up to this generation is durable (acknowledged).
    #[must_use]
    pub fn durable_gen(&self) -> u64 {
        self.prepared
            .front()
            .map_or(self.written_gen, |p| p.generation - 1)
    }

    /// A link to `peer` came up (after authentication).
    pub fn handle_connected(&mut self, now: Millis, peer: MemberId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.connected = true;
        p.hello = false;
        p.snapshot_due = false;
        p.snapshot_rx = None;
        p.withheld = false;
        p.last_progress = now;
        p.last_ack = now;
        self.outbox.push_back((
            peer,
            Message::Hello {
                member: self.cfg.member,
                applied: self.applied.clone(),
                clock: self.committed_clock,
                region: self.cfg.region.clone(),
            },
        ));
    }

    /// The link to `peer` went down. Whatever it had not acknowledged stays in the log.
    pub fn handle_disconnected(&mut self, now: Millis, peer: MemberId) {
        let _ = now;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.connected = false;
            p.hello = false;
            p.snapshot_rx = None;
            p.sent = p.acked.clone();
            p.outstanding = false;
        }
        self.outbox.retain(|(to, _)| *to != peer);
    }

    /// A message arrived from `peer` (already decoded).
    ///
    /// # Errors
    /// [`Error::UnknownPeer`], [`Error::Protocol`] (the driver should drop the link),
    /// storage failure.
    pub fn handle_message(
        &mut self,
        now: Millis,
        peer: MemberId,
        msg: Message,
    ) -> Result<(), Error> {
        if !self.peers.contains_key(&peer) {
            return Err(Error::UnknownPeer(peer));
        }
        match msg {
            Message::Hello {
                member,
                applied,
                clock,
                region,
            } => {
                if member != peer {
                    return Err(ProtocolError::Misbehaved(format!(
                        "hello from {member} on the link of {peer}"
                    ))
                    .into());
                }
                self.own_known = self.own_known.max(applied.get(self.cfg.member));
                let behind = self.floor.0.iter().any(|(&o, &f)| applied.get(o) < f);
                let p = self.peer(peer);
                p.hello = true;
                p.dirty = true;
                p.last_progress = now;
                p.snapshot_due = behind;
                p.region = Some(region);
                push_frontier(&mut p.frontiers, (clock, applied.get(peer)));
                p.sent = applied.clone();
                p.acked = applied;
                p.outstanding = false;
            }
            Message::Ack {
                applied,
                clock,
                region,
            } => {
                self.own_known = self.own_known.max(applied.get(self.cfg.member));
                let behind = self.floor.0.iter().any(|(&o, &f)| applied.get(o) < f);
                let p = self.peer(peer);
                if p.region.as_ref() != Some(&region) {
                    p.region = Some(region);
                    p.dirty = true;
                }
                if p.connected && !p.hello {
                    // The Hello was lost (or overtaken): an Ack says the same things.
                    p.hello = true;
                    p.dirty = true;
                    p.snapshot_due = behind;
                    p.last_progress = now;
                    p.sent = applied.clone();
                    p.acked = applied.clone();
                }
                if !p.acked.dominates(&applied) {
                    p.last_progress = now;
                    p.dirty = true;
                }
                p.acked.merge(&applied);
                p.sent.merge(&p.acked);
                p.outstanding = p.has_inflight();
                push_frontier(&mut p.frontiers, (clock, p.acked.get(peer)));
            }
            Message::Changes(changes) => {
                for c in changes {
                    self.receive(now, c)?;
                }
                self.maybe_commit(now)?;
            }
            Message::Snapshot {
                id,
                applied,
                withheld,
                part,
                parts,
                items,
                ..
            } => {
                if part >= parts {
                    return Err(ProtocolError::Misbehaved(format!(
                        "snapshot part {part} of {parts}"
                    ))
                    .into());
                }
                let p = self.peer(peer);
                if p.snapshot_rx.as_ref().is_none_or(|rx| rx.id != id) {
                    p.snapshot_rx = Some(SnapshotRx {
                        id,
                        applied,
                        withheld,
                        keys: Default::default(),
                        parts,
                        got: Default::default(),
                        stages: Vec::new(),
                    });
                }
                let fresh = p
                    .snapshot_rx
                    .as_mut()
                    .is_some_and(|rx| rx.parts == parts && rx.got.insert(part));
                if fresh {
                    for item in items {
                        self.receive_snapshot_item(now, peer, item)?;
                    }
                    let p = self.peer(peer);
                    let complete = p
                        .snapshot_rx
                        .as_ref()
                        .is_some_and(|rx| rx.got.len() == rx.parts as usize);
                    if complete && let Some(rx) = p.snapshot_rx.take() {
                        self.finish_snapshot(now, peer, rx)?;
                    }
                }
                self.maybe_commit(now)?;
            }
        }
        Ok(())
    }

    /// Time passed: commits when the group-commit interval elapsed, resends to peers that
    /// stopped acknowledging, and sends keepalive acknowledgements.
    ///
    /// # Errors
    /// Storage failure.
    pub fn handle_timeout(&mut self, now: Millis) -> Result<(), Error> {
        if let Some(since) = self.pending_since
            && self.cfg.auto_commit
            && now.since(since) >= self.cfg.commit_interval_ms
        {
            self.commit(now)?;
        }
        let ack = Message::Ack {
            applied: self.applied.clone(),
            clock: self.committed_clock,
            region: self.cfg.region.clone(),
        };
        for (&id, p) in &mut self.peers {
            if !p.connected {
                continue;
            }
            if p.hello && p.outstanding && now.since(p.last_progress) >= self.cfg.retransmit_ms {
                p.sent = p.acked.clone();
                p.outstanding = false;
                p.dirty = true;
                p.last_progress = now;
                self.stats.retransmits += 1;
            }
            if now.since(p.last_ack) >= self.cfg.ack_interval_ms {
                p.last_ack = now;
                self.outbox.push_back((id, ack.clone()));
            }
        }
        Ok(())
    }

    /// When [`Replica::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut next = self
            .pending_since
            .filter(|_| self.cfg.auto_commit)
            .map(|s| s.plus(self.cfg.commit_interval_ms));
        for p in self.peers.values().filter(|p| p.connected) {
            let mut t = p.last_ack.plus(self.cfg.ack_interval_ms);
            if p.hello && p.outstanding {
                t = t.min(p.last_progress.plus(self.cfg.retransmit_ms));
            }
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    /// The next message to send, and to whom. Streams committed log entries each peer
    /// has not acknowledged, within its window, or a snapshot where the log no longer
    /// reaches back far enough.
    ///
    /// # Errors
    /// Storage failure.
    pub fn poll_transmit(&mut self, now: Millis) -> Result<Option<(MemberId, Message)>, Error> {
        if self.outbox.is_empty() {
            let ids: Vec<MemberId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.connected && p.hello && p.dirty)
                .map(|(&id, _)| id)
                .collect();
            for id in ids {
                self.fill(now, id)?;
            }
        }
        Ok(self.outbox.pop_front())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- helpers ------------------------------------------------------------------

    fn peer(&mut self, id: MemberId) -> &mut Peer {
        self.peers.entry(id).or_default()
    }

    fn admit(&mut self, n: usize) -> Result<(), Error> {
        if let Some(why) = &self.sync_failed {
            return Err(Error::SyncFailed(why.clone()));
        }
        let own = self.working.get(self.cfg.member);
        if own < self.own_known {
            return Err(Error::Recovering {
                have: own,
                known: self.own_known,
            });
        }
        if self.pending + n > self.cfg.max_pending {
            self.stats.rejected_writes += 1;
            return Err(Error::Backpressure {
                pending: self.pending,
                limit: self.cfg.max_pending,
            });
        }
        Ok(())
    }

    fn write_one(&mut self, now: Millis, op: Op) -> Result<Seq, Error> {
        let seq = self.working.get(self.cfg.member).next();
        let change = Change {
            origin: self.cfg.member,
            seq,
            hlc: self.clock.tick(now),
            op,
        };
        self.apply(now, &change)?;
        Ok(seq)
    }

    fn maybe_commit(&mut self, now: Millis) -> Result<(), Error> {
        if self.cfg.auto_commit && self.pending >= self.cfg.commit_batch {
            self.commit(now)?;
        }
        Ok(())
    }

    fn receive(&mut self, now: Millis, c: Change) -> Result<(), Error> {
        let have = self.working.get(c.origin);
        if c.seq <= have {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if c.seq != have.next() {
            self.stats.gaps += 1;
            return Ok(());
        }
        let Some(c) = self.admit_remote(c)? else {
            return Ok(());
        };
        self.clock.observe(c.hlc, now);
        self.apply(now, &c)
    }

    // ---- data sovereignty -----------------------------------------------------------

    /// The placement of `domain` as this member knows it (`Global` without a row).
    fn placement(&mut self, domain: &str) -> Result<Placement, Error> {
        if let Some(p) = self.placements.get(domain) {
            return Ok(p.clone());
        }
        let p = self
            .storage
            .row(Table::Domains, domain)?
            .and_then(|r| r.value)
            .map(|v| placement_of(&v))
            .unwrap_or_default();
        self.placements.insert(domain.to_owned(), p.clone());
        Ok(p)
    }

    /// Whether this member may hold data of `domain` (`None`: data that goes everywhere).
    fn holds(&mut self, domain: Option<&str>) -> Result<bool, Error> {
        let Some(d) = domain else { return Ok(true) };
        let region = self.cfg.region.clone();
        Ok(self.placement(d)?.allows(region.as_deref()))
    }

    /// The check of a local write. A member without a region is a single-site store (the
    /// embedded default of `voxplane up` and the provisioning commands) and may write any
    /// domain, or its own CDRs would be refused; what it writes still reaches peers only as
    /// placement allows, and as a receiver it holds only global data (no peer sends it
    /// placed data).
    fn check_placed(&mut self, domain: Option<String>) -> Result<(), Error> {
        if self.cfg.region.is_none() || self.holds(domain.as_deref())? {
            return Ok(());
        }
        Err(Error::NotPlaced {
            domain: domain.unwrap_or_default(),
            region: self.cfg.region.clone(),
        })
    }

    /// The receiver's check of a change that is next in sequence: what to apply, or
    /// `None` to drop it (a placeholder for a domain we may hold: the real change must
    /// come, from its origin or another member that holds it).
    fn admit_remote(&mut self, c: Change) -> Result<Option<Change>, Error> {
        let domain = domain_of(&c.op);
        let mine = self.holds(domain.as_deref())?;
        let broken_blob = match &c.op {
            // A blob whose earlier chunks reached us as placeholders (the placement
            // changed in between): it can never complete here.
            Op::BlobChunk { index, .. } if *index > 0 && mine => {
                self.storage.stage(c.origin)?.is_none()
            }
            _ => false,
        };
        match (&c.op, mine) {
            (Op::Placeholder { .. }, true) => {
                self.stats.placeholders_refused += 1;
                Ok(None)
            }
            (Op::Placeholder { .. }, false) => {
                self.stats.placeholders_stored += 1;
                Ok(Some(c))
            }
            (_, false) => {
                self.stats.placement_refused += 1;
                self.stats.placeholders_stored += 1;
                Ok(Some(withheld(c, domain.unwrap_or_default())))
            }
            (_, true) if broken_blob => {
                self.stats.placeholders_stored += 1;
                Ok(Some(withheld(c, domain.unwrap_or_default())))
            }
            (_, true) => Ok(Some(c)),
        }
    }

    /// The sender's rule for a committed change we hold, towards a peer of `region`
    /// (`None`: not known yet): the change itself, a placeholder in its place, or `None`
    /// to stop streaming its origin to that peer (it may hold the change but we hold
    /// only a placeholder, or we do not know its region yet).
    fn outgoing(
        &mut self,
        region: Option<&Option<String>>,
        c: Change,
    ) -> Result<Option<Change>, Error> {
        let Some(domain) = domain_of(&c.op) else {
            return Ok(Some(c));
        };
        let placement = self.placement(&domain)?;
        let placeholder = matches!(c.op, Op::Placeholder { .. });
        if placement == Placement::Global && !placeholder {
            return Ok(Some(c));
        }
        let Some(region) = region else {
            return Ok(None);
        };
        Ok(match (placeholder, placement.allows(region.as_deref())) {
            (true, true) => None,
            (true, false) | (false, true) => Some(c),
            (false, false) => {
                self.stats.placeholders_sent += 1;
                Some(withheld(c, domain))
            }
        })
    }

    /// Whether a snapshot of ours may go to a peer of `region` that holds `has`: if
    /// it would carry the peer past a change we hold only as a placeholder, only if
    /// every domain the peer may hold we may hold too (else we may lack its data).
    fn may_snapshot(
        &mut self,
        region: Option<&Option<String>>,
        has: &VersionVector,
    ) -> Result<bool, Error> {
        let Some(region) = region else {
            return Ok(false);
        };
        if self.withheld.0.iter().all(|(&o, &w)| w <= has.get(o)) {
            return Ok(true);
        }
        let mine = self.cfg.region.clone();
        for (_, row) in self.storage.scan(Table::Domains, "")? {
            if let Some(v) = row.value {
                let p = placement_of(&v);
                if p.allows(region.as_deref()) && !p.allows(mine.as_deref()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Applies one change (local or remote, in sequence) into the open transaction.
    fn apply(&mut self, now: Millis, c: &Change) -> Result<(), Error> {
        self.storage.append_log(c)?;
        // The durable version vector is written once per commit (`prepare_commit`).
        self.working.set(c.origin, c.seq);
        self.pending += 1;
        self.pending_since.get_or_insert(now);
        self.stats.applied += 1;
        match &c.op {
            Op::Placeholder { .. } => {
                if self.withheld.get(c.origin) < c.seq {
                    self.storage.set_mark(Mark::Withheld, c.origin, c.seq)?;
                    self.withheld.set(c.origin, c.seq);
                }
                // A blob of this origin in progress cannot continue past it.
                if self.storage.stage(c.origin)?.is_some() {
                    self.storage.set_stage(c.origin, None)?;
                }
            }
            Op::Put { table, key, value } => {
                self.lww(*table, key, c.version(), c.seq, Some(value.clone()))?;
            }
            Op::Delete { table, key } => self.lww(*table, key, c.version(), c.seq, None)?,
            Op::AppendCdr { record } => {
                let id = CdrId {
                    origin: c.origin,
                    seq: c.seq,
                };
                if self.storage.insert_cdr(&StoredCdr {
                    id,
                    hlc: c.hlc,
                    record: record.clone(),
                })? {
                    self.pending_events.push(Event::CdrAppended(id));
                }
            }
            Op::BlobChunk {
                table,
                key,
                index,
                count,
                bytes,
            } => {
                let stage = if *index == 0 {
                    Some(BlobStage {
                        table: *table,
                        key: key.clone(),
                        next: 0,
                        count: *count,
                        bytes: Vec::new(),
                    })
                } else {
                    self.storage.stage(c.origin)?
                };
                match stage {
                    Some(mut s)
                        if s.next == *index
                            && s.count == *count
                            && s.table == *table
                            && s.key == *key =>
                    {
                        s.bytes.extend_from_slice(bytes);
                        s.next += 1;
                        if s.next == s.count {
                            self.storage.set_stage(c.origin, None)?;
                            self.lww(*table, key, c.version(), c.seq, Some(s.bytes))?;
                        } else {
                            self.storage.set_stage(c.origin, Some(&s))?;
                        }
                    }
                    _ => {
                        // A chunk that continues no blob: impossible with dense per-origin
                        // order (a blob's chunks commit together); refuse to guess.
                        return Err(ProtocolError::Misbehaved(format!(
                            "blob chunk {index}/{count} of {key} from {} continues nothing",
                            c.origin
                        ))
                        .into());
                    }
                }
            }
        }
        Ok(())
    }

    fn lww(
        &mut self,
        table: Table,
        key: &str,
        version: crate::types::Version,
        seq: Seq,
        value: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        let wins = match self.storage.row(table, key)? {
            Some(cur) => version > cur.version,
            None => true,
        };
        if wins {
            if table == Table::Domains {
                self.placements.remove(key);
            }
            self.storage.put_row(
                table,
                key,
                &Row {
                    version,
                    seq,
                    value,
                },
            )?;
            self.pending_events.push(Event::Changed {
                table,
                key: key.to_owned(),
            });
        } else {
            self.stats.superseded += 1;
        }
        Ok(())
    }

    fn receive_snapshot_item(
        &mut self,
        now: Millis,
        peer: MemberId,
        item: SnapshotItem,
    ) -> Result<(), Error> {
        match item {
            SnapshotItem::Row {
                table,
                key,
                row: Row { version, .. },
            } if !self.holds(domain_of_key(table, &key))? => {
                self.refuse_item(peer, version.origin);
            }
            SnapshotItem::Stage { origin, stage }
                if !self.holds(domain_of_key(stage.table, &stage.key))? =>
            {
                self.refuse_item(peer, origin);
            }
            SnapshotItem::Cdr { id, record, .. }
                if !self.holds(crate::placement::cdr_domain(&record).as_deref())? =>
            {
                self.refuse_item(peer, id.origin);
            }
            SnapshotItem::Row { table, key, row } => {
                self.clock.observe(row.version.hlc, now);
                // A write our version vector covers is already reflected here (applied,
                // superseded, or deleted and collected): applying it again could resurrect.
                if row.seq > self.working.get(row.version.origin) {
                    self.lww(table, &key, row.version, row.seq, row.value)?;
                }
                if let Some(rx) = self.peer(peer).snapshot_rx.as_mut() {
                    rx.keys.insert((table, key));
                }
            }
            SnapshotItem::Cdr { id, hlc, record } => {
                self.clock.observe(hlc, now);
                if self.storage.insert_cdr(&StoredCdr { id, hlc, record })? {
                    self.pending_events.push(Event::CdrAppended(id));
                }
            }
            SnapshotItem::Stage { origin, stage } => {
                if let Some(rx) = self.peer(peer).snapshot_rx.as_mut() {
                    rx.stages.push((origin, stage));
                }
            }
        }
        self.pending += 1;
        self.pending_since.get_or_insert(now);
        Ok(())
    }

    /// A snapshot item this member may not hold: counted, and its origin marked.
    fn refuse_item(&mut self, peer: MemberId, origin: MemberId) {
        self.stats.placement_refused += 1;
        if let Some(rx) = self.peer(peer).snapshot_rx.as_mut() {
            let upto = rx.applied.get(origin);
            if rx.withheld.get(origin) < upto {
                rx.withheld.set(origin, upto);
            }
        }
    }

    fn finish_snapshot(
        &mut self,
        now: Millis,
        peer: MemberId,
        rx: SnapshotRx,
    ) -> Result<(), Error> {
        let sender = self.peers.get(&peer).and_then(|p| p.region.clone());
        let SnapshotRx {
            applied: vv,
            withheld,
            stages,
            keys,
            ..
        } = rx;
        // The sender held every change its version vector covers. A row of ours written
        // by such a change, whose key the snapshot lacks, was deleted later and the
        // tombstone collected: drop it. (It reached us from another peer's older log.)
        // Rows the vector does not cover are newer than the snapshot and stay.
        for t in Table::ALL {
            for (key, row) in self.storage.scan(t, "")? {
                if row.seq <= vv.get(row.version.origin) && !keys.contains(&(t, key.clone())) {
                    // Unless the sender may not hold it (then it left it out).
                    if let Some(d) = domain_of_key(t, &key) {
                        let kept = match &sender {
                            Some(r) => self.placement(d)?.allows(r.as_deref()),
                            None => false,
                        };
                        if !kept {
                            continue;
                        }
                    }
                    if t == Table::Domains {
                        self.placements.remove(&key);
                    }
                    self.storage.delete_row(t, &key)?;
                    if row.value.is_some() {
                        self.pending_events.push(Event::Changed { table: t, key });
                    }
                }
            }
        }
        for (&o, &s) in &vv.0 {
            if self.working.get(o) >= s {
                continue;
            }
            // We jump to the snapshot's state of `o`: its blob in progress (if any)
            // replaces ours, and our log no longer covers `o` up to `s`.
            let stage = stages.iter().find(|(so, _)| *so == o).map(|(_, st)| st);
            self.storage.set_stage(o, stage)?;
            self.storage.set_mark(Mark::Applied, o, s)?;
            self.working.set(o, s);
            // Data the snapshot left out (we may not hold it): as if by placeholders.
            let w = withheld.get(o).min(s);
            if self.withheld.get(o) < w {
                self.storage.set_mark(Mark::Withheld, o, w)?;
                self.withheld.set(o, w);
            }
            if self.floor.get(o) < s {
                self.storage.set_mark(Mark::Floor, o, s)?;
                self.floor.set(o, s);
            }
        }
        self.stats.snapshots_applied += 1;
        self.pending += 1;
        self.pending_since.get_or_insert(now);
        Ok(())
    }

    /// Queues what `id` needs: a snapshot, or log entries within its window.
    fn fill(&mut self, now: Millis, id: MemberId) -> Result<(), Error> {
        let Some(p) = self.peers.get_mut(&id) else {
            return Ok(());
        };
        p.dirty = false;
        let p = &*p;
        let behind_floor = self
            .applied
            .0
            .iter()
            .any(|(&o, &s)| p.sent.get(o) < s && p.sent.get(o) < self.floor.get(o));
        if p.snapshot_due || behind_floor {
            return self.send_snapshot(now, id);
        }
        let mut inflight = p.inflight();
        let mut sent = p.sent.clone();
        let region = p.region.clone();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let origins: Vec<(MemberId, Seq)> = self.applied.0.iter().map(|(&o, &s)| (o, s)).collect();
        'origin: for (o, upto) in origins {
            while inflight < self.cfg.window && sent.get(o) < upto {
                let room = usize::try_from(self.cfg.window - inflight)
                    .unwrap_or(usize::MAX)
                    .min(256);
                let list = self.storage.log_range(o, sent.get(o), upto, room)?;
                if list.first().map(|c| c.seq) != Some(sent.get(o).next()) {
                    // The log no longer reaches back: send a snapshot next time.
                    let p = self.peer(id);
                    p.snapshot_due = true;
                    p.dirty = true;
                    return Ok(());
                }
                for c in list {
                    let seq = c.seq;
                    let Some(c) = self.outgoing(region.as_ref(), c)? else {
                        // Data sovereignty: the peer may hold this change and we hold
                        // only its placeholder (or its region is not known yet). It gets
                        // the change from its origin or another member that holds it;
                        // this origin's stream from us waits for its acknowledgement.
                        continue 'origin;
                    };
                    debug_assert_eq!(c.seq, seq);
                    sent.set(o, c.seq);
                    inflight += 1;
                    bytes += c.weight();
                    batch.push(c);
                    if bytes >= self.cfg.batch_bytes {
                        self.outbox
                            .push_back((id, Message::Changes(std::mem::take(&mut batch))));
                        bytes = 0;
                    }
                }
            }
        }
        if !batch.is_empty() {
            self.outbox.push_back((id, Message::Changes(batch)));
        }
        let p = self.peer(id);
        if !p.has_inflight() {
            p.last_progress = now;
        }
        p.sent = sent;
        p.outstanding = p.has_inflight();
        Ok(())
    }

    fn send_snapshot(&mut self, now: Millis, id: MemberId) -> Result<(), Error> {
        let region = self.peers.get(&id).and_then(|p| p.region.clone());
        let has = self
            .peers
            .get(&id)
            .map(|p| p.sent.clone())
            .unwrap_or_default();
        if !self.may_snapshot(region.as_ref(), &has)? {
            let p = self.peer(id);
            if !p.withheld {
                p.withheld = true;
                self.stats.snapshots_withheld += 1;
            }
            return Ok(());
        }
        let region = region.unwrap_or_default();
        // A snapshot describes committed state only.
        self.commit(now)?;
        let mut items = Vec::new();
        // Our placeholders, and the origins of what we leave out, are the peer's.
        let mut withheld = self.withheld.clone();
        let applied = self.applied.clone();
        let mut left_out = |o: MemberId| {
            if withheld.get(o) < applied.get(o) {
                withheld.set(o, applied.get(o));
            }
        };
        for t in Table::ALL {
            for (key, row) in self.storage.scan(t, "")? {
                // Rows of domains the peer may not hold are left out (its version
                // vector still jumps: they are its placeholders).
                if let Some(d) = domain_of_key(t, &key)
                    && !self.placement(d)?.allows(region.as_deref())
                {
                    left_out(row.version.origin);
                    continue;
                }
                items.push(SnapshotItem::Row { table: t, key, row });
            }
        }
        let mut after = None;
        loop {
            let page = self.storage.cdrs(after, 4_096)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for c in page {
                if let Some(d) = crate::placement::cdr_domain(&c.record)
                    && !self.placement(&d)?.allows(region.as_deref())
                {
                    left_out(c.id.origin);
                    continue;
                }
                items.push(SnapshotItem::Cdr {
                    id: c.id,
                    hlc: c.hlc,
                    record: c.record,
                });
            }
        }
        for (origin, stage) in self.storage.stages()? {
            if let Some(d) = domain_of_key(stage.table, &stage.key)
                && !self.placement(d)?.allows(region.as_deref())
            {
                left_out(origin);
                continue;
            }
            items.push(SnapshotItem::Stage { origin, stage });
        }
        let per = self.cfg.snapshot_items.max(1);
        let mut parts: Vec<Vec<SnapshotItem>> = Vec::new();
        let mut it = items.into_iter().peekable();
        while it.peek().is_some() {
            parts.push(it.by_ref().take(per).collect());
        }
        if parts.is_empty() {
            parts.push(Vec::new());
        }
        let n = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        let snapshot_id = self.clock.tick(now);
        for (part, items) in (0..n).zip(parts) {
            self.outbox.push_back((
                id,
                Message::Snapshot {
                    id: snapshot_id,
                    applied: self.applied.clone(),
                    collected: self.collected,
                    withheld: withheld.clone(),
                    part,
                    parts: n,
                    items,
                },
            ));
        }
        self.stats.snapshots_sent += 1;
        let applied = self.applied.clone();
        let p = self.peer(id);
        p.snapshot_due = false;
        p.withheld = false;
        p.sent.merge(&applied);
        p.outstanding = p.has_inflight();
        p.last_progress = now;
        Ok(())
    }

    /// Log pruning and tombstone collection, inside the transaction being committed.
    fn maintain(&mut self) -> Result<(), Error> {
        // Log: keep what some peer still needs, up to `log_retention` entries.
        let origins: Vec<(MemberId, Seq)> = self.working.0.iter().map(|(&o, &s)| (o, s)).collect();
        for (o, top) in origins {
            let acked = self
                .peers
                .values()
                .map(|p| p.acked.get(o))
                .min()
                .unwrap_or(top)
                .min(top);
            let upto = acked.max(Seq(top.0.saturating_sub(self.cfg.log_retention)));
            if upto > self.floor.get(o) {
                self.storage.prune_log(o, upto)?;
                self.storage.set_mark(Mark::Floor, o, upto)?;
                self.floor.set(o, upto);
            }
        }
        // Tombstones: collectable up to the stable clock.
        if let Some(stable) = self.stable_clock()
            && stable > self.collected
        {
            self.stats.tombstones_collected += self.storage.collect_tombstones(stable)? as u64;
            self.storage.set_collected(stable)?;
            self.collected = stable;
        }
        Ok(())
    }

    /// The largest HLC `t` such that every member holds every change with HLC `<= t`
    /// (as far as we know): for each member `y`, the latest clock report of `y` whose
    /// own sequence number every member has acknowledged; the minimum over members.
    /// Any change made later has a greater HLC, so a tombstone at or below `t` can no
    /// longer be overtaken by an older write arriving late.
    fn stable_clock(&mut self) -> Option<Hlc> {
        // With no peer known, "every member" is unknowable: keep every tombstone.
        if self.peers.is_empty() {
            return None;
        }
        let me = self.cfg.member;
        let have = |o: MemberId, peers: &BTreeMap<MemberId, Peer>, applied: &VersionVector| {
            peers
                .values()
                .map(|p| p.acked.get(o))
                .chain(std::iter::once(applied.get(o)))
                .min()
                .unwrap_or_default()
        };
        let mut stable: Option<Hlc> = None;
        let mine = have(me, &self.peers, &self.applied);
        let h = settle(&mut self.own_frontiers, mine)?;
        stable = Some(stable.map_or(h, |s| s.min(h)));
        let ids: Vec<MemberId> = self.peers.keys().copied().collect();
        for y in ids {
            let held = have(y, &self.peers, &self.applied);
            let p = self.peers.get_mut(&y)?;
            let h = settle(&mut p.frontiers, held)?;
            stable = Some(stable.map_or(h, |s| s.min(h)));
        }
        stable
    }
}

/// The placeholder that stands for `c` where its domain's data may not be held.
fn withheld(c: Change, domain: String) -> Change {
    Change {
        op: Op::Placeholder { domain },
        ..c
    }
}

/// Drops frontier reports superseded by a later one that every member already holds;
/// returns the clock of the latest such report.
fn settle(frontiers: &mut VecDeque<(Hlc, Seq)>, held: Seq) -> Option<Hlc> {
    while frontiers.len() >= 2 && frontiers[1].1 <= held {
        frontiers.pop_front();
    }
    frontiers.front().filter(|f| f.1 <= held).map(|f| f.0)
}

fn push_frontier(frontiers: &mut VecDeque<(Hlc, Seq)>, f: (Hlc, Seq)) {
    if frontiers.back() == Some(&f) {
        return;
    }
    if frontiers.len() >= FRONTIERS {
        // Replace the newest: conservative (a later report only delays collection).
        frontiers.pop_back();
    }
    frontiers.push_back(f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn replica(id: u32) -> Replica<MemStorage> {
        let mut cfg = Config::new(MemberId(id));
        cfg.blob_chunk = 4;
        Replica::open(cfg, MemStorage::new(), Millis(1_000)).unwrap()
    }

    fn put(key: &str, v: &str) -> Op {
        Op::Put {
            table: Table::Domains,
            key: key.into(),
            value: v.as_bytes().to_vec(),
        }
    }

    /// Moves every message between two replicas until both are quiet.
    fn pump(a: &mut Replica<MemStorage>, b: &mut Replica<MemStorage>, now: Millis) {
        loop {
            let mut moved = false;
            while let Some((to, m)) = a.poll_transmit(now).unwrap() {
                assert_eq!(to, b.member());
                b.handle_message(now, a.member(), m).unwrap();
                moved = true;
            }
            while let Some((to, m)) = b.poll_transmit(now).unwrap() {
                assert_eq!(to, a.member());
                a.handle_message(now, b.member(), m).unwrap();
                moved = true;
            }
            a.commit(now).unwrap();
            b.commit(now).unwrap();
            if !moved {
                break;
            }
        }
    }

    fn link(a: &mut Replica<MemStorage>, b: &mut Replica<MemStorage>, now: Millis) {
        a.add_peer(b.member());
        b.add_peer(a.member());
        a.handle_connected(now, b.member());
        b.handle_connected(now, a.member());
    }

    fn placed(id: u32, region: &str) -> Replica<MemStorage> {
        let mut cfg = Config::new(MemberId(id));
        cfg.region = Some(region.into());
        Replica::open(cfg, MemStorage::new(), Millis(1_000)).unwrap()
    }

    fn unlink(a: &mut Replica<MemStorage>, b: &mut Replica<MemStorage>, now: Millis) {
        a.handle_disconnected(now, b.member());
        b.handle_disconnected(now, a.member());
    }

    #[test]
    fn placed_domains_reach_only_their_regions_and_placeholders_are_never_relayed_as_data() {
        let now = Millis(2_000);
        let (mut eu1, mut eu2, mut us) = (placed(1, "eu"), placed(2, "eu"), placed(3, "us"));
        // Linked before the writes (a member with no peer prunes its log at once).
        link(&mut eu1, &mut us, now);
        for (r, peers) in [(&mut eu1, [2, 3]), (&mut eu2, [1, 3]), (&mut us, [1, 2])] {
            peers.into_iter().for_each(|p| r.add_peer(MemberId(p)));
        }
        let domain = br#"{"name":"eu.d","placement":{"Regions":["eu"]}}"#.to_vec();
        eu1.write(
            now,
            Op::Put {
                table: Table::Domains,
                key: "eu.d".into(),
                value: domain,
            },
        )
        .unwrap();
        let sub = Op::Put {
            table: Table::Subscribers,
            key: "eu.d/alice".into(),
            value: b"a".to_vec(),
        };
        eu1.write(now, sub.clone()).unwrap();
        let cdr = br#"{"domain":"eu.d","call_id":"c1"}"#.to_vec();
        eu1.write(now, Op::AppendCdr { record: cdr }).unwrap();
        eu1.write_blob(now, Table::Voicemails, "eu.d/alice/1", b"voice")
            .unwrap();
        eu1.write(
            now,
            Op::Put {
                table: Table::Trunks,
                key: "t1".into(),
                value: b"t".to_vec(),
            },
        )
        .unwrap();
        eu1.commit(now).unwrap();

        // The US member gets the domain row and the trunk, placeholders for the rest.
        pump(&mut eu1, &mut us, now);
        assert_eq!(us.applied(), eu1.applied());
        assert!(us.get(Table::Trunks, "t1").unwrap().is_some());
        assert!(us.get(Table::Domains, "eu.d").unwrap().is_some());
        assert!(us.get(Table::Subscribers, "eu.d/alice").unwrap().is_none());
        assert!(us.get(Table::Voicemails, "eu.d/alice/1").unwrap().is_none());
        assert!(us.cdrs(None, 10).unwrap().is_empty());
        // Subscriber, CDR, voicemail (one chunk).
        let placeholders = 3;
        assert_eq!(eu1.stats().placeholders_sent, placeholders as u64);
        assert_eq!(us.stats().placeholders_stored, placeholders as u64);
        // It may not write the domain's data either.
        assert!(matches!(us.write(now, sub), Err(Error::NotPlaced { .. })));

        // Relayed by the US member alone, an EU member gets the domain row only: the US
        // member stops at its first placeholder rather than pass it on as data.
        unlink(&mut eu1, &mut us, now);
        link(&mut eu2, &mut us, now);
        pump(&mut eu2, &mut us, now);
        assert_eq!(eu2.applied().get(MemberId(1)), Seq(1));
        assert_eq!(eu2.stats().placeholders_stored, 0);
        assert!(us.peer_status(MemberId(2)).unwrap().lag > 0);

        // From the origin, it gets everything.
        unlink(&mut eu2, &mut us, now);
        link(&mut eu1, &mut eu2, now);
        pump(&mut eu1, &mut eu2, now);
        assert_eq!(eu2.applied(), eu1.applied());
        assert_eq!(
            eu2.get(Table::Voicemails, "eu.d/alice/1").unwrap().unwrap(),
            b"voice"
        );
        assert_eq!(eu2.cdrs(None, 10).unwrap().len(), 1);

        // A snapshot for the US member leaves EU data out, and the US member's own
        // snapshot is withheld from EU members (it lacks their data).
        let none = VersionVector::default();
        assert!(eu1.may_snapshot(Some(&Some("us".into())), &none).unwrap());
        assert!(!us.may_snapshot(Some(&Some("eu".into())), &none).unwrap());
        assert!(us.may_snapshot(Some(&Some("us".into())), &none).unwrap());
        // Past its placeholders, it may.
        let all = us.applied().clone();
        assert!(us.may_snapshot(Some(&Some("eu".into())), &all).unwrap());
    }

    #[test]
    fn a_placement_change_applies_to_new_changes_and_receivers_check_for_themselves() {
        let now = Millis(2_000);
        let (mut eu, mut us) = (placed(1, "eu"), placed(2, "us"));
        link(&mut eu, &mut us, now);
        let place = |regions: &[&str]| Op::Put {
            table: Table::Domains,
            key: "d".into(),
            value: crate::record::encode(&crate::record::Domain {
                name: "d".into(),
                placement: Placement::Regions(regions.iter().map(|r| (*r).to_owned()).collect()),
                description: String::new(),
            }),
        };
        let sub = |user: &str| Op::Put {
            table: Table::Subscribers,
            key: format!("d/{user}"),
            value: b"x".to_vec(),
        };
        let step = |eu: &mut Replica<MemStorage>, us: &mut Replica<MemStorage>, ops: Vec<Op>| {
            for op in ops {
                eu.write(now, op).unwrap();
            }
            eu.commit(now).unwrap();
            pump(eu, us, now);
        };
        step(&mut eu, &mut us, vec![place(&["eu"]), sub("a")]);
        // Widened: new changes reach the US member; older ones are not back-filled.
        step(&mut eu, &mut us, vec![place(&["eu", "us"]), sub("b")]);
        // Narrowed: new changes no longer do; what it holds stays.
        step(&mut eu, &mut us, vec![place(&["eu"]), sub("c")]);
        let held = |r: &mut Replica<MemStorage>, u: &str| {
            r.get(Table::Subscribers, &format!("d/{u}"))
                .unwrap()
                .is_some()
        };
        assert_eq!(
            ["a", "b", "c"].map(|u| held(&mut us, u)),
            [false, true, false]
        );
        assert_eq!(us.applied(), eu.applied());

        // A sender with another view (here: a crafted change) is checked by the receiver:
        // content it may not hold is stored as a placeholder, never applied.
        let next = us.applied().get(MemberId(1)).next();
        let change = Change {
            origin: MemberId(1),
            seq: next,
            hlc: Hlc {
                wall: 3_000,
                logical: 0,
            },
            op: sub("z"),
        };
        us.handle_message(now, MemberId(1), Message::Changes(vec![change]))
            .unwrap();
        us.commit(now).unwrap();
        assert!(!held(&mut us, "z"));
        assert_eq!(us.applied().get(MemberId(1)), next);
        assert_eq!(us.stats().placement_refused, 1);
        // A placeholder for a domain it may hold (no row: global) is dropped until the
        // data comes.
        let mut eu2 = placed(3, "eu");
        eu2.add_peer(MemberId(1));
        let fake = Change {
            origin: MemberId(1),
            seq: Seq(1),
            hlc: Hlc {
                wall: 3_000,
                logical: 1,
            },
            op: Op::Placeholder { domain: "d".into() },
        };
        eu2.handle_message(now, MemberId(1), Message::Changes(vec![fake]))
            .unwrap();
        assert_eq!(eu2.applied().get(MemberId(1)), Seq(0));
        assert_eq!(eu2.stats().placeholders_refused, 1);
    }

    #[test]
    fn write_is_acknowledged_only_after_commit() {
        let mut r = replica(1);
        let seq = r.write(Millis(1_000), put("a", "1")).unwrap();
        assert_eq!(seq, Seq(1));
        assert_eq!(r.poll_event(), None);
        assert_eq!(r.poll_timeout(), Some(Millis(1_002)));
        r.handle_timeout(Millis(1_002)).unwrap();
        assert_eq!(
            r.poll_event(),
            Some(Event::Changed {
                table: Table::Domains,
                key: "a".into()
            })
        );
        assert_eq!(r.poll_event(), Some(Event::Committed(Seq(1))));
        assert_eq!(r.stats().commits, 1);
    }

    #[test]
    fn pipelined_commit_streams_and_acknowledges_only_after_sync() {
        let now = Millis(1_000);
        let mut a = replica(1);
        a.cfg.auto_commit = false;
        let mut b = replica(2);
        link(&mut a, &mut b, now);
        pump(&mut a, &mut b, now);
        a.write(now, put("x", "1")).unwrap();
        let g1 = a.prepare_commit().unwrap().unwrap();
        // Staged into the next transaction while the first awaits its fsync.
        a.write(now, put("y", "2")).unwrap();
        assert_eq!(a.durable_gen(), g1 - 1);
        assert!(
            a.poll_transmit(now).unwrap().is_none(),
            "nothing sent before sync"
        );
        assert!(!std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::Committed(_))));
        // A crash now loses both (the worst case): written back is not durable.
        let s = a.into_storage().unwrap();
        let mut a = Replica::open(Config::new(MemberId(1)), s, now).unwrap();
        assert_eq!(a.applied().get(MemberId(1)), Seq(0));
        assert_eq!(a.get(Table::Domains, "x").unwrap(), None);

        a.cfg.auto_commit = false;
        a.write(now, put("x", "3")).unwrap();
        let g1 = a.prepare_commit().unwrap().unwrap();
        a.write(now, put("y", "4")).unwrap();
        let g2 = a.prepare_commit().unwrap().unwrap();
        a.storage().sync().unwrap();
        a.finish_commit(now, g1, Ok(())).unwrap();
        assert_eq!(a.durable_gen(), g1);
        assert_eq!(a.applied().get(MemberId(1)), Seq(1));
        a.finish_commit(now, g2, Ok(())).unwrap();
        a.finish_commit(now, g1, Ok(())).unwrap(); // already done: ignored
        assert_eq!(a.applied().get(MemberId(1)), Seq(2));
        // A failed fsync poisons: no more writes, nothing acknowledged.
        a.write(now, put("z", "5")).unwrap();
        let g3 = a.prepare_commit().unwrap().unwrap();
        assert!(matches!(
            a.finish_commit(now, g3, Err("EIO".into())),
            Err(Error::SyncFailed(_))
        ));
        assert!(matches!(
            a.write(now, put("w", "6")),
            Err(Error::SyncFailed(_))
        ));
        assert_eq!(a.applied().get(MemberId(1)), Seq(2));
    }

    #[test]
    fn uncommitted_writes_are_lost_on_crash_and_sequence_numbers_reused() {
        let mut r = replica(1);
        r.write(Millis(1_000), put("a", "1")).unwrap();
        r.commit(Millis(1_000)).unwrap();
        r.write(Millis(1_001), put("b", "2")).unwrap();
        let s = r.into_storage().unwrap();
        let mut r = Replica::open(Config::new(MemberId(1)), s, Millis(1_002)).unwrap();
        assert_eq!(r.get(Table::Domains, "b").unwrap(), None);
        assert_eq!(r.get(Table::Domains, "a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(r.write(Millis(1_003), put("c", "3")).unwrap(), Seq(2));
    }

    #[test]
    fn two_members_converge_with_last_writer_wins() {
        let mut a = replica(1);
        let mut b = replica(2);
        let now = Millis(1_000);
        a.write(now, put("k", "from-a")).unwrap();
        b.write(now, put("k", "from-b")).unwrap(); // same wall time: origin 2 wins
        a.commit(now).unwrap();
        b.commit(now).unwrap();
        link(&mut a, &mut b, now);
        pump(&mut a, &mut b, now);
        assert_eq!(
            a.get(Table::Domains, "k").unwrap(),
            Some(b"from-b".to_vec())
        );
        assert_eq!(
            b.get(Table::Domains, "k").unwrap(),
            Some(b"from-b".to_vec())
        );
        assert_eq!(a.applied(), b.applied());
        // Whether b saw a's losing write depends on who snapshots first; never both.
        assert!(a.stats().superseded + b.stats().superseded <= 1);
    }

    #[test]
    fn duplicates_and_gaps_are_dropped() {
        let mut a = replica(1);
        let mut b = replica(2);
        let now = Millis(1_000);
        link(&mut a, &mut b, now);
        pump(&mut a, &mut b, now);
        for i in 0..3 {
            a.write(now, put(&format!("k{i}"), "v")).unwrap();
        }
        a.commit(now).unwrap();
        let mut changes = Vec::new();
        while let Some((_, m)) = a.poll_transmit(now).unwrap() {
            if let Message::Changes(c) = m {
                changes.extend(c);
            }
        }
        assert_eq!(changes.len(), 3);
        // Deliver 3rd first (gap), then all (1,2,3 applied), then again (duplicates).
        b.handle_message(now, MemberId(1), Message::Changes(vec![changes[2].clone()]))
            .unwrap();
        assert_eq!(b.stats().gaps, 1);
        b.handle_message(now, MemberId(1), Message::Changes(changes.clone()))
            .unwrap();
        b.handle_message(now, MemberId(1), Message::Changes(changes))
            .unwrap();
        assert_eq!(b.stats().duplicates, 3);
        b.commit(now).unwrap();
        assert_eq!(b.applied().get(MemberId(1)), Seq(3));
    }

    #[test]
    fn blobs_are_chunked_and_reassembled() {
        let mut a = replica(1);
        let mut b = replica(2);
        let now = Millis(1_000);
        let blob: Vec<u8> = (0..=10).collect();
        assert_eq!(
            a.write_blob(now, Table::Greetings, "g", &blob).unwrap(),
            Seq(3)
        );
        a.commit(now).unwrap();
        link(&mut a, &mut b, now);
        pump(&mut a, &mut b, now);
        assert_eq!(b.get(Table::Greetings, "g").unwrap(), Some(blob));
        assert!(b.storage().stages().unwrap().is_empty());
    }

    #[test]
    fn backpressure_is_reported_and_counted() {
        let mut cfg = Config::new(MemberId(1));
        cfg.max_pending = 2;
        let mut r = Replica::open(cfg, MemStorage::new(), Millis(0)).unwrap();
        r.write(Millis(0), put("a", "1")).unwrap();
        r.write(Millis(0), put("b", "1")).unwrap();
        assert!(matches!(
            r.write(Millis(0), put("c", "1")),
            Err(Error::Backpressure {
                pending: 2,
                limit: 2
            })
        ));
        assert_eq!(r.stats().rejected_writes, 1);
        r.commit(Millis(0)).unwrap();
        r.write(Millis(0), put("c", "1")).unwrap();
    }

    #[test]
    fn hello_from_the_wrong_member_is_refused() {
        let mut a = replica(1);
        a.add_peer(MemberId(2));
        let err = a
            .handle_message(
                Millis(0),
                MemberId(2),
                Message::Hello {
                    member: MemberId(3),
                    applied: VersionVector::default(),
                    clock: Hlc::default(),
                    region: None,
                },
            )
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(ProtocolError::Misbehaved(_))));
        assert!(matches!(
            a.handle_message(Millis(0), MemberId(9), Message::Changes(vec![])),
            Err(Error::UnknownPeer(MemberId(9)))
        ));
    }

    #[test]
    fn tombstones_are_collected_once_every_member_has_them() {
        let mut a = replica(1);
        let mut b = replica(2);
        let mut now = Millis(1_000);
        link(&mut a, &mut b, now);
        a.write(now, put("k", "v")).unwrap();
        a.commit(now).unwrap();
        pump(&mut a, &mut b, now);
        now = now.plus(10);
        a.write(
            now,
            Op::Delete {
                table: Table::Domains,
                key: "k".into(),
            },
        )
        .unwrap();
        a.commit(now).unwrap();
        assert_eq!(a.storage().tombstones(), 1);
        // Before b has it, a keeps it.
        a.write(now, put("other", "x")).unwrap();
        a.commit(now).unwrap();
        assert_eq!(a.storage().tombstones(), 1);
        pump(&mut a, &mut b, now);
        // One more round of clock reports, then both collect.
        for _ in 0..3 {
            now = now.plus(600);
            a.handle_timeout(now).unwrap();
            b.handle_timeout(now).unwrap();
            a.write(now, put("tick-a", "x")).unwrap();
            b.write(now, put("tick-b", "x")).unwrap();
            pump(&mut a, &mut b, now);
        }
        assert_eq!(a.storage().tombstones(), 0);
        assert_eq!(b.storage().tombstones(), 0);
        assert_eq!(a.get(Table::Domains, "k").unwrap(), None);
        assert_eq!(b.get(Table::Domains, "k").unwrap(), None);
    }

    #[test]
    fn a_member_behind_the_pruned_log_gets_a_snapshot() {
        let mut cfg = Config::new(MemberId(1));
        cfg.blob_chunk = 4;
        let mut a = Replica::open(cfg, MemStorage::new(), Millis(0)).unwrap();
        let now = Millis(1_000);
        for i in 0..10 {
            a.write(now, put(&format!("k{i}"), "v")).unwrap();
        }
        a.write(now, Op::AppendCdr { record: vec![7] }).unwrap();
        a.commit(now).unwrap();
        // No peers: everything is pruned at once.
        a.write(now, put("k0", "w")).unwrap();
        a.commit(now).unwrap();
        assert_eq!(a.storage().log_len(), 0);
        let mut b = replica(2);
        link(&mut a, &mut b, now);
        pump(&mut a, &mut b, now);
        assert_eq!(a.stats().snapshots_sent, 1);
        assert_eq!(b.stats().snapshots_applied, 1);
        assert_eq!(b.applied(), a.applied());
        assert_eq!(b.scan(Table::Domains, "").unwrap().len(), 10);
        assert_eq!(b.get(Table::Domains, "k0").unwrap(), Some(b"w".to_vec()));
        assert_eq!(b.cdrs(None, 10).unwrap().len(), 1);
        // And the tail streams normally afterwards.
        a.write(now, put("late", "1")).unwrap();
        a.commit(now).unwrap();
        pump(&mut a, &mut b, now);
        assert_eq!(b.get(Table::Domains, "late").unwrap(), Some(b"1".to_vec()));
        assert_eq!(a.stats().snapshots_sent, 1);
    }
}
