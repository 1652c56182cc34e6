//! Crash tests: a writer process (`src/bin/wal-writer.rs`) appends batches and prints each
//! acknowledgement after its sync returns; the test SIGKILLs it at random points, reopens
//! the directory and checks that everything acknowledged is there, intact, and that
//! nothing half-written appears. The writer continues the same log in every round.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use skiff_raft::{Index, Membership, NodeId, Payload, Storage};
use skiff_storage::conformance::checkable_payload;
use skiff_storage::{DiskOptions, DiskStorage};

const WRITER: &str = env!("CARGO_BIN_EXE_wal-writer");

/// One `synced <last> <term> <commit>` line.
#[derive(Clone, Copy, Debug)]
struct Ack {
    last: u64,
    commit: u64,
}

fn parse_ack(line: &str) -> Ack {
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|field| field.parse().expect("a number")).collect();
    assert_eq!(fields.len(), 3, "unexpected line from the writer: {line:?}");
    Ack { last: fields[0], commit: fields[2] }
}

/// Runs the writer until it acknowledged `acks_before_kill` syncs, waits `delay`, kills it
/// with SIGKILL, and returns every acknowledgement it printed before it died.
fn run_and_kill(dir: &Path, seed: u64, acks_before_kill: usize, delay: Duration) -> Vec<Ack> {
    let mut child = Command::new(WRITER)
        .arg(dir)
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut acks = Vec::new();
    while acks.len() < acks_before_kill {
        match lines.next() {
            Some(Ok(line)) => acks.push(parse_ack(&line)),
            _ => {
                let mut stderr = String::new();
                child.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("read stderr");
                panic!("the writer stopped by itself: {stderr}");
            }
        }
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    // Acknowledgements printed before the kill landed still count.
    acks.extend(lines.map_while(Result::ok).map(|line| parse_ack(&line)));
    acks
}

fn options() -> DiskOptions {
    DiskOptions::new(NodeId(1), "crash-test", Membership::with_voters([NodeId(1)]))
}

/// Reopens the directory and checks it against the acknowledgements; `committed` holds the
/// term of every committed entry seen so far, which must never change.
/// Returns whether a torn tail was repaired.
fn verify(dir: &Path, acked: Ack, committed: &mut BTreeMap<u64, u64>) -> bool {
    let store = DiskStorage::open(dir, options()).expect("reopen after SIGKILL");
    let (first, last) = (store.first_index().0, store.last_index().0);
    assert!(
        last >= acked.commit,
        "acknowledged committed entries are missing: log ends at {last}, commit {}",
        acked.commit
    );
    let hard_state = store.hard_state();
    assert!(hard_state.commit.0 >= acked.commit, "the acknowledged commit index went back: {hard_state:?}");
    assert!(hard_state.commit.0 <= last, "the commit index is past the log: {hard_state:?}");
    let entries = store.entries(Index(first), Index(last + 1), u64::MAX).expect("read the whole log");
    assert_eq!(entries.len() as u64, last + 1 - first);
    let mut previous_term = store.term(Index(first - 1)).expect("the snapshot's term").0;
    for entry in &entries {
        let (index, term) = (entry.index().0, entry.term().0);
        assert_eq!(entry.payload, Payload::Command(checkable_payload(index, term)), "entry {index} is damaged");
        assert!(term >= previous_term, "terms went back at {index}");
        previous_term = term;
        if index <= hard_state.commit.0 {
            let known = *committed.entry(index).or_insert(term);
            assert_eq!(known, term, "committed entry {index} changed its term");
        }
    }
    assert!(store.snapshot_meta().last_log_id.index.0 <= hard_state.commit.0);
    assert!(acked.last >= acked.commit);
    store.recovery().torn_tail.is_some()
}

#[test]
fn sigkill_at_random_points_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut random = ChaCha8Rng::seed_from_u64(7);
    let mut committed = BTreeMap::new();
    let mut torn_tails = 0;
    for round in 0..12 {
        let acks_before_kill = random.random_range(1..250);
        let delay = Duration::from_micros(random.random_range(0..3000));
        let acks = run_and_kill(dir.path(), round, acks_before_kill, delay);
        let acked = *acks.last().expect("at least one acknowledgement");
        torn_tails += usize::from(verify(dir.path(), acked, &mut committed));
    }
    let store = DiskStorage::open(dir.path(), options()).expect("reopen");
    let newest_segment = store.segment_paths().pop().expect("a segment");
    assert_ne!(
        newest_segment.file_name(),
        Some("00000000000000000001.wal".as_ref()),
        "the writer should roll segments"
    );
    assert!(store.snapshot_meta().last_log_id.index > Index(0), "the writer should have compacted");
    eprintln!(
        "{} committed entries checked, log {}..={}, {torn_tails} torn tails repaired",
        committed.len(),
        store.first_index(),
        store.last_index()
    );
}
