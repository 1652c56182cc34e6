//! What can go wrong with a data directory, said so that an operator knows what to do.

use std::io;
use std::path::{Path, PathBuf};

use skiff_raft::{Index, LogId, NodeId, StorageError};
use thiserror::Error;

/// An error of the disk store. Every message names the file and says what to do.
///
/// At the [`skiff_raft::Storage`] boundary these become [`StorageError::Io`] with the same
/// message: the core treats any of them as fatal for the node.
#[derive(Debug, Error)]
pub enum Error {
    /// An operating-system call on a file failed.
    #[error("{action} {path}: {source}; {}", io_advice(source))]
    Io {
        /// What the store was doing ("write to", "fdatasync", "rename ... to").
        action: String,
        path: PathBuf,
        source: io::Error,
    },
    /// An `fsync` or `fdatasync` failed. The store stops for good: see the message.
    #[error(
        "{action} {path} failed: {source}. After a failed sync the kernel may have dropped the data it \
         could not write while it still shows it to readers, and a retried sync can report success for it \
         (the \"fsyncgate\" problem): this store refuses every later write and sync, and nothing from here \
         on is acknowledged. The node must stop: check the disk (dmesg), then restart the node, which \
         re-reads its log from the disk with O_DIRECT (where the file system refuses O_DIRECT, such as \
         tmpfs, reboot the machine before restarting)"
    )]
    SyncFailed {
        /// "fsync" or "fdatasync".
        action: String,
        path: PathBuf,
        source: io::Error,
    },
    /// Checksummed data does not verify, or does not follow the format: the disk or
    /// something outside Skiff changed the file.
    #[error(
        "{path} is corrupt at offset {offset} ({reason}); the node will not start with a corrupt \
         log. Move the data directory aside and let the node catch up from its peers (remove it \
         from the cluster and add it back), or restore the directory from a backup"
    )]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// A WAL segment between two others (or between the snapshot and the log) is missing.
    #[error(
        "the WAL in {dir} has a hole: {before} ends at index {before_last}, but the next segment {after} \
         starts at index {after_first}; the segment holding indexes {}..={} is missing. The node will \
         not start with a hole in its log: restore the missing segment file, or move the data \
         directory aside and let the node catch up from its peers",
        .before_last.0 + 1, .after_first.0 - 1
    )]
    MissingSegment { dir: PathBuf, before: String, before_last: Index, after: String, after_first: Index },
    /// The data directory was created by another node.
    #[error(
        "the data directory {dir} belongs to node {found}, but this node is {expected}; point this \
         node at its own data directory (or an empty one), never at another node's"
    )]
    WrongNode { dir: PathBuf, found: NodeId, expected: NodeId },
    /// The data directory was created for another cluster.
    #[error(
        "the data directory {dir} belongs to cluster {found:?} (node {node}), but this node is \
         {expected_node} of cluster {expected:?}; point this node at its own data directory (or an \
         empty one)"
    )]
    WrongCluster { dir: PathBuf, found: String, node: NodeId, expected: String, expected_node: NodeId },
    /// Another process (or another store in this process) has the directory open.
    #[error("the data directory {dir} is in use by another process; stop it before starting this node")]
    Locked { dir: PathBuf },
    /// The hard state or snapshot contradicts the log.
    #[error(
        "{dir}: {reason}; the node will not start. Move the data directory aside and let the node catch up from its peers"
    )]
    Inconsistent { dir: PathBuf, reason: String },
    /// `compact` or `install_snapshot` was called for a snapshot whose file was never written.
    #[error(
        "no snapshot file for {log_id} in {dir}; write the state machine's snapshot with \
         `DiskStorage::snapshot_writer` (and `finish` it) before compacting or installing it"
    )]
    MissingSnapshot { dir: PathBuf, log_id: LogId },
    /// An earlier write or sync failed: the store refuses every write after it.
    #[error(
        "the store refuses writes because an earlier write failed ({cause}); nothing after that \
         failure was acknowledged. Fix the disk (space, hardware), then restart the node: it \
         recovers what was synced"
    )]
    Poisoned { cause: String },
    /// The caller asked for something the store cannot do (a bad option, an entry too big).
    #[error("{0}")]
    InvalidInput(String),
}

impl Error {
    /// An I/O error while doing `action` to `path`.
    pub fn io(action: impl Into<String>, path: &Path, source: io::Error) -> Error {
        Error::Io { action: action.into(), path: path.to_path_buf(), source }
    }

    /// `path` is corrupt at `offset`.
    pub fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
    }

    /// Whether the disk was full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. } | Error::SyncFailed { source, .. }
            if source.raw_os_error() == Some(libc::ENOSPC))
    }

    /// Whether a sync failed: the node must stop and restart (see [`Error::SyncFailed`]).
    pub fn is_sync_failure(&self) -> bool {
        matches!(self, Error::SyncFailed { .. })
    }
}

fn io_advice(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::ENOSPC) => "the disk is full: free space, then restart the node",
        Some(libc::EACCES) | Some(libc::EPERM) => "check the permissions of the data directory",
        Some(libc::EROFS) => "the file system is read-only: remount it read-write, then restart the node",
        _ => "check the disk (dmesg), then restart the node",
    }
}

impl From<Error> for StorageError {
    fn from(error: Error) -> StorageError {
        StorageError::Io(error.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "what and where" to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn context(self, action: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, action: &str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::io(action, path, source))
    }
}
