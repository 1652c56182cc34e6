//! One simulated server: its consensus core, its store, its state machine and its durable
//! snapshot store; how it crashes, restarts and compacts. A crash keeps only what `sync()`
//! made durable, and the snapshot store, whose files are fsynced before the log refers to
//! them. The `Ready` handling is in `driver.rs`.

use std::collections::BTreeMap;

use skiff_raft::{Config, Index, LogId, MemStorage, NodeId, Raft, ReadId, Storage, Term};

use crate::checker::{Check, Violation};
use crate::state_machine::{SnapshotData, StateMachine};

/// The volatile state of a running node: lost in a crash.
pub struct Running {
    pub raft: Raft<MemStorage>,
    pub state: StateMachine,
    /// Snapshot data received with `InstallSnapshot`, until the core asks to install it.
    pub(crate) stash: BTreeMap<(Index, Term), SnapshotData>,
    /// Reads answered by the core, waiting for the state machine to reach their index:
    /// `(read, read index, bound at invocation)`.
    pub(crate) waiting_reads: Vec<(ReadId, Index, Index)>,
}

pub enum NodeState {
    Running(Box<Running>),
    /// Down; only its synced store survives.
    Crashed(Box<MemStorage>),
}

pub struct SimNode {
    pub id: NodeId,
    /// Counts restarts, so timers and reads of a former life are recognised as stale.
    pub incarnation: u64,
    /// Durable snapshot files by index: the current one, and newer ones not yet referred to
    /// by the log (a crash between writing the file and compacting the log).
    pub snapshots: BTreeMap<Index, SnapshotData>,
    pub state: NodeState,
    /// A paused process (SIGSTOP) resumes at this virtual time.
    pub paused_until: Option<u64>,
}

/// `LogId` is not `Ord`; the stash is keyed by its parts.
pub(crate) fn stash_key(log_id: LogId) -> (Index, Term) {
    (log_id.index, log_id.term)
}

pub(crate) fn core_error(id: NodeId, what: &str) -> impl FnOnce(skiff_raft::Error) -> Violation + '_ {
    move |error| Violation::new("Unexpected error", format!("{id}: {what} failed: {error}"))
}

impl SimNode {
    /// A node booting for the first time from `storage`.
    pub fn start(id: NodeId, config: Config, storage: MemStorage) -> Result<SimNode, Violation> {
        let raft = Raft::new(config, storage).map_err(core_error(id, "Raft::new"))?;
        let running =
            Running { raft, state: StateMachine::default(), stash: BTreeMap::new(), waiting_reads: Vec::new() };
        let state = NodeState::Running(Box::new(running));
        Ok(SimNode { id, incarnation: 0, snapshots: BTreeMap::new(), state, paused_until: None })
    }

    pub fn running(&self) -> Option<&Running> {
        match &self.state {
            NodeState::Running(running) => Some(running),
            NodeState::Crashed(_) => None,
        }
    }

    pub fn running_mut(&mut self) -> Option<&mut Running> {
        match &mut self.state {
            NodeState::Running(running) => Some(running),
            NodeState::Crashed(_) => None,
        }
    }

    /// Power loss: everything not synced is gone, and so is all volatile state.
    pub fn crash(&mut self) {
        self.paused_until = None;
        let state = std::mem::replace(&mut self.state, NodeState::Crashed(Box::default()));
        self.state = match state {
            NodeState::Running(running) => {
                let mut storage = running.raft.into_storage();
                storage.crash();
                NodeState::Crashed(Box::new(storage))
            }
            crashed => crashed,
        };
    }

    /// Boots again from the synced store, with the state machine restored from the
    /// snapshot file the store refers to (the state machine itself is not durable).
    pub fn restart(&mut self, config: Config) -> Check {
        let state = std::mem::replace(&mut self.state, NodeState::Crashed(Box::default()));
        let NodeState::Crashed(storage) = state else {
            self.state = state;
            return Ok(());
        };
        let snapshot = storage.snapshot_meta().last_log_id;
        let state = if snapshot.index == Index(0) {
            StateMachine::default()
        } else {
            let data = self.snapshots.get(&snapshot.index).filter(|data| data.last_log_id == snapshot);
            let missing = || Violation::new("Snapshot store", format!("{}: no snapshot file for {snapshot}", self.id));
            data.ok_or_else(missing)?.state.clone()
        };
        let raft = Raft::new(config, *storage).map_err(core_error(self.id, "restart (Raft::new)"))?;
        self.incarnation += 1;
        let running = Running { raft, state, stash: BTreeMap::new(), waiting_reads: Vec::new() };
        self.state = NodeState::Running(Box::new(running));
        Ok(())
    }

    /// Keeps the data that came with an `InstallSnapshot`, for when the core installs it.
    pub fn stash_snapshot(&mut self, data: SnapshotData) {
        if let Some(running) = self.running_mut() {
            running.stash.insert(stash_key(data.last_log_id), data);
        }
    }

    /// Takes a snapshot of the state machine at its applied index and compacts the log up
    /// to there: the snapshot file first, then the log (so a crash in between is harmless).
    /// Returns whether a snapshot was taken.
    pub fn compact(&mut self) -> Result<bool, Violation> {
        let id = self.id;
        let NodeState::Running(running) = &mut self.state else { return Ok(false) };
        let index = running.state.applied;
        if index < running.raft.storage().first_index() {
            return Ok(false);
        }
        let meta = match running.raft.compact(index) {
            Ok(meta) => meta,
            Err(skiff_raft::Error::InvalidSnapshot { .. }) => return Ok(false),
            Err(error) => return Err(core_error(id, "compact")(error)),
        };
        if meta.last_log_id.index != index {
            return Err(Violation::new("Snapshot", format!("{id}: compact({index}) returned {}", meta.last_log_id)));
        }
        self.snapshots.insert(index, running.state.snapshot(meta.last_log_id));
        let storage = running.raft.storage_mut();
        let storage_error = |error| Violation::new("Unexpected error", format!("{id}: storage: {error}"));
        storage.compact(meta).map_err(storage_error)?;
        storage.sync().map_err(storage_error)?;
        running.raft.assert_invariants();
        Ok(true)
    }
}
