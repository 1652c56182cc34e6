//! A cluster's life beyond single requests: restarting every node from its data directory
//! (with snapshots taken along the way), and growing the cluster with a node that joins.

use serde_json::Value;
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;

#[test]
fn a_restarted_cluster_keeps_its_data_and_its_remembered_requests() {
    // Snapshots every 20 entries: the restart restores from a snapshot plus a log tail.
    let file = ClusterFile::builder("restart", 3).http().raft("snapshot_after_entries", 20).build();
    let mut cluster = KvCluster::start(file);
    let client = cluster.client.clone();
    let (n1, n2, n3) = (NodeId(1), NodeId(2), NodeId(3));
    for i in 0..50 {
        let id = [n1, n2, n3][i % 3];
        let reply = client.put(id, &format!("/v1/kv/k{i}"), format!("v{i}").as_bytes());
        assert_eq!((reply.status, reply.text().as_str()), (200, "true"));
    }
    let reply = client.put_with_key(n1, "/v1/kv/once?cas=0", b"first", "req-1");
    assert_eq!((reply.status, reply.text().as_str()), (200, "true"));
    let status = client.status(n1);
    assert!(status["snapshot_index"].as_u64() > Some(0), "a snapshot was taken: {status}");
    for id in [n1, n2, n3] {
        cluster.stop(id);
    }

    for id in [n1, n2, n3] {
        cluster.start_node(id);
    }
    for i in [0, 17, 49] {
        let reply = client.get(n2, &format!("/v1/kv/k{i}?raw"));
        assert_eq!((reply.status, reply.text()), (200, format!("v{i}")), "k{i} after the restart");
    }
    // The retried request is answered from the remembered result (cas=0 would now fail).
    let reply = client.put_with_key(n3, "/v1/kv/once?cas=0", b"first", "req-1");
    assert_eq!((reply.status, reply.text().as_str()), (200, "true"), "the retry returns the first result");
    let entries = client.get(n3, "/v1/kv/once").json();
    let (create, modify) = (entries[0]["CreateIndex"].as_u64(), entries[0]["ModifyIndex"].as_u64());
    assert_eq!(create, modify, "applied once: {entries}");
    cluster.shutdown();
}

#[test]
fn a_node_listed_with_join_is_added_caught_up_and_promoted() {
    let file = ClusterFile::builder("grow", 3).joiners(1).http().raft("snapshot_after_entries", 10_000).build();
    let mut cluster = KvCluster::start(file);
    let client = cluster.client.clone();
    let (n1, n4) = (NodeId(1), NodeId(4));
    for i in 0..20 {
        assert_eq!(client.put(n1, &format!("/v1/kv/before/{i}"), b"x").status, 200);
    }
    cluster.start_node(n4);
    let members = client.get(n1, "/v1/skiff/members").json();
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3), "n4 is not a member yet: {members}");
    // Ask the leader (a follower answers 307 with the leader's address).
    let leader = cluster.leader_among(&[NodeId(1), NodeId(2), NodeId(3)]);
    let follower = if leader == n1 { NodeId(2) } else { n1 };
    let reply = client.post(follower, "/v1/skiff/members", br#"{"id":"n4"}"#);
    assert_eq!(reply.status, 307, "a follower points at the leader");
    let reply = client.post(leader, "/v1/skiff/members", br#"{"id":"n4"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = client.post(leader, "/v1/skiff/members", br#"{"id":"n4"}"#);
    assert_eq!(reply.status, 409, "already a member: {}", reply.text());
    assert_eq!(client.get(n4, "/v1/kv/before/19?raw&stale").text(), "x", "n4 caught up with the log");
    let status: Value = client.status(n4);
    assert_eq!(status["voters"].as_array().map(Vec::len), Some(4), "n4 is a voter: {status}");
    // Four voters: a write still commits with one of the original three stopped.
    cluster.stop(follower);
    let reply = client.put(n4, "/v1/kv/after", b"y");
    assert_eq!((reply.status, reply.text().as_str()), (200, "true"));
    cluster.shutdown();
}
