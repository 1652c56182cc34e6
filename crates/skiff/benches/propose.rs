//! A 3-node Skiff cluster in one process, over TCP on loopback, each node with a
//! `DiskStorage` (fsync on) in a temporary directory: the time from start to the first
//! leader, and proposals per second through `Node::propose` with 1 and 64 concurrent
//! proposers on the leader, and 64 spread over all three nodes (followers forward).
//!
//! ```sh
//! cargo bench -p skiff --bench propose
//! SKIFF_BENCH_SECS=2 cargo bench -p skiff --bench propose   # shorter runs
//! ```

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skiff::config::ClusterConfig;
use skiff::{Index, Node, NodeId, StateMachine};

/// A counter: the smallest useful state machine, so the numbers measure the runtime.
#[derive(Default)]
struct Counter {
    value: u64,
}

#[derive(Serialize, Deserialize)]
struct Add(u64);

impl StateMachine for Counter {
    type Command = Add;
    type Output = u64;

    fn apply(&mut self, _index: Index, Add(amount): Add) -> u64 {
        self.value += amount;
        self.value
    }

    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.value.to_le_bytes())
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = [0; 8];
        snapshot.read_exact(&mut bytes)?;
        self.value = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Three nodes on `127.0.0.1:{base+1..=base+3}` with the default Raft settings (10 ms
/// ticks, heartbeats every 50 ms, election timeouts of 300-600 ms).
fn cluster_file(base_port: u16) -> ClusterConfig {
    let mut text = String::from("[cluster]\nname = \"bench\"\n");
    for i in 1..=3 {
        text.push_str(&format!("\n[[node]]\nid = \"n{i}\"\nraft = \"127.0.0.1:{}\"\n", base_port + i));
    }
    ClusterConfig::from_toml_str(&text).expect("a valid cluster file")
}

type Cluster = Vec<Arc<Node<Counter>>>;

async fn start(config: &ClusterConfig, dir: &std::path::Path) -> Cluster {
    let mut nodes = Vec::new();
    for id in config.node_ids() {
        let node = Node::start(config, id, Counter::default(), dir.join(id.to_string())).await.expect("start");
        nodes.push(Arc::new(node));
    }
    nodes
}

async fn shutdown(nodes: Cluster) {
    for node in &nodes {
        node.shutdown().await.expect("shutdown");
    }
}

/// Waits until some node knows itself to be leader; returns it.
async fn first_leader(nodes: &Cluster) -> NodeId {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for node in nodes {
            if node.leader().leader == Some(node.id()) {
                return node.id();
            }
        }
        assert!(Instant::now() < deadline, "no leader within 10 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Run {
    label: String,
    proposals: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// `proposers` tasks, the i-th proposing through `nodes[on[i % on.len()]]`, each looping
/// for `duration`.
async fn measure(label: &str, nodes: &Cluster, on: &[usize], proposers: usize, duration: Duration) -> Run {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for i in 0..proposers {
        let node = Arc::clone(&nodes[on[i % on.len()]]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match node.propose(Add(1)).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut run =
        Run { label: label.to_string(), proposals: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for task in tasks {
        let (latencies, errors) = task.await.expect("proposer");
        run.proposals += latencies.len();
        run.errors += errors;
        run.latencies.extend(latencies);
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    run
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

fn main() {
    let seconds: u64 = std::env::var("SKIFF_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        // (a) Start to first leader, on fresh data directories and fresh ports each time.
        let mut elections = Vec::new();
        for round in 0..5u16 {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = cluster_file(19100 + round * 10);
            let started = Instant::now();
            let nodes = start(&config, dir.path()).await;
            first_leader(&nodes).await;
            elections.push(started.elapsed());
            shutdown(nodes).await;
        }
        elections.sort();

        // (b) Proposals through Node::propose.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = cluster_file(19200);
        let nodes = start(&config, dir.path()).await;
        let leader = first_leader(&nodes).await;
        let leader_position = nodes.iter().position(|node| node.id() == leader).expect("leader");
        // Warm up: connections, the leader's first entry committed everywhere.
        for _ in 0..100 {
            nodes[leader_position].propose(Add(0)).await.expect("warm-up");
        }
        let everyone: Vec<usize> = (0..nodes.len()).collect();
        let scenarios: [(&str, &[usize], usize); 3] = [
            ("1 proposer on the leader", &[leader_position], 1),
            ("64 proposers on the leader", &[leader_position], 64),
            ("64 proposers over all 3 nodes", &everyone, 64),
        ];
        let mut runs = Vec::new();
        for (label, on, proposers) in scenarios {
            runs.push(measure(label, &nodes, on, proposers, duration).await);
        }
        let still_leader = nodes[leader_position].leader().leader == Some(leader);
        shutdown(nodes).await;

        println!();
        println!("skiff propose benchmark: 3 nodes in one process, TCP on loopback, DiskStorage (fsync on)");
        println!();
        println!(
            "start to first leader (default settings: 10 ms ticks, election timeout 300-600 ms), 5 runs: \
             min {} ms, median {} ms, max {} ms",
            ms(elections[0]),
            ms(elections[2]),
            ms(elections[4])
        );
        println!();
        println!(
            "{:<32} {:>10} {:>12} {:>9} {:>9} {:>7}",
            "proposals (1-byte commands)", "committed", "proposals/s", "p50 ms", "p99 ms", "errors"
        );
        for run in &runs {
            let per_second = run.proposals as f64 / run.elapsed.as_secs_f64();
            println!(
                "{:<32} {:>10} {:>12.0} {:>9} {:>9} {:>7}",
                run.label,
                run.proposals,
                per_second,
                ms(percentile(&run.latencies, 0.50)),
                ms(percentile(&run.latencies, 0.99)),
                run.errors
            );
        }
        println!();
        println!("{seconds} s per row; leadership {}", if still_leader { "stable throughout" } else { "CHANGED" });
    });
}
