//! Entry points for the fuzz targets (`fuzz/`, see `docs/fuzzing.md`) and their property
//! tests (`tests/fuzz_*.rs`): each reads one file the way opening a store does, through the
//! crate's own functions, with nothing else of the store around it. Not a stable API.

use std::io::{Read, Write};
use std::path::Path;

use skiff_raft::{Entry, HardState, Index, LogId, SnapshotMeta};

use crate::error::{Error, IoContext, Result};
use crate::scan::{self, TornTail};
use crate::segment::{self, ReadLimit, TermRuns};
use crate::snapshot::{self, SnapshotReader, SnapshotWriter};
use crate::{hardstate, record};

/// A record of a WAL segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentRecord {
    Entry(Entry),
    HardState { seq: u64, hard_state: HardState },
}

/// What the scan of one segment recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedSegment {
    /// Its entries, read back (and checksummed again) after the scan.
    pub entries: Vec<Entry>,
    /// The latest hard state record in it.
    pub hard_state: Option<(u64, HardState)>,
    /// A torn tail that opening the store would cut off.
    pub torn: Option<TornTail>,
    /// Where the next record would be written.
    pub end: u64,
}

/// The name of the segment file whose first entry is `first`.
pub fn segment_file_name(first: Index) -> String {
    segment::segment_name(first)
}

/// The bytes of a segment whose first entry is `first`, holding `records`, as the WAL
/// writes them.
pub fn encode_segment(first: Index, records: &[SegmentRecord]) -> Result<Vec<u8>> {
    let mut bytes = segment::encode_header(first).to_vec();
    for record in records {
        match record {
            SegmentRecord::Entry(entry) => record::encode_entry(&mut bytes, entry)?,
            SegmentRecord::HardState { seq, hard_state } => record::encode_hard_state(&mut bytes, *seq, hard_state)?,
        }
    }
    Ok(bytes)
}

/// Scans the segment file at `path`, named for `first`, as opening the store does (the
/// last segment of the WAL if `is_last`), then reads back every entry it indexed.
pub fn scan_segment(path: &Path, first: Index, is_last: bool) -> Result<ScannedSegment> {
    let mut terms = TermRuns::default();
    let (segment, scan) = scan::open_segment(path, first, is_last, &mut terms, &mut scan::RecoveryReads::direct())?;
    let mut entries = Vec::new();
    segment.read(first, segment.next_index(), &mut ReadLimit::new(u64::MAX), &mut entries)?;
    let hard_state = scan.hard_state.map(|record| (record.seq, record.hard_state));
    Ok(ScannedSegment { entries, hard_state, torn: scan.torn, end: segment.end })
}

/// The name of the snapshot file that ends at `log_id`.
pub fn snapshot_file_name(log_id: LogId) -> String {
    snapshot::file_name(log_id)
}

/// Writes a snapshot of `data` for `meta` into `dir`, as a node does.
pub fn write_snapshot(dir: &Path, meta: SnapshotMeta, data: &[u8]) -> Result<()> {
    let mut writer = SnapshotWriter::create(dir, meta)?;
    writer.write_all(data).context("write snapshot data into", dir)?;
    writer.finish().map(|_| ())
}

/// Reads the snapshot for `log_id` in `dir` as a node does at start (its metadata) and
/// when it restores or sends it (its data, checksummed); `None` if there is no such file.
pub fn read_snapshot(dir: &Path, log_id: LogId) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let Some(meta) = snapshot::read_meta(dir, log_id)? else { return Ok(None) };
    let mut reader = SnapshotReader::open(dir, log_id)?;
    assert_eq!(reader.meta(), &meta, "the snapshot's metadata read twice differs");
    let mut data = Vec::new();
    let path = reader.path().to_path_buf();
    reader.read_to_end(&mut data).map_err(|error| Error::io("read snapshot", &path, error))?;
    Ok(Some((meta, data)))
}

/// Reads the `hardstate` file in `dir`, as opening the store does.
pub fn read_hard_state(dir: &Path) -> Result<Option<(u64, HardState)>> {
    hardstate::read(dir)
}

/// Replaces the `hardstate` file in `dir`, as the store does.
pub fn write_hard_state(dir: &Path, seq: u64, hard_state: &HardState) -> Result<()> {
    hardstate::write(dir, seq, hard_state)
}
