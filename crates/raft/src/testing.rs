//! Test support (behind the `testing` feature): the one executor of the [`Ready`] contract
//! that the golden runner, the smoke tests and the simulator share.
//!
//! [`execute`] takes one `Ready` from a node and acts on it in the contract's order
//! (persist and sync, send, apply and answer reads, advance), calling a [`ReadyHandler`]
//! for everything that is the harness's business: printing, queueing messages, the state
//! machine, safety checks. The storage writes, the sync (only when `must_sync` asks for
//! it), the `advance()` and the invariant check after it are done here, once, so no harness
//! can get the order wrong in its own way. A harness that simulates power loss names a
//! [`CrashPoint`]; the executor stops there and the harness crashes the node, which then
//! keeps only what was synced.

use crate::Envelope;
use crate::raft::Raft;
use crate::ready::{Error, ReadState, Ready};
use crate::storage::Storage;
use crate::types::{Entry, SnapshotMeta};

/// Where in the handling of a `Ready` a node loses power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After writing to the store, before `sync()`: the writes are lost.
    BeforeSync,
    /// After `sync()`, before sending anything but the leader's step-0 messages.
    AfterSync,
    /// After sending a prefix of the messages ([`ReadyHandler::sent_before_crash`] says how
    /// many).
    MidSend,
    /// After applying and answering reads, before `advance()`.
    BeforeAdvance,
}

/// Which of a `Ready`'s two batches of messages is being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// `Ready::leader_messages`: a durable leader's messages (step 0, thesis §10.2.1).
    Leader,
    /// `Ready::messages`: sent only once step 1 is durable (step 2).
    AfterSync,
}

/// What happened to one `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executed {
    /// The node had no `Ready`.
    Nothing,
    /// The whole contract ran and the core advanced.
    Advanced,
    /// The handler's crash point was reached: the caller must now crash the node (drop
    /// what it holds in memory and keep only what its storage synced).
    Crashed(CrashPoint),
}

/// The harness's part of the `Ready` contract. Each hook sees the node's core (for its
/// storage, commit index, id) and returns the harness's own error type.
pub trait ReadyHandler<S: Storage> {
    /// The harness's error; a failure of the core or of its storage becomes one via
    /// [`ReadyHandler::failed`].
    type Error;

    /// Turns a failure of the core (`ready()`, `advance()`) or of a storage write into the
    /// harness's error; `what` names the call that failed.
    fn failed(&self, what: &'static str, error: Error) -> Self::Error;

    /// Whether this `Ready` ends in a crash, and where. Asked once per `Ready`, before it is
    /// taken from the core. The default never crashes.
    fn crash_point(&mut self) -> Option<CrashPoint> {
        None
    }

    /// Whether `Ready::leader_messages` leave at step 0, before persisting, as a real driver
    /// sends them (the default), or together with `messages` at step 2, which the contract
    /// also allows and which keeps a printed trace in causal order.
    fn leader_messages_first(&self) -> bool {
        true
    }

    /// Whether the committed entries this node already holds durably are applied at step 0,
    /// before the new entries are persisted, as a real driver does (the default), or all at
    /// step 3, which the contract also allows.
    fn apply_durable_first(&self) -> bool {
        true
    }

    /// Step 1, before anything is written: e.g. print what will be truncated and appended,
    /// or make the snapshot file durable before the log refers to it.
    fn persisting(&mut self, _raft: &Raft<S>, _ready: &Ready) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 1, end: the store has synced; `entries` are now durable.
    fn synced(&mut self, _raft: &Raft<S>, _entries: &[Entry]) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 0 or 2: sends `messages`, each to its `to` node.
    fn send(&mut self, raft: &Raft<S>, messages: Vec<Envelope>, batch: Batch) -> Result<(), Self::Error>;

    /// With [`CrashPoint::MidSend`]: how many of the `count` messages of step 2 leave before
    /// the power goes (at most `count`). The default sends half.
    fn sent_before_crash(&mut self, count: usize) -> usize {
        count / 2
    }

    /// Step 3: restores the state machine from `snapshot` if there is one (its data came
    /// with the `InstallSnapshot`), then applies `committed` in order, each at the state
    /// machine's applied index + 1.
    fn apply(
        &mut self,
        raft: &Raft<S>,
        snapshot: Option<SnapshotMeta>,
        committed: Vec<Entry>,
    ) -> Result<(), Self::Error>;

    /// Step 3, end: answers read requests; a read waits until its index is applied.
    fn answer_reads(&mut self, _raft: &Raft<S>, _reads: Vec<ReadState>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Takes the node's `Ready`, if it has one, and acts on it in the contract's order (see
/// [`Ready`]). Stops early at the handler's [`CrashPoint`]; otherwise calls `advance()` and
/// checks the node's invariants.
pub fn execute<S: Storage, H: ReadyHandler<S>>(raft: &mut Raft<S>, handler: &mut H) -> Result<Executed, H::Error> {
    if !raft.has_ready() {
        return Ok(Executed::Nothing);
    }
    let crash = handler.crash_point();
    let mut ready = raft.ready().map_err(|error| handler.failed("ready()", error))?;
    // Step 0: a durable leader's messages may leave before its own fsync (thesis §10.2.1).
    let leader_messages = std::mem::take(&mut ready.leader_messages);
    if handler.leader_messages_first() {
        handler.send(raft, leader_messages, Batch::Leader)?;
    } else {
        ready.leader_messages = leader_messages;
    }
    // The committed entries already durable here may be applied before the new ones are
    // persisted (also step 0).
    if handler.apply_durable_first() {
        let durable: Vec<Entry> = ready.committed.drain(..ready.durable_committed()).collect();
        if !durable.is_empty() {
            handler.apply(raft, None, durable)?;
        }
    }
    // Step 1: persist, with one sync when the Ready needs it.
    handler.persisting(raft, &ready)?;
    write(raft.storage_mut(), &ready).map_err(|error| handler.failed("storage write", error))?;
    if crash == Some(CrashPoint::BeforeSync) {
        return Ok(Executed::Crashed(CrashPoint::BeforeSync));
    }
    if ready.must_sync {
        raft.storage_mut().sync().map_err(|error| handler.failed("storage sync", error.into()))?;
        handler.synced(raft, &ready.entries)?;
    }
    if crash == Some(CrashPoint::AfterSync) {
        return Ok(Executed::Crashed(CrashPoint::AfterSync));
    }
    // Step 2: send.
    let Ready { leader_messages, mut messages, snapshot, committed, reads, .. } = ready;
    if !leader_messages.is_empty() {
        handler.send(raft, leader_messages, Batch::Leader)?;
    }
    if crash == Some(CrashPoint::MidSend) {
        let count = handler.sent_before_crash(messages.len()).min(messages.len());
        messages.truncate(count);
        handler.send(raft, messages, Batch::AfterSync)?;
        return Ok(Executed::Crashed(CrashPoint::MidSend));
    }
    handler.send(raft, messages, Batch::AfterSync)?;
    // Step 3: apply, and answer reads.
    handler.apply(raft, snapshot, committed)?;
    handler.answer_reads(raft, reads)?;
    if crash == Some(CrashPoint::BeforeAdvance) {
        return Ok(Executed::Crashed(CrashPoint::BeforeAdvance));
    }
    // Step 4: advance.
    raft.advance().map_err(|error| handler.failed("advance()", error))?;
    raft.assert_invariants();
    Ok(Executed::Advanced)
}

/// Step 1 without the sync: installs the snapshot, appends the entries (cutting the old
/// tail), saves the hard state. A harness that crashes a node holding an untaken `Ready`
/// uses it to model "written, but the power went before the sync".
pub fn write<S: Storage>(storage: &mut S, ready: &Ready) -> Result<(), Error> {
    if let Some(meta) = &ready.snapshot {
        storage.install_snapshot(meta.clone())?;
    }
    storage.append(&ready.entries)?;
    if let Some(hard_state) = ready.hard_state {
        storage.set_hard_state(hard_state)?;
    }
    Ok(())
}
