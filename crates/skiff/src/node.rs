//! [`Node`]: a running member of a Skiff cluster, replicating a [`StateMachine`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use skiff_raft::{
    Config, Entry, Index, LogId, Membership, MembershipChange, NodeId, Raft, RoleName, SnapshotMeta, Term,
};
use tokio::sync::{mpsc, oneshot, watch};

use skiff_storage::{DiskOptions, DiskStorage};

use crate::address::MemberAddress;
use crate::apply::ReadQuery;
use crate::bootstrap::{Bootstrap, BootstrapMode};
use crate::config::{ClusterConfig, RaftSection};
use crate::driver::{Driver, DriverOptions, Request, StopCause};
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::store::LogStore;
use crate::tls::TlsMaterial;
use crate::transport::faults::Faults;
use crate::transport::tcp::{ClusterIdRecorder, TcpOptions, TcpTransport};
use crate::transport::{PeerHealth, Transport};
use crate::wire::{ClusterId, ForwardedRequest, PeerMessage};

/// Writes a state machine's snapshot ([`Node::snapshot_now`]), on any thread.
pub type SnapshotData = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

/// How a node runs, apart from what the cluster file says.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The consensus core's settings (id, timeouts in ticks, flow control).
    pub raft: Config,
    /// How long one tick lasts.
    pub tick: Duration,
    /// Snapshot the state machine and compact the log after at least this many applied
    /// entries, once the log since the last snapshot is at least as large as that snapshot.
    /// The apply thread streams the snapshot into its file; the log goes on meanwhile.
    pub snapshot_after_entries: u64,
    /// How long `propose` and `read` wait before giving up. Default 5 s.
    pub request_timeout: Duration,
    /// Reads that may wait for the state machine at once; beyond, a read is refused at
    /// once with [`crate::Error::Overloaded`] (a 503 or `-TRYAGAIN`). Default 10,000.
    pub max_queued_reads: usize,
    /// Committed entries, in bytes, handed to the apply thread and not yet applied. Above
    /// it, the driver hands out no more until the apply thread catches up: the entries
    /// wait in the log, and the driver never waits. Default 64 MiB.
    pub max_apply_backlog_bytes: u64,
    /// The largest snapshot this node accepts from a leader, in bytes: the bound on what a
    /// snapshot stream may write to disk. A larger one is dropped with an error in the log
    /// (the node cannot catch up by snapshot until the limit is raised). Default 32 GiB.
    pub max_snapshot_bytes: u64,
}

impl NodeOptions {
    /// The defaults for node `id`: those of the cluster file's `[raft]` section.
    pub fn new(id: NodeId) -> NodeOptions {
        NodeOptions::from_section(&RaftSection::default(), id)
    }

    /// Node `id`'s options from a cluster file's `[raft]` section.
    pub fn from_section(section: &RaftSection, id: NodeId) -> NodeOptions {
        NodeOptions {
            raft: section.core_config(id),
            tick: section.tick(),
            snapshot_after_entries: section.snapshot_after_entries,
            request_timeout: Duration::from_secs(5),
            max_queued_reads: 10_000,
            max_apply_backlog_bytes: 64 << 20,
            max_snapshot_bytes: 32 << 30,
        }
    }

    /// The longest election timeout, `tick` times the core's
    /// [`max_election_timeout_ticks`](Config::max_election_timeout_ticks).
    pub fn max_election_timeout(&self) -> Duration {
        self.tick * self.raft.max_election_timeout_ticks()
    }
}

/// Choices for [`Node::start_with_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Fault injection on (see [`Node::start_with_fault_injection`]).
    pub fault_injection: bool,
    /// Whether a new data directory waits for the bootstrap check before it votes.
    pub bootstrap: BootstrapMode,
}

/// The term and the leader a node knows of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderInfo {
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// A node's view of itself and its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: RoleName,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub last_log_id: LogId,
    /// The last index covered by the latest snapshot.
    pub snapshot_index: Index,
    pub membership: Membership,
    /// The other members: replication progress (on the leader) and transport health.
    pub peers: Vec<PeerView>,
    /// The first index still in the log (earlier ones are in the snapshot).
    pub first_index: Index,
    /// A follower's or candidate's election timer, in ticks (`None` on a leader).
    pub election_timer: Option<skiff_raft::ElectionTimer>,
}

/// What a node is doing, for people watching it: [`Node::activity`].
#[derive(Clone, Debug, PartialEq)]
pub struct NodeActivity {
    pub status: NodeStatus,
    /// Since the node started.
    pub uptime: Duration,
    /// How long one tick of the core lasts (the election timer counts ticks).
    pub tick: Duration,
    /// Paused with [`Node::set_paused`].
    pub paused: bool,
    /// The last entries of the log (at most 24), oldest first.
    pub log_tail: Vec<LogId>,
    /// Messages sent and events since the reader's last look.
    pub page: crate::activity::ActivityPage,
}

/// A page of a node's log, as [`Node::log`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPage {
    /// The first index still in the log (earlier ones are in the snapshot).
    pub first_index: Index,
    pub last_index: Index,
    pub commit: Index,
    pub applied: Index,
    pub entries: Vec<Entry>,
}

/// One peer as a node sees it: the failure-detector view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    pub voter: bool,
    /// Known only on the leader.
    pub match_index: Option<Index>,
    pub next_index: Option<Index>,
    pub health: PeerHealth,
}

/// How a [`Node::propose`] ended, as `skiff_proposals_total` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProposalOutcome {
    /// Committed and applied.
    Committed,
    /// Perhaps committed, perhaps not ([`crate::ErrorKind::Indeterminate`]: a timeout, a
    /// leader change while it was under way).
    Unknown,
    /// Any other error: no leader, refused by the cluster's state, the node failed.
    Failed,
}

impl ProposalOutcome {
    fn of<T>(result: &Result<T>) -> ProposalOutcome {
        match result {
            Ok(_) => ProposalOutcome::Committed,
            Err(error) if error.kind() == crate::ErrorKind::Indeterminate => ProposalOutcome::Unknown,
            Err(_) => ProposalOutcome::Failed,
        }
    }

    /// The `outcome` label: `committed`, `unknown` or `failed`.
    fn label(self) -> &'static str {
        match self {
            ProposalOutcome::Committed => "committed",
            ProposalOutcome::Unknown => "unknown",
            ProposalOutcome::Failed => "failed",
        }
    }
}

/// A member of a Skiff cluster. Cheap to share (`Arc<Node<S>>`); every method may be
/// called from any task. Any node accepts proposals (followers forward them to the leader)
/// and linearizable reads.
pub struct Node<S: StateMachine> {
    id: NodeId,
    requests: mpsc::Sender<Request<S>>,
    leader: watch::Receiver<LeaderInfo>,
    /// `Some` once the driver stopped, with why (`None` inside: shut down); the sender
    /// dropped without a value means the driver thread panicked.
    stop: watch::Receiver<Option<StopCause>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    options: NodeOptions,
    faults: Option<Faults>,
}

/// The runtime of a node's driver thread: one thread, which also runs the TCP transport's
/// tasks when the node has one.
fn driver_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

impl<S: StateMachine> Node<S> {
    /// Starts node `id` of the cluster described by `cluster` (the cluster file), with its
    /// durable state in `data_dir` (created if new; a directory of another node or cluster
    /// is refused), listening for peers over TCP. Must be called inside a tokio runtime.
    ///
    /// A new data directory does not vote until the bootstrap check confirms that this node
    /// never voted before ([`crate::bootstrap`]): at a cluster's first start, once the other
    /// initial members answer.
    pub async fn start(
        cluster: &ClusterConfig,
        id: NodeId,
        state_machine: S,
        data_dir: impl AsRef<Path>,
    ) -> Result<Node<S>> {
        Node::start_with_options(cluster, id, state_machine, data_dir.as_ref(), StartOptions::default()).await
    }

    /// As [`Node::start`], with fault injection on: [`Node::faults`] drops or delays
    /// messages to and from chosen peers, for testing how the cluster copes with partitions
    /// and slow links. Never for production.
    pub async fn start_with_fault_injection(
        cluster: &ClusterConfig,
        id: NodeId,
        state_machine: S,
        data_dir: impl AsRef<Path>,
    ) -> Result<Node<S>> {
        let options = StartOptions { fault_injection: true, ..StartOptions::default() };
        Node::start_with_options(cluster, id, state_machine, data_dir.as_ref(), options).await
    }

    /// As [`Node::start`], with the choices of [`StartOptions`].
    pub async fn start_with_options(
        cluster: &ClusterConfig,
        id: NodeId,
        state_machine: S,
        data_dir: &Path,
        start: StartOptions,
    ) -> Result<Node<S>> {
        let node = cluster.node(id)?;
        let listen_address = node.raft_listen_address();
        let listen = tokio::net::lookup_host(listen_address)
            .await?
            .next()
            .ok_or_else(|| Error::Unresolved { id, address: listen_address.to_string() })?;
        let name = cluster.cluster.name.clone();
        // Peers use mutual TLS when the cluster file has [tls]; the files are checked now.
        let tls = match cluster.tls_files(id) {
            None => None,
            Some(files) => Some(TlsMaterial::load(&files).map_err(|error| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("node {id}: peer TLS: {error}"))
            })?),
        };
        let voters = cluster.voters();
        // A node that joins later starts with no membership: it has no vote, and learns the
        // cluster's membership (and its own place in it) from the leader.
        let initial = if node.join { Membership::default() } else { voters.clone() };
        let mut disk_options = DiskOptions::new(id, name.clone(), initial);
        // The initial voter with the lowest id makes the cluster's id: when it creates its
        // directory if it needs no bootstrap check (`--bootstrap`, or a cluster of one),
        // else once the check confirms a new cluster (a node whose data was lost must not
        // make a new id: it would be refused by its peers, unable to learn it was lost).
        // Every other node adopts the id from a peer (see `transport::tcp`).
        let lowest = voters.voters.first() == Some(&id) && !node.join;
        let unchecked = start.bootstrap == BootstrapMode::Force || voters.voters.len() == 1;
        if lowest && unchecked {
            disk_options.cluster_id = Some(ClusterId::random()?.to_string());
        }
        let store = DiskStorage::open(data_dir, disk_options)?;
        let mut bootstrap =
            Bootstrap::open(data_dir, id, &voters, store.recovery().created, node.join, start.bootstrap)?;
        bootstrap.makes_cluster_id = lowest && store.cluster_id().is_none();
        let (inbox, receiver) = mpsc::channel(4096);
        let mut tcp = TcpOptions::new(id, name, listen);
        tcp.peers = cluster.peers_of(id);
        tcp.tls = tls;
        tcp.cluster_id = store.cluster_id().and_then(ClusterId::parse);
        let cluster_id_file = store.cluster_id_file();
        tcp.record_cluster_id = Some(ClusterIdRecorder::new(move |cluster_id| {
            cluster_id_file.record(&cluster_id.to_string()).map_err(std::io::Error::other)
        }));
        let options = NodeOptions::from_section(&cluster.raft, id);
        // The peer connections' tasks run on the driver's thread: a message the driver
        // sends, or one that arrives for it, crosses no thread.
        let runtime = driver_runtime()?;
        if !start.fault_injection {
            let transport = TcpTransport::start_on(tcp, inbox, runtime.handle())?;
            return Node::start_inner(options, state_machine, store, transport, receiver, bootstrap, runtime);
        }
        // Faults sit between the transport and the core, both ways.
        let faults = Faults::default();
        let transport = TcpTransport::start_on(tcp, faults.filter_inbox(inbox), runtime.handle())?;
        let transport = faults.wrap(transport, tokio::runtime::Handle::current());
        let mut node = Node::start_inner(options, state_machine, store, transport, receiver, bootstrap, runtime)?;
        node.faults = Some(faults);
        Ok(node)
    }

    /// Starts a node from its parts: a store (new, or holding a previous run's state), a
    /// transport already connected to the peers, and the inbox that transport delivers to.
    pub fn start_with<L: LogStore>(
        options: NodeOptions,
        state_machine: S,
        store: L,
        transport: Arc<dyn Transport>,
        inbox: mpsc::Receiver<(NodeId, PeerMessage)>,
    ) -> Result<Node<S>> {
        Node::start_inner(options, state_machine, store, transport, inbox, Bootstrap::confirmed(), driver_runtime()?)
    }

    fn start_inner<L: LogStore>(
        options: NodeOptions,
        state_machine: S,
        store: L,
        transport: Arc<dyn Transport>,
        inbox: mpsc::Receiver<(NodeId, PeerMessage)>,
        bootstrap: Bootstrap,
        runtime: tokio::runtime::Runtime,
    ) -> Result<Node<S>> {
        let id = options.raft.id;
        let raft = Raft::new(options.raft.clone(), store)?;
        let (leader_sender, leader) = watch::channel(LeaderInfo::default());
        let driver_options = DriverOptions {
            tick: options.tick,
            request_timeout: options.request_timeout,
            snapshot_after_entries: options.snapshot_after_entries,
            shutdown_wait_ticks: options.raft.max_election_timeout_ticks(),
            max_queued_reads: options.max_queued_reads,
            max_apply_backlog_bytes: options.max_apply_backlog_bytes,
            max_snapshot_bytes: options.max_snapshot_bytes,
            bootstrap,
        };
        let (stop_sender, stop) = watch::channel(None);
        let driver = Driver::new(raft, state_machine, transport, driver_options, leader_sender, stop_sender)?;
        let (requests, requests_receiver) = mpsc::channel(4096);
        let thread = std::thread::Builder::new()
            .name(format!("skiff-{id}"))
            .spawn(move || runtime.block_on(driver.run(requests_receiver, inbox)))?;
        Ok(Node { id, requests, leader, stop, thread: Mutex::new(Some(thread)), options, faults: None })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The options the node runs with.
    pub fn options(&self) -> &NodeOptions {
        &self.options
    }

    /// The injected faults, if the node was started with
    /// [`Node::start_with_fault_injection`].
    pub fn faults(&self) -> Option<&Faults> {
        self.faults.as_ref()
    }

    /// Proposes `command` and returns its output once it is committed and applied. From a
    /// follower, the command is forwarded to the leader and the leader's output returned.
    /// Retries while no leader is known, until the request timeout.
    /// Each call is counted in `skiff_proposals_total{outcome}`: `committed`, `unknown`
    /// (an indeterminate error) or `failed` (any other).
    pub async fn propose(&self, command: S::Command) -> Result<S::Output> {
        let command = postcard::to_stdvec(&command)?;
        let output = self.write(ForwardedRequest::Propose(Bytes::from(command))).await;
        let outcome = ProposalOutcome::of(&output);
        metrics::counter!("skiff_proposals_total", "node" => self.id.to_string(), "outcome" => outcome.label())
            .increment(1);
        Ok(postcard::from_bytes(&output?)?)
    }

    /// Runs `query` on the state machine once it reflects every write committed before the
    /// call (ReadIndex, thesis §6.4; on a follower the read index comes from the leader).
    pub async fn read<R: Send + 'static>(&self, query: impl FnOnce(&S) -> R + Send + 'static) -> Result<R> {
        let query = Arc::new(Mutex::new(Some(query)));
        self.with_retries(|| {
            let query = Arc::clone(&query);
            let (reply, result) = oneshot::channel();
            let run: ReadQuery<S> = Box::new(move |state| {
                let outcome = state.map(|state| {
                    let query = query.lock().ok().and_then(|mut query| query.take());
                    query.map(|query| query(state))
                });
                let _ = reply.send(outcome);
            });
            (Request::Read { linearizable: true, query: run }, result)
        })
        .await?
        .ok_or_else(Error::shut_down)
    }

    /// A copy of the state machine's whole state at a linearizable point: it reflects every
    /// write committed before the call (a read barrier, as [`Node::read`]), and comes with
    /// its metadata: the last entry it covers and the membership in effect there. The data
    /// is written later, on any thread, by the returned writer, while the node goes on
    /// applying writes: a state machine with a [`StateMachine::snapshot_view`] hands out a
    /// view (the KV store's costs a reference count); any other writes its snapshot into
    /// memory on the apply thread first. This is what a backup is made from.
    pub async fn snapshot_now(&self) -> Result<(SnapshotMeta, SnapshotData)> {
        let taken = self
            .read(|state: &S| {
                let meta = crate::apply::position().expect("queries run on the apply thread, which sets its position");
                let data: SnapshotData = match state.snapshot_view() {
                    Some(view) => view,
                    None => {
                        let mut bytes = Vec::new();
                        let written = state.snapshot(&mut bytes);
                        Box::new(move |out: &mut dyn std::io::Write| written.and_then(|()| out.write_all(&bytes)))
                    }
                };
                (meta, data)
            })
            .await?;
        Ok(taken)
    }

    /// Runs `query` on this node's state machine now, however far behind it may be.
    pub async fn read_stale<R: Send + 'static>(&self, query: impl FnOnce(&S) -> R + Send + 'static) -> Result<R> {
        self.ask(|reply| {
            let run: ReadQuery<S> = Box::new(move |state| {
                let _ = reply.send(state.map(query));
            });
            Request::Read { linearizable: false, query: run }
        })
        .await?
    }

    /// This node's view of the cluster.
    pub async fn status(&self) -> Result<NodeStatus> {
        self.ask(|reply| Request::Status { reply }).await
    }

    /// The node's status, its log's tail and what it did since `seen` (a reader passes the
    /// `seen` of the page it got last). Cheap: a reader may ask ten times a second.
    pub async fn activity(&self, seen: crate::activity::Seen) -> Result<NodeActivity> {
        self.ask(|reply| Request::Activity { seen, reply }).await
    }

    /// Pauses the node (for experiments: the dashboard's "pause"), or resumes it. A paused
    /// node's core gets no ticks and no messages and sends none, as if its process were
    /// stopped; unlike a stopped process, it still answers [`Node::status`] and
    /// [`Node::activity`], and tells clients [`crate::Error::Paused`]. Returns whether it is
    /// paused now.
    pub async fn set_paused(&self, paused: bool) -> Result<bool> {
        self.ask(|reply| Request::Pause { paused, reply }).await
    }

    /// Up to `limit` entries of this node's log, from `from` (default: the last `limit`),
    /// with the commit and applied indexes.
    pub async fn log(&self, from: Option<Index>, limit: usize) -> Result<LogPage> {
        self.ask(|reply| Request::Log { from, limit, reply }).await?
    }

    /// Sends the driver the request `make` builds around a reply channel, and waits for the
    /// answer. A reply dropped unanswered means the driver stopped: the error says why.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request<S>) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        answer.await.map_err(|_| self.stopped_error())
    }

    /// The term and leader this node knows of now.
    pub fn leader(&self) -> LeaderInfo {
        *self.leader.borrow()
    }

    /// A receiver of every change of term or leader this node sees.
    pub fn watch_leader(&self) -> watch::Receiver<LeaderInfo> {
        self.leader.clone()
    }

    /// Waits until this node knows a leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let mut leader = self.leader.clone();
        let wait = leader.wait_for(|info| info.leader.is_some());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(info)) => info.leader.ok_or(Error::NoLeader),
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Asks the leader to hand leadership to `target` (thesis §3.10), or without one to the
    /// voter the leader picks (the one holding most of its log). Returns when the leader
    /// has started the transfer; watch [`Node::watch_leader`] for its end.
    pub async fn transfer_leader(&self, target: Option<NodeId>) -> Result<()> {
        self.write(ForwardedRequest::TransferLeader(target)).await.map(|_| ())
    }

    /// Adds `id` as a learner: it receives the log but does not vote. With an address,
    /// every member learns from the membership where to reach it; without one, each node
    /// must know it another way (its cluster file).
    pub async fn add_learner(&self, id: NodeId, address: Option<&MemberAddress>) -> Result<()> {
        let address = address.map(MemberAddress::to_string);
        self.change_membership(MembershipChange::AddLearner { id, address }).await
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<()> {
        self.change_membership(MembershipChange::Promote(id)).await
    }

    /// Removes `id` from the cluster. The leader too: it steps down once the change is
    /// committed (thesis §4.2.2), and the others elect a new one.
    pub async fn remove(&self, id: NodeId) -> Result<()> {
        self.change_membership(MembershipChange::Remove(id)).await
    }

    /// Proposes `change`. When its outcome is unknown because the leader changed while it
    /// was in flight (as it does when the leader removes itself: the new leader may be
    /// elected before the old one's answer arrives), settles it: after a linearizable read
    /// every change committed before it is applied here, so the applied membership says
    /// whether this one took effect. A membership change can be checked so because it is
    /// idempotent: the same change applied twice leaves the same membership.
    async fn change_membership(&self, change: MembershipChange) -> Result<()> {
        match self.write(ForwardedRequest::Membership(change.clone())).await {
            Err(Error::OutcomeUnknown) => {
                let applied = self.read(|_| crate::apply::position().map(|meta| meta.membership)).await;
                match applied {
                    Ok(Some(membership)) if membership.shows(&change) => Ok(()),
                    _ => Err(Error::OutcomeUnknown),
                }
            }
            outcome => outcome.map(|_| ()),
        }
    }

    /// Stops the node. A leader first hands leadership to its most up-to-date voter and
    /// waits (up to about an election timeout) for it to take over.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop_driver(true).await;
        Ok(())
    }

    /// Stops the node at once: a leader hands nothing over (as in a crash, its followers
    /// elect a new leader after an election timeout). For experiments, such as the
    /// dashboard's "kill" in `skiff demo`.
    pub async fn stop_now(&self) {
        self.stop_driver(false).await;
    }

    async fn stop_driver(&self, hand_over: bool) {
        let (reply, done) = oneshot::channel();
        if self.requests.send(Request::Shutdown { reply, hand_over }).await.is_ok() {
            let _ = done.await;
        }
        let thread = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn write(&self, body: ForwardedRequest) -> Result<Bytes> {
        self.with_retries(|| {
            let (reply, result) = oneshot::channel();
            (Request::Write { body: body.clone(), reply }, result)
        })
        .await
    }

    /// Sends the request `make` builds and waits for its answer; while no leader is known
    /// or leadership changed (the request was certainly not applied), tries again, until
    /// the request timeout.
    async fn with_retries<T>(&self, make: impl Fn() -> (Request<S>, oneshot::Receiver<Result<T>>)) -> Result<T> {
        let timeout = self.options.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let pause = self.options.tick * self.options.raft.heartbeat_interval_ticks;
        loop {
            let (request, result) = make();
            self.send(request).await?;
            let outcome = match tokio::time::timeout_at(deadline, result).await {
                Err(_) => return Err(Error::Timeout(timeout)),
                Ok(Err(_)) => return Err(self.stopped_error()),
                Ok(Ok(outcome)) => outcome,
            };
            match outcome {
                Err(Error::NoLeader | Error::LeadershipLost) if tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn send(&self, request: Request<S>) -> Result<()> {
        self.requests.send(request).await.map_err(|_| self.stopped_error())
    }

    /// Waits until the node stops, and says why: [`Error::Stopped`], with no cause after
    /// [`Node::shutdown`], else the failure that stopped it (a storage error, a panic in the
    /// state machine or the driver). A process serving one node exits with it.
    pub async fn stopped(&self) -> Error {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(Option::is_some).await;
        self.stopped_error()
    }

    /// Why the node has stopped, if it has, without waiting: what [`Node::stopped`] would
    /// return; `None` while its driver runs. Cheap (a look at a watch channel): for
    /// liveness probes.
    pub fn stop_reason(&self) -> Option<Error> {
        let stopped = self.stop.borrow().is_some() || self.stop.has_changed().is_err();
        stopped.then(|| self.stopped_error())
    }

    fn stopped_error(&self) -> Error {
        let stop = self.stop.borrow();
        match (&*stop, self.stop.has_changed()) {
            (Some(cause), _) => Error::Stopped { cause: cause.clone() },
            // The driver's end is dropped without a word only when its thread panicked.
            (None, Err(_)) => Error::Stopped { cause: Some(Arc::new(Error::DriverPanicked)) },
            (None, Ok(_)) => Error::shut_down(),
        }
    }
}
