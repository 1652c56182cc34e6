//! The simulation: nodes on a virtual clock, a seeded network between them, a workload and
//! faults, and the checker looking at everything after every event. One `ChaCha8Rng`
//! seeded from the seed makes every choice, and every collection is ordered, so a seed
//! replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skiff_raft::{Envelope, MemStorage, Membership, Message, NodeId, RoleName};

use crate::checker::{Check, Checker, Violation};
use crate::driver::{DriveEnv, Outgoing};
use crate::knobs::{Knobs, TICK_MS};
use crate::liveness::LivenessProbe;
use crate::network::{Fate, Network};
use crate::node::SimNode;
use crate::panic_capture;
use crate::queue::EventQueue;
use crate::reads::ReadBook;
use crate::state_machine::SnapshotData;
use crate::stats::Stats;
use crate::trace::{Trace, TraceMode, describe_envelope};

/// Spare node ids per cluster, to add as learners and promote. Ids are never reused.
pub const SPARE_NODES: u64 = 3;

/// Something that happens at one virtual time.
pub enum Event {
    /// A node's periodic tick; stale once the node crashed (its incarnation moved on).
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    /// A message arrives, with the snapshot data an `InstallSnapshot` carries.
    Deliver {
        envelope: Envelope,
        snapshot: Option<SnapshotData>,
    },
    /// The runtime tells a leader whether a snapshot stream reached `peer`.
    SnapshotReport {
        leader: NodeId,
        incarnation: u64,
        peer: NodeId,
        delivered: bool,
    },
    /// The next client operation (proposal, read, membership change, transfer, compaction).
    Client,
    /// The next fault (crash, partition, one-way isolation, pause, heal).
    Fault,
    Restart {
        node: NodeId,
    },
    HealAll,
    /// The liveness phase checks for progress.
    LivenessProbe,
}

impl Event {
    /// The node the event happens at, for the trace.
    fn node(&self) -> Option<NodeId> {
        match self {
            Event::Tick { node, .. } | Event::Restart { node } => Some(*node),
            Event::Deliver { envelope, .. } => Some(envelope.to),
            Event::SnapshotReport { leader, .. } => Some(*leader),
            Event::Client | Event::Fault | Event::HealAll | Event::LivenessProbe => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Faults and workload.
    Chaos,
    /// Faults stopped; the cluster must make progress.
    Liveness,
}

/// One seed's whole world: the nodes, the network, the clock and the checker.
pub struct Sim {
    pub(crate) seed: u64,
    pub(crate) knobs: Knobs,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: u64,
    pub(crate) queue: EventQueue<Event>,
    pub(crate) nodes: BTreeMap<NodeId, SimNode>,
    pub(crate) network: Network,
    pub(crate) checker: Checker,
    pub(crate) reads: ReadBook,
    pub(crate) stats: Stats,
    pub(crate) trace: Trace,
    pub(crate) phase: Phase,
    /// Nodes that start outside the cluster, waiting to be added.
    pub(crate) spares: Vec<NodeId>,
    /// Nodes the workload proposed to remove: never added again (ids are never reused).
    pub(crate) retired: BTreeSet<NodeId>,
    pub(crate) next_command: u64,
    pub(crate) next_read: u64,
    pub(crate) liveness: LivenessProbe,
}

impl Sim {
    /// A cluster of `voters` nodes (ids 1..=voters) plus spares, everything drawn from `seed`.
    pub fn new(seed: u64, voters: u64, trace: TraceMode) -> Result<Sim, Violation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let knobs = Knobs::draw(&mut rng);
        let network = Network::new(knobs.network.clone());
        let voter_ids: Vec<NodeId> = (1..=voters).map(NodeId).collect();
        let spares: Vec<NodeId> = (voters + 1..=voters + SPARE_NODES).map(NodeId).collect();
        let mut sim = Sim {
            seed,
            knobs,
            rng,
            now: 0,
            queue: EventQueue::default(),
            nodes: BTreeMap::new(),
            network,
            checker: Checker::default(),
            reads: ReadBook::default(),
            stats: Stats::default(),
            trace: Trace::new(trace),
            phase: Phase::Chaos,
            spares: spares.clone(),
            retired: BTreeSet::new(),
            next_command: 0,
            next_read: 0,
            liveness: LivenessProbe::default(),
        };
        let membership = Membership::with_voters(voter_ids.clone());
        for id in voter_ids {
            sim.boot(id, MemStorage::new(membership.clone()))?;
        }
        for id in spares {
            sim.boot(id, MemStorage::new(Membership::default()))?;
        }
        let first_client = sim.rng.random_range(1..=sim.knobs.client_interval_ms);
        sim.queue.push(first_client, Event::Client);
        let first_fault = sim.rng.random_range(1..=2 * sim.knobs.fault_interval_ms);
        sim.queue.push(first_fault, Event::Fault);
        Ok(sim)
    }

    fn boot(&mut self, id: NodeId, storage: MemStorage) -> Check {
        let config = self.knobs.config(id, self.rng.random());
        let node = SimNode::start(id, config, storage)?;
        self.nodes.insert(id, node);
        self.schedule_first_tick(id);
        Ok(())
    }

    /// Every node ticks at the same period, each at a random phase.
    pub(crate) fn schedule_first_tick(&mut self, id: NodeId) {
        let incarnation = self.nodes[&id].incarnation;
        let phase = self.rng.random_range(1..=TICK_MS);
        self.queue.push(self.now + phase, Event::Tick { node: id, incarnation });
    }

    /// Runs the fault phase for `steps` events, then the liveness phase.
    pub fn run(&mut self, steps: u64) -> Check {
        self.trace.begin(|| format!("seed {} config: {}", self.seed, self.knobs));
        self.trace.finish();
        while self.stats.events < steps {
            let Some((time, event)) = self.queue.pop() else { break };
            self.step_event(time, event)?;
        }
        self.run_liveness()
    }

    /// Processes one event; a panic in the core (a failed assertion) becomes a violation.
    pub(crate) fn step_event(&mut self, time: u64, event: Event) -> Check {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.process(time, event)));
        let result = outcome
            .unwrap_or_else(|payload| Err(Violation::new("Core panic", panic_capture::message(payload.as_ref()))));
        if let Err(violation) = &result {
            self.trace.note(|| format!("VIOLATION {}: {}", violation.property, violation.detail));
        }
        self.trace.finish();
        result
    }

    fn process(&mut self, time: u64, event: Event) -> Check {
        self.now = time;
        self.stats.events += 1;
        let node = event.node();
        match event {
            Event::Tick { node, incarnation } => self.tick(node, incarnation)?,
            Event::Deliver { envelope, snapshot } => self.deliver(envelope, snapshot)?,
            Event::SnapshotReport { leader, incarnation, peer, delivered } => {
                self.report_snapshot(leader, incarnation, peer, delivered)?
            }
            Event::Client => self.client_operation()?,
            Event::Fault => self.fault()?,
            Event::Restart { node } => self.restart(node)?,
            Event::HealAll => self.heal_all(),
            Event::LivenessProbe => self.liveness_probe()?,
        }
        self.observe()?;
        if self.trace.is_on()
            && let Some(id) = node
        {
            let state = self.describe_node(id);
            self.trace.note(|| state);
        }
        Ok(())
    }

    fn tick(&mut self, id: NodeId, incarnation: u64) -> Check {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("ticks are for known nodes");
        if node.incarnation != incarnation {
            return Ok(());
        }
        if node.paused_until.is_some_and(|until| until > now) {
            // A stopped process misses its timer; it ticks again once resumed.
            self.queue.push(now + TICK_MS, Event::Tick { node: id, incarnation });
            return Ok(());
        }
        let Some(running) = node.running_mut() else { return Ok(()) };
        running.raft.tick().map_err(|error| Violation::new("Unexpected error", format!("{id}: tick: {error}")))?;
        running.raft.assert_invariants();
        // Quiet ticks (nothing to do) stay out of the trace, so its tail shows what matters.
        if running.raft.has_ready() {
            self.trace.begin(|| format!("t={now} {id} tick"));
        }
        self.queue.push(now + TICK_MS, Event::Tick { node: id, incarnation });
        self.drive(id)
    }

    fn deliver(&mut self, envelope: Envelope, snapshot: Option<SnapshotData>) -> Check {
        let (from, to, now) = (envelope.from, envelope.to, self.now);
        self.trace.begin(|| format!("t={now} {to} recv {}", describe_envelope(&envelope)));
        let is_snapshot = matches!(envelope.message, Message::InstallSnapshot { .. });
        let lost = if self.network.is_cut(from, to) {
            Some("link cut in flight")
        } else if self.nodes.get(&to).and_then(SimNode::running).is_none() {
            Some("receiver down")
        } else {
            None
        };
        if lost.is_none()
            && let Some(until) = self.paused_until(to)
        {
            self.trace.note(|| format!("held until t={until}: receiver paused"));
            self.queue.push(until, Event::Deliver { envelope, snapshot });
            return Ok(());
        }
        if let Some(reason) = lost {
            self.trace.note(|| format!("lost: {reason}"));
            self.stats.drops += 1;
            if is_snapshot {
                self.schedule_report(from, to, false);
            }
            return Ok(());
        }
        let node = self.nodes.get_mut(&to).expect("checked above");
        if let Some(data) = snapshot {
            node.stash_snapshot(data);
        }
        let running = node.running_mut().expect("checked above");
        running
            .raft
            .step(envelope)
            .map_err(|error| Violation::new("Unexpected error", format!("{to}: step: {error}")))?;
        running.raft.assert_invariants();
        self.drive(to)?;
        if is_snapshot {
            self.schedule_report(from, to, true);
        }
        Ok(())
    }

    /// The snapshot stream from `leader` to `peer` ended; tell the leader how.
    fn schedule_report(&mut self, leader: NodeId, peer: NodeId, delivered: bool) {
        let Some(node) = self.nodes.get(&leader) else { return };
        let incarnation = node.incarnation;
        let delay = if delivered { self.rng.random_range(1..=5) } else { self.knobs.election_timeout_ms() / 2 };
        self.queue.push(self.now + delay, Event::SnapshotReport { leader, incarnation, peer, delivered });
    }

    fn report_snapshot(&mut self, leader: NodeId, incarnation: u64, peer: NodeId, delivered: bool) -> Check {
        let now = self.now;
        if let Some(until) = self.paused_until(leader) {
            self.queue.push(until, Event::SnapshotReport { leader, incarnation, peer, delivered });
            return Ok(());
        }
        let Some(node) = self.nodes.get_mut(&leader).filter(|node| node.incarnation == incarnation) else {
            return Ok(());
        };
        let Some(running) = node.running_mut() else { return Ok(()) };
        self.trace.begin(|| format!("t={now} {leader} snapshot to {peer} delivered={delivered}"));
        running.raft.report_snapshot(peer, delivered);
        running.raft.assert_invariants();
        self.drive(leader)
    }

    /// Runs the driver on `id` after an input, sends what it sent, and handles its crash.
    pub(crate) fn drive(&mut self, id: NodeId) -> Check {
        let mut outbox = Vec::new();
        let mid_ready_crash_rate = if self.phase == Phase::Chaos { self.knobs.mid_ready_crash_rate } else { 0.0 };
        let Some(node) = self.nodes.get_mut(&id) else { return Ok(()) };
        let mut env = DriveEnv {
            rng: &mut self.rng,
            mid_ready_crash_rate,
            checker: &mut self.checker,
            reads: &mut self.reads,
            outbox: &mut outbox,
            stats: &mut self.stats,
        };
        let crashed = node.drive(&mut env)?;
        self.send_all(outbox);
        if let Some(point) = crashed {
            self.trace.note(|| format!("CRASH of {id} inside a Ready ({point:?})"));
            self.stats.mid_ready_crashes += 1;
            self.after_crash(id);
        }
        Ok(())
    }

    fn send_all(&mut self, outbox: Vec<Outgoing>) {
        for Outgoing { envelope, snapshot } in outbox {
            let (from, to) = (envelope.from, envelope.to);
            if snapshot.is_some() {
                self.stats.snapshots_sent += 1;
            }
            match self.network.fate(&mut self.rng, from, to, envelope.message.kind().name()) {
                Fate::Lost(_) => {
                    self.stats.drops += 1;
                    if snapshot.is_some() {
                        self.schedule_report(from, to, false);
                    }
                }
                Fate::Arrives(delays) => {
                    self.stats.duplicates += delays.len() as u64 - 1;
                    for delay in delays {
                        let event = Event::Deliver { envelope: envelope.clone(), snapshot: snapshot.clone() };
                        self.queue.push(self.now + delay, event);
                    }
                }
            }
        }
    }

    /// After every event: the checker looks at every running node.
    fn observe(&mut self) -> Check {
        for (&id, node) in &self.nodes {
            let Some(running) = node.running() else { continue };
            if let Some(term) = self.checker.observe(id, &running.raft)? {
                self.trace.note(|| format!("{id} is leader of term {term}"));
            }
        }
        Ok(())
    }

    /// Every running node that believes it leads (an old leader may not know it was
    /// deposed), in id order.
    pub(crate) fn leaders(&self) -> Vec<NodeId> {
        let running = self.nodes.iter().filter_map(|(&id, node)| node.running().map(|running| (id, &running.raft)));
        running.filter(|(_, raft)| raft.role() == RoleName::Leader).map(|(id, _)| id).collect()
    }

    /// The running node that leads the highest term, if any.
    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, node)| node.running().map(|running| (id, &running.raft)))
            .filter(|(_, raft)| raft.role() == RoleName::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(id, _)| id)
    }

    /// When `id` resumes, if it is paused now.
    pub(crate) fn paused_until(&self, id: NodeId) -> Option<u64> {
        self.nodes.get(&id).and_then(|node| node.paused_until).filter(|&until| until > self.now)
    }

    pub(crate) fn running_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, node)| node.running().is_some()).map(|(&id, _)| id).collect()
    }

    /// `[n2 leader t3 commit=5 applied=5 log=3..7@3]`, or `[n2 down]`.
    pub(crate) fn describe_node(&self, id: NodeId) -> String {
        let Some(running) = self.nodes.get(&id).and_then(SimNode::running) else { return format!("[{id} down]") };
        let status = running.raft.status();
        format!(
            "[{id} {} t{} commit={} applied={} log={}..{} {}]",
            status.role,
            status.term,
            status.commit,
            running.state.applied,
            status.first_index,
            status.last_log_id,
            status.membership
        )
    }

    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.elections = self.checker.elections();
        (stats.proposals_committed, stats.membership_changes) = self.checker.applied_counts();
        stats
    }

    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    pub fn into_trace(self) -> Vec<String> {
        self.trace.into_lines()
    }
}
