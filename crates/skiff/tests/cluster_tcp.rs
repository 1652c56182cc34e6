//! Clusters of nodes in one process over real TCP on loopback, each node with a
//! `DiskStorage` in a temporary directory (fsync on), started with `Node::start` from a
//! cluster file: election, replication, forwarding, linearizable reads from followers, a
//! leader crash and re-election, restart from disk with data intact, a follower far behind
//! catching up by snapshot, and shutdown with leadership transfer.
//!
//! A crash is a dropped `Node`: it stops at once, without a transfer, keeping only what it
//! synced. The ports come from the testkit, so the tests run in parallel.

use std::time::Instant;

use skiff_raft::{Payload, RoleName, Storage};
use skiff_storage::{DiskOptions, DiskStorage};
use skiff_testkit::init_logs;
use skiff_testkit::node::{Command, Journal, JournalCluster, TcpCluster, lines};
use skiff_testkit::wait::{eventually_async, eventually_ok_async};

type Cluster = TcpCluster<Journal>;

const CLUSTER_NAME: &str = "tcp-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_replicate_and_forward() {
    init_logs();
    let started = Instant::now();
    let cluster = Cluster::start(CLUSTER_NAME, 1000).await;
    let leader = cluster.leader().await;
    eprintln!("leader {leader} agreed on by all three {} ms after start", started.elapsed().as_millis());
    let followers = cluster.others(leader);

    // Replication: a write on the leader reaches every node's state machine.
    assert_eq!(cluster.push(leader, "a").await, 1);
    for id in cluster.ids() {
        cluster.wait_for_lines(id, &["a"], format!("{id} applies the write")).await;
    }
    // Forwarding: a follower's proposal is applied by the leader, and its output comes back.
    assert_eq!(cluster.push(followers[0], "b").await, 2);
    assert_eq!(cluster.push(followers[1], "c").await, 3);
    for id in cluster.ids() {
        assert_eq!(cluster.lines(id).await, ["a", "b", "c"], "{id}");
    }

    // The leader sees every follower match its log and connected over TCP.
    eventually_async("the followers match the leader's log", async || {
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
    let cluster = Cluster::start(CLUSTER_NAME, 1000).await;
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
    let mut cluster = Cluster::start(CLUSTER_NAME, 1000).await;
    let old_leader = cluster.leader().await;
    let old_term = cluster.node(old_leader).leader().term;
    for i in 0..10 {
        cluster.push(old_leader, format!("x{i}")).await;
    }
    cluster.crash(old_leader);

    // A request forwarded to the dead leader would have an unknown outcome: wait until a
    // survivor knows a new leader before proposing.
    let survivor = cluster.others(old_leader)[0];
    eventually_async("the survivors elect a new leader", async || {
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
    let store = eventually_ok_async("the crashed node releases its data directory", async || {
        DiskStorage::open(&dir, options.clone())
    })
    .await;
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
    let mut cluster = Cluster::start(CLUSTER_NAME, 20).await;
    let leader = cluster.leader().await;
    let lagging = cluster.others(leader)[0];
    assert_eq!(cluster.push(leader, "e0").await, 1);
    cluster.wait_for_lines(lagging, &["e0"], "the follower applies the first write").await;
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
    let mut cluster = Cluster::start(CLUSTER_NAME, 1000).await;
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
    cluster.forget(leader);
    let new_leader = cluster.leader().await;
    eprintln!("shutdown of {leader} took {} ms; {new_leader} took over", took.as_millis());
    assert_ne!(new_leader, leader);
    assert!(cluster.node(new_leader).leader().term >= last_known.term);
    let other = cluster.others(new_leader)[0];
    assert_eq!(cluster.push(other, "after").await, 2);
    assert_eq!(cluster.lines(other).await, ["before", "after"]);
}
