//! The KV layer's harness: [`KvCluster`], `skiff_kv::Server`s in one tokio runtime driven
//! from blocking test code (the runtime's worker threads run the servers, the test thread
//! sends requests), and [`HttpClient`], a blocking HTTP client that reads whole answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use skiff::NodeId;
use skiff::RoleName;
use skiff::config::ClusterConfig;
use skiff_kv::{Limits, Server, ServerOptions};

use crate::cluster_file::ClusterFile;
use crate::wait::{TIMEOUT, eventually_ok};

/// One HTTP answer, read whole.
pub struct Reply {
    /// The request, for failure messages: "PUT n2 /v1/kv/a".
    pub what: String,
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{}: the body is not JSON ({error}): {:?}", self.what, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().expect("an ASCII header value"))
    }

    /// `X-Consul-Index`, which must be there and be at least 1.
    pub fn index(&self) -> u64 {
        let text = self.header("X-Consul-Index").unwrap_or_else(|| panic!("{}: no X-Consul-Index", self.what));
        let index: u64 = text.parse().unwrap_or_else(|_| panic!("{}: X-Consul-Index {text:?}", self.what));
        assert!(index >= 1, "{}: X-Consul-Index {index} < 1", self.what);
        index
    }

    /// `X-Consul-LastContact` in milliseconds, which must be there.
    pub fn last_contact(&self) -> u64 {
        let text =
            self.header("X-Consul-LastContact").unwrap_or_else(|| panic!("{}: no X-Consul-LastContact", self.what));
        text.parse().unwrap_or_else(|_| panic!("{}: X-Consul-LastContact {text:?}", self.what))
    }

    /// `X-Consul-KnownLeader`, which must be there.
    pub fn known_leader(&self) -> &str {
        self.header("X-Consul-KnownLeader").unwrap_or_else(|| panic!("{}: no X-Consul-KnownLeader", self.what))
    }

    /// Checks the status; returns the reply.
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "{}: status (body {:?})", self.what, self.text());
        self
    }

    pub fn ok(self) -> Reply {
        self.expect(200)
    }

    /// A PUT or DELETE's answer: `200` and `true` or `false`.
    pub fn boolean(self) -> bool {
        let reply = self.ok();
        match reply.json() {
            Value::Bool(answer) => answer,
            other => panic!("{}: expected true or false, got {other}", reply.what),
        }
    }

    /// An error: the status, and a JSON body `{"error": "..."}`; returns the message.
    pub fn error(self, status: u16) -> String {
        let reply = self.expect(status);
        let body = reply.json();
        match body.get("error") {
            Some(Value::String(message)) if !message.is_empty() => message.clone(),
            _ => panic!("{}: expected {{\"error\": \"...\"}}, got {body}", reply.what),
        }
    }
}

/// A blocking HTTP client and every node's http address. Cheap to clone and to share
/// between threads. Redirects are not followed: a 307 is an answer to check.
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    http: BTreeMap<NodeId, String>,
    /// Sent as `X-Consul-Token` unless a request has its own.
    token: Option<String>,
}

impl HttpClient {
    pub fn new(http: BTreeMap<NodeId, String>) -> HttpClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        HttpClient { agent, http, token: None }
    }

    /// A client of every node of `file` with an http address (with its management token,
    /// if the file has `[auth]`).
    pub fn for_file(file: &ClusterFile) -> HttpClient {
        let client =
            HttpClient::new(file.nodes.iter().filter_map(|node| Some((node.id, node.http.clone()?))).collect());
        client.with_token(file.auth.as_ref().map(|auth| auth.admin_secret.clone()))
    }

    /// This client, sending `token` (or none) with every request.
    pub fn with_token(&self, token: Option<String>) -> HttpClient {
        HttpClient { token, ..self.clone() }
    }

    /// Node `id`'s http address.
    pub fn address(&self, id: NodeId) -> &str {
        self.http.get(&id).unwrap_or_else(|| panic!("{id} has no http address"))
    }

    pub fn request(
        &self,
        method: &str,
        id: NodeId,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_request(method, id, path, body, headers).unwrap_or_else(|error| panic!("{error}"))
    }

    /// A request whose answer may be lost: an error names the request and what failed.
    pub fn try_request(
        &self,
        method: &str,
        id: NodeId,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let what = format!("{method} {id} {}", shorten(path));
        let url = format!("http://{}{path}", self.address(id));
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(token) = &self.token
            && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("X-Consul-Token"))
        {
            builder = builder.header("X-Consul-Token", token);
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

    pub fn get(&self, id: NodeId, path: &str) -> Reply {
        self.request("GET", id, path, None, &[])
    }

    pub fn put(&self, id: NodeId, path: &str, body: &[u8]) -> Reply {
        self.request("PUT", id, path, Some(body), &[])
    }

    pub fn put_with_key(&self, id: NodeId, path: &str, body: &[u8], key: &str) -> Reply {
        self.request("PUT", id, path, Some(body), &[("Idempotency-Key", key)])
    }

    pub fn delete(&self, id: NodeId, path: &str) -> Reply {
        self.request("DELETE", id, path, None, &[])
    }

    pub fn delete_with_key(&self, id: NodeId, path: &str, key: &str) -> Reply {
        self.request("DELETE", id, path, None, &[("Idempotency-Key", key)])
    }

    pub fn post(&self, id: NodeId, path: &str, body: &[u8]) -> Reply {
        self.request("POST", id, path, Some(body), &[])
    }

    /// `PUT /v1/kv/<key>` of `value`, which must answer `true`.
    pub fn set(&self, id: NodeId, key: &str, value: &[u8]) {
        assert!(self.put(id, &format!("/v1/kv/{key}"), value).boolean(), "PUT {key} through {id} answered false");
    }

    /// `GET /v1/kv/<key>?raw` through `id`: the value, or `None` for 404.
    pub fn raw(&self, id: NodeId, key: &str) -> Option<Vec<u8>> {
        let reply = self.get(id, &format!("/v1/kv/{key}?raw"));
        match reply.status {
            200 => Some(reply.body),
            404 => None,
            status => panic!("{}: status {status} (body {:?})", reply.what, reply.text()),
        }
    }

    /// `DELETE /v1/kv/<key>` through `id`, which must answer `true`.
    pub fn remove(&self, id: NodeId, key: &str) {
        assert!(self.delete(id, &format!("/v1/kv/{key}")).boolean(), "DELETE {key} through {id} answered false");
    }

    /// `GET /v1/skiff/status` of node `id`.
    pub fn status(&self, id: NodeId) -> Value {
        self.get(id, "/v1/skiff/status").ok().json()
    }
}

/// Paths with 8 KiB keys make unreadable failure messages.
fn shorten(path: &str) -> String {
    if path.len() <= 120 { path.to_string() } else { format!("{}...({} bytes)", &path[..100], path.len()) }
}

/// `skiff_kv::Server`s of one cluster file in one tokio runtime. Dropped after a failure,
/// it stops the servers at once; [`KvCluster::shutdown`] stops them cleanly and checks it.
pub struct KvCluster {
    pub file: ClusterFile,
    pub config: ClusterConfig,
    /// Reaches every node of the file, running or not.
    pub client: HttpClient,
    servers: BTreeMap<NodeId, Server>,
    fault_injection: bool,
    /// Every node's limits, also of a node started again.
    limits: Limits,
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

impl KvCluster {
    /// Starts the members of `file` (every node without `join`) and waits until they
    /// agree on a leader. `file` needs http addresses.
    pub fn start(file: ClusterFile) -> KvCluster {
        KvCluster::start_with(file, false)
    }

    /// As [`KvCluster::start`], with `/v1/skiff/faults` on or off.
    pub fn start_with(file: ClusterFile, fault_injection: bool) -> KvCluster {
        KvCluster::launch(file, fault_injection, Limits::default())
    }

    /// As [`KvCluster::start`], every node with `limits`.
    pub fn start_with_limits(file: ClusterFile, limits: Limits) -> KvCluster {
        KvCluster::launch(file, false, limits)
    }

    fn launch(file: ClusterFile, fault_injection: bool, limits: Limits) -> KvCluster {
        let started = std::time::Instant::now();
        let config = file.config();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let client = HttpClient::for_file(&file);
        let mut cluster = KvCluster {
            file,
            config,
            client,
            servers: BTreeMap::new(),
            fault_injection,
            limits,
            runtime: Some(runtime),
            dir,
        };
        let members: Vec<NodeId> = cluster.file.nodes.iter().filter(|node| !node.join).map(|node| node.id).collect();
        for &id in &members {
            cluster.start_node(id);
        }
        let leader = cluster.leader();
        eprintln!("{}: leader {leader} agreed on {} ms after start", cluster.file.name, started.elapsed().as_millis());
        cluster
    }

    /// Starts node `id` from its data directory (new, or a stopped node's), and checks it
    /// listens where the cluster file says.
    pub fn start_node(&mut self, id: NodeId) {
        let mut options = ServerOptions::new(self.config.clone(), id, self.dir.path().join(id.to_string()));
        options.fault_injection = self.fault_injection;
        options.limits = self.limits;
        let server = self.block_on(Server::start(options)).unwrap_or_else(|error| panic!("{id}: {error}"));
        assert_eq!(server.id(), id);
        let node = self.file.node(id);
        assert_eq!(Some(server.http_address().to_string()), node.http, "{id}: http_address()");
        assert_eq!(server.redis_address().map(|address| address.to_string()), node.redis, "{id}: redis_address()");
        self.servers.insert(id, server);
    }

    /// Runs `future` to completion on the cluster's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("a runtime").block_on(future)
    }

    pub fn server(&self, id: NodeId) -> &Server {
        self.servers.get(&id).unwrap_or_else(|| panic!("{id} is not running"))
    }

    /// The running nodes' ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.servers.keys().copied().collect()
    }

    /// The running nodes other than `id`.
    pub fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.servers.keys().copied().filter(|&other| other != id).collect()
    }

    pub fn raft_address(&self, id: NodeId) -> String {
        self.file.node(id).raft.clone()
    }

    pub fn redis_address(&self, id: NodeId) -> SocketAddr {
        self.server(id).redis_address().unwrap_or_else(|| panic!("{id} has no redis address"))
    }

    /// Waits until every running node knows the same leader, which says it is the leader;
    /// returns it.
    pub fn leader(&self) -> NodeId {
        self.leader_among(&self.ids())
    }

    /// Waits until the nodes `among` know the same leader, one of them, which says it is
    /// the leader; returns it.
    pub fn leader_among(&self, among: &[NodeId]) -> NodeId {
        eventually_ok(format!("an agreed leader among {among:?}"), || {
            let known: Vec<Option<NodeId>> = among.iter().map(|&id| self.server(id).node().leader().leader).collect();
            let Some(Some(leader)) = known.first().copied() else { return Err(format!("{known:?}")) };
            if !known.iter().all(|known| *known == Some(leader)) || !among.contains(&leader) {
                return Err(format!("{known:?}"));
            }
            match self.block_on(self.server(leader).node().status()) {
                Ok(status) if status.role == RoleName::Leader => Ok(leader),
                Ok(status) => Err(format!("{known:?}, but {leader} is {:?}", status.role)),
                Err(error) => Err(format!("{known:?}, but {leader}'s status: {error}")),
            }
        })
    }

    /// Shuts server `id` down, which must succeed.
    pub fn stop(&mut self, id: NodeId) {
        let server = self.servers.remove(&id).unwrap_or_else(|| panic!("{id} is not running"));
        self.block_on(async { tokio::time::timeout(TIMEOUT, server.shutdown()).await })
            .unwrap_or_else(|_| panic!("{id}: shutdown did not finish within {TIMEOUT:?}"))
            .unwrap_or_else(|error| panic!("{id}: shutdown: {error}"));
    }

    /// Stops server `id` at once, as a crash would (`Server::kill`: a leader hands nothing
    /// over); it must finish within [`TIMEOUT`].
    pub fn kill(&mut self, id: NodeId) {
        let server = self.servers.remove(&id).unwrap_or_else(|| panic!("{id} is not running"));
        self.block_on(async { tokio::time::timeout(TIMEOUT, server.kill()).await })
            .unwrap_or_else(|_| panic!("{id}: kill did not finish within {TIMEOUT:?}"));
    }

    /// Shuts every server down, the one that believes itself leader first (so it hands off
    /// to a running node), and checks that each shutdown succeeds.
    pub fn shutdown(mut self) {
        let mut order = self.ids();
        let leader = order.first().and_then(|&id| self.server(id).node().leader().leader);
        if let Some(at) = order.iter().position(|&id| Some(id) == leader) {
            order[..=at].rotate_right(1);
        }
        for id in order {
            self.stop(id);
        }
        self.runtime.take().expect("a runtime").shutdown_timeout(Duration::from_secs(5));
    }
}

impl Drop for KvCluster {
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
