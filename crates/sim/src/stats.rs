//! Counts of what a run exercised. They are summed over seeds and printed, and a test
//! asserts they are not zero, so the simulator cannot quietly stop testing something.

use std::ops::AddAssign;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events taken off the queue (ticks, deliveries, client operations, faults, ...).
    pub events: u64,
    /// Proposals a leader accepted, and distinct commands applied (committed).
    pub proposals: u64,
    pub proposals_committed: u64,
    /// Reads served (checked for linearizability), and reads that failed (leader changed).
    pub reads: u64,
    pub read_errors: u64,
    /// Terms that had a leader.
    pub elections: u64,
    /// Crashes, of which in the middle of handling a `Ready`; restarts.
    pub crashes: u64,
    pub mid_ready_crashes: u64,
    pub restarts: u64,
    /// Partitions cut (two-way or one-way), and process pauses.
    pub partitions: u64,
    pub pauses: u64,
    /// Messages lost (dropped or on a cut link, or to a node that was down) and duplicated.
    pub drops: u64,
    pub duplicates: u64,
    /// Snapshots taken by compaction, sent, and installed from a leader.
    pub compactions: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    /// Membership changes committed and applied (adds, promotions, removals).
    pub membership_changes: u64,
    /// Leader transfers the leader accepted.
    pub transfers: u64,
    /// Virtual milliseconds the liveness phase needed (summed).
    pub liveness_ms: u64,
}

impl AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.events += other.events;
        self.proposals += other.proposals;
        self.proposals_committed += other.proposals_committed;
        self.reads += other.reads;
        self.read_errors += other.read_errors;
        self.elections += other.elections;
        self.crashes += other.crashes;
        self.mid_ready_crashes += other.mid_ready_crashes;
        self.restarts += other.restarts;
        self.partitions += other.partitions;
        self.pauses += other.pauses;
        self.drops += other.drops;
        self.duplicates += other.duplicates;
        self.compactions += other.compactions;
        self.snapshots_sent += other.snapshots_sent;
        self.snapshots_installed += other.snapshots_installed;
        self.membership_changes += other.membership_changes;
        self.transfers += other.transfers;
        self.liveness_ms += other.liveness_ms;
    }
}
