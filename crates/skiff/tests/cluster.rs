//! Clusters of nodes in one process, over the in-process transport: election, replication,
//! forwarding, linearizable reads from followers, leader loss, restart from disk, catching
//! up by snapshot, and shutdown with leadership transfer.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use skiff::{Index, MemLogStore, Membership, NodeId, StateMachine};
use skiff_storage::{DiskOptions, DiskStorage};
use skiff_testkit::node::{Command, Journal, JournalCluster, MemoryCluster, fast_options};

type Cluster = MemoryCluster<Journal>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_elects_replicates_and_forwards_from_followers() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    let follower = cluster.others(leader)[0];
    assert_eq!(cluster.node(leader).propose(Command::Push("a".into())).await.expect("propose"), 1);
    assert_eq!(cluster.node(follower).propose(Command::Push("b".into())).await.expect("forwarded"), 2);
    // A linearizable read on any node sees both writes, even on the node that did neither.
    for id in cluster.ids() {
        assert_eq!(cluster.lines(id).await, ["a", "b"], "node {id}");
    }
    let status = cluster.node(leader).status().await.expect("status");
    assert_eq!(status.leader, Some(leader));
    assert!(status.peers.iter().all(|peer| peer.match_index == Some(status.last_log_id.index)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_elects_another_and_keeps_every_acknowledged_write() {
    let cluster = Cluster::new(3);
    let old_leader = cluster.leader().await;
    for i in 0..10 {
        cluster.node(old_leader).propose(Command::Push(format!("x{i}"))).await.expect("propose");
    }
    cluster.network.isolate(old_leader);
    let survivors = cluster.others(old_leader);
    // A request forwarded to the lost leader would have an unknown outcome: wait until the
    // survivors have elected another one.
    cluster.leader_among(&survivors).await;
    let count = cluster.node(survivors[0]).propose(Command::Push("after".into())).await.expect("propose after loss");
    assert_eq!(count, 11, "all ten acknowledged writes survive the leader's loss");
    cluster.network.heal();
    // The old leader rejoins as a follower and catches up.
    let lines = cluster.lines(old_leader).await;
    assert_eq!(lines.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_by_snapshot() {
    let cluster = Cluster::with_options(3, |id| {
        let mut options = fast_options(id);
        options.snapshot_after_entries = 20;
        options
    });
    let leader = cluster.leader().await;
    let lagging = cluster.others(leader)[0];
    cluster.network.isolate(lagging);
    for i in 0..100 {
        cluster.node(leader).propose(Command::Push(format!("e{i}"))).await.expect("propose");
    }
    let leader_status = cluster.node(leader).status().await.expect("status");
    assert!(leader_status.snapshot_index > Index(20), "the leader compacted its log");
    cluster.network.heal();
    let lines = cluster.lines(lagging).await;
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[99], "e99");
    let status = cluster.node(lagging).status().await.expect("status");
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
    let mut cluster = Cluster::empty(3);
    for id in 1..=3 {
        cluster.start(fast_options(NodeId(id)), Journal::default(), open(id));
    }
    cluster.leader().await;
    for i in 0..5 {
        cluster.node(NodeId(1)).propose(Command::Push(format!("d{i}"))).await.expect("propose");
    }
    cluster.shutdown().await;
    let mut cluster = Cluster::empty(3);
    for id in 1..=3 {
        cluster.start(fast_options(NodeId(id)), Journal::default(), open(id));
    }
    assert_eq!(cluster.lines(NodeId(2)).await, ["d0", "d1", "d2", "d3", "d4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_the_leader_hands_leadership_over() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    cluster.node(leader).propose(Command::Push("before".into())).await.expect("propose");
    let started = std::time::Instant::now();
    cluster.node(leader).shutdown().await.expect("shutdown");
    let other = cluster.others(leader)[0];
    let count = cluster.node(other).propose(Command::Push("after".into())).await.expect("propose");
    assert_eq!(count, 2);
    let new_leader = cluster.node(other).leader().leader.expect("a leader");
    assert_ne!(new_leader, leader);
    // With a transfer, the cluster need not wait for an election timeout (60-120 ms here).
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_join_catch_up_and_are_promoted() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    cluster.node(leader).propose(Command::Push("early".into())).await.expect("propose");
    cluster.start(fast_options(NodeId(4)), Journal::default(), MemLogStore::new(Membership::default()));
    cluster.node(NodeId(1)).add_learner(NodeId(4), None).await.expect("add learner");
    cluster.node(NodeId(2)).promote(NodeId(4)).await.expect("promote");
    let status = cluster.node(leader).status().await.expect("status");
    assert!(status.membership.is_voter(NodeId(4)));
    assert_eq!(cluster.lines(NodeId(4)).await, ["early"]);
}

/// A state machine that counts the commands it applied, each after `before_apply` (a
/// sleep, a gate) returns.
struct Counting {
    before_apply: Box<dyn Fn() + Send>,
    applied: u64,
}

impl Counting {
    /// An `apply` that takes longer than an election timeout.
    fn slow() -> Counting {
        Counting { before_apply: Box::new(|| std::thread::sleep(Duration::from_millis(150))), applied: 0 }
    }

    /// An `apply` that blocks while `gate` holds `false`.
    fn gated(gate: Arc<(Mutex<bool>, Condvar)>) -> Counting {
        let wait = move || {
            let (open, changed) = &*gate;
            let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
            while !*open {
                open = changed.wait(open).unwrap_or_else(PoisonError::into_inner);
            }
        };
        Counting { before_apply: Box::new(wait), applied: 0 }
    }
}

impl StateMachine for Counting {
    type Command = ();
    type Output = u64;

    fn apply(&mut self, _index: Index, _command: ()) -> u64 {
        (self.before_apply)();
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

/// A state machine that panics stops its node with the panic's message (it is not left
/// leading with nothing applied); its proposer hears that the node stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_that_panics_stops_its_node() {
    let mut cluster = MemoryCluster::<Counting>::empty(1);
    let store = MemLogStore::new(cluster.membership.clone());
    let boom = || panic!("the state machine gave up");
    cluster.start(fast_options(NodeId(1)), Counting { before_apply: Box::new(boom), applied: 0 }, store);
    let node = cluster.node(cluster.leader().await);
    let proposed = node.propose(()).await;
    assert!(proposed.is_err(), "{proposed:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(10), node.stopped()).await.expect("the node stops");
    let skiff::Error::Stopped { cause: Some(cause) } = &stopped else { panic!("stopped without a cause: {stopped:?}") };
    assert!(
        matches!(&**cause, skiff::Error::StateMachinePanicked(message) if message.contains("gave up")),
        "{stopped:?}"
    );
    assert!(stopped.to_string().contains("the state machine panicked: the state machine gave up"), "{stopped}");
}

/// Applying runs beside the driver: an `apply` slower than the election timeout (60-120
/// ms here) does not stop heartbeats, so the leader keeps its leadership throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_state_machine_does_not_cost_the_leader_its_leadership() {
    let mut cluster = MemoryCluster::<Counting>::empty(3);
    for id in 1..=3 {
        let store = MemLogStore::new(cluster.membership.clone());
        cluster.start(fast_options(NodeId(id)), Counting::slow(), store);
    }
    let leader = cluster.node(cluster.leader().await);
    leader.propose(()).await.expect("first proposal");
    let term = leader.leader().term;
    for expected in 2..=6 {
        assert_eq!(leader.propose(()).await.expect("propose"), expected);
    }
    let after = leader.leader();
    assert_eq!((after.term, after.leader), (term, Some(leader.id())), "leadership held through ~750 ms of applying");
}

/// The driver never waits for the apply thread. With every state machine stuck, hundreds
/// of writes and reads pile up: the leader keeps its term and its followers, status still
/// answers, the log still commits, reads past the queue's limit are refused at once as
/// `Overloaded` (a retry-later error), the committed entries past the apply backlog wait in
/// the log, and once the state machines move again every write is applied, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_state_machine_stops_neither_heartbeats_nor_commits() {
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let mut cluster = MemoryCluster::<Counting>::empty(3);
    for id in 1..=3 {
        let mut options = fast_options(NodeId(id));
        options.max_queued_reads = 100;
        // A few entries' worth: the driver pauses handing them out almost at once, and must
        // resume when the apply thread catches up.
        options.max_apply_backlog_bytes = 256;
        let store = MemLogStore::new(cluster.membership.clone());
        cluster.start(options, Counting::gated(Arc::clone(&gate)), store);
    }
    let leader = cluster.node(cluster.leader().await).clone();
    assert_eq!(leader.propose(()).await.expect("first write"), 1);
    let before = leader.status().await.expect("status");
    *gate.0.lock().expect("gate") = false;

    // Writes one at a time into separate batches, each a task for the stuck apply thread
    // (more than the 64 the driver once blocked at), and reads beyond the limit.
    let mut writes = Vec::new();
    for _ in 0..200 {
        let node = leader.clone();
        writes.push(tokio::spawn(async move { node.propose(()).await }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reads: Vec<_> = (0..150)
        .map(|_| {
            let node = leader.clone();
            tokio::spawn(async move { node.read_stale(|machine: &Counting| machine.applied).await })
        })
        .collect();
    // 150 reads against a limit of 100: the first 100 wait, the others are refused now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answered, waiting): (Vec<_>, Vec<_>) = reads.into_iter().partition(|read| read.is_finished());
    assert_eq!((answered.len(), waiting.len()), (50, 100), "100 reads wait, the others were answered");
    for read in answered {
        let refused = read.await.expect("join");
        assert!(matches!(refused, Err(skiff::Error::Overloaded { waiting: 100 })), "{refused:?}");
    }

    // Several election timeouts (60-120 ms) later, still the same leader, and it answers.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = leader.status().await.expect("status answers while applying is stuck");
    assert_eq!((status.term, status.leader), (before.term, Some(leader.id())), "leadership held");
    let all_written = Index(before.last_log_id.index.0 + 200);
    assert!(status.commit >= all_written, "writes still commit: commit {}, {all_written} written", status.commit);
    assert_eq!(status.applied, before.applied, "and nothing more is applied");

    {
        let (open, changed) = &*gate;
        *open.lock().expect("gate") = true;
        changed.notify_all();
    }
    let mut outputs = Vec::new();
    for write in writes {
        outputs.push(write.await.expect("join").expect("write"));
    }
    assert_eq!(outputs, (2..=201).collect::<Vec<u64>>(), "every write applied once, in order");
    for read in waiting {
        assert!(read.await.expect("join").expect("a waiting read is served") >= 1);
    }
}

/// Removing the leader, asked through a follower: the leader commits its own removal and
/// steps down (thesis §4.2.2), the others elect a new leader, often before the old one's
/// answer reaches the follower. The caller still hears that the removal took effect (the
/// follower settles the unknown outcome by reading the applied membership), not "the
/// outcome is unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_through_a_follower_succeeds() {
    for _ in 0..3 {
        let cluster = Cluster::new(3);
        let leader = cluster.leader().await;
        let follower = cluster.others(leader)[0];
        cluster.node(follower).remove(leader).await.expect("the leader's removal succeeds");
        let status = cluster.node(follower).status().await.expect("status");
        assert!(!status.membership.contains(leader), "{leader} is still in {:?}", status.membership);
        // The other two elect a leader among themselves and take writes.
        let mut known = cluster.node(follower).watch_leader();
        let wait = known.wait_for(|info| info.leader.is_some_and(|new| new != leader));
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a new leader in time")
            .expect("the node runs");
        let after = cluster.node(follower).propose(Command::Push("after".into())).await.expect("the others go on");
        assert_eq!(after, 1);
    }
}

type Proposal = tokio::task::JoinHandle<skiff::Result<usize>>;

/// Cuts `leader` off from the others and proposes a write there, which the leader appends
/// and cannot commit; returns a way to propose more there, and that write.
async fn cut_off_with_a_write_in_flight(cluster: &Cluster, leader: NodeId) -> (impl Fn(String) -> Proposal, Proposal) {
    cluster.network.isolate(leader);
    let node = Arc::clone(cluster.node(leader));
    let propose = move |line: String| {
        let node = Arc::clone(&node);
        tokio::spawn(async move { node.propose(Command::Push(line)).await })
    };
    let in_flight = propose("in flight".into());
    let node = Arc::clone(cluster.node(leader));
    skiff_testkit::wait::eventually_ok_async("the write in the leader's log, uncommitted", async || {
        let status = node.status().await.map_err(|error| error.to_string())?;
        (status.last_log_id.index > status.commit).then_some(()).ok_or(format!("{status:?}"))
    })
    .await;
    (propose, in_flight)
}

/// Writes that reach a leader while its last batch is uncommitted wait for it, then go
/// into the log together (the disk paces the batches). Here the leader is cut off with one
/// write in flight and more held behind it, and loses its leadership: the held writes were
/// never in its log, so they are retried with the new leader and each is applied exactly
/// once; the one in flight is applied at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_held_behind_a_batch_in_flight_survive_a_leader_change() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader().await;
    cluster.node(leader).propose(Command::Push("before".into())).await.expect("first write");
    let (propose, in_flight) = cut_off_with_a_write_in_flight(&cluster, leader).await;
    let held: Vec<_> = (0..5).map(|i| propose(format!("held {i}"))).collect();
    cluster.leader_among(&cluster.others(leader)).await;
    cluster.network.heal();
    for write in held {
        write.await.expect("join").expect("a held write is applied under the new leader");
    }
    let in_flight = in_flight.await.expect("join");
    assert!(matches!(in_flight, Ok(_) | Err(skiff::Error::OutcomeUnknown)), "{in_flight:?}");
    for id in cluster.ids() {
        let lines = cluster.lines(id).await;
        for i in 0..5 {
            let held = format!("held {i}");
            assert_eq!(lines.iter().filter(|line| **line == held).count(), 1, "node {id}: {lines:?}");
        }
        assert!(lines.iter().filter(|line| *line == "in flight").count() <= 1, "node {id}: {lines:?}");
    }
}

/// A leader that stops with writes held behind its batch in flight tells their callers the
/// node stopped, which means not applied (they never reached the log); the write in flight
/// may still commit under the next leader, so its outcome is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_tells_its_held_writes_they_were_not_applied() {
    // Election timeouts of 1-2 s: the cut-off leader is still leading when it stops.
    let cluster = Cluster::with_options(3, |id| {
        let mut options = fast_options(id);
        options.raft.election_timeout_ticks = 500;
        options
    });
    let leader = cluster.leader().await;
    let (propose, in_flight) = cut_off_with_a_write_in_flight(&cluster, leader).await;
    let held: Vec<_> = (0..3).map(|i| propose(format!("held {i}"))).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    cluster.node(leader).stop_now().await;
    for write in held {
        let outcome = write.await.expect("join");
        assert!(matches!(outcome, Err(skiff::Error::Stopped { .. })), "{outcome:?}");
    }
    let in_flight = in_flight.await.expect("join");
    assert!(matches!(in_flight, Err(skiff::Error::OutcomeUnknown)), "{in_flight:?}");
}
