//! Opening a segment: check its header, scan its records, rebuild its in-memory index, and
//! tell the end of the log (zeros, or a torn write cut off by a crash) from damage
//! (refuse to start).
//!
//! ## Where the log ends
//! A segment's records are followed by zeros: its space is preallocated, and a cut or a
//! new segment leaves zeros after the last record. The scan reads records until the first
//! one that is not valid, and then decides:
//!
//! - **Zeros up to the end of the file** (or the file ends at a record boundary): the end
//!   of the log.
//! - In the **last** segment, a bad record (checksum mismatch, impossible length, cut off
//!   by the end of the file, or eight zero bytes where its header should be) with **no
//!   valid record anywhere after it**: a torn write. What the crash interrupted was never
//!   acknowledged (it was not synced), so it is cut off with a warning.
//! - **Anything else is damage** to data that may have been acknowledged, and the store
//!   refuses to start, naming the file and the offset: a bad or zeroed header with a valid
//!   record after it (those later records were synced: the eight zero bytes must not hide
//!   them, nor the newest vote among them), any bad record or non-zero byte after the end in
//!   a segment that is not the last (the next segment was only created once this one was
//!   synced, so nothing in it is a torn write), a record with the wrong index, terms going
//!   back.
//!
//! ## Reads that the page cache cannot fool
//! Recovery reads the segments with `O_DIRECT`, from the device and not from the page
//! cache. After a failed `fsync` Linux may keep pages it could not write in the cache,
//! marked clean (the "fsyncgate" problem): a restarted process reading through the cache
//! would see records that are not on the disk, take them for synced, and acknowledge them
//! again. Read directly, the scan sees what the disk holds. Where the file system refuses
//! `O_DIRECT` (tmpfs, some network file systems) recovery falls back to ordinary reads
//! with a warning; restart there after a failed sync only after a reboot (see
//! `docs/operations.md`).
//!
//! [`scan_segment_bytes`] runs the same scan over bytes in memory (for fuzzing).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use skiff_raft::{HardState, Index};

use crate::error::{Error, IoContext, Result};
use crate::record::{self, HEADER_BYTES, MAX_BODY_BYTES, Parsed, Record};
use crate::segment::{SEGMENT_HEADER_BYTES, Segment, TermRuns, check_header};

const SCAN_CHUNK_BYTES: u64 = 1 << 20;
/// The alignment of `O_DIRECT` reads: offset, length and buffer address. 4096 covers the
/// logical block size of every common device (512 or 4096 bytes).
const DIRECT_ALIGN: usize = 4096;

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

/// The records of one segment, as the scan found them.
#[derive(Debug, Default)]
struct Scanned {
    /// The offset of each entry's record.
    offsets: Vec<u32>,
    /// Where the valid records end (and the next one would be written).
    end: u64,
    scan: SegmentScan,
}

/// How recovery reads segments: directly from the device while the file system allows it.
#[derive(Debug)]
pub(crate) struct RecoveryReads {
    direct: bool,
}

impl RecoveryReads {
    /// Reads with `O_DIRECT` until a file system refuses it.
    pub fn direct() -> RecoveryReads {
        RecoveryReads { direct: true }
    }

    /// Whether the reads so far bypassed the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// A source for the segment at `path`, open as `file`: a second, `O_DIRECT`
    /// descriptor when the file system takes it, else `file` itself (warned about once).
    fn source<'a>(&mut self, path: &'a Path, file: &'a File) -> Result<Source<'a>> {
        let len = file.metadata().context("stat", path)?.len();
        if self.direct {
            match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) {
                Ok(direct) => {
                    let mut source = Source::Direct { file: direct, path, len, scratch: Vec::new() };
                    // Some file systems open with O_DIRECT and only refuse the read.
                    let probe = &mut [0u8; 1][..len.min(1) as usize];
                    match source.read_exact_at(probe, 0) {
                        Ok(()) => return Ok(source),
                        Err(Error::Io { source: error, .. }) if refuses_direct(&error) => self.fall_back(path, &error),
                        Err(error) => return Err(error),
                    }
                }
                Err(error) if refuses_direct(&error) => self.fall_back(path, &error),
                Err(error) => return Err(Error::io("open (O_DIRECT) WAL segment", path, error)),
            }
        }
        Ok(Source::Buffered { file, path, len })
    }

    fn fall_back(&mut self, path: &Path, error: &io::Error) {
        self.direct = false;
        tracing::warn!(
            file = %path.display(), %error,
            "the file system refuses O_DIRECT: the WAL is recovered through the page cache. After a failed \
             fsync on this machine, reboot before restarting the node (see docs/operations.md)"
        );
    }
}

fn refuses_direct(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL) | Some(libc::EOPNOTSUPP))
}

/// The bytes of a segment, as recovery reads them.
enum Source<'a> {
    /// `O_DIRECT`: aligned reads into `scratch`, copied out.
    Direct { file: File, path: &'a Path, len: u64, scratch: Vec<u8> },
    /// Through the page cache.
    Buffered { file: &'a File, path: &'a Path, len: u64 },
    /// Bytes in memory (fuzzing, tests).
    Memory { bytes: &'a [u8], path: &'a Path },
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Direct { len, .. } | Source::Buffered { len, .. } => *len,
            Source::Memory { bytes, .. } => bytes.len() as u64,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Source::Direct { path, .. } | Source::Buffered { path, .. } | Source::Memory { path, .. } => path,
        }
    }

    /// Fills `buffer` from `offset`, which with the buffer's length lies within the file.
    fn read_exact_at(&mut self, buffer: &mut [u8], offset: u64) -> Result<()> {
        let end = offset.checked_add(buffer.len() as u64).filter(|&end| end <= self.len());
        let path = self.path().to_path_buf();
        let Some(end) = end else {
            let error = io::Error::new(io::ErrorKind::UnexpectedEof, "a read past the end of the file");
            return Err(Error::io(format!("read at offset {offset} of"), &path, error));
        };
        let context = |error| Error::io(format!("read at offset {offset} of"), &path, error);
        match self {
            Source::Buffered { file, .. } => file.read_exact_at(buffer, offset).map_err(context),
            Source::Memory { bytes, .. } => {
                buffer.copy_from_slice(&bytes[offset as usize..end as usize]);
                Ok(())
            }
            Source::Direct { file, scratch, .. } => {
                let align = DIRECT_ALIGN as u64;
                let start = offset / align * align;
                let span = (end.div_ceil(align) * align - start) as usize;
                if scratch.len() < span + DIRECT_ALIGN {
                    scratch.resize(span + DIRECT_ALIGN, 0);
                }
                let base = scratch.as_ptr().align_offset(DIRECT_ALIGN);
                let aligned = &mut scratch[base..base + span];
                let mut filled = 0;
                let wanted = (end - start) as usize;
                while filled < wanted {
                    // Lengths stay multiples of the alignment until the end of the file.
                    match file.read_at(&mut aligned[filled..], start + filled as u64) {
                        Ok(0) => break,
                        Ok(read) => filled += read,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => return Err(context(error)),
                    }
                }
                if filled < wanted {
                    return Err(context(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ended early")));
                }
                let skip = (offset - start) as usize;
                buffer.copy_from_slice(&aligned[skip..skip + buffer.len()]);
                Ok(())
            }
        }
    }
}

/// Opens the segment at `path`, named for `first`, and scans it (through `reads`).
/// `terms` receives the term of each entry (and so checks they never go back). `is_last`
/// allows a torn tail.
pub(crate) fn open_segment(
    path: &Path,
    first: Index,
    is_last: bool,
    terms: &mut TermRuns,
    reads: &mut RecoveryReads,
) -> Result<(Segment, SegmentScan)> {
    let file = OpenOptions::new().read(true).write(true).open(path).context("open WAL segment", path)?;
    let scanned = scan(&mut reads.source(path, &file)?, first, is_last, terms)?;
    let segment =
        Segment { path: path.to_path_buf(), file, first_index: first, offsets: scanned.offsets, end: scanned.end };
    Ok((segment, scanned.scan))
}

/// What [`scan_segment_bytes`] found in a valid segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The first index, from the header.
    pub first_index: Index,
    /// How many entries the segment holds.
    pub entries: u64,
    /// Where its valid records end.
    pub end: u64,
    /// The latest hard state record in it: its sequence number and value.
    pub hard_state: Option<(u64, HardState)>,
    /// A torn tail that opening would cut off (only when `is_last`).
    pub torn: Option<TornTail>,
}

/// Scans a whole segment file held in `bytes` by the rules recovery applies to a segment
/// on disk (`is_last`: whether it would be the last segment, where a torn tail is cut off
/// rather than refused). Never panics, whatever the bytes: a stable entry point for
/// fuzzing the segment decoder.
pub fn scan_segment_bytes(bytes: &[u8], is_last: bool) -> Result<SegmentSummary> {
    let path = Path::new("<segment bytes>");
    let first = Index(if bytes.len() >= 20 { record::u64_at(bytes, 12) } else { 0 });
    let mut terms = TermRuns::default();
    let scanned = scan(&mut Source::Memory { bytes, path }, first, is_last, &mut terms)?;
    Ok(SegmentSummary {
        first_index: first,
        entries: scanned.offsets.len() as u64,
        end: scanned.end,
        hard_state: scanned.scan.hard_state.map(|record| (record.seq, record.hard_state)),
        torn: scanned.scan.torn,
    })
}

/// Where the scan of the records stopped.
enum Stop {
    /// At the end of the file, at a record boundary (or with only zeros left).
    End(u64),
    /// At eight zero bytes where a header should be.
    Zeros(u64),
    /// At a record that is not valid.
    Bad(u64, String),
}

/// Checks the header of the segment in `source`, scans its records and decides where the
/// log ends (see the module documentation).
fn scan(source: &mut Source, first: Index, is_last: bool, terms: &mut TermRuns) -> Result<Scanned> {
    let path = source.path().to_path_buf();
    let len = source.len();
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    let header_len = (SEGMENT_HEADER_BYTES.min(len)) as usize;
    source.read_exact_at(&mut header[..header_len], 0)?;
    check_header(&header[..header_len], &path, first)?;
    let mut scanned = Scanned { end: SEGMENT_HEADER_BYTES, ..Scanned::default() };
    let (offset, reason) = match scan_records(&mut Window::new(source), first, &mut scanned, terms)? {
        Stop::End(end) => {
            scanned.end = end;
            return Ok(scanned);
        }
        Stop::Zeros(offset) => {
            let nonzero_end = nonzero_end(source, offset)?;
            if nonzero_end == offset {
                scanned.end = offset; // zeros up to the end of the file: the end of the log
                return Ok(scanned);
            }
            let reason = format!(
                "eight zero bytes where a record header should be, but non-zero bytes follow (up to offset \
                 {nonzero_end})"
            );
            (offset, reason)
        }
        Stop::Bad(offset, reason) => (offset, reason),
    };
    if !is_last {
        let reason = format!(
            "{reason}, in a segment that is not the last one: its records were synced before the next segment \
             was created, so this is damage, not a torn write"
        );
        return Err(Error::corrupt(&path, offset, reason));
    }
    let nonzero_end = nonzero_end(source, offset)?;
    if let Some(valid) = find_valid_record(source, offset, nonzero_end)? {
        let reason = format!("{reason}; a valid record follows at offset {valid}, so this is damage, not a torn write");
        return Err(Error::corrupt(&path, offset, reason));
    }
    scanned.end = offset;
    let discarded_bytes = nonzero_end.saturating_sub(offset);
    scanned.scan.torn = Some(TornTail { path, offset, discarded_bytes, reason });
    Ok(scanned)
}

/// Reads records from the first one on, indexing entries, until the end or a bad record.
fn scan_records(window: &mut Window, first: Index, scanned: &mut Scanned, terms: &mut TermRuns) -> Result<Stop> {
    let path = window.source.path().to_path_buf();
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let mut parsed = record::parse(window.at(offset, HEADER_BYTES)?);
        if let Parsed::Incomplete { needed } = parsed {
            parsed = record::parse(window.at(offset, needed)?);
        }
        let size = match parsed {
            Parsed::End => return Ok(Stop::Zeros(offset)),
            Parsed::Incomplete { .. } => {
                // The file ends inside a record, unless what is left of it is zeros.
                if window.at(offset, 0)?.iter().all(|&byte| byte == 0) {
                    return Ok(Stop::End(offset));
                }
                return Ok(Stop::Bad(offset, "the file ends inside a record".to_string()));
            }
            Parsed::Bad(reason) => return Ok(Stop::Bad(offset, reason)),
            Parsed::Record { record: Record::Entry { log_id, .. }, size } => {
                // No real log reaches past MAX_WIRE_VALUE (the core refuses such indexes), so
                // neither does a sound segment; and below it `next_index` cannot overflow.
                if log_id.index.0 > skiff_raft::MAX_WIRE_VALUE {
                    let reason = format!("entry {} is past any index a log can reach", log_id.index);
                    return Err(Error::corrupt(&path, offset, reason));
                }
                let expected = Index(first.0.saturating_add(scanned.offsets.len() as u64));
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
                scanned.offsets.push(offset32);
                terms.push(log_id.index, log_id.term);
                size
            }
            Parsed::Record { record: Record::HardState { seq, hard_state }, size } => {
                if scanned.scan.hard_state.is_none_or(|latest| seq > latest.seq) {
                    scanned.scan.hard_state = Some(HardStateRecord { seq, hard_state, offset });
                }
                size
            }
        };
        offset += size as u64;
    }
}

/// A sliding window over a source, read in large chunks.
struct Window<'s, 'a> {
    source: &'s mut Source<'a>,
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    start: u64,
}

impl<'s, 'a> Window<'s, 'a> {
    fn new(source: &'s mut Source<'a>) -> Window<'s, 'a> {
        Window { source, buffer: Vec::new(), start: 0 }
    }

    /// The bytes from `offset` on that are loaded: at least `needed` of them, unless the
    /// file ends first.
    fn at(&mut self, offset: u64, needed: usize) -> Result<&[u8]> {
        let loaded_end = self.start + self.buffer.len() as u64;
        if offset < self.start || offset + needed as u64 > loaded_end {
            let len = self.source.len();
            let want = (needed as u64).max(SCAN_CHUNK_BYTES).min(len.saturating_sub(offset));
            self.buffer.resize(want as usize, 0);
            self.source.read_exact_at(&mut self.buffer, offset.min(len))?;
            self.start = offset;
        }
        Ok(&self.buffer[(offset - self.start) as usize..])
    }
}

/// The offset just past the last non-zero byte at or after `from` (or `from`).
fn nonzero_end(source: &mut Source, from: u64) -> Result<u64> {
    let mut buffer = vec![0u8; SCAN_CHUNK_BYTES as usize];
    let mut end = source.len();
    while end > from {
        let start = end.saturating_sub(SCAN_CHUNK_BYTES).max(from);
        let chunk = &mut buffer[..(end - start) as usize];
        source.read_exact_at(chunk, start)?;
        if let Some(position) = chunk.iter().rposition(|&byte| byte != 0) {
            return Ok(start + position as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

/// The offset of a valid record that starts after `bad` and before `nonzero_end`, if any.
fn find_valid_record(source: &mut Source, bad: u64, nonzero_end: u64) -> Result<Option<u64>> {
    let len = source.len();
    let mut chunk_start = bad + 1;
    let mut chunk = Vec::new();
    while chunk_start < nonzero_end {
        let positions = (nonzero_end - chunk_start).min(SCAN_CHUNK_BYTES);
        // Load the positions plus a header's worth after them, so most checks need no read.
        chunk.resize(((positions + HEADER_BYTES as u64 + 1).min(len - chunk_start)) as usize, 0);
        source.read_exact_at(&mut chunk, chunk_start)?;
        for position in 0..positions as usize {
            let offset = chunk_start + position as u64;
            if is_valid_record(source, &chunk[position..], offset)? {
                return Ok(Some(offset));
            }
        }
        chunk_start += positions;
    }
    Ok(None)
}

/// Whether a whole valid record starts at `offset`; `loaded` holds the bytes from there
/// that are already read (maybe fewer than the record).
fn is_valid_record(source: &mut Source, loaded: &[u8], offset: u64) -> Result<bool> {
    if loaded.len() < HEADER_BYTES + 1 {
        return Ok(false); // not even a header and a kind byte before the end of the file
    }
    let length = record::u32_at(loaded, 0) as usize;
    if length == 0 || length > MAX_BODY_BYTES || offset + (HEADER_BYTES + length) as u64 > source.len() {
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
    source.read_exact_at(&mut bytes, offset)?;
    Ok(matches!(record::parse(&bytes), Parsed::Record { .. }))
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn direct_reads_return_the_same_bytes_as_ordinary_reads_at_any_offset() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("bytes");
        let bytes: Vec<u8> = (0..10_007u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let file = File::open(&path).expect("open");
        let mut reads = RecoveryReads::direct();
        let mut source = reads.source(&path, &file).expect("a source");
        // tempdir is on a disk on the test machines; tmpfs would fall back, and say so.
        eprintln!("direct: {}", reads.is_direct());
        for (offset, len) in [(0, 1), (1, 4095), (4095, 2), (4096, 4096), (100, 9_907), (10_000, 7), (10_007, 0)] {
            let mut read = vec![0u8; len];
            source.read_exact_at(&mut read, offset as u64).expect("read");
            assert_eq!(read, bytes[offset..offset + len], "at {offset}, {len} bytes");
        }
        assert!(source.read_exact_at(&mut [0u8; 8], 10_000).is_err(), "past the end");
    }
}
