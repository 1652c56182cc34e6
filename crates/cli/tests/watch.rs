//! `skiff watch` and the shell's `watch` against a real cluster (in this process, or in
//! `skiff serve` processes where nodes stop and start under a running watch): the changes
//! made through another node, in order, with their indexes; `--from`; a watch that outlives
//! its node's and the leader's restart with no event missing or twice; refused arguments;
//! Ctrl-C.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{KillOnDrop, signal, stderr};
use serde_json::Value;
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::process::LoggedChild;
use skiff_testkit::wait::eventually_ok;

/// A bound on a hang, not a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

fn cluster(name: &str) -> KvCluster {
    KvCluster::start(ClusterFile::builder(name, 3).http().build())
}

/// The cluster's http addresses, comma-separated, node `first` first.
fn endpoints(cluster: &KvCluster, first: NodeId) -> String {
    let mut ids = vec![first];
    ids.extend(cluster.file.nodes.iter().map(|node| node.id).filter(|&id| id != first));
    ids.iter().map(|&id| cluster.client.address(id).to_string()).collect::<Vec<_>>().join(",")
}

/// A running `skiff` whose standard output is read line by line on a thread.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    _guard: KillOnDrop,
}

impl Running {
    fn start(endpoints: &str, args: &[&str]) -> Running {
        let mut child = common::skiff()
            .arg("--endpoints")
            .arg(endpoints)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start skiff");
        let guard = KillOnDrop::new(&child);
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let stdin = child.stdin.take();
        Running { child, stdin, lines, seen: Vec::new(), _guard: guard }
    }

    /// Waits until `done` holds for the lines printed so far; returns them.
    fn wait_for(&mut self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("never saw {what}; printed:\n{}", self.seen.join("\n")),
            }
        }
        self.seen.clone()
    }

    /// The JSON events printed so far, of the given types.
    fn events(lines: &[String], types: &[&str]) -> Vec<Value> {
        lines
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .filter(|event| types.iter().any(|kind| event["type"] == *kind))
            .collect()
    }

    fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write to skiff");
        stdin.flush().expect("flush");
    }

    /// Interrupts it (Ctrl-C) and returns its exit code and standard error.
    fn interrupt(mut self) -> (Option<i32>, String) {
        signal(&self.child, libc::SIGINT);
        self.stdin.take();
        let output = self.child.wait_with_output().expect("wait for skiff");
        (output.status.code(), stderr(&output))
    }
}

/// The key's ModifyIndex, read from node 1.
fn modify_index(cluster: &KvCluster, key: &str) -> u64 {
    cluster.client.get(NodeId(1), &format!("/v1/kv/{key}")).ok().json()[0]["ModifyIndex"].as_u64().expect("an index")
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// (type, key, value as text) of JSON events.
fn summary(events: &[Value]) -> Vec<(String, String, Option<String>)> {
    events
        .iter()
        .map(|event| {
            let text = |field: &str| event[field].as_str().map(str::to_string);
            (text("type").unwrap_or_default(), text("key").unwrap_or_default(), text("value"))
        })
        .collect()
}

#[test]
fn json_shows_the_changes_made_through_another_node_in_order_with_their_indexes_and_from_resumes() {
    let cluster = cluster("watch-json");
    cluster.client.set(NodeId(2), "app/start", b"0");
    let start = modify_index(&cluster, "app/start");
    let from = start.to_string();
    let mut watch = Running::start(&endpoints(&cluster, NodeId(1)), &["watch", "app/", "--json", "--from", &from]);

    // Through node 2 and node 3, while the watch reads node 1; `other/` is not watched.
    cluster.client.set(NodeId(2), "app/a", b"1");
    let a = modify_index(&cluster, "app/a");
    cluster.client.set(NodeId(3), "other/x", b"no");
    cluster.client.set(NodeId(3), "app/b", b"2");
    let b = modify_index(&cluster, "app/b");
    cluster.client.remove(NodeId(2), "app/a");
    cluster.client.set(NodeId(3), "app/c", b"3");
    let c = modify_index(&cluster, "app/c");

    // One entry that deletes three keys: three events at one index.
    cluster.client.delete(NodeId(3), "/v1/kv/app/?recurse").ok();

    let lines = watch.wait_for("seven changes", |lines| Running::events(lines, &["put", "delete"]).len() >= 7);
    let events = Running::events(&lines, &["put", "delete", "expire", "snapshot"]);
    let some = |text: &str| Some(base64(text));
    let gone = |key: &str| ("delete".to_string(), key.to_string(), None);
    assert_eq!(
        summary(&events),
        [
            ("put".into(), "app/a".into(), some("1")),
            ("put".into(), "app/b".into(), some("2")),
            gone("app/a"),
            ("put".into(), "app/c".into(), some("3")),
            gone("app/b"),
            gone("app/c"),
            gone("app/start"),
        ],
        "{lines:?}"
    );
    let indexes: Vec<u64> = events.iter().map(|event| event["index"].as_u64().expect("an index")).collect();
    assert_eq!((indexes[0], indexes[1], indexes[3]), (a, b, c), "{lines:?}");
    assert!(b < indexes[2] && indexes[2] < c, "the delete between the puts: {lines:?}");
    assert!(indexes[4] > c && indexes[4] == indexes[5] && indexes[5] == indexes[6], "one entry: {lines:?}");
    assert_eq!(events[0]["create_index"], a);

    // Ctrl-C ends it cleanly.
    let (code, errors) = watch.interrupt();
    assert_eq!(code, Some(0), "{errors}");

    // From b: only what came after it.
    let mut resumed =
        Running::start(&endpoints(&cluster, NodeId(3)), &["watch", "app/", "--json", "--from", &b.to_string()]);
    let lines = resumed.wait_for("five changes", |lines| Running::events(lines, &["put", "delete"]).len() >= 5);
    let events = Running::events(&lines, &["put", "delete", "snapshot"]);
    assert_eq!(
        summary(&events),
        [gone("app/a"), ("put".into(), "app/c".into(), some("3")), gone("app/b"), gone("app/c"), gone("app/start")],
        "{lines:?}"
    );
    assert_eq!(resumed.interrupt().0, Some(0));
}

#[test]
fn without_from_it_prints_the_changes_from_now_on_for_people() {
    let cluster = cluster("watch-now");
    cluster.client.set(NodeId(1), "app/old", b"before");
    let mut watch = Running::start(&endpoints(&cluster, NodeId(2)), &["watch", "app/"]);
    // The watch starts at some point: write until it shows a tick, then it shows every one.
    let mut written = 0;
    let deadline = Instant::now() + PATIENCE;
    while watch.seen.is_empty() {
        assert!(Instant::now() < deadline, "the watch printed nothing");
        cluster.client.set(NodeId(1), &format!("app/tick-{written}"), b"t");
        written += 1;
        if let Ok(line) = watch.lines.recv_timeout(Duration::from_millis(200)) {
            watch.seen.push(line);
        }
    }
    cluster.client.remove(NodeId(3), "app/old");
    let lines = watch.wait_for("the delete", |lines| lines.iter().any(|line| line.contains("delete app/old")));
    assert!(!lines.iter().any(|line| line.contains("before")), "no change from before the watch: {lines:?}");
    let first: usize = lines[0]
        .split_once(" put app/tick-")
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(number, _)| number.parse().ok())
        .unwrap_or_else(|| panic!("a tick first: {lines:?}"));
    let ticks: Vec<String> = (first..written).map(|n| format!("put app/tick-{n} = \"t\"")).collect();
    let shown: Vec<&str> = lines.iter().filter_map(|line| line.split_once(' ').map(|(_, rest)| rest)).collect();
    let mut want: Vec<String> = ticks;
    want.push("delete app/old".to_string());
    assert_eq!(shown, want, "{lines:?}");
    assert_eq!(watch.interrupt().0, Some(0));
}

/// `skiff serve --config CONFIG --id ID --data-dir DIR/ID`, logging to `DIR/ID.log`.
fn serve(dir: &Path, config: &Path, id: &str) -> LoggedChild {
    let mut command = common::skiff();
    command.arg("serve").arg("--config").arg(config).args(["--id", id]).arg("--data-dir").arg(dir.join(id));
    LoggedChild::spawn(command, dir.join(format!("{id}.log")))
}

/// The leader, as the cluster's nodes say (waiting for one).
fn leader(client: &skiff_client::Client) -> String {
    eventually_ok("a leader", || match client.status() {
        Ok(status) => status.leader.ok_or_else(|| "no leader yet".to_string()),
        Err(error) => Err(error.to_string()),
    })
}

#[test]
fn a_watch_outlives_its_nodes_and_the_leaders_restart_with_no_event_missing_or_twice() {
    // Nodes in processes of their own, stopped as a machine would be: a crash, then SIGTERM.
    let dir = tempfile::tempdir().expect("a directory");
    let file = ClusterFile::builder("watch-restart", 3).http().build();
    let config = file.write(dir.path());
    let mut nodes: BTreeMap<&str, LoggedChild> =
        ["n1", "n2", "n3"].into_iter().map(|id| (id, serve(dir.path(), &config, id))).collect();
    let writer = skiff_client::Client::new(file.http_addresses()).expect("a client");
    // n1 leads, and is the watch's node (the first endpoint that answers).
    eventually_ok("n1 the leader", || {
        if leader(&writer) == "n1" {
            return Ok(());
        }
        writer.transfer_leader(Some("n1")).map_err(|error| error.to_string())?;
        Err("transferred; checking".to_string())
    });
    let http = file.http_addresses();
    let mut watch = Running::start(&http.join(","), &["watch", "app/", "--json", "--from", "0"]);
    let put = |n: usize| assert!(writer.put(&format!("app/k{n:03}"), n.to_string()).expect("a put"));
    for n in 0..10 {
        put(n);
    }
    watch.wait_for("ten puts", |lines| Running::events(lines, &["put"]).len() >= 10);

    nodes.remove("n1").expect("n1").kill();
    for n in 10..25 {
        put(n);
    }
    nodes.insert("n1", serve(dir.path(), &config, "n1"));
    for n in 25..40 {
        put(n);
    }
    // The watch moved to n2, the next endpoint: make n2 the leader, and stop it (SIGTERM).
    eventually_ok("n2 the leader", || {
        if leader(&writer) == "n2" {
            return Ok(());
        }
        writer.transfer_leader(Some("n2")).map_err(|error| error.to_string())?;
        Err("transferred; checking".to_string())
    });
    let id = "n2";
    assert!(nodes.remove(id).expect("running").stop().success());
    for n in 40..50 {
        put(n);
    }
    nodes.insert(id, serve(dir.path(), &config, id));
    for n in 50..60 {
        put(n);
    }

    let lines = watch.wait_for("sixty puts", |lines| Running::events(lines, &["put"]).len() >= 60);
    let (code, errors) = watch.interrupt();
    eprintln!("the watch's standard error:\n{errors}");
    assert_eq!(code, Some(0), "{errors}");
    assert!(errors.matches("resumed after index").count() >= 2, "it says where it resumed, twice: {errors}");
    // A resume may start with a snapshot (a node's history is lost with its restart):
    // replaying every line, snapshots included, must give each key once, in order.
    let events = Running::events(&lines, &["put", "snapshot", "snapshot-begin"]);
    let mut keys: Vec<String> = Vec::new();
    let mut last_index = 0;
    for event in &events {
        if event["type"] == "snapshot-begin" {
            keys.clear();
            continue;
        }
        let index = event["index"].as_u64().expect("an index");
        assert!(index >= last_index, "indexes never go back: {lines:?}");
        last_index = index;
        keys.push(event["key"].as_str().expect("a key").to_string());
    }
    let want: Vec<String> = (0..60).map(|n| format!("app/k{n:03}")).collect();
    assert_eq!(keys, want, "every put once, in order:\n{}\nstderr:\n{errors}", lines.join("\n"));
}

#[test]
fn invalid_arguments_are_refused_with_a_clear_error() {
    let cluster = cluster("watch-invalid");
    let endpoints = endpoints(&cluster, NodeId(1));
    let run = |args: &[&str]| {
        common::skiff().arg("--endpoints").arg(&endpoints).args(args).output().expect("run skiff watch")
    };
    let not_a_number = run(&["watch", "app/", "--from", "abc"]);
    assert_eq!(not_a_number.status.code(), Some(2), "{not_a_number:?}");
    assert!(stderr(&not_a_number).contains("--from"), "{}", stderr(&not_a_number));

    let long = "k".repeat(9000);
    let overlong = run(&["watch", &long]);
    assert_eq!(overlong.status.code(), Some(1), "{overlong:?}");
    let text = stderr(&overlong);
    assert!(text.contains("cannot watch") && text.contains("longer than the longest key"), "{text}");

    let missing = run(&["watch"]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}

#[test]
fn the_shells_watch_prints_changes_until_enter_then_the_shell_goes_on() {
    let cluster = cluster("watch-shell");
    cluster.client.set(NodeId(1), "app/s1", b"x");
    let mut shell = Running::start(&endpoints(&cluster, NodeId(2)), &["shell"]);
    shell.write("watch app/ 0\n");
    shell.wait_for("the first key", |lines| lines.iter().any(|line| line.contains("app/s1 = \"x\"")));
    cluster.client.set(NodeId(3), "app/s2", b"y");
    shell.wait_for("the second key", |lines| lines.iter().any(|line| line.contains("put app/s2 = \"y\"")));
    // Enter ends the watch; the shell takes the next command.
    shell.write("\nwatch app/ x\nget app/s2\nexit\n");
    let lines = shell.wait_for("the get", |lines| lines.last().is_some_and(|line| line == "y"));
    assert!(lines.iter().any(|line| line.contains("FROM is an index")), "{lines:?}");
    let output = shell.child.wait_with_output().expect("wait for the shell");
    assert!(output.status.success(), "{output:?}");
}
