//! The `node-id` file: which node and cluster a data directory belongs to. Plain text, so
//! an operator can read it:
//!
//! ```text
//! # Skiff data directory. Do not edit or copy to another node.
//! node-id n1
//! cluster demo
//! cluster-id 3f2a9c0e5b7d41e8a6c2f09b1d4e7a35
//! ```
//!
//! It is written last when a directory is initialised (atomically), so its presence means
//! the directory is complete. A node refuses to open a directory of another node or
//! cluster: two nodes sharing a log would break every guarantee Raft makes.
//!
//! The `cluster-id` line is optional: the random id of the cluster (128 bits, 32 lowercase
//! hex digits) that tells two clusters of the same name apart. Directories made before it
//! existed have none; a node without one records it later ([`ClusterIdFile::record`]), once,
//! atomically, and it never changes afterwards.

use std::fs;
use std::io;
use std::path::Path;

use skiff_raft::NodeId;

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::fsutil;

pub(crate) const FILE_NAME: &str = "node-id";

/// The node and cluster recorded in a data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub node_id: NodeId,
    pub cluster: String,
    /// The cluster's random id, once known.
    pub cluster_id: Option<String>,
}

/// Whether `id` has the form of a cluster id: 32 lowercase hex digits.
pub fn is_cluster_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// The identity in `dir`, or `None` if the directory was never initialised.
pub(crate) fn read(dir: &Path) -> Result<Option<Identity>> {
    let path = dir.join(FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("read", &path, error)),
    };
    let mut node_id = None;
    let mut cluster = None;
    let mut cluster_id = None;
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        match line.split_once(' ') {
            Some(("node-id", value)) => node_id = value.trim().strip_prefix('n').and_then(|id| id.parse().ok()),
            Some(("cluster", value)) => cluster = Some(value.trim().to_string()),
            Some(("cluster-id", value)) if is_cluster_id(value.trim()) => cluster_id = Some(value.trim().to_string()),
            Some(("cluster-id", value)) => {
                return Err(Error::corrupt(&path, 0, format!("cluster-id {value:?} is not 32 lowercase hex digits")));
            }
            _ => return Err(Error::corrupt(&path, 0, format!("unexpected line {line:?}"))),
        }
    }
    match (node_id, cluster) {
        (Some(id), Some(cluster)) => Ok(Some(Identity { node_id: NodeId(id), cluster, cluster_id })),
        _ => {
            Err(Error::corrupt(&path, 0, "it must name the node (`node-id n<id>`) and the cluster (`cluster <name>`)"))
        }
    }
}

/// Records `identity` in `dir`, atomically.
pub(crate) fn write(dir: &Path, identity: &Identity) -> Result<()> {
    let mut text = format!(
        "# Skiff data directory. Do not edit or copy to another node.\nnode-id {}\ncluster {}\n",
        identity.node_id, identity.cluster
    );
    if let Some(cluster_id) = &identity.cluster_id {
        text.push_str(&format!("cluster-id {cluster_id}\n"));
    }
    fsutil::write_atomically(dir, FILE_NAME, text.as_bytes())
}

/// Records the cluster id in a data directory that has none yet, from any thread, while
/// the [`DiskStorage`](crate::DiskStorage) that opened the directory runs (see
/// [`DiskStorage::cluster_id_file`](crate::DiskStorage::cluster_id_file)).
#[derive(Debug)]
pub struct ClusterIdFile {
    dir: PathBuf,
    /// Serialises writers of this handle (the file is rewritten whole).
    writing: Mutex<()>,
}

impl ClusterIdFile {
    pub(crate) fn new(dir: PathBuf) -> ClusterIdFile {
        ClusterIdFile { dir, writing: Mutex::new(()) }
    }

    /// The cluster id recorded now, if any.
    pub fn read(&self) -> Result<Option<String>> {
        Ok(read(&self.dir)?.and_then(|identity| identity.cluster_id))
    }

    /// Records `cluster_id` (32 lowercase hex digits), atomically and durably. Recording
    /// the id already recorded does nothing; a different one is refused: a cluster's id
    /// never changes.
    pub fn record(&self, cluster_id: &str) -> Result<()> {
        if !is_cluster_id(cluster_id) {
            return Err(Error::InvalidInput(format!("cluster id {cluster_id:?} is not 32 lowercase hex digits")));
        }
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.dir.join(FILE_NAME);
        let Some(mut identity) = read(&self.dir)? else {
            return Err(Error::corrupt(&path, 0, "the node-id file is missing"));
        };
        match &identity.cluster_id {
            Some(recorded) if recorded == cluster_id => Ok(()),
            Some(recorded) => Err(Error::InvalidInput(format!(
                "{} already records cluster id {recorded}, not {cluster_id}",
                path.display()
            ))),
            None => {
                identity.cluster_id = Some(cluster_id.to_string());
                write(&self.dir, &identity)
            }
        }
    }
}

/// Refuses a directory that belongs to another node or cluster.
pub(crate) fn check(dir: &Path, found: &Identity, expected: &Identity) -> Result<()> {
    if found.node_id != expected.node_id {
        return Err(Error::WrongNode { dir: dir.to_path_buf(), found: found.node_id, expected: expected.node_id });
    }
    if found.cluster != expected.cluster {
        return Err(Error::WrongCluster {
            dir: dir.to_path_buf(),
            found: found.cluster.clone(),
            node: found.node_id,
            expected: expected.cluster.clone(),
            expected_node: expected.node_id,
        });
    }
    Ok(())
}
