//! Raft messages built from a fuzzer's choices, with terms and indexes picked around the
//! receiver's own (so that many get past the checks of `Envelope::check`) or anywhere.

use bytes::Bytes;
use skiff_raft::{
    AppendResult, Entry, Envelope, Index, LogId, MAX_WIRE_VALUE, Membership, Message, NodeId, Payload, ReadId,
    SnapshotMeta, Term,
};

use super::cursor::Cursor;

/// Node ids a message may name: voters 1-3, learner 4, a stranger 9, and 0.
pub const IDS: [u64; 6] = [1, 2, 3, 4, 9, 0];

/// What the builder needs to know of the receiver.
#[derive(Clone, Copy, Debug, Default)]
pub struct Receiver {
    pub term: Term,
    pub last: LogId,
    pub commit: Index,
}

pub fn node(cursor: &mut Cursor) -> NodeId {
    // Mostly the receiver's voting peers.
    match cursor.below(8) {
        0..=4 => NodeId(2 + cursor.below(2) as u64),
        _ => NodeId(IDS[cursor.below(IDS.len())]),
    }
}

pub fn term(cursor: &mut Cursor, ours: Term) -> Term {
    Term(match cursor.below(8) {
        0..=3 => ours.0.saturating_add_signed(cursor.below(5) as i64 - 2),
        4 => cursor.below(4) as u64,
        5 => MAX_WIRE_VALUE.saturating_add_signed(cursor.below(6) as i64 - 2),
        _ => cursor.number(),
    })
}

pub fn index(cursor: &mut Cursor, receiver: &Receiver) -> Index {
    Index(match cursor.below(8) {
        0..=2 => receiver.last.index.0.saturating_add_signed(cursor.below(7) as i64 - 3),
        3 => receiver.commit.0.saturating_add_signed(cursor.below(5) as i64 - 2),
        4 => cursor.below(6) as u64,
        5 => MAX_WIRE_VALUE.saturating_add_signed(cursor.below(5) as i64 - 2),
        _ => cursor.number(),
    })
}

pub fn membership(cursor: &mut Cursor) -> Membership {
    let (voters, learners) = (cursor.byte(), cursor.byte());
    let pick = |mask: u8| IDS.iter().enumerate().filter(move |(i, _)| mask & (1 << i) != 0).map(|(_, &id)| NodeId(id));
    Membership { voters: pick(voters).collect(), learners: pick(learners).collect(), ..Membership::default() }
}

pub fn payload(cursor: &mut Cursor) -> Payload {
    match cursor.below(4) {
        0 => Payload::Empty,
        1 => Payload::Membership(membership(cursor)),
        _ => Payload::Command(Bytes::copy_from_slice(cursor.bytes())),
    }
}

/// An envelope to the receiver (node 1), mostly.
pub fn envelope(cursor: &mut Cursor, receiver: &Receiver) -> Envelope {
    let from = node(cursor);
    let to = if cursor.below(16) == 0 { node(cursor) } else { NodeId(1) };
    let term = term(cursor, receiver.term);
    let message = message(cursor, receiver, term);
    Envelope { from, to, term, message }
}

pub fn message(cursor: &mut Cursor, receiver: &Receiver, message_term: Term) -> Message {
    let ours = receiver.term;
    match cursor.below(11) {
        0 => {
            let prev_log_id = match cursor.below(3) {
                0 => receiver.last,
                1 => LogId::new(receiver.last.term, receiver.commit),
                _ => LogId::new(term(cursor, ours), index(cursor, receiver)),
            };
            let following = cursor.bool();
            let entries = (0..cursor.below(5))
                .map(|i| {
                    let log_id = if following {
                        let entry_term = if cursor.bool() { message_term } else { prev_log_id.term };
                        LogId::new(entry_term, Index(prev_log_id.index.0.saturating_add(i as u64 + 1)))
                    } else {
                        LogId::new(term(cursor, ours), index(cursor, receiver))
                    };
                    Entry { log_id, payload: payload(cursor) }
                })
                .collect();
            Message::AppendEntries { prev_log_id, entries, leader_commit: index(cursor, receiver) }
        }
        1 => Message::AppendEntriesResponse(AppendResult::Success { match_index: index(cursor, receiver) }),
        2 => Message::AppendEntriesResponse(AppendResult::Reject {
            rejected_prev: index(cursor, receiver),
            hint: LogId::new(term(cursor, ours), index(cursor, receiver)),
        }),
        3 => Message::Heartbeat { commit: index(cursor, receiver), heartbeat_round: cursor.number() },
        4 => Message::HeartbeatResponse { heartbeat_round: cursor.number() },
        5 => Message::RequestVote {
            last_log_id: LogId::new(term(cursor, ours), index(cursor, receiver)),
            pre_vote: cursor.bool(),
            leader_transfer: cursor.bool(),
        },
        6 => Message::RequestVoteResponse { granted: cursor.bool(), pre_vote: cursor.bool() },
        7 => Message::InstallSnapshot {
            meta: SnapshotMeta {
                last_log_id: LogId::new(term(cursor, ours), index(cursor, receiver)),
                membership: membership(cursor),
            },
        },
        8 => Message::TimeoutNow,
        9 => Message::ReadIndex { id: ReadId(cursor.number()) },
        _ => Message::ReadIndexResponse {
            id: ReadId(cursor.number()),
            index: cursor.bool().then(|| index(cursor, receiver)),
        },
    }
}
