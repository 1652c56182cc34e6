//! Messages between nodes. Names follow the Raft paper; a message the paper does not have
//! says in its doc why it exists.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, Index, LogId, NodeId, ReadId, SnapshotMeta, Term};

/// A message addressed from one node to one other node, stamped with the sender's term.
/// For a pre-vote request and a granted pre-vote response, `term` is the term the
/// pre-candidate would campaign in, which is not the sender's current term (thesis §9.6).
///
/// Nothing in an envelope is trusted: the receiver drops one that is misaddressed, comes
/// from a non-member where that matters, or names an impossible index (STYLE §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender; never equal to `to` (the core drops a message to itself).
    pub from: NodeId,
    /// The receiver: the node whose `step` is handed the message.
    pub to: NodeId,
    /// The sender's current term (or the proposed term of a pre-vote, see above). A higher
    /// term makes the receiver adopt it and step down (Raft §5.1); a lower one marks a
    /// stale message.
    pub term: Term,
    /// What the message says.
    pub message: Message,
}

/// The messages of the protocol. The serialized form (postcard) is positional: renaming a
/// field changes nothing on the wire; adding, removing or reordering variants or fields
/// does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Leader → follower: append `entries` after `prev_log_id` (Raft §5.3). Empty `entries`
    /// probe for the point where the logs agree.
    AppendEntries {
        /// The entry just before `entries` (index 0 term 0 before the first entry). The
        /// follower accepts only if it holds an entry with this index and term (the Log
        /// Matching check, Raft §5.3).
        prev_log_id: LogId,
        /// Entries to append, contiguous, starting at `prev_log_id.index + 1`; their terms
        /// never decrease. Bounded by `Config::max_append_bytes` (at least one entry).
        entries: Vec<Entry>,
        /// The leader's commit index; the follower commits up to the smaller of it and the
        /// last entry of this message (Raft figure 2, "AppendEntries RPC", step 5).
        leader_commit: Index,
    },

    /// Follower → leader: the outcome of an `AppendEntries` or `InstallSnapshot`.
    AppendEntriesResponse(AppendResult),

    /// Leader → follower: "I am still leader". Not in the paper as a separate message: it
    /// carries no entries and no `prev_log_id`, so a follower whose log lags still resets
    /// its election timer.
    Heartbeat {
        /// The leader's commit index, capped at what this follower is known to hold, so it
        /// can never commit an entry it does not share with the leader.
        commit: Index,
        /// Which of this leader's heartbeat rounds this is: 1, 2, ... counted from the
        /// start of its term. A quorum acknowledging round `r` confirms the reads that
        /// waited for round `r` (ReadIndex, thesis §6.4) and starts a lease (thesis §6.4.1).
        heartbeat_round: u64,
    },

    /// Follower → leader: acknowledges a heartbeat.
    HeartbeatResponse {
        /// The round of the `Heartbeat` answered, echoed back. A leader drops an answer to
        /// a round it never sent.
        heartbeat_round: u64,
    },

    /// Candidate → voter: vote for me (Raft §5.2), or, with `pre_vote`, would you vote for me
    /// if I campaigned (thesis §9.6)?
    RequestVote {
        /// The candidate's last log entry; a voter grants only if it is at least as
        /// up-to-date as its own (higher term, or same term and at least as long: Raft
        /// §5.4.1).
        last_log_id: LogId,
        /// A pre-vote: the voter answers as it would vote, but changes neither its term
        /// nor its vote (thesis §9.6).
        pre_vote: bool,
        /// The campaign follows a `TimeoutNow`, so voters must not ignore it for having
        /// heard from a leader recently (thesis §3.10, §4.2.3).
        leader_transfer: bool,
    },

    /// Voter → candidate.
    RequestVoteResponse {
        /// Whether the vote (or pre-vote) is granted.
        granted: bool,
        /// Whether this answers a pre-vote request (echoed from the request).
        pre_vote: bool,
    },

    /// Leader → follower: the entries you need are compacted; install this snapshot. The
    /// core carries only the metadata; the runtime streams the data alongside (the core
    /// never holds snapshot bytes).
    InstallSnapshot {
        /// The snapshot's last included entry and the membership in effect at it (Raft §7).
        meta: SnapshotMeta,
    },

    /// Leader → transfer target: start an election now (thesis §3.10).
    TimeoutNow,

    /// Follower → leader: give me a read index for request `id`. Not in the paper as a
    /// message: it lets a follower serve linearizable reads from its own state machine
    /// (thesis §6.4, the paragraph on followers).
    ReadIndex {
        /// The follower's request, chosen by its driver; echoed in the response.
        id: ReadId,
    },

    /// Leader → follower: the answer to a `ReadIndex`.
    ReadIndexResponse {
        /// The request answered.
        id: ReadId,
        /// The read index, confirmed by a quorum: the follower serves the read once it has
        /// applied this index. `None` when the sender cannot serve it (no longer leader):
        /// the follower fails the read, and its caller retries.
        index: Option<Index>,
    },
}

/// The outcome of an `AppendEntries` or `InstallSnapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`.
    Success {
        /// The last index the follower now shares with the leader: the last entry of the
        /// `AppendEntries` (its `prev_log_id` when empty) or the snapshot's index; the
        /// follower's commit index when the message lay wholly below it (everything up to
        /// a commit matches already).
        match_index: Index,
    },
    /// The follower has no entry matching `rejected_prev`.
    Reject {
        /// The `prev_log_id.index` of the rejected `AppendEntries`.
        rejected_prev: Index,
        /// The last entry the follower holds at or below `rejected_prev` whose term is at
        /// most the leader's term at that point, so the leader can skip whole terms at once
        /// instead of one entry at a time (Raft §5.3, the optimisation at the end). Never
        /// above `rejected_prev`; a leader drops a response whose hint is.
        hint: LogId,
    },
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
