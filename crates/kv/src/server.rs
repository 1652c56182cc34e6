//! [`Server`]: one node of a Skiff key-value cluster: the Raft node replicating a
//! [`KvStore`] and the HTTP API on the node's `http` address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use skiff::config::ClusterConfig;
use skiff::{Node, NodeId};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::http::Api;
use crate::state::{KvStore, Retention};

/// Sizes a request may not exceed; checked before anything is proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_key_bytes: 8 << 10, max_value_bytes: 1 << 20 }
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
    pub limits: Limits,
    /// What the state machine remembers for exactly-once retries.
    pub retention: Retention,
}

impl ServerOptions {
    pub fn new(cluster: ClusterConfig, id: NodeId, data_dir: impl Into<PathBuf>) -> ServerOptions {
        ServerOptions {
            cluster,
            id,
            data_dir: data_dir.into(),
            limits: Limits::default(),
            retention: Retention::default(),
        }
    }
}

/// A running node: Raft, storage, peer transport and the HTTP API.
pub struct Server {
    id: NodeId,
    node: Arc<Node<KvStore>>,
    http_address: SocketAddr,
    stop_http: oneshot::Sender<()>,
    http: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts the node and binds its HTTP address. Must be called inside a tokio runtime.
    pub async fn start(options: ServerOptions) -> Result<Server> {
        let ServerOptions { cluster, id, data_dir, limits, retention } = options;
        let address = cluster
            .node(id)
            .map_err(|error| Error::Config(error.to_string()))?
            .http
            .clone()
            .ok_or_else(|| Error::Config(format!("{id} has no http address in the cluster file")))?;
        // Bind first: a port in use is reported before the node joins the cluster.
        let listener = tokio::net::TcpListener::bind(&address).await.map_err(|source| Error::Listen {
            id,
            address: address.clone(),
            source,
        })?;
        let http_address = listener.local_addr().map_err(|source| Error::Listen { id, address, source })?;
        let mut store = KvStore::new(retention);
        let applied = store.subscribe();
        let node = Arc::new(Node::start(&cluster, id, store, &data_dir).await?);
        let api = Api::new(Arc::clone(&node), applied, cluster, limits);
        let (stop_http, stopped) = oneshot::channel::<()>();
        let router = crate::http::router(api);
        let http = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(node = %id, %error, "the HTTP server failed");
            }
        });
        tracing::info!(node = %id, http = %http_address, "serving");
        Ok(Server { id, node, http_address, stop_http, http })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// The Raft node, for embedding programs and tests.
    pub fn node(&self) -> &Arc<Node<KvStore>> {
        &self.node
    }

    /// Stops gracefully: a leader first hands leadership to its most up-to-date voter; then
    /// the node stops, and the HTTP listener after the requests under way.
    pub async fn shutdown(self) -> Result<()> {
        let result = self.node.shutdown().await;
        let _ = self.stop_http.send(());
        // Blocking queries may hold connections open; don't wait for them for long.
        let http = self.http;
        let abort = http.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), http).await.is_err() {
            abort.abort();
        }
        Ok(result?)
    }
}
