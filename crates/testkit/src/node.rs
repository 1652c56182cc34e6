//! Clusters of `skiff::Node`s in one process: [`MemoryCluster`] over the in-process
//! transport (faults by `MemoryNetwork::isolate` and friends, any store), and
//! [`TcpCluster`] over TCP on loopback from a cluster file, each node with a `DiskStorage`
//! in a temporary directory, where a crash is a dropped node. Both hold nodes in `Arc`s, so
//! a test can move one into a task.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff::config::ClusterConfig;
use skiff::transport::memory::MemoryNetwork;
use skiff::{Index, LogStore, MemLogStore, Membership, Node, NodeId, NodeOptions, RoleName, StateMachine};

use crate::cluster_file::ClusterFile;
use crate::wait::{eventually_async, eventually_ok_async};

/// A replicated list of strings; applying a push returns the list's new length.
#[derive(Default)]
pub struct Journal {
    pub lines: Vec<String>,
}

/// The one command of a [`Journal`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    Push(String),
}

impl StateMachine for Journal {
    type Command = Command;
    type Output = usize;

    fn apply(&mut self, _index: Index, command: Command) -> usize {
        let Command::Push(line) = command;
        self.lines.push(line);
        self.lines.len()
    }

    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self.lines.join("\n").as_bytes())
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
        let mut text = String::new();
        snapshot.read_to_string(&mut text)?;
        self.lines = if text.is_empty() { Vec::new() } else { text.split('\n').map(str::to_string).collect() };
        Ok(())
    }
}

/// `prefix0`, `prefix1`, ... for each number in `range`.
pub fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// Options for a node of a [`MemoryCluster`]: 2 ms ticks (election timeouts of 60-120 ms),
/// a snapshot every 1000 entries.
pub fn fast_options(id: NodeId) -> NodeOptions {
    let mut options = NodeOptions::new(id);
    options.tick = Duration::from_millis(2);
    options.snapshot_after_entries = 1000;
    options
}

/// The nodes of a cluster, by id.
type Nodes<S> = BTreeMap<NodeId, Arc<Node<S>>>;

/// Waits until every node in `among` knows the same leader, one of them, which knows itself
/// to be leader; returns it.
async fn agreed_leader<S: StateMachine>(nodes: &Nodes<S>, among: &[NodeId]) -> NodeId {
    let what = format!("an agreed leader among {among:?}");
    eventually_ok_async(what, async || {
        let known: Vec<Option<NodeId>> = among.iter().map(|id| nodes[id].leader().leader).collect();
        let Some(Some(leader)) = known.first().copied() else { return Err(format!("{known:?}")) };
        if !known.iter().all(|known| *known == Some(leader)) || !among.contains(&leader) {
            return Err(format!("{known:?}"));
        }
        match nodes[&leader].status().await {
            Ok(status) if status.role == RoleName::Leader => Ok(leader),
            Ok(status) => Err(format!("{known:?}, but {leader} is {:?}", status.role)),
            Err(error) => Err(format!("{known:?}, but {leader}'s status: {error}")),
        }
    })
    .await
}

/// Node `id` of `nodes`, which must be running.
fn running<S: StateMachine>(nodes: &Nodes<S>, id: NodeId) -> &Arc<Node<S>> {
    nodes.get(&id).unwrap_or_else(|| panic!("{id} is not running"))
}

/// Nodes in one process over the in-process transport.
pub struct MemoryCluster<S: StateMachine> {
    pub network: MemoryNetwork,
    pub membership: Membership,
    nodes: Nodes<S>,
}

impl<S: StateMachine + Default> MemoryCluster<S> {
    /// `size` voters n1.., each with [`fast_options`] and a `MemLogStore`.
    pub fn new(size: u64) -> MemoryCluster<S> {
        MemoryCluster::with_options(size, fast_options)
    }

    /// `size` voters n1.., each with `options(id)` and a `MemLogStore`.
    pub fn with_options(size: u64, options: impl Fn(NodeId) -> NodeOptions) -> MemoryCluster<S> {
        let mut cluster = MemoryCluster::empty(size);
        for id in (1..=size).map(NodeId) {
            let store = MemLogStore::new(cluster.membership.clone());
            cluster.start(options(id), S::default(), store);
        }
        cluster
    }
}

impl<S: StateMachine> MemoryCluster<S> {
    /// No node started yet; the voters n1..n`size` are the initial membership.
    pub fn empty(size: u64) -> MemoryCluster<S> {
        let membership = Membership::with_voters((1..=size).map(NodeId));
        MemoryCluster { network: MemoryNetwork::new(), membership, nodes: BTreeMap::new() }
    }

    /// Starts a node with `options`, `state_machine` and `store`, joined to the network.
    pub fn start(&mut self, options: NodeOptions, state_machine: S, store: impl LogStore) {
        let id = options.raft.id;
        let (inbox, receiver) = tokio::sync::mpsc::channel(4096);
        let transport = self.network.join(id, inbox);
        let node = Node::start_with(options, state_machine, store, transport, receiver)
            .unwrap_or_else(|error| panic!("{id} does not start: {error}"));
        self.nodes.insert(id, Arc::new(node));
    }

    pub fn node(&self, id: NodeId) -> &Arc<Node<S>> {
        running(&self.nodes, id)
    }

    /// The running nodes' ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The running nodes other than `id`.
    pub fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes.keys().copied().filter(|&other| other != id).collect()
    }

    /// Drops node `id` (it stops at once, like a crash) and takes it off the network.
    pub fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id).unwrap_or_else(|| panic!("{id} is not running"));
        self.network.leave(id);
    }

    /// Waits until every running node agrees on a leader; returns it.
    pub async fn leader(&self) -> NodeId {
        agreed_leader(&self.nodes, &self.ids()).await
    }

    /// Waits until the nodes `among` agree on a leader, one of them; returns it.
    pub async fn leader_among(&self, among: &[NodeId]) -> NodeId {
        agreed_leader(&self.nodes, among).await
    }

    /// Shuts every node down, each of which must succeed.
    pub async fn shutdown(self) {
        for (id, node) in self.nodes {
            node.shutdown().await.unwrap_or_else(|error| panic!("{id}: shutdown: {error}"));
        }
    }
}

/// Nodes in one process over TCP on loopback, started with `Node::start` from a cluster
/// file, each with its data in its own directory under one temporary directory.
pub struct TcpCluster<S: StateMachine> {
    pub file: ClusterFile,
    pub config: ClusterConfig,
    dir: tempfile::TempDir,
    nodes: Nodes<S>,
}

impl<S: StateMachine + Default> TcpCluster<S> {
    /// Three nodes with 5 ms ticks (heartbeats every 25 ms, election timeouts of 150-300
    /// ms) and a snapshot every `snapshot_after_entries` entries, all started.
    pub async fn start(name: &str, snapshot_after_entries: u64) -> TcpCluster<S> {
        TcpCluster::start_with(name, snapshot_after_entries, false).await
    }

    /// As [`TcpCluster::start`], with mutual TLS between the nodes: certificates from
    /// `skiff certs` in [`TcpCluster::certs_dir`].
    pub async fn start_tls(name: &str, snapshot_after_entries: u64) -> TcpCluster<S> {
        TcpCluster::start_with(name, snapshot_after_entries, true).await
    }

    async fn start_with(name: &str, snapshot_after_entries: u64, tls: bool) -> TcpCluster<S> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut builder =
            ClusterFile::builder(name, 3).raft("tick_ms", 5).raft("snapshot_after_entries", snapshot_after_entries);
        if tls {
            builder = builder.tls(dir.path().join("certs"));
        }
        let file = builder.build();
        let config = file.config();
        let mut cluster = TcpCluster { file, config, dir, nodes: BTreeMap::new() };
        for id in cluster.config.node_ids().collect::<Vec<_>>() {
            cluster.start_node(id).await;
        }
        cluster
    }

    /// Starts node `id` from its data directory. A crashed incarnation releases its
    /// directory lock and its port a moment after it is dropped: retry until they are free.
    pub async fn start_node(&mut self, id: NodeId) {
        let (config, data_dir) = (&self.config, self.data_dir(id));
        let node = eventually_ok_async(format!("{id} starts"), async || {
            Node::start(config, id, S::default(), &data_dir).await
        })
        .await;
        self.nodes.insert(id, Arc::new(node));
    }
}

impl<S: StateMachine> TcpCluster<S> {
    /// Where node `id` keeps its data.
    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(id.to_string())
    }

    /// Where the certificates of a [`TcpCluster::start_tls`] cluster are.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn node(&self, id: NodeId) -> &Arc<Node<S>> {
        running(&self.nodes, id)
    }

    /// The running nodes' ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The running nodes other than `id`.
    pub fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes.keys().copied().filter(|&other| other != id).collect()
    }

    /// Drops node `id`: it stops at once, like a crash, without handing leadership over.
    pub fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id).unwrap_or_else(|| panic!("{id} is not running"));
    }

    /// Forgets node `id` after the test shut it down itself.
    pub fn forget(&mut self, id: NodeId) {
        self.nodes.remove(&id);
    }

    /// Waits until every running node agrees on a leader; returns it.
    pub async fn leader(&self) -> NodeId {
        agreed_leader(&self.nodes, &self.ids()).await
    }
}

/// What the runtime's tests do with a cluster of [`Journal`]s.
// Only tests call these, on their own runtime: no caller needs the futures to be `Send`.
#[allow(async_fn_in_trait)]
pub trait JournalCluster {
    fn journal(&self, id: NodeId) -> &Arc<Node<Journal>>;

    /// Proposes a push through node `id`, which must succeed; returns the journal's length.
    async fn push(&self, id: NodeId, line: impl Into<String> + Send) -> usize {
        self.journal(id)
            .propose(Command::Push(line.into()))
            .await
            .unwrap_or_else(|error| panic!("propose on {id}: {error}"))
    }

    /// A linearizable read of node `id`'s journal.
    async fn lines(&self, id: NodeId) -> Vec<String> {
        self.journal(id)
            .read(|journal| journal.lines.clone())
            .await
            .unwrap_or_else(|error| panic!("read on {id}: {error}"))
    }

    /// Node `id`'s journal as it is now.
    async fn stale_lines(&self, id: NodeId) -> Vec<String> {
        self.journal(id)
            .read_stale(|journal| journal.lines.clone())
            .await
            .unwrap_or_else(|error| panic!("stale read on {id}: {error}"))
    }

    /// Waits until node `id` has applied exactly `expected`.
    async fn wait_for_lines(&self, id: NodeId, expected: &[&str], what: impl Display) {
        eventually_async(what, async || self.stale_lines(id).await == expected).await;
    }
}

impl JournalCluster for MemoryCluster<Journal> {
    fn journal(&self, id: NodeId) -> &Arc<Node<Journal>> {
        self.node(id)
    }
}

impl JournalCluster for TcpCluster<Journal> {
    fn journal(&self, id: NodeId) -> &Arc<Node<Journal>> {
        self.node(id)
    }
}
