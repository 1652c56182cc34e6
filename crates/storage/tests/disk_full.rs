//! A full disk: a small tmpfs fills up under the store. The write or sync that fails
//! returns an error, the store refuses every write after it, and a restart finds every
//! acknowledged entry intact and nothing damaged. Needs root to mount a tmpfs; without
//! it the test says so and passes (the crate's unit tests inject the same failure).

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, Storage, Term};
use skiff_storage::conformance::checkable_payload;
use skiff_storage::{DiskOptions, DiskStorage};

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let path = dir.path().to_path_buf();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "skiff-test", &path.to_string_lossy()])
            .output()
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn options(preallocate: bool) -> DiskOptions {
    let mut options = DiskOptions::new(NodeId(1), "full", Membership::with_voters([NodeId(1)]));
    options.segment_bytes = 128 << 10;
    options.preallocate = preallocate;
    options
}

fn batch(from: u64, count: u64) -> Vec<Entry> {
    (from..from + count)
        .map(|index| Entry {
            log_id: LogId::new(Term(1), Index(index)),
            payload: Payload::Command(checkable_payload(index, 1)),
        })
        .collect()
}

/// Appends and syncs until the disk is full; returns the last acknowledged index and the
/// batch that failed.
fn fill(store: &mut DiskStorage) -> (u64, Vec<Entry>) {
    let mut acked = 0;
    loop {
        let entries = batch(acked + 1, 40);
        let last = acked + 40;
        let result = store
            .append(&entries)
            .and_then(|()| store.set_hard_state(HardState { term: Term(1), vote: None, commit: Index(acked) }))
            .and_then(|()| store.sync());
        match result {
            Ok(()) => acked = last,
            Err(error) => {
                let message = error.to_string();
                assert!(message.contains("No space left") && message.contains("disk is full"), "{message}");
                return (acked, entries);
            }
        }
        assert!(acked < 1_000_000, "the disk never filled up");
    }
}

fn run(path: &Path, preallocate: bool) {
    let dir = path.join(if preallocate { "preallocated" } else { "growing" });
    let mut store = DiskStorage::open(&dir, options(preallocate)).expect("create");
    let (acked, failed) = fill(&mut store);
    assert!(acked > 0, "nothing fitted on the disk");
    assert!(store.poisoned().is_some());
    let refused = store.append(&batch(acked + 1, 1)).expect_err("writes after a failure are refused");
    assert!(refused.to_string().contains("refuses writes"), "{refused}");
    assert!(store.sync().is_err(), "a sync after a failure must not report success");
    drop(store);

    let store = DiskStorage::open(&dir, options(preallocate)).expect("reopen on the full disk");
    let last = store.last_index().0;
    assert!(last >= acked, "acknowledged entries lost: log ends at {last}, acknowledged {acked}");
    assert!(last <= failed.last().expect("a batch").index().0, "entries that were never written appeared");
    let read = store.entries(Index(1), Index(last + 1), u64::MAX).expect("read the log");
    assert_eq!(read, batch(1, last), "the log is damaged");
    eprintln!(
        "preallocate={preallocate}: {acked} acknowledged, {last} after restart, {:?}",
        store.recovery().torn_tail
    );
}

#[test]
fn a_full_disk_stops_writes_and_loses_nothing_acknowledged() {
    let tmpfs = match Tmpfs::mount("1m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!(
                "skipping the tmpfs disk-full test (cannot mount a tmpfs: {why}); unit tests inject ENOSPC instead"
            );
            return;
        }
    };
    run(&tmpfs.path, true);
    drop(tmpfs);
    let tmpfs = Tmpfs::mount("1m").expect("mounted a moment ago");
    run(&tmpfs.path, false);
}
