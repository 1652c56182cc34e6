//! The memberships in the log: which one is in effect, which one is committed.
//!
//! A membership takes effect on a node as soon as its entry is appended to that node's log,
//! committed or not (thesis §4.1). So when a conflicting tail is truncated, the membership
//! goes back to the one before it. This history keeps the snapshot's membership and every
//! membership entry after it.
//!
//! Its asserts are invariants that only a bug in the core can break: indexes come from our
//! own log, whose entries `step` checked to be contiguous before they were appended.

use crate::types::{Index, Membership};

#[derive(Clone, Debug)]
pub struct MembershipHistory {
    /// `(index, membership)` in increasing index order; never empty. The first is the
    /// snapshot's (or the initial) membership.
    entries: Vec<(Index, Membership)>,
}

impl MembershipHistory {
    pub fn new(index: Index, membership: Membership) -> MembershipHistory {
        MembershipHistory { entries: vec![(index, membership)] }
    }

    /// The membership in effect: the latest in the log.
    pub fn active(&self) -> &Membership {
        &self.last().1
    }

    /// The index of the entry that holds the active membership.
    pub fn active_index(&self) -> Index {
        self.last().0
    }

    /// The membership in effect at `index` (the latest at or below it).
    pub fn at(&self, index: Index) -> &Membership {
        let position = self.entries.partition_point(|(at, _)| *at <= index);
        assert!(position > 0, "membership at {index} is older than the history");
        &self.entries[position - 1].1
    }

    /// A membership entry was appended at `index`.
    pub fn push(&mut self, index: Index, membership: Membership) {
        assert!(index > self.active_index(), "membership entries must come in log order");
        self.entries.push((index, membership));
    }

    /// The log was cut from `index` on: forget memberships appended there.
    pub fn truncate(&mut self, index: Index) {
        while self.entries.len() > 1 && self.last().0 >= index {
            self.entries.pop();
        }
        assert!(self.entries[0].0 < index, "truncating the base membership");
    }

    /// Entries up to `index` were compacted: keep only what is in effect from there on.
    pub fn compact(&mut self, index: Index) {
        let position = self.entries.partition_point(|(at, _)| *at <= index);
        self.entries.drain(..position.saturating_sub(1));
    }

    /// The log was replaced by a snapshot at `index`.
    pub fn reset(&mut self, index: Index, membership: Membership) {
        self.entries = vec![(index, membership)];
    }

    fn last(&self) -> &(Index, Membership) {
        self.entries.last().expect("the membership history is never empty")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    #[test]
    fn truncation_reverts_to_the_previous_membership() {
        let one = Membership::with_voters([NodeId(1)]);
        let two = Membership::with_voters([NodeId(1), NodeId(2)]);
        let mut history = MembershipHistory::new(Index(0), one.clone());
        history.push(Index(5), two.clone());
        assert_eq!(history.active(), &two);
        assert_eq!(history.at(Index(4)), &one);
        history.truncate(Index(5));
        assert_eq!(history.active(), &one);
        history.push(Index(6), two.clone());
        history.compact(Index(7));
        assert_eq!(history.at(Index(7)), &two);
    }
}
