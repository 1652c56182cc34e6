//! The log store the core reads from, and an in-memory implementation of it.
//!
//! The core only *reads* storage. The driver *writes* it, following the `Ready` contract:
//! it appends `Ready::entries`, saves `Ready::hard_state`, installs `Ready::snapshot`, then
//! calls [`Storage::sync`] once for the whole `Ready` (group commit).

use thiserror::Error;

use crate::types::{Entry, HardState, Index, LogId, Membership, SnapshotMeta, Term};

/// Why a [`Storage`] call failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StorageError {
    /// The entry was compacted into a snapshot.
    #[error("log index {0} is compacted into a snapshot")]
    Compacted(Index),
    /// The entry is past the end of the log.
    #[error("log index {0} is past the end of the log")]
    Unavailable(Index),
    /// The store failed (I/O error, corruption). The node must stop.
    #[error("storage failed: {0}")]
    Io(String),
}

/// A durable (or, for tests, simulated) Raft log with its hard state and snapshot metadata.
///
/// Invariants every implementation keeps:
/// - the log holds exactly the entries `first_index()..=last_index()`, contiguous, with
///   `first_index() == snapshot_meta().last_log_id.index + 1`;
/// - `term(snapshot index)` is the snapshot's term, even though that entry is compacted;
/// - after `sync()` returns `Ok`, everything written before it survives a crash.
pub trait Storage {
    /// The hard state last saved, or the default for a new node.
    fn hard_state(&self) -> HardState;
    /// The metadata of the latest snapshot; for a new cluster, index 0 with the initial
    /// membership (empty for a node that waits to be added).
    fn snapshot_meta(&self) -> SnapshotMeta;
    /// The index of the first entry held: the snapshot's index + 1 (so, for an empty log,
    /// `last_index() + 1`).
    fn first_index(&self) -> Index;
    /// The index of the last entry held, or the snapshot's index when none is.
    fn last_index(&self) -> Index;
    /// The term of the entry at `index`.
    fn term(&self, index: Index) -> Result<Term, StorageError>;
    /// Entries in `[low, high)`, stopping early once `max_bytes` is passed (at least one
    /// entry is returned when the range is not empty).
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;

    /// Appends `entries`, first removing every entry at or after `entries[0]`'s index.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Replaces the saved hard state (durable after the next `sync`).
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;
    /// Replaces the whole log by a snapshot received from the leader.
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), StorageError>;
    /// Drops the entries up to and including `meta.last_log_id.index`, which the state
    /// machine has captured in a snapshot.
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError>;
    /// Makes every write so far durable (one fsync per `Ready`).
    fn sync(&mut self) -> Result<(), StorageError>;

    /// The last log id.
    fn last_log_id(&self) -> Result<LogId, StorageError> {
        let index = self.last_index();
        Ok(LogId::new(self.term(index)?, index))
    }
}

/// The durable part of a [`MemStorage`]: what survives a simulated crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MemState {
    /// The last hard state set.
    hard_state: HardState,
    /// The latest snapshot's metadata (index 0 with the initial membership at first).
    snapshot: SnapshotMeta,
    /// Entries after the snapshot: `entries[i]` has index `snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

/// An in-memory [`Storage`] for tests and the simulator: the counterpart of the WAL-backed
/// `DiskStorage` in `skiff-storage`, held to the same conformance tests. Writes go to a
/// "written" copy; `sync()` makes them durable; [`MemStorage::crash`] throws away whatever
/// was written but not synced, exactly as a power loss would. It holds only what the core
/// reads (log, hard state, snapshot metadata); the runtime's in-memory store with snapshot
/// data is `skiff::MemLogStore`.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    /// Everything written, synced or not: what the core reads.
    written: MemState,
    /// What the last `sync` made durable: what a crash keeps.
    durable: MemState,
    /// For tests: how many times `sync` was called.
    pub sync_count: u64,
}

impl MemStorage {
    /// The store of a node of a new cluster with the given initial membership, or of a new
    /// node waiting to be added (empty membership).
    pub fn new(membership: Membership) -> MemStorage {
        let state =
            MemState { snapshot: SnapshotMeta { last_log_id: LogId::default(), membership }, ..MemState::default() };
        MemStorage { written: state.clone(), durable: state, sync_count: 0 }
    }

    /// Simulates a crash: everything not synced is lost.
    pub fn crash(&mut self) {
        self.written = self.durable.clone();
    }

    /// What survives a crash now: the synced hard state and last index (for checkers).
    pub fn durable_hard_state(&self) -> HardState {
        self.durable.hard_state
    }

    /// What survives a crash now: the last synced entry (the snapshot's, if none).
    pub fn durable_last_log_id(&self) -> LogId {
        let snapshot = self.durable.snapshot.last_log_id;
        self.durable.entries.last().map_or(snapshot, |entry| entry.log_id)
    }

    fn offset(&self) -> u64 {
        self.written.snapshot.last_log_id.index.0 + 1
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.written.hard_state
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.written.snapshot.clone()
    }

    fn first_index(&self) -> Index {
        Index(self.offset())
    }

    fn last_index(&self) -> Index {
        Index(self.offset() + self.written.entries.len() as u64 - 1)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let snapshot = self.written.snapshot.last_log_id;
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < snapshot.index {
            return Err(StorageError::Compacted(index));
        }
        let position = (index.0 - self.offset()) as usize;
        self.written.entries.get(position).map(Entry::term).ok_or(StorageError::Unavailable(index))
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low.0 < self.offset() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index().next() {
            return Err(StorageError::Unavailable(high.prev()));
        }
        // An empty range is empty wherever it starts: a caller (the log view) may ask from
        // past the end of the log, which is no position in `entries`.
        if low >= high {
            return Ok(Vec::new());
        }
        let start = (low.0 - self.offset()) as usize;
        let end = (high.0 - self.offset()) as usize;
        Ok(limit_bytes(&self.written.entries[start..end], max_bytes))
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let first_index = first.index().0;
        assert!(
            first_index >= self.offset() && first_index <= self.last_index().0 + 1,
            "append at {first_index} leaves a gap or rewrites the snapshot (log {}..={})",
            self.offset(),
            self.last_index()
        );
        self.written.entries.truncate((first_index - self.offset()) as usize);
        for entry in entries {
            assert_eq!(entry.index().0, self.offset() + self.written.entries.len() as u64);
            self.written.entries.push(entry.clone());
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.written.hard_state = hard_state;
        Ok(())
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.written.entries.clear();
        self.written.snapshot = meta;
        Ok(())
    }

    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let index = meta.last_log_id.index;
        if index <= self.written.snapshot.last_log_id.index {
            return Ok(());
        }
        assert!(index <= self.last_index(), "compacting past the end of the log");
        assert_eq!(self.term(index)?, meta.last_log_id.term, "compacting at a different term");
        self.written.entries.drain(..(index.0 + 1 - self.offset()) as usize);
        self.written.snapshot = meta;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.durable = self.written.clone();
        self.sync_count += 1;
        Ok(())
    }
}

/// The longest prefix of `entries` within `max_bytes`, and at least one entry.
pub fn limit_bytes(entries: &[Entry], max_bytes: u64) -> Vec<Entry> {
    let mut total = 0;
    let mut count = 0;
    for entry in entries {
        total += entry.size_bytes();
        if count > 0 && total > max_bytes {
            break;
        }
        count += 1;
    }
    entries[..count].to_vec()
}
