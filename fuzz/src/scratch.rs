//! A scratch directory per thread for the file-reading targets: in `/dev/shm` when there is
//! one (a fuzzer writes a file per input), else in the system's temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

thread_local! {
    static DIR: tempfile::TempDir = {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        tempfile::Builder::new().prefix("skiff-fuzz").tempdir_in(base).expect("a scratch directory")
    };
}

/// This thread's scratch directory, emptied.
pub fn dir() -> PathBuf {
    let path = DIR.with(|dir| dir.path().to_path_buf());
    for entry in std::fs::read_dir(&path).expect("the scratch directory lists") {
        let entry = entry.expect("the scratch directory lists");
        let kind = entry.file_type().expect("a scratch file has a type");
        if kind.is_dir() {
            std::fs::remove_dir_all(entry.path()).expect("a scratch directory is removed");
        } else {
            std::fs::remove_file(entry.path()).expect("a scratch file is removed");
        }
    }
    path
}
