//! Clusters of nodes in one process over real TCP on loopback, each node with a
//! `DiskStorage` in a temporary directory (fsync on), started with `Node::start` from a
//! cluster file: election, replication, forwarding, linearizable reads from followers, a
//! leader crash and re-election, restart from disk with data intact, a follower far behind
//! catching up by snapshot, and shutdown with leadership transfer.
//!
//! A crash is a dropped `Node`: it stops at once, without a transfer, keeping only what it
//! synced. Each test uses its own port range, so the tests run in parallel.

mod common;

use common::{Command, Journal};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use skiff::config::ClusterConfig;
use skiff::{Node, NodeId};
use skiff_raft::{Payload, RoleName, Storage};
use skiff_storage::{DiskOptions, DiskStorage};

/// How long any awaited condition may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(10);
const CLUSTER_NAME: &str = "tcp-test";

/// The cluster file of three nodes on `127.0.0.1:{base+1..=base+3}`, with 5 ms ticks
/// (heartbeats every 25 ms, election timeouts of 150-300 ms).
fn cluster_file(base_port: u16, snapshot_after_entries: u64) -> ClusterConfig {
    let mut text = format!("[cluster]\nname = \"{CLUSTER_NAME}\"\n");
    for i in 1..=3 {
        text.push_str(&format!("\n[[node]]\nid = \"n{i}\"\nraft = \"127.0.0.1:{}\"\n", base_port + i));
    }
    text.push_str(&format!("\n[raft]\ntick_ms = 5\nsnapshot_after_entries = {snapshot_after_entries}\n"));
    ClusterConfig::from_toml_str(&text).expect("a valid cluster file")
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// Polls `condition` every few milliseconds until it holds; fails the test after [`TIMEOUT`].
async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {TIMEOUT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Cluster {
    config: ClusterConfig,
    dir: tempfile::TempDir,
    nodes: BTreeMap<NodeId, Node<Journal>>,
}

impl Cluster {
    async fn start(base_port: u16, snapshot_after_entries: u64) -> Cluster {
        let config = cluster_file(base_port, snapshot_after_entries);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = Cluster { config, dir, nodes: BTreeMap::new() };
        for id in cluster.config.node_ids().collect::<Vec<_>>() {
            cluster.start_node(id).await;
        }
        cluster
    }

    fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(id.to_string())
    }

    /// Starts node `id` from its data directory. A crashed incarnation releases its
    /// directory lock and its port a moment after it is dropped: retry until they are free.
    async fn start_node(&mut self, id: NodeId) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match Node::start(&self.config, id, Journal::default(), self.data_dir(id)).await {
                Ok(node) => {
                    self.nodes.insert(id, node);
                    return;
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%id, %error, "start failed; retrying");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => panic!("{id} did not start within {TIMEOUT:?}: {error}"),
            }
        }
    }

    /// Drops node `id`: it stops at once, like a crash, without handing leadership over.
    fn crash(&mut self, id: NodeId) {
        drop(self.nodes.remove(&id).expect("a running node"));
    }

    fn node(&self, id: NodeId) -> &Node<Journal> {
        &self.nodes[&id]
    }

    fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes.keys().copied().filter(|&other| other != id).collect()
    }

    /// Waits until every running node knows the same leader, one of them, which knows
    /// itself to be leader; returns it.
    async fn leader(&self) -> NodeId {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let known: Vec<Option<NodeId>> = self.nodes.values().map(|node| node.leader().leader).collect();
            if let Some(Some(leader)) = known.first()
                && known.iter().all(|known| known == &Some(*leader))
                && let Some(node) = self.nodes.get(leader)
                && node.status().await.expect("status").role == RoleName::Leader
            {
                return *leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader within {TIMEOUT:?}: {known:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn push(&self, id: NodeId, line: impl Into<String>) -> usize {
        self.node(id)
            .propose(Command::Push(line.into()))
            .await
            .unwrap_or_else(|error| panic!("propose on {id}: {error}"))
    }

    /// A linearizable read of node `id`'s journal.
    async fn lines(&self, id: NodeId) -> Vec<String> {
        self.node(id)
            .read(|journal| journal.lines.clone())
            .await
            .unwrap_or_else(|error| panic!("read on {id}: {error}"))
    }

    /// Node `id`'s journal as it is now.
    async fn stale_lines(&self, id: NodeId) -> Vec<String> {
        self.node(id).read_stale(|journal| journal.lines.clone()).await.expect("stale read")
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_replicate_and_forward() {
    init_logs();
    let started = Instant::now();
    let cluster = Cluster::start(18100, 1000).await;
    let leader = cluster.leader().await;
    eprintln!("leader {leader} agreed on by all three {} ms after start", started.elapsed().as_millis());
    let followers = cluster.others(leader);

    // Replication: a write on the leader reaches every node's state machine.
    assert_eq!(cluster.push(leader, "a").await, 1);
    for &id in cluster.nodes.keys() {
        eventually(&format!("{id} applies the write"), || async { cluster.stale_lines(id).await == ["a"] }).await;
    }
    // Forwarding: a follower's proposal is applied by the leader, and its output comes back.
    assert_eq!(cluster.push(followers[0], "b").await, 2);
    assert_eq!(cluster.push(followers[1], "c").await, 3);
    for &id in cluster.nodes.keys() {
        assert_eq!(cluster.lines(id).await, ["a", "b", "c"], "{id}");
    }

    // The leader sees every follower match its log and connected over TCP.
    eventually("the followers match the leader's log", || async {
        let status = cluster.node(leader).status().await.expect("status");
        status.peers.len() == 2
            && status
                .peers
                .iter()
                .all(|peer| peer.match_index == Some(status.last_log_id.index) && peer.health.connected)
    })
    .await;
    let status = cluster.node(followers[0]).status().await.expect("status");
    assert_eq!((status.role, status.leader), (RoleName::Follower, Some(leader)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_from_a_follower_sees_every_acknowledged_write() {
    init_logs();
    let cluster = Cluster::start(18200, 1000).await;
    let leader = cluster.leader().await;
    let followers = cluster.others(leader);
    // Each read starts right after a write was acknowledged, on a node that may not have
    // received it yet: ReadIndex makes the follower wait for it.
    for i in 0..20 {
        let writer = if i % 3 == 0 { leader } else { followers[i % 2] };
        assert_eq!(cluster.push(writer, format!("w{i}")).await, i + 1);
        let reader = followers[(i + 1) % 2];
        assert_eq!(cluster.lines(reader).await, lines("w", 0..i + 1), "read on {reader} after write {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_and_restarts_from_disk_with_its_data() {
    init_logs();
    let mut cluster = Cluster::start(18300, 1000).await;
    let old_leader = cluster.leader().await;
    let old_term = cluster.node(old_leader).leader().term;
    for i in 0..10 {
        cluster.push(old_leader, format!("x{i}")).await;
    }
    cluster.crash(old_leader);

    // A request forwarded to the dead leader would have an unknown outcome: wait until a
    // survivor knows a new leader before proposing.
    let survivor = cluster.others(old_leader)[0];
    eventually("the survivors elect a new leader", || async {
        cluster.node(survivor).leader().leader.is_some_and(|leader| leader != old_leader)
    })
    .await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    assert!(cluster.node(new_leader).leader().term > old_term);
    assert_eq!(cluster.push(survivor, "after").await, 11, "all ten acknowledged writes survive the crash");
    for i in 0..4 {
        cluster.push(new_leader, format!("y{i}")).await;
    }

    // What the crashed leader synced is on its disk: every write it acknowledged.
    let options = DiskOptions::new(old_leader, CLUSTER_NAME, cluster.config.voters());
    let dir = cluster.data_dir(old_leader);
    let mut store = None;
    eventually("the crashed node releases its data directory", || {
        store = DiskStorage::open(&dir, options.clone()).ok();
        std::future::ready(store.is_some())
    })
    .await;
    let store = store.expect("opened");
    let entries = store.entries(store.first_index(), store.last_index().next(), u64::MAX).expect("entries");
    let on_disk: Vec<String> = entries
        .iter()
        .filter_map(|entry| match &entry.payload {
            Payload::Command(data) => Some(postcard::from_bytes::<Command>(data).expect("a command")),
            _ => None,
        })
        .map(|Command::Push(line)| line)
        .collect();
    assert_eq!(on_disk, lines("x", 0..10));
    assert!(store.hard_state().term >= old_term);
    drop(store);

    // Restarted, it rejoins as a follower and catches up with what it missed.
    cluster.start_node(old_leader).await;
    let mut expected = lines("x", 0..10);
    expected.push("after".into());
    expected.extend(lines("y", 0..4));
    assert_eq!(cluster.lines(old_leader).await, expected);
    let status = cluster.node(old_leader).status().await.expect("status");
    assert_eq!(status.role, RoleName::Follower);
    assert_eq!(cluster.leader().await, new_leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_by_snapshot() {
    init_logs();
    let mut cluster = Cluster::start(18400, 20).await;
    let leader = cluster.leader().await;
    let lagging = cluster.others(leader)[0];
    assert_eq!(cluster.push(leader, "e0").await, 1);
    eventually("the follower applies the first write", || async { cluster.stale_lines(lagging).await == ["e0"] }).await;
    let behind = cluster.node(lagging).status().await.expect("status").last_log_id.index;
    cluster.crash(lagging);

    for i in 1..100 {
        cluster.push(leader, format!("e{i}")).await;
    }
    let leader_status = cluster.node(leader).status().await.expect("status");
    // The leader no longer holds the entries the follower lacks: only a snapshot helps it.
    assert!(
        leader_status.snapshot_index.0 > behind.0 + 20,
        "the leader compacted its log past the follower's {behind}: {:?}",
        leader_status.snapshot_index
    );

    cluster.start_node(lagging).await;
    assert_eq!(cluster.lines(lagging).await, lines("e", 0..100));
    let status = cluster.node(lagging).status().await.expect("status");
    assert!(status.snapshot_index > behind, "the follower installed a snapshot: {:?}", status.snapshot_index);
    assert!(status.applied >= leader_status.commit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_the_leader_hands_leadership_over() {
    init_logs();
    let mut cluster = Cluster::start(18500, 1000).await;
    let leader = cluster.leader().await;
    let term = cluster.node(leader).leader().term;
    assert_eq!(cluster.push(leader, "before").await, 1);

    let started = Instant::now();
    cluster.node(leader).shutdown().await.expect("shutdown");
    let took = started.elapsed();
    // Shutdown returns early only once the leader has stepped down: a successor took over
    // by a transfer (without one, it stays leader until its 60-tick grace period ends).
    let last_known = cluster.node(leader).leader();
    assert!(last_known.term > term, "the old leader saw its successor's term: {last_known:?}");
    assert_ne!(last_known.leader, Some(leader));
    cluster.nodes.remove(&leader);
    let new_leader = cluster.leader().await;
    eprintln!("shutdown of {leader} took {} ms; {new_leader} took over", took.as_millis());
    assert_ne!(new_leader, leader);
    assert!(cluster.node(new_leader).leader().term >= last_known.term);
    let other = cluster.others(new_leader)[0];
    assert_eq!(cluster.push(other, "after").await, 2);
    assert_eq!(cluster.lines(other).await, ["before", "after"]);
}
