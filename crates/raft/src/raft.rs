//! The consensus core: [`Raft`], its inputs, its roles and their transitions.
//!
//! State shared by every role lives in [`Shared`]; each role keeps only its own state
//! ([`Follower`], [`Candidate`], [`crate::leader::Leader`]). `step` only checks terms and
//! dispatches: the handlers live in `election.rs`, `follower.rs` and `leader.rs`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::election::Campaign;
use crate::leader::Leader;
use crate::log::RaftLog;
use crate::membership::MembershipHistory;
use crate::message::{AppendResult, Envelope, Message, drop_reason};
use crate::ready::{Error, PeerStatus, Proposal, ReadError, ReadState, Ready, RoleName, Status};
use crate::storage::Storage;
use crate::types::{
    Entry, HardState, Index, LogId, Membership, MembershipChange, NodeId, Payload, ReadId, SnapshotMeta, Term,
};

/// The most batches of follower reads waiting for the leader's answer ([`Raft::flush_reads`]).
const MAX_READ_BATCHES: usize = 1024;

/// One node's consensus core. Feed it inputs ([`Raft::tick`], [`Raft::step`],
/// [`Raft::propose`], ...), then take its output with [`Raft::ready`] and act on it as
/// [`Ready`] says, then call [`Raft::advance`].
pub struct Raft<S: Storage> {
    /// What every role has: term, vote, log, membership, outputs.
    pub(crate) shared: Shared<S>,
    /// The role, with only its own state (STYLE §2).
    pub(crate) role: Role,
}

/// State every role has.
pub(crate) struct Shared<S: Storage> {
    /// The settings, validated by `Raft::new`.
    pub config: Config,
    /// This node (`config.id`).
    pub id: NodeId,
    /// The current term; never decreases.
    pub term: Term,
    /// Whom we voted for in `term`.
    pub vote: Option<NodeId>,
    /// The log: the store plus what is not yet persisted, the commit and applied indexes.
    pub log: RaftLog<S>,
    /// The memberships in the log after the snapshot; the latest is in effect.
    pub memberships: MembershipHistory,
    /// Seeded from `config.seed`: draws election timeouts, so a run replays exactly.
    rng: ChaCha8Rng,
    /// This wait's election timeout, drawn from `[E, 2E)`.
    pub election_timeout_ticks: u32,
    /// Messages to hand out in the next `Ready`.
    pub outbox: Vec<Envelope>,
    /// Read answers to hand out in the next `Ready`.
    pub reads: Vec<ReadState>,
    /// A follower's reads not yet asked of the leader: the next `ready()` asks for all of
    /// them with one `ReadIndex` ([`Raft::flush_reads`]).
    read_batch: Vec<ReadId>,
    /// The batches of more than one read asked of the leader, by the id their `ReadIndex`
    /// carries (the batch's first); at most [`MAX_READ_BATCHES`].
    read_batches: BTreeMap<ReadId, Vec<ReadId>>,
    /// Messages from other nodes dropped as invalid, counted by reason (see
    /// [`Shared::drop_message`]).
    pub dropped_messages: BTreeMap<&'static str, u64>,
    /// The hard state the driver last persisted.
    persisted_hard_state: HardState,
    /// Ticks since start; only for leases.
    pub ticks: u64,
    /// Set between `ready()` and `advance()`: the index applied once the driver is done.
    pending_advance: Option<Index>,
    /// Set by the driver while its state machine is behind: `ready()` hands out no
    /// committed entries (see [`Raft::pause_applying`]).
    applying_paused: bool,
    /// Set by the driver while this node may not vote (see [`Raft::withhold_votes`]).
    pub withholding_votes: bool,
}

pub(crate) enum Role {
    Follower(Follower),
    Candidate(Candidate),
    Leader(Box<Leader>),
}

/// A follower: answers leaders and candidates (Raft §5.2).
pub(crate) struct Follower {
    /// The leader of the current term, once we hear from it.
    pub leader: Option<NodeId>,
    /// Ticks since we last heard from the leader or granted a vote.
    pub election_elapsed_ticks: u32,
    /// Whether we heard from a leader (or, with lease reads, just started) and so, under
    /// check-quorum, refuse to help depose it until an election timeout passes (thesis
    /// §4.2.3).
    pub leader_lease: bool,
}

/// A candidate or, with `pre_vote`, a pre-candidate (thesis §9.6).
pub(crate) struct Candidate {
    /// A pre-vote campaign: the term is not raised until a quorum would vote (thesis §9.6).
    pub pre_vote: bool,
    /// Voters that granted their (pre-)vote, this node included; a majority wins.
    pub granted: BTreeSet<NodeId>,
    /// Voters that refused; a majority of them loses the campaign early.
    pub rejected: BTreeSet<NodeId>,
    /// Ticks since the campaign began; at the election timeout a new one starts.
    pub election_elapsed_ticks: u32,
}

impl<S: Storage> Shared<S> {
    /// Answers the reads `ids` that lost their leader: their callers retry, with `leader`
    /// where this node now believes the leader is.
    pub fn lose_reads(&mut self, ids: impl IntoIterator<Item = ReadId>, leader: Option<NodeId>) {
        let lost = ids.into_iter().map(|id| ReadState { id, result: Err(ReadError::LeadershipLost { leader }) });
        self.reads.extend(lost);
    }

    /// Queues `message` to `to`, stamped with the current term.
    pub fn send(&mut self, to: NodeId, message: Message) {
        let term = self.term;
        self.send_with_term(to, term, message);
    }

    pub fn send_with_term(&mut self, to: NodeId, term: Term, message: Message) {
        // Invariant: only our own bug can break this, because we send only to members and to
        // the senders of messages, and `step` drops a message that claims to come from us.
        assert_ne!(to, self.id, "a node never sends to itself");
        self.outbox.push(Envelope { from: self.id, to, term, message });
    }

    pub fn membership(&self) -> &Membership {
        self.memberships.active()
    }

    /// Whether this node is a voter of the membership in effect.
    pub fn is_voter(&self) -> bool {
        self.membership().is_voter(self.id)
    }

    /// Whether this node may campaign: only voters do (learners and removed nodes wait),
    /// and not while it withholds its vote ([`Raft::withhold_votes`]).
    pub fn may_campaign(&self) -> bool {
        self.is_voter() && !self.withholding_votes
    }

    /// The other voters, in id order.
    pub fn other_voters(&self) -> Vec<NodeId> {
        self.membership().voters.iter().copied().filter(|&id| id != self.id).collect()
    }

    pub fn reset_election_timeout(&mut self) {
        let base = self.config.election_timeout_ticks;
        self.election_timeout_ticks = self.rng.random_range(base..2 * base);
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.commit_index() }
    }

    /// Records an entry appended to the log (by the leader or from the leader), and a
    /// membership it carries, which takes effect now (thesis §4.1).
    pub fn track_membership(&mut self, entries: &[Entry]) {
        for entry in entries {
            if let Payload::Membership(membership) = &entry.payload {
                self.memberships.push(entry.index(), membership.clone());
            }
        }
    }

    /// Drops an invalid message from another node (STYLE §5: validated, never asserted)
    /// and counts it under `why`, a fixed phrase naming what was wrong with it. The core
    /// has no logger: a driver or a test sees the counts in [`Status::dropped_messages`].
    pub fn drop_message(&mut self, why: &'static str) {
        *self.dropped_messages.entry(why).or_default() += 1;
    }
}

impl<S: Storage> Raft<S> {
    /// A node that starts, or restarts, from `storage`: its hard state, snapshot and log.
    /// A new cluster's nodes start from a store holding the initial membership.
    pub fn new(config: Config, storage: S) -> Result<Raft<S>, Error> {
        config.validate().map_err(Error::InvalidConfig)?;
        let hard_state = storage.hard_state();
        let snapshot = storage.snapshot_meta();
        let mut memberships = MembershipHistory::new(snapshot.last_log_id.index, snapshot.membership.clone());
        let log = RaftLog::new(storage, config.applied)?;
        // Rebuild the membership from the log after the snapshot, one bounded batch at a time.
        let mut next = log.first_index();
        while next <= log.last_index() {
            let entries = log.entries(next, log.last_index().next(), config.max_append_bytes)?;
            next = entries.last().map_or(next, |entry| entry.index().next());
            for entry in entries {
                if let Payload::Membership(membership) = entry.payload {
                    memberships.push(entry.log_id.index, membership);
                }
            }
        }
        let mut shared = Shared {
            id: config.id,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            memberships,
            election_timeout_ticks: 0,
            outbox: Vec::new(),
            reads: Vec::new(),
            read_batches: BTreeMap::new(),
            read_batch: Vec::new(),
            dropped_messages: BTreeMap::new(),
            persisted_hard_state: hard_state,
            ticks: 0,
            pending_advance: None,
            applying_paused: false,
            withholding_votes: false,
        };
        shared.reset_election_timeout();
        // With lease reads, a node that just (re)started may have acknowledged a leader's
        // heartbeat a moment before it went down, and that leader may be serving reads on
        // the strength of it: refuse votes for one election timeout, as if it had.
        let leader_lease = shared.config.lease_reads;
        let follower = Follower { leader: None, election_elapsed_ticks: 0, leader_lease };
        let raft = Raft { shared, role: Role::Follower(follower) };
        raft.assert_invariants();
        Ok(raft)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The current term (Raft §5.1): never goes back.
    pub fn term(&self) -> Term {
        self.shared.term
    }

    /// The role this node plays now.
    pub fn role(&self) -> RoleName {
        match &self.role {
            Role::Follower(_) => RoleName::Follower,
            Role::Candidate(candidate) if candidate.pre_vote => RoleName::PreCandidate,
            Role::Candidate(_) => RoleName::Candidate,
            Role::Leader(_) => RoleName::Leader,
        }
    }

    /// Whom this node voted for in the current term (Raft §5.2), if anyone.
    pub fn vote(&self) -> Option<NodeId> {
        self.shared.vote
    }

    /// The leader this node knows of in the current term.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Follower(follower) => follower.leader,
            Role::Candidate(_) => None,
            Role::Leader(_) => Some(self.shared.id),
        }
    }

    /// The highest log index known committed: never goes back while the node runs.
    pub fn commit_index(&self) -> Index {
        self.shared.log.commit_index()
    }

    /// The membership in effect: the latest in the log, committed or not (thesis §4.1).
    pub fn membership(&self) -> &Membership {
        self.shared.membership()
    }

    /// Where the membership in effect comes from: its entry's log id, or the snapshot's
    /// last (index 0 for a new cluster's initial membership).
    pub fn membership_log_id(&self) -> Result<LogId, Error> {
        let index = self.shared.memberships.active_index();
        Ok(LogId::new(self.shared.log.term(index)?, index))
    }

    /// The last entry of the log (or the snapshot's last, if the log is empty after it).
    pub fn last_log_id(&self) -> Result<LogId, Error> {
        Ok(self.shared.log.last_log_id()?)
    }

    /// The store, for the driver to write as `Ready` says (and for tests to inspect).
    pub fn storage(&self) -> &S {
        &self.shared.log.storage
    }

    /// The store, for the driver to write as `Ready` says (between `ready()` and
    /// `advance()`) and to compact after [`Raft::compact`]. Any other write breaks the core.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.shared.log.storage
    }

    /// Consumes the core and returns its store (a crash, in the simulator).
    pub fn into_storage(self) -> S {
        self.shared.log.storage
    }

    /// One unit of logical time passes.
    pub fn tick(&mut self) -> Result<(), Error> {
        self.assert_no_pending_ready();
        self.shared.ticks += 1;
        let election_timeout = self.shared.config.election_timeout_ticks;
        let elapsed = match &mut self.role {
            Role::Leader(leader) => {
                if leader.tick(&mut self.shared)? {
                    self.become_follower(self.shared.term, None);
                }
                return Ok(());
            }
            Role::Follower(follower) => {
                follower.election_elapsed_ticks += 1;
                if follower.election_elapsed_ticks >= election_timeout {
                    follower.leader_lease = false;
                }
                follower.election_elapsed_ticks
            }
            Role::Candidate(candidate) => {
                candidate.election_elapsed_ticks += 1;
                candidate.election_elapsed_ticks
            }
        };
        if elapsed >= self.shared.election_timeout_ticks && self.shared.may_campaign() {
            self.campaign(self.timeout_campaign())?;
        }
        Ok(())
    }

    /// Starts an election now, as if the election timeout had passed (with a pre-vote
    /// round when enabled). For tests and operators; a non-voter or a leader refuses.
    pub fn campaign_now(&mut self) -> Result<(), Error> {
        self.assert_no_pending_ready();
        if let Role::Leader(_) = self.role {
            return Ok(());
        }
        if !self.shared.may_campaign() {
            return Err(Error::NotAVoter(self.shared.id));
        }
        self.campaign(self.timeout_campaign())
    }

    /// Proposes a command. On the leader, returns the log id its entry got; the command is
    /// committed if and when that entry is (watch `Ready::committed`). Proposals between two
    /// `Ready`s go out as one batch.
    pub fn propose(&mut self, command: Bytes) -> Result<Proposal, Error> {
        self.assert_no_pending_ready();
        let (leader, shared) = self.as_leader()?;
        let payload = Payload::Command(command);
        leader.refuse_proposal_if_busy(shared, payload.entry_size_bytes())?;
        let log_id = leader.append(shared, payload)?;
        Ok(Proposal { log_id })
    }

    /// Proposes a single-server membership change (thesis §4.1). Refused while another
    /// change is uncommitted, and until the leader has committed an entry of its own term
    /// (the fix to the single-server change bug, thesis §4.1 errata).
    pub fn propose_membership(&mut self, change: MembershipChange) -> Result<Proposal, Error> {
        self.assert_no_pending_ready();
        let (leader, shared) = self.as_leader()?;
        leader.refuse_proposal_if_busy(shared, 0)?;
        let log_id = leader.propose_membership(shared, change)?;
        Ok(Proposal { log_id })
    }

    /// Asks for a linearizable read (thesis §6.4). The answer comes in `Ready::reads` with
    /// the index the state machine must reach before the read is served. On a follower the
    /// request is forwarded to the leader.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), Error> {
        self.assert_no_pending_ready();
        match &mut self.role {
            Role::Leader(leader) => {
                leader.read_index(&mut self.shared, id, None);
                Ok(())
            }
            Role::Follower(Follower { leader: Some(_), .. }) => {
                self.shared.read_batch.push(id);
                Ok(())
            }
            _ => Err(Error::NotLeader { leader: None }),
        }
    }

    /// Hands leadership to `target` (thesis §3.10): bring it up to date, then tell it to
    /// campaign. Proposals are refused meanwhile; the attempt ends after an election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        self.assert_no_pending_ready();
        let (leader, shared) = self.as_leader()?;
        leader.transfer_leader(shared, target)
    }

    /// On a leader, the voter best placed to take over (for a graceful shutdown:
    /// `transfer_leader(successor)`); `None` elsewhere or without other voters.
    pub fn successor(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(leader) => leader.successor(&self.shared),
            _ => None,
        }
    }

    /// The state machine holds a snapshot of everything up to `index` (at most the applied
    /// index). Returns the metadata to store with it; the driver then compacts the log with
    /// [`Storage::compact`].
    pub fn compact(&mut self, index: Index) -> Result<SnapshotMeta, Error> {
        self.assert_no_pending_ready();
        let log = &self.shared.log;
        let first = log.first_index();
        if index < first || index > log.applied_index() {
            let reason = format!(
                "the index must be in [{first}, {}] (from the first log entry to the applied index)",
                log.applied_index()
            );
            return Err(Error::InvalidSnapshot { index, reason });
        }
        let meta = SnapshotMeta {
            last_log_id: LogId::new(log.term(index)?, index),
            membership: self.shared.memberships.at(index).clone(),
        };
        self.shared.memberships.compact(index);
        Ok(meta)
    }

    /// The runtime finished streaming a snapshot to `peer`, `delivered` or not. A leader
    /// goes back to probing that peer: from after the snapshot if it was delivered, from
    /// after the peer's known match (so the snapshot is resent at the peer's next sign of
    /// life) if it failed. Other roles ignore it.
    pub fn report_snapshot(&mut self, peer: NodeId, delivered: bool) {
        if let Role::Leader(leader) = &mut self.role {
            leader.report_snapshot(peer, delivered);
        }
    }

    /// Feeds a message from another node.
    ///
    /// Nothing a peer sends can make this panic ("no panic from the wire"): the message is
    /// first checked on its own ([`Envelope::check`]: addressing, terms and indexes above
    /// [`crate::MAX_WIRE_VALUE`], entries that don't follow `prev_log_id`, impossible log ids
    /// and snapshots), then against our state (a second leader in our term, responses from
    /// non-members, indexes beyond our log). A message that fails is dropped and counted by
    /// reason in [`Status::dropped_messages`], and changes nothing (not even our term). The
    /// asserts that remain on the way are invariants of our own state.
    pub fn step(&mut self, envelope: Envelope) -> Result<(), Error> {
        self.assert_no_pending_ready();
        if let Err(why) = envelope.check(self.shared.id, self.shared.term) {
            self.shared.drop_message(why);
            return Ok(());
        }
        if envelope.term > self.shared.term {
            if !self.accept_higher_term(&envelope) {
                return Ok(());
            }
        } else if envelope.term < self.shared.term {
            self.answer_stale(envelope);
            return Ok(());
        }
        self.dispatch(envelope)
    }

    /// Raft §5.1: a higher term makes us a follower of that term, with three exceptions.
    /// Returns whether to go on handling the message.
    fn accept_higher_term(&mut self, envelope: &Envelope) -> bool {
        match envelope.message {
            Message::RequestVote { leader_transfer, .. } if self.in_leader_lease() && !leader_transfer => {
                // thesis §4.2.3: we heard from a leader within the minimum election timeout,
                // so don't help depose it (a removed or cut-off node would disrupt us).
                return false;
            }
            // A pre-vote doesn't change anyone's term (thesis §9.6): answer it in ours.
            Message::RequestVote { pre_vote: true, .. } => return true,
            // A granted pre-vote carries the term we would campaign in.
            Message::RequestVoteResponse { pre_vote: true, granted: true } => return true,
            _ => {}
        }
        let leader = match envelope.message {
            Message::AppendEntries { .. } | Message::Heartbeat { .. } | Message::InstallSnapshot { .. } => {
                Some(envelope.from)
            }
            _ => None,
        };
        self.become_follower(envelope.term, leader);
        true
    }

    /// A message from an older term. Requests get an answer carrying our term, so a stale
    /// leader or candidate steps down (with pre-vote and check-quorum this is how a node
    /// that raised its term while cut off gets the others to catch up); responses are dropped.
    fn answer_stale(&mut self, envelope: Envelope) {
        let reply = match envelope.message {
            Message::AppendEntries { .. } | Message::Heartbeat { .. } | Message::InstallSnapshot { .. } => {
                let rejection = AppendResult::Reject { rejected_prev: Index(0), hint: LogId::default() };
                Message::AppendEntriesResponse(rejection)
            }
            Message::RequestVote { pre_vote, .. } => Message::RequestVoteResponse { granted: false, pre_vote },
            _ => return,
        };
        self.shared.send(envelope.from, reply);
    }

    fn dispatch(&mut self, envelope: Envelope) -> Result<(), Error> {
        let from = envelope.from;
        match envelope.message {
            Message::AppendEntries { prev_log_id, entries, leader_commit } => {
                if self.follow(from) {
                    self.handle_append_entries(from, prev_log_id, entries, leader_commit)?;
                }
            }
            Message::Heartbeat { commit, heartbeat_round } => {
                if self.follow(from) {
                    self.handle_heartbeat(from, commit, heartbeat_round);
                }
            }
            Message::InstallSnapshot { meta } => {
                if self.follow(from) {
                    self.handle_install_snapshot(from, meta)?;
                }
            }
            Message::RequestVote { last_log_id, pre_vote, .. } => {
                self.handle_request_vote(from, envelope.term, last_log_id, pre_vote)?;
            }
            Message::RequestVoteResponse { granted, pre_vote } => self.handle_vote_response(from, granted, pre_vote)?,
            Message::TimeoutNow => match &self.role {
                // Only the leader of our term sends TimeoutNow (thesis §3.10), and by Election
                // Safety there is at most one: from anyone else it is forged or buggy, and
                // would make us disrupt a working leader.
                Role::Follower(Follower { leader: Some(leader), .. }) if *leader != from => {
                    self.shared.drop_message(drop_reason::TIMEOUT_NOW_NOT_FROM_LEADER);
                }
                Role::Follower(_) if self.shared.may_campaign() => self.campaign(Campaign::Transfer)?,
                _ => {}
            },
            Message::ReadIndex { id } => match &mut self.role {
                Role::Leader(leader) if self.shared.membership().contains(from) => {
                    leader.read_index(&mut self.shared, id, Some(from))
                }
                Role::Leader(_) => self.shared.drop_message("read index from a non-member"),
                _ => self.shared.send(from, Message::ReadIndexResponse { id, index: None }),
            },
            Message::ReadIndexResponse { id, index } => {
                // Only the leader of our term confirms a read index (thesis §6.4), and by
                // Election Safety there is one: an index from any other node is forged or
                // buggy, and would let us serve a stale read. (Any node may say it is not the
                // leader: `index: None`.)
                let from_another_leader = index.is_some()
                    && match &self.role {
                        Role::Leader(_) => true,
                        Role::Follower(Follower { leader: Some(leader), .. }) => *leader != from,
                        _ => false,
                    };
                if from_another_leader {
                    self.shared.drop_message(drop_reason::SECOND_LEADER);
                } else {
                    let result = index.ok_or(ReadError::LeadershipLost { leader: self.leader() });
                    let batch = self.shared.read_batches.remove(&id).unwrap_or_else(|| vec![id]);
                    for id in batch {
                        self.shared.reads.push(ReadState { id, result: result.clone() });
                    }
                }
            }
            Message::AppendEntriesResponse(result) => {
                if let Role::Leader(leader) = &mut self.role {
                    leader.handle_append_response(&mut self.shared, from, result)?;
                    self.maybe_step_down_after_removal()?;
                }
            }
            Message::HeartbeatResponse { heartbeat_round } => {
                if let Role::Leader(leader) = &mut self.role {
                    leader.handle_heartbeat_response(&mut self.shared, from, heartbeat_round)?;
                }
            }
        }
        Ok(())
    }

    /// A message in our term from `leader`, which only a leader sends: follow it. Returns
    /// whether to handle the message.
    ///
    /// Election Safety (Raft §5.2): at most one leader per term. So when we lead this term,
    /// or already follow another leader in it, the claim is false: a forged message, a
    /// corrupted one, or a peer with a bug. That is remote input, so it is dropped and
    /// counted, not asserted: the node keeps serving the leader it knows (itself included),
    /// and its log is not touched by the impostor.
    fn follow(&mut self, leader: NodeId) -> bool {
        match &mut self.role {
            Role::Leader(_) => {
                self.shared.drop_message(drop_reason::SECOND_LEADER);
                return false;
            }
            Role::Follower(Follower { leader: Some(known), .. }) if *known != leader => {
                self.shared.drop_message(drop_reason::SECOND_LEADER);
                return false;
            }
            Role::Candidate(_) => {
                self.become_follower(self.shared.term, Some(leader));
            }
            Role::Follower(follower) => {
                follower.leader = Some(leader);
            }
        }
        if let Role::Follower(follower) = &mut self.role {
            follower.election_elapsed_ticks = 0;
            follower.leader_lease = true;
        }
        true
    }

    /// Whether we would refuse to help depose a leader: a follower that heard from a leader
    /// within the election timeout, or a leader (which check-quorum keeps honest).
    pub(crate) fn in_leader_lease(&self) -> bool {
        if !self.shared.config.check_quorum {
            return false;
        }
        match &self.role {
            Role::Follower(follower) => follower.leader_lease,
            Role::Candidate(_) => false,
            Role::Leader(_) => true,
        }
    }

    /// A leader whose own removal is committed steps down (thesis §4.2.2). It first tells
    /// the others that the removal committed, and hands leadership to an up-to-date voter so
    /// the cluster need not wait an election timeout.
    fn maybe_step_down_after_removal(&mut self) -> Result<(), Error> {
        let Role::Leader(leader) = &mut self.role else { return Ok(()) };
        let removed = !self.shared.is_voter();
        let committed = self.shared.memberships.active_index() <= self.shared.log.commit_index();
        if removed && committed {
            leader.nominate_successor(&mut self.shared)?;
            self.become_follower(self.shared.term, None);
        }
        Ok(())
    }

    /// The leader's state and the shared state, or the error a non-leader returns.
    fn as_leader(&mut self) -> Result<(&mut Leader, &mut Shared<S>), Error> {
        match &mut self.role {
            Role::Leader(leader) => Ok((leader, &mut self.shared)),
            Role::Follower(follower) => Err(Error::NotLeader { leader: follower.leader }),
            Role::Candidate(_) => Err(Error::NotLeader { leader: None }),
        }
    }

    /// Becomes a follower of `term` (the same or a later one), following `leader` if known.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        // Invariant: only our own bug can break this, because callers pass our term or a
        // message's term that `step` found higher than ours.
        assert!(term >= self.shared.term, "terms never go back");
        if term > self.shared.term {
            self.shared.term = term;
            self.shared.vote = None;
        }
        let old = std::mem::replace(
            &mut self.role,
            Role::Follower(Follower { leader, election_elapsed_ticks: 0, leader_lease: leader.is_some() }),
        );
        if let Role::Leader(old_leader) = old {
            old_leader.abandon_reads(&mut self.shared, leader);
        }
        self.shared.reset_election_timeout();
    }

    /// Hands out what the driver must do now. See [`Ready`] for the order.
    pub fn ready(&mut self) -> Result<Ready, Error> {
        self.assert_no_pending_ready();
        if let Role::Leader(leader) = &mut self.role {
            leader.flush(&mut self.shared)?;
        }
        self.flush_reads();
        let shared = &mut self.shared;
        let hard_state = shared.hard_state();
        let (snapshot, entries) = shared.log.unstable();
        let committed = match shared.applying_paused {
            true => Vec::new(),
            false => shared.log.next_committed(shared.config.max_committed_bytes_per_ready)?,
        };
        let applied = committed.last().map_or(shared.log.applied_index(), Entry::index);
        shared.pending_advance = Some(applied);
        // Everything in the outbox of a leader whose term and vote are durable was sent by
        // that leader in that term (winning an election changes the term, which is
        // persisted before the win can follow). None of it depends on unpersisted state.
        let durable_leader = matches!(self.role, Role::Leader(_))
            && shared.persisted_hard_state.term == shared.term
            && shared.persisted_hard_state.vote == Some(shared.id);
        let outbox = std::mem::take(&mut shared.outbox);
        let (leader_messages, messages) = if durable_leader { (outbox, Vec::new()) } else { (Vec::new(), outbox) };
        let persisted = &shared.persisted_hard_state;
        let must_sync = snapshot.is_some()
            || !entries.is_empty()
            || (hard_state.term, hard_state.vote) != (persisted.term, persisted.vote);
        Ok(Ready {
            hard_state: (hard_state != shared.persisted_hard_state).then_some(hard_state),
            must_sync,
            snapshot,
            entries,
            leader_messages,
            messages,
            committed,
            reads: std::mem::take(&mut shared.reads),
        })
    }

    /// A follower asks its leader for one read index for all the reads that arrived since
    /// the last `Ready` (thesis §6.4, on followers): the index the leader confirms is at
    /// least its commit index when the request reached it, which is after every read of
    /// the batch arrived here, so it serves them all. One message each way per batch
    /// instead of per read. Reads left when this node no longer follows a leader fail, to
    /// be retried.
    fn flush_reads(&mut self) {
        if self.shared.read_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.shared.read_batch);
        let leader = match &self.role {
            Role::Follower(Follower { leader: Some(leader), .. }) => *leader,
            _ => {
                let leader = self.leader();
                self.shared.lose_reads(batch, leader);
                return;
            }
        };
        let id = batch[0];
        if batch.len() > 1 {
            // A batch whose answer never comes (the message lost, the leader gone) is
            // forgotten after `MAX_READ_BATCHES` newer ones; its reads have timed out by then.
            if self.shared.read_batches.len() >= MAX_READ_BATCHES
                && let Some((_, forgotten)) = self.shared.read_batches.pop_first()
            {
                self.shared.lose_reads(forgotten, Some(leader));
            }
            self.shared.read_batches.insert(id, batch);
        }
        self.shared.send(leader, Message::ReadIndex { id });
    }

    /// Whether `ready()` would hand out anything.
    pub fn has_ready(&self) -> bool {
        let shared = &self.shared;
        let leader_pending = matches!(&self.role, Role::Leader(leader) if leader.has_pending_flush());
        leader_pending
            || !shared.read_batch.is_empty()
            || shared.log.has_unstable()
            || !shared.outbox.is_empty()
            || !shared.reads.is_empty()
            || shared.hard_state() != shared.persisted_hard_state
            || (!shared.applying_paused && shared.log.commit_index() > shared.log.applied_index())
    }

    /// While `paused`, `ready()` hands out no committed entries (everything else goes on:
    /// votes, appends, commits, reads). A driver whose state machine falls behind pauses
    /// rather than queue committed entries without bound, and never waits for it: the
    /// log holds what is committed and not yet applied, so nothing is lost, and replication
    /// and heartbeats, which do not depend on applying, keep the leader in place.
    pub fn pause_applying(&mut self, paused: bool) {
        self.shared.applying_paused = paused;
    }

    /// While `withhold` is set, this node neither campaigns nor grants a vote or pre-vote;
    /// it still follows a leader, stores its entries and acknowledges them. Raft's safety
    /// rests on each server voting at most once per term (Raft §5.2), which a server whose
    /// durable state was lost cannot know it did: a driver that opens a new data directory
    /// withholds votes until it knows this node never voted before (see Skiff's bootstrap
    /// check). A voter's votes are still counted by others when it grants them: withheld,
    /// it simply grants none.
    pub fn withhold_votes(&mut self, withhold: bool) {
        self.shared.withholding_votes = withhold;
    }

    /// The driver did everything the last `Ready` asked.
    pub fn advance(&mut self) -> Result<(), Error> {
        let applied = self.shared.pending_advance.take().expect("advance() without a ready()");
        let shared = &mut self.shared;
        shared.persisted_hard_state = shared.hard_state();
        shared.log.persisted();
        shared.log.applied_to(applied);
        if let Role::Leader(leader) = &mut self.role {
            // Our own entries count toward a quorum only once they are durable here.
            leader.self_persisted(shared)?;
            self.maybe_step_down_after_removal()?;
        }
        self.assert_invariants();
        Ok(())
    }

    fn assert_no_pending_ready(&self) {
        assert!(self.shared.pending_advance.is_none(), "an input reached the core between ready() and advance()");
    }

    /// Checks everything that must hold of this node. Cheap enough to run after every step
    /// in tests and the simulator.
    pub fn assert_invariants(&self) {
        let shared = &self.shared;
        shared.log.assert_invariants();
        assert!(shared.term >= shared.persisted_hard_state.term, "term went back");
        assert!(shared.log.commit_index() >= shared.persisted_hard_state.commit, "commit went back");
        match &self.role {
            Role::Leader(leader) => {
                assert_eq!(shared.vote, Some(shared.id), "a leader voted for itself");
                leader.assert_invariants(shared);
            }
            Role::Candidate(candidate) if !candidate.pre_vote => {
                assert_eq!(shared.vote, Some(shared.id), "a candidate voted for itself");
            }
            _ => {}
        }
    }

    /// Messages dropped as invalid so far, by reason (as in [`Status::dropped_messages`],
    /// without building a whole status).
    pub fn dropped_messages(&self) -> &BTreeMap<&'static str, u64> {
        &self.shared.dropped_messages
    }

    /// A snapshot of this node's state.
    pub fn status(&self) -> Status {
        let shared = &self.shared;
        let progress = match &self.role {
            Role::Leader(leader) => leader
                .progress
                .iter()
                .filter(|(id, _)| **id != shared.id)
                .map(|(&id, progress)| PeerStatus {
                    id,
                    match_index: progress.match_index,
                    next_index: progress.next_index,
                    state: progress.state.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Status {
            id: shared.id,
            role: self.role(),
            term: shared.term,
            vote: shared.vote,
            leader: self.leader(),
            commit: shared.log.commit_index(),
            applied: shared.log.applied_index(),
            last_log_id: shared.log.last_log_id().unwrap_or_default(),
            first_index: shared.log.first_index(),
            membership: shared.membership().clone(),
            progress,
            dropped_messages: shared.dropped_messages.clone(),
            election_timer: self.election_timer(),
        }
    }

    /// The election timer of a follower or candidate (a leader has none).
    fn election_timer(&self) -> Option<crate::ready::ElectionTimer> {
        let elapsed_ticks = match &self.role {
            Role::Follower(follower) => follower.election_elapsed_ticks,
            Role::Candidate(candidate) => candidate.election_elapsed_ticks,
            Role::Leader(_) => return None,
        };
        Some(crate::ready::ElectionTimer { elapsed_ticks, timeout_ticks: self.shared.election_timeout_ticks })
    }
}
