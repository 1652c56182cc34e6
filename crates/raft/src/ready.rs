//! The core's output, and the errors its inputs can return.

use thiserror::Error;

use crate::config::InvalidConfig;
use crate::storage::StorageError;
use crate::types::{Entry, HardState, Index, LogId, NodeId, ReadId, SnapshotMeta, Term};

/// Everything the core wants done, handed to the driver in one batch by
/// [`crate::Raft::ready`]. The driver must act on it **in this order**:
///
/// 0. **Send `leader_messages`** at once, while step 1 runs. They are a leader's
///    `AppendEntries`, heartbeats and other messages, which never depend on the leader's own
///    unpersisted entries: the leader counts itself toward a commit only after step 1
///    (thesis §10.2.1, so the leader's fsync overlaps its followers'). Sending them with
///    step 2 instead is also correct, only slower.
/// 1. **Persist.** Install `snapshot` if there is one ([`crate::Storage::install_snapshot`]),
///    append `entries` (the first entry's index says where the old tail is cut:
///    everything from there on is replaced), save `hard_state` if it is `Some`, then, if
///    `must_sync`, make all of it durable with **one** [`crate::Storage::sync`] (group
///    commit). Without `must_sync` only the commit index changed: it is volatile state
///    (Raft Figure 2; a restart learns it again from the leader, and never below the
///    snapshot), so it is written and made durable by the next sync, not waited for.
/// 2. **Send** `messages`. Each may depend on step 1 (a vote, an acknowledgement of
///    entries), so none may leave before the sync returns.
/// 3. **Apply.** If `snapshot` is `Some`, restore the state machine from the snapshot data
///    received with it. Then apply `committed` in order: each has index `applied + 1`.
///    Answer each of `reads` once the state machine has applied its index.
/// 4. **Advance:** call [`crate::Raft::advance`]. No other input may reach the core
///    between `ready()` and `advance()`.
///
/// A driver that crashes at any point and restarts from its storage is safe: whatever was
/// not synced in step 1 was never promised to anyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The term, vote and commit to persist, when they changed.
    pub hard_state: Option<HardState>,
    /// Step 1 must end with a sync: there is a snapshot, there are entries, or the term or
    /// the vote changed. False when only the commit index moved (on a follower that is
    /// every write, once more: a sync for nothing on the path of the next write).
    pub must_sync: bool,
    /// A snapshot received from the leader, to install in place of the whole log.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append, replacing the log's tail from `entries[0]`'s index on.
    pub entries: Vec<Entry>,
    /// Messages of a leader whose term and vote are already durable: send at once (step 0).
    pub leader_messages: Vec<crate::Envelope>,
    /// Messages to send once step 1 is durable, each to its `to` node.
    pub messages: Vec<crate::Envelope>,
    /// Committed entries to apply, in order.
    pub committed: Vec<Entry>,
    /// Answers to read requests.
    pub reads: Vec<ReadState>,
}

/// The answer to a read request: the index the state machine must have applied before the
/// read is served, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub id: ReadId,
    pub result: Result<Index, ReadError>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    /// Leadership changed before the read was confirmed; retry against the new leader.
    #[error("leadership changed before the read was confirmed (leader now: {})", display_leader(*.leader))]
    LeadershipLost { leader: Option<NodeId> },
}

/// What a proposal got: the log position its entry will commit at, if it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub log_id: LogId,
}

/// Why an input was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Error {
    #[error("this node is not the leader (leader: {})", display_leader(*.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("leadership is being transferred to {target}; retry when it completes")]
    TransferInProgress { target: NodeId },
    #[error("{uncommitted_bytes} bytes are waiting to commit (limit {limit_bytes}); retry when the cluster catches up")]
    TooManyUncommitted { uncommitted_bytes: u64, limit_bytes: u64 },
    #[error("the leader has not yet committed an entry of its term {term}; retry shortly")]
    LeaderNotReady { term: Term },
    #[error("membership change at index {index} is not yet committed; one change at a time")]
    MembershipChangePending { index: Index },
    #[error("invalid membership change: {0}")]
    InvalidMembershipChange(String),
    #[error("{0} is not a voter")]
    NotAVoter(NodeId),
    #[error("cannot snapshot at {index}: {reason}")]
    InvalidSnapshot { index: Index, reason: String },
    #[error("invalid configuration: {0}")]
    InvalidConfig(InvalidConfig),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn display_leader(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "unknown".to_string(), |id| id.to_string())
}

/// A copy of a node's state for status views and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: RoleName,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub last_log_id: LogId,
    pub first_index: Index,
    pub membership: crate::Membership,
    /// The leader's view of each follower (empty on other roles).
    pub progress: Vec<PeerStatus>,
    /// Messages from other nodes dropped as invalid (unknown sender, impossible index).
    pub dropped_messages: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoleName {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            RoleName::Follower => "follower",
            RoleName::PreCandidate => "pre-candidate",
            RoleName::Candidate => "candidate",
            RoleName::Leader => "leader",
        };
        f.write_str(name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
    pub state: crate::progress::ProgressState,
}
