//! [`Watch`]: the change feed (`GET /v1/skiff/watch`, docs/http-api.md) read as NDJSON, as
//! an iterator of events that resumes by itself when its stream ends.
//!
//! Where to resume. The feed's `index=N` means "every change after `N`", and the changes of
//! one log entry (a transaction, a `delete-tree`) share the entry's index, so a stream may
//! only be resumed from an index whose entry the reader has whole. NDJSON has no SSE `id:`
//! line saying where an entry ends, so the reader counts an entry as whole when something
//! after it arrives: an event of a later index, `snapshot-end`, `progress` or `cut` (these
//! three name an index up to which everything was sent). When a stream breaks, the reader
//! resumes after the last whole entry, and drops as many events of the entry it was in the
//! middle of as it had already delivered (every node records the same events, in the same
//! order, for the same entry). So the caller sees no event missing and none twice.
//!
//! A snapshot broken off part way cannot be finished (a new stream may start with another
//! snapshot, at another index, or with no snapshot at all). The reader then reads the prefix
//! whole with a linearizable list (`GET /v1/kv/<prefix>?recurse`), hands it on as a new
//! snapshot at the list's `X-Consul-Index` (the last change under the prefix, so the prefix
//! is the same at that index as at the read), and streams the changes after that index.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use ureq::http::Method;

use crate::api::Entry;
use crate::error::{Error, Result};
use crate::transport::{Call, Retry, StreamRefused, Transport, encode_key};

/// The longest line read by default: the largest value the server accepts
/// (`--max-value-bytes` may be raised to about 16 MiB) in base64, twice (`prev_value`), with
/// room to spare.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// How long a stream may stay silent before it counts as lost: the server sends a
/// `progress` event after 15 s without a change, so three of those missed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// The first pause after every endpoint failed in a row, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The read buffer of a stream.
const BUFFER_BYTES: usize = 64 << 10;

/// How [`Client::feed`](crate::Client::feed) follows a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Deliver the changes after this index (an index a previous watch delivered whole: a
    /// [`FeedEvent::SnapshotEnd`], [`FeedEvent::Progress`], or the index before an event's;
    /// see [`Watch::resume_index`]). `None`: the changes from now on. An index older than
    /// the answering node's history starts with a snapshot of the prefix.
    pub from: Option<u64>,
    /// Ask for each change's previous value ([`KeyChange::prev_value`]).
    pub prev: bool,
    /// A line of the stream longer than this is an error ([`Error::Decode`]), not an
    /// allocation. Default [`DEFAULT_MAX_LINE_BYTES`].
    pub max_line_bytes: usize,
    /// Give up (the iterator yields the last error, then ends) when no stream could be
    /// opened for this long after one ended. `None` (the default): keep trying.
    pub give_up_after: Option<Duration>,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions { from: None, prev: false, max_line_bytes: DEFAULT_MAX_LINE_BYTES, give_up_after: None }
    }
}

/// A key as a change or a snapshot shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// The log index of the change (of the snapshot, for a snapshot's key).
    pub index: u64,
    /// The key (a key that is not UTF-8, written through Redis, has replacement characters).
    pub key: String,
    /// The value written (empty for a deletion or an expiry).
    pub value: Vec<u8>,
    /// The index that created the key (of the deleted key, for a deletion).
    pub create_index: u64,
    /// The index of the key's last write: the change's own index for a change.
    pub modify_index: u64,
    /// The key's flags.
    pub flags: u64,
    /// With [`WatchOptions::prev`], for a change: `Some(None)` if the key did not exist
    /// before, `Some(Some(value))` otherwise. `None` without `prev` and for snapshot keys.
    pub prev_value: Option<Option<Vec<u8>>>,
}

/// One item of a [`Watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedEvent {
    /// A write of a key.
    Put(KeyChange),
    /// A deletion of a key.
    Delete(KeyChange),
    /// A deletion because the key's TTL passed.
    Expire(KeyChange),
    /// A snapshot of the prefix at `index` begins (the reader's own marker, before the
    /// first [`FeedEvent::Snapshot`]): start again from an empty prefix.
    SnapshotBegin {
        /// The snapshot's index.
        index: u64,
    },
    /// A key as it is at the snapshot's index.
    Snapshot(KeyChange),
    /// The snapshot was the whole prefix at `index`; the changes after it follow.
    SnapshotEnd {
        /// The snapshot's index.
        index: u64,
    },
    /// Every change up to `index` was delivered (sent after a quiet while).
    Progress {
        /// A place to resume from.
        index: u64,
    },
    /// The stream ended (`reason`) and a new one began at `endpoint`, with the changes after
    /// `from` (the reader's own marker: nothing is missing or repeated around it).
    Resumed {
        /// The index the new stream starts after.
        from: u64,
        /// The node of the new stream (`host:port`).
        endpoint: String,
        /// Why the previous stream ended.
        reason: String,
    },
}

impl FeedEvent {
    /// The change or snapshot key the event carries, if it carries one.
    pub fn change(&self) -> Option<&KeyChange> {
        match self {
            FeedEvent::Put(change) | FeedEvent::Delete(change) | FeedEvent::Expire(change) => Some(change),
            FeedEvent::Snapshot(change) => Some(change),
            _ => None,
        }
    }
}

/// The changes under a prefix, from [`Client::feed`](crate::Client::feed): an iterator of
/// [`FeedEvent`]s that blocks until the next arrives and never ends by itself.
///
/// When its stream ends (the server's `cut`, a node stopped or restarted, a lost or silent
/// connection: none for 45 s while the server sends `progress` every 15 s), it opens a
/// new one, at the same endpoint or the next, from the last index it delivered whole, and
/// yields [`FeedEvent::Resumed`]; see the module's rules. It gives up only on an error that
/// another attempt would not mend (an `Err`, then `None`): the request refused (400 for a
/// prefix longer than the server's longest key, 403), an answer that is not the feed, a
/// line longer than [`WatchOptions::max_line_bytes`]; or after
/// [`WatchOptions::give_up_after`].
pub struct Watch {
    transport: Arc<Transport>,
    prefix: String,
    options: WatchOptions,
    /// The client's timeout: for a stream's headers, and the first stream's attempts.
    timeout: Duration,
    /// The endpoint (an index into the transport's) to try next.
    at: usize,
    stream: Option<Stream>,
    /// Every change up to this index was delivered.
    complete: u64,
    /// The entry being delivered (after `complete`) and how many of its events were.
    partial: Option<(u64, usize)>,
    /// After a resume: the entry that was broken off, and how many of its events, re-sent,
    /// are still to be dropped.
    skip: Option<(u64, usize)>,
    /// Inside a snapshot (its keys are being delivered).
    in_snapshot: bool,
    /// Why the last stream ended, until the next one starts.
    broken: Option<String>,
    queued: VecDeque<FeedEvent>,
    finished: bool,
}

/// An open stream.
struct Stream {
    endpoint: String,
    reader: BufReader<ureq::BodyReader<'static>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("complete", &self.complete)
            .field("endpoint", &self.stream.as_ref().map(|stream| &stream.endpoint))
            .finish_non_exhaustive()
    }
}

/// One line of the feed.
#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    index: Option<u64>,
    key: Option<String>,
    value: Option<String>,
    create_index: Option<u64>,
    modify_index: Option<u64>,
    flags: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    prev_value: Option<Option<String>>,
    resume_from: Option<u64>,
    reason: Option<String>,
    message: Option<String>,
}

/// A field that may be `null`: `Some(None)` then, `None` (by `default`) when absent.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Why a line could not be read.
enum ReadFailure {
    /// The stream broke: resume.
    Broken(String),
    /// The stream cannot be read: give up.
    Final(Error),
}

impl Watch {
    /// Opens the first stream, from `from` (resolved by the caller), within the client's
    /// timeout; a refusal is returned here.
    pub(crate) fn open(
        transport: Arc<Transport>,
        prefix: &str,
        options: WatchOptions,
        from: u64,
        timeout: Duration,
    ) -> Result<Watch> {
        let at = transport.current();
        let mut watch = Watch {
            transport,
            prefix: prefix.to_string(),
            options,
            timeout,
            at,
            stream: None,
            complete: from,
            partial: None,
            skip: None,
            in_snapshot: false,
            broken: None,
            queued: VecDeque::new(),
            finished: false,
        };
        watch.connect(Some(timeout))?;
        Ok(watch)
    }

    /// The index a new watch would resume from to see every event after the last one
    /// this one yielded, once: the last index delivered whole. (The events of an entry
    /// broken off are then delivered again; within one `Watch` they never are.)
    pub fn resume_index(&self) -> u64 {
        self.complete
    }

    /// The node of the current stream (`host:port`), if one is open.
    pub fn endpoint(&self) -> Option<&str> {
        self.stream.as_ref().map(|stream| stream.endpoint.as_str())
    }

    /// Opens a stream after `complete` (after a new snapshot first, if one was broken off),
    /// trying the endpoints in turn for up to `deadline` (`None`: until one answers).
    fn connect(&mut self, patience: Option<Duration>) -> Result<()> {
        let deadline = patience.map(|patience| Instant::now() + patience);
        let count = self.transport.endpoints().len();
        let mut failed_in_a_row = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = if self.in_snapshot { self.list_snapshot() } else { self.start_stream() };
            let error = match attempt {
                Ok(()) if self.stream.is_some() => return Ok(()),
                Ok(()) => continue,
                Err(StreamRefused::Final(error)) => return Err(error),
                Err(StreamRefused::Transient(error)) => error,
            };
            tracing::debug!(%error, "the change feed could not be opened; trying again");
            self.at += 1;
            failed_in_a_row += 1;
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(error);
            }
            if failed_in_a_row % count == 0 {
                let pause = match deadline {
                    Some(deadline) => backoff.min(deadline.saturating_duration_since(Instant::now())),
                    None => backoff,
                };
                std::thread::sleep(pause);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// One attempt to open a stream after `complete` at the endpoint `at`.
    fn start_stream(&mut self) -> Result<(), StreamRefused> {
        let mut path = format!("/v1/skiff/watch?prefix={}&index={}", encode_key(&self.prefix), self.complete);
        if self.options.prev {
            path.push_str("&prev=true");
        }
        let opened = self.transport.open_stream(self.at, &path, "application/x-ndjson", self.timeout, IDLE_TIMEOUT)?;
        if let Some(reason) = self.broken.take() {
            let endpoint = opened.endpoint.clone();
            self.queued.push_back(FeedEvent::Resumed { from: self.complete, endpoint, reason });
        }
        let reader = BufReader::with_capacity(BUFFER_BYTES, opened.body);
        self.stream = Some(Stream { endpoint: opened.endpoint, reader });
        Ok(())
    }

    /// Reads the prefix whole (linearizable) and queues it as a new snapshot at the list's
    /// `X-Consul-Index` (the last change under the prefix, deletions included: the prefix is
    /// the same at that index as when it was read), from which the next stream goes on.
    fn list_snapshot(&mut self) -> Result<(), StreamRefused> {
        let path = format!("/v1/kv/{}?recurse", encode_key(&self.prefix));
        let call = Call {
            method: Method::GET,
            path: &path,
            body: None,
            idempotency_key: None,
            retry: Retry::Safe,
            timeout: self.timeout,
        };
        let reply = self.transport.call(&call).map_err(StreamRefused::Transient)?;
        let Some(index) = reply.index else {
            return Err(StreamRefused::Final(reply.decode_error("a listing without X-Consul-Index".to_string())));
        };
        let entries: Vec<Entry> = if reply.status == 404 {
            Vec::new()
        } else {
            let transient = matches!(reply.status, 429 | 500..=599);
            let reply = reply.success().map_err(|error| match transient {
                true => StreamRefused::Transient(error),
                false => StreamRefused::Final(error),
            })?;
            reply.json().map_err(StreamRefused::Final)?
        };
        self.queued.push_back(FeedEvent::SnapshotBegin { index });
        for entry in entries {
            self.queued.push_back(FeedEvent::Snapshot(KeyChange {
                index,
                key: entry.key,
                value: entry.value,
                create_index: entry.create_index,
                modify_index: entry.modify_index,
                flags: entry.flags,
                prev_value: None,
            }));
        }
        self.queued.push_back(FeedEvent::SnapshotEnd { index });
        self.in_snapshot = false;
        self.complete = index;
        self.partial = None;
        self.skip = None;
        Ok(())
    }

    /// The next line of the stream, without its newline; `Ok(None)` at its end.
    fn read_line(&mut self) -> Result<Option<Vec<u8>>, ReadFailure> {
        let Some(stream) = &mut self.stream else { return Ok(None) };
        let limit = self.options.max_line_bytes.saturating_add(1) as u64;
        let mut line = Vec::new();
        let read = (&mut stream.reader).take(limit).read_until(b'\n', &mut line);
        match read {
            Ok(0) => Ok(None),
            Ok(_) if line.last() == Some(&b'\n') => {
                line.pop();
                Ok(Some(line))
            }
            Ok(_) if line.len() as u64 >= limit => Err(ReadFailure::Final(Error::Decode {
                endpoint: stream.endpoint.clone(),
                status: 200,
                detail: format!("a line of the change feed is longer than {} bytes", self.options.max_line_bytes),
            })),
            Ok(_) => Err(ReadFailure::Broken("the stream ended in the middle of a line".to_string())),
            Err(error) => Err(ReadFailure::Broken(format!("{}: {error}", stream.endpoint))),
        }
    }

    /// The stream ended without a `cut`: resume after the last whole entry, dropping the
    /// events of the broken-off one that were delivered already.
    fn break_off(&mut self, reason: String) {
        self.stream = None;
        self.broken = Some(reason);
        if let Some(partial) = self.partial {
            self.skip = Some(partial);
        }
    }

    /// Takes in one line: queues what the caller is to see, and notes where to resume.
    fn take(&mut self, bytes: &[u8]) -> Result<()> {
        let endpoint = self.stream.as_ref().map_or_else(String::new, |stream| stream.endpoint.clone());
        let invalid = |detail: String| Error::Decode { endpoint: endpoint.clone(), status: 200, detail };
        let line: Line = serde_json::from_slice(bytes).map_err(|error| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            invalid(format!("{error}: {text}"))
        })?;
        let index = |line: &Line| line.index.ok_or_else(|| invalid(format!("a {} event without an index", line.kind)));
        match line.kind.as_str() {
            "put" | "delete" | "expire" => {
                let at = index(&line)?;
                if at <= self.complete || self.partial.is_some_and(|(entry, _)| at < entry) {
                    return Err(invalid(format!("an event at index {at} after the events up to {}", self.complete)));
                }
                if let Some((entry, left)) = self.skip {
                    if at == entry && left > 0 {
                        self.skip = Some((entry, left - 1));
                        return Ok(());
                    }
                    if left > 0 {
                        return Err(invalid(format!("entry {entry} was sent again with fewer events than before")));
                    }
                    self.skip = None;
                }
                match self.partial {
                    Some((entry, delivered)) if entry == at => self.partial = Some((entry, delivered + 1)),
                    Some((entry, _)) => {
                        self.complete = entry;
                        self.partial = Some((at, 1));
                    }
                    None => self.partial = Some((at, 1)),
                }
                let change = change(&line, at, &invalid)?;
                self.queued.push_back(match line.kind.as_str() {
                    "put" => FeedEvent::Put(change),
                    "delete" => FeedEvent::Delete(change),
                    _ => FeedEvent::Expire(change),
                });
            }
            "snapshot" => {
                let at = index(&line)?;
                self.begin_snapshot(at);
                let mut change = change(&line, at, &invalid)?;
                change.prev_value = None;
                self.queued.push_back(FeedEvent::Snapshot(change));
            }
            "snapshot-end" => {
                let at = index(&line)?;
                self.begin_snapshot(at);
                self.in_snapshot = false;
                self.whole_up_to(at);
                self.queued.push_back(FeedEvent::SnapshotEnd { index: at });
            }
            "progress" => {
                let at = index(&line)?;
                if at < self.complete || self.partial.is_some_and(|(entry, _)| at < entry) {
                    return Err(invalid(format!("progress at {at} after the events up to {}", self.complete)));
                }
                self.whole_up_to(at);
                self.queued.push_back(FeedEvent::Progress { index: at });
            }
            "cut" => {
                let at = line.resume_from.ok_or_else(|| invalid("a cut without resume_from".to_string()))?;
                if at < self.complete || self.partial.is_some_and(|(entry, _)| at < entry) {
                    return Err(invalid(format!("a cut at {at} after the events up to {}", self.complete)));
                }
                if !self.in_snapshot {
                    self.whole_up_to(at);
                }
                self.stream = None;
                let reason = line.reason.as_deref().unwrap_or("cut");
                let message = line.message.as_deref().unwrap_or("");
                self.broken = Some(format!("the node cut the stream ({reason}): {message}"));
            }
            // A type this client does not know: from a newer server; nothing to deliver.
            _ => {}
        }
        Ok(())
    }

    /// A snapshot item at `index`: the first of a snapshot begins it.
    fn begin_snapshot(&mut self, index: u64) {
        if !self.in_snapshot {
            self.in_snapshot = true;
            self.partial = None;
            self.skip = None;
            self.queued.push_back(FeedEvent::SnapshotBegin { index });
        }
    }

    /// Every change up to `index` was delivered.
    fn whole_up_to(&mut self, index: u64) {
        self.complete = self.complete.max(index);
        self.partial = None;
        self.skip = None;
    }
}

/// The key of an event or a snapshot line.
fn change(line: &Line, index: u64, invalid: &dyn Fn(String) -> Error) -> Result<KeyChange> {
    let decode = |field: &str, text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| invalid(format!("the {field} of a {} event is not base64: {error}", line.kind)))
    };
    let key = line.key.clone().ok_or_else(|| invalid(format!("a {} event without a key", line.kind)))?;
    let value = match &line.value {
        Some(text) => decode("value", text)?,
        None => Vec::new(),
    };
    let prev_value = match &line.prev_value {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => Some(Some(decode("prev_value", text)?)),
    };
    Ok(KeyChange {
        index,
        key,
        value,
        create_index: line.create_index.unwrap_or(0),
        modify_index: line.modify_index.unwrap_or(index),
        flags: line.flags.unwrap_or(0),
        prev_value,
    })
}

impl Iterator for Watch {
    type Item = Result<FeedEvent>;

    fn next(&mut self) -> Option<Result<FeedEvent>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            if self.stream.is_none() {
                if let Err(error) = self.connect(self.options.give_up_after) {
                    self.finished = true;
                    return Some(Err(error));
                }
                continue;
            }
            let taken = match self.read_line() {
                Ok(Some(line)) => self.take(&line),
                Ok(None) => {
                    self.break_off("the stream ended".to_string());
                    Ok(())
                }
                Err(ReadFailure::Broken(reason)) => {
                    self.break_off(reason);
                    Ok(())
                }
                Err(ReadFailure::Final(error)) => Err(error),
            };
            if let Err(error) = taken {
                self.finished = true;
                self.stream = None;
                return Some(Err(error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;

    /// A one-thread HTTP server that answers each connection with the next of `answers`
    /// (whole HTTP responses; a stream's body ends when the connection closes) and returns
    /// the path of every request.
    fn fake_server(answers: Vec<String>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                paths.push(request.split(' ').nth(1).unwrap_or_default().to_string());
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
            }
            paths
        });
        (address, server)
    }

    /// A stream of `lines`, ended by closing the connection.
    fn stream(lines: &[&str]) -> String {
        let mut answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n".to_string();
        for line in lines {
            answer.push_str(line);
            answer.push('\n');
        }
        answer
    }

    fn put(index: u64, key: &str, value: &str) -> String {
        let value = base64::engine::general_purpose::STANDARD.encode(value);
        format!(
            r#"{{"type":"put","index":{index},"key":"{key}","value":"{value}","create_index":{index},"modify_index":{index},"flags":0}}"#
        )
    }

    fn options(from: u64) -> WatchOptions {
        WatchOptions { from: Some(from), give_up_after: Some(Duration::from_secs(1)), ..WatchOptions::default() }
    }

    /// The key and value of a put, or what else the event is, as text.
    fn show(event: &FeedEvent) -> String {
        match event {
            FeedEvent::Put(change) => {
                format!("put {} {}={}", change.index, change.key, String::from_utf8_lossy(&change.value))
            }
            FeedEvent::Snapshot(change) => {
                format!("snapshot {} {}={}", change.index, change.key, String::from_utf8_lossy(&change.value))
            }
            FeedEvent::SnapshotBegin { index } => format!("begin {index}"),
            FeedEvent::SnapshotEnd { index } => format!("end {index}"),
            FeedEvent::Progress { index } => format!("progress {index}"),
            FeedEvent::Resumed { from, .. } => format!("resumed {from}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_stream_broken_mid_entry_resumes_before_it_and_drops_what_was_delivered() {
        // Entry 7 has three events; the first stream breaks after two of them.
        let first = stream(&[&put(5, "a", "1"), &put(7, "b", "1"), &put(7, "c", "1")]);
        let second = stream(&[
            &put(7, "b", "1"),
            &put(7, "c", "1"),
            &put(7, "d", "1"),
            &put(8, "e", "1"),
            r#"{"type":"progress","index":8}"#,
            r#"{"type":"cut","resume_from":9,"reason":"slow","message":"too far behind"}"#,
        ]);
        let third = stream(&[&put(10, "f", "1")]);
        let (address, server) = fake_server(vec![first, second, third]);
        let client = Client::new([address]).unwrap();
        let watch = client.feed("app/", options(3)).unwrap();
        let seen: Vec<String> = watch.take(9).map(|event| show(&event.unwrap())).collect();
        let want =
            ["put 5 a=1", "put 7 b=1", "put 7 c=1", "resumed 5", "put 7 d=1", "put 8 e=1", "progress 8", "resumed 9"];
        assert_eq!(seen[..8], want, "{seen:?}");
        assert_eq!(seen[8], "put 10 f=1");
        let paths = server.join().unwrap();
        assert_eq!(
            paths,
            [
                "/v1/skiff/watch?prefix=app/&index=3",
                "/v1/skiff/watch?prefix=app/&index=5",
                "/v1/skiff/watch?prefix=app/&index=9"
            ]
        );
    }

    #[test]
    fn a_snapshot_broken_off_is_replaced_by_a_whole_one_from_a_listing() {
        let first = stream(&[
            r#"{"type":"snapshot","index":10,"key":"app/a","value":"MQ==","create_index":2,"modify_index":2,"flags":0}"#,
        ]);
        let body = r#"[{"Key":"app/a","Value":"Mg==","CreateIndex":2,"ModifyIndex":11,"LockIndex":0,"Flags":0},{"Key":"app/b","Value":"Mw==","CreateIndex":4,"ModifyIndex":4,"LockIndex":0,"Flags":0}]"#;
        let listing = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 12\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let after = stream(&[&put(13, "app/c", "4")]);
        let (address, server) = fake_server(vec![first, listing, after]);
        let client = Client::new([address]).unwrap();
        let watch = client.feed("app/", options(0)).unwrap();
        let seen: Vec<String> = watch.take(8).map(|event| show(&event.unwrap())).collect();
        let want = [
            "begin 10",
            "snapshot 10 app/a=1",
            "begin 12",
            "snapshot 12 app/a=2",
            "snapshot 12 app/b=3",
            "end 12",
            "resumed 12",
            "put 13 app/c=4",
        ];
        assert_eq!(seen, want);
        let paths = server.join().unwrap();
        assert_eq!(paths[1], "/v1/kv/app/?recurse");
        assert_eq!(paths[2], "/v1/skiff/watch?prefix=app/&index=12");
    }

    #[test]
    fn an_overlong_line_is_an_error_and_ends_the_watch() {
        let long = put(4, "k", &"x".repeat(300));
        let (address, server) = fake_server(vec![stream(&[&put(3, "k", "short"), &long])]);
        let client = Client::new([address]).unwrap();
        let mut watch = client.feed("", WatchOptions { max_line_bytes: 200, ..options(0) }).unwrap();
        assert_eq!(show(&watch.next().unwrap().unwrap()), "put 3 k=short");
        let error = watch.next().unwrap().unwrap_err();
        assert!(error.to_string().contains("longer than 200 bytes"), "{error}");
        assert!(watch.next().is_none());
        server.join().unwrap();
    }

    #[test]
    fn a_refused_request_is_an_error_at_once_and_prev_values_are_told_from_none() {
        let body = r#"{"error":"the prefix is 9000 bytes, longer than the longest key"}"#;
        let refused = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let with_prev = stream(&[
            r#"{"type":"put","index":5,"key":"k","value":"MQ==","create_index":5,"modify_index":5,"flags":0,"prev_value":null}"#,
            r#"{"type":"delete","index":6,"key":"k","create_index":5,"modify_index":6,"flags":0,"prev_value":"MQ=="}"#,
        ]);
        let (address, server) = fake_server(vec![refused, with_prev]);
        let client = Client::new([address]).unwrap();
        let error = client.feed(&"k".repeat(9000), options(0)).unwrap_err();
        assert!(
            matches!(&error, Error::Http { status: 400, message, .. } if message.contains("longest key")),
            "{error}"
        );
        let mut watch = client.feed("k", WatchOptions { prev: true, ..options(4) }).unwrap();
        let FeedEvent::Put(put) = watch.next().unwrap().unwrap() else { panic!("not a put") };
        assert_eq!(put.prev_value, Some(None));
        let FeedEvent::Delete(delete) = watch.next().unwrap().unwrap() else { panic!("not a delete") };
        assert_eq!((delete.prev_value, delete.value.is_empty()), (Some(Some(b"1".to_vec())), true));
        let paths = server.join().unwrap();
        assert_eq!(paths[1], "/v1/skiff/watch?prefix=k&index=4&prev=true");
    }
}
