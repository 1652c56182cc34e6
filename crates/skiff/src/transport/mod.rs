//! Peer transports: how [`PeerMessage`]s travel between nodes.
//!
//! A transport delivers each message it receives into the node's inbox, tagged with the
//! authenticated sender, and sends each outgoing message to exactly one peer. It never
//! blocks the caller: a peer that cannot keep up has its oldest queued messages dropped
//! (Raft tolerates loss), and the drop is counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use skiff_raft::NodeId;

use crate::wire::PeerMessage;

pub mod faults;
pub mod memory;
pub mod tcp;

/// Where a transport delivers what arrives: `(sender, message)`.
pub type Inbox = tokio::sync::mpsc::Sender<(NodeId, PeerMessage)>;

/// A way to reach the other nodes.
pub trait Transport: Send + Sync + 'static {
    /// Queues `message` for `to`. Never blocks.
    fn send(&self, to: NodeId, message: PeerMessage);

    /// What the transport knows of each peer's health: the failure-detector view.
    fn peer_health(&self) -> BTreeMap<NodeId, PeerHealth>;

    /// The membership changed: `members` are the other members, each with the address to
    /// reach it at if one is known. A member with an address becomes a peer (or moves to
    /// it); one without keeps whatever address the transport had; a peer that is not in
    /// `members` is dropped and refused from now on. The default does nothing, for
    /// transports whose peers are fixed.
    fn set_members(&self, members: &BTreeMap<NodeId, Option<String>>) {
        let _ = members;
    }

    /// A peer says member `id` is reached at `address`: dial it there if it is not a peer
    /// yet (it stays one until the next membership change). The default does nothing.
    fn learn_address(&self, id: NodeId, address: String) {
        let _ = (id, address);
    }

    /// This node made the cluster's id (it bootstrapped a new cluster, see
    /// [`crate::bootstrap`]): record it, present it from now on, and have the peers
    /// connected without one take it. Does nothing if the transport has an id already.
    fn set_cluster_id(&self, id: crate::wire::ClusterId) -> std::io::Result<()> {
        let _ = id;
        Ok(())
    }
}

/// One peer as the transport sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerHealth {
    /// Whether a connection is up now.
    pub connected: bool,
    /// When a frame last arrived from the peer.
    pub last_contact: Option<Instant>,
    /// The latest measured round trip, if any.
    pub round_trip: Option<Duration>,
    /// Messages to this peer dropped because its queue was full or it was unreachable.
    pub dropped_messages: u64,
}
