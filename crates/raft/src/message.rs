//! Messages between nodes. Names follow the Raft paper; a message the paper does not have
//! says in its doc why it exists.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::types::{Entry, Index, LogId, NodeId, Payload, ReadId, SnapshotMeta, Term};

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
    /// What kind of message this is.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::AppendEntries { .. } => MessageKind::AppendEntries,
            Message::AppendEntriesResponse(_) => MessageKind::AppendEntriesResponse,
            Message::Heartbeat { .. } => MessageKind::Heartbeat,
            Message::HeartbeatResponse { .. } => MessageKind::HeartbeatResponse,
            Message::RequestVote { pre_vote: true, .. } => MessageKind::PreVote,
            Message::RequestVoteResponse { pre_vote: true, .. } => MessageKind::PreVoteResponse,
            Message::RequestVote { .. } => MessageKind::RequestVote,
            Message::RequestVoteResponse { .. } => MessageKind::RequestVoteResponse,
            Message::InstallSnapshot { .. } => MessageKind::InstallSnapshot,
            Message::TimeoutNow => MessageKind::TimeoutNow,
            Message::ReadIndex { .. } => MessageKind::ReadIndex,
            Message::ReadIndexResponse { .. } => MessageKind::ReadIndexResponse,
        }
    }
}

/// The kinds of [`Message`], a pre-vote apart from a vote: the one table of their names,
/// for logs, counters and people. A kind's place in [`MessageKind::ALL`] is `kind as usize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// [`Message::AppendEntries`].
    AppendEntries,
    /// [`Message::AppendEntriesResponse`].
    AppendEntriesResponse,
    /// [`Message::Heartbeat`].
    Heartbeat,
    /// [`Message::HeartbeatResponse`].
    HeartbeatResponse,
    /// [`Message::RequestVote`] of a pre-vote.
    PreVote,
    /// [`Message::RequestVoteResponse`] to a pre-vote.
    PreVoteResponse,
    /// [`Message::RequestVote`] of an election.
    RequestVote,
    /// [`Message::RequestVoteResponse`] to an election's vote.
    RequestVoteResponse,
    /// [`Message::InstallSnapshot`].
    InstallSnapshot,
    /// [`Message::TimeoutNow`].
    TimeoutNow,
    /// [`Message::ReadIndex`].
    ReadIndex,
    /// [`Message::ReadIndexResponse`].
    ReadIndexResponse,
}

impl MessageKind {
    /// Every kind, in declaration order.
    pub const ALL: [MessageKind; 12] = [
        MessageKind::AppendEntries,
        MessageKind::AppendEntriesResponse,
        MessageKind::Heartbeat,
        MessageKind::HeartbeatResponse,
        MessageKind::PreVote,
        MessageKind::PreVoteResponse,
        MessageKind::RequestVote,
        MessageKind::RequestVoteResponse,
        MessageKind::InstallSnapshot,
        MessageKind::TimeoutNow,
        MessageKind::ReadIndex,
        MessageKind::ReadIndexResponse,
    ];

    /// Its name in logs and counters, as the type is named: `AppendEntries`, `PreVote`.
    pub fn name(self) -> &'static str {
        self.names().0
    }

    /// Its name for people, lower case and short: `append`, `pre-vote-response` (the
    /// dashboard's).
    pub fn short_name(self) -> &'static str {
        self.names().1
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            MessageKind::AppendEntries => ("AppendEntries", "append"),
            MessageKind::AppendEntriesResponse => ("AppendEntriesResponse", "append-response"),
            MessageKind::Heartbeat => ("Heartbeat", "heartbeat"),
            MessageKind::HeartbeatResponse => ("HeartbeatResponse", "heartbeat-response"),
            MessageKind::PreVote => ("PreVote", "pre-vote"),
            MessageKind::PreVoteResponse => ("PreVoteResponse", "pre-vote-response"),
            MessageKind::RequestVote => ("RequestVote", "vote"),
            MessageKind::RequestVoteResponse => ("RequestVoteResponse", "vote-response"),
            MessageKind::InstallSnapshot => ("InstallSnapshot", "snapshot"),
            MessageKind::TimeoutNow => ("TimeoutNow", "timeout-now"),
            MessageKind::ReadIndex => ("ReadIndex", "read-index"),
            MessageKind::ReadIndexResponse => ("ReadIndexResponse", "read-index-response"),
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why [`Envelope::check`] (and `step`) refuses a message. Each is the fixed phrase the drop
/// is counted under in [`crate::Status::dropped_messages`].
pub mod drop_reason {
    /// Not addressed to us, or claiming to come from us.
    pub const MISADDRESSED: &str = "misaddressed";
    /// A term or index above [`crate::MAX_WIRE_VALUE`].
    pub const CLOSE_TO_OVERFLOW: &str = "term or index close to overflow";
    /// Entries with a gap after `prev_log_id` or between them, terms that go back, term 0,
    /// or a term above the message's.
    pub const ENTRIES_DONT_FOLLOW: &str = "AppendEntries with entries that don't follow prev_log_id";
    /// A `prev_log_id` or a candidate's `last_log_id` of a term above the message's.
    pub const LOG_ID_FROM_THE_FUTURE: &str = "log id of a term above the message's";
    /// A snapshot at index 0, of term 0 or a term above the message's, or with a broken
    /// membership.
    pub const IMPOSSIBLE_SNAPSHOT: &str = "InstallSnapshot with impossible metadata";
    /// A membership entry naming a node both voter and learner.
    pub const IMPOSSIBLE_MEMBERSHIP: &str = "AppendEntries with a membership both voter and learner";
    /// A leader's message from a second leader of our term.
    pub const SECOND_LEADER: &str = "a second leader in the term";
    /// `TimeoutNow` in our term from a node that is not the leader we follow.
    pub const TIMEOUT_NOW_NOT_FROM_LEADER: &str = "TimeoutNow from a node that is not our leader";

    /// The reasons no message of a correct node ever has, however late, lost, repeated or
    /// reordered: a drop under one of them means a faulty (or forged) sender, or a check
    /// that is too strict. (A `TimeoutNow` is not among them: a node that restarted knows
    /// no leader, and may drop a correct one.) The simulator fails a run that has any.
    pub const ONLY_FROM_A_FAULTY_PEER: &[&str] = &[
        CLOSE_TO_OVERFLOW,
        ENTRIES_DONT_FOLLOW,
        LOG_ID_FROM_THE_FUTURE,
        IMPOSSIBLE_SNAPSHOT,
        IMPOSSIBLE_MEMBERSHIP,
        SECOND_LEADER,
    ];
}

impl Envelope {
    /// The checks a message must pass before [`crate::Raft::step`] looks at anything else in
    /// it: those that need nothing but the message and the receiver's id. Nothing in an
    /// envelope is trusted (STYLE §5): a peer may be buggy, or a message forged or corrupted.
    /// On refusal, returns the reason to count the drop under.
    ///
    /// What is refused here, and why it would hurt:
    /// - a message not to `receiver` or from `receiver` itself (we would answer ourselves,
    ///   which `Shared::send` asserts never happens);
    /// - any term or index above [`crate::MAX_WIRE_VALUE`] (for a term: unless it is at most
    ///   one above ours): we would adopt and persist such a term, and our next election, or
    ///   the next `index + 1`, would overflow;
    /// - entries that don't continue `prev_log_id` one index at a time, whose terms go back,
    ///   or whose terms are above the message's term (a leader only has entries of its term
    ///   or earlier ones, Raft §5.3): appending them would break the log's invariants, which
    ///   the log asserts;
    /// - a `prev_log_id`, candidate's `last_log_id` or snapshot of a term above the
    ///   message's: no correct sender has one (a candidate's log holds no entry of a term
    ///   above its campaign term), and a forged one would win votes or a match;
    /// - a snapshot at index 0 (the empty log, which no leader sends), and a membership (in
    ///   a snapshot or an entry) that names a node both voter and learner, or gives a
    ///   non-member or an overlong address, which breaks the documented invariant of
    ///   [`crate::Membership`].
    ///
    /// `receiver_term` is the receiver's current term. Above the bound, a term at most one
    /// above it is still accepted (see [`crate::MAX_WIRE_VALUE`] for why).
    pub(crate) fn check(&self, receiver: NodeId, receiver_term: Term) -> Result<(), &'static str> {
        use drop_reason::*;
        if self.to != receiver || self.from == receiver {
            return Err(MISADDRESSED);
        }
        let term = self.term;
        // Every term in the message is at most the envelope's (checked below, where a log
        // id carries one), so this bound covers them all.
        let term_limit = Term::MAX_ACCEPTED.max(receiver_term.next());
        let bounded_term = |t: Term| t <= term_limit;
        let bounded_index = |i: Index| i <= Index::MAX_ACCEPTED;
        let bounded = |log_id: LogId| bounded_term(log_id.term) && bounded_index(log_id.index);
        if !bounded_term(term) {
            return Err(CLOSE_TO_OVERFLOW);
        }
        match &self.message {
            Message::AppendEntries { prev_log_id, entries, leader_commit } => {
                if !bounded(*prev_log_id) || !bounded_index(*leader_commit) {
                    return Err(CLOSE_TO_OVERFLOW);
                }
                if prev_log_id.term > term {
                    return Err(LOG_ID_FROM_THE_FUTURE);
                }
                let mut previous = *prev_log_id;
                for entry in entries {
                    if !bounded(entry.log_id) {
                        return Err(CLOSE_TO_OVERFLOW);
                    }
                    // `previous.index` is bounded (checked above), so `next()` can't overflow.
                    // Term 0 is the empty log's: no leader appends an entry of it.
                    let impossible_term = entry.term() == Term(0) || entry.term() > term;
                    if entry.index() != previous.index.next() || entry.term() < previous.term || impossible_term {
                        return Err(ENTRIES_DONT_FOLLOW);
                    }
                    if let Payload::Membership(membership) = &entry.payload
                        && !membership.is_valid()
                    {
                        return Err(IMPOSSIBLE_MEMBERSHIP);
                    }
                    previous = entry.log_id;
                }
            }
            Message::AppendEntriesResponse(AppendResult::Success { match_index }) => {
                if !bounded_index(*match_index) {
                    return Err(CLOSE_TO_OVERFLOW);
                }
            }
            Message::AppendEntriesResponse(AppendResult::Reject { rejected_prev, hint }) => {
                if !bounded_index(*rejected_prev) || !bounded(*hint) {
                    return Err(CLOSE_TO_OVERFLOW);
                }
            }
            Message::Heartbeat { commit, .. } => {
                if !bounded_index(*commit) {
                    return Err(CLOSE_TO_OVERFLOW);
                }
            }
            Message::RequestVote { last_log_id, .. } => {
                if !bounded(*last_log_id) {
                    return Err(CLOSE_TO_OVERFLOW);
                }
                if last_log_id.term > term {
                    return Err(LOG_ID_FROM_THE_FUTURE);
                }
            }
            Message::InstallSnapshot { meta } => {
                let snapshot = meta.last_log_id;
                if !bounded(snapshot) {
                    return Err(CLOSE_TO_OVERFLOW);
                }
                let membership = &meta.membership;
                if snapshot.term > term
                    || snapshot.index == Index(0)
                    || snapshot.term == Term(0)
                    || !membership.is_valid()
                {
                    return Err(IMPOSSIBLE_SNAPSHOT);
                }
            }
            Message::ReadIndexResponse { index: Some(index), .. } => {
                if !bounded_index(*index) {
                    return Err(CLOSE_TO_OVERFLOW);
                }
            }
            // Nothing in them is used in arithmetic or as an index: the heartbeat round is
            // only compared with our own, the read id only echoed.
            Message::HeartbeatResponse { .. }
            | Message::RequestVoteResponse { .. }
            | Message::TimeoutNow
            | Message::ReadIndex { .. }
            | Message::ReadIndexResponse { index: None, .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod kind_tests {
    use super::MessageKind;

    #[test]
    fn a_kinds_place_in_all_is_its_number_and_its_names_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        for (place, kind) in MessageKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, place, "{kind}");
            assert!(names.insert(kind.name()) && names.insert(kind.short_name()), "{kind}: a name twice");
        }
    }
}
