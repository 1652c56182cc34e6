//! `skiff lock NAME -- COMMAND`: the command runs holding the lock with its fencing token,
//! a second holder waits its turn, a lost lock stops the command, and the command's exit
//! code is passed on.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, KillOnDrop, SKIFF, cluster, signal, stderr, stdout};
use serde_json::Value;
use skiff::NodeId;
use skiff_testkit::kv::HttpClient;

/// `skiff lock ARGS`, with the cluster's endpoints, started in the background.
fn spawn_lock(cluster: &Cluster, args: &[&str]) -> Child {
    cluster
        .skiff()
        .arg("lock")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skiff lock")
}

/// Waits (up to a minute: this is a bound on a hang, not a measurement) until `path` has a
/// line; returns the file's text.
fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} was never written", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The key as `GET /v1/kv/<key>` shows it.
fn entry(client: &HttpClient, key: &str) -> Value {
    client.get(NodeId(1), &format!("/v1/kv/{key}")).ok().json()[0].clone()
}

fn sessions(client: &HttpClient) -> Vec<Value> {
    client.get(NodeId(1), "/v1/session/list").ok().json().as_array().cloned().unwrap_or_default()
}

#[test]
fn a_command_runs_with_its_fencing_token_and_its_exit_code_is_passed_on() {
    let cluster = cluster(3);
    let client = HttpClient::for_file(&cluster.file);
    let endpoints = cluster.endpoints.join(",");
    // The command reads the key while it runs: the lock is held by its session, with its token.
    let script = r#"echo "$SKIFF_FENCE $SKIFF_LOCK_KEY $SKIFF_SESSION"; "$BIN" --endpoints "$EP" get jobs/nightly --json; exit 3"#;
    let output = cluster
        .skiff()
        .args(["lock", "jobs/nightly", "--", "sh", "-c", script])
        .env("BIN", SKIFF)
        .env("EP", &endpoints)
        .output()
        .expect("run skiff lock");
    assert_eq!(output.status.code(), Some(3), "the command's exit code: {output:?}");
    let text = stdout(&output);
    let (first, read) = text.split_once('\n').expect("two outputs");
    let fields: Vec<&str> = first.split(' ').collect();
    let fence: u64 = fields[0].parse().unwrap_or_else(|_| panic!("SKIFF_FENCE is a number: {text}"));
    assert_eq!(fields[1], "jobs/nightly");
    let held: Value = serde_json::from_str(read).expect("the get's JSON");
    assert_eq!(held[0]["Session"], fields[2], "held by the session in SKIFF_SESSION: {held}");
    assert_eq!(held[0]["Fence"], fence, "{held}");
    assert_eq!(held[0]["LockIndex"], 1);

    // Released and destroyed at the end; the old token no longer writes.
    let after = entry(&client, "jobs/nightly");
    assert!(after.get("Session").is_none_or(Value::is_null), "released: {after}");
    assert_eq!(sessions(&client), Vec::<Value>::new(), "the session was destroyed");
    let stale = client.put(NodeId(2), &format!("/v1/kv/jobs/output?fence={fence}"), b"late");
    assert!(stale.error(409).starts_with("ERR fenced"));

    // A command that exits 0 makes skiff lock exit 0; one that cannot start is an error.
    assert!(cluster.run(&["lock", "jobs/nightly", "--", "true"]).status.success());
    let missing = cluster.run(&["lock", "jobs/nightly", "--", "/nonexistent/command"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("cannot run"), "{}", stderr(&missing));
    assert_eq!(sessions(&client), Vec::<Value>::new(), "no session left behind");
}

#[test]
fn a_second_holder_waits_until_the_first_finishes() {
    let cluster = cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let started = dir.path().join("started");
    let first_script = format!(
        "echo \"start $SKIFF_FENCE\" >> {log}; echo >> {started}; sleep 2; echo end >> {log}",
        log = log.display(),
        started = started.display()
    );
    let mut first = spawn_lock(&cluster, &["shared", "--", "sh", "-c", &first_script]);
    let _first_guard = KillOnDrop::new(&first);
    wait_for_file(&started);
    let second_script = format!("echo \"start $SKIFF_FENCE\" >> {}", log.display());
    let second = spawn_lock(&cluster, &["shared", "--", "sh", "-c", &second_script]);
    let _second_guard = KillOnDrop::new(&second);
    let second = second.wait_with_output().expect("wait for the second");
    assert!(second.status.success(), "{second:?}");
    assert!(first.wait().expect("wait for the first").success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("start ") && lines[1] == "end" && lines[2].starts_with("start "), "{text}");
    let token = |line: &str| line["start ".len()..].parse::<u64>().expect("a token");
    assert!(token(lines[2]) > token(lines[0]), "a later acquisition has a larger token: {text}");
}

#[test]
fn the_command_is_stopped_when_its_session_is_destroyed_from_outside() {
    let cluster = cluster(3);
    let client = HttpClient::for_file(&cluster.file);
    let dir = tempfile::tempdir().unwrap();
    let session_file = dir.path().join("session");
    let script = format!("echo $SKIFF_SESSION > {}; exec sleep 60", session_file.display());
    let child = spawn_lock(&cluster, &["--grace", "1s", "held", "--", "sh", "-c", &script]);
    let _guard = KillOnDrop::new(&child);
    let session = wait_for_file(&session_file).trim().to_string();
    assert!(client.put(NodeId(3), &format!("/v1/session/destroy/{session}"), b"").boolean());
    let output = child.wait_with_output().expect("wait for skiff lock");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("lost the lock on held"), "{}", stderr(&output));
}

#[test]
fn a_wait_gives_up_and_ctrl_c_reaches_the_command_then_the_lock_is_released() {
    let cluster = cluster(3);
    let client = HttpClient::for_file(&cluster.file);
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("echo >> {}; exec sleep 60", started.display());
    let holder = spawn_lock(&cluster, &["busy", "--", "sh", "-c", &script]);
    let _guard = KillOnDrop::new(&holder);
    wait_for_file(&started);

    let waiter = cluster.run(&["lock", "--wait", "1s", "busy", "--", "true"]);
    assert_eq!(waiter.status.code(), Some(1), "{waiter:?}");
    assert!(stderr(&waiter).contains("gave up waiting for the lock on busy"), "{}", stderr(&waiter));

    // Ctrl-C: passed on to the command (which dies of it), then the lock is released.
    signal(&holder, libc::SIGINT);
    let output = holder.wait_with_output().expect("wait for skiff lock");
    assert_eq!(output.status.code(), Some(128 + libc::SIGINT), "{output:?}");
    let after = entry(&client, "busy");
    assert!(after.get("Session").is_none_or(Value::is_null), "released: {after}");
    assert_eq!(sessions(&client), Vec::<Value>::new());
}
