//! The safety properties of Raft (Raft figure 3), checked against everything every node
//! has ever persisted, committed and applied, across crashes and for the whole run:
//!
//! - **Election Safety**: at most one leader per term (Raft §5.2); and a durable vote never
//!   changes within a term, which is what Election Safety rests on.
//! - **Log Matching**: a global map `(index, term) -> (payload, previous entry's term)` that
//!   every persisted entry must agree with; by induction, two logs that share an entry share
//!   the whole prefix before it (Raft §5.3).
//! - **Leader Completeness**: a new leader's log holds every entry known committed in an
//!   earlier term (§5.4).
//! - **State Machine Safety**: no two nodes apply different entries at one index, and the
//!   state after an index is the same everywhere, snapshots included (§5.4.3).
//! - **Commit monotonicity**: a node's commit never goes back in one incarnation, and a
//!   restarted node's is not below what it had made durable.
//! - **Linearizable reads**: a read is served at an index at least as high as any commit
//!   reached before it was invoked, with the state of exactly that committed prefix.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;

use skiff_raft::{
    AppendResult, Entry, Envelope, HardState, Index, LogId, MemStorage, Message, NodeId, Payload, Raft, RoleName,
    Storage, StorageError, Term, drop_reason,
};

use crate::state_machine::{SnapshotData, StateMachine};

/// A broken property: which one, and what exactly happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: String,
    pub detail: String,
}

impl Violation {
    pub fn new(property: impl Into<String>, detail: impl Into<String>) -> Violation {
        Violation { property: property.into(), detail: detail.into() }
    }
}

pub type Check = Result<(), Violation>;

struct LoggedEntry {
    payload: Payload,
    prev_term: Term,
    node: NodeId,
}

/// An entry known committed.
struct CommittedEntry {
    term: Term,
    /// A term by which it was committed: the lowest term of a node seen holding it as
    /// committed. A node learns of a commit in the committing leader's term or later, so
    /// this is never below the true one. Leader Completeness binds only leaders of later
    /// terms: a vote granted long ago can still make a leader of an old term today.
    committed_by: Term,
}

struct AppliedEntry {
    log_id: LogId,
    /// The state machine's hash after applying it.
    hash: u64,
    node: NodeId,
}

/// What the checker remembers of one node.
#[derive(Default)]
struct NodeView {
    /// The commit index last observed in this incarnation.
    commit_seen: Index,
    /// The term this node was last seen leading.
    leader_term: Option<Term>,
    /// The hard state it last made durable.
    durable: HardState,
}

#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    logged: BTreeMap<(Index, Term), LoggedEntry>,
    committed: BTreeMap<Index, CommittedEntry>,
    max_commit: Index,
    applied: BTreeMap<Index, AppliedEntry>,
    views: BTreeMap<NodeId, NodeView>,
    commands_applied: u64,
    memberships_applied: u64,
}

impl Checker {
    /// The highest commit index any node has reached so far.
    pub fn max_commit(&self) -> Index {
        self.max_commit
    }

    /// How many terms had a leader.
    pub fn elections(&self) -> u64 {
        self.leaders.len() as u64
    }

    /// Distinct commands and membership changes applied.
    pub fn applied_counts(&self) -> (u64, u64) {
        (self.commands_applied, self.memberships_applied)
    }

    /// The entry applied at `index`, if any node applied one.
    pub fn applied_log_id(&self, index: Index) -> Option<LogId> {
        self.applied.get(&index).map(|applied| applied.log_id)
    }

    /// `node` made `entries` and its hard state durable (one `sync`).
    pub fn on_persisted(&mut self, node: NodeId, storage: &MemStorage, entries: &[Entry]) -> Check {
        for entry in entries {
            let prev_term = storage.term(entry.index().prev()).map_err(|error| {
                Violation::new("Driver", format!("{node}: no term before persisted entry {}: {error}", entry.log_id))
            })?;
            match self.logged.entry((entry.index(), entry.term())) {
                MapEntry::Vacant(vacant) => {
                    vacant.insert(LoggedEntry { payload: entry.payload.clone(), prev_term, node });
                }
                MapEntry::Occupied(known) => {
                    let known = known.get();
                    if known.payload != entry.payload || known.prev_term != prev_term {
                        let detail = format!(
                            "{node} persisted {} ({:?}, previous term {prev_term}) but {} persisted {} ({:?}, previous term {})",
                            entry.log_id, entry.payload, known.node, entry.log_id, known.payload, known.prev_term
                        );
                        return Err(Violation::new("Log Matching", detail));
                    }
                }
            }
        }
        self.check_durable(node, storage.hard_state())
    }

    /// A message may leave only once what it promises is durable (the `Ready` contract):
    /// its term, a granted vote, the entries an acknowledgement claims.
    pub fn on_send(&self, storage: &MemStorage, envelope: &Envelope) -> Check {
        // What a crash right now would leave, not what is merely written.
        let durable = storage.durable_hard_state();
        let durable_last = storage.durable_last_log_id();
        let node = envelope.from;
        let future_term = matches!(
            envelope.message,
            Message::RequestVote { pre_vote: true, .. }
                | Message::RequestVoteResponse { pre_vote: true, granted: true }
        );
        let problem = match envelope.message {
            _ if !future_term && envelope.term > durable.term => Some(format!("its durable term is {}", durable.term)),
            Message::RequestVoteResponse { granted: true, pre_vote: false }
                if durable.term != envelope.term || durable.vote != Some(envelope.to) =>
            {
                Some(format!("its durable vote is {:?} in term {}", durable.vote, durable.term))
            }
            Message::AppendEntriesResponse(AppendResult::Success { match_index })
                if match_index > durable_last.index =>
            {
                Some(format!("its durable log ends at {}", durable_last.index))
            }
            _ => None,
        };
        match problem {
            None => Ok(()),
            Some(problem) => {
                let detail = format!("{node} sent {} in term {} but {problem}", envelope.message.kind(), envelope.term);
                Err(Violation::new("Durability before send", detail))
            }
        }
    }

    fn check_durable(&mut self, node: NodeId, hard_state: HardState) -> Check {
        let view = self.views.entry(node).or_default();
        let old = view.durable;
        if hard_state.term < old.term {
            return Err(Violation::new(
                "Durable term",
                format!("{node}: durable term went back from {} to {}", old.term, hard_state.term),
            ));
        }
        if hard_state.term == old.term && old.vote.is_some() && hard_state.vote != old.vote {
            let detail =
                format!("{node} durably voted for {:?} and then {:?} in term {}", old.vote, hard_state.vote, old.term);
            return Err(Violation::new("Election Safety (one vote per term)", detail));
        }
        if hard_state.commit < old.commit {
            let detail = format!("{node}: durable commit went back from {} to {}", old.commit, hard_state.commit);
            return Err(Violation::new("Commit monotonicity", detail));
        }
        view.durable = hard_state;
        Ok(())
    }

    /// `node` restarted from its store: its commit must not be below what it made durable.
    pub fn on_restart(&mut self, node: NodeId, raft: &Raft<MemStorage>) -> Check {
        let view = self.views.entry(node).or_default();
        if raft.commit_index() < view.durable.commit || raft.term() < view.durable.term {
            let detail = format!(
                "{node} restarted at term {} commit {}, below its durable term {} commit {}",
                raft.term(),
                raft.commit_index(),
                view.durable.term,
                view.durable.commit
            );
            return Err(Violation::new("Commit monotonicity", detail));
        }
        // Re-read its whole committed log: a crash in the middle of a Ready may have hidden
        // commits the checker never saw.
        view.commit_seen = raft.storage().snapshot_meta().last_log_id.index;
        view.leader_term = None;
        Ok(())
    }

    /// After every event, for every running node: commits, and leadership.
    /// Returns the term when `node` just became leader.
    pub fn observe(&mut self, node: NodeId, raft: &Raft<MemStorage>) -> Result<Option<Term>, Violation> {
        self.observe_commit(node, raft)?;
        // Every node here is correct: a message refused as only a faulty peer could send it
        // means a validation at `step` that refuses correct traffic.
        let dropped = raft.dropped_messages();
        if let Some(reason) = drop_reason::ONLY_FROM_A_FAULTY_PEER.iter().find(|reason| dropped.contains_key(*reason)) {
            let detail = format!("{node} dropped a correct node's message as {reason:?}");
            return Err(Violation::new("Input validation (correct messages accepted)", detail));
        }
        if raft.role() != RoleName::Leader {
            return Ok(None);
        }
        let term = raft.term();
        match self.leaders.entry(term) {
            MapEntry::Vacant(vacant) => {
                vacant.insert(node);
            }
            MapEntry::Occupied(known) if *known.get() != node => {
                let detail = format!("{} and {node} were both leader of term {term}", known.get());
                return Err(Violation::new("Election Safety", detail));
            }
            MapEntry::Occupied(_) => {}
        }
        let view = self.views.entry(node).or_default();
        if view.leader_term == Some(term) {
            return Ok(None);
        }
        view.leader_term = Some(term);
        self.check_leader_completeness(node, raft)?;
        Ok(Some(term))
    }

    /// Records the entries `node` now says are committed; they must agree with every other
    /// node's, and its commit must not go back.
    fn observe_commit(&mut self, node: NodeId, raft: &Raft<MemStorage>) -> Check {
        let commit = raft.commit_index();
        let view = self.views.entry(node).or_default();
        if commit < view.commit_seen {
            let detail = format!("{node}: commit went back from {} to {commit}", view.commit_seen);
            return Err(Violation::new("Commit monotonicity", detail));
        }
        let from = view.commit_seen.next();
        // Raft §5.4.2: a leader moves its commit index only onto an entry of its own term.
        if commit > view.commit_seen && raft.role() == RoleName::Leader && view.leader_term == Some(raft.term()) {
            match raft.storage().term(commit) {
                Ok(term) if term == raft.term() => {}
                found => {
                    let detail = format!(
                        "{node}, leader of term {}, advanced its commit to {commit} holding {found:?}",
                        raft.term()
                    );
                    return Err(Violation::new("Commit rule (current term only)", detail));
                }
            }
        }
        view.commit_seen = commit;
        self.max_commit = self.max_commit.max(commit);
        let storage = raft.storage();
        for index in (from.0..=commit.0).map(Index) {
            let term = match storage.term(index) {
                Ok(term) => term,
                Err(StorageError::Compacted(_)) => continue,
                Err(error) => {
                    let detail = format!("{node}: commit {commit} but its log has no entry {index}: {error}");
                    return Err(Violation::new("Commit beyond the log", detail));
                }
            };
            let committed_by = raft.term();
            match self.committed.entry(index) {
                MapEntry::Vacant(vacant) => {
                    vacant.insert(CommittedEntry { term, committed_by });
                }
                MapEntry::Occupied(known) if known.get().term != term => {
                    let known = known.get().term;
                    let detail = format!("{node} committed {index}@{term}, but {index}@{known} was committed before");
                    return Err(Violation::new("State Machine Safety (committed entry changed)", detail));
                }
                MapEntry::Occupied(mut known) => {
                    let known = known.get_mut();
                    known.committed_by = known.committed_by.min(committed_by);
                }
            }
        }
        Ok(())
    }

    fn check_leader_completeness(&self, node: NodeId, raft: &Raft<MemStorage>) -> Check {
        let storage = raft.storage();
        let snapshot_index = storage.snapshot_meta().last_log_id.index;
        let leader_term = raft.term();
        let binding = self.committed.range(snapshot_index..).filter(|(_, entry)| entry.committed_by < leader_term);
        for (&index, &CommittedEntry { term, .. }) in binding {
            match storage.term(index) {
                Ok(found) if found == term => {}
                found => {
                    let detail = format!(
                        "{node} became leader of term {} without committed entry {index}@{term} (its log: {found:?}, last {})",
                        raft.term(),
                        storage.last_index()
                    );
                    return Err(Violation::new("Leader Completeness", detail));
                }
            }
        }
        Ok(())
    }

    /// `node` applied `entry`, and its state machine is now `state`.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry, state: &StateMachine) -> Check {
        let index = entry.index();
        if let Some(&CommittedEntry { term, .. }) = self.committed.get(&index)
            && term != entry.term()
        {
            let detail = format!("{node} applied {} but {index}@{term} is committed", entry.log_id);
            return Err(Violation::new("State Machine Safety", detail));
        }
        if let Some(logged) = self.logged.get(&(index, entry.term()))
            && logged.payload != entry.payload
        {
            let detail = format!("{node} applied {} with a payload no node persisted", entry.log_id);
            return Err(Violation::new("Log Matching (applied)", detail));
        }
        match self.applied.entry(index) {
            MapEntry::Vacant(vacant) => {
                vacant.insert(AppliedEntry { log_id: entry.log_id, hash: state.hash, node });
                match entry.payload {
                    Payload::Command(_) => self.commands_applied += 1,
                    Payload::Membership(_) => self.memberships_applied += 1,
                    Payload::Empty => {}
                }
                Ok(())
            }
            MapEntry::Occupied(known) => compare_applied(node, entry.log_id, state.hash, known.get()),
        }
    }

    /// `node` restored its state machine from a snapshot it received.
    pub fn on_restore(&mut self, node: NodeId, data: &SnapshotData) -> Check {
        let log_id = data.last_log_id;
        if data.state.applied != log_id.index {
            let detail = format!("{node}: snapshot {log_id} holds a state applied to {}", data.state.applied);
            return Err(Violation::new("Snapshot", detail));
        }
        if let Some(&CommittedEntry { term, .. }) = self.committed.get(&log_id.index)
            && term != log_id.term
        {
            let detail = format!("{node} restored snapshot {log_id} but {}@{term} is committed", log_id.index);
            return Err(Violation::new("State Machine Safety (snapshot)", detail));
        }
        match self.applied.get(&log_id.index) {
            Some(known) => compare_applied(node, log_id, data.state.hash, known),
            None => {
                self.applied.insert(log_id.index, AppliedEntry { log_id, hash: data.state.hash, node });
                Ok(())
            }
        }
    }

    /// `node` serves read `read` at `read_index` with state machine `state`.
    pub fn on_read(&self, node: NodeId, read: u64, read_index: Index, bound: Index, state: &StateMachine) -> Check {
        if read_index < bound {
            let detail = format!(
                "read r{read} on {node} was served at index {read_index}, but index {bound} was already committed when it was invoked"
            );
            return Err(Violation::new("Linearizability (stale read)", detail));
        }
        if state.applied < read_index {
            let detail = format!("read r{read} on {node} served at {} before reaching {read_index}", state.applied);
            return Err(Violation::new("Driver (read before apply)", detail));
        }
        let canonical = if state.applied == Index(0) {
            Some(StateMachine::default().hash)
        } else {
            self.applied.get(&state.applied).map(|applied| applied.hash)
        };
        if canonical != Some(state.hash) {
            let detail = format!("read r{read} on {node} saw a state at {} unlike the committed prefix", state.applied);
            return Err(Violation::new("Linearizability (wrong value)", detail));
        }
        Ok(())
    }
}

fn compare_applied(node: NodeId, log_id: LogId, hash: u64, known: &AppliedEntry) -> Check {
    if known.log_id != log_id {
        let detail = format!("{node} applied {log_id} but {} applied {} at the same index", known.node, known.log_id);
        return Err(Violation::new("State Machine Safety", detail));
    }
    if known.hash != hash {
        let detail = format!("{node}'s state after {log_id} differs from {}'s", known.node);
        return Err(Violation::new("State Machine Safety (state diverged)", detail));
    }
    Ok(())
}
