//! The liveness phase: once faults stop (links healed, crashed nodes restarted, a calm
//! network), a correct Raft elects a leader and commits again. Within a bounded virtual time
//! (50 election timeouts) a leader must exist and a fresh proposal must be applied on every
//! voter of its membership.

use bytes::Bytes;
use skiff_raft::{LogId, NodeId};

use crate::checker::{Check, Violation};
use crate::knobs::TICK_MS;
use crate::network::NetworkFaults;
use crate::sim::{Event, Phase, Sim};

/// How many minimum election timeouts the cluster gets to make progress.
const LIVENESS_TIMEOUTS: u64 = 50;

/// Proposals made by the liveness phase, and when it succeeded.
#[derive(Default)]
pub struct LivenessProbe {
    attempts: Vec<LogId>,
    last_attempt_ms: Option<u64>,
    done_at_ms: Option<u64>,
}

impl Sim {
    pub(crate) fn run_liveness(&mut self) -> Check {
        self.phase = Phase::Liveness;
        self.network.heal();
        self.network.faults = NetworkFaults::calm();
        for node in self.nodes.values_mut() {
            node.paused_until = None;
        }
        let now = self.now;
        self.trace.begin(|| format!("t={now} LIVENESS PHASE: faults stop, links healed, every node restarted"));
        self.trace.finish();
        let crashed: Vec<NodeId> =
            self.nodes.iter().filter(|(_, node)| node.running().is_none()).map(|(&id, _)| id).collect();
        for id in crashed {
            self.restart(id)?;
            self.trace.finish();
        }
        let start = self.now;
        let deadline = start + LIVENESS_TIMEOUTS * self.knobs.election_timeout_ms();
        self.queue.push(self.now + TICK_MS, Event::LivenessProbe);
        while self.liveness.done_at_ms.is_none() {
            let Some((time, event)) = self.queue.pop() else { break };
            if time > deadline {
                break;
            }
            self.step_event(time, event)?;
        }
        match self.liveness.done_at_ms {
            Some(done) => {
                self.stats.liveness_ms += done - start;
                Ok(())
            }
            None => Err(Violation::new("Liveness", self.describe_stuck_cluster(deadline - start))),
        }
    }

    /// Checks for success; otherwise proposes again when the last attempt is old.
    pub(crate) fn liveness_probe(&mut self) -> Check {
        let now = self.now;
        if self.liveness_satisfied() {
            self.trace.begin(|| format!("t={now} LIVENESS ok"));
            self.liveness.done_at_ms = Some(now);
            return Ok(());
        }
        let retry_after = 2 * self.knobs.election_timeout_ms();
        let due = self.liveness.last_attempt_ms.is_none_or(|last| now >= last + retry_after);
        if due && let Some(leader) = self.current_leader() {
            let payload = Bytes::from(format!("s{}live{}", self.seed, self.liveness.attempts.len()));
            let node = self.nodes.get_mut(&leader).and_then(|node| node.running_mut()).expect("leaders run");
            if let Ok(proposal) = node.raft.propose(payload) {
                node.raft.assert_invariants();
                self.trace.begin(|| format!("t={now} {leader} liveness proposal at {}", proposal.log_id));
                self.liveness.attempts.push(proposal.log_id);
                self.liveness.last_attempt_ms = Some(now);
                self.drive(leader)?;
            }
        }
        self.queue.push(now + TICK_MS, Event::LivenessProbe);
        Ok(())
    }

    /// A leader exists, and one of the liveness proposals is applied on all its voters.
    fn liveness_satisfied(&self) -> bool {
        let Some(leader) = self.current_leader() else { return false };
        let Some(leader_node) = self.nodes[&leader].running() else { return false };
        let voters = &leader_node.raft.membership().voters;
        self.liveness.attempts.iter().any(|&log_id| {
            self.checker.applied_log_id(log_id.index) == Some(log_id)
                && voters.iter().all(|voter| {
                    let node = self.nodes.get(voter).and_then(|node| node.running());
                    node.is_some_and(|node| node.state.applied >= log_id.index)
                })
        })
    }

    fn describe_stuck_cluster(&self, waited_ms: u64) -> String {
        let nodes: Vec<String> = self.nodes.keys().map(|&id| self.describe_node(id)).collect();
        format!(
            "no leader committed and applied a fresh proposal on every voter within {waited_ms} ms \
             ({LIVENESS_TIMEOUTS} election timeouts) after faults stopped; attempts {:?}; nodes: {}",
            self.liveness.attempts,
            nodes.join(" ")
        )
    }
}
