//! The next WAL segment's file, written full of zeros by a background thread before the log
//! needs it.
//!
//! Why zeros and not only `fallocate`: on ext4 (and XFS) space reserved with `fallocate` is
//! an *unwritten extent*. The first write into it converts the extent, which is a metadata
//! change, so every `fdatasync` of an append must also commit the file system's journal.
//! Into blocks that already hold written zeros, an append is a pure overwrite and
//! `fdatasync` flushes only the data. Measured on the benchmark VM (ext4, virtio disk):
//! 4 KiB write + fdatasync took about 150 µs into `fallocate`d space and about 95 µs into
//! zero-filled space. That wait is on the path of every acknowledged write, and the log
//! waits for it on a leader and again on each follower, so writing 64 MiB of zeros per
//! segment, off the write path, pays for itself many times over.
//!
//! Zero-filling takes a while (64 MiB), so it happens on its own thread while the current
//! segment fills up. When the log rolls over and the spare is not ready (a burst of writes,
//! a slow disk), the segment is created as before, with `fallocate`: never a wait.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::error::Result;
use crate::fsutil;

/// The spare's file name: a `.tmp` file, so a spare left by a crash is removed when the WAL
/// is opened, like any other half-done file.
pub(crate) const SPARE_NAME: &str = "spare.wal.tmp";

/// Zeros are written in pieces this large, checking for cancellation in between.
const CHUNK_BYTES: usize = 1 << 20;

/// A spare being written, or written.
#[derive(Debug)]
pub(crate) struct Spare {
    path: PathBuf,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<File>>>,
}

impl Spare {
    /// Starts writing a spare of `bytes` zeros in `dir`.
    pub fn start(dir: &Path, bytes: u64) -> Spare {
        let path = dir.join(SPARE_NAME);
        let cancel = Arc::new(AtomicBool::new(false));
        let thread = {
            let (path, cancel) = (path.clone(), Arc::clone(&cancel));
            std::thread::Builder::new().name("skiff-wal-spare".into()).spawn(move || write_zeros(&path, bytes, &cancel))
        };
        // A thread that cannot start only means no spare: segments are created the old way.
        Spare { path, cancel, thread: thread.ok() }
    }

    /// Whether the writer is done (successfully or not).
    pub fn is_ready(&self) -> bool {
        self.thread.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// The spare's path and file, opened for reading and writing, once [`Spare::is_ready`]
    /// and complete and durable; `None` if the writer failed (its file is then removed).
    pub fn into_file(mut self) -> Option<(PathBuf, File)> {
        // Tests that make preallocation fail stand for a full disk: no spare could have been
        // written either, so the fallback (and its error) is what they exercise.
        #[cfg(test)]
        if fsutil::fault::preallocation_fails() {
            return None;
        }
        match self.thread.take()?.join() {
            Ok(Ok(file)) => Some((self.path.clone(), file)),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not prepare the next WAL segment; creating it with fallocate");
                let _ = fsutil::remove_file(&self.path);
                None
            }
            Err(_) => {
                let _ = fsutil::remove_file(&self.path);
                None
            }
        }
    }

    /// Waits for the writer; whether it is there to wait for (for tests).
    #[cfg(test)]
    pub fn wait(&self) -> bool {
        while self.thread.as_ref().is_some_and(|thread| !thread.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.thread.is_some()
    }
}

impl Drop for Spare {
    /// Stops the writer (it checks between chunks, so this is quick) and removes the file.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            let _ = fsutil::remove_file(&self.path);
        }
    }
}

fn write_zeros(path: &Path, bytes: u64, cancel: &AtomicBool) -> Result<File> {
    let file = fsutil::create_file(path, true)?;
    let zeros = vec![0u8; CHUNK_BYTES];
    let mut written = 0;
    while written < bytes {
        if cancel.load(Ordering::Relaxed) {
            return Err(crate::error::Error::InvalidInput("the spare segment was cancelled".into()));
        }
        let chunk = (bytes - written).min(CHUNK_BYTES as u64) as usize;
        fsutil::write_at(&file, path, &zeros[..chunk], written)?;
        written += chunk as u64;
    }
    fsutil::sync_all(&file, path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use skiff_raft::{Entry, Index, LogId, Payload, Term};

    use super::SPARE_NAME;
    use crate::conformance::checkable_payload;
    use crate::segment::{ReadLimit, segment_name};
    use crate::wal::Wal;

    const SEGMENT_BYTES: u64 = 64 << 10;

    fn entries(from: u64, count: u64) -> Vec<Entry> {
        (from..from + count)
            .map(|index| Entry {
                log_id: LogId::new(Term(1), Index(index)),
                payload: Payload::Command(checkable_payload(index, 1)),
            })
            .collect()
    }

    /// Appends and syncs a batch of 20 entries from `next`.
    fn append(wal: &mut Wal, next: &mut u64) {
        wal.append(&entries(*next, 20)).expect("append");
        wal.sync().expect("sync");
        *next += 20;
    }

    fn read_all(wal: &Wal, next: u64) -> Vec<Entry> {
        let mut read = Vec::new();
        let complete = wal.read(Index(1), Index(next), &mut ReadLimit::new(u64::MAX), &mut read).expect("read");
        assert!(complete);
        read
    }

    #[test]
    fn the_log_moves_to_a_zero_filled_spare_once_it_is_ready() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut wal, _) = Wal::open(dir.path(), SEGMENT_BYTES, true, Index(1)).expect("open");
        let mut next = 1;
        append(&mut wal, &mut next);
        assert!(!wal.wait_for_spare(), "no spare for a store that has hardly been written");

        // Past a quarter of a segment, a spare is written; the next append moves to it,
        // although the first segment (made with fallocate) is far from full.
        while !wal.wait_for_spare() {
            append(&mut wal, &mut next);
        }
        assert!(dir.path().join(SPARE_NAME).exists());
        append(&mut wal, &mut next);
        assert_eq!((wal.segment_paths().len(), wal.segments_from_spare), (2, 1));

        // The new segment has the spare's whole length, zeros after its records: appends
        // into it overwrite written blocks. Its header names its first entry.
        let second = &wal.segment_paths()[1];
        let bytes = std::fs::read(second).expect("read the segment");
        assert_eq!(bytes.len() as u64, SEGMENT_BYTES);
        assert!(bytes[bytes.len() - 1024..].iter().all(|&byte| byte == 0));
        let first = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        assert_eq!(second.file_name().and_then(|name| name.to_str()), Some(segment_name(Index(first)).as_str()));

        // A full segment rolls over to the next spare as well.
        while wal.segment_paths().len() < 3 {
            wal.wait_for_spare();
            append(&mut wal, &mut next);
        }
        assert_eq!(wal.segments_from_spare, 2);
        assert_eq!(read_all(&wal, next), entries(1, next - 1));

        while !wal.wait_for_spare() {
            append(&mut wal, &mut next);
        }
        drop(wal);
        assert!(!dir.path().join(SPARE_NAME).exists(), "closing the WAL removes its spare");
        let (wal, _) = Wal::open(dir.path(), SEGMENT_BYTES, true, Index(1)).expect("reopen");
        assert_eq!(wal.next_index(), Index(next));
        assert_eq!(read_all(&wal, next), entries(1, next - 1));
    }

    #[test]
    fn a_spare_left_by_a_crash_is_removed_on_open_and_without_preallocation_there_is_none() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join(SPARE_NAME), b"half written").expect("write");
        let (mut wal, _) = Wal::open(dir.path(), SEGMENT_BYTES, false, Index(1)).expect("open");
        assert!(!dir.path().join(SPARE_NAME).exists());
        let mut next = 1;
        while wal.segment_paths().len() < 3 {
            append(&mut wal, &mut next);
            assert!(!wal.wait_for_spare(), "no spare without preallocation");
        }
        assert_eq!(wal.segments_from_spare, 0);
    }

    #[test]
    fn rolling_over_never_waits_for_a_spare() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut wal, _) = Wal::open(dir.path(), SEGMENT_BYTES, true, Index(1)).expect("open");
        let mut next = 1;
        // However the spare's writer and the appends interleave, each segment is made from a
        // spare or with fallocate, and the log reads back whole.
        while wal.segment_paths().len() < 8 {
            append(&mut wal, &mut next);
        }
        assert_eq!(read_all(&wal, next), entries(1, next - 1));
    }
}
