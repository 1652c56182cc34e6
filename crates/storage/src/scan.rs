//! Opening a segment: check its header, scan its records, rebuild its in-memory index, and
//! tell a torn tail (cut off by a crash) from damage (refuse to start).
//!
//! The rule: a bad record (checksum mismatch, impossible length, cut off by the end of the
//! file) in the **last** segment, with no valid record anywhere after it, is a torn write:
//! what the crash interrupted was never acknowledged (it was not synced), so it is cut
//! off with a warning. Anything else is damage to data that may have been acknowledged:
//! a bad record with a valid one after it, a bad record in an earlier segment, a record
//! with the wrong index, terms going back.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use skiff_raft::{HardState, Index};

use crate::error::{Error, IoContext, Result};
use crate::record::{self, HEADER_BYTES, MAX_BODY_BYTES, Parsed, Record};
use crate::segment::{ReadAtContext, SEGMENT_HEADER_BYTES, Segment, TermRuns, check_header};

const SCAN_CHUNK_BYTES: u64 = 1 << 20;

/// A torn tail found and cut off when the store opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the first bad record started: the file now ends here.
    pub offset: u64,
    /// How many bytes (up to the last non-zero one) were thrown away.
    pub discarded_bytes: u64,
    /// What was wrong with the record at `offset`.
    pub reason: String,
}

/// The latest hard state record seen, and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HardStateRecord {
    pub seq: u64,
    pub hard_state: HardState,
    pub offset: u64,
}

/// What scanning one segment found, besides the segment itself.
#[derive(Debug, Default)]
pub(crate) struct SegmentScan {
    pub hard_state: Option<HardStateRecord>,
    pub torn: Option<TornTail>,
}

/// Where the scan of a segment stopped.
enum Stop {
    /// At a clean end (zeros, or the end of the file at a record boundary).
    End(u64),
    /// At a record that is not valid.
    Bad(u64, String),
}

/// Opens the segment at `path`, named for `first`, and scans it. `terms` receives the term
/// of each entry (and so checks they never go back). `is_last` allows a torn tail.
pub(crate) fn open_segment(
    path: &Path,
    first: Index,
    is_last: bool,
    terms: &mut TermRuns,
) -> Result<(Segment, SegmentScan)> {
    let file = OpenOptions::new().read(true).write(true).open(path).context("open WAL segment", path)?;
    let len = file.metadata().context("stat", path)?.len();
    let mut window = Window { file: &file, path, len, buffer: Vec::new(), start: 0 };
    check_header(window.at(0, SEGMENT_HEADER_BYTES as usize)?, path, first)?;
    let mut segment = Segment {
        path: path.to_path_buf(),
        file: file.try_clone().context("open WAL segment", path)?,
        first_index: first,
        offsets: Vec::new(),
        end: SEGMENT_HEADER_BYTES,
    };
    let mut scan = SegmentScan::default();
    let stop = scan_records(&mut window, &mut segment, &mut scan, terms)?;
    match stop {
        Stop::End(end) => segment.end = end,
        Stop::Bad(offset, reason) if !is_last => return Err(Error::corrupt(path, offset, reason)),
        Stop::Bad(offset, reason) => {
            let nonzero_end = nonzero_end(&file, path, offset, len)?;
            if let Some(valid) = find_valid_record(&file, path, offset, nonzero_end, len)? {
                let reason =
                    format!("{reason}; a valid record follows at offset {valid}, so this is damage, not a torn write");
                return Err(Error::corrupt(path, offset, reason));
            }
            segment.end = offset;
            let discarded_bytes = nonzero_end.saturating_sub(offset);
            scan.torn = Some(TornTail { path: path.to_path_buf(), offset, discarded_bytes, reason });
        }
    }
    Ok((segment, scan))
}

/// Reads records from the first one on, indexing entries, until the end or a bad record.
fn scan_records(
    window: &mut Window,
    segment: &mut Segment,
    scan: &mut SegmentScan,
    terms: &mut TermRuns,
) -> Result<Stop> {
    let path = segment.path.clone();
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let mut parsed = record::parse(window.at(offset, HEADER_BYTES)?);
        if let Parsed::Incomplete { needed } = parsed {
            parsed = record::parse(window.at(offset, needed)?);
        }
        let size = match parsed {
            Parsed::End => return Ok(Stop::End(offset)),
            Parsed::Incomplete { .. } => {
                // The file ends inside a record, unless what is left of it is zeros.
                if window.at(offset, 0)?.iter().all(|&byte| byte == 0) {
                    return Ok(Stop::End(offset));
                }
                return Ok(Stop::Bad(offset, "the file ends inside a record".to_string()));
            }
            Parsed::Bad(reason) => return Ok(Stop::Bad(offset, reason)),
            Parsed::Record { record: Record::Entry { log_id, .. }, size } => {
                let expected = segment.next_index();
                if log_id.index != expected {
                    return Err(Error::corrupt(
                        &path,
                        offset,
                        format!("entry {} where {expected} was expected", log_id.index),
                    ));
                }
                if let Some(last) = terms.last_term().filter(|&last| log_id.term < last) {
                    let reason = format!(
                        "entry {} has term {}, lower than the term {last} before it",
                        log_id.index, log_id.term
                    );
                    return Err(Error::corrupt(&path, offset, reason));
                }
                let offset32 = u32::try_from(offset)
                    .map_err(|_| Error::corrupt(&path, offset, "a record past 4 GiB in one segment"))?;
                segment.offsets.push(offset32);
                terms.push(log_id.index, log_id.term);
                size
            }
            Parsed::Record { record: Record::HardState { seq, hard_state }, size } => {
                if scan.hard_state.is_none_or(|latest| seq > latest.seq) {
                    scan.hard_state = Some(HardStateRecord { seq, hard_state, offset });
                }
                size
            }
        };
        offset += size as u64;
    }
}

/// A sliding window over a file, read in large chunks.
struct Window<'a> {
    file: &'a File,
    path: &'a Path,
    len: u64,
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    start: u64,
}

impl Window<'_> {
    /// The bytes from `offset` on that are loaded: at least `needed` of them, unless the
    /// file ends first.
    fn at(&mut self, offset: u64, needed: usize) -> Result<&[u8]> {
        let loaded_end = self.start + self.buffer.len() as u64;
        if offset < self.start || offset + needed as u64 > loaded_end {
            let want = (needed as u64).max(SCAN_CHUNK_BYTES).min(self.len.saturating_sub(offset));
            self.buffer.resize(want as usize, 0);
            self.file.read_exact_at_context(&mut self.buffer, offset, self.path)?;
            self.start = offset;
        }
        Ok(&self.buffer[(offset - self.start) as usize..])
    }
}

/// The offset just past the last non-zero byte at or after `from` (or `from`).
fn nonzero_end(file: &File, path: &Path, from: u64, len: u64) -> Result<u64> {
    let mut buffer = vec![0u8; SCAN_CHUNK_BYTES as usize];
    let mut end = len;
    while end > from {
        let start = end.saturating_sub(SCAN_CHUNK_BYTES).max(from);
        let chunk = &mut buffer[..(end - start) as usize];
        file.read_exact_at_context(chunk, start, path)?;
        if let Some(position) = chunk.iter().rposition(|&byte| byte != 0) {
            return Ok(start + position as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

/// The offset of a valid record that starts after `bad` and before `nonzero_end`, if any.
fn find_valid_record(file: &File, path: &Path, bad: u64, nonzero_end: u64, len: u64) -> Result<Option<u64>> {
    let mut chunk_start = bad + 1;
    let mut chunk = Vec::new();
    while chunk_start < nonzero_end {
        let positions = (nonzero_end - chunk_start).min(SCAN_CHUNK_BYTES);
        // Load the positions plus a header's worth after them, so most checks need no read.
        chunk.resize(((positions + HEADER_BYTES as u64 + 1).min(len - chunk_start)) as usize, 0);
        file.read_exact_at_context(&mut chunk, chunk_start, path)?;
        for position in 0..positions as usize {
            let offset = chunk_start + position as u64;
            if is_valid_record(file, path, &chunk[position..], offset, len)? {
                return Ok(Some(offset));
            }
        }
        chunk_start += positions;
    }
    Ok(None)
}

/// Whether a whole valid record starts at `offset`; `loaded` holds the bytes from there
/// that are already read (maybe fewer than the record).
fn is_valid_record(file: &File, path: &Path, loaded: &[u8], offset: u64, len: u64) -> Result<bool> {
    if loaded.len() < HEADER_BYTES + 1 {
        return Ok(false); // not even a header and a kind byte before the end of the file
    }
    let length = record::u32_at(loaded, 0) as usize;
    if length == 0 || length > MAX_BODY_BYTES || offset + (HEADER_BYTES + length) as u64 > len {
        return Ok(false);
    }
    if !matches!(loaded[HEADER_BYTES], 1 | 2) {
        return Ok(false); // not a record kind: skip the checksum
    }
    let size = HEADER_BYTES + length;
    if loaded.len() >= size {
        return Ok(matches!(record::parse(&loaded[..size]), Parsed::Record { .. }));
    }
    let mut bytes = vec![0u8; size];
    file.read_exact_at_context(&mut bytes, offset, path)?;
    Ok(matches!(record::parse(&bytes), Parsed::Record { .. }))
}
