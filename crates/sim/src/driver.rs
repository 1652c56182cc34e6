//! The driver: takes each `Ready` from the core and does exactly what its contract says, in
//! its order (`skiff_raft::Ready`): 1. install the snapshot, append the entries, set the hard
//! state, then one `sync()`; 2. send the messages (an `InstallSnapshot` carries the data of
//! the snapshot file it names); 3. restore the state machine from a received snapshot,
//! apply the committed entries in order (each must be `applied + 1`), answer the reads whose
//! index is applied; 4. `advance()`. A crash can be injected between any two of these.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use skiff_raft::{Entry, Envelope, HardState, Message, NodeId, ReadState, Ready, SnapshotMeta, Storage};

use crate::checker::{Check, Checker, Violation};
use crate::node::{NodeState, Running, SimNode, core_error, stash_key};
use crate::reads::ReadBook;
use crate::state_machine::SnapshotData;
use crate::stats::Stats;

/// A driver that needs more `Ready`s than this for one input is stuck in a loop.
const MAX_READIES_PER_INPUT: usize = 1000;

/// Where in the handling of a `Ready` a node crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// After writing to the store, before `sync()`: the writes are lost.
    BeforeSync,
    /// After `sync()`, before sending anything.
    AfterSync,
    /// After sending some of the messages.
    MidSend,
    /// After applying, before `advance()`.
    BeforeAdvance,
}

impl CrashPoint {
    fn draw(rng: &mut ChaCha8Rng, rate: f64) -> Option<CrashPoint> {
        if rate <= 0.0 || !rng.random_bool(rate) {
            return None;
        }
        let points = [CrashPoint::BeforeSync, CrashPoint::AfterSync, CrashPoint::MidSend, CrashPoint::BeforeAdvance];
        Some(points[rng.random_range(0..points.len())])
    }
}

/// A message leaving a node, with the snapshot data an `InstallSnapshot` streams along.
pub struct Outgoing {
    pub envelope: Envelope,
    pub snapshot: Option<SnapshotData>,
}

/// What the driver needs from the rest of the simulation.
pub struct DriveEnv<'a> {
    pub rng: &'a mut ChaCha8Rng,
    pub mid_ready_crash_rate: f64,
    pub checker: &'a mut Checker,
    pub reads: &'a mut ReadBook,
    pub outbox: &'a mut Vec<Outgoing>,
    pub stats: &'a mut Stats,
}

fn storage_error(id: NodeId, what: &'static str) -> impl FnOnce(skiff_raft::StorageError) -> Violation {
    move |error| Violation::new("Unexpected error", format!("{id}: storage {what} failed: {error}"))
}

fn running_mut(state: &mut NodeState) -> &mut Running {
    match state {
        NodeState::Running(running) => running,
        NodeState::Crashed(_) => panic!("the driver only runs on a running node"),
    }
}

impl SimNode {
    /// Handles `Ready`s until the core has nothing more to hand out. Returns where the node
    /// crashed, if it did (it is then down, with only its synced state).
    pub fn drive(&mut self, env: &mut DriveEnv) -> Result<Option<CrashPoint>, Violation> {
        for _ in 0..MAX_READIES_PER_INPUT {
            let Some(running) = self.running_mut() else { return Ok(None) };
            if !running.raft.has_ready() {
                return Ok(None);
            }
            let crash = CrashPoint::draw(env.rng, env.mid_ready_crash_rate);
            let ready = running.raft.ready().map_err(core_error(self.id, "ready()"))?;
            if self.handle_ready(ready, crash, env)? {
                self.crash();
                return Ok(crash);
            }
        }
        let detail = format!("{}: has_ready() still true after {MAX_READIES_PER_INPUT} Readies", self.id);
        Err(Violation::new("Driver progress", detail))
    }

    /// One `Ready`, in the contract's order. Returns true when the node crashes in it.
    fn handle_ready(&mut self, ready: Ready, crash: Option<CrashPoint>, env: &mut DriveEnv) -> Result<bool, Violation> {
        let Ready { hard_state, must_sync, snapshot, entries, leader_messages, messages, committed, reads } = ready;
        // Step 0: a durable leader's messages leave before its own fsync (thesis §10.2.1),
        // so a crash below can lose entries that followers already have.
        self.send(leader_messages, false, env)?;
        self.persist(snapshot.as_ref(), &entries, hard_state)?;
        if crash == Some(CrashPoint::BeforeSync) {
            return Ok(true);
        }
        if must_sync {
            self.sync(&entries, env)?;
        }
        if crash == Some(CrashPoint::AfterSync) {
            return Ok(true);
        }
        self.send(messages, crash == Some(CrashPoint::MidSend), env)?;
        if crash == Some(CrashPoint::MidSend) {
            return Ok(true);
        }
        self.apply(snapshot, &committed, env)?;
        self.answer_reads(reads, env)?;
        if crash == Some(CrashPoint::BeforeAdvance) {
            return Ok(true);
        }
        let running = running_mut(&mut self.state);
        running.raft.advance().map_err(core_error(self.id, "advance()"))?;
        running.raft.assert_invariants();
        Ok(false)
    }

    /// Step 1: write the snapshot, the entries and the hard state (not yet durable).
    fn persist(&mut self, snapshot: Option<&SnapshotMeta>, entries: &[Entry], hard_state: Option<HardState>) -> Check {
        let id = self.id;
        let running = running_mut(&mut self.state);
        if let Some(meta) = snapshot {
            let Some(data) = running.stash.get(&stash_key(meta.last_log_id)).cloned() else {
                let detail = format!("{id}: the core installs snapshot {} whose data never arrived", meta.last_log_id);
                return Err(Violation::new("Snapshot streaming", detail));
            };
            // A real runtime writes and fsyncs the snapshot file before the log refers to it.
            self.snapshots.insert(meta.last_log_id.index, data);
            running.raft.storage_mut().install_snapshot(meta.clone()).map_err(storage_error(id, "install_snapshot"))?;
        }
        let storage = running.raft.storage_mut();
        storage.append(entries).map_err(storage_error(id, "append"))?;
        if let Some(hard_state) = hard_state {
            storage.set_hard_state(hard_state).map_err(storage_error(id, "set_hard_state"))?;
        }
        Ok(())
    }

    /// Step 1, end: one `sync()` makes everything durable; snapshot files the log no longer
    /// refers to are deleted.
    fn sync(&mut self, entries: &[Entry], env: &mut DriveEnv) -> Check {
        let id = self.id;
        let running = running_mut(&mut self.state);
        let storage = running.raft.storage_mut();
        storage.sync().map_err(storage_error(id, "sync"))?;
        env.checker.on_persisted(id, storage, entries)?;
        let current = storage.snapshot_meta().last_log_id.index;
        self.snapshots.retain(|&index, _| index >= current);
        Ok(())
    }

    /// Step 2: send, with the snapshot file's data riding along an `InstallSnapshot`. With
    /// `crash_midway`, only a random prefix of the messages leaves.
    fn send(&mut self, messages: Vec<Envelope>, crash_midway: bool, env: &mut DriveEnv) -> Check {
        let count = if crash_midway { env.rng.random_range(0..=messages.len()) } else { messages.len() };
        for envelope in messages.into_iter().take(count) {
            env.checker.on_send(running_mut(&mut self.state).raft.storage(), &envelope)?;
            let snapshot = match &envelope.message {
                Message::InstallSnapshot { meta } => Some(self.snapshot_file(meta)?),
                _ => None,
            };
            env.outbox.push(Outgoing { envelope, snapshot });
        }
        Ok(())
    }

    fn snapshot_file(&self, meta: &SnapshotMeta) -> Result<SnapshotData, Violation> {
        match self.snapshots.get(&meta.last_log_id.index) {
            Some(data) if data.last_log_id == meta.last_log_id => Ok(data.clone()),
            _ => {
                let detail = format!("{}: sends snapshot {} but has no such snapshot file", self.id, meta.last_log_id);
                Err(Violation::new("Snapshot streaming", detail))
            }
        }
    }

    /// Step 3: restore from a received snapshot, then apply the committed entries in order.
    fn apply(&mut self, snapshot: Option<SnapshotMeta>, committed: &[Entry], env: &mut DriveEnv) -> Check {
        let id = self.id;
        let running = running_mut(&mut self.state);
        if let Some(meta) = snapshot {
            let restored = meta.last_log_id;
            let data = running.stash.remove(&stash_key(restored)).expect("persist() checked the stash");
            env.checker.on_restore(id, &data)?;
            running.state = data.state;
            running.stash.retain(|&(index, _), _| index > restored.index);
            env.stats.snapshots_installed += 1;
        }
        let commit = running.raft.commit_index();
        for entry in committed {
            if entry.index() != running.state.applied.next() || entry.index() > commit {
                let detail = format!(
                    "{id}: handed {} to apply with applied {} and commit {commit}",
                    entry.log_id, running.state.applied
                );
                return Err(Violation::new("Apply order", detail));
            }
            running.state.apply(entry);
            env.checker.on_apply(id, entry, &running.state)?;
        }
        Ok(())
    }

    /// Step 3, end: answers to reads wait until the state machine reaches their index.
    fn answer_reads(&mut self, reads: Vec<ReadState>, env: &mut DriveEnv) -> Check {
        let (id, incarnation) = (self.id, self.incarnation);
        let running = running_mut(&mut self.state);
        for read in reads {
            let Some(bound) = env.reads.claim(read.id, id, incarnation)? else { continue };
            match read.result {
                Ok(index) => running.waiting_reads.push((read.id, index, bound)),
                Err(_) => env.stats.read_errors += 1,
            }
        }
        let applied = running.state.applied;
        let (ready, waiting) = running.waiting_reads.drain(..).partition(|&(_, index, _)| index <= applied);
        running.waiting_reads = waiting;
        for (read, index, bound) in ready {
            env.checker.on_read(id, read.0, index, bound, &running.state)?;
            env.stats.reads += 1;
        }
        Ok(())
    }
}
