//! One WAL segment file: `wal/<first index, 20 digits>.wal`, a 32-byte header and then
//! records ([`crate::record`]) for consecutive entries from its first index on, with hard
//! state records between them.
//!
//! ```text
//! header = "SKIFFWAL" | version: u32 LE (1) | first index: u64 LE | 8 zero bytes
//!          | CRC32C of the 28 bytes before: u32 LE
//! ```
//!
//! A new segment is written as `<name>.wal.tmp` (header, preallocation, fsync) and renamed
//! into place, so a file with a final name always has a whole header. Its space is
//! preallocated (`fallocate`) up to the segment size, so appends are `pwrite` + `fdatasync`
//! into space the file system already assigned; the unwritten rest reads as zeros, which
//! is how a scan finds the end. Usually a segment is made instead from a spare file that a
//! background thread filled with zeros ahead of time ([`crate::spare`]), which makes each
//! append's `fdatasync` cheaper still.

use std::fs::File;
use std::path::{Path, PathBuf};

use skiff_raft::{Entry, Index, Term};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::record::{self, Parsed, Record};

/// Bytes before the first record of a segment.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 32;
const SEGMENT_MAGIC: &[u8; 8] = b"SKIFFWAL";
const SEGMENT_VERSION: u32 = 1;
/// How much a read from disk fetches at once.
const READ_CHUNK_BYTES: u64 = 1 << 20;

/// The file name of the segment whose first entry is `first`.
pub(crate) fn segment_name(first: Index) -> String {
    format!("{:020}.wal", first.0)
}

/// The path of a new segment starting at `first`, which must not exist yet: names follow
/// the log, so replacing a segment would be a bug or tampering.
fn new_segment_path(dir: &Path, first: Index) -> Result<PathBuf> {
    let path = dir.join(segment_name(first));
    if path.exists() {
        return Err(Error::corrupt(&path, 0, "a new segment would replace this existing one"));
    }
    Ok(path)
}

/// The first index of a segment named `name`, if that is a segment's name.
pub(crate) fn parse_segment_name(name: &str) -> Option<Index> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Index)
}

/// One open segment and the in-memory index of its entries.
///
/// Invariants: `offsets[i]` is the offset of the record of entry `first_index + i`;
/// offsets increase; every record lies below `end`, where the next record is written.
#[derive(Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub file: File,
    pub first_index: Index,
    pub offsets: Vec<u32>,
    pub end: u64,
}

/// Counts a read against a byte limit the way [`skiff_raft::Storage::entries`] says: stop
/// once `max_bytes` is passed, but always take at least one entry.
#[derive(Debug)]
pub(crate) struct ReadLimit {
    pub max_bytes: u64,
    pub total_bytes: u64,
    pub count: u64,
}

impl ReadLimit {
    pub fn new(max_bytes: u64) -> ReadLimit {
        ReadLimit { max_bytes, total_bytes: 0, count: 0 }
    }

    /// Whether an entry of `size` bytes still fits; counts it if so.
    pub fn admit(&mut self, size: u64) -> bool {
        if self.count > 0 && self.total_bytes + size > self.max_bytes {
            return false;
        }
        self.total_bytes += size;
        self.count += 1;
        true
    }
}

impl Segment {
    /// Creates the segment for entries from `first` on, with `preallocate_bytes` reserved.
    /// The caller makes the directory entry durable (fsync of `wal/`).
    pub fn create(dir: &Path, first: Index, preallocate_bytes: u64) -> Result<Segment> {
        let path = new_segment_path(dir, first)?;
        let tmp = dir.join(format!("{}.tmp", segment_name(first)));
        let file = fsutil::create_file(&tmp, true)?;
        if preallocate_bytes > SEGMENT_HEADER_BYTES {
            fsutil::preallocate(&file, &tmp, preallocate_bytes)?;
        }
        Segment::install(path, first, &tmp, file)
    }

    /// Makes the segment for entries from `first` on out of a spare: a `.tmp` file already
    /// full of zeros and durable ([`crate::spare`]). The caller makes the directory entry
    /// durable.
    pub fn create_from_spare(dir: &Path, first: Index, spare: &Path, file: File) -> Result<Segment> {
        Segment::install(new_segment_path(dir, first)?, first, spare, file)
    }

    /// Writes the header into `file` (at `tmp`), fsyncs it and renames it to `path`: a file
    /// with a final name always has a whole header.
    fn install(path: PathBuf, first: Index, tmp: &Path, file: File) -> Result<Segment> {
        fsutil::write_at(&file, tmp, &encode_header(first), 0)?;
        fsutil::sync_all(&file, tmp)?;
        fsutil::rename(tmp, &path)?;
        Ok(Segment { path, file, first_index: first, offsets: Vec::new(), end: SEGMENT_HEADER_BYTES })
    }

    /// The index the next entry appended here must have.
    pub fn next_index(&self) -> Index {
        Index(self.first_index.0 + self.offsets.len() as u64)
    }

    pub fn entry_count(&self) -> usize {
        self.offsets.len()
    }

    /// Writes `records` (whole encoded records) at the end; `entry_offsets` are the
    /// offsets of the entry records within `records`, in index order.
    pub fn append(&mut self, records: &[u8], entry_offsets: &[u32]) -> Result<()> {
        let new_end = self.end + records.len() as u64;
        if new_end > u64::from(u32::MAX) {
            return Err(Error::InvalidInput(format!(
                "a write of {} bytes would make {} larger than 4 GiB; use smaller batches",
                records.len(),
                self.path.display()
            )));
        }
        if let Err(error) = fsutil::write_at(&self.file, &self.path, records, self.end) {
            // Best effort: cut off whatever part of the write landed, so a restart does not
            // find half a batch (it would be repaired as a torn tail anyway).
            let _ = fsutil::set_len(&self.file, &self.path, self.end);
            return Err(error);
        }
        self.offsets.extend(entry_offsets.iter().map(|offset| self.end as u32 + offset));
        self.end = new_end;
        Ok(())
    }

    /// Removes the entries from `index` on (and every record after them), durably: the
    /// file is cut, its space reserved again, and fsync'd before anything new is written
    /// over it, so no stale record can reappear after a crash.
    pub fn truncate_from(&mut self, index: Index, preallocate_bytes: u64) -> Result<()> {
        let position = (index.0 - self.first_index.0) as usize;
        self.cut_at(u64::from(self.offsets[position]), preallocate_bytes)?;
        self.offsets.truncate(position);
        Ok(())
    }

    /// Cuts whatever follows the last record (a torn write, stale bytes), durably.
    pub fn cut_tail(&mut self, preallocate_bytes: u64) -> Result<()> {
        self.cut_at(self.end, preallocate_bytes)
    }

    fn cut_at(&mut self, cut: u64, preallocate_bytes: u64) -> Result<()> {
        fsutil::set_len(&self.file, &self.path, cut)?;
        if preallocate_bytes > cut {
            fsutil::preallocate(&self.file, &self.path, preallocate_bytes)?;
        }
        fsutil::sync_all(&self.file, &self.path)?;
        self.end = cut;
        Ok(())
    }

    /// The offset where the record of `index` starts (or `end`, for the next index).
    pub fn offset_of(&self, index: Index) -> u64 {
        let position = (index.0 - self.first_index.0) as usize;
        self.offsets.get(position).map_or(self.end, |&offset| u64::from(offset))
    }

    /// Gives back the preallocated space past the last record (the segment is full and a
    /// new one takes the writes). Not synced: zeros past the end read as the end anyway.
    pub fn seal(&mut self) -> Result<()> {
        fsutil::set_len(&self.file, &self.path, self.end)
    }

    /// Reads entries `from..to` (all held here) into `out`, within `limit`. Returns `false`
    /// when the limit stopped the read early. Every record is checksummed again.
    pub fn read(&self, from: Index, to: Index, limit: &mut ReadLimit, out: &mut Vec<Entry>) -> Result<bool> {
        let mut next = from;
        let mut buffer = Vec::new();
        while next < to {
            let start = self.offset_of(next);
            let chunk_bytes = READ_CHUNK_BYTES.min(limit.max_bytes.saturating_mul(2).max(64 << 10));
            // Read whole records up to about `chunk_bytes`, and at least the next one.
            let first = (next.0 - self.first_index.0) as usize;
            let last = (to.0 - self.first_index.0) as usize;
            let within =
                self.offsets[first + 1..last].partition_point(|&offset| u64::from(offset) <= start + chunk_bytes);
            let end = self.offsets.get(first + 1 + within).map_or(self.end, |&offset| u64::from(offset));
            buffer.resize((end - start) as usize, 0);
            self.file.read_exact_at_context(&mut buffer, start, &self.path)?;
            let mut at = 0;
            while at < buffer.len() && next < to {
                let (record_size, entry) = self.decode_at(&buffer[at..], start + at as u64, next)?;
                at += record_size;
                let Some(entry) = entry else { continue };
                if !limit.admit(entry.size_bytes()) {
                    return Ok(false);
                }
                out.push(entry);
                next = next.next();
            }
        }
        Ok(true)
    }

    /// Decodes the record at the start of `bytes` (file offset `offset`): its size, and the
    /// entry if it is one (which must be entry `expected`).
    fn decode_at(&self, bytes: &[u8], offset: u64, expected: Index) -> Result<(usize, Option<Entry>)> {
        match record::parse(bytes) {
            Parsed::Record { record: Record::Entry { log_id, payload }, size } => {
                if log_id.index != expected {
                    let reason = format!("entry {} where the index says {expected}", log_id.index);
                    return Err(Error::corrupt(&self.path, offset, reason));
                }
                let payload = record::decode_payload(payload).map_err(|why| Error::corrupt(&self.path, offset, why))?;
                Ok((size, Some(Entry { log_id, payload })))
            }
            Parsed::Record { record: Record::HardState { .. }, size } => Ok((size, None)),
            Parsed::Bad(reason) => Err(Error::corrupt(&self.path, offset, reason)),
            Parsed::End | Parsed::Incomplete { .. } => {
                Err(Error::corrupt(&self.path, offset, format!("entry {expected} is missing")))
            }
        }
    }
}

/// `read_exact_at` with the file named in the error.
pub(crate) trait ReadAtContext {
    fn read_exact_at_context(&self, buffer: &mut [u8], offset: u64, path: &Path) -> Result<()>;
}

impl ReadAtContext for File {
    fn read_exact_at_context(&self, buffer: &mut [u8], offset: u64, path: &Path) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.read_exact_at(buffer, offset)
            .map_err(|source| Error::io(format!("read at offset {offset} of"), path, source))
    }
}

pub(crate) fn encode_header(first: Index) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&first.0.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a segment header read from `path`, whose name says it starts at `first`.
pub(crate) fn check_header(header: &[u8], path: &Path, first: Index) -> Result<()> {
    if header.len() < SEGMENT_HEADER_BYTES as usize {
        return Err(Error::corrupt(path, 0, "the file is shorter than a segment header"));
    }
    if &header[0..8] != SEGMENT_MAGIC {
        return Err(Error::corrupt(path, 0, "not a Skiff WAL segment (bad magic)"));
    }
    if crc32c::crc32c(&header[0..28]) != record::u32_at(header, 28) {
        return Err(Error::corrupt(path, 0, "segment header checksum mismatch"));
    }
    let version = record::u32_at(header, 8);
    if version != SEGMENT_VERSION {
        return Err(Error::corrupt(
            path,
            8,
            format!("segment format version {version}; this build reads {SEGMENT_VERSION}"),
        ));
    }
    let named = record::u64_at(header, 12);
    if named != first.0 {
        return Err(Error::corrupt(
            path,
            12,
            format!("the header says the first index is {named}, the name says {first}"),
        ));
    }
    Ok(())
}

/// Term runs: `(first index, term)` for each stretch of entries of one term. Raft log terms
/// never decrease, so this is short, and `term(index)` is a binary search.
#[derive(Clone, Debug, Default)]
pub(crate) struct TermRuns {
    runs: Vec<(Index, Term)>,
}

impl TermRuns {
    /// Records that entry `index` has `term`; `index` follows the last entry pushed.
    pub fn push(&mut self, index: Index, term: Term) {
        if self.runs.last().is_none_or(|&(_, last)| last != term) {
            self.runs.push((index, term));
        }
    }

    /// The term of `index`, which the caller knows is in the log.
    pub fn term(&self, index: Index) -> Option<Term> {
        let position = self.runs.partition_point(|&(start, _)| start <= index);
        position.checked_sub(1).map(|position| self.runs[position].1)
    }

    /// The last term pushed.
    pub fn last_term(&self) -> Option<Term> {
        self.runs.last().map(|&(_, term)| term)
    }

    /// Forgets the entries from `index` on.
    pub fn truncate_from(&mut self, index: Index) {
        let keep = self.runs.partition_point(|&(start, _)| start < index);
        self.runs.truncate(keep);
    }

    /// Forgets the runs that end before `index` (compaction).
    pub fn drop_before(&mut self, index: Index) {
        let position = self.runs.partition_point(|&(start, _)| start <= index);
        if position > 1 {
            self.runs.drain(..position - 1);
        }
    }

    pub fn clear(&mut self) {
        self.runs.clear();
    }
}
