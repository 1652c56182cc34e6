//! What nodes say to each other over the peer transport, one message per frame.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skiff_raft::{Envelope, Index, MembershipChange, NodeId, SnapshotMeta};

use crate::error::ErrorKind;

/// A frame's payload between two nodes of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// A message of the consensus protocol.
    Raft(Envelope),
    /// A follower forwards a client's request to the leader it knows.
    Forward { request: u64, body: ForwardedRequest },
    /// The leader's answer to a forwarded request.
    ForwardResult { request: u64, result: Result<Bytes, ForwardError> },
    /// A piece of the leader's snapshot `meta`, starting at byte `offset` of its data. The
    /// last chunk has `done`; the follower then hands `InstallSnapshot` to its core.
    SnapshotChunk { meta: SnapshotMeta, offset: u64, data: Bytes, done: bool },
    /// The follower received `snapshot_index`'s data up to `offset` (or failed, `ok = false`).
    SnapshotAck { snapshot_index: Index, offset: u64, ok: bool },
}

/// Why a forwarded request failed, so the follower can tell its caller whether a retry
/// is safe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardError {
    /// Certainly not applied (no leader, leadership changed, a transfer in progress): retry.
    Retry,
    /// Appended but the outcome is unknown (the leader stopped or lost its log position).
    OutcomeUnknown,
    /// Refused or failed on the leader: what kind of error it was there (so a storage
    /// failure on the leader is not taken for a conflict here), and its message.
    Refused { kind: ErrorKind, message: String },
}

/// A request a follower forwards to the leader. (Reads need none: the core forwards
/// `ReadIndex` itself.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardedRequest {
    /// A command, serialized with postcard; the result carries the serialized output.
    Propose(Bytes),
    Membership(MembershipChange),
    /// Hand leadership to this voter, or (`None`) to the one the leader picks: its
    /// successor, the voter holding most of its log.
    TransferLeader(Option<NodeId>),
}
