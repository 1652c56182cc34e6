//! The driver: one thread owns the consensus core, the store and the state machine. It
//! feeds the core ticks, peer messages and client requests, and executes each `Ready`
//! exactly as its contract says: persist and sync, send, apply, advance.
//!
//! Everything that arrives while one `Ready` is being handled is fed to the core before
//! the next `ready()`, so concurrent proposals share one append, one fsync and one
//! `AppendEntries` per follower (group commit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_raft::{Entry, Index, Message, NodeId, Payload, Raft, ReadId, Ready, RoleName, Term};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::node::{LeaderInfo, NodeStatus, PeerView};
use crate::snapshot_stream::{self, Ack};
use crate::state_machine::StateMachine;
use crate::store::LogStore;
use crate::transport::Transport;
use crate::wire::{ForwardedRequest, PeerMessage};

/// A query run on the state machine once it is fresh enough, or told why it can't be.
pub(crate) type ReadQuery<S> = Box<dyn FnOnce(Result<&S>) + Send>;

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
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Who waits for a write's outcome.
enum Responder {
    Local(oneshot::Sender<Result<Bytes>>),
    Remote { peer: NodeId, request: u64 },
}

pub(crate) struct Settings {
    pub tick: Duration,
    pub snapshot_after_entries: u64,
}

pub(crate) struct Driver<S: StateMachine, L: LogStore> {
    raft: Raft<L>,
    state_machine: S,
    transport: Arc<dyn Transport>,
    settings: Settings,
    /// Writes this node proposed as leader, by index, with the term they were proposed in.
    writes: BTreeMap<Index, (Term, Responder)>,
    /// Requests forwarded to the leader, by request id.
    forwarded: BTreeMap<u64, oneshot::Sender<Result<Bytes>>>,
    next_request: u64,
    /// Reads waiting for the core's read index.
    reads_waiting_index: BTreeMap<ReadId, ReadQuery<S>>,
    /// Reads waiting for the state machine to apply their index.
    reads_waiting_apply: Vec<(Index, ReadQuery<S>)>,
    next_read: u64,
    applied: Index,
    snapshot_index: Index,
    outgoing: snapshot_stream::Sender,
    incoming: snapshot_stream::Receiver,
    leader: watch::Sender<LeaderInfo>,
}

impl<S: StateMachine, L: LogStore> Driver<S, L> {
    pub fn new(
        raft: Raft<L>,
        mut state_machine: S,
        transport: Arc<dyn Transport>,
        settings: Settings,
        leader: watch::Sender<LeaderInfo>,
    ) -> Result<Self> {
        let snapshot = raft.storage().open_snapshot().map_err(|e| Error::Storage(e.to_string()))?;
        let mut snapshot_index = Index(0);
        if let Some((meta, mut data)) = snapshot {
            state_machine.restore(&mut data).map_err(|e| Error::Storage(format!("restoring the snapshot: {e}")))?;
            snapshot_index = meta.last_log_id.index;
        }
        Ok(Driver {
            raft,
            state_machine,
            transport,
            settings,
            writes: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            next_request: 0,
            reads_waiting_index: BTreeMap::new(),
            reads_waiting_apply: Vec::new(),
            next_read: 0,
            applied: snapshot_index,
            snapshot_index,
            outgoing: snapshot_stream::Sender::default(),
            incoming: snapshot_stream::Receiver::default(),
            leader,
        })
    }

    /// Runs until shutdown or a storage failure.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request<S>>,
        mut inbox: mpsc::Receiver<(NodeId, PeerMessage)>,
    ) {
        let mut ticker = tokio::time::interval(self.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut shutdown: Option<(oneshot::Sender<()>, u32)> = None;
        let result: Result<()> = async {
            loop {
                // Biased toward ticks: after a stall (the process was paused, the machine
                // busy), the missed ticks are fed to the core before any request, so it never
                // judges a lease or a read on a clock that stopped.
                tokio::select! {
                    biased;
                    _ = ticker.tick() => {
                        self.raft.tick()?;
                        if let Some((_, ticks_left)) = &mut shutdown {
                            *ticks_left = ticks_left.saturating_sub(1);
                        }
                    }
                    request = requests.recv() => match request {
                        Some(Request::Shutdown { reply }) => {
                            shutdown = Some((reply, self.begin_shutdown()?));
                        }
                        Some(request) => self.handle_request(request)?,
                        None => return Ok(()),
                    },
                    Some((from, message)) = inbox.recv() => self.handle_peer(from, message)?,
                }
                // Take everything already waiting, so it shares this Ready (group commit).
                while let Ok((from, message)) = inbox.try_recv() {
                    self.handle_peer(from, message)?;
                }
                while let Ok(request) = requests.try_recv() {
                    match request {
                        Request::Shutdown { reply } => shutdown = Some((reply, self.begin_shutdown()?)),
                        request => self.handle_request(request)?,
                    }
                }
                while self.raft.has_ready() {
                    self.handle_ready()?;
                }
                self.publish_leader();
                if let Some((_, ticks_left)) = &shutdown
                    && (*ticks_left == 0 || self.raft.role() != RoleName::Leader)
                {
                    return Ok(());
                }
            }
        }
        .await;
        let reason = match &result {
            Ok(()) => "shut down".to_string(),
            Err(error) => {
                tracing::error!(node = %self.raft.id(), %error, "node stopped");
                error.to_string()
            }
        };
        self.fail_everything(&reason);
        if let Some((reply, _)) = shutdown {
            let _ = reply.send(());
        }
    }

    /// A leader that shuts down first hands leadership to its most up-to-date voter
    /// (thesis §3.10), and waits up to an election timeout for it to take over.
    fn begin_shutdown(&mut self) -> Result<u32> {
        let status = self.raft.status();
        if status.role != RoleName::Leader {
            return Ok(0);
        }
        let successor = status
            .progress
            .iter()
            .filter(|peer| status.membership.is_voter(peer.id))
            .max_by_key(|peer| peer.match_index)
            .map(|peer| peer.id);
        match successor {
            Some(target) => {
                self.raft.transfer_leader(target)?;
                Ok(60)
            }
            None => Ok(0),
        }
    }

    fn handle_request(&mut self, request: Request<S>) -> Result<()> {
        match request {
            Request::Write { body, reply } => self.write(body, Responder::Local(reply)),
            Request::Read { linearizable: false, query } => {
                query(Ok(&self.state_machine));
                Ok(())
            }
            Request::Read { linearizable: true, query } => {
                self.next_read += 1;
                let id = ReadId(self.next_read);
                match self.raft.read_index(id) {
                    Ok(()) => {
                        self.reads_waiting_index.insert(id, query);
                    }
                    Err(skiff_raft::Error::NotLeader { leader: None }) => query(Err(Error::NoLeader)),
                    Err(error) => query(Err(error.into())),
                }
                Ok(())
            }
            Request::Status { reply } => {
                let _ = reply.send(self.status());
                Ok(())
            }
            Request::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    /// A write from a local client or forwarded by a follower: propose it as leader, or
    /// forward it to the leader.
    fn write(&mut self, body: ForwardedRequest, responder: Responder) -> Result<()> {
        let outcome = match &body {
            ForwardedRequest::Propose(command) => self.raft.propose(command.clone()).map(|p| Some(p.log_id)),
            ForwardedRequest::Membership(change) => self.raft.propose_membership(*change).map(|p| Some(p.log_id)),
            ForwardedRequest::TransferLeader(target) => self.raft.transfer_leader(*target).map(|()| None),
        };
        match outcome {
            Ok(Some(log_id)) => {
                self.writes.insert(log_id.index, (log_id.term, responder));
            }
            Ok(None) => self.respond(responder, Ok(Bytes::new())),
            Err(skiff_raft::Error::NotLeader { leader: Some(leader) }) => match responder {
                Responder::Local(reply) => {
                    self.next_request += 1;
                    self.forwarded.insert(self.next_request, reply);
                    let message = PeerMessage::Forward { request: self.next_request, body };
                    self.transport.send(leader, message);
                }
                remote => self.respond(remote, Err(Error::LeadershipLost)),
            },
            Err(skiff_raft::Error::NotLeader { leader: None }) => self.respond(responder, Err(Error::NoLeader)),
            Err(skiff_raft::Error::Storage(error)) => return Err(Error::Storage(error.to_string())),
            Err(error) => self.respond(responder, Err(error.into())),
        }
        Ok(())
    }

    fn respond(&self, responder: Responder, result: Result<Bytes>) {
        match responder {
            Responder::Local(reply) => {
                let _ = reply.send(result);
            }
            Responder::Remote { peer, request } => {
                let result = result.map_err(|error| match error {
                    Error::LeadershipLost | Error::NoLeader => RETRY_MARKER.to_string(),
                    error => error.to_string(),
                });
                self.transport.send(peer, PeerMessage::ForwardResult { request, result });
            }
        }
    }

    fn handle_peer(&mut self, from: NodeId, message: PeerMessage) -> Result<()> {
        match message {
            PeerMessage::Raft(envelope) => {
                if envelope.from != from {
                    tracing::warn!(%from, claimed = %envelope.from, "dropping a message whose sender does not match its connection");
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
                if let Some(reply) = self.forwarded.remove(&request) {
                    let result = result.map_err(|message| match message.as_str() {
                        RETRY_MARKER => Error::LeadershipLost,
                        _ => Error::Remote { leader: from, message },
                    });
                    let _ = reply.send(result);
                }
            }
            PeerMessage::SnapshotChunk { meta, offset, data, done } => {
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
        }
        Ok(())
    }

    /// Executes one `Ready` in the order its contract states.
    fn handle_ready(&mut self) -> Result<()> {
        let mut ready = self.raft.ready()?;
        // Step 0: a leader's messages go out first, so followers write while we fsync.
        for envelope in std::mem::take(&mut ready.leader_messages) {
            self.send(envelope)?;
        }
        self.persist(&ready)?;
        for envelope in std::mem::take(&mut ready.messages) {
            self.send(envelope)?;
        }
        if let Some(meta) = &ready.snapshot {
            self.restore_snapshot(meta.last_log_id.index)?;
        }
        for entry in ready.committed {
            self.apply(entry);
        }
        for read in ready.reads {
            match (self.reads_waiting_index.remove(&read.id), read.result) {
                (Some(query), Ok(index)) => self.reads_waiting_apply.push((index, query)),
                (Some(query), Err(_)) => query(Err(Error::LeadershipLost)),
                (None, _) => {}
            }
        }
        self.serve_reads();
        self.raft.advance()?;
        self.maybe_snapshot()
    }

    /// Step 1: make the snapshot, entries and hard state durable, with one sync.
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
        store.sync()?;
        Ok(())
    }

    /// Step 2: send, streaming snapshot data ahead of an `InstallSnapshot`.
    fn send(&mut self, envelope: skiff_raft::Envelope) -> Result<()> {
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
        let Some((meta, mut data)) = snapshot else {
            return Err(Error::Storage(format!("snapshot {index} was installed but its data is missing")));
        };
        self.state_machine
            .restore(&mut data)
            .map_err(|error| Error::Storage(format!("restoring snapshot {}: {error}", meta.last_log_id)))?;
        self.applied = index;
        self.snapshot_index = index;
        let stale: Vec<Index> = self.writes.range(..=index).map(|(index, _)| *index).collect();
        for stale_index in stale {
            let (_, responder) = self.writes.remove(&stale_index).expect("listed");
            self.respond(responder, Err(Error::OutcomeUnknown));
        }
        Ok(())
    }

    /// Step 3: apply one committed entry, and answer whoever proposed it.
    fn apply(&mut self, entry: Entry) {
        assert_eq!(entry.index(), self.applied.next(), "entries are applied in order, once");
        self.applied = entry.index();
        let output = match entry.payload {
            Payload::Command(data) => match postcard::from_bytes::<S::Command>(&data) {
                Ok(command) => {
                    let output = self.state_machine.apply(entry.log_id.index, command);
                    postcard::to_stdvec(&output).map(Bytes::from).map_err(|e| Error::Codec(e.to_string()))
                }
                Err(error) => {
                    tracing::error!(index = %entry.log_id, %error, "a committed command does not decode; skipped on every node");
                    Err(Error::Codec(error.to_string()))
                }
            },
            Payload::Empty | Payload::Membership(_) => Ok(Bytes::new()),
        };
        if let Some((term, responder)) = self.writes.remove(&entry.log_id.index) {
            // Another leader's entry took the index: ours was never committed.
            let result = if term == entry.log_id.term { output } else { Err(Error::LeadershipLost) };
            self.respond(responder, result);
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads_waiting_apply).into_iter().partition(|(index, _)| *index <= applied);
        self.reads_waiting_apply = waiting;
        for (_, query) in ready {
            query(Ok(&self.state_machine));
        }
    }

    /// Snapshots the state machine and compacts the log every `snapshot_after_entries`.
    fn maybe_snapshot(&mut self) -> Result<()> {
        if self.applied <= self.snapshot_index
            || self.applied.0 < self.snapshot_index.0 + self.settings.snapshot_after_entries
        {
            return Ok(());
        }
        let meta = self.raft.compact(self.applied)?;
        let mut data = Vec::new();
        self.state_machine
            .snapshot(&mut data)
            .map_err(|error| Error::Storage(format!("taking a snapshot at {}: {error}", meta.last_log_id)))?;
        let store = self.raft.storage_mut();
        store.save_snapshot(meta.clone(), &mut std::io::Cursor::new(data))?;
        store.compact(meta)?;
        store.sync()?;
        self.snapshot_index = self.applied;
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
        // Requests forwarded to the old leader may or may not have been applied.
        for (_, reply) in std::mem::take(&mut self.forwarded) {
            let _ = reply.send(Err(Error::OutcomeUnknown));
        }
        for (_, query) in std::mem::take(&mut self.reads_waiting_index) {
            query(Err(Error::LeadershipLost));
        }
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
            id: status.id,
            role: status.role,
            term: status.term,
            vote: status.vote,
            leader: status.leader,
            commit: status.commit,
            applied: self.applied,
            last_log_id: status.last_log_id,
            snapshot_index: self.raft.storage().snapshot_meta().last_log_id.index,
            membership: status.membership,
            peers,
        }
    }

    fn fail_everything(&mut self, reason: &str) {
        for (_, (_, responder)) in std::mem::take(&mut self.writes) {
            self.respond(responder, Err(Error::Stopped(reason.to_string())));
        }
        for (_, reply) in std::mem::take(&mut self.forwarded) {
            let _ = reply.send(Err(Error::Stopped(reason.to_string())));
        }
        for (_, query) in std::mem::take(&mut self.reads_waiting_index) {
            query(Err(Error::Stopped(reason.to_string())));
        }
        for (_, query) in std::mem::take(&mut self.reads_waiting_apply) {
            query(Err(Error::Stopped(reason.to_string())));
        }
    }
}

/// The leader's answer to a forwarded request that the follower may safely retry.
const RETRY_MARKER: &str = "retry: no leader or leadership changed";

impl From<skiff_raft::StorageError> for Error {
    fn from(error: skiff_raft::StorageError) -> Error {
        Error::Storage(error.to_string())
    }
}
