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
use skiff::{Index, MemberAddress, Membership, Node, NodeId, NodeStatus, Payload, RoleName};

mod consul;
mod dashboard;
mod faults;
mod feed;
mod kv;
mod members;
mod probes;
mod session;
mod snapshot;
mod status;
mod txn;

use self::consul::*;
use self::dashboard::*;
pub use self::dashboard::{DemoControl, DemoNode};
use self::faults::*;
use self::feed::*;
use self::kv::*;
use self::members::*;
use self::probes::*;
use self::session::*;
use self::snapshot::*;
use self::status::*;
use self::txn::*;
use crate::auth::{Access, Auth};
use crate::server::Limits;
use crate::state::{
    Command, Entry, KeyLock, KvStore, NO_SUCH_LEASE, OVER_QUOTA, Op, Output, Published, RequestId, STALE_FENCE, Value,
    View,
};

/// What every handler shares.
pub struct Api {
    node: Arc<Node<KvStore>>,
    /// The state machine's news: blocking queries wait on their key's changes there; status
    /// and metrics read the keyspace's size and quota alarm.
    published: Arc<Published>,
    /// The blocking queries under way, by client address, against the limits.
    blocking: Blocking,
    /// Counts the reads this API sends through the node, by kind.
    node_reads: [metrics::Counter; 2],
    cluster: ClusterConfig,
    limits: Limits,
    /// The node id as a metrics label.
    label: String,
    /// The tokens, if the cluster has `[auth]`.
    auth: Option<Arc<Auth>>,
    /// `skiff_http_requests_total` and `skiff_http_request_seconds`, by route.
    requests: crate::metrics::RequestMetrics,
    /// The dashboard's event streams under way, against [`dashboard::MAX_EVENT_STREAMS`].
    event_streams: Arc<tokio::sync::Semaphore>,
    /// The demo's control of its nodes, when this node is part of `skiff demo`.
    demo: Option<Arc<dyn DemoControl>>,
}

impl Api {
    pub fn new(
        node: Arc<Node<KvStore>>,
        published: Arc<Published>,
        cluster: ClusterConfig,
        limits: Limits,
        auth: Option<Arc<Auth>>,
        demo: Option<Arc<dyn DemoControl>>,
    ) -> Api {
        let label = node.id().to_string();
        let reads = |kind: &'static str| metrics::counter!("skiff_kv_node_reads_total", "node" => label.clone(), "kind" => kind);
        let node_reads = [reads("consistent"), reads("stale")];
        let blocking = Blocking::new(&limits);
        let event_streams = Arc::new(tokio::sync::Semaphore::new(dashboard::MAX_EVENT_STREAMS));
        let requests = crate::metrics::RequestMetrics::new(&label);
        Api { node, published, blocking, node_reads, cluster, limits, label, auth, event_streams, demo, requests }
    }
}

type Shared = State<Arc<Api>>;

/// The API's routes.
pub fn router(api: Api) -> Router {
    let api = Arc::new(api);
    Router::new()
        .route("/v1/kv/", any(kv))
        .route("/v1/kv/{*key}", any(kv))
        .route("/v1/txn", axum::routing::put(txn))
        .route("/v1/session/create", axum::routing::put(session_create))
        .route("/v1/session/destroy/{id}", axum::routing::put(session_destroy))
        .route("/v1/session/renew/{id}", axum::routing::put(session_renew))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/session/list", get(session_list))
        .route("/v1/session/node/{node}", get(session_node))
        .route("/v1/skiff/lease", post(lease_grant))
        .route("/v1/skiff/lease/{id}", get(lease_get).delete(lease_revoke))
        .route("/v1/skiff/lease/{id}/keepalive", axum::routing::put(lease_keepalive))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/operator/raft/configuration", get(raft_configuration))
        .route("/v1/operator/raft/transfer-leader", post(transfer_leader))
        .route("/v1/operator/raft/peer", axum::routing::delete(remove_peer))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/skiff/status", get(skiff_status))
        .route("/v1/skiff/log", get(skiff_log))
        .route("/v1/skiff/watch", get(watch))
        .route("/v1/skiff/members", get(members_list).post(members_add))
        .route("/v1/skiff/cluster", get(cluster_settings))
        .route("/v1/skiff/members/{id}", axum::routing::delete(members_remove))
        .route("/v1/skiff/members/{id}/promote", post(members_promote))
        .route("/v1/skiff/faults", get(faults_list).post(faults_add).delete(faults_clear))
        .route("/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/style.css", get(style_css))
        .route("/v1/skiff/events", get(events))
        .route("/v1/skiff/pause", post(pause).delete(pause))
        .route("/v1/skiff/demo", get(demo_list))
        .route("/v1/skiff/demo/nodes", post(demo_add_learner))
        .route("/v1/skiff/demo/nodes/{id}/{action}", post(demo_node_action))
        .route("/metrics", get(metrics))
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see docs/http-api.md") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on this route"))
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&api), authorize))
        .layer(middleware::from_fn_with_state(Arc::clone(&api), record))
        .layer(middleware::from_fn_with_state(Arc::clone(&api), cors))
        .with_state(api)
}

/// Who may call what, with `[auth]`: every request needs a valid token; the admin routes a
/// management token; the KV routes check each key in their handler (they get the
/// request's [`Access`]).
async fn authorize(State(api): Shared, mut request: Request, next: Next) -> Response {
    // Without [auth] nothing is checked, and the handlers see no `Access` (which is `Open`).
    let Some(auth) = &api.auth else { return next.run(request).await };
    // The probes answer without a token (an orchestrator has none): see `probes.rs`.
    if is_probe(request.uri().path()) || is_static(request.uri().path()) {
        return next.run(request).await;
    }
    let access = match request_secret(&request).and_then(|secret| auth.authenticate(None, &secret)) {
        Some(token) => Access::Token(token),
        None => {
            let why = "a valid token is required (X-Consul-Token, Authorization: Bearer, or ?token=)";
            return closing_if_body_unread(request.headers(), permission_denied(why));
        }
    };
    let path = request.uri().path();
    let management = path.starts_with("/v1/operator/")
        || path.starts_with("/v1/skiff/members")
        || path.starts_with("/v1/skiff/cluster")
        || path.starts_with("/v1/skiff/faults")
        || path.starts_with("/v1/skiff/events")
        || path.starts_with("/v1/skiff/pause")
        || path.starts_with("/v1/skiff/demo")
        || path.starts_with("/v1/skiff/log")
        || path == "/v1/snapshot"
        || path == "/metrics";
    if management && !access.is_management() {
        return closing_if_body_unread(request.headers(), permission_denied("this route needs a management token"));
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

/// The secret a request presents, as Consul takes it: `X-Consul-Token`, then
/// `Authorization: Bearer`, then `?token=`.
fn request_secret(request: &Request) -> Option<Vec<u8>> {
    let headers = request.headers();
    if let Some(token) = headers.get("X-Consul-Token") {
        return Some(token.as_bytes().to_vec());
    }
    if let Some(bearer) = headers.get(header::AUTHORIZATION).and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
    {
        return Some(bearer.trim_ascii().to_vec());
    }
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned().into_bytes())
}

/// A refused request may leave its body unread, and the server then drops the connection:
/// say so (`Connection: close`), so a client does not send its next request on a
/// connection being closed.
fn closing_if_body_unread(headers: &HeaderMap, mut response: Response) -> Response {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|length| length.as_bytes() != b"0");
    if has_body {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Consul's answer to a request its token does not allow: 403, `Permission denied`, and why.
fn permission_denied(why: &str) -> Response {
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("Permission denied: {why}"))
        .into_response()
}

/// Counts each request and its latency, by route.
async fn record(State(api): Shared, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>().map(MatchedPath::as_str) {
        Some("/v1/kv/" | "/v1/kv/{*key}") if request.method() == Method::GET => "kv",
        Some("/v1/kv/" | "/v1/kv/{*key}") => "kv_write",
        Some(path) if path.starts_with("/v1/skiff/") => "skiff",
        Some(path) if path.starts_with("/v1/operator/") || path.starts_with("/v1/status/") => "cluster",
        Some("/metrics") => "metrics",
        Some("/v1/health" | "/v1/ready") => "probe",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    api.requests.record(route, response.status().as_u16(), started.elapsed());
    response
}

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

    /// Runs `query` on the state machine: after ReadIndex, or with `stale` at once; counted
    /// in `skiff_kv_node_reads_total` (each is a task on the node's apply thread).
    async fn read<R: Send + 'static>(
        &self,
        stale: bool,
        query: impl FnOnce(&KvStore) -> R + Send + 'static,
    ) -> ApiResult<R> {
        self.node_reads[usize::from(stale)].increment(1);
        let read = if stale { self.node.read_stale(query).await } else { self.node.read(query).await };
        read.map_err(|error| self.fail(error))
    }

    /// Member `id`'s addresses: the replicated membership's, else its cluster file entry's.
    fn address(&self, membership: &Membership, id: NodeId) -> Option<MemberAddress> {
        crate::server::member_address(&self.cluster, membership, id)
    }

    /// Member `id`'s raft address, or its id when none is known.
    fn raft_address(&self, membership: &Membership, id: NodeId) -> String {
        self.address(membership, id).map(|address| address.raft).unwrap_or_else(|| id.to_string())
    }

    fn http_address(&self, membership: &Membership, id: NodeId) -> Option<String> {
        self.address(membership, id).and_then(|address| address.http)
    }
}

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
