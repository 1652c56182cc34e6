//! `skiff serve --join URL`: a node that joins a running cluster by address.
//!
//! The node learns what its flags don't say from any member (`GET /v1/skiff/cluster`: the
//! cluster's name, its `[raft]` settings and the members with their addresses), starts
//! with an empty membership (it has no vote until the cluster adds it), then asks the
//! cluster to add it at its addresses: as a learner that catches up, then a voter (thesis
//! §4.2.1). Its membership, and so its peers, then come from its own replicated state; the
//! settings it joined with are kept in `<data-dir>/cluster.toml`, so a restart needs only
//! `skiff serve --id ID --data-dir DIR`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use skiff::NodeId;
use skiff::config::{ClusterConfig, NodeConfig};
use skiff_client::{Client, ClusterInfo, NewMember};

/// A node's own addresses from `serve`'s flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnAddress {
    pub raft: Option<String>,
    pub raft_listen: Option<String>,
    pub http: Option<String>,
    pub redis: Option<String>,
}

/// Where a node that joined keeps the settings it joined with.
pub fn saved_cluster_file(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster.toml")
}

/// The cluster file a joining node would have had: the cluster's name and settings, and
/// its members as the initial nodes (their addresses only serve until the node's own
/// membership says where they live).
pub fn cluster_from(info: &ClusterInfo) -> Result<ClusterConfig> {
    if info.tls || info.auth {
        bail!(
            "cluster {:?} uses TLS or tokens: give --config FILE, the cluster file with its [tls] and [auth] \
             sections, so that this node has its certificate (`skiff certs`) and the tokens file",
            info.name
        );
    }
    let nodes: Vec<serde_json::Value> = info
        .members
        .iter()
        .filter(|member| member.raft != member.id)
        .map(|member| serde_json::json!({ "id": member.id, "raft": member.raft, "http": member.http, "redis": member.redis }))
        .collect();
    let file = serde_json::json!({
        "cluster": { "name": info.name, "insecure": info.insecure },
        "node": nodes,
        "raft": info.raft,
    });
    ClusterConfig::from_json_str(&file.to_string()).context("the cluster's settings")
}

/// Puts this node's entry in `cluster`, with the addresses the flags give (over the file's),
/// marked `join`: it starts with no membership and waits to be added.
pub fn with_own_entry(
    mut cluster: ClusterConfig,
    id: NodeId,
    own: &OwnAddress,
    joining: bool,
) -> Result<ClusterConfig> {
    let position = cluster.node.iter().position(|node| node.node_id().ok() == Some(id));
    let entry = match position {
        Some(position) => &mut cluster.node[position],
        None => {
            let Some(raft) = own.raft.clone() else {
                // The usual message (which nodes the file lists), and how to add one.
                let error = cluster.node(id).err().map(|error| error.to_string()).unwrap_or_default();
                bail!(
                    "{error}; to start a node the file does not list, give its addresses (--raft HOST:PORT, --http ...)"
                );
            };
            cluster.node.push(NodeConfig {
                id: id.to_string(),
                raft,
                raft_listen: None,
                http: None,
                redis: None,
                join: true,
                cert: None,
                key: None,
            });
            cluster.node.last_mut().expect("just pushed")
        }
    };
    if let Some(raft) = &own.raft {
        entry.raft = raft.clone();
    }
    entry.raft_listen = own.raft_listen.clone().or(entry.raft_listen.take());
    entry.http = own.http.clone().or(entry.http.take());
    entry.redis = own.redis.clone().or(entry.redis.take());
    entry.join |= joining;
    cluster.validate()?;
    Ok(cluster)
}

/// Asks the cluster to add this node (learner, catch-up, voter), unless it is a voter
/// already (a restart). A node whose data directory is new (`fresh`) but whose id is still
/// a member lost its data: it is removed first, then added back, so that it counts again
/// only once it holds the log (its old self's votes are forgotten). Returns what to log.
pub fn ensure_member(client: &Client, cluster: &ClusterConfig, id: NodeId, fresh: bool) -> Result<String> {
    let entry = cluster.node(id)?;
    let members = client.members().context("cannot list the cluster's members")?;
    let name = id.to_string();
    let known = members.members.iter().find(|member| member.id == name);
    match known {
        Some(member) if fresh => {
            tracing::warn!(node = %id, "{id} is a {} of the cluster but its data directory is new: removing it and \
                adding it back as a learner", if member.voter { "voter" } else { "learner" });
            client.remove_member(&name).with_context(|| format!("cannot remove the old {id}"))?;
        }
        Some(member) if member.voter => return Ok(format!("{id} is a voter of the cluster already")),
        _ => {}
    }
    let member = NewMember {
        id: name,
        raft: Some(entry.raft.clone()),
        http: entry.http.clone(),
        redis: entry.redis.clone(),
        learner: false,
    };
    let added = client.add_member(&member).context("the cluster did not add this node")?;
    Ok(format!("joined the cluster as a {} at {}", if added.voter { "voter" } else { "learner" }, added.raft))
}
