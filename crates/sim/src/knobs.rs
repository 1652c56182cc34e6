//! The settings one seed runs with, all drawn from the seed: the core's options (so every
//! mode, pre-vote or not, check-quorum or not, leases or not, is exercised), its flow-control
//! limits (small ones push it into paths that large ones never reach), and how often the
//! workload and the faults strike.

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use skiff_raft::{Config, Index, NodeId};

use crate::network::NetworkFaults;

/// Virtual milliseconds per tick. Every node ticks at this period, each at its own phase.
pub const TICK_MS: u64 = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct Knobs {
    pub heartbeat_ticks: u32,
    pub election_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub lease_reads: bool,
    pub max_inflight: usize,
    pub max_append_bytes: u64,
    pub max_committed_bytes_per_ready: u64,
    pub max_uncommitted_bytes: u64,
    pub network: NetworkFaults,
    /// The chance that a node crashes while handling one `Ready` (before its sync, after it,
    /// halfway through sending, or before `advance`).
    pub mid_ready_crash_rate: f64,
    /// Mean virtual time between two client operations, and between two faults.
    pub client_interval_ms: u64,
    pub fault_interval_ms: u64,
    /// How long a crashed node stays down.
    pub downtime_ms: (u64, u64),
    /// Relative weights of the client operations.
    pub workload: Workload,
}

/// Relative weights of the client operations: a balanced mix, a read-heavy one (reads race
/// leader changes), and a churning one (membership changes and transfers all the time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub propose: u32,
    pub read: u32,
    pub membership: u32,
    pub transfer: u32,
    pub compact: u32,
}

impl Workload {
    const PROFILES: [Workload; 3] = [
        Workload { propose: 55, read: 20, membership: 8, transfer: 4, compact: 13 },
        Workload { propose: 30, read: 50, membership: 4, transfer: 6, compact: 10 },
        Workload { propose: 35, read: 15, membership: 20, transfer: 15, compact: 15 },
    ];

    pub fn total(&self) -> u32 {
        self.propose + self.read + self.membership + self.transfer + self.compact
    }
}

/// One of `choices`, uniformly.
pub(crate) fn pick<T: Copy>(rng: &mut ChaCha8Rng, choices: &[T]) -> T {
    choices[rng.random_range(0..choices.len())]
}

impl Knobs {
    pub fn draw(rng: &mut ChaCha8Rng) -> Knobs {
        let check_quorum = rng.random_bool(0.5);
        Knobs {
            heartbeat_ticks: rng.random_range(2..=3),
            election_ticks: 10,
            pre_vote: rng.random_bool(0.5),
            check_quorum,
            lease_reads: check_quorum && rng.random_bool(0.5),
            max_inflight: pick(rng, &[1, 2, 4, 64]),
            max_append_bytes: pick(rng, &[40, 100, 300, 1 << 20]),
            max_committed_bytes_per_ready: pick(rng, &[40, 100, 8 << 20]),
            max_uncommitted_bytes: pick(rng, &[300, 64 << 20]),
            network: NetworkFaults::draw(rng),
            mid_ready_crash_rate: pick(rng, &[0.0, 0.0005, 0.002]),
            client_interval_ms: pick(rng, &[3, 8, 20]),
            fault_interval_ms: pick(rng, &[60, 150, 400]),
            downtime_ms: pick(rng, &[(10, 100), (50, 600)]),
            workload: pick(rng, &Workload::PROFILES),
        }
    }

    /// The core's configuration for node `id`, with its own election-timeout seed.
    pub fn config(&self, id: NodeId, seed: u64) -> Config {
        Config {
            heartbeat_interval_ticks: self.heartbeat_ticks,
            election_timeout_ticks: self.election_ticks,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            lease_reads: self.lease_reads,
            max_inflight: self.max_inflight,
            max_append_bytes: self.max_append_bytes,
            max_committed_bytes_per_ready: self.max_committed_bytes_per_ready,
            max_uncommitted_bytes: self.max_uncommitted_bytes,
            applied: Index(0),
            seed,
            ..Config::new(id)
        }
    }

    /// The minimum election timeout in virtual milliseconds.
    pub fn election_timeout_ms(&self) -> u64 {
        u64::from(self.election_ticks) * TICK_MS
    }
}

impl fmt::Display for Knobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |flag: bool| if flag { "on" } else { "off" };
        write!(
            f,
            "pre_vote={} check_quorum={} lease_reads={} heartbeat={}t election={}t max_inflight={} \
             max_append_bytes={} max_committed_bytes={} max_uncommitted_bytes={} drop={} dup={} slow={} \
             latency<={}ms slow_kind={} mid_ready_crash={} client_every~{}ms fault_every~{}ms workload={:?}",
            on(self.pre_vote),
            on(self.check_quorum),
            on(self.lease_reads),
            self.heartbeat_ticks,
            self.election_ticks,
            self.max_inflight,
            self.max_append_bytes,
            self.max_committed_bytes_per_ready,
            self.max_uncommitted_bytes,
            self.network.drop_rate,
            self.network.duplicate_rate,
            self.network.slow_rate,
            self.network.max_latency_ms,
            self.network.slow_kind.unwrap_or("none"),
            self.mid_ready_crash_rate,
            self.client_interval_ms,
            self.fault_interval_ms,
            self.workload,
        )
    }
}
