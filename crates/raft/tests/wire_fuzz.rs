//! No panic from the wire, as a property: a node fed arbitrary messages (any variant, terms
//! and indexes from small to `u64::MAX`, entries in and out of order, snapshots, memberships,
//! senders unknown or the node itself), mixed with its own inputs (ticks, campaigns,
//! proposals, reads, compactions), never panics, never fails a `step`, keeps its invariants
//! (`Raft::assert_invariants`, checked after every `Ready` by `testing::execute`), and never
//! takes a term past the bound: a step moves the term at most to one above the larger of the
//! bound and the term before, plus one for an election it may start. A message refused as
//! "close to overflow" changes nothing, and no message takes the log past the bound.

use bytes::Bytes;
use proptest::prelude::*;
use skiff_raft::testing::{self, Batch, ReadyHandler};
use skiff_raft::{
    AppendResult, Config, Entry, Envelope, HardState, Index, LogId, MAX_WIRE_VALUE, MemStorage, Membership, Message,
    NodeId, Payload, Raft, ReadId, RoleName, SnapshotMeta, Storage, Term,
};

const OVERFLOW_REASON: &str = "term or index close to overflow";

/// A term, chosen relative to the node's when the message is built, or absolute.
#[derive(Clone, Debug)]
enum TermGen {
    /// Ours plus this (saturating).
    Relative(i8),
    Small(u64),
    /// `MAX_WIRE_VALUE` plus this.
    NearBound(i8),
    /// `u64::MAX` minus this.
    NearMax(u8),
    Any(u64),
}

/// An index, relative to the node's last index when the message is built, or absolute.
#[derive(Clone, Debug)]
enum IndexGen {
    RelativeToLast(i8),
    RelativeToCommit(i8),
    Small(u64),
    NearBound(i8),
    NearMax(u8),
    Any(u64),
}

/// Where entries start: after our last entry or our commit (which may match), or anywhere.
#[derive(Clone, Debug)]
enum PrevGen {
    Last,
    Commit,
    Other(IndexGen, TermGen),
}

#[derive(Clone, Debug)]
enum EntriesGen {
    /// `count` entries that follow `prev`, of `prev`'s term or the message's.
    Following { count: usize, message_term: bool, payloads: Vec<PayloadGen> },
    /// Arbitrary log ids.
    Arbitrary(Vec<(IndexGen, TermGen, PayloadGen)>),
}

#[derive(Clone, Debug)]
enum PayloadGen {
    Empty,
    Command,
    /// Voters and learners as bit masks over `IDS`.
    Membership(u8, u8),
}

#[derive(Clone, Debug)]
enum MessageGen {
    AppendEntries(PrevGen, EntriesGen, IndexGen),
    Success(IndexGen),
    Reject(IndexGen, IndexGen, TermGen),
    Heartbeat(IndexGen, u64),
    HeartbeatResponse(u64),
    RequestVote(IndexGen, TermGen, bool, bool),
    RequestVoteResponse(bool, bool),
    InstallSnapshot(IndexGen, TermGen, u8, u8),
    TimeoutNow,
    ReadIndex(u64),
    ReadIndexResponse(u64, Option<IndexGen>),
}

#[derive(Clone, Debug)]
enum Action {
    Step {
        from: u64,
        to: u64,
        term: TermGen,
        message: MessageGen,
    },
    /// A well-formed vote for the node's campaign, if it runs one, so that it also leads.
    GrantVote(u64),
    Tick(u8),
    Campaign,
    Propose,
    Read(u64),
    Transfer(u64),
    ReportSnapshot(u64, bool),
    Compact,
}

/// Node ids a message may name: members, a learner, an unknown node, and the node itself (1).
const IDS: [u64; 5] = [1, 2, 3, 4, 9];

fn term_gen() -> impl Strategy<Value = TermGen> {
    prop_oneof![
        4 => (-2i8..=2).prop_map(TermGen::Relative),
        1 => (0u64..4).prop_map(TermGen::Small),
        1 => (-2i8..=3).prop_map(TermGen::NearBound),
        1 => (0u8..3).prop_map(TermGen::NearMax),
        1 => any::<u64>().prop_map(TermGen::Any),
    ]
}

fn index_gen() -> impl Strategy<Value = IndexGen> {
    prop_oneof![
        4 => (-3i8..=3).prop_map(IndexGen::RelativeToLast),
        2 => (-2i8..=2).prop_map(IndexGen::RelativeToCommit),
        1 => (0u64..6).prop_map(IndexGen::Small),
        1 => (-2i8..=2).prop_map(IndexGen::NearBound),
        1 => (0u8..3).prop_map(IndexGen::NearMax),
        1 => any::<u64>().prop_map(IndexGen::Any),
    ]
}

fn payload_gen() -> impl Strategy<Value = PayloadGen> {
    prop_oneof![
        2 => Just(PayloadGen::Empty),
        3 => Just(PayloadGen::Command),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(v, l)| PayloadGen::Membership(v, l)),
    ]
}

fn prev_gen() -> impl Strategy<Value = PrevGen> {
    prop_oneof![
        3 => Just(PrevGen::Last),
        2 => Just(PrevGen::Commit),
        2 => (index_gen(), term_gen()).prop_map(|(i, t)| PrevGen::Other(i, t)),
    ]
}

fn entries_gen() -> impl Strategy<Value = EntriesGen> {
    prop_oneof![
        3 => (0usize..4, any::<bool>(), prop::collection::vec(payload_gen(), 4))
            .prop_map(|(count, message_term, payloads)| EntriesGen::Following { count, message_term, payloads }),
        1 => prop::collection::vec((index_gen(), term_gen(), payload_gen()), 0..4).prop_map(EntriesGen::Arbitrary),
    ]
}

fn message_gen() -> impl Strategy<Value = MessageGen> {
    prop_oneof![
        4 => (prev_gen(), entries_gen(), index_gen()).prop_map(|(p, e, c)| MessageGen::AppendEntries(p, e, c)),
        2 => index_gen().prop_map(MessageGen::Success),
        2 => (index_gen(), index_gen(), term_gen()).prop_map(|(r, i, t)| MessageGen::Reject(r, i, t)),
        2 => (index_gen(), prop_oneof![0u64..4, any::<u64>()]).prop_map(|(c, r)| MessageGen::Heartbeat(c, r)),
        2 => prop_oneof![0u64..4, any::<u64>()].prop_map(MessageGen::HeartbeatResponse),
        2 => (index_gen(), term_gen(), any::<bool>(), any::<bool>())
            .prop_map(|(i, t, p, l)| MessageGen::RequestVote(i, t, p, l)),
        3 => (any::<bool>(), any::<bool>()).prop_map(|(g, p)| MessageGen::RequestVoteResponse(g, p)),
        2 => (index_gen(), term_gen(), any::<u8>(), any::<u8>())
            .prop_map(|(i, t, v, l)| MessageGen::InstallSnapshot(i, t, v, l)),
        1 => Just(MessageGen::TimeoutNow),
        1 => (0u64..4).prop_map(MessageGen::ReadIndex),
        1 => (0u64..4, prop::option::of(index_gen())).prop_map(|(id, i)| MessageGen::ReadIndexResponse(id, i)),
    ]
}

fn id_gen() -> impl Strategy<Value = u64> {
    prop_oneof![6 => prop::sample::select(vec![2u64, 3]), 1 => prop::sample::select(IDS.to_vec())]
}

fn action_gen() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => (id_gen(), prop_oneof![19 => Just(1u64), 1 => Just(2u64)], term_gen(), message_gen())
            .prop_map(|(from, to, term, message)| Action::Step { from, to, term, message }),
        2 => (1u8..25).prop_map(Action::Tick),
        3 => prop::sample::select(vec![2u64, 3]).prop_map(Action::GrantVote),
        1 => Just(Action::Campaign),
        2 => Just(Action::Propose),
        1 => (0u64..4).prop_map(Action::Read),
        1 => id_gen().prop_map(Action::Transfer),
        1 => (id_gen(), any::<bool>()).prop_map(|(p, d)| Action::ReportSnapshot(p, d)),
        1 => Just(Action::Compact),
    ]
}

fn term_of(choice: &TermGen, ours: Term) -> Term {
    Term(match *choice {
        TermGen::Relative(delta) => ours.0.saturating_add_signed(i64::from(delta)),
        TermGen::Small(term) => term,
        TermGen::NearBound(delta) => MAX_WIRE_VALUE.saturating_add_signed(i64::from(delta)),
        TermGen::NearMax(below) => u64::MAX - u64::from(below),
        TermGen::Any(term) => term,
    })
}

fn index_of(choice: &IndexGen, raft: &Raft<MemStorage>) -> Index {
    let last = raft.status().last_log_id.index.0;
    Index(match *choice {
        IndexGen::RelativeToLast(delta) => last.saturating_add_signed(i64::from(delta)),
        IndexGen::RelativeToCommit(delta) => raft.commit_index().0.saturating_add_signed(i64::from(delta)),
        IndexGen::Small(index) => index,
        IndexGen::NearBound(delta) => MAX_WIRE_VALUE.saturating_add_signed(i64::from(delta)),
        IndexGen::NearMax(below) => u64::MAX - u64::from(below),
        IndexGen::Any(index) => index,
    })
}

fn membership_of(voters: u8, learners: u8) -> Membership {
    let pick = |mask: u8| IDS.iter().enumerate().filter(move |(i, _)| mask & (1 << i) != 0).map(|(_, &id)| NodeId(id));
    Membership { voters: pick(voters).collect(), learners: pick(learners).collect(), ..Membership::default() }
}

fn payload_of(choice: &PayloadGen) -> Payload {
    match choice {
        PayloadGen::Empty => Payload::Empty,
        PayloadGen::Command => Payload::Command(Bytes::from_static(b"c")),
        PayloadGen::Membership(voters, learners) => Payload::Membership(membership_of(*voters, *learners)),
    }
}

fn build(choice: &MessageGen, term: Term, raft: &Raft<MemStorage>) -> Message {
    let ours = raft.term();
    match choice {
        MessageGen::AppendEntries(prev, entries, commit) => {
            let status = raft.status();
            let prev_log_id = match prev {
                PrevGen::Last => status.last_log_id,
                // The commit's term is unknown here: the last entry's is a fair guess.
                PrevGen::Commit => LogId::new(status.last_log_id.term, raft.commit_index()),
                PrevGen::Other(index, term) => LogId::new(term_of(term, ours), index_of(index, raft)),
            };
            let entries = match entries {
                EntriesGen::Following { count, message_term, payloads } => (0..*count)
                    .map(|i| Entry {
                        log_id: LogId::new(
                            if *message_term { term } else { prev_log_id.term },
                            Index(prev_log_id.index.0.saturating_add(i as u64 + 1)),
                        ),
                        payload: payload_of(&payloads[i]),
                    })
                    .collect(),
                EntriesGen::Arbitrary(list) => list
                    .iter()
                    .map(|(index, term, payload)| Entry {
                        log_id: LogId::new(term_of(term, ours), index_of(index, raft)),
                        payload: payload_of(payload),
                    })
                    .collect(),
            };
            Message::AppendEntries { prev_log_id, entries, leader_commit: index_of(commit, raft) }
        }
        MessageGen::Success(index) => {
            Message::AppendEntriesResponse(AppendResult::Success { match_index: index_of(index, raft) })
        }
        MessageGen::Reject(rejected, hint_index, hint_term) => Message::AppendEntriesResponse(AppendResult::Reject {
            rejected_prev: index_of(rejected, raft),
            hint: LogId::new(term_of(hint_term, ours), index_of(hint_index, raft)),
        }),
        MessageGen::Heartbeat(commit, round) => {
            Message::Heartbeat { commit: index_of(commit, raft), heartbeat_round: *round }
        }
        MessageGen::HeartbeatResponse(round) => Message::HeartbeatResponse { heartbeat_round: *round },
        MessageGen::RequestVote(index, term, pre_vote, leader_transfer) => Message::RequestVote {
            last_log_id: LogId::new(term_of(term, ours), index_of(index, raft)),
            pre_vote: *pre_vote,
            leader_transfer: *leader_transfer,
        },
        MessageGen::RequestVoteResponse(granted, pre_vote) => {
            Message::RequestVoteResponse { granted: *granted, pre_vote: *pre_vote }
        }
        MessageGen::InstallSnapshot(index, term, voters, learners) => Message::InstallSnapshot {
            meta: SnapshotMeta {
                last_log_id: LogId::new(term_of(term, ours), index_of(index, raft)),
                membership: membership_of(*voters, *learners),
            },
        },
        MessageGen::TimeoutNow => Message::TimeoutNow,
        MessageGen::ReadIndex(id) => Message::ReadIndex { id: ReadId(*id) },
        MessageGen::ReadIndexResponse(id, index) => {
            Message::ReadIndexResponse { id: ReadId(*id), index: index.as_ref().map(|i| index_of(i, raft)) }
        }
    }
}

/// Persists, drops every message (the node's peers are only the fuzzer), applies nothing.
struct Discard;

impl ReadyHandler<MemStorage> for Discard {
    type Error = skiff_raft::Error;

    fn failed(&self, _what: &'static str, error: skiff_raft::Error) -> skiff_raft::Error {
        error
    }

    fn send(&mut self, _: &Raft<MemStorage>, _: Vec<Envelope>, _: Batch) -> Result<(), skiff_raft::Error> {
        Ok(())
    }

    fn apply(&mut self, _: &Raft<MemStorage>, _: Option<SnapshotMeta>, _: Vec<Entry>) -> Result<(), skiff_raft::Error> {
        Ok(())
    }
}

fn dropped_for_overflow(raft: &Raft<MemStorage>) -> u64 {
    raft.status().dropped_messages.get(OVERFLOW_REASON).copied().unwrap_or(0)
}

fn run(start_term: u64, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let membership =
        Membership { voters: [1, 2, 3].map(NodeId).into(), learners: [NodeId(4)].into(), ..Membership::default() };
    let mut storage = MemStorage::new(membership);
    storage.set_hard_state(HardState { term: Term(start_term), vote: None, commit: Index(0) }).unwrap();
    storage.sync().unwrap();
    let mut config = Config::new(NodeId(1));
    config.max_inflight = 2;
    let mut raft = Raft::new(config, storage).unwrap();
    let bound = Term(MAX_WIRE_VALUE);
    for action in actions {
        let before = raft.term();
        let before_drops = dropped_for_overflow(&raft);
        let before_last = raft.status().last_log_id.index;
        match &action {
            Action::Step { from, to, term, message } => {
                let term = term_of(term, before);
                let message = build(message, term, &raft);
                let envelope = Envelope { from: NodeId(*from), to: NodeId(*to), term, message };
                let status = raft.status();
                let had_ready = raft.has_ready();
                raft.step(envelope).map_err(|error| TestCaseError::fail(format!("step failed: {error}")))?;
                if dropped_for_overflow(&raft) > before_drops {
                    // Refused as close to overflow: nothing changed, nothing to persist or send.
                    let now = raft.status();
                    prop_assert_eq!(now.term, status.term, "a refused message changed the term");
                    prop_assert_eq!(
                        (now.vote, now.role, now.leader, now.commit, now.last_log_id),
                        (status.vote, status.role, status.leader, status.commit, status.last_log_id)
                    );
                    prop_assert_eq!(raft.has_ready(), had_ready, "a refused message left something to do");
                }
            }
            Action::GrantVote(from) => {
                let pre_vote = raft.role() == RoleName::PreCandidate;
                let term = if pre_vote { before.next() } else { before };
                let message = Message::RequestVoteResponse { granted: true, pre_vote };
                raft.step(Envelope { from: NodeId(*from), to: NodeId(1), term, message }).unwrap();
            }
            Action::Tick(times) => {
                for _ in 0..*times {
                    raft.tick().unwrap();
                    testing::execute(&mut raft, &mut Discard).unwrap();
                }
            }
            Action::Campaign => _ = raft.campaign_now(),
            Action::Propose => _ = raft.propose(Bytes::from_static(b"p")),
            Action::Read(id) => _ = raft.read_index(ReadId(*id)),
            Action::Transfer(target) => _ = raft.transfer_leader(NodeId(*target)),
            Action::ReportSnapshot(peer, delivered) => raft.report_snapshot(NodeId(*peer), *delivered),
            Action::Compact => {
                let applied = raft.status().applied;
                if let Ok(meta) = raft.compact(applied) {
                    raft.storage_mut().compact(meta).unwrap();
                }
            }
        }
        testing::execute(&mut raft, &mut Discard).unwrap();
        raft.assert_invariants();
        let after = raft.term();
        if !matches!(action, Action::Tick(_)) {
            // A message may raise the term to one above the larger of the bound and ours;
            // it may then start an election (TimeoutNow, a won pre-vote): one more.
            let limit = Term(bound.max(before).0 + 2);
            prop_assert!(after <= limit, "term {after} after {action:?} from {before}");
        }
        // A message never takes the log past the bound; only our own appends do (the entry
        // of a won election, proposals), which is fine: overflow is 2^63 entries away.
        let last = raft.status().last_log_id.index;
        if let Action::Step { .. } = action {
            prop_assert!(last <= Index(MAX_WIRE_VALUE.max(before_last.0) + 1), "log grew to {last} from {before_last}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_messages_never_panic_the_core(
        start_term in prop_oneof![Just(0u64), Just(3), Just(MAX_WIRE_VALUE - 1), Just(MAX_WIRE_VALUE)],
        actions in prop::collection::vec(action_gen(), 1..60),
    ) {
        run(start_term, actions)?;
    }
}
