//! The follower's side of replication: appending, committing, installing snapshots
//! (Raft §5.3, §7).

use crate::message::{AppendResult, Message};
use crate::raft::Raft;
use crate::ready::Error;
use crate::storage::Storage;
use crate::types::{Entry, Index, LogId, NodeId, SnapshotMeta};

impl<S: Storage> Raft<S> {
    /// Raft §5.3: accept the entries if our log holds `prev_log_id`; cut any conflicting tail
    /// and append what is new; then commit up to what the leader committed, as far as the
    /// entries we now know match.
    pub(crate) fn handle_append_entries(
        &mut self,
        leader: NodeId,
        prev_log_id: LogId,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) -> Result<(), Error> {
        // `Envelope::check` made sure the entries follow `prev_log_id` one index at a time,
        // with terms that never go back nor exceed the sender's (our) term, and that every
        // index is far from overflow.
        let commit = self.shared.log.commit_index();
        if prev_log_id.index < commit {
            // Everything up to our commit matches already; tell the leader where we are.
            let success = AppendResult::Success { match_index: commit };
            self.shared.send(leader, Message::AppendEntriesResponse(success));
            return Ok(());
        }
        if !self.shared.log.matches(prev_log_id)? {
            let hint = self.reject_hint(prev_log_id)?;
            let rejection = AppendResult::Reject { rejected_prev: prev_log_id.index, hint };
            self.shared.send(leader, Message::AppendEntriesResponse(rejection));
            return Ok(());
        }
        // No overflow: the entries run one index at a time from `prev_log_id`, and each index
        // is at most `Index::MAX_ACCEPTED` (checked in `step`).
        let last_new = Index(prev_log_id.index.0 + entries.len() as u64);
        // Skip the entries we already hold; the first one that differs starts the new tail.
        let mut new_from = entries.len();
        for (position, entry) in entries.iter().enumerate() {
            if !self.shared.log.matches(entry.log_id)? {
                new_from = position;
                break;
            }
        }
        let new_entries: Vec<Entry> = entries.into_iter().skip(new_from).collect();
        if let Some(first) = new_entries.first() {
            // Invariant: only our own bug can break this, because the entries start at
            // `prev_log_id.index + 1` (checked in `step`) and `prev_log_id.index >= commit`
            // (checked above).
            assert!(first.index() > commit, "the leader conflicts with committed entry {}", first.index());
            if first.index() <= self.shared.log.last_index() {
                self.shared.memberships.truncate(first.index());
            }
            self.shared.track_membership(&new_entries);
            self.shared.log.append(new_entries);
        }
        self.shared.log.commit_to(leader_commit.min(last_new));
        let success = AppendResult::Success { match_index: last_new };
        self.shared.send(leader, Message::AppendEntriesResponse(success));
        Ok(())
    }

    /// The last entry at or below `rejected.index` whose term is at most `rejected.term`:
    /// every entry after it is either missing here or from a term the leader doesn't have
    /// at that position, so the leader may skip past them all at once.
    fn reject_hint(&self, rejected: LogId) -> Result<LogId, Error> {
        let log = &self.shared.log;
        let mut index = rejected.index.min(log.last_index());
        let floor = log.commit_index();
        loop {
            let term = log.term(index)?;
            if term <= rejected.term || index <= floor {
                return Ok(LogId::new(term, index));
            }
            index = index.prev();
        }
    }

    /// A heartbeat: the leader is alive (the caller reset our timer); commit as far as the
    /// leader says we match, and acknowledge the round.
    pub(crate) fn handle_heartbeat(&mut self, leader: NodeId, commit: Index, heartbeat_round: u64) {
        let last_index = self.shared.log.last_index();
        self.shared.log.commit_to(commit.min(last_index));
        self.shared.send(leader, Message::HeartbeatResponse { heartbeat_round });
    }

    /// Raft §7: install a snapshot unless our log already holds its last entry; either way,
    /// tell the leader how far we now match.
    pub(crate) fn handle_install_snapshot(&mut self, leader: NodeId, meta: SnapshotMeta) -> Result<(), Error> {
        let snapshot = meta.last_log_id;
        // `Envelope::check` refused a snapshot at index 0, of a term above the sender's, with
        // an index close to overflow, or with a membership both voter and learner. Not
        // checked: that the snapshot's membership holds the sender. A leader added after the
        // snapshot's index is legitimately absent from it.
        let commit = self.shared.log.commit_index();
        let match_index = if snapshot.index <= commit {
            commit
        } else if self.shared.log.matches(snapshot)? {
            // Our log already holds it: just commit (thesis §5.3, keep the entries after it).
            self.shared.log.commit_to(snapshot.index);
            snapshot.index
        } else {
            // `log.restore` asserts the snapshot is above our commit: checked just above.
            self.shared.memberships.reset(snapshot.index, meta.membership.clone());
            self.shared.log.restore(meta);
            snapshot.index
        };
        self.shared.send(leader, Message::AppendEntriesResponse(AppendResult::Success { match_index }));
        Ok(())
    }
}
