//! Black-box tests of the HTTP API, as `docs/http-api.md` states it, against real 3-node
//! clusters on loopback (the testkit's `KvCluster`: every node a `skiff_kv::Server` with
//! its data in a temporary directory, all three in one tokio runtime) and a blocking HTTP
//! client on the test thread and on threads of its own.
//!
//! One test per behaviour a client relies on, each on a cluster of its own, grouped by
//! concern: key-value reads and writes through every node and every parameter, then
//! without a quorum ([`kv`]); blocking queries, CAS races and idempotent retries
//! ([`concurrency`]); limits and malformed requests ([`limits`]); the cluster and Skiff
//! routes, leadership transfer and removal ([`cluster`]).

mod cluster;
mod concurrency;
mod kv;
mod limits;
mod sessions;
mod txn;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::{HttpClient, KvCluster, Reply};

/// The documented limits (the defaults).
const MAX_KEY_BYTES: usize = 8 << 10;
const MAX_VALUE_BYTES: usize = 1 << 20;

/// A started 3-node cluster, its agreed leader and its two followers.
struct Setup {
    cluster: KvCluster,
    client: HttpClient,
    leader: NodeId,
    f1: NodeId,
    f2: NodeId,
    /// Every node, in id order.
    ids: Vec<NodeId>,
}

impl Setup {
    /// Starts a 3-node cluster named `name` with http listeners; waits for its leader.
    fn start(name: &str) -> Setup {
        let cluster = KvCluster::start(ClusterFile::builder(name, 3).http().build());
        let client = cluster.client.clone();
        let leader = cluster.leader();
        let [f1, f2] = <[NodeId; 2]>::try_from(cluster.others(leader)).expect("two followers");
        let ids = cluster.ids();
        Setup { cluster, client, leader, f1, f2, ids }
    }

    /// Shuts the cluster down, checking that every node stops cleanly.
    fn shutdown(self) {
        self.cluster.shutdown();
    }
}

/// The answers of the KV routes, as Consul shapes them.
trait KvReply {
    /// The one entry of a KV `GET` (a JSON array of one object), checked for shape.
    fn entry(&self) -> Value;
}

impl KvReply for Reply {
    fn entry(&self) -> Value {
        assert_eq!(self.status, 200, "{}: status (body {:?})", self.what, self.text());
        let body = self.json();
        let entries = body.as_array().unwrap_or_else(|| panic!("{}: expected an array, got {body}", self.what));
        assert_eq!(entries.len(), 1, "{}: expected one entry, got {body}", self.what);
        let entry = entries[0].clone();
        check_entry_shape(&self.what, &entry);
        entry
    }
}

trait KvClient {
    /// A consistent `GET /v1/kv/<key>` through `id`: the one entry.
    fn entry(&self, id: NodeId, key: &str) -> Value;
}

impl KvClient for HttpClient {
    fn entry(&self, id: NodeId, key: &str) -> Value {
        let entry = self.get(id, &format!("/v1/kv/{key}")).entry();
        assert_eq!(entry["Key"], key, "GET {id} {key}: Key");
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

/// The whole store through `id`, from a `?recurse` of the empty prefix.
fn whole_store(client: &HttpClient, id: NodeId) -> (String, BTreeMap<String, Vec<u8>>) {
    let reply = client.get(id, "/v1/kv/?recurse").ok();
    let entries = recurse_entries(&reply).into_iter().map(|(key, value, _)| (key, value)).collect();
    (reply.what, entries)
}
