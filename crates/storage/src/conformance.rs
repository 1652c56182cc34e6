//! One suite of tests that every [`Storage`] implementation must pass: append, overwrite
//! the tail, compact, read ranges within byte limits, term lookups, hard state, snapshot
//! installation, and restart after a crash.
//!
//! An implementation provides a [`Harness`] and instantiates the suite with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! mod disk {
//!     skiff_storage::conformance_tests!(my_harness());
//! }
//! ```
//!
//! "Restart" means what the implementation's crash means: for [`crate::MemStorage`],
//! [`crate::MemStorage::crash`] (everything not synced is lost); for
//! [`crate::DiskStorage`], dropping the store and opening the directory again. The tests
//! only rely on what every store promises: what was synced survives, and what survives of
//! the rest is a prefix of what was written.

use bytes::Bytes;
use skiff_raft::{
    Entry, HardState, Index, LogId, Membership, NodeId, Payload, SnapshotMeta, Storage, StorageError, Term,
};

/// How the suite creates, restarts and feeds one kind of store.
pub trait Harness {
    type Store: Storage;
    /// A new store of a new cluster whose initial membership is `membership`.
    fn create(&mut self, membership: Membership) -> Self::Store;
    /// The store as it comes back after a crash and a restart.
    fn restart(&mut self, store: Self::Store) -> Self::Store;
    /// Makes the state machine's snapshot for `meta` available, as a driver does before
    /// it calls `compact` or `install_snapshot` (a disk store needs the snapshot file).
    fn write_snapshot(&mut self, store: &mut Self::Store, meta: &SnapshotMeta);
}

/// Expands to one `#[test]` per case of the suite, each with a fresh harness from
/// `$harness` (an expression evaluated once per test).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            new_store_is_empty, append_and_read, read_within_byte_limits, overwrite_tail,
            overwrite_tail_across_many_entries, compact, compact_everything, hard_state_survives_restart,
            restart_keeps_what_was_synced, install_snapshot, install_snapshot_behind_the_log,
            long_log_survives_restart);
    };
    (@cases $harness:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let mut harness = $harness;
                $crate::conformance::$case(&mut harness);
            }
        )*
    };
}

fn voters() -> Membership {
    Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)])
}

/// An entry whose payload is derived from its index, so a read can be checked.
pub fn entry(index: u64, term: u64) -> Entry {
    let payload = match index % 7 {
        0 => Payload::Empty,
        3 => Payload::Membership(Membership::with_voters((1..=index % 5 + 1).map(NodeId))),
        _ => Payload::Command(Bytes::from(format!("command {index} of term {term}").repeat((index % 4 + 1) as usize))),
    };
    Entry { log_id: LogId::new(Term(term), Index(index)), payload }
}

/// A payload that says which entry it belongs to (`"<index>:<term>:"` and filler derived
/// from both), so a reader can tell an intact entry from a damaged or misplaced one.
pub fn checkable_payload(index: u64, term: u64) -> Bytes {
    let mut data = format!("{index}:{term}:").into_bytes();
    let len = 16 + (index * 31 + term * 7) % 200;
    data.extend((data.len() as u64..len).map(|at| (index.wrapping_mul(131) ^ at ^ term) as u8));
    Bytes::from(data)
}

/// Entries `from..=to`, all of `term`.
pub fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|index| entry(index, term)).collect()
}

fn read_all<S: Storage>(store: &S) -> Vec<Entry> {
    let (first, last) = (store.first_index(), store.last_index());
    store.entries(first, last.next(), u64::MAX).expect("reading the whole log")
}

fn assert_log<S: Storage>(store: &S, first: u64, expected: &[Entry]) {
    assert_eq!(store.first_index(), Index(first), "first index");
    assert_eq!(store.last_index(), Index(first + expected.len() as u64 - 1), "last index");
    assert_eq!(read_all(store), expected, "log contents");
    for entry in expected {
        assert_eq!(store.term(entry.index()).expect("term of a held entry"), entry.term(), "term of {}", entry.index());
    }
}

fn sync<S: Storage>(store: &mut S) {
    store.sync().expect("sync");
}

pub fn new_store_is_empty<H: Harness>(harness: &mut H) {
    let store = harness.create(voters());
    assert_eq!(store.first_index(), Index(1));
    assert_eq!(store.last_index(), Index(0));
    assert_eq!(store.term(Index(0)), Ok(Term(0)));
    assert_eq!(store.term(Index(1)), Err(StorageError::Unavailable(Index(1))));
    assert_eq!(store.hard_state(), HardState::default());
    assert_eq!(store.snapshot_meta(), SnapshotMeta { last_log_id: LogId::default(), membership: voters() });
    assert_eq!(store.entries(Index(1), Index(1), u64::MAX), Ok(Vec::new()));
    assert_eq!(store.last_log_id(), Ok(LogId::default()));
}

pub fn append_and_read<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    let mut log = entries(1, 5, 1);
    log.extend(entries(6, 10, 2));
    store.append(&log[..3]).expect("append");
    store.append(&log[3..]).expect("append");
    store.append(&[]).expect("an empty append does nothing");
    assert_log(&store, 1, &log);
    assert_eq!(store.entries(Index(3), Index(6), u64::MAX).expect("read"), log[2..5]);
    assert_eq!(store.entries(Index(4), Index(4), u64::MAX), Ok(Vec::new()));
    assert_eq!(store.entries(Index(9), Index(12), u64::MAX), Err(StorageError::Unavailable(Index(11))));
    assert_eq!(store.term(Index(11)), Err(StorageError::Unavailable(Index(11))));
    assert_eq!(store.last_log_id(), Ok(LogId::new(Term(2), Index(10))));
    sync(&mut store);
    let store = harness.restart(store);
    assert_log(&store, 1, &log);
}

pub fn read_within_byte_limits<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    let log = entries(1, 20, 1);
    store.append(&log).expect("append");
    sync(&mut store);
    let sizes: Vec<u64> = log[1..].iter().map(Entry::size_bytes).collect();
    let three = sizes[..3].iter().sum::<u64>();
    {
        let read = |max_bytes| store.entries(Index(2), Index(21), max_bytes).expect("read");
        assert_eq!(read(0), log[1..2], "at least one entry, whatever the limit");
        assert_eq!(read(three), log[1..4], "exactly three entries' worth");
        assert_eq!(read(three + sizes[3] - 1), log[1..4], "stops before passing the limit");
        assert_eq!(read(u64::MAX), log[1..]);
    }
    let store = harness.restart(store);
    assert_eq!(store.entries(Index(2), Index(21), three).expect("read"), log[1..4], "after restart");
}

pub fn overwrite_tail<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    store.append(&entries(1, 10, 1)).expect("append");
    sync(&mut store);
    // A new leader's entries conflict from index 6 on: the old tail goes.
    store.append(&entries(6, 8, 2)).expect("overwrite");
    let mut expected = entries(1, 5, 1);
    expected.extend(entries(6, 8, 2));
    assert_log(&store, 1, &expected);
    assert_eq!(store.term(Index(9)), Err(StorageError::Unavailable(Index(9))));
    store.append(&entries(9, 9, 3)).expect("append after the overwrite");
    expected.extend(entries(9, 9, 3));
    // Replacing the last entry only, and replacing with the same entries, work too.
    store.append(&entries(9, 9, 4)).expect("overwrite the last entry");
    expected[8] = entry(9, 4);
    store.append(&expected[6..]).expect("rewrite identical entries");
    sync(&mut store);
    assert_log(&store, 1, &expected);
    let store = harness.restart(store);
    assert_log(&store, 1, &expected);
}

pub fn overwrite_tail_across_many_entries<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    for batch in 0..40 {
        store.append(&entries(batch * 50 + 1, batch * 50 + 50, 1)).expect("append");
        sync(&mut store);
    }
    store.set_hard_state(HardState { term: Term(2), vote: Some(NodeId(2)), commit: Index(100) }).expect("hard state");
    store.append(&entries(2000, 2000, 1)).expect("rewrite the last entry");
    sync(&mut store);
    store.append(&entries(101, 150, 2)).expect("overwrite most of the log");
    sync(&mut store);
    let mut expected = entries(1, 100, 1);
    expected.extend(entries(101, 150, 2));
    assert_log(&store, 1, &expected);
    let store = harness.restart(store);
    assert_log(&store, 1, &expected);
    assert_eq!(store.hard_state(), HardState { term: Term(2), vote: Some(NodeId(2)), commit: Index(100) });
}

pub fn compact<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    store.append(&entries(1, 10, 1)).expect("append");
    store.append(&entries(11, 20, 2)).expect("append");
    sync(&mut store);
    let meta = SnapshotMeta { last_log_id: LogId::new(Term(2), Index(12)), membership: voters() };
    harness.write_snapshot(&mut store, &meta);
    store.compact(meta.clone()).expect("compact");
    assert_eq!(store.snapshot_meta(), meta);
    assert_log(&store, 13, &entries(13, 20, 2));
    assert_eq!(store.term(Index(12)), Ok(Term(2)), "the snapshot's last entry keeps its term");
    assert_eq!(store.term(Index(11)), Err(StorageError::Compacted(Index(11))));
    assert_eq!(store.entries(Index(12), Index(15), u64::MAX), Err(StorageError::Compacted(Index(12))));
    let older = SnapshotMeta { last_log_id: LogId::new(Term(1), Index(5)), membership: voters() };
    store.compact(older).expect("compacting below the snapshot does nothing");
    assert_eq!(store.first_index(), Index(13));
    store.append(&entries(21, 22, 2)).expect("append after compaction");
    sync(&mut store);
    let store = harness.restart(store);
    assert_eq!(store.snapshot_meta(), meta);
    assert_log(&store, 13, &entries(13, 22, 2));
}

pub fn compact_everything<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    store.append(&entries(1, 30, 1)).expect("append");
    sync(&mut store);
    let meta = SnapshotMeta { last_log_id: LogId::new(Term(1), Index(30)), membership: voters() };
    harness.write_snapshot(&mut store, &meta);
    store.compact(meta.clone()).expect("compact the whole log");
    assert_eq!((store.first_index(), store.last_index()), (Index(31), Index(30)));
    assert_eq!(store.last_log_id(), Ok(LogId::new(Term(1), Index(30))));
    sync(&mut store);
    let mut store = harness.restart(store);
    assert_eq!((store.first_index(), store.last_index()), (Index(31), Index(30)));
    store.append(&entries(31, 32, 3)).expect("append after compacting everything");
    sync(&mut store);
    let store = harness.restart(store);
    assert_log(&store, 31, &entries(31, 32, 3));
}

pub fn hard_state_survives_restart<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    let voted = HardState { term: Term(3), vote: Some(NodeId(2)), commit: Index(0) };
    store.set_hard_state(voted).expect("hard state");
    sync(&mut store);
    let mut store = harness.restart(store);
    assert_eq!(store.hard_state(), voted);
    store.append(&entries(1, 4, 3)).expect("append");
    let committed = HardState { commit: Index(4), ..voted };
    store.set_hard_state(committed).expect("hard state");
    sync(&mut store);
    let mut store = harness.restart(store);
    assert_eq!(store.hard_state(), committed);
    let next_term = HardState { term: Term(4), vote: None, commit: Index(4) };
    store.set_hard_state(next_term).expect("hard state");
    sync(&mut store);
    let store = harness.restart(store);
    assert_eq!(store.hard_state(), next_term);
}

pub fn restart_keeps_what_was_synced<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    let synced = HardState { term: Term(1), vote: Some(NodeId(1)), commit: Index(3) };
    store.append(&entries(1, 5, 1)).expect("append");
    store.set_hard_state(synced).expect("hard state");
    sync(&mut store);
    store.append(&entries(6, 9, 1)).expect("append, never synced");
    store.set_hard_state(HardState { commit: Index(8), ..synced }).expect("hard state, never synced");
    let store = harness.restart(store);
    let last = store.last_index().0;
    assert!((5..=9).contains(&last), "the log must keep what was synced and nothing unwritten (last {last})");
    assert_log(&store, 1, &entries(1, last, 1));
    let hard_state = store.hard_state();
    assert!(hard_state == synced || hard_state.commit == Index(8), "hard state {hard_state:?}");
    assert!(hard_state.commit.0 <= last, "a commit index past the log survived");
}

pub fn install_snapshot<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    store.append(&entries(1, 10, 1)).expect("append");
    sync(&mut store);
    let membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
    let meta = SnapshotMeta { last_log_id: LogId::new(Term(3), Index(20)), membership };
    harness.write_snapshot(&mut store, &meta);
    store.install_snapshot(meta.clone()).expect("install");
    store.set_hard_state(HardState { term: Term(3), vote: None, commit: Index(20) }).expect("hard state");
    sync(&mut store);
    assert_eq!(store.snapshot_meta(), meta);
    assert_eq!((store.first_index(), store.last_index()), (Index(21), Index(20)));
    assert_eq!(store.term(Index(20)), Ok(Term(3)));
    assert_eq!(store.term(Index(10)), Err(StorageError::Compacted(Index(10))));
    let mut store = harness.restart(store);
    assert_eq!(store.snapshot_meta(), meta);
    assert_eq!(store.last_index(), Index(20));
    assert_eq!(store.hard_state().commit, Index(20));
    store.append(&entries(21, 25, 3)).expect("append after the snapshot");
    sync(&mut store);
    let store = harness.restart(store);
    assert_log(&store, 21, &entries(21, 25, 3));
}

pub fn install_snapshot_behind_the_log<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    store.append(&entries(1, 10, 1)).expect("append");
    sync(&mut store);
    // The leader's snapshot ends at 6 with another term: our entries after it conflict.
    let meta = SnapshotMeta { last_log_id: LogId::new(Term(2), Index(6)), membership: voters() };
    harness.write_snapshot(&mut store, &meta);
    store.install_snapshot(meta.clone()).expect("install");
    sync(&mut store);
    assert_eq!((store.first_index(), store.last_index()), (Index(7), Index(6)));
    let store = harness.restart(store);
    assert_eq!(store.snapshot_meta(), meta);
    assert_eq!((store.first_index(), store.last_index()), (Index(7), Index(6)));
    assert_eq!(store.term(Index(7)), Err(StorageError::Unavailable(Index(7))));
}

pub fn long_log_survives_restart<H: Harness>(harness: &mut H) {
    let mut store = harness.create(voters());
    let mut expected = Vec::new();
    for term in 1..=5u64 {
        let batch = entries(expected.len() as u64 + 1, expected.len() as u64 + 600, term);
        for chunk in batch.chunks(37) {
            store.append(chunk).expect("append");
            sync(&mut store);
        }
        expected.extend(batch);
    }
    let mut store = harness.restart(store);
    assert_log(&store, 1, &expected);
    let meta = SnapshotMeta { last_log_id: LogId::new(Term(3), Index(1500)), membership: voters() };
    harness.write_snapshot(&mut store, &meta);
    store.compact(meta).expect("compact");
    sync(&mut store);
    let store = harness.restart(store);
    assert_log(&store, 1501, &expected[1500..]);
    let middle = store.entries(Index(2000), Index(2100), u64::MAX).expect("a read from the middle");
    assert_eq!(middle, expected[1999..2099]);
}

/// splitmix64: reproducible choices from a seed, without dependencies (the crash tests'
/// batch sizes, the power-cut shim's cuts).
pub struct Random(pub u64);

impl Random {
    /// A number below `bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}
