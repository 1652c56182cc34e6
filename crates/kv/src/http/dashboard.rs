//! The dashboard (`GET /`): a page that shows the cluster working, live, and lets a person
//! break it (`docs/dashboard.md`). The page is three static files built into the binary; it
//! follows every member through `GET /v1/skiff/events` and acts through the ordinary API,
//! `POST/DELETE /v1/skiff/pause` and, in `skiff demo`, the demo's control routes.
//!
//! Budgets: a node serves at most [`MAX_EVENT_STREAMS`] event streams at once; each asks
//! the driver for one small page per frame (ten a second by default) and keeps nothing
//! between frames but two sequence numbers, so a slow or vanished browser costs the node
//! nothing: the samples it did not take are counted in the next frame it does take.

use std::convert::Infallible;

use skiff::NodeActivity;
use skiff::activity::Seen;

use super::*;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The most event streams one node serves at once.
pub(super) const MAX_EVENT_STREAMS: usize = 32;
/// Frames per second are bounded by this shortest interval.
const MIN_FRAME_INTERVAL_MS: u64 = 50;
const DEFAULT_FRAME_INTERVAL_MS: u64 = 100;
const MAX_FRAME_INTERVAL_MS: u64 = 5_000;

/// The page's files are public (they hold no data); everything they show comes from routes
/// that take a token when `[auth]` is on.
pub(super) fn is_static(path: &str) -> bool {
    matches!(path, "/" | "/dashboard/app.js" | "/dashboard/style.css")
}

fn static_file(content_type: &'static str, text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], text).into_response()
}

pub(super) async fn index() -> Response {
    static_file("text/html; charset=utf-8", INDEX_HTML)
}

pub(super) async fn app_js() -> Response {
    static_file("text/javascript; charset=utf-8", APP_JS)
}

pub(super) async fn style_css() -> Response {
    static_file("text/css; charset=utf-8", STYLE_CSS)
}

/// `GET /v1/skiff/events[?interval_ms=100]`: Server-Sent Events, one `state` event per
/// interval with this node's status, log tail, the messages it sent and its events.
pub(super) async fn events(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let interval = query.number("interval_ms")?.unwrap_or(DEFAULT_FRAME_INTERVAL_MS);
    if !(MIN_FRAME_INTERVAL_MS..=MAX_FRAME_INTERVAL_MS).contains(&interval) {
        return Err(ApiError::bad_request(format!(
            "interval_ms={interval} is out of range: {MIN_FRAME_INTERVAL_MS} to {MAX_FRAME_INTERVAL_MS}"
        )));
    }
    let Ok(permit) = Arc::clone(&api.event_streams).try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this node already serves {MAX_EVENT_STREAMS} event streams; close a dashboard and retry"),
        ));
    };
    // The first frame now: a node that is not running answers an error, not an empty stream.
    let first = api.node.activity(Seen::default()).await.map_err(|error| api.fail(error))?;
    let stream = EventStream {
        shown: 0,
        sent_at_start: first.page.messages_sent,
        seen: first.page.seen,
        first: Some(first),
        interval: Duration::from_millis(interval),
        api,
        _permit: permit,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(chunk), stream))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

struct EventStream {
    api: Arc<Api>,
    interval: Duration,
    first: Option<NodeActivity>,
    seen: Seen,
    /// Message samples sent to this stream, and the node's count of sent messages when it
    /// began: the difference is what the stream did not show.
    shown: u64,
    sent_at_start: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl EventStream {
    /// The next frame, after the interval; `None` once the node stopped (the browser sees
    /// the stream end, and shows the node as unreachable).
    async fn next_frame(&mut self) -> Option<Bytes> {
        let activity = match self.first.take() {
            Some(first) => first,
            None => {
                tokio::time::sleep(self.interval).await;
                self.api.node.activity(self.seen).await.ok()?
            }
        };
        self.seen = activity.page.seen;
        self.shown += activity.page.messages.len() as u64;
        let skipped = activity.page.messages_sent.saturating_sub(self.sent_at_start).saturating_sub(self.shown);
        let json = frame_json(&self.api, &activity, skipped);
        Some(Bytes::from(format!("event: state\ndata: {json}\n\n")))
    }
}

fn frame_json(api: &Api, activity: &NodeActivity, skipped: u64) -> Json {
    let status = &activity.status;
    let tick_ms = activity.tick.as_secs_f64() * 1000.0;
    let scheme = if api.cluster.tls.is_some() { "https" } else { "http" };
    let members: Vec<Json> = status
        .membership
        .members()
        .map(|id| json!({ "id": id.to_string(), "http": api.http_address(&status.membership, id), "scheme": scheme }))
        .collect();
    let page = &activity.page;
    let messages: Vec<Json> = page
        .messages
        .iter()
        .map(|message| {
            json!({
                "seq": message.seq,
                "at_ms": message.at.as_millis() as u64,
                "to": message.to.to_string(),
                "kind": message.kind,
                "term": message.term.0,
                "text": message.text,
            })
        })
        .collect();
    let events: Vec<Json> = page
        .events
        .iter()
        .map(|event| json!({ "seq": event.seq, "at_ms": event.at.as_millis() as u64, "text": event.text }))
        .collect();
    let rates: serde_json::Map<String, Json> =
        page.rates.iter().map(|(kind, rate)| (kind.to_string(), json!((rate * 10.0).round() / 10.0))).collect();
    let timer = status.election_timer.map(|timer| {
        json!({
            "elapsed_ms": (f64::from(timer.elapsed_ticks) * tick_ms).round() as u64,
            "timeout_ms": (f64::from(timer.timeout_ticks) * tick_ms).round() as u64,
        })
    });
    let log: Vec<Json> = activity.log_tail.iter().map(|id| json!({ "index": id.index.0, "term": id.term.0 })).collect();
    let mut frame = status_json(status);
    frame.extend(fields(json!({
        "uptime_ms": activity.uptime.as_millis() as u64,
        "tick_ms": activity.tick.as_millis() as u64,
        "paused": activity.paused,
        "first_index": status.first_index.0,
        "election_timer": timer,
        "members": members,
        "log": log,
        "messages": messages,
        "messages_per_s": rates,
        "messages_skipped": skipped,
        "events": events,
        "faults": api.node.faults().map(|faults| faults.list()),
    })));
    Json::Object(frame)
}

/// `POST /v1/skiff/pause` pauses this node, `DELETE` resumes it ([`skiff::Node::set_paused`]);
/// only with fault injection on, as the other experiments.
pub(super) async fn pause(State(api): Shared, method: Method) -> ApiResult {
    if api.node.faults().is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fault injection is off; start the node with --fault-injection to pause it",
        ));
    }
    let paused = api.node.set_paused(method == Method::POST).await.map_err(|error| api.fail(error))?;
    tracing::warn!(node = %api.node.id(), paused, "pause switched");
    Ok(axum::Json(json!({ "paused": paused })).into_response())
}

/// Control of a local cluster that one process runs (`skiff demo`): the dashboard's kill,
/// restart and add-learner buttons. Errors are messages for the person who pressed.
pub trait DemoControl: Send + Sync + 'static {
    /// Every node the demo started, running or not.
    fn nodes(&self) -> Vec<DemoNode>;
    /// Whether the demo runs in slow motion (`skiff demo --slow`).
    fn slow(&self) -> bool;
    /// Stops node `id` at once, without handing leadership over, as a crash would (its data
    /// stays: what it acknowledged is on its disk).
    fn kill(&self, id: NodeId) -> futures_util::future::BoxFuture<'static, Result<(), String>>;
    /// Starts node `id` again on its data.
    fn restart(&self, id: NodeId) -> futures_util::future::BoxFuture<'static, Result<(), String>>;
    /// Starts a new node and adds it as a learner.
    fn add_learner(&self) -> futures_util::future::BoxFuture<'static, Result<DemoNode, String>>;
}

/// One node of a demo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoNode {
    pub id: NodeId,
    pub http: String,
    pub running: bool,
}

fn demo(api: &Api) -> ApiResult<&Arc<dyn DemoControl>> {
    api.demo.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this node is not part of a `skiff demo`: only the demo can kill and restart nodes",
        )
    })
}

fn demo_node_json(node: &DemoNode) -> Json {
    json!({ "id": node.id.to_string(), "http": node.http, "running": node.running })
}

pub(super) async fn demo_list(State(api): Shared) -> ApiResult {
    let demo = demo(&api)?;
    let nodes: Vec<Json> = demo.nodes().iter().map(demo_node_json).collect();
    Ok(axum::Json(json!({ "nodes": nodes, "slow": demo.slow() })).into_response())
}

/// `POST /v1/skiff/demo/nodes/{id}/{kill|restart}`.
pub(super) async fn demo_node_action(
    State(api): Shared,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
) -> ApiResult {
    let demo = Arc::clone(demo(&api)?);
    let id = parse_id(&id)?;
    if !demo.nodes().iter().any(|node| node.id == id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("{id} is not a node of this demo")));
    }
    let done = match action.as_str() {
        "kill" => demo.kill(id).await,
        "restart" => demo.restart(id).await,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{other:?} is not an action on a demo node: kill or restart"),
            ));
        }
    };
    done.map_err(|message| ApiError::new(StatusCode::CONFLICT, message))?;
    let nodes: Vec<Json> = demo.nodes().iter().map(demo_node_json).collect();
    Ok(axum::Json(json!({ "nodes": nodes, "slow": demo.slow() })).into_response())
}

/// `POST /v1/skiff/demo/nodes`: a new node, added as a learner.
pub(super) async fn demo_add_learner(State(api): Shared) -> ApiResult {
    let demo = Arc::clone(demo(&api)?);
    let node = demo.add_learner().await.map_err(|message| ApiError::new(StatusCode::CONFLICT, message))?;
    Ok(axum::Json(demo_node_json(&node)).into_response())
}

/// Cross-origin requests from the dashboard: a page served by one member follows and acts
/// on the others. Only origins that are members' HTTP addresses are allowed (with the
/// loopback names `127.0.0.1`, `localhost` and `[::1]` taken as one), so another site a
/// browser visits cannot use the API through it. Runs before the token check: a preflight
/// carries no token.
pub(super) async fn cors(State(api): Shared, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let Some(origin) = origin else { return next.run(request).await };
    if !api.is_member_origin(&origin).await {
        return next.run(request).await;
    }
    let preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(request).await };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, PUT, POST, DELETE"));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization, x-consul-token"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

impl Api {
    /// Whether `origin` (`scheme://host:port`) is a member's HTTP address, or a node's of
    /// the cluster file (a demo node that was killed is still one).
    async fn is_member_origin(&self, origin: &str) -> bool {
        let scheme = if self.cluster.tls.is_some() { "https://" } else { "http://" };
        let Some(host_port) = origin.strip_prefix(scheme) else { return false };
        let Some(wanted) = loopback_alias(host_port) else { return false };
        let is_wanted = |address: &str| loopback_alias(address).is_some_and(|address| address == wanted);
        // The cluster file first: a member added since needs a look at the membership, a
        // request to the driver.
        if self.cluster.node.iter().filter_map(|node| node.http.as_deref()).any(is_wanted) {
            return true;
        }
        let Ok(status) = self.node.status().await else { return false };
        let membership = &status.membership;
        membership.members().filter_map(|id| self.http_address(membership, id)).any(|address| is_wanted(&address))
    }
}

/// `host:port` with the loopback names written one way, or `None` when it has no port.
fn loopback_alias(host_port: &str) -> Option<String> {
    let (host, port) = host_port.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = match host.to_ascii_lowercase().as_str() {
        "localhost" | "127.0.0.1" | "[::1]" => "loopback".to_string(),
        other => other.to_string(),
    };
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::loopback_alias;

    #[test]
    fn loopback_names_are_one_host_and_ports_must_agree() {
        assert_eq!(loopback_alias("localhost:8001"), loopback_alias("127.0.0.1:8001"));
        assert_eq!(loopback_alias("[::1]:8001"), loopback_alias("127.0.0.1:8001"));
        assert_ne!(loopback_alias("127.0.0.1:8002"), loopback_alias("127.0.0.1:8001"));
        assert_ne!(loopback_alias("evil.example:8001"), loopback_alias("127.0.0.1:8001"));
        assert_eq!(loopback_alias("127.0.0.1"), None);
        assert_eq!(loopback_alias("127.0.0.1:http"), None);
    }
}
