//! The warning for a torn tail names the file and the offset. (In its own test binary:
//! `tracing` caches per callsite whether anyone listens, which races with other tests'
//! threads.)

use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use skiff_raft::{Entry, Index, LogId, Membership, NodeId, Payload, Storage, Term};
use skiff_storage::{DiskOptions, DiskStorage};

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_torn_tail_is_logged_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = DiskOptions::new(NodeId(1), "alpha", Membership::with_voters([NodeId(1)]));
    let mut store = DiskStorage::open(dir.path(), options.clone()).expect("create");
    let entries: Vec<Entry> = (1..=5)
        .map(|index| Entry {
            log_id: LogId::new(Term(1), Index(index)),
            payload: Payload::Command(Bytes::from(vec![b'x'; 50])),
        })
        .collect();
    store.append(&entries).expect("append");
    store.sync().expect("sync");
    let segment = store.segment_paths().pop().expect("a segment");
    drop(store);
    // Each record is 8 + 17 + 1 + 50 bytes after the 32-byte header: cut the last one short.
    let last_record = 32 + 4 * 76;
    let bytes = fs::read(&segment).expect("read");
    fs::write(&segment, &bytes[..last_record + 30]).expect("cut");

    let log = Arc::new(Mutex::new(Vec::new()));
    let writer_log = log.clone();
    let subscriber =
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || LogWriter(writer_log.clone())).finish();
    let store = tracing::subscriber::with_default(subscriber, || DiskStorage::open(dir.path(), options).expect("open"));
    assert_eq!(store.last_index(), Index(4));
    let log = String::from_utf8(log.lock().expect("the log").clone()).expect("utf-8");
    assert!(log.contains("WARN"), "no warning: {log}");
    assert!(log.contains(&segment.display().to_string()), "the warning does not name the file: {log}");
    assert!(log.contains(&format!("offset={last_record}")), "the warning does not give the offset: {log}");
    eprintln!("{log}");
}
