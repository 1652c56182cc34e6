//! Three Skiff nodes in one program, talking over TCP on loopback, replicating a small
//! state machine: a leader emerges, node n1 proposes five entries, every node prints the
//! latest committed entry, then all shut down.
//!
//! ```sh
//! cargo run -p skiff --example embedded
//! ```

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skiff::config::ClusterConfig;
use skiff::{Index, Node, NodeId, StateMachine};

/// The replicated state: the latest entry and how many there were.
#[derive(Default)]
pub struct Latest {
    pub entry: Option<(Index, String)>,
    pub count: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Append(pub String);

impl StateMachine for Latest {
    type Command = Append;
    type Output = u64;

    fn apply(&mut self, index: Index, Append(text): Append) -> u64 {
        self.entry = Some((index, text));
        self.count += 1;
        self.count
    }

    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let text = self.entry.as_ref().map_or(String::new(), |(index, text)| format!("{}\n{text}", index.0));
        write!(out, "{}\n{text}", self.count)
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
        let mut text = String::new();
        snapshot.read_to_string(&mut text)?;
        let mut lines = text.splitn(3, '\n');
        self.count = lines.next().and_then(|count| count.parse().ok()).unwrap_or(0);
        let index = lines.next().and_then(|index| index.parse().ok());
        self.entry = index.map(|index| (Index(index), lines.next().unwrap_or_default().to_string()));
        Ok(())
    }
}

/// The cluster: three nodes on loopback (the same file format as `skiff serve` uses).
pub const CLUSTER: &str = r#"
[cluster]
name = "embedded"

[[node]]
id = "n1"
raft = "127.0.0.1:17101"

[[node]]
id = "n2"
raft = "127.0.0.1:17102"

[[node]]
id = "n3"
raft = "127.0.0.1:17103"
"#;

/// Runs the example on [`CLUSTER`]; returns what each node reports as its latest
/// committed entry.
pub async fn run(data_dir: &std::path::Path) -> Result<Vec<(NodeId, Option<(Index, String)>)>, skiff::Error> {
    let cluster = ClusterConfig::from_toml_str(CLUSTER).map_err(skiff::Error::from)?;
    run_cluster(&cluster, data_dir).await
}

/// Runs the example on `cluster` (n1 first), which a test gives free ports.
pub async fn run_cluster(
    cluster: &ClusterConfig,
    data_dir: &std::path::Path,
) -> Result<Vec<(NodeId, Option<(Index, String)>)>, skiff::Error> {
    let started = Instant::now();
    let mut nodes = Vec::new();
    for id in cluster.node_ids() {
        nodes.push(Node::start(cluster, id, Latest::default(), data_dir.join(id.to_string())).await?);
    }
    let leader = nodes[0].wait_for_leader(Duration::from_secs(10)).await?;
    println!("leader {leader} elected {} ms after start", started.elapsed().as_millis());

    for i in 1..=5 {
        let count = nodes[0].propose(Append(format!("entry {i} from n1"))).await?;
        println!("n1 proposed entry {i}: committed, {count} entries so far");
    }
    let mut latest = Vec::new();
    for node in &nodes {
        // A linearizable read: every node sees every write acknowledged before it.
        let entry = node.read(|state| state.entry.clone()).await?;
        match &entry {
            Some((index, text)) => println!("{}: latest committed entry is {index}: {text:?}", node.id()),
            None => println!("{}: nothing committed", node.id()),
        }
        latest.push((node.id(), entry));
    }
    for node in &nodes {
        node.shutdown().await?;
    }
    Ok(latest)
}

#[allow(dead_code)] // `main` is unused when a test includes this file
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = tempfile::tempdir()?;
    run(data_dir.path()).await?;
    Ok(())
}
