//! `skiff serve`: refused configs exit 1 naming the problem; a node serves and stops on
//! SIGTERM. Ports: 19480-19519.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{skiff, stderr, write_file};

#[test]
fn bad_configs_exit_1_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(dir.path(), "good.toml", &common::cluster_toml(19480, 1));
    let broken = write_file(dir.path(), "broken.toml", "[cluster]\nname = \"x\"\n\n[[node]]\nid = n1\n");
    let typo = write_file(dir.path(), "typo.toml", "[cluster]\nname = \"x\"\n[raft]\nheartbeat_tick = 5\n");
    let missing = dir.path().join("missing.toml");
    let cases = [
        (missing.as_path(), "n1", vec!["cannot read cluster file", "missing.toml"]),
        (broken.as_path(), "n1", vec!["broken.toml", "invalid TOML", "line 5"]),
        (typo.as_path(), "n1", vec!["typo.toml", "heartbeat_tick"]),
        (good.as_path(), "n7", vec!["n7 is not in cluster", "n1"]),
        (good.as_path(), "seven", vec!["\"seven\" is not a node id"]),
    ];
    for (config, id, wanted) in cases {
        let output = skiff().arg("serve").arg("--config").arg(config).args(["--id", id]).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{config:?} {id}: {output:?}");
        for text in wanted {
            assert!(stderr(&output).contains(text), "{config:?} {id}: wanted {text:?} in {}", stderr(&output));
        }
    }
    // Required settings missing: a usage error.
    let output = skiff().args(["serve", "--id", "n1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("--config"), "{output:?}");
}

#[test]
fn serve_from_env_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(dir.path(), "cluster.toml", &common::cluster_toml(19500, 1));
    let child = skiff()
        .arg("serve")
        .env("SKIFF_CONFIG", &config)
        .env("SKIFF_ID", "n1")
        .env("SKIFF_DATA_DIR", dir.path().join("data"))
        .env("SKIFF_LOG_FORMAT", "json")
        .env("SKIFF_MAX_VALUE_BYTES", "16")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    let endpoint = ["--endpoints", "127.0.0.1:19511", "--timeout", "2s"];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = skiff().args(endpoint).args(["put", "k", "small"]).output().unwrap();
        if output.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the node never took a write: {output:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SKIFF_MAX_VALUE_BYTES took effect: a 17-byte value is refused (413).
    let output = skiff().args(endpoint).args(["put", "k", "seventeen bytes!!"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("413"), "{output:?}");
    assert!(dir.path().join("data").is_dir());

    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let output = child.wait_with_output().unwrap();
    std::mem::forget(guard);
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    // JSON log lines on stderr.
    assert!(log.lines().any(|line| line.starts_with('{') && line.contains("\"level\"")), "{log}");
}

/// Kills the process if the test panics before it is stopped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which the test has not reaped yet.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}
