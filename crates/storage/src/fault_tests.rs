//! Injected I/O failures (a full disk, a failing fdatasync), for machines where a small
//! tmpfs cannot be mounted (`tests/disk_full.rs` uses one where it can). A failed write or
//! sync must return an error, poison the store, and leave a directory that reopens with
//! every acknowledged entry and nothing damaged.

use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, Storage, Term};

use crate::conformance::checkable_payload;
use crate::fsutil::fault;
use crate::{DiskOptions, DiskStorage};

fn options() -> DiskOptions {
    let mut options = DiskOptions::new(NodeId(1), "faults", Membership::with_voters([NodeId(1)]));
    options.segment_bytes = 64 << 10;
    options
}

fn batch(from: u64, count: u64, term: u64) -> Vec<Entry> {
    (from..from + count)
        .map(|index| Entry {
            log_id: LogId::new(Term(term), Index(index)),
            payload: Payload::Command(checkable_payload(index, term)),
        })
        .collect()
}

/// A store holding entries `1..=100`, synced.
fn store_with_log(dir: &std::path::Path) -> DiskStorage {
    let mut store = DiskStorage::open(dir, options()).expect("create");
    store.append(&batch(1, 100, 1)).expect("append");
    store.set_hard_state(HardState { term: Term(1), vote: Some(NodeId(1)), commit: Index(90) }).expect("hard state");
    store.sync().expect("sync");
    store
}

/// Reopens `dir` and checks that it holds exactly `1..=last` of term 1, intact.
fn assert_reopens_with(dir: &std::path::Path, last: u64) {
    fault::fail_writes_after(None);
    fault::fail_syncs(false);
    fault::fail_preallocate(false);
    let store = DiskStorage::open(dir, options()).expect("reopen");
    assert_eq!(store.last_index(), Index(last));
    assert_eq!(store.entries(Index(1), Index(last + 1), u64::MAX).expect("read"), batch(1, last, 1));
    assert_eq!(store.hard_state().commit, Index(90));
}

fn assert_poisoned(store: &mut DiskStorage) {
    assert!(store.poisoned().is_some());
    let refused = store.append(&batch(store.last_index().0 + 1, 1, 9)).expect_err("refused");
    assert!(refused.to_string().contains("refuses writes"), "{refused}");
    assert!(store.set_hard_state(HardState::default()).is_err());
    assert!(store.sync().is_err(), "a sync after a failure must never succeed");
}

#[test]
fn a_failed_write_poisons_the_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = store_with_log(dir.path());
    fault::fail_writes_after(Some(100));
    let error = store.append(&batch(101, 10, 1)).expect_err("the disk is full");
    assert!(error.to_string().contains("disk is full"), "{error}");
    fault::fail_writes_after(None);
    assert_poisoned(&mut store);
    drop(store);
    assert_reopens_with(dir.path(), 100);
}

#[test]
fn a_failed_sync_is_never_reported_as_success() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = store_with_log(dir.path());
    store.append(&batch(101, 10, 1)).expect("append");
    fault::fail_syncs(true);
    let error = store.sync().expect_err("fdatasync fails");
    assert!(error.to_string().contains("fdatasync"), "{error}");
    assert!(error.to_string().contains("The node must stop"), "{error}");
    // The kernel reports a writeback error once: a retried sync would succeed. The store
    // never retries, and never reports success for anything after the failure.
    fault::fail_syncs(false);
    assert_poisoned(&mut store);
    let later = store.sync().expect_err("still refused").to_string();
    assert!(later.contains("fdatasync") && later.contains("must stop"), "the cause is kept: {later}");
    drop(store);
    // What the failed sync covered may or may not be there; here the page cache kept it.
    assert_reopens_with(dir.path(), 110);
}

#[test]
fn a_failure_while_rolling_to_a_new_segment_poisons_the_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = store_with_log(dir.path());
    let segments = store.segment_paths().len();
    fault::fail_preallocate(true);
    let mut next = 101;
    let error = loop {
        match store.append(&batch(next, 50, 1)) {
            Ok(()) => next += 50,
            Err(error) => break error,
        }
    };
    fault::fail_preallocate(false);
    assert!(error.to_string().contains("disk is full"), "{error}");
    assert_eq!(store.segment_paths().len(), segments, "no segment was added");
    assert_poisoned(&mut store);
    drop(store);
    assert_reopens_with(dir.path(), next - 1);
}

#[test]
fn a_failed_checkpoint_before_cutting_the_tail_leaves_the_log_whole() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = store_with_log(dir.path());
    // Replacing entries 95.. would drop the hard state record after them: it is saved in
    // the `hardstate` file first, and that write fails.
    fault::fail_writes_after(Some(0));
    assert!(store.append(&batch(95, 3, 2)).is_err());
    assert_poisoned(&mut store);
    drop(store);
    assert_reopens_with(dir.path(), 100);
}

#[test]
fn a_failed_snapshot_install_leaves_a_readable_store_and_a_directory_that_reopens() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = store_with_log(dir.path());
    let meta = skiff_raft::SnapshotMeta {
        last_log_id: LogId::new(Term(2), Index(150)),
        membership: Membership::with_voters([NodeId(1)]),
    };
    store.write_snapshot(meta.clone(), &mut &b"the leader's state"[..]).expect("snapshot");
    fault::fail_preallocate(true);
    assert!(store.install_snapshot(meta.clone()).is_err());
    fault::fail_preallocate(false);
    assert_eq!(store.last_index(), Index(150), "reads still work");
    assert_poisoned(&mut store);
    drop(store);
    let store = DiskStorage::open(dir.path(), options()).expect("reopen");
    assert_eq!(store.snapshot_meta(), meta);
    assert_eq!((store.first_index(), store.last_index()), (Index(151), Index(150)));
    assert_eq!(store.hard_state().commit, Index(90));
}

#[test]
fn a_failed_sync_while_rolling_to_a_new_segment_poisons_the_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = store_with_log(dir.path());
    let segments = store.segment_paths().len();
    // Unsynced appends, then one that must roll over: the old segment is synced first.
    fault::fail_syncs(true);
    let mut next = 101;
    let error = loop {
        match store.append(&batch(next, 50, 1)) {
            Ok(()) => next += 50,
            Err(error) => break error,
        }
    };
    fault::fail_syncs(false);
    assert!(error.to_string().contains("fdatasync") && error.to_string().contains("must stop"), "{error}");
    assert_eq!(store.segment_paths().len(), segments, "no segment was added after the failed sync");
    assert_poisoned(&mut store);
    drop(store);
    // Nothing after entry 100 was acknowledged; what the page cache kept may come back.
    let store = DiskStorage::open(dir.path(), options()).expect("reopen");
    assert!(store.last_index() >= Index(100));
    assert_eq!(store.entries(Index(1), Index(101), u64::MAX).expect("read"), batch(1, 100, 1));
}
