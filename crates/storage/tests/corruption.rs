//! Damaged data directories: a torn tail is repaired with a warning; damage anywhere else,
//! a missing segment, or a directory of another node or cluster refuses to start with an
//! error that names the file and says what to do.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, SnapshotMeta, Storage, Term};
use skiff_storage::conformance::checkable_payload;
use skiff_storage::{DiskOptions, DiskStorage, Error};

const SEGMENT_HEADER_BYTES: usize = 32;

fn options() -> DiskOptions {
    let mut options = DiskOptions::new(NodeId(1), "alpha", Membership::with_voters([NodeId(1), NodeId(2)]));
    options.segment_bytes = 64 << 10;
    options
}

fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|index| Entry {
            log_id: LogId::new(Term(1), Index(index)),
            payload: Payload::Command(checkable_payload(index, 1)),
        })
        .collect()
}

/// A directory holding entries `1..=last` (in batches of 25), with the hard state written
/// early, so the last record of the last segment is an entry.
fn make_log(last: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = DiskStorage::open(dir.path(), options()).expect("create");
    store.set_hard_state(HardState { term: Term(1), vote: Some(NodeId(1)), commit: Index(0) }).expect("hard state");
    for from in (1..=last).step_by(25) {
        store.append(&entries(from, (from + 24).min(last))).expect("append");
        store.sync().expect("sync");
    }
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .expect("list wal/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .collect();
    paths.sort();
    paths
}

/// The `(start, end)` byte ranges of the records of a segment.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + 8 <= bytes.len() && bytes[at..at + 8] != [0u8; 8] {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes")) as usize;
        ranges.push((at, at + 8 + length));
        at += 8 + length;
    }
    ranges
}

fn open(dir: &Path) -> Result<DiskStorage, Error> {
    DiskStorage::open(dir, options())
}

fn assert_intact(store: &DiskStorage, last: u64) {
    assert_eq!(store.last_index(), Index(last));
    let read = store.entries(Index(1), Index(last + 1), u64::MAX).expect("read the log");
    assert_eq!(read, entries(1, last));
}

#[test]
fn a_torn_last_record_is_cut_off_at_every_offset() {
    let dir = make_log(40);
    let segment = segments(dir.path()).pop().expect("a segment");
    let pristine = fs::read(&segment).expect("read the segment");
    let &(start, end) = records(&pristine).last().expect("records");
    for cut in start..end {
        fs::write(&segment, &pristine[..cut]).expect("cut the segment");
        let store = open(dir.path()).unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
        assert_intact(&store, 39);
        let torn = store.recovery().torn_tail.clone();
        if cut == start {
            assert_eq!(torn, None, "a cut at a record boundary is a clean end");
        } else {
            let torn = torn.unwrap_or_else(|| panic!("cut at {cut}: no torn tail reported"));
            assert_eq!((torn.path.as_path(), torn.offset), (segment.as_path(), start as u64));
        }
    }
    // Zeros over the end of the record (a write whose last pages never reached the disk).
    for zeros in [1, 7, 8, 40, end - start - 1] {
        let mut bytes = pristine.clone();
        bytes[end - zeros..end].fill(0);
        fs::write(&segment, &bytes).expect("damage the segment");
        let store = open(dir.path()).unwrap_or_else(|error| panic!("{zeros} zeros: {error}"));
        assert_intact(&store, 39);
        assert_eq!(store.recovery().torn_tail.as_ref().map(|torn| torn.offset), Some(start as u64));
    }
}

/// Flips each byte in `range` of `segment` in turn and expects the store to refuse.
fn assert_every_flip_refused(dir: &Path, segment: &Path, range: impl Iterator<Item = usize>, record_start: usize) {
    let pristine = fs::read(segment).expect("read the segment");
    for at in range {
        let mut bytes = pristine.clone();
        bytes[at] ^= 0x5a;
        fs::write(segment, &bytes).expect("damage the segment");
        match open(dir) {
            Err(error @ Error::Corrupt { .. }) => {
                let message = error.to_string();
                assert!(message.contains(&segment.display().to_string()), "{message}");
                assert!(message.contains(&format!("offset {record_start}")), "flip at {at}: {message}");
                assert!(message.contains("will not start"), "{message}");
            }
            Err(error) => panic!("flip at {at}: unexpected error {error}"),
            Ok(_) => panic!("flip at {at} in {} was not detected", segment.display()),
        }
    }
    fs::write(segment, &pristine).expect("restore the segment");
}

#[test]
fn flipped_bytes_before_the_tail_refuse_to_start() {
    let dir = make_log(1200);
    let paths = segments(dir.path());
    assert!(paths.len() >= 3, "the log should span segments");
    // Every byte of a record in the middle of the last segment (header and payload).
    let last = paths.last().expect("a segment");
    let ranges = records(&fs::read(last).expect("read"));
    let (start, end) = ranges[ranges.len() / 2];
    assert_every_flip_refused(dir.path(), last, start..end, start);
    // The record before the last one: damage, since a valid record follows.
    let (start, end) = ranges[ranges.len() - 2];
    assert_every_flip_refused(dir.path(), last, (start..end).step_by(3), start);
    // An earlier segment: its last record, and one in the middle.
    let first = &paths[0];
    let ranges = records(&fs::read(first).expect("read"));
    let (start, end) = *ranges.last().expect("records");
    assert_every_flip_refused(dir.path(), first, (start..end).step_by(5), start);
    let (start, _) = ranges[ranges.len() / 3];
    assert_every_flip_refused(dir.path(), first, start..start + 12, start);
    // A segment header.
    assert_every_flip_refused(dir.path(), &paths[1], 0..SEGMENT_HEADER_BYTES, 0);
    assert_intact(&open(dir.path()).expect("restored"), 1200);
}

#[test]
fn a_missing_segment_refuses_to_start() {
    let dir = make_log(1200);
    let paths = segments(dir.path());
    assert!(paths.len() >= 3, "the log should span segments");
    let moved = dir.path().join("moved-away");
    fs::rename(&paths[1], &moved).expect("remove a middle segment");
    let message = open(dir.path()).expect_err("a hole in the log").to_string();
    assert!(message.contains("is missing") && message.contains("will not start"), "{message}");
    assert!(message.contains(&paths[0].file_name().expect("name").to_string_lossy().to_string()), "{message}");
    fs::rename(&moved, &paths[1]).expect("restore it");
    fs::rename(&paths[0], &moved).expect("remove the first segment");
    let message = open(dir.path()).expect_err("a hole after the snapshot").to_string();
    assert!(message.contains("the snapshot") && message.contains("is missing"), "{message}");
}

#[test]
fn another_nodes_or_clusters_directory_refuses_to_start() {
    let dir = make_log(3);
    let mut other_node = options();
    other_node.node_id = NodeId(2);
    let message = DiskStorage::open(dir.path(), other_node).expect_err("another node").to_string();
    assert!(message.contains("belongs to node n1") && message.contains("this node is n2"), "{message}");
    let mut other_cluster = options();
    other_cluster.cluster = "beta".to_string();
    let message = DiskStorage::open(dir.path(), other_cluster).expect_err("another cluster").to_string();
    assert!(message.contains("\"alpha\"") && message.contains("\"beta\""), "{message}");
    assert!(message.contains("n1"), "{message}");
    let _open = open(dir.path()).expect("open");
    let message = open(dir.path()).expect_err("a second open").to_string();
    assert!(message.contains("in use by another process"), "{message}");
}

#[test]
fn snapshots_are_checked() {
    let dir = make_log(30);
    let mut store = open(dir.path()).expect("open");
    let meta = SnapshotMeta { last_log_id: LogId::new(Term(1), Index(20)), membership: options().initial_membership };
    let error = store.compact(meta.clone()).expect_err("no snapshot file yet").to_string();
    assert!(error.contains("no snapshot file for 20@1") && error.contains("snapshot_writer"), "{error}");
    let data = vec![7u8; 300_000];
    store.write_snapshot(meta.clone(), &mut data.as_slice()).expect("write the snapshot");
    store.compact(meta.clone()).expect("compact");
    let mut read = Vec::new();
    store.open_snapshot().expect("open").expect("a snapshot").read_to_end(&mut read).expect("read");
    assert_eq!(read, data);
    drop(store);
    let path = dir.path().join("snapshots").join("00000000000000000020-00000000000000000001.snap");
    let mut bytes = fs::read(&path).expect("read the snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&path, &bytes).expect("damage the data");
    let store = open(dir.path()).expect("the header is intact");
    // Refused when opened, before a single byte reaches the state machine's restore.
    let error = store.open_snapshot().expect_err("damaged data is refused before it is read").to_string();
    assert!(error.contains("corrupt") && error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("checksum"), "{error}");
    drop(store);
    bytes[middle] ^= 1;
    bytes[20] ^= 1;
    fs::write(&path, &bytes).expect("damage the header");
    let message = open(dir.path()).expect_err("a damaged snapshot header").to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("will not start"), "{message}");
}

/// Zeros over the header of the record at `start` of `segment`.
fn zero_header(segment: &Path, start: usize) -> Vec<u8> {
    let pristine = fs::read(segment).expect("read the segment");
    let mut bytes = pristine.clone();
    bytes[start..start + 8].fill(0);
    fs::write(segment, &bytes).expect("zero a header");
    pristine
}

#[test]
fn a_zeroed_header_with_synced_records_after_it_refuses_to_start() {
    let dir = make_log(60);
    // The newest vote, synced after every entry: it must not be lost behind the zeros.
    let mut store = open(dir.path()).expect("open");
    store.set_hard_state(HardState { term: Term(2), vote: Some(NodeId(2)), commit: Index(50) }).expect("vote");
    store.sync().expect("sync");
    drop(store);
    let segment = segments(dir.path()).pop().expect("a segment");
    let ranges = records(&fs::read(&segment).expect("read"));
    let (start, _) = ranges[ranges.len() / 2];
    let pristine = zero_header(&segment, start);
    let error = open(dir.path()).expect_err("eight zero bytes must not end a log that goes on");
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt { .. }), "{message}");
    assert!(message.contains(&segment.display().to_string()), "{message}");
    assert!(message.contains(&format!("offset {start}")), "{message}");
    assert!(message.contains("zero") && message.contains("valid record follows"), "{message}");
    fs::write(&segment, &pristine).expect("restore");
    let store = open(dir.path()).expect("restored");
    assert_intact(&store, 60);
    assert_eq!(store.hard_state().vote, Some(NodeId(2)));
}

#[test]
fn a_zeroed_last_header_with_nothing_valid_after_it_is_a_torn_write() {
    let dir = make_log(40);
    let segment = segments(dir.path()).pop().expect("a segment");
    let &(start, _) = records(&fs::read(&segment).expect("read")).last().expect("records");
    // The page holding the header never reached the disk, the one after it did.
    zero_header(&segment, start);
    let store = open(dir.path()).expect("a torn write is repaired");
    assert_intact(&store, 39);
    let torn = store.recovery().torn_tail.clone().expect("a torn tail is reported");
    assert_eq!((torn.path, torn.offset), (segment, start as u64));
    assert!(torn.discarded_bytes > 0);
}

#[test]
fn zeros_in_an_earlier_segment_refuse_to_start_naming_the_file_and_offset() {
    let dir = make_log(1200);
    let paths = segments(dir.path());
    assert!(paths.len() >= 3, "the log should span segments");
    let first = &paths[0];
    let ranges = records(&fs::read(first).expect("read"));
    // A zeroed header in the middle, records after it.
    let (start, _) = ranges[ranges.len() / 2];
    let pristine = zero_header(first, start);
    let error = open(dir.path()).expect_err("zeros in an earlier segment");
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt { .. }), "not a missing segment: {message}");
    assert!(message.contains(&first.display().to_string()), "{message}");
    assert!(message.contains(&format!("offset {start}")), "{message}");
    assert!(message.contains("not the last"), "{message}");
    // Everything from that record on zeroed: the records stop early.
    let mut bytes = pristine.clone();
    bytes[start..].fill(0);
    fs::write(first, &bytes).expect("zero the tail");
    let error = open(dir.path()).expect_err("a zeroed tail in an earlier segment");
    let message = error.to_string();
    assert!(matches!(error, Error::Corrupt { .. }), "{message}");
    assert!(message.contains(&first.display().to_string()) && message.contains(&format!("offset {start}")));
    assert!(message.contains("zeroed"), "{message}");
    fs::write(first, &pristine).expect("restore");
    assert_intact(&open(dir.path()).expect("restored"), 1200);
}

#[test]
fn the_segment_scan_runs_on_bytes_in_memory() {
    let dir = make_log(40);
    let segment = segments(dir.path()).pop().expect("a segment");
    let bytes = fs::read(&segment).expect("read");
    let summary = skiff_storage::scan_segment_bytes(&bytes, true).expect("a valid segment");
    assert_eq!((summary.first_index, summary.entries), (Index(1), 40));
    assert_eq!(summary.hard_state.map(|(_, hard_state)| hard_state.vote), Some(Some(NodeId(1))));
    let ranges = records(&bytes);
    let mut damaged = bytes.clone();
    damaged[ranges[3].0..ranges[3].0 + 8].fill(0);
    assert!(skiff_storage::scan_segment_bytes(&damaged, true).is_err());
    for len in [0, 10, 31, 32, 33, ranges[5].0 + 3] {
        let _ = skiff_storage::scan_segment_bytes(&bytes[..len], true);
        let _ = skiff_storage::scan_segment_bytes(&bytes[..len], false);
    }
}

/// The snapshot file of a store compacted at 20, its path and its bytes.
fn snapshot_file() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = make_log(30);
    let mut store = open(dir.path()).expect("open");
    let meta = SnapshotMeta { last_log_id: LogId::new(Term(1), Index(20)), membership: options().initial_membership };
    store.write_snapshot(meta.clone(), &mut vec![9u8; 5000].as_slice()).expect("write the snapshot");
    store.compact(meta).expect("compact");
    drop(store);
    let path = dir.path().join("snapshots").join("00000000000000000020-00000000000000000001.snap");
    let bytes = fs::read(&path).expect("read the snapshot");
    (dir, path, bytes)
}

/// Where a snapshot's data starts: after magic, meta length, meta and its checksum.
fn data_offset(bytes: &[u8]) -> usize {
    12 + u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes")) as usize + 4
}

#[test]
fn crafted_snapshot_files_are_refused_with_the_file_named() {
    let (dir, path, pristine) = snapshot_file();
    let (data_at, trailer_at) = (data_offset(&pristine), pristine.len() - 24);
    let refused = |bytes: &[u8], what: &str| {
        fs::write(&path, bytes).expect("write the crafted file");
        let message = match open(dir.path()) {
            Err(error) => error.to_string(),
            Ok(store) => match store.open_snapshot() {
                Err(error) => error.to_string(),
                Ok(_) => panic!("{what}: the crafted snapshot was accepted"),
            },
        };
        assert!(message.contains(&path.display().to_string()) && message.contains("corrupt"), "{what}: {message}");
    };
    let mut bytes = pristine.clone();
    bytes[data_at + 100] ^= 0x10;
    refused(&bytes, "a wrong data checksum");
    for meta_len in [u32::MAX, (1 << 20) + 1, 1 << 20, pristine.len() as u32] {
        let mut bytes = pristine.clone();
        bytes[8..12].copy_from_slice(&meta_len.to_le_bytes());
        refused(&bytes, &format!("a header length of {meta_len}"));
    }
    for data_len in [u64::MAX, u64::MAX - data_at as u64, 1 << 40, 4999, 5001] {
        let mut bytes = pristine.clone();
        bytes[trailer_at..trailer_at + 8].copy_from_slice(&data_len.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[trailer_at..trailer_at + 12]);
        bytes[trailer_at + 12..trailer_at + 16].copy_from_slice(&crc.to_le_bytes());
        refused(&bytes, &format!("a data length of {data_len} (trailer checksum fixed up)"));
    }
    for len in [0, 11, 12, 30, data_at, data_at + 10, trailer_at, pristine.len() - 1] {
        refused(&pristine[..len], &format!("cut to {len} bytes"));
    }
    fs::write(&path, &pristine).expect("restore");
    let mut data = Vec::new();
    open(dir.path())
        .expect("open")
        .open_snapshot()
        .expect("open")
        .expect("a snapshot")
        .read_to_end(&mut data)
        .expect("read");
    assert_eq!(data, vec![9u8; 5000]);
}

#[test]
fn the_snapshot_decoder_checks_everything_in_memory() {
    let (_dir, _path, pristine) = snapshot_file();
    let (meta, data) = skiff_storage::decode_snapshot_bytes(&pristine).expect("a valid snapshot");
    assert_eq!((meta.last_log_id, data), (LogId::new(Term(1), Index(20)), &[9u8; 5000][..]));
    for at in (0..pristine.len()).step_by(7) {
        let mut bytes = pristine.clone();
        bytes[at] ^= 0x01;
        assert!(skiff_storage::decode_snapshot_bytes(&bytes).is_err(), "a flip at {at} went unnoticed");
    }
    for len in 0..pristine.len() {
        assert!(skiff_storage::decode_snapshot_bytes(&pristine[..len]).is_err(), "cut to {len}");
    }
}

#[test]
fn a_huge_hard_state_file_is_refused_without_reading_it() {
    let dir = make_log(3);
    let path = dir.path().join("hardstate");
    let file = fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(1 << 40).expect("a sparse terabyte");
    drop(file);
    let message = open(dir.path()).expect_err("refused").to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("not a hard state file"), "{message}");
    assert!(skiff_storage::decode_hard_state_file(&[0u8; 45]).is_err());
}

/// The decoders of outside bytes return an error, never panic, whatever the bytes: random
/// damage to valid files (a short stand-in for the fuzz targets).
#[test]
fn the_decoders_never_panic_on_damaged_bytes() {
    use rand::{Rng, SeedableRng};
    let dir = make_log(40);
    let segment = fs::read(segments(dir.path()).pop().expect("a segment")).expect("read");
    let segment = &segment[..records(&segment).last().expect("records").1 + 64];
    let (_dir, _path, snapshot) = snapshot_file();
    let hard_state = fs::read(make_log(1).path().join("hardstate")).expect("read");
    let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    for round in 0..3000 {
        for pristine in [segment, &snapshot[..], &hard_state[..]] {
            let mut bytes = pristine.to_vec();
            for _ in 0..random.random_range(1..4) {
                let at = random.random_range(0..bytes.len().max(1)).min(bytes.len() - 1);
                match random.random_range(0..3) {
                    0 => bytes[at] = random.random(),
                    1 => {
                        let end = (at + 4).min(bytes.len());
                        bytes[at..end].fill(0xff);
                    }
                    _ => bytes.truncate(at.max(1)),
                }
            }
            let _ = skiff_storage::scan_segment_bytes(&bytes, round % 2 == 0);
            let _ = skiff_storage::decode_snapshot_bytes(&bytes);
            let _ = skiff_storage::decode_hard_state_file(&bytes);
        }
    }
}
