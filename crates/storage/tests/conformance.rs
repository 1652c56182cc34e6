//! The conformance suite, run against both stores: the in-memory one of the core and the
//! disk store (with small segments and a small tail cache, so rolls and disk reads happen).

use skiff_raft::{Membership, NodeId, SnapshotMeta};
use skiff_storage::conformance::Harness;
use skiff_storage::{DiskOptions, DiskStorage, MemStorage};

struct MemHarness;

impl Harness for MemHarness {
    type Store = MemStorage;

    fn create(&mut self, membership: Membership) -> MemStorage {
        MemStorage::new(membership)
    }

    fn restart(&mut self, mut store: MemStorage) -> MemStorage {
        store.crash();
        store
    }

    fn write_snapshot(&mut self, _store: &mut MemStorage, _meta: &SnapshotMeta) {}
}

struct DiskHarness {
    dir: tempfile::TempDir,
    options: Option<DiskOptions>,
}

fn disk_harness() -> DiskHarness {
    DiskHarness { dir: tempfile::tempdir().expect("a temporary directory"), options: None }
}

impl Harness for DiskHarness {
    type Store = DiskStorage;

    fn create(&mut self, membership: Membership) -> DiskStorage {
        let mut options = DiskOptions::new(NodeId(1), "conformance", membership);
        options.segment_bytes = 64 << 10;
        options.tail_cache_bytes = 4 << 10;
        self.options = Some(options.clone());
        DiskStorage::open(self.dir.path(), options).expect("create the store")
    }

    fn restart(&mut self, store: DiskStorage) -> DiskStorage {
        drop(store);
        let options = self.options.clone().expect("created first");
        DiskStorage::open(self.dir.path(), options).expect("reopen the store")
    }

    fn write_snapshot(&mut self, store: &mut DiskStorage, meta: &SnapshotMeta) {
        let data = format!("state machine at {}", meta.last_log_id);
        store.write_snapshot(meta.clone(), &mut data.as_bytes()).expect("write the snapshot");
    }
}

mod mem {
    skiff_storage::conformance_tests!(super::MemHarness);
}

mod disk {
    skiff_storage::conformance_tests!(super::disk_harness());
}
