//! Messages between nodes. Names follow the Raft paper; a message the paper does not have
//! says in its doc why it exists.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, Index, LogId, NodeId, ReadId, SnapshotMeta, Term};

/// A message addressed from one node to one other node, stamped with the sender's term.
/// For a pre-vote request and a granted pre-vote response, `term` is the term the
/// pre-candidate would campaign in, which is not the sender's current term (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub message: Message,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Leader → follower: append `entries` after `prev_log_id` (Raft §5.3). Empty `entries`
    /// probe for the point where the logs agree.
    AppendEntries { prev_log_id: LogId, entries: Vec<Entry>, leader_commit: Index },

    /// Follower → leader: the outcome of an `AppendEntries` or `InstallSnapshot`.
    AppendEntriesResponse(AppendResult),

    /// Leader → follower: "I am still leader". Not in the paper as a separate message: it
    /// carries no entries and no `prev_log_id`, so a follower whose log lags still resets
    /// its election timer. `commit` is at most what this follower is known to hold, so it
    /// can never commit an entry it does not share with the leader. `heartbeat_round` ties the
    /// round to pending ReadIndex requests (thesis §6.4).
    Heartbeat { commit: Index, heartbeat_round: u64 },

    /// Follower → leader: acknowledges the heartbeat of round `heartbeat_round`.
    HeartbeatResponse { heartbeat_round: u64 },

    /// Candidate → voter: vote for me (Raft §5.2), or, with `pre_vote`, would you vote for me
    /// if I campaigned (thesis §9.6)? `leader_transfer` says the campaign follows a
    /// `TimeoutNow`, so voters must not ignore it for having heard from a leader recently
    /// (thesis §3.10, §4.2.3).
    RequestVote { last_log_id: LogId, pre_vote: bool, leader_transfer: bool },

    /// Voter → candidate.
    RequestVoteResponse { granted: bool, pre_vote: bool },

    /// Leader → follower: the entries you need are compacted; install this snapshot. The
    /// core carries only the metadata; the runtime streams the data alongside (the core
    /// never holds snapshot bytes).
    InstallSnapshot { meta: SnapshotMeta },

    /// Leader → transfer target: start an election now (thesis §3.10).
    TimeoutNow,

    /// Follower → leader: give me a read index for request `id`. Not in the paper: it lets a
    /// follower serve linearizable reads from its own state machine (thesis §6.4.1).
    ReadIndex { id: ReadId },

    /// Leader → follower: the read index for `id`, confirmed by a quorum, or `None` when
    /// this node cannot serve it (no longer leader).
    ReadIndexResponse { id: ReadId, index: Option<Index> },
}

/// The outcome of an `AppendEntries` or `InstallSnapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`.
    Success { match_index: Index },
    /// The follower has no entry matching `rejected_prev`. `hint` is the last entry it holds
    /// at or below `rejected_prev` whose term is at most the leader's term at that point, so
    /// the leader can skip whole terms at once instead of one entry at a time (Raft §5.3,
    /// the optimisation at the end).
    Reject { rejected_prev: Index, hint: LogId },
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::AppendEntries { .. } => "AppendEntries",
            Message::AppendEntriesResponse(_) => "AppendEntriesResponse",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::HeartbeatResponse { .. } => "HeartbeatResponse",
            Message::RequestVote { pre_vote: true, .. } => "PreVote",
            Message::RequestVote { .. } => "RequestVote",
            Message::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            Message::RequestVoteResponse { .. } => "RequestVoteResponse",
            Message::InstallSnapshot { .. } => "InstallSnapshot",
            Message::TimeoutNow => "TimeoutNow",
            Message::ReadIndex { .. } => "ReadIndex",
            Message::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
