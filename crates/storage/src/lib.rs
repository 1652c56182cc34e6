//! # skiff-storage: where a Skiff node keeps its promises
//!
//! Raft is only safe if a node remembers, across crashes, what it told others: its term and
//! vote (or it could vote twice in one term) and the entries it acknowledged (or a
//! committed entry could vanish from a majority). This crate is that memory:
//! [`DiskStorage`], a [`skiff_raft::Storage`] kept in one data directory, and
//! [`MemStorage`] (re-exported from the core) for tests and the simulator. Both pass one
//! [`conformance`] suite.
//!
//! ## The data directory
//! ```text
//! <data-dir>/node-id                 which node and cluster this is (text; written last at creation)
//! <data-dir>/lock                    flock'd while open: one process per directory
//! <data-dir>/hardstate               checkpoint of term, vote, commit (atomic replace)
//! <data-dir>/wal/<first index>.wal   segments: 20-digit zero-padded first index, e.g. 00000000000000000001.wal
//! <data-dir>/snapshots/<index>-<term>.snap   the state machine's snapshots (20 digits each); the newest 2 kept
//! ```
//!
//! ## On-disk format (little-endian; CRC32C = Castagnoli)
//! - **Segment**: a 32-byte header (`"SKIFFWAL"`, version 1, first index, CRC32C of the
//!   header), then records, then zeros (the space is preallocated: with `fallocate`, or
//!   as a spare file a background thread filled with zeros, see `spare.rs`; a leftover
//!   `spare.wal.tmp` is removed on open). A segment takes writes until it holds about
//!   [`DiskOptions::segment_bytes`] (64 MiB by default), or until a spare is ready to
//!   replace a segment made with `fallocate`.
//! - **Record**: `length: u32 | crc: u32 | body`, with `crc = CRC32C(length bytes ++ body)`.
//!   The body is an entry (`1 | index: u64 | term: u64 | payload`, payload `0` empty,
//!   `1 | bytes` a command, `2 | postcard(Membership)`) or a hard state
//!   (`2 | seq: u64 | term: u64 | has_vote: u8 | vote: u64 | commit: u64`). Eight zero
//!   bytes where a header would be mark the end of the written part, when only zeros
//!   follow them to the end of the file.
//! - **Hard state** goes into the WAL as a record, so it shares the fdatasync of the
//!   entries of the same `Ready`. The `hardstate` file (`"SKFHARD1" | the same fields | CRC32C`,
//!   replaced by write-temp, fsync, rename, fsync-directory) checkpoints it whenever the
//!   WAL is about to lose its latest record (segments removed, log replaced or cut). The
//!   higher sequence number wins on open.
//! - **Snapshot**: `"SKFSNAP1" | length: u32 | postcard(SnapshotMeta) | CRC32C`, the data,
//!   then a trailer `data length: u64 | CRC32C(data) | CRC32C(trailer) | "SKFSNEND"`.
//!   Written to `.tmp`, fsync'd, renamed, directory fsync'd. The snapshot at index 0
//!   records the initial membership of a new directory and holds no data.
//!
//! ## Writes and durability
//! [`skiff_raft::Storage::append`] and [`skiff_raft::Storage::set_hard_state`] `pwrite`
//! records at the end of the last segment; [`skiff_raft::Storage::sync`] issues **one**
//! `fdatasync` for all of them (plus an fsync of `wal/` if a segment was created or removed):
//! group commit, one per `Ready`. Rolling to a new segment first syncs the old one. An
//! append that replaces the log's tail cuts the segment at the first replaced record and
//! fsyncs the cut (and the removal of later segments) before writing anything new, so an
//! old record can never reappear after the new ones. Compaction ([`skiff_raft::Storage::compact`])
//! and [`skiff_raft::Storage::install_snapshot`] require the snapshot's file to be written
//! first ([`DiskStorage::snapshot_writer`]); compaction then removes the segments wholly
//! below the snapshot, installation replaces the whole WAL.
//!
//! **Guarantees.** After `sync` returns `Ok`, everything written before it survives a
//! process crash or power loss (given a disk that honours `fdatasync`). After any write or
//! sync fails (a full disk, an I/O error), the store is poisoned: every later write and
//! sync fails, so nothing that may not be durable is ever reported durable; restart to
//! recover what was synced. A failed `fsync`/`fdatasync` ([`Error::SyncFailed`]) is never
//! retried: the kernel may have dropped the pages it could not write while still showing
//! them, and a second sync may succeed without writing them. The restart reads the WAL
//! with `O_DIRECT` so that it sees the disk, not those pages. Every record read back (at open or later) is checksummed:
//! nothing corrupt is served.
//!
//! ## Recovery on open
//! - The segments are read with `O_DIRECT`, from the device and not the page cache, so a
//!   write the kernel failed to flush (a failed fsync) is not taken for a synced one
//!   ([`Recovery::read_directly`]; where the file system refuses `O_DIRECT`, ordinary reads
//!   and a warning: see `scan.rs`).
//! - The end of the log is where only zeros follow, to the end of the segment.
//! - The **last segment**'s records are scanned up to the first that is not valid (eight
//!   zero bytes where a header should be count as not valid when something non-zero
//!   follows). If no valid record follows it, it is a torn write of something never
//!   synced: the segment is cut there, durably, and a `tracing` warning names the file and
//!   offset ([`Recovery::torn_tail`]).
//! - A bad (or zeroed) record with a valid record after it, a bad record or a non-zero
//!   byte after the end of any earlier segment, an earlier segment whose records stop
//!   before the next segment begins, a damaged segment header, an entry with an unexpected
//!   index or a term lower than the one before it: **refuse to start**
//!   ([`Error::Corrupt`]), naming file and offset.
//! - A segment missing between two others (or between the snapshot and the log):
//!   **refuse** ([`Error::MissingSegment`]).
//! - A directory of another node or cluster: **refuse** ([`Error::WrongNode`],
//!   [`Error::WrongCluster`], naming both). Another process holding it: refuse.
//! - The newest snapshot is the snapshot; entries it covers are ignored (and segments
//!   wholly below it removed). If the WAL does not contain the snapshot's last entry (a
//!   crash while installing a snapshot from the leader), the WAL is replaced by an empty one.
//! - A hard state whose commit index is past the end of the log: refuse.
//!
//! ## Reads and memory
//! The newest entries (up to [`DiskOptions::tail_cache_bytes`]) are served from memory;
//! older ones are read from the segments through an in-memory index of record offsets
//! (4 bytes per entry) and checksummed again. Terms are kept as runs (one per term
//! change), so `term(index)` never touches the disk. Reads respect the byte limit.
//!
//! ## Testing power cuts
//! With the `power-cut` feature, [`power_cut::PowerCut`] records every change the store
//! makes under a directory and writes what a power cut could leave of it (synced data, a
//! prefix of the rest torn at any byte, directory entries once their directory is synced).
//! The decoders of outside bytes have entry points that take bytes in memory:
//! [`scan_segment_bytes`], [`decode_snapshot_bytes`], [`decode_hard_state_file`].
//!
//! ## What this crate does not do
//! It does not detect a disk that loses acknowledged writes (a lying write cache); a
//! power loss that persists a later page of one write but not an earlier one looks like
//! damage and is refused rather than repaired; segments are kept open (one descriptor each).
#![deny(unsafe_code)]

mod backup;
mod cache;
pub mod conformance;
mod disk;
mod error;
#[cfg(test)]
mod fault_tests;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod hardstate;
mod identity;
#[cfg(feature = "power-cut")]
pub mod power_cut;
mod record;
mod scan;
mod seed;
mod segment;
mod snapshot;
mod spare;
mod wal;

pub use backup::{BACKUP_VERSION, BackupHeader, BackupReader, BackupWriter};
pub use disk::{DiskOptions, DiskStorage, Recovery};
pub use error::{Error, Result};
pub use hardstate::decode_hard_state_file;
pub use identity::{ClusterIdFile, is_cluster_id};
pub use scan::{SegmentSummary, TornTail, scan_segment_bytes};
pub use seed::ForcedCluster;
pub use skiff_raft::MemStorage;
pub use snapshot::{SnapshotDir, SnapshotReader, SnapshotWriter, decode_snapshot_bytes};
