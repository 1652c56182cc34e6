//! The TCP peer transport on loopback: delivery in order, reconnects, back-pressure, and
//! hostile connections refused without harm to the legitimate peers.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_testkit::init_logs;
use skiff_testkit::ports::free_address;
use skiff_testkit::wait::{TIMEOUT, eventually_async};

use bytes::Bytes;
use skiff::transport::tcp::{TcpOptions, TcpTransport};
use skiff::transport::{PeerHealth, Transport};
use skiff::wire::PeerMessage;
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
        n1.transport
            .send(n2.id(), PeerMessage::SnapshotChunk { meta: SnapshotMeta::default(), offset: n, data, done: false });
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
/// 4-byte big-endian length, then postcard: variant 0, version, cluster, from, to.
fn hello_frame(cluster: &str, from: u64, to: u64) -> Vec<u8> {
    let mut body = vec![0, 1];
    varint(&mut body, cluster.len() as u64);
    body.extend_from_slice(cluster.as_bytes());
    varint(&mut body, from);
    varint(&mut body, to);
    framed(&body)
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
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&hello_frame(CLUSTER, from, to)).await.unwrap();
    let mut length = [0; 4];
    stream.read_exact(&mut length).await.unwrap();
    let mut answer = vec![0; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], 0, "the transport answers a good Hello with its own");
    let _ = stream.write_all(bytes).await;
    read_until_closed(&mut stream).await;
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
            // Variant 1 of the frame enum, right after the 4-byte length.
            assert_eq!(answer.get(4), Some(&1), "{what}: {answer:?}");
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
