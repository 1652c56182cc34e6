//! One peer: its outgoing queue, its health, and the task that keeps a connection to it.
//!
//! Every peer has one long-lived task. Toward a peer with a higher id the task dials,
//! handshakes and serves the connection, and redials with exponential backoff when it ends.
//! Toward a peer with a lower id it waits for the listener to hand over a connection that
//! peer dialed; a newer one replaces the current one (the peer only redials once it gave
//! the old connection up, so the newest is the live one). The listener hands over only
//! connections that passed the whole handshake (with TLS, a certificate naming this peer),
//! so only those can replace a live one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use skiff_raft::NodeId;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Shared;
use super::connection;
use super::frame::{self, Connection, FrameError};
use super::handshake::{self, HandshakeError};
use crate::tls::node_server_name;
use crate::transport::PeerHealth;
use crate::wire::PeerMessage;

/// The first reconnect delay, after a connection ends or a dial fails.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest reconnect delay: a peer that comes back is found within about this long.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How many accepted connections may wait for the peer's task: only the newest matters.
const PENDING_CONNECTIONS: usize = 2;

/// What the transport keeps for one peer. Shared by the transport's `send`, the peer's task
/// and whichever connection currently serves it.
#[derive(Debug)]
pub(super) struct Peer {
    pub id: NodeId,
    /// The advertised `host:port` to dial (used only toward a higher id).
    address: Mutex<String>,
    /// Messages waiting for the writer, oldest first; never longer than `capacity`.
    queue: Mutex<VecDeque<PeerMessage>>,
    capacity: usize,
    /// Wakes the writer when the queue gains messages.
    pub wakeup: Notify,
    health: Mutex<PeerHealth>,
    /// Where the listener hands over connections this peer dialed.
    incoming: mpsc::Sender<Connection>,
    /// Stops the peer's task: on removal, or with the whole transport (a child token).
    pub cancel: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one small update, so the data is consistent after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Peer {
    /// A peer with an empty queue of `capacity` messages, and the receiving end of its
    /// hand-over channel for its task.
    pub(super) fn new(
        id: NodeId,
        address: String,
        capacity: usize,
        cancel: CancellationToken,
    ) -> (Arc<Peer>, mpsc::Receiver<Connection>) {
        assert!(capacity > 0, "a peer queue needs room for at least one message");
        let (incoming, receiver) = mpsc::channel(PENDING_CONNECTIONS);
        let peer = Peer {
            id,
            address: Mutex::new(address),
            queue: Mutex::new(VecDeque::new()),
            capacity,
            wakeup: Notify::new(),
            health: Mutex::new(PeerHealth::default()),
            incoming,
            cancel,
        };
        (Arc::new(peer), receiver)
    }

    pub(super) fn address(&self) -> String {
        lock(&self.address).clone()
    }

    pub(super) fn set_address(&self, address: String) {
        *lock(&self.address) = address;
    }

    /// Queues `message`, dropping the oldest queued one if the queue is full: under
    /// overload the newest messages carry the freshest state, and Raft resends the rest.
    pub(super) fn push(&self, message: PeerMessage) {
        let evicted = {
            let mut queue = lock(&self.queue);
            let evicted = if queue.len() >= self.capacity { queue.pop_front() } else { None };
            queue.push_back(message);
            evicted
        };
        if evicted.is_some() {
            self.count_dropped(1);
        }
        self.wakeup.notify_one();
    }

    /// Takes up to `limit` queued messages, oldest first.
    pub(super) fn take_batch(&self, limit: usize) -> Vec<PeerMessage> {
        let mut queue = lock(&self.queue);
        let count = queue.len().min(limit);
        queue.drain(..count).collect()
    }

    pub(super) fn has_queued(&self) -> bool {
        !lock(&self.queue).is_empty()
    }

    /// Drops everything queued, counted: called when the peer became unreachable, because by
    /// the time a new connection is up those messages are stale.
    pub(super) fn discard_queue(&self) {
        let discarded = {
            let mut queue = lock(&self.queue);
            let discarded = queue.len();
            queue.clear();
            discarded
        };
        self.count_dropped(discarded);
    }

    pub(super) fn count_dropped(&self, messages: usize) {
        if messages > 0 {
            let messages = u64::try_from(messages).unwrap_or(u64::MAX);
            let mut health = lock(&self.health);
            health.dropped_messages = health.dropped_messages.saturating_add(messages);
        }
    }

    /// Notes that a frame arrived from the peer.
    pub(super) fn touch(&self) {
        lock(&self.health).last_contact = Some(Instant::now());
    }

    pub(super) fn record_round_trip(&self, round_trip: Duration) {
        lock(&self.health).round_trip = Some(round_trip);
    }

    fn set_connected(&self, connected: bool) {
        let mut health = lock(&self.health);
        health.connected = connected;
        if connected {
            // The peer's Hello just arrived.
            health.last_contact = Some(Instant::now());
        }
    }

    pub(super) fn health(&self) -> PeerHealth {
        lock(&self.health).clone()
    }

    /// Hands a connection this peer dialed to its task. False if the task cannot take it
    /// (stopped, or swamped with newer ones); the connection is then dropped.
    pub(super) fn offer(&self, connection: Connection) -> bool {
        self.incoming.try_send(connection).is_ok()
    }
}

/// Exponential backoff between connection attempts, reset by a successful handshake.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: RECONNECT_BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = RECONNECT_BACKOFF_MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(RECONNECT_BACKOFF_MAX);
        delay
    }
}

/// The peer's task: keeps one connection up and serves it, until cancelled (the caller
/// races this future against `peer.cancel`).
pub(super) async fn run(shared: Arc<Shared>, peer: Arc<Peer>, mut incoming: mpsc::Receiver<Connection>) {
    let dials = shared.id < peer.id;
    let mut backoff = Backoff::new();
    let mut failed_dials = 0_u32;
    let mut replacement: Option<Connection> = None;
    loop {
        let connection = match replacement.take() {
            Some(connection) => connection,
            None if dials => match dial(&shared, &peer).await {
                Ok(connection) => {
                    backoff.reset();
                    failed_dials = 0;
                    connection
                }
                Err(error) => {
                    failed_dials = failed_dials.saturating_add(1);
                    log_dial_failure(&peer, &error, failed_dials);
                    peer.discard_queue();
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
            None => match incoming.recv().await {
                Some(connection) => connection,
                None => return,
            },
        };
        let remote = connection.remote;
        peer.set_connected(true);
        info!(peer = %peer.id, address = %remote, "peer connected");
        tokio::select! {
            newer = incoming.recv() => {
                replacement = newer;
                info!(peer = %peer.id, address = %remote, "peer replaced its connection with a newer one");
            }
            error = connection::serve(&shared, &peer, connection) => if error.is_protocol_violation() {
                warn!(peer = %peer.id, address = %remote, %error, "closed a peer connection that broke the protocol");
            } else {
                info!(peer = %peer.id, address = %remote, %error, "peer connection ended");
            },
        }
        peer.set_connected(false);
        peer.discard_queue();
        if dials {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Connects to the peer's advertised address and handshakes (TLS first, if on, requiring
/// the peer's certificate to name it), within the handshake timeout.
async fn dial(shared: &Shared, peer: &Peer) -> Result<Connection, HandshakeError> {
    let address = peer.address();
    let attempt = async {
        let stream = TcpStream::connect(address.as_str()).await.map_err(FrameError::from)?;
        let remote = frame::prepare(&stream).map_err(FrameError::from)?;
        let mut connection = match &shared.tls {
            None => Connection::plain(stream, remote),
            Some(tls) => {
                let stream =
                    tls.connector.connect(node_server_name(peer.id), stream).await.map_err(HandshakeError::Tls)?;
                Connection::tls(TlsStream::Client(stream), remote)
            }
        };
        handshake::dial(&mut connection, shared, peer.id).await?;
        connection.open(shared.limits.max_frame_bytes);
        Ok(connection)
    };
    tokio::time::timeout(shared.limits.handshake_timeout, attempt).await.map_err(|_| HandshakeError::TimedOut)?
}

/// The first failure in a row is worth a warning; repeats while the peer stays down are not.
fn log_dial_failure(peer: &Peer, error: &HandshakeError, failed_dials: u32) {
    let address = peer.address();
    if failed_dials == 1 {
        warn!(peer = %peer.id, %address, %error, "cannot reach peer; retrying with backoff");
    } else {
        debug!(peer = %peer.id, %address, %error, failed_dials, "still cannot reach peer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_raft::Index;

    fn message(n: u64) -> PeerMessage {
        PeerMessage::SnapshotAck { snapshot_index: Index(n), offset: 0, ok: true }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), RECONNECT_BACKOFF_MIN);
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let (peer, _incoming) = Peer::new(NodeId(2), "x:1".into(), 3, CancellationToken::new());
        for n in 0..5 {
            peer.push(message(n));
        }
        assert_eq!(peer.health().dropped_messages, 2);
        assert_eq!(peer.take_batch(2), vec![message(2), message(3)]);
        assert!(peer.has_queued());
        peer.discard_queue();
        assert!(!peer.has_queued());
        assert_eq!(peer.health().dropped_messages, 3);
    }
}
