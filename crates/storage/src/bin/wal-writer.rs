//! A test driver for the crash tests: appends batches to a data directory like a Raft node
//! would, and prints `synced <last index> <last term> <commit>` on stdout after each
//! `sync` returns. The crash test SIGKILLs it at random points and checks that everything
//! it acknowledged survived.
//!
//! It keeps the rules a Raft node keeps: the commit index trails the last synced index,
//! an occasional overwrite (with a higher term) replaces only entries above the commit
//! index, and snapshots are taken at the commit index, then the log is compacted.
//!
//! Usage: `wal-writer <data-dir> <seed> [segment bytes]`

use std::io::Write;
use std::process::ExitCode;

use skiff_raft::{Entry, HardState, Index, LogId, Membership, NodeId, Payload, SnapshotMeta, Storage, Term};
use skiff_storage::conformance::{Random, checkable_payload};
use skiff_storage::{DiskOptions, DiskStorage};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: wal-writer <data-dir> <seed> [segment bytes]");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wal-writer: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let seed: u64 = args[2].parse()?;
    let mut options = DiskOptions::new(NodeId(1), "crash-test", Membership::with_voters([NodeId(1)]));
    options.segment_bytes = args.get(3).map_or(Ok(256 << 10), |text| text.parse())?;
    options.tail_cache_bytes = 64 << 10;
    let mut store = DiskStorage::open(&args[1], options)?;
    let mut random = Random(seed);
    let mut term = store.hard_state().term.0.max(store.last_log_id()?.term.0).max(1);
    let mut commit = store.hard_state().commit.0;
    let stdout = std::io::stdout();
    for batch in 0u64.. {
        let last = store.last_index().0;
        let mut first = last + 1;
        if batch % 10 == 9 && last > commit + 1 {
            // A new leader's entries replace our uncommitted tail.
            term += 1;
            first = last - random.below((last - commit).min(8));
        }
        let count = 1 + random.below(if batch % 3 == 0 { 200 } else { 16 });
        let entries: Vec<Entry> = (first..first + count)
            .map(|index| Entry {
                log_id: LogId::new(Term(term), Index(index)),
                payload: Payload::Command(checkable_payload(index, term)),
            })
            .collect();
        store.append(&entries)?;
        let last = first + count - 1;
        commit = commit.max(last.saturating_sub(1 + random.below(10)));
        store.set_hard_state(HardState { term: Term(term), vote: Some(NodeId(1)), commit: Index(commit) })?;
        store.sync()?;
        writeln!(stdout.lock(), "synced {last} {term} {commit}")?;
        if batch % 40 == 39 && commit > store.snapshot_meta().last_log_id.index.0 {
            let log_id = LogId::new(store.term(Index(commit))?, Index(commit));
            let meta = SnapshotMeta { last_log_id: log_id, membership: Membership::with_voters([NodeId(1)]) };
            store.write_snapshot(meta.clone(), &mut format!("state at {log_id}").as_bytes())?;
            store.compact(meta)?;
            store.sync()?;
        }
    }
    Ok(())
}
