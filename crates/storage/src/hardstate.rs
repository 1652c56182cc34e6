//! The `hardstate` file: a checkpoint of the hard state, replaced atomically.
//!
//! ```text
//! hardstate = "SKFHARD1" | seq: u64 | term: u64 | has_vote: u8 | vote: u64 | commit: u64
//!             | CRC32C of everything before: u32          (little-endian)
//! ```
//!
//! Hard state updates go to the WAL as records, so they share the one fdatasync of a
//! `Ready` with its entries. This file holds the latest one whenever the WAL is about to
//! lose its record (segments removed by compaction, a snapshot installed, a tail cut):
//! written as `hardstate.tmp`, fsync'd, renamed over `hardstate`, directory fsync'd. On
//! open, the hard state with the higher sequence number, here or in the WAL, wins.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use skiff_raft::HardState;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::record::{self, HARD_STATE_BYTES};

pub(crate) const FILE_NAME: &str = "hardstate";
const MAGIC: &[u8; 8] = b"SKFHARD1";
const FILE_BYTES: usize = 8 + (HARD_STATE_BYTES - 1) + 4;

/// The checkpointed hard state and its sequence number, if the file exists.
pub(crate) fn read(dir: &Path) -> Result<Option<(u64, HardState)>> {
    let path = dir.join(FILE_NAME);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("open", &path, error)),
    };
    // One byte more than the file should hold, however large it is: a longer file is not
    // read into memory.
    let mut bytes = Vec::with_capacity(FILE_BYTES + 1);
    file.take(FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|error| Error::io("read", &path, error))?;
    decode(&path, &bytes).map(Some)
}

/// Decodes a hard state file held in `bytes`: its sequence number and hard state. Never
/// panics, whatever the bytes: a stable entry point for fuzzing.
pub fn decode_hard_state_file(bytes: &[u8]) -> Result<(u64, HardState)> {
    decode(Path::new("<hard state bytes>"), bytes)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<(u64, HardState)> {
    if bytes.len() != FILE_BYTES || &bytes[..8] != MAGIC {
        return Err(Error::corrupt(path, 0, format!("not a hard state file ({} bytes)", bytes.len())));
    }
    let body_end = FILE_BYTES - 4;
    if crc32c::crc32c(&bytes[..body_end]) != record::u32_at(bytes, body_end) {
        return Err(Error::corrupt(path, body_end as u64, "hard state checksum mismatch"));
    }
    record::decode_hard_state(&bytes[8..body_end]).ok_or_else(|| Error::corrupt(path, 8, "a malformed hard state"))
}

/// Replaces the file atomically with `hard_state` and its sequence number.
pub(crate) fn write(dir: &Path, seq: u64, hard_state: &HardState) -> Result<()> {
    let mut bytes = Vec::with_capacity(FILE_BYTES);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&record::hard_state_bytes(seq, hard_state));
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    fsutil::write_atomically(dir, FILE_NAME, &bytes)
}
