//! A cluster's life beyond single requests: restarting every node from its data directory
//! (with snapshots taken along the way), and growing the cluster with a node that joins.
//! Ports 19700-19799.

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff::NodeId;
use skiff::config::ClusterConfig;
use skiff_kv::{Server, ServerOptions};

const TIMEOUT: Duration = Duration::from_secs(15);

fn cluster(name: &str, base: u16, nodes: u16, joiners: u16, snapshot_after: u64) -> ClusterConfig {
    let mut text = format!("[cluster]\nname = \"{name}\"\n[raft]\nsnapshot_after_entries = {snapshot_after}\n");
    for i in 1..=nodes + joiners {
        let (raft, http) = (base + i, base + 50 + i);
        text.push_str(&format!("[[node]]\nid = \"n{i}\"\nraft = \"127.0.0.1:{raft}\"\nhttp = \"127.0.0.1:{http}\"\n"));
        if i > nodes {
            text.push_str("join = true\n");
        }
    }
    ClusterConfig::from_toml_str(&text).expect("a valid cluster file")
}

async fn start(cluster: &ClusterConfig, id: u64, dir: &std::path::Path) -> Server {
    let options = ServerOptions::new(cluster.clone(), NodeId(id), dir.join(format!("n{id}")));
    Server::start(options).await.expect("the server starts")
}

/// A blocking HTTP call from the async test, on a blocking thread: (status, body).
async fn call(method: &'static str, url: String, body: Option<String>, key: Option<&'static str>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let request = request.body(body.unwrap_or_default()).expect("a request");
        let mut response = agent.run(request).expect("the node answers");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .expect("the call thread")
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_keeps_its_data_and_its_remembered_requests() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Snapshots every 20 entries: the restart restores from a snapshot plus a log tail.
    let cluster = cluster("restart", 19700, 3, 0, 20);
    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(start(&cluster, id, dir.path()).await);
    }
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    for i in 0..50 {
        let port = 19751 + (i % 3);
        let (status, body) = call("PUT", url(port, &format!("/v1/kv/k{i}")), Some(format!("v{i}")), None).await;
        assert_eq!((status, body.as_str()), (200, "true"));
    }
    let (status, body) = call("PUT", url(19751, "/v1/kv/once?cas=0"), Some("first".into()), Some("req-1")).await;
    assert_eq!((status, body.as_str()), (200, "true"));
    let (_, status_body) = call("GET", url(19751, "/v1/skiff/status"), None, None).await;
    let status: Value = serde_json::from_str(&status_body).expect("status is JSON");
    assert!(status["snapshot_index"].as_u64() > Some(0), "a snapshot was taken: {status}");
    for server in servers {
        server.shutdown().await.expect("a clean shutdown");
    }

    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(start(&cluster, id, dir.path()).await);
    }
    for i in [0, 17, 49] {
        let (status, body) = call("GET", url(19752, &format!("/v1/kv/k{i}?raw")), None, None).await;
        assert_eq!((status, body), (200, format!("v{i}")), "k{i} after the restart");
    }
    // The retried request is answered from the remembered result (cas=0 would now fail).
    let (status, body) = call("PUT", url(19753, "/v1/kv/once?cas=0"), Some("first".into()), Some("req-1")).await;
    assert_eq!((status, body.as_str()), (200, "true"), "the retry returns the first result");
    let (_, body) = call("GET", url(19753, "/v1/kv/once"), None, None).await;
    let entries: Value = serde_json::from_str(&body).expect("JSON");
    let (create, modify) = (entries[0]["CreateIndex"].as_u64(), entries[0]["ModifyIndex"].as_u64());
    assert_eq!(create, modify, "applied once: {entries}");
    for server in servers {
        server.shutdown().await.expect("a clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listed_with_join_is_added_caught_up_and_promoted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cluster = cluster("grow", 19720, 3, 1, 10_000);
    let mut servers = Vec::new();
    for id in 1..=3 {
        servers.push(start(&cluster, id, dir.path()).await);
    }
    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");
    for i in 0..20 {
        let (status, _) = call("PUT", url(19771, &format!("/v1/kv/before/{i}")), Some("x".into()), None).await;
        assert_eq!(status, 200);
    }
    servers.push(start(&cluster, 4, dir.path()).await);
    let (_, members) = call("GET", url(19771, "/v1/skiff/members"), None, None).await;
    let members: Value = serde_json::from_str(&members).expect("JSON");
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3), "n4 is not a member yet: {members}");
    // Ask the leader (a follower answers 307 with the leader's address).
    let mut leader_port = 0;
    eventually("a leader", async || {
        let (_, body) = call("GET", url(19771, "/v1/skiff/status"), None, None).await;
        let status: Value = serde_json::from_str(&body).unwrap_or_default();
        leader_port = match status["leader"].as_str() {
            Some(leader) => 19770 + leader.trim_start_matches('n').parse::<u16>().unwrap_or(0),
            None => 0,
        };
        leader_port != 0
    })
    .await;
    let follower_port = if leader_port == 19771 { 19772 } else { 19771 };
    let (status, _) = call("POST", url(follower_port, "/v1/skiff/members"), Some(r#"{"id":"n4"}"#.into()), None).await;
    assert_eq!(status, 307, "a follower points at the leader");
    let (status, body) = call("POST", url(leader_port, "/v1/skiff/members"), Some(r#"{"id":"n4"}"#.into()), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call("POST", url(leader_port, "/v1/skiff/members"), Some(r#"{"id":"n4"}"#.into()), None).await;
    assert_eq!(status, 409, "already a member: {body}");
    let (_, body) = call("GET", url(19774, "/v1/kv/before/19?raw&stale"), None, None).await;
    assert_eq!(body, "x", "n4 caught up with the log");
    let (_, body) = call("GET", url(19774, "/v1/skiff/status"), None, None).await;
    let status: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["voters"].as_array().map(Vec::len), Some(4), "n4 is a voter: {status}");
    // Four voters: a write still commits with one of the original three stopped.
    let stopped = servers.remove(if leader_port == 19771 { 1 } else { 0 });
    stopped.shutdown().await.expect("stops");
    let (status, body) = call("PUT", url(19774, "/v1/kv/after"), Some("y".into()), None).await;
    assert_eq!((status, body.as_str()), (200, "true"));
    for server in servers {
        server.shutdown().await.expect("a clean shutdown");
    }
}
