//! Small file-system helpers: positioned writes, syncs, atomic replacement, preallocation
//! and the data directory lock. Every error names the file it is about.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
#[cfg(feature = "power-cut")]
use crate::power_cut::hook;

/// Without the `power-cut` feature, the shim's hooks are nothing.
#[cfg(not(feature = "power-cut"))]
mod hook {
    use std::io;
    use std::path::Path;

    pub(crate) fn created(_: &Path) {}
    pub(crate) fn wrote(_: &Path, _: u64, _: &[u8]) {}
    pub(crate) fn set_len(_: &Path, _: u64) {}
    pub(crate) fn extended(_: &Path, _: u64) {}
    pub(crate) fn sync(_: &Path) -> io::Result<()> {
        Ok(())
    }
    pub(crate) fn sync_dir(_: &Path) -> io::Result<()> {
        Ok(())
    }
    pub(crate) fn renamed(_: &Path, _: &Path) {}
    pub(crate) fn removed(_: &Path) {}
    pub(crate) fn made_dir(_: &Path) {}
}

/// Creates (or truncates) the file at `path` for writing, and for reading if `read`.
pub(crate) fn create_file(path: &Path, read: bool) -> Result<File> {
    let file =
        OpenOptions::new().read(read).write(true).create(true).truncate(true).open(path).context("create", path)?;
    hook::created(path);
    Ok(file)
}

/// Creates `dir` and its missing parents.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|ancestor| !ancestor.exists()).collect();
    fs::create_dir_all(dir).context("create directory", dir)?;
    for created in missing.into_iter().rev() {
        hook::made_dir(created);
    }
    Ok(())
}

/// Writes all of `bytes` at `offset` of `file`.
pub(crate) fn write_at(file: &File, path: &Path, bytes: &[u8], offset: u64) -> Result<()> {
    #[cfg(test)]
    fault::check_write(bytes.len(), path)?;
    file.write_all_at(bytes, offset).context("write to", path)?;
    hook::wrote(path, offset, bytes);
    Ok(())
}

/// Sets the length of `file`.
pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> Result<()> {
    file.set_len(len).context("set the length of", path)?;
    hook::set_len(path, len);
    Ok(())
}

/// `fdatasync`: the data written to `file`, and the metadata needed to read it back.
pub(crate) fn sync_data(file: &File, path: &Path) -> Result<()> {
    #[cfg(test)]
    fault::check_sync(path)?;
    hook::sync(path).map_err(|source| sync_failed("fdatasync", path, source))?;
    file.sync_data().map_err(|source| sync_failed("fdatasync", path, source))
}

/// `fsync`: the data and all the metadata of `file`.
pub(crate) fn sync_all(file: &File, path: &Path) -> Result<()> {
    #[cfg(test)]
    fault::check_sync(path)?;
    hook::sync(path).map_err(|source| sync_failed("fsync", path, source))?;
    file.sync_all().map_err(|source| sync_failed("fsync", path, source))
}

/// Writes a stream at the end of a file through [`write_at`] (a snapshot's data).
#[derive(Debug)]
pub(crate) struct FileWriter {
    pub file: File,
    pub path: PathBuf,
    pub offset: u64,
}

impl io::Write for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        write_at(&self.file, &self.path, bytes, self.offset).map_err(io::Error::other)?;
        self.offset += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A failed sync. Never retried: after one, what the failed sync covered may be gone from
/// the disk while the page cache still shows it, and a second sync may succeed without
/// writing it (the kernel reports a writeback error once). The store stops for good.
fn sync_failed(action: &str, path: &Path, source: io::Error) -> Error {
    Error::SyncFailed { action: action.to_string(), path: path.to_path_buf(), source }
}

/// Makes the entries of directory `dir` (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let handle = File::open(dir).context("open directory", dir)?;
    #[cfg(test)]
    fault::check_sync(dir)?;
    hook::sync_dir(dir).map_err(|source| sync_failed("fsync", dir, source))?;
    handle.sync_all().map_err(|source| sync_failed("fsync", dir, source))
}

/// Replaces `dir/name` by `bytes` atomically: write `name.tmp`, fsync it, rename it over
/// `name`, fsync `dir`. After a crash the file holds either the old or the new bytes.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = create_file(&tmp, false)?;
    write_at(&file, &tmp, bytes, 0)?;
    sync_all(&file, &tmp)?;
    drop(file);
    rename(&tmp, &path)?;
    sync_dir(dir)
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|source| Error::io(format!("rename {} to", from.display()), to, source))?;
    hook::renamed(from, to);
    Ok(())
}

pub(crate) fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).context("remove", path)?;
    hook::removed(path);
    Ok(())
}

/// Reserves `len` bytes for `file` (its size becomes at least `len`; the new bytes read as
/// zeros). Returns `false` when the file system cannot preallocate; the file is then left
/// as it was and grows as it is written.
#[allow(unsafe_code)]
pub(crate) fn preallocate(file: &File, path: &Path, len: u64) -> Result<bool> {
    #[cfg(test)]
    fault::check_preallocate(path)?;
    let len = libc::off_t::try_from(len).map_err(|_| Error::InvalidInput(format!("cannot preallocate {len} bytes")))?;
    // SAFETY: `fallocate` only reads its integer arguments; the descriptor is owned by `file`,
    // which outlives the call.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if result == 0 {
        hook::extended(path, len as u64);
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(Error::io("preallocate space for", path, error)),
    }
}

/// The names in `dir`, with `.tmp` files (left by an interrupted atomic write) removed.
/// Returns the names and whether any `.tmp` file was removed.
pub(crate) fn list_dir_removing_tmp(dir: &Path) -> Result<(Vec<String>, bool)> {
    let mut names = Vec::new();
    let mut removed = false;
    for entry in fs::read_dir(dir).context("list", dir)? {
        let entry = entry.context("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            remove_file(&entry.path())?;
            removed = true;
        } else {
            names.push(name);
        }
    }
    names.sort();
    Ok((names, removed))
}

/// An exclusive `flock` on `<data-dir>/lock`, held while the store is open, so two
/// processes (or two stores in one process) never write one directory. The kernel releases
/// it when the process dies.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    #[allow(unsafe_code)]
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path: PathBuf = dir.join("lock");
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(&path).context("create", &path)?;
        // SAFETY: `flock` only takes the descriptor owned by `file` and integer flags.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked { dir: dir.to_path_buf() });
            }
            return Err(Error::io("lock", &path, error));
        }
        Ok(DirLock { _file: file })
    }
}

/// Injected failures for the crate's own tests: the disk "fills up" after a number of
/// bytes, or syncs fail. Per thread, so tests running in parallel do not see each other's.
#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;
    use std::io;
    use std::path::Path;

    use crate::error::{Error, Result};

    thread_local! {
        static WRITE_BUDGET_BYTES: Cell<Option<u64>> = const { Cell::new(None) };
        static FAIL_SYNCS: Cell<bool> = const { Cell::new(false) };
        static FAIL_PREALLOCATE: Cell<bool> = const { Cell::new(false) };
    }

    /// Every preallocation fails with ENOSPC.
    pub(crate) fn fail_preallocate(fail: bool) {
        FAIL_PREALLOCATE.with(|cell| cell.set(fail));
    }

    pub(crate) fn preallocation_fails() -> bool {
        FAIL_PREALLOCATE.with(Cell::get)
    }

    pub(super) fn check_preallocate(path: &Path) -> Result<()> {
        if FAIL_PREALLOCATE.with(Cell::get) {
            return Err(Error::io("preallocate space for", path, io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        Ok(())
    }

    /// Writes (and preallocations) fail with ENOSPC once `bytes` more bytes were written.
    pub(crate) fn fail_writes_after(bytes: Option<u64>) {
        WRITE_BUDGET_BYTES.with(|budget| budget.set(bytes));
    }

    /// Every sync fails with EIO.
    pub(crate) fn fail_syncs(fail: bool) {
        FAIL_SYNCS.with(|cell| cell.set(fail));
    }

    pub(super) fn check_write(len: usize, path: &Path) -> Result<()> {
        WRITE_BUDGET_BYTES.with(|budget| match budget.get() {
            Some(left) if left < len as u64 => {
                budget.set(Some(0));
                Err(Error::io("write to", path, io::Error::from_raw_os_error(libc::ENOSPC)))
            }
            Some(left) => {
                budget.set(Some(left - len as u64));
                Ok(())
            }
            None => Ok(()),
        })
    }

    pub(super) fn check_sync(path: &Path) -> Result<()> {
        if FAIL_SYNCS.with(Cell::get) {
            let source = io::Error::from_raw_os_error(libc::EIO);
            return Err(Error::SyncFailed { action: "fdatasync".into(), path: path.to_path_buf(), source });
        }
        Ok(())
    }
}
