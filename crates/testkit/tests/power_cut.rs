//! Power cuts of a cluster: three nodes in one process, each on a `DiskStorage` whose
//! directory the `power_cut` shim records. While a client's writes are acknowledged, one
//! node (the leader), or every node at once, loses power: it restarts from the image a
//! power cut leaves (synced data only, unsynced writes dropped or torn, unsynced renames
//! lost). Every write acknowledged before the cut must be there, and the cluster must elect
//! a leader and serve again. A SIGKILL could not show a missing fsync: the page cache
//! survives it; a power cut does not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use skiff::{Membership, Node, NodeId};
use skiff_storage::power_cut::PowerCut;
use skiff_storage::{DiskOptions, DiskStorage};
use skiff_testkit::node::{Command, Journal, JournalCluster, MemoryCluster, fast_options};
use skiff_testkit::wait::eventually_async;

/// A cluster whose nodes keep their data in recorded directories.
struct Cut {
    cluster: MemoryCluster<Journal>,
    base: tempfile::TempDir,
    /// Each node's recorder and its incarnation (a new directory after each cut).
    shims: BTreeMap<NodeId, PowerCut>,
    generation: BTreeMap<NodeId, u32>,
}

fn disk_options(id: NodeId, membership: &Membership) -> DiskOptions {
    let mut options = DiskOptions::new(id, "power-cut", membership.clone());
    options.segment_bytes = 64 << 10; // several segments, and spares, in a short test
    options
}

fn node_options(id: NodeId) -> skiff::NodeOptions {
    let mut options = fast_options(id);
    options.snapshot_after_entries = 150; // snapshots written and compacted under the cut
    options
}

impl Cut {
    fn start() -> Cut {
        let mut cut = Cut {
            cluster: MemoryCluster::empty(3),
            base: tempfile::tempdir().expect("a temporary directory"),
            shims: BTreeMap::new(),
            generation: BTreeMap::new(),
        };
        for id in (1..=3).map(NodeId) {
            let root = cut.dir(id, 0);
            cut.shims.insert(id, PowerCut::record(&root));
            cut.generation.insert(id, 0);
            let store = DiskStorage::open(&root, disk_options(id, &cut.cluster.membership)).expect("create");
            cut.cluster.start(node_options(id), Journal::default(), store);
        }
        cut
    }

    fn dir(&self, id: NodeId, generation: u32) -> PathBuf {
        self.base.path().join(format!("{id}-{generation}"))
    }

    /// Writes the image of a power cut of node `id` now into its next directory.
    fn image(&mut self, id: NodeId, seed: u64) -> PathBuf {
        let generation = self.generation[&id] + 1;
        let target = self.dir(id, generation);
        let report = self.shims[&id].power_off(&target, seed).expect("write the image");
        eprintln!("{id}: power cut image {report:?}");
        assert_eq!(self.shims[&id].unknown_changes(), 0);
        self.generation.insert(id, generation);
        target
    }

    /// Restarts node `id` (crashed) from the image in `dir`, recorded for the next cut.
    fn restart(&mut self, id: NodeId, image: &Path) {
        self.shims.insert(id, PowerCut::record_existing(image).expect("record the image"));
        let store = DiskStorage::open(image, disk_options(id, &self.cluster.membership))
            .unwrap_or_else(|error| panic!("{id} does not recover from its power-cut image: {error}"));
        self.cluster.start(node_options(id), Journal::default(), store);
    }

    /// Cuts the power of `ids`, one after the other, while they run: each image is what
    /// its disk held at that moment, and from then on its syncs fail (so it acknowledges
    /// nothing it could not keep). Then they stop, and restart from the images.
    fn power_cut(&mut self, ids: &[NodeId], seed: u64) {
        let images: Vec<PathBuf> = ids.iter().map(|&id| self.image(id, seed + id.0)).collect();
        for &id in ids {
            self.cluster.crash(id);
        }
        for (&id, image) in ids.iter().zip(&images) {
            self.restart(id, image);
        }
    }
}

/// Clients writing `<prefix><client>-<n>` through one node, each write after the last one's
/// answer; the acknowledged ones, in order.
struct Writers {
    acked: Arc<Mutex<Vec<Vec<String>>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(node: &Arc<Node<Journal>>, prefix: &str, clients: usize) -> Writers {
        let acked = Arc::new(Mutex::new(vec![Vec::new(); clients]));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|client| {
                let (node, acked, stop) = (Arc::clone(node), Arc::clone(&acked), Arc::clone(&stop));
                let prefix = format!("{prefix}{client}-");
                tokio::spawn(async move {
                    for n in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let line = format!("{prefix}{n}");
                        if node.propose(Command::Push(line.clone())).await.is_ok() {
                            acked.lock().expect("the acks")[client].push(line);
                        }
                    }
                })
            })
            .collect();
        Writers { acked, stop, tasks }
    }

    fn acked(&self) -> Vec<Vec<String>> {
        self.acked.lock().expect("the acks").clone()
    }

    async fn wait_for(&self, count: usize) {
        eventually_async(format!("{count} acknowledged writes"), async || {
            self.acked().iter().map(Vec::len).sum::<usize>() >= count
        })
        .await;
    }

    async fn stop(self) -> Vec<Vec<String>> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        self.acked.lock().expect("the acks").clone()
    }
}

/// Checks that `lines` holds every acknowledged write, each client's in its order.
fn assert_all_there(lines: &[String], acked: &[Vec<String>], what: &str) {
    let position: BTreeMap<&str, usize> = lines.iter().enumerate().map(|(at, line)| (line.as_str(), at)).collect();
    for client in acked {
        let mut previous = None;
        for line in client {
            let at = *position
                .get(line.as_str())
                .unwrap_or_else(|| panic!("{what}: the acknowledged write {line} is lost ({} lines)", lines.len()));
            assert!(previous < Some(at), "{what}: {line} is out of its client's order");
            previous = Some(at);
        }
    }
}

/// After the cut: a leader, every acknowledged write on it and (once caught up) on every
/// node, and new writes served through a node that lost power.
async fn assert_recovered(cut: &Cut, acked: &[Vec<String>], through: NodeId, what: &str) {
    let leader = cut.cluster.leader().await;
    assert_all_there(&cut.cluster.lines(leader).await, acked, &format!("{what}, on the leader {leader}"));
    let after = cut.cluster.push(through, format!("after the cut, through {through}")).await;
    for id in cut.cluster.ids() {
        eventually_async(format!("{id} applies everything"), async || cut.cluster.stale_lines(id).await.len() >= after)
            .await;
        assert_all_there(&cut.cluster.stale_lines(id).await, acked, &format!("{what}, on {id}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut_of_the_leader() {
    skiff_testkit::init_logs();
    let mut cut = Cut::start();
    let mut acked_total = Vec::new();
    for round in 0..3u64 {
        let leader = cut.cluster.leader().await;
        let follower = cut.cluster.others(leader)[0];
        let writers = Writers::start(cut.cluster.node(follower), &format!("r{round}w"), 4);
        writers.wait_for(200).await;
        cut.power_cut(&[leader], 11 + round * 10);
        writers.wait_for(writers.acked().iter().map(Vec::len).sum::<usize>() + 50).await;
        let acked = writers.stop().await;
        eprintln!("round {round}: {} writes acknowledged", acked.iter().map(Vec::len).sum::<usize>());
        acked_total.extend(acked);
        let what = format!("after power cut {round} of the leader {leader}");
        assert_recovered(&cut, &acked_total, leader, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut_of_every_node_at_once() {
    skiff_testkit::init_logs();
    let mut cut = Cut::start();
    let mut acked_total = Vec::new();
    for round in 0..3u64 {
        let leader = cut.cluster.leader().await;
        let writers = Writers::start(cut.cluster.node(leader), &format!("r{round}w"), 4);
        writers.wait_for(200).await;
        // Writes in flight when the power goes: only those answered before are promised.
        let acked = writers.acked();
        let ids = cut.cluster.ids();
        cut.power_cut(&ids, 21 + round * 10);
        let _ = writers.stop().await;
        eprintln!("round {round}: {} writes acknowledged before the cut", acked.iter().map(Vec::len).sum::<usize>());
        acked_total.extend(acked);
        let what = format!("after power cut {round} of every node");
        assert_recovered(&cut, &acked_total, leader, &what).await;
    }
}
