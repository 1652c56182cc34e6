//! Fault injection through the HTTP API (`/v1/skiff/faults`): a partition made with it is
//! a real one for the consensus core (the isolated leader loses its quorum, the majority
//! elects another, writes go on there), and clearing it heals the cluster. Off by default:
//! then the route answers 403.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::{HttpClient, KvCluster};
use skiff_testkit::wait::eventually_ok;

/// A cluster of `nodes` nodes with fault injection on or off.
fn start(name: &str, nodes: u64, fault_injection: bool) -> KvCluster {
    KvCluster::start_with(ClusterFile::builder(name, nodes).http().build(), fault_injection)
}

/// Sends a request with a text body; returns the status and the body.
fn call(client: &HttpClient, method: &str, id: NodeId, path: &str, body: Option<&str>) -> (u16, String) {
    let reply = client.request(method, id, path, body.map(str::as_bytes), &[]);
    (reply.status, reply.text())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

#[test]
fn a_partition_made_through_the_api_is_real_and_heals() {
    let cluster = start("faults", 3, true);
    let client = &cluster.client;
    let leader = cluster.leader();
    let others = cluster.others(leader);
    let names: Vec<String> = others.iter().map(NodeId::to_string).collect();
    let faults = "/v1/skiff/faults";
    assert_eq!(json_of(&call(client, "GET", leader, faults, None).1), json!({ "enabled": true, "faults": [] }));

    // Bad faults are refused, with the reason.
    for (body, expected) in [
        (r#"{"action":"drop","peers":["n9"]}"#, "n9 is not a node of the cluster file"),
        (r#"{"action":"explode","peers":["n2"]}"#, "a fault is"),
        (r#"{"action":"delay","peers":["n2"]}"#, "delay_ms"),
        ("not json", "a fault is"),
    ] {
        let (status, text) = call(client, "POST", leader, faults, Some(body));
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(expected), "{body}: {text} should mention {expected:?}");
    }
    let own = format!(r#"{{"action":"drop","peers":["{leader}"]}}"#);
    let (status, _) = call(client, "POST", leader, faults, Some(&own));
    assert_eq!(status, 400, "a node cannot cut itself off");

    // Cut the leader off from both followers, both ways.
    let body = json!({ "action": "drop", "peers": names }).to_string();
    let (status, text) = call(client, "POST", leader, faults, Some(&body));
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["faults"], json!([{ "action": "drop", "peers": names, "direction": "both" }]));

    // The majority elects a new leader and takes writes.
    let new_leader = cluster.leader_among(&others);
    assert_ne!(new_leader, leader);
    let key = "/v1/kv/during-partition";
    let (status, text) = call(client, "PUT", others[0], key, Some("majority"));
    assert_eq!((status, text.as_str()), (200, "true"), "a write on the majority side");
    // The old leader cannot serve a linearizable read, nor write: it has no quorum.
    let (status, text) = call(client, "GET", leader, &format!("{key}?raw"), None);
    assert!(matches!(status, 503 | 504), "a consistent read on the isolated node: {status} {text}");
    let (status, text) = call(client, "PUT", leader, key, Some("minority"));
    assert!(matches!(status, 503 | 504), "a write on the isolated node: {status} {text}");
    let (status, text) = call(client, "GET", leader, &format!("{key}?raw&stale"), None);
    assert_eq!(status, 404, "its own state has not seen the majority's write: {text}");

    // Heal: the old leader learns the new term and catches up.
    let (status, text) = call(client, "DELETE", leader, faults, None);
    assert_eq!((status, json_of(&text)["faults"].clone()), (200, json!([])));
    let text = eventually_ok("the healed node serves the write", || {
        match call(client, "GET", leader, &format!("{key}?raw"), None) {
            (200, text) => Ok(text),
            (status, text) => Err(format!("{status} {text}")),
        }
    });
    assert_eq!(text, "majority", "the minority's write was never acknowledged, so it is gone");
    cluster.shutdown();
}

#[test]
fn delayed_messages_still_arrive() {
    let cluster = start("faults-delay", 3, true);
    let client = &cluster.client;
    let leader = cluster.leader();
    let follower = cluster.others(leader)[0];
    let faults = "/v1/skiff/faults";
    // A slow link (below the election timeout) between one follower and the leader.
    let body = json!({ "action": "delay", "delay_ms": 100, "peers": [leader.to_string()], "direction": "in" });
    assert_eq!(call(client, "POST", follower, faults, Some(&body.to_string())).0, 200);
    let started = Instant::now();
    assert_eq!(call(client, "PUT", follower, "/v1/kv/slow", Some("v")), (200, "true".to_string()));
    assert_eq!(call(client, "GET", follower, "/v1/kv/slow?raw", None), (200, "v".to_string()));
    assert!(started.elapsed() >= Duration::from_millis(100), "the leader's answers were delayed");
    assert_eq!(call(client, "DELETE", follower, faults, None).0, 200);
    cluster.shutdown();
}

#[test]
fn fault_injection_is_off_by_default() {
    let plain = start("faults-off", 1, false);
    let client = &plain.client;
    let (status, text) = call(client, "GET", NodeId(1), "/v1/skiff/faults", None);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("--fault-injection"), "{text}");
    let (status, _) = call(client, "POST", NodeId(1), "/v1/skiff/faults", Some(r#"{"action":"drop","peers":[]}"#));
    assert_eq!(status, 403);
    plain.shutdown();
}
