//! `/v1/session` (Consul's sessions) and `/v1/skiff/lease` (etcd-style leases): two fronts on
//! the state machine's one kind of lease (`state/coord.rs`). A Skiff lease is a session with
//! `Behavior` delete and no lock delay.
//!
//! Everything a client sends is checked here before anything is proposed: field names (as
//! Consul, case-insensitively: py-consul sends `ttl`, `lockdelay`), durations, bounds, the
//! behaviour, session ids (UUIDs). A session id is chosen by the node that proposes the
//! session (a random UUID v4), so every replica stores the same one.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use serde_json::Map;

use super::*;
use crate::state::{Behavior, Lease, LeaseSpec};

/// The largest session or lease request body.
const MAX_BODY_BYTES: usize = 64 << 10;
/// Consul's bounds of a session TTL.
const MIN_SESSION_TTL_MS: u64 = 10_000;
const MAX_TTL_MS: u64 = 86_400_000;
/// The shortest TTL of a Skiff lease: shorter than Consul's, but a lease may still end up
/// to an election timeout late (`docs/http-api.md`).
const MIN_LEASE_TTL_MS: u64 = 1_000;
/// Consul's default lock delay, and its largest.
const DEFAULT_LOCK_DELAY_MS: u64 = 15_000;
const MAX_LOCK_DELAY_MS: u64 = 60_000;
/// A bare number as a `LockDelay` below this is seconds, else nanoseconds (as Consul reads it).
const LOCK_DELAY_SECONDS_BELOW: u64 = 1000;
const MAX_NAME_BYTES: usize = 256;
const MAX_NODE_BYTES: usize = 128;

/// Whether `access` may create, renew or destroy sessions: a token that may write some key
/// (Consul's `session:write`), or no `[auth]`.
fn may_write_sessions(access: &Access) -> bool {
    match access {
        Access::Open => true,
        Access::Token(token) => token.management || !token.write.is_empty(),
    }
}

fn access_of(access: Option<axum::Extension<Access>>) -> Access {
    access.map_or(Access::Open, |axum::Extension(access)| access)
}

/// Refuses a token that may not write: Consul's plain-text 403.
fn check_write(access: &Access) -> Result<(), Response> {
    if may_write_sessions(access) {
        return Ok(());
    }
    Err(permission_denied("sessions and leases need a token that may write keys"))
}

/// A refusal answered as is: a JSON [`ApiError`] or a plain-text 403.
enum Refused {
    Error(ApiError),
    Response(Response),
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused::Error(error)
    }
}

fn answer(headers: &HeaderMap, result: Result<Response, Refused>) -> Response {
    match result {
        Ok(response) => response,
        Err(Refused::Error(error)) => closing_if_body_unread(headers, error.into_response()),
        Err(Refused::Response(response)) => closing_if_body_unread(headers, response),
    }
}

/// A session or lease id from a path: a UUID, as Skiff makes them (so a path trick, an
/// empty id or a huge one is refused before any lookup).
pub(super) fn session_id(text: &str, what: &str) -> ApiResult<String> {
    let shown: String = text.chars().take(80).collect();
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(at, byte)| match at {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        });
    if !well_formed {
        return Err(ApiError::bad_request(format!(
            "{what} {shown:?} is not a session id: expected a UUID like 8f246b77-f3e1-ff88-5b48-8ec93abf3e05"
        )));
    }
    Ok(text.to_ascii_lowercase())
}

fn path_id(path: Result<Path<String>, PathRejection>, what: &str) -> ApiResult<String> {
    let Path(text) = path.map_err(|error| ApiError::bad_request(format!("the {what} in the path: {error}")))?;
    session_id(&text, what)
}

/// A new random UUID (version 4), from the operating system's generator.
fn new_id() -> ApiResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("no random session id: {error}")))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

/// A duration as Go writes them (Consul's `TTL: "10s"`, `LockDelay: "15s"`): one or more
/// numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `1m30s` or
/// `1.5s`; `0` alone is allowed. In milliseconds, rounded up (so a positive duration is not
/// read as none).
pub(super) fn go_duration_ms(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    let mut rest = text;
    let mut total_ns: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_ns += value * scale;
        rest = next;
    }
    // Past u64 milliseconds (or not finite): no duration anyone means.
    let ms = (total_ns / 1e6).ceil();
    (ms.is_finite() && ms < 1e18).then_some(ms as u64)
}

/// A duration in milliseconds as Consul shows a TTL: `10s`, or `1500ms`; empty for none.
fn show_duration(ms: u64) -> String {
    match ms {
        0 => String::new(),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// A JSON request body as an object with its field names in lower case (Consul reads them
/// case-insensitively); an empty body is an empty object.
fn body_fields(body: &[u8]) -> ApiResult<Map<String, Json>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Json = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("the body is not valid JSON: {error}")))?;
    let Json::Object(object) = value else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let mut fields = Map::new();
    for (name, value) in object {
        let lower = name.to_ascii_lowercase();
        if fields.insert(lower, value).is_some() {
            return Err(ApiError::bad_request(format!("the field {name:?} is given twice")));
        }
    }
    Ok(fields)
}

/// An optional string field (`null` counts as absent).
fn string_field<'a>(fields: &'a Map<String, Json>, name: &str, shown: &str) -> ApiResult<Option<&'a str>> {
    match fields.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => Ok(Some(text)),
        Some(other) => Err(ApiError::bad_request(format!("{shown} must be a string, not {other}"))),
    }
}

/// A TTL field or parameter: a duration within `min..=MAX_TTL_MS`, or none (`""`, `"0s"`)
/// when `optional`.
fn parse_ttl(text: &str, min_ms: u64, optional: bool) -> ApiResult<u64> {
    let range = format!("from {} to {}", show_duration(min_ms), show_duration(MAX_TTL_MS));
    if text.is_empty() && optional {
        return Ok(0);
    }
    let ms = go_duration_ms(text)
        .ok_or_else(|| ApiError::bad_request(format!("TTL {text:?} is not a duration like \"10s\" ({range})")))?;
    if ms == 0 && optional {
        return Ok(0);
    }
    if !(min_ms..=MAX_TTL_MS).contains(&ms) {
        return Err(ApiError::bad_request(format!("TTL {text:?} is out of range: it must be {range}")));
    }
    Ok(ms)
}

/// `LockDelay`: a duration string, or a number (seconds below 1000, else nanoseconds, as
/// Consul reads it), at most 60 s.
fn parse_lock_delay(value: &Json) -> ApiResult<u64> {
    let bad = || {
        ApiError::bad_request(format!(
            "LockDelay {value} is not a duration like \"15s\" or \"500ms\", from 0 to {}",
            show_duration(MAX_LOCK_DELAY_MS)
        ))
    };
    let ms = match value {
        Json::String(text) => go_duration_ms(text).ok_or_else(bad)?,
        Json::Number(number) => {
            let number = number.as_u64().ok_or_else(bad)?;
            if number < LOCK_DELAY_SECONDS_BELOW { number * 1000 } else { number.div_ceil(1_000_000) }
        }
        _ => return Err(bad()),
    };
    if ms > MAX_LOCK_DELAY_MS {
        return Err(bad());
    }
    Ok(ms)
}

/// A `Name` or `Node`: at most `max` bytes, no control characters.
fn check_label(text: &str, what: &str, max: usize) -> ApiResult<()> {
    if text.len() > max {
        return Err(ApiError::bad_request(format!("{what} is {} bytes; the limit is {max}", text.len())));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what} must not contain control characters")));
    }
    Ok(())
}

/// Consul's health checks, which Skiff does not have: only none, or the default
/// `serfHealth` (which Skiff's node liveness stands for), are accepted.
fn check_checks(fields: &Map<String, Json>) -> ApiResult<()> {
    for name in ["checks", "nodechecks", "servicechecks"] {
        let ok = match fields.get(name) {
            None | Some(Json::Null) => true,
            Some(Json::Array(checks)) => checks.iter().all(|check| check == "serfHealth"),
            Some(_) => false,
        };
        if !ok {
            return Err(ApiError::bad_request(format!(
                "{name}: Skiff sessions have no health checks; give none, or [\"serfHealth\"]"
            )));
        }
    }
    Ok(())
}

/// The fields a session create takes; any other is refused, so a misspelt one is not
/// silently ignored.
const SESSION_FIELDS: [&str; 10] =
    ["name", "node", "ttl", "lockdelay", "behavior", "checks", "nodechecks", "servicechecks", "datacenter", "dc"];

/// A `PUT /v1/session/create` body as a lease spec (the id still to be chosen).
fn session_spec(fields: &Map<String, Json>, this_node: &str) -> ApiResult<LeaseSpec> {
    if let Some(unknown) = fields.keys().find(|name| !SESSION_FIELDS.contains(&name.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {unknown:?}; a session takes Name, Node, TTL, LockDelay, Behavior"
        )));
    }
    check_checks(fields)?;
    let name = string_field(fields, "name", "Name")?.unwrap_or("").to_string();
    check_label(&name, "Name", MAX_NAME_BYTES)?;
    let node = string_field(fields, "node", "Node")?.filter(|node| !node.is_empty()).unwrap_or(this_node).to_string();
    check_label(&node, "Node", MAX_NODE_BYTES)?;
    let ttl_ms = parse_ttl(string_field(fields, "ttl", "TTL")?.unwrap_or(""), MIN_SESSION_TTL_MS, true)?;
    let lock_delay_ms = match fields.get("lockdelay") {
        None | Some(Json::Null) => DEFAULT_LOCK_DELAY_MS,
        Some(value) => parse_lock_delay(value)?,
    };
    let behavior = match string_field(fields, "behavior", "Behavior")?.unwrap_or("") {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => {
            let other: String = other.chars().take(40).collect();
            return Err(ApiError::bad_request(format!("Behavior {other:?} is neither \"release\" nor \"delete\"")));
        }
    };
    Ok(LeaseSpec { id: String::new(), name, node, ttl_ms, lock_delay_ms, behavior })
}

/// A session as Consul shows it.
fn session_json(lease: &Lease) -> Json {
    let spec = &lease.spec;
    json!({
        "ID": spec.id,
        "Name": spec.name,
        "Node": spec.node,
        "LockDelay": spec.lock_delay_ms.saturating_mul(1_000_000),
        "Behavior": match spec.behavior { Behavior::Release => "release", Behavior::Delete => "delete" },
        "TTL": show_duration(spec.ttl_ms),
        "NodeChecks": [],
        "ServiceChecks": null,
        "CreateIndex": lease.create_index,
        "ModifyIndex": lease.modify_index,
    })
}

/// A Skiff lease: its id, TTL and the time left on this node's reading of the cluster clock.
fn lease_json(lease: &Lease, now_ms: u64) -> Json {
    json!({
        "ID": lease.spec.id,
        "TTL": show_duration(lease.spec.ttl_ms),
        "RemainingMs": lease.deadline.saturating_sub(now_ms),
        "CreateIndex": lease.create_index,
        "ModifyIndex": lease.modify_index,
    })
}

impl Api {
    /// Proposes `op` stamped with this node's clock and under the keyspace quota, and returns
    /// its output; the refusals every write shares (quota, reused request id) are errors.
    pub(super) async fn propose_op(&self, op: Op, request: Option<RequestId>) -> ApiResult<Output> {
        let op = op.within_quota(self.limits.keyspace_quota_bytes).at(self.published.now_ms());
        let output = self.node.propose(Command { request, op }).await.map_err(|error| self.fail(error))?;
        match output {
            Output::Refused(message) if message.starts_with(OVER_QUOTA) => {
                Err(ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message))
            }
            Output::RequestIdReused => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was already used for a different request",
            )),
            output => Ok(output),
        }
    }

    /// Creates a lease from `spec` with a new id.
    async fn grant(&self, mut spec: LeaseSpec) -> ApiResult<Lease> {
        spec.id = new_id()?;
        match self.propose_op(Op::LeaseGrant(spec), None).await? {
            Output::Lease(lease) => Ok(*lease),
            Output::Refused(message) if message.contains("too many sessions") => {
                Err(ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message))
            }
            other => Err(unexpected("a session create", &other)),
        }
    }

    /// Renews lease `id`; `None` when it does not exist (or ended).
    async fn renew(&self, id: String) -> ApiResult<Option<Lease>> {
        match self.propose_op(Op::LeaseRenew { id }, None).await? {
            Output::Lease(lease) => Ok(Some(*lease)),
            Output::Refused(message) if message.starts_with(NO_SUCH_LEASE) => Ok(None),
            other => Err(unexpected("a session renew", &other)),
        }
    }

    /// Ends lease `id`: whether it existed.
    async fn revoke(&self, id: String) -> ApiResult<bool> {
        match self.propose_op(Op::LeaseRevoke { id }, None).await? {
            Output::Done { ok, .. } => Ok(ok),
            other => Err(unexpected("a session destroy", &other)),
        }
    }

    /// The leases `pick` chooses, with the applied index they were read at. A lease past its
    /// deadline is shown (with no time left) until the leader's clock entry ends it: its
    /// keys and locks go in that same entry, so a read that no longer finds a lease never
    /// finds its keys either.
    async fn leases_where(
        &self,
        stale: bool,
        pick: impl Fn(&Lease) -> bool + Send + 'static,
    ) -> ApiResult<(u64, Vec<Lease>)> {
        self.read(stale, move |store: &KvStore| {
            let leases = store.leases().filter(|lease| pick(lease)).cloned().collect();
            (store.index(), leases)
        })
        .await
    }
}

fn unexpected(what: &str, output: &Output) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected output of {what}: {output:?}"))
}

/// The 404 of a session or lease that does not exist.
fn no_such(what: &str, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("{what} {id:?} does not exist (it ended, or was never created)"))
}

/// Session objects with `X-Consul-Index`, as Consul answers the session reads.
fn sessions_response(index: u64, leases: &[Lease]) -> Response {
    let body: Vec<Json> = leases.iter().map(session_json).collect();
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert("X-Consul-Index", HeaderValue::from(index.max(1)));
    response
}

async fn read_fields(body: Body, headers: &HeaderMap) -> ApiResult<Map<String, Json>> {
    let bytes = read_body(body, headers, MAX_BODY_BYTES).await.map_err(|mut error| {
        if error.status == StatusCode::PAYLOAD_TOO_LARGE {
            error.message = format!("the body is larger than the limit of {MAX_BODY_BYTES} bytes");
        }
        error
    })?;
    body_fields(&bytes)
}

/// `PUT /v1/session/create`.
pub(super) async fn session_create(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        check_write(&access_of(access)).map_err(Refused::Response)?;
        let fields = read_fields(body, &headers).await?;
        let spec = session_spec(&fields, &api.node.id().to_string())?;
        let lease = api.grant(spec).await?;
        Ok(axum::Json(json!({ "ID": lease.spec.id })).into_response())
    };
    answer(&headers, result.await)
}

/// `PUT /v1/session/destroy/<id>`: `true`, whether or not it existed (as Consul).
pub(super) async fn session_destroy(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        check_write(&access_of(access)).map_err(Refused::Response)?;
        let id = path_id(path, "session id")?;
        api.revoke(id).await?;
        Ok(axum::Json(true).into_response())
    };
    answer(&headers, result.await)
}

/// `PUT /v1/session/renew/<id>`: `[session]`, or 404.
pub(super) async fn session_renew(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        check_write(&access_of(access)).map_err(Refused::Response)?;
        let id = path_id(path, "session id")?;
        let lease = api.renew(id.clone()).await?.ok_or_else(|| no_such("session", &id))?;
        Ok(sessions_response(lease.modify_index, std::slice::from_ref(&lease)))
    };
    answer(&headers, result.await)
}

/// `GET /v1/session/info/<id>`: `[session]`, or `[]` when it does not exist (as Consul).
pub(super) async fn session_info(
    State(api): Shared,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let id = path_id(path, "session id")?;
        let stale = Query::parse(&uri).flag("stale");
        let (index, leases) = api.leases_where(stale, move |lease| lease.spec.id == id).await?;
        Ok(sessions_response(index, &leases))
    };
    answer(&headers, result.await)
}

/// `GET /v1/session/list`.
pub(super) async fn session_list(State(api): Shared, uri: Uri, headers: HeaderMap) -> Response {
    let result = async {
        let stale = Query::parse(&uri).flag("stale");
        let (index, leases) = api.leases_where(stale, |_| true).await?;
        Ok(sessions_response(index, &leases))
    };
    answer(&headers, result.await)
}

/// `GET /v1/session/node/<node>`.
pub(super) async fn session_node(
    State(api): Shared,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Path(node) = path.map_err(|error| ApiError::bad_request(format!("the node in the path: {error}")))?;
        check_label(&node, "the node", MAX_NODE_BYTES)?;
        let stale = Query::parse(&uri).flag("stale");
        let (index, leases) = api.leases_where(stale, move |lease| lease.spec.node == node).await?;
        Ok(sessions_response(index, &leases))
    };
    answer(&headers, result.await)
}

/// The fields a lease grant takes.
const LEASE_FIELDS: [&str; 2] = ["ttl", "name"];

/// `POST /v1/skiff/lease` (`{"TTL": "10s"}` or `?ttl=10s`): a lease, which is a session
/// with `Behavior` delete and no lock delay.
pub(super) async fn lease_grant(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        check_write(&access_of(access)).map_err(Refused::Response)?;
        let fields = read_fields(body, &headers).await?;
        if let Some(unknown) = fields.keys().find(|name| !LEASE_FIELDS.contains(&name.as_str())) {
            return Err(ApiError::bad_request(format!("unknown field {unknown:?}; a lease takes TTL and Name")).into());
        }
        let query = Query::parse(&uri);
        let ttl = match (string_field(&fields, "ttl", "TTL")?, query.get("ttl")) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("give the TTL in the body or in ?ttl=, not both").into());
            }
            (Some(ttl), None) | (None, Some(ttl)) => ttl,
            (None, None) => {
                return Err(ApiError::bad_request("a lease needs a TTL: {\"TTL\": \"10s\"} or ?ttl=10s").into());
            }
        };
        let ttl_ms = parse_ttl(ttl, MIN_LEASE_TTL_MS, false)?;
        let name = string_field(&fields, "name", "Name")?.unwrap_or("").to_string();
        check_label(&name, "Name", MAX_NAME_BYTES)?;
        let node = api.node.id().to_string();
        let spec = LeaseSpec { id: String::new(), name, node, ttl_ms, lock_delay_ms: 0, behavior: Behavior::Delete };
        let lease = api.grant(spec).await?;
        Ok(axum::Json(lease_json(&lease, api.published.now_ms())).into_response())
    };
    answer(&headers, result.await)
}

/// `PUT /v1/skiff/lease/<id>/keepalive`: the lease, or 404.
pub(super) async fn lease_keepalive(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        check_write(&access_of(access)).map_err(Refused::Response)?;
        let id = path_id(path, "lease id")?;
        let lease = api.renew(id.clone()).await?.ok_or_else(|| no_such("lease", &id))?;
        Ok(axum::Json(lease_json(&lease, api.published.now_ms())).into_response())
    };
    answer(&headers, result.await)
}

/// `GET /v1/skiff/lease/<id>`: the lease with the time it has left, or 404.
pub(super) async fn lease_get(
    State(api): Shared,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let id = path_id(path, "lease id")?;
        let stale = Query::parse(&uri).flag("stale");
        let wanted = id.clone();
        let (_, leases) = api.leases_where(stale, move |lease| lease.spec.id == wanted).await?;
        let lease = leases.first().ok_or_else(|| no_such("lease", &id))?;
        Ok(axum::Json(lease_json(lease, api.published.now_ms())).into_response())
    };
    answer(&headers, result.await)
}

/// `DELETE /v1/skiff/lease/<id>`: revokes it, deleting its keys; `true` if it existed,
/// `false` if it had already ended.
pub(super) async fn lease_revoke(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        check_write(&access_of(access)).map_err(Refused::Response)?;
        let id = path_id(path, "lease id")?;
        Ok(axum::Json(api.revoke(id).await?).into_response())
    };
    answer(&headers, result.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_as_consul_writes_them() {
        assert_eq!(go_duration_ms("10s"), Some(10_000));
        assert_eq!(go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(go_duration_ms("1.5s"), Some(1500));
        assert_eq!(go_duration_ms("250ms"), Some(250));
        assert_eq!(go_duration_ms("1h"), Some(3_600_000));
        assert_eq!(go_duration_ms("1ns"), Some(1), "rounded up, not to none");
        assert_eq!(go_duration_ms("0"), Some(0));
        assert_eq!(go_duration_ms("0s"), Some(0));
        for bad in ["", "10", "s", "10x", "-5s", "1e3s", ".s", "10s ", "99999999999999999999h"] {
            assert_eq!(go_duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_session_body_is_read_case_insensitively_with_consuls_defaults_and_bounds() {
        let spec = |body: &str| body_fields(body.as_bytes()).and_then(|fields| session_spec(&fields, "n1"));
        let defaults = spec("").expect("an empty body");
        assert_eq!((defaults.ttl_ms, defaults.lock_delay_ms, defaults.behavior), (0, 15_000, Behavior::Release));
        assert_eq!(defaults.node, "n1");
        // What py-consul sends.
        let given = spec(r#"{"name": "x", "lockdelay": "1s", "behavior": "delete", "ttl": "10s"}"#).expect("valid");
        assert_eq!((given.ttl_ms, given.lock_delay_ms, given.behavior), (10_000, 1000, Behavior::Delete));
        assert_eq!(spec(r#"{"LockDelay": 15000000000}"#).map(|spec| spec.lock_delay_ms).ok(), Some(15_000));
        assert_eq!(spec(r#"{"LockDelay": 2}"#).map(|spec| spec.lock_delay_ms).ok(), Some(2000), "seconds");
        for (body, says) in [
            (r#"{"TTL": "9s"}"#, "out of range"),
            (r#"{"TTL": "86401s"}"#, "out of range"),
            (r#"{"TTL": 10}"#, "must be a string"),
            (r#"{"LockDelay": "61s"}"#, "LockDelay"),
            (r#"{"Behavior": "keep"}"#, "neither"),
            (r#"{"Tll": "10s"}"#, "unknown field"),
            (r#"{"Checks": ["service:web"]}"#, "no health checks"),
            (r#"{"ttl": "10s", "TTL": "20s"}"#, "twice"),
            ("[1]", "JSON object"),
            ("{", "not valid JSON"),
        ] {
            let error = spec(body).expect_err(body);
            assert!(error.message.contains(says), "{body}: {}", error.message);
        }
        let long = format!(r#"{{"Name": "{}"}}"#, "x".repeat(MAX_NAME_BYTES + 1));
        assert!(spec(&long).is_err());
    }

    #[test]
    fn new_ids_are_version_4_uuids_and_ids_are_checked_as_uuids() {
        let id = new_id().expect("an id");
        assert_eq!(session_id(&id, "id").ok().as_deref(), Some(id.as_str()));
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(new_id().ok(), Some(id));
        for bad in
            ["", "..", "../../v1/kv/x", "8f246b77-f3e1-ff88-5b48-8ec93abf3e0", "8f246b77/f3e1-ff88-5b48-8ec93abf3e05"]
        {
            assert!(session_id(bad, "id").is_err(), "{bad:?}");
        }
    }
}
