//! Time on the log across leader changes: a key's TTL is decided by the replicated cluster
//! clock, so a new leader neither restarts it (etcd's lease TTLs without checkpoints) nor
//! shortens it, and the entry that deletes it is written by whichever node leads when it is
//! due (`crates/kv/src/state/coord.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff::NodeId;
use skiff::transport::faults::{Action, Direction, Fault};
use skiff_kv::state::{Expiry, When};
use skiff_kv::{Command, KvStore, Op, Output};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;

const KEY: &[u8] = b"session-of-worker-7";
const TTL: Duration = Duration::from_millis(4000);

/// Writes KEY with TTL through `id`, stamped with its reading of the cluster clock as the
/// servers stamp writes; returns the index of the write.
fn set_with_ttl(cluster: &KvCluster, id: NodeId) -> u64 {
    let server = cluster.server(id);
    let op = Op::SetWith {
        key: Bytes::from_static(KEY),
        value: Bytes::from_static(b"alive"),
        when: When::Always,
        get: false,
        expiry: Expiry::After(TTL.as_millis() as u64),
    };
    let command = Command { request: None, op: op.at(server.published().now_ms()) };
    match cluster.block_on(server.node().propose(command)) {
        Ok(Output::Set { written: true, .. }) => cluster.block_on(server.node().read(|store: &KvStore| store.index())),
        other => panic!("the write was not applied: {other:?}"),
    }
    .expect("a read of the applied index")
}

/// Cuts `id` off from every other node (a leader that stops hearing its cluster: the others
/// elect a new one after an election timeout).
fn isolate(cluster: &KvCluster, id: NodeId) {
    let peers: BTreeSet<NodeId> = cluster.others(id).into_iter().collect();
    let faults = cluster.server(id).node().faults().expect("fault injection is on");
    faults.add(Fault { action: Action::Drop, peers, direction: Direction::Both });
}

/// Whether `id` still shows KEY to reads, and whether its state holds a deletion of KEY after
/// the write at `written` (the expiry entry applied).
fn seen_and_expired(cluster: &KvCluster, id: NodeId, written: u64) -> (bool, bool) {
    let read = cluster
        .server(id)
        .node()
        .read_stale(move |store: &KvStore| (store.get(KEY).is_some(), store.deletion_index(KEY, false) > written));
    cluster.block_on(read).expect("a local read")
}

#[test]
fn a_ttl_is_neither_restarted_nor_shortened_by_two_leader_changes() {
    let file = ClusterFile::builder("expiry", 5).http().build();
    let cluster = KvCluster::start_with(file, true);
    let first = cluster.leader();
    let started = Instant::now();
    let written = set_with_ttl(&cluster, first);
    // Two leaders are cut off in turn, the second 1.5 s after the first: two real elections.
    isolate(&cluster, first);
    let others: Vec<NodeId> = cluster.others(first);
    let second = cluster.leader_among(&others);
    std::thread::sleep(Duration::from_millis(1500));
    isolate(&cluster, second);
    let survivors: Vec<NodeId> = others.iter().copied().filter(|&id| id != second).collect();
    let third = cluster.leader_among(&survivors);
    let third_elected = started.elapsed();
    assert!(third_elected < TTL - Duration::from_millis(500), "the elections took too long to test anything");
    // Not shortened: every survivor still shows the key until just before the deadline.
    let check_until = started + TTL - Duration::from_millis(150);
    while Instant::now() < check_until {
        for &id in &survivors {
            let (seen, _) = seen_and_expired(&cluster, id, written);
            assert!(seen, "{id} lost the key {:?} after it was written, before its TTL of {TTL:?}", started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Not restarted: it is gone from reads, and deleted by an entry of the third leader, by
    // the TTL plus an election timeout (its upper bound, 600 ms) plus a margin for a loaded
    // machine. The measure is from before the write, so the write's own time counts against us.
    let limit = TTL + Duration::from_millis(600) + Duration::from_millis(1000);
    // A TTL restarted by the third leader would last until `third_elected + TTL`: past the
    // limit, so the test tells the two apart.
    assert!(limit < third_elected + TTL, "the third leader came too soon ({third_elected:?}) to tell a restart");
    let gone_at = loop {
        let states: Vec<(bool, bool)> = survivors.iter().map(|&id| seen_and_expired(&cluster, id, written)).collect();
        if states.iter().all(|&(seen, expired)| !seen && expired) {
            break started.elapsed();
        }
        assert!(started.elapsed() < limit, "the key outlived its TTL by more than {limit:?}: {states:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("written through {first}, leaders {second} then {third}; gone everywhere after {gone_at:?}");
    for id in [first, second] {
        cluster.server(id).node().faults().expect("faults").clear();
    }
    cluster.shutdown();
}

/// A follower's reading of the cluster clock runs from the last stamp it applied, so one
/// that restarted reads it from the entries it replayed: on an idle cluster (no deadline,
/// so no clock entries) as far behind the leader as it was down. A TTL written through it
/// still counts from the leader's clock, because the leader stamps the writes followers
/// forward; before, this key's deadline was already past when it was written.
#[test]
fn a_ttl_written_through_a_follower_that_restarted_counts_from_the_leaders_clock() {
    const DOWN: Duration = Duration::from_millis(2500);
    let file = ClusterFile::builder("expiry-restart", 3).http().build();
    let mut cluster = KvCluster::start_with(file, false);
    let leader = cluster.leader();
    let follower = cluster.others(leader)[0];
    // A write without a deadline starts the clock; then nothing is stamped for a while.
    let plain = Op::Set {
        key: Bytes::from_static(b"started"),
        value: Bytes::from_static(b"1"),
        when: When::Always,
        get: false,
    };
    let now = cluster.server(leader).published().now_ms();
    cluster
        .block_on(cluster.server(leader).node().propose(Command { request: None, op: plain.at(now) }))
        .expect("a write");
    cluster.kill(follower);
    std::thread::sleep(DOWN);
    cluster.start_node(follower);
    assert_eq!(cluster.leader(), leader, "the leader stayed");
    let lag = |cluster: &KvCluster| {
        let ahead = cluster.server(leader).published().now_ms();
        ahead.saturating_sub(cluster.server(follower).published().now_ms())
    };
    let behind = lag(&cluster);
    assert!(behind >= 2000, "the restarted follower's clock should lag the leader's by its downtime: {behind} ms");
    let written = set_with_ttl(&cluster, follower);
    let leader_now = cluster.server(leader).published().now_ms();
    let read = cluster.server(leader).node().read_stale(|store: &KvStore| store.get(KEY).map(|entry| entry.expires));
    let deadline = cluster.block_on(read).expect("a local read").expect("the key is there after its write");
    let left = deadline.saturating_sub(leader_now);
    let ttl = TTL.as_millis() as u64;
    // Without the leader's stamp about 1.5 s would be left; the margin is for a slow machine.
    assert!(left + 1000 >= ttl, "written at {written} with a TTL of {ttl} ms, {left} ms left on the leader's clock");
    // Once the follower applied the write and its stamp, its clock caught up.
    let applied_by = Instant::now() + Duration::from_secs(5);
    while cluster.server(follower).published().applied() < written {
        assert!(Instant::now() < applied_by, "{follower} did not apply entry {written}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(lag(&cluster) < 500, "the follower's clock still lags by {} ms", lag(&cluster));
    cluster.shutdown();
}
