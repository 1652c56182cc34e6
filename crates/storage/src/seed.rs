//! Data directories made by an operator rather than by a running node:
//!
//! - [`DiskStorage::seed`] makes a **new** directory that starts from a state machine's
//!   snapshot at a given index and term (a restore from a backup, `skiff snapshot restore`);
//! - [`DiskStorage::force_new_cluster`] turns a stopped node's directory into that of a
//!   one-member cluster (the last resort after losing a quorum for good, `skiff recover`).
//!
//! Both write what the store itself would have written (the same files, fsync'd the same
//! way), so a node opens the result with [`DiskStorage::open`] like any other directory.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use skiff_raft::{Entry, HardState, Index, LogId, Membership, Payload, SnapshotMeta, Storage, StorageError, Term};

use crate::disk::{DiskOptions, DiskStorage, WAL_DIR_NAME};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, DirLock};
use crate::hardstate;
use crate::identity::{self, Identity};
use crate::snapshot::{self, SnapshotWriter};

/// What [`DiskStorage::force_new_cluster`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedCluster {
    /// The commit index the directory recorded: entries after it were not known committed.
    pub commit: Index,
    /// The last entry of the log before the new membership.
    pub last_log_id: LogId,
    /// The entry appended with the new membership.
    pub membership_entry: LogId,
    /// The cluster id the directory had, and the new one.
    pub old_cluster_id: Option<String>,
    pub cluster_id: String,
}

impl DiskStorage {
    /// Makes the new data directory `dir` (absent or empty: anything else is refused) of
    /// node `options.node_id` of cluster `options.cluster`, holding the state machine's
    /// snapshot `data` as the snapshot at `last_log_id`, with `options.initial_membership`
    /// as its membership and `options.cluster_id` recorded. The log is empty after the
    /// snapshot, the term is `last_log_id.term` with no vote, and the commit index is the
    /// snapshot's: a node started on it restores the state machine from the snapshot, and
    /// elects a leader with the other members seeded from the same snapshot.
    ///
    /// `data` is streamed into the snapshot file (never held in memory); an error reading
    /// it (a backup whose checksum does not match) leaves no snapshot behind. The
    /// `node-id` file is written last: a directory without it is refused by `open`, so an
    /// interrupted seed is never taken for a node's state. After a failure, the files it
    /// wrote are removed.
    pub fn seed(dir: impl AsRef<Path>, options: &DiskOptions, last_log_id: LogId, data: &mut dyn Read) -> Result<()> {
        let dir = dir.as_ref();
        options.validate()?;
        if last_log_id.index == Index(0) {
            return Err(Error::InvalidInput(
                "cannot seed a directory from a snapshot at index 0 (it holds nothing)".into(),
            ));
        }
        if !options.initial_membership.is_valid() || options.initial_membership.voters.is_empty() {
            return Err(Error::InvalidInput(format!(
                "a seeded directory needs a valid membership with voters, not {:?}",
                options.initial_membership
            )));
        }
        refuse_unless_empty(dir)?;
        fsutil::create_dir_all(dir)?;
        let lock = DirLock::acquire(dir)?;
        let result = write_seed(dir, options, last_log_id, data);
        if result.is_err() {
            // Best effort: the error to report is the first one.
            let _ = fs::remove_dir_all(dir.join(WAL_DIR_NAME));
            let _ = fs::remove_dir_all(dir.join(snapshot::DIR_NAME));
            let _ = fs::remove_file(dir.join(hardstate::FILE_NAME));
            let _ = fs::remove_file(dir.join("lock"));
        }
        drop(lock);
        result
    }

    /// Turns the data directory `dir` of a **stopped** node into that of a new cluster whose
    /// only member is this node (`membership`, which must have it as its one voter), with the
    /// new cluster id `cluster_id`: the last resort after a quorum is lost for good.
    ///
    /// Everything in the node's log is kept, committed or not: the new membership is appended
    /// after the last entry, as an entry of a new term (one above any the node has seen, with
    /// its vote for itself, as if it had won an election in that term), so once the node
    /// leads, it commits every entry before it. The cluster id is replaced first, so that
    /// whatever happens next this directory can no longer talk to the old cluster's nodes;
    /// run it again if it is interrupted.
    ///
    /// Refused when the directory is in use ([`Error::Locked`]), was never initialised, or
    /// belongs to another node or cluster.
    pub fn force_new_cluster(
        dir: impl AsRef<Path>,
        options: &DiskOptions,
        membership: Membership,
        cluster_id: &str,
    ) -> Result<ForcedCluster> {
        let dir = dir.as_ref();
        let me = options.node_id;
        if !membership.is_valid() || membership.voters.len() != 1 || !membership.is_voter(me) || membership.len() != 1 {
            return Err(Error::InvalidInput(format!("the new membership must be {me} alone, not {membership:?}")));
        }
        if !identity::is_cluster_id(cluster_id) {
            return Err(Error::InvalidInput(format!("cluster id {cluster_id:?} is not 32 lowercase hex digits")));
        }
        if identity::read(dir)?.is_none() {
            return Err(Error::InvalidInput(format!(
                "{} is not a Skiff data directory (it has no `{}` file): there is nothing to recover",
                dir.display(),
                identity::FILE_NAME
            )));
        }
        let mut store = DiskStorage::open(dir, options.clone())?;
        let old_cluster_id = store.cluster_id().map(str::to_string);
        let hard_state = store.hard_state();
        let last_index = store.last_index();
        let last_term = store
            .term(last_index)
            .map_err(|error| Error::Inconsistent { dir: dir.to_path_buf(), reason: error.to_string() })?;
        let last_log_id = LogId::new(last_term, last_index);
        let term = Term(hard_state.term.0.max(last_log_id.term.0) + 1);
        let found =
            identity::read(dir)?.ok_or_else(|| Error::corrupt(&dir.join(identity::FILE_NAME), 0, "it vanished"))?;
        identity::write(dir, &Identity { cluster_id: Some(cluster_id.to_string()), ..found })?;
        let membership_entry = LogId::new(term, last_index.next());
        // The store's own writes, as a driver would make them (their errors name the file).
        let failed = |error: StorageError| {
            Error::io("append the new membership to the log in", dir, io::Error::other(error.to_string()))
        };
        store
            .append(&[Entry { log_id: membership_entry, payload: Payload::Membership(membership) }])
            .map_err(failed)?;
        store.set_hard_state(HardState { term, vote: Some(me), commit: hard_state.commit }).map_err(failed)?;
        store.sync().map_err(failed)?;
        Ok(ForcedCluster {
            commit: hard_state.commit,
            last_log_id,
            membership_entry,
            old_cluster_id,
            cluster_id: cluster_id.to_string(),
        })
    }
}

/// Refuses a directory that exists and holds anything.
fn refuse_unless_empty(dir: &Path) -> Result<()> {
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io("list", dir, error)),
    };
    if let Some(entry) = entries.next() {
        let name = entry.context("list", dir)?.file_name();
        return Err(Error::InvalidInput(format!(
            "{} is not empty (it holds {}); a restore only seeds a new, empty data directory: remove it or choose another",
            dir.display(),
            name.to_string_lossy()
        )));
    }
    Ok(())
}

/// Writes the seeded directory's files, `node-id` last.
fn write_seed(dir: &Path, options: &DiskOptions, last_log_id: LogId, data: &mut dyn Read) -> Result<()> {
    let wal_dir = dir.join(WAL_DIR_NAME);
    let snapshots_dir = dir.join(snapshot::DIR_NAME);
    fsutil::create_dir_all(&wal_dir)?;
    fsutil::create_dir_all(&snapshots_dir)?;
    let meta = SnapshotMeta { last_log_id, membership: options.initial_membership.clone() };
    let mut writer = SnapshotWriter::create(&snapshots_dir, meta)?;
    std::io::copy(data, &mut writer).context("write the snapshot data into", &snapshots_dir)?;
    writer.finish()?;
    let hard_state = HardState { term: last_log_id.term, vote: None, commit: last_log_id.index };
    hardstate::write(dir, 0, &hard_state)?;
    fsutil::sync_dir(&wal_dir)?;
    fsutil::sync_dir(dir)?;
    let identity =
        Identity { node_id: options.node_id, cluster: options.cluster.clone(), cluster_id: options.cluster_id.clone() };
    identity::write(dir, &identity)
}
