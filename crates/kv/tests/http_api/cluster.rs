//! The cluster routes (Consul's) and Skiff's own; leadership transfer and removal.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use skiff::NodeId;
use skiff_testkit::wait::eventually;

use crate::{KvClient, Setup, modify_index, node_id, value_of};

/// A cluster with one write, "greeting", committed: the cluster, its leader, every node,
/// their names, the greeting's index and the leader's term.
struct Greeted {
    setup: Setup,
    id_names: Vec<String>,
    greeting_index: u64,
    term: u64,
}

fn greeted(name: &str) -> Greeted {
    let setup = Setup::start(name);
    let id_names = setup.ids.iter().map(NodeId::to_string).collect();
    setup.client.set(setup.leader, "greeting", b"hello");
    let greeting = setup.client.entry(setup.leader, "greeting");
    let greeting_index = modify_index(&greeting);
    // Followers learn the commit with the next heartbeat: the routes below report it.
    eventually("every node has applied the greeting", || {
        setup.ids.iter().all(|&id| setup.client.status(id)["applied"].as_u64() >= Some(greeting_index))
    });
    let term = setup.client.status(setup.leader)["term"].as_u64().expect("term");
    Greeted { setup, id_names, greeting_index, term }
}

/// /v1/status/leader and /v1/status/peers.
#[test]
fn status_leader_and_peers_name_the_raft_addresses() {
    let Greeted { setup, .. } = greeted("http-cluster-status");
    let Setup { cluster, client, leader, ids, .. } = setup;
    let raft_addresses: BTreeSet<String> = ids.iter().map(|&id| cluster.raft_address(id)).collect();
    for &id in &ids {
        assert_eq!(client.get(id, "/v1/status/leader").ok().json(), json!(cluster.raft_address(leader)), "{id}");
        let peers = client.get(id, "/v1/status/peers").ok().json();
        let peers: BTreeSet<String> = serde_json::from_value(peers.clone()).unwrap_or_else(|_| panic!("{id}: {peers}"));
        assert_eq!(peers, raft_addresses, "GET {id} /v1/status/peers");
    }
    cluster.shutdown();
}

/// /v1/operator/raft/configuration: every voter, exactly one leader, the commit index.
#[test]
fn the_raft_configuration_lists_every_voter_exactly_one_leader_and_the_commit_index() {
    let Greeted { setup, id_names, greeting_index, .. } = greeted("http-cluster-configuration");
    let Setup { cluster, client, leader, ids, .. } = setup;
    for &id in &ids {
        let configuration = client.get(id, "/v1/operator/raft/configuration").ok().json();
        let servers = configuration["Servers"].as_array().unwrap_or_else(|| panic!("{id}: {configuration}"));
        let mut seen = BTreeSet::new();
        for server in servers {
            let server_id = server["ID"].as_str().unwrap_or_else(|| panic!("{id}: ID in {server}"));
            assert_eq!(server["Node"], server_id, "{id}: {server}");
            assert_eq!(server["Address"], cluster.raft_address(node_id(server_id)), "{id}: {server}");
            assert_eq!(server["Voter"], true, "{id}: {server}");
            assert_eq!(server["ProtocolVersion"], "3", "{id}: {server}");
            assert_eq!(server["Leader"], node_id(server_id) == leader, "{id}: {server}");
            seen.insert(server_id.to_string());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), id_names, "{id}: {configuration}");
        let leaders = servers.iter().filter(|server| server["Leader"] == true).count();
        assert_eq!(leaders, 1, "{id}: exactly one Leader: {configuration}");
        let index = configuration["Index"].as_u64().unwrap_or_else(|| panic!("{id}: Index in {configuration}"));
        assert!(index >= greeting_index, "{id}: Index {index} is below a committed write at {greeting_index}");
    }
    cluster.shutdown();
}

/// /v1/skiff/status: one leader, agreed on; the leader alone knows match and next.
#[test]
fn skiff_status_agrees_on_one_leader_which_alone_knows_match_and_next() {
    let Greeted { setup, id_names, greeting_index, .. } = greeted("http-cluster-skiff-status");
    let Setup { cluster, client, leader, ids, .. } = setup;
    eventually("every node has applied the greeting", || {
        ids.iter().all(|&id| client.status(id)["applied"].as_u64() >= Some(greeting_index))
    });
    let statuses: BTreeMap<NodeId, Value> = ids.iter().map(|&id| (id, client.status(id))).collect();
    let leaders: Vec<NodeId> =
        statuses.iter().filter(|(_, status)| status["role"] == "leader").map(|(&id, _)| id).collect();
    assert_eq!(leaders, [leader], "exactly one leader among three: {statuses:?}");
    let term = statuses[&leader]["term"].as_u64().expect("term");
    assert!(term >= 1);
    for (&id, status) in &statuses {
        let node = cluster.config.node(id).expect("a node");
        assert_eq!(status["id"], id.to_string(), "{status}");
        let role = status["role"].as_str().unwrap_or_default();
        assert!(["leader", "follower", "candidate", "pre-candidate"].contains(&role), "{id}: role in {status}");
        if id != leader {
            assert_eq!(role, "follower", "{id}: {status}");
        }
        assert_eq!(status["term"], term, "{id}: the term: {status}");
        assert_eq!(status["leader"], leader.to_string(), "{id}: {status}");
        let commit = status["commit"].as_u64().unwrap_or_else(|| panic!("{id}: commit in {status}"));
        let applied = status["applied"].as_u64().unwrap_or_else(|| panic!("{id}: applied in {status}"));
        let last = status["last_log"]["index"].as_u64().unwrap_or_else(|| panic!("{id}: last_log in {status}"));
        assert!(status["last_log"]["term"].as_u64().is_some_and(|t| t <= term), "{id}: {status}");
        assert!(commit >= greeting_index && applied <= commit && commit <= last, "{id}: {status}");
        assert!(status["snapshot_index"].is_u64(), "{id}: snapshot_index in {status}");
        assert!(status["voted_for"].is_string() || status["voted_for"].is_null(), "{id}: voted_for in {status}");
        assert_eq!(status["voters"], json!(id_names), "{id}: {status}");
        assert_eq!(status["learners"], json!([]), "{id}: {status}");
        assert_eq!(status["raft_address"], node.raft.as_str(), "{id}: {status}");
        assert_eq!(status["http_address"], node.http.as_deref().expect("http"), "{id}: {status}");
        let peers = status["peers"].as_array().unwrap_or_else(|| panic!("{id}: peers in {status}"));
        let peer_ids: Vec<&str> = peers.iter().map(|peer| peer["id"].as_str().expect("a peer id")).collect();
        let expected: Vec<String> = cluster.others(id).iter().map(NodeId::to_string).collect();
        assert_eq!(peer_ids, expected, "{id}: peers in {status}");
        for peer in peers {
            assert_eq!(peer["voter"], true, "{id}: {peer}");
            assert!(peer["connected"].is_boolean(), "{id}: connected in {peer}");
            assert!(peer["dropped_messages"].is_u64(), "{id}: dropped_messages in {peer}");
            assert!(peer["last_contact_ms"].is_u64() || peer["last_contact_ms"].is_null(), "{id}: {peer}");
            assert!(peer["rtt_ms"].is_number() || peer["rtt_ms"].is_null(), "{id}: {peer}");
            if id == leader {
                let matched = peer["match"].as_u64().unwrap_or_else(|| panic!("leader {id}: match in {peer}"));
                let next = peer["next"].as_u64().unwrap_or_else(|| panic!("leader {id}: next in {peer}"));
                assert!(matched <= last && next > matched, "leader {id}: {peer}");
            } else {
                assert!(peer["match"].is_null() && peer["next"].is_null(), "follower {id}: match/next in {peer}");
            }
        }
    }
    cluster.shutdown();
}

/// /v1/skiff/log: the entries, their committed marks, from and limit.
#[test]
fn skiff_log_pages_the_entries_with_their_committed_marks() {
    let Greeted { setup, greeting_index, term, .. } = greeted("http-cluster-log");
    let Setup { cluster, client, ids, .. } = setup;
    for &id in &ids {
        let log = client.get(id, "/v1/skiff/log").ok().json();
        let first = log["first_index"].as_u64().unwrap_or_else(|| panic!("{id}: first_index in {log}"));
        let last = log["last_index"].as_u64().unwrap_or_else(|| panic!("{id}: last_index in {log}"));
        let commit = log["commit"].as_u64().unwrap_or_else(|| panic!("{id}: commit in {log}"));
        assert!(log["applied"].as_u64().is_some_and(|applied| applied <= commit), "{id}: {log}");
        assert_eq!(first, 1, "{id}: nothing was compacted yet: {log}");
        let entries = log["entries"].as_array().unwrap_or_else(|| panic!("{id}: entries in {log}"));
        let indexes: Vec<u64> = entries.iter().map(|entry| entry["index"].as_u64().expect("index")).collect();
        assert_eq!(indexes, (first..=last).collect::<Vec<_>>(), "{id}: a short log, all of it by default: {log}");
        for entry in entries {
            let index = entry["index"].as_u64().expect("index");
            assert_eq!(entry["committed"], index <= commit, "{id}: committed mark of {entry} (commit {commit})");
            assert!(entry["term"].as_u64().is_some_and(|t| t >= 1 && t <= term), "{id}: term of {entry}");
            let kind = entry["kind"].as_str().unwrap_or_default();
            assert!(["empty", "command", "membership"].contains(&kind), "{id}: kind of {entry}");
            assert!(entry["description"].is_string(), "{id}: description of {entry}");
        }
        let put = &entries[(greeting_index - first) as usize];
        assert_eq!(put["kind"], "command", "{id}: the greeting's entry: {put}");
        let description = put["description"].as_str().unwrap_or_default();
        assert!(description.contains("put") && description.contains("greeting"), "{id}: {put}");

        let window = client.get(id, "/v1/skiff/log?from=1&limit=2").ok().json();
        let indexes: Vec<u64> =
            window["entries"].as_array().expect("entries").iter().map(|e| e["index"].as_u64().unwrap()).collect();
        assert_eq!(indexes, [1, 2], "{id}: from=1&limit=2: {window}");
        let window = client.get(id, &format!("/v1/skiff/log?from={greeting_index}&limit=100")).ok().json();
        let indexes: Vec<u64> =
            window["entries"].as_array().expect("entries").iter().map(|e| e["index"].as_u64().unwrap()).collect();
        assert_eq!(indexes.first(), Some(&greeting_index), "{id}: from={greeting_index}: {window}");
        assert_eq!(indexes.last(), window["last_index"].as_u64().as_ref(), "{id}: {window}");
        let tail = client.get(id, "/v1/skiff/log?limit=1").ok().json();
        let indexes: Vec<u64> =
            tail["entries"].as_array().expect("entries").iter().map(|e| e["index"].as_u64().unwrap()).collect();
        assert_eq!(indexes, [tail["last_index"].as_u64().unwrap()], "{id}: limit=1 is the last entry: {tail}");
    }
    cluster.shutdown();
}

/// /v1/skiff/members.
#[test]
fn skiff_members_lists_every_member_and_refuses_adding_or_promoting_one_again() {
    let Greeted { setup, .. } = greeted("http-cluster-members");
    let Setup { cluster, client, leader, ids, .. } = setup;
    for &id in &ids {
        let members = client.get(id, "/v1/skiff/members").ok().json();
        assert_eq!(members["leader"], leader.to_string(), "{id}: {members}");
        let expected: Vec<Value> = ids
            .iter()
            .map(|&member| {
                let node = cluster.config.node(member).expect("a node");
                json!({"id": member.to_string(), "voter": true, "raft": node.raft, "http": node.http, "redis": node.redis})
            })
            .collect();
        assert_eq!(members["members"], json!(expected), "{id}: {members}");
    }
    // Adding a member again, or promoting a voter: 409.
    client.post(leader, "/v1/skiff/members", br#"{"id": "n2"}"#).error(409);
    client.post(leader, "/v1/skiff/members/n2/promote", b"").error(409);
    cluster.shutdown();
}

/// /metrics: Prometheus text with Skiff's metrics, after every node served requests (the
/// greeted cluster's status requests).
#[test]
fn metrics_are_prometheus_text_with_each_nodes_samples() {
    let Greeted { setup, greeting_index, term, .. } = greeted("http-cluster-metrics");
    let Setup { cluster, client, ids, .. } = setup;
    for &id in &ids {
        let reply = client.get(id, "/metrics").ok();
        let content_type = reply.header("Content-Type").unwrap_or_default().to_string();
        assert!(content_type.starts_with("text/plain"), "{}: Content-Type {content_type:?}", reply.what);
        let text = reply.text();
        // This node's samples (one process may serve several nodes, each labeled with its
        // id), summed over the other labels (route, code).
        let node_label = format!("node=\"{id}\"");
        let mut samples: BTreeMap<String, f64> = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            if !labels.contains(&node_label) {
                continue;
            }
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("GET {id} /metrics: a sample {line:?}"));
            *samples.entry(name.trim().to_string()).or_default() += value;
        }
        for name in [
            "skiff_raft_term",
            "skiff_raft_commit_index",
            "skiff_raft_applied_index",
            "skiff_raft_leader_changes_total",
            "skiff_http_requests_total",
        ] {
            assert!(samples.contains_key(name), "GET {id} /metrics has no {name}:\n{text}");
        }
        assert!(
            samples.keys().any(|name| name.starts_with("skiff_http_request_seconds")),
            "GET {id} /metrics has no skiff_http_request_seconds:\n{text}"
        );
        assert_eq!(samples["skiff_raft_term"], term as f64, "GET {id} /metrics: skiff_raft_term");
        assert!(samples["skiff_raft_commit_index"] >= greeting_index as f64, "GET {id} /metrics: commit");
        assert!(samples["skiff_http_requests_total"] >= 1.0, "GET {id} /metrics: requests");
    }
    cluster.shutdown();
}

/// Transfer leadership to a named follower, through another follower.
#[test]
fn transfer_leader_moves_leadership_to_a_named_follower_or_to_any_other() {
    let Greeted { setup, term, .. } = greeted("http-cluster-transfer");
    let Setup { cluster, client, leader, ids, .. } = setup;
    let target = cluster.others(leader)[0];
    let asker = cluster.others(leader)[1];
    let reply = client.post(asker, &format!("/v1/operator/raft/transfer-leader?id={target}"), b"").ok();
    assert_eq!(reply.json(), json!({"Success": true}), "{}", reply.what);
    let new_leader = cluster.leader();
    assert_eq!(new_leader, target, "transfer-leader?id={target}");
    for &id in &ids {
        assert_eq!(client.get(id, "/v1/status/leader").ok().json(), json!(cluster.raft_address(target)), "{id}");
        let configuration = client.get(id, "/v1/operator/raft/configuration").ok().json();
        let leaders: Vec<&Value> =
            configuration["Servers"].as_array().expect("Servers").iter().filter(|s| s["Leader"] == true).collect();
        assert_eq!(leaders.len(), 1, "{id}: {configuration}");
        assert_eq!(leaders[0]["ID"], target.to_string(), "{id}: {configuration}");
    }
    assert!(client.status(target)["term"].as_u64() > Some(term), "a new leader, a new term");
    client.set(asker, "after-transfer", b"1");
    // Without an id: to some other voter.
    let reply = client.post(target, "/v1/operator/raft/transfer-leader", b"").ok();
    assert_eq!(reply.json(), json!({"Success": true}), "{}", reply.what);
    let leader = cluster.leader();
    assert_ne!(leader, target, "transfer-leader without an id kept the leader");
    assert_eq!(value_of(&client.entry(target, "after-transfer")), b"1");
    // Without an id, through a follower: the leader picks its successor.
    let follower = cluster.others(leader)[0];
    let reply = client.post(follower, "/v1/operator/raft/transfer-leader", b"").ok();
    assert_eq!(reply.json(), json!({"Success": true}), "{}", reply.what);
    let newest = cluster.leader();
    assert_ne!(newest, leader, "transfer-leader without an id, through {follower}, kept the leader");
    // A malformed id is bad input.
    client.post(newest, "/v1/operator/raft/transfer-leader?id=abc", b"").error(400);
    cluster.shutdown();
}

/// Removal: a follower through Consul's route, then another through Skiff's.
#[test]
fn members_are_removed_through_consuls_route_and_through_skiffs() {
    let Greeted { setup, .. } = greeted("http-cluster-removal");
    let Setup { cluster, client, leader, .. } = setup;
    let [removed_first, removed_second] = <[NodeId; 2]>::try_from(cluster.others(leader)).expect("two followers");
    let reply = client.delete(removed_second, &format!("/v1/operator/raft/peer?id={removed_first}")).ok();
    assert!(reply.body.is_empty(), "{}: an empty body, got {:?}", reply.what, reply.text());
    let remaining = [leader, removed_second];
    for &id in &remaining {
        eventually(format!("{id} sees {removed_first} removed"), || {
            client.get(id, "/v1/status/peers").ok().json().as_array().map(Vec::len) == Some(2)
        });
        let members = client.get(id, "/v1/skiff/members").ok().json();
        let member_ids: Vec<&Value> =
            members["members"].as_array().expect("members").iter().map(|m| &m["id"]).collect();
        assert!(!member_ids.contains(&&json!(removed_first.to_string())), "{id}: {members}");
        let configuration = client.get(id, "/v1/operator/raft/configuration").ok().json();
        assert_eq!(configuration["Servers"].as_array().map(Vec::len), Some(2), "{id}: {configuration}");
    }
    client.set(removed_second, "two-nodes", b"2");
    assert_eq!(cluster.leader_among(&remaining), leader);

    client.delete(leader, &format!("/v1/skiff/members/{removed_second}")).ok();
    eventually(format!("{leader} sees {removed_second} removed"), || {
        client.get(leader, "/v1/status/peers").ok().json() == json!([cluster.raft_address(leader)])
    });
    client.set(leader, "one-node", b"1");
    assert_eq!(value_of(&client.entry(leader, "two-nodes")), b"2");
    cluster.shutdown();
}
