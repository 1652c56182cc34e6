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
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let access = access.map_or(Access::Open, |axum::Extension(access)| access);
    // Without the connection's address (an embedding program's own server), all clients
    // count as one.
    let client = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |axum::Extension(info)| info.0.ip());
    let result = match kv_key(uri.path()) {
        Err(error) => Err(Refusal::from(error)),
        Ok(key) => {
            let query = Query::parse(&uri);
            match method {
                Method::GET | Method::HEAD => kv_get(&api, &access, client, key, &query).await,
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
    match result {
        Ok(response) => response,
        Err(Refusal::Denied(response) | Refusal::Busy(response)) => closing_if_body_unread(&headers, response),
        Err(Refusal::Error(error)) => closing_if_body_unread(&headers, error.into_response()),
    }
}

/// Why a KV request was not served.
pub(super) enum Refusal {
    Error(ApiError),
    /// Consul's plain-text 403.
    Denied(Response),
    /// A plain-text 429 with `Retry-After`: too many blocking queries.
    Busy(Response),
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal::Error(error)
    }
}

pub(super) fn denied(what: &str, key: &str) -> Refusal {
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
    entries: Vec<(Bytes, Value, Option<KeyLock>)>,
    /// With `?keys`: the key names (cut after the separator), instead of `entries`.
    names: Vec<String>,
}

async fn kv_get(
    api: &Api,
    access: &Access,
    client: std::net::IpAddr,
    key: String,
    query: &Query,
) -> Result<Response, Refusal> {
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
    let read = Read { key: key.clone(), prefix, names_only, separator, access: access.clone(), stale };
    let found = match wait_index {
        None => read.run(api).await?,
        Some(index) => {
            // A blocking query: wait for a change past `index`, or for `wait`. Its slot is
            // held until it answers; its watch is made before the first read, so a change
            // between the read and the wait is not missed.
            let _slot = api.blocking.enter(client).map_err(too_busy)?;
            let watch = api.published.watch(Bytes::from(key.clone()), prefix);
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let found = read.run(api).await?;
                if found.index > index || tokio::time::Instant::now() >= deadline {
                    break found;
                }
                // Woken only by a change to this key (or under this prefix), then read again.
                if tokio::time::timeout_at(deadline, watch.changed()).await.is_err() {
                    break found;
                }
            }
        }
    };
    let mut response = if found.entries.is_empty() && found.names.is_empty() {
        StatusCode::NOT_FOUND.into_response()
    } else if names_only {
        axum::Json(&found.names).into_response()
    } else if query.flag("raw") && !prefix {
        let value = found.entries.into_iter().next().map(|(_, value, _)| value.value).unwrap_or_default();
        ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response()
    } else {
        let entries: Vec<Json> =
            found.entries.iter().map(|(key, value, lock)| entry_json(key, value, lock.as_ref())).collect();
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

/// One KV read, as a request asked for it.
struct Read {
    key: String,
    prefix: bool,
    names_only: bool,
    separator: Option<String>,
    access: Access,
    stale: bool,
}

impl Read {
    /// Reads what was asked. One key is read on the apply thread (a lookup). A listing
    /// takes a view there (a reference count, see [`View`]) and walks it on a blocking
    /// thread, so that however many keys it copies, apply goes on meanwhile.
    async fn run(&self, api: &Api) -> ApiResult<Found> {
        if !self.prefix {
            let key = self.key.clone();
            return api.read(self.stale, move |store: &KvStore| one_key(store, key.as_bytes())).await;
        }
        let prefix = self.key.clone();
        let turn = crate::heavy::turn().await;
        let (view, deleted) = api
            .read(self.stale, move |store: &KvStore| (store.view(), store.deletion_index(prefix.as_bytes(), true)))
            .await?;
        let (prefix, names_only, separator, access) =
            (self.key.clone(), self.names_only, self.separator.clone(), self.access.clone());
        let budget = api.limits.max_listing_bytes;
        let listed = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            crate::watch::gate::pass(prefix.as_bytes());
            list(&view, prefix.as_bytes(), names_only, separator.as_deref(), &access, budget)
        })
        .await
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the listing failed: {error}")))?;
        let mut found = listed?;
        found.index = found.index.max(deleted);
        Ok(found)
    }
}

/// Runs on the state machine: the one key `key`, if it is there.
fn one_key(store: &KvStore, key: &[u8]) -> Found {
    let index = store.watch_index(key, false);
    let entries = store
        .get(key)
        .map(|entry| (Bytes::copy_from_slice(key), Value::from(entry), store.lock(key).cloned()))
        .into_iter()
        .collect();
    Found { index, entries, names: Vec::new() }
}

/// Copies out the keys under `key` that `access` may read (with `names_only`, their names cut
/// after `separator`), at most `budget` bytes of keys and values; its index is the keys'
/// part of the watch index. Refused with 413 past the budget.
fn list(
    view: &View,
    key: &[u8],
    names_only: bool,
    separator: Option<&str>,
    access: &Access,
    budget: usize,
) -> ApiResult<Found> {
    let index = view.live_index(key, true);
    let mut copied = 0usize;
    let mut spend = |bytes: usize| {
        copied = copied.saturating_add(bytes);
        if copied > budget {
            let message = format!(
                "the listing of {:?} holds more than the limit of {budget} bytes of keys and values \
                 (--max-listing-bytes): narrow the prefix, or list names with ?keys&separator=/",
                String::from_utf8_lossy(key)
            );
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Ok(())
    };
    if !names_only {
        let mut entries = Vec::new();
        for entry in view.range(key).filter(|entry| access.can_read(entry.key)) {
            spend(entry.key.len() + entry.value.len())?;
            entries.push((Bytes::copy_from_slice(entry.key), Value::from(entry), view.lock(entry.key).cloned()));
        }
        return Ok(Found { index, entries, names: Vec::new() });
    }
    let mut names: Vec<String> = Vec::new();
    for Entry { key: name, .. } in view.range(key).filter(|entry| access.can_read(entry.key)) {
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
            spend(name.len())?;
            names.push(name.to_string());
        }
    }
    Ok(Found { index, entries: Vec::new(), names })
}

/// The blocking queries under way on this node, in all and by client address, against
/// [`Limits::max_blocking_queries`] and [`Limits::max_blocking_queries_per_client`].
pub(super) struct Blocking {
    counts: Arc<std::sync::Mutex<BlockingCounts>>,
    per_node: usize,
    per_client: usize,
}

#[derive(Default)]
struct BlockingCounts {
    total: usize,
    by_client: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// A blocking query's place in the count, given back when it answers.
pub(super) struct BlockingSlot {
    counts: Arc<std::sync::Mutex<BlockingCounts>>,
    client: std::net::IpAddr,
}

/// What a client is told to wait before retrying a refused blocking query, in seconds.
const BLOCKING_RETRY_AFTER: &str = "5";

impl Blocking {
    pub(super) fn new(limits: &Limits) -> Blocking {
        Blocking {
            counts: Arc::default(),
            per_node: limits.max_blocking_queries,
            per_client: limits.max_blocking_queries_per_client,
        }
    }

    fn lock(counts: &std::sync::Mutex<BlockingCounts>) -> std::sync::MutexGuard<'_, BlockingCounts> {
        // Counts only: a panicking holder cannot leave them half-changed.
        counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The blocking queries under way.
    pub(super) fn count(&self) -> usize {
        Blocking::lock(&self.counts).total
    }

    /// A slot for a blocking query of `client`, or why not: which limit is reached.
    pub(super) fn enter(&self, client: std::net::IpAddr) -> Result<BlockingSlot, String> {
        let mut counts = Blocking::lock(&self.counts);
        let of_client = counts.by_client.get(&client).copied().unwrap_or(0);
        let refusal = if counts.total >= self.per_node {
            Some(format!(
                "too many blocking queries on this node: {} under way, the limit is {} \
                 (--max-blocking-queries); retry later or ask another node",
                counts.total, self.per_node
            ))
        } else if of_client >= self.per_client {
            Some(format!(
                "too many blocking queries from {client}: {of_client} under way, the limit per client address \
                 is {} (--max-blocking-queries-per-client); retry later",
                self.per_client
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            return Err(message);
        }
        counts.total += 1;
        *counts.by_client.entry(client).or_default() += 1;
        Ok(BlockingSlot { counts: Arc::clone(&self.counts), client })
    }
}

/// A blocking query refused for `message` (which limit): a plain-text 429 with `Retry-After`.
pub(super) fn too_busy(message: String) -> Refusal {
    let response = (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::RETRY_AFTER, BLOCKING_RETRY_AFTER)],
        message,
    );
    Refusal::Busy(response.into_response())
}

impl Drop for BlockingSlot {
    fn drop(&mut self) {
        let mut counts = Blocking::lock(&self.counts);
        counts.total -= 1;
        if let Some(count) = counts.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.by_client.remove(&self.client);
            }
        }
    }
}

/// A KV entry as Consul shows it: with `Session` while a session holds the key (a lock, or a
/// put with `?lease`), and Skiff's `Fence` while it is held as a lock.
fn entry_json(key: &[u8], value: &Value, lock: Option<&KeyLock>) -> Json {
    let encoded = (!value.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&value.value));
    let mut entry = json!({
        "Key": String::from_utf8_lossy(key),
        "Value": encoded,
        "CreateIndex": value.create_index,
        "ModifyIndex": value.modify_index,
        "LockIndex": lock.map_or(0, |lock| lock.lock_index),
        "Flags": value.flags,
    });
    if let Some(holder) = lock.and_then(|lock| lock.holder.as_ref()) {
        entry["Session"] = json!(holder.lease);
        if holder.fence > 0 {
            entry["Fence"] = json!(holder.fence);
        }
    }
    entry
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
    /// Consul's `true` / `false`; a successful `?acquire` also answers its fencing token in
    /// `Skiff-Fence`. An unknown session is a 400, a stale fencing token a 409.
    async fn write(&self, op: Op, headers: &HeaderMap) -> ApiResult {
        let request = request_id(headers, &op)?;
        match self.propose_op(op, request).await? {
            Output::Done { ok, .. } => Ok(axum::Json(ok).into_response()),
            Output::Acquired { ok, fence } => {
                let mut response = axum::Json(ok).into_response();
                if ok {
                    response.headers_mut().insert(FENCE_HEADER, HeaderValue::from(fence));
                }
                Ok(response)
            }
            Output::Refused(message) if message.starts_with(NO_SUCH_LEASE) => Err(ApiError::bad_request(message)),
            Output::Refused(message) if message.starts_with(STALE_FENCE) => {
                Err(ApiError::new(StatusCode::CONFLICT, message))
            }
            other => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected output of a put or delete: {other:?}"),
            )),
        }
    }
}

/// The header that carries a fencing token: on a request, as `?fence=`; on the answer of a
/// successful `?acquire`, the token.
const FENCE_HEADER: &str = "Skiff-Fence";

/// The fencing token a write carries (`?fence=` or `Skiff-Fence`), checked before anything
/// is read or proposed.
fn fence_token(query: &Query, headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let parse = |text: &str, what: &str| -> ApiResult<u64> {
        let shown: String = text.chars().take(40).collect();
        text.parse::<u64>().ok().filter(|token| *token > 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} {shown:?} is not a fencing token: a whole number from 1 (the Skiff-Fence of an ?acquire)"
            ))
        })
    };
    let from_query = query.get("fence").map(|text| parse(text, "?fence=")).transpose()?;
    let from_header = match headers.get(FENCE_HEADER) {
        None => None,
        Some(value) => Some(parse(value.to_str().unwrap_or(""), FENCE_HEADER)?),
    };
    match (from_query, from_header) {
        (Some(query), Some(header)) if query != header => {
            Err(ApiError::bad_request(format!("?fence={query} and {FENCE_HEADER}: {header} disagree")))
        }
        (query, header) => Ok(query.or(header)),
    }
}

/// `op`, fenced by `token` if the request carries one.
fn fenced(op: Op, token: Option<u64>) -> Op {
    match token {
        Some(token) => Op::Fenced { token, op: Box::new(op) },
        None => op,
    }
}

/// Which kind of put a request asks for: plain (with `?cas`), `?acquire`, `?release` or
/// `?lease`, which exclude each other and `?cas`.
enum PutKind {
    Plain(Option<u64>),
    Acquire(String),
    Release(String),
    Leased(String),
}

fn put_kind(query: &Query) -> ApiResult<PutKind> {
    let cas = query.number("cas")?;
    let mut kinds = Vec::new();
    for name in ["acquire", "release", "lease"] {
        if let Some(id) = query.get(name) {
            let what = format!("?{name}=");
            kinds.push((name, crate::http::session::session_id(id, &what)?));
        }
    }
    let named: Vec<String> =
        kinds.iter().map(|(name, _)| format!("?{name}")).chain(cas.map(|_| "?cas".into())).collect();
    if named.len() > 1 {
        return Err(ApiError::bad_request(format!("{} cannot be combined; nothing was written", named.join(" and "))));
    }
    Ok(match kinds.pop() {
        None => PutKind::Plain(cas),
        Some(("acquire", id)) => PutKind::Acquire(id),
        Some(("release", id)) => PutKind::Release(id),
        Some((_, id)) => PutKind::Leased(id),
    })
}

async fn kv_put(api: &Api, key: String, query: &Query, headers: &HeaderMap, body: Body) -> ApiResult {
    api.check_key(&key)?;
    let kind = put_kind(query)?;
    let fence = fence_token(query, headers)?;
    let flags = query.number("flags")?.unwrap_or(0);
    let value = read_body(body, headers, api.limits.max_value_bytes).await?;
    let key = Bytes::from(key);
    let op = match kind {
        PutKind::Plain(cas) => Op::Put { key, value, flags, cas },
        PutKind::Acquire(session) => Op::Acquire { key, value, flags, session },
        PutKind::Release(session) => Op::Release { key, value, flags, session },
        PutKind::Leased(lease) => Op::PutLeased { key, value, flags, lease },
    };
    api.write(fenced(op, fence), headers).await
}

async fn kv_delete(api: &Api, key: String, query: &Query, headers: &HeaderMap) -> ApiResult {
    let fence = fence_token(query, headers)?;
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
    api.write(fenced(op, fence), headers).await
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
pub(super) fn request_id(headers: &HeaderMap, op: &Op) -> ApiResult<Option<RequestId>> {
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
