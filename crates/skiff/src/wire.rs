//! What nodes say to each other over the peer transport, one message per frame.

use std::fmt;

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
    /// `cluster_id` is the sending node's cluster id, which the TCP transport fills in as it
    /// sends the chunk (leave it `None`) and checks on arrival: a chunk of another cluster is
    /// dropped.
    SnapshotChunk { meta: SnapshotMeta, offset: u64, data: Bytes, done: bool, cluster_id: Option<ClusterId> },
    /// The follower received `snapshot_index`'s data up to `offset` (or failed, `ok = false`).
    SnapshotAck { snapshot_index: Index, offset: u64, ok: bool },
    /// A node with a new data directory asks an initial member about the cluster (see
    /// [`crate::bootstrap`]).
    BootstrapProbe,
    /// The answer (or, from a node that just confirmed, an announcement): the answerer's
    /// nonce while it is new itself, whether it holds data, and once confirmed the initial
    /// members it knows started empty at the bootstrap, with their directories' nonces.
    BootstrapAnswer { pending: Option<u64>, has_data: bool, witnesses: Vec<(NodeId, u64)> },
    /// Where the sender's membership says each member's peers reach it (`host:port`). A
    /// node whose log is behind may not know a newer member, such as a leader added by
    /// address; since only the lower id of two dials, it could never reach that leader to
    /// catch up. Nodes send this to their peers now and then; see `Driver::gossip_addresses`.
    /// `index` is where the sender's membership was appended: only a newer one teaches.
    Addresses { index: Index, members: Vec<(NodeId, String)> },
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

/// A cluster's random id, 128 bits, made when the cluster is first bootstrapped (see the
/// `tcp` transport's documentation). Written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    /// A new id from the operating system's secure random source.
    pub fn random() -> std::io::Result<ClusterId> {
        let mut bytes = [0_u8; 16];
        crate::tls::provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| std::io::Error::other("the operating system's random source failed"))?;
        Ok(ClusterId(bytes))
    }

    /// Parses 32 hex digits; `None` for anything else.
    pub fn parse(text: &str) -> Option<ClusterId> {
        if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0_u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(ClusterId(bytes))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_print_and_parse_as_hex() {
        let id = ClusterId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(ClusterId::parse(&id.to_string()), Some(id));
        assert_eq!(ClusterId::parse("ab"), None);
        assert_eq!(ClusterId::parse(&"zz".repeat(16)), None);
        assert_eq!(ClusterId::parse(&"+1".repeat(16)), None);
        assert_ne!(ClusterId::random().unwrap(), ClusterId::random().unwrap());
    }
}
