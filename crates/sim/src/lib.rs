//! # skiff-sim: deterministic simulation of Skiff clusters
//!
//! Raft's guarantees are about what can never happen, and the ways to break them are rare
//! interleavings: a vote that arrives after a crash, a stale leader's heartbeat after a heal,
//! a snapshot that races a truncation. Unit tests and golden scripts show the paths someone
//! thought of; this crate searches for the others. It runs whole clusters of the real core
//! (`skiff-raft`) on a virtual clock, thousands of seeds at a time, and checks Raft's safety
//! properties after every single event.
//!
//! - **Clock.** An event queue ordered by `(virtual time, sequence number)`. Each node ticks
//!   at a fixed period from its own random phase.
//! - **Network.** Seeded (`ChaCha8Rng`): it drops, delays (so reorders), duplicates, and
//!   cuts links both ways or one way, then heals them. Some seeds make one kind of message
//!   slow (a `TimeoutNow`, acknowledgements, ...): targeted delays line up races that
//!   uniform faults almost never do. Messages to a node that is down are lost.
//!   `InstallSnapshot` carries the sender's snapshot file.
//! - **Faults.** Crashes (of any node, of the leader, of every node at once), restarts,
//!   partitions, one-way isolation of the leader, and process pauses (like SIGSTOP: the
//!   node keeps its memory and resumes believing what it believed; not in seeds with lease
//!   reads, whose safety assumes every clock keeps running, thesis §6.4.1).
//! - **Nodes.** Each runs a driver that follows the `Ready` contract exactly (persist, one
//!   sync, send, apply, answer reads, advance). Crashes lose all that was not synced, and
//!   can strike inside the handling of a `Ready`. A restart is `Raft::new` on the synced
//!   store, with the state machine restored from the node's snapshot file.
//! - **Workload.** Proposals with unique payloads, ReadIndex (and lease) reads, membership
//!   changes (spare nodes join as learners, get promoted, nodes get removed; at least three
//!   voters stay), leader transfers, and compactions that make lagging nodes need snapshots.
//!   Clients talk to any node that believes it leads, deposed or not, or to a random node.
//! - **Settings** vary per seed: pre-vote, check-quorum, lease reads, tiny flow-control
//!   limits, fault rates.
//! - **Checks** (see [`checker`]): Election Safety, Log Matching, Leader Completeness, State
//!   Machine Safety, commit monotonicity, linearizable reads, and every assertion of the core
//!   (a panic is caught and reported). At the end, a **liveness** phase stops the faults and
//!   requires a leader and a committed proposal within 50 election timeouts.
//!
//! Determinism is the point: no `HashMap` iteration, no wall clock, one seeded generator. A
//! failing seed prints its trace and a command that replays it exactly.
#![forbid(unsafe_code)]

pub mod checker;
mod driver;
mod faults;
pub mod knobs;
mod liveness;
pub mod network;
mod node;
mod panic_capture;
pub mod queue;
mod reads;
mod sim;
pub mod state_machine;
pub mod stats;
mod sweep;
pub mod trace;
mod workload;

pub use checker::Violation;
pub use sim::Sim;
pub use stats::Stats;
pub use sweep::{
    DEFAULT_STEPS, Failure, SeedReport, SimOptions, SweepOptions, SweepReport, TRACE_TAIL_LINES, run_seed, run_sweep,
};
pub use trace::TraceMode;
