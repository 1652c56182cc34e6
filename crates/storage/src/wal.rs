//! The write-ahead log: the segments of `wal/`, in index order, contiguous; the last one
//! takes the writes.
//!
//! Writes are `pwrite`s at the end of the last segment; [`Wal::sync`] makes them durable
//! with one `fdatasync` (plus an fsync of `wal/` when a segment was created or removed):
//! group commit. A batch that does not fit in the last segment goes to a new one (after
//! the old one is synced, so the log on disk never has a hole). Overwriting the tail
//! (Raft's "delete the conflicting entry and all that follow") cuts the segment at the
//! first replaced record, durably, before writing anything new.

use std::path::{Path, PathBuf};

use skiff_raft::{Entry, HardState, Index};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::record;
use crate::scan::{HardStateRecord, RecoveryReads, TornTail, open_segment};
use crate::segment::{ReadLimit, Segment, TermRuns, parse_segment_name, segment_name};
use crate::spare::Spare;

/// How much of the active segment is written before the next segment's spare is started.
const SPARE_AFTER_BYTES: u64 = 1 << 20;

/// What a scan of the whole WAL found.
#[derive(Debug, Default)]
pub(crate) struct WalScan {
    /// The term of each entry, as runs.
    pub terms: TermRuns,
    /// The hard state record with the highest sequence number.
    pub hard_state: Option<(u64, HardState)>,
    pub torn: Option<TornTail>,
    /// The segments were read with `O_DIRECT`, from the device, not the page cache.
    pub read_directly: bool,
}

/// The segments and the state of the writes to them.
///
/// Invariants: `segments` is not empty (after [`Wal::open`]), sorted, and contiguous:
/// each segment's first index is the next index of the one before it.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    preallocate: bool,
    segments: Vec<Segment>,
    /// A segment was created or removed since the last sync: fsync `wal/`.
    dir_dirty: bool,
    /// The last segment has writes not yet fdatasync'd.
    unsynced: bool,
    /// Where the latest hard state record is: the segment's first index and the offset.
    hard_state_at: Option<(Index, u64)>,
    /// Reused for encoding batches.
    buffer: Vec<u8>,
    entry_offsets: Vec<u32>,
    /// How many fdatasyncs [`Wal::sync`] issued.
    pub syncs: u64,
    /// The next segment's file, being filled with zeros in the background (with
    /// preallocation on): see [`crate::spare`].
    spare: Option<Spare>,
    /// The last segment was made from a spare (its blocks are written zeros).
    active_from_spare: bool,
    /// How many segments were made from a spare.
    pub segments_from_spare: u64,
    /// The first index of the log while `segments` is empty: only after [`Wal::reset`]
    /// failed half-way (the store is poisoned then, but may still be read).
    first_if_empty: Index,
}

impl Wal {
    /// Opens `dir`, scans every segment and repairs a torn tail of the last one. When there
    /// is no segment, creates one for entries from `first` on.
    pub fn open(dir: &Path, segment_bytes: u64, preallocate: bool, first: Index) -> Result<(Wal, WalScan)> {
        let (names, removed_tmp) = fsutil::list_dir_removing_tmp(dir)?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            preallocate,
            segments: Vec::new(),
            dir_dirty: removed_tmp,
            unsynced: false,
            hard_state_at: None,
            buffer: Vec::new(),
            entry_offsets: Vec::new(),
            syncs: 0,
            spare: None,
            active_from_spare: false,
            segments_from_spare: 0,
            first_if_empty: first,
        };
        let firsts: Vec<Index> = names.iter().filter_map(|name| parse_segment_name(name)).collect();
        let mut scan = WalScan::default();
        let mut latest: Option<(Index, HardStateRecord)> = None;
        let mut reads = RecoveryReads::direct();
        for (position, &segment_first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(segment_first));
            if let Some(previous) = wal.segments.last() {
                check_contiguous(dir, previous, segment_first)?;
            }
            let is_last = position + 1 == firsts.len();
            let (segment, segment_scan) = open_segment(&path, segment_first, is_last, &mut scan.terms, &mut reads)?;
            if let Some(record) = segment_scan.hard_state
                && latest.is_none_or(|(_, best)| record.seq > best.seq)
            {
                latest = Some((segment_first, record));
            }
            scan.torn = segment_scan.torn;
            wal.segments.push(segment);
        }
        scan.read_directly = reads.is_direct();
        wal.hard_state_at = latest.map(|(segment, record)| (segment, record.offset));
        scan.hard_state = latest.map(|(_, record)| (record.seq, record.hard_state));
        let preallocation = wal.preallocation();
        match wal.segments.last_mut() {
            // Cut whatever follows the last record (a torn write, or stale bytes), durably.
            Some(last) => last.cut_tail(preallocation)?,
            None => wal.create_segment(first)?,
        }
        wal.sync()?;
        Ok((wal, scan))
    }

    /// The first index held (entries below it may be compacted into a snapshot).
    pub fn first_index(&self) -> Index {
        self.segments.first().map_or(self.first_if_empty, |segment| segment.first_index)
    }

    /// The index the next appended entry gets.
    pub fn next_index(&self) -> Index {
        self.segments.last().map_or(self.first_if_empty, Segment::next_index)
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("the WAL always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("the WAL always has a segment")
    }

    fn preallocation(&self) -> u64 {
        if self.preallocate { self.segment_bytes } else { 0 }
    }

    /// Appends `entries`, which start at [`Wal::next_index`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else { return Ok(()) };
        assert_eq!(first.index(), self.next_index(), "WAL appends must continue the log");
        self.buffer.clear();
        self.entry_offsets.clear();
        for entry in entries {
            self.entry_offsets.push(self.buffer.len() as u32);
            record::encode_entry(&mut self.buffer, entry)?;
        }
        let active = self.active();
        let full = active.end + self.buffer.len() as u64 > self.segment_bytes;
        // A segment made with `fallocate` (the first one, or the one in use at a restart)
        // gives way to the zero-filled spare as soon as it is ready: see `crate::spare`.
        let spare_is_better = !self.active_from_spare && self.spare.as_ref().is_some_and(Spare::is_ready);
        if (full || spare_is_better) && active.entry_count() > 0 {
            self.roll(first.index())?;
        }
        let (buffer, offsets) = (std::mem::take(&mut self.buffer), std::mem::take(&mut self.entry_offsets));
        let result = self.active_mut().append(&buffer, &offsets);
        (self.buffer, self.entry_offsets) = (buffer, offsets);
        self.unsynced = true;
        result?;
        self.maybe_start_spare();
        Ok(())
    }

    /// Seals the last segment (synced first, so the log on disk never has a hole) and
    /// starts a new one at `first`.
    fn roll(&mut self, first: Index) -> Result<()> {
        if self.unsynced {
            let active = self.active();
            fsutil::sync_data(&active.file, &active.path)?;
            self.unsynced = false;
        }
        self.active_mut().seal()?;
        self.create_segment(first)
    }

    /// Creates the segment for entries from `first` on: from the spare if it is ready, else
    /// with `fallocate`, without waiting.
    fn create_segment(&mut self, first: Index) -> Result<()> {
        let ready = self.spare.as_ref().is_some_and(Spare::is_ready);
        let spare = if ready { self.spare.take().and_then(Spare::into_file) } else { None };
        let from_spare = spare.is_some();
        let segment = match spare {
            Some((path, file)) => Segment::create_from_spare(&self.dir, first, &path, file)?,
            None => Segment::create(&self.dir, first, self.preallocation())?,
        };
        self.active_from_spare = from_spare;
        self.segments_from_spare += u64::from(from_spare);
        self.segments.push(segment);
        self.dir_dirty = true;
        Ok(())
    }

    /// Starts preparing the next segment's spare once the active segment takes real writes
    /// ([`SPARE_AFTER_BYTES`], so that a store opened briefly, as in tests, never writes
    /// one), unless one is under way, or preallocation is off (segments then grow as they
    /// are written, and zeros would be a waste).
    fn maybe_start_spare(&mut self) {
        let threshold = SPARE_AFTER_BYTES.min(self.segment_bytes / 4);
        if self.preallocate && self.spare.is_none() && self.active().end >= threshold {
            self.spare = Some(Spare::start(&self.dir, self.segment_bytes));
        }
    }

    /// Waits until the spare is ready; whether there is one (for tests).
    #[cfg(test)]
    pub fn wait_for_spare(&self) -> bool {
        self.spare.as_ref().is_some_and(Spare::wait)
    }

    /// Appends a hard state record.
    pub fn write_hard_state(&mut self, seq: u64, hard_state: &HardState) -> Result<()> {
        self.buffer.clear();
        record::encode_hard_state(&mut self.buffer, seq, hard_state)?;
        let buffer = std::mem::take(&mut self.buffer);
        let active = self.segments.last_mut().expect("the WAL always has a segment");
        let offset = active.end;
        let result = active.append(&buffer, &[]);
        self.buffer = buffer;
        self.unsynced = true;
        result?;
        self.hard_state_at = Some((self.active().first_index, offset));
        Ok(())
    }

    /// Whether the latest hard state record lies at or after the record of entry `index`
    /// (so cutting the log there would lose it).
    pub fn hard_state_at_or_after(&self, index: Index) -> bool {
        let Some((segment_first, offset)) = self.hard_state_at else { return false };
        let position = self.segment_of(index);
        let segment = &self.segments[position];
        segment_first > segment.first_index
            || (segment_first == segment.first_index && offset >= segment.offset_of(index))
    }

    /// Whether the latest hard state record is in one of the first `count` segments.
    pub fn hard_state_in_first(&self, count: usize) -> bool {
        let segments = &self.segments[..count.min(self.segments.len())];
        self.hard_state_at.is_some_and(|(first, _)| segments.iter().any(|segment| segment.first_index == first))
    }

    /// The position of the segment holding `index` (or the last one, for the next index).
    fn segment_of(&self, index: Index) -> usize {
        self.segments.partition_point(|segment| segment.first_index <= index).saturating_sub(1)
    }

    /// Removes the entries from `index` on, durably (see [`Segment::truncate_from`]). The
    /// caller saves the hard state elsewhere first if its record is among them.
    pub fn truncate_from(&mut self, index: Index) -> Result<()> {
        assert!(index >= self.first_index() && index < self.next_index(), "truncating outside the WAL");
        let keep = self.segment_of(index) + 1;
        while self.segments.len() > keep {
            let segment = self.segments.pop().expect("more than `keep` segments");
            fsutil::remove_file(&segment.path)?;
            self.dir_dirty = true;
        }
        if self.dir_dirty {
            // Removals must be durable before the cut, or a crash could leave a hole.
            fsutil::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        if self.hard_state_at_or_after(index) {
            self.hard_state_at = None;
        }
        let preallocation = self.preallocation();
        self.active_mut().truncate_from(index, preallocation)?;
        self.unsynced = false; // the cut was fsync'd, with everything before it
        Ok(())
    }

    /// Makes every write so far durable: one fdatasync of the last segment, and an fsync
    /// of `wal/` if a segment was created or removed.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            let active = self.active();
            fsutil::sync_data(&active.file, &active.path)?;
            self.unsynced = false;
            self.syncs += 1;
        }
        if self.dir_dirty {
            fsutil::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Reads entries `low..high` (all in the WAL) into `out` within `limit`; `false` when
    /// the limit stopped it early.
    pub fn read(&self, low: Index, high: Index, limit: &mut ReadLimit, out: &mut Vec<Entry>) -> Result<bool> {
        let mut next = low;
        for segment in &self.segments[self.segment_of(low)..] {
            if next >= high {
                break;
            }
            let to = high.min(segment.next_index());
            if !segment.read(next, to, limit, out)? {
                return Ok(false);
            }
            next = to;
        }
        Ok(true)
    }

    /// How many segments, from the first, hold only entries below `index` (never the last
    /// one: it takes the writes).
    pub fn removable_below(&self, index: Index) -> usize {
        let sealed = &self.segments[..self.segments.len().saturating_sub(1)];
        sealed.iter().take_while(|segment| segment.next_index() <= index).count()
    }

    /// Removes the first `count` segments (compaction). The caller saves the hard state
    /// elsewhere first if its record is among them.
    pub fn remove_first(&mut self, count: usize) -> Result<()> {
        assert!(count < self.segments.len(), "the last segment is never removed");
        if self.hard_state_in_first(count) {
            self.hard_state_at = None;
        }
        for segment in self.segments.drain(..count) {
            fsutil::remove_file(&segment.path)?;
            self.dir_dirty = true;
        }
        Ok(())
    }

    /// Replaces the whole log by an empty one whose first entry will be `first` (a
    /// snapshot from the leader replaces the log). Segments go newest first, so a crash
    /// in between leaves a shorter log, never a hole; the removals are durable before the
    /// new segment exists.
    pub fn reset(&mut self, first: Index) -> Result<()> {
        self.first_if_empty = first;
        while let Some(segment) = self.segments.pop() {
            fsutil::remove_file(&segment.path)?;
        }
        self.hard_state_at = None;
        self.unsynced = false;
        fsutil::sync_dir(&self.dir)?;
        self.create_segment(first)
    }

    /// The paths of the segments, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|segment| segment.path.clone()).collect()
    }
}

/// Checks that a segment starting at `next_first` continues `previous`.
fn check_contiguous(dir: &Path, previous: &Segment, next_first: Index) -> Result<()> {
    let expected = previous.next_index();
    if next_first > expected {
        // Records that stop before the end of the file (zeros follow) may have been zeroed:
        // say so, rather than only blaming a missing segment.
        let file_len = previous.file.metadata().map_or(previous.end, |metadata| metadata.len());
        if file_len > previous.end {
            let reason = format!(
                "the records stop here at entry {} (zeros follow, up to the end of the file at {file_len}), but the \
                 next segment {} starts at entry {next_first}: the records of entries {}..={} were zeroed, or a \
                 segment holding them is missing",
                expected,
                segment_name(next_first),
                expected,
                next_first.prev()
            );
            return Err(Error::corrupt(&previous.path, previous.end, reason));
        }
        return Err(Error::MissingSegment {
            dir: dir.to_path_buf(),
            before: segment_name(previous.first_index),
            before_last: expected.prev(),
            after: segment_name(next_first),
            after_first: next_first,
        });
    }
    if next_first < expected {
        let reason = format!("the segment ends at index {}, but the next one starts at {next_first}", expected.prev());
        return Err(Error::corrupt(&previous.path, previous.end, reason));
    }
    Ok(())
}
