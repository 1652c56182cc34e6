//! The apply thread: it owns the state machine, applies committed entries in order, answers
//! their proposers, serves reads once their index is applied, and takes snapshots. It runs
//! beside the driver, so a slow `apply` or a large snapshot never delays ticks, heartbeats
//! or replication; the order of entries is the order the driver hands them over.
//!
//! The driver never waits for this thread: its queue is unbounded, and what is in it is
//! bounded by the [`Backlog`] instead. Committed entries above `max_apply_backlog_bytes`
//! stay in the log (the core is paused, [`skiff_raft::Raft::pause_applying`]) until this
//! thread catches up and says so ([`Event::Drained`]); reads above `max_queued_reads`
//! are refused when they arrive.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

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

thread_local! {
    /// Where the apply thread is while it runs a query: the last applied entry and the
    /// membership in effect there, which is what a snapshot of the state the query sees
    /// would say. Set around each query ([`Applier::run_query`]); read by [`position`].
    static POSITION: RefCell<Option<(LogId, Arc<Membership>)>> = const { RefCell::new(None) };
}

/// Inside a query run by the apply thread ([`Task::ReadAt`], [`Task::ReadNow`]): the
/// snapshot metadata of the state the query is given. `None` anywhere else.
pub(crate) fn position() -> Option<SnapshotMeta> {
    POSITION.with(|position| {
        let position = position.borrow();
        position.as_ref().map(|(last_log_id, membership)| SnapshotMeta {
            last_log_id: *last_log_id,
            membership: Membership::clone(membership),
        })
    })
}

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

/// How far the apply thread is, shared with the driver: the index applied, and what was
/// handed over and is not done yet.
#[derive(Debug)]
pub(crate) struct Progress {
    /// The index applied so far (also for status).
    applied: AtomicU64,
    /// The bytes of the committed entries handed over and not yet applied.
    entry_bytes: AtomicU64,
    /// Above this many `entry_bytes`, the driver pauses handing out entries.
    max_entry_bytes: u64,
    /// Reads taken on and not yet answered (waiting for a read index, for their index to be
    /// applied, or in the queue). Counted by [`ReadTicket`]s.
    reads: AtomicUsize,
    /// Set by the driver when it paused handing out entries; the apply thread then tells
    /// it when the backlog is down to half.
    paused: AtomicBool,
}

impl Progress {
    pub fn new(max_entry_bytes: u64) -> Progress {
        Progress {
            applied: AtomicU64::new(0),
            entry_bytes: AtomicU64::new(0),
            max_entry_bytes,
            reads: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
        }
    }

    pub fn applied(&self) -> Index {
        Index(self.applied.load(Ordering::Acquire))
    }

    fn set_applied(&self, index: Index) {
        self.applied.store(index.0, Ordering::Release);
    }

    /// The driver hands over `bytes` of entries.
    pub fn handed(&self, bytes: u64) {
        self.entry_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Whether the driver must pause handing out entries; if so, it is marked paused.
    pub fn must_pause(&self) -> bool {
        let over = self.entry_bytes.load(Ordering::Acquire) >= self.max_entry_bytes;
        self.paused.store(over, Ordering::Release);
        over
    }

    /// The apply thread finished `bytes` of entries: whether a paused driver should hear.
    fn done(&self, bytes: u64) -> bool {
        let left = self.entry_bytes.fetch_sub(bytes, Ordering::AcqRel).saturating_sub(bytes);
        left <= self.max_entry_bytes / 2 && self.paused.swap(false, Ordering::AcqRel)
    }

    /// Takes on one more read, unless `max` already wait: then it is refused.
    pub fn admit_read(self: &Arc<Self>, max: usize) -> Result<ReadTicket> {
        let waiting = self.reads.fetch_add(1, Ordering::AcqRel);
        if waiting >= max {
            self.reads.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded { waiting });
        }
        Ok(ReadTicket(Arc::clone(self)))
    }
}

/// One read taken on; it counts until dropped, whichever way the read ends.
pub(crate) struct ReadTicket(Arc<Progress>);

impl Drop for ReadTicket {
    fn drop(&mut self) {
        self.0.reads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the driver asks of the apply thread, in order.
pub(crate) enum Task<S: StateMachine> {
    /// Apply these committed entries (`bytes` in all); each write waits under its index,
    /// with the term it was proposed in.
    Apply { entries: Vec<Entry>, bytes: u64, writes: BTreeMap<Index, (Term, Responder)> },
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
    /// The backlog the driver paused on is down to half: hand out committed entries again.
    Drained,
}

pub(crate) struct Applier<S: StateMachine> {
    pub state_machine: S,
    /// The index applied so far and the backlog, shared with the driver.
    progress: Arc<Progress>,
    pub transport: Arc<dyn Transport>,
    pub events: mpsc::UnboundedSender<Event>,
    waiting_reads: Vec<(Index, ReadQuery<S>)>,
    /// What a snapshot taken now would say: the last applied entry's id and the latest
    /// configuration at or before it (a snapshot carries the membership it ends with).
    last_applied: LogId,
    /// Shared with the queries that ask for it ([`position`]), hence the `Arc`.
    membership: Arc<Membership>,
    snapshots: SnapshotPolicy,
    target: Arc<dyn SnapshotTarget>,
    /// The thread writing the last snapshot or making it durable: its index and size.
    finishing: Option<std::thread::JoinHandle<(Index, u64)>>,
    metrics: ApplyMetrics,
}

/// What the apply thread records, by node. How long snapshots take and how large they
/// are: `skiff_snapshot_seconds` and `skiff_snapshot_size_bytes`, by `kind`: `take` (this
/// node's state written into a snapshot file, until it is durable) and `restore` (the state
/// replaced by a leader's snapshot, read from its file). And how many entries each apply
/// batch holds. The handles are made once, when the node starts: one is used per batch.
#[derive(Clone)]
struct ApplyMetrics {
    take_seconds: metrics::Histogram,
    take_bytes: metrics::Histogram,
    restore_seconds: metrics::Histogram,
    restore_bytes: metrics::Histogram,
    /// `skiff_apply_batch_entries`: the committed entries of each batch the driver hands
    /// over ([`Task::Apply`]).
    batch_entries: metrics::Histogram,
}

impl Default for ApplyMetrics {
    /// Handles that record nothing.
    fn default() -> ApplyMetrics {
        let none = metrics::Histogram::noop;
        ApplyMetrics {
            take_seconds: none(),
            take_bytes: none(),
            restore_seconds: none(),
            restore_bytes: none(),
            batch_entries: none(),
        }
    }
}

impl ApplyMetrics {
    fn new(node: NodeId) -> ApplyMetrics {
        let seconds = |kind: &'static str| metrics::histogram!("skiff_snapshot_seconds", "node" => node.to_string(), "kind" => kind);
        let bytes = |kind: &'static str| metrics::histogram!("skiff_snapshot_size_bytes", "node" => node.to_string(), "kind" => kind);
        ApplyMetrics {
            take_seconds: seconds("take"),
            take_bytes: bytes("take"),
            restore_seconds: seconds("restore"),
            restore_bytes: bytes("restore"),
            batch_entries: metrics::histogram!("skiff_apply_batch_entries", "node" => node.to_string()),
        }
    }
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
        progress: Arc<Progress>,
        transport: Arc<dyn Transport>,
        target: Arc<dyn SnapshotTarget>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Applier<S> {
        progress.set_applied(restored.last_log_id.index);
        Applier {
            state_machine,
            progress,
            transport,
            events,
            waiting_reads: Vec::new(),
            last_applied: restored.last_log_id,
            membership: Arc::new(restored.membership),
            snapshots,
            target,
            finishing: None,
            metrics: ApplyMetrics::default(),
        }
    }

    /// Records its snapshots' time and size and its batches' sizes in metrics labeled with
    /// `node` (without this, it records nothing).
    pub fn recording_as(mut self, node: NodeId) -> Applier<S> {
        self.metrics = ApplyMetrics::new(node);
        self
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
            Task::Apply { entries, bytes, writes } => {
                self.metrics.batch_entries.record(entries.len() as f64);
                let mut writes = writes.into_iter().peekable();
                for entry in entries {
                    let log_id = entry.log_id;
                    // The driver keeps at most one write per index. An output nobody waits for
                    // (every entry on a follower) is not encoded.
                    let wanted = writes.peek().is_some_and(|(index, _)| *index == log_id.index);
                    let mut output = Some(self.apply(entry, wanted));
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
                if self.progress.done(bytes) {
                    let _ = self.events.send(Event::Drained);
                }
                self.serve_reads();
                self.maybe_snapshot()
            }
            Task::Restore { meta, data } => {
                let started = Instant::now();
                let mut data = CountingReader::new(data);
                let index = meta.last_log_id.index;
                self.state_machine.restore(&mut data).map_err(|source| StorageFailure::Restore { index, source })?;
                self.metrics.restore_seconds.record(started.elapsed());
                self.metrics.restore_bytes.record(data.bytes as f64);
                self.snapshots.taken(index, data.bytes);
                self.last_applied = meta.last_log_id;
                self.membership = Arc::new(meta.membership);
                self.progress.set_applied(index);
                self.serve_reads();
                Ok(())
            }
            Task::ReadAt { index, query } => {
                self.waiting_reads.push((index, query));
                self.serve_reads();
                Ok(())
            }
            Task::ReadNow { query } => {
                self.run_query(query);
                Ok(())
            }
        }
    }

    /// Applies `entry`; returns its output encoded if `wanted` (a caller waits for it), else
    /// empty.
    fn apply(&mut self, entry: Entry, wanted: bool) -> Result<Bytes> {
        let index = entry.index();
        let applied = self.progress.applied();
        assert_eq!(index, applied.next(), "entries are applied in order, once");
        self.last_applied = entry.log_id;
        self.snapshots.log_bytes += entry.size_bytes();
        let output = match entry.payload {
            Payload::Command(data) => match postcard::from_bytes::<S::Command>(&data) {
                Ok(command) => {
                    let output = self.state_machine.apply(entry.log_id.index, command);
                    match wanted {
                        true => postcard::to_stdvec(&output).map(Bytes::from).map_err(Error::from),
                        false => Ok(Bytes::new()),
                    }
                }
                Err(error) => {
                    tracing::error!(index = %entry.log_id, %error, "a committed command does not decode; skipped on every node");
                    Err(Error::Codec(error))
                }
            },
            Payload::Membership(membership) => {
                self.membership = Arc::new(membership);
                Ok(Bytes::new())
            }
            Payload::Empty => Ok(Bytes::new()),
        };
        self.progress.set_applied(index);
        output
    }

    fn serve_reads(&mut self) {
        let applied = self.progress.applied();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting_reads).into_iter().partition(|(index, _)| *index <= applied);
        self.waiting_reads = waiting;
        for (_, query) in ready {
            self.run_query(query);
        }
    }

    /// Runs `query` on the state as it is now, telling it where that is ([`position`]).
    fn run_query(&self, query: ReadQuery<S>) {
        let position = (self.last_applied, Arc::clone(&self.membership));
        POSITION.with(|slot| *slot.borrow_mut() = Some(position));
        query(Ok(&self.state_machine));
        POSITION.with(|slot| *slot.borrow_mut() = None);
    }

    /// When the policy says so, streams a snapshot of the state into a new snapshot file
    /// and tells the driver, which compacts the log to it. The driver goes on meanwhile.
    /// A state machine that hands out a view of itself ([`StateMachine::snapshot_view`]) is
    /// written out on a thread of its own, so applying goes on too; any other is written
    /// here (applying waits; the policy keeps that rare).
    fn maybe_snapshot(&mut self) -> Result<(), Error> {
        if self.finishing.as_ref().is_some_and(std::thread::JoinHandle::is_finished) {
            self.wait_for_snapshot_finish();
        }
        let applied = self.progress.applied();
        if !self.snapshots.due(applied) {
            return Ok(());
        }
        assert_eq!(self.last_applied.index, applied, "the snapshot's id is the last applied entry's");
        let meta = SnapshotMeta { last_log_id: self.last_applied, membership: Membership::clone(&self.membership) };
        let failed = move |source: Box<dyn std::error::Error + Send + Sync>| {
            Error::from(StorageFailure::TakeSnapshot { index: applied, source })
        };
        // One at a time, so that they land in order.
        self.wait_for_snapshot_finish();
        let started = Instant::now();
        let sink = self.target.create(meta.clone()).map_err(|error| failed(error.into()))?;
        let mut out = CountingWriter { inner: sink, bytes: 0 };
        let deferred = self.state_machine.snapshot_view();
        if deferred.is_none() {
            self.state_machine.snapshot(&mut out).map_err(|error| failed(error.into()))?;
        }
        // The size so far (none yet for a deferred one): corrected once it is written.
        self.snapshots.taken(applied, out.bytes);
        // Making it durable (fsync of the file and of its directory: milliseconds to tens
        // of milliseconds) is left to the same thread, so every write waiting for its
        // answer goes on meanwhile.
        let events = self.events.clone();
        let metrics = self.metrics.clone();
        let finish = move || {
            let written = match deferred {
                Some(write) => write(&mut out),
                None => Ok(()),
            };
            let bytes = out.bytes;
            let finished = written
                .and_then(|()| out.inner.flush())
                .map_err(|error| failed(error.into()))
                .and_then(|()| out.inner.finish().map_err(|error| failed(error.into())));
            let event = match finished {
                Ok(()) => {
                    tracing::debug!(index = %applied, bytes, "snapshot taken");
                    metrics.take_seconds.record(started.elapsed());
                    metrics.take_bytes.record(bytes as f64);
                    Event::SnapshotTaken { meta }
                }
                Err(error) => Event::Failed(error),
            };
            let _ = events.send(event);
            (applied, bytes)
        };
        let thread = std::thread::Builder::new().name("skiff-snapshot".into()).spawn(finish);
        self.finishing = Some(thread.map_err(|error| failed(error.into()))?);
        Ok(())
    }

    /// Waits for the snapshot being written or made durable, if any, and records its size.
    fn wait_for_snapshot_finish(&mut self) {
        if let Some(thread) = self.finishing.take()
            && let Ok((index, bytes)) = thread.join()
            && index == self.snapshots.index
        {
            self.snapshots.bytes = bytes;
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
