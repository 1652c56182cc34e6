//! The client commands and the shell, run as a user would against a local cluster.

mod common;

use common::{Cluster, cluster, skiff, stderr, stdout};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::ports::free_address;

/// put, then get as text and as JSON; a missing key; cas.
#[test]
fn put_get_and_cas() {
    let cluster = cluster(3);

    // put, then get as text and as JSON.
    assert_eq!(cluster.ok(&["put", "greeting", "hello world"]), "OK\n");
    assert_eq!(cluster.ok(&["get", "greeting"]), "hello world\n");
    let json: serde_json::Value = serde_json::from_str(&cluster.ok(&["get", "greeting", "--json"])).unwrap();
    assert_eq!(json[0]["Key"], "greeting");
    assert_eq!(json[0]["Value"], "aGVsbG8gd29ybGQ="); // base64 of "hello world"
    let index = json[0]["ModifyIndex"].as_u64().expect("ModifyIndex");
    assert_eq!(cluster.ok(&["get", "greeting", "--raw"]), "hello world");
    assert_eq!(cluster.ok(&["get", "greeting", "--stale"]), "hello world\n");

    // A missing key: exit code 3 and a message on stderr.
    let missing = cluster.run(&["get", "no/such/key"]);
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    assert!(stdout(&missing).is_empty());
    assert!(stderr(&missing).contains("not found"), "{missing:?}");

    // cas: succeeds at the current index, then fails at the stale one (exit 1).
    assert_eq!(cluster.ok(&["cas", "greeting", "v2", "--index", &index.to_string()]), "OK\n");
    let failed = cluster.run(&["cas", "greeting", "v3", "--index", &index.to_string()]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(stderr(&failed).contains("cas failed"), "{failed:?}");
    assert!(stderr(&failed).contains(&format!("expected ModifyIndex {index}")), "{failed:?}");
    assert_eq!(cluster.ok(&["get", "greeting"]), "v2\n");
    // --index 0 creates only.
    assert_eq!(cluster.ok(&["cas", "fresh", "new", "--index", "0"]), "OK\n");
    let exists = cluster.run(&["cas", "fresh", "again", "--index", "0"]);
    assert_eq!(exists.status.code(), Some(1), "{exists:?}");
}

/// A value from standard input; list with a prefix; delete of a key and of a prefix.
#[test]
fn put_from_stdin_list_and_delete() {
    let cluster = cluster(3);

    // A value from standard input, with flags.
    let piped = cluster.run_with_input(&["put", "app/config", "-", "--flags", "42"], "line 1\nline 2\n");
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(cluster.ok(&["get", "app/config", "--raw"]), "line 1\nline 2\n");
    let json: serde_json::Value = serde_json::from_str(&cluster.ok(&["--json", "get", "app/config"])).unwrap();
    assert_eq!(json[0]["Flags"], 42);

    // list with a prefix, with values or names only.
    cluster.ok(&["put", "app/name", "skiff"]);
    cluster.ok(&["put", "apple", "red"]);
    let listed = cluster.ok(&["list", "app/"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].starts_with("app/config") && lines[0].ends_with("line 1\\nline 2\\n"), "{listed}");
    assert!(lines[1].starts_with("app/name") && lines[1].ends_with("skiff"), "{listed}");
    assert_eq!(cluster.ok(&["list", "app", "--keys"]), "app/config\napp/name\napple\n");
    assert_eq!(cluster.ok(&["list", "nothing/"]), "");
    assert_eq!(cluster.ok(&["list", "nothing/", "--json"]), "[]\n");

    // delete one key, then a prefix.
    assert_eq!(cluster.ok(&["delete", "apple"]), "OK\n");
    assert_eq!(cluster.run(&["get", "apple"]).status.code(), Some(3));
    assert_eq!(cluster.ok(&["delete", "app/", "--recurse", "--json"]), "true\n");
    assert_eq!(cluster.ok(&["list", "app", "--keys"]), "");
    assert_eq!(cluster.ok(&["delete", "never-existed"]), "OK\n");
}

/// A dead first endpoint (nothing listens there) falls through to a live one; with every
/// endpoint dead, exit 1 and a message naming them.
#[test]
fn a_dead_endpoint_falls_through_to_a_live_one() {
    let cluster = cluster(3);
    cluster.ok(&["put", "greeting", "v2"]);
    let (dead, also_dead) = (free_address(), free_address());
    let endpoints = format!("{also_dead},http://{}", cluster.endpoints[1]);
    let output = skiff().args(["--endpoints", &endpoints, "get", "greeting"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "v2\n");
    let output = skiff().args(["--endpoints", &endpoints, "put", "through", "yes"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    // Every endpoint dead: exit 1, and the message names them.
    let output = skiff().args(["--endpoints", &format!("{dead},{also_dead}"), "get", "x"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains(&dead) && stderr(&output).contains(&also_dead), "{output:?}");
}

#[test]
fn cluster_commands() {
    let cluster = cluster(3);
    cluster.ok(&["put", "k", "v"]);

    // status: one row per node, exactly one leader.
    let table = cluster.ok(&["status"]);
    let rows: Vec<&str> = table.lines().filter(|line| line.starts_with("│ n")).collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(rows.iter().filter(|row| row.contains("┆ leader ")).count(), 1, "{table}");
    for id in ["n1", "n2", "n3"] {
        assert!(rows.iter().any(|row| row.starts_with(&format!("│ {id} "))), "{table}");
    }
    // The probes' answers: every node alive and ready.
    assert!(rows.iter().all(|row| row.contains("┆ ready ")), "{table}");
    let nodes = cluster.status();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|node| node["term"].as_u64().is_some()), "{nodes:?}");
    for node in &nodes {
        assert_eq!((&node["health"]["status"], &node["ready"]["status"]), (&"alive".into(), &"ready".into()), "{node}");
    }

    // log: committed entries carry a `*`, and the put is there.
    let log = cluster.ok(&["log"]);
    assert!(log.lines().any(|line| line.starts_with("* ") && line.contains("put")), "{log}");
    assert!(log.lines().all(|line| line.starts_with("* ") || line.starts_with("  ")), "{log}");
    let one = cluster.ok(&["log", "--from", "1", "--limit", "1"]);
    assert_eq!(one.lines().count(), 1, "{one}");
    let json: serde_json::Value = serde_json::from_str(&cluster.ok(&["log", "--json"])).unwrap();
    assert!(json["entries"].as_array().is_some_and(|entries| !entries.is_empty()), "{json}");

    // members list.
    let members = cluster.ok(&["members", "list"]);
    for (id, http) in ["n1", "n2", "n3"].into_iter().zip(&cluster.endpoints) {
        let row = members.lines().find(|line| line.trim_start().starts_with(id)).expect("a row per member");
        assert!(row.contains("voter") && row.contains(http.as_str()), "{members}");
    }
    let json: serde_json::Value = serde_json::from_str(&cluster.ok(&["members", "list", "--json"])).unwrap();
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3), "{json}");

    // transfer-leader moves the leader to the node named.
    let leader = cluster.wait_for_leader(None);
    let target = ["n1", "n2", "n3"].into_iter().find(|id| *id != leader).unwrap();
    let moved = cluster.ok(&["transfer-leader", target]);
    assert_eq!(moved, format!("leader is now {target}\n"));
    cluster.wait_for_leader(Some(target));
    // And without an id, to some other voter.
    let moved = cluster.ok(&["transfer-leader"]);
    assert!(moved.starts_with("leader is now n") && !moved.contains(target), "{moved}");
    assert_eq!(cluster.ok(&["get", "k"]), "v\n");
}

#[test]
fn shell_reads_commands_from_a_pipe() {
    let cluster = cluster(3);
    let output = cluster.run_with_input(&["shell"], "put a 1\nget a\nshow_log\nbogus\nexit\nget a\n");
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "OK", "{text}");
    assert_eq!(lines[1], "1", "{text}");
    assert!(lines.iter().any(|line| line.starts_with("* ") && line.contains("put")), "{text}");
    assert!(text.contains("unknown command \"bogus\"") && text.contains("help"), "{text}");
    // Nothing after exit runs: "1" appears once.
    assert_eq!(lines.iter().filter(|line| **line == "1").count(), 1, "{text}");

    // Errors are printed and the shell goes on; quotes keep spaces; list, status, help.
    let script = "get\nput 'my key' \"two words\"\nget 'my key'\nget missing\nlist\nstatus\nhelp\n";
    let output = cluster.run_with_input(&["shell"], script);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("error: usage: get KEY"), "{text}");
    assert!(text.contains("\ntwo words\n"), "{text}");
    assert!(text.contains("(not found)"), "{text}");
    assert!(text.contains("my key") && text.contains("┆ leader "), "{text}");
    assert!(text.contains("show_log [N]"), "{text}");
}

#[test]
fn membership_changes() {
    let file = ClusterFile::builder("cli-test", 3).joiners(1).http().build();
    let mut cluster = Cluster::start_file(common::SKIFF, file);
    let leader = cluster.wait_for_leader(None);
    // A follower answers POST /v1/skiff/members with a 307 to the leader, which the client
    // does not follow: give the leader's address first.
    let leader_id = skiff::config::parse_node_id(&leader).expect("a node id");
    let leader_http = cluster.file.node(leader_id).http.clone().expect("an http address");
    let to_leader = |args: &[&str]| {
        let output = skiff().args(["--endpoints", &leader_http]).args(args).output().unwrap();
        assert!(output.status.success(), "skiff {args:?}: {output:?}");
        stdout(&output)
    };

    let n4_raft = cluster.file.node(skiff::NodeId(4)).raft.clone();
    assert_eq!(to_leader(&["members", "add", "n4", "--learner"]), format!("added n4 ({n4_raft}) as a learner\n"));
    let members = cluster.ok(&["members", "list"]);
    assert!(members.lines().any(|line| line.trim_start().starts_with("n4") && line.contains("learner")), "{members}");
    let again = cluster.run(&["members", "promote", "n1"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(stderr(&again).contains("409"), "{again:?}");
    assert_eq!(to_leader(&["members", "promote", "n4"]), "promoted n4 to voter\n");
    cluster.members = 4;
    cluster.wait_for_leader(Some(&leader));
    let table = cluster.ok(&["status"]);
    assert_eq!(table.lines().filter(|line| line.starts_with("│ n")).count(), 4, "{table}");

    assert_eq!(to_leader(&["members", "remove", "n4"]), "removed n4\n");
    let members = cluster.ok(&["members", "list", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&members).unwrap();
    assert_eq!(json["members"].as_array().map(Vec::len), Some(3), "{json}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["get"][..],
        &["bogus-command"],
        &["cas", "k", "v"],
        &["status", "--interval", "1s"],
        &["--timeout", "x", "get", "k"],
    ] {
        let output = skiff().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "skiff {args:?}: {output:?}");
        assert!(!stderr(&output).is_empty());
    }
    let output = skiff().args(["--endpoints", "ftp://node:1", "get", "k"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("only http:// and https://"), "{output:?}");
}
