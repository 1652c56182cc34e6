//! The driver: each `Ready` goes through the core's one executor
//! (`skiff_raft::testing::execute`, shared with the core's golden and smoke tests), which acts
//! in the contract's order: 0. send a durable leader's messages; 1. install the snapshot,
//! append the entries, set the hard state, then one `sync()` when `must_sync`; 2. send the
//! messages (an `InstallSnapshot` carries the data of the snapshot file it names); 3. restore
//! the state machine from a received snapshot, apply the committed entries in order (each
//! must be `applied + 1`), answer the reads whose index is applied; 4. `advance()`. This
//! file is the simulator's part: the hooks where the checker watches, and the crash drawn
//! for each `Ready`, which the executor injects between any two of these steps.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use skiff_raft::testing::{self, Batch, CrashPoint, Executed, ReadyHandler};
use skiff_raft::{
    Entry, Envelope, Index, MemStorage, Message, NodeId, Raft, ReadId, ReadState, Ready, SnapshotMeta, Storage, Term,
};

use crate::checker::{Checker, Violation};
use crate::node::{NodeState, Running, SimNode, stash_key};
use crate::reads::ReadBook;
use crate::state_machine::{SnapshotData, StateMachine};
use crate::stats::Stats;

/// A driver that needs more `Ready`s than this for one input is stuck in a loop.
const MAX_READIES_PER_INPUT: usize = 1000;

/// Whether the next `Ready` ends in a crash (with probability `rate`), and where.
fn draw_crash_point(rng: &mut ChaCha8Rng, rate: f64) -> Option<CrashPoint> {
    if rate <= 0.0 || !rng.random_bool(rate) {
        return None;
    }
    let points = [CrashPoint::BeforeSync, CrashPoint::AfterSync, CrashPoint::MidSend, CrashPoint::BeforeAdvance];
    Some(points[rng.random_range(0..points.len())])
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

impl SimNode {
    /// Handles `Ready`s until the core has nothing more to hand out. Returns where the node
    /// crashed, if it did (it is then down, with only its synced state).
    pub fn drive(&mut self, env: &mut DriveEnv) -> Result<Option<CrashPoint>, Violation> {
        for _ in 0..MAX_READIES_PER_INPUT {
            let (id, incarnation) = (self.id, self.incarnation);
            let NodeState::Running(running) = &mut self.state else { return Ok(None) };
            let Running { raft, state, stash, waiting_reads } = &mut **running;
            let mut handler =
                SimHandler { id, incarnation, snapshots: &mut self.snapshots, state, stash, waiting_reads, env };
            match testing::execute(raft, &mut handler)? {
                Executed::Nothing => return Ok(None),
                Executed::Advanced => {}
                Executed::Crashed(point) => {
                    self.crash();
                    return Ok(Some(point));
                }
            }
        }
        let detail = format!("{}: has_ready() still true after {MAX_READIES_PER_INPUT} Readies", self.id);
        Err(Violation::new("Driver progress", detail))
    }
}

/// The simulator's part of the `Ready` contract: snapshot files, the state machine, the
/// reads, and the safety checker watching what is persisted, sent and applied.
struct SimHandler<'a, 'env> {
    id: NodeId,
    incarnation: u64,
    /// The node's durable snapshot files (`SimNode::snapshots`).
    snapshots: &'a mut BTreeMap<Index, SnapshotData>,
    state: &'a mut StateMachine,
    stash: &'a mut BTreeMap<(Index, Term), SnapshotData>,
    waiting_reads: &'a mut Vec<(ReadId, Index, Index)>,
    env: &'a mut DriveEnv<'env>,
}

impl SimHandler<'_, '_> {
    fn snapshot_file(&self, meta: &SnapshotMeta) -> Result<SnapshotData, Violation> {
        match self.snapshots.get(&meta.last_log_id.index) {
            Some(data) if data.last_log_id == meta.last_log_id => Ok(data.clone()),
            _ => {
                let detail = format!("{}: sends snapshot {} but has no such snapshot file", self.id, meta.last_log_id);
                Err(Violation::new("Snapshot streaming", detail))
            }
        }
    }
}

impl ReadyHandler<MemStorage> for SimHandler<'_, '_> {
    type Error = Violation;

    fn failed(&self, what: &'static str, error: skiff_raft::Error) -> Violation {
        Violation::new("Unexpected error", format!("{}: {what} failed: {error}", self.id))
    }

    fn crash_point(&mut self) -> Option<CrashPoint> {
        draw_crash_point(self.env.rng, self.env.mid_ready_crash_rate)
    }

    /// Step 1, before writing: the snapshot file is made durable before the log refers to
    /// it, as a real runtime does.
    fn persisting(&mut self, _raft: &Raft<MemStorage>, ready: &Ready) -> Result<(), Violation> {
        if let Some(meta) = &ready.snapshot {
            let Some(data) = self.stash.get(&stash_key(meta.last_log_id)).cloned() else {
                let detail =
                    format!("{}: the core installs snapshot {} whose data never arrived", self.id, meta.last_log_id);
                return Err(Violation::new("Snapshot streaming", detail));
            };
            self.snapshots.insert(meta.last_log_id.index, data);
        }
        Ok(())
    }

    /// Step 1, end: the checker sees what became durable; snapshot files the log no longer
    /// refers to are deleted.
    fn synced(&mut self, raft: &Raft<MemStorage>, entries: &[Entry]) -> Result<(), Violation> {
        let storage = raft.storage();
        self.env.checker.on_persisted(self.id, storage, entries)?;
        let current = storage.snapshot_meta().last_log_id.index;
        self.snapshots.retain(|&index, _| index >= current);
        Ok(())
    }

    /// Steps 0 and 2: the checker sees each message leave, and the snapshot file's data
    /// rides along an `InstallSnapshot`.
    fn send(&mut self, raft: &Raft<MemStorage>, messages: Vec<Envelope>, _batch: Batch) -> Result<(), Violation> {
        for envelope in messages {
            self.env.checker.on_send(raft.storage(), &envelope)?;
            let snapshot = match &envelope.message {
                Message::InstallSnapshot { meta } => Some(self.snapshot_file(meta)?),
                _ => None,
            };
            self.env.outbox.push(Outgoing { envelope, snapshot });
        }
        Ok(())
    }

    fn sent_before_crash(&mut self, count: usize) -> usize {
        self.env.rng.random_range(0..=count)
    }

    /// Step 3: restore from a received snapshot, then apply the committed entries in order.
    fn apply(
        &mut self,
        raft: &Raft<MemStorage>,
        snapshot: Option<SnapshotMeta>,
        committed: Vec<Entry>,
    ) -> Result<(), Violation> {
        let id = self.id;
        if let Some(meta) = snapshot {
            let restored = meta.last_log_id;
            let data = self.stash.remove(&stash_key(restored)).expect("persisting() checked the stash");
            self.env.checker.on_restore(id, &data)?;
            *self.state = data.state;
            self.stash.retain(|&(index, _), _| index > restored.index);
            self.env.stats.snapshots_installed += 1;
        }
        let commit = raft.commit_index();
        for entry in &committed {
            if entry.index() != self.state.applied.next() || entry.index() > commit {
                let detail = format!(
                    "{id}: handed {} to apply with applied {} and commit {commit}",
                    entry.log_id, self.state.applied
                );
                return Err(Violation::new("Apply order", detail));
            }
            self.state.apply(entry);
            self.env.checker.on_apply(id, entry, self.state)?;
        }
        Ok(())
    }

    /// Step 3, end: answers to reads wait until the state machine reaches their index.
    fn answer_reads(&mut self, _raft: &Raft<MemStorage>, reads: Vec<ReadState>) -> Result<(), Violation> {
        let (id, incarnation) = (self.id, self.incarnation);
        for read in reads {
            let Some(bound) = self.env.reads.claim(read.id, id, incarnation)? else { continue };
            match read.result {
                Ok(index) => self.waiting_reads.push((read.id, index, bound)),
                Err(_) => self.env.stats.read_errors += 1,
            }
        }
        let applied = self.state.applied;
        let (ready, waiting) = self.waiting_reads.drain(..).partition(|&(_, index, _)| index <= applied);
        *self.waiting_reads = waiting;
        for (read, index, bound) in ready {
            self.env.checker.on_read(id, read.0, index, bound, self.state)?;
            self.env.stats.reads += 1;
        }
        Ok(())
    }
}
