//! Behaviour particular to the disk store: group commit, segment removal on compaction,
//! snapshot retention, hard state checkpoints, and recovery from an interrupted snapshot
//! installation.

use std::fs;
use std::path::Path;

use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, SnapshotMeta, Storage, Term};
use skiff_storage::conformance::checkable_payload;
use skiff_storage::{DiskOptions, DiskStorage};

fn options() -> DiskOptions {
    let mut options = DiskOptions::new(NodeId(3), "disk", Membership::with_voters([NodeId(3)]));
    options.segment_bytes = 64 << 10;
    options.tail_cache_bytes = 0;
    options
}

fn batch(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to)
        .map(|index| Entry {
            log_id: LogId::new(Term(term), Index(index)),
            payload: Payload::Command(checkable_payload(index, term)),
        })
        .collect()
}

fn meta(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta { last_log_id: LogId::new(Term(term), Index(index)), membership: options().initial_membership }
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("snapshots"))
        .expect("list snapshots/")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn one_fdatasync_per_sync_whatever_the_batch() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = DiskStorage::open(dir.path(), options()).expect("create");
    let before = store.sync_count();
    store.sync().expect("an empty sync");
    assert_eq!(store.sync_count(), before, "nothing written, nothing to sync");
    for (round, size) in [1u64, 16, 256].into_iter().enumerate() {
        let first = store.last_index().0 + 1;
        store.append(&batch(first, first + size - 1, 1)).expect("append");
        store.set_hard_state(HardState { term: Term(1), vote: None, commit: Index(first) }).expect("hard state");
        store.sync().expect("sync");
        assert_eq!(store.sync_count(), before + round as u64 + 1);
    }
}

#[test]
fn compaction_removes_whole_segments_and_keeps_two_snapshots() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = DiskStorage::open(dir.path(), options()).expect("create");
    // The hard state record lands in the first segment, which compaction removes.
    let hard_state = HardState { term: Term(2), vote: Some(NodeId(3)), commit: Index(0) };
    store.set_hard_state(hard_state).expect("hard state");
    for from in (1..=3000).step_by(100) {
        store.append(&batch(from, from + 99, 2)).expect("append");
        store.sync().expect("sync");
    }
    let segments = store.segment_paths();
    assert!(segments.len() >= 4, "{} segments", segments.len());
    for index in [1000, 2000, 2500] {
        store.write_snapshot(meta(index, 2), &mut format!("state {index}").as_bytes()).expect("snapshot");
        store.compact(meta(index, 2)).expect("compact");
        store.sync().expect("sync");
    }
    let remaining = store.segment_paths();
    assert!(remaining.len() < segments.len(), "no segment was removed");
    assert!(remaining.iter().all(|path| path.exists()));
    assert!(segments.iter().filter(|path| !remaining.contains(path)).all(|path| !path.exists()));
    assert_eq!(
        snapshot_files(dir.path()),
        ["00000000000000002000-00000000000000000002.snap", "00000000000000002500-00000000000000000002.snap"]
    );
    drop(store);
    let store = DiskStorage::open(dir.path(), options()).expect("reopen");
    assert_eq!(store.hard_state(), hard_state, "the hard state was checkpointed before its segment went");
    assert_eq!(store.snapshot_meta(), meta(2500, 2));
    assert_eq!(store.entries(Index(2501), Index(3001), u64::MAX).expect("read"), batch(2501, 3000, 2));
}

#[test]
fn a_snapshot_written_but_not_installed_is_adopted_on_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = DiskStorage::open(dir.path(), options()).expect("create");
    store.append(&batch(1, 50, 1)).expect("append");
    store.sync().expect("sync");
    // The leader's snapshot arrived and was written; the node died before installing it.
    store.write_snapshot(meta(80, 2), &mut &b"the leader's state"[..]).expect("snapshot");
    drop(store);
    let store = DiskStorage::open(dir.path(), options()).expect("reopen");
    assert!(store.recovery().wal_replaced_by_snapshot);
    assert_eq!((store.first_index(), store.last_index()), (Index(81), Index(80)));
    drop(store);
    // A local snapshot inside the log compacts it instead.
    let mut store = DiskStorage::open(dir.path(), options()).expect("reopen");
    store.append(&batch(81, 120, 2)).expect("append");
    store.sync().expect("sync");
    store.write_snapshot(meta(100, 2), &mut &b"local state"[..]).expect("snapshot");
    drop(store);
    let store = DiskStorage::open(dir.path(), options()).expect("reopen");
    assert!(!store.recovery().wal_replaced_by_snapshot);
    assert_eq!((store.first_index(), store.last_index()), (Index(101), Index(120)));
    assert_eq!(store.entries(Index(101), Index(121), u64::MAX).expect("read"), batch(101, 120, 2));
}

#[test]
fn a_log_without_its_node_id_file_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = DiskStorage::open(dir.path(), options()).expect("create");
    assert!(store.recovery().created);
    store.append(&batch(1, 3, 1)).expect("append");
    store.sync().expect("sync");
    drop(store);
    fs::remove_file(dir.path().join("node-id")).expect("remove node-id");
    let message = DiskStorage::open(dir.path(), options()).expect_err("whose log is this?").to_string();
    assert!(message.contains("no `node-id` file"), "{message}");
}

#[test]
fn old_entries_are_read_from_disk_and_checked() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut options = options();
    options.tail_cache_bytes = 16 << 10;
    let mut store = DiskStorage::open(dir.path(), options).expect("create");
    for from in (1..=2000).step_by(50) {
        store.append(&batch(from, from + 49, 1)).expect("append");
    }
    store.sync().expect("sync");
    // Across segment boundaries, from disk, then from the cache, within byte limits.
    let all = batch(1, 2000, 1);
    assert_eq!(store.entries(Index(1), Index(2001), u64::MAX).expect("read"), all);
    let limited = store.entries(Index(300), Index(2001), 10_000).expect("read");
    assert!(!limited.is_empty() && limited.len() < 200, "{} entries", limited.len());
    assert_eq!(limited[..], all[299..299 + limited.len()]);
    assert_eq!(store.entries(Index(1990), Index(2001), u64::MAX).expect("read"), all[1989..]);
}

#[test]
fn compaction_leaves_a_snapshot_being_written_alone() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = DiskStorage::open(dir.path(), options()).expect("create");
    store.append(&batch(1, 300, 1)).expect("append");
    store.sync().expect("sync");
    // The state machine streams a snapshot at 250 while the driver compacts to 100.
    let mut writer = store.snapshot_writer(meta(250, 1)).expect("writer");
    writer.write_all(&[1u8; 10_000]).expect("write");
    store.write_snapshot(meta(100, 1), &mut &b"older"[..]).expect("snapshot");
    store.compact(meta(100, 1)).expect("compact");
    writer.write_all(&[2u8; 10_000]).expect("write");
    assert_eq!(writer.finish().expect("finish"), meta(250, 1));
    store.compact(meta(250, 1)).expect("compact");
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut store.open_snapshot().expect("open").expect("a snapshot"), &mut data)
        .expect("read");
    assert_eq!(data.len(), 20_000);
}

#[test]
fn the_cluster_id_is_recorded_at_creation_or_later_and_never_changes() {
    const ID: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";
    // Recorded when the directory is created; kept on reopen, whatever the options say.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut with_id = options();
    with_id.cluster_id = Some(ID.into());
    let store = DiskStorage::open(dir.path(), with_id).expect("create");
    assert_eq!(store.cluster_id(), Some(ID));
    drop(store);
    let text = fs::read_to_string(dir.path().join("node-id")).expect("node-id");
    assert!(text.contains(&format!("\ncluster-id {ID}\n")), "{text}");
    let store = DiskStorage::open(dir.path(), options()).expect("reopen");
    assert_eq!(store.cluster_id(), Some(ID));
    assert!(store.cluster_id_file().record(OTHER).is_err(), "a cluster id never changes");
    store.cluster_id_file().record(ID).expect("the same id again is fine");
    drop(store);

    // A directory without one (as every directory made before cluster ids) opens, and
    // records one later.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = DiskStorage::open(dir.path(), options()).expect("create");
    assert_eq!(store.cluster_id(), None);
    let file = store.cluster_id_file();
    assert_eq!(file.read().expect("read"), None);
    assert!(file.record("not hex").is_err());
    file.record(OTHER).expect("record");
    assert_eq!(file.read().expect("read"), Some(OTHER.into()));
    drop(store);
    assert_eq!(DiskStorage::open(dir.path(), options()).expect("reopen").cluster_id(), Some(OTHER));

    // A mangled id is damage, not silently ignored.
    let text = fs::read_to_string(dir.path().join("node-id")).expect("node-id");
    fs::write(dir.path().join("node-id"), text.replace(OTHER, "xyz")).expect("write");
    let message = DiskStorage::open(dir.path(), options()).expect_err("a bad cluster-id").to_string();
    assert!(message.contains("cluster-id"), "{message}");
}
