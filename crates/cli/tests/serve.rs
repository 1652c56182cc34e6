//! `skiff serve`: refused configs exit 1 naming the problem; a node serves and stops on
//! SIGTERM.

mod common;

use std::process::Stdio;

use common::{KillOnDrop, signal, skiff, stderr, write_file};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::wait::eventually_ok;

/// A cluster file of one node, n1, with an http address.
fn one_node() -> ClusterFile {
    ClusterFile::builder("cli-test", 1).http().build()
}

#[test]
fn bad_configs_exit_1_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(dir.path(), "good.toml", &one_node().to_toml());
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
    let file = one_node();
    let config = file.write(dir.path());
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
    let guard = KillOnDrop::new(&child);
    let http = file.http_addresses().join(",");
    let endpoint = ["--endpoints", &http, "--timeout", "2s"];
    eventually_ok("the node takes a write", || {
        let output = skiff().args(endpoint).args(["put", "k", "small"]).output().unwrap();
        if output.status.success() { Ok(()) } else { Err(format!("{output:?}")) }
    });
    // SKIFF_MAX_VALUE_BYTES took effect: a 17-byte value is refused (413).
    let output = skiff().args(endpoint).args(["put", "k", "seventeen bytes!!"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("413"), "{output:?}");
    assert!(dir.path().join("data").is_dir());

    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    guard.disarm();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    // JSON log lines on stderr.
    assert!(log.lines().any(|line| line.starts_with('{') && line.contains("\"level\"")), "{log}");
}
