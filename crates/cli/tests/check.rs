//! `skiff check` end to end: real clusters of `skiff serve` processes, killed, paused,
//! partitioned and restarted while clients run, and the report it prints.
//!
//! A run at `--base-port B` takes raft `B+1..` and http `B+101..`: the testkit hands out a
//! block of free ports for it.

mod common;

use std::path::Path;
use std::process::Output;

use common::{cluster, skiff, stderr, stdout};
use serde_json::Value;
use skiff_testkit::kv::HttpClient;
use skiff_testkit::ports;

/// `--base-port` for a run of `nodes` nodes: the first of a block of free ports that holds
/// its raft ports (base + 1..) and its http ports (base + 101..).
fn base_port(nodes: u16) -> String {
    ports::block(101 + nodes).to_string()
}

/// Runs `skiff check ARGS --json --history FILE`; returns the output, the report and the
/// history file's operations.
fn check(args: &[&str], dir: &Path) -> (Output, Value, Vec<Value>) {
    let history = dir.join("history.json");
    let output = skiff()
        .arg("check")
        .args(args)
        .arg("--json")
        .arg("--history")
        .arg(&history)
        // For the client commands only: without --endpoints, check starts its own cluster.
        .env("SKIFF_ENDPOINTS", "127.0.0.1:1")
        .output()
        .expect("run skiff check");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON report ({error}): {}\n{}", stdout(&output), stderr(&output)));
    let text = std::fs::read_to_string(&history).expect("the history file");
    let operations: Vec<Value> = serde_json::from_str(&text).expect("the history is a JSON array");
    (output, report, operations)
}

/// The report says every kind of operation completed, every fault kind in `faults` was
/// injected, the replicas converged, the history is linearizable, and the saved history has
/// as many operations as the report counts.
fn assert_passed(output: &Output, report: &Value, history: &[Value], faults: &[&str]) {
    let context = || format!("report: {report:#}\nstderr:\n{}", stderr(output));
    assert!(output.status.success(), "skiff check failed: {}", context());
    assert_eq!(report["passed"], true, "{}", context());
    for kind in ["get", "put", "delete", "cas"] {
        assert!(report["operations"][kind]["ok"].as_u64().unwrap() > 0, "no {kind} completed: {}", context());
    }
    for kind in faults {
        assert!(report["faults"]["counts"][kind].as_u64().unwrap() > 0, "no {kind} fault: {}", context());
    }
    assert_eq!(report["convergence"]["converged"], true, "{}", context());
    assert!(report["convergence"]["applied_index"].as_u64().unwrap() > 0);
    assert_eq!(report["check"]["verdict"], "linearizable", "{}", context());
    assert!(report["check"]["operations_checked"].as_u64().unwrap() > 0);
    assert_eq!(report["check"]["violations"], serde_json::json!([]));
    assert_eq!(report["operations"]["total"].as_u64().unwrap(), history.len() as u64);
    // A passing run without --keep-data leaves nothing behind.
    assert_eq!(report["data_dir"], Value::Null);
    let first = &history[0];
    assert!(first["client"].is_u64() && first["key"].is_string() && first["invoke_ns"].is_u64(), "{first}");
    if faults.contains(&"membership") {
        // The watchers follow the initial nodes, which membership faults may all replace.
        assert!(report["feed"].is_null(), "no feed check with membership faults: {}", report["feed"]);
    } else {
        assert_feed_passed(output, report);
    }
}

/// The change-feed check ran a watcher per initial node, each received events, the
/// acknowledged writes were found in the feed, and nothing contradicted the history.
fn assert_feed_passed(output: &Output, report: &Value) {
    let context = || format!("report: {report:#}\nstderr:\n{}", stderr(output));
    let feed = &report["feed"];
    assert_eq!(feed["passed"], true, "{}", context());
    assert_eq!(feed["violations"], serde_json::json!([]), "{}", context());
    let watchers = feed["watchers"].as_array().expect("the feed's watchers");
    assert_eq!(watchers.len(), report["settings"]["endpoints"].as_array().unwrap().len(), "{}", context());
    for watcher in watchers {
        assert!(watcher["events"].as_u64().unwrap() > 0, "{}", context());
    }
    assert!(feed["indexes"].as_u64().unwrap() > 0, "{}", context());
    assert!(feed["acknowledged_found"].as_u64().unwrap() > 0, "{}", context());
}

#[test]
fn three_nodes_killed_paused_and_partitioned_stay_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(3);
    let args = ["--nodes", "3", "--time", "20s", "--faults", "kill,pause,partition", "--base-port", &base];
    let (output, report, history) = check(&args, dir.path());
    assert_passed(&output, &report, &history, &["kill", "pause", "partition"]);
    assert_eq!(report["settings"]["nodes"], 3);
    assert!(report["leaders"]["last_term"].as_u64().unwrap() >= 1);
    assert_eq!(report["leaders"]["split_terms"], serde_json::json!([]));
    assert_eq!(report["unexpected_exits"], serde_json::json!([]));
    assert_eq!(report["history"], dir.path().join("history.json").display().to_string());
    // Every node's watcher went through the faults to the end marker, and its model of
    // the keys matched the final read; the kills and pauses broke streams, which resumed.
    let watchers = report["feed"]["watchers"].as_array().unwrap();
    for watcher in watchers {
        assert_eq!(watcher["final_state"], "matched the final read", "{report:#}");
    }
    let reconnects: u64 = watchers.iter().map(|watcher| watcher["reconnects"].as_u64().unwrap()).sum();
    assert!(reconnects > 0, "{report:#}");
}

/// `--secure`: the cluster has TLS and tokens, and every client, status and fault call goes
/// over HTTPS with the management token check made; new nodes get certificates from the
/// run's CA.
#[test]
fn a_secure_cluster_killed_paused_and_partitioned_stays_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let base = membership_base_port(3);
    let args = ["--secure", "--time", "12s", "--faults", "kill,pause,partition,membership", "--base-port", &base];
    let (output, report, history) = check(&args, dir.path());
    assert_passed(&output, &report, &history, &["kill", "pause", "partition", "membership"]);
    let endpoints = report["settings"]["endpoints"].as_array().unwrap();
    assert!(endpoints.iter().all(|url| url.as_str().unwrap().starts_with("https://127.0.0.1:")), "{report:#}");
    assert_eq!(report["unexpected_exits"], serde_json::json!([]));
    // Every fault was injected: a partition after an add names the new node, which every
    // node's fault API must know as a member though the cluster file does not list it.
    assert_eq!(report["faults"]["errors"], serde_json::json!([]), "{report:#}");
}

#[test]
fn five_nodes_lose_their_leader_and_restart_together() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(5);
    let args = ["--nodes", "5", "--time", "16s", "--faults", "leader,partition,restart-all", "--base-port", &base];
    let (output, report, history) = check(&args, dir.path());
    assert_passed(&output, &report, &history, &["leader", "partition", "restart-all"]);
    assert_eq!(report["convergence"]["nodes"], 5);
    assert!(report["leaders"]["changes"].as_u64().unwrap() >= 1, "the leader was killed: {report:#}");
}

/// `--base-port` for a run of `nodes` nodes with the `membership` fault: new nodes take the
/// `nodes + 4` slots after the initial ones.
fn membership_base_port(nodes: u16) -> String {
    ports::block(101 + 2 * nodes + 4).to_string()
}

/// The membership changes a report lists, in order (`add n4 (--join)`, `remove n2`,
/// `replace n3 by n5`).
fn membership_changes(report: &Value) -> Vec<String> {
    let events = report["faults"]["events"].as_array().expect("fault events");
    events
        .iter()
        .filter(|event| event["kind"] == "membership")
        .map(|event| event["description"].as_str().expect("a description").to_string())
        .collect()
}

/// Checks that a run added, removed and replaced nodes, and that the convergence check
/// compared the final members: the initial ones not removed or replaced, and the ones added
/// and not removed since. Returns the final members.
fn assert_membership_changed(report: &Value, nodes: usize) -> Vec<String> {
    let changes = membership_changes(report);
    for change in ["add ", "remove ", "replace "] {
        assert!(changes.iter().any(|done| done.starts_with(change)), "no {change}in {changes:?}: {report:#}");
    }
    let mut members: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
    for change in &changes {
        let words: Vec<&str> = change.split_whitespace().collect();
        match words[..] {
            ["add", new, ..] => members.push(new.to_string()),
            ["remove", old] => members.retain(|member| member != old),
            ["replace", old, "by", new] => {
                members.retain(|member| member != old);
                members.push(new.to_string());
            }
            _ => panic!("an unexpected membership change {change:?}"),
        }
    }
    assert!(members.len() >= nodes.min(3), "{members:?} after {changes:?}");
    let mut compared: Vec<String> = report["convergence"]["members"]
        .as_array()
        .expect("the compared members")
        .iter()
        .map(|id| id.as_str().expect("an id").to_string())
        .collect();
    compared.sort();
    members.sort();
    assert_eq!(compared, members, "the final members after {changes:?}");
    assert_eq!(report["faults"]["errors"], serde_json::json!([]), "{report:#}");
    members
}

#[test]
fn three_nodes_added_removed_and_replaced_stay_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let base = membership_base_port(3);
    let args = ["--nodes", "3", "--time", "20s", "--faults", "membership", "--base-port", &base];
    let (output, report, history) = check(&args, dir.path());
    assert_passed(&output, &report, &history, &["membership"]);
    assert_membership_changed(&report, 3);
    assert_eq!(report["unexpected_exits"], serde_json::json!([]));
}

#[test]
fn five_nodes_added_removed_and_replaced_stay_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let base = membership_base_port(5);
    let args = ["--nodes", "5", "--time", "20s", "--faults", "membership", "--base-port", &base];
    let (output, report, history) = check(&args, dir.path());
    assert_passed(&output, &report, &history, &["membership"]);
    let members = assert_membership_changed(&report, 5);
    assert_eq!(report["convergence"]["nodes"], members.len());
    assert_eq!(report["unexpected_exits"], serde_json::json!([]));
}

#[test]
fn a_running_cluster_is_checked_through_its_fault_api() {
    let cluster = cluster(3);
    let dir = tempfile::tempdir().unwrap();
    let endpoints = cluster.endpoints.join(",");
    let args = ["--endpoints", &endpoints, "--time", "6s", "--clients", "4"];
    let (output, report, history) = check(&args, dir.path());
    assert_passed(&output, &report, &history, &["partition", "leader"]);
    assert_eq!(report["settings"]["nodes"], Value::Null);
    // The run's keys were fresh, and are gone; no fault is left behind.
    let key = report["settings"]["keys"][0].as_str().unwrap();
    assert!(key.starts_with("skiff-check/"), "{key}");
    assert_eq!(cluster.run(&["list", "skiff-check/"]).status.code(), Some(0));
    assert_eq!(stdout(&cluster.run(&["list", "skiff-check/"])), "");
    let client = HttpClient::for_file(&cluster.file);
    for node in &cluster.file.nodes {
        let faults = client.get(node.id, "/v1/skiff/faults").ok().json();
        assert_eq!(faults["faults"], serde_json::json!([]), "{}", node.id);
    }
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let run = |args: &[&str]| skiff().arg("check").args(args).output().expect("run skiff check");
    let membership = run(&["--endpoints", "127.0.0.1:1", "--faults", "membership"]);
    assert_eq!(membership.status.code(), Some(2), "{membership:?}");
    assert!(stderr(&membership).contains("--faults membership cannot be used with --endpoints"), "{membership:?}");
    let kill = run(&["--endpoints", "127.0.0.1:1", "--faults", "partition,kill"]);
    assert_eq!(kill.status.code(), Some(2), "{kill:?}");
    assert!(stderr(&kill).contains("--faults kill cannot be used with --endpoints"), "{}", stderr(&kill));
    assert!(stderr(&kill).contains("partition,leader"), "{}", stderr(&kill));

    let zero = run(&["--time", "0s"]);
    assert_eq!(zero.status.code(), Some(2), "{zero:?}");
    assert!(stderr(&zero).contains("--time must be more than 0"), "{}", stderr(&zero));

    // Any count from 1 to 7 is accepted (even ones too): here only --time is refused.
    let four = run(&["--nodes", "4", "--time", "0s"]);
    assert_eq!(four.status.code(), Some(2));
    assert!(!stderr(&four).contains("--nodes"), "{}", stderr(&four));
    for nodes in ["0", "8"] {
        let refused = run(&["--nodes", nodes]);
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
        assert!(stderr(&refused).contains("--nodes"), "{}", stderr(&refused));
    }

    let secure = run(&["--secure", "--endpoints", "127.0.0.1:1"]);
    assert_eq!(secure.status.code(), Some(2), "{secure:?}");
    assert!(stderr(&secure).contains("--cacert and --token"), "{}", stderr(&secure));

    let unknown = run(&["--faults", "flood"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("unknown fault \"flood\""), "{}", stderr(&unknown));
    let lonely = run(&["--nodes", "1", "--faults", "partition"]);
    assert_eq!(lonely.status.code(), Some(2));
    assert!(stderr(&lonely).contains("partition needs at least 2 nodes"), "{}", stderr(&lonely));
}

/// `--workload lock`: clients take a lock with leases and write fenced values while the
/// leader is killed; one client at least is paused past its TTL and its write refused; keys
/// put with a lease disappear in time, and the report measures how late.
#[test]
fn the_lock_workload_keeps_holders_apart_and_expires_keys_across_leader_kills() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(3);
    let args = ["--workload", "lock", "--clients", "3", "--time", "12s", "--faults", "leader", "--base-port", &base];
    let (output, report, _) = check(&args, dir.path());
    let context = || format!("report: {report:#}\nstderr:\n{}", stderr(&output));
    assert!(output.status.success(), "skiff check failed: {}", context());
    let lock = &report["lock"];
    assert_eq!(lock["passed"], true, "{}", context());
    assert_eq!(lock["violations"], serde_json::json!([]), "{}", context());
    assert!(lock["acquisitions"].as_u64().unwrap() >= 2, "{}", context());
    assert!(lock["written"].as_u64().unwrap() > 0, "{}", context());
    let pauses = lock["pauses"].as_u64().unwrap();
    assert!(pauses >= 1, "{}", context());
    assert_eq!(lock["stale_writes_refused"].as_u64().unwrap(), pauses, "{}", context());
    assert!(lock["ttl"]["expired"].as_u64().unwrap() > 0, "{}", context());
    assert!(lock["ttl"]["max_error_ms"].is_f64(), "{}", context());
    assert!(report["faults"]["counts"]["leader"].as_u64().unwrap() > 0, "{}", context());
    // The change-feed check is the kv workload's.
    assert_eq!(report["feed"], Value::Null, "{}", context());
}

/// `--workload transfer`: clients move amounts between accounts with transactions guarded
/// by `cas` while the leader is killed; every read of all accounts finds the same total,
/// and the transfers applied lie between those acknowledged and those plus the unknown.
#[test]
fn the_transfer_workload_keeps_the_total_across_leader_kills() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(3);
    let args = [
        "--workload",
        "transfer",
        "--clients",
        "4",
        "--keys",
        "5",
        "--time",
        "10s",
        "--faults",
        "leader",
        "--base-port",
        &base,
    ];
    let (output, report, _) = check(&args, dir.path());
    let context = || format!("report: {report:#}\nstderr:\n{}", stderr(&output));
    assert!(output.status.success(), "skiff check failed: {}", context());
    assert_eq!(report["passed"], true, "{}", context());
    let transfer = &report["transfer"];
    assert_eq!(transfer["passed"], true, "{}", context());
    assert_eq!(transfer["violations"], serde_json::json!([]), "{}", context());
    assert_eq!(transfer["accounts"], 5, "{}", context());
    assert_eq!(transfer["total"], 5000, "{}", context());
    let ok = transfer["ok"].as_u64().unwrap();
    let unknown = transfer["unknown"].as_u64().unwrap();
    assert!(ok > 0, "no transfer completed: {}", context());
    assert!(transfer["totals_checked"].as_u64().unwrap() > 1, "{}", context());
    let applied = transfer["applied"].as_u64().unwrap();
    assert!((ok..=ok + unknown).contains(&applied), "{}", context());
    assert!(report["faults"]["counts"]["leader"].as_u64().unwrap() > 0, "{}", context());
}
