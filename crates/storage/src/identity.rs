//! The `node-id` file: which node and cluster a data directory belongs to. Plain text, so
//! an operator can read it:
//!
//! ```text
//! # Skiff data directory. Do not edit or copy to another node.
//! node-id n1
//! cluster demo
//! ```
//!
//! It is written last when a directory is initialised (atomically), so its presence means
//! the directory is complete. A node refuses to open a directory of another node or
//! cluster: two nodes sharing a log would break every guarantee Raft makes.

use std::fs;
use std::io;
use std::path::Path;

use skiff_raft::NodeId;

use crate::error::{Error, Result};
use crate::fsutil;

pub(crate) const FILE_NAME: &str = "node-id";

/// The node and cluster recorded in a data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub node_id: NodeId,
    pub cluster: String,
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
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        match line.split_once(' ') {
            Some(("node-id", value)) => node_id = value.trim().strip_prefix('n').and_then(|id| id.parse().ok()),
            Some(("cluster", value)) => cluster = Some(value.trim().to_string()),
            _ => return Err(Error::corrupt(&path, 0, format!("unexpected line {line:?}"))),
        }
    }
    match (node_id, cluster) {
        (Some(id), Some(cluster)) => Ok(Some(Identity { node_id: NodeId(id), cluster })),
        _ => {
            Err(Error::corrupt(&path, 0, "it must name the node (`node-id n<id>`) and the cluster (`cluster <name>`)"))
        }
    }
}

/// Records `identity` in `dir`, atomically.
pub(crate) fn write(dir: &Path, identity: &Identity) -> Result<()> {
    let text = format!(
        "# Skiff data directory. Do not edit or copy to another node.\nnode-id {}\ncluster {}\n",
        identity.node_id, identity.cluster
    );
    fsutil::write_atomically(dir, FILE_NAME, text.as_bytes())
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
