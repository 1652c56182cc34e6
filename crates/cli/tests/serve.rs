//! `skiff serve`: refused configs exit 1 naming the problem; flags and variables override
//! the file; a node serves and stops on SIGTERM.

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
    // No cluster file, no cluster to join, none saved by an earlier join: said so.
    let output = skiff().args(["serve", "--id", "n1"]).arg("--data-dir").arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("give --config FILE") && stderr(&output).contains("--join"), "{output:?}");
    // The id is required: a usage error.
    let output = skiff().args(["serve", "--config", "c.toml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn raft_flags_and_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(dir.path(), "cluster.toml", &one_node().to_toml());
    // Each run sets election_timeout_ticks to a value the core refuses (at most the heartbeat
    // interval, 5), so the error shows which value won without starting a node.
    let run = |env: Option<&str>, flag: Option<&str>| {
        let mut command = skiff();
        command.arg("serve").arg("--config").arg(&config).args(["--id", "n1"]);
        command.arg("--data-dir").arg(dir.path().join("data"));
        if let Some(value) = env {
            command.env("SKIFF_ELECTION_TIMEOUT_TICKS", value);
        }
        if let Some(value) = flag {
            command.args(["--election-timeout-ticks", value]);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        stderr(&output)
    };
    let wanted =
        |ticks: u32| format!("raft.election_timeout_ticks ({ticks}) must be greater than heartbeat_interval_ticks (5)");
    assert!(run(Some("3"), None).contains(&wanted(3)), "the variable overrides the file");
    assert!(run(None, Some("4")).contains(&wanted(4)), "the flag overrides the file");
    assert!(run(Some("3"), Some("2")).contains(&wanted(2)), "the flag wins over the variable");
    assert!(run(Some("50"), Some("1")).contains(&wanted(1)), "the flag wins over a good variable");

    // A bad value is a usage error, named.
    let output = skiff().args(["serve", "--config", "c.toml", "--id", "n1", "--pre-vote", "yes"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("--pre-vote"), "{output:?}");
}

#[test]
fn help_lists_each_setting_once_with_its_default() {
    let output = skiff().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let help = common::stdout(&output);
    let settings = [
        ("--tick-ms", "SKIFF_TICK_MS", "10"),
        ("--heartbeat-interval-ticks", "SKIFF_HEARTBEAT_INTERVAL_TICKS", "5"),
        ("--election-timeout-ticks", "SKIFF_ELECTION_TIMEOUT_TICKS", "30"),
        ("--pre-vote", "SKIFF_PRE_VOTE", "true"),
        ("--snapshot-after-entries", "SKIFF_SNAPSHOT_AFTER_ENTRIES", "10000"),
        ("--max-value-bytes", "SKIFF_MAX_VALUE_BYTES", "1048576"),
        ("--max-key-bytes", "SKIFF_MAX_KEY_BYTES", "8192"),
    ];
    for (flag, variable, default) in settings {
        assert_eq!(help.matches(&format!("{flag} ")).count(), 1, "{flag} once in:\n{help}");
        // The flag's entry: from the flag to the next option.
        let entry = help.split("\n      --").find(|entry| entry.starts_with(&format!("{} ", &flag[2..])));
        let entry = entry.unwrap_or_else(|| panic!("no entry for {flag} in:\n{help}"));
        assert!(entry.contains(&format!("[env: {variable}=]")), "{flag}: {entry}");
        assert!(entry.contains(&format!("[default: {default}]")), "{flag}: {entry}");
    }
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

/// A node that would listen beyond loopback without `[tls]` and `[auth]` refuses to start and
/// says how to fix it; `insecure = true` lets it.
#[test]
fn a_node_open_to_the_network_without_tls_and_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = skiff_testkit::ports::free_port();
    let raft = skiff_testkit::ports::free_port();
    let exposed = format!(
        "[cluster]\nname = \"open\"\n[[node]]\nid = \"n1\"\nraft = \"127.0.0.1:{raft}\"\nhttp = \"0.0.0.0:{port}\"\n"
    );
    let serve = |file: &str, text: &str| {
        let mut command = skiff();
        command.arg("serve").arg("--config").arg(write_file(dir.path(), file, text));
        command.args(["--id", "n1"]).arg("--data-dir").arg(dir.path().join("data"));
        command
    };
    let output = serve("open.toml", &exposed).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    for wanted in
        ["refusing to start", &format!("http 0.0.0.0:{port}"), "[tls] and [auth]", "skiff certs", "insecure = true"]
    {
        assert!(stderr(&output).contains(wanted), "wanted {wanted:?} in {}", stderr(&output));
    }
    assert!(!dir.path().join("data").exists(), "nothing was created before the refusal");

    // The operator's explicit choice is respected.
    let insecure = exposed.replace("name = \"open\"", "name = \"open\"\ninsecure = true");
    let mut child = serve("insecure.toml", &insecure).stderr(Stdio::null()).spawn().unwrap();
    let guard = KillOnDrop::new(&child);
    eventually_ok("the insecure node to serve", || {
        ureq::get(&format!("http://127.0.0.1:{port}/v1/status/leader")).call().map(|_| ())
    });
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    drop(guard);
}
