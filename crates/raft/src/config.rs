//! Settings of one node's consensus core. All durations are in ticks; the driver decides
//! how long a tick is.
//!
//! The settings every node of a cluster shares also make up the `[raft]` section of Skiff's
//! cluster file, which deserializes straight into [`Config`]: the file's keys are the field
//! names below, a missing key takes [`Config::default`]'s value, and [`Config::validate`]
//! is the one check they get. The per-node fields (`id`, `seed`, `applied`) are not in the
//! file.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{Index, NodeId};

/// How one node's consensus core behaves. Build it with [`Config::new`] (or take
/// [`Config::default`] as a template for the shared settings) and change fields as needed;
/// [`Raft::new`](crate::Raft::new) refuses a config that [`Config::validate`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id.
    #[serde(skip)]
    pub id: NodeId,
    /// A leader sends heartbeats every this many ticks, at least 1.
    /// (Older cluster files call it `heartbeat_ticks`.)
    #[serde(alias = "heartbeat_ticks")]
    pub heartbeat_interval_ticks: u32,
    /// The election timeout is drawn from `[election_timeout_ticks, 2 * election_timeout_ticks)`
    /// for each wait (Raft §5.2). It must exceed the heartbeat interval, or followers start
    /// elections under a healthy leader. (Older cluster files call it `election_ticks`.)
    #[serde(alias = "election_ticks")]
    pub election_timeout_ticks: u32,
    /// Campaign with a pre-vote round first, so a node that was cut off does not disrupt
    /// the cluster when it comes back (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and
    /// voters ignore vote requests while they hear from a leader (thesis §6.2, §4.2.3).
    pub check_quorum: bool,
    /// Serve reads from the leader's lease instead of a heartbeat round. Needs
    /// `check_quorum` and clocks that run at about the same rate (thesis §6.4.1).
    pub lease_reads: bool,
    /// At most this many `AppendEntries` in flight to one follower, at least 1.
    pub max_inflight: usize,
    /// At most this many bytes of entries in flight to one follower, at least 1.
    pub max_inflight_bytes: u64,
    /// At most this many bytes of entries in one `AppendEntries`, at least 1 (an entry
    /// larger than this still goes, alone).
    pub max_append_bytes: u64,
    /// Proposals are refused while the leader holds this many bytes of uncommitted
    /// entries, at least 1.
    pub max_uncommitted_bytes: u64,
    /// At most this many bytes of committed entries in one `Ready`, at least 1 (an entry
    /// larger than this still goes, alone).
    pub max_committed_bytes_per_ready: u64,
    /// The index up to which the state machine has already applied (a durable state
    /// machine that restarts). Entries up to here are not handed out again.
    #[serde(skip)]
    pub applied: Index,
    /// Seed of the PRNG that randomizes election timeouts. Give each node its own.
    #[serde(skip)]
    pub seed: u64,
}

/// The defaults: the one place they are written. `id`, `seed` and `applied` are 0; a node's
/// own config comes from [`Config::new`].
impl Default for Config {
    fn default() -> Config {
        Config {
            id: NodeId(0),
            heartbeat_interval_ticks: 5,
            election_timeout_ticks: 30,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            max_inflight: 64,
            max_inflight_bytes: 8 << 20,
            max_append_bytes: 1 << 20,
            max_uncommitted_bytes: 64 << 20,
            max_committed_bytes_per_ready: 8 << 20,
            applied: Index(0),
            seed: 0,
        }
    }
}

/// A setting [`Config::validate`] refuses. Each names the field (as the cluster file
/// spells it) and says what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InvalidConfig {
    /// A setting that must be at least 1 is 0.
    #[error("{field} is 0; it must be at least 1 (default {default})")]
    Zero {
        /// The field's name.
        field: &'static str,
        /// Its default value.
        default: u64,
    },
    /// `election_timeout_ticks` does not exceed `heartbeat_interval_ticks`.
    #[error(
        "election_timeout_ticks ({election_timeout_ticks}) must be greater than heartbeat_interval_ticks \
         ({heartbeat_interval_ticks}), or followers start elections under a healthy leader; the defaults are \
         {} and {}",
        Config::default().election_timeout_ticks,
        Config::default().heartbeat_interval_ticks
    )]
    ElectionTimeoutNotAboveHeartbeat {
        /// The configured election timeout.
        election_timeout_ticks: u32,
        /// The configured heartbeat interval.
        heartbeat_interval_ticks: u32,
    },
    /// `lease_reads` without `check_quorum`.
    #[error(
        "lease_reads is on but check_quorum is off; a lease is only safe when a leader steps down after \
         losing its majority (thesis §6.4.1): turn check_quorum on or lease_reads off"
    )]
    LeaseReadsWithoutCheckQuorum,
}

impl Config {
    /// The defaults for node `id`, seeded by the id.
    pub fn new(id: NodeId) -> Config {
        Config { id, seed: id.0, ..Config::default() }
    }

    /// The end of the range election timeouts are drawn from, `2 * election_timeout_ticks`:
    /// within this many ticks without a leader, some voter has started an election.
    pub fn max_election_timeout_ticks(&self) -> u32 {
        self.election_timeout_ticks.saturating_mul(2)
    }

    /// Checks that the settings make sense together; the first problem found, naming the
    /// field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let defaults = Config::default();
        let at_least_one: [(&'static str, u64, u64); 6] = [
            (
                "heartbeat_interval_ticks",
                self.heartbeat_interval_ticks.into(),
                defaults.heartbeat_interval_ticks.into(),
            ),
            ("max_inflight", self.max_inflight as u64, defaults.max_inflight as u64),
            ("max_inflight_bytes", self.max_inflight_bytes, defaults.max_inflight_bytes),
            ("max_append_bytes", self.max_append_bytes, defaults.max_append_bytes),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes, defaults.max_uncommitted_bytes),
            (
                "max_committed_bytes_per_ready",
                self.max_committed_bytes_per_ready,
                defaults.max_committed_bytes_per_ready,
            ),
        ];
        if let Some(&(field, _, default)) = at_least_one.iter().find(|(_, value, _)| *value == 0) {
            return Err(InvalidConfig::Zero { field, default });
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(InvalidConfig::ElectionTimeoutNotAboveHeartbeat {
                election_timeout_ticks: self.election_timeout_ticks,
                heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            });
        }
        if self.lease_reads && !self.check_quorum {
            return Err(InvalidConfig::LeaseReadsWithoutCheckQuorum);
        }
        Ok(())
    }
}
