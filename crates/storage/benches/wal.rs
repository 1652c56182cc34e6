//! `cargo bench -p skiff-storage`: appends of 1, 16 and 256 entries of 100 bytes per
//! sync (one fdatasync each), a plain `pwrite` + `fdatasync` loop on the same disk as the
//! physical reference, and the time to open (recover) a log of 1M entries.
//!
//! The data goes under `SKIFF_BENCH_DIR` if set, else under the target directory (so on
//! the disk the project lives on, not a tmpfs).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, Storage, Term};
use skiff_storage::{DiskOptions, DiskStorage};

const PAYLOAD_BYTES: usize = 100;

fn bench_root() -> PathBuf {
    let root =
        std::env::var_os("SKIFF_BENCH_DIR").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&root).expect("create the benchmark directory");
    root
}

fn options() -> DiskOptions {
    DiskOptions::new(NodeId(1), "bench", Membership::with_voters([NodeId(1)]))
}

/// Disk-bound iterations of a few milliseconds at worst: flat sampling, a few seconds each,
/// so a run writes hundreds of megabytes rather than gigabytes.
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(30);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
}

fn batch(payload: &Bytes, first: u64, count: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|index| Entry { log_id: LogId::new(Term(1), Index(index)), payload: Payload::Command(payload.clone()) })
        .collect()
}

fn appends(c: &mut Criterion) {
    let payload = Bytes::from(vec![0xab; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group("append_sync");
    configure(&mut group);
    for entries_per_sync in [1u64, 16, 256] {
        let dir = tempfile::tempdir_in(bench_root()).expect("a benchmark directory");
        let mut store = DiskStorage::open(dir.path(), options()).expect("create");
        let mut next = 1;
        group.throughput(Throughput::Elements(entries_per_sync));
        group.bench_function(BenchmarkId::new("entries_per_sync", entries_per_sync), |b| {
            b.iter(|| {
                store.append(&batch(&payload, next, entries_per_sync)).expect("append");
                store.sync().expect("sync");
                next += entries_per_sync;
            })
        });
        eprintln!("  ({} fdatasyncs for {} entries)", store.sync_count(), next - 1);
    }
    group.finish();
}

/// The physical reference: write 128 bytes at the next offset of a zero-filled file and
/// fdatasync, as fast as the disk allows (no file-system metadata to commit).
fn fdatasync_loop(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_root()).expect("a benchmark directory");
    let path = dir.path().join("reference");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).expect("create");
    file.write_all_at(&vec![0u8; 64 << 20], 0).expect("zero-fill");
    file.sync_all().expect("fsync");
    let record = [0x5au8; 128];
    let mut offset = 0u64;
    let mut group = c.benchmark_group("fdatasync_loop");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    group.bench_function("pwrite_128B_then_fdatasync", |b| {
        b.iter(|| {
            file.write_all_at(&record, offset).expect("pwrite");
            file.sync_data().expect("fdatasync");
            offset = (offset + 128) % (64 << 20);
        })
    });
    group.finish();
}

fn restart(c: &mut Criterion) {
    const ENTRIES: u64 = 1_000_000;
    let dir = tempfile::tempdir_in(bench_root()).expect("a benchmark directory");
    let payload = Bytes::from(vec![0xcd; PAYLOAD_BYTES]);
    {
        let mut store = DiskStorage::open(dir.path(), options()).expect("create");
        for first in (1..=ENTRIES).step_by(1000) {
            store.append(&batch(&payload, first, 1000)).expect("append");
            let hard_state = HardState { term: Term(1), vote: Some(NodeId(1)), commit: Index(first) };
            store.set_hard_state(hard_state).expect("hard state");
            store.sync().expect("sync");
        }
        eprintln!("  (1M entries in {} segments)", store.segment_paths().len());
    }
    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("open_1M_entries", |b| {
        b.iter(|| {
            let store = DiskStorage::open(dir.path(), options()).expect("open");
            assert_eq!(store.last_index(), Index(ENTRIES));
        })
    });
    group.finish();
}

criterion_group!(benches, fdatasync_loop, appends, restart);
criterion_main!(benches);
