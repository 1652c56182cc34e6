//! The apply thread: it owns the state machine, applies committed entries in order, answers
//! their proposers, serves reads once their index is applied, and takes snapshots. It runs
//! beside the driver, so a slow `apply` or a large snapshot never delays ticks, heartbeats
//! or replication; the order of entries is the order the driver hands them over.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use skiff_raft::{Entry, Index, NodeId, Payload, Term};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::transport::Transport;
use crate::wire::{ForwardError, PeerMessage};

/// A query run on the state machine once it is fresh enough, or told why it can't be.
pub(crate) type ReadQuery<S> = Box<dyn FnOnce(Result<&S>) + Send>;

/// Who waits for a write's outcome.
pub(crate) enum Responder {
    Local(oneshot::Sender<Result<Bytes>>),
    Remote { peer: NodeId, request: u64 },
}

impl Responder {
    pub fn respond(self, transport: &dyn Transport, result: Result<Bytes>) {
        match self {
            Responder::Local(reply) => {
                let _ = reply.send(result);
            }
            Responder::Remote { peer, request } => {
                let result = result.map_err(|error| match error {
                    Error::LeadershipLost | Error::NoLeader => ForwardError::Retry,
                    Error::OutcomeUnknown => ForwardError::OutcomeUnknown,
                    error => ForwardError::Refused(error.to_string()),
                });
                transport.send(peer, PeerMessage::ForwardResult { request, result });
            }
        }
    }
}

/// What the driver asks of the apply thread, in order.
pub(crate) enum Task<S: StateMachine> {
    /// Apply these committed entries; each write waits under its index, with the term it
    /// was proposed in.
    Apply { entries: Vec<Entry>, writes: BTreeMap<Index, (Term, Responder)> },
    /// Replace the state by the snapshot of everything up to `index`.
    Restore { index: Index, data: Box<dyn Read + Send> },
    /// Run `query` once everything up to `index` is applied.
    ReadAt { index: Index, query: ReadQuery<S> },
    /// Run `query` now.
    ReadNow { query: ReadQuery<S> },
}

/// What the apply thread tells the driver.
pub(crate) enum Event {
    /// A snapshot of the state after applying `index`, to store and compact the log to.
    SnapshotTaken { index: Index, data: Vec<u8> },
    /// The state machine failed (restoring or snapshotting): the node must stop.
    Failed(String),
}

pub(crate) struct Applier<S: StateMachine> {
    pub state_machine: S,
    /// The index applied so far, shared with the driver for status.
    pub applied: Arc<AtomicU64>,
    pub transport: Arc<dyn Transport>,
    pub snapshot_index: Index,
    pub snapshot_after_entries: u64,
    pub events: mpsc::UnboundedSender<Event>,
    waiting_reads: Vec<(Index, ReadQuery<S>)>,
}

impl<S: StateMachine> Applier<S> {
    pub fn new(
        state_machine: S,
        applied: Arc<AtomicU64>,
        transport: Arc<dyn Transport>,
        snapshot_after_entries: u64,
        events: mpsc::UnboundedSender<Event>,
    ) -> Applier<S> {
        let snapshot_index = Index(applied.load(Ordering::Acquire));
        Applier {
            state_machine,
            applied,
            transport,
            snapshot_index,
            snapshot_after_entries,
            events,
            waiting_reads: Vec::new(),
        }
    }

    /// Runs until the driver hangs up; reads still waiting then fail.
    pub fn run(mut self, tasks: std::sync::mpsc::Receiver<Task<S>>) {
        while let Ok(task) = tasks.recv() {
            // A panic in the user's state machine must stop the node, not leave it leading
            // with nothing applied.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(task)));
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|text| text.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!("the state machine panicked: {message}")
                }
            };
            let _ = self.events.send(Event::Failed(error));
            break;
        }
        for (_, query) in std::mem::take(&mut self.waiting_reads) {
            query(Err(Error::Stopped("the node stopped".into())));
        }
    }

    fn handle(&mut self, task: Task<S>) -> Result<(), String> {
        match task {
            Task::Apply { entries, writes } => {
                let mut writes = writes.into_iter().peekable();
                for entry in entries {
                    let log_id = entry.log_id;
                    // The driver keeps at most one write per index.
                    let mut output = Some(self.apply(entry));
                    while let Some((index, (term, _))) = writes.peek() {
                        if *index > log_id.index {
                            break;
                        }
                        let matches = (*index, *term) == (log_id.index, log_id.term);
                        let (_, (_, responder)) = writes.next().expect("peeked");
                        // Another leader's entry took the index: ours was never committed.
                        let result = match output.take() {
                            Some(output) if matches => output,
                            _ => Err(Error::LeadershipLost),
                        };
                        responder.respond(self.transport.as_ref(), result);
                    }
                }
                self.serve_reads();
                self.maybe_snapshot()
            }
            Task::Restore { index, mut data } => {
                self.state_machine
                    .restore(&mut data)
                    .map_err(|error| format!("restoring snapshot {index}: {error}"))?;
                self.snapshot_index = index;
                self.applied.store(index.0, Ordering::Release);
                self.serve_reads();
                Ok(())
            }
            Task::ReadAt { index, query } => {
                self.waiting_reads.push((index, query));
                self.serve_reads();
                Ok(())
            }
            Task::ReadNow { query } => {
                query(Ok(&self.state_machine));
                Ok(())
            }
        }
    }

    fn apply(&mut self, entry: Entry) -> Result<Bytes> {
        let index = entry.index();
        let applied = Index(self.applied.load(Ordering::Acquire));
        assert_eq!(index, applied.next(), "entries are applied in order, once");
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
        self.applied.store(index.0, Ordering::Release);
        output
    }

    fn serve_reads(&mut self) {
        let applied = Index(self.applied.load(Ordering::Acquire));
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting_reads).into_iter().partition(|(index, _)| *index <= applied);
        self.waiting_reads = waiting;
        for (_, query) in ready {
            query(Ok(&self.state_machine));
        }
    }

    /// Every `snapshot_after_entries` applied entries, snapshot the state for the driver.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = Index(self.applied.load(Ordering::Acquire));
        if applied <= self.snapshot_index || applied.0 < self.snapshot_index.0 + self.snapshot_after_entries {
            return Ok(());
        }
        let mut data = Vec::new();
        self.state_machine.snapshot(&mut data).map_err(|error| format!("taking a snapshot at {applied}: {error}"))?;
        self.snapshot_index = applied;
        let _ = self.events.send(Event::SnapshotTaken { index: applied, data });
        Ok(())
    }
}
