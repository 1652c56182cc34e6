//! The HTTP API's request parsing (`skiff_kv::http`: the query string and its numbers,
//! durations, node ids and flags; keys in the path; headers; bodies), through the public
//! router, against one in-process node that leads a cluster of one (a `MemLogStore`, no
//! sockets). No panic, and never a 500: whatever a client sends is a client error or an
//! answer. A request still running after [`PATIENCE`] is dropped, as a client that gives up
//! drops it: a blocking query (`?index=`) waits up to its `wait` for a change.
//!
//! Input: byte 0 picks the mode. Raw: the request line's target is bytes from the input as
//! they are. Built: a route, a key and a query string of the API's parameters, with values
//! that are edge cases (numbers at and past `u64::MAX`, durations with and without units,
//! negative, fractional, huge) or bytes from the input. Then headers and a body, in both.
//!
//! Requests that could take the node out of its own cluster (removing a member or a peer,
//! adding one that will never answer) are not sent: they are refused or accepted by the
//! cluster's rules, not by parsing, and would stop every later write. The keyspace is
//! cleared every 1024 inputs, so a long run's memory stays bounded.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use skiff::{MemLogStore, Membership, NodeId};
use skiff_kv::Limits;
use skiff_kv::http::{Api, router};
use skiff_kv::state::{KvStore, Retention};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::node::{MemoryCluster, fast_options};
use tower::ServiceExt;

#[path = "cursor.rs"]
pub(crate) mod cursor;

use cursor::Cursor;

/// The node, its router, and the runtime that serves requests.
pub(crate) struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    requests: AtomicU64,
    _cluster: MemoryCluster<KvStore>,
}

pub(crate) fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let (cluster, router) = runtime.block_on(async {
            let mut cluster = MemoryCluster::empty(1);
            let mut store = KvStore::new(Retention::default());
            let applied = store.subscribe();
            let id = NodeId(1);
            cluster.start(fast_options(id), store, MemLogStore::new(Membership::with_voters([id])));
            cluster.leader().await;
            let config = ClusterFile::builder("fuzz", 1).http().build().config();
            let api = Api::new(cluster.node(id).clone(), applied, config, Limits::default(), None, None);
            (cluster, router(api))
        });
        Harness { runtime, router, requests: AtomicU64::new(0), _cluster: cluster }
    })
}

/// How long a request may run before the harness drops it (see the module documentation).
const PATIENCE: Duration = Duration::from_millis(5);

const METHODS: [&str; 7] = ["GET", "PUT", "DELETE", "POST", "HEAD", "PATCH", "OPTIONS"];
const ROUTES: [&str; 14] = [
    "/v1/kv/",
    "/v1/kv/",
    "/v1/kv/",
    "/v1/kv/",
    "/v1/status/leader",
    "/v1/status/peers",
    "/v1/operator/raft/configuration",
    "/v1/operator/raft/transfer-leader",
    "/v1/skiff/status",
    "/v1/skiff/log",
    "/v1/skiff/members/",
    "/v1/skiff/faults",
    "/metrics",
    "/nowhere",
];
const PARAMETERS: [&str; 16] = [
    "index",
    "wait",
    "recurse",
    "raw",
    "keys",
    "separator",
    "cas",
    "flags",
    "consistent",
    "stale",
    "limit",
    "from",
    "id",
    "token",
    "dc",
    "acquire",
];
const VALUES: [&str; 24] = [
    "",
    "0",
    "1",
    "2",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "1.5",
    "1e400",
    "10s",
    "500ms",
    "5m",
    "1h",
    "1.5h",
    "NaN",
    "inf",
    ".ms",
    "99999999999999999999h",
    "0.0000000001ms",
    "false",
    "true",
    "/",
    "%ff",
    "n1",
];
const HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "content-type",
    "x-consul-token",
    "authorization",
    "idempotency-key",
    "x-consul-index",
    "accept",
];

/// Runs one input (see the module documentation).
pub fn check(data: &[u8]) {
    let harness = harness();
    if harness.requests.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
        let clear = Request::delete("/v1/kv/?recurse").body(Body::empty()).expect("a valid request");
        let status = send(harness, clear, Duration::from_secs(10)).map(|(status, _)| status);
        assert!(status.is_some_and(|status| status.is_success()), "clearing the keyspace failed: {status:?}");
    }
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    let method = if cursor.below(8) == 7 {
        Method::from_bytes(cursor.bytes()).unwrap_or(Method::GET)
    } else {
        Method::from_bytes(METHODS[cursor.below(METHODS.len())].as_bytes()).expect("a valid method")
    };
    let target = if mode & 1 == 0 { cursor.bytes().to_vec() } else { built_target(&mut cursor) };
    if !safe(&method, &target) {
        return;
    }
    let mut request = Request::builder().method(method).uri(target.as_slice());
    for _ in 0..cursor.below(4) {
        let name = HEADERS[cursor.below(HEADERS.len())];
        let value = if cursor.bool() { VALUES[cursor.below(VALUES.len())].as_bytes() } else { cursor.bytes() };
        request = request.header(name, value);
    }
    // An invalid target or header is refused by the HTTP parser before the router.
    let Ok(request) = request.body(Body::from(cursor.rest().to_vec())) else { return };
    let Some((status, body)) = send(harness, request, PATIENCE) else { return };
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "a request got a 500: {}", String::from_utf8_lossy(&body));
}

/// A route, maybe a key, and a query string of the API's parameters.
fn built_target(cursor: &mut Cursor) -> Vec<u8> {
    let mut target = ROUTES[cursor.below(ROUTES.len())].as_bytes().to_vec();
    if target.ends_with(b"/") {
        target.extend_from_slice(
            if cursor.bool() { format!("k{}", cursor.below(4)).into_bytes() } else { cursor.bytes().to_vec() }
                .as_slice(),
        );
    }
    for position in 0..cursor.below(5) {
        target.push(if position == 0 { b'?' } else { b'&' });
        target.extend_from_slice(PARAMETERS[cursor.below(PARAMETERS.len())].as_bytes());
        match cursor.below(4) {
            0 => {}
            1 => target.extend_from_slice(cursor.bytes()),
            _ => {
                target.push(b'=');
                target.extend_from_slice(VALUES[cursor.below(VALUES.len())].as_bytes());
            }
        }
    }
    target
}

/// Whether the request leaves the node's cluster alone (see the module documentation).
fn safe(method: &Method, target: &[u8]) -> bool {
    let contains = |needle: &[u8]| target.windows(needle.len()).any(|window| window.eq_ignore_ascii_case(needle));
    method == Method::GET || method == Method::HEAD || !(contains(b"members") || contains(b"peer") || contains(b"%"))
}

/// The status and body of the response to `request`, unless it takes longer than `patience`.
pub(crate) fn send(harness: &Harness, request: Request<Body>, patience: Duration) -> Option<(StatusCode, Vec<u8>)> {
    harness.runtime.block_on(async {
        let response = async {
            let response = harness.router.clone().oneshot(request).await.expect("the router never fails");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a response body reads");
            (status, body.to_vec())
        };
        tokio::time::timeout(patience, response).await.ok()
    })
}
