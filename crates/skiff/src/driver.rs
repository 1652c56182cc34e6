//! The driver: one thread owns the consensus core and the store. It feeds the core ticks,
//! peer messages and client requests, and executes each `Ready` exactly as its contract
//! says: send a leader's messages and hand the committed entries it already holds durably
//! to the apply thread (`apply.rs`), persist and sync, send the rest, hand the other
//! committed entries to the apply thread in order, advance.
//!
//! Everything that arrives while one `Ready` is being handled is fed to the core before
//! the next `ready()`, so concurrent proposals share one append, one fsync and one
//! `AppendEntries` per follower (group commit).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_raft::{Index, Message, NodeId, Raft, Ready, RoleName};
use tokio::sync::{mpsc, oneshot, watch};

use crate::activity::{Activity, Seen};
use crate::address::MemberAddress;
use crate::apply::{Applier, CountingReader, Event, Progress, ReadQuery, Responder, SnapshotPolicy, Task};
use crate::bootstrap::{self, Bootstrap};
use crate::error::{Error, Result, StorageFailure};
use crate::node::{LeaderInfo, LogPage, NodeActivity, NodeStatus, PeerView};
use crate::pending::Pending;
use crate::snapshot_stream::{self, Ack};
use crate::state_machine::StateMachine;
use crate::store::LogStore;
use crate::transport::Transport;
use crate::wire::{ClusterId, ForwardError, ForwardedRequest, PeerMessage};

/// What the [`crate::Node`] handle asks of its driver.
pub(crate) enum Request<S: StateMachine> {
    /// A serialized command, or a membership change or transfer, from this node's clients.
    Write {
        body: ForwardedRequest,
        reply: oneshot::Sender<Result<Bytes>>,
    },
    Read {
        linearizable: bool,
        query: ReadQuery<S>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    Log {
        from: Option<Index>,
        limit: usize,
        reply: oneshot::Sender<Result<LogPage>>,
    },
    /// Stop; a leader first hands over to a successor if `hand_over`.
    Shutdown {
        reply: oneshot::Sender<()>,
        hand_over: bool,
    },
    /// What the node has been doing since a reader's last look ([`crate::activity`]).
    Activity {
        seen: Seen,
        reply: oneshot::Sender<NodeActivity>,
    },
    /// Pause or resume the node ([`crate::Node::set_paused`]).
    Pause {
        paused: bool,
        reply: oneshot::Sender<bool>,
    },
}

/// How many entries of its log's tail a node shows in [`NodeActivity`].
const ACTIVITY_LOG_TAIL: u64 = 24;

/// The most bytes of entries one [`crate::Node::log`] page reads (at least one entry). The
/// page is read on the driver, from the tail cache or the WAL: as much as one
/// `AppendEntries` to a lagging follower reads there (`max_append_bytes`, 1 MiB), so a
/// `show_log` costs the driver no more than replication already may.
const LOG_PAGE_BYTES: u64 = 1 << 20;

/// Why a node stopped: `None` when it was shut down, else the failure.
pub(crate) type StopCause = Option<Arc<Error>>;

/// What woke the driver.
enum Input<S: StateMachine> {
    Tick,
    Request(Option<Request<S>>),
    Peer(NodeId, PeerMessage),
    Event(Option<Event>),
}

/// How the driver runs (from [`crate::NodeOptions`]).
pub(crate) struct DriverOptions {
    /// The wall-clock length of one core tick.
    pub tick: Duration,
    /// How long a caller waits for a request; after that its bookkeeping is dropped.
    pub request_timeout: Duration,
    pub snapshot_after_entries: u64,
    /// How long a leader that shuts down waits for its successor to take over.
    pub shutdown_wait_ticks: u32,
    /// Reads that may wait for the apply thread at once.
    pub max_queued_reads: usize,
    /// Committed bytes the apply thread may be behind before the driver pauses the core.
    pub max_apply_backlog_bytes: u64,
    /// The largest snapshot accepted from a leader.
    pub max_snapshot_bytes: u64,
    /// Whether this node may vote yet, for a new data directory ([`crate::bootstrap`]).
    pub bootstrap: Bootstrap,
}

/// The most writes a leader holds back while its batch in flight commits (see
/// `Driver::held`); past it, they go into the log at once, as if nothing were in flight.
const MAX_HELD_WRITES: usize = 4096;
/// How often a node tells its peers where the members live ([`PeerMessage::Addresses`]).
const GOSSIP_EVERY_TICKS: u64 = 100;
/// The most members one [`PeerMessage::Addresses`] is read for.
const MAX_GOSSIPED_MEMBERS: usize = 1024;

pub(crate) struct Driver<S: StateMachine, L: LogStore> {
    raft: Raft<L>,
    transport: Arc<dyn Transport>,
    options: DriverOptions,
    /// Requests taken on and not yet answered (their lifecycle: `pending.rs`).
    pending: Pending<S>,
    /// Writes a leader took while its last batch was not yet committed, in arrival order.
    /// They go into the log together once it commits ([`Driver::release_held`]): the disk
    /// paces the batches, so under load a batch, and its fsync on every node, holds many
    /// writes instead of the few that arrived during one fsync. A write that finds nothing
    /// in flight goes into the log at once, so a lone client waits no longer.
    held: Vec<(ForwardedRequest, Responder)>,
    /// The state machine's [`StateMachine::forwarded_hook`], run on the leader for each
    /// command a follower forwarded.
    forwarded_hook: Option<crate::ForwardedHook<S::Command>>,
    /// Set once a shutdown is asked for.
    shutdown: Option<Shutdown>,
    /// Work for the apply thread, in order (never waited on: [`Progress`] bounds it); and
    /// what it reports back.
    tasks: std::sync::mpsc::Sender<Task<S>>,
    events: Option<mpsc::UnboundedReceiver<Event>>,
    apply_thread: Option<std::thread::JoinHandle<()>>,
    /// The index the apply thread has applied, and what it has yet to do.
    progress: Arc<Progress>,
    outgoing: snapshot_stream::Sender,
    incoming: snapshot_stream::Receiver,
    leader: watch::Sender<LeaderInfo>,
    /// Told once the driver stopped, and why ([`crate::Node::stopped`]).
    stop: watch::Sender<Option<StopCause>>,
    /// The membership the transport was last told of ([`Driver::sync_members`]).
    members_told: Option<skiff_raft::Membership>,
    /// Ticks since the driver started.
    ticks: u64,
    /// `skiff_raft_readies_total`: the `Ready`s handled (made once: it counts on the hot path).
    readies: metrics::Counter,
    /// What the node has been doing, for people watching ([`crate::activity`]).
    activity: Activity,
    /// Paused: the core is fed no ticks and no messages, and sends none; clients are told.
    paused: bool,
    /// Readers of [`Request::Activity`], answered once this turn's `Ready`s are handled: the
    /// store then holds every entry the status's `last_log_id` counts, so the log's tail
    /// they get ends there (entries proposed in the same turn are written by then).
    activity_readers: Vec<(Seen, oneshot::Sender<NodeActivity>)>,
}

/// A shutdown under way: a leader first waits for its successor to take over.
struct Shutdown {
    /// Where the caller of [`crate::Node::shutdown`] waits.
    reply: oneshot::Sender<()>,
    /// Ticks left to wait for the successor; the driver stops at 0, or once not leader.
    ticks_left: u32,
}

impl<S: StateMachine, L: LogStore> Driver<S, L> {
    pub fn new(
        raft: Raft<L>,
        mut state_machine: S,
        transport: Arc<dyn Transport>,
        options: DriverOptions,
        leader: watch::Sender<LeaderInfo>,
        stop: watch::Sender<Option<StopCause>>,
    ) -> Result<Self> {
        let mut raft = raft;
        raft.withhold_votes(options.bootstrap.is_pending());
        let snapshot = raft.storage().open_snapshot()?;
        let (restored, snapshot_bytes) = match snapshot {
            Some((meta, data)) => {
                let mut data = CountingReader::new(std::io::BufReader::with_capacity(1 << 20, data));
                let index = meta.last_log_id.index;
                state_machine.restore(&mut data).map_err(|source| StorageFailure::Restore { index, source })?;
                (meta, data.bytes)
            }
            None => (raft.storage().snapshot_meta(), 0),
        };
        let forwarded_hook = state_machine.forwarded_hook();
        let progress = Arc::new(Progress::new(options.max_apply_backlog_bytes));
        let (events_sender, events) = mpsc::unbounded_channel();
        let policy = SnapshotPolicy::new(options.snapshot_after_entries, restored.last_log_id.index, snapshot_bytes);
        let applier = Applier::new(
            state_machine,
            restored,
            policy,
            Arc::clone(&progress),
            Arc::clone(&transport),
            raft.storage().snapshot_target(),
            events_sender,
        )
        .recording_as(raft.id());
        let (tasks, task_receiver) = std::sync::mpsc::channel();
        let apply_thread = std::thread::Builder::new()
            .name(format!("skiff-{}-apply", raft.id()))
            .spawn(move || applier.run(task_receiver))?;
        let incoming = snapshot_stream::Receiver::new(options.max_snapshot_bytes);
        let readies = metrics::counter!("skiff_raft_readies_total", "node" => raft.id().to_string());
        let mut activity = Activity::new(raft.id());
        let last = raft.last_log_id()?;
        activity.note(format!("{} started in term {}, its log up to entry {}", raft.id(), raft.term(), last.index));
        Ok(Driver {
            raft,
            transport,
            options,
            pending: Pending::default(),
            held: Vec::new(),
            forwarded_hook,
            shutdown: None,
            tasks,
            events: Some(events),
            apply_thread: Some(apply_thread),
            progress,
            outgoing: snapshot_stream::Sender::default(),
            incoming,
            leader,
            stop,
            members_told: None,
            ticks: 0,
            readies,
            activity,
            paused: false,
            activity_readers: Vec::new(),
        })
    }

    /// Runs until shutdown or a storage failure.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request<S>>,
        mut inbox: mpsc::Receiver<(NodeId, PeerMessage)>,
    ) {
        let mut events = self.events.take().expect("run once");
        // A restarted node finds its peers in its own state, not only in its file.
        self.sync_members();
        let mut next_tick = Instant::now() + self.options.tick;
        let result: Result<()> = async {
            loop {
                let input = tokio::select! {
                    _ = tokio::time::sleep_until(next_tick.into()) => Input::Tick,
                    request = requests.recv() => Input::Request(request),
                    Some((from, message)) = inbox.recv() => Input::Peer(from, message),
                    event = events.recv() => Input::Event(event),
                };
                // Ticks come from the wall clock, and every tick due is fed to the core
                // before any input: after a stall (a slow fsync, a paused process) the core
                // never judges a lease or a timeout on a clock that stopped.
                self.catch_up_ticks(&mut next_tick)?;
                match input {
                    Input::Tick if self.paused => {}
                    Input::Tick => self.bootstrap_tick()?,
                    Input::Request(None) => return Ok(()),
                    Input::Request(Some(request)) => self.handle_request(request)?,
                    Input::Peer(from, message) => self.handle_peer(from, message)?,
                    Input::Event(Some(event)) => self.handle_event(event)?,
                    Input::Event(None) => return Err(Error::ApplyThreadStopped),
                }
                // Take everything already waiting, so it shares this Ready (group commit).
                while let Ok((from, message)) = inbox.try_recv() {
                    self.handle_peer(from, message)?;
                }
                while let Ok(request) = requests.try_recv() {
                    self.handle_request(request)?;
                }
                if self.paused {
                    self.answer_activity();
                    continue;
                }
                // Hand out committed entries only while the apply thread keeps up (it says
                // when it has caught up again: `Event::Drained`).
                self.raft.pause_applying(self.progress.must_pause());
                loop {
                    self.release_held()?;
                    if !self.raft.has_ready() {
                        break;
                    }
                    while self.raft.has_ready() {
                        self.handle_ready().await?;
                        self.raft.pause_applying(self.progress.must_pause());
                    }
                }
                self.activity.observe(&self.raft);
                self.answer_activity();
                self.publish_leader();
                if self.shutdown_done() {
                    return Ok(());
                }
            }
        }
        .await;
        self.stop(result);
    }

    /// Answers everything pending, lets the apply thread finish what it was given, and
    /// tells the caller of a shutdown that the node stopped.
    fn stop(mut self, result: Result<()>) {
        let cause = match result {
            Ok(()) => None,
            Err(error) => {
                tracing::error!(node = %self.raft.id(), %error, "node stopped");
                Some(Arc::new(error))
            }
        };
        // Held writes never reached the log: certainly not applied.
        for (_, responder) in std::mem::take(&mut self.held) {
            let error = match responder {
                Responder::Local(_) => Error::Stopped { cause: cause.clone() },
                Responder::Remote { .. } => Error::LeadershipLost,
            };
            responder.respond(self.transport.as_ref(), Err(error));
        }
        self.pending.stop(self.transport.as_ref(), cause.clone());
        self.stop.send_replace(Some(cause));
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.tasks, closed));
        if let Some(thread) = self.apply_thread.take() {
            let _ = thread.join();
        }
        if let Some(Shutdown { reply, .. }) = self.shutdown.take() {
            let _ = reply.send(());
        }
    }

    /// Feeds the core every tick that is due by the wall clock, and answers `Timeout` to
    /// requests whose caller gave up.
    fn catch_up_ticks(&mut self, next_tick: &mut Instant) -> Result<()> {
        let now = Instant::now();
        self.pending.expire(now, self.options.request_timeout);
        while *next_tick <= now {
            *next_tick += self.options.tick;
            if self.paused {
                continue; // a paused node's clock stands still, as a stopped process's would
            }
            self.activity.tick();
            self.raft.tick()?;
            self.ticks += 1;
            if self.ticks.is_multiple_of(GOSSIP_EVERY_TICKS) {
                self.gossip_addresses();
            }
            if let Some(shutdown) = &mut self.shutdown {
                shutdown.ticks_left = shutdown.ticks_left.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Whether a shutdown was asked for and may finish: its successor took over (or this
    /// node was not leader), or the wait ran out.
    fn shutdown_done(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|shutdown| shutdown.ticks_left == 0 || self.raft.role() != RoleName::Leader)
    }

    /// A leader that shuts down first hands leadership to its most up-to-date voter
    /// (thesis §3.10), and waits up to an election timeout for it to take over.
    fn begin_shutdown(&mut self) -> Result<u32> {
        match self.raft.successor() {
            Some(target) => {
                self.raft.transfer_leader(target)?;
                Ok(self.options.shutdown_wait_ticks)
            }
            None => Ok(0),
        }
    }

    fn handle_request(&mut self, request: Request<S>) -> Result<()> {
        match request {
            Request::Write { reply, .. } if self.paused => {
                let _ = reply.send(Err(Error::Paused));
                Ok(())
            }
            Request::Read { query, .. } if self.paused => {
                query(Err(Error::Paused));
                Ok(())
            }
            Request::Write { body, reply } => self.write(body, Responder::Local(reply)),
            Request::Read { linearizable, query } => {
                // A read counts from here until it is answered, whichever way; past the
                // limit it is refused now rather than queued on the apply thread.
                match self.progress.admit_read(self.options.max_queued_reads) {
                    Ok(ticket) => self.read(
                        linearizable,
                        Box::new(move |state| {
                            let _counted = ticket;
                            query(state);
                        }),
                    ),
                    Err(overloaded) => query(Err(overloaded)),
                }
                Ok(())
            }
            Request::Status { reply } => {
                let _ = reply.send(self.status());
                Ok(())
            }
            Request::Log { from, limit, reply } => {
                let _ = reply.send(self.log_page(from, limit));
                Ok(())
            }
            Request::Activity { seen, reply } => {
                self.activity_readers.push((seen, reply));
                Ok(())
            }
            Request::Pause { paused, reply } => {
                self.set_paused(paused);
                let _ = reply.send(self.paused);
                Ok(())
            }
            Request::Shutdown { reply, hand_over } => {
                self.set_paused(false);
                let ticks_left = if hand_over { self.begin_shutdown()? } else { 0 };
                self.shutdown = Some(Shutdown { reply, ticks_left });
                Ok(())
            }
        }
    }

    /// A stale read runs when the apply thread comes to it; a linearizable one once the
    /// core has confirmed its read index (thesis §6.4) and that index is applied.
    fn read(&mut self, linearizable: bool, query: ReadQuery<S>) {
        if !linearizable {
            return self.send_to_apply(Task::ReadNow { query });
        }
        let id = self.pending.next_read_id();
        match self.raft.read_index(id) {
            Ok(()) => self.pending.add_read(id, self.deadline(), query),
            Err(skiff_raft::Error::NotLeader { leader: None }) => query(Err(Error::NoLeader)),
            Err(error) => query(Err(error.into())),
        }
    }

    /// When a caller stops waiting for a request taken now.
    fn deadline(&self) -> Instant {
        Instant::now() + self.options.request_timeout
    }

    /// A write from a local client or forwarded by a follower: held while the leader's last
    /// batch is in flight (see `held`), else proposed or forwarded now.
    fn write(&mut self, body: ForwardedRequest, responder: Responder) -> Result<()> {
        if self.must_hold()? {
            self.held.push((body, responder));
            return Ok(());
        }
        self.propose_or_forward(body, responder)
    }

    /// Whether a write taken now waits: behind writes already waiting (arrival order), and
    /// while the leader's batch is in flight.
    fn must_hold(&self) -> Result<bool> {
        Ok(!self.held.is_empty() || self.batch_in_flight()?)
    }

    /// Whether this node leads and its log holds entries it has not seen committed, with
    /// room to hold more writes.
    fn batch_in_flight(&self) -> Result<bool> {
        let leading = self.raft.role() == RoleName::Leader;
        Ok(leading && self.held.len() < MAX_HELD_WRITES && self.raft.last_log_id()?.index > self.raft.commit_index())
    }

    /// Proposes the held writes, all in one batch, once nothing is in flight (or this node
    /// stopped leading, or too many wait: then they go on as they would have at once).
    fn release_held(&mut self) -> Result<()> {
        if self.held.is_empty() || self.batch_in_flight()? {
            return Ok(());
        }
        for (body, responder) in std::mem::take(&mut self.held) {
            self.propose_or_forward(body, responder)?;
        }
        Ok(())
    }

    /// Proposes a write as leader, or forwards it to the leader.
    fn propose_or_forward(&mut self, body: ForwardedRequest, responder: Responder) -> Result<()> {
        let outcome = match &body {
            ForwardedRequest::Propose(command) => {
                let command = match &responder {
                    Responder::Remote { .. } => self.on_forwarded(command),
                    Responder::Local(_) => command.clone(),
                };
                self.raft.propose(command).map(|p| Some(p.log_id))
            }
            ForwardedRequest::Membership(change) => {
                self.raft.propose_membership(change.clone()).map(|p| Some(p.log_id))
            }
            ForwardedRequest::TransferLeader(target) => {
                // Without a target, the leader's core picks its successor. Elsewhere there is
                // none: the core answers NotLeader and the request goes to the leader as is.
                // A leader with no other voter "transfers" to itself, which does nothing.
                let target = target.or_else(|| self.raft.successor()).unwrap_or(self.raft.id());
                self.raft.transfer_leader(target).map(|()| None)
            }
        };
        match outcome {
            Ok(Some(log_id)) => self.pending.add_write(log_id, responder),
            Ok(None) => responder.respond(self.transport.as_ref(), Ok(Bytes::new())),
            Err(skiff_raft::Error::NotLeader { leader: Some(leader) }) => match responder {
                Responder::Local(reply) => {
                    let request = self.pending.add_forwarded(self.deadline(), self.raft.term(), leader, reply);
                    self.transport.send(leader, PeerMessage::Forward { request, body });
                }
                remote => remote.respond(self.transport.as_ref(), Err(Error::LeadershipLost)),
            },
            Err(skiff_raft::Error::NotLeader { leader: None }) => {
                responder.respond(self.transport.as_ref(), Err(Error::NoLeader));
            }
            // Certainly not appended; the transfer ends within an election timeout.
            Err(skiff_raft::Error::TransferInProgress { .. }) => {
                responder.respond(self.transport.as_ref(), Err(Error::LeadershipLost));
            }
            Err(skiff_raft::Error::Storage(error)) => return Err(error.into()),
            Err(error) => responder.respond(self.transport.as_ref(), Err(error.into())),
        }
        Ok(())
    }

    /// A command a follower forwarded, as the leader proposes it: through the state
    /// machine's [`StateMachine::forwarded_hook`] ([`crate::run_forwarded_hook`]), if it has
    /// one and this node leads (else the core refuses it, as it came).
    fn on_forwarded(&self, command: &Bytes) -> Bytes {
        match &self.forwarded_hook {
            Some(hook) if self.raft.role() == RoleName::Leader => crate::run_forwarded_hook(hook, command),
            _ => command.clone(),
        }
    }

    fn handle_peer(&mut self, from: NodeId, message: PeerMessage) -> Result<()> {
        if self.paused {
            // Lost, as a stopped process's network buffers would be (TCP would deliver
            // them late; Raft tolerates both).
            self.count_dropped(from, "paused");
            return Ok(());
        }
        match message {
            PeerMessage::Raft(envelope) => {
                if envelope.from != from {
                    tracing::warn!(%from, claimed = %envelope.from, "dropping a message whose sender does not match its connection");
                    self.count_dropped(from, "wrong_sender");
                    return Ok(());
                }
                if let Message::InstallSnapshot { meta } = &envelope.message
                    && self.incoming.saved.as_ref() != Some(meta)
                {
                    return Ok(()); // the data has not arrived: wait for the stream
                }
                self.raft.step(envelope)?;
            }
            PeerMessage::Forward { request, body } => self.write(body, Responder::Remote { peer: from, request })?,
            PeerMessage::ForwardResult { request, result } => {
                let result = result.map_err(|error| match error {
                    ForwardError::Retry => Error::LeadershipLost,
                    ForwardError::OutcomeUnknown => Error::OutcomeUnknown,
                    ForwardError::Refused { kind, message } => Error::Remote { leader: from, kind, message },
                });
                self.pending.answer_forwarded(request, result);
            }
            PeerMessage::SnapshotChunk { meta, .. }
                if self.raft.leader() != Some(from) || meta.last_log_id.index == Index(0) =>
            {
                tracing::warn!(%from, snapshot = %meta.last_log_id, "dropping a snapshot chunk not from the current leader");
                self.count_dropped(from, "not_from_leader");
            }
            PeerMessage::SnapshotChunk { meta, offset, data, done, .. } => {
                let ack = self.incoming.chunk(self.raft.storage_mut(), meta, offset, data, done)?;
                self.transport.send(from, ack);
            }
            PeerMessage::SnapshotAck { snapshot_index, offset, ok } => {
                match self.outgoing.acked(from, snapshot_index, offset, ok)? {
                    Ack::Nothing => {}
                    Ack::Send(message) => self.transport.send(from, message),
                    Ack::Failed => self.raft.report_snapshot(from, false),
                }
            }
            PeerMessage::Addresses { index, members } => {
                // Remote input: from a newer membership than ours, only ids this node does
                // not know, with sane addresses.
                let ours = self.raft.membership_log_id().map(|id| id.index).unwrap_or(Index(0));
                let membership = self.raft.membership();
                let members = if index > ours { members } else { Vec::new() };
                for (id, address) in members.into_iter().take(MAX_GOSSIPED_MEMBERS) {
                    let known = membership.contains(id) || id == self.raft.id();
                    if !known
                        && address.len() <= skiff_raft::Membership::MAX_ADDRESS_BYTES
                        && crate::address::check_host_port(&address).is_ok()
                    {
                        self.transport.learn_address(id, address);
                    }
                }
            }
            PeerMessage::BootstrapProbe => {
                let last = self.raft.last_log_id()?;
                let answer = self.options.bootstrap.answer(last.index > Index(0));
                self.transport.send(from, answer);
            }
            PeerMessage::BootstrapAnswer { pending, has_data, witnesses } => {
                let answer = bootstrap::Answer { pending, has_data, witnesses };
                if self.options.bootstrap.on_answer(from, answer)? {
                    self.bootstrap_confirmed()?;
                }
            }
        }
        Ok(())
    }

    /// While this node's new data directory is unconfirmed: probe the initial members.
    fn bootstrap_tick(&mut self) -> Result<()> {
        let (probes, confirmed) = self.options.bootstrap.tick()?;
        for (peer, probe) in probes {
            self.transport.send(peer, probe);
        }
        if confirmed {
            self.bootstrap_confirmed()?;
        }
        Ok(())
    }

    /// The bootstrap check confirmed this node: it votes from now on, makes the cluster's
    /// id if it is to, and tells the other initial members at once.
    fn bootstrap_confirmed(&mut self) -> Result<()> {
        self.raft.withhold_votes(false);
        // First the id (it reconnects to every peer, dropping what is queued).
        if self.options.bootstrap.makes_cluster_id {
            self.transport.set_cluster_id(ClusterId::random()?)?;
        }
        let has_data = self.raft.last_log_id()?.index > Index(0);
        for (peer, announcement) in self.options.bootstrap.announcements(has_data) {
            self.transport.send(peer, announcement);
        }
        Ok(())
    }

    /// A node rejoining with a new data directory may vote once it is a member again and
    /// holds the current leader's entries ([`crate::bootstrap`]).
    fn bootstrap_check_log(&mut self) -> Result<()> {
        if !self.options.bootstrap.is_rejoining() {
            return Ok(());
        }
        // A snapshot being installed may hide the membership's entry for a moment: not yet.
        let (Ok(membership_id), Ok(last)) = (self.raft.membership_log_id(), self.raft.last_log_id()) else {
            return Ok(());
        };
        let membership = self.raft.membership();
        let (index, term) = (membership_id.index, membership_id.term);
        if self.options.bootstrap.on_log(membership, index, term, last.term, self.raft.term())? {
            self.raft.withhold_votes(false);
        }
        Ok(())
    }

    /// Tells the transport who the other members are and where they live, when the
    /// membership changed. A membership takes effect when its entry is appended (thesis
    /// §4.1), so a leader that just appended one sends the new member its first entries in
    /// the same `Ready`: this runs before the `Ready`'s messages go out. A node that knows
    /// no membership yet (one waiting to be added) keeps the peers it started with.
    fn sync_members(&mut self) {
        let membership = self.raft.membership();
        if membership.is_empty() || self.members_told.as_ref() == Some(membership) {
            return;
        }
        let members = membership
            .members()
            .filter(|id| *id != self.raft.id())
            .map(|id| (id, MemberAddress::of(membership, id).map(|address| address.raft)))
            .collect();
        self.transport.set_members(&members);
        self.members_told = Some(membership.clone());
    }

    /// Tells every other member where the membership says each member lives
    /// ([`PeerMessage::Addresses`]): a node whose log lacks a newer member learns where to
    /// dial it, and so can reach a leader it has not heard of yet.
    fn gossip_addresses(&self) {
        let membership = self.raft.membership();
        let addresses: Vec<(NodeId, String)> =
            membership.members().filter_map(|id| Some((id, MemberAddress::of(membership, id)?.raft))).collect();
        let Ok(appended) = self.raft.membership_log_id() else { return };
        if addresses.is_empty() {
            return;
        }
        for peer in membership.members().filter(|id| *id != self.raft.id()) {
            let message = PeerMessage::Addresses { index: appended.index, members: addresses.clone() };
            self.transport.send(peer, message);
        }
    }

    /// Counts a message from `peer` dropped on arrival, in `skiff_dropped_messages_total`
    /// (rare: the handle is made when it happens).
    fn count_dropped(&self, peer: NodeId, reason: &'static str) {
        let labels = [("node", self.raft.id().to_string()), ("peer", peer.to_string()), ("reason", reason.to_string())];
        metrics::counter!("skiff_dropped_messages_total", &labels).increment(1);
    }

    /// Executes one `Ready` in the order its contract states.
    async fn handle_ready(&mut self) -> Result<()> {
        self.sync_members();
        self.bootstrap_check_log()?;
        let mut ready = self.raft.ready()?;
        self.readies.increment(1);
        // Step 0: a leader's messages go out first, so followers write while we fsync; and
        // the committed entries this node synced in an earlier Ready go to the apply thread
        // now, so their clients do not wait for this Ready's fsync of new entries.
        let sent = !ready.leader_messages.is_empty();
        for envelope in std::mem::take(&mut ready.leader_messages) {
            self.send(envelope)?;
        }
        let durable: Vec<_> = ready.committed.drain(..ready.durable_committed()).collect();
        self.hand_to_apply(durable);
        if sent && ready.must_sync {
            // The peer connections' writers run on this thread: let them put the messages
            // on the wire before the fsync holds the thread.
            tokio::task::yield_now().await;
        }
        self.persist(&ready)?;
        for envelope in std::mem::take(&mut ready.messages) {
            self.send(envelope)?;
        }
        if let Some(meta) = &ready.snapshot {
            self.restore_snapshot(meta.last_log_id.index)?;
        }
        // Step 3: the rest.
        self.hand_to_apply(std::mem::take(&mut ready.committed));
        for read in std::mem::take(&mut ready.reads) {
            match (self.pending.take_read(read.id), read.result) {
                (Some(query), Ok(index)) => self.send_to_apply(Task::ReadAt { index, query }),
                (Some(query), Err(_)) => query(Err(Error::LeadershipLost)),
                (None, _) => {}
            }
        }
        self.raft.advance()?;
        Ok(())
    }

    /// Hands committed entries to the apply thread in order, with the proposers to answer.
    fn hand_to_apply(&mut self, entries: Vec<skiff_raft::Entry>) {
        let Some(last) = entries.last() else { return };
        let writes = self.pending.take_writes_through(last.index());
        let bytes = entries.iter().map(|entry| entry.size_bytes()).sum();
        self.progress.handed(bytes);
        self.send_to_apply(Task::Apply { entries, bytes, writes });
    }

    /// Gives the apply thread its next task. If it has stopped, the failure it reported
    /// stops the driver at its next turn; the task's waiters see the node stopped.
    fn send_to_apply(&self, task: Task<S>) {
        let _ = self.tasks.send(task);
    }

    /// The apply thread snapshotted the state after `index`: store it, compact the log.
    fn handle_event(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Failed(error) => Err(error),
            Event::Drained => Ok(()), // the run loop un-pauses the core
            Event::SnapshotTaken { meta: written } => {
                let meta = match self.raft.compact(written.last_log_id.index) {
                    Ok(meta) => meta,
                    // A snapshot from the leader overtook it: nothing to do (the file is
                    // pruned with the next snapshot).
                    Err(skiff_raft::Error::InvalidSnapshot { .. }) => return Ok(()),
                    Err(error) => return Err(error.into()),
                };
                // The apply thread followed the same entries as the core: anything else is
                // a bug, and the snapshot's header would be wrong.
                if meta != written {
                    return Err(StorageFailure::Inconsistent(format!(
                        "the apply thread wrote snapshot {} with {:?}, the log says {} with {:?}",
                        written.last_log_id, written.membership, meta.last_log_id, meta.membership
                    ))
                    .into());
                }
                let store = self.raft.storage_mut();
                store.compact(meta)?;
                store.sync()?;
                Ok(())
            }
        }
    }

    /// Step 1: write the snapshot, entries and hard state, and make them durable with one
    /// sync when the core says it must (a commit index alone is not waited for).
    fn persist(&mut self, ready: &Ready) -> Result<()> {
        if ready.snapshot.is_none() && ready.entries.is_empty() && ready.hard_state.is_none() {
            return Ok(());
        }
        let store = self.raft.storage_mut();
        if let Some(meta) = &ready.snapshot {
            store.install_snapshot(meta.clone())?;
        }
        store.append(&ready.entries)?;
        if let Some(hard_state) = ready.hard_state {
            store.set_hard_state(hard_state)?;
        }
        if ready.must_sync {
            store.sync()?;
        }
        Ok(())
    }

    /// Step 2: send, streaming snapshot data ahead of an `InstallSnapshot`.
    fn send(&mut self, envelope: skiff_raft::Envelope) -> Result<()> {
        self.activity.sent(&envelope);
        let to = envelope.to;
        if let Message::InstallSnapshot { meta } = &envelope.message {
            let meta = meta.clone();
            if let Some(message) = self.outgoing.start(self.raft.storage(), to, envelope, meta)? {
                self.transport.send(to, message);
            }
            return Ok(());
        }
        self.transport.send(to, PeerMessage::Raft(envelope));
        Ok(())
    }

    fn restore_snapshot(&mut self, index: Index) -> Result<()> {
        let snapshot = self.raft.storage().open_snapshot()?;
        let Some((meta, data)) = snapshot else {
            let missing = format!("snapshot {index} was installed but its data is missing");
            return Err(StorageFailure::Inconsistent(missing).into());
        };
        let data = Box::new(std::io::BufReader::with_capacity(1 << 20, data));
        self.send_to_apply(Task::Restore { meta, data });
        for (_, (_, responder)) in self.pending.take_writes_through(index) {
            responder.respond(self.transport.as_ref(), Err(Error::OutcomeUnknown));
        }
        Ok(())
    }

    fn publish_leader(&mut self) {
        let info = LeaderInfo { term: self.raft.term(), leader: self.raft.leader() };
        if *self.leader.borrow() == info {
            return;
        }
        if self.raft.role() != RoleName::Leader {
            self.outgoing.clear();
        }
        self.pending.leader_changed(info.term, info.leader);
        self.leader.send_replace(info);
    }

    fn status(&self) -> NodeStatus {
        let status = self.raft.status();
        let health = self.transport.peer_health();
        let peers = status
            .membership
            .members()
            .filter(|&id| id != status.id)
            .map(|id| {
                let progress = status.progress.iter().find(|peer| peer.id == id);
                PeerView {
                    id,
                    voter: status.membership.is_voter(id),
                    match_index: progress.map(|p| p.match_index),
                    next_index: progress.map(|p| p.next_index),
                    health: health.get(&id).cloned().unwrap_or_default(),
                }
            })
            .collect();
        NodeStatus {
            election_timer: status.election_timer,
            first_index: status.first_index,
            id: status.id,
            role: status.role,
            term: status.term,
            vote: status.vote,
            leader: status.leader,
            commit: status.commit,
            applied: self.progress.applied(),
            last_log_id: status.last_log_id,
            snapshot_index: self.raft.storage().snapshot_meta().last_log_id.index,
            membership: status.membership,
            peers,
        }
    }

    /// Pauses or resumes the node, and says so in its events.
    fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        let id = self.raft.id();
        let text = if paused {
            format!("{id} was paused: it neither ticks nor hears its peers")
        } else {
            format!("{id} resumed")
        };
        self.activity.note(text);
    }

    /// Answers the readers of [`Request::Activity`] of this turn.
    fn answer_activity(&mut self) {
        for (seen, reply) in std::mem::take(&mut self.activity_readers) {
            let _ = reply.send(self.activity(seen));
        }
    }

    /// The node's status, the terms of its log's tail, and its activity since `seen`.
    /// A read that fails shortens the tail rather than stopping the node for a watcher's sake
    /// (the core meets the same storage failure on its own path, and stops the node there).
    fn activity(&mut self, seen: Seen) -> NodeActivity {
        let store = self.raft.storage();
        let (first, last) = (store.first_index(), store.last_index());
        let low = Index(last.0.saturating_sub(ACTIVITY_LOG_TAIL - 1)).max(first).max(Index(1));
        let mut log_tail = Vec::new();
        for index in low.0..=last.0 {
            match store.term(Index(index)) {
                Ok(term) => log_tail.push(skiff_raft::LogId::new(term, Index(index))),
                Err(error) => {
                    tracing::warn!(node = %self.raft.id(), %index, %error, "the activity's log tail stops at an unreadable entry");
                    break;
                }
            }
        }
        NodeActivity {
            status: self.status(),
            uptime: self.activity.uptime(),
            tick: self.options.tick,
            paused: self.paused,
            log_tail,
            page: self.activity.page(seen),
        }
    }

    /// Up to `limit` entries (and about [`LOG_PAGE_BYTES`]) of the durable log from `from`
    /// (default: the last `limit`).
    /// Called between `Ready`s, so the store holds the whole log.
    fn log_page(&self, from: Option<Index>, limit: usize) -> Result<LogPage> {
        let store = self.raft.storage();
        let (first_index, last_index) = (store.first_index(), store.last_index());
        let limit = limit.max(1) as u64;
        let low = from.unwrap_or(Index(last_index.0.saturating_sub(limit - 1))).max(first_index);
        let high = Index(low.0.saturating_add(limit)).min(last_index.next());
        let entries = store.entries(low, high, LOG_PAGE_BYTES)?;
        Ok(LogPage {
            first_index,
            last_index,
            commit: self.raft.commit_index(),
            applied: self.progress.applied(),
            entries,
        })
    }
}
