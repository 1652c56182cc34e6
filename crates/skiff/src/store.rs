//! The log store the runtime drives: the core's [`Storage`] plus snapshot data.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use skiff_raft::{Entry, HardState, Index, MemStorage, Membership, SnapshotMeta, Storage, StorageError, Term};
use skiff_storage::{DiskStorage, SnapshotDir, SnapshotWriter};

use crate::error::StorageFailure;

/// A stored snapshot: its metadata and a reader of its data.
pub type StoredSnapshot = (SnapshotMeta, Box<dyn Read + Send>);

/// A [`Storage`] that also keeps snapshot data. The runtime writes a snapshot's data
/// through [`LogStore::snapshot_target`] and finishes it *before* it calls `compact` or
/// `install_snapshot` with that snapshot's metadata, so a restart always finds either the
/// entries or the snapshot.
pub trait LogStore: Storage + Send + 'static {
    /// Where new snapshots are written: a handle apart from the store, so that the apply
    /// thread streams the state machine into a snapshot while the driver goes on with the
    /// log, and a snapshot received from the leader is written chunk by chunk as it comes.
    fn snapshot_target(&self) -> Arc<dyn SnapshotTarget>;

    /// Opens the data of the snapshot `snapshot_meta()` describes; `None` before any.
    fn open_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageFailure>;
}

/// Creates snapshots, from any thread.
pub trait SnapshotTarget: Send + Sync {
    /// Starts the snapshot `meta`: write its data, then [`SnapshotSink::finish`] it.
    fn create(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageFailure>;
}

/// The data of one snapshot being written. Dropped without `finish`, it leaves nothing.
pub trait SnapshotSink: Write + Send {
    /// Makes the snapshot whole and durable; from then on the store may adopt it.
    fn finish(self: Box<Self>) -> Result<(), StorageFailure>;
}

impl LogStore for DiskStorage {
    fn snapshot_target(&self) -> Arc<dyn SnapshotTarget> {
        Arc::new(self.snapshot_dir())
    }

    fn open_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageFailure> {
        let reader = DiskStorage::open_snapshot(self)?;
        Ok(reader.map(|reader| (reader.meta().clone(), Box::new(reader) as Box<dyn Read + Send>)))
    }
}

impl SnapshotTarget for SnapshotDir {
    fn create(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageFailure> {
        let writer = self.writer(meta)?;
        Ok(Box::new(writer))
    }
}

impl SnapshotSink for SnapshotWriter {
    fn finish(self: Box<Self>) -> Result<(), StorageFailure> {
        SnapshotWriter::finish(*self)?;
        Ok(())
    }
}

/// An in-memory [`LogStore`]: [`MemStorage`] plus snapshot data in memory. For tests and
/// for clusters that need no durability.
#[derive(Debug, Default)]
pub struct MemLogStore {
    storage: MemStorage,
    snapshots: Arc<MemSnapshots>,
}

/// Snapshot data by index, shared with the writers.
#[derive(Debug, Default)]
struct MemSnapshots(Mutex<BTreeMap<Index, MemSnapshot>>);

type MemSnapshot = (SnapshotMeta, Arc<[u8]>);

impl MemSnapshots {
    fn get(&self, index: Index) -> Option<MemSnapshot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&index).cloned()
    }
}

impl MemLogStore {
    /// The store of a node of a new cluster with `membership` (empty for a joining node).
    pub fn new(membership: Membership) -> MemLogStore {
        MemLogStore { storage: MemStorage::new(membership), snapshots: Arc::default() }
    }
}

impl Storage for MemLogStore {
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

impl LogStore for MemLogStore {
    fn snapshot_target(&self) -> Arc<dyn SnapshotTarget> {
        Arc::new(Arc::clone(&self.snapshots))
    }

    fn open_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageFailure> {
        let index = self.storage.snapshot_meta().last_log_id.index;
        if index == Index(0) {
            return Ok(None);
        }
        let (meta, bytes) = self
            .snapshots
            .get(index)
            .ok_or_else(|| StorageFailure::Inconsistent(format!("the data of snapshot {index} is missing")))?;
        Ok(Some((meta, Box::new(Cursor::new(bytes)))))
    }
}

impl SnapshotTarget for Arc<MemSnapshots> {
    fn create(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotSink>, StorageFailure> {
        Ok(Box::new(MemSnapshotWriter { meta, data: Vec::new(), snapshots: Arc::clone(self) }))
    }
}

struct MemSnapshotWriter {
    meta: SnapshotMeta,
    data: Vec<u8>,
    snapshots: Arc<MemSnapshots>,
}

impl Write for MemSnapshotWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.data.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for MemSnapshotWriter {
    fn finish(self: Box<Self>) -> Result<(), StorageFailure> {
        let MemSnapshotWriter { meta, data, snapshots } = *self;
        let mut map = snapshots.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(meta.last_log_id.index, (meta, data.into()));
        Ok(())
    }
}
