//! Directories made by an operator: seeded from a backup (`DiskStorage::seed`) and forced
//! into a one-member cluster (`DiskStorage::force_new_cluster`). A node must open both
//! like any directory it made itself.

use std::io::{self, Read, Write};

use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, SnapshotMeta, Storage, Term};
use skiff_storage::{BackupHeader, BackupReader, BackupWriter, DiskOptions, DiskStorage, Error};

const CLUSTER_ID: &str = "0123456789abcdef0123456789abcdef";
const NEW_CLUSTER_ID: &str = "fedcba9876543210fedcba9876543210";

fn voters(ids: &[u64]) -> Membership {
    Membership::with_voters(ids.iter().map(|&id| NodeId(id)))
}

fn options(id: u64, membership: Membership) -> DiskOptions {
    let mut options = DiskOptions::new(NodeId(id), "restored", membership);
    options.segment_bytes = 64 << 10;
    options.preallocate = false;
    options
}

fn state(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i * 31 % 253) as u8).collect()
}

fn read_snapshot(store: &DiskStorage) -> Vec<u8> {
    let mut data = Vec::new();
    store.open_snapshot().unwrap().expect("a snapshot").read_to_end(&mut data).unwrap();
    data
}

#[test]
fn a_seeded_directory_opens_at_the_snapshot_and_takes_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n2");
    let mut seeded = options(2, voters(&[1, 2, 3]));
    seeded.cluster_id = Some(CLUSTER_ID.into());
    let at = LogId::new(Term(7), Index(5000));
    let data = state(300_000);
    DiskStorage::seed(&path, &seeded, at, &mut &data[..]).unwrap();

    // Opened as the node opens it: with its own options, whose membership is ignored.
    let mut store = DiskStorage::open(&path, options(2, voters(&[9]))).unwrap();
    assert!(!store.recovery().created);
    assert_eq!(store.snapshot_meta(), SnapshotMeta { last_log_id: at, membership: voters(&[1, 2, 3]) });
    assert_eq!(store.hard_state(), HardState { term: Term(7), vote: None, commit: Index(5000) });
    assert_eq!((store.first_index(), store.last_index()), (Index(5001), Index(5000)));
    assert_eq!(store.term(Index(5000)).unwrap(), Term(7));
    assert_eq!(store.cluster_id(), Some(CLUSTER_ID));
    assert_eq!(read_snapshot(&store), data);

    let entry = Entry { log_id: LogId::new(Term(8), Index(5001)), payload: Payload::Command(b"next".to_vec().into()) };
    store.append(std::slice::from_ref(&entry)).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = DiskStorage::open(&path, options(2, Membership::default())).unwrap();
    assert_eq!(store.entries(Index(5001), Index(5002), u64::MAX).unwrap(), vec![entry]);
}

#[test]
fn only_a_new_empty_directory_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let at = LogId::new(Term(1), Index(10));
    let used = dir.path().join("used");
    drop(DiskStorage::open(&used, options(1, voters(&[1]))).unwrap());
    let error = DiskStorage::seed(&used, &options(1, voters(&[1])), at, &mut &b"x"[..]).unwrap_err();
    assert!(matches!(error, Error::InvalidInput(_)) && error.to_string().contains("is not empty"), "{error}");

    let stray = dir.path().join("stray");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("notes.txt"), "mine").unwrap();
    let error = DiskStorage::seed(&stray, &options(1, voters(&[1])), at, &mut &b"x"[..]).unwrap_err();
    assert!(error.to_string().contains("notes.txt"), "{error}");
    assert_eq!(std::fs::read_to_string(stray.join("notes.txt")).unwrap(), "mine", "left alone");

    // An existing empty directory (a mount point) is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    DiskStorage::seed(&empty, &options(1, voters(&[1])), at, &mut &b"x"[..]).unwrap();

    let error = DiskStorage::seed(dir.path().join("zero"), &options(1, voters(&[1])), LogId::default(), &mut &b""[..]);
    assert!(error.unwrap_err().to_string().contains("index 0"));
    let error = DiskStorage::seed(dir.path().join("none"), &options(1, Membership::default()), at, &mut &b""[..]);
    assert!(error.unwrap_err().to_string().contains("voters"));
}

/// A reader that fails after `good` bytes, as a backup whose checksum does not match.
struct FailsAfter {
    good: usize,
}

impl Read for FailsAfter {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.good == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the data does not match its checksum"));
        }
        let n = buffer.len().min(self.good);
        buffer[..n].fill(7);
        self.good -= n;
        Ok(n)
    }
}

#[test]
fn a_seed_whose_data_fails_leaves_nothing_a_node_would_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1");
    let at = LogId::new(Term(2), Index(40));
    let error = DiskStorage::seed(&path, &options(1, voters(&[1])), at, &mut FailsAfter { good: 100_000 }).unwrap_err();
    assert!(error.to_string().contains("does not match its checksum"), "{error}");
    let left: Vec<_> = std::fs::read_dir(&path).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // So it can be seeded again, from good data.
    DiskStorage::seed(&path, &options(1, voters(&[1])), at, &mut &b"good"[..]).unwrap();
    let store = DiskStorage::open(&path, options(1, voters(&[1]))).unwrap();
    assert_eq!(read_snapshot(&store), b"good");
}

#[test]
fn a_damaged_backup_seeds_nothing() {
    let header = BackupHeader {
        last_log_id: LogId::new(Term(3), Index(77)),
        cluster: "old".into(),
        membership: voters(&[1, 2, 3]),
        node: NodeId(1),
        created_unix_ms: 0,
        state_machine: "test".into(),
    };
    let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
    writer.write_all(&state(10_000)).unwrap();
    let (mut bytes, _) = writer.finish().unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1");
    let mut reader = BackupReader::open(&bytes[..], "damaged.snap").unwrap();
    let at = reader.header().last_log_id;
    let error = DiskStorage::seed(&path, &options(1, voters(&[1])), at, &mut reader).unwrap_err();
    assert!(error.to_string().contains("does not match its checksum"), "{error}");
    assert!(DiskStorage::open(&path, options(1, voters(&[1]))).unwrap().recovery().created, "nothing was seeded");
}

/// A directory of node 1 of a three-node cluster: entries 1..=10 (term 2, a membership at
/// 1), entries 6..=10 not known committed.
fn used_directory(path: &std::path::Path) -> Vec<Entry> {
    let mut opts = options(1, voters(&[1, 2, 3]));
    opts.cluster_id = Some(CLUSTER_ID.into());
    let mut store = DiskStorage::open(path, opts).unwrap();
    let mut entries = vec![Entry { log_id: LogId::new(Term(2), Index(1)), payload: Payload::Empty }];
    for index in 2..=10 {
        let payload = Payload::Command(format!("command {index}").into_bytes().into());
        entries.push(Entry { log_id: LogId::new(Term(2), Index(index)), payload });
    }
    store.append(&entries).unwrap();
    store.set_hard_state(HardState { term: Term(3), vote: Some(NodeId(2)), commit: Index(5) }).unwrap();
    store.sync().unwrap();
    entries
}

#[test]
fn forcing_a_new_cluster_keeps_the_whole_log_and_appends_the_new_membership() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1");
    let entries = used_directory(&path);
    let mut alone = voters(&[1]);
    alone.addresses.insert(NodeId(1), "raft=127.0.0.1:7001".into());
    let opts = options(1, voters(&[1, 2, 3]));
    let forced = DiskStorage::force_new_cluster(&path, &opts, alone.clone(), NEW_CLUSTER_ID).unwrap();
    assert_eq!(forced.commit, Index(5));
    assert_eq!(forced.last_log_id, LogId::new(Term(2), Index(10)));
    assert_eq!(forced.membership_entry, LogId::new(Term(4), Index(11)), "a term above the hard state's 3");
    assert_eq!(forced.old_cluster_id.as_deref(), Some(CLUSTER_ID));

    let store = DiskStorage::open(&path, opts).unwrap();
    assert_eq!(store.cluster_id(), Some(NEW_CLUSTER_ID));
    assert_eq!(store.hard_state(), HardState { term: Term(4), vote: Some(NodeId(1)), commit: Index(5) });
    let log = store.entries(Index(1), Index(12), u64::MAX).unwrap();
    assert_eq!(log[..10], entries[..], "every entry kept, committed or not");
    assert_eq!(log[10], Entry { log_id: LogId::new(Term(4), Index(11)), payload: Payload::Membership(alone) });
}

#[test]
fn forcing_is_refused_on_a_running_node_a_missing_directory_or_a_bad_membership() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1");
    used_directory(&path);
    let opts = options(1, voters(&[1, 2, 3]));
    let running = DiskStorage::open(&path, opts.clone()).unwrap();
    let error = DiskStorage::force_new_cluster(&path, &opts, voters(&[1]), NEW_CLUSTER_ID).unwrap_err();
    assert!(matches!(error, Error::Locked { .. }), "{error}");
    drop(running);

    let error = DiskStorage::force_new_cluster(dir.path().join("typo"), &opts, voters(&[1]), NEW_CLUSTER_ID);
    assert!(error.unwrap_err().to_string().contains("not a Skiff data directory"));
    assert!(!dir.path().join("typo").exists(), "not created");

    for membership in [voters(&[1, 2]), voters(&[2]), Membership::default()] {
        let error = DiskStorage::force_new_cluster(&path, &opts, membership, NEW_CLUSTER_ID).unwrap_err();
        assert!(error.to_string().contains("must be n1 alone"), "{error}");
    }
    let other = options(2, voters(&[2]));
    let error = DiskStorage::force_new_cluster(&path, &other, voters(&[2]), NEW_CLUSTER_ID).unwrap_err();
    assert!(matches!(error, Error::WrongNode { .. }), "{error}");
    // Nothing changed.
    let store = DiskStorage::open(&path, opts).unwrap();
    assert_eq!(store.cluster_id(), Some(CLUSTER_ID));
    assert_eq!(store.last_index(), Index(10));
}
