//! `/v1/kv`: Consul's key-value routes (reads with blocking queries, writes with CAS,
//! deletes), and the request bodies and idempotency keys they take.

use super::*;

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

pub(super) async fn kv(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let access = access.map_or(Access::Open, |axum::Extension(access)| access);
    let result = match kv_key(uri.path()) {
        Err(error) => Err(Refusal::from(error)),
        Ok(key) => {
            let query = Query::parse(&uri);
            match method {
                Method::GET | Method::HEAD => kv_get(&api, &access, key, &query).await,
                Method::PUT if !access.can_write(key.as_bytes()) => Err(denied("write", &key)),
                Method::DELETE if !access.can_write(key.as_bytes()) => Err(denied("write", &key)),
                Method::PUT => kv_put(&api, key, &query, &headers, body).await.map_err(Refusal::from),
                Method::DELETE => kv_delete(&api, key, &query, &headers).await.map_err(Refusal::from),
                method => Err(Refusal::from(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on /v1/kv"),
                ))),
            }
        }
    };
    let mut response = match result {
        Ok(response) => return response,
        Err(Refusal::Denied(response)) => response,
        Err(Refusal::Error(error)) => error.into_response(),
    };
    // A refused PUT (a 403 too) may leave its body unread, and the server then drops the
    // connection: say so, so a client does not send its next request on a connection
    // being closed.
    if has_body(&headers) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Why a KV request was not served.
enum Refusal {
    Error(ApiError),
    /// Consul's plain-text 403.
    Denied(Response),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal::Error(error)
    }
}

fn denied(what: &str, key: &str) -> Refusal {
    let key: String = key.chars().take(200).collect();
    Refusal::Denied(permission_denied(&format!("the token may not {what} {key:?}")))
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

async fn kv_get(api: &Api, access: &Access, key: String, query: &Query) -> Result<Response, Refusal> {
    let prefix = query.flag("recurse") || query.flag("keys");
    // A single key must be readable; a listing shows only the keys that are (as Consul's
    // ACLs filter it).
    if !prefix && !access.can_read(key.as_bytes()) {
        return Err(denied("read", &key));
    }
    let names_only = query.flag("keys");
    let stale = query.flag("stale") && !query.flag("consistent");
    let separator = query.get("separator").filter(|s| !s.is_empty()).map(str::to_string);
    let wait_index = query.number("index")?;
    let wait = query.duration("wait")?.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
    if !prefix && key.is_empty() {
        return Err(ApiError::bad_request("a key is required (or ?recurse / ?keys for a prefix)").into());
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = api.applied.clone();
    applied.borrow_and_update();
    let found = loop {
        let (read_key, separator, access) = (key.clone(), separator.clone(), access.clone());
        let read = move |store: &KvStore| {
            collect(store, read_key.as_bytes(), prefix, names_only, separator.as_deref(), &access)
        };
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

/// Runs on the state machine: copies out what a read asked for, of the keys `access` may read.
fn collect(
    store: &KvStore,
    key: &[u8],
    prefix: bool,
    names_only: bool,
    separator: Option<&str>,
    access: &Access,
) -> Found {
    let index = store.watch_index(key, prefix);
    if !prefix {
        let entries =
            store.get(key).map(|entry| (Bytes::copy_from_slice(key), Value::from(entry))).into_iter().collect();
        return Found { index, entries, names: Vec::new() };
    }
    if !names_only {
        let entries = store
            .range(key)
            .filter(|entry| access.can_read(entry.key))
            .map(|entry| (Bytes::copy_from_slice(entry.key), Value::from(entry)))
            .collect();
        return Found { index, entries, names: Vec::new() };
    }
    let mut names: Vec<String> = Vec::new();
    for Entry { key: name, .. } in store.range(key).filter(|entry| access.can_read(entry.key)) {
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
pub(super) async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> ApiResult<Bytes> {
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
