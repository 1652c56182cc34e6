//! Clusters of nodes in one process, over the in-process transport: election, replication,
//! forwarding, linearizable reads from followers, leader loss, restart from disk, catching
//! up by snapshot, and shutdown with leadership transfer.

mod common;

use common::{Command, Journal};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use skiff::transport::memory::MemoryNetwork;
use skiff::{Index, LogStore, MemLogStore, Membership, Node, NodeId, NodeOptions, StateMachine};
use skiff_storage::{DiskOptions, DiskStorage};

const TIMEOUT: Duration = Duration::from_secs(10);

fn options(id: NodeId) -> NodeOptions {
    let mut options = NodeOptions::new(id);
    options.tick = Duration::from_millis(2);
    options.snapshot_after_entries = 1000;
    options
}

struct Cluster {
    network: MemoryNetwork,
    nodes: BTreeMap<NodeId, Node<Journal>>,
    membership: Membership,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let membership = Membership::with_voters((1..=size).map(NodeId));
        let mut cluster = Cluster { network: MemoryNetwork::new(), nodes: BTreeMap::new(), membership };
        for id in 1..=size {
            let store = MemLogStore::new(cluster.membership.clone());
            cluster.start(NodeId(id), options(NodeId(id)), store);
        }
        cluster
    }

    fn start(&mut self, id: NodeId, options: NodeOptions, store: impl LogStore) {
        let (inbox, receiver) = tokio::sync::mpsc::channel(4096);
        let transport = self.network.join(id, inbox);
        let node = Node::start_with(options, Journal::default(), store, transport, receiver).expect("start");
        self.nodes.insert(id, node);
    }

    fn node(&self, id: u64) -> &Node<Journal> {
        &self.nodes[&NodeId(id)]
    }

    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            for node in self.nodes.values() {
                let status = node.status().await.expect("status");
                if status.role == skiff_raft::RoleName::Leader {
                    return status.id;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader within {TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn lines(&self, id: NodeId) -> Vec<String> {
        self.nodes[&id].read(|journal| journal.lines.clone()).await.expect("read")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_elects_replicates_and_forwards_from_followers() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).expect("a follower");
    assert_eq!(cluster.nodes[&leader].propose(Command::Push("a".into())).await.expect("propose"), 1);
    assert_eq!(cluster.nodes[&follower].propose(Command::Push("b".into())).await.expect("forwarded"), 2);
    // A linearizable read on any node sees both writes, even on the node that did neither.
    for &id in cluster.nodes.keys() {
        assert_eq!(cluster.lines(id).await, ["a", "b"], "node {id}");
    }
    let status = cluster.nodes[&leader].status().await.expect("status");
    assert_eq!(status.leader, Some(leader));
    assert!(status.peers.iter().all(|peer| peer.match_index == Some(status.last_log_id.index)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_elects_another_and_keeps_every_acknowledged_write() {
    let cluster = Cluster::new(3);
    let old_leader = cluster.leader().await;
    for i in 0..10 {
        cluster.nodes[&old_leader].propose(Command::Push(format!("x{i}"))).await.expect("propose");
    }
    cluster.network.isolate(old_leader);
    let survivor = *cluster.nodes.keys().find(|&&id| id != old_leader).expect("survivor");
    // A request forwarded to the lost leader would have an unknown outcome: wait until the
    // survivors have elected another one.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while cluster.nodes[&survivor].leader().leader.is_none_or(|leader| leader == old_leader) {
        assert!(tokio::time::Instant::now() < deadline, "no new leader within {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let count = cluster.nodes[&survivor].propose(Command::Push("after".into())).await.expect("propose after loss");
    assert_eq!(count, 11, "all ten acknowledged writes survive the leader's loss");
    cluster.network.heal();
    // The old leader rejoins as a follower and catches up.
    let lines = cluster.lines(old_leader).await;
    assert_eq!(lines.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_by_snapshot() {
    let membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let mut cluster = Cluster { network: MemoryNetwork::new(), nodes: BTreeMap::new(), membership };
    for id in 1..=3 {
        let mut options = options(NodeId(id));
        options.snapshot_after_entries = 20;
        cluster.start(NodeId(id), options, MemLogStore::new(cluster.membership.clone()));
    }
    let leader = cluster.leader().await;
    let lagging = *cluster.nodes.keys().find(|&&id| id != leader).expect("follower");
    cluster.network.isolate(lagging);
    for i in 0..100 {
        cluster.nodes[&leader].propose(Command::Push(format!("e{i}"))).await.expect("propose");
    }
    let leader_status = cluster.nodes[&leader].status().await.expect("status");
    assert!(leader_status.snapshot_index > Index(20), "the leader compacted its log");
    cluster.network.heal();
    let lines = cluster.lines(lagging).await;
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[99], "e99");
    let status = cluster.nodes[&lagging].status().await.expect("status");
    assert!(status.snapshot_index > Index(0), "the follower installed a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_recovers_its_data_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let open = |id: u64| {
        let options = DiskOptions::new(NodeId(id), "test", membership.clone());
        DiskStorage::open(dir.path().join(format!("n{id}")), options).expect("open")
    };
    let mut cluster = Cluster { network: MemoryNetwork::new(), nodes: BTreeMap::new(), membership: membership.clone() };
    for id in 1..=3 {
        cluster.start(NodeId(id), options(NodeId(id)), open(id));
    }
    cluster.leader().await;
    for i in 0..5 {
        cluster.node(1).propose(Command::Push(format!("d{i}"))).await.expect("propose");
    }
    for node in cluster.nodes.values() {
        node.shutdown().await.expect("shutdown");
    }
    drop(cluster);
    let mut cluster = Cluster { network: MemoryNetwork::new(), nodes: BTreeMap::new(), membership: membership.clone() };
    for id in 1..=3 {
        cluster.start(NodeId(id), options(NodeId(id)), open(id));
    }
    assert_eq!(cluster.lines(NodeId(2)).await, ["d0", "d1", "d2", "d3", "d4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_the_leader_hands_leadership_over() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    cluster.nodes[&leader].propose(Command::Push("before".into())).await.expect("propose");
    let started = std::time::Instant::now();
    cluster.nodes[&leader].shutdown().await.expect("shutdown");
    let other = *cluster.nodes.keys().find(|&&id| id != leader).expect("other");
    let count = cluster.nodes[&other].propose(Command::Push("after".into())).await.expect("propose");
    assert_eq!(count, 2);
    let new_leader = cluster.nodes[&other].leader().leader.expect("a leader");
    assert_ne!(new_leader, leader);
    // With a transfer, the cluster need not wait for an election timeout (60-120 ms here).
    assert!(started.elapsed() < TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_join_catch_up_and_are_promoted() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    cluster.nodes[&leader].propose(Command::Push("early".into())).await.expect("propose");
    cluster.start(NodeId(4), options(NodeId(4)), MemLogStore::new(Membership::default()));
    cluster.node(1).add_learner(NodeId(4)).await.expect("add learner");
    cluster.node(2).promote(NodeId(4)).await.expect("promote");
    let status = cluster.nodes[&leader].status().await.expect("status");
    assert!(status.membership.is_voter(NodeId(4)));
    assert_eq!(cluster.lines(NodeId(4)).await, ["early"]);
}

/// A state machine whose `apply` takes longer than an election timeout.
#[derive(Default)]
struct Slow {
    applied: u64,
}

impl StateMachine for Slow {
    type Command = ();
    type Output = u64;

    fn apply(&mut self, _index: Index, _command: ()) -> u64 {
        std::thread::sleep(Duration::from_millis(150));
        self.applied += 1;
        self.applied
    }

    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.applied.to_le_bytes())
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = [0; 8];
        snapshot.read_exact(&mut bytes)?;
        self.applied = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Applying runs beside the driver: an `apply` slower than the election timeout (60-120
/// ms here) does not stop heartbeats, so the leader keeps its leadership throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_state_machine_does_not_cost_the_leader_its_leadership() {
    let network = MemoryNetwork::new();
    let membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let (inbox, receiver) = tokio::sync::mpsc::channel(4096);
        let transport = network.join(NodeId(id), inbox);
        let store = MemLogStore::new(membership.clone());
        nodes.push(Node::start_with(options(NodeId(id)), Slow::default(), store, transport, receiver).expect("start"));
    }
    let leader = nodes[0].wait_for_leader(TIMEOUT).await.expect("leader");
    let leader = nodes.iter().find(|node| node.id() == leader).expect("leader node");
    leader.propose(()).await.expect("first proposal");
    let term = leader.leader().term;
    for expected in 2..=6 {
        assert_eq!(leader.propose(()).await.expect("propose"), expected);
    }
    let after = leader.leader();
    assert_eq!((after.term, after.leader), (term, Some(leader.id())), "leadership held through ~750 ms of applying");
}
