//! The leader: per-follower progress, pipelined replication, commit, ReadIndex, leases,
//! leader transfer and check-quorum (Raft §5.3-5.4, thesis §3.10, §6.2, §6.4).

use std::collections::{BTreeMap, VecDeque};

use crate::message::{AppendResult, Message};
use crate::progress::{Progress, ProgressState};
use crate::quorum::{majority, quorum_value};
use crate::raft::Shared;
use crate::ready::{Error, ReadState};
use crate::storage::{Storage, StorageError};
use crate::types::{Entry, Index, LogId, MembershipChange, NodeId, Payload, ReadId};

/// Leader state. Invariants: `progress` has an entry for every member and for this node
/// (whose `match_index` is what it has made durable); `reads` are in increasing `round`.
pub(crate) struct Leader {
    /// Each member's replication progress, and this node's own (its durable log).
    pub progress: BTreeMap<NodeId, Progress>,
    /// Ticks since the last heartbeat round; a round goes out at the heartbeat interval.
    heartbeat_elapsed_ticks: u32,
    /// Ticks since the last check-quorum round (thesis §6.2); one every election timeout.
    check_quorum_elapsed_ticks: u32,
    /// The index of this term's first entry; nothing of this term is committed before it.
    term_start: Index,
    /// Entries not yet committed and their sizes, to bound memory (oldest first).
    uncommitted: VecDeque<(Index, u64)>,
    /// The sum of the sizes in `uncommitted`, held under `Config::max_uncommitted_bytes`.
    uncommitted_bytes: u64,
    /// New entries to send at the next flush (everything between two `Ready`s is one batch).
    entries_to_send: bool,
    /// The commit index moved: tell followers at the next flush.
    commit_to_send: bool,
    /// The last heartbeat round sent.
    heartbeat_round: u64,
    /// A read waits for a heartbeat round: send one at the next flush, or, while another
    /// round some reads wait on is in flight, once that one is acknowledged
    /// ([`Leader::round_in_flight`]).
    round_requested: bool,
    /// The tick at which each recent heartbeat round was sent, for leases.
    round_sent_ticks: BTreeMap<u64, u64>,
    /// Reads waiting for a quorum to acknowledge round `round` (thesis §6.4 step 3).
    reads: VecDeque<PendingRead>,
    /// Reads that came before this term's first entry committed (thesis §6.4 step 1).
    reads_before_term_commit: Vec<(ReadId, Option<NodeId>)>,
    /// The leader transfer under way, if any (thesis §3.10); no proposals meanwhile.
    transfer: Option<Transfer>,
    /// A transfer was attempted this term. Its `TimeoutNow` (even a late one) lets the
    /// target campaign past the followers' leases, so our lease no longer proves anything:
    /// serve every read through a heartbeat round from then on.
    lease_revoked: bool,
}

/// A read waiting for a quorum to acknowledge a heartbeat round (thesis §6.4).
struct PendingRead {
    /// The request, as its driver named it.
    id: ReadId,
    /// The follower that asked, or `None` for this node's own driver.
    from: Option<NodeId>,
    /// The commit index when the read arrived.
    index: Index,
    /// The first heartbeat round sent after the read arrived; once a quorum acknowledges
    /// it, we were still leader when the read arrived, and `index` is served.
    round: u64,
}

/// A leader transfer under way (thesis §3.10).
struct Transfer {
    /// The voter that is to take over; it gets a `TimeoutNow` once it holds our whole log.
    target: NodeId,
    /// Ticks since the transfer began; after an election timeout it is abandoned.
    elapsed_ticks: u32,
}

impl Leader {
    /// Takes office: every follower is probed from the end of our log, and an empty entry of
    /// the new term is appended (Raft §5.4.2: it commits the entries of earlier terms).
    pub fn new<S: Storage>(shared: &mut Shared<S>) -> Result<Leader, Error> {
        let last_index = shared.log.last_index();
        let mut leader = Leader {
            progress: BTreeMap::new(),
            heartbeat_elapsed_ticks: 0,
            check_quorum_elapsed_ticks: 0,
            term_start: last_index.next(),
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            entries_to_send: false,
            commit_to_send: false,
            heartbeat_round: 0,
            round_requested: false,
            round_sent_ticks: BTreeMap::new(),
            reads: VecDeque::new(),
            reads_before_term_commit: Vec::new(),
            transfer: None,
            lease_revoked: false,
        };
        leader.sync_progress(shared, last_index.next());
        let own = leader.progress.get_mut(&shared.id).expect("the leader tracks itself");
        own.matched(shared.log.persisted_index());
        leader.append(shared, Payload::Empty)?;
        Ok(leader)
    }

    /// Keeps one progress per member (plus ourselves), after a membership change. A new
    /// member is probed from `probe_from`, so the first flush sends it something.
    fn sync_progress<S: Storage>(&mut self, shared: &Shared<S>, probe_from: Index) {
        let membership = shared.membership();
        let last_index = probe_from.prev();
        self.progress.retain(|&id, _| id == shared.id || membership.contains(id));
        for id in membership.members().chain([shared.id]) {
            self.progress.entry(id).or_insert_with(|| Progress::new(last_index));
        }
        if let Some(transfer) = &self.transfer
            && !membership.is_voter(transfer.target)
        {
            self.transfer = None;
        }
    }

    /// Refuses a proposal of `bytes` while a leader transfer is under way (thesis §3.10) or
    /// when it would take the uncommitted entries past `Config::max_uncommitted_bytes`. With
    /// nothing uncommitted any proposal passes, so one large command is never refused
    /// forever.
    pub fn refuse_proposal_if_busy<S: Storage>(&self, shared: &Shared<S>, bytes: u64) -> Result<(), Error> {
        if let Some(transfer) = &self.transfer {
            return Err(Error::TransferInProgress { target: transfer.target });
        }
        let limit = shared.config.max_uncommitted_bytes;
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + bytes > limit {
            return Err(Error::TooManyUncommitted { uncommitted_bytes: self.uncommitted_bytes, limit_bytes: limit });
        }
        Ok(())
    }

    /// Appends an entry of our term to our log; it goes out with the next flush.
    pub fn append<S: Storage>(&mut self, shared: &mut Shared<S>, payload: Payload) -> Result<LogId, Error> {
        let log_id = LogId::new(shared.term, shared.log.last_index().next());
        let changes_membership = matches!(payload, Payload::Membership(_));
        let entry = Entry { log_id, payload };
        let bytes = entry.size_bytes();
        shared.track_membership(std::slice::from_ref(&entry));
        shared.log.append(vec![entry]);
        self.uncommitted.push_back((log_id.index, bytes));
        self.uncommitted_bytes += bytes;
        self.entries_to_send = true;
        if changes_membership {
            self.sync_progress(shared, log_id.index);
        }
        Ok(log_id)
    }

    pub fn propose_membership<S: Storage>(
        &mut self,
        shared: &mut Shared<S>,
        change: MembershipChange,
    ) -> Result<LogId, Error> {
        let commit = shared.log.commit_index();
        if commit < self.term_start {
            return Err(Error::LeaderNotReady { term: shared.term });
        }
        let pending = shared.memberships.active_index();
        if pending > commit {
            return Err(Error::MembershipChangePending { index: pending });
        }
        let membership = shared.membership().apply(change).map_err(Error::InvalidMembershipChange)?;
        self.append(shared, Payload::Membership(membership))
    }

    /// Sends what accumulated since the last `Ready`: new entries (one batch per follower),
    /// the new commit index, and a heartbeat round if reads wait for one.
    pub fn flush<S: Storage>(&mut self, shared: &mut Shared<S>) -> Result<(), Error> {
        if self.entries_to_send || self.commit_to_send {
            let send_empty = self.commit_to_send;
            for peer in self.peers(shared) {
                self.send_append(shared, peer, send_empty)?;
            }
            self.entries_to_send = false;
            self.commit_to_send = false;
        }
        if self.round_requested && !self.round_in_flight() {
            self.broadcast_heartbeat(shared);
        }
        Ok(())
    }

    pub fn has_pending_flush(&self) -> bool {
        self.entries_to_send || self.commit_to_send || (self.round_requested && !self.round_in_flight())
    }

    /// Whether reads wait on a heartbeat round already sent. New reads then wait for the
    /// next round, sent once a quorum acknowledged this one (or at the next heartbeat
    /// interval, if its answers were lost): one round in flight, however many reads, as
    /// etcd does, rather than one round per `Ready` under load. A read that arrives while
    /// no round is in flight starts one at once. Safety is unchanged: a read still waits for
    /// a round sent after it arrived (thesis §6.4).
    fn round_in_flight(&self) -> bool {
        self.reads.front().is_some_and(|read| read.round <= self.heartbeat_round)
    }

    fn peers<S: Storage>(&self, shared: &Shared<S>) -> Vec<NodeId> {
        self.progress.keys().copied().filter(|&id| id != shared.id).collect()
    }

    /// Sends `peer` the next batch if flow control allows: as many batches as fit in the
    /// pipeline when replicating, one probe at a time otherwise. With `send_empty`, sends
    /// even when there is nothing new (to carry the commit index or probe).
    fn send_append<S: Storage>(&mut self, shared: &mut Shared<S>, peer: NodeId, send_empty: bool) -> Result<(), Error> {
        let mut send_empty = send_empty;
        loop {
            let config = &shared.config;
            let Some(progress) = self.progress.get_mut(&peer) else { return Ok(()) };
            if !progress.can_send(config.max_inflight, config.max_inflight_bytes) {
                return Ok(());
            }
            let last_index = shared.log.last_index();
            let next = progress.next_index;
            if next > last_index && !send_empty {
                return Ok(());
            }
            let prev_log_id = match shared.log.term(next.prev()) {
                Ok(term) => LogId::new(term, next.prev()),
                Err(StorageError::Compacted(_)) => return self.send_snapshot(shared, peer),
                Err(error) => return Err(error.into()),
            };
            let entries = match shared.log.entries(next, last_index.next(), config.max_append_bytes) {
                Ok(entries) => entries,
                Err(StorageError::Compacted(_)) => return self.send_snapshot(shared, peer),
                Err(error) => return Err(error.into()),
            };
            let bytes = entries.iter().map(Entry::size_bytes).sum();
            let last_sent = entries.last().map_or(prev_log_id.index, Entry::index);
            progress.sent(last_sent, bytes);
            let leader_commit = shared.log.commit_index();
            shared.send(peer, Message::AppendEntries { prev_log_id, entries, leader_commit });
            if last_sent >= last_index {
                return Ok(());
            }
            send_empty = false;
        }
    }

    /// The entries `peer` needs are compacted: ask the runtime to stream our snapshot.
    fn send_snapshot<S: Storage>(&mut self, shared: &mut Shared<S>, peer: NodeId) -> Result<(), Error> {
        let meta = shared.log.storage.snapshot_meta();
        let progress = self.progress.get_mut(&peer).expect("caller checked");
        progress.become_snapshot(meta.last_log_id.index);
        shared.send(peer, Message::InstallSnapshot { meta });
        Ok(())
    }

    /// The runtime finished streaming our snapshot to `peer` (Raft §7, thesis §5.1).
    ///
    /// The rule: a delivered snapshot is the follower's log up to the snapshot index, so we
    /// probe from after it at once (its `AppendEntriesResponse` confirms the match). A
    /// failed stream left the follower with nothing new: we probe from after its known
    /// match, which is compacted, so the next probe resends the snapshot directly instead of
    /// first probing past it and waiting for a rejection. That probe waits (paused) for a
    /// sign of life from the follower, its next heartbeat answer, so an unreachable follower
    /// is not sent snapshot after snapshot in a loop.
    pub fn report_snapshot(&mut self, peer: NodeId, delivered: bool) {
        let Some(progress) = self.progress.get_mut(&peer) else { return };
        if !matches!(progress.state, ProgressState::Snapshot { .. }) {
            return;
        }
        if delivered {
            progress.become_probe();
            self.entries_to_send = true;
        } else {
            progress.snapshot_failed();
        }
    }

    pub fn handle_append_response<S: Storage>(
        &mut self,
        shared: &mut Shared<S>,
        from: NodeId,
        result: AppendResult,
    ) -> Result<(), Error> {
        let last_index = shared.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            shared.drop_message("AppendEntriesResponse from a non-member");
            return Ok(());
        };
        progress.recent_active = true;
        match result {
            AppendResult::Success { match_index } => {
                if match_index > last_index {
                    shared.drop_message("AppendEntriesResponse matching past our log");
                    return Ok(());
                }
                if progress.matched(match_index) {
                    self.maybe_commit(shared)?;
                }
                self.maybe_send_timeout_now(shared, from);
                self.send_append(shared, from, false)
            }
            AppendResult::Reject { rejected_prev, hint } => {
                if hint.index > rejected_prev || rejected_prev > last_index {
                    shared.drop_message("AppendEntriesResponse with an impossible hint");
                    return Ok(());
                }
                let retry_from = self.retry_point(shared, from, hint)?;
                let progress = self.progress.get_mut(&from).expect("checked above");
                if progress.rejected(rejected_prev, retry_from) {
                    self.send_append(shared, from, true)?;
                }
                Ok(())
            }
        }
    }

    /// Where to retry after a rejection with `hint`: after the last entry at or below the
    /// hint whose term is at most the hint's term. Both sides skip whole terms (Raft §5.3).
    fn retry_point<S: Storage>(&self, shared: &Shared<S>, peer: NodeId, hint: LogId) -> Result<Index, Error> {
        let floor = self.progress[&peer].match_index;
        let mut index = hint.index.min(shared.log.last_index());
        while index > floor {
            match shared.log.term(index) {
                Ok(term) if term <= hint.term => break,
                Ok(_) => index = index.prev(),
                Err(StorageError::Compacted(_)) => break, // the next send turns into a snapshot
                Err(error) => return Err(error.into()),
            }
        }
        Ok(index.next())
    }

    /// Raft §5.4.2: commit the highest index a majority of voters hold, but only if it is
    /// of our term (an entry of an earlier term commits only through one of ours; figure 8).
    fn maybe_commit<S: Storage>(&mut self, shared: &mut Shared<S>) -> Result<(), Error> {
        let voters = &shared.membership().voters;
        let Some(quorum_index) = quorum_value(voters, |id| self.progress.get(&id).map_or(Index(0), |p| p.match_index))
        else {
            return Ok(());
        };
        if quorum_index <= shared.log.commit_index() || shared.log.term(quorum_index)? != shared.term {
            return Ok(());
        }
        shared.log.commit_to(quorum_index);
        self.commit_to_send = true;
        while let Some(&(index, bytes)) = self.uncommitted.front() {
            if index > quorum_index {
                break;
            }
            self.uncommitted.pop_front();
            self.uncommitted_bytes -= bytes;
        }
        if quorum_index >= self.term_start {
            for (id, from) in std::mem::take(&mut self.reads_before_term_commit) {
                self.read_index(shared, id, from);
            }
        }
        Ok(())
    }

    /// The driver made our log durable up to its end: that counts as our own match.
    pub fn self_persisted<S: Storage>(&mut self, shared: &mut Shared<S>) -> Result<(), Error> {
        let persisted = shared.log.persisted_index();
        let own = self.progress.get_mut(&shared.id).expect("the leader tracks itself");
        if own.matched(persisted) {
            self.maybe_commit(shared)?;
        }
        Ok(())
    }

    /// Thesis §6.4: a read is served at the commit index once (1) an entry of our term is
    /// committed, so our commit index is the cluster's, and (2) a quorum has answered a
    /// heartbeat sent after the read arrived, so we were still leader then. With leases
    /// (thesis §6.4.1), (2) is replaced by a lease from the last acknowledged round.
    pub fn read_index<S: Storage>(&mut self, shared: &mut Shared<S>, id: ReadId, from: Option<NodeId>) {
        let commit = shared.log.commit_index();
        if commit < self.term_start {
            self.reads_before_term_commit.push((id, from));
        } else if shared.config.lease_reads && !self.lease_revoked && self.lease_valid(shared) {
            answer_read(shared, id, from, commit);
        } else {
            self.reads.push_back(PendingRead { id, from, index: commit, round: self.heartbeat_round + 1 });
            self.round_requested = true;
        }
    }

    /// Whether a quorum acknowledged a heartbeat sent less than a lease ago. Followers that
    /// acknowledged it refuse to vote for an election timeout after receiving it, so no
    /// other leader can exist before the lease ends. Two ticks of margin cover tick phase.
    fn lease_valid<S: Storage>(&self, shared: &Shared<S>) -> bool {
        let now = shared.ticks;
        let sent_tick = |id: NodeId| -> u64 {
            if id == shared.id {
                return now;
            }
            let round = self.progress.get(&id).map_or(0, |p| p.acked_heartbeat_round);
            self.round_sent_ticks.get(&round).copied().unwrap_or(0)
        };
        let lease_ticks = u64::from(shared.config.election_timeout_ticks).saturating_sub(2);
        match quorum_value(&shared.membership().voters, sent_tick) {
            Some(start) => start > 0 && now < start + lease_ticks,
            None => false,
        }
    }

    /// Sends a heartbeat round to every follower, each with the commit index it may use.
    fn broadcast_heartbeat<S: Storage>(&mut self, shared: &mut Shared<S>) {
        self.heartbeat_round += 1;
        self.round_requested = false;
        self.heartbeat_elapsed_ticks = 0;
        self.round_sent_ticks.insert(self.heartbeat_round, shared.ticks);
        let oldest_kept = shared.ticks.saturating_sub(2 * u64::from(shared.config.election_timeout_ticks));
        self.round_sent_ticks.retain(|_, &mut tick| tick >= oldest_kept);
        let commit = shared.log.commit_index();
        for peer in self.peers(shared) {
            let matched = self.progress[&peer].match_index;
            shared
                .send(peer, Message::Heartbeat { commit: commit.min(matched), heartbeat_round: self.heartbeat_round });
        }
        self.release_reads(shared);
    }

    pub fn handle_heartbeat_response<S: Storage>(
        &mut self,
        shared: &mut Shared<S>,
        from: NodeId,
        heartbeat_round: u64,
    ) -> Result<(), Error> {
        let last_index = shared.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            shared.drop_message("HeartbeatResponse from a non-member");
            return Ok(());
        };
        if heartbeat_round > self.heartbeat_round {
            shared.drop_message("HeartbeatResponse for a round never sent");
            return Ok(());
        }
        progress.recent_active = true;
        progress.acked_heartbeat_round = progress.acked_heartbeat_round.max(heartbeat_round);
        let lagging = progress.match_index < last_index;
        if lagging {
            // An append or its answer may have been lost: let one more through.
            progress.unblock(shared.config.max_inflight, shared.config.max_inflight_bytes);
        }
        self.release_reads(shared);
        if lagging {
            self.send_append(shared, from, true)?;
        }
        Ok(())
    }

    /// Answers the reads whose round a quorum has acknowledged.
    fn release_reads<S: Storage>(&mut self, shared: &mut Shared<S>) {
        let acked = |id: NodeId| {
            if id == shared.id {
                self.heartbeat_round
            } else {
                self.progress.get(&id).map_or(0, |p| p.acked_heartbeat_round)
            }
        };
        let Some(confirmed) = quorum_value(&shared.membership().voters, acked) else { return };
        while let Some(read) = self.reads.front() {
            if read.round > confirmed {
                break;
            }
            let read = self.reads.pop_front().expect("front exists");
            answer_read(shared, read.id, read.from, read.index);
        }
    }

    /// We stop being leader: every waiting read fails, so its caller can retry elsewhere.
    pub fn abandon_reads<S: Storage>(self, shared: &mut Shared<S>, new_leader: Option<NodeId>) {
        let waiting = self.reads.into_iter().map(|read| (read.id, read.from));
        for (id, from) in waiting.chain(self.reads_before_term_commit) {
            match from {
                None => shared.lose_reads([id], new_leader),
                Some(peer) => shared.send(peer, Message::ReadIndexResponse { id, index: None }),
            }
        }
    }

    /// Our own removal committed and we are about to step down (thesis §4.2.2): send the
    /// new commit index now, and if the best-placed voter holds our whole log, tell it to
    /// campaign at once (`TimeoutNow`, thesis §3.10) so the cluster need not wait an
    /// election timeout. (Not the runtime's handing of work to its apply thread.)
    pub fn nominate_successor<S: Storage>(&mut self, shared: &mut Shared<S>) -> Result<(), Error> {
        self.flush(shared)?;
        if let Some(successor) = self.successor(shared)
            && self.progress[&successor].match_index == shared.log.last_index()
        {
            shared.send(successor, Message::TimeoutNow);
        }
        Ok(())
    }

    /// The voter best placed to take over: the one holding the most of our log (the
    /// lowest id among equals).
    pub fn successor<S: Storage>(&self, shared: &Shared<S>) -> Option<NodeId> {
        let matched = |id: &NodeId| self.progress.get(id).map_or(Index(0), |p| p.match_index);
        shared.other_voters().into_iter().max_by(|a, b| matched(a).cmp(&matched(b)).then(b.cmp(a)))
    }

    pub fn transfer_leader<S: Storage>(&mut self, shared: &mut Shared<S>, target: NodeId) -> Result<(), Error> {
        if target == shared.id {
            return Ok(());
        }
        if !shared.membership().is_voter(target) {
            return Err(Error::NotAVoter(target));
        }
        self.transfer = Some(Transfer { target, elapsed_ticks: 0 });
        self.lease_revoked = true;
        self.maybe_send_timeout_now(shared, target);
        self.send_append(shared, target, false)
    }

    /// Once the transfer target holds our whole log, tell it to campaign (thesis §3.10).
    fn maybe_send_timeout_now<S: Storage>(&mut self, shared: &mut Shared<S>, peer: NodeId) {
        let Some(transfer) = &self.transfer else { return };
        if transfer.target == peer && self.progress[&peer].match_index == shared.log.last_index() {
            shared.send(peer, Message::TimeoutNow);
        }
    }

    /// Advances the leader's timers. Returns true when check-quorum says to step down.
    pub fn tick<S: Storage>(&mut self, shared: &mut Shared<S>) -> Result<bool, Error> {
        let election_timeout = shared.config.election_timeout_ticks;
        self.heartbeat_elapsed_ticks += 1;
        if self.heartbeat_elapsed_ticks >= shared.config.heartbeat_interval_ticks {
            self.broadcast_heartbeat(shared);
        }
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= election_timeout {
                self.transfer = None; // thesis §3.10: give up and accept proposals again
            }
        }
        for progress in self.progress.values_mut() {
            if let ProgressState::Snapshot { elapsed_ticks, .. } = &mut progress.state {
                *elapsed_ticks += 1;
                if *elapsed_ticks >= election_timeout {
                    progress.become_probe();
                    self.entries_to_send = true;
                }
            }
        }
        self.check_quorum_elapsed_ticks += 1;
        if self.check_quorum_elapsed_ticks >= election_timeout {
            self.check_quorum_elapsed_ticks = 0;
            let voters = &shared.membership().voters;
            let active = voters
                .iter()
                .filter(|&&id| id == shared.id || self.progress.get(&id).is_some_and(|p| p.recent_active))
                .count();
            for progress in self.progress.values_mut() {
                progress.recent_active = false;
            }
            if shared.config.check_quorum && active < majority(voters.len()) {
                return Ok(true); // thesis §6.2: we may be cut off from a newer leader's quorum
            }
        }
        Ok(false)
    }

    pub fn assert_invariants<S: Storage>(&self, shared: &Shared<S>) {
        assert!(self.progress.contains_key(&shared.id), "the leader tracks itself");
        for id in shared.membership().members() {
            assert!(self.progress.contains_key(&id), "no progress for member {id}");
        }
        let last_index = shared.log.last_index();
        for (id, progress) in &self.progress {
            assert!(
                progress.match_index <= last_index,
                "{id} matches {} beyond our log {last_index}",
                progress.match_index
            );
        }
        let mut round = 0;
        for read in &self.reads {
            assert!(read.round >= round, "reads out of round order");
            round = read.round;
        }
    }
}

fn answer_read<S: Storage>(shared: &mut Shared<S>, id: ReadId, from: Option<NodeId>, index: Index) {
    match from {
        None => shared.reads.push(ReadState { id, result: Ok(index) }),
        Some(peer) => shared.send(peer, Message::ReadIndexResponse { id, index: Some(index) }),
    }
}
