//! # skiff-raft: the consensus core of Skiff
//!
//! Raft keeps a log replicated on a cluster of nodes so that every node applies the same
//! commands in the same order, as long as a majority of voters is up and can talk. It
//! promises (Raft §5.2-5.4, figure 3): at most one leader per term (*Election Safety*); a
//! leader never overwrites its log (*Leader Append-Only*); two logs holding an entry with the
//! same index and term are identical up to it (*Log Matching*); a committed entry is in the
//! log of every later leader (*Leader Completeness*); and no two nodes apply different
//! entries at one index (*State Machine Safety*).
//!
//! This crate is that algorithm and nothing else: a deterministic state machine with no
//! sockets, files, clocks, threads or OS randomness. [`Raft`] takes inputs
//! ([`Raft::tick`], [`Raft::step`], [`Raft::propose`], [`Raft::read_index`], ...) and hands
//! back one [`Ready`] batch of outputs: what to persist, what to send, what to apply. The
//! driver (Skiff's runtime, or the simulator) must act on a `Ready` in the order its doc
//! states. Because the core is deterministic, a seed replays a simulated failure exactly.
//!
//! ## Elections
//! A follower that hears nothing for its election timeout (drawn from `[E, 2E)` ticks by
//! a seeded PRNG, Raft §5.2) first runs a **pre-vote** (thesis §9.6): it asks whether the
//! others would vote for it, without raising anyone's term, so a node that was cut off
//! cannot force an election when it returns. With **check-quorum** (thesis §6.2, §4.2.3) a
//! leader that has not heard from a majority within an election timeout steps down, and a
//! follower that heard from a leader within the timeout ignores vote requests. A vote is
//! granted only to a candidate whose log is at least as up to date (Raft §5.4.1). A new
//! leader appends an empty entry of its term: entries of earlier terms commit only through
//! it (Raft §5.4.2, figure 8).
//!
//! ## Replication
//! The leader tracks each follower's `match` and `next` index ([`progress`]). It probes one
//! `AppendEntries` at a time until the logs agree, then pipelines batches up to
//! `max_inflight` messages and `max_inflight_bytes`. A follower that rejects returns a hint
//! (the last entry it has whose term is at most the leader's at that point), so the leader
//! skips whole terms instead of backing up one entry per round trip (Raft §5.3). Everything
//! proposed between two `Ready`s goes out as one batch: one fsync, one message per follower.
//! Heartbeats carry the commit index, capped at what each follower is known to hold.
//!
//! ## Commit and apply
//! The leader commits the highest index a majority of voters has made durable, but only
//! when that entry is of its own term (Raft §5.4.2). The leader's own entries count only
//! after the driver persisted them. Committed entries come out in `Ready::committed`, in
//! order, at most once.
//!
//! ## Reads
//! [`Raft::read_index`] implements ReadIndex (thesis §6.4): the read waits until the leader
//! has committed an entry of its term, records the commit index, and is released once a
//! majority acknowledged a heartbeat round sent after it arrived. A follower forwards the
//! request to the leader and serves the read locally once it has applied that index.
//! With `lease_reads` (needs check-quorum), the leader answers from a lease instead: a
//! majority acknowledged a heartbeat less than an election timeout (minus a margin) ago,
//! and those followers refuse votes for that long (thesis §6.4.1). Leases assume clocks
//! that advance at about the same rate.
//!
//! ## Leader transfer
//! [`Raft::transfer_leader`] (thesis §3.10): the leader stops accepting proposals, brings
//! the target's log up to date, and sends it `TimeoutNow`; the target campaigns at once,
//! skipping pre-vote, and voters don't ignore it for having a leader. After an election
//! timeout without success, the leader gives up and accepts proposals again.
//!
//! ## Membership
//! Single-server changes (thesis §4.1): add a learner, add a voter, promote a learner,
//! remove a node, one at a time, each in effect as soon as it is appended (committed or
//! not; a truncated change is undone). The leader refuses a change until it has committed an
//! entry of its own term (the fix to the single-server change bug found after the thesis)
//! and while an earlier change is uncommitted. Learners receive the log but neither vote
//! nor count toward quorums. A leader that removes itself keeps leading, without counting
//! itself, until the removal commits, then steps down (thesis §4.2.2). Requests from nodes
//! outside our membership are still answered (thesis §4.1: a new node must be able to
//! receive the log before it knows it is a member); only responses from non-members are
//! dropped.
//!
//! ## Snapshots
//! The driver tells the core that the state machine holds a snapshot up to an applied index
//! ([`Raft::compact`]); the core returns the snapshot's metadata (last log id, membership)
//! and the driver compacts the log. When a follower needs compacted entries, the leader
//! sends `InstallSnapshot` with the metadata; the runtime streams the data. A follower whose
//! log does not already hold the snapshot's last entry replaces its log and state machine
//! (Raft §7). The runtime reports how the stream ended ([`Raft::report_snapshot`]): after a
//! failed one the leader resends the snapshot at the follower's next sign of life.
//!
//! ## Restart
//! [`Raft::new`] rebuilds a node from its storage: hard state (term, vote, commit),
//! snapshot metadata, and the log, from which it recovers the membership in effect. The
//! commit index is synced only along with other changes, so it may come back lower than it
//! was; the leader tells the node the rest.
//!
//! ## Testing
//! With the `testing` feature, `testing::execute` runs one `Ready` through its contract
//! for a test harness (the golden scripts, the smoke tests and the simulator all use it),
//! with hooks where the harness prints, checks or crashes the node.
//!
//! ## Safety checks
//! Local invariants are asserted always, not only in debug builds: terms and commit indexes
//! never go back, the log is contiguous, nothing committed is truncated. Each of these can
//! only be broken by a bug in this crate or in the driver. Input from other nodes is
//! validated instead, never asserted ("no panic from the wire"): before anything else,
//! [`Raft::step`] drops a misaddressed message, one naming a term or index above
//! [`MAX_WIRE_VALUE`] (so nothing a peer sends can overflow a term or an index), and one
//! that is impossible on its face (entries that don't follow `prev_log_id`, a log id of a
//! term above the message's, a snapshot at index 0). Later checks drop a second leader in
//! a term (Election Safety says there is at most one, so the claim is forged or buggy), a
//! response from a non-member, an index beyond our log. Every drop is counted by reason
//! ([`Status::dropped_messages`]).
//!
//! ## Not implemented
//! Joint consensus (only single-server changes); witnesses; demoting a voter to a learner.
//!
//! ## Writing in parallel with replicating
//! A leader whose term and vote are durable hands out its messages apart, as
//! `Ready::leader_messages`, which the driver sends before it persists (thesis §10.2.1): the
//! leader's fsync overlaps its followers'. This is safe because the leader counts its own
//! entries toward a commit only once they are durable, and nothing a leader sends depends
//! on its unpersisted entries. Everything else waits for the sync.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod election;
mod follower;
mod leader;
mod log;
mod membership;
mod message;
pub mod progress;
mod quorum;
mod raft;
mod ready;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use config::{Config, InvalidConfig};
pub use message::{AppendResult, Envelope, Message, MessageKind, drop_reason};
pub use raft::Raft;
pub use ready::{ElectionTimer, Error, PeerStatus, Proposal, ReadError, ReadState, Ready, RoleName, Status};
pub use storage::{MemStorage, Storage, StorageError};
pub use types::{
    Entry, HardState, Index, LogId, MAX_WIRE_VALUE, Membership, MembershipChange, NodeId, Payload, ReadId,
    SnapshotMeta, Term,
};
