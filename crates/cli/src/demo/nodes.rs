//! The demo's nodes, and the dashboard's control of them: kill, restart, add a learner
//! ([`DemoControl`]). Each node is a [`Server`] in this process, on its own data directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::future::BoxFuture;
use skiff::config::{ClusterConfig, NodeConfig, parse_node_id};
use skiff::transport::faults::{Action, Direction, Fault};
use skiff::{MemberAddress, Node, NodeId};
use skiff_kv::{DemoControl, DemoHandle, DemoNode, KvStore, Server, ServerOptions};

/// In slow motion every message is this many ticks on its way, so that a person sees a
/// pre-vote, a vote and their answers travel: longer ticks alone stretch the timers, not
/// the network, and an election would still be over in a blink.
pub(super) const SLOW_MESSAGE_TICKS: u64 = 3;

/// The nodes of one demo.
pub struct Nodes {
    me: Weak<Nodes>,
    /// The cluster file the nodes start from; a learner added by the dashboard joins it.
    cluster: Mutex<ClusterConfig>,
    data_dir: PathBuf,
    slow: bool,
    slots: Mutex<BTreeMap<NodeId, Slot>>,
}

struct Slot {
    http: String,
    state: State,
}

enum State {
    Running(Server),
    Stopped,
    /// Being started or stopped: other actions on it wait for that to finish.
    Busy,
}

impl Nodes {
    pub fn new(cluster: ClusterConfig, data_dir: PathBuf, slow: bool) -> anyhow::Result<Arc<Nodes>> {
        let mut slots = BTreeMap::new();
        for node in &cluster.node {
            let id = node.node_id()?;
            let http = node.http.clone().unwrap_or_default();
            slots.insert(id, Slot { http, state: State::Stopped });
        }
        Ok(Arc::new_cyclic(|me| Nodes {
            me: me.clone(),
            cluster: Mutex::new(cluster),
            data_dir,
            slow,
            slots: Mutex::new(slots),
        }))
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn options(&self, id: NodeId) -> ServerOptions {
        let cluster = self.cluster.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut options = ServerOptions::new(cluster, id, self.data_dir.join(id.to_string()));
        // The demo is for experiments: partition a node with POST /v1/skiff/faults, pause it.
        options.fault_injection = true;
        options.demo = self.me.upgrade().map(|me| DemoHandle(me as Arc<dyn DemoControl>));
        options
    }

    /// Marks `id` busy if it is in state `from` (`running` or not), returning its server if
    /// it ran.
    fn claim(&self, id: NodeId, running: bool) -> Result<Option<Server>, String> {
        let mut slots = self.slots();
        let slot = slots.get_mut(&id).ok_or_else(|| format!("{id} is not a node of this demo"))?;
        match (&slot.state, running) {
            (State::Busy, _) => Err(format!("{id} is being started or stopped; try again in a moment")),
            (State::Running(_), false) => Err(format!("{id} is already running")),
            (State::Stopped, true) => Err(format!("{id} is not running")),
            _ => match std::mem::replace(&mut slot.state, State::Busy) {
                State::Running(server) => Ok(Some(server)),
                _ => Ok(None),
            },
        }
    }

    fn set(&self, id: NodeId, state: State) {
        if let Some(slot) = self.slots().get_mut(&id) {
            slot.state = state;
        }
    }

    /// Starts node `id` (on its data directory, if it has one).
    pub async fn start(&self, id: NodeId) -> Result<(), String> {
        self.claim(id, false)?;
        match Server::start(self.options(id)).await {
            Ok(server) => {
                let others: BTreeSet<NodeId> = self.slots().keys().copied().filter(|other| *other != id).collect();
                self.slow_down(&server, others);
                self.set(id, State::Running(server));
                Ok(())
            }
            Err(error) => {
                self.set(id, State::Stopped);
                Err(format!("cannot start {id}: {error}"))
            }
        }
    }

    /// Starts every node at once, so that no node waits long for peers that are not up yet.
    pub async fn start_all(self: &Arc<Self>) -> anyhow::Result<()> {
        let ids: Vec<NodeId> = self.slots().keys().copied().collect();
        let starts: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let nodes = Arc::clone(self);
                tokio::spawn(async move { nodes.start(id).await })
            })
            .collect();
        let mut failure = None;
        for start in starts {
            let result = start.await.map_err(|error| error.to_string()).and_then(|started| started);
            if let Err(error) = result {
                failure.get_or_insert(error);
            }
        }
        match failure {
            Some(error) => Err(anyhow::anyhow!(error)),
            None => Ok(()),
        }
    }

    /// A running node, for waiting on the first leader and for membership changes.
    pub fn any_running(&self) -> Option<Arc<Node<KvStore>>> {
        self.slots().values().find_map(|slot| match &slot.state {
            State::Running(server) => Some(Arc::clone(server.node())),
            _ => None,
        })
    }

    /// Shuts every running node down, together; a failure is logged, not fatal.
    pub async fn stop_all(&self) {
        let servers: Vec<Server> = {
            let mut slots = self.slots();
            slots
                .values_mut()
                .filter_map(|slot| match std::mem::replace(&mut slot.state, State::Stopped) {
                    State::Running(server) => Some(server),
                    _ => None,
                })
                .collect()
        };
        let tasks: Vec<_> = servers
            .into_iter()
            .map(|server| {
                let id = server.id();
                tokio::spawn(async move { (id, server.shutdown().await) })
            })
            .collect();
        for task in tasks {
            match task.await {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(error))) => tracing::warn!(node = %id, %error, "did not stop cleanly"),
                Err(error) => tracing::warn!(%error, "a shutdown task failed"),
            }
        }
    }

    /// In slow motion, delays the messages `server` sends to `peers` ([`SLOW_MESSAGE_TICKS`]),
    /// with the fault injection the dashboard shows (its "heal" ends the slow motion).
    fn slow_down(&self, server: &Server, peers: BTreeSet<NodeId>) {
        let Some(faults) = server.node().faults() else { return };
        if !self.slow || peers.is_empty() {
            return;
        }
        let tick_ms = self.cluster.lock().unwrap_or_else(PoisonError::into_inner).raft.tick_ms;
        let delay_ms = tick_ms.saturating_mul(SLOW_MESSAGE_TICKS);
        faults.add(Fault { action: Action::Delay { delay_ms }, peers, direction: Direction::Out });
    }

    async fn kill_node(self: Arc<Self>, id: NodeId) -> Result<(), String> {
        if let Some(server) = self.claim(id, true)? {
            server.kill().await;
        }
        self.set(id, State::Stopped);
        tracing::warn!(node = %id, "killed from the dashboard");
        Ok(())
    }

    async fn add_node(self: Arc<Self>) -> Result<DemoNode, String> {
        let config = {
            let mut cluster = self.cluster.lock().unwrap_or_else(PoisonError::into_inner);
            if cluster.tls.is_some() {
                return Err("the demo cannot add a node with TLS on: it has no certificate for one".to_string());
            }
            let ids: Vec<NodeId> = cluster.node.iter().filter_map(|node| node.node_id().ok()).collect();
            let id = NodeId(ids.iter().map(|id| id.0).max().unwrap_or(0) + 1);
            let port = || free_port().map_err(|error| format!("no free port for {id}: {error}"));
            let template = cluster.node.first().cloned().ok_or("the demo has no node to copy")?;
            let config = NodeConfig {
                id: id.to_string(),
                raft: port()?,
                raft_listen: None,
                http: Some(port()?),
                redis: Some(port()?),
                join: true,
                ..template
            };
            cluster.node.push(config.clone());
            config
        };
        let id = parse_node_id(&config.id).map_err(|error| error.to_string())?;
        let http = config.http.clone().unwrap_or_default();
        self.slots().insert(id, Slot { http: http.clone(), state: State::Stopped });
        self.start(id).await?;
        for (other, slot) in self.slots().iter() {
            if let (State::Running(server), true) = (&slot.state, *other != id) {
                self.slow_down(server, BTreeSet::from([id]));
            }
        }
        let address =
            MemberAddress { raft: config.raft.clone(), http: config.http.clone(), redis: config.redis.clone() };
        let member = self.slots().iter().find_map(|(other, slot)| match &slot.state {
            State::Running(server) if *other != id => Some(Arc::clone(server.node())),
            _ => None,
        });
        let member = member.ok_or_else(|| format!("{id} started, but no member runs to add it"))?;
        member
            .add_learner(id, Some(&address))
            .await
            .map_err(|error| format!("{id} started, but adding it failed: {error}"))?;
        tracing::info!(node = %id, "added as a learner from the dashboard");
        Ok(DemoNode { id, http, running: true })
    }
}

/// A port of 127.0.0.1 that nothing listens on now.
fn free_port() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

impl DemoControl for Nodes {
    fn nodes(&self) -> Vec<DemoNode> {
        self.slots()
            .iter()
            .map(|(id, slot)| DemoNode {
                id: *id,
                http: slot.http.clone(),
                running: matches!(slot.state, State::Running(_)),
            })
            .collect()
    }

    fn slow(&self) -> bool {
        self.slow
    }

    fn kill(&self, id: NodeId) -> BoxFuture<'static, Result<(), String>> {
        let me = self.me.upgrade();
        Box::pin(async move { me.ok_or("the demo is stopping")?.kill_node(id).await })
    }

    fn restart(&self, id: NodeId) -> BoxFuture<'static, Result<(), String>> {
        let me = self.me.upgrade();
        Box::pin(async move { me.ok_or("the demo is stopping")?.start(id).await })
    }

    fn add_learner(&self) -> BoxFuture<'static, Result<DemoNode, String>> {
        let me = self.me.upgrade();
        Box::pin(async move { me.ok_or("the demo is stopping")?.add_node().await })
    }
}
