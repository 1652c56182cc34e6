//! Fault injection through the HTTP API (`/v1/skiff/faults`): a partition made with it is
//! a real one for the consensus core (the isolated leader loses its quorum, the majority
//! elects another, writes go on there), and clearing it heals the cluster. Off by default:
//! then the route answers 403.
//!
//! Ports 19960-19999.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff::NodeId;
use skiff::config::ClusterConfig;
use skiff_kv::{Server, ServerOptions};

const TIMEOUT: Duration = Duration::from_secs(20);

struct Cluster {
    http: Vec<String>,
    servers: Vec<Server>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(name: &str, base: u16, nodes: u16, fault_injection: bool) -> Cluster {
        let mut text = format!("[cluster]\nname = \"{name}\"\n");
        for i in 1..=nodes {
            text += &format!(
                "[[node]]\nid = \"n{i}\"\nraft = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
                base + i,
                base + 10 + i
            );
        }
        let config = ClusterConfig::from_toml_str(&text).expect("a valid cluster file");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut servers = Vec::new();
        for id in config.node_ids() {
            let mut options = ServerOptions::new(config.clone(), id, dir.path().join(id.to_string()));
            options.fault_injection = fault_injection;
            servers.push(runtime.block_on(Server::start(options)).unwrap_or_else(|error| panic!("{id}: {error}")));
        }
        let http = servers.iter().map(|server| format!("http://{}", server.http_address())).collect();
        Cluster { http, servers, runtime, _dir: dir }
    }

    fn index_of(&self, id: NodeId) -> usize {
        self.servers.iter().position(|server| server.id() == id).expect("a node of the cluster")
    }

    /// The leader that every node in `among` agrees on.
    fn leader_among(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leaders: Vec<Option<NodeId>> =
                among.iter().map(|&at| self.servers[at].node().leader().leader).collect();
            if let Some(leader) = leaders[0]
                && leaders.iter().all(|known| *known == Some(leader))
                && among.contains(&self.index_of(leader))
            {
                return self.index_of(leader);
            }
            assert!(Instant::now() < deadline, "no agreed leader among {among:?}: {leaders:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shutdown(self) {
        for server in self.servers {
            self.runtime.block_on(server.shutdown()).expect("a clean shutdown");
        }
    }
}

/// Sends a request; returns the status and the body.
fn call(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        ("PUT", body) => agent.put(url).send(body.unwrap_or("")),
        ("POST", body) => agent.post(url).send(body.unwrap_or("")),
        _ => panic!("unsupported method {method}"),
    };
    let mut response = response.unwrap_or_else(|error| panic!("{method} {url}: {error}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

#[test]
fn a_partition_made_through_the_api_is_real_and_heals() {
    let cluster = Cluster::start("faults", 19960, 3, true);
    let leader = cluster.leader_among(&[0, 1, 2]);
    let others: Vec<usize> = (0..3).filter(|&at| at != leader).collect();
    let names: Vec<String> = others.iter().map(|&at| cluster.servers[at].id().to_string()).collect();
    let faults = format!("{}/v1/skiff/faults", cluster.http[leader]);
    assert_eq!(json_of(&call("GET", &faults, None).1), json!({ "enabled": true, "faults": [] }));

    // Bad faults are refused, with the reason.
    for (body, expected) in [
        (r#"{"action":"drop","peers":["n9"]}"#, "n9 is not a node of the cluster file"),
        (r#"{"action":"explode","peers":["n2"]}"#, "a fault is"),
        (r#"{"action":"delay","peers":["n2"]}"#, "delay_ms"),
        ("not json", "a fault is"),
    ] {
        let (status, text) = call("POST", &faults, Some(body));
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(expected), "{body}: {text} should mention {expected:?}");
    }
    let own = cluster.servers[leader].id().to_string();
    let (status, _) = call("POST", &faults, Some(&format!(r#"{{"action":"drop","peers":["{own}"]}}"#)));
    assert_eq!(status, 400, "a node cannot cut itself off");

    // Cut the leader off from both followers, both ways.
    let body = json!({ "action": "drop", "peers": names }).to_string();
    let (status, text) = call("POST", &faults, Some(&body));
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["faults"], json!([{ "action": "drop", "peers": names, "direction": "both" }]));

    // The majority elects a new leader and takes writes.
    let new_leader = cluster.leader_among(&others);
    assert_ne!(new_leader, leader);
    let key = |at: usize| format!("{}/v1/kv/during-partition", cluster.http[at]);
    let (status, text) = call("PUT", &key(others[0]), Some("majority"));
    assert_eq!((status, text.as_str()), (200, "true"), "a write on the majority side");
    // The old leader cannot serve a linearizable read, nor write: it has no quorum.
    let (status, text) = call("GET", &format!("{}?raw", key(leader)), None);
    assert!(matches!(status, 503 | 504), "a consistent read on the isolated node: {status} {text}");
    let (status, text) = call("PUT", &key(leader), Some("minority"));
    assert!(matches!(status, 503 | 504), "a write on the isolated node: {status} {text}");
    let (status, text) = call("GET", &format!("{}?raw&stale", key(leader)), None);
    assert_eq!(status, 404, "its own state has not seen the majority's write: {text}");

    // Heal: the old leader learns the new term and catches up.
    let (status, text) = call("DELETE", &faults, None);
    assert_eq!((status, json_of(&text)["faults"].clone()), (200, json!([])));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, text) = call("GET", &format!("{}?raw", key(leader)), None);
        if status == 200 {
            assert_eq!(text, "majority", "the minority's write was never acknowledged, so it is gone");
            break;
        }
        assert!(Instant::now() < deadline, "the healed node never served the write: {status} {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.shutdown();
}

#[test]
fn delayed_messages_still_arrive_and_fault_injection_is_off_by_default() {
    let cluster = Cluster::start("faults-delay", 19980, 3, true);
    let leader = cluster.leader_among(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let faults = format!("{}/v1/skiff/faults", cluster.http[follower]);
    let leader_name = cluster.servers[leader].id().to_string();
    // A slow link (below the election timeout) between one follower and the leader.
    let body = json!({ "action": "delay", "delay_ms": 100, "peers": [leader_name], "direction": "in" });
    assert_eq!(call("POST", &faults, Some(&body.to_string())).0, 200);
    let url = format!("{}/v1/kv/slow", cluster.http[follower]);
    let started = Instant::now();
    assert_eq!(call("PUT", &url, Some("v")), (200, "true".to_string()));
    assert_eq!(call("GET", &format!("{url}?raw"), None), (200, "v".to_string()));
    assert!(started.elapsed() >= Duration::from_millis(100), "the leader's answers were delayed");
    assert_eq!(call("DELETE", &faults, None).0, 200);
    cluster.shutdown();

    let plain = Cluster::start("faults-off", 19990, 1, false);
    let (status, text) = call("GET", &format!("{}/v1/skiff/faults", plain.http[0]), None);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("--fault-injection"), "{text}");
    let (status, _) =
        call("POST", &format!("{}/v1/skiff/faults", plain.http[0]), Some(r#"{"action":"drop","peers":[]}"#));
    assert_eq!(status, 403);
    plain.shutdown();
}
