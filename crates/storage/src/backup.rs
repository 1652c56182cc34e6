//! Backup files: a snapshot of a cluster's state taken for an operator (`GET /v1/snapshot`,
//! `skiff snapshot save`), to be inspected and restored into a new cluster. Unlike the
//! snapshot files of a data directory, a backup travels (over HTTP, between machines): it
//! is written as a stream whose length is not known in advance, read as a stream, and
//! describes itself (the cluster, the index and term it was taken at, the members).
//!
//! ```text
//! backup  = "SKIFFBAK" | version: u32 = 1
//!           | header length: u32 (at most 1 MiB) | postcard(BackupHeader)
//!           | CRC32C of every byte before: u32
//!           | frame* | 0: u32                         (the end of the data)
//!           | data length: u64 | CRC32C of the data: u32 | CRC32C of the 12 bytes before: u32
//!           | "SKIFFEND"
//! frame   = length: u32 (1 ..= 1 MiB) | that many bytes of the state machine's snapshot
//! ```
//!
//! Little-endian. The data is the state machine's own snapshot, byte for byte what its
//! `snapshot` writes (the data of a snapshot file); [`BackupHeader::state_machine`] names
//! its format. Framing lets a writer stream data of unknown length and a reader
//! stop at the exact end without looking ahead; the trailer's checksum covers the data.
//!
//! A backup file is untrusted input: [`BackupReader`] checks every length against a bound
//! before it uses it (it never allocates more than the header's 1 MiB), checks the header's
//! checksum before decoding it and the membership's invariant after, and its data stream
//! fails (rather than ends) at a truncation, a damaged frame, or a data checksum that does
//! not match: a reader that reaches the end of the data without an error has verified it.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use skiff_raft::{LogId, Membership, NodeId};

use crate::error::{Error, Result};
use crate::record;

const MAGIC: &[u8; 8] = b"SKIFFBAK";
const END_MAGIC: &[u8; 8] = b"SKIFFEND";
/// The version of the layout above; a reader refuses any other.
pub const BACKUP_VERSION: u32 = 1;
/// The largest header accepted (a membership of thousands of members fits).
const MAX_HEADER_BYTES: u32 = 1 << 20;
/// The largest frame accepted, and the size the writer fills its frames to.
const MAX_FRAME_BYTES: u32 = 1 << 20;
const TRAILER_BYTES: usize = 8 + 4 + 4 + 8;

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The last entry the state covers: its index and term.
    pub last_log_id: LogId,
    /// The name of the cluster it was taken from.
    pub cluster: String,
    /// That cluster's membership at `last_log_id`, with the members' addresses. A restore
    /// does not use it (the new cluster's file says who its members are); it is there for
    /// the operator.
    pub membership: Membership,
    /// The node that wrote it.
    pub node: NodeId,
    /// When it was taken, in milliseconds since the Unix epoch (the writer's clock).
    pub created_unix_ms: u64,
    /// The format of the data: which state machine wrote it (`skiff-kv`).
    pub state_machine: String,
}

/// Streams a backup into `out`: the header at once, then the data written to it in frames;
/// [`BackupWriter::finish`] writes the end. Dropped without `finish`, it leaves a backup
/// that every reader refuses (no trailer).
pub struct BackupWriter<W: Write> {
    out: W,
    frame: Vec<u8>,
    data_bytes: u64,
    crc: u32,
}

impl<W: Write> BackupWriter<W> {
    /// Writes the magic, version and `header` to `out`.
    pub fn new(mut out: W, header: &BackupHeader) -> io::Result<BackupWriter<W>> {
        let encoded = postcard::to_allocvec(header).map_err(io::Error::other)?;
        if encoded.len() > MAX_HEADER_BYTES as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the backup header is over 1 MiB"));
        }
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&encoded);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        out.write_all(&bytes)?;
        Ok(BackupWriter { out, frame: Vec::with_capacity(MAX_FRAME_BYTES as usize), data_bytes: 0, crc: 0 })
    }

    fn write_frame(&mut self) -> io::Result<()> {
        if self.frame.is_empty() {
            return Ok(());
        }
        self.out.write_all(&(self.frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.frame)?;
        self.frame.clear();
        Ok(())
    }

    /// Writes the last frame, the end mark and the trailer, flushes, and returns the
    /// writer and the data's length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.write_frame()?;
        let mut end = 0u32.to_le_bytes().to_vec();
        let mut trailer = self.data_bytes.to_le_bytes().to_vec();
        trailer.extend_from_slice(&self.crc.to_le_bytes());
        let trailer_crc = crc32c::crc32c(&trailer);
        trailer.extend_from_slice(&trailer_crc.to_le_bytes());
        trailer.extend_from_slice(END_MAGIC);
        end.extend_from_slice(&trailer);
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok((self.out, self.data_bytes))
    }
}

impl<W: Write> Write for BackupWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = MAX_FRAME_BYTES as usize - self.frame.len();
        let taken = &data[..data.len().min(room)];
        self.frame.extend_from_slice(taken);
        self.crc = crc32c::crc32c_append(self.crc, taken);
        self.data_bytes += taken.len() as u64;
        if self.frame.len() == MAX_FRAME_BYTES as usize {
            self.write_frame()?;
        }
        Ok(taken.len())
    }

    /// Flushes what is written so far, frames included, to `out`.
    fn flush(&mut self) -> io::Result<()> {
        self.write_frame()?;
        self.out.flush()
    }
}

/// Reads a backup: [`BackupReader::open`] reads and checks the header; reading from it then
/// yields the data, checked as described in the module documentation.
pub struct BackupReader<R: Read> {
    input: R,
    header: BackupHeader,
    /// The bytes of the current frame not yet read.
    frame_left: u32,
    /// Where the data is, counted from the start, for messages.
    offset: u64,
    data_bytes: u64,
    crc: u32,
    done: bool,
}

/// An `io::Error` saying the backup is damaged at `offset`.
fn damaged(offset: u64, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the backup is damaged at byte {offset}: {reason}; do not restore from it"),
    )
}

/// Fills `buffer` from `input`, saying that the backup was cut short if it ends first.
fn read_exact(input: &mut impl Read, buffer: &mut [u8], offset: u64, what: &str) -> io::Result<()> {
    input.read_exact(buffer).map_err(|error| match error.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the backup ends at byte {offset} or soon after, inside {what}: it was cut short; do not restore from it"),
        ),
        _ => error,
    })
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the header of the backup `input` holds. `name` (a path, a URL)
    /// names it in errors.
    pub fn open(mut input: R, name: &str) -> Result<BackupReader<R>> {
        let failed = |error: io::Error| Error::InvalidInput(format!("{name}: {error}"));
        let mut prefix = [0u8; 16];
        read_exact(&mut input, &mut prefix, 0, "the header").map_err(failed)?;
        if &prefix[..8] != MAGIC {
            return Err(Error::InvalidInput(format!("{name} is not a Skiff backup (it does not start with SKIFFBAK)")));
        }
        let version = record::u32_at(&prefix, 8);
        if version != BACKUP_VERSION {
            return Err(Error::InvalidInput(format!(
                "{name} is a Skiff backup of format version {version}; this build reads version {BACKUP_VERSION} only"
            )));
        }
        let header_len = record::u32_at(&prefix, 12);
        if header_len > MAX_HEADER_BYTES {
            return Err(failed(damaged(12, format!("a header of {header_len} bytes (at most {MAX_HEADER_BYTES})"))));
        }
        let mut header = prefix.to_vec();
        header.resize(16 + header_len as usize + 4, 0);
        read_exact(&mut input, &mut header[16..], 16, "the header").map_err(failed)?;
        let crc_at = header.len() - 4;
        if crc32c::crc32c(&header[..crc_at]) != record::u32_at(&header, crc_at) {
            return Err(failed(damaged(crc_at as u64, "the header's checksum does not match")));
        }
        let decoded: BackupHeader = postcard::from_bytes(&header[16..crc_at])
            .map_err(|error| failed(damaged(16, format!("a malformed header ({error})"))))?;
        if !decoded.membership.is_valid() {
            return Err(failed(damaged(
                16,
                "its membership is not valid (a voter is also a learner, or an address is too long or of a non-member)",
            )));
        }
        Ok(BackupReader {
            input,
            header: decoded,
            frame_left: 0,
            offset: header.len() as u64,
            data_bytes: 0,
            crc: 0,
            done: false,
        })
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// The data bytes read so far (all of them once the reader reached its end).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Reads the rest of the data, checking it, and returns the whole data's length.
    pub fn verify_to_end(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())?;
        Ok(self.data_bytes)
    }

    /// Reads the next frame's length, or the end mark and the trailer (then checks them).
    fn next_frame(&mut self) -> io::Result<()> {
        let mut length = [0u8; 4];
        read_exact(&mut self.input, &mut length, self.offset, "a frame length")?;
        let length = u32::from_le_bytes(length);
        let at = self.offset;
        self.offset += 4;
        if length > MAX_FRAME_BYTES {
            return Err(damaged(at, format!("a frame of {length} bytes (at most {MAX_FRAME_BYTES})")));
        }
        if length > 0 {
            self.frame_left = length;
            return Ok(());
        }
        let mut trailer = [0u8; TRAILER_BYTES];
        read_exact(&mut self.input, &mut trailer, self.offset, "the trailer")?;
        if &trailer[16..] != END_MAGIC || crc32c::crc32c(&trailer[..12]) != record::u32_at(&trailer, 12) {
            return Err(damaged(self.offset, "the trailer is damaged"));
        }
        let (length, crc) = (record::u64_at(&trailer, 0), record::u32_at(&trailer, 8));
        if length != self.data_bytes {
            let reason = format!("the trailer counts {length} bytes of data, the frames held {}", self.data_bytes);
            return Err(damaged(self.offset, reason));
        }
        if crc != self.crc {
            return Err(damaged(self.offset, "the data does not match its checksum"));
        }
        let mut extra = [0u8; 1];
        if self.input.read(&mut extra)? != 0 {
            return Err(damaged(self.offset + TRAILER_BYTES as u64, "bytes follow the end of the backup"));
        }
        self.done = true;
        Ok(())
    }
}

impl<R: Read> Read for BackupReader<R> {
    /// The data; `Ok(0)` only once the whole backup is read and verified.
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if buffer.is_empty() {
            return Ok(0);
        }
        while self.frame_left == 0 {
            if self.done {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let wanted = buffer.len().min(self.frame_left as usize);
        let read = self.input.read(&mut buffer[..wanted])?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the backup ends at byte {} inside a frame: it was cut short; do not restore from it",
                    self.offset
                ),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buffer[..read]);
        self.frame_left -= read as u32;
        self.offset += read as u64;
        self.data_bytes += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use skiff_raft::{Index, Term};

    use super::*;

    fn header() -> BackupHeader {
        let mut membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        membership.addresses.insert(NodeId(2), "raft=10.0.0.2:7000 http=10.0.0.2:8000".into());
        BackupHeader {
            last_log_id: LogId::new(Term(4), Index(1234)),
            cluster: "prod".into(),
            membership,
            node: NodeId(2),
            created_unix_ms: 1_700_000_000_000,
            state_machine: "test".into(),
        }
    }

    /// A backup of `data`, written in writes of `step` bytes.
    fn backup(data: &[u8], step: usize) -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new(), &header()).unwrap();
        for chunk in data.chunks(step.max(1)) {
            writer.write_all(chunk).unwrap();
        }
        let (bytes, length) = writer.finish().unwrap();
        assert_eq!(length, data.len() as u64);
        bytes
    }

    fn read_all(bytes: &[u8]) -> io::Result<(BackupHeader, Vec<u8>)> {
        let mut reader = BackupReader::open(bytes, "test").map_err(io::Error::other)?;
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok((reader.header().clone(), data))
    }

    #[test]
    fn data_of_any_length_comes_back_with_its_header() {
        let big: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 7 % 251) as u8).collect();
        for (data, step) in [(&b""[..], 1), (&b"x"[..], 1), (&big[..], 65_536), (&big[..], 5 << 20)] {
            let (header, back) = read_all(&backup(data, step)).unwrap();
            assert_eq!(header, self::header());
            assert_eq!(back, data);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data: Vec<u8> = (0..5000).map(|i| i as u8).collect();
        let bytes = backup(&data, 1000);
        for cut in 0..bytes.len() {
            let result = read_all(&bytes[..cut]);
            assert!(result.is_err(), "a backup cut at {cut} of {} bytes was accepted", bytes.len());
        }
    }

    #[test]
    fn every_flipped_byte_is_an_error() {
        let data: Vec<u8> = (0..300).map(|i| i as u8).collect();
        let bytes = backup(&data, 100);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(read_all(&damaged).is_err(), "a flipped byte at {at} was accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_all(&longer).unwrap_err().to_string().contains("follow the end"));
    }

    #[test]
    fn huge_lengths_are_refused_before_anything_is_allocated() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = BackupReader::open(&bytes[..], "crafted").err().unwrap().to_string();
        assert!(error.contains("a header of 4294967295 bytes"), "{error}");

        // A valid header, then a frame claiming 4 GiB.
        let mut bytes = backup(b"", 1);
        let end = bytes.len() - TRAILER_BYTES - 4;
        bytes.truncate(end);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = read_all(&bytes).unwrap_err().to_string();
        assert!(error.contains("a frame of 4294967295 bytes"), "{error}");
    }

    #[test]
    fn other_files_and_versions_are_named() {
        let error = BackupReader::open(&b"SKFSNAP2 and more bytes"[..], "x.snap").err().unwrap().to_string();
        assert!(error.contains("x.snap is not a Skiff backup"), "{error}");
        let mut bytes = backup(b"data", 4);
        bytes[8] = 2;
        let error = BackupReader::open(&bytes[..], "new.snap").err().unwrap().to_string();
        assert!(error.contains("format version 2"), "{error}");
    }
}
