//! The follower's side of replication: appending, committing, installing snapshots
//! (Raft §5.3, §7).

use crate::message::{AppendResult, Message};
use crate::raft::Raft;
use crate::ready::Error;
use crate::storage::Storage;
use crate::types::{Entry, Index, LogId, NodeId, SnapshotMeta, Term};

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
        if !Self::valid_entries(prev_log_id, &entries, self.shared.term) {
            self.shared.drop_message("AppendEntries with entries that don't follow prev_log_id");
            return Ok(());
        }
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

    /// Remote input is validated, not trusted: the entries must follow `prev_log_id` without
    /// gaps, with terms that never decrease and never exceed the sender's term.
    fn valid_entries(prev_log_id: LogId, entries: &[Entry], term: Term) -> bool {
        let mut previous = prev_log_id;
        for entry in entries {
            if entry.index() != previous.index.next() || entry.term() < previous.term || entry.term() > term {
                return false;
            }
            previous = entry.log_id;
        }
        true
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
    pub(crate) fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        term: Term,
        meta: SnapshotMeta,
    ) -> Result<(), Error> {
        let snapshot = meta.last_log_id;
        // Not checked: that the snapshot's membership holds the sender. A leader added
        // after the snapshot's index is legitimately absent from it.
        if snapshot.term > term || snapshot.index == Index(0) {
            self.shared.drop_message("InstallSnapshot with impossible metadata");
            return Ok(());
        }
        let commit = self.shared.log.commit_index();
        let match_index = if snapshot.index <= commit {
            commit
        } else if self.shared.log.matches(snapshot)? {
            // Our log already holds it: just commit (thesis §5.3, keep the entries after it).
            self.shared.log.commit_to(snapshot.index);
            snapshot.index
        } else {
            self.shared.memberships.reset(snapshot.index, meta.membership.clone());
            self.shared.log.restore(meta);
            snapshot.index
        };
        self.shared.send(leader, Message::AppendEntriesResponse(AppendResult::Success { match_index }));
        Ok(())
    }
}
