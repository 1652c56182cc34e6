//! The probes, `GET /v1/health` and `GET /v1/ready` (docs/http-api.md, "Probes"), as an
//! orchestrator uses them: on a healthy cluster, a node cut off from its quorum, a node
//! whose driver stopped, a raised quota alarm, with `[auth]` and no token, and with
//! malformed queries.

use serde_json::{Value, json};
use skiff::NodeId;
use skiff_kv::Limits;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::{HttpClient, KvCluster, Reply};
use skiff_testkit::wait::eventually_ok;

/// The readiness probe's default bound on unapplied entries (docs/http-api.md).
const DEFAULT_MAX_LAG: u64 = 1000;

/// The body of a probe's answer, checked for its shape: `status`, `id`, `reasons` (and
/// `max_lag` from `/v1/ready`), nothing else.
fn probe_body(reply: &Reply) -> Value {
    assert_eq!(reply.header("Content-Type"), Some("application/json"), "{}", reply.what);
    assert_eq!(reply.header("Cache-Control"), Some("no-store"), "{}", reply.what);
    let body = reply.json();
    let fields: Vec<&str> = body.as_object().expect("an object").keys().map(String::as_str).collect();
    let allowed = ["id", "max_lag", "reasons", "status"];
    assert!(fields.iter().all(|field| allowed.contains(field)), "{}: fields {fields:?}", reply.what);
    assert!(body["reasons"].is_array(), "{}: {body}", reply.what);
    body
}

/// `/v1/ready` of `id` once it answers `status`: its body.
fn ready_becomes(client: &HttpClient, id: NodeId, path: &str, status: u16) -> Value {
    eventually_ok(format!("GET {id} {path} answers {status}"), || {
        let reply = client.get(id, path);
        if reply.status == status { Ok(probe_body(&reply)) } else { Err(format!("{} {}", reply.status, reply.text())) }
    })
}

#[test]
fn every_node_of_a_healthy_cluster_is_alive_and_ready() {
    let cluster = KvCluster::start(ClusterFile::builder("probes-healthy", 3).http().build());
    let client = &cluster.client;
    client.put(cluster.leader(), "/v1/kv/k", b"v").ok();
    for id in cluster.ids() {
        let health = client.get(id, "/v1/health").ok();
        assert_eq!(probe_body(&health), json!({"status": "alive", "id": id.to_string(), "reasons": []}));
        let ready = ready_becomes(client, id, "/v1/ready", 200);
        assert_eq!(ready, json!({"status": "ready", "id": id.to_string(), "max_lag": DEFAULT_MAX_LAG, "reasons": []}));
        // No lag allowed at all: ready once every committed entry is applied.
        let strict = ready_becomes(client, id, "/v1/ready?max_lag=0", 200);
        assert_eq!(strict["max_lag"], 0);
        // HEAD, as some load balancers probe: the same status, no body.
        let head = client.request("HEAD", id, "/v1/health", None, &[]);
        assert_eq!((head.status, head.body.len()), (200, 0), "{}", head.what);
    }
    cluster.shutdown();
}

#[test]
fn a_node_cut_off_from_its_quorum_is_alive_but_not_ready_and_says_why() {
    let mut cluster = KvCluster::start(ClusterFile::builder("probes-quorum", 3).http().build());
    let leader = cluster.leader();
    let [kept, stopped] = <[NodeId; 2]>::try_from(cluster.others(leader)).expect("two followers");
    cluster.stop(leader);
    cluster.stop(stopped);
    let body = ready_becomes(&cluster.client, kept, "/v1/ready", 503);
    assert_eq!(body["status"], "not ready");
    let reasons: Vec<&str> = body["reasons"].as_array().expect("reasons").iter().filter_map(Value::as_str).collect();
    assert_eq!(reasons.len(), 1, "{body}");
    assert!(reasons[0].starts_with("no leader is known"), "{body}");
    // Alive all the same: a restart would not bring the quorum back.
    assert_eq!(probe_body(&cluster.client.get(kept, "/v1/health").ok())["status"], "alive");
    // With a quorum again, ready again.
    cluster.start_node(stopped);
    ready_becomes(&cluster.client, kept, "/v1/ready", 200);
    ready_becomes(&cluster.client, stopped, "/v1/ready", 200);
    cluster.shutdown();
}

#[test]
fn a_stopped_node_fails_both_probes_while_its_http_listener_still_answers() {
    let cluster = KvCluster::start(ClusterFile::builder("probes-stopped", 3).http().build());
    let leader = cluster.leader();
    let follower = cluster.others(leader)[0];
    // The node alone stops (as after a storage failure); the server's listeners go on.
    cluster.block_on(cluster.server(follower).node().shutdown()).expect("the node stops");
    let health = cluster.client.get(follower, "/v1/health").expect(503);
    let body = probe_body(&health);
    assert_eq!(body["status"], "stopped", "{body}");
    assert!(body["reasons"][0].as_str().is_some_and(|reason| reason.starts_with("the node has stopped")), "{body}");
    let ready = probe_body(&cluster.client.get(follower, "/v1/ready").expect(503));
    assert_eq!(ready["status"], "not ready", "{ready}");
    assert!(ready["reasons"][0].as_str().is_some_and(|reason| reason.starts_with("the node has stopped")), "{ready}");
    // The others are unaffected.
    cluster.client.get(leader, "/v1/health").ok();
    cluster.shutdown();
}

#[test]
fn the_quota_alarm_makes_a_node_not_ready_unless_excluded() {
    let limits = Limits { keyspace_quota_bytes: 1000, ..Limits::default() };
    let cluster = KvCluster::start_with_limits(ClusterFile::builder("probes-alarm", 1).http().build(), limits);
    let (client, n1) = (&cluster.client, NodeId(1));
    // Four 250-byte entries fill the quota; the fifth is refused and raises the alarm.
    for number in 0..4 {
        client.put(n1, &format!("/v1/kv/q/{number}00"), &[b'v'; 245]).ok();
    }
    client.put(n1, "/v1/kv/q/400", &[b'v'; 245]).error(507);
    let body = probe_body(&client.get(n1, "/v1/ready").expect(503));
    let reasons = body["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 1, "{body}");
    assert!(reasons[0].as_str().is_some_and(|reason| reason.contains("NOSPACE")), "{body}");
    // An operator who would rather keep serving reads and deletes excludes it, as etcd's
    // /health?exclude=NOSPACE.
    assert_eq!(probe_body(&client.get(n1, "/v1/ready?exclude=NOSPACE").ok())["status"], "ready");
    client.get(n1, "/v1/health").ok();
    // Space freed: the alarm clears, and the node is ready again.
    client.delete(n1, "/v1/kv/q/000").ok();
    ready_becomes(client, n1, "/v1/ready", 200);
    cluster.shutdown();
}

#[test]
fn the_probes_answer_without_a_token_and_tell_nothing_else() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens.toml");
    let secret = "admin-secret-0123456789";
    std::fs::write(&tokens, format!("[[token]]\nname = \"admin\"\nsecret = \"{secret}\"\nmanagement = true\n"))
        .expect("the tokens file");
    let cluster = KvCluster::start(ClusterFile::builder("probes-auth", 3).http().auth(&tokens, secret).build());
    let anonymous = cluster.client.with_token(None);
    for id in cluster.ids() {
        assert_eq!(probe_body(&anonymous.get(id, "/v1/health").ok())["status"], "alive");
        assert_eq!(ready_becomes(&anonymous, id, "/v1/ready", 200)["status"], "ready");
        // A wrong token does not matter to a probe either.
        let wrong = anonymous.request("GET", id, "/v1/ready", None, &[("X-Consul-Token", "wrong-secret-0123456")]);
        assert_eq!(wrong.status, 200, "{}", wrong.text());
        // Everything else still needs a token, the routes next to the probes too.
        for path in ["/v1/skiff/status", "/v1/status/leader", "/metrics", "/v1/health/", "/v1/ready/x"] {
            assert_eq!(anonymous.get(id, path).status, 403, "GET {id} {path} without a token");
        }
    }
    cluster.shutdown();
}

#[test]
fn malformed_probe_queries_are_refused_with_a_json_error() {
    let cluster = KvCluster::start(ClusterFile::builder("probes-hostile", 1).http().build());
    let (client, n1) = (&cluster.client, NodeId(1));
    for query in [
        "max_lag=abc",
        "max_lag=-1",
        "max_lag=1e3",
        "max_lag=",
        "max_lag=18446744073709551616",
        "max_lag=%FF%FE",
        "max_lag=1%00",
        "exclude=BOGUS",
        "exclude=nospace",
        "exclude=NOSPACE,%00",
    ] {
        let message = client.get(n1, &format!("/v1/ready?{query}")).error(400);
        assert!(message.contains("max_lag") || message.contains("is not an alarm"), "{query}: {message}");
    }
    // The largest bound is a bound like any other; unknown parameters are ignored.
    assert_eq!(ready_becomes(client, n1, "/v1/ready?max_lag=18446744073709551615", 200)["max_lag"], u64::MAX);
    ready_becomes(client, n1, "/v1/ready?verbose&max_lag=5&max_lag=x", 200);
    ready_becomes(client, n1, "/v1/ready?exclude=", 200);
    // Other methods: 405, with a JSON error.
    for method in ["POST", "PUT", "DELETE"] {
        client.request(method, n1, "/v1/health", Some(b"{}"), &[]).error(405);
        client.request(method, n1, "/v1/ready", None, &[]).error(405);
    }
    // The health probe takes no parameters, and ignores any.
    client.get(n1, "/v1/health?max_lag=abc").ok();
    cluster.shutdown();
}
