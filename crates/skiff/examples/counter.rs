//! A replicated counter, run as three processes from a cluster file. Each process adds
//! one to the counter every second and prints what it reads; stop one with Ctrl-C (a
//! leader hands leadership over first) and start it again: it picks up where it was.
//!
//! ```sh
//! cargo run -p skiff --example counter -- crates/skiff/examples/counter.toml n1 data/n1
//! cargo run -p skiff --example counter -- crates/skiff/examples/counter.toml n2 data/n2
//! cargo run -p skiff --example counter -- crates/skiff/examples/counter.toml n3 data/n3
//! ```

use std::io::{Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff::config::{ClusterConfig, parse_node_id};
use skiff::{Index, Node, StateMachine};

#[derive(Default)]
struct Counter(i64);

#[derive(Serialize, Deserialize)]
struct Add(i64);

impl StateMachine for Counter {
    type Command = Add;
    type Output = i64;

    fn apply(&mut self, _index: Index, Add(amount): Add) -> i64 {
        self.0 = self.0.saturating_add(amount);
        self.0
    }

    fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.0.to_le_bytes())
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = [0; 8];
        snapshot.read_exact(&mut bytes)?;
        self.0 = i64::from_le_bytes(bytes);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, id, data_dir] = args.as_slice() else {
        eprintln!("usage: counter <cluster.toml> <node id> <data dir>");
        std::process::exit(2);
    };
    let cluster = ClusterConfig::load(config)?;
    let id = parse_node_id(id)?;
    let node = Node::start(&cluster, id, Counter::default(), data_dir).await?;
    println!("{id}: started; waiting for a leader (start the other nodes too)");
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = every_second.tick() => match node.propose(Add(1)).await {
                Ok(value) => {
                    let leader = node.leader();
                    let leader = leader.leader.map_or("?".to_string(), |id| id.to_string());
                    println!("{id}: counter = {value} (leader {leader})");
                }
                Err(error) => println!("{id}: could not add: {error}"),
            },
        }
    }
    println!("{id}: shutting down");
    node.shutdown().await?;
    Ok(())
}
