//! TCP transport: one persistent connection per pair of nodes.
//!
//! **Connections.** Of two nodes, the one with the lower id dials and the higher one
//! accepts; both directions then share that connection. There is never a simultaneous
//! connect to break a tie on: only one side ever dials. When the dialer redials (it only does
//! so after giving up on the old connection), the acceptor replaces whatever connection it
//! still holds with the newer one, once the newer one passed the handshake below. Only the
//! addresses of higher-id peers are ever dialed.
//!
//! **Frames.** Each frame is a 4-byte big-endian length and a postcard-encoded frame body
//! ([`LengthDelimitedCodec`](tokio_util::codec::LengthDelimitedCodec)), over the socket or
//! inside TLS. A body is a `Hello`,
//! a `Refused`, a [`PeerMessage`], or a ping/pong. Frames above
//! [`TcpOptions::max_frame_bytes`] are refused by the reader (the connection closes) and
//! never written by the writer (the message is dropped, counted and logged): large payloads
//! such as snapshots must be chunked below the limit.
//!
//! **TLS.** With [`TcpOptions::tls`] (the cluster file's `[tls]`), every peer connection is
//! mutual TLS, and the TLS handshake comes first; the `Hello`s and all frames travel inside
//! it. Both sides present their node certificate and require one signed by the cluster CA.
//! The dialer asks for [`node_server_name`](crate::tls::node_server_name) of the peer it
//! dials (`n2`), so rustls refuses an acceptor whose certificate does not name that node;
//! the acceptor, once it has read the dialer's `Hello`, refuses a dialer whose certificate
//! does not name the id the `Hello` claims ([`certificate_names_node`](crate::tls::certificate_names_node)),
//! so a node's certificate lets it speak only as itself and a client certificate not as any
//! node. Without TLS a peer is whoever says so: fine on loopback or a private network only.
//!
//! **Handshake.** The first frame each way is a
//! `Hello { protocol_version, cluster, from, to, cluster_id }`. The acceptor refuses a dialer
//! of another cluster (name, or id when both have one) or protocol version, an id that is
//! not one of its peers, a higher id than its own, a `Hello` addressed to another node, or
//! (over TLS) a certificate that does not name the claimed id; the dialer refuses an answer
//! from a node other than the one it meant to reach, or of another cluster. A refused
//! dialer is sent `Refused { reason: "refused" }` and nothing else — not our cluster name,
//! cluster id or node id; the reason is logged locally with `tracing::warn!` naming the
//! peer address, and counted ([`TcpTransport::refused_connections`]). Until the handshake
//! succeeds, frames are limited to 4 KiB, so a stranger cannot make a node allocate much;
//! the TLS handshake and the `Hello`s together must finish within
//! [`TcpOptions::handshake_timeout`], and at most 64 accepted connections may be
//! handshaking at once. Garbage, a malformed or oversized frame, or an unexpected frame
//! closes that one connection and nothing else. Only a connection that passed all of this
//! reaches a peer's task, so only it can replace that peer's live connection (with TLS:
//! only the holder of that node's key).
//!
//! **Cluster id.** Two clusters may share a name; a random 128-bit cluster id tells them
//! apart. The initial voter with the lowest id makes it when the bootstrap check confirms a
//! new cluster ([`crate::bootstrap`]; at once with `--bootstrap` or alone), and keeps it in
//! its `node-id` file ([`TcpOptions::cluster_id`], [`Transport::set_cluster_id`], which
//! reconnects to every peer so that each takes it). Every other
//! node starts without one and adopts the id of the first peer that presents one in a
//! handshake that otherwise passed (authenticated, with TLS): it records the id durably
//! ([`TcpOptions::record_cluster_id`], an atomic rewrite of `node-id`) before it uses that
//! connection, and from then on refuses a peer presenting any other id. A node with an id
//! accepts peers without one (they adopt ours); a node without one accepts peers with or
//! without one. Adoption is serialised, so two ids can never both be taken. Snapshot chunks
//! carry the sender's id too (stamped by the writer): a node with an id drops, counts
//! ([`TcpTransport::refused_snapshot_chunks`]) and logs a chunk that carries another id or
//! none. Directories made before cluster ids existed keep working without one; a voter
//! whose data directory is lost adopts the cluster's id again when it connects (it makes
//! none while its bootstrap check is pending), and then learns from its peers that it lost
//! its data.
//!
//! **Reconnect.** A dialer that fails, or whose connection ends, waits 20 ms and retries,
//! doubling the wait up to 1 s; a successful handshake resets it. A connection that carries
//! nothing for [`TcpOptions::idle_timeout`] is presumed dead (pings flow every
//! [`TcpOptions::ping_interval`], so a live peer is never idle that long).
//!
//! **Back-pressure.** [`Transport::send`] never blocks: it appends to the peer's bounded
//! queue ([`TcpOptions::queue_capacity`]), evicting the oldest message when full. A writer
//! task per connection drains the queue in batches and flushes once per batch. Messages
//! still queued when a peer becomes unreachable are discarded, since they would be stale by
//! the time it is back. Every dropped message is counted in [`PeerHealth::dropped_messages`];
//! Raft retransmits what matters. On the receiving side, a full inbox stops the reader, so a
//! slow node slows its senders' sockets rather than growing a buffer.

mod connection;
mod frame;
mod handshake;
mod peer;

#[doc(hidden)]
pub use frame::fuzzing;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use skiff_raft::NodeId;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::frame::Connection;
use self::handshake::{HandshakeError, Identity};
use self::peer::Peer;
use super::{Inbox, PeerHealth, Transport};
use crate::tls::TlsMaterial;
use crate::wire::{ClusterId, PeerMessage};

/// Handshakes in progress at once; further connections are closed at once (a limit on what
/// strangers can make a node hold).
const MAX_PENDING_HANDSHAKES: usize = 64;
/// The frame limit must leave room for a real message.
const MIN_FRAME_BYTES: usize = 1024;

/// Records a cluster id this node adopted from a peer, durably, before the transport uses
/// the connection that presented it (see the module documentation).
#[derive(Clone)]
pub struct ClusterIdRecorder(Arc<dyn Fn(ClusterId) -> io::Result<()> + Send + Sync>);

impl ClusterIdRecorder {
    /// A recorder that calls `record` (on a blocking thread) with the adopted id; an error
    /// refuses the connection that presented it, and a later one may try again.
    pub fn new(record: impl Fn(ClusterId) -> io::Result<()> + Send + Sync + 'static) -> ClusterIdRecorder {
        ClusterIdRecorder(Arc::new(record))
    }
}

impl fmt::Debug for ClusterIdRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterIdRecorder")
    }
}

/// How to run a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpOptions {
    /// This node's id, stated in every handshake.
    pub id: NodeId,
    /// The cluster's name; a node of another cluster is refused.
    pub cluster: String,
    /// The cluster's id, if this node has one: a peer presenting another is refused. A
    /// node without one adopts the first one a peer presents (and records it with
    /// `record_cluster_id`).
    pub cluster_id: Option<ClusterId>,
    /// Where an adopted cluster id is recorded (the data directory); without one, an adopted
    /// id lasts as long as the transport.
    pub record_cluster_id: Option<ClusterIdRecorder>,
    /// Mutual TLS for every peer connection, with the node's certificate and the cluster
    /// CA; `None` for plain TCP, where a peer is whoever says so.
    pub tls: Option<TlsMaterial>,
    /// The address to listen on for peers (port 0 picks a free port; see
    /// [`TcpTransport::local_addr`]).
    pub listen: SocketAddr,
    /// The advertised `host:port` of each other node. An entry for this node's own id is
    /// ignored, so a whole-cluster map may be passed.
    pub peers: BTreeMap<NodeId, String>,
    /// The largest frame body sent or accepted, in bytes (default 16 MiB, at least 1 KiB).
    pub max_frame_bytes: usize,
    /// Messages queued per peer before the oldest are dropped (default 4096, at least 1).
    pub queue_capacity: usize,
    /// How often each connection pings its peer to measure the round trip (default 1 s).
    pub ping_interval: Duration,
    /// A connection on which nothing arrives this long is closed (default 5 s; must exceed
    /// `ping_interval`).
    pub idle_timeout: Duration,
    /// How long a dial plus handshake may take (default 5 s).
    pub handshake_timeout: Duration,
}

/// [`TcpOptions::max_frame_bytes`] unless set: 16 MiB. One log entry must fit in a frame
/// with room to spare, or replication of it fails forever: a server's value limit is checked
/// against it at start.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

impl TcpOptions {
    /// Options with no peers yet and every limit at its default.
    pub fn new(id: NodeId, cluster: impl Into<String>, listen: SocketAddr) -> TcpOptions {
        TcpOptions {
            id,
            cluster: cluster.into(),
            cluster_id: None,
            record_cluster_id: None,
            tls: None,
            listen,
            peers: BTreeMap::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_capacity: 4096,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the limits, with an error that names the field.
    fn validate(&self) -> io::Result<()> {
        let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            return invalid(format!("TcpOptions.max_frame_bytes is {}, below {MIN_FRAME_BYTES}", self.max_frame_bytes));
        }
        if self.queue_capacity == 0 {
            return invalid("TcpOptions.queue_capacity is 0; a peer queue needs room for a message".into());
        }
        if self.ping_interval.is_zero() || self.idle_timeout <= self.ping_interval {
            return invalid(format!(
                "TcpOptions.idle_timeout ({:?}) must exceed ping_interval ({:?}), which must not be zero",
                self.idle_timeout, self.ping_interval
            ));
        }
        if self.handshake_timeout.is_zero() {
            return invalid("TcpOptions.handshake_timeout is zero".into());
        }
        Ok(())
    }
}

/// The limits every task reads.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_frame_bytes: usize,
    queue_capacity: usize,
    ping_interval: Duration,
    idle_timeout: Duration,
    handshake_timeout: Duration,
}

/// The rustls configurations of peer connections.
#[derive(Clone)]
struct PeerTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    fn new(material: &TlsMaterial) -> io::Result<PeerTls> {
        let invalid = |error: crate::tls::TlsError| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("peer TLS configuration: {error}"))
        };
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(material.peer_acceptor().map_err(invalid)?),
            connector: TlsConnector::from(material.peer_connector().map_err(invalid)?),
        })
    }
}

/// What the transport's tasks share.
#[derive(Debug)]
struct Shared {
    id: NodeId,
    cluster: String,
    /// Set once: at start, or when adopted from a peer.
    cluster_id: OnceLock<ClusterId>,
    /// Held while an adopted id is recorded, so two peers cannot both be adopted.
    adopting: tokio::sync::Mutex<()>,
    record_cluster_id: Option<ClusterIdRecorder>,
    tls: Option<PeerTls>,
    limits: Limits,
    inbox: Inbox,
    peers: Mutex<BTreeMap<NodeId, Arc<Peer>>>,
    refused_connections: AtomicU64,
    refused_snapshot_chunks: AtomicU64,
    pending_handshakes: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    runtime: Handle,
    /// The zero of this node's ping clock.
    epoch: Instant,
}

impl Shared {
    fn peers(&self) -> MutexGuard<'_, BTreeMap<NodeId, Arc<Peer>>> {
        // Every update of the map is one insert or remove: consistent after a panic.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers().get(&id).cloned()
    }

    /// Microseconds since the transport started: the ping clock.
    fn now_micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn refuse(&self, remote: SocketAddr, error: &HandshakeError) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
        warn!(address = %remote, reason = %error, "refused a peer connection");
    }

    /// Who we are now, for a handshake.
    fn identity(&self) -> Identity {
        Identity { id: self.id, cluster: self.cluster.clone(), cluster_id: self.cluster_id.get().copied() }
    }

    /// Our cluster id, if we have one yet.
    fn cluster_id(&self) -> Option<ClusterId> {
        self.cluster_id.get().copied()
    }

    /// Takes `theirs` as our cluster id if we have none (recording it first), or checks
    /// that it is ours.
    async fn adopt_cluster_id(&self, theirs: ClusterId) -> Result<(), HandshakeError> {
        let same = |ours: ClusterId| {
            if ours == theirs { Ok(()) } else { Err(HandshakeError::OtherClusterId { theirs, ours }) }
        };
        if let Some(ours) = self.cluster_id() {
            return same(ours);
        }
        let _adopting = self.adopting.lock().await;
        if let Some(ours) = self.cluster_id() {
            return same(ours);
        }
        if let Some(ClusterIdRecorder(record)) = &self.record_cluster_id {
            let record = Arc::clone(record);
            let recorded = tokio::task::spawn_blocking(move || record(theirs)).await;
            let reason = match recorded {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(reason) = reason {
                return Err(HandshakeError::Record { cluster_id: theirs, reason });
            }
        }
        // Only this task sets it, under `adopting`.
        let _ = self.cluster_id.set(theirs);
        info!(cluster_id = %theirs, "adopted the cluster id a peer presented");
        Ok(())
    }

    /// Whether a snapshot chunk stamped with `theirs` belongs to our cluster: always while
    /// we have no id; otherwise only with our id.
    fn accepts_snapshot_of(&self, theirs: Option<ClusterId>) -> bool {
        self.cluster_id().is_none_or(|ours| theirs == Some(ours))
    }
}

/// A [`Transport`] over TCP. Its tasks run until [`shutdown`](Self::shutdown) or until the
/// transport is dropped.
#[derive(Debug)]
pub struct TcpTransport {
    /// The addresses the transport started with (the cluster file's), for members whose
    /// membership entry carries none.
    initial_addresses: BTreeMap<NodeId, String>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl TcpTransport {
    /// Binds `options.listen`, starts accepting peers, and starts dialing every peer with a
    /// higher id. Messages that arrive go to `inbox`. Fails if the options are invalid or the
    /// address cannot be bound. Its tasks run on the current tokio runtime.
    pub async fn start(options: TcpOptions, inbox: Inbox) -> io::Result<Arc<TcpTransport>> {
        TcpTransport::start_on(options, inbox, &Handle::current())
    }

    /// As [`TcpTransport::start`], with its tasks on `runtime` (a node runs them on its
    /// driver's thread; they start when that runtime runs).
    pub fn start_on(options: TcpOptions, inbox: Inbox, runtime: &Handle) -> io::Result<Arc<TcpTransport>> {
        let _entered = runtime.enter();
        options.validate()?;
        let listener = bind(options.listen).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("node {}: cannot listen for peers on {}: {error}", options.id, options.listen),
            )
        })?;
        let local_addr = listener.local_addr()?;
        let tls = options.tls.as_ref().map(PeerTls::new).transpose()?;
        let cluster_id = OnceLock::new();
        if let Some(id) = options.cluster_id {
            let _ = cluster_id.set(id);
        }
        let shared = Arc::new(Shared {
            id: options.id,
            cluster: options.cluster,
            cluster_id,
            adopting: tokio::sync::Mutex::new(()),
            record_cluster_id: options.record_cluster_id,
            tls,
            limits: Limits {
                max_frame_bytes: options.max_frame_bytes,
                queue_capacity: options.queue_capacity,
                ping_interval: options.ping_interval,
                idle_timeout: options.idle_timeout,
                handshake_timeout: options.handshake_timeout,
            },
            inbox,
            peers: Mutex::new(BTreeMap::new()),
            refused_connections: AtomicU64::new(0),
            refused_snapshot_chunks: AtomicU64::new(0),
            pending_handshakes: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            runtime: runtime.clone(),
            epoch: Instant::now(),
        });
        let transport = TcpTransport { shared, local_addr, initial_addresses: options.peers.clone() };
        for (id, address) in options.peers {
            transport.add_peer(id, address);
        }
        let accepting = Arc::clone(&transport.shared);
        transport.spawn(accept_loop(accepting, listener));
        Ok(Arc::new(transport))
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Adds peer `id` at advertised `address` (a membership change), or updates the address
    /// of a known peer (used from its next dial on). Adding this node's own id does nothing.
    pub fn add_peer(&self, id: NodeId, address: impl Into<String>) {
        let address = address.into();
        if id == self.shared.id {
            return;
        }
        let mut peers = self.shared.peers();
        if let Some(peer) = peers.get(&id) {
            peer.set_address(address);
            return;
        }
        let cancel = self.shared.cancel.child_token();
        let (peer, incoming) = Peer::new(id, address, self.shared.limits.queue_capacity, cancel.clone());
        peers.insert(id, Arc::clone(&peer));
        drop(peers);
        let shared = Arc::clone(&self.shared);
        self.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = peer::run(shared, peer, incoming) => {}
            }
        });
    }

    /// Removes peer `id` (a membership change): its connection closes, its queue is dropped,
    /// and it is refused from now on.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(peer) = self.shared.peers().remove(&id) {
            peer.cancel.cancel();
        }
    }

    /// Connections refused so far: failed handshakes (another cluster, an unknown or wrong
    /// id, garbage, a timeout) and connections beyond the handshake limit.
    pub fn refused_connections(&self) -> u64 {
        self.shared.refused_connections.load(Ordering::Relaxed)
    }

    /// Snapshot chunks dropped because they carried another cluster's id.
    pub fn refused_snapshot_chunks(&self) -> u64 {
        self.shared.refused_snapshot_chunks.load(Ordering::Relaxed)
    }

    /// The cluster id this node has: the one it started with, or the one it adopted.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.shared.cluster_id()
    }

    /// Whether peer connections use mutual TLS.
    pub fn uses_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// Stops every task and waits until they have stopped, so the listening port is free
    /// when this returns. Messages sent afterwards are dropped.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.shared.tracker.spawn_on(task, &self.shared.runtime);
    }
}

impl Drop for TcpTransport {
    /// Stops the tasks without waiting for them; use [`TcpTransport::shutdown`] to wait.
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl Transport for TcpTransport {
    fn send(&self, to: NodeId, message: PeerMessage) {
        match self.shared.peer(to) {
            Some(peer) if !self.shared.cancel.is_cancelled() => peer.push(message),
            Some(peer) => peer.count_dropped(1),
            None => debug!(peer = %to, "dropped a message to a node that is not a peer"),
        }
    }

    fn peer_health(&self) -> BTreeMap<NodeId, PeerHealth> {
        self.shared.peers().iter().map(|(id, peer)| (*id, peer.health())).collect()
    }

    fn learn_address(&self, id: NodeId, address: String) {
        if self.shared.peer(id).is_none() {
            info!(peer = %id, %address, "a peer named a member this node did not know of: dialing it");
            self.add_peer(id, address);
        }
    }

    fn set_cluster_id(&self, id: ClusterId) -> io::Result<()> {
        // An adoption under way wins: the cluster has an id already.
        let Ok(_adopting) = self.shared.adopting.try_lock() else { return Ok(()) };
        if self.shared.cluster_id().is_some() {
            return Ok(());
        }
        if let Some(ClusterIdRecorder(record)) = &self.shared.record_cluster_id {
            record(id)?;
        }
        let _ = self.shared.cluster_id.set(id);
        info!(cluster_id = %id, "made the cluster id");
        // Reconnect to every peer: each handshakes again, sees the id and takes it.
        let peers: Vec<(NodeId, String)> =
            self.shared.peers().iter().map(|(peer, state)| (*peer, state.address())).collect();
        for (peer, address) in peers {
            self.remove_peer(peer);
            self.add_peer(peer, address);
        }
        Ok(())
    }

    /// Members without an address in the membership are reached at the address the
    /// transport started with (the cluster file's), if any.
    fn set_members(&self, members: &BTreeMap<NodeId, Option<String>>) {
        let gone: Vec<NodeId> = self.shared.peers().keys().filter(|id| !members.contains_key(id)).copied().collect();
        for id in gone {
            self.remove_peer(id);
        }
        for (id, address) in members {
            match address.as_ref().or_else(|| self.initial_addresses.get(id)) {
                Some(address) => self.add_peer(*id, address.clone()),
                None => {
                    warn!(peer = %id, "a member has no address: neither its membership entry nor the cluster file gives one")
                }
            }
        }
    }
}

/// A listener with `SO_REUSEADDR`, so a restarted node can bind its address again while
/// connections of its previous run linger in `TIME_WAIT`.
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Accepts connections and handshakes each in its own task, at most
/// [`MAX_PENDING_HANDSHAKES`] at a time.
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: back off rather than spin.
                warn!(%error, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&shared.pending_handshakes).try_acquire_owned() else {
            shared.refuse(remote, &HandshakeError::Busy("too many handshakes in progress"));
            continue;
        };
        let handshaking = Arc::clone(&shared);
        shared.tracker.spawn_on(
            async move {
                let _permit = permit;
                tokio::select! {
                    () = handshaking.cancel.cancelled() => {}
                    () = accept_one(&handshaking, stream, remote) => {}
                }
            },
            &shared.runtime,
        );
    }
}

/// Handshakes an accepted connection (TLS first, if on) and hands it to its peer's task.
async fn accept_one(shared: &Shared, stream: TcpStream, remote: SocketAddr) {
    let handshake = async {
        frame::prepare(&stream).map_err(frame::FrameError::from)?;
        let mut connection = match &shared.tls {
            None => Connection::plain(stream, remote),
            Some(tls) => {
                let stream = tls.acceptor.accept(stream).await.map_err(HandshakeError::Tls)?;
                Connection::tls(TlsStream::Server(stream), remote)
            }
        };
        let id = handshake::accept(&mut connection, shared).await?;
        connection.open(shared.limits.max_frame_bytes);
        Ok::<_, HandshakeError>((id, connection))
    };
    let (id, connection) = match tokio::time::timeout(shared.limits.handshake_timeout, handshake).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => return shared.refuse(remote, &error),
        Err(_) => return shared.refuse(remote, &HandshakeError::TimedOut),
    };
    // The peer may have been removed during the handshake.
    let offered = shared.peer(id).is_some_and(|peer| peer.offer(connection));
    if !offered {
        debug!(peer = %id, address = %remote, "dropped a connection its peer's task could not take");
    }
}
