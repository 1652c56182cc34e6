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
///    step 2 instead is also correct, only slower. Then the driver may **apply the
///    committed entries that precede `entries`** ([`Ready::durable_committed`]): an earlier
///    `Ready` synced them, so they are durable here as on a majority, and their clients
///    need not wait for this `Ready`'s sync of unrelated new entries (etcd applies
///    before its WAL save for the same reason). Applying them in step 3 is also correct.
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
///    received with it. Then apply `committed` in order (those step 0 did not): each has
///    index `applied + 1`.
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

impl Ready {
    /// How many of `committed` (its first ones) step 0 may apply: those before the first of
    /// `entries`, which this node holds durably already (every `Ready` with entries ends with
    /// a sync). None when a snapshot is to be installed: the state machine restores first.
    pub fn durable_committed(&self) -> usize {
        if self.snapshot.is_some() {
            return 0;
        }
        match self.entries.first() {
            Some(first) => self.committed.partition_point(|entry| entry.index() < first.index()),
            None => self.committed.len(),
        }
    }
}

/// The answer to a read request: the index the state machine must have applied before the
/// read is served, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The request, as the driver named it in [`crate::Raft::read_index`].
    pub id: ReadId,
    /// The read index: serve the read once the state machine has applied it (it is at
    /// least the commit index when the read arrived, confirmed by a quorum, thesis §6.4).
    /// Or why the read cannot be served.
    pub result: Result<Index, ReadError>,
}

/// Why a read request got no read index.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    /// Leadership changed before the read was confirmed; retry against the new leader.
    #[error("leadership changed before the read was confirmed (leader now: {})", display_leader(*.leader))]
    LeadershipLost {
        /// The leader this node now knows of, if any: where to retry.
        leader: Option<NodeId>,
    },
}

/// What a proposal got: the log position its entry will commit at, if it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The entry's index and the leader's term. The proposal is committed if and when an
    /// entry with exactly this id appears in `Ready::committed`; an entry of another term
    /// at this index means it was lost to a leader change (Raft §5.3) and may be retried.
    pub log_id: LogId,
}

/// Why an input was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Error {
    /// A proposal, transfer or membership change reached a node that is not the leader.
    #[error("this node is not the leader (leader: {})", display_leader(*.leader))]
    NotLeader {
        /// The leader this node knows of, if any: where to retry.
        leader: Option<NodeId>,
    },
    /// The leader is handing over to another node and takes no proposals meanwhile
    /// (thesis §3.10); the transfer ends within an election timeout either way.
    #[error("leadership is being transferred to {target}; retry when it completes")]
    TransferInProgress {
        /// The node leadership is being transferred to.
        target: NodeId,
    },
    /// The leader's uncommitted entries already reach `Config::max_uncommitted_bytes`:
    /// back-pressure, so a leader cut off from its quorum does not grow without bound.
    #[error("{uncommitted_bytes} bytes are waiting to commit (limit {limit_bytes}); retry when the cluster catches up")]
    TooManyUncommitted {
        /// Bytes of entries appended but not yet committed (as `Entry::size_bytes` counts).
        uncommitted_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A membership change before the leader committed an entry of its own term (the
    /// single-server change bug, thesis §4.1 errata).
    #[error("the leader has not yet committed an entry of its term {term}; retry shortly")]
    LeaderNotReady {
        /// The leader's current term.
        term: Term,
    },
    /// Another membership change is not yet committed: one change at a time (thesis §4.1).
    #[error("membership change at index {index} is not yet committed; one change at a time")]
    MembershipChangePending {
        /// The log index of the pending change.
        index: Index,
    },
    /// The change makes no sense for the current membership (adding a member twice,
    /// removing a stranger, removing the last voter); the text says which.
    #[error("invalid membership change: {0}")]
    InvalidMembershipChange(String),
    /// Only a voter may campaign or be the target of a leader transfer; this one is not.
    #[error("{0} is not a voter")]
    NotAVoter(NodeId),
    /// [`crate::Raft::compact`] was asked for an index outside `[first log index, applied
    /// index]`.
    #[error("cannot snapshot at {index}: {reason}")]
    InvalidSnapshot {
        /// The index asked for.
        index: Index,
        /// Which bound it broke.
        reason: String,
    },
    /// [`crate::Raft::new`] was given a `Config` that fails `Config::validate`, which
    /// names the setting.
    #[error("invalid configuration: {0}")]
    InvalidConfig(InvalidConfig),
    /// The storage failed; for `StorageError::Io` the node must stop.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn display_leader(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "unknown".to_string(), |id| id.to_string())
}

/// A copy of a node's state for status views and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role now.
    pub role: RoleName,
    /// Its current term.
    pub term: Term,
    /// Whom it voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
    /// The leader of `term` it knows of (itself when leader), if any.
    pub leader: Option<NodeId>,
    /// Its commit index. `applied <= commit <= last_log_id.index`.
    pub commit: Index,
    /// The last index handed to the driver to apply (in a `Ready` already advanced past).
    pub applied: Index,
    /// Its last log entry (the snapshot's, when the log after it is empty).
    pub last_log_id: LogId,
    /// Its first log entry still held; everything before is in the snapshot. 1 until the
    /// first compaction.
    pub first_index: Index,
    /// The membership in effect: the latest in its log, committed or not (thesis §4.1).
    pub membership: crate::Membership,
    /// The leader's view of each follower (empty on other roles).
    pub progress: Vec<PeerStatus>,
    /// Messages from other nodes dropped as invalid (unknown sender, impossible index),
    /// counted by the reason they were dropped for (a fixed phrase, e.g. "HeartbeatResponse
    /// for a round never sent"). Only reasons that occurred are present.
    pub dropped_messages: std::collections::BTreeMap<&'static str, u64>,
    /// A follower's or candidate's election timer: ticks since it last heard from a leader
    /// (or started its campaign), and the randomized timeout it campaigns at (Raft §5.2).
    /// `None` on a leader, which has no election timer.
    pub election_timer: Option<ElectionTimer>,
}

/// An election timer's state, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionTimer {
    /// Ticks since the timer was last reset.
    pub elapsed_ticks: u32,
    /// The randomized timeout: the node campaigns when `elapsed_ticks` reaches it.
    pub timeout_ticks: u32,
}

/// A node's role, for status views and tests (the roles themselves are types inside the
/// core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoleName {
    /// Follows a leader, or waits for one (Raft §5.2).
    Follower,
    /// Asks for pre-votes before campaigning, without raising its term (thesis §9.6).
    PreCandidate,
    /// Campaigns in a new term (Raft §5.2).
    Candidate,
    /// Leads its term; at most one per term (Election Safety, Raft §5.2).
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

/// The leader's view of one follower (Raft figure 2, "volatile state on leaders").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The follower.
    pub id: NodeId,
    /// The highest index known to match the leader's log (0 when nothing is known).
    pub match_index: Index,
    /// The next index to send it. `match_index < next_index <= last index + 1`.
    pub next_index: Index,
    /// How the leader is replicating to it.
    pub state: crate::progress::ProgressState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Payload, SnapshotMeta};

    fn entries(indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes.map(|index| Entry { log_id: LogId::new(Term(1), Index(index)), payload: Payload::Empty }).collect()
    }

    #[test]
    fn only_the_committed_entries_before_the_new_ones_are_durable_already() {
        let mut ready = Ready { committed: entries(1..=3), ..Ready::default() };
        assert_eq!(ready.durable_committed(), 3, "no new entries: every committed one was synced before");
        ready.entries = entries(3..=4);
        assert_eq!(ready.durable_committed(), 2, "entry 3 is appended by this Ready: it waits for its sync");
        ready.entries = entries(1..=4);
        assert_eq!(ready.durable_committed(), 0);
        ready.entries.clear();
        ready.snapshot = Some(SnapshotMeta::default());
        assert_eq!(ready.durable_committed(), 0, "the state machine restores the snapshot first");
    }
}
