//! The apply thread: it owns the state machine, applies committed entries in order, answers
//! their proposers, serves reads once their index is applied, and takes snapshots. It runs
//! beside the driver, so a slow `apply` or a large snapshot never delays ticks, heartbeats
//! or replication; the order of entries is the order the driver hands them over.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use skiff_raft::{Entry, Index, LogId, Membership, NodeId, Payload, SnapshotMeta, Term};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result, StorageFailure};
use crate::state_machine::StateMachine;
use crate::store::SnapshotTarget;
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
                    error => ForwardError::Refused { kind: error.kind(), message: error.to_string() },
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
    /// Replace the state by the snapshot `meta` (from the leader), read from `data`.
    Restore { meta: SnapshotMeta, data: Box<dyn Read + Send> },
    /// Run `query` once everything up to `index` is applied.
    ReadAt { index: Index, query: ReadQuery<S> },
    /// Run `query` now.
    ReadNow { query: ReadQuery<S> },
}

/// What the apply thread tells the driver.
pub(crate) enum Event {
    /// A snapshot of the state after applying `meta.last_log_id` is written and durable:
    /// compact the log to it.
    SnapshotTaken { meta: SnapshotMeta },
    /// The state machine failed (restoring, snapshotting, or a panic): the node must stop.
    Failed(Error),
}

pub(crate) struct Applier<S: StateMachine> {
    pub state_machine: S,
    /// The index applied so far, shared with the driver for status.
    pub applied: Arc<AtomicU64>,
    pub transport: Arc<dyn Transport>,
    pub events: mpsc::UnboundedSender<Event>,
    waiting_reads: Vec<(Index, ReadQuery<S>)>,
    /// What a snapshot taken now would say: the last applied entry's id and the latest
    /// configuration at or before it (a snapshot carries the membership it ends with).
    last_applied: LogId,
    membership: Membership,
    snapshots: SnapshotPolicy,
    target: Arc<dyn SnapshotTarget>,
    /// The thread making the last snapshot durable.
    finishing: Option<std::thread::JoinHandle<()>>,
}

/// When to snapshot: after at least `after_entries` entries, and once the log since the last
/// snapshot holds at least as many bytes as that snapshot had. The second rule keeps the
/// cost of snapshots in proportion to the writes: a large state (1M keys: a snapshot of
/// 100+ MB) is not written out again every few thousand small writes, while a small state
/// is snapshotted as often as `after_entries` says. The log on disk stays below about
/// twice the state's size, plus `after_entries` entries.
pub(crate) struct SnapshotPolicy {
    after_entries: u64,
    /// The last snapshot's index and its data's size.
    index: Index,
    bytes: u64,
    /// The bytes of the entries applied since.
    log_bytes: u64,
}

impl SnapshotPolicy {
    /// The policy right after the snapshot at `index` of `bytes` bytes (0, 0: none yet).
    pub fn new(after_entries: u64, index: Index, bytes: u64) -> SnapshotPolicy {
        SnapshotPolicy { after_entries, index, bytes, log_bytes: 0 }
    }

    fn due(&self, applied: Index) -> bool {
        applied.0 >= self.index.0.saturating_add(self.after_entries) && self.log_bytes >= self.bytes
    }

    fn taken(&mut self, index: Index, bytes: u64) {
        (self.index, self.bytes, self.log_bytes) = (index, bytes, 0);
    }
}

impl<S: StateMachine> Applier<S> {
    /// An applier whose state machine holds the snapshot `restored` (index 0 and the
    /// initial membership: none), which the policy knows of.
    pub fn new(
        state_machine: S,
        restored: SnapshotMeta,
        snapshots: SnapshotPolicy,
        applied: Arc<AtomicU64>,
        transport: Arc<dyn Transport>,
        target: Arc<dyn SnapshotTarget>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Applier<S> {
        applied.store(restored.last_log_id.index.0, Ordering::Release);
        Applier {
            state_machine,
            applied,
            transport,
            events,
            waiting_reads: Vec::new(),
            last_applied: restored.last_log_id,
            membership: restored.membership,
            snapshots,
            target,
            finishing: None,
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
                    Error::StateMachinePanicked(message)
                }
            };
            let _ = self.events.send(Event::Failed(error));
            break;
        }
        for (_, query) in std::mem::take(&mut self.waiting_reads) {
            query(Err(Error::shut_down()));
        }
        self.wait_for_snapshot_finish();
    }

    fn handle(&mut self, task: Task<S>) -> Result<(), Error> {
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
            Task::Restore { meta, data } => {
                let mut data = CountingReader::new(data);
                let index = meta.last_log_id.index;
                self.state_machine.restore(&mut data).map_err(|source| StorageFailure::Restore { index, source })?;
                self.snapshots.taken(index, data.bytes);
                self.last_applied = meta.last_log_id;
                self.membership = meta.membership;
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
        self.last_applied = entry.log_id;
        self.snapshots.log_bytes += entry.size_bytes();
        let output = match entry.payload {
            Payload::Command(data) => match postcard::from_bytes::<S::Command>(&data) {
                Ok(command) => {
                    let output = self.state_machine.apply(entry.log_id.index, command);
                    postcard::to_stdvec(&output).map(Bytes::from).map_err(Error::from)
                }
                Err(error) => {
                    tracing::error!(index = %entry.log_id, %error, "a committed command does not decode; skipped on every node");
                    Err(Error::Codec(error))
                }
            },
            Payload::Membership(membership) => {
                self.membership = membership;
                Ok(Bytes::new())
            }
            Payload::Empty => Ok(Bytes::new()),
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

    /// When the policy says so, streams a snapshot of the state into a new snapshot file
    /// and tells the driver, which compacts the log to it. The driver goes on meanwhile:
    /// only applying waits (the state machine is borrowed), and the policy keeps that rare.
    fn maybe_snapshot(&mut self) -> Result<(), Error> {
        let applied = Index(self.applied.load(Ordering::Acquire));
        if !self.snapshots.due(applied) {
            return Ok(());
        }
        assert_eq!(self.last_applied.index, applied, "the snapshot's id is the last applied entry's");
        let meta = SnapshotMeta { last_log_id: self.last_applied, membership: self.membership.clone() };
        let failed = move |source: Box<dyn std::error::Error + Send + Sync>| {
            Error::from(StorageFailure::TakeSnapshot { index: applied, source })
        };
        let sink = self.target.create(meta.clone()).map_err(|error| failed(error.into()))?;
        let mut out = CountingWriter { inner: sink, bytes: 0 };
        self.state_machine.snapshot(&mut out).map_err(|error| failed(error.into()))?;
        out.inner.flush().map_err(|error| failed(error.into()))?;
        let bytes = out.bytes;
        self.snapshots.taken(applied, bytes);
        // Making it durable (fsync of the file and of its directory: milliseconds to tens
        // of milliseconds) is left to a thread of its own, so applying, and every write
        // waiting for its answer, goes on meanwhile. One at a time, so they land in order.
        self.wait_for_snapshot_finish();
        let events = self.events.clone();
        let sink = out.inner;
        let finish = move || {
            let event = match sink.finish() {
                Ok(()) => {
                    tracing::debug!(index = %applied, bytes, "snapshot taken");
                    Event::SnapshotTaken { meta }
                }
                Err(error) => Event::Failed(failed(error.into())),
            };
            let _ = events.send(event);
        };
        let thread = std::thread::Builder::new().name("skiff-snapshot".into()).spawn(finish);
        self.finishing = Some(thread.map_err(|error| failed(error.into()))?);
        Ok(())
    }

    /// Waits for the snapshot being made durable, if any.
    fn wait_for_snapshot_finish(&mut self) {
        if let Some(thread) = self.finishing.take() {
            let _ = thread.join();
        }
    }
}

/// Counts the bytes read through it (a snapshot's size, for the policy).
pub(crate) struct CountingReader<R> {
    inner: R,
    pub bytes: u64,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> CountingReader<R> {
        CountingReader { inner, bytes: 0 }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.bytes += read as u64;
        Ok(read)
    }
}

/// Counts the bytes written through it.
struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(data)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;
    use skiff_raft::Index;

    fn policy(index: u64, bytes: u64) -> SnapshotPolicy {
        SnapshotPolicy::new(100, Index(index), bytes)
    }

    #[test]
    fn a_small_state_is_snapshotted_every_after_entries() {
        let mut policy = policy(0, 0);
        assert!(!policy.due(Index(99)));
        assert!(policy.due(Index(100)));
        policy.taken(Index(100), 10);
        policy.log_bytes = 5_000;
        assert!(!policy.due(Index(199)));
        assert!(policy.due(Index(200)));
    }

    #[test]
    fn a_large_state_waits_until_the_log_is_as_large_as_its_last_snapshot() {
        let mut policy = policy(1_000, 1_000_000);
        policy.log_bytes = 999_999;
        assert!(!policy.due(Index(50_000)), "50k entries, but less log than one snapshot");
        policy.log_bytes = 1_000_000;
        assert!(policy.due(Index(50_000)));
        policy.taken(Index(50_000), 2_000_000);
        assert_eq!(policy.log_bytes, 0);
        policy.log_bytes = 3_000_000;
        assert!(!policy.due(Index(50_099)), "and never before `after_entries`");
        assert!(policy.due(Index(50_100)));
    }
}
