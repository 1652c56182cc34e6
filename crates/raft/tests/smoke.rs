//! A small end-to-end check of the core: a three-node cluster on a perfect network elects a
//! leader, replicates and commits, and serves a read.

use std::collections::BTreeMap;

use bytes::Bytes;
use skiff_raft::testing::{self, Batch, ReadyHandler};
use skiff_raft::{
    Config, Entry, Envelope, Index, MemStorage, Membership, NodeId, Raft, ReadId, ReadState, Ready, RoleName,
    SnapshotMeta, Storage,
};

/// A perfect network and a state machine that keeps the commands; it checks that a Ready asks
/// for a sync exactly when it must.
struct SmokeHandler<'a> {
    inbox: &'a mut Vec<Envelope>,
    applied: &'a mut Vec<Bytes>,
    reads: &'a mut Vec<(NodeId, ReadId, Index)>,
    commit_only_readies: &'a mut usize,
}

impl ReadyHandler<MemStorage> for SmokeHandler<'_> {
    type Error = skiff_raft::Error;

    fn failed(&self, _what: &'static str, error: skiff_raft::Error) -> skiff_raft::Error {
        error
    }

    fn persisting(&mut self, raft: &Raft<MemStorage>, ready: &Ready) -> Result<(), skiff_raft::Error> {
        // What the durable state was before this Ready, to check `must_sync` by.
        let before = raft.storage().durable_hard_state();
        let needed = ready.snapshot.is_some()
            || !ready.entries.is_empty()
            || ready.hard_state.is_some_and(|new| (new.term, new.vote) != (before.term, before.vote));
        assert_eq!(ready.must_sync, needed, "{}: must_sync of {ready:?}", raft.id());
        *self.commit_only_readies += usize::from(ready.hard_state.is_some() && !needed);
        Ok(())
    }

    fn send(
        &mut self,
        _raft: &Raft<MemStorage>,
        messages: Vec<Envelope>,
        _batch: Batch,
    ) -> Result<(), skiff_raft::Error> {
        self.inbox.extend(messages);
        Ok(())
    }

    fn apply(
        &mut self,
        _raft: &Raft<MemStorage>,
        _snapshot: Option<SnapshotMeta>,
        committed: Vec<Entry>,
    ) -> Result<(), skiff_raft::Error> {
        for entry in committed {
            if let skiff_raft::Payload::Command(data) = entry.payload {
                self.applied.push(data);
            }
        }
        Ok(())
    }

    fn answer_reads(&mut self, raft: &Raft<MemStorage>, reads: Vec<ReadState>) -> Result<(), skiff_raft::Error> {
        for read in reads {
            self.reads.push((raft.id(), read.id, read.result.unwrap()));
        }
        Ok(())
    }
}

struct Cluster {
    nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    applied: BTreeMap<NodeId, Vec<Bytes>>,
    reads: Vec<(NodeId, ReadId, Index)>,
    /// Readies whose only change to persist was the commit index.
    commit_only_readies: usize,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let membership = Membership::with_voters(ids.clone());
        let nodes = ids
            .iter()
            .map(|&id| (id, Raft::new(Config::new(id), MemStorage::new(membership.clone())).unwrap()))
            .collect();
        Cluster { nodes, applied: BTreeMap::new(), reads: Vec::new(), commit_only_readies: 0 }
    }

    /// Runs every node's `Ready` and delivers every message until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut inbox: Vec<Envelope> = Vec::new();
            for (id, node) in &mut self.nodes {
                let mut handler = SmokeHandler {
                    inbox: &mut inbox,
                    applied: self.applied.entry(*id).or_default(),
                    reads: &mut self.reads,
                    commit_only_readies: &mut self.commit_only_readies,
                };
                testing::execute(node, &mut handler).unwrap();
            }
            if inbox.is_empty() {
                return;
            }
            for envelope in inbox {
                self.nodes.get_mut(&envelope.to).unwrap().step(envelope).unwrap();
            }
        }
    }

    fn tick_until_leader(&mut self) -> NodeId {
        for _ in 0..1000 {
            for node in self.nodes.values_mut() {
                node.tick().unwrap();
            }
            self.settle();
            if let Some((id, _)) = self.nodes.iter().find(|(_, n)| n.role() == RoleName::Leader) {
                return *id;
            }
        }
        panic!("no leader elected");
    }
}

#[test]
fn three_nodes_elect_replicate_commit_and_read() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.tick_until_leader();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    let first = node.propose(Bytes::from("a")).unwrap();
    let second = node.propose(Bytes::from("b")).unwrap();
    assert_eq!(second.log_id.index, first.log_id.index.next());
    cluster.settle();
    for (id, node) in &cluster.nodes {
        assert_eq!(node.commit_index(), second.log_id.index, "{id} commit");
        assert_eq!(cluster.applied[id], vec![Bytes::from("a"), Bytes::from("b")], "{id} applied");
    }
    // Followers learn the new commit in a Ready of its own, which needs no sync: the commit
    // index is volatile (Raft Figure 2).
    assert!(cluster.commit_only_readies > 0);
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    cluster.nodes.get_mut(&follower).unwrap().read_index(ReadId(7)).unwrap();
    cluster.nodes.get_mut(&leader).unwrap().read_index(ReadId(8)).unwrap();
    cluster.settle();
    assert_eq!(cluster.reads.len(), 2, "{:?}", cluster.reads);
    assert!(cluster.reads.iter().all(|(_, _, index)| *index == second.log_id.index));
}

/// Thesis §10.2.1: a leader whose term and vote are durable hands out its messages as
/// `leader_messages`, to be sent while its own entries are persisted; a node that just won
/// its election within this batch (term not yet durable) must wait like everyone else.
#[test]
fn a_durable_leaders_messages_may_leave_before_its_fsync() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.tick_until_leader();
    let node = cluster.nodes.get_mut(&leader).unwrap();
    node.propose(Bytes::from("x")).unwrap();
    let ready = node.ready().unwrap();
    assert_eq!(ready.entries.len(), 1, "the new entry is still to be persisted");
    assert_eq!(ready.leader_messages.len(), 2, "one AppendEntries per follower, sent at once");
    assert!(ready.messages.is_empty());
    let storage = node.storage_mut();
    storage.append(&ready.entries).unwrap();
    storage.sync().unwrap();
    node.advance().unwrap();

    let mut single = Raft::new(Config::new(NodeId(1)), MemStorage::new(Membership::with_voters([NodeId(1)]))).unwrap();
    single.campaign_now().unwrap();
    assert_eq!(single.role(), RoleName::Leader);
    let ready = single.ready().unwrap();
    assert!(ready.leader_messages.is_empty(), "term and vote not yet durable");
}

/// A driver whose state machine is behind pauses applying: commits go on (a quorum keeps
/// acknowledging, the leader keeps its followers), but no committed entry is handed out,
/// and `has_ready` does not spin on them; resumed, they come out in order.
#[test]
fn a_paused_node_commits_but_hands_out_nothing_to_apply() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.tick_until_leader();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let applied_before = cluster.applied.get(&follower).map_or(0, Vec::len);
    cluster.nodes.get_mut(&follower).unwrap().pause_applying(true);
    let proposal = cluster.nodes.get_mut(&leader).unwrap().propose(Bytes::from("later")).unwrap();
    cluster.settle();
    let node = &cluster.nodes[&follower];
    assert_eq!(node.commit_index(), proposal.log_id.index, "the paused node still learns the commit");
    assert!(!node.has_ready(), "nothing but the paused entries is left, and they wait");
    assert_eq!(cluster.applied.get(&follower).map_or(0, Vec::len), applied_before);
    assert_eq!(cluster.applied[&leader].last(), Some(&Bytes::from("later")), "the leader applied it");

    cluster.nodes.get_mut(&follower).unwrap().pause_applying(false);
    assert!(cluster.nodes[&follower].has_ready());
    cluster.settle();
    assert_eq!(cluster.applied[&follower], cluster.applied[&leader], "resumed: the same entries, in order");
}

#[test]
fn nodes_that_withhold_their_votes_elect_no_one_until_they_stop() {
    let mut cluster = Cluster::new(3);
    for id in [NodeId(2), NodeId(3)] {
        cluster.nodes.get_mut(&id).unwrap().withhold_votes(true);
    }
    // n1 campaigns (it may), but neither n2 nor n3 grants a vote or starts an election.
    for _ in 0..200 {
        for node in cluster.nodes.values_mut() {
            node.tick().unwrap();
        }
        cluster.settle();
    }
    assert!(cluster.nodes.values().all(|node| node.role() != RoleName::Leader), "nobody may win");
    assert!(cluster.nodes[&NodeId(2)].term() <= cluster.nodes[&NodeId(1)].term(), "n2 never campaigned past n1");
    assert_eq!(cluster.nodes[&NodeId(2)].status().vote, None, "n2 voted for no one");
    cluster.nodes.get_mut(&NodeId(2)).unwrap().withhold_votes(false);
    let leader = cluster.tick_until_leader();
    assert_ne!(leader, NodeId(3), "n3 still withholds: it cannot campaign");
}
