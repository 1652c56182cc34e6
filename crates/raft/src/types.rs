//! The words of the protocol: terms, indexes, node ids, log entries, membership and hard state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Raft term: a logical clock that only moves forward (Raft §5.1). Term 0 exists only
/// before the first election.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty log before the first entry; the
/// first real entry has index 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Index(pub u64);

/// A node's identity, unique within a cluster and never reused. Printed as `n<id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// The largest term or index the core takes from another node: half the range of `u64`.
///
/// A message naming a term or an index above it is dropped at the boundary of
/// [`crate::Raft::step`] (counted as "term or index close to overflow"), so every term and
/// index the core holds stays far below `u64::MAX` and `next()` and `index + count` never
/// overflow. Without it a peer that sends term `u64::MAX` (forged, or a bit flip) makes the
/// receiver adopt and persist it, and its next election overflows: the node is wedged for
/// good.
///
/// One exception keeps a cluster live that a bad message pushed up to the bound: above it,
/// a term at most one above the receiver's own is still accepted. A node's own term grows
/// by one per election, so the others can follow it one election at a time, while a peer
/// would need 2^63 messages, each one term up, to reach `u64::MAX` (at a million elections a
/// second, over 290,000 years). Indexes have no such exception: a log grows by one entry at
/// a time and cannot honestly come near the bound.
pub const MAX_WIRE_VALUE: u64 = u64::MAX / 2;

impl Term {
    /// The largest term the core accepts from another node (see [`MAX_WIRE_VALUE`]).
    pub const MAX_ACCEPTED: Term = Term(MAX_WIRE_VALUE);

    /// The term after this one.
    pub fn next(self) -> Term {
        // Invariant: only our own bug can break this, because `step` refuses terms above
        // `Term::MAX_ACCEPTED` (beyond it, more than one above ours), and elections, ours or
        // others', cannot climb the remaining half of u64.
        Term(self.0.checked_add(1).expect("term overflow: remote terms are bounded at the step boundary"))
    }
}

impl Index {
    /// The largest index the core accepts from another node (see [`MAX_WIRE_VALUE`]).
    pub const MAX_ACCEPTED: Index = Index(MAX_WIRE_VALUE);

    /// The index after this one.
    pub fn next(self) -> Index {
        // Invariant: only our own bug can break this, because `step` refuses indexes above
        // `Index::MAX_ACCEPTED` and our own log cannot grow by the remaining half of u64.
        Index(self.0.checked_add(1).expect("index overflow: remote indexes are bounded at the step boundary"))
    }

    /// The index before this one; `Index(0).prev()` is `Index(0)`.
    pub fn prev(self) -> Index {
        Index(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The identity of a log entry. By the Log Matching property (Raft §5.3), two logs that
/// hold the same `LogId` hold the same entries up to and including it. Printed `index@term`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogId {
    /// The term of the leader that created the entry (0 only for the empty position before
    /// the first entry).
    pub term: Term,
    /// The entry's position in the log, from 1 (0 is the empty position before it).
    pub index: Index,
}

impl LogId {
    /// The id of the entry at `index` created in `term`.
    pub fn new(term: Term, index: Index) -> LogId {
        LogId { term, index }
    }

    /// Whether a log ending at `self` is at least as up to date as one ending at `other`
    /// (Raft §5.4.1): the later last term wins, and with equal terms the longer log.
    pub fn is_up_to_date_with(&self, other: &LogId) -> bool {
        (self.term, self.index) >= (other.term, other.index)
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.index, self.term)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// No command. A new leader appends one to commit entries of earlier terms (Raft §5.4.2).
    Empty,
    /// An opaque command for the application's state machine.
    Command(Bytes),
    /// A new cluster membership, in effect from the moment it is appended (thesis §4.1).
    Membership(Membership),
}

impl Payload {
    /// The size of an entry carrying this payload, as [`Entry::size_bytes`] counts it.
    pub fn entry_size_bytes(&self) -> u64 {
        const OVERHEAD_BYTES: u64 = 24;
        let payload = match self {
            Payload::Empty => 0,
            Payload::Command(data) => data.len() as u64,
            Payload::Membership(membership) => membership.size_bytes(),
        };
        OVERHEAD_BYTES + payload
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where the entry sits and which leader's term created it. Within a log, indexes are
    /// contiguous and terms never decrease.
    pub log_id: LogId,
    /// What the entry carries: nothing (a new leader's first entry), a command for the
    /// state machine, or a new membership.
    pub payload: Payload,
}

impl Entry {
    /// The entry's log index.
    pub fn index(&self) -> Index {
        self.log_id.index
    }

    /// The term in which a leader created the entry.
    pub fn term(&self) -> Term {
        self.log_id.term
    }

    /// The entry's size for flow control and memory bounds: its payload plus a fixed overhead.
    pub fn size_bytes(&self) -> u64 {
        self.payload.entry_size_bytes()
    }
}

/// The members of a cluster. Voters elect leaders and form quorums; learners receive the
/// log but neither vote nor count toward quorums. Invariant ([`Membership::is_valid`]): the
/// two sets are disjoint, and only members have an address.
///
/// Each member may carry an address: where the application reaches it (Skiff writes
/// `raft=host:port http=host:port`). The core stores and replicates addresses with the
/// membership, in log entries and snapshots, so a cluster's membership says both who its
/// members are and where they live; it never reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The members that vote and count toward quorums (a majority of them commits an entry
    /// and elects a leader, Raft §5.2). Empty only for a node waiting to be added.
    pub voters: BTreeSet<NodeId>,
    /// The members that receive the log but do not vote (thesis §4.2.1: a new server
    /// catches up as a learner before it counts). Disjoint from `voters`.
    pub learners: BTreeSet<NodeId>,
    /// Where members can be reached, as the application wrote it (at most
    /// [`Membership::MAX_ADDRESS_BYTES`] each). Only members have one; a member may have
    /// none (the application then knows its address another way).
    pub addresses: BTreeMap<NodeId, String>,
}

impl Membership {
    /// The longest address a member may have, in bytes.
    pub const MAX_ADDRESS_BYTES: usize = 1024;

    /// A membership of the given voters, no learners and no addresses.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership { voters: voters.into_iter().collect(), ..Membership::default() }
    }

    /// Whether the invariant holds: no node is both voter and learner, and only members
    /// have addresses, none longer than [`Membership::MAX_ADDRESS_BYTES`]. Remote input
    /// (a peer's entries and snapshots) is checked with it before it is used.
    pub fn is_valid(&self) -> bool {
        self.voters.is_disjoint(&self.learners)
            && self.addresses.iter().all(|(id, address)| self.contains(*id) && address.len() <= Self::MAX_ADDRESS_BYTES)
    }

    /// Member `id`'s address, if it has one.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.addresses.get(&id).map(String::as_str)
    }

    /// The size of this membership for flow control: 8 bytes a member plus its address.
    pub fn size_bytes(&self) -> u64 {
        8 * self.len() as u64 + self.addresses.values().map(|address| address.len() as u64).sum::<u64>()
    }

    /// Whether `id` is a member, voter or learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Every member, voters and learners, in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.learners).copied()
    }

    /// The number of members, voters and learners.
    pub fn len(&self) -> usize {
        self.voters.len() + self.learners.len()
    }

    /// Whether there is no member at all (a node waiting to be added).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this membership shows `change` done, as [`Membership::apply`] would leave it:
    /// the member added (at the address, if the change names one), promoted, or gone. A
    /// node settles a change of unknown outcome by asking this of the applied membership.
    pub fn shows(&self, change: &MembershipChange) -> bool {
        let at = |id: NodeId, address: &Option<String>| address.is_none() || self.address(id) == address.as_deref();
        match change {
            MembershipChange::AddLearner { id, address } => self.contains(*id) && at(*id, address),
            MembershipChange::AddVoter { id, address } => self.is_voter(*id) && at(*id, address),
            MembershipChange::Promote(id) => self.is_voter(*id),
            MembershipChange::Remove(id) => !self.contains(*id),
        }
    }

    /// The membership after `change`, or why the change is not allowed.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, String> {
        let mut next = self.clone();
        let set_address = |next: &mut Membership, id: NodeId, address: Option<String>| match address {
            Some(address) if address.len() > Self::MAX_ADDRESS_BYTES => {
                Err(format!("{id}'s address is longer than {} bytes", Self::MAX_ADDRESS_BYTES))
            }
            Some(address) => {
                next.addresses.insert(id, address);
                Ok(())
            }
            None => Ok(()),
        };
        match change {
            MembershipChange::AddLearner { id, address } => {
                if self.contains(id) {
                    return Err(format!("{id} is already a member"));
                }
                next.learners.insert(id);
                set_address(&mut next, id, address)?;
            }
            MembershipChange::AddVoter { id, address } => {
                if self.is_voter(id) {
                    return Err(format!("{id} is already a voter"));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
                set_address(&mut next, id, address)?;
            }
            MembershipChange::Promote(id) => {
                if !self.learners.contains(&id) {
                    return Err(format!("{id} is not a learner"));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !self.contains(id) {
                    return Err(format!("{id} is not a member"));
                }
                next.voters.remove(&id);
                next.learners.remove(&id);
                next.addresses.remove(&id);
                if next.voters.is_empty() {
                    return Err(format!("removing {id} would leave no voters"));
                }
            }
        }
        Ok(next)
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let voters: Vec<String> = self.voters.iter().map(|id| id.to_string()).collect();
        write!(f, "voters=({})", voters.join(" "))?;
        if !self.learners.is_empty() {
            let learners: Vec<String> = self.learners.iter().map(|id| id.to_string()).collect();
            write!(f, " learners=({})", learners.join(" "))?;
        }
        Ok(())
    }
}

/// A single-server membership change (thesis §4.1): one node at a time. A node added
/// with an address keeps it in the membership until it is removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a node that receives the log but does not vote.
    AddLearner {
        /// The node to add.
        id: NodeId,
        /// Where it can be reached, kept in the membership.
        address: Option<String>,
    },
    /// Add a voter directly (or promote a learner; an address replaces the learner's).
    AddVoter {
        /// The node to add or promote.
        id: NodeId,
        /// Where it can be reached, kept in the membership.
        address: Option<String>,
    },
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

/// The state a node must make durable before it sends messages that depend on it
/// (Raft figure 2, "persistent state on all servers", plus the commit index so a restarted
/// node does not re-apply from scratch when its state machine is durable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom this node voted for in `term`, if anyone.
    pub vote: Option<NodeId>,
    /// The highest index known committed. May lag behind the leader's; never goes back
    /// while the node runs. It is volatile (Raft figure 2): a `Ready` that only moves it is
    /// not synced, so a restart may find it lower and learn the rest from the leader.
    pub commit: Index,
}

/// What a snapshot covers: every entry up to and including `last_log_id`, and the
/// membership in effect at that index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last entry the snapshot covers; the log after compaction starts right after it.
    /// Index 0 for a new cluster's empty snapshot.
    pub last_log_id: LogId,
    /// The membership in effect at `last_log_id.index` (the last membership entry at or
    /// before it, or the initial one), so a node restored from the snapshot knows its
    /// cluster (Raft §7).
    pub membership: Membership,
}

/// A caller-chosen identifier of a read request, echoed back in its [`crate::ReadState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_shows_each_change_once_applied_and_not_before() {
        let address = Some("raft=10.0.0.4:7001".to_string());
        let changes = [
            MembershipChange::AddLearner { id: NodeId(4), address: address.clone() },
            MembershipChange::Promote(NodeId(4)),
            MembershipChange::Remove(NodeId(4)),
            MembershipChange::AddVoter { id: NodeId(5), address: None },
        ];
        let mut membership = Membership::with_voters([NodeId(1)]);
        for change in changes {
            assert!(!membership.shows(&change), "{change:?} before it is applied");
            membership = membership.apply(change.clone()).unwrap();
            assert!(membership.shows(&change), "{change:?} once applied");
        }
        let elsewhere = MembershipChange::AddVoter { id: NodeId(5), address: Some("raft=10.0.0.9:7001".into()) };
        assert!(!membership.shows(&elsewhere), "a member at another address is not that change done");
    }

    #[test]
    fn a_member_keeps_its_address_until_it_is_removed() {
        let start = Membership::with_voters([NodeId(1)]);
        let address = Some("raft=10.0.0.4:7001".to_string());
        let added = start.apply(MembershipChange::AddLearner { id: NodeId(4), address: address.clone() }).unwrap();
        assert_eq!(added.address(NodeId(4)), address.as_deref());
        assert!(added.is_valid());
        let promoted = added.apply(MembershipChange::Promote(NodeId(4))).unwrap();
        assert_eq!(promoted.address(NodeId(4)), address.as_deref(), "promotion keeps the address");
        let removed = promoted.apply(MembershipChange::Remove(NodeId(4))).unwrap();
        assert_eq!(removed.address(NodeId(4)), None);
        assert!(removed.is_valid());
        assert_eq!(removed, start);
    }

    #[test]
    fn an_overlong_address_or_one_of_a_non_member_is_refused() {
        let start = Membership::with_voters([NodeId(1)]);
        let long = Some("x".repeat(Membership::MAX_ADDRESS_BYTES + 1));
        let error = start.apply(MembershipChange::AddVoter { id: NodeId(2), address: long }).unwrap_err();
        assert!(error.contains("longer than"), "{error}");
        let mut stray = start.clone();
        stray.addresses.insert(NodeId(9), "raft=elsewhere:1".into());
        assert!(!stray.is_valid(), "an address of a non-member breaks the invariant");
    }
}
