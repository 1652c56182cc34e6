//! # skiff: embeddable Raft
//!
//! Skiff replicates your state machine on a cluster of nodes with Raft. Networking (TCP
//! between nodes), durable storage (an fsync'd write-ahead log with snapshots) and the
//! consensus core are included; any node accepts proposals and linearizable reads.
//!
//! You implement [`StateMachine`] (read its contract: `apply` must be deterministic),
//! describe the cluster in a file ([`config`]), and start a [`Node`] on each machine:
//!
//! ```
//! use std::io::{Read, Write};
//! use serde::{Deserialize, Serialize};
//! use skiff::{config::ClusterConfig, Index, Node, StateMachine};
//!
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add(i64);
//!
//! impl StateMachine for Counter {
//!     type Command = Add;
//!     type Output = i64;
//!     fn apply(&mut self, _index: Index, Add(n): Add) -> i64 {
//!         self.0 += n;
//!         self.0
//!     }
//!     fn snapshot(&self, out: &mut dyn Write) -> std::io::Result<()> {
//!         out.write_all(&self.0.to_le_bytes())
//!     }
//!     fn restore(&mut self, snapshot: &mut dyn Read) -> std::io::Result<()> {
//!         let mut bytes = [0; 8];
//!         snapshot.read_exact(&mut bytes)?;
//!         self.0 = i64::from_le_bytes(bytes);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = ClusterConfig::from_toml_str(r#"
//!     [cluster]
//!     name = "counters"
//!     [[node]]
//!     id = "n1"
//!     raft = "127.0.0.1:17301"
//!     [[node]]
//!     id = "n2"
//!     raft = "127.0.0.1:17302"
//!     [[node]]
//!     id = "n3"
//!     raft = "127.0.0.1:17303"
//! "#)?;
//! let data = tempfile::tempdir()?; // each node has its own data directory
//!
//! // In a real deployment each node runs in its own process: here, all three in one.
//! let mut nodes = Vec::new();
//! for id in cluster.node_ids() {
//!     nodes.push(Node::start(&cluster, id, Counter::default(), data.path().join(id.to_string())).await?);
//! }
//! nodes[0].wait_for_leader(std::time::Duration::from_secs(10)).await?;
//! assert_eq!(nodes[0].propose(Add(2)).await?, 2); // from any node: followers forward
//! assert_eq!(nodes[1].propose(Add(3)).await?, 5);
//! assert_eq!(nodes[2].read(|counter| counter.0).await?, 5); // linearizable, on any node
//! for node in &nodes {
//!     node.shutdown().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## How it works
//! Each node runs a driver thread that owns the consensus core ([`skiff_raft::Raft`]) and
//! the store. It feeds the core ticks, peer messages and requests, and executes each
//! `Ready` as its contract says: send the leader's messages, persist and fsync, send the
//! rest, hand the committed entries to the apply thread, advance. The apply thread owns the
//! state machine: it applies in order, answers proposers, serves reads and takes
//! snapshots, so a slow `apply` never delays heartbeats.
//! Requests that arrive together share one `Ready`: one log append, one fsync, one
//! `AppendEntries` per follower (group commit).
//!
//! - **Proposals** ([`Node::propose`]) on the leader are answered when applied; on a
//!   follower they are forwarded to the leader, whose output comes back. While no leader
//!   is known the call retries until its timeout. [`Error::OutcomeUnknown`] means the leader
//!   changed while a forwarded proposal was in flight: it may or may not have been applied.
//! - **Reads** ([`Node::read`]) use ReadIndex (Raft thesis §6.4): the leader confirms its
//!   leadership with a heartbeat round, and the node (leader or follower) runs the query
//!   once it has applied up to the read index. [`Node::read_stale`] reads local state now.
//! - **Snapshots**: every `snapshot_after_entries` applied entries the state machine is
//!   snapshotted and the log compacted; a follower that is too far behind receives the
//!   snapshot in chunks over the peer transport, then the log after it.
//! - **Membership**: [`Node::add_learner`], [`Node::promote`], [`Node::remove`]; the nodes
//!   that may join are listed in the cluster file, which gives their addresses.
//! - **Status** ([`Node::status`]): role, term, commit, applied, and for each peer the
//!   leader's replication progress and the transport's view (connected, last contact,
//!   round-trip time): Skiff doubles as a failure detector.
//! - **Transports** ([`transport`]): TCP ([`transport::tcp`]) with a handshake that refuses
//!   other clusters and unknown nodes, and an in-process network ([`transport::memory`])
//!   for tests and for clusters inside one program.
//!
//! The leader sends its `AppendEntries` before its own fsync, so its write overlaps its
//! followers' (Raft thesis §10.2.1).
//!
//! Not yet: TLS.
#![forbid(unsafe_code)]

pub mod activity;
pub mod address;
mod apply;
pub mod bootstrap;
pub mod config;
mod driver;
mod error;
mod node;
mod pending;
mod snapshot_stream;
pub mod state_machine;
pub mod store;
pub mod tls;
pub mod transport;
pub mod wire;

pub use address::MemberAddress;
pub use bootstrap::BootstrapMode;
pub use error::{Error, ErrorKind, Result, StorageFailure};
pub use node::{
    LeaderInfo, LogPage, Node, NodeActivity, NodeOptions, NodeStatus, PeerView, SnapshotData, StartOptions,
};
pub use skiff_raft::Error as RaftError;
pub use skiff_raft::{
    Entry, Index, LogId, Membership, MembershipChange, NodeId, Payload, RoleName, SnapshotMeta, Term,
};
pub use state_machine::{ForwardedHook, StateMachine, run_forwarded_hook};
pub use store::{LogStore, MemLogStore, SnapshotSink, SnapshotTarget};

// The Rust blocks of the README and of the docs pages run as doctests of this crate, so
// what they show compiles (`cargo test -p skiff --doc`). Pages with `skiff_kv` blocks are
// included by `skiff-kv`.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/architecture.md")]
pub struct ArchitectureDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/operations.md")]
pub struct OperationsDoctests;

// The manuals hold no Rust today; included, an untagged block (which rustdoc would take for
// Rust) fails here instead of slipping through.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/bench.md")]
pub struct BenchDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/check.md")]
pub struct CheckDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/dashboard.md")]
pub struct DashboardDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/http-api.md")]
pub struct HttpApiDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/redis.md")]
pub struct RedisDoctests;
