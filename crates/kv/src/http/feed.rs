//! `GET /v1/skiff/watch`: the change feed (`docs/http-api.md`). A stream of every change
//! under a prefix after an index, in log order, from the node's history
//! ([`crate::feed::Feed`]); when the history no longer reaches back to that index, a
//! consistent snapshot of the prefix first, then the changes after it. So a client never
//! meets a "compacted" dead end.
//!
//! A stream is pulled by its connection: it reads the history only when the client has taken
//! what was sent, so a slow client costs no buffer here; how far behind it is, in bytes of
//! events not yet sent, is checked at each read against [`Limits::feed_max_lag_bytes`].
//! When the client goes away the body is dropped, and with it the stream's slot.

use std::convert::Infallible;

use super::*;
use crate::feed::{Event, Feed, Read as FeedRead};
use crate::state::Keyspace;

/// A stream sends at most about this many bytes of events or snapshot keys per chunk.
const CHUNK_BYTES: usize = 256 << 10;
/// With nothing to send for this long, a stream sends a `progress` event (its cursor), which
/// also finds out whether the client is still there.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// The two formats: Server-Sent Events (the default) and newline-delimited JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Sse,
    Ndjson,
}

pub(super) async fn watch(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    client: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let access = access.map_or(Access::Open, |axum::Extension(access)| access);
    let client = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |axum::Extension(info)| info.0.ip());
    match start(api, access, client, &uri, &headers).await {
        Ok(response) => response,
        Err(Refusal::Denied(response) | Refusal::Busy(response)) => response,
        Err(Refusal::Error(error)) => error.into_response(),
    }
}

/// What a request asks for, checked.
struct Ask {
    prefix: String,
    /// Stream the changes after this index; `None`: from now on.
    index: Option<u64>,
    prev: bool,
    format: Format,
}

fn parse(uri: &Uri, headers: &HeaderMap, max_key_bytes: usize) -> ApiResult<Ask> {
    let query = Query::parse(uri);
    let prefix = query.get("prefix").unwrap_or("").to_string();
    if prefix.len() > max_key_bytes {
        return Err(ApiError::bad_request(format!(
            "the prefix is {} bytes, longer than the longest key ({max_key_bytes} bytes, --max-key-bytes)",
            prefix.len()
        )));
    }
    let index = match query.number("index")? {
        Some(index) => Some(index),
        None => match headers.get("Last-Event-ID") {
            None => None,
            Some(value) => {
                Some(value.to_str().ok().and_then(|text| text.trim().parse().ok()).ok_or_else(|| {
                    ApiError::bad_request("the Last-Event-ID header is not an index (a whole number)")
                })?)
            }
        },
    };
    let prev = match query.get("prev") {
        None | Some("false" | "0") => false,
        Some("" | "true" | "1") => true,
        Some(other) => return Err(ApiError::bad_request(format!("prev={other:?} is not true or false"))),
    };
    let ndjson = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/x-ndjson"));
    let format = if ndjson { Format::Ndjson } else { Format::Sse };
    Ok(Ask { prefix, index, prev, format })
}

async fn start(
    api: Arc<Api>,
    access: Access,
    client: std::net::IpAddr,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let ask = parse(uri, headers, api.limits.max_key_bytes)?;
    if !access.can_read(ask.prefix.as_bytes()) {
        return Err(denied("read", &ask.prefix));
    }
    let slot = api.blocking.enter(client).map_err(too_busy)?;
    let feed_changed = api.published.feed().subscribe();
    // Where the stream starts: after `index` if the history still holds everything after it;
    // otherwise (or from now on, without an index) after a linearizable read barrier, with a
    // view of the keyspace taken on the apply thread at that point. The history takes in
    // each entry on the apply thread as it is applied, so it holds exactly the changes up to
    // the view's index, and the stream goes on after it.
    let phase = match ask.index {
        Some(index) if index >= api.published.feed().floor() => Phase::Live,
        Some(_) => {
            let view = api.read(false, |store: &KvStore| store.view()).await?;
            Phase::Snapshot { view, after: None }
        }
        None => Phase::Live,
    };
    let cursor = match (&phase, ask.index) {
        (Phase::Snapshot { view, .. }, _) => view.index(),
        (_, Some(index)) => index,
        (_, None) => api.read(false, |store: &KvStore| store.index()).await?,
    };
    let content_type = match ask.format {
        Format::Sse => "text/event-stream",
        Format::Ndjson => "application/x-ndjson",
    };
    let stream = Stream {
        max_lag: api.limits.feed_max_lag_bytes,
        api,
        feed_changed,
        prefix: Bytes::from(ask.prefix),
        access,
        prev: ask.prev,
        format: ask.format,
        cursor,
        phase,
        least_left: None,
        _slot: slot,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), stream))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Where a stream is.
enum Phase {
    /// Sending the keys of a view after `after`, then `snapshot-end`.
    Snapshot { view: View, after: Option<Bytes> },
    /// Sending the history's events after the cursor.
    Live,
    /// The stream ended (it was cut).
    Done,
}

struct Stream {
    api: Arc<Api>,
    feed_changed: tokio::sync::watch::Receiver<u64>,
    prefix: Bytes,
    access: Access,
    prev: bool,
    format: Format,
    /// Every change under the prefix up to this index was sent.
    cursor: u64,
    phase: Phase,
    max_lag: u64,
    /// The least backlog (bytes of events after what it sent) the stream has had.
    least_left: Option<u64>,
    /// The stream's place in the count of blocking queries and streams, held while it lives.
    _slot: BlockingSlot,
}

impl Stream {
    fn feed(&self) -> &Feed {
        self.api.published.feed()
    }

    /// The next bytes to send; `None` once the stream ended.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        match &self.phase {
            Phase::Done => None,
            Phase::Snapshot { .. } => Some(self.snapshot_chunk()),
            Phase::Live => Some(self.live_chunk().await),
        }
    }

    /// The next keys of the snapshot, and `snapshot-end` after the last.
    fn snapshot_chunk(&mut self) -> Bytes {
        let Phase::Snapshot { view, after } = &mut self.phase else { return Bytes::new() };
        let mut out = String::new();
        let index = view.index();
        let mut last = None;
        for entry in view.after(Some(after.as_deref().unwrap_or(&self.prefix))) {
            if !entry.key.starts_with(&self.prefix) {
                break;
            }
            last = Some(Bytes::copy_from_slice(entry.key));
            if !self.access.can_read(entry.key) {
                continue;
            }
            frame(&mut out, self.format, None, &snapshot_event(index, &entry));
            if out.len() >= CHUNK_BYTES {
                break;
            }
        }
        // The prefix itself may be a key: `after` skips it, so look at it once, first.
        if after.is_none()
            && let Some(entry) = view.get(&self.prefix)
            && self.access.can_read(entry.key)
        {
            let mut first = String::new();
            frame(&mut first, self.format, None, &snapshot_event(index, &entry));
            out.insert_str(0, &first);
        }
        match last {
            Some(key) if out.len() >= CHUNK_BYTES => *after = Some(key),
            _ => {
                frame(&mut out, self.format, Some(index), &json!({ "type": "snapshot-end", "index": index }));
                self.cursor = index;
                self.phase = Phase::Live;
            }
        }
        Bytes::from(out)
    }

    /// The next events after the cursor, waiting for some; or a `progress` event after a
    /// quiet while; or the `cut` that ends the stream.
    async fn live_chunk(&mut self) -> Bytes {
        loop {
            self.feed_changed.borrow_and_update();
            let read = self.feed().read(self.cursor, CHUNK_BYTES as u64);
            let (events, upto) = match read {
                FeedRead::Gone { floor } => {
                    let why = format!("the history now starts after index {floor}: resume to get a snapshot first");
                    return self.cut("behind", &why);
                }
                FeedRead::Events { events, upto, left_bytes, .. } => {
                    // The backlog a stream started with (a resume from an old index) is its
                    // to catch up on; it is cut only when its backlog grows by more than the
                    // limit above the least it has been: when its client stops keeping up.
                    let least = *self.least_left.get_or_insert(left_bytes);
                    if left_bytes > least.saturating_add(self.max_lag) {
                        let why = format!(
                            "the stream fell {} bytes of events further behind, more than --feed-max-lag-bytes {}",
                            left_bytes - least,
                            self.max_lag
                        );
                        return self.cut("slow", &why);
                    }
                    self.least_left = Some(least.min(left_bytes));
                    (events, upto)
                }
            };
            let matching: Vec<&Event> = events
                .iter()
                .map(|event| event.as_ref())
                .filter(|event| event.key.starts_with(&self.prefix) && self.access.can_read(&event.key))
                .collect();
            self.cursor = upto;
            if !matching.is_empty() {
                let mut out = String::new();
                for (at, event) in matching.iter().enumerate() {
                    // The id (where to resume) only at an entry's last event: the events of
                    // one entry share its index.
                    let last_of_entry = matching.get(at + 1).is_none_or(|next| next.index != event.index);
                    frame(&mut out, self.format, last_of_entry.then_some(event.index), &event_json(event, self.prev));
                }
                return Bytes::from(out);
            }
            if !events.is_empty() {
                continue;
            }
            let node = Arc::clone(&self.api.node);
            let woken = tokio::select! {
                changed = tokio::time::timeout(PROGRESS_EVERY, self.feed_changed.changed()) => match changed {
                    Ok(Ok(())) => Wake::Changed,
                    Ok(Err(_)) => Wake::Stopped,
                    Err(_) => Wake::Quiet,
                },
                // No change will come once the node stopped, and the server waits for its
                // connections to end.
                _ = node.stopped() => Wake::Stopped,
            };
            match woken {
                Wake::Changed => continue,
                Wake::Stopped => return self.cut("shutdown", "the node is shutting down"),
                Wake::Quiet => {
                    let mut out = String::new();
                    let progress = json!({ "type": "progress", "index": self.cursor });
                    frame(&mut out, self.format, Some(self.cursor), &progress);
                    return Bytes::from(out);
                }
            }
        }
    }

    /// The last event: where to resume, and why the stream ends.
    fn cut(&mut self, reason: &str, message: &str) -> Bytes {
        self.phase = Phase::Done;
        let mut out = String::new();
        let cut = json!({ "type": "cut", "resume_from": self.cursor, "reason": reason, "message": message });
        frame(&mut out, self.format, Some(self.cursor), &cut);
        Bytes::from(out)
    }
}

/// An event as the feed shows it.
fn event_json(event: &Event, prev: bool) -> Json {
    let mut json = json!({
        "type": event.kind.name(),
        "index": event.index,
        "key": String::from_utf8_lossy(&event.key),
        "create_index": event.create_index,
        "modify_index": event.index,
        "flags": event.flags,
    });
    if event.kind == crate::feed::Kind::Put {
        json["value"] = json!(base64::engine::general_purpose::STANDARD.encode(&event.value));
    }
    if prev {
        json["prev_value"] =
            json!(event.prev.as_ref().map(|value| base64::engine::general_purpose::STANDARD.encode(value)));
    }
    json
}

/// What ends a stream's wait for changes.
enum Wake {
    Changed,
    /// The node stopped.
    Stopped,
    /// Nothing changed for [`PROGRESS_EVERY`].
    Quiet,
}

/// A key of a stream's snapshot, as of `index`.
fn snapshot_event(index: u64, entry: &crate::state::Entry<'_>) -> Json {
    json!({
        "type": "snapshot",
        "index": index,
        "key": String::from_utf8_lossy(entry.key),
        "value": base64::engine::general_purpose::STANDARD.encode(entry.value),
        "create_index": entry.create_index,
        "modify_index": entry.modify_index,
        "flags": entry.flags,
    })
}

/// Appends one event in `format`: SSE's `id:` (when given) and `data:` lines and a blank
/// line, or one line of JSON.
fn frame(out: &mut String, format: Format, id: Option<u64>, json: &Json) {
    use std::fmt::Write as _;
    match format {
        Format::Sse => {
            if let Some(id) = id {
                let _ = writeln!(out, "id: {id}");
            }
            // Compact JSON has no newline in it: one `data:` line.
            let _ = write!(out, "data: {json}\n\n");
        }
        Format::Ndjson => {
            let _ = writeln!(out, "{json}");
        }
    }
}
