//! [`DiskStorage`]: the durable [`Storage`] of one node, in one data directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, SnapshotMeta, Storage, StorageError, Term};
use tracing::{info, warn};

use crate::cache::TailCache;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, DirLock};
use crate::hardstate;
use crate::identity::{self, ClusterIdFile, Identity};
use crate::scan::TornTail;
use crate::segment::{ReadLimit, TermRuns, parse_segment_name, segment_name};
use crate::snapshot::{self, SnapshotDir, SnapshotReader, SnapshotWriter};
use crate::wal::Wal;

/// The WAL's directory inside the data directory.
pub(crate) const WAL_DIR_NAME: &str = "wal";

/// How to open (or create) a data directory.
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// This node. A directory created by another node is refused.
    pub node_id: NodeId,
    /// The cluster's name (no whitespace). A directory of another cluster is refused.
    pub cluster: String,
    /// The membership of a new cluster, recorded when the directory is created (as the
    /// snapshot at index 0); empty for a node that waits to be added. Ignored afterwards.
    pub initial_membership: Membership,
    /// The cluster's random id (32 lowercase hex digits), recorded in the `node-id` file
    /// when the directory is created; `None` (the default) records none, and one can be
    /// recorded later ([`DiskStorage::cluster_id_file`]). Ignored for an existing directory.
    pub cluster_id: Option<String>,
    /// A segment takes writes until it holds about this many bytes (default 64 MiB; at
    /// least 64 KiB, at most 1 GiB). A batch never spans two segments.
    pub segment_bytes: u64,
    /// Reserve each segment's space when it is created (`fallocate`), so appends are
    /// overwrites that `fdatasync` flushes without growing the file. Default on.
    pub preallocate: bool,
    /// How many bytes of the newest entries to keep in memory (default 4 MiB: thousands
    /// of entries, far more than a healthy follower lags behind; a follower further back
    /// is served from the segments, which the page cache usually still holds).
    pub tail_cache_bytes: u64,
}

impl DiskOptions {
    /// The defaults, for `node_id` of `cluster`, with the membership of a new cluster.
    pub fn new(node_id: NodeId, cluster: impl Into<String>, initial_membership: Membership) -> DiskOptions {
        DiskOptions {
            node_id,
            cluster: cluster.into(),
            initial_membership,
            cluster_id: None,
            segment_bytes: 64 << 20,
            preallocate: true,
            tail_cache_bytes: 4 << 20,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.cluster.is_empty() || self.cluster.chars().any(char::is_whitespace) {
            return Err(Error::InvalidInput(format!(
                "cluster name {:?} must be non-empty, without spaces",
                self.cluster
            )));
        }
        if let Some(cluster_id) = &self.cluster_id
            && !identity::is_cluster_id(cluster_id)
        {
            return Err(Error::InvalidInput(format!("cluster id {cluster_id:?} is not 32 lowercase hex digits")));
        }
        if !(64 << 10..=1 << 30).contains(&self.segment_bytes) {
            return Err(Error::InvalidInput(format!(
                "segment size {} bytes is outside 64 KiB..=1 GiB",
                self.segment_bytes
            )));
        }
        Ok(())
    }
}

/// What opening the directory found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The directory was new and has been initialised.
    pub created: bool,
    /// A torn write at the end of the last segment, cut off (and logged as a warning).
    pub torn_tail: Option<TornTail>,
    /// The newest snapshot did not continue the WAL (a crash while installing it), so the
    /// WAL was replaced by an empty one after the snapshot.
    pub wal_replaced_by_snapshot: bool,
    /// The WAL was read with `O_DIRECT`, from the device rather than the page cache (see
    /// the crate documentation, "Recovery on open"); `false` where the file system refuses
    /// `O_DIRECT` (tmpfs), which is logged as a warning.
    pub read_directly: bool,
}

/// A node's durable [`Storage`]: a segmented WAL, the hard state, and snapshot files, in
/// one data directory (see the crate documentation for the format and the guarantees).
///
/// Writes follow the `Ready` contract: `append`, `set_hard_state`, `install_snapshot`
/// write; [`Storage::sync`] makes them durable with one fdatasync (group commit). After
/// any failed write or sync the store is *poisoned*: it refuses every later write and
/// sync, so it can never report durable what may not be; restart the node to recover.
///
/// Memory: the tail cache (bounded), and per entry a 4-byte offset plus a term run per
/// term change; entries themselves are read from disk.
#[derive(Debug)]
pub struct DiskStorage {
    dir: PathBuf,
    wal: Wal,
    hard_state: HardState,
    /// The sequence number of `hard_state`: the newest record (WAL or file) wins on open.
    hard_state_seq: u64,
    snapshot: SnapshotMeta,
    terms: TermRuns,
    cache: TailCache,
    /// Why the store refuses writes, after a failed write or sync.
    poisoned: Option<String>,
    recovery: Recovery,
    /// The cluster id the `node-id` file recorded when the directory was opened.
    cluster_id: Option<String>,
    metrics: StoreMetrics,
    _lock: DirLock,
}

/// What the store records with the `metrics` facade, labeled with the node's id. The
/// handles are made when the store is opened: a program that wants these metrics installs
/// its recorder before it opens the store (or starts the node).
#[derive(Debug)]
struct StoreMetrics {
    node: NodeId,
    /// `skiff_wal_append_seconds`: one [`Storage::append`] (a batch of entries: encoding and
    /// `pwrite`, plus the sync of a full segment when the batch starts a new one).
    append: metrics::Histogram,
    /// `skiff_wal_fsync_seconds`: one [`Storage::sync`] that had writes to make durable
    /// (the `fdatasync`, plus the fsync of `wal/` after a segment came or went).
    fsync: metrics::Histogram,
    /// `skiff_raft_elections_total`: see [`StoreMetrics::hard_state_changed`].
    elections: metrics::Counter,
    /// `skiff_wal_syncs_total`: the fdatasyncs [`Storage::sync`] issued (a sync with
    /// nothing to make durable issues none).
    syncs: metrics::Counter,
    /// `skiff_wal_entries_appended_total`: entries written to the WAL by
    /// [`Storage::append`] (an entry the leader's log replaced is counted again).
    entries_appended: metrics::Counter,
    /// `skiff_wal_entries_per_sync`: for each fdatasync of [`Storage::sync`], the entries
    /// appended since the previous one (0 when it made only a hard state durable).
    entries_per_sync: metrics::Histogram,
    /// Entries appended since the last fdatasync of [`Storage::sync`]: what the next one
    /// makes durable. (A segment roll's own sync is not one of them: what it made durable
    /// is counted with the next.)
    unsynced_entries: u64,
}

impl StoreMetrics {
    fn new(node: NodeId) -> StoreMetrics {
        let label = node.to_string();
        StoreMetrics {
            node,
            append: metrics::histogram!("skiff_wal_append_seconds", "node" => label.clone()),
            fsync: metrics::histogram!("skiff_wal_fsync_seconds", "node" => label.clone()),
            elections: metrics::counter!("skiff_raft_elections_total", "node" => label.clone()),
            syncs: metrics::counter!("skiff_wal_syncs_total", "node" => label.clone()),
            entries_appended: metrics::counter!("skiff_wal_entries_appended_total", "node" => label.clone()),
            entries_per_sync: metrics::histogram!("skiff_wal_entries_per_sync", "node" => label),
            unsynced_entries: 0,
        }
    }

    fn appended(&mut self, entries: usize) {
        self.entries_appended.increment(entries as u64);
        self.unsynced_entries += entries as u64;
    }

    fn synced(&mut self, elapsed: std::time::Duration) {
        self.fsync.record(elapsed);
        self.syncs.increment(1);
        self.entries_per_sync.record(self.unsynced_entries as f64);
        self.unsynced_entries = 0;
    }

    /// Counts an election this node started. A node votes for itself only when it campaigns
    /// (Raft §5.2: a candidate moves to a new term and votes for itself, and that vote is
    /// made durable before its vote requests go out), so a hard state that newly records a
    /// vote for this node marks exactly one election. Pre-votes change no hard state and
    /// are not counted.
    fn hard_state_changed(&self, before: &HardState, after: &HardState) {
        let votes_for_itself = after.vote == Some(self.node);
        if votes_for_itself && (before.term, before.vote) != (after.term, after.vote) {
            self.elections.increment(1);
        }
    }
}

impl DiskStorage {
    /// Opens the data directory `dir`, creating and initialising it if it does not exist,
    /// and recovers: a torn tail is cut off with a warning; damage, a missing segment, or
    /// a directory of another node or cluster is refused with an error saying what to do.
    pub fn open(dir: impl AsRef<Path>, options: DiskOptions) -> Result<DiskStorage> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fsutil::create_dir_all(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        let expected = Identity {
            node_id: options.node_id,
            cluster: options.cluster.clone(),
            cluster_id: options.cluster_id.clone(),
        };
        let (created, cluster_id) = match identity::read(&dir)? {
            Some(found) => {
                identity::check(&dir, &found, &expected)?;
                (false, found.cluster_id)
            }
            None => {
                initialize(&dir, &options)?;
                identity::write(&dir, &expected)?;
                (true, expected.cluster_id)
            }
        };
        let snapshot = newest_snapshot(&dir)?;
        let checkpoint = hardstate::read(&dir)?;
        let next = snapshot.last_log_id.index.next();
        let (wal, scan) = Wal::open(&dir.join(WAL_DIR_NAME), options.segment_bytes, options.preallocate, next)?;
        if let Some(torn) = &scan.torn {
            warn!(
                file = %torn.path.display(), offset = torn.offset, discarded_bytes = torn.discarded_bytes,
                "cut off a torn write at the end of the WAL ({}): it was never synced, so never acknowledged",
                torn.reason
            );
        }
        let (hard_state_seq, hard_state) =
            [checkpoint, scan.hard_state].into_iter().flatten().max_by_key(|(seq, _)| *seq).unwrap_or_default();
        let mut store = DiskStorage {
            dir,
            wal,
            hard_state,
            hard_state_seq,
            snapshot,
            terms: scan.terms,
            cache: TailCache::new(options.tail_cache_bytes),
            poisoned: None,
            recovery: Recovery {
                created,
                torn_tail: scan.torn,
                wal_replaced_by_snapshot: false,
                read_directly: scan.read_directly,
            },
            cluster_id,
            metrics: StoreMetrics::new(options.node_id),
            _lock: lock,
        };
        store.reconcile_with_snapshot()?;
        store.check_hard_state()?;
        snapshot::prune(&store.snapshots_dir(), store.snapshot.last_log_id)?;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The cluster id the directory recorded when it was opened (see
    /// [`DiskOptions::cluster_id`]), if any.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// A handle that records the cluster id later, from another thread, in a directory
    /// that has none yet.
    pub fn cluster_id_file(&self) -> ClusterIdFile {
        ClusterIdFile::new(self.dir.clone())
    }

    /// How many fdatasyncs of the WAL `sync` has issued.
    pub fn sync_count(&self) -> u64 {
        self.wal.syncs
    }

    /// Why the store refuses writes, if an earlier write or sync failed.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// The WAL's segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.wal.segment_paths()
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.dir.join(snapshot::DIR_NAME)
    }

    /// Starts writing the state machine's snapshot for `meta` (from [`skiff_raft::Raft::compact`],
    /// or received from the leader). Stream the data into it, then
    /// [`SnapshotWriter::finish`] it; then [`Storage::compact`] or
    /// [`Storage::install_snapshot`] with the same `meta`. It does not borrow the store:
    /// the state machine may write it on another thread.
    pub fn snapshot_writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        SnapshotWriter::create(&self.snapshots_dir(), meta)
    }

    /// The snapshot directory, as a handle another thread can write snapshots through.
    pub fn snapshot_dir(&self) -> SnapshotDir {
        SnapshotDir::new(self.snapshots_dir())
    }

    /// Writes a whole snapshot from `data` (streamed, not held in memory) and finishes it.
    pub fn write_snapshot(&self, meta: SnapshotMeta, data: &mut dyn Read) -> Result<SnapshotMeta> {
        let mut writer = self.snapshot_writer(meta)?;
        let path = self.snapshots_dir();
        std::io::copy(data, &mut writer).context("write snapshot data into", &path)?;
        writer.finish()
    }

    /// Opens the current snapshot (the one [`Storage::snapshot_meta`] describes) to
    /// stream its data, to a lagging follower or into the state machine at start. `None`
    /// when there is none yet (index 0: only the initial membership).
    pub fn open_snapshot(&self) -> Result<Option<SnapshotReader>> {
        if self.snapshot.last_log_id.index == Index(0) {
            return Ok(None);
        }
        SnapshotReader::open(&self.snapshots_dir(), self.snapshot.last_log_id).map(Some)
    }

    /// Makes sure the newest snapshot and the WAL fit together: the WAL continues the
    /// snapshot (entries it covers are ignored), or, if the snapshot is not in the WAL (a
    /// crash while installing a snapshot from the leader), the WAL is replaced.
    fn reconcile_with_snapshot(&mut self) -> Result<()> {
        let snapshot = self.snapshot.last_log_id;
        let (first, next) = (self.wal.first_index(), self.wal.next_index());
        if first > snapshot.index.next() {
            let before = format!("the snapshot {}", snapshot::file_name(snapshot));
            let after = segment_name(first);
            return Err(Error::MissingSegment {
                dir: self.dir.join(WAL_DIR_NAME),
                before,
                before_last: snapshot.index,
                after,
                after_first: first,
            });
        }
        let continues = first == snapshot.index.next()
            || (snapshot.index < next && self.terms.term(snapshot.index) == Some(snapshot.term));
        if continues {
            self.terms.drop_before(snapshot.index.next());
            return self.remove_segments_below(snapshot.index.next());
        }
        info!(
            snapshot = %snapshot, wal_end = %next.prev(),
            "the newest snapshot does not continue the WAL (a snapshot install was interrupted): replacing the WAL"
        );
        self.replace_wal()?;
        self.recovery.wal_replaced_by_snapshot = true;
        Ok(())
    }

    /// Refuses a hard state that contradicts the log.
    fn check_hard_state(&self) -> Result<()> {
        let last = self.last_index();
        if self.hard_state.commit > last {
            let reason = format!(
                "the hard state says index {} is committed, but the log ends at {last} (a WAL segment was lost?)",
                self.hard_state.commit
            );
            return Err(Error::Inconsistent { dir: self.dir.clone(), reason });
        }
        Ok(())
    }

    /// Checkpoints the hard state into the `hardstate` file, when the WAL is about to lose
    /// the record of it.
    fn checkpoint_hard_state(&self) -> Result<()> {
        hardstate::write(&self.dir, self.hard_state_seq, &self.hard_state)
    }

    /// Removes the segments that hold only entries below `index`.
    fn remove_segments_below(&mut self, index: Index) -> Result<()> {
        let count = self.wal.removable_below(index);
        if count == 0 {
            return Ok(());
        }
        if self.wal.hard_state_in_first(count) {
            self.checkpoint_hard_state()?;
        }
        self.wal.remove_first(count)
    }

    /// Replaces the WAL by an empty one that continues the snapshot.
    fn replace_wal(&mut self) -> Result<()> {
        if self.wal.hard_state_in_first(self.segment_paths().len()) {
            self.checkpoint_hard_state()?;
        }
        self.wal.reset(self.snapshot.last_log_id.index.next())?;
        self.terms.clear();
        self.cache.clear();
        Ok(())
    }

    /// Runs a write, refusing it if the store is poisoned and poisoning it if it fails.
    fn write<T>(&mut self, operation: impl FnOnce(&mut DiskStorage) -> Result<T>) -> Result<T> {
        if let Some(cause) = &self.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        let result = operation(self);
        if let Err(error @ (Error::Io { .. } | Error::SyncFailed { .. } | Error::Corrupt { .. })) = &result {
            warn!(%error, "a write to the data directory failed: the store refuses further writes");
            self.poisoned = Some(error.to_string());
        }
        result
    }

    /// The snapshot file for `meta` must exist (and match) before the log is compacted or
    /// replaced, or a restart would find neither the entries nor the snapshot.
    fn check_snapshot_file(&self, meta: &SnapshotMeta) -> Result<()> {
        let dir = self.snapshots_dir();
        match snapshot::read_meta(&dir, meta.last_log_id)? {
            None => Err(Error::MissingSnapshot { dir, log_id: meta.last_log_id }),
            Some(found) if &found != meta => Err(Error::InvalidInput(format!(
                "the snapshot file for {} records membership {}, but the log was asked to use {}",
                meta.last_log_id, found.membership, meta.membership
            ))),
            Some(_) => Ok(()),
        }
    }

    fn append_entries(&mut self, entries: &[Entry]) -> Result<()> {
        let first = entries[0].index();
        if first <= self.last_index() {
            if self.wal.hard_state_at_or_after(first) {
                self.checkpoint_hard_state()?;
            }
            self.wal.truncate_from(first)?;
            self.terms.truncate_from(first);
            self.cache.truncate_from(first);
        }
        self.wal.append(entries)?;
        for entry in entries {
            self.terms.push(entry.index(), entry.term());
            self.cache.push(entry);
        }
        Ok(())
    }

    fn compact_to(&mut self, meta: SnapshotMeta) -> Result<()> {
        let index = meta.last_log_id.index;
        self.snapshot = meta;
        self.terms.drop_before(index.next());
        self.cache.drop_through(index);
        self.remove_segments_below(index.next())?;
        snapshot::prune(&self.snapshots_dir(), self.snapshot.last_log_id)
    }

    fn read_entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut limit = ReadLimit::new(max_bytes);
        let cached_from = self.cache.first_index().unwrap_or(self.last_index().next()).clamp(low, high);
        if low < cached_from && !self.wal.read(low, cached_from, &mut limit, &mut out)? {
            return Ok(out);
        }
        for entry in self.cache.range(cached_from, high) {
            if !limit.admit(entry.size_bytes()) {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }
}

/// Creates the layout of a new data directory: `wal/`, `snapshots/` with the snapshot at
/// index 0 that records the initial membership. The caller writes `node-id` last.
fn initialize(dir: &Path, options: &DiskOptions) -> Result<()> {
    let wal_dir = dir.join(WAL_DIR_NAME);
    let snapshots_dir = dir.join(snapshot::DIR_NAME);
    fsutil::create_dir_all(&wal_dir)?;
    fsutil::create_dir_all(&snapshots_dir)?;
    let (segments, _) = fsutil::list_dir_removing_tmp(&wal_dir)?;
    let snapshots = snapshot::list(&snapshots_dir)?;
    if segments.iter().any(|name| parse_segment_name(name).is_some()) || snapshots.iter().any(|id| id.index > Index(0))
    {
        return Err(Error::Inconsistent {
            dir: dir.to_path_buf(),
            reason: format!(
                "it holds a log or snapshots but no `{}` file, so it cannot be told whose they are",
                identity::FILE_NAME
            ),
        });
    }
    let meta = SnapshotMeta { last_log_id: LogId::default(), membership: options.initial_membership.clone() };
    SnapshotWriter::create(&snapshots_dir, meta)?.finish()?;
    hardstate::write(dir, 0, &HardState::default())?;
    fsutil::sync_dir(&wal_dir)?;
    fsutil::sync_dir(dir)
}

/// The metadata of the newest snapshot in `dir/snapshots`.
fn newest_snapshot(dir: &Path) -> Result<SnapshotMeta> {
    let snapshots_dir = dir.join(snapshot::DIR_NAME);
    snapshot::remove_unfinished(&snapshots_dir)?;
    let newest = snapshot::list(&snapshots_dir)?.pop();
    let meta = match newest {
        Some(log_id) => snapshot::read_meta(&snapshots_dir, log_id)?,
        None => None,
    };
    meta.ok_or_else(|| Error::Inconsistent {
        dir: dir.to_path_buf(),
        reason: format!("{} holds no snapshot, not even the initial one", snapshots_dir.display()),
    })
}

impl Storage for DiskStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn first_index(&self) -> Index {
        self.snapshot.last_log_id.index.next()
    }

    fn last_index(&self) -> Index {
        self.wal.next_index().prev().max(self.snapshot.last_log_id.index)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let snapshot = self.snapshot.last_log_id;
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < snapshot.index {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        self.terms.term(index).ok_or_else(|| StorageError::Io(format!("no term recorded for index {index}")))
    }

    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index().next() {
            return Err(StorageError::Unavailable(high.prev()));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        Ok(self.read_entries(low, high, max_bytes)?)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let first_index = first.index();
        assert!(
            first_index >= self.first_index() && first_index <= self.last_index().next(),
            "append at {first_index} leaves a gap or rewrites the snapshot (log {}..={})",
            self.first_index(),
            self.last_index()
        );
        let mut previous = LogId::new(self.term(first_index.prev())?, first_index.prev());
        for entry in entries {
            assert_eq!(entry.index(), previous.index.next(), "appended entries must be contiguous");
            assert!(entry.term() >= previous.term, "log terms must not decrease: {} after {previous}", entry.log_id);
            previous = entry.log_id;
        }
        let started = Instant::now();
        self.write(|store| store.append_entries(entries))?;
        self.metrics.append.record(started.elapsed());
        self.metrics.appended(entries.len());
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        Ok(self.write(|store| {
            if hard_state == store.hard_state {
                return Ok(());
            }
            store.wal.write_hard_state(store.hard_state_seq + 1, &hard_state)?;
            store.hard_state_seq += 1;
            store.metrics.hard_state_changed(&store.hard_state, &hard_state);
            store.hard_state = hard_state;
            Ok(())
        })?)
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.check_snapshot_file(&meta)?;
        Ok(self.write(|store| {
            store.snapshot = meta;
            store.replace_wal()?;
            // Entries not yet synced are gone with the old WAL: no sync makes them durable.
            store.metrics.unsynced_entries = 0;
            snapshot::prune(&store.snapshots_dir(), store.snapshot.last_log_id)
        })?)
    }

    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let index = meta.last_log_id.index;
        if index <= self.snapshot.last_log_id.index {
            return Ok(());
        }
        assert!(index <= self.last_index(), "compacting past the end of the log");
        assert_eq!(self.term(index)?, meta.last_log_id.term, "compacting at a different term");
        self.check_snapshot_file(&meta)?;
        Ok(self.write(|store| store.compact_to(meta))?)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let (started, syncs) = (Instant::now(), self.wal.syncs);
        self.write(|store| store.wal.sync())?;
        // A sync with nothing to make durable is not an fsync, and not timed.
        if self.wal.syncs != syncs {
            self.metrics.synced(started.elapsed());
        }
        Ok(())
    }
}
