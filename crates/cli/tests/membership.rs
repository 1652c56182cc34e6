//! Growing and replacing nodes as an operator does, with real `skiff serve` processes: a
//! cluster started from a file with n1-n3 grows to five nodes by `serve --join` at new
//! addresses, loses n2 for good, replaces it with `members replace`, and keeps every write
//! it acknowledged while all this happened; a node that joined restarts from its data
//! directory alone.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{skiff, stderr, stdout};
use serde_json::Value;
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::HttpClient;
use skiff_testkit::ports::free_address;
use skiff_testkit::process::LoggedChild;
use skiff_testkit::wait::eventually_ok;

/// `skiff serve ARGS --data-dir DIR/ID`, logging to `DIR/ID.log`.
fn serve(dir: &Path, id: &str, args: &[&str]) -> LoggedChild {
    let mut command: Command = skiff();
    command.arg("serve").args(args).args(["--id", id]).arg("--data-dir").arg(dir.join(id));
    LoggedChild::spawn(command, dir.join(format!("{id}.log")))
}

/// `skiff --endpoints URL ARGS`, which must succeed; its standard output.
fn cli(endpoint: &str, args: &[&str]) -> String {
    let output = skiff().args(["--endpoints", endpoint]).args(args).output().expect("run skiff");
    assert!(output.status.success(), "skiff {args:?} failed:\n{}\n{}", stdout(&output), stderr(&output));
    stdout(&output)
}

/// `members list --json` through `endpoint`: each member's id and its entry.
fn members(endpoint: &str) -> BTreeMap<String, Value> {
    let list: Value = serde_json::from_str(&cli(endpoint, &["members", "list", "--json"])).expect("JSON");
    let members = list["members"].as_array().expect("members");
    members.iter().map(|member| (member["id"].as_str().expect("an id").to_string(), member.clone())).collect()
}

/// Waits until `id` is a voter, as the member at `endpoint` knows it.
fn wait_for_voter(endpoint: &str, id: &str, node: &mut LoggedChild) {
    eventually_ok(format!("{id} a voter"), || {
        if let Some(status) = node.exited() {
            panic!("{id} exited ({status}):\n{}", node.output());
        }
        let members = members(endpoint);
        match members.get(id) {
            Some(member) if member["voter"] == true => Ok(()),
            _ => Err(format!("{members:?}")),
        }
    });
}

/// The leader node `id` knows of, if it answers and knows one.
fn leader_seen_by(client: &HttpClient, id: NodeId) -> Result<String, String> {
    let reply = client.try_request("GET", id, "/v1/skiff/status", None, &[])?;
    reply.json()["leader"].as_str().map(str::to_string).ok_or_else(|| reply.text())
}

/// Writes `w/00001`, `w/00002`, ... one at a time through `nodes` in turn until `stop`,
/// counting in `count`; returns the numbers of the writes the cluster acknowledged (a `200`
/// saying `true`). A write that failed or whose answer was lost is not counted, and the
/// next key is used.
fn write_until(client: &HttpClient, nodes: &[NodeId], stop: &AtomicBool, count: &AtomicUsize) -> Vec<u64> {
    let mut acknowledged = Vec::new();
    let mut number = 0;
    while !stop.load(Ordering::Relaxed) {
        number += 1;
        let node = nodes[number as usize % nodes.len()];
        let path = format!("/v1/kv/w/{number:05}");
        match client.try_request("PUT", node, &path, Some(format!("v{number}").as_bytes()), &[]) {
            Ok(reply) if reply.status == 200 && reply.text().trim() == "true" => {
                acknowledged.push(number);
                count.fetch_add(1, Ordering::Relaxed);
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
    acknowledged
}

#[test]
fn a_cluster_grows_by_join_replaces_a_lost_node_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let file = ClusterFile::builder("grow", 3).http().build();
    let config = file.write(dir);
    let config = config.to_str().expect("a UTF-8 path");
    // n4, n5 and n6 are in no file: they come with addresses of their own.
    let new: BTreeMap<&str, (String, String)> =
        ["n4", "n5", "n6"].into_iter().map(|id| (id, (free_address(), free_address()))).collect();
    let mut http: BTreeMap<NodeId, String> =
        file.nodes.iter().map(|node| (node.id, node.http.clone().expect("http"))).collect();
    for (number, (_, (_, address))) in (4..).zip(&new) {
        http.insert(NodeId(number), address.clone());
    }
    let client = HttpClient::new(http.clone());
    let url = |number: u64| format!("http://{}", http[&NodeId(number)]);

    // The first start: one command per initial member, all at once.
    let mut nodes: BTreeMap<&str, LoggedChild> =
        ["n1", "n2", "n3"].into_iter().map(|id| (id, serve(dir, id, &["--config", config]))).collect();
    eventually_ok("a leader", || leader_seen_by(&client, NodeId(1)));

    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    thread::scope(|scope| {
        // n1 and n3 stay members throughout: the writer uses them.
        let writer = scope.spawn(|| write_until(&client, &[NodeId(1), NodeId(3)], &stop, &count));

        // Grow to five by --join, with no cluster file.
        for id in ["n4", "n5"] {
            let (raft, http) = &new[id];
            let join = url(1);
            let mut node = serve(dir, id, &["--join", &join, "--raft", raft, "--http", http]);
            wait_for_voter(&url(1), id, &mut node);
            nodes.insert(id, node);
        }
        assert_eq!(members(&url(3)).len(), 5);

        // n2's machine is lost for good.
        nodes.remove("n2").expect("n2").kill();

        // n6 starts with the cluster file, which does not name it: it waits to be added.
        let (raft, http) = &new["n6"];
        nodes.insert("n6", serve(dir, "n6", &["--config", config, "--raft", raft, "--http", http]));
        let replaced = cli(&url(1), &["members", "replace", "n2", "--with", "n6", "--raft", raft, "--http", http]);
        for step in ["1/4 adding n6 as a learner", "2/4", "3/4 n6 is a voter; removing n2", "4/4 replaced n2 by n6"] {
            assert!(replaced.contains(step), "{step:?} in:\n{replaced}");
        }
        // Writes go on after the replacement.
        let replaced_at = count.load(Ordering::Relaxed);
        eventually_ok("writes acknowledged after the replacement", || {
            let now = count.load(Ordering::Relaxed);
            if now >= replaced_at + 20 { Ok(()) } else { Err(format!("{now} after {replaced_at}")) }
        });
        stop.store(true, Ordering::Relaxed);
        let acknowledged = writer.join().expect("the writer");

        // Every acknowledged write is there, read linearizably through the new node.
        let listed = client.get(NodeId(6), "/v1/kv/w/?recurse").ok().json();
        let values: BTreeMap<String, String> = listed
            .as_array()
            .expect("a listing")
            .iter()
            .map(|entry| {
                let key = entry["Key"].as_str().expect("a key").to_string();
                let value = entry["Value"].as_str().map(decode).unwrap_or_default();
                (key, value)
            })
            .collect();
        for number in &acknowledged {
            let key = format!("w/{number:05}");
            assert_eq!(values.get(&key).map(String::as_str), Some(format!("v{number}").as_str()), "{key}");
        }
    });

    // The members are n1 n3 n4 n5 n6, all voters, at their addresses.
    let listed = members(&url(4));
    assert_eq!(listed.keys().map(String::as_str).collect::<Vec<_>>(), ["n1", "n3", "n4", "n5", "n6"]);
    for (id, member) in &listed {
        assert_eq!(member["voter"], true, "{id}");
        let (raft, http) = match new.get(id.as_str()) {
            Some((raft, http)) => (raft.clone(), http.clone()),
            None => {
                let node = file.nodes.iter().find(|node| node.id.to_string() == *id).expect("an initial node");
                (node.raft.clone(), node.http.clone().expect("http"))
            }
        };
        assert_eq!((member["raft"].as_str(), member["http"].as_str()), (Some(raft.as_str()), Some(http.as_str())));
    }
    let table = cli(&url(5), &["members", "list"]);
    assert!(!table.contains("n2"), "{table}");

    // n4 restarts from its data directory alone: it kept the cluster's settings when it
    // joined, and finds its peers in its own state.
    let status = nodes.remove("n4").expect("n4").stop();
    assert!(status.success(), "n4 stopped with {status}");
    let mut n4 = serve(dir, "n4", &[]);
    client.set(NodeId(1), "after-restart", b"seen");
    eventually_ok("n4 back, with the write made while it was down", || {
        if let Some(status) = n4.exited() {
            panic!("n4 exited ({status}):\n{}", n4.output());
        }
        let reply = client.try_request("GET", NodeId(4), "/v1/kv/after-restart?stale&raw", None, &[])?;
        if reply.status == 200 && reply.text() == "seen" { Ok(()) } else { Err(format!("{}", reply.status)) }
    });
    leader_seen_by(&client, NodeId(4)).expect("n4 knows the leader");
    assert_eq!(members(&url(4)).len(), 5);
}

/// A Consul-style base64 value, as text.
fn decode(encoded: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
    String::from_utf8(bytes).expect("a UTF-8 value")
}
