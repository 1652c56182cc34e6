//! The clients: proposals with unique payloads, linearizable reads, membership changes,
//! leader transfers and compactions, sent to the current leader or to a random node (a
//! refusal such as `NotLeader` is an ordinary answer; any other error is a violation).

use bytes::Bytes;
use rand::Rng;
use skiff_raft::{Error, MembershipChange, NodeId, ReadId};

use crate::checker::{Check, Violation};
use crate::sim::{Event, Phase, Sim};

/// How many voters the workload always leaves in the cluster.
const MIN_VOTERS: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Operation {
    Propose,
    Read,
    Membership,
    Transfer,
    Compact,
}

/// Whether `error` is an answer a correct node may give a client.
fn is_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::NotLeader { .. }
            | Error::TransferInProgress { .. }
            | Error::TooManyUncommitted { .. }
            | Error::LeaderNotReady { .. }
            | Error::MembershipChangePending { .. }
            | Error::InvalidMembershipChange(_)
            | Error::NotAVoter(_)
    )
}

/// What a node answered a client: the value when accepted, and the answer for the trace.
/// An error that is not a refusal is a violation.
fn accepted<T>(node: NodeId, what: &str, result: Result<T, Error>) -> Result<(Option<T>, String), Violation> {
    match result {
        Ok(value) => Ok((Some(value), "accepted".to_string())),
        Err(error) if is_refusal(&error) => Ok((None, format!("refused: {error}"))),
        Err(error) => Err(Violation::new("Unexpected error", format!("{node}: {what}: {error}"))),
    }
}

impl Sim {
    /// One client operation, then the next one is scheduled.
    pub(crate) fn client_operation(&mut self) -> Check {
        if self.phase != Phase::Chaos {
            return Ok(());
        }
        let operation = self.pick_operation();
        if let Some(target) = self.pick_target() {
            match operation {
                Operation::Propose => self.propose(target)?,
                Operation::Read => self.read(target)?,
                Operation::Membership => self.change_membership(target)?,
                Operation::Transfer => self.transfer(target)?,
                Operation::Compact => self.compact(target)?,
            }
        }
        let next = self.rng.random_range(1..=2 * self.knobs.client_interval_ms);
        self.queue.push(self.now + next, Event::Client);
        Ok(())
    }

    /// An operation drawn by the seed's workload weights.
    fn pick_operation(&mut self) -> Operation {
        let weights = self.knobs.workload;
        let choices = [
            (weights.propose, Operation::Propose),
            (weights.read, Operation::Read),
            (weights.membership, Operation::Membership),
            (weights.transfer, Operation::Transfer),
        ];
        let mut roll = self.rng.random_range(0..weights.total());
        for (weight, operation) in choices {
            if roll < weight {
                return operation;
            }
            roll -= weight;
        }
        Operation::Compact
    }

    /// Usually a node that believes it leads (clients that still talk to a deposed leader
    /// are where stale reads come from), sometimes any running node; a paused process takes
    /// no requests.
    fn pick_target(&mut self) -> Option<NodeId> {
        let to_leader = self.rng.random_bool(0.75);
        let random = self.random_running();
        let leaders = self.leaders();
        let leader = (!leaders.is_empty()).then(|| leaders[self.rng.random_range(0..leaders.len())]);
        let target = if to_leader { leader.or(random) } else { random };
        target.filter(|&id| self.paused_until(id).is_none())
    }

    fn propose(&mut self, target: NodeId) -> Check {
        self.next_command += 1;
        let payload = Bytes::from(format!("s{}c{}", self.seed, self.next_command));
        let raft = &mut self.running_mut(target).raft;
        let (result, answer) = accepted(target, "propose", raft.propose(payload.clone()))?;
        raft.assert_invariants();
        let now = self.now;
        let at = result.map(|proposal| format!(" at {}", proposal.log_id)).unwrap_or_default();
        self.trace.begin(|| format!("t={now} {target} propose {payload:?} -> {answer}{at}"));
        if result.is_some() {
            self.stats.proposals += 1;
        }
        self.drive(target)
    }

    fn read(&mut self, target: NodeId) -> Check {
        self.next_read += 1;
        let id = ReadId(self.next_read);
        let bound = self.checker.max_commit();
        let incarnation = self.nodes[&target].incarnation;
        self.reads.invoke(id, target, incarnation, bound);
        let raft = &mut self.running_mut(target).raft;
        let (result, answer) = accepted(target, "read_index", raft.read_index(id))?;
        raft.assert_invariants();
        if result.is_none() {
            self.reads.cancel(id);
        }
        let now = self.now;
        self.trace.begin(|| format!("t={now} {target} read r{} (commit bound {bound}) -> {answer}", id.0));
        self.drive(target)
    }

    /// Adds a spare as learner (or straight as voter), promotes a learner, or removes a node
    /// while keeping at least three voters.
    fn change_membership(&mut self, target: NodeId) -> Check {
        let membership = self.running_mut(target).raft.membership().clone();
        let mut changes = Vec::new();
        for &spare in self.spares.iter().filter(|id| !membership.contains(**id) && !self.retired.contains(id)) {
            // Mostly the way the design says (learner first), sometimes straight to voter.
            // With an address, as Skiff adds nodes, so memberships carry some.
            let address = Some(format!("raft=sim:{}", spare.0));
            let learner = MembershipChange::AddLearner { id: spare, address: address.clone() };
            changes.extend([learner.clone(), learner]);
            changes.push(MembershipChange::AddVoter { id: spare, address });
        }
        for &learner in &membership.learners {
            changes.extend([MembershipChange::Promote(learner), MembershipChange::Remove(learner)]);
        }
        if membership.voters.len() > MIN_VOTERS {
            changes.extend(membership.voters.iter().map(|&voter| MembershipChange::Remove(voter)));
        }
        if changes.is_empty() {
            return Ok(());
        }
        let change = changes.swap_remove(self.rng.random_range(0..changes.len()));
        let raft = &mut self.running_mut(target).raft;
        let (result, answer) = accepted(target, "propose_membership", raft.propose_membership(change.clone()))?;
        raft.assert_invariants();
        if let (Some(_), MembershipChange::Remove(removed)) = (result, &change) {
            let removed = *removed;
            self.retired.insert(removed);
        }
        let now = self.now;
        self.trace.begin(|| format!("t={now} {target} membership {change:?} -> {answer}"));
        self.drive(target)
    }

    fn transfer(&mut self, target: NodeId) -> Check {
        let membership = self.running_mut(target).raft.membership();
        let voters: Vec<NodeId> = membership.voters.iter().copied().filter(|&id| id != target).collect();
        if voters.is_empty() {
            return Ok(());
        }
        let to = voters[self.rng.random_range(0..voters.len())];
        let raft = &mut self.running_mut(target).raft;
        let (result, answer) = accepted(target, "transfer_leader", raft.transfer_leader(to))?;
        raft.assert_invariants();
        if result.is_some() {
            self.stats.transfers += 1;
        }
        let now = self.now;
        self.trace.begin(|| format!("t={now} {target} transfer leadership to {to} -> {answer}"));
        self.drive(target)
    }

    fn compact(&mut self, target: NodeId) -> Check {
        let node = self.nodes.get_mut(&target).expect("targets are known nodes");
        if node.compact()? {
            self.stats.compactions += 1;
            let now = self.now;
            let applied = node.running().map(|running| running.state.applied);
            self.trace.begin(|| format!("t={now} {target} snapshot and compact at {applied:?}"));
        }
        self.drive(target)
    }

    fn running_mut(&mut self, id: NodeId) -> &mut crate::node::Running {
        self.nodes.get_mut(&id).and_then(|node| node.running_mut()).expect("the workload targets running nodes")
    }
}
