//! The HTTP API (`docs/http-api.md`): Consul's KV, status and operator routes, Skiff's own
//! status, log and membership routes, and `/metrics`.
//!
//! Handlers parse and check everything a client sends before anything is proposed: a bad
//! parameter, a key that is not UTF-8, an oversized value all get a JSON error, never a
//! panic. Any node answers: writes go through [`Node::propose`] (forwarded by a follower),
//! consistent reads through [`Node::read`] (ReadIndex via the leader).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value as Json, json};
use skiff::config::{ClusterConfig, parse_node_id};
use skiff::{Index, Node, NodeId, NodeStatus, Payload, RoleName};
use tokio::sync::watch;

use crate::server::Limits;
use crate::state::{Command, Entry, KvStore, Op, Output, RequestId, Value};

/// What every handler shares.
pub struct Api {
    node: Arc<Node<KvStore>>,
    /// The state machine's last applied index: blocking queries wait on it.
    applied: watch::Receiver<u64>,
    cluster: ClusterConfig,
    limits: Limits,
    /// The node id as a metrics label.
    label: String,
}

impl Api {
    pub fn new(node: Arc<Node<KvStore>>, applied: watch::Receiver<u64>, cluster: ClusterConfig, limits: Limits) -> Api {
        let label = node.id().to_string();
        Api { node, applied, cluster, limits, label }
    }
}

type Shared = State<Arc<Api>>;

/// The API's routes.
pub fn router(api: Api) -> Router {
    let api = Arc::new(api);
    Router::new()
        .route("/v1/kv/", any(kv))
        .route("/v1/kv/{*key}", any(kv))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/operator/raft/configuration", get(raft_configuration))
        .route("/v1/operator/raft/transfer-leader", post(transfer_leader))
        .route("/v1/operator/raft/peer", axum::routing::delete(remove_peer))
        .route("/v1/skiff/status", get(skiff_status))
        .route("/v1/skiff/log", get(skiff_log))
        .route("/v1/skiff/members", get(members_list).post(members_add))
        .route("/v1/skiff/members/{id}", axum::routing::delete(members_remove))
        .route("/v1/skiff/members/{id}/promote", post(members_promote))
        .route("/v1/skiff/faults", get(faults_list).post(faults_add).delete(faults_clear))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see docs/http-api.md") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on this route"))
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&api), record))
        .with_state(api)
}

/// Counts each request and its latency, by route.
async fn record(State(api): Shared, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>().map(MatchedPath::as_str) {
        Some("/v1/kv/" | "/v1/kv/{*key}") if request.method() == Method::GET => "kv",
        Some("/v1/kv/" | "/v1/kv/{*key}") => "kv_write",
        Some(path) if path.starts_with("/v1/skiff/") => "skiff",
        Some(path) if path.starts_with("/v1/operator/") || path.starts_with("/v1/status/") => "cluster",
        Some("/metrics") => "metrics",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    crate::metrics::record_request(&api.label, route, response.status().as_u16(), started.elapsed());
    response
}

// ---------------------------------------------------------------------------------------
// Errors

/// A JSON error: `{"error": "...", "leader": "n2"}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    leader: Option<NodeId>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), leader: None }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A node's error, with its one status ([`crate::http_status`]) and the leader to try.
    fn from_node(error: skiff::Error, leader: Option<NodeId>) -> ApiError {
        ApiError { status: crate::http_status(error.kind()), message: error.to_string(), leader }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(leader) = self.leader {
            body["leader"] = json!(leader.to_string());
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

impl Api {
    fn fail(&self, error: skiff::Error) -> ApiError {
        ApiError::from_node(error, self.node.leader().leader)
    }

    async fn status(&self) -> ApiResult<NodeStatus> {
        self.node.status().await.map_err(|error| self.fail(error))
    }

    fn raft_address(&self, id: NodeId) -> String {
        self.cluster.node(id).map(|node| node.raft.clone()).unwrap_or_else(|_| id.to_string())
    }

    fn http_address(&self, id: NodeId) -> Option<String> {
        self.cluster.node(id).ok().and_then(|node| node.http.clone())
    }
}

// ---------------------------------------------------------------------------------------
// Query strings

/// A parsed query string. Consul's flags (`?raw`, `?recurse`) carry no value.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(uri: &Uri) -> Query {
        let query = uri.query().unwrap_or("");
        Query(form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|value| value != "false" && value != "0")
    }

    fn number(&self, name: &str) -> ApiResult<Option<u64>> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name}={text:?} is not a whole number from 0 to {}", u64::MAX))
            }),
        }
    }

    fn node_id(&self, name: &str) -> ApiResult<Option<NodeId>> {
        self.get(name).map(parse_id).transpose()
    }

    /// `wait=`: a duration with a unit (`500ms`, `10s`, `5m`, `1h`); a bare number is seconds.
    fn duration(&self, name: &str) -> ApiResult<Option<Duration>> {
        let Some(text) = self.get(name) else { return Ok(None) };
        let bad = || ApiError::bad_request(format!("{name}={text:?} is not a duration like 500ms, 10s or 5m"));
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "ms" => number / 1000.0,
            "" | "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => return Err(bad()),
        };
        Duration::try_from_secs_f64(seconds).map(Some).map_err(|_| bad())
    }
}

fn parse_id(text: &str) -> ApiResult<NodeId> {
    parse_node_id(text).map_err(|error| ApiError::bad_request(error.to_string()))
}

// ---------------------------------------------------------------------------------------
// Key-value

/// The longest `wait` of a blocking query, and the default.
const MAX_WAIT: Duration = Duration::from_secs(600);
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Of an oversized body, at most this much is read (and dropped) before answering 413;
/// beyond it the connection is closed.
const DISCARD_LIMIT: usize = 64 << 20;
/// A request body must arrive within this time.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest `Idempotency-Key`.
const MAX_REQUEST_ID_BYTES: usize = 256;

async fn kv(State(api): Shared, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let result = match kv_key(uri.path()) {
        Err(error) => Err(error),
        Ok(key) => {
            let query = Query::parse(&uri);
            match method {
                Method::GET | Method::HEAD => kv_get(&api, key, &query).await,
                Method::PUT => kv_put(&api, key, &query, &headers, body).await,
                Method::DELETE => kv_delete(&api, key, &query, &headers).await,
                method => {
                    Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on /v1/kv")))
                }
            }
        }
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The key in a `/v1/kv/<key>` path, percent-decoded; it must be UTF-8, as Consul's are.
fn kv_key(path: &str) -> ApiResult<String> {
    let encoded = path.strip_prefix("/v1/kv/").or_else(|| path.strip_prefix("/v1/kv")).unwrap_or("");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    String::from_utf8(bytes).map_err(|_| ApiError::bad_request("the key is not valid UTF-8"))
}

/// What a KV read found.
struct Found {
    /// The index a blocking query compares with.
    index: u64,
    entries: Vec<(Bytes, Value)>,
    /// With `?keys`: the key names (cut after the separator), instead of `entries`.
    names: Vec<String>,
}

async fn kv_get(api: &Api, key: String, query: &Query) -> ApiResult {
    let prefix = query.flag("recurse") || query.flag("keys");
    let names_only = query.flag("keys");
    let stale = query.flag("stale") && !query.flag("consistent");
    let separator = query.get("separator").filter(|s| !s.is_empty()).map(str::to_string);
    let wait_index = query.number("index")?;
    let wait = query.duration("wait")?.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
    if !prefix && key.is_empty() {
        return Err(ApiError::bad_request("a key is required (or ?recurse / ?keys for a prefix)"));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = api.applied.clone();
    applied.borrow_and_update();
    let found = loop {
        let (read_key, separator) = (key.clone(), separator.clone());
        let read = move |store: &KvStore| collect(store, read_key.as_bytes(), prefix, names_only, separator.as_deref());
        let found = if stale { api.node.read_stale(read).await } else { api.node.read(read).await };
        let found = found.map_err(|error| api.fail(error))?;
        match wait_index {
            // A blocking query: wait for a change past `index`, or for `wait`.
            Some(index) if found.index <= index && tokio::time::Instant::now() < deadline => {
                // Wake on each applied command, but redo the full read only once this
                // key's (or prefix's) index has moved: a cheap local look first.
                loop {
                    if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
                        break;
                    }
                    let key = key.clone();
                    let moved = api.node.read_stale(move |store| store.watch_index(key.as_bytes(), prefix)).await;
                    if moved.map_err(|error| api.fail(error))? > index {
                        break;
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    break found;
                }
            }
            _ => break found,
        }
    };
    let mut response = if found.entries.is_empty() && found.names.is_empty() {
        StatusCode::NOT_FOUND.into_response()
    } else if names_only {
        axum::Json(&found.names).into_response()
    } else if query.flag("raw") && !prefix {
        let value = found.entries.into_iter().next().map(|(_, value)| value.value).unwrap_or_default();
        ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response()
    } else {
        let entries: Vec<Json> = found.entries.iter().map(|(key, value)| entry_json(key, value)).collect();
        axum::Json(entries).into_response()
    };
    let last_contact = if stale { api.last_contact_ms().await } else { 0 };
    let headers = response.headers_mut();
    headers.insert("X-Consul-Index", HeaderValue::from(found.index));
    let known = if api.node.leader().leader.is_some() { "true" } else { "false" };
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static(known));
    headers.insert("X-Consul-LastContact", HeaderValue::from(last_contact));
    Ok(response)
}

/// Runs on the state machine: copies out what a read asked for.
fn collect(store: &KvStore, key: &[u8], prefix: bool, names_only: bool, separator: Option<&str>) -> Found {
    let index = store.watch_index(key, prefix);
    if !prefix {
        let entries =
            store.get(key).map(|entry| (Bytes::copy_from_slice(key), Value::from(entry))).into_iter().collect();
        return Found { index, entries, names: Vec::new() };
    }
    if !names_only {
        let entries = store.range(key).map(|entry| (Bytes::copy_from_slice(entry.key), Value::from(entry))).collect();
        return Found { index, entries, names: Vec::new() };
    }
    let mut names: Vec<String> = Vec::new();
    for Entry { key: name, .. } in store.range(key) {
        // On bytes: a stored key need not be UTF-8, and slicing text could split a character.
        let rest = &name[key.len()..]; // `range` yields only keys that start with `key`
        let cut = separator
            .filter(|separator| !separator.is_empty())
            .and_then(|separator| {
                let separator = separator.as_bytes();
                rest.windows(separator.len()).position(|window| window == separator).map(|at| at + separator.len())
            })
            .map_or(name.len(), |at| key.len() + at);
        let name = String::from_utf8_lossy(&name[..cut]);
        let name = name.as_ref();
        if names.last().map(String::as_str) != Some(name) {
            names.push(name.to_string());
        }
    }
    Found { index, entries: Vec::new(), names }
}

fn entry_json(key: &[u8], value: &Value) -> Json {
    let encoded = (!value.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&value.value));
    json!({
        "Key": String::from_utf8_lossy(key),
        "Value": encoded,
        "CreateIndex": value.create_index,
        "ModifyIndex": value.modify_index,
        "LockIndex": 0,
        "Flags": value.flags,
    })
}

impl Api {
    /// Milliseconds since this node last heard from the leader (0 on the leader, and when
    /// no leader is known there is nothing to measure: also 0, with `KnownLeader: false`).
    async fn last_contact_ms(&self) -> u64 {
        let Some(leader) = self.node.leader().leader else { return 0 };
        if leader == self.node.id() {
            return 0;
        }
        let Ok(status) = self.node.status().await else { return 0 };
        let contact = status.peers.iter().find(|peer| peer.id == leader).and_then(|peer| peer.health.last_contact);
        contact.map_or(0, |at| at.elapsed().as_millis() as u64)
    }

    fn check_key(&self, key: &str) -> ApiResult<()> {
        if key.is_empty() {
            return Err(ApiError::bad_request("a key is required: /v1/kv/<key>"));
        }
        self.check_key_size(key, "key")
    }

    /// A key or prefix (`what`) over the key limit is refused with 413.
    fn check_key_size(&self, key: &str, what: &str) -> ApiResult<()> {
        if key.len() > self.limits.max_key_bytes {
            let message =
                format!("the {what} is {} bytes; the limit is {} bytes", key.len(), self.limits.max_key_bytes);
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Ok(())
    }

    /// Proposes `op`, with the request's `Idempotency-Key` if it has one, and answers
    /// Consul's `true` / `false`.
    async fn write(&self, op: Op, headers: &HeaderMap) -> ApiResult {
        let request = request_id(headers, &op)?;
        let output = self.node.propose(Command { request, op }).await.map_err(|error| self.fail(error))?;
        match output {
            Output::Done { ok, .. } => Ok(axum::Json(ok).into_response()),
            Output::RequestIdReused => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was already used for a different request",
            )),
            other => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected output of a put or delete: {other:?}"),
            )),
        }
    }
}

async fn kv_put(api: &Api, key: String, query: &Query, headers: &HeaderMap, body: Body) -> ApiResult {
    api.check_key(&key)?;
    let cas = query.number("cas")?;
    let flags = query.number("flags")?.unwrap_or(0);
    let value = read_body(body, headers, api.limits.max_value_bytes).await?;
    api.write(Op::Put { key: Bytes::from(key), value, flags, cas }, headers).await
}

async fn kv_delete(api: &Api, key: String, query: &Query, headers: &HeaderMap) -> ApiResult {
    let cas = query.number("cas")?;
    let op = if query.flag("recurse") {
        if cas.is_some() {
            return Err(ApiError::bad_request("cas cannot be combined with recurse"));
        }
        api.check_key_size(&key, "prefix")?;
        Op::DeletePrefix { prefix: Bytes::from(key) }
    } else {
        api.check_key(&key)?;
        Op::Delete { key: Bytes::from(key), cas }
    };
    api.write(op, headers).await
}

/// Reads a request body of at most `limit` bytes. A larger one is refused with 413, after
/// reading and discarding up to [`DISCARD_LIMIT`] of it: a client that does not wait for
/// `100 Continue` is still sending, and would see a reset instead of the answer.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> ApiResult<Bytes> {
    let too_large = || {
        let message = format!("the value is larger than the limit of {limit} bytes");
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let waits_for_continue =
        headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits_for_continue && declared.is_some_and(|length: u64| length > limit as u64) {
        return Err(too_large()); // refused before the client sends the body
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut value = Vec::new();
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| ApiError::bad_request(format!("reading the body: {error}")))?;
            seen = seen.saturating_add(chunk.len());
            if seen > DISCARD_LIMIT {
                break;
            }
            if seen <= limit {
                value.extend_from_slice(&chunk);
            } else {
                value = Vec::new();
            }
        }
        if seen > limit {
            return Err(too_large());
        }
        Ok(Bytes::from(value))
    };
    tokio::time::timeout(BODY_TIMEOUT, read).await.unwrap_or_else(|_| {
        Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("the body did not arrive within {BODY_TIMEOUT:?}")))
    })
}

/// The `Idempotency-Key` header as a request id, with a digest of the operation.
fn request_id(headers: &HeaderMap, op: &Op) -> ApiResult<Option<RequestId>> {
    let Some(value) = headers.get("Idempotency-Key") else { return Ok(None) };
    let key =
        value.to_str().ok().filter(|key| !key.is_empty() && key.len() <= MAX_REQUEST_ID_BYTES).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_REQUEST_ID_BYTES} visible ASCII characters"
            ))
        })?;
    let encoded =
        postcard::to_stdvec(op).map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?;
    Ok(Some(RequestId { key: key.to_string(), fingerprint: fnv1a(&encoded) }))
}

/// FNV-1a, 64 bits: a digest that is the same on every node and every build, so a retry
/// sent to another node matches.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

// ---------------------------------------------------------------------------------------
// Cluster: Consul's status and operator routes

async fn status_leader(State(api): Shared) -> Response {
    let leader = api.node.leader().leader.map(|id| api.raft_address(id)).unwrap_or_default();
    axum::Json(leader).into_response()
}

async fn status_peers(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let peers: Vec<String> = status.membership.voters.iter().map(|&id| api.raft_address(id)).collect();
    Ok(axum::Json(peers).into_response())
}

async fn raft_configuration(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let servers: Vec<Json> = status
        .membership
        .members()
        .map(|id| {
            json!({
                "ID": id.to_string(),
                "Node": id.to_string(),
                "Address": api.raft_address(id),
                "Leader": status.leader == Some(id),
                "Voter": status.membership.is_voter(id),
                "ProtocolVersion": "3",
            })
        })
        .collect();
    Ok(axum::Json(json!({ "Servers": servers, "Index": status.commit.0 })).into_response())
}

/// How many of the longest election timeouts `transfer-leader` waits for the new leader.
const TRANSFER_WAIT_ELECTION_TIMEOUTS: u32 = 5;

async fn transfer_leader(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let status = api.status().await?;
    let target = query.node_id("id")?;
    if let Some(target) = target
        && !status.membership.is_voter(target)
    {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("{target} is not a voter")));
    }
    let others = status.membership.voters.iter().filter(|&&voter| Some(voter) != status.leader).count();
    if target.is_none() && others == 0 {
        return Err(ApiError::new(StatusCode::CONFLICT, "there is no other voter to hand leadership to"));
    }
    let before = api.node.leader().leader;
    api.node.transfer_leader(target).await.map_err(|error| api.fail(error))?;
    // The core abandons a transfer after an election timeout; the target's election and the
    // news of it take less again. Several election timeouts (3 s with the defaults) leave
    // room for a busy machine before reporting a timeout.
    let wait = api.node.options().max_election_timeout() * TRANSFER_WAIT_ELECTION_TIMEOUTS;
    let mut leader = api.node.watch_leader();
    let moved = leader.wait_for(|info| match target {
        Some(target) => info.leader == Some(target),
        None => info.leader.is_some() && info.leader != before,
    });
    if let Ok(Ok(_)) = tokio::time::timeout(wait, moved).await {
        return Ok(axum::Json(json!({ "Success": true })).into_response());
    }
    let whom = target.map_or_else(|| "another voter".to_string(), |target| target.to_string());
    let message = format!("leadership did not move to {whom} within {wait:?}");
    Err(ApiError { status: StatusCode::GATEWAY_TIMEOUT, message, leader: api.node.leader().leader })
}

async fn remove_peer(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let id = query.node_id("id")?.ok_or_else(|| ApiError::bad_request("?id=<node id> is required"))?;
    remove(&api, id).await?;
    Ok(StatusCode::OK.into_response())
}

async fn remove(api: &Api, id: NodeId) -> ApiResult<()> {
    let status = api.status().await?;
    if !status.membership.contains(id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("{id} is not a member")));
    }
    api.node.remove(id).await.map_err(|error| api.fail(error))
}

// ---------------------------------------------------------------------------------------
// Skiff's own

async fn skiff_status(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let peers: Vec<Json> = status
        .peers
        .iter()
        .map(|peer| {
            json!({
                "id": peer.id.to_string(),
                "voter": peer.voter,
                "match": peer.match_index.map(|index| index.0),
                "next": peer.next_index.map(|index| index.0),
                "connected": peer.health.connected,
                "last_contact_ms": peer.health.last_contact.map(|at| at.elapsed().as_millis() as u64),
                "rtt_ms": peer.health.round_trip.map(|rtt| rtt.as_secs_f64() * 1000.0),
                "dropped_messages": peer.health.dropped_messages,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "id": status.id.to_string(),
        "role": status.role.to_string(),
        "term": status.term.0,
        "voted_for": status.vote.map(|id| id.to_string()),
        "leader": status.leader.map(|id| id.to_string()),
        "commit": status.commit.0,
        "applied": status.applied.0,
        "last_log": { "index": status.last_log_id.index.0, "term": status.last_log_id.term.0 },
        "snapshot_index": status.snapshot_index.0,
        "voters": id_list(&status.membership.voters),
        "learners": id_list(&status.membership.learners),
        "raft_address": api.raft_address(status.id),
        "http_address": api.http_address(status.id),
        "peers": peers,
    }))
    .into_response())
}

/// Node ids as text, in order.
fn id_list(set: &std::collections::BTreeSet<NodeId>) -> Vec<String> {
    set.iter().map(ToString::to_string).collect()
}

/// The most entries `/v1/skiff/log` returns at once.
const MAX_LOG_PAGE: u64 = 1000;

async fn skiff_log(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let limit = query.number("limit")?.unwrap_or(100).clamp(1, MAX_LOG_PAGE);
    let from = query.number("from")?.map(Index);
    let page = api.node.log(from, limit as usize).await.map_err(|error| api.fail(error))?;
    let entries: Vec<Json> = page
        .entries
        .iter()
        .map(|entry| {
            let (kind, description) = match &entry.payload {
                Payload::Empty => ("empty", "(a new leader's first entry)".to_string()),
                Payload::Command(bytes) => match postcard::from_bytes::<Command>(bytes) {
                    Ok(command) => ("command", command.op.describe()),
                    Err(_) => ("command", format!("({} bytes, not a key-value command)", bytes.len())),
                },
                Payload::Membership(membership) => {
                    let ids = |set| id_list(set).join(" ");
                    let mut text = format!("voters {}", ids(&membership.voters));
                    if !membership.learners.is_empty() {
                        text.push_str(&format!(", learners {}", ids(&membership.learners)));
                    }
                    ("membership", text)
                }
            };
            json!({
                "index": entry.log_id.index.0,
                "term": entry.log_id.term.0,
                "committed": entry.log_id.index <= page.commit,
                "kind": kind,
                "description": description,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "first_index": page.first_index.0,
        "last_index": page.last_index.0,
        "commit": page.commit.0,
        "applied": page.applied.0,
        "entries": entries,
    }))
    .into_response())
}

fn member_json(api: &Api, id: NodeId, voter: bool) -> Json {
    json!({ "id": id.to_string(), "voter": voter, "raft": api.raft_address(id), "http": api.http_address(id) })
}

async fn members_list(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let members: Vec<Json> =
        status.membership.members().map(|id| member_json(&api, id, status.membership.is_voter(id))).collect();
    Ok(axum::Json(json!({ "leader": status.leader.map(|id| id.to_string()), "members": members })).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: String,
    #[serde(default)]
    learner: bool,
}

/// How long `POST /v1/skiff/members` waits for a new learner to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

async fn members_add(State(api): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let body = read_body(body, &headers, 64 << 10).await?;
    let request: AddMember = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("the body is not {{\"id\": \"n4\"}}: {error}")))?;
    let id = parse_id(&request.id)?;
    if api.cluster.node(id).is_err() {
        return Err(ApiError::bad_request(format!(
            "{id} is not in the cluster file; every node needs its address there before it can join"
        )));
    }
    let status = api.status().await?;
    if status.membership.contains(id) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("{id} is already a member")));
    }
    if status.role != RoleName::Leader {
        // Only the leader can tell when the learner has caught up.
        let leader_http = status.leader.and_then(|leader| api.http_address(leader));
        let message = "membership changes are made through the leader; retry there";
        let redirect =
            ApiError { status: StatusCode::TEMPORARY_REDIRECT, message: message.into(), leader: status.leader };
        let mut error = redirect.into_response();
        if let Some(location) =
            leader_http.and_then(|address| HeaderValue::from_str(&format!("http://{address}/v1/skiff/members")).ok())
        {
            error.headers_mut().insert(header::LOCATION, location);
        }
        return Ok(error);
    }
    api.node.add_learner(id).await.map_err(|error| api.fail(error))?;
    if !request.learner {
        // Thesis §4.2.1: a new server catches up as a non-voting member first, so adding it
        // does not leave the cluster waiting for an empty log to fill.
        let target = api.status().await?.last_log_id.index;
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let status = api.status().await?;
            let caught_up = status.peers.iter().any(|peer| peer.id == id && peer.match_index >= Some(target));
            if caught_up {
                break;
            }
            if tokio::time::Instant::now() >= deadline || status.role != RoleName::Leader {
                let message =
                    format!("{id} was added as a learner but has not caught up; is it running? Promote it later");
                return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, message));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api.node.promote(id).await.map_err(|error| api.fail(error))?;
    }
    Ok(axum::Json(member_json(&api, id, !request.learner)).into_response())
}

async fn members_promote(State(api): Shared, axum::extract::Path(id): axum::extract::Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let status = api.status().await?;
    if !status.membership.learners.contains(&id) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("{id} is not a learner")));
    }
    api.node.promote(id).await.map_err(|error| api.fail(error))?;
    Ok(axum::Json(member_json(&api, id, true)).into_response())
}

async fn members_remove(State(api): Shared, axum::extract::Path(id): axum::extract::Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    remove(&api, id).await?;
    Ok(StatusCode::OK.into_response())
}

// ---------------------------------------------------------------------------------------
// Metrics

// ---------------------------------------------------------------------------------------
// Fault injection (off unless the node was started with it)

/// The node's fault table, or 403 when fault injection is off.
fn faults(api: &Api) -> ApiResult<&skiff::transport::faults::Faults> {
    api.node.faults().ok_or_else(|| {
        ApiError::new(StatusCode::FORBIDDEN, "fault injection is off; start the node with --fault-injection to use it")
    })
}

fn faults_json(faults: &skiff::transport::faults::Faults) -> Response {
    axum::Json(json!({ "enabled": true, "faults": faults.list() })).into_response()
}

async fn faults_list(State(api): Shared) -> ApiResult {
    Ok(faults_json(faults(&api)?))
}

/// Adds a fault: `{"action": "drop" | "delay", "delay_ms": N, "peers": ["n2"], "direction":
/// "in" | "out" | "both"}`.
async fn faults_add(State(api): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let faults = faults(&api)?;
    let body = read_body(body, &headers, 64 << 10).await?;
    let fault: skiff::transport::faults::Fault = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "a fault is {{\"action\": \"drop\" or \"delay\", \"delay_ms\": N, \"peers\": [\"n2\"], \
             \"direction\": \"in\", \"out\" or \"both\"}}: {error}"
        ))
    })?;
    let members: Vec<NodeId> = api.cluster.node_ids().collect();
    if let Some(unknown) = fault.peers.iter().find(|id| !members.contains(id)) {
        return Err(ApiError::bad_request(format!("{unknown} is not a node of the cluster file")));
    }
    if fault.peers.contains(&api.node.id()) {
        return Err(ApiError::bad_request(format!("{} cannot cut itself off; name its peers", api.node.id())));
    }
    tracing::warn!(node = %api.node.id(), ?fault, "fault injected");
    faults.add(fault);
    Ok(faults_json(faults))
}

async fn faults_clear(State(api): Shared) -> ApiResult {
    let faults = faults(&api)?;
    faults.clear();
    tracing::warn!(node = %api.node.id(), "faults cleared");
    Ok(faults_json(faults))
}

async fn metrics(State(api): Shared) -> ApiResult {
    let Some(handle) = crate::metrics::handle() else {
        let message = "the embedding program installed its own metrics recorder";
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message));
    };
    let status = api.status().await?;
    let node = [("node", api.label.clone())];
    metrics::gauge!("skiff_raft_term", &node).set(status.term.0 as f64);
    metrics::gauge!("skiff_raft_commit_index", &node).set(status.commit.0 as f64);
    metrics::gauge!("skiff_raft_applied_index", &node).set(status.applied.0 as f64);
    metrics::gauge!("skiff_raft_last_log_index", &node).set(status.last_log_id.index.0 as f64);
    metrics::gauge!("skiff_raft_snapshot_index", &node).set(status.snapshot_index.0 as f64);
    metrics::gauge!("skiff_raft_is_leader", &node).set(if status.role == RoleName::Leader { 1.0 } else { 0.0 });
    metrics::gauge!("skiff_apply_lag_entries", &node).set(status.commit.0.saturating_sub(status.applied.0) as f64);
    metrics::gauge!("skiff_raft_voters", &node).set(status.membership.voters.len() as f64);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response())
}
