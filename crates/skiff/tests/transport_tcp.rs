//! The TCP peer transport on loopback: delivery in order, reconnects, back-pressure,
//! hostile connections refused without harm to the legitimate peers, and cluster ids.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_testkit::init_logs;
use skiff_testkit::ports::free_address;
use skiff_testkit::wait::{TIMEOUT, eventually_async};

use bytes::Bytes;
use skiff::transport::tcp::{ClusterIdRecorder, TcpOptions, TcpTransport};
use skiff::transport::{PeerHealth, Transport};
use skiff::wire::{ClusterId, PeerMessage};
use skiff::{Index, NodeId};
use skiff_raft::SnapshotMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const CLUSTER: &str = "test";

struct Node {
    transport: Arc<TcpTransport>,
    inbox: mpsc::Receiver<(NodeId, PeerMessage)>,
}

impl Node {
    fn id(&self) -> NodeId {
        self.transport.id()
    }

    fn addr(&self) -> String {
        self.transport.local_addr().to_string()
    }

    fn health(&self, peer: NodeId) -> PeerHealth {
        self.transport.peer_health().get(&peer).cloned().unwrap_or_default()
    }

    async fn receive(&mut self) -> (NodeId, PeerMessage) {
        match tokio::time::timeout(TIMEOUT, self.inbox.recv()).await {
            Ok(Some(received)) => received,
            Ok(None) => panic!("{}: inbox closed", self.id()),
            Err(_) => panic!("{}: nothing arrived within {TIMEOUT:?}", self.id()),
        }
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Options with fast pings, so round trips show up quickly.
fn options(id: u64, listen: SocketAddr) -> TcpOptions {
    let mut options = TcpOptions::new(NodeId(id), CLUSTER, listen);
    options.ping_interval = Duration::from_millis(50);
    options.idle_timeout = Duration::from_secs(2);
    options.handshake_timeout = Duration::from_secs(1);
    options
}

async fn start(options: TcpOptions, inbox_capacity: usize) -> Node {
    let (sender, inbox) = mpsc::channel(inbox_capacity);
    let transport = TcpTransport::start(options, sender).await.unwrap();
    Node { transport, inbox }
}

/// Tells every node about every other.
fn introduce(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            a.transport.add_peer(b.id(), b.addr());
        }
    }
}

async fn wait_connected(a: &Node, b: &Node) {
    eventually_async(format!("{} and {} are connected", a.id(), b.id()), async || {
        a.health(b.id()).connected && b.health(a.id()).connected
    })
    .await;
}

fn message(n: u64) -> PeerMessage {
    PeerMessage::SnapshotAck { snapshot_index: Index(n), offset: n, ok: true }
}

fn number(message: &PeerMessage) -> u64 {
    match message {
        PeerMessage::SnapshotAck { snapshot_index, .. } => snapshot_index.0,
        PeerMessage::SnapshotChunk { offset, .. } => *offset,
        other => panic!("unexpected message {other:?}"),
    }
}

/// Sends `count` messages each way and checks they arrive complete and in order.
async fn exchange(a: &mut Node, b: &mut Node, count: u64) {
    for n in 0..count {
        a.transport.send(b.id(), message(n));
        b.transport.send(a.id(), message(n));
    }
    let (a_id, b_id) = (a.id(), b.id());
    for (receiver, sender) in [(a, b_id), (b, a_id)] {
        for n in 0..count {
            let (from, received) = receiver.receive().await;
            assert_eq!((from, number(&received)), (sender, n), "at {}", receiver.id());
        }
    }
}

#[tokio::test]
async fn two_nodes_exchange_messages_in_order_both_ways() {
    init_logs();
    let mut n1 = start(options(1, local()), 1024).await;
    let mut n2 = start(options(2, local()), 1024).await;
    introduce(&[&n1, &n2]);
    wait_connected(&n1, &n2).await;
    exchange(&mut n1, &mut n2, 500).await;
    // A message of every kind survives the trip intact.
    let chunk = PeerMessage::SnapshotChunk {
        meta: SnapshotMeta::default(),
        offset: 7,
        data: Bytes::from(vec![0xab; 100_000]),
        done: true,
        cluster_id: None,
    };
    n1.transport.send(n2.id(), chunk.clone());
    assert_eq!(n2.receive().await, (n1.id(), chunk));
    eventually_async("both measured a round trip", async || {
        n1.health(n2.id()).round_trip.is_some() && n2.health(n1.id()).round_trip.is_some()
    })
    .await;
    let health = n1.health(n2.id());
    assert!(health.last_contact.is_some());
    assert_eq!(health.dropped_messages, 0);
    n1.transport.shutdown().await;
    n2.transport.shutdown().await;
}

#[tokio::test]
async fn three_nodes_exchange_messages_in_order() {
    init_logs();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(options(id, local()), 1024).await);
    }
    introduce(&nodes.iter().collect::<Vec<_>>());
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        wait_connected(&nodes[a], &nodes[b]).await;
    }
    for n in 0..100 {
        for sender in &nodes {
            for receiver in &nodes {
                if sender.id() != receiver.id() {
                    sender.transport.send(receiver.id(), message(n));
                }
            }
        }
    }
    for receiver in &mut nodes {
        let mut next = std::collections::BTreeMap::new();
        for _ in 0..200 {
            let (from, received) = receiver.receive().await;
            let expected = next.entry(from).or_insert(0);
            assert_eq!(number(&received), *expected, "from {from} at {}", receiver.id());
            *expected += 1;
        }
        assert_eq!(next.len(), 2);
    }
}

#[tokio::test]
async fn restarted_peers_are_reconnected() {
    init_logs();
    let mut n1 = start(options(1, local()), 1024).await;
    let mut n2 = start(options(2, local()), 1024).await;
    introduce(&[&n1, &n2]);
    wait_connected(&n1, &n2).await;
    exchange(&mut n1, &mut n2, 10).await;

    // The accepting side (higher id) restarts on the same address; n1 redials it.
    let n2_addr = n2.transport.local_addr();
    n2.transport.shutdown().await;
    drop(n2);
    eventually_async("n1 sees n2 gone", async || !n1.health(NodeId(2)).connected).await;
    let mut n2 = start(options(2, n2_addr), 1024).await;
    n2.transport.add_peer(n1.id(), n1.addr());
    wait_connected(&n1, &n2).await;
    exchange(&mut n1, &mut n2, 10).await;

    // The dialing side (lower id) restarts; n2 takes its new connection.
    let n1_addr = n1.transport.local_addr();
    n1.transport.shutdown().await;
    drop(n1);
    eventually_async("n2 sees n1 gone", async || !n2.health(NodeId(1)).connected).await;
    let mut n1 = start(options(1, n1_addr), 1024).await;
    n1.transport.add_peer(n2.id(), n2.addr());
    wait_connected(&n1, &n2).await;
    exchange(&mut n1, &mut n2, 10).await;
}

#[tokio::test]
async fn removed_peer_is_refused_until_added_again() {
    init_logs();
    let mut n1 = start(options(1, local()), 1024).await;
    let mut n2 = start(options(2, local()), 1024).await;
    introduce(&[&n1, &n2]);
    wait_connected(&n1, &n2).await;
    n2.transport.remove_peer(n1.id());
    assert!(!n2.transport.peer_health().contains_key(&n1.id()));
    eventually_async("n1 sees the connection closed", async || !n1.health(n2.id()).connected).await;
    eventually_async("n2 refuses n1's redial", async || n2.transport.refused_connections() > 0).await;
    n2.transport.add_peer(n1.id(), n1.addr());
    wait_connected(&n1, &n2).await;
    exchange(&mut n1, &mut n2, 10).await;
}

#[tokio::test]
async fn send_never_blocks_and_counts_what_it_drops() {
    init_logs();
    // An address where nothing listens.
    let nowhere = free_address();
    let mut options = options(1, local());
    options.queue_capacity = 8;
    options.peers.insert(NodeId(2), nowhere);
    let n1 = start(options, 16).await;
    let started = Instant::now();
    for n in 0..1000 {
        n1.transport.send(NodeId(2), message(n));
        n1.transport.send(NodeId(9), message(n)); // not a peer at all
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(n1.health(NodeId(2)).dropped_messages >= 992);
    // The failed dial discards the rest: everything is accounted for.
    eventually_async("all 1000 counted", async || n1.health(NodeId(2)).dropped_messages == 1000).await;
    assert!(!n1.health(NodeId(2)).connected);
    assert_eq!(n1.transport.peer_health().len(), 1);
}

#[tokio::test]
async fn slow_receiver_loses_the_oldest_messages_not_the_newest() {
    init_logs();
    let mut sender_options = options(1, local());
    sender_options.queue_capacity = 16;
    let n1 = start(sender_options, 16).await;
    // n2's inbox holds one message and nobody reads it until the end: its reader stalls,
    // TCP's buffers fill, and then n1's queue overflows.
    let mut n2 = start(options(2, local()), 1).await;
    introduce(&[&n1, &n2]);
    wait_connected(&n1, &n2).await;
    const COUNT: u64 = 20_000; // 80 MB: more than loopback's socket buffers can hold
    for n in 0..COUNT {
        let data = Bytes::from(vec![0; 4096]);
        n1.transport.send(
            n2.id(),
            PeerMessage::SnapshotChunk {
                meta: SnapshotMeta::default(),
                offset: n,
                data,
                done: false,
                cluster_id: None,
            },
        );
        if n % 4 == 0 {
            tokio::task::yield_now().await; // let the writer drain what it can
        }
    }
    let mut received = Vec::new();
    while received.last() != Some(&(COUNT - 1)) {
        let (_, message) = n2.receive().await;
        received.push(number(&message));
    }
    assert!(received.windows(2).all(|pair| pair[0] < pair[1]), "delivered out of order");
    let dropped = n1.health(n2.id()).dropped_messages;
    assert!(dropped > 0 && received.len() > 16, "{} delivered, {dropped} dropped", received.len());
    assert_eq!(received.len() as u64 + dropped, COUNT, "every message is delivered or counted");
    assert!(n1.health(n2.id()).connected, "a slow peer is not a dead one");
}

// --- hostile connections ---------------------------------------------------------------

/// A `Hello` frame written by hand, so this test also pins the handshake's wire format:
/// 4-byte big-endian length, then postcard: variant 0, version 3, cluster, from, to, and no
/// cluster id.
fn hello_frame(cluster: &str, from: u64, to: u64) -> Vec<u8> {
    hello_frame_with_id(cluster, from, to, None)
}

/// A `Hello` frame presenting `cluster_id`.
fn hello_frame_with_id(cluster: &str, from: u64, to: u64, cluster_id: Option<ClusterId>) -> Vec<u8> {
    let mut body = vec![0, 3];
    varint(&mut body, cluster.len() as u64);
    body.extend_from_slice(cluster.as_bytes());
    varint(&mut body, from);
    varint(&mut body, to);
    match cluster_id {
        None => body.push(0),
        Some(id) => {
            body.push(1);
            body.extend_from_slice(&id.0);
        }
    }
    framed(&body)
}

/// The one answer a refused dialer gets: `Refused { reason: "refused" }`, framed.
fn refused_frame() -> Vec<u8> {
    framed(&[&[1, 7][..], b"refused"].concat())
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Connects to `addr`, writes `bytes`, and returns what the transport answered before it
/// closed the connection. Panics if it keeps the connection open.
async fn send_raw(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The transport may close before reading everything; that is the point.
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream).await
}

async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    match tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}"),
        Err(_) => panic!("the transport kept a hostile connection open"),
    }
    answer
}

/// Handshakes as `from` (a legitimate id), then sends `bytes`; the transport must close.
async fn send_after_handshake(addr: &str, from: u64, to: u64, bytes: &[u8]) {
    let mut stream = handshake_raw(addr, hello_frame(CLUSTER, from, to)).await;
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream).await;
}

/// Connects to `addr`, says `hello`, and checks the transport answered with a `Hello`.
async fn handshake_raw(addr: &str, hello: Vec<u8>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&hello).await.unwrap();
    let mut length = [0; 4];
    stream.read_exact(&mut length).await.unwrap();
    let mut answer = vec![0; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], 0, "the transport answers a good Hello with its own");
    stream
}

#[tokio::test]
async fn hostile_connections_are_refused_and_the_peer_keeps_working() {
    init_logs();
    // n2 knows n1 (played below by raw sockets; n2 never dials a lower id) and the real n3.
    let mut n2_options = options(2, local());
    n2_options.max_frame_bytes = 2048;
    n2_options.peers.insert(NodeId(1), "127.0.0.1:9".into());
    let mut n2 = start(n2_options, 1024).await;
    let mut n3 = start(options(3, local()), 1024).await;
    introduce(&[&n2, &n3]);
    wait_connected(&n2, &n3).await;
    let addr = n2.addr();

    // (what, bytes, whether the transport explains the refusal with a `Refused` frame)
    let refusals: [(&str, Vec<u8>, bool); 8] = [
        ("text", b"GET / HTTP/1.1\r\nHost: n2\r\n\r\n".to_vec(), false),
        ("garbage in a frame", framed(&[0xff; 6]), false),
        ("a frame too big for a handshake", [&(1u32 << 20).to_be_bytes()[..], &[0; 64]].concat(), false),
        ("a message before the Hello", framed(&[2, 4, 1, 1, 1]), false),
        ("another cluster", hello_frame("other", 1, 2), true),
        ("an unknown id", hello_frame(CLUSTER, 9, 2), true),
        ("a Hello for another node", hello_frame(CLUSTER, 1, 7), true),
        ("a higher id dialing", hello_frame(CLUSTER, 3, 2), true),
    ];
    for (number, (what, bytes, explained)) in refusals.iter().enumerate() {
        let answer = send_raw(&addr, bytes).await;
        if *explained {
            // Variant 1 of the frame enum, and nothing of ours: no cluster name, no reason.
            assert_eq!(answer, refused_frame(), "{what}: {answer:?}");
        }
        eventually_async(format!("{what} is counted"), async || n2.transport.refused_connections() > number as u64)
            .await;
    }
    // After a good handshake: garbage, an oversized frame, and a second Hello each close the
    // connection (only that one).
    send_after_handshake(&addr, 1, 2, &framed(&[0xff; 6])).await;
    send_after_handshake(&addr, 1, 2, &[&2049u32.to_be_bytes()[..], &[0; 64]].concat()).await;
    send_after_handshake(&addr, 1, 2, &hello_frame(CLUSTER, 1, 2)).await;

    assert_eq!(n2.transport.refused_connections(), refusals.len() as u64);
    assert!(n2.health(n3.id()).connected && n3.health(n2.id()).connected);
    exchange(&mut n2, &mut n3, 100).await;
}

#[tokio::test]
async fn nodes_of_two_clusters_never_connect() {
    init_logs();
    let mut other = TcpOptions::new(NodeId(2), "other", local());
    other.peers.insert(NodeId(1), "127.0.0.1:9".into());
    let n2 = start(other, 16).await;
    let mut n1_options = options(1, local());
    n1_options.peers.insert(NodeId(2), n2.addr());
    let n1 = start(n1_options, 16).await;
    eventually_async("n2 refuses n1", async || n2.transport.refused_connections() > 0).await;
    assert!(!n1.health(NodeId(2)).connected);
    assert!(!n2.health(NodeId(1)).connected);
}

// --- cluster ids -------------------------------------------------------------------------

const ID_A: ClusterId = ClusterId([0xaa; 16]);
const ID_B: ClusterId = ClusterId([0xbb; 16]);

/// Options of node `id` of cluster `name` with cluster id `cluster_id`.
fn with_id(id: u64, cluster_id: Option<ClusterId>) -> TcpOptions {
    let mut options = options(id, local());
    options.cluster_id = cluster_id;
    options
}

#[tokio::test]
async fn clusters_of_one_name_but_different_ids_never_connect() {
    init_logs();
    let n2 = start(with_id(2, Some(ID_B)), 16).await;
    let mut n1_options = with_id(1, Some(ID_A));
    n1_options.peers.insert(NodeId(2), n2.addr());
    let n1 = start(n1_options, 16).await;
    n2.transport.add_peer(NodeId(1), n1.addr());
    eventually_async("n2 refuses n1 more than once", async || n2.transport.refused_connections() > 1).await;
    assert!(!n1.health(NodeId(2)).connected);
    assert!(!n2.health(NodeId(1)).connected);
    assert_eq!((n1.transport.cluster_id(), n2.transport.cluster_id()), (Some(ID_A), Some(ID_B)));
}

#[tokio::test]
async fn a_refusal_reveals_neither_the_cluster_name_nor_its_id() {
    init_logs();
    let secret = "secret-cluster-name";
    let mut n2_options = TcpOptions::new(NodeId(2), secret, local());
    n2_options.cluster_id = Some(ID_A);
    n2_options.peers.insert(NodeId(1), "127.0.0.1:9".into());
    let n2 = start(n2_options, 16).await;
    let hellos = [
        hello_frame_with_id(secret, 1, 2, Some(ID_B)),
        hello_frame_with_id("guess", 1, 2, None),
        hello_frame_with_id(secret, 1, 3, None),
        hello_frame_with_id(secret, 5, 2, Some(ID_A)),
    ];
    for (number, hello) in hellos.iter().enumerate() {
        let answer = send_raw(&n2.addr(), hello).await;
        assert_eq!(answer, refused_frame());
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains(secret) && !text.contains(&ID_A.to_string()), "{text}");
        assert!(!answer.windows(16).any(|window| window == ID_A.0), "{answer:?}");
        eventually_async("the refusal is counted", async || n2.transport.refused_connections() > number as u64).await;
    }
}

#[tokio::test]
async fn a_node_without_an_id_adopts_the_first_and_refuses_any_other() {
    init_logs();
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut n2_options = with_id(2, None);
    let record = Arc::clone(&recorded);
    n2_options.record_cluster_id = Some(ClusterIdRecorder::new(move |id| {
        record.lock().unwrap().push(id);
        Ok(())
    }));
    n2_options.peers.insert(NodeId(1), "127.0.0.1:9".into());
    let mut n2 = start(n2_options, 16).await;
    let addr = n2.addr();
    // A dialer without an id is accepted, and teaches n2 nothing.
    drop(handshake_raw(&addr, hello_frame(CLUSTER, 1, 2)).await);
    assert_eq!(n2.transport.cluster_id(), None);
    // The first id presented is recorded, then taken.
    let mut stream = handshake_raw(&addr, hello_frame_with_id(CLUSTER, 1, 2, Some(ID_A))).await;
    assert_eq!(n2.transport.cluster_id(), Some(ID_A));
    assert_eq!(*recorded.lock().unwrap(), [ID_A]);

    // A snapshot chunk stamped with another cluster's id, or with none (a peer of ours has
    // ours by the time it sends over this connection), is dropped and counted; one of ours
    // is delivered.
    let chunk = |cluster_id| PeerMessage::SnapshotChunk {
        meta: SnapshotMeta::default(),
        offset: 3,
        data: Bytes::from_static(b"data"),
        done: false,
        cluster_id,
    };
    let message_frame = |message: &PeerMessage| framed(&[&[2][..], &postcard::to_allocvec(message).unwrap()].concat());
    stream.write_all(&message_frame(&chunk(Some(ID_B)))).await.unwrap();
    stream.write_all(&message_frame(&chunk(Some(ID_A)))).await.unwrap();
    assert_eq!(n2.receive().await, (NodeId(1), chunk(Some(ID_A))));
    assert_eq!(n2.transport.refused_snapshot_chunks(), 1);
    stream.write_all(&message_frame(&chunk(None))).await.unwrap();
    stream.write_all(&message_frame(&chunk(Some(ID_A)))).await.unwrap();
    assert_eq!(n2.receive().await, (NodeId(1), chunk(Some(ID_A))));
    assert_eq!(n2.transport.refused_snapshot_chunks(), 2);
    drop(stream);

    // From now on another id is refused, and none is still fine.
    let refused = n2.transport.refused_connections();
    assert_eq!(send_raw(&addr, &hello_frame_with_id(CLUSTER, 1, 2, Some(ID_B))).await, refused_frame());
    assert_eq!(n2.transport.refused_connections(), refused + 1);
    drop(handshake_raw(&addr, hello_frame(CLUSTER, 1, 2)).await);
    assert_eq!(*recorded.lock().unwrap(), [ID_A], "recorded once");
}

#[tokio::test]
async fn a_dialer_without_an_id_adopts_the_acceptors_and_stamps_its_snapshots() {
    init_logs();
    let mut n2 = start(with_id(2, Some(ID_A)), 16).await;
    let n1 = start(with_id(1, None), 16).await;
    introduce(&[&n1, &n2]);
    wait_connected(&n1, &n2).await;
    assert_eq!(n1.transport.cluster_id(), Some(ID_A));
    let chunk = |cluster_id| PeerMessage::SnapshotChunk {
        meta: SnapshotMeta::default(),
        offset: 0,
        data: Bytes::from_static(b"x"),
        done: true,
        cluster_id,
    };
    n1.transport.send(n2.id(), chunk(None));
    assert_eq!(n2.receive().await, (n1.id(), chunk(Some(ID_A))), "stamped with the sender's id");
    assert_eq!(n2.transport.refused_snapshot_chunks(), 0);
}
