//! The leader's view of one follower's log: how far it matches, what to send next, and how
//! much is in flight. A small pure module (no messages, no log access).
//!
//! Invariants: `match_index < next_index`; in `Replicate`, the in-flight batches end at
//! strictly increasing indexes, all above `match_index` and below `next_index`.

use std::collections::VecDeque;

use crate::types::Index;

/// How the leader replicates to one follower (the states of etcd's `tracker/progress.go`,
/// for the optimisation at the end of Raft §5.3 and pipelining).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// We don't know where the follower's log agrees with ours: send one `AppendEntries`
    /// at a time and wait for its answer.
    Probe {
        /// One probe is out, unanswered: send nothing more until an answer or a sign of
        /// life (a heartbeat answer) unpauses it.
        paused: bool,
    },
    /// The follower accepted our last probe: stream batches without waiting, up to the
    /// in-flight limits (pipelining).
    Replicate,
    /// The follower needs a snapshot of everything up to `index`; wait for it to install
    /// it, for the runtime's report on the stream, or for the attempt to time out.
    Snapshot {
        /// The last index the snapshot sent covers (above the follower's `match_index`).
        index: Index,
        /// Ticks since the snapshot was sent; after an election timeout the leader gives
        /// up waiting and probes again.
        elapsed_ticks: u32,
    },
}

/// Per-follower replication progress, kept by the leader.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log. 0 when nothing is known.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// How we replicate to this follower now.
    pub state: ProgressState,
    /// The last index of each batch in flight, and its size in bytes, oldest first. Empty
    /// outside `Replicate`; at most `Config::max_inflight` batches.
    inflight: VecDeque<(Index, u64)>,
    /// The sum of the sizes in `inflight`; sending stops at `Config::max_inflight_bytes`.
    inflight_bytes: u64,
    /// Whether the follower answered anything since the last check-quorum round.
    pub recent_active: bool,
    /// The highest heartbeat round the follower acknowledged (for ReadIndex and leases).
    pub acked_heartbeat_round: u64,
}

impl Progress {
    /// Progress of a follower about which nothing is known, for a leader whose log ends at
    /// `last_index`: probe from the end (Raft §5.3: nextIndex starts after the leader's log).
    pub fn new(last_index: Index) -> Progress {
        Progress {
            match_index: Index(0),
            next_index: last_index.next(),
            state: ProgressState::Probe { paused: false },
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            acked_heartbeat_round: 0,
        }
    }

    /// Whether we may send this follower another `AppendEntries` now.
    pub fn can_send(&self, max_inflight: usize, max_inflight_bytes: u64) -> bool {
        match self.state {
            ProgressState::Probe { paused } => !paused,
            ProgressState::Replicate => self.inflight.len() < max_inflight && self.inflight_bytes < max_inflight_bytes,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Records that we sent entries up to `last_sent` (`bytes` in all); `last_sent` may be
    /// `next_index - 1` for an empty probe.
    pub fn sent(&mut self, last_sent: Index, bytes: u64) {
        match &mut self.state {
            ProgressState::Probe { paused } => *paused = true,
            ProgressState::Replicate => {
                if last_sent >= self.next_index {
                    self.inflight.push_back((last_sent, bytes));
                    self.inflight_bytes += bytes;
                    self.next_index = last_sent.next();
                }
            }
            // Invariant: only our own bug can break this, because `can_send` is false while a
            // snapshot is pending, and the leader asks it before every send.
            ProgressState::Snapshot { .. } => unreachable!("no entries are sent while a snapshot is pending"),
        }
        self.assert_invariants();
    }

    /// The follower's log matches ours up to `index`. Returns whether that is news.
    pub fn matched(&mut self, index: Index) -> bool {
        if index <= self.match_index {
            // A stale or duplicated acknowledgement; still unpause a probe.
            if let ProgressState::Probe { paused } = &mut self.state {
                *paused = false;
            }
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index.next());
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        match self.state {
            ProgressState::Probe { .. } => self.become_replicate(),
            ProgressState::Snapshot { index: pending, .. } if index >= pending => self.become_probe(),
            _ => {}
        }
        self.assert_invariants();
        true
    }

    /// The follower rejected an `AppendEntries` after `rejected_prev`; `retry_from` is where
    /// the leader's and follower's logs may agree, from the hint. Returns false for a stale
    /// rejection, which changes nothing.
    pub fn rejected(&mut self, rejected_prev: Index, retry_from: Index) -> bool {
        let stale = match self.state {
            ProgressState::Replicate => rejected_prev <= self.match_index,
            ProgressState::Probe { .. } => rejected_prev != self.next_index.prev(),
            ProgressState::Snapshot { .. } => true,
        };
        if stale {
            return false;
        }
        self.become_probe();
        self.next_index = retry_from.max(self.match_index.next()).min(rejected_prev.max(self.match_index.next()));
        self.assert_invariants();
        true
    }

    /// Lets one more `AppendEntries` through after a sign of life from a follower that lags:
    /// a probe or a batch may have been lost, and nothing else would resend it.
    /// In `Replicate`, only a full pipeline is unblocked (by forgetting its oldest batch):
    /// otherwise the next send goes out anyway.
    pub fn unblock(&mut self, max_inflight: usize, max_inflight_bytes: u64) {
        let full = !self.can_send(max_inflight, max_inflight_bytes);
        match &mut self.state {
            ProgressState::Probe { paused } => *paused = false,
            ProgressState::Replicate => {
                if full && let Some((_, bytes)) = self.inflight.pop_front() {
                    self.inflight_bytes -= bytes;
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Wait for a snapshot of everything up to `index` to be installed.
    pub fn become_snapshot(&mut self, index: Index) {
        self.reset_inflight();
        self.state = ProgressState::Snapshot { index, elapsed_ticks: 0 };
    }

    /// The snapshot stream failed: probe again from after `match_index` (so the next probe
    /// finds the entries compacted and sends the snapshot again), paused until the follower
    /// shows a sign of life (`unblock`).
    pub fn snapshot_failed(&mut self) {
        self.reset_inflight();
        self.next_index = self.match_index.next();
        self.state = ProgressState::Probe { paused: true };
        self.assert_invariants();
    }

    /// Go back to probing: from after the pending snapshot (delivered or timed out: the
    /// follower may hold it), or from after `match_index` (a rejection, or an unreachable
    /// follower).
    pub fn become_probe(&mut self) {
        self.reset_inflight();
        self.next_index = match self.state {
            ProgressState::Snapshot { index, .. } => self.match_index.max(index).next(),
            _ => self.match_index.next(),
        };
        self.state = ProgressState::Probe { paused: false };
    }

    fn become_replicate(&mut self) {
        self.reset_inflight();
        self.next_index = self.match_index.next();
        self.state = ProgressState::Replicate;
    }

    fn reset_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Asserts this progress's invariants (see the module doc); runs after every change.
    pub fn assert_invariants(&self) {
        assert!(
            self.match_index < self.next_index,
            "match {} must be below next {}",
            self.match_index,
            self.next_index
        );
        let mut previous = self.match_index;
        for &(last, _) in &self.inflight {
            assert!(last > previous && last < self.next_index, "in-flight batches out of order");
            previous = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_until_answered_then_pipelines() {
        let mut progress = Progress::new(Index(10));
        assert!(progress.can_send(2, 100));
        progress.sent(Index(10), 0);
        assert!(!progress.can_send(2, 100), "a probe waits for its answer");
        assert!(progress.matched(Index(10)));
        assert_eq!(progress.state, ProgressState::Replicate);
        progress.sent(Index(12), 10);
        progress.sent(Index(14), 10);
        assert_eq!(progress.next_index, Index(15));
        assert!(!progress.can_send(2, 100), "two batches in flight is the limit");
        progress.matched(Index(12));
        assert!(progress.can_send(2, 100));
    }

    #[test]
    fn byte_limit_stops_the_pipeline() {
        let mut progress = Progress::new(Index(0));
        progress.matched(Index(0));
        progress.state = ProgressState::Replicate;
        progress.sent(Index(1), 60);
        progress.sent(Index(2), 60);
        assert!(!progress.can_send(10, 100));
    }

    #[test]
    fn a_failed_snapshot_probes_from_the_match_paused_and_a_delivered_one_from_after_it() {
        let mut failed = Progress::new(Index(20));
        failed.matched(Index(3));
        failed.become_snapshot(Index(15));
        failed.snapshot_failed();
        assert_eq!(failed.state, ProgressState::Probe { paused: true });
        assert_eq!(failed.next_index, Index(4), "the follower holds nothing new");
        assert!(!failed.can_send(2, 100), "wait for a sign of life");
        failed.unblock(2, 100);
        assert!(failed.can_send(2, 100));

        let mut delivered = Progress::new(Index(20));
        delivered.matched(Index(3));
        delivered.become_snapshot(Index(15));
        delivered.become_probe();
        assert_eq!(delivered.state, ProgressState::Probe { paused: false });
        assert_eq!(delivered.next_index, Index(16));
    }

    #[test]
    fn rejection_goes_back_to_probing_at_the_hint_but_never_below_match() {
        let mut progress = Progress::new(Index(20));
        progress.matched(Index(5));
        progress.sent(Index(20), 100);
        assert!(progress.rejected(Index(15), Index(8)));
        assert_eq!(progress.state, ProgressState::Probe { paused: false });
        assert_eq!(progress.next_index, Index(8));
        assert!(!progress.rejected(Index(3), Index(1)), "a rejection below match is stale");
        assert!(progress.rejected(Index(7), Index(1)));
        assert_eq!(progress.next_index, Index(6));
    }
}
