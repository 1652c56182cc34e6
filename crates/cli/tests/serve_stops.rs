//! `skiff serve` exits when its node stops by itself: here the disk fills up under it, the
//! store fails, and the process ends non-zero with the reason, so that a supervisor
//! (systemd, Kubernetes) restarts it instead of leaving a node that answers 500 forever.
//! Needs root to mount a small tmpfs; without it the test says so and passes, unless
//! `SKIFF_REQUIRE_TMPFS` is set (CI sets it).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{KillOnDrop, skiff};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::tmpfs::Tmpfs;
use skiff_testkit::wait::eventually_ok;

/// `skiff put key -` with the value from the file `value`.
fn put(endpoint: &str, key: &str, value: &Path) -> std::process::Output {
    let value = std::fs::File::open(value).unwrap();
    skiff().args(["--endpoints", endpoint, "--timeout", "3s", "put", key, "-"]).stdin(value).output().unwrap()
}

#[test]
fn a_node_whose_disk_fills_up_exits_non_zero_with_the_reason() {
    let tmpfs = match Tmpfs::mount("100m") {
        Ok(tmpfs) => tmpfs,
        Err(error) if std::env::var_os("SKIFF_REQUIRE_TMPFS").is_none() => {
            eprintln!("skipped: cannot mount a tmpfs ({error}); run as root to test a full disk");
            return;
        }
        Err(error) => panic!("SKIFF_REQUIRE_TMPFS is set, but a tmpfs cannot be mounted: {error}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("cli-full-disk", 1).http().build();
    let config = file.write(dir.path());
    let child = skiff()
        .args(["serve", "--id", "n1", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmpfs.path().join("n1"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop::new(&child);
    let endpoint = file.http_addresses().join(",");
    let value = dir.path().join("value");
    std::fs::write(&value, vec![b'x'; 1 << 20]).unwrap();
    eventually_ok("the node takes a write", || {
        let output = put(&endpoint, "first", &value);
        if output.status.success() { Ok(()) } else { Err(format!("{output:?}")) }
    });
    // 1 MiB values until the store fails (64 MiB segments on a 100 MiB disk): the node
    // stops, and the process with it.
    let started = Instant::now();
    for i in 0..200 {
        if put(&endpoint, &format!("k{i}"), &value).status.success() {
            continue;
        }
        break;
    }
    let mut child = child;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the process still runs after its store failed");
        std::thread::sleep(Duration::from_millis(50));
    };
    guard.disarm();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("error: node n1: the node has stopped"), "the last words say the node stopped: {log}");
    assert!(log.contains("No space left on device"), "and why: {log}");
}
