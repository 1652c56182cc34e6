//! The log store the runtime drives: the core's [`Storage`] plus snapshot data.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use skiff_raft::{Entry, HardState, Index, MemStorage, Membership, SnapshotMeta, Storage, StorageError, Term};
use skiff_storage::DiskStorage;

/// A stored snapshot: its metadata and a reader of its data.
pub type StoredSnapshot = (SnapshotMeta, Box<dyn Read + Send>);

/// A [`Storage`] that also keeps snapshot data. The runtime writes a snapshot's data with
/// [`LogStore::save_snapshot`] *before* it calls `compact` or `install_snapshot` with that
/// snapshot's metadata, so a restart always finds either the entries or the snapshot.
pub trait LogStore: Storage + Send + 'static {
    /// Writes the data of the snapshot `meta` from `data`, durably.
    fn save_snapshot(&mut self, meta: SnapshotMeta, data: &mut dyn Read) -> Result<(), StorageError>;

    /// Opens the data of the snapshot `snapshot_meta()` describes; `None` before any.
    fn open_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError>;
}

impl LogStore for DiskStorage {
    fn save_snapshot(&mut self, meta: SnapshotMeta, data: &mut dyn Read) -> Result<(), StorageError> {
        self.write_snapshot(meta, data).map(|_| ()).map_err(|error| StorageError::Io(error.to_string()))
    }

    fn open_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let reader = DiskStorage::open_snapshot(self).map_err(|error| StorageError::Io(error.to_string()))?;
        Ok(reader.map(|reader| (reader.meta().clone(), Box::new(reader) as Box<dyn Read + Send>)))
    }
}

/// An in-memory [`LogStore`]: [`MemStorage`] plus snapshot data in memory. For tests and
/// for clusters that need no durability.
#[derive(Debug, Default)]
pub struct MemStore {
    storage: MemStorage,
    snapshots: BTreeMap<Index, (SnapshotMeta, Vec<u8>)>,
}

impl MemStore {
    /// The store of a node of a new cluster with `membership` (empty for a joining node).
    pub fn new(membership: Membership) -> MemStore {
        MemStore { storage: MemStorage::new(membership), snapshots: BTreeMap::new() }
    }
}

impl Storage for MemStore {
    fn hard_state(&self) -> HardState {
        self.storage.hard_state()
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.storage.snapshot_meta()
    }
    fn first_index(&self) -> Index {
        self.storage.first_index()
    }
    fn last_index(&self) -> Index {
        self.storage.last_index()
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.storage.term(index)
    }
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.storage.entries(low, high, max_bytes)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.storage.append(entries)
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.storage.set_hard_state(hard_state)
    }
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.storage.install_snapshot(meta)
    }
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.storage.compact(meta)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.storage.sync()
    }
}

impl LogStore for MemStore {
    fn save_snapshot(&mut self, meta: SnapshotMeta, data: &mut dyn Read) -> Result<(), StorageError> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).map_err(|error| StorageError::Io(error.to_string()))?;
        self.snapshots.insert(meta.last_log_id.index, (meta, bytes));
        Ok(())
    }

    fn open_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let index = self.storage.snapshot_meta().last_log_id.index;
        if index == Index(0) {
            return Ok(None);
        }
        let (meta, bytes) = self
            .snapshots
            .get(&index)
            .ok_or_else(|| StorageError::Io(format!("the data of snapshot {index} is missing")))?;
        Ok(Some((meta.clone(), Box::new(Cursor::new(bytes.clone())))))
    }
}
