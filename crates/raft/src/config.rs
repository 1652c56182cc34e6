//! Settings of one node's consensus core. All durations are in ticks; the driver decides
//! how long a tick is.

use crate::types::{Index, NodeId};

/// The settings of one node's core; [`Config::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// A leader sends heartbeats every this many ticks. Default 5.
    pub heartbeat_interval_ticks: u32,
    /// The election timeout is drawn from `[election_timeout_ticks, 2 * election_timeout_ticks)`
    /// for each wait (Raft §5.2). It must exceed the heartbeat interval. Default 30.
    pub election_timeout_ticks: u32,
    /// Campaign with a pre-vote round first, so a node that was cut off does not disrupt
    /// the cluster when it comes back (thesis §9.6). Default on.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and
    /// voters ignore vote requests while they hear from a leader (thesis §6.2, §4.2.3).
    /// Default on.
    pub check_quorum: bool,
    /// Serve reads from the leader's lease instead of a heartbeat round. Needs
    /// `check_quorum` and clocks that run at about the same rate (thesis §6.4.1). Default off.
    pub lease_reads: bool,
    /// At most this many `AppendEntries` in flight to one follower. Default 64.
    pub max_inflight: usize,
    /// At most this many bytes of entries in flight to one follower. Default 8 MiB.
    pub max_inflight_bytes: u64,
    /// At most this many bytes of entries in one `AppendEntries`. Default 1 MiB.
    pub max_append_bytes: u64,
    /// Proposals are refused while the leader holds this many bytes of uncommitted entries.
    /// Default 64 MiB.
    pub max_uncommitted_bytes: u64,
    /// At most this many bytes of committed entries in one `Ready`. Default 8 MiB.
    pub max_committed_bytes_per_ready: u64,
    /// The index up to which the state machine has already applied (a durable state
    /// machine that restarts). Entries up to here are not handed out again. Default 0.
    pub applied: Index,
    /// Seed of the PRNG that randomizes election timeouts. Give each node its own.
    pub seed: u64,
}

impl Config {
    /// Defaults for node `id`, seeded by the id.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
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
            seed: id.0,
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval_ticks == 0 {
            return Err("heartbeat_interval_ticks must be at least 1".into());
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(format!(
                "election_timeout_ticks ({}) must be greater than heartbeat_interval_ticks ({})",
                self.election_timeout_ticks, self.heartbeat_interval_ticks
            ));
        }
        if self.lease_reads && !self.check_quorum {
            return Err("lease_reads needs check_quorum".into());
        }
        if self.max_inflight == 0 || self.max_inflight_bytes == 0 || self.max_append_bytes == 0 {
            return Err("max_inflight, max_inflight_bytes and max_append_bytes must be positive".into());
        }
        Ok(())
    }
}
