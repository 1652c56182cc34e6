//! [`Server`]: one node of a Skiff key-value cluster: the Raft node replicating a
//! [`KvStore`], the HTTP API on the node's `http` address, and the Redis protocol on its
//! `redis` address if it has one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use skiff::config::ClusterConfig;
use skiff::tls::TlsMaterial;
use skiff::{BootstrapMode, MemberAddress, Membership, Node, NodeId, StartOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::task::AbortOnDropHandle;

use crate::auth::Auth;
use crate::error::{Error, Result};
use crate::http::{Api, DemoControl};
use crate::redis::Redis;
use crate::state::{KvStore, Retention};

/// Sizes a request may not exceed; checked before anything is proposed. With the `cli`
/// feature, also `skiff serve`'s flags and `SKIFF_*` variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Limits {
    /// The largest key accepted, in bytes.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_KEY_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().max_key_bytes))]
    pub max_key_bytes: usize,
    /// The largest value accepted, in bytes.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_VALUE_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().max_value_bytes))]
    pub max_value_bytes: usize,
    // The keyspace limits (issue 16): listings, blocking queries, the quota.
    /// The most bytes of keys and values one `?recurse` or `?keys` listing copies; a larger
    /// one is refused with 413 (narrow the prefix).
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_LISTING_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().max_listing_bytes))]
    pub max_listing_bytes: usize,
    /// The largest `PUT /v1/txn` body, in bytes: a transaction is one log entry, so it must
    /// fit in a peer message with the rest of its entry.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_TXN_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().max_txn_bytes))]
    pub max_txn_bytes: usize,
    /// The most blocking queries (`?index=`) this node holds at once; more get 429.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_BLOCKING_QUERIES", value_name = "COUNT",
        default_value_t = Limits::default().max_blocking_queries))]
    pub max_blocking_queries: usize,
    /// The most blocking queries this node holds at once for one client IP address.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_BLOCKING_QUERIES_PER_CLIENT", value_name = "COUNT",
        default_value_t = Limits::default().max_blocking_queries_per_client))]
    pub max_blocking_queries_per_client: usize,
    /// The change feed's history (`GET /v1/skiff/watch`), in bytes of keys and values: a
    /// stream that resumes from an older index starts with a snapshot of its prefix instead.
    /// Held in memory on every node; not in snapshots.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_FEED_RETAIN_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().feed_retain_bytes))]
    pub feed_retain_bytes: u64,
    /// How much further one change feed stream may fall behind the newest change than the
    /// least it has been, in bytes of events it has not yet sent (its client reads slowly, or
    /// not at all); past it the stream is cut with an event that says where to resume.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_FEED_MAX_LAG_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().feed_max_lag_bytes))]
    pub feed_max_lag_bytes: u64,
    /// The most bytes of keys and values the keyspace may hold: writes that could pass it are
    /// refused (HTTP 507, Redis `-OOM`), deletes still work. 0: no quota. Set the same on
    /// every node: each write carries the quota of the node it was sent to.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_KEYSPACE_QUOTA_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().keyspace_quota_bytes))]
    pub keyspace_quota_bytes: u64,
    /// The largest reply to one Redis command, and all the replies to one round of a
    /// pipeline together, in bytes (RESP2-encoded); a reply past it is an error instead.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_REPLY_BYTES", value_name = "BYTES",
        default_value_t = Limits::default().max_reply_bytes))]
    pub max_reply_bytes: usize,
    /// Seconds a Redis connection may stay idle (no command, or a command that does not
    /// finish arriving) before it is closed, as Redis's `timeout`; 0: never.
    #[cfg_attr(feature = "cli", arg(long = "redis-timeout", env = "SKIFF_REDIS_TIMEOUT", value_name = "SECONDS",
        default_value_t = Limits::default().redis_timeout_secs))]
    pub redis_timeout_secs: u64,
    /// Client connections each listener (HTTP, Redis) holds at once; more are closed as
    /// they arrive. Each takes a file descriptor.
    #[cfg_attr(feature = "cli", arg(long, env = "SKIFF_MAX_CONNECTIONS", value_name = "COUNT",
        default_value_t = Limits::default().max_connections))]
    pub max_connections: usize,
}

/// [`Limits::max_connections`] unless set: per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_key_bytes: 8 << 10,
            max_value_bytes: 1 << 20,
            max_listing_bytes: 64 << 20,
            max_txn_bytes: 2 << 20,
            max_blocking_queries: 4096,
            max_blocking_queries_per_client: 256,
            feed_retain_bytes: crate::feed::DEFAULT_RETAIN_BYTES,
            feed_max_lag_bytes: 16 << 20,
            // The whole keyspace lives in memory, about 1.1 times its bytes: 2 GiB (etcd's
            // default backend quota) fits a node of 4 GiB or more with room for snapshots.
            keyspace_quota_bytes: 2 << 30,
            max_reply_bytes: 64 << 20,
            redis_timeout_secs: 300,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// Room a log entry and its peer message take besides the key and the value.
    const ENTRY_OVERHEAD_BYTES: usize = 64 << 10;

    /// Checks that the limits fit together and with the peer transport's: the largest write
    /// a client may send (a key and a value, or one Redis command) must fit in one peer
    /// frame, or its log entry could never be replicated, and every follower would stall
    /// on it. Every limit must also be at least 1.
    pub fn check(&self) -> Result<(), String> {
        let frame = skiff::transport::tcp::DEFAULT_MAX_FRAME_BYTES;
        let largest = self.max_key_bytes.saturating_add(self.max_value_bytes).max(crate::redis::MAX_COMMAND_BYTES);
        if self.max_txn_bytes.saturating_add(Self::ENTRY_OVERHEAD_BYTES) > frame {
            return Err(format!(
                "--max-txn-bytes {} makes a transaction's log entry larger than a peer message may be ({frame} bytes, \
                 less {} of framing): lower it",
                self.max_txn_bytes,
                Self::ENTRY_OVERHEAD_BYTES
            ));
        }
        if largest.saturating_add(Self::ENTRY_OVERHEAD_BYTES) > frame {
            return Err(format!(
                "--max-key-bytes {} plus --max-value-bytes {} make a log entry larger than a peer message may be \
                 ({frame} bytes, less {} of framing): such a write could never be replicated; lower them",
                self.max_key_bytes,
                self.max_value_bytes,
                Self::ENTRY_OVERHEAD_BYTES
            ));
        }
        let zero = [
            ("--max-key-bytes", self.max_key_bytes),
            ("--max-value-bytes", self.max_value_bytes),
            ("--max-reply-bytes", self.max_reply_bytes),
            ("--max-listing-bytes", self.max_listing_bytes),
            ("--max-txn-bytes", self.max_txn_bytes),
            ("--max-connections", self.max_connections),
            ("--feed-retain-bytes", usize::try_from(self.feed_retain_bytes).unwrap_or(usize::MAX)),
            ("--feed-max-lag-bytes", usize::try_from(self.feed_max_lag_bytes).unwrap_or(usize::MAX)),
        ];
        match zero.iter().find(|(_, value)| *value == 0) {
            Some((flag, _)) => Err(format!("{flag} is 0: nothing could be served")),
            None => Ok(()),
        }
    }

    /// The Redis idle timeout; `None` for never.
    pub fn redis_timeout(&self) -> Option<Duration> {
        (self.redis_timeout_secs > 0).then(|| Duration::from_secs(self.redis_timeout_secs))
    }
}

/// How to start a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The cluster file.
    pub cluster: ClusterConfig,
    /// Which node of the file this is. It must have an `http` address.
    pub id: NodeId,
    /// Where the node keeps its log, hard state and snapshots.
    pub data_dir: PathBuf,
    /// The largest keys and values accepted.
    pub limits: Limits,
    /// Serve `/v1/skiff/faults`, which drops or delays this node's peer traffic: for
    /// testing only (`skiff check`, the demo). Off by default.
    pub fault_injection: bool,
    /// The tokens file clients must present a token of; from the cluster file's `[auth]`.
    pub tokens: Option<PathBuf>,
    /// Whether a new data directory waits for the bootstrap check before it votes
    /// (`skiff serve --bootstrap` skips it).
    pub bootstrap: BootstrapMode,
    /// The demo's control of its nodes (`skiff demo`): the dashboard's kill, restart and
    /// add-learner buttons.
    pub demo: Option<DemoHandle>,
}

/// A [`DemoControl`] in [`ServerOptions`].
#[derive(Clone)]
pub struct DemoHandle(pub Arc<dyn DemoControl>);

impl std::fmt::Debug for DemoHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoHandle")
    }
}

impl ServerOptions {
    pub fn new(cluster: ClusterConfig, id: NodeId, data_dir: impl Into<PathBuf>) -> ServerOptions {
        let tokens = cluster.auth.as_ref().map(|auth| auth.tokens.clone());
        ServerOptions {
            cluster,
            id,
            data_dir: data_dir.into(),
            limits: Limits::default(),
            fault_injection: false,
            tokens,
            bootstrap: BootstrapMode::Check,
            demo: None,
        }
    }
}

/// A running node: Raft, storage, peer transport, the HTTP API and the Redis listener.
pub struct Server {
    id: NodeId,
    node: Arc<Node<KvStore>>,
    http_address: SocketAddr,
    redis_address: Option<SocketAddr>,
    stop: Vec<oneshot::Sender<()>>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Reloads the tokens file on SIGHUP, while the server lives.
    _reload: Option<AbortOnDropHandle<()>>,
    /// The leader's clock entries ([`crate::clock`]).
    _clock: AbortOnDropHandle<()>,
    /// The store's news: its applied index and this node's reading of the cluster clock.
    published: Arc<crate::Published>,
}

/// Member `id`'s addresses: the replicated membership's (where a node added by address is
/// found), else its entry in the cluster file (nodes of a directory made before members had
/// addresses).
pub(crate) fn member_address(cluster: &ClusterConfig, membership: &Membership, id: NodeId) -> Option<MemberAddress> {
    MemberAddress::of(membership, id).or_else(|| cluster.node(id).ok().map(|node| node.address()))
}

impl Server {
    /// Starts the node and binds its HTTP address. Must be called inside a tokio runtime.
    pub async fn start(options: ServerOptions) -> Result<Server> {
        let ServerOptions { cluster, id, data_dir, limits, fault_injection, tokens, bootstrap, demo } = options;
        limits.check().map_err(Error::Limits)?;
        let address = cluster.node(id).map_err(skiff::Error::from)?.http.clone().ok_or(Error::NoHttpAddress { id })?;
        if let Some(reason) = cluster.exposure(id) {
            return Err(Error::Insecure(reason));
        }
        let tls = match cluster.tls_files(id) {
            Some(files) => Some(TlsMaterial::load(&files).map_err(|source| Error::Tls { id, source })?),
            None => None,
        };
        let client_tls = |alpn: &[&[u8]]| -> Result<Option<TlsAcceptor>> {
            let Some(tls) = &tls else { return Ok(None) };
            let config = tls.client_acceptor(alpn).map_err(|source| Error::Tls { id, source })?;
            Ok(Some(TlsAcceptor::from(config)))
        };
        let (http_tls, redis_tls) = (client_tls(&[b"http/1.1"])?, client_tls(&[])?);
        let auth = match &tokens {
            Some(path) => Some(Arc::new(Auth::load(path).map_err(|source| Error::Auth { id, source })?)),
            None => None,
        };
        // Bind first: a port in use is reported before the node joins the cluster.
        let listener = bind(id, &address).await?;
        let http_address = local_address(id, &address, &listener)?;
        let redis_address = cluster.node(id).ok().and_then(|node| node.redis.clone());
        let redis_listener = match &redis_address {
            Some(address) => Some((bind(id, address).await?, address.clone())),
            None => None,
        };
        // The same retention on every node: `apply` depends on it, so it is not a per-node setting.
        let mut store = KvStore::new(Retention::default());
        let applied = store.subscribe();
        applied.feed().set_retain_bytes(limits.feed_retain_bytes);
        // The recorder first: the node and its store make their metric handles as they start.
        crate::metrics::handle();
        if fault_injection {
            tracing::info!(node = %id, "fault injection is on: /v1/skiff/faults can cut this node off");
        }
        let start = StartOptions { fault_injection, bootstrap };
        let node = Node::start_with_options(&cluster, id, store, &data_dir, start).await?;
        let node = Arc::new(node);
        tokio::spawn(crate::metrics::count_leader_changes(id, node.watch_leader()));
        let mut stop = Vec::new();
        let mut listeners = Vec::new();
        let mut redis_address = None;
        if let Some((listener, address)) = redis_listener {
            let local = local_address(id, &address, &listener)?;
            redis_address = Some(local);
            let redis = Redis::new(
                Arc::clone(&node),
                cluster.clone(),
                limits,
                local.port(),
                auth.clone(),
                Arc::clone(&applied),
            );
            let (stop_redis, stopped) = oneshot::channel::<()>();
            stop.push(stop_redis);
            let acceptor = Acceptor::new(listener, "Redis", redis_tls, limits.max_connections, id);
            listeners.push(tokio::spawn(crate::redis::serve(acceptor, Arc::new(redis), stopped)));
        }
        let reload = auth.clone().map(|auth| AbortOnDropHandle::new(tokio::spawn(reload_on_hangup(id, auth))));
        let demo = demo.map(|handle| handle.0);
        let api = Api::new(Arc::clone(&node), Arc::clone(&applied), cluster, limits, auth, demo);
        let (stop_http, stopped) = oneshot::channel::<()>();
        stop.push(stop_http);
        let acceptor = Acceptor::new(listener, "HTTP", http_tls, limits.max_connections, id);
        listeners.push(tokio::spawn(serve_http(acceptor, crate::http::router(api), stopped)));
        tracing::info!(node = %id, http = %http_address, redis = ?redis_address, tls = tls.is_some(), "serving");
        let clock = tokio::spawn(crate::clock::tick_as_leader(Arc::clone(&node), Arc::clone(&applied)));
        let clock = AbortOnDropHandle::new(clock);
        Ok(Server {
            id,
            node,
            http_address,
            redis_address,
            stop,
            listeners,
            _reload: reload,
            _clock: clock,
            published: applied,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// The address of the Redis-protocol listener, if the node has a `redis` address.
    pub fn redis_address(&self) -> Option<SocketAddr> {
        self.redis_address
    }

    /// The Raft node, for embedding programs and tests.
    pub fn node(&self) -> &Arc<Node<KvStore>> {
        &self.node
    }

    /// What the store publishes as it applies: the applied index, and this node's reading of
    /// the cluster clock ([`crate::Published::now_ms`]) that writes are stamped with.
    pub fn published(&self) -> &Arc<crate::Published> {
        &self.published
    }

    /// Stops gracefully: a leader first hands leadership to its most up-to-date voter; then
    /// the node stops, and the listeners after the requests under way.
    pub async fn shutdown(self) -> Result<()> {
        let result = self.node.shutdown().await;
        self.stop_listeners().await;
        Ok(result?)
    }

    /// Stops at once, as a crash would, but in process (the demo's "kill"): a leader hands
    /// nothing over, and the others find out by its silence. What it wrote stays written.
    pub async fn kill(self) {
        self.node.stop_now().await;
        self.stop_listeners().await;
    }

    async fn stop_listeners(self) {
        for stop in self.stop {
            let _ = stop.send(());
        }

        // Blocking queries may hold connections open; don't wait for them for long.
        for listener in self.listeners {
            let _ = listener.await;
        }
    }
}

/// Reads the tokens file again on each SIGHUP; a file that does not load is logged and the
/// tokens in use stay.
async fn reload_on_hangup(id: NodeId, auth: Arc<Auth>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(node = %id, %error, "cannot listen for SIGHUP; the tokens file will not be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match auth.reload() {
            Ok(count) => {
                tracing::info!(node = %id, tokens = count, file = %auth.path().display(), "reloaded the tokens")
            }
            Err(error) => tracing::error!(node = %id, %error, "kept the tokens in use: the tokens file did not load"),
        }
    }
}

async fn bind(id: NodeId, address: &str) -> Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|source| Error::Listen { id, address: address.to_string(), source })
}

fn local_address(id: NodeId, address: &str, listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Listen { id, address: address.to_string(), source })
}

/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests under way when the server stops get this long to finish (blocking queries may
/// hold a connection for minutes: they are cut).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves HTTP/1.1 (over TLS if the acceptor has it) until `stop`. Our own accept loop
/// rather than `axum::serve`, for the header timeout (a client that trickles its headers is
/// dropped) and a connection limit.
async fn serve_http(acceptor: Acceptor, router: axum::Router, mut stop: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    // The connections' tasks: those still running after the drain are aborted when this
    // set is dropped (an embedding process keeps its runtime after a server stops).
    let mut connections = tokio::task::JoinSet::new();
    while let Some(incoming) = acceptor.next(&mut stop).await {
        while connections.try_join_next().is_some() {}
        // The client's address, for limits per client (`ConnectInfo` as axum names it).
        let router = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(incoming.address())));
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let Some((stream, slot)) = incoming.establish().await else { return };
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
            let _ = watcher.watch(connection).await;
            drop(slot);
        });
    }
    drop(acceptor);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

/// A client's connection: plain TCP, or TLS over it.
pub(crate) type ClientStream = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Takes client connections (HTTP or Redis) off a listener, at most
/// [`Limits::max_connections`] at once: a connection over the limit is closed as it arrives.
pub(crate) struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    protocol: &'static str,
    tls: Option<TlsAcceptor>,
    /// `skiff_accept_errors_total` of this listener.
    errors: metrics::Counter,
    /// When errors were last logged.
    failing: std::sync::Mutex<Failing>,
}

/// An accepted connection holding its slot, before its TLS handshake (if any).
pub(crate) struct Incoming {
    stream: TcpStream,
    address: SocketAddr,
    slot: OwnedSemaphorePermit,
    tls: Option<TlsAcceptor>,
    protocol: &'static str,
}

impl Incoming {
    /// The client's address.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Runs the TLS handshake, if the listener has TLS: a client gets [`HEADER_TIMEOUT`] for
    /// it. `None` if it failed (logged at debug: strangers and port scanners are common).
    /// Run it in the connection's own task, so a slow client holds up no other.
    pub(crate) async fn establish(self) -> Option<(ClientStream, OwnedSemaphorePermit)> {
        let Incoming { mut stream, address, slot, tls, protocol } = self;
        let Some(tls) = tls else { return Some((Either::Left(stream), slot)) };
        let handshake = async {
            // A TLS connection starts with a handshake record (0x16). Anything else is a
            // client speaking plain text to a TLS port: tell it so in its own protocol, as
            // a TLS alert would only read as garbage to it.
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 1 && first[0] != 0x16 {
                let hint = match protocol {
                    "HTTP" => {
                        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n\
                               This node serves HTTPS: use https:// and the cluster's CA (--cacert)\n"
                    }
                    _ => {
                        "-ERR this port speaks TLS: connect with TLS and the cluster's CA (redis-cli --tls --cacert)\r\n"
                    }
                };
                let _ = stream.write_all(hint.as_bytes()).await;
                // Take what the client sent before closing, or the close resets the
                // connection and the client may lose the answer.
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                let drain = async { while matches!(stream.read(&mut sink).await, Ok(1..)) {} };
                let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "plain text on a TLS port"));
            }
            tls.accept(stream).await
        };
        match tokio::time::timeout(HEADER_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => Some((Either::Right(stream), slot)),
            Ok(Err(error)) => {
                tracing::debug!(%error, %address, protocol, "a client's TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%address, protocol, "a client did not finish its TLS handshake in time");
                None
            }
        }
    }
}

impl Acceptor {
    /// Takes connections off `listener`, at most `max_connections` at once.
    pub(crate) fn new(
        listener: TcpListener,
        protocol: &'static str,
        tls: Option<TlsAcceptor>,
        max_connections: usize,
        node: NodeId,
    ) -> Acceptor {
        let errors = metrics::counter!("skiff_accept_errors_total", "node" => node.to_string(), "protocol" => protocol);
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(max_connections)),
            protocol,
            tls,
            errors,
            failing: std::sync::Mutex::new(Failing::default()),
        }
    }

    /// The next connection, holding its slot until dropped; `None` once `stop` fires, or
    /// after an error that says the listening socket itself is unusable.
    ///
    /// Any other `accept` error is survived: it belongs to one connection (ECONNABORTED:
    /// the client left before it was taken), and the next is taken at once; or it is a
    /// shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM) that closing connections will end, and the
    /// listener backs off (10 ms, doubling up to 100 ms) and tries again. The connections
    /// waiting meanwhile stay in the kernel's backlog. Errors are counted in
    /// `skiff_accept_errors_total` and logged at most once per [`ACCEPT_LOG_INTERVAL`].
    pub(crate) async fn next(&self, stop: &mut oneshot::Receiver<()>) -> Option<Incoming> {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = &mut *stop => return None,
            };
            let error = match accepted {
                Ok((stream, address)) => {
                    let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else { continue };
                    let _ = stream.set_nodelay(true);
                    let (tls, protocol) = (self.tls.clone(), self.protocol);
                    return Some(Incoming { stream, address, slot, tls, protocol });
                }
                Err(error) => error,
            };
            self.errors.increment(1);
            match accept_error(&error) {
                AcceptError::Connection => {
                    tracing::debug!(%error, protocol = self.protocol, "a connection was lost before it was accepted");
                }
                AcceptError::Fatal => {
                    tracing::error!(%error, protocol = self.protocol, "the listener cannot accept connections: it stops");
                    return None;
                }
                AcceptError::Shortage => {
                    self.log_shortage(&error, backoff);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = &mut *stop => return None,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Logs a shortage, at most once per [`ACCEPT_LOG_INTERVAL`], with how many went unlogged.
    fn log_shortage(&self, error: &std::io::Error, backoff: Duration) {
        let Ok(mut failing) = self.failing.lock() else { return };
        failing.unlogged += 1;
        let now = std::time::Instant::now();
        if failing.logged.is_some_and(|logged| now.duration_since(logged) < ACCEPT_LOG_INTERVAL) {
            return;
        }
        let errors = std::mem::take(&mut failing.unlogged);
        failing.logged = Some(now);
        tracing::warn!(%error, protocol = self.protocol, errors, ?backoff,
            "accepting connections fails (out of file descriptors or memory?): backing off and retrying");
    }
}

/// The first wait after an `accept` shortage, and the longest.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// `accept` shortages are logged at most this often.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// When an `accept` shortage was last logged, and how many happened since.
#[derive(Default)]
struct Failing {
    logged: Option<std::time::Instant>,
    unlogged: u64,
}

/// What an `accept` error means for the listener.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// One connection's trouble: take the next.
    Connection,
    /// Out of something (descriptors, memory, buffers): wait, then try again.
    Shortage,
    /// The listening socket is unusable (EINVAL: it is not listening; an unsupported
    /// operation): trying again would fail forever.
    Fatal,
}

fn accept_error(error: &std::io::Error) -> AcceptError {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionReset
        | ErrorKind::Interrupted
        | ErrorKind::WouldBlock
        | ErrorKind::TimedOut
        | ErrorKind::PermissionDenied => AcceptError::Connection,
        ErrorKind::InvalidInput | ErrorKind::Unsupported => AcceptError::Fatal,
        // EMFILE and ENFILE have no kind of their own; ENOMEM is OutOfMemory.
        _ => AcceptError::Shortage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let os = std::io::Error::from_raw_os_error;
        // Linux's numbers: EMFILE 24, ENFILE 23, ENOMEM 12, ENOBUFS 105, ECONNABORTED 103,
        // EINVAL 22.
        for shortage in [24, 23, 12, 105] {
            assert_eq!(accept_error(&os(shortage)), AcceptError::Shortage, "errno {shortage}");
        }
        assert_eq!(accept_error(&os(103)), AcceptError::Connection);
        assert_eq!(accept_error(&os(22)), AcceptError::Fatal);
    }

    /// A value limit whose entries could not cross to a follower is refused at start, as
    /// is a zero limit; the defaults fit.
    #[test]
    fn limits_that_do_not_fit_the_peer_frame_are_refused() {
        assert_eq!(Limits::default().check(), Ok(()));
        let too_large = Limits { max_value_bytes: 16 << 20, ..Limits::default() };
        let refused = too_large.check().expect_err("a 16 MiB value cannot fit a 16 MiB frame");
        assert!(refused.contains("--max-value-bytes 16777216") && refused.contains("never be replicated"), "{refused}");
        let largest = Limits { max_value_bytes: (16 << 20) - (64 << 10) - (8 << 10), ..Limits::default() };
        assert_eq!(largest.check(), Ok(()));
        let zero = Limits { max_reply_bytes: 0, ..Limits::default() };
        assert_eq!(zero.check(), Err("--max-reply-bytes is 0: nothing could be served".to_string()));
    }
}
