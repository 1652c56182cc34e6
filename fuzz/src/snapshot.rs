//! The snapshot file reader (`skiff_storage`'s `snapshot.rs`, through
//! `fuzzing::read_snapshot`): the metadata a node reads at start and the data it restores
//! or sends. No panic, whatever the file holds; a snapshot as written reads back exactly;
//! a changed one is refused or reads back exactly (never other metadata or data); and what
//! is read, written again, reads the same.
//!
//! Input: byte 0 picks the mode. Raw: the rest is the file (named for a log id from the
//! input). Built: metadata and data from the input's choices, written as a node writes a
//! snapshot, then perhaps changed (`cursor::mutate`).

use skiff_raft::{Index, LogId, Membership, NodeId, SnapshotMeta, Term};
use skiff_storage::fuzzing;

#[path = "cursor.rs"]
pub(crate) mod cursor;
#[path = "scratch.rs"]
pub(crate) mod scratch;

use cursor::Cursor;

type Read = skiff_storage::Result<Option<(SnapshotMeta, Vec<u8>)>>;

/// Runs one input (see the module documentation).
pub fn check(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    let log_id = LogId::new(Term(cursor.number()), Index(cursor.number()));
    let dir = scratch::dir();
    let path = dir.join(fuzzing::snapshot_file_name(log_id));
    if mode & 1 == 0 {
        std::fs::write(&path, cursor.rest()).expect("a scratch file is written");
        let read = fuzzing::read_snapshot(&dir, log_id);
        if let Ok(Some((meta, data))) = &read {
            assert_eq!(meta.last_log_id, log_id, "a snapshot read under another log id's name");
            check_rewrite(meta, data);
        }
        return;
    }
    let voters: std::collections::BTreeSet<NodeId> = (0..cursor.below(4)).map(|_| NodeId(cursor.number())).collect();
    // A valid membership (learners apart from voters; addresses of members only): what a
    // node writes. Reading refuses any other.
    let learners = (0..cursor.below(3)).map(|_| NodeId(cursor.number())).filter(|id| !voters.contains(id)).collect();
    let addresses = voters.iter().take(cursor.below(3)).map(|id| (*id, format!("raft=h{}:1", id.0))).collect();
    let membership = Membership { voters, learners, addresses };
    let meta = SnapshotMeta { last_log_id: log_id, membership };
    let data = cursor.bytes().to_vec();
    fuzzing::write_snapshot(&dir, meta.clone(), &data).expect("a snapshot is written");
    let mut bytes = std::fs::read(&path).expect("the snapshot written reads");
    let changed = cursor::mutate(&mut cursor, &mut bytes);
    std::fs::write(&path, &bytes).expect("a scratch file is written");
    let read: Read = fuzzing::read_snapshot(&dir, log_id);
    match read {
        Ok(Some(read)) => {
            assert_eq!(read, (meta, data), "a snapshot read back other than written (changed: {changed})")
        }
        Ok(None) => panic!("the snapshot file is gone"),
        Err(error) => assert!(changed, "a snapshot as written does not read: {error}"),
    }
}

/// What was read, written again as a snapshot, reads the same.
fn check_rewrite(meta: &SnapshotMeta, data: &[u8]) {
    let again = scratch::dir().join("again");
    std::fs::create_dir(&again).expect("a scratch directory is made");
    fuzzing::write_snapshot(&again, meta.clone(), data).expect("a snapshot read is written again");
    let read = fuzzing::read_snapshot(&again, meta.last_log_id).expect("a snapshot written again reads");
    assert_eq!(read, Some((meta.clone(), data.to_vec())), "a snapshot changed when written again");
}
