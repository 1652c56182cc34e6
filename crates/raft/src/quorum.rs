//! Majority arithmetic, as small pure functions.

use std::collections::BTreeSet;

use crate::types::NodeId;

/// How many voters make a majority of `voter_count` (Raft §5.2). Zero voters need zero.
pub fn majority(voter_count: usize) -> usize {
    if voter_count == 0 { 0 } else { voter_count / 2 + 1 }
}

/// The highest value that a majority of `voters` has reached, where `value_of` gives each
/// voter's value (a match index, an acknowledged heartbeat round). With no voters, `None`.
pub fn quorum_value<T: Ord + Copy>(voters: &BTreeSet<NodeId>, value_of: impl Fn(NodeId) -> T) -> Option<T> {
    let mut values: Vec<T> = voters.iter().map(|&id| value_of(id)).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    Some(values[majority(values.len()) - 1])
}

/// The outcome of a vote so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies `granted` and `rejected` votes among `voters` (votes from non-voters don't count).
pub fn vote_result(voters: &BTreeSet<NodeId>, granted: &BTreeSet<NodeId>, rejected: &BTreeSet<NodeId>) -> VoteResult {
    let needed = majority(voters.len());
    let yes = voters.intersection(granted).count();
    let no = voters.intersection(rejected).count();
    if yes >= needed {
        VoteResult::Won
    } else if voters.len() - no < needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|&id| NodeId(id)).collect()
    }

    #[test]
    fn majority_sizes() {
        assert_eq!([0, 1, 2, 3, 4, 5, 6].map(majority), [0, 1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn quorum_value_is_the_majority_th_highest() {
        let voters = ids(&[1, 2, 3, 4, 5]);
        let matched = [0, 9, 3, 7, 5, 1];
        assert_eq!(quorum_value(&voters, |id| matched[id.0 as usize]), Some(5));
        let voters = ids(&[1, 2, 3, 4]);
        assert_eq!(quorum_value(&voters, |id| matched[id.0 as usize]), Some(5), "three of four hold 5");
        assert_eq!(quorum_value(&ids(&[]), |id| id.0), None);
    }

    #[test]
    fn votes_are_won_lost_or_pending() {
        let voters = ids(&[1, 2, 3]);
        assert_eq!(vote_result(&voters, &ids(&[1]), &ids(&[])), VoteResult::Pending);
        assert_eq!(vote_result(&voters, &ids(&[1, 3]), &ids(&[])), VoteResult::Won);
        assert_eq!(vote_result(&voters, &ids(&[1]), &ids(&[2, 3])), VoteResult::Lost);
        assert_eq!(
            vote_result(&voters, &ids(&[1, 9]), &ids(&[])),
            VoteResult::Pending,
            "a non-voter's vote counts for nothing"
        );
    }
}
