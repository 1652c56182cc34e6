//! The `hardstate` file (`skiff_storage`'s `hardstate.rs`, through
//! `fuzzing::read_hard_state`): no panic, whatever the file holds; a file as written reads
//! back exactly; a changed one is refused or reads back exactly (a changed vote or term is
//! never taken for the real one); and what is read, written again, reads the same.
//!
//! Input: byte 0 picks the mode. Raw: the rest is the file. Built: a hard state from the
//! input's choices, written as the store writes it, then perhaps changed
//! (`cursor::mutate`).

use skiff_raft::{HardState, Index, NodeId, Term};
use skiff_storage::fuzzing;

#[path = "cursor.rs"]
pub(crate) mod cursor;
#[path = "scratch.rs"]
pub(crate) mod scratch;

use cursor::Cursor;

const FILE_NAME: &str = "hardstate";

/// Runs one input (see the module documentation).
pub fn check(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    let dir = scratch::dir();
    let path = dir.join(FILE_NAME);
    if mode & 1 == 0 {
        std::fs::write(&path, cursor.rest()).expect("a scratch file is written");
        if let Ok(Some((seq, hard_state))) = fuzzing::read_hard_state(&dir) {
            fuzzing::write_hard_state(&dir, seq, &hard_state).expect("a hard state read is written again");
            let again = fuzzing::read_hard_state(&dir).expect("a hard state written again reads");
            assert_eq!(again, Some((seq, hard_state)), "a hard state changed when written again");
        }
        return;
    }
    let seq = cursor.number();
    let vote = cursor.bool().then(|| NodeId(cursor.number()));
    let hard_state = HardState { term: Term(cursor.number()), vote, commit: Index(cursor.number()) };
    fuzzing::write_hard_state(&dir, seq, &hard_state).expect("a hard state is written");
    let mut bytes = std::fs::read(&path).expect("the hard state written reads");
    let changed = cursor::mutate(&mut cursor, &mut bytes);
    std::fs::write(&path, &bytes).expect("a scratch file is written");
    match fuzzing::read_hard_state(&dir) {
        Ok(read) => assert_eq!(read, Some((seq, hard_state)), "a hard state read back other than written"),
        Err(error) => assert!(changed, "a hard state as written does not read: {error}"),
    }
}
