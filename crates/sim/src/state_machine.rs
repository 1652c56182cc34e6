//! The replicated state machine the simulator applies committed entries to. It is as
//! simple as can still be checked: a running hash of everything applied, the count of
//! commands and the last command. Two nodes that applied the same entries in the same order
//! hold equal states, and any divergence (a wrong entry, a lost entry, a bad snapshot)
//! changes the hash, which the checker compares against the cluster's one true history.

use bytes::Bytes;
use skiff_raft::{Entry, Index, LogId, Membership, Payload};

/// The state after applying every entry up to `applied`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// The index of the last entry applied (or restored from a snapshot).
    pub applied: Index,
    /// FNV-1a over every applied entry's index and payload, in order.
    pub hash: u64,
    /// How many commands (not empty or membership entries) were applied.
    pub commands: u64,
    /// The last command applied: the "value" a read returns.
    pub last_command: Option<Bytes>,
}

/// What a node's snapshot holds: the state machine at `last_log_id`. In a real runtime this
/// is a file; here it is a value in the node's durable snapshot store, and it travels with
/// `InstallSnapshot` through the simulated network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    pub last_log_id: LogId,
    pub state: StateMachine,
}

impl StateMachine {
    /// Applies one entry. The caller checks that it is the next one.
    pub fn apply(&mut self, entry: &Entry) {
        self.applied = entry.index();
        self.hash = mix_entry(self.hash, entry);
        if let Payload::Command(data) = &entry.payload {
            self.commands += 1;
            self.last_command = Some(data.clone());
        }
    }

    /// The snapshot of the current state, taken at `last_log_id` (the applied entry).
    pub fn snapshot(&self, last_log_id: LogId) -> SnapshotData {
        SnapshotData { last_log_id, state: self.clone() }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The hash after applying `entry` to a state whose hash is `hash`.
fn mix_entry(hash: u64, entry: &Entry) -> u64 {
    let hash = fnv(hash ^ FNV_OFFSET, &entry.index().0.to_le_bytes());
    match &entry.payload {
        Payload::Empty => fnv(hash, b"E"),
        Payload::Command(data) => fnv(fnv(hash, b"C"), data),
        Payload::Membership(membership) => mix_membership(fnv(hash, b"M"), membership),
    }
}

fn mix_membership(mut hash: u64, membership: &Membership) -> u64 {
    for id in &membership.voters {
        hash = fnv(hash, &id.0.to_le_bytes());
    }
    hash = fnv(hash, b"|");
    for id in &membership.learners {
        hash = fnv(hash, &id.0.to_le_bytes());
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_raft::Term;

    fn command(index: u64, data: &'static str) -> Entry {
        Entry { log_id: LogId::new(Term(1), Index(index)), payload: Payload::Command(Bytes::from(data)) }
    }

    #[test]
    fn same_entries_same_state_different_entries_different_hash() {
        let mut one = StateMachine::default();
        let mut two = StateMachine::default();
        one.apply(&command(1, "a"));
        two.apply(&command(1, "a"));
        assert_eq!(one, two);
        one.apply(&command(2, "b"));
        two.apply(&command(2, "c"));
        assert_ne!(one.hash, two.hash);
        assert_eq!(one.commands, 2);
        assert_eq!(one.last_command, Some(Bytes::from("b")));
    }
}
