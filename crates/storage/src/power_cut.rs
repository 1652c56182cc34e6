//! A file-system shim for tests that must see a lost `fsync`: it records every change the
//! store makes under a directory, and tells what a **power cut** at any moment could leave
//! on the disk. (Feature `power-cut`; production builds have no hooks at all.)
//!
//! A SIGKILL keeps the page cache, so a crash test never notices a missing `fsync`. This
//! shim keeps, next to the real files, a model of what the disk holds by POSIX's rules:
//!
//! - A file's content (writes, `set_len`, preallocation) is durable once the file is
//!   `fsync`'d or `fdatasync`'d; before that, a power cut keeps a **prefix** of its
//!   unsynced changes, in the order they were made, the last one possibly **torn** at any
//!   byte (a suffix of whole changes dropped, or a write cut short).
//! - A directory entry (a file created, renamed, removed; a directory made) is durable
//!   once its directory is `fsync`'d, not when the file is; before that, a power cut keeps
//!   a prefix of the pending entry changes.
//!
//! That is what a careful file system promises, no more: pages written back out of order
//! within one unsynced write (which the store refuses as damage rather than repairs) are
//! not modelled. [`PowerCut::fail_next_sync`] makes one sync fail the way Linux fails it:
//! the unsynced changes of that file are dropped from the disk while the files (the page
//! cache) still show them, and a later sync succeeds.
//!
//! [`PowerCut::cut`] writes the image of a power cut "now" into a new directory, where a
//! store can be opened as after a reboot. Paths are compared as given: record the same
//! path the store is opened with.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The directories being recorded; `ACTIVE` is their number, so the hooks cost one atomic
/// load when no test records anything.
static RECORDERS: Mutex<Vec<(PathBuf, Arc<Mutex<Model>>)>> = Mutex::new(Vec::new());
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Records the changes under one directory while it lives.
#[derive(Debug)]
pub struct PowerCut {
    root: PathBuf,
    model: Arc<Mutex<Model>>,
}

/// What a cut image holds, for the test's messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced content changes kept, of all unsynced ones.
    pub content_changes_kept: usize,
    pub content_changes_pending: usize,
    /// Whether the last kept content change was a write cut short.
    pub torn_write: bool,
    /// Directory entry changes kept, of the pending ones.
    pub entry_changes_kept: usize,
    pub entry_changes_pending: usize,
}

impl PowerCut {
    /// Starts recording changes under `root`, which must not exist yet: the shim knows
    /// every file under it from its creation on.
    pub fn record(root: &Path) -> PowerCut {
        assert!(!root.exists(), "record a directory from its creation: {} exists", root.display());
        let model = Arc::new(Mutex::new(Model::default()));
        lock(&RECORDERS).push((root.to_path_buf(), Arc::clone(&model)));
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        PowerCut { root: root.to_path_buf(), model }
    }

    /// Starts recording changes under `root`, an existing directory (a power-cut image a
    /// node restarts from): what it holds now counts as durable.
    pub fn record_existing(root: &Path) -> io::Result<PowerCut> {
        let mut model = Model::default();
        model.load(root, Path::new(""))?;
        let model = Arc::new(Mutex::new(model));
        lock(&RECORDERS).push((root.to_path_buf(), Arc::clone(&model)));
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Ok(PowerCut { root: root.to_path_buf(), model })
    }

    /// The next `fsync`/`fdatasync` of a file under the directory fails with EIO, and the
    /// file's unsynced changes never reach the disk (the files still show them).
    pub fn fail_next_sync(&self) {
        lock(&self.model).fail_next_sync = true;
    }

    /// How many changes were made to paths the shim did not know (a store writing through
    /// a path it did not create, or a stale one): a test asserts there are none.
    pub fn unknown_changes(&self) -> usize {
        lock(&self.model).unknown
    }

    /// Writes into `target` (which must not exist) what a power cut now could leave of
    /// the directory: everything synced, and of the rest a prefix chosen by `seed` (which
    /// also chooses whether and where the last write kept is torn).
    pub fn cut(&self, target: &Path, seed: u64) -> io::Result<CutReport> {
        let image = lock(&self.model).image(seed);
        write_image(target, &image)?;
        Ok(image.report)
    }

    /// Cuts the power now: writes the image as [`PowerCut::cut`] does, and from then on
    /// every sync under the directory fails with EIO (the disk is gone), so a store still
    /// running on it acknowledges nothing after the cut.
    pub fn power_off(&self, target: &Path, seed: u64) -> io::Result<CutReport> {
        let mut model = lock(&self.model);
        model.powered_off = true;
        let image = model.image(seed);
        drop(model);
        write_image(target, &image)?;
        Ok(image.report)
    }

    /// The recorded directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        lock(&RECORDERS).retain(|(_, model)| !Arc::ptr_eq(model, &self.model));
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn write_image(target: &Path, image: &Image) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    for dir in &image.dirs {
        std::fs::create_dir_all(target.join(dir))?;
    }
    for (path, content) in &image.files {
        std::fs::write(target.join(path), content)?;
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A change to a file's content.
#[derive(Clone, Debug)]
enum Change {
    Write {
        offset: u64,
        bytes: Vec<u8>,
    },
    SetLen(u64),
    /// Preallocation: the file is at least this long.
    Extend(u64),
}

fn apply(content: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { offset, bytes } => {
            let (start, end) = (*offset as usize, *offset as usize + bytes.len());
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(bytes);
        }
        Change::SetLen(len) => content.resize(*len as usize, 0),
        Change::Extend(len) => {
            if content.len() < *len as usize {
                content.resize(*len as usize, 0);
            }
        }
    }
}

/// A change to a directory entry; `dir` is the directory whose fsync makes it durable.
#[derive(Clone, Debug)]
enum Entry {
    Create { path: PathBuf, inode: u64 },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
    Mkdir { path: PathBuf },
}

impl Entry {
    fn dir(&self) -> &Path {
        let path = match self {
            Entry::Create { path, .. } | Entry::Remove { path } | Entry::Mkdir { path } => path,
            Entry::Rename { to, .. } => to,
        };
        path.parent().unwrap_or(Path::new(""))
    }
}

/// Directory entries: paths (relative to the root) to inodes, and directories.
#[derive(Clone, Debug, Default)]
struct Names {
    files: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
}

impl Names {
    fn apply(&mut self, entry: &Entry) {
        match entry {
            Entry::Create { path, inode } => {
                self.files.insert(path.clone(), *inode);
            }
            Entry::Rename { from, to } => {
                if let Some(inode) = self.files.remove(from) {
                    self.files.insert(to.clone(), inode);
                }
            }
            Entry::Remove { path } => {
                self.files.remove(path);
            }
            Entry::Mkdir { path } => {
                self.dirs.insert(path.clone());
            }
        }
    }
}

#[derive(Debug, Default)]
struct File {
    durable: Vec<u8>,
    pending: Vec<Change>,
}

#[derive(Debug, Default)]
struct Model {
    files: BTreeMap<u64, File>,
    next_inode: u64,
    /// The names as the running store sees them.
    live: Names,
    /// The names on the disk.
    durable: Names,
    /// Entry changes not yet made durable, in order.
    pending: Vec<Entry>,
    fail_next_sync: bool,
    /// After [`PowerCut::power_off`]: every sync fails.
    powered_off: bool,
    unknown: usize,
}

struct Image {
    dirs: Vec<PathBuf>,
    files: Vec<(PathBuf, Vec<u8>)>,
    report: CutReport,
}

impl Model {
    /// Takes the files under `root/relative` as durable.
    fn load(&mut self, root: &Path, relative: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(root.join(relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                self.live.dirs.insert(path.clone());
                self.durable.dirs.insert(path.clone());
                self.load(root, &path)?;
            } else {
                self.next_inode += 1;
                let durable = std::fs::read(entry.path())?;
                self.files.insert(self.next_inode, File { durable, pending: Vec::new() });
                self.live.files.insert(path.clone(), self.next_inode);
                self.durable.files.insert(path, self.next_inode);
            }
        }
        Ok(())
    }

    fn inode(&mut self, path: &Path) -> Option<u64> {
        let inode = self.live.files.get(path).copied();
        self.unknown += usize::from(inode.is_none());
        inode
    }

    fn change(&mut self, path: &Path, change: Change) {
        if let Some(inode) = self.inode(path) {
            self.files.entry(inode).or_default().pending.push(change);
        }
    }

    fn entry(&mut self, entry: Entry) {
        self.live.apply(&entry);
        self.pending.push(entry);
    }

    fn create(&mut self, path: &Path) {
        if let Some(&inode) = self.live.files.get(path) {
            // Opening with truncate: the same file, emptied.
            self.files.entry(inode).or_default().pending.push(Change::SetLen(0));
            return;
        }
        self.next_inode += 1;
        let inode = self.next_inode;
        self.files.insert(inode, File::default());
        self.entry(Entry::Create { path: path.to_path_buf(), inode });
    }

    fn sync(&mut self, path: &Path) -> io::Result<()> {
        if self.powered_off {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let Some(inode) = self.inode(path) else { return Ok(()) };
        let file = self.files.entry(inode).or_default();
        if std::mem::take(&mut self.fail_next_sync) {
            file.pending.clear(); // never written; the page cache still shows it
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        for change in std::mem::take(&mut file.pending) {
            apply(&mut file.durable, &change);
        }
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        if self.powered_off {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let (now, later): (Vec<Entry>, Vec<Entry>) =
            std::mem::take(&mut self.pending).into_iter().partition(|entry| entry.dir() == dir);
        for entry in &now {
            self.durable.apply(entry);
        }
        self.pending = later;
        Ok(())
    }

    fn image(&self, seed: u64) -> Image {
        let mut random = crate::conformance::Random(seed);
        let mut report = CutReport { entry_changes_pending: self.pending.len(), ..CutReport::default() };
        let mut names = self.durable.clone();
        report.entry_changes_kept = random.below(self.pending.len() as u64 + 1) as usize;
        for entry in &self.pending[..report.entry_changes_kept] {
            names.apply(entry);
        }
        let files = names
            .files
            .iter()
            .map(|(path, inode)| {
                let file = &self.files[inode];
                let mut content = file.durable.clone();
                let kept = random.below(file.pending.len() as u64 + 1) as usize;
                report.content_changes_pending += file.pending.len();
                report.content_changes_kept += kept;
                for (position, change) in file.pending[..kept].iter().enumerate() {
                    match change {
                        // The last write kept may be torn anywhere.
                        Change::Write { offset, bytes } if position + 1 == kept && random.below(2) == 0 => {
                            let len = random.below(bytes.len() as u64 + 1) as usize;
                            report.torn_write |= len < bytes.len();
                            apply(&mut content, &Change::Write { offset: *offset, bytes: bytes[..len].to_vec() });
                        }
                        change => apply(&mut content, change),
                    }
                }
                (path.clone(), content)
            })
            .collect();
        Image { dirs: names.dirs.into_iter().collect(), files, report }
    }
}

/// The calls `fsutil` makes after (or, for a sync, before) each change to the files.
pub(crate) mod hook {
    use super::*;

    /// The model recording `path`, and `path` relative to its root.
    fn recorder(path: &Path) -> Option<(Arc<Mutex<Model>>, PathBuf)> {
        if ACTIVE.load(Ordering::SeqCst) == 0 {
            return None;
        }
        lock(&RECORDERS).iter().find_map(|(root, model)| {
            let relative = path.strip_prefix(root).ok()?;
            Some((Arc::clone(model), relative.to_path_buf()))
        })
    }

    fn with(path: &Path, action: impl FnOnce(&mut Model, &Path)) {
        if let Some((model, relative)) = recorder(path) {
            action(&mut lock(&model), &relative);
        }
    }

    pub(crate) fn created(path: &Path) {
        with(path, |model, path| model.create(path));
    }

    pub(crate) fn wrote(path: &Path, offset: u64, bytes: &[u8]) {
        with(path, |model, path| model.change(path, Change::Write { offset, bytes: bytes.to_vec() }));
    }

    pub(crate) fn set_len(path: &Path, len: u64) {
        with(path, |model, path| model.change(path, Change::SetLen(len)));
    }

    pub(crate) fn extended(path: &Path, len: u64) {
        with(path, |model, path| model.change(path, Change::Extend(len)));
    }

    /// Before a real sync: an injected failure, or the file's changes made durable.
    pub(crate) fn sync(path: &Path) -> io::Result<()> {
        let mut result = Ok(());
        with(path, |model, path| result = model.sync(path));
        result
    }

    /// Before a real directory sync: the directory's entry changes made durable.
    pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
        let mut result = Ok(());
        with(dir, |model, dir| result = model.sync_dir(dir));
        result
    }

    pub(crate) fn renamed(from: &Path, to: &Path) {
        if let (Some((model, from)), Some((_, to))) = (recorder(from), recorder(to)) {
            lock(&model).entry(Entry::Rename { from, to });
        }
    }

    pub(crate) fn removed(path: &Path) {
        with(path, |model, path| model.entry(Entry::Remove { path: path.to_path_buf() }));
    }

    pub(crate) fn made_dir(path: &Path) {
        with(path, |model, path| {
            if !path.as_os_str().is_empty() {
                model.entry(Entry::Mkdir { path: path.to_path_buf() });
            }
        });
    }
}
