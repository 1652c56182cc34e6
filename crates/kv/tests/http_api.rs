//! Black-box tests of the HTTP API, as `docs/http-api.md` states it, against real 3-node
//! clusters on loopback: every node a `skiff_kv::Server` with its data in a temporary
//! directory, all three in one tokio runtime, and a blocking HTTP client (ureq) on the test
//! thread and on threads of its own.
//!
//! Each test starts one cluster and exercises many things on it, so the suite stays fast:
//! key-value reads and writes through every node and every parameter, then without a
//! quorum; blocking queries, CAS races and idempotent retries; limits and malformed
//! requests; the cluster and Skiff routes, leadership transfer and removal. Each test has
//! its own block of ports (in 19100-19399) and its own cluster name, so the tests run in
//! parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use skiff::NodeId;
use skiff::config::ClusterConfig;
use skiff_kv::{Server, ServerOptions};

/// How long an awaited condition (a leader, a replicated value) may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// The documented limits (the defaults).
const MAX_KEY_BYTES: usize = 8 << 10;
const MAX_VALUE_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// The harness.

/// One HTTP answer, read whole.
struct Reply {
    /// The request, for failure messages: "PUT n2 /v1/kv/a".
    what: String,
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{}: the body is not JSON ({error}): {:?}", self.what, self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().expect("an ASCII header value"))
    }

    /// `X-Consul-Index`, which must be there and be at least 1.
    fn index(&self) -> u64 {
        let text = self.header("X-Consul-Index").unwrap_or_else(|| panic!("{}: no X-Consul-Index", self.what));
        let index: u64 = text.parse().unwrap_or_else(|_| panic!("{}: X-Consul-Index {text:?}", self.what));
        assert!(index >= 1, "{}: X-Consul-Index {index} < 1", self.what);
        index
    }

    /// `X-Consul-LastContact` in milliseconds, which must be there.
    fn last_contact(&self) -> u64 {
        let text =
            self.header("X-Consul-LastContact").unwrap_or_else(|| panic!("{}: no X-Consul-LastContact", self.what));
        text.parse().unwrap_or_else(|_| panic!("{}: X-Consul-LastContact {text:?}", self.what))
    }

    fn known_leader(&self) -> &str {
        self.header("X-Consul-KnownLeader").unwrap_or_else(|| panic!("{}: no X-Consul-KnownLeader", self.what))
    }

    fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "{}: status (body {:?})", self.what, self.text());
        self
    }

    fn ok(self) -> Reply {
        self.expect(200)
    }

    /// A PUT or DELETE's answer: `200` and `true` or `false`.
    fn boolean(self) -> bool {
        let reply = self.ok();
        match reply.json() {
            Value::Bool(answer) => answer,
            other => panic!("{}: expected true or false, got {other}", reply.what),
        }
    }

    /// An error: the status, and a JSON body `{"error": "..."}`; returns the message.
    fn error(self, status: u16) -> String {
        let reply = self.expect(status);
        let body = reply.json();
        match body.get("error") {
            Some(Value::String(message)) if !message.is_empty() => message.clone(),
            _ => panic!("{}: expected {{\"error\": \"...\"}}, got {body}", reply.what),
        }
    }

    /// The one entry of a KV `GET` (a JSON array of one object).
    fn entry(self) -> Value {
        self.entry_ref()
    }

    fn entry_ref(&self) -> Value {
        let reply = self;
        assert_eq!(reply.status, 200, "{}: status (body {:?})", reply.what, reply.text());
        let body = reply.json();
        let entries = body.as_array().unwrap_or_else(|| panic!("{}: expected an array, got {body}", reply.what));
        assert_eq!(entries.len(), 1, "{}: expected one entry, got {body}", reply.what);
        let entry = entries[0].clone();
        check_entry_shape(&reply.what, &entry);
        entry
    }
}

/// Checks that a KV entry has the documented fields with the documented types.
fn check_entry_shape(what: &str, entry: &Value) {
    assert!(entry["Key"].is_string(), "{what}: Key in {entry}");
    assert!(entry["Value"].is_string() || entry["Value"].is_null(), "{what}: Value in {entry}");
    for field in ["CreateIndex", "ModifyIndex", "LockIndex", "Flags"] {
        assert!(entry[field].is_u64(), "{what}: {field} in {entry}");
    }
    assert!(entry["CreateIndex"].as_u64() >= Some(1), "{what}: CreateIndex in {entry}");
    assert!(entry["ModifyIndex"].as_u64() >= entry["CreateIndex"].as_u64(), "{what}: indexes in {entry}");
    assert_eq!(entry["LockIndex"], 0, "{what}: LockIndex in {entry}");
}

/// A KV entry's value, decoded (empty for `null`).
fn value_of(entry: &Value) -> Vec<u8> {
    match &entry["Value"] {
        Value::Null => Vec::new(),
        Value::String(text) => {
            BASE64.decode(text).unwrap_or_else(|error| panic!("Value is not base64 ({error}): {entry}"))
        }
        other => panic!("Value is neither a string nor null: {other}"),
    }
}

fn modify_index(entry: &Value) -> u64 {
    entry["ModifyIndex"].as_u64().expect("ModifyIndex")
}

fn create_index(entry: &Value) -> u64 {
    entry["CreateIndex"].as_u64().expect("CreateIndex")
}

/// "n2" to `NodeId(2)`.
fn node_id(text: &str) -> NodeId {
    skiff::config::parse_node_id(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

/// The HTTP side: a blocking client and every node's address. Cheap to clone and to share
/// between threads.
#[derive(Clone)]
struct Client {
    agent: ureq::Agent,
    http: BTreeMap<NodeId, String>,
}

impl Client {
    fn new(http: BTreeMap<NodeId, String>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client { agent, http }
    }

    fn request(&self, method: &str, id: NodeId, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Reply {
        self.try_request(method, id, path, body, headers).unwrap_or_else(|error| panic!("{error}"))
    }

    /// A request whose answer may be lost: an error names the request and what failed.
    fn try_request(
        &self,
        method: &str,
        id: NodeId,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let what = format!("{method} {id} {}", shorten(path));
        let url = format!("http://{}{path}", self.http[&id]);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let result = match body {
            Some(body) => self.agent.run(builder.body(body.to_vec()).expect("a request")),
            None => self.agent.run(builder.body(()).expect("a request")),
        };
        let mut response = result.map_err(|error| format!("{what}: {error}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|error| format!("{what}: reading the body: {error}"))?;
        Ok(Reply { what, status, headers, body })
    }

    fn get(&self, id: NodeId, path: &str) -> Reply {
        self.request("GET", id, path, None, &[])
    }

    fn put(&self, id: NodeId, path: &str, body: &[u8]) -> Reply {
        self.request("PUT", id, path, Some(body), &[])
    }

    fn put_with_key(&self, id: NodeId, path: &str, body: &[u8], key: &str) -> Reply {
        self.request("PUT", id, path, Some(body), &[("Idempotency-Key", key)])
    }

    fn delete(&self, id: NodeId, path: &str) -> Reply {
        self.request("DELETE", id, path, None, &[])
    }

    fn delete_with_key(&self, id: NodeId, path: &str, key: &str) -> Reply {
        self.request("DELETE", id, path, None, &[("Idempotency-Key", key)])
    }

    fn post(&self, id: NodeId, path: &str, body: &[u8]) -> Reply {
        self.request("POST", id, path, Some(body), &[])
    }

    /// `PUT /v1/kv/<key>` of `value`, which must answer `true`.
    fn set(&self, id: NodeId, key: &str, value: &[u8]) {
        assert!(self.put(id, &format!("/v1/kv/{key}"), value).boolean(), "PUT {key} through {id} answered false");
    }

    /// A consistent `GET /v1/kv/<key>` through `id`: the one entry.
    fn entry(&self, id: NodeId, key: &str) -> Value {
        let entry = self.get(id, &format!("/v1/kv/{key}")).entry();
        assert_eq!(entry["Key"], key, "GET {id} {key}: Key");
        entry
    }

    /// `GET /v1/skiff/status` of node `id`.
    fn status(&self, id: NodeId) -> Value {
        self.get(id, "/v1/skiff/status").ok().json()
    }
}

/// Paths with 8 KiB keys make unreadable failure messages.
fn shorten(path: &str) -> String {
    if path.len() <= 120 { path.to_string() } else { format!("{}...({} bytes)", &path[..100], path.len()) }
}

/// Polls `condition` every few milliseconds until it holds; fails the test after [`TIMEOUT`].
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {TIMEOUT:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three servers in one tokio runtime. The runtime's worker threads run the servers; the
/// test thread sends requests.
struct Cluster {
    client: Client,
    config: ClusterConfig,
    servers: BTreeMap<NodeId, Server>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Nodes n1..n3 with raft on `base+1..=base+3` and http on `base+11..=base+13`.
    fn start(name: &str, base_port: u16) -> Cluster {
        let started = Instant::now();
        let mut text = format!("[cluster]\nname = \"{name}\"\n");
        for i in 1..=3 {
            text.push_str(&format!(
                "\n[[node]]\nid = \"n{i}\"\nraft = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
                base_port + i,
                base_port + 10 + i
            ));
        }
        let config = ClusterConfig::from_toml_str(&text).expect("a valid cluster file");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut servers = BTreeMap::new();
        let mut http = BTreeMap::new();
        for id in config.node_ids() {
            let options = ServerOptions::new(config.clone(), id, dir.path().join(id.to_string()));
            let server = runtime.block_on(Server::start(options)).unwrap_or_else(|error| panic!("{id}: {error}"));
            assert_eq!(server.id(), id);
            let expected = config.node(id).expect("a node").http.clone().expect("an http address");
            assert_eq!(server.http_address().to_string(), expected, "{id}: http_address()");
            http.insert(id, expected);
            servers.insert(id, server);
        }
        let cluster = Cluster { client: Client::new(http), config, servers, runtime: Some(runtime), _dir: dir };
        let leader = cluster.leader();
        eprintln!("{name}: leader {leader} agreed on {} ms after start", started.elapsed().as_millis());
        cluster
    }

    fn ids(&self) -> Vec<NodeId> {
        self.servers.keys().copied().collect()
    }

    fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.servers.keys().copied().filter(|&other| other != id).collect()
    }

    fn raft_address(&self, id: NodeId) -> String {
        self.config.node(id).expect("a node").raft.clone()
    }

    /// Waits until every running node's `/v1/skiff/status` names the same leader, which
    /// says it is the leader; returns it.
    fn leader(&self) -> NodeId {
        self.leader_among(&self.ids())
    }

    fn leader_among(&self, ids: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let statuses: Vec<Value> = ids.iter().map(|&id| self.client.status(id)).collect();
            let leaders: Vec<&Value> = statuses.iter().map(|status| &status["leader"]).collect();
            if let Some(Value::String(leader)) = leaders.first()
                && leaders.iter().all(|known| *known == leaders[0])
                && let Some(status) = statuses.iter().find(|status| status["id"] == leader.as_str())
                && status["role"] == "leader"
            {
                return node_id(leader);
            }
            assert!(Instant::now() < deadline, "no agreed leader within {TIMEOUT:?}: {leaders:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Shuts server `id` down, which must succeed.
    fn stop(&mut self, id: NodeId) {
        let server = self.servers.remove(&id).expect("a running server");
        let runtime = self.runtime.as_ref().expect("a runtime");
        let result = runtime
            .block_on(async { tokio::time::timeout(TIMEOUT, server.shutdown()).await })
            .unwrap_or_else(|_| panic!("{id}: shutdown did not finish within {TIMEOUT:?}"));
        result.unwrap_or_else(|error| panic!("{id}: shutdown: {error}"));
    }

    /// Shuts every server down (`first` first: the leader, so it hands off to a running
    /// node), and checks that each shutdown succeeds.
    fn shutdown(mut self, first: NodeId) {
        let mut order = vec![first];
        order.extend(self.others(first));
        for id in order {
            if self.servers.contains_key(&id) {
                self.stop(id);
            }
        }
        self.runtime.take().expect("a runtime").shutdown_timeout(Duration::from_secs(5));
    }
}

impl Drop for Cluster {
    /// After a failure: stop the servers at once (dropped inside the runtime), then the runtime.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            {
                let _guard = runtime.enter();
                self.servers.clear();
            }
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn kv_path(key: &str) -> String {
    format!("/v1/kv/{key}")
}

/// The names `?keys&separator=<separator>` lists for `prefix`, computed from a model of the
/// store: each key cut after the first separator past the prefix, repeats collapsed.
fn expected_keys(model: &BTreeMap<String, Vec<u8>>, prefix: &str, separator: Option<char>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for key in model.keys().filter(|key| key.starts_with(prefix)) {
        let rest = &key[prefix.len()..];
        let name = match separator.and_then(|separator| rest.find(separator).map(|at| (at, separator))) {
            Some((at, separator)) => key[..prefix.len() + at + separator.len_utf8()].to_string(),
            None => key.clone(),
        };
        if names.last() != Some(&name) {
            names.push(name);
        }
    }
    names
}

/// Every entry of a `?recurse` answer, checked for shape and key order, as (key, value,
/// ModifyIndex).
fn recurse_entries(reply: &Reply) -> Vec<(String, Vec<u8>, u64)> {
    let body = reply.json();
    let entries = body.as_array().unwrap_or_else(|| panic!("{}: expected an array, got {body}", reply.what));
    let mut out = Vec::new();
    for entry in entries {
        check_entry_shape(&reply.what, entry);
        out.push((entry["Key"].as_str().expect("Key").to_string(), value_of(entry), modify_index(entry)));
    }
    let keys: Vec<&String> = out.iter().map(|(key, _, _)| key).collect();
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{}: keys not in order: {keys:?}", reply.what);
    out
}

// ---------------------------------------------------------------------------------------
// Key-value: every route and parameter, through every node.

#[test]
fn kv_reads_and_writes_through_every_node() {
    let cluster = Cluster::start("http-api-kv", 19100);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    let followers = cluster.others(leader);
    let (f1, f2) = (followers[0], followers[1]);
    let ids = cluster.ids();
    // What the store should hold, to check `?recurse` and `?keys` against.
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    // A write through each node is read back through each node (consistent reads by
    // default), with the documented entry and headers.
    for &writer in &ids {
        let key = format!("every/{writer}");
        let value = format!("written through {writer}").into_bytes();
        client.set(writer, &key, &value);
        model.insert(key.clone(), value.clone());
        let mut indexes = BTreeSet::new();
        for &reader in &ids {
            let reply = client.get(reader, &kv_path(&key)).ok();
            let index = reply.index();
            assert_eq!(reply.known_leader(), "true", "{}", reply.what);
            let contact = reply.last_contact();
            if reader == leader {
                assert_eq!(contact, 0, "{}: X-Consul-LastContact on the leader", reply.what);
            } else {
                assert!(contact < 5_000, "{}: X-Consul-LastContact {contact} ms on a healthy follower", reply.what);
            }
            let what = reply.what.clone();
            let entry = reply.entry();
            assert_eq!(entry["Key"], key.as_str(), "{what}");
            assert_eq!(value_of(&entry), value, "{what}: {entry}");
            assert_eq!(create_index(&entry), modify_index(&entry), "{what}: a new key: {entry}");
            assert_eq!(entry["Flags"], 0, "{what}: {entry}");
            assert_eq!(index, modify_index(&entry), "{what}: X-Consul-Index is the key's ModifyIndex");
            indexes.insert(modify_index(&entry));
        }
        assert_eq!(indexes.len(), 1, "every node reads the same ModifyIndex for {key}: {indexes:?}");
    }

    // Linearizable: a write through one node, acknowledged, is seen at once by a consistent
    // read through another (a follower that may not have it yet), and indexes only grow.
    let mut last_index = 0;
    for i in 0..12 {
        let writer = [f1, leader, f2][i % 3];
        let reader = if writer == f1 { f2 } else { f1 };
        let value = format!("v{i}");
        client.set(writer, "linear", value.as_bytes());
        let path = if i % 2 == 0 { "/v1/kv/linear" } else { "/v1/kv/linear?consistent" };
        let entry = client.get(reader, path).entry();
        assert_eq!(value_of(&entry), value.as_bytes(), "write {i} through {writer}, read through {reader}: {entry}");
        assert!(modify_index(&entry) > last_index, "write {i}: ModifyIndex does not grow: {entry}");
        assert!(create_index(&entry) < modify_index(&entry) || i == 0, "write {i}: CreateIndex moved: {entry}");
        last_index = modify_index(&entry);
    }
    model.insert("linear".into(), b"v11".to_vec());

    // An update keeps CreateIndex and moves ModifyIndex.
    let before = client.entry(f1, "every/n1");
    client.set(f2, "every/n1", b"updated");
    let after = client.entry(leader, "every/n1");
    assert_eq!(create_index(&after), create_index(&before), "{after}");
    assert!(modify_index(&after) > modify_index(&before), "{before} then {after}");
    assert_eq!(value_of(&after), b"updated");
    model.insert("every/n1".into(), b"updated".to_vec());

    // A missing key: 404, empty body, still with the headers, through every node.
    for &id in &ids {
        let reply = client.get(id, "/v1/kv/no/such/key").expect(404);
        assert!(reply.body.is_empty(), "{}: a 404 has an empty body, got {:?}", reply.what, reply.text());
        reply.index();
        assert_eq!(reply.known_leader(), "true", "{}", reply.what);
        reply.last_contact();
        client.get(id, "/v1/kv/no/such/key?raw").expect(404);
        client.get(id, "/v1/kv/no/such/key?stale").expect(404);
    }

    // Flags: an unsigned 64-bit number, round-tripped, through a follower.
    assert!(client.put(f1, "/v1/kv/flagged?flags=18446744073709551615", b"f").boolean());
    let entry = client.entry(f2, "flagged");
    assert_eq!(entry["Flags"].as_u64(), Some(u64::MAX), "{entry}");
    assert!(client.put(f2, "/v1/kv/flagged?flags=42", b"g").boolean());
    let entry = client.entry(leader, "flagged");
    assert_eq!((entry["Flags"].as_u64(), value_of(&entry)), (Some(42), b"g".to_vec()), "{entry}");
    model.insert("flagged".into(), b"g".to_vec());

    // An empty value is `null`, and `?raw` gives an empty body.
    client.set(f1, "empty", b"");
    let entry = client.entry(f2, "empty");
    assert_eq!(entry["Value"], Value::Null, "an empty value: {entry}");
    let raw = client.get(leader, "/v1/kv/empty?raw").ok();
    assert!(raw.body.is_empty(), "{}: {:?}", raw.what, raw.text());
    model.insert("empty".into(), Vec::new());

    // Binary values: every byte, not UTF-8, through `?raw` and through base64.
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    client.set(f2, "binary", &binary);
    for &id in &ids {
        let raw = client.get(id, "/v1/kv/binary?raw").ok();
        assert_eq!(raw.body, binary, "{}: raw bytes", raw.what);
        let content_type = raw.header("Content-Type").unwrap_or_default();
        assert!(content_type.starts_with("application/octet-stream"), "{}: Content-Type {content_type:?}", raw.what);
        assert_eq!(value_of(&client.entry(id, "binary")), binary, "GET {id} binary: base64 Value");
    }
    model.insert("binary".into(), binary.clone());

    // Percent-encoded keys are decoded: UTF-8 and spaces.
    client.set(f1, "enc/caf%C3%A9%20au%20lait", b"latte");
    let entry = client.get(f2, "/v1/kv/enc/caf%C3%A9%20au%20lait").entry();
    assert_eq!(entry["Key"], "enc/café au lait", "{entry}");
    assert_eq!(client.get(leader, "/v1/kv/enc/?keys").ok().json(), json!(["enc/café au lait"]));
    model.insert("enc/café au lait".into(), b"latte".to_vec());

    // PUT with cas: cas=0 creates only, cas=N replaces only at ModifyIndex N.
    assert!(client.put(f1, "/v1/kv/cas-key?cas=0", b"created").boolean(), "cas=0 on an absent key");
    assert!(!client.put(f2, "/v1/kv/cas-key?cas=0", b"again").boolean(), "cas=0 on a present key");
    let entry = client.entry(leader, "cas-key");
    assert_eq!(value_of(&entry), b"created", "a failed cas changed the value: {entry}");
    let index = modify_index(&entry);
    assert!(!client.put(leader, &format!("/v1/kv/cas-key?cas={}", index + 1000), b"wrong").boolean());
    assert!(!client.put(f1, &format!("/v1/kv/cas-key?cas={}", index - 1), b"wrong").boolean());
    assert_eq!(modify_index(&client.entry(f2, "cas-key")), index, "a failed cas moved ModifyIndex");
    assert!(client.put(f2, &format!("/v1/kv/cas-key?cas={index}"), b"swapped").boolean(), "cas at ModifyIndex");
    let entry = client.entry(f1, "cas-key");
    assert_eq!(value_of(&entry), b"swapped", "{entry}");
    assert!(!client.put(f1, &format!("/v1/kv/cas-key?cas={index}"), b"stale cas").boolean(), "cas at an old index");
    model.insert("cas-key".into(), b"swapped".to_vec());

    // A tree, for recurse and keys. "treehouse" shares the prefix "tree" but not "tree/".
    let tree = ["tree/a", "tree/b/c", "tree/b/d", "tree/b/e/f", "treehouse", "tree/e"];
    for (i, key) in tree.iter().enumerate() {
        client.set(ids[i % 3], key, key.as_bytes());
        model.insert(key.to_string(), key.as_bytes().to_vec());
    }
    for &id in &ids {
        let reply = client.get(id, "/v1/kv/tree/?recurse").ok();
        let entries = recurse_entries(&reply);
        let keys: Vec<&str> = entries.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(keys, ["tree/a", "tree/b/c", "tree/b/d", "tree/b/e/f", "tree/e"], "{}", reply.what);
        for (key, value, _) in &entries {
            assert_eq!(value, key.as_bytes(), "{}: {key}", reply.what);
        }
        let highest = entries.iter().map(|(_, _, index)| *index).max().expect("entries");
        assert_eq!(reply.index(), highest, "{}: X-Consul-Index is the highest ModifyIndex read", reply.what);

        let reply = client.get(id, "/v1/kv/tree?recurse").ok();
        let keys: Vec<String> = recurse_entries(&reply).into_iter().map(|(key, _, _)| key).collect();
        assert_eq!(keys, expected_keys(&model, "tree", None), "{}", reply.what);
        assert_eq!(keys.last().map(String::as_str), Some("treehouse"), "{}", reply.what);

        // keys, without and with a separator.
        assert_eq!(
            client.get(id, "/v1/kv/tree/?keys").ok().json(),
            json!(["tree/a", "tree/b/c", "tree/b/d", "tree/b/e/f", "tree/e"]),
            "GET {id} tree/?keys"
        );
        assert_eq!(
            client.get(id, "/v1/kv/tree/?keys&separator=/").ok().json(),
            json!(["tree/a", "tree/b/", "tree/e"]),
            "GET {id} tree/?keys&separator=/"
        );
        assert_eq!(
            client.get(id, "/v1/kv/tree/b/?keys&separator=/").ok().json(),
            json!(["tree/b/c", "tree/b/d", "tree/b/e/"]),
            "GET {id} tree/b/?keys&separator=/"
        );
        assert_eq!(
            client.get(id, "/v1/kv/?keys&separator=/").ok().json(),
            json!(expected_keys(&model, "", Some('/'))),
            "GET {id} ?keys&separator=/"
        );
        assert_eq!(
            client.get(id, "/v1/kv/?keys").ok().json(),
            json!(expected_keys(&model, "", None)),
            "GET {id} ?keys"
        );
        // No key under the prefix.
        client.get(id, "/v1/kv/nothing/here/?recurse").expect(404);
    }

    // The whole store, from the empty prefix, in key order.
    for &id in &ids {
        let reply = client.get(id, "/v1/kv/?recurse").ok();
        let entries: BTreeMap<String, Vec<u8>> =
            recurse_entries(&reply).into_iter().map(|(key, value, _)| (key, value)).collect();
        assert_eq!(entries, model, "{}: the whole store", reply.what);
    }

    // Stale reads: answered from the node's copy, which catches up; LastContact is there.
    client.set(leader, "stale/k", b"s");
    model.insert("stale/k".into(), b"s".to_vec());
    for &id in &ids {
        eventually(&format!("a stale read on {id} sees stale/k"), || {
            let reply = client.get(id, "/v1/kv/stale/k?stale");
            if reply.status == 404 {
                return false;
            }
            let contact = reply.last_contact();
            assert_eq!(reply.known_leader(), "true", "{}", reply.what);
            if id == leader {
                assert_eq!(contact, 0, "{}: X-Consul-LastContact on the leader", reply.what);
            }
            value_of(&reply.entry()) == b"s"
        });
    }
    let raw = client.get(f1, "/v1/kv/stale/k?stale&raw").ok();
    assert_eq!(raw.body, b"s", "{}", raw.what);

    // DELETE of one key: true, then 404, whose X-Consul-Index covers the deletion.
    let deleted = client.entry(f1, "tree/e");
    assert!(client.delete(f2, "/v1/kv/tree/e").boolean(), "DELETE tree/e");
    model.remove("tree/e");
    for &id in &ids {
        let reply = client.get(id, "/v1/kv/tree/e").expect(404);
        assert!(reply.index() > modify_index(&deleted), "{}: X-Consul-Index after the deletion", reply.what);
        // tree/e was the last write under tree/: the prefix's index now is the deletion's.
        let reply = client.get(id, "/v1/kv/tree/?recurse").ok();
        let highest = recurse_entries(&reply).iter().map(|(_, _, index)| *index).max().expect("entries");
        assert!(
            reply.index() > modify_index(&deleted) && reply.index() > highest,
            "{}: X-Consul-Index {} includes the deletion of tree/e (at ModifyIndex {} before)",
            reply.what,
            reply.index(),
            modify_index(&deleted)
        );
    }
    // Deleting a missing key is true.
    assert!(client.delete(leader, "/v1/kv/tree/e").boolean(), "DELETE of a missing key");
    assert!(client.delete(f1, "/v1/kv/never/was").boolean(), "DELETE of a missing key");

    // DELETE with cas.
    let entry = client.entry(f2, "tree/a");
    let index = modify_index(&entry);
    assert!(!client.delete(f1, &format!("/v1/kv/tree/a?cas={}", index + 1000)).boolean(), "DELETE with a wrong cas");
    assert_eq!(modify_index(&client.entry(leader, "tree/a")), index, "a failed DELETE cas changed the key");
    assert!(client.delete(f2, &format!("/v1/kv/tree/a?cas={index}")).boolean(), "DELETE with the right cas");
    client.get(f1, "/v1/kv/tree/a").expect(404);
    model.remove("tree/a");

    // DELETE recurse: every key under the prefix, and no other.
    assert!(client.delete(f1, "/v1/kv/tree/?recurse").boolean(), "DELETE tree/?recurse");
    model.retain(|key, _| !key.starts_with("tree/"));
    for &id in &ids {
        client.get(id, "/v1/kv/tree/?recurse").expect(404);
        client.get(id, "/v1/kv/tree/b/c").expect(404);
        assert_eq!(value_of(&client.entry(id, "treehouse")), b"treehouse");
        let reply = client.get(id, "/v1/kv/?recurse").ok();
        let entries: BTreeMap<String, Vec<u8>> =
            recurse_entries(&reply).into_iter().map(|(key, value, _)| (key, value)).collect();
        assert_eq!(entries, model, "{}: the whole store after the deletions", reply.what);
    }

    // Without a quorum: the two followers stop. Stale reads still answer from the node's
    // copy, and say when no leader is known; writes and consistent reads answer 503 (retry
    // after Retry-After) or 504 (timed out), with a JSON error.
    let mut cluster = cluster;
    cluster.stop(f1);
    cluster.stop(f2);
    eventually(&format!("{leader}, alone, no longer knows a leader"), || {
        let reply = client.get(leader, "/v1/kv/treehouse?stale");
        assert_eq!(value_of(&reply.entry_ref()), b"treehouse", "a stale read without a quorum");
        reply.known_leader() == "false"
    });
    std::thread::scope(|scope| {
        let write = scope.spawn(|| client.put(leader, "/v1/kv/no-quorum", b"x"));
        let read = scope.spawn(|| client.get(leader, "/v1/kv/treehouse"));
        for reply in [write.join().expect("the write"), read.join().expect("the read")] {
            let status = reply.status;
            assert!(status == 503 || status == 504, "{}: {status} without a quorum: {:?}", reply.what, reply.text());
            if status == 503 {
                let retry =
                    reply.header("Retry-After").unwrap_or_else(|| panic!("{}: 503 without Retry-After", reply.what));
                assert!(retry.parse::<u64>().is_ok(), "{}: Retry-After {retry:?}", reply.what);
            }
            reply.error(status);
        }
    });

    cluster.shutdown(leader);
}

// ---------------------------------------------------------------------------------------
// Blocking queries, CAS races, idempotent retries.

#[test]
fn blocking_queries_cas_races_and_idempotent_retries() {
    let cluster = Cluster::start("http-api-concurrency", 19130);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    let followers = cluster.others(leader);
    let (f1, f2) = (followers[0], followers[1]);
    let ids = cluster.ids();

    // A blocking query on a follower returns only after a write through another node, with
    // a higher index and the new value.
    client.set(leader, "watched", b"v0");
    let index = client.get(f1, "/v1/kv/watched").ok().index();
    let write_after = Duration::from_millis(600);
    std::thread::scope(|scope| {
        let started = Instant::now();
        let watcher = scope.spawn(|| client.get(f1, &format!("/v1/kv/watched?index={index}&wait=5s")));
        std::thread::sleep(write_after);
        client.set(f2, "watched", b"v1");
        let reply = watcher.join().expect("the watcher");
        let elapsed = started.elapsed();
        let what = reply.what.clone();
        let new_index = reply.index();
        let entry = reply.entry();
        assert!(elapsed >= write_after, "{what}: returned after {elapsed:?}, before the write");
        assert!(elapsed < Duration::from_millis(4500), "{what}: not woken by the write ({elapsed:?})");
        assert!(new_index > index, "{what}: X-Consul-Index {new_index} after a write, was {index}");
        assert_eq!(new_index, modify_index(&entry), "{what}: {entry}");
        assert_eq!(value_of(&entry), b"v1", "{what}: {entry}");
    });

    // Without a write, a blocking query returns after about `wait`, with the same index.
    let current = client.get(f1, "/v1/kv/watched").ok().index();
    for (id, wait, expected) in [(f2, "1s", 1000), (leader, "800ms", 800)] {
        let started = Instant::now();
        let reply = client.get(id, &format!("/v1/kv/watched?index={current}&wait={wait}"));
        let elapsed = started.elapsed();
        let reply = reply.ok();
        assert!(
            elapsed >= Duration::from_millis(expected * 9 / 10) && elapsed < Duration::from_millis(expected + 2500),
            "{}: returned after {elapsed:?}, expected about {wait}",
            reply.what
        );
        assert_eq!(reply.index(), current, "{}: X-Consul-Index without a write", reply.what);
        assert_eq!(value_of(&reply.entry()), b"v1");
    }
    // An index already passed answers at once (and `m` is a unit).
    let started = Instant::now();
    let reply = client.get(f1, &format!("/v1/kv/watched?index={}&wait=1m", current - 1)).ok();
    assert!(started.elapsed() < Duration::from_secs(3), "{}: an index already passed waited", reply.what);
    assert_eq!(reply.index(), current, "{}", reply.what);

    // A blocking query on a missing key wakes when it is created.
    let missing = client.get(f2, "/v1/kv/later").expect(404).index();
    std::thread::scope(|scope| {
        let started = Instant::now();
        let watcher = scope.spawn(|| client.get(f2, &format!("/v1/kv/later?index={missing}&wait=5s")));
        std::thread::sleep(write_after);
        client.set(f1, "later", b"here");
        let reply = watcher.join().expect("the watcher");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= write_after && elapsed < Duration::from_millis(4500),
            "{}: returned after {elapsed:?}",
            reply.what
        );
        assert!(reply.index() > missing, "{}", reply.what);
        assert_eq!(value_of(&reply.entry()), b"here");
    });

    // A blocking `recurse` wakes on the deletion of a key under its prefix.
    client.set(leader, "dir/x", b"x");
    client.set(leader, "dir/y", b"y");
    let dir_index = client.get(f1, "/v1/kv/dir/?recurse").ok().index();
    std::thread::scope(|scope| {
        let started = Instant::now();
        let watcher = scope.spawn(|| client.get(f1, &format!("/v1/kv/dir/?recurse&index={dir_index}&wait=5s")));
        std::thread::sleep(write_after);
        assert!(client.delete(f2, "/v1/kv/dir/y").boolean());
        let reply = watcher.join().expect("the watcher").ok();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= write_after && elapsed < Duration::from_millis(4500),
            "{}: returned after {elapsed:?}",
            reply.what
        );
        assert!(reply.index() > dir_index, "{}: the deletion raises X-Consul-Index", reply.what);
        let keys: Vec<String> = recurse_entries(&reply).into_iter().map(|(key, _, _)| key).collect();
        assert_eq!(keys, ["dir/x"], "{}", reply.what);
    });

    // CAS races: clients through every node with the same cas index; exactly one wins.
    const RACERS: usize = 9;
    for round in 0..3 {
        client.set(leader, "race", format!("round {round}").as_bytes());
        let index = modify_index(&client.entry(f1, "race"));
        let barrier = Arc::new(Barrier::new(RACERS));
        let results: Vec<(usize, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (client, barrier, id) = (client.clone(), barrier.clone(), ids[i % ids.len()]);
                    scope.spawn(move || {
                        barrier.wait();
                        let body = format!("racer {i}");
                        (i, client.put(id, &format!("/v1/kv/race?cas={index}"), body.as_bytes()).boolean())
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().expect("a racer")).collect()
        });
        let winners: Vec<usize> = results.iter().filter(|(_, won)| *won).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "round {round}: cas={index} races: winners {winners:?}");
        let entry = client.entry(f2, "race");
        assert_eq!(value_of(&entry), format!("racer {}", winners[0]).as_bytes(), "round {round}: {entry}");
        assert!(modify_index(&entry) > index, "round {round}: {entry}");

        // And cas=0 races to create a key: one creator.
        let key = format!("created-{round}");
        let barrier = Arc::new(Barrier::new(RACERS));
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (client, barrier, id, key) = (client.clone(), barrier.clone(), ids[i % ids.len()], key.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        client.put(id, &format!("/v1/kv/{key}?cas=0"), format!("racer {i}").as_bytes()).boolean()
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().expect("a racer")).filter(|won| *won).count()
        });
        assert_eq!(winners, 1, "round {round}: cas=0 races to create {key}");
    }

    // Idempotent retries: the first result, not applied again, through any node.
    assert!(client.put_with_key(f1, "/v1/kv/idem", b"first", "k1").boolean(), "the first attempt");
    let first = client.entry(leader, "idem");
    client.set(leader, "idem", b"second");
    let second = client.entry(f2, "idem");
    assert!(modify_index(&second) > modify_index(&first));
    for &id in &[f2, leader, f1] {
        assert!(client.put_with_key(id, "/v1/kv/idem", b"first", "k1").boolean(), "retry of k1 through {id}");
        let entry = client.entry(id, "idem");
        assert_eq!(value_of(&entry), b"second", "the retry through {id} was applied again: {entry}");
        assert_eq!(modify_index(&entry), modify_index(&second), "the retry through {id} moved ModifyIndex: {entry}");
    }
    // The same key with another request: 422, and nothing applied.
    let message = client.put_with_key(leader, "/v1/kv/idem", b"different", "k1").error(422);
    eprintln!("422 for a reused Idempotency-Key with another body: {message}");
    client.put_with_key(f1, "/v1/kv/other", b"first", "k1").error(422);
    client.put_with_key(f2, "/v1/kv/idem?flags=7", b"first", "k1").error(422);
    client.delete_with_key(f2, "/v1/kv/idem", "k1").error(422);
    let entry = client.entry(f1, "idem");
    assert_eq!((value_of(&entry), modify_index(&entry)), (b"second".to_vec(), modify_index(&second)), "{entry}");
    client.get(leader, "/v1/kv/other").expect(404);

    // A cas write that failed, retried with its key after the cas would succeed: still false.
    client.set(f1, "idem-cas", b"present");
    assert!(!client.put_with_key(f1, "/v1/kv/idem-cas?cas=0", b"create", "k2").boolean(), "cas=0 on a present key");
    assert!(client.delete(leader, "/v1/kv/idem-cas").boolean());
    assert!(!client.put_with_key(f2, "/v1/kv/idem-cas?cas=0", b"create", "k2").boolean(), "the retry of a failed cas");
    client.get(f1, "/v1/kv/idem-cas").expect(404);

    // A DELETE retried after the key was written again: true, and not deleted again.
    client.set(leader, "idem-del", b"x");
    assert!(client.delete_with_key(f1, "/v1/kv/idem-del", "k3").boolean());
    client.set(leader, "idem-del", b"back");
    let back = client.entry(f2, "idem-del");
    assert!(client.delete_with_key(f2, "/v1/kv/idem-del", "k3").boolean(), "the retried DELETE");
    let entry = client.entry(leader, "idem-del");
    assert_eq!((value_of(&entry), modify_index(&entry)), (b"back".to_vec(), modify_index(&back)), "{entry}");

    // An Idempotency-Key of 256 bytes works; a longer one is bad input.
    let long_key = "i".repeat(256);
    assert!(client.put_with_key(f1, "/v1/kv/idem-long", b"a", &long_key).boolean());
    client.set(leader, "idem-long", b"b");
    assert!(client.put_with_key(f2, "/v1/kv/idem-long", b"a", &long_key).boolean());
    assert_eq!(value_of(&client.entry(f1, "idem-long")), b"b", "the retry with a 256-byte key was applied again");
    client.put_with_key(f1, "/v1/kv/idem-long", b"a", &"i".repeat(257)).error(400);

    cluster.shutdown(leader);
}

// ---------------------------------------------------------------------------------------
// Limits and malformed requests.

#[test]
fn limits_and_malformed_requests() {
    let cluster = Cluster::start("http-api-limits", 19160);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    let followers = cluster.others(leader);
    let ids = cluster.ids();

    // A key of exactly 8 KiB is accepted; one byte more is 413, with an error naming the limit.
    let key = "k".repeat(MAX_KEY_BYTES);
    client.set(followers[0], &key, b"long key");
    assert_eq!(value_of(&client.entry(followers[1], &key)), b"long key");
    let too_long = "k".repeat(MAX_KEY_BYTES + 1);
    for &id in &ids {
        let message = client.put(id, &kv_path(&too_long), b"x").error(413);
        assert!(
            ["8192", "8 KiB", "8KiB"].iter().any(|limit| message.contains(limit)),
            "PUT {id} of a {}-byte key: the error names no limit: {message:?}",
            too_long.len()
        );
    }
    client.get(leader, &kv_path(&too_long)).expect(404);

    // A value of exactly 1 MiB is accepted (through a follower); one byte more is 413.
    let value: Vec<u8> = (0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    client.set(followers[0], "big", &value);
    let raw = client.get(followers[1], "/v1/kv/big?raw").ok();
    assert!(raw.body == value, "{}: the 1 MiB value read back differs ({} bytes)", raw.what, raw.body.len());
    let mut too_big = value.clone();
    too_big.push(0);
    let names_the_limit = |message: &str| ["1048576", "1 MiB", "1MiB"].iter().any(|limit| message.contains(limit));
    for &id in &ids {
        // A client that waits for `100 Continue` gets the 413 without sending the value.
        let message =
            client.request("PUT", id, "/v1/kv/too-big", Some(&too_big), &[("Expect", "100-continue")]).error(413);
        assert!(names_the_limit(&message), "PUT {id} of a 1 MiB + 1 value: the error names no limit: {message:?}");
    }
    // A client that sends the value at once (most do: curl below 1 MiB, Python's requests,
    // Go's net/http) must get the 413 too, not a connection closed under it; twice per
    // node, as whether the answer is lost depends on timing.
    for &id in ids.iter().chain(&ids) {
        match client.try_request("PUT", id, "/v1/kv/too-big", Some(&too_big), &[]) {
            Ok(reply) => {
                let message = reply.error(413);
                assert!(names_the_limit(&message), "PUT {id} of a 1 MiB + 1 value: no limit named: {message:?}");
            }
            Err(error) => panic!(
                "{error}: the 413 for a value over the limit was lost: the server closed the connection \
                 before reading the request body"
            ),
        }
    }
    client.get(leader, "/v1/kv/too-big").expect(404);

    // Malformed parameters and keys: 400 with a JSON error, through every node; nothing written.
    for &id in &ids {
        for (method, path) in [
            ("PUT", "/v1/kv/bad?cas=abc"),
            ("PUT", "/v1/kv/bad?cas=-1"),
            ("PUT", "/v1/kv/bad?flags=-1"),
            ("PUT", "/v1/kv/bad?flags=18446744073709551616"),
            ("PUT", "/v1/kv/bad?flags=abc"),
            ("DELETE", "/v1/kv/bad?cas=abc"),
            ("GET", "/v1/kv/bad?index=1&wait=xyz"),
            ("GET", "/v1/kv/bad?index=abc&wait=1s"),
            ("GET", "/v1/kv/%FF"),
            ("PUT", "/v1/kv/%FF"),
            ("DELETE", "/v1/kv/%FF"),
            ("GET", "/v1/kv/a%FFb?recurse"),
            ("PUT", "/v1/kv/"),
            ("GET", "/v1/skiff/log?limit=abc"),
            ("GET", "/v1/skiff/log?from=-3"),
        ] {
            let body: Option<&[u8]> = (method == "PUT").then_some(b"value");
            let message = client.request(method, id, path, body, &[]).error(400);
            assert!(!message.is_empty());
        }
        client.get(id, "/v1/kv/bad").expect(404);
    }

    // Unknown routes: 404 with a JSON error; a route with the wrong method: 405.
    for &id in &ids {
        client.get(id, "/v1/no-such-route").error(404);
        client.get(id, "/nope").error(404);
        client.post(id, "/v1/kv/some-key", b"x").error(405);
        client.put(id, "/v1/status/leader", b"x").error(405);
        client.get(id, "/v1/operator/raft/transfer-leader").error(405);
        client.request("PATCH", id, "/v1/kv/some-key", Some(b"x"), &[]).error(405);
        client.delete(id, "/metrics").error(405);
    }
    client.get(leader, "/v1/kv/some-key").expect(404);

    // Every node keeps working.
    for &id in &ids {
        let key = format!("after/{id}");
        client.set(id, &key, b"fine");
        for &reader in &ids {
            assert_eq!(value_of(&client.entry(reader, &key)), b"fine");
        }
    }

    cluster.shutdown(leader);
}

// ---------------------------------------------------------------------------------------
// The cluster routes (Consul's) and Skiff's own; leadership transfer and removal.

#[test]
fn cluster_status_log_members_metrics_and_leadership() {
    let cluster = Cluster::start("http-api-cluster", 19190);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    let ids = cluster.ids();
    let id_names: Vec<String> = ids.iter().map(NodeId::to_string).collect();

    client.set(leader, "greeting", b"hello");
    let greeting = client.entry(leader, "greeting");
    let greeting_index = modify_index(&greeting);

    // /v1/status/leader and /v1/status/peers.
    let raft_addresses: BTreeSet<String> = ids.iter().map(|&id| cluster.raft_address(id)).collect();
    for &id in &ids {
        assert_eq!(client.get(id, "/v1/status/leader").ok().json(), json!(cluster.raft_address(leader)), "{id}");
        let peers = client.get(id, "/v1/status/peers").ok().json();
        let peers: BTreeSet<String> = serde_json::from_value(peers.clone()).unwrap_or_else(|_| panic!("{id}: {peers}"));
        assert_eq!(peers, raft_addresses, "GET {id} /v1/status/peers");
    }

    // /v1/operator/raft/configuration: every voter, exactly one leader, the commit index.
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

    // /v1/skiff/status: one leader, agreed on; the leader alone knows match and next.
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

    // /v1/skiff/log: the entries, their committed marks, from and limit.
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

    // /v1/skiff/members.
    for &id in &ids {
        let members = client.get(id, "/v1/skiff/members").ok().json();
        assert_eq!(members["leader"], leader.to_string(), "{id}: {members}");
        let expected: Vec<Value> = ids
            .iter()
            .map(|&member| {
                let node = cluster.config.node(member).expect("a node");
                json!({"id": member.to_string(), "voter": true, "raft": node.raft, "http": node.http})
            })
            .collect();
        assert_eq!(members["members"], json!(expected), "{id}: {members}");
    }
    // Adding a member again, or promoting a voter: 409.
    client.post(leader, "/v1/skiff/members", br#"{"id": "n2"}"#).error(409);
    client.post(leader, "/v1/skiff/members/n2/promote", b"").error(409);

    // /metrics: Prometheus text with Skiff's metrics.
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

    // Transfer leadership to a named follower, through another follower.
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
    // A malformed id is bad input.
    client.post(leader, "/v1/operator/raft/transfer-leader?id=abc", b"").error(400);

    // Removal: a follower through Consul's route, then another through Skiff's.
    let [removed_first, removed_second] = <[NodeId; 2]>::try_from(cluster.others(leader)).expect("two followers");
    let reply = client.delete(removed_second, &format!("/v1/operator/raft/peer?id={removed_first}")).ok();
    assert!(reply.body.is_empty(), "{}: an empty body, got {:?}", reply.what, reply.text());
    let remaining = [leader, removed_second];
    for &id in &remaining {
        eventually(&format!("{id} sees {removed_first} removed"), || {
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
    eventually(&format!("{leader} sees {removed_second} removed"), || {
        client.get(leader, "/v1/status/peers").ok().json() == json!([cluster.raft_address(leader)])
    });
    client.set(leader, "one-node", b"1");
    assert_eq!(value_of(&client.entry(leader, "two-nodes")), b"2");

    cluster.shutdown(leader);
}
