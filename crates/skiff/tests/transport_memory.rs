//! The in-process transport: delivery, and the fault hooks tests use to break the network.

use std::sync::Arc;

use skiff::transport::memory::{MemoryNetwork, MemoryTransport};
use skiff::transport::{PeerHealth, Transport};
use skiff::wire::PeerMessage;
use skiff::{Index, NodeId};
use tokio::sync::mpsc;

type Inbox = mpsc::Receiver<(NodeId, PeerMessage)>;

fn message(n: u64) -> PeerMessage {
    PeerMessage::SnapshotAck { snapshot_index: Index(n), offset: n, ok: true }
}

fn join(network: &MemoryNetwork, id: u64, capacity: usize) -> (Arc<MemoryTransport>, Inbox) {
    let (sender, inbox) = mpsc::channel(capacity);
    (network.join(NodeId(id), sender), inbox)
}

fn health(transport: &MemoryTransport, peer: u64) -> PeerHealth {
    transport.peer_health().get(&NodeId(peer)).cloned().unwrap_or_default()
}

/// Everything waiting in `inbox`, as `(sender, number)`.
fn drain(inbox: &mut Inbox) -> Vec<(u64, u64)> {
    let mut received = Vec::new();
    while let Ok((from, PeerMessage::SnapshotAck { snapshot_index, .. })) = inbox.try_recv() {
        received.push((from.0, snapshot_index.0));
    }
    received
}

#[test]
fn delivers_in_order_with_the_sender() {
    let network = MemoryNetwork::new();
    let (t1, mut inbox1) = join(&network, 1, 16);
    let (t2, mut inbox2) = join(&network, 2, 16);
    for n in 0..5 {
        t1.send(NodeId(2), message(n));
    }
    t2.send(NodeId(1), message(9));
    assert_eq!(drain(&mut inbox2), (0..5).map(|n| (1, n)).collect::<Vec<_>>());
    assert_eq!(drain(&mut inbox1), [(2, 9)]);
    let seen_by_2 = health(&t2, 1);
    assert!(seen_by_2.connected && seen_by_2.last_contact.is_some());
    assert_eq!(seen_by_2.dropped_messages, 0);
    assert_eq!(network.members().len(), 2);
}

#[test]
fn disconnect_cuts_both_directions_until_connect() {
    let network = MemoryNetwork::new();
    let (t1, mut inbox1) = join(&network, 1, 16);
    let (t2, mut inbox2) = join(&network, 2, 16);
    let (t3, mut inbox3) = join(&network, 3, 16);
    network.disconnect(NodeId(2), NodeId(1));
    t1.send(NodeId(2), message(1));
    t2.send(NodeId(1), message(2));
    t1.send(NodeId(3), message(3));
    assert!(drain(&mut inbox1).is_empty() && drain(&mut inbox2).is_empty());
    assert_eq!(drain(&mut inbox3), [(1, 3)]);
    assert!(!health(&t1, 2).connected && health(&t1, 3).connected);
    assert_eq!((health(&t1, 2).dropped_messages, health(&t2, 1).dropped_messages), (1, 1));

    network.connect(NodeId(1), NodeId(2));
    t1.send(NodeId(2), message(4));
    assert_eq!(drain(&mut inbox2), [(1, 4)]);
    assert!(health(&t3, 1).connected);
}

#[test]
fn isolate_cuts_a_node_from_everyone_until_heal() {
    let network = MemoryNetwork::new();
    let (t1, mut inbox1) = join(&network, 1, 16);
    let (_t2, mut inbox2) = join(&network, 2, 16);
    let (t3, _inbox3) = join(&network, 3, 16);
    network.isolate(NodeId(3));
    network.disconnect(NodeId(1), NodeId(2));
    t3.send(NodeId(1), message(1));
    t1.send(NodeId(3), message(2));
    assert!(drain(&mut inbox1).is_empty());
    assert!(t3.peer_health().values().all(|peer| !peer.connected));

    network.heal();
    t3.send(NodeId(1), message(3));
    t1.send(NodeId(2), message(4));
    assert_eq!(drain(&mut inbox1), [(3, 3)]);
    assert_eq!(drain(&mut inbox2), [(1, 4)]);
    assert!(t3.peer_health().values().all(|peer| peer.connected));
}

#[test]
fn full_inbox_and_unknown_peer_drop_and_count() {
    let network = MemoryNetwork::new();
    let (t1, _inbox1) = join(&network, 1, 16);
    let (_t2, mut inbox2) = join(&network, 2, 2);
    for n in 0..5 {
        t1.send(NodeId(2), message(n));
    }
    t1.send(NodeId(7), message(0));
    // The first two fit; the rest are dropped, not queued.
    assert_eq!(drain(&mut inbox2), [(1, 0), (1, 1)]);
    assert_eq!(health(&t1, 2).dropped_messages, 3);
    let unknown = health(&t1, 7);
    assert!(!unknown.connected);
    assert_eq!(unknown.dropped_messages, 1);
}

#[test]
fn a_node_that_left_neither_receives_nor_sends_and_can_rejoin() {
    let network = MemoryNetwork::new();
    let (t1, mut inbox1) = join(&network, 1, 16);
    let (t2, _inbox2) = join(&network, 2, 16);
    network.leave(NodeId(2));
    t1.send(NodeId(2), message(1));
    t2.send(NodeId(1), message(2));
    assert!(drain(&mut inbox1).is_empty());
    assert_eq!(health(&t1, 2).dropped_messages, 1);
    assert!(!health(&t1, 2).connected);

    // A restart: the new incarnation works, the old transport stays dead.
    let (t2_again, mut inbox2_again) = join(&network, 2, 16);
    t1.send(NodeId(2), message(3));
    t2.send(NodeId(1), message(4));
    t2_again.send(NodeId(1), message(5));
    assert_eq!(drain(&mut inbox2_again), [(1, 3)]);
    assert_eq!(drain(&mut inbox1), [(2, 5)]);
    assert!(!health(&t2, 1).connected && health(&t2_again, 1).connected);
}
