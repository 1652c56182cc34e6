//! Power cuts, simulated by the `power_cut` shim: unlike a SIGKILL, a power cut loses
//! whatever was written but not synced (whole changes dropped, a write torn at any byte, a
//! file creation or rename lost when its directory was not synced). A store is driven like
//! a Raft node drives it; at random moments the test takes the image a power cut would
//! leave, opens a store on it and checks: every entry and hard state that `sync` returned
//! `Ok` for is there; what is there beyond it is something that was written; recovery
//! does not fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, SnapshotMeta, Storage, Term};
use skiff_storage::conformance::checkable_payload;
use skiff_storage::power_cut::PowerCut;
use skiff_storage::{DiskOptions, DiskStorage};

fn options() -> DiskOptions {
    let mut options = DiskOptions::new(NodeId(1), "power-cut", Membership::with_voters([NodeId(1)]));
    options.segment_bytes = 64 << 10;
    options.tail_cache_bytes = 16 << 10;
    options
}

fn entries(first: u64, count: u64, term: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|index| Entry {
            log_id: LogId::new(Term(term), Index(index)),
            payload: Payload::Command(checkable_payload(index, term)),
        })
        .collect()
}

/// What the test knows the store was told, and what `sync` made durable.
#[derive(Default)]
struct Expected {
    /// The log as the store holds it now: index to term.
    log: BTreeMap<u64, u64>,
    /// The log when `sync` last returned `Ok`.
    synced: BTreeMap<u64, u64>,
    /// Every term written at each index since that sync (and the synced one).
    written: BTreeMap<u64, BTreeSet<u64>>,
    /// The lowest index replaced since that sync: synced entries from there on may go.
    replaced_from: Option<u64>,
    hard_state: HardState,
    synced_hard_state: HardState,
    /// Hard states written since that sync.
    written_hard_states: Vec<HardState>,
}

impl Expected {
    fn append(&mut self, batch: &[Entry]) {
        let first = batch[0].index().0;
        if self.log.range(first..).next().is_some() {
            self.replaced_from = Some(self.replaced_from.map_or(first, |from| from.min(first)));
            self.log.split_off(&first);
        }
        for entry in batch {
            self.log.insert(entry.index().0, entry.term().0);
            self.written.entry(entry.index().0).or_default().insert(entry.term().0);
        }
    }

    fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
        self.written_hard_states.push(hard_state);
    }

    fn synced(&mut self) {
        self.synced = self.log.clone();
        self.written = self.log.iter().map(|(&index, &term)| (index, BTreeSet::from([term]))).collect();
        self.replaced_from = None;
        self.synced_hard_state = self.hard_state;
        self.written_hard_states.clear();
    }

    /// Checks a store opened on a power-cut image.
    fn check(&self, store: &DiskStorage, what: &str) {
        let (first, last) = (store.first_index().0, store.last_index().0);
        let synced_last = self.synced.keys().next_back().copied().unwrap_or(0);
        let required = self.replaced_from.map_or(synced_last, |from| synced_last.min(from - 1));
        assert!(last >= required, "{what}: the log ends at {last}, but {required} was synced");
        let read = store.entries(Index(first), Index(last + 1), u64::MAX).expect("read the log");
        assert_eq!(read.len() as u64, last + 1 - first, "{what}");
        for entry in &read {
            let (index, term) = (entry.index().0, entry.term().0);
            let known = self.written.get(&index).is_some_and(|terms| terms.contains(&term));
            assert!(known, "{what}: entry {index} has term {term}, which was never written there");
            assert_eq!(entry.payload, Payload::Command(checkable_payload(index, term)), "{what}: entry {index}");
            if index <= required {
                assert_eq!(Some(&term), self.synced.get(&index), "{what}: synced entry {index} changed");
            }
        }
        let hard_state = store.hard_state();
        assert!(
            hard_state == self.synced_hard_state || self.written_hard_states.contains(&hard_state),
            "{what}: hard state {hard_state:?}; synced {:?}, written since {:?}",
            self.synced_hard_state,
            self.written_hard_states
        );
    }
}

/// Opens a store on a power-cut image of `shim` taken now, and checks it.
fn cut_and_check(shim: &PowerCut, expected: &Expected, images: &Path, cut: &mut u64, random: &mut ChaCha8Rng) {
    *cut += 1;
    let image = images.join(format!("cut-{cut}"));
    let seed = random.random();
    let report = shim.cut(&image, seed).expect("write the image");
    let what = format!("cut {cut} (seed {seed}, {report:?})");
    let store = DiskStorage::open(&image, options()).unwrap_or_else(|error| panic!("{what}: recovery failed: {error}"));
    expected.check(&store, &what);
    drop(store);
    std::fs::remove_dir_all(&image).expect("remove the image");
}

/// Drives a store like a Raft node for `batches` batches, taking power-cut images at
/// random moments; returns how many images were checked.
fn run(seed: u64, batches: u64) -> u64 {
    let base = tempfile::tempdir().expect("a temporary directory");
    let (root, images) = (base.path().join("node"), base.path().join("images"));
    let shim = PowerCut::record(&root);
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let mut store = DiskStorage::open(&root, options()).expect("create");
    let mut expected = Expected::default();
    expected.synced();
    let (mut term, mut commit, mut cuts) = (1u64, 0u64, 0u64);
    let maybe_cut = |expected: &Expected, random: &mut ChaCha8Rng, cuts: &mut u64| {
        if random.random_range(0..4) == 0 {
            cut_and_check(&shim, expected, &images, cuts, random);
        }
    };
    for batch in 0..batches {
        let last = store.last_index().0;
        let mut first = last + 1;
        if batch % 7 == 6 && last > commit + 1 {
            // A new leader's entries replace the uncommitted tail.
            term += 1;
            first = last - random.random_range(0..(last - commit).min(8));
        }
        let count = random.random_range(1..if batch % 3 == 0 { 120 } else { 12 });
        let batch_entries = entries(first, count, term);
        store.append(&batch_entries).expect("append");
        expected.append(&batch_entries);
        maybe_cut(&expected, &mut random, &mut cuts);
        let new_last = first + count - 1;
        commit = commit.max(new_last.saturating_sub(random.random_range(1..10)));
        let hard_state = HardState { term: Term(term), vote: Some(NodeId(1 + term % 3)), commit: Index(commit) };
        store.set_hard_state(hard_state).expect("hard state");
        expected.set_hard_state(hard_state);
        maybe_cut(&expected, &mut random, &mut cuts);
        if random.random_range(0..4) != 0 {
            store.sync().expect("sync");
            expected.synced();
            maybe_cut(&expected, &mut random, &mut cuts);
        }
        if batch % 25 == 24 && commit > store.snapshot_meta().last_log_id.index.0 && expected.synced == expected.log {
            let log_id = LogId::new(store.term(Index(commit)).expect("term"), Index(commit));
            let meta = SnapshotMeta { last_log_id: log_id, membership: Membership::with_voters([NodeId(1)]) };
            store.write_snapshot(meta.clone(), &mut format!("state at {log_id}").as_bytes()).expect("snapshot");
            store.compact(meta).expect("compact");
            maybe_cut(&expected, &mut random, &mut cuts);
            store.sync().expect("sync");
            expected.synced();
        }
    }
    assert_eq!(shim.unknown_changes(), 0, "the store changed files the shim did not see created");
    assert!(store.segment_paths().len() > 1 || store.snapshot_meta().last_log_id.index > Index(0));
    cuts
}

#[test]
fn everything_synced_survives_a_power_cut_at_any_moment() {
    let mut cuts = 0;
    for seed in 0..6 {
        cuts += run(seed, 60);
    }
    eprintln!("{cuts} power-cut images checked");
    assert!(cuts > 80, "too few cuts: {cuts}");
}

#[test]
fn power_cut_images_do_lose_unsynced_writes() {
    // The shim must be able to fail this test's sibling: an image taken before any sync
    // of appended entries holds fewer entries than were written, for some seed.
    let base = tempfile::tempdir().expect("a temporary directory");
    let root = base.path().join("node");
    let shim = PowerCut::record(&root);
    let mut store = DiskStorage::open(&root, options()).expect("create");
    store.append(&entries(1, 50, 1)).expect("append");
    let lasts: BTreeSet<u64> = (0..40)
        .map(|seed| {
            let image = base.path().join(format!("image-{seed}"));
            shim.cut(&image, seed).expect("cut");
            DiskStorage::open(&image, options()).expect("recover").last_index().0
        })
        .collect();
    assert!(lasts.contains(&0) && lasts.iter().any(|&last| last > 0 && last < 50), "{lasts:?}");
    store.sync().expect("sync");
    let image = base.path().join("after-sync");
    shim.cut(&image, 1).expect("cut");
    assert_eq!(DiskStorage::open(&image, options()).expect("recover").last_index(), Index(50));
}

#[test]
fn after_a_failed_sync_nothing_is_acknowledged_and_a_power_cut_keeps_what_was() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let (root, images) = (base.path().join("node"), base.path().join("images"));
    let shim = PowerCut::record(&root);
    let mut options = options();
    options.preallocate = false; // no spare-writing thread to take the injected failure
    let mut store = DiskStorage::open(&root, options.clone()).expect("create");
    let mut expected = Expected::default();
    expected.synced();
    let hard_state = HardState { term: Term(1), vote: Some(NodeId(1)), commit: Index(0) };
    for first in (1..200).step_by(20) {
        store.append(&entries(first, 20, 1)).expect("append");
        expected.append(&entries(first, 20, 1));
        store.set_hard_state(HardState { commit: Index(first), ..hard_state }).expect("hard state");
        expected.set_hard_state(HardState { commit: Index(first), ..hard_state });
        store.sync().expect("sync");
        expected.synced();
    }
    store.append(&entries(201, 20, 1)).expect("append");
    expected.append(&entries(201, 20, 1));
    shim.fail_next_sync();
    let error = store.sync().expect_err("the injected failure").to_string();
    assert!(error.contains("must stop"), "{error}");
    // The kernel would let a second sync succeed; the store never tries.
    for attempt in 0..3 {
        let refused = store.sync().expect_err("a sync after a failed one").to_string();
        assert!(refused.contains("refuses") && refused.contains("fdatasync"), "attempt {attempt}: {refused}");
        assert!(store.append(&entries(221, 1, 1)).is_err());
    }
    // The page cache still shows entries 201..=220; the disk never got them.
    assert_eq!(store.last_index(), Index(220));
    drop(store);
    let mut random = ChaCha8Rng::seed_from_u64(5);
    let mut cut = 0;
    for _ in 0..20 {
        cut_and_check(&shim, &expected, &images, &mut cut, &mut random);
    }
    let image = images.join("last");
    shim.cut(&image, 3).expect("cut");
    assert_eq!(
        DiskStorage::open(&image, options).expect("recover").last_index(),
        Index(200),
        "the lost writes are lost"
    );
}
