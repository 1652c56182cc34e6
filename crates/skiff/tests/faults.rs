//! Faults inside one node: a driver stalled in a slow fsync must not serve a stale lease
//! read when it wakes, and a panic in the user's state machine must stop the node.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use skiff::{Index, LogStore, MemLogStore, NodeId, NodeOptions};
use skiff_raft::{Entry, HardState, SnapshotMeta, Storage, StorageError, Term};
use skiff_testkit::node::{Command, Journal, MemoryCluster};

/// A MemLogStore whose next `sync` sleeps `stall_ms` (a slow fsync, or a paused process).
struct StallStore {
    inner: MemLogStore,
    stall_ms: Arc<AtomicU64>,
}

impl Storage for StallStore {
    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.inner.snapshot_meta()
    }
    fn first_index(&self) -> Index {
        self.inner.first_index()
    }
    fn last_index(&self) -> Index {
        self.inner.last_index()
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.inner.term(index)
    }
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(low, high, max_bytes)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.inner.append(entries)
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.inner.set_hard_state(hard_state)
    }
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.inner.install_snapshot(meta)
    }
    fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.inner.compact(meta)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        let ms = self.stall_ms.swap(0, Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        self.inner.sync()
    }
}

impl LogStore for StallStore {
    fn snapshot_target(&self) -> Arc<dyn skiff::SnapshotTarget> {
        self.inner.snapshot_target()
    }
    fn open_snapshot(&self) -> Result<Option<skiff::store::StoredSnapshot>, skiff::StorageFailure> {
        self.inner.open_snapshot()
    }
}

/// With lease reads, a leader whose driver thread stalled (slow fsync, SIGSTOP, VM pause)
/// longer than an election timeout must not serve a read from its lease before its clock
/// caught up: meanwhile another leader may have committed writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_read_after_a_driver_stall_is_not_stale() {
    let mut cluster = MemoryCluster::empty(3);
    let mut stalls = BTreeMap::new();
    for id in (1..=3).map(NodeId) {
        let mut options = NodeOptions::new(id);
        options.tick = Duration::from_millis(10);
        options.raft.lease_reads = true;
        options.request_timeout = Duration::from_secs(4);
        let stall = Arc::new(AtomicU64::new(0));
        let store = StallStore { inner: MemLogStore::new(cluster.membership.clone()), stall_ms: Arc::clone(&stall) };
        cluster.start(options, Journal::default(), store);
        stalls.insert(id, stall);
    }
    let old = cluster.leader().await;
    cluster.node(old).propose(Command::Push("a".into())).await.expect("a");
    tokio::time::sleep(Duration::from_millis(200)).await; // heartbeats acked: lease is fresh

    // The old leader's next fsync takes 3 s; it is cut off meanwhile.
    stalls[&old].store(3000, Ordering::SeqCst);
    cluster.network.isolate(old);
    let stalled = Arc::clone(cluster.node(old));
    let _write = tokio::spawn(async move { stalled.propose(Command::Push("lost".into())).await });
    tokio::time::sleep(Duration::from_millis(50)).await; // the driver is inside sync() now
    let reader = Arc::clone(cluster.node(old));
    let read = tokio::spawn(async move { reader.read(|journal| journal.lines.clone()).await });

    // The others elect a new leader and commit "b" while the old one is stalled.
    let new = cluster.leader_among(&cluster.others(old)).await;
    cluster.node(new).propose(Command::Push("b".into())).await.expect("b");

    let result = read.await.expect("join");
    if let Ok(lines) = result {
        assert!(lines.contains(&"b".to_string()), "linearizable read missed the committed write b: {lines:?}");
    }
}

/// A state machine that panics on one command (a bug in user code, an assertion).
#[derive(Default)]
struct Fragile {
    lines: Vec<String>,
}

impl skiff::StateMachine for Fragile {
    type Command = Command;
    type Output = usize;
    fn apply(&mut self, _index: Index, command: Command) -> usize {
        let Command::Push(line) = command;
        assert_ne!(line, "boom", "state machine bug");
        self.lines.push(line);
        self.lines.len()
    }
    fn snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(self.lines.join("\n").as_bytes())
    }
    fn restore(&mut self, _snapshot: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// If the apply thread dies, the node must stop (or at least say so), not keep leading
/// while failing every request with "node is not running".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_apply_thread_stops_the_node() {
    let cluster = MemoryCluster::<Fragile>::new(1);
    let node = cluster.node(NodeId(1));
    node.wait_for_leader(Duration::from_secs(5)).await.expect("leader");
    assert_eq!(node.propose(Command::Push("a".into())).await.expect("a"), 1);
    let _ = node.propose(Command::Push("boom".into())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = node.propose(Command::Push("c".into())).await;
    let status = node.status().await;
    assert!(status.is_err(), "the node still runs (and leads) with a dead apply thread");
}
