//! The WAL segment scan (`skiff_storage`'s `scan.rs`, through `fuzzing::scan_segment`):
//! the bytes of a segment file, as opening the store finds them, to the records it
//! recovers. No panic, whatever the bytes; a segment as the WAL writes it is recovered
//! exactly; a damaged one yields an error or a prefix of what was written, never other
//! entries; and what is recovered, written again, is recovered the same.
//!
//! Input: byte 0 picks the mode. Raw: a valid segment header, then the rest as the record
//! area (or, one time in four, the rest as the whole file). Built: records (entries that
//! mostly follow each other, hard states) built from the input's choices and encoded as
//! the WAL does, then perhaps zero padding (a preallocated segment), then perhaps changed
//! (`cursor::mutate`).

use std::path::Path;

use bytes::Bytes;
use skiff_raft::{Entry, HardState, Index, LogId, NodeId, Payload, Term};
use skiff_storage::fuzzing::{self, ScannedSegment, SegmentRecord};

#[path = "cursor.rs"]
pub(crate) mod cursor;
#[path = "scratch.rs"]
pub(crate) mod scratch;

use cursor::Cursor;

/// Runs one input (see the module documentation).
pub fn check(data: &[u8]) {
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    let is_last = mode & 2 == 0;
    let first = match (mode >> 2) % 4 {
        0 | 1 => Index(1),
        2 => Index(cursor.below(64) as u64),
        _ => Index(cursor.number()),
    };
    let dir = scratch::dir();
    if mode & 1 == 0 {
        let mut bytes = if (mode >> 4).is_multiple_of(4) { Vec::new() } else { encode(first, &[]) };
        bytes.extend_from_slice(cursor.rest());
        if let Ok(scanned) = scan(&dir, first, is_last, &bytes) {
            check_rewrite(&dir, first, &scanned);
        }
        return;
    }
    let (records, well_formed) = records(&mut cursor, first);
    let mut bytes = encode(first, &records);
    bytes.resize(bytes.len() + cursor.below(4) * 13, 0);
    let changed = cursor::mutate(&mut cursor, &mut bytes);
    let result = scan(&dir, first, is_last, &bytes);
    let entries: Vec<Entry> = records
        .iter()
        .filter_map(|record| match record {
            SegmentRecord::Entry(entry) => Some(entry.clone()),
            SegmentRecord::HardState { .. } => None,
        })
        .collect();
    if !changed && well_formed {
        let scanned = result.unwrap_or_else(|error| panic!("a segment as written does not scan: {error}"));
        assert_eq!(scanned.entries, entries, "the entries read back differ from those written");
        assert_eq!(scanned.hard_state, latest_hard_state(&records), "the hard state read back differs");
        assert_eq!(scanned.torn, None, "a torn tail in a segment as written");
        check_rewrite(&dir, first, &scanned);
        return;
    }
    if let Ok(scanned) = result {
        assert!(
            entries.starts_with(&scanned.entries),
            "a damaged segment gave entries that were never written: {:?}",
            scanned.entries
        );
        check_rewrite(&dir, first, &scanned);
    }
}

/// Records whose entries follow `first` (mostly) with terms that mostly never go back, and
/// hard states among them; some deliberately out of line. Also says whether they are all
/// in line: a log the WAL could have written.
fn records(cursor: &mut Cursor, first: Index) -> (Vec<SegmentRecord>, bool) {
    let mut records = Vec::new();
    let mut well_formed = true;
    let mut next = first;
    let mut term = Term(1 + cursor.below(3) as u64);
    for _ in 0..cursor.below(12) {
        if cursor.below(5) == 0 {
            let vote = cursor.bool().then(|| NodeId(cursor.number()));
            let hard_state = HardState { term: Term(cursor.number()), vote, commit: Index(cursor.number()) };
            records.push(SegmentRecord::HardState { seq: cursor.number(), hard_state });
            continue;
        }
        match cursor.below(16) {
            0 => {
                let new = Term(cursor.number());
                well_formed &= new >= term;
                term = new;
            }
            1 => {
                let new = Index(cursor.number());
                well_formed &= new == next;
                next = new;
            }
            2..=4 => term = Term(term.0.saturating_add(1)),
            _ => {}
        }
        // No log reaches past the largest index the core accepts (`MAX_WIRE_VALUE`): a
        // segment with such an entry is refused, not one the WAL writes.
        well_formed &= next.0 <= skiff_raft::MAX_WIRE_VALUE;
        let payload = match cursor.below(4) {
            0 => Payload::Empty,
            1 => {
                let voters: std::collections::BTreeSet<NodeId> =
                    (0..cursor.below(4)).map(|_| NodeId(cursor.number())).collect();
                // Valid, as a node writes it: reading refuses any other membership.
                let learners =
                    (0..cursor.below(3)).map(|_| NodeId(cursor.number())).filter(|id| !voters.contains(id)).collect();
                let addresses = voters.iter().take(1).map(|id| (*id, format!("raft=h{}:1", id.0))).collect();
                Payload::Membership(skiff_raft::Membership { voters, learners, addresses })
            }
            _ => Payload::Command(Bytes::copy_from_slice(cursor.bytes())),
        };
        records.push(SegmentRecord::Entry(Entry { log_id: LogId::new(term, next), payload }));
        next = Index(next.0.wrapping_add(1));
    }
    (records, well_formed)
}

/// The hard state with the highest sequence number (the first of equals), as the scan
/// keeps it.
fn latest_hard_state(records: &[SegmentRecord]) -> Option<(u64, HardState)> {
    let mut latest: Option<(u64, HardState)> = None;
    for record in records {
        if let SegmentRecord::HardState { seq, hard_state } = record
            && latest.is_none_or(|(best, _)| *seq > best)
        {
            latest = Some((*seq, *hard_state));
        }
    }
    latest
}

fn encode(first: Index, records: &[SegmentRecord]) -> Vec<u8> {
    fuzzing::encode_segment(first, records).expect("records built within the WAL's limits encode")
}

fn scan(dir: &Path, first: Index, is_last: bool, bytes: &[u8]) -> skiff_storage::Result<ScannedSegment> {
    let path = dir.join(fuzzing::segment_file_name(first));
    std::fs::write(&path, bytes).expect("a scratch file is written");
    fuzzing::scan_segment(&path, first, is_last)
}

/// What was recovered, written again as a segment, is recovered the same.
fn check_rewrite(dir: &Path, first: Index, scanned: &ScannedSegment) {
    let mut records: Vec<SegmentRecord> = scanned.entries.iter().cloned().map(SegmentRecord::Entry).collect();
    if let Some((seq, hard_state)) = scanned.hard_state {
        records.push(SegmentRecord::HardState { seq, hard_state });
    }
    let again = scan(dir, first, true, &encode(first, &records))
        .unwrap_or_else(|error| panic!("recovered records, written again, do not scan: {error}"));
    assert_eq!(again.entries, scanned.entries, "recovered entries changed when written again");
    assert_eq!(again.hard_state, scanned.hard_state, "the recovered hard state changed when written again");
    assert_eq!(again.torn, None);
}
