//! The node's view of its log: what storage holds, plus what the core appended that the
//! driver has not yet persisted ("unstable"), plus the commit and apply positions.
//!
//! Invariants (checked in [`RaftLog::check`]):
//! - `snapshot index <= applied <= commit <= last_index`;
//! - unstable entries are contiguous and start right after what storage holds (or after an
//!   unstable snapshot);
//! - nothing at or below `commit` is ever truncated (Raft §5.4: committed entries are
//!   permanent).
//!
//! The asserts here are invariants that only a bug in the core can break: every index and
//! entry that reaches this module from another node was checked first (`Envelope::check`
//! for contiguity, terms and overflow; the follower's handlers against `commit` and the
//! log's end).

use crate::storage::{Storage, StorageError, limit_bytes};
use crate::types::{Entry, Index, LogId, SnapshotMeta, Term};

pub struct RaftLog<S: Storage> {
    /// What the driver persisted: the log up to `unstable_offset - 1` (or the snapshot).
    pub storage: S,
    /// A snapshot received from the leader and not yet persisted.
    unstable_snapshot: Option<SnapshotMeta>,
    /// Entries not yet persisted; `unstable[0]` has index `unstable_offset`.
    unstable: Vec<Entry>,
    /// The index of `unstable[0]`: at most the store's last index + 1 (an offset at or
    /// below it means the unstable entries replace the store's tail).
    unstable_offset: Index,
    /// The highest index known committed.
    commit: Index,
    /// The highest index handed to the driver to apply.
    applied: Index,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S, applied: Index) -> Result<RaftLog<S>, StorageError> {
        let snapshot_index = storage.snapshot_meta().last_log_id.index;
        let commit = storage.hard_state().commit.max(snapshot_index);
        let last_index = storage.last_index();
        if commit > last_index {
            return Err(StorageError::Io(format!(
                "hard state says index {commit} is committed but the log ends at {last_index}"
            )));
        }
        let log = RaftLog {
            unstable_offset: last_index.next(),
            storage,
            unstable_snapshot: None,
            unstable: Vec::new(),
            commit,
            applied: applied.max(snapshot_index).min(commit),
        };
        log.assert_invariants();
        Ok(log)
    }

    pub fn commit_index(&self) -> Index {
        self.commit
    }

    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The index of the first entry still in the log (after the snapshot).
    pub fn first_index(&self) -> Index {
        match &self.unstable_snapshot {
            Some(meta) => meta.last_log_id.index.next(),
            None => self.storage.first_index(),
        }
    }

    pub fn last_index(&self) -> Index {
        match self.unstable.last() {
            Some(entry) => entry.index(),
            None => match &self.unstable_snapshot {
                Some(meta) => meta.last_log_id.index,
                None => self.storage.last_index(),
            },
        }
    }

    /// The last index the driver has made durable.
    pub fn persisted_index(&self) -> Index {
        self.unstable_offset.prev()
    }

    pub fn last_log_id(&self) -> Result<LogId, StorageError> {
        let index = self.last_index();
        Ok(LogId::new(self.term(index)?, index))
    }

    /// The term of the entry at `index` (including the snapshot's last entry).
    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        if let Some(meta) = &self.unstable_snapshot {
            if index == meta.last_log_id.index {
                return Ok(meta.last_log_id.term);
            }
            if index < meta.last_log_id.index {
                return Err(StorageError::Compacted(index));
            }
        }
        if index >= self.unstable_offset {
            let position = (index.0 - self.unstable_offset.0) as usize;
            return self.unstable.get(position).map(Entry::term).ok_or(StorageError::Unavailable(index));
        }
        if self.unstable_snapshot.is_some() {
            return Err(StorageError::Unavailable(index));
        }
        self.storage.term(index)
    }

    /// Whether our log holds `log_id`.
    pub fn matches(&self, log_id: LogId) -> Result<bool, StorageError> {
        match self.term(log_id.index) {
            Ok(term) => Ok(term == log_id.term),
            Err(StorageError::Unavailable(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Entries in `[low, high)`, at most about `max_bytes` (and at least one).
    pub fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index().next() {
            return Err(StorageError::Unavailable(high.prev()));
        }
        let mut entries = if low < self.unstable_offset {
            let stable_high = high.min(self.unstable_offset);
            let entries = self.storage.entries(low, stable_high, max_bytes)?;
            if entries.len() as u64 != stable_high.0 - low.0 {
                return Ok(entries); // the byte limit cut the batch short
            }
            entries
        } else {
            Vec::new()
        };
        if high > self.unstable_offset {
            let start = (low.max(self.unstable_offset).0 - self.unstable_offset.0) as usize;
            let end = (high.0 - self.unstable_offset.0) as usize;
            entries.extend_from_slice(&self.unstable[start..end]);
        }
        Ok(limit_bytes(&entries, max_bytes))
    }

    /// Appends `entries`, which must continue our log at some index after `commit`;
    /// whatever our log held from that index on is replaced.
    pub fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let first_index = first.index();
        assert!(first_index > self.commit, "truncating committed entry {first_index} (commit {})", self.commit);
        assert!(
            first_index <= self.last_index().next(),
            "appending at {first_index} leaves a gap after {}",
            self.last_index()
        );
        if first_index < self.unstable_offset {
            // Overwrites part of what is persisted: the driver truncates it when it persists.
            self.unstable.clear();
            self.unstable_offset = first_index;
        } else {
            self.unstable.truncate((first_index.0 - self.unstable_offset.0) as usize);
        }
        for entry in entries {
            // Not `last_index()`: right after a cut into persisted entries, `unstable` is empty
            // and storage still holds the old tail.
            let previous = Index(self.unstable_offset.0 + self.unstable.len() as u64).prev();
            assert_eq!(entry.index(), previous.next(), "log entries must be contiguous");
            assert!(entry.term() >= self.term(previous).unwrap_or_default(), "log terms must not decrease");
            self.unstable.push(entry);
        }
    }

    /// Replaces the log by a snapshot from the leader (thesis §5.3: discard the whole log
    /// when the snapshot does not match a prefix of it).
    pub fn restore(&mut self, meta: SnapshotMeta) {
        let index = meta.last_log_id.index;
        assert!(index > self.commit, "restoring snapshot {index} at or below commit {}", self.commit);
        self.unstable.clear();
        self.unstable_offset = index.next();
        self.commit = index;
        self.applied = index;
        self.unstable_snapshot = Some(meta);
    }

    /// Moves the commit index forward to `index`; never back.
    pub fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(index <= self.last_index(), "committing {index} past the end of the log {}", self.last_index());
        self.commit = index;
        true
    }

    /// What the driver must persist now: a snapshot and/or entries.
    pub fn unstable(&self) -> (Option<SnapshotMeta>, Vec<Entry>) {
        (self.unstable_snapshot.clone(), self.unstable.clone())
    }

    /// Whether anything waits to be persisted (without copying it, as `unstable` does).
    pub fn has_unstable(&self) -> bool {
        self.unstable_snapshot.is_some() || !self.unstable.is_empty()
    }

    /// Committed entries not yet handed out for applying, within `max_bytes`.
    pub fn next_committed(&self, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.entries(self.applied.next(), self.commit.next(), max_bytes)
    }

    /// The driver persisted everything [`RaftLog::unstable`] returned.
    pub fn persisted(&mut self) {
        self.unstable_snapshot = None;
        self.unstable_offset = self.last_index().next();
        self.unstable.clear();
    }

    /// The driver applied (or took to apply) everything up to `index`.
    pub fn applied_to(&mut self, index: Index) {
        assert!(
            index >= self.applied && index <= self.commit,
            "applied {index} outside [{}, {}]",
            self.applied,
            self.commit
        );
        self.applied = index;
    }

    pub fn assert_invariants(&self) {
        let snapshot_index = match &self.unstable_snapshot {
            Some(meta) => meta.last_log_id.index,
            None => self.storage.snapshot_meta().last_log_id.index,
        };
        assert!(snapshot_index <= self.applied, "applied {} below snapshot {snapshot_index}", self.applied);
        assert!(self.applied <= self.commit, "applied {} above commit {}", self.applied, self.commit);
        assert!(self.commit <= self.last_index(), "commit {} above last index {}", self.commit, self.last_index());
        for (offset, entry) in self.unstable.iter().enumerate() {
            assert_eq!(entry.index().0, self.unstable_offset.0 + offset as u64, "unstable entries must be contiguous");
        }
    }
}
