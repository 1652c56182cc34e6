//! In-process transport: nodes of one program reach each other through a [`MemoryNetwork`].
//!
//! Tests and single-program clusters (the `embedded` example) need no sockets: each node
//! [joins](MemoryNetwork::join) the network with its inbox and gets a [`MemoryTransport`]
//! whose `send` puts the message straight into the addressee's inbox. Nothing is
//! serialized, so a message arrives exactly as it was sent, in order per sender.
//!
//! Like the TCP transport it never blocks: delivery uses `try_send`, and a full inbox, an
//! unknown peer or a cut link drops the message and counts it in the sender's
//! [`PeerHealth::dropped_messages`]. Raft tolerates the loss, and tests see it.
//!
//! **Faults.** The network is the test's hand on the wire: [`disconnect`](MemoryNetwork::disconnect)
//! and [`connect`](MemoryNetwork::connect) cut and restore the link between two nodes (both
//! directions), [`isolate`](MemoryNetwork::isolate) cuts one node from everyone,
//! [`heal`](MemoryNetwork::heal) undoes every cut, and [`leave`](MemoryNetwork::leave) is a
//! crash: the node's inbox is gone and its old transport can no longer send. A node that
//! joins again under the same id (a restart) gets a fresh transport; the old one stays dead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use skiff_raft::NodeId;
use tokio::sync::mpsc::error::TrySendError;

use super::{Inbox, PeerHealth, Transport};
use crate::wire::PeerMessage;

/// A set of in-process nodes and the links between them. Cheap to clone: clones share one
/// network.
#[derive(Clone, Debug, Default)]
pub struct MemoryNetwork {
    state: Arc<Mutex<NetworkState>>,
}

/// Everything the network knows, under one lock: sends are short (`try_send`), so one lock
/// keeps every fault change atomic with respect to delivery.
#[derive(Debug, Default)]
struct NetworkState {
    /// The nodes present now, with the incarnation that joined last.
    members: BTreeMap<NodeId, Member>,
    /// Cut links, each stored once as `(lower id, higher id)`: a cut is both directions.
    cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Nodes cut from everyone until [`MemoryNetwork::heal`].
    isolated: BTreeSet<NodeId>,
    /// Per `(receiver, sender)`: when the receiver last got a message from the sender.
    last_contact: BTreeMap<(NodeId, NodeId), Instant>,
    /// Per `(sender, addressee)`: messages dropped on the way.
    dropped_messages: BTreeMap<(NodeId, NodeId), u64>,
    /// Incarnations handed out so far; each join takes the next one.
    incarnations: u64,
}

/// One joined node.
#[derive(Debug)]
struct Member {
    inbox: Inbox,
    /// Which [`MemoryNetwork::join`] this is: a transport from an older join is dead.
    incarnation: u64,
}

impl NetworkState {
    /// Whether `from` and `to` are both present and nothing cuts the link between them.
    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        self.members.contains_key(&from)
            && self.members.contains_key(&to)
            && !self.isolated.contains(&from)
            && !self.isolated.contains(&to)
            && !self.cut_links.contains(&link(from, to))
    }

    fn count_drop(&mut self, from: NodeId, to: NodeId) {
        *self.dropped_messages.entry((from, to)).or_default() += 1;
    }
}

/// The key of the link between `a` and `b`, the same whichever way round.
fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b { (a, b) } else { (b, a) }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    /// Adds node `id`, whose messages go to `inbox`, and returns its transport. Joining an
    /// id that is already present replaces it (a restart): the earlier transport of that id
    /// can no longer send.
    pub fn join(&self, id: NodeId, inbox: Inbox) -> Arc<MemoryTransport> {
        let mut state = self.lock();
        state.incarnations += 1;
        let incarnation = state.incarnations;
        state.members.insert(id, Member { inbox, incarnation });
        Arc::new(MemoryTransport { id, incarnation, network: self.clone() })
    }

    /// Removes node `id`, as if it crashed: messages to it are dropped, and its transport
    /// can no longer send.
    pub fn leave(&self, id: NodeId) {
        self.lock().members.remove(&id);
    }

    /// Cuts the link between `a` and `b`, both directions.
    pub fn disconnect(&self, a: NodeId, b: NodeId) {
        self.lock().cut_links.insert(link(a, b));
    }

    /// Restores the link between `a` and `b`, both directions. A node that is
    /// [isolated](Self::isolate) stays isolated.
    pub fn connect(&self, a: NodeId, b: NodeId) {
        self.lock().cut_links.remove(&link(a, b));
    }

    /// Cuts `id` from every other node until [`heal`](Self::heal).
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Restores every cut link and isolated node. Nodes that [left](Self::leave) stay gone.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.cut_links.clear();
        state.isolated.clear();
    }

    /// The nodes present now.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.lock().members.keys().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        // The state stays consistent across a panic elsewhere (every update is one step).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node's end of a [`MemoryNetwork`].
#[derive(Debug)]
pub struct MemoryTransport {
    id: NodeId,
    /// The join this transport came from; it is dead once its node left or joined again.
    incarnation: u64,
    network: MemoryNetwork,
}

impl MemoryTransport {
    /// The node this transport sends for.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether this transport's node is still present as this incarnation.
    fn alive(&self, state: &NetworkState) -> bool {
        state.members.get(&self.id).is_some_and(|member| member.incarnation == self.incarnation)
    }
}

impl Transport for MemoryTransport {
    fn send(&self, to: NodeId, message: PeerMessage) {
        let mut state = self.network.lock();
        if !self.alive(&state) || !state.reachable(self.id, to) {
            state.count_drop(self.id, to);
            return;
        }
        let Some(member) = state.members.get(&to) else {
            state.count_drop(self.id, to);
            return;
        };
        match member.inbox.try_send((self.id, message)) {
            Ok(()) => {
                state.last_contact.insert((to, self.id), Instant::now());
            }
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => state.count_drop(self.id, to),
        }
    }

    /// Every other node present, plus any node this one has dropped messages for.
    /// `connected` means the link is up now; there is no round trip to measure in memory.
    fn peer_health(&self) -> BTreeMap<NodeId, PeerHealth> {
        let state = self.network.lock();
        let alive = self.alive(&state);
        let dropped_to = state.dropped_messages.keys().filter(|(from, _)| *from == self.id).map(|(_, to)| *to);
        let peers: BTreeSet<NodeId> =
            state.members.keys().copied().chain(dropped_to).filter(|peer| *peer != self.id).collect();
        peers
            .into_iter()
            .map(|peer| {
                let health = PeerHealth {
                    connected: alive && state.reachable(self.id, peer),
                    last_contact: state.last_contact.get(&(self.id, peer)).copied(),
                    round_trip: None,
                    dropped_messages: state.dropped_messages.get(&(self.id, peer)).copied().unwrap_or(0),
                };
                (peer, health)
            })
            .collect()
    }
}
