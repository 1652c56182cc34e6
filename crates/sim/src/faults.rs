//! Faults: crashes (of any node, or of the leader on purpose), restarts, and partitions
//! (two-way or one-way, of a random subset of nodes), each healed after a while.

use std::collections::BTreeSet;

use rand::Rng;
use skiff_raft::NodeId;

use crate::checker::Check;
use crate::network::random_side;
use crate::sim::{Event, Phase, Sim};

impl Sim {
    /// One fault, then the next one is scheduled.
    pub(crate) fn fault(&mut self) -> Check {
        if self.phase != Phase::Chaos {
            return Ok(());
        }
        let roll = self.rng.random_range(0..100);
        let leader = self.current_leader();
        let victim = self.random_running();
        match roll {
            0..20 => victim.into_iter().for_each(|id| self.crash(id)),
            20..32 => leader.into_iter().for_each(|id| self.crash(id)),
            32..34 => self.running_ids().into_iter().for_each(|id| self.crash(id)),
            34..50 => self.partition(false),
            50..58 => self.partition(true),
            58..64 => leader.into_iter().for_each(|id| self.isolate(id)),
            64..72 => {
                let target = if roll < 68 { leader } else { victim };
                target.into_iter().for_each(|id| self.pause(id));
            }
            72..90 => self.heal_all(),
            _ => {}
        }
        let next = self.rng.random_range(1..=2 * self.knobs.fault_interval_ms);
        self.queue.push(self.now + next, Event::Fault);
        Ok(())
    }

    pub(crate) fn random_running(&mut self) -> Option<NodeId> {
        let running = self.running_ids();
        (!running.is_empty()).then(|| running[self.rng.random_range(0..running.len())])
    }

    fn crash(&mut self, id: NodeId) {
        let now = self.now;
        self.trace.begin(|| format!("t={now} CRASH {id}"));
        if let Some(node) = self.nodes.get_mut(&id) {
            node.crash();
        }
        self.after_crash(id);
    }

    /// A node went down: its clients are gone, and it comes back after a while (in the
    /// liveness phase, every node is brought back at once instead).
    pub(crate) fn after_crash(&mut self, id: NodeId) {
        self.stats.crashes += 1;
        self.reads.forget_node(id);
        if self.phase == Phase::Chaos {
            let (low, high) = self.knobs.downtime_ms;
            let downtime = self.rng.random_range(low..=high);
            self.queue.push(self.now + downtime, Event::Restart { node: id });
        }
    }

    /// Brings a crashed node back from its synced store (a stale restart is ignored).
    pub(crate) fn restart(&mut self, id: NodeId) -> Check {
        let config = self.knobs.config(id, self.rng.random());
        let node = self.nodes.get_mut(&id).expect("restarts are for known nodes");
        if node.running().is_some() {
            return Ok(());
        }
        node.restart(config)?;
        let raft = &node.running().expect("just restarted").raft;
        self.checker.on_restart(id, raft)?;
        self.stats.restarts += 1;
        let now = self.now;
        self.trace.begin(|| format!("t={now} RESTART {id}"));
        self.schedule_first_tick(id);
        self.drive(id)
    }

    fn partition(&mut self, one_way: bool) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        let side = random_side(&mut self.rng, &all);
        self.network.cut(&side, &all, one_way);
        self.stats.partitions += 1;
        let now = self.now;
        let kind = if one_way { "one-way: they cannot send" } else { "two-way" };
        self.trace.begin(|| format!("t={now} PARTITION {side:?} from the rest ({kind})"));
        let duration = self.rng.random_range(50..=1500);
        self.queue.push(self.now + duration, Event::HealAll);
    }

    /// Cuts a node off one way: either it hears the others but is not heard (a leader that
    /// keeps sending heartbeats nobody answers), or it is heard but hears nothing.
    fn isolate(&mut self, id: NodeId) {
        let all: Vec<NodeId> = self.nodes.keys().copied().collect();
        let deaf = self.rng.random_bool(0.5);
        let side: BTreeSet<NodeId> =
            if deaf { all.iter().copied().filter(|&other| other != id).collect() } else { BTreeSet::from([id]) };
        self.network.cut(&side, &all, true);
        self.stats.partitions += 1;
        let now = self.now;
        let how = if deaf { "hears nothing" } else { "is not heard" };
        self.trace.begin(|| format!("t={now} ISOLATE {id}: it {how}"));
        let duration = self.rng.random_range(50..=1500);
        self.queue.push(self.now + duration, Event::HealAll);
    }

    /// Stops a node's process for a while (like SIGSTOP): no ticks, and messages wait until
    /// it resumes with its memory intact, believing whatever it believed before. Not with
    /// lease reads, which assume every clock runs (thesis §6.4.1): a paused leader's lease
    /// would outlive real time, a known limit of leases rather than a bug.
    fn pause(&mut self, id: NodeId) {
        if self.knobs.lease_reads {
            return;
        }
        let duration =
            self.rng.random_range(self.knobs.election_timeout_ms() / 2..=4 * self.knobs.election_timeout_ms());
        let until = self.now + duration;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused_until = Some(until);
        }
        self.stats.pauses += 1;
        let now = self.now;
        self.trace.begin(|| format!("t={now} PAUSE {id} until t={until}"));
    }

    pub(crate) fn heal_all(&mut self) {
        if self.network.has_cuts() {
            let now = self.now;
            self.trace.begin(|| format!("t={now} HEAL all links"));
            self.network.heal();
        }
    }
}
