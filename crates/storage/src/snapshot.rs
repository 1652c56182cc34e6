//! Snapshot files: `snapshots/<index, 20 digits>-<term, 20 digits>.snap`.
//!
//! ```text
//! snapshot = "SKFSNAP2" | meta length: u32 | postcard(SnapshotMeta) | CRC32C of the bytes before: u32
//!            | data (any length, streamed)
//!            | data length: u64 | CRC32C of data: u32 | CRC32C of the 12 bytes before: u32 | "SKFSNEND"
//! ```
//!
//! A [`SnapshotWriter`] streams the state machine's data into `<name>.snap.tmp` (never
//! holding it in memory), then [`SnapshotWriter::finish`] writes the trailer, fsyncs,
//! renames the file into place and fsyncs `snapshots/`: a file with a final name is always
//! whole. A [`SnapshotReader`] checks the data's checksum when it is opened (a first pass
//! over the file), then streams the data back, checking the checksum again at the end.
//! Every length in the file is checked against the file's size before it is used.
//!
//! Files that start with `"SKFSNAP1"` (written before members had addresses) are read too:
//! their metadata is a log id and a membership of ids only.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use skiff_raft::{Index, LogId, SnapshotMeta, Term};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, FileWriter};
use crate::record;
use crate::segment::ReadAtContext;

pub(crate) const DIR_NAME: &str = "snapshots";
const MAGIC: &[u8; 8] = b"SKFSNAP2";
const MAGIC_V1: &[u8; 8] = b"SKFSNAP1";
const END_MAGIC: &[u8; 8] = b"SKFSNEND";
const TRAILER_BYTES: u64 = 8 + 4 + 4 + 8;
/// A sanity bound on the encoded metadata (a membership of a few thousand nodes fits).
const MAX_META_BYTES: u32 = 1 << 20;

/// The file name of the snapshot that ends at `log_id`.
pub(crate) fn file_name(log_id: LogId) -> String {
    format!("{:020}-{:020}.snap", log_id.index.0, log_id.term.0)
}

fn parse_file_name(name: &str) -> Option<LogId> {
    let (index, term) = name.strip_suffix(".snap")?.split_once('-')?;
    let digits = |text: &str| text.len() == 20 && text.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(index) || !digits(term) {
        return None;
    }
    Some(LogId::new(Term(term.parse().ok()?), Index(index.parse().ok()?)))
}

/// The snapshots in `dir`, oldest first.
pub(crate) fn list(dir: &Path) -> Result<Vec<LogId>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).context("list", dir)? {
        names.push(entry.context("list", dir)?.file_name().to_string_lossy().into_owned());
    }
    let mut log_ids: Vec<LogId> = names.iter().filter_map(|name| parse_file_name(name)).collect();
    log_ids.sort_by_key(|log_id| (log_id.index, log_id.term));
    Ok(log_ids)
}

/// Removes the `.tmp` files of snapshots that were never finished. Only while opening: a
/// writer may be streaming into one at any other time.
pub(crate) fn remove_unfinished(dir: &Path) -> Result<()> {
    fsutil::list_dir_removing_tmp(dir).map(|_| ())
}

/// Removes the snapshots older than `current`, except the newest of them: the newest two
/// are kept (snapshots newer than `current`, not yet installed, are kept too).
pub(crate) fn prune(dir: &Path, current: LogId) -> Result<()> {
    let older: Vec<LogId> =
        list(dir)?.into_iter().filter(|id| (id.index, id.term) < (current.index, current.term)).collect();
    for log_id in older.iter().rev().skip(1) {
        fsutil::remove_file(&dir.join(file_name(*log_id)))?;
    }
    Ok(())
}

/// Checks the snapshot for `log_id` in `dir` (header and trailer) and returns its metadata.
pub(crate) fn read_meta(dir: &Path, log_id: LogId) -> Result<Option<SnapshotMeta>> {
    let path = dir.join(file_name(log_id));
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("open snapshot", &path, error)),
    };
    let layout = Layout::read(&file, &path)?;
    if layout.meta.last_log_id != log_id {
        let reason = format!("the header says it ends at {}, the name says {log_id}", layout.meta.last_log_id);
        return Err(Error::corrupt(&path, 0, reason));
    }
    Ok(Some(layout.meta))
}

/// Where things are in a snapshot file, from its header and trailer.
struct Layout {
    meta: SnapshotMeta,
    data_offset: u64,
    data_bytes: u64,
    data_crc: u32,
}

impl Layout {
    /// Reads the header and trailer of the snapshot file `file`.
    fn read(file: &File, path: &Path) -> Result<Layout> {
        let len = file.metadata().context("stat", path)?.len();
        Layout::decode(len, path, &mut |buffer, offset| file.read_exact_at_context(buffer, offset, path))
    }

    /// Decodes the header and trailer of a snapshot file of `len` bytes, read through
    /// `read_at`. Every length read is checked against what the file holds before it is
    /// used, and the header's checksum before its metadata is decoded.
    fn decode(len: u64, path: &Path, read_at: &mut dyn FnMut(&mut [u8], u64) -> Result<()>) -> Result<Layout> {
        let mut prefix = [0u8; 12];
        if len < 12 + 4 + TRAILER_BYTES {
            return Err(Error::corrupt(path, 0, format!("{len} bytes is too short for a snapshot")));
        }
        read_at(&mut prefix, 0)?;
        let meta_len = record::u32_at(&prefix, 8);
        let v1 = &prefix[..8] == MAGIC_V1;
        if (&prefix[..8] != MAGIC && !v1) || meta_len > MAX_META_BYTES {
            return Err(Error::corrupt(path, 0, "not a Skiff snapshot (bad magic or header length)"));
        }
        let data_offset = 12 + u64::from(meta_len) + 4;
        if len < data_offset + TRAILER_BYTES {
            return Err(Error::corrupt(path, 0, "the file ends inside the header"));
        }
        let mut header = vec![0u8; data_offset as usize];
        read_at(&mut header, 0)?;
        let crc_at = data_offset as usize - 4;
        if crc32c::crc32c(&header[..crc_at]) != record::u32_at(&header, crc_at) {
            return Err(Error::corrupt(path, crc_at as u64, "snapshot header checksum mismatch"));
        }
        let meta = decode_meta(&header[12..crc_at], v1)
            .map_err(|error| Error::corrupt(path, 12, format!("a malformed snapshot header: {error}")))?;
        let mut trailer = [0u8; TRAILER_BYTES as usize];
        let trailer_at = len - TRAILER_BYTES;
        read_at(&mut trailer, trailer_at)?;
        let data_bytes = record::u64_at(&trailer, 0);
        if &trailer[16..24] != END_MAGIC
            || crc32c::crc32c(&trailer[..12]) != record::u32_at(&trailer, 12)
            || data_offset.checked_add(data_bytes) != Some(trailer_at)
        {
            return Err(Error::corrupt(path, trailer_at, "the snapshot trailer is damaged or the file was cut short"));
        }
        Ok(Layout { meta, data_offset, data_bytes, data_crc: record::u32_at(&trailer, 8) })
    }

    /// The error for data that does not match its checksum.
    fn data_corrupt(&self, path: &Path) -> Error {
        Error::corrupt(
            path,
            self.data_offset,
            "the snapshot data does not match its checksum; do not restore from it: move the file aside and let \
             the node fetch a snapshot from the leader",
        )
    }
}

/// Checks a whole snapshot file held in `bytes` (header, trailer, and the data's checksum)
/// and returns its metadata and data. Never panics, whatever the bytes: a stable entry
/// point for fuzzing the snapshot file decoder.
pub fn decode_snapshot_bytes(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8])> {
    let path = Path::new("<snapshot bytes>");
    let layout = Layout::decode(bytes.len() as u64, path, &mut |buffer, offset| {
        // `decode` only reads within the length it was given.
        buffer.copy_from_slice(&bytes[offset as usize..offset as usize + buffer.len()]);
        Ok(())
    })?;
    let data = &bytes[layout.data_offset as usize..(layout.data_offset + layout.data_bytes) as usize];
    if crc32c::crc32c(data) != layout.data_crc {
        return Err(layout.data_corrupt(path));
    }
    Ok((layout.meta, data))
}

/// Reads the data of the snapshot in `file` once, to check its checksum.
fn verify_data(file: &File, path: &Path, layout: &Layout) -> Result<()> {
    let mut buffer = vec![0u8; (1 << 20).min(layout.data_bytes) as usize];
    let (mut crc, mut offset, end) = (0, layout.data_offset, layout.data_offset + layout.data_bytes);
    while offset < end {
        let chunk = &mut buffer[..(end - offset).min(1 << 20) as usize];
        file.read_exact_at_context(chunk, offset, path)?;
        crc = crc32c::crc32c_append(crc, chunk);
        offset += chunk.len() as u64;
    }
    if crc != layout.data_crc {
        return Err(layout.data_corrupt(path));
    }
    Ok(())
}

/// The snapshot directory of a store, detached from it: a node's apply thread writes new
/// snapshots through it while the store goes on taking appends on another thread. (A
/// snapshot is only adopted by the store, with [`skiff_raft::Storage::compact`] or
/// `install_snapshot`, once its writer finished.)
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub(crate) fn new(dir: PathBuf) -> SnapshotDir {
        SnapshotDir { dir }
    }

    /// Starts writing the snapshot for `meta`: see [`SnapshotWriter`].
    pub fn writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        SnapshotWriter::create(&self.dir, meta)
    }
}

/// Streams a snapshot's data into a new snapshot file; [`SnapshotWriter::finish`] makes it
/// durable and visible. Dropped without `finish`, it removes its temporary file.
#[derive(Debug)]
pub struct SnapshotWriter {
    meta: SnapshotMeta,
    dir: PathBuf,
    tmp_path: PathBuf,
    writer: Option<BufWriter<FileWriter>>,
    data_bytes: u64,
    crc: u32,
}

/// Decodes a snapshot's metadata (`v1`: a file without member addresses). The membership's
/// invariant is checked: the bytes are untrusted.
fn decode_meta(bytes: &[u8], v1: bool) -> std::result::Result<SnapshotMeta, String> {
    let (last_log_id, rest): (LogId, &[u8]) = postcard::take_from_bytes(bytes).map_err(|error| error.to_string())?;
    let membership = record::decode_membership(rest, v1)?;
    Ok(SnapshotMeta { last_log_id, membership })
}

impl SnapshotWriter {
    pub(crate) fn create(dir: &Path, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        let tmp_path = dir.join(format!("{}.tmp", file_name(meta.last_log_id)));
        let file = fsutil::create_file(&tmp_path, false)?;
        let file = FileWriter { file, path: tmp_path.clone(), offset: 0 };
        let mut header = MAGIC.to_vec();
        let encoded = postcard::to_allocvec(&meta)
            .map_err(|error| Error::InvalidInput(format!("cannot encode snapshot metadata: {error}")))?;
        header.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        header.extend_from_slice(&encoded);
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        writer.write_all(&header).context("write to", &tmp_path)?;
        Ok(SnapshotWriter { meta, dir: dir.to_path_buf(), tmp_path, writer: Some(writer), data_bytes: 0, crc: 0 })
    }

    /// The metadata this snapshot is written for.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Writes the trailer, fsyncs, renames the file into place and fsyncs the directory.
    /// Returns the snapshot's metadata; from here on a restart finds this snapshot.
    pub fn finish(mut self) -> Result<SnapshotMeta> {
        let mut writer = self.writer.take().expect("finish runs once");
        let mut trailer = Vec::with_capacity(TRAILER_BYTES as usize);
        trailer.extend_from_slice(&self.data_bytes.to_le_bytes());
        trailer.extend_from_slice(&self.crc.to_le_bytes());
        let crc = crc32c::crc32c(&trailer);
        trailer.extend_from_slice(&crc.to_le_bytes());
        trailer.extend_from_slice(END_MAGIC);
        writer.write_all(&trailer).context("write to", &self.tmp_path)?;
        let file = writer.into_inner().map_err(|error| Error::io("write to", &self.tmp_path, error.into_error()))?.file;
        fsutil::sync_all(&file, &self.tmp_path)?;
        drop(file);
        let path = self.dir.join(file_name(self.meta.last_log_id));
        fsutil::rename(&self.tmp_path, &path)?;
        fsutil::sync_dir(&self.dir)?;
        Ok(self.meta.clone())
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let writer = self.writer.as_mut().ok_or_else(|| io::Error::other("the snapshot is finished"))?;
        let written = writer.write(data)?;
        self.crc = crc32c::crc32c_append(self.crc, &data[..written]);
        self.data_bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().map_or(Ok(()), BufWriter::flush)
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // Not finished: the partial file must never be taken for a snapshot.
            let _ = fsutil::remove_file(&self.tmp_path);
        }
    }
}

/// Streams a snapshot's data. Opening it reads the data once and checks its checksum, so
/// a damaged snapshot is refused before anything decodes a byte of it; the stream checks
/// the checksum again at its end (in case the file changed in between).
#[derive(Debug)]
pub struct SnapshotReader {
    meta: SnapshotMeta,
    path: PathBuf,
    reader: io::Take<BufReader<File>>,
    data_bytes: u64,
    crc: u32,
    expected_crc: u32,
}

impl SnapshotReader {
    pub(crate) fn open(dir: &Path, log_id: LogId) -> Result<SnapshotReader> {
        let path = dir.join(file_name(log_id));
        let file = File::open(&path).context("open snapshot", &path)?;
        let layout = Layout::read(&file, &path)?;
        // Checked whole before the first byte reaches the caller: a state machine's restore
        // decodes what it reads, and must only ever see verified bytes.
        verify_data(&file, &path, &layout)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        io::Seek::seek(&mut reader, io::SeekFrom::Start(layout.data_offset)).context("seek in", &path)?;
        Ok(SnapshotReader {
            meta: layout.meta,
            path,
            reader: reader.take(layout.data_bytes),
            data_bytes: layout.data_bytes,
            crc: 0,
            expected_crc: layout.data_crc,
        })
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The length of the data, for progress and for the transport's chunking.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.reader.read(buffer)?;
        self.crc = crc32c::crc32c_append(self.crc, &buffer[..read]);
        if self.reader.limit() == 0 && !buffer.is_empty() && self.crc != self.expected_crc {
            let message = format!(
                "snapshot {} is corrupt (data checksum mismatch); do not restore from it: move it aside and \
                 let the node fetch a snapshot from the leader",
                self.path.display()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        if read == 0 && self.reader.limit() > 0 {
            let message = format!("snapshot {} ended early", self.path.display());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message));
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use skiff_raft::{Membership, NodeId};

    use super::*;

    /// A whole snapshot file in the format before member addresses (`SKFSNAP1`).
    fn v1_file(log_id: LogId, voters: &BTreeSet<NodeId>, data: &[u8]) -> Vec<u8> {
        let meta = postcard::to_allocvec(&(log_id, voters, BTreeSet::<NodeId>::new())).unwrap();
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&meta);
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
        bytes.extend_from_slice(data);
        let mut trailer = (data.len() as u64).to_le_bytes().to_vec();
        trailer.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        trailer.extend_from_slice(&crc32c::crc32c(&trailer).to_le_bytes());
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(END_MAGIC);
        bytes
    }

    #[test]
    fn a_snapshot_written_before_addresses_existed_still_reads() {
        let voters: BTreeSet<NodeId> = [NodeId(1), NodeId(2), NodeId(3)].into();
        let log_id = LogId::new(Term(2), Index(40));
        let bytes = v1_file(log_id, &voters, b"state");
        let (meta, data) = decode_snapshot_bytes(&bytes).unwrap();
        assert_eq!(meta, SnapshotMeta { last_log_id: log_id, membership: Membership::with_voters(voters) });
        assert_eq!(data, b"state");
    }
}
