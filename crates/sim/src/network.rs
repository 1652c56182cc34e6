//! The simulated network: every message is dropped, delayed by a random latency (so
//! messages overtake each other), sometimes duplicated, and lost on cut links. Links are
//! directed, so a cut can be one-way (a node that hears but is not heard, the classic way
//! to get a stale leader or a disruptive candidate).

use std::collections::BTreeSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use skiff_raft::NodeId;

use crate::knobs::pick;

/// How badly the network behaves during one seed. Rates are probabilities per message.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkFaults {
    pub drop_rate: f64,
    pub duplicate_rate: f64,
    /// The share of messages that take `slow_latency_ms` instead of the usual latency:
    /// long enough to arrive after an election timeout, from a term long gone.
    pub slow_rate: f64,
    /// Usual latency: uniform in `1..=max_latency_ms`.
    pub max_latency_ms: u64,
    pub slow_latency_ms: (u64, u64),
    /// One kind of message (`Message::kind`) that is slow half the time: a targeted delay
    /// reaches races that uniform faults almost never line up (a `TimeoutNow` that arrives
    /// after the transfer was given up, acknowledgements that trail their requests, ...).
    pub slow_kind: Option<&'static str>,
}

/// The kinds of message `slow_kind` may pick; `None` twice, so most seeds have no target.
const SLOW_KINDS: [Option<&str>; 12] = [
    None,
    None,
    Some("TimeoutNow"),
    Some("AppendEntries"),
    Some("AppendEntriesResponse"),
    Some("Heartbeat"),
    Some("HeartbeatResponse"),
    Some("RequestVote"),
    Some("RequestVoteResponse"),
    Some("InstallSnapshot"),
    Some("ReadIndex"),
    Some("ReadIndexResponse"),
];

impl NetworkFaults {
    /// A seeded mix: some seeds have a clean network, some a very lossy one.
    pub fn draw(rng: &mut ChaCha8Rng) -> NetworkFaults {
        NetworkFaults {
            drop_rate: pick(rng, &[0.0, 0.01, 0.05, 0.15]),
            duplicate_rate: pick(rng, &[0.0, 0.01, 0.05]),
            slow_rate: pick(rng, &[0.0, 0.005, 0.02, 0.1, 0.2]),
            max_latency_ms: rng.random_range(2..=20),
            slow_latency_ms: (50, 400),
            slow_kind: pick(rng, &SLOW_KINDS),
        }
    }

    /// The network of the liveness phase: nothing lost, nothing duplicated, short delays.
    pub fn calm() -> NetworkFaults {
        NetworkFaults {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            slow_rate: 0.0,
            max_latency_ms: 5,
            slow_latency_ms: (1, 1),
            slow_kind: None,
        }
    }
}

/// What happens to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The message never arrives; the reason is for the trace.
    Lost(&'static str),
    /// The message arrives after each of these delays (two delays: a duplicate).
    Arrives(Vec<u64>),
}

#[derive(Debug)]
pub struct Network {
    pub faults: NetworkFaults,
    /// Directed links that are cut: `(from, to)`.
    cuts: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Network {
        Network { faults, cuts: BTreeSet::new() }
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cuts.contains(&(from, to))
    }

    pub fn has_cuts(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// Decides what happens to a message of kind `kind` sent now from `from` to `to`.
    pub fn fate(&self, rng: &mut ChaCha8Rng, from: NodeId, to: NodeId, kind: &str) -> Fate {
        if self.is_cut(from, to) {
            return Fate::Lost("link cut");
        }
        if rng.random_bool(self.faults.drop_rate) {
            return Fate::Lost("dropped");
        }
        let targeted = self.faults.slow_kind == Some(kind) && rng.random_bool(0.5);
        let mut delays = vec![if targeted { self.slow_latency(rng) } else { self.latency(rng) }];
        if rng.random_bool(self.faults.duplicate_rate) {
            delays.push(self.latency(rng));
        }
        Fate::Arrives(delays)
    }

    fn latency(&self, rng: &mut ChaCha8Rng) -> u64 {
        if rng.random_bool(self.faults.slow_rate) {
            self.slow_latency(rng)
        } else {
            rng.random_range(1..=self.faults.max_latency_ms)
        }
    }

    fn slow_latency(&self, rng: &mut ChaCha8Rng) -> u64 {
        let (low, high) = self.faults.slow_latency_ms;
        rng.random_range(low..=high)
    }

    /// Cuts every link from `side` to the other nodes of `all`, and back unless `one_way`.
    pub fn cut(&mut self, side: &BTreeSet<NodeId>, all: &[NodeId], one_way: bool) {
        for &inside in side {
            for &outside in all.iter().filter(|id| !side.contains(id)) {
                self.cuts.insert((inside, outside));
                if !one_way {
                    self.cuts.insert((outside, inside));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }
}

/// A random non-empty proper subset of `all` (the side of a partition).
pub fn random_side(rng: &mut ChaCha8Rng, all: &[NodeId]) -> BTreeSet<NodeId> {
    loop {
        let side: BTreeSet<NodeId> = all.iter().copied().filter(|_| rng.random_bool(0.5)).collect();
        if !side.is_empty() && side.len() < all.len() {
            return side;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn one_way_cut_blocks_one_direction_only() {
        let mut network = Network::new(NetworkFaults::calm());
        let all = [NodeId(1), NodeId(2), NodeId(3)];
        network.cut(&BTreeSet::from([NodeId(1)]), &all, true);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(network.fate(&mut rng, NodeId(1), NodeId(2), "Heartbeat"), Fate::Lost("link cut"));
        assert!(matches!(network.fate(&mut rng, NodeId(2), NodeId(1), "Heartbeat"), Fate::Arrives(_)));
        network.heal();
        assert!(matches!(network.fate(&mut rng, NodeId(1), NodeId(2), "Heartbeat"), Fate::Arrives(_)));
    }
}
