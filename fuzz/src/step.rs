//! `Raft::step` on envelopes from the wire: the consensus core must never panic, never
//! fail a `step`, and keep its invariants, whatever a peer sends ("no panic from the
//! wire", see `Raft::step`).
//!
//! Input: byte 0 picks the mode and the start term; the rest is a script of actions. An
//! action is a control byte: a tick, a campaign, a proposal, a read, a compaction, a vote
//! granted to our campaign, or a message. In raw mode a message is the postcard encoding
//! of an `Envelope` (what a `PeerMessage::Raft` frame carries), taken from the input as
//! is; in built mode it is built from the input's choices around the node's own terms
//! and indexes (`raft_input.rs`), so that more of them get past the checks. Every decoded
//! envelope re-encodes to bytes that decode to it.

use bytes::Bytes;
use skiff_raft::testing::{self, Batch, ReadyHandler};
use skiff_raft::{
    Config, Entry, Envelope, HardState, Index, MAX_WIRE_VALUE, MemStorage, Membership, Message, NodeId, Raft, ReadId,
    RoleName, SnapshotMeta, Storage, Term,
};

#[path = "cursor.rs"]
pub(crate) mod cursor;
#[path = "raft_input.rs"]
pub(crate) mod raft_input;

use cursor::Cursor;
use raft_input::Receiver;

/// The most actions one input runs.
const MAX_ACTIONS: usize = 128;

/// Persists, drops every message (the node's peers are the fuzzer), applies nothing.
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

/// Node 1 of voters 1-3 and learner 4, at `term`.
fn node(term: Term) -> Raft<MemStorage> {
    let membership =
        Membership { voters: [1, 2, 3].map(NodeId).into(), learners: [NodeId(4)].into(), ..Membership::default() };
    let mut storage = MemStorage::new(membership);
    storage
        .set_hard_state(HardState { term, vote: None, commit: Index(0) })
        .expect("a new MemStorage takes a hard state");
    storage.sync().expect("a MemStorage syncs");
    let mut config = Config::new(NodeId(1));
    config.max_inflight = 2;
    Raft::new(config, storage).expect("a node starts on a valid storage")
}

fn receiver(raft: &Raft<MemStorage>) -> Receiver {
    let status = raft.status();
    Receiver { term: status.term, last: status.last_log_id, commit: status.commit }
}

/// The postcard encoding of an envelope at the front of `bytes`, and the rest; checks that
/// it re-encodes to bytes that decode to it.
fn decode_envelope(bytes: &[u8]) -> Option<(Envelope, &[u8])> {
    let (envelope, rest) = postcard::take_from_bytes::<Envelope>(bytes).ok()?;
    let again = postcard::to_allocvec(&envelope).expect("a decoded envelope encodes");
    let decoded: Envelope = postcard::from_bytes(&again).expect("a re-encoded envelope decodes");
    assert_eq!(decoded, envelope, "an envelope changed when re-encoded");
    Some((envelope, rest))
}

/// Runs one input (see the module documentation).
pub fn check(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    let raw = mode & 1 == 0;
    let start = match (mode >> 1) % 4 {
        0 => Term(0),
        1 => Term(3),
        2 => Term(MAX_WIRE_VALUE - 1),
        _ => Term(MAX_WIRE_VALUE),
    };
    let mut raft = node(start);
    for _ in 0..MAX_ACTIONS {
        if cursor.is_empty() {
            break;
        }
        match cursor.below(16) {
            0 => {
                for _ in 0..cursor.below(24) + 1 {
                    raft.tick().expect("a tick never fails on a MemStorage");
                    testing::execute(&mut raft, &mut Discard).expect("a Ready executes on a MemStorage");
                }
            }
            1 => _ = raft.campaign_now(),
            2 => _ = raft.propose(Bytes::from_static(b"p")),
            3 => _ = raft.read_index(ReadId(cursor.number())),
            4 => _ = raft.transfer_leader(raft_input::node(&mut cursor)),
            5 => raft.report_snapshot(raft_input::node(&mut cursor), cursor.bool()),
            6 => {
                let applied = raft.status().applied;
                if let Ok(meta) = raft.compact(applied) {
                    raft.storage_mut().compact(meta).expect("a MemStorage compacts what the core compacted");
                }
            }
            7 => {
                // A well-formed vote for our campaign, if we run one, so that we also lead.
                let pre_vote = raft.role() == RoleName::PreCandidate;
                let term = if pre_vote { raft.term().next() } else { raft.term() };
                let from = NodeId(2 + cursor.below(2) as u64);
                let message = Message::RequestVoteResponse { granted: true, pre_vote };
                step(&mut raft, Envelope { from, to: NodeId(1), term, message });
            }
            _ => {
                let envelope = if raw {
                    match cursor.decode(decode_envelope) {
                        Some(envelope) => envelope,
                        None => break,
                    }
                } else {
                    raft_input::envelope(&mut cursor, &receiver(&raft))
                };
                step(&mut raft, envelope);
            }
        }
        testing::execute(&mut raft, &mut Discard).expect("a Ready executes on a MemStorage");
        raft.assert_invariants();
    }
}

/// Steps `envelope`: it must not fail, and a message the core refuses as close to overflow
/// changes nothing.
fn step(raft: &mut Raft<MemStorage>, envelope: Envelope) {
    let before = raft.status();
    let had_ready = raft.has_ready();
    if let Err(error) = raft.step(envelope.clone()) {
        panic!("step failed on {envelope:?}: {error}");
    }
    let after = raft.status();
    let reason = skiff_raft::drop_reason::CLOSE_TO_OVERFLOW;
    if after.dropped_messages.get(reason) > before.dropped_messages.get(reason) {
        let state = |status: &skiff_raft::Status| {
            (status.term, status.vote, status.role, status.leader, status.commit, status.last_log_id)
        };
        assert_eq!(state(&after), state(&before), "a message refused as close to overflow changed the node");
        assert_eq!(raft.has_ready(), had_ready, "a message refused as close to overflow left something to do");
    }
}
